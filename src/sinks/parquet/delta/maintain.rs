//! `plantflow lake compact` and `plantflow lake vacuum`: upkeep of a lake's
//! Delta tables, safe while a node writes them.
//!
//! Compaction rewrites each partition's small files into files of about a
//! target size and commits one Delta version that removes the old files and
//! adds the new ones (`dataChange = false`): a reader sees either, never
//! both. A node writing the table meanwhile only adds new files, so when it
//! finds its next version taken it reads that version and goes on after it;
//! two compactions that picked the same file cannot both commit (the second
//! finds its input removed and stops). Vacuum deletes what no current
//! version needs: files compacted away longer than the retention ago, and
//! files no version names (a compaction cut short) older than it, never the
//! lake's last commit's files (a kill may have left them out of the log
//! until the node's next start adds them).

use std::fs::File;

use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;

use super::*;

/// What compaction did to one table.
#[derive(Debug, Default)]
pub struct Compacted {
    pub table: String,
    pub removed: usize,
    pub added: usize,
    pub rows: u64,
    /// The Delta version it committed (none: nothing to compact).
    pub version: Option<u64>,
}

/// What vacuum did (or, dry, would do) to one table.
#[derive(Debug, Default)]
pub struct Vacuumed {
    pub table: String,
    pub files: Vec<String>,
    pub bytes: u64,
}

/// The lake's Delta tables: folders with a `_delta_log`.
pub fn tables(lake: &Path) -> Result<Vec<(String, PathBuf)>, String> {
    let rd = std::fs::read_dir(lake).map_err(|e| format!("cannot list {}: {e}", lake.display()))?;
    let mut out: Vec<(String, PathBuf)> = rd
        .flatten()
        .filter(|e| log_dir(&e.path()).is_dir())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .collect();
    out.sort();
    if out.is_empty() {
        return Err(format!(
            "{} has no Delta tables (a lake written with format = \"delta\" has a \
             _delta_log in each table): bare Parquet files cannot be swapped atomically \
             for their readers, so they are not compacted",
            lake.display()
        ));
    }
    Ok(out)
}

/// Files of one partition to merge: small ones, greedily in groups of at
/// most `target` bytes, each group at least two files.
fn groups(files: Vec<&AddFile>, target: u64) -> Vec<Vec<&AddFile>> {
    let mut out = Vec::new();
    let mut cur: Vec<&AddFile> = Vec::new();
    let mut size = 0u64;
    for f in files.into_iter().filter(|f| (f.size as u64) < target / 2) {
        if !cur.is_empty() && size + f.size as u64 > target {
            out.push(std::mem::take(&mut cur));
            size = 0;
        }
        size += f.size as u64;
        cur.push(f);
    }
    out.push(cur);
    out.retain(|g| g.len() >= 2);
    out
}

/// Rewrites `files` (relative to `dir`) into one new file beside them.
fn merge(dir: &Path, files: &[&AddFile], n: usize) -> Result<AddFile, String> {
    let date = files[0]
        .partition_values
        .get("date")
        .cloned()
        .unwrap_or_default();
    let rel = format!(
        "date={date}/part-compact-{}-{}-{n:05}.parquet",
        crate::model::now_ms(),
        std::process::id()
    );
    let target = dir.join(&rel);
    let tmp = super::super::commit::staged_name(&target);
    let mut writer: Option<ArrowWriter<File>> = None;
    let mut rows = 0u64;
    for f in files {
        let path = dir.join(&f.path);
        let file = File::open(&path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .and_then(|b| b.build())
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        for batch in reader {
            let batch = batch.map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            if writer.is_none() {
                let out = File::create(&tmp)
                    .map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
                let props = crate::sinks::parquet::file_properties(&batch.schema(), None);
                let w = ArrowWriter::try_new(out, batch.schema(), Some(props))
                    .map_err(|e| format!("cannot start {}: {e}", tmp.display()))?;
                writer = Some(w);
            }
            let w = writer.as_mut().expect("made above");
            w.write(&batch)
                .map_err(|e| format!("{} (from {}): {e}", tmp.display(), path.display()))?;
            rows += batch.num_rows() as u64;
        }
    }
    let w = writer.ok_or_else(|| format!("{}: no rows to compact", dir.display()))?;
    let file = w
        .into_inner()
        .map_err(|e| format!("finishing {}: {e}", tmp.display()))?;
    file.sync_all()
        .map_err(|e| format!("syncing {}: {e}", tmp.display()))?;
    let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
    std::fs::rename(&tmp, &target)
        .map_err(|e| format!("renaming {} to {}: {e}", tmp.display(), target.display()))?;
    super::super::commit::sync_dir(target.parent().unwrap_or(dir))?;
    add_file(dir, &target, bytes, rows, crate::model::now_ms())
}

/// The merged schema of a group must be one: files written before a change
/// of the dataflow's metrics have other columns, and are left alone.
fn same_schema(dir: &Path, files: &[&AddFile]) -> Result<bool, String> {
    let mut first = None;
    for f in files {
        let path = dir.join(&f.path);
        let file = File::open(&path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let b = ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let schema = b.schema().clone();
        match &first {
            None => first = Some(schema),
            Some(s) if *s != schema => return Ok(false),
            Some(_) => {}
        }
    }
    Ok(true)
}

/// Compacts every Delta table of `lake` (or only `only`).
pub fn compact(lake: &Path, target: u64, only: Option<&str>) -> Result<Vec<Compacted>, String> {
    let mut out = Vec::new();
    for (name, dir) in tables(lake)? {
        if only.is_some_and(|o| o != name) {
            continue;
        }
        let mut t = TableLog::read(&dir, &name)?;
        let mut by_date: BTreeMap<&str, Vec<&AddFile>> = BTreeMap::new();
        for a in t.adds.values() {
            let date = a.partition_values.get("date").map_or("", String::as_str);
            by_date.entry(date).or_default().push(a);
        }
        let mut done = Compacted {
            table: name.clone(),
            ..Compacted::default()
        };
        let mut actions = Vec::new();
        let mut inputs = Vec::new();
        let now = crate::model::now_ms();
        for files in by_date.into_values() {
            for g in groups(files, target) {
                if !same_schema(&dir, &g)? {
                    continue;
                }
                let new = merge(&dir, &g, done.added + 1)?;
                done.rows += new.stats.as_deref().map_or(0, num_records);
                done.added += 1;
                actions.push(json!({"add": AddFile { data_change: false, ..new }}));
                for f in g {
                    done.removed += 1;
                    inputs.push(f.path.clone());
                    actions.push(json!({"remove": {
                        "path": f.path,
                        "deletionTimestamp": now,
                        "dataChange": false,
                        "extendedFileMetadata": true,
                        "partitionValues": f.partition_values,
                        "size": f.size,
                    }}));
                }
            }
        }
        if !actions.is_empty() {
            done.version = Some(t.append_removing(actions, "OPTIMIZE", &inputs)?);
        }
        out.push(done);
    }
    Ok(out)
}

fn num_records(stats: &str) -> u64 {
    serde_json::from_str::<Value>(stats)
        .ok()
        .and_then(|v| v.get("numRecords")?.as_u64())
        .unwrap_or(0)
}

/// Deletes (or, `dry`, lists) the files of `lake`'s Delta tables that no
/// current version names, once removed (or written) longer than `retain_ms` ago.
pub fn vacuum(lake: &Path, retain_ms: u64, dry: bool) -> Result<Vec<Vacuumed>, String> {
    let record = super::super::commit::read(lake)?;
    let (app, seq, last_commit) = record
        .map(|m| (app_id(&m.dataflow), m.seq, m.files))
        .unwrap_or_default();
    let horizon = crate::model::now_ms() - retain_ms.min(i64::MAX as u64) as i64;
    let mut out = Vec::new();
    for (name, dir) in tables(lake)? {
        let t = TableLog::read(&dir, &name)?;
        // The last lake commit's files its log does not hold yet (a kill
        // before its Delta commit): the node's next start adds them.
        let pending = |rel: &str| {
            t.txns.get(&app).is_none_or(|(v, _)| *v < seq as i64)
                && last_commit.contains(&format!("{name}/{rel}"))
        };
        let mut done = Vacuumed {
            table: name.clone(),
            ..Vacuumed::default()
        };
        for p in files_in(&dir)? {
            let rel = p
                .strip_prefix(&dir)
                .unwrap_or(&p)
                .to_string_lossy()
                .into_owned();
            if t.adds.contains_key(&rel) || pending(&rel) {
                continue;
            }
            let meta = std::fs::metadata(&p).map_err(|e| format!("{}: {e}", p.display()))?;
            let written = meta
                .modified()
                .ok()
                .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(i64::MAX, |d| d.as_millis() as i64);
            let since = t.removed.get(&rel).copied().unwrap_or(written);
            if since > horizon {
                continue;
            }
            if !dry {
                std::fs::remove_file(&p)
                    .map_err(|e| format!("cannot delete {}: {e}", p.display()))?;
            }
            done.bytes += meta.len();
            done.files.push(rel);
        }
        out.push(done);
    }
    Ok(out)
}
