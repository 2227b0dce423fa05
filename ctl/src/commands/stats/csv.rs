//! `ccoctl stats --csv`: one header row and one row per group, in RFC 4180 form.
//!
//! Money is exact decimal USD with all nine decimals of the nano-USD it comes from, such as
//! `0.027450000`, without a currency sign or thousands separators. Counts are plain integers.
//! An unpriced row has empty `cost_usd` and `saved_usd` cells, because 0 would claim its
//! requests were free.

use cco_proto::{GroupTotals, StatsReply};

use crate::format::NANO_USD_PER_USD;

/// Column names after the first, which is the grouping's name (`model`, `day`, ...).
const COLUMNS: [&str; 17] = [
    "priced",
    "requests",
    "cache_hits",
    "errors",
    "rate_limited",
    "unpriced_requests",
    "streams_without_usage",
    "estimated_requests",
    "input_tokens",
    "output_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "cache_read_tokens",
    "web_search_requests",
    "cost_usd",
    "saved_usd",
    "repriced",
];

pub fn render(reply: &StatsReply) -> String {
    let mut text = String::new();
    text.push_str(reply.group_by.as_str());
    for column in COLUMNS {
        text.push(',');
        text.push_str(column);
    }
    text.push_str("\r\n");
    for row in &reply.rows {
        let cells = row_cells(row, reply.repriced);
        text.push_str(&cells.join(","));
        text.push_str("\r\n");
    }
    text
}

fn row_cells(row: &GroupTotals, repriced: bool) -> Vec<String> {
    let totals = &row.totals;
    let money = |nano_usd: u64| {
        if row.priced {
            exact_usd(nano_usd)
        } else {
            String::new()
        }
    };
    let counts = [
        totals.requests,
        totals.cache_hits,
        totals.errors,
        totals.rate_limited,
        totals.unpriced_requests,
        totals.streams_without_usage,
        totals.estimated_requests,
        totals.tokens.input,
        totals.tokens.output,
        totals.tokens.cache_write_5m,
        totals.tokens.cache_write_1h,
        totals.tokens.cache_read,
        totals.web_search_requests,
    ];
    let mut cells = vec![quote(&row.group), row.priced.to_string()];
    cells.extend(counts.iter().map(u64::to_string));
    cells.push(money(totals.cost_nano_usd));
    cells.push(money(totals.saved_nano_usd));
    cells.push(repriced.to_string());
    cells
}

/// Formats nano-USD as dollars with nine decimals, exactly.
fn exact_usd(nano_usd: u64) -> String {
    format!(
        "{}.{:09}",
        nano_usd / NANO_USD_PER_USD,
        nano_usd % NANO_USD_PER_USD
    )
}

/// Quotes a cell that contains a comma, a double quote or a line break, doubling its
/// quotes, as RFC 4180 specifies.
fn quote(cell: &str) -> String {
    if cell.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", cell.replace('"', "\"\""))
    } else {
        cell.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cco_proto::{GroupBy, TokenCounts, UsageTotals};

    fn reply(rows: Vec<GroupTotals>) -> StatsReply {
        StatsReply {
            since_unix_ms: None,
            until_unix_ms: None,
            group_by: GroupBy::Provider,
            repriced: false,
            analytics_enabled: true,
            total: UsageTotals::default(),
            rows,
            budgets: Vec::new(),
        }
    }

    #[test]
    fn csv_has_header_and_exact_money() {
        let row = GroupTotals {
            group: "anthropic".into(),
            priced: true,
            totals: UsageTotals {
                requests: 2,
                cache_hits: 1,
                estimated_requests: 1,
                tokens: TokenCounts {
                    input: 1_234,
                    ..TokenCounts::default()
                },
                web_search_requests: 3,
                cost_nano_usd: 27_450_000,
                saved_nano_usd: 1_500_000_001,
                ..UsageTotals::default()
            },
        };
        let text = render(&reply(vec![row]));
        let lines: Vec<&str> = text.split("\r\n").collect();
        assert_eq!(
            lines[0],
            "provider,priced,requests,cache_hits,errors,rate_limited,unpriced_requests,\
             streams_without_usage,estimated_requests,input_tokens,output_tokens,\
             cache_write_5m_tokens,cache_write_1h_tokens,cache_read_tokens,\
             web_search_requests,cost_usd,saved_usd,repriced"
        );
        assert_eq!(
            lines[1],
            "anthropic,true,2,1,0,0,0,0,1,1234,0,0,0,0,3,0.027450000,1.500000001,false"
        );
        assert_eq!(lines[2], "", "the last row ends with CRLF");
        assert_eq!(lines.len(), 3);
    }

    #[test]
    fn csv_unpriced_cost_is_empty() {
        let row = GroupTotals {
            group: "my \"local\", model".into(),
            priced: false,
            totals: UsageTotals {
                requests: 4,
                unpriced_requests: 4,
                ..UsageTotals::default()
            },
        };
        let text = render(&reply(vec![row]));
        let line = text.split("\r\n").nth(1).unwrap();
        assert_eq!(
            line,
            "\"my \"\"local\"\", model\",false,4,0,0,0,4,0,0,0,0,0,0,0,0,,,false"
        );
    }
}
