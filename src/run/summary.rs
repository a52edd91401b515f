//! What a run did: counters from the shared [`Stats`], the writer's
//! report, and the summary printed after a run.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::sinks::parquet::WriterReport;
use crate::stats::Stats;

/// What a run did.
#[derive(Debug)]
pub struct RunSummary {
    pub rows_read: u64,
    pub rows_accepted: u64,
    pub dropped_quality: u64,
    pub late_rows: u64,
    pub windows: u64,
    pub corrections: u64,
    /// Closed windows written to the spill store, and read back from it.
    pub windows_spilled: u64,
    pub windows_restored: u64,
    /// Rule accumulators written to the spill store, and read back from it.
    pub groups_spilled: u64,
    pub groups_restored: u64,
    /// Actions written to the ledger, and read back from it.
    pub actions_evicted: u64,
    pub actions_restored: u64,
    /// Closed actions the ledger let go once final.
    pub actions_forgotten: u64,
    /// Findings suppressed: asset in maintenance / action in cool-down.
    pub suppressed_maintenance: u64,
    pub suppressed_cooldown: u64,
    pub dead_letters: BTreeMap<String, u64>,
    /// Source events (gaps, timestamp origins, ...), counted.
    pub events: BTreeMap<String, u64>,
    pub report: WriterReport,
    pub out_dir: PathBuf,
    pub elapsed: Duration,
    pub workers: usize,
    /// What the run found in the lake's commit record.
    pub resumed: Option<Resumed>,
    /// The most engine output (estimated bytes) that waited for the writer.
    pub sink_queue_peak: u64,
    /// The most memory in use the memory governor read (0: no limit, not read).
    pub memory_peak: u64,
}

/// The summary of a run that ended: counters from `stats`.
pub(super) fn collect(
    stats: &Stats,
    report: WriterReport,
    out_dir: PathBuf,
    elapsed: Duration,
    workers: usize,
) -> RunSummary {
    RunSummary {
        rows_read: Stats::get(&stats.rows_read),
        rows_accepted: Stats::get(&stats.rows_accepted),
        dropped_quality: Stats::get(&stats.dropped_quality),
        late_rows: Stats::get(&stats.late_rows),
        windows: Stats::get(&stats.windows),
        corrections: Stats::get(&stats.corrections),
        windows_spilled: Stats::get(&stats.windows_spilled),
        windows_restored: Stats::get(&stats.windows_restored),
        groups_spilled: Stats::get(&stats.groups_spilled),
        groups_restored: Stats::get(&stats.groups_restored),
        actions_evicted: Stats::get(&stats.actions_evicted),
        actions_restored: Stats::get(&stats.actions_restored),
        actions_forgotten: Stats::get(&stats.actions_forgotten),
        suppressed_maintenance: Stats::get(&stats.suppressed_maintenance),
        suppressed_cooldown: Stats::get(&stats.suppressed_cooldown),
        dead_letters: stats.dead_letters(),
        events: stats.events(),
        report,
        out_dir,
        elapsed,
        workers,
        resumed: None,
        sink_queue_peak: Stats::get(&stats.sink_queue_peak),
        memory_peak: Stats::get(&stats.memory_peak),
    }
}

impl RunSummary {
    /// The summary with what the run found in the lake's commit record.
    pub(super) fn resumed(mut self, r: Option<Resumed>) -> Self {
        self.resumed = r;
        self
    }
}

impl Resumed {
    /// The summary's lines about the lake's commit record.
    pub fn render(&self) -> String {
        let mut s = if self.seq == 0 {
            String::new()
        } else if self.nothing_to_do {
            format!(
                "the lake already holds this run to its end (commit {}): nothing new to write \
                 (--reset-state writes it again)\n",
                self.seq
            )
        } else {
            format!(
                "resumed        after commit {} (rows before timely time {} were in the lake)\n",
                self.seq, self.before
            )
        };
        if self.republished > 0 || self.orphans > 0 {
            s.push_str(&format!(
                "  repaired     {} file(s) of a cut-short commit published, {} uncommitted file(s) deleted\n",
                self.republished, self.orphans
            ));
        }
        s
    }
}

/// The summary of a run that had nothing to do: the lake already held the
/// whole run (`resumed` says from which commit; a cluster's other process
/// does not know it).
pub(super) fn nothing_to_do(
    lake: PathBuf,
    took: Duration,
    workers: usize,
    resumed: Resumed,
) -> RunSummary {
    let mut s = collect(&Stats::default(), Default::default(), lake, took, workers);
    s.resumed = Some(Resumed {
        nothing_to_do: true,
        ..resumed
    });
    s
}

/// A run that found a commit record in its lake.
#[derive(Debug, Clone, Default)]
pub struct Resumed {
    /// The record's commit count and resume time.
    pub seq: u64,
    pub before: u64,
    /// Files of a commit a kill had cut short, renamed into place at start.
    pub republished: usize,
    /// Staged files of uncommitted work deleted at start.
    pub orphans: usize,
    /// The lake already held this whole (deterministic) run: nothing was read.
    pub nothing_to_do: bool,
}

/// Peak resident memory of this process in bytes (Linux), if known.
pub fn peak_rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

impl RunSummary {
    /// The human summary printed after a run.
    pub fn render(&self, currency: &str) -> String {
        let mut s = String::new();
        if let Some(r) = &self.resumed {
            s.push_str(&r.render());
            if r.nothing_to_do {
                return s;
            }
        }
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        s.push_str(&format!(
            "rows in        {:>12}  ({:.0} rows/s, {} worker{}, {:.2} s)\n",
            self.rows_read,
            self.rows_read as f64 / secs,
            self.workers,
            if self.workers == 1 { "" } else { "s" },
            secs
        ));
        s.push_str(&format!("  accepted     {:>12}\n", self.rows_accepted));
        s.push_str(&format!(
            "  bad quality  {:>12}  (dropped by the quality policy)\n",
            self.dropped_quality
        ));
        s.push_str(&format!(
            "  late         {:>12}  (after their window closed: corrections)\n",
            self.late_rows
        ));
        let dead: u64 = self.dead_letters.values().sum();
        s.push_str(&format!("  dead letters {:>12}\n", dead));
        for (reason, n) in &self.dead_letters {
            s.push_str(&format!("    {reason}: {n}\n"));
        }
        if !self.events.is_empty() {
            s.push_str("source events\n");
            for (what, n) in &self.events {
                s.push_str(&format!("    {what}: {n}\n"));
            }
        }
        if self.memory_peak > 0 {
            s.push_str(&format!(
                "memory         {:>9.1} MiB  (the most in use, read by the memory governor)\n",
                self.memory_peak as f64 / (1 << 20) as f64
            ));
        }
        s.push_str(&format!(
            "windows        {:>12}  (+{} corrected revisions)\n",
            self.windows, self.corrections
        ));
        if self.windows_spilled > 0 {
            s.push_str(&format!(
                "  spilled      {:>12}  (closed windows kept on disk, {} read back)\n",
                self.windows_spilled, self.windows_restored
            ));
        }
        if self.groups_spilled > 0 {
            s.push_str(&format!(
                "  spilled      {:>12}  (rule accumulators of closed periods kept on disk, {} read back)\n",
                self.groups_spilled, self.groups_restored
            ));
        }
        let tally = &self.report.tally;
        s.push_str(&format!(
            "actions        {:>12}  (value at stake {:.2} {currency})\n",
            tally.counted(),
            tally.value()
        ));
        if self.actions_evicted > 0 {
            s.push_str(&format!(
                "  on disk      {:>12}  (actions of closed periods kept on disk, {} read back, {} final and let go)\n",
                self.actions_evicted, self.actions_restored, self.actions_forgotten
            ));
        }
        for (owner, action, n, v) in tally.by_owner() {
            s.push_str(&format!(
                "  {owner:<12} {action:<20} {n:>5} actions  {v:>10.2} {currency}\n"
            ));
        }
        for a in tally.top().iter().take(5) {
            s.push_str(&format!(
                "    {} {} {} {:.2} {currency} ({})\n",
                chrono::DateTime::from_timestamp_millis(a.period_start)
                    .map(|d| d.format("%Y-%m-%d %H:%M").to_string())
                    .unwrap_or_default(),
                a.asset,
                a.rule,
                a.value.0,
                a.severity
            ));
        }
        if self.suppressed_maintenance + self.suppressed_cooldown > 0 {
            s.push_str(&format!(
                "  suppressed findings: {} in maintenance, {} in cool-down\n",
                self.suppressed_maintenance, self.suppressed_cooldown
            ));
        }
        if !self.report.outcomes.is_empty() {
            let mut verdicts: BTreeMap<&str, usize> = BTreeMap::new();
            let (mut kwh, mut cost) = (0.0, 0.0);
            for (o, _) in self.report.outcomes.values() {
                *verdicts.entry(o.verdict.as_str()).or_default() += 1;
                if o.verdict == "verified" {
                    kwh += o.avoided_kwh.unwrap_or(0.0);
                    cost += o.avoided_cost.unwrap_or(0.0);
                }
            }
            let v: Vec<String> = verdicts.iter().map(|(k, n)| format!("{n} {k}")).collect();
            s.push_str(&format!(
                "outcomes       {:>12}  ({}; verified savings {kwh:.1} kWh, {cost:.2} {currency})\n",
                self.report.outcomes.len(),
                v.join(", ")
            ));
        }
        if !self.report.bills.is_empty() {
            let total: f64 = self.report.bills.values().map(|(b, _)| b.total_cost).sum();
            let demand: f64 = self.report.bills.values().map(|(b, _)| b.demand_cost).sum();
            s.push_str(&format!(
                "bills          {:>12}  (total {total:.2} {currency}, of which demand {demand:.2})\n",
                self.report.bills.len()
            ));
        }
        if let Some(rss) = peak_rss_bytes() {
            s.push_str(&format!(
                "peak memory    {:>9.1} MiB\n",
                rss as f64 / (1 << 20) as f64
            ));
        }
        s.push_str(&format!(
            "output         {} ({} files)\n",
            self.out_dir.display(),
            self.report.files
        ));
        s
    }
}
