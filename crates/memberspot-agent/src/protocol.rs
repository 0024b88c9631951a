//! The two wire protocols a [`Model`](crate::model::Model) speaks, as pure functions:
//! our [`ChatRequest`] as a JSON body, and a JSON answer as our [`ChatResponse`].
//!
//! - OpenAI chat completions (`POST {base_url}/chat/completions`), which every
//!   OpenAI-compatible server accepts: a `system` message first, assistant tool calls as
//!   `tool_calls` with the arguments as JSON text, one `tool` message per result.
//! - Anthropic Messages (`POST {base_url}/v1/messages`): `system` beside the messages,
//!   assistant tool calls as `tool_use` blocks, and every `tool_result` of an assistant
//!   turn in the next user message (Anthropic requires them together).
//!
//! Non-streaming calls only: the chat loop needs the whole answer before it acts.

use serde_json::{Map, Value, json};

use crate::model::{ChatMessage, ChatRequest, ChatResponse, ModelConfig, ProviderKind, ToolCall};

/// The request body for `config`'s protocol.
pub(crate) fn request_body(config: &ModelConfig, req: &ChatRequest) -> Value {
    let mut body = Map::new();
    body.insert("model".into(), json!(config.model));
    body.insert("stream".into(), json!(false));
    match config.provider {
        ProviderKind::OpenAiCompatible => {
            if !req.tools.is_empty() {
                body.insert("tools".into(), openai_tools(req));
            }
            body.insert("messages".into(), openai_messages(req));
        }
        ProviderKind::Anthropic => {
            if let Some(system) = &req.system {
                body.insert("system".into(), json!(system));
            }
            if !req.tools.is_empty() {
                body.insert("tools".into(), anthropic_tools(req));
            }
            body.insert("messages".into(), anthropic_messages(req));
        }
    }
    if let Some(t) = config.temperature {
        body.insert("temperature".into(), json!(f64::from(t)));
    }
    body.insert(max_tokens_key(config).into(), json!(config.max_tokens));
    Value::Object(body)
}

/// OpenAI's reasoning models (o1, o3, o4) and GPT-5 onwards refuse `max_tokens`.
fn max_tokens_key(config: &ModelConfig) -> &'static str {
    let m = config.model.as_str();
    let newer = ["gpt-5", "gpt-6", "o1", "o3", "o4"]
        .iter()
        .any(|p| m.starts_with(p));
    if config.provider == ProviderKind::OpenAiCompatible && newer {
        "max_completion_tokens"
    } else {
        "max_tokens"
    }
}

/// A tool result as text (a string value is sent as it is).
fn result_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The assistant's text, unless it said nothing.
fn spoken(content: &Option<String>) -> Option<&String> {
    content.as_ref().filter(|t| !t.trim().is_empty())
}

fn openai_tools(req: &ChatRequest) -> Value {
    req.tools
        .iter()
        .map(|t| {
            json!({
                "type": "function",
                "function": {
                    "name": t.name,
                    "description": t.description,
                    "parameters": t.input_schema,
                    "strict": false,
                }
            })
        })
        .collect()
}

fn openai_messages(req: &ChatRequest) -> Value {
    let mut out = Vec::new();
    if let Some(system) = &req.system {
        out.push(json!({"role": "system", "content": system}));
    }
    for m in &req.messages {
        match m {
            ChatMessage::User { content } => out.push(json!({"role": "user", "content": content})),
            ChatMessage::Assistant {
                content,
                tool_calls,
            } => {
                let text = spoken(content);
                if text.is_none() && tool_calls.is_empty() {
                    continue;
                }
                let mut message =
                    json!({"role": "assistant", "content": text.cloned().unwrap_or_default()});
                if !tool_calls.is_empty() {
                    let calls: Vec<Value> = tool_calls
                        .iter()
                        .map(|c| {
                            json!({
                                "type": "function",
                                "id": c.id,
                                "function": {"name": c.name, "arguments": c.arguments.to_string()},
                            })
                        })
                        .collect();
                    message["tool_calls"] = Value::Array(calls);
                }
                out.push(message);
            }
            ChatMessage::Tool { call_id, content } => out.push(json!({
                "role": "tool",
                "content": result_text(content),
                "tool_call_id": call_id,
            })),
        }
    }
    Value::Array(out)
}

fn anthropic_tools(req: &ChatRequest) -> Value {
    req.tools
        .iter()
        .map(|t| json!({"name": t.name, "description": t.description, "input_schema": t.input_schema}))
        .collect()
}

fn anthropic_messages(req: &ChatRequest) -> Value {
    let mut out = Vec::new();
    let mut results: Vec<Value> = Vec::new();
    let flush = |results: &mut Vec<Value>, out: &mut Vec<Value>| {
        if !results.is_empty() {
            out.push(json!({"role": "user", "content": std::mem::take(results)}));
        }
    };
    for m in &req.messages {
        match m {
            ChatMessage::Tool { call_id, content } => results.push(json!({
                "type": "tool_result",
                "content": result_text(content),
                "tool_use_id": call_id,
            })),
            ChatMessage::User { content } => {
                flush(&mut results, &mut out);
                out.push(json!({"role": "user", "content": content}));
            }
            ChatMessage::Assistant {
                content,
                tool_calls,
            } => {
                flush(&mut results, &mut out);
                let text = spoken(content);
                // Anthropic refuses empty messages.
                match (text, tool_calls.is_empty()) {
                    (None, true) => {}
                    (Some(text), true) => out.push(json!({"role": "assistant", "content": text})),
                    (text, false) => {
                        let mut blocks: Vec<Value> = text
                            .map(|t| json!({"type": "text", "text": t}))
                            .into_iter()
                            .collect();
                        blocks.extend(tool_calls.iter().map(|c| {
                            // `input` must be an object, never null.
                            let input = match &c.arguments {
                                Value::Null => json!({}),
                                v => v.clone(),
                            };
                            json!({"type": "tool_use", "id": c.id, "name": c.name, "input": input})
                        }));
                        out.push(json!({"role": "assistant", "content": blocks}));
                    }
                }
            }
        }
    }
    flush(&mut results, &mut out);
    Value::Array(out)
}

/// Reads a successful answer; the error names what was missing or malformed.
pub(crate) fn parse_answer(kind: ProviderKind, body: &Value) -> Result<ChatResponse, String> {
    match kind {
        ProviderKind::OpenAiCompatible => parse_openai(body),
        ProviderKind::Anthropic => parse_anthropic(body),
    }
}

fn tokens(v: &Value, key: &str) -> Option<u32> {
    v.get(key)
        .and_then(Value::as_u64)
        .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
}

fn parse_openai(body: &Value) -> Result<ChatResponse, String> {
    let message = body
        .pointer("/choices/0/message")
        .ok_or("no `choices[0].message` in the answer")?;
    let text = match message.get("content") {
        Some(Value::String(s)) => Some(s.trim().to_string()),
        // Some servers send content parts; the text ones are the answer.
        Some(Value::Array(parts)) => {
            let texts: Vec<&str> = parts
                .iter()
                .filter(|p| p["type"] == "text")
                .filter_map(|p| p["text"].as_str())
                .collect();
            Some(texts.join("\n").trim().to_string())
        }
        _ => None,
    }
    .filter(|t| !t.is_empty());
    let tool_calls = match message.get("tool_calls") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(calls)) => calls
            .iter()
            .map(|c| {
                let id = c["id"].as_str().ok_or("a tool call without `id`")?;
                let name = c
                    .pointer("/function/name")
                    .and_then(Value::as_str)
                    .ok_or("a tool call without `function.name`")?;
                Ok(ToolCall {
                    id: id.to_string(),
                    name: name.to_string(),
                    arguments: arguments(c.pointer("/function/arguments"))?,
                })
            })
            .collect::<Result<_, String>>()?,
        Some(_) => return Err("`tool_calls` is not a list".into()),
    };
    let usage = body
        .get("usage")
        .and_then(|u| Some((tokens(u, "prompt_tokens")?, tokens(u, "completion_tokens")?)));
    Ok(ChatResponse {
        text,
        tool_calls,
        usage,
    })
}

/// Arguments arrive as JSON text (OpenAI) or an object (some compatible servers).
fn arguments(v: Option<&Value>) -> Result<Value, String> {
    match v {
        None | Some(Value::Null) => Ok(json!({})),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(json!({})),
        Some(Value::String(s)) => {
            serde_json::from_str(s).map_err(|e| format!("tool call arguments are not JSON: {e}"))
        }
        Some(v @ Value::Object(_)) => Ok(v.clone()),
        Some(_) => Err("tool call arguments are not an object".into()),
    }
}

fn parse_anthropic(body: &Value) -> Result<ChatResponse, String> {
    let blocks = body
        .get("content")
        .and_then(Value::as_array)
        .ok_or("no `content` list in the answer")?;
    let mut texts = Vec::new();
    let mut tool_calls = Vec::new();
    for b in blocks {
        match b["type"].as_str() {
            Some("text") => texts.extend(b["text"].as_str()),
            Some("tool_use") => tool_calls.push(ToolCall {
                id: b["id"]
                    .as_str()
                    .ok_or("a tool_use block without `id`")?
                    .to_string(),
                name: b["name"]
                    .as_str()
                    .ok_or("a tool_use block without `name`")?
                    .to_string(),
                arguments: match &b["input"] {
                    Value::Null => json!({}),
                    v => v.clone(),
                },
            }),
            // Thinking and other blocks are not part of the answer.
            _ => {}
        }
    }
    let text = Some(texts.join("\n\n")).filter(|t| !t.trim().is_empty());
    // `input_tokens` leaves out what was read from or written to the prompt cache.
    let usage = body.get("usage").and_then(|u| {
        let input = tokens(u, "input_tokens")?
            .saturating_add(tokens(u, "cache_creation_input_tokens").unwrap_or(0))
            .saturating_add(tokens(u, "cache_read_input_tokens").unwrap_or(0));
        Some((input, tokens(u, "output_tokens")?))
    });
    Ok(ChatResponse {
        text,
        tool_calls,
        usage,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ToolSpec;

    fn history() -> ChatRequest {
        ChatRequest {
            system: Some("s".into()),
            messages: vec![
                ChatMessage::user("hi"),
                ChatMessage::Assistant {
                    content: None,
                    tool_calls: vec![
                        ToolCall {
                            id: "a".into(),
                            name: "t".into(),
                            arguments: json!({"x": 1}),
                        },
                        ToolCall {
                            id: "b".into(),
                            name: "t".into(),
                            arguments: Value::Null,
                        },
                    ],
                },
                ChatMessage::Tool {
                    call_id: "a".into(),
                    content: json!({"ok": 1}),
                },
                ChatMessage::Tool {
                    call_id: "b".into(),
                    content: Value::String("text".into()),
                },
                // Said nothing: left out.
                ChatMessage::assistant(""),
                ChatMessage::assistant("done"),
            ],
            tools: vec![ToolSpec {
                name: "t".into(),
                description: "d".into(),
                input_schema: json!({"type": "object"}),
            }],
        }
    }

    #[test]
    fn anthropic_groups_tool_results_per_assistant_turn() {
        let config = ModelConfig::new(ProviderKind::Anthropic, "claude-x");
        let body = request_body(&config, &history());
        assert_eq!(body["system"], "s");
        assert_eq!(body["max_tokens"], 1024);
        assert_eq!(
            body["tools"],
            json!([{"name": "t", "description": "d", "input_schema": {"type": "object"}}])
        );
        assert_eq!(
            body["messages"],
            json!([
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "a", "name": "t", "input": {"x": 1}},
                    {"type": "tool_use", "id": "b", "name": "t", "input": {}},
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "content": "{\"ok\":1}", "tool_use_id": "a"},
                    {"type": "tool_result", "content": "text", "tool_use_id": "b"},
                ]},
                {"role": "assistant", "content": "done"},
            ])
        );
    }

    #[test]
    fn openai_sends_calls_as_json_text_and_one_message_per_result() {
        let mut config = ModelConfig::new(ProviderKind::OpenAiCompatible, "gpt-4.1-mini");
        config.temperature = Some(0.5);
        let body = request_body(&config, &history());
        assert_eq!(body["temperature"], 0.5);
        assert_eq!(body["max_tokens"], 1024);
        assert_eq!(
            body["tools"][0]["function"]["parameters"],
            json!({"type": "object"})
        );
        let messages = body["messages"].as_array().expect("messages").clone();
        assert_eq!(messages.len(), 6);
        assert_eq!(messages[0], json!({"role": "system", "content": "s"}));
        assert_eq!(messages[2]["content"], "");
        assert_eq!(
            messages[2]["tool_calls"][0],
            json!({"type": "function", "id": "a", "function": {"name": "t", "arguments": "{\"x\":1}"}})
        );
        assert_eq!(
            messages[3],
            json!({"role": "tool", "content": "{\"ok\":1}", "tool_call_id": "a"})
        );
        assert_eq!(messages[5], json!({"role": "assistant", "content": "done"}));
        let o3 = ModelConfig::new(ProviderKind::OpenAiCompatible, "o3-mini");
        let body = request_body(&o3, &ChatRequest::default());
        assert_eq!(body["max_completion_tokens"], 1024);
        assert!(body.get("max_tokens").is_none());
    }

    #[test]
    fn answers_are_read_in_both_protocols() {
        let openai = json!({"choices": [{"message": {"role": "assistant", "content": " Hi ",
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "t", "arguments": "{\"q\":2}"}},
                           {"id": "c2", "type": "function", "function": {"name": "t", "arguments": ""}}]}}],
            "usage": {"prompt_tokens": 7, "completion_tokens": 3}});
        let r = parse_answer(ProviderKind::OpenAiCompatible, &openai).expect("an OpenAI answer");
        assert_eq!(r.text.as_deref(), Some("Hi"));
        assert_eq!(r.tool_calls[0].arguments, json!({"q": 2}));
        assert_eq!(r.tool_calls[1].arguments, json!({}));
        assert_eq!(r.usage, Some((7, 3)));

        let anthropic = json!({"content": [{"type": "thinking", "thinking": "hmm"},
            {"type": "text", "text": "Looking."},
            {"type": "tool_use", "id": "t1", "name": "find", "input": {"q": 1}}],
            "usage": {"input_tokens": 5, "cache_read_input_tokens": 10, "output_tokens": 2}});
        let r = parse_answer(ProviderKind::Anthropic, &anthropic).expect("an Anthropic answer");
        assert_eq!(r.text.as_deref(), Some("Looking."));
        assert_eq!(r.tool_calls[0].name, "find");
        assert_eq!(r.usage, Some((15, 2)));

        for (kind, bad) in [
            (ProviderKind::OpenAiCompatible, json!({"choices": []})),
            (
                ProviderKind::OpenAiCompatible,
                json!({"choices": [{"message": {"tool_calls": [{"id": "x", "function": {"name": "t", "arguments": "{"}}]}}]}),
            ),
            (ProviderKind::Anthropic, json!({"type": "message"})),
            (
                ProviderKind::Anthropic,
                json!({"content": [{"type": "tool_use", "name": "t"}]}),
            ),
        ] {
            assert!(parse_answer(kind, &bad).is_err(), "{bad}");
        }
    }
}
