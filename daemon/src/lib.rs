//! `ccod`: a local, long-running proxy for the Anthropic API, the OpenAI API and
//! OpenAI-compatible providers that caches repeated requests and prices every response from
//! its token usage.
//!
//! [`start`] opens the data directory, starts the actors, binds the HTTP listener and the
//! control socket, and returns a [`Daemon`]; [`Daemon::wait`] serves until SIGINT, SIGTERM,
//! `ccoctl shutdown` or an update that restarts, then flushes everything to sled. The `ccod`
//! binary is a thin wrapper around [`run`], and tests boot the daemon in-process the same
//! way.

pub mod analytics;
pub mod budgets;
pub mod cache;
pub mod config;
pub mod control;
mod fsutil;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod pricing;
pub mod proxy;
mod service_notify;
pub mod sse;
pub mod tls;
pub mod updater;
pub mod usage;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::{Actor, Addr, Arbiter};
use actix_web::{web, App, HttpServer};
use anyhow::Context as _;
use tracing::{error, info, warn};

use analytics::AnalyticsActor;
use budgets::Budgets;
use cache::{CacheActor, CacheConfig};
use config::Config;
use proxy::ProxyState;
use updater::{Restart, RestartSlot, UpdaterActor};

/// Time in-flight requests get to finish after a stop signal.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// A running daemon.
pub struct Daemon {
    /// Address the HTTP proxy listens on.
    pub http_addr: SocketAddr,
    pub socket_path: PathBuf,
    server: actix_web::dev::Server,
    analytics: Addr<AnalyticsActor>,
    cache: Option<Addr<CacheActor>>,
    db: sled::Db,
    control: actix_rt::task::JoinHandle<()>,
    signals: actix_rt::task::JoinHandle<()>,
    arbiters: Vec<Arbiter>,
    restart: RestartSlot,
}

/// Reason the daemon stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stopped {
    /// On a signal or `ccoctl shutdown`.
    Normally,
    /// After an update or rollback that asked for a restart, which the caller carries out
    /// with [`Restart::execute`].
    ForRestart(Restart),
}

/// Checks what `--test-config` can check beyond the values themselves without starting
/// anything: the TLS files load, the data directory is not a file, and the listen address
/// resolves.
pub fn check_startable(config: &Config) -> anyhow::Result<()> {
    if let Some((cert, key)) = &config.tls {
        tls::server_config(cert, key)?;
    }
    if config.data_dir.exists() && !config.data_dir.is_dir() {
        anyhow::bail!(
            "the data directory {} is not a directory; pass another --data-dir",
            config.data_dir.display()
        );
    }
    let address = (config.host.as_str(), config.port);
    std::net::ToSocketAddrs::to_socket_addrs(&address).with_context(|| {
        format!(
            "cannot resolve the listen address {}:{}; pass an IP address with --host",
            config.host, config.port
        )
    })?;
    Ok(())
}

/// Runs the daemon until a signal or `ccoctl shutdown` stops it.
pub async fn run(config: Config) -> anyhow::Result<Stopped> {
    start(config).await?.wait().await
}

/// Starts every part of the daemon and returns once the listeners are bound.
pub async fn start(config: Config) -> anyhow::Result<Daemon> {
    let started = Instant::now();
    let config = Arc::new(config);
    if let Some(file) = &config.config_file {
        fsutil::report_open_file(file);
    }
    for (key, url) in [
        ("anthropic_base_url", &config.anthropic_base_url),
        ("openai_base_url", &config.openai_base_url),
    ] {
        if url.ends_with("/v1") {
            // Clients send paths that already start with /v1.
            warn!(key, url = %url, "the base URL ends with /v1, so requests go to /v1/v1/...; \
                drop the /v1");
        }
    }
    fsutil::create_private_dir(&config.data_dir).with_context(|| {
        format!(
            "cannot create the data directory {}",
            config.data_dir.display()
        )
    })?;
    let db_path = config.data_dir.join("db");
    let db = sled::Config::new()
        .path(&db_path)
        .cache_capacity(config.db_cache_bytes())
        .flush_every_ms(Some(500))
        .open()
        .with_context(|| {
            format!(
                "cannot open the database {}: is another ccod using this data directory? \
                 pass another --data-dir",
                db_path.display()
            )
        })?;

    let mut arbiters = Vec::new();
    let analytics_actor = if config.analytics_enabled {
        AnalyticsActor::new(&db, config.analytics_flush_interval)
            .context("cannot read the analytics store")?
    } else {
        // The trees are not opened, so records of earlier runs stay as they are.
        info!(
            actor = "analytics",
            "analytics are off: requests are counted for /metrics and not recorded"
        );
        AnalyticsActor::metrics_only()
    };
    let budgets = load_budgets(&config, &analytics_actor)?;
    let analytics_queue = analytics_actor.queue();
    let arbiter = Arbiter::new();
    let analytics = AnalyticsActor::start_in_arbiter(&arbiter.handle(), move |_| analytics_actor);
    let recorder = analytics::Recorder::new(analytics_queue, analytics.clone());
    arbiters.push(arbiter);

    let mut cache_view = None;
    let cache = if config.cache_enabled {
        let tree = db
            .open_tree("cache")
            .context("cannot open the cache tree")?;
        let cache_config = CacheConfig {
            capacity_bytes: config.cache_capacity_bytes(),
            max_entries: config.cache_max_entries,
            ttl: config.cache_ttl,
            hot_capacity_bytes: cache::HOT_CAPACITY_BYTES,
        };
        let actor = CacheActor::new(tree, cache_config).context("cannot load the cache")?;
        cache_view = Some(actor.view());
        let arbiter = Arbiter::new();
        let addr = CacheActor::start_in_arbiter(&arbiter.handle(), move |_| actor);
        arbiters.push(arbiter);
        Some(addr)
    } else {
        None
    };

    let prices = Arc::new(config.effective_prices());
    let router = proxy::upstream::Router::from_config(&config);
    for upstream in router.upstreams() {
        if let (Some(variable), None) = (&upstream.api_key_env, &upstream.api_key) {
            if config
                .providers
                .iter()
                .any(|provider| provider.name == upstream.name)
            {
                warn!(actor = "proxy", provider = %upstream.name, variable = %variable,
                    "the api_key_env variable of this provider is not set; clients must send their own key");
            }
        }
    }
    let state = web::Data::new(ProxyState {
        cache: cache.clone(),
        cache_view,
        analytics: analytics.clone(),
        recorder,
        prices: prices.clone(),
        router,
        max_body_bytes: config.max_body_bytes,
        client_timeout: config.client_timeout,
        access_token_hashes: config.access_token_hashes.clone(),
        rate_limits: config.rate_limit.map(limits::RateLimits::new),
        budgets: budgets.clone(),
        in_flight: Arc::new(metrics::Gauge::default()),
        open_streams: Arc::new(metrics::Gauge::default()),
        open_connections: Arc::new(metrics::Gauge::default()),
    });
    if state.rate_limits.is_some() {
        let state = state.clone();
        actix_rt::spawn(async move {
            let mut interval = actix_rt::time::interval(Duration::from_secs(60));
            loop {
                interval.tick().await;
                if let Some(limits) = &state.rate_limits {
                    limits.forget_idle();
                }
            }
        });
    }
    let (server, http_addr) = bind_http(&config, state)?;

    let restart: RestartSlot = Arc::new(Mutex::new(None));
    // awc futures are not Send, so the updater runs on this (the system) arbiter.
    let updater = UpdaterActor::new(config.updates.clone(), server.handle(), restart.clone());
    let update_progress = updater.progress();
    let updater = updater.start();

    let socket = control::bind(&config.socket_path)?;
    let context = Arc::new(control::ControlContext {
        analytics: analytics.clone(),
        cache: cache.clone(),
        updater,
        update_progress,
        config: config.clone(),
        budgets,
        prices,
        started,
        listen_addr: http_addr.to_string(),
        server: server.handle(),
    });
    let control = actix_rt::spawn(control::serve(socket, context));
    let signals = actix_rt::spawn(stop_on_signal(server.handle()));

    info!(actor = "proxy", addr = %http_addr, tls = config.tls.is_some(),
        upstream = %config.anthropic_base_url, openai_upstream = %config.openai_base_url,
        providers = config.providers.len(), cache = config.cache_enabled,
        analytics = config.analytics_enabled, "listening");
    service_notify::ready();
    Ok(Daemon {
        http_addr,
        socket_path: config.socket_path.clone(),
        server,
        analytics,
        cache,
        db,
        control,
        signals,
        arbiters,
        restart,
    })
}

/// Builds the budgets of `[budgets]` with the cost already recorded in the current UTC
/// month. Returns `None` when no budget is configured.
fn load_budgets(
    config: &Config,
    analytics: &AnalyticsActor,
) -> anyhow::Result<Option<Arc<Budgets>>> {
    let Some(budget_config) = &config.budgets else {
        return Ok(None);
    };
    let now = budgets::now_unix_ms();
    let history = analytics
        .spend_since(Budgets::history_start_day(now))
        .context("cannot read this month's recorded cost for [budgets]")?;
    let budgets = Budgets::new(budget_config, now, &history);
    for status in budgets.status(now) {
        info!(actor = "budgets", credential = status.credential.as_deref().unwrap_or("all clients"),
            period = status.period.as_str(), limit_usd = %budgets::format_usd(status.limit_nano_usd),
            spent_usd = %budgets::format_usd(status.spent_nano_usd), "loaded budget");
    }
    Ok(Some(Arc::new(budgets)))
}

/// Stops the HTTP server gracefully on the first SIGINT or SIGTERM.
///
/// The signal handling of actix-server 2.10 stops the actix `System` 300 ms after the
/// server, and with it the actors' arbiters, so [`Daemon::wait`] could no longer flush
/// them. It also stops at once on SIGINT. The server is therefore built with
/// `disable_signals` and this task takes over.
async fn stop_on_signal(server: actix_web::dev::ServerHandle) {
    let signal = wait_for_signal().await;
    info!(
        actor = "proxy",
        signal,
        timeout_secs = SHUTDOWN_TIMEOUT.as_secs(),
        "received stop signal; finishing in-flight requests"
    );
    server.stop(true).await;
}

/// Waits for SIGINT or, on Unix, SIGTERM and returns its name.
async fn wait_for_signal() -> &'static str {
    let interrupt = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            warn!(error = %err, "cannot listen for SIGINT; stop ccod with 'ccoctl shutdown'");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => tokio::select! {
                _ = terminate.recv() => "SIGTERM",
                () = interrupt => "SIGINT",
            },
            Err(err) => {
                warn!(error = %err, "cannot listen for SIGTERM; stop ccod with 'ccoctl shutdown'");
                interrupt.await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        interrupt.await;
        "SIGINT"
    }
}

/// Opens upstream TCP connections with Nagle's algorithm off. awc writes a request's head
/// and body separately, and with Nagle's algorithm the body of a large request waits for
/// the upstream's delayed ACK of the head.
fn upstream_tcp_connector() -> impl actix_service::Service<
    actix_tls::connect::ConnectInfo<awc::http::Uri>,
    Response = actix_tls::connect::Connection<awc::http::Uri, actix_rt::net::TcpStream>,
    Error = actix_tls::connect::ConnectError,
> + Clone {
    use actix_service::ServiceExt as _;
    let tcp = actix_tls::connect::Connector::new(actix_tls::connect::Resolver::default()).service();
    tcp.map(
        |connection: actix_tls::connect::Connection<awc::http::Uri, actix_rt::net::TcpStream>| {
            if let Err(error) = connection.io_ref().set_nodelay(true) {
                tracing::debug!(actor = "proxy", %error, "cannot turn Nagle's algorithm off on an upstream connection");
            }
            connection
        },
    )
}

fn bind_http(
    config: &Config,
    state: web::Data<ProxyState>,
) -> anyhow::Result<(actix_web::dev::Server, SocketAddr)> {
    let tls = Arc::new(proxy::upstream_tls_config());
    let connect_timeout = config.connect_timeout;
    let upstream_timeout = config.upstream_timeout;
    let workers = std::thread::available_parallelism().map_or(2, |count| count.get());
    let upstream_connections = config.max_connections;
    let listener_tls = match &config.tls {
        Some((cert, key)) => Some(tls::server_config(cert, key)?),
        None => None,
    };
    let open_connections = state.open_connections.clone();
    let server = HttpServer::new(move || {
        let connector = awc::Connector::new()
            .connector(upstream_tcp_connector())
            .rustls_0_23(tls.clone())
            .timeout(connect_timeout)
            .limit(upstream_connections);
        let client = awc::Client::builder()
            .connector(connector)
            .timeout(upstream_timeout)
            .disable_redirects()
            .no_default_headers()
            .finish();
        App::new()
            .app_data(state.clone())
            .app_data(web::Data::new(client))
            .route("/metrics", web::get().to(proxy::metrics))
            .default_service(web::to(proxy::handle))
    })
    // The guard lives in the connection's extensions, which actix-http drops when the
    // connection closes. Over TLS this runs after the handshake, so connections still in
    // their handshake are not counted.
    .on_connect(move |_, extensions| {
        extensions.insert(open_connections.enter());
    })
    // Responses are written as head and body; with Nagle's algorithm the body could wait
    // for the client's delayed ACK of the head.
    .tcp_nodelay(true)
    .workers(workers)
    // actix-web counts connections per worker thread.
    .max_connections(config.max_connections.div_ceil(workers))
    .shutdown_timeout(SHUTDOWN_TIMEOUT.as_secs())
    .disable_signals()
    .client_request_timeout(config.client_timeout)
    .client_disconnect_timeout(Duration::from_secs(1))
    // actix-http 3.11.2 and later keep serving a request after the client's EOF by default,
    // so a client that left before the upstream response head arrived kept the upstream
    // request running until its response. Without half-closed connections, an EOF from the
    // client drops the handler and with it the upstream request. A client that shuts down
    // its sending side while waiting for the response loses that response.
    .h1_allow_half_closed(false);
    let address = (config.host.as_str(), config.port);
    let bound = match listener_tls {
        Some(tls) => server.bind_rustls_0_23(address, tls),
        None => server.bind(address),
    };
    let server = bound.with_context(|| {
        format!(
            "cannot listen on {}:{}: pass a free --port or another --host",
            config.host, config.port
        )
    })?;
    let http_addr = *server
        .addrs()
        .first()
        .context("the HTTP server bound no address")?;
    if !http_addr.ip().is_loopback()
        && config.access_token_hashes.is_empty()
        && (config.anthropic_api_key.is_some() || config.openai_api_key.is_some())
    {
        warn!(actor = "proxy", addr = %http_addr,
            "listening on a non-loopback address with an API key from the environment and \
             no [proxy] access_tokens: any client that can connect spends on that key; \
             set access_tokens or bind 127.0.0.1");
    }
    if !http_addr.ip().is_loopback() && config.tls.is_none() {
        warn!(actor = "proxy", addr = %http_addr,
            "listening on a non-loopback address without TLS; pass --tls-cert and --tls-key \
             to serve HTTPS, or bind 127.0.0.1");
    }
    Ok((server.run(), http_addr))
}

impl Daemon {
    /// Returns a handle that stops the HTTP server, as a signal or `ccoctl shutdown` does.
    pub fn server_handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    /// Serves until the HTTP server stops, then writes every buffered record and cache
    /// entry to disk and removes the control socket.
    pub async fn wait(self) -> anyhow::Result<Stopped> {
        let served = self.server.await;
        service_notify::stopping();
        info!(actor = "proxy", "stopped accepting requests; flushing");
        self.control.abort();
        let _ = self.control.await;
        self.signals.abort();

        let mut failed = false;
        match self.analytics.send(analytics::Flush).await {
            Ok(Ok(written)) => info!(actor = "analytics", written, "flushed analytics"),
            Ok(Err(err)) => {
                error!(actor = "analytics", error = %err, "cannot flush analytics");
                failed = true;
            }
            Err(err) => {
                error!(actor = "analytics", error = %err, "analytics actor is gone");
                failed = true;
            }
        }
        if let Some(cache) = &self.cache {
            if let Ok(Err(err)) = cache.send(cache::Flush).await {
                error!(actor = "cache", error = %err, "cannot flush the cache");
                failed = true;
            }
        }
        self.db
            .flush_async()
            .await
            .context("cannot flush the database")?;
        for arbiter in self.arbiters {
            arbiter.stop();
            let _ = arbiter.join();
        }
        served.context("the HTTP server failed")?;
        if failed {
            anyhow::bail!("some data could not be written at shutdown; see the log above");
        }
        let restart = self.restart.lock().ok().and_then(|mut slot| slot.take());
        info!(restart = ?restart, "ccod stopped");
        Ok(restart.map_or(Stopped::Normally, Stopped::ForRestart))
    }
}
