//! Recorded cost per UTC day and credential, read from the rollups at start-up so that the
//! budgets count what was spent before the daemon started.

use std::collections::BTreeMap;

use tracing::warn;

use super::rollup::RollupGroup;
use super::{decode_rollup, AnalyticsActor};
use crate::budgets::DaySpend;

impl AnalyticsActor {
    /// Sums the recorded cost of every day from `first_day` on, per credential. Records
    /// still in the buffer are not included, so call it before the actor starts. Fails when
    /// analytics are off, because then no spend is recorded.
    pub fn spend_since(&self, first_day: u32) -> Result<Vec<DaySpend>, sled::Error> {
        let Some(store) = &self.store else {
            return Err(sled::Error::Unsupported(
                "analytics are off, so no spend is recorded".to_owned(),
            ));
        };
        let mut sums: BTreeMap<(u32, String), u64> = BTreeMap::new();
        for entry in store.rollups.range(&first_day.to_be_bytes()[..]..) {
            let (key, value) = entry?;
            let Some(group) = RollupGroup::from_key(&key) else {
                warn!(actor = "analytics", key = %hex::encode(&key), "skipped an undecodable rollup key");
                continue;
            };
            let cost = decode_rollup(&value).cost_nano_usd;
            let sum = sums.entry((group.day, group.credential)).or_default();
            *sum = sum.saturating_add(cost);
        }
        Ok(sums
            .into_iter()
            .map(|((day, credential), cost_nano_usd)| DaySpend {
                day,
                // The rollups store a request without a credential under "".
                credential: (!credential.is_empty()).then_some(credential),
                cost_nano_usd,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use actix::prelude::*;
    use cco_proto::TokenCounts;

    use super::super::rollup::DAY_MS;
    use super::super::{CacheOutcome, Flush, Outcome, Record, RequestRecord};
    use super::*;

    fn record(day: u64, credential: Option<&str>, cost: Option<u64>) -> RequestRecord {
        RequestRecord {
            time_unix_ms: day * DAY_MS + 1000,
            provider: "anthropic".into(),
            method: "POST".into(),
            path: "/v1/messages".into(),
            model_requested: Some("claude-haiku-4-5".into()),
            model_response: None,
            model_priced: cost.map(|_| "claude-haiku-4-5".into()),
            status: 200,
            outcome: Outcome::Completed,
            stream: false,
            cache: CacheOutcome::Miss,
            latency_us: 10,
            ttfb_us: 5,
            tokens: TokenCounts::default(),
            cost_nano_usd: cost,
            saved_nano_usd: None,
            credential: credential.map(str::to_owned),
            usage_missing: false,
            web_search_requests: 0,
            estimated: false,
            replayed: None,
            added_latency_us: 0,
        }
    }

    #[actix::test]
    async fn spend_sums_days_and_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let actor = AnalyticsActor::new(&db, Duration::from_secs(60))
            .unwrap()
            .start();
        for record in [
            record(99, Some("aaaaaaaaaaaa"), Some(1)),
            record(100, Some("aaaaaaaaaaaa"), Some(2)),
            record(100, Some("aaaaaaaaaaaa"), Some(3)),
            record(100, None, Some(5)),
            record(100, None, None),
            record(101, Some("bbbbbbbbbbbb"), Some(7)),
        ] {
            actor.do_send(Record(record));
        }
        actor.send(Flush).await.unwrap().unwrap();
        let reopened = AnalyticsActor::new(&db, Duration::from_secs(60)).unwrap();
        let spend = reopened.spend_since(100).unwrap();
        let expected = [
            (100, Some("aaaaaaaaaaaa"), 5),
            (100, None, 5),
            (101, Some("bbbbbbbbbbbb"), 7),
        ];
        assert_eq!(spend.len(), expected.len(), "{spend:?}");
        for (day, credential, cost) in expected {
            let found = spend
                .iter()
                .find(|spend| spend.day == day && spend.credential.as_deref() == credential);
            assert_eq!(
                found.map(|spend| spend.cost_nano_usd),
                Some(cost),
                "day {day}, credential {credential:?}: {spend:?}"
            );
        }
    }
}
