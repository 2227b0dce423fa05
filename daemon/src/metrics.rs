//! Prometheus metrics, served as text format 0.0.4 at `GET /metrics` on the proxy port.
//!
//! The counters and histograms are folded from the analytics records by the
//! `AnalyticsActor`, which already receives one per request, so the request path pays
//! nothing for them. Cache figures come from the `CacheActor`, and the gauges of requests,
//! streams and connections from atomics that guards update. All counters start at zero when
//! the daemon starts.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use cco_proto::{BudgetStatus, CacheStatsReply};

use crate::analytics::RequestRecord;

/// Upper bounds of the latency histogram buckets, in seconds. LLM responses take from
/// milliseconds (cache hits) to minutes (long generations).
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0,
];

/// Upper bounds of the added-latency histogram buckets, in seconds. The proxy's own work
/// on a request takes tens of microseconds, so the buckets start at 25 µs.
const ADDED_LATENCY_BUCKETS: &[f64] = &[
    0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
];

/// A cumulative histogram with fixed bucket bounds in seconds.
#[derive(Debug, Clone)]
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum_seconds: f64,
    total: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: vec![0; bounds.len()],
            sum_seconds: 0.0,
            total: 0,
        }
    }

    fn observe(&mut self, seconds: f64) {
        for (bound, count) in self.bounds.iter().zip(&mut self.counts) {
            if seconds <= *bound {
                *count += 1;
            }
        }
        self.sum_seconds += seconds;
        self.total += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let separator = if labels.is_empty() { "" } else { "," };
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{separator}le=\"{bound}\"}} {count}"
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{separator}le=\"+Inf\"}} {}",
            self.total
        );
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum_seconds);
        let _ = writeln!(out, "{name}_count{braces} {}", self.total);
    }
}

/// Distinct `model` label values kept; later models count under [`OTHER_MODELS`]. Clients
/// choose the model names, so without a bound they could grow the series without end.
const MAX_MODEL_LABELS: usize = 256;

/// `model` label of the requests whose model came after [`MAX_MODEL_LABELS`] others.
const OTHER_MODELS: &str = "(other)";

/// Counters since start, keyed by label values.
#[derive(Debug)]
pub struct Metrics {
    /// Model label values seen so far, at most [`MAX_MODEL_LABELS`].
    models: BTreeSet<String>,
    /// (provider, model, status, cache) to request count.
    requests: BTreeMap<(String, String, u16, &'static str), u64>,
    /// (model, token class) to tokens.
    tokens: BTreeMap<(String, &'static str), u64>,
    /// Model to cost in nano-USD, priced requests only.
    cost: BTreeMap<String, u64>,
    /// Model to cost avoided by cache hits, in nano-USD.
    saved: BTreeMap<String, u64>,
    rate_limited: u64,
    budget_rejected: u64,
    /// Whole-request latency by cache result.
    latency: BTreeMap<&'static str, Histogram>,
    /// Time to the first upstream byte, for requests that went upstream.
    upstream_ttfb: Histogram,
    /// Time the proxy itself spent on each request, by cache result.
    /// NOTE: like the other histograms it counts only requests with a record, so the
    /// rejections that precede one (401, 400, 408, 413, 501) are missing.
    added_latency: BTreeMap<&'static str, Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            models: BTreeSet::new(),
            requests: BTreeMap::new(),
            tokens: BTreeMap::new(),
            cost: BTreeMap::new(),
            saved: BTreeMap::new(),
            rate_limited: 0,
            budget_rejected: 0,
            latency: BTreeMap::new(),
            upstream_ttfb: Histogram::new(LATENCY_BUCKETS),
            added_latency: BTreeMap::new(),
        }
    }
}

/// Values of the gauges that the proxy keeps in atomics, read when `/metrics` is served.
#[derive(Debug, Clone, Copy, Default)]
pub struct GaugeValues {
    pub in_flight_requests: i64,
    pub open_streams: i64,
    pub open_connections: i64,
}

impl Metrics {
    /// Returns `model` as a label value, or [`OTHER_MODELS`] once [`MAX_MODEL_LABELS`]
    /// other models have been seen.
    fn model_label(&mut self, model: String) -> String {
        if self.models.contains(&model) {
            return model;
        }
        if self.models.len() >= MAX_MODEL_LABELS {
            return OTHER_MODELS.to_owned();
        }
        self.models.insert(model.clone());
        model
    }

    /// Folds one finished request into the counters.
    pub fn observe(&mut self, record: &RequestRecord) {
        let model = record
            .model_priced
            .clone()
            .or_else(|| record.model_requested.clone())
            .unwrap_or_default();
        let model = self.model_label(model);
        let cache = record.cache.as_header_value();
        *self
            .requests
            .entry((record.provider.clone(), model.clone(), record.status, cache))
            .or_default() += 1;
        let tokens = &record.tokens;
        for (class, count) in [
            ("input", tokens.input),
            ("output", tokens.output),
            ("cache_write_5m", tokens.cache_write_5m),
            ("cache_write_1h", tokens.cache_write_1h),
            ("cache_read", tokens.cache_read),
        ] {
            if count > 0 {
                *self.tokens.entry((model.clone(), class)).or_default() += count;
            }
        }
        if let Some(cost) = record.cost_nano_usd.filter(|cost| *cost > 0) {
            *self.cost.entry(model.clone()).or_default() += cost;
        }
        if let Some(saved) = record.saved_nano_usd.filter(|saved| *saved > 0) {
            *self.saved.entry(model).or_default() += saved;
        }
        if record.outcome == crate::analytics::Outcome::RateLimited {
            self.rate_limited += 1;
        }
        if record.outcome == crate::analytics::Outcome::BudgetRejected {
            self.budget_rejected += 1;
        }
        let seconds = record.latency_us as f64 / 1e6;
        self.latency
            .entry(cache)
            .or_insert_with(|| Histogram::new(LATENCY_BUCKETS))
            .observe(seconds);
        if record.cache != crate::analytics::CacheOutcome::Hit && record.ttfb_us > 0 {
            self.upstream_ttfb.observe(record.ttfb_us as f64 / 1e6);
        }
        self.added_latency
            .entry(cache)
            .or_insert_with(|| Histogram::new(ADDED_LATENCY_BUCKETS))
            .observe(record.added_latency_us as f64 / 1e6);
    }

    /// Renders the counters with the cache's figures and the gauges' values.
    pub fn render(&self, cache: Option<&CacheStatsReply>, gauges: GaugeValues) -> String {
        let mut out = String::new();
        header(
            &mut out,
            "cco_requests_total",
            "counter",
            "Requests finished, by provider, model, status and cache result.",
        );
        for ((provider, model, status, cache), count) in &self.requests {
            let _ = writeln!(
                out,
                "cco_requests_total{{provider=\"{}\",model=\"{}\",status=\"{status}\",cache=\"{cache}\"}} {count}",
                escape(provider),
                escape(model)
            );
        }
        header(
            &mut out,
            "cco_tokens_total",
            "counter",
            "Tokens billed by the upstream, by model and token class.",
        );
        for ((model, class), count) in &self.tokens {
            let _ = writeln!(
                out,
                "cco_tokens_total{{model=\"{}\",class=\"{class}\"}} {count}",
                escape(model)
            );
        }
        header(
            &mut out,
            "cco_cost_usd_total",
            "counter",
            "Cost of priced requests in US dollars, by model.",
        );
        for (model, nano) in &self.cost {
            let _ = writeln!(
                out,
                "cco_cost_usd_total{{model=\"{}\"}} {}",
                escape(model),
                dollars(*nano)
            );
        }
        header(
            &mut out,
            "cco_saved_usd_total",
            "counter",
            "Cost that cache hits avoided in US dollars, by model.",
        );
        for (model, nano) in &self.saved {
            let _ = writeln!(
                out,
                "cco_saved_usd_total{{model=\"{}\"}} {}",
                escape(model),
                dollars(*nano)
            );
        }
        header(
            &mut out,
            "cco_rate_limited_total",
            "counter",
            "Requests rejected by the proxy's rate limit.",
        );
        let _ = writeln!(out, "cco_rate_limited_total {}", self.rate_limited);
        header(
            &mut out,
            "cco_budget_rejected_total",
            "counter",
            "Requests rejected because they could have passed a budget.",
        );
        let _ = writeln!(out, "cco_budget_rejected_total {}", self.budget_rejected);
        header(
            &mut out,
            "cco_request_duration_seconds",
            "histogram",
            "Time from request to the end of the response, by cache result.",
        );
        for (cache, histogram) in &self.latency {
            histogram.render(
                &mut out,
                "cco_request_duration_seconds",
                &format!("cache=\"{cache}\""),
            );
        }
        header(
            &mut out,
            "cco_upstream_ttfb_seconds",
            "histogram",
            "Time from request to the first upstream response byte.",
        );
        self.upstream_ttfb
            .render(&mut out, "cco_upstream_ttfb_seconds", "");
        header(
            &mut out,
            "cco_added_latency_seconds",
            "histogram",
            "Time the proxy itself spent on a request, by cache result: its handler's whole \
             time when the proxy answered, else the time before the upstream request was sent \
             and from the upstream response head to the client response head.",
        );
        for (cache, histogram) in &self.added_latency {
            histogram.render(
                &mut out,
                "cco_added_latency_seconds",
                &format!("cache=\"{cache}\""),
            );
        }
        for (name, help, value) in [
            (
                "cco_in_flight_requests",
                "Requests in progress, open streams included.",
                gauges.in_flight_requests,
            ),
            (
                "cco_open_streams",
                "Event streams being relayed from an upstream.",
                gauges.open_streams,
            ),
            (
                "cco_open_connections",
                "Client connections open to the proxy port, this scrape's own included.",
                gauges.open_connections,
            ),
        ] {
            header(&mut out, name, "gauge", help);
            let _ = writeln!(out, "{name} {value}");
        }

        if let Some(cache) = cache {
            for (name, kind, help, value) in [
                (
                    "cco_cache_entries",
                    "gauge",
                    "Entries in the response cache.",
                    cache.entries,
                ),
                (
                    "cco_cache_bytes",
                    "gauge",
                    "Bytes stored in the response cache.",
                    cache.bytes,
                ),
                (
                    "cco_cache_capacity_bytes",
                    "gauge",
                    "Capacity of the response cache in bytes.",
                    cache.capacity_bytes,
                ),
                (
                    "cco_cache_hits_total",
                    "counter",
                    "Cache lookups that found an entry.",
                    cache.hits,
                ),
                (
                    "cco_cache_misses_total",
                    "counter",
                    "Cache lookups that found none.",
                    cache.misses,
                ),
                (
                    "cco_cache_stores_total",
                    "counter",
                    "Responses stored in the cache.",
                    cache.stores,
                ),
                (
                    "cco_cache_evictions_total",
                    "counter",
                    "Entries evicted to stay within the capacity.",
                    cache.evictions,
                ),
                (
                    "cco_cache_expirations_total",
                    "counter",
                    "Entries removed after their TTL.",
                    cache.expirations,
                ),
                (
                    "cco_cache_stores_skipped_total",
                    "counter",
                    "Responses not stored because the cache's writes were behind.",
                    cache.skipped_stores,
                ),
            ] {
                header(&mut out, name, kind, help);
                let _ = writeln!(out, "{name} {value}");
            }
        }
        out
    }
}

/// Appends gauges of the limit, spend and reservations of each budget to `out`, labelled
/// by `credential` (`all` for the budget of all clients) and `period`.
pub fn render_budgets(out: &mut String, budgets: &[BudgetStatus]) {
    type Field = fn(&BudgetStatus) -> u64;
    let gauges: [(&str, &str, Field); 3] = [
        (
            "cco_budget_limit_usd",
            "Limit of each budget in US dollars.",
            |budget| budget.limit_nano_usd,
        ),
        (
            "cco_budget_spent_usd",
            "Cost recorded in the current period of each budget, in US dollars.",
            |budget| budget.spent_nano_usd,
        ),
        (
            "cco_budget_reserved_usd",
            "Worst-case cost of the requests in flight under each budget, in US dollars.",
            |budget| budget.reserved_nano_usd,
        ),
    ];
    for (name, help, value) in gauges {
        header(out, name, "gauge", help);
        for budget in budgets {
            let _ = writeln!(
                out,
                "{name}{{credential=\"{}\",period=\"{}\"}} {}",
                escape(budget.credential.as_deref().unwrap_or("all")),
                budget.period.as_str(),
                dollars(value(budget))
            );
        }
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Escapes a label value as the text format requires: backslash, quote and newline.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn dollars(nano: u64) -> String {
    format!("{}.{:09}", nano / 1_000_000_000, nano % 1_000_000_000)
}

/// A gauge of things in progress, such as requests or connections, each counted by a
/// [`GaugeGuard`] from [`Gauge::enter`].
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    /// Counts one thing until the returned guard is dropped.
    pub fn enter(self: &Arc<Self>) -> GaugeGuard {
        self.0.fetch_add(1, Ordering::Relaxed);
        GaugeGuard(self.clone())
    }

    pub fn value(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Guard of one thing counted in a [`Gauge`].
#[derive(Debug)]
pub struct GaugeGuard(Arc<Gauge>);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        (self.0).0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytics::{CacheOutcome, Outcome};
    use cco_proto::TokenCounts;

    #[test]
    fn model_labels_are_bounded() {
        let mut metrics = Metrics::default();
        for index in 0..MAX_MODEL_LABELS + 10 {
            let mut request = record(CacheOutcome::Miss, 1000);
            request.model_priced = None;
            request.model_requested = Some(format!("model-{index}"));
            metrics.observe(&request);
        }
        let text = metrics.render(None, GaugeValues::default());
        let first = "cco_requests_total{provider=\"anthropic\",model=\"model-0\",status=\"200\",cache=\"miss\"} 1\n";
        assert!(text.contains(first), "{text}");
        let last_kept = format!("model=\"model-{}\"", MAX_MODEL_LABELS - 1);
        assert!(text.contains(&last_kept), "{text}");
        let first_folded = format!("model=\"model-{}\"", MAX_MODEL_LABELS);
        assert!(!text.contains(&first_folded), "{text}");
        let other = "cco_requests_total{provider=\"anthropic\",model=\"(other)\",status=\"200\",cache=\"miss\"} 10\n";
        assert!(text.contains(other), "{text}");
    }

    fn record(cache: CacheOutcome, latency_us: u64) -> RequestRecord {
        RequestRecord {
            time_unix_ms: 0,
            provider: "anthropic".into(),
            method: "POST".into(),
            path: "/v1/messages".into(),
            model_requested: Some("claude-haiku-4-5".into()),
            model_response: None,
            model_priced: Some("claude-haiku-4-5".into()),
            status: 200,
            outcome: Outcome::Completed,
            stream: false,
            cache,
            latency_us,
            ttfb_us: latency_us / 2,
            tokens: TokenCounts {
                input: 10,
                output: 4,
                ..TokenCounts::default()
            },
            cost_nano_usd: Some(30_000),
            saved_nano_usd: None,
            credential: None,
            usage_missing: false,
            web_search_requests: 0,
            estimated: false,
            replayed: None,
            added_latency_us: latency_us / 100,
        }
    }

    #[test]
    fn render_counts_requests_and_buckets() {
        let mut metrics = Metrics::default();
        metrics.observe(&record(CacheOutcome::Miss, 3_000));
        metrics.observe(&record(CacheOutcome::Miss, 700_000));
        let gauges = GaugeValues {
            in_flight_requests: 2,
            open_streams: 1,
            open_connections: 3,
        };
        let text = metrics.render(None, gauges);
        assert!(text.contains(
            "cco_requests_total{provider=\"anthropic\",model=\"claude-haiku-4-5\",status=\"200\",cache=\"miss\"} 2\n"
        ), "{text}");
        assert!(
            text.contains("cco_tokens_total{model=\"claude-haiku-4-5\",class=\"input\"} 20\n"),
            "{text}"
        );
        // 2 requests at 30,000 nano-USD each.
        assert!(
            text.contains("cco_cost_usd_total{model=\"claude-haiku-4-5\"} 0.000060000\n"),
            "{text}"
        );
        // 3 ms falls in the 5 ms bucket and above; 700 ms only from the 1 s bucket on.
        assert!(
            text.contains("cco_request_duration_seconds_bucket{cache=\"miss\",le=\"0.0025\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("cco_request_duration_seconds_bucket{cache=\"miss\",le=\"0.005\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("cco_request_duration_seconds_bucket{cache=\"miss\",le=\"1\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("cco_request_duration_seconds_bucket{cache=\"miss\",le=\"+Inf\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("cco_in_flight_requests 2\n"), "{text}");
        assert!(text.contains("cco_open_streams 1\n"), "{text}");
        assert!(text.contains("cco_open_connections 3\n"), "{text}");
    }

    #[test]
    fn added_latency_has_microsecond_buckets() {
        let mut metrics = Metrics::default();
        // The record helper adds 1% of the whole latency: 30 µs and 7 ms.
        metrics.observe(&record(CacheOutcome::Miss, 3_000));
        metrics.observe(&record(CacheOutcome::Miss, 700_000));
        metrics.observe(&record(CacheOutcome::Hit, 2_000));
        let text = metrics.render(None, GaugeValues::default());
        for line in [
            "# TYPE cco_added_latency_seconds histogram\n",
            "cco_added_latency_seconds_bucket{cache=\"miss\",le=\"0.000025\"} 0\n",
            "cco_added_latency_seconds_bucket{cache=\"miss\",le=\"0.00005\"} 1\n",
            "cco_added_latency_seconds_bucket{cache=\"miss\",le=\"0.005\"} 1\n",
            "cco_added_latency_seconds_bucket{cache=\"miss\",le=\"0.01\"} 2\n",
            "cco_added_latency_seconds_bucket{cache=\"miss\",le=\"+Inf\"} 2\n",
            "cco_added_latency_seconds_count{cache=\"miss\"} 2\n",
            "cco_added_latency_seconds_bucket{cache=\"hit\",le=\"0.000025\"} 1\n",
            "cco_added_latency_seconds_count{cache=\"hit\"} 1\n",
        ] {
            assert!(text.contains(line), "{line} missing from {text}");
        }
        let sum: f64 = text
            .lines()
            .find_map(|line| line.strip_prefix("cco_added_latency_seconds_sum{cache=\"miss\"} "))
            .expect("sum line")
            .parse()
            .expect("sum is a number");
        assert!((sum - 0.007_03).abs() < 1e-9, "sum {sum} in {text}");
    }

    #[test]
    fn budgets_render_as_gauges() {
        let mut text = String::new();
        let budget = BudgetStatus {
            credential: Some("0123456789ab".into()),
            period: cco_proto::BudgetPeriod::Monthly,
            limit_nano_usd: 20_000_000_000,
            spent_nano_usd: 1_500_000_000,
            reserved_nano_usd: 3_000_000,
            resets_unix_ms: 0,
        };
        render_budgets(&mut text, &[budget]);
        let labels = "{credential=\"0123456789ab\",period=\"monthly\"}";
        for line in [
            format!("cco_budget_limit_usd{labels} 20.000000000\n"),
            format!("cco_budget_spent_usd{labels} 1.500000000\n"),
            format!("cco_budget_reserved_usd{labels} 0.003000000\n"),
            "# TYPE cco_budget_spent_usd gauge\n".to_owned(),
        ] {
            assert!(text.contains(&line), "{line} missing from {text}");
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn gauge_follows_guards() {
        let gauge = Arc::new(Gauge::default());
        let first = gauge.enter();
        let second = gauge.enter();
        assert_eq!(gauge.value(), 2);
        drop(first);
        assert_eq!(gauge.value(), 1);
        drop(second);
        assert_eq!(gauge.value(), 0);
    }
}
