//! `tally`: the run summary's view of actions, in bounded memory.
//!
//! The summary a run prints (actions, value at stake, by owner and action
//! type, the highest-valued ones) must not keep every action for the life of
//! a long-running process. The value layer, which knows the version each new
//! one replaces, sends how its totals change ([`ActionTotals`]); the
//! [`ActionTally`] adds those up by owner and action type and keeps the
//! [`TOP_KEPT`] highest-valued latest rows: nothing per action.

use crate::model::{ActionRow, ActionTotals};

/// How many of the highest-valued actions the tally keeps rows of.
pub const TOP_KEPT: usize = 32;

/// Totals over the latest version of every action seen (withdrawn ones do
/// not count).
#[derive(Clone, Debug, Default)]
pub struct ActionTally {
    seen: u64,
    /// `(owner, action_type)` by kind index.
    kinds: Vec<(String, String)>,
    /// Count and value of counted actions by kind index.
    by_kind: Vec<(i64, f64)>,
    /// The highest-valued counted latest rows (evidence left out), best first.
    top: Vec<ActionRow>,
}

impl ActionTally {
    /// Adds a change of the totals.
    pub fn apply(&mut self, t: &ActionTotals) {
        let kind = match self
            .kinds
            .iter()
            .position(|(o, a)| *o == t.owner && *a == t.action_type)
        {
            Some(i) => i,
            None => {
                self.kinds.push((t.owner.clone(), t.action_type.clone()));
                self.by_kind.push((0, 0.0));
                self.kinds.len() - 1
            }
        };
        self.seen = self.seen.saturating_add_signed(t.seen);
        let k = &mut self.by_kind[kind];
        k.0 += t.counted;
        k.1 += t.value;
    }

    /// Takes the latest version of an action for the highest-valued rows
    /// (versions of one action arrive in order).
    pub fn keep(&mut self, row: &ActionRow) {
        self.top.retain(|r| r.action_id != row.action_id);
        if row.status != "withdrawn" {
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
        self.seen as usize
    }

    /// Actions whose latest version is not withdrawn.
    pub fn counted(&self) -> usize {
        self.by_kind.iter().map(|k| k.0.max(0) as usize).sum()
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
            .map(|((o, t), (n, x))| (o.as_str(), t.as_str(), *n as usize, *x))
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
    use crate::value::layer::ValueOut;

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

    fn tally(out: &ValueOut) -> ActionTally {
        let mut t = ActionTally::default();
        for x in &out.totals {
            t.apply(x);
        }
        for (r, _) in &out.actions {
            t.keep(r);
        }
        t
    }

    #[test]
    fn versions_replace_what_an_action_contributed() {
        let mut out = ValueOut::default();
        let (a, b, c) = (
            row("a", "operations", 10.0, "open"),
            row("b", "energy", 4.0, "open"),
            row("c", "operations", 1.5, "open"),
        );
        out.action(None, a.clone(), 0);
        out.action(None, b.clone(), 0);
        out.action(None, c.clone(), 0);
        // a is corrected down to 6, c is withdrawn, b goes up to 5.
        out.action(Some(&a), row("a", "operations", 6.0, "acknowledged"), 1);
        out.action(Some(&c), row("c", "operations", 1.5, "withdrawn"), 1);
        out.action(Some(&b), row("b", "energy", 5.0, "open"), 1);
        let t = tally(&out);
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
        // A withdrawn action that comes back counts again.
        let mut more = ValueOut::default();
        more.action(
            Some(&row("c", "operations", 1.5, "withdrawn")),
            row("c", "operations", 2.0, "open"),
            2,
        );
        let mut t = t;
        for x in &more.totals {
            t.apply(x);
        }
        assert_eq!((t.seen(), t.counted()), (3, 3));
        assert!((t.value() - 13.0).abs() < 1e-12);
    }

    #[test]
    fn only_the_highest_valued_rows_are_kept() {
        let mut out = ValueOut::default();
        for i in 0..1000 {
            out.action(
                None,
                row(&format!("x{i}"), "operations", (i % 97) as f64, "open"),
                0,
            );
        }
        let t = tally(&out);
        assert_eq!(t.seen(), 1000);
        assert_eq!(t.top().len(), TOP_KEPT);
        assert_eq!(t.top()[0].value.0, 96.0);
        assert!(t.top().windows(2).all(|w| w[0].value >= w[1].value));
        // Sum of (i mod 97) over 0..1000, by hand: 10 full cycles (10 x 4656) + 0..=29 (435).
        assert!((t.value() - 46_995.0).abs() < 1e-9);
    }
}
