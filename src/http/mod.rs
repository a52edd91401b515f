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
    "unit_mismatch",
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
    /// The lake's directory: readiness checks it takes files.
    pub lake: std::path::PathBuf,
}

/// Below this much free space on the lake's disk the node is not ready.
pub const MIN_FREE_BYTES: u64 = 16 << 20;

/// Why the lake cannot take files now, if it cannot: a file cannot be
/// created there, or its disk has less than [`MIN_FREE_BYTES`] free.
fn lake_unwritable(lake: &std::path::Path) -> Option<String> {
    let probe = lake.join(".plantflow-ready-probe");
    if let Err(e) = std::fs::write(&probe, b"ok") {
        return Some(format!(
            "sink: cannot create a file in the lake {}: {e}",
            lake.display()
        ));
    }
    let _ = std::fs::remove_file(&probe);
    let free = crate::stats::free_bytes(lake)?;
    (free < MIN_FREE_BYTES).then(|| {
        format!(
            "sink: the lake's disk has {} KiB free (at least {} MiB needed)",
            free >> 10,
            MIN_FREE_BYTES >> 20
        )
    })
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

/// What is not ready: live sources not connected, a lake that cannot take
/// files, a stopping run.
fn not_ready(s: &Surface) -> Vec<String> {
    let mut out: Vec<String> = s
        .stats
        .connected()
        .into_iter()
        .filter(|(_, up)| !up)
        .map(|(id, _)| format!("source `{id}`: not connected"))
        .collect();
    out.extend(lake_unwritable(&s.lake));
    if s.stop.load(Relaxed) {
        out.push("the run is stopping".into());
    }
    out
}

async fn readyz(State(s): State<Arc<Surface>>) -> impl IntoResponse {
    // The lake's check touches its disk: off the runtime's thread.
    let missing = tokio::task::spawn_blocking(move || not_ready(&s))
        .await
        .unwrap_or_else(|e| vec![format!("readiness check failed: {e}")]);
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
