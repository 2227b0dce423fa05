//! Daily rollups: per-day totals of the records, kept in the sled tree `rollups` and
//! updated in the same transaction as the records they sum, so stats over long ranges read
//! one row per day and group instead of every record.
//!
//! Key: the day number since the Unix epoch (u32, big-endian), then the priced flag, the
//! provider, the credential hash prefix and the model label, separated by `\0`. Value: the
//! JSON of [`UsageTotals`].

use std::collections::HashMap;

use cco_proto::UsageTotals;
use serde::{Deserialize, Serialize};

use super::RequestRecord;

pub const DAY_MS: u64 = 86_400_000;

/// The group one rollup row sums.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RollupGroup {
    pub day: u32,
    pub priced: bool,
    pub provider: String,
    pub credential: String,
    pub model: String,
}

impl RollupGroup {
    pub fn of(record: &RequestRecord) -> Self {
        Self {
            day: day_of(record.time_unix_ms),
            priced: record.has_price(),
            provider: record.provider.clone(),
            credential: record.credential.clone().unwrap_or_default(),
            model: record.model_label(),
        }
    }

    pub fn key(&self) -> Vec<u8> {
        let mut key = Vec::with_capacity(8 + self.provider.len() + self.model.len() + 16);
        key.extend_from_slice(&self.day.to_be_bytes());
        key.push(u8::from(self.priced));
        for part in [&self.provider, &self.credential, &self.model] {
            key.extend_from_slice(part.as_bytes());
            key.push(0);
        }
        key
    }

    /// Decodes a key written by [`RollupGroup::key`].
    pub fn from_key(key: &[u8]) -> Option<Self> {
        let day = u32::from_be_bytes(key.get(..4)?.try_into().ok()?);
        let priced = *key.get(4)? == 1;
        let mut parts = key.get(5..)?.split(|&byte| byte == 0);
        let mut next = || {
            parts
                .next()
                .map(|part| String::from_utf8_lossy(part).into_owned())
        };
        Some(Self {
            day,
            priced,
            provider: next()?,
            credential: next()?,
            model: next()?,
        })
    }
}

pub fn day_of(time_unix_ms: u64) -> u32 {
    u32::try_from(time_unix_ms / DAY_MS).unwrap_or(u32::MAX)
}

/// Sums `records` per group, ready to be added to the stored rows.
pub fn sum_by_group<'a>(
    records: impl IntoIterator<Item = &'a RequestRecord>,
) -> HashMap<RollupGroup, UsageTotals> {
    let mut groups: HashMap<RollupGroup, UsageTotals> = HashMap::new();
    for record in records {
        record.add_to(groups.entry(RollupGroup::of(record)).or_default());
    }
    groups
}

/// Adds every counter of `other` to `totals`.
pub fn add_totals(totals: &mut UsageTotals, other: &UsageTotals) {
    totals.requests += other.requests;
    totals.cache_hits += other.cache_hits;
    totals.errors += other.errors;
    totals.unpriced_requests += other.unpriced_requests;
    totals.rate_limited += other.rate_limited;
    totals.budget_rejected += other.budget_rejected;
    totals.streams_without_usage += other.streams_without_usage;
    totals.estimated_requests += other.estimated_requests;
    totals.tokens.add(&other.tokens);
    totals.web_search_requests += other.web_search_requests;
    totals.cost_nano_usd += other.cost_nano_usd;
    totals.saved_nano_usd += other.saved_nano_usd;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_round_trips_and_sorts_by_day() {
        let group = RollupGroup {
            day: 20_000,
            priced: true,
            provider: "anthropic".into(),
            credential: "0123456789ab".into(),
            model: "claude-sonnet-4-5".into(),
        };
        assert_eq!(RollupGroup::from_key(&group.key()), Some(group.clone()));
        let later = RollupGroup {
            day: 20_001,
            ..group.clone()
        };
        assert!(later.key() > group.key());
        assert_eq!(day_of(DAY_MS * 3 - 1), 2);
        assert_eq!(day_of(DAY_MS * 3), 3);
    }
}
