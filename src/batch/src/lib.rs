//! batch sends the orders of a data file to order-processor: a Dapr cron input binding
//! calls `POST /cron` (the component's name) on every tick, `POST /runs` does the same on
//! demand, and each run stores every valid order of the file whatever else is in it. One
//! way through, each stage a module that uses only those before it: the file is opened
//! ([`source`]) and parsed block by block ([`parse`]), every order judged ([`survey`]),
//! the orders to send cut into chunks ([`cut`]), sent ([`send`]) and their answers decided
//! on ([`outcome`]); what became of them is kept for the next run ([`progress`]) and
//! summed up in one line per run ([`summary`]); [`runner`] runs that way one run at a
//! time. The settings are in [`Config`].

pub mod config;
pub mod cut;
mod error;
pub mod outcome;
pub mod parse;
pub mod progress;
pub mod runner;
pub mod send;
pub mod source;
pub mod summary;
pub mod survey;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router, middleware};
use common::dapr::{AppApiToken, Sidecar};
use common::trace_context::caller;
use serde_json::json;

pub use config::{Config, Settings};
pub use error::Error;
use runner::Runner;
use send::{DaprSink, OrderSink};

/// What the request handlers share.
#[derive(Clone)]
pub struct AppState<S> {
    /// Runs the file through the sink.
    pub runner: Runner<S>,
    /// The app's own sidecar, for the readiness check.
    pub sidecar: Sidecar,
    /// What the trigger routes require from the caller (the sidecar).
    pub app_api_token: AppApiToken,
}

/// The service, ready to serve.
pub struct App {
    router: Router,
    runner: Runner<DaprSink>,
}

impl App {
    /// Builds the clients and the routes.
    pub fn build(config: &Config) -> anyhow::Result<Self> {
        let sidecar = config.service.sidecar(config.invoke_timeout)?;
        let sink = DaprSink::new(sidecar.clone(), config.target_app_id.clone());
        let runner = Runner::new(sink, config.source.clone(), config.settings);
        let state = AppState {
            runner: runner.clone(),
            sidecar,
            app_api_token: AppApiToken::new(config.service.app_api_token.clone()),
        };
        let router = router(state, &config.cron_binding);
        Ok(Self { router, runner })
    }

    /// Serves on `listener` until `shutdown` completes. Then the run in progress stops
    /// between chunks (a chunk in flight is abandoned: it is stored whole or not at all,
    /// and the next run sends it again), within [`common::shutdown::GRACE_PERIOD`].
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (runner, grace) = (self.runner.clone(), common::shutdown::GRACE_PERIOD);
        let shutdown = async move {
            shutdown.await;
            runner.cancel();
        };
        common::shutdown::serve(listener, self.router, shutdown, grace).await?;
        let idle = tokio::time::timeout(grace, self.runner.idle()).await;
        if idle.is_err() {
            tracing::warn!("the run in progress was abandoned");
        }
        tracing::info!("batch stopped");
        Ok(())
    }
}

/// The routes: the cron binding's and the manual trigger (with the sidecar's token only,
/// when there is one) and the health checks.
pub fn router<S: OrderSink>(state: AppState<S>, cron_binding: &str) -> Router {
    let guard = middleware::from_fn_with_state(state.app_api_token.clone(), AppApiToken::check);
    let routes = Router::new()
        .route(&format!("/{cron_binding}"), post(trigger::<S, true>))
        .route("/runs", post(trigger::<S, false>))
        .route_layer(guard)
        .route(
            "/healthz",
            get(|| async { Json(json!({ "status": "alive" })) }),
        )
        .route("/readyz", get(readyz::<S>));
    common::trace_context::traced(routes).with_state(state)
}

/// A run: its summary; 500 when it ended abnormally. A tick of the cron binding (`CRON`)
/// that comes during a run is answered 200 and skipped (any other answer is an error to
/// daprd), a run on demand 409.
async fn trigger<S: OrderSink, const CRON: bool>(
    State(state): State<AppState<S>>,
    headers: HeaderMap,
) -> Response {
    let (trigger, tick) = (if CRON { "cron" } else { "manual" }, caller(&headers));
    match state.runner.run(trigger, tick).await {
        Ok(summary) => Json(summary).into_response(),
        Err(Error::RunInProgress) if CRON => {
            Json(json!({ "skipped": "a run is in progress" })).into_response()
        }
        Err(error) => error.into_response(),
    }
}

async fn readyz<S: OrderSink>(State(state): State<AppState<S>>) -> impl IntoResponse {
    if let Err(error) = state.sidecar.outbound_health().await {
        tracing::warn!(%error, "not ready: sidecar");
        let unavailable = Json(json!({ "sidecar": "unavailable" }));
        return (StatusCode::SERVICE_UNAVAILABLE, unavailable);
    }
    (StatusCode::OK, Json(json!({ "sidecar": "ok" })))
}

/// Runs blocking work (reading and judging the file, cutting chunks) on a blocking thread.
/// A panic there is resumed here; [`Error::Stopped`] when the runtime is shutting down.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Error> {
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => Ok(value),
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        Err(_) => Err(Error::Stopped),
    }
}
