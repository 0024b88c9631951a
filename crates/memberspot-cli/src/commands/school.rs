//! School-wide listings: offers, custom properties, exam results.

use std::process::ExitCode;

use serde_json::{Value, json};

use super::Ctx;
use crate::output::{print_json, print_table, table};

fn text(v: &Value, key: &str) -> String {
    match &v[key] {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub async fn offers(ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let out = ctx.call("list_offers", json!({})).await?;
    let offers = out["offers"].as_array().cloned().unwrap_or_default();
    if ctx.json {
        print_json(&offers)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = table(&["id", "name", "courses", "priority"]);
    for o in &offers {
        let courses: Vec<&str> = o["courseIds"]
            .as_array()
            .map(|c| c.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        t.add_row(vec![
            text(o, "id"),
            text(o, "name"),
            courses.join("\n"),
            text(o, "priority"),
        ]);
    }
    print_table(&t);
    Ok(ExitCode::SUCCESS)
}

pub async fn properties(ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let out = ctx.call("list_custom_user_properties", json!({})).await?;
    let props = out["properties"].as_array().cloned().unwrap_or_default();
    if ctx.json {
        print_json(&props)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = table(&["id", "name", "type"]);
    for p in &props {
        t.add_row(vec![text(p, "id"), text(p, "name"), text(p, "type")]);
    }
    print_table(&t);
    Ok(ExitCode::SUCCESS)
}

pub async fn exam_results(ctx: &Ctx, exam_id: &str) -> anyhow::Result<ExitCode> {
    let out = ctx
        .call("list_exam_results", json!({ "exam_id": exam_id }))
        .await?;
    let results = out["results"].as_array().cloned().unwrap_or_default();
    if ctx.json {
        print_json(&results)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = table(&["email", "score", "max", "passed", "submitted"]);
    for r in &results {
        t.add_row(vec![
            text(r, "email"),
            text(r, "score"),
            text(r, "maxScore"),
            text(r, "passed"),
            text(r, "submittedAt"),
        ]);
    }
    print_table(&t);
    Ok(ExitCode::SUCCESS)
}
