use std::process::ExitCode;

use serde_json::{Value, json};

use super::Ctx;
use crate::cli::ProgressArgs;
use crate::output::{print_json, print_table, table};

pub async fn run(ctx: &Ctx, args: ProgressArgs) -> anyhow::Result<ExitCode> {
    let rows: Vec<Value> = match &args.course {
        Some(course) => {
            vec![
                ctx.call(
                    "get_user_course_progress",
                    json!({ "course_id": course, "email": args.email }),
                )
                .await?,
            ]
        }
        None => {
            let mut all = Vec::new();
            let mut call_args = json!({ "email": args.email, "page_length": 100 });
            loop {
                let page = ctx
                    .call("list_user_course_progress", call_args.clone())
                    .await?;
                all.extend(page["progress"].as_array().cloned().unwrap_or_default());
                match page["next_cursor"].as_str() {
                    Some(next) if call_args["cursor"].as_str() != Some(next) => {
                        call_args["cursor"] = json!(next)
                    }
                    _ => break,
                }
            }
            all
        }
    };
    if ctx.json {
        print_json(&rows)?;
        return Ok(ExitCode::SUCCESS);
    }
    // Post ids, or (in some answers) already a count: a count stays a count.
    let count = |v: &Value, k: &str| match &v[k] {
        Value::Array(ids) => ids.len().to_string(),
        Value::Number(n) => n.to_string(),
        _ => "0".to_owned(),
    };
    let mut t = table(&["course", "completed posts", "started posts"]);
    for p in &rows {
        t.add_row(vec![
            p["courseId"].as_str().unwrap_or_default().to_string(),
            count(p, "completedPosts"),
            count(p, "activePosts"),
        ]);
    }
    print_table(&t);
    Ok(ExitCode::SUCCESS)
}
