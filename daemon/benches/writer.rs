//! Times the analytics actor's record writer: how many records per second it stores when
//! the HTTP workers hand them over through a [`Recorder`], as the proxy does.
//!
//! A producer thread pushes `CCO_BENCH_RECORDS` records (default 200,000) into the
//! recorder's queue as fast as it can. The actor runs on its own arbiter with ccod's
//! flush interval (500 ms) over a sled database opened with ccod's settings in a temporary
//! directory. The clock stops when a `QueryStats` reply counts every record. Run it with
//! `cargo bench -p ccod --bench writer`.

use std::time::{Duration, Instant};

use actix::Actor;
use cco_proto::{StatsQuery, TokenCounts};
use ccod::analytics::{AnalyticsActor, CacheOutcome, Outcome, QueryStats, Recorder, RequestRecord};
use ccod::config::DEFAULT_DB_CACHE_SIZE_MB;

/// Flush interval of ccod's default configuration.
const FLUSH_INTERVAL: Duration = Duration::from_millis(500);
const MODELS: [&str; 3] = ["claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-5"];
/// 2026-12-04 00:00 UTC, so every record falls in one day as under a short load.
const START_UNIX_MS: u64 = 20_791 * 86_400_000;

fn main() {
    let count: u64 = std::env::var("CCO_BENCH_RECORDS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(200_000);
    let dir = tempfile::tempdir().expect("temporary directory");
    let system = actix::System::new();
    system.block_on(run(count, dir.path()));
}

async fn run(count: u64, path: &std::path::Path) {
    // The settings of ccod's own database, see `ccod::run`.
    let db = sled::Config::new()
        .path(path)
        .cache_capacity(DEFAULT_DB_CACHE_SIZE_MB * 1024 * 1024)
        .flush_every_ms(Some(500))
        .open()
        .expect("open sled");
    let actor = AnalyticsActor::new(&db, FLUSH_INTERVAL).expect("open the analytics store");
    let queue = actor.queue();
    let arbiter = actix::Arbiter::new();
    let addr = AnalyticsActor::start_in_arbiter(&arbiter.handle(), move |_| actor);
    let recorder = Recorder::new(queue, addr.clone());

    let started = Instant::now();
    let producer = std::thread::spawn(move || {
        for number in 0..count {
            recorder.submit(record(number));
        }
    });
    // Wait for the producer without blocking this thread's runtime.
    while !producer.is_finished() {
        actix_rt::time::sleep(Duration::from_millis(1)).await;
    }
    producer.join().expect("producer thread");
    let pushed = started.elapsed();
    let stats = addr
        .send(QueryStats(StatsQuery::default()))
        .await
        .expect("actor")
        .expect("stats");
    let elapsed = started.elapsed();
    assert_eq!(stats.total.requests, count, "records counted by the query");
    println!(
        "pushed {count} records in {:.3} s; all written and counted after {:.3} s \
         ({:.0} records/s)",
        pushed.as_secs_f64(),
        elapsed.as_secs_f64(),
        count as f64 / elapsed.as_secs_f64()
    );
    arbiter.stop();
    arbiter.join().expect("arbiter");
}

/// Builds record `number`: a priced Anthropic request a millisecond after the previous one.
fn record(number: u64) -> RequestRecord {
    let model = MODELS[(number % MODELS.len() as u64) as usize];
    RequestRecord {
        time_unix_ms: START_UNIX_MS + number,
        provider: "anthropic".to_owned(),
        method: "POST".to_owned(),
        path: "/v1/messages".to_owned(),
        model_requested: Some(model.to_owned()),
        model_response: Some(model.to_owned()),
        model_priced: Some(model.to_owned()),
        status: 200,
        outcome: Outcome::Completed,
        stream: number % 2 == 0,
        cache: CacheOutcome::Miss,
        latency_us: 1_500,
        ttfb_us: 700,
        tokens: TokenCounts {
            input: 100 + number % 900,
            output: 20 + number % 300,
            ..TokenCounts::default()
        },
        cost_nano_usd: Some(1_000 + number % 5_000),
        saved_nano_usd: None,
        credential: Some("0123456789ab".to_owned()),
        usage_missing: false,
        web_search_requests: 0,
        estimated: false,
        replayed: None,
        added_latency_us: 0,
    }
}
