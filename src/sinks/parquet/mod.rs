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

pub mod commit;
pub mod config;
pub mod delta;
pub mod read;
pub mod ship;
mod tables;
mod writer;

pub use config::ParquetPlan;

/// How the lake's files are written: zstd, and dictionaries for text
/// columns only (names repeat; measurements rarely do, and a dictionary
/// that overflows costs a hash of every value before falling back).
pub fn file_properties(schema: &Schema, row_group_rows: Option<usize>) -> WriterProperties {
    let mut b = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_dictionary_enabled(false);
    if let Some(rows) = row_group_rows {
        b = b.set_max_row_group_row_count(Some(rows));
    }
    for f in schema.fields() {
        if matches!(f.data_type(), DataType::Utf8 | DataType::LargeUtf8) {
            let col = parquet::schema::types::ColumnPath::from(f.name().as_str());
            b = b.set_column_dictionary_enabled(col, true);
        }
    }
    b.build()
}
pub use tables::*;
pub use writer::*;

use super::tally::ActionTally;
use crate::config::MetricPlan;
use crate::expr::ColType;
use crate::model::{ActionRow, BillRow, DeadLetter, Enriched, Gap, OutcomeRow, Scalar};
use crate::model::{SinkBatch, Stamped};
use crate::stats::Stats;
