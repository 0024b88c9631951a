//! Personas and connections as every call sees them: held in memory and
//! checked against the store's directory version (bumped by triggers on any
//! change to either table) before each use.
//!
//! The version check is shared. A call that arrives while no check is running
//! starts one; calls that arrive during a check wait for the next one. So every
//! call is answered by a check that *started after it arrived*: a revocation
//! committed before a call, by this process, another process on the same file
//! or another instance on the same PostgreSQL database, is seen by that call.
//! Under load one small query serves many calls, instead of two lookups each.
//! Where the store can read on the caller's thread without waiting (SQLite), a
//! call that finds that reader free checks right away instead, skipping the hand-off.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use memberspot_store::{Connection, Persona, PinnedConnection, Store, StoreError, Versioned};
use tokio::sync::{mpsc, oneshot};

use crate::HubError;

/// Calls answered by one version check at most.
const CHECK_BATCH: usize = 1024;

type Waiter = oneshot::Sender<Result<i64, StoreError>>;

/// How fresh a lookup must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Freshness {
    /// As of a version check that starts after the lookup does.
    Check,
    /// As of the latest completed check (the caller made one for this call).
    LatestCheck,
}

pub(crate) struct Directory {
    store: Store,
    check: mpsc::Sender<Waiter>,
    /// A reader for checks on the caller's thread, where the store has one.
    inline: Option<Arc<Mutex<PinnedConnection>>>,
    cache: Mutex<Cache>,
}

/// Rows read at `version`. Only found rows are kept (an unknown token costs a
/// lookup, never memory); their number is bounded by the tables' size.
#[derive(Default)]
struct Cache {
    version: i64,
    by_token_hash: HashMap<String, Persona>,
    by_name: HashMap<String, Persona>,
    connections: HashMap<String, Connection>,
}

impl Cache {
    /// Moves to `version` if it is newer, dropping everything read before it.
    fn advance(&mut self, version: i64) {
        if version > self.version {
            self.reset(version);
        }
    }

    fn reset(&mut self, version: i64) {
        *self = Cache {
            version,
            ..Cache::default()
        };
    }
}

impl Directory {
    /// Starts the version-check task; it ends when the directory is dropped.
    pub(crate) fn spawn(store: Store) -> Self {
        let (check, mut rx) = mpsc::channel::<Waiter>(CHECK_BATCH);
        let inline = store
            .has_lanes()
            .then(|| Arc::new(Mutex::new(store.pinned())));
        let inline_reader = inline.as_ref().map(Arc::downgrade);
        let mut conn = store.pinned();
        let store_closed = store.clone();
        tokio::spawn(async move {
            let mut waiters = Vec::with_capacity(CHECK_BATCH);
            let mut closing = std::pin::pin!(store_closed.closed());
            let mut released = false;
            loop {
                let n = tokio::select! {
                    n = conn.idle(rx.recv_many(&mut waiters, CHECK_BATCH)) => n,
                    // The inline reader must not keep the file open once the store is closed.
                    () = &mut closing, if !released => {
                        released = true;
                        if let Some(reader) = inline_reader.as_ref().and_then(Weak::upgrade)
                            && let Ok(mut reader) = reader.lock()
                        {
                            reader.release();
                        }
                        continue;
                    }
                };
                if n == 0 {
                    break;
                }
                let version = conn.directory_version().await;
                for w in waiters.drain(..) {
                    let _ = w.send(version.clone());
                }
            }
        });
        Directory {
            store,
            check,
            inline,
            cache: Mutex::new(Cache {
                version: -1,
                ..Cache::default()
            }),
        }
    }

    /// The directory version, from a check that started after this call.
    async fn current_version(&self) -> Result<i64, HubError> {
        if let Some(v) = self
            .inline
            .as_ref()
            .and_then(|m| m.try_lock().ok())
            .and_then(|mut reader| reader.directory_version_now())
        {
            return Ok(v);
        }
        let stopped = || HubError::Unavailable("the directory check has stopped".into());
        let (tx, rx) = oneshot::channel();
        self.check.send(tx).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?.map_err(HubError::Store)
    }

    /// `pick` from the cache once it is at least at the version `freshness` asks for.
    async fn cached<T>(
        &self,
        freshness: Freshness,
        pick: impl FnOnce(&mut Cache) -> Option<T>,
    ) -> Result<Option<T>, HubError> {
        let version = match freshness {
            Freshness::Check => Some(self.current_version().await?),
            Freshness::LatestCheck => None,
        };
        let Ok(mut cache) = self.cache.lock() else {
            return Ok(None);
        };
        // A fresh check is authoritative: a different version, even a lower one (a
        // database restored from a backup), drops what was read before.
        if let Some(v) = version
            && v != cache.version
        {
            cache.reset(v);
        }
        Ok(pick(&mut cache))
    }

    /// Files a row read at `version`, unless the cache has moved past it.
    fn remember(&self, version: i64, file: impl FnOnce(&mut Cache)) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.advance(version);
            if cache.version == version {
                file(&mut cache);
            }
        }
    }

    /// The persona whose token hashes to `hash` (revoked ones included).
    pub(crate) async fn persona_by_token_hash(
        &self,
        hash: &str,
    ) -> Result<Option<Persona>, HubError> {
        self.lookup(
            Freshness::Check,
            hash,
            |c| &mut c.by_token_hash,
            || self.store.persona_by_token_hash_versioned(hash),
        )
        .await
    }

    /// The persona named `name` (revoked ones included).
    pub(crate) async fn persona(&self, name: &str) -> Result<Option<Persona>, HubError> {
        self.lookup(
            Freshness::Check,
            name,
            |c| &mut c.by_name,
            || self.store.persona_versioned(name),
        )
        .await
    }

    /// The connection named `name`.
    pub(crate) async fn connection(
        &self,
        name: &str,
        freshness: Freshness,
    ) -> Result<Option<Connection>, HubError> {
        self.lookup(
            freshness,
            name,
            |c| &mut c.connections,
            || self.store.connection_versioned(name),
        )
        .await
    }

    /// `key` in the cache's `table`, else from `fetch` (and then kept).
    async fn lookup<T, Fut>(
        &self,
        freshness: Freshness,
        key: &str,
        table: fn(&mut Cache) -> &mut HashMap<String, T>,
        fetch: impl FnOnce() -> Fut,
    ) -> Result<Option<T>, HubError>
    where
        T: Clone,
        Fut: Future<Output = Result<Option<Versioned<T>>, StoreError>>,
    {
        if let Some(hit) = self
            .cached(freshness, |c| table(c).get(key).cloned())
            .await?
        {
            return Ok(Some(hit));
        }
        Ok(fetch().await?.map(|Versioned { value, version }| {
            self.remember(version, |c| {
                table(c).insert(key.to_owned(), value.clone());
            });
            value
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(name: &str) -> Connection {
        Connection {
            id: name.into(),
            name: name.into(),
            base_url: "http://school.test".into(),
            sealed_key: "sealed".into(),
            key_hint: "…".into(),
            rate_limit: 4.0,
            created_at: 0,
            updated_at: 0,
        }
    }

    #[test]
    fn rows_are_kept_only_at_the_version_they_were_read_at() {
        let mut cache = Cache::default();
        cache.advance(5);
        cache.connections.insert("a".into(), conn("a"));
        // An older read never replaces newer rows; a newer one drops them.
        cache.advance(4);
        assert!(cache.connections.contains_key("a"));
        cache.advance(6);
        assert!(cache.connections.is_empty());
        assert_eq!(cache.version, 6);
        // A fresh check with another version, even a lower one (a restored database),
        // drops everything.
        cache.connections.insert("b".into(), conn("b"));
        cache.reset(3);
        assert!(cache.connections.is_empty());
        assert_eq!(cache.version, 3);
    }
}
