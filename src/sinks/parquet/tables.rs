//! Each lake table's Arrow schema and the builders that turn rows into its
//! record batches (one batch per table and date partition).

use super::*;
use crate::model::tables::{self, ColKind, Table};
use crate::model::TagQualityRow;

/// Each lake table's Arrow schema, by name (the aggregates' columns follow
/// the dataflow's metrics).
pub fn table_schemas(metrics: &[MetricPlan]) -> HashMap<String, SchemaRef> {
    HashMap::from([
        ("aggregates".to_string(), aggregates_schema(metrics)),
        ("actions".to_string(), actions_schema()),
        ("outcomes".to_string(), outcomes_schema()),
        ("billing".to_string(), billing_schema()),
        ("dead_letter".to_string(), dead_letter_schema()),
        ("gaps".to_string(), gaps_schema()),
        ("tag_quality".to_string(), tag_quality_schema()),
        ("outcome_buckets".to_string(), outcome_buckets_schema()),
    ])
}

pub(super) fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

pub(super) fn outcome_buckets_batch(
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

pub(super) fn gaps_batch(schema: &SchemaRef, rows: &[&Gap]) -> Result<RecordBatch, String> {
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

pub(super) fn tag_quality_batch(
    schema: &SchemaRef,
    rows: &[&TagQualityRow],
) -> Result<RecordBatch, String> {
    let opt_ts = |f: fn(&TagQualityRow) -> Option<i64>| -> ArrayRef {
        let mut b = TimestampMillisecondBuilder::new();
        rows.iter().for_each(|r| b.append_option(f(r)));
        Arc::new(b.finish().with_timezone("UTC"))
    };
    let mut interval = Int64Builder::new();
    rows.iter()
        .for_each(|r| interval.append_option(r.interval_ms));
    let cols: Vec<ArrayRef> = vec![
        ts_col(rows.iter().map(|r| r.snapshot_at)),
        str_col(rows.iter().map(|r| r.tag.as_str())),
        str_col(rows.iter().map(|r| r.site.as_str())),
        str_col(rows.iter().map(|r| r.line.as_str())),
        str_col(rows.iter().map(|r| r.asset.as_str())),
        str_col(rows.iter().map(|r| r.kind.as_str())),
        str_col(rows.iter().map(|r| r.unit.as_str())),
        str_col(rows.iter().map(|r| r.status)),
        str_col(rows.iter().map(|r| r.detail.as_str())),
        i64_col(rows.iter().map(|r| r.samples as i64)),
        opt_ts(|r| r.first_ts),
        opt_ts(|r| r.last_ts),
        opt_col(rows.iter().map(|r| r.last_value)),
        opt_col(rows.iter().map(|r| r.min)),
        opt_col(rows.iter().map(|r| r.max)),
        Arc::new(interval.finish()),
        opt_ts(|r| r.unchanged_since),
    ];
    RecordBatch::try_new(schema.clone(), cols)
        .map_err(|e| format!("building a tag_quality batch: {e}"))
}

/// Rows grouped by the Hive `date` partition of their key time.
pub(super) fn by_date<T>(rows: &[T], at: impl Fn(&T) -> i64) -> BTreeMap<String, Vec<&T>> {
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

pub(super) fn date_of(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| "1970-01-01".into())
}

pub(super) fn ts_col(vals: impl Iterator<Item = i64>) -> ArrayRef {
    let mut b = TimestampMillisecondBuilder::new();
    vals.for_each(|v| b.append_value(v));
    Arc::new(b.finish().with_timezone("UTC"))
}

pub(super) fn str_col<'a>(vals: impl Iterator<Item = &'a str>) -> ArrayRef {
    let mut b = StringBuilder::new();
    vals.for_each(|v| b.append_value(v));
    Arc::new(b.finish())
}

pub(super) fn f64_col(vals: impl Iterator<Item = f64>) -> ArrayRef {
    let mut b = Float64Builder::new();
    vals.for_each(|v| b.append_value(v));
    Arc::new(b.finish())
}

pub(super) fn i64_col(vals: impl Iterator<Item = i64>) -> ArrayRef {
    let mut b = Int64Builder::new();
    vals.for_each(|v| b.append_value(v));
    Arc::new(b.finish())
}

pub(super) fn bool_col(vals: impl Iterator<Item = bool>) -> ArrayRef {
    let mut b = BooleanBuilder::new();
    vals.for_each(|v| b.append_value(v));
    Arc::new(b.finish())
}

pub(super) fn aggregates_batch(
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

pub(super) fn actions_batch(
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

pub(super) fn opt_col(vals: impl Iterator<Item = Option<f64>>) -> ArrayRef {
    let mut b = Float64Builder::new();
    vals.for_each(|v| b.append_option(v));
    Arc::new(b.finish())
}

pub(super) fn outcomes_batch(
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

pub(super) fn billing_batch(
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

pub(super) fn dead_letter_batch(
    schema: &SchemaRef,
    rows: &[&DeadLetter],
) -> Result<RecordBatch, String> {
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
        i64_col(rows.iter().map(|d| d.raw_bytes)),
        str_col(rows.iter().map(|d| d.raw_hash.as_str())),
    ];
    RecordBatch::try_new(schema.clone(), cols)
        .map_err(|e| format!("building a dead_letter batch: {e}"))
}

/// The Arrow type of a lake column.
fn arrow_type(kind: ColKind) -> DataType {
    match kind {
        ColKind::Str => DataType::Utf8,
        ColKind::F64 => DataType::Float64,
        ColKind::I64 => DataType::Int64,
        ColKind::Bool => DataType::Boolean,
        ColKind::Ts => ts_type(),
    }
}

fn field(name: &str, kind: ColKind, nullable: bool) -> Field {
    Field::new(name, arrow_type(kind), nullable)
}

/// The Arrow schema of a table as [`crate::model::tables`] describes it,
/// with `metrics` (nullable, by result type) where the table takes them.
fn schema(table: &Table, metrics: &[MetricPlan]) -> SchemaRef {
    let mut fields: Vec<Field> = table
        .columns
        .iter()
        .map(|c| field(c.name, c.kind, c.nullable))
        .collect();
    if let Some(at) = table.metrics_at {
        let extra = metrics.iter().map(|m| {
            let kind = match m.result {
                ColType::Bool => ColKind::Bool,
                ColType::Str => ColKind::Str,
                ColType::Num => ColKind::F64,
            };
            field(&m.name, kind, true)
        });
        fields.splice(at..at, extra);
    }
    Arc::new(Schema::new(fields))
}

/// Schema of the `aggregates` table for a dataflow's metrics.
pub fn aggregates_schema(metrics: &[MetricPlan]) -> SchemaRef {
    schema(&tables::AGGREGATES, metrics)
}

/// Schema of the `actions` table.
pub fn actions_schema() -> SchemaRef {
    schema(&tables::ACTIONS, &[])
}

/// Schema of the `outcomes` table.
pub fn outcomes_schema() -> SchemaRef {
    schema(&tables::OUTCOMES, &[])
}

/// Schema of the `outcome_buckets` table: the series behind each final outcome.
pub fn outcome_buckets_schema() -> SchemaRef {
    schema(&tables::OUTCOME_BUCKETS, &[])
}

/// Schema of the `billing` table.
pub fn billing_schema() -> SchemaRef {
    schema(&tables::BILLING, &[])
}

/// Schema of the `dead_letter` table.
pub fn dead_letter_schema() -> SchemaRef {
    schema(&tables::DEAD_LETTER, &[])
}

/// Schema of the `gaps` table.
pub fn gaps_schema() -> SchemaRef {
    schema(&tables::GAPS, &[])
}

/// Schema of the `tag_quality` table.
pub fn tag_quality_schema() -> SchemaRef {
    schema(&tables::TAG_QUALITY, &[])
}
