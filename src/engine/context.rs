//! `Context`: the context tables one worker enriches its windows with.
//!
//! Every worker holds a full copy of the (small) context tables: assets by
//! tag, the tariff by key, production runs by line and maintenance windows by
//! asset. Every worker feeds their updates to its own inputs, and the
//! window operator ([`super::window`]) looks a window's context up here when it
//! emits the window, instead of joining each window through a dozen
//! differential arrangements. When context changes, [`Context::affected`]
//! names the retained windows whose enrichment may change, so the operator can
//! retract their old rows and emit new ones: the output is the same
//! collection the joins gave (windows ⋈ assets ⋈ flags ⋈ tariff), with
//! corrections, at a fraction of the state and work.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use rustc_hash::FxHashMap;
use smallvec::SmallVec;

use super::window::Closed;
use super::Names;
use crate::model::tariff::Calendar;
use crate::model::Interval;
use crate::model::{AssetRow, Enriched, TagId, WindowAgg, F64};

/// An asset row with its asset and line interned: lookups key on the ids.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct AssetCtx {
    pub asset: u32,
    pub line: u32,
    pub row: Arc<AssetRow>,
}

/// One update of a context table, as every worker feeds it.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum CtxUpdate {
    Asset(TagId, AssetCtx),
    Tariff(u32, F64),
    Production(Interval),
    Maintenance(Interval),
}

/// A multiset as a short vector: context tables hold one row per key almost
/// always, so that row lives inline (a `Vec` would allocate room for four).
type Multi<T> = SmallVec<[(T, isize); 1]>;

/// Adds `r` copies of `x` to the multiset of `key`; a key left empty is dropped.
fn update<K: std::hash::Hash + Eq + Copy, T: PartialEq>(
    map: &mut FxHashMap<K, Multi<T>>,
    key: K,
    x: T,
    r: isize,
) {
    let m = map.entry(key).or_default();
    match m.iter_mut().find(|(y, _)| *y == x) {
        Some((_, c)) => *c += r,
        None => m.push((x, r)),
    }
    m.retain(|(_, c)| *c != 0);
    if m.is_empty() {
        map.remove(&key);
    }
}

/// The asset rows of one worker's tags, by tag. Tags are interned densely
/// and worker `i` of `n` owns the tags `t` with `t % n == i`, so `t / n`
/// indexes a vector: no hash table, no empty slots beyond unknown tags.
struct Assets {
    /// This worker's index and the number of workers.
    index: usize,
    peers: usize,
    rows: Vec<Multi<AssetCtx>>,
}

impl Default for Assets {
    fn default() -> Assets {
        Assets {
            index: 0,
            peers: 1,
            rows: Vec::new(),
        }
    }
}

impl Assets {
    fn slot(&self, tag: TagId) -> usize {
        tag as usize / self.peers
    }

    fn get(&self, tag: TagId) -> Option<&Multi<AssetCtx>> {
        self.rows.get(self.slot(tag)).filter(|m| !m.is_empty())
    }

    /// The tags with rows (of this worker), with their rows.
    fn iter(&self) -> impl Iterator<Item = (TagId, &Multi<AssetCtx>)> + '_ {
        let (index, peers) = (self.index, self.peers);
        self.rows
            .iter()
            .enumerate()
            .filter(|(_, m)| !m.is_empty())
            .map(move |(i, m)| ((i * peers + index) as TagId, m))
    }

    fn update(&mut self, tag: TagId, a: AssetCtx, r: isize) {
        let i = self.slot(tag);
        if i >= self.rows.len() {
            self.rows.resize_with(i + 1, Multi::new);
        }
        let m = &mut self.rows[i];
        match m.iter_mut().find(|(y, _)| *y == a) {
            Some((_, c)) => *c += r,
            None => m.push((a, r)),
        }
        m.retain(|(_, c)| *c != 0);
    }
}

/// Intervals by interned key (line or asset), with their multiplicities.
#[derive(Default)]
struct Intervals {
    by_key: FxHashMap<u32, Multi<(i64, i64)>>,
}

impl Intervals {
    /// Whether a positive interval of `key` covers the window starting at `ws`
    /// (`start <= ws < end`, the window-start rule of the original join).
    fn covers(&self, key: u32, ws: i64, size: i64) -> bool {
        self.by_key.get(&key).is_some_and(|ivs| {
            ivs.iter().any(|((s, e), c)| {
                let first = (s + size - 1).div_euclid(size) * size;
                *c > 0 && ws >= first && ws < *e
            })
        })
    }
}

/// The context tables of one worker.
pub struct Context {
    names: Arc<Names>,
    calendar: Calendar,
    size: i64,
    /// The asset rows of this worker's tags only (the tags whose windows it holds).
    assets: Assets,
    tariff: FxHashMap<u32, Multi<F64>>,
    running: Intervals,
    down: Intervals,
    /// The tariff key of the window start looked up last (windows close a start at a time).
    key_memo: Option<(i64, u32)>,
    /// Producing flags by line for the window start `memo_ws` (cleared when the
    /// start moves on, and on every context change).
    producing_memo: FxHashMap<u32, bool>,
    memo_ws: i64,
    /// Intervals ending at or before this are of no window still emitted
    /// ([`Context::retire`]): they are dropped, and updates to them ignored.
    retired: i64,
}

/// What a checkpoint keeps of a worker's context tables (generic so one
/// description writes borrowed tables and reads owned ones).
#[derive(serde::Serialize, serde::Deserialize)]
struct Image<A, T, I> {
    assets: A,
    tariff: T,
    running: I,
    down: I,
    retired: i64,
}

type Owned =
    Image<Vec<Multi<AssetCtx>>, FxHashMap<u32, Multi<F64>>, FxHashMap<u32, Multi<(i64, i64)>>>;

impl Context {
    /// The tables for a checkpoint, encoded.
    pub fn save(&self) -> Vec<u8> {
        let img = Image {
            assets: &self.assets.rows,
            tariff: &self.tariff,
            running: &self.running.by_key,
            down: &self.down.by_key,
            retired: self.retired,
        };
        postcard::to_allocvec(&img)
            .unwrap_or_else(|e| panic!("cannot encode the context tables for a checkpoint: {e}"))
    }

    /// Starts from [`Context::save`]'s bytes (of a worker with the same
    /// index and number of workers).
    pub fn load(&mut self, bytes: &[u8]) {
        let img: Owned = postcard::from_bytes(bytes)
            .unwrap_or_else(|e| panic!("cannot read the context tables of the checkpoint: {e}"));
        self.assets.rows = img.assets;
        self.tariff = img.tariff;
        self.running.by_key = img.running;
        self.down.by_key = img.down;
        self.retired = img.retired;
        self.key_memo = None;
        self.producing_memo.clear();
        self.memo_ws = i64::MIN;
    }

    pub fn new(names: Arc<Names>, calendar: Calendar, size: i64) -> Context {
        Context {
            names,
            calendar,
            size,
            assets: Assets::default(),
            tariff: FxHashMap::default(),
            running: Intervals::default(),
            down: Intervals::default(),
            key_memo: None,
            producing_memo: FxHashMap::default(),
            memo_ws: i64::MIN,
            retired: i64::MIN,
        }
    }

    /// Keeps only the asset rows of the tags `worker_of` gives worker `index`
    /// of `peers` (every worker is fed every update).
    pub fn owning(mut self, index: usize, peers: usize) -> Context {
        self.assets.index = index;
        self.assets.peers = peers.max(1);
        self
    }

    fn key_at(&mut self, ws: i64) -> u32 {
        match self.key_memo {
            Some((w, k)) if w == ws => k,
            _ => {
                let k = self.calendar.key_at(ws);
                self.key_memo = Some((ws, k));
                k
            }
        }
    }

    /// Pushes the enriched rows of window `agg` of `tag` with multiplicity
    /// `diff`: one per asset row and price (none when either is missing).
    pub fn enrich(
        &mut self,
        tag: TagId,
        agg: &WindowAgg,
        diff: isize,
        out: &mut Vec<(Enriched, isize)>,
    ) {
        if self.assets.get(tag).is_none() {
            return;
        }
        let ws = agg.window_start;
        let key = self.key_at(ws);
        let Some(prices) = self.tariff.get(&key) else {
            return;
        };
        if self.memo_ws != ws {
            self.producing_memo.clear();
            self.memo_ws = ws;
        }
        let Some(rows) = self.assets.get(tag) else {
            return;
        };
        for (a, r1) in rows {
            let producing = *self
                .producing_memo
                .entry(a.line)
                .or_insert_with(|| self.running.covers(a.line, ws, self.size));
            let in_maintenance = self.down.covers(a.asset, ws, self.size);
            for (price, r2) in prices {
                out.push((
                    Enriched {
                        tag,
                        win: agg.clone(),
                        asset: a.row.clone(),
                        tariff_key: key,
                        price_per_kwh: *price,
                        producing,
                        in_maintenance,
                        metrics: Default::default(),
                    },
                    diff * r1 * r2,
                ));
            }
        }
    }

    /// The retained windows (`closed`, by window start) whose
    /// enrichment `changes` may alter, as `(window start, tag)`.
    pub fn affected(
        &self,
        changes: &[(CtxUpdate, isize)],
        closed: &BTreeMap<i64, Closed>,
    ) -> BTreeSet<(i64, TagId)> {
        let mut out = BTreeSet::new();
        let tags_of = |pred: &dyn Fn(&AssetCtx) -> bool, from: i64, to: i64| {
            let mut out = Vec::new();
            let tags: Vec<TagId> = self
                .assets
                .iter()
                .filter(|(_, rows)| rows.iter().any(|(a, _)| pred(a)))
                .map(|(t, _)| t)
                .collect();
            for (ws, m) in closed.range(from..to) {
                for t in &tags {
                    if m.contains(*t) {
                        out.push((*ws, *t));
                    }
                }
            }
            out
        };
        let mut keys = BTreeSet::new();
        for (c, _) in changes {
            match c {
                CtxUpdate::Asset(tag, _) => {
                    for (ws, m) in closed {
                        if m.contains(*tag) {
                            out.insert((*ws, *tag));
                        }
                    }
                }
                CtxUpdate::Tariff(key, _) => {
                    keys.insert(*key);
                }
                CtxUpdate::Production(iv) | CtxUpdate::Maintenance(iv) => {
                    let by_line = matches!(c, CtxUpdate::Production(_));
                    if let Some(id) = self.names.get(&iv.key) {
                        let pred =
                            |a: &AssetCtx| if by_line { a.line == id } else { a.asset == id };
                        out.extend(tags_of(&pred, iv.start_ms - self.size, iv.end_ms));
                    }
                }
            }
        }
        if !keys.is_empty() {
            for (ws, m) in closed {
                if keys.contains(&self.calendar.key_at(*ws)) {
                    out.extend(m.tags().map(|t| (*ws, t)));
                }
            }
        }
        out
    }

    /// Whether `changes` may alter a window starting at `start`, judged without
    /// its contents (the window operator reads spilled starts back first).
    pub fn touches(&self, changes: &[(CtxUpdate, isize)], start: i64) -> bool {
        changes.iter().any(|(c, _)| match c {
            CtxUpdate::Asset(..) => true,
            CtxUpdate::Tariff(key, _) => self.calendar.key_at(start) == *key,
            CtxUpdate::Production(iv) | CtxUpdate::Maintenance(iv) => {
                (iv.start_ms - self.size..iv.end_ms).contains(&start)
            }
        })
    }

    /// Drops the production runs and maintenance windows that end at or
    /// before `before`: no window starting at or after it lies in them, and
    /// no earlier window is emitted again. Without this the tables would
    /// grow with every run in the file, for as long as the process lives.
    pub fn retire(&mut self, before: i64) {
        if before <= self.retired {
            return;
        }
        self.retired = before;
        for table in [&mut self.running, &mut self.down] {
            table.by_key.retain(|_, ivs| {
                let n = ivs.len();
                ivs.retain(|((_, end), _)| *end > before);
                if ivs.len() < n {
                    ivs.shrink_to_fit();
                }
                !ivs.is_empty()
            });
        }
    }

    /// Applies a batch of updates.
    pub fn apply(&mut self, changes: Vec<(CtxUpdate, isize)>) {
        self.producing_memo.clear();
        for (c, r) in changes {
            let production = matches!(c, CtxUpdate::Production(_));
            match c {
                // `worker_of`: a tag's rows and windows live on one worker.
                CtxUpdate::Asset(tag, a) => {
                    if crate::ingest::bridge::worker_of(tag, self.assets.peers) == self.assets.index
                    {
                        self.assets.update(tag, a, r)
                    }
                }
                CtxUpdate::Tariff(key, price) => update(&mut self.tariff, key, price, r),
                CtxUpdate::Production(iv) | CtxUpdate::Maintenance(iv)
                    if iv.end_ms > self.retired =>
                {
                    let table = if production {
                        &mut self.running
                    } else {
                        &mut self.down
                    };
                    let key = self.names.intern(&iv.key);
                    update(&mut table.by_key, key, (iv.start_ms, iv.end_ms), r);
                }
                // Retired: an edit of a run no retained window lies in.
                CtxUpdate::Production(_) | CtxUpdate::Maintenance(_) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(line: &str, start_ms: i64, end_ms: i64) -> CtxUpdate {
        CtxUpdate::Production(Interval {
            key: line.into(),
            start_ms,
            end_ms,
            units: None,
        })
    }

    #[test]
    fn retired_runs_leave_and_their_edits_are_ignored() {
        let names = Arc::new(Names::default());
        let mut c = Context::new(names.clone(), Calendar::default(), 60_000);
        c.apply(vec![
            (run("l1", 0, 120_000), 1),
            (run("l1", 300_000, 600_000), 1),
        ]);
        let l1 = names.get("l1").unwrap();
        assert!(c.running.covers(l1, 60_000, 60_000));
        assert!(c.running.covers(l1, 300_000, 60_000));
        // No window before 200 s is emitted again: the first run goes.
        c.retire(200_000);
        assert!(!c.running.covers(l1, 60_000, 60_000));
        assert!(c.running.covers(l1, 300_000, 60_000));
        assert_eq!(c.running.by_key[&l1].len(), 1);
        // An edit of the retired run (its removal, or it again) changes
        // nothing and leaves no negative count behind.
        c.apply(vec![(run("l1", 0, 120_000), -1)]);
        c.apply(vec![(run("l1", 0, 120_000), 1)]);
        assert_eq!(c.running.by_key[&l1].len(), 1);
        // A run ending after the bound still counts, and all of a line's
        // runs retired drop the line.
        c.apply(vec![(run("l2", 100_000, 240_000), 1)]);
        let l2 = names.get("l2").unwrap();
        assert!(c.running.covers(l2, 180_000, 60_000));
        c.retire(600_000);
        assert!(c.running.by_key.is_empty());
        // A bound below the last one is no bound.
        c.retire(0);
        c.apply(vec![(run("l1", 0, 120_000), 1)]);
        assert!(c.running.by_key.is_empty());
    }
}
