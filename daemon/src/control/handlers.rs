//! One handler per control request. Each turns a request into a [`Response`], asking the
//! actor that owns the state.

use cco_proto::{
    CacheStatsReply, ConfigReply, ErrorKind, ErrorReply, LongContextRates, PriceRow, PricingQuery,
    PricingReply, Response, StatsQuery, StatusReply, TokenRates, UpdateRequest, CRATE_VERSION,
    PROTOCOL_VERSION,
};

use super::ControlContext;
use crate::analytics::{GetServed, QueryRepriced, QueryStats};
use crate::cache::{Clear, GetStats};
use crate::pricing::ModelPrice;
use crate::updater::UpdateCommand;

fn internal(what: &str, err: impl std::fmt::Display) -> Response {
    Response::Error(ErrorReply {
        kind: ErrorKind::Internal,
        message: format!("{what} failed: {err}; see the ccod log"),
    })
}

async fn cache_stats(ctx: &ControlContext) -> Result<CacheStatsReply, String> {
    match &ctx.cache {
        Some(cache) => cache.send(GetStats).await.map_err(|err| err.to_string()),
        None => Ok(CacheStatsReply {
            enabled: false,
            ..CacheStatsReply::default()
        }),
    }
}

pub async fn status(ctx: &ControlContext) -> Response {
    let served = match ctx.analytics.send(GetServed).await {
        Ok(served) => served,
        Err(err) => return internal("reading the request count", err),
    };
    let cache = match cache_stats(ctx).await {
        Ok(cache) => cache,
        Err(err) => return internal("reading the cache size", err),
    };
    Response::Status(StatusReply {
        version: CRATE_VERSION.to_owned(),
        protocol: PROTOCOL_VERSION,
        pid: std::process::id(),
        uptime_secs: ctx.started.elapsed().as_secs(),
        listen_addr: ctx.listen_addr.clone(),
        data_dir: ctx.config.data_dir.display().to_string(),
        cache_enabled: cache.enabled,
        cache_entries: cache.entries,
        cache_bytes: cache.bytes,
        requests_served: served,
        analytics_enabled: ctx.config.analytics_enabled,
    })
}

pub async fn stats(ctx: &ControlContext, query: StatsQuery) -> Response {
    let reply = if query.reprice {
        let message = QueryRepriced {
            query,
            prices: ctx.prices.clone(),
        };
        ctx.analytics.send(message).await
    } else {
        ctx.analytics.send(QueryStats(query)).await
    };
    match reply {
        Ok(Ok(mut stats)) => {
            if let Some(budgets) = &ctx.budgets {
                stats.budgets = budgets.status(crate::budgets::now_unix_ms());
            }
            Response::Stats(stats)
        }
        Ok(Err(err)) => internal("reading analytics", err),
        Err(err) => internal("reading analytics", err),
    }
}

/// Lists the rows of the effective price table, of one provider when the query names one.
pub fn pricing(ctx: &ControlContext, query: &PricingQuery) -> Response {
    let rows = ctx
        .prices
        .models()
        .filter(|price| {
            query
                .provider
                .as_ref()
                .is_none_or(|provider| *provider == price.provider)
        })
        .map(|price| price_row(price, ctx.prices.aliases_of(price)))
        .collect();
    Response::Pricing(PricingReply { rows })
}

fn price_row(price: &ModelPrice, aliases: Vec<String>) -> PriceRow {
    PriceRow {
        id: price.id.clone(),
        provider: price.provider.clone(),
        aliases,
        rates: TokenRates {
            input: price.input,
            output: price.output,
            cache_write_5m: price.cache_write_5m,
            cache_write_1h: price.cache_write_1h,
            cache_read: price.cache_read,
        },
        long_context: price.long_context.as_ref().map(|tier| LongContextRates {
            threshold_input_tokens: tier.threshold_input_tokens,
            rates: TokenRates {
                input: tier.input,
                output: tier.output,
                cache_write_5m: tier.cache_write_5m,
                cache_write_1h: tier.cache_write_1h,
                cache_read: tier.cache_read,
            },
        }),
        web_search_nano_usd: price.web_search,
        source: price.source.clone(),
        url: price.url.clone(),
        as_of: price.as_of.clone(),
        file: price.file.clone(),
    }
}

pub async fn cache_stats_reply(ctx: &ControlContext) -> Response {
    match cache_stats(ctx).await {
        Ok(stats) => Response::CacheStats(stats),
        Err(err) => internal("reading cache stats", err),
    }
}

pub async fn cache_clear(ctx: &ControlContext) -> Response {
    let Some(cache) = &ctx.cache else {
        return Response::Error(ErrorReply {
            kind: ErrorKind::Internal,
            message: "the cache is disabled (--no-cache); there is nothing to clear".to_owned(),
        });
    };
    match cache.send(Clear).await {
        Ok(cleared) => Response::CacheCleared(cleared),
        Err(err) => internal("clearing the cache", err),
    }
}

pub fn config(ctx: &ControlContext) -> Response {
    Response::Config(ConfigReply {
        toml: ctx.config.to_redacted_toml(),
    })
}

pub fn shutdown(ctx: &ControlContext) -> Response {
    let server = ctx.server.clone();
    // The reply goes out first; the server stops gracefully right after.
    actix_rt::spawn(async move { server.stop(true).await });
    Response::ShuttingDown
}

pub async fn update(ctx: &ControlContext, request: UpdateRequest) -> Response {
    match ctx.updater.send(UpdateCommand(request)).await {
        Ok(Ok(reply)) => Response::Update(reply),
        Ok(Err(err)) => Response::Error(ErrorReply {
            kind: ErrorKind::UpdateFailed,
            message: err.to_string(),
        }),
        Err(err) => internal("reaching the updater", err),
    }
}
