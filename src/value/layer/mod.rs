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
use crate::model::{shrink_sparse, Interval};
use crate::model::{
    ActionRow, ActionTotals, BillRow, DeadLetter, Finding, Group, OutcomeBucket, OutcomeRow,
    SharedName, StatusUpdate, F64,
};
use crate::stats::ValueCounters;
use crate::value::lifecycle::{action_id, replay_group, ReplayedAction, STATUSES};
use crate::value::mv;
use crate::value::rules::Compiled;

mod actions;
mod billing;
mod cold;
mod compact;
mod verify;

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

#[derive(Default, Clone, Debug, Serialize, Deserialize)]
struct Bucket {
    kwh: f64,
    cost: f64,
    windows: i64,
}

#[derive(Default, Clone, Debug, Serialize, Deserialize)]
struct Series {
    line: String,
    buckets: BTreeMap<i64, Bucket>,
}

#[derive(Default, Clone, Debug, Serialize, Deserialize)]
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
#[derive(Default, Serialize, Deserialize)]
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
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
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

#[derive(Serialize, Deserialize)]
struct Emitted<R> {
    row: R,
    rev: i64,
}

/// Retention geometry, as plain numbers (see `ingest::Geometry`).
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
    /// Action versions per part of a step (see [`ValueLayer::step`]).
    part_actions: usize,
    /// Everything the layer learnt from its input: what a checkpoint keeps.
    d: Data,
    /// What happens next to actions in the cold store (a checkpoint keeps
    /// it beside the ledger's snapshot).
    cold: ColdIndex,
    /// The last period bucket [`ValueLayer::compact`] went through (not
    /// kept: after a restart the next step compacts again).
    compacted_bucket: i64,
    /// Settled actions of `one_per = "group"` rules that left memory.
    compacted: u64,
}

/// Actions in the cold store by what happens to them next, and when: open
/// ones come back to expire; closed ones are let go once no correction
/// can reach them (nothing can change them any more).
#[derive(Default, Serialize, Deserialize)]
pub struct ColdIndex {
    expire: BTreeMap<i64, Vec<String>>,
    forget: BTreeMap<i64, Vec<String>>,
}

/// The value layer's state (see [`ValueLayer::save`]).
#[derive(Serialize, Deserialize)]
struct Data {
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
    /// Groups with an open action, by when it expires (rebuilt from
    /// `actions` when a checkpoint is loaded; stale entries only replay).
    #[serde(skip)]
    expiring: BTreeMap<i64, HashSet<GroupKey>>,
    touched_intervals: HashSet<(String, i64)>,
    touched_bills: HashSet<(String, i64)>,
    rejected_total: u64,
    /// Suppression counts of findings that left memory with [`ValueLayer::evict`].
    frozen_counts: (u64, u64),
    /// The last retention bucket [`ValueLayer::evict`] went through.
    evicted_bucket: i64,
    update_seq: u64,
    ended: bool,
}

impl ValueLayer {
    pub fn new(plan: Arc<Plan>, aging: Aging) -> ValueLayer {
        ValueLayer {
            compiled: Compiled::new(&plan),
            plan,
            aging,
            part_actions: PART_ACTIONS,
            cold: ColdIndex::default(),
            compacted_bucket: i64::MIN,
            compacted: 0,
            d: Data {
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
                expiring: BTreeMap::new(),
                touched_intervals: HashSet::default(),
                touched_bills: HashSet::default(),
                rejected_total: 0,
                frozen_counts: (0, 0),
                evicted_bucket: i64::MIN,
                update_seq: 0,
                ended: false,
            },
        }
    }

    /// The layer's state for a checkpoint, encoded.
    pub fn save(&self) -> Result<Vec<u8>, String> {
        postcard::to_allocvec(&self.d).map_err(|e| e.to_string())
    }

    /// Starts from [`ValueLayer::save`]'s bytes.
    pub fn load(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.d = postcard::from_bytes(bytes).map_err(|e| e.to_string())?;
        let open: Vec<(GroupKey, ActionRow)> = self
            .d
            .actions
            .iter()
            .filter_map(|(id, (e, _))| Some((self.d.id_group.get(id)?.clone(), e.row.clone())))
            .collect();
        for (g, row) in open {
            self.expires(&g, &row);
        }
        Ok(())
    }

    pub fn counters(&self) -> ValueCounters {
        let (m, c) = self
            .d
            .group_counts
            .values()
            .fold(self.d.frozen_counts, |(a, b), (x, y)| (a + x, b + y));
        ValueCounters {
            suppressed_maintenance: m,
            suppressed_cooldown: c,
            rejected_updates: self.d.rejected_total,
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
                self.d
                    .closing
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
                let touch = live || self.d.ended || f.period_end <= self.d.now;
                let map = self.d.findings.entry(key.clone()).or_default();
                if diff > 0 {
                    map.insert(f.period_start, Box::new(f));
                } else if map.get(&f.period_start) == Some(&f) {
                    map.remove(&f.period_start);
                }
                if touch {
                    self.d.touched.insert(key);
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
                self.d.data_end = self.d.data_end.max(window_end);
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
                        .d
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
                    self.d.touched_intervals.insert((site.clone(), iv));
                    self.d.touched_bills.insert((site, ps));
                } else {
                    let ri = series as usize - 1;
                    let Some(v) = self.plan.rules.get(ri).and_then(|r| r.verify.clone()) else {
                        return;
                    };
                    let (bs, _) = self.bucket(&v, window_start);
                    let key: GroupKey = (ri as u32, group);
                    let s = self.d.energy.entry(key.clone()).or_default();
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
                let m = self.d.production.entry(iv.key.to_string()).or_default();
                let c = m.entry(iv).or_default();
                *c += diff;
                m.retain(|_, c| *c != 0);
                // Drivers changed: verified groups recompute on the next step.
                let groups: Vec<GroupKey> = self.d.group_ids.keys().cloned().collect();
                self.d.touched.extend(groups);
            }
            ValueIn::Status(mut u) => {
                if diff <= 0 {
                    return;
                }
                self.d.update_seq += 1;
                if u.seq == 0 {
                    u.seq = self.d.update_seq;
                }
                self.d.unmatched.push(u);
            }
        }
    }

    /// Hands status updates to the groups that own their action ids.
    fn route_updates(&mut self) {
        let mut still = Vec::new();
        for u in std::mem::take(&mut self.d.unmatched) {
            if let Some(g) = self.d.id_group.get(&u.action_id) {
                self.d.touched.insert(g.clone());
                self.d
                    .updates_by_id
                    .entry(u.action_id.clone())
                    .or_default()
                    .push(u);
            } else {
                still.push(u);
            }
        }
        self.d.unmatched = still;
    }

    /// Production units of `line` attributed to `[b0, b1)`, pro rata by run overlap.
    fn units(&self, line: &str, b0: i64, b1: i64) -> f64 {
        let Some(runs) = self.d.production.get(line) else {
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
        self.d.now = if end { now.max(self.d.data_end) } else { now };
        // Periods that closed: their findings are final (until corrected).
        self.d.ended |= end;
        let later = if end {
            BTreeMap::new()
        } else {
            self.d.closing.split_off(&(self.d.now.saturating_add(1)))
        };
        for (_, groups) in std::mem::replace(&mut self.d.closing, later) {
            self.d.touched.extend(groups);
        }
        // Open actions whose time to expire has come.
        let later = self.d.expiring.split_off(&(self.d.now.saturating_add(1)));
        for (_, groups) in std::mem::replace(&mut self.d.expiring, later) {
            self.d.touched.extend(groups);
        }
        self.demand_rules();
        self.billing(&mut out, end);
        self.route_updates();
        // Verifications in progress need a recompute as time passes.
        for (id, (e, _)) in &self.d.actions {
            if e.row.status == "done" {
                if let Some(g) = self.d.id_group.get(id) {
                    self.d.touched.insert(g.clone());
                }
            }
        }
        for _round in 0..2 {
            let groups: Vec<GroupKey> = self.d.touched.drain().collect();
            for g in groups {
                self.replay(&g, &mut out);
                if out.actions.len() >= self.part_actions {
                    part(std::mem::take(&mut out));
                }
            }
            // A replay may have created the id an unmatched update names.
            self.route_updates();
            if self.d.touched.is_empty() {
                break;
            }
        }
        // Updates for actions that never existed.
        let horizon = self.d.now.saturating_sub(self.plan.window.retention_ms);
        let mut still = Vec::new();
        for u in std::mem::take(&mut self.d.unmatched) {
            if end || u.at <= horizon {
                self.d.rejected_total += 1;
                out.dead_letters.push(DeadLetter::text(
                    "lifecycle",
                    format!("unknown action `{}`", u.action_id),
                    u.raw.clone(),
                ));
            } else {
                still.push(u);
            }
        }
        self.d.unmatched = still;
        self.prune();
        self.compact();
        out
    }
}

#[cfg(test)]
mod tests;
