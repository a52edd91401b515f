//! What the window operator keeps: a running aggregate per tag and window
//! ([`Acc`]), the open windows of an end time ([`Open`]) and the retained
//! windows of a start ([`Closed`]).

use rustc_hash::FxHashMap;

use crate::model::{Sample, TagId, WindowAgg, F64};

/// Running aggregate of one tag's window (56 bytes: it is what a retained
/// window costs). The first and last values' times are kept as offsets
/// into the window (`ms` since its start), only to order them.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Acc {
    pub(super) tag: TagId,
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
    pub(super) const EMPTY: Acc = Acc {
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
    pub(super) fn new(s: &Sample, at: u32) -> Acc {
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
    pub(super) fn add(&mut self, s: &Sample, at: u32) {
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

    /// Adds another partial window of the same tag and window (a cluster's
    /// process's rows, see `combine`): as if its rows were added after this
    /// one's, one by one.
    pub(super) fn merge(&mut self, o: &Acc) {
        self.count = self.count.saturating_add(o.count);
        self.sum += o.sum;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
        if o.first_at < self.first_at {
            (self.first_at, self.first) = (o.first_at, o.first);
        }
        if o.last_at >= self.last_at {
            (self.last_at, self.last) = (o.last_at, o.last);
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

    pub(super) fn agg(&self, start: i64, size: i64) -> WindowAgg {
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
#[derive(Default, serde::Serialize, serde::Deserialize)]
pub struct Closed {
    pub(super) rows: Vec<Acc>,
}

impl Closed {
    pub(super) fn find(&self, tag: TagId) -> Result<usize, usize> {
        self.rows.binary_search_by_key(&tag, |a| a.tag)
    }

    pub fn contains(&self, tag: TagId) -> bool {
        self.find(tag).is_ok()
    }

    pub(super) fn get(&self, tag: TagId) -> Option<&Acc> {
        self.find(tag).ok().map(|i| &self.rows[i])
    }

    /// The tags with a retained window, ascending.
    pub fn tags(&self) -> impl Iterator<Item = TagId> + '_ {
        self.rows.iter().map(|a| a.tag)
    }

    /// Adds a (late) row to its tag's window, `at` ms after its start.
    pub(super) fn add(&mut self, s: &Sample, at: u32) {
        match self.find(s.tag) {
            Ok(i) => self.rows[i].add(s, at),
            Err(i) => self.rows.insert(i, Acc::new(s, at)),
        }
    }

    /// Takes the windows that just closed (`accs` sorted by tag).
    pub(super) fn extend(&mut self, accs: Vec<Acc>) {
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
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct Open {
    pub(super) accs: Vec<Acc>,
    n: usize,
    other: FxHashMap<TagId, Acc>,
}

impl Open {
    /// Not inlined, so that heap profiles name the open windows' slots.
    #[inline(never)]
    pub(super) fn with_capacity(slots: usize) -> Open {
        Open {
            accs: Vec::with_capacity(slots),
            n: 0,
            other: FxHashMap::default(),
        }
    }

    /// A row of `tag` comes soon: load its window's slot (see
    /// [`crate::model::hint`]; a slot may straddle two cache lines).
    #[inline]
    pub(super) fn prefetch(&self, tag: TagId, (index, peers): (usize, usize)) {
        let t = tag as usize;
        if t % peers != index {
            return;
        }
        if let Some(a) = self.accs.get(t / peers) {
            let p = a as *const Acc as *const u8;
            crate::model::hint::prefetch(p);
            crate::model::hint::prefetch(p.wrapping_add(std::mem::size_of::<Acc>() - 1));
        }
    }

    pub(super) fn add(&mut self, s: &Sample, at: u32, me_of: (usize, usize)) {
        self.put(s.tag, me_of, || Acc::new(s, at), |a| a.add(s, at));
    }

    /// Merges a partial window of one tag (see [`Acc::merge`]).
    pub(super) fn merge(&mut self, p: Acc, me_of: (usize, usize)) {
        self.put(p.tag, me_of, || p.clone(), |a| a.merge(&p));
    }

    /// Puts a row (or a partial window) into its tag's window: `new` makes
    /// the window's first, `fold` adds to one there is.
    #[inline]
    fn put(
        &mut self,
        tag: TagId,
        (index, peers): (usize, usize),
        new: impl FnOnce() -> Acc,
        fold: impl FnOnce(&mut Acc),
    ) {
        let t = tag as usize;
        if t % peers != index {
            match self.other.entry(tag) {
                std::collections::hash_map::Entry::Occupied(mut e) => fold(e.get_mut()),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(new());
                }
            }
            return;
        }
        let slot = t / peers;
        if slot >= self.accs.len() {
            self.accs.resize(slot + 1, Acc::EMPTY);
        }
        let a = &mut self.accs[slot];
        if a.count == 0 {
            *a = new();
            self.n += 1;
        } else {
            fold(a);
        }
    }

    /// The windows, sorted by tag.
    pub(super) fn into_sorted(self) -> Vec<Acc> {
        let mut out = Vec::with_capacity(self.n + self.other.len());
        out.extend(self.accs.into_iter().filter(|a| a.count > 0));
        if !self.other.is_empty() {
            out.extend(self.other.into_values());
            out.sort_unstable_by_key(|a| a.tag);
        }
        out
    }
}
