//! Running one flow: its steps in order, each rendered from the run's context, retried per
//! its policy, recorded with input, output, duration and error.
//!
//! The context a template sees: `flow`, `run_id`, `trigger` (`schedule`, `event`,
//! `manual`), `event` (for event-triggered runs: the stored event), `input` (what `flows
//! run --input` gave), `now` (RFC 3339), `steps.<name>.output` for every earlier step, and
//! `item` (or the step's `item` name) inside a `for_each`.

use std::time::{Duration, Instant};

use memberspot_api::retry::Backoff;
use memberspot_hub::store::{FlowStep, NewRun, RunStatus};
use memberspot_hub::{CallContext, Surface};
use memberspot_notify::Message;
use memberspot_tools::ToolClass;
use memberspot_tools::redact::{redact_copies, redact_copies_in_text};
use serde_json::{Value, json};

use crate::FlowsError;
use crate::config::{Action, Flow, Step, Target};
use crate::personas::call_as;
use crate::service::Flows;
use crate::sync::without_url;
use crate::template;

/// How a run ended.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunReport {
    pub run_id: String,
    pub flow: String,
    pub dry_run: bool,
    /// `Ok` or `Failed`.
    pub status: RunStatus,
    pub error: Option<String>,
    pub steps: Vec<StepReport>,
}

/// One step (or loop iteration) as it ran.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StepReport {
    pub name: String,
    pub kind: String,
    pub output: Option<Value>,
    pub error: Option<String>,
    pub attempts: u32,
    pub duration_ms: u64,
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("no flow named `{0}` in the flows file")]
    UnknownFlow(String),
    #[error("no run with id `{0}`")]
    UnknownRun(String),
    #[error(
        "flow `{0}` is already running (runs of one flow never overlap); try again when it has finished"
    )]
    Busy(String),
    #[error("this fire of `{0}` already ran")]
    AlreadyFired(String),
    #[error("store: {0}")]
    Store(#[from] memberspot_hub::store::StoreError),
}

impl RunError {
    /// Stable machine-readable code: an unknown flow or run is `not_found`.
    pub fn code(&self) -> &'static str {
        match self {
            RunError::UnknownFlow(_) | RunError::UnknownRun(_) => "not_found",
            RunError::Busy(_) | RunError::AlreadyFired(_) => "busy",
            RunError::Store(_) => "store",
        }
    }

    /// `{code, message}`, the error shape of every surface.
    pub fn to_json(&self) -> Value {
        json!({ "code": self.code(), "message": self.to_string() })
    }
}

impl Flows {
    /// Runs the flow of an earlier run again, with that run's input (trigger `rerun`).
    pub async fn rerun(&self, run_id: &str, dry_run: bool) -> Result<RunReport, RunError> {
        let run = self
            .hub()
            .flows_store()
            .get_run(run_id)
            .await?
            .ok_or_else(|| RunError::UnknownRun(run_id.to_owned()))?;
        self.run_flow(&run.flow, "rerun", run.input, None, dry_run)
            .await
    }

    /// Runs `flow` once. `fire_key` makes a scheduled or event-triggered run happen once
    /// across instances; runs of one flow never overlap.
    pub async fn run_flow(
        &self,
        name: &str,
        trigger: &str,
        input: Value,
        fire_key: Option<String>,
        dry_run: bool,
    ) -> Result<RunReport, RunError> {
        let flow = self
            .config()
            .flow(name)
            .cloned()
            .ok_or_else(|| RunError::UnknownFlow(name.to_owned()))?;
        let store = self.hub().flows_store();
        let lease = format!("flow:{name}");
        let until = chrono::Utc::now().timestamp_millis() + 15 * 60_000;
        if !store.try_lease(&lease, self.worker_id(), until).await? {
            return Err(RunError::Busy(name.to_owned()));
        }
        let result = self
            .run_locked(&flow, trigger, input, fire_key, dry_run)
            .await;
        if let Err(e) = store.release_lease(&lease, self.worker_id()).await {
            tracing::warn!(flow = name, error = %e, "could not release the flow's lease; it expires on its own");
        }
        result
    }

    async fn run_locked(
        &self,
        flow: &Flow,
        trigger: &str,
        input: Value,
        fire_key: Option<String>,
        dry_run: bool,
    ) -> Result<RunReport, RunError> {
        let store = self.hub().flows_store();
        let run = store
            .insert_run(&NewRun {
                flow: flow.name.clone(),
                trigger: trigger.to_owned(),
                fire_key: fire_key.clone(),
                dry_run,
                input: input.clone(),
                worker: self.worker_id().to_owned(),
            })
            .await?
            .ok_or_else(|| RunError::AlreadyFired(fire_key.unwrap_or_default()))?;
        let mut ctx = json!({
            "flow": flow.name,
            "run_id": run.id,
            "trigger": trigger,
            "input": input,
            "event": input.get("event").cloned().unwrap_or(Value::Null),
            "now": chrono::Utc::now().to_rfc3339(),
            "steps": {},
        });
        let mut reports = Vec::new();
        let mut failure = None;
        for step in &flow.steps {
            let (outputs, error) = self
                .run_step(flow, step, &mut ctx, &run.id, dry_run, &mut reports)
                .await;
            ctx["steps"][&step.name] = json!({"output": outputs, "error": error});
            if let Some(e) = error
                && !step.continue_on_error
            {
                failure = Some(format!("step `{}`: {e}", step.name));
                break;
            }
        }
        let status = if failure.is_some() {
            RunStatus::Failed
        } else {
            RunStatus::Ok
        };
        store
            .finish_run(&run.id, status, failure.as_deref())
            .await?;
        if let Some(e) = &failure {
            tracing::warn!(flow = %flow.name, run = %run.id, error = %e, "flow run failed");
        }
        Ok(RunReport {
            run_id: run.id,
            flow: flow.name.clone(),
            dry_run,
            status,
            error: failure,
            steps: reports,
        })
    }

    /// Runs one step (once, or per item); records each execution. Returns the output (a
    /// list for loops) and the first error.
    async fn run_step(
        &self,
        flow: &Flow,
        step: &Step,
        ctx: &mut Value,
        run_id: &str,
        dry_run: bool,
        reports: &mut Vec<StepReport>,
    ) -> (Value, Option<String>) {
        let items = match &step.for_each {
            None => None,
            Some(expr) => match template::eval(expr, ctx) {
                Ok(Value::Array(items)) => Some(items),
                Ok(Value::Null) => Some(Vec::new()),
                Ok(other) => {
                    let e = format!("for_each `{expr}` is not a list but {}", kind_of(&other));
                    self.record(
                        run_id,
                        step,
                        &step.name,
                        None,
                        None,
                        Some(&e),
                        1,
                        0,
                        reports,
                    )
                    .await;
                    return (Value::Null, Some(e));
                }
                Err(e) => {
                    let e = format!("for_each `{expr}`: {e}");
                    self.record(
                        run_id,
                        step,
                        &step.name,
                        None,
                        None,
                        Some(&e),
                        1,
                        0,
                        reports,
                    )
                    .await;
                    return (Value::Null, Some(e));
                }
            },
        };
        match items {
            None => {
                self.attempt(flow, step, ctx, &step.name, run_id, dry_run, reports)
                    .await
            }
            Some(items) => {
                let mut outputs = Vec::with_capacity(items.len());
                let mut first_error = None;
                for (i, item) in items.into_iter().enumerate() {
                    ctx[&step.item] = item;
                    let label = format!("{}[{i}]", step.name);
                    let (out, err) = self
                        .attempt(flow, step, ctx, &label, run_id, dry_run, reports)
                        .await;
                    outputs.push(out);
                    if err.is_some() && first_error.is_none() {
                        first_error = err;
                        if !step.continue_on_error {
                            break;
                        }
                    }
                }
                if let Some(obj) = ctx.as_object_mut() {
                    obj.remove(&step.item);
                }
                (Value::Array(outputs), first_error)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn attempt(
        &self,
        flow: &Flow,
        step: &Step,
        ctx: &Value,
        label: &str,
        run_id: &str,
        dry_run: bool,
        reports: &mut Vec<StepReport>,
    ) -> (Value, Option<String>) {
        let started = Instant::now();
        let mut last = (None, String::new(), 0);
        let earlier_secrets = self.secrets_of_earlier_steps(flow, ctx);
        for attempt in 1..=step.attempts {
            match self.execute(flow, step, ctx, run_id, dry_run).await {
                Ok((input, output)) => {
                    let ms = started.elapsed().as_millis() as u64;
                    // The history keeps fingerprints of secrets; the next steps get them.
                    let (kept_input, kept_output) =
                        self.for_record(step, &earlier_secrets, &input, &output);
                    self.record(
                        run_id,
                        step,
                        label,
                        Some(&kept_input),
                        Some(&kept_output),
                        None,
                        attempt,
                        ms,
                        reports,
                    )
                    .await;
                    return (output, None);
                }
                Err((input, e)) => {
                    let retry = e.is_retryable() && attempt < step.attempts;
                    last = (input, e.to_string(), attempt);
                    if !retry {
                        break;
                    }
                    tokio::time::sleep(step_backoff(step).delay(attempt)).await;
                }
            }
        }
        let ms = started.elapsed().as_millis() as u64;
        let (input, error, attempts) = last;
        let input = input.map(|i| redact_copies(&i, &earlier_secrets));
        let error = redact_copies_in_text(&error, &earlier_secrets);
        self.record(
            run_id,
            step,
            label,
            input.as_ref(),
            None,
            Some(&error),
            attempts,
            ms,
            reports,
        )
        .await;
        (Value::Null, Some(error))
    }

    /// The secrets (a login token) in the outputs of the steps that ran before: the run
    /// history keeps fingerprints of them, also where later steps copy them into what
    /// they render. The steps themselves get the real values.
    fn secrets_of_earlier_steps(&self, flow: &Flow, ctx: &Value) -> Vec<String> {
        let mut secrets = Vec::new();
        for step in &flow.steps {
            if let Action::Tool { tool, .. } = &step.action
                && let Some(entry) = self.hub().catalogue().get(tool)
            {
                secrets.extend(entry.secrets_in(&ctx["steps"][&step.name]["output"]));
            }
        }
        secrets
    }

    /// A step's input and output as the run history may keep them.
    fn for_record(
        &self,
        step: &Step,
        earlier_secrets: &[String],
        input: &Value,
        output: &Value,
    ) -> (Value, Value) {
        let mut secrets = earlier_secrets.to_vec();
        let mut output = output.clone();
        if let Action::Tool { tool, .. } = &step.action
            && let Some(entry) = self.hub().catalogue().get(tool)
        {
            secrets.extend(entry.secrets_in(&output));
            output = entry.redact_for_record(&output);
        }
        (
            redact_copies(input, &secrets),
            redact_copies(&output, &secrets),
        )
    }

    #[allow(clippy::too_many_arguments)]
    async fn record(
        &self,
        run_id: &str,
        step: &Step,
        label: &str,
        input: Option<&Value>,
        output: Option<&Value>,
        error: Option<&str>,
        attempts: u32,
        duration_ms: u64,
        reports: &mut Vec<StepReport>,
    ) {
        let record = FlowStep {
            name: label.to_owned(),
            kind: step.action.kind().to_owned(),
            input: input.cloned(),
            output: output.cloned(),
            error: error.map(str::to_owned),
            attempts: i64::from(attempts),
            started_at: chrono::Utc::now().timestamp_millis() - duration_ms as i64,
            duration_ms: duration_ms as i64,
        };
        if let Err(e) = self.hub().flows_store().add_step(run_id, &record).await {
            tracing::warn!(run = run_id, error = %e, "could not record a flow step");
        }
        reports.push(StepReport {
            name: label.to_owned(),
            kind: record.kind,
            output: output.cloned(),
            error: error.map(str::to_owned),
            attempts,
            duration_ms,
        });
    }

    /// One execution: `Ok((input, output))` or `Err((input if rendered, error))`.
    async fn execute(
        &self,
        flow: &Flow,
        step: &Step,
        ctx: &Value,
        run_id: &str,
        dry_run: bool,
    ) -> Result<(Value, Value), (Option<Value>, FlowsError)> {
        let fail = |input: Option<Value>| move |e: template::TemplateError| (input, e.into());
        match &step.action {
            Action::Tool { tool, args } => {
                let args = template::render_value(args, ctx).map_err(fail(None))?;
                let descriptor = self
                    .hub()
                    .catalogue()
                    .get(tool)
                    .map(|t| t.descriptor.clone())
                    .ok_or_else(|| {
                        let unknown =
                            memberspot_tools::ToolError::UnknownTool { name: tool.clone() };
                        let error = FlowsError::Tool {
                            tool: tool.clone(),
                            about: None,
                            error: unknown.into(),
                        };
                        (Some(args.clone()), error)
                    })?;
                let input = json!({"tool": tool, "arguments": args});
                if dry_run && descriptor.class != ToolClass::Read {
                    return Ok((
                        input,
                        json!({"dry_run": true, "would_call": tool, "arguments": args}),
                    ));
                }
                let mut call = CallContext::new(Surface::Flow);
                call.prompt = Some(format!(
                    "flow {} step {} (run {run_id})",
                    flow.name, step.name
                ));
                match call_as(self.hub(), &flow.persona, &call, tool, args).await {
                    Ok(v) => Ok((input, v)),
                    Err(e) => Err((Some(input), FlowsError::call(tool, e))),
                }
            }
            Action::Model { model, prompt } => {
                let prompt = template::render(prompt, ctx).map_err(fail(None))?;
                let input = json!({"model": model, "prompt": prompt});
                if dry_run {
                    return Ok((input, json!({"dry_run": true, "would_ask": model})));
                }
                let text = self
                    .ask_model(model, None, &prompt)
                    .await
                    .map_err(|e| (Some(input.clone()), e))?;
                Ok((input, Value::String(text)))
            }
            Action::Notify {
                target,
                subject,
                text,
            } => {
                let subject = template::render(subject, ctx).map_err(fail(None))?;
                let text = template::render(text, ctx).map_err(fail(None))?;
                let input = json!({"to": target, "subject": subject, "text": text});
                if dry_run {
                    return Ok((input, json!({"dry_run": true, "would_send": target})));
                }
                let msg = Message::new(subject, text);
                let detail = self
                    .deliver(*target, &msg)
                    .await
                    .map_err(|e| (Some(input.clone()), e))?;
                Ok((input, json!({"sent": target, "detail": detail})))
            }
            Action::Http {
                method,
                url,
                headers,
                body,
                json: json_body,
            } => {
                let url = template::render(url, ctx).map_err(fail(None))?;
                let mut rendered_headers = serde_json::Map::new();
                for (k, v) in headers {
                    rendered_headers.insert(
                        k.clone(),
                        Value::String(template::render(v, ctx).map_err(fail(None))?),
                    );
                }
                let payload = match (body, json_body) {
                    (Some(b), _) => {
                        Some(Value::String(template::render(b, ctx).map_err(fail(None))?))
                    }
                    (None, Some(j)) => Some(template::render_value(j, ctx).map_err(fail(None))?),
                    (None, None) => None,
                };
                // The run history shows the request, but never credentials in its headers.
                let shown: serde_json::Map<String, Value> = rendered_headers
                    .iter()
                    .map(|(k, v)| {
                        let secret = CREDENTIAL_HEADERS.iter().any(|c| k.eq_ignore_ascii_case(c));
                        (
                            k.clone(),
                            if secret {
                                json!("<redacted>")
                            } else {
                                v.clone()
                            },
                        )
                    })
                    .collect();
                let input =
                    json!({"method": method, "url": url, "headers": shown, "body": payload});
                if dry_run && method != "GET" {
                    return Ok((
                        input,
                        json!({"dry_run": true, "would_send": method, "url": url}),
                    ));
                }
                let out = self
                    .http_call(method, &url, &rendered_headers, payload.as_ref())
                    .await
                    .map_err(|e| (Some(input.clone()), e))?;
                Ok((input, out))
            }
            Action::Transform { template: t } => {
                let text = template::render(t, ctx).map_err(fail(None))?;
                let out = serde_json::from_str(&text).unwrap_or(Value::String(text));
                Ok((Value::Null, out))
            }
        }
    }

    async fn http_call(
        &self,
        method: &str,
        url: &str,
        headers: &serde_json::Map<String, Value>,
        payload: Option<&Value>,
    ) -> Result<Value, FlowsError> {
        let m = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|e| FlowsError::Http(format!("http.method `{method}`: {e}")))?;
        let mut req = self.http().request(m, url);
        for (k, v) in headers {
            req = req.header(k.as_str(), v.as_str().unwrap_or_default());
        }
        req = match payload {
            Some(Value::String(s)) => req.body(s.clone()),
            Some(v) => req.json(v),
            None => req,
        };
        // Only the host in messages: the URL may carry a token.
        let what = format!("{method} {}", host_of(url));
        let resp = req
            .send()
            .await
            .map_err(|e| FlowsError::Http(format!("{what}: {}", without_url(&e))))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| {
            FlowsError::Http(format!(
                "{what}: reading the answer failed: {}",
                without_url(&e)
            ))
        })?;
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if !status.is_success() {
            return Err(FlowsError::Http(format!("{what} answered {status}")));
        }
        Ok(json!({"status": status.as_u16(), "body": body}))
    }

    /// Sends a message to one target; returns the delivery's detail line.
    pub(crate) async fn deliver(
        &self,
        target: Target,
        msg: &Message,
    ) -> Result<String, FlowsError> {
        let delivery = &self.config().delivery;
        let not_configured = || FlowsError::NotConfigured(target);
        match target {
            Target::Slack => {
                let t = delivery.slack.as_ref().ok_or_else(not_configured)?;
                Ok(memberspot_notify::send_slack(self.http(), t, msg)
                    .await?
                    .detail)
            }
            Target::Email => {
                let t = delivery.email.as_ref().ok_or_else(not_configured)?;
                Ok(memberspot_notify::send_email(t, msg).await?.detail)
            }
            Target::Stdout => {
                println!("{}", msg.text);
                Ok("printed".into())
            }
        }
    }
}

/// Header names whose values are credentials: kept out of the run history.
const CREDENTIAL_HEADERS: [&str; 6] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "x-api-key",
    "api-key",
    "x-auth-token",
];

/// A step's retries wait `backoff_secs`, doubling each time; never more than a minute
/// (or `backoff_secs`, if that is longer), since the run waits with them.
fn step_backoff(step: &Step) -> Backoff {
    Backoff::new(step.backoff, step.backoff.max(STEP_BACKOFF_CAP))
}

const STEP_BACKOFF_CAP: Duration = Duration::from_secs(60);

/// Only the host, for messages: URLs can carry tokens.
fn host_of(url: &str) -> String {
    url::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_else(|| "the URL".into())
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}
