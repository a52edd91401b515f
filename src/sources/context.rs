//! Context tables from CSV files: assets, tariff, production runs, maintenance.
//!
//! Each loader returns whole-table snapshots; in `--follow` mode the
//! [`watch`](crate::run) loop reloads a changed file and the engine applies
//! the difference between snapshots, so only affected rows are retracted and
//! re-emitted. A file that fails to load keeps the previous snapshot.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use crate::config::tables::{headers, reader, require};
use crate::expr::ColType;
use crate::model::{AssetRow, Interval, Scalar, SharedName, F64};

/// Hands out one shared copy per distinct name.
#[derive(Default)]
struct SharedNames(std::collections::HashSet<SharedName>);

impl SharedNames {
    fn share(&mut self, s: &str) -> SharedName {
        match self.0.get(s) {
            Some(n) => n.clone(),
            None => {
                let n: SharedName = s.into();
                self.0.insert(n.clone());
                n
            }
        }
    }
}

/// Loads `assets.csv`; `extra` gives the extra columns' names and types.
pub fn load_assets(path: &Path, extra: &[(String, ColType)]) -> Result<Vec<AssetRow>, String> {
    let mut r = reader(path)?;
    let cols = headers(&mut r, path)?;
    let idx = require(&cols, crate::config::ASSET_COLUMNS, path)?;
    let extra_idx: Vec<usize> = extra
        .iter()
        .map(|(n, _)| {
            cols.iter()
                .position(|c| c == n)
                .ok_or_else(|| format!("`{}` lost its `{n}` column", path.display()))
        })
        .collect::<Result<_, _>>()?;
    let mut out = Vec::new();
    let mut seen = HashMap::new();
    // Assets, sites, lines and kinds repeat across rows: one copy of each.
    let mut names = SharedNames::default();
    for (line, rec) in r.records().enumerate() {
        let rec = rec.map_err(|e| format!("`{}`: {e}", path.display()))?;
        let get = |i: usize| rec.get(idx[i]).unwrap_or("").to_string();
        let standby: f64 = get(5).parse().map_err(|_| {
            format!(
                "`{}` line {}: standby_kw `{}` is not a number",
                path.display(),
                line + 2,
                get(5)
            )
        })?;
        let tag = SharedName::from(rec.get(idx[0]).unwrap_or(""));
        if seen.insert(tag.clone(), line).is_some() {
            return Err(format!(
                "`{}` line {}: tag `{tag}` is listed twice",
                path.display(),
                line + 2
            ));
        }
        let extra = extra
            .iter()
            .zip(&extra_idx)
            .map(|((_, t), i)| {
                let s = rec.get(*i).unwrap_or("");
                match t {
                    ColType::Num => Scalar::Num(F64(s.parse().unwrap_or(f64::NAN))),
                    ColType::Bool => Scalar::Bool(s == "true"),
                    ColType::Str => Scalar::Str(s.to_string()),
                }
            })
            .collect();
        out.push(AssetRow {
            tag,
            asset: names.share(rec.get(idx[1]).unwrap_or("")),
            site: names.share(rec.get(idx[2]).unwrap_or("")),
            line: names.share(rec.get(idx[3]).unwrap_or("")),
            kind: names.share(rec.get(idx[4]).unwrap_or("")),
            standby_kw: F64(standby),
            extra,
        });
    }
    Ok(out)
}

/// Loads intervals keyed by `key_col` (`line` for production, `asset` for maintenance).
pub fn load_intervals(path: &Path, key_col: &str) -> Result<Vec<Interval>, String> {
    let mut r = reader(path)?;
    let cols = headers(&mut r, path)?;
    let idx = require(&cols, &[key_col, "start_ms", "end_ms"], path)?;
    let units_col = cols.iter().position(|c| c == "units");
    let mut out = Vec::new();
    // A line's (or asset's) runs share one copy of its name.
    let mut names = SharedNames::default();
    for (line, rec) in r.records().enumerate() {
        let rec = rec.map_err(|e| format!("`{}`: {e}", path.display()))?;
        let line = line + 2;
        let int = |i: usize| -> Result<i64, String> {
            let s = rec.get(idx[i]).unwrap_or("");
            s.parse::<i64>().map_err(|_| {
                format!(
                    "`{}` line {line}: `{s}` is not epoch milliseconds",
                    path.display()
                )
            })
        };
        let (start_ms, end_ms) = (int(1)?, int(2)?);
        if end_ms < start_ms {
            return Err(format!(
                "`{}` line {line}: end_ms is before start_ms",
                path.display()
            ));
        }
        let units = match units_col.map(|i| rec.get(i).unwrap_or("").trim()) {
            None | Some("") => None,
            Some(s) => Some(F64(s
                .parse::<f64>()
                .ok()
                .filter(|u| u.is_finite())
                .ok_or_else(|| {
                    format!(
                        "`{}` line {line}: units `{s}` is not a number",
                        path.display()
                    )
                })?)),
        };
        out.push(Interval {
            key: names.share(rec.get(idx[0]).unwrap_or("")),
            start_ms,
            end_ms,
            units,
        });
    }
    Ok(out)
}

/// The current context tables, shared by the file watcher and message
/// sources: every change is applied here and sent to the engine as the
/// difference to the previous version.
pub struct ContextStore {
    current: std::sync::Mutex<crate::ingest::InitialContext>,
    open: std::sync::Mutex<HashMap<(bool, String), i64>>,
    ingest: std::sync::Arc<crate::ingest::Ingest>,
    tags: std::sync::Arc<crate::ingest::TagRegistry>,
    asset_extra: Vec<(String, ColType)>,
    tariff_name: std::path::PathBuf,
    /// How far behind the global time an interval's end may lie and still
    /// matter (retention, a retraction bucket and two windows): older
    /// production runs and maintenance windows are dropped from the tables
    /// (a file keeps growing; the tables must not), and edits to them are
    /// not sent (no retained window can see them).
    horizon_ms: i64,
}

/// Rows removed (−1) and added (+1) between two snapshots.
pub fn diff<T: Ord + Clone>(old: &[T], new: &[T]) -> Vec<(T, isize)> {
    let mut a = old.to_vec();
    let mut b = new.to_vec();
    a.sort();
    b.sort();
    let mut out = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) if x == y => {
                i += 1;
                j += 1;
            }
            (Some(x), Some(y)) if x < y => {
                out.push((x.clone(), -1));
                i += 1;
            }
            (Some(x), None) => {
                out.push((x.clone(), -1));
                i += 1;
            }
            (_, Some(y)) => {
                out.push((y.clone(), 1));
                j += 1;
            }
            (None, None) => break,
        }
    }
    out
}

/// Which snapshot a whole-table replacement is for.
pub enum Snapshot {
    Assets(Vec<Arc<AssetRow>>),
    Tariff(Vec<(u32, F64)>),
    Production(Vec<Interval>),
    Maintenance(Vec<Interval>),
}

impl crate::ingest::ContextEdits for ContextStore {
    fn apply(&self, edits: Vec<crate::model::edit::Edit>) -> Result<(), String> {
        ContextStore::apply(self, edits)
    }
}

impl ContextStore {
    /// Waits until sources may start (a durable node's input log replayed).
    pub fn wait_ready(&self) {
        self.ingest.wait_ready();
    }

    pub fn new(
        initial: crate::ingest::InitialContext,
        ingest: std::sync::Arc<crate::ingest::Ingest>,
        tags: std::sync::Arc<crate::ingest::TagRegistry>,
        asset_extra: Vec<(String, ColType)>,
        tariff_name: std::path::PathBuf,
        horizon_ms: i64,
    ) -> ContextStore {
        ContextStore {
            current: std::sync::Mutex::new(initial),
            open: Default::default(),
            ingest,
            tags,
            asset_extra,
            tariff_name,
            horizon_ms,
        }
    }

    /// Intervals ending before this can no longer affect any window.
    fn cutoff(&self) -> i64 {
        self.ingest.time_ms().saturating_sub(self.horizon_ms)
    }

    /// Keeps the intervals of `t` that end at or after `cutoff`; whether any left.
    fn keep_recent(t: &mut Vec<Interval>, cutoff: i64) -> bool {
        let n = t.len();
        t.retain(|iv| iv.end_ms >= cutoff);
        t.len() < n
    }

    /// Drops the production runs and maintenance windows that ended before
    /// the horizon (see [`ContextStore::horizon_ms`]); the workers drop
    /// theirs on their own, so nothing is sent.
    pub fn prune(&self) {
        let cutoff = self.cutoff();
        let mut guard = self.lock();
        let cur = &mut *guard;
        for t in [&mut cur.production, &mut cur.maintenance] {
            if Self::keep_recent(t, cutoff) {
                t.shrink_to_fit();
            }
        }
    }

    /// The assets table as it is now.
    pub fn assets(&self) -> Vec<Arc<AssetRow>> {
        self.lock().assets.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, crate::ingest::InitialContext> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces a whole table (a reloaded file) and sends the difference.
    pub fn replace(&self, snap: Snapshot) {
        use crate::ingest::bridge::ContextChange as C;
        let mut cur = self.lock();
        let change = match snap {
            Snapshot::Assets(new) => {
                for a in &new {
                    self.tags.intern_shared(&a.tag);
                }
                let d = diff(&cur.assets, &new);
                // Unchanged rows keep the `Arc` the engine already holds, so
                // each row stays one copy across reloads.
                let mut old = std::mem::take(&mut cur.assets);
                old.sort();
                cur.assets = new
                    .into_iter()
                    .map(|a| match old.binary_search(&a) {
                        Ok(i) => old[i].clone(),
                        Err(_) => a,
                    })
                    .collect();
                C::Assets(d)
            }
            Snapshot::Tariff(new) => {
                let d = diff(&cur.tariff, &new);
                cur.tariff = new;
                C::Tariff(d)
            }
            Snapshot::Production(mut new) => {
                let cutoff = self.cutoff();
                Self::keep_recent(&mut cur.production, cutoff);
                Self::keep_recent(&mut new, cutoff);
                let d = diff(&cur.production, &new);
                cur.production = new;
                C::Production(d)
            }
            Snapshot::Maintenance(mut new) => {
                let cutoff = self.cutoff();
                Self::keep_recent(&mut cur.maintenance, cutoff);
                Self::keep_recent(&mut new, cutoff);
                let d = diff(&cur.maintenance, &new);
                cur.maintenance = new;
                C::Maintenance(d)
            }
        };
        let empty = match &change {
            C::Assets(d) => d.is_empty(),
            C::Tariff(d) => d.is_empty(),
            C::Production(d) | C::Maintenance(d) => d.is_empty(),
            C::Status(d) => d.is_empty(),
        };
        if !empty {
            self.ingest.context(change);
        }
    }

    /// Applies edits from a message; nothing is applied when one fails.
    pub fn apply(&self, edits: Vec<crate::model::edit::Edit>) -> Result<(), String> {
        use crate::model::edit::{Edit, Table, OPEN_HORIZON_MS};
        let cur = self.lock();
        let (mut assets, mut tariff, mut prod, mut maint) = (
            cur.assets.clone(),
            cur.tariff.clone(),
            cur.production.clone(),
            cur.maintenance.clone(),
        );
        drop(cur);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for e in edits {
            match e {
                Edit::UpsertAsset(fields) => {
                    let get = |k: &str| {
                        fields
                            .iter()
                            .find(|(n, _)| n == k)
                            .map(|(_, v)| v.clone())
                            .ok_or_else(|| format!("no `{k}` field"))
                    };
                    for (k, _) in &fields {
                        if !crate::config::ASSET_COLUMNS.contains(&k.as_str())
                            && !self.asset_extra.iter().any(|(n, _)| n == k)
                        {
                            return Err(format!("unknown asset column `{k}`"));
                        }
                    }
                    let standby = get("standby_kw")?;
                    let standby: f64 = standby
                        .parse()
                        .ok()
                        .filter(|x: &f64| x.is_finite())
                        .ok_or_else(|| format!("standby_kw `{standby}` is not a number"))?;
                    let extra = self
                        .asset_extra
                        .iter()
                        .map(|(n, t)| {
                            let s = get(n).unwrap_or_default();
                            match t {
                                ColType::Num => Scalar::Num(F64(s.parse().unwrap_or(f64::NAN))),
                                ColType::Bool => Scalar::Bool(s == "true"),
                                ColType::Str => Scalar::Str(s),
                            }
                        })
                        .collect();
                    let row = AssetRow {
                        tag: get("tag")?.into(),
                        asset: get("asset")?.into(),
                        site: get("site")?.into(),
                        line: get("line")?.into(),
                        kind: get("kind")?.into(),
                        standby_kw: F64(standby),
                        extra,
                    };
                    assets.retain(|a| a.tag != row.tag);
                    assets.push(Arc::new(row));
                }
                Edit::DeleteAsset(tag) => {
                    let before = assets.len();
                    assets.retain(|a| *a.tag != *tag);
                    if assets.len() == before {
                        return Err(format!("no asset row for tag `{tag}`"));
                    }
                }
                Edit::Tariff(csv) => {
                    tariff = crate::model::tariff::parse(csv.as_bytes(), &self.tariff_name)?;
                }
                Edit::Interval {
                    table,
                    key,
                    start,
                    end,
                    units,
                } => {
                    let t = if table == Table::Production {
                        &mut prod
                    } else {
                        &mut maint
                    };
                    t.retain(|iv| !(*iv.key == *key && iv.start_ms == start));
                    open.remove(&(table == Table::Production, key.clone()));
                    t.push(Interval {
                        key: key.into(),
                        start_ms: start,
                        end_ms: end,
                        units: units.map(F64),
                    });
                }
                Edit::Start { table, key, ts } => {
                    let p = table == Table::Production;
                    let t = if p { &mut prod } else { &mut maint };
                    if let Some(s) = open.get(&(p, key.clone())) {
                        return Err(format!("`{key}` already started at {s}; stop it first"));
                    }
                    t.push(Interval {
                        key: key.as_str().into(),
                        start_ms: ts,
                        end_ms: ts + OPEN_HORIZON_MS,
                        units: None,
                    });
                    open.insert((p, key), ts);
                }
                Edit::Stop {
                    table,
                    key,
                    ts,
                    units,
                } => {
                    let p = table == Table::Production;
                    let t = if p { &mut prod } else { &mut maint };
                    let Some(start) = open.remove(&(p, key.clone())) else {
                        return Err(format!("stop for `{key}` without an open start"));
                    };
                    if ts < start {
                        return Err(format!("stop at {ts} is before its start at {start}"));
                    }
                    t.retain(|iv| !(*iv.key == *key && iv.start_ms == start));
                    t.push(Interval {
                        key: key.into(),
                        start_ms: start,
                        end_ms: ts,
                        units: units.map(F64),
                    });
                }
                Edit::DeleteInterval { table, key, start } => {
                    let t = if table == Table::Production {
                        &mut prod
                    } else {
                        &mut maint
                    };
                    let before = t.len();
                    t.retain(|iv| !(*iv.key == *key && iv.start_ms == start));
                    if t.len() == before {
                        return Err(format!("no interval for `{key}` starting at {start}"));
                    }
                    open.remove(&(table == Table::Production, key));
                }
            }
        }
        *self.open.lock().unwrap_or_else(|p| p.into_inner()) = open;
        self.replace(Snapshot::Assets(assets));
        self.replace(Snapshot::Tariff(tariff));
        self.replace(Snapshot::Production(prod));
        self.replace(Snapshot::Maintenance(maint));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::bridge::{ContextChange, WorkerMsg};
    use crate::ingest::{Ingest, InitialContext, TagRegistry};

    fn run(line: &str, start_ms: i64, end_ms: i64) -> Interval {
        Interval {
            key: line.into(),
            start_ms,
            end_ms,
            units: None,
        }
    }

    #[test]
    fn runs_past_the_horizon_leave_the_store_and_their_edits_are_not_sent() {
        const H: i64 = 3_600_000;
        let (ingest, rx) = Ingest::new(1, 1, 60_000, 64);
        let initial = InitialContext {
            production: vec![run("l1", 0, H), run("l1", 4 * H, 5 * H)],
            ..Default::default()
        };
        let store = ContextStore::new(
            initial,
            ingest.clone(),
            Arc::new(TagRegistry::default()),
            Vec::new(),
            "tariff.csv".into(),
            2 * H,
        );
        // The sources' watermark reaches 4 h: the horizon is 2 h.
        ingest.samples(0, ingest.epoch_of(4 * H), Vec::new());
        store.prune();
        assert_eq!(store.lock().production, vec![run("l1", 4 * H, 5 * H)]);
        // A reload that drops the old run, adds another old one and moves the
        // recent one sends only the change to the recent one.
        while rx[0].try_recv().is_ok() {}
        store.replace(Snapshot::Production(vec![
            run("l1", H, H + 60_000),
            run("l1", 4 * H, 6 * H),
        ]));
        let sent: Vec<(Interval, isize)> = rx[0]
            .try_iter()
            .filter_map(|m| match m {
                WorkerMsg::Context {
                    change: ContextChange::Production(d),
                    ..
                } => Some(d),
                _ => None,
            })
            .flatten()
            .collect();
        assert_eq!(
            sent,
            vec![(run("l1", 4 * H, 5 * H), -1), (run("l1", 4 * H, 6 * H), 1)]
        );
        assert_eq!(store.lock().production, vec![run("l1", 4 * H, 6 * H)]);
    }
}
