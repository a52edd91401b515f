//! The input log: every call live sources make into the bridge, in the
//! bridge's order, written before the call takes effect.
//!
//! A node restarted after a kill replays the log into a fresh engine and
//! reaches the state it had (the same rows at the same timely times), then
//! its sources go on where they stopped. The MQTT source acknowledges a
//! message only once the log holding its rows is on disk ([`Wal::sync`]), so
//! the broker delivers again exactly what the log may not have.
//!
//! # Format
//! One file, `input.wal`: records of `[u32 length][u64 xxh3][postcard
//! entry]`, little-endian. A record cut short or failing its hash ends the
//! log (a kill in the middle of a write): it is cut off at start and the
//! log goes on from there.

use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::bridge::ContextChange;
use super::tags::InitialContext;
use crate::model::{DeadLetter, Sample, TagId};

/// One record of the log.
#[derive(Debug, Serialize, Deserialize)]
pub enum Entry {
    /// The first record: the dataflow file it belongs to, and the context
    /// the first run started with (later runs start from it too).
    Begin {
        fingerprint: String,
        initial: InitialContext,
    },
    /// A process started: tag ids of the entries after it are its own.
    Run,
    /// Names of tag ids first used in the entries after it.
    Tags(Vec<(TagId, String)>),
    /// `Ingest::samples`: rows of `source` at its `epoch`, the hashes of
    /// the messages they came from (for redeliveries after a restart), and
    /// where a file source goes on after them.
    Samples {
        source: u32,
        epoch: u64,
        rows: Vec<Sample>,
        messages: Vec<u64>,
        position: Option<u64>,
    },
    /// `Ingest::context`.
    Context(ContextChange),
    /// `Ingest::settle`.
    Settle,
    /// `Ingest::reach_cut`: a cluster's time moved to a checkpoint's cut.
    Advance(u64),
    /// [`Entry::Samples`] of a file source with the dead letters of its bad
    /// lines among them and the stamp they went to the lake with: replayed,
    /// they go again with it (the writer skips those it has). In one
    /// record, so the position never passes a bad line whose dead letter
    /// the log lacks (see `bridge/dead.rs`).
    SamplesWithDead {
        source: u32,
        epoch: u64,
        rows: Vec<Sample>,
        messages: Vec<u64>,
        position: Option<u64>,
        dead: Vec<DeadLetter>,
        stamp: u64,
    },
    /// Dead letters logged before a checkpoint with a stamp not before it,
    /// logged again after it (see `bridge/dead.rs`).
    Dead {
        stamp: u64,
        source: u32,
        position: Option<u64>,
        rows: Vec<DeadLetter>,
    },
}

/// The borrowed form of [`Entry`] for writing (the same encoding).
#[derive(Serialize)]
pub enum EntryRef<'a> {
    Begin {
        fingerprint: &'a str,
        initial: &'a InitialContext,
    },
    Run,
    Tags(&'a [(TagId, String)]),
    Samples {
        source: u32,
        epoch: u64,
        rows: &'a [Sample],
        messages: &'a [u64],
        position: Option<u64>,
    },
    Context(&'a ContextChange),
    Settle,
    Advance(u64),
    SamplesWithDead {
        source: u32,
        epoch: u64,
        rows: &'a [Sample],
        messages: &'a [u64],
        position: Option<u64>,
        dead: &'a [DeadLetter],
        stamp: u64,
    },
    Dead {
        stamp: u64,
        source: u32,
        position: Option<u64>,
        rows: &'a [DeadLetter],
    },
}

/// The log, open for appending.
pub struct Wal {
    out: BufWriter<File>,
    path: PathBuf,
    /// The segment this file is (see [`segment`]).
    pub seq: u64,
    /// Written since the last sync.
    dirty: bool,
    /// The first error of an append, reported at the next sync.
    failed: Option<String>,
    /// Tag ids of this process whose names are in the log.
    named: Vec<bool>,
    /// Bytes in the log.
    pub bytes: u64,
}

const HEADER: usize = 12;

impl Wal {
    /// Opens (or creates) the log at `path`: what it holds (read as a
    /// stream: the log may be far larger than memory), and the log ready
    /// to append after the last whole record.
    pub fn open(path: &Path) -> Result<(Wal, Scan), String> {
        let err = |e: &dyn std::fmt::Display| format!("input log {}: {e}", path.display());
        if let Some(dir) = path.parent() {
            crate::model::private_dir(dir).map_err(|e| err(&e))?;
        }
        let mut file = File::options()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| err(&e))?;
        let len = file.metadata().map_err(|e| err(&e))?.len();
        let mut records = Records::open(path, len).map_err(|e| err(&e))?;
        let scan = Scan::of(&mut records);
        let whole = records.at;
        if records.damaged_after().map_err(|e| err(&e))? {
            return Err(err(&format!(
                "damaged at byte {whole}: a record fails its check and more follow; \
                 refusing to replay part of it (move the file aside, or run with \
                 --reset-state to start a new log)"
            )));
        }
        if whole < len {
            tracing::warn!(
                log = %path.display(),
                cut = len - whole,
                "the input log ends in a record cut short (a kill while writing): cut off"
            );
            file.set_len(whole).map_err(|e| err(&e))?;
            file.sync_all().map_err(|e| err(&e))?;
        }
        file.seek(SeekFrom::Start(whole)).map_err(|e| err(&e))?;
        let wal = Wal {
            out: BufWriter::with_capacity(1 << 20, file),
            path: path.to_path_buf(),
            seq: seq_of(path).unwrap_or(0),
            dirty: false,
            failed: None,
            named: Vec::new(),
            bytes: whole,
        };
        Ok((wal, scan))
    }

    /// Appends one entry (to the buffer; [`Wal::sync`] makes it durable).
    pub fn append(&mut self, e: &EntryRef<'_>) {
        if self.failed.is_some() {
            return;
        }
        let r = postcard::to_allocvec(e)
            .map_err(|e| e.to_string())
            .and_then(|payload| {
                let mut head = [0u8; HEADER];
                head[..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
                head[4..].copy_from_slice(&xxhash_rust::xxh3::xxh3_64(&payload).to_le_bytes());
                self.out
                    .write_all(&head)
                    .and_then(|_| self.out.write_all(&payload))
                    .map_err(|e| e.to_string())?;
                self.bytes += (HEADER + payload.len()) as u64;
                Ok(())
            });
        self.dirty = true;
        if let Err(e) = r {
            self.failed = Some(format!(
                "writing the input log {}: {e}",
                self.path.display()
            ));
        }
    }

    /// The names of the tags of `rows` not yet in the log (ids of this process).
    /// Whether a write failed (the next sync reports it).
    pub fn failed(&self) -> bool {
        self.failed.is_some()
    }

    pub fn unnamed(
        &mut self,
        rows: &[Sample],
        name: impl Fn(TagId) -> String,
    ) -> Vec<(TagId, String)> {
        let mut out = Vec::new();
        for r in rows {
            let i = r.tag as usize;
            if i >= self.named.len() {
                self.named.resize(i + 1, false);
            }
            if !self.named[i] {
                self.named[i] = true;
                out.push((r.tag, name(r.tag)));
            }
        }
        out
    }

    /// Hands what is buffered to the operating system, without waiting
    /// for the disk: a kill of this process (SIGKILL, a crash) after it
    /// loses none of it; only the host's own crash before the next
    /// [`Wal::sync`] may.
    pub fn write_through(&mut self) {
        if self.failed.is_none() {
            if let Err(e) = self.out.flush() {
                self.failed = Some(format!(
                    "writing the input log {}: {e}",
                    self.path.display()
                ));
            }
        }
    }

    /// Writes what is buffered and waits until it is on disk (a group
    /// commit: one call covers every entry before it).
    pub fn sync(&mut self) -> Result<(), String> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if !self.dirty {
            return Ok(());
        }
        let r = self
            .out
            .flush()
            .and_then(|_| self.out.get_ref().sync_data())
            .map_err(|e| format!("syncing the input log {}: {e}", self.path.display()));
        match r {
            Ok(()) => {
                self.dirty = false;
                Ok(())
            }
            Err(e) => {
                self.failed = Some(e.clone());
                Err(e)
            }
        }
    }
}

/// The whole records of a log file, one at a time, up to a length.
/// The file of segment `seq` of the log in `dir`: a checkpoint starts a
/// new segment, so the log before it goes with a file deletion.
pub fn segment(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("input-{seq:06}.wal"))
}

/// The segment a file is, by its name.
pub fn seq_of(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    name.strip_prefix("input-")?
        .strip_suffix(".wal")?
        .parse()
        .ok()
}

/// The log's segments in `dir`, in order.
pub fn segments(dir: &Path) -> std::io::Result<Vec<u64>> {
    let mut out = Vec::new();
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            for e in entries {
                if let Some(seq) = seq_of(&e?.path()) {
                    out.push(seq);
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    out.sort_unstable();
    Ok(out)
}

impl Wal {
    /// Ends this segment (synced) and goes on in the next one; returns its
    /// number. Tags are named again in the new segment, so it can be
    /// replayed without the ones before it.
    pub fn roll(&mut self) -> Result<u64, String> {
        self.sync()?;
        let dir = self.path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let seq = self.seq + 1;
        let path = segment(&dir, seq);
        let opened = File::options()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .and_then(|f| crate::model::sync_dir(&dir).map(|_| f));
        let file = match opened {
            Ok(f) => f,
            Err(e) => {
                let e = format!("starting the input log segment {}: {e}", path.display());
                self.failed = Some(e.clone());
                return Err(e);
            }
        };
        self.out = BufWriter::with_capacity(1 << 20, file);
        self.path = path;
        self.seq = seq;
        self.named.clear();
        self.bytes = 0;
        self.dirty = false;
        Ok(seq)
    }
}

pub struct Records {
    r: std::io::BufReader<File>,
    /// Where the next record starts: every record before it is whole.
    pub at: u64,
    len: u64,
    payload: Vec<u8>,
}

impl Records {
    /// Reads the log at `path` from its start, up to `len` bytes.
    pub fn open(path: &Path, len: u64) -> std::io::Result<Records> {
        Ok(Records {
            r: std::io::BufReader::with_capacity(1 << 20, File::open(path)?),
            at: 0,
            len,
            payload: Vec::new(),
        })
    }

    /// Whether the bytes after the last whole record are damage inside the
    /// log rather than a write cut short: a record that fits and fails its
    /// check, followed by bytes that are not all zero (a cut write ends the
    /// file; a power cut may leave zeros after it).
    fn damaged_after(&mut self) -> std::io::Result<bool> {
        let mut head = [0u8; HEADER];
        self.r.seek(SeekFrom::Start(self.at))?;
        if self.len - self.at < HEADER as u64 || self.r.read_exact(&mut head).is_err() {
            return Ok(false);
        }
        let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes")) as u64;
        let after = self.at + HEADER as u64 + len;
        if after >= self.len {
            return Ok(false);
        }
        self.r.seek(SeekFrom::Start(after))?;
        let mut buf = [0u8; 64 << 10];
        loop {
            let n = self.r.read(&mut buf)?;
            if n == 0 {
                return Ok(false);
            }
            if buf[..n].iter().any(|b| *b != 0) {
                return Ok(true);
            }
        }
    }
}

impl Iterator for Records {
    type Item = Entry;

    fn next(&mut self) -> Option<Entry> {
        let mut head = [0u8; HEADER];
        if self.len - self.at < HEADER as u64 {
            return None;
        }
        self.r.read_exact(&mut head).ok()?;
        let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes")) as usize;
        let hash = u64::from_le_bytes(head[4..].try_into().expect("8 bytes"));
        if self.at + (HEADER + len) as u64 > self.len {
            return None;
        }
        self.payload.resize(len, 0);
        self.r.read_exact(&mut self.payload).ok()?;
        if xxhash_rust::xxh3::xxh3_64(&self.payload) != hash {
            return None;
        }
        let e = postcard::from_bytes::<Entry>(&self.payload).ok()?;
        self.at += (HEADER + len) as u64;
        Some(e)
    }
}

/// What a log holds, read in one pass: the counts, its header, and its
/// context edits (few and small; the samples are not kept).
#[derive(Debug, Default)]
pub struct Scan {
    pub entries: u64,
    /// Process starts after the first.
    pub restarts: u64,
    /// `Run` entries: the runs that appended to it.
    pub runs: u64,
    pub samples: u64,
    pub messages: u64,
    pub begin: Option<(String, InitialContext)>,
    pub context: Vec<ContextChange>,
}

impl Scan {
    /// Reads `records` to their end.
    pub fn of(records: &mut Records) -> Scan {
        let mut s = Scan::default();
        for e in records {
            s.entries += 1;
            match e {
                Entry::Begin {
                    fingerprint,
                    initial,
                } if s.entries == 1 => s.begin = Some((fingerprint, initial)),
                Entry::Run => s.runs += 1,
                Entry::Samples { rows, messages, .. }
                | Entry::SamplesWithDead { rows, messages, .. } => {
                    s.samples += rows.len() as u64;
                    s.messages += messages.len() as u64;
                }
                Entry::Context(c) => s.context.push(c),
                _ => {}
            }
        }
        // The first run logs a `Run` too.
        s.restarts = s.runs.saturating_sub(1);
        s
    }

    /// Whether the log holds no input (a run that failed at once).
    pub fn is_empty(&self) -> bool {
        self.samples == 0 && self.context.is_empty()
    }

    /// Adds what the next segment holds.
    pub fn merge(&mut self, next: Scan) {
        let first = self.entries == 0;
        self.entries += next.entries;
        self.runs += next.runs;
        self.restarts = self.runs.saturating_sub(1);
        self.samples += next.samples;
        self.messages += next.messages;
        if first && self.begin.is_none() {
            self.begin = next.begin;
        }
        self.context.extend(next.context);
    }
}

/// What the log at `path` holds, without changing it (`plantflow state inspect`).
pub fn scan(path: &Path) -> Result<Scan, String> {
    let len = std::fs::metadata(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .len();
    let mut r =
        Records::open(path, len).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(Scan::of(&mut r))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Quality;

    fn sample(tag: TagId, ts: i64) -> Sample {
        Sample {
            tag,
            ts,
            value: 1.5,
            quality: Quality::Good,
        }
    }

    #[test]
    fn entries_come_back_and_a_torn_tail_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal/input.wal");
        let all = |p: &Path| -> Vec<Entry> {
            let len = std::fs::metadata(p).unwrap().len();
            Records::open(p, len).unwrap().collect()
        };
        let (mut w, scan) = Wal::open(&path).unwrap();
        assert_eq!(scan.entries, 0);
        let rows = [sample(0, 1000), sample(1, 2000)];
        w.append(&EntryRef::Run);
        w.append(&EntryRef::Tags(&[(0, "a".into()), (1, "b".into())]));
        w.append(&EntryRef::Samples {
            source: 0,
            epoch: 1,
            rows: &rows,
            messages: &[7],
            position: Some(42),
        });
        w.sync().unwrap();
        let whole = w.bytes;
        w.append(&EntryRef::Settle);
        w.sync().unwrap();
        drop(w);
        // A kill in the middle of the last record's write.
        let f = File::options().write(true).open(&path).unwrap();
        f.set_len(whole + 5).unwrap();
        drop(f);
        let (mut w, scan) = Wal::open(&path).unwrap();
        assert_eq!((scan.entries, scan.samples, scan.messages), (3, 2, 1));
        let e = all(&path);
        match &e[2] {
            Entry::Samples {
                rows: r,
                messages,
                position,
                ..
            } => {
                assert_eq!(r, &rows);
                assert_eq!(messages, &[7]);
                assert_eq!(*position, Some(42));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(std::fs::metadata(&path).unwrap().len(), whole);
        // Appending goes on after the last whole record.
        w.append(&EntryRef::Settle);
        w.sync().unwrap();
        drop(w);
        let e = all(&path);
        assert_eq!(e.len(), 4);
        assert!(matches!(e[3], Entry::Settle));
        // A flipped byte inside the log (not at its end) is damage: refused.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[HEADER] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let e = Wal::open(&path).err().expect("refused");
        assert!(e.contains("damaged at byte 0"), "{e}");
        // Zeros after the last whole record (a power cut) are a cut write.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[HEADER] ^= 0xff;
        let whole = bytes.len();
        bytes.extend([0u8; 64]);
        std::fs::write(&path, &bytes).unwrap();
        let (_, scan) = Wal::open(&path).unwrap();
        assert_eq!(scan.entries, 4);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), whole as u64);
    }
}
