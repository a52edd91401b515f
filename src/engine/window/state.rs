//! The window operator's state and what it does at each event: samples in,
//! closes, late rows, context changes, expiry, and the spill tier.

use std::collections::{BTreeMap, BTreeSet};

use super::acc::{Acc, Closed, Open};
use super::Emit;
use crate::engine::context::CtxUpdate;
use crate::engine::spill::{Reply, Store};
use crate::ingest::Geometry;
use crate::model::hint::AHEAD;
use crate::model::{Sample, TagId, WindowAgg};

/// The next event of the operator, in time order.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub(super) enum Event {
    /// Windows ending at the time close (first at equal times).
    Close,
    /// Rows that arrived after their window closed.
    Late,
    /// A batch of context updates.
    Context,
    /// Windows past retention leave state (last).
    Expire,
}

/// Everything one worker's window operator holds between activations.
pub(super) struct State<E: Emit> {
    pub geo: Geometry,
    pub emitter: E,
    /// Open windows by end time.
    pub open: BTreeMap<i64, Open>,
    /// This worker's index and the number of workers.
    pub me_of: (usize, usize),
    /// Slots the last closed window used: the next one starts that big.
    pub slots: usize,
    /// Late rows by their time, processed once the frontier reaches it.
    pub late: BTreeMap<u64, Vec<Sample>>,
    /// Emitted windows that may still be corrected, by window start.
    pub closed: BTreeMap<i64, Closed>,
    /// Context updates by time, applied once the time is complete.
    pub changes: BTreeMap<u64, Vec<(CtxUpdate, isize)>>,
    /// Output rows of the event being handled.
    pub buf: Vec<(E::Out, isize)>,
    /// The cold tier and how old a closed window is when it goes there.
    pub store: Option<(Store<Vec<Acc>>, i64)>,
    /// Starts whose windows are in the store, and those asked back but not
    /// yet returned.
    pub cold: BTreeSet<i64>,
    pub asked: BTreeSet<i64>,
    /// The last bound given to `Emit::retire`.
    pub retired: i64,
}

/// What a checkpoint keeps of the operator: its open and retained windows
/// and its emitter's context. Late rows and context changes still waiting
/// are at or after the checkpoint's time (everything before it has been
/// handled), so they are not part of it. Generic so one description both
/// writes borrowed maps and reads owned ones.
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct Image<O, C> {
    open: O,
    slots: usize,
    closed: C,
    retired: i64,
    emitter: Vec<u8>,
}

/// A checkpoint's image as written (borrowed) and as read (owned).
pub(super) type Saved<'a> = Image<&'a BTreeMap<i64, Open>, &'a BTreeMap<i64, Closed>>;
pub(super) type Loaded = Image<BTreeMap<i64, Open>, BTreeMap<i64, Closed>>;

impl<E: Emit> State<E> {
    /// Puts the operator's part of the checkpoint at `at`: its image, and
    /// with a store the starts it holds and the store's snapshot of them
    /// (asked now, so it sees every spill before and none after).
    pub fn checkpoint(&self, barrier: &crate::engine::checkpoint::Barrier, at: u64) {
        // Everything before `at` is handled: no read is on its way.
        debug_assert!(self.asked.is_empty());
        barrier.put("window", &self.save());
        if let Some((st, _)) = &self.store {
            barrier.put_cold("window", &self.cold, st.snapshot(at));
        }
    }

    /// The operator's state for a checkpoint (see [`Image`]); spilled
    /// windows are linked beside it ([`State::checkpoint`]).
    pub fn save(&self) -> Saved<'_> {
        Image {
            open: &self.open,
            slots: self.slots,
            closed: &self.closed,
            retired: self.retired,
            emitter: self.emitter.save(),
        }
    }

    /// Starts from a checkpoint's image.
    pub fn load(&mut self, img: Loaded) {
        self.open = img.open;
        self.slots = img.slots;
        self.closed = img.closed;
        self.retired = img.retired;
        self.emitter.load(&img.emitter);
    }

    /// Takes the starts the checkpoint's store holds (linked back as the
    /// store starts), if the run starts from one.
    pub fn load_cold(&mut self, cold: Option<BTreeSet<i64>>) {
        let Some(cold) = cold else { return };
        match self.store {
            Some(_) => self.cold = cold,
            None => tracing::error!(
                starts = cold.len(),
                "the checkpoint's spilled windows cannot be read without a spill store, they can no longer be corrected"
            ),
        }
    }

    /// Takes a batch of samples sent at time `t`: rows of open windows join
    /// them, rows of closed windows wait as late rows.
    pub fn take<I: super::Input>(&mut self, t: u64, batch: &mut Vec<I>) {
        let geo = self.geo;
        // Rows of a batch mostly share a window: look its map up once.
        let mut cur_end = i64::MIN;
        let mut cur: Option<&mut Open> = None;
        let mut rest = batch.drain(..);
        while let Some(row) = rest.next() {
            if let (Some(m), Some(next)) = (cur.as_deref(), rest.as_slice().get(AHEAD)) {
                m.prefetch(next.tag(), self.me_of);
            }
            let s = match row.row() {
                super::Row::Sample(s) => s,
                // A cluster's partial window: always on time (see `combine`).
                super::Row::Part(start, acc) => {
                    (cur, cur_end) = (None, i64::MIN);
                    let end = start + geo.size_ms;
                    let slots = self.slots;
                    let open = self
                        .open
                        .entry(end)
                        .or_insert_with(|| Open::with_capacity(slots));
                    open.merge(acc, self.me_of);
                    continue;
                }
            };
            let start = geo.start_of(s.ts);
            let end = start + geo.size_ms;
            if (t as i64) < end {
                if end != cur_end || cur.is_none() {
                    let slots = self.slots;
                    cur = Some(
                        self.open
                            .entry(end)
                            .or_insert_with(|| Open::with_capacity(slots)),
                    );
                    cur_end = end;
                }
                if let Some(m) = cur.as_mut() {
                    m.add(&s, (s.ts - start) as u32, self.me_of);
                }
            } else {
                self.late.entry(t).or_default().push(s);
            }
        }
    }

    /// Takes the spilled windows the store has read back.
    pub fn restore(&mut self) {
        let Some((st, _)) = &self.store else { return };
        while let Some(reply) = st.reply() {
            let (start, rows) = match reply {
                Reply::Records(start, rows) => (start, rows),
                Reply::Lost(start, e) => {
                    tracing::error!("spilled windows lost, they can no longer be corrected: {e}");
                    (start, Vec::new())
                }
            };
            self.asked.remove(&start);
            self.cold.remove(&start);
            let m = self.closed.entry(start).or_default();
            if m.rows.is_empty() {
                m.rows = rows;
            } else {
                m.rows.extend(rows);
                m.rows.sort_by_key(|a| a.tag);
            }
        }
    }

    /// The first retained window start, in memory or spilled.
    fn first_retained(&self) -> Option<i64> {
        match (self.closed.keys().next(), self.cold.first()) {
            (Some(a), Some(b)) => Some(*a.min(b)),
            (a, b) => a.or(b).copied(),
        }
    }

    /// The next event to handle with the inputs' frontier at `f` (none: the
    /// inputs have ended). Closes and late rows at a time the frontier has
    /// reached, context updates at a time it has passed (all of that time's
    /// batch is in).
    pub fn next(&self, f: Option<u64>) -> Option<(u64, Event)> {
        let done = |time: u64| f.is_none_or(|f| time <= f);
        let complete = |time: u64| f.is_none_or(|f| time < f);
        let geo = self.geo;
        let candidates = [
            self.open.keys().next().map(|e| (*e as u64, Event::Close)),
            self.late.keys().next().map(|t| (*t, Event::Late)),
            self.changes
                .keys()
                .next()
                .filter(|t| complete(**t))
                .map(|t| (*t, Event::Context)),
            // Expiry only while input continues; 1 ms after the
            // retraction time, so a close at that time (an hourly
            // one) never waits for a spilled start to be read.
            self.first_retained()
                .filter(|_| f.is_some())
                .map(|ws| (geo.retract_at(ws + geo.size_ms) as u64 + 1, Event::Expire)),
        ];
        candidates
            .into_iter()
            .flatten()
            .filter(|(t, e)| *e == Event::Context || done(*t))
            .min()
    }

    /// The spilled starts `event` at `time` needs back before it can be handled.
    pub fn needs_back(&self, event: Event, time: u64) -> Vec<i64> {
        if self.cold.is_empty() {
            return Vec::new();
        }
        let geo = self.geo;
        match event {
            Event::Close => Vec::new(),
            Event::Late => self.late[&time]
                .iter()
                .map(|s| geo.start_of(s.ts))
                .filter(|ws| self.cold.contains(ws))
                .collect(),
            Event::Context => self
                .cold
                .iter()
                .copied()
                .filter(|ws| self.emitter.touches(&self.changes[&time], *ws))
                .collect(),
            Event::Expire => self
                .first_retained()
                .filter(|ws| self.cold.contains(ws))
                .into_iter()
                .collect(),
        }
    }

    /// Asks the store for spilled starts; true when its queue was full and
    /// nothing is on its way (try again soon).
    pub fn ask(&mut self, need: Vec<i64>) -> bool {
        let Some((st, _)) = &self.store else {
            return false;
        };
        for ws in need {
            if !self.asked.contains(&ws) && st.read(ws) {
                self.asked.insert(ws);
            }
        }
        self.asked.is_empty()
    }

    /// Handles `event` at `time` (output time `tt`), leaving its rows in `buf`.
    pub fn handle(&mut self, event: Event, time: u64, tt: u64) {
        let geo = self.geo;
        match event {
            Event::Close => {
                let end = time as i64;
                let start = end - geo.size_ms;
                let accs = match self.open.remove(&end) {
                    Some(w) => {
                        self.slots = self.slots.max(w.accs.len());
                        w.into_sorted()
                    }
                    None => Vec::new(),
                };
                tracing::trace!(target: "plantflow::latency", epoch = tt, n = accs.len(), "window closed");
                for acc in &accs {
                    self.emitter
                        .emit(acc.tag, &acc.agg(start, geo.size_ms), 1, &mut self.buf);
                }
                self.closed.entry(start).or_default().extend(accs);
            }
            Event::Late => {
                let rows = self.late.remove(&time).unwrap_or_default();
                let mut before: BTreeMap<(i64, TagId), Option<WindowAgg>> = BTreeMap::new();
                for s in &rows {
                    let start = geo.start_of(s.ts);
                    let m = self.closed.entry(start).or_default();
                    before
                        .entry((start, s.tag))
                        .or_insert_with(|| m.get(s.tag).map(|a| a.agg(start, geo.size_ms)));
                    m.add(s, (s.ts - start) as u32);
                }
                for ((start, tag), old) in before {
                    if let Some(old) = old {
                        self.emitter.emit(tag, &old, -1, &mut self.buf);
                    }
                    let Some(new) = self.closed[&start]
                        .get(tag)
                        .map(|a| a.agg(start, geo.size_ms))
                    else {
                        continue;
                    };
                    self.emitter.emit(tag, &new, 1, &mut self.buf);
                }
            }
            Event::Context => {
                let batch = self.changes.remove(&time).unwrap_or_default();
                let hit = self.emitter.affected(&batch, &self.closed);
                let aggs: Vec<(TagId, WindowAgg)> = hit
                    .iter()
                    .filter_map(|(ws, tag)| {
                        let acc = self.closed.get(ws)?.get(*tag)?;
                        Some((*tag, acc.agg(*ws, geo.size_ms)))
                    })
                    .collect();
                for (tag, agg) in &aggs {
                    self.emitter.emit(*tag, agg, -1, &mut self.buf);
                }
                self.emitter.apply(batch);
                for (tag, agg) in &aggs {
                    self.emitter.emit(*tag, agg, 1, &mut self.buf);
                }
            }
            Event::Expire => {
                if let Some((start, windows)) = self.closed.pop_first() {
                    for acc in &windows.rows {
                        self.emitter
                            .emit(acc.tag, &acc.agg(start, geo.size_ms), -1, &mut self.buf);
                    }
                }
            }
        }
    }

    /// Starts whose windows closed `after` ago go to the store (with the
    /// frontier at `f`), unless they expire within `after` anyway.
    pub fn spill(&mut self, f: u64) {
        let Some((st, after)) = &self.store else {
            return;
        };
        let (geo, after, f) = (self.geo, *after, f as i64);
        let due: Vec<i64> = self
            .closed
            .keys()
            .copied()
            .take_while(|start| start + geo.size_ms + after <= f)
            .filter(|start| geo.retract_at(start + geo.size_ms) > f + after)
            .collect();
        for start in due {
            let Some(m) = self.closed.remove(&start) else {
                continue;
            };
            match st.write(start, m.rows) {
                Ok(()) => {
                    self.cold.insert(start);
                }
                Err(rows) => {
                    self.closed.insert(start, Closed { rows });
                    break;
                }
            }
        }
    }

    /// Every event up to the frontier `f` (after a yield: before the yielded
    /// one) has been handled, so what comes later (closes, late rows, context
    /// changes) only touches windows that expire at or after it: those
    /// starting after `f - retention - period - size`.
    pub fn retire(&mut self, f: u64, yielded: Option<u64>) {
        let geo = self.geo;
        let f = yielded.map_or(f, |y| f.min(y.saturating_sub(1)));
        let before = f as i64 - geo.retention_ms - geo.period_ms - geo.size_ms;
        if before >= self.retired.saturating_add(geo.size_ms) {
            self.emitter.retire(before);
            self.retired = before;
        }
    }
}
