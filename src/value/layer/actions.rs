//! Findings → actions: replaying a group's findings and status updates into
//! action versions (one open action per problem), and emitting them.

use super::*;

impl ValueLayer {
    pub(super) fn replay(&mut self, g: &GroupKey, out: &mut ValueOut) {
        let plan = self.plan.clone();
        let rule = &plan.rules[g.0 as usize];
        // A window rule's finding counts once its period has closed; a demand
        // projection counts at once (it is an early warning).
        // At the end of input every open period closes, as windows do.
        let live = rule.kind == RuleKind::DemandPeak || self.d.ended;
        let now = self.d.now;
        let findings = self.d.findings.get(g).into_iter().flat_map(|m| m.values());
        let r = replay_group(
            &self.plan.name,
            (rule, &plan.routing),
            (&g.1[..], now),
            findings.filter(|f| live || f.period_end <= now),
            &self.d.updates_by_id,
        );
        let counts = (r.suppressed_maintenance, r.suppressed_cooldown);
        // Only groups with suppressed findings keep an entry.
        match self.d.group_counts.get_mut(g) {
            Some(_) if counts == (0, 0) => {
                self.d.group_counts.remove(g);
            }
            Some(c) => *c = counts,
            None if counts == (0, 0) => {}
            None => {
                self.d.group_counts.insert(g.clone(), counts);
            }
        }
        for (u, reason) in r.rejected {
            if self.d.dead_seq.insert(u.seq) {
                self.d.rejected_total += 1;
                out.dead_letters
                    .push(DeadLetter::text("lifecycle", reason, u.raw.clone()));
            }
        }
        let mut ids = Vec::new();
        for mut a in r.actions {
            if let (Some(v), Some(done_at)) = (rule.verify.clone(), a.done_at) {
                let o = self.outcome(&v, &a, g, done_at);
                if o.is_final && a.row.status == "done" {
                    let status = if o.verdict == "verified" {
                        "verified"
                    } else {
                        "not_verified"
                    };
                    a.row.status = status.to_string();
                    a.row.status_at = o.reporting_end;
                    a.row.status_by = "plantflow".into();
                    a.row.status_note = format!("{}: {}", o.verdict, o.reason);
                    a.transitions.push((status.to_string(), a.row.clone()));
                }
                let changed = self.d.outcomes.get(&o.action_id).is_none_or(|e| {
                    let mut old = e.row.clone();
                    old.computed_at = o.computed_at;
                    old != o
                });
                if changed {
                    let rev = self.d.outcomes.get(&o.action_id).map_or(0, |e| e.rev + 1);
                    out.outcomes.push((o.clone(), rev));
                    self.d
                        .outcomes
                        .insert(o.action_id.clone(), Emitted { row: o, rev });
                }
            }
            ids.push(a.row.action_id.clone());
            self.expires(g, &a.row);
            if !self.d.id_group.contains_key(&a.row.action_id) {
                self.d.id_group.insert(a.row.action_id.clone(), g.clone());
            }
            self.emit_action(a, out);
        }
        // Actions whose findings were all corrected away.
        let previous = self.d.group_ids.remove(g).unwrap_or_default();
        for old in previous {
            if ids.contains(&old) {
                continue;
            }
            if let Some((e, seen)) = self.d.actions.get_mut(&old) {
                if e.row.status != "withdrawn" {
                    let mut w = e.row.clone();
                    w.status = "withdrawn".into();
                    w.status_at = self.d.now;
                    w.status_by = "plantflow".into();
                    w.status_note = "the findings behind it were corrected away".into();
                    e.rev += 1;
                    let prev = std::mem::replace(&mut e.row, w.clone());
                    seen.insert("withdrawn");
                    out.action(Some(&prev), w, e.rev);
                }
            }
        }
        self.d.group_ids.insert(g.clone(), ids);
    }

    /// Notes when an open action of `g` expires, so the step that reaches
    /// that time replays its group.
    pub(super) fn expires(&mut self, g: &GroupKey, row: &ActionRow) {
        let after = self
            .plan
            .rules
            .get(g.0 as usize)
            .and_then(|r| r.expire_after_ms);
        if let (Some(after), "open") = (after, row.status.as_str()) {
            let at = row.status_at.saturating_add(after);
            self.d.expiring.entry(at).or_default().insert(g.clone());
        }
    }

    pub(super) fn emit_action(&mut self, a: ReplayedAction, out: &mut ValueOut) {
        let ReplayedAction {
            row, transitions, ..
        } = a;
        let mut transitions = transitions.into_iter();
        if !self.d.actions.contains_key(&row.action_id) {
            // A new action: its first version is its first transition.
            let first = transitions
                .next()
                .map(|t| t.1)
                .unwrap_or_else(|| row.clone());
            let mut seen = Seen::default();
            seen.insert(&first.status);
            out.action(None, first.clone(), 0);
            self.d.actions.insert(
                row.action_id.clone(),
                (Box::new(Emitted { row: first, rev: 0 }), seen),
            );
        }
        let Some((e, seen)) = self.d.actions.get_mut(&row.action_id) else {
            return;
        };
        for (status, snap) in transitions {
            if !seen.contains(&status) {
                e.rev += 1;
                let prev = std::mem::replace(&mut e.row, snap.clone());
                out.action(Some(&prev), snap, e.rev);
                seen.insert(&status);
            }
        }
        if e.row != row {
            seen.insert(&row.status);
            e.rev += 1;
            let prev = std::mem::replace(&mut e.row, row.clone());
            out.action(Some(&prev), row, e.rev);
        }
    }
}
