//! `/api/v1`: actions (list, one, status changes) and their live events.
//!
//! Reads are open to whoever reaches the port; status changes need the
//! bearer token of `[http]` (401 without it or with another, and nothing
//! changes), a JSON body `{"by": …, "note": …, "at": …}` (400 when
//! malformed), an action the board knows (404) and a change its lifecycle
//! allows (409 with the reason). An accepted change (202) is on disk in the
//! lifecycle file; the action's next revision shows it.

use std::convert::Infallible;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::board::{Change, Filter, Refused};
use super::Surface;

/// The longest `by` and `note` taken.
const MAX_BY: usize = 200;
const MAX_NOTE: usize = 4000;

fn error(code: StatusCode, message: impl Into<String>) -> Response {
    (code, Json(json!({ "error": message.into() }))).into_response()
}

pub async fn list(State(s): State<Arc<Surface>>, Query(f): Query<Filter>) -> Response {
    let (actions, total) = s.board.list(&f);
    Json(json!({ "total": total, "actions": actions })).into_response()
}

pub async fn one(State(s): State<Arc<Surface>>, Path(id): Path<String>) -> Response {
    match s.board.get(&id) {
        Some(v) => Json(v).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            format!("no action `{id}` on this node"),
        ),
    }
}

/// Equal in time whatever the bytes (the token is not found a byte at a time).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `None` when the request carries the node's token, else the refusal.
fn refuse_unauthorised(s: &Surface, headers: &HeaderMap) -> Option<Response> {
    let Some(token) = &s.token else {
        return Some(error(
            StatusCode::FORBIDDEN,
            "status changes are off on this node: it has no token (`[http] token_env` or `token_file`)",
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(g) if same(g.trim().as_bytes(), token.0.as_bytes()) => None,
        _ => {
            let mut r = error(
                StatusCode::UNAUTHORIZED,
                "a status change needs `Authorization: Bearer <token>` with the node's token",
            );
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"plantflow\""),
            );
            Some(r)
        }
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    by: String,
    #[serde(default)]
    note: String,
    #[serde(default)]
    at: Option<serde_json::Value>,
}

/// The body of a status change, or why it is malformed.
fn body(bytes: &[u8], status: &'static str) -> Result<Change, String> {
    let b: Body = serde_json::from_slice(bytes).map_err(|e| format!("malformed body: {e}"))?;
    let by = b.by.trim();
    if by.is_empty() || by.len() > MAX_BY {
        return Err(format!("`by` must name who did it (1 to {MAX_BY} bytes)"));
    }
    if b.note.len() > MAX_NOTE {
        return Err(format!("`note` is longer than {MAX_NOTE} bytes"));
    }
    let at = match &b.at {
        None => None,
        Some(v) => {
            let at = crate::sources::status::parse_time(v)?;
            if at > crate::model::now_ms() + 60_000 {
                return Err("`at` lies in the future".into());
            }
            Some(at)
        }
    };
    Ok(Change {
        status,
        by: by.to_string(),
        note: b.note,
        at,
    })
}

pub async fn change(
    State(s): State<Arc<Surface>>,
    Path((id, verb)): Path<(String, String)>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    if let Some(r) = refuse_unauthorised(&s, &headers) {
        return r;
    }
    let status = match verb.as_str() {
        "ack" | "acknowledge" => "acknowledged",
        "done" => "done",
        "reject" => "rejected",
        other => {
            return error(
                StatusCode::NOT_FOUND,
                format!("no verb `{other}`: ack, done or reject"),
            )
        }
    };
    let c = match body(&bytes, status) {
        Ok(c) => c,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let board = s.board.clone();
    let id2 = id.clone();
    let r = tokio::task::spawn_blocking(move || board.change(&id2, &c)).await;
    match r {
        Ok(Ok(line)) => {
            tracing::info!(action_id = %id, status, "status change accepted over HTTP");
            (StatusCode::ACCEPTED, Json(json!({ "accepted": line }))).into_response()
        }
        Ok(Err(Refused::Unknown)) => error(
            StatusCode::NOT_FOUND,
            format!("no action `{id}` on this node"),
        ),
        Ok(Err(Refused::Conflict(why))) => error(StatusCode::CONFLICT, why),
        Ok(Err(Refused::Unavailable(why))) => error(StatusCode::SERVICE_UNAVAILABLE, why),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Filters of `GET /api/v1/tags` (each, when given, must match).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TagFilter {
    /// One status or several, comma-separated.
    status: Option<String>,
    site: Option<String>,
    asset: Option<String>,
    kind: Option<String>,
    limit: Option<usize>,
}

impl TagFilter {
    fn keeps(&self, t: &crate::model::TagQualityRow) -> bool {
        use super::board::{is, one_of};
        is(&self.site, &t.site)
            && is(&self.asset, &t.asset)
            && is(&self.kind, &t.kind)
            && one_of(&self.status, t.status)
    }
}

fn time(ms: i64) -> serde_json::Value {
    crate::model::rfc3339_ms(ms).map_or(serde_json::Value::Null, Into::into)
}

/// A tag's row as the API shows it: the `tag_quality` table's columns.
fn tag_json(t: &crate::model::TagQualityRow) -> serde_json::Value {
    let opt = |v: Option<i64>| v.map(time).unwrap_or(serde_json::Value::Null);
    json!({
        "tag": t.tag, "site": t.site, "line": t.line, "asset": t.asset, "kind": t.kind,
        "unit": t.unit, "status": t.status, "detail": t.detail, "samples": t.samples,
        "first_ts": opt(t.first_ts), "last_ts": opt(t.last_ts), "last_value": t.last_value,
        "min": t.min, "max": t.max, "interval_ms": t.interval_ms,
        "unchanged_since": opt(t.unchanged_since),
    })
}

/// Every tag configured or seen, most urgent status first, with the count
/// of each status over all tags.
pub async fn tags(State(s): State<Arc<Surface>>, Query(f): Query<TagFilter>) -> Response {
    let rows = s.tags.rows(Duration::from_secs(1));
    let mut counts = serde_json::Map::new();
    for st in super::TAG_STATUSES {
        counts.insert(
            st.to_string(),
            json!(rows.iter().filter(|r| r.status == *st).count()),
        );
    }
    let kept: Vec<_> = rows.iter().filter(|r| f.keeps(r)).collect();
    let limit = f.limit.unwrap_or(1000).min(100_000);
    let tags: Vec<_> = kept.iter().take(limit).map(|r| tag_json(r)).collect();
    let at = rows
        .first()
        .map(|r| time(r.snapshot_at))
        .unwrap_or_default();
    Json(json!({ "at": at, "counts": counts, "total": kept.len(), "tags": tags })).into_response()
}

/// Server-sent events: `action` (a new revision) and `outcome`, each its
/// row as JSON; `lagged` when this follower fell behind and missed some.
/// The stream ends when the run stops.
pub async fn events(
    State(s): State<Arc<Surface>>,
) -> Sse<impl futures::Stream<Item = Result<Event, Infallible>>> {
    let rx = s.board.subscribe();
    let stop = s.stop.clone();
    let stream = futures::stream::unfold((rx, stop), |(mut rx, stop)| async move {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            if stop.load(Relaxed) {
                return None;
            }
            let next = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await;
            let ev = match next {
                Err(_) => continue,
                Ok(Ok((kind, data))) => Event::default().event(kind).data(&*data),
                Ok(Err(RecvError::Lagged(n))) => {
                    Event::default().event("lagged").data(n.to_string())
                }
                Ok(Err(RecvError::Closed)) => return None,
            };
            return Some((Ok(ev), (rx, stop)));
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_needs_by_and_takes_a_note_and_a_time() {
        let c = body(br#"{"by":"ana","note":"valve"}"#, "done").unwrap();
        assert_eq!(
            (c.by.as_str(), c.note.as_str(), c.at),
            ("ana", "valve", None)
        );
        let c = body(br#"{"by":"ana","at":"2026-01-02T00:00:00Z"}"#, "done").unwrap();
        assert_eq!(c.at, Some(1_767_312_000_000));
        for bad in [
            &br#"{"note":"x"}"#[..],
            br#"{"by":"  "}"#,
            br#"{"by":"a","colour":"red"}"#,
            br#"{"by":"a","at":"yesterday"}"#,
            br#"{"by":"a","at":"2999-01-01T00:00:00Z"}"#,
            b"not json",
        ] {
            assert!(
                body(bad, "done").is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"abcdefghijklmnop", b"abcdefghijklmnop"));
        assert!(!same(b"abcdefghijklmnop", b"abcdefghijklmnoq"));
        assert!(!same(b"abcdefghijklmnop", b"abcdefghijklmno"));
    }
}
