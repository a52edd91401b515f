//! The writer: one open file per table and date, closed on rows or size,
//! committed with every other table's files on age (or event time) and at
//! the end; the thread that drains the engine's batches.
//!
//! # Commits
//! A closed file is staged (hidden, `fsync`'d); a commit publishes every
//! staged file of every table together, after the lake's commit record
//! names them ([`super::commit`]). Rows stamped with a timely time wait
//! until every engine output has passed it, so a commit holds exactly the
//! stamped rows before some time: the record's `before`, where a resumed
//! run starts writing again. The value tables (actions, outcomes, billing)
//! are versioned: a resumed run skips the revisions the lake already has.

use super::*;

mod run;
pub use run::run_writer;

pub(super) struct OpenFile {
    writer: ArrowWriter<File>,
    tmp: PathBuf,
    target: PathBuf,
    rows: u64,
}

/// A closed file waiting for the next commit: where it is, where it goes,
/// and what it holds (for the lake's counters).
struct Staged {
    tmp: PathBuf,
    target: PathBuf,
    table: String,
    rows: u64,
    bytes: u64,
}

/// What the writer did, for the run summary.
#[derive(Debug, Default, Clone)]
pub struct WriterReport {
    /// Files committed (a count: a node rolling files per minute for a year
    /// would otherwise keep half a million paths).
    pub files: u64,
    pub rows: BTreeMap<String, u64>,
    /// Latest revision of every action seen (unless the writer was told to
    /// keep only the [`ActionTally`]: a long run would hold every action).
    pub actions: BTreeMap<String, (ActionRow, i64)>,
    /// Totals over the latest revision of every action, in bounded memory.
    pub tally: ActionTally,
    /// Latest revision of every outcome and bill seen.
    pub outcomes: BTreeMap<String, (OutcomeRow, i64)>,
    pub bills: BTreeMap<(String, i64), (BillRow, i64)>,
}

/// Writes the three tables under `plan.path`.
pub struct ParquetWriter {
    plan: ParquetPlan,
    dataflow: String,
    currency: String,
    metrics: Vec<MetricPlan>,
    run_id: String,
    seq: u64,
    open: HashMap<(String, String), OpenFile>,
    schemas: HashMap<String, SchemaRef>,
    report: WriterReport,
    /// Whether the report keeps every action's latest row (else only the tally).
    keep_action_rows: bool,
    stats: Arc<Stats>,
    /// Each engine output's progress (timely time), for `roll_by = "event_time"`.
    progress: Vec<u64>,
    /// Event time (ms) up to which every output is complete.
    complete_ms: i64,
    /// The event-time roll boundary passed since the last commit.
    boundary_passed: bool,
    /// Closed files waiting for the next commit.
    staged: Vec<Staged>,
    /// When the oldest uncommitted row arrived.
    uncommitted_since: Option<Instant>,
    /// Every engine output has passed this timely time: stamped rows before
    /// it are written, later ones wait.
    appended: u64,
    /// The latest stamp written.
    max_stamp: Option<u64>,
    /// The lake's commit record, when the lake is durable.
    durable: Option<Durable>,
    /// The last commit is being made (the run has ended).
    ending: bool,
    /// What a resumed run does not write again.
    resume: Resume,
}

/// A durable lake: the writer keeps its commit record.
pub struct Durable {
    pub identity: super::commit::Identity,
    /// Commits so far (the record's `seq`).
    pub seq: u64,
    /// Set by the run when every source has ended (not stopped): the last
    /// commit says the run is finished.
    pub finished: Arc<std::sync::atomic::AtomicBool>,
    /// Checkpoints for commits to name (a node with an input log).
    pub checkpoints: Option<Arc<super::commit::CheckpointSlot>>,
    /// The checkpoint the last commit named, and the one before it.
    pub named: Option<super::commit::CheckpointRef>,
    pub previous: Option<super::commit::CheckpointRef>,
    /// A stop closes what is open and commits it (`--drain`).
    pub drain: bool,
    /// The input is logged: a restart goes on after what the sources read,
    /// so their dead letters and gaps held at a stop are written, not left
    /// to be made again (a replay read again from its start makes them again).
    pub logged: bool,
    /// The tables' Delta logs (`format = "delta"`).
    pub delta: Option<super::delta::DeltaLake>,
    /// The object store each commit is shipped to (`path = "s3://…"`).
    pub ship: Option<super::ship::Shipper>,
    /// Makes the input log durable (a node with one): done before each
    /// commit record, so every row a commit holds came from input the log
    /// holds on disk, and a kill right after the record finds it there.
    #[allow(clippy::type_complexity)]
    pub sync_log: Option<Box<dyn Fn() -> Result<(), String> + Send>>,
}

/// Where a resumed run starts writing.
#[derive(Default)]
pub struct Resume {
    /// Stamped rows before this time are in the lake already.
    pub before: u64,
    /// Revisions of the value tables already in the lake.
    pub revisions: super::commit::Revisions,
}

impl ParquetWriter {
    pub fn new(
        plan: ParquetPlan,
        dataflow: &str,
        currency: &str,
        metrics: Vec<MetricPlan>,
        stats: Arc<Stats>,
    ) -> ParquetWriter {
        let schemas = table_schemas(&metrics);
        ParquetWriter {
            plan,
            dataflow: dataflow.to_string(),
            currency: currency.to_string(),
            metrics,
            run_id: format!("{}-{}", crate::model::now_ms(), std::process::id()),
            seq: 0,
            open: HashMap::new(),
            schemas,
            report: WriterReport::default(),
            keep_action_rows: true,
            stats,
            progress: Vec::new(),
            complete_ms: i64::MIN,
            boundary_passed: false,
            staged: Vec::new(),
            uncommitted_since: None,
            appended: 0,
            max_stamp: None,
            durable: None,
            ending: false,
            resume: Resume::default(),
        }
    }

    /// Keeps the lake's commit record, and resumes after what it holds.
    pub fn durable(mut self, durable: Durable, resume: Resume) -> Self {
        self.durable = Some(durable);
        self.resume = resume;
        self
    }

    /// Takes one batch: rows stamped before the resume point are dropped,
    /// rows stamped at or after a time some engine output has not passed
    /// yet wait in `held`, the rest are written.
    fn take<B: std::borrow::Borrow<Stamped>>(
        &mut self,
        b: B,
        held: &mut Vec<B>,
    ) -> Result<(), String> {
        // The sources' dead letters are taken as they come: written, skipped
        // or held. Held ones wait for the time (their source is ahead of
        // another; they are in the input log): counted as queued, they made
        // a source at the time wait for rows only the time releases.
        if let SinkBatch::DeadLetters(rows) = &b.borrow().batch {
            self.dead_letters_taken(rows.len());
        }
        self.place(b, held)
    }

    /// [`Self::take`] once counted.
    fn place<B: std::borrow::Borrow<Stamped>>(
        &mut self,
        b: B,
        held: &mut Vec<B>,
    ) -> Result<(), String> {
        let s = b.borrow();
        let timed = matches!(
            s.batch,
            SinkBatch::Aggregates(_) | SinkBatch::DeadLetters(_) | SinkBatch::Gaps(_)
        );
        match s.time {
            Some(t) if timed && t < self.resume.before => {
                self.stats.sink_taken(s.batch.engine_bytes());
                Ok(())
            }
            Some(t) if timed && t >= self.appended => {
                held.push(b);
                Ok(())
            }
            time => {
                if let (Some(t), true) = (time, timed) {
                    self.max_stamp = Some(self.max_stamp.map_or(t, |m| m.max(t)));
                }
                self.write_ref(&s.batch)?;
                self.stats.sink_taken(s.batch.engine_bytes());
                if matches!(s.batch, SinkBatch::Progress { .. }) && !held.is_empty() {
                    let ready: Vec<B>;
                    (ready, *held) = std::mem::take(held)
                        .into_iter()
                        .partition(|b| b.borrow().time.is_some_and(|t| t < self.appended));
                    for b in ready {
                        self.place(b, held)?;
                    }
                }
                Ok(())
            }
        }
    }

    /// Keeps only the [`ActionTally`] of actions in the report, not every
    /// action's latest row (for long runs).
    pub fn tally_actions_only(mut self) -> Self {
        self.keep_action_rows = false;
        self
    }

    fn enabled(&self, table: &str) -> bool {
        self.plan.tables.iter().any(|t| t == table)
    }

    /// Writes one batch of rows, partitioned by date.
    pub fn write(&mut self, batch: SinkBatch) -> Result<(), String> {
        self.write_ref(&batch)
    }

    /// [`ParquetWriter::write`] for a batch shared with other sinks.
    pub fn write_ref(&mut self, batch: &SinkBatch) -> Result<(), String> {
        match batch {
            SinkBatch::Aggregates(rows) => {
                tracing::trace!(target: "plantflow::latency", n = rows.len(), event_time = rows.first().map(|r| r.0.win.window_end), "parquet received");
                self.stats.add_aggregates(rows);
                if !self.enabled("aggregates") {
                    return Ok(());
                }
                let parts = by_date(rows, |r| r.0.win.window_start);
                for (date, rs) in parts {
                    let b = aggregates_batch(&self.schemas["aggregates"], &rs, &self.metrics)?;
                    self.append("aggregates", &date, b)?;
                }
            }
            SinkBatch::Actions(rows) => self.actions(rows)?,
            SinkBatch::Outcomes(rows) => {
                for r in rows {
                    self.report
                        .outcomes
                        .insert(r.0.action_id.clone(), r.clone());
                }
                let mut verdicts = BTreeMap::new();
                for (o, _) in self.report.outcomes.values() {
                    *verdicts.entry(o.verdict.clone()).or_default() += 1;
                }
                self.stats.set_outcomes(verdicts);
                let have = &self.resume.revisions.outcomes;
                let parts = newer(by_date(rows, |r| r.0.reporting_start), |r| {
                    have.get(&r.0.action_id).is_none_or(|&h| r.1 > h)
                });
                for (date, rs) in parts {
                    if self.enabled("outcomes") {
                        let b = outcomes_batch(
                            &self.schemas["outcomes"],
                            &rs,
                            &self.dataflow,
                            &self.currency,
                        )?;
                        self.append("outcomes", &date, b)?;
                    }
                    // The series behind final outcomes (only those carry buckets).
                    let series: Vec<_> =
                        rs.into_iter().filter(|r| !r.0.buckets.is_empty()).collect();
                    if !series.is_empty() && self.enabled("outcome_buckets") {
                        let b = outcome_buckets_batch(
                            &self.schemas["outcome_buckets"],
                            &series,
                            &self.dataflow,
                        )?;
                        self.append("outcome_buckets", &date, b)?;
                    }
                }
            }
            SinkBatch::Billing(rows) => {
                for r in rows {
                    self.report
                        .bills
                        .insert((r.0.site.clone(), r.0.period_start), r.clone());
                }
                if !self.enabled("billing") {
                    return Ok(());
                }
                let have = &self.resume.revisions.billing;
                let parts = newer(by_date(rows, |r| r.0.period_start), |r| {
                    let key = (r.0.site.clone(), r.0.period_start);
                    have.get(&key).is_none_or(|&h| r.1 > h)
                });
                for (date, rs) in parts {
                    let b = billing_batch(&self.schemas["billing"], &rs, &self.currency)?;
                    self.append("billing", &date, b)?;
                }
            }
            SinkBatch::ActionTotals(totals) => {
                for t in totals {
                    self.report.tally.apply(t);
                }
                let kinds = self.report.tally.by_owner();
                self.stats.set_actions(
                    kinds
                        .into_iter()
                        .map(|(o, t, n, v)| ((o.to_string(), t.to_string()), (n as u64, v)))
                        .collect(),
                );
            }
            SinkBatch::DeadLetters(rows) => {
                if !self.enabled("dead_letter") {
                    return Ok(());
                }
                let parts = by_date(rows, |r| r.received_at);
                for (date, rs) in parts {
                    let b = dead_letter_batch(&self.schemas["dead_letter"], &rs)?;
                    self.append("dead_letter", &date, b)?;
                }
            }
            SinkBatch::Gaps(rows) => {
                if !self.enabled("gaps") {
                    return Ok(());
                }
                let parts = by_date(rows, |r| r.start);
                for (date, rs) in parts {
                    let b = gaps_batch(&self.schemas["gaps"], &rs)?;
                    self.append("gaps", &date, b)?;
                }
            }
            SinkBatch::TagQuality(rows) => {
                if !self.enabled("tag_quality") {
                    return Ok(());
                }
                for (date, rs) in by_date(rows, |r| r.snapshot_at) {
                    let b = tag_quality_batch(&self.schemas["tag_quality"], &rs)?;
                    self.append("tag_quality", &date, b)?;
                }
            }
            SinkBatch::Progress { source, of, time } => self.progress(*source, *of, *time),
        }
        Ok(())
    }

    /// Action revisions: tallied, kept for the summary, and appended.
    fn actions(&mut self, rows: &[(ActionRow, i64)]) -> Result<(), String> {
        for (r, _) in rows {
            self.report.tally.keep(r);
        }
        for r in rows.iter().filter(|_| self.keep_action_rows) {
            let e = self
                .report
                .actions
                .entry(r.0.action_id.clone())
                .or_insert_with(|| r.clone());
            if r.1 >= e.1 {
                *e = r.clone();
            }
        }
        if !self.enabled("actions") {
            return Ok(());
        }
        let have = &self.resume.revisions.actions;
        let parts = newer(by_date(rows, |r| r.0.period_start), |r| {
            have.get(&r.0.action_id).is_none_or(|&h| r.1 > h)
        });
        for (date, rs) in parts {
            let b = actions_batch(
                &self.schemas["actions"],
                &rs,
                &self.dataflow,
                &self.currency,
            )?;
            self.append("actions", &date, b)?;
        }
        Ok(())
    }

    /// Notes one output's progress; once every output has passed a multiple
    /// of `roll_interval` in event time, the next [`Self::roll_event_time`] commits.
    fn progress(&mut self, source: usize, of: usize, time: u64) {
        if self.progress.len() != of {
            self.progress = vec![0; of];
        }
        if let Some(p) = self.progress.get_mut(source) {
            *p = (*p).max(time);
        }
        let Some(&min) = self.progress.iter().min() else {
            return;
        };
        self.appended = self.appended.max(min);
        // Timely times are watermark epochs + 1: a window ending at `e` is
        // emitted at time `e`, so everything ending before `min` is complete.
        let complete = (min.min(i64::MAX as u64) as i64).saturating_sub(1);
        if complete <= self.complete_ms {
            return;
        }
        let roll = self.plan.roll_interval_ms.max(1) as i64;
        if self.complete_ms != i64::MIN
            && complete.div_euclid(roll) > self.complete_ms.div_euclid(roll)
        {
            self.boundary_passed = true;
        }
        self.complete_ms = complete;
    }

    fn append(&mut self, table: &str, date: &str, batch: RecordBatch) -> Result<(), String> {
        let key = (table.to_string(), date.to_string());
        if !self.open.contains_key(&key) {
            let f = self.create(table, date)?;
            self.open.insert(key.clone(), f);
        }
        let n = batch.num_rows() as u64;
        *self.report.rows.entry(table.to_string()).or_default() += n;
        let f = self.open.get_mut(&key).expect("inserted above");
        f.writer
            .write(&batch)
            .map_err(|e| format!("writing {}: {e}", f.tmp.display()))?;
        f.rows += n;
        let size = (f.writer.bytes_written() + f.writer.in_progress_size()) as u64;
        self.uncommitted_since.get_or_insert_with(Instant::now);
        if f.rows >= self.plan.roll_rows || size >= self.plan.roll_bytes {
            self.close(&key)?;
        }
        Ok(())
    }

    fn create(&mut self, table: &str, date: &str) -> Result<OpenFile, String> {
        let dir = self.plan.path.join(table).join(format!("date={date}"));
        let fresh = !dir.exists();
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        if fresh {
            // New directories' names reach the disk too (the table's and the
            // lake's own, when they are new as well).
            for d in dir.ancestors().skip(1).take(3) {
                File::open(d)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| format!("syncing {}: {e}", d.display()))?;
            }
        }
        self.seq += 1;
        let name = format!("part-{}-{:05}.parquet", self.run_id, self.seq);
        let target = dir.join(&name);
        let tmp = dir.join(format!(".{name}.inprogress"));
        let file =
            File::create(&tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
        let props = file_properties(&self.schemas[table], Some(self.plan.row_group_rows));
        let writer = ArrowWriter::try_new(file, self.schemas[table].clone(), Some(props))
            .map_err(|e| format!("cannot start {}: {e}", tmp.display()))?;
        Ok(OpenFile {
            writer,
            tmp,
            target,
            rows: 0,
        })
    }

    /// Finishes an open file and stages it for the next commit: its bytes
    /// reach the disk now, its name at the commit.
    fn close(&mut self, key: &(String, String)) -> Result<(), String> {
        if let Some(f) = self.open.remove(key) {
            let file = f
                .writer
                .into_inner()
                .map_err(|e| format!("finishing {}: {e}", f.tmp.display()))?;
            file.sync_all()
                .map_err(|e| format!("syncing {}: {e}", f.tmp.display()))?;
            let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
            self.staged.push(Staged {
                tmp: f.tmp,
                target: f.target,
                table: key.0.clone(),
                rows: f.rows,
                bytes,
            });
        }
        Ok(())
    }

    /// Commits every table's files together: closes what is open, records
    /// the commit (a durable lake), then renames the staged files into
    /// place. A power cut leaves either the old commit or the new one, and
    /// never a visible half-written file.
    fn commit_all(&mut self) -> Result<(), String> {
        let keys: Vec<_> = self.open.keys().cloned().collect();
        for k in keys {
            self.close(&k)?;
        }
        self.uncommitted_since = None;
        let staged = std::mem::take(&mut self.staged);
        let (before, ready) = (self.before(), self.ready(self.before()));
        if let Some(d) = &mut self.durable {
            // Only the last commit says the run is finished: the sources
            // end before the engine has closed their last windows, and a
            // commit between the two holds none of those yet.
            let finished = self.ending && d.finished.load(std::sync::atomic::Ordering::Relaxed);
            if !staged.is_empty() || finished || ready.is_some() {
                d.seq += 1;
                let lake = &self.plan.path;
                let files = staged
                    .iter()
                    .map(|f| {
                        let t = &f.target;
                        t.strip_prefix(lake).unwrap_or(t).display().to_string()
                    })
                    .collect();
                let m = super::commit::Marker {
                    format: super::commit::FORMAT,
                    dataflow: d.identity.dataflow.clone(),
                    fingerprint: d.identity.fingerprint.clone(),
                    version: env!("CARGO_PKG_VERSION").to_string(),
                    seq: d.seq,
                    before,
                    finished,
                    files,
                    committed_at: crate::model::now_ms(),
                    drained: self.ending && d.drain && !finished,
                    checkpoint: ready.clone().or_else(|| d.named.clone()),
                    previous_checkpoint: match &ready {
                        Some(_) => d.named.clone(),
                        None => d.previous.clone(),
                    },
                };
                if let Some(sync) = &d.sync_log {
                    sync()?;
                }
                crate::model::crash_point("before-record", d.seq);
                super::commit::write(lake, &m)?;
                crate::model::crash_point("after-record", d.seq);
                if let (Some(r), Some(c)) = (ready, &d.checkpoints) {
                    // What the new checkpoint replaces can go.
                    (c.committed)(&r, d.named.as_ref());
                    d.previous = d.named.replace(r);
                }
            }
        }
        let mut dirs = std::collections::BTreeSet::new();
        for f in &staged {
            let (tmp, target) = (&f.tmp, &f.target);
            std::fs::rename(tmp, target)
                .map_err(|e| format!("renaming {} to {}: {e}", tmp.display(), target.display()))?;
            dirs.extend(target.parent().map(|d| d.to_path_buf()));
        }
        for d in dirs {
            super::commit::sync_dir(&d)?;
        }
        if let Some(d) = self.durable.as_mut().filter(|_| !staged.is_empty()) {
            if let Some(delta) = &mut d.delta {
                crate::model::crash_point("before-delta", d.seq);
                let added: Vec<super::delta::Added<'_>> = staged
                    .iter()
                    .map(|f| super::delta::Added {
                        table: &f.table,
                        path: &f.target,
                        bytes: f.bytes,
                        rows: f.rows,
                    })
                    .collect();
                delta.commit(&added, d.seq)?;
            }
        }
        // A lake on object storage: the bucket gets what this commit made
        // (and, at the end, the last record).
        let ending = self.ending;
        if let Some(d) = self
            .durable
            .as_mut()
            .filter(|_| !staged.is_empty() || ending)
        {
            if let Some(ship) = &mut d.ship {
                crate::model::crash_point("before-ship", d.seq);
                ship.sync()?;
            }
        }
        for f in &staged {
            self.stats.lake_committed(&f.table, f.rows, f.bytes);
        }
        self.report.files += staged.len() as u64;
        Ok(())
    }

    /// Commits every open file once every engine output has passed an
    /// event-time roll boundary (`roll_by = "event_time"`), so the rows of
    /// one window close from every worker go into the same file.
    pub fn roll_event_time(&mut self) -> Result<(), String> {
        if !self.plan.roll_event_time || !self.boundary_passed {
            return Ok(());
        }
        self.boundary_passed = false;
        self.commit_all()?;
        tracing::trace!(target: "plantflow::latency", event_time = self.complete_ms, "parquet committed");
        Ok(())
    }

    /// Commits once the oldest uncommitted row is `roll_interval` old.
    pub fn roll_aged(&mut self) -> Result<(), String> {
        if self.plan.roll_interval_ms == 0 || self.plan.roll_event_time {
            return Ok(());
        }
        let limit = Duration::from_millis(self.plan.roll_interval_ms);
        // A node whose input went quiet (no row waiting) names a ready
        // checkpoint too: a restart then replays only the log after it.
        let quiet = self.uncommitted_since.is_none() && self.ready(self.before()).is_some();
        if self.uncommitted_since.is_some_and(|t| t.elapsed() >= limit) || quiet {
            self.commit_all()?;
        }
        Ok(())
    }

    /// The sources' dead letters are taken: they may send more (rows from
    /// the value layer were never counted, nor those a replay of the input
    /// log sends: the count stops at 0).
    fn dead_letters_taken(&self, n: usize) {
        let _ = self.stats.dead_letters_queued.fetch_update(
            std::sync::atomic::Ordering::Relaxed,
            std::sync::atomic::Ordering::Relaxed,
            |q| Some(q.saturating_sub(n as u64)),
        );
    }

    /// The `before` of a commit now: rows stamped before `appended` are
    /// written; at the end every output has passed everything, and the
    /// last stamp bounds it.
    fn before(&self) -> u64 {
        match self.appended {
            u64::MAX => self.max_stamp.map_or(0, |m| m + 1),
            a => a,
        }
        .max(self.resume.before)
    }

    /// The checkpoint a commit with `before` names anew: one of everything
    /// before `before` or earlier, newer than the one named.
    fn ready(&self, before: u64) -> Option<super::commit::CheckpointRef> {
        let d = self.durable.as_ref()?;
        let ready = d.checkpoints.as_ref()?.ready.lock().ok()?.clone()?;
        let newer = d.named.as_ref().is_none_or(|n| ready.at > n.at);
        (ready.at <= before && newer).then_some(ready)
    }

    /// Commits everything still open.
    /// Whether the run stopped before reading its input to its end (and
    /// does not drain): only a durable lake knows.
    fn stopped(&self) -> bool {
        self.durable
            .as_ref()
            .is_some_and(|d| !d.drain && !d.finished.load(std::sync::atomic::Ordering::Relaxed))
    }

    pub fn finish(mut self) -> Result<WriterReport, String> {
        self.commit_all()?;
        Ok(self.report)
    }
}

/// Each date's rows that are `new` (a revision the lake does not have yet),
/// dates left without any dropped.
fn newer<T>(parts: BTreeMap<String, Vec<&T>>, new: impl Fn(&T) -> bool) -> Vec<(String, Vec<&T>)> {
    parts
        .into_iter()
        .map(|(d, rs)| (d, rs.into_iter().filter(|r| new(r)).collect::<Vec<_>>()))
        .filter(|(_, rs)| !rs.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// The sources end before the engine closes their last windows: a
    /// commit in between (a roll) must not tell the next start that the
    /// lake holds the whole run; only the last commit does.
    #[test]
    fn only_the_last_commit_says_the_run_is_finished() {
        let lake = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(lake.path().join(super::super::commit::DIR)).unwrap();
        let plan = ParquetPlan {
            id: "lake".into(),
            key: "sinks[0]".into(),
            path: lake.path().to_path_buf(),
            tables: vec!["aggregates".into()],
            roll_rows: 1000,
            roll_bytes: 1 << 20,
            roll_interval_ms: 1,
            roll_event_time: false,
            row_group_rows: 1000,
            max_queue_bytes: 1 << 20,
            delta: false,
            remote: None,
        };
        let finished = Arc::new(AtomicBool::new(false));
        let durable = Durable {
            identity: super::super::commit::Identity {
                dataflow: "df".into(),
                fingerprint: "abc".into(),
            },
            seq: 0,
            finished: finished.clone(),
            checkpoints: None,
            named: None,
            previous: None,
            drain: false,
            logged: false,
            delta: None,
            ship: None,
            sync_log: None,
        };
        let stats = Arc::new(Stats::default());
        let mut w = ParquetWriter::new(plan, "df", "EUR", Vec::new(), stats)
            .durable(durable, Resume::default());
        finished.store(true, Ordering::Relaxed);
        w.commit_all().unwrap();
        let record = super::super::commit::read(lake.path()).unwrap();
        assert!(
            record.as_ref().is_none_or(|m| !m.finished),
            "a roll after the sources ended is not the run's end"
        );
        w.ending = true;
        w.finish().unwrap();
        let record = super::super::commit::read(lake.path()).unwrap().unwrap();
        assert!(record.finished, "the last commit is");
    }
}
