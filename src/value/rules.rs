//! Derived metrics and rules, compiled once per worker from a [`Plan`].
//!
//! A rule groups enriched windows by some columns and a fixed period,
//! aggregates measures over them, and opens one action per `(rule, group,
//! period)` whose condition holds. The action's id is a stable hash of
//! dataflow, rule, group and period, so corrections become new revisions of
//! the same action.

use crate::config::{Agg, Plan, WINDOW_COLUMNS};
use std::collections::BTreeMap;
use std::sync::Arc;

use smallvec::SmallVec;

use crate::config::RuleKind;
use crate::expr::{ColType, Expr, Scope};
use crate::model::{AssetRow, Enriched, Finding, Group, Scalar, SharedName, F64};
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
    units_driver: bool,
    /// Row slots some window expression reads: string columns nobody reads
    /// are left empty instead of cloned for every window.
    read: Vec<bool>,
}

/// One window's contribution to a rule: `(rule, group values, period start)` → measure inputs.
/// The group is shared (`Arc`): arrangements copy keys on every merge.
pub type RuleKey = (u32, Group, i64);
/// A window's measure inputs (then its maintenance flag) and its asset row.
/// Inline for up to two measures (and the flag): a contribution in flight
/// allocates nothing of its own.
pub type RuleInput = (SmallVec<[F64; 3]>, Arc<AssetRow>);

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
            units_driver: plan
                .rules
                .iter()
                .any(|r| r.verify.as_ref().is_some_and(|v| v.units_driver)),
        }
    }

    /// Whether a verification normalises by produced units (the value layer
    /// then needs the production runs).
    pub fn needs_production(&self) -> bool {
        self.units_driver
    }

    /// Whether any window feeds the value layer's energy series.
    pub fn has_energy(&self) -> bool {
        self.billing_energy.is_some() || !self.verify.is_empty()
    }

    fn group_of(&self, r: &Rule, e: &Enriched) -> Group {
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
                group: Group::from([e.asset.site.clone()]),
                line: e.asset.line.to_string(),
                window_start: e.win.window_start,
                window_end: e.win.window_end,
                kwh: num(i),
                price: e.price_per_kwh,
            });
        }
        for &(ri, mi) in &self.verify {
            out.push(ValueIn::Energy {
                series: ri as u32 + 1,
                group: self.group_of(&self.rules[ri], e),
                line: e.asset.line.to_string(),
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
        let text = |slot: usize, s: &str| {
            Scalar::Str(if read(slot) {
                s.to_string()
            } else {
                String::new()
            })
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
        row.push(num(crate::model::tariff::hour_of(e.tariff_key) as f64));
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
            let mut vals: SmallVec<[F64; 3]> = r
                .measures
                .iter()
                .map(|(_, _, x)| F64(x.eval_num(&row)))
                .collect();
            vals.push(F64(if e.in_maintenance { 1.0 } else { 0.0 }));
            out.push(((i as u32, group, period), (vals, e.asset.clone())));
        }
        out
    }

    /// The period length of a rule.
    pub fn period_ms(&self, rule: u32) -> i64 {
        self.rules
            .get(rule as usize)
            .map_or(i64::MAX, |r| r.period_ms)
    }

    /// An empty accumulator for a rule's `(group, period)`.
    pub fn group_acc(&self, rule: u32) -> GroupAcc {
        let measures = self
            .rules
            .get(rule as usize)
            .map_or(&[][..], |r| &r.measures[..]);
        let n = measures.len();
        // Counts per value only for rules with a `min` or `max` measure.
        let rare = measures
            .iter()
            .any(|(_, a, _)| matches!(a, Agg::Min | Agg::Max))
            .then(|| {
                Box::new(Rare {
                    specials: Vec::new(),
                    extremes: (0..n).map(|_| BTreeMap::new()).collect(),
                })
            });
        GroupAcc {
            windows: 0,
            maintenance: 0,
            sums: (0..n).map(|_| ExactSum::default()).collect(),
            rare,
            assets: SmallVec::new(),
        }
    }

    /// Adds one window's contribution (`diff` +1) or removes it (−1).
    pub fn accumulate(&self, rule: u32, acc: &mut GroupAcc, input: &RuleInput, diff: isize) {
        let Some(r) = self.rules.get(rule as usize) else {
            return;
        };
        let d = diff as i32;
        acc.windows += d;
        let n = r.measures.len();
        if input.0.get(n).is_some_and(|f| f.0 > 0.0) {
            acc.maintenance += d;
        }
        for (j, (_, agg, _)) in r.measures.iter().enumerate() {
            let v = input.0.get(j).copied().unwrap_or(F64(f64::NAN));
            match agg {
                Agg::Sum | Agg::Mean => {
                    if let Some(k) = acc.sums[j].add(v.0, diff as i64) {
                        acc.count_special(n, j, k, d);
                    }
                }
                Agg::Min | Agg::Max => {
                    if let Some(m) = acc.rare.as_mut().and_then(|r| r.extremes.get_mut(j)) {
                        let c = m.entry(v).or_default();
                        *c += diff as i64;
                        if *c == 0 {
                            m.remove(&v);
                        }
                    }
                }
            }
        }
        let d = diff as i64;
        match acc.assets.iter_mut().find(|(a, _)| a == &input.1) {
            Some((_, c)) => *c += d,
            None => acc.assets.push((input.1.clone(), d)),
        }
        acc.assets.retain(|(_, c)| *c != 0);
    }

    /// The finding of one `(rule, group, period)` from its accumulated
    /// windows, if the rule's condition holds.
    pub fn finding(
        &self,
        rule: u32,
        group: &Group,
        period_start: i64,
        acc: &GroupAcc,
    ) -> Option<Finding> {
        let r = &self.rules[rule as usize];
        let windows = acc.windows;
        if windows <= 0 {
            return None;
        }
        let mut row = vec![Scalar::Num(F64(windows as f64))];
        let mut measures = serde_json::Map::new();
        for (j, (name, agg, _)) in r.measures.iter().enumerate() {
            let x = match agg {
                Agg::Sum => acc.sum(j),
                Agg::Mean => acc.sum(j) / windows as f64,
                Agg::Min => acc
                    .extremes(j)
                    .and_then(|m| m.keys().find(|v| !v.0.is_nan()))
                    .map_or(f64::INFINITY, |v| v.0),
                Agg::Max => acc
                    .extremes(j)
                    .and_then(|m| m.keys().rev().find(|v| !v.0.is_nan()))
                    .map_or(f64::NEG_INFINITY, |v| v.0),
            };
            measures.insert(name.clone(), serde_json::json!(x));
            row.push(Scalar::Num(F64(x)));
        }
        if !r.condition.eval_bool(&row) {
            return None;
        }
        let value = r.value.eval_num(&row);
        // Columns the rule does not group by come from the group's least asset
        // row (the same whatever order its windows arrived in).
        let asset = acc.assets.iter().map(|(a, _)| a).min();
        let col = |name: &str, f: fn(&AssetRow) -> &SharedName| {
            r.group_by
                .iter()
                .position(|g| g == name)
                .map(|i| group[i].clone())
                .or_else(|| asset.map(|a| f(a).clone()))
                .unwrap_or_else(|| SharedName::from(""))
        };
        Some(Finding {
            rule,
            group: group.clone(),
            period_start,
            period_end: period_start + r.period_ms,
            value: F64(value),
            windows: windows.into(),
            in_maintenance: acc.maintenance > 0,
            measures: serde_json::Value::Object(measures).to_string(),
            site: col("site", |a| &a.site),
            line: col("line", |a| &a.line),
            asset: col("asset", |a| &a.asset),
            kind: col("kind", |a| &a.kind),
        })
    }
}

/// What a rule keeps of one `(group, period)`: the number of windows, exact
/// sums (and, for `min`/`max`, a count per distinct value) of its measures,
/// the windows in maintenance, and the asset rows behind it. Retracting a
/// window undoes its addition exactly, so the state is the same whatever the
/// order of inserts and corrections, and it does not grow with windows.
///
/// 80 bytes: sums inline for up to two measures, the asset row inline for a
/// group of one asset, and what most rules never need (counts of non-finite
/// values, counts per value for `min`/`max`) behind one pointer, allocated
/// only when needed.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct GroupAcc {
    windows: i32,
    maintenance: i32,
    sums: SmallVec<[ExactSum; 2]>,
    rare: Option<Box<Rare>>,
    assets: SmallVec<[(Arc<AssetRow>, i64); 1]>,
}

/// The rarely needed part of a [`GroupAcc`].
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
struct Rare {
    /// Counts of NaN, +infinity and −infinity values by measure (empty while
    /// no sum has any).
    specials: Vec<[i32; 3]>,
    /// For rules with a `min` or `max` measure, counts per value by measure
    /// (empty otherwise).
    extremes: Vec<BTreeMap<F64, i64>>,
}

impl GroupAcc {
    /// Whether every window that was added has been removed again.
    pub fn is_empty(&self) -> bool {
        self.windows == 0 && self.assets.is_empty()
    }

    /// Counts a non-finite value (kind `k` of [`ExactSum::add`]) of measure
    /// `j` of `n`.
    fn count_special(&mut self, n: usize, j: usize, k: usize, diff: i32) {
        let rare = self.rare.get_or_insert_with(Default::default);
        if rare.specials.is_empty() {
            rare.specials = vec![[0; 3]; n];
        }
        rare.specials[j][k] += diff;
        if rare.specials.iter().flatten().all(|c| *c == 0) {
            rare.specials = Vec::new();
            if rare.extremes.is_empty() {
                self.rare = None;
            }
        }
    }

    /// The sum of measure `j`.
    fn sum(&self, j: usize) -> f64 {
        let special = self
            .rare
            .as_ref()
            .and_then(|r| r.specials.get(j).copied())
            .unwrap_or_default();
        self.sums[j].value(special)
    }

    fn extremes(&self, j: usize) -> Option<&BTreeMap<F64, i64>> {
        self.rare.as_ref().and_then(|r| r.extremes.get(j))
    }
}

/// A sum that removing an added value undoes exactly: values are rounded
/// once to a fixed grid of 2^-48 (about 3.6e-15) and added as integers,
/// so no rounding residue builds up over inserts and retractions. Finite
/// values of magnitude 2^78 (about 3e23) and above count as infinities:
/// the caller counts those, and NaNs, apart ([`ExactSum::add`] says which).
///
/// 16 bytes: the fixed-point sum as two 64-bit halves (an `i128` field would
/// align the accumulator to 16 bytes).
#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct ExactSum {
    lo: u64,
    hi: i64,
}

const SCALE: f64 = (1u64 << 48) as f64;
const LIMIT: f64 = (1u128 << 78) as f64;

impl ExactSum {
    fn fixed(&self) -> i128 {
        (i128::from(self.hi) << 64) | i128::from(self.lo)
    }

    /// Adds `diff` times `v`; for a value it cannot add, the index of its
    /// count (0 NaN, 1 +infinity, 2 −infinity) for the caller to keep.
    pub fn add(&mut self, v: f64, diff: i64) -> Option<usize> {
        let special = if v.is_nan() {
            0
        } else if v >= LIMIT {
            1
        } else if v <= -LIMIT {
            2
        } else {
            let x = (v * SCALE).round() as i128;
            let sum = self.fixed().wrapping_add(x.wrapping_mul(diff as i128));
            self.lo = sum as u64;
            self.hi = (sum >> 64) as i64;
            return None;
        };
        Some(special)
    }

    /// The sum, given the counts of NaN, +infinity and −infinity values.
    pub fn value(&self, [nan, pos_inf, neg_inf]: [i32; 3]) -> f64 {
        match (nan != 0, pos_inf != 0, neg_inf != 0) {
            (true, _, _) | (false, true, true) => f64::NAN,
            (false, true, false) => f64::INFINITY,
            (false, false, true) => f64::NEG_INFINITY,
            (false, false, false) => 0.0 + self.fixed() as f64 / SCALE,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn exact_sums_undo_what_they_added() {
        // Plain f64: ((0.1 + 0.2) + 0.3) - 0.2 - 0.1 - 0.3 leaves 5.55e-17.
        let naive = 0.1 + 0.2 + 0.3 - 0.2 - 0.1 - 0.3;
        assert_ne!(naive, 0.0);
        // One sum-only measure: the accumulator's own counts of non-finite values.
        let mut acc = GroupAcc {
            windows: 0,
            maintenance: 0,
            sums: smallvec::smallvec![ExactSum::default()],
            rare: None,
            assets: SmallVec::new(),
        };
        let add = |acc: &mut GroupAcc, v: f64, d: i32| {
            if let Some(k) = acc.sums[0].add(v, d.into()) {
                acc.count_special(1, 0, k, d);
            }
        };
        for v in [0.1, 0.2, 0.3] {
            add(&mut acc, v, 1);
        }
        assert!((acc.sum(0) - 0.6).abs() < 1e-14);
        add(&mut acc, 0.2, -1);
        assert!((acc.sum(0) - 0.4).abs() < 1e-14);
        add(&mut acc, 0.1, -1);
        add(&mut acc, 0.3, -1);
        assert_eq!(
            acc.sum(0).to_bits(),
            0.0f64.to_bits(),
            "back to +0.0 exactly"
        );
        // Non-finite values count apart and leave again.
        add(&mut acc, f64::INFINITY, 1);
        add(&mut acc, 2.5, 1);
        assert_eq!(acc.sum(0), f64::INFINITY);
        assert!(acc.rare.is_some(), "counted beside the sum");
        add(&mut acc, f64::NEG_INFINITY, 1);
        assert!(acc.sum(0).is_nan());
        add(&mut acc, f64::INFINITY, -1);
        add(&mut acc, f64::NEG_INFINITY, -1);
        assert_eq!(acc.sum(0), 2.5);
        assert!(acc.rare.is_none(), "no counts left, nothing allocated");
        add(&mut acc, f64::NAN, 1);
        assert!(acc.sum(0).is_nan());
        add(&mut acc, 1e30, 1);
        add(&mut acc, f64::NAN, -1);
        assert_eq!(
            acc.sum(0),
            f64::INFINITY,
            "2^78 and above count as infinite"
        );
        add(&mut acc, 1e30, -1);
        assert_eq!(acc.sum(0), 2.5);
        assert!(acc.rare.is_none());
        assert_eq!(std::mem::size_of::<GroupAcc>(), 80);
    }

    pub(crate) fn compiled() -> Compiled {
        let dir = tempfile::tempdir().unwrap();
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let fixture = root.join("tests/fixtures/workload_v1_small");
        let flow = dir.path().join("flow.toml");
        std::fs::write(
            &flow,
            r#"name = "fold"
[[sources]]
type = "replay"
id = "samples"
path = "${INPUT_DIR}/samples.csv"
[context.assets]
path = "${INPUT_DIR}/assets.csv"
[context.tariff]
path = "${INPUT_DIR}/tariff.csv"
[window]
size = "1m"
allowed_lateness = "5s"
[[rules]]
id = "spread"
group_by = ["asset"]
period = "1h"
condition = "windows >= 2.0"
[rules.measures]
total = { sum = "mean" }
avg = { mean = "mean" }
lo = { min = "mean" }
hi = { max = "mean" }
[rules.action]
owner = "operations"
action_type = "further_study"
value_category = "energy_cost"
value = "hi - lo"
[[sinks]]
type = "parquet"
id = "lake"
path = "${OUT_DIR}"
"#,
        )
        .unwrap();
        let env = |k: &str| match k {
            "INPUT_DIR" => Some(fixture.display().to_string()),
            "OUT_DIR" => Some(dir.path().display().to_string()),
            _ => None,
        };
        let plan = crate::dataflow::load_with_env(&flow, &env).expect("test flow loads");
        Compiled::new(&plan)
    }

    pub(crate) fn asset(tag: &str, kind: &str) -> Arc<AssetRow> {
        Arc::new(AssetRow {
            tag: tag.into(),
            asset: "a1".into(),
            site: "s1".into(),
            line: "l1".into(),
            kind: kind.into(),
            standby_kw: F64(0.0),
            extra: Box::default(),
        })
    }

    /// A window's inputs: the rule's four measures (all `mean`) and its maintenance flag.
    pub(crate) fn input(mean: f64, maint: bool, a: &Arc<AssetRow>) -> RuleInput {
        let m = F64(mean);
        (
            smallvec::smallvec![m, m, m, m, F64(if maint { 1.0 } else { 0.0 })],
            a.clone(),
        )
    }

    fn measures(f: &Finding) -> serde_json::Value {
        serde_json::from_str(&f.measures).unwrap()
    }

    #[test]
    fn a_group_folds_corrections_in_any_order_to_the_hand_computed_finding() {
        let c = compiled();
        let (pump, aux) = (asset("a1/pump", "pump"), asset("a1/aux", "motor"));
        let group: Group = Arc::from([SharedName::from("a1")]);
        // Windows 2, 5 and 11 kW; then 11 is corrected to 7 (a late row).
        // By hand: total 2 + 5 + 7 = 14, mean 14 / 3, min 2, max 7, value 7 - 2 = 5.
        let ups: Vec<(RuleInput, isize)> = vec![
            (input(2.0, false, &pump), 1),
            (input(5.0, false, &aux), 1),
            (input(11.0, false, &pump), 1),
            (input(11.0, false, &pump), -1),
            (input(7.0, true, &pump), 1),
        ];
        let mut acc = c.group_acc(0);
        assert!(
            c.finding(0, &group, 0, &acc).is_none(),
            "no windows, no finding"
        );
        c.accumulate(0, &mut acc, &ups[0].0, 1);
        assert!(
            c.finding(0, &group, 0, &acc).is_none(),
            "1 window: condition false"
        );
        for (i, d) in &ups[1..] {
            c.accumulate(0, &mut acc, i, *d);
        }
        let f = c.finding(0, &group, 0, &acc).expect("condition holds");
        assert_eq!(f.windows, 3);
        assert!((f.value.0 - 5.0).abs() < 1e-12);
        let m = measures(&f);
        assert!((m["total"].as_f64().unwrap() - 14.0).abs() < 1e-12);
        assert!((m["avg"].as_f64().unwrap() - 14.0 / 3.0).abs() < 1e-12);
        assert_eq!(m["lo"].as_f64(), Some(2.0));
        assert_eq!(
            m["hi"].as_f64(),
            Some(7.0),
            "the retracted 11 is gone from max"
        );
        assert!(f.in_maintenance, "the corrected window is in maintenance");
        assert_eq!((f.period_start, f.period_end), (0, 3_600_000));
        // Grouped by asset only: kind comes from the least asset row (`a1/aux`).
        assert_eq!((&*f.asset, &*f.kind), ("a1", "motor"));

        // The same updates in reverse order (a retraction before its insert)
        // give the identical finding.
        let mut rev = c.group_acc(0);
        for (i, d) in ups.iter().rev() {
            c.accumulate(0, &mut rev, i, *d);
        }
        assert_eq!(c.finding(0, &group, 0, &rev), Some(f));

        // Retracting every window empties the accumulator.
        for (i, d) in &ups {
            c.accumulate(0, &mut rev, i, -*d);
        }
        assert!(rev.is_empty());
        assert!(c.finding(0, &group, 0, &rev).is_none());
    }
}
