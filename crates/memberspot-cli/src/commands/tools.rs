use std::io::Read;
use std::process::ExitCode;

use anyhow::Context;
use memberspot_tools::{Catalogue, ToolClass, ToolError};
use serde_json::{Map, Value, json};

use super::Ctx;
use crate::cli::CallArgs;
use crate::output::{confirm, print_json, print_table, table};

pub fn list(json: bool) -> anyhow::Result<ExitCode> {
    let catalogue = Catalogue::standard();
    if json {
        print_json(&catalogue.descriptors().collect::<Vec<_>>())?;
    } else {
        let mut t = table(&["tool", "class", "what it does"]);
        for d in catalogue.descriptors() {
            t.add_row(vec![d.name, class_name(d.class), d.title]);
        }
        print_table(&t);
        eprintln!(
            "{} tools. `memberspot tools describe NAME` shows one in full.",
            catalogue.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn class_name(c: ToolClass) -> &'static str {
    match c {
        ToolClass::Read => "read",
        ToolClass::Write => "write",
        ToolClass::Destructive => "destructive",
    }
}

pub fn describe(name: &str, json: bool) -> anyhow::Result<ExitCode> {
    let catalogue = Catalogue::standard();
    let entry = catalogue.get(name).ok_or_else(|| ToolError::UnknownTool {
        name: name.to_string(),
    })?;
    let d = &entry.descriptor;
    if json {
        print_json(d)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!("{} — {}\n", d.name, d.title);
    println!("{}\n", d.description);
    let a = d.annotations;
    println!(
        "class: {}   read-only: {}   destructive: {}   idempotent: {}   open-world: {}\n",
        class_name(d.class),
        a.read_only,
        a.destructive,
        a.idempotent,
        a.open_world
    );
    let props = d.input_schema["properties"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    if props.is_empty() {
        println!("arguments: none");
    } else {
        let required: Vec<&str> = d.input_schema["required"]
            .as_array()
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let mut t = table(&["argument", "type", "required", "description"]);
        for (k, s) in &props {
            let ty = match (s["type"].as_str(), s["enum"].as_array()) {
                (_, Some(values)) => values
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(" | "),
                (Some("array"), _) => format!(
                    "array of {}",
                    s["items"]["type"].as_str().unwrap_or("values")
                ),
                (Some(t), _) => t.to_string(),
                _ => "any".to_string(),
            };
            t.add_row(vec![
                k.clone(),
                ty,
                if required.contains(&k.as_str()) {
                    "yes".into()
                } else {
                    "no".into()
                },
                s["description"].as_str().unwrap_or_default().to_string(),
            ]);
        }
        print_table(&t);
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn call(ctx: &Ctx, call: CallArgs) -> anyhow::Result<ExitCode> {
    let CallArgs {
        name,
        json_args,
        args_file,
        args,
        yes,
    } = call;
    let entry = ctx
        .catalogue
        .get(&name)
        .ok_or_else(|| ToolError::UnknownTool { name: name.clone() })?;
    let arguments = build_arguments(json_args.as_deref(), args_file.as_deref(), &args)?;
    entry.validate(&arguments)?;
    if entry.descriptor.class == ToolClass::Destructive {
        confirm(
            &format!("`{name}` is destructive ({}).", entry.descriptor.title),
            yes,
        )?;
    }
    let result = ctx.call(&name, arguments).await?;
    print_json(&result)?;
    Ok(ExitCode::SUCCESS)
}

/// Merges `--json`, `--args-file` and `--arg key=value` into one object.
fn build_arguments(
    json_args: Option<&str>,
    file: Option<&std::path::Path>,
    pairs: &[String],
) -> anyhow::Result<Value> {
    let mut merged = Map::new();
    let mut merge = |v: Value, origin: &str| -> anyhow::Result<()> {
        match v {
            Value::Object(o) => {
                merged.extend(o);
                Ok(())
            }
            other => Err(ToolError::InvalidArguments {
                field: None,
                message: format!("{origin} must be a JSON object, got {other}"),
            }
            .into()),
        }
    };
    if let Some(path) = file {
        let text = if path.as_os_str() == "-" {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("reading arguments from stdin")?;
            s
        } else {
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
        };
        let v: Value = serde_json::from_str(&text).map_err(|e| ToolError::InvalidArguments {
            field: None,
            message: format!("--args-file {} is not valid JSON: {e}", path.display()),
        })?;
        merge(v, "--args-file")?;
    }
    if let Some(text) = json_args {
        let v: Value = serde_json::from_str(text).map_err(|e| ToolError::InvalidArguments {
            field: None,
            message: format!("--json is not valid JSON: {e}"),
        })?;
        merge(v, "--json")?;
    }
    for pair in pairs {
        let (key, raw) = pair
            .split_once('=')
            .ok_or_else(|| ToolError::InvalidArguments {
                field: None,
                message: format!("--arg `{pair}` must look like key=value"),
            })?;
        let key = key.trim();
        if key.is_empty() {
            return Err(ToolError::InvalidArguments {
                field: None,
                message: format!("--arg `{pair}` has no key"),
            }
            .into());
        }
        let value = serde_json::from_str::<Value>(raw).unwrap_or_else(|_| json!(raw));
        merged.insert(key.to_string(), value);
    }
    Ok(Value::Object(merged))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_merge_and_parse_values() {
        let v = build_arguments(
            Some(r#"{"email":"a@b.de","page_length":3}"#),
            None,
            &[
                "page_length=5".into(),
                "active=true".into(),
                "offer_id=abc".into(),
                "emails=[\"x@y.de\"]".into(),
            ],
        )
        .expect("valid");
        assert_eq!(
            v,
            json!({"email": "a@b.de", "page_length": 5, "active": true, "offer_id": "abc", "emails": ["x@y.de"]})
        );
        assert!(build_arguments(Some("[1]"), None, &[]).is_err());
        assert!(build_arguments(Some("{"), None, &[]).is_err());
        assert!(build_arguments(None, None, &["novalue".into()]).is_err());
    }
}
