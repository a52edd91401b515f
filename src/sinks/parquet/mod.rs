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
pub use tables::*;
pub use writer::*;

use super::tally::ActionTally;
use crate::config::MetricPlan;
use crate::expr::ColType;
use crate::model::{ActionRow, BillRow, DeadLetter, Enriched, Gap, OutcomeRow, Scalar};
use crate::model::{SinkBatch, Stamped};
use crate::stats::Stats;
