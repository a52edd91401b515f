//! `jsonl` sink: actions (and optionally outcomes and bills) appended to a
//! local file, one JSON document per row version per line, for tools that
//! take work from a file: a log shipper, a CMMS import job, `jq`.
//!
//! Each line is the document the `mqtt_publish` sink sends
//! ([`crate::model::message`]): the row's fields plus `table`, `dataflow`
//! and `revision`. A correction of an action is a new line under the same
//! `action_id` with a higher `revision`, so a reader keeps the highest
//! revision per key; `(action_id, revision)` names a line, and after a
//! restart lines written since the lake's last commit may come again (at
//! least once, like MQTT). The file is rotated once it reaches
//! `rotate_size`: renamed `<stem>-<UTC time>.jsonl` (synced first) and a
//! new one begun; the newest `keep` rotated files stay.
//!
//! The writer runs on a thread of its own, fed by a bounded queue from the
//! sinks' channel: a slow disk holds the queue (and so the lake, as its own
//! writer would), it never drops a line.

pub mod config;

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::model::message::versions;
use crate::model::SinkBatch;

pub use config::JsonlPlan;

/// One `jsonl` sink's file.
pub struct JsonlWriter {
    plan: JsonlPlan,
    dataflow: String,
    file: std::io::BufWriter<std::fs::File>,
    /// Bytes in the current file.
    size: u64,
    /// Lines written (all files).
    pub lines: u64,
}

impl JsonlWriter {
    /// Opens (appends to) the sink's file.
    pub fn open(plan: JsonlPlan, dataflow: &str) -> Result<JsonlWriter, String> {
        let (file, size) = open(&plan.path)?;
        Ok(JsonlWriter {
            plan,
            dataflow: dataflow.to_string(),
            file,
            size,
            lines: 0,
        })
    }

    /// Appends the batch's rows of the sink's tables, then flushes them to
    /// the file (rotating it first if it is full).
    pub fn write(&mut self, batch: &SinkBatch) -> Result<(), String> {
        let want = |t: &str| self.plan.tables.iter().any(|x| x == t);
        let docs = versions(&self.dataflow, batch, want);
        if docs.is_empty() {
            return Ok(());
        }
        let path = self.plan.path.clone();
        let err = |e: std::io::Error| format!("{}: {e}", path.display());
        for d in docs.iter().map(|v| &v.doc) {
            if self.size > 0 && self.size + d.len() as u64 + 1 > self.plan.rotate_bytes {
                self.rotate()?;
            }
            self.file.write_all(d).map_err(err)?;
            self.file.write_all(b"\n").map_err(err)?;
            self.size += d.len() as u64 + 1;
            self.lines += 1;
        }
        self.file.flush().map_err(err)
    }

    /// Syncs the file (at the end of a run).
    pub fn sync(&mut self) -> Result<(), String> {
        let err = |e: std::io::Error| format!("{}: {e}", self.plan.path.display());
        self.file.flush().map_err(err)?;
        self.file.get_ref().sync_all().map_err(err)
    }

    /// Closes the full file under a name with the time, begins a new one,
    /// and deletes rotated files beyond `keep`.
    fn rotate(&mut self) -> Result<(), String> {
        self.sync()?;
        let path = &self.plan.path;
        let stem = path.file_stem().unwrap_or_default().to_string_lossy();
        let dir = path.parent().unwrap_or(Path::new("."));
        let now = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
        let mut to = dir.join(format!("{stem}-{now}.jsonl"));
        let mut n = 1;
        while to.exists() {
            to = dir.join(format!("{stem}-{now}-{n}.jsonl"));
            n += 1;
        }
        std::fs::rename(path, &to).map_err(|e| format!("{}: {e}", to.display()))?;
        (self.file, self.size) = open(path)?;
        crate::model::sync_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        if self.plan.keep > 0 {
            let mut old = rotated(path);
            old.sort();
            let extra = old.len().saturating_sub(self.plan.keep);
            for f in &old[..extra] {
                let _ = std::fs::remove_file(f);
            }
        }
        Ok(())
    }
}

/// Opens `path` for appending (creating it and its directory): the file
/// and its size.
fn open(path: &Path) -> Result<(std::io::BufWriter<std::fs::File>, u64), String> {
    let err = |e: std::io::Error| format!("{}: {e}", path.display());
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(err)?;
    let size = f.metadata().map_err(err)?.len();
    Ok((std::io::BufWriter::with_capacity(64 << 10, f), size))
}

/// The rotated files of `path` (`<stem>-<time>.jsonl` beside it), oldest
/// first by name.
pub fn rotated(path: &Path) -> Vec<PathBuf> {
    let stem = path.file_stem().unwrap_or_default().to_string_lossy();
    let prefix = format!("{stem}-");
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().map(|n| n.to_string_lossy()).is_some_and(|n| {
                n.starts_with(&prefix) && n.ends_with(".jsonl") && n.len() > prefix.len() + 6
            })
        })
        .collect();
    v.sort();
    v
}
