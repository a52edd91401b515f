//! `tally`: the run summary's view of actions, in bounded memory.
//!
//! The summary a run prints (actions, value at stake, by owner and action
//! type, the highest-valued ones) must not keep every action row for the
//! life of a long-running process. [`ActionTally`] keeps, per action, only
//! what its latest revision contributes (about 32 bytes), the totals by owner
//! and action type, and the [`TOP_KEPT`] highest-valued latest rows.

use rustc_hash::FxHashMap;

use crate::model::ActionRow;

/// How many of the highest-valued actions the tally keeps rows of.
pub const TOP_KEPT: usize = 32;

#[derive(Clone, Copy, Debug)]
struct Latest {
    rev: i64,
    kind: u32,
    counted: bool,
    value: f64,
}

/// Totals over the latest revision of every action seen (withdrawn ones do
/// not count).
#[derive(Clone, Debug, Default)]
pub struct ActionTally {
    latest: FxHashMap<u64, Latest>,
    /// `(owner, action_type)` by kind index.
    kinds: Vec<(String, String)>,
    /// Count and value of counted actions by kind index.
    by_kind: Vec<(usize, f64)>,
    /// The highest-valued counted latest rows (evidence left out), best first.
    top: Vec<ActionRow>,
}

impl ActionTally {
    /// Takes one revision of an action (older revisions than the one held are ignored).
    pub fn add(&mut self, row: &ActionRow, rev: i64) {
        let key = xxhash_rust::xxh3::xxh3_64(row.action_id.as_bytes());
        if let Some(old) = self.latest.get(&key).copied() {
            if rev < old.rev {
                return;
            }
            if old.counted {
                let k = &mut self.by_kind[old.kind as usize];
                k.0 -= 1;
                k.1 -= old.value;
            }
        }
        let kind = match self
            .kinds
            .iter()
            .position(|(o, t)| *o == row.owner && *t == row.action_type)
        {
            Some(i) => i,
            None => {
                self.kinds
                    .push((row.owner.clone(), row.action_type.clone()));
                self.by_kind.push((0, 0.0));
                self.kinds.len() - 1
            }
        };
        let counted = row.status != "withdrawn";
        if counted {
            let k = &mut self.by_kind[kind];
            k.0 += 1;
            k.1 += row.value.0;
        }
        self.latest.insert(
            key,
            Latest {
                rev,
                kind: kind as u32,
                counted,
                value: row.value.0,
            },
        );
        self.top.retain(|r| r.action_id != row.action_id);
        if counted {
            let worst = self.top.last().map(|r| r.value);
            if self.top.len() < TOP_KEPT || worst.is_some_and(|w| row.value > w) {
                let at = self.top.partition_point(|r| r.value >= row.value);
                let mut kept = row.clone();
                kept.evidence = String::new();
                self.top.insert(at, kept);
                self.top.truncate(TOP_KEPT);
            }
        }
    }

    /// Actions seen, withdrawn ones included.
    pub fn seen(&self) -> usize {
        self.latest.len()
    }

    /// Actions whose latest revision is not withdrawn.
    pub fn counted(&self) -> usize {
        self.by_kind.iter().map(|k| k.0).sum()
    }

    /// The value at stake of the counted actions.
    pub fn value(&self) -> f64 {
        self.by_kind.iter().map(|k| k.1).sum()
    }

    /// `(owner, action_type, count, value)` of each kind with counted actions.
    pub fn by_owner(&self) -> Vec<(&str, &str, usize, f64)> {
        let mut v: Vec<_> = self
            .kinds
            .iter()
            .zip(&self.by_kind)
            .filter(|(_, (n, _))| *n > 0)
            .map(|((o, t), (n, x))| (o.as_str(), t.as_str(), *n, *x))
            .collect();
        v.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        v
    }

    /// The highest-valued counted actions, best first (at most [`TOP_KEPT`];
    /// a kept action whose value a revision lowered may hide one it had pushed out).
    pub fn top(&self) -> &[ActionRow] {
        &self.top
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::F64;

    fn row(id: &str, owner: &str, value: f64, status: &str) -> ActionRow {
        ActionRow {
            action_id: id.into(),
            owner: owner.into(),
            action_type: "operational_change".into(),
            value: F64(value),
            status: status.into(),
            evidence: "{\"big\": true}".into(),
            ..Default::default()
        }
    }

    #[test]
    fn revisions_replace_what_an_action_contributed() {
        let mut t = ActionTally::default();
        t.add(&row("a", "operations", 10.0, "open"), 0);
        t.add(&row("b", "energy", 4.0, "open"), 0);
        t.add(&row("c", "operations", 1.5, "open"), 0);
        // a is corrected down to 6, c is withdrawn, b's old revision arrives late.
        t.add(&row("a", "operations", 6.0, "acknowledged"), 1);
        t.add(&row("c", "operations", 1.5, "withdrawn"), 1);
        t.add(&row("b", "energy", 99.0, "open"), 0);
        t.add(&row("b", "energy", 5.0, "open"), 1);
        t.add(&row("b", "energy", 99.0, "open"), 0);
        // By hand: counted a (6) and b (5); c withdrawn.
        assert_eq!((t.seen(), t.counted()), (3, 2));
        assert!((t.value() - 11.0).abs() < 1e-12);
        assert_eq!(
            t.by_owner(),
            vec![
                ("energy", "operational_change", 1, 5.0),
                ("operations", "operational_change", 1, 6.0)
            ]
        );
        let top: Vec<(&str, f64)> = t
            .top()
            .iter()
            .map(|r| (r.action_id.as_str(), r.value.0))
            .collect();
        assert_eq!(top, vec![("a", 6.0), ("b", 5.0)]);
        assert!(t.top().iter().all(|r| r.evidence.is_empty()));
    }

    #[test]
    fn only_the_highest_valued_rows_are_kept() {
        let mut t = ActionTally::default();
        for i in 0..1000 {
            t.add(
                &row(&format!("x{i}"), "operations", (i % 97) as f64, "open"),
                0,
            );
        }
        assert_eq!(t.seen(), 1000);
        assert_eq!(t.top().len(), TOP_KEPT);
        assert_eq!(t.top()[0].value.0, 96.0);
        assert!(t.top().windows(2).all(|w| w[0].value >= w[1].value));
        // Sum of (i mod 97) over 0..1000, by hand: 10 full cycles (10 x 4656) + 0..=29 (435).
        assert!((t.value() - 46_995.0).abs() < 1e-9);
    }
}
