//! Checkpoints of a table's Delta log: `<version>.checkpoint.parquet` holds
//! the table's whole state at that version (protocol, metadata, `txn`s and
//! every file), one action per row in the protocol's struct columns, and
//! `_last_checkpoint` names it, so a reader (or this writer at its next
//! start) reads one Parquet file and the commits after it, not thousands.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int32Array, Int64Array, ListBuilder, MapBuilder,
    StringArray, StringBuilder, StructArray,
};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{Field, Fields, Int64Type, Schema};
use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use serde_json::json;

use super::{AddFile, Meta};

/// A table's state read from a checkpoint.
#[derive(Default)]
pub struct State {
    pub protocol: Option<(i64, i64)>,
    pub meta: Option<Meta>,
    pub adds: Vec<AddFile>,
    pub txns: BTreeMap<String, (i64, i64)>,
    pub removed: BTreeMap<String, i64>,
}

fn checkpoint_name(version: u64) -> String {
    format!("{version:020}.checkpoint.parquet")
}

/// A struct column from named children, null where `valid` is false.
fn struct_col(children: Vec<(&str, ArrayRef)>, valid: &[bool]) -> ArrayRef {
    let fields: Fields = children
        .iter()
        .map(|(n, a)| Arc::new(Field::new(*n, a.data_type().clone(), true)))
        .collect();
    let arrays = children.into_iter().map(|(_, a)| a).collect();
    Arc::new(StructArray::new(
        fields,
        arrays,
        Some(NullBuffer::from(valid.to_vec())),
    ))
}

fn strings<'a>(v: impl IntoIterator<Item = Option<&'a str>>) -> ArrayRef {
    Arc::new(v.into_iter().collect::<StringArray>())
}

fn longs(v: impl IntoIterator<Item = Option<i64>>) -> ArrayRef {
    Arc::new(v.into_iter().collect::<Int64Array>())
}

/// A `map<string, string>` column; `None` rows are null.
fn maps<'a>(rows: impl IntoIterator<Item = Option<&'a BTreeMap<String, String>>>) -> ArrayRef {
    let mut b = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
    for r in rows {
        match r {
            Some(m) => {
                for (k, v) in m {
                    b.keys().append_value(k);
                    b.values().append_value(v);
                }
                b.append(true).expect("keys and values of equal length");
            }
            None => b.append(false).expect("keys and values of equal length"),
        }
    }
    Arc::new(b.finish())
}

/// A checkpoint's rows: the protocol, the metadata, each txn, each file.
struct Rows<'a> {
    name: &'a str,
    meta: &'a Meta,
    txns: Vec<(&'a String, &'a (i64, i64))>,
    adds: &'a [&'a AddFile],
    removed: Vec<(&'a String, &'a i64)>,
}

impl Rows<'_> {
    fn n(&self) -> usize {
        2 + self.txns.len() + self.adds.len() + self.removed.len()
    }

    fn kind(&self, i: usize) -> char {
        match i {
            0 => 'p',
            1 => 'm',
            i if i < 2 + self.txns.len() => 't',
            i if i < 2 + self.txns.len() + self.adds.len() => 'a',
            _ => 'r',
        }
    }

    fn removed_at(&self, i: usize) -> Option<(&String, &i64)> {
        (self.kind(i) == 'r').then(|| self.removed[i - 2 - self.txns.len() - self.adds.len()])
    }

    fn is(&self, k: char) -> Vec<bool> {
        (0..self.n()).map(|i| self.kind(i) == k).collect()
    }

    fn txn_at(&self, i: usize) -> Option<(&String, &(i64, i64))> {
        (self.kind(i) == 't').then(|| self.txns[i - 2])
    }

    fn add_at(&self, i: usize) -> Option<&AddFile> {
        (self.kind(i) == 'a').then(|| self.adds[i - 2 - self.txns.len()])
    }

    fn protocol(&self) -> ArrayRef {
        let version = |v: i64| -> ArrayRef {
            Arc::new(
                (0..self.n())
                    .map(|i| (i == 0).then_some(v as i32))
                    .collect::<Int32Array>(),
            )
        };
        struct_col(
            vec![
                ("minReaderVersion", version(super::READER_VERSION)),
                ("minWriterVersion", version(super::WRITER_VERSION)),
            ],
            &self.is('p'),
        )
    }

    fn metadata(&self) -> ArrayRef {
        let n = self.n();
        let m = |i: usize| i == 1;
        let empty = BTreeMap::new();
        let mut partition_columns = ListBuilder::new(StringBuilder::new());
        for i in 0..n {
            if m(i) {
                partition_columns.values().append_value("date");
            }
            partition_columns.append(m(i));
        }
        let format = struct_col(
            vec![
                (
                    "provider",
                    strings((0..n).map(|i| m(i).then_some("parquet"))),
                ),
                ("options", maps((0..n).map(|i| m(i).then_some(&empty)))),
            ],
            &self.is('m'),
        );
        let meta = self.meta;
        struct_col(
            vec![
                (
                    "id",
                    strings((0..n).map(|i| m(i).then_some(meta.id.as_str()))),
                ),
                ("name", strings((0..n).map(|i| m(i).then_some(self.name)))),
                ("description", strings((0..n).map(|_| None))),
                ("format", format),
                (
                    "schemaString",
                    strings((0..n).map(|i| m(i).then_some(meta.schema_string.as_str()))),
                ),
                ("partitionColumns", Arc::new(partition_columns.finish())),
                (
                    "configuration",
                    maps((0..n).map(|i| m(i).then_some(&empty))),
                ),
                (
                    "createdTime",
                    longs((0..n).map(|i| m(i).then_some(meta.created_time))),
                ),
            ],
            &self.is('m'),
        )
    }

    fn txn(&self) -> ArrayRef {
        let n = self.n();
        struct_col(
            vec![
                (
                    "appId",
                    strings((0..n).map(|i| self.txn_at(i).map(|(a, _)| a.as_str()))),
                ),
                (
                    "version",
                    longs((0..n).map(|i| self.txn_at(i).map(|(_, v)| v.0))),
                ),
                (
                    "lastUpdated",
                    longs((0..n).map(|i| self.txn_at(i).map(|(_, v)| v.1))),
                ),
            ],
            &self.is('t'),
        )
    }

    fn add(&self) -> ArrayRef {
        let n = self.n();
        let at = |i| self.add_at(i);
        let changes: BooleanArray = (0..n).map(|i| at(i).map(|a| a.data_change)).collect();
        struct_col(
            vec![
                (
                    "path",
                    strings((0..n).map(|i| at(i).map(|a| a.path.as_str()))),
                ),
                (
                    "partitionValues",
                    maps((0..n).map(|i| at(i).map(|a| &a.partition_values))),
                ),
                ("size", longs((0..n).map(|i| at(i).map(|a| a.size)))),
                (
                    "modificationTime",
                    longs((0..n).map(|i| at(i).map(|a| a.modification_time))),
                ),
                ("dataChange", Arc::new(changes)),
                (
                    "stats",
                    strings((0..n).map(|i| at(i).and_then(|a| a.stats.as_deref()))),
                ),
            ],
            &self.is('a'),
        )
    }

    /// The tombstones of compacted files (for `plantflow lake vacuum`).
    fn remove(&self) -> ArrayRef {
        let n = self.n();
        let at = |i| self.removed_at(i);
        let changes: BooleanArray = (0..n).map(|i| at(i).map(|_| false)).collect();
        struct_col(
            vec![
                (
                    "path",
                    strings((0..n).map(|i| at(i).map(|(p, _)| p.as_str()))),
                ),
                (
                    "deletionTimestamp",
                    longs((0..n).map(|i| at(i).map(|(_, t)| *t))),
                ),
                ("dataChange", Arc::new(changes)),
            ],
            &self.is('r'),
        )
    }
}

/// Writes the checkpoint of `version` and points `_last_checkpoint` at it.
pub fn write(
    log: &Path,
    version: u64,
    name: &str,
    meta: &Meta,
    adds: &[&AddFile],
    (txns, removed): (&super::Txns, &super::Tombstones),
) -> Result<(), String> {
    let rows = Rows {
        name,
        meta,
        txns: txns.iter().collect(),
        adds,
        removed: removed.iter().collect(),
    };
    let columns = vec![
        ("txn", rows.txn()),
        ("add", rows.add()),
        ("remove", rows.remove()),
        ("metaData", rows.metadata()),
        ("protocol", rows.protocol()),
    ];
    let schema = Arc::new(Schema::new(
        columns
            .iter()
            .map(|(c, a)| Field::new(*c, a.data_type().clone(), true))
            .collect::<Vec<_>>(),
    ));
    let arrays = columns.into_iter().map(|(_, a)| a).collect();
    let batch = RecordBatch::try_new(schema.clone(), arrays)
        .map_err(|e| format!("building a Delta checkpoint: {e}"))?;
    let mut bytes = Vec::new();
    let mut w = ArrowWriter::try_new(&mut bytes, schema, None)
        .map_err(|e| format!("writing a Delta checkpoint: {e}"))?;
    w.write(&batch)
        .and_then(|_| w.close().map(|_| ()))
        .map_err(|e| format!("writing a Delta checkpoint: {e}"))?;
    super::replace(&log.join(checkpoint_name(version)), &bytes)?;
    let last = json!({"version": version, "size": rows.n()});
    super::replace(&log.join("_last_checkpoint"), last.to_string().as_bytes())
}

/// The version of the latest checkpoint in `log` (from `_last_checkpoint`,
/// or the highest checkpoint file when it is missing) and its state.
pub fn read_last(log: &Path) -> Result<Option<(u64, State)>, String> {
    let named = std::fs::read(log.join("_last_checkpoint"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v.get("version")?.as_u64());
    let version = match named {
        Some(v) => Some(v),
        None => std::fs::read_dir(log)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.strip_suffix(".checkpoint.parquet")?.parse::<u64>().ok()
            })
            .max(),
    };
    let Some(version) = version else {
        return Ok(None);
    };
    let path = log.join(checkpoint_name(version));
    let f =
        std::fs::File::open(&path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let bad =
        |e: &dyn std::fmt::Display| format!("{} is not a Delta checkpoint: {e}", path.display());
    let reader = ParquetRecordBatchReaderBuilder::try_new(f)
        .and_then(|b| b.build())
        .map_err(|e| bad(&e))?;
    let mut st = State::default();
    for batch in reader {
        let batch = batch.map_err(|e| bad(&e))?;
        read_batch(&batch, &mut st).map_err(|e| bad(&e))?;
    }
    Ok(Some((version, st)))
}

fn child<'a>(s: &'a StructArray, name: &str) -> Option<&'a ArrayRef> {
    s.column_by_name(name)
}

fn str_at(s: &StructArray, name: &str, i: usize) -> Option<String> {
    let c = child(s, name)?.as_string_opt::<i32>()?;
    c.is_valid(i).then(|| c.value(i).to_string())
}

fn long_at(s: &StructArray, name: &str, i: usize) -> Option<i64> {
    let c = child(s, name)?;
    if let Some(c) = c.as_primitive_opt::<Int64Type>() {
        return c.is_valid(i).then(|| c.value(i));
    }
    let c = c.as_primitive_opt::<arrow::datatypes::Int32Type>()?;
    c.is_valid(i).then(|| c.value(i) as i64)
}

fn read_batch(b: &RecordBatch, st: &mut State) -> Result<(), String> {
    let col = |name: &str| b.column_by_name(name).and_then(|c| c.as_struct_opt());
    if let Some(p) = col("protocol") {
        for i in (0..b.num_rows()).filter(|i| p.is_valid(*i)) {
            let r = long_at(p, "minReaderVersion", i).unwrap_or(0);
            let w = long_at(p, "minWriterVersion", i).unwrap_or(0);
            st.protocol = Some((r, w));
        }
    }
    if let Some(m) = col("metaData") {
        for i in (0..b.num_rows()).filter(|i| m.is_valid(*i)) {
            st.meta = Some(Meta {
                id: str_at(m, "id", i).ok_or("metaData without an id")?,
                schema_string: str_at(m, "schemaString", i).ok_or("metaData without a schema")?,
                created_time: long_at(m, "createdTime", i).unwrap_or(0),
            });
        }
    }
    if let Some(t) = col("txn") {
        for i in (0..b.num_rows()).filter(|i| t.is_valid(*i)) {
            let app = str_at(t, "appId", i).ok_or("txn without an appId")?;
            let v = long_at(t, "version", i).unwrap_or(0);
            st.txns
                .insert(app, (v, long_at(t, "lastUpdated", i).unwrap_or(0)));
        }
    }
    if let Some(r) = col("remove") {
        for i in (0..b.num_rows()).filter(|i| r.is_valid(*i)) {
            let path = str_at(r, "path", i).ok_or("remove without a path")?;
            st.removed
                .insert(path, long_at(r, "deletionTimestamp", i).unwrap_or(0));
        }
    }
    if let Some(a) = col("add") {
        let parts = child(a, "partitionValues").and_then(|c| c.as_map_opt());
        for i in (0..b.num_rows()).filter(|i| a.is_valid(*i)) {
            let mut partition_values = BTreeMap::new();
            if let Some(pm) = parts.filter(|pm| pm.is_valid(i)) {
                let entry = pm.value(i);
                let (k, v) = (
                    entry.column(0).as_string::<i32>(),
                    entry.column(1).as_string::<i32>(),
                );
                for j in 0..entry.len() {
                    partition_values.insert(k.value(j).to_string(), v.value(j).to_string());
                }
            }
            let data_change = child(a, "dataChange")
                .and_then(|c| c.as_boolean_opt())
                .is_none_or(|c| c.is_null(i) || c.value(i));
            st.adds.push(AddFile {
                path: str_at(a, "path", i).ok_or("add without a path")?,
                partition_values,
                size: long_at(a, "size", i).unwrap_or(0),
                modification_time: long_at(a, "modificationTime", i).unwrap_or(0),
                data_change,
                stats: str_at(a, "stats", i),
            });
        }
    }
    Ok(())
}
