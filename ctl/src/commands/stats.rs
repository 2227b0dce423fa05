//! `ccoctl stats`: usage and cost over a time range, grouped by model, day, provider or
//! credential, as a table, JSON or CSV, and the state of the budgets.

mod budgets;

mod csv;

use cco_proto::{GroupBy, GroupTotals, Request, Response, StatsQuery, StatsReply, UsageTotals};
use clap::{Args, ValueEnum};
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

    /// Group rows by the model as priced, the UTC day, the upstream provider, or the
    /// credential's 12-hex-digit SHA-256 prefix
    #[arg(long = "by", value_name = "GROUP", value_enum, default_value_t = Grouping::Model)]
    pub by: Grouping,

    /// Recompute every cost and saving in the range with ccod's current price table
    /// instead of showing the figures stored when each request was recorded. Reads every
    /// record in the range, so it is slower over long ranges
    #[arg(long)]
    pub reprice: bool,

    /// Print the daemon's reply as JSON, money in integer nano-USD. "analytics_enabled" is
    /// false when ccod records no requests, and the totals are then empty
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,

    /// Print one CSV row per group after a header row, money as exact decimal USD. The cost
    /// and savings of unpriced rows are empty. Fails when ccod records no requests
    #[arg(long)]
    pub csv: bool,
}

/// The `--by` values, one per [`GroupBy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Grouping {
    Model,
    Day,
    Provider,
    Credential,
}

impl Grouping {
    fn to_group_by(self) -> GroupBy {
        match self {
            Grouping::Model => GroupBy::Model,
            Grouping::Day => GroupBy::Day,
            Grouping::Provider => GroupBy::Provider,
            Grouping::Credential => GroupBy::Credential,
        }
    }
}

pub fn run(client: &Client, args: &StatsArgs) -> Result<String, CtlError> {
    let query = build_query(args, now_unix_ms())?;
    let reply = match client.send(Request::Stats(query.clone()))? {
        Response::Stats(reply) => reply,
        other => return Err(unexpected_reply(client, "stats", &other)),
    };
    if !reply.analytics_enabled {
        return render_analytics_off(args, &reply);
    }
    check_reply(client, &query, &reply)?;
    if args.json {
        Ok(to_json(&reply))
    } else if args.csv {
        Ok(csv::render(&reply))
    } else {
        Ok(render(&reply))
    }
}

/// Line that replaces the figures while ccod records no requests.
const ANALYTICS_OFF: &str =
    "analytics are off (--no-analytics or [analytics] enabled = false): no requests are recorded";

/// Renders a reply of a daemon with analytics off. JSON carries `analytics_enabled: false`
/// beside the empty totals. A CSV has only group rows, and a header without rows would
/// read as a range without requests, so `--csv` fails instead.
fn render_analytics_off(args: &StatsArgs, reply: &StatsReply) -> Result<String, CtlError> {
    if args.json {
        Ok(to_json(reply))
    } else if args.csv {
        Err(CtlError::AnalyticsOff { output: "--csv" })
    } else {
        Ok(format!(
            "{ANALYTICS_OFF}\n'ccoctl status' and /metrics count the requests served since \
             ccod started\n"
        ))
    }
}

/// Rejects a reply that ignored an option, as a daemon older than that option does.
fn check_reply(client: &Client, query: &StatsQuery, reply: &StatsReply) -> Result<(), CtlError> {
    let ignored = if reply.group_by != query.group_by {
        Some(format!("--by {}", query.group_by.as_str()))
    } else if query.reprice && !reply.repriced {
        Some("--reprice".to_owned())
    } else {
        None
    };
    match ignored {
        Some(option) => Err(CtlError::InvalidReply {
            socket: client.socket().to_path_buf(),
            reason: format!(
                "ccod ignored {option}, so it is older than this ccoctl: restart it with \
                 the ccod that came with this ccoctl"
            ),
        }),
        None => Ok(()),
    }
}

/// Resolves `--since` and `--until` against one reading of the clock, so both relative
/// bounds count back from the same instant.
fn build_query(args: &StatsArgs, now_unix_ms: u64) -> Result<StatsQuery, CtlError> {
    let since_unix_ms = args.since.map(|bound| bound.resolve(now_unix_ms));
    let until_unix_ms = args.until.map(|bound| bound.resolve(now_unix_ms));
    if let Some(since) = since_unix_ms.filter(|since| *since > now_unix_ms) {
        return Err(CtlError::Usage(format!(
            "--since {} is in the future, so no request can match: pass a date before now \
             or a duration such as 24h",
            format_unix_ms(since)
        )));
    }
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
        reprice: args.reprice,
        group_by: args.by.to_group_by(),
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
    if reply.rows.is_empty() {
        text.push_str("no requests in this range\n");
        return text;
    }
    text.push_str(&group_table(reply.group_by, &reply.rows).to_string());
    text.push('\n');

    let unpriced_requests: u64 = reply
        .rows
        .iter()
        .filter(|row| !row.priced)
        .map(|row| row.totals.requests)
        .sum();
    if reply.group_by == GroupBy::Model {
        let unpriced: Vec<&str> = reply
            .rows
            .iter()
            .filter(|row| !row.priced)
            .map(|row| row.group.as_str())
            .collect();
        if !unpriced.is_empty() {
            text.push_str(&format!(
                "unpriced models, whose tokens are counted but whose cost is not: {}\n",
                unpriced.join(", ")
            ));
        }
    } else if unpriced_requests > 0 {
        text.push_str(&format!(
            "rows marked unpriced hold {} requests of models without a price, whose tokens \
             are counted but whose cost is not; 'ccoctl stats --by model' names the models\n",
            format_count(unpriced_requests)
        ));
    }
    let estimated = reply.total.estimated_requests;
    if estimated > 0 {
        text.push_str(&format!(
            "{} requests have estimated costs: their cache writes came without the split into \
             5-minute and 1-hour writes, so all were priced as 5-minute writes\n",
            format_count(estimated)
        ));
    }
    let without_usage = reply.total.streams_without_usage;
    if without_usage > 0 {
        let streams = if without_usage == 1 {
            "event stream"
        } else {
            "event streams"
        };
        text.push_str(&format!(
            "{} {streams} carried no usage, so their tokens and cost are missing; OpenAI \
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
        let noun = if total.unpriced_requests == 1 {
            "request"
        } else {
            "requests"
        };
        excluded.push(format!(
            "{} unpriced {noun}",
            format_count(total.unpriced_requests)
        ));
    }
    if total.streams_without_usage > 0 {
        let noun = if total.streams_without_usage == 1 {
            "stream"
        } else {
            "streams"
        };
        excluded.push(format!(
            "{} {noun} without usage",
            format_count(total.streams_without_usage)
        ));
    }
    let mut cost = format_usd(total.cost_nano_usd);
    if !excluded.is_empty() {
        cost.push_str(&format!(" (excludes {})", excluded.join(" and ")));
    }
    if total.estimated_requests > 0 {
        cost.push_str(&format!(
            " (includes {} estimated)",
            format_count(total.estimated_requests)
        ));
    }
    let prices = if reply.repriced {
        "repriced with ccod's current price table"
    } else {
        "as recorded"
    };
    format_fields(&[
        (
            "range",
            format_range(reply.since_unix_ms, reply.until_unix_ms),
        ),
        ("prices", prices.to_owned()),
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
        (
            "web search requests",
            format_count(total.web_search_requests),
        ),
        ("estimated costs", format_count(total.estimated_requests)),
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

/// Returns the header of the first column for `group_by`.
fn group_header(group_by: GroupBy) -> &'static str {
    match group_by {
        GroupBy::Model => "Model",
        GroupBy::Day => "Day (UTC)",
        GroupBy::Provider => "Provider",
        GroupBy::Credential => "Credential",
    }
}

/// Builds one row per group. An unpriced row's cost and savings read `unpriced`, because
/// `$0.00` would claim its requests were free.
fn group_table(group_by: GroupBy, rows: &[GroupTotals]) -> Table {
    let header = [
        group_header(group_by),
        "Requests",
        "Hits",
        "Errors",
        "Input",
        "Output",
        "Cache write 5m",
        "Cache write 1h",
        "Cache read",
        "Web searches",
        "Cost",
        "Saved",
    ];
    let numeric_columns: Vec<usize> = (1..header.len()).collect();
    let mut table = new_table(&header, &numeric_columns);
    for row in rows {
        table.add_row(table_row(row));
    }
    table
}

fn table_row(row: &GroupTotals) -> Vec<String> {
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
        row.group.clone(),
        format_count(totals.requests),
        format_count(totals.cache_hits),
        format_count(totals.errors),
        format_count(totals.tokens.input),
        format_count(totals.tokens.output),
        format_count(totals.tokens.cache_write_5m),
        format_count(totals.tokens.cache_write_1h),
        format_count(totals.tokens.cache_read),
        format_count(totals.web_search_requests),
        cost,
        saved,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use cco_proto::TokenCounts;

    const JUNE_1_2024_MS: u64 = 1_717_200_000_000;

    fn priced_row() -> GroupTotals {
        GroupTotals {
            group: "claude-sonnet-4-5".into(),
            priced: true,
            totals: UsageTotals {
                requests: 1_200,
                cache_hits: 300,
                errors: 2,
                unpriced_requests: 0,
                streams_without_usage: 0,
                rate_limited: 0,
                budget_rejected: 0,
                estimated_requests: 0,
                tokens: TokenCounts {
                    input: 1_234_567,
                    output: 89_000,
                    cache_write_5m: 5_000,
                    cache_write_1h: 1_000,
                    cache_read: 40_000,
                },
                web_search_requests: 7,
                cost_nano_usd: 12_345_000,
                saved_nano_usd: 3_600_000,
            },
        }
    }

    fn unpriced_row() -> GroupTotals {
        GroupTotals {
            group: "local-llama".into(),
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

    fn reply(rows: Vec<GroupTotals>) -> StatsReply {
        let mut total = UsageTotals::default();
        for row in &rows {
            total.requests += row.totals.requests;
            total.cache_hits += row.totals.cache_hits;
            total.errors += row.totals.errors;
            total.unpriced_requests += row.totals.unpriced_requests;
            total.streams_without_usage += row.totals.streams_without_usage;
            total.rate_limited += row.totals.rate_limited;
            total.budget_rejected += row.totals.budget_rejected;
            total.estimated_requests += row.totals.estimated_requests;
            total.web_search_requests += row.totals.web_search_requests;
            total.tokens.add(&row.totals.tokens);
            total.cost_nano_usd += row.totals.cost_nano_usd;
            total.saved_nano_usd += row.totals.saved_nano_usd;
        }
        StatsReply {
            since_unix_ms: Some(JUNE_1_2024_MS),
            until_unix_ms: None,
            group_by: GroupBy::Model,
            repriced: false,
            analytics_enabled: true,
            total,
            rows,
            budgets: Vec::new(),
        }
    }

    fn args(since: Option<&str>, until: Option<&str>) -> StatsArgs {
        StatsArgs {
            since: since.map(|text| text.parse().unwrap()),
            until: until.map(|text| text.parse().unwrap()),
            by: Grouping::Model,
            reprice: false,
            json: false,
            csv: false,
        }
    }

    #[test]
    fn table_shows_unpriced_not_zero() {
        let mut table = group_table(GroupBy::Model, &[priced_row(), unpriced_row()]);
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
    fn single_exclusions_are_singular() {
        let mut row = unpriced_row();
        row.totals.unpriced_requests = 1;
        row.totals.streams_without_usage = 1;
        let text = render_totals(&reply(vec![row]));
        assert!(
            text.contains("(excludes 1 unpriced request and 1 stream without usage)"),
            "{text}"
        );
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
prices:                as recorded
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
web search requests:   7
estimated costs:       0
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
    fn query_rejects_future_since() {
        let error = build_query(&args(Some("2024-06-02"), None), JUNE_1_2024_MS).unwrap_err();
        assert_eq!(error.exit_code(), crate::error::EXIT_USAGE);
        assert!(
            error
                .to_string()
                .starts_with("--since 2024-06-02T00:00:00Z is in the future"),
            "{error}"
        );
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

    #[test]
    fn stats_says_when_repriced() {
        let mut repriced = reply(vec![priced_row()]);
        repriced.repriced = true;
        let text = render_totals(&repriced);
        assert!(
            text.contains("prices:                repriced with ccod's current price table\n"),
            "{text}"
        );
    }

    #[test]
    fn stats_counts_estimated_costs() {
        let mut row = priced_row();
        row.totals.estimated_requests = 2;
        let text = render(&reply(vec![row]));
        assert!(text.contains("estimated costs:       2\n"), "{text}");
        assert!(
            text.contains("cost:                  $0.012345 (includes 2 estimated)\n"),
            "{text}"
        );
        assert!(
            text.ends_with(
                "2 requests have estimated costs: their cache writes came without the split \
                 into 5-minute and 1-hour writes, so all were priced as 5-minute writes\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn day_rows_name_unpriced_requests() {
        let mut day = priced_row();
        day.group = "2026-12-01".into();
        let mut unpriced = unpriced_row();
        unpriced.group = "2026-12-01".into();
        let mut stats = reply(vec![day, unpriced]);
        stats.group_by = GroupBy::Day;
        let text = render(&stats);
        assert!(text.contains("| Day (UTC)  |"), "{text}");
        assert!(
            text.contains("rows marked unpriced hold 3 requests"),
            "{text}"
        );
        let unpriced_line = text
            .lines()
            .filter(|line| line.contains("2026-12-01"))
            .nth(1)
            .unwrap();
        assert!(unpriced_line.contains(" unpriced | unpriced |"), "{text}");
    }

    #[test]
    fn analytics_off_replaces_figures() {
        let off = StatsReply {
            analytics_enabled: false,
            ..reply(Vec::new())
        };
        let text = render_analytics_off(&args(None, None), &off).unwrap();
        assert!(text.starts_with(&format!("{ANALYTICS_OFF}\n")), "{text}");
        assert!(!text.contains("requests:"), "{text}");
        assert!(!text.contains("$0.00"), "{text}");

        let mut json_args = args(None, None);
        json_args.json = true;
        let json = render_analytics_off(&json_args, &off).unwrap();
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["analytics_enabled"], false, "{json}");

        let mut csv_args = args(None, None);
        csv_args.csv = true;
        let error = render_analytics_off(&csv_args, &off).unwrap_err();
        assert_eq!(error.exit_code(), crate::error::EXIT_FAILURE);
        assert!(error.to_string().contains("--csv has no rows"), "{error}");
    }

    #[test]
    fn query_carries_grouping_and_reprice() {
        let mut args = args(None, None);
        args.by = Grouping::Credential;
        args.reprice = true;
        let query = build_query(&args, JUNE_1_2024_MS).unwrap();
        assert_eq!(query.group_by, GroupBy::Credential);
        assert!(query.reprice);
    }
}
