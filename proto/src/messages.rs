//! Request and response types of the control protocol.
//!
//! Money is carried as integer nano-US-dollars (`1 USD = 1_000_000_000`), so totals add up
//! exactly. Every published per-million-token price with up to three decimals is a whole
//! number of nano-dollars per token.

use serde::{Deserialize, Serialize};

use crate::{CRATE_VERSION, PROTOCOL_VERSION};

/// One request frame as sent by `ccoctl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestFrame {
    /// [`PROTOCOL_VERSION`] of the sender.
    pub protocol: u32,
    /// Id chosen by the client and echoed in the response.
    pub id: u64,
    /// Crate version of the sender, for diagnostics.
    pub client_version: String,
    #[serde(flatten)]
    pub request: Request,
}

impl RequestFrame {
    /// Wraps `request` with this build's protocol and crate versions.
    pub fn new(id: u64, request: Request) -> Self {
        Self {
            protocol: PROTOCOL_VERSION,
            id,
            client_version: CRATE_VERSION.to_owned(),
            request,
        }
    }
}

/// The commands the daemon accepts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Request {
    /// Version, uptime, listen address and counters.
    Status,
    /// Usage and cost totals over a time range.
    Stats(StatsQuery),
    /// Size and counters of the response cache.
    CacheStats,
    /// Removes every cache entry from memory and disk.
    CacheClear,
    /// The effective configuration, credentials redacted.
    Config,
    /// Stops the daemon gracefully: in-flight requests finish and analytics are flushed.
    Shutdown,
    /// Checks the release feed, installs the newest release or restores the backups.
    Update(UpdateRequest),
    /// Progress of the download of an install that is under way, for a progress bar.
    UpdateProgress,
    /// The effective price table: the embedded rows with the configuration's overrides.
    Pricing(PricingQuery),
}

/// Every command name that [`Request`] accepts, used to tell an unknown command from a
/// malformed known one.
pub const COMMAND_NAMES: &[&str] = &[
    "status",
    "stats",
    "cache_stats",
    "cache_clear",
    "config",
    "shutdown",
    "update",
    "update_progress",
    "pricing",
];

/// A stats request: a time range in milliseconds since the Unix epoch, where `None` leaves
/// that end open, and how to group and price the records in it.
///
/// `reprice` and `group_by` are left out of the frame at their defaults, so a frame without
/// them is the one that releases before them sent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsQuery {
    #[serde(default)]
    pub since_unix_ms: Option<u64>,
    #[serde(default)]
    pub until_unix_ms: Option<u64>,
    /// Recomputes the cost and savings of every record in the range with the daemon's
    /// current price table instead of returning the figures stored when each request was
    /// recorded. This reads every record, so it is slower than a plain query.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reprice: bool,
    /// Grouping of the reply's rows.
    #[serde(default, skip_serializing_if = "GroupBy::is_model")]
    pub group_by: GroupBy,
}

/// Grouping of the rows of a [`StatsReply`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    /// The priced model id, or the model as sent when it has no price.
    #[default]
    Model,
    /// The UTC day of the request, `YYYY-MM-DD`.
    Day,
    /// The upstream: `anthropic`, `openai` or a configured provider's name.
    Provider,
    /// The first 12 hex digits of the SHA-256 of the request's credential, never the
    /// credential itself, or `(none)` for requests that carried none.
    Credential,
}

impl GroupBy {
    /// Every variant, in the order `ccoctl` lists them.
    pub const ALL: [GroupBy; 4] = [
        GroupBy::Model,
        GroupBy::Day,
        GroupBy::Provider,
        GroupBy::Credential,
    ];

    /// Returns the wire name, such as `day`.
    pub fn as_str(self) -> &'static str {
        match self {
            GroupBy::Model => "model",
            GroupBy::Day => "day",
            GroupBy::Provider => "provider",
            GroupBy::Credential => "credential",
        }
    }

    fn is_model(&self) -> bool {
        *self == GroupBy::Model
    }
}

/// Filter of a [`Request::Pricing`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PricingQuery {
    /// Provider whose rows to return, or `None` for every row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
}

/// One response frame as sent by `ccod`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseFrame {
    /// [`PROTOCOL_VERSION`] of the daemon.
    pub protocol: u32,
    /// Id of the request this responds to; `None` when the request was too malformed to carry one.
    pub id: Option<u64>,
    /// Crate version of the daemon, for diagnostics.
    pub server_version: String,
    pub response: Response,
}

impl ResponseFrame {
    /// Wraps `response` with this build's protocol and crate versions.
    pub fn new(id: Option<u64>, response: Response) -> Self {
        Self {
            protocol: PROTOCOL_VERSION,
            id,
            server_version: CRATE_VERSION.to_owned(),
            response,
        }
    }
}

/// The daemon's response to one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    Status(StatusReply),
    Stats(StatsReply),
    CacheStats(CacheStatsReply),
    CacheCleared(CacheClearReply),
    Config(ConfigReply),
    ShuttingDown,
    Update(UpdateReply),
    UpdateProgress(UpdateProgressReply),
    Pricing(PricingReply),
    Error(ErrorReply),
}

/// Reply to [`Request::Status`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReply {
    pub version: String,
    pub protocol: u32,
    pub pid: u32,
    pub uptime_secs: u64,
    /// Address the HTTP proxy listens on, such as `127.0.0.1:8000`.
    pub listen_addr: String,
    pub data_dir: String,
    pub cache_enabled: bool,
    pub cache_entries: u64,
    pub cache_bytes: u64,
    /// Requests served since start, from the cache or upstream.
    pub requests_served: u64,
    /// False when the daemon writes no request records (`--no-analytics`). Daemons before
    /// this field always recorded, so a reply without it decodes as true.
    #[serde(default = "default_analytics_enabled")]
    pub analytics_enabled: bool,
}

/// Default of the `analytics_enabled` fields: daemons that do not send them record every
/// request.
fn default_analytics_enabled() -> bool {
    true
}

/// Token counts of one class each. `input_tokens` excludes the cache classes, as the
/// Anthropic `usage` object reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenCounts {
    pub input: u64,
    pub output: u64,
    pub cache_write_5m: u64,
    pub cache_write_1h: u64,
    pub cache_read: u64,
}

impl TokenCounts {
    /// Adds every class of `other` to `self`.
    pub fn add(&mut self, other: &TokenCounts) {
        self.input += other.input;
        self.output += other.output;
        self.cache_write_5m += other.cache_write_5m;
        self.cache_write_1h += other.cache_write_1h;
        self.cache_read += other.cache_read;
    }

    /// Sum of all classes.
    pub fn total(&self) -> u64 {
        self.input + self.output + self.cache_write_5m + self.cache_write_1h + self.cache_read
    }
}

/// Totals over a set of requests.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageTotals {
    pub requests: u64,
    /// Requests served from the cache.
    pub cache_hits: u64,
    /// Requests whose status was not 2xx, or whose upstream could not be reached, timed out
    /// or cut its response short.
    pub errors: u64,
    /// Requests whose model had no price; their tokens are counted, their cost is not.
    pub unpriced_requests: u64,
    /// Successful event streams that carried no usage, so neither their tokens nor their
    /// cost are known. OpenAI sends stream usage only when the client sets
    /// `stream_options.include_usage`. They are not counted in `unpriced_requests`.
    #[serde(default)]
    pub streams_without_usage: u64,
    /// Requests the proxy refused over its rate limit; they never reached the upstream.
    #[serde(default)]
    pub rate_limited: u64,
    /// Requests the proxy refused because they could have taken a `[budgets]` limit past
    /// its amount; they never reached the upstream.
    #[serde(default)]
    pub budget_rejected: u64,
    /// Requests whose cost is an estimate: their cache writes came without the split into
    /// 5-minute and 1-hour writes, so all of them were priced as 5-minute writes.
    #[serde(default)]
    pub estimated_requests: u64,
    pub tokens: TokenCounts,
    /// Web searches that the upstream ran and billed per search, besides the tokens.
    #[serde(default)]
    pub web_search_requests: u64,
    /// Cost of the priced requests that went upstream.
    pub cost_nano_usd: u64,
    /// Cost that cache hits avoided: the price of the responses they replayed.
    pub saved_nano_usd: u64,
}

impl UsageTotals {
    /// Share of requests served from the cache, from 0 to 1; 0 when there were none.
    pub fn hit_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.cache_hits as f64 / self.requests as f64
        }
    }
}

/// Totals of one group of a stats reply, such as one model or one day.
///
/// The priced and the unpriced requests of a group are two rows, so that a row's cost is
/// either the cost of all its requests or unknown, never a partial sum that looks complete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupTotals {
    /// The group's value, such as `claude-sonnet-4-5` or `2026-12-01`, as [`GroupBy`] names.
    /// Releases before [`GroupBy`] named it `model`.
    #[serde(alias = "model")]
    pub group: String,
    /// False when the row's requests have no price: their model is not in the price table.
    pub priced: bool,
    pub totals: UsageTotals,
}

/// Reply to [`Request::Stats`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsReply {
    pub since_unix_ms: Option<u64>,
    pub until_unix_ms: Option<u64>,
    /// Grouping of the rows. Releases before this field always grouped by model.
    #[serde(default)]
    pub group_by: GroupBy,
    /// True when the costs and savings were recomputed with the daemon's current prices.
    #[serde(default)]
    pub repriced: bool,
    /// False when the daemon writes no request records (`--no-analytics`). The totals and
    /// rows are then empty because nothing was counted, not because nothing was served.
    /// Daemons before this field always recorded, so a reply without it decodes as true.
    ///
    /// NOTE: a `ccoctl` older than this field ignores it and shows such a reply as zeros.
    #[serde(default = "default_analytics_enabled")]
    pub analytics_enabled: bool,
    pub total: UsageTotals,
    /// One row per group and priced flag. Days are in time order, and the other groupings
    /// put the most expensive first. Releases before [`GroupBy`] named this `by_model`.
    #[serde(alias = "by_model")]
    pub rows: Vec<GroupTotals>,
    /// State of every configured budget at the time of the reply, whatever the range;
    /// empty when none is configured or the daemon predates budgets.
    #[serde(default)]
    pub budgets: Vec<BudgetStatus>,
}

/// Period of a budget. Days and months are UTC calendar days and months.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetPeriod {
    Daily,
    Monthly,
}

impl BudgetPeriod {
    /// Returns `daily` or `monthly`, the word used in the config key and in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetPeriod::Daily => "daily",
            BudgetPeriod::Monthly => "monthly",
        }
    }
}

/// Use of one budget in its current period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetStatus {
    /// Hash prefix of the credential the budget applies to (12 hex digits, as in the
    /// analytics records), or `None` for the budget of all clients together.
    pub credential: Option<String>,
    pub period: BudgetPeriod,
    pub limit_nano_usd: u64,
    /// Cost recorded in the current period.
    pub spent_nano_usd: u64,
    /// Worst-case cost of the requests in flight, held until each one ends.
    pub reserved_nano_usd: u64,
    /// Start of the next period, in milliseconds since the Unix epoch.
    pub resets_unix_ms: u64,
}

/// Rates of one price row, in nano-USD per token, which is USD per million tokens times
/// 1000.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRates {
    /// Uncached input tokens.
    pub input: u64,
    pub output: u64,
    pub cache_write_5m: u64,
    pub cache_write_1h: u64,
    pub cache_read: u64,
}

/// Rates that replace the base rates of a request above a number of input tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LongContextRates {
    /// Input tokens, cache writes and cache reads included, above which the rates apply.
    pub threshold_input_tokens: u64,
    pub rates: TokenRates,
}

/// One row of the effective price table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriceRow {
    /// Canonical model id.
    pub id: String,
    /// Upstream whose requests the row prices.
    pub provider: String,
    /// Other names that resolve to this row, sorted.
    pub aliases: Vec<String>,
    pub rates: TokenRates,
    pub long_context: Option<LongContextRates>,
    /// Price of one web search in nano-USD, or 0 where searches are not billed.
    pub web_search_nano_usd: u64,
    /// Table the row came from: `embedded`, `config` for `[[prices]]`, or
    /// `[[providers]] NAME` for a provider's own rows.
    pub source: String,
    /// Page the rates were read from, where the row names one.
    pub url: Option<String>,
    /// Date the rates were read, `YYYY-MM-DD`, where the row gives one.
    pub as_of: Option<String>,
    /// Configuration file that contains the row, or `None` for embedded rows.
    pub file: Option<String>,
}

/// Reply to [`Request::Pricing`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PricingReply {
    /// Rows by provider, then by id.
    pub rows: Vec<PriceRow>,
}

/// Reply to [`Request::CacheStats`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheStatsReply {
    pub enabled: bool,
    pub entries: u64,
    pub bytes: u64,
    pub capacity_bytes: u64,
    pub ttl_secs: u64,
    /// Counters since the daemon started.
    pub hits: u64,
    pub misses: u64,
    pub stores: u64,
    pub evictions: u64,
    pub expirations: u64,
    /// Responses not stored because the cache's writes were behind; absent from older
    /// daemons.
    #[serde(default)]
    pub skipped_stores: u64,
}

/// Reply to [`Request::CacheClear`]: what was removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheClearReply {
    pub entries: u64,
    pub bytes: u64,
}

/// Reply to [`Request::Config`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigReply {
    /// Effective configuration as TOML, credentials redacted.
    pub toml: String,
}

/// A request the daemon could not carry out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    pub kind: ErrorKind,
    pub message: String,
}

/// Class of a control-plane error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The frame was not valid UTF-8 JSON of the request shape.
    MalformedFrame,
    /// The frame passed [`crate::MAX_FRAME_BYTES`].
    FrameTooLarge,
    /// The `command` field named no known command.
    UnknownCommand,
    /// The request's `protocol` differs from the daemon's.
    ProtocolMismatch,
    /// The daemon failed to carry out a valid request.
    Internal,
    /// A check, install or rollback of [`Request::Update`] failed; the installed binaries
    /// are as they were before the request.
    UpdateFailed,
    /// The peer runs as a user other than the daemon's and root.
    PermissionDenied,
}

/// Reply to [`Request::UpdateProgress`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateProgressReply {
    /// True while a release archive is being downloaded.
    pub downloading: bool,
    pub received_bytes: u64,
    /// Size the release feed states for the archive; 0 when unknown.
    pub total_bytes: u64,
}

/// Body of [`Request::Update`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateRequest {
    pub action: UpdateAction,
    /// Restart into the new binaries once they are in place; ignored by a check.
    pub restart: bool,
}

/// Action of an update request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateAction {
    /// Reads the release feed and reports the newest release of the configured channel.
    Check,
    /// Downloads, verifies and installs the newest release when it is newer than the
    /// running daemon.
    Install,
    /// Puts the backups that the last install kept (`ccod.bak`, `ccoctl.bak`) back in place.
    Rollback,
}

/// Reply to [`Request::Update`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateReply {
    pub action: UpdateAction,
    /// Version of the daemon that replies.
    pub running_version: String,
    /// Release channel searched: `stable` or `beta`.
    pub channel: String,
    /// Newest release of the channel in the feed; `None` for a rollback, or when the feed
    /// lists no release of the channel.
    pub latest_version: Option<String>,
    /// True when `latest_version` is newer than `running_version`.
    pub update_available: bool,
    /// Version that an install or rollback put in place; `None` when nothing was changed.
    pub installed_version: Option<String>,
    /// Directory that contains the installed `ccod` and `ccoctl`.
    pub install_dir: String,
    /// Way the daemon restarts into the installed binaries.
    pub restart: RestartMode,
}

/// Way the daemon restarts after an install or rollback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum RestartMode {
    /// No restart: nothing changed, or the request asked for none. The running daemon
    /// keeps its old code until it is restarted.
    None,
    /// The daemon stops gracefully and replaces itself with the new binary, keeping its
    /// arguments and environment.
    Reexec,
    /// The daemon stops gracefully and exits with `exit_code`, so that its service manager
    /// (systemd `Restart=on-failure`, launchd `KeepAlive`) starts the new binary.
    ServiceManager { exit_code: i32 },
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stats reply of a daemon that predates budgets: no `budget_rejected`, no `budgets`.
    const STATS_BEFORE_BUDGETS: &str = r#"{"since_unix_ms":null,"until_unix_ms":null,"total":{"requests":2,"cache_hits":0,"errors":1,"unpriced_requests":0,"streams_without_usage":0,"rate_limited":1,"tokens":{"input":10,"output":20,"cache_write_5m":0,"cache_write_1h":0,"cache_read":0},"cost_nano_usd":130000,"saved_nano_usd":0},"by_model":[]}"#;

    #[test]
    fn stats_before_budgets_decodes() {
        let reply: StatsReply = serde_json::from_str(STATS_BEFORE_BUDGETS).unwrap();
        assert_eq!(reply.total.budget_rejected, 0);
        assert_eq!(reply.total.rate_limited, 1);
        assert!(reply.budgets.is_empty());
    }

    #[test]
    fn replies_before_analytics_flag_decode_enabled() {
        let stats: StatsReply = serde_json::from_str(STATS_BEFORE_BUDGETS).unwrap();
        assert!(stats.analytics_enabled);

        let status = r#"{"version":"0.1.0","protocol":1,"pid":7,"uptime_secs":1,
            "listen_addr":"127.0.0.1:8000","data_dir":"/tmp/cco","cache_enabled":true,
            "cache_entries":0,"cache_bytes":0,"requests_served":3}"#;
        let status: StatusReply = serde_json::from_str(status).unwrap();
        assert!(status.analytics_enabled);
    }
}
