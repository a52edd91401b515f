//! `rules`: findings from enriched windows, one running aggregate per
//! `(rule, group, period)`.
//!
//! Each enriched window update contributes to the groups of the rules whose
//! filter it passes ([`Compiled::contributions`]). The contributions are
//! exchanged by group, so a group lives on one worker, and folded into a
//! [`GroupAcc`] once their time is complete: the operator emits, per changed
//! group, the retraction of the finding it had and the finding it has now
//! (`(old, −1), (new, +1)`), so its output is a collection like the
//! differential `reduce` it replaces, with corrections as updates.
//!
//! Why not `reduce`: a reduce keeps every contribution (one per window and
//! rule, for the whole retention) in its input arrangement and every finding
//! in its output arrangement. A group's aggregate is a handful of numbers, so
//! this operator keeps those and nothing per window: its state is one
//! accumulator per live `(rule, group, period)`, keyed by an interned group
//! id. An accumulator leaves when its last window is retracted (when the
//! windows age out), exactly as the reduce's keys did.
//!
//! A period stays correctable for its retention after it closes (two hours
//! in the reference job), so the accumulators of two or three closed periods
//! per group would sit in memory beside the open one. With `[window]
//! spill_after`, a rule's period goes to a spill [`Store`] once it closed
//! that long ago, in one file per `(rule, period)` and worker; a time whose
//! updates touch a spilled period (a correction, or the windows' expiry)
//! waits, capability held, until the store has read it back. Results are the
//! same as with everything in memory.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::rc::Rc;
use std::sync::atomic::AtomicU64;

use rustc_hash::{FxHashMap, FxHasher};
use smallvec::SmallVec;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::Stream;

use super::checkpoint::{self, Checkpoints};
use super::output::TimeBuffer;
use super::spill::{Records, Reply, SpillPlan, Store};
use crate::model::shrink_sparse;
use crate::model::Interner;
use crate::model::{Finding, Group};
use crate::stats::Stats;
use crate::value::rules::{Compiled, GroupAcc, RuleInput, RuleKey};

/// A window's contribution to a rule's group, as a timely update.
type Contribution = ((RuleKey, RuleInput), u64, isize);

fn key_hash(k: &RuleKey) -> u64 {
    let mut h = FxHasher::default();
    k.hash(&mut h);
    h.finish()
}

/// A rule's period: `(rule, period start)`.
type PeriodKey = (u32, i64);

/// The accumulators of one rule's period by group id, as a spill file holds them.
struct ColdPeriod(Vec<(u32, GroupAcc)>);

impl Records for ColdPeriod {
    type Key = PeriodKey;

    fn file_name((rule, start): PeriodKey) -> String {
        format!("{rule}-{start}.acc")
    }

    fn encode(&self) -> Result<Vec<u8>, String> {
        postcard::to_allocvec(&self.0).map_err(|e| e.to_string())
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        postcard::from_bytes(bytes).ok().map(ColdPeriod)
    }

    fn count(&self) -> u64 {
        self.0.len() as u64
    }

    fn counters(stats: &Stats) -> (&AtomicU64, &AtomicU64) {
        (&stats.groups_spilled, &stats.groups_restored)
    }
}

/// The fold's state: groups by interned id, accumulators in memory by
/// `(rule, period start)` and group id, and which periods are on disk or on
/// their way back.
#[derive(Default)]
struct Fold {
    groups: Interner<Group>,
    /// One table per period: a period leaves memory (to disk, or emptied at
    /// its expiry) with its table, and each table is sized for its own groups.
    periods: BTreeMap<PeriodKey, FxHashMap<u32, GroupAcc>>,
    /// Periods whose accumulators are in the spill store.
    cold: BTreeSet<PeriodKey>,
    /// Cold periods asked back and not yet returned.
    asked: BTreeSet<PeriodKey>,
}

/// What a checkpoint keeps of the fold: the groups in id order and the
/// accumulators in memory (generic: written borrowed, read owned).
#[derive(serde::Serialize, serde::Deserialize)]
struct Image<G, P> {
    groups: G,
    periods: P,
}

type Periods = BTreeMap<PeriodKey, FxHashMap<u32, GroupAcc>>;

impl Fold {
    fn save(&self) -> Image<&[Group], &Periods> {
        Image {
            groups: self.groups.keys(),
            periods: &self.periods,
        }
    }

    fn load(img: Image<Vec<Group>, Periods>) -> Fold {
        let mut groups = Interner::default();
        for g in img.groups {
            groups.insert(g);
        }
        Fold {
            groups,
            periods: img.periods,
            ..Fold::default()
        }
    }

    /// The cold periods `updates` touch (they must be read back first).
    fn cold_touched(&self, updates: &[((RuleKey, RuleInput), isize)]) -> BTreeSet<PeriodKey> {
        let mut need = BTreeSet::new();
        if !self.cold.is_empty() {
            for (((rule, _, period), _), _) in updates {
                if self.cold.contains(&(*rule, *period)) {
                    need.insert((*rule, *period));
                }
            }
        }
        need
    }

    /// Takes a period read back from the store.
    fn restore(&mut self, key: PeriodKey, accs: Vec<(u32, GroupAcc)>) {
        self.cold.remove(&key);
        self.asked.remove(&key);
        if !accs.is_empty() {
            self.periods.entry(key).or_default().extend(accs);
        }
    }

    /// Periods in memory that closed `after_ms` before `f`.
    fn due(&self, compiled: &Compiled, f: i64, after_ms: i64) -> Vec<PeriodKey> {
        self.periods
            .keys()
            .copied()
            .filter(|(rule, start)| {
                start
                    .saturating_add(compiled.period_ms(*rule))
                    .saturating_add(after_ms)
                    <= f
            })
            .collect()
    }

    /// Takes a period's accumulators out of memory.
    fn take(&mut self, key: PeriodKey) -> Vec<(u32, GroupAcc)> {
        self.periods
            .remove(&key)
            .map(|m| m.into_iter().collect())
            .unwrap_or_default()
    }

    /// Folds one complete time's consolidated updates (sorted by key, so one
    /// group at a time) and pushes the changed findings to `out`. Not
    /// inlined, so that profiles name the fold's state.
    #[inline(never)]
    fn apply(
        &mut self,
        compiled: &Compiled,
        t: u64,
        updates: &[((RuleKey, RuleInput), isize)],
        out: &mut Vec<(Finding, u64, isize)>,
    ) {
        let mut touched: SmallVec<[PeriodKey; 2]> = SmallVec::new();
        let mut i = 0;
        while i < updates.len() {
            let ((rule, group, period), _) = &updates[i].0;
            let mut j = i;
            while j < updates.len() && (updates[j].0).0 == (updates[i].0).0 {
                j += 1;
            }
            let gid = match self.groups.get(group) {
                Some(id) => id,
                None => self.groups.insert(group.clone()),
            };
            let pk = (*rule, *period);
            if !touched.contains(&pk) {
                touched.push(pk);
            }
            // Findings share the interned key: one copy per group, not one
            // per period (or per contribution).
            let group = self.groups.key(gid);
            let accs = self.periods.entry(pk).or_default();
            let acc = accs.entry(gid).or_insert_with(|| compiled.group_acc(*rule));
            let old = compiled.finding(*rule, group, *period, acc);
            for ((_, input), diff) in &updates[i..j] {
                compiled.accumulate(*rule, acc, input, *diff);
            }
            let new = compiled.finding(*rule, group, *period, acc);
            if acc.is_empty() {
                accs.remove(&gid);
            }
            if old != new {
                out.extend(old.map(|f| (f, t, -1)));
                out.extend(new.map(|f| (f, t, 1)));
            }
            i = j;
        }
        for pk in touched {
            if let Some(accs) = self.periods.get_mut(&pk) {
                if accs.is_empty() {
                    self.periods.remove(&pk);
                } else {
                    // Nor the room of the most accumulators there ever were.
                    shrink_sparse(accs);
                }
            }
        }
    }
}

/// Folds `contributions` into findings (see the module docs); with `spill`,
/// closed periods' accumulators go to disk.
pub fn findings<'s>(
    contributions: Stream<'s, u64, Vec<Contribution>>,
    compiled: Rc<Compiled>,
    spill: Option<SpillPlan>,
    ck: &Checkpoints,
) -> Stream<'s, u64, Vec<(Finding, u64, isize)>> {
    let ck = ck.clone();
    let scope = contributions.scope();
    let exchange = Exchange::new(|u: &Contribution| key_hash(&(u.0).0));
    contributions.unary_frontier::<CapacityContainerBuilder<Vec<(Finding, u64, isize)>>, _, _, _>(
        exchange,
        "rules",
        move |cap, info| {
            let mut cap = Some(cap);
            let mut pending = TimeBuffer::default();
            let store = spill.as_ref().and_then(|p| {
                let wake = scope.worker().sync_activator_for(info.address.to_vec());
                match Store::<ColdPeriod>::start(p, &format!("r{}", scope.index()), wake) {
                    Ok(s) => Some((s, p.after_ms)),
                    Err(e) => {
                        tracing::warn!(dir = %p.dir.display(), "cannot open the spill directory, keeping rule accumulators in memory: {e}");
                        None
                    }
                }
            });
            let mut fold = ck.restore.take("rules").map(Fold::load).unwrap_or_default();
            // Periods the checkpoint's store holds (linked back as it starts).
            if let Some(cold) = ck.restore.take_cold::<BTreeSet<PeriodKey>>("rules") {
                match store {
                    Some(_) => fold.cold = cold,
                    None => tracing::error!(
                        periods = cold.len(),
                        "the checkpoint's spilled rule accumulators cannot be read without a spill store, their findings can no longer be corrected"
                    ),
                }
            }
            ck.barrier
                .register("rules", Some(scope.activator_for(info.address.clone())));
            let mut out: Vec<(Finding, u64, isize)> = Vec::new();
            let me = scope.activator_for(info.address.clone());

            move |(input, frontier), output| {
                input.for_each_stamp(|_stamp, data| {
                    for batch in data {
                        pending.extend(batch.drain(..));
                    }
                });
                if let Some((st, _)) = &store {
                    while let Some(reply) = st.reply() {
                        match reply {
                            Reply::Records(key, ColdPeriod(accs)) => fold.restore(key, accs),
                            Reply::Lost(key, e) => {
                                tracing::error!("spilled rule accumulators lost, their findings can no longer be corrected: {e}");
                                fold.restore(key, Vec::new());
                            }
                        }
                    }
                }
                let Some(c) = cap.as_mut() else { return };
                // The time of updates waiting for spilled periods.
                let mut waiting: Option<u64> = None;
                while let Some((t, updates)) = pending.first_complete(frontier) {
                    let need = fold.cold_touched(updates);
                    if !need.is_empty() {
                        if let Some((st, _)) = &store {
                            for key in need {
                                if !fold.asked.contains(&key) && st.read(key) {
                                    fold.asked.insert(key);
                                }
                            }
                            if fold.asked.is_empty() {
                                // The store's queue is full: try again soon.
                                me.activate();
                            }
                        }
                        waiting = Some(t);
                        break;
                    }
                    let Some((t, updates)) = pending.pop_complete(frontier) else { break };
                    fold.apply(&compiled, t, &updates, &mut out);
                    if !out.is_empty() {
                        let at = c.delayed(&t);
                        output.session(&at).give_iterator(out.drain(..));
                    }
                    // Room for a whole period close is not kept between closes.
                    if out.capacity() > 64 {
                        out = Vec::new();
                    }
                }
                let f = frontier.frontier().iter().min().copied();
                if let (Some(at), None) = (ck.barrier.wants("rules"), waiting) {
                    if checkpoint::ready(at, f, pending.first_time()) {
                        // Nothing before `at` waits: no read is on its way.
                        debug_assert!(fold.asked.is_empty());
                        ck.barrier.put("rules", &fold.save());
                        if let Some((st, _)) = &store {
                            // Asked now: the snapshot sees every spill before, none after.
                            ck.barrier.put_cold("rules", &fold.cold, st.snapshot(at));
                        }
                    }
                }
                // Periods that closed `after` ago go to the store.
                if let (Some((st, after)), Some(f), None) = (&store, f, waiting) {
                    for key in fold.due(&compiled, f as i64, *after) {
                        let accs = fold.take(key);
                        if accs.is_empty() {
                            continue;
                        }
                        match st.write(key, ColdPeriod(accs)) {
                            Ok(()) => {
                                fold.cold.insert(key);
                            }
                            Err(ColdPeriod(accs)) => {
                                // The queue is full: keep them, try next time.
                                fold.restore(key, accs);
                                break;
                            }
                        }
                    }
                }
                match [f, waiting].into_iter().flatten().min() {
                    Some(h) => {
                        if h > *c.time() {
                            c.downgrade(&h);
                        }
                    }
                    None => cap = None,
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::sync::Arc;

    use timely::dataflow::operators::core::Inspect;
    use timely::dataflow::operators::Probe;
    use timely::dataflow::{InputHandle, ProbeHandle};

    use super::*;
    use crate::model::SharedName;
    use crate::value::rules::tests::{asset, compiled, input};

    const HOUR: i64 = 3_600_000;

    type Out = Vec<(Finding, u64, isize)>;

    /// Runs the fold on one worker over `batches` (times increasing), the
    /// frontier passing each batch before the next is sent.
    fn fold(batches: Vec<(u64, Vec<Contribution>)>, spill: Option<SpillPlan>) -> Out {
        let got = Arc::new(std::sync::Mutex::new(Vec::new()));
        let g2 = got.clone();
        let batches = std::sync::Mutex::new(Some(batches));
        timely::execute(timely::Config::thread(), move |worker| {
            let mut inp = InputHandle::<u64, CapacityContainerBuilder<Vec<Contribution>>>::new();
            let probe = ProbeHandle::new();
            let seen = Rc::new(RefCell::new(Vec::new()));
            let s2 = seen.clone();
            let spill = spill.clone();
            worker.dataflow::<u64, _, _>(|scope| {
                findings(
                    inp.to_stream(scope),
                    Rc::new(compiled()),
                    spill,
                    &Checkpoints::default(),
                )
                .inspect_core(move |c| {
                    if let Ok((_, data)) = c {
                        s2.borrow_mut().extend(data.iter().cloned());
                    }
                })
                .probe_with(&probe);
            });
            let mine = batches.lock().unwrap().take().unwrap_or_default();
            for (time, mut rows) in mine {
                inp.advance_to(time);
                while probe.less_than(inp.time()) {
                    worker.step();
                }
                inp.send_batch(&mut rows);
            }
            drop(inp);
            while worker.step_or_park(None) {}
            g2.lock().unwrap().extend(seen.borrow_mut().drain(..));
        })
        .unwrap();
        let mut out = std::mem::take(&mut *got.lock().unwrap());
        out.sort();
        out
    }

    /// The total of a finding (its `sum` measure).
    fn total(f: &Finding) -> f64 {
        serde_json::from_str::<serde_json::Value>(&f.measures).unwrap()["total"]
            .as_f64()
            .unwrap()
    }

    #[test]
    fn spilled_periods_come_back_for_corrections_and_expiry_with_the_same_findings() {
        let pump = asset("a1/pump", "pump");
        let group: Group = Arc::from([SharedName::from("a1")]);
        let c = |period: i64, mean: f64, diff: isize| -> Contribution {
            (
                ((0, group.clone(), period), input(mean, false, &pump)),
                0,
                diff,
            )
        };
        let at = |t: i64, rows: Vec<Contribution>| -> (u64, Vec<Contribution>) {
            let t = t as u64;
            (
                t,
                rows.into_iter()
                    .map(|((k, i), _, d)| ((k, i), t, d))
                    .collect(),
            )
        };
        // The 00:00 hour gets windows of 2, 5 and 11 kW; the 01:00 hour opens
        // (the 00:00 hour goes to disk a minute after it closes); a late row
        // corrects 11 to 7 in the 00:00 hour; both hours' windows expire.
        let batches = vec![
            at(60_000, vec![c(0, 2.0, 1), c(0, 5.0, 1)]),
            at(120_000, vec![c(0, 11.0, 1)]),
            at(HOUR + 120_000, vec![c(HOUR, 4.0, 1), c(HOUR, 6.0, 1)]),
            at(HOUR + 200_000, vec![c(0, 11.0, -1), c(0, 7.0, 1)]),
            at(
                3 * HOUR + 1,
                vec![c(0, 2.0, -1), c(0, 5.0, -1), c(0, 7.0, -1)],
            ),
            at(4 * HOUR + 1, vec![c(HOUR, 4.0, -1), c(HOUR, 6.0, -1)]),
            at(5 * HOUR, vec![]),
        ];
        let in_memory = fold(batches.clone(), None);
        let state = tempfile::tempdir().unwrap();
        let stats = Arc::new(Stats::default());
        let plan = SpillPlan {
            after_ms: 60_000,
            dir: state.path().join("run"),
            stats: stats.clone(),
            checkpoints: None,
            seed: None,
        };
        let spilled = fold(batches, Some(plan));
        assert_eq!(spilled, in_memory, "the same findings at the same times");
        // Written: the 00:00 hour at 01:02, again after the correction, the
        // 01:00 hour at 02:01; read back for the correction and each expiry.
        use std::sync::atomic::Ordering::Relaxed;
        assert_eq!(stats.groups_spilled.load(Relaxed), 3);
        assert_eq!(stats.groups_restored.load(Relaxed), 3);
        assert!(
            !state.path().join("run").exists(),
            "spill files are scratch"
        );
        // By hand: the 00:00 hour's finding is 2 + 5 + 11 = 18, corrected to
        // 14 at 01:03:20 (retraction and new value at that time), gone at 03:00.
        let t = (HOUR + 200_000) as u64;
        let at_t: Vec<(f64, isize)> = spilled
            .iter()
            .filter(|(f, time, _)| *time == t && f.period_start == 0)
            .map(|(f, _, d)| (total(f), *d))
            .collect();
        assert_eq!(at_t.len(), 2);
        assert!(at_t
            .iter()
            .any(|(v, d)| (*v - 18.0).abs() < 1e-9 && *d == -1));
        assert!(at_t
            .iter()
            .any(|(v, d)| (*v - 14.0).abs() < 1e-9 && *d == 1));
        let mut net: std::collections::BTreeMap<Finding, isize> = Default::default();
        for (f, _, d) in &spilled {
            *net.entry(f.clone()).or_default() += d;
        }
        net.retain(|_, d| *d != 0);
        assert!(net.is_empty(), "every finding retracted at expiry: {net:?}");
    }
}
