//! Sums of a stats query: the total and one row per group, from records and rollups alike.

use std::collections::HashMap;

use cco_proto::{GroupBy, GroupTotals, StatsQuery, StatsReply, UsageTotals};

use super::rollup::{self, RollupGroup};
use super::RequestRecord;

/// Group value of requests that carried no credential.
pub const NO_CREDENTIAL: &str = "(none)";

/// Totals of a stats query while it is computed.
pub struct Sums {
    group_by: GroupBy,
    total: UsageTotals,
    /// Keyed by group value and priced flag.
    rows: HashMap<(String, bool), UsageTotals>,
}

impl Sums {
    pub fn new(group_by: GroupBy) -> Self {
        Self {
            group_by,
            total: UsageTotals::default(),
            rows: HashMap::new(),
        }
    }

    pub fn add_record(&mut self, record: &RequestRecord) {
        let mut totals = UsageTotals::default();
        record.add_to(&mut totals);
        let group = match self.group_by {
            GroupBy::Model => record.model_label(),
            GroupBy::Day => day_label(rollup::day_of(record.time_unix_ms)),
            GroupBy::Provider => record.provider.clone(),
            GroupBy::Credential => credential_label(record.credential.as_deref().unwrap_or("")),
        };
        self.add(group, record.has_price(), &totals);
    }

    pub fn add_rollup(&mut self, group: &RollupGroup, totals: &UsageTotals) {
        let value = match self.group_by {
            GroupBy::Model => group.model.clone(),
            GroupBy::Day => day_label(group.day),
            GroupBy::Provider => group.provider.clone(),
            GroupBy::Credential => credential_label(&group.credential),
        };
        self.add(value, group.priced, totals);
    }

    fn add(&mut self, group: String, priced: bool, totals: &UsageTotals) {
        rollup::add_totals(&mut self.total, totals);
        rollup::add_totals(self.rows.entry((group, priced)).or_default(), totals);
    }

    /// Builds the reply. Days are sorted in time order, with a day's priced row first;
    /// other groupings put the most expensive row first.
    pub fn into_reply(self, query: &StatsQuery, repriced: bool) -> StatsReply {
        let mut rows: Vec<GroupTotals> = self
            .rows
            .into_iter()
            .map(|((group, priced), totals)| GroupTotals {
                group,
                priced,
                totals,
            })
            .collect();
        if self.group_by == GroupBy::Day {
            rows.sort_by(|a, b| a.group.cmp(&b.group).then(b.priced.cmp(&a.priced)));
        } else {
            rows.sort_by(|a, b| {
                b.totals
                    .cost_nano_usd
                    .cmp(&a.totals.cost_nano_usd)
                    .then_with(|| a.group.cmp(&b.group))
                    .then(b.priced.cmp(&a.priced))
            });
        }
        StatsReply {
            since_unix_ms: query.since_unix_ms,
            until_unix_ms: query.until_unix_ms,
            group_by: self.group_by,
            repriced,
            analytics_enabled: true,
            total: self.total,
            rows,
            // Filled in by the control handler, which owns the budgets' live state.
            budgets: Vec::new(),
        }
    }
}

fn credential_label(prefix: &str) -> String {
    if prefix.is_empty() {
        NO_CREDENTIAL.to_owned()
    } else {
        prefix.to_owned()
    }
}

/// Formats a day number since the Unix epoch as its UTC date, `YYYY-MM-DD`.
pub fn day_label(day: u32) -> String {
    let (year, month, day) = cco_proto::calendar::civil_from_days(i64::from(day));
    format!("{year:04}-{month:02}-{day:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_labels_are_utc_dates() {
        let cases = [
            (0, "1970-01-01"),
            (59, "1970-03-01"),
            (11_016, "2000-02-29"),
            (11_017, "2000-03-01"),
            (19_723, "2024-01-01"),
            (20_425, "2025-12-03"),
            (20_820, "2027-01-02"),
        ];
        for (day, expected) in cases {
            assert_eq!(day_label(day), expected, "day {day}");
        }
    }
}
