//! Every tool against the sandbox over real HTTP, in the shape mode named by
//! `MEMBERSPOT_SANDBOX_SHAPES` (documented when unset; `scripts/test` runs both): each
//! result is an object whose every field the tool's output schema documents, and what
//! the school answered in another shape is in it, not lost.

use memberspot_api::{ApiKey, Client};
use memberspot_sandbox::{Sandbox, SandboxConfig, Shapes};
use memberspot_tools::Catalogue;
use serde_json::{Value, json};

const KEY: &str = "sk_tools_test_0b6f2d9e4c1a7358";

fn shapes() -> Shapes {
    Shapes::from_env().expect("a known shape mode")
}

/// Fields of `value` that `schema` does not document, as paths.
fn undocumented(value: &Value, schema: &Value, path: &str, out: &mut Vec<String>) {
    if let Some(alternatives) = schema.get("anyOf").and_then(Value::as_array) {
        // Documented when one alternative documents it.
        let fits = alternatives.iter().any(|alt| {
            let mut inner = Vec::new();
            undocumented(value, alt, path, &mut inner);
            inner.is_empty() && kind_fits(value, alt)
        });
        if !fits {
            out.push(format!("{path} (no alternative fits)"));
        }
        return;
    }
    match value {
        Value::Object(map) => {
            let Some(props) = schema.get("properties").and_then(Value::as_object) else {
                // A map (`additionalProperties`) or free-form object.
                return;
            };
            for (k, v) in map {
                match props.get(k) {
                    Some(s) => undocumented(v, s, &format!("{path}.{k}"), out),
                    None => out.push(format!("{path}.{k}")),
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for i in items {
                    undocumented(i, s, &format!("{path}[]"), out);
                }
            }
        }
        _ => {}
    }
}

/// Whether `value`'s JSON type is one `schema` names (no `type`: anything).
fn kind_fits(value: &Value, schema: &Value) -> bool {
    let kind = match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_u64() || n.is_i64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    match schema.get("type") {
        None => true,
        Some(Value::String(t)) => t == kind || (t == "number" && kind == "integer"),
        Some(Value::Array(ts)) => ts
            .iter()
            .any(|t| t == kind || (t == "number" && kind == "integer")),
        Some(_) => false,
    }
}

#[tokio::test]
async fn every_tool_answers_within_its_output_schema_in_every_shape_mode() {
    let mode = shapes();
    let sb = Sandbox::start_local(SandboxConfig {
        api_key: KEY.into(),
        rate_limit: 0.0,
        shapes: mode,
        ..SandboxConfig::default()
    })
    .await
    .expect("sandbox");
    let client = Client::builder(sb.base_url())
        .api_key(ApiKey::new(KEY))
        .rate_limit(0.0)
        .build()
        .expect("client");
    let admin: Value = reqwest::Client::new()
        .get(format!("{}/_sandbox/state", sb.root_url()))
        .header("X-API-KEY", KEY)
        .send()
        .await
        .expect("state")
        .json()
        .await
        .expect("json");
    let offer = admin["offers"][0]["id"]
        .as_str()
        .expect("offer")
        .to_string();
    let course = admin["offers"][0]["courseIds"][0]
        .as_str()
        .expect("course")
        .to_string();
    let chapter = admin["courses"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["id"] == course.as_str()))
        .and_then(|c| c["chapters"][0]["id"].as_str())
        .expect("chapter")
        .to_string();
    let exam = admin["exams"][0]["id"].as_str().expect("exam").to_string();
    let prop = admin["customProperties"][0]["id"]
        .as_str()
        .expect("property")
        .to_string();
    let email = "tools.tester@example.com";
    let catalogue = Catalogue::standard();

    let grant = json!({"email": email, "offer_id": offer, "order_id": "ORD-T"});
    let granted = catalogue
        .call(&client, "grant_user_offer_by_email", grant)
        .await
        .expect("grant");
    let uid = granted["user"]["uid"].as_str().expect("uid").to_string();

    let calls: Vec<(&str, Value)> = vec![
        ("list_users", json!({"page_length": 5})),
        ("find_user_by_email", json!({"email": email})),
        ("list_offers", json!({})),
        ("list_custom_user_properties", json!({})),
        (
            "set_custom_user_properties",
            json!({"email": email, "properties": [{"id": prop, "value": "x"}]}),
        ),
        (
            "enable_chapter_access",
            json!({"email": email, "course_id": course, "chapter_id": chapter}),
        ),
        ("list_user_course_progress", json!({"email": email})),
        (
            "get_user_course_progress",
            json!({"email": email, "course_id": course}),
        ),
        ("create_login_token", json!({"uid": uid})),
        ("list_exam_results", json!({"exam_id": exam})),
        (
            "set_offer_expiration",
            json!({"email": email, "offer_id": offer, "expires_at": "2031-01-01"}),
        ),
        (
            "set_user_offer_state",
            json!({"email": email, "offer_id": offer, "state": "inactive"}),
        ),
        (
            "set_order_state",
            json!({"email": email, "order_id": "ORD-T", "state": "active"}),
        ),
        (
            "delete_users_post",
            json!({"emails": ["nobody@example.com"]}),
        ),
        ("delete_users", json!({"emails": [email]})),
    ];
    let mut results = vec![("grant_user_offer_by_email", granted)];
    for (tool, args) in calls {
        let out = catalogue
            .call(&client, tool, args)
            .await
            .unwrap_or_else(|e| panic!("{mode}: {tool}: {e}"));
        results.push((tool, out));
    }
    // The check itself sees an undocumented field.
    let mut problems = Vec::new();
    let offers_schema = &catalogue
        .get("list_offers")
        .expect("tool")
        .descriptor
        .output_schema;
    undocumented(
        &json!({"offers": [{"id": "o", "name": "n", "courseIds": [], "hasCourseIds": []}]}),
        offers_schema,
        "list_offers",
        &mut problems,
    );
    assert_eq!(problems, ["list_offers.offers[].hasCourseIds"]);
    for (tool, out) in &results {
        let schema = &catalogue.get(tool).expect("tool").descriptor.output_schema;
        let mut problems = Vec::new();
        undocumented(out, schema, tool, &mut problems);
        assert!(
            problems.is_empty(),
            "{mode}: undocumented output {problems:?} in {out}"
        );
    }
    let result = |name: &str| {
        results
            .iter()
            .rev()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
            .expect("called")
    };
    let offers = result("list_offers");
    assert!(
        offers["offers"].as_array().is_some_and(|os| os
            .iter()
            .all(|o| o["courseIds"].as_array().is_some_and(|c| !c.is_empty()))),
        "course ids are kept in every mode: {offers}"
    );
    let deleted = result("delete_users");
    let revoked = result("set_user_offer_state");
    let token = result("create_login_token");
    let member = result("find_user_by_email");
    let properties = result("list_custom_user_properties");
    match mode {
        Shapes::Documented => {
            assert_eq!(deleted["result"]["deleted"], json!([email]), "{deleted}");
            assert_eq!(deleted["not_found"], json!([]), "{deleted}");
            assert!(revoked["user"]["uid"].is_string(), "{revoked}");
            assert!(token.get("login_url").is_none(), "{token}");
            assert!(member.get("progress").is_none(), "{member}");
        }
        Shapes::Alternate => {
            // Deleted: Memberspot said `ok` and nothing else.
            assert_eq!(
                deleted["result"],
                json!({"ok": true, "message": "ok"}),
                "{deleted}"
            );
            assert!(deleted.get("not_found").is_none(), "not known: {deleted}");
            assert_eq!(
                revoked,
                json!({"user": null, "state": {"active": false, "email": email, "offerId": offer}})
            );
            let link = token["login_url"].as_str().expect("a login link");
            assert!(
                link.ends_with(token["token"].as_str().expect("token")),
                "{token}"
            );
            assert!(member["createdAt"].is_string(), "`created` read: {member}");
            assert_eq!(member["active"], true, "{member}");
            let progress = member["progress"].as_array().expect("embedded progress");
            assert!(
                progress
                    .iter()
                    .all(|p| p["activePosts"].is_u64() && p["completedPosts"].is_u64()),
                "counts stay counts: {member}"
            );
            assert!(
                properties["properties"]
                    .as_array()
                    .is_some_and(|ps| ps.iter().all(|p| p["schoolId"].is_string())),
                "{properties}"
            );
        }
    }
    sb.shutdown().await.expect("shutdown");
}
