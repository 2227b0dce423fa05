//! Times a stats query over one million records, from the daily rollups and from a scan of
//! every record, the path that `ccoctl stats --reprice` takes.
//!
//! The records go through the analytics actor's own write path (`Record` messages, batched
//! writes with their rollups) into a sled database in a temporary directory. Run it with
//! `cargo bench -p ccod --bench stats`; `CCO_BENCH_RECORDS` sets another record count, and
//! `CCO_BENCH_DB_CACHE_SIZE` sled's page cache in MB (default: ccod's `db_cache_size`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Actor;
use cco_proto::{StatsQuery, StatsReply, TokenCounts};
use ccod::analytics::{
    AnalyticsActor, CacheOutcome, Flush, Outcome, QueryRepriced, QueryStats, Record, RequestRecord,
};
use ccod::config::DEFAULT_DB_CACHE_SIZE_MB;
use ccod::pricing::PriceTable;

/// Records sent between two waits for the actor, so the mailbox stays small.
const CHUNK: u64 = 10_000;
/// Days the records spread over, ending on 2026-12-01.
const DAYS: u64 = 30;
const LAST_DAY: u64 = 20_788;
const MODELS: [&str; 4] = [
    "claude-sonnet-4-5",
    "claude-haiku-4-5",
    "claude-opus-4-5",
    "claude-imaginary-9",
];
const CREDENTIALS: [&str; 3] = ["0123456789ab", "fedcba987654", "a1b2c3d4e5f6"];
/// Times each query runs; the report gives the fastest and the slowest.
const RUNS: usize = 5;

fn main() {
    let count: u64 = std::env::var("CCO_BENCH_RECORDS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(1_000_000);
    let db_cache_mb: u64 = std::env::var("CCO_BENCH_DB_CACHE_SIZE")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(DEFAULT_DB_CACHE_SIZE_MB);
    let dir = tempfile::tempdir().expect("temporary directory");
    let system = actix::System::new();
    system.block_on(run(count, db_cache_mb, dir.path()));
}

async fn run(count: u64, db_cache_mb: u64, path: &std::path::Path) {
    let prices = Arc::new(PriceTable::embedded());
    // Opened with the page cache that ccod gives sled, so the scan reads from disk as it
    // would in the daemon once the records outgrow the cache.
    println!("sled page cache: {db_cache_mb} MB");
    let db = sled::Config::new()
        .path(path)
        .cache_capacity(db_cache_mb * 1024 * 1024)
        .open()
        .expect("open sled");
    let actor = AnalyticsActor::new(&db, Duration::from_secs(3600))
        .expect("open the analytics store")
        .start();

    let started = Instant::now();
    let mut index = 0;
    while index < count {
        let end = (index + CHUNK).min(count);
        for number in index..end {
            actor.do_send(Record(record(number, count, &prices)));
        }
        actor.send(Flush).await.expect("actor").expect("flush");
        index = end;
    }
    let written = started.elapsed();
    println!(
        "stored {count} records in {:.1} s ({:.0} records/s)",
        written.as_secs_f64(),
        count as f64 / written.as_secs_f64()
    );

    let (rollup_times, from_rollups) = time_runs(|| {
        let actor = actor.clone();
        async move {
            let query = StatsQuery::default();
            actor
                .send(QueryStats(query))
                .await
                .expect("actor")
                .expect("stats")
        }
    })
    .await;
    let (scan_times, from_scan) = time_runs(|| {
        let actor = actor.clone();
        let prices = prices.clone();
        async move {
            let message = QueryRepriced {
                query: StatsQuery::default(),
                prices,
            };
            actor.send(message).await.expect("actor").expect("stats")
        }
    })
    .await;

    assert_eq!(from_rollups.total.requests, count, "requests from rollups");
    // Repricing with the table that priced the records changes nothing.
    assert_eq!(
        from_scan.total, from_rollups.total,
        "scan and rollups agree"
    );
    report("totals from rollups", &rollup_times);
    report("totals from a record scan (repriced)", &scan_times);
    println!(
        "rows: {}, cost: {} nano-USD",
        from_rollups.rows.len(),
        from_rollups.total.cost_nano_usd
    );
    actix::System::current().stop();
}

/// Runs `query` [`RUNS`] times and returns the durations and the last reply.
async fn time_runs<F, Fut>(query: F) -> (Vec<Duration>, StatsReply)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = StatsReply>,
{
    let mut times = Vec::with_capacity(RUNS);
    let mut reply = None;
    for _ in 0..RUNS {
        let started = Instant::now();
        reply = Some(query().await);
        times.push(started.elapsed());
    }
    (times, reply.expect("at least one run"))
}

fn report(label: &str, times: &[Duration]) {
    let fastest = times.iter().min().expect("runs");
    let slowest = times.iter().max().expect("runs");
    println!(
        "{label}: fastest {:.3} ms, slowest {:.3} ms over {} runs",
        fastest.as_secs_f64() * 1000.0,
        slowest.as_secs_f64() * 1000.0,
        times.len()
    );
}

/// Builds record `number` of `count`, spread evenly over [`DAYS`] days and priced with
/// `prices` as the proxy would price it.
fn record(number: u64, count: u64, prices: &PriceTable) -> RequestRecord {
    let span_ms = DAYS * 86_400_000;
    let time_unix_ms = (LAST_DAY + 1 - DAYS) * 86_400_000 + number * span_ms / count;
    let model = MODELS[(number % MODELS.len() as u64) as usize];
    let tokens = TokenCounts {
        input: 100 + number % 900,
        output: 20 + number % 300,
        cache_write_5m: number % 7 * 100,
        cache_write_1h: 0,
        cache_read: number % 5 * 1000,
    };
    let (model_priced, cost_nano_usd) = prices.price_request("anthropic", Some(model), &tokens, 0);
    RequestRecord {
        time_unix_ms,
        provider: "anthropic".to_owned(),
        method: "POST".to_owned(),
        path: "/v1/messages".to_owned(),
        model_requested: Some(model.to_owned()),
        model_response: Some(model.to_owned()),
        model_priced,
        status: 200,
        outcome: Outcome::Completed,
        stream: number % 2 == 0,
        cache: CacheOutcome::Miss,
        latency_us: 800_000,
        ttfb_us: 120_000,
        tokens,
        cost_nano_usd,
        saved_nano_usd: None,
        credential: Some(CREDENTIALS[(number % 3) as usize].to_owned()),
        usage_missing: false,
        web_search_requests: 0,
        estimated: false,
        replayed: None,
        added_latency_us: 0,
    }
}
