//! `window`: per-tag tumbling-window pre-aggregation and enrichment in one
//! timely operator.
//!
//! Raw samples never reach differential: this operator keeps a small running
//! aggregate per open `(tag, window)` and emits *differential updates* of
//! windows, enriched by an [`Emit`] (the worker's [`Context`] in the engine),
//! so its output is a collection:
//!
//! - a window `[s, e)` is emitted (`+1`) at time `e`, once the input frontier
//!   reaches `e` (every row sent before the watermark passed `e` is in);
//! - a row arriving later (time `t >= e`) corrects it at time `t`:
//!   `(old, −1), (new, +1)` — a new revision downstream, never a drop;
//! - a batch of context updates at time `t` (applied once `t` is complete on
//!   both inputs) retracts the rows of the retained windows it may alter under
//!   the old context and emits them under the new one;
//! - closed windows are retracted (`−1`) at `align_up(e, period) + retention`,
//!   a whole window start at a time, which bounds state; rows later than that
//!   are dead-lettered by the source.
//!
//! Events are processed in time order, so the output at every time equals
//! the enrichment of the windows and context as of that time. Emission times
//! depend only on the times rows and context were sent at, so the output is
//! the same for any number of workers.

use std::collections::{BTreeMap, BTreeSet};

use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::Stream;

mod acc;
mod combine;
mod state;

pub use acc::{Acc, Closed};
pub use combine::{combine, Piece};

/// What the window operator takes: samples (one process) or pieces (a
/// cluster's, see [`combine`]).
pub trait Input: Clone + 'static {
    fn row(self) -> Row;
    /// The row's tag (to prefetch its window's slot).
    fn tag(&self) -> crate::model::TagId;
}

/// A row for the window operator.
pub enum Row {
    Sample(Sample),
    /// A partial window of one tag, starting at `.0`.
    Part(i64, Acc),
}

impl Input for Sample {
    #[inline]
    fn row(self) -> Row {
        Row::Sample(self)
    }
    #[inline]
    fn tag(&self) -> crate::model::TagId {
        self.tag
    }
}

impl Input for Piece {
    fn row(self) -> Row {
        match self {
            Piece::Part(start, acc) => Row::Part(start, acc),
            Piece::Late(s) => Row::Sample(s),
        }
    }
    fn tag(&self) -> crate::model::TagId {
        match self {
            Piece::Part(_, acc) => acc.tag,
            Piece::Late(s) => s.tag,
        }
    }
}
use state::State;

use super::checkpoint::{self, Checkpoints};
use super::context::{Context, CtxUpdate};
use super::spill::{SpillPlan, Store};
use crate::ingest::Geometry;
use crate::model::{Enriched, Sample, TagId, WindowAgg};

/// Output rows the operator keeps room for between events.
const SPARE_ROWS: usize = 64;

/// Rows one activation emits before it yields (after the event that passed
/// this) and asks to be scheduled again. A replay catching up would
/// otherwise close many windows in one activation, and every channel
/// downstream would queue all their rows at once: timely's queues keep the
/// room of their fullest moment for the life of the process.
const ACTIVATION_ROWS: usize = 1024;

/// What the window operator emits for a window update: enriched rows in the
/// engine, bare aggregates in the stage benchmark.
pub trait Emit: 'static {
    type Out: Clone + 'static;
    /// Pushes the rows of window `agg` of `tag` with multiplicity `diff`.
    fn emit(&mut self, tag: TagId, agg: &WindowAgg, diff: isize, out: &mut Vec<(Self::Out, isize)>);
    /// The retained windows a batch of context changes may alter.
    fn affected(
        &self,
        changes: &[(CtxUpdate, isize)],
        closed: &BTreeMap<i64, Closed>,
    ) -> BTreeSet<(i64, TagId)>;
    fn apply(&mut self, changes: Vec<(CtxUpdate, isize)>);
    /// Whether a batch of context changes may alter windows of `start` (which
    /// is spilled, so [`Emit::affected`] cannot look inside it).
    fn touches(&self, changes: &[(CtxUpdate, isize)], start: i64) -> bool;
    /// No window starting before `before` will be emitted again: context
    /// that only such windows could use may go.
    fn retire(&mut self, _before: i64) {}
    /// The emitter's own state for a checkpoint (none by default).
    fn save(&self) -> Vec<u8> {
        Vec::new()
    }
    /// Starts from [`Emit::save`]'s bytes.
    fn load(&mut self, _bytes: &[u8]) {}
}

impl Emit for Context {
    type Out = Enriched;
    fn emit(&mut self, tag: TagId, agg: &WindowAgg, diff: isize, out: &mut Vec<(Enriched, isize)>) {
        self.enrich(tag, agg, diff, out)
    }
    fn affected(
        &self,
        changes: &[(CtxUpdate, isize)],
        closed: &BTreeMap<i64, Closed>,
    ) -> BTreeSet<(i64, TagId)> {
        Context::affected(self, changes, closed)
    }
    fn apply(&mut self, changes: Vec<(CtxUpdate, isize)>) {
        Context::apply(self, changes)
    }
    fn touches(&self, changes: &[(CtxUpdate, isize)], start: i64) -> bool {
        Context::touches(self, changes, start)
    }
    fn retire(&mut self, before: i64) {
        Context::retire(self, before)
    }
    fn save(&self) -> Vec<u8> {
        Context::save(self)
    }
    fn load(&mut self, bytes: &[u8]) {
        Context::load(self, bytes)
    }
}

/// Bare window aggregates, no context (the stage benchmark).
pub struct Bare;

impl Emit for Bare {
    type Out = (TagId, WindowAgg);
    fn emit(
        &mut self,
        tag: TagId,
        agg: &WindowAgg,
        diff: isize,
        out: &mut Vec<(Self::Out, isize)>,
    ) {
        out.push(((tag, agg.clone()), diff));
    }
    fn affected(
        &self,
        _: &[(CtxUpdate, isize)],
        _: &BTreeMap<i64, Closed>,
    ) -> BTreeSet<(i64, TagId)> {
        BTreeSet::new()
    }
    fn apply(&mut self, _: Vec<(CtxUpdate, isize)>) {}
    fn touches(&self, _: &[(CtxUpdate, isize)], _: i64) -> bool {
        false
    }
}

/// Builds the window operator over a stream of samples (or a cluster's
/// pieces) and the worker's own context updates; `emitter` turns window updates into output rows. With
/// `spill`, closed windows move to a [`Store`] once they are `after_ms` old.
pub fn window<'s, E: Emit, I: Input>(
    samples: Stream<'s, u64, Vec<I>>,
    context: Stream<'s, u64, Vec<(CtxUpdate, u64, isize)>>,
    geo: Geometry,
    name: &str,
    emitter: E,
    spill: Option<SpillPlan>,
    ck: &Checkpoints,
) -> Stream<'s, u64, Vec<(E::Out, u64, isize)>> {
    let ck = ck.clone();
    let scope = samples.scope();
    // Each tag's rows are already on its worker (the bridge's partition,
    // `bridge::worker_of`, or a cluster's exchange of pieces); every worker
    // feeds its own context.
    samples.binary_frontier::<_, CapacityContainerBuilder<Vec<(E::Out, u64, isize)>>, _, _, _, _>(
        context,
        Pipeline,
        Pipeline,
        name,
        move |cap, info| {
            let mut cap = Some(cap);
            // The cold tier: with `spill`, closed windows go to a store.
            let store = spill.as_ref().and_then(|p| {
                let wake = scope.worker().sync_activator_for(info.address.to_vec());
                match Store::<Vec<Acc>>::start(p, &format!("w{}", scope.index()), wake) {
                    Ok(s) => Some((s, p.after_ms)),
                    Err(e) => {
                        tracing::warn!(dir = %p.dir.display(), "cannot open the spill directory, keeping closed windows in memory: {e}");
                        None
                    }
                }
            });
            let mut st = State {
                geo,
                emitter,
                open: BTreeMap::new(),
                me_of: (scope.index(), scope.peers().max(1)),
                slots: 0,
                late: BTreeMap::new(),
                closed: BTreeMap::new(),
                changes: BTreeMap::new(),
                buf: Vec::new(),
                store,
                cold: BTreeSet::new(),
                asked: BTreeSet::new(),
                retired: i64::MIN,
            };
            if let Some(img) = ck.restore.take::<state::Loaded>("window") {
                st.load(img);
            }
            st.load_cold(ck.restore.take_cold("window"));
            ck.barrier
                .register("window", Some(scope.activator_for(info.address.clone())));
            let me = scope.activator_for(info.address.clone());

            move |(input, f1), (ctx_in, f2), output| {
                input.for_each_stamp(|stamp, data| {
                    let t = stamp.least().copied().unwrap_or(0);
                    for batch in data {
                        st.take(t, batch);
                    }
                });
                ctx_in.for_each_stamp(|_stamp, data| {
                    for batch in data {
                        for (c, t, r) in batch.drain(..) {
                            st.changes.entry(t).or_default().push((c, r));
                        }
                    }
                });
                // Spilled starts read back.
                st.restore();

                let Some(c) = cap.as_mut() else { return };
                let least = |f: &timely::progress::frontier::MutableAntichain<u64>| {
                    f.frontier().iter().min().copied()
                };
                let f = match (least(f1), least(f2)) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                // The time of an event waiting for spilled windows.
                let mut waiting: Option<u64> = None;
                // The time of the event the activation yielded before.
                let mut yielded: Option<u64> = None;
                let mut emitted = 0;

                while let Some((time, event)) = st.next(f) {
                    // A checkpoint at or before this event: everything before it is in.
                    if let Some(at) = ck.barrier.wants("window") {
                        if checkpoint::ready(at, f, Some(time)) {
                            st.checkpoint(&ck.barrier, at);
                        }
                    }
                    if emitted >= ACTIVATION_ROWS {
                        yielded = Some(time);
                        me.activate();
                        break;
                    }
                    // Spilled starts this event needs back first.
                    let need = st.needs_back(event, time);
                    if !need.is_empty() {
                        if st.ask(need) {
                            // The store's queue is full: try again soon.
                            me.activate();
                        }
                        waiting = Some(time);
                        break;
                    }
                    let at = c.delayed(&time.max(*c.time()));
                    let tt = *at.time();
                    st.handle(event, time, tt);
                    if !st.buf.is_empty() {
                        emitted += st.buf.len();
                        let mut session = output.session(&at);
                        session.give_iterator(st.buf.drain(..).map(|(d, r)| (d, tt, r)));
                    }
                    // A close fills the buffer with a row per tag: do not keep
                    // that much room between closes.
                    if st.buf.capacity() > SPARE_ROWS {
                        st.buf = Vec::new();
                    }
                }

                if let (Some(at), None, None) = (ck.barrier.wants("window"), waiting, yielded) {
                    if checkpoint::ready(at, f, None) {
                        st.checkpoint(&ck.barrier, at);
                    }
                }
                if let (Some(f), None) = (f, waiting) {
                    st.spill(f);
                    st.retire(f, yielded);
                }

                let hold = [f, waiting, yielded].into_iter().flatten().min();
                match hold {
                    Some(h) => {
                        if h > *c.time() {
                            c.downgrade(&h);
                        }
                    }
                    None => {
                        cap = None;
                    }
                }
            }
        },
    )
}

/// Runs the window operator alone on one timely worker over in-memory
/// batches (`(time, rows)`, times non-decreasing), for the stage benchmarks.
/// Returns the number of window updates it emitted.
pub fn standalone(batches: Vec<(u64, Vec<Sample>)>, geo: Geometry) -> u64 {
    use std::cell::Cell;
    use std::rc::Rc;
    use timely::dataflow::operators::core::Inspect;
    use timely::dataflow::operators::Probe;
    use timely::dataflow::{InputHandle, ProbeHandle};

    let count = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let total = count.clone();
    let batches = std::sync::Mutex::new(Some(batches));
    let guards = timely::execute(timely::Config::thread(), move |worker| {
        let mut input = InputHandle::<u64, CapacityContainerBuilder<Vec<Sample>>>::new();
        let probe = ProbeHandle::new();
        let seen = Rc::new(Cell::new(0u64));
        let s2 = seen.clone();
        worker.dataflow::<u64, _, _>(|scope| {
            let none = timely::dataflow::operators::vec::ToStream::to_stream(
                Vec::<(CtxUpdate, u64, isize)>::new(),
                scope,
            );
            let ck = Checkpoints::default();
            window(input.to_stream(scope), none, geo, "window", Bare, None, &ck)
                .inspect_core(move |c| {
                    if let Ok((_, data)) = c {
                        s2.set(s2.get() + data.len() as u64);
                    }
                })
                .probe_with(&probe);
        });
        let mine = batches.lock().ok().and_then(|mut b| b.take());
        for (time, mut rows) in mine.unwrap_or_default() {
            if time > *input.time() {
                input.advance_to(time);
                while probe.less_than(&time.saturating_sub(2 * geo.size_ms as u64)) {
                    worker.step();
                }
            }
            input.send_batch(&mut rows);
            worker.step();
        }
        drop(input);
        while worker.step_or_park(None) {}
        count.fetch_add(seen.get(), std::sync::atomic::Ordering::Relaxed);
    });
    if let Ok(g) = guards {
        drop(g.join());
    }
    total.load(std::sync::atomic::Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Quality, Sample};

    /// Closes of more rows than one activation emits: each close yields and
    /// the operator resumes at the next one; no window is lost or repeated.
    #[test]
    fn closes_larger_than_an_activation_all_arrive() {
        const TAGS: u32 = 3_000;
        const MINUTES: i64 = 5;
        const { assert!(TAGS as usize > ACTIVATION_ROWS) };
        let geo = Geometry {
            size_ms: 60_000,
            period_ms: 3_600_000,
            retention_ms: 7_200_000,
        };
        let batches = (0..MINUTES)
            .map(|m| {
                let rows = (0..TAGS)
                    .map(|tag| Sample {
                        tag,
                        ts: m * 60_000 + 30_000,
                        value: f64::from(tag),
                        quality: Quality::Good,
                    })
                    .collect();
                // All at time 1: the five closes are ready at once when
                // the input ends, so one activation cannot take them all.
                (1, rows)
            })
            .collect();
        // One row per tag and minute, by hand: 3,000 × 5.
        assert_eq!(standalone(batches, geo), u64::from(TAGS) * MINUTES as u64);
    }
}
