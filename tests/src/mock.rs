//! Mock Anthropic upstream: an HTTP/1.1 server on loopback that records
//! every request and replies from a queue of scripted replies, or with
//! default Messages API responses when the queue is empty.
//!
//! It uses std threads and blocking sockets, one thread per connection, so
//! a test controls exactly which bytes go out in which write.

mod defaults;
mod reply;

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::wire::{self, WireReader};
pub use reply::{split_at_offsets, split_every, Reply};
use reply::{write_flush, write_reply, Outcome, ReplyKind, WriteContext};

/// Requests a mock serves before it stops by itself.
pub const DEFAULT_MAX_REQUESTS: u64 = 1_000_000;
/// Time after which a mock stops by itself.
pub const DEFAULT_MAX_LIFETIME: Duration = Duration::from_secs(600);

/// Idle time after which a keep-alive connection is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Time a single write may block on a peer that does not read.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Open connections beyond this are closed at once.
const MAX_CONNECTIONS: usize = 1024;
const POLL_INTERVAL: Duration = Duration::from_millis(5);

/// A request as the mock received it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    /// Request target as sent, query included, such as `/v1/models?limit=2`.
    pub path: String,
    /// Header fields in arrival order, names in their original case.
    pub headers: Vec<(String, String)>,
    /// Body after removing any chunked framing.
    pub body: Vec<u8>,
    /// Whether the body arrived with `Transfer-Encoding: chunked`.
    pub chunked: bool,
    /// Number of the TCP connection the request arrived on, counting from 0,
    /// so a test can tell whether a client reused a connection.
    pub connection_id: u64,
    pub received_at: Instant,
}

impl RecordedRequest {
    /// Returns the first value of header `name`, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        wire::header_value(&self.headers, name)
    }

    /// Returns all values of header `name`, in arrival order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        wire::header_values(&self.headers, name)
    }

    /// Parses the body as JSON.
    ///
    /// # Panics
    /// When the body is not valid JSON; the message shows the body.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|err| {
            panic!(
                "body of {} {} is not valid JSON ({err}): {:?}",
                self.method,
                self.path,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// Returns the body as text, with invalid UTF-8 replaced.
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Settings of a mock, set through [`MockUpstream::builder`].
#[derive(Clone, Debug)]
pub struct MockUpstreamBuilder {
    address: SocketAddr,
    max_requests: u64,
    max_lifetime: Duration,
    stream_chunk_delay: Duration,
    record_requests: bool,
}

impl MockUpstreamBuilder {
    /// Sets the address to listen on. The default is `127.0.0.1:0`, a free
    /// port. [`MockUpstreamBuilder::start`] rejects non-loopback addresses.
    pub fn address(mut self, address: SocketAddr) -> Self {
        self.address = address;
        self
    }

    /// Sets how many requests the mock serves before it stops.
    pub fn max_requests(mut self, max_requests: u64) -> Self {
        self.max_requests = max_requests;
        self
    }

    /// Sets how long the mock runs before it stops.
    pub fn max_lifetime(mut self, max_lifetime: Duration) -> Self {
        self.max_lifetime = max_lifetime;
        self
    }

    /// Sets the pause between the events of default streaming replies.
    pub fn stream_chunk_delay(mut self, delay: Duration) -> Self {
        self.stream_chunk_delay = delay;
        self
    }

    /// Sets whether requests are stored for [`MockUpstream::requests`].
    /// Benchmarks turn it off to keep memory flat, and counts still work.
    pub fn record_requests(mut self, record: bool) -> Self {
        self.record_requests = record;
        self
    }

    /// Binds the listener and starts the accept thread.
    pub fn start(self) -> io::Result<MockUpstream> {
        if !self.address.ip().is_loopback() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "mock upstream address {} is not a loopback address; use 127.0.0.1",
                    self.address
                ),
            ));
        }
        if self.max_requests == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "mock upstream max_requests must be at least 1",
            ));
        }
        let listener = TcpListener::bind(self.address)?;
        let address = listener.local_addr()?;
        let deadline = Instant::now()
            .checked_add(self.max_lifetime)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("mock upstream lifetime {:?} is too long", self.max_lifetime),
                )
            })?;

        let shared = Arc::new(Shared {
            address,
            settings: self,
            state: Mutex::new(State::default()),
            disconnects: AtomicUsize::new(0),
            stop: StopSignal::default(),
            connections: Mutex::new(HashMap::new()),
            next_connection_id: AtomicU64::new(0),
        });

        let accept_shared = Arc::clone(&shared);
        let accept_thread = thread::Builder::new()
            .name("mock-accept".to_string())
            .spawn(move || accept_loop(&accept_shared, listener))?;
        let watchdog_shared = Arc::clone(&shared);
        let watchdog_thread = thread::Builder::new()
            .name("mock-watchdog".to_string())
            .spawn(move || {
                let remaining = deadline.saturating_duration_since(Instant::now());
                if !watchdog_shared.stop.wait(remaining) {
                    eprintln!(
                        "mock upstream {address}: lifetime of {:?} reached, stopping",
                        watchdog_shared.settings.max_lifetime
                    );
                    watchdog_shared.shut_down();
                }
            })?;

        Ok(MockUpstream {
            address,
            shared,
            threads: vec![accept_thread, watchdog_thread],
        })
    }
}

/// A running mock upstream. Dropping it stops the server: the listener
/// closes and open connections are shut down.
pub struct MockUpstream {
    address: SocketAddr,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl MockUpstream {
    /// Starts a mock on `127.0.0.1` at a free port with default settings.
    ///
    /// # Panics
    /// When the listener cannot be bound.
    pub fn start() -> MockUpstream {
        MockUpstream::builder()
            .start()
            .unwrap_or_else(|err| panic!("failed to start the mock upstream: {err}"))
    }

    pub fn builder() -> MockUpstreamBuilder {
        MockUpstreamBuilder {
            address: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            max_requests: DEFAULT_MAX_REQUESTS,
            max_lifetime: DEFAULT_MAX_LIFETIME,
            stream_chunk_delay: Duration::ZERO,
            record_requests: true,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.address
    }

    /// Returns `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Queues a reply; each request takes the oldest queued reply.
    pub fn push_reply(&self, reply: Reply) {
        self.shared.lock_state().replies.push_back(reply);
    }

    /// Returns how many queued replies no request has taken yet.
    pub fn pending_replies(&self) -> usize {
        self.shared.lock_state().replies.len()
    }

    /// Returns copies of the recorded requests, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock_state().requests.clone()
    }

    /// Returns how many requests arrived, recorded or not.
    pub fn request_count(&self) -> usize {
        self.shared.lock_state().request_count as usize
    }

    /// Waits until at least `count` requests arrived. Returns false on timeout.
    pub fn wait_for_requests(&self, count: usize, timeout: Duration) -> bool {
        poll_until(timeout, || self.request_count() >= count)
    }

    /// Returns how many replies the peer abandoned. The mock sees this when
    /// the peer closes the connection during a reply's delay or chunk delay,
    /// or when a write fails.
    ///
    /// NOTE: a peer that closes during a reply without delays may go
    /// uncounted, because writes into the kernel's send buffer still succeed.
    pub fn disconnects(&self) -> usize {
        self.shared.disconnects.load(Ordering::SeqCst)
    }

    /// Waits until at least `count` disconnects were seen. Returns false on
    /// timeout.
    pub fn wait_for_disconnects(&self, count: usize, timeout: Duration) -> bool {
        poll_until(timeout, || self.disconnects() >= count)
    }

    /// Returns whether the mock stopped, from its request or lifetime cap.
    pub fn is_stopped(&self) -> bool {
        self.shared.stop.is_set()
    }

    /// Blocks until the mock stops from its request or lifetime cap.
    pub fn wait_until_stopped(&self) {
        while !self.shared.stop.wait(Duration::from_secs(3600)) {}
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        self.shared.shut_down();
        for handle in self.threads.drain(..) {
            let _ = handle.join();
        }
    }
}

fn poll_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(POLL_INTERVAL);
    }
}

/// A one-way stop flag that sleeping threads can wait on.
#[derive(Default)]
pub(crate) struct StopSignal {
    stopped: Mutex<bool>,
    changed: Condvar,
}

impl StopSignal {
    fn lock(&self) -> MutexGuard<'_, bool> {
        self.stopped
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn is_set(&self) -> bool {
        *self.lock()
    }

    /// Sets the flag; returns false if it was already set.
    fn set(&self) -> bool {
        let mut stopped = self.lock();
        let newly = !*stopped;
        *stopped = true;
        self.changed.notify_all();
        newly
    }

    /// Sleeps for `duration` or until the flag is set. Returns whether it is set.
    pub fn wait(&self, duration: Duration) -> bool {
        let deadline = Instant::now() + duration;
        let mut stopped = self.lock();
        while !*stopped {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                break;
            }
            stopped = self
                .changed
                .wait_timeout(stopped, remaining)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
        *stopped
    }
}

#[derive(Default)]
struct State {
    requests: Vec<RecordedRequest>,
    replies: VecDeque<Reply>,
    request_count: u64,
}

struct Shared {
    address: SocketAddr,
    settings: MockUpstreamBuilder,
    state: Mutex<State>,
    disconnects: AtomicUsize,
    stop: StopSignal,
    /// Clones of open connections, so that stopping can shut them down.
    connections: Mutex<HashMap<u64, TcpStream>>,
    next_connection_id: AtomicU64,
}

impl Shared {
    fn lock_state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn lock_connections(&self) -> MutexGuard<'_, HashMap<u64, TcpStream>> {
        self.connections
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Stops accepting and shuts down every open connection.
    fn shut_down(&self) {
        if !self.stop.set() {
            return;
        }
        // `accept` has no timeout, so a connection of our own wakes it up to
        // see the flag.
        let _ = TcpStream::connect_timeout(&self.address, Duration::from_secs(1));
        for stream in self.lock_connections().values() {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    /// Records a request and takes the next queued reply, under one lock so
    /// that the n-th request always gets the n-th reply. Returns the request's
    /// sequence number, its reply, and whether the request cap is reached.
    fn record(&self, request: &RecordedRequest) -> (u64, Option<Reply>, bool) {
        let mut state = self.lock_state();
        let sequence = state.request_count;
        state.request_count += 1;
        if self.settings.record_requests {
            state.requests.push(request.clone());
        }
        let reply = state.replies.pop_front();
        let cap_reached = state.request_count >= self.settings.max_requests;
        (sequence, reply, cap_reached)
    }
}

fn accept_loop(shared: &Arc<Shared>, listener: TcpListener) {
    for incoming in listener.incoming() {
        if shared.stop.is_set() {
            break;
        }
        let stream = match incoming {
            Ok(stream) => stream,
            Err(err) => {
                eprintln!("mock upstream {}: accept failed: {err}", shared.address);
                // Errors such as EMFILE repeat at once; back off briefly.
                if shared.stop.wait(Duration::from_millis(10)) {
                    break;
                }
                continue;
            }
        };
        let id = shared.next_connection_id.fetch_add(1, Ordering::SeqCst);
        {
            let mut connections = shared.lock_connections();
            if connections.len() >= MAX_CONNECTIONS {
                eprintln!(
                    "mock upstream {}: {MAX_CONNECTIONS} connections open, closing connection {id}",
                    shared.address
                );
                continue;
            }
            match stream.try_clone() {
                Ok(clone) => {
                    connections.insert(id, clone);
                }
                Err(err) => {
                    eprintln!(
                        "mock upstream {}: failed to clone connection {id}: {err}",
                        shared.address
                    );
                    continue;
                }
            }
        }
        let connection_shared = Arc::clone(shared);
        let spawned = thread::Builder::new()
            .name(format!("mock-conn-{id}"))
            .spawn(move || {
                serve_connection(&connection_shared, stream, id);
                connection_shared.lock_connections().remove(&id);
            });
        if let Err(err) = spawned {
            eprintln!(
                "mock upstream {}: failed to start a thread for connection {id}: {err}",
                shared.address
            );
            shared.lock_connections().remove(&id);
        }
    }
}

/// Serves requests on one connection until the peer closes it, a reply
/// closes it, or the mock stops.
fn serve_connection(shared: &Shared, mut stream: TcpStream, connection_id: u64) {
    let reader_stream = match stream.try_clone() {
        Ok(clone) => clone,
        Err(err) => {
            eprintln!(
                "mock upstream {}: failed to clone connection {connection_id}: {err}",
                shared.address
            );
            return;
        }
    };
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let mut reader = WireReader::new(reader_stream);

    while !shared.stop.is_set() {
        // A reply's pause changes the read timeout, so set it for every request.
        let _ = stream.set_read_timeout(Some(IDLE_TIMEOUT));
        let (request, close_requested) = match read_request(&mut reader, &mut stream, connection_id)
        {
            Ok(Some(request)) => request,
            Ok(None) => break,
            Err(err) => {
                reject_request(shared, &mut stream, connection_id, &err);
                break;
            }
        };
        let head_request = request.method == "HEAD";
        let (sequence, scripted, cap_reached) = shared.record(&request);

        let reply = resolve_reply(shared, &request, sequence, scripted);
        let context = WriteContext {
            stop: &shared.stop,
            head_request,
            close_requested,
        };
        let outcome = write_reply(&reply, &mut stream, &context);
        if outcome == Outcome::Abandoned {
            shared.disconnects.fetch_add(1, Ordering::SeqCst);
        }
        if cap_reached {
            eprintln!(
                "mock upstream {}: served {} requests, stopping",
                shared.address, shared.settings.max_requests
            );
            shared.shut_down();
        }
        if outcome != Outcome::Completed {
            break;
        }
    }
    let _ = stream.shutdown(Shutdown::Both);
}

/// Sends a 400 or 413 error for a request that could not be parsed, unless
/// the connection is already gone.
fn reject_request(shared: &Shared, stream: &mut TcpStream, connection_id: u64, err: &io::Error) {
    let quiet = matches!(
        err.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::WouldBlock
            | io::ErrorKind::TimedOut
    );
    if quiet || shared.stop.is_set() {
        return;
    }
    eprintln!(
        "mock upstream {}: invalid request on connection {connection_id}: {err}",
        shared.address
    );
    if err.kind() != io::ErrorKind::InvalidData {
        return;
    }
    let status = if wire::is_body_too_large(err) {
        413
    } else {
        400
    };
    let kind = crate::anthropic::error_kind_for_status(status);
    let reply = Reply::error(status, kind, &err.to_string()).close_connection();
    let context = WriteContext {
        stop: &shared.stop,
        head_request: false,
        close_requested: true,
    };
    write_reply(&reply, stream, &context);
}

/// Reads one request and whether the connection closes after its response.
/// Returns `None` when the peer closed the connection between requests or
/// left it idle past [`IDLE_TIMEOUT`].
fn read_request(
    reader: &mut WireReader<TcpStream>,
    stream: &mut TcpStream,
    connection_id: u64,
) -> io::Result<Option<(RecordedRequest, bool)>> {
    let head = match reader.read_head() {
        Ok(Some(head)) => head,
        Ok(None) => return Ok(None),
        Err(err)
            if matches!(
                err.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            return Ok(None)
        }
        Err(err) => return Err(err),
    };
    let received_at = Instant::now();
    let mut parts = head.start_line.split(' ');
    let (Some(method), Some(path), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(wire::invalid_data(format!(
            "invalid request line {:?}",
            head.start_line
        )));
    };
    if !version.starts_with("HTTP/1.") || method.is_empty() || path.is_empty() {
        return Err(wire::invalid_data(format!(
            "invalid request line {:?}",
            head.start_line
        )));
    }

    let chunked = wire::is_chunked(&head.headers);
    let length = wire::content_length(&head.headers)?;
    if chunked || length.is_some_and(|length| length > 0) {
        let expects_continue = wire::header_value(&head.headers, "expect")
            .is_some_and(|value| value.eq_ignore_ascii_case("100-continue"));
        if expects_continue {
            write_flush(stream, b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
    }
    let body = if chunked {
        reader.read_chunked_body()?
    } else {
        reader.read_exact_body(length.unwrap_or(0))?
    };

    // HTTP/1.0 connections close after each response unless the request
    // has `Connection: keep-alive`.
    let close_requested = if version == "HTTP/1.0" {
        !wire::has_token(&head.headers, "connection", "keep-alive")
    } else {
        wire::has_token(&head.headers, "connection", "close")
    };
    let request = RecordedRequest {
        method: method.to_string(),
        path: path.to_string(),
        headers: head.headers,
        body,
        chunked,
        connection_id,
        received_at,
    };
    Ok(Some((request, close_requested)))
}

/// Turns a scripted reply, or the lack of one, into a reply to write.
fn resolve_reply(
    shared: &Shared,
    request: &RecordedRequest,
    sequence: u64,
    scripted: Option<Reply>,
) -> Reply {
    let scripted = scripted.unwrap_or_else(Reply::default_response);
    let ReplyKind::Default { chunk_delay } = scripted.kind else {
        return scripted;
    };
    let delay = chunk_delay.unwrap_or(shared.settings.stream_chunk_delay);
    let mut resolved = defaults::respond(request, sequence, delay);
    resolved.delay = scripted.delay;
    resolved.headers.extend(scripted.headers);
    resolved.close_connection |= scripted.close_connection;
    resolved
}
