//! A release server for the updater tests: serves a GitHub-style releases feed and release
//! files on 127.0.0.1, with faults on request (a cut body, a stalled body, redirects).
//!
//! Each connection carries one request and is served on its own thread, so a stalled
//! download does not hold up the others. The server stops when dropped, after
//! [`MAX_LIFETIME`], or after [`MAX_CONNECTIONS`] connections, whichever comes first.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Maximum lifetime of a server.
pub const MAX_LIFETIME: Duration = Duration::from_secs(180);

/// Connections a server accepts before it stops.
pub const MAX_CONNECTIONS: usize = 500;

/// Maximum time a [`Route::Stall`] keeps its connection open.
pub const MAX_STALL: Duration = Duration::from_secs(30);

/// Largest request head read.
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// What the server sends for one path.
#[derive(Clone, Debug)]
pub enum Route {
    /// A complete response.
    Body {
        status: u16,
        content_type: String,
        body: Vec<u8>,
    },
    /// Announces `body.len()` in `Content-Length` but closes after `sent` bytes.
    Cut { body: Vec<u8>, sent: usize },
    /// Sends `sent` bytes of `body`, then keeps the connection open for `hold` (at most
    /// [`MAX_STALL`]) before closing it.
    Stall {
        body: Vec<u8>,
        sent: usize,
        hold: Duration,
    },
    /// A `302 Found` to `location`.
    Redirect { location: String },
}

impl Route {
    /// Builds a 200 response with `body`.
    pub fn ok(content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        Route::Body {
            status: 200,
            content_type: content_type.to_owned(),
            body: body.into(),
        }
    }
}

/// A request as the server received it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    /// Header names in lowercase, with their values.
    pub headers: Vec<(String, String)>,
}

impl RecordedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

type Routes = Arc<Mutex<HashMap<String, Route>>>;

/// A running release server.
pub struct ReleaseServer {
    addr: SocketAddr,
    routes: Routes,
    requests: Arc<Mutex<Vec<RecordedRequest>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ReleaseServer {
    /// Starts a server on a free port of 127.0.0.1.
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = listener.local_addr().expect("local address");
        let routes: Routes = Arc::default();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (routes, requests, stop) = (routes.clone(), requests.clone(), stop.clone());
            std::thread::spawn(move || accept_loop(&listener, &routes, &requests, &stop))
        };
        Self {
            addr,
            routes,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Serves `route` at `path`, replacing what was there.
    pub fn set(&self, path: &str, route: Route) {
        self.routes.lock().unwrap().insert(path.to_owned(), route);
    }

    /// Stops serving `path`, which returns 404 from now on.
    pub fn remove(&self, path: &str) {
        self.routes.lock().unwrap().remove(path);
    }

    /// Returns the requests received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for ReleaseServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn accept_loop(
    listener: &TcpListener,
    routes: &Routes,
    requests: &Arc<Mutex<Vec<RecordedRequest>>>,
    stop: &Arc<AtomicBool>,
) {
    let started = Instant::now();
    let mut accepted = 0;
    while !stop.load(Ordering::SeqCst)
        && started.elapsed() < MAX_LIFETIME
        && accepted < MAX_CONNECTIONS
    {
        match listener.accept() {
            Ok((stream, _)) => {
                accepted += 1;
                let (routes, requests, stop) = (routes.clone(), requests.clone(), stop.clone());
                std::thread::spawn(move || {
                    let _ = serve(stream, &routes, &requests, &stop);
                });
            }
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

fn serve(
    mut stream: TcpStream,
    routes: &Routes,
    requests: &Arc<Mutex<Vec<RecordedRequest>>>,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    let Some(request) = read_head(&mut stream)? else {
        return Ok(());
    };
    let route = routes.lock().unwrap().get(&request.path).cloned();
    requests.lock().unwrap().push(request);
    match route {
        None => write_response(&mut stream, 404, "text/plain", b"not found\n"),
        Some(Route::Body {
            status,
            content_type,
            body,
        }) => write_response(&mut stream, status, &content_type, &body),
        Some(Route::Redirect { location }) => {
            let head = format!(
                "HTTP/1.1 302 Found\r\nlocation: {location}\r\ncontent-length: 0\r\n\
                 connection: close\r\n\r\n"
            );
            stream.write_all(head.as_bytes())
        }
        Some(Route::Cut { body, sent }) => {
            write_head(&mut stream, 200, "application/octet-stream", body.len())?;
            stream.write_all(&body[..sent.min(body.len())])?;
            stream.flush()?;
            stream.shutdown(std::net::Shutdown::Both)
        }
        Some(Route::Stall { body, sent, hold }) => {
            write_head(&mut stream, 200, "application/octet-stream", body.len())?;
            stream.write_all(&body[..sent.min(body.len())])?;
            stream.flush()?;
            let until = Instant::now() + hold.min(MAX_STALL);
            while Instant::now() < until && !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(50));
            }
            Ok(())
        }
    }
}

fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<RecordedRequest>> {
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|window| window == b"\r\n\r\n") {
        if head.len() > MAX_HEAD_BYTES {
            return Ok(None);
        }
        let read = stream.read(&mut chunk)?;
        if read == 0 {
            return Ok(None);
        }
        head.extend_from_slice(&chunk[..read]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let mut request_line = lines.next().unwrap_or("").split(' ');
    let method = request_line.next().unwrap_or("").to_owned();
    let path = request_line.next().unwrap_or("").to_owned();
    let headers = lines
        .take_while(|line| !line.is_empty())
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    Ok(Some(RecordedRequest {
        method,
        path,
        headers,
    }))
}

fn write_head(
    stream: &mut TcpStream,
    status: u16,
    content_type: &str,
    length: usize,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        _ => "Status",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\n\
         content-length: {length}\r\nconnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes())
}

fn write_response(
    stream: &mut TcpStream,
    status: u16,
    content_type: &str,
    body: &[u8],
) -> std::io::Result<()> {
    write_head(stream, status, content_type, body.len())?;
    stream.write_all(body)?;
    stream.flush()
}
