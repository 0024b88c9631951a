//! What `/openapi.json` adds to the document the handlers generate: one operation per
//! tool (its argument schema as the request body, so the document can be imported as
//! ChatGPT Actions or into any OpenAPI client) and the error shape on every error answer.
//!
//! Done on the JSON form: the tools' schemas are JSON Schema already (OpenAPI 3.1 takes
//! them as they are), and are inlined, so nothing points into `$defs`.

use memberspot_tools::{Catalogue, ToolDescriptor};
use serde_json::{Value, json};

/// The component every error answer refers to.
const ERROR_SCHEMA: &str = "Error";

/// The error answers of a tool call, as on `POST /v1/tools/{name}/call`.
const CALL_ERRORS: [(&str, &str); 8] = [
    ("400", "invalid arguments; `field` names the argument"),
    ("401", "missing, unknown or revoked token"),
    ("403", "outside the persona's scopes or offers"),
    ("404", "Memberspot found no such member, offer or order"),
    ("422", "Memberspot rejected the request"),
    (
        "429",
        "the persona's calls-per-minute limit (see `Retry-After`), or Memberspot's rate limit persisted",
    ),
    ("502", "Memberspot failed"),
    ("504", "Memberspot did not answer in time"),
];

/// The finished document: `doc` with an operation per tool and error bodies described.
pub fn complete(doc: &utoipa::openapi::OpenApi, catalogue: &Catalogue) -> Value {
    let mut doc = serde_json::to_value(doc).unwrap_or_else(|_| json!({}));
    describe_errors(&mut doc);
    if let Some(paths) = doc["paths"].as_object_mut() {
        for entry in catalogue.iter() {
            let d = &entry.descriptor;
            paths.insert(format!("/v1/tools/{}/call", d.name), tool_operation(d));
        }
    }
    if let Some(tags) = doc["tags"].as_array_mut() {
        tags.push(json!({
            "name": "tool calls",
            "description": "One operation per tool: the request body is the tool's arguments, the answer its result"
        }));
    }
    doc
}

/// `Error` in the components, referred to by every 4xx and 5xx answer that has no body yet.
fn describe_errors(doc: &mut Value) {
    doc["components"]["schemas"][ERROR_SCHEMA] = json!({
        "type": "object",
        "description": "Every error answer of the REST API",
        "required": ["error"],
        "properties": {"error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "description": "stable, e.g. invalid_arguments, denied, rate_limited, not_found"},
                "message": {"type": "string", "description": "for people"},
                "field": {"type": "string", "description": "the argument or field at fault, when one is"},
                "retry_after_secs": {"type": "integer", "description": "with 429: when to try again"}
            }
        }}
    });
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    for operation in paths.values_mut().filter_map(Value::as_object_mut) {
        for op in operation.values_mut() {
            let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) else {
                continue;
            };
            for (status, response) in responses.iter_mut() {
                let is_error = status.starts_with('4') || status.starts_with('5');
                if is_error && response.get("content").is_none() {
                    response["content"] = error_content();
                }
            }
        }
    }
}

fn error_content() -> Value {
    json!({"application/json": {"schema": {"$ref": format!("#/components/schemas/{ERROR_SCHEMA}")}}})
}

fn tool_operation(d: &ToolDescriptor) -> Value {
    let mut responses = serde_json::Map::new();
    responses.insert(
        "200".into(),
        json!({
            "description": "the tool's result",
            "content": {"application/json": {"schema": {
                "type": "object",
                "required": ["result", "request_id"],
                "properties": {
                    "result": d.output_schema,
                    "request_id": {"type": "string"},
                    "audit_id": {"type": ["string", "null"], "description": "the audit record of this call"}
                }
            }}}
        }),
    );
    for (status, description) in CALL_ERRORS {
        responses.insert(
            status.into(),
            json!({"description": description, "content": error_content()}),
        );
    }
    json!({"post": {
        "tags": ["tool calls"],
        "operationId": d.name,
        "summary": d.title,
        "description": d.description,
        "security": [{"persona": []}],
        "requestBody": {
            "required": true,
            "content": {"application/json": {"schema": {
                "type": "object",
                "required": ["arguments"],
                "additionalProperties": false,
                "properties": {
                    "arguments": d.input_schema,
                    "prompt": {"type": "string", "description": "why the call is made; recorded in the audit log"},
                    "end_user": {"type": "string", "description": "on whose behalf; recorded in the audit log"}
                }
            }}}
        },
        "responses": responses,
        "x-memberspot-class": d.class,
    }})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tool_has_an_operation_and_every_error_a_body() {
        let catalogue = Catalogue::standard();
        let doc = complete(&utoipa::openapi::OpenApi::default(), &catalogue);
        let grant = &doc["paths"]["/v1/tools/grant_user_offer_by_email/call"]["post"];
        assert_eq!(grant["operationId"], "grant_user_offer_by_email");
        let body = &grant["requestBody"]["content"]["application/json"]["schema"];
        assert!(
            body["properties"]["arguments"]["properties"]["email"].is_object(),
            "{body}"
        );
        assert_eq!(
            grant["responses"]["429"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/Error"
        );
        assert_eq!(
            doc["paths"].as_object().map(|p| p.len()),
            Some(catalogue.iter().count())
        );
        assert!(
            !doc.to_string().contains("#/$defs"),
            "no dangling references"
        );
    }
}
