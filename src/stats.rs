//! Run counters: what came in, what was dropped or dead-lettered and why,
//! what went out. Shared by sources, the engine's sinks and the writer.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use crate::model::Enriched;

#[derive(Default, Debug)]
pub struct Stats {
    pub rows_read: AtomicU64,
    pub rows_accepted: AtomicU64,
    pub dropped_quality: AtomicU64,
    pub late_rows: AtomicU64,
    pub windows: AtomicU64,
    pub corrections: AtomicU64,
    /// Closed windows moved to disk by `[window] spill_after`, and read back
    /// (for a correction or their expiry).
    pub windows_spilled: AtomicU64,
    pub windows_restored: AtomicU64,
    /// Rule accumulators of closed periods moved to disk by the same
    /// `spill_after`, and read back (for a correction or their expiry).
    pub groups_spilled: AtomicU64,
    pub groups_restored: AtomicU64,
    /// Actions moved to the ledger on disk, and read back (for a status update or a correction).
    pub actions_evicted: AtomicU64,
    pub actions_restored: AtomicU64,
    /// Closed actions dropped from the ledger once nothing can change them.
    pub actions_forgotten: AtomicU64,
    /// Findings suppressed because the asset was in maintenance / the action in cool-down.
    pub suppressed_maintenance: AtomicU64,
    pub suppressed_cooldown: AtomicU64,
    /// Dead-letter rows sources have handed to the writer and it has not
    /// written yet: sources wait above [`MAX_QUEUED_DEAD_LETTERS`].
    pub dead_letters_queued: AtomicU64,
    /// Bytes (estimated) of engine output the Parquet writer has not
    /// written yet, and the most there have been: the engine stops taking
    /// input above the sink's `max_queue`.
    pub sink_queued_bytes: AtomicU64,
    pub sink_queue_peak: AtomicU64,
    /// The most memory in use the memory governor read (bytes).
    pub memory_peak: AtomicU64,
    /// Checkpoints written: how many, their time in all (µs), and the
    /// latest one's time (µs) and size (bytes).
    pub checkpoints: AtomicU64,
    pub checkpoint_us_total: AtomicU64,
    pub checkpoint_last_us: AtomicU64,
    pub checkpoint_last_bytes: AtomicU64,
    dead: Mutex<BTreeMap<String, u64>>,
    /// Files, rows and bytes committed to the lake, by table.
    lake: Mutex<BTreeMap<String, LakeCounts>>,
    /// Actions (latest versions, withdrawn ones left out) and their value at
    /// stake, by (owner, action type), as the writer's tally has them.
    actions: Mutex<ActionKinds>,
    /// Samples read and the latest event time seen, by source id.
    sources: Mutex<BTreeMap<String, SourceSeen>>,
    /// Outcomes (the latest version of each) by verdict.
    outcomes: Mutex<BTreeMap<String, u64>>,
    /// Live sources' connections (MQTT broker, OPC UA session): up or
    /// not, and how many times each has come up.
    connected: Mutex<BTreeMap<String, (bool, u64)>>,
    /// Source events worth a line in the summary (gaps, timestamp origins, ...).
    events: Mutex<BTreeMap<String, u64>>,
    /// Where the operator surface listens, once it does.
    http_addr: std::sync::OnceLock<std::net::SocketAddr>,
    /// Levels by (what, source): `opcua_monitored_items`.
    levels: Mutex<BTreeMap<(&'static str, String), u64>>,
}

/// Bytes free for an unprivileged writer on the file system holding `path`.
pub fn free_bytes(path: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a writable statvfs.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    (rc == 0).then(|| st.f_bavail as u64 * st.f_frsize as u64)
}

/// The level of an OPC UA source's monitored items (set at each session's
/// subscription).
pub const OPCUA_MONITORED_ITEMS: &str = "opcua_monitored_items";

/// The most dead-letter rows (each at most 4 KiB of `raw`) that may wait for
/// the writer; past it, sources stop reading until the writer catches up.
pub const MAX_QUEUED_DEAD_LETTERS: u64 = 16_384;

impl Stats {
    /// Engine output of `bytes` is on its way to the writer.
    pub fn sink_queued(&self, bytes: u64) {
        let now = self.sink_queued_bytes.fetch_add(bytes, Relaxed) + bytes;
        self.sink_queue_peak.fetch_max(now, Relaxed);
    }

    /// The writer is done with engine output of `bytes`.
    pub fn sink_taken(&self, bytes: u64) {
        let _ = self
            .sink_queued_bytes
            .fetch_update(Relaxed, Relaxed, |q| Some(q.saturating_sub(bytes)));
    }

    pub fn dead_letter(&self, reason: &str) {
        let mut d = self.dead.lock().unwrap_or_else(|p| p.into_inner());
        *d.entry(reason.to_string()).or_default() += 1;
    }

    pub fn dead_letters(&self) -> BTreeMap<String, u64> {
        self.dead.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn event(&self, what: &str, n: u64) {
        let mut d = self.events.lock().unwrap_or_else(|p| p.into_inner());
        // Called per value by some sources: no allocation once the key exists.
        match d.get_mut(what) {
            Some(c) => *c += n,
            None => {
                d.insert(what.to_string(), n);
            }
        }
    }

    /// A file of `table` with `rows` rows and `bytes` bytes is committed.
    pub fn lake_committed(&self, table: &str, rows: u64, bytes: u64) {
        let mut l = self.lake.lock().unwrap_or_else(|p| p.into_inner());
        let c = match l.get_mut(table) {
            Some(c) => c,
            None => l.entry(table.to_string()).or_default(),
        };
        c.files += 1;
        c.rows += rows;
        c.bytes += bytes;
    }

    /// What the lake has committed, by table.
    pub fn lake(&self) -> BTreeMap<String, LakeCounts> {
        self.lake.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The outcomes now, by verdict.
    pub fn set_outcomes(&self, by_verdict: BTreeMap<String, u64>) {
        *self.outcomes.lock().unwrap_or_else(|p| p.into_inner()) = by_verdict;
    }

    /// Outcomes (the latest version of each) by verdict.
    pub fn outcomes(&self) -> BTreeMap<String, u64> {
        self.outcomes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The writer's tally of actions now.
    pub fn set_actions(&self, kinds: ActionKinds) {
        *self.actions.lock().unwrap_or_else(|p| p.into_inner()) = kinds;
    }

    /// Actions and their value at stake by (owner, action type).
    pub fn actions(&self) -> ActionKinds {
        self.actions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Source `source` read `n` more samples; the latest event time it has seen.
    pub fn source_read(&self, source: &str, n: u64, bytes: u64, max_ts: Option<i64>) {
        let mut m = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        let e = match m.get_mut(source) {
            Some(e) => e,
            None => m.entry(source.to_string()).or_default(),
        };
        e.samples += n;
        e.bytes += bytes;
        e.max_ts = e.max_ts.max(max_ts);
    }

    /// Samples read and the latest event time seen, by source id.
    pub fn sources(&self) -> BTreeMap<String, SourceSeen> {
        self.sources
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A checkpoint of `bytes` was written in `took`.
    pub fn checkpoint_written(&self, took: std::time::Duration, bytes: u64) {
        let us = took.as_micros() as u64;
        self.checkpoints.fetch_add(1, Relaxed);
        self.checkpoint_us_total.fetch_add(us, Relaxed);
        self.checkpoint_last_us.store(us, Relaxed);
        self.checkpoint_last_bytes.store(bytes, Relaxed);
    }

    /// A source's level of `what` is `v` now (e.g. its monitored items).
    pub fn set_level(&self, what: &'static str, source: &str, v: u64) {
        let mut l = self.levels.lock().unwrap_or_else(|p| p.into_inner());
        l.insert((what, source.to_string()), v);
    }

    /// Every level, by (what, source).
    pub fn levels(&self) -> BTreeMap<(&'static str, String), u64> {
        self.levels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The operator surface listens on `addr`.
    pub fn set_http_addr(&self, addr: std::net::SocketAddr) {
        let _ = self.http_addr.set(addr);
    }

    /// Where the operator surface listens, once it does.
    pub fn http_addr(&self) -> Option<std::net::SocketAddr> {
        self.http_addr.get().copied()
    }

    /// Source `source`'s connection is up (or down).
    pub fn set_connected(&self, source: &str, up: bool) {
        let mut c = self.connected.lock().unwrap_or_else(|p| p.into_inner());
        let e = c.entry(source.to_string()).or_default();
        if up && !e.0 {
            e.1 += 1;
        }
        e.0 = up;
    }

    /// Every live source's connection, by source id.
    pub fn connected(&self) -> BTreeMap<String, bool> {
        let c = self.connected.lock().unwrap_or_else(|p| p.into_inner());
        c.iter().map(|(k, v)| (k.clone(), v.0)).collect()
    }

    /// How many times each live source's connection has come up again
    /// after its first (reconnects), by source id.
    pub fn reconnects(&self) -> BTreeMap<String, u64> {
        let c = self.connected.lock().unwrap_or_else(|p| p.into_inner());
        c.iter()
            .map(|(k, v)| (k.clone(), v.1.saturating_sub(1)))
            .collect()
    }

    pub fn events(&self) -> BTreeMap<String, u64> {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn add_aggregates(&self, rows: &[(Enriched, i64)]) {
        for (_, rev) in rows {
            if *rev == 0 {
                self.windows.fetch_add(1, Relaxed);
            } else {
                self.corrections.fetch_add(1, Relaxed);
            }
        }
    }

    pub fn set_value_counters(&self, c: crate::stats::ValueCounters) {
        self.suppressed_maintenance
            .store(c.suppressed_maintenance, Relaxed);
        self.suppressed_cooldown
            .store(c.suppressed_cooldown, Relaxed);
    }

    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Relaxed)
    }
}

/// What one source has read.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct SourceSeen {
    pub samples: u64,
    /// Bytes read: message topics and payloads, or a file's bytes.
    pub bytes: u64,
    /// The latest event time (epoch ms) among its samples.
    pub max_ts: Option<i64>,
}

/// Count and value at stake by (owner, action type).
pub type ActionKinds = BTreeMap<(String, String), (u64, f64)>;

/// What the lake has committed of one table.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct LakeCounts {
    pub files: u64,
    pub rows: u64,
    pub bytes: u64,
}

/// Counters the run summary reports.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct ValueCounters {
    pub suppressed_maintenance: u64,
    pub suppressed_cooldown: u64,
    pub rejected_updates: u64,
}

/// Bytes the process's allocations hold: glibc's heap in use (what was
/// allocated and not freed, whatever the allocator keeps); elsewhere the
/// resident set.
pub fn heap_in_use() -> Option<u64> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 has no preconditions; it reads the allocator's
        // counters under its own locks and returns them by value.
        let m = unsafe { libc::mallinfo2() };
        Some((m.uordblks + m.hblkhd) as u64)
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        resident()
    }
}

/// The process's resident set in bytes (Linux).
pub fn resident() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}
