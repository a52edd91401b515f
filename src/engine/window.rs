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

use rustc_hash::FxHashMap;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::Stream;

use super::context::{Context, CtxUpdate};
use super::spill::{Reply, SpillPlan, Store};
use crate::ingest::Geometry;
use crate::model::{Enriched, Sample, TagId, WindowAgg, F64};

/// Running aggregate of one tag's window (56 bytes: it is what a retained
/// window costs). The first and last values' times are kept as offsets
/// into the window (`ms` since its start), only to order them.
#[derive(Clone, Debug)]
pub struct Acc {
    tag: TagId,
    count: u32,
    first_at: u32,
    last_at: u32,
    sum: f64,
    min: f64,
    max: f64,
    first: f64,
    last: f64,
}

impl Acc {
    /// No window (a free slot of [`Open`]).
    const EMPTY: Acc = Acc {
        tag: 0,
        count: 0,
        first_at: 0,
        last_at: 0,
        sum: 0.0,
        min: 0.0,
        max: 0.0,
        first: 0.0,
        last: 0.0,
    };

    /// A window's first row `s`, `at` ms after the window's start.
    fn new(s: &Sample, at: u32) -> Acc {
        Acc {
            tag: s.tag,
            count: 1,
            first_at: at,
            last_at: at,
            sum: s.value,
            min: s.value,
            max: s.value,
            first: s.value,
            last: s.value,
        }
    }

    /// Adds row `s`, `at` ms after the window's start.
    fn add(&mut self, s: &Sample, at: u32) {
        self.count = self.count.saturating_add(1);
        self.sum += s.value;
        self.min = self.min.min(s.value);
        self.max = self.max.max(s.value);
        if at < self.first_at {
            (self.first_at, self.first) = (at, s.value);
        }
        if at >= self.last_at {
            (self.last_at, self.last) = (at, s.value);
        }
    }

    /// The size of [`Acc::encode`]'s record.
    pub const BYTES: usize = 56;

    /// Appends the 56-byte little-endian record the spill store keeps.
    pub fn encode(&self, out: &mut Vec<u8>) {
        for x in [self.tag, self.count, self.first_at, self.last_at] {
            out.extend_from_slice(&x.to_le_bytes());
        }
        for x in [self.sum, self.min, self.max, self.first, self.last] {
            out.extend_from_slice(&x.to_le_bytes());
        }
    }

    /// Reads an [`Acc::encode`] record (`b` is [`Acc::BYTES`] long).
    pub fn decode(b: &[u8]) -> Acc {
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap_or_default());
        let f64_at = |i: usize| f64::from_le_bytes(b[i..i + 8].try_into().unwrap_or_default());
        Acc {
            tag: u32_at(0),
            count: u32_at(4),
            first_at: u32_at(8),
            last_at: u32_at(12),
            sum: f64_at(16),
            min: f64_at(24),
            max: f64_at(32),
            first: f64_at(40),
            last: f64_at(48),
        }
    }

    fn agg(&self, start: i64, size: i64) -> WindowAgg {
        WindowAgg {
            window_start: start,
            window_end: start + size,
            count: i64::from(self.count),
            mean: F64(self.sum / f64::from(self.count)),
            min: F64(self.min),
            max: F64(self.max),
            first: F64(self.first),
            last: F64(self.last),
        }
    }
}

/// The retained windows of one window start, sorted by tag: a retained
/// window costs its [`Acc`] and nothing else (no hash-table slack).
#[derive(Default)]
pub struct Closed {
    rows: Vec<Acc>,
}

impl Closed {
    fn find(&self, tag: TagId) -> Result<usize, usize> {
        self.rows.binary_search_by_key(&tag, |a| a.tag)
    }

    pub fn contains(&self, tag: TagId) -> bool {
        self.find(tag).is_ok()
    }

    fn get(&self, tag: TagId) -> Option<&Acc> {
        self.find(tag).ok().map(|i| &self.rows[i])
    }

    /// The tags with a retained window, ascending.
    pub fn tags(&self) -> impl Iterator<Item = TagId> + '_ {
        self.rows.iter().map(|a| a.tag)
    }

    /// Adds a (late) row to its tag's window, `at` ms after its start.
    fn add(&mut self, s: &Sample, at: u32) {
        match self.find(s.tag) {
            Ok(i) => self.rows[i].add(s, at),
            Err(i) => self.rows.insert(i, Acc::new(s, at)),
        }
    }

    /// Takes the windows that just closed (`accs` sorted by tag).
    fn extend(&mut self, accs: Vec<Acc>) {
        if self.rows.is_empty() {
            self.rows = accs;
        } else {
            // Late rows reached this start before it closed on this worker.
            self.rows.extend(accs);
            self.rows.sort_by_key(|a| a.tag);
        }
    }
}

/// The open windows of one end time. Tags are interned densely and worker
/// `index` of `peers` gets the tags `t` with `t % peers == index`
/// (`bridge::worker_of`), so `t / peers` indexes a vector: a sample finds its
/// window without hashing, and a close takes the windows in tag order. A tag
/// of another worker (never sent here) still gets its own window, in a map.
struct Open {
    accs: Vec<Acc>,
    n: usize,
    other: FxHashMap<TagId, Acc>,
}

impl Open {
    /// Not inlined, so that heap profiles name the open windows' slots.
    #[inline(never)]
    fn with_capacity(slots: usize) -> Open {
        Open {
            accs: Vec::with_capacity(slots),
            n: 0,
            other: FxHashMap::default(),
        }
    }

    fn add(&mut self, s: &Sample, at: u32, (index, peers): (usize, usize)) {
        let tag = s.tag as usize;
        if tag % peers != index {
            self.other
                .entry(s.tag)
                .and_modify(|a| a.add(s, at))
                .or_insert_with(|| Acc::new(s, at));
            return;
        }
        let slot = tag / peers;
        if slot >= self.accs.len() {
            self.accs.resize(slot + 1, Acc::EMPTY);
        }
        let a = &mut self.accs[slot];
        if a.count == 0 {
            *a = Acc::new(s, at);
            self.n += 1;
        } else {
            a.add(s, at);
        }
    }

    /// The windows, sorted by tag.
    fn into_sorted(self) -> Vec<Acc> {
        let mut out = Vec::with_capacity(self.n + self.other.len());
        out.extend(self.accs.into_iter().filter(|a| a.count > 0));
        if !self.other.is_empty() {
            out.extend(self.other.into_values());
            out.sort_unstable_by_key(|a| a.tag);
        }
        out
    }
}

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

/// The next event of the operator, in time order.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Event {
    /// Windows ending at the time close (first at equal times).
    Close,
    /// Rows that arrived after their window closed.
    Late,
    /// A batch of context updates.
    Context,
    /// Windows past retention leave state (last).
    Expire,
}

/// Builds the window operator over a stream of samples and the broadcast
/// context updates; `emitter` turns window updates into output rows. With
/// `spill`, closed windows move to a [`Store`] once they are `after_ms` old.
pub fn window<'s, E: Emit>(
    samples: Stream<'s, u64, Vec<Sample>>,
    context: Stream<'s, u64, Vec<(CtxUpdate, u64, isize)>>,
    geo: Geometry,
    name: &str,
    mut emitter: E,
    spill: Option<SpillPlan>,
) -> Stream<'s, u64, Vec<(E::Out, u64, isize)>> {
    let scope = samples.scope();
    // The bridge already sent each tag's rows to its worker (`bridge::worker_of`);
    // the context stream is broadcast.
    samples.binary_frontier::<_, CapacityContainerBuilder<Vec<(E::Out, u64, isize)>>, _, _, _, _>(
        context,
        Pipeline,
        Pipeline,
        name,
        move |cap, info| {
            let mut cap = Some(cap);
            // Open windows by end time.
            let mut open: BTreeMap<i64, Open> = BTreeMap::new();
            let me_of = (scope.index(), scope.peers().max(1));
            // Slots the last closed window used: the next one starts that big.
            let mut slots = 0usize;
            // Late rows by their time, processed once the frontier reaches it.
            let mut late: BTreeMap<u64, Vec<Sample>> = BTreeMap::new();
            // Emitted windows that may still be corrected, by window start.
            let mut closed: BTreeMap<i64, Closed> = BTreeMap::new();
            // Context updates by time, applied once the time is complete.
            let mut changes: BTreeMap<u64, Vec<(CtxUpdate, isize)>> = BTreeMap::new();
            let mut buf: Vec<(E::Out, isize)> = Vec::new();
            // The cold tier: starts whose windows are in the store, and those
            // asked back but not yet returned.
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
            let mut cold: BTreeSet<i64> = BTreeSet::new();
            let mut asked: BTreeSet<i64> = BTreeSet::new();
            // The last bound given to `Emit::retire`.
            let mut retired = i64::MIN;
            let me = scope.activator_for(info.address.clone());

            move |(input, f1), (ctx_in, f2), output| {
                input.for_each_stamp(|stamp, data| {
                    let t = stamp.least().copied().unwrap_or(0);
                    for batch in data {
                        // Rows of a batch mostly share a window: look its map up once.
                        let mut cur_end = i64::MIN;
                        let mut cur: Option<&mut Open> = None;
                        for s in batch.drain(..) {
                            let start = geo.start_of(s.ts);
                            let end = start + geo.size_ms;
                            if (t as i64) < end {
                                if end != cur_end || cur.is_none() {
                                    cur = Some(open.entry(end).or_insert_with(|| Open::with_capacity(slots)));
                                    cur_end = end;
                                }
                                if let Some(m) = cur.as_mut() {
                                    m.add(&s, (s.ts - start) as u32, me_of);
                                }
                            } else {
                                late.entry(t).or_default().push(s);
                            }
                        }
                    }
                });
                ctx_in.for_each_stamp(|_stamp, data| {
                    for batch in data {
                        for (c, t, r) in batch.drain(..) {
                            changes.entry(t).or_default().push((c, r));
                        }
                    }
                });
                // Spilled starts read back.
                if let Some((st, _)) = &store {
                    while let Some(reply) = st.reply() {
                        let (start, rows) = match reply {
                            Reply::Records(start, rows) => (start, rows),
                            Reply::Lost(start, e) => {
                                tracing::error!("spilled windows lost, they can no longer be corrected: {e}");
                                (start, Vec::new())
                            }
                        };
                        asked.remove(&start);
                        cold.remove(&start);
                        let m = closed.entry(start).or_default();
                        if m.rows.is_empty() {
                            m.rows = rows;
                        } else {
                            m.rows.extend(rows);
                            m.rows.sort_by_key(|a| a.tag);
                        }
                    }
                }

                let Some(c) = cap.as_mut() else { return };
                let least = |f: &timely::progress::frontier::MutableAntichain<u64>| {
                    f.frontier().iter().min().copied()
                };
                let f = match (least(f1), least(f2)) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                // Closes and late rows at a time the frontier has reached, context
                // updates at a time it has passed (all of that time's batch is in).
                let done = |time: u64| f.is_none_or(|f| time <= f);
                let complete = |time: u64| f.is_none_or(|f| time < f);
                // The time of an event waiting for spilled windows.
                let mut waiting: Option<u64> = None;
                // The time of the event the activation yielded before.
                let mut yielded: Option<u64> = None;
                let mut emitted = 0;

                loop {
                    let first_retained = match (closed.keys().next(), cold.first()) {
                        (Some(a), Some(b)) => Some(*a.min(b)),
                        (a, b) => a.or(b).copied(),
                    };
                    let candidates = [
                        open.keys().next().map(|e| (*e as u64, Event::Close)),
                        late.keys().next().map(|t| (*t, Event::Late)),
                        changes
                            .keys()
                            .next()
                            .filter(|t| complete(**t))
                            .map(|t| (*t, Event::Context)),
                        // Expiry only while input continues; 1 ms after the
                        // retraction time, so a close at that time (an hourly
                        // one) never waits for a spilled start to be read.
                        first_retained
                            .filter(|_| f.is_some())
                            .map(|ws| (geo.retract_at(ws + geo.size_ms) as u64 + 1, Event::Expire)),
                    ];
                    let Some((time, event)) = candidates
                        .into_iter()
                        .flatten()
                        .filter(|(t, e)| *e == Event::Context || done(*t))
                        .min()
                    else {
                        break;
                    };
                    if emitted >= ACTIVATION_ROWS {
                        yielded = Some(time);
                        me.activate();
                        break;
                    }
                    // Spilled starts this event needs back first.
                    if !cold.is_empty() {
                        let need: Vec<i64> = match event {
                            Event::Close => Vec::new(),
                            Event::Late => late[&time]
                                .iter()
                                .map(|s| geo.start_of(s.ts))
                                .filter(|ws| cold.contains(ws))
                                .collect(),
                            Event::Context => cold
                                .iter()
                                .copied()
                                .filter(|ws| emitter.touches(&changes[&time], *ws))
                                .collect(),
                            Event::Expire => first_retained.filter(|ws| cold.contains(ws)).into_iter().collect(),
                        };
                        if !need.is_empty() {
                            if let Some((st, _)) = &store {
                                for ws in need {
                                    if !asked.contains(&ws) && st.read(ws) {
                                        asked.insert(ws);
                                    }
                                }
                                if asked.is_empty() {
                                    // The store's queue is full: try again soon.
                                    me.activate();
                                }
                            }
                            waiting = Some(time);
                            break;
                        }
                    }
                    let at = c.delayed(&time.max(*c.time()));
                    let tt = *at.time();
                    match event {
                        Event::Close => {
                            let end = time as i64;
                            let start = end - geo.size_ms;
                            let accs = match open.remove(&end) {
                                Some(w) => {
                                    slots = slots.max(w.accs.len());
                                    w.into_sorted()
                                }
                                None => Vec::new(),
                            };
                            tracing::trace!(target: "plantflow::latency", epoch = tt, n = accs.len(), "window closed");
                            for acc in &accs {
                                emitter.emit(acc.tag, &acc.agg(start, geo.size_ms), 1, &mut buf);
                            }
                            closed.entry(start).or_default().extend(accs);
                        }
                        Event::Late => {
                            let rows = late.remove(&time).unwrap_or_default();
                            let mut before: BTreeMap<(i64, TagId), Option<WindowAgg>> =
                                BTreeMap::new();
                            for s in &rows {
                                let start = geo.start_of(s.ts);
                                let m = closed.entry(start).or_default();
                                before.entry((start, s.tag)).or_insert_with(|| {
                                    m.get(s.tag).map(|a| a.agg(start, geo.size_ms))
                                });
                                m.add(s, (s.ts - start) as u32);
                            }
                            for ((start, tag), old) in before {
                                if let Some(old) = old {
                                    emitter.emit(tag, &old, -1, &mut buf);
                                }
                                let Some(new) = closed[&start].get(tag).map(|a| a.agg(start, geo.size_ms)) else {
                                    continue;
                                };
                                emitter.emit(tag, &new, 1, &mut buf);
                            }
                        }
                        Event::Context => {
                            let batch = changes.remove(&time).unwrap_or_default();
                            let hit = emitter.affected(&batch, &closed);
                            let aggs: Vec<(TagId, WindowAgg)> = hit
                                .iter()
                                .filter_map(|(ws, tag)| {
                                    let acc = closed.get(ws)?.get(*tag)?;
                                    Some((*tag, acc.agg(*ws, geo.size_ms)))
                                })
                                .collect();
                            for (tag, agg) in &aggs {
                                emitter.emit(*tag, agg, -1, &mut buf);
                            }
                            emitter.apply(batch);
                            for (tag, agg) in &aggs {
                                emitter.emit(*tag, agg, 1, &mut buf);
                            }
                        }
                        Event::Expire => {
                            if let Some((start, windows)) = closed.pop_first() {
                                for acc in &windows.rows {
                                    emitter.emit(acc.tag, &acc.agg(start, geo.size_ms), -1, &mut buf);
                                }
                            }
                        }
                    }
                    if !buf.is_empty() {
                        emitted += buf.len();
                        let mut session = output.session(&at);
                        session.give_iterator(buf.drain(..).map(|(d, r)| (d, tt, r)));
                    }
                    // A close fills the buffer with a row per tag: do not keep
                    // that much room between closes.
                    if buf.capacity() > SPARE_ROWS {
                        buf = Vec::new();
                    }
                }

                // Starts whose windows closed `after` ago go to the store, unless
                // they expire within `after` anyway.
                if let (Some((st, after)), Some(f), None) = (&store, f, waiting) {
                    let f = f as i64;
                    let due: Vec<i64> = closed
                        .keys()
                        .copied()
                        .take_while(|start| start + geo.size_ms + after <= f)
                        .filter(|start| geo.retract_at(start + geo.size_ms) > f + after)
                        .collect();
                    for start in due {
                        let Some(m) = closed.remove(&start) else { continue };
                        match st.write(start, m.rows) {
                            Ok(()) => {
                                cold.insert(start);
                            }
                            Err(rows) => {
                                closed.insert(start, Closed { rows });
                                break;
                            }
                        }
                    }
                }

                // Every event up to the frontier (after a yield: before the
                // yielded one) has been handled, so what comes later (closes,
                // late rows, context changes) only touches windows that expire
                // at or after it: those starting after
                // `f - retention - period - size`.
                if let (Some(f), None) = (f, waiting) {
                    let f = yielded.map_or(f, |y| f.min(y.saturating_sub(1)));
                    let before = f as i64 - geo.retention_ms - geo.period_ms - geo.size_ms;
                    if before >= retired.saturating_add(geo.size_ms) {
                        emitter.retire(before);
                        retired = before;
                    }
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
            window(input.to_stream(scope), none, geo, "window", Bare, None)
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
