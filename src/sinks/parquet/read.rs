//! Reading the lake back: the latest revision of every key in `actions`,
//! `outcomes`, `outcome_buckets` and `billing`.
//!
//! Files are found as `<lake>/<table>/**/<name>.parquet`; hidden entries
//! (the writer's `.part-….inprogress` files, editor droppings) are skipped.
//! Columns are looked up by name, so a table that gains columns keeps
//! reading; a missing optional column reads as empty / zero / null. A file
//! that is not Parquet, a required column that is missing or of the wrong
//! type, or a null where the writer never writes one is an error naming the
//! file (and row), never a panic.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array, StringArray,
    TimestampMillisecondArray,
};
use arrow::datatypes::{DataType, Float64Type, Int64Type, TimeUnit, TimestampMillisecondType};
use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::model::tables::{self, Table};

/// The latest revision of one action (`actions` table). Times are epoch ms, UTC.
#[derive(Clone, Debug, PartialEq)]
pub struct ActionView {
    pub action_id: String,
    pub dataflow: String,
    pub rule: String,
    pub site: String,
    pub line: String,
    pub asset: String,
    pub owner: String,
    pub action_type: String,
    pub value_category: String,
    pub category: String,
    pub value: f64,
    pub currency: String,
    pub severity: String,
    pub period_start: i64,
    pub period_end: i64,
    pub status: String,
    /// The raw evidence JSON.
    pub evidence: String,
    pub revision: i64,
    pub findings: i64,
    pub status_at: i64,
    pub status_by: String,
    pub status_note: String,
}

/// The latest revision of one verification (`outcomes` table). Times are epoch ms, UTC;
/// ratios (`r2`, `cv_rmse`, `nmbe`, `fractional_savings`, `fsu_*`) are fractions.
#[derive(Clone, Debug, PartialEq)]
pub struct OutcomeView {
    pub action_id: String,
    pub dataflow: String,
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
    pub currency: String,
    pub fractional_savings: Option<f64>,
    pub fsu_68: Option<f64>,
    pub fsu_90: Option<f64>,
    pub verdict: String,
    pub reason: String,
    pub is_final: bool,
    pub computed_at: i64,
    pub revision: i64,
}

impl ActionView {
    /// The row as the engine sent it, and its revision.
    pub fn into_row(self) -> (crate::model::ActionRow, i64) {
        let row = crate::model::ActionRow {
            action_id: self.action_id,
            rule: self.rule,
            site: self.site,
            line: self.line,
            asset: self.asset,
            owner: self.owner,
            action_type: self.action_type,
            value_category: self.value_category,
            value: crate::model::F64(self.value),
            severity: self.severity,
            period_start: self.period_start,
            period_end: self.period_end,
            status: self.status,
            evidence: self.evidence,
            category: self.category,
            findings: self.findings,
            status_at: self.status_at,
            status_by: self.status_by,
            status_note: self.status_note,
        };
        (row, self.revision)
    }
}

impl OutcomeView {
    /// The row as the engine sent it (without its buckets), and its revision.
    pub fn into_row(self) -> (crate::model::OutcomeRow, i64) {
        let row = crate::model::OutcomeRow {
            action_id: self.action_id,
            rule: self.rule,
            site: self.site,
            asset: self.asset,
            baseline_start: self.baseline_start,
            baseline_end: self.baseline_end,
            reporting_start: self.reporting_start,
            reporting_end: self.reporting_end,
            model: self.model,
            n_baseline: self.n_baseline,
            n_reporting: self.n_reporting,
            r2: self.r2,
            cv_rmse: self.cv_rmse,
            nmbe: self.nmbe,
            baseline_kwh: self.baseline_kwh,
            actual_kwh: self.actual_kwh,
            avoided_kwh: self.avoided_kwh,
            avoided_cost: self.avoided_cost,
            fractional_savings: self.fractional_savings,
            fsu_68: self.fsu_68,
            fsu_90: self.fsu_90,
            verdict: self.verdict,
            reason: self.reason,
            is_final: self.is_final,
            computed_at: self.computed_at,
            buckets: Vec::new(),
        };
        (row, self.revision)
    }
}

/// One bucket of the series behind a final outcome (`outcome_buckets` table).
#[derive(Clone, Debug, PartialEq)]
pub struct BucketView {
    pub action_id: String,
    pub bucket_start: i64,
    pub bucket_end: i64,
    /// `baseline` or `reporting`.
    pub period: String,
    pub units: f64,
    pub measured_kwh: f64,
    pub predicted_kwh: f64,
    pub cost: f64,
    pub revision: i64,
}

/// The latest revision of one billing period of a site (`billing` table).
#[derive(Clone, Debug, PartialEq)]
pub struct BillView {
    pub site: String,
    pub period_start: i64,
    pub period_end: i64,
    pub energy_kwh: f64,
    pub energy_cost: f64,
    pub peak_kw: f64,
    pub demand_cost: f64,
    pub total_cost: f64,
    pub peak_shave_kw: f64,
    pub peak_shave_value: f64,
    pub currency: String,
    pub is_final: bool,
    pub revision: i64,
}

/// The `actions` table must exist: it is what makes a directory a lake.
pub(crate) fn check_lake(lake: &Path) -> Result<(), String> {
    if lake.join("actions").is_dir() {
        Ok(())
    } else {
        Err(format!(
            "no plantflow lake at {} (no actions/ table)",
            lake.display()
        ))
    }
}

/// The latest revision of every action, by value (descending), then id.
pub fn latest_actions(lake: &Path) -> Result<Vec<ActionView>, String> {
    check_lake(lake)?;
    let mut rows = Vec::new();
    for_each_batch(lake, &tables::ACTIONS, |b| {
        let id = b.str_req("action_id")?;
        let dataflow = b.str_req("dataflow")?;
        let rule = b.str_req("rule")?;
        let site = b.str_opt("site")?;
        let line = b.str_opt("line")?;
        let asset = b.str_opt("asset")?;
        let owner = b.str_req("owner")?;
        let action_type = b.str_opt("action_type")?;
        let value_category = b.str_opt("value_category")?;
        let category = b.str_opt("category")?;
        let value = b.f64_col("value", true)?;
        let currency = b.str_req("currency")?;
        let severity = b.str_opt("severity")?;
        let period_start = b.ts_col("period_start", true)?;
        let period_end = b.ts_col("period_end", true)?;
        let status = b.str_req("status")?;
        let evidence = b.str_opt("evidence")?;
        let revision = b.i64_col("revision", true)?;
        let findings = b.i64_col("findings", false)?;
        let status_at = b.ts_col("status_at", false)?;
        let status_by = b.str_opt("status_by")?;
        let status_note = b.str_opt("status_note")?;
        for i in 0..b.rows() {
            rows.push(ActionView {
                action_id: b.key(&id, i, "action_id")?,
                dataflow: text(&dataflow, i),
                rule: text(&rule, i),
                site: text(&site, i),
                line: text(&line, i),
                asset: text(&asset, i),
                owner: text(&owner, i),
                action_type: text(&action_type, i),
                value_category: text(&value_category, i),
                category: text(&category, i),
                value: b.req(&value, i, "value")?,
                currency: text(&currency, i),
                severity: text(&severity, i),
                period_start: b.req(&period_start, i, "period_start")?,
                period_end: b.req(&period_end, i, "period_end")?,
                status: text(&status, i),
                evidence: text(&evidence, i),
                revision: b.req(&revision, i, "revision")?,
                findings: opt(&findings, i).unwrap_or(0),
                status_at: opt(&status_at, i).unwrap_or(0),
                status_by: text(&status_by, i),
                status_note: text(&status_note, i),
            });
        }
        Ok(())
    })?;
    let mut out = keep_latest(rows, |a| a.action_id.clone(), |a| a.revision);
    out.sort_by(|a, b| {
        b.value
            .total_cmp(&a.value)
            .then_with(|| a.action_id.cmp(&b.action_id))
    });
    Ok(out)
}

/// The latest revision of every outcome, by action id. No `outcomes/` table: empty.
pub fn latest_outcomes(lake: &Path) -> Result<Vec<OutcomeView>, String> {
    check_lake(lake)?;
    let mut rows = Vec::new();
    for_each_batch(lake, &tables::OUTCOMES, |b| {
        let id = b.str_req("action_id")?;
        let dataflow = b.str_opt("dataflow")?;
        let rule = b.str_req("rule")?;
        let site = b.str_opt("site")?;
        let asset = b.str_req("asset")?;
        let baseline_start = b.ts_col("baseline_start", true)?;
        let baseline_end = b.ts_col("baseline_end", true)?;
        let reporting_start = b.ts_col("reporting_start", true)?;
        let reporting_end = b.ts_col("reporting_end", true)?;
        let model = b.str_opt("model")?;
        let n_baseline = b.i64_col("n_baseline", false)?;
        let n_reporting = b.i64_col("n_reporting", false)?;
        let r2 = b.f64_col("r2", false)?;
        let cv_rmse = b.f64_col("cv_rmse", false)?;
        let nmbe = b.f64_col("nmbe", false)?;
        let baseline_kwh = b.f64_col("baseline_kwh", false)?;
        let actual_kwh = b.f64_col("actual_kwh", false)?;
        let avoided_kwh = b.f64_col("avoided_kwh", false)?;
        let avoided_cost = b.f64_col("avoided_cost", false)?;
        let currency = b.str_opt("currency")?;
        let fractional = b.f64_col("fractional_savings", false)?;
        let fsu_68 = b.f64_col("fsu_68", false)?;
        let fsu_90 = b.f64_col("fsu_90", false)?;
        let verdict = b.str_req("verdict")?;
        let reason = b.str_opt("reason")?;
        let is_final = b.bool_col("final")?;
        let computed_at = b.ts_col("computed_at", false)?;
        let revision = b.i64_col("revision", true)?;
        for i in 0..b.rows() {
            rows.push(OutcomeView {
                action_id: b.key(&id, i, "action_id")?,
                dataflow: text(&dataflow, i),
                rule: text(&rule, i),
                site: text(&site, i),
                asset: text(&asset, i),
                baseline_start: b.req(&baseline_start, i, "baseline_start")?,
                baseline_end: b.req(&baseline_end, i, "baseline_end")?,
                reporting_start: b.req(&reporting_start, i, "reporting_start")?,
                reporting_end: b.req(&reporting_end, i, "reporting_end")?,
                model: text(&model, i),
                n_baseline: opt(&n_baseline, i).unwrap_or(0),
                n_reporting: opt(&n_reporting, i).unwrap_or(0),
                r2: opt(&r2, i),
                cv_rmse: opt(&cv_rmse, i),
                nmbe: opt(&nmbe, i),
                baseline_kwh: opt(&baseline_kwh, i),
                actual_kwh: opt(&actual_kwh, i).unwrap_or(0.0),
                avoided_kwh: opt(&avoided_kwh, i),
                avoided_cost: opt(&avoided_cost, i),
                currency: text(&currency, i),
                fractional_savings: opt(&fractional, i),
                fsu_68: opt(&fsu_68, i),
                fsu_90: opt(&fsu_90, i),
                verdict: text(&verdict, i),
                reason: text(&reason, i),
                is_final: is_final
                    .as_ref()
                    .filter(|a| !a.is_null(i))
                    .map(|a| a.value(i))
                    .unwrap_or(false),
                computed_at: opt(&computed_at, i).unwrap_or(0),
                revision: b.req(&revision, i, "revision")?,
            });
        }
        Ok(())
    })?;
    let mut out = keep_latest(rows, |o| o.action_id.clone(), |o| o.revision);
    out.sort_by(|a, b| a.action_id.cmp(&b.action_id));
    Ok(out)
}

/// The series behind each action's latest final outcome: only the rows whose
/// `revision` is the highest present for that action, by `bucket_start`.
pub fn latest_buckets(lake: &Path) -> Result<BTreeMap<String, Vec<BucketView>>, String> {
    check_lake(lake)?;
    let mut rows = Vec::new();
    for_each_batch(lake, &tables::OUTCOME_BUCKETS, |b| {
        let id = b.str_req("action_id")?;
        let bucket_start = b.ts_col("bucket_start", true)?;
        let bucket_end = b.ts_col("bucket_end", true)?;
        let period = b.str_req("period")?;
        let units = b.f64_col("units", false)?;
        let measured = b.f64_col("measured_kwh", true)?;
        let predicted = b.f64_col("predicted_kwh", true)?;
        let cost = b.f64_col("cost", false)?;
        let revision = b.i64_col("revision", true)?;
        for i in 0..b.rows() {
            rows.push(BucketView {
                action_id: b.key(&id, i, "action_id")?,
                bucket_start: b.req(&bucket_start, i, "bucket_start")?,
                bucket_end: b.req(&bucket_end, i, "bucket_end")?,
                period: text(&period, i),
                units: opt(&units, i).unwrap_or(0.0),
                measured_kwh: b.req(&measured, i, "measured_kwh")?,
                predicted_kwh: b.req(&predicted, i, "predicted_kwh")?,
                cost: opt(&cost, i).unwrap_or(0.0),
                revision: b.req(&revision, i, "revision")?,
            });
        }
        Ok(())
    })?;
    let mut top: HashMap<String, i64> = HashMap::new();
    for r in &rows {
        let t = top.entry(r.action_id.clone()).or_insert(r.revision);
        *t = (*t).max(r.revision);
    }
    let mut out: BTreeMap<String, Vec<BucketView>> = BTreeMap::new();
    for r in rows {
        if top.get(&r.action_id) == Some(&r.revision) {
            out.entry(r.action_id.clone()).or_default().push(r);
        }
    }
    for series in out.values_mut() {
        series.sort_by(|a, b| {
            a.bucket_start
                .cmp(&b.bucket_start)
                .then_with(|| a.period.cmp(&b.period))
        });
        // The same bucket twice (a file copied by hand): keep one.
        series.dedup_by(|a, b| a.bucket_start == b.bucket_start && a.period == b.period);
    }
    Ok(out)
}

/// The latest revision of every billing period, by site then period start.
pub fn latest_billing(lake: &Path) -> Result<Vec<BillView>, String> {
    check_lake(lake)?;
    let mut rows = Vec::new();
    for_each_batch(lake, &tables::BILLING, |b| {
        let site = b.str_req("site")?;
        let period_start = b.ts_col("period_start", true)?;
        let period_end = b.ts_col("period_end", true)?;
        let energy_kwh = b.f64_col("energy_kwh", false)?;
        let energy_cost = b.f64_col("energy_cost", false)?;
        let peak_kw = b.f64_col("peak_kw", false)?;
        let demand_cost = b.f64_col("demand_cost", false)?;
        let total_cost = b.f64_col("total_cost", false)?;
        let peak_shave_kw = b.f64_col("peak_shave_kw", false)?;
        let peak_shave_value = b.f64_col("peak_shave_value", false)?;
        let currency = b.str_opt("currency")?;
        let is_final = b.bool_col("final")?;
        let revision = b.i64_col("revision", true)?;
        let num = |a: &Option<Float64Array>, i| opt(a, i).unwrap_or(0.0);
        for i in 0..b.rows() {
            rows.push(BillView {
                site: b.key(&site, i, "site")?,
                period_start: b.req(&period_start, i, "period_start")?,
                period_end: b.req(&period_end, i, "period_end")?,
                energy_kwh: num(&energy_kwh, i),
                energy_cost: num(&energy_cost, i),
                peak_kw: num(&peak_kw, i),
                demand_cost: num(&demand_cost, i),
                total_cost: num(&total_cost, i),
                peak_shave_kw: num(&peak_shave_kw, i),
                peak_shave_value: num(&peak_shave_value, i),
                currency: text(&currency, i),
                is_final: is_final
                    .as_ref()
                    .filter(|a| !a.is_null(i))
                    .map(|a| a.value(i))
                    .unwrap_or(false),
                revision: b.req(&revision, i, "revision")?,
            });
        }
        Ok(())
    })?;
    let mut out = keep_latest(rows, |r| (r.site.clone(), r.period_start), |r| r.revision);
    out.sort_by(|a, b| {
        a.site
            .cmp(&b.site)
            .then_with(|| a.period_start.cmp(&b.period_start))
    });
    Ok(out)
}

/// One row per key: the highest revision wins (the first one read on a tie).
fn keep_latest<T, K: std::hash::Hash + Eq>(
    rows: Vec<T>,
    key: impl Fn(&T) -> K,
    revision: impl Fn(&T) -> i64,
) -> Vec<T> {
    let mut best: HashMap<K, T> = HashMap::new();
    for r in rows {
        let k = key(&r);
        match best.get(&k) {
            Some(old) if revision(old) >= revision(&r) => {}
            _ => {
                best.insert(k, r);
            }
        }
    }
    best.into_values().collect()
}

/// Every data file of a table, sorted; no table directory: none.
pub(crate) fn table_files(lake: &Path, table: &str) -> Result<Vec<PathBuf>, String> {
    let dir = lake.join(table);
    if !dir.exists() {
        return Ok(Vec::new());
    }
    if !dir.is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    // A Delta table: the files its log names.
    if let Some(mut files) = super::delta::live_files(&dir)? {
        files.sort();
        return Ok(files);
    }
    let mut out = Vec::new();
    walk(&dir, 0, &mut out)?;
    out.sort();
    Ok(out)
}

fn walk(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> Result<(), String> {
    // `<table>/date=…/part-….parquet` is depth 1; a little slack for other partitionings.
    if depth > 4 {
        return Ok(());
    }
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        // Hidden: staged files, and the `_delta_log` of a Delta table.
        if name.starts_with('.') || name.starts_with('_') {
            continue;
        }
        let path = entry.path();
        let kind = entry
            .file_type()
            .map_err(|e| format!("cannot stat {}: {e}", path.display()))?;
        if kind.is_dir() {
            walk(&path, depth + 1, out)?;
        } else if name.ends_with(".parquet") {
            out.push(path);
        }
    }
    Ok(())
}

/// Calls `f` for every record batch of every file of `table`.
fn for_each_batch(
    lake: &Path,
    table: &'static Table,
    mut f: impl FnMut(&Batch) -> Result<(), String>,
) -> Result<(), String> {
    for path in table_files(lake, table.name)? {
        let file = File::open(&path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(|e| format!("{}: not a readable Parquet file: {e}", path.display()))?
            .build()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let mut first_row = 0;
        for batch in reader {
            let batch = batch.map_err(|e| format!("{}: {e}", path.display()))?;
            let b = Batch {
                batch: &batch,
                path: &path,
                table,
                first_row,
            };
            f(&b)?;
            first_row += batch.num_rows();
        }
    }
    Ok(())
}

/// One record batch with the file it came from, for column lookups and errors.
struct Batch<'a> {
    batch: &'a RecordBatch,
    path: &'a Path,
    /// The table as the writer describes it: the reader asks only for its columns.
    table: &'static Table,
    first_row: usize,
}

impl Batch<'_> {
    fn rows(&self) -> usize {
        self.batch.num_rows()
    }

    fn err(&self, what: String) -> String {
        format!("{} table, {}: {what}", self.table.name, self.path.display())
    }

    fn column(&self, name: &str, required: bool) -> Result<Option<&ArrayRef>, String> {
        debug_assert!(
            self.table.column(name).is_some(),
            "the report reads `{name}`, which the {} table does not describe",
            self.table.name
        );
        match self.batch.column_by_name(name) {
            Some(c) => Ok(Some(c)),
            None if required => Err(self.err(format!("no `{name}` column"))),
            None => Ok(None),
        }
    }

    fn wrong_type(&self, name: &str, got: &DataType, want: &str) -> String {
        self.err(format!("column `{name}` is {got}, expected {want}"))
    }

    fn str_req(&self, name: &str) -> Result<Option<StringArray>, String> {
        self.strings(name, true)
    }

    fn str_opt(&self, name: &str) -> Result<Option<StringArray>, String> {
        self.strings(name, false)
    }

    fn strings(&self, name: &str, required: bool) -> Result<Option<StringArray>, String> {
        let Some(c) = self.column(name, required)? else {
            return Ok(None);
        };
        if let Some(s) = c.as_string_opt::<i32>() {
            return Ok(Some(s.clone()));
        }
        let stringy = match c.data_type() {
            DataType::LargeUtf8 | DataType::Utf8View => true,
            DataType::Dictionary(_, v) => matches!(**v, DataType::Utf8 | DataType::LargeUtf8),
            _ => false,
        };
        if !stringy {
            return Err(self.wrong_type(name, c.data_type(), "a string"));
        }
        let cast = arrow::compute::cast(c, &DataType::Utf8)
            .map_err(|e| self.err(format!("column `{name}`: {e}")))?;
        Ok(cast.as_string_opt::<i32>().cloned())
    }

    fn f64_col(&self, name: &str, required: bool) -> Result<Option<Float64Array>, String> {
        let Some(c) = self.column(name, required)? else {
            return Ok(None);
        };
        if let Some(a) = c.as_primitive_opt::<Float64Type>() {
            return Ok(Some(a.clone()));
        }
        let t = c.data_type();
        if !(t.is_integer() || t.is_floating()) {
            return Err(self.wrong_type(name, t, "a number"));
        }
        let cast = arrow::compute::cast(c, &DataType::Float64)
            .map_err(|e| self.err(format!("column `{name}`: {e}")))?;
        Ok(cast.as_primitive_opt::<Float64Type>().cloned())
    }

    fn i64_col(&self, name: &str, required: bool) -> Result<Option<Int64Array>, String> {
        let Some(c) = self.column(name, required)? else {
            return Ok(None);
        };
        if let Some(a) = c.as_primitive_opt::<Int64Type>() {
            return Ok(Some(a.clone()));
        }
        let t = c.data_type();
        if !t.is_integer() {
            return Err(self.wrong_type(name, t, "an integer"));
        }
        let cast = arrow::compute::cast(c, &DataType::Int64)
            .map_err(|e| self.err(format!("column `{name}`: {e}")))?;
        Ok(cast.as_primitive_opt::<Int64Type>().cloned())
    }

    /// A timestamp column as epoch milliseconds (other units are converted).
    fn ts_col(
        &self,
        name: &str,
        required: bool,
    ) -> Result<Option<TimestampMillisecondArray>, String> {
        let Some(c) = self.column(name, required)? else {
            return Ok(None);
        };
        if let Some(a) = c.as_primitive_opt::<TimestampMillisecondType>() {
            return Ok(Some(a.clone()));
        }
        let DataType::Timestamp(_, tz) = c.data_type() else {
            return Err(self.wrong_type(name, c.data_type(), "a timestamp"));
        };
        let cast = arrow::compute::cast(c, &DataType::Timestamp(TimeUnit::Millisecond, tz.clone()))
            .map_err(|e| self.err(format!("column `{name}`: {e}")))?;
        Ok(cast.as_primitive_opt::<TimestampMillisecondType>().cloned())
    }

    fn bool_col(&self, name: &str) -> Result<Option<BooleanArray>, String> {
        let Some(c) = self.column(name, false)? else {
            return Ok(None);
        };
        match c.as_boolean_opt() {
            Some(a) => Ok(Some(a.clone())),
            None => Err(self.wrong_type(name, c.data_type(), "a boolean")),
        }
    }

    /// A value the writer never leaves null: null (or the column missing) is an error.
    fn req<A: Primitive>(&self, a: &Option<A>, i: usize, name: &str) -> Result<A::Native, String> {
        match a {
            Some(a) if !a.is_null(i) => Ok(a.get(i)),
            _ => Err(self.err(format!("row {}: `{name}` is null", self.first_row + i))),
        }
    }

    /// A key column: must be present and not null (empty is allowed).
    fn key(&self, a: &Option<StringArray>, i: usize, name: &str) -> Result<String, String> {
        match a {
            Some(a) if !a.is_null(i) => Ok(a.value(i).to_string()),
            _ => Err(self.err(format!("row {}: `{name}` is null", self.first_row + i))),
        }
    }
}

/// The primitive arrays read here, for [`Batch::req`] and [`opt`].
trait Primitive: Array {
    type Native: Copy;
    fn get(&self, i: usize) -> Self::Native;
}

impl Primitive for Float64Array {
    type Native = f64;
    fn get(&self, i: usize) -> f64 {
        self.value(i)
    }
}

impl Primitive for Int64Array {
    type Native = i64;
    fn get(&self, i: usize) -> i64 {
        self.value(i)
    }
}

impl Primitive for TimestampMillisecondArray {
    type Native = i64;
    fn get(&self, i: usize) -> i64 {
        self.value(i)
    }
}

/// A nullable value: `None` when null or when the column is absent.
fn opt<A: Primitive>(a: &Option<A>, i: usize) -> Option<A::Native> {
    a.as_ref().filter(|a| !a.is_null(i)).map(|a| a.get(i))
}

/// A string cell; null or an absent column reads as empty.
fn text(a: &Option<StringArray>, i: usize) -> String {
    match a {
        Some(a) if !a.is_null(i) => a.value(i).to_string(),
        _ => String::new(),
    }
}
