//! Tag ids: the registry sources look tags up in, and the context every
//! worker starts with.

use std::sync::Arc;

use crate::model::{AssetRow, Interner, Interval, SharedName, StatusUpdate, TagId, F64};

/// The tag ids by name, as a source sees them (see [`TagRegistry::view`]).
pub type TagView = Arc<Interner>;

/// Interns tags to ids; shared by sources (lookup) and worker 0 (assets).
///
/// The table sits behind an `Arc` that sources keep a clone of, so a source
/// looks tags up without a lock and the process holds one copy of each tag
/// name. Interning a new tag (an assets reload) copies the table only while
/// a source still holds the previous one.
#[derive(Default)]
pub struct TagRegistry {
    map: std::sync::RwLock<TagView>,
}

impl TagRegistry {
    pub fn intern(&self, tag: &str) -> TagId {
        match self.get(tag) {
            Some(id) => id,
            None => self.insert(tag.into()),
        }
    }

    /// Interns a shared name, keeping that copy (an asset row's tag): the
    /// process then holds each tag's name once.
    pub fn intern_shared(&self, tag: &SharedName) -> TagId {
        match self.get(tag) {
            Some(id) => id,
            None => self.insert(tag.clone()),
        }
    }

    fn insert(&self, tag: SharedName) -> TagId {
        let mut m = self.map.write().unwrap_or_else(|p| p.into_inner());
        Arc::make_mut(&mut m).insert(tag)
    }

    pub fn get(&self, tag: &str) -> Option<TagId> {
        self.map.read().unwrap_or_else(|p| p.into_inner()).get(tag)
    }

    /// Gives back spare room after a load (an assets file) interned many names.
    pub fn shrink(&self) {
        let mut m = self.map.write().unwrap_or_else(|p| p.into_inner());
        if m.has_spare_room() {
            Arc::make_mut(&mut m).shrink();
        }
    }

    /// The id of `tag` in `view`, or on a miss in the current table, which
    /// then replaces `view` (an assets reload may have added the tag).
    pub fn get_fresh(&self, view: &mut TagView, tag: &str) -> Option<TagId> {
        if let Some(id) = view.get(tag) {
            return Some(id);
        }
        let now = self.view();
        if Arc::ptr_eq(&now, view) {
            return None;
        }
        *view = now;
        view.get(tag)
    }

    /// The current table, for lookups without the lock.
    pub fn view(&self) -> TagView {
        self.map.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The context every worker starts with, inserted at time 0.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct InitialContext {
    /// Shared with the context store and the engine's context input: one
    /// copy of each row for the whole process.
    pub assets: Vec<Arc<AssetRow>>,
    pub tariff: Vec<(u32, F64)>,
    pub production: Vec<Interval>,
    pub maintenance: Vec<Interval>,
    pub status: Vec<StatusUpdate>,
}

impl InitialContext {
    /// Applies a logged change: rows inserted (+1) or retracted (−1), status
    /// updates appended.
    pub fn apply(&mut self, change: &super::bridge::ContextChange) {
        use super::bridge::ContextChange as C;
        match change {
            C::Assets(d) => fold(&mut self.assets, d),
            C::Tariff(d) => fold(&mut self.tariff, d),
            C::Production(d) => fold(&mut self.production, d),
            C::Maintenance(d) => fold(&mut self.maintenance, d),
            C::Status(s) => self.status.extend(s.iter().cloned()),
        }
    }
}

/// Applies `diffs` to the multiset `rows` (kept in order).
fn fold<T: Ord + Clone>(rows: &mut Vec<T>, diffs: &[(T, isize)]) {
    let mut m: std::collections::BTreeMap<T, isize> = std::collections::BTreeMap::new();
    for r in rows.drain(..) {
        *m.entry(r).or_insert(0) += 1;
    }
    for (r, d) in diffs {
        *m.entry(r.clone()).or_insert(0) += d;
    }
    rows.extend(
        m.into_iter()
            .flat_map(|(r, n)| std::iter::repeat_n(r, n.max(0) as usize)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::bridge::ContextChange;

    fn run(start_ms: i64) -> Interval {
        Interval {
            key: "s1/l1".into(),
            start_ms,
            end_ms: start_ms + 60_000,
            units: None,
        }
    }

    /// The context a checkpoint keeps is the files' with every logged
    /// change applied: inserts add a row, retractions take one away (a row
    /// retracted twice is gone, not negative), tariff rows likewise.
    #[test]
    fn logged_changes_fold_into_the_context() {
        let mut c = InitialContext {
            production: vec![run(0)],
            tariff: vec![(0, F64(0.2))],
            ..Default::default()
        };
        c.apply(&ContextChange::Production(vec![(run(60_000), 1)]));
        c.apply(&ContextChange::Production(vec![(run(0), -1), (run(0), -1)]));
        c.apply(&ContextChange::Tariff(vec![
            ((0, F64(0.2)), -1),
            ((0, F64(0.5)), 1),
        ]));
        assert_eq!(c.production, vec![run(60_000)]);
        assert_eq!(c.tariff, vec![(0, F64(0.5))]);
    }
}
