//! Cold actions: actions whose period has closed leave memory for the
//! engine's ledger and come back for a status update or a correction.

use super::*;

impl ValueLayer {
    /// Whether `id` is an action this layer holds in memory.
    pub fn knows(&self, id: &str) -> bool {
        self.d.id_group.contains_key(id)
    }

    /// The id of the action an update at time `t` needs back from the cold
    /// store ([`ValueLayer::evict`]) before [`ValueLayer::apply`] can take
    /// it, if it may be there: a status update for an action this layer does
    /// not hold, or a correction of a closed period's finding of a
    /// `one_per = "period"` rule that it does not hold (not the retraction
    /// that only means "aged out").
    pub fn wants_back(&self, item: &ValueIn, t: i64, diff: isize) -> Option<String> {
        match item {
            ValueIn::Status(u) if diff > 0 && !self.knows(&u.action_id) => {
                Some(u.action_id.clone())
            }
            ValueIn::Finding(f) => {
                let rule = self.plan.rules.get(f.rule as usize)?;
                let aged = diff < 0 && t >= self.aging.retract_at(f.period_end);
                if rule.one_per_group || f.period_end > self.d.now || aged {
                    return None;
                }
                let held = self
                    .d
                    .findings
                    .get(&(f.rule, f.group.clone()))
                    .is_some_and(|m| m.contains_key(&f.period_start));
                let id = action_id(&self.plan.name, &rule.id, &f.group, f.period_start);
                (!held && !self.knows(&id)).then_some(id)
            }
            _ => None,
        }
    }

    /// Takes out of memory, for a cold store to keep, the actions of
    /// `one_per = "period"` rules whose period has closed (each such action
    /// depends only on its own finding and status updates, and it has been
    /// emitted) and that are not verifying (`done` under a rule with
    /// `verify`: the verification needs the energy series). Findings
    /// suppressed by maintenance leave with only their count, once final (no
    /// correction can reach them). Runs once per period of event time; the
    /// engine hands a [`ColdAction`] back with [`ValueLayer::restore`] before
    /// an update that [`ValueLayer::wants_back`] it: a status update naming
    /// it, or a correction of its finding.
    ///
    /// Without this, a per-period rule's findings and actions stay in memory
    /// for the life of the process, and each replay of a group goes through
    /// all of its history.
    pub fn evict(&mut self) -> Vec<ColdAction> {
        if self.d.ended {
            return Vec::new();
        }
        let bucket = self.d.now.div_euclid(self.aging.period_ms.max(1));
        if bucket <= self.d.evicted_bucket {
            return Vec::new();
        }
        self.d.evicted_bucket = bucket;
        let plan = self.plan.clone();
        let (now, aging) = (self.d.now, self.aging);
        let is_final = |end: i64| now >= aging.retract_at(end);
        let per_period = |g: &GroupKey| {
            plan.rules
                .get(g.0 as usize)
                .is_some_and(|r| !r.one_per_group)
        };
        let mut groups: Vec<GroupKey> = self
            .d
            .findings
            .keys()
            .filter(|g| per_period(g))
            .cloned()
            .collect();
        groups.extend(
            self.d
                .group_ids
                .keys()
                .filter(|g| per_period(g) && !self.d.findings.contains_key(*g))
                .cloned(),
        );
        let mut out = Vec::new();
        for g in groups {
            let rule = &plan.rules[g.0 as usize];
            // Closed periods: their actions have been replayed and emitted.
            let periods: Vec<i64> = self
                .d
                .findings
                .get(&g)
                .into_iter()
                .flat_map(|m| m.values())
                .filter(|f| f.period_end <= now)
                .map(|f| f.period_start)
                .collect();
            let ids = self.d.group_ids.get(&g).cloned().unwrap_or_default();
            let mut gone: HashSet<String> = HashSet::default();
            for p in periods {
                let id = action_id(&plan.name, &rule.id, &g.1, p);
                let held = ids.contains(&id);
                let verifying = |(e, _): &(Box<Emitted<ActionRow>>, Seen)| {
                    e.row.status == "done" && rule.verify.is_some()
                };
                if held && self.d.actions.get(&id).is_none_or(verifying) {
                    continue;
                }
                // A finding without an action (suppressed by maintenance)
                // leaves as a count, so only once no correction can reach it.
                let end = self.d.findings.get(&g).and_then(|m| m.get(&p));
                if !held && !end.is_some_and(|f| is_final(f.period_end)) {
                    continue;
                }
                let Some(f) = self.d.findings.get_mut(&g).and_then(|m| m.remove(&p)) else {
                    continue;
                };
                self.d.sticky.remove(&(g.clone(), p));
                if f.in_maintenance {
                    if let Some(c) = self.d.group_counts.get_mut(&g) {
                        c.0 = c.0.saturating_sub(1);
                        self.d.frozen_counts.0 += 1;
                    }
                }
                if held {
                    out.extend(self.take_cold(&g, &id, Some(*f)));
                    gone.insert(id);
                }
            }
            // Withdrawn actions of final periods (their findings were corrected away).
            for id in &ids {
                let withdrawn = self.d.actions.get(id).is_some_and(|(e, _)| {
                    e.row.status == "withdrawn" && is_final(e.row.period_end)
                });
                if withdrawn && !gone.contains(id) {
                    out.extend(self.take_cold(&g, id, None));
                    gone.insert(id.clone());
                }
            }
            if !gone.is_empty() {
                if let Some(v) = self.d.group_ids.get_mut(&g) {
                    v.retain(|i| !gone.contains(i));
                    if v.is_empty() {
                        self.d.group_ids.remove(&g);
                    }
                }
            }
            if self.d.findings.get(&g).is_some_and(|m| m.is_empty()) {
                self.d.findings.remove(&g);
            }
            if !self.d.findings.contains_key(&g) && !self.d.group_ids.contains_key(&g) {
                if let Some((m, c)) = self.d.group_counts.remove(&g) {
                    self.d.frozen_counts.0 += m;
                    self.d.frozen_counts.1 += c;
                }
            }
        }
        // Hash tables keep the room of their fullest moment (a replay's
        // catch-up, a burst of actions); give it back once they are sparse.
        shrink_sparse(&mut self.d.findings);
        shrink_sparse(&mut self.d.actions);
        shrink_sparse(&mut self.d.id_group);
        shrink_sparse(&mut self.d.group_ids);
        shrink_sparse(&mut self.d.group_counts);
        shrink_sparse(&mut self.d.outcomes);
        shrink_sparse(&mut self.d.updates_by_id);
        out
    }

    pub(super) fn take_cold(
        &mut self,
        g: &GroupKey,
        id: &str,
        finding: Option<Finding>,
    ) -> Option<ColdAction> {
        let (e, seen) = self.d.actions.remove(id)?;
        self.d.id_group.remove(id);
        let after = self
            .plan
            .rules
            .get(g.0 as usize)
            .and_then(|r| r.expire_after_ms);
        match (after, e.row.status.as_str()) {
            (Some(after), "open") => {
                let at = e.row.status_at.saturating_add(after);
                self.cold.expire.entry(at).or_default().push(id.to_string());
            }
            // Waits for a person: stays until an update brings it back.
            (_, "open" | "acknowledged") => {}
            // Closed: final once no correction of its finding can come.
            _ => {
                let at = self.aging.retract_at(e.row.period_end);
                self.cold.forget.entry(at).or_default().push(id.to_string());
            }
        }
        let seen = seen.statuses();
        Some(ColdAction {
            rule: g.0,
            group: g.1.clone(),
            finding,
            row: e.row,
            rev: e.rev,
            seen,
            outcome: self.d.outcomes.remove(id).map(|o| (o.row, o.rev)),
            updates: self.d.updates_by_id.remove(id).unwrap_or_default(),
        })
    }

    /// Takes out of the cold expiry index the ids of open actions in the
    /// cold store that expire at or before `now` (at the end of input: the
    /// last window's end): the engine fetches them back before it steps to
    /// `now`, and their groups replay with the expiry.
    pub fn take_cold_due(&mut self, now: i64, end: bool) -> Vec<String> {
        let now = if end { now.max(self.d.data_end) } else { now };
        due(&mut self.cold.expire, now)
    }

    /// Takes out of the cold index the closed actions in the cold store
    /// that are final by now (their finding past the retention): the
    /// engine tells the store to let them go.
    pub fn take_cold_final(&mut self) -> Vec<String> {
        due(&mut self.cold.forget, self.d.now)
    }

    /// Puts back ids the store could not take yet.
    pub fn forget_later(&mut self, ids: Vec<String>) {
        self.cold.forget.entry(self.d.now).or_default().extend(ids);
    }

    /// The cold index, for a checkpoint.
    pub fn cold_index(&self) -> &ColdIndex {
        &self.cold
    }

    /// Starts from a checkpoint's cold index.
    pub fn load_cold_index(&mut self, index: ColdIndex) {
        self.cold = index;
    }

    /// Puts an evicted action back, as it was when it left.
    pub fn restore(&mut self, c: ColdAction) {
        let g: GroupKey = (c.rule, c.group);
        let id = c.row.action_id.clone();
        if let Some(f) = c.finding {
            if f.in_maintenance {
                self.d.frozen_counts.0 = self.d.frozen_counts.0.saturating_sub(1);
                self.d.group_counts.entry(g.clone()).or_default().0 += 1;
            }
            self.d
                .findings
                .entry(g.clone())
                .or_default()
                .insert(f.period_start, Box::new(f));
        }
        let ids = self.d.group_ids.entry(g.clone()).or_default();
        if !ids.contains(&id) {
            ids.push(id.clone());
        }
        self.expires(&g, &c.row);
        self.d.id_group.insert(id.clone(), g);
        if let Some((row, rev)) = c.outcome {
            self.d.outcomes.insert(id.clone(), Emitted { row, rev });
        }
        if !c.updates.is_empty() {
            self.d.updates_by_id.insert(id.clone(), c.updates);
        }
        self.d.actions.insert(
            id,
            (
                Box::new(Emitted {
                    row: c.row,
                    rev: c.rev,
                }),
                Seen::of(&c.seen),
            ),
        );
    }

    /// Drops state no output can need any more.
    pub(super) fn prune(&mut self) {
        // Energy buckets older than every baseline that an unfinished action could use.
        let horizon = self.d.now;
        for (g, s) in self.d.energy.iter_mut() {
            let Some(v) = self
                .plan
                .rules
                .get(g.0 as usize)
                .and_then(|r| r.verify.as_ref())
            else {
                continue;
            };
            let mut keep_from =
                horizon.saturating_sub(v.baseline_ms + v.reporting_ms + 7 * 86_400_000);
            for id in self.d.group_ids.get(g).into_iter().flatten() {
                if let Some((e, _)) = self.d.actions.get(id) {
                    if matches!(e.row.status.as_str(), "open" | "acknowledged" | "done") {
                        keep_from =
                            keep_from.min(e.row.period_start - v.baseline_ms - 7 * 86_400_000);
                    }
                }
            }
            s.buckets = s.buckets.split_off(&keep_from);
        }
        // Demand intervals of billing periods closed for longer than the retention.
        if self.plan.billing.is_some() {
            let limit = self.d.now.saturating_sub(self.plan.window.retention_ms);
            let cut: Vec<(String, i64)> = self
                .d
                .demand
                .iter()
                .filter_map(|(site, m)| m.keys().next().map(|k| (site.clone(), *k)))
                .collect();
            for (site, first) in cut {
                let (_, pe) = self.bill_period(first);
                if pe < limit {
                    if let Some(m) = self.d.demand.get_mut(&site) {
                        *m = m.split_off(&pe);
                    }
                }
            }
        }
    }
}

/// Takes the ids of `index` due at or before `now`.
fn due(index: &mut BTreeMap<i64, Vec<String>>, now: i64) -> Vec<String> {
    if index.first_key_value().is_none_or(|(at, _)| *at > now) {
        return Vec::new();
    }
    let later = index.split_off(&now.saturating_add(1));
    std::mem::replace(index, later)
        .into_values()
        .flatten()
        .collect()
}
