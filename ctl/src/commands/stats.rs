//! `ccoctl stats`: usage and cost over a time range, and the state of the budgets.

mod budgets;

use cco_proto::{ModelTotals, Request, Response, StatsQuery, StatsReply, UsageTotals};
use clap::Args;
use comfy_table::Table;

use super::{to_json, unexpected_reply};
use crate::client::Client;
use crate::error::CtlError;
use crate::format::{
    format_count, format_fields, format_percent, format_unix_ms, format_usd, new_table,
};
use crate::time_bound::{now_unix_ms, TimeBound};

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Count requests from this time on [default: the oldest record]
    ///
    /// WHEN is a duration before now (90s, 30m, 24h, 7d, 2w, or combined as 1h30m), a date
    /// (2025-06-01, meaning UTC midnight at its start) or an RFC 3339 timestamp
    /// (2025-06-01T12:00:00Z, 2025-06-01T14:00:00+02:00).
    #[arg(long, value_name = "WHEN")]
    pub since: Option<TimeBound>,

    /// Count requests up to this time [default: now]
    ///
    /// WHEN takes the same forms as for --since. A date means UTC midnight at its start, so
    /// --until 2025-06-02 ends the range as that day begins.
    #[arg(long, value_name = "WHEN")]
    pub until: Option<TimeBound>,

    /// Print the daemon's reply as JSON, money in integer nano-USD
    #[arg(long)]
    pub json: bool,
}

pub fn run(client: &Client, args: &StatsArgs) -> Result<String, CtlError> {
    let query = build_query(args, now_unix_ms())?;
    match client.send(Request::Stats(query))? {
        Response::Stats(reply) if args.json => Ok(to_json(&reply)),
        Response::Stats(reply) => Ok(render(&reply)),
        other => Err(unexpected_reply(client, "stats", &other)),
    }
}

/// Resolves `--since` and `--until` against one reading of the clock, so both relative
/// bounds count back from the same instant.
fn build_query(args: &StatsArgs, now_unix_ms: u64) -> Result<StatsQuery, CtlError> {
    let since_unix_ms = args.since.map(|bound| bound.resolve(now_unix_ms));
    let until_unix_ms = args.until.map(|bound| bound.resolve(now_unix_ms));
    if let (Some(since), Some(until)) = (since_unix_ms, until_unix_ms) {
        if since > until {
            return Err(CtlError::Usage(format!(
                "--since {} is later than --until {}: swap the two values",
                format_unix_ms(since),
                format_unix_ms(until)
            )));
        }
    }
    Ok(StatsQuery {
        since_unix_ms,
        until_unix_ms,
    })
}

fn render(reply: &StatsReply) -> String {
    let mut text = render_usage(reply);
    text.push_str(&budgets::render(&reply.budgets));
    text
}

fn render_usage(reply: &StatsReply) -> String {
    let mut text = render_totals(reply);
    text.push('\n');
    if reply.by_model.is_empty() {
        text.push_str("no requests in this range\n");
        return text;
    }
    text.push_str(&model_table(&reply.by_model).to_string());
    text.push('\n');

    let unpriced: Vec<&str> = reply
        .by_model
        .iter()
        .filter(|row| !row.priced)
        .map(|row| row.model.as_str())
        .collect();
    if !unpriced.is_empty() {
        text.push_str(&format!(
            "unpriced models, whose tokens are counted but whose cost is not: {}\n",
            unpriced.join(", ")
        ));
    }
    let without_usage = reply.total.streams_without_usage;
    if without_usage > 0 {
        text.push_str(&format!(
            "{} event streams carried no usage, so their tokens and cost are missing; OpenAI \
             clients get it by sending \"stream_options\": {{\"include_usage\": true}}\n",
            format_count(without_usage)
        ));
    }
    text
}

fn render_totals(reply: &StatsReply) -> String {
    let total = &reply.total;
    let mut excluded = Vec::new();
    if total.unpriced_requests > 0 {
        excluded.push(format!(
            "{} unpriced requests",
            format_count(total.unpriced_requests)
        ));
    }
    if total.streams_without_usage > 0 {
        excluded.push(format!(
            "{} streams without usage",
            format_count(total.streams_without_usage)
        ));
    }
    let mut cost = format_usd(total.cost_nano_usd);
    if !excluded.is_empty() {
        cost.push_str(&format!(" (excludes {})", excluded.join(" and ")));
    }
    format_fields(&[
        (
            "range",
            format_range(reply.since_unix_ms, reply.until_unix_ms),
        ),
        ("requests", format_count(total.requests)),
        (
            "cache hits",
            format!(
                "{} ({} hit rate)",
                format_count(total.cache_hits),
                format_percent(total.hit_rate())
            ),
        ),
        ("errors", format_count(total.errors)),
        ("rate limited", format_count(total.rate_limited)),
        ("budget rejected", format_count(total.budget_rejected)),
        (
            "streams without usage",
            format_count(total.streams_without_usage),
        ),
        ("input tokens", format_count(total.tokens.input)),
        ("output tokens", format_count(total.tokens.output)),
        (
            "cache write 5m tokens",
            format_count(total.tokens.cache_write_5m),
        ),
        (
            "cache write 1h tokens",
            format_count(total.tokens.cache_write_1h),
        ),
        ("cache read tokens", format_count(total.tokens.cache_read)),
        ("cost", cost),
        ("saved by cache", format_usd(total.saved_nano_usd)),
    ])
}

fn format_range(since_unix_ms: Option<u64>, until_unix_ms: Option<u64>) -> String {
    match (since_unix_ms, until_unix_ms) {
        (None, None) => "all time".to_owned(),
        (Some(since), None) => format!("{} to now", format_unix_ms(since)),
        (None, Some(until)) => format!("oldest record to {}", format_unix_ms(until)),
        (Some(since), Some(until)) => {
            format!("{} to {}", format_unix_ms(since), format_unix_ms(until))
        }
    }
}

/// Builds one row per model. An unpriced model's cost and savings read `unpriced`, because `$0.00`
/// would claim its requests were free.
fn model_table(rows: &[ModelTotals]) -> Table {
    let header = [
        "Model",
        "Requests",
        "Hits",
        "Errors",
        "Input",
        "Output",
        "Cache write 5m",
        "Cache write 1h",
        "Cache read",
        "Cost",
        "Saved",
    ];
    let numeric_columns: Vec<usize> = (1..header.len()).collect();
    let mut table = new_table(&header, &numeric_columns);
    for row in rows {
        table.add_row(model_row(row));
    }
    table
}

fn model_row(row: &ModelTotals) -> Vec<String> {
    let totals: &UsageTotals = &row.totals;
    let (cost, saved) = if row.priced {
        (
            format_usd(totals.cost_nano_usd),
            format_usd(totals.saved_nano_usd),
        )
    } else {
        ("unpriced".to_owned(), "unpriced".to_owned())
    };
    vec![
        row.model.clone(),
        format_count(totals.requests),
        format_count(totals.cache_hits),
        format_count(totals.errors),
        format_count(totals.tokens.input),
        format_count(totals.tokens.output),
        format_count(totals.tokens.cache_write_5m),
        format_count(totals.tokens.cache_write_1h),
        format_count(totals.tokens.cache_read),
        cost,
        saved,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use cco_proto::TokenCounts;

    const JUNE_1_2024_MS: u64 = 1_717_200_000_000;

    fn priced_row() -> ModelTotals {
        ModelTotals {
            model: "claude-sonnet-4-5".into(),
            priced: true,
            totals: UsageTotals {
                requests: 1_200,
                cache_hits: 300,
                errors: 2,
                unpriced_requests: 0,
                streams_without_usage: 0,
                rate_limited: 0,
                budget_rejected: 0,
                tokens: TokenCounts {
                    input: 1_234_567,
                    output: 89_000,
                    cache_write_5m: 5_000,
                    cache_write_1h: 1_000,
                    cache_read: 40_000,
                },
                cost_nano_usd: 12_345_000,
                saved_nano_usd: 3_600_000,
            },
        }
    }

    fn unpriced_row() -> ModelTotals {
        ModelTotals {
            model: "local-llama".into(),
            priced: false,
            totals: UsageTotals {
                requests: 3,
                unpriced_requests: 3,
                rate_limited: 0,
                tokens: TokenCounts {
                    input: 10,
                    output: 20,
                    ..TokenCounts::default()
                },
                ..UsageTotals::default()
            },
        }
    }

    fn reply(by_model: Vec<ModelTotals>) -> StatsReply {
        let mut total = UsageTotals::default();
        for row in &by_model {
            total.requests += row.totals.requests;
            total.cache_hits += row.totals.cache_hits;
            total.errors += row.totals.errors;
            total.unpriced_requests += row.totals.unpriced_requests;
            total.streams_without_usage += row.totals.streams_without_usage;
            total.rate_limited += row.totals.rate_limited;
            total.budget_rejected += row.totals.budget_rejected;
            total.tokens.add(&row.totals.tokens);
            total.cost_nano_usd += row.totals.cost_nano_usd;
            total.saved_nano_usd += row.totals.saved_nano_usd;
        }
        StatsReply {
            since_unix_ms: Some(JUNE_1_2024_MS),
            until_unix_ms: None,
            total,
            by_model,
            budgets: Vec::new(),
        }
    }

    fn args(since: Option<&str>, until: Option<&str>) -> StatsArgs {
        StatsArgs {
            since: since.map(|text| text.parse().unwrap()),
            until: until.map(|text| text.parse().unwrap()),
            json: false,
        }
    }

    #[test]
    fn table_shows_unpriced_not_zero() {
        let mut table = model_table(&[priced_row(), unpriced_row()]);
        table.force_no_tty();
        let text = table.to_string();
        let lines: Vec<&str> = text.lines().collect();
        let priced = lines
            .iter()
            .find(|line| line.contains("claude-sonnet-4-5"))
            .unwrap();
        let unpriced = lines
            .iter()
            .find(|line| line.contains("local-llama"))
            .unwrap();
        assert!(priced.contains("| $0.012345 |"), "{text}");
        assert!(priced.contains(" $0.0036 |"), "{text}");
        assert!(priced.contains("| 1,234,567 |"), "{text}");
        assert!(unpriced.contains(" unpriced | unpriced |"), "{text}");
        assert!(!unpriced.contains('$'), "{text}");
    }

    #[test]
    fn stats_shows_unpriced_models() {
        let text = render(&reply(vec![priced_row(), unpriced_row()]));
        assert!(
            text.contains("cost:                  $0.012345 (excludes 3 unpriced requests)\n"),
            "{text}"
        );
        assert!(
            text.ends_with(
                "unpriced models, whose tokens are counted but whose cost is not: local-llama\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn totals_list_every_token_class() {
        let text = render_totals(&reply(vec![priced_row()]));
        let expected = "\
range:                 2024-06-01T00:00:00Z to now
requests:              1,200
cache hits:            300 (25.0% hit rate)
errors:                2
rate limited:          0
budget rejected:       0
streams without usage: 0
input tokens:          1,234,567
output tokens:         89,000
cache write 5m tokens: 5,000
cache write 1h tokens: 1,000
cache read tokens:     40,000
cost:                  $0.012345
saved by cache:        $0.0036
";
        assert_eq!(text, expected);
    }

    #[test]
    fn stats_counts_streams_without_usage() {
        let mut row = priced_row();
        row.totals.streams_without_usage = 4;
        let text = render(&reply(vec![row, unpriced_row()]));
        assert!(text.contains("streams without usage: 4\n"), "{text}");
        assert!(
            text.contains(
                "cost:                  $0.012345 (excludes 3 unpriced requests and 4 streams \
                 without usage)\n"
            ),
            "{text}"
        );
        assert!(
            text.ends_with(
                "4 event streams carried no usage, so their tokens and cost are missing; OpenAI \
                 clients get it by sending \"stream_options\": {\"include_usage\": true}\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn stats_without_unpriced_has_no_footer() {
        let text = render(&reply(vec![priced_row()]));
        assert!(!text.contains("unpriced"), "{text}");
    }

    #[test]
    fn stats_without_requests() {
        let text = render(&reply(Vec::new()));
        assert!(text.ends_with("\nno requests in this range\n"), "{text}");
        assert!(text.contains("cost:                  $0.00\n"), "{text}");
    }

    #[test]
    fn range_names_open_ends() {
        assert_eq!(format_range(None, None), "all time");
        assert_eq!(
            format_range(None, Some(JUNE_1_2024_MS)),
            "oldest record to 2024-06-01T00:00:00Z"
        );
        assert_eq!(
            format_range(Some(0), Some(JUNE_1_2024_MS)),
            "1970-01-01T00:00:00Z to 2024-06-01T00:00:00Z"
        );
    }

    #[test]
    fn query_resolves_relative_bounds() {
        let now = JUNE_1_2024_MS;
        let query = build_query(&args(Some("24h"), Some("1h")), now).unwrap();
        assert_eq!(query.since_unix_ms, Some(now - 24 * 3_600_000));
        assert_eq!(query.until_unix_ms, Some(now - 3_600_000));

        let query = build_query(&args(None, None), now).unwrap();
        assert_eq!(query, StatsQuery::default());

        let query = build_query(&args(Some("2024-05-01"), None), now).unwrap();
        assert_eq!(query.since_unix_ms, Some(1_714_521_600_000));
        assert_eq!(query.until_unix_ms, None);
    }

    #[test]
    fn query_rejects_reversed_range() {
        let error = build_query(&args(Some("1h"), Some("2h")), JUNE_1_2024_MS).unwrap_err();
        assert_eq!(error.exit_code(), crate::error::EXIT_USAGE);
        assert!(
            error.to_string().starts_with(
                "--since 2024-05-31T23:00:00Z is later than --until 2024-05-31T22:00:00Z"
            ),
            "{error}"
        );
    }
}
