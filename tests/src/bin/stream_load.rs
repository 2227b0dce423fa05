//! `cco-stream-load`: opens many concurrent streaming `POST /v1/messages` requests against a
//! proxy on loopback and reports time to first byte, the delay between events, and the
//! proxy's memory while every stream is open. Used by `bench/streams.sh`.

use std::net::SocketAddr;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Address of the proxy, a loopback address only
    #[arg(long)]
    addr: SocketAddr,
    /// Number of streams open at once
    #[arg(long, default_value_t = 100)]
    streams: usize,
    /// Process id of the proxy, whose resident memory is read from /proc while all streams
    /// are open
    #[arg(long)]
    pid: Option<u32>,
}

/// What one stream saw, in microseconds.
struct StreamTimes {
    first_byte: u64,
    gaps: Vec<u64>,
}

fn resident_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn percentile(sorted: &[u64], share: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * share).round() as usize;
    sorted[index] as f64 / 1000.0
}

fn run_stream(addr: SocketAddr, index: usize, all_open: &Barrier) -> Result<StreamTimes, String> {
    let body = format!(
        "{{\"model\":\"claude-haiku-4-5\",\"max_tokens\":64,\"stream\":true,\
         \"messages\":[{{\"role\":\"user\",\"content\":\"stream {index} one two three four five six\"}}]}}"
    );
    let started = Instant::now();
    let headers = [
        ("x-api-key", "sk-ant-stream-load"),
        ("cache-control", "no-store"),
    ];
    let mut stream = cco_tests::http::open_stream_with_timeout(
        addr,
        "POST",
        "/v1/messages",
        &headers,
        body.as_bytes(),
        Duration::from_secs(60),
    )
    .map_err(|err| format!("stream {index}: {err}"))?;
    let mut last = None;
    let mut first_byte = 0;
    let mut gaps = Vec::new();
    let mut waited = false;
    while let Some((at, _chunk)) = stream
        .next_chunk(Duration::from_secs(60))
        .map_err(|err| format!("stream {index}: {err}"))?
    {
        match last {
            None => first_byte = at.duration_since(started).as_micros() as u64,
            Some(previous) => gaps.push(at.duration_since(previous).as_micros() as u64),
        }
        last = Some(at);
        if !waited {
            // Every stream waits here after its first event, so all are open at once.
            all_open.wait();
            waited = true;
            last = Some(Instant::now());
        }
    }
    if !waited {
        all_open.wait();
    }
    Ok(StreamTimes { first_byte, gaps })
}

fn main() {
    let args = Args::parse();
    if !args.addr.ip().is_loopback() {
        eprintln!(
            "cco-stream-load: {} is not a loopback address; pass 127.0.0.1:PORT",
            args.addr
        );
        std::process::exit(2);
    }
    let all_open = Arc::new(Barrier::new(args.streams + 1));
    let handles: Vec<_> = (0..args.streams)
        .map(|index| {
            let all_open = all_open.clone();
            std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || run_stream(args.addr, index, &all_open))
                .expect("thread")
        })
        .collect();
    all_open.wait();
    let open_rss = args.pid.and_then(|pid| resident_kib(pid, "VmRSS:"));

    let mut first_bytes = Vec::new();
    let mut gaps = Vec::new();
    let mut failed = 0;
    for handle in handles {
        match handle.join().expect("stream thread") {
            Ok(times) => {
                first_bytes.push(times.first_byte);
                gaps.extend(times.gaps);
            }
            Err(err) => {
                eprintln!("{err}");
                failed += 1;
            }
        }
    }
    first_bytes.sort_unstable();
    gaps.sort_unstable();
    println!("streams: {} ({} failed)", args.streams, failed);
    println!(
        "time to first byte ms: p50 {:.3} p99 {:.3} max {:.3}",
        percentile(&first_bytes, 0.5),
        percentile(&first_bytes, 0.99),
        percentile(&first_bytes, 1.0)
    );
    println!(
        "delay between events ms: p50 {:.3} p99 {:.3} max {:.3}",
        percentile(&gaps, 0.5),
        percentile(&gaps, 0.99),
        percentile(&gaps, 1.0)
    );
    if let Some(kib) = open_rss {
        println!(
            "proxy RSS with all streams open: {:.1} MiB",
            kib as f64 / 1024.0
        );
    }
    if failed > 0 {
        std::process::exit(1);
    }
}
