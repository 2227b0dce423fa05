//! The HTTP proxy: actix-web handlers that forward every request to the Anthropic API, the
//! OpenAI API or an OpenAI-compatible provider.
//!
//! Per request: pick the upstream from the path (see [`upstream`]), read the body
//! (bounded), build the cache key and send it to the `CacheActor`. A hit replays the stored
//! bytes. A miss of an endpoint that can cost money first reserves its worst-case cost in
//! the budgets (see [`crate::budgets`]) and is rejected with 429 if that fails. It is then
//! forwarded with `awc`, and the response is relayed as it arrives (see [`relay`]).
//! Handlers hold only `Addr`s of the actors and never wait on disk.

mod headers;
pub mod relay;
pub mod upstream;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix::Addr;
use actix_web::body::{BodyStream, SizedStream};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::ConnectionType;
use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use awc::error::{ConnectError, SendRequestError};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use serde_json::Value;
use tracing::{debug, warn};

use crate::analytics::{AnalyticsActor, CacheOutcome, Outcome, Recorder, RequestRecord};
use crate::budgets::{self, Budgets, Reservation};
use crate::cache::{CacheActor, CacheKey, CacheView, CachedResponse, KeyParts, Lookup, Peek};
use crate::config::Secret;
use crate::limits::{RateLimits, Scope};
use crate::metrics::{Gauge, GaugeGuard};
use crate::pricing::PriceTable;
use relay::{CacheTarget, Observer, RecordDraft, Relay};
use upstream::{error_response, ApiKind, Endpoint, Router, Upstream};

/// Name of the response header that reports what the cache did.
pub const CACHE_HEADER: &str = "x-cco-cache";

/// Largest response body collected for the cache or for reading usage. Larger responses
/// are still relayed in full, but not cached.
const MAX_CAPTURED_BYTES: usize = 64 * 1024 * 1024;

/// State shared by all workers.
pub struct ProxyState {
    pub cache: Option<Addr<CacheActor>>,
    /// The cache's view, which settles misses and hits of hot entries without a round trip
    /// to the actor.
    pub cache_view: Option<CacheView>,
    pub analytics: Addr<AnalyticsActor>,
    /// Hands finished requests' records to `analytics` without a message per record.
    pub recorder: Recorder,
    pub prices: Arc<PriceTable>,
    /// Upstream of each request.
    pub router: Router,
    pub max_body_bytes: usize,
    /// Time a client gets to send its body.
    pub client_timeout: Duration,
    /// SHA-256 digests of the accepted access tokens; empty admits every client.
    pub access_token_hashes: Vec<[u8; 32]>,
    pub rate_limits: Option<RateLimits>,
    /// `None` when `[budgets]` sets no limit.
    pub budgets: Option<Arc<Budgets>>,
    /// Requests in progress, for the metrics.
    pub in_flight: Arc<Gauge>,
    /// Event streams being relayed from an upstream, for the metrics.
    pub open_streams: Arc<Gauge>,
    /// Client connections open to the proxy port, counted by guards that `on_connect`
    /// stores with each connection.
    pub open_connections: Arc<Gauge>,
}

/// Request header that carries the proxy's access token, as an alternative to
/// `Proxy-Authorization: Bearer TOKEN`. Neither is forwarded upstream.
pub const ACCESS_TOKEN_HEADER: &str = "x-cco-access-token";

/// The request fields the proxy records. Unknown fields are skipped; `stream` is read
/// leniently, so a request the upstream will reject still gets recorded.
#[derive(Debug, Default, serde::Deserialize)]
struct BodyPeek {
    #[serde(default, deserialize_with = "string_or_none")]
    model: Option<String>,
    #[serde(default, deserialize_with = "bool_or_none")]
    stream: Option<bool>,
}

impl BodyPeek {
    fn from_value(json: &Value) -> Self {
        Self {
            model: json.get("model").and_then(Value::as_str).map(str::to_owned),
            stream: json.get("stream").and_then(Value::as_bool),
        }
    }
}

fn string_or_none<'de, D: serde::Deserializer<'de>>(value: D) -> Result<Option<String>, D::Error> {
    let value = <Value as serde::Deserialize>::deserialize(value)?;
    Ok(value.as_str().map(str::to_owned))
}

fn bool_or_none<'de, D: serde::Deserializer<'de>>(value: D) -> Result<Option<bool>, D::Error> {
    let value = <Value as serde::Deserialize>::deserialize(value)?;
    Ok(value.as_bool())
}

/// Handles every request the proxy receives.
pub async fn handle(
    request: HttpRequest,
    payload: web::Payload,
    state: web::Data<ProxyState>,
    client: web::Data<awc::Client>,
) -> HttpResponse {
    let started = Instant::now();
    let in_flight = state.in_flight.enter();
    let (upstream, upstream_path) = state.router.route(request.path());
    let kind = upstream.kind;
    // `RequestHead::upgrade` is true for `Connection: upgrade`. A bare `Upgrade` header is
    // only a hop-by-hop header and is dropped like the others.
    if request.method() == Method::CONNECT || request.head().upgrade() {
        // Neither API uses tunnels or protocol upgrades, and actix-web would hand such a
        // request's connection over as its body, which never ends.
        return error_response(
            kind,
            StatusCode::NOT_IMPLEMENTED,
            "invalid_request_error",
            "CONNECT and Upgrade requests are not supported by the proxy; send plain HTTP requests",
        );
    }
    let origin_form = request
        .uri()
        .path_and_query()
        .is_some_and(|target| target.as_str().starts_with('/'));
    if !origin_form {
        // A target such as `GARBAGE` parses as an authority with an empty path, which would
        // be forwarded as `/`.
        let target: String = request.uri().to_string().chars().take(100).collect();
        return error_response(
            kind,
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            &format!("invalid request target '{target}': send a path that starts with /"),
        );
    }
    if !state.access_token_hashes.is_empty()
        && !headers::access_token_valid(request.headers(), &state.access_token_hashes)
    {
        return error_response(
            kind,
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "missing or invalid proxy access token: send it as 'Proxy-Authorization: Bearer TOKEN' or 'x-cco-access-token: TOKEN'",
        );
    }
    let body = match read_body(&request, payload, &state, kind).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let endpoint = Endpoint::classify(kind, request.method(), upstream_path);
    let cache = state
        .cache
        .as_ref()
        .filter(|_| endpoint.cacheable() && !headers::cache_opt_out(request.headers()));
    // The cache key needs the whole body as JSON; without a cache lookup, only two fields
    // are read and the rest is scanned without building a tree.
    let json: Option<Value> = match cache {
        Some(_) => serde_json::from_slice(&body).ok(),
        None => None,
    };
    let peek: Option<BodyPeek> = match (endpoint.cacheable(), &json) {
        (false, _) => None,
        (true, Some(json)) => Some(BodyPeek::from_value(json)),
        (true, None) => serde_json::from_slice(&body).ok(),
    };
    let model_requested = peek.as_ref().and_then(|peek| peek.model.clone());
    let stream_requested = peek.as_ref().and_then(|peek| peek.stream).unwrap_or(false);
    let cache = cache.filter(|_| json.is_some());

    let (credential, injected_key) =
        headers::credential(request.headers(), kind, upstream.api_key.as_ref());
    let upstream_path_and_query = match request.uri().query() {
        Some(query) => format!("{upstream_path}?{query}"),
        None => upstream_path.to_owned(),
    };

    let mut draft = RecordDraft {
        started,
        time_unix_ms: unix_ms(),
        provider: upstream.name.clone(),
        method: request.method().as_str().to_owned(),
        path: request.path().to_owned(),
        model_requested,
        stream_requested,
        credential: credential.short(),
        cache: CacheOutcome::Bypass,
    };
    if let Some(limits) = &state.rate_limits {
        if let Err(rejection) = limits.check(&credential.hash) {
            return rate_limited(&state, kind, draft, rejection);
        }
    }

    let key = cache.map(|_| {
        let header = |name: &str| headers::joined(request.headers(), name);
        let (version, beta, organization) = match kind {
            ApiKind::Anthropic => (header("anthropic-version"), header("anthropic-beta"), None),
            ApiKind::OpenAi => (None, None, header("openai-organization")),
        };
        let parts = KeyParts {
            provider: &upstream.name,
            method: request.method().as_str(),
            path: &upstream_path_and_query,
            body: &body,
            anthropic_version: version.as_deref(),
            anthropic_beta: beta.as_deref(),
            openai_organization: organization.as_deref(),
            credential_hash: credential.hash,
        };
        CacheKey::compute_parsed(&parts, json.as_ref())
    });
    if key.is_some() {
        draft.cache = CacheOutcome::Miss;
    }

    let peek = match (&state.cache_view, &key) {
        (Some(view), Some(key)) => view.peek(key, draft.time_unix_ms),
        _ => Peek::Stored,
    };
    if let Peek::Hot(hit) = peek {
        return replay(&state, draft, &hit);
    }
    if let (Some(cache), Some(key), Peek::Stored) = (cache, key, peek) {
        match cache.send(Lookup(key)).await {
            Ok(Some(hit)) => return replay(&state, draft, &hit),
            Ok(None) => {}
            Err(err) => {
                warn!(actor = "proxy", error = %err, "cache lookup failed; forwarding upstream");
                draft.cache = CacheOutcome::Bypass;
            }
        }
    }

    let reservation = match reserve_budget(&state, endpoint, upstream, upstream_path, &body, &draft)
    {
        Ok(reservation) => reservation,
        Err(rejection) => return budget_rejected(&state, kind, draft, &rejection),
    };
    // From here on, a failure drops `reservation`, which releases it.
    let outgoing = build_upstream_request(
        &client,
        &request,
        upstream,
        &upstream_path_and_query,
        injected_key,
    );
    let before_send = started.elapsed();
    // NOTE: a client that leaves before the upstream's response head arrives drops this
    // future, which releases the reservation but writes no record of the request.
    let response = match outgoing.send_body(body).await {
        Ok(response) => response,
        Err(err) => {
            let failure = Failure {
                before_send,
                failed_at: Instant::now(),
            };
            return upstream_failure(&state, upstream, draft, &err, failure);
        }
    };
    let head_at = Instant::now();
    let target = key.zip(cache).map(|(key, cache)| (cache.clone(), key));
    let exchange = Exchange {
        head_request: request.method() == Method::HEAD,
        endpoint,
        target,
        in_flight,
        reservation,
        before_send,
        head_at,
    };
    relay_response(&state, response, draft, exchange)
}

/// Facts about the request that the relay of its response needs.
struct Exchange {
    /// A response to HEAD has no body, whatever its content-length states.
    head_request: bool,
    endpoint: Endpoint,
    /// Cache and key under which a complete 2xx response is stored.
    target: Option<(Addr<CacheActor>, CacheKey)>,
    in_flight: GaugeGuard,
    /// Budget reservation, settled when the response ends.
    reservation: Option<Reservation>,
    /// Time from the request's arrival until the upstream request was sent.
    before_send: Duration,
    /// Time at which the upstream response head arrived.
    head_at: Instant,
}

/// Sends the upstream's response to the client as it arrives, with an [`Observer`] that
/// records it and, for a complete 2xx response, stores it under `target`.
fn relay_response(
    state: &ProxyState,
    response: awc::ClientResponse,
    draft: RecordDraft,
    exchange: Exchange,
) -> HttpResponse {
    let Exchange {
        head_request,
        endpoint,
        target,
        in_flight,
        reservation,
        before_send,
        head_at,
    } = exchange;
    let status = response.status();
    let is_stream = response
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("text/event-stream"));
    let connection_listed = headers::connection_listed(response.headers());
    let mut builder = HttpResponse::build(status);
    let mut replay_headers = Vec::new();
    for (name, value) in response.headers() {
        if headers::is_connection_specific(name, &connection_listed) {
            continue;
        }
        builder.append_header((name.clone(), value.clone()));
        if is_replayed_header(name) {
            if let Ok(text) = value.to_str() {
                replay_headers.push((name.as_str().to_owned(), text.to_owned()));
            }
        }
    }
    builder.insert_header((CACHE_HEADER, draft.cache.as_header_value()));

    let target = target
        .filter(|_| status.is_success())
        .map(|(cache, key)| CacheTarget {
            cache,
            view: state.cache_view.clone(),
            key,
            headers: replay_headers,
        });
    let content_length = if is_stream {
        None
    } else {
        response
            .headers()
            .get("content-length")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<u64>().ok())
    };
    // The proxy requests `identity`; an upstream that compresses anyway is relayed as it
    // is, but its usage cannot be read, and its body is not checked for completeness.
    let encoded = response
        .headers()
        .get("content-encoding")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| !value.eq_ignore_ascii_case("identity"));
    if encoded && endpoint.usage_format().is_some() {
        warn!(actor = "proxy", path = %draft.path,
            "upstream compressed its response despite accept-encoding: identity; its usage is not recorded");
    }
    // RFC 9110 section 6.4.1: these responses have no body whatever their content-length.
    let has_body =
        !head_request && status != StatusCode::NO_CONTENT && status != StatusCode::NOT_MODIFIED;
    let observer = Observer::new(
        draft,
        state.prices.clone(),
        state.recorder.clone(),
        status.as_u16(),
        endpoint.usage_format().filter(|_| !encoded),
        is_stream,
        target,
        MAX_CAPTURED_BYTES,
        content_length.filter(|_| has_body),
    )
    .counted_by(in_flight)
    .reserved(reservation);
    let mut observer = if is_stream {
        observer.counted_as_stream(state.open_streams.enter())
    } else {
        observer
    };
    // The clock stops here because the observer moves into the body. What remains before
    // actix-web gets the head is wrapping the body, which allocates once.
    observer.added_latency = before_send + head_at.elapsed();
    let relay = Relay::new(response, observer);
    match content_length {
        Some(length) => builder.body(SizedStream::new(length, relay)),
        None => builder.body(BodyStream::new(relay)),
    }
}

/// Reads the request body, rejecting one above `--max-body-size` with 413 before it is
/// buffered. Errors are in the format of `kind`'s API.
async fn read_body(
    request: &HttpRequest,
    payload: web::Payload,
    state: &ProxyState,
    kind: ApiKind,
) -> Result<Bytes, HttpResponse> {
    let timeout = state.client_timeout;
    let reading = read_body_unbounded(request, payload, state.max_body_bytes, kind);
    let result = match actix_rt::time::timeout(timeout, reading).await {
        Ok(result) => result,
        Err(_) => Err(error_response(
            kind,
            StatusCode::REQUEST_TIMEOUT,
            "invalid_request_error",
            &format!(
                "the request body did not arrive within {} s; raise --client-timeout for slow links",
                timeout.as_secs()
            ),
        )),
    };
    // The rest of a rejected body may still be on its way, so the connection cannot carry
    // another request.
    result.map_err(|mut response| {
        response
            .head_mut()
            .set_connection_type(ConnectionType::Close);
        response
    })
}

/// Reads the body without a deadline; [`read_body`] adds one.
async fn read_body_unbounded(
    request: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
    kind: ApiKind,
) -> Result<Bytes, HttpResponse> {
    let too_large = || {
        error_response(
            kind,
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_too_large",
            &format!(
                "request body exceeds the proxy limit of {limit} bytes; raise --max-body-size"
            ),
        )
    };
    let declared = request
        .headers()
        .get("content-length")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<usize>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(too_large());
    }
    let mut body = BytesMut::with_capacity(declared.unwrap_or(0));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|err| {
            error_response(
                kind,
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                &format!("cannot read the request body: {err}"),
            )
        })?;
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Builds the upstream request: same method, query and end-to-end headers, and the path
/// without the prefix that selected the upstream. An injected key goes in the header that
/// the upstream's API reads: `x-api-key` for Anthropic, `Authorization: Bearer` for OpenAI.
fn build_upstream_request(
    client: &awc::Client,
    request: &HttpRequest,
    upstream: &Upstream,
    path_and_query: &str,
    injected_key: Option<&Secret>,
) -> awc::ClientRequest {
    let url = format!("{}{}", upstream.base_url, path_and_query);
    let mut outgoing = client.request(request.method().clone(), url);
    let connection_listed = headers::connection_listed(request.headers());
    for (name, value) in request.headers() {
        if headers::is_connection_specific(name, &connection_listed)
            || name == "accept-encoding"
            || name == ACCESS_TOKEN_HEADER
        {
            continue;
        }
        outgoing = outgoing.append_header((name.clone(), value.clone()));
    }
    // The proxy reads usage from the body, so it requests an uncompressed one. The client's
    // own leg is a local connection, where compression saves nothing.
    outgoing = outgoing.insert_header(("accept-encoding", "identity"));
    if let Some(key) = injected_key {
        let (name, text) = match upstream.kind {
            ApiKind::Anthropic => ("x-api-key", key.expose().to_owned()),
            ApiKind::OpenAi => ("authorization", format!("Bearer {}", key.expose())),
        };
        match HeaderValue::from_str(&text) {
            Ok(mut value) => {
                value.set_sensitive(true);
                outgoing = outgoing.insert_header((HeaderName::from_static(name), value));
            }
            Err(_) => warn!(
                actor = "proxy",
                provider = %upstream.name,
                variable = upstream.api_key_env.as_deref().unwrap_or("-"),
                "the API key contains characters not allowed in a header; not sent"
            ),
        }
    }
    outgoing
}

/// Response headers stored with a cache entry. Rate-limit and retry headers, Anthropic's
/// `anthropic-ratelimit-*` and OpenAI's `x-ratelimit-*`, describe the live account state at
/// the original response and would be stale on a replay.
fn is_replayed_header(name: &HeaderName) -> bool {
    let name = name.as_str();
    !(name == "date"
        || name == "retry-after"
        || name == "set-cookie"
        || name == CACHE_HEADER
        || name.starts_with("anthropic-ratelimit-")
        || name.starts_with("x-ratelimit-"))
}

/// Serves a request from a cache entry and records the hit with the cost it saved.
fn replay(state: &ProxyState, mut draft: RecordDraft, hit: &CachedResponse) -> HttpResponse {
    draft.cache = CacheOutcome::Hit;
    let status = StatusCode::from_u16(hit.status).unwrap_or(StatusCode::OK);
    let mut builder = HttpResponse::build(status);
    for (name, value) in &hit.headers {
        builder.append_header((name.as_str(), value.as_str()));
    }
    builder.insert_header((CACHE_HEADER, "hit"));

    let started = draft.started;
    let ttfb = started.elapsed();
    let mut record = draft.finish(&state.prices, hit.status, Outcome::Completed, None, ttfb);
    record.model_response = hit.model.clone();
    record.model_priced = hit.cost_nano_usd.and(hit.model.clone());
    // A hit costs nothing, but a hit of an unpriced model stays unpriced like its original.
    record.cost_nano_usd = hit.cost_nano_usd.map(|_| 0);
    record.saved_nano_usd = hit.cost_nano_usd;
    record.replayed = Some(crate::analytics::ReplayedUsage {
        tokens: hit.tokens,
        web_search_requests: hit.web_search_requests,
    });

    let body = hit.body.clone();
    let response = if hit.is_stream {
        // No content-length on a stream, as from the upstream.
        let body =
            futures_util::stream::once(async move { Ok::<_, std::convert::Infallible>(body) });
        builder.body(BodyStream::new(body))
    } else {
        builder.body(body)
    };
    submit_answered(state, record, started);
    response
}

/// Submits the record of a request that the proxy responded to without the upstream, with
/// the handler's whole time as the time the proxy added.
fn submit_answered(state: &ProxyState, mut record: RequestRecord, started: Instant) {
    record.added_latency_us = relay::micros(started.elapsed());
    relay::submit(&state.recorder, record);
}

/// Rejects a request over a rate limit with 429 and `retry-after` in whole seconds, and
/// records the rejection.
fn rate_limited(
    state: &ProxyState,
    kind: ApiKind,
    draft: RecordDraft,
    rejection: crate::limits::Rejection,
) -> HttpResponse {
    let retry_after = rejection.retry_after.as_secs_f64().ceil().max(1.0) as u64;
    let scope = match rejection.scope {
        Scope::Credential => "this credential",
        Scope::Global => "all clients of this proxy",
    };
    let limit = state
        .rate_limits
        .as_ref()
        .map_or(0, |limits| limits.config().max_requests_per_minute.get());
    let message = format!(
        "rate limit of {limit} requests per minute for {scope} exceeded; retry in {retry_after} s \
         or raise [rate_limiting] max_requests_per_minute"
    );
    let started = draft.started;
    let record = draft.finish(
        &state.prices,
        429,
        Outcome::RateLimited,
        None,
        Duration::ZERO,
    );
    let mut response = error_response(
        kind,
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limit_error",
        &message,
    );
    response.headers_mut().insert(
        HeaderName::from_static("retry-after"),
        HeaderValue::from(retry_after),
    );
    submit_answered(state, record, started);
    response
}

/// Reserves the worst-case cost of a request to an endpoint that can cost money in every
/// budget that applies to it. Returns `Ok(None)` for a free endpoint or when no budget
/// applies.
fn reserve_budget(
    state: &ProxyState,
    endpoint: Endpoint,
    upstream: &Upstream,
    upstream_path: &str,
    body: &[u8],
    draft: &RecordDraft,
) -> Result<Option<Reservation>, budgets::Rejection> {
    let Some(budgets) = &state.budgets else {
        return Ok(None);
    };
    let api = match endpoint {
        Endpoint::Messages => budgets::Api::AnthropicMessages,
        Endpoint::OpenAiGeneration => match budgets::Api::of_openai_path(upstream_path) {
            Some(api) => api,
            None => return Ok(None),
        },
        Endpoint::CountTokens | Endpoint::Other => return Ok(None),
    };
    let estimate = budgets::estimate::estimate(&state.prices, &upstream.name, api, body);
    budgets.reserve(draft.credential.as_deref(), estimate, draft.time_unix_ms)
}

/// Rejects a request that could overrun a budget with 429, with `retry-after` when only
/// the budget's reset can admit it, and records the rejection.
fn budget_rejected(
    state: &ProxyState,
    kind: ApiKind,
    draft: RecordDraft,
    rejection: &budgets::Rejection,
) -> HttpResponse {
    let cache_outcome = draft.cache;
    let started = draft.started;
    let record = draft.finish(
        &state.prices,
        429,
        Outcome::BudgetRejected,
        None,
        Duration::ZERO,
    );
    let mut response = error_response(
        kind,
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limit_error",
        &rejection.message(),
    );
    let headers = response.headers_mut();
    headers.insert(
        HeaderName::from_static(CACHE_HEADER),
        HeaderValue::from_static(cache_outcome.as_header_value()),
    );
    if let Some(seconds) = rejection.retry_after_secs {
        headers.insert(
            HeaderName::from_static("retry-after"),
            HeaderValue::from(seconds),
        );
    }
    submit_answered(state, record, started);
    response
}

/// Timing of an upstream request that failed before its response head arrived.
struct Failure {
    /// Time from the request's arrival until the upstream request was sent.
    before_send: Duration,
    failed_at: Instant,
}

/// Responds to a request whose upstream could not be reached: 504 for a timeout, 502 for the
/// rest, with the cause named.
fn upstream_failure(
    state: &ProxyState,
    upstream: &Upstream,
    draft: RecordDraft,
    err: &SendRequestError,
    failure: Failure,
) -> HttpResponse {
    let base = &upstream.base_url;
    let setting = &upstream.base_url_setting;
    let (status, message) = match err {
        SendRequestError::Timeout | SendRequestError::Connect(ConnectError::Timeout) => (
            StatusCode::GATEWAY_TIMEOUT,
            format!("upstream {base} timed out: {err}; raise --upstream-timeout or --connect-timeout if it is slow"),
        ),
        SendRequestError::Connect(_) => (
            StatusCode::BAD_GATEWAY,
            format!("cannot connect to upstream {base}: {err}; check {setting} and the network"),
        ),
        _ => (
            StatusCode::BAD_GATEWAY,
            format!("upstream {base} failed: {err}"),
        ),
    };
    debug!(actor = "proxy", provider = %upstream.name, status = status.as_u16(), error = %err,
        "upstream request failed");
    let cache_outcome = draft.cache;
    let ttfb = Duration::ZERO;
    let mut record = draft.finish(
        &state.prices,
        status.as_u16(),
        Outcome::UpstreamFailed,
        None,
        ttfb,
    );
    let mut response = error_response(upstream.kind, status, "api_error", &message);
    response.headers_mut().insert(
        HeaderName::from_static(CACHE_HEADER),
        HeaderValue::from_static(cache_outcome.as_header_value()),
    );
    // The wait for the upstream is not the proxy's time, but building the error response is.
    record.added_latency_us = relay::micros(failure.before_send + failure.failed_at.elapsed());
    relay::submit(&state.recorder, record);
    response
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        })
}

/// TLS settings for upstream connections: certificates verified against the Mozilla root
/// store that `webpki-roots` ships, with no way to turn verification off.
pub fn upstream_tls_config() -> rustls::ClientConfig {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// Serves `GET /metrics` in the Prometheus text format.
pub async fn metrics(state: web::Data<ProxyState>) -> HttpResponse {
    let cache = match &state.cache {
        Some(cache) => cache.send(crate::cache::GetStats).await.ok(),
        None => None,
    };
    let message = crate::analytics::RenderMetrics {
        cache,
        gauges: crate::metrics::GaugeValues {
            in_flight_requests: state.in_flight.value(),
            open_streams: state.open_streams.value(),
            open_connections: state.open_connections.value(),
        },
    };
    match state.analytics.send(message).await {
        Ok(mut text) => {
            if let Some(budgets) = &state.budgets {
                crate::metrics::render_budgets(&mut text, &budgets.status(budgets::now_unix_ms()));
            }
            HttpResponse::Ok()
                .content_type("text/plain; version=0.0.4")
                .body(text)
        }
        Err(err) => error_response(
            ApiKind::Anthropic,
            StatusCode::INTERNAL_SERVER_ERROR,
            "api_error",
            &format!("cannot read the metrics: {err}; see the ccod log"),
        ),
    }
}
