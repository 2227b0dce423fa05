//! Repricing: the cost of a stored record recomputed from its usage with another price
//! table, such as the daemon's current one after a configuration change.

use crate::pricing::PriceTable;

use super::{CacheOutcome, RequestRecord};

/// Replaces the record's priced model, cost and savings with those that `prices` gives its
/// usage, the way the proxy prices a new request.
///
/// A stream without usage keeps its unknown cost. A cache hit is priced from the usage of
/// the response it replayed: it still costs 0, and its savings are that usage's price.
///
/// NOTE: hits recorded before the replayed usage was stored keep their stored savings,
/// because the record contains nothing to reprice them from.
pub fn reprice(record: &mut RequestRecord, prices: &PriceTable) {
    if record.usage_missing {
        return;
    }
    let model = record
        .model_response
        .as_deref()
        .or(record.model_requested.as_deref());
    if record.cache == CacheOutcome::Hit {
        let Some(replayed) = record.replayed else {
            return;
        };
        let (priced, saved) = prices.price_request(
            &record.provider,
            model,
            &replayed.tokens,
            replayed.web_search_requests,
        );
        record.model_priced = priced;
        record.cost_nano_usd = saved.map(|_| 0);
        record.saved_nano_usd = saved;
        return;
    }
    let (priced, cost) = prices.price_request(
        &record.provider,
        model,
        &record.tokens,
        record.web_search_requests,
    );
    record.model_priced = priced;
    record.cost_nano_usd = cost;
}
