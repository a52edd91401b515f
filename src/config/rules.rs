//! `[[rules]]`: what a rule watches (window groups over a period, or the
//! billing's demand intervals), its condition, the action it opens, and how
//! the action's outcome is verified.

use super::loader::Loader;
use super::metrics::metric_index;
use super::plan::{
    Agg, BillingPlan, Granularity, Limits, MeasurePlan, MetricPlan, RuleKind, RulePlan, VerifyPlan,
    ACTION_TYPES, DEMAND_MEASURES, GROUP_COLUMNS, OWNERS, VALUE_CATEGORIES,
};
use super::raw::{RawAction, RawRule, RawVerify};
use crate::expr::{ColType, Scope};

const RULE_KEYS: &[&str] = &[
    "id",
    "kind",
    "category",
    "verify",
    "description",
    "where",
    "group_by",
    "period",
    "measures",
    "condition",
    "action",
];

/// What a rule's expressions and references may see.
pub(super) struct Seen<'a> {
    /// The window row with every metric.
    pub scope: &'a Scope,
    pub metrics: &'a [MetricPlan],
    pub billing: Option<&'a BillingPlan>,
    pub size_ms: i64,
    /// Whether `[context.production]` is given (the `units` driver needs it).
    pub has_production: bool,
    /// `[lifecycle] expire_after`, which a rule's own overrides.
    pub expire_after_ms: Option<i64>,
}

/// Validates `[[rules]]`.
pub(super) fn rules(l: &mut Loader<'_>, raw: Vec<toml::Value>, s: &Seen<'_>) -> Vec<RulePlan> {
    let mut rules = Vec::new();
    let mut rule_ids = Vec::<String>::new();
    for (i, r) in raw.into_iter().enumerate() {
        let key = format!("rules[{i}]");
        let Some(r) = l.de::<RawRule>(&key, r, RULE_KEYS) else {
            continue;
        };
        if rule_ids.contains(&r.id) {
            l.at_value(
                &format!("{key}.id"),
                format!("duplicate rule id `{}`", r.id),
                None,
            );
        }
        rule_ids.push(r.id.clone());
        rules.push(rule(l, &key, r, s));
    }
    rules
}

/// What a rule looks at: its groups, period, measures and condition.
struct Shape {
    group_by: Vec<String>,
    period_ms: i64,
    measures: Vec<MeasurePlan>,
    /// The names its condition and value may use.
    mscope: Scope,
    condition: String,
}

fn rule(l: &mut Loader<'_>, key: &str, r: RawRule, s: &Seen<'_>) -> RulePlan {
    let kind = match r.kind.as_deref().unwrap_or("windows") {
        "windows" => RuleKind::Windows,
        "demand_peak" => RuleKind::DemandPeak,
        other => {
            l.one_of(
                &format!("{key}.kind"),
                other,
                &["windows", "demand_peak"],
                "rule kind",
            );
            RuleKind::Windows
        }
    };
    let Shape {
        group_by,
        period_ms,
        measures,
        mscope,
        condition,
    } = match kind {
        RuleKind::DemandPeak => demand_peak(l, key, &r, s),
        RuleKind::Windows => windows(l, key, &r, s),
    };
    l.expr(
        &format!("{key}.condition"),
        &condition,
        &mscope,
        Some(ColType::Bool),
    );
    let a = &r.action;
    let Action {
        value,
        medium,
        high,
        one_per_group,
        cooldown_ms,
    } = action(l, key, a, kind, &mscope);
    let expire_after_ms = match &a.expire_after {
        Some(e) => l
            .duration(&format!("{key}.action.expire_after"), e)
            .filter(|ms| *ms > 0),
        None => s.expire_after_ms,
    };
    let verify = r.verify.as_ref().map(|v| verify(l, key, v, s));
    RulePlan {
        id: r.id.clone(),
        kind,
        category: r.category.clone().unwrap_or_else(|| r.id.clone()),
        one_per_group,
        cooldown_ms,
        expire_after_ms,
        verify,
        description: r.description,
        filter: r.filter,
        group_by,
        period_ms,
        measures,
        condition,
        owner: a.owner.clone(),
        action_type: a.action_type.clone(),
        value_category: a.value_category.clone(),
        value,
        severity_medium: medium,
        severity_high: high,
    }
}

/// A `demand_peak` rule: each site's demand intervals of `[billing]`.
fn demand_peak(l: &mut Loader<'_>, key: &str, r: &RawRule, s: &Seen<'_>) -> Shape {
    let mut mscope = Scope::default();
    for (field, present) in [
        ("where", r.filter.is_some()),
        ("group_by", r.group_by.is_some()),
        ("period", r.period.is_some()),
        ("measures", r.measures.is_some()),
    ] {
        if present {
            l.at(
                &format!("{key}.{field}"),
                format!("a `demand_peak` rule has no `{field}`: it watches each site's demand intervals"),
                Some(format!("its measures are: {}", DEMAND_MEASURES.join(", "))),
            );
        }
    }
    let period_ms = match s.billing {
        Some(b) => b.interval_ms,
        None => {
            l.at(
                &format!("{key}.kind"),
                "a `demand_peak` rule needs a `[billing]` section (demand interval and charge)"
                    .into(),
                None,
            );
            900_000
        }
    };
    let group_by = vec!["site".to_string()];
    for m in DEMAND_MEASURES {
        mscope.push(m, ColType::Num);
    }
    let condition = r.condition.clone().unwrap_or_else(|| {
        "projected_kw >= 0.9 * billed_kw && projected_kw > 1.1 * previous_kw".into()
    });
    Shape {
        group_by,
        period_ms,
        measures: Vec::new(),
        mscope,
        condition,
    }
}

/// A `windows` rule: windows grouped by columns over a period, with measures.
fn windows(l: &mut Loader<'_>, key: &str, r: &RawRule, s: &Seen<'_>) -> Shape {
    let mut measures = Vec::new();
    let mut mscope = Scope::default();
    if let Some(f) = &r.filter {
        l.expr(&format!("{key}.where"), f, s.scope, Some(ColType::Bool));
    }
    for (field, present) in [
        ("group_by", r.group_by.is_some()),
        ("period", r.period.is_some()),
        ("measures", r.measures.is_some()),
        ("condition", r.condition.is_some()),
    ] {
        if !present {
            l.at(key, format!("missing key `{field}` in `{key}`"), None);
        }
    }
    let group_by = r.group_by.clone().unwrap_or_default();
    for (j, g) in group_by.iter().enumerate() {
        l.one_of(
            &format!("{key}.group_by[{j}]"),
            g,
            GROUP_COLUMNS,
            "group column",
        );
    }
    let period_ms = match &r.period {
        Some(p) => l
            .positive_duration(&format!("{key}.period"), p)
            .unwrap_or(3_600_000),
        None => 3_600_000,
    };
    if s.size_ms > 0 && period_ms % s.size_ms != 0 {
        l.at_value(
            &format!("{key}.period"),
            "period must be a multiple of the window size".into(),
            None,
        );
    }
    mscope.push("windows", ColType::Num);
    for (name, v) in r.measures.clone().unwrap_or_default().iter() {
        let mkey = format!("{key}.measures.{name}");
        let spec = v.as_table().filter(|t| t.len() == 1);
        let Some((agg_name, src)) = spec.and_then(|t| t.iter().next()) else {
            l.at_value(
                &mkey,
                "a measure is one aggregate of an expression".into(),
                Some("write e.g. `{ sum = \"waste_kwh\" }` (sum, mean, min or max)".into()),
            );
            continue;
        };
        let agg = match agg_name.as_str() {
            "sum" => Agg::Sum,
            "mean" => Agg::Mean,
            "min" => Agg::Min,
            "max" => Agg::Max,
            other => {
                l.one_of(
                    &format!("{mkey}.{other}"),
                    other,
                    &["sum", "mean", "min", "max"],
                    "aggregate",
                );
                mscope.push(name, ColType::Num);
                continue;
            }
        };
        let Some(src) = src.as_str() else {
            l.at_value(
                &format!("{mkey}.{agg_name}"),
                "wrong type: expected an expression string".into(),
                None,
            );
            continue;
        };
        l.expr(
            &format!("{mkey}.{agg_name}"),
            src,
            s.scope,
            Some(ColType::Num),
        );
        mscope.push(name, ColType::Num);
        measures.push(MeasurePlan {
            name: name.clone(),
            agg,
            expr: src.to_string(),
        });
    }
    let condition = r.condition.clone().unwrap_or_else(|| "false".into());
    Shape {
        group_by,
        period_ms,
        measures,
        mscope,
        condition,
    }
}

/// The action a rule opens: who, what, the value at stake and how often.
struct Action {
    value: String,
    medium: f64,
    high: f64,
    one_per_group: bool,
    cooldown_ms: i64,
}

fn action(l: &mut Loader<'_>, key: &str, a: &RawAction, kind: RuleKind, mscope: &Scope) -> Action {
    l.one_of(&format!("{key}.action.owner"), &a.owner, OWNERS, "owner");
    l.one_of(
        &format!("{key}.action.action_type"),
        &a.action_type,
        ACTION_TYPES,
        "action type",
    );
    l.one_of(
        &format!("{key}.action.value_category"),
        &a.value_category,
        VALUE_CATEGORIES,
        "value category",
    );
    let value = match (&a.value, kind) {
        (Some(v), _) => v.clone(),
        (None, RuleKind::DemandPeak) => "increase_cost".to_string(),
        (None, RuleKind::Windows) => {
            l.at(
                &format!("{key}.action"),
                format!("missing key `value` in `{key}.action`"),
                Some("the value at stake in currency, e.g. `value = \"waste_cost\"`".into()),
            );
            "0.0".to_string()
        }
    };
    l.expr(
        &format!("{key}.action.value"),
        &value,
        mscope,
        Some(ColType::Num),
    );
    let (medium, high) = a
        .severity
        .as_ref()
        .map(|s| (s.medium, s.high))
        .unwrap_or((10.0, 100.0));
    let one_per_group = match a.one_per.as_deref().unwrap_or("group") {
        "group" => true,
        "period" => false,
        other => {
            l.one_of(
                &format!("{key}.action.one_per"),
                other,
                &["group", "period"],
                "dedup scope",
            );
            true
        }
    };
    let cooldown_ms = match &a.cooldown {
        Some(c) => l
            .duration(&format!("{key}.action.cooldown"), c)
            .unwrap_or(0),
        None => 0,
    };
    Action {
        value,
        medium,
        high,
        one_per_group,
        cooldown_ms,
    }
}

/// `[rules.verify]`: the M&V baseline and reporting periods of the action's outcome.
fn verify(l: &mut Loader<'_>, key: &str, v: &RawVerify, s: &Seen<'_>) -> VerifyPlan {
    let vk = format!("{key}.verify");
    let granularity = match v.granularity.as_deref().unwrap_or("day") {
        "hour" => Granularity::Hour,
        "day" => Granularity::Day,
        "week" => Granularity::Week,
        other => {
            l.one_of(
                &format!("{vk}.granularity"),
                other,
                &["hour", "day", "week"],
                "granularity",
            );
            Granularity::Day
        }
    };
    let baseline_ms = l
        .duration(&format!("{vk}.baseline"), &v.baseline)
        .unwrap_or(0);
    let reporting_ms = l
        .duration(&format!("{vk}.reporting"), &v.reporting)
        .unwrap_or(0);
    let gran_ms = match granularity {
        Granularity::Hour => 3_600_000,
        Granularity::Day => 86_400_000,
        Granularity::Week => 7 * 86_400_000,
    };
    for (k, d) in [("baseline", baseline_ms), ("reporting", reporting_ms)] {
        if d < gran_ms {
            l.at_value(
                &format!("{vk}.{k}"),
                format!(
                    "the {k} period must cover at least one {} bucket",
                    match granularity {
                        Granularity::Hour => "hour",
                        Granularity::Day => "day",
                        Granularity::Week => "week",
                    }
                ),
                None,
            );
        }
    }
    let energy_metric = metric_index(l, s.metrics, &format!("{vk}.energy"), &v.energy);
    let mut units_driver = false;
    for (j, d) in v.drivers.iter().enumerate() {
        if d == "units" {
            units_driver = true;
        } else {
            l.one_of(&format!("{vk}.drivers[{j}]"), d, &["units"], "driver");
        }
    }
    if units_driver && !s.has_production {
        l.at_value(
            &format!("{vk}.drivers"),
            "the `units` driver needs `[context.production]` with a `units` column".into(),
            None,
        );
    }
    let d = Limits::default();
    VerifyPlan {
        baseline_ms,
        reporting_ms,
        granularity,
        energy_metric,
        units_driver,
        limits: Limits {
            max_cv_rmse: v.max_cv_rmse.unwrap_or(d.max_cv_rmse),
            max_abs_nmbe: v.max_nmbe.unwrap_or(d.max_abs_nmbe),
            max_fsu68: v.max_fsu.unwrap_or(d.max_fsu68),
        },
    }
}
