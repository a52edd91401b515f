//! Derived metrics and rules, compiled once per worker from a [`Plan`].
//!
//! A rule groups enriched windows by some columns and a fixed period,
//! aggregates measures over them, and opens one action per `(rule, group,
//! period)` whose condition holds. The action's id is a stable hash of
//! dataflow, rule, group and period, so corrections become new revisions of
//! the same action.

use crate::config::{Agg, Plan, WINDOW_COLUMNS};
use std::sync::Arc;

use crate::config::RuleKind;
use crate::model::{AssetRow, Enriched, Finding, Scalar, F64};
use crate::value::expr::{ColType, Expr, Scope};
use crate::value::layer::ValueIn;

struct Rule {
    on_windows: bool,
    filter: Option<Expr>,
    group_by: Vec<String>,
    period_ms: i64,
    measures: Vec<(String, Agg, Expr)>,
    condition: Expr,
    value: Expr,
}

/// Compiled metrics and rules.
pub struct Compiled {
    currency: String,
    metrics: Vec<Expr>,
    rules: Vec<Rule>,
    /// Metric index of a window's kWh for billing.
    billing_energy: Option<usize>,
    /// `(rule index, energy metric index)` of rules that verify outcomes.
    verify: Vec<(usize, usize)>,
    /// Row slots some window expression reads: string columns nobody reads
    /// are left empty instead of cloned for every window.
    read: Vec<bool>,
}

/// One window's contribution to a rule: `(rule, group values, period start)` → measure inputs.
/// The group is shared (`Arc`): arrangements copy keys on every merge.
pub type RuleKey = (u32, Arc<[String]>, i64);
/// A window's measure inputs (then its maintenance flag) and its asset row.
pub type RuleInput = (Vec<F64>, Arc<AssetRow>);

fn compile(src: &str, scope: &Scope, want: Option<ColType>) -> Expr {
    // The plan was validated, so this only fails if the plan was built by hand.
    Expr::compile(src, scope, want)
        .unwrap_or_else(|e| panic!("validated expression failed to compile: {}", e.message))
}

impl Compiled {
    pub fn new(plan: &Plan) -> Compiled {
        let mut scope = plan.row_scope();
        let mut metrics = Vec::new();
        for m in &plan.metrics {
            metrics.push(compile(&m.expr, &scope, None));
            scope.push(&m.name, m.result);
        }
        let rules: Vec<Rule> = plan
            .rules
            .iter()
            .map(|r| {
                let mut mscope = Scope::default();
                if r.kind == RuleKind::DemandPeak {
                    for m in crate::config::DEMAND_MEASURES {
                        mscope.push(m, ColType::Num);
                    }
                } else {
                    mscope.push("windows", ColType::Num);
                    for m in &r.measures {
                        mscope.push(&m.name, ColType::Num);
                    }
                }
                Rule {
                    on_windows: r.kind == RuleKind::Windows,
                    filter: r
                        .filter
                        .as_deref()
                        .map(|f| compile(f, &scope, Some(ColType::Bool))),
                    group_by: r.group_by.clone(),
                    period_ms: r.period_ms,
                    measures: r
                        .measures
                        .iter()
                        .map(|m| {
                            (
                                m.name.clone(),
                                m.agg,
                                compile(&m.expr, &scope, Some(ColType::Num)),
                            )
                        })
                        .collect(),
                    condition: compile(&r.condition, &mscope, Some(ColType::Bool)),
                    value: compile(&r.value, &mscope, Some(ColType::Num)),
                }
            })
            .collect();
        let mut read = vec![false; scope.cols.len()];
        let window_exprs = metrics.iter().chain(
            rules
                .iter()
                .flat_map(|r: &Rule| r.filter.iter().chain(r.measures.iter().map(|(_, _, e)| e))),
        );
        for e in window_exprs {
            for slot in e.slots() {
                read[slot] = true;
            }
        }
        Compiled {
            currency: plan.currency.clone(),
            metrics,
            rules,
            read,
            billing_energy: plan.billing.as_ref().map(|b| b.energy_metric),
            verify: plan
                .rules
                .iter()
                .enumerate()
                .filter_map(|(i, r)| r.verify.as_ref().map(|v| (i, v.energy_metric)))
                .collect(),
        }
    }

    /// Whether any window feeds the value layer's energy series.
    pub fn has_energy(&self) -> bool {
        self.billing_energy.is_some() || !self.verify.is_empty()
    }

    fn group_of(&self, r: &Rule, e: &Enriched) -> Arc<[String]> {
        r.group_by
            .iter()
            .map(|g| match g.as_str() {
                "site" => e.asset.site.clone(),
                "line" => e.asset.line.clone(),
                "asset" => e.asset.asset.clone(),
                "tag" => e.asset.tag.clone(),
                _ => e.asset.kind.clone(),
            })
            .collect()
    }

    /// A window's energy for billing and for verifying rules' series.
    pub fn energy(&self, e: &Enriched) -> Vec<ValueIn> {
        let num = |i: usize| match e.metrics.get(i) {
            Some(Scalar::Num(x)) => *x,
            _ => F64(f64::NAN),
        };
        let mut out = Vec::new();
        if let Some(i) = self.billing_energy {
            out.push(ValueIn::Energy {
                series: 0,
                group: vec![e.asset.site.clone()],
                line: e.asset.line.clone(),
                window_start: e.win.window_start,
                window_end: e.win.window_end,
                kwh: num(i),
                price: e.price_per_kwh,
            });
        }
        for &(ri, mi) in &self.verify {
            out.push(ValueIn::Energy {
                series: ri as u32 + 1,
                group: self.group_of(&self.rules[ri], e).to_vec(),
                line: e.asset.line.clone(),
                window_start: e.win.window_start,
                window_end: e.win.window_end,
                kwh: num(mi),
                price: e.price_per_kwh,
            });
        }
        out
    }

    pub fn currency(&self) -> &str {
        &self.currency
    }

    /// Evaluates a `demand_peak` rule on its measures (in `DEMAND_MEASURES` order):
    /// `Some((value, measures JSON))` when the condition holds.
    pub fn demand(&self, rule: usize, vals: &[f64]) -> Option<(f64, String)> {
        let r = &self.rules[rule];
        let row: Vec<Scalar> = vals.iter().map(|v| Scalar::Num(F64(*v))).collect();
        if !r.condition.eval_bool(&row) {
            return None;
        }
        let m: serde_json::Map<String, serde_json::Value> = crate::config::DEMAND_MEASURES
            .iter()
            .zip(vals)
            .map(|(k, v)| (k.to_string(), serde_json::json!(v)))
            .collect();
        Some((
            r.value.eval_num(&row),
            serde_json::Value::Object(m).to_string(),
        ))
    }

    /// The row in scope order: fixed window columns, asset extras, then
    /// metrics. String columns no expression reads stay empty.
    fn row(&self, e: &Enriched) -> Vec<Scalar> {
        let w = &e.win;
        let a = &e.asset;
        let num = |x: f64| Scalar::Num(F64(x));
        let read = |slot: usize| self.read.get(slot).copied().unwrap_or(true);
        let text = |slot: usize, s: &String| {
            Scalar::Str(if read(slot) { s.clone() } else { String::new() })
        };
        let mut row = Vec::with_capacity(WINDOW_COLUMNS.len() + a.extra.len() + e.metrics.len());
        row.push(text(0, &a.tag));
        row.push(text(1, &a.asset));
        row.push(text(2, &a.site));
        row.push(text(3, &a.line));
        row.push(text(4, &a.kind));
        row.push(Scalar::Num(a.standby_kw));
        row.push(num(w.window_start as f64));
        row.push(num(w.window_end as f64));
        row.push(num(crate::value::tariff::hour_of(e.tariff_key) as f64));
        row.push(num(w.count as f64));
        row.push(Scalar::Num(w.mean));
        row.push(Scalar::Num(w.min));
        row.push(Scalar::Num(w.max));
        row.push(Scalar::Num(w.first));
        row.push(Scalar::Num(w.last));
        row.push(Scalar::Num(e.price_per_kwh));
        row.push(Scalar::Bool(e.producing));
        row.push(Scalar::Bool(e.in_maintenance));
        let base = row.len();
        row.extend(a.extra.iter().enumerate().map(|(i, x)| match x {
            Scalar::Str(s) => text(base + i, s),
            other => other.clone(),
        }));
        row.extend(e.metrics.iter().cloned());
        row
    }

    /// Fills `e.metrics` in config order (each metric sees the ones before it).
    pub fn derive(&self, e: &mut Enriched) {
        e.metrics.clear();
        let mut row = self.row(e);
        for m in &self.metrics {
            let v = m.eval(&row).unwrap_or(Scalar::Num(F64(f64::NAN)));
            row.push(v.clone());
            e.metrics.push(v);
        }
    }

    /// The rule inputs one enriched window contributes to.
    pub fn contributions(&self, e: &Enriched) -> Vec<(RuleKey, RuleInput)> {
        if self.rules.is_empty() {
            return Vec::new();
        }
        let row = self.row(e);
        let mut out = Vec::new();
        for (i, r) in self.rules.iter().enumerate() {
            if !r.on_windows {
                continue;
            }
            if let Some(f) = &r.filter {
                if !f.eval_bool(&row) {
                    continue;
                }
            }
            let group = self.group_of(r, e);
            let period = e.win.window_start.div_euclid(r.period_ms) * r.period_ms;
            let mut vals: Vec<F64> = r
                .measures
                .iter()
                .map(|(_, _, x)| F64(x.eval_num(&row)))
                .collect();
            vals.push(F64(if e.in_maintenance { 1.0 } else { 0.0 }));
            out.push(((i as u32, group, period), (vals, e.asset.clone())));
        }
        out
    }

    /// Aggregates one group's inputs; returns the finding if the condition holds.
    /// The last input value of each window is its maintenance flag (1.0 / 0.0).
    pub fn finding(&self, key: &RuleKey, inputs: &[(&RuleInput, isize)]) -> Option<Finding> {
        let (ri, group, period_start) = key;
        let r = &self.rules[*ri as usize];
        let windows: isize = inputs.iter().map(|(_, m)| *m).sum();
        if windows <= 0 {
            return None;
        }
        let mut row = vec![Scalar::Num(F64(windows as f64))];
        let mut measures = serde_json::Map::new();
        for (j, (name, agg, _)) in r.measures.iter().enumerate() {
            let vals = inputs.iter().map(|(v, m)| (v.0[j].0, *m));
            let x = match agg {
                Agg::Sum => vals.map(|(v, m)| v * m as f64).sum(),
                Agg::Mean => vals.map(|(v, m)| v * m as f64).sum::<f64>() / windows as f64,
                Agg::Min => vals.map(|(v, _)| v).fold(f64::INFINITY, f64::min),
                Agg::Max => vals.map(|(v, _)| v).fold(f64::NEG_INFINITY, f64::max),
            };
            measures.insert(name.clone(), serde_json::json!(x));
            row.push(Scalar::Num(F64(x)));
        }
        if !r.condition.eval_bool(&row) {
            return None;
        }
        let n = r.measures.len();
        let in_maintenance = inputs
            .iter()
            .any(|(v, _)| v.0.get(n).is_some_and(|f| f.0 > 0.0));
        let value = r.value.eval_num(&row);
        let asset = inputs.first().map(|(v, _)| v.1.clone());
        let col = |name: &str, f: fn(&AssetRow) -> &String| {
            r.group_by
                .iter()
                .position(|g| g == name)
                .map(|i| group[i].clone())
                .or_else(|| asset.as_ref().map(|a| f(a).clone()))
                .unwrap_or_default()
        };
        Some(Finding {
            rule: *ri,
            group: group.to_vec(),
            period_start: *period_start,
            period_end: period_start + r.period_ms,
            value: F64(value),
            windows: windows as i64,
            in_maintenance,
            measures: serde_json::Value::Object(measures).to_string(),
            site: col("site", |a| &a.site),
            line: col("line", |a| &a.line),
            asset: col("asset", |a| &a.asset),
            kind: col("kind", |a| &a.kind),
        })
    }
}
