//! The budgets part of `ccoctl stats`: one row per budget and period.

use cco_proto::BudgetStatus;
use comfy_table::Table;

use crate::format::{format_percent, format_unix_ms, format_usd, new_table};

/// Renders the budgets as a table preceded by a blank line, or nothing when there are none.
pub fn render(budgets: &[BudgetStatus]) -> String {
    if budgets.is_empty() {
        return String::new();
    }
    format!("\n{}\n", table(budgets))
}

fn table(budgets: &[BudgetStatus]) -> Table {
    let header = [
        "Budget", "Period", "Spent", "Reserved", "Limit", "Used", "Resets",
    ];
    let mut table = new_table(&header, &[2, 3, 4, 5]);
    for budget in budgets {
        let scope = match &budget.credential {
            Some(credential) => format!("credential {credential}"),
            None => "all clients".to_owned(),
        };
        table.add_row(vec![
            scope,
            budget.period.as_str().to_owned(),
            format_usd(budget.spent_nano_usd),
            format_usd(budget.reserved_nano_usd),
            format_usd(budget.limit_nano_usd),
            format_percent(used_share(budget)),
            format_unix_ms(budget.resets_unix_ms),
        ]);
    }
    table
}

/// Returns the share of the limit spent, from 0 up; above 1 when a request without an
/// output limit overshot it.
fn used_share(budget: &BudgetStatus) -> f64 {
    if budget.limit_nano_usd == 0 {
        return 0.0;
    }
    budget.spent_nano_usd as f64 / budget.limit_nano_usd as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use cco_proto::BudgetPeriod;

    #[test]
    fn table_shows_each_budget() {
        let budgets = [
            BudgetStatus {
                credential: None,
                period: BudgetPeriod::Daily,
                limit_nano_usd: 5_000_000_000,
                spent_nano_usd: 4_980_000_000,
                reserved_nano_usd: 10_000_000,
                resets_unix_ms: 1_764_892_800_000,
            },
            BudgetStatus {
                credential: Some("0123456789ab".into()),
                period: BudgetPeriod::Monthly,
                limit_nano_usd: 20_000_000_000,
                spent_nano_usd: 5_000_000_000,
                reserved_nano_usd: 0,
                resets_unix_ms: 1_767_225_600_000,
            },
        ];
        let mut table = table(&budgets);
        table.force_no_tty();
        let text = table.to_string();
        let lines: Vec<&str> = text.lines().collect();
        let global = lines
            .iter()
            .find(|line| line.contains("all clients"))
            .unwrap();
        let credential = lines
            .iter()
            .find(|line| line.contains("credential 0123456789ab"))
            .unwrap();
        assert!(
            global
                .contains("| daily   | $4.98 |    $0.01 |  $5.00 | 99.6% | 2025-12-05T00:00:00Z |"),
            "{text}"
        );
        assert!(
            credential
                .contains("| monthly | $5.00 |    $0.00 | $20.00 | 25.0% | 2026-01-01T00:00:00Z |"),
            "{text}"
        );
    }

    #[test]
    fn no_budgets_render_nothing() {
        assert_eq!(render(&[]), "");
    }
}
