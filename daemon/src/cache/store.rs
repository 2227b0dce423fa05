//! The cache's state: an in-memory LRU index over values kept in a sled tree.
//!
//! Every method runs synchronously and takes the current time as an argument, so the actor
//! owns the clock and tests can move it.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

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

/// Read-only view of which keys the cache holds, shared with the HTTP workers so that a
/// miss is known without a message round trip to the actor. Only [`CacheStore`] writes it,
/// in step with its index. A key it lists may still be expired or evicted a moment later,
/// so a listed key only means "ask the actor".
#[derive(Clone, Debug, Default)]
pub struct KeyFilter(Arc<FilterState>);

#[derive(Debug, Default)]
struct FilterState {
    keys: RwLock<HashSet<CacheKey>>,
    /// Misses that [`KeyFilter::may_contain`] settled without asking the actor.
    misses: AtomicU64,
}

impl KeyFilter {
    /// False when the cache certainly has no entry for `key`; such a miss is counted in
    /// the cache's stats.
    pub fn may_contain(&self, key: &CacheKey) -> bool {
        let listed = self
            .0
            .keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(key);
        if !listed {
            self.0.misses.fetch_add(1, Ordering::Relaxed);
        }
        listed
    }

    fn misses(&self) -> u64 {
        self.0.misses.load(Ordering::Relaxed)
    }

    fn keys(&self) -> std::sync::RwLockWriteGuard<'_, HashSet<CacheKey>> {
        self.0.keys.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn insert(&self, key: CacheKey) {
        self.keys().insert(key);
    }

    fn remove(&self, key: &CacheKey) {
        self.keys().remove(key);
    }

    fn clear(&self) {
        self.keys().clear();
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
    /// The keys of `index`, for readers on other threads.
    filter: KeyFilter,
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
        let mut store = CacheStore {
            tree,
            index: LruCache::unbounded(),
            bytes: 0,
            capacity_bytes: config.capacity_bytes,
            max_entries: usize::try_from(config.max_entries).unwrap_or(usize::MAX),
            ttl_ms: u64::try_from(config.ttl.as_millis()).unwrap_or(u64::MAX),
            counters: Counters::default(),
            filter: KeyFilter::default(),
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
            store.filter.insert(key);
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

    /// Returns the response stored under `key`, marking it most recently used, or `None`
    /// when there is none or it has expired.
    pub(crate) fn lookup(&mut self, key: &CacheKey, now_unix_ms: u64) -> Option<CachedResponse> {
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
    pub(crate) fn store(
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
        self.filter.insert(key);
        self.bytes += size;
        self.counters.stores += 1;

        // The new entry is most recently used and fits on its own, so eviction stops
        // before reaching it.
        let evicted = self.evict_to_capacity();
        Ok(StoreOutcome::Stored { size, evicted })
    }

    /// Returns the shared view of this store's keys.
    pub(crate) fn filter(&self) -> KeyFilter {
        self.filter.clone()
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
        self.filter.clear();
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
            hits: self.counters.hits,
            misses: self.counters.misses + self.filter.misses(),
            stores: self.counters.stores,
            evictions: self.counters.evictions,
            expirations: self.counters.expirations,
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
            self.filter.remove(&key);
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
        self.filter.remove(key);
        self.remove_from_tree(key);
    }

    // NOTE: a failed removal leaves the value in the tree after the index dropped it, so it
    // uses disk space until the next start-up loads it again and evicts or expires it.
    fn remove_from_tree(&self, key: &CacheKey) {
        if let Err(error) = self.tree.remove(key.0) {
            warn!(actor = "cache", key = %key, %error, "failed to remove cache entry from the database");
        }
    }
}
