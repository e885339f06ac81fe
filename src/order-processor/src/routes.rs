//! The HTTP routes: writes through the binding, reads with sqlx, and the health checks.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::middleware;
use axum::routing::{get, post};
use axum::{Json, Router};
use common::dapr::AppApiToken;
use common::order::{Order, WriteOutcome};
use serde::Serialize;
use tracing::Instrument;
use tracing::field::Empty;

use crate::binding::{OrderWriter, Params};
use crate::{ApiError, AppState, MAX_BODY_BYTES, body, db};

/// The most orders `GET /orders` returns at once.
const MAX_PAGE: i64 = 1000;
/// Orders per page unless the caller says otherwise.
const DEFAULT_PAGE: i64 = 100;

/// The routes, with the body limit and request tracing. The API routes take calls with the
/// sidecar's token only, when there is one; the health checks take any.
pub fn router<W: OrderWriter>(state: AppState<W>) -> Router {
    let api = Router::new()
        .route("/orders", post(create_orders::<W>).get(list_orders::<W>))
        .route("/orders/{id}", get(get_order::<W>))
        .route_layer(middleware::from_fn_with_state(
            state.app_api_token.clone(),
            AppApiToken::check,
        ));
    let routes = api
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz::<W>))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES));
    common::trace_context::traced(routes).with_state(state)
}

async fn create_orders<W: OrderWriter>(
    State(state): State<AppState<W>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<WriteOutcome>, ApiError> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::BodyTooLarge {
                limit: MAX_BODY_BYTES,
            }
        } else {
            ApiError::MalformedBody(rejection.body_text())
        }
    })?;
    let orders = body::parse(&body, state.max_orders_per_request)?;
    // Freed before the binding call, the longest wait, so chunks in flight hold less.
    drop(body);

    // The sidecar's InvokeBinding span, which covers the statement, is this span's child.
    let span = tracing::info_span!(
        "binding exec",
        otel.kind = "client",
        orders = orders.len(),
        rows = Empty,
    );
    let trace = common::trace_context::trace_headers(&span);
    let inserted = state
        .writer
        .insert(Params::from_orders(&orders), &trace)
        .instrument(span.clone())
        .await?;
    span.record("rows", inserted);
    let received = orders.len() as u64;
    // Only a request with orders that were stored already needs their JSON a second time.
    let conflicts = if inserted == received {
        Vec::new()
    } else {
        let json = String::from_utf8(common::wire::orders_json(&orders)).unwrap_or_default();
        db::conflicting_ids(&state.pool, &json)
            .instrument(tracing::info_span!("read conflicts", orders = received))
            .await
            .map_err(|error| ApiError::Unavailable(error.into()))?
    };
    let unchanged = received.saturating_sub(inserted + conflicts.len() as u64);
    let outcome = WriteOutcome {
        received,
        inserted,
        unchanged,
        conflicts,
    };
    tracing::info!(
        received,
        inserted,
        unchanged,
        conflicts = outcome.conflicts.len(),
        "orders stored"
    );
    if !outcome.conflicts.is_empty() {
        tracing::warn!(ids = ?outcome.conflicts, "orders already stored with different content were left unchanged");
    }
    Ok(Json(outcome))
}

async fn get_order<W: OrderWriter>(
    State(state): State<AppState<W>>,
    Path(id): Path<String>,
) -> Result<Json<Order>, ApiError> {
    let orderid =
        id.parse::<i64>()
            .ok()
            .filter(|id| *id > 0)
            .ok_or_else(|| ApiError::InvalidParameter {
                name: "id",
                reason: format!("must be a whole number from 1 to {}, not {id:?}", i64::MAX),
            })?;
    db::get_order(&state.pool, orderid)
        .await
        .map_err(|error| ApiError::Unavailable(error.into()))?
        .map(Json)
        .ok_or(ApiError::NotFound(orderid))
}

/// A page of orders and where the next one starts.
#[derive(Debug, Serialize)]
pub struct Page {
    /// The orders, in id order.
    pub orders: Vec<Order>,
    /// Pass as `after` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_after: Option<i64>,
}

async fn list_orders<W: OrderWriter>(
    State(state): State<AppState<W>>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Page>, ApiError> {
    let after = number_param(&params, "after", 0, 0..=i64::MAX)?;
    let limit = number_param(&params, "limit", DEFAULT_PAGE, 1..=MAX_PAGE)?;
    let orders = db::list_orders(&state.pool, after, limit)
        .await
        .map_err(|error| ApiError::Unavailable(error.into()))?;
    let next_after = (orders.len() as i64 == limit)
        .then(|| orders.last().map(|o| o.orderid()))
        .flatten();
    Ok(Json(Page { orders, next_after }))
}

fn number_param(
    params: &HashMap<String, String>,
    name: &'static str,
    default: i64,
    range: std::ops::RangeInclusive<i64>,
) -> Result<i64, ApiError> {
    let Some(raw) = params.get(name) else {
        return Ok(default);
    };
    raw.parse::<i64>()
        .ok()
        .filter(|n| range.contains(n))
        .ok_or_else(|| ApiError::InvalidParameter {
            name,
            reason: format!(
                "must be a whole number from {} to {}, not {raw:?}",
                range.start(),
                range.end()
            ),
        })
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "alive" }))
}

async fn readyz<W: OrderWriter>(
    State(state): State<AppState<W>>,
) -> (StatusCode, Json<serde_json::Value>) {
    let (sidecar, binding, database) = tokio::join!(
        state.sidecar.outbound_health(),
        state.sidecar.has_component(&state.binding_name),
        async {
            tokio::time::timeout(std::time::Duration::from_secs(2), db::ping(&state.pool)).await
        }
    );
    let sidecar_ok = sidecar
        .inspect_err(|error| tracing::warn!(%error, "not ready: sidecar"))
        .is_ok();
    // Without the binding nothing can be stored (see binding_watch).
    let binding_ok = sidecar_ok
        && match binding {
            Ok(loaded) => loaded,
            Err(error) => {
                tracing::warn!(%error, "not ready: cannot read the sidecar's components");
                false
            }
        };
    if sidecar_ok && !binding_ok {
        tracing::warn!(binding = %state.binding_name, "not ready: the sidecar has not loaded the binding");
    }
    let database_ok = match database {
        Ok(Ok(())) => true,
        Ok(Err(error)) => {
            tracing::warn!(%error, "not ready: database");
            false
        }
        Err(_) => {
            tracing::warn!("not ready: database did not answer within 2 s");
            false
        }
    };
    let schema_ok = state
        .schema_ready
        .load(std::sync::atomic::Ordering::Acquire);
    let status = if sidecar_ok && binding_ok && database_ok && schema_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let word = |ok: bool| if ok { "ok" } else { "unavailable" };
    (
        status,
        Json(serde_json::json!({
            "sidecar": word(sidecar_ok),
            "binding": word(binding_ok),
            "database": word(database_ok),
            "schema": if schema_ok { "ok" } else { "migrating" },
        })),
    )
}
