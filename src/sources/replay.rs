//! `replay`: historian exports as CSV or Parquet (`ts,tag,value,quality`).
//!
//! Runs on a tokio blocking thread. With `--follow`, a CSV file is tailed:
//! new complete lines are read as they are appended, until shutdown.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::time::Duration;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Float64Type, Int64Type, UInt64Type};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::normalize::{Normalizer, SourceCtx};
use crate::config::{ReplayFormat, ReplayPlan};
use crate::model::Quality;

/// Reads the whole source (or tails it), then ends it.
pub fn run(plan: &ReplayPlan, ctx: SourceCtx) -> Result<(), String> {
    let mut n = Normalizer::new(ctx, plan.batch_rows);
    let r = match plan.format {
        ReplayFormat::Csv => run_csv(plan, &mut n),
        ReplayFormat::Parquet => run_parquet(plan, &mut n),
    };
    n.end();
    r
}

fn run_csv(plan: &ReplayPlan, n: &mut Normalizer) -> Result<(), String> {
    let path = &plan.path;
    let file = File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut header = String::new();
    reader
        .read_line(&mut header)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let cols: Vec<&str> = header
        .trim_end()
        .split(',')
        .map(|c| c.trim().trim_matches('"'))
        .collect();
    let pos = |name: &str| cols.iter().position(|c| *c == name);
    let (Some(its), Some(itag), Some(ival)) = (pos("ts"), pos("tag"), pos("value")) else {
        return Err(format!(
            "{}: the header must name `ts`, `tag` and `value` (and optionally `quality`), found `{}`",
            path.display(),
            header.trim_end()
        ));
    };
    let iq = pos("quality");
    let width = cols.len();
    if width > 16 {
        return Err(format!(
            "{}: at most 16 columns are supported, found {width}",
            path.display()
        ));
    }
    let mut line = String::new();
    let poll = Duration::from_millis(plan.poll_interval_ms.max(10));
    loop {
        if n.ctx().stopped() {
            break;
        }
        reader
            .read_line(&mut line)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let complete = line.ends_with('\n');
        if !complete && n.ctx().follow {
            // End of what is there now; a partial last line waits for its end.
            n.flush();
            n.ctx().ingest.settle();
            std::thread::sleep(poll);
            continue;
        }
        let text = line.trim_end_matches(['\n', '\r']);
        if !text.is_empty() {
            let mut fields = [""; 16];
            let mut count = 0;
            for f in text.split(',') {
                if count < fields.len() {
                    fields[count] = f.trim_matches('"');
                }
                count += 1;
            }
            if count != width {
                n.reject(
                    &format!("malformed row ({count} fields, expected {width})"),
                    text.to_string(),
                );
            } else {
                let q = iq.map(|i| fields[i]).unwrap_or("");
                n.text_row(fields[its], fields[itag], fields[ival], q, &|| {
                    text.to_string()
                });
            }
        }
        line.clear();
        if !complete {
            break;
        }
    }
    Ok(())
}

fn run_parquet(plan: &ReplayPlan, n: &mut Normalizer) -> Result<(), String> {
    let path = &plan.path;
    let file = File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| format!("{}: not a Parquet file: {e}", path.display()))?
        .with_batch_size(plan.batch_rows.max(1024))
        .build()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    for batch in reader {
        if n.ctx().stopped() {
            break;
        }
        let batch = batch.map_err(|e| format!("{}: {e}", path.display()))?;
        let col = |name: &str, to: &DataType| -> Result<arrow::array::ArrayRef, String> {
            let c = batch
                .column_by_name(name)
                .ok_or_else(|| format!("{}: no `{name}` column", path.display()))?;
            let c = if let DataType::Timestamp(_, _) = c.data_type() {
                arrow::compute::cast(
                    c,
                    &DataType::Timestamp(arrow::datatypes::TimeUnit::Millisecond, None),
                )
                .and_then(|c| arrow::compute::cast(&c, &DataType::Int64))
            } else {
                arrow::compute::cast(c, to)
            };
            c.map_err(|e| format!("{}: column `{name}`: {e}", path.display()))
        };
        let ts = col("ts", &DataType::Int64)?;
        let tag = col("tag", &DataType::Utf8)?;
        let value = col("value", &DataType::Float64)?;
        let quality = match batch.column_by_name("quality") {
            Some(_) => Some(col("quality", &DataType::UInt64)?),
            None => None,
        };
        let ts = ts.as_primitive::<Int64Type>();
        let tag = tag.as_string::<i32>();
        let value = value.as_primitive::<Float64Type>();
        let quality = quality.as_ref().map(|q| q.as_primitive::<UInt64Type>());
        for i in 0..batch.num_rows() {
            let raw = || {
                format!(
                    "{},{},{},{}",
                    ts.value(i),
                    tag.value(i),
                    value.value(i),
                    quality.map(|q| q.value(i)).unwrap_or(0)
                )
            };
            if ts.is_null(i) || tag.is_null(i) || value.is_null(i) {
                n.reject("null field", raw());
                continue;
            }
            let q = quality
                .filter(|q| !q.is_null(i))
                .map(|q| q.value(i))
                .unwrap_or(0);
            let Some(q) = Quality::from_code(q) else {
                n.reject("invalid quality", raw());
                continue;
            };
            n.row(ts.value(i), tag.value(i), value.value(i), q, &raw);
        }
    }
    Ok(())
}
