//! The writer: one open file per table and date, rolled on rows, size or
//! age (or event time), committed by rename; the thread that drains the
//! engine's batches.

use super::*;

pub(super) struct OpenFile {
    writer: ArrowWriter<File>,
    tmp: PathBuf,
    target: PathBuf,
    rows: u64,
    opened: Instant,
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
}

impl ParquetWriter {
    pub fn new(
        plan: ParquetPlan,
        dataflow: &str,
        currency: &str,
        metrics: Vec<MetricPlan>,
        stats: Arc<Stats>,
    ) -> ParquetWriter {
        let mut schemas = HashMap::new();
        schemas.insert("aggregates".to_string(), aggregates_schema(&metrics));
        schemas.insert("actions".to_string(), actions_schema());
        schemas.insert("outcomes".to_string(), outcomes_schema());
        schemas.insert("billing".to_string(), billing_schema());
        schemas.insert("dead_letter".to_string(), dead_letter_schema());
        schemas.insert("gaps".to_string(), gaps_schema());
        schemas.insert("outcome_buckets".to_string(), outcome_buckets_schema());
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
            SinkBatch::Actions(rows) => {
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
                let parts = by_date(rows, |r| r.0.period_start);
                for (date, rs) in parts {
                    let b = actions_batch(
                        &self.schemas["actions"],
                        &rs,
                        &self.dataflow,
                        &self.currency,
                    )?;
                    self.append("actions", &date, b)?;
                }
            }
            SinkBatch::Outcomes(rows) => {
                for r in rows {
                    self.report
                        .outcomes
                        .insert(r.0.action_id.clone(), r.clone());
                }
                let parts = by_date(rows, |r| r.0.reporting_start);
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
                let parts = by_date(rows, |r| r.0.period_start);
                for (date, rs) in parts {
                    let b = billing_batch(&self.schemas["billing"], &rs, &self.currency)?;
                    self.append("billing", &date, b)?;
                }
            }
            SinkBatch::ActionTotals(totals) => {
                for t in totals {
                    self.report.tally.apply(t);
                }
            }
            SinkBatch::DeadLetters(rows) => {
                // The sources' rows are taken: they may send more (rows from
                // the value layer were never counted; the count stops at 0).
                let n = rows.len() as u64;
                let _ = self.stats.dead_letters_queued.fetch_update(
                    std::sync::atomic::Ordering::Relaxed,
                    std::sync::atomic::Ordering::Relaxed,
                    |q| Some(q.saturating_sub(n)),
                );
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
            SinkBatch::Progress { source, of, time } => self.progress(*source, *of, *time),
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
        if f.rows >= self.plan.roll_rows || size >= self.plan.roll_bytes {
            self.commit(&key)?;
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
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .set_max_row_group_row_count(Some(self.plan.row_group_rows))
            .build();
        let writer = ArrowWriter::try_new(file, self.schemas[table].clone(), Some(props))
            .map_err(|e| format!("cannot start {}: {e}", tmp.display()))?;
        Ok(OpenFile {
            writer,
            tmp,
            target,
            rows: 0,
            opened: Instant::now(),
        })
    }

    fn commit(&mut self, key: &(String, String)) -> Result<(), String> {
        if let Some(f) = self.open.remove(key) {
            // The file's bytes reach the disk before its name does, and the
            // name before the commit counts: a power cut leaves either no
            // file or a whole one, never a visible half-written one.
            let file = f
                .writer
                .into_inner()
                .map_err(|e| format!("finishing {}: {e}", f.tmp.display()))?;
            file.sync_all()
                .map_err(|e| format!("syncing {}: {e}", f.tmp.display()))?;
            drop(file);
            std::fs::rename(&f.tmp, &f.target).map_err(|e| {
                format!(
                    "renaming {} to {}: {e}",
                    f.tmp.display(),
                    f.target.display()
                )
            })?;
            if let Some(dir) = f.target.parent() {
                File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| format!("syncing {}: {e}", dir.display()))?;
            }
            self.report.files += 1;
        }
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
        let keys: Vec<_> = self.open.keys().cloned().collect();
        for k in keys {
            self.commit(&k)?;
        }
        tracing::trace!(target: "plantflow::latency", event_time = self.complete_ms, "parquet committed");
        Ok(())
    }

    /// Commits files older than `roll_interval`.
    pub fn roll_aged(&mut self) -> Result<(), String> {
        if self.plan.roll_interval_ms == 0 || self.plan.roll_event_time {
            return Ok(());
        }
        let limit = Duration::from_millis(self.plan.roll_interval_ms);
        let aged: Vec<_> = self
            .open
            .iter()
            .filter(|(_, f)| f.opened.elapsed() >= limit)
            .map(|(k, _)| k.clone())
            .collect();
        for k in aged {
            self.commit(&k)?;
        }
        Ok(())
    }

    /// Commits everything still open.
    pub fn finish(mut self) -> Result<WriterReport, String> {
        let keys: Vec<_> = self.open.keys().cloned().collect();
        for k in keys {
            self.commit(&k)?;
        }
        Ok(self.report)
    }
}

/// The writer loop: runs until every sender is gone, then commits all files.
pub fn run_writer<B: std::borrow::Borrow<SinkBatch>>(
    rx: Receiver<B>,
    mut writer: ParquetWriter,
) -> Result<WriterReport, String> {
    let tick = Duration::from_millis(100);
    loop {
        match rx.recv_timeout(tick) {
            Ok(batch) => {
                writer.write_ref(batch.borrow())?;
                // Drain what is queued before committing on event time.
                while let Ok(batch) = rx.try_recv() {
                    writer.write_ref(batch.borrow())?;
                }
                writer.roll_event_time()?;
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        writer.roll_aged()?;
    }
    writer.finish()
}
