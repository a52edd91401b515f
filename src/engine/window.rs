//! `window`: per-tag tumbling-window pre-aggregation in one timely operator.
//!
//! Raw samples never reach differential: this operator keeps a small running
//! aggregate per open `(tag, window)` and emits *differential updates* of
//! window aggregates, so its output is a collection:
//!
//! - a window `[s, e)` is emitted (`+1`) at time `e`, once the input frontier
//!   reaches `e` (every row sent before the watermark passed `e` is in);
//! - a row arriving later (time `t >= e`) corrects it at time `t`:
//!   `(old, −1), (new, +1)` — a new revision downstream, never a drop;
//! - a closed window is retracted (`−1`) at `align_up(e, period) + retention`,
//!   which bounds state; rows later than that are dead-lettered by the source.
//!
//! Emission times depend only on the times rows were sent at, so the output
//! is the same for any number of workers.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::Stream;

use crate::model::{Sample, TagId, WindowAgg, F64};

/// Running aggregate of one window.
#[derive(Clone, Debug)]
struct Acc {
    count: i64,
    sum: f64,
    min: f64,
    max: f64,
    first: (i64, f64),
    last: (i64, f64),
}

impl Acc {
    fn new(s: &Sample) -> Acc {
        Acc {
            count: 1,
            sum: s.value,
            min: s.value,
            max: s.value,
            first: (s.ts, s.value),
            last: (s.ts, s.value),
        }
    }

    fn add(&mut self, s: &Sample) {
        self.count += 1;
        self.sum += s.value;
        self.min = self.min.min(s.value);
        self.max = self.max.max(s.value);
        if s.ts < self.first.0 {
            self.first = (s.ts, s.value);
        }
        if s.ts >= self.last.0 {
            self.last = (s.ts, s.value);
        }
    }

    fn agg(&self, start: i64, size: i64) -> WindowAgg {
        WindowAgg {
            window_start: start,
            window_end: start + size,
            count: self.count,
            mean: F64(self.sum / self.count as f64),
            min: F64(self.min),
            max: F64(self.max),
            first: F64(self.first.1),
            last: F64(self.last.1),
        }
    }
}

/// Window geometry shared with the sinks.
#[derive(Clone, Copy, Debug)]
pub struct Geometry {
    pub size_ms: i64,
    /// Windows are retracted a whole `period_ms` bucket at a time.
    pub period_ms: i64,
    pub retention_ms: i64,
}

impl Geometry {
    pub fn start_of(&self, ts: i64) -> i64 {
        ts.div_euclid(self.size_ms) * self.size_ms
    }

    /// When a window (or action period) ending at `end` leaves state.
    pub fn retract_at(&self, end: i64) -> i64 {
        let p = self.period_ms;
        (end + p - 1).div_euclid(p) * p + self.retention_ms
    }
}

type Update = ((TagId, WindowAgg), u64, isize);

/// Builds the window operator over a stream of samples.
pub fn window<'s>(
    samples: Stream<'s, u64, Vec<Sample>>,
    geo: Geometry,
    name: &str,
) -> Stream<'s, u64, Vec<Update>> {
    // The bridge already sent each tag's rows to its worker (`bridge::worker_of`).
    samples.unary_frontier::<CapacityContainerBuilder<Vec<Update>>, _, _, _>(
        Pipeline,
        name,
        move |cap, _info| {
            let mut cap = Some(cap);
            // Open windows by end time.
            let mut open: BTreeMap<i64, FxHashMap<TagId, Acc>> = BTreeMap::new();
            // Late rows by their time, processed once the frontier reaches it.
            let mut late: BTreeMap<u64, Vec<Sample>> = BTreeMap::new();
            // Emitted windows that may still be corrected, and their expiry.
            let mut closed: FxHashMap<(TagId, i64), Acc> = FxHashMap::default();
            let mut expiry: BTreeMap<i64, Vec<(TagId, i64)>> = BTreeMap::new();

            move |(input, frontier), output| {
                input.for_each_stamp(|stamp, data| {
                    let t = stamp.least().copied().unwrap_or(0);
                    for batch in data {
                        // Rows of a batch mostly share a window: look its map up once.
                        let mut cur_end = i64::MIN;
                        let mut cur: Option<&mut FxHashMap<TagId, Acc>> = None;
                        for s in batch.drain(..) {
                            let start = geo.start_of(s.ts);
                            let end = start + geo.size_ms;
                            if (t as i64) < end {
                                if end != cur_end || cur.is_none() {
                                    cur = Some(open.entry(end).or_default());
                                    cur_end = end;
                                }
                                if let Some(m) = cur.as_mut() {
                                    m.entry(s.tag)
                                        .and_modify(|a| a.add(&s))
                                        .or_insert_with(|| Acc::new(&s));
                                }
                            } else {
                                late.entry(t).or_default().push(s);
                            }
                        }
                    }
                });

                let Some(c) = cap.as_mut() else { return };
                let f = frontier.frontier().iter().min().copied();
                let done = |time: u64| f.is_none_or(|f| time <= f);

                // Events in time order: window closes at their end, late rows at their time,
                // expiries at theirs. Closes before late rows of the same time.
                loop {
                    let next_close = open.keys().next().copied().filter(|e| done(*e as u64));
                    let next_late = late.keys().next().copied().filter(|t| done(*t));
                    let (close_first, time) = match (next_close, next_late) {
                        (Some(e), Some(t)) if (e as u64) <= t => (true, e as u64),
                        (Some(e), None) => (true, e as u64),
                        (_, Some(t)) => (false, t),
                        (None, None) => break,
                    };
                    let at = c.delayed(&time.max(*c.time()));
                    let tt = *at.time();
                    let mut session = output.session(&at);
                    if close_first {
                        let end = time as i64;
                        let windows = open.remove(&end).unwrap_or_default();
                        let start = end - geo.size_ms;
                        let mut keys: Vec<_> = windows.into_iter().collect();
                        keys.sort_by_key(|(tag, _)| *tag);
                        tracing::trace!(target: "plantflow::latency", epoch = tt, n = keys.len(), "window closed");
                        for (tag, acc) in keys {
                            session.give(((tag, acc.agg(start, geo.size_ms)), tt, 1));
                            expiry
                                .entry(geo.retract_at(end))
                                .or_default()
                                .push((tag, start));
                            closed.insert((tag, start), acc);
                        }
                    } else {
                        let rows = late.remove(&time).unwrap_or_default();
                        let mut before: BTreeMap<(TagId, i64), Option<WindowAgg>> = BTreeMap::new();
                        for s in &rows {
                            let start = geo.start_of(s.ts);
                            let key = (s.tag, start);
                            before.entry(key).or_insert_with(|| {
                                closed.get(&key).map(|a| a.agg(start, geo.size_ms))
                            });
                            match closed.get_mut(&key) {
                                Some(acc) => acc.add(s),
                                None => {
                                    closed.insert(key, Acc::new(s));
                                    expiry
                                        .entry(geo.retract_at(start + geo.size_ms))
                                        .or_default()
                                        .push(key);
                                }
                            }
                        }
                        for ((tag, start), old) in before {
                            if let Some(old) = old {
                                session.give(((tag, old), tt, -1));
                            }
                            let new = closed[&(tag, start)].agg(start, geo.size_ms);
                            session.give(((tag, new), tt, 1));
                        }
                    }
                }

                match f {
                    Some(f) => {
                        // Retract windows past retention (only while input continues).
                        while let Some((&at, _)) = expiry.first_key_value() {
                            if at as u64 > f {
                                break;
                            }
                            let keys = expiry.remove(&at).unwrap_or_default();
                            let when = c.delayed(&(at as u64).max(*c.time()));
                            let mut session = output.session(&when);
                            for (tag, start) in keys {
                                if let Some(acc) = closed.remove(&(tag, start)) {
                                    session.give((
                                        (tag, acc.agg(start, geo.size_ms)),
                                        *when.time(),
                                        -1,
                                    ));
                                }
                            }
                        }
                        if f > *c.time() {
                            c.downgrade(&f);
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
            window(input.to_stream(scope), geo, "window")
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
