//! Delta Lake logs over the lake's tables (`format = "delta"`): each table
//! directory is also a Delta table partitioned by `date`, so Spark, Trino,
//! Databricks, DuckDB's `delta_scan` or Python's `deltalake` read whole
//! commits only, with the schema the log states.
//!
//! The lake's own commit (`commit.rs`: record, then renames) stays the
//! source of truth; each one is followed by one Delta commit per table it
//! wrote (`_delta_log/<version>.json`: an `add` per file with its row
//! count, and a `txn` whose version is the lake's commit number), created
//! with no-replace semantics, so two writers never share a version. A kill
//! between the lake's commit and the Delta one is finished at the next
//! start ([`DeltaLake::open`] adds the record's files a table's log lacks),
//! and a reader meanwhile sees the table at its previous version. Every
//! [`CHECKPOINT_INTERVAL`] versions the log is checkpointed
//! (`checkpoint.rs`), so readers stay fast after thousands of commits.

mod checkpoint;
pub mod maintain;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use arrow::datatypes::{DataType, Schema, TimeUnit};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Versions between two checkpoints of a table's log (Delta's default).
pub const CHECKPOINT_INTERVAL: u64 = 10;

/// The Delta protocol this writer speaks: no table features.
const READER_VERSION: i64 = 1;
const WRITER_VERSION: i64 = 2;

/// One file a lake commit made visible.
pub struct Added<'a> {
    pub table: &'a str,
    /// Its path (`<lake>/<table>/date=<day>/<name>.parquet`).
    pub path: &'a Path,
    pub bytes: u64,
    pub rows: u64,
}

/// A file in a table's current version (Delta's `add` action).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AddFile {
    pub path: String,
    pub partition_values: BTreeMap<String, String>,
    pub size: i64,
    pub modification_time: i64,
    pub data_change: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<String>,
}

/// The table's metadata this writer keeps (Delta's `metaData`).
#[derive(Clone, Debug, PartialEq)]
pub struct Meta {
    pub id: String,
    pub schema_string: String,
    pub created_time: i64,
}

/// `txn` versions by application id, with their `lastUpdated`.
pub type Txns = BTreeMap<String, (i64, i64)>;
/// Removed files with their deletion time (ms).
pub type Tombstones = BTreeMap<String, i64>;

/// What a table's log holds at its latest version.
#[derive(Default)]
struct TableLog {
    dir: PathBuf,
    name: String,
    version: Option<u64>,
    meta: Option<Meta>,
    adds: BTreeMap<String, AddFile>,
    /// `txn` versions by application id, with their `lastUpdated`.
    txns: BTreeMap<String, (i64, i64)>,
    /// Files removed from the table (compacted), with when: `plantflow lake
    /// vacuum` deletes them once no reader can still be reading them.
    removed: BTreeMap<String, i64>,
    /// The version of the last checkpoint.
    checkpointed: Option<u64>,
}

/// The Delta logs of a lake's tables, as its writer keeps them.
pub struct DeltaLake {
    app: String,
    tables: BTreeMap<String, TableLog>,
}

/// What [`DeltaLake::open`] did.
#[derive(Default, Debug, PartialEq)]
pub struct Opened {
    /// Tables given a log now (with the files already in them).
    pub created: usize,
    /// Files of the last lake commit added to logs that lacked them (a
    /// kill between the lake's commit and the Delta one).
    pub repaired: usize,
}

/// A Delta type for an Arrow type the lake writes.
fn delta_type(t: &DataType) -> Result<&'static str, String> {
    Ok(match t {
        DataType::Utf8 | DataType::LargeUtf8 => "string",
        DataType::Int64 => "long",
        DataType::Int32 => "integer",
        DataType::Float64 => "double",
        DataType::Boolean => "boolean",
        DataType::Date32 => "date",
        DataType::Timestamp(TimeUnit::Millisecond | TimeUnit::Microsecond, Some(_)) => "timestamp",
        other => return Err(format!("no Delta type for {other}")),
    })
}

/// The Delta `schemaString` of a table: its files' columns, then the
/// `date` partition (in the path, not in the files).
pub fn schema_string(schema: &Schema) -> Result<String, String> {
    let mut fields: Vec<Value> = Vec::new();
    for f in schema.fields() {
        fields.push(json!({
            "name": f.name(),
            "type": delta_type(f.data_type())?,
            "nullable": f.is_nullable(),
            "metadata": {},
        }));
    }
    fields.push(json!({"name": "date", "type": "date", "nullable": true, "metadata": {}}));
    Ok(json!({"type": "struct", "fields": fields}).to_string())
}

fn log_dir(table_dir: &Path) -> PathBuf {
    table_dir.join("_delta_log")
}

fn version_path(table_dir: &Path, v: u64) -> PathBuf {
    log_dir(table_dir).join(format!("{v:020}.json"))
}

impl TableLog {
    /// Reads a table's log: its last checkpoint, then every commit after it.
    fn read(dir: &Path, name: &str) -> Result<TableLog, String> {
        let mut t = TableLog {
            dir: dir.to_path_buf(),
            name: name.to_string(),
            ..TableLog::default()
        };
        let log = log_dir(dir);
        let mut versions: Vec<u64> = match std::fs::read_dir(&log) {
            Ok(rd) => rd
                .flatten()
                .filter_map(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    n.strip_suffix(".json")?.parse().ok()
                })
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(t),
            Err(e) => return Err(format!("cannot list {}: {e}", log.display())),
        };
        versions.sort_unstable();
        let from = checkpoint::read_last(&log)?;
        if let Some((v, state)) = from {
            t.version = Some(v);
            t.checkpointed = Some(v);
            t.meta = state.meta;
            t.adds = state
                .adds
                .into_iter()
                .map(|a| (a.path.clone(), a))
                .collect();
            t.txns = state.txns;
            t.removed = state.removed;
            t.check_protocol(state.protocol)?;
        }
        let after = t.version;
        for v in versions
            .into_iter()
            .filter(|v| after.is_none_or(|c| *v > c))
        {
            t.read_version(v)?;
        }
        Ok(t)
    }

    /// Applies version `v` of the log; false when there is none.
    fn read_version(&mut self, v: u64) -> Result<bool, String> {
        let path = version_path(&self.dir, v);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let a: Value = serde_json::from_str(line)
                .map_err(|e| format!("{} is not a Delta commit: {e}", path.display()))?;
            self.apply(&a, &path)?;
        }
        self.version = Some(v);
        Ok(true)
    }

    /// Reads the versions another writer made since this one's last.
    fn catch_up(&mut self) -> Result<(), String> {
        while self.read_version(self.version.map_or(0, |v| v + 1))? {}
        Ok(())
    }

    /// Applies one action of a commit.
    fn apply(&mut self, a: &Value, from: &Path) -> Result<(), String> {
        let bad = |what: &str| {
            format!(
                "{}: a {what} action this writer cannot read",
                from.display()
            )
        };
        if let Some(add) = a.get("add") {
            let add: AddFile = serde_json::from_value(add.clone()).map_err(|_| bad("add"))?;
            self.removed.remove(&add.path);
            self.adds.insert(add.path.clone(), add);
        } else if let Some(r) = a.get("remove") {
            let path = r
                .get("path")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("remove"))?;
            self.adds.remove(path);
            let at = r.get("deletionTimestamp").and_then(Value::as_i64);
            self.removed.insert(path.to_string(), at.unwrap_or(0));
        } else if let Some(m) = a.get("metaData") {
            let s = |k: &str| m.get(k).and_then(Value::as_str).map(String::from);
            self.meta = Some(Meta {
                id: s("id").ok_or_else(|| bad("metaData"))?,
                schema_string: s("schemaString").ok_or_else(|| bad("metaData"))?,
                created_time: m.get("createdTime").and_then(Value::as_i64).unwrap_or(0),
            });
        } else if let Some(p) = a.get("protocol") {
            let v = |k: &str| p.get(k).and_then(Value::as_i64).unwrap_or(0);
            self.check_protocol(Some((v("minReaderVersion"), v("minWriterVersion"))))?;
        } else if let Some(x) = a.get("txn") {
            let app = x
                .get("appId")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("txn"))?;
            let version = x.get("version").and_then(Value::as_i64).unwrap_or(0);
            let at = x.get("lastUpdated").and_then(Value::as_i64).unwrap_or(0);
            self.txns.insert(app.to_string(), (version, at));
        }
        Ok(())
    }

    /// Refuses a table another writer moved to a protocol this one does
    /// not speak (deletion vectors, column mapping, …).
    fn check_protocol(&self, p: Option<(i64, i64)>) -> Result<(), String> {
        match p {
            Some((r, w)) if r > READER_VERSION || w > WRITER_VERSION => Err(format!(
                "the Delta table {} needs reader version {r} and writer version {w}; \
                 plantflow writes versions {READER_VERSION} and {WRITER_VERSION} \
                 (a table another writer upgraded): write to a new lake",
                self.dir.display()
            )),
            _ => Ok(()),
        }
    }

    /// Appends one version with `actions`, after whatever another writer
    /// committed meanwhile.
    fn append(&mut self, actions: Vec<Value>, op: &str) -> Result<u64, String> {
        self.append_removing(actions, op, &[])
    }

    /// [`Self::append`] for a commit that removes `inputs`: it fails if
    /// another writer removed one of them first.
    fn append_removing(
        &mut self,
        actions: Vec<Value>,
        op: &str,
        inputs: &[String],
    ) -> Result<u64, String> {
        let version = self.version.map_or(0, |v| v + 1);
        let now = crate::model::now_ms();
        let mut lines = actions;
        lines.push(json!({"commitInfo": {
            "timestamp": now,
            "operation": op,
            "engineInfo": concat!("plantflow/", env!("CARGO_PKG_VERSION")),
        }}));
        let log = log_dir(&self.dir);
        let fresh = !log.exists();
        std::fs::create_dir_all(&log)
            .map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        if fresh {
            super::commit::sync_dir(&self.dir)?;
        }
        let mut text = String::new();
        for l in &lines {
            text.push_str(&l.to_string());
            text.push('\n');
        }
        let mut version = version;
        // Another writer (`plantflow lake compact`) may have made this
        // version: read what it did and go on after it. Its removes never
        // touch the files added here (new ones), so nothing conflicts.
        while !write_new(&version_path(&self.dir, version), text.as_bytes())? {
            self.catch_up()?;
            if let Some(gone) = inputs.iter().find(|p| !self.adds.contains_key(*p)) {
                return Err(format!(
                    "{}: {gone} was removed by another writer (another compaction?) \
                     meanwhile; nothing committed",
                    self.dir.display()
                ));
            }
            version = self.version.map_or(0, |v| v + 1);
        }
        for l in &lines {
            self.apply(l, &version_path(&self.dir, version))?;
        }
        self.version = Some(version);
        if version >= self.checkpointed.map_or(0, |c| c) + CHECKPOINT_INTERVAL {
            self.checkpoint()?;
        }
        Ok(version)
    }

    fn checkpoint(&mut self) -> Result<(), String> {
        let Some(version) = self.version else {
            return Ok(());
        };
        let meta = self
            .meta
            .clone()
            .ok_or_else(|| format!("the Delta table {} has no metaData", self.dir.display()))?;
        let adds: Vec<&AddFile> = self.adds.values().collect();
        // Tombstones stay for a week (Delta's default retention for them).
        let week_ago = crate::model::now_ms() - 7 * 86_400_000;
        self.removed.retain(|_, at| *at >= week_ago);
        let state = (&self.txns, &self.removed);
        checkpoint::write(
            &log_dir(&self.dir),
            version,
            &self.name,
            &meta,
            &adds,
            state,
        )?;
        self.checkpointed = Some(version);
        Ok(())
    }
}

fn protocol() -> Value {
    json!({"protocol": {"minReaderVersion": READER_VERSION, "minWriterVersion": WRITER_VERSION}})
}

fn metadata(name: &str, meta: &Meta) -> Value {
    json!({"metaData": {
        "id": meta.id,
        "name": name,
        "format": {"provider": "parquet", "options": {}},
        "schemaString": meta.schema_string,
        "partitionColumns": ["date"],
        "configuration": {},
        "createdTime": meta.created_time,
    }})
}

/// A table id: unique per table and creation (Delta wants a GUID).
fn table_id(name: &str, now: i64) -> String {
    let h = |salt: u64| {
        let mut x = salt ^ (now as u64);
        for b in name.bytes() {
            x = (x ^ b as u64).wrapping_mul(0x100000001b3);
        }
        x ^= (std::process::id() as u64) << 17;
        x = (x ^ (x >> 31)).wrapping_mul(0x9e3779b97f4a7c15);
        x
    };
    let (a, b) = (h(0xcbf29ce484222325), h(0x84222325cbf29ce4));
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        b >> 52,
        b & 0xffff_ffff_ffff
    )
}

/// The `txn` application id of a dataflow's lake commits.
pub fn app_id(dataflow: &str) -> String {
    format!("plantflow/{dataflow}")
}

/// The `add` action of a committed file.
fn add_file(
    table_dir: &Path,
    path: &Path,
    bytes: u64,
    rows: u64,
    at: i64,
) -> Result<AddFile, String> {
    let rel = path.strip_prefix(table_dir).unwrap_or(path);
    let date = rel
        .components()
        .find_map(|c| {
            c.as_os_str()
                .to_str()?
                .strip_prefix("date=")
                .map(String::from)
        })
        .ok_or_else(|| format!("{} has no date= partition", path.display()))?;
    Ok(AddFile {
        path: rel.to_string_lossy().into_owned(),
        partition_values: BTreeMap::from([("date".to_string(), date)]),
        size: bytes as i64,
        modification_time: at,
        data_change: true,
        stats: Some(json!({"numRecords": rows}).to_string()),
    })
}

/// The committed files of a table directory (not staged, not the log's).
fn files_in(table_dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(table_dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(format!("cannot list {}: {e}", table_dir.display())),
    };
    for part in rd.flatten() {
        let name = part.file_name().to_string_lossy().into_owned();
        if !name.starts_with("date=") || !part.path().is_dir() {
            continue;
        }
        let files = std::fs::read_dir(part.path())
            .map_err(|e| format!("cannot list {}: {e}", part.path().display()))?;
        for f in files.flatten() {
            let n = f.file_name().to_string_lossy().into_owned();
            if n.ends_with(".parquet") && !n.starts_with('.') {
                out.push(f.path());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The size and row count of a committed Parquet file.
fn size_and_rows(path: &Path) -> Result<(u64, u64), String> {
    let f =
        std::fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let bytes = f.metadata().map(|m| m.len()).unwrap_or(0);
    let reader = parquet::file::reader::SerializedFileReader::new(f)
        .map_err(|e| format!("{} is not a Parquet file: {e}", path.display()))?;
    use parquet::file::reader::FileReader;
    Ok((bytes, reader.metadata().file_metadata().num_rows() as u64))
}

impl DeltaLake {
    /// Opens (or creates) the Delta log of each table in `schemas`: a
    /// table without one gets version 0 with every file it holds already;
    /// a changed schema (another dataflow's metrics) a new `metaData`; and
    /// the files of the lake's last commit (`record`, already renamed into
    /// place by `commit::open`) a log lacks are added, with its `txn`.
    pub fn open(
        lake: &Path,
        app: &str,
        schemas: &[(String, arrow::datatypes::SchemaRef)],
        record: Option<(u64, &[String])>,
    ) -> Result<(DeltaLake, Opened), String> {
        let mut opened = Opened::default();
        let mut tables = BTreeMap::new();
        let now = crate::model::now_ms();
        for (name, schema) in schemas {
            let dir = lake.join(name);
            let mut t = TableLog::read(&dir, name)?;
            let schema_string = schema_string(schema)?;
            let txn = |seq: u64| json!({"txn": {"appId": app, "version": seq, "lastUpdated": now}});
            if t.version.is_none() {
                // Every file the table holds already (a lake written as
                // bare Parquet before), and its first commit's txn.
                let mut actions = vec![protocol()];
                let meta = Meta {
                    id: table_id(name, now),
                    schema_string,
                    created_time: now,
                };
                actions.push(metadata(name, &meta));
                for p in files_in(&dir)? {
                    let (bytes, rows) = size_and_rows(&p)?;
                    actions.push(json!({"add": add_file(&dir, &p, bytes, rows, now)?}));
                }
                if let Some((seq, _)) = record {
                    actions.push(txn(seq));
                }
                t.append(actions, "CREATE TABLE")?;
                opened.created += 1;
                tables.insert(name.clone(), t);
                continue;
            }
            let mut actions = Vec::new();
            if t.meta
                .as_ref()
                .is_none_or(|m| m.schema_string != schema_string)
            {
                let meta = Meta {
                    id: t
                        .meta
                        .as_ref()
                        .map_or_else(|| table_id(name, now), |m| m.id.clone()),
                    schema_string,
                    created_time: t.meta.as_ref().map_or(now, |m| m.created_time),
                };
                actions.push(metadata(name, &meta));
            }
            // The last lake commit made no Delta commit in this table yet
            // (its txn is older): its files go in now. Once it did, a file
            // of it the log lacks was compacted away since, and stays out.
            let behind = |seq: u64| t.txns.get(app).is_none_or(|(v, _)| *v < seq as i64);
            if let Some((seq, files)) = record.filter(|(seq, _)| behind(*seq)) {
                let prefix = format!("{name}/");
                let mut missing = 0;
                for f in files.iter().filter_map(|f| f.strip_prefix(&prefix)) {
                    if t.adds.contains_key(f) {
                        continue;
                    }
                    let p = dir.join(f);
                    let (bytes, rows) = size_and_rows(&p)?;
                    actions.push(json!({"add": add_file(&dir, &p, bytes, rows, now)?}));
                    missing += 1;
                }
                if missing > 0 {
                    actions.push(txn(seq));
                    opened.repaired += missing;
                }
            }
            if !actions.is_empty() {
                t.append(actions, "WRITE")?;
            }
            tables.insert(name.clone(), t);
        }
        Ok((
            DeltaLake {
                app: app.to_string(),
                tables,
            },
            opened,
        ))
    }

    /// The highest lake commit any table's log holds (its `txn`): a lake
    /// whose record was forgotten (`--reset-state`) numbers its commits on
    /// from there, so each table's `txn` only grows.
    pub fn last_txn(&self) -> u64 {
        let txns = self.tables.values().filter_map(|t| t.txns.get(&self.app));
        txns.map(|(v, _)| (*v).max(0) as u64).max().unwrap_or(0)
    }

    /// Appends one Delta commit per table for `files` (just renamed into
    /// place by the lake's commit `seq`).
    pub fn commit(&mut self, files: &[Added<'_>], seq: u64) -> Result<(), String> {
        let now = crate::model::now_ms();
        let mut by_table: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
        for f in files {
            let t = self
                .tables
                .get(f.table)
                .ok_or_else(|| format!("no Delta log for table {}", f.table))?;
            let add = add_file(&t.dir, f.path, f.bytes, f.rows, now)?;
            by_table
                .entry(f.table)
                .or_default()
                .push(json!({"add": add}));
        }
        for (table, mut actions) in by_table {
            actions.push(json!({"txn": {"appId": self.app, "version": seq, "lastUpdated": now}}));
            let t = self.tables.get_mut(table).expect("looked up above");
            t.append(actions, "WRITE")?;
        }
        Ok(())
    }
}

/// The files a Delta table's current version names (none: `table_dir` is
/// not a Delta table). Readers of the lake use these, not the directory:
/// after a compaction both the old and the new files are there until a vacuum.
pub fn live_files(table_dir: &Path) -> Result<Option<Vec<PathBuf>>, String> {
    if !log_dir(table_dir).is_dir() {
        return Ok(None);
    }
    let name = table_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned());
    let t = TableLog::read(table_dir, &name.unwrap_or_default())?;
    Ok(Some(t.adds.keys().map(|p| table_dir.join(p)).collect()))
}

/// Writes `bytes` as a new file at `path`: a temporary file made durable,
/// then linked to `path`; false (and nothing written) if another writer
/// made that version first.
fn write_new(path: &Path, bytes: &[u8]) -> Result<bool, String> {
    let tmp = synced_beside(path, bytes)?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
        Err(e) => return Err(format!("cannot create {}: {e}", path.display())),
    }
    super::commit::sync_dir(path.parent().unwrap_or(Path::new(".")))?;
    Ok(true)
}

/// Writes `bytes` to a hidden temporary file beside `path`, synced.
fn synced_beside(path: &Path, bytes: &[u8]) -> Result<PathBuf, String> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let tmp = path.with_file_name(format!(
        ".{}.{}.tmp",
        name.unwrap_or_default(),
        std::process::id()
    ));
    let mut f =
        std::fs::File::create(&tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| format!("writing {}: {e}", tmp.display()))?;
    Ok(tmp)
}

/// Replaces `path` with `bytes` (temporary file, `fsync`, rename).
fn replace(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let tmp = synced_beside(path, bytes)?;
    std::fs::rename(&tmp, path)
        .map_err(|e| format!("cannot rename {} to {}: {e}", tmp.display(), path.display()))?;
    super::commit::sync_dir(path.parent().unwrap_or(Path::new(".")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, RecordBatch};
    use arrow::datatypes::Field;
    use std::sync::Arc;

    fn schema() -> arrow::datatypes::SchemaRef {
        Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]))
    }

    /// A committed file of `rows` rows at `<lake>/t/date=<date>/<name>`.
    fn file(lake: &Path, date: &str, name: &str, rows: i64) -> PathBuf {
        let dir = lake.join("t").join(format!("date={date}"));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        let batch = RecordBatch::try_new(
            schema(),
            vec![Arc::new(Int64Array::from_iter_values(0..rows))],
        )
        .unwrap();
        let mut w = parquet::arrow::ArrowWriter::try_new(
            std::fs::File::create(&path).unwrap(),
            schema(),
            None,
        )
        .unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        path
    }

    fn tables() -> Vec<(String, arrow::datatypes::SchemaRef)> {
        vec![("t".to_string(), schema())]
    }

    #[test]
    fn a_table_is_created_over_its_files_and_read_back_from_its_checkpoint() {
        let lake = tempfile::tempdir().unwrap();
        file(lake.path(), "2026-01-01", "a.parquet", 3);
        file(lake.path(), "2026-01-02", "b.parquet", 4);
        let (mut d, opened) = DeltaLake::open(lake.path(), "app", &tables(), None).unwrap();
        assert_eq!(
            opened,
            Opened {
                created: 1,
                repaired: 0
            }
        );
        let t = &d.tables["t"];
        assert_eq!(t.version, Some(0));
        assert_eq!(t.adds.len(), 2);
        assert_eq!(
            t.adds["date=2026-01-02/b.parquet"].stats.as_deref(),
            Some("{\"numRecords\":4}")
        );
        for seq in 1..=12u64 {
            let p = file(lake.path(), "2026-01-03", &format!("c{seq}.parquet"), 1);
            let added = [Added {
                table: "t",
                path: &p,
                bytes: 10,
                rows: 1,
            }];
            d.commit(&added, seq).unwrap();
        }
        let t = &d.tables["t"];
        assert_eq!((t.version, t.checkpointed), (Some(12), Some(10)));
        // Without the commits the checkpoint covers, the same state.
        for v in 0..=10u64 {
            std::fs::remove_file(version_path(&t.dir, v)).unwrap();
        }
        let back = TableLog::read(&t.dir, "t").unwrap();
        assert_eq!(back.version, Some(12));
        assert_eq!(back.adds, t.adds);
        assert_eq!(back.meta, t.meta);
        assert_eq!(back.txns.get("app").map(|x| x.0), Some(12));
        let schema: Value = serde_json::from_str(&back.meta.unwrap().schema_string).unwrap();
        assert_eq!(schema["fields"][0]["type"], "long");
        assert_eq!(schema["fields"][1]["name"], "date");
    }

    #[test]
    fn the_last_commits_files_the_log_lacks_are_added_once() {
        let lake = tempfile::tempdir().unwrap();
        let (mut d, _) = DeltaLake::open(lake.path(), "app", &tables(), None).unwrap();
        let a = file(lake.path(), "2026-01-01", "a.parquet", 3);
        d.commit(
            &[Added {
                table: "t",
                path: &a,
                bytes: 1,
                rows: 3,
            }],
            1,
        )
        .unwrap();
        drop(d);
        // Commit 2 renamed its file into place; the kill came before its Delta commit.
        file(lake.path(), "2026-01-01", "b.parquet", 5);
        let files = vec![
            "t/date=2026-01-01/a.parquet".to_string(),
            "t/date=2026-01-01/b.parquet".to_string(),
        ];
        let (d, opened) =
            DeltaLake::open(lake.path(), "app", &tables(), Some((2, &files))).unwrap();
        assert_eq!(opened.repaired, 1);
        assert_eq!(d.tables["t"].adds.len(), 2);
        assert_eq!(d.tables["t"].txns["app"].0, 2);
        let (_, again) = DeltaLake::open(lake.path(), "app", &tables(), Some((2, &files))).unwrap();
        assert_eq!(again, Opened::default(), "nothing twice");
    }

    #[test]
    fn a_table_another_writer_upgraded_is_refused() {
        let lake = tempfile::tempdir().unwrap();
        let log = lake.path().join("t/_delta_log");
        std::fs::create_dir_all(&log).unwrap();
        let v0 = json!({"protocol": {"minReaderVersion": 3, "minWriterVersion": 7}});
        std::fs::write(log.join(format!("{:020}.json", 0)), format!("{v0}\n")).unwrap();
        let e = DeltaLake::open(lake.path(), "app", &tables(), None)
            .err()
            .unwrap();
        assert!(
            e.contains("needs reader version 3 and writer version 7"),
            "{e}"
        );
    }
}
