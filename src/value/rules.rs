//! Derived metrics and rules, compiled once per worker from a [`Plan`].
//!
//! A rule groups enriched windows by some columns and a fixed period,
//! aggregates measures over them, and opens one action per `(rule, group,
//! period)` whose condition holds. The action's id is a stable hash of
//! dataflow, rule, group and period, so corrections become new revisions of
//! the same action.

use crate::config::{Agg, Plan, WINDOW_COLUMNS};
use crate::model::{ActionRow, Enriched, Scalar, F64};
use crate::value::expr::{ColType, Expr, Scope};

struct Rule {
    id: String,
    filter: Option<Expr>,
    group_by: Vec<String>,
    period_ms: i64,
    measures: Vec<(String, Agg, Expr)>,
    condition: Expr,
    value: Expr,
    owner: String,
    action_type: String,
    value_category: String,
    medium: f64,
    high: f64,
}

/// Compiled metrics and rules.
pub struct Compiled {
    dataflow: String,
    currency: String,
    metrics: Vec<Expr>,
    rules: Vec<Rule>,
}

/// One window's contribution to a rule: `(rule, group values, period start)` → measure inputs.
pub type RuleKey = (u32, Vec<String>, i64);

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
        let rules = plan
            .rules
            .iter()
            .map(|r| {
                let mut mscope = Scope::default();
                mscope.push("windows", ColType::Num);
                for m in &r.measures {
                    mscope.push(&m.name, ColType::Num);
                }
                Rule {
                    id: r.id.clone(),
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
                    owner: r.owner.clone(),
                    action_type: r.action_type.clone(),
                    value_category: r.value_category.clone(),
                    medium: r.severity_medium,
                    high: r.severity_high,
                }
            })
            .collect();
        Compiled {
            dataflow: plan.name.clone(),
            currency: plan.currency.clone(),
            metrics,
            rules,
        }
    }

    pub fn currency(&self) -> &str {
        &self.currency
    }

    /// The row in scope order: fixed window columns, asset extras, then metrics.
    fn row(e: &Enriched) -> Vec<Scalar> {
        let w = &e.win;
        let a = &e.asset;
        let num = |x: f64| Scalar::Num(F64(x));
        let mut row = Vec::with_capacity(WINDOW_COLUMNS.len() + a.extra.len() + e.metrics.len());
        row.push(Scalar::Str(a.tag.clone()));
        row.push(Scalar::Str(a.asset.clone()));
        row.push(Scalar::Str(a.site.clone()));
        row.push(Scalar::Str(a.line.clone()));
        row.push(Scalar::Str(a.kind.clone()));
        row.push(Scalar::Num(a.standby_kw));
        row.push(num(w.window_start as f64));
        row.push(num(w.window_end as f64));
        row.push(num(
            w.window_start.div_euclid(3_600_000).rem_euclid(24) as f64
        ));
        row.push(num(w.count as f64));
        row.push(Scalar::Num(w.mean));
        row.push(Scalar::Num(w.min));
        row.push(Scalar::Num(w.max));
        row.push(Scalar::Num(w.first));
        row.push(Scalar::Num(w.last));
        row.push(Scalar::Num(e.price_per_kwh));
        row.push(Scalar::Bool(e.producing));
        row.push(Scalar::Bool(e.in_maintenance));
        row.extend(a.extra.iter().cloned());
        row.extend(e.metrics.iter().cloned());
        row
    }

    /// Fills `e.metrics` in config order (each metric sees the ones before it).
    pub fn derive(&self, e: &mut Enriched) {
        e.metrics.clear();
        let mut row = Self::row(e);
        for m in &self.metrics {
            let v = m.eval(&row).unwrap_or(Scalar::Num(F64(f64::NAN)));
            row.push(v.clone());
            e.metrics.push(v);
        }
    }

    /// The rule inputs one enriched window contributes to.
    pub fn contributions(&self, e: &Enriched) -> Vec<(RuleKey, Vec<F64>)> {
        if self.rules.is_empty() {
            return Vec::new();
        }
        let row = Self::row(e);
        let mut out = Vec::new();
        for (i, r) in self.rules.iter().enumerate() {
            if let Some(f) = &r.filter {
                if !f.eval_bool(&row) {
                    continue;
                }
            }
            let group = r
                .group_by
                .iter()
                .map(|g| match g.as_str() {
                    "site" => e.asset.site.clone(),
                    "line" => e.asset.line.clone(),
                    "asset" => e.asset.asset.clone(),
                    "tag" => e.asset.tag.clone(),
                    _ => e.asset.kind.clone(),
                })
                .collect();
            let period = e.win.window_start.div_euclid(r.period_ms) * r.period_ms;
            let vals = r
                .measures
                .iter()
                .map(|(_, _, x)| F64(x.eval_num(&row)))
                .collect();
            out.push(((i as u32, group, period), vals));
        }
        out
    }

    /// Aggregates one group's inputs; returns the action if the condition holds.
    pub fn action(&self, key: &RuleKey, inputs: &[(&Vec<F64>, isize)]) -> Option<ActionRow> {
        let (ri, group, period_start) = key;
        let r = &self.rules[*ri as usize];
        let windows: isize = inputs.iter().map(|(_, m)| *m).sum();
        if windows <= 0 {
            return None;
        }
        let mut row = vec![Scalar::Num(F64(windows as f64))];
        let mut measures = serde_json::Map::new();
        for (j, (name, agg, _)) in r.measures.iter().enumerate() {
            let vals = inputs.iter().map(|(v, m)| (v[j].0, *m));
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
        let value = r.value.eval_num(&row);
        let get = |name: &str| {
            r.group_by
                .iter()
                .position(|g| g == name)
                .map(|i| group[i].clone())
                .unwrap_or_default()
        };
        let severity = if value >= r.high {
            "high"
        } else if value >= r.medium {
            "medium"
        } else {
            "low"
        };
        let evidence = serde_json::json!({
            "condition": r.condition.source,
            "windows": windows,
            "measures": measures,
            "group": r.group_by.iter().zip(group.iter()).map(|(k, v)| (k.clone(), serde_json::json!(v))).collect::<serde_json::Map<_, _>>(),
        });
        Some(ActionRow {
            action_id: action_id(&self.dataflow, &r.id, group, *period_start),
            rule: r.id.clone(),
            site: get("site"),
            line: get("line"),
            asset: get("asset"),
            owner: r.owner.clone(),
            action_type: r.action_type.clone(),
            value_category: r.value_category.clone(),
            value: F64(value),
            severity: severity.to_string(),
            period_start: *period_start,
            period_end: period_start + r.period_ms,
            status: "open".to_string(),
            evidence: evidence.to_string(),
        })
    }
}

/// Stable id: hex xxh3-64 of dataflow, rule, group values and period start.
pub fn action_id(dataflow: &str, rule: &str, group: &[String], period_start: i64) -> String {
    let mut s = format!("{dataflow}\u{1f}{rule}");
    for g in group {
        s.push('\u{1f}');
        s.push_str(g);
    }
    s.push('\u{1f}');
    s.push_str(&period_start.to_string());
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(s.as_bytes()))
}
