//! The cache's state: an in-memory LRU index over values kept in a sled tree.
//!
//! Every method runs synchronously and takes the current time as an argument, so the actor
//! owns the clock and tests can move it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use bytes::Bytes;
use cco_proto::{CacheClearReply, CacheStatsReply};
use lru::LruCache;
use tracing::{info, warn};

use super::entry::{decode_metadata, CachedResponse};
use super::key::CacheKey;
use super::{CacheConfig, CacheError};

/// Index record of one entry. The value itself stays in sled.
#[derive(Clone, Copy, Debug)]
struct IndexEntry {
    /// Length of the stored value: header, metadata and body.
    size: u64,
    /// `created_unix_ms + ttl`. The entry is expired once the clock passes it.
    expires_unix_ms: u64,
}

/// Counters since the store was opened.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Counters {
    pub hits: u64,
    pub misses: u64,
    pub stores: u64,
    pub evictions: u64,
    pub expirations: u64,
    /// Responses not stored because they alone exceed the capacity.
    pub oversized: u64,
}

/// Result of [`CacheStore::store`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StoreOutcome {
    /// Written, after evicting `evicted` older entries to make room.
    Stored { size: u64, evicted: u64 },
    /// Not written because the encoded value is larger than the capacity.
    Oversized { size: u64 },
    /// Not written because the response's TTL had already passed.
    Expired,
}

/// Bytes of hot entries that the daemon's [`CacheView`] keeps in memory, least recently
/// used dropped first. Only hot entries are served without a round trip to the actor.
pub const HOT_CAPACITY_BYTES: u64 = 16 * 1024 * 1024;

/// Bytes of responses sent to the actor to store and not yet stored. Past this bound a
/// worker skips the store: the response is still sent, only not cached, so a proxy under
/// more load than sled can write keeps its memory bounded.
pub const MAX_PENDING_STORE_BYTES: u64 = 64 * 1024 * 1024;

/// Bytes charged to each pending store on top of its body, for its headers, metadata and
/// message, so that at most 1,024 small stores wait.
pub const STORE_CHARGE_BYTES: u64 = MAX_PENDING_STORE_BYTES / 1024;

/// Hits of hot entries remembered for the LRU order between two actor messages. Hits past
/// this bound are served all the same, but do not refresh their entry's place in the order.
const MAX_TOUCHED: usize = 4096;

/// Result of [`CacheView::peek`] for a key.
#[derive(Debug)]
pub enum Peek {
    /// The cache has no entry for the key: a miss, already counted.
    Absent,
    /// A live hot entry, already counted as a hit.
    Hot(Arc<CachedResponse>),
    /// The cache lists the key but the view cannot settle the lookup, because the entry is
    /// not hot or its TTL has passed. Send the actor a `Lookup`.
    Stored,
}

/// View of the cache shared with the HTTP workers: which keys it holds, and the responses
/// of the most recently used ones (the hot entries). A miss and a hit of a hot entry are
/// settled with it, without a message round trip to the actor. [`CacheStore`] keeps it in
/// step with its index. A worker only [publishes](CacheView::publish) a response that it
/// is about to send to the store, so that the next request finds it at once.
#[derive(Clone, Debug)]
pub struct CacheView(Arc<ViewState>);

#[derive(Debug)]
struct ViewState {
    ttl_ms: u64,
    hot_capacity_bytes: u64,
    slots: RwLock<HashMap<CacheKey, Slot>>,
    /// Misses that [`CacheView::peek`] settled without asking the actor.
    misses: AtomicU64,
    /// Hits that [`CacheView::peek`] served without asking the actor.
    hits: AtomicU64,
    /// Keys of hot entries served since the store last refreshed their LRU order.
    touched: Mutex<Vec<CacheKey>>,
    /// Body bytes of the `Store` messages on their way to the actor.
    pending_store_bytes: AtomicU64,
    /// Stores skipped because `pending_store_bytes` was at its bound.
    skipped_stores: AtomicU64,
}

#[derive(Debug)]
struct Slot {
    expires_unix_ms: u64,
    /// The response of a hot entry; `None` for one that stays in sled only.
    hot: Option<Arc<CachedResponse>>,
}

impl CacheView {
    fn new(ttl_ms: u64, hot_capacity_bytes: u64) -> Self {
        Self(Arc::new(ViewState {
            ttl_ms,
            hot_capacity_bytes,
            slots: RwLock::default(),
            misses: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            touched: Mutex::default(),
            pending_store_bytes: AtomicU64::new(0),
            skipped_stores: AtomicU64::new(0),
        }))
    }

    /// Reserves room for a `Store` of `body_bytes` on its way to the actor, or returns
    /// false, counting a skipped store, when the stores already on their way reach
    /// [`MAX_PENDING_STORE_BYTES`], each charged its body and [`STORE_CHARGE_BYTES`]. The actor releases the room with
    /// [`CacheView::store_arrived`].
    pub fn reserve_store(&self, body_bytes: u64) -> bool {
        let charge = body_bytes.saturating_add(STORE_CHARGE_BYTES);
        let reserved = self.0.pending_store_bytes.fetch_update(
            Ordering::AcqRel,
            Ordering::Acquire,
            |pending| {
                let total = pending.saturating_add(charge);
                (pending == 0 || total <= MAX_PENDING_STORE_BYTES).then_some(total)
            },
        );
        if reserved.is_err() {
            self.0.skipped_stores.fetch_add(1, Ordering::Relaxed);
        }
        reserved.is_ok()
    }

    /// Releases the room that [`CacheView::reserve_store`] took for a store of
    /// `body_bytes`.
    pub fn store_arrived(&self, body_bytes: u64) {
        let charge = body_bytes.saturating_add(STORE_CHARGE_BYTES);
        let _ = self.0.pending_store_bytes.fetch_update(
            Ordering::AcqRel,
            Ordering::Acquire,
            |pending| Some(pending.saturating_sub(charge)),
        );
    }

    fn skipped_stores(&self) -> u64 {
        self.0.skipped_stores.load(Ordering::Relaxed)
    }

    /// Makes `response` a hot entry under `key` ahead of its `Store` message, which the
    /// store then confirms or, when it does not keep the response, withdraws. A response
    /// larger than the hot capacity is left to the store.
    pub fn publish(&self, key: CacheKey, response: &Arc<CachedResponse>) {
        if response.body.len() as u64 > self.0.hot_capacity_bytes {
            return;
        }
        let expires_unix_ms = response.created_unix_ms.saturating_add(self.0.ttl_ms);
        self.insert(key, expires_unix_ms, Some(Arc::clone(response)));
    }

    /// Settles a lookup of `key` at `now_unix_ms` where the view can, counting the miss or
    /// hit in the cache's stats.
    pub fn peek(&self, key: &CacheKey, now_unix_ms: u64) -> Peek {
        let hot = {
            let slots = self.0.slots.read().unwrap_or_else(PoisonError::into_inner);
            match slots.get(key) {
                None => None,
                Some(Slot {
                    expires_unix_ms,
                    hot: Some(response),
                }) if *expires_unix_ms >= now_unix_ms => Some(Some(Arc::clone(response))),
                Some(_) => Some(None),
            }
        };
        match hot {
            None => {
                self.0.misses.fetch_add(1, Ordering::Relaxed);
                Peek::Absent
            }
            Some(None) => Peek::Stored,
            Some(Some(response)) => {
                self.0.hits.fetch_add(1, Ordering::Relaxed);
                let mut touched = self.touched();
                if touched.len() < MAX_TOUCHED {
                    touched.push(*key);
                }
                Peek::Hot(response)
            }
        }
    }

    fn misses(&self) -> u64 {
        self.0.misses.load(Ordering::Relaxed)
    }

    fn hits(&self) -> u64 {
        self.0.hits.load(Ordering::Relaxed)
    }

    fn touched(&self) -> std::sync::MutexGuard<'_, Vec<CacheKey>> {
        self.0
            .touched
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn slots(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<CacheKey, Slot>> {
        self.0.slots.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn insert(&self, key: CacheKey, expires_unix_ms: u64, hot: Option<Arc<CachedResponse>>) {
        self.slots().insert(
            key,
            Slot {
                expires_unix_ms,
                hot,
            },
        );
    }

    fn set_hot(&self, key: &CacheKey, hot: Option<Arc<CachedResponse>>) {
        if let Some(slot) = self.slots().get_mut(key) {
            slot.hot = hot;
        }
    }

    fn remove(&self, key: &CacheKey) {
        self.slots().remove(key);
    }

    fn clear(&self) {
        self.slots().clear();
    }
}

/// Index and database of the cache.
pub(crate) struct CacheStore {
    /// Tree that contains only cache entries, keyed by the 32 bytes of [`CacheKey`].
    tree: sled::Tree,
    /// Every entry in `tree`, least recently used first.
    index: LruCache<CacheKey, IndexEntry>,
    /// Sum of `size` over `index`.
    bytes: u64,
    capacity_bytes: u64,
    max_entries: usize,
    ttl_ms: u64,
    counters: Counters,
    /// The keys of `index` and the hot responses, for readers on other threads.
    view: CacheView,
    /// Keys of the entries whose responses `view` holds, least recently used first, with
    /// the size each is charged.
    hot: LruCache<CacheKey, u64>,
    /// Sum of the sizes in `hot`.
    hot_bytes: u64,
    hot_capacity_bytes: u64,
}

impl CacheStore {
    /// Opens the store over `tree`, building the index from the values already in it.
    ///
    /// Values that cannot be decoded or have expired are removed from the tree. The rest
    /// enter the LRU order by creation time, oldest first, and the oldest are evicted until
    /// the total fits `config.capacity_bytes` and `config.max_entries`.
    pub(crate) fn open(
        tree: sled::Tree,
        config: &CacheConfig,
        now_unix_ms: u64,
    ) -> Result<CacheStore, CacheError> {
        let ttl_ms = u64::try_from(config.ttl.as_millis()).unwrap_or(u64::MAX);
        let hot_capacity_bytes = config.hot_capacity_bytes.min(config.capacity_bytes);
        let mut store = CacheStore {
            tree,
            index: LruCache::unbounded(),
            bytes: 0,
            capacity_bytes: config.capacity_bytes,
            max_entries: usize::try_from(config.max_entries).unwrap_or(usize::MAX),
            ttl_ms,
            counters: Counters::default(),
            view: CacheView::new(ttl_ms, hot_capacity_bytes),
            hot: LruCache::unbounded(),
            hot_bytes: 0,
            hot_capacity_bytes,
        };

        let mut live = Vec::new();
        let mut stale = Vec::new();
        let mut undecodable = 0u64;
        for item in store.tree.iter() {
            let (raw_key, value) = item?;
            let key_hex = hex::encode(&raw_key);
            let Ok(key_bytes) = <[u8; 32]>::try_from(raw_key.as_ref()) else {
                warn!(actor = "cache", key = %key_hex, "dropping cache entry with a key that is not 32 bytes");
                undecodable += 1;
                stale.push(raw_key);
                continue;
            };
            let metadata = match decode_metadata(&value) {
                Ok((metadata, _)) => metadata,
                Err(error) => {
                    warn!(actor = "cache", key = %key_hex, %error, "dropping undecodable cache entry");
                    undecodable += 1;
                    stale.push(raw_key);
                    continue;
                }
            };

            let expires_unix_ms = store.expiry(metadata.created_unix_ms);
            if expires_unix_ms < now_unix_ms {
                store.counters.expirations += 1;
                stale.push(raw_key);
                continue;
            }
            let entry = IndexEntry {
                size: value.len() as u64,
                expires_unix_ms,
            };
            live.push((metadata.created_unix_ms, CacheKey(key_bytes), entry));
        }

        for raw_key in stale {
            store.tree.remove(raw_key)?;
        }

        // Oldest first, so the oldest entry ends up least recently used. The key breaks
        // ties between equal creation times.
        live.sort_unstable_by_key(|(created, key, _)| (*created, *key));
        for (_, key, entry) in live {
            store.bytes += entry.size;
            store.index.put(key, entry);
            store.view.insert(key, entry.expires_unix_ms, None);
        }
        let evicted = store.evict_to_capacity();

        info!(
            actor = "cache",
            entries = store.index.len(),
            bytes = store.bytes,
            expired = store.counters.expirations,
            undecodable,
            evicted,
            "loaded cache"
        );
        Ok(store)
    }

    /// Returns the response stored under `key`, marking it most recently used and hot, or
    /// `None` when there is none or it has expired.
    pub(crate) fn lookup(
        &mut self,
        key: &CacheKey,
        now_unix_ms: u64,
    ) -> Option<Arc<CachedResponse>> {
        self.refresh_touched();
        let Some(entry) = self.index.get(key).copied() else {
            self.counters.misses += 1;
            return None;
        };
        if entry.expires_unix_ms < now_unix_ms {
            self.remove(key);
            self.counters.expirations += 1;
            self.counters.misses += 1;
            return None;
        }

        let value = match self.tree.get(key.0) {
            Ok(Some(value)) => value,
            Ok(None) => {
                warn!(actor = "cache", key = %key, "cache entry in the index is missing from the database; dropping it");
                self.remove(key);
                self.counters.misses += 1;
                return None;
            }
            Err(error) => {
                warn!(actor = "cache", key = %key, %error, "failed to read cache entry; returning a miss");
                self.counters.misses += 1;
                return None;
            }
        };

        match CachedResponse::decode(Bytes::from_owner(value)) {
            Ok(response) => {
                self.counters.hits += 1;
                let response = Arc::new(response);
                self.make_hot(*key, entry.size, &response);
                Some(response)
            }
            Err(error) => {
                warn!(actor = "cache", key = %key, %error, "dropping undecodable cache entry");
                self.remove(key);
                self.counters.misses += 1;
                None
            }
        }
    }

    /// Writes `response` under `key`, replacing any entry with that key, then evicts least
    /// recently used entries until the total fits the capacity and the entry limit.
    #[cfg(test)]
    pub(crate) fn store(
        &mut self,
        key: CacheKey,
        response: &CachedResponse,
        now_unix_ms: u64,
    ) -> Result<StoreOutcome, CacheError> {
        self.store_shared(key, Arc::new(response.clone()), now_unix_ms)
    }

    /// [`CacheStore::store`] of a response that the view may already hold, published by a
    /// worker. A response that is not kept is withdrawn from the view.
    pub(crate) fn store_shared(
        &mut self,
        key: CacheKey,
        response: Arc<CachedResponse>,
        now_unix_ms: u64,
    ) -> Result<StoreOutcome, CacheError> {
        self.refresh_touched();
        let outcome = self.write(key, &response, now_unix_ms);
        match outcome {
            Ok(StoreOutcome::Stored { size, .. }) => {
                // A response just stored is the likeliest to be asked for again soon.
                self.make_hot(key, size, &response);
            }
            Ok(_) | Err(_) => self.withdraw(&key),
        }
        outcome
    }

    fn write(
        &mut self,
        key: CacheKey,
        response: &CachedResponse,
        now_unix_ms: u64,
    ) -> Result<StoreOutcome, CacheError> {
        let value = response.encode()?;
        let size = value.len() as u64;
        if size > self.capacity_bytes {
            self.counters.oversized += 1;
            return Ok(StoreOutcome::Oversized { size });
        }
        let expires_unix_ms = self.expiry(response.created_unix_ms);
        if expires_unix_ms < now_unix_ms {
            return Ok(StoreOutcome::Expired);
        }

        self.tree.insert(key.0, value)?;
        let entry = IndexEntry {
            size,
            expires_unix_ms,
        };
        if let Some(replaced) = self.index.put(key, entry) {
            self.bytes -= replaced.size;
        }
        self.view.insert(key, expires_unix_ms, None);
        self.bytes += size;
        self.counters.stores += 1;

        // The new entry is most recently used and fits on its own, so eviction stops
        // before reaching it.
        let evicted = self.evict_to_capacity();
        Ok(StoreOutcome::Stored { size, evicted })
    }

    /// Puts the view's slot for `key` back in step with the index after a worker published
    /// a response that was not stored: an entry already in the index stays, cold.
    fn withdraw(&mut self, key: &CacheKey) {
        if let Some(size) = self.hot.pop(key) {
            self.hot_bytes -= size;
        }
        match self.index.peek(key) {
            Some(entry) => self.view.insert(*key, entry.expires_unix_ms, None),
            None => self.view.remove(key),
        }
    }

    /// Returns the view of this store that the HTTP workers read.
    pub(crate) fn view(&self) -> CacheView {
        self.view.clone()
    }

    pub(crate) fn view_ref(&self) -> &CacheView {
        &self.view
    }

    /// Removes every entry from the index and the tree, returning what was removed.
    ///
    /// On a database error the index is left as it was. Entries that the tree lost before
    /// the error are dropped from the index at their next lookup.
    pub(crate) fn clear(&mut self) -> Result<CacheClearReply, CacheError> {
        self.tree.clear()?;
        // The reply promises the entries are gone, so they must stay gone after a crash.
        self.tree.flush()?;
        let reply = CacheClearReply {
            entries: self.index.len() as u64,
            bytes: self.bytes,
        };
        self.index.clear();
        self.view.clear();
        self.hot.clear();
        self.hot_bytes = 0;
        self.bytes = 0;
        Ok(reply)
    }

    /// Removes every entry whose TTL has passed, returning how many were removed.
    pub(crate) fn remove_expired(&mut self, now_unix_ms: u64) -> u64 {
        let expired: Vec<CacheKey> = self
            .index
            .iter()
            .filter(|(_, entry)| entry.expires_unix_ms < now_unix_ms)
            .map(|(key, _)| *key)
            .collect();
        for key in &expired {
            self.remove(key);
        }
        self.counters.expirations += expired.len() as u64;
        expired.len() as u64
    }

    pub(crate) fn flush(&self) -> Result<(), CacheError> {
        self.tree.flush()?;
        Ok(())
    }

    pub(crate) fn stats(&self) -> CacheStatsReply {
        CacheStatsReply {
            enabled: true,
            entries: self.index.len() as u64,
            bytes: self.bytes,
            capacity_bytes: self.capacity_bytes,
            ttl_secs: self.ttl_ms / 1000,
            hits: self.counters.hits + self.view.hits(),
            misses: self.counters.misses + self.view.misses(),
            stores: self.counters.stores,
            evictions: self.counters.evictions,
            expirations: self.counters.expirations,
            skipped_stores: self.view.skipped_stores(),
        }
    }

    pub(crate) fn counters(&self) -> Counters {
        self.counters
    }

    fn expiry(&self, created_unix_ms: u64) -> u64 {
        created_unix_ms.saturating_add(self.ttl_ms)
    }

    /// Evicts least recently used entries until the total fits the capacity and the entry
    /// limit, returning how many were evicted.
    fn evict_to_capacity(&mut self) -> u64 {
        let mut evicted = 0;
        while self.bytes > self.capacity_bytes || self.index.len() > self.max_entries {
            let Some((key, entry)) = self.index.pop_lru() else {
                break;
            };
            self.forget(&key);
            self.bytes -= entry.size;
            self.remove_from_tree(&key);
            evicted += 1;
        }
        self.counters.evictions += evicted;
        evicted
    }

    fn remove(&mut self, key: &CacheKey) {
        if let Some(entry) = self.index.pop(key) {
            self.bytes -= entry.size;
        }
        self.forget(key);
        self.remove_from_tree(key);
    }

    /// Drops `key` from the view and the hot entries.
    fn forget(&mut self, key: &CacheKey) {
        self.view.remove(key);
        if let Some(size) = self.hot.pop(key) {
            self.hot_bytes -= size;
        }
    }

    /// Puts `response` in the view as the most recently used hot entry, then drops the
    /// responses of the least recently used hot entries until they fit their capacity.
    fn make_hot(&mut self, key: CacheKey, size: u64, response: &Arc<CachedResponse>) {
        if size > self.hot_capacity_bytes {
            self.view.set_hot(&key, None);
            return;
        }
        if let Some(replaced) = self.hot.put(key, size) {
            self.hot_bytes -= replaced;
        }
        self.hot_bytes += size;
        self.view.set_hot(&key, Some(Arc::clone(response)));
        while self.hot_bytes > self.hot_capacity_bytes {
            let Some((cold, size)) = self.hot.pop_lru() else {
                break;
            };
            self.hot_bytes -= size;
            self.view.set_hot(&cold, None);
        }
    }

    /// Moves the hot entries that workers served since the last call to the most recently
    /// used end of both orders.
    fn refresh_touched(&mut self) {
        let touched = std::mem::take(&mut *self.view.touched());
        for key in touched {
            self.hot.get(&key);
            self.index.get(&key);
        }
    }

    // NOTE: a failed removal leaves the value in the tree after the index dropped it, so it
    // uses disk space until the next start-up loads it again and evicts or expires it.
    fn remove_from_tree(&self, key: &CacheKey) {
        if let Err(error) = self.tree.remove(key.0) {
            warn!(actor = "cache", key = %key, %error, "failed to remove cache entry from the database");
        }
    }
}
