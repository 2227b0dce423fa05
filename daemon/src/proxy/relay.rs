//! The response relay: passes upstream body chunks to the client as they arrive and watches
//! them on the way to read usage and to collect a cacheable copy.
//!
//! When the body ends, fails or is dropped because the client went away, the observer
//! sends one analytics record with the usage seen so far and, only for a complete 2xx
//! response, hands the collected bytes to the cache. Both are `do_send`: the relay never
//! waits for an actor.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use actix::Addr;
use actix_web::error::PayloadError;
use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use tracing::{debug, info, warn};

use crate::analytics::{CacheOutcome, Outcome, Recorder, RequestRecord};
use crate::budgets::Reservation;
use crate::cache::{CacheActor, CacheKey, CacheView, CachedResponse, Store};
use crate::metrics::GaugeGuard;
use crate::pricing::PriceTable;
use crate::sse::SseParser;
use crate::usage::{StreamTracker, Usage, UsageFormat};

/// Facts about a request known before the upstream responds.
#[derive(Debug, Clone)]
pub struct RecordDraft {
    pub started: Instant,
    pub time_unix_ms: u64,
    /// Name of the upstream: `anthropic`, `openai` or a `[[providers]]` name.
    pub provider: String,
    pub method: String,
    pub path: String,
    pub model_requested: Option<String>,
    pub stream_requested: bool,
    pub credential: Option<String>,
    pub cache: CacheOutcome,
}

impl RecordDraft {
    /// Completes the record with the response's facts, pricing `usage` with `prices`.
    pub fn finish(
        self,
        prices: &PriceTable,
        status: u16,
        outcome: Outcome,
        usage: Option<Usage>,
        ttfb: Duration,
    ) -> RequestRecord {
        let usage = usage.unwrap_or_default();
        let model = usage.model.as_deref().or(self.model_requested.as_deref());
        let (model_priced, cost_nano_usd) = prices.price_request(
            &self.provider,
            model,
            &usage.tokens,
            usage.web_search_requests,
        );
        RequestRecord {
            time_unix_ms: self.time_unix_ms,
            provider: self.provider,
            method: self.method,
            path: self.path,
            model_requested: self.model_requested,
            model_response: usage.model,
            model_priced,
            status,
            outcome,
            stream: self.stream_requested,
            cache: self.cache,
            latency_us: micros(self.started.elapsed()),
            ttfb_us: micros(ttfb),
            tokens: usage.tokens,
            cost_nano_usd,
            saved_nano_usd: None,
            credential: self.credential,
            usage_missing: false,
            web_search_requests: usage.web_search_requests,
            estimated: usage.estimated,
            replayed: None,
            added_latency_us: 0,
        }
    }
}

pub fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// Destination of a complete response in the cache, for a cacheable request.
pub struct CacheTarget {
    pub cache: Addr<CacheActor>,
    /// View the response is published in before the store, so the next request hits it.
    pub view: Option<CacheView>,
    pub key: CacheKey,
    /// Response headers to replay on a hit.
    pub headers: Vec<(String, String)>,
}

/// Everything the relay needs to account for the response once it ends.
pub struct Observer {
    pub draft: RecordDraft,
    pub prices: Arc<PriceTable>,
    pub recorder: Recorder,
    pub status: u16,
    /// Time at which the response headers arrived.
    pub headers_at: Instant,
    /// Usage format of the endpoint, or `None` for one whose responses carry no usage.
    pub usage_format: Option<UsageFormat>,
    /// `Some` for an event stream of an endpoint that reports usage.
    pub sse: Option<(SseParser, StreamTracker)>,
    pub is_stream: bool,
    pub cache: Option<CacheTarget>,
    /// Copy of the body, kept while it fits `capture_limit`.
    pub captured: BytesMut,
    pub capture: bool,
    pub capture_limit: usize,
    /// The upstream's `content-length`, for a body that is not a stream.
    pub declared_length: Option<u64>,
    /// Body bytes relayed so far.
    pub received_bytes: u64,
    first_byte_at: Option<Instant>,
    /// Time the proxy spent on the request before the upstream request was sent and after
    /// the upstream response head arrived, recorded for the metrics.
    pub added_latency: Duration,
    /// Keeps the request counted as in flight until the body ends.
    in_flight: Option<GaugeGuard>,
    /// Keeps an event stream counted as open until it ends.
    open_stream: Option<GaugeGuard>,
    /// Budget reservation of the request, settled with its cost when the body ends.
    reservation: Option<Reservation>,
}

/// Way the upstream body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Complete,
    UpstreamFailed,
    ClientGone,
}

impl Observer {
    #[allow(
        clippy::too_many_arguments,
        reason = "a plain constructor of the relay's state"
    )]
    pub fn new(
        draft: RecordDraft,
        prices: Arc<PriceTable>,
        recorder: Recorder,
        status: u16,
        usage_format: Option<UsageFormat>,
        is_stream: bool,
        cache: Option<CacheTarget>,
        capture_limit: usize,
        declared_length: Option<u64>,
    ) -> Self {
        // A JSON body is collected to read its usage even when it is not cached.
        let capture = cache.is_some() || (usage_format.is_some() && !is_stream);
        let sse = usage_format
            .filter(|_| is_stream)
            .map(|format| (SseParser::new(), format.stream_tracker()));
        Self {
            draft,
            prices,
            recorder,
            status,
            headers_at: Instant::now(),
            usage_format,
            sse,
            is_stream,
            cache,
            captured: BytesMut::new(),
            capture,
            capture_limit,
            declared_length,
            received_bytes: 0,
            first_byte_at: None,
            added_latency: Duration::ZERO,
            in_flight: None,
            open_stream: None,
            reservation: None,
        }
    }

    /// Counts the request as in flight until the relay finishes.
    pub fn counted_by(mut self, guard: GaugeGuard) -> Self {
        self.in_flight = Some(guard);
        self
    }

    /// Counts the response as an open stream until the relay finishes.
    pub fn counted_as_stream(mut self, guard: GaugeGuard) -> Self {
        self.open_stream = Some(guard);
        self
    }

    /// Settles `reservation` with the request's cost when the relay finishes.
    pub fn reserved(mut self, reservation: Option<Reservation>) -> Self {
        self.reservation = reservation;
        self
    }

    fn observe(&mut self, chunk: &Bytes) {
        if self.first_byte_at.is_none() {
            self.first_byte_at = Some(Instant::now());
        }
        self.received_bytes += chunk.len() as u64;
        if let Some((parser, stream)) = &mut self.sse {
            parser.feed(chunk, |event| stream.observe(&event));
        }
        if self.capture {
            if self.captured.len() + chunk.len() > self.capture_limit {
                // Too large to cache or to parse; the stream goes on uncollected.
                self.capture = false;
                self.captured = BytesMut::new();
            } else {
                self.captured.extend_from_slice(chunk);
            }
        }
    }

    /// Returns true when a body that ended without an error is still incomplete. That is a
    /// body shorter than its `content-length`, or, for an endpoint that reports usage, an
    /// event stream without its terminal event (`message_stop`, `data: [DONE]` or
    /// `response.completed`) or an error event, or a 2xx JSON body that does not parse.
    ///
    /// awc 3.11 ends the body without an error when the upstream closes the connection
    /// early, between two chunks included, so these checks are what separates an upstream
    /// that cut its response from one that finished.
    /// NOTE: a chunked body of another path has no such check, so a cut there still
    /// reaches the client as complete.
    fn ended_early(&self) -> bool {
        if self
            .declared_length
            .is_some_and(|length| self.received_bytes < length)
        {
            return true;
        }
        match &self.sse {
            Some((parser, stream)) => {
                !parser.overflowed() && !stream.saw_end() && !stream.saw_error()
            }
            None => {
                self.usage_format.is_some()
                    && !self.is_stream
                    && self.capture
                    && (200..300).contains(&self.status)
                    && serde_json::from_slice::<serde::de::IgnoredAny>(&self.captured).is_err()
            }
        }
    }

    fn finish(self, end: End) {
        let end = match end {
            End::Complete if self.ended_early() => End::UpstreamFailed,
            other => other,
        };
        let success = (200..300).contains(&self.status);
        let (usage, cacheable) = match (&self.sse, self.usage_format) {
            (Some((parser, stream)), _) => {
                let complete = stream.saw_end() && !stream.saw_error() && !parser.overflowed();
                (stream.usage(), complete)
            }
            (None, Some(format)) if !self.is_stream && self.capture && end == End::Complete => {
                let usage = format.from_body(&self.captured);
                let parsed = usage.is_some();
                (usage, parsed)
            }
            (None, _) => (None, end == End::Complete),
        };
        // A stream whose usage never came has an unknown cost, which is not $0. The parser
        // gives up on an overlong line, so an overflowed stream counts too.
        let usage_missing = success && self.sse.is_some() && usage.is_none();
        let outcome = match end {
            End::Complete => Outcome::Completed,
            End::UpstreamFailed => Outcome::UpstreamFailed,
            End::ClientGone => Outcome::ClientDisconnected,
        };
        let ttfb = self.first_byte_at.unwrap_or(self.headers_at) - self.draft.started;
        let mut record = self
            .draft
            .finish(&self.prices, self.status, outcome, usage, ttfb);
        record.added_latency_us = micros(self.added_latency);
        if usage_missing {
            record.usage_missing = true;
            record.cost_nano_usd = None;
        }
        if let Some(reservation) = self.reservation {
            // A stream without usage may have cost up to its estimate, which is charged
            // rather than nothing.
            // NOTE: the records carry no cost for it, so after a restart the budget no
            // longer counts that charge.
            let charged = match record.cost_nano_usd {
                Some(cost) => cost,
                None if record.usage_missing => reservation.amount_nano_usd(),
                None => 0,
            };
            reservation.settle(charged);
        }
        if let Some(target) = self.cache {
            if success && end == End::Complete && cacheable && self.capture {
                let response = Arc::new(CachedResponse {
                    status: self.status,
                    headers: target.headers,
                    body: self.captured.freeze(),
                    is_stream: self.is_stream,
                    model: record
                        .model_priced
                        .clone()
                        .or(record.model_response.clone()),
                    tokens: record.tokens,
                    web_search_requests: record.web_search_requests,
                    cost_nano_usd: record.cost_nano_usd,
                    created_unix_ms: record.time_unix_ms,
                });
                let body_bytes = response.body.len() as u64;
                let view = target.view.as_ref();
                if view.is_none_or(|view| view.reserve_store(body_bytes)) {
                    if let Some(view) = view {
                        view.publish(target.key, &response);
                    }
                    target.cache.do_send(Store {
                        key: target.key,
                        response,
                    });
                } else {
                    debug!(actor = "proxy", key = %target.key, body_bytes,
                        "the cache's writes are behind; this response is not stored");
                }
            }
        }
        submit(&self.recorder, record);
    }
}

/// Formats nano-USD as dollars with all nine decimals, so the log keeps the exact value.
fn usd(nano: u64) -> String {
    format!("{}.{:09}", nano / 1_000_000_000, nano % 1_000_000_000)
}

/// Writes the access-log line of a finished request and sends its record to analytics.
/// The line carries no header, body or credential, only the hash prefix.
pub fn submit(recorder: &Recorder, record: RequestRecord) {
    let tokens = &record.tokens;
    let cost = match record.cost_nano_usd {
        Some(cost) => usd(cost),
        None if record.usage_missing => "unknown: no usage in the stream".to_owned(),
        None => "unpriced".to_owned(),
    };
    info!(actor = "proxy", provider = %record.provider, method = %record.method,
        path = %record.path,
        status = record.status, outcome = ?record.outcome,
        cache = record.cache.as_header_value(),
        model = %record.model_label(),
        input = tokens.input, output = tokens.output, cache_write_5m = tokens.cache_write_5m,
        cache_write_1h = tokens.cache_write_1h, cache_read = tokens.cache_read,
        web_search_requests = record.web_search_requests, estimated = record.estimated,
        cost_usd = %cost,
        latency_ms = record.latency_us as f64 / 1000.0,
        credential = record.credential.as_deref().unwrap_or("-"), "request");
    recorder.submit(record);
}

/// The body sent to the client: the upstream body, chunk for chunk.
pub struct Relay<S> {
    upstream: S,
    observer: Option<Observer>,
}

impl<S> Relay<S> {
    pub fn new(upstream: S, observer: Observer) -> Self {
        Self {
            upstream,
            observer: Some(observer),
        }
    }
}

impl<S, E> Stream for Relay<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: From<PayloadError>,
{
    type Item = Result<Bytes, E>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        match Pin::new(&mut this.upstream).poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(chunk))) => {
                if let Some(observer) = &mut this.observer {
                    observer.observe(&chunk);
                    if observer
                        .declared_length
                        .is_some_and(|length| observer.received_bytes >= length)
                    {
                        // The whole body is here: account for it before the client can
                        // read its last byte, so that a request it sends next finds the
                        // record and the cache entry.
                        if let Some(observer) = this.observer.take() {
                            observer.finish(End::Complete);
                        }
                    }
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(err))) => {
                if let Some(observer) = this.observer.take() {
                    observer.finish(End::UpstreamFailed);
                }
                Poll::Ready(Some(Err(err)))
            }
            Poll::Ready(None) => match this.observer.take() {
                Some(observer) if observer.ended_early() => {
                    warn!(actor = "proxy", provider = %observer.draft.provider,
                        path = %observer.draft.path,
                        "upstream ended its response early; closing the client connection");
                    observer.finish(End::UpstreamFailed);
                    // An error makes actix-web close the connection without the last chunk,
                    // so the client sees the cut instead of a complete body.
                    Poll::Ready(Some(Err(E::from(PayloadError::Incomplete(None)))))
                }
                Some(observer) => {
                    observer.finish(End::Complete);
                    Poll::Ready(None)
                }
                None => Poll::Ready(None),
            },
        }
    }
}

impl<S> Drop for Relay<S> {
    fn drop(&mut self) {
        // Dropped before the end: the client disconnected. Dropping `upstream` with it
        // closes the upstream connection, which cancels the request there.
        if let Some(observer) = self.observer.take() {
            observer.finish(End::ClientGone);
        }
    }
}
