//! Change detection over a school: events Memberspot cannot send.
//!
//! Memberspot has no outgoing webhooks for what happens inside the school (a member is
//! deleted, an offer runs out, a course is completed), so the poller reads the school
//! through the hub, compares it with the previous reading and turns the differences into
//! events in the same store the webhook receivers write to.
//!
//! A cycle:
//!
//! 1. re-reads its persona (a revoked persona stops the reads at once) and the connection's
//!    rate limit, and paces its own calls at `rate_share` of that limit;
//! 2. lists every member (`list_users`, 100 per page) and, for the watched courses, the
//!    progress of each member with access to them (`get_user_course_progress`);
//! 3. diffs against the stored snapshot ([`Store::load_snapshot`]);
//! 4. writes the changed snapshot rows, the events and its meta keys in one transaction
//!    ([`Store::apply_poll`]): a crash or restart can neither report a change twice nor
//!    lose it, because the snapshot and the events it implies always move together.
//!
//! A cycle that cannot read everything applies nothing, so a member whose page failed is
//! never reported deleted. The first cycle (and the first cycle of a newly watched course)
//! only records a baseline.
//!
//! Course progress: the API reports the posts a member started and completed, not the
//! size of the course. The poller learns each watched course's posts as the union of the
//! posts any member has touched (kept in the snapshot under `course:<id>`, it only grows),
//! and derives a percentage from it. Because that denominator can grow, `progress_changed`
//! fires when the member's own completed posts change, never because the course grew.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use futures::StreamExt;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use memberspot_api::wire::{CourseProgress, User};
use memberspot_hub::store::{
    Connection, EventStatus, EventStore, Inserted, NewEvent, Persona, StoreError,
};
use memberspot_hub::{CallContext, Hub, HubError, ListOptions, PageHook, Principal, Surface};
use memberspot_tools::Tool;
use memberspot_tools::inputs::PageLength;
use memberspot_tools::tools::{ListOffersTool, ListUsersInput, NoInput};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// Name of the persona the poller reads as, unless configured otherwise.
pub const DEFAULT_PERSONA: &str = "poller";
/// `provider` of every poller event.
pub const PROVIDER: &str = "poller";
/// Members per `list_users` page: the API's maximum, so a school costs the fewest calls.
const PAGE_LENGTH: u32 = 100;
/// Progress reads in flight at once. The pacer sets the rate; a few concurrent requests
/// only hide the round-trip time, so the rate can actually be reached.
const PROGRESS_CONCURRENCY: usize = 4;
/// `run` never spins faster than this, whatever the configuration says.
const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// How far the school's clock may be ahead of ours when judging an expiry.
const CLOCK_SKEW_MS: i64 = 5 * 60 * 1000;
/// Snapshot key prefixes.
const USER_PREFIX: &str = "user:";
const COURSE_PREFIX: &str = "course:";

/// What the poller watches and how hard it may read.
#[derive(Debug, Clone, PartialEq)]
pub struct PollerConfig {
    /// Hub connection name, e.g. "school": as the rules file names it, filled in when the
    /// events subsystem starts (the file's `default_connection`, or the embedded sandbox
    /// while it is the only connection).
    pub connection: Option<String>,
    /// Persona the reads run as; must exist on `connection` with scope "read".
    pub persona: String,
    /// Between cycle starts.
    pub interval: Duration,
    /// 0 < share <= 1: fraction of the connection's rate limit the poller may use, so
    /// agents and access rules on the same key keep the rest.
    pub rate_share: f64,
    /// Course ids whose progress is watched. Each costs one call per member with access
    /// per cycle, so watch only the courses flows need.
    pub courses: Vec<String>,
}

impl PollerConfig {
    /// The school watched once resolved; empty (no school: every cycle fails) before.
    pub fn connection(&self) -> &str {
        self.connection.as_deref().unwrap_or_default()
    }
}

impl Default for PollerConfig {
    fn default() -> Self {
        PollerConfig {
            connection: None,
            persona: DEFAULT_PERSONA.to_string(),
            interval: Duration::from_secs(300),
            rate_share: 0.5,
            courses: Vec::new(),
        }
    }
}

/// The kinds of event the poller emits (`kind` and `name` of the stored event).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PollEventKind {
    MemberCreated,
    MemberDeleted,
    OfferGranted,
    OfferRevoked,
    OfferExpired,
    ProgressChanged,
    CourseCompleted,
}

impl PollEventKind {
    pub const ALL: [PollEventKind; 7] = [
        Self::MemberCreated,
        Self::MemberDeleted,
        Self::OfferGranted,
        Self::OfferRevoked,
        Self::OfferExpired,
        Self::ProgressChanged,
        Self::CourseCompleted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::MemberCreated => "member_created",
            Self::MemberDeleted => "member_deleted",
            Self::OfferGranted => "offer_granted",
            Self::OfferRevoked => "offer_revoked",
            Self::OfferExpired => "offer_expired",
            Self::ProgressChanged => "progress_changed",
            Self::CourseCompleted => "course_completed",
        }
    }

    pub fn parse(s: &str) -> Option<PollEventKind> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for PollEventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `source` of the events polled from `connection` (filter the event store by it).
pub fn event_source(connection: &str) -> String {
    format!("poll:{connection}")
}

/// Meta key `poll.<connection>.<name>`.
fn meta_key(connection: &str, name: &str) -> String {
    format!("poll.{connection}.{name}")
}

/// What one cycle did.
#[derive(Debug, Clone, Serialize)]
pub struct CycleReport {
    pub connection: String,
    /// When the cycle started (epoch ms); also part of every event's dedupe key.
    pub started_at: i64,
    /// This cycle only recorded the state (first run, or the connection was replaced).
    pub baseline: bool,
    /// Members read.
    pub members: usize,
    /// Calls made through the hub (each one audited).
    pub api_calls: u64,
    /// Events stored.
    pub events: usize,
    /// Events whose dedupe key was already stored (should stay 0).
    pub duplicates: usize,
    /// Events per kind.
    pub by_kind: BTreeMap<String, usize>,
    /// Progress reads (member × course).
    pub progress_reads: usize,
    /// Watched courses recorded silently this cycle (newly added to the configuration).
    pub courses_baselined: Vec<String>,
    /// Watched courses no offer of the school contains: nothing to read.
    pub unknown_courses: Vec<String>,
    /// Snapshot rows written or deleted.
    pub snapshot_changes: usize,
    #[serde(rename = "duration_ms", serialize_with = "as_millis")]
    pub duration: Duration,
}

fn as_millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis().try_into().unwrap_or(u64::MAX))
}

/// Why a cycle failed. Nothing was applied; the next cycle starts from the same snapshot.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error("poller for connection `{connection}`: invalid configuration: {message}")]
    Config { connection: String, message: String },
    #[error(
        "poller persona `{persona}` cannot be used: {source}; create it on connection `{connection}` with scope \"read\""
    )]
    Persona {
        persona: String,
        connection: String,
        #[source]
        source: HubError,
    },
    #[error(
        "poller persona `{persona}` belongs to connection `{actual}`, but the poller watches `{connection}`"
    )]
    PersonaConnection {
        persona: String,
        connection: String,
        actual: String,
    },
    #[error("poller: there is no connection named `{connection}`")]
    NoConnection { connection: String },
    #[error(
        "poll of connection `{connection}` as persona `{persona}`: {tool} failed: {source}; nothing was applied"
    )]
    Call {
        connection: String,
        persona: String,
        tool: &'static str,
        #[source]
        source: HubError,
    },
    #[error(
        "poll of connection `{connection}`: unexpected answer from {tool}: {message}; nothing was applied"
    )]
    Answer {
        connection: String,
        tool: &'static str,
        message: String,
    },
    #[error(
        "poll of connection `{connection}`: another poller stored a cycle for this connection meanwhile; this cycle was discarded"
    )]
    Concurrent { connection: String },
    #[error("poll of connection `{connection}`: store: {source}")]
    Store {
        connection: String,
        #[source]
        source: StoreError,
    },
}

// ------------------------------------------------------------------- snapshot

/// One member as stored in the snapshot (`user:<uid>`), serialised canonically (sorted
/// maps, absent fields omitted) so an unchanged member compares equal as text and costs
/// no parsing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct MemberSnap {
    email: String,
    /// Offer id → holding.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    offers: BTreeMap<String, HoldingSnap>,
    /// Watched course id → progress.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    progress: BTreeMap<String, ProgressSnap>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct HoldingSnap {
    /// As the API reports it.
    active: bool,
    /// Epoch ms.
    #[serde(default, rename = "expiresAt", skip_serializing_if = "Option::is_none")]
    expires_at: Option<i64>,
    /// `expires_at` had passed when this was read; kept so "expired" is judged once,
    /// against the clock of the cycle that saw it, not re-judged on every later cycle.
    #[serde(default, skip_serializing_if = "is_false")]
    expired: bool,
    #[serde(default, rename = "orderId", skip_serializing_if = "Option::is_none")]
    order_id: Option<String>,
}

impl HoldingSnap {
    /// Whether the holding grants access. The API's `active` is already the effective
    /// state, but an API that reports the stored flag is covered by the date as well.
    fn has_access(&self) -> bool {
        self.active && !self.expired
    }

    fn to_json(&self) -> Value {
        json!({
            "active": self.has_access(),
            "expires_at": self.expires_at.map(iso),
            "order_id": self.order_id,
        })
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct ProgressSnap {
    /// Completed share of the course's known posts, rounded down (100 = all completed).
    percent: u8,
    completed: u32,
    started: u32,
}

impl ProgressSnap {
    fn to_json(self) -> Value {
        json!({"percent": self.percent, "completed": self.completed, "started": self.started})
    }
}

/// The known posts of a watched course (`course:<id>`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct CourseSnap {
    posts: BTreeSet<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn iso(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn percent(completed: usize, total: usize) -> u8 {
    if total == 0 {
        return 0;
    }
    // completed <= total, so this is at most 100.
    (completed.min(total) * 100 / total) as u8
}

// ------------------------------------------------------------------- reading

/// Every read of a cycle: through the hub (scoped, audited), paced, counted.
struct Reader<'a> {
    hub: &'a Hub,
    who: Principal,
    connection: &'a str,
    persona: &'a str,
    pacer: Option<Arc<DefaultDirectRateLimiter>>,
    calls: Arc<AtomicU64>,
}

impl Reader<'_> {
    async fn call(&self, tool: &'static str, args: Value) -> Result<Value, HubError> {
        if let Some(p) = &self.pacer {
            p.until_ready().await;
        }
        self.calls.fetch_add(1, Ordering::Relaxed);
        let ctx = CallContext::new(Surface::Poller);
        self.hub.call(&self.who, &ctx, tool, args).await.result
    }

    /// As [`Reader::call`], typed.
    async fn run<T: Tool>(&self, input: T::Input) -> Result<T::Output, HubError> {
        if let Some(p) = &self.pacer {
            p.until_ready().await;
        }
        self.calls.fetch_add(1, Ordering::Relaxed);
        let ctx = CallContext::new(Surface::Poller);
        self.hub.run::<T>(&self.who, &ctx, input).await
    }

    fn failed(&self, tool: &'static str, source: HubError) -> PollError {
        PollError::Call {
            connection: self.connection.to_string(),
            persona: self.persona.to_string(),
            tool,
            source,
        }
    }

    fn bad_answer(&self, tool: &'static str, message: impl std::fmt::Display) -> PollError {
        PollError::Answer {
            connection: self.connection.to_string(),
            tool,
            message: message.to_string(),
        }
    }

    /// Every member, keyed by uid. Fails unless the whole list was read: a cursor that
    /// comes back would loop, and stopping there could miss members (and report them
    /// deleted), so the cycle fails instead.
    async fn members(&self, now_ms: i64) -> Result<HashMap<String, MemberSnap>, PollError> {
        const TOOL: &str = "list_users";
        let filter = ListUsersInput {
            page_length: PageLength::new(PAGE_LENGTH),
            ..ListUsersInput::default()
        };
        let pacer = self.pacer.clone();
        let calls = self.calls.clone();
        let before_page: PageHook = Arc::new(move || {
            let (pacer, calls) = (pacer.clone(), calls.clone());
            Box::pin(async move {
                if let Some(p) = &pacer {
                    p.until_ready().await;
                }
                calls.fetch_add(1, Ordering::Relaxed);
            })
        });
        let options = ListOptions {
            before_page: Some(before_page),
            ..ListOptions::default()
        };
        let ctx = CallContext::new(Surface::Poller);
        let mut users = std::pin::pin!(self.hub.users_stream(&self.who, &ctx, filter, options));
        let mut members = HashMap::new();
        loop {
            match users.next().await {
                None => break,
                Some(Ok(user)) => {
                    members.insert(user.uid.clone(), member_snap(&user, now_ms));
                }
                Some(Err(e)) if e.is_repeated_cursor() => return Err(self.bad_answer(TOOL, e)),
                Some(Err(e)) => return Err(self.failed(TOOL, e)),
            }
        }
        Ok(members)
    }

    /// Course id → offers containing it.
    async fn course_offers(&self) -> Result<HashMap<String, BTreeSet<String>>, PollError> {
        const TOOL: &str = ListOffersTool::NAME;
        let offers = self
            .run::<ListOffersTool>(NoInput {})
            .await
            .map_err(|e| self.failed(TOOL, e))?;
        let mut map: HashMap<String, BTreeSet<String>> = HashMap::new();
        for offer in offers.offers {
            for course in offer.course_ids {
                map.entry(course).or_default().insert(offer.id.clone());
            }
        }
        Ok(map)
    }

    /// One member's progress in one course; `None` when the school has none to show
    /// (member deleted meanwhile, not enrolled).
    async fn progress(&self, email: &str, course: &str) -> Result<Option<Progress>, PollError> {
        const TOOL: &str = "get_user_course_progress";
        let answer = match self
            .call(TOOL, json!({ "email": email, "course_id": course }))
            .await
        {
            Ok(v) => v,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(self.failed(TOOL, e)),
        };
        let p: CourseProgress =
            serde_json::from_value(answer).map_err(|e| self.bad_answer(TOOL, e))?;
        // Posts given only as counts name no post: nothing to compare.
        let completed: BTreeSet<String> = p
            .completed_posts
            .into_ids()
            .into_iter()
            .map(|p| p.0)
            .collect();
        let started: BTreeSet<String> = p
            .active_posts
            .into_ids()
            .into_iter()
            .map(|p| p.0)
            .filter(|p| !completed.contains(p))
            .collect();
        Ok(Some(Progress { completed, started }))
    }
}

/// One progress answer, before the course's size is known.
struct Progress {
    completed: BTreeSet<String>,
    started: BTreeSet<String>,
}

fn member_snap(user: &User, now_ms: i64) -> MemberSnap {
    let mut offers: BTreeMap<String, HoldingSnap> = BTreeMap::new();
    for h in &user.offers {
        let expires_at = h.expires_at.as_ref().map(|t| t.0.timestamp_millis());
        let snap = HoldingSnap {
            active: h.active,
            expires_at,
            // The API judges expiry by its own clock: an end date that is only just
            // ahead of ours on a holding the API already reports inactive is an expiry,
            // not a revocation.
            expired: expires_at
                .is_some_and(|e| e <= now_ms || (!h.active && e <= now_ms + CLOCK_SKEW_MS)),
            order_id: h.order_id.clone().filter(|o| !o.is_empty()),
        };
        // The same offer listed twice (granted under two orders): the one granting
        // access wins, so the member's access is what the diff sees.
        match offers.get(&h.offer_id) {
            Some(existing) if existing.has_access() || !snap.has_access() => {}
            _ => {
                offers.insert(h.offer_id.clone(), snap);
            }
        }
    }
    MemberSnap {
        email: user.email.clone(),
        offers,
        progress: BTreeMap::new(),
    }
}

// ------------------------------------------------------------------- diff

/// The result of comparing two readings.
#[derive(Debug, Default)]
struct Diff {
    changes: Vec<(String, Option<String>)>,
    events: Vec<NewEvent>,
}

/// What the diff needs besides the two readings.
struct DiffCtx<'a> {
    connection: &'a str,
    started_ms: i64,
    /// Record only, emit nothing.
    baseline: bool,
    /// Courses whose progress was recorded before this cycle: only their changes are
    /// events (a newly watched course is recorded silently).
    report_courses: &'a BTreeSet<String>,
}

impl DiffCtx<'_> {
    fn event(
        &self,
        kind: PollEventKind,
        uid: &str,
        email: &str,
        target: Option<&str>,
        order_id: Option<&str>,
        mut data: Value,
    ) -> NewEvent {
        if let Value::Object(map) = &mut data {
            map.insert("uid".into(), json!(uid));
            map.insert("email".into(), json!(email));
            map.insert("connection".into(), json!(self.connection));
            map.insert("detected_at".into(), json!(iso(self.started_ms)));
        }
        NewEvent {
            // The cycle's start makes the key unique per real change (the same offer may
            // be granted, revoked and granted again) and stable (one cycle, one apply).
            dedupe_key: format!(
                "poll:{}:{uid}:{kind}:{}:{}",
                self.connection,
                target.unwrap_or("-"),
                self.started_ms
            ),
            source: event_source(self.connection),
            provider: PROVIDER.to_string(),
            kind: kind.as_str().to_string(),
            name: kind.as_str().to_string(),
            order_id: order_id.map(str::to_string),
            product_id: target.map(str::to_string),
            email: (!email.is_empty()).then(|| email.to_string()),
            test: false,
            amount_minor: None,
            currency: None,
            data,
            status: EventStatus::Done,
            // Read from the school itself with its own key: authentic by construction.
            connection: Some(self.connection.to_string()),
            verified: true,
        }
    }
}

/// Compares the stored snapshot with the current reading: the snapshot rows to write and
/// the events they imply. Pure, so the semantics are unit-tested without a school.
fn diff(
    ctx: &DiffCtx<'_>,
    prev: &HashMap<String, String>,
    cur: &HashMap<String, MemberSnap>,
) -> Result<Diff, serde_json::Error> {
    let mut out = Diff::default();
    // Sorted, so events are stored in a reproducible order.
    let mut uids: Vec<&String> = cur.keys().collect();
    uids.sort();
    for uid in uids {
        let snap = &cur[uid];
        let key = format!("{USER_PREFIX}{uid}");
        let text = serde_json::to_string(snap)?;
        let before = prev.get(&key);
        if before == Some(&text) {
            continue;
        }
        if !ctx.baseline {
            match before {
                None => member_created(ctx, uid, snap, &mut out.events),
                Some(old) => match serde_json::from_str::<MemberSnap>(old) {
                    Ok(old) => member_changed(ctx, uid, &old, snap, &mut out.events),
                    // Unreadable (a format from a future version, a damaged row): the
                    // member is re-recorded silently rather than reported from nothing.
                    Err(e) => tracing::warn!(
                        connection = ctx.connection,
                        uid = %uid,
                        error = %e,
                        "poller: unreadable snapshot row; recording the member afresh"
                    ),
                },
            }
        }
        out.changes.push((key, Some(text)));
    }
    let mut gone: Vec<(&String, &String)> = prev
        .iter()
        .filter(|(k, _)| {
            k.strip_prefix(USER_PREFIX)
                .is_some_and(|uid| !cur.contains_key(uid))
        })
        .collect();
    gone.sort();
    for (key, old) in gone {
        if !ctx.baseline {
            let uid = &key[USER_PREFIX.len()..];
            let old: MemberSnap = serde_json::from_str(old).unwrap_or_default();
            let offers: BTreeMap<&String, Value> =
                old.offers.iter().map(|(k, h)| (k, h.to_json())).collect();
            out.events.push(ctx.event(
                PollEventKind::MemberDeleted,
                uid,
                &old.email,
                None,
                None,
                json!({ "offers": offers }),
            ));
        }
        out.changes.push((key.clone(), None));
    }
    Ok(out)
}

fn member_created(ctx: &DiffCtx<'_>, uid: &str, snap: &MemberSnap, events: &mut Vec<NewEvent>) {
    let granted: Vec<&String> = snap
        .offers
        .iter()
        .filter(|(_, h)| h.has_access())
        .map(|(id, _)| id)
        .collect();
    events.push(ctx.event(
        PollEventKind::MemberCreated,
        uid,
        &snap.email,
        None,
        None,
        json!({ "offers": granted }),
    ));
    // A new member is compared with an empty one, so their access (and any progress
    // they already made) is reported like any other change.
    let empty = MemberSnap {
        email: snap.email.clone(),
        ..MemberSnap::default()
    };
    member_changed(ctx, uid, &empty, snap, events);
}

fn member_changed(
    ctx: &DiffCtx<'_>,
    uid: &str,
    old: &MemberSnap,
    new: &MemberSnap,
    events: &mut Vec<NewEvent>,
) {
    let email = &new.email;
    let offer_ids: BTreeSet<&String> = old.offers.keys().chain(new.offers.keys()).collect();
    for offer in offer_ids {
        let before = old.offers.get(offer);
        let after = new.offers.get(offer);
        let had = before.is_some_and(HoldingSnap::has_access);
        let has = after.is_some_and(HoldingSnap::has_access);
        let kind = match (had, has) {
            (false, true) => PollEventKind::OfferGranted,
            (true, false) if after.is_some_and(|h| h.expired) => PollEventKind::OfferExpired,
            // Revoked, or removed while granting access. A holding that granted nothing
            // (already revoked or expired) ends no access when it goes: no event.
            (true, false) => PollEventKind::OfferRevoked,
            _ => continue,
        };
        let order_id = after
            .and_then(|h| h.order_id.as_deref())
            .or_else(|| before.and_then(|h| h.order_id.as_deref()));
        events.push(ctx.event(
            kind,
            uid,
            email,
            Some(offer),
            order_id,
            json!({
                "offer_id": offer,
                "removed": after.is_none(),
                "before": before.map(HoldingSnap::to_json),
                "after": after.map(HoldingSnap::to_json),
            }),
        ));
    }
    for (course, after) in &new.progress {
        if !ctx.report_courses.contains(course) {
            continue;
        }
        let before = old.progress.get(course).copied().unwrap_or_default();
        // The member's own completions, not a change of the course's known size.
        if after.completed == before.completed {
            continue;
        }
        let data = json!({
            "course_id": course,
            "before": before.to_json(),
            "after": after.to_json(),
        });
        events.push(ctx.event(
            PollEventKind::ProgressChanged,
            uid,
            email,
            Some(course),
            None,
            data.clone(),
        ));
        if after.percent >= 100 && before.percent < 100 {
            events.push(ctx.event(
                PollEventKind::CourseCompleted,
                uid,
                email,
                Some(course),
                None,
                data,
            ));
        }
    }
}

// ------------------------------------------------------------------- poller

/// Polls one connection. Cheap to create; holds no state between cycles besides the
/// store, so any number of restarts resume where the last applied cycle ended.
pub struct Poller {
    hub: Hub,
    config: PollerConfig,
}

impl Poller {
    pub fn new(hub: Hub, config: PollerConfig) -> Poller {
        Poller { hub, config }
    }

    pub fn config(&self) -> &PollerConfig {
        &self.config
    }

    /// One full cycle: read, diff, persist snapshot + events atomically. Returns a report.
    pub async fn run_cycle(&self) -> Result<CycleReport, PollError> {
        let result = self.cycle().await;
        if let Err(e) = &result {
            // For status pages; best effort, the error is returned either way.
            let value = json!({ "at": Utc::now().timestamp_millis(), "error": e.to_string() });
            let key = meta_key(self.config.connection(), "last_error");
            if let Err(store_err) = self.store().set_meta(&key, &value.to_string()).await {
                tracing::debug!(error = %store_err, "poller: could not record the failure");
            }
        }
        result
    }

    /// Cycles every `interval` until cancelled; errors are logged and the next cycle
    /// retries. A cycle longer than the interval is followed by the next one at once.
    pub async fn run(self, cancel: CancellationToken) {
        let mut ticker = tokio::time::interval(self.config.interval.max(MIN_INTERVAL));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let connection = self.config.connection().to_owned();
        tracing::info!(connection = %connection, persona = %self.config.persona, "poller started");
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = ticker.tick() => {}
            }
            // Cancelling mid-cycle drops the cycle; its transaction (if open) rolls back.
            let result = tokio::select! {
                _ = cancel.cancelled() => break,
                r = self.run_cycle() => r,
            };
            match result {
                Ok(r) if r.events > 0 || r.baseline => tracing::info!(
                    connection = %connection,
                    baseline = r.baseline,
                    members = r.members,
                    events = r.events,
                    api_calls = r.api_calls,
                    duration_ms = r.duration.as_millis() as u64,
                    "poll cycle done"
                ),
                Ok(r) => tracing::debug!(
                    connection = %connection,
                    members = r.members,
                    api_calls = r.api_calls,
                    duration_ms = r.duration.as_millis() as u64,
                    "poll cycle done, no changes"
                ),
                Err(e) => {
                    tracing::error!(connection = %connection, error = %e, "poll cycle failed")
                }
            }
        }
        tracing::info!(connection = %connection, "poller stopped");
    }

    fn store(&self) -> EventStore<'_> {
        self.hub.events_store()
    }

    fn store_err(&self, source: StoreError) -> PollError {
        PollError::Store {
            connection: self.config.connection().to_owned(),
            source,
        }
    }

    async fn meta(&self, name: &str) -> Result<Option<String>, PollError> {
        self.store()
            .get_meta(&meta_key(self.config.connection(), name))
            .await
            .map_err(|e| self.store_err(e))
    }

    fn check_config(&self) -> Result<(), PollError> {
        let c = &self.config;
        let problem = if c.connection().trim().is_empty() {
            Some("no connection: it is decided when the events subsystem starts".to_string())
        } else if c.persona.trim().is_empty() {
            Some("the persona name is empty".to_string())
        } else if !(c.rate_share.is_finite() && c.rate_share > 0.0 && c.rate_share <= 1.0) {
            Some(format!(
                "rate_share must be above 0 and at most 1, not {}",
                c.rate_share
            ))
        } else {
            None
        };
        match problem {
            Some(message) => Err(PollError::Config {
                connection: c.connection().to_owned(),
                message,
            }),
            None => Ok(()),
        }
    }

    /// One cycle: read the school, diff it against the snapshot, apply the difference.
    async fn cycle(&self) -> Result<CycleReport, PollError> {
        let started = Instant::now();
        let started_ms = Utc::now().timestamp_millis();
        self.check_config()?;
        let cfg = &self.config;
        let connection = cfg.connection();
        let (persona, conn) = self.acting_persona().await?;
        let mark = self.checkpoint(&conn.id).await?;
        let prev = self
            .store()
            .load_snapshot(connection)
            .await
            .map_err(|e| self.store_err(e))?;

        let reader = Reader {
            hub: &self.hub,
            who: Principal::Persona(persona),
            connection,
            persona: &cfg.persona,
            pacer: pacer(conn.rate_limit * cfg.rate_share).map(Arc::new),
            calls: Arc::new(AtomicU64::new(0)),
        };
        let mut members = reader.members(started_ms).await?;
        let courses = self
            .read_courses(&reader, &prev, &mut members, &mark.recorded_courses)
            .await?;

        // Only courses recorded before this cycle are reported; a course recorded now
        // (newly watched, or newly in an offer) is its own baseline.
        let report_courses: BTreeSet<String> = courses
            .known
            .intersection(&mark.recorded_courses)
            .cloned()
            .collect();
        let courses_baselined: Vec<String> = if mark.baseline {
            Vec::new()
        } else {
            courses
                .known
                .difference(&mark.recorded_courses)
                .cloned()
                .collect()
        };
        let ctx = DiffCtx {
            connection,
            started_ms,
            baseline: mark.baseline,
            report_courses: &report_courses,
        };
        let mut d = diff(&ctx, &prev, &members).map_err(|e| encode_err(connection, e))?;
        drop(prev);
        d.changes.extend(courses.changes);

        let mut by_kind: BTreeMap<String, usize> = BTreeMap::new();
        for e in &d.events {
            *by_kind.entry(e.kind.clone()).or_default() += 1;
        }
        let mut report = CycleReport {
            connection: connection.to_string(),
            started_at: started_ms,
            baseline: mark.baseline,
            members: members.len(),
            api_calls: reader.calls.load(Ordering::Relaxed),
            events: d.events.len(),
            duplicates: 0,
            by_kind,
            progress_reads: courses.progress_reads,
            courses_baselined,
            unknown_courses: courses.unknown,
            snapshot_changes: d.changes.len(),
            duration: started.elapsed(),
        };
        drop(members);
        let duplicates = self
            .apply(&mark, &conn.id, &courses.known, &d, &report)
            .await?;
        report.events -= duplicates;
        report.duplicates = duplicates;
        report.duration = started.elapsed();
        Ok(report)
    }

    /// The persona the cycle reads as and its connection, read afresh every cycle: a
    /// revoked persona stops the reads, a new scope or rate limit applies without a restart.
    async fn acting_persona(&self) -> Result<(Persona, Connection), PollError> {
        let cfg = &self.config;
        let connection = cfg.connection();
        let persona =
            self.hub
                .persona(&cfg.persona)
                .await
                .map_err(|source| PollError::Persona {
                    persona: cfg.persona.clone(),
                    connection: connection.to_string(),
                    source,
                })?;
        if persona.connection != connection {
            return Err(PollError::PersonaConnection {
                persona: cfg.persona.clone(),
                connection: connection.to_string(),
                actual: persona.connection.clone(),
            });
        }
        // The hub answers an absent connection as not found, anything else is the store's.
        let conn = self.hub.connection(connection).await.map_err(|e| match e {
            HubError::Store(e) => self.store_err(e),
            _ => PollError::NoConnection {
                connection: connection.to_string(),
            },
        })?;
        Ok((persona, conn))
    }

    /// Where the last applied cycle left off.
    async fn checkpoint(&self, connection_id: &str) -> Result<Checkpoint, PollError> {
        let baseline_at = self.meta("baseline_at").await?;
        let recorded_id = self.meta("connection_id").await?;
        let last_cycle = self.meta("last_cycle").await?;
        // A connection deleted and re-created under the same name may be another
        // school: its first reading is a baseline, not a flood of changes.
        let baseline = baseline_at.is_none() || recorded_id.as_deref() != Some(connection_id);
        let recorded_courses = if baseline {
            BTreeSet::new()
        } else {
            match self.meta("courses").await? {
                Some(text) => serde_json::from_str(&text).unwrap_or_default(),
                None => BTreeSet::new(),
            }
        };
        Ok(Checkpoint {
            baseline,
            recorded_courses,
            last_cycle,
        })
    }

    /// Reads the progress of the watched courses into `members` and says which snapshot
    /// rows of courses change.
    async fn read_courses(
        &self,
        reader: &Reader<'_>,
        prev: &HashMap<String, String>,
        members: &mut HashMap<String, MemberSnap>,
        recorded: &BTreeSet<String>,
    ) -> Result<CourseReading, PollError> {
        let watched: BTreeSet<String> = self
            .config
            .courses
            .iter()
            .map(|c| c.trim().to_string())
            .filter(|c| !c.is_empty())
            .collect();
        let mut reading = CourseReading::default();
        if !watched.is_empty() {
            let course_offers = reader.course_offers().await?;
            for course in watched {
                if course_offers.contains_key(&course) {
                    reading.known.insert(course);
                } else {
                    reading.unknown.push(course);
                }
            }
            if !reading.unknown.is_empty() {
                tracing::warn!(
                    connection = reader.connection,
                    courses = ?reading.unknown,
                    "poller: watched courses are in no offer of the school; their progress is not read"
                );
            }
            let outcome = read_progress(
                reader,
                prev,
                members,
                &reading.known,
                recorded,
                &course_offers,
            )
            .await?;
            reading.progress_reads = outcome.reads;
            reading.changes = outcome.changes;
        }
        // Courses no longer watched: their known posts go (their member progress is
        // dropped by the diff, since the reading no longer contains it).
        for key in prev.keys() {
            if let Some(course) = key.strip_prefix(COURSE_PREFIX)
                && !reading.known.contains(course)
            {
                reading.changes.push((key.clone(), None));
            }
        }
        Ok(reading)
    }

    /// Writes the snapshot changes, the events and the meta keys in one transaction.
    /// Answers how many events were already stored (duplicates).
    async fn apply(
        &self,
        mark: &Checkpoint,
        connection_id: &str,
        known_courses: &BTreeSet<String>,
        d: &Diff,
        report: &CycleReport,
    ) -> Result<usize, PollError> {
        let connection = self.config.connection();
        let mut meta = vec![
            (
                meta_key(connection, "courses"),
                serde_json::to_string(known_courses).map_err(|e| encode_err(connection, e))?,
            ),
            (
                meta_key(connection, "last_cycle"),
                serde_json::to_string(report).map_err(|e| encode_err(connection, e))?,
            ),
        ];
        if mark.baseline {
            meta.push((
                meta_key(connection, "baseline_at"),
                report.started_at.to_string(),
            ));
            meta.push((
                meta_key(connection, "connection_id"),
                connection_id.to_owned(),
            ));
        }
        // Two pollers on one connection would diff against the same snapshot and report
        // every change twice. The service runs one per connection; this catches a second
        // process (not atomically, but a cycle takes seconds and the window is one query).
        if self.meta("last_cycle").await? != mark.last_cycle {
            return Err(PollError::Concurrent {
                connection: connection.to_string(),
            });
        }
        let inserted = self
            .store()
            .apply_poll(connection, &d.changes, &d.events, &meta)
            .await
            .map_err(|e| self.store_err(e))?;
        Ok(inserted
            .iter()
            .filter(|i| matches!(i, Inserted::Duplicate(_)))
            .count())
    }
}

/// Where the last applied cycle left off.
struct Checkpoint {
    /// Record only, report nothing: the first cycle, or a connection re-created under the
    /// same name (perhaps another school).
    baseline: bool,
    /// Courses whose progress the snapshot holds.
    recorded_courses: BTreeSet<String>,
    /// The last cycle's report as stored; a poller that applied since changed it.
    last_cycle: Option<String>,
}

/// What a cycle read of the watched courses.
#[derive(Default)]
struct CourseReading {
    /// Watched and in an offer of the school: their progress was read.
    known: BTreeSet<String>,
    /// Watched but in no offer of the school.
    unknown: Vec<String>,
    progress_reads: usize,
    /// `course:<id>` snapshot rows that change (posts learnt, courses no longer watched).
    changes: Vec<(String, Option<String>)>,
}

/// Encoding our own maps of strings cannot fail in practice; if it ever did, the cycle
/// stops rather than store something unreadable.
fn encode_err(connection: &str, e: serde_json::Error) -> PollError {
    PollError::Store {
        connection: connection.to_string(),
        source: StoreError::Invalid(format!("a snapshot row could not be encoded: {e}")),
    }
}

/// A pacer at `rps` requests per second, evenly spaced; `None` (no pacing of its own)
/// for an unlimited connection.
fn pacer(rps: f64) -> Option<DefaultDirectRateLimiter> {
    if !(rps.is_finite() && rps > 0.0) {
        return None;
    }
    let quota = Quota::with_period(Duration::from_secs_f64(1.0 / rps))?;
    Some(RateLimiter::direct(quota.allow_burst(NonZeroU32::MIN)))
}

struct ProgressOutcome {
    reads: usize,
    /// `course:<id>` rows whose known posts grew.
    changes: Vec<(String, Option<String>)>,
}

/// Reads the progress of every member with access to a watched course, fills the
/// members' `progress`, and carries the recorded progress of members without access
/// forward unchanged (it cannot move without access, and not reading it saves calls).
async fn read_progress(
    reader: &Reader<'_>,
    prev: &HashMap<String, String>,
    members: &mut HashMap<String, MemberSnap>,
    courses: &BTreeSet<String>,
    recorded: &BTreeSet<String>,
    course_offers: &HashMap<String, BTreeSet<String>>,
) -> Result<ProgressOutcome, PollError> {
    let mut jobs: Vec<(String, String, String)> = Vec::new();
    let mut carry: Vec<(String, String)> = Vec::new();
    for (uid, m) in members.iter() {
        for course in courses {
            let Some(offers) = course_offers.get(course) else {
                continue;
            };
            let access = m
                .offers
                .iter()
                .any(|(id, h)| h.has_access() && offers.contains(id));
            if access {
                jobs.push((uid.clone(), m.email.clone(), course.clone()));
            } else {
                carry.push((uid.clone(), course.clone()));
            }
        }
    }

    let mut known: BTreeMap<String, CourseSnap> = courses
        .iter()
        .map(|c| {
            let snap = prev
                .get(&format!("{COURSE_PREFIX}{c}"))
                .and_then(|t| serde_json::from_str(t).ok())
                .unwrap_or_default();
            (c.clone(), snap)
        })
        .collect();
    let before = known.clone();
    let reads = jobs.len();
    let mut counts: Vec<(String, String, u32, u32)> = Vec::with_capacity(reads);
    let mut answers = futures::stream::iter(jobs)
        .map(|(uid, email, course)| async move {
            let p = reader.progress(&email, &course).await;
            (uid, course, p)
        })
        .buffer_unordered(PROGRESS_CONCURRENCY);
    while let Some((uid, course, answer)) = answers.next().await {
        let Some(p) = answer? else {
            // Nothing to show right now (deleted meanwhile): keep what was recorded, so
            // the next reading is not compared with zero.
            carry.push((uid, course));
            continue;
        };
        if let Some(k) = known.get_mut(&course) {
            k.posts.extend(p.completed.iter().cloned());
            k.posts.extend(p.started.iter().cloned());
        }
        let completed = u32::try_from(p.completed.len()).unwrap_or(u32::MAX);
        let started = u32::try_from(p.started.len()).unwrap_or(u32::MAX);
        counts.push((uid, course, completed, started));
    }
    drop(answers);
    // Percentages only now, against every post seen this cycle.
    for (uid, course, completed, started) in counts {
        let total = known.get(&course).map_or(0, |k| k.posts.len());
        if let Some(m) = members.get_mut(&uid) {
            m.progress.insert(
                course,
                ProgressSnap {
                    percent: percent(completed as usize, total),
                    completed,
                    started,
                },
            );
        }
    }
    // Carry recorded progress forward from the stored rows (parsed only for the members
    // that need it). A course recorded only now has nothing to carry.
    let mut parsed: HashMap<String, Option<MemberSnap>> = HashMap::new();
    for (uid, course) in carry {
        if !recorded.contains(&course) {
            continue;
        }
        let old = parsed.entry(uid.clone()).or_insert_with(|| {
            prev.get(&format!("{USER_PREFIX}{uid}"))
                .filter(|t| t.contains("\"progress\""))
                .and_then(|t| serde_json::from_str(t).ok())
        });
        if let Some(p) = old.as_ref().and_then(|o| o.progress.get(&course))
            && let Some(m) = members.get_mut(&uid)
        {
            m.progress.insert(course, *p);
        }
    }
    drop(parsed);
    let mut changes = Vec::new();
    for (course, snap) in known {
        if before.get(&course) != Some(&snap)
            || !prev.contains_key(&format!("{COURSE_PREFIX}{course}"))
        {
            let text =
                serde_json::to_string(&snap).map_err(|e| encode_err(reader.connection, e))?;
            changes.push((format!("{COURSE_PREFIX}{course}"), Some(text)));
        }
    }
    Ok(ProgressOutcome { reads, changes })
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_767_225_600_000; // 2026-01-01

    fn holding(active: bool, expires_at: Option<i64>, now: i64) -> HoldingSnap {
        HoldingSnap {
            active,
            expires_at,
            expired: expires_at.is_some_and(|e| e <= now),
            order_id: None,
        }
    }

    fn member(email: &str, offers: &[(&str, HoldingSnap)]) -> MemberSnap {
        MemberSnap {
            email: email.into(),
            offers: offers
                .iter()
                .map(|(k, h)| (k.to_string(), h.clone()))
                .collect(),
            progress: BTreeMap::new(),
        }
    }

    fn stored(members: &[(&str, &MemberSnap)]) -> HashMap<String, String> {
        members
            .iter()
            .map(|(uid, m)| {
                (
                    format!("{USER_PREFIX}{uid}"),
                    serde_json::to_string(m).expect("json"),
                )
            })
            .collect()
    }

    fn run(
        prev: &HashMap<String, String>,
        cur: &[(&str, &MemberSnap)],
        baseline: bool,
        courses: &[&str],
    ) -> Diff {
        let report: BTreeSet<String> = courses.iter().map(|c| c.to_string()).collect();
        let ctx = DiffCtx {
            connection: "school",
            started_ms: T0,
            baseline,
            report_courses: &report,
        };
        let cur: HashMap<String, MemberSnap> = cur
            .iter()
            .map(|(u, m)| (u.to_string(), (*m).clone()))
            .collect();
        diff(&ctx, prev, &cur).expect("diff")
    }

    fn kinds(d: &Diff) -> Vec<(String, Option<String>)> {
        d.events
            .iter()
            .map(|e| (e.kind.clone(), e.product_id.clone()))
            .collect()
    }

    fn k(kind: &str, target: Option<&str>) -> (String, Option<String>) {
        (kind.to_string(), target.map(str::to_string))
    }

    #[test]
    fn baseline_records_everything_and_emits_nothing() {
        let a = member("a@x.de", &[("o1", holding(true, None, T0))]);
        let d = run(&HashMap::new(), &[("u1", &a)], true, &[]);
        assert!(d.events.is_empty());
        assert_eq!(d.changes.len(), 1);
        assert_eq!(d.changes[0].0, "user:u1");
    }

    #[test]
    fn unchanged_members_cost_nothing() {
        let a = member("a@x.de", &[("o1", holding(true, None, T0))]);
        let prev = stored(&[("u1", &a)]);
        let d = run(&prev, &[("u1", &a)], false, &[]);
        assert!(d.events.is_empty() && d.changes.is_empty());
    }

    #[test]
    fn created_and_deleted_members() {
        let a = member(
            "a@x.de",
            &[
                ("o1", holding(true, None, T0)),
                ("o2", holding(false, None, T0)),
            ],
        );
        let b = member("b@x.de", &[("o1", holding(true, None, T0))]);
        let prev = stored(&[("u2", &b)]);
        let d = run(&prev, &[("u1", &a)], false, &[]);
        assert_eq!(
            kinds(&d),
            [
                k("member_created", None),
                k("offer_granted", Some("o1")),
                k("member_deleted", None),
            ]
        );
        let deleted = &d.events[2];
        assert_eq!(deleted.email.as_deref(), Some("b@x.de"));
        assert_eq!(deleted.data["uid"], "u2");
        assert!(d.changes.contains(&("user:u2".to_string(), None)));
        assert_eq!(
            d.events[0].dedupe_key,
            format!("poll:school:u1:member_created:-:{T0}")
        );
        assert!(d.events.iter().all(|e| e.status == EventStatus::Done
            && e.source == "poll:school"
            && e.provider == "poller"
            && e.kind == e.name));
    }

    #[test]
    fn grants_revocations_and_removals() {
        let before = member(
            "a@x.de",
            &[
                ("keep", holding(true, None, T0)),
                ("revoke", holding(true, None, T0)),
                ("restore", holding(false, None, T0)),
                ("remove", holding(true, None, T0)),
                ("remove_inactive", holding(false, None, T0)),
            ],
        );
        let after = member(
            "a@x.de",
            &[
                ("keep", holding(true, None, T0)),
                ("revoke", holding(false, None, T0)),
                ("restore", holding(true, None, T0)),
                ("new", holding(true, None, T0)),
                ("new_inactive", holding(false, None, T0)),
            ],
        );
        let d = run(&stored(&[("u1", &before)]), &[("u1", &after)], false, &[]);
        assert_eq!(
            kinds(&d),
            [
                k("offer_granted", Some("new")),
                k("offer_revoked", Some("remove")),
                k("offer_granted", Some("restore")),
                k("offer_revoked", Some("revoke")),
            ]
        );
        assert_eq!(d.events[1].data["removed"], true);
    }

    #[test]
    fn expiry_is_reported_once_and_not_as_revocation() {
        let later = T0 + 60_000;
        let before = member("a@x.de", &[("o1", holding(true, Some(later), T0))]);
        // The API reports an expired holding as inactive…
        let expired = member("a@x.de", &[("o1", holding(false, Some(later), later))]);
        let d = run(&stored(&[("u1", &before)]), &[("u1", &expired)], false, &[]);
        assert_eq!(kinds(&d), [k("offer_expired", Some("o1"))]);
        // …and once recorded, nothing more.
        let d2 = run(
            &stored(&[("u1", &expired)]),
            &[("u1", &expired)],
            false,
            &[],
        );
        assert!(d2.events.is_empty());
        // An API reporting the stored flag (still true) gives the same event.
        let flag = member("a@x.de", &[("o1", holding(true, Some(later), later))]);
        let d3 = run(&stored(&[("u1", &before)]), &[("u1", &flag)], false, &[]);
        assert_eq!(kinds(&d3), [k("offer_expired", Some("o1"))]);
        // Extended again: access is back.
        let extended = member("a@x.de", &[("o1", holding(true, Some(later * 2), later))]);
        let d4 = run(
            &stored(&[("u1", &expired)]),
            &[("u1", &extended)],
            false,
            &[],
        );
        assert_eq!(kinds(&d4), [k("offer_granted", Some("o1"))]);
        // A revoked holding whose date passes ends no access.
        let revoked = member("a@x.de", &[("o1", holding(false, Some(later), T0))]);
        let d5 = run(
            &stored(&[("u1", &revoked)]),
            &[("u1", &expired)],
            false,
            &[],
        );
        assert!(d5.events.is_empty());
    }

    #[test]
    fn progress_changes_completion_and_new_courses() {
        let with = |c1: Option<ProgressSnap>, c2: Option<ProgressSnap>| {
            let mut m = member("a@x.de", &[("o1", holding(true, None, T0))]);
            if let Some(p) = c1 {
                m.progress.insert("c1".into(), p);
            }
            if let Some(p) = c2 {
                m.progress.insert("c2".into(), p);
            }
            m
        };
        let p = |percent, completed, started| ProgressSnap {
            percent,
            completed,
            started,
        };
        let before = with(Some(p(30, 3, 1)), None);
        // Only a started post more: no event (the percentage did not move).
        let started = with(Some(p(30, 3, 2)), None);
        let d = run(
            &stored(&[("u1", &before)]),
            &[("u1", &started)],
            false,
            &["c1"],
        );
        assert!(d.events.is_empty());
        assert_eq!(d.changes.len(), 1);
        // More completed: progress_changed.
        let more = with(Some(p(40, 4, 1)), None);
        let d = run(
            &stored(&[("u1", &before)]),
            &[("u1", &more)],
            false,
            &["c1"],
        );
        assert_eq!(kinds(&d), [k("progress_changed", Some("c1"))]);
        assert_eq!(d.events[0].data["before"]["percent"], 30);
        assert_eq!(d.events[0].data["after"]["percent"], 40);
        // All: progress_changed and course_completed.
        let done = with(Some(p(100, 10, 0)), None);
        let d = run(
            &stored(&[("u1", &before)]),
            &[("u1", &done)],
            false,
            &["c1"],
        );
        assert_eq!(
            kinds(&d),
            [
                k("progress_changed", Some("c1")),
                k("course_completed", Some("c1"))
            ]
        );
        // The course grew (percentage fell) without the member doing anything: silent.
        let grown = with(Some(p(25, 3, 1)), None);
        let d = run(
            &stored(&[("u1", &before)]),
            &[("u1", &grown)],
            false,
            &["c1"],
        );
        assert!(d.events.is_empty());
        // A course not yet recorded is baselined silently.
        let c2 = with(Some(p(30, 3, 1)), Some(p(50, 5, 0)));
        let d = run(&stored(&[("u1", &before)]), &[("u1", &c2)], false, &["c1"]);
        assert!(d.events.is_empty());
        assert_eq!(d.changes.len(), 1);
    }

    #[test]
    fn unreadable_rows_are_recorded_afresh() {
        let a = member("a@x.de", &[("o1", holding(true, None, T0))]);
        let mut prev = HashMap::new();
        prev.insert("user:u1".to_string(), "{not json".to_string());
        let d = run(&prev, &[("u1", &a)], false, &[]);
        assert!(d.events.is_empty());
        assert_eq!(d.changes.len(), 1);
    }

    #[test]
    fn snapshot_rows_are_compact_and_canonical() {
        let mut a = member(
            "a@x.de",
            &[
                ("o2", holding(true, Some(T0 + 1), T0)),
                ("o1", holding(true, None, T0)),
            ],
        );
        a.offers.get_mut("o1").expect("o1").order_id = Some("DS24-1".into());
        assert_eq!(
            serde_json::to_string(&a).expect("json"),
            r#"{"email":"a@x.de","offers":{"o1":{"active":true,"orderId":"DS24-1"},"o2":{"active":true,"expiresAt":1767225600001}}}"#
        );
    }

    #[test]
    fn expiry_is_judged_with_some_tolerance_for_the_school_clock() {
        let user = |active: bool, expires_in_ms: i64| -> User {
            serde_json::from_value(json!({
                "uid": "u1",
                "email": "a@x.de",
                "offers": [{"offerId": "o1", "active": active, "expiresAt": T0 + expires_in_ms}],
            }))
            .expect("user")
        };
        let expired = |u: &User| member_snap(u, T0).offers["o1"].expired;
        assert!(expired(&user(false, -1)));
        assert!(expired(&user(true, 0)), "an API reporting the stored flag");
        assert!(
            expired(&user(false, 60_000)),
            "the school's clock is a minute ahead"
        );
        assert!(
            !expired(&user(true, 60_000)),
            "still granted: not yet expired"
        );
        assert!(!expired(&user(false, 3_600_000)), "revoked, ends later");
    }

    #[test]
    fn percent_is_floored_and_bounded() {
        assert_eq!(percent(0, 0), 0);
        assert_eq!(percent(2, 3), 66);
        assert_eq!(percent(3, 3), 100);
        assert_eq!(percent(4, 3), 100);
    }

    #[test]
    fn config_defaults() {
        let c = PollerConfig::default();
        assert_eq!(c.persona, "poller");
        assert_eq!(c.interval, Duration::from_secs(300));
        assert_eq!(c.rate_share, 0.5);
        assert!(c.courses.is_empty());
        assert!(pacer(0.0).is_none());
        assert!(pacer(2.0).is_some());
    }
}
