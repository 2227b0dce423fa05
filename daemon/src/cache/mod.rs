//! Response cache: the [`CacheActor`] and the messages it takes.
//!
//! The actor owns an in-memory index (key, size, expiry and LRU order of every entry) and
//! a sled tree dedicated to the cache, which contains the entries themselves. It takes
//! [`Lookup`], [`Store`], [`Clear`], [`GetStats`] and [`Flush`], and every minute removes
//! entries whose TTL has passed.
//!
//! The actor also publishes a [`CacheView`]: the set of its keys and the responses of its
//! most recently used entries, so the proxy settles a miss, and a hit of such an entry,
//! without a message round trip. The actor keeps it in step with its index, and workers
//! only publish the responses they are about to send it in a [`Store`].
//!
//! The actor calls sled synchronously inside its handlers, so it must run on its own arbiter
//! (`CacheActor::start_in_arbiter`) and never on an HTTP worker thread. It never contacts
//! the upstream and never decides what is cacheable: the proxy computes the [`CacheKey`]
//! and chooses which responses to store.

mod entry;
mod key;
mod store;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix::{Actor, AsyncContext, Context, Handler, Message, MessageResult};
use cco_proto::{CacheClearReply, CacheStatsReply};
use tracing::{debug, error, warn};

pub use entry::{CachedResponse, DecodeError, FORMAT_VERSION};
pub use key::{CacheKey, KeyParts};
use store::{CacheStore, StoreOutcome};
pub use store::{CacheView, Peek, HOT_CAPACITY_BYTES, MAX_PENDING_STORE_BYTES, STORE_CHARGE_BYTES};

/// Interval between sweeps that remove expired entries that no lookup has removed yet.
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// Size and lifetime limits of the cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheConfig {
    /// Maximum total size of the stored values in bytes: header, metadata and body of each.
    pub capacity_bytes: u64,
    /// Maximum number of entries, at least 1. Each entry keeps its key, size and expiry in
    /// memory, so this bounds the index where many small responses fit `capacity_bytes`.
    pub max_entries: u64,
    /// Time after a response's `created_unix_ms` during which it is served from the cache.
    pub ttl: Duration,
    /// Size of the most recently used entries whose responses are also kept in memory, so
    /// the HTTP workers serve them without a round trip to the actor. At most
    /// `capacity_bytes`; [`HOT_CAPACITY_BYTES`] in the daemon.
    pub hot_capacity_bytes: u64,
}

/// Source of the current time in milliseconds since the Unix epoch.
pub type Clock = Box<dyn Fn() -> u64 + Send>;

/// Errors of the cache's database and encoding.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cache database operation failed: {0}")]
    Database(#[from] sled::Error),
    #[error("failed to encode cache entry metadata: {0}")]
    Encode(#[source] serde_json::Error),
    #[error("cache entry metadata is {len} bytes, over the 4 GiB limit of the stored format")]
    MetadataTooLarge { len: usize },
}

/// Actor that serves and stores cached responses.
pub struct CacheActor {
    store: CacheStore,
    clock: Clock,
}

impl CacheActor {
    /// Loads the index from `tree`, which must contain only cache entries, using the system
    /// clock.
    pub fn new(tree: sled::Tree, config: CacheConfig) -> Result<CacheActor, CacheError> {
        Self::with_clock(tree, config, Box::new(system_now_unix_ms))
    }

    /// Loads the index from `tree`, taking the current time from `clock`.
    pub fn with_clock(
        tree: sled::Tree,
        config: CacheConfig,
        clock: Clock,
    ) -> Result<CacheActor, CacheError> {
        let store = CacheStore::open(tree, &config, clock())?;
        Ok(CacheActor { store, clock })
    }

    /// Returns the view of the cache that lets a caller skip [`Lookup`] for a miss or a
    /// hot entry.
    pub fn view(&self) -> CacheView {
        self.store.view()
    }

    fn now(&self) -> u64 {
        (self.clock)()
    }
}

impl Actor for CacheActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(SWEEP_INTERVAL, |actor, _| {
            let removed = actor.store.remove_expired(actor.now());
            if removed > 0 {
                debug!(actor = "cache", removed, "removed expired cache entries");
            }
        });
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        if let Err(error) = self.store.flush() {
            error!(actor = "cache", %error, "failed to flush the cache database at stop");
        }
    }
}

/// Request for the response cached under a key. The reply is `None` on a miss or when the
/// entry has expired.
#[derive(Clone, Copy, Debug, Message)]
#[rtype(result = "Option<Arc<CachedResponse>>")]
pub struct Lookup(pub CacheKey);

/// Request to store a response, replacing any entry with the same key.
#[derive(Clone, Debug, Message)]
#[rtype(result = "()")]
pub struct Store {
    pub key: CacheKey,
    pub response: Arc<CachedResponse>,
}

/// Request to remove every entry from memory and disk. The reply counts what was removed.
#[derive(Clone, Copy, Debug, Message)]
#[rtype(result = "CacheClearReply")]
pub struct Clear;

/// Request for the cache's size and counters.
#[derive(Clone, Copy, Debug, Message)]
#[rtype(result = "CacheStatsReply")]
pub struct GetStats;

/// Request to write the cache's pending sled updates to disk.
#[derive(Clone, Copy, Debug, Message)]
#[rtype(result = "Result<(), CacheError>")]
pub struct Flush;

impl Handler<Lookup> for CacheActor {
    type Result = Option<Arc<CachedResponse>>;

    fn handle(&mut self, Lookup(key): Lookup, _ctx: &mut Self::Context) -> Self::Result {
        let now = self.now();
        let response = self.store.lookup(&key, now);
        debug!(actor = "cache", key = %key, hit = response.is_some(), "cache lookup");
        response
    }
}

impl Handler<Store> for CacheActor {
    type Result = ();

    fn handle(&mut self, message: Store, _ctx: &mut Self::Context) {
        let now = self.now();
        let key = message.key;
        self.store
            .view_ref()
            .store_arrived(message.response.body.len() as u64);
        match self.store.store_shared(key, message.response, now) {
            Ok(StoreOutcome::Stored { size, evicted }) => {
                debug!(actor = "cache", key = %key, size, evicted, "stored cache entry");
            }
            Ok(StoreOutcome::Oversized { size }) => {
                debug!(
                    actor = "cache",
                    key = %key,
                    size,
                    skipped_total = self.store.counters().oversized,
                    "response larger than the cache capacity; not stored"
                );
            }
            Ok(StoreOutcome::Expired) => {
                debug!(actor = "cache", key = %key, "response already past its TTL; not stored");
            }
            Err(error) => {
                warn!(actor = "cache", key = %key, %error, "failed to store cache entry");
            }
        }
    }
}

impl Handler<Clear> for CacheActor {
    type Result = MessageResult<Clear>;

    fn handle(&mut self, _message: Clear, _ctx: &mut Self::Context) -> Self::Result {
        match self.store.clear() {
            Ok(reply) => {
                debug!(
                    actor = "cache",
                    entries = reply.entries,
                    bytes = reply.bytes,
                    "cleared cache"
                );
                MessageResult(reply)
            }
            // NOTE: `CacheClearReply` cannot carry an error, so the caller sees zero entries
            // removed and the error appears only in this log line.
            Err(error) => {
                error!(actor = "cache", %error, "failed to clear the cache database");
                MessageResult(CacheClearReply::default())
            }
        }
    }
}

impl Handler<GetStats> for CacheActor {
    type Result = MessageResult<GetStats>;

    fn handle(&mut self, _message: GetStats, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.store.stats())
    }
}

impl Handler<Flush> for CacheActor {
    type Result = Result<(), CacheError>;

    fn handle(&mut self, _message: Flush, _ctx: &mut Self::Context) -> Self::Result {
        self.store.flush()
    }
}

fn system_now_unix_ms() -> u64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests;
