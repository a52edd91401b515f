//! Raw config structs: what the TOML says, before validation.
//!
//! Unknown keys are collected by `serde_ignored` (so every one is reported,
//! not just the first); units are still strings here and become numbers in
//! the validated [`Plan`](super::Plan).

use serde::Deserialize;

#[derive(Deserialize, Debug, schemars::JsonSchema)]
pub struct RawDataflow {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub currency: Option<String>,
    /// Where samples come from (`type` = replay, mqtt or opcua).
    #[schemars(with = "Vec<serde_json::Value>")]
    pub sources: Vec<toml::Value>,
    #[schemars(with = "RawContext")]
    pub context: toml::Value,
    #[schemars(with = "RawWindow")]
    pub window: toml::Value,
    /// Derived per window, in order: name = expression.
    #[serde(default)]
    #[schemars(with = "std::collections::BTreeMap<String, String>")]
    pub metrics: toml::Table,
    #[serde(default)]
    #[schemars(with = "Vec<RawRule>")]
    pub rules: Vec<toml::Value>,
    /// Where results go (`type` = parquet, mqtt or jsonl).
    #[schemars(with = "Vec<serde_json::Value>")]
    pub sinks: Vec<toml::Value>,
    /// The plant's IANA timezone (tariffs, billing periods, day buckets).
    #[serde(default)]
    pub timezone: Option<String>,
    #[serde(default)]
    #[schemars(with = "Option<RawBilling>")]
    pub billing: Option<toml::Value>,
    #[serde(default)]
    #[schemars(with = "Option<RawLifecycle>")]
    pub lifecycle: Option<toml::Value>,
    #[serde(default)]
    #[schemars(with = "Vec<RawRoute>")]
    pub routing: Vec<toml::Value>,
    /// How much of bad input `dead_letter` keeps.
    #[serde(default)]
    #[schemars(with = "Option<RawDeadLetter>")]
    pub dead_letter: Option<toml::Value>,
    /// How much memory the node may use.
    #[serde(default)]
    #[schemars(with = "Option<super::memory::RawMemory>")]
    pub memory: Option<toml::Value>,
    /// The operator surface.
    #[serde(default)]
    #[schemars(with = "Option<super::http::RawHttp>")]
    pub http: Option<toml::Value>,
    /// When tags count as stale, flat-lining or out of range.
    #[serde(default)]
    #[schemars(with = "Option<super::tag_quality::RawTagQuality>")]
    pub tag_quality: Option<toml::Value>,
}

#[derive(Deserialize, Debug, schemars::JsonSchema)]
pub struct RawDeadLetter {
    #[serde(default)]
    pub max_raw: Option<String>,
    #[serde(default)]
    pub per_message: Option<i64>,
}

#[derive(Deserialize, Debug, schemars::JsonSchema)]
pub struct RawBilling {
    /// The metric holding each window's kWh.
    pub energy: String,
    #[serde(default)]
    pub demand_charge_per_kw: Option<f64>,
    #[serde(default)]
    pub demand_interval: Option<String>,
    /// `day` or `month` (local time).
    #[serde(default)]
    pub period: Option<String>,
}

#[derive(Deserialize, Debug, schemars::JsonSchema)]
pub struct RawLifecycle {
    /// JSON-lines file of status updates (tailed in `--follow`).
    #[serde(default)]
    pub path: Option<String>,
    /// An open action nobody acknowledged expires this long after it opened.
    #[serde(default)]
    pub expire_after: Option<String>,
}

#[derive(Deserialize, Debug, schemars::JsonSchema)]
pub struct RawRoute {
    #[serde(default)]
    pub category: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub site: Option<String>,
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub action_type: Option<String>,
    #[serde(default)]
    pub value_category: Option<String>,
}

#[derive(Deserialize, Debug, schemars::JsonSchema)]
pub struct RawTariff {
    pub path: String,
    /// Local dates (`YYYY-MM-DD`) priced as holidays.
    #[serde(default)]
    pub holidays: Vec<String>,
}

#[derive(Deserialize, Debug, schemars::JsonSchema)]
pub struct RawVerify {
    pub baseline: String,
    pub reporting: String,
    #[serde(default)]
    pub granularity: Option<String>,
    pub energy: String,
    #[serde(default)]
    pub drivers: Vec<String>,
    #[serde(default)]
    pub max_cv_rmse: Option<f64>,
    #[serde(default)]
    pub max_nmbe: Option<f64>,
    #[serde(default)]
    pub max_fsu: Option<f64>,
}

#[derive(Deserialize, Debug, schemars::JsonSchema)]
pub struct RawContext {
    pub assets: RawTable,
    pub tariff: RawTariff,
    #[serde(default)]
    pub production: Option<RawTable>,
    #[serde(default)]
    pub maintenance: Option<RawTable>,
}

#[derive(Deserialize, Debug, schemars::JsonSchema)]
pub struct RawTable {
    pub path: String,
}

#[derive(Deserialize, Debug, schemars::JsonSchema)]
pub struct RawWindow {
    pub size: String,
    pub allowed_lateness: String,
    #[serde(default)]
    pub quality: Option<String>,
    #[serde(default)]
    pub retention: Option<String>,
    #[serde(default)]
    pub max_future: Option<String>,
    #[serde(default)]
    pub spill_after: Option<String>,
    #[serde(default)]
    pub state_dir: Option<String>,
    #[serde(default)]
    pub checkpoint_interval: Option<String>,
}

#[derive(Deserialize, Debug, schemars::JsonSchema)]
pub struct RawRule {
    pub id: String,
    #[serde(default)]
    pub description: Option<String>,
    /// `windows` (default) or `demand_peak`.
    #[serde(default)]
    pub kind: Option<String>,
    /// Routing key; defaults to the rule id.
    #[serde(default)]
    pub category: Option<String>,
    #[serde(default, rename = "where")]
    pub filter: Option<String>,
    #[serde(default)]
    pub group_by: Option<Vec<String>>,
    #[serde(default)]
    pub period: Option<String>,
    /// name = { sum | mean | min | max = expression } over the period's windows.
    #[serde(default)]
    #[schemars(with = "Option<std::collections::BTreeMap<String, RawMeasure>>")]
    pub measures: Option<toml::Table>,
    #[serde(default)]
    pub condition: Option<String>,
    pub action: RawAction,
    #[serde(default)]
    pub verify: Option<RawVerify>,
}

/// One aggregate of an expression (the schema's view of a measure; the
/// rule's validation reads the table itself).
#[derive(Debug, schemars::JsonSchema)]
#[allow(dead_code)]
pub struct RawMeasure {
    sum: Option<String>,
    mean: Option<String>,
    min: Option<String>,
    max: Option<String>,
}

#[derive(Deserialize, Debug, schemars::JsonSchema)]
pub struct RawAction {
    pub owner: String,
    pub action_type: String,
    pub value_category: String,
    #[serde(default)]
    pub value: Option<String>,
    #[serde(default)]
    pub severity: Option<RawSeverity>,
    /// `group` (one open action per rule and group, default) or `period`.
    #[serde(default)]
    pub one_per: Option<String>,
    /// After an action is done or rejected, findings are suppressed this long.
    #[serde(default)]
    pub cooldown: Option<String>,
    /// This rule's actions expire after this long open (`[lifecycle] expire_after`).
    #[serde(default)]
    pub expire_after: Option<String>,
}

#[derive(Deserialize, Debug, schemars::JsonSchema)]
pub struct RawSeverity {
    pub medium: f64,
    pub high: f64,
}
