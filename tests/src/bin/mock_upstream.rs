//! `cco-mock-upstream`: the mock Anthropic upstream as a process, for
//! benchmarks. It serves the default responses of `cco_tests::MockUpstream`
//! and exits by itself after a number of requests or seconds.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use cco_tests::MockUpstream;
use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "cco-mock-upstream",
    version,
    about = "Serve a mock Anthropic Messages API and OpenAI chat completions API on a loopback address"
)]
struct Args {
    /// TCP port to listen on; 0 picks a free port.
    #[arg(long)]
    port: u16,

    /// IP address to listen on; only loopback addresses are accepted.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,

    /// Number of requests after which the server exits.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    max_requests: u64,

    /// Seconds after which the server exits.
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    max_seconds: u64,

    /// Pause in milliseconds between the events of a streaming reply.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    stream_chunk_delay_ms: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if !args.host.is_loopback() {
        eprintln!(
            "error: invalid --host {}: the mock upstream listens only on a loopback address such as 127.0.0.1",
            args.host
        );
        return ExitCode::from(2);
    }

    let started = MockUpstream::builder()
        .address(SocketAddr::new(args.host, args.port))
        .max_requests(args.max_requests)
        .max_lifetime(Duration::from_secs(args.max_seconds))
        .stream_chunk_delay(Duration::from_millis(args.stream_chunk_delay_ms))
        .record_requests(false)
        .start();
    let mock = match started {
        Ok(mock) => mock,
        Err(err) => {
            eprintln!(
                "error: failed to listen on {}:{}: {err}",
                args.host, args.port
            );
            return ExitCode::FAILURE;
        }
    };

    // Benchmark scripts wait for this line to learn the port.
    println!("listening on {}", mock.addr());
    let _ = std::io::stdout().flush();

    mock.wait_until_stopped();
    eprintln!(
        "cco-mock-upstream: stopped after {} requests",
        mock.request_count()
    );
    ExitCode::SUCCESS
}
