//! The `parquet` sink's table in a dataflow file.

use std::path::PathBuf;

use serde::Deserialize;

use crate::config::{strip_type, Loader};
use crate::model::tables::ALL as LAKE_TABLES;

#[derive(Clone, Debug)]
pub struct ParquetPlan {
    pub id: String,
    /// Its table's key in the dataflow (`sinks[0]`), for messages.
    pub key: String,
    pub path: PathBuf,
    pub tables: Vec<String>,
    pub roll_rows: u64,
    pub roll_bytes: u64,
    pub roll_interval_ms: u64,
    /// Commit when the output's event time passes a multiple of
    /// `roll_interval` (`roll_by = "event_time"`), not when a file is that old.
    pub roll_event_time: bool,
    pub row_group_rows: usize,
    /// The most the engine's output may hold waiting for this writer (a
    /// slow disk): past it, the engine stops taking input (`max_queue`).
    pub max_queue_bytes: u64,
    /// Each table is also a Delta Lake table (`format = "delta"`).
    pub delta: bool,
    /// The object store the lake is shipped to (`path = "s3://…"`); `path`
    /// is then the node's local copy (`local`).
    pub remote: Option<String>,
}

#[derive(Deserialize, Debug, schemars::JsonSchema)]
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
    /// `processing_time` (default) or `event_time`.
    #[serde(default)]
    pub roll_by: Option<String>,
    #[serde(default)]
    pub row_group_rows: Option<usize>,
    #[serde(default)]
    pub max_queue: Option<String>,
    /// `parquet` (default): Hive-partitioned Parquet files; `delta`: the
    /// same files, each table a Delta Lake table (a `_delta_log` of commits).
    #[serde(default)]
    pub format: Option<String>,
    /// With an object-storage `path`: the node's local copy of the lake,
    /// written first and shipped commit by commit (default
    /// `.plantflow-lake/<id>`).
    #[serde(default)]
    pub local: Option<String>,
}

const PARQUET_KEYS: &[&str] = &[
    "type",
    "id",
    "path",
    "tables",
    "roll_rows",
    "roll_size",
    "roll_interval",
    "roll_by",
    "row_group_rows",
    "max_queue",
    "format",
    "local",
];

/// Validates a `parquet` sink table at `key`.
pub fn plan(l: &mut Loader<'_>, key: &str, v: toml::Value) -> Option<ParquetPlan> {
    let mut p = l.de::<RawParquetSink>(key, strip_type(v), PARQUET_KEYS)?;
    // `file:///data/lake` is the local directory `/data/lake`.
    if let Some(local) = p.path.strip_prefix("file://") {
        p.path = local.to_string();
    }
    let names: Vec<&str> = LAKE_TABLES.iter().map(|t| t.name).collect();
    let tables = p
        .tables
        .clone()
        .unwrap_or_else(|| names.iter().map(|s| s.to_string()).collect());
    for (j, t) in tables.iter().enumerate() {
        l.one_of(&format!("{key}.tables[{j}]"), t, &names, "table");
    }
    let roll_bytes = match &p.roll_size {
        Some(s) => l
            .size(&format!("{key}.roll_size"), s, (0, "0B"))
            .unwrap_or(0),
        None => 128 << 20,
    };
    let max_queue_bytes = match &p.max_queue {
        Some(s) => l
            .size(&format!("{key}.max_queue"), s, (64 << 10, "64KiB"))
            .unwrap_or(0),
        None => 256 << 20,
    };
    let roll_interval_ms = match &p.roll_interval {
        Some(s) => l.duration(&format!("{key}.roll_interval"), s).unwrap_or(0) as u64,
        None => 300_000,
    };
    let roll_by = p.roll_by.as_deref().unwrap_or("processing_time");
    l.one_of(
        &format!("{key}.roll_by"),
        roll_by,
        &["processing_time", "event_time"],
        "roll_by",
    );
    let format = p.format.as_deref().unwrap_or("parquet");
    let remote = super::ship::is_remote(&p.path).then(|| p.path.trim_end_matches('/').to_string());
    if remote.is_some() && format != "delta" {
        l.at_value(
            &format!("{key}.path"),
            "a lake on object storage is written as Delta tables: bare files cannot be \
             committed atomically on S3"
                .into(),
            Some("add format = \"delta\" to this sink".into()),
        );
    }
    if remote.is_none() && p.local.is_some() {
        l.at_value(
            &format!("{key}.local"),
            "`local` is the local copy of a lake on object storage; this `path` is local".into(),
            Some("remove `local`, or give an s3://, az:// or gs:// path".into()),
        );
    }
    let path = match &remote {
        Some(_) => {
            let default = format!(".plantflow-lake/{}", p.id);
            l.output_path(
                &format!("{key}.local"),
                p.local.as_deref().unwrap_or(&default),
            )
        }
        None => l.output_path(&format!("{key}.path"), &p.path),
    };
    l.one_of(
        &format!("{key}.format"),
        format,
        &["parquet", "delta"],
        "lake format",
    );
    Some(ParquetPlan {
        delta: format == "delta",
        roll_event_time: roll_by == "event_time",
        id: p.id,
        key: key.to_string(),
        path,
        remote,
        tables,
        roll_rows: p.roll_rows.unwrap_or(5_000_000),
        roll_bytes,
        roll_interval_ms,
        row_group_rows: p.row_group_rows.unwrap_or(131_072).max(1),
        max_queue_bytes,
    })
}
