//! The hub at a glance (`memberspot status`): version, store and schema, the master key,
//! the event queue, the last daily summary, the poller and the audit head — read from the
//! store without a running hub, so it also works when `serve` does not start.

use memberspot_store::{EventStatus, SchemaStatus, Store};
use serde::Serialize;

use crate::HubError;
use crate::bootstrap::HubSettings;
use crate::secrets::{CHECK_META_KEY, MasterKey};

/// Everything `memberspot status` shows.
#[derive(Debug, Clone, Serialize)]
pub struct HubStatus {
    /// This binary's version.
    pub version: String,
    pub store: StoreStatus,
    /// `matches`, `does not match`, `not set up yet`, or why it cannot be read.
    pub master_key: String,
    /// Absent when the database cannot be read by this binary (see `store.schema`).
    pub events: Option<EventFigures>,
    pub last_digest: Option<LastRun>,
    pub polls: Vec<PollStatus>,
    /// `SEQ:HASH` of the newest audit record.
    pub audit_head: Option<String>,
    /// What needs attention, in words; empty when all is well.
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StoreStatus {
    /// `sqlite` or `postgres`.
    pub backend: String,
    /// The SQLite file, or the PostgreSQL URL without its password.
    pub location: String,
    pub schema: SchemaStatus,
}

#[derive(Debug, Clone, Serialize)]
pub struct EventFigures {
    /// Waiting for a worker (new, or retrying later).
    pub pending: i64,
    /// Being worked on now.
    pub processing: i64,
    /// Gave up after the last attempt (replayable).
    pub dead: i64,
    pub total: i64,
}

/// The newest run of the daily summary.
#[derive(Debug, Clone, Serialize)]
pub struct LastRun {
    pub id: String,
    pub status: String,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub error: Option<String>,
}

/// The poller of one connection: its last applied cycle and its last failure.
#[derive(Debug, Clone, Serialize)]
pub struct PollStatus {
    pub connection: String,
    /// When the last applied cycle started (epoch ms).
    pub last_cycle_at: Option<i64>,
    pub last_error_at: Option<i64>,
    pub last_error: Option<String>,
}

/// Reads the status of the hub at `settings`. Nothing is created or migrated: a database
/// that is missing, behind or ahead of this binary is reported as such.
pub async fn read(settings: &HubSettings) -> Result<HubStatus, HubError> {
    let url = settings.database_url();
    let schema = Store::schema_status(&url).await?;
    let backend = if url.starts_with("postgres") {
        "postgres"
    } else {
        "sqlite"
    };
    let mut status = HubStatus {
        version: env!("CARGO_PKG_VERSION").into(),
        store: StoreStatus {
            backend: backend.into(),
            location: String::new(),
            schema: schema.clone(),
        },
        master_key: String::new(),
        events: None,
        last_digest: None,
        polls: Vec::new(),
        audit_head: None,
        problems: Vec::new(),
    };
    if !schema.exists {
        status.master_key = "not set up yet".into();
        status
            .problems
            .push("no database yet: `memberspot serve` (or any command) creates it".into());
        return Ok(status);
    }
    if schema.is_newer_than_binary() {
        status.problems.push(format!(
            "the database schema is at version {}, newer than this binary's {}: run the newer \
             memberspot",
            schema.database_version.unwrap_or_default(),
            schema.binary_version
        ));
    }
    if !schema.pending.is_empty() {
        status.problems.push(format!(
            "{} migration(s) pending: `memberspot migrate` (or the next start) applies them",
            schema.pending.len()
        ));
    }
    if !schema.modified.is_empty() {
        status.problems.push(format!(
            "applied migration(s) {:?} differ from this binary's: the database does not open",
            schema.modified
        ));
    }
    if !schema.is_current() {
        // Opening would migrate (or fail): report what the schema says, nothing more.
        status.master_key = "not checked (schema not current)".into();
        return Ok(status);
    }
    let store = Store::open(&url).await?;
    let figures = figures(&store, settings, &mut status).await;
    store.close().await;
    figures?;
    Ok(status)
}

async fn figures(
    store: &Store,
    settings: &HubSettings,
    status: &mut HubStatus,
) -> Result<(), HubError> {
    status.store.location = store.location().to_owned();
    status.master_key = match (
        store.get_meta(CHECK_META_KEY).await?,
        MasterKey::load_or_create(settings.master_key.as_deref(), &settings.key_file(), false),
    ) {
        (None, _) => "not set up yet".into(),
        (Some(check), Ok((key, _))) if key.matches_check(&check) => "matches".into(),
        (Some(_), Ok(_)) => {
            status.problems.push(
                "the master key does not match the database's: connections do not open".into(),
            );
            "does not match".into()
        }
        (Some(_), Err(e)) => {
            status.problems.push(e.to_string());
            e.to_string()
        }
    };

    let counts = store.events().event_status_counts().await?;
    let n = |s: EventStatus| counts.get(s.as_str()).copied().unwrap_or(0);
    let events = EventFigures {
        pending: n(EventStatus::Pending) + n(EventStatus::Retry),
        processing: n(EventStatus::Processing),
        dead: n(EventStatus::Dead),
        total: counts.values().sum(),
    };
    if events.dead > 0 {
        status.problems.push(format!(
            "{} dead letter(s): `memberspot events dead`, then `events replay`",
            events.dead
        ));
    }
    status.events = Some(events);

    status.last_digest = store
        .flows()
        .list_runs(Some("digest"), 1)
        .await?
        .into_iter()
        .next()
        .map(|r| LastRun {
            id: r.id,
            status: r.status.as_str().to_owned(),
            started_at: r.started_at,
            finished_at: r.finished_at,
            error: r.error,
        });
    if let Some(run) = &status.last_digest
        && run.error.is_some()
    {
        status
            .problems
            .push("the last daily summary failed: `memberspot flows history digest`".into());
    }

    status.polls = polls(&store.meta_with_prefix("poll.").await?);
    for p in &status.polls {
        if p.last_error_at > p.last_cycle_at {
            status.problems.push(format!(
                "the poller of `{}` failed its last cycle: {}",
                p.connection,
                p.last_error.as_deref().unwrap_or("unknown error")
            ));
        }
    }
    status.audit_head = Some(store.audit_head().await?.to_string());
    Ok(())
}

/// The pollers' state from their settings (`poll.<connection>.last_cycle` and
/// `.last_error`, JSON written by the poller).
fn polls(meta: &[(String, String)]) -> Vec<PollStatus> {
    let mut out: Vec<PollStatus> = Vec::new();
    for (key, value) in meta {
        let Some(rest) = key.strip_prefix("poll.") else {
            continue;
        };
        let (connection, name) = match rest.rsplit_once('.') {
            Some((c, n)) if n == "last_cycle" || n == "last_error" => (c, n),
            _ => continue,
        };
        let json: serde_json::Value = serde_json::from_str(value).unwrap_or_default();
        let entry = match out.iter_mut().position(|p| p.connection == connection) {
            Some(i) => &mut out[i],
            None => {
                out.push(PollStatus {
                    connection: connection.to_owned(),
                    last_cycle_at: None,
                    last_error_at: None,
                    last_error: None,
                });
                let last = out.len() - 1;
                &mut out[last]
            }
        };
        if name == "last_cycle" {
            entry.last_cycle_at = json["started_at"].as_i64();
        } else {
            entry.last_error_at = json["at"].as_i64();
            entry.last_error = json["error"].as_str().map(str::to_owned);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pollers_are_read_from_their_settings() {
        let meta = vec![
            ("poll.akademie.courses".into(), "[]".into()),
            (
                "poll.akademie.last_cycle".into(),
                r#"{"connection":"akademie","started_at":5}"#.into(),
            ),
            (
                "poll.akademie.last_error".into(),
                r#"{"at":9,"error":"429"}"#.into(),
            ),
            ("poll.a.b.last_cycle".into(), r#"{"started_at":1}"#.into()),
        ];
        let p = polls(&meta);
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].connection, "akademie");
        assert_eq!(p[0].last_cycle_at, Some(5));
        assert_eq!(p[0].last_error_at, Some(9));
        assert_eq!(p[0].last_error.as_deref(), Some("429"));
        assert_eq!(p[1].connection, "a.b");
    }
}
