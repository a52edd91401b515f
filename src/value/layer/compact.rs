//! Compaction of `one_per = "group"` groups. Such a group keeps every
//! finding it ever had, because a replay of the group needs them to know
//! which action a finding belongs to and what a cool-down suppresses: a
//! group with a finding every hour would grow for as long as the node
//! runs. Once the group's earlier actions are settled (closed for good:
//! rejected, withdrawn, expired, verified, not verified, or done under a
//! rule without verification) and no correction, cool-down or status
//! change can touch them any more, their findings and the actions
//! themselves leave memory (the lake has them).
//!
//! A compaction is checked before it is kept: the group is replayed with
//! and without the findings it would drop, and only if every action left
//! comes out the same is it applied (the suppression counts of what was
//! dropped are kept as totals). A status update for a dropped action is
//! refused as for an unknown action rather than as an invalid transition.

use super::*;

/// Whether an action in `status` under `rule` can change no more but by a
/// correction of its findings.
fn settled(rule: &crate::config::RulePlan, status: &str) -> bool {
    match status {
        "open" | "acknowledged" => false,
        "done" => rule.verify.is_none(),
        _ => true,
    }
}

impl ValueLayer {
    /// Compacts the `one_per = "group"` groups that can be, once per
    /// period of event time.
    pub(super) fn compact(&mut self) {
        if self.d.ended {
            return;
        }
        let bucket = self.d.now.div_euclid(self.aging.period_ms.max(1));
        if bucket <= self.compacted_bucket {
            return;
        }
        self.compacted_bucket = bucket;
        let plan = self.plan.clone();
        let groups: Vec<GroupKey> = self
            .d
            .group_ids
            .keys()
            .filter(|g| {
                plan.rules
                    .get(g.0 as usize)
                    .is_some_and(|r| r.one_per_group && r.kind == RuleKind::Windows)
            })
            .cloned()
            .collect();
        for g in groups {
            self.compact_group(&g);
        }
    }

    /// Drops the findings of `g` before `keep_from` and its settled actions
    /// they made, if that changes nothing (see the module docs).
    fn compact_group(&mut self, g: &GroupKey) {
        let plan = self.plan.clone();
        let rule = &plan.rules[g.0 as usize];
        let now = self.d.now;
        let Some(ids) = self.d.group_ids.get(g) else {
            return;
        };
        // The group's actions by period start; the settled ones before the
        // first that is not.
        let mut rows: Vec<&ActionRow> = ids
            .iter()
            .filter_map(|id| self.d.actions.get(id).map(|(e, _)| &e.row))
            .collect();
        rows.sort_by_key(|r| r.period_start);
        let done: Vec<&ActionRow> = rows
            .iter()
            .take_while(|r| settled(rule, &r.status))
            .copied()
            .collect();
        let Some(keep_from) = done
            .iter()
            .map(|r| {
                r.period_end
                    .max(r.status_at.saturating_add(rule.cooldown_ms))
            })
            .max()
        else {
            return;
        };
        // Every finding before `keep_from` is final and known by now.
        let horizon = keep_from
            .saturating_add(self.aging.retention_ms)
            .saturating_add(self.aging.period_ms);
        if now < horizon {
            return;
        }
        let Some(found) = self.d.findings.get(g) else {
            return;
        };
        if !found.values().any(|f| f.period_start < keep_from) {
            return;
        }
        let replay = |fs: &mut dyn Iterator<Item = &Finding>| {
            replay_group(
                &plan.name,
                (rule, &plan.routing),
                (&g.1[..], now),
                fs.filter(|f| f.period_end <= now),
                &self.d.updates_by_id,
            )
        };
        let full = replay(&mut found.values());
        let part = replay(&mut found.values().filter(|f| f.period_start >= keep_from));
        // Every action left comes out as it is now; every one dropped is settled.
        let left: HashSet<&str> = part
            .actions
            .iter()
            .map(|a| a.row.action_id.as_str())
            .collect();
        let same = part.actions.iter().all(|a| {
            full.actions
                .iter()
                .any(|b| b.row == a.row && b.transitions.len() == a.transitions.len())
        });
        let gone: Vec<String> = full
            .actions
            .iter()
            .filter(|a| !left.contains(a.row.action_id.as_str()))
            .map(|a| a.row.action_id.clone())
            .collect();
        let all_settled = full
            .actions
            .iter()
            .filter(|a| !left.contains(a.row.action_id.as_str()))
            .all(|a| settled(rule, &a.row.status));
        if !same || !all_settled || gone.is_empty() {
            return;
        }
        let before = (full.suppressed_maintenance, full.suppressed_cooldown);
        let after = (part.suppressed_maintenance, part.suppressed_cooldown);
        self.d.frozen_counts.0 += before.0.saturating_sub(after.0);
        self.d.frozen_counts.1 += before.1.saturating_sub(after.1);
        match after {
            (0, 0) => self.d.group_counts.remove(g),
            c => self.d.group_counts.insert(g.clone(), c),
        };
        if let Some(m) = self.d.findings.get_mut(g) {
            m.0.retain(|(start, _)| *start >= keep_from);
            if m.is_empty() {
                self.d.findings.remove(g);
            }
        }
        self.d.sticky.retain(|(k, p)| k != g || *p >= keep_from);
        for id in &gone {
            self.d.actions.remove(id);
            self.d.id_group.remove(id);
            self.d.outcomes.remove(id);
            self.d.updates_by_id.remove(id);
        }
        if let Some(v) = self.d.group_ids.get_mut(g) {
            v.retain(|i| !gone.contains(i));
            if v.is_empty() {
                self.d.group_ids.remove(g);
            }
        }
        self.compacted += gone.len() as u64;
    }
}
