//! `rules`: findings from enriched windows, one running aggregate per
//! `(rule, group, period)`.
//!
//! Each enriched window update contributes to the groups of the rules whose
//! filter it passes ([`Compiled::contributions`]). The contributions are
//! exchanged by group, so a group lives on one worker, and folded into a
//! [`GroupAcc`] once their time is complete: the operator emits, per changed
//! group, the retraction of the finding it had and the finding it has now
//! (`(old, −1), (new, +1)`), so its output is a collection like the
//! differential `reduce` it replaces, with corrections as updates.
//!
//! Why not `reduce`: a reduce keeps every contribution (one per window and
//! rule, for the whole retention) in its input arrangement and every finding
//! in its output arrangement. A group's aggregate is a handful of numbers, so
//! this operator keeps those and nothing per window: its state is one
//! accumulator per live `(rule, group, period)`, keyed by an interned group
//! id. An accumulator leaves when its last window is retracted (when the
//! windows age out), exactly as the reduce's keys did.

use std::hash::{Hash, Hasher};
use std::rc::Rc;

use rustc_hash::{FxHashMap, FxHasher};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::Stream;

use super::output::TimeBuffer;
use crate::model::{Finding, Group};
use crate::value::layer::shrink_sparse;
use crate::value::rules::{Compiled, GroupAcc, RuleInput, RuleKey};

/// A window's contribution to a rule's group, as a timely update.
type Contribution = ((RuleKey, RuleInput), u64, isize);

fn key_hash(k: &RuleKey) -> u64 {
    let mut h = FxHasher::default();
    k.hash(&mut h);
    h.finish()
}

/// The fold's state: groups by interned id, accumulators by
/// `(rule, group id, period start)`.
#[derive(Default)]
struct Fold {
    ids: FxHashMap<Group, u32>,
    groups: Vec<Group>,
    accs: FxHashMap<(u32, u32, i64), GroupAcc>,
}

impl Fold {
    /// Folds one complete time's consolidated updates (sorted by key, so one
    /// group at a time) and pushes the changed findings to `out`. Not
    /// inlined, so that profiles name the fold's state.
    #[inline(never)]
    fn apply(
        &mut self,
        compiled: &Compiled,
        t: u64,
        updates: &[((RuleKey, RuleInput), isize)],
        out: &mut Vec<(Finding, u64, isize)>,
    ) {
        let mut i = 0;
        while i < updates.len() {
            let ((rule, group, period), _) = &updates[i].0;
            let mut j = i;
            while j < updates.len() && (updates[j].0).0 == (updates[i].0).0 {
                j += 1;
            }
            let gid = match self.ids.get(group) {
                Some(id) => *id,
                None => {
                    let id = self.groups.len() as u32;
                    self.groups.push(group.clone());
                    self.ids.insert(group.clone(), id);
                    id
                }
            };
            let key = (*rule, gid, *period);
            // Findings share the interned key: one copy per group, not one
            // per period (or per contribution).
            let group = &self.groups[gid as usize];
            let acc = self
                .accs
                .entry(key)
                .or_insert_with(|| compiled.group_acc(*rule));
            let old = compiled.finding(*rule, group, *period, acc);
            for ((_, input), diff) in &updates[i..j] {
                compiled.accumulate(*rule, acc, input, *diff);
            }
            let new = compiled.finding(*rule, group, *period, acc);
            if acc.is_empty() {
                self.accs.remove(&key);
            }
            if old != new {
                out.extend(old.map(|f| (f, t, -1)));
                out.extend(new.map(|f| (f, t, 1)));
            }
            i = j;
        }
        // Nor the room of the most accumulators there ever were.
        shrink_sparse(&mut self.accs);
    }
}

/// Folds `contributions` into findings (see the module docs).
pub fn findings<'s>(
    contributions: Stream<'s, u64, Vec<Contribution>>,
    compiled: Rc<Compiled>,
) -> Stream<'s, u64, Vec<(Finding, u64, isize)>> {
    let exchange = Exchange::new(|u: &Contribution| key_hash(&(u.0).0));
    contributions.unary_frontier::<CapacityContainerBuilder<Vec<(Finding, u64, isize)>>, _, _, _>(
        exchange,
        "rules",
        move |cap, _info| {
            let mut cap = Some(cap);
            let mut pending = TimeBuffer::default();
            let mut fold = Fold::default();
            let mut out: Vec<(Finding, u64, isize)> = Vec::new();
            move |(input, frontier), output| {
                input.for_each_stamp(|_stamp, data| {
                    for batch in data {
                        pending.extend(batch.drain(..));
                    }
                });
                let Some(c) = cap.as_mut() else { return };
                while let Some((t, updates)) = pending.pop_complete(frontier) {
                    fold.apply(&compiled, t, &updates, &mut out);
                    if !out.is_empty() {
                        let at = c.delayed(&t);
                        output.session(&at).give_iterator(out.drain(..));
                    }
                    // Room for a whole period close is not kept between closes.
                    if out.capacity() > 64 {
                        out = Vec::new();
                    }
                }
                match frontier.frontier().iter().min() {
                    Some(f) => {
                        if *f > *c.time() {
                            c.downgrade(f);
                        }
                    }
                    None => cap = None,
                }
            }
        },
    )
}
