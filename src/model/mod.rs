//! Plain data that crosses component boundaries: samples, window aggregates,
//! context rows, enriched rows, actions and dead letters.
//!
//! Nothing here names timely or differential; the engine wraps these types.
//! Floats that must be ordered (differential needs `Ord`) are stored as
//! [`F64`], which orders by `f64::total_cmp`.

use serde::{Deserialize, Serialize};

mod batch;
pub mod edit;
pub mod hint;
mod intern;
pub mod message;
pub mod tables;
pub mod tariff;
mod text;

pub use batch::{SideRows, SinkBatch, Stamped};
pub use intern::{shrink_sparse, Interner};
pub use text::did_you_mean;

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

/// A name many rows share (an asset, site, line or asset kind): one copy
/// per distinct value, however many asset rows, group keys and findings
/// name it. A thin pointer (8 bytes: the length lives beside the count in
/// the allocation), where `Arc<str>` takes 16 in every row, key and finding.
pub type SharedName = arcstr::ArcStr;

/// A rule group's key: the values of its `group_by` columns, in order. The
/// names are the asset rows' own (shared, not copied).
pub type Group = std::sync::Arc<[SharedName]>;

/// A row of the `assets` context table.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AssetRow {
    pub tag: SharedName,
    pub asset: SharedName,
    pub site: SharedName,
    pub line: SharedName,
    pub kind: SharedName,
    pub standby_kw: F64,
    /// Extra columns, in the order of `ContextSchema::asset_extra` (boxed:
    /// no spare room, and no allocation when there are none).
    pub extra: Box<[Scalar]>,
}

/// A typed scalar for extra context columns and metric results.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Scalar {
    Num(F64),
    Bool(bool),
    Str(String),
}

/// A window's derived metrics.
pub type Metrics = smallvec::SmallVec<[Scalar; 4]>;

/// A window aggregate joined with its context: what metrics and rules see.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Enriched {
    pub tag: TagId,
    pub win: WindowAgg,
    /// Shared, not copied: every window of a tag points at the same row.
    pub asset: std::sync::Arc<AssetRow>,
    /// Local (month, day type, hour) the tariff was looked up by.
    pub tariff_key: u32,
    pub price_per_kwh: F64,
    pub producing: bool,
    pub in_maintenance: bool,
    /// Derived metrics, in config order (up to four inline: no allocation per window).
    pub metrics: Metrics,
}

/// How new action versions change the run's totals for one owner and
/// action type: actions first seen, and the count and value at stake of
/// those counted (not withdrawn), as differences.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ActionTotals {
    pub owner: String,
    pub action_type: String,
    pub seen: i64,
    pub counted: i64,
    pub value: f64,
}

/// One version of an action, as the `actions` table stores it.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
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
    /// Rule category (routing key).
    pub category: String,
    /// Findings merged into this action.
    pub findings: i64,
    /// When the current status was entered (event time, epoch ms).
    pub status_at: i64,
    pub status_by: String,
    pub status_note: String,
}

/// One `(rule, group, period)` where a rule's condition held: the unit of
/// evidence that actions are made of. Corrections retract and re-insert it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Finding {
    pub rule: u32,
    /// Shared by every finding and map key of the group (see `rules::findings`).
    pub group: Group,
    pub period_start: i64,
    pub period_end: i64,
    pub value: F64,
    pub windows: i64,
    /// Some window of the period lay in a maintenance window of the asset.
    pub in_maintenance: bool,
    /// Measures as JSON text (name → value).
    pub measures: String,
    pub site: SharedName,
    pub line: SharedName,
    pub asset: SharedName,
    pub kind: SharedName,
}

/// A lifecycle update for an action (from the status file, CLI or MQTT).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct StatusUpdate {
    pub action_id: String,
    /// `acknowledged`, `done` or `rejected`.
    pub status: String,
    /// Event time of the transition (epoch ms).
    pub at: i64,
    pub by: String,
    pub note: String,
    /// Arrival order, to break ties and for dead letters.
    pub seq: u64,
    pub raw: String,
}

/// One version of a verification outcome (`outcomes` table).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutcomeRow {
    pub action_id: String,
    pub rule: String,
    pub site: String,
    pub asset: String,
    pub baseline_start: i64,
    pub baseline_end: i64,
    pub reporting_start: i64,
    pub reporting_end: i64,
    pub model: String,
    pub n_baseline: i64,
    pub n_reporting: i64,
    pub r2: Option<f64>,
    pub cv_rmse: Option<f64>,
    pub nmbe: Option<f64>,
    pub baseline_kwh: Option<f64>,
    pub actual_kwh: f64,
    pub avoided_kwh: Option<f64>,
    pub avoided_cost: Option<f64>,
    pub fractional_savings: Option<f64>,
    pub fsu_68: Option<f64>,
    pub fsu_90: Option<f64>,
    /// `pending` until the reporting period ends, then `verified`, `not_verified` or `insufficient_data`.
    pub verdict: String,
    pub reason: String,
    pub is_final: bool,
    /// Event time (watermark) at which this version was computed.
    pub computed_at: i64,
    /// The per-bucket series behind a final outcome (`outcome_buckets` table); empty before.
    #[serde(skip)]
    pub buckets: Vec<OutcomeBucket>,
}

/// One bucket of a final outcome's baseline or reporting period (`outcome_buckets` table).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutcomeBucket {
    pub bucket_start: i64,
    pub bucket_end: i64,
    /// `baseline` or `reporting`.
    pub period: &'static str,
    /// The driver (production units), 0 for the mean model.
    pub units: f64,
    pub measured_kwh: f64,
    /// The baseline model's prediction for this bucket's driver.
    pub predicted_kwh: f64,
    pub cost: f64,
}

/// One version of a billing period's energy and demand cost for a meter group (`billing` table).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BillRow {
    pub site: String,
    pub period_start: i64,
    pub period_end: i64,
    pub energy_kwh: f64,
    pub energy_cost: f64,
    pub peak_kw: f64,
    pub peak_interval_start: i64,
    pub demand_cost: f64,
    pub total_cost: f64,
    /// Billed demand that would disappear if the peak interval were shaved to a typical interval.
    pub peak_shave_kw: f64,
    /// Value at stake of the peak: demand charge saved plus the excess energy at its price.
    pub peak_shave_value: f64,
    pub intervals: i64,
    /// `{"<price>": {"kwh": .., "cost": ..}}`.
    pub energy_by_price: String,
    pub is_final: bool,
}

/// A record that could not be used, and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub source: String,
    pub received_at: i64,
    pub reason: String,
    /// The record as read: text, or base64 when `binary`.
    pub raw: String,
    /// MQTT topic the record arrived on (message sources only).
    pub topic: Option<String>,
    /// `raw` holds base64 of a binary payload (e.g. Sparkplug protobuf).
    pub binary: bool,
    /// Size of the whole record in bytes (`raw` keeps at most its first
    /// [`DEAD_LETTER_RAW_PREFIX`] bytes).
    pub raw_bytes: i64,
    /// xxh3-64 of the whole record, 16 hex digits: tells repeats apart
    /// without keeping them whole.
    pub raw_hash: String,
}

/// The message of a panic's payload (`panic!` gives a `&str` or a `String`).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic".to_string()
    }
}

/// Makes a directory's entries (new names, renames, deletions) durable.
pub fn sync_dir(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Creates `dir` and its missing parents readable by the owner only (0700
/// on Unix): scratch state and keys never sit in a directory others can
/// list or plant files in.
pub fn private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(dir)
}

/// The most of a record a dead letter keeps in `raw` by default, in bytes
/// (text; a binary record keeps base64 of its first 3/4 of this).
pub const DEAD_LETTER_RAW_PREFIX: usize = 4096;

/// How much of bad input the `dead_letter` table keeps (`[dead_letter]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeadLetterLimits {
    /// Bytes of a record kept in `raw`.
    pub max_raw: usize,
    /// Rows one message may yield; the rest are counted in one more row.
    pub per_message: usize,
}

impl Default for DeadLetterLimits {
    fn default() -> Self {
        DeadLetterLimits {
            max_raw: DEAD_LETTER_RAW_PREFIX,
            per_message: 100,
        }
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a char boundary.
pub fn prefix_at_char(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn raw_hash(bytes: &[u8]) -> String {
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(bytes))
}

/// A stretch of time a source could not observe (connection lost, data
/// the server no longer had): outputs show it instead of inventing data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Gap {
    pub source: String,
    /// Last instant data is known to be complete (epoch ms).
    pub start: i64,
    /// When data flowed again (epoch ms).
    pub end: i64,
    /// Tags affected.
    pub tags: i64,
    pub reason: String,
    /// What was done about it (e.g. "current values read").
    pub recovery: String,
}

/// One tag's data quality at one moment (`tag_quality` table, `GET /api/v1/tags`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TagQualityRow {
    /// When this snapshot was taken (epoch ms; the time statuses are judged at).
    pub snapshot_at: i64,
    pub tag: String,
    pub site: String,
    pub line: String,
    pub asset: String,
    pub kind: String,
    pub unit: String,
    /// `ok`, `unmapped`, `missing`, `stale`, `unit_mismatch`, `flatline`
    /// or `out_of_range`.
    pub status: &'static str,
    /// Why, in words (empty when `ok`).
    pub detail: String,
    /// Samples taken since the node started.
    pub samples: u64,
    pub first_ts: Option<i64>,
    pub last_ts: Option<i64>,
    pub last_value: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// The tag's usual interval between samples (ms): its mean since start.
    pub interval_ms: Option<i64>,
    /// Since when its value has not changed (epoch ms, event time).
    pub unchanged_since: Option<i64>,
}

impl DeadLetter {
    /// A rejected text record, received now.
    /// (`raw` keeps its first [`DEAD_LETTER_RAW_PREFIX`] bytes.)
    pub fn text(source: &str, reason: impl Into<String>, raw: impl Into<String>) -> DeadLetter {
        Self::text_within(source, reason, raw, DEAD_LETTER_RAW_PREFIX)
    }

    /// [`DeadLetter::text`] keeping at most `max_raw` bytes of the record.
    pub fn text_within(
        source: &str,
        reason: impl Into<String>,
        raw: impl Into<String>,
        max_raw: usize,
    ) -> DeadLetter {
        let mut raw: String = raw.into();
        let (raw_bytes, raw_hash) = (raw.len() as i64, raw_hash(raw.as_bytes()));
        let keep = prefix_at_char(&raw, max_raw).len();
        raw.truncate(keep);
        DeadLetter {
            source: source.to_string(),
            received_at: now_ms(),
            reason: reason.into(),
            raw,
            topic: None,
            binary: false,
            raw_bytes,
            raw_hash,
        }
    }

    /// A rejected message payload: kept as text when it is UTF-8, else base64
    /// (at most [`DEAD_LETTER_RAW_PREFIX`] bytes either way).
    pub fn message(
        source: &str,
        topic: &str,
        reason: impl Into<String>,
        payload: &[u8],
    ) -> DeadLetter {
        Self::message_within(source, topic, reason, payload, DEAD_LETTER_RAW_PREFIX)
    }

    /// [`DeadLetter::message`] keeping at most `max_raw` bytes of the payload.
    pub fn message_within(
        source: &str,
        topic: &str,
        reason: impl Into<String>,
        payload: &[u8],
        max_raw: usize,
    ) -> DeadLetter {
        use base64::Engine as _;
        let (raw, binary) = match std::str::from_utf8(payload) {
            Ok(t) => (prefix_at_char(t, max_raw).to_string(), false),
            Err(_) => {
                let head = &payload[..payload.len().min(max_raw / 4 * 3)];
                (base64::engine::general_purpose::STANDARD.encode(head), true)
            }
        };
        DeadLetter {
            source: source.to_string(),
            received_at: now_ms(),
            reason: reason.into(),
            raw,
            topic: Some(topic.to_string()),
            binary,
            raw_bytes: payload.len() as i64,
            raw_hash: raw_hash(payload),
        }
    }
}

/// A production run (half-open `[start_ms, end_ms)`) or a maintenance window.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Interval {
    /// Line (production) or asset (maintenance): shared by a key's intervals.
    pub key: SharedName,
    pub start_ms: i64,
    pub end_ms: i64,
    /// Produced quantity of a run (`units` column), the M&V driver.
    pub units: Option<F64>,
}

/// A credential that never prints (Debug shows `***`), shared by the
/// protocol sources.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// Canonical name of an update's status, accepting the CLI verbs.
pub fn canonical_status(s: &str) -> Option<&'static str> {
    match s {
        "acknowledged" | "ack" => Some("acknowledged"),
        "done" => Some("done"),
        "rejected" | "reject" => Some("rejected"),
        _ => None,
    }
}

/// Current wall-clock time in epoch milliseconds.
/// RFC 3339 text (UTC, milliseconds) of epoch milliseconds; `None` out of
/// chrono's range.
pub fn rfc3339_ms(ms: i64) -> Option<String> {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Aborts the process at a named point of the `seq`th commit (or
/// checkpoint) when the test hook `PLANTFLOW_TEST_CRASH=<point>:<seq>`
/// names it (a kill at an exact moment).
pub fn crash_point(at: &str, seq: u64) {
    static WANT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let want = WANT.get_or_init(|| std::env::var("PLANTFLOW_TEST_CRASH").ok());
    if want.as_deref() == Some(&format!("{at}:{seq}")) {
        let what = if at == "checkpoint" { "" } else { "commit " };
        eprintln!("plantflow: test crash at {at} of {what}{seq}");
        std::process::abort();
    }
}

/// Panics at a named point when the test hook
/// `PLANTFLOW_TEST_PANIC=<point>:<seq>` names it (a fault in one component
/// of many, e.g. one timely worker of two).
pub fn test_panic(at: &str, seq: u64) {
    static WANT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let want = WANT.get_or_init(|| std::env::var("PLANTFLOW_TEST_PANIC").ok());
    // Called on a worker's every step: nothing is formatted unless set.
    if let Some(w) = want {
        if *w == format!("{at}:{seq}") {
            panic!("test panic on {at} {seq}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letters_keep_a_bounded_prefix_its_size_and_hash() {
        // Text: cut on a char boundary at or under 4096 bytes ("é" is 2 bytes).
        let raw = format!("a{}", "é".repeat(3000));
        let d = DeadLetter::text("s", "r", raw.clone());
        assert_eq!(d.raw.len(), 4095, "4096 would split an é");
        assert!(raw.starts_with(&d.raw));
        assert_eq!(d.raw_bytes, 6001);
        assert_eq!(d.raw_hash.len(), 16);
        let same = DeadLetter::text("s", "other reason", raw.clone());
        assert_eq!(same.raw_hash, d.raw_hash, "the hash is of the record");
        let other = DeadLetter::text("s", "r", raw.replace('a', "b"));
        assert_ne!(other.raw_hash, d.raw_hash);
        // Short records stay whole.
        let d = DeadLetter::text("s", "r", "1,2,3");
        assert_eq!((d.raw.as_str(), d.raw_bytes), ("1,2,3", 5));
        // Binary payloads: base64 of the first 3072 bytes is 4096 characters.
        let bin = vec![0xffu8; 10_000];
        let d = DeadLetter::message("s", "t", "r", &bin);
        assert!(d.binary);
        assert_eq!(d.raw.len(), 4096);
        assert_eq!(d.raw_bytes, 10_000);
    }

    /// What every tag pays for its context: an asset row and the names it
    /// shares. A fat `Arc<str>` for names would make the row 104 bytes.
    #[test]
    fn per_tag_records_keep_their_layout() {
        assert_eq!(std::mem::size_of::<SharedName>(), 8);
        assert_eq!(std::mem::size_of::<AssetRow>(), 64);
        let a: SharedName = "site1/line1".into();
        let b = a.clone();
        assert!(SharedName::ptr_eq(&a, &b), "a clone shares the one copy");
        // Serialized as a plain string (spill files, JSON evidence).
        assert_eq!(serde_json::to_string(&a).unwrap(), "\"site1/line1\"");
        let back: SharedName = serde_json::from_str("\"site1/line1\"").unwrap();
        assert_eq!(back, a);
    }
}
