//! The operator surface: an HTTP server on the node's I/O runtime (never
//! on a timely worker), configured by `[http] listen`. It serves
//! - `GET /healthz`: the process is alive (200, `ok`);
//! - `GET /readyz`: every live source connected and the run not stopping
//!   (200), else 503 with a JSON body naming what is not ready;
//! - `GET /metrics`: the run's counters in the OpenMetrics text format
//!   (Prometheus scrapes it), built from [`Stats`] at each scrape;
//! - `/api/v1/actions…` and `/api/v1/events`: the actions, their status
//!   changes and their live events ([`api`], over the [`board::Board`]);
//! - `GET /`: the action board, one page embedded in the binary.
//!
//! `schemas/openapi.yaml` describes every endpoint.

pub mod api;
pub mod board;
pub mod metrics;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::Html;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;

use crate::config::HttpPlan;
use crate::model::Secret;
use crate::stats::Stats;

/// The board page, served as it is.
const BOARD_HTML: &str = include_str!("board.html");

/// Tag statuses from the most to the least urgent (`schemas/tag_quality.md`).
pub const TAG_STATUSES: &[&str] = &[
    "unmapped",
    "missing",
    "stale",
    "out_of_range",
    "flatline",
    "ok",
];

/// Every tag's quality row, at most `max_age` old (the run builds them).
pub trait TagRows: Send + Sync {
    fn rows(&self, max_age: std::time::Duration) -> Arc<Vec<crate::model::TagQualityRow>>;
}

/// What the surface reads: the run's counters, its stop flag, the board,
/// the tags and the token its writes need.
pub struct Surface {
    pub stats: Arc<Stats>,
    pub stop: Arc<AtomicBool>,
    pub board: Arc<board::Board>,
    pub token: Option<Secret>,
    pub tags: Arc<dyn TagRows>,
}

/// Listens on `plan.listen` and serves until the run stops (the calling
/// thread blocks on `rt`: run it on a blocking thread). A port that cannot
/// be bound is an error.
pub fn serve(rt: &tokio::runtime::Handle, plan: &HttpPlan, s: Surface) -> Result<(), String> {
    let listener = std::net::TcpListener::bind(plan.listen)
        .and_then(|l| l.set_nonblocking(true).map(|_| l))
        .map_err(|e| format!("cannot listen on {}: {e}", plan.listen))?;
    let addr: SocketAddr = listener
        .local_addr()
        .map_err(|e| format!("cannot listen on {}: {e}", plan.listen))?;
    eprintln!("plantflow: operator surface on http://{addr}/ (the action board; /metrics, /healthz, /readyz, /api/v1)");
    s.stats.set_http_addr(addr);
    let stop = s.stop.clone();
    let app = Router::new()
        .route("/", get(|| async { Html(BOARD_HTML) }))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/actions", get(api::list))
        .route("/api/v1/actions/:id", get(api::one))
        .route("/api/v1/actions/:id/:verb", post(api::change))
        .route("/api/v1/events", get(api::events))
        .route("/api/v1/tags", get(api::tags))
        .layer(DefaultBodyLimit::max(16 * 1024))
        .with_state(Arc::new(s));
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                while !stop.load(Relaxed) {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            })
            .await
            .map_err(|e| format!("serving on {addr}: {e}"))
    })
}

/// What is not ready: live sources not connected, a stopping run.
fn not_ready(s: &Surface) -> Vec<String> {
    let mut out: Vec<String> = s
        .stats
        .connected()
        .into_iter()
        .filter(|(_, up)| !up)
        .map(|(id, _)| format!("source `{id}`: not connected"))
        .collect();
    if s.stop.load(Relaxed) {
        out.push("the run is stopping".into());
    }
    out
}

async fn readyz(State(s): State<Arc<Surface>>) -> impl IntoResponse {
    let missing = not_ready(&s);
    let code = if missing.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({ "ready": missing.is_empty(), "not_ready": missing });
    (code, axum::Json(body))
}

async fn metrics(State(s): State<Arc<Surface>>) -> impl IntoResponse {
    match metrics::render(&s.stats, Some((&s.board, s.tags.as_ref()))) {
        Ok(text) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("cannot encode the metrics: {e}\n"),
        ),
    }
}
