//! Chat: an owner talks to a persona (its model from `models.toml`) in the browser.
//!
//! The conversation is a [`ChatSession`] of the agent crate, kept in memory per console
//! session and persona, so the page works without JavaScript: a message is a form POST,
//! the answer a redirect back to the transcript. Tool calls run as the persona (its scopes,
//! its confirm classes) and are audited under it with the console user as end user and the
//! conversation id as request id, like the REST chat; the surface is `console`. A call
//! that waits for confirmation runs only after the Confirm button's POST.
//!
//! Owners only: a chat changes the school as the persona, and viewers change nothing, so
//! viewers neither see the page nor may post to it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use memberspot_agent::{CallStatus, ChatError, ChatSession, ExecutedCall, Model, ModelsConfig};
use memberspot_hub::Surface;
use serde::Deserialize;

use crate::Console;
use crate::auth::{failure, refused};
use crate::form::{Change, csrf_forms};
use crate::layout::{View, badge, empty, notice};
use crate::personas::urlencode;
use crate::session::{Refusal, Signed, random_token};

/// Conversations kept at most per instance; the least recently used go first.
const MAX_CONVERSATIONS: usize = 200;
/// A conversation nobody touched for this long is dropped.
const IDLE: Duration = Duration::from_secs(60 * 60);

/// A conversation, locked while a turn runs.
type Shared = Arc<tokio::sync::Mutex<Conversation>>;

/// The console's chat: the models file and the open conversations.
pub struct ChatService {
    config: ModelsConfig,
    /// By (console session's CSRF token, persona).
    conversations: Mutex<HashMap<(String, String), Shared>>,
}

/// One line of the transcript.
enum Entry {
    User(String),
    Assistant {
        text: String,
        calls: Vec<ExecutedCall>,
        notices: Vec<String>,
    },
    Failed(String),
}

struct Conversation {
    session: ChatSession,
    transcript: Vec<Entry>,
    used: Instant,
}

impl ChatService {
    pub fn new(config: ModelsConfig) -> ChatService {
        ChatService {
            config,
            conversations: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `persona` has a chat model in the file.
    fn configured(&self, persona: &str) -> bool {
        self.config.for_persona_named(persona, None).is_ok()
    }

    fn existing(&self, s: &Signed, persona: &str) -> Option<Shared> {
        let map = self.conversations.lock().ok()?;
        map.get(&(s.csrf.clone(), persona.to_owned())).cloned()
    }

    /// The conversation of this console session with `persona`, started when missing.
    fn open(&self, c: &Console, s: &Signed, persona: &str) -> Result<Shared, String> {
        if let Some(conv) = self.existing(s, persona) {
            return Ok(conv);
        }
        let (_, model_config, settings) = self.config.for_persona_named(persona, None)?;
        let model = Model::new(model_config).map_err(|e| e.to_string())?;
        let session = ChatSession::new(c.hub.clone(), persona, model, settings.limits)
            .surface(Surface::Console)
            .end_user(Some(s.name.clone()))
            .conversation_id(Some(format!("console-{}", &random_token()[..16])))
            .system_prompt(settings.system_prompt);
        let conv = Arc::new(tokio::sync::Mutex::new(Conversation {
            session,
            transcript: Vec::new(),
            used: Instant::now(),
        }));
        let mut map = self
            .conversations
            .lock()
            .map_err(|_| c.i18n.text(s.lang, "chat-unavailable", &[]))?;
        // Dropping the idle and the oldest: `try_lock` skips conversations in use.
        let now = Instant::now();
        map.retain(|_, v| match v.try_lock() {
            Ok(g) => now.duration_since(g.used) < IDLE,
            Err(_) => true,
        });
        while map.len() >= MAX_CONVERSATIONS {
            let oldest = map
                .iter()
                .filter_map(|(k, v)| v.try_lock().ok().map(|g| (k.clone(), g.used)))
                .min_by_key(|(_, used)| *used)
                .map(|(k, _)| k);
            match oldest {
                Some(k) => {
                    map.remove(&k);
                }
                None => break,
            }
        }
        map.insert((s.csrf.clone(), persona.to_owned()), conv.clone());
        Ok(conv)
    }
}

#[derive(Deserialize, Default)]
pub struct MessageForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize, Default)]
pub struct ConfirmForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    id: String,
    /// `yes` runs the call; anything else declines it.
    #[serde(default)]
    approve: String,
}

csrf_forms!(MessageForm, ConfirmForm);

fn service(c: &Console) -> Option<&ChatService> {
    c.chat.get()
}

/// The personas that can be chatted with.
pub async fn list(State(c): State<Arc<Console>>, s: Signed) -> Response {
    if !s.is_owner() {
        return refused(&c, s.lang, Refusal::Viewer);
    }
    let v = View::signed(&c, &s, "/chat");
    let personas = match c.hub.list_personas().await {
        Ok(p) => p,
        Err(e) => return failure(&c, s.lang, &e),
    };
    let chat = service(&c);
    let usable: Vec<_> = personas
        .iter()
        .filter(|p| p.revoked_at.is_none() && chat.is_some_and(|ch| ch.configured(&p.name)))
        .collect();
    v.page(
        StatusCode::OK,
        &v.t("chat-title"),
        html! {
            p { (v.t("chat-intro")) }
            @if usable.is_empty() {
                (empty(&v.t("chat-empty")))
            } @else {
                ul.cards {
                    @for p in &usable {
                        li {
                            a href={ "/chat/" (urlencode(&p.name)) } { (p.name) }
                            " — " (p.scopes.join(", "))
                        }
                    }
                }
            }
        },
    )
}

/// A persona's conversation: the transcript, and the message form or the pending call.
pub async fn show(
    State(c): State<Arc<Console>>,
    s: Signed,
    Path(persona): Path<String>,
) -> Response {
    if !s.is_owner() {
        return refused(&c, s.lang, Refusal::Viewer);
    }
    let v = View::signed(&c, &s, "/chat");
    let Some(chat) = service(&c).filter(|ch| ch.configured(&persona)) else {
        return v.message(
            StatusCode::NOT_FOUND,
            "error-title",
            &v.ta("chat-not-configured", &[("name", persona.clone().into())]),
        );
    };
    let conv = chat.existing(&s, &persona);
    let guard = match &conv {
        Some(conv) => Some(conv.lock().await),
        None => None,
    };
    let action = format!("/chat/{}", urlencode(&persona));
    let body = html! {
        p { a href="/chat" { (v.t("back")) } }
        @if let Some(g) = &guard {
            @if g.transcript.is_empty() {
                (empty(&v.t("chat-start")))
            }
            ol.transcript {
                @for e in &g.transcript { (entry(&v, e)) }
            }
        } @else {
            (empty(&v.t("chat-start")))
        }
        @match guard.as_ref().and_then(|g| g.session.pending()) {
            Some(p) => {
                div.card.pending role="alert" {
                    h2 { (v.t("chat-pending-title")) }
                    p { (v.ta("chat-pending-text", &[("tool", p.tool.clone().into())])) }
                    p { code { (p.tool) } }
                    pre { (pretty(&p.args)) }
                    p { small { (p.reason) } }
                    form method="post" action={ (action) "/confirm" } {
                        input type="hidden" name="csrf" value=(s.csrf);
                        input type="hidden" name="id" value=(p.id);
                        button.danger type="submit" name="approve" value="yes" { (v.t("chat-confirm")) }
                        " "
                        button.secondary type="submit" name="approve" value="no" { (v.t("chat-deny")) }
                    }
                }
            }
            None => {
                form.card method="post" action=(action) {
                    input type="hidden" name="csrf" value=(s.csrf);
                    label for="message" { (v.t("chat-message")) }
                    textarea #message name="message" rows="3" required maxlength="8000" {}
                    button type="submit" { (v.t("chat-send")) }
                }
            }
        }
    };
    v.page(
        StatusCode::OK,
        &v.ta("chat-with", &[("name", persona.clone().into())]),
        body,
    )
}

fn pretty(v: &serde_json::Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

fn entry(v: &View<'_>, e: &Entry) -> Markup {
    match e {
        Entry::User(text) => html! {
            li.user { strong { (v.t("chat-you")) } p { (text) } }
        },
        Entry::Failed(text) => html! {
            li.failed { (notice("failed", text)) }
        },
        Entry::Assistant {
            text,
            calls,
            notices,
        } => html! {
            li.assistant {
                @for call in calls {
                    div.call {
                        strong { (v.t("chat-tool-call")) " " code { (call.tool) } } " "
                        @if call.outcome == CallStatus::Ok {
                            (badge("ok", &v.t("chat-call-ok")))
                        } @else {
                            (badge("failed", &v.label("call-status", &outcome_name(call.outcome))))
                        }
                        details open {
                            summary { (v.t("chat-arguments")) }
                            pre { (pretty(&call.args)) }
                        }
                        @if let Some(r) = &call.result {
                            details {
                                summary { (v.t("chat-result")) }
                                pre { (pretty(r)) }
                            }
                        }
                        @if let Some(err) = &call.error {
                            p.error { (err) }
                        }
                    }
                }
                @for n in notices { (notice("warning", n)) }
                @if !text.is_empty() {
                    strong { (v.t("chat-assistant")) }
                    p { (text) }
                }
            }
        },
    }
}

fn outcome_name(o: CallStatus) -> String {
    serde_json::to_value(o)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Sends the owner's message and runs the turn; back to the transcript.
pub async fn send(
    State(c): State<Arc<Console>>,
    Path(persona): Path<String>,
    Change(s, f): Change<MessageForm>,
) -> Response {
    let Some(chat) = service(&c).filter(|ch| ch.configured(&persona)) else {
        let v = View::signed(&c, &s, "/chat");
        let text = v.ta("chat-not-configured", &[("name", persona.clone().into())]);
        return v.message(StatusCode::NOT_FOUND, "error-title", &text);
    };
    let conv = match chat.open(&c, &s, &persona) {
        Ok(conv) => conv,
        Err(e) => {
            return View::signed(&c, &s, "/chat").message(
                StatusCode::SERVICE_UNAVAILABLE,
                "error-title",
                &e,
            );
        }
    };
    let mut g = conv.lock().await;
    g.used = Instant::now();
    let text = f.message.trim().to_owned();
    if !text.is_empty() && g.session.pending().is_none() {
        g.transcript.push(Entry::User(text.clone()));
    }
    let outcome = g.session.send(&text).await;
    record(&mut g, outcome);
    back(&persona)
}

/// Confirms or denies the pending call and continues the turn.
pub async fn confirm(
    State(c): State<Arc<Console>>,
    Path(persona): Path<String>,
    Change(s, f): Change<ConfirmForm>,
) -> Response {
    // Gone: idle for an hour, the hub restarted, or (behind a load balancer without
    // sticky sessions) another instance holds it. Nothing ran; the page says so.
    let Some(conv) = service(&c).and_then(|ch| ch.existing(&s, &persona)) else {
        let v = View::signed(&c, &s, "/chat");
        return v.page(
            StatusCode::NOT_FOUND,
            &v.t("chat-gone-title"),
            maud::html! {
                p.notice.warning role="alert" { (v.t("chat-gone")) }
                p { a href={ "/chat/" (urlencode(&persona)) } { (v.ta("chat-with", &[("name", persona.clone().into())])) } }
            },
        );
    };
    let mut g = conv.lock().await;
    g.used = Instant::now();
    let outcome = g.session.confirm(&f.id, f.approve == "yes").await;
    record(&mut g, outcome);
    back(&persona)
}

fn record(g: &mut Conversation, outcome: Result<memberspot_agent::Turn, ChatError>) {
    match outcome {
        Ok(turn) => {
            // A turn that paused and then continued reports its calls again: show only new ones.
            let shown: Vec<String> = g
                .transcript
                .iter()
                .rev()
                .take_while(|e| !matches!(e, Entry::User(_)))
                .flat_map(|e| match e {
                    Entry::Assistant { calls, .. } => {
                        calls.iter().map(|c| c.id.clone()).collect::<Vec<String>>()
                    }
                    _ => Vec::new(),
                })
                .collect();
            let calls: Vec<ExecutedCall> = turn
                .tool_calls
                .into_iter()
                .filter(|c| !shown.contains(&c.id))
                .collect();
            // A turn paused before any call or text adds nothing to show.
            if turn.answer.is_empty() && calls.is_empty() && turn.notices.is_empty() {
                return;
            }
            g.transcript.push(Entry::Assistant {
                text: turn.answer,
                calls,
                notices: turn.notices,
            });
        }
        Err(e) => {
            tracing::warn!(error = %e, "console chat: the turn failed");
            g.transcript.push(Entry::Failed(e.to_string()));
        }
    }
}

fn back(persona: &str) -> Response {
    Redirect::to(&format!("/chat/{}", urlencode(persona))).into_response()
}
