//! Model price table and exact per-request cost.
//!
//! Money is integer nano-USD (`1 USD = 1_000_000_000`). A price of $X per million tokens is
//! `X * 1000` nano-USD per token, so every price with at most three decimals is a whole
//! number per token. [`PriceTable::from_toml`] rejects finer prices instead of rounding them.
//!
//! Every row belongs to one provider, the upstream whose requests it prices: `anthropic`,
//! `openai` or the name of a `[[providers]]` entry in the configuration. A request is priced
//! only by the rows of the upstream it went to, so two providers may list the same model id
//! at different rates.
//!
//! The embedded table (`prices.toml`) covers Anthropic's models at the standard Messages API
//! rates and OpenAI's text models at the standard rates. Batch API discounts and other pricing
//! modifiers are not modelled. Besides tokens, a row prices web searches, the one server tool
//! whose use the Messages API reports in `usage.server_tool_use.web_search_requests`.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use cco_proto::TokenCounts;
use serde::Deserialize;

/// `source` of the rows parsed from the embedded `prices.toml`.
pub const SOURCE_EMBEDDED: &str = "embedded";
/// `source` of rows that come from the operator's configuration.
pub const SOURCE_CONFIG: &str = "config";

const EMBEDDED_TOML: &str = include_str!("prices.toml");

/// Price of one web search, in nano-USD, for an `anthropic` row that sets no
/// `web_search_per_1000`: $10 per 1,000 searches.
///
/// NOTE: the Anthropic web search tool page
/// (https://docs.anthropic.com/en/docs/build-with-claude/tool-use/web-search-tool) describes
/// the tool, and the Ruby SDK reference of `BetaAnalyticsServerToolUse`
/// (https://www.rubydoc.info/github/anthropics/anthropic-sdk-ruby) defines
/// `web_search_requests` as the number of web search requests made. Neither stored copy
/// that was opened showed the rate itself, so $10 per 1,000 is the rate that third-party
/// integrations quote for it. A `[[prices]]` row overrides it where it differs.
pub const ANTHROPIC_WEB_SEARCH_NANO_USD: u64 = 10_000_000;

/// Rates of one model, in nano-USD per token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelPrice {
    /// Canonical id, such as `claude-sonnet-4-5`.
    pub id: String,
    /// Upstream whose requests the row prices: `anthropic`, `openai` or a `[[providers]]`
    /// name.
    pub provider: String,
    /// Uncached input tokens.
    pub input: u64,
    pub output: u64,
    pub cache_write_5m: u64,
    pub cache_write_1h: u64,
    pub cache_read: u64,
    /// Higher rates for long requests, for models where the provider publishes them.
    pub long_context: Option<LongContextTier>,
    /// One web search, in nano-USD. The row's `web_search_per_1000` in USD per 1,000
    /// searches, which defaults to [`ANTHROPIC_WEB_SEARCH_NANO_USD`] for `anthropic` rows
    /// and to 0 for the others.
    pub web_search: u64,
    /// Table the row came from: [`SOURCE_EMBEDDED`] or the `source` passed to
    /// [`PriceTable::from_toml`] or [`PriceTable::from_rows`].
    pub source: String,
    /// Page the rates were read from: the row's own `source` key in the TOML.
    pub url: Option<String>,
    /// Date the rates were read, `YYYY-MM-DD`: the row's `as_of` key.
    pub as_of: Option<String>,
    /// Configuration file that contains the row, or `None` for the embedded table.
    pub file: Option<String>,
}

/// Rates, in nano-USD per token, that replace the base rates for every token of a request
/// whose input exceeds the threshold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LongContextTier {
    /// Input tokens, cache writes and cache reads included, above which the tier applies.
    /// A request with exactly this many input tokens is billed at the base rates.
    pub threshold_input_tokens: u64,
    pub input: u64,
    pub output: u64,
    pub cache_write_5m: u64,
    pub cache_write_1h: u64,
    pub cache_read: u64,
}

/// Model prices of every provider.
#[derive(Debug, Clone, Default)]
pub struct PriceTable {
    /// Rows keyed by [`ModelPrice::provider`].
    providers: BTreeMap<String, ProviderPrices>,
}

/// The rows of one provider, keyed by canonical id, with aliases.
#[derive(Debug, Clone, Default)]
struct ProviderPrices {
    models: BTreeMap<String, ModelPrice>,
    /// Alias to canonical id.
    aliases: BTreeMap<String, String>,
}

/// Error from parsing a price table. Every variant names the table. `Syntax` carries the
/// TOML parser's message with line and column, and the others name the model.
#[derive(Debug, thiserror::Error)]
pub enum PriceError {
    #[error("invalid {table} price table: {error}")]
    Syntax {
        table: String,
        #[source]
        error: toml::de::Error,
    },
    #[error("{table} price table, model {model}: missing required field `{field}`")]
    MissingField {
        table: String,
        model: String,
        field: &'static str,
    },
    #[error(
        "{table} price table, model {model}: invalid `{field}` = {value}: {reason}. \
         Expected USD per million tokens as a non-negative decimal with at most 3 decimal \
         places, written as a string such as \"3.75\" or a number such as 3.75"
    )]
    InvalidRate {
        table: String,
        model: String,
        field: String,
        value: String,
        reason: &'static str,
    },
    #[error(
        "{table} price table, model {model}: invalid `web_search_per_1000` = {value}: \
         {reason}. Expected USD per 1,000 searches as a non-negative decimal with at most 6 \
         decimal places, such as \"10\" or 10"
    )]
    InvalidSearchPrice {
        table: String,
        model: String,
        value: String,
        reason: &'static str,
    },
    #[error(
        "{table} price table, model {model}: invalid `long_context.threshold_input_tokens` \
         = {value}: expected a positive integer token count such as 200000"
    )]
    InvalidThreshold {
        table: String,
        model: String,
        value: String,
    },
    #[error("{table} price table, model {model}: `{field}` is empty: expected a model name")]
    EmptyName {
        table: String,
        model: String,
        field: &'static str,
    },
    #[error(
        "{table} price table: `{name}` names both model {first} and model {second}: \
         each id and alias must name one model"
    )]
    DuplicateName {
        table: String,
        name: String,
        first: String,
        second: String,
    },
    #[error(
        "{table} price table, model {model}: `provider` = \"{found}\" does not match the \
         table's provider: leave it out or set it to \"{expected}\""
    )]
    ProviderMismatch {
        table: String,
        model: String,
        expected: String,
        found: String,
    },
}

impl PriceTable {
    /// Returns the table compiled into the binary from `prices.toml`.
    pub fn embedded() -> PriceTable {
        static EMBEDDED: OnceLock<PriceTable> = OnceLock::new();
        EMBEDDED
            .get_or_init(|| {
                PriceTable::from_toml(EMBEDDED_TOML, SOURCE_EMBEDDED)
                    .expect("the embedded prices.toml is valid, as a unit test checks")
            })
            .clone()
    }

    /// Parses a price table in the `prices.toml` layout. `source` is stored in every row's
    /// [`ModelPrice::source`] and names the table in errors.
    pub fn from_toml(text: &str, source: &str) -> Result<PriceTable, PriceError> {
        let file: PriceFile = toml::from_str(text).map_err(|error| PriceError::Syntax {
            table: source.to_owned(),
            error,
        })?;
        Self::from_entries(file.models, source, ProviderRule::Required)
    }

    /// Builds the table of one provider from `[[models]]` rows that a larger file, such as a
    /// `[[providers]]` entry of the configuration, contains. A row without `provider` gets
    /// `provider`, and a row that names another one is rejected. `source` is used as in
    /// [`PriceTable::from_toml`].
    pub fn from_rows(
        rows: ModelRows,
        source: &str,
        provider: &str,
    ) -> Result<PriceTable, PriceError> {
        Self::from_entries(rows.0, source, ProviderRule::Only(provider))
    }

    /// Builds a table from rows of any provider, such as the `[[prices]]` of the
    /// configuration. A row without `provider` gets `default_provider`.
    pub fn from_rows_defaulting(
        rows: ModelRows,
        source: &str,
        default_provider: &str,
    ) -> Result<PriceTable, PriceError> {
        Self::from_entries(rows.0, source, ProviderRule::Default(default_provider))
    }

    fn from_entries(
        entries: Vec<ModelEntry>,
        source: &str,
        rule: ProviderRule<'_>,
    ) -> Result<PriceTable, PriceError> {
        let mut table = PriceTable::default();
        for (index, mut entry) in entries.into_iter().enumerate() {
            match (rule, &entry.provider) {
                (ProviderRule::Required, _) => {}
                (ProviderRule::Default(default) | ProviderRule::Only(default), None) => {
                    entry.provider = Some(default.to_owned());
                }
                (ProviderRule::Default(_), Some(_)) => {}
                (ProviderRule::Only(expected), Some(found)) if found == expected => {}
                (ProviderRule::Only(expected), Some(found)) => {
                    return Err(PriceError::ProviderMismatch {
                        table: source.to_owned(),
                        model: entry.label(index),
                        expected: expected.to_owned(),
                        found: found.clone(),
                    })
                }
            }
            let (price, aliases) = entry.into_price(index, source)?;
            table.insert_new(price, aliases, source)?;
        }
        Ok(table)
    }

    /// Records `path` as the file of every row, for rows read from a configuration file.
    pub fn set_file(&mut self, path: &str) {
        for prices in self.providers.values_mut() {
            for price in prices.models.values_mut() {
                price.file = Some(path.to_owned());
            }
        }
    }

    /// Returns the aliases that lead to `price`'s row, sorted.
    pub fn aliases_of(&self, price: &ModelPrice) -> Vec<String> {
        let Some(prices) = self.providers.get(&price.provider) else {
            return Vec::new();
        };
        prices
            .aliases
            .iter()
            .filter(|(_, id)| **id == price.id)
            .map(|(alias, _)| alias.clone())
            .collect()
    }

    /// Prices one request of `model` with the rows of `provider`. Returns the price row's id
    /// and the cost in nano-USD.
    ///
    /// The cost is `None` (unpriced) for a model the table does not know, even without
    /// tokens, so that its stats row shows `unpriced` and never $0. A request that names no
    /// model and used nothing, such as `GET /v1/models`, costs 0.
    pub fn price_request(
        &self,
        provider: &str,
        model: Option<&str>,
        tokens: &TokenCounts,
        web_search_requests: u64,
    ) -> (Option<String>, Option<u64>) {
        match model.and_then(|model| self.resolve(provider, model)) {
            Some(row) => {
                let cost = request_cost(row, tokens, web_search_requests);
                (Some(row.id.clone()), Some(cost))
            }
            None if model.is_none() && tokens.total() == 0 && web_search_requests == 0 => {
                (None, Some(0))
            }
            None => (None, None),
        }
    }

    /// Adds the rows of `overrides`, replacing any row of the same provider with the same id.
    /// A replaced row keeps the aliases it had and gains those of its replacement. An alias in
    /// `overrides` wins over the same alias here, but an id always takes precedence over an
    /// alias in [`PriceTable::resolve`].
    pub fn merge(&mut self, overrides: PriceTable) {
        for (provider, incoming) in overrides.providers {
            let prices = self.providers.entry(provider).or_default();
            for (id, price) in incoming.models {
                // A name that becomes an id stops being an alias of another model.
                prices.aliases.remove(&id);
                prices.models.insert(id, price);
            }
            prices.aliases.extend(incoming.aliases);
        }
    }

    /// Finds the price of `model`, as a request or response names it, among the rows of
    /// `provider`.
    ///
    /// A leading `PROVIDER/` is removed first. For `anthropic`, a leading `anthropic.` is
    /// removed too, and after it a Bedrock version suffix such as `-v1:0`. The name is then
    /// tried as an exact id, as an id after removing a trailing date (`-YYYYMMDD`,
    /// Vertex-style `@YYYYMMDD`, or OpenAI-style `-YYYY-MM-DD`), as an id after removing a
    /// trailing `-latest`, and finally as an alias. Matching is case-sensitive. Returns
    /// `None` for an unknown model or provider.
    ///
    /// NOTE: Bedrock cross-region ids such as `us.anthropic.claude-…` are not recognised.
    pub fn resolve(&self, provider: &str, model: &str) -> Option<&ModelPrice> {
        let prices = self.providers.get(provider)?;
        let name = strip_provider_prefix(provider, model);
        if let Some(price) = prices.models.get(name) {
            return Some(price);
        }
        if let Some(price) = strip_date_suffix(name).and_then(|id| prices.models.get(id)) {
            return Some(price);
        }
        if let Some(price) = name
            .strip_suffix("-latest")
            .and_then(|id| prices.models.get(id))
        {
            return Some(price);
        }
        prices
            .aliases
            .get(name)
            .and_then(|id| prices.models.get(id))
    }

    /// Returns every row, by provider and then by id.
    pub fn models(&self) -> impl Iterator<Item = &ModelPrice> {
        self.providers
            .values()
            .flat_map(|prices| prices.models.values())
    }

    /// Inserts a row parsed from one table, rejecting an id or alias that an earlier row of
    /// the same table and provider already uses.
    fn insert_new(
        &mut self,
        price: ModelPrice,
        aliases: Vec<String>,
        table: &str,
    ) -> Result<(), PriceError> {
        let prices = self.providers.entry(price.provider.clone()).or_default();
        let id = price.id.clone();
        prices.check_unused(&id, &id, table)?;
        prices.models.insert(id.clone(), price);
        for alias in aliases {
            prices.check_unused(&alias, &id, table)?;
            prices.aliases.insert(alias, id.clone());
        }
        Ok(())
    }
}

impl ProviderPrices {
    fn check_unused(&self, name: &str, claimant: &str, table: &str) -> Result<(), PriceError> {
        let owner = if self.models.contains_key(name) {
            Some(name)
        } else {
            self.aliases.get(name).map(String::as_str)
        };
        match owner {
            None => Ok(()),
            Some(owner) => Err(PriceError::DuplicateName {
                table: table.to_owned(),
                name: name.to_owned(),
                first: owner.to_owned(),
                second: claimant.to_owned(),
            }),
        }
    }
}

/// Computes the cost of one request in nano-USD.
///
/// When the model has a [`LongContextTier`] and the request's input tokens (uncached input,
/// both cache writes and cache reads) exceed its threshold, every token class, output
/// included, is billed at the tier's rates. The result saturates at `u64::MAX`, which is
/// about 18.4 billion USD.
pub fn cost(price: &ModelPrice, tokens: &TokenCounts) -> u64 {
    let rates = RateCard::for_request(price, tokens);
    let lines = [
        (tokens.input, rates.input),
        (tokens.output, rates.output),
        (tokens.cache_write_5m, rates.cache_write_5m),
        (tokens.cache_write_1h, rates.cache_write_1h),
        (tokens.cache_read, rates.cache_read),
    ];
    let total = lines.iter().fold(0u128, |sum, &(count, rate)| {
        sum.saturating_add(u128::from(count) * u128::from(rate))
    });
    u64::try_from(total).unwrap_or(u64::MAX)
}

/// Computes the cost of one request in nano-USD: its tokens as [`cost`] prices them, plus
/// `web_search_requests` searches at [`ModelPrice::web_search`]. Saturates like [`cost`].
pub fn request_cost(price: &ModelPrice, tokens: &TokenCounts, web_search_requests: u64) -> u64 {
    cost(price, tokens).saturating_add(web_search_requests.saturating_mul(price.web_search))
}

/// Rule for the `provider` key of a table's rows.
#[derive(Debug, Clone, Copy)]
enum ProviderRule<'a> {
    /// Every row names its provider.
    Required,
    /// A row without `provider` gets this one, and a row that names another is rejected.
    Only(&'a str),
    /// A row without `provider` gets this one, and a row may name any other.
    Default(&'a str),
}

/// The five rates that apply to one request.
struct RateCard {
    input: u64,
    output: u64,
    cache_write_5m: u64,
    cache_write_1h: u64,
    cache_read: u64,
}

impl RateCard {
    fn for_request(price: &ModelPrice, tokens: &TokenCounts) -> RateCard {
        let input_tokens = tokens
            .input
            .saturating_add(tokens.cache_write_5m)
            .saturating_add(tokens.cache_write_1h)
            .saturating_add(tokens.cache_read);
        match &price.long_context {
            Some(tier) if input_tokens > tier.threshold_input_tokens => RateCard {
                input: tier.input,
                output: tier.output,
                cache_write_5m: tier.cache_write_5m,
                cache_write_1h: tier.cache_write_1h,
                cache_read: tier.cache_read,
            },
            _ => RateCard {
                input: price.input,
                output: price.output,
                cache_write_5m: price.cache_write_5m,
                cache_write_1h: price.cache_write_1h,
                cache_read: price.cache_read,
            },
        }
    }
}

/// Removes a leading `PROVIDER/`, and for `anthropic` a Bedrock-style `anthropic.` with the
/// version suffix that comes with it.
fn strip_provider_prefix<'a>(provider: &str, model: &'a str) -> &'a str {
    let qualified = model
        .strip_prefix(provider)
        .and_then(|rest| rest.strip_prefix('/'));
    if let Some(rest) = qualified {
        return rest;
    }
    if provider == "anthropic" {
        if let Some(rest) = model.strip_prefix("anthropic.") {
            return strip_bedrock_version(rest);
        }
    }
    model
}

/// Removes a Bedrock version suffix `-vN` or `-vN:M` from the end of `name`.
fn strip_bedrock_version(name: &str) -> &str {
    let Some(start) = name.rfind("-v") else {
        return name;
    };
    let version = &name[start + 2..];
    let (major, minor) = match version.split_once(':') {
        Some((major, minor)) => (major, Some(minor)),
        None => (version, None),
    };
    let is_number = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    let minor_ok = match minor {
        Some(minor) => is_number(minor),
        None => true,
    };
    if is_number(major) && minor_ok {
        &name[..start]
    } else {
        name
    }
}

/// Returns `name` without a trailing `-YYYYMMDD`, `@YYYYMMDD` or `-YYYY-MM-DD`, or `None`
/// if it has none.
fn strip_date_suffix(name: &str) -> Option<&str> {
    strip_compact_date(name).or_else(|| strip_dashed_date(name))
}

fn strip_compact_date(name: &str) -> Option<&str> {
    let bytes = name.as_bytes();
    let split = bytes.len().checked_sub(9)?;
    let separator = bytes[split];
    let date = &bytes[split + 1..];
    let is_date = date.iter().all(u8::is_ascii_digit);
    if split > 0 && (separator == b'-' || separator == b'@') && is_date {
        Some(&name[..split])
    } else {
        None
    }
}

/// Removes an OpenAI snapshot date such as the `-2024-08-06` of `gpt-4o-2024-08-06`.
fn strip_dashed_date(name: &str) -> Option<&str> {
    let bytes = name.as_bytes();
    let split = bytes.len().checked_sub(11)?;
    let date = &bytes[split + 1..];
    let is_date = date.iter().enumerate().all(|(index, byte)| match index {
        4 | 7 => *byte == b'-',
        _ => byte.is_ascii_digit(),
    });
    if split > 0 && bytes[split] == b'-' && is_date {
        Some(&name[..split])
    } else {
        None
    }
}

/// Converts a TOML rate in USD per million tokens to nano-USD per token.
fn parse_rate(value: &toml::Value) -> Result<u64, &'static str> {
    parse_scaled(value, 3)
}

/// Converts a TOML price in USD per 1,000 searches to nano-USD per search, which is the
/// price times 10^6.
fn parse_search_price(value: &toml::Value) -> Result<u64, &'static str> {
    parse_scaled(value, 6)
}

/// Converts a non-negative TOML string or number to an integer of `decimals` implied
/// decimal places, exactly.
fn parse_scaled(value: &toml::Value, decimals: usize) -> Result<u64, &'static str> {
    match value {
        toml::Value::String(text) => parse_decimal(text, decimals),
        toml::Value::Integer(whole) => {
            let whole = u64::try_from(*whole).map_err(|_| "prices cannot be negative")?;
            whole
                .checked_mul(10u64.pow(decimals as u32))
                .ok_or("the value is too large")
        }
        toml::Value::Float(number) => {
            if !number.is_finite() {
                return Err("the value is not a finite number");
            }
            if *number < 0.0 {
                return Err("prices cannot be negative");
            }
            // Rust prints the shortest decimal that reads back as the same f64, which is the
            // literal as written, less trailing zeros, for up to 15 significant digits.
            parse_decimal(&number.to_string(), decimals)
        }
        _ => Err("the value is neither a string nor a number"),
    }
}

/// Parses `DIGITS[.DIGITS]` into an integer of `decimals` implied decimal places, exactly:
/// with 3 decimals, USD per million tokens become nano-USD per token. Trailing zeros after
/// the last allowed decimal are accepted.
fn parse_decimal(text: &str, decimals: usize) -> Result<u64, &'static str> {
    if text.starts_with('-') {
        return Err("prices cannot be negative");
    }
    let (whole, fraction) = match text.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (text, None),
    };
    let is_digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    let fraction_ok = match fraction {
        Some(fraction) => is_digits(fraction),
        None => true,
    };
    if !is_digits(whole) || !fraction_ok {
        return Err("the value is not a decimal number");
    }
    let fraction = fraction.unwrap_or("").trim_end_matches('0');
    if fraction.len() > decimals {
        return Err(if decimals == 3 {
            "it has more than 3 decimal places, finer than 1 nano-USD per token"
        } else {
            "it has more than 6 decimal places, finer than 1 nano-USD per search"
        });
    }
    let whole: u64 = whole.parse().map_err(|_| "the value is too large")?;
    // Right-pad the fraction: with 3 decimals, "5" is 500 thousandths and "25" is 250.
    let scaled_fraction = format!("{fraction:0<decimals$}")
        .parse::<u64>()
        .expect("at most 6 ASCII digits parse as u64");
    whole
        .checked_mul(10u64.pow(decimals as u32))
        .and_then(|scaled| scaled.checked_add(scaled_fraction))
        .ok_or("the value is too large")
}

/// Layout of a price table file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceFile {
    #[serde(default)]
    models: Vec<ModelEntry>,
}

/// The `[[models]]` rows of a price table inside another file, read with
/// [`PriceTable::from_rows`].
#[derive(Debug, Default, Deserialize)]
#[serde(transparent)]
pub struct ModelRows(Vec<ModelEntry>);

impl ModelRows {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// One `[[models]]` table. Required fields are `Option` so that a missing one is reported
/// with the model's id rather than by serde.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelEntry {
    id: Option<String>,
    provider: Option<String>,
    #[serde(default)]
    aliases: Vec<String>,
    input: Option<toml::Value>,
    output: Option<toml::Value>,
    cache_write_5m: Option<toml::Value>,
    cache_write_1h: Option<toml::Value>,
    cache_read: Option<toml::Value>,
    long_context: Option<LongContextEntry>,
    /// USD per 1,000 web searches.
    web_search_per_1000: Option<toml::Value>,
    /// URL of the page the rates were read from. Optional when parsing, but a test
    /// requires it of every embedded entry.
    source: Option<String>,
    /// Date the rates were read, `YYYY-MM-DD`. Checked like `source`.
    as_of: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LongContextEntry {
    threshold_input_tokens: Option<toml::Value>,
    input: Option<toml::Value>,
    output: Option<toml::Value>,
    cache_write_5m: Option<toml::Value>,
    cache_write_1h: Option<toml::Value>,
    cache_read: Option<toml::Value>,
}

/// Validates the fields of one entry and names it in errors.
struct EntryChecker<'a> {
    table: &'a str,
    model: String,
}

impl EntryChecker<'_> {
    fn missing(&self, field: &'static str) -> PriceError {
        PriceError::MissingField {
            table: self.table.to_owned(),
            model: self.model.clone(),
            field,
        }
    }

    fn name(&self, field: &'static str, value: Option<String>) -> Result<String, PriceError> {
        let value = value.ok_or_else(|| self.missing(field))?;
        if value.is_empty() {
            return Err(PriceError::EmptyName {
                table: self.table.to_owned(),
                model: self.model.clone(),
                field,
            });
        }
        Ok(value)
    }

    /// Converts the rate under key `field`, which has a `long_context.` prefix inside the
    /// tier table.
    fn rate(&self, field: &'static str, value: Option<&toml::Value>) -> Result<u64, PriceError> {
        let value = value.ok_or_else(|| self.missing(field))?;
        parse_rate(value).map_err(|reason| PriceError::InvalidRate {
            table: self.table.to_owned(),
            model: self.model.clone(),
            field: field.to_owned(),
            value: value.to_string(),
            reason,
        })
    }

    /// Converts `web_search_per_1000`, or returns the default of `provider` when it is unset.
    fn search_price(&self, value: Option<&toml::Value>, provider: &str) -> Result<u64, PriceError> {
        let Some(value) = value else {
            return Ok(if provider == "anthropic" {
                ANTHROPIC_WEB_SEARCH_NANO_USD
            } else {
                0
            });
        };
        parse_search_price(value).map_err(|reason| PriceError::InvalidSearchPrice {
            table: self.table.to_owned(),
            model: self.model.clone(),
            value: value.to_string(),
            reason,
        })
    }

    fn threshold(&self, value: Option<&toml::Value>) -> Result<u64, PriceError> {
        let value = value.ok_or_else(|| self.missing("long_context.threshold_input_tokens"))?;
        match value {
            toml::Value::Integer(count) if *count > 0 => Ok(count.unsigned_abs()),
            _ => Err(PriceError::InvalidThreshold {
                table: self.table.to_owned(),
                model: self.model.clone(),
                value: value.to_string(),
            }),
        }
    }

    fn long_context(&self, entry: &LongContextEntry) -> Result<LongContextTier, PriceError> {
        Ok(LongContextTier {
            threshold_input_tokens: self.threshold(entry.threshold_input_tokens.as_ref())?,
            input: self.rate("long_context.input", entry.input.as_ref())?,
            output: self.rate("long_context.output", entry.output.as_ref())?,
            cache_write_5m: self
                .rate("long_context.cache_write_5m", entry.cache_write_5m.as_ref())?,
            cache_write_1h: self
                .rate("long_context.cache_write_1h", entry.cache_write_1h.as_ref())?,
            cache_read: self.rate("long_context.cache_read", entry.cache_read.as_ref())?,
        })
    }
}

impl ModelEntry {
    /// Names the entry at `index` of `[[models]]` in errors: its id, or its position.
    fn label(&self, index: usize) -> String {
        match &self.id {
            Some(id) if !id.is_empty() => id.clone(),
            _ => format!("#{} (no id)", index + 1),
        }
    }

    /// Validates the entry at `index` of `[[models]]` and returns its row and aliases.
    fn into_price(
        self,
        index: usize,
        table: &str,
    ) -> Result<(ModelPrice, Vec<String>), PriceError> {
        let model = self.label(index);
        let checker = EntryChecker { table, model };
        let id = checker.name("id", self.id)?;
        let provider = checker.name("provider", self.provider)?;
        let aliases = self
            .aliases
            .into_iter()
            .map(|alias| checker.name("aliases", Some(alias)))
            .collect::<Result<Vec<_>, _>>()?;
        let long_context = self
            .long_context
            .as_ref()
            .map(|entry| checker.long_context(entry))
            .transpose()?;
        let web_search = checker.search_price(self.web_search_per_1000.as_ref(), &provider)?;
        let price = ModelPrice {
            id,
            provider,
            input: checker.rate("input", self.input.as_ref())?,
            output: checker.rate("output", self.output.as_ref())?,
            cache_write_5m: checker.rate("cache_write_5m", self.cache_write_5m.as_ref())?,
            cache_write_1h: checker.rate("cache_write_1h", self.cache_write_1h.as_ref())?,
            cache_read: checker.rate("cache_read", self.cache_read.as_ref())?,
            long_context,
            web_search,
            source: table.to_owned(),
            url: self.source,
            as_of: self.as_of,
            file: None,
        };
        Ok((price, aliases))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(
        input: u64,
        output: u64,
        cache_write_5m: u64,
        cache_write_1h: u64,
        cache_read: u64,
    ) -> TokenCounts {
        TokenCounts {
            input,
            output,
            cache_write_5m,
            cache_write_1h,
            cache_read,
        }
    }

    fn embedded_price(model: &str) -> ModelPrice {
        PriceTable::embedded()
            .resolve("anthropic", model)
            .unwrap_or_else(|| panic!("{model} is not in the embedded table"))
            .clone()
    }

    /// A file with `[[models]]` rows, read the way the configuration reads them.
    #[derive(Deserialize)]
    struct RowsFile {
        models: ModelRows,
    }

    /// Builds a valid one-model table with its `field` line replaced by `line`. An empty
    /// `line` removes the field.
    fn table_with(field: &str, line: &str) -> String {
        let lines = [
            "id = \"test-model\"",
            "provider = \"anthropic\"",
            "input = \"3\"",
            "output = \"15\"",
            "cache_write_5m = \"3.75\"",
            "cache_write_1h = \"6\"",
            "cache_read = \"0.30\"",
        ];
        let mut text = String::from("[[models]]\n");
        for entry in lines {
            if entry.starts_with(&format!("{field} =")) {
                text.push_str(line);
            } else {
                text.push_str(entry);
            }
            text.push('\n');
        }
        text
    }

    #[test]
    fn embedded_table_parses() {
        let table = PriceTable::from_toml(EMBEDDED_TOML, SOURCE_EMBEDDED)
            .unwrap_or_else(|error| panic!("{error}"));
        assert!(table.models().all(|price| price.source == SOURCE_EMBEDDED));
        let count = |provider: &str| {
            table
                .models()
                .filter(|price| price.provider == provider)
                .count()
        };
        assert_eq!(count("anthropic"), 16);
        assert_eq!(count("openai"), 14);
        assert_eq!(table.models().count(), 30);
    }

    #[test]
    fn embedded_entries_cite_source_and_date() {
        let file: PriceFile = toml::from_str(EMBEDDED_TOML).expect("embedded table parses");
        for entry in &file.models {
            let id = entry.id.as_deref().unwrap_or("(no id)");
            let source = entry.source.as_deref().unwrap_or("");
            assert!(source.starts_with("https://"), "{id}: source {source:?}");
            let as_of = entry.as_of.as_deref().unwrap_or("");
            let is_date = as_of.len() == 10
                && as_of.bytes().enumerate().all(|(i, b)| {
                    if i == 4 || i == 7 {
                        b == b'-'
                    } else {
                        b.is_ascii_digit()
                    }
                });
            assert!(is_date, "{id}: as_of {as_of:?}");
        }
    }

    #[test]
    fn embedded_rates_match_published() {
        // (id, input, 5m write, 1h write, cache read, output) in nano-USD per token, which is
        // USD per MTok times 1000, copied from the pricing pages cited in prices.toml.
        let expected: [(&str, [u64; 5]); 16] = [
            ("claude-opus-5", [5000, 6250, 10000, 500, 25000]),
            ("claude-opus-4-7", [5000, 6250, 10000, 500, 25000]),
            ("claude-opus-4-6", [5000, 6250, 10000, 500, 25000]),
            ("claude-opus-4-5", [5000, 6250, 10000, 500, 25000]),
            ("claude-opus-4-1", [15000, 18750, 30000, 1500, 75000]),
            ("claude-opus-4", [15000, 18750, 30000, 1500, 75000]),
            ("claude-sonnet-5", [2000, 2500, 4000, 200, 10000]),
            ("claude-sonnet-4-6", [3000, 3750, 6000, 300, 15000]),
            ("claude-sonnet-4-5", [3000, 3750, 6000, 300, 15000]),
            ("claude-sonnet-4", [3000, 3750, 6000, 300, 15000]),
            ("claude-3-7-sonnet", [3000, 3750, 6000, 300, 15000]),
            ("claude-haiku-4-5", [1000, 1250, 2000, 100, 5000]),
            ("claude-3-5-haiku", [800, 1000, 1600, 80, 4000]),
            ("claude-3-5-sonnet", [3000, 3750, 6000, 300, 15000]),
            ("claude-3-opus", [15000, 18750, 30000, 1500, 75000]),
            ("claude-3-haiku", [250, 300, 500, 30, 1250]),
        ];
        let table = PriceTable::embedded();
        for (id, rates) in expected {
            let price = table.models().find(|price| price.id == id);
            let price = price.unwrap_or_else(|| panic!("{id} is missing"));
            let actual = [
                price.input,
                price.cache_write_5m,
                price.cache_write_1h,
                price.cache_read,
                price.output,
            ];
            assert_eq!(actual, rates, "{id}");
        }
    }

    #[test]
    fn embedded_openai_rates_match_published() {
        // (id, input, cached input, output) in nano-USD per token, copied from the pages
        // cited in prices.toml. OpenAI charges nothing for cache writes.
        let expected: [(&str, [u64; 3]); 14] = [
            ("gpt-5.1", [1250, 125, 10000]),
            ("gpt-5", [1250, 125, 10000]),
            ("gpt-5-mini", [250, 25, 2000]),
            ("gpt-5-nano", [50, 5, 400]),
            ("gpt-4.1", [2000, 500, 8000]),
            ("gpt-4.1-mini", [400, 100, 1600]),
            ("gpt-4.1-nano", [100, 25, 400]),
            ("gpt-4o", [2500, 1250, 10000]),
            ("gpt-4o-2024-05-13", [5000, 5000, 15000]),
            ("gpt-4o-mini", [150, 75, 600]),
            ("o1", [15000, 7500, 60000]),
            ("o3", [2000, 500, 8000]),
            ("o3-mini", [1100, 550, 4400]),
            ("o4-mini", [1100, 275, 4400]),
        ];
        let table = PriceTable::embedded();
        for (id, rates) in expected {
            let price = table.resolve("openai", id);
            let price = price.unwrap_or_else(|| panic!("{id} is missing"));
            assert_eq!(price.id, id, "{id} resolves to its own row");
            assert_eq!(price.provider, "openai", "{id}");
            assert_eq!([price.input, price.cache_read, price.output], rates, "{id}");
            assert_eq!([price.cache_write_5m, price.cache_write_1h], [0, 0], "{id}");
            assert_eq!(price.long_context, None, "{id}");
        }
    }

    #[test]
    fn resolve_keeps_providers_apart() {
        let table = PriceTable::embedded();
        assert_eq!(table.resolve("anthropic", "gpt-4o"), None);
        assert_eq!(table.resolve("openai", "claude-sonnet-4-5"), None);
        assert_eq!(table.resolve("ollama", "gpt-4o"), None);
        assert_eq!(table.resolve("openai", "anthropic/gpt-4o"), None);
        assert_eq!(table.resolve("openai", "anthropic.gpt-4o"), None);
    }

    #[test]
    fn resolve_openai_snapshots() {
        let table = PriceTable::embedded();
        let cases = [
            ("gpt-4o-2024-08-06", "gpt-4o"),
            ("gpt-4o-2024-11-20", "gpt-4o"),
            ("gpt-4o-2024-05-13", "gpt-4o-2024-05-13"),
            ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
            ("gpt-4.1-2025-04-14", "gpt-4.1"),
            ("gpt-5-2025-08-07", "gpt-5"),
            ("o3-mini-2025-01-31", "o3-mini"),
            ("openai/gpt-4o", "gpt-4o"),
            ("openai/gpt-4o-2024-08-06", "gpt-4o"),
        ];
        for (model, id) in cases {
            let price = table.resolve("openai", model);
            assert_eq!(price.map(|price| price.id.as_str()), Some(id), "{model}");
        }
        for model in [
            "gpt-4o-2024-08",
            "gpt-4o-2024-0806",
            "gpt-4o-x024-08-06",
            "-2024-08-06",
            "o1-mini",
            "GPT-4o",
        ] {
            assert_eq!(table.resolve("openai", model), None, "{model}");
        }
    }

    #[test]
    fn rows_take_table_provider() {
        let rows: ModelRows = toml::from_str::<RowsFile>(
            r#"
            [[models]]
            id = "llama3.2"
            input = 0
            output = 0
            cache_write_5m = 0
            cache_write_1h = 0
            cache_read = 0

            [[models]]
            id = "qwen3"
            provider = "ollama"
            input = "0.01"
            output = 0
            cache_write_5m = 0
            cache_write_1h = 0
            cache_read = 0
            "#,
        )
        .unwrap()
        .models;
        let table = PriceTable::from_rows(rows, "[[providers]] ollama", "ollama").unwrap();
        let llama = table.resolve("ollama", "llama3.2").unwrap();
        assert_eq!(llama.provider, "ollama");
        assert_eq!(llama.source, "[[providers]] ollama");
        assert_eq!(cost(llama, &tokens(1000, 1000, 0, 0, 0)), 0);
        assert_eq!(table.resolve("ollama", "qwen3").unwrap().input, 10);
        assert_eq!(table.resolve("openai", "llama3.2"), None);
    }

    #[test]
    fn rows_of_other_provider_rejected() {
        let rows: ModelRows =
            toml::from_str::<RowsFile>(&table_with("provider", "provider = \"openai\""))
                .unwrap()
                .models;
        let error = PriceTable::from_rows(rows, "[[providers]] ollama", "ollama").unwrap_err();
        assert_eq!(
            error.to_string(),
            "[[providers]] ollama price table, model test-model: `provider` = \"openai\" does \
             not match the table's provider: leave it out or set it to \"ollama\""
        );
    }

    #[test]
    fn merge_keeps_providers_apart() {
        let local = table_with("provider", "provider = \"ollama\"");
        let mut table = PriceTable::embedded();
        table.merge(PriceTable::from_toml(&local, SOURCE_CONFIG).unwrap());
        assert_eq!(table.resolve("ollama", "test-model").unwrap().input, 3000);
        assert_eq!(table.resolve("anthropic", "test-model"), None);
        assert!(table.resolve("openai", "gpt-4o").is_some());
    }

    #[test]
    fn embedded_long_context_tiers() {
        let with_tier: Vec<_> = PriceTable::embedded()
            .models()
            .filter(|price| price.long_context.is_some())
            .map(|price| price.id.clone())
            .collect();
        assert_eq!(with_tier, ["claude-sonnet-4", "claude-sonnet-4-5"]);
        let tier = embedded_price("claude-sonnet-4-5").long_context.unwrap();
        let expected = LongContextTier {
            threshold_input_tokens: 200_000,
            input: 6000,
            output: 22500,
            cache_write_5m: 7500,
            cache_write_1h: 12000,
            cache_read: 600,
        };
        assert_eq!(tier, expected);
    }

    #[test]
    fn cost_table() {
        let cases = [
            // sonnet-4-5: 1000 in * 3000 + 500 out * 15000 + 2000 w5m * 3750
            //   + 1000 w1h * 6000 + 4000 read * 300
            //   = 3_000_000 + 7_500_000 + 7_500_000 + 6_000_000 + 1_200_000 = 25_200_000
            (
                "claude-sonnet-4-5",
                tokens(1000, 500, 2000, 1000, 4000),
                25_200_000,
            ),
            // opus-4-5: 1000 * 5000 + 500 * 25000 + 2000 * 6250 + 1000 * 10000 + 4000 * 500
            //   = 5_000_000 + 12_500_000 + 12_500_000 + 10_000_000 + 2_000_000 = 42_000_000
            (
                "claude-opus-4-5",
                tokens(1000, 500, 2000, 1000, 4000),
                42_000_000,
            ),
            // opus-4-1: 1000 * 15000 + 500 * 75000 + 2000 * 18750 + 1000 * 30000 + 4000 * 1500
            //   = 15_000_000 + 37_500_000 + 37_500_000 + 30_000_000 + 6_000_000 = 126_000_000
            (
                "claude-opus-4-1",
                tokens(1000, 500, 2000, 1000, 4000),
                126_000_000,
            ),
            // haiku-4-5: 1000 * 1000 + 500 * 5000 + 2000 * 1250 + 1000 * 2000 + 4000 * 100
            //   = 1_000_000 + 2_500_000 + 2_500_000 + 2_000_000 + 400_000 = 8_400_000
            (
                "claude-haiku-4-5",
                tokens(1000, 500, 2000, 1000, 4000),
                8_400_000,
            ),
            // 3-5-haiku: 1000 * 800 + 500 * 4000 + 2000 * 1000 + 1000 * 1600 + 4000 * 80
            //   = 800_000 + 2_000_000 + 2_000_000 + 1_600_000 + 320_000 = 6_720_000
            (
                "claude-3-5-haiku",
                tokens(1000, 500, 2000, 1000, 4000),
                6_720_000,
            ),
            // 3-haiku: 1000 * 250 + 500 * 1250 + 2000 * 300 + 1000 * 500 + 4000 * 30
            //   = 250_000 + 625_000 + 600_000 + 500_000 + 120_000 = 2_095_000
            (
                "claude-3-haiku",
                tokens(1000, 500, 2000, 1000, 4000),
                2_095_000,
            ),
            // sonnet-5: 1000 * 2000 + 500 * 10000 + 2000 * 2500 + 1000 * 4000 + 4000 * 200
            //   = 2_000_000 + 5_000_000 + 5_000_000 + 4_000_000 + 800_000 = 16_800_000
            (
                "claude-sonnet-5",
                tokens(1000, 500, 2000, 1000, 4000),
                16_800_000,
            ),
            // opus-4: 1 out * 75000 = 75_000
            ("claude-opus-4", tokens(0, 1, 0, 0, 0), 75_000),
            // 3-7-sonnet: 1 read * 300 = 300
            ("claude-3-7-sonnet", tokens(0, 0, 0, 0, 1), 300),
            // Nothing billed.
            ("claude-sonnet-4", tokens(0, 0, 0, 0, 0), 0),
        ];
        for (model, counts, expected) in cases {
            let price = embedded_price(model);
            assert_eq!(cost(&price, &counts), expected, "{model} {counts:?}");
        }
    }

    #[test]
    fn cost_long_context_threshold() {
        let price = embedded_price("claude-sonnet-4-5");
        let cases = [
            // Below: 150_000 + 49_999 read = 199_999 input, base rates.
            // 150_000 * 3000 + 49_999 * 300 + 1000 out * 15000
            //   = 450_000_000 + 14_999_700 + 15_000_000 = 479_999_700
            (tokens(150_000, 1000, 0, 0, 49_999), 479_999_700),
            // At: 150_000 + 50_000 read = 200_000 input, not above, base rates.
            // 150_000 * 3000 + 50_000 * 300 + 1000 * 15000
            //   = 450_000_000 + 15_000_000 + 15_000_000 = 480_000_000
            (tokens(150_000, 1000, 0, 0, 50_000), 480_000_000),
            // Above: 150_001 + 50_000 read = 200_001 input, long-context rates on every class.
            // 150_001 * 6000 + 50_000 * 600 + 1000 * 22500
            //   = 900_006_000 + 30_000_000 + 22_500_000 = 952_506_000
            (tokens(150_001, 1000, 0, 0, 50_000), 952_506_000),
            // Cache writes count toward the threshold: 1000 + 100_000 + 100_000 = 201_000.
            // 1000 * 6000 + 100_000 * 7500 + 100_000 * 12000
            //   = 6_000_000 + 750_000_000 + 1_200_000_000 = 1_956_000_000
            (tokens(1000, 0, 100_000, 100_000, 0), 1_956_000_000),
            // Output does not count toward the threshold: 200_000 input, 10 out, base rates.
            // 200_000 * 3000 + 10 * 15000 = 600_000_000 + 150_000 = 600_150_000
            (tokens(200_000, 10, 0, 0, 0), 600_150_000),
        ];
        for (counts, expected) in cases {
            assert_eq!(cost(&price, &counts), expected, "{counts:?}");
        }
    }

    #[test]
    fn cost_flat_model_ignores_threshold() {
        let price = embedded_price("claude-opus-4-5");
        // 300_000 in * 5000 = 1_500_000_000
        assert_eq!(cost(&price, &tokens(300_000, 0, 0, 0, 0)), 1_500_000_000);
    }

    #[test]
    fn cost_saturates_at_u64_max() {
        let price = embedded_price("claude-opus-4");
        let counts = tokens(u64::MAX, u64::MAX, u64::MAX, u64::MAX, u64::MAX);
        assert_eq!(cost(&price, &counts), u64::MAX);
    }

    #[test]
    fn resolve_dated_id_equals_alias() {
        let table = PriceTable::embedded();
        let pairs = [
            ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
            ("claude-opus-4-5-20251101", "claude-opus-4-5"),
            ("claude-haiku-4-5-20251001", "claude-haiku-4-5"),
            ("claude-sonnet-4-20250514", "claude-sonnet-4-0"),
            ("claude-opus-4-20250514", "claude-opus-4-0"),
            ("claude-3-7-sonnet-20250219", "claude-3-7-sonnet-latest"),
            ("claude-3-5-sonnet-20241022", "claude-3-5-sonnet-latest"),
            ("claude-3-5-haiku-20241022", "claude-3-5-haiku-latest"),
            ("claude-3-opus-20240229", "claude-3-opus-latest"),
        ];
        for (dated, alias) in pairs {
            let from_dated = table.resolve("anthropic", dated);
            assert!(from_dated.is_some(), "{dated} does not resolve");
            assert_eq!(
                from_dated,
                table.resolve("anthropic", alias),
                "{dated} vs {alias}"
            );
        }
        let counts = tokens(1000, 500, 2000, 1000, 4000);
        let dated = cost(&embedded_price("claude-sonnet-4-5-20250929"), &counts);
        let alias = cost(&embedded_price("claude-sonnet-4-5"), &counts);
        assert_eq!(dated, alias);
    }

    #[test]
    fn resolve_unknown_model_is_none() {
        let table = PriceTable::embedded();
        for model in [
            "",
            "gpt-4o",
            "claude-opus-4-9",
            "claude-sonnet-4-5-2025092",
            "Claude-Sonnet-4-5",
            "openai/claude-sonnet-4-5",
            "claude-sonnet-4-5-latest-extra",
            "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
        ] {
            assert_eq!(table.resolve("anthropic", model), None, "{model}");
        }
    }

    #[test]
    fn resolve_strips_provider_prefixes() {
        let table = PriceTable::embedded();
        let expected = table.resolve("anthropic", "claude-sonnet-4-5");
        assert!(expected.is_some());
        for model in [
            "anthropic/claude-sonnet-4-5",
            "anthropic/claude-sonnet-4-5-20250929",
            "anthropic.claude-sonnet-4-5",
            "anthropic.claude-sonnet-4-5-20250929-v1:0",
            "anthropic.claude-sonnet-4-5-20250929-v1",
            "claude-sonnet-4-5@20250929",
        ] {
            assert_eq!(table.resolve("anthropic", model), expected, "{model}");
        }
        // The Bedrock version suffix is only removed after the Bedrock prefix.
        assert_eq!(
            table.resolve("anthropic", "claude-sonnet-4-5-20250929-v1:0"),
            None
        );
    }

    #[test]
    fn resolve_returns_canonical_row() {
        let price = embedded_price("claude-3-7-sonnet-latest");
        assert_eq!(price.id, "claude-3-7-sonnet");
        let price = embedded_price("claude-sonnet-4-0");
        assert_eq!(price.id, "claude-sonnet-4");
    }

    #[test]
    fn merge_replaces_and_adds() {
        let overrides = r#"
            [[models]]
            id = "claude-sonnet-4-5"
            provider = "anthropic"
            input = "2.5"
            output = "12"
            cache_write_5m = "3.125"
            cache_write_1h = "5"
            cache_read = "0.25"

            [[models]]
            id = "local-model"
            provider = "example"
            aliases = ["local-model-v2"]
            input = 1
            output = 2.5
            cache_write_5m = 0
            cache_write_1h = 0
            cache_read = "0.001"
        "#;
        let mut table = PriceTable::embedded();
        let before = table.models().count();
        table.merge(PriceTable::from_toml(overrides, SOURCE_CONFIG).unwrap());
        assert_eq!(table.models().count(), before + 1);

        let replaced = ModelPrice {
            id: "claude-sonnet-4-5".to_owned(),
            provider: "anthropic".to_owned(),
            input: 2500,
            output: 12000,
            cache_write_5m: 3125,
            cache_write_1h: 5000,
            cache_read: 250,
            long_context: None,
            web_search: ANTHROPIC_WEB_SEARCH_NANO_USD,
            source: SOURCE_CONFIG.to_owned(),
            url: None,
            as_of: None,
            file: None,
        };
        assert_eq!(
            table.resolve("anthropic", "claude-sonnet-4-5"),
            Some(&replaced)
        );
        // The embedded alias still leads to the replaced row.
        assert_eq!(
            table.resolve("anthropic", "claude-sonnet-4-5-20250929"),
            Some(&replaced)
        );

        let added = table
            .resolve("example", "local-model-v2")
            .expect("alias of the added row");
        assert_eq!(added.id, "local-model");
        assert_eq!(added.provider, "example");
        assert_eq!(added.input, 1000);
        assert_eq!(added.output, 2500);
        assert_eq!(added.cache_read, 1);
        assert_eq!(added.source, SOURCE_CONFIG);

        let untouched = table.resolve("anthropic", "claude-opus-4-5").unwrap();
        assert_eq!(untouched.source, SOURCE_EMBEDDED);
    }

    #[test]
    fn merge_override_alias_wins() {
        let overrides = r#"
            [[models]]
            id = "claude-sonnet-4-custom"
            provider = "anthropic"
            aliases = ["claude-sonnet-4-0"]
            input = "1"
            output = "1"
            cache_write_5m = "1"
            cache_write_1h = "1"
            cache_read = "1"
        "#;
        let mut table = PriceTable::embedded();
        table.merge(PriceTable::from_toml(overrides, SOURCE_CONFIG).unwrap());
        let price = table.resolve("anthropic", "claude-sonnet-4-0").unwrap();
        assert_eq!(price.id, "claude-sonnet-4-custom");
        // The id itself is unaffected.
        assert_eq!(
            table.resolve("anthropic", "claude-sonnet-4").unwrap().input,
            3000
        );
    }

    #[test]
    fn merge_id_replaces_alias() {
        let overrides = table_with("id", "id = \"claude-sonnet-4-0\"");
        let mut table = PriceTable::embedded();
        table.merge(PriceTable::from_toml(&overrides, SOURCE_CONFIG).unwrap());
        assert_eq!(
            table.resolve("anthropic", "claude-sonnet-4-0").unwrap().id,
            "claude-sonnet-4-0"
        );
        assert_eq!(
            table.resolve("anthropic", "claude-sonnet-4").unwrap().id,
            "claude-sonnet-4"
        );
    }

    #[test]
    fn rate_forms_parse_exactly() {
        let cases = [
            ("input = \"3.75\"", 3750),
            ("input = \"3.7500\"", 3750),
            ("input = \"0.001\"", 1),
            ("input = \"0\"", 0),
            ("input = \"22.50\"", 22500),
            ("input = 3", 3000),
            ("input = 3.75", 3750),
            ("input = 0.3", 300),
            ("input = 1.6", 1600),
        ];
        for (line, expected) in cases {
            let table = PriceTable::from_toml(&table_with("input", line), SOURCE_CONFIG);
            let table = table.unwrap_or_else(|error| panic!("{line}: {error}"));
            assert_eq!(
                table.resolve("anthropic", "test-model").unwrap().input,
                expected,
                "{line}"
            );
        }
    }

    #[test]
    fn invalid_rate_names_model_field_and_value() {
        let cases = [
            ("cache_read = \"-0.30\"", "\"-0.30\"", "negative"),
            ("cache_read = -1", "-1", "negative"),
            ("cache_read = -0.5", "-0.5", "negative"),
            ("cache_read = \"abc\"", "\"abc\"", "not a decimal"),
            (
                "cache_read = \"0.3025\"",
                "\"0.3025\"",
                "more than 3 decimal places",
            ),
            (
                "cache_read = 0.3025",
                "0.3025",
                "more than 3 decimal places",
            ),
            ("cache_read = \"3.\"", "\"3.\"", "not a decimal"),
            ("cache_read = \".5\"", "\".5\"", "not a decimal"),
            ("cache_read = \" 3\"", "\" 3\"", "not a decimal"),
            ("cache_read = true", "true", "neither a string nor a number"),
            ("cache_read = nan", "nan", "not a finite number"),
            (
                "cache_read = \"99999999999999999999\"",
                "\"99999999999999999999\"",
                "too large",
            ),
        ];
        for (line, value_text, reason_text) in cases {
            let error = PriceTable::from_toml(&table_with("cache_read", line), SOURCE_CONFIG)
                .expect_err(line);
            let message = error.to_string();
            let PriceError::InvalidRate {
                table,
                model,
                field,
                value,
                reason,
            } = error
            else {
                panic!("{line}: unexpected error {message}");
            };
            assert_eq!(table, SOURCE_CONFIG, "{line}");
            assert_eq!(model, "test-model", "{line}");
            assert_eq!(field, "cache_read", "{line}");
            assert_eq!(value, value_text, "{line}");
            assert!(reason.contains(reason_text), "{line}: {reason}");
            assert!(message.contains("test-model"), "{message}");
            assert!(message.contains("`cache_read`"), "{message}");
            assert!(message.contains("at most 3 decimal places"), "{message}");
        }
    }

    #[test]
    fn missing_field_names_model_and_field() {
        for field in [
            "provider",
            "input",
            "output",
            "cache_write_5m",
            "cache_write_1h",
            "cache_read",
        ] {
            let error =
                PriceTable::from_toml(&table_with(field, ""), SOURCE_CONFIG).expect_err(field);
            let message = error.to_string();
            assert!(
                matches!(
                    &error,
                    PriceError::MissingField { model, field: missing, .. }
                        if model == "test-model" && *missing == field
                ),
                "{field}: {message}"
            );
            assert!(message.contains("test-model"), "{message}");
            assert!(message.contains(&format!("`{field}`")), "{message}");
        }
    }

    #[test]
    fn missing_id_names_entry_number() {
        let text = format!(
            "{}{}",
            table_with("input", "input = \"1\""),
            table_with("id", "")
        );
        let error = PriceTable::from_toml(&text, SOURCE_CONFIG).unwrap_err();
        assert_eq!(
            error.to_string(),
            "config price table, model #2 (no id): missing required field `id`"
        );
    }

    #[test]
    fn empty_name_rejected() {
        let error = PriceTable::from_toml(&table_with("id", "id = \"\""), SOURCE_CONFIG);
        assert!(matches!(
            error,
            Err(PriceError::EmptyName { field: "id", .. })
        ));
        let text = table_with("provider", "provider = \"anthropic\"\naliases = [\"\"]");
        let error = PriceTable::from_toml(&text, SOURCE_CONFIG);
        assert!(matches!(
            error,
            Err(PriceError::EmptyName {
                field: "aliases",
                ..
            })
        ));
    }

    #[test]
    fn duplicate_names_rejected() {
        let twice = format!("{}{}", table_with("", ""), table_with("", ""));
        let error = PriceTable::from_toml(&twice, SOURCE_CONFIG).unwrap_err();
        assert_eq!(
            error.to_string(),
            "config price table: `test-model` names both model test-model and model \
             test-model: each id and alias must name one model"
        );

        let alias_is_other_id = format!(
            "{}{}",
            table_with("", ""),
            table_with("id", "id = \"other\"\naliases = [\"test-model\"]")
        );
        let error = PriceTable::from_toml(&alias_is_other_id, SOURCE_CONFIG);
        assert!(matches!(
            error,
            Err(PriceError::DuplicateName { name, first, second, .. })
                if name == "test-model" && first == "test-model" && second == "other"
        ));
    }

    #[test]
    fn long_context_errors_name_field() {
        let base = table_with("", "");
        let missing = format!(
            "{base}[models.long_context]\nthreshold_input_tokens = 200000\ninput = \"6\"\n"
        );
        let error = PriceTable::from_toml(&missing, SOURCE_CONFIG).unwrap_err();
        assert!(
            matches!(
                &error,
                PriceError::MissingField {
                    field: "long_context.output",
                    ..
                }
            ),
            "{error}"
        );

        for threshold in ["0", "-5", "\"200000\"", "2.5"] {
            let text = format!(
                "{base}[models.long_context]\nthreshold_input_tokens = {threshold}\n\
                 input = \"6\"\noutput = \"22.5\"\ncache_write_5m = \"7.5\"\n\
                 cache_write_1h = \"12\"\ncache_read = \"0.6\"\n"
            );
            let error = PriceTable::from_toml(&text, SOURCE_CONFIG).unwrap_err();
            let message = error.to_string();
            assert!(
                matches!(&error, PriceError::InvalidThreshold { model, .. } if model == "test-model"),
                "{threshold}: {message}"
            );
            assert!(message.contains("threshold_input_tokens"), "{message}");
        }

        let bad_rate = format!(
            "{base}[models.long_context]\nthreshold_input_tokens = 1\ninput = \"x\"\n\
             output = \"1\"\ncache_write_5m = \"1\"\ncache_write_1h = \"1\"\ncache_read = \"1\"\n"
        );
        let error = PriceTable::from_toml(&bad_rate, SOURCE_CONFIG).unwrap_err();
        assert!(
            matches!(&error, PriceError::InvalidRate { field, .. } if field == "long_context.input"),
            "{error}"
        );
    }

    #[test]
    fn malformed_toml_is_syntax_error() {
        for text in [
            "[[models]\nid = \"x\"",
            "models = 5",
            &table_with("cache_read", "cache_reads = \"0.30\""),
            "[pricing]\n",
        ] {
            let error = PriceTable::from_toml(text, SOURCE_CONFIG).unwrap_err();
            let message = error.to_string();
            assert!(
                matches!(&error, PriceError::Syntax { table, .. } if table == SOURCE_CONFIG),
                "{text}: {message}"
            );
            assert!(
                message.starts_with("invalid config price table: "),
                "{message}"
            );
        }
        let unknown = table_with("cache_read", "cache_reads = \"0.30\"");
        let message = PriceTable::from_toml(&unknown, SOURCE_CONFIG)
            .unwrap_err()
            .to_string();
        assert!(message.contains("cache_reads"), "{message}");
    }

    #[test]
    fn empty_text_is_empty_table() {
        let table = PriceTable::from_toml("", SOURCE_CONFIG).unwrap();
        assert_eq!(table.models().count(), 0);
        assert_eq!(table.resolve("anthropic", "claude-sonnet-4-5"), None);
    }

    #[test]
    fn web_search_price_defaults_by_provider() {
        let table = PriceTable::embedded();
        for price in table.models() {
            let expected = if price.provider == "anthropic" {
                ANTHROPIC_WEB_SEARCH_NANO_USD
            } else {
                0
            };
            assert_eq!(price.web_search, expected, "{}", price.id);
        }
        let local = table_with("provider", "provider = \"ollama\"");
        let local = PriceTable::from_toml(&local, SOURCE_CONFIG).unwrap();
        assert_eq!(local.resolve("ollama", "test-model").unwrap().web_search, 0);
    }

    #[test]
    fn web_search_price_forms_parse() {
        // USD per 1,000 searches to nano-USD per search: X * 10^9 / 1000 = X * 10^6.
        let cases = [
            ("web_search_per_1000 = \"10\"", 10_000_000),
            ("web_search_per_1000 = 10", 10_000_000),
            ("web_search_per_1000 = 2.5", 2_500_000),
            ("web_search_per_1000 = \"0.000001\"", 1),
            ("web_search_per_1000 = \"0\"", 0),
        ];
        for (line, expected) in cases {
            let text = format!("{}{line}\n", table_with("", ""));
            let table = PriceTable::from_toml(&text, SOURCE_CONFIG)
                .unwrap_or_else(|error| panic!("{line}: {error}"));
            let price = table.resolve("anthropic", "test-model").unwrap();
            assert_eq!(price.web_search, expected, "{line}");
        }
        for (line, reason) in [
            (
                "web_search_per_1000 = \"0.0000001\"",
                "more than 6 decimal places",
            ),
            ("web_search_per_1000 = -1", "negative"),
            ("web_search_per_1000 = \"ten\"", "not a decimal"),
        ] {
            let text = format!("{}{line}\n", table_with("", ""));
            let error = PriceTable::from_toml(&text, SOURCE_CONFIG).expect_err(line);
            let message = error.to_string();
            assert!(
                matches!(&error, PriceError::InvalidSearchPrice { model, .. } if model == "test-model"),
                "{line}: {message}"
            );
            assert!(message.contains("`web_search_per_1000`"), "{message}");
            assert!(message.contains(reason), "{line}: {message}");
        }
    }

    #[test]
    fn request_cost_adds_web_searches() {
        let price = embedded_price("claude-sonnet-4-5");
        // 1000 in * 3000 + 3 searches * 10_000_000 = 3_000_000 + 30_000_000 = 33_000_000
        assert_eq!(
            request_cost(&price, &tokens(1000, 0, 0, 0, 0), 3),
            33_000_000
        );
        assert_eq!(
            request_cost(&price, &tokens(0, 0, 0, 0, 0), u64::MAX),
            u64::MAX
        );
    }

    #[test]
    fn price_request_cases() {
        let table = PriceTable::embedded();
        let none = tokens(0, 0, 0, 0, 0);
        // 10 in * 3000 + 1 search * 10_000_000 = 10_030_000
        assert_eq!(
            table.price_request("anthropic", Some(SONNET), &tokens(10, 0, 0, 0, 0), 1),
            (Some(SONNET.to_owned()), Some(10_030_000))
        );
        assert_eq!(
            table.price_request("anthropic", Some("claude-imaginary"), &none, 0),
            (None, None)
        );
        assert_eq!(
            table.price_request("anthropic", None, &none, 0),
            (None, Some(0))
        );
        assert_eq!(
            table.price_request("anthropic", None, &none, 1),
            (None, None)
        );
    }

    const SONNET: &str = "claude-sonnet-4-5";

    #[test]
    fn embedded_rows_keep_url_and_date() {
        let price = embedded_price(SONNET);
        assert_eq!(price.source, SOURCE_EMBEDDED);
        assert!(price
            .url
            .as_deref()
            .is_some_and(|url| url.starts_with("https://")));
        assert_eq!(price.as_of.as_deref(), Some("2026-12-03"));
        assert_eq!(price.file, None);
    }

    #[test]
    fn aliases_of_lists_sorted() {
        let table = PriceTable::embedded();
        let price = embedded_price("claude-3-5-sonnet");
        assert_eq!(
            table.aliases_of(&price),
            [
                "claude-3-5-sonnet-20240620",
                "claude-3-5-sonnet-20241022",
                "claude-3-5-sonnet-latest"
            ]
        );
    }

    #[test]
    fn defaulting_rows_take_any_provider() {
        let rows: ModelRows = toml::from_str::<RowsFile>(&format!(
            "{}{}",
            table_with("provider", ""),
            table_with("id", "id = \"gpt-local\"\nprovider = \"openai\"")
                .replace("provider = \"anthropic\"\n", "")
        ))
        .unwrap()
        .models;
        let mut table = PriceTable::from_rows_defaulting(rows, SOURCE_CONFIG, "anthropic").unwrap();
        table.set_file("/etc/cco/config.toml");
        let anthropic = table.resolve("anthropic", "test-model").unwrap();
        assert_eq!(anthropic.file.as_deref(), Some("/etc/cco/config.toml"));
        assert_eq!(anthropic.source, SOURCE_CONFIG);
        assert!(table.resolve("openai", "gpt-local").is_some());
    }
}
