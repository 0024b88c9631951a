#!/usr/bin/env python3
"""Cross-check `memberspot` with the official MCP Python SDK (pip install mcp).

Usage: TOKEN=msh_... scripts/mcp-crosscheck.py PATH/TO/memberspot http://127.0.0.1:8787/mcp

Connects over stdio (spawning `memberspot mcp`) and over streamable HTTP (a running
`memberspot serve`), lists the tools, calls list_offers with a prompt in _meta, and calls
delete_users, which a persona without the destructive scope must get back as isError.
"""
import asyncio
import os
import sys

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import create_mcp_http_client, streamable_http_client


async def exercise(session: ClientSession, label: str) -> None:
    await session.initialize()
    tools = (await session.list_tools()).tools
    ok = await session.call_tool("list_offers", {}, meta={"prompt": f"cross-check over {label}"})
    refused = await session.call_tool("delete_users", {"emails": ["someone@example.com"]})
    offers = len((ok.structured_content or {}).get("offers", []))
    print(f"{label}: {len(tools)} tools | list_offers error={ok.is_error} offers={offers} | delete_users error={refused.is_error}")


async def main() -> None:
    exe, url, token = sys.argv[1], sys.argv[2], os.environ["TOKEN"]
    params = StdioServerParameters(command=exe, args=["mcp"], env={**os.environ, "MEMBERSPOT_TOKEN": token})
    async with stdio_client(params) as (r, w):
        async with ClientSession(r, w) as s:
            await exercise(s, "stdio")
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
    async with streamable_http_client(url, http_client=http) as streams:
        async with ClientSession(streams[0], streams[1]) as s:
            await exercise(s, "streamable HTTP")


if __name__ == "__main__":
    asyncio.run(main())
