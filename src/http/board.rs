//! The action board's store: the actions and outcomes the engine sent to
//! the sinks, as the API and the board page show them, and the events
//! their live views follow.
//!
//! It holds every action that is not closed (open, acknowledged, done and
//! awaiting its outcome) with its latest [`KEEP_REVISIONS`] revisions, and
//! the latest [`KEEP_CLOSED`] closed ones (verified, not verified,
//! rejected, withdrawn); the lake holds them all. Status changes asked for
//! through the API are checked here against the action's status (the
//! lifecycle's own rule, [`crate::value::lifecycle::allowed`]) and then
//! appended to the lifecycle file, the one way an update reaches the
//! engine, as `plantflow action` does.

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use crate::model::{now_ms, ActionRow, OutcomeRow};

/// Revisions of one action kept for `GET /api/v1/actions/{id}`.
pub const KEEP_REVISIONS: usize = 100;
/// Closed actions kept for the API (the oldest closed leave first).
pub const KEEP_CLOSED: usize = 1000;
/// Events a slow follower of `/api/v1/events` may fall behind by before it
/// is told it missed some.
const EVENTS_BUFFER: usize = 1024;

/// Statuses after which an action changes no more.
fn closed(status: &str) -> bool {
    matches!(
        status,
        "verified" | "not_verified" | "rejected" | "withdrawn" | "expired"
    )
}

/// One action as the board holds it.
struct Entry {
    /// Its latest revisions, oldest first.
    revisions: VecDeque<(ActionRow, i64)>,
    /// How many revisions it has had in this run.
    seen: u64,
    outcome: Option<(OutcomeRow, i64)>,
    /// A status change accepted through the API, from the status it was
    /// in, until a revision shows the action has left that status.
    pending: Option<(String, String)>,
}

impl Entry {
    fn latest(&self) -> &(ActionRow, i64) {
        self.revisions.back().expect("an entry has a revision")
    }

    /// The status the next update is checked against.
    fn status(&self) -> &str {
        let now = &self.latest().0.status;
        match &self.pending {
            Some((from, to)) if from == now => to,
            _ => now,
        }
    }
}

#[derive(Default)]
struct Inner {
    actions: HashMap<String, Entry>,
    /// Closed actions, in the order they closed.
    closed: VecDeque<String>,
}

/// Filters of `GET /api/v1/actions` (each, when given, must match).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    pub owner: Option<String>,
    /// One status or several, comma-separated.
    pub status: Option<String>,
    pub site: Option<String>,
    pub rule: Option<String>,
    pub severity: Option<String>,
    pub limit: Option<usize>,
}

/// A query filter: absent, or `got` is what it asks for.
pub(super) fn is(want: &Option<String>, got: &str) -> bool {
    want.as_deref().is_none_or(|w| w == got)
}

/// A query filter of comma-separated values: absent, or `got` is one of them.
pub(super) fn one_of(want: &Option<String>, got: &str) -> bool {
    want.as_deref()
        .is_none_or(|w| w.split(',').any(|s| s.trim() == got))
}

impl Filter {
    fn keeps(&self, a: &ActionRow) -> bool {
        is(&self.owner, &a.owner)
            && is(&self.site, &a.site)
            && is(&self.rule, &a.rule)
            && is(&self.severity, &a.severity)
            && one_of(&self.status, &a.status)
    }
}

/// Why a status change was not accepted.
#[derive(Debug, PartialEq)]
pub enum Refused {
    /// No such action (or it left the board).
    Unknown,
    /// The lifecycle does not allow it; the reason.
    Conflict(String),
    /// The dataflow has no lifecycle file, or it cannot be written.
    Unavailable(String),
}

/// A status change asked for through the API.
#[derive(Debug)]
pub struct Change {
    pub status: &'static str,
    pub by: String,
    pub note: String,
    /// Event time of the change (default: now).
    pub at: Option<i64>,
}

/// The board's store, shared by the sinks' tap (writes) and the server (reads).
pub struct Board {
    inner: Mutex<Inner>,
    events: tokio::sync::broadcast::Sender<(&'static str, Arc<str>)>,
    /// The lifecycle file status changes are appended to.
    lifecycle: Option<PathBuf>,
    currency: String,
    /// Serialises appends, so checks and lines keep one order.
    append: Mutex<()>,
}

impl Board {
    pub fn new(lifecycle: Option<PathBuf>, currency: &str) -> Arc<Board> {
        Arc::new(Board {
            inner: Mutex::default(),
            events: tokio::sync::broadcast::channel(EVENTS_BUFFER).0,
            lifecycle,
            currency: currency.to_string(),
            append: Mutex::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Follows the events (action revisions, outcomes) from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<(&'static str, Arc<str>)> {
        self.events.subscribe()
    }

    /// Sends an event to the followers (when there are any).
    fn emit(&self, kind: &'static str, data: impl FnOnce() -> Value) {
        if self.events.receiver_count() > 0 {
            let _ = self.events.send((kind, data().to_string().into()));
        }
    }

    /// Takes new action revisions.
    pub fn actions(&self, rows: &[(ActionRow, i64)]) {
        let mut inner = self.lock();
        for (row, rev) in rows {
            let id = &row.action_id;
            let e = inner.actions.entry(id.clone()).or_insert_with(|| Entry {
                revisions: VecDeque::new(),
                seen: 0,
                outcome: None,
                pending: None,
            });
            // A resumed run sends what the lake (and the board) has again.
            let older = e.revisions.len() >= KEEP_REVISIONS
                && e.revisions.front().is_some_and(|(_, r)| rev < r);
            if older || e.revisions.iter().any(|(_, r)| r == rev) {
                continue;
            }
            let was_closed = e.revisions.back().is_some_and(|l| closed(&l.0.status));
            e.seen += 1;
            let at = e.revisions.partition_point(|(_, r)| r < rev);
            e.revisions.insert(at, (row.clone(), *rev));
            while e.revisions.len() > KEEP_REVISIONS {
                e.revisions.pop_front();
            }
            let now = e.latest().0.status.clone();
            if e.pending.as_ref().is_some_and(|(from, _)| *from != now) {
                e.pending = None;
            }
            if closed(&now) && !was_closed {
                inner.closed.push_back(id.clone());
            }
            self.emit("action", || action_json(row, *rev, &self.currency));
        }
        while inner.closed.len() > KEEP_CLOSED {
            if let Some(old) = inner.closed.pop_front() {
                // Only if it is still closed: a correction can bring the
                // findings of a withdrawn action back.
                let still = inner
                    .actions
                    .get(&old)
                    .map(|e| closed(&e.latest().0.status));
                if still == Some(true) {
                    inner.actions.remove(&old);
                }
            }
        }
    }

    /// Takes new outcome revisions.
    pub fn outcomes(&self, rows: &[(OutcomeRow, i64)]) {
        let mut inner = self.lock();
        for (row, rev) in rows {
            if let Some(e) = inner.actions.get_mut(&row.action_id) {
                if e.outcome.as_ref().is_none_or(|(_, r)| rev > r) {
                    e.outcome = Some((row.clone(), *rev));
                }
            }
            self.emit("outcome", || outcome_json(row, *rev, &self.currency));
        }
    }

    /// The latest revision of every action the filter keeps, by value at
    /// stake (largest first), and how many matched.
    pub fn list(&self, f: &Filter) -> (Vec<Value>, usize) {
        let inner = self.lock();
        let mut rows: Vec<&Entry> = inner
            .actions
            .values()
            .filter(|e| f.keeps(&e.latest().0))
            .collect();
        rows.sort_by(|a, b| {
            let (a, b) = (&a.latest().0, &b.latest().0);
            b.value
                .0
                .total_cmp(&a.value.0)
                .then_with(|| a.action_id.cmp(&b.action_id))
        });
        let total = rows.len();
        let limit = f.limit.unwrap_or(500).min(5000);
        let out = rows
            .into_iter()
            .take(limit)
            .map(|e| {
                let (a, r) = e.latest();
                let mut v = action_json(a, *r, &self.currency);
                if let Some((o, r)) = &e.outcome {
                    v["outcome"] = outcome_json(o, *r, &self.currency);
                }
                v
            })
            .collect();
        (out, total)
    }

    /// Actions open or acknowledged: `(owner, severity)` → (count, value at stake).
    pub fn open_by_owner(&self) -> std::collections::BTreeMap<(String, String), (u64, f64)> {
        let inner = self.lock();
        let mut out = std::collections::BTreeMap::new();
        for e in inner.actions.values() {
            let a = &e.latest().0;
            if matches!(a.status.as_str(), "open" | "acknowledged") {
                let t: &mut (u64, f64) = out
                    .entry((a.owner.clone(), a.severity.clone()))
                    .or_default();
                t.0 += 1;
                t.1 += a.value.0;
            }
        }
        out
    }

    /// One action: its latest revision, its revisions (oldest first) and its outcome.
    pub fn get(&self, id: &str) -> Option<Value> {
        let inner = self.lock();
        let e = inner.actions.get(id)?;
        let (a, r) = e.latest();
        let revisions: Vec<Value> = e
            .revisions
            .iter()
            .map(|(a, r)| action_json(a, *r, &self.currency))
            .collect();
        Some(json!({
            "action": action_json(a, *r, &self.currency),
            "revisions": revisions,
            "revisions_seen": e.seen,
            "revisions_omitted": e.seen.saturating_sub(e.revisions.len() as u64),
            "outcome": e.outcome.as_ref().map(|(o, r)| outcome_json(o, *r, &self.currency)),
        }))
    }

    /// Checks a status change against the action's status and appends it
    /// to the lifecycle file; returns the line written.
    pub fn change(&self, id: &str, c: &Change) -> Result<Value, Refused> {
        let Some(path) = &self.lifecycle else {
            return Err(Refused::Unavailable(
                "this dataflow has no `[lifecycle] path`: status changes have nowhere to go".into(),
            ));
        };
        let _order = self.append.lock().unwrap_or_else(|p| p.into_inner());
        let from = {
            let inner = self.lock();
            let e = inner.actions.get(id).ok_or(Refused::Unknown)?;
            e.status().to_string()
        };
        if !crate::value::lifecycle::allowed(&from, c.status) {
            return Err(Refused::Conflict(format!(
                "action `{id}` is `{from}`; `{}` is allowed from {}",
                c.status,
                match c.status {
                    "acknowledged" => "`open` only",
                    _ => "`open` or `acknowledged` only",
                }
            )));
        }
        let line = json!({
            "action_id": id,
            "status": c.status,
            "at": c.at.unwrap_or_else(now_ms),
            "by": c.by,
            "note": c.note,
        });
        append_line(path, &line.to_string()).map_err(Refused::Unavailable)?;
        if let Some(e) = self.lock().actions.get_mut(id) {
            e.pending = Some((from, c.status.to_string()));
        }
        Ok(line)
    }
}

/// Appends one line and syncs it: once the API answers, the change is on disk.
fn append_line(path: &std::path::Path, line: &str) -> Result<(), String> {
    let err = |e: std::io::Error| format!("cannot append to `{}`: {e}", path.display());
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(err)?;
    f.write_all(format!("{line}\n").as_bytes()).map_err(err)?;
    f.sync_data().map_err(err)
}

fn time(ms: i64) -> String {
    crate::model::rfc3339_ms(ms).unwrap_or_default()
}

/// An action revision as the API shows it: the `actions` table's columns.
pub fn action_json(a: &ActionRow, revision: i64, currency: &str) -> Value {
    let evidence: Value = serde_json::from_str(&a.evidence).unwrap_or(Value::Null);
    json!({
        "action_id": a.action_id,
        "revision": revision,
        "rule": a.rule,
        "category": a.category,
        "site": a.site,
        "line": a.line,
        "asset": a.asset,
        "owner": a.owner,
        "action_type": a.action_type,
        "value_category": a.value_category,
        "value": a.value.0,
        "currency": currency,
        "severity": a.severity,
        "status": a.status,
        "status_time": time(a.status_at),
        "status_by": a.status_by,
        "status_note": a.status_note,
        "period_start": time(a.period_start),
        "period_end": time(a.period_end),
        "findings": a.findings,
        "evidence": evidence,
    })
}

/// An outcome revision as the API shows it: the `outcomes` table's columns.
pub fn outcome_json(o: &OutcomeRow, revision: i64, currency: &str) -> Value {
    json!({
        "action_id": o.action_id,
        "revision": revision,
        "rule": o.rule,
        "site": o.site,
        "asset": o.asset,
        "verdict": o.verdict,
        "reason": o.reason,
        "is_final": o.is_final,
        "baseline_start": time(o.baseline_start),
        "baseline_end": time(o.baseline_end),
        "reporting_start": time(o.reporting_start),
        "reporting_end": time(o.reporting_end),
        "model": o.model,
        "r2": o.r2,
        "cv_rmse": o.cv_rmse,
        "nmbe": o.nmbe,
        "baseline_kwh": o.baseline_kwh,
        "actual_kwh": o.actual_kwh,
        "avoided_kwh": o.avoided_kwh,
        "avoided_cost": o.avoided_cost,
        "currency": currency,
        "fractional_savings": o.fractional_savings,
        "fsu_68": o.fsu_68,
        "fsu_90": o.fsu_90,
    })
}
