//! `AnalyticsActor`: owns the per-request usage records.
//!
//! State: the sled tree `records`, a buffer of records not yet written, and counters since
//! start. Messages: [`Record`] (fire-and-forget from the proxy), [`QueryStats`], [`Flush`],
//! [`GetServed`]. The buffer is written as one sled batch every flush interval and on
//! [`Flush`], so the request path never waits on disk; after each batch the tree is
//! flushed, so a crash loses at most the records of the last interval.
//!
//! Keys are the record time in milliseconds followed by a sequence number, both big-endian,
//! so a time range is a key range. Values are JSON [`RequestRecord`]s.

use std::collections::HashMap;
use std::time::Duration;

use actix::prelude::*;
use cco_proto::{ModelTotals, StatsQuery, StatsReply, TokenCounts, UsageTotals};
use serde::{Deserialize, Serialize};
use tracing::{debug, error, info, warn};

/// Buffered records that trigger a write before the interval ends.
const MAX_BUFFERED: usize = 1024;

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The whole response reached the client.
    Completed,
    /// The client went away before the response ended.
    ClientDisconnected,
    /// The upstream could not be reached, timed out, or cut its response.
    UpstreamFailed,
    /// Refused by the proxy's rate limit; never sent upstream.
    RateLimited,
}

/// What the cache did for a request; the value of the `x-cco-cache` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheOutcome {
    Hit,
    Miss,
    Bypass,
}

impl CacheOutcome {
    pub fn as_header_value(self) -> &'static str {
        match self {
            CacheOutcome::Hit => "hit",
            CacheOutcome::Miss => "miss",
            CacheOutcome::Bypass => "bypass",
        }
    }
}

/// One request as stored. A fixture test pins this JSON shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRecord {
    pub time_unix_ms: u64,
    pub provider: String,
    pub method: String,
    /// Path without the query string.
    pub path: String,
    pub model_requested: Option<String>,
    /// Model id from the response.
    pub model_response: Option<String>,
    /// Id of the price table row that priced the request.
    pub model_priced: Option<String>,
    /// HTTP status sent to the client.
    pub status: u16,
    pub outcome: Outcome,
    pub stream: bool,
    pub cache: CacheOutcome,
    pub latency_us: u64,
    /// Time until the first response byte from the upstream, or from the cache on a hit.
    pub ttfb_us: u64,
    /// Tokens billed by the upstream; zero on a cache hit.
    pub tokens: TokenCounts,
    /// Cost in nano-USD; `None` when the model has no price or the usage is missing.
    pub cost_nano_usd: Option<u64>,
    /// On a cache hit, the price of the replayed response; `None` when it had no price.
    pub saved_nano_usd: Option<u64>,
    /// First 12 hex digits of the credential's SHA-256, never the credential.
    pub credential: Option<String>,
    /// Set for a 2xx event stream of an endpoint that reports usage when the stream carried
    /// none, so its tokens and cost are unknown. Written only when set, so records of
    /// earlier releases keep their shape.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub usage_missing: bool,
}

impl RequestRecord {
    /// The model a stats row groups this record under.
    /// Returns true when this record belongs in a priced stats row: the request was priced,
    /// or its model has a price even though the usage to apply it to is missing.
    fn has_price(&self) -> bool {
        self.cost_nano_usd.is_some() || self.model_priced.is_some()
    }

    fn model_label(&self) -> String {
        self.model_priced
            .clone()
            .or_else(|| self.model_response.clone())
            .or_else(|| self.model_requested.clone())
            .unwrap_or_else(|| "(no model)".to_owned())
    }

    fn add_to(&self, totals: &mut UsageTotals) {
        totals.requests += 1;
        if self.cache == CacheOutcome::Hit {
            totals.cache_hits += 1;
        }
        if self.outcome == Outcome::RateLimited {
            totals.rate_limited += 1;
        }
        if !(200..300).contains(&self.status) || self.outcome == Outcome::UpstreamFailed {
            totals.errors += 1;
        }
        totals.tokens.add(&self.tokens);
        match self.cost_nano_usd {
            Some(cost) => totals.cost_nano_usd += cost,
            None if self.usage_missing => totals.streams_without_usage += 1,
            None => totals.unpriced_requests += 1,
        }
        totals.saved_nano_usd += self.saved_nano_usd.unwrap_or(0);
    }
}

/// Stores one record; sent with `do_send`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Record(pub RequestRecord);

/// Totals over a time range; unwritten records are written first so they are included.
#[derive(Message)]
#[rtype(result = "Result<StatsReply, String>")]
pub struct QueryStats(pub StatsQuery);

/// Writes the buffer and flushes sled; returns how many records were written.
#[derive(Message)]
#[rtype(result = "Result<usize, String>")]
pub struct Flush;

/// Requests recorded since the daemon started.
#[derive(Message)]
#[rtype(result = "u64")]
pub struct GetServed;

pub struct AnalyticsActor {
    tree: sled::Tree,
    buffer: Vec<RequestRecord>,
    next_sequence: u64,
    served: u64,
    flush_interval: Duration,
}

impl AnalyticsActor {
    /// Opens the actor over `tree`, continuing the key sequence of the records already there.
    pub fn new(tree: sled::Tree, flush_interval: Duration) -> Result<Self, sled::Error> {
        let next_sequence = match tree.last()? {
            Some((key, _)) if key.len() == 16 => {
                u64::from_be_bytes(key[8..16].try_into().expect("slice of 8 bytes")) + 1
            }
            _ => 0,
        };
        info!(
            actor = "analytics",
            records = tree.len(),
            "opened analytics store"
        );
        Ok(Self {
            tree,
            buffer: Vec::new(),
            next_sequence,
            served: 0,
            flush_interval,
        })
    }

    fn write_buffer(&mut self) -> Result<usize, sled::Error> {
        if self.buffer.is_empty() {
            return Ok(0);
        }
        let mut batch = sled::Batch::default();
        for record in &self.buffer {
            let mut key = [0u8; 16];
            key[..8].copy_from_slice(&record.time_unix_ms.to_be_bytes());
            key[8..].copy_from_slice(&self.next_sequence.to_be_bytes());
            self.next_sequence += 1;
            let value = serde_json::to_vec(record).expect("records serialize to JSON");
            batch.insert(&key[..], value);
        }
        self.tree.apply_batch(batch)?;
        self.tree.flush()?;
        let written = self.buffer.len();
        // The batch is durable now; only then may the records leave memory.
        self.buffer.clear();
        debug!(actor = "analytics", written, "wrote analytics records");
        Ok(written)
    }

    fn write_or_log(&mut self) {
        if let Err(err) = self.write_buffer() {
            // The records stay buffered and are retried at the next interval.
            error!(actor = "analytics", buffered = self.buffer.len(), error = %err,
                "cannot write analytics records");
        }
    }

    fn stats(&self, query: &StatsQuery) -> Result<StatsReply, sled::Error> {
        let start = query.since_unix_ms.unwrap_or(0).to_be_bytes();
        let mut total = UsageTotals::default();
        let mut by_model: HashMap<(String, bool), UsageTotals> = HashMap::new();
        let mut undecodable = 0u64;
        for entry in self.tree.range(&start[..]..) {
            let (key, value) = entry?;
            let time = u64::from_be_bytes(key[..8].try_into().unwrap_or([0; 8]));
            if query.until_unix_ms.is_some_and(|until| time >= until) {
                break;
            }
            let Ok(record) = serde_json::from_slice::<RequestRecord>(&value) else {
                undecodable += 1;
                continue;
            };
            record.add_to(&mut total);
            let priced = record.has_price();
            record.add_to(by_model.entry((record.model_label(), priced)).or_default());
        }
        if undecodable > 0 {
            warn!(
                actor = "analytics",
                undecodable, "skipped undecodable analytics records"
            );
        }
        let mut rows: Vec<ModelTotals> = by_model
            .into_iter()
            .map(|((model, priced), totals)| ModelTotals {
                model,
                priced,
                totals,
            })
            .collect();
        rows.sort_by(|a, b| {
            b.totals
                .cost_nano_usd
                .cmp(&a.totals.cost_nano_usd)
                .then_with(|| a.model.cmp(&b.model))
        });
        Ok(StatsReply {
            since_unix_ms: query.since_unix_ms,
            until_unix_ms: query.until_unix_ms,
            total,
            by_model: rows,
        })
    }
}

impl Actor for AnalyticsActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.flush_interval, |actor, _| actor.write_or_log());
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.write_or_log();
    }
}

impl Handler<Record> for AnalyticsActor {
    type Result = ();

    fn handle(&mut self, Record(record): Record, _: &mut Self::Context) {
        self.served += 1;
        self.buffer.push(record);
        if self.buffer.len() >= MAX_BUFFERED {
            self.write_or_log();
        }
    }
}

impl Handler<QueryStats> for AnalyticsActor {
    type Result = Result<StatsReply, String>;

    fn handle(&mut self, QueryStats(query): QueryStats, _: &mut Self::Context) -> Self::Result {
        self.write_buffer().map_err(|err| err.to_string())?;
        self.stats(&query).map_err(|err| err.to_string())
    }
}

impl Handler<Flush> for AnalyticsActor {
    type Result = Result<usize, String>;

    fn handle(&mut self, _: Flush, _: &mut Self::Context) -> Self::Result {
        self.write_buffer().map_err(|err| err.to_string())
    }
}

impl Handler<GetServed> for AnalyticsActor {
    type Result = u64;

    fn handle(&mut self, _: GetServed, _: &mut Self::Context) -> u64 {
        self.served
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(time: u64, model: &str, cost: Option<u64>, cache: CacheOutcome) -> RequestRecord {
        RequestRecord {
            time_unix_ms: time,
            provider: "anthropic".into(),
            method: "POST".into(),
            path: "/v1/messages".into(),
            model_requested: Some(model.into()),
            model_response: Some(model.into()),
            model_priced: cost.map(|_| model.to_owned()),
            status: 200,
            outcome: Outcome::Completed,
            stream: false,
            cache,
            latency_us: 1500,
            ttfb_us: 700,
            tokens: TokenCounts {
                input: 10,
                output: 5,
                ..TokenCounts::default()
            },
            cost_nano_usd: cost,
            saved_nano_usd: None,
            credential: Some("0123456789ab".into()),
            usage_missing: false,
        }
    }

    /// A stored record of the first release; later releases must still decode it.
    const RECORD_FIXTURE: &str = r#"{"time_unix_ms":1764806400000,"provider":"anthropic","method":"POST","path":"/v1/messages","model_requested":"claude-sonnet-4-5","model_response":"claude-sonnet-4-5-20250929","model_priced":"claude-sonnet-4-5","status":200,"outcome":"completed","stream":true,"cache":"miss","latency_us":812345,"ttfb_us":120000,"tokens":{"input":10,"output":20,"cache_write_5m":30,"cache_write_1h":40,"cache_read":50},"cost_nano_usd":123456,"saved_nano_usd":null,"credential":"0123456789ab"}"#;

    #[test]
    fn record_fixture_decodes() {
        let record: RequestRecord = serde_json::from_str(RECORD_FIXTURE).unwrap();
        assert_eq!(record.tokens.cache_write_1h, 40);
        assert_eq!(record.cost_nano_usd, Some(123_456));
        assert_eq!(serde_json::to_string(&record).unwrap(), RECORD_FIXTURE);
    }

    /// A stored record of an OpenAI stream without usage.
    const USAGE_MISSING_FIXTURE: &str = r#"{"time_unix_ms":1764806400000,"provider":"openai","method":"POST","path":"/v1/chat/completions","model_requested":"gpt-4o","model_response":"gpt-4o-2024-08-06","model_priced":"gpt-4o","status":200,"outcome":"completed","stream":true,"cache":"miss","latency_us":5000,"ttfb_us":900,"tokens":{"input":0,"output":0,"cache_write_5m":0,"cache_write_1h":0,"cache_read":0},"cost_nano_usd":null,"saved_nano_usd":null,"credential":null,"usage_missing":true}"#;

    #[test]
    fn usage_missing_fixture_decodes() {
        let record: RequestRecord = serde_json::from_str(USAGE_MISSING_FIXTURE).unwrap();
        assert!(record.usage_missing);
        assert_eq!(record.provider, "openai");
        assert_eq!(
            serde_json::to_string(&record).unwrap(),
            USAGE_MISSING_FIXTURE
        );
        let old: RequestRecord = serde_json::from_str(RECORD_FIXTURE).unwrap();
        assert!(!old.usage_missing);
    }

    #[test]
    fn usage_missing_counts_apart() {
        let mut missing = record(1000, "gpt-4o", None, CacheOutcome::Miss);
        missing.model_priced = Some("gpt-4o".into());
        missing.usage_missing = true;
        let unpriced = record(2000, "mystery-model", None, CacheOutcome::Miss);
        let mut totals = UsageTotals::default();
        missing.add_to(&mut totals);
        unpriced.add_to(&mut totals);
        assert_eq!(totals.streams_without_usage, 1);
        assert_eq!(totals.unpriced_requests, 1);
        assert_eq!(totals.cost_nano_usd, 0);
        assert!(missing.has_price());
        assert!(!unpriced.has_price());
    }

    /// Starts the actor on its own arbiter, as the daemon does, so that stopping the
    /// arbiter releases the tree.
    fn start_on_arbiter(path: &std::path::Path) -> (Addr<AnalyticsActor>, Arbiter) {
        let db = sled::open(path).unwrap();
        let actor =
            AnalyticsActor::new(db.open_tree("records").unwrap(), Duration::from_secs(60)).unwrap();
        let arbiter = Arbiter::new();
        let addr = AnalyticsActor::start_in_arbiter(&arbiter.handle(), move |_| actor);
        (addr, arbiter)
    }

    #[actix::test]
    async fn stats_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (actor, arbiter) = start_on_arbiter(dir.path());
        actor.do_send(Record(record(
            1000,
            "claude-haiku-4-5",
            Some(700),
            CacheOutcome::Miss,
        )));
        actor.do_send(Record(record(
            2000,
            "mystery-model",
            None,
            CacheOutcome::Miss,
        )));
        actor.send(Flush).await.unwrap().unwrap();
        arbiter.stop();
        arbiter.join().unwrap();

        let (actor, _arbiter) = start_on_arbiter(dir.path());
        actor.do_send(Record(record(
            3000,
            "claude-haiku-4-5",
            Some(300),
            CacheOutcome::Hit,
        )));
        let stats = actor
            .send(QueryStats(StatsQuery::default()))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stats.total.requests, 3);
        assert_eq!(stats.total.cache_hits, 1);
        assert_eq!(stats.total.unpriced_requests, 1);
        assert_eq!(stats.total.cost_nano_usd, 1000);
        assert_eq!(stats.total.tokens.input, 30);
        assert_eq!(stats.by_model.len(), 2);
        assert_eq!(stats.by_model[0].model, "claude-haiku-4-5");
        assert!(!stats.by_model[1].priced);
    }

    #[actix::test]
    async fn stats_filter_time_range() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let actor = AnalyticsActor::new(db.open_tree("records").unwrap(), Duration::from_secs(60))
            .unwrap()
            .start();
        for time in [1000, 2000, 3000, 4000] {
            actor.do_send(Record(record(time, "m", Some(1), CacheOutcome::Miss)));
        }
        let query = StatsQuery {
            since_unix_ms: Some(2000),
            until_unix_ms: Some(4000),
        };
        let stats = actor.send(QueryStats(query)).await.unwrap().unwrap();
        assert_eq!(stats.total.requests, 2);
    }
}
