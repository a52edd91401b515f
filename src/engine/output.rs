//! `revisions`: turns a differential collection into versioned output rows.
//!
//! For every key (a window's `(tag, window_start)`, an action's id) the sink
//! operator waits until a time is complete, consolidates the updates at that
//! time, and emits the surviving `+1` rows with the key's next `revision`
//! (0 first, +1 per correction; only revisions above 0 are kept, so an
//! unchanged window costs no state here). A key whose rows were only retracted either
//! aged out of retention (then its revision state is dropped silently) or was
//! withdrawn (an action whose condition no longer holds: emitted once with
//! status `withdrawn`). Keys are exchanged so one worker owns each key.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::Stream;
use timely::progress::frontier::MutableAntichain;

use super::checkpoint::{self, Checkpoints};
use crate::ingest::Geometry;

/// Updates held by timely time until the frontier says the time is complete.
pub struct TimeBuffer<D> {
    pending: BTreeMap<u64, Vec<(D, isize)>>,
}

impl<D> Default for TimeBuffer<D> {
    fn default() -> Self {
        TimeBuffer {
            pending: BTreeMap::new(),
        }
    }
}

impl<D: Ord> TimeBuffer<D> {
    pub fn extend(&mut self, updates: impl Iterator<Item = (D, u64, isize)>) {
        for (d, t, r) in updates {
            self.pending.entry(t).or_default().push((d, r));
        }
    }

    /// The earliest time held, complete or not.
    pub fn first_time(&self) -> Option<u64> {
        self.pending.keys().next().copied()
    }

    /// The earliest complete time and its updates as they came (not
    /// consolidated), if any, left in place.
    pub fn first_complete(&self, frontier: &MutableAntichain<u64>) -> Option<(u64, &[(D, isize)])> {
        let (&t, updates) = self.pending.first_key_value()?;
        (!frontier.less_equal(&t)).then_some((t, &updates[..]))
    }

    /// The earliest complete time and its consolidated updates, if any.
    pub fn pop_complete(
        &mut self,
        frontier: &MutableAntichain<u64>,
    ) -> Option<(u64, Vec<(D, isize)>)> {
        let (&t, _) = self.pending.first_key_value()?;
        if frontier.less_equal(&t) {
            return None;
        }
        let updates = self.pending.remove(&t).unwrap_or_default();
        Some((t, consolidate(updates)))
    }
}

/// Sums the diffs of equal rows and drops those that cancel.
fn consolidate<D: Ord>(mut updates: Vec<(D, isize)>) -> Vec<(D, isize)> {
    updates.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out: Vec<(D, isize)> = Vec::with_capacity(updates.len());
    for (d, r) in updates {
        match out.last_mut() {
            Some((last, lr)) if *last == d => *lr += r,
            _ => out.push((d, r)),
        }
    }
    out.retain(|(_, r)| *r != 0);
    out
}

/// A row type the sink can version.
pub trait Versioned: Clone + Ord + 'static {
    type Key: Hash + Ord + Clone + serde::Serialize + serde::de::DeserializeOwned + 'static;
    fn key(&self) -> Self::Key;
    fn key_hash(&self) -> u64;
    /// End of the row's window or period (for aging out).
    fn end(&self) -> i64;
    /// What to emit when the row is retracted without replacement inside retention.
    fn withdrawn(&self) -> Option<Self>;
}

/// Attaches revisions and hands complete rows to `emit` with their time
/// (it must not block); `progress` hears the operator's frontier (`u64::MAX` at the end)
/// after the rows before it were emitted.
pub fn revisions<'s, D, F, P>(
    stream: Stream<'s, u64, Vec<(D, u64, isize)>>,
    name: &str,
    (geo, to_one): (Geometry, bool),
    mut emit: F,
    mut progress: P,
    ck: &Checkpoints,
) where
    D: Versioned + timely::ExchangeData,
    F: FnMut(u64, Vec<(D, i64)>) + 'static,
    P: FnMut(u64) + 'static,
{
    let mut reported = 0u64;
    // `to_one`: every key on worker 0 (a cluster's one writer).
    let exchange = Exchange::new(
        move |u: &(D, u64, isize)| {
            if to_one {
                0
            } else {
                u.0.key_hash()
            }
        },
    );
    let mut pending = TimeBuffer::default();
    // Revisions above 0 (and of keys retracted without replacement) by key.
    let mut revision: HashMap<D::Key, i64> = ck.restore.take("revisions").unwrap_or_default();
    let ck = ck.clone();
    ck.barrier.register("revisions", None);
    let sink_name = name.to_string();
    stream.sink(exchange, name, move |(input, frontier)| {
        input.for_each_stamp(|_stamp, data| {
            for batch in data {
                pending.extend(batch.drain(..));
            }
        });
        while let Some((t, consolidated)) = pending.pop_complete(frontier) {
            tracing::trace!(target: "plantflow::latency", epoch = t, sink = %sink_name, n = consolidated.len(), "sink complete");
            // One key's updates next to each other (a stable sort: already
            // sorted for rows whose order starts with their key), then one
            // pass over the runs: no per-time map of the rows.
            let mut updates = consolidated;
            updates.sort_by_key(|u| u.0.key());
            let mut out = Vec::new();
            let mut it = updates.into_iter().peekable();
            while let Some((d, r)) = it.next() {
                let k = d.key();
                let (mut pos, mut neg) = (Vec::new(), None);
                let mut take = |d: D, r: isize| {
                    if r > 0 {
                        pos.push(d);
                    } else {
                        neg = Some(d);
                    }
                };
                take(d, r);
                while let Some((d, r)) = it.next_if(|(d, _)| d.key() == k) {
                    take(d, r);
                }
                // The last revision emitted: kept only once it is above 0, so a
                // key that never changes (nearly every window) costs nothing
                // here. A key not in the map was emitted at 0 if a retraction of
                // it arrives now, else it is new.
                let last = revision.get(&k).copied();
                if !pos.is_empty() {
                    let mut rev = last.unwrap_or(if neg.is_some() { 0 } else { -1 });
                    for d in pos {
                        rev += 1;
                        out.push((d, rev));
                    }
                    if rev > 0 {
                        revision.insert(k, rev);
                    }
                } else if let Some(old) = neg {
                    if geo.retract_at(old.end()) <= t as i64 {
                        revision.remove(&k);
                    } else if let Some(w) = old.withdrawn() {
                        let rev = last.unwrap_or(0) + 1;
                        revision.insert(k, rev);
                        out.push((w, rev));
                    } else {
                        // Retracted without replacement: remember where it was,
                        // so a later version continues from there.
                        revision.insert(k, last.unwrap_or(0));
                    }
                }
            }
            if !out.is_empty() {
                emit(t, out);
            }
        }
        if let Some(at) = ck.barrier.wants("revisions") {
            let f = frontier.frontier().iter().min().copied();
            if checkpoint::ready(at, f, pending.first_time()) {
                ck.barrier.put("revisions", &revision);
            }
        }
        report_progress(frontier, &mut reported, &mut progress);
    });
}

/// Calls `progress` with the frontier's least time (`u64::MAX` once it is
/// empty) when that has moved on since `reported`.
pub fn report_progress(
    frontier: &MutableAntichain<u64>,
    reported: &mut u64,
    progress: &mut impl FnMut(u64),
) {
    let now = frontier
        .frontier()
        .iter()
        .min()
        .copied()
        .unwrap_or(u64::MAX);
    if now > *reported {
        *reported = now;
        progress(now);
    }
}
