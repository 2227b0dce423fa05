//! `ccoctl pricing`: the price table that ccod prices requests with, and where each row
//! came from.

use cco_proto::{PriceRow, PricingQuery, PricingReply, Request, Response, TokenRates};
use clap::Args;

use super::{to_json, unexpected_reply};
use crate::client::Client;
use crate::error::CtlError;
use crate::format::{format_count, new_table};

#[derive(Debug, Args)]
pub struct PricingArgs {
    /// Show only the rows of this provider: anthropic, openai or a configured provider's name
    #[arg(long, value_name = "PROVIDER")]
    pub provider: Option<String>,

    /// Print the daemon's reply as JSON, rates in nano-USD per token and per search
    #[arg(long)]
    pub json: bool,
}

pub fn run(client: &Client, args: &PricingArgs) -> Result<String, CtlError> {
    let query = PricingQuery {
        provider: args.provider.clone(),
    };
    match client.send(Request::Pricing(query))? {
        Response::Pricing(reply) if args.json => Ok(to_json(&reply)),
        Response::Pricing(reply) => Ok(render(&reply, args.provider.as_deref())),
        other => Err(unexpected_reply(client, "pricing", &other)),
    }
}

fn render(reply: &PricingReply, provider: Option<&str>) -> String {
    if reply.rows.is_empty() {
        return match provider {
            Some(provider) => format!("no price rows for provider {provider}\n"),
            None => "the price table is empty\n".to_owned(),
        };
    }
    let header = [
        "Provider",
        "Model",
        "Input",
        "Output",
        "Write 5m",
        "Write 1h",
        "Read",
        "Web search",
        "Long context",
        "Aliases",
        "Source",
    ];
    let mut table = new_table(&header, &[2, 3, 4, 5, 6, 7]);
    for row in &reply.rows {
        table.add_row(table_row(row));
    }
    format!(
        "rates in USD per million tokens; web search in USD per 1,000 searches; long context: \
         the rates (input / output / write 5m / write 1h / read) of every token of a request \
         above that many input tokens\n{table}\n"
    )
}

fn table_row(row: &PriceRow) -> Vec<String> {
    let rates = &row.rates;
    let long_context = match &row.long_context {
        Some(tier) => format!(
            "> {}: {}",
            format_count(tier.threshold_input_tokens),
            rate_list(&tier.rates)
        ),
        None => "-".to_owned(),
    };
    let aliases = if row.aliases.is_empty() {
        "-".to_owned()
    } else {
        row.aliases.join(", ")
    };
    vec![
        row.provider.clone(),
        row.id.clone(),
        usd_per_mtok(rates.input),
        usd_per_mtok(rates.output),
        usd_per_mtok(rates.cache_write_5m),
        usd_per_mtok(rates.cache_write_1h),
        usd_per_mtok(rates.cache_read),
        usd_per_1000_searches(row.web_search_nano_usd),
        long_context,
        aliases,
        source(row),
    ]
}

fn rate_list(rates: &TokenRates) -> String {
    [
        rates.input,
        rates.output,
        rates.cache_write_5m,
        rates.cache_write_1h,
        rates.cache_read,
    ]
    .map(usd_per_mtok)
    .join(" / ")
}

/// Describes where a row came from: the table, then the page and date or the file.
fn source(row: &PriceRow) -> String {
    let mut parts = vec![row.source.clone()];
    parts.extend(row.file.clone());
    parts.extend(row.url.clone());
    if let Some(as_of) = &row.as_of {
        parts.push(format!("as of {as_of}"));
    }
    parts.join(", ")
}

/// Formats nano-USD per token as USD per million tokens, which is the value divided by 1000,
/// exactly and without trailing zeros: 3750 is `3.75`.
fn usd_per_mtok(nano_usd_per_token: u64) -> String {
    scaled_decimal(nano_usd_per_token, 1000)
}

/// Formats nano-USD per search as USD per 1,000 searches, the value divided by 10^6.
fn usd_per_1000_searches(nano_usd_per_search: u64) -> String {
    scaled_decimal(nano_usd_per_search, 1_000_000)
}

fn scaled_decimal(value: u64, scale: u64) -> String {
    let whole = value / scale;
    let fraction = value % scale;
    if fraction == 0 {
        return whole.to_string();
    }
    let width = scale.ilog10() as usize;
    let digits = format!("{fraction:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cco_proto::LongContextRates;

    fn sonnet() -> PriceRow {
        PriceRow {
            id: "claude-sonnet-4-5".into(),
            provider: "anthropic".into(),
            aliases: vec!["claude-sonnet-4-5-20250929".into()],
            rates: TokenRates {
                input: 3000,
                output: 15000,
                cache_write_5m: 3750,
                cache_write_1h: 6000,
                cache_read: 300,
            },
            long_context: Some(LongContextRates {
                threshold_input_tokens: 200_000,
                rates: TokenRates {
                    input: 6000,
                    output: 22500,
                    cache_write_5m: 7500,
                    cache_write_1h: 12000,
                    cache_read: 600,
                },
            }),
            web_search_nano_usd: 10_000_000,
            source: "embedded".into(),
            url: Some("https://example.test/pricing".into()),
            as_of: Some("2026-12-03".into()),
            file: None,
        }
    }

    #[test]
    fn rates_print_exactly() {
        let cases = [
            (3000, "3"),
            (3750, "3.75"),
            (300, "0.3"),
            (1, "0.001"),
            (0, "0"),
        ];
        for (nano, expected) in cases {
            assert_eq!(usd_per_mtok(nano), expected, "{nano}");
        }
        assert_eq!(usd_per_1000_searches(10_000_000), "10");
        assert_eq!(usd_per_1000_searches(2_500_000), "2.5");
        assert_eq!(usd_per_1000_searches(1), "0.000001");
    }

    #[test]
    fn table_shows_rates_tier_and_source() {
        let reply = PricingReply {
            rows: vec![sonnet()],
        };
        let text = render(&reply, None);
        let line = text
            .lines()
            .find(|line| line.contains("claude-sonnet-4-5 "))
            .unwrap_or_else(|| panic!("{text}"));
        assert!(
            line.contains("|     3 |     15 |     3.75 |        6 |  0.3 |"),
            "{line}"
        );
        assert!(line.contains("|         10 |"), "{line}");
        assert!(
            line.contains("> 200,000: 6 / 22.5 / 7.5 / 12 / 0.6"),
            "{line}"
        );
        assert!(line.contains("claude-sonnet-4-5-20250929"), "{line}");
        assert!(
            line.contains("embedded, https://example.test/pricing, as of 2026-12-03"),
            "{line}"
        );
    }

    #[test]
    fn config_rows_name_their_file() {
        let mut row = sonnet();
        row.source = "config".into();
        row.url = None;
        row.as_of = None;
        row.file = Some("/home/me/.config/cco/config.toml".into());
        assert_eq!(source(&row), "config, /home/me/.config/cco/config.toml");
    }

    #[test]
    fn empty_reply_names_the_provider() {
        let reply = PricingReply { rows: Vec::new() };
        assert_eq!(
            render(&reply, Some("ollama")),
            "no price rows for provider ollama\n"
        );
    }
}
