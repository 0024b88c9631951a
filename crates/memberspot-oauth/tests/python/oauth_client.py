"""Cross-check of the hub's remote MCP sign-in with an independent client: the official
Python MCP SDK's OAuth client provider. Run by tests/python_sdk.rs against a running hub.

Usage: oauth_client.py MCP_URL CONSOLE_USER PASSWORD PERSONA

The SDK discovers the authorization server from the 401, registers, and hands us the
authorization link; we play the browser (console sign-in, consent form with
decision=allow) and give the SDK the code from the redirect. Prints one JSON line with
the tool names the session sees, and the refresh result.
"""

import asyncio
import json
import re
import sys
import urllib.parse

import httpx2
from mcp.client.auth import OAuthClientProvider, TokenStorage
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientMetadata

REDIRECT = "http://127.0.0.1:9/python-callback"


class Memory(TokenStorage):
    def __init__(self):
        self.tokens = None
        self.client = None

    async def get_tokens(self):
        return self.tokens

    async def set_tokens(self, tokens):
        self.tokens = tokens

    async def get_client_info(self):
        return self.client

    async def set_client_info(self, client_info):
        self.client = client_info


def hidden_csrf(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    if not m:
        raise RuntimeError("no csrf field on the page")
    return m.group(1)


async def consent(base: str, link: str, user: str, password: str, persona: str) -> str:
    """Signs in to the console and allows the request; returns the redirect location."""
    async with httpx2.AsyncClient(base_url=base, follow_redirects=False) as browser:
        first = await browser.get(link)
        assert first.status_code == 303, first.text
        login_path = first.headers["location"]
        login = await browser.get(login_path)
        nxt = urllib.parse.parse_qs(urllib.parse.urlparse(login_path).query)["next"][0]
        signed = await browser.post(
            "/login",
            data={"csrf": hidden_csrf(login.text), "name": user, "password": password, "next": nxt},
            headers={"Origin": base},
        )
        assert signed.status_code == 303, signed.text
        page = await browser.get(signed.headers["location"])
        assert page.status_code == 200, page.text
        form = dict(urllib.parse.parse_qsl(urllib.parse.urlparse(link).query))
        form.update({"csrf": hidden_csrf(page.text), "decision": "allow", "persona": persona})
        answer = await browser.post("/oauth/authorize", data=form, headers={"Origin": base})
        assert answer.status_code == 303, answer.text
        return answer.headers["location"]


async def main() -> None:
    mcp_url, user, password, persona = sys.argv[1:5]
    base = mcp_url.rsplit("/mcp", 1)[0]
    redirect = {}

    async def on_redirect(link: str) -> None:
        redirect["location"] = await consent(base, link, user, password, persona)

    async def on_callback() -> AuthorizationCodeResult:
        q = urllib.parse.parse_qs(urllib.parse.urlparse(redirect["location"]).query)
        return AuthorizationCodeResult(
            code=q["code"][0], state=q.get("state", [None])[0], iss=q.get("iss", [None])[0]
        )

    storage = Memory()
    provider = OAuthClientProvider(
        server_url=mcp_url,
        client_metadata=OAuthClientMetadata(
            client_name="Python SDK cross-check",
            redirect_uris=[REDIRECT],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            token_endpoint_auth_method="none",
        ),
        storage=storage,
        redirect_handler=on_redirect,
        callback_handler=on_callback,
    )
    async with httpx2.AsyncClient(auth=provider) as http:
        async with streamable_http_client(mcp_url, http_client=http) as streams:
            read, write = streams[0], streams[1]
            async with ClientSession(read, write) as session:
                await session.initialize()
                tools = await session.list_tools()
                names = sorted(t.name for t in tools.tools)

    # Refresh with the stored refresh token, as the SDK would when the access token ends.
    async with httpx2.AsyncClient() as plain:
        refreshed = await plain.post(
            f"{base}/oauth/token",
            data={
                "grant_type": "refresh_token",
                "refresh_token": storage.tokens.refresh_token,
                "client_id": storage.client.client_id,
                "resource": mcp_url,
            },
        )
    print(json.dumps({
        "tools": names,
        "client_id": storage.client.client_id,
        "refresh_status": refreshed.status_code,
        "rotated": refreshed.json().get("refresh_token") != storage.tokens.refresh_token,
    }))


asyncio.run(main())
