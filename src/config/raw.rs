//! Raw config structs: what the TOML says, before validation.
//!
//! Unknown keys are collected by `serde_ignored` (so every one is reported,
//! not just the first); units are still strings here and become numbers in
//! the validated [`Plan`](super::Plan).

use serde::Deserialize;

#[derive(Deserialize, Debug)]
pub struct RawDataflow {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub currency: Option<String>,
    pub sources: Vec<toml::Value>,
    pub context: toml::Value,
    pub window: toml::Value,
    #[serde(default)]
    pub metrics: toml::Table,
    #[serde(default)]
    pub rules: Vec<toml::Value>,
    pub sinks: Vec<toml::Value>,
}

#[derive(Deserialize, Debug)]
pub struct RawReplay {
    pub id: String,
    pub path: String,
    /// `csv` or `parquet`; by file extension when absent.
    #[serde(default)]
    pub format: Option<String>,
    /// Rows per batch handed to the engine.
    #[serde(default)]
    pub batch_rows: Option<usize>,
    /// How often a followed file is polled for new rows.
    #[serde(default)]
    pub poll_interval: Option<String>,
}

#[derive(Deserialize, Debug)]
pub struct RawContext {
    pub assets: RawTable,
    pub tariff: RawTable,
    #[serde(default)]
    pub production: Option<RawTable>,
    #[serde(default)]
    pub maintenance: Option<RawTable>,
}

#[derive(Deserialize, Debug)]
pub struct RawTable {
    pub path: String,
}

#[derive(Deserialize, Debug)]
pub struct RawWindow {
    pub size: String,
    pub allowed_lateness: String,
    #[serde(default)]
    pub quality: Option<String>,
    #[serde(default)]
    pub retention: Option<String>,
    #[serde(default)]
    pub max_future: Option<String>,
}

#[derive(Deserialize, Debug)]
pub struct RawRule {
    pub id: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default, rename = "where")]
    pub filter: Option<String>,
    pub group_by: Vec<String>,
    pub period: String,
    pub measures: toml::Table,
    pub condition: String,
    pub action: RawAction,
}

#[derive(Deserialize, Debug)]
pub struct RawAction {
    pub owner: String,
    pub action_type: String,
    pub value_category: String,
    pub value: String,
    #[serde(default)]
    pub severity: Option<RawSeverity>,
}

#[derive(Deserialize, Debug)]
pub struct RawSeverity {
    pub medium: f64,
    pub high: f64,
}

#[derive(Deserialize, Debug)]
pub struct RawParquetSink {
    pub id: String,
    pub path: String,
    #[serde(default)]
    pub tables: Option<Vec<String>>,
    #[serde(default)]
    pub roll_rows: Option<u64>,
    #[serde(default)]
    pub roll_size: Option<String>,
    #[serde(default)]
    pub roll_interval: Option<String>,
    #[serde(default)]
    pub row_group_rows: Option<usize>,
}
