//! Findings → actions: dedup, routing, cool-down and the status lifecycle.
//!
//! ```text
//!   open ──► acknowledged ──► done ──► verified | not_verified   (verification)
//!     │            │
//!     └────────────┴──► rejected            withdrawn: every finding was corrected away
//!     │
//!     └──► expired   nobody acknowledged it within `expire_after` (default 90 days)
//! ```
//!
//! [`replay_group`] is a pure function of one `(rule, group)`'s findings and
//! the status updates addressed to its actions. The engine calls it again
//! whenever either changes (a late row, a context edit, a new update), so
//! corrections and out-of-order updates give the same actions as if
//! everything had arrived in order. Items are merged on event time: a
//! finding counts at its period end, an update at its `at`.
//!
//! With `one_per = "group"` (the default) a group has at most one open
//! action: repeated findings add their value and evidence to it (each a new
//! revision). Once the action is done or rejected, findings are suppressed
//! for the rule's cool-down, after which a new action opens. Findings whose
//! period overlaps a maintenance window of the asset are suppressed and
//! counted. With `one_per = "period"` every finding is its own action.
//!
//! An action still `open` `expire_after` after it opened (event time) gets
//! a revision with status `expired` at that time, by `plantflow`; the
//! cool-down does not follow it (nobody acted), so under `one_per =
//! "group"` the next finding opens a new action. Updates after it are
//! refused like any update to a closed action.

use std::collections::HashMap;

use crate::config::{RoutePlan, RulePlan};
use crate::model::{canonical_status, ActionRow, Finding, SharedName, StatusUpdate, F64};

/// Lifecycle statuses, in the order the `actions` table documents them.
pub const STATUSES: &[&str] = &[
    "open",
    "acknowledged",
    "done",
    "verified",
    "not_verified",
    "rejected",
    "withdrawn",
    "expired",
];

/// Whether an action in status `from` may be moved to `to` by an update.
pub fn allowed(from: &str, to: &str) -> bool {
    matches!(
        (from, to),
        ("open", "acknowledged")
            | ("open", "done")
            | ("open", "rejected")
            | ("acknowledged", "done")
            | ("acknowledged", "rejected")
    )
}

/// An action as replayed: its current row and one snapshot per status entered.
#[derive(Clone, Debug)]
pub struct ReplayedAction {
    pub row: ActionRow,
    /// `(status, snapshot)` in the order the statuses were entered.
    pub transitions: Vec<(String, ActionRow)>,
    /// When it was marked done (event time), if it was.
    pub done_at: Option<i64>,
    /// Start of its first finding's period (baseline anchor).
    pub opened_period: i64,
    pub line: String,
    pub kind: String,
}

/// What replaying one group yields.
#[derive(Debug, Default)]
pub struct GroupReplay {
    pub actions: Vec<ReplayedAction>,
    pub suppressed_maintenance: u64,
    pub suppressed_cooldown: u64,
    /// Updates that could not be applied: `(update, reason)`.
    pub rejected: Vec<(StatusUpdate, String)>,
    /// Updates that were applied (by `seq`).
    pub applied: Vec<u64>,
}

/// Routing for a rule and group: the first matching route wins, else the rule's own.
pub fn route(
    rule: &RulePlan,
    routes: &[RoutePlan],
    kind: &str,
    site: &str,
) -> (String, String, String) {
    let m = |want: &Option<String>, got: &str| want.as_deref().is_none_or(|w| w == got);
    for r in routes {
        if m(&r.category, &rule.category) && m(&r.kind, kind) && m(&r.site, site) {
            return (
                r.owner.clone().unwrap_or_else(|| rule.owner.clone()),
                r.action_type
                    .clone()
                    .unwrap_or_else(|| rule.action_type.clone()),
                r.value_category
                    .clone()
                    .unwrap_or_else(|| rule.value_category.clone()),
            );
        }
    }
    (
        rule.owner.clone(),
        rule.action_type.clone(),
        rule.value_category.clone(),
    )
}

/// Stable id: hex xxh3-64 of dataflow, rule, group values and the first period's start.
pub fn action_id(dataflow: &str, rule: &str, group: &[SharedName], period_start: i64) -> String {
    let mut h = xxhash_rust::xxh3::Xxh3Default::new();
    h.update(dataflow.as_bytes());
    h.update("\u{1f}".as_bytes());
    h.update(rule.as_bytes());
    for g in group {
        h.update("\u{1f}".as_bytes());
        h.update(g.as_bytes());
    }
    h.update("\u{1f}".as_bytes());
    h.update(period_start.to_string().as_bytes());
    format!("{:016x}", h.digest())
}

pub fn severity(rule: &RulePlan, value: f64) -> &'static str {
    if value >= rule.severity_high {
        "high"
    } else if value >= rule.severity_medium {
        "medium"
    } else {
        "low"
    }
}

fn closed(status: &str) -> bool {
    !matches!(status, "open" | "acknowledged")
}

/// One entry of an action's evidence `history` (keys in alphabetical order,
/// as the evidence object lists them).
#[derive(serde::Serialize)]
struct HistoryEntry {
    at: i64,
    by: String,
    note: String,
    status: String,
}

struct Building {
    a: ReplayedAction,
    values: Vec<f64>,
    /// Measure sums by name (sorted, as the evidence lists them).
    totals: std::collections::BTreeMap<String, f64>,
    windows: i64,
    last_measures: serde_json::Value,
    history: Vec<HistoryEntry>,
    closed_at: Option<i64>,
    /// When it opened (its first finding's period end).
    opened_at: i64,
    /// Whether `a.row.evidence` still describes the current state (it was
    /// written by the last snapshot and nothing it reads changed since).
    evidence_current: bool,
}

impl Building {
    /// Brings the row's numbers up to date; the evidence is written only when
    /// a version of the row is kept ([`Building::snapshot`], the end of the
    /// replay), since a group is replayed finding by finding.
    fn refresh(&mut self, rule: &RulePlan) {
        let value: f64 = self.values.iter().sum();
        let r = &mut self.a.row;
        r.value = F64(value);
        r.severity = severity(rule, value).to_string();
        r.findings = self.values.len() as i64;
    }

    fn write_evidence(&mut self, rule: &RulePlan, group: &[SharedName]) {
        // Serialised straight from borrowed fields, keys in alphabetical order
        // (as a `serde_json::Map` orders them), without building a `Value` tree.
        #[derive(serde::Serialize)]
        struct Evidence<'a> {
            condition: &'a str,
            findings: usize,
            group: std::collections::BTreeMap<&'a str, &'a str>,
            history: &'a [HistoryEntry],
            measures: &'a serde_json::Value,
            totals: &'a std::collections::BTreeMap<String, f64>,
            windows: i64,
        }
        let e = Evidence {
            condition: &rule.condition,
            findings: self.values.len(),
            group: rule
                .group_by
                .iter()
                .zip(group)
                .map(|(k, v)| (k.as_str(), &**v))
                .collect(),
            history: &self.history,
            measures: &self.last_measures,
            totals: &self.totals,
            windows: self.windows,
        };
        self.a.row.evidence = serde_json::to_string(&e).unwrap_or_default();
        self.evidence_current = true;
    }

    fn enter(&mut self, status: &str, at: i64, by: &str, note: &str) {
        self.a.row.status = status.to_string();
        self.a.row.status_at = at;
        self.a.row.status_by = by.to_string();
        self.a.row.status_note = note.to_string();
        self.history.push(HistoryEntry {
            at,
            by: by.to_string(),
            note: note.to_string(),
            status: status.to_string(),
        });
        self.evidence_current = false;
    }

    fn snapshot(&mut self, rule: &RulePlan, group: &[SharedName]) {
        self.write_evidence(rule, group);
        let s = self.a.row.status.clone();
        self.a.transitions.push((s, self.a.row.clone()));
    }
}

/// A new action for finding `f` of `group`, open from the end of its period.
fn open_action(
    dataflow: &str,
    rule: &RulePlan,
    routes: &[RoutePlan],
    group: &[SharedName],
    f: &Finding,
) -> Building {
    let id = action_id(dataflow, &rule.id, group, f.period_start);
    let (owner, action_type, value_category) = route(rule, routes, &f.kind, &f.site);
    let mut b = Building {
        a: ReplayedAction {
            row: ActionRow {
                action_id: id.clone(),
                rule: rule.id.clone(),
                site: f.site.to_string(),
                line: f.line.to_string(),
                asset: f.asset.to_string(),
                owner,
                action_type,
                value_category,
                value: F64(0.0),
                severity: String::new(),
                period_start: f.period_start,
                period_end: f.period_end,
                status: String::new(),
                evidence: String::new(),
                category: rule.category.clone(),
                findings: 0,
                status_at: f.period_end,
                status_by: String::new(),
                status_note: String::new(),
            },
            transitions: Vec::new(),
            done_at: None,
            opened_period: f.period_start,
            line: f.line.to_string(),
            kind: f.kind.to_string(),
        },
        values: Vec::new(),
        totals: Default::default(),
        windows: 0,
        last_measures: serde_json::Value::Null,
        history: Vec::new(),
        closed_at: None,
        opened_at: f.period_end,
        evidence_current: false,
    };
    b.enter("open", f.period_end, "plantflow", "");
    b
}

/// A span of time as config writes it: `90d`, `36h`, `90m`, `45s`, `500ms`.
pub fn span(ms: i64) -> String {
    match ms {
        ms if ms % 86_400_000 == 0 => format!("{}d", ms / 86_400_000),
        ms if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        ms if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        ms if ms % 1_000 == 0 => format!("{}s", ms / 1_000),
        ms => format!("{ms}ms"),
    }
}

/// Expires `b` if it is still open at `opened_at + expire_after` and that
/// time is at or before both `t` and `now` (the event time reached).
fn expire(b: &mut Building, rule: &RulePlan, group: &[SharedName], t: i64, now: i64) {
    let Some(after) = rule.expire_after_ms else {
        return;
    };
    let at = b.opened_at.saturating_add(after);
    if b.a.row.status != "open" || at > t || at > now {
        return;
    }
    let note = format!("nobody acknowledged it within {}", span(after));
    b.enter("expired", at, "plantflow", &note);
    b.snapshot(rule, group);
}

/// Replays one group as of event time `now`. `findings` in any order;
/// `updates` maps action id → its updates.
pub fn replay_group<'f, S: std::hash::BuildHasher>(
    dataflow: &str,
    currency_rule: (&RulePlan, &[RoutePlan]),
    (group, now): (&[SharedName], i64),
    findings: impl IntoIterator<Item = &'f Finding>,
    updates: &HashMap<String, Vec<StatusUpdate>, S>,
) -> GroupReplay {
    let (rule, routes) = currency_rule;
    let mut out = GroupReplay::default();
    let mut fs: Vec<&Finding> = findings.into_iter().collect();
    fs.sort_by_key(|f| (f.period_end, f.period_start));
    let mut done: Vec<Building> = Vec::new();
    let mut cur: Option<Building> = None;
    // Updates still to apply to the current action, sorted by (at, seq).
    let mut pending: Vec<StatusUpdate> = Vec::new();

    let apply_until =
        |b: &mut Building, pending: &mut Vec<StatusUpdate>, t: i64, out: &mut GroupReplay| {
            while let Some(u) = pending.first() {
                if u.at > t {
                    break;
                }
                // (an update at the very time of the expiry still counts)
                expire(b, rule, group, u.at - 1, now);
                let u = pending.remove(0);
                let Some(to) = canonical_status(&u.status) else {
                    out.rejected
                        .push((u.clone(), format!("unknown status `{}`", u.status)));
                    continue;
                };
                let from = b.a.row.status.clone();
                if !allowed(&from, to) {
                    out.rejected
                        .push((u.clone(), format!("invalid transition {from} → {to}")));
                    continue;
                }
                b.enter(to, u.at, &u.by, &u.note);
                if to == "done" {
                    b.a.done_at = Some(u.at);
                }
                if closed(to) {
                    b.closed_at = Some(u.at);
                }
                out.applied.push(u.seq);
                b.snapshot(rule, group);
            }
            expire(b, rule, group, t, now);
        };

    for f in fs {
        // Updates that happened before this finding was known.
        if let Some(b) = cur.as_mut() {
            apply_until(b, &mut pending, f.period_end - 1, &mut out);
        }
        if f.in_maintenance {
            out.suppressed_maintenance += 1;
            continue;
        }
        let reuse = rule.one_per_group && cur.as_ref().is_some_and(|b| !closed(&b.a.row.status));
        if !reuse {
            if let Some(b) = cur.as_ref() {
                if rule.one_per_group {
                    if let Some(c) = b.closed_at {
                        if f.period_start < c + rule.cooldown_ms {
                            out.suppressed_cooldown += 1;
                            continue;
                        }
                    }
                }
            }
            if let Some(mut b) = cur.take() {
                // Updates for the previous action that come later still apply to it.
                apply_until(&mut b, &mut pending, i64::MAX, &mut out);
                done.push(b);
            }
            let b = open_action(dataflow, rule, routes, group, f);
            let id = b.a.row.action_id.clone();
            pending = updates.get(&id).cloned().unwrap_or_default();
            pending.sort_by_key(|u| (u.at, u.seq));
            cur = Some(b);
        }
        let b = cur.as_mut().expect("set above");
        b.evidence_current = false;
        b.values.push(f.value.0);
        b.windows += f.windows;
        b.a.row.period_end = b.a.row.period_end.max(f.period_end);
        let m: serde_json::Value = serde_json::from_str(&f.measures).unwrap_or_default();
        if let Some(obj) = m.as_object() {
            for (k, v) in obj {
                let x = v.as_f64().unwrap_or(0.0);
                match b.totals.get_mut(k) {
                    Some(t) => *t += x,
                    None => {
                        // `0.0 + x`, as a running sum from zero gives (never -0.0).
                        b.totals.insert(k.clone(), 0.0 + x);
                    }
                }
            }
        }
        b.last_measures = m;
        b.refresh(rule);
        if b.a.transitions.is_empty() {
            b.snapshot(rule, group);
        }
    }
    if let Some(mut b) = cur.take() {
        apply_until(&mut b, &mut pending, i64::MAX, &mut out);
        done.push(b);
    }
    for mut b in done {
        b.refresh(rule);
        // Most actions are final right after their opening snapshot.
        if !b.evidence_current {
            b.write_evidence(rule, group);
        }
        // Transitions keep the value they had; the current row is complete.
        out.actions.push(b.a);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(one_per_group: bool, cooldown_ms: i64) -> RulePlan {
        RulePlan {
            id: "r".into(),
            kind: crate::config::RuleKind::Windows,
            category: "waste".into(),
            one_per_group,
            cooldown_ms,
            expire_after_ms: None,
            verify: None,
            description: None,
            filter: None,
            group_by: vec!["asset".into()],
            period_ms: 3_600_000,
            measures: vec![],
            condition: "x".into(),
            owner: "operations".into(),
            action_type: "operational_change".into(),
            value_category: "energy_cost".into(),
            value: "v".into(),
            severity_medium: 5.0,
            severity_high: 50.0,
        }
    }

    fn finding(h: i64, value: f64, maint: bool) -> Finding {
        Finding {
            rule: 0,
            group: vec!["a1".into()].into(),
            period_start: h * 3_600_000,
            period_end: (h + 1) * 3_600_000,
            value: F64(value),
            windows: 60,
            in_maintenance: maint,
            measures: format!("{{\"waste\": {value}}}"),
            site: "s".into(),
            line: "l".into(),
            asset: "a1".into(),
            kind: "compressor".into(),
        }
    }

    fn upd(id: &str, status: &str, at: i64, seq: u64) -> StatusUpdate {
        StatusUpdate {
            action_id: id.into(),
            status: status.into(),
            at,
            by: "ann".into(),
            note: String::new(),
            seq,
            raw: String::new(),
        }
    }

    #[test]
    fn action_id_is_xxh3_of_the_joined_key() {
        // The documented key, joined by hand and hashed in one call.
        let key = "df\u{1f}idle\u{1f}s1\u{1f}a1\u{1f}-3600000";
        let want = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(key.as_bytes()));
        assert_eq!(
            action_id("df", "idle", &["s1".into(), "a1".into()], -3_600_000),
            want
        );
        assert_ne!(action_id("df", "idle", &["s1a1".into()], -3_600_000), want);
    }

    #[test]
    fn evidence_is_the_documented_json_object() {
        let mut r = rule(true, 0);
        r.group_by = vec!["site".into(), "asset".into()];
        let fs = vec![finding(0, 2.5, false), finding(1, 4.5, false)];
        let group: [SharedName; 2] = ["s1".into(), "a1".into()];
        let id = action_id("df", "r", &group, 0);
        let mut ups = HashMap::new();
        ups.insert(id, vec![upd("x", "acknowledged", 3_600_500, 1)]);
        ups.values_mut()
            .for_each(|v| v[0].action_id = action_id("df", "r", &group, 0));
        let g = replay_group("df", (&r, &[]), (&group, i64::MAX), &fs, &ups);
        let a = &g.actions[0];
        // Written by hand: keys sorted, the last finding's measures, summed totals.
        let want = serde_json::json!({
            "condition": "x",
            "findings": 2,
            "group": {"asset": "a1", "site": "s1"},
            "history": [
                {"at": 3_600_000, "by": "plantflow", "note": "", "status": "open"},
                {"at": 3_600_500, "by": "ann", "note": "", "status": "acknowledged"},
            ],
            "measures": {"waste": 4.5},
            "totals": {"waste": 7.0},
            "windows": 120,
        });
        assert_eq!(a.row.evidence, want.to_string());
        // The version kept when the action opened has the evidence of that moment.
        let first: serde_json::Value = serde_json::from_str(&a.transitions[0].1.evidence).unwrap();
        assert_eq!(first["findings"], 1);
        assert_eq!(first["measures"]["waste"], 2.5);
    }

    /// Worked by hand, `expire_after` = 3 h: an action opened at 01:00
    /// (the 00:00 hour's finding) that nobody acknowledged has a revision
    /// `expired` at 04:00 once event time reaches it, not before; an update
    /// at 04:00 itself still counts; one after it is refused; under `one_per
    /// = "group"` the next finding (05:00) opens a new action at once, the
    /// cool-down not following an expiry.
    #[test]
    fn an_unacknowledged_action_expires_and_the_next_finding_opens_a_new_one() {
        let h = 3_600_000;
        let mut r = rule(true, 10 * h);
        r.expire_after_ms = Some(3 * h);
        let id = action_id("df", "r", &["a1".into()], 0);
        let group: [SharedName; 1] = ["a1".into()];
        let fs = [finding(0, 1.0, false)];
        let none = HashMap::new();
        let at = |now: i64, ups: &HashMap<String, Vec<StatusUpdate>>| {
            replay_group("df", (&r, &[]), (&group, now), &fs, ups)
        };
        assert_eq!(at(4 * h - 1, &none).actions[0].row.status, "open");
        let g = at(4 * h, &none);
        let a = &g.actions[0];
        assert_eq!(a.row.status, "expired");
        assert_eq!(a.row.status_at, 4 * h);
        assert_eq!(a.row.status_by, "plantflow");
        assert_eq!(a.row.status_note, "nobody acknowledged it within 3h");
        let statuses: Vec<&str> = a.transitions.iter().map(|t| t.0.as_str()).collect();
        assert_eq!(statuses, ["open", "expired"]);
        // Acknowledged at the very time: it does not expire.
        let ups = HashMap::from([(id.clone(), vec![upd(&id, "ack", 4 * h, 1)])]);
        let g = at(10 * h, &ups);
        assert_eq!(g.actions[0].row.status, "acknowledged");
        // Acknowledged a millisecond later: refused, it expired.
        let ups = HashMap::from([(id.clone(), vec![upd(&id, "ack", 4 * h + 1, 1)])]);
        let g = at(10 * h, &ups);
        assert_eq!(g.actions[0].row.status, "expired");
        assert_eq!(g.rejected.len(), 1);
        assert!(g.rejected[0].1.contains("expired"), "{:?}", g.rejected);
        // The next finding after the expiry opens a new action (no cool-down).
        let fs = [finding(0, 1.0, false), finding(5, 2.0, false)];
        let g = replay_group("df", (&r, &[]), (&group, 6 * h), &fs, &none);
        let rows: Vec<(&str, i64, f64)> = g
            .actions
            .iter()
            .map(|a| (a.row.status.as_str(), a.row.period_start, a.row.value.0))
            .collect();
        assert_eq!(rows, [("expired", 0, 1.0), ("open", 5 * h, 2.0)]);
        // Without `expire_after`, it stays open.
        r.expire_after_ms = None;
        let fs = [finding(0, 1.0, false)];
        let g = replay_group("df", (&r, &[]), (&group, i64::MAX), &fs, &none);
        assert_eq!(g.actions[0].row.status, "open");
    }

    #[test]
    fn one_open_action_per_group_accumulates_and_suppresses() {
        let r = rule(true, 2 * 3_600_000);
        let fs: Vec<_> = (0..10).map(|h| finding(h, 4.8, h == 3)).collect();
        let g = replay_group(
            "df",
            (&r, &[]),
            (&["a1".into()], i64::MAX),
            &fs,
            &HashMap::new(),
        );
        assert_eq!(g.actions.len(), 1);
        assert_eq!(g.suppressed_maintenance, 1);
        let a = &g.actions[0].row;
        assert!((a.value.0 - 9.0 * 4.8).abs() < 1e-9);
        assert_eq!(a.findings, 9);
        assert_eq!((a.period_start, a.period_end), (0, 10 * 3_600_000));
        assert_eq!(a.status, "open");
        assert_eq!(a.severity, "medium");
    }

    #[test]
    fn lifecycle_cooldown_reopen_and_invalid_updates() {
        let r = rule(true, 2 * 3_600_000);
        let fs: Vec<_> = (0..8).map(|h| finding(h, 1.0, false)).collect();
        let id = action_id("df", "r", &["a1".into()], 0);
        let h = 3_600_000;
        let mut ups = HashMap::new();
        // Arrive out of order (seq), applied by `at`; `ack` after `done` is invalid.
        ups.insert(
            id.clone(),
            vec![
                upd(&id, "done", 2 * h + 10, 1),
                upd(&id, "ack", h + 5, 2),
                upd(&id, "ack", 2 * h + 20, 3),
            ],
        );
        let g = replay_group("df", (&r, &[]), (&["a1".into()], i64::MAX), &fs, &ups);
        assert_eq!(
            g.actions.len(),
            2,
            "{:?}",
            g.actions.iter().map(|a| &a.row).collect::<Vec<_>>()
        );
        let first = &g.actions[0];
        assert_eq!(first.row.status, "done");
        assert_eq!(
            first
                .transitions
                .iter()
                .map(|t| t.0.as_str())
                .collect::<Vec<_>>(),
            ["open", "acknowledged", "done"]
        );
        assert_eq!(first.row.findings, 2, "hours 0 and 1 ended before done");
        assert_eq!(g.rejected.len(), 1);
        assert!(g.rejected[0].1.contains("done → acknowledged"));
        // Findings starting within 2 h of done (hours 2, 3, 4) are suppressed; hour 5 reopens.
        assert_eq!(g.suppressed_cooldown, 3);
        assert_eq!(g.actions[1].row.period_start, 5 * h);
        assert_ne!(g.actions[1].row.action_id, id);
    }

    #[test]
    fn per_period_actions_and_routing() {
        let r = rule(false, 0);
        let fs: Vec<_> = (0..3).map(|h| finding(h, 1.0, false)).collect();
        let routes = vec![RoutePlan {
            kind: Some("compressor".into()),
            owner: Some("maintenance".into()),
            action_type: Some("maintenance_work".into()),
            ..Default::default()
        }];
        let g = replay_group(
            "df",
            (&r, &routes),
            (&["a1".into()], i64::MAX),
            &fs,
            &HashMap::new(),
        );
        assert_eq!(g.actions.len(), 3);
        assert!(g.actions.iter().all(|a| a.row.owner == "maintenance"
            && a.row.action_type == "maintenance_work"
            && a.row.value_category == "energy_cost"));
    }
}
