//! The value layer's state: findings → actions, lifecycle, verification, billing.
//!
//! One [`ValueLayer`] runs on one worker (everything it needs is small:
//! findings, per-bucket energy, demand intervals, status updates). The engine
//! feeds it the updates of each complete timely time ([`ValueLayer::apply`])
//! and then calls [`ValueLayer::step`] with the watermark; `step` returns
//! new versions of actions, outcomes and bills, and dead letters.
//!
//! Windows leave the engine's arrangements after the retention horizon; the
//! value layer keeps what it accumulated from them ("frozen"): the
//! retractions that only mean "aged out" are recognised by their time and
//! ignored, so a 30-day baseline or a monthly bill does not need 30 days of
//! windows in memory, while corrections inside the retention still apply.

use std::collections::BTreeMap;

// Fx hashing: the keys are our own ids and groups (no untrusted collision
// risk worth SipHash), and the value layer hashes them on every replay.
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::config::{BillPeriod, Granularity, Plan, RuleKind, VerifyPlan};
use crate::model::{
    ActionRow, ActionTotals, BillRow, DeadLetter, Finding, Group, OutcomeBucket, OutcomeRow,
    SharedName, StatusUpdate, F64,
};
use crate::sources::context::Interval;
use crate::value::lifecycle::{action_id, replay_group, ReplayedAction, STATUSES};
use crate::value::mv;
use crate::value::rules::Compiled;

/// What the engine sends the value layer (all to one worker).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ValueIn {
    Finding(Finding),
    /// A window's energy for billing (`series` 0, group `[site]`) or for a
    /// verifying rule (`series` = rule index + 1, the rule's group).
    Energy {
        series: u32,
        group: Group,
        line: String,
        window_start: i64,
        window_end: i64,
        kwh: F64,
        price: F64,
    },
    Production(Interval),
    Status(StatusUpdate),
}

/// New row versions (with revisions) and dead letters from one step.
#[derive(Debug, Default)]
pub struct ValueOut {
    pub actions: Vec<(ActionRow, i64)>,
    /// How the new action versions change the run's totals by owner and
    /// action type (so the summary need not remember every action).
    pub totals: Vec<ActionTotals>,
    pub outcomes: Vec<(OutcomeRow, i64)>,
    pub bills: Vec<(BillRow, i64)>,
    pub dead_letters: Vec<DeadLetter>,
}

impl ValueOut {
    /// A new version of an action, replacing `prev` (none for its first).
    pub(crate) fn action(&mut self, prev: Option<&ActionRow>, row: ActionRow, rev: i64) {
        if let Some(p) = prev {
            self.count(p, -1);
        }
        self.count(&row, 1);
        if prev.is_none() {
            self.total_of(&row).seen += 1;
        }
        self.actions.push((row, rev));
    }

    /// Adds (`sign` 1) or removes (−1) what a version counts for: a withdrawn
    /// action counts for nothing.
    fn count(&mut self, r: &ActionRow, sign: i64) {
        if r.status != "withdrawn" {
            let t = self.total_of(r);
            t.counted += sign;
            t.value += sign as f64 * r.value.0;
        }
    }

    fn total_of(&mut self, r: &ActionRow) -> &mut ActionTotals {
        let i = match self
            .totals
            .iter()
            .position(|t| t.owner == r.owner && t.action_type == r.action_type)
        {
            Some(i) => i,
            None => {
                self.totals.push(ActionTotals {
                    owner: r.owner.clone(),
                    action_type: r.action_type.clone(),
                    ..Default::default()
                });
                self.totals.len() - 1
            }
        };
        &mut self.totals[i]
    }

    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
            && self.totals.is_empty()
            && self.outcomes.is_empty()
            && self.bills.is_empty()
            && self.dead_letters.is_empty()
    }
}

/// Counters the run summary reports.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct ValueCounters {
    pub suppressed_maintenance: u64,
    pub suppressed_cooldown: u64,
    pub rejected_updates: u64,
}

#[derive(Default, Clone, Debug)]
struct Bucket {
    kwh: f64,
    cost: f64,
    windows: i64,
}

#[derive(Default, Clone, Debug)]
struct Series {
    line: String,
    buckets: BTreeMap<i64, Bucket>,
}

#[derive(Default, Clone, Debug)]
struct DemandInterval {
    kwh: f64,
    cost: f64,
    windows: i64,
    last_ws: i64,
    last_kwh: f64,
    by_price: BTreeMap<F64, (f64, f64)>,
}

type GroupKey = (u32, Group);

/// A group's findings by period start. Most groups hold one or two (the
/// open period and, until it leaves for the ledger, the last closed one), so
/// a sorted vector with one boxed finding inline instead of a B-tree, whose
/// node has room for eleven.
#[derive(Default)]
struct Periods(smallvec::SmallVec<[(i64, Box<Finding>); 1]>);

impl Periods {
    fn find(&self, start: i64) -> Result<usize, usize> {
        self.0.binary_search_by_key(&start, |(s, _)| *s)
    }

    fn get(&self, start: &i64) -> Option<&Finding> {
        self.find(*start).ok().map(|i| &*self.0[i].1)
    }

    fn contains_key(&self, start: &i64) -> bool {
        self.find(*start).is_ok()
    }

    fn insert(&mut self, start: i64, f: Box<Finding>) {
        match self.find(start) {
            Ok(i) => self.0[i].1 = f,
            Err(i) => self.0.insert(i, (start, f)),
        }
    }

    fn remove(&mut self, start: &i64) -> Option<Box<Finding>> {
        self.find(*start).ok().map(|i| self.0.remove(i).1)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The findings in period order.
    fn values(&self) -> impl Iterator<Item = &Finding> + '_ {
        self.0.iter().map(|(_, f)| &**f)
    }
}

/// A per-period action that left memory ([`ValueLayer::evict`]): its finding
/// and everything a later status update or correction needs to replay it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ColdAction {
    pub rule: u32,
    pub group: Group,
    pub finding: Option<Finding>,
    pub row: ActionRow,
    pub rev: i64,
    pub seen: Vec<String>,
    pub outcome: Option<(OutcomeRow, i64)>,
    pub updates: Vec<StatusUpdate>,
}

/// The lifecycle statuses an action has been emitted in (a bit per entry
/// of [`STATUSES`], the last bit for any other).
#[derive(Clone, Copy, Debug, Default)]
struct Seen(u8);

impl Seen {
    fn bit(status: &str) -> u8 {
        let i = STATUSES.iter().position(|s| *s == status).unwrap_or(7);
        1 << i.min(7)
    }

    fn insert(&mut self, status: &str) {
        self.0 |= Seen::bit(status);
    }

    fn contains(&self, status: &str) -> bool {
        self.0 & Seen::bit(status) != 0
    }

    fn of(statuses: &[String]) -> Seen {
        let mut s = Seen::default();
        for x in statuses {
            s.insert(x);
        }
        s
    }

    /// The statuses seen, in [`STATUSES`] order.
    fn statuses(&self) -> Vec<String> {
        STATUSES
            .iter()
            .filter(|s| self.contains(s))
            .map(|s| s.to_string())
            .collect()
    }
}

struct Emitted<R> {
    row: R,
    rev: i64,
}

/// Retention geometry, as plain numbers (see `engine::window::Geometry`).
#[derive(Clone, Copy, Debug)]
pub struct Aging {
    pub size_ms: i64,
    pub period_ms: i64,
    pub retention_ms: i64,
}

impl Aging {
    fn retract_at(&self, end: i64) -> i64 {
        let p = self.period_ms;
        (end + p - 1).div_euclid(p) * p + self.retention_ms
    }
}

/// How many action versions a step collects before it hands them out.
const PART_ACTIONS: usize = 256;

pub struct ValueLayer {
    plan: Arc<Plan>,
    compiled: Compiled,
    aging: Aging,
    now: i64,
    /// Highest window end seen: at end of input, periods up to it are complete.
    data_end: i64,
    findings: HashMap<GroupKey, Periods>,
    sticky: HashSet<(GroupKey, i64)>,
    updates_by_id: HashMap<String, Vec<StatusUpdate>>,
    unmatched: Vec<StatusUpdate>,
    id_group: HashMap<String, GroupKey>,
    group_ids: HashMap<GroupKey, Vec<String>>,
    group_counts: HashMap<GroupKey, (u64, u64)>,
    dead_seq: HashSet<u64>,
    actions: HashMap<String, (Box<Emitted<ActionRow>>, Seen)>,
    outcomes: HashMap<String, Emitted<OutcomeRow>>,
    energy: HashMap<GroupKey, Series>,
    production: HashMap<String, BTreeMap<Interval, isize>>,
    demand: HashMap<String, BTreeMap<i64, DemandInterval>>,
    bills: HashMap<(String, i64), Emitted<BillRow>>,
    touched: HashSet<GroupKey>,
    /// Groups with a finding whose period has not closed yet, by period end.
    closing: BTreeMap<i64, HashSet<GroupKey>>,
    touched_intervals: HashSet<(String, i64)>,
    touched_bills: HashSet<(String, i64)>,
    rejected_total: u64,
    /// Suppression counts of findings that left memory with [`ValueLayer::evict`].
    frozen_counts: (u64, u64),
    /// The last retention bucket [`ValueLayer::evict`] went through.
    evicted_bucket: i64,
    update_seq: u64,
    ended: bool,
    /// Action versions per part of a step (see [`ValueLayer::step`]).
    part_actions: usize,
}

/// Shrinks a hash map that uses under a quarter of its room (and more than
/// a few entries' worth), so it stays within 2-8x its size.
pub(crate) fn shrink_sparse<K: std::hash::Hash + Eq, V, S: std::hash::BuildHasher>(
    map: &mut std::collections::HashMap<K, V, S>,
) {
    if map.capacity() > 64 && map.len() * 4 < map.capacity() {
        map.shrink_to(map.len() * 2);
    }
}

impl ValueLayer {
    pub fn new(plan: Arc<Plan>, aging: Aging) -> ValueLayer {
        ValueLayer {
            compiled: Compiled::new(&plan),
            plan,
            aging,
            now: i64::MIN,
            data_end: i64::MIN,
            findings: HashMap::default(),
            sticky: HashSet::default(),
            updates_by_id: HashMap::default(),
            unmatched: Vec::new(),
            id_group: HashMap::default(),
            group_ids: HashMap::default(),
            group_counts: HashMap::default(),
            dead_seq: HashSet::default(),
            actions: HashMap::default(),
            outcomes: HashMap::default(),
            energy: HashMap::default(),
            production: HashMap::default(),
            demand: HashMap::default(),
            bills: HashMap::default(),
            touched: HashSet::default(),
            closing: BTreeMap::new(),
            touched_intervals: HashSet::default(),
            touched_bills: HashSet::default(),
            rejected_total: 0,
            frozen_counts: (0, 0),
            evicted_bucket: i64::MIN,
            update_seq: 0,
            ended: false,
            part_actions: PART_ACTIONS,
        }
    }

    pub fn counters(&self) -> ValueCounters {
        let (m, c) = self
            .group_counts
            .values()
            .fold(self.frozen_counts, |(a, b), (x, y)| (a + x, b + y));
        ValueCounters {
            suppressed_maintenance: m,
            suppressed_cooldown: c,
            rejected_updates: self.rejected_total,
        }
    }

    fn bill_period(&self, ms: i64) -> (i64, i64) {
        let cal = &self.plan.calendar;
        match self.plan.billing.as_ref().map(|b| b.period) {
            Some(BillPeriod::Day) => (cal.day_start(ms), cal.next_start(ms, false)),
            _ => (cal.month_start(ms), cal.next_start(ms, true)),
        }
    }

    fn bucket(&self, v: &VerifyPlan, ms: i64) -> (i64, i64) {
        let cal = &self.plan.calendar;
        match v.granularity {
            Granularity::Hour => {
                let s = ms.div_euclid(3_600_000) * 3_600_000;
                (s, s + 3_600_000)
            }
            Granularity::Day => (cal.day_start(ms), cal.next_start(ms, false)),
            Granularity::Week => {
                use chrono::Datelike;
                let day = cal.day_start(ms);
                let wd = chrono::DateTime::from_timestamp_millis(ms)
                    .map(|d| d.with_timezone(&cal.tz).weekday().num_days_from_monday())
                    .unwrap_or(0) as i64;
                let start = cal.day_start(day - wd * 86_400_000 + 12 * 3_600_000);
                let end = cal.day_start(start + 7 * 86_400_000 + 12 * 3_600_000);
                (start, end)
            }
        }
    }

    /// Applies one update of a complete time `t` (epoch ms of the watermark).
    pub fn apply(&mut self, item: ValueIn, t: i64, diff: isize) {
        match item {
            ValueIn::Finding(f) => {
                if diff < 0 && t >= self.aging.retract_at(f.period_end) {
                    return; // aged out of the arrangements, not corrected: keep it
                }
                let key = (f.rule, f.group.clone());
                self.closing
                    .entry(f.period_end)
                    .or_default()
                    .insert(key.clone());
                // A window rule's finding counts once its period has closed, and
                // `closing` touches the group then (or at the next step, for a
                // correction of a closed period): partial findings of an open
                // period do not replay the group every window.
                let live = self
                    .plan
                    .rules
                    .get(f.rule as usize)
                    .is_some_and(|r| r.kind == RuleKind::DemandPeak);
                let touch = live || self.ended || f.period_end <= self.now;
                let map = self.findings.entry(key.clone()).or_default();
                if diff > 0 {
                    map.insert(f.period_start, Box::new(f));
                } else if map.get(&f.period_start) == Some(&f) {
                    map.remove(&f.period_start);
                }
                if touch {
                    self.touched.insert(key);
                }
            }
            ValueIn::Energy {
                series,
                group,
                line,
                window_start,
                window_end,
                kwh,
                price,
            } => {
                if diff < 0 && t >= self.aging.retract_at(window_end) {
                    return;
                }
                self.data_end = self.data_end.max(window_end);
                let d = diff as f64;
                let (kwh, price) = (kwh.0, price.0);
                if !kwh.is_finite() {
                    return;
                }
                if series == 0 {
                    let Some(b) = &self.plan.billing else { return };
                    let iv = window_start.div_euclid(b.interval_ms) * b.interval_ms;
                    let site = group.first().map(|s| s.to_string()).unwrap_or_default();
                    let acc = self
                        .demand
                        .entry(site.clone())
                        .or_default()
                        .entry(iv)
                        .or_default();
                    acc.kwh += d * kwh;
                    acc.cost += d * kwh * price;
                    acc.windows += diff as i64;
                    let e = acc.by_price.entry(F64(price)).or_default();
                    e.0 += d * kwh;
                    e.1 += d * kwh * price;
                    if window_start > acc.last_ws {
                        acc.last_ws = window_start;
                        acc.last_kwh = 0.0;
                    }
                    if window_start == acc.last_ws {
                        acc.last_kwh += d * kwh;
                    }
                    let (ps, _) = self.bill_period(iv);
                    self.touched_intervals.insert((site.clone(), iv));
                    self.touched_bills.insert((site, ps));
                } else {
                    let ri = series as usize - 1;
                    let Some(v) = self.plan.rules.get(ri).and_then(|r| r.verify.clone()) else {
                        return;
                    };
                    let (bs, _) = self.bucket(&v, window_start);
                    let key: GroupKey = (ri as u32, group);
                    let s = self.energy.entry(key.clone()).or_default();
                    if s.line.is_empty() {
                        s.line = line;
                    }
                    let b = s.buckets.entry(bs).or_default();
                    b.kwh += d * kwh;
                    b.cost += d * kwh * price;
                    b.windows += diff as i64;
                }
            }
            ValueIn::Production(iv) => {
                let m = self.production.entry(iv.key.to_string()).or_default();
                let c = m.entry(iv).or_default();
                *c += diff;
                m.retain(|_, c| *c != 0);
                // Drivers changed: verified groups recompute on the next step.
                let groups: Vec<GroupKey> = self.group_ids.keys().cloned().collect();
                self.touched.extend(groups);
            }
            ValueIn::Status(mut u) => {
                if diff <= 0 {
                    return;
                }
                self.update_seq += 1;
                if u.seq == 0 {
                    u.seq = self.update_seq;
                }
                self.unmatched.push(u);
            }
        }
    }

    /// Hands status updates to the groups that own their action ids.
    fn route_updates(&mut self) {
        let mut still = Vec::new();
        for u in std::mem::take(&mut self.unmatched) {
            if let Some(g) = self.id_group.get(&u.action_id) {
                self.touched.insert(g.clone());
                self.updates_by_id
                    .entry(u.action_id.clone())
                    .or_default()
                    .push(u);
            } else {
                still.push(u);
            }
        }
        self.unmatched = still;
    }

    /// Production units of `line` attributed to `[b0, b1)`, pro rata by run overlap.
    fn units(&self, line: &str, b0: i64, b1: i64) -> f64 {
        let Some(runs) = self.production.get(line) else {
            return 0.0;
        };
        runs.iter()
            .map(|(iv, c)| {
                let u = iv.units.map(|u| u.0).unwrap_or(0.0);
                let len = (iv.end_ms - iv.start_ms) as f64;
                let ov = (iv.end_ms.min(b1) - iv.start_ms.max(b0)).max(0) as f64;
                if len > 0.0 {
                    u * ov / len * *c as f64
                } else {
                    0.0
                }
            })
            .sum()
    }

    /// Processes everything up to the watermark `now` (or the end of input).
    /// Steps to `now`; returns the step's new row versions. A step that
    /// replays many groups (an hourly close opening hundreds of actions)
    /// hands its actions to `part` every 256 versions as it goes, so the
    /// first are published while the rest replay; the order of all versions
    /// is the same as in one batch.
    pub fn step(&mut self, now: i64, end: bool, part: &mut dyn FnMut(ValueOut)) -> ValueOut {
        let mut out = ValueOut::default();
        self.now = if end { now.max(self.data_end) } else { now };
        // Periods that closed: their findings are final (until corrected).
        self.ended |= end;
        let later = if end {
            BTreeMap::new()
        } else {
            self.closing.split_off(&(self.now.saturating_add(1)))
        };
        for (_, groups) in std::mem::replace(&mut self.closing, later) {
            self.touched.extend(groups);
        }
        self.demand_rules();
        self.billing(&mut out, end);
        self.route_updates();
        // Verifications in progress need a recompute as time passes.
        for (id, (e, _)) in &self.actions {
            if e.row.status == "done" {
                if let Some(g) = self.id_group.get(id) {
                    self.touched.insert(g.clone());
                }
            }
        }
        for _round in 0..2 {
            let groups: Vec<GroupKey> = self.touched.drain().collect();
            for g in groups {
                self.replay(&g, &mut out);
                if out.actions.len() >= self.part_actions {
                    part(std::mem::take(&mut out));
                }
            }
            // A replay may have created the id an unmatched update names.
            self.route_updates();
            if self.touched.is_empty() {
                break;
            }
        }
        // Updates for actions that never existed.
        let horizon = self.now.saturating_sub(self.plan.window.retention_ms);
        let mut still = Vec::new();
        for u in std::mem::take(&mut self.unmatched) {
            if end || u.at <= horizon {
                self.rejected_total += 1;
                out.dead_letters.push(DeadLetter::text(
                    "lifecycle",
                    format!("unknown action `{}`", u.action_id),
                    u.raw.clone(),
                ));
            } else {
                still.push(u);
            }
        }
        self.unmatched = still;
        self.prune();
        out
    }

    fn replay(&mut self, g: &GroupKey, out: &mut ValueOut) {
        let plan = self.plan.clone();
        let rule = &plan.rules[g.0 as usize];
        // A window rule's finding counts once its period has closed; a demand
        // projection counts at once (it is an early warning).
        // At the end of input every open period closes, as windows do.
        let live = rule.kind == RuleKind::DemandPeak || self.ended;
        let now = self.now;
        let findings = self.findings.get(g).into_iter().flat_map(|m| m.values());
        let r = replay_group(
            &self.plan.name,
            (rule, &plan.routing),
            &g.1,
            findings.filter(|f| live || f.period_end <= now),
            &self.updates_by_id,
        );
        let counts = (r.suppressed_maintenance, r.suppressed_cooldown);
        // Only groups with suppressed findings keep an entry.
        match self.group_counts.get_mut(g) {
            Some(_) if counts == (0, 0) => {
                self.group_counts.remove(g);
            }
            Some(c) => *c = counts,
            None if counts == (0, 0) => {}
            None => {
                self.group_counts.insert(g.clone(), counts);
            }
        }
        for (u, reason) in r.rejected {
            if self.dead_seq.insert(u.seq) {
                self.rejected_total += 1;
                out.dead_letters
                    .push(DeadLetter::text("lifecycle", reason, u.raw.clone()));
            }
        }
        let mut ids = Vec::new();
        for mut a in r.actions {
            if let (Some(v), Some(done_at)) = (rule.verify.clone(), a.done_at) {
                let o = self.outcome(&v, &a, g, done_at);
                if o.is_final && a.row.status == "done" {
                    let status = if o.verdict == "verified" {
                        "verified"
                    } else {
                        "not_verified"
                    };
                    a.row.status = status.to_string();
                    a.row.status_at = o.reporting_end;
                    a.row.status_by = "plantflow".into();
                    a.row.status_note = format!("{}: {}", o.verdict, o.reason);
                    a.transitions.push((status.to_string(), a.row.clone()));
                }
                let changed = self.outcomes.get(&o.action_id).is_none_or(|e| {
                    let mut old = e.row.clone();
                    old.computed_at = o.computed_at;
                    old != o
                });
                if changed {
                    let rev = self.outcomes.get(&o.action_id).map_or(0, |e| e.rev + 1);
                    out.outcomes.push((o.clone(), rev));
                    self.outcomes
                        .insert(o.action_id.clone(), Emitted { row: o, rev });
                }
            }
            ids.push(a.row.action_id.clone());
            if !self.id_group.contains_key(&a.row.action_id) {
                self.id_group.insert(a.row.action_id.clone(), g.clone());
            }
            self.emit_action(a, out);
        }
        // Actions whose findings were all corrected away.
        let previous = self.group_ids.remove(g).unwrap_or_default();
        for old in previous {
            if ids.contains(&old) {
                continue;
            }
            if let Some((e, seen)) = self.actions.get_mut(&old) {
                if e.row.status != "withdrawn" {
                    let mut w = e.row.clone();
                    w.status = "withdrawn".into();
                    w.status_at = self.now;
                    w.status_by = "plantflow".into();
                    w.status_note = "the findings behind it were corrected away".into();
                    e.rev += 1;
                    let prev = std::mem::replace(&mut e.row, w.clone());
                    seen.insert("withdrawn");
                    out.action(Some(&prev), w, e.rev);
                }
            }
        }
        self.group_ids.insert(g.clone(), ids);
    }

    fn emit_action(&mut self, a: ReplayedAction, out: &mut ValueOut) {
        let ReplayedAction {
            row, transitions, ..
        } = a;
        let mut transitions = transitions.into_iter();
        if !self.actions.contains_key(&row.action_id) {
            // A new action: its first version is its first transition.
            let first = transitions
                .next()
                .map(|t| t.1)
                .unwrap_or_else(|| row.clone());
            let mut seen = Seen::default();
            seen.insert(&first.status);
            out.action(None, first.clone(), 0);
            self.actions.insert(
                row.action_id.clone(),
                (Box::new(Emitted { row: first, rev: 0 }), seen),
            );
        }
        let Some((e, seen)) = self.actions.get_mut(&row.action_id) else {
            return;
        };
        for (status, snap) in transitions {
            if !seen.contains(&status) {
                e.rev += 1;
                let prev = std::mem::replace(&mut e.row, snap.clone());
                out.action(Some(&prev), snap, e.rev);
                seen.insert(&status);
            }
        }
        if e.row != row {
            seen.insert(&row.status);
            e.rev += 1;
            let prev = std::mem::replace(&mut e.row, row.clone());
            out.action(Some(&prev), row, e.rev);
        }
    }

    fn outcome(
        &self,
        v: &VerifyPlan,
        a: &ReplayedAction,
        g: &GroupKey,
        done_at: i64,
    ) -> OutcomeRow {
        let gran_half = match v.granularity {
            Granularity::Hour => 1_800_000,
            Granularity::Day => 12 * 3_600_000,
            Granularity::Week => 84 * 3_600_000,
        };
        let baseline_end = self.bucket(v, a.opened_period).0;
        let baseline_start = self.bucket(v, baseline_end - v.baseline_ms + gran_half).0;
        let (ds, de) = self.bucket(v, done_at);
        let reporting_start = if ds == done_at { ds } else { de };
        let reporting_end = self
            .bucket(v, reporting_start + v.reporting_ms + gran_half)
            .0;
        let series = self.energy.get(g);
        let line = series
            .map(|s| s.line.clone())
            .unwrap_or_else(|| a.line.clone());
        let point = |b0: i64, b: &Bucket| {
            let b1 = self.bucket(v, b0).1;
            (
                b0,
                b1,
                mv::Point {
                    x: if v.units_driver {
                        self.units(&line, b0, b1)
                    } else {
                        0.0
                    },
                    kwh: b.kwh,
                    cost: b.cost,
                },
            )
        };
        let (mut base_b, mut rep_b) = (Vec::new(), Vec::new());
        if let Some(s) = series {
            for (b0, b) in s.buckets.range(baseline_start..baseline_end) {
                if b.windows > 0 {
                    base_b.push(point(*b0, b));
                }
            }
            for (b0, b) in s.buckets.range(reporting_start..reporting_end) {
                if b.windows > 0 && self.bucket(v, *b0).1 <= self.now {
                    rep_b.push(point(*b0, b));
                }
            }
        }
        let base: Vec<mv::Point> = base_b.iter().map(|b| b.2).collect();
        let rep: Vec<mv::Point> = rep_b.iter().map(|b| b.2).collect();
        let is_final = self.now >= reporting_end;
        let mut o = OutcomeRow {
            action_id: a.row.action_id.clone(),
            rule: a.row.rule.clone(),
            site: a.row.site.clone(),
            asset: a.row.asset.clone(),
            baseline_start,
            baseline_end,
            reporting_start,
            reporting_end,
            model: String::new(),
            n_baseline: base.len() as i64,
            n_reporting: rep.len() as i64,
            r2: None,
            cv_rmse: None,
            nmbe: None,
            baseline_kwh: None,
            actual_kwh: rep.iter().map(|p| p.kwh).sum(),
            avoided_kwh: None,
            avoided_cost: None,
            fractional_savings: None,
            fsu_68: None,
            fsu_90: None,
            verdict: "pending".into(),
            reason: String::new(),
            is_final,
            computed_at: self.now,
            buckets: Vec::new(),
        };
        match mv::fit(&base, v.units_driver) {
            Err(why) => {
                o.reason = why;
                if is_final {
                    o.verdict = "insufficient_data".into();
                }
            }
            Ok(fit) => {
                o.model = fit.model();
                if is_final {
                    let period = |name: &'static str, pts: &[(i64, i64, mv::Point)]| {
                        pts.iter()
                            .map(|(b0, b1, p)| OutcomeBucket {
                                bucket_start: *b0,
                                bucket_end: *b1,
                                period: name,
                                units: p.x,
                                measured_kwh: p.kwh,
                                predicted_kwh: fit.predict(p.x),
                                cost: p.cost,
                            })
                            .collect::<Vec<_>>()
                    };
                    o.buckets = period("baseline", &base_b);
                    o.buckets.extend(period("reporting", &rep_b));
                }
                o.r2 = Some(fit.r2);
                o.cv_rmse = Some(fit.cv_rmse);
                o.nmbe = Some(fit.nmbe);
                if rep.is_empty() {
                    o.reason = "no complete reporting period yet".into();
                    if is_final {
                        o.verdict = "insufficient_data".into();
                        o.reason = "no reporting data".into();
                    }
                } else {
                    let s = mv::savings(&fit, &rep);
                    o.baseline_kwh = Some(s.adjusted_baseline_kwh);
                    o.avoided_kwh = Some(s.avoided_kwh);
                    o.avoided_cost = Some(s.avoided_cost);
                    o.fractional_savings = Some(s.fractional);
                    o.fsu_68 = s.fsu68;
                    o.fsu_90 = s.fsu90;
                    let (verdict, why) = mv::verdict(&fit, &s, &v.limits);
                    o.reason = why.join("; ");
                    if is_final {
                        o.verdict = verdict.into();
                    }
                }
            }
        }
        o
    }

    /// Evaluates `demand_peak` rules on the demand intervals touched since the last step.
    fn demand_rules(&mut self) {
        let Some(b) = self.plan.billing.clone() else {
            self.touched_intervals.clear();
            return;
        };
        let rules: Vec<usize> = self
            .plan
            .rules
            .iter()
            .enumerate()
            .filter(|(_, r)| r.kind == RuleKind::DemandPeak)
            .map(|(i, _)| i)
            .collect();
        let touched: Vec<(String, i64)> = self.touched_intervals.drain().collect();
        if rules.is_empty() {
            return;
        }
        let ih = b.interval_ms as f64 / 3_600_000.0;
        let wh = self.plan.window.size_ms as f64 / 3_600_000.0;
        for (site, iv) in touched {
            let Some(map) = self.demand.get(&site) else {
                continue;
            };
            // Only the site's newest interval is projected; older ones are history.
            if map.keys().next_back() != Some(&iv) {
                continue;
            }
            let acc = &map[&iv];
            let (ps, pe) = self.bill_period(iv);
            let billed_kw = map
                .range(ps..pe)
                .filter(|(k, _)| **k != iv)
                .map(|(_, a)| a.kwh / ih)
                .fold(0.0, f64::max);
            if billed_kw <= 0.0 {
                continue; // no peak to approach yet in this billing period
            }
            let remaining_h = ((iv + b.interval_ms) - (acc.last_ws + self.plan.window.size_ms))
                .max(0) as f64
                / 3_600_000.0;
            let p_now = acc.last_kwh / wh;
            let projected_kw = (acc.kwh + p_now * remaining_h) / ih;
            let increase_kw = (projected_kw - billed_kw).max(0.0);
            let previous_kw = map
                .range(..iv)
                .next_back()
                .filter(|(k, _)| **k == iv - b.interval_ms)
                .map(|(_, a)| a.kwh / ih)
                .unwrap_or(0.0);
            let vals = [
                acc.windows as f64,
                acc.kwh,
                previous_kw,
                projected_kw,
                billed_kw,
                increase_kw,
                increase_kw * b.demand_charge_per_kw,
                b.demand_charge_per_kw,
            ];
            for &ri in &rules {
                let Some((value, measures)) = self.compiled.demand(ri, &vals) else {
                    continue;
                };
                let key: GroupKey = (ri as u32, Group::from([SharedName::from(site.as_str())]));
                let f = Finding {
                    rule: ri as u32,
                    group: key.1.clone(),
                    period_start: iv,
                    period_end: iv + b.interval_ms,
                    value: F64(value),
                    windows: acc.windows,
                    in_maintenance: false,
                    measures,
                    site: key.1[0].clone(),
                    line: SharedName::from(""),
                    asset: SharedName::from(""),
                    kind: SharedName::from(""),
                };
                // Sticky: an alert raised on a projection stays, at its highest value.
                let m = self.findings.entry(key.clone()).or_default();
                match m.get(&iv) {
                    Some(old) if old.value >= f.value => {}
                    _ => {
                        m.insert(iv, Box::new(f));
                        self.sticky.insert((key.clone(), iv));
                        self.touched.insert(key);
                    }
                }
            }
        }
    }

    fn billing(&mut self, out: &mut ValueOut, _end: bool) {
        let Some(b) = self.plan.billing.clone() else {
            return;
        };
        // Newly closed periods and corrected ones.
        let keys: Vec<(String, i64)> = self.touched_bills.iter().cloned().collect();
        let ih = b.interval_ms as f64 / 3_600_000.0;
        let mut done = Vec::new();
        for (site, ps) in keys {
            let (_, pe) = self.bill_period(ps);
            if pe > self.now {
                continue; // still open: stays touched
            }
            done.push((site.clone(), ps));
            let Some(map) = self.demand.get(&site) else {
                continue;
            };
            let ivs: Vec<(i64, &DemandInterval)> = map
                .range(ps..pe)
                .map(|(k, v)| (*k, v))
                .filter(|(_, v)| v.windows > 0)
                .collect();
            if ivs.is_empty() {
                continue;
            }
            let energy_kwh: f64 = ivs.iter().map(|(_, v)| v.kwh).sum();
            let energy_cost: f64 = ivs.iter().map(|(_, v)| v.cost).sum();
            let (peak_start, peak) = ivs
                .iter()
                .max_by(|a, b| a.1.kwh.total_cmp(&b.1.kwh).then(b.0.cmp(&a.0)))
                .map(|(k, v)| (*k, *v))
                .expect("non-empty");
            let peak_kw = peak.kwh / ih;
            let others_kw = ivs
                .iter()
                .filter(|(k, _)| *k != peak_start)
                .map(|(_, v)| v.kwh / ih)
                .fold(0.0, f64::max);
            let mut kwhs: Vec<f64> = ivs.iter().map(|(_, v)| v.kwh).collect();
            kwhs.sort_by(f64::total_cmp);
            let typical = if kwhs.len() % 2 == 1 {
                kwhs[kwhs.len() / 2]
            } else {
                (kwhs[kwhs.len() / 2 - 1] + kwhs[kwhs.len() / 2]) / 2.0
            };
            let new_peak_kw = others_kw.max(typical / ih).min(peak_kw);
            let shave_kw = peak_kw - new_peak_kw;
            let peak_price = if peak.kwh > 0.0 {
                peak.cost / peak.kwh
            } else {
                0.0
            };
            let shave_value =
                shave_kw * b.demand_charge_per_kw + (peak.kwh - typical).max(0.0) * peak_price;
            let mut by_price: BTreeMap<F64, (f64, f64)> = BTreeMap::new();
            for (_, v) in &ivs {
                for (p, (k, c)) in &v.by_price {
                    let e = by_price.entry(*p).or_default();
                    e.0 += k;
                    e.1 += c;
                }
            }
            let by_price: serde_json::Map<String, serde_json::Value> = by_price
                .into_iter()
                .filter(|(_, (k, _))| k.abs() > 1e-12)
                .map(|(p, (k, c))| (format!("{}", p.0), serde_json::json!({"kwh": k, "cost": c})))
                .collect();
            let demand_cost = peak_kw * b.demand_charge_per_kw;
            let row = BillRow {
                site: site.clone(),
                period_start: ps,
                period_end: pe,
                energy_kwh,
                energy_cost,
                peak_kw,
                peak_interval_start: peak_start,
                demand_cost,
                total_cost: energy_cost + demand_cost,
                peak_shave_kw: shave_kw,
                peak_shave_value: shave_value,
                intervals: ivs.len() as i64,
                energy_by_price: serde_json::Value::Object(by_price).to_string(),
                is_final: true,
            };
            let key = (site, ps);
            let changed = self.bills.get(&key).is_none_or(|e| e.row != row);
            if changed {
                let rev = self.bills.get(&key).map_or(0, |e| e.rev + 1);
                out.bills.push((row.clone(), rev));
                self.bills.insert(key, Emitted { row, rev });
            }
        }
        for k in done {
            self.touched_bills.remove(&k);
        }
    }

    /// Whether `id` is an action this layer holds in memory.
    pub fn knows(&self, id: &str) -> bool {
        self.id_group.contains_key(id)
    }

    /// The id of the action an update at time `t` needs back from the cold
    /// store ([`ValueLayer::evict`]) before [`ValueLayer::apply`] can take
    /// it, if it may be there: a status update for an action this layer does
    /// not hold, or a correction of a closed period's finding of a
    /// `one_per = "period"` rule that it does not hold (not the retraction
    /// that only means "aged out").
    pub fn wants_back(&self, item: &ValueIn, t: i64, diff: isize) -> Option<String> {
        match item {
            ValueIn::Status(u) if diff > 0 && !self.knows(&u.action_id) => {
                Some(u.action_id.clone())
            }
            ValueIn::Finding(f) => {
                let rule = self.plan.rules.get(f.rule as usize)?;
                let aged = diff < 0 && t >= self.aging.retract_at(f.period_end);
                if rule.one_per_group || f.period_end > self.now || aged {
                    return None;
                }
                let held = self
                    .findings
                    .get(&(f.rule, f.group.clone()))
                    .is_some_and(|m| m.contains_key(&f.period_start));
                let id = action_id(&self.plan.name, &rule.id, &f.group, f.period_start);
                (!held && !self.knows(&id)).then_some(id)
            }
            _ => None,
        }
    }

    /// Takes out of memory, for a cold store to keep, the actions of
    /// `one_per = "period"` rules whose period has closed (each such action
    /// depends only on its own finding and status updates, and it has been
    /// emitted) and that are not verifying (`done` under a rule with
    /// `verify`: the verification needs the energy series). Findings
    /// suppressed by maintenance leave with only their count, once final (no
    /// correction can reach them). Runs once per period of event time; the
    /// engine hands a [`ColdAction`] back with [`ValueLayer::restore`] before
    /// an update that [`ValueLayer::wants_back`] it: a status update naming
    /// it, or a correction of its finding.
    ///
    /// Without this, a per-period rule's findings and actions stay in memory
    /// for the life of the process, and each replay of a group goes through
    /// all of its history.
    pub fn evict(&mut self) -> Vec<ColdAction> {
        if self.ended {
            return Vec::new();
        }
        let bucket = self.now.div_euclid(self.aging.period_ms.max(1));
        if bucket <= self.evicted_bucket {
            return Vec::new();
        }
        self.evicted_bucket = bucket;
        let plan = self.plan.clone();
        let (now, aging) = (self.now, self.aging);
        let is_final = |end: i64| now >= aging.retract_at(end);
        let per_period = |g: &GroupKey| {
            plan.rules
                .get(g.0 as usize)
                .is_some_and(|r| !r.one_per_group)
        };
        let mut groups: Vec<GroupKey> = self
            .findings
            .keys()
            .filter(|g| per_period(g))
            .cloned()
            .collect();
        groups.extend(
            self.group_ids
                .keys()
                .filter(|g| per_period(g) && !self.findings.contains_key(*g))
                .cloned(),
        );
        let mut out = Vec::new();
        for g in groups {
            let rule = &plan.rules[g.0 as usize];
            // Closed periods: their actions have been replayed and emitted.
            let periods: Vec<i64> = self
                .findings
                .get(&g)
                .into_iter()
                .flat_map(|m| m.values())
                .filter(|f| f.period_end <= now)
                .map(|f| f.period_start)
                .collect();
            let ids = self.group_ids.get(&g).cloned().unwrap_or_default();
            let mut gone: HashSet<String> = HashSet::default();
            for p in periods {
                let id = action_id(&plan.name, &rule.id, &g.1, p);
                let held = ids.contains(&id);
                let verifying = |(e, _): &(Box<Emitted<ActionRow>>, Seen)| {
                    e.row.status == "done" && rule.verify.is_some()
                };
                if held && self.actions.get(&id).is_none_or(verifying) {
                    continue;
                }
                // A finding without an action (suppressed by maintenance)
                // leaves as a count, so only once no correction can reach it.
                let end = self.findings.get(&g).and_then(|m| m.get(&p));
                if !held && !end.is_some_and(|f| is_final(f.period_end)) {
                    continue;
                }
                let Some(f) = self.findings.get_mut(&g).and_then(|m| m.remove(&p)) else {
                    continue;
                };
                self.sticky.remove(&(g.clone(), p));
                if f.in_maintenance {
                    if let Some(c) = self.group_counts.get_mut(&g) {
                        c.0 = c.0.saturating_sub(1);
                        self.frozen_counts.0 += 1;
                    }
                }
                if held {
                    out.extend(self.take_cold(&g, &id, Some(*f)));
                    gone.insert(id);
                }
            }
            // Withdrawn actions of final periods (their findings were corrected away).
            for id in &ids {
                let withdrawn = self.actions.get(id).is_some_and(|(e, _)| {
                    e.row.status == "withdrawn" && is_final(e.row.period_end)
                });
                if withdrawn && !gone.contains(id) {
                    out.extend(self.take_cold(&g, id, None));
                    gone.insert(id.clone());
                }
            }
            if !gone.is_empty() {
                if let Some(v) = self.group_ids.get_mut(&g) {
                    v.retain(|i| !gone.contains(i));
                    if v.is_empty() {
                        self.group_ids.remove(&g);
                    }
                }
            }
            if self.findings.get(&g).is_some_and(|m| m.is_empty()) {
                self.findings.remove(&g);
            }
            if !self.findings.contains_key(&g) && !self.group_ids.contains_key(&g) {
                if let Some((m, c)) = self.group_counts.remove(&g) {
                    self.frozen_counts.0 += m;
                    self.frozen_counts.1 += c;
                }
            }
        }
        // Hash tables keep the room of their fullest moment (a replay's
        // catch-up, a burst of actions); give it back once they are sparse.
        shrink_sparse(&mut self.findings);
        shrink_sparse(&mut self.actions);
        shrink_sparse(&mut self.id_group);
        shrink_sparse(&mut self.group_ids);
        shrink_sparse(&mut self.group_counts);
        shrink_sparse(&mut self.outcomes);
        shrink_sparse(&mut self.updates_by_id);
        out
    }

    fn take_cold(
        &mut self,
        g: &GroupKey,
        id: &str,
        finding: Option<Finding>,
    ) -> Option<ColdAction> {
        let (e, seen) = self.actions.remove(id)?;
        self.id_group.remove(id);
        let seen = seen.statuses();
        Some(ColdAction {
            rule: g.0,
            group: g.1.clone(),
            finding,
            row: e.row,
            rev: e.rev,
            seen,
            outcome: self.outcomes.remove(id).map(|o| (o.row, o.rev)),
            updates: self.updates_by_id.remove(id).unwrap_or_default(),
        })
    }

    /// Puts an evicted action back, as it was when it left.
    pub fn restore(&mut self, c: ColdAction) {
        let g: GroupKey = (c.rule, c.group);
        let id = c.row.action_id.clone();
        if let Some(f) = c.finding {
            if f.in_maintenance {
                self.frozen_counts.0 = self.frozen_counts.0.saturating_sub(1);
                self.group_counts.entry(g.clone()).or_default().0 += 1;
            }
            self.findings
                .entry(g.clone())
                .or_default()
                .insert(f.period_start, Box::new(f));
        }
        let ids = self.group_ids.entry(g.clone()).or_default();
        if !ids.contains(&id) {
            ids.push(id.clone());
        }
        self.id_group.insert(id.clone(), g);
        if let Some((row, rev)) = c.outcome {
            self.outcomes.insert(id.clone(), Emitted { row, rev });
        }
        if !c.updates.is_empty() {
            self.updates_by_id.insert(id.clone(), c.updates);
        }
        self.actions.insert(
            id,
            (
                Box::new(Emitted {
                    row: c.row,
                    rev: c.rev,
                }),
                Seen::of(&c.seen),
            ),
        );
    }

    /// Drops state no output can need any more.
    fn prune(&mut self) {
        // Energy buckets older than every baseline that an unfinished action could use.
        let horizon = self.now;
        for (g, s) in self.energy.iter_mut() {
            let Some(v) = self
                .plan
                .rules
                .get(g.0 as usize)
                .and_then(|r| r.verify.as_ref())
            else {
                continue;
            };
            let mut keep_from =
                horizon.saturating_sub(v.baseline_ms + v.reporting_ms + 7 * 86_400_000);
            for id in self.group_ids.get(g).into_iter().flatten() {
                if let Some((e, _)) = self.actions.get(id) {
                    if matches!(e.row.status.as_str(), "open" | "acknowledged" | "done") {
                        keep_from =
                            keep_from.min(e.row.period_start - v.baseline_ms - 7 * 86_400_000);
                    }
                }
            }
            s.buckets = s.buckets.split_off(&keep_from);
        }
        // Demand intervals of billing periods closed for longer than the retention.
        if self.plan.billing.is_some() {
            let limit = self.now.saturating_sub(self.plan.window.retention_ms);
            let cut: Vec<(String, i64)> = self
                .demand
                .iter()
                .filter_map(|(site, m)| m.keys().next().map(|k| (site.clone(), *k)))
                .collect();
            for (site, first) in cut {
                let (_, pe) = self.bill_period(first);
                if pe < limit {
                    if let Some(m) = self.demand.get_mut(&site) {
                        *m = m.split_off(&pe);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer() -> ValueLayer {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let fixture = root.join("tests/fixtures/workload_v1_small");
        let out = tempfile::tempdir().unwrap();
        let env = |k: &str| match k {
            "INPUT_DIR" => Some(fixture.display().to_string()),
            "OUT_DIR" => Some(out.path().display().to_string()),
            _ => None,
        };
        let plan = crate::config::load_with_env(&root.join("dataflows/workload_v1.toml"), &env)
            .expect("workload_v1 loads");
        let aging = Aging {
            size_ms: 60_000,
            period_ms: 3_600_000,
            retention_ms: 7_200_000,
        };
        ValueLayer::new(Arc::new(plan), aging)
    }

    /// 600 assets with waste in the hour [0, 1 h): one action each when it closes.
    fn feed(l: &mut ValueLayer) {
        for i in 0..600 {
            let asset: SharedName = format!("m{i}").into();
            let f = Finding {
                rule: 0,
                group: vec!["s".into(), "l".into(), asset.clone()].into(),
                period_start: 0,
                period_end: 3_600_000,
                value: F64(1.0 + i as f64),
                windows: 60,
                in_maintenance: false,
                measures: format!("{{\"waste_kwh\": {}}}", 5.0 + i as f64),
                site: "s".into(),
                line: "l".into(),
                asset,
                kind: "compressor".into(),
            };
            l.apply(ValueIn::Finding(f), 3_600_000, 1);
        }
    }

    #[test]
    fn a_step_hands_out_its_actions_in_parts_in_one_batchs_order() {
        let mut whole = layer();
        whole.part_actions = usize::MAX;
        feed(&mut whole);
        let mut no_parts = 0;
        let one = whole.step(3_600_000, false, &mut |_| no_parts += 1);
        assert_eq!(no_parts, 0);
        assert_eq!(one.actions.len(), 600);

        let mut parted = layer();
        feed(&mut parted);
        let mut parts = Vec::new();
        let last = parted.step(3_600_000, false, &mut |p| parts.push(p));
        let sizes: Vec<usize> = parts.iter().map(|p| p.actions.len()).collect();
        assert_eq!(sizes, [256, 256], "two full parts");
        assert_eq!(last.actions.len(), 600 - 512);
        let joined: Vec<(ActionRow, i64)> = parts
            .into_iter()
            .flat_map(|p| p.actions)
            .chain(last.actions)
            .collect();
        assert_eq!(joined, one.actions);
        // Nothing new at the next step, parted or not.
        assert!(parted
            .step(3_660_000, false, &mut |_| panic!("a part"))
            .is_empty());
    }

    const H: i64 = 3_600_000;

    fn finding(asset: &str, hour: i64, value: f64, maint: bool) -> Finding {
        Finding {
            rule: 0,
            group: vec!["s".into(), "l".into(), asset.into()].into(),
            period_start: hour * H,
            period_end: (hour + 1) * H,
            value: F64(value),
            windows: 60,
            in_maintenance: maint,
            measures: format!("{{\"waste_kwh\": {value}}}"),
            site: "s".into(),
            line: "l".into(),
            asset: asset.into(),
            kind: "compressor".into(),
        }
    }

    fn ack(id: &str, status: &str, at: i64, seq: u64) -> StatusUpdate {
        StatusUpdate {
            action_id: id.into(),
            status: status.into(),
            at,
            by: "op".into(),
            note: String::new(),
            seq,
            raw: String::new(),
        }
    }

    /// Feeds both layers the same input, restoring what `cold` evicted
    /// (through JSON, as the ledger stores it) when an update names it, and
    /// steps both; returns both outputs' action versions.
    #[allow(clippy::type_complexity)]
    fn both(
        kept: &mut ValueLayer,
        cold: &mut ValueLayer,
        ledger: &mut Vec<String>,
        t: i64,
        input: Vec<(ValueIn, isize)>,
    ) -> (Vec<(ActionRow, i64)>, Vec<(ActionRow, i64)>) {
        for (d, r) in &input {
            if let Some(id) = cold.wants_back(d, t, *r) {
                let pos = ledger.iter().position(|j| {
                    serde_json::from_str::<ColdAction>(j).unwrap().row.action_id == id
                });
                if let Some(pos) = pos {
                    cold.restore(serde_json::from_str(&ledger.remove(pos)).unwrap());
                }
            }
            kept.apply(d.clone(), t, *r);
            cold.apply(d.clone(), t, *r);
        }
        let a = kept.step(t - 1, false, &mut |_| panic!("no parts"));
        let b = cold.step(t - 1, false, &mut |_| panic!("no parts"));
        for c in cold.evict() {
            ledger.push(serde_json::to_string(&c).unwrap());
        }
        assert_eq!(kept.counters(), cold.counters(), "counters at {t}");
        (a.actions, b.actions)
    }

    #[test]
    fn evicted_actions_come_back_for_updates_and_corrections_with_the_same_results() {
        let (mut kept, mut cold, mut ledger) = (layer(), layer(), Vec::new());
        let name = kept.plan.name.clone();
        let rule = kept.plan.rules[0].id.clone();
        let group = |a: &str| -> Vec<SharedName> { vec!["s".into(), "l".into(), a.into()] };
        let id = |a: &str, h: i64| action_id(&name, &rule, &group(a), h * H);
        // Hours 0..8: m1 wastes every hour; m2 at hours 0 and 5, in
        // maintenance at hour 1 (suppressed, counted).
        for h in 0..8 {
            let mut input = vec![(ValueIn::Finding(finding("m1", h, 2.0 + h as f64, false)), 1)];
            if h == 0 || h == 5 {
                input.push((ValueIn::Finding(finding("m2", h, 7.0, false)), 1));
            }
            if h == 1 {
                input.push((ValueIn::Finding(finding("m2", h, 9.0, true)), 1));
            }
            if h == 2 {
                // m1's hour-0 action, on disk since hour 0 closed, is acknowledged.
                input.push((
                    ValueIn::Status(ack(&id("m1", 0), "acknowledged", 2 * H + 5, 1)),
                    1,
                ));
            }
            let (a, b) = both(&mut kept, &mut cold, &mut ledger, (h + 1) * H + 1, input);
            assert_eq!(a, b, "hour {h}");
            assert!(!cold.knows(&id("m1", h)), "hour {h} left when it closed");
        }
        // Now is 8 h: every closed period's action is on disk (m1's eight,
        // m2's two); the suppressed hour-1 finding left as a count once final.
        assert_eq!(ledger.len(), 10);
        assert!(!cold.knows(&id("m2", 0)) && !cold.knows(&id("m2", 5)));
        assert_eq!(cold.counters().suppressed_maintenance, 1);
        assert!(
            kept.knows(&id("m1", 0)),
            "the reference layer keeps everything"
        );

        // Status updates for actions on disk bring them back: the same new
        // versions as the layer that kept them (acknowledged, then done).
        let t = 8 * H + 1;
        let input = vec![
            (ValueIn::Status(ack(&id("m1", 0), "done", 8 * H - 10, 2)), 1),
            (
                ValueIn::Status(ack(&id("m2", 0), "rejected", 8 * H - 5, 3)),
                1,
            ),
            (ValueIn::Finding(finding("m1", 8, 3.0, false)), 1),
        ];
        let (a, b) = both(&mut kept, &mut cold, &mut ledger, t + H, input);
        assert_eq!(a, b);
        let statuses: Vec<(&str, &str, i64)> = b
            .iter()
            .map(|(r, rev)| (r.action_id.as_str(), r.status.as_str(), *rev))
            .collect();
        let (m1, m2, new) = (id("m1", 0), id("m2", 0), id("m1", 8));
        assert!(statuses.contains(&(m1.as_str(), "done", 2)), "{statuses:?}");
        assert!(
            statuses.contains(&(m2.as_str(), "rejected", 1)),
            "{statuses:?}"
        );
        assert!(
            statuses.contains(&(new.as_str(), "open", 0)),
            "{statuses:?}"
        );
        assert_eq!(
            b.len(),
            3,
            "nothing else: no withdrawn versions of evicted actions"
        );

        // A late row corrects m1's hour 7 (closed, on disk, not yet final):
        // the correction brings it back and revises it, as in the layer that
        // kept it.
        let m7 = id("m1", 7);
        assert!(!cold.knows(&m7));
        let input = vec![
            (ValueIn::Finding(finding("m1", 7, 9.0, false)), -1),
            (ValueIn::Finding(finding("m1", 7, 20.0, false)), 1),
        ];
        let (a, b) = both(&mut kept, &mut cold, &mut ledger, 9 * H + 60_001, input);
        assert_eq!(a, b);
        assert_eq!(b.len(), 1);
        assert_eq!((b[0].0.action_id.as_str(), b[0].1), (m7.as_str(), 1));
        assert_eq!(b[0].0.value, F64(20.0));
        // The retraction that only means "aged out" fetches nothing.
        let aged = ValueIn::Finding(finding("m1", 8, 3.0, false));
        assert_eq!(cold.wants_back(&aged, 11 * H + 1, -1), None);
        // The next period's pass takes them all out again.
        let (a, b) = both(&mut kept, &mut cold, &mut ledger, 10 * H + 1, Vec::new());
        assert_eq!(a, b);
        assert!(!cold.knows(&m1) && !cold.knows(&m2) && !cold.knows(&m7));
    }
}
