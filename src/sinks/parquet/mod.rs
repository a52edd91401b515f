//! `parquet`: partitioned, atomic, rolling Parquet tables.
//!
//! Layout: `<path>/<table>/date=YYYY-MM-DD/part-<run>-<seq>.parquet` (Hive
//! partitions, zstd, timestamps as TIMESTAMP(ms, UTC)). A file is written as
//! a hidden `.part-….parquet.inprogress` beside its final name and renamed
//! when complete, so readers globbing `*.parquet` never see half a file.
//! Files roll on row count, size, or age (`roll_rows`, `roll_size`,
//! `roll_interval`); everything open is committed at shutdown.
//!
//! The writer runs on a tokio blocking thread, never on a timely worker.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, StringBuilder,
    TimestampMillisecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

pub mod config;

pub use config::ParquetPlan;

use super::tally::ActionTally;
use crate::config::MetricPlan;
use crate::expr::ColType;
use crate::model::SinkBatch;
use crate::model::{ActionRow, BillRow, DeadLetter, Enriched, Gap, OutcomeRow, Scalar};
use crate::stats::Stats;

fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

/// Schema of the `aggregates` table for a dataflow's metrics.
pub fn aggregates_schema(metrics: &[MetricPlan]) -> SchemaRef {
    let mut fields = vec![
        Field::new("site", DataType::Utf8, false),
        Field::new("line", DataType::Utf8, false),
        Field::new("asset", DataType::Utf8, false),
        Field::new("tag", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("window_start", ts_type(), false),
        Field::new("window_end", ts_type(), false),
        Field::new("count", DataType::Int64, false),
        Field::new("mean", DataType::Float64, false),
        Field::new("min", DataType::Float64, false),
        Field::new("max", DataType::Float64, false),
        Field::new("first", DataType::Float64, false),
        Field::new("last", DataType::Float64, false),
        Field::new("price_per_kwh", DataType::Float64, false),
        Field::new("producing", DataType::Boolean, false),
        Field::new("in_maintenance", DataType::Boolean, false),
    ];
    for m in metrics {
        let t = match m.result {
            ColType::Bool => DataType::Boolean,
            ColType::Str => DataType::Utf8,
            ColType::Num => DataType::Float64,
        };
        fields.push(Field::new(&m.name, t, true));
    }
    fields.push(Field::new("revision", DataType::Int64, false));
    Arc::new(Schema::new(fields))
}

/// Schema of the `actions` table.
pub fn actions_schema() -> SchemaRef {
    let s = |n: &str| Field::new(n, DataType::Utf8, false);
    Arc::new(Schema::new(vec![
        s("action_id"),
        s("dataflow"),
        s("rule"),
        s("site"),
        s("line"),
        s("asset"),
        s("owner"),
        s("action_type"),
        s("value_category"),
        Field::new("value", DataType::Float64, false),
        s("currency"),
        s("severity"),
        Field::new("period_start", ts_type(), false),
        Field::new("period_end", ts_type(), false),
        s("status"),
        s("evidence"),
        Field::new("revision", DataType::Int64, false),
        s("category"),
        Field::new("findings", DataType::Int64, false),
        Field::new("status_at", ts_type(), false),
        s("status_by"),
        s("status_note"),
    ]))
}

/// Schema of the `outcomes` table.
pub fn outcomes_schema() -> SchemaRef {
    let s = |n: &str| Field::new(n, DataType::Utf8, false);
    let t = |n: &str| Field::new(n, ts_type(), false);
    let f = |n: &str| Field::new(n, DataType::Float64, true);
    Arc::new(Schema::new(vec![
        s("action_id"),
        s("dataflow"),
        s("rule"),
        s("site"),
        s("asset"),
        t("baseline_start"),
        t("baseline_end"),
        t("reporting_start"),
        t("reporting_end"),
        s("model"),
        Field::new("n_baseline", DataType::Int64, false),
        Field::new("n_reporting", DataType::Int64, false),
        f("r2"),
        f("cv_rmse"),
        f("nmbe"),
        f("baseline_kwh"),
        Field::new("actual_kwh", DataType::Float64, false),
        f("avoided_kwh"),
        f("avoided_cost"),
        s("currency"),
        f("fractional_savings"),
        f("fsu_68"),
        f("fsu_90"),
        s("verdict"),
        s("reason"),
        Field::new("final", DataType::Boolean, false),
        t("computed_at"),
        Field::new("revision", DataType::Int64, false),
    ]))
}

/// Schema of the `outcome_buckets` table: the series behind each final outcome.
pub fn outcome_buckets_schema() -> SchemaRef {
    let s = |n: &str| Field::new(n, DataType::Utf8, false);
    let t = |n: &str| Field::new(n, ts_type(), false);
    let f = |n: &str| Field::new(n, DataType::Float64, false);
    Arc::new(Schema::new(vec![
        s("action_id"),
        s("dataflow"),
        s("rule"),
        s("site"),
        s("asset"),
        t("bucket_start"),
        t("bucket_end"),
        s("period"),
        f("units"),
        f("measured_kwh"),
        f("predicted_kwh"),
        f("cost"),
        Field::new("revision", DataType::Int64, false),
    ]))
}

fn outcome_buckets_batch(
    schema: &SchemaRef,
    rows: &[&(OutcomeRow, i64)],
    dataflow: &str,
) -> Result<RecordBatch, String> {
    let flat: Vec<(&OutcomeRow, &crate::model::OutcomeBucket, i64)> = rows
        .iter()
        .flat_map(|(o, r)| o.buckets.iter().map(move |b| (o, b, *r)))
        .collect();
    let cols: Vec<ArrayRef> = vec![
        str_col(flat.iter().map(|(o, _, _)| o.action_id.as_str())),
        str_col(flat.iter().map(|_| dataflow)),
        str_col(flat.iter().map(|(o, _, _)| o.rule.as_str())),
        str_col(flat.iter().map(|(o, _, _)| o.site.as_str())),
        str_col(flat.iter().map(|(o, _, _)| o.asset.as_str())),
        ts_col(flat.iter().map(|(_, b, _)| b.bucket_start)),
        ts_col(flat.iter().map(|(_, b, _)| b.bucket_end)),
        str_col(flat.iter().map(|(_, b, _)| b.period)),
        f64_col(flat.iter().map(|(_, b, _)| b.units)),
        f64_col(flat.iter().map(|(_, b, _)| b.measured_kwh)),
        f64_col(flat.iter().map(|(_, b, _)| b.predicted_kwh)),
        f64_col(flat.iter().map(|(_, b, _)| b.cost)),
        i64_col(flat.iter().map(|(_, _, r)| *r)),
    ];
    RecordBatch::try_new(schema.clone(), cols)
        .map_err(|e| format!("building an outcome_buckets batch: {e}"))
}

/// Schema of the `billing` table.
pub fn billing_schema() -> SchemaRef {
    let f = |n: &str| Field::new(n, DataType::Float64, false);
    Arc::new(Schema::new(vec![
        Field::new("site", DataType::Utf8, false),
        Field::new("period_start", ts_type(), false),
        Field::new("period_end", ts_type(), false),
        f("energy_kwh"),
        f("energy_cost"),
        f("peak_kw"),
        Field::new("peak_interval_start", ts_type(), false),
        f("demand_cost"),
        f("total_cost"),
        f("peak_shave_kw"),
        f("peak_shave_value"),
        Field::new("currency", DataType::Utf8, false),
        Field::new("intervals", DataType::Int64, false),
        Field::new("energy_by_price", DataType::Utf8, false),
        Field::new("final", DataType::Boolean, false),
        Field::new("revision", DataType::Int64, false),
    ]))
}

/// Schema of the `dead_letter` table.
pub fn dead_letter_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("source", DataType::Utf8, false),
        Field::new("received_at", ts_type(), false),
        Field::new("reason", DataType::Utf8, false),
        Field::new("raw", DataType::Utf8, false),
        Field::new("topic", DataType::Utf8, true),
        Field::new("raw_encoding", DataType::Utf8, false),
    ]))
}

/// Schema of the `gaps` table.
pub fn gaps_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("source", DataType::Utf8, false),
        Field::new("gap_start", ts_type(), false),
        Field::new("gap_end", ts_type(), false),
        Field::new("tags", DataType::Int64, false),
        Field::new("reason", DataType::Utf8, false),
        Field::new("recovery", DataType::Utf8, false),
    ]))
}

fn gaps_batch(schema: &SchemaRef, rows: &[&Gap]) -> Result<RecordBatch, String> {
    let cols: Vec<ArrayRef> = vec![
        str_col(rows.iter().map(|g| g.source.as_str())),
        ts_col(rows.iter().map(|g| g.start)),
        ts_col(rows.iter().map(|g| g.end)),
        i64_col(rows.iter().map(|g| g.tags)),
        str_col(rows.iter().map(|g| g.reason.as_str())),
        str_col(rows.iter().map(|g| g.recovery.as_str())),
    ];
    RecordBatch::try_new(schema.clone(), cols).map_err(|e| format!("building a gaps batch: {e}"))
}

/// Rows grouped by the Hive `date` partition of their key time.
fn by_date<T>(rows: &[T], at: impl Fn(&T) -> i64) -> BTreeMap<String, Vec<&T>> {
    const DAY_MS: i64 = 86_400_000;
    // Group by day number, then format each day's date once.
    let mut days: BTreeMap<i64, Vec<&T>> = BTreeMap::new();
    for r in rows {
        days.entry(at(r).div_euclid(DAY_MS)).or_default().push(r);
    }
    days.into_iter()
        .map(|(day, rs)| (date_of(day * DAY_MS), rs))
        .collect()
}

fn date_of(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| "1970-01-01".into())
}

fn ts_col(vals: impl Iterator<Item = i64>) -> ArrayRef {
    let mut b = TimestampMillisecondBuilder::new();
    vals.for_each(|v| b.append_value(v));
    Arc::new(b.finish().with_timezone("UTC"))
}

fn str_col<'a>(vals: impl Iterator<Item = &'a str>) -> ArrayRef {
    let mut b = StringBuilder::new();
    vals.for_each(|v| b.append_value(v));
    Arc::new(b.finish())
}

fn f64_col(vals: impl Iterator<Item = f64>) -> ArrayRef {
    let mut b = Float64Builder::new();
    vals.for_each(|v| b.append_value(v));
    Arc::new(b.finish())
}

fn i64_col(vals: impl Iterator<Item = i64>) -> ArrayRef {
    let mut b = Int64Builder::new();
    vals.for_each(|v| b.append_value(v));
    Arc::new(b.finish())
}

fn bool_col(vals: impl Iterator<Item = bool>) -> ArrayRef {
    let mut b = BooleanBuilder::new();
    vals.for_each(|v| b.append_value(v));
    Arc::new(b.finish())
}

fn aggregates_batch(
    schema: &SchemaRef,
    rows: &[&(Enriched, i64)],
    metrics: &[MetricPlan],
) -> Result<RecordBatch, String> {
    let mut cols: Vec<ArrayRef> = vec![
        str_col(rows.iter().map(|(e, _)| &*e.asset.site)),
        str_col(rows.iter().map(|(e, _)| &*e.asset.line)),
        str_col(rows.iter().map(|(e, _)| &*e.asset.asset)),
        str_col(rows.iter().map(|(e, _)| &*e.asset.tag)),
        str_col(rows.iter().map(|(e, _)| &*e.asset.kind)),
        ts_col(rows.iter().map(|(e, _)| e.win.window_start)),
        ts_col(rows.iter().map(|(e, _)| e.win.window_end)),
        i64_col(rows.iter().map(|(e, _)| e.win.count)),
        f64_col(rows.iter().map(|(e, _)| e.win.mean.0)),
        f64_col(rows.iter().map(|(e, _)| e.win.min.0)),
        f64_col(rows.iter().map(|(e, _)| e.win.max.0)),
        f64_col(rows.iter().map(|(e, _)| e.win.first.0)),
        f64_col(rows.iter().map(|(e, _)| e.win.last.0)),
        f64_col(rows.iter().map(|(e, _)| e.price_per_kwh.0)),
        bool_col(rows.iter().map(|(e, _)| e.producing)),
        bool_col(rows.iter().map(|(e, _)| e.in_maintenance)),
    ];
    for (i, m) in metrics.iter().enumerate() {
        let col: ArrayRef = match m.result {
            ColType::Bool => {
                let mut b = BooleanBuilder::new();
                for (e, _) in rows {
                    match e.metrics.get(i) {
                        Some(Scalar::Bool(x)) => b.append_value(*x),
                        _ => b.append_null(),
                    }
                }
                Arc::new(b.finish())
            }
            ColType::Str => {
                let mut b = StringBuilder::new();
                for (e, _) in rows {
                    match e.metrics.get(i) {
                        Some(Scalar::Str(x)) => b.append_value(x),
                        _ => b.append_null(),
                    }
                }
                Arc::new(b.finish())
            }
            ColType::Num => {
                let mut b = Float64Builder::new();
                for (e, _) in rows {
                    match e.metrics.get(i) {
                        Some(Scalar::Num(x)) => b.append_value(x.0),
                        _ => b.append_null(),
                    }
                }
                Arc::new(b.finish())
            }
        };
        cols.push(col);
    }
    cols.push(i64_col(rows.iter().map(|(_, r)| *r)));
    RecordBatch::try_new(schema.clone(), cols)
        .map_err(|e| format!("building an aggregates batch: {e}"))
}

fn actions_batch(
    schema: &SchemaRef,
    rows: &[&(ActionRow, i64)],
    dataflow: &str,
    currency: &str,
) -> Result<RecordBatch, String> {
    let cols: Vec<ArrayRef> = vec![
        str_col(rows.iter().map(|(a, _)| a.action_id.as_str())),
        str_col(rows.iter().map(|_| dataflow)),
        str_col(rows.iter().map(|(a, _)| a.rule.as_str())),
        str_col(rows.iter().map(|(a, _)| a.site.as_str())),
        str_col(rows.iter().map(|(a, _)| a.line.as_str())),
        str_col(rows.iter().map(|(a, _)| a.asset.as_str())),
        str_col(rows.iter().map(|(a, _)| a.owner.as_str())),
        str_col(rows.iter().map(|(a, _)| a.action_type.as_str())),
        str_col(rows.iter().map(|(a, _)| a.value_category.as_str())),
        f64_col(rows.iter().map(|(a, _)| a.value.0)),
        str_col(rows.iter().map(|_| currency)),
        str_col(rows.iter().map(|(a, _)| a.severity.as_str())),
        ts_col(rows.iter().map(|(a, _)| a.period_start)),
        ts_col(rows.iter().map(|(a, _)| a.period_end)),
        str_col(rows.iter().map(|(a, _)| a.status.as_str())),
        str_col(rows.iter().map(|(a, _)| a.evidence.as_str())),
        i64_col(rows.iter().map(|(_, r)| *r)),
        str_col(rows.iter().map(|(a, _)| a.category.as_str())),
        i64_col(rows.iter().map(|(a, _)| a.findings)),
        ts_col(rows.iter().map(|(a, _)| a.status_at)),
        str_col(rows.iter().map(|(a, _)| a.status_by.as_str())),
        str_col(rows.iter().map(|(a, _)| a.status_note.as_str())),
    ];
    RecordBatch::try_new(schema.clone(), cols)
        .map_err(|e| format!("building an actions batch: {e}"))
}

fn opt_col(vals: impl Iterator<Item = Option<f64>>) -> ArrayRef {
    let mut b = Float64Builder::new();
    vals.for_each(|v| b.append_option(v));
    Arc::new(b.finish())
}

fn outcomes_batch(
    schema: &SchemaRef,
    rows: &[&(OutcomeRow, i64)],
    dataflow: &str,
    currency: &str,
) -> Result<RecordBatch, String> {
    let cols: Vec<ArrayRef> = vec![
        str_col(rows.iter().map(|(o, _)| o.action_id.as_str())),
        str_col(rows.iter().map(|_| dataflow)),
        str_col(rows.iter().map(|(o, _)| o.rule.as_str())),
        str_col(rows.iter().map(|(o, _)| o.site.as_str())),
        str_col(rows.iter().map(|(o, _)| o.asset.as_str())),
        ts_col(rows.iter().map(|(o, _)| o.baseline_start)),
        ts_col(rows.iter().map(|(o, _)| o.baseline_end)),
        ts_col(rows.iter().map(|(o, _)| o.reporting_start)),
        ts_col(rows.iter().map(|(o, _)| o.reporting_end)),
        str_col(rows.iter().map(|(o, _)| o.model.as_str())),
        i64_col(rows.iter().map(|(o, _)| o.n_baseline)),
        i64_col(rows.iter().map(|(o, _)| o.n_reporting)),
        opt_col(rows.iter().map(|(o, _)| o.r2)),
        opt_col(rows.iter().map(|(o, _)| o.cv_rmse)),
        opt_col(rows.iter().map(|(o, _)| o.nmbe)),
        opt_col(rows.iter().map(|(o, _)| o.baseline_kwh)),
        f64_col(rows.iter().map(|(o, _)| o.actual_kwh)),
        opt_col(rows.iter().map(|(o, _)| o.avoided_kwh)),
        opt_col(rows.iter().map(|(o, _)| o.avoided_cost)),
        str_col(rows.iter().map(|_| currency)),
        opt_col(rows.iter().map(|(o, _)| o.fractional_savings)),
        opt_col(rows.iter().map(|(o, _)| o.fsu_68)),
        opt_col(rows.iter().map(|(o, _)| o.fsu_90)),
        str_col(rows.iter().map(|(o, _)| o.verdict.as_str())),
        str_col(rows.iter().map(|(o, _)| o.reason.as_str())),
        bool_col(rows.iter().map(|(o, _)| o.is_final)),
        ts_col(rows.iter().map(|(o, _)| o.computed_at)),
        i64_col(rows.iter().map(|(_, r)| *r)),
    ];
    RecordBatch::try_new(schema.clone(), cols)
        .map_err(|e| format!("building an outcomes batch: {e}"))
}

fn billing_batch(
    schema: &SchemaRef,
    rows: &[&(BillRow, i64)],
    currency: &str,
) -> Result<RecordBatch, String> {
    let cols: Vec<ArrayRef> = vec![
        str_col(rows.iter().map(|(b, _)| b.site.as_str())),
        ts_col(rows.iter().map(|(b, _)| b.period_start)),
        ts_col(rows.iter().map(|(b, _)| b.period_end)),
        f64_col(rows.iter().map(|(b, _)| b.energy_kwh)),
        f64_col(rows.iter().map(|(b, _)| b.energy_cost)),
        f64_col(rows.iter().map(|(b, _)| b.peak_kw)),
        ts_col(rows.iter().map(|(b, _)| b.peak_interval_start)),
        f64_col(rows.iter().map(|(b, _)| b.demand_cost)),
        f64_col(rows.iter().map(|(b, _)| b.total_cost)),
        f64_col(rows.iter().map(|(b, _)| b.peak_shave_kw)),
        f64_col(rows.iter().map(|(b, _)| b.peak_shave_value)),
        str_col(rows.iter().map(|_| currency)),
        i64_col(rows.iter().map(|(b, _)| b.intervals)),
        str_col(rows.iter().map(|(b, _)| b.energy_by_price.as_str())),
        bool_col(rows.iter().map(|(b, _)| b.is_final)),
        i64_col(rows.iter().map(|(_, r)| *r)),
    ];
    RecordBatch::try_new(schema.clone(), cols).map_err(|e| format!("building a billing batch: {e}"))
}

fn dead_letter_batch(schema: &SchemaRef, rows: &[&DeadLetter]) -> Result<RecordBatch, String> {
    let cols: Vec<ArrayRef> = vec![
        str_col(rows.iter().map(|d| d.source.as_str())),
        ts_col(rows.iter().map(|d| d.received_at)),
        str_col(rows.iter().map(|d| d.reason.as_str())),
        str_col(rows.iter().map(|d| d.raw.as_str())),
        Arc::new(arrow::array::StringArray::from_iter(
            rows.iter().map(|d| d.topic.as_deref()),
        )),
        str_col(
            rows.iter()
                .map(|d| if d.binary { "base64" } else { "text" }),
        ),
    ];
    RecordBatch::try_new(schema.clone(), cols)
        .map_err(|e| format!("building a dead_letter batch: {e}"))
}

struct OpenFile {
    writer: ArrowWriter<File>,
    tmp: PathBuf,
    target: PathBuf,
    rows: u64,
    opened: Instant,
}

/// What the writer did, for the run summary.
#[derive(Debug, Default, Clone)]
pub struct WriterReport {
    /// Files committed (a count: a node rolling files per minute for a year
    /// would otherwise keep half a million paths).
    pub files: u64,
    pub rows: BTreeMap<String, u64>,
    /// Latest revision of every action seen (unless the writer was told to
    /// keep only the [`ActionTally`]: a long run would hold every action).
    pub actions: BTreeMap<String, (ActionRow, i64)>,
    /// Totals over the latest revision of every action, in bounded memory.
    pub tally: ActionTally,
    /// Latest revision of every outcome and bill seen.
    pub outcomes: BTreeMap<String, (OutcomeRow, i64)>,
    pub bills: BTreeMap<(String, i64), (BillRow, i64)>,
}

/// Writes the three tables under `plan.path`.
pub struct ParquetWriter {
    plan: ParquetPlan,
    dataflow: String,
    currency: String,
    metrics: Vec<MetricPlan>,
    run_id: String,
    seq: u64,
    open: HashMap<(String, String), OpenFile>,
    schemas: HashMap<String, SchemaRef>,
    report: WriterReport,
    /// Whether the report keeps every action's latest row (else only the tally).
    keep_action_rows: bool,
    stats: Arc<Stats>,
    /// Each engine output's progress (timely time), for `roll_by = "event_time"`.
    progress: Vec<u64>,
    /// Event time (ms) up to which every output is complete.
    complete_ms: i64,
    /// The event-time roll boundary passed since the last commit.
    boundary_passed: bool,
}

impl ParquetWriter {
    pub fn new(
        plan: ParquetPlan,
        dataflow: &str,
        currency: &str,
        metrics: Vec<MetricPlan>,
        stats: Arc<Stats>,
    ) -> ParquetWriter {
        let mut schemas = HashMap::new();
        schemas.insert("aggregates".to_string(), aggregates_schema(&metrics));
        schemas.insert("actions".to_string(), actions_schema());
        schemas.insert("outcomes".to_string(), outcomes_schema());
        schemas.insert("billing".to_string(), billing_schema());
        schemas.insert("dead_letter".to_string(), dead_letter_schema());
        schemas.insert("gaps".to_string(), gaps_schema());
        schemas.insert("outcome_buckets".to_string(), outcome_buckets_schema());
        ParquetWriter {
            plan,
            dataflow: dataflow.to_string(),
            currency: currency.to_string(),
            metrics,
            run_id: format!("{}-{}", crate::model::now_ms(), std::process::id()),
            seq: 0,
            open: HashMap::new(),
            schemas,
            report: WriterReport::default(),
            keep_action_rows: true,
            stats,
            progress: Vec::new(),
            complete_ms: i64::MIN,
            boundary_passed: false,
        }
    }

    /// Keeps only the [`ActionTally`] of actions in the report, not every
    /// action's latest row (for long runs).
    pub fn tally_actions_only(mut self) -> Self {
        self.keep_action_rows = false;
        self
    }

    fn enabled(&self, table: &str) -> bool {
        self.plan.tables.iter().any(|t| t == table)
    }

    /// Writes one batch of rows, partitioned by date.
    pub fn write(&mut self, batch: SinkBatch) -> Result<(), String> {
        self.write_ref(&batch)
    }

    /// [`ParquetWriter::write`] for a batch shared with other sinks.
    pub fn write_ref(&mut self, batch: &SinkBatch) -> Result<(), String> {
        match batch {
            SinkBatch::Aggregates(rows) => {
                tracing::trace!(target: "plantflow::latency", n = rows.len(), event_time = rows.first().map(|r| r.0.win.window_end), "parquet received");
                self.stats.add_aggregates(rows);
                if !self.enabled("aggregates") {
                    return Ok(());
                }
                let parts = by_date(rows, |r| r.0.win.window_start);
                for (date, rs) in parts {
                    let b = aggregates_batch(&self.schemas["aggregates"], &rs, &self.metrics)?;
                    self.append("aggregates", &date, b)?;
                }
            }
            SinkBatch::Actions(rows) => {
                for (r, _) in rows {
                    self.report.tally.keep(r);
                }
                for r in rows.iter().filter(|_| self.keep_action_rows) {
                    let e = self
                        .report
                        .actions
                        .entry(r.0.action_id.clone())
                        .or_insert_with(|| r.clone());
                    if r.1 >= e.1 {
                        *e = r.clone();
                    }
                }
                if !self.enabled("actions") {
                    return Ok(());
                }
                let parts = by_date(rows, |r| r.0.period_start);
                for (date, rs) in parts {
                    let b = actions_batch(
                        &self.schemas["actions"],
                        &rs,
                        &self.dataflow,
                        &self.currency,
                    )?;
                    self.append("actions", &date, b)?;
                }
            }
            SinkBatch::Outcomes(rows) => {
                for r in rows {
                    self.report
                        .outcomes
                        .insert(r.0.action_id.clone(), r.clone());
                }
                let parts = by_date(rows, |r| r.0.reporting_start);
                for (date, rs) in parts {
                    if self.enabled("outcomes") {
                        let b = outcomes_batch(
                            &self.schemas["outcomes"],
                            &rs,
                            &self.dataflow,
                            &self.currency,
                        )?;
                        self.append("outcomes", &date, b)?;
                    }
                    // The series behind final outcomes (only those carry buckets).
                    let series: Vec<_> =
                        rs.into_iter().filter(|r| !r.0.buckets.is_empty()).collect();
                    if !series.is_empty() && self.enabled("outcome_buckets") {
                        let b = outcome_buckets_batch(
                            &self.schemas["outcome_buckets"],
                            &series,
                            &self.dataflow,
                        )?;
                        self.append("outcome_buckets", &date, b)?;
                    }
                }
            }
            SinkBatch::Billing(rows) => {
                for r in rows {
                    self.report
                        .bills
                        .insert((r.0.site.clone(), r.0.period_start), r.clone());
                }
                if !self.enabled("billing") {
                    return Ok(());
                }
                let parts = by_date(rows, |r| r.0.period_start);
                for (date, rs) in parts {
                    let b = billing_batch(&self.schemas["billing"], &rs, &self.currency)?;
                    self.append("billing", &date, b)?;
                }
            }
            SinkBatch::ActionTotals(totals) => {
                for t in totals {
                    self.report.tally.apply(t);
                }
            }
            SinkBatch::DeadLetters(rows) => {
                if !self.enabled("dead_letter") {
                    return Ok(());
                }
                let parts = by_date(rows, |r| r.received_at);
                for (date, rs) in parts {
                    let b = dead_letter_batch(&self.schemas["dead_letter"], &rs)?;
                    self.append("dead_letter", &date, b)?;
                }
            }
            SinkBatch::Gaps(rows) => {
                if !self.enabled("gaps") {
                    return Ok(());
                }
                let parts = by_date(rows, |r| r.start);
                for (date, rs) in parts {
                    let b = gaps_batch(&self.schemas["gaps"], &rs)?;
                    self.append("gaps", &date, b)?;
                }
            }
            SinkBatch::Progress { source, of, time } => self.progress(*source, *of, *time),
        }
        Ok(())
    }

    /// Notes one output's progress; once every output has passed a multiple
    /// of `roll_interval` in event time, the next [`Self::roll_event_time`] commits.
    fn progress(&mut self, source: usize, of: usize, time: u64) {
        if self.progress.len() != of {
            self.progress = vec![0; of];
        }
        if let Some(p) = self.progress.get_mut(source) {
            *p = (*p).max(time);
        }
        let Some(&min) = self.progress.iter().min() else {
            return;
        };
        // Timely times are watermark epochs + 1: a window ending at `e` is
        // emitted at time `e`, so everything ending before `min` is complete.
        let complete = (min.min(i64::MAX as u64) as i64).saturating_sub(1);
        if complete <= self.complete_ms {
            return;
        }
        let roll = self.plan.roll_interval_ms.max(1) as i64;
        if self.complete_ms != i64::MIN
            && complete.div_euclid(roll) > self.complete_ms.div_euclid(roll)
        {
            self.boundary_passed = true;
        }
        self.complete_ms = complete;
    }

    fn append(&mut self, table: &str, date: &str, batch: RecordBatch) -> Result<(), String> {
        let key = (table.to_string(), date.to_string());
        if !self.open.contains_key(&key) {
            let f = self.create(table, date)?;
            self.open.insert(key.clone(), f);
        }
        let n = batch.num_rows() as u64;
        *self.report.rows.entry(table.to_string()).or_default() += n;
        let f = self.open.get_mut(&key).expect("inserted above");
        f.writer
            .write(&batch)
            .map_err(|e| format!("writing {}: {e}", f.tmp.display()))?;
        f.rows += n;
        let size = (f.writer.bytes_written() + f.writer.in_progress_size()) as u64;
        if f.rows >= self.plan.roll_rows || size >= self.plan.roll_bytes {
            self.commit(&key)?;
        }
        Ok(())
    }

    fn create(&mut self, table: &str, date: &str) -> Result<OpenFile, String> {
        let dir = self.plan.path.join(table).join(format!("date={date}"));
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        self.seq += 1;
        let name = format!("part-{}-{:05}.parquet", self.run_id, self.seq);
        let target = dir.join(&name);
        let tmp = dir.join(format!(".{name}.inprogress"));
        let file =
            File::create(&tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .set_max_row_group_row_count(Some(self.plan.row_group_rows))
            .build();
        let writer = ArrowWriter::try_new(file, self.schemas[table].clone(), Some(props))
            .map_err(|e| format!("cannot start {}: {e}", tmp.display()))?;
        Ok(OpenFile {
            writer,
            tmp,
            target,
            rows: 0,
            opened: Instant::now(),
        })
    }

    fn commit(&mut self, key: &(String, String)) -> Result<(), String> {
        if let Some(f) = self.open.remove(key) {
            f.writer
                .close()
                .map_err(|e| format!("finishing {}: {e}", f.tmp.display()))?;
            std::fs::rename(&f.tmp, &f.target).map_err(|e| {
                format!(
                    "renaming {} to {}: {e}",
                    f.tmp.display(),
                    f.target.display()
                )
            })?;
            self.report.files += 1;
        }
        Ok(())
    }

    /// Commits every open file once every engine output has passed an
    /// event-time roll boundary (`roll_by = "event_time"`), so the rows of
    /// one window close from every worker go into the same file.
    pub fn roll_event_time(&mut self) -> Result<(), String> {
        if !self.plan.roll_event_time || !self.boundary_passed {
            return Ok(());
        }
        self.boundary_passed = false;
        let keys: Vec<_> = self.open.keys().cloned().collect();
        for k in keys {
            self.commit(&k)?;
        }
        tracing::trace!(target: "plantflow::latency", event_time = self.complete_ms, "parquet committed");
        Ok(())
    }

    /// Commits files older than `roll_interval`.
    pub fn roll_aged(&mut self) -> Result<(), String> {
        if self.plan.roll_interval_ms == 0 || self.plan.roll_event_time {
            return Ok(());
        }
        let limit = Duration::from_millis(self.plan.roll_interval_ms);
        let aged: Vec<_> = self
            .open
            .iter()
            .filter(|(_, f)| f.opened.elapsed() >= limit)
            .map(|(k, _)| k.clone())
            .collect();
        for k in aged {
            self.commit(&k)?;
        }
        Ok(())
    }

    /// Commits everything still open.
    pub fn finish(mut self) -> Result<WriterReport, String> {
        let keys: Vec<_> = self.open.keys().cloned().collect();
        for k in keys {
            self.commit(&k)?;
        }
        Ok(self.report)
    }
}

/// The writer loop: runs until every sender is gone, then commits all files.
pub fn run_writer<B: std::borrow::Borrow<SinkBatch>>(
    rx: Receiver<B>,
    mut writer: ParquetWriter,
) -> Result<WriterReport, String> {
    let tick = Duration::from_millis(100);
    loop {
        match rx.recv_timeout(tick) {
            Ok(batch) => {
                writer.write_ref(batch.borrow())?;
                // Drain what is queued before committing on event time.
                while let Ok(batch) = rx.try_recv() {
                    writer.write_ref(batch.borrow())?;
                }
                writer.roll_event_time()?;
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        writer.roll_aged()?;
    }
    writer.finish()
}
