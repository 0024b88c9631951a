//! Slack incoming webhooks (`shared/webhooks.md` §7).
//!
//! One JSON POST per message: `text` always (notifications, screen readers, clients
//! without Block Kit), `blocks` when given, trimmed by [`fit`] so Slack never rejects a
//! digest for being long. `200 ok` is success; 429 and 5xx are retried with back-off
//! (429 after `Retry-After`); anything else is final and reported with Slack's error
//! string. An `invalid_payload` answer to a message with blocks is followed by one
//! text-only attempt, as the response table in `shared/vectors/slack.json` prescribes.

use std::time::{Duration, SystemTime};

use memberspot_api::retry::{Backoff, parse_retry_after};
use reqwest::header::RETRY_AFTER;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use url::{Host, Url};

use crate::error::{Channel, NotifyError, chain, one_line, scrub};
use crate::{Delivered, Message};

/// At most this many blocks per message.
pub const MAX_BLOCKS: usize = 50;
/// `section.text` limit; Slack answers 400 above it.
pub const MAX_SECTION_TEXT: usize = 3000;
/// `section.fields` count limit.
pub const MAX_FIELDS: usize = 10;
/// Limit of each `section.fields` item.
pub const MAX_FIELD_TEXT: usize = 2000;
/// `header` plain-text limit.
pub const MAX_HEADER_TEXT: usize = 150;
/// Budget for the serialised `blocks` array. Slack's real cap (`msg_blocks_too_long`,
/// reported near 13,000) is undocumented, so we stay clearly below it.
pub const MAX_BLOCKS_JSON: usize = 12_000;
/// Slack truncates `text` beyond this; we cut first so the cut is visible.
pub const MAX_TEXT: usize = 40_000;
/// `context.elements` count limit.
const MAX_CONTEXT_ELEMENTS: usize = 10;

/// Per-request time-out: a webhook answers in well under a second when healthy.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// First back-off step for 5xx, refused connections and 429 without `Retry-After`.
const BACKOFF_BASE: Duration = Duration::from_secs(1);

/// Where and how persistently to post.
#[derive(Debug, Clone)]
pub struct SlackTarget {
    /// `https://hooks.slack.com/services/T…/B…/…`. The URL is the credential: it is kept
    /// secret and never appears in errors or logs. Plain `http://` is accepted only for
    /// loopback hosts (`localhost`, `127.0.0.1`, `::1`), i.e. local test servers.
    pub webhook_url: SecretString,
    /// Requests per message, including the first; 429, 5xx and refused connections use
    /// the rest (default 4). The text-only attempt after `invalid_payload` comes on top.
    pub max_attempts: u32,
    /// Longest single pause between attempts; `Retry-After` is capped to it so a digest
    /// run never stalls (default 30 s).
    pub max_wait: Duration,
}

impl SlackTarget {
    pub fn new(webhook_url: impl Into<String>) -> Self {
        Self {
            webhook_url: SecretString::from(webhook_url.into()),
            max_attempts: 4,
            max_wait: Duration::from_secs(30),
        }
    }
}

/// Posts `msg` to the webhook: `text` (mrkdwn-escaped, since [`Message::text`] is plain
/// text) plus `slack_blocks` after [`fit`]. Blocks are sent as given otherwise: escape
/// user data in them with [`escape_mrkdwn`].
///
/// Refused connections are retried like 5xx (nothing reached Slack); a time-out is not,
/// because the message may already be in the channel.
pub async fn send_slack(
    http: &reqwest::Client,
    target: &SlackTarget,
    msg: &Message,
) -> Result<Delivered, NotifyError> {
    let raw_url = target.webhook_url.expose_secret();
    let url = check_url(raw_url)?;
    let secrets = [raw_url, url.path()];
    if target.max_attempts == 0 {
        return Err(invalid("max_attempts", "must be at least 1"));
    }
    let blocks = match &msg.slack_blocks {
        None => Vec::new(),
        Some(Value::Array(blocks)) => blocks.clone(),
        Some(_) => {
            return Err(invalid(
                "slack_blocks",
                "must be a JSON array of Block Kit blocks",
            ));
        }
    };
    let fallback = if msg.text.trim().is_empty() {
        &msg.subject
    } else {
        &msg.text
    };
    if fallback.trim().is_empty() {
        return Err(invalid(
            "text",
            "nothing to say: text and subject are empty",
        ));
    }

    let (blocks, text) = fit(blocks, escape_mrkdwn(fallback));
    let with_blocks = !blocks.is_empty();
    let full = if with_blocks {
        json!({ "text": text, "blocks": blocks })
    } else {
        json!({ "text": text })
    };
    let text_only = json!({ "text": text });

    let mut payload = &full;
    let mut fell_back = false;
    let mut waited = Duration::ZERO;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let (status, error, next) = match post(http, &url, payload).await {
            Ok(answer) if answer.status == 200 && answer.body.trim() == "ok" => {
                return Ok(Delivered {
                    attempts,
                    detail: delivered_detail(attempts, waited, fell_back),
                });
            }
            Ok(answer) => {
                let next = next_step(
                    Some(answer.status),
                    answer.retry_after,
                    attempts,
                    target.max_wait,
                );
                let error = match one_line(&scrub(answer.body, &secrets), 200) {
                    e if e.is_empty() => "(empty body)".to_owned(),
                    e => e,
                };
                (Some(answer.status), error, next)
            }
            Err(err) => {
                let refused = err.is_connect();
                let reason = describe(err.without_url(), &secrets);
                if !refused {
                    return Err(NotifyError::SlackTransport { attempts, reason });
                }
                let next = next_step(None, None, attempts, target.max_wait);
                (None, reason, next)
            }
        };
        let last = match status {
            Some(status) => format!("HTTP {status} {error}"),
            None => error.clone(),
        };
        match next {
            Next::Retry(_) if attempts >= target.max_attempts => {
                return Err(NotifyError::SlackGaveUp { attempts, last });
            }
            Next::Retry(wait) => {
                tokio::time::sleep(wait).await;
                waited += wait;
            }
            Next::Stop if error == "invalid_payload" && with_blocks && !fell_back => {
                // The blocks are the likely culprit; the text still gets the news out.
                fell_back = true;
                payload = &text_only;
            }
            Next::Stop => {
                return Err(NotifyError::SlackRejected {
                    status: status.unwrap_or_default(),
                    error,
                    attempts,
                });
            }
        }
    }
}

/// Escapes user data (buyer and product names) for mrkdwn: otherwise `<…>` would turn
/// into links or mentions and `&` into entities.
pub fn escape_mrkdwn(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// Trims blocks and fallback text to Slack's limits instead of letting Slack reject the
/// message. Long texts end in `…`; dropped fields, context elements and blocks are
/// replaced by a final "… N more" item; the text loses whole trailing lines and says how
/// many. What matters most comes first in a digest, so cuts remove from the end; the
/// block at the size boundary is shortened (all its texts to one common length) rather
/// than dropped when that leaves it worth reading.
///
/// A message already within limits is returned unchanged. If not even the first block
/// can be made to fit, the blocks are dropped and the text carries the message.
pub fn fit(blocks: Vec<Value>, text: String) -> (Vec<Value>, String) {
    let text = fit_text(text);
    let mut blocks = blocks;
    for block in &mut blocks {
        fit_block(block);
    }

    let mut omitted = 0;
    if blocks.len() > MAX_BLOCKS {
        omitted = blocks.len() - (MAX_BLOCKS - 1);
        blocks.truncate(MAX_BLOCKS - 1);
    }
    let with_note = |mut blocks: Vec<Value>, omitted: usize| {
        if omitted > 0 {
            blocks.push(more_note_block(omitted));
        }
        blocks
    };
    let size = |blocks: &[Value]| {
        2 + blocks.iter().map(json_chars).sum::<usize>() + blocks.len().saturating_sub(1)
    };
    let all = with_note(blocks, omitted);
    if size(&all) <= MAX_BLOCKS_JSON {
        return (all, text);
    }

    // Keep the longest prefix that fits next to a note, shortening the block at the
    // boundary rather than dropping it when there is room worth using.
    let mut blocks = all;
    if omitted > 0 {
        blocks.pop();
    }
    let reserve = json_chars(&more_note_block(blocks.len() + omitted)) + 1;
    let room = MAX_BLOCKS_JSON - 2 - reserve;
    let mut kept = Vec::new();
    let mut used = 0;
    let mut rest = blocks.into_iter();
    for block in rest.by_ref() {
        let comma = usize::from(!kept.is_empty());
        let block_size = json_chars(&block);
        if used + comma + block_size <= room {
            used += comma + block_size;
            kept.push(block);
            continue;
        }
        let available = room - used - comma;
        match shrink_to(&block, available) {
            Some(shrunk) if available >= MIN_SHRUNK_BLOCK => kept.push(shrunk),
            _ => omitted += 1,
        }
        break;
    }
    omitted += rest.count();
    if kept.is_empty() {
        return (Vec::new(), text);
    }
    (with_note(kept, omitted), text)
}

/// A block cut to less than this would say nothing; it is counted in the note instead.
const MIN_SHRUNK_BLOCK: usize = 200;

fn invalid(field: &str, problem: impl Into<String>) -> NotifyError {
    NotifyError::invalid(Channel::Slack, field, problem)
}

/// Never echoes the URL: even its host part could be a customer's proxy with the token
/// in the path.
fn check_url(raw: &str) -> Result<Url, NotifyError> {
    let url = Url::parse(raw.trim())
        .map_err(|e| invalid("webhook_url", format!("not a valid URL ({e})")))?;
    let loopback = match url.host() {
        Some(Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        None => return Err(invalid("webhook_url", "has no host")),
    };
    match url.scheme() {
        "https" => Ok(url),
        "http" if loopback => Ok(url),
        "http" => Err(invalid(
            "webhook_url",
            "must use https:// (plain http is only accepted for localhost test servers)",
        )),
        other => Err(invalid(
            "webhook_url",
            format!("must use https://, not {other}://"),
        )),
    }
}

struct Answer {
    status: u16,
    retry_after: Option<Duration>,
    body: String,
}

async fn post(http: &reqwest::Client, url: &Url, payload: &Value) -> reqwest::Result<Answer> {
    let response = http
        .post(url.clone())
        .timeout(REQUEST_TIMEOUT)
        .json(payload)
        .send()
        .await?;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, SystemTime::now()));
    // A body that breaks off still leaves the status to decide on.
    let body = response.text().await.unwrap_or_default();
    Ok(Answer {
        status,
        retry_after,
        body,
    })
}

/// The error with its causes ("error sending request: client error (Connect): tcp connect
/// error: Connection refused"), URL removed.
fn describe(err: reqwest::Error, secrets: &[&str]) -> String {
    let text = if err.is_timeout() {
        format!("timed out after {REQUEST_TIMEOUT:?}: {}", chain(&err))
    } else {
        chain(&err)
    };
    one_line(&scrub(text, secrets), 400)
}

fn delivered_detail(attempts: u32, waited: Duration, fell_back: bool) -> String {
    let mut detail = format!("posted to Slack in {attempts} attempt(s)");
    if !waited.is_zero() {
        detail.push_str(&format!(" after waiting {waited:?}"));
    }
    if fell_back {
        detail.push_str("; as text only, Slack rejected the blocks (invalid_payload)");
    }
    detail
}

/// What to do after an unsuccessful attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    Retry(Duration),
    Stop,
}

/// The retry policy as a pure function. `status` is `None` when the connection was
/// refused; `attempt` counts from 1 and is the attempt that just failed; `retry_after`
/// is the answer's `Retry-After` as a pause.
fn next_step(
    status: Option<u16>,
    retry_after: Option<Duration>,
    attempt: u32,
    max_wait: Duration,
) -> Next {
    let backoff = Backoff::new(BACKOFF_BASE, max_wait).delay(attempt);
    match status {
        None => Next::Retry(backoff),
        Some(429) => Next::Retry(retry_after.map_or(backoff, |d| d.min(max_wait))),
        Some(500..=599) => Next::Retry(backoff),
        Some(_) => Next::Stop,
    }
}

fn fit_text(text: String) -> String {
    if text.chars().count() <= MAX_TEXT {
        return text;
    }
    // Room for the note; whole lines keep the digest's columns readable.
    let budget = MAX_TEXT - 40;
    let prefix_end = text
        .char_indices()
        .nth(budget)
        .map_or(text.len(), |(i, _)| i);
    let prefix = &text[..prefix_end];
    match prefix.rfind('\n').filter(|&i| i > 0) {
        Some(cut) => {
            let lines = text[cut + 1..].lines().count();
            format!("{}\n… {lines} more lines", &text[..cut])
        }
        None => {
            let more = text[prefix_end..].chars().count();
            format!("{prefix}…\n… {more} more characters")
        }
    }
}

fn fit_block(block: &mut Value) {
    let Some(obj) = block.as_object_mut() else {
        return;
    };
    match obj.get("type").and_then(Value::as_str) {
        Some("header") => cap_text_object(obj.get_mut("text"), MAX_HEADER_TEXT),
        Some("section") => {
            cap_text_object(obj.get_mut("text"), MAX_SECTION_TEXT);
            if let Some(Value::Array(fields)) = obj.get_mut("fields") {
                cap_list(fields, MAX_FIELDS);
                for field in fields {
                    cap_text_object(Some(field), MAX_FIELD_TEXT);
                }
            }
        }
        Some("context") => {
            if let Some(Value::Array(elements)) = obj.get_mut("elements") {
                cap_list(elements, MAX_CONTEXT_ELEMENTS);
            }
        }
        _ => {}
    }
}

/// `{"type": …, "text": "…"}` → text cut to `max` characters.
fn cap_text_object(object: Option<&mut Value>, max: usize) {
    if let Some(Value::String(text)) = object.and_then(|o| o.get_mut("text"))
        && let Some(cut) = truncate(text, max)
    {
        *text = cut;
    }
}

/// Keeps `max - 1` items and says how many were dropped in the last one.
fn cap_list(items: &mut Vec<Value>, max: usize) {
    if items.len() > max {
        let dropped = items.len() - (max - 1);
        items.truncate(max - 1);
        items.push(json!({ "type": "mrkdwn", "text": format!("… {dropped} more") }));
    }
}

fn more_note_block(omitted: usize) -> Value {
    json!({
        "type": "context",
        "elements": [{ "type": "mrkdwn", "text": format!("… {omitted} more not shown") }],
    })
}

/// `None` if `text` fits; otherwise at most `max` characters ending in `…`, without a
/// dangling `<link` or `&entity` that Slack would render as garbage.
fn truncate(text: &str, max: usize) -> Option<String> {
    if text.chars().count() <= max {
        return None;
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    if let Some(lt) = cut.rfind('<')
        && !cut[lt..].contains('>')
        && cut.len() - lt <= 300
    {
        cut.truncate(lt);
    }
    if let Some(amp) = cut.rfind('&')
        && !cut[amp..].contains(';')
        && cut.len() - amp <= 8
    {
        cut.truncate(amp);
    }
    cut.push('…');
    Some(cut)
}

fn json_chars(value: &Value) -> usize {
    value.to_string().chars().count()
}

/// `block` with every `"text"` string cut to one common length, the longest that makes
/// the block fit into `available` serialised characters; `None` if nothing does.
fn shrink_to(block: &Value, available: usize) -> Option<Value> {
    let mut texts = Vec::new();
    text_pointers(block, String::new(), &mut texts);
    let capped = |cap: usize| {
        let mut block = block.clone();
        for pointer in &texts {
            if let Some(Value::String(text)) = block.pointer_mut(pointer)
                && let Some(cut) = truncate(text, cap)
            {
                *text = cut;
            }
        }
        block
    };
    let longest = texts
        .iter()
        .filter_map(|p| block.pointer(p).and_then(Value::as_str))
        .map(|t| t.chars().count())
        .max()?;
    // Invariant: `capped(low)` fits; the answer lies in low..high.
    let (mut low, mut high) = (1, longest);
    if json_chars(&capped(low)) > available {
        return None;
    }
    while low + 1 < high {
        let middle = low + (high - low) / 2;
        if json_chars(&capped(middle)) <= available {
            low = middle;
        } else {
            high = middle;
        }
    }
    Some(capped(low))
}

/// JSON pointers of every string under a `"text"` key.
fn text_pointers(value: &Value, pointer: String, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let escaped = key.replace('~', "~0").replace('/', "~1");
                let child_pointer = format!("{pointer}/{escaped}");
                if key == "text" && child.is_string() {
                    out.push(child_pointer);
                } else {
                    text_pointers(child, child_pointer, out);
                }
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                text_pointers(child, format!("{pointer}/{i}"), out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const CAP: Duration = Duration::from_secs(30);

    #[test]
    fn retry_policy_table() {
        let s = Duration::from_secs;
        let cases: &[(Option<u16>, Option<Duration>, u32, Next)] = &[
            (Some(400), None, 1, Next::Stop),
            (Some(403), None, 1, Next::Stop),
            (Some(404), None, 1, Next::Stop),
            (Some(410), None, 1, Next::Stop),
            (Some(200), None, 1, Next::Stop), // 200 without "ok"
            (Some(429), Some(s(30)), 1, Next::Retry(s(30))),
            (Some(429), Some(s(2)), 3, Next::Retry(s(2))),
            (Some(429), Some(s(3600)), 1, Next::Retry(CAP)),
            (
                Some(429),
                Some(Duration::ZERO),
                2,
                Next::Retry(Duration::ZERO),
            ),
            (Some(429), None, 1, Next::Retry(s(1))),
            (Some(500), None, 1, Next::Retry(s(1))),
            (Some(502), None, 2, Next::Retry(s(2))),
            (Some(503), None, 3, Next::Retry(s(4))),
            (Some(500), None, 9, Next::Retry(CAP)),
            (Some(500), None, 200, Next::Retry(CAP)),
            (None, None, 1, Next::Retry(s(1))),
        ];
        for (status, retry_after, attempt, want) in cases {
            assert_eq!(
                next_step(*status, *retry_after, *attempt, CAP),
                *want,
                "{status:?} {retry_after:?} attempt {attempt}"
            );
        }
    }

    #[test]
    fn urls_must_be_https_except_loopback() {
        for ok in [
            "https://hooks.slack.com/services/T1/B1/xyz",
            "http://127.0.0.1:8080/hook",
            "http://localhost/hook",
            "http://[::1]:9/hook",
        ] {
            assert!(check_url(ok).is_ok(), "{ok}");
        }
        for (bad, says) in [
            ("http://hooks.slack.com/services/T1/B1/sekrit", "https://"),
            ("ftp://hooks.slack.com/services/T1/B1/sekrit", "not ftp://"),
            ("hooks.slack.com/services/T1/B1/sekrit", "not a valid URL"),
        ] {
            let err = check_url(bad).unwrap_err().to_string();
            assert!(err.starts_with("slack: webhook_url: "), "{err}");
            assert!(err.contains(says), "{err}");
            assert!(!err.contains("sekrit"), "{err}");
        }
    }

    #[test]
    fn escapes_the_three_control_characters() {
        assert_eq!(
            escape_mrkdwn("Tom & Jerry <@U123> > *bold*"),
            "Tom &amp; Jerry &lt;@U123&gt; &gt; *bold*"
        );
    }

    #[test]
    fn truncate_avoids_dangling_links_and_entities() {
        assert_eq!(truncate("short", 10), None);
        assert_eq!(truncate("abcdefghij", 5).unwrap(), "abcd…");
        assert_eq!(
            truncate("see <https://x.example/long|here>", 20).unwrap(),
            "see …"
        );
        assert_eq!(truncate("Tom &amp; Jerry", 8).unwrap(), "Tom …");
        assert_eq!(truncate("äöüßäöü", 4).unwrap(), "äöü…");
    }

    #[test]
    fn long_text_loses_whole_lines_and_says_so() {
        let line = "x".repeat(99);
        let text = vec![line.as_str(); 1000].join("\n"); // 99,999 chars
        let fitted = fit_text(text);
        assert!(fitted.chars().count() <= MAX_TEXT);
        let (body, note) = fitted.rsplit_once('\n').unwrap();
        assert!(body.lines().all(|l| l == line));
        let kept = body.lines().count();
        assert_eq!(note, format!("… {} more lines", 1000 - kept));

        let one_line = "y".repeat(50_000);
        let fitted = fit_text(one_line);
        assert!(fitted.chars().count() <= MAX_TEXT);
        assert!(
            fitted.ends_with(" more characters"),
            "{}",
            &fitted[fitted.len() - 40..]
        );
    }

    #[test]
    fn the_block_at_the_budget_boundary_is_shortened_evenly() {
        let fields: Vec<Value> = (0..10)
            .map(|i| json!({"type": "mrkdwn", "text": format!("{i}{}", "f".repeat(2500))}))
            .collect();
        let blocks = vec![
            json!({"type": "header", "text": {"type": "plain_text", "text": "Digest"}}),
            json!({"type": "section", "fields": fields}),
            json!({"type": "divider"}),
        ];
        let (blocks, _) = fit(blocks, "t".into());
        assert!(json_chars(&Value::Array(blocks.clone())) <= MAX_BLOCKS_JSON);
        assert_eq!(blocks.len(), 3);
        assert_eq!(blocks[0]["text"]["text"], "Digest");
        let lengths: Vec<usize> = blocks[1]["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["text"].as_str().unwrap().chars().count())
            .collect();
        assert_eq!(lengths.len(), 10);
        assert!(
            lengths
                .iter()
                .all(|&l| l == lengths[0] && l > 1000 && l < 2000),
            "{lengths:?}"
        );
        assert_eq!(blocks[2]["elements"][0]["text"], "… 1 more not shown");
    }

    #[test]
    fn an_unshrinkable_block_falls_back_to_text_only() {
        let image = json!({"type": "image", "image_url": format!("https://x/{}", "a".repeat(20_000)), "alt_text": "a"});
        let (blocks, text) = fit(vec![image], "news".into());
        assert!(blocks.is_empty());
        assert_eq!(text, "news");
    }
}
