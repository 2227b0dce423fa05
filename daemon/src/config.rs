//! Configuration: command-line flags, `CCO_*` environment variables, `config.toml` and
//! built-in defaults, merged in that order of precedence into one [`Config`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use serde::{Deserialize, Serialize};

use crate::budgets::{format_usd, parse_usd, BudgetConfig, Limits};
use crate::pricing::{ModelRows, PriceError, PriceTable, SOURCE_CONFIG};

/// Upstream used when nothing else is configured.
pub const DEFAULT_ANTHROPIC_BASE_URL: &str = "https://api.anthropic.com";
/// OpenAI upstream used when nothing else is configured. OpenAI's paths start with `/v1`,
/// so the base URL has none.
pub const DEFAULT_OPENAI_BASE_URL: &str = "https://api.openai.com";
/// Path prefix under which any request goes to the OpenAI upstream, with the prefix removed.
pub const OPENAI_PREFIX: &str = "/openai";
/// Cache entries kept when `cache_max_entries` is not set. With up to about 200 bytes of
/// index per entry in memory (measured in BENCHMARKS.md), this bounds the index near 20 MB.
pub const DEFAULT_CACHE_MAX_ENTRIES: u64 = 100_000;
/// Largest `db_cache_size` in megabytes: a value above it is a typo, not a page cache.
const MAX_DB_CACHE_MB: u64 = 64 * 1024;

/// Megabytes of sled page cache when `db_cache_size` is not set.
pub const DEFAULT_DB_CACHE_SIZE_MB: u64 = 64;

/// Command-line flags of `ccod`. Each flag except `--config` and `--test-config` also reads a
/// `CCO_*` environment variable and a key of the same name (with `_`) in `config.toml`, except
/// `--no-analytics`, whose key is `enabled` in the `[analytics]` section.
#[derive(Debug, Clone, Default, Parser)]
#[command(
    name = "ccod",
    version,
    about = "CCO daemon: a caching, cost-tracking proxy for the Anthropic and OpenAI APIs"
)]
pub struct Args {
    /// Address to listen on [default: 127.0.0.1]
    #[arg(long, env = "CCO_HOST")]
    pub host: Option<String>,

    /// TCP port to listen on; 0 picks a free port [default: 8000]
    #[arg(long, env = "CCO_PORT")]
    pub port: Option<u16>,

    /// Configuration file [default: the per-user config directory, such as
    /// ~/.config/cco/config.toml; a missing default file is not an error]
    #[arg(long, env = "CCO_CONFIG")]
    pub config: Option<PathBuf>,

    /// Directory for the sled database [default: the per-user data directory, such as
    /// ~/.local/share/cco]
    #[arg(long, env = "CCO_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// Path of the control socket [default: $XDG_RUNTIME_DIR/cco/ccod.sock or the per-user
    /// cache directory]
    #[arg(long, env = "CCO_SOCKET")]
    pub socket: Option<PathBuf>,

    /// Maximum size of the response cache, in megabytes [default: 500]
    #[arg(long, env = "CCO_CACHE_SIZE", value_name = "MB")]
    pub cache_size: Option<u64>,

    /// Time a cached response stays valid, in seconds [default: 3600]
    #[arg(long, env = "CCO_CACHE_TTL", value_name = "SECONDS")]
    pub cache_ttl: Option<u64>,

    /// Maximum number of responses in the cache, each of which keeps up to about 200 bytes
    /// of index in memory [default: 100000]
    #[arg(long, env = "CCO_CACHE_MAX_ENTRIES", value_name = "COUNT")]
    pub cache_max_entries: Option<u64>,

    /// Memory for the database's page cache, in megabytes [default: 64]
    #[arg(long, env = "CCO_DB_CACHE_SIZE", value_name = "MB")]
    pub db_cache_size: Option<u64>,

    /// Disable the response cache: every request goes upstream
    #[arg(long, env = "CCO_NO_CACHE", num_args = 0..=1, default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new())]
    pub no_cache: Option<bool>,

    /// Write no per-request analytics records or daily rollups to the data directory. The
    /// /metrics counters work as before. Cannot be combined with [budgets] limits
    #[arg(long, env = "CCO_NO_ANALYTICS", num_args = 0..=1, default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new())]
    pub no_analytics: Option<bool>,

    /// Base URL of the Anthropic API [default: https://api.anthropic.com]
    #[arg(long, env = "CCO_ANTHROPIC_BASE_URL", value_name = "URL")]
    pub anthropic_base_url: Option<String>,

    /// Base URL of the OpenAI API, without the /v1 that OpenAI's paths start with
    /// [default: https://api.openai.com]
    #[arg(long, env = "CCO_OPENAI_BASE_URL", value_name = "URL")]
    pub openai_base_url: Option<String>,

    /// Log filter: error, warn, info, debug, trace, or a tracing directive such as
    /// "ccod=debug" [default: info]
    #[arg(long, env = "CCO_LOG_LEVEL")]
    pub log_level: Option<String>,

    /// Write logs to this file (appended) instead of standard error
    #[arg(long, env = "CCO_LOG_FILE")]
    pub log_file: Option<PathBuf>,

    /// Maximum number of open client connections [default: 1024]
    #[arg(long, env = "CCO_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,

    /// Time allowed for the upstream to send its response headers, in seconds [default: 600]
    #[arg(long, env = "CCO_UPSTREAM_TIMEOUT", value_name = "SECONDS")]
    pub upstream_timeout: Option<u64>,

    /// Time allowed to connect to the upstream, in seconds [default: 10]
    #[arg(long, env = "CCO_CONNECT_TIMEOUT", value_name = "SECONDS")]
    pub connect_timeout: Option<u64>,

    /// Largest request body accepted, in megabytes [default: 32]
    #[arg(long, env = "CCO_MAX_BODY_SIZE", value_name = "MB")]
    pub max_body_size: Option<u64>,

    /// PEM certificate chain; with --tls-key, the listener serves HTTPS
    #[arg(long, env = "CCO_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert
    #[arg(long, env = "CCO_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Time a client gets to send its request headers, and separately its body, in seconds
    /// [default: 30]
    #[arg(long, env = "CCO_CLIENT_TIMEOUT", value_name = "SECONDS")]
    pub client_timeout: Option<u64>,

    /// Validate the configuration, print it with credentials redacted, and exit
    #[arg(long)]
    pub test_config: bool,
}

/// Keys accepted in `config.toml`. Unknown keys are an error so that a typo is not ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    host: Option<String>,
    port: Option<u16>,
    data_dir: Option<PathBuf>,
    socket: Option<PathBuf>,
    cache_size: Option<u64>,
    cache_ttl: Option<u64>,
    cache_max_entries: Option<u64>,
    db_cache_size: Option<u64>,
    no_cache: Option<bool>,
    anthropic_base_url: Option<String>,
    openai_base_url: Option<String>,
    log_level: Option<String>,
    log_file: Option<PathBuf>,
    max_connections: Option<usize>,
    upstream_timeout: Option<u64>,
    connect_timeout: Option<u64>,
    max_body_size: Option<u64>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    client_timeout: Option<u64>,
    proxy: Option<ProxySection>,
    rate_limiting: Option<RateLimitSection>,
    analytics: Option<AnalyticsSection>,
    updates: Option<UpdatesSection>,
    budgets: Option<BudgetsSection>,
    #[serde(default)]
    providers: Vec<ProviderSection>,
    /// Rows that add to or replace rows of the embedded price table.
    #[serde(default)]
    prices: ModelRows,
}

/// One `[[providers]]` table in `config.toml`: an OpenAI-compatible upstream.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProviderSection {
    name: String,
    prefix: String,
    base_url: String,
    api_key_env: Option<String>,
    #[serde(default)]
    models: ModelRows,
}

/// `[proxy]` in `config.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProxySection {
    /// `sha256:HEX` digests of the tokens clients must present.
    #[serde(default)]
    access_tokens: Vec<String>,
}

/// `[rate_limiting]` in `config.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RateLimitSection {
    #[serde(default)]
    enabled: bool,
    max_requests_per_minute: Option<u32>,
    burst_size: Option<u32>,
}

/// `[analytics]` in `config.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AnalyticsSection {
    /// False is `--no-analytics`.
    enabled: Option<bool>,
}

/// `[budgets]` in `config.toml`. Amounts are USD, as a number or a decimal string.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BudgetsSection {
    daily_usd: Option<toml::Value>,
    monthly_usd: Option<toml::Value>,
    #[serde(default)]
    credentials: Vec<CredentialBudgetSection>,
}

/// One `[[budgets.credentials]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialBudgetSection {
    /// Hash prefix of the credential, as the analytics records show it.
    credential: String,
    daily_usd: Option<toml::Value>,
    monthly_usd: Option<toml::Value>,
}

/// `[updates]` in `config.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdatesSection {
    feed_url: Option<String>,
    channel: Option<String>,
    enabled: Option<bool>,
    auto_install: Option<bool>,
    /// Seconds between periodic checks.
    check_interval: Option<u64>,
    install_dir: Option<PathBuf>,
    /// Megabytes.
    max_download_size: Option<u64>,
    /// Seconds.
    download_timeout: Option<u64>,
}

/// A credential. Its `Debug` and `Display` never show the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// Returns the credential itself, for the one place that sends it upstream.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The effective configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub host: String,
    pub port: u16,
    /// The file that was read, if any.
    pub config_file: Option<PathBuf>,
    pub data_dir: PathBuf,
    pub socket_path: PathBuf,
    pub cache_enabled: bool,
    pub cache_size_mb: u64,
    /// Writes a record of every request, and the daily rollups, to the data directory.
    /// When false, requests are only counted in memory for `/metrics` and `ccoctl status`.
    pub analytics_enabled: bool,
    pub cache_ttl: Duration,
    pub cache_max_entries: u64,
    /// Size of sled's page cache in megabytes.
    pub db_cache_size_mb: u64,
    /// Base URL without a trailing slash.
    pub anthropic_base_url: String,
    /// Key sent upstream for clients that send none, from `ANTHROPIC_API_KEY`.
    pub anthropic_api_key: Option<Secret>,
    /// Base URL of the OpenAI API without a trailing slash.
    pub openai_base_url: String,
    /// Key sent to OpenAI for clients that send none, from `OPENAI_API_KEY`.
    pub openai_api_key: Option<Secret>,
    /// The `[[providers]]` of the config file, in file order.
    pub providers: Vec<ProviderConfig>,
    /// The `[[prices]]` rows of the config file, merged over the embedded table and the
    /// providers' rows by [`Config::effective_prices`].
    pub price_overrides: PriceTable,
    pub log_level: String,
    pub log_file: Option<PathBuf>,
    pub max_connections: usize,
    pub upstream_timeout: Duration,
    pub connect_timeout: Duration,
    pub max_body_bytes: usize,
    /// Maximum time an analytics record waits in memory before it is written to sled.
    pub analytics_flush_interval: Duration,
    /// Certificate and key files; `Some` serves HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
    pub client_timeout: Duration,
    /// SHA-256 digests of the access tokens; empty means no client authentication.
    pub access_token_hashes: Vec<[u8; 32]>,
    pub rate_limit: Option<crate::limits::RateLimitConfig>,
    /// `[budgets]`; `None` when it sets no limit.
    pub budgets: Option<BudgetConfig>,
    pub updates: UpdateSettings,
}

/// Release feed the updater reads when `[updates] feed_url` is not set.
pub const DEFAULT_FEED_URL: &str = "https://api.github.com/repos/cco-dev/cco/releases";

/// Settings of the self-updater, from `[updates]` in `config.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateSettings {
    /// GitHub releases API URL: HTTPS, or plain HTTP to a loopback host.
    pub feed_url: String,
    pub channel: Channel,
    /// Checks the feed every `check_interval` and logs when an update is available.
    pub enabled: bool,
    /// Installs an available update found by the periodic check, then restarts.
    pub auto_install: bool,
    pub check_interval: Duration,
    /// Directory of the installed `ccod` and `ccoctl`; `None` when neither the file nor
    /// the running binary's path gives one.
    pub install_dir: Option<PathBuf>,
    /// Largest archive or checksum file downloaded.
    pub max_download_bytes: u64,
    /// Time allowed for each download, from the request to the last byte.
    pub download_timeout: Duration,
}

/// Release channel: the set of releases the updater takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// Releases without the `prerelease` flag and without a semver pre-release part.
    Stable,
    /// Every release, pre-releases included.
    Beta,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Stable => "stable",
            Channel::Beta => "beta",
        }
    }
}

/// An OpenAI-compatible upstream from a `[[providers]]` table.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    /// Name recorded as the provider of its requests, such as `ollama`.
    pub name: String,
    /// Path prefix that selects this provider, such as `/ollama`. It is removed before the
    /// request is forwarded.
    pub prefix: String,
    /// Base URL without a trailing slash.
    pub base_url: String,
    /// Environment variable that contains the key sent for clients that send none.
    pub api_key_env: Option<String>,
    /// The value of `api_key_env` when it is set and not empty.
    pub api_key: Option<Secret>,
    /// Prices of the provider's models, all with this provider's name.
    pub prices: PriceTable,
}

/// A configuration that cannot be used, with the value at fault and the fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}; pass an existing file with --config")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid {key} '{value}': {reason}")]
    Invalid {
        key: &'static str,
        value: String,
        reason: String,
    },
    #[error("cannot find a home directory for the default {what}; set {flag}")]
    NoHome {
        what: &'static str,
        flag: &'static str,
    },
    #[error("invalid config file {path}: {error}")]
    Prices {
        path: PathBuf,
        error: Box<PriceError>,
    },
    #[error(
        "[budgets] sets limits, which are checked against the recorded spend, but analytics \
         are off ({turned_off_by}), so no spend is recorded: remove the limits from [budgets] \
         or turn analytics on"
    )]
    BudgetsWithoutAnalytics {
        /// The setting that turned analytics off, such as `[analytics] enabled = false in
        /// /etc/cco/config.toml`.
        turned_off_by: String,
    },
}

impl Config {
    /// Merges flags and environment (already combined in `args` by clap), the config file
    /// and the defaults, and validates the result.
    pub fn resolve(args: &Args) -> Result<Config, ConfigError> {
        let dirs = directories::ProjectDirs::from("", "", "cco");
        let (file, config_file) = load_file(args.config.as_deref(), dirs.as_ref())?;

        let data_dir = match args.data_dir.clone().or(file.data_dir) {
            Some(dir) => dir,
            None => dirs
                .as_ref()
                .map(|dirs| dirs.data_dir().to_path_buf())
                .ok_or(ConfigError::NoHome {
                    what: "data directory",
                    flag: "--data-dir",
                })?,
        };
        let socket_path = match args.socket.clone().or(file.socket) {
            Some(path) => path,
            None => cco_proto::default_socket_path().ok_or(ConfigError::NoHome {
                what: "control socket",
                flag: "--socket",
            })?,
        };

        let analytics_enabled = match args.no_analytics {
            Some(no_analytics) => !no_analytics,
            None => file
                .analytics
                .and_then(|section| section.enabled)
                .unwrap_or(true),
        };
        let budgets = parse_budgets(file.budgets.unwrap_or_default())?;
        if budgets.is_some() && !analytics_enabled {
            let turned_off_by = match (args.no_analytics, &config_file) {
                (Some(true), _) => "--no-analytics or CCO_NO_ANALYTICS".to_owned(),
                (_, Some(path)) => {
                    format!("[analytics] enabled = false in {}", path.display())
                }
                (_, None) => "[analytics] enabled = false".to_owned(),
            };
            return Err(ConfigError::BudgetsWithoutAnalytics { turned_off_by });
        }

        let providers = parse_providers(file.providers, config_file.as_deref())?;
        let price_overrides =
            parse_price_overrides(file.prices, config_file.as_deref(), &providers)?;
        let config = Config {
            host: args
                .host
                .clone()
                .or(file.host)
                .unwrap_or_else(|| "127.0.0.1".to_owned()),
            port: args.port.or(file.port).unwrap_or(8000),
            config_file,
            data_dir,
            socket_path,
            cache_enabled: !args.no_cache.or(file.no_cache).unwrap_or(false),
            cache_size_mb: args.cache_size.or(file.cache_size).unwrap_or(500),
            analytics_enabled,
            cache_ttl: Duration::from_secs(args.cache_ttl.or(file.cache_ttl).unwrap_or(3600)),
            cache_max_entries: args
                .cache_max_entries
                .or(file.cache_max_entries)
                .unwrap_or(DEFAULT_CACHE_MAX_ENTRIES),
            db_cache_size_mb: args
                .db_cache_size
                .or(file.db_cache_size)
                .unwrap_or(DEFAULT_DB_CACHE_SIZE_MB),
            anthropic_base_url: normalize_base_url(
                "anthropic_base_url",
                args.anthropic_base_url
                    .clone()
                    .or(file.anthropic_base_url)
                    .unwrap_or_else(|| DEFAULT_ANTHROPIC_BASE_URL.to_owned()),
            )?,
            anthropic_api_key: secret_from_env("ANTHROPIC_API_KEY"),
            openai_base_url: normalize_base_url(
                "openai_base_url",
                args.openai_base_url
                    .clone()
                    .or(file.openai_base_url)
                    .unwrap_or_else(|| DEFAULT_OPENAI_BASE_URL.to_owned()),
            )?,
            openai_api_key: secret_from_env("OPENAI_API_KEY"),
            providers,
            price_overrides,
            log_level: args
                .log_level
                .clone()
                .or(file.log_level)
                .unwrap_or_else(|| "info".to_owned()),
            log_file: args.log_file.clone().or(file.log_file),
            max_connections: args
                .max_connections
                .or(file.max_connections)
                .unwrap_or(1024),
            upstream_timeout: Duration::from_secs(
                args.upstream_timeout
                    .or(file.upstream_timeout)
                    .unwrap_or(600),
            ),
            connect_timeout: Duration::from_secs(
                args.connect_timeout.or(file.connect_timeout).unwrap_or(10),
            ),
            max_body_bytes: mb_to_bytes(args.max_body_size.or(file.max_body_size).unwrap_or(32)),
            analytics_flush_interval: Duration::from_millis(500),
            tls: match (
                args.tls_cert.clone().or(file.tls_cert),
                args.tls_key.clone().or(file.tls_key),
            ) {
                (Some(cert), Some(key)) => Some((cert, key)),
                (None, None) => None,
                (Some(cert), None) => {
                    return Err(invalid(
                        "tls_key",
                        "",
                        &format!("missing: tls_cert {} needs a key", cert.display()),
                    ))
                }
                (None, Some(key)) => {
                    return Err(invalid(
                        "tls_cert",
                        "",
                        &format!("missing: tls_key {} needs a certificate", key.display()),
                    ))
                }
            },
            client_timeout: Duration::from_secs(
                args.client_timeout.or(file.client_timeout).unwrap_or(30),
            ),
            access_token_hashes: parse_token_hashes(
                file.proxy
                    .map(|proxy| proxy.access_tokens)
                    .unwrap_or_default(),
            )?,
            rate_limit: parse_rate_limit(file.rate_limiting)?,
            budgets,
            updates: parse_updates(file.updates.unwrap_or_default())?,
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.cache_enabled && self.cache_size_mb == 0 {
            return Err(invalid(
                "cache_size",
                "0",
                "must be at least 1 MB; use --no-cache to disable the cache",
            ));
        }
        if self.cache_enabled && self.cache_max_entries == 0 {
            return Err(invalid(
                "cache_max_entries",
                "0",
                "must be at least 1; use --no-cache to disable the cache",
            ));
        }
        if self.db_cache_size_mb == 0 {
            return Err(invalid("db_cache_size", "0", "must be at least 1 MB"));
        }
        if self.db_cache_size_mb > MAX_DB_CACHE_MB {
            return Err(invalid(
                "db_cache_size",
                &self.db_cache_size_mb.to_string(),
                &format!("must be at most {MAX_DB_CACHE_MB} MB (64 GiB)"),
            ));
        }
        if self.cache_ttl.is_zero() {
            return Err(invalid(
                "cache_ttl",
                "0",
                "must be at least 1 second; use --no-cache to disable the cache",
            ));
        }
        if self.max_connections == 0 {
            return Err(invalid("max_connections", "0", "must be at least 1"));
        }
        if self.upstream_timeout.is_zero() {
            return Err(invalid(
                "upstream_timeout",
                "0",
                "must be at least 1 second",
            ));
        }
        if self.connect_timeout.is_zero() {
            return Err(invalid("connect_timeout", "0", "must be at least 1 second"));
        }
        if self.client_timeout.is_zero() {
            return Err(invalid("client_timeout", "0", "must be at least 1 second"));
        }
        if self.max_body_bytes == 0 {
            return Err(invalid("max_body_size", "0", "must be at least 1 MB"));
        }
        let level = self.log_level.trim();
        let is_directive = level.contains('=') || level.contains("::") || level.contains(',');
        let levels = ["off", "error", "warn", "info", "debug", "trace"];
        if !is_directive && !levels.contains(&level.to_ascii_lowercase().as_str()) {
            return Err(invalid(
                "log_level",
                &self.log_level,
                "not a level; use off, error, warn, info, debug, trace, or a directive such \
                 as ccod=debug",
            ));
        }
        if let Err(err) =
            tracing_subscriber::EnvFilter::try_new(crate::logging::directives(&self.log_level))
        {
            return Err(invalid(
                "log_level",
                &self.log_level,
                &format!("{err}; use error, warn, info, debug or trace"),
            ));
        }
        Ok(())
    }

    /// Returns the price table that prices requests: the embedded rows, then each
    /// provider's rows, then the `[[prices]]` overrides, each replacing rows of the same
    /// provider and id before it.
    pub fn effective_prices(&self) -> PriceTable {
        let mut prices = PriceTable::embedded();
        for provider in &self.providers {
            prices.merge(provider.prices.clone());
        }
        prices.merge(self.price_overrides.clone());
        prices
    }

    /// Capacity of the response cache in bytes.
    pub fn cache_capacity_bytes(&self) -> u64 {
        self.cache_size_mb.saturating_mul(1024 * 1024)
    }

    /// Size of sled's page cache in bytes.
    pub fn db_cache_bytes(&self) -> u64 {
        self.db_cache_size_mb.saturating_mul(1024 * 1024)
    }

    /// Returns the effective configuration as TOML, in the `config.toml` key names. The API key is
    /// shown only as whether it is set.
    pub fn to_redacted_toml(&self) -> String {
        #[derive(Serialize)]
        struct Shown<'a> {
            host: &'a str,
            port: u16,
            config_file: String,
            data_dir: String,
            socket: String,
            no_cache: bool,
            cache_size: u64,
            cache_ttl: u64,
            cache_max_entries: u64,
            db_cache_size: u64,
            anthropic_base_url: &'a str,
            anthropic_api_key: &'a str,
            openai_base_url: &'a str,
            openai_api_key: &'a str,
            log_level: &'a str,
            log_file: String,
            max_connections: usize,
            upstream_timeout: u64,
            connect_timeout: u64,
            max_body_size: u64,
            tls_cert: String,
            tls_key: String,
            client_timeout: u64,
            access_tokens: String,
            rate_limiting: String,
            budgets: String,
            analytics: ShownAnalytics,
            updates: ShownUpdates<'a>,
            // Arrays of tables come last, because TOML allows no plain key after one.
            providers: Vec<ShownProvider<'a>>,
        }
        #[derive(Serialize)]
        struct ShownProvider<'a> {
            name: &'a str,
            prefix: &'a str,
            base_url: &'a str,
            api_key_env: &'a str,
            api_key: &'a str,
            priced_models: usize,
        }
        #[derive(Serialize)]
        struct ShownAnalytics {
            enabled: bool,
        }
        #[derive(Serialize)]
        struct ShownUpdates<'a> {
            feed_url: &'a str,
            channel: &'a str,
            enabled: bool,
            auto_install: bool,
            check_interval: u64,
            install_dir: String,
            max_download_size: u64,
            download_timeout: u64,
        }
        let updates = &self.updates;
        let shown = Shown {
            host: &self.host,
            port: self.port,
            config_file: display_optional(self.config_file.as_deref()),
            data_dir: self.data_dir.display().to_string(),
            socket: self.socket_path.display().to_string(),
            no_cache: !self.cache_enabled,
            cache_size: self.cache_size_mb,
            cache_ttl: self.cache_ttl.as_secs(),
            cache_max_entries: self.cache_max_entries,
            db_cache_size: self.db_cache_size_mb,
            anthropic_base_url: &self.anthropic_base_url,
            anthropic_api_key: if self.anthropic_api_key.is_some() {
                "<redacted: set from ANTHROPIC_API_KEY>"
            } else {
                "<not set>"
            },
            openai_base_url: &self.openai_base_url,
            openai_api_key: if self.openai_api_key.is_some() {
                "<redacted: set from OPENAI_API_KEY>"
            } else {
                "<not set>"
            },
            log_level: &self.log_level,
            log_file: display_optional(self.log_file.as_deref()),
            max_connections: self.max_connections,
            upstream_timeout: self.upstream_timeout.as_secs(),
            connect_timeout: self.connect_timeout.as_secs(),
            max_body_size: (self.max_body_bytes / (1024 * 1024)) as u64,
            tls_cert: display_optional(self.tls.as_ref().map(|(cert, _)| cert.as_path())),
            tls_key: display_optional(self.tls.as_ref().map(|(_, key)| key.as_path())),
            client_timeout: self.client_timeout.as_secs(),
            access_tokens: format!(
                "{} configured (SHA-256 digests)",
                self.access_token_hashes.len()
            ),
            rate_limiting: match self.rate_limit {
                Some(limit) => format!(
                    "{} requests per minute, burst {}",
                    limit.max_requests_per_minute, limit.burst_size
                ),
                None => "off".to_owned(),
            },
            budgets: self
                .budgets
                .as_ref()
                .map_or_else(|| "off".to_owned(), describe_budgets),
            analytics: ShownAnalytics {
                enabled: self.analytics_enabled,
            },
            updates: ShownUpdates {
                feed_url: &updates.feed_url,
                channel: updates.channel.as_str(),
                enabled: updates.enabled,
                auto_install: updates.auto_install,
                check_interval: updates.check_interval.as_secs(),
                install_dir: display_optional(updates.install_dir.as_deref()),
                max_download_size: updates.max_download_bytes / (1024 * 1024),
                download_timeout: updates.download_timeout.as_secs(),
            },
            providers: self
                .providers
                .iter()
                .map(|provider| ShownProvider {
                    name: &provider.name,
                    prefix: &provider.prefix,
                    base_url: &provider.base_url,
                    api_key_env: provider.api_key_env.as_deref().unwrap_or("<none>"),
                    api_key: if provider.api_key.is_some() {
                        "<redacted>"
                    } else {
                        "<not set>"
                    },
                    priced_models: provider.prices.models().count(),
                })
                .collect(),
        };
        toml::to_string(&shown).expect("plain config fields serialize to TOML")
    }
}

/// Reads an API key from the environment variable `name`; an empty value counts as unset.
fn secret_from_env(name: &str) -> Option<Secret> {
    std::env::var(name)
        .ok()
        .filter(|key| !key.is_empty())
        .map(Secret::new)
}

/// Validates the `[[providers]]` tables and reads their keys from the environment.
/// `config_file` names the file in price table errors.
fn parse_providers(
    sections: Vec<ProviderSection>,
    config_file: Option<&Path>,
) -> Result<Vec<ProviderConfig>, ConfigError> {
    let mut providers: Vec<ProviderConfig> = Vec::new();
    for section in sections {
        let name = section.name;
        check_provider_name(&name)?;
        check_prefix(&section.prefix, &name)?;
        if let Some(other) = providers.iter().find(|other| other.name == name) {
            return Err(invalid(
                "providers.name",
                &name,
                &format!("two [[providers]] have this name, with prefixes {} and {}; give each its own name", other.prefix, section.prefix),
            ));
        }
        if let Some(other) = providers
            .iter()
            .find(|other| other.prefix == section.prefix)
        {
            return Err(invalid(
                "providers.prefix",
                &section.prefix,
                &format!(
                    "providers {} and {name} both use it; give each its own prefix",
                    other.name
                ),
            ));
        }
        let base_url = normalize_base_url("providers.base_url", section.base_url)?;
        if let Some(variable) = &section.api_key_env {
            let valid = !variable.is_empty()
                && variable
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_');
            if !valid {
                return Err(invalid(
                    "providers.api_key_env",
                    variable,
                    &format!(
                        "in provider {name}: expected the name of an environment variable, \
                         such as OPENROUTER_API_KEY, not the key itself"
                    ),
                ));
            }
        }
        let table = format!("[[providers]] {name}");
        let path = config_file.map(Path::to_path_buf).unwrap_or_default();
        let mut prices = PriceTable::from_rows(section.models, &table, &name).map_err(|error| {
            ConfigError::Prices {
                path: path.clone(),
                error: Box::new(error),
            }
        })?;
        prices.set_file(&path.display().to_string());
        providers.push(ProviderConfig {
            api_key: section.api_key_env.as_deref().and_then(secret_from_env),
            api_key_env: section.api_key_env,
            name,
            prefix: section.prefix,
            base_url,
            prices,
        });
    }
    Ok(providers)
}

/// Builds the `[[prices]]` rows, whose provider defaults to `anthropic`, and checks that each
/// row's provider is an upstream that requests can go to.
fn parse_price_overrides(
    rows: ModelRows,
    config_file: Option<&Path>,
    providers: &[ProviderConfig],
) -> Result<PriceTable, ConfigError> {
    let path = config_file.map(Path::to_path_buf).unwrap_or_default();
    let mut table =
        PriceTable::from_rows_defaulting(rows, SOURCE_CONFIG, "anthropic").map_err(|error| {
            ConfigError::Prices {
                path: path.clone(),
                error: Box::new(error),
            }
        })?;
    for price in table.models() {
        let known = price.provider == "anthropic"
            || price.provider == "openai"
            || providers
                .iter()
                .any(|provider| provider.name == price.provider);
        if !known {
            return Err(invalid(
                "prices.provider",
                &price.provider,
                &format!(
                    "in the [[prices]] row of model {}: no upstream has this name; use \
                     anthropic, openai or the name of a [[providers]] entry",
                    price.id
                ),
            ));
        }
    }
    table.set_file(&path.display().to_string());
    Ok(table)
}

/// Checks a provider name. The name is recorded as the provider of its requests and keys its
/// price rows, so it must not be one of the built-in upstreams.
fn check_provider_name(name: &str) -> Result<(), ConfigError> {
    if name == "anthropic" || name == "openai" {
        return Err(invalid(
            "providers.name",
            name,
            "is a built-in upstream; configure it with anthropic_base_url or openai_base_url",
        ));
    }
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.'));
    if !valid {
        return Err(invalid(
            "providers.name",
            name,
            "expected letters, digits, '-', '_' or '.', such as ollama",
        ));
    }
    Ok(())
}

/// Checks that `prefix` is one or more path segments, such as `/ollama` or `/team/vllm`, and
/// covers neither the API paths under `/v1` nor the built-in `/openai` prefix.
fn check_prefix(prefix: &str, provider: &str) -> Result<(), ConfigError> {
    let segments_valid = prefix.strip_prefix('/').is_some_and(|rest| {
        rest.split('/').all(|segment| {
            !segment.is_empty()
                && segment
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.'))
        })
    });
    if !segments_valid {
        return Err(invalid(
            "providers.prefix",
            prefix,
            &format!(
                "in provider {provider}: expected a path such as /{provider}, with no trailing \
                 slash, query or empty segment"
            ),
        ));
    }
    let covers = |reserved: &str| {
        prefix == reserved
            || prefix
                .strip_prefix(reserved)
                .is_some_and(|rest| rest.starts_with('/'))
    };
    if covers("/v1") || covers(OPENAI_PREFIX) {
        return Err(invalid(
            "providers.prefix",
            prefix,
            &format!(
                "in provider {provider}: /v1 and {OPENAI_PREFIX} are routed to the built-in \
                 upstreams; choose another prefix, such as /{provider}"
            ),
        ));
    }
    Ok(())
}

/// Reads `[proxy] access_tokens`: each entry is `sha256:` and 64 hex digits, so that the
/// file never contains a usable token.
fn parse_token_hashes(entries: Vec<String>) -> Result<Vec<[u8; 32]>, ConfigError> {
    let advice = "expected 'sha256:' and 64 hex digits; compute it with \
                  printf %s TOKEN | sha256sum";
    entries
        .iter()
        .enumerate()
        .map(|(index, entry)| {
            let shown = format!("entry {index}");
            let hex_digest = entry
                .strip_prefix("sha256:")
                .ok_or_else(|| invalid("proxy.access_tokens", &shown, advice))?;
            let mut digest = [0u8; 32];
            hex::decode_to_slice(hex_digest, &mut digest)
                .map_err(|_| invalid("proxy.access_tokens", &shown, advice))?;
            Ok(digest)
        })
        .collect()
}

fn parse_rate_limit(
    section: Option<RateLimitSection>,
) -> Result<Option<crate::limits::RateLimitConfig>, ConfigError> {
    let Some(section) = section.filter(|section| section.enabled) else {
        return Ok(None);
    };
    let per_minute = section.max_requests_per_minute.unwrap_or(60);
    let max_requests_per_minute = std::num::NonZeroU32::new(per_minute).ok_or_else(|| {
        invalid(
            "rate_limiting.max_requests_per_minute",
            "0",
            "must be at least 1; set enabled = false to turn rate limiting off",
        )
    })?;
    let burst = section.burst_size.unwrap_or(per_minute.div_ceil(6).max(1));
    let burst_size = std::num::NonZeroU32::new(burst)
        .ok_or_else(|| invalid("rate_limiting.burst_size", "0", "must be at least 1"))?;
    Ok(Some(crate::limits::RateLimitConfig {
        max_requests_per_minute,
        burst_size,
    }))
}

/// Validates `[budgets]`. Returns `None` when it sets no limit.
fn parse_budgets(section: BudgetsSection) -> Result<Option<BudgetConfig>, ConfigError> {
    let global = Limits {
        daily_nano_usd: parse_budget_amount("budgets.daily_usd", section.daily_usd, "")?,
        monthly_nano_usd: parse_budget_amount("budgets.monthly_usd", section.monthly_usd, "")?,
    };
    let mut credentials: Vec<(String, Limits)> = Vec::new();
    for (index, entry) in section.credentials.into_iter().enumerate() {
        let credential = parse_credential_prefix(&entry.credential, index)?;
        if credentials.iter().any(|(other, _)| *other == credential) {
            return Err(invalid(
                "budgets.credentials.credential",
                &credential,
                "two [[budgets.credentials]] entries name this credential; merge them into one",
            ));
        }
        let context = format!(" in the entry for credential {credential}");
        let limits = Limits {
            daily_nano_usd: parse_budget_amount(
                "budgets.credentials.daily_usd",
                entry.daily_usd,
                &context,
            )?,
            monthly_nano_usd: parse_budget_amount(
                "budgets.credentials.monthly_usd",
                entry.monthly_usd,
                &context,
            )?,
        };
        if limits == Limits::default() {
            return Err(invalid(
                "budgets.credentials",
                &credential,
                "the entry sets neither daily_usd nor monthly_usd; set one or remove the entry",
            ));
        }
        credentials.push((credential, limits));
    }
    let config = BudgetConfig {
        global,
        credentials,
    };
    Ok((!config.is_empty()).then_some(config))
}

/// Reads a budget amount in USD into nano-USD. `context` follows the reason in errors.
fn parse_budget_amount(
    key: &'static str,
    value: Option<toml::Value>,
    context: &str,
) -> Result<Option<u64>, ConfigError> {
    let Some(value) = value else {
        return Ok(None);
    };
    let text = match &value {
        toml::Value::String(text) => text.clone(),
        toml::Value::Integer(whole) => whole.to_string(),
        // Rust prints the shortest decimal that reads back as the same f64, which is the
        // literal as written for up to 15 significant digits.
        toml::Value::Float(number) if number.is_finite() => number.to_string(),
        other => other.to_string(),
    };
    let amount =
        parse_usd(&text).map_err(|reason| invalid(key, &text, &format!("{reason}{context}")))?;
    if amount == 0 {
        return Err(invalid(
            key,
            &text,
            &format!("must be more than 0{context}; leave the key out to set no limit"),
        ));
    }
    Ok(Some(amount))
}

/// Checks that a `[[budgets.credentials]]` entry names a credential by the 12 hex digits
/// that the analytics records show, and returns them in lowercase. An invalid value may be
/// the key itself, so the error names the entry's position instead of the value.
fn parse_credential_prefix(value: &str, index: usize) -> Result<String, ConfigError> {
    let valid = value.len() == 12 && value.bytes().all(|byte| byte.is_ascii_hexdigit());
    if !valid {
        return Err(invalid(
            "budgets.credentials.credential",
            &format!("entry {index}"),
            "expected the first 12 hex digits of the credential's SHA-256, as ccoctl stats \
             shows them, never the key itself: printf %s KEY | sha256sum | cut -c1-12",
        ));
    }
    Ok(value.to_ascii_lowercase())
}

/// Describes the budgets for `ccoctl config`, such as
/// `all clients: daily $5.00; credential 0123456789ab: monthly $20.00`.
fn describe_budgets(config: &BudgetConfig) -> String {
    let describe = |limits: &Limits| {
        let mut parts = Vec::new();
        if let Some(daily) = limits.daily_nano_usd {
            parts.push(format!("daily {}", format_usd(daily)));
        }
        if let Some(monthly) = limits.monthly_nano_usd {
            parts.push(format!("monthly {}", format_usd(monthly)));
        }
        parts.join(", ")
    };
    let mut scopes = Vec::new();
    if config.global != Limits::default() {
        scopes.push(format!("all clients: {}", describe(&config.global)));
    }
    for (credential, limits) in &config.credentials {
        scopes.push(format!("credential {credential}: {}", describe(limits)));
    }
    scopes.join("; ")
}

fn parse_updates(section: UpdatesSection) -> Result<UpdateSettings, ConfigError> {
    let feed_url = section
        .feed_url
        .unwrap_or_else(|| DEFAULT_FEED_URL.to_owned());
    if let Err(err) = crate::updater::check_url(&feed_url) {
        return Err(invalid("updates.feed_url", &feed_url, &err.to_string()));
    }

    let channel = match section.channel.as_deref().unwrap_or("stable") {
        "stable" => Channel::Stable,
        "beta" => Channel::Beta,
        other => {
            return Err(invalid(
                "updates.channel",
                other,
                "expected \"stable\" or \"beta\"",
            ))
        }
    };

    let check_interval = section.check_interval.unwrap_or(86_400);
    if check_interval == 0 {
        return Err(invalid(
            "updates.check_interval",
            "0",
            "must be at least 1 second; set enabled = false to turn periodic checks off",
        ));
    }

    let max_download_size = section.max_download_size.unwrap_or(200);
    if max_download_size == 0 {
        return Err(invalid(
            "updates.max_download_size",
            "0",
            "must be at least 1 MB",
        ));
    }

    let download_timeout = section.download_timeout.unwrap_or(600);
    if download_timeout == 0 {
        return Err(invalid(
            "updates.download_timeout",
            "0",
            "must be at least 1 second",
        ));
    }

    // The running binary's directory: where the binaries to replace are, unless the file
    // names another.
    let install_dir = section.install_dir.or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(Path::to_path_buf))
    });
    Ok(UpdateSettings {
        feed_url,
        channel,
        enabled: section.enabled.unwrap_or(false),
        auto_install: section.auto_install.unwrap_or(false),
        check_interval: Duration::from_secs(check_interval),
        install_dir,
        max_download_bytes: max_download_size.saturating_mul(1024 * 1024),
        download_timeout: Duration::from_secs(download_timeout),
    })
}

fn display_optional(path: Option<&Path>) -> String {
    path.map_or_else(|| "<none>".to_owned(), |path| path.display().to_string())
}

fn mb_to_bytes(mb: u64) -> usize {
    usize::try_from(mb.saturating_mul(1024 * 1024)).unwrap_or(usize::MAX)
}

fn invalid(key: &'static str, value: &str, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        key,
        value: value.to_owned(),
        reason: reason.to_owned(),
    }
}

/// Reads the file named by `--config`, which must exist, or else the default file, which
/// may be missing.
fn load_file(
    explicit: Option<&Path>,
    dirs: Option<&directories::ProjectDirs>,
) -> Result<(FileConfig, Option<PathBuf>), ConfigError> {
    let (path, required) = match explicit {
        Some(path) => (path.to_path_buf(), true),
        None => match dirs {
            Some(dirs) => (dirs.config_dir().join("config.toml"), false),
            None => return Ok((FileConfig::default(), None)),
        },
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if !required && err.kind() == std::io::ErrorKind::NotFound => {
            return Ok((FileConfig::default(), None))
        }
        Err(source) => return Err(ConfigError::Read { path, source }),
    };
    let file = toml::from_str(&text).map_err(|err| ConfigError::Parse {
        path: path.clone(),
        message: parse_error_message(&text, &err),
    })?;
    Ok((file, Some(path)))
}

/// Formats a TOML error on one line: where it is, what is wrong, and the line it is on,
/// which names the key.
fn parse_error_message(text: &str, err: &toml::de::Error) -> String {
    let reason = err.message().trim_end().replace('\n', " ");
    let Some(span) = err.span() else {
        return reason;
    };
    let before = &text[..span.start.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |index| index + 1);
    let column = before[line_start..].chars().count() + 1;
    let source_line = text[line_start..].lines().next().unwrap_or("").trim();
    format!("line {line}, column {column}: {reason} (in `{source_line}`)")
}

/// Checks that `url`, the value of setting `key`, is an absolute http(s) URL with a host and
/// strips a trailing slash.
fn normalize_base_url(key: &'static str, url: String) -> Result<String, ConfigError> {
    let reason = "expected an absolute URL such as https://api.anthropic.com";
    let uri: awc::http::Uri = url
        .parse()
        .map_err(|err| invalid(key, &url, &format!("{err}; {reason}")))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => {
            return Err(invalid(
                key,
                &url,
                &format!("the scheme must be http or https; {reason}"),
            ))
        }
    }
    if uri.host().is_none() {
        return Err(invalid(key, &url, reason));
    }
    if uri
        .authority()
        .is_some_and(|authority| authority.as_str().contains('@'))
    {
        // The value is shown in errors and `--test-config`, so it must not carry a password.
        return Err(invalid(
            key,
            "<with user info, not shown>",
            "must not contain a user name or password; clients send their own credentials",
        ));
    }
    if uri.query().is_some() {
        return Err(invalid(key, &url, "must not contain a query string"));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args_with_file(dir: &Path, text: &str) -> Args {
        let path = dir.join("config.toml");
        std::fs::write(&path, text).unwrap();
        Args {
            config: Some(path),
            data_dir: Some(dir.join("data")),
            socket: Some(dir.join("ccod.sock")),
            ..Args::default()
        }
    }

    #[test]
    fn defaults_apply_without_file() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::resolve(&args_with_file(dir.path(), "")).unwrap();
        assert_eq!(config.host, "127.0.0.1");
        assert_eq!(config.port, 8000);
        assert!(config.cache_enabled);
        assert_eq!(config.cache_size_mb, 500);
        assert_eq!(config.cache_ttl, Duration::from_secs(3600));
        assert_eq!(config.cache_max_entries, 100_000);
        assert_eq!(config.db_cache_size_mb, DEFAULT_DB_CACHE_SIZE_MB);
        assert_eq!(config.anthropic_base_url, DEFAULT_ANTHROPIC_BASE_URL);
        assert_eq!(config.max_connections, 1024);
    }

    #[test]
    fn flag_overrides_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut args = args_with_file(dir.path(), "port = 9000\ncache_ttl = 60\n");
        args.port = Some(9100);
        let config = Config::resolve(&args).unwrap();
        assert_eq!(config.port, 9100);
        assert_eq!(config.cache_ttl, Duration::from_secs(60));
    }

    #[test]
    fn memory_limits_from_file_and_flag() {
        let dir = tempfile::tempdir().unwrap();
        let text = "cache_max_entries = 5000\ndb_cache_size = 8\n";
        let config = Config::resolve(&args_with_file(dir.path(), text)).unwrap();
        assert_eq!(config.cache_max_entries, 5000);
        assert_eq!(config.db_cache_size_mb, 8);
        assert_eq!(config.db_cache_bytes(), 8 * 1024 * 1024);
        let shown = config.to_redacted_toml();
        assert!(shown.contains("cache_max_entries = 5000\n"), "{shown}");
        assert!(shown.contains("db_cache_size = 8\n"), "{shown}");

        let mut args = args_with_file(dir.path(), text);
        args.cache_max_entries = Some(70);
        args.db_cache_size = Some(4);
        let config = Config::resolve(&args).unwrap();
        assert_eq!(config.cache_max_entries, 70);
        assert_eq!(config.db_cache_size_mb, 4);
    }

    #[test]
    fn unknown_key_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let err = Config::resolve(&args_with_file(dir.path(), "prot = 9000\n")).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("unknown field `prot`"), "{message}");
        assert!(message.contains("config.toml"), "{message}");
    }

    #[test]
    fn wrong_type_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let text = "cache_size = 10\n[analytics]\nenabled = \"no\"\n";
        let err = Config::resolve(&args_with_file(dir.path(), text)).unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
        let message = err.to_string();
        assert!(
            message.ends_with(
                "config.toml: line 3, column 11: invalid type: string \"no\", expected a \
                 boolean (in `enabled = \"no\"`)"
            ),
            "{message}"
        );
    }

    #[test]
    fn missing_explicit_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let args = Args {
            config: Some(dir.path().join("absent.toml")),
            ..Args::default()
        };
        let err = Config::resolve(&args).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }), "{err}");
    }

    #[test]
    fn bad_base_url_names_value() {
        let dir = tempfile::tempdir().unwrap();
        for url in ["ftp://example.com", "not a url", "/v1", "http://h/?q=1"] {
            let mut args = args_with_file(dir.path(), "");
            args.anthropic_base_url = Some(url.to_owned());
            let err = Config::resolve(&args).unwrap_err().to_string();
            assert!(err.contains("anthropic_base_url"), "{err}");
            assert!(err.contains(url), "{err}");
        }
    }

    #[test]
    fn base_url_with_password_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let mut args = args_with_file(dir.path(), "");
        args.anthropic_base_url = Some("http://user:hunter2@127.0.0.1:9".to_owned());
        let err = Config::resolve(&args).unwrap_err().to_string();
        assert!(err.contains("user name or password"), "{err}");
        assert!(!err.contains("hunter2"), "the password leaked: {err}");
    }

    #[test]
    fn base_url_loses_trailing_slash() {
        let dir = tempfile::tempdir().unwrap();
        let mut args = args_with_file(dir.path(), "");
        args.anthropic_base_url = Some("http://127.0.0.1:9/".to_owned());
        let config = Config::resolve(&args).unwrap();
        assert_eq!(config.anthropic_base_url, "http://127.0.0.1:9");
    }

    #[test]
    fn zero_limits_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        for text in [
            "cache_size = 0",
            "cache_ttl = 0",
            "cache_max_entries = 0",
            "db_cache_size = 0",
            "db_cache_size = 999999999",
            "max_connections = 0",
            "upstream_timeout = 0",
            "max_body_size = 0",
            "log_level = \"loud[\"",
            "log_level = \"debgu\"",
        ] {
            let result = Config::resolve(&args_with_file(dir.path(), text));
            assert!(result.is_err(), "{text} was accepted");
        }
    }

    #[test]
    fn access_tokens_must_be_digests() {
        let dir = tempfile::tempdir().unwrap();
        let digest = "a".repeat(64);
        let text = format!("[proxy]\naccess_tokens = [\"sha256:{digest}\"]\n");
        let config = Config::resolve(&args_with_file(dir.path(), &text)).unwrap();
        assert_eq!(config.access_token_hashes, vec![[0xaa; 32]]);

        let text = "[proxy]\naccess_tokens = [\"plain-token-value\"]\n";
        let err = Config::resolve(&args_with_file(dir.path(), text))
            .unwrap_err()
            .to_string();
        assert!(err.contains("sha256sum"), "{err}");
        assert!(
            !err.contains("plain-token-value"),
            "the token leaked: {err}"
        );
    }

    #[test]
    fn rate_limit_section_parses() {
        let dir = tempfile::tempdir().unwrap();
        let text = "[rate_limiting]\nenabled = true\nmax_requests_per_minute = 120\n";
        let config = Config::resolve(&args_with_file(dir.path(), text)).unwrap();
        let limit = config.rate_limit.unwrap();
        assert_eq!(limit.max_requests_per_minute.get(), 120);
        assert_eq!(limit.burst_size.get(), 20);

        let text = "[rate_limiting]\nenabled = false\nmax_requests_per_minute = 0\n";
        let config = Config::resolve(&args_with_file(dir.path(), text)).unwrap();
        assert!(config.rate_limit.is_none());

        let text = "[rate_limiting]\nenabled = true\nmax_requests_per_minute = 0\n";
        assert!(Config::resolve(&args_with_file(dir.path(), text)).is_err());
    }

    #[test]
    fn budgets_section_parses() {
        let dir = tempfile::tempdir().unwrap();
        let text = "[budgets]\ndaily_usd = 5\nmonthly_usd = \"100.50\"\n\
                    [[budgets.credentials]]\ncredential = \"0123456789AB\"\nmonthly_usd = 0.25\n";
        let config = Config::resolve(&args_with_file(dir.path(), text)).unwrap();
        let budgets = config.budgets.as_ref().unwrap();
        assert_eq!(budgets.global.daily_nano_usd, Some(5_000_000_000));
        assert_eq!(budgets.global.monthly_nano_usd, Some(100_500_000_000));
        assert_eq!(budgets.credentials.len(), 1);
        let (credential, limits) = &budgets.credentials[0];
        assert_eq!(credential, "0123456789ab");
        assert_eq!(limits.daily_nano_usd, None);
        assert_eq!(limits.monthly_nano_usd, Some(250_000_000));
        let shown = config.to_redacted_toml();
        assert!(
            shown.contains(
                "budgets = \"all clients: daily $5.00, monthly $100.50; credential \
                 0123456789ab: monthly $0.25\""
            ),
            "{shown}"
        );

        let config = Config::resolve(&args_with_file(dir.path(), "[budgets]\n")).unwrap();
        assert!(config.budgets.is_none());
        assert!(config.to_redacted_toml().contains("budgets = \"off\""));
    }

    #[test]
    fn budgets_section_rejects_bad_values() {
        let dir = tempfile::tempdir().unwrap();
        let entry = |fields: &str| format!("[[budgets.credentials]]\n{fields}\n");
        for (text, expected) in [
            ("[budgets]\ndaily_usd = 0".to_owned(), "must be more than 0"),
            (
                "[budgets]\ndaily_usd = -5".to_owned(),
                "budgets.daily_usd '-5'",
            ),
            (
                "[budgets]\nmonthly_usd = \"0.0000000001\"".to_owned(),
                "more than 9 decimal places",
            ),
            (
                "[budgets]\ndaily_usd = \"$5\"".to_owned(),
                "budgets.daily_usd '$5'",
            ),
            (
                "[budgets]\ndaily_usd = true".to_owned(),
                "budgets.daily_usd",
            ),
            (
                "[budgets]\nweekly_usd = 5".to_owned(),
                "unknown field `weekly_usd`",
            ),
            (
                entry("credential = \"0123456789ab\""),
                "sets neither daily_usd nor monthly_usd",
            ),
            (
                entry("credential = \"0123456789ab\"\ndaily_usd = 0"),
                "in the entry for credential 0123456789ab",
            ),
            (
                format!(
                    "{}{}",
                    entry("credential = \"0123456789ab\"\ndaily_usd = 1"),
                    entry("credential = \"0123456789AB\"\ndaily_usd = 2")
                ),
                "two [[budgets.credentials]] entries",
            ),
            (entry("daily_usd = 1"), "missing field `credential`"),
        ] {
            let err = Config::resolve(&args_with_file(dir.path(), &text))
                .map(|_| ())
                .expect_err(&text)
                .to_string();
            assert!(err.contains(expected), "{text}\n=> {err}");
        }
    }

    #[test]
    fn budget_credential_never_echoed() {
        let dir = tempfile::tempdir().unwrap();
        let text = "[[budgets.credentials]]\ncredential = \"sk-ant-api03-secret\"\ndaily_usd = 1\n";
        let err = Config::resolve(&args_with_file(dir.path(), text))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("budgets.credentials.credential 'entry 0'"),
            "{err}"
        );
        assert!(err.contains("sha256sum"), "{err}");
        assert!(
            !err.contains("sk-ant-api03-secret"),
            "the key leaked: {err}"
        );
    }

    #[test]
    fn analytics_on_by_default() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::resolve(&args_with_file(dir.path(), "")).unwrap();
        assert!(config.analytics_enabled);
        let shown = config.to_redacted_toml();
        assert!(shown.contains("[analytics]\nenabled = true\n"), "{shown}");
    }

    /// Flag, environment and file in every order of precedence. Only this test parses the
    /// process environment for `CCO_NO_ANALYTICS`, so no other test reads the variable.
    #[test]
    fn no_analytics_flag_env_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let off = "[analytics]\nenabled = false\n";
        let on = "[analytics]\nenabled = true\n";
        let cases: [(&[&str], Option<&str>, &str, bool); 12] = [
            (&[], None, "", true),
            (&[], None, "[analytics]\n", true),
            (&[], None, on, true),
            (&[], None, off, false),
            (&["--no-analytics"], None, "", false),
            (&["--no-analytics"], None, on, false),
            (&["--no-analytics=false"], None, off, true),
            (&[], Some("1"), "", false),
            (&[], Some("true"), on, false),
            (&[], Some("false"), off, true),
            (&["--no-analytics=false"], Some("true"), "", true),
            (&["--no-analytics"], Some("false"), "", false),
        ];
        for (flags, env, file, expected) in cases {
            let path = dir.path().join("config.toml");
            std::fs::write(&path, file).unwrap();
            match env {
                Some(value) => std::env::set_var("CCO_NO_ANALYTICS", value),
                None => std::env::remove_var("CCO_NO_ANALYTICS"),
            }
            let mut argv = vec!["ccod".to_owned(), "--config".to_owned()];
            argv.push(path.display().to_string());
            argv.push("--data-dir".to_owned());
            argv.push(dir.path().join("data").display().to_string());
            argv.push("--socket".to_owned());
            argv.push(dir.path().join("ccod.sock").display().to_string());
            argv.extend(flags.iter().map(|flag| (*flag).to_owned()));
            let parsed = Args::try_parse_from(&argv);
            std::env::remove_var("CCO_NO_ANALYTICS");
            let case = format!("flags {flags:?}, CCO_NO_ANALYTICS {env:?}, file {file:?}");
            let config = Config::resolve(&parsed.expect(&case)).expect(&case);
            assert_eq!(config.analytics_enabled, expected, "{case}");
            let shown = config.to_redacted_toml();
            let line = format!("[analytics]\nenabled = {expected}\n");
            assert!(shown.contains(&line), "{case}: {shown}");
        }
    }

    #[test]
    fn analytics_section_rejects_bad_values() {
        let dir = tempfile::tempdir().unwrap();
        for (text, expected) in [
            ("[analytics]\nenabled = \"no\"", "enabled"),
            ("[analytics]\nrecords = false", "unknown field `records`"),
            ("no_analytics = true", "unknown field `no_analytics`"),
        ] {
            let err = Config::resolve(&args_with_file(dir.path(), text))
                .map(|_| ())
                .expect_err(text);
            assert!(matches!(err, ConfigError::Parse { .. }), "{text}: {err}");
            let message = err.to_string();
            assert!(message.contains(expected), "{text}: {message}");
        }
    }

    #[test]
    fn budgets_need_analytics() {
        let dir = tempfile::tempdir().unwrap();
        let budgets = "[budgets]\ndaily_usd = 5\n";
        let credential_budget =
            "[[budgets.credentials]]\ncredential = \"0123456789ab\"\nmonthly_usd = 1\n";
        for text in [budgets, credential_budget] {
            let args = args_with_file(dir.path(), &format!("[analytics]\nenabled = false\n{text}"));
            let path = args.config.clone().unwrap();
            let err = Config::resolve(&args).map(|_| ()).expect_err(text);
            assert!(
                matches!(err, ConfigError::BudgetsWithoutAnalytics { .. }),
                "{text}: {err:?}"
            );
            let message = err.to_string();
            let setting = format!("[analytics] enabled = false in {}", path.display());
            assert!(message.contains(&setting), "{message}");
            assert!(message.starts_with("[budgets] sets limits"), "{message}");
            assert!(
                message.ends_with("remove the limits from [budgets] or turn analytics on"),
                "{message}"
            );

            let mut args = args_with_file(dir.path(), text);
            args.no_analytics = Some(true);
            let message = Config::resolve(&args)
                .map(|_| ())
                .expect_err(text)
                .to_string();
            assert!(
                message.contains("(--no-analytics or CCO_NO_ANALYTICS)"),
                "{message}"
            );
        }

        // A [budgets] section without limits needs no recorded spend.
        let mut args = args_with_file(dir.path(), "[budgets]\n");
        args.no_analytics = Some(true);
        let config = Config::resolve(&args).unwrap();
        assert!(!config.analytics_enabled);
        assert!(config.budgets.is_none());

        // The flag turning analytics back on lifts the conflict with the file.
        let mut args = args_with_file(
            dir.path(),
            &format!("[analytics]\nenabled = false\n{budgets}"),
        );
        args.no_analytics = Some(false);
        let config = Config::resolve(&args).unwrap();
        assert!(config.analytics_enabled);
        assert!(config.budgets.is_some());
    }

    #[test]
    fn openai_base_url_defaults_and_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::resolve(&args_with_file(dir.path(), "")).unwrap();
        assert_eq!(config.openai_base_url, DEFAULT_OPENAI_BASE_URL);
        let text = "openai_base_url = \"http://127.0.0.1:11/\"\n";
        let config = Config::resolve(&args_with_file(dir.path(), text)).unwrap();
        assert_eq!(config.openai_base_url, "http://127.0.0.1:11");
        let mut args = args_with_file(dir.path(), text);
        args.openai_base_url = Some("ftp://example.com".to_owned());
        let err = Config::resolve(&args).unwrap_err().to_string();
        assert!(err.contains("openai_base_url"), "{err}");
    }

    const PROVIDER: &str = r#"
[[providers]]
name = "ollama"
prefix = "/ollama"
base_url = "http://127.0.0.1:11434/"
api_key_env = "CCO_CONFIG_TEST_OLLAMA_KEY"

[[providers.models]]
id = "llama3.2"
input = 0
output = 0
cache_write_5m = 0
cache_write_1h = 0
cache_read = 0
"#;

    #[test]
    fn providers_section_parses() {
        let dir = tempfile::tempdir().unwrap();
        std::env::set_var("CCO_CONFIG_TEST_OLLAMA_KEY", "sk-ollama-test");
        let config = Config::resolve(&args_with_file(dir.path(), PROVIDER)).unwrap();
        assert_eq!(config.providers.len(), 1);
        let provider = &config.providers[0];
        assert_eq!(provider.name, "ollama");
        assert_eq!(provider.prefix, "/ollama");
        assert_eq!(provider.base_url, "http://127.0.0.1:11434");
        assert_eq!(provider.api_key, Some(Secret::new("sk-ollama-test")));
        let price = provider.prices.resolve("ollama", "llama3.2").unwrap();
        assert_eq!(price.provider, "ollama");
        assert_eq!(price.input, 0);

        let shown = config.to_redacted_toml();
        assert!(!shown.contains("sk-ollama-test"), "{shown}");
        assert!(shown.contains("[[providers]]"), "{shown}");
        assert!(shown.contains("prefix = \"/ollama\""), "{shown}");
        assert!(shown.contains("api_key = \"<redacted>\""), "{shown}");
        assert!(shown.contains("priced_models = 1"), "{shown}");
    }

    #[test]
    fn invalid_providers_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let provider = |name: &str, prefix: &str, extra: &str| {
            format!(
                "[[providers]]\nname = \"{name}\"\nprefix = \"{prefix}\"\n\
                 base_url = \"http://127.0.0.1:1\"\n{extra}"
            )
        };
        let two = format!("{}{}", provider("a", "/a", ""), provider("b", "/a", ""));
        let same_name = format!("{}{}", provider("a", "/a", ""), provider("a", "/b", ""));
        let cases = [
            (provider("openai", "/x", ""), "providers.name"),
            (provider("anthropic", "/x", ""), "providers.name"),
            (provider("", "/x", ""), "providers.name"),
            (provider("a b", "/x", ""), "providers.name"),
            (provider("a", "ollama", ""), "providers.prefix"),
            (provider("a", "/", ""), "providers.prefix"),
            (provider("a", "/a/", ""), "providers.prefix"),
            (provider("a", "/a//b", ""), "providers.prefix"),
            (provider("a", "/a?x", ""), "providers.prefix"),
            (provider("a", "/v1", ""), "providers.prefix"),
            (provider("a", "/v1/x", ""), "providers.prefix"),
            (provider("a", "/openai", ""), "providers.prefix"),
            (provider("a", "/openai/x", ""), "providers.prefix"),
            (two, "providers.prefix"),
            (same_name, "providers.name"),
            (
                provider("a", "/a", "api_key_env = \"sk-123-not-a-name\"\n"),
                "providers.api_key_env",
            ),
            (
                "[[providers]]\nname = \"a\"\nprefix = \"/a\"\nbase_url = \"not a url\"\n"
                    .to_owned(),
                "providers.base_url",
            ),
            (
                provider("a", "/a", "unknown = 1\n"),
                "unknown field `unknown`",
            ),
            (
                "[[providers]]\nname = \"a\"\nbase_url = \"http://h\"\n".to_owned(),
                "missing field `prefix`",
            ),
            (
                provider(
                    "a",
                    "/a",
                    "[[providers.models]]\nid = \"m\"\nprovider = \"openai\"\ninput = 0\n",
                ),
                "[[providers]] a price table, model m",
            ),
            (
                provider("a", "/a", "[[providers.models]]\nid = \"m\"\ninput = 0\n"),
                "missing required field `output`",
            ),
        ];
        for (text, expected) in cases {
            let err = Config::resolve(&args_with_file(dir.path(), &text))
                .map(|_| ())
                .expect_err(&text)
                .to_string();
            assert!(err.contains(expected), "{text}\n=> {err}");
        }
    }

    #[test]
    fn updates_section_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::resolve(&args_with_file(dir.path(), "")).unwrap();
        let updates = &config.updates;
        assert_eq!(updates.feed_url, DEFAULT_FEED_URL);
        assert_eq!(updates.channel, Channel::Stable);
        assert!(!updates.enabled);
        assert!(!updates.auto_install);
        assert_eq!(updates.check_interval, Duration::from_secs(86_400));
        assert_eq!(updates.max_download_bytes, 200 * 1024 * 1024);
        let exe_dir = std::env::current_exe()
            .unwrap()
            .parent()
            .unwrap()
            .to_path_buf();
        assert_eq!(updates.install_dir, Some(exe_dir));
    }

    #[test]
    fn updates_section_parses() {
        let dir = tempfile::tempdir().unwrap();
        let text = "[updates]\nfeed_url = \"http://127.0.0.1:9/releases\"\nchannel = \"beta\"\n\
                    enabled = true\nauto_install = true\ncheck_interval = 60\n\
                    install_dir = \"/opt/cco/bin\"\nmax_download_size = 5\ndownload_timeout = 7\n";
        let config = Config::resolve(&args_with_file(dir.path(), text)).unwrap();
        let updates = &config.updates;
        assert_eq!(updates.feed_url, "http://127.0.0.1:9/releases");
        assert_eq!(updates.channel, Channel::Beta);
        assert!(updates.enabled);
        assert!(updates.auto_install);
        assert_eq!(updates.check_interval, Duration::from_secs(60));
        assert_eq!(updates.install_dir, Some(PathBuf::from("/opt/cco/bin")));
        assert_eq!(updates.max_download_bytes, 5 * 1024 * 1024);
        assert_eq!(updates.download_timeout, Duration::from_secs(7));

        let shown = config.to_redacted_toml();
        assert!(shown.contains("[updates]"), "{shown}");
        assert!(shown.contains("channel = \"beta\""), "{shown}");
        assert!(shown.contains("install_dir = \"/opt/cco/bin\""), "{shown}");
        assert!(shown.contains("max_download_size = 5"), "{shown}");
    }

    #[test]
    fn updates_section_rejects_bad_values() {
        let dir = tempfile::tempdir().unwrap();
        for (text, key) in [
            (
                "[updates]\nfeed_url = \"http://example.com/r\"",
                "updates.feed_url",
            ),
            (
                "[updates]\nfeed_url = \"ftp://127.0.0.1/r\"",
                "updates.feed_url",
            ),
            ("[updates]\nchannel = \"nightly\"", "updates.channel"),
            ("[updates]\ncheck_interval = 0", "updates.check_interval"),
            (
                "[updates]\nmax_download_size = 0",
                "updates.max_download_size",
            ),
            (
                "[updates]\ndownload_timeout = 0",
                "updates.download_timeout",
            ),
            ("[updates]\nfeed = \"x\"", "unknown field `feed`"),
        ] {
            let err = Config::resolve(&args_with_file(dir.path(), text))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
    }

    #[test]
    fn redacted_toml_hides_key() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::resolve(&args_with_file(dir.path(), "")).unwrap();
        config.anthropic_api_key = Some(Secret::new("sk-ant-test-secret"));
        config.openai_api_key = Some(Secret::new("sk-openai-test-secret"));
        let shown = config.to_redacted_toml();
        assert!(!shown.contains("sk-ant-test-secret"));
        assert!(!shown.contains("sk-openai-test-secret"));
        assert!(shown.contains("anthropic_api_key = \"<redacted"));
        assert!(shown.contains("openai_api_key = \"<redacted: set from OPENAI_API_KEY>\""));
        assert!(shown.contains("port = 8000"));
        assert_eq!(
            format!("{:?}", config.anthropic_api_key),
            "Some(Secret(<redacted>))"
        );
    }

    const PRICE_ROWS: &str = r#"
[[prices]]
id = "claude-sonnet-4-5"
input = "2"
output = "10"
cache_write_5m = "2.5"
cache_write_1h = "4"
cache_read = "0.2"
web_search_per_1000 = "5"

[[prices]]
id = "gpt-4o-custom"
provider = "openai"
input = 1
output = 2
cache_write_5m = 0
cache_write_1h = 0
cache_read = 0
"#;

    #[test]
    fn price_rows_override_and_add() {
        let dir = tempfile::tempdir().unwrap();
        let args = args_with_file(dir.path(), PRICE_ROWS);
        let path = args.config.clone().unwrap().display().to_string();
        let config = Config::resolve(&args).unwrap();
        let prices = config.effective_prices();

        let replaced = prices
            .resolve("anthropic", "claude-sonnet-4-5-20250929")
            .unwrap();
        assert_eq!(replaced.input, 2000);
        assert_eq!(replaced.web_search, 5_000_000);
        assert_eq!(replaced.source, SOURCE_CONFIG);
        assert_eq!(replaced.file.as_deref(), Some(path.as_str()));

        let added = prices.resolve("openai", "gpt-4o-custom").unwrap();
        assert_eq!(added.output, 2000);
        assert_eq!(added.web_search, 0);
        let untouched = prices.resolve("anthropic", "claude-opus-4-5").unwrap();
        assert_eq!(untouched.source, crate::pricing::SOURCE_EMBEDDED);
    }

    #[test]
    fn price_rows_can_target_providers() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "{PROVIDER}\n[[prices]]\nid = \"llama3.2\"\nprovider = \"ollama\"\ninput = 1\n\
             output = 1\ncache_write_5m = 0\ncache_write_1h = 0\ncache_read = 0\n"
        );
        let config = Config::resolve(&args_with_file(dir.path(), &text)).unwrap();
        let prices = config.effective_prices();
        assert_eq!(prices.resolve("ollama", "llama3.2").unwrap().input, 1000);
    }

    #[test]
    fn invalid_price_rows_name_row_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let row = |body: &str| format!("[[prices]]\nid = \"my-model\"\n{body}");
        let rates =
            "input = 1\noutput = 1\ncache_write_5m = 0\ncache_write_1h = 0\ncache_read = 0\n";
        let cases = [
            (
                row("input = 1\n"),
                "config price table, model my-model: missing required field `output`",
            ),
            (
                row(&rates.replace("input = 1", "input = \"1.0001\"")),
                "model my-model: invalid `input` = \"1.0001\"",
            ),
            (
                row(&format!("{rates}web_search_per_1000 = \"x\"\n")),
                "model my-model: invalid `web_search_per_1000`",
            ),
            (
                row(&format!("provider = \"antropic\"\n{rates}")),
                "invalid prices.provider 'antropic': in the [[prices]] row of model my-model",
            ),
            (row(&format!("inptu = 1\n{rates}")), "unknown field `inptu`"),
        ];
        for (text, expected) in cases {
            let err = Config::resolve(&args_with_file(dir.path(), &text))
                .map(|_| ())
                .expect_err(&text)
                .to_string();
            assert!(err.contains(expected), "{text}\n=> {err}");
        }
    }
}
