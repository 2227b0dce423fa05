//! Daily rollups: per-day totals of the records, kept in the sled tree `rollups` and
//! updated in one batch after each batch of records they sum, so stats over long ranges
//! read one row per day and group instead of every record.
//!
//! Key: the day number since the Unix epoch (u32, big-endian), then the priced flag, the
//! provider, the credential hash prefix and the model label, separated by `\0`. Value: the
//! JSON of [`UsageTotals`]. The tree also stores the mark under [`MARK_KEY`].

use std::collections::HashMap;

use cco_proto::UsageTotals;
use serde::{Deserialize, Serialize};
use tracing::info;

use super::{decode_rollup, sequence_of, RequestRecord};

/// Key of the mark: the sequence number (u64, big-endian) of the last record that the
/// rollups include. Every rollup key is longer and starts with the day, so the empty key
/// sorts before all of them and no range of days contains it. Stores written before the
/// mark existed have none, and their rollups include every record, because the records and
/// the rollups were written in one transaction.
pub const MARK_KEY: &[u8] = b"";

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

/// Returns the mark, or `None` when the store has none.
pub fn read_mark(rollups: &sled::Tree) -> Result<Option<u64>, sled::Error> {
    let Some(value) = rollups.get(MARK_KEY)? else {
        return Ok(None);
    };
    let mark: [u8; 8] = value.as_ref().try_into().map_err(|_| {
        sled::Error::Unsupported(format!(
            "the analytics rollup mark has {} bytes, expected 8",
            value.len()
        ))
    })?;
    Ok(Some(u64::from_be_bytes(mark)))
}

/// Adds `groups` to the stored rollups and sets the mark to `last_sequence`, in one batch.
/// Only the analytics actor writes the rollups, so nothing changes them between the reads
/// and the batch.
pub fn add_to_rollups(
    rollups: &sled::Tree,
    groups: &HashMap<RollupGroup, UsageTotals>,
    last_sequence: u64,
) -> Result<(), sled::Error> {
    let mut batch = sled::Batch::default();
    for (group, added) in groups {
        let key = group.key();
        let mut totals = match rollups.get(&key)? {
            Some(stored) => decode_rollup(&stored),
            None => UsageTotals::default(),
        };
        add_totals(&mut totals, added);
        let value = serde_json::to_vec(&totals).expect("totals serialize to JSON");
        batch.insert(key, value);
    }
    batch.insert(MARK_KEY, &last_sequence.to_be_bytes()[..]);
    rollups.apply_batch(batch)
}

/// Sets the mark to the last sequence number of the records, for a store written without
/// one, whose rollups include every record.
pub fn set_initial_mark(tree: &sled::Tree, rollups: &sled::Tree) -> Result<(), sled::Error> {
    let mut last_sequence = None;
    for key in tree.iter().keys() {
        last_sequence = last_sequence.max(sequence_of(&key?));
    }
    if let Some(sequence) = last_sequence {
        rollups.insert(MARK_KEY, &sequence.to_be_bytes()[..])?;
        // On disk before the first write, so a crash in it cannot keep records past a mark
        // that was lost.
        rollups.flush()?;
        info!(
            actor = "analytics",
            mark = sequence,
            "set the analytics rollup mark of a store written without one"
        );
    }
    Ok(())
}

/// Adds the records with a sequence number past the mark to the rollups: those that a
/// crash or a failed write left stored without their rollups. Reads every record key,
/// because keys sort by time and not by sequence number. Does nothing when the store has
/// no mark.
pub fn add_records_past_mark(tree: &sled::Tree, rollups: &sled::Tree) -> Result<(), sled::Error> {
    let Some(mark) = read_mark(rollups)? else {
        return Ok(());
    };
    let mut records = Vec::new();
    let mut last_sequence = mark;
    for entry in tree.iter() {
        let (key, value) = entry?;
        let Some(sequence) = sequence_of(&key).filter(|&sequence| sequence > mark) else {
            continue;
        };
        last_sequence = last_sequence.max(sequence);
        // A record that does not decode is skipped by every query too.
        if let Ok(record) = serde_json::from_slice::<RequestRecord>(&value) {
            records.push(record);
        }
    }
    if last_sequence == mark {
        return Ok(());
    }
    add_to_rollups(rollups, &sum_by_group(&records), last_sequence)?;
    info!(
        actor = "analytics",
        records = records.len(),
        mark,
        last_sequence,
        "added records past the mark to the analytics rollups"
    );
    Ok(())
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
