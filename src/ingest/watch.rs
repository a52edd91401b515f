//! What the node has seen of each tag: samples, first and latest event
//! time, latest value, smallest and largest, since when it has not changed;
//! and the tags samples came for that the assets table does not know.
//!
//! A source keeps its own [`Seen`] (plain stores in one cache line per tag,
//! no lock per sample) and merges it into the shared [`TagWatch`] at most
//! every [`MERGE_EVERY`] and whenever it goes idle, so the cost per sample
//! is a few compares.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::model::TagId;

/// How often a busy source merges what it has seen.
pub const MERGE_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// Unknown tag names the watch keeps (per source batch and in all); more
/// are counted, not named (hostile input cannot grow it).
pub const MAX_UNMAPPED: usize = 10_000;
const MAX_UNMAPPED_PER_BATCH: usize = 1_000;

/// One tag, as seen so far.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TagStat {
    pub samples: u64,
    pub first_ts: i64,
    pub last_ts: i64,
    pub last_value: f64,
    /// Event time since which the value has been `last_value`.
    pub changed_at: i64,
    pub min: f64,
    pub max: f64,
}

/// No change of value within the part.
const UNCHANGED: i64 = i64::MIN;

/// One tag since the source's last merge: 64 bytes, aligned to one cache
/// line; `n` 0 is an empty slot.
#[derive(Clone, Copy, Debug, Default)]
#[repr(align(64))]
struct Part {
    n: u64,
    first_ts: i64,
    first_value: f64,
    last_ts: i64,
    last_value: f64,
    /// The latest change of value within the part (event time), or [`UNCHANGED`].
    changed_at: i64,
    min: f64,
    max: f64,
}

impl Part {
    fn new(ts: i64, v: f64) -> Part {
        Part {
            n: 1,
            first_ts: ts,
            first_value: v,
            last_ts: ts,
            last_value: v,
            changed_at: UNCHANGED,
            min: v,
            max: v,
        }
    }

    #[inline]
    fn add(&mut self, ts: i64, v: f64) {
        self.n += 1;
        // Finite values only (the normaliser rejects the others): plain compares.
        if v < self.min {
            self.min = v;
        }
        if v > self.max {
            self.max = v;
        }
        if ts < self.first_ts {
            self.first_ts = ts;
        }
        if ts >= self.last_ts {
            if v != self.last_value {
                self.changed_at = ts;
            }
            self.last_ts = ts;
            self.last_value = v;
        }
    }

    fn changed(&self) -> Option<i64> {
        (self.changed_at != UNCHANGED).then_some(self.changed_at)
    }

    /// Folds this batch's part into what was seen before.
    fn into(self, s: &mut TagStat) {
        if s.samples == 0 {
            *s = TagStat {
                samples: self.n,
                first_ts: self.first_ts,
                last_ts: self.last_ts,
                last_value: self.last_value,
                changed_at: self.changed().unwrap_or(self.first_ts),
                min: self.min,
                max: self.max,
            };
            return;
        }
        s.samples += self.n;
        s.min = s.min.min(self.min);
        s.max = s.max.max(self.max);
        s.first_ts = s.first_ts.min(self.first_ts);
        if self.last_ts >= s.last_ts {
            let at_start = (self.first_value != s.last_value).then_some(self.first_ts);
            if let Some(c) = self.changed().or(at_start) {
                s.changed_at = c;
            }
            s.last_ts = self.last_ts;
            s.last_value = self.last_value;
        }
    }
}

/// A source's tags since its last merge.
#[derive(Default)]
pub struct Seen {
    /// By tag id; `n == 0` for tags not seen since.
    parts: Vec<Part>,
    touched: Vec<TagId>,
    unmapped: HashMap<String, Part>,
    unmapped_over: u64,
}

impl Seen {
    /// A sample of `tag` comes soon: load its slot (see [`crate::model::hint`]).
    #[inline]
    pub fn prefetch(&self, tag: TagId) {
        if let Some(p) = self.parts.get(tag as usize) {
            crate::model::hint::prefetch(p);
        }
    }

    /// A sample of a known tag was taken.
    #[inline]
    pub fn sample(&mut self, tag: TagId, ts: i64, v: f64) {
        let i = tag as usize;
        if i >= self.parts.len() {
            self.parts.resize(i + 1, Part::default());
        }
        let p = &mut self.parts[i];
        if p.n > 0 {
            p.add(ts, v);
        } else {
            *p = Part::new(ts, v);
            self.touched.push(tag);
        }
    }

    /// A sample came for a tag the assets table does not know.
    pub fn unmapped(&mut self, tag: &str, ts: i64, v: f64) {
        if let Some(p) = self.unmapped.get_mut(tag) {
            p.add(ts, v);
        } else if self.unmapped.len() < MAX_UNMAPPED_PER_BATCH {
            self.unmapped.insert(tag.to_string(), Part::new(ts, v));
        } else {
            self.unmapped_over += 1;
        }
    }

    fn is_empty(&self) -> bool {
        self.touched.is_empty() && self.unmapped.is_empty() && self.unmapped_over == 0
    }
}

#[derive(Default)]
struct Inner {
    known: Vec<TagStat>,
    unmapped: HashMap<String, TagStat>,
    /// Samples of unknown tags beyond [`MAX_UNMAPPED`] names.
    unmapped_over: u64,
    /// The unit a tag's device reports, by tag: (symbol, the protocol's
    /// name of it).
    units: HashMap<String, ReportedUnit>,
}

/// A unit as a device reports it: its symbol (`kW`, `°C`; empty when it
/// has none here) and the protocol's name (`kilowatts`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReportedUnit {
    pub symbol: String,
    pub name: String,
}

/// Every source's tags, merged (see the module's doc).
#[derive(Default)]
pub struct TagWatch {
    inner: Mutex<Inner>,
}

impl TagWatch {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Merges a source's batch and clears it for the next.
    pub fn merge(&self, seen: &mut Seen) {
        if seen.is_empty() {
            return;
        }
        let mut w = self.lock();
        for id in seen.touched.drain(..) {
            let i = id as usize;
            let p = std::mem::take(&mut seen.parts[i]);
            if p.n > 0 {
                if i >= w.known.len() {
                    w.known.resize(i + 1, TagStat::default());
                }
                p.into(&mut w.known[i]);
            }
        }
        for (tag, p) in seen.unmapped.drain() {
            if let Some(s) = w.unmapped.get_mut(&tag) {
                p.into(s);
            } else if w.unmapped.len() < MAX_UNMAPPED {
                let mut s = TagStat::default();
                p.into(&mut s);
                w.unmapped.insert(tag, s);
            } else {
                w.unmapped_over += p.n;
            }
        }
        w.unmapped_over += std::mem::take(&mut seen.unmapped_over);
    }

    /// Calls `each` with what was seen of every known tag (by id).
    pub fn known(&self, mut each: impl FnMut(TagId, &TagStat)) {
        let w = self.lock();
        for (i, s) in w.known.iter().enumerate() {
            each(i as TagId, s);
        }
    }

    /// The unknown tags seen, and the samples of those beyond [`MAX_UNMAPPED`].
    /// A source says which unit `tag`'s device reports.
    pub fn report_unit(&self, tag: &str, unit: ReportedUnit) {
        let mut w = self.lock();
        if w.units.get(tag) != Some(&unit) {
            w.units.insert(tag.to_string(), unit);
        }
    }

    /// The units devices reported, by tag.
    pub fn reported_units(&self) -> HashMap<String, ReportedUnit> {
        self.lock().units.clone()
    }

    pub fn unmapped(&self) -> (Vec<(String, TagStat)>, u64) {
        let w = self.lock();
        let mut v: Vec<_> = w.unmapped.iter().map(|(k, s)| (k.clone(), *s)).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        (v, w.unmapped_over)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Merged batch by batch, the stats equal those over the samples at once.
    #[test]
    fn batches_merge_to_what_one_pass_gives() {
        let samples = [
            (0, 1000, 5.0),
            (0, 2000, 5.0),
            (1, 1500, 1.0),
            (0, 3000, 7.0),
            (0, 4000, 7.0),
            (0, 5000, 7.0),
            (1, 9000, 1.0),
            (0, 3500, 9.0), // out of order: counted, not the latest
        ];
        for cut in 0..=samples.len() {
            let watch = TagWatch::default();
            let mut seen = Seen::default();
            for (i, (tag, ts, v)) in samples.iter().enumerate() {
                if i == cut {
                    watch.merge(&mut seen);
                }
                seen.sample(*tag, *ts, *v);
            }
            watch.merge(&mut seen);
            let mut got = Vec::new();
            watch.known(|id, s| got.push((id, *s)));
            let t0 = TagStat {
                samples: 6,
                first_ts: 1000,
                last_ts: 5000,
                last_value: 7.0,
                changed_at: 3000,
                min: 5.0,
                max: 9.0,
            };
            let t1 = TagStat {
                samples: 2,
                first_ts: 1500,
                last_ts: 9000,
                last_value: 1.0,
                changed_at: 1500,
                min: 1.0,
                max: 1.0,
            };
            assert_eq!(got, vec![(0, t0), (1, t1)], "cut at {cut}");
        }
    }

    #[test]
    fn unknown_tags_are_kept_up_to_a_bound() {
        let watch = TagWatch::default();
        let mut seen = Seen::default();
        for i in 0..(MAX_UNMAPPED + 50) {
            seen.unmapped(&format!("x{i}"), 1, 1.0);
            if i % 500 == 0 {
                watch.merge(&mut seen);
            }
        }
        watch.merge(&mut seen);
        let (names, over) = watch.unmapped();
        assert_eq!(names.len(), MAX_UNMAPPED);
        assert_eq!(over, 50);
    }
}
