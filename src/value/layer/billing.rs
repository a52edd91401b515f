//! Billing: energy and demand cost per site and billing period, and the
//! demand-peak rules that watch the demand intervals.

use super::*;

impl ValueLayer {
    /// Evaluates `demand_peak` rules on the demand intervals touched since the last step.
    pub(super) fn demand_rules(&mut self) {
        let Some(b) = self.plan.billing.clone() else {
            self.d.touched_intervals.clear();
            return;
        };
        let rules: Vec<usize> = self
            .plan
            .rules
            .iter()
            .enumerate()
            .filter(|(_, r)| r.kind == RuleKind::DemandPeak)
            .map(|(i, _)| i)
            .collect();
        let touched: Vec<(String, i64)> = self.d.touched_intervals.drain().collect();
        if rules.is_empty() {
            return;
        }
        let ih = b.interval_ms as f64 / 3_600_000.0;
        let wh = self.plan.window.size_ms as f64 / 3_600_000.0;
        for (site, iv) in touched {
            let Some(map) = self.d.demand.get(&site) else {
                continue;
            };
            // Only the site's newest interval is projected; older ones are history.
            if map.keys().next_back() != Some(&iv) {
                continue;
            }
            let acc = &map[&iv];
            let (ps, pe) = self.bill_period(iv);
            let billed_kw = map
                .range(ps..pe)
                .filter(|(k, _)| **k != iv)
                .map(|(_, a)| a.kwh / ih)
                .fold(0.0, f64::max);
            if billed_kw <= 0.0 {
                continue; // no peak to approach yet in this billing period
            }
            let remaining_h = ((iv + b.interval_ms) - (acc.last_ws + self.plan.window.size_ms))
                .max(0) as f64
                / 3_600_000.0;
            let p_now = acc.last_kwh / wh;
            let projected_kw = (acc.kwh + p_now * remaining_h) / ih;
            let increase_kw = (projected_kw - billed_kw).max(0.0);
            let previous_kw = map
                .range(..iv)
                .next_back()
                .filter(|(k, _)| **k == iv - b.interval_ms)
                .map(|(_, a)| a.kwh / ih)
                .unwrap_or(0.0);
            let vals = [
                acc.windows as f64,
                acc.kwh,
                previous_kw,
                projected_kw,
                billed_kw,
                increase_kw,
                increase_kw * b.demand_charge_per_kw,
                b.demand_charge_per_kw,
            ];
            for &ri in &rules {
                let Some((value, measures)) = self.compiled.demand(ri, &vals) else {
                    continue;
                };
                let key: GroupKey = (ri as u32, Group::from([SharedName::from(site.as_str())]));
                let f = Finding {
                    rule: ri as u32,
                    group: key.1.clone(),
                    period_start: iv,
                    period_end: iv + b.interval_ms,
                    value: F64(value),
                    windows: acc.windows,
                    in_maintenance: false,
                    measures,
                    site: key.1[0].clone(),
                    line: SharedName::from(""),
                    asset: SharedName::from(""),
                    kind: SharedName::from(""),
                };
                // Sticky: an alert raised on a projection stays, at its highest value.
                let m = self.d.findings.entry(key.clone()).or_default();
                match m.get(&iv) {
                    Some(old) if old.value >= f.value => {}
                    _ => {
                        m.insert(iv, Box::new(f));
                        self.d.sticky.insert((key.clone(), iv));
                        self.d.touched.insert(key);
                    }
                }
            }
        }
    }

    pub(super) fn billing(&mut self, out: &mut ValueOut, _end: bool) {
        let Some(b) = self.plan.billing.clone() else {
            return;
        };
        // Newly closed periods and corrected ones.
        let keys: Vec<(String, i64)> = self.d.touched_bills.iter().cloned().collect();
        let ih = b.interval_ms as f64 / 3_600_000.0;
        let mut done = Vec::new();
        for (site, ps) in keys {
            let (_, pe) = self.bill_period(ps);
            if pe > self.d.now {
                continue; // still open: stays touched
            }
            done.push((site.clone(), ps));
            let Some(map) = self.d.demand.get(&site) else {
                continue;
            };
            let ivs: Vec<(i64, &DemandInterval)> = map
                .range(ps..pe)
                .map(|(k, v)| (*k, v))
                .filter(|(_, v)| v.windows > 0)
                .collect();
            if ivs.is_empty() {
                continue;
            }
            let energy_kwh: f64 = ivs.iter().map(|(_, v)| v.kwh).sum();
            let energy_cost: f64 = ivs.iter().map(|(_, v)| v.cost).sum();
            let (peak_start, peak) = ivs
                .iter()
                .max_by(|a, b| a.1.kwh.total_cmp(&b.1.kwh).then(b.0.cmp(&a.0)))
                .map(|(k, v)| (*k, *v))
                .expect("non-empty");
            let peak_kw = peak.kwh / ih;
            let others_kw = ivs
                .iter()
                .filter(|(k, _)| *k != peak_start)
                .map(|(_, v)| v.kwh / ih)
                .fold(0.0, f64::max);
            let mut kwhs: Vec<f64> = ivs.iter().map(|(_, v)| v.kwh).collect();
            kwhs.sort_by(f64::total_cmp);
            let typical = if kwhs.len() % 2 == 1 {
                kwhs[kwhs.len() / 2]
            } else {
                (kwhs[kwhs.len() / 2 - 1] + kwhs[kwhs.len() / 2]) / 2.0
            };
            let new_peak_kw = others_kw.max(typical / ih).min(peak_kw);
            let shave_kw = peak_kw - new_peak_kw;
            let peak_price = if peak.kwh > 0.0 {
                peak.cost / peak.kwh
            } else {
                0.0
            };
            let shave_value =
                shave_kw * b.demand_charge_per_kw + (peak.kwh - typical).max(0.0) * peak_price;
            let mut by_price: BTreeMap<F64, (f64, f64)> = BTreeMap::new();
            for (_, v) in &ivs {
                for (p, (k, c)) in &v.by_price {
                    let e = by_price.entry(*p).or_default();
                    e.0 += k;
                    e.1 += c;
                }
            }
            let by_price: serde_json::Map<String, serde_json::Value> = by_price
                .into_iter()
                .filter(|(_, (k, _))| k.abs() > 1e-12)
                .map(|(p, (k, c))| (format!("{}", p.0), serde_json::json!({"kwh": k, "cost": c})))
                .collect();
            let demand_cost = peak_kw * b.demand_charge_per_kw;
            let row = BillRow {
                site: site.clone(),
                period_start: ps,
                period_end: pe,
                energy_kwh,
                energy_cost,
                peak_kw,
                peak_interval_start: peak_start,
                demand_cost,
                total_cost: energy_cost + demand_cost,
                peak_shave_kw: shave_kw,
                peak_shave_value: shave_value,
                intervals: ivs.len() as i64,
                energy_by_price: serde_json::Value::Object(by_price).to_string(),
                is_final: true,
            };
            let key = (site, ps);
            let changed = self.d.bills.get(&key).is_none_or(|e| e.row != row);
            if changed {
                let rev = self.d.bills.get(&key).map_or(0, |e| e.rev + 1);
                out.bills.push((row.clone(), rev));
                self.d.bills.insert(key, Emitted { row, rev });
            }
        }
        for k in done {
            self.d.touched_bills.remove(&k);
        }
    }
}
