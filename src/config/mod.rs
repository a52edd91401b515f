//! Dataflow config: TOML → raw structs → validated [`Plan`].
//!
//! Loading collects *every* problem (unknown keys, wrong types, bad units,
//! unknown columns in expressions, expressions that do not type-check,
//! missing files) as [`Diagnostic`]s with file, line, column and key path,
//! then fails once. The CLI prints them and exits with code 78.

pub mod diagnostic;
pub mod interp;
pub mod mqtt;
pub mod opcua;
pub mod raw;
pub mod spans;
pub mod units;

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use diagnostic::{did_you_mean, file_diag, line_col};
pub use diagnostic::{ConfigErrors, Diagnostic};
use raw::*;
use spans::SpanIndex;

use crate::value::expr::{ColType, Expr, Scope};

/// Owner teams an action can be routed to.
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
/// Output tables of the Parquet sink.
pub const TABLES: &[&str] = &[
    "aggregates",
    "actions",
    "outcomes",
    "billing",
    "dead_letter",
    "gaps",
    "outcome_buckets",
];

/// A validated dataflow, ready to run.
#[derive(Clone, Debug)]
pub struct Plan {
    pub file: PathBuf,
    pub name: String,
    pub description: Option<String>,
    pub currency: String,
    pub sources: Vec<SourcePlan>,
    /// `mqtt_publish` sinks.
    pub publish: Vec<crate::sinks::mqtt_publish::PublishPlan>,
    pub context: ContextPlan,
    pub window: WindowPlan,
    pub metrics: Vec<MetricPlan>,
    pub rules: Vec<RulePlan>,
    pub sink: ParquetPlan,
    /// Timezone and holidays: tariff lookup, billing periods, day/week buckets.
    pub calendar: Calendar,
    pub billing: Option<BillingPlan>,
    pub lifecycle: Option<LifecyclePlan>,
    /// Ownership matrix: the first matching route overrides a rule's action defaults.
    pub routing: Vec<RoutePlan>,
}

pub use crate::value::mv::Limits;
pub use crate::value::tariff::Calendar;

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
pub enum SourcePlan {
    Replay(ReplayPlan),
    Mqtt(Box<crate::sources::mqtt::MqttSourcePlan>),
    OpcUa(Box<crate::sources::opcua::OpcUaSourcePlan>),
}

impl SourcePlan {
    pub fn id(&self) -> &str {
        match self {
            SourcePlan::Replay(r) => &r.id,
            SourcePlan::Mqtt(m) => &m.id,
            SourcePlan::OpcUa(o) => &o.id,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplayFormat {
    Csv,
    Parquet,
}

#[derive(Clone, Debug)]
pub struct ReplayPlan {
    pub id: String,
    pub path: PathBuf,
    pub format: ReplayFormat,
    pub batch_rows: usize,
    pub poll_interval_ms: u64,
}

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
    /// Where spilled windows go (`state_dir`; default: the system's temp dir).
    pub state_dir: Option<PathBuf>,
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

#[derive(Clone, Debug)]
pub struct ParquetPlan {
    pub id: String,
    pub path: PathBuf,
    pub tables: Vec<String>,
    pub roll_rows: u64,
    pub roll_bytes: u64,
    pub roll_interval_ms: u64,
    /// Commit when the output's event time passes a multiple of
    /// `roll_interval` (`roll_by = "event_time"`), not when a file is that old.
    pub roll_event_time: bool,
    pub row_group_rows: usize,
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

struct Loader<'a> {
    file: &'a Path,
    text: &'a str,
    spans: SpanIndex,
    diags: Vec<Diagnostic>,
    base_dir: PathBuf,
}

impl Loader<'_> {
    fn at(&mut self, path: &str, message: String, hint: Option<String>) {
        let span = self.spans.lookup(path);
        self.push(path, span, message, hint);
    }

    fn at_value(&mut self, path: &str, message: String, hint: Option<String>) {
        let span = self.spans.value(path);
        self.push(path, span, message, hint);
    }

    fn push(
        &mut self,
        path: &str,
        span: std::ops::Range<usize>,
        message: String,
        hint: Option<String>,
    ) {
        let (line, column) = line_col(self.text, span.start);
        self.diags.push(Diagnostic {
            file: self.file.to_path_buf(),
            line,
            column,
            key_path: path.to_string(),
            message,
            hint,
            span,
        });
    }

    /// Deserializes `value` (found at `path`) into `T`, reporting every unknown key
    /// and the first type error.
    fn de<T: DeserializeOwned>(
        &mut self,
        path: &str,
        value: toml::Value,
        known: &[&str],
    ) -> Option<T> {
        let mut unknown = Vec::new();
        let mut track = serde_path_to_error::Track::new();
        let result = {
            let de = serde_path_to_error::Deserializer::new(value, &mut track);
            serde_ignored::deserialize(de, |p| unknown.push(p.to_string()))
        };
        for u in unknown {
            let full = spans::join(path, &normalise_path(&u));
            let leaf = full.rsplit(['.', '[']).next().unwrap_or("").to_string();
            let parent = parent_of(&full);
            let hint = did_you_mean(&leaf, known_for(&parent, path, known));
            let where_ = if parent.is_empty() {
                "the top level".to_string()
            } else {
                format!("`{parent}`")
            };
            self.at(&full, format!("unknown key `{leaf}` in {where_}"), hint);
        }
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                let inner = spans::join(path, &normalise_path(&track.path().to_string()));
                let msg = e.to_string();
                if let Some(field) = msg
                    .strip_prefix("missing field `")
                    .and_then(|s| s.split('`').next())
                {
                    let full = spans::join(&inner, field);
                    let span = self.spans.lookup(&inner);
                    let target = if inner.is_empty() {
                        "the top level".to_string()
                    } else {
                        format!("`{inner}`")
                    };
                    self.push(
                        &full,
                        span,
                        format!("missing key `{field}` in {target}"),
                        None,
                    );
                } else {
                    let first = msg.lines().next().unwrap_or("").trim().to_string();
                    let msg = first.replace("invalid type: ", "wrong type: ");
                    let leaf = inner.rsplit('.').next().unwrap_or("");
                    let hint = DURATION_KEYS
                        .contains(&leaf)
                        .then(|| units::DURATION_HINT.to_string());
                    self.at_value(&inner, msg, hint);
                }
                None
            }
        }
    }

    fn resolve_path(&self, p: &str) -> PathBuf {
        let pb = PathBuf::from(p);
        if pb.is_absolute() {
            pb
        } else {
            self.base_dir.join(pb)
        }
    }

    fn file_exists(&mut self, key: &str, p: &str) -> PathBuf {
        let pb = self.resolve_path(p);
        if !pb.is_file() {
            self.at_value(
                key,
                format!("file `{p}` does not exist"),
                Some(
                    "paths are relative to the working directory; `${VAR}` reads the environment"
                        .into(),
                ),
            );
        }
        pb
    }

    fn duration(&mut self, key: &str, s: &str) -> Option<i64> {
        match units::parse_duration_ms(s) {
            Ok(v) => Some(v as i64),
            Err(e) => {
                self.at_value(key, e, Some(units::DURATION_HINT.into()));
                None
            }
        }
    }

    fn one_of(&mut self, key: &str, got: &str, allowed: &[&str], what: &str) {
        if !allowed.contains(&got) {
            let hint = did_you_mean(got, allowed.iter().copied())
                .unwrap_or_else(|| format!("one of: {}", allowed.join(", ")));
            self.at_value(key, format!("unknown {what} `{got}`"), Some(hint));
        }
    }

    fn expr(
        &mut self,
        key: &str,
        src: &str,
        scope: &Scope,
        want: Option<ColType>,
    ) -> Option<ColType> {
        match Expr::compile(src, scope, want) {
            Ok(e) => Some(e.result),
            Err(e) => {
                self.at_value(key, e.message, e.hint);
                None
            }
        }
    }
}

/// `a.b.0.c` (serde paths) → `a.b[0].c`.
fn normalise_path(p: &str) -> String {
    if p == "." || p == "?" {
        return String::new();
    }
    let mut out = String::new();
    for seg in p.split('.') {
        if seg.is_empty() || seg == "?" {
            continue;
        }
        if seg.chars().all(|c| c.is_ascii_digit()) {
            out.push_str(&format!("[{seg}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(seg);
        }
    }
    out
}

fn parent_of(path: &str) -> String {
    match path.rfind('.') {
        Some(i) => path[..i].to_string(),
        None => match path.rfind('[') {
            Some(i) => path[..i].to_string(),
            None => String::new(),
        },
    }
}

/// Known keys of the struct at `parent`, for did-you-mean hints.
fn known_for<'k>(parent: &str, base: &str, known: &'k [&'k str]) -> Vec<&'k str> {
    const TABLE: &[&str] = &["path"];
    const ACTION: &[&str] = &[
        "owner",
        "action_type",
        "value_category",
        "value",
        "severity",
        "one_per",
        "cooldown",
    ];
    const SEVERITY: &[&str] = &["medium", "high"];
    let last = parent.rsplit('.').next().unwrap_or("");
    let v: &[&str] = if parent == base {
        known
    } else if base == "context" && last == "tariff" {
        &["path", "holidays"]
    } else if base == "context" {
        TABLE
    } else if last == "action" {
        ACTION
    } else if last == "severity" {
        SEVERITY
    } else if last == "verify" {
        VERIFY_KEYS
    } else {
        known
    };
    v.to_vec()
}

const CONTEXT_KEYS: &[&str] = &["assets", "tariff", "production", "maintenance"];
const WINDOW_KEYS: &[&str] = &[
    "size",
    "allowed_lateness",
    "quality",
    "retention",
    "max_future",
    "spill_after",
    "state_dir",
];
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
/// Keys whose values are durations, for hints on type errors.
const DURATION_KEYS: &[&str] = &[
    "size",
    "allowed_lateness",
    "retention",
    "max_future",
    "spill_after",
    "period",
    "poll_interval",
    "roll_interval",
    "cooldown",
    "baseline",
    "reporting",
    "demand_interval",
];
const TOP_KEYS: &[&str] = &[
    "name",
    "description",
    "currency",
    "sources",
    "context",
    "window",
    "metrics",
    "rules",
    "sinks",
    "timezone",
    "billing",
    "lifecycle",
    "routing",
];
const BILLING_KEYS: &[&str] = &[
    "energy",
    "demand_charge_per_kw",
    "demand_interval",
    "period",
];
const ROUTE_KEYS: &[&str] = &[
    "category",
    "kind",
    "site",
    "owner",
    "action_type",
    "value_category",
];
const VERIFY_KEYS: &[&str] = &[
    "baseline",
    "reporting",
    "granularity",
    "energy",
    "drivers",
    "max_cv_rmse",
    "max_nmbe",
    "max_fsu",
];
const REPLAY_KEYS: &[&str] = &[
    "type",
    "id",
    "path",
    "format",
    "batch_rows",
    "poll_interval",
];
const PARQUET_KEYS: &[&str] = &[
    "type",
    "id",
    "path",
    "tables",
    "roll_rows",
    "roll_size",
    "roll_interval",
    "roll_by",
    "row_group_rows",
];

/// Loads and validates a dataflow file with the process environment.
pub fn load(file: &Path) -> Result<Plan, ConfigErrors> {
    load_with_env(file, &|k| std::env::var(k).ok())
}

/// Loads and validates a dataflow file; `env` resolves `${VAR}` references.
pub fn load_with_env(
    file: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Plan, ConfigErrors> {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            return Err(ConfigErrors {
                diagnostics: vec![file_diag(
                    file,
                    format!("cannot read dataflow file: {e}"),
                    None,
                )],
                sources: vec![],
            })
        }
    };
    let result = validate_text(file, &text, env);
    result.map_err(|diagnostics| ConfigErrors {
        diagnostics,
        sources: vec![(file.to_path_buf(), text.clone())],
    })
}

fn validate_text(
    file: &Path,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Plan, Vec<Diagnostic>> {
    let mut l = Loader {
        file,
        text,
        spans: SpanIndex::default(),
        diags: Vec::new(),
        base_dir: std::env::current_dir().unwrap_or_default(),
    };
    let doc = match toml::de::DeTable::parse(text) {
        Ok(d) => d,
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            l.push(
                "",
                span,
                format!("invalid TOML: {}", e.message().trim()),
                None,
            );
            return Err(l.diags);
        }
    };
    let mut interp_errors = Vec::new();
    let mut spans = SpanIndex::default();
    let table = spans::convert(&doc, &mut spans, env, &mut interp_errors);
    l.spans = spans;
    for (p, e) in interp_errors {
        l.at_value(
            &p,
            e,
            Some("set it, or give a default: `${VAR:-default}`".into()),
        );
    }

    let raw: Option<RawDataflow> = l.de("", toml::Value::Table(table), TOP_KEYS);
    let Some(raw) = raw else { return Err(l.diags) };

    // Sources.
    let mut sources = Vec::new();
    let mut ids = Vec::<String>::new();
    if raw.sources.is_empty() {
        l.at(
            "sources",
            "a dataflow needs at least one source".into(),
            None,
        );
    }
    for (i, v) in raw.sources.into_iter().enumerate() {
        let key = format!("sources[{i}]");
        let Some(ty) = take_type(
            &mut l,
            &key,
            &v,
            &["replay", "mqtt", "opcua"],
            "source type",
        ) else {
            continue;
        };
        if ty == "opcua" {
            if let Some(o) = opcua::source(&mut l, &key, strip_type(v), &raw.name, env) {
                if ids.contains(&o.id) {
                    l.at_value(
                        &format!("{key}.id"),
                        format!("duplicate source id `{}`", o.id),
                        None,
                    );
                }
                ids.push(o.id.clone());
                sources.push(SourcePlan::OpcUa(Box::new(o)));
            }
        } else if ty == "mqtt" {
            if let Some(m) = mqtt::source(&mut l, &key, v, &raw.name, env) {
                if ids.contains(&m.id) {
                    l.at_value(
                        &format!("{key}.id"),
                        format!("duplicate source id `{}`", m.id),
                        None,
                    );
                }
                ids.push(m.id.clone());
                sources.push(SourcePlan::Mqtt(Box::new(m)));
            }
        } else if ty == "replay" {
            if let Some(r) = l.de::<RawReplay>(&key, strip_type(v), REPLAY_KEYS) {
                if ids.contains(&r.id) {
                    l.at_value(
                        &format!("{key}.id"),
                        format!("duplicate source id `{}`", r.id),
                        None,
                    );
                }
                ids.push(r.id.clone());
                let format = match r.format.as_deref() {
                    Some("csv") => ReplayFormat::Csv,
                    Some("parquet") => ReplayFormat::Parquet,
                    Some(other) => {
                        l.one_of(
                            &format!("{key}.format"),
                            other,
                            &["csv", "parquet"],
                            "replay format",
                        );
                        ReplayFormat::Csv
                    }
                    None if r.path.ends_with(".parquet") => ReplayFormat::Parquet,
                    None => ReplayFormat::Csv,
                };
                let path = l.file_exists(&format!("{key}.path"), &r.path);
                let poll = match &r.poll_interval {
                    Some(s) => l
                        .duration(&format!("{key}.poll_interval"), s)
                        .unwrap_or(200),
                    None => 200,
                };
                sources.push(SourcePlan::Replay(ReplayPlan {
                    id: r.id,
                    path,
                    format,
                    batch_rows: r.batch_rows.unwrap_or(8192).max(1),
                    poll_interval_ms: poll as u64,
                }));
            }
        }
    }

    // Context tables.
    let ctx: Option<RawContext> = l.de("context", raw.context, CONTEXT_KEYS);
    let (assets, tariff, production, maintenance) = match &ctx {
        Some(c) => (
            l.file_exists("context.assets.path", &c.assets.path),
            l.file_exists("context.tariff.path", &c.tariff.path),
            c.production
                .as_ref()
                .map(|t| l.file_exists("context.production.path", &t.path)),
            c.maintenance
                .as_ref()
                .map(|t| l.file_exists("context.maintenance.path", &t.path)),
        ),
        None => (PathBuf::new(), PathBuf::new(), None, None),
    };
    let mut asset_extra = Vec::new();
    if assets.is_file() {
        match crate::sources::context::asset_header(&assets) {
            Ok(extra) => asset_extra = extra,
            Err(e) => l.at_value("context.assets.path", e, None),
        }
    }
    if tariff.is_file() {
        if let Err(e) = crate::value::tariff::load(&tariff) {
            l.at_value("context.tariff.path", e, None);
        }
    }
    let mut holidays = Vec::new();
    if let Some(c) = &ctx {
        for (i, h) in c.tariff.holidays.iter().enumerate() {
            match chrono::NaiveDate::parse_from_str(h, "%Y-%m-%d") {
                Ok(d) => holidays.push(d),
                Err(_) => l.at_value(
                    &format!("context.tariff.holidays[{i}]"),
                    format!("`{h}` is not a date"),
                    Some("write local dates as YYYY-MM-DD".into()),
                ),
            }
        }
    }
    let tz: chrono_tz::Tz = match raw.timezone.as_deref() {
        None => chrono_tz::UTC,
        Some(name) => match name.parse() {
            Ok(tz) => tz,
            Err(_) => {
                l.at_value(
                    "timezone",
                    format!("unknown timezone `{name}`"),
                    Some("use an IANA name such as `Europe/Berlin` or `America/Chicago`".into()),
                );
                chrono_tz::UTC
            }
        },
    };
    let calendar = Calendar {
        tz,
        holidays: holidays.iter().copied().collect(),
    };

    // Window.
    let w: RawWindow = l
        .de("window", raw.window, WINDOW_KEYS)
        .unwrap_or(RawWindow {
            size: "1m".into(),
            allowed_lateness: "0s".into(),
            quality: None,
            retention: None,
            max_future: None,
            spill_after: None,
            state_dir: None,
        });
    let size_ms = l.duration("window.size", &w.size).unwrap_or(60_000);
    const MAX_WINDOW_MS: i64 = 49 * 86_400_000;
    if size_ms <= 0 {
        l.at_value("window.size", "window size must be positive".into(), None);
    }
    // A window keeps its rows' times as 32-bit offsets into it.
    if size_ms > MAX_WINDOW_MS {
        l.at_value(
            "window.size",
            "window size must be at most 49 days".into(),
            Some("aggregate longer spans with a rule `period` over shorter windows".into()),
        );
    }
    let lateness_ms = l
        .duration("window.allowed_lateness", &w.allowed_lateness)
        .unwrap_or(0);
    let retention_ms = match &w.retention {
        Some(s) => l.duration("window.retention", s).unwrap_or(3_600_000),
        None => 3_600_000,
    };
    if size_ms > 0 && retention_ms % size_ms != 0 {
        l.at_value(
            "window.retention",
            format!("retention must be a multiple of the window size ({size_ms} ms)"),
            None,
        );
    }
    let max_future_ms = match &w.max_future {
        Some(s) => l.duration("window.max_future", s).unwrap_or(86_400_000),
        None => 86_400_000,
    };
    let spill_after_ms = w
        .spill_after
        .as_ref()
        .and_then(|s| l.duration("window.spill_after", s));
    if spill_after_ms.is_some_and(|ms| ms <= 0) {
        l.at_value(
            "window.spill_after",
            "spill_after must be positive".into(),
            Some("closed windows older than this go to disk, e.g. `spill_after = \"10m\"`".into()),
        );
    }
    let state_dir = w.state_dir.as_ref().map(PathBuf::from);
    if state_dir.is_some() && w.spill_after.is_none() {
        l.at_value(
            "window.state_dir",
            "applies only with `spill_after`".into(),
            Some("set `spill_after = \"10m\"` to keep older closed windows on disk".into()),
        );
    }
    let quality = match w.quality.as_deref().unwrap_or("drop_bad") {
        "keep_all" => QualityPolicy::KeepAll,
        "drop_bad" => QualityPolicy::DropBad,
        "good_only" => QualityPolicy::GoodOnly,
        other => {
            l.one_of(
                "window.quality",
                other,
                &["keep_all", "drop_bad", "good_only"],
                "quality policy",
            );
            QualityPolicy::DropBad
        }
    };

    // Metrics, each seeing the ones before it.
    let mut scope = row_scope(&asset_extra);
    let mut metrics = Vec::new();
    for (name, v) in raw.metrics.iter() {
        let key = format!("metrics.{name}");
        let Some(src) = v.as_str() else {
            l.at_value(
                &key,
                format!(
                    "wrong type: {}, expected an expression string",
                    v.type_str()
                ),
                None,
            );
            continue;
        };
        if scope.slot(name).is_some() {
            l.at(
                &key,
                format!("metric `{name}` shadows a column of the same name"),
                Some("pick another name".into()),
            );
            continue;
        }
        let result = l.expr(&key, src, &scope, None).unwrap_or(ColType::Num);
        scope.push(name, result);
        metrics.push(MetricPlan {
            name: name.clone(),
            expr: src.to_string(),
            result,
        });
    }

    let metric_index = |l: &mut Loader<'_>, key: &str, name: &str| -> usize {
        match metrics.iter().position(|m| m.name == name) {
            Some(i) if metrics[i].result == ColType::Num => i,
            Some(_) => {
                l.at_value(key, format!("metric `{name}` is not a number"), None);
                0
            }
            None => {
                let hint = did_you_mean(name, metrics.iter().map(|m| m.name.as_str()))
                    .or_else(|| Some("name a metric from `[metrics]`".into()));
                l.at_value(key, format!("unknown metric `{name}`"), hint);
                0
            }
        }
    };

    // Billing: energy and demand cost per site and billing period.
    let billing = match raw.billing {
        None => None,
        Some(v) => l.de::<RawBilling>("billing", v, BILLING_KEYS).map(|b| {
            let energy_metric = metric_index(&mut l, "billing.energy", &b.energy);
            let interval_ms = match &b.demand_interval {
                Some(d) => l.duration("billing.demand_interval", d).unwrap_or(900_000),
                None => 900_000,
            };
            if interval_ms <= 0 || (size_ms > 0 && interval_ms % size_ms != 0) {
                l.at_value(
                    "billing.demand_interval",
                    "the demand interval must be a positive multiple of the window size".into(),
                    None,
                );
            }
            let period = match b.period.as_deref().unwrap_or("month") {
                "day" => BillPeriod::Day,
                "month" => BillPeriod::Month,
                other => {
                    l.one_of("billing.period", other, &["day", "month"], "billing period");
                    BillPeriod::Month
                }
            };
            let rate = b.demand_charge_per_kw.unwrap_or(0.0);
            if !(rate.is_finite() && rate >= 0.0) {
                l.at_value(
                    "billing.demand_charge_per_kw",
                    "the demand charge must be a non-negative number".into(),
                    None,
                );
            }
            BillingPlan {
                energy_metric,
                demand_charge_per_kw: rate,
                interval_ms,
                period,
            }
        }),
    };

    let lifecycle = match raw.lifecycle {
        None => None,
        Some(v) => l
            .de::<RawLifecycle>("lifecycle", v, &["path"])
            .map(|lc| LifecyclePlan {
                path: l.resolve_path(&lc.path),
            }),
    };

    let mut routing = Vec::new();
    for (i, v) in raw.routing.into_iter().enumerate() {
        let key = format!("routing[{i}]");
        if let Some(r) = l.de::<RawRoute>(&key, v, ROUTE_KEYS) {
            if let Some(o) = &r.owner {
                l.one_of(&format!("{key}.owner"), o, OWNERS, "owner");
            }
            if let Some(o) = &r.action_type {
                l.one_of(
                    &format!("{key}.action_type"),
                    o,
                    ACTION_TYPES,
                    "action type",
                );
            }
            if let Some(o) = &r.value_category {
                l.one_of(
                    &format!("{key}.value_category"),
                    o,
                    VALUE_CATEGORIES,
                    "value category",
                );
            }
            routing.push(RoutePlan {
                category: r.category,
                kind: r.kind,
                site: r.site,
                owner: r.owner,
                action_type: r.action_type,
                value_category: r.value_category,
            });
        }
    }

    // Rules.
    let mut rules = Vec::new();
    let mut rule_ids = Vec::<String>::new();
    for (i, r) in raw.rules.into_iter().enumerate() {
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
        let mut measures = Vec::new();
        let mut mscope = Scope::default();
        let group_by;
        let period_ms;
        let condition;
        if kind == RuleKind::DemandPeak {
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
            match &billing {
                Some(b) => period_ms = b.interval_ms,
                None => {
                    l.at(
                        &format!("{key}.kind"),
                        "a `demand_peak` rule needs a `[billing]` section (demand interval and charge)".into(),
                        None,
                    );
                    period_ms = 900_000;
                }
            }
            group_by = vec!["site".to_string()];
            for m in DEMAND_MEASURES {
                mscope.push(m, ColType::Num);
            }
            condition = r.condition.clone().unwrap_or_else(|| {
                "projected_kw >= 0.9 * billed_kw && projected_kw > 1.1 * previous_kw".into()
            });
        } else {
            if let Some(f) = &r.filter {
                l.expr(&format!("{key}.where"), f, &scope, Some(ColType::Bool));
            }
            for (field, present) in [
                ("group_by", r.group_by.is_some()),
                ("period", r.period.is_some()),
                ("measures", r.measures.is_some()),
                ("condition", r.condition.is_some()),
            ] {
                if !present {
                    l.at(&key, format!("missing key `{field}` in `{key}`"), None);
                }
            }
            group_by = r.group_by.clone().unwrap_or_default();
            for (j, g) in group_by.iter().enumerate() {
                l.one_of(
                    &format!("{key}.group_by[{j}]"),
                    g,
                    GROUP_COLUMNS,
                    "group column",
                );
            }
            period_ms = match &r.period {
                Some(p) => l.duration(&format!("{key}.period"), p).unwrap_or(3_600_000),
                None => 3_600_000,
            };
            if size_ms > 0 && period_ms % size_ms != 0 {
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
                    &scope,
                    Some(ColType::Num),
                );
                mscope.push(name, ColType::Num);
                measures.push(MeasurePlan {
                    name: name.clone(),
                    agg,
                    expr: src.to_string(),
                });
            }
            condition = r.condition.clone().unwrap_or_else(|| "false".into());
        }
        l.expr(
            &format!("{key}.condition"),
            &condition,
            &mscope,
            Some(ColType::Bool),
        );
        let a = &r.action;
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
            &mscope,
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
        let verify = r.verify.as_ref().map(|v| {
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
            let energy_metric = metric_index(&mut l, &format!("{vk}.energy"), &v.energy);
            let mut units_driver = false;
            for (j, d) in v.drivers.iter().enumerate() {
                if d == "units" {
                    units_driver = true;
                } else {
                    l.one_of(&format!("{vk}.drivers[{j}]"), d, &["units"], "driver");
                }
            }
            if units_driver && production.is_none() {
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
        });
        rules.push(RulePlan {
            id: r.id.clone(),
            kind,
            category: r.category.clone().unwrap_or_else(|| r.id.clone()),
            one_per_group,
            cooldown_ms,
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
        });
    }

    // Sinks: exactly one Parquet sink (the lake), any number of MQTT publishers.
    let mut sink = None;
    let mut publish = Vec::new();
    let parquet_count = raw
        .sinks
        .iter()
        .filter(|v| v.get("type").and_then(|t| t.as_str()) == Some("parquet"))
        .count();
    if parquet_count != 1 {
        l.at(
            "sinks",
            format!("exactly one `parquet` sink is needed, found {parquet_count}"),
            None,
        );
    }
    for (i, v) in raw.sinks.into_iter().enumerate() {
        let key = format!("sinks[{i}]");
        let Some(ty) = take_type(&mut l, &key, &v, &["parquet", "mqtt_publish"], "sink type")
        else {
            continue;
        };
        if ty == "mqtt_publish" {
            if let Some(p) = mqtt::publish(&mut l, &key, v, &raw.name, env) {
                publish.push(p);
            }
        } else if ty == "parquet" {
            if let Some(p) = l.de::<RawParquetSink>(&key, strip_type(v), PARQUET_KEYS) {
                let tables = p
                    .tables
                    .clone()
                    .unwrap_or_else(|| TABLES.iter().map(|s| s.to_string()).collect());
                for (j, t) in tables.iter().enumerate() {
                    l.one_of(&format!("{key}.tables[{j}]"), t, TABLES, "table");
                }
                let roll_bytes = match &p.roll_size {
                    Some(s) => match units::parse_size_bytes(s) {
                        Ok(b) => b,
                        Err(e) => {
                            l.at_value(
                                &format!("{key}.roll_size"),
                                e,
                                Some(units::SIZE_HINT.into()),
                            );
                            0
                        }
                    },
                    None => 128 << 20,
                };
                let roll_interval_ms = match &p.roll_interval {
                    Some(s) => l.duration(&format!("{key}.roll_interval"), s).unwrap_or(0) as u64,
                    None => 300_000,
                };
                let roll_by = p.roll_by.as_deref().unwrap_or("processing_time");
                l.one_of(
                    &format!("{key}.roll_by"),
                    roll_by,
                    &["processing_time", "event_time"],
                    "roll_by",
                );
                sink = Some(ParquetPlan {
                    roll_event_time: roll_by == "event_time",
                    id: p.id,
                    path: l.resolve_path(&p.path),
                    tables,
                    roll_rows: p.roll_rows.unwrap_or(5_000_000),
                    roll_bytes,
                    roll_interval_ms,
                    row_group_rows: p.row_group_rows.unwrap_or(131_072).max(1),
                });
            }
        }
    }

    if !l.diags.is_empty() {
        l.diags.sort_by_key(|d| d.span.start);
        return Err(l.diags);
    }
    Ok(Plan {
        file: file.to_path_buf(),
        name: raw.name,
        description: raw.description,
        currency: raw.currency.unwrap_or_else(|| "EUR".into()),
        sources,
        context: ContextPlan {
            assets,
            tariff,
            holidays,
            production,
            maintenance,
            asset_extra,
        },
        window: WindowPlan {
            size_ms,
            lateness_ms,
            retention_ms,
            max_future_ms,
            quality,
            spill_after_ms,
            state_dir,
        },
        publish: publish
            .into_iter()
            .map(|mut p| {
                p.metrics = metrics.iter().map(|m| m.name.clone()).collect();
                p
            })
            .collect(),
        metrics,
        rules,
        sink: sink.expect("a sink was validated above"),
        calendar,
        billing,
        lifecycle,
        routing,
    })
}

/// A username (literal or from an environment variable) and a password
/// (from an environment variable or a file, never from the config text),
/// shared by the protocol sources and sinks.
#[allow(clippy::too_many_arguments)]
fn credentials(
    l: &mut Loader<'_>,
    key: &str,
    username: &Option<String>,
    username_env: &Option<String>,
    password_env: &Option<String>,
    password_file: &Option<String>,
    env: &dyn Fn(&str) -> Option<String>,
) -> (Option<String>, Option<crate::sources::Secret>) {
    let mut user = username.clone();
    let from_env = |l: &mut Loader<'_>, k: &str, var: &Option<String>| {
        let var = var.as_ref()?;
        let v = env(var);
        if v.is_none() {
            l.at_value(
                &format!("{key}.{k}"),
                format!("environment variable `{var}` is not set"),
                None,
            );
        }
        v
    };
    if let Some(v) = from_env(l, "username_env", username_env) {
        user = Some(v);
    }
    let mut password = from_env(l, "password_env", password_env).map(crate::sources::Secret);
    if let Some(f) = password_file {
        let p = l.file_exists(&format!("{key}.password_file"), f);
        if let Ok(s) = std::fs::read_to_string(&p) {
            password = Some(crate::sources::Secret(
                s.trim_end_matches(['\n', '\r']).to_string(),
            ));
        }
    }
    (user, password)
}

fn take_type(
    l: &mut Loader<'_>,
    key: &str,
    v: &toml::Value,
    allowed: &[&str],
    what: &str,
) -> Option<String> {
    let Some(t) = v.as_table() else {
        l.at_value(
            key,
            format!("wrong type: {}, expected a table", v.type_str()),
            None,
        );
        return None;
    };
    match t.get("type").and_then(|t| t.as_str()) {
        Some(ty) if allowed.contains(&ty) => Some(ty.to_string()),
        Some(ty) => {
            l.one_of(&format!("{key}.type"), ty, allowed, what);
            None
        }
        None => {
            l.at(
                key,
                format!("missing key `type` in `{key}`"),
                Some(format!("one of: {}", allowed.join(", "))),
            );
            None
        }
    }
}

fn strip_type(v: toml::Value) -> toml::Value {
    match v {
        toml::Value::Table(mut t) => {
            t.remove("type");
            toml::Value::Table(t)
        }
        other => other,
    }
}
