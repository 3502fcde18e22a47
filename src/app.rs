//! Wiring: config → store, handlers, dispatcher, router → a running service.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, SignatureMode, StoreKind};
use crate::dispatch::{Dispatcher, Route};
use crate::server::{AppState, listen, router};
use crate::signature::{SigningKey, Verifier};
use crate::store::postgres::PostgresStore;
use crate::store::sqlite::SqliteStore;
use crate::store::{Mode, Store, StoreError};

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The store could not be opened.
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
    /// A handler could not be built.
    #[error(transparent)]
    Handler(#[from] crate::handlers::BuildError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Opens the configured store: for the server ([`Mode::Server`]) or for a CLI command
/// beside running servers ([`Mode::Tool`]).
pub async fn open_store(config: &Config, mode: Mode) -> Result<Arc<dyn Store>, StoreError> {
    let store = &config.store;
    match store.kind {
        StoreKind::Sqlite => Ok(Arc::new(SqliteStore::open(&store.path, mode)?)),
        StoreKind::Postgres => {
            // Config validation guarantees a URL; this is only reached without it when a
            // caller built a `Config` by hand.
            let url = store.url.as_deref().ok_or_else(|| {
                StoreError::Unavailable(Box::new(std::io::Error::other("store.url is required for postgres")))
            })?;
            Ok(Arc::new(PostgresStore::open(url, store.pool_size, store.ca_file.as_deref(), mode).await?))
        }
    }
}

/// A built, bound service, ready to run.
pub struct Application {
    listener: TcpListener,
    state: Arc<AppState>,
    dispatcher: Dispatcher,
    config: Config,
}

impl Application {
    /// Opens the store, builds every handler and binds the listener. Everything that can
    /// fail on a bad config fails here, before the port accepts a request.
    pub async fn build(config: Config) -> Result<Self, StartError> {
        let store = open_store(&config, Mode::Server).await?;
        Self::build_with_store(config, store).await
    }

    /// [`Application::build`] over a store the caller opened (tests use this to put a
    /// failing store behind the real router).
    pub async fn build_with_store(config: Config, store: Arc<dyn Store>) -> Result<Self, StartError> {
        let mut routes = Vec::new();
        let context = crate::handlers::BuildContext { signalwire: &config.signalwire };
        for (name, handler) in &config.handlers {
            routes.push(Route {
                name: name.clone(),
                handler: handler.build_with(name, &context)?,
                options: handler.effective_options(),
            });
        }
        let dispatcher = Dispatcher::new(store.clone(), routes, config.dispatch.clone());
        let verifier = match config.signature.mode {
            SignatureMode::Required => {
                Some(Verifier::new(config.signature.signing_keys.iter().map(|k| SigningKey::new(k.clone())).collect()))
            }
            SignatureMode::Disabled => {
                tracing::warn!("signature.mode = \"disabled\": callbacks are NOT authenticated");
                None
            }
        };
        let state = Arc::new(AppState {
            store,
            verifier,
            public_url: config.server.public_url.as_ref().map(|u| u.trim_end_matches('/').to_owned()),
            trust_forwarded_headers: config.server.trust_forwarded_headers,
            max_body_bytes: config.server.max_body_bytes,
            routes: config.handlers.iter().map(|(n, h)| (n.clone(), h.filter())).collect(),
            handoff: dispatcher.handoff(),
            draining: CancellationToken::new(),
        });
        let addr = config.server.listen;
        let listener = TcpListener::bind(addr).await.map_err(|source| StartError::Bind { addr, source })?;
        crate::metrics::handle();
        Ok(Self { listener, state, dispatcher, config })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// Serves until `shutdown` resolves, then drains: readiness turns 503, in-flight
    /// requests finish, running deliveries get `shutdown_grace`, unfinished ones are
    /// handed back to the store.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) {
        let addr = self.local_addr();
        // Background tasks beside the dispatcher; stopped when this returns.
        let background = CancellationToken::new();
        let _background = background.clone().drop_guard();
        let server = &self.config.server;
        tracing::info!(%addr, path = %server.path, handlers = self.config.handlers.len(), "recordhook listening");
        let dispatching = self.dispatcher.start();
        // Work queued by other replicas (shared store only): wake the worker at once
        // rather than at its next poll.
        if let Some(mut wake_ups) = self.state.store.wake_ups() {
            let handoff = self.state.handoff.clone();
            let stop = background.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        name = wake_ups.recv() => match name {
                            Ok(name) => handoff.wake([&name]),
                            // Missed some: the poll catches up.
                            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                            Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                        },
                    }
                }
            });
        }
        tokio::spawn(crate::metrics::upkeep(crate::metrics::UPKEEP_INTERVAL, background.clone()));
        if let Some(retention) = self.config.store.retention {
            tokio::spawn(crate::store::retention::run(self.state.store.clone(), retention, background.clone()));
        }
        let router = router(self.state.clone(), &server.path, server.request_timeout);
        let stop = CancellationToken::new();
        let serving = tokio::spawn(listen::serve(self.listener, router, server.request_timeout, stop.clone()));
        shutdown.await;
        tracing::info!("shutting down: draining requests");
        self.state.draining.cancel();
        stop.cancel();
        let _ = serving.await;
        tracing::info!(grace = ?server.shutdown_grace, "requests drained; finishing deliveries");
        dispatching.shutdown(server.shutdown_grace).await;
        tracing::info!("stopped");
    }
}
