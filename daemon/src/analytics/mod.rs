//! `AnalyticsActor`: owns the per-request usage records.
//!
//! State: the sled trees `records` and `rollups` (daily totals, see [`rollup`]), a buffer
//! of records not yet written, and counters since start. The proxy hands records over
//! through a [`Recorder`] (see [`intake`]), which wakes the actor at most once per
//! [`DRAIN_DELAY`]. Messages: [`Record`], [`Drain`], [`QueryStats`], [`QueryRepriced`],
//! [`Flush`], [`GetServed`], [`RenderMetrics`]. The buffer is written as one sled
//! transaction every flush interval, whenever [`MAX_BUFFERED`] records wait, before each
//! query and on [`Flush`], so the request path never waits on disk. The writes of each
//! interval, of [`Flush`] and of shutdown then flush sled to disk, so a crash loses at most
//! the records of the last interval and the drain delay.
//!
//! Keys are the record time in milliseconds followed by a sequence number, both big-endian,
//! so a time range is a key range. Values are JSON [`RequestRecord`]s.
//!
//! With analytics off ([`AnalyticsActor::metrics_only`]) the actor opens no tree. It counts
//! each record for `/metrics` and the served total, then drops it, and replies to stats
//! queries with `analytics_enabled` false.

mod intake;
mod query;
mod reprice;
mod rollup;
mod spend;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use cco_proto::{StatsQuery, StatsReply, TokenCounts, UsageTotals};
use serde::{Deserialize, Serialize};
use sled::transaction::TransactionError;
use sled::Transactional;
use tracing::{debug, error, info, warn};

use crate::pricing::PriceTable;
pub use intake::{Drain, Queue, Recorder, DRAIN_DELAY};
use query::Sums;
pub use reprice::reprice;

/// Buffered records that trigger a write before the interval ends.
const MAX_BUFFERED: usize = 1024;

/// Final state of a request.
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
    /// Refused because it could have taken a `[budgets]` limit past its amount; never sent
    /// upstream.
    BudgetRejected,
}

/// Cache result of a request, sent as the `x-cco-cache` header.
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
    /// Web searches that the upstream ran and billed. Written only when nonzero, like the
    /// fields below, so records without them keep the shape of earlier releases.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub web_search_requests: u64,
    /// Set when the cost is an estimate: the cache writes came without the split into
    /// 5-minute and 1-hour writes, so all of them were priced as 5-minute writes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub estimated: bool,
    /// On a cache hit, the usage of the replayed response, which `saved_nano_usd` prices.
    /// Records of hits from releases before it have none, so repricing keeps their savings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replayed: Option<ReplayedUsage>,
    /// Time the proxy itself spent on the request, for the `cco_added_latency_seconds`
    /// histogram. Not stored, so records keep their shape and a decoded record has 0.
    #[serde(skip)]
    pub added_latency_us: u64,
}

/// Usage of the original response that a cache hit replayed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayedUsage {
    pub tokens: TokenCounts,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub web_search_requests: u64,
}

fn is_zero(count: &u64) -> bool {
    *count == 0
}

impl RequestRecord {
    /// Returns true when this record belongs in a priced stats row: the request was priced,
    /// or its model has a price even though the usage to apply it to is missing.
    pub(crate) fn has_price(&self) -> bool {
        self.cost_nano_usd.is_some() || self.model_priced.is_some()
    }

    /// Returns the model that a stats row groups this record under.
    pub(crate) fn model_label(&self) -> String {
        self.model_priced
            .clone()
            .or_else(|| self.model_response.clone())
            .or_else(|| self.model_requested.clone())
            .unwrap_or_else(|| "(no model)".to_owned())
    }

    pub(crate) fn add_to(&self, totals: &mut UsageTotals) {
        totals.requests += 1;
        if self.cache == CacheOutcome::Hit {
            totals.cache_hits += 1;
        }
        if self.outcome == Outcome::RateLimited {
            totals.rate_limited += 1;
        }
        if self.outcome == Outcome::BudgetRejected {
            totals.budget_rejected += 1;
        }
        if !(200..300).contains(&self.status) || self.outcome == Outcome::UpstreamFailed {
            totals.errors += 1;
        }
        if self.estimated {
            totals.estimated_requests += 1;
        }
        totals.tokens.add(&self.tokens);
        totals.web_search_requests += self.web_search_requests;
        match self.cost_nano_usd {
            Some(cost) => totals.cost_nano_usd += cost,
            None if self.usage_missing => totals.streams_without_usage += 1,
            None => totals.unpriced_requests += 1,
        }
        totals.saved_nano_usd += self.saved_nano_usd.unwrap_or(0);
    }
}

/// Stores one record at once, without the queue of a [`Recorder`].
#[derive(Message)]
#[rtype(result = "()")]
pub struct Record(pub RequestRecord);

/// Totals over a time range; unwritten records are written first so they are included.
#[derive(Message)]
#[rtype(result = "Result<StatsReply, String>")]
pub struct QueryStats(pub StatsQuery);

/// Totals over a time range with every record's cost recomputed with `prices`. This reads
/// each record in the range, never the rollups, whose sums hold the stored costs.
#[derive(Message)]
#[rtype(result = "Result<StatsReply, String>")]
pub struct QueryRepriced {
    pub query: StatsQuery,
    pub prices: Arc<PriceTable>,
}

/// Writes the buffer and flushes sled; returns how many records were written.
#[derive(Message)]
#[rtype(result = "Result<usize, String>")]
pub struct Flush;

/// The Prometheus text of the counters since start, with the cache's figures and the
/// gauges supplied by the caller.
#[derive(Message)]
#[rtype(result = "String")]
pub struct RenderMetrics {
    pub cache: Option<cco_proto::CacheStatsReply>,
    pub gauges: crate::metrics::GaugeValues,
}

impl Handler<RenderMetrics> for AnalyticsActor {
    type Result = String;

    fn handle(&mut self, message: RenderMetrics, _: &mut Self::Context) -> String {
        self.drain();
        self.metrics.render(message.cache.as_ref(), message.gauges)
    }
}

/// Requests recorded since the daemon started.
#[derive(Message)]
#[rtype(result = "u64")]
pub struct GetServed;

pub struct AnalyticsActor {
    /// Trees that records are written to, or `None` when analytics are off.
    store: Option<Store>,
    /// Records not yet written; always empty when analytics are off.
    buffer: Vec<RequestRecord>,
    /// Records the workers queued and the actor has not taken yet.
    queue: Arc<Queue>,
    /// Spare vector swapped with the queue's, so neither allocates in steady state.
    spare: Vec<RequestRecord>,
    /// True while a drain is scheduled.
    drain_pending: bool,
    /// True when a write since the last flush to disk has not been flushed.
    unflushed: bool,
    next_sequence: u64,
    served: u64,
    flush_interval: Duration,
    metrics: crate::metrics::Metrics,
}

/// The sled trees of the analytics.
struct Store {
    tree: sled::Tree,
    /// Daily totals of `tree`, see [`rollup`].
    rollups: sled::Tree,
}

impl AnalyticsActor {
    /// Opens the actor over the trees `records` and `rollups` of `db`, continuing the key
    /// sequence of the records already there. Rollups missing beside existing records are
    /// rebuilt from them.
    pub fn new(db: &sled::Db, flush_interval: Duration) -> Result<Self, sled::Error> {
        let tree = db.open_tree("records")?;
        let rollups = db.open_tree("rollups")?;
        let next_sequence = match tree.last()? {
            Some((key, _)) if key.len() == 16 => {
                u64::from_be_bytes(key[8..16].try_into().expect("slice of 8 bytes")) + 1
            }
            _ => 0,
        };
        if rollups.is_empty() && !tree.is_empty() {
            rebuild_rollups(&tree, &rollups)?;
        }
        info!(
            actor = "analytics",
            records = tree.len(),
            rollups = rollups.len(),
            "opened analytics store"
        );
        Ok(Self {
            store: Some(Store { tree, rollups }),
            buffer: Vec::new(),
            queue: Arc::default(),
            spare: Vec::new(),
            drain_pending: false,
            unflushed: false,
            next_sequence,
            served: 0,
            flush_interval,
            metrics: crate::metrics::Metrics::default(),
        })
    }

    /// Creates the actor for analytics off: it counts records for `/metrics` and
    /// [`GetServed`] and writes nothing, so it needs no database.
    pub fn metrics_only() -> Self {
        Self {
            store: None,
            buffer: Vec::new(),
            queue: Arc::default(),
            spare: Vec::new(),
            drain_pending: false,
            unflushed: false,
            next_sequence: 0,
            served: 0,
            flush_interval: Duration::ZERO,
            metrics: crate::metrics::Metrics::default(),
        }
    }

    /// Returns the queue that a [`Recorder`] for this actor pushes into.
    pub fn queue(&self) -> Arc<Queue> {
        self.queue.clone()
    }

    /// Takes every queued record into the buffer, writing it when it is full.
    fn drain(&mut self) {
        self.queue.take_into(&mut self.spare);
        let mut taken = std::mem::take(&mut self.spare);
        for record in taken.drain(..) {
            self.accept(record);
        }
        self.spare = taken;
    }

    /// Counts `record` and, unless analytics are off, buffers it for the next write.
    fn accept(&mut self, record: RequestRecord) {
        self.served += 1;
        self.metrics.observe(&record);
        if self.store.is_none() {
            return;
        }
        self.buffer.push(record);
        if self.buffer.len() >= MAX_BUFFERED {
            // The write of the next interval flushes this one to disk.
            self.write_or_log(false);
        }
    }

    /// Writes the buffered records and adds them to their rollups in one transaction, so
    /// the two never disagree. When `sync` is true, then flushes sled to disk, also when
    /// the buffer is empty and only an earlier write with `sync` false is not flushed.
    fn write_buffer(&mut self, sync: bool) -> Result<usize, sled::Error> {
        let Some(store) = &self.store else {
            return Ok(0);
        };
        if self.buffer.is_empty() {
            if sync && self.unflushed {
                store.tree.flush()?;
                self.unflushed = false;
            }
            return Ok(0);
        }
        let mut records = Vec::with_capacity(self.buffer.len());
        for record in &self.buffer {
            let mut key = [0u8; 16];
            key[..8].copy_from_slice(&record.time_unix_ms.to_be_bytes());
            key[8..].copy_from_slice(&self.next_sequence.to_be_bytes());
            self.next_sequence += 1;
            let value = serde_json::to_vec(record).expect("records serialize to JSON");
            records.push((key, value));
        }
        let groups: Vec<(Vec<u8>, UsageTotals)> = rollup::sum_by_group(&self.buffer)
            .into_iter()
            .map(|(group, totals)| (group.key(), totals))
            .collect();
        (&store.tree, &store.rollups)
            .transaction(|(tree, rollups)| {
                for (key, value) in &records {
                    tree.insert(&key[..], value.as_slice())?;
                }
                for (key, added) in &groups {
                    let mut totals = match rollups.get(key)? {
                        Some(stored) => decode_rollup(&stored),
                        None => UsageTotals::default(),
                    };
                    rollup::add_totals(&mut totals, added);
                    let value = serde_json::to_vec(&totals).expect("totals serialize to JSON");
                    rollups.insert(key.as_slice(), value)?;
                }
                Ok(())
            })
            .map_err(|err: TransactionError<()>| match err {
                TransactionError::Storage(err) => err,
                TransactionError::Abort(()) => {
                    sled::Error::Unsupported("the analytics transaction aborted".to_owned())
                }
            })?;
        self.unflushed = true;
        if sync {
            store.tree.flush()?;
            self.unflushed = false;
        }
        let written = self.buffer.len();
        // The batch is stored now, so the records may leave memory.
        self.buffer.clear();
        debug!(actor = "analytics", written, "wrote analytics records");
        Ok(written)
    }

    fn write_or_log(&mut self, sync: bool) {
        if let Err(err) = self.write_buffer(sync) {
            // The records stay buffered and are retried at the next interval.
            error!(actor = "analytics", buffered = self.buffer.len(), error = %err,
                "cannot write analytics records");
        }
    }

    /// Writes the buffer and returns the totals over the query's range, repriced with
    /// `prices` when given. With analytics off, returns an empty reply with
    /// `analytics_enabled` false.
    fn query(
        &mut self,
        query: &StatsQuery,
        prices: Option<&PriceTable>,
    ) -> Result<StatsReply, String> {
        self.drain();
        self.write_buffer(false).map_err(|err| err.to_string())?;
        let Some(store) = &self.store else {
            return Ok(analytics_off_reply(query));
        };
        let reply = match prices {
            Some(prices) => store.repriced_stats(query, prices),
            None => store.stats(query),
        };
        reply.map_err(|err| err.to_string())
    }
}

/// Returns the reply to a stats query while analytics are off: no totals, no rows, and
/// `analytics_enabled` false, so that `ccoctl` prints that analytics are off instead of
/// showing zeros as if no request had been served.
fn analytics_off_reply(query: &StatsQuery) -> StatsReply {
    StatsReply {
        since_unix_ms: query.since_unix_ms,
        until_unix_ms: query.until_unix_ms,
        group_by: query.group_by,
        repriced: false,
        analytics_enabled: false,
        total: UsageTotals::default(),
        rows: Vec::new(),
        budgets: Vec::new(),
    }
}

impl Store {
    /// Totals over the query's range: whole days come from the rollups, and the partial
    /// days at either end from the records themselves.
    fn stats(&self, query: &StatsQuery) -> Result<StatsReply, sled::Error> {
        let since = query.since_unix_ms.unwrap_or(0);
        let until = query.until_unix_ms.unwrap_or(u64::MAX);
        let first_full_day = since.div_ceil(rollup::DAY_MS);
        let end_full_day = until / rollup::DAY_MS + u64::from(query.until_unix_ms.is_none());
        let mut sums = Sums::new(query.group_by);
        if first_full_day < end_full_day {
            let full_start = first_full_day.saturating_mul(rollup::DAY_MS);
            let full_end = end_full_day.saturating_mul(rollup::DAY_MS);
            self.add_records(since, full_start, None, &mut sums)?;
            self.add_rollups(first_full_day, end_full_day, &mut sums)?;
            if query.until_unix_ms.is_some() {
                self.add_records(full_end, until, None, &mut sums)?;
            }
        } else {
            self.add_records(since, until, None, &mut sums)?;
        }
        Ok(sums.into_reply(query, false))
    }

    /// Totals over the query's range from the records alone, each repriced with `prices`.
    fn repriced_stats(
        &self,
        query: &StatsQuery,
        prices: &PriceTable,
    ) -> Result<StatsReply, sled::Error> {
        let since = query.since_unix_ms.unwrap_or(0);
        let until = query.until_unix_ms.unwrap_or(u64::MAX);
        let mut sums = Sums::new(query.group_by);
        self.add_records(since, until, Some(prices), &mut sums)?;
        Ok(sums.into_reply(query, true))
    }

    /// Adds the records with `since <= time < until`, repriced with `prices` when given.
    fn add_records(
        &self,
        since: u64,
        until: u64,
        prices: Option<&PriceTable>,
        sums: &mut Sums,
    ) -> Result<(), sled::Error> {
        let mut undecodable = 0u64;
        for entry in self.tree.range(&since.to_be_bytes()[..]..) {
            let (key, value) = entry?;
            let time = u64::from_be_bytes(key[..8].try_into().unwrap_or([0; 8]));
            if time >= until {
                break;
            }
            let Ok(mut record) = serde_json::from_slice::<RequestRecord>(&value) else {
                undecodable += 1;
                continue;
            };
            if let Some(prices) = prices {
                reprice(&mut record, prices);
            }
            sums.add_record(&record);
        }
        if undecodable > 0 {
            warn!(
                actor = "analytics",
                undecodable, "skipped undecodable analytics records"
            );
        }
        Ok(())
    }

    /// Adds the rollups of the days `first_day <= day < end_day`.
    fn add_rollups(
        &self,
        first_day: u64,
        end_day: u64,
        sums: &mut Sums,
    ) -> Result<(), sled::Error> {
        let first = u32::try_from(first_day).unwrap_or(u32::MAX).to_be_bytes();
        for entry in self.rollups.range(&first[..]..) {
            let (key, value) = entry?;
            let Some(group) = rollup::RollupGroup::from_key(&key) else {
                warn!(actor = "analytics", key = %hex::encode(&key), "skipped an undecodable rollup key");
                continue;
            };
            if u64::from(group.day) >= end_day {
                break;
            }
            sums.add_rollup(&group, &decode_rollup(&value));
        }
        Ok(())
    }
}

/// Decodes a stored rollup. Only this actor writes them, so a value that does not decode
/// means a damaged database; it is logged and counted as empty.
fn decode_rollup(value: &[u8]) -> UsageTotals {
    serde_json::from_slice(value).unwrap_or_else(|err| {
        error!(actor = "analytics", error = %err, "skipped an undecodable rollup value");
        UsageTotals::default()
    })
}

/// Rebuilds every rollup from the records, for a store written before rollups existed.
fn rebuild_rollups(tree: &sled::Tree, rollups: &sled::Tree) -> Result<(), sled::Error> {
    let mut groups: HashMap<Vec<u8>, UsageTotals> = HashMap::new();
    for entry in tree.iter() {
        let (_, value) = entry?;
        if let Ok(record) = serde_json::from_slice::<RequestRecord>(&value) {
            let totals = groups
                .entry(rollup::RollupGroup::of(&record).key())
                .or_default();
            record.add_to(totals);
        }
    }
    let mut batch = sled::Batch::default();
    for (key, totals) in &groups {
        batch.insert(
            key.as_slice(),
            serde_json::to_vec(totals).expect("totals serialize to JSON"),
        );
    }
    rollups.apply_batch(batch)?;
    info!(
        actor = "analytics",
        rollups = groups.len(),
        "rebuilt analytics rollups"
    );
    Ok(())
}

impl Actor for AnalyticsActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if self.store.is_none() {
            // Nothing to write; queries, metrics and drains take the queue themselves.
            return;
        }
        ctx.run_interval(self.flush_interval, |actor, _| {
            actor.drain();
            actor.write_or_log(true);
        });
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.drain();
        self.write_or_log(true);
    }
}

impl Handler<Record> for AnalyticsActor {
    type Result = ();

    fn handle(&mut self, Record(record): Record, _: &mut Self::Context) {
        self.accept(record);
    }
}

impl Handler<Drain> for AnalyticsActor {
    type Result = ();

    fn handle(&mut self, _: Drain, ctx: &mut Self::Context) {
        if !self.drain_pending {
            self.drain_pending = true;
            ctx.run_later(DRAIN_DELAY, |actor, _| {
                actor.drain_pending = false;
                actor.drain();
            });
        }
    }
}

impl Handler<QueryStats> for AnalyticsActor {
    type Result = Result<StatsReply, String>;

    fn handle(&mut self, QueryStats(query): QueryStats, _: &mut Self::Context) -> Self::Result {
        self.query(&query, None)
    }
}

impl Handler<QueryRepriced> for AnalyticsActor {
    type Result = Result<StatsReply, String>;

    fn handle(&mut self, message: QueryRepriced, _: &mut Self::Context) -> Self::Result {
        self.query(&message.query, Some(&message.prices))
    }
}

impl Handler<Flush> for AnalyticsActor {
    type Result = Result<usize, String>;

    fn handle(&mut self, _: Flush, _: &mut Self::Context) -> Self::Result {
        self.drain();
        self.write_buffer(true).map_err(|err| err.to_string())
    }
}

impl Handler<GetServed> for AnalyticsActor {
    type Result = u64;

    fn handle(&mut self, _: GetServed, _: &mut Self::Context) -> u64 {
        self.drain();
        self.served
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cco_proto::GroupBy;

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
            web_search_requests: 0,
            estimated: false,
            replayed: None,
            added_latency_us: 0,
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

    #[test]
    fn added_latency_is_not_stored() {
        let mut record: RequestRecord = serde_json::from_str(RECORD_FIXTURE).unwrap();
        assert_eq!(record.added_latency_us, 0);
        record.added_latency_us = 42;
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
    /// Opens the database at `path`, waiting for a stopped actor's sled threads to let go
    /// of its lock.
    fn open_db(path: &std::path::Path) -> sled::Db {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            match sled::open(path) {
                Ok(db) => return db,
                Err(err) if std::time::Instant::now() > deadline => panic!("{err}"),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    fn start_on_arbiter(path: &std::path::Path) -> (Addr<AnalyticsActor>, Arbiter) {
        let db = open_db(path);
        let actor = AnalyticsActor::new(&db, Duration::from_secs(60)).unwrap();
        let arbiter = Arbiter::new();
        let addr = AnalyticsActor::start_in_arbiter(&arbiter.handle(), move |_| actor);
        (addr, arbiter)
    }

    #[actix::test]
    async fn recorder_records_reach_queries_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let db = open_db(dir.path());
        let actor = AnalyticsActor::new(&db, Duration::from_secs(60)).unwrap();
        let queue = actor.queue();
        let arbiter = Arbiter::new();
        let addr = AnalyticsActor::start_in_arbiter(&arbiter.handle(), move |_| actor);
        let recorder = Recorder::new(queue, addr.clone());
        for time in [1000, 2000, 3000] {
            recorder.submit(record(time, "m", Some(7), CacheOutcome::Miss));
        }
        // The query takes the queue itself rather than waiting for the drain delay.
        let stats = addr
            .send(QueryStats(StatsQuery::default()))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stats.total.requests, 3);
        assert_eq!(stats.total.cost_nano_usd, 3 * 7);
        assert_eq!(addr.send(GetServed).await.unwrap(), 3);
    }

    #[actix::test]
    async fn recorder_records_are_written_without_a_query() {
        let dir = tempfile::tempdir().unwrap();
        let db = open_db(dir.path());
        let flush_interval = Duration::from_millis(20);
        let actor = AnalyticsActor::new(&db, flush_interval).unwrap();
        let queue = actor.queue();
        let arbiter = Arbiter::new();
        let addr = AnalyticsActor::start_in_arbiter(&arbiter.handle(), move |_| actor);
        let recorder = Recorder::new(queue, addr);
        recorder.submit(record(1000, "m", Some(1), CacheOutcome::Miss));
        recorder.submit(record(2000, "m", Some(1), CacheOutcome::Miss));
        // No message reaches the actor: the drain it schedules and its flush interval alone
        // must bring both records to disk.
        let records = db.open_tree("records").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while records.len() < 2 && std::time::Instant::now() < deadline {
            actix_rt::time::sleep(DRAIN_DELAY).await;
        }
        assert_eq!(records.len(), 2);
        arbiter.stop();
        arbiter.join().unwrap();
    }

    #[actix::test]
    async fn metrics_only_counts_without_storing() {
        let actor = AnalyticsActor::metrics_only();
        let queue = actor.queue();
        let arbiter = Arbiter::new();
        let addr = AnalyticsActor::start_in_arbiter(&arbiter.handle(), move |_| actor);
        let recorder = Recorder::new(queue, addr.clone());
        for time in [1000, 2000, 3000] {
            recorder.submit(record(
                time,
                "claude-haiku-4-5",
                Some(7),
                CacheOutcome::Miss,
            ));
        }
        addr.send(Record(record(
            4000,
            "claude-haiku-4-5",
            None,
            CacheOutcome::Hit,
        )))
        .await
        .unwrap();

        assert_eq!(addr.send(GetServed).await.unwrap(), 4);
        let text = addr
            .send(RenderMetrics {
                cache: None,
                gauges: crate::metrics::GaugeValues::default(),
            })
            .await
            .unwrap();
        let miss = "cco_requests_total{provider=\"anthropic\",model=\"claude-haiku-4-5\",\
                    status=\"200\",cache=\"miss\"} 3\n";
        assert!(text.contains(miss), "{text}");

        let query = StatsQuery {
            since_unix_ms: Some(500),
            until_unix_ms: None,
            reprice: true,
            group_by: GroupBy::Day,
        };
        let stats = addr.send(QueryStats(query.clone())).await.unwrap().unwrap();
        assert!(!stats.analytics_enabled);
        assert_eq!(stats.total, UsageTotals::default());
        assert!(stats.rows.is_empty());
        assert_eq!(stats.since_unix_ms, Some(500));
        assert_eq!(stats.group_by, GroupBy::Day);
        let prices = Arc::new(PriceTable::embedded());
        let repriced = addr
            .send(QueryRepriced { query, prices })
            .await
            .unwrap()
            .unwrap();
        assert!(!repriced.analytics_enabled);
        assert!(!repriced.repriced);
        assert_eq!(addr.send(Flush).await.unwrap(), Ok(0));
        arbiter.stop();
        arbiter.join().unwrap();
    }

    #[test]
    fn metrics_only_has_no_spend() {
        let err = AnalyticsActor::metrics_only()
            .spend_since(0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("analytics are off"), "{err}");
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
        assert_eq!(stats.rows.len(), 2);
        assert_eq!(stats.rows[0].group, "claude-haiku-4-5");
        assert!(!stats.rows[1].priced);
    }

    /// Stats of `records` computed one by one, the reference for the rollup path.
    fn brute_force(records: &[RequestRecord], since: u64, until: u64) -> UsageTotals {
        let mut totals = UsageTotals::default();
        for record in records {
            if (since..until).contains(&record.time_unix_ms) {
                record.add_to(&mut totals);
            }
        }
        totals
    }

    #[actix::test]
    async fn rollups_match_record_scan() {
        let dir = tempfile::tempdir().unwrap();
        let (actor, _arbiter) = start_on_arbiter(dir.path());
        let day = rollup::DAY_MS;
        let mut records = Vec::new();
        // Three records a day, at 1 h, 12 h and 23 h, over five days from day 20,000.
        for index in 0..15u64 {
            let time =
                20_000 * day + (index / 3) * day + [1, 12, 23][(index % 3) as usize] * 3_600_000;
            let cost = (index % 4 != 0).then_some(100 + index);
            let cache = if index % 5 == 0 {
                CacheOutcome::Hit
            } else {
                CacheOutcome::Miss
            };
            let model = if index % 2 == 0 {
                "claude-haiku-4-5"
            } else {
                "claude-opus-4-1"
            };
            let record = record(time, model, cost, cache);
            actor.do_send(Record(record.clone()));
            records.push(record);
        }
        let first = 20_000 * day;
        let ranges = [
            (None, None),
            (Some(first), None),
            (
                Some(first + 6 * 3_600_000),
                Some(first + 3 * day + 13 * 3_600_000),
            ),
            (Some(first + day), Some(first + 3 * day)),
            (Some(first + 2 * 3_600_000), Some(first + 5 * 3_600_000)),
            (None, Some(first + 2 * day + 1)),
        ];
        for (since, until) in ranges {
            let expected = brute_force(&records, since.unwrap_or(0), until.unwrap_or(u64::MAX));
            for group_by in GroupBy::ALL {
                let query = StatsQuery {
                    since_unix_ms: since,
                    until_unix_ms: until,
                    group_by,
                    ..StatsQuery::default()
                };
                let stats = actor.send(QueryStats(query)).await.unwrap().unwrap();
                assert_eq!(stats.total, expected, "range {since:?}..{until:?}");
                assert_eq!(stats.group_by, group_by);
                let row_requests: u64 = stats.rows.iter().map(|row| row.totals.requests).sum();
                assert_eq!(
                    row_requests, expected.requests,
                    "{group_by:?} rows of {since:?}..{until:?}"
                );
            }
        }
    }

    #[test]
    fn size_triggered_write_is_flushed_at_interval() {
        let dir = tempfile::tempdir().unwrap();
        let db = open_db(dir.path());
        let mut actor = AnalyticsActor::new(&db, Duration::from_secs(60)).unwrap();
        for index in 0..MAX_BUFFERED as u64 {
            actor.accept(record(1000 + index, "m", Some(1), CacheOutcome::Miss));
        }
        assert!(actor.buffer.is_empty(), "a full buffer is written");
        assert!(actor.unflushed, "a write of a full buffer is not flushed");
        assert_eq!(db.open_tree("records").unwrap().len(), MAX_BUFFERED);
        // The interval's write has no records of its own and still flushes those.
        assert_eq!(actor.write_buffer(true).unwrap(), 0);
        assert!(!actor.unflushed);
    }

    #[actix::test]
    async fn missing_rollups_are_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let (actor, arbiter) = start_on_arbiter(dir.path());
        for time in [1000, 2000, 3000] {
            actor.do_send(Record(record(time, "m", Some(5), CacheOutcome::Miss)));
        }
        actor.send(Flush).await.unwrap().unwrap();
        arbiter.stop();
        arbiter.join().unwrap();

        let db = open_db(dir.path());
        db.open_tree("rollups").unwrap().clear().unwrap();
        drop(db);
        let (actor, _arbiter) = start_on_arbiter(dir.path());
        let stats = actor
            .send(QueryStats(StatsQuery::default()))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stats.total.requests, 3);
        assert_eq!(stats.total.cost_nano_usd, 15);
    }

    #[actix::test]
    async fn stats_filter_time_range() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let actor = AnalyticsActor::new(&db, Duration::from_secs(60))
            .unwrap()
            .start();
        for time in [1000, 2000, 3000, 4000] {
            actor.do_send(Record(record(time, "m", Some(1), CacheOutcome::Miss)));
        }
        let query = StatsQuery {
            since_unix_ms: Some(2000),
            until_unix_ms: Some(4000),
            ..StatsQuery::default()
        };
        let stats = actor.send(QueryStats(query)).await.unwrap().unwrap();
        assert_eq!(stats.total.requests, 2);
    }

    /// A stored record with the fields added for web searches, estimates and replays.
    const PRICING_FIELDS_FIXTURE: &str = r#"{"time_unix_ms":1764806400000,"provider":"anthropic","method":"POST","path":"/v1/messages","model_requested":"claude-sonnet-4-5","model_response":"claude-sonnet-4-5","model_priced":"claude-sonnet-4-5","status":200,"outcome":"completed","stream":false,"cache":"hit","latency_us":900,"ttfb_us":100,"tokens":{"input":0,"output":0,"cache_write_5m":0,"cache_write_1h":0,"cache_read":0},"cost_nano_usd":0,"saved_nano_usd":10030000,"credential":"0123456789ab","web_search_requests":2,"estimated":true,"replayed":{"tokens":{"input":10,"output":0,"cache_write_5m":0,"cache_write_1h":0,"cache_read":0},"web_search_requests":1}}"#;

    #[test]
    fn pricing_fields_fixture_decodes() {
        let record: RequestRecord = serde_json::from_str(PRICING_FIELDS_FIXTURE).unwrap();
        assert_eq!(record.web_search_requests, 2);
        assert!(record.estimated);
        assert_eq!(record.replayed.unwrap().web_search_requests, 1);
        assert_eq!(
            serde_json::to_string(&record).unwrap(),
            PRICING_FIELDS_FIXTURE
        );
        let mut totals = UsageTotals::default();
        record.add_to(&mut totals);
        assert_eq!(totals.web_search_requests, 2);
        assert_eq!(totals.estimated_requests, 1);
    }

    /// Returns the embedded table with claude-haiku-4-5 at $2 input and $4 per 1,000
    /// searches.
    fn override_table() -> PriceTable {
        let mut table = PriceTable::embedded();
        let row = r#"
            [[models]]
            id = "claude-haiku-4-5"
            provider = "anthropic"
            input = "2"
            output = "5"
            cache_write_5m = "1.25"
            cache_write_1h = "2"
            cache_read = "0.10"
            web_search_per_1000 = "4"
        "#;
        table.merge(PriceTable::from_toml(row, crate::pricing::SOURCE_CONFIG).unwrap());
        table
    }

    #[test]
    fn reprice_applies_current_rates() {
        let table = override_table();
        let haiku = "claude-haiku-4-5";

        // 10 in * 2000 + 5 out * 5000 + 1 search * 4_000_000 = 20_000 + 25_000 + 4_000_000
        let mut miss = record(1000, haiku, Some(1), CacheOutcome::Miss);
        miss.web_search_requests = 1;
        reprice(&mut miss, &table);
        assert_eq!(miss.cost_nano_usd, Some(4_045_000));
        assert_eq!(miss.model_priced.as_deref(), Some(haiku));

        // The hit replayed 100 input tokens: 100 * 2000 = 200_000 saved, and it costs 0.
        let mut hit = record(2000, haiku, Some(0), CacheOutcome::Hit);
        hit.tokens = TokenCounts::default();
        hit.replayed = Some(ReplayedUsage {
            tokens: TokenCounts {
                input: 100,
                ..TokenCounts::default()
            },
            web_search_requests: 0,
        });
        reprice(&mut hit, &table);
        assert_eq!(hit.cost_nano_usd, Some(0));
        assert_eq!(hit.saved_nano_usd, Some(200_000));

        let mut old_hit = record(3000, haiku, Some(0), CacheOutcome::Hit);
        old_hit.saved_nano_usd = Some(77);
        reprice(&mut old_hit, &table);
        assert_eq!(
            old_hit.saved_nano_usd,
            Some(77),
            "no replayed usage to reprice"
        );

        let mut missing = record(4000, haiku, None, CacheOutcome::Miss);
        missing.usage_missing = true;
        reprice(&mut missing, &table);
        assert_eq!(missing.cost_nano_usd, None, "unknown usage stays unknown");

        let mut unknown = record(5000, "mystery-model", None, CacheOutcome::Miss);
        reprice(&mut unknown, &table);
        assert_eq!(unknown.cost_nano_usd, None);
        assert!(!unknown.has_price());
    }

    #[actix::test]
    async fn repriced_query_reads_records() {
        let dir = tempfile::tempdir().unwrap();
        let (actor, _arbiter) = start_on_arbiter(dir.path());
        // Stored at the embedded rate: 10 in * 1000 + 5 out * 5000 = 35_000.
        actor.do_send(Record(record(
            1000,
            "claude-haiku-4-5",
            Some(35_000),
            CacheOutcome::Miss,
        )));
        let plain = actor
            .send(QueryStats(StatsQuery::default()))
            .await
            .unwrap()
            .unwrap();
        let repriced = actor
            .send(QueryRepriced {
                query: StatsQuery::default(),
                prices: Arc::new(override_table()),
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(plain.total.cost_nano_usd, 35_000);
        assert!(!plain.repriced);
        // 10 in * 2000 + 5 out * 5000 = 45_000
        assert_eq!(repriced.total.cost_nano_usd, 45_000);
        assert!(repriced.repriced);
    }

    #[actix::test]
    async fn rows_group_by_day_provider_credential() {
        let dir = tempfile::tempdir().unwrap();
        let (actor, _arbiter) = start_on_arbiter(dir.path());
        let day = rollup::DAY_MS;
        // Day 20_425 is 2025-12-03.
        let mut first = record(20_425 * day + 5, "m", Some(10), CacheOutcome::Miss);
        first.credential = None;
        let mut second = record(20_426 * day + 5, "m", Some(20), CacheOutcome::Miss);
        second.provider = "openai".into();
        let unpriced = record(20_426 * day + 6, "mystery-model", None, CacheOutcome::Miss);
        for record in [first, second, unpriced] {
            actor.do_send(Record(record));
        }
        let rows = |group_by| {
            let actor = actor.clone();
            async move {
                let query = StatsQuery {
                    group_by,
                    ..StatsQuery::default()
                };
                let stats = actor.send(QueryStats(query)).await.unwrap().unwrap();
                stats
                    .rows
                    .into_iter()
                    .map(|row| (row.group, row.priced, row.totals.cost_nano_usd))
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(
            rows(GroupBy::Day).await,
            [
                ("2025-12-03".to_owned(), true, 10),
                ("2025-12-04".to_owned(), true, 20),
                ("2025-12-04".to_owned(), false, 0),
            ]
        );
        assert_eq!(
            rows(GroupBy::Provider).await,
            [
                ("openai".to_owned(), true, 20),
                ("anthropic".to_owned(), true, 10),
                ("anthropic".to_owned(), false, 0),
            ]
        );
        assert_eq!(
            rows(GroupBy::Credential).await,
            [
                ("0123456789ab".to_owned(), true, 20),
                ("(none)".to_owned(), true, 10),
                ("0123456789ab".to_owned(), false, 0),
            ]
        );
    }
}
