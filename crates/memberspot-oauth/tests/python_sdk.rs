//! Cross-check with a second, independent client: the official Python MCP SDK's OAuth
//! client provider signs in to a running hub (discovery, registration, the console's
//! consent page, PKCE exchange), lists the tools and refreshes.
//!
//! Needs a Python with the `mcp` package: `scripts/test` makes one (a venv under
//! `target/py-mcp`) and names it in `MEMBERSPOT_TEST_PYTHON`.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_signs_in_and_lists_the_personas_tools() {
    let Some(python) = std::env::var_os("MEMBERSPOT_TEST_PYTHON") else {
        eprintln!(
            "skipped: MEMBERSPOT_TEST_PYTHON is not set (scripts/test sets it to a Python with the `mcp` package)"
        );
        return;
    };
    let w = world(Backend::Sqlite).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/oauth_client.py");
    let out = tokio::process::Command::new(python)
        .arg(script)
        .args([w.mcp().as_str(), OWNER, PASSWORD, "reader"])
        .output()
        .await
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    let answer: serde_json::Value =
        serde_json::from_str(stdout.lines().last().expect("a JSON line"))
            .unwrap_or_else(|e| panic!("{e}: {stdout}"));

    let persona = w.hub.persona("reader").await.expect("persona");
    let mut expected: Vec<String> = w
        .hub
        .tools_for(&memberspot_hub::Principal::Persona(persona))
        .expect("tools")
        .into_iter()
        .map(|d| d.name.to_string())
        .collect();
    expected.sort();
    let seen: Vec<String> = answer["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(|t| t.as_str().map(str::to_owned))
        .collect();
    assert_eq!(seen, expected, "exactly the persona's tools");
    assert_eq!(answer["refresh_status"], 200, "{answer}");
    assert_eq!(answer["rotated"], true, "{answer}");
    let grants = w
        .hub
        .list_oauth_grants(Some("reader"))
        .await
        .expect("grants");
    assert_eq!(grants.len(), 1);
    assert_eq!(grants[0].client_name, "Python SDK cross-check");
    w.close().await;
}
