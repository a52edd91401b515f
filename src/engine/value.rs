//! The value-layer operator: one worker runs the [`ValueLayer`] state machine.
//!
//! Findings, per-window energy, production runs and status updates are
//! exchanged to worker 0, buffered per timely time, and applied once the time
//! is complete; then the layer steps to the frontier (the watermark) and its
//! new row versions go to the sink channel. Its inputs are small (findings
//! and window-level energy, never raw samples), so one worker suffices and
//! the result is the same for any worker count.
//!
//! With a [`Ledger`] (`[window] spill_after`), the layer's actions of closed
//! periods go to disk after each step; a complete time with an update for an
//! action the layer no longer holds (a status update, a corrected finding)
//! waits until the ledger has sent it back (or said it never had it), and
//! the operator's progress stays at that time meanwhile.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::Stream;

use super::checkpoint::{self, Checkpoints};
use super::ledger::{Ledger, LedgerFiles, Reply};
use super::output::TimeBuffer;
use crate::stats::Stats;
use crate::stats::ValueCounters;
use crate::value::layer::{ValueIn, ValueLayer, ValueOut};

/// Where the value layer's [`Ledger`] keeps its files, and the counters it feeds.
pub struct LedgerPlan {
    pub files: LedgerFiles,
    pub stats: Arc<Stats>,
}

/// A complete time held back until the ledger has answered for the actions
/// its status updates name.
struct Waiting {
    time: u64,
    updates: Vec<(ValueIn, isize)>,
    /// Ids still to ask for (the ledger's queue was full).
    ask: Vec<String>,
    /// Replies still to come.
    asked: usize,
    /// The input has ended: the end step waits (for expiring actions).
    end: bool,
}

impl Waiting {
    /// Asks the ledger for what is still to ask (as much as its queue takes).
    fn ask_from(&mut self, ledger: &Ledger) {
        while let Some(id) = self.ask.last() {
            if !ledger.get(id) {
                break;
            }
            self.ask.pop();
            self.asked += 1;
        }
    }
}

impl Waiting {
    /// A step to `now` held for the open actions on disk that expire by
    /// then, if there are any (at the end, `time` is what was reported).
    fn for_expiry(layer: &mut ValueLayer, now: i64, end: bool, reported: u64) -> Option<Waiting> {
        let ask = layer.take_cold_due(now, end);
        (!ask.is_empty()).then(|| Waiting {
            time: if end { reported } else { now as u64 + 1 },
            updates: Vec::new(),
            ask,
            asked: 0,
            end,
        })
    }
}

/// What the operator does next with its held time and complete times.
enum Next {
    /// Apply the updates of complete time `t`, then step to `t - 1`.
    Step(u64, Vec<(ValueIn, isize)>),
    /// The end step, which waited for the ledger.
    End,
    /// Nothing until the ledger answers or a time completes.
    Idle,
    /// The ledger's queue was full: try again soon.
    Wake,
}

/// The next step: the held time once the ledger has answered for it, or
/// the next complete time, unless it needs actions back from the ledger
/// first (then it is held).
fn next(
    waiting: &mut Option<Waiting>,
    pending: &mut TimeBuffer<ValueIn>,
    frontier: &timely::progress::frontier::MutableAntichain<u64>,
    layer: &mut ValueLayer,
    ledger: Option<&Ledger>,
) -> Next {
    if let Some(mut w) = waiting.take() {
        if let Some(l) = ledger {
            w.ask_from(l);
        }
        if !w.ask.is_empty() || w.asked > 0 {
            let full = !w.ask.is_empty();
            *waiting = Some(w);
            return if full { Next::Wake } else { Next::Idle };
        }
        return match w.end {
            true => Next::End,
            false => Next::Step(w.time, w.updates),
        };
    }
    let Some((t, updates)) = pending.pop_complete(frontier) else {
        return Next::Idle;
    };
    // Updates for actions the layer keeps on disk, and open ones there
    // that expire by `t - 1`: fetch them first.
    let Some(l) = ledger else {
        return Next::Step(t, updates);
    };
    let mut ask = wanted_back(layer, &updates, t);
    ask.extend(layer.take_cold_due(t as i64 - 1, false));
    ask.sort();
    ask.dedup();
    if ask.is_empty() {
        return Next::Step(t, updates);
    }
    let mut w = Waiting {
        time: t,
        updates,
        ask,
        asked: 0,
        end: false,
    };
    w.ask_from(l);
    let full = !w.ask.is_empty();
    *waiting = Some(w);
    if full {
        Next::Wake
    } else {
        Next::Idle
    }
}

/// The actions on disk that `updates` at time `t` need back first, once each.
fn wanted_back(layer: &ValueLayer, updates: &[(ValueIn, isize)], t: u64) -> Vec<String> {
    let mut ask: Vec<String> = updates
        .iter()
        .filter_map(|(d, r)| layer.wants_back(d, t as i64, *r))
        .collect();
    ask.sort();
    ask.dedup();
    ask
}

/// Runs `layer` on worker 0 over `stream`; `emit` receives each step's
/// output (in parts, for a step with many actions: the counters come with
/// the last), `progress` the operator's frontier after it (see [`super::output::revisions`]).
/// With a `ledger` plan, actions of closed periods move to a [`Ledger`]
/// (see its module docs).
pub fn value_op<'s, F, P>(
    stream: Stream<'s, u64, Vec<(ValueIn, u64, isize)>>,
    mut layer: ValueLayer,
    ledger: Option<LedgerPlan>,
    mut emit: F,
    mut progress: P,
    ck: &Checkpoints,
) where
    F: FnMut(u64, ValueOut, Option<ValueCounters>) + 'static,
    P: FnMut(u64) + 'static,
{
    let scope = stream.scope();
    let ck = ck.clone();
    let mut last = restore(&mut layer, &ck);
    let exchange = Exchange::new(|_: &(ValueIn, u64, isize)| 0u64);
    stream.unary_frontier::<CapacityContainerBuilder<Vec<()>>, _, _, _>(
        exchange,
        "value",
        move |cap, info| {
            // A sink with no output. Its capability is held only to keep the
            // worker running while a time waits for the ledger at the end of
            // input (the input frontier is empty then); dropped once ended.
            let mut cap = Some(cap);
            let ledger = ledger.filter(|_| scope.index() == 0).and_then(|p| {
                let wake = scope.worker().sync_activator_for(info.address.to_vec());
                let dir = p.files.dir.clone();
                match Ledger::start(p.files, wake) {
                    Ok(l) => Some((l, p.stats)),
                    Err(e) => {
                        tracing::warn!(dir = %dir.display(), "cannot start the action ledger, keeping every action in memory: {e}");
                        None
                    }
                }
            });
            let me = scope.activator_for(info.address.clone());
            ck.barrier.register("value", Some(me.clone()));
            let mut reported = 0u64;
            let mut pending = TimeBuffer::default();
            let mut ended = false;
            let mut waiting: Option<Waiting> = None;
            move |(input, frontier), _output| {
                input.for_each_stamp(|stamp, data| {
                    for batch in data {
                        tracing::trace!(target: "plantflow::latency", epoch = stamp.least().copied().unwrap_or(0), n = batch.len(), "value received");
                        pending.extend(batch.drain(..));
                    }
                });
                if let Some((l, stats)) = &ledger {
                    take_replies(l, stats, &mut layer, waiting.as_mut());
                }
                // Each complete time is its own step, so in-interval projections and
                // lifecycle ordering see the data exactly as a live run would. Updates
                // are consolidated first: a join may carry +1 +1 −1 for one row, and
                // aged-out retractions are recognised by their net sign.
                loop {
                    let l = ledger.as_ref().map(|(l, _)| l);
                    let (t, updates) = match next(&mut waiting, &mut pending, frontier, &mut layer, l) {
                        Next::Idle => break,
                        Next::Wake => {
                            me.activate();
                            break;
                        }
                        Next::End => {
                            // The input ended while expiring actions came back.
                            let now = last.unwrap_or(i64::MIN);
                            step_and_emit(&mut layer, now, true, &mut emit);
                            (last, ended, cap) = (Some(now), true, None);
                            break;
                        }
                        Next::Step(t, updates) => (t, updates),
                    };
                    for (d, r) in updates {
                        layer.apply(d, t as i64, r);
                    }
                    let now = (t as i64 - 1).max(last.unwrap_or(i64::MIN));
                    step_and_emit(&mut layer, now, false, &mut emit);
                    last = Some(now);
                    if let Some((l, stats)) = &ledger {
                        evict(&mut layer, l, stats);
                    }
                }
                if let Some(w) = &waiting {
                    // Everything before the held step's time (`w.time - 1`) is out.
                    let held = w.time.saturating_sub(1);
                    if held > reported && !w.end {
                        reported = held;
                        progress(held);
                    }
                    return;
                }
                if let (Some(c), Some(f)) = (cap.as_mut(), frontier.frontier().first()) {
                    if *f > *c.time() {
                        c.downgrade(f);
                    }
                }
                if ended {
                    cap = None;
                    super::output::report_progress(frontier, &mut reported, &mut progress);
                    return;
                }
                let (now, end) = match frontier.frontier().first() {
                    // Times are watermark epochs + 1: everything before `t - 1` is complete.
                    Some(t) => (*t as i64 - 1, false),
                    None => (last.unwrap_or(i64::MIN), true),
                };
                if end || last.is_none_or(|l| now > l) {
                    // Open actions on disk that expire by then come back first.
                    if ledger.is_some() {
                        waiting = Waiting::for_expiry(&mut layer, now, end, reported);
                        if waiting.is_some() {
                            me.activate();
                            return;
                        }
                    }
                    step_and_emit(&mut layer, now, end, &mut emit);
                    last = Some(now);
                    ended = end;
                    if end {
                        cap = None;
                    }
                    if let (Some((l, stats)), false) = (&ledger, end) {
                        evict(&mut layer, l, stats);
                    }
                }
                if let Some(at) = ck.barrier.wants("value") {
                    let f = frontier.frontier().first().copied();
                    if checkpoint::ready(at, f, pending.first_time()) {
                        put(&layer, last, &ck);
                        // Asked now: the snapshot sees every eviction before, none after.
                        let s = ledger.as_ref().and_then(|(l, _)| l.snapshot(at));
                        ck.barrier.put_cold("value", layer.cold_index(), s);
                    }
                }
                super::output::report_progress(frontier, &mut reported, &mut progress);
            }
        },
    );
}

/// Takes the actions the ledger sent back.
fn take_replies(
    l: &Ledger,
    stats: &Stats,
    layer: &mut ValueLayer,
    mut waiting: Option<&mut Waiting>,
) {
    while let Some(r) = l.reply() {
        if let Some(w) = waiting.as_deref_mut() {
            w.asked = w.asked.saturating_sub(1);
        }
        if let Reply::Found(a) = r {
            stats.actions_restored.fetch_add(1, Relaxed);
            layer.restore(*a);
        }
    }
}

/// Starts `layer` from its checkpoint part, if any; returns the time it
/// last stepped to.
fn restore(layer: &mut ValueLayer, ck: &Checkpoints) -> Option<i64> {
    let (bytes, last): (Vec<u8>, Option<i64>) = ck.restore.take("value")?;
    if let Err(e) = layer.load(&bytes) {
        panic!("cannot read the value layer's state of the checkpoint: {e}");
    }
    if let Some(index) = ck.restore.take_cold("value") {
        layer.load_cold_index(index);
    }
    last
}

/// Puts the layer's state and the time it last stepped to into the checkpoint.
fn put(layer: &ValueLayer, last: Option<i64>, ck: &Checkpoints) {
    match layer.save() {
        Ok(bytes) => ck.barrier.put("value", &(bytes, last)),
        Err(e) => panic!("cannot encode the value layer for a checkpoint: {e}"),
    }
}

/// Moves the actions the layer no longer needs in memory to the ledger
/// (they stay if its queue is full, and go at a later period).
fn evict(layer: &mut ValueLayer, ledger: &Ledger, stats: &Stats) {
    // Closed actions no correction can reach any more leave the ledger.
    let gone = layer.take_cold_final();
    if !gone.is_empty() {
        let n = gone.len() as u64;
        match ledger.forget(gone) {
            Ok(()) => {
                stats.actions_forgotten.fetch_add(n, Relaxed);
            }
            Err(back) => layer.forget_later(back),
        }
    }
    let cold = layer.evict();
    if cold.is_empty() {
        return;
    }
    let n = cold.len() as u64;
    match ledger.put(cold) {
        Ok(()) => {
            stats.actions_evicted.fetch_add(n, Relaxed);
        }
        Err(back) => {
            for a in back {
                layer.restore(a);
            }
        }
    }
}

/// Steps `layer` to `now` and hands its output to `emit`: the parts of a
/// large step as they come, then the rest with the layer's counters.
fn step_and_emit<F>(layer: &mut ValueLayer, now: i64, end: bool, emit: &mut F)
where
    F: FnMut(u64, ValueOut, Option<ValueCounters>),
{
    // The stamp of the step's rows: below the progress reported after it
    // (a step at `now` follows a frontier of `now + 1` or later).
    let time = now.max(0) as u64;
    let mut parted = false;
    let out = layer.step(now, end, &mut |p| {
        tracing::trace!(target: "plantflow::latency", epoch = now, n = p.actions.len(), "value part");
        parted = true;
        emit(time, p, None)
    });
    tracing::trace!(target: "plantflow::latency", epoch = now, n = out.actions.len(), "value stepped");
    if parted || !out.is_empty() {
        emit(time, out, Some(layer.counters()));
    }
}
