//! The validated plan: what the engine and the value layer run, and the
//! names a dataflow may use (owners, action types, tables, columns).

use std::path::PathBuf;

use crate::expr::{ColType, Scope};
pub use crate::model::tariff::Calendar;

pub const OWNERS: &[&str] = &[
    "maintenance",
    "operations",
    "engineering",
    "energy",
    "production",
    "management",
];
/// Kinds of action.
pub const ACTION_TYPES: &[&str] = &[
    "operational_change",
    "maintenance_work",
    "setpoint_review",
    "procurement",
    "capex",
    "further_study",
];
/// What kind of value is at stake.
pub const VALUE_CATEGORIES: &[&str] = &[
    "energy_cost",
    "downtime_risk",
    "quality_impact",
    "compliance_risk",
    "production_loss",
];
/// Columns a rule may group by.
pub const GROUP_COLUMNS: &[&str] = &["site", "line", "asset", "tag", "kind"];
/// The core of a validated dataflow: what the engine and the value layer
/// run (context, windows, metrics, rules, billing, routing). The sources'
/// and sinks' own plans sit beside it in [`crate::dataflow::Dataflow`].
#[derive(Clone, Debug)]
pub struct Plan {
    pub file: PathBuf,
    pub name: String,
    pub description: Option<String>,
    pub currency: String,
    pub context: ContextPlan,
    pub window: WindowPlan,
    pub metrics: Vec<MetricPlan>,
    pub rules: Vec<RulePlan>,
    /// Timezone and holidays: tariff lookup, billing periods, day/week buckets.
    pub calendar: Calendar,
    pub billing: Option<BillingPlan>,
    pub lifecycle: Option<LifecyclePlan>,
    /// Ownership matrix: the first matching route overrides a rule's action defaults.
    pub routing: Vec<RoutePlan>,
    /// How much of bad input `dead_letter` keeps (`[dead_letter]`).
    pub dead_letter: crate::model::DeadLetterLimits,
    /// How much memory the node may use (`[memory]`).
    pub memory: super::MemoryPlan,
    /// The operator surface (`[http]`): off unless configured.
    pub http: Option<super::HttpPlan>,
    /// When tags count as stale, flat-lining or out of range (`[tag_quality]`).
    pub tag_quality: super::TagQualityPlan,
}

/// Acceptance limits (fractions, not percent).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    pub max_cv_rmse: f64,
    pub max_abs_nmbe: f64,
    pub max_fsu68: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_cv_rmse: 0.20,
            max_abs_nmbe: 0.005,
            max_fsu68: 0.50,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BillPeriod {
    Day,
    Month,
}

#[derive(Clone, Debug)]
pub struct BillingPlan {
    /// Index of the metric holding each window's kWh.
    pub energy_metric: usize,
    pub demand_charge_per_kw: f64,
    pub interval_ms: i64,
    pub period: BillPeriod,
}

#[derive(Clone, Debug)]
pub struct LifecyclePlan {
    pub path: PathBuf,
}

#[derive(Clone, Debug, Default)]
pub struct RoutePlan {
    pub category: Option<String>,
    pub kind: Option<String>,
    pub site: Option<String>,
    pub owner: Option<String>,
    pub action_type: Option<String>,
    pub value_category: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Granularity {
    Hour,
    Day,
    Week,
}

#[derive(Clone, Debug)]
pub struct VerifyPlan {
    pub baseline_ms: i64,
    pub reporting_ms: i64,
    pub granularity: Granularity,
    /// Index of the metric summed as energy.
    pub energy_metric: usize,
    /// Regress on production `units` (else the mean model).
    pub units_driver: bool,
    pub limits: Limits,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleKind {
    /// Windows grouped by columns and a period (the default).
    Windows,
    /// Demand intervals of the `[billing]` section, with an in-interval projection.
    DemandPeak,
}

/// Measures a `demand_peak` rule's condition and value can use.
pub const DEMAND_MEASURES: &[&str] = &[
    "windows",
    "interval_kwh",
    "previous_kw",
    "projected_kw",
    "billed_kw",
    "increase_kw",
    "increase_cost",
    "demand_charge_per_kw",
];

#[derive(Clone, Debug)]
pub struct ContextPlan {
    pub assets: PathBuf,
    pub tariff: PathBuf,
    pub holidays: Vec<chrono::NaiveDate>,
    pub production: Option<PathBuf>,
    pub maintenance: Option<PathBuf>,
    /// Extra `assets.csv` columns beyond the required ones, with inferred types.
    pub asset_extra: Vec<(String, ColType)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QualityPolicy {
    /// Keep good, uncertain and bad samples.
    KeepAll,
    /// Drop bad samples; uncertain ones count (workload v1).
    DropBad,
    /// Keep only good samples.
    GoodOnly,
}

#[derive(Clone, Debug)]
pub struct WindowPlan {
    pub size_ms: i64,
    pub lateness_ms: i64,
    pub retention_ms: i64,
    pub max_future_ms: i64,
    pub quality: QualityPolicy,
    /// Closed windows older than this move to disk (`spill_after`).
    pub spill_after_ms: Option<i64>,
    /// Where spilled windows and the action ledger go (`state_dir`; default:
    /// `.plantflow/` in the Parquet sink's directory).
    pub state_dir: Option<PathBuf>,
    /// How often a node with an input log checkpoints its state
    /// (`checkpoint_interval`; none: never).
    pub checkpoint_ms: Option<i64>,
}

#[derive(Clone, Debug)]
pub struct MetricPlan {
    pub name: String,
    pub expr: String,
    pub result: ColType,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Agg {
    Sum,
    Mean,
    Min,
    Max,
}

#[derive(Clone, Debug)]
pub struct MeasurePlan {
    pub name: String,
    pub agg: Agg,
    pub expr: String,
}

#[derive(Clone, Debug)]
pub struct RulePlan {
    pub id: String,
    pub kind: RuleKind,
    pub category: String,
    /// One open action per (rule, group); else one action per finding period.
    pub one_per_group: bool,
    pub cooldown_ms: i64,
    /// An open action nobody acknowledged expires this long after it
    /// opened (`expire_after`; none: never).
    pub expire_after_ms: Option<i64>,
    pub verify: Option<VerifyPlan>,
    pub description: Option<String>,
    pub filter: Option<String>,
    pub group_by: Vec<String>,
    pub period_ms: i64,
    pub measures: Vec<MeasurePlan>,
    pub condition: String,
    pub owner: String,
    pub action_type: String,
    pub value_category: String,
    pub value: String,
    pub severity_medium: f64,
    pub severity_high: f64,
}

impl Plan {
    /// The scope of per-window row expressions, before any metric.
    pub fn row_scope(&self) -> Scope {
        row_scope(&self.context.asset_extra)
    }

    /// The row scope with every metric appended.
    pub fn metric_scope(&self) -> Scope {
        let mut s = self.row_scope();
        for m in &self.metrics {
            s.push(&m.name, m.result);
        }
        s
    }

    /// The longest rule period (windows are retracted a period at a time).
    pub fn max_period_ms(&self) -> i64 {
        self.rules
            .iter()
            .map(|r| r.period_ms)
            .max()
            .unwrap_or(self.window.size_ms)
            .max(self.window.size_ms)
    }
}

/// Fixed per-window columns, in slot order (see [`crate::engine`] for how rows are laid out).
pub const WINDOW_COLUMNS: &[(&str, ColType)] = &[
    ("tag", ColType::Str),
    ("asset", ColType::Str),
    ("site", ColType::Str),
    ("line", ColType::Str),
    ("kind", ColType::Str),
    ("standby_kw", ColType::Num),
    ("window_start", ColType::Num),
    ("window_end", ColType::Num),
    ("hour", ColType::Num),
    ("count", ColType::Num),
    ("mean", ColType::Num),
    ("min", ColType::Num),
    ("max", ColType::Num),
    ("first", ColType::Num),
    ("last", ColType::Num),
    ("price_per_kwh", ColType::Num),
    ("producing", ColType::Bool),
    ("in_maintenance", ColType::Bool),
];

pub fn row_scope(extra: &[(String, ColType)]) -> Scope {
    let mut s = Scope::default();
    for (n, t) in WINDOW_COLUMNS {
        s.push(n, *t);
    }
    for (n, t) in extra {
        s.push(n, *t);
    }
    s
}

/// Required `assets.csv` columns.
pub const ASSET_COLUMNS: &[&str] = &["tag", "asset", "site", "line", "kind", "standby_kw"];
