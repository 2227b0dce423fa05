use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use actix::{Actor, Addr, Arbiter, System};
use bytes::Bytes;
use cco_proto::TokenCounts;

use super::entry::tests::{fixture_response, FIXTURE_V1};
use super::store::{CacheStore, StoreOutcome};
use super::*;

/// Start time of every test clock: 2023-11-14T22:13:20Z.
const START_MS: u64 = 1_700_000_000_000;
const HOUR: Duration = Duration::from_secs(3600);

/// A clock that moves only when a test advances it.
#[derive(Clone)]
struct TestClock(Arc<AtomicU64>);

impl TestClock {
    fn new() -> TestClock {
        TestClock(Arc::new(AtomicU64::new(START_MS)))
    }

    fn now(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }

    fn advance(&self, ms: u64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }

    fn boxed(&self) -> Clock {
        let time = Arc::clone(&self.0);
        Box::new(move || time.load(Ordering::SeqCst))
    }
}

fn open_tree(dir: &Path) -> sled::Tree {
    let db = sled::Config::new().path(dir).open().unwrap();
    db.open_tree("cache").unwrap()
}

fn config(capacity_bytes: u64, ttl: Duration) -> CacheConfig {
    CacheConfig {
        capacity_bytes,
        max_entries: u64::MAX,
        ttl,
        hot_capacity_bytes: capacity_bytes,
    }
}

fn key(n: u8) -> CacheKey {
    CacheKey([n; 32])
}

fn response(body: &[u8], created_unix_ms: u64) -> CachedResponse {
    CachedResponse {
        status: 200,
        headers: vec![("content-type".to_owned(), "application/json".to_owned())],
        body: Bytes::copy_from_slice(body),
        is_stream: false,
        model: Some("claude-haiku-4-5".to_owned()),
        tokens: TokenCounts {
            input: 1,
            output: 2,
            ..TokenCounts::default()
        },
        web_search_requests: 0,
        cost_nano_usd: Some(7),
        created_unix_ms,
    }
}

fn encoded_len(response: &CachedResponse) -> u64 {
    response.encode().unwrap().len() as u64
}

/// Builds a response whose stored value is exactly `size` bytes, with every body byte set
/// to `fill`.
fn response_of_size(size: u64, fill: u8, created_unix_ms: u64) -> CachedResponse {
    let overhead = encoded_len(&response(b"", created_unix_ms));
    let body = vec![fill; (size - overhead) as usize];
    let sized = response(&body, created_unix_ms);
    assert_eq!(encoded_len(&sized), size);
    sized
}

fn start(tree: sled::Tree, config: CacheConfig, clock: &TestClock) -> Addr<CacheActor> {
    CacheActor::with_clock(tree, config, clock.boxed())
        .unwrap()
        .start()
}

async fn store(addr: &Addr<CacheActor>, key: CacheKey, response: CachedResponse) {
    let response = Arc::new(response);
    addr.send(Store { key, response }).await.unwrap();
}

async fn lookup(addr: &Addr<CacheActor>, key: CacheKey) -> Option<CachedResponse> {
    addr.send(Lookup(key))
        .await
        .unwrap()
        .map(|response| (*response).clone())
}

async fn stats(addr: &Addr<CacheActor>) -> CacheStatsReply {
    addr.send(GetStats).await.unwrap()
}

/// Runs `future` in a fresh actix system, standing for one daemon run. The system and the
/// actors it started, with their sled handles, are dropped on return, so the database can
/// be opened again afterwards.
fn run_daemon<F: Future>(future: F) -> F::Output {
    System::new().block_on(future)
}

#[actix::test]
async fn lookup_hits_after_store() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new();
    let addr = start(open_tree(dir.path()), config(1 << 20, HOUR), &clock);
    let stored = response(b"{\"id\":\"msg_1\"}", clock.now());

    store(&addr, key(1), stored.clone()).await;

    assert_eq!(lookup(&addr, key(1)).await, Some(stored));
    let stats = stats(&addr).await;
    assert_eq!(stats.hits, 1);
    assert_eq!(stats.misses, 0);
    assert_eq!(stats.stores, 1);
    assert_eq!(stats.entries, 1);
}

#[actix::test]
async fn lookup_misses_other_key() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new();
    let addr = start(open_tree(dir.path()), config(1 << 20, HOUR), &clock);

    store(&addr, key(1), response(b"one", clock.now())).await;

    assert_eq!(lookup(&addr, key(2)).await, None);
    let stats = stats(&addr).await;
    assert_eq!(stats.hits, 0);
    assert_eq!(stats.misses, 1);
}

#[actix::test]
async fn stats_report_config_and_size() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new();
    let addr = start(open_tree(dir.path()), config(5000, HOUR), &clock);
    let first = response(b"one", clock.now());
    let second = response(b"second", clock.now());
    let expected_bytes = encoded_len(&first) + encoded_len(&second);

    store(&addr, key(1), first).await;
    store(&addr, key(2), second).await;

    let stats = stats(&addr).await;
    assert!(stats.enabled);
    assert_eq!(stats.entries, 2);
    assert_eq!(stats.bytes, expected_bytes);
    assert_eq!(stats.capacity_bytes, 5000);
    assert_eq!(stats.ttl_secs, 3600);
}

#[actix::test]
async fn store_overwrites_same_key() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new();
    let addr = start(open_tree(dir.path()), config(1 << 20, HOUR), &clock);
    let replacement = response(b"a longer second body", clock.now());

    store(&addr, key(1), response(b"first", clock.now())).await;
    store(&addr, key(1), replacement.clone()).await;

    assert_eq!(lookup(&addr, key(1)).await, Some(replacement.clone()));
    let stats = stats(&addr).await;
    assert_eq!(stats.entries, 1);
    assert_eq!(stats.bytes, encoded_len(&replacement));
    assert_eq!(stats.stores, 2);
    assert_eq!(stats.evictions, 0);
}

#[actix::test]
async fn eviction_follows_lru_order_by_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let tree = open_tree(dir.path());
    let clock = TestClock::new();
    let unit = encoded_len(&response(&[0; 100], clock.now()));
    let addr = start(tree.clone(), config(3 * unit, HOUR), &clock);

    store(&addr, key(1), response_of_size(unit, 1, clock.now())).await;
    store(&addr, key(2), response_of_size(unit, 2, clock.now())).await;
    store(&addr, key(3), response_of_size(unit, 3, clock.now())).await;
    // Touching entry 1 makes entry 2 the least recently used.
    assert!(lookup(&addr, key(1)).await.is_some());

    store(&addr, key(4), response_of_size(unit, 4, clock.now())).await;
    assert_eq!(stats(&addr).await.evictions, 1);
    assert!(!tree.contains_key(key(2).0).unwrap());

    // LRU order is now 3, 1, 4. An entry of two units needs room from both 3 and 1.
    store(&addr, key(5), response_of_size(2 * unit, 5, clock.now())).await;
    let stats_after = stats(&addr).await;
    assert_eq!(stats_after.evictions, 3);
    assert_eq!(stats_after.entries, 2);
    assert_eq!(stats_after.bytes, 3 * unit);
    assert_eq!(tree.len(), 2);

    for evicted in [1, 2, 3] {
        assert_eq!(lookup(&addr, key(evicted)).await, None, "entry {evicted}");
    }
    for kept in [4, 5] {
        assert!(lookup(&addr, key(kept)).await.is_some(), "entry {kept}");
    }
}

#[actix::test]
async fn eviction_keeps_max_entries() {
    let dir = tempfile::tempdir().unwrap();
    let tree = open_tree(dir.path());
    let clock = TestClock::new();
    let limits = CacheConfig {
        max_entries: 2,
        ..config(1 << 20, HOUR)
    };
    let addr = start(tree.clone(), limits, &clock);

    store(&addr, key(1), response(b"one", clock.now())).await;
    store(&addr, key(2), response(b"two", clock.now())).await;
    // Touching entry 1 makes entry 2 the least recently used.
    assert!(lookup(&addr, key(1)).await.is_some());
    store(&addr, key(3), response(b"three", clock.now())).await;

    let after_third = stats(&addr).await;
    assert_eq!(after_third.entries, 2);
    assert_eq!(after_third.evictions, 1);
    assert_eq!(tree.len(), 2);
    assert!(!tree.contains_key(key(2).0).unwrap());
    assert_eq!(lookup(&addr, key(2)).await, None);
    assert!(lookup(&addr, key(1)).await.is_some());
    assert!(lookup(&addr, key(3)).await.is_some());

    // Replacing an entry keeps the count, so nothing more is evicted.
    store(&addr, key(3), response(b"three again", clock.now())).await;
    assert_eq!(stats(&addr).await.evictions, 1);
}

#[actix::test]
async fn store_skips_oversized_entry() {
    let dir = tempfile::tempdir().unwrap();
    let tree = open_tree(dir.path());
    let clock = TestClock::new();
    let capacity = 500;
    let addr = start(tree.clone(), config(capacity, HOUR), &clock);

    store(&addr, key(1), response_of_size(capacity, 1, clock.now())).await;
    store(
        &addr,
        key(2),
        response_of_size(capacity + 1, 2, clock.now()),
    )
    .await;

    assert!(lookup(&addr, key(1)).await.is_some());
    assert_eq!(lookup(&addr, key(2)).await, None);
    let stats = stats(&addr).await;
    assert_eq!(stats.stores, 1);
    assert_eq!(stats.entries, 1);
    assert_eq!(stats.evictions, 0);
    assert_eq!(tree.len(), 1);
}

#[test]
fn store_counts_oversized_entry() {
    let dir = tempfile::tempdir().unwrap();
    let mut cache = CacheStore::open(open_tree(dir.path()), &config(500, HOUR), START_MS).unwrap();

    let outcome = cache
        .store(key(1), &response_of_size(501, 1, START_MS), START_MS)
        .unwrap();

    assert_eq!(outcome, StoreOutcome::Oversized { size: 501 });
    assert_eq!(cache.counters().oversized, 1);
    assert_eq!(cache.counters().stores, 0);
}

#[test]
fn store_skips_already_expired_response() {
    let dir = tempfile::tempdir().unwrap();
    let tree = open_tree(dir.path());
    let ttl = Duration::from_millis(50);
    let mut cache = CacheStore::open(tree.clone(), &config(1 << 20, ttl), START_MS).unwrap();

    let outcome = cache
        .store(key(1), &response(b"old", START_MS - 51), START_MS)
        .unwrap();

    assert_eq!(outcome, StoreOutcome::Expired);
    assert_eq!(tree.len(), 0);
}

#[actix::test]
async fn lookup_expires_entry_after_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let tree = open_tree(dir.path());
    let clock = TestClock::new();
    let addr = start(
        tree.clone(),
        config(1 << 20, Duration::from_millis(50)),
        &clock,
    );
    store(&addr, key(1), response(b"short-lived", clock.now())).await;

    // Expired means created + ttl < now, so the entry still hits when they are equal.
    clock.advance(50);
    assert!(lookup(&addr, key(1)).await.is_some());

    clock.advance(1);
    assert_eq!(lookup(&addr, key(1)).await, None);
    let stats = stats(&addr).await;
    assert_eq!(stats.expirations, 1);
    assert_eq!(stats.misses, 1);
    assert_eq!(stats.entries, 0);
    assert_eq!(stats.bytes, 0);
    assert_eq!(tree.len(), 0);
}

#[test]
fn sweep_removes_expired_entries() {
    let dir = tempfile::tempdir().unwrap();
    let tree = open_tree(dir.path());
    let ttl = Duration::from_millis(50);
    let mut cache = CacheStore::open(tree.clone(), &config(1 << 20, ttl), START_MS).unwrap();
    cache
        .store(key(1), &response(b"old", START_MS), START_MS)
        .unwrap();
    cache
        .store(key(2), &response(b"new", START_MS + 40), START_MS + 40)
        .unwrap();

    let removed = cache.remove_expired(START_MS + 60);

    assert_eq!(removed, 1);
    assert_eq!(cache.counters().expirations, 1);
    assert_eq!(cache.stats().entries, 1);
    assert!(!tree.contains_key(key(1).0).unwrap());
    assert!(tree.contains_key(key(2).0).unwrap());
}

#[actix::test]
async fn clear_empties_memory_and_disk() {
    let dir = tempfile::tempdir().unwrap();
    let tree = open_tree(dir.path());
    let clock = TestClock::new();
    let addr = start(tree.clone(), config(1 << 20, HOUR), &clock);
    let first = response(b"one", clock.now());
    let second = response(b"two", clock.now());
    let expected_bytes = encoded_len(&first) + encoded_len(&second);
    store(&addr, key(1), first).await;
    store(&addr, key(2), second).await;

    let reply = addr.send(Clear).await.unwrap();

    assert_eq!(reply.entries, 2);
    assert_eq!(reply.bytes, expected_bytes);
    assert_eq!(tree.len(), 0);
    assert_eq!(lookup(&addr, key(1)).await, None);
    let stats = stats(&addr).await;
    assert_eq!(stats.entries, 0);
    assert_eq!(stats.bytes, 0);
}

#[test]
fn entries_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new();
    let first = response(b"{\"id\":\"msg_1\"}", clock.now());
    let second = CachedResponse {
        is_stream: true,
        body: Bytes::from_static(b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"),
        ..response(b"", clock.now())
    };

    run_daemon(async {
        let addr = start(open_tree(dir.path()), config(1 << 20, HOUR), &clock);
        store(&addr, key(1), first.clone()).await;
        store(&addr, key(2), second.clone()).await;
        addr.send(Flush).await.unwrap().unwrap();
    });

    run_daemon(async {
        let addr = start(open_tree(dir.path()), config(1 << 20, HOUR), &clock);
        assert_eq!(stats(&addr).await.entries, 2);
        assert_eq!(lookup(&addr, key(1)).await, Some(first.clone()));
        assert_eq!(lookup(&addr, key(2)).await, Some(second.clone()));
    });
}

#[test]
fn reopen_drops_expired_entries() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new();
    let ttl = Duration::from_millis(50);

    run_daemon(async {
        let addr = start(open_tree(dir.path()), config(1 << 20, ttl), &clock);
        store(&addr, key(1), response(b"old", clock.now())).await;
        clock.advance(30);
        store(&addr, key(2), response(b"new", clock.now())).await;
        addr.send(Flush).await.unwrap().unwrap();
    });

    clock.advance(30);
    run_daemon(async {
        let tree = open_tree(dir.path());
        let addr = start(tree.clone(), config(1 << 20, ttl), &clock);
        let stats = stats(&addr).await;
        assert_eq!(stats.entries, 1);
        assert_eq!(stats.expirations, 1);
        assert_eq!(tree.len(), 1);
        assert!(lookup(&addr, key(2)).await.is_some());
    });
}

#[test]
fn reopen_with_smaller_capacity_evicts_oldest() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new();
    let unit = encoded_len(&response(&[0; 100], clock.now()));

    run_daemon(async {
        let addr = start(open_tree(dir.path()), config(10 * unit, HOUR), &clock);
        // Stored newest first, so load order must come from the creation time and not
        // from the order of the writes or of the keys.
        store(&addr, key(1), response_of_size(unit, 1, clock.now() + 2)).await;
        store(&addr, key(2), response_of_size(unit, 2, clock.now() + 1)).await;
        store(&addr, key(3), response_of_size(unit, 3, clock.now())).await;
        addr.send(Flush).await.unwrap().unwrap();
    });

    run_daemon(async {
        let tree = open_tree(dir.path());
        let addr = start(tree.clone(), config(2 * unit, HOUR), &clock);
        let stats = stats(&addr).await;
        assert_eq!(stats.entries, 2);
        assert_eq!(stats.bytes, 2 * unit);
        assert_eq!(stats.evictions, 1);
        assert_eq!(tree.len(), 2);
        assert!(!tree.contains_key(key(3).0).unwrap());
        assert!(lookup(&addr, key(1)).await.is_some());
        assert!(lookup(&addr, key(2)).await.is_some());
    });
}

#[test]
fn reopen_with_fewer_max_entries_evicts_oldest() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new();

    run_daemon(async {
        let addr = start(open_tree(dir.path()), config(1 << 20, HOUR), &clock);
        store(&addr, key(1), response(b"newest", clock.now() + 2)).await;
        store(&addr, key(2), response(b"middle", clock.now() + 1)).await;
        store(&addr, key(3), response(b"oldest", clock.now())).await;
        addr.send(Flush).await.unwrap().unwrap();
    });

    run_daemon(async {
        let tree = open_tree(dir.path());
        let limits = CacheConfig {
            max_entries: 2,
            ..config(1 << 20, HOUR)
        };
        let addr = start(tree.clone(), limits, &clock);
        let stats = stats(&addr).await;
        assert_eq!(stats.entries, 2);
        assert_eq!(stats.evictions, 1);
        assert_eq!(tree.len(), 2);
        assert!(!tree.contains_key(key(3).0).unwrap());
    });
}

#[actix::test]
async fn load_drops_undecodable_values() {
    let dir = tempfile::tempdir().unwrap();
    let tree = open_tree(dir.path());
    let clock = TestClock::new();
    let valid = response(b"valid", clock.now());
    tree.insert(key(1).0, valid.encode().unwrap()).unwrap();
    tree.insert(key(2).0, &b"\x02future format"[..]).unwrap();
    tree.insert(key(3).0, &b"\x01\x00\x00\x00\x05{oops"[..])
        .unwrap();
    tree.insert(key(4).0, &b"\x01"[..]).unwrap();
    tree.insert(b"short key", valid.encode().unwrap()).unwrap();

    let addr = start(tree.clone(), config(1 << 20, HOUR), &clock);

    let stats = stats(&addr).await;
    assert_eq!(stats.entries, 1);
    assert_eq!(stats.bytes, encoded_len(&valid));
    assert_eq!(tree.len(), 1);
    assert_eq!(lookup(&addr, key(1)).await, Some(valid));
}

#[actix::test]
async fn lookup_drops_value_corrupted_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let tree = open_tree(dir.path());
    let clock = TestClock::new();
    let addr = start(tree.clone(), config(1 << 20, HOUR), &clock);
    store(&addr, key(1), response(b"fine", clock.now())).await;

    tree.insert(key(1).0, &b"\x01\xff\xff\xff\xff"[..]).unwrap();

    assert_eq!(lookup(&addr, key(1)).await, None);
    let stats = stats(&addr).await;
    assert_eq!(stats.entries, 0);
    assert_eq!(stats.bytes, 0);
    assert_eq!(tree.len(), 0);
}

#[actix::test]
async fn stored_value_matches_fixture() {
    let dir = tempfile::tempdir().unwrap();
    let tree = open_tree(dir.path());
    let clock = TestClock::new();
    let addr = start(tree.clone(), config(1 << 20, HOUR), &clock);

    store(&addr, key(9), fixture_response()).await;

    let value = tree.get(key(9).0).unwrap().unwrap();
    assert_eq!(value.as_ref(), FIXTURE_V1);
}

#[actix::test]
async fn fixture_value_loads_and_hits() {
    let dir = tempfile::tempdir().unwrap();
    let tree = open_tree(dir.path());
    tree.insert(key(9).0, FIXTURE_V1).unwrap();
    let clock = TestClock::new();

    let addr = start(tree, config(1 << 20, HOUR), &clock);

    assert_eq!(lookup(&addr, key(9)).await, Some(fixture_response()));
}

#[test]
fn actor_runs_in_its_own_arbiter() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new();
    let stored = response(b"from the arbiter", clock.now());

    run_daemon(async {
        let arbiter = Arbiter::new();
        let actor =
            CacheActor::with_clock(open_tree(dir.path()), config(1 << 20, HOUR), clock.boxed())
                .unwrap();
        let addr = CacheActor::start_in_arbiter(&arbiter.handle(), move |_| actor);

        store(&addr, key(1), stored.clone()).await;
        assert_eq!(lookup(&addr, key(1)).await, Some(stored.clone()));

        arbiter.stop();
        arbiter.join().unwrap();
    });
}

#[test]
fn view_tracks_index() {
    let dir = tempfile::tempdir().unwrap();
    let tree = open_tree(dir.path());
    let size = encoded_len(&response_of_size(300, 1, START_MS));
    let mut cache = CacheStore::open(tree.clone(), &config(size * 2, HOUR), START_MS).unwrap();
    let view = cache.view();

    assert!(
        matches!(view.peek(&key(1), START_MS), Peek::Absent),
        "empty cache"
    );
    let first = response_of_size(300, 1, START_MS);
    cache.store(key(1), &first, START_MS).unwrap();
    cache
        .store(key(2), &response_of_size(300, 2, START_MS), START_MS)
        .unwrap();
    match view.peek(&key(1), START_MS) {
        Peek::Hot(response) => assert_eq!(*response, first),
        other => panic!("stored key 1 is not hot: {other:?}"),
    }

    // Key 2 is now the least recently used, so a third entry evicts it.
    cache
        .store(key(3), &response_of_size(300, 3, START_MS), START_MS)
        .unwrap();
    assert!(
        matches!(view.peek(&key(2), START_MS), Peek::Absent),
        "evicted key 2"
    );
    assert!(
        matches!(view.peek(&key(1), START_MS), Peek::Hot(_)),
        "kept key 1"
    );

    // The view does not serve an expired entry; the store removes it when asked.
    let expired_at = START_MS + HOUR.as_millis() as u64 + 1;
    assert!(matches!(view.peek(&key(3), expired_at), Peek::Stored));
    assert!(cache.lookup(&key(3), expired_at).is_none());
    assert!(
        matches!(view.peek(&key(3), START_MS), Peek::Absent),
        "expired key 3"
    );

    cache.clear().unwrap();
    assert!(
        matches!(view.peek(&key(1), START_MS), Peek::Absent),
        "cleared key 1"
    );
    // The view settled four misses and two hits without the store's help, and the store's
    // lookup of the expired key 3 was one more miss.
    let stats = cache.stats();
    assert_eq!((stats.misses, stats.hits), (4 + 1, 2));

    drop(cache);
    let reopened = CacheStore::open(tree, &config(size * 2, HOUR), START_MS).unwrap();
    assert!(
        matches!(reopened.view().peek(&key(1), START_MS), Peek::Absent),
        "nothing is left after clear"
    );
}

#[test]
fn entries_load_cold_and_turn_hot_on_lookup() {
    let dir = tempfile::tempdir().unwrap();
    let tree = open_tree(dir.path());
    let mut cache = CacheStore::open(tree.clone(), &config(1 << 20, HOUR), START_MS).unwrap();
    let kept = response(b"kept", START_MS);
    cache.store(key(7), &kept, START_MS).unwrap();
    drop(cache);

    let mut reopened = CacheStore::open(tree, &config(1 << 20, HOUR), START_MS).unwrap();
    let view = reopened.view();
    assert!(matches!(view.peek(&key(7), START_MS), Peek::Stored));
    assert_eq!(reopened.lookup(&key(7), START_MS).as_deref(), Some(&kept));
    match view.peek(&key(7), START_MS) {
        Peek::Hot(response) => assert_eq!(*response, kept),
        other => panic!("key 7 is not hot after a lookup: {other:?}"),
    }
}

#[test]
fn hot_entries_fit_their_capacity() {
    let dir = tempfile::tempdir().unwrap();
    let tree = open_tree(dir.path());
    let size = encoded_len(&response_of_size(300, 1, START_MS));
    let limits = CacheConfig {
        hot_capacity_bytes: size * 2,
        ..config(size * 10, HOUR)
    };
    let mut cache = CacheStore::open(tree, &limits, START_MS).unwrap();
    let view = cache.view();
    for n in 1..=3 {
        cache
            .store(key(n), &response_of_size(300, n, START_MS), START_MS)
            .unwrap();
    }
    // Two entries fit the hot capacity; the oldest stays in sled only.
    assert!(matches!(view.peek(&key(1), START_MS), Peek::Stored));
    assert!(matches!(view.peek(&key(2), START_MS), Peek::Hot(_)));
    assert!(matches!(view.peek(&key(3), START_MS), Peek::Hot(_)));

    // Reading key 1 from sled makes it hot and pushes out key 2, whose hit above was
    // older than key 3's.
    assert!(cache.lookup(&key(1), START_MS).is_some());
    assert!(matches!(view.peek(&key(1), START_MS), Peek::Hot(_)));
    assert!(matches!(view.peek(&key(2), START_MS), Peek::Stored));
    assert!(matches!(view.peek(&key(3), START_MS), Peek::Hot(_)));
    assert_eq!(cache.stats().entries, 3);
}

#[test]
fn hot_hits_refresh_lru_order() {
    let dir = tempfile::tempdir().unwrap();
    let tree = open_tree(dir.path());
    let size = encoded_len(&response_of_size(300, 1, START_MS));
    let mut cache = CacheStore::open(tree, &config(size * 2, HOUR), START_MS).unwrap();
    let view = cache.view();
    cache
        .store(key(1), &response_of_size(300, 1, START_MS), START_MS)
        .unwrap();
    cache
        .store(key(2), &response_of_size(300, 2, START_MS), START_MS)
        .unwrap();
    // Served by the view alone, this hit must still make key 1 the most recently used.
    assert!(matches!(view.peek(&key(1), START_MS), Peek::Hot(_)));
    cache
        .store(key(3), &response_of_size(300, 3, START_MS), START_MS)
        .unwrap();
    assert!(
        matches!(view.peek(&key(1), START_MS), Peek::Hot(_)),
        "key 1 kept"
    );
    assert!(
        matches!(view.peek(&key(2), START_MS), Peek::Absent),
        "key 2 evicted"
    );
}

#[test]
fn store_backlog_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let tree = open_tree(dir.path());
    let cache = CacheStore::open(tree, &config(1 << 20, HOUR), START_MS).unwrap();
    let view = cache.view();
    // Each store is charged its body and STORE_CHARGE_BYTES.
    let half = MAX_PENDING_STORE_BYTES / 2 - STORE_CHARGE_BYTES;

    assert!(view.reserve_store(half), "first half");
    assert!(view.reserve_store(half), "second half");
    assert!(!view.reserve_store(0), "one store past the bound");
    assert_eq!(cache.stats().skipped_stores, 1);

    view.store_arrived(half);
    assert!(view.reserve_store(half), "room freed by an arrived store");
    view.store_arrived(half);
    view.store_arrived(half);
    // With nothing on its way, one store larger than the bound still goes.
    assert!(
        view.reserve_store(MAX_PENDING_STORE_BYTES * 2),
        "lone large store"
    );
    assert!(!view.reserve_store(0), "behind a large store");
    view.store_arrived(MAX_PENDING_STORE_BYTES * 2);

    // Small stores are bounded by their count: 1,024 fit, the next does not.
    for index in 0..1024 {
        assert!(view.reserve_store(0), "small store {index}");
    }
    assert!(!view.reserve_store(0), "small store 1024");
    assert_eq!(cache.stats().skipped_stores, 3);
}
