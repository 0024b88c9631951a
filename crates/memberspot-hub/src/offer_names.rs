//! Offer names next to ids, and names accepted wherever an offer id is. One index of a
//! connection's offers, read with one `list_offers` call through the gateway (so the read
//! is scoped, limited and audited like any call), kept by the command or request that
//! made it, and read once more when an id or name it does not know is looked up (an
//! offer created since). The CLI's `--offer` flags and member tables, the rules'
//! `offer =`, `events show` and the audit views of the CLI and the console all use it.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use memberspot_api::Client;
use memberspot_api::wire::Offer;
use memberspot_store::AuditRecord;
use memberspot_tools::ToolError;
use memberspot_tools::tools::{ListOffersTool, NoInput};
use serde_json::Value;
use tokio::sync::Mutex;

use crate::{CallContext, Hub, HubError, Principal};

/// A school's offers as one `list_offers` answer gave them.
#[derive(Debug, Clone, Default)]
pub struct OfferIndex {
    offers: Vec<Offer>,
}

impl OfferIndex {
    pub fn new(offers: Vec<Offer>) -> OfferIndex {
        OfferIndex { offers }
    }

    /// In the school's order.
    pub fn offers(&self) -> &[Offer] {
        &self.offers
    }

    pub fn contains(&self, id: &str) -> bool {
        self.offers.iter().any(|o| o.id == id)
    }

    /// The id `given` stands for: an offer's id; else the one offer with exactly this name;
    /// else the one whose name it is regardless of case (surrounding spaces aside on both
    /// sides). Several offers under the name, or none, is an error naming the candidates.
    pub fn resolve(&self, given: &str) -> Result<String, OfferNameError> {
        let given = given.trim();
        if self.contains(given) {
            return Ok(given.to_owned());
        }
        if given.is_empty() {
            // Nothing given names no offer, not even one without a name.
            return Err(OfferNameError::Unknown {
                given: given.to_owned(),
                candidates: pairs(self.offers.iter()),
            });
        }
        let exact: Vec<&Offer> = self
            .offers
            .iter()
            .filter(|o| o.name.trim() == given)
            .collect();
        let named = match exact.as_slice() {
            [] => {
                let lower = given.to_lowercase();
                self.offers
                    .iter()
                    .filter(|o| o.name.trim().to_lowercase() == lower)
                    .collect()
            }
            _ => exact,
        };
        match named.as_slice() {
            [one] => Ok(one.id.clone()),
            [] => Err(OfferNameError::Unknown {
                given: given.to_owned(),
                candidates: pairs(self.offers.iter()),
            }),
            several => Err(OfferNameError::Ambiguous {
                given: given.to_owned(),
                candidates: pairs(several.iter().copied()),
            }),
        }
    }

    /// The name of offer `id`, when the school has it under a name.
    pub fn name_of(&self, id: &str) -> Option<&str> {
        self.offers
            .iter()
            .find(|o| o.id == id)
            .map(|o| o.name.as_str())
            .filter(|n| !n.trim().is_empty())
    }

    /// `Name (id)`, or the id alone when the offer is unknown or has no name.
    pub fn label(&self, id: &str) -> String {
        label(id, self.name_of(id))
    }

    /// The offers that unlock course `course_id`.
    pub fn granting<'a>(&'a self, course_id: &'a str) -> impl Iterator<Item = &'a Offer> + 'a {
        self.offers
            .iter()
            .filter(move |o| o.course_ids.iter().any(|c| c == course_id))
    }
}

/// How every view shows an offer: `Name (id)`, or the id alone without a name.
pub fn label(id: &str, name: Option<&str>) -> String {
    match name.filter(|n| !n.trim().is_empty()) {
        Some(name) => format!("{name} ({id})"),
        None => id.to_owned(),
    }
}

fn pairs<'a>(offers: impl Iterator<Item = &'a Offer>) -> Vec<(String, String)> {
    offers.map(|o| (o.id.clone(), o.name.clone())).collect()
}

/// Why a given offer id or name stands for no single offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OfferNameError {
    /// No offer has this id or name; the candidates are every offer of the school.
    Unknown {
        given: String,
        candidates: Vec<(String, String)>,
    },
    /// Several offers have this name; the candidates are they.
    Ambiguous {
        given: String,
        candidates: Vec<(String, String)>,
    },
}

impl OfferNameError {
    pub fn given(&self) -> &str {
        match self {
            OfferNameError::Unknown { given, .. } | OfferNameError::Ambiguous { given, .. } => {
                given
            }
        }
    }

    /// `(id, name)` of the offers the caller may have meant.
    pub fn candidates(&self) -> &[(String, String)] {
        match self {
            OfferNameError::Unknown { candidates, .. }
            | OfferNameError::Ambiguous { candidates, .. } => candidates,
        }
    }

    /// The candidates as `id (name), …`, or `none`.
    pub fn listing(&self) -> String {
        let c = self.candidates();
        if c.is_empty() {
            return "none".to_owned();
        }
        c.iter()
            .map(|(id, name)| format!("{id} ({name})"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// As an invalid argument `field` of a call (exit code 2 in the CLI, 400 over REST).
    pub fn for_field(self, field: &str) -> HubError {
        HubError::Tool(ToolError::invalid(field, self.to_string()))
    }
}

impl fmt::Display for OfferNameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OfferNameError::Unknown { given, .. } => write!(
                f,
                "no offer has the id or name `{given}`; the school's offers: {}",
                self.listing()
            ),
            OfferNameError::Ambiguous { given, candidates } => write!(
                f,
                "`{given}` is the name of {} offers: {}; give the id",
                candidates.len(),
                self.listing()
            ),
        }
    }
}

impl std::error::Error for OfferNameError {}

/// One connection's offers for one command or request: read on first use, read once more
/// at most (when something unknown is looked up), never once per row.
pub struct OfferNames {
    hub: Hub,
    who: Principal,
    ctx: CallContext,
    client: Option<Client>,
    cache: Mutex<Cache>,
    /// For a view: the connection whose recent read it may reuse and leaves for the next.
    view_of: Option<String>,
}

/// How long views reuse a connection's offers read by an earlier view. Each read is an
/// audited call under the school's rate limit (4 a second): read on every view, a console
/// page clicked through waited for the limit, and the log filled with reads.
const VIEW_REUSE: Duration = Duration::from_secs(60);

/// The offers each connection's views read last, and when (kept by the hub).
#[derive(Default)]
pub(crate) struct RecentOffers(std::sync::Mutex<HashMap<String, (Instant, Arc<OfferIndex>)>>);

impl RecentOffers {
    fn get(&self, connection: &str) -> Option<Arc<OfferIndex>> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.get(connection)
            .filter(|(at, _)| at.elapsed() < VIEW_REUSE)
            .map(|(_, index)| index.clone())
    }

    fn put(&self, connection: &str, index: Arc<OfferIndex>) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(connection.to_owned(), (Instant::now(), index));
    }
}

#[derive(Default)]
struct Cache {
    index: Option<Arc<OfferIndex>>,
    /// The one re-read has been spent.
    refreshed: bool,
    /// Why the last read failed: not tried again by this index.
    failed: Option<String>,
}

impl OfferNames {
    /// The offers of `who`'s connection, read as `who` with `ctx` (its surface, reason
    /// and end user go into the read's audit record).
    pub fn new(hub: &Hub, who: Principal, ctx: CallContext) -> OfferNames {
        OfferNames {
            hub: hub.clone(),
            who,
            ctx,
            client: None,
            cache: Mutex::new(Cache::default()),
            view_of: None,
        }
    }

    /// For showing names only (never for resolving what a call acts on): reuses what a
    /// view of `connection` read in the last minute, and leaves its own read for the next.
    /// Within that minute an offer unknown to the reused read shows its id alone.
    fn for_views(mut self, connection: &str) -> OfferNames {
        self.view_of = Some(connection.to_owned());
        self
    }

    /// Reads on `client` instead of the principal's stored connection (as
    /// [`Hub::call_on`]).
    pub fn on_client(mut self, client: Option<Client>) -> OfferNames {
        self.client = client;
        self
    }

    /// The index, read on first use.
    pub async fn index(&self) -> Result<Arc<OfferIndex>, HubError> {
        let mut cache = self.cache.lock().await;
        self.loaded(&mut cache).await.map(|(index, _)| index)
    }

    /// The id `given` (an id or a name) stands for, or why it stands for none (the
    /// outer error: the offers could not be read).
    pub async fn find(&self, given: &str) -> Result<Result<String, OfferNameError>, HubError> {
        let found = self
            .lookup(|index| match index.resolve(given) {
                Err(OfferNameError::Unknown { .. }) => None,
                known => Some(known),
            })
            .await?;
        Ok(match found {
            (Some(known), _) => known,
            (None, index) => index.resolve(given),
        })
    }

    /// As [`OfferNames::find`], an unknown or ambiguous offer being an invalid argument
    /// `field`.
    pub async fn resolve(&self, field: &str, given: &str) -> Result<String, HubError> {
        self.find(given).await?.map_err(|e| e.for_field(field))
    }

    /// The name of offer `id`; `None` when the school has none by that id or cannot be
    /// read (a view shows the id alone then: it must not fail for want of a name).
    pub async fn name_of(&self, id: &str) -> Option<String> {
        match self
            .lookup(|index| index.name_of(id).map(str::to_owned))
            .await
        {
            Ok((name, _)) => name,
            Err(e) => {
                tracing::debug!(error = %e, "offer names unavailable; ids shown");
                None
            }
        }
    }

    /// `Name (id)`, or the id alone (see [`OfferNames::name_of`]).
    pub async fn label(&self, id: &str) -> String {
        label(id, self.name_of(id).await.as_deref())
    }

    /// `found` on the index; when it finds nothing, on a fresh read once per index (not
    /// when the index was only just read).
    async fn lookup<T>(
        &self,
        found: impl Fn(&OfferIndex) -> Option<T>,
    ) -> Result<(Option<T>, Arc<OfferIndex>), HubError> {
        let mut cache = self.cache.lock().await;
        let (index, fresh) = self.loaded(&mut cache).await?;
        if let Some(t) = found(&index) {
            return Ok((Some(t), index));
        }
        if fresh || cache.refreshed || cache.failed.is_some() {
            return Ok((None, index));
        }
        cache.refreshed = true;
        match self.read().await {
            Ok(new) => {
                let new = Arc::new(new);
                cache.index = Some(new.clone());
                self.remember(&new);
                Ok((found(&new), new))
            }
            Err(e) => {
                tracing::debug!(error = %e, "offers not read again; the earlier read is used");
                cache.failed = Some(e.to_string());
                Ok((None, index))
            }
        }
    }

    /// The cached index, or a first read (`true`: read just now).
    async fn loaded(&self, cache: &mut Cache) -> Result<(Arc<OfferIndex>, bool), HubError> {
        if let Some(index) = &cache.index {
            return Ok((index.clone(), false));
        }
        if let Some(why) = &cache.failed {
            return Err(HubError::Unavailable(why.clone()));
        }
        if let Some(recent) = self
            .view_of
            .as_deref()
            .and_then(|c| self.hub.recent_offers().get(c))
        {
            // Read by an earlier view just now: its one re-read is spent too.
            cache.index = Some(recent.clone());
            cache.refreshed = true;
            return Ok((recent, false));
        }
        match self.read().await {
            Ok(index) => {
                let index = Arc::new(index);
                cache.index = Some(index.clone());
                self.remember(&index);
                Ok((index, true))
            }
            Err(e) => {
                cache.failed = Some(e.to_string());
                Err(e)
            }
        }
    }

    fn remember(&self, index: &Arc<OfferIndex>) {
        if let Some(connection) = &self.view_of {
            self.hub.recent_offers().put(connection, index.clone());
        }
    }

    async fn read(&self) -> Result<OfferIndex, HubError> {
        let who = self.hub.current(&self.who).await?;
        let out = self
            .hub
            .run_on::<ListOffersTool>(&who, &self.ctx, NoInput {}, self.client.clone())
            .await?;
        Ok(OfferIndex::new(out.offers))
    }
}

/// The offer ids a call's arguments name: `offer_id` (the tools) and `offer_ids` (an
/// offer restriction given to a persona).
pub fn offer_ids_in(arguments: &Value) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    let one = arguments.get("offer_id").and_then(Value::as_str);
    let many = arguments
        .get("offer_ids")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str);
    for id in one.into_iter().chain(many) {
        if !ids.iter().any(|i| i == id) {
            ids.push(id.to_owned());
        }
    }
    ids
}

/// The offer names of every connection a view spans (the audit log holds the calls of
/// every school): one [`OfferNames`] per connection, as its operator, made on first use,
/// reusing what another view read in the last minute (see `VIEW_REUSE`).
pub struct OfferNamesByConnection {
    hub: Hub,
    ctx: CallContext,
    /// `None`: the hub has no such connection (any more); its ids are shown alone.
    schools: Mutex<HashMap<String, Option<Arc<OfferNames>>>>,
}

impl OfferNamesByConnection {
    pub fn new(hub: &Hub, ctx: CallContext) -> OfferNamesByConnection {
        OfferNamesByConnection {
            hub: hub.clone(),
            ctx,
            schools: Mutex::new(HashMap::new()),
        }
    }

    /// The offer names of `connection`, `None` when the hub has no such connection.
    pub async fn of(&self, connection: &str) -> Option<Arc<OfferNames>> {
        let mut schools = self.schools.lock().await;
        if let Some(known) = schools.get(connection) {
            return known.clone();
        }
        // A removed school is not asked (the call would only fail and be recorded).
        let names = match self.hub.client_for(connection).await {
            Ok(_) => Some(Arc::new(
                OfferNames::new(
                    &self.hub,
                    Principal::Operator {
                        connection: connection.to_owned(),
                    },
                    self.ctx.clone(),
                )
                .for_views(connection),
            )),
            Err(e) => {
                tracing::debug!(connection, error = %e, "no offer names for this connection");
                None
            }
        };
        schools.insert(connection.to_owned(), names.clone());
        names
    }

    /// Id → name of the offers `record`'s arguments name, those the school knows; empty
    /// when it names none (then nothing is read).
    pub async fn in_record(&self, record: &AuditRecord) -> BTreeMap<String, String> {
        let ids = offer_ids_in(&record.arguments);
        let mut named = BTreeMap::new();
        let Some(connection) = record.connection.as_deref().filter(|_| !ids.is_empty()) else {
            return named;
        };
        let Some(names) = self.of(connection).await else {
            return named;
        };
        for id in ids {
            if let Some(name) = names.name_of(&id).await {
                named.insert(id, name);
            }
        }
        named
    }

    /// [`OfferNamesByConnection::in_record`] for each record, in order.
    pub async fn in_records(&self, records: &[AuditRecord]) -> Vec<BTreeMap<String, String>> {
        let mut all = Vec::with_capacity(records.len());
        for r in records {
            all.push(self.in_record(r).await);
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index() -> OfferIndex {
        let offer = |id: &str, name: &str, courses: &[&str]| -> Offer {
            serde_json::from_value(
                serde_json::json!({"id": id, "name": name, "courseIds": courses}),
            )
            .expect("an offer")
        };
        OfferIndex::new(vec![
            offer("o1", "Online-Kurs Basis", &["c1"]),
            offer("o2", "Premium", &["c1", "c2"]),
            offer("o3", "premium ", &[]),
            offer("o4", "Übung", &[]),
            offer("o5", "", &[]),
        ])
    }

    #[test]
    fn an_id_passes_through_and_a_name_gives_its_id() {
        let o = index();
        assert_eq!(o.resolve("o2"), Ok("o2".into()));
        assert_eq!(o.resolve(" o5 "), Ok("o5".into()));
        assert_eq!(o.resolve("Online-Kurs Basis"), Ok("o1".into()));
        // An exact name wins over one that differs only in case.
        assert_eq!(o.resolve("Premium"), Ok("o2".into()));
        assert_eq!(o.resolve("premium"), Ok("o3".into()));
        // Case aside, also beyond ASCII.
        assert_eq!(o.resolve(" online-kurs basis "), Ok("o1".into()));
        assert_eq!(o.resolve("ÜBUNG"), Ok("o4".into()));
    }

    #[test]
    fn an_unknown_or_ambiguous_name_lists_the_candidates() {
        let o = index();
        let unknown = o.resolve("Basis").expect_err("unknown");
        assert_eq!(unknown.given(), "Basis");
        assert_eq!(unknown.candidates().len(), 5, "every offer");
        let text = unknown.to_string();
        assert!(
            text.contains("`Basis`") && text.contains("o1 (Online-Kurs Basis), o2 (Premium)"),
            "{text}"
        );
        let ambiguous = o.resolve("PREMIUM").expect_err("ambiguous");
        assert!(matches!(ambiguous, OfferNameError::Ambiguous { .. }));
        let text = ambiguous.to_string();
        assert!(
            text.contains("2 offers")
                && text.contains("o2 (Premium), o3 (premium )")
                && text.ends_with("give the id"),
            "{text}"
        );
        let as_argument = o.resolve("").expect_err("empty").for_field("--offer");
        assert!(
            as_argument.to_string().contains("--offer")
                && as_argument.code() == "invalid_arguments",
            "{as_argument} {}",
            as_argument.code()
        );
        assert_eq!(
            OfferIndex::default()
                .resolve("x")
                .expect_err("none")
                .listing(),
            "none"
        );
    }

    #[test]
    fn labels_and_course_owners() {
        let o = index();
        assert_eq!(o.label("o1"), "Online-Kurs Basis (o1)");
        assert_eq!(o.label("o5"), "o5", "no name: the id alone");
        assert_eq!(o.label("o9"), "o9", "unknown: the id alone");
        let owners: Vec<&str> = o.granting("c1").map(|x| x.id.as_str()).collect();
        assert_eq!(owners, ["o1", "o2"]);
        assert_eq!(o.granting("c9").count(), 0);
    }

    #[test]
    fn offer_ids_are_found_in_arguments() {
        use serde_json::json;
        assert_eq!(
            offer_ids_in(&json!({"email": "a@b.c", "offer_id": "o1"})),
            ["o1"]
        );
        assert_eq!(
            offer_ids_in(&json!({"offer_ids": ["o2", "o3", "o2"], "offer_id": "o3"})),
            ["o3", "o2"]
        );
        assert!(offer_ids_in(&json!({"email": "a@b.c"})).is_empty());
        assert!(offer_ids_in(&json!("not an object")).is_empty());
    }
}
