use std::process::ExitCode;

use anyhow::Context;
use futures::TryStreamExt;
use memberspot_tools::ToolError;
use memberspot_tools::tools::ListProgressInput;
use memberspot_wire::CourseProgress;
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
            let request = json!({ "email": args.email });
            // Checked as the tool checks it, so a bad address names its field.
            ctx.catalogue
                .validate("list_user_course_progress", &request)?;
            let request: ListProgressInput =
                serde_json::from_value(request).map_err(|e| ToolError::InvalidArguments {
                    field: Some("email".into()),
                    message: e.to_string(),
                })?;
            let courses: Vec<CourseProgress> = ctx.progress(request).try_collect().await?;
            courses
                .into_iter()
                .map(serde_json::to_value)
                .collect::<Result<_, _>>()
                .context("encode progress")?
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
    // The API names no course and tells no course's size (so no percentage): a course
    // is shown by its id and the offers that unlock it, from the command's one read of
    // the school's offers (none when they cannot be read).
    let offers = ctx.offers.index().await.ok();
    let mut t = table(&[
        "course",
        "offers unlocking it",
        "completed posts",
        "started posts",
    ]);
    for p in &rows {
        let course = p["courseId"].as_str().unwrap_or_default();
        let granting = offers
            .as_deref()
            .map(|o| {
                o.granting(course)
                    .map(|offer| o.label(&offer.id))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default();
        t.add_row(vec![
            course.to_string(),
            granting,
            count(p, "completedPosts"),
            count(p, "activePosts"),
        ]);
    }
    print_table(&t);
    Ok(ExitCode::SUCCESS)
}
