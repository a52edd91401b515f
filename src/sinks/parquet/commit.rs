//! The lake's commit record: which staged files belong to the lake, up to
//! which time, for which dataflow.
//!
//! A commit is two steps. First `_plantflow/commit.json` is replaced (a
//! temporary file, `fsync`, rename, directory `fsync`): it names the files
//! of this commit, still staged as hidden `.part-….inprogress` files whose
//! bytes are already on disk, and the time `before` which every stamped row
//! is in the lake. Then the staged files are renamed into place. A kill
//! between the two is finished at the next start ([`open`] renames what the
//! record names); a staged file no record names is an orphan of a run that
//! died before its commit, and is deleted. One node writes a lake at a time
//! (`_plantflow/lock`, an advisory lock the kernel drops with the process).

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Int64Type, TimestampMillisecondType};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;
use serde::{Deserialize, Serialize};

/// The format of the commit record; another is refused.
pub const FORMAT: u32 = 1;

/// The folder of the lake that holds the record and the lock.
pub const DIR: &str = "_plantflow";

/// What a lake's commit record says.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Marker {
    pub format: u32,
    /// The dataflow that wrote the lake, and a hash of its file's content.
    pub dataflow: String,
    pub fingerprint: String,
    /// The plantflow version of the last commit.
    pub version: String,
    /// Commits so far.
    pub seq: u64,
    /// Every row stamped with a timely time before this is in the lake.
    pub before: u64,
    /// The run that made this commit read every source to its end.
    pub finished: bool,
    /// The files of this commit, relative to the lake.
    pub files: Vec<String>,
    /// Wall-clock time of the commit (ms since the epoch).
    pub committed_at: i64,
    /// The run that made this commit was stopped with `--drain`: it closed
    /// open windows early, so no run can go on from this lake.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub drained: bool,
    /// The checkpoint of the engine's state a restart goes on from (a
    /// node with an input log), and the one before it (kept in case this
    /// one cannot be read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<CheckpointRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_checkpoint: Option<CheckpointRef>,
}

/// A checkpoint file of the node's state directory, as a commit names it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CheckpointRef {
    /// The timely time it holds the input before.
    pub at: u64,
    /// The input log goes on from this segment.
    pub segment: u64,
    /// Its file in the state directory.
    pub file: String,
    /// The processes of the cluster that took it, each with its own file
    /// of this time in its own state directory (1: a process alone).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub processes: usize,
}

fn one() -> usize {
    1
}

fn is_one(n: &usize) -> bool {
    *n == 1
}

/// Checkpoints written and waiting to be named by a commit (`ready`), and
/// what to do once one is (`committed`: delete what it replaces).
pub struct CheckpointSlot {
    pub ready: std::sync::Mutex<Option<CheckpointRef>>,
    /// The thread that writes them: the last commit waits for it (it ends
    /// with the engine), so it names the last one and leaves no file cut.
    pub writer: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
    #[allow(clippy::type_complexity)]
    pub committed: Box<dyn Fn(&CheckpointRef, Option<&CheckpointRef>) + Send + Sync>,
}

/// Who writes the lake: a dataflow and its file's fingerprint.
#[derive(Clone, Debug)]
pub struct Identity {
    pub dataflow: String,
    pub fingerprint: String,
}

/// Why a lake cannot be opened.
#[derive(Debug)]
pub enum OpenError {
    /// The lake belongs to another dataflow or format (a configuration error).
    Incompatible(String),
    /// The lake cannot be read, locked or repaired.
    Io(String),
}

/// A lake opened for writing: locked, its last commit finished, its orphans gone.
pub struct Opened {
    pub lock: File,
    pub marker: Option<Marker>,
    /// Files of the last commit renamed into place now (a kill had cut it short).
    pub republished: usize,
    /// Staged files of uncommitted work deleted.
    pub orphans: usize,
}

fn io(what: &str, p: &Path, e: std::io::Error) -> OpenError {
    OpenError::Io(format!("{what} {}: {e}", p.display()))
}

/// The record's path in `lake`.
pub fn marker_path(lake: &Path) -> PathBuf {
    lake.join(DIR).join("commit.json")
}

/// The previous record, kept beside the current one.
fn previous_path(lake: &Path) -> PathBuf {
    lake.join(DIR).join("commit.prev.json")
}

/// Reads the commit record of `lake`, if it has one. A damaged record (or
/// one a kill left missing between two renames) falls back to the previous
/// one, with a warning: rows of the last commit may then be written again.
pub fn read(lake: &Path) -> Result<Option<Marker>, String> {
    match read_one(&marker_path(lake)) {
        Ok(Some(m)) => Ok(Some(m)),
        current => match read_one(&previous_path(lake)) {
            Ok(Some(prev)) => {
                tracing::warn!(
                    lake = %lake.display(),
                    "the lake's commit record is {}; going on from the previous one \
                     (commit {}): rows of the last commit may be written again",
                    match &current {
                        Err(e) => format!("unreadable ({e})"),
                        _ => "missing".to_string(),
                    },
                    prev.seq
                );
                Ok(Some(prev))
            }
            _ => current,
        },
    }
}

fn read_one(path: &Path) -> Result<Option<Marker>, String> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("{} is not a commit record: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Replaces the commit record of `lake` (temporary file, `fsync`, rename,
/// directory `fsync`): after a crash it is the old record or the new one.
pub fn write(lake: &Path, m: &Marker) -> Result<(), String> {
    let path = marker_path(lake);
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_vec_pretty(m).map_err(|e| e.to_string())?;
    let mut f = File::create(&tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
    f.write_all(&text)
        .and_then(|_| f.sync_all())
        .map_err(|e| format!("writing {}: {e}", tmp.display()))?;
    // The current record becomes the previous one (kept for a damaged
    // current); a kill between the renames leaves the previous one to go on from.
    match std::fs::rename(&path, previous_path(lake)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("renaming {}: {e}", path.display())),
    }
    std::fs::rename(&tmp, &path).map_err(|e| format!("renaming {}: {e}", tmp.display()))?;
    sync_dir(path.parent().unwrap_or(lake))
}

/// Makes a directory's entries (new names, renames) durable.
pub fn sync_dir(dir: &Path) -> Result<(), String> {
    crate::model::sync_dir(dir).map_err(|e| format!("syncing {}: {e}", dir.display()))
}

/// The hidden name a file is staged under beside its `target`.
pub fn staged_name(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    target.with_file_name(format!(".{name}.inprogress"))
}

/// Locks `lake`, checks its record against `who` (unless `reset`, which
/// forgets the record), finishes its last commit and deletes orphans.
pub fn open(lake: &Path, who: &Identity, reset: bool) -> Result<Opened, OpenError> {
    let dir = lake.join(DIR);
    std::fs::create_dir_all(&dir).map_err(|e| io("cannot create", &dir, e))?;
    let lock_path = dir.join("lock");
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| io("cannot open", &lock_path, e))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(OpenError::Io(format!(
                "the lake {} is being written by another plantflow (it holds {}); \
                 one node writes a lake at a time",
                lake.display(),
                lock_path.display()
            )))
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(io("cannot lock", &lock_path, e)),
    }
    if reset {
        for p in [marker_path(lake), previous_path(lake)] {
            match std::fs::remove_file(&p) {
                Ok(()) => sync_dir(&dir).map_err(OpenError::Io)?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io("cannot remove", &p, e)),
            }
        }
    }
    let marker = read(lake).map_err(OpenError::Io)?;
    if let Some(m) = &marker {
        check(m, who, lake)?;
    }
    let mut republished = 0;
    if let Some(m) = &marker {
        for f in &m.files {
            let target = lake.join(f);
            let staged = staged_name(&target);
            if staged.exists() {
                std::fs::rename(&staged, &target).map_err(|e| io("cannot rename", &staged, e))?;
                sync_dir(target.parent().unwrap_or(lake)).map_err(OpenError::Io)?;
                republished += 1;
            }
        }
    }
    let orphans = delete_orphans(lake).map_err(OpenError::Io)?;
    Ok(Opened {
        lock,
        marker,
        republished,
        orphans,
    })
}

/// Refuses a record from another dataflow, dataflow file or format.
fn check(m: &Marker, who: &Identity, lake: &Path) -> Result<(), OpenError> {
    let mut differs = Vec::new();
    if m.format != FORMAT {
        differs.push(format!(
            "its record format is {} (this plantflow writes {FORMAT})",
            m.format
        ));
    }
    if m.dataflow != who.dataflow {
        differs.push(format!(
            "it belongs to dataflow `{}`, not `{}`",
            m.dataflow, who.dataflow
        ));
    } else if m.fingerprint != who.fingerprint {
        differs.push(format!(
            "the dataflow file changed since (fingerprint {} then, {} now)",
            m.fingerprint, who.fingerprint
        ));
    }
    if differs.is_empty() {
        return Ok(());
    }
    Err(OpenError::Incompatible(format!(
        "the lake {} cannot be resumed by this run: {}. Run with --reset-state to \
         forget its commit record and write from the start (the files already in \
         the lake stay), or choose another output directory",
        lake.display(),
        differs.join("; ")
    )))
}

/// Deletes staged files (`.part-*.inprogress`) under `<lake>/<table>/<partition>/`.
fn delete_orphans(lake: &Path) -> Result<usize, String> {
    let mut n = 0;
    let Ok(tables) = std::fs::read_dir(lake) else {
        return Ok(0);
    };
    for table in tables.flatten().filter(|e| e.path().is_dir()) {
        let Ok(parts) = std::fs::read_dir(table.path()) else {
            continue;
        };
        for part in parts.flatten().filter(|e| e.path().is_dir()) {
            let Ok(files) = std::fs::read_dir(part.path()) else {
                continue;
            };
            let mut removed = false;
            for f in files.flatten() {
                let name = f.file_name().to_string_lossy().into_owned();
                if name.starts_with(".part-") && name.ends_with(".inprogress") {
                    std::fs::remove_file(f.path())
                        .map_err(|e| format!("cannot delete {}: {e}", f.path().display()))?;
                    n += 1;
                    removed = true;
                }
            }
            if removed {
                sync_dir(&part.path())?;
            }
        }
    }
    Ok(n)
}

/// The latest committed revision of every key of the versioned value
/// tables (`actions` and `outcomes` by action, `billing` by site and
/// period), so a resumed run writes only what the lake does not have.
#[derive(Default, Debug)]
pub struct Revisions {
    pub actions: HashMap<String, i64>,
    pub outcomes: HashMap<String, i64>,
    pub billing: HashMap<(String, i64), i64>,
}

impl Revisions {
    /// Reads them from the committed files of `lake`.
    pub fn read(lake: &Path) -> Result<Revisions, String> {
        let mut r = Revisions::default();
        for (table, cols) in [
            ("actions", &["action_id", "revision"][..]),
            ("outcomes", &["action_id", "revision"][..]),
            ("billing", &["site", "period_start", "revision"][..]),
        ] {
            for file in committed_files(&lake.join(table)) {
                read_keys(&file, cols, |key, ts, rev| {
                    let slot = match table {
                        "actions" => r.actions.entry(key.to_string()).or_insert(rev),
                        "outcomes" => r.outcomes.entry(key.to_string()).or_insert(rev),
                        _ => r.billing.entry((key.to_string(), ts)).or_insert(rev),
                    };
                    *slot = (*slot).max(rev);
                })?;
            }
        }
        Ok(r)
    }
}

/// The visible Parquet files of a table folder.
fn committed_files(table: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(parts) = std::fs::read_dir(table) else {
        return out;
    };
    // Not a Delta table's `_delta_log` (its checkpoints are Parquet too).
    for part in parts
        .flatten()
        .filter(|p| !p.file_name().to_string_lossy().starts_with('_'))
    {
        let Ok(files) = std::fs::read_dir(part.path()) else {
            continue;
        };
        for f in files.flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') && name.ends_with(".parquet") {
                out.push(f.path());
            }
        }
    }
    out.sort();
    out
}

/// Calls `each(key, timestamp or 0, revision)` for every row of `file`:
/// `cols` are the key column, an optional timestamp column, and `revision`.
fn read_keys(
    file: &Path,
    cols: &[&str],
    mut each: impl FnMut(&str, i64, i64),
) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| format!("reading {}: {e}", file.display());
    let f = File::open(file).map_err(|e| err(&e))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(f).map_err(|e| err(&e))?;
    let mask = ProjectionMask::columns(builder.parquet_schema(), cols.iter().copied());
    let reader = builder.with_projection(mask).build().map_err(|e| err(&e))?;
    for batch in reader {
        let batch = batch.map_err(|e| err(&e))?;
        let key = batch
            .column_by_name(cols[0])
            .and_then(|c| c.as_string_opt::<i32>())
            .ok_or_else(|| err(&format!("no text column `{}`", cols[0])))?;
        let rev = batch
            .column_by_name("revision")
            .and_then(|c| c.as_primitive_opt::<Int64Type>())
            .ok_or_else(|| err(&"no column `revision`"))?;
        let ts = match cols.len() {
            3 => Some(
                batch
                    .column_by_name(cols[1])
                    .and_then(|c| c.as_primitive_opt::<TimestampMillisecondType>())
                    .ok_or_else(|| err(&format!("no timestamp column `{}`", cols[1])))?,
            ),
            _ => None,
        };
        for i in 0..batch.num_rows() {
            if key.is_null(i) || rev.is_null(i) {
                continue;
            }
            let t = ts.map_or(0, |t| t.value(i));
            each(key.value(i), t, rev.value(i));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marker(files: Vec<String>) -> Marker {
        Marker {
            format: FORMAT,
            dataflow: "df".into(),
            fingerprint: "abc".into(),
            version: "0".into(),
            seq: 1,
            before: 61_001,
            finished: false,
            files,
            committed_at: 0,
            drained: false,
            checkpoint: None,
            previous_checkpoint: None,
        }
    }

    fn who() -> Identity {
        Identity {
            dataflow: "df".into(),
            fingerprint: "abc".into(),
        }
    }

    #[test]
    fn open_finishes_the_last_commit_and_deletes_orphans() {
        let lake = tempfile::tempdir().unwrap();
        let part = lake.path().join("aggregates/date=2026-01-01");
        std::fs::create_dir_all(&part).unwrap();
        std::fs::create_dir_all(lake.path().join(DIR)).unwrap();
        // One staged file the record names (a kill after the record), one it does not.
        let named = part.join("part-1-00001.parquet");
        std::fs::write(staged_name(&named), b"whole").unwrap();
        let orphan = part.join("part-1-00002.parquet");
        std::fs::write(staged_name(&orphan), b"half").unwrap();
        write(
            lake.path(),
            &marker(vec![
                "aggregates/date=2026-01-01/part-1-00001.parquet".into()
            ]),
        )
        .unwrap();
        let o = open(lake.path(), &who(), false)
            .map_err(|e| format!("{e:?}"))
            .unwrap();
        assert_eq!((o.republished, o.orphans), (1, 1));
        assert_eq!(std::fs::read(&named).unwrap(), b"whole");
        assert!(!staged_name(&orphan).exists() && !orphan.exists());
        assert_eq!(o.marker.unwrap().before, 61_001);
        // A second node on the same lake is refused while the first holds it.
        match open(lake.path(), &who(), false) {
            Err(OpenError::Io(m)) => assert!(m.contains("another plantflow"), "{m}"),
            other => panic!("expected a lock error, got {:?}", other.map(|o| o.marker)),
        }
    }

    #[test]
    fn a_damaged_record_falls_back_to_the_previous_one() {
        let lake = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(lake.path().join(DIR)).unwrap();
        let mut m = marker(vec![]);
        write(lake.path(), &m).unwrap();
        m.seq = 2;
        m.before = 120_001;
        write(lake.path(), &m).unwrap();
        assert_eq!(read(lake.path()).unwrap().unwrap().seq, 2);
        std::fs::write(marker_path(lake.path()), b"{\"format\": 1, \"seq\"").unwrap();
        let back = read(lake.path()).unwrap().unwrap();
        assert_eq!((back.seq, back.before), (1, 61_001));
        // Missing (a kill between the two renames): the previous one too.
        std::fs::remove_file(marker_path(lake.path())).unwrap();
        assert_eq!(read(lake.path()).unwrap().unwrap().seq, 1);
    }

    #[test]
    fn another_dataflow_or_file_is_refused_unless_reset() {
        let lake = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(lake.path().join(DIR)).unwrap();
        write(lake.path(), &marker(vec![])).unwrap();
        let other = Identity {
            dataflow: "df".into(),
            fingerprint: "xyz".into(),
        };
        match open(lake.path(), &other, false) {
            Err(OpenError::Incompatible(m)) => {
                assert!(m.contains("the dataflow file changed since"), "{m}");
                assert!(m.contains("--reset-state"), "{m}");
            }
            _ => panic!("expected a refusal"),
        }
        let o = open(lake.path(), &other, true)
            .map_err(|e| format!("{e:?}"))
            .unwrap();
        assert!(o.marker.is_none(), "reset forgets the record");
        drop(o);
        // A record of another format (another plantflow) is refused too.
        let mut m = marker(vec![]);
        m.format = FORMAT + 1;
        write(lake.path(), &m).unwrap();
        match open(lake.path(), &who(), false) {
            Err(OpenError::Incompatible(m)) => assert!(m.contains("record format is 2"), "{m}"),
            _ => panic!("expected a refusal"),
        }
    }
}
