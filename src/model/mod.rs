//! Plain data that crosses component boundaries: samples, window aggregates,
//! context rows, enriched rows, actions and dead letters.
//!
//! Nothing here names timely or differential; the engine wraps these types.
//! Floats that must be ordered (differential needs `Ord`) are stored as
//! [`F64`], which orders by `f64::total_cmp`.

use serde::{Deserialize, Serialize};

/// Interned tag id, stable for the life of one process.
pub type TagId = u32;

/// An f64 with a total order, so it can live in differential collections.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct F64(pub f64);

impl PartialEq for F64 {
    fn eq(&self, other: &Self) -> bool {
        self.0.total_cmp(&other.0).is_eq()
    }
}
impl Eq for F64 {}
impl PartialOrd for F64 {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for F64 {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}
impl std::hash::Hash for F64 {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.to_bits().hash(state)
    }
}

/// Sample quality, as OPC UA severity: good, uncertain, bad.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Quality {
    Good = 0,
    Uncertain = 1,
    Bad = 2,
}

impl Quality {
    /// Maps `0|1|2`, or an OPC UA StatusCode by its two severity bits.
    pub fn from_code(code: u64) -> Option<Quality> {
        match code {
            0 => Some(Quality::Good),
            1 => Some(Quality::Uncertain),
            2 => Some(Quality::Bad),
            c if c <= u32::MAX as u64 => Some(match (c >> 30) & 0b11 {
                0b00 => Quality::Good,
                0b01 => Quality::Uncertain,
                _ => Quality::Bad,
            }),
            _ => None,
        }
    }
}

/// One normalised measurement: event time in epoch milliseconds (UTC).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub tag: TagId,
    pub ts: i64,
    pub value: f64,
    pub quality: Quality,
}

/// Closed (or corrected) per-tag window aggregate.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WindowAgg {
    pub window_start: i64,
    pub window_end: i64,
    pub count: i64,
    pub mean: F64,
    pub min: F64,
    pub max: F64,
    pub first: F64,
    pub last: F64,
}

/// A row of the `assets` context table.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AssetRow {
    pub tag: String,
    pub asset: String,
    pub site: String,
    pub line: String,
    pub kind: String,
    pub standby_kw: F64,
    /// Extra columns, in the order of `ContextSchema::asset_extra`.
    pub extra: Vec<Scalar>,
}

/// A typed scalar for extra context columns and metric results.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Scalar {
    Num(F64),
    Bool(bool),
    Str(String),
}

/// A window aggregate joined with its context: what metrics and rules see.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Enriched {
    pub tag: TagId,
    pub win: WindowAgg,
    /// Shared, not copied: every window of a tag points at the same row.
    pub asset: std::sync::Arc<AssetRow>,
    pub price_per_kwh: F64,
    pub producing: bool,
    pub in_maintenance: bool,
    /// Derived metrics, in config order.
    pub metrics: Vec<Scalar>,
}

/// One version of an action, as the `actions` table stores it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ActionRow {
    pub action_id: String,
    pub rule: String,
    pub site: String,
    pub line: String,
    pub asset: String,
    pub owner: String,
    pub action_type: String,
    pub value_category: String,
    pub value: F64,
    pub severity: String,
    pub period_start: i64,
    pub period_end: i64,
    pub status: String,
    pub evidence: String,
}

/// A record that could not be used, and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub source: String,
    pub received_at: i64,
    pub reason: String,
    pub raw: String,
}

/// Current wall-clock time in epoch milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
