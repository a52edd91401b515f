//! Turns raw rows into [`Sample`]s: parse, check, intern the tag, apply the
//! quality policy, track the watermark, and cut batches at epoch boundaries.
//!
//! # Lateness
//! The watermark is `max event time seen − allowed_lateness`. A row whose
//! window already closed (its end ≤ the watermark epoch) is still sent: the
//! engine turns it into a correction. A row whose window has already left
//! state (`retention`) cannot be corrected any more and is dead-lettered.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::Sender;
use std::sync::Arc;

use super::bridge::DeadLetters;
use crate::config::{QualityPolicy, WindowPlan};
use crate::ingest::{Geometry, Ingest, TagRegistry};
use crate::model::edit::Edit;
use crate::model::{now_ms, DeadLetter, DeadLetterLimits, Quality, Sample};
use crate::model::{SinkBatch, Stamped};
use crate::stats::{Stats, MAX_QUEUED_DEAD_LETTERS};

pub use super::parse::{parse_f64, parse_text, parse_ts, trim};

/// Earliest plausible event time: 2000-01-01T00:00:00Z.
const MIN_TS: i64 = 946_684_800_000;

/// Where a message source's context edits go (the context store).
pub trait ContextEdits: Send + Sync {
    /// Applies edits from one message; nothing is applied when one fails.
    fn apply(&self, edits: Vec<Edit>) -> Result<(), String>;
}

/// What a source needs to hand over rows.
#[derive(Clone)]
pub struct SourceCtx {
    pub index: usize,
    pub id: String,
    pub ingest: Arc<Ingest>,
    pub tags: Arc<TagRegistry>,
    pub sink: Sender<Stamped>,
    /// The source is a file (a replay): its dead letters are stamped, so
    /// the lake keeps them once (see `flush`; unlogged, a resumed run reads
    /// it again from its start, and the stamp is its epoch).
    pub replayed: bool,
    pub stats: Arc<Stats>,
    pub stop: Arc<AtomicBool>,
    pub window: WindowPlan,
    pub geometry: Geometry,
    pub follow: bool,
    /// Live context tables (message sources edit them).
    pub context: Option<Arc<dyn ContextEdits>>,
    /// How much of bad input its dead letters keep.
    pub dead_letter: DeadLetterLimits,
    /// What the node has seen of each tag.
    pub watch: Arc<super::watch::TagWatch>,
    /// This process's share of the input, `(process, processes)` (a
    /// cluster's; `(0, 1)` alone): a file read in jobs takes every
    /// `processes`-th job from `process` on; any other source runs whole
    /// on the process its index modulo `processes` names.
    pub share: (usize, usize),
}

impl SourceCtx {
    pub fn stopped(&self) -> bool {
        self.stop.load(Relaxed)
    }

    /// Whether this process reads the source when it is not read in jobs.
    pub fn runs_whole(&self) -> bool {
        self.index % self.share.1.max(1) == self.share.0
    }

    /// Whether job `j` of a file read in jobs is this process's (jobs are
    /// numbered from the file's start, so a resumed process keeps its own).
    pub fn reads_job(&self, j: usize) -> bool {
        j % self.share.1.max(1) == self.share.0
    }

    /// Applies context edits from a message.
    pub fn context_edits(&self, edits: Vec<Edit>) -> Result<(), String> {
        match &self.context {
            Some(c) => c.apply(edits),
            None => Err("context updates are not enabled for this source".into()),
        }
    }
}

/// Per-row counters, published to [`Stats`] at every flush.
#[derive(Default)]
struct Counts {
    read: u64,
    /// Bytes read (message topics and payloads, a file's bytes).
    bytes: u64,
    accepted: u64,
    dropped_quality: u64,
    late: u64,
}

/// Per-source normaliser state.
pub struct Normalizer {
    ctx: SourceCtx,
    max_ts: Option<i64>,
    epoch: u64,
    batch: Vec<Sample>,
    batch_rows: usize,
    dead: Vec<DeadLetter>,
    /// How many of `dead` are of rows before `position` (a file source's):
    /// the rest, of the row at the position, wait for a later flush, so the
    /// log never holds a dead letter of a row a restart reads again.
    dead_before: usize,
    now: i64,
    /// The registry's tags as of the last lookup that missed: no lock per row.
    tags: crate::ingest::TagView,
    /// Row counters not yet added to the shared [`Stats`] (one atomic add per
    /// batch instead of several per row).
    counts: Counts,
    /// Topic of the message being normalised (message sources).
    topic: Option<String>,
    /// Dead letters of the message being normalised, while one is.
    message: Option<MessageDead>,
    /// Hashes of the whole messages whose rows are in `batch`: logged with
    /// them, so their redelivery after a restart is recognised.
    messages: Vec<u64>,
    /// Hashes of the latest messages the input log had at start, while
    /// the broker may still be delivering them again.
    redeliverable: Option<std::collections::HashSet<u64>>,
    /// The latest event time the input log had for this source, until a
    /// source that cannot replay (OPC UA) has marked the outage as a gap.
    resumed_at: Option<i64>,
    /// The last logged sample per tag, until the tag's next sample: the
    /// same sample sent again after a restart is not counted twice.
    resumed_last: std::collections::HashMap<crate::model::TagId, Sample>,
    /// A file source's position: everything before it is in `batch` or done.
    position: Option<u64>,
    /// Where the input log says a file source goes on, until it has.
    resumed_position: Option<u64>,
    /// The tags seen since the last merge into the tag watch, and when that was.
    seen: super::watch::Seen,
    merged: std::time::Instant,
}

/// Dead letters of one message so far.
#[derive(Default)]
struct MessageDead {
    kept: usize,
    dropped: u64,
    /// The reason of the first rejection not kept.
    first_dropped: String,
}

impl Normalizer {
    pub fn new(ctx: SourceCtx, batch_rows: usize) -> Normalizer {
        let tags = ctx.tags.view();
        // A durable node's source goes on where the input log left it.
        let resumed = ctx.ingest.resumed(ctx.index).unwrap_or_default();
        Normalizer {
            ctx,
            max_ts: resumed.max_ts,
            epoch: resumed.epoch,
            messages: Vec::new(),
            redeliverable: (!resumed.messages.is_empty()).then_some(resumed.messages),
            resumed_at: resumed.max_ts,
            resumed_last: resumed.last,
            position: None,
            resumed_position: resumed.position,
            batch: Vec::with_capacity(batch_rows),
            batch_rows,
            dead: Vec::new(),
            dead_before: 0,
            now: now_ms(),
            tags,
            counts: Counts::default(),
            topic: None,
            message: None,
            seen: Default::default(),
            merged: std::time::Instant::now(),
        }
    }

    /// A message begins: its dead letters are capped at `[dead_letter]
    /// per_message` rows until [`Normalizer::end_message`]; further
    /// rejections are counted (in the stats, and in one last row).
    pub fn begin_message(&mut self) {
        self.message = Some(MessageDead::default());
    }

    /// The message ends: rejections past the cap become one row (with the
    /// message's first bytes) saying how many were not kept.
    pub fn end_message(&mut self, topic: &str, payload: &[u8]) {
        self.counts.bytes += (topic.len() + payload.len()) as u64;
        self.messages.push(message_hash(topic, payload));
        if self.batch.len() >= self.batch_rows {
            self.flush();
        }
        if let Some(m) = self.message.take().filter(|m| m.dropped > 0) {
            let reason = format!(
                "{} more rejections in this message not kept (the first: {})",
                m.dropped, m.first_dropped
            );
            self.push_message(&reason, topic, payload);
        }
    }

    /// Whether a row is the tag's last logged sample, sent again after a
    /// restart (a new subscription's current value, a retained message);
    /// the tag's first row after the restart ends the check for it.
    fn sent_again(
        &mut self,
        tag: crate::model::TagId,
        ts: i64,
        value: f64,
        quality: Quality,
    ) -> bool {
        let Some(last) = self.resumed_last.remove(&tag) else {
            return false;
        };
        let same =
            last.ts == ts && last.value.to_bits() == value.to_bits() && last.quality == quality;
        if same {
            let what = "samples sent again after a restart (already in the input log)";
            self.ctx.stats.event(what, 1);
        }
        same
    }

    /// A file source's position: every row before it has been handed over
    /// (call it before each row, and at the end of what there is).
    pub fn set_position(&mut self, at: u64) {
        self.position = Some(at);
        self.dead_before = self.dead.len();
    }

    /// Where the input log says this file source goes on (once).
    pub fn take_resumed_position(&mut self) -> Option<u64> {
        self.resumed_position.take()
    }

    /// The event time of `tag`'s last sample in the input log, if this
    /// source was resumed and logged one.
    pub fn resumed_ts(&mut self, tag: &str) -> Option<i64> {
        let id = self.tag_id(tag)?;
        self.resumed_last.get(&id).map(|s| s.ts)
    }

    /// The latest event time the input log had for this source (once): a
    /// restarted source that cannot replay marks the outage from there.
    pub fn take_resumed_at(&mut self) -> Option<i64> {
        self.resumed_at.take()
    }

    /// Whether a message is one the input log already has, delivered again
    /// after a restart (QoS 1 is at least once). Redeliveries come first on
    /// a resumed session: the first message the log does not have ends the
    /// check.
    pub fn redelivered(&mut self, topic: &str, payload: &[u8]) -> bool {
        let Some(known) = &self.redeliverable else {
            return false;
        };
        if known.contains(&message_hash(topic, payload)) {
            return true;
        }
        self.redeliverable = None;
        false
    }

    /// Whether a rejection gets its own row (false past the message's cap).
    fn keep(&mut self, reason: &str) -> bool {
        match &mut self.message {
            Some(m) if m.kept >= self.ctx.dead_letter.per_message => {
                if m.dropped == 0 {
                    m.first_dropped = reason.to_string();
                }
                m.dropped += 1;
                false
            }
            Some(m) => {
                m.kept += 1;
                true
            }
            None => true,
        }
    }

    pub fn ctx(&self) -> &SourceCtx {
        &self.ctx
    }

    /// Records a bad row.
    pub fn reject(&mut self, reason: &str, raw: impl Into<String>) {
        self.ctx.stats.rows_read.fetch_add(1, Relaxed);
        self.ctx.stats.dead_letter(reason);
        if !self.keep(reason) {
            return;
        }
        let mut d =
            DeadLetter::text_within(&self.ctx.id, reason, raw, self.ctx.dead_letter.max_raw);
        d.topic = self.topic.clone();
        self.dead.push(d);
        self.dead_flush_check();
    }

    /// Records a bad item of a live source (a node, a register) named by
    /// `topic`; counted under the reason without its details.
    pub fn reject_at(&mut self, reason: &str, topic: &str, raw: impl Into<String>) {
        self.ctx.stats.rows_read.fetch_add(1, Relaxed);
        self.ctx.stats.dead_letter(&reason_class(reason));
        if !self.keep(reason) {
            return;
        }
        let mut d =
            DeadLetter::text_within(&self.ctx.id, reason, raw, self.ctx.dead_letter.max_raw);
        d.topic = Some(topic.to_string());
        self.dead.push(d);
        self.dead_flush_check();
    }

    /// The message topic rows come from until changed (dead letters name it).
    pub fn set_topic(&mut self, topic: Option<&str>) {
        if self.topic.as_deref() != topic {
            self.topic = topic.map(str::to_string);
        }
    }

    /// Records a bad message (topic and payload kept; binary as base64).
    pub fn reject_message(&mut self, reason: &str, topic: &str, payload: &[u8]) {
        self.ctx.stats.rows_read.fetch_add(1, Relaxed);
        self.ctx.stats.dead_letter(&reason_class(reason));
        if self.keep(reason) {
            self.push_message(reason, topic, payload);
        }
    }

    /// A message's dead letter, within `[dead_letter] max_raw`.
    fn push_message(&mut self, reason: &str, topic: &str, payload: &[u8]) {
        let max = self.ctx.dead_letter.max_raw;
        let d = DeadLetter::message_within(&self.ctx.id, topic, reason, payload, max);
        self.dead.push(d);
        self.dead_flush_check();
    }

    fn dead_flush_check(&mut self) {
        if self.dead.len() >= 1024 {
            // (a logged file's go with its rows, see `flush`)
            if self.logs_dead() {
                self.flush();
            } else {
                self.flush_dead();
            }
        }
    }

    /// Whether this source's dead letters are logged with its rows (and
    /// sent to the lake by the bridge, see `bridge/dead.rs`): a file's,
    /// while the input is logged.
    fn logs_dead(&self) -> bool {
        self.ctx.replayed && self.ctx.ingest.logs()
    }

    /// Parses and accepts one text row.
    pub fn text_row(
        &mut self,
        ts: &str,
        tag: &str,
        value: &str,
        quality: &str,
        raw: &dyn Fn() -> String,
    ) {
        match parse_text(ts, value, quality) {
            Ok((ts, value, quality)) => self.row(ts, trim(tag), value, quality, raw),
            Err(reason) => self.reject(reason, raw()),
        }
    }

    /// Checks and accepts one typed row.
    pub fn row(
        &mut self,
        ts: i64,
        tag: &str,
        value: f64,
        quality: Quality,
        raw: &dyn Fn() -> String,
    ) {
        if !value.is_finite() {
            return self.reject("value is NaN or infinite", raw());
        }
        match self.tag_id(tag) {
            Some(id) => self.row_id(ts, id, value, quality, raw),
            None => self.unknown_tag(tag, ts, value, raw),
        }
    }

    /// `n` more bytes of input were read (a file source).
    pub fn bytes_in(&mut self, n: u64) {
        self.counts.bytes += n;
    }

    /// Dead-letters a sample of a tag the assets table does not know, and
    /// tells the tag watch (the `unmapped` tags).
    pub fn unknown_tag(&mut self, tag: &str, ts: i64, value: f64, raw: &dyn Fn() -> String) {
        if value.is_finite() {
            self.seen.unmapped(tag, ts, value);
        }
        self.reject("unknown tag", raw())
    }

    /// The interned id of a tag, if the assets table knows it.
    pub fn tag_id(&mut self, tag: &str) -> Option<crate::model::TagId> {
        self.ctx.tags.get_fresh(&mut self.tags, tag)
    }

    /// A row of `tag` comes soon (see [`crate::model::hint`]).
    #[inline]
    pub fn prefetch(&self, tag: crate::model::TagId) {
        self.seen.prefetch(tag);
    }

    /// Checks and accepts one typed row whose tag is already interned.
    pub fn row_id(
        &mut self,
        ts: i64,
        tag: crate::model::TagId,
        value: f64,
        quality: Quality,
        raw: &dyn Fn() -> String,
    ) {
        if !value.is_finite() {
            return self.reject("value is NaN or infinite", raw());
        }
        let w = &self.ctx.window;
        if !(MIN_TS..=self.now + w.max_future_ms).contains(&ts) {
            return self.reject("timestamp out of range", raw());
        }
        if let Some(m) = self.max_ts {
            if ts > m + w.max_future_ms {
                return self.reject("timestamp far ahead of the stream", raw());
            }
        }
        let keep = match (w.quality, quality) {
            (QualityPolicy::KeepAll, _) => true,
            (QualityPolicy::DropBad, q) => q != Quality::Bad,
            (QualityPolicy::GoodOnly, q) => q == Quality::Good,
        };
        if !keep {
            self.counts.read += 1;
            self.counts.dropped_quality += 1;
            return;
        }
        let max = self.max_ts.map_or(ts, |m| m.max(ts));
        self.max_ts = Some(max);
        let epoch = self.ctx.ingest.epoch_of(max - w.lateness_ms);
        if epoch > self.epoch {
            self.flush();
            self.epoch = epoch;
            // Tell the engine at once: the windows this row closes are emitted
            // now, not when the next batch fills.
            self.ctx.ingest.samples(self.ctx.index, epoch, Vec::new());
            tracing::trace!(target: "plantflow::latency", epoch, "source advanced");
        }
        let geo = self.ctx.geometry;
        let end = geo.start_of(ts) + geo.size_ms;
        if geo.retract_at(end) <= self.epoch as i64 {
            return self.reject("later than retention", raw());
        }
        if self.epoch as i64 >= end {
            self.counts.late += 1;
        }
        self.counts.read += 1;
        if !self.resumed_last.is_empty() && self.sent_again(tag, ts, value, quality) {
            return;
        }
        self.counts.accepted += 1;
        self.seen.sample(tag, ts, value);
        self.batch.push(Sample {
            tag,
            ts,
            value,
            quality,
        });
        // A message's rows stay in one batch (see `end_message`).
        if self.batch.len() >= self.batch_rows && self.message.is_none() {
            self.flush();
        }
    }

    /// Hands the current batch to the engine.
    pub fn flush(&mut self) {
        // Refresh the clock the plausibility check uses (long --follow runs).
        self.now = now_ms();
        // A logged file's dead letters are logged with the rows and position
        // they came with (a restart after the position cannot lose them); a
        // message's are not (it is delivered again if not logged).
        // The bridge sends them to the lake (see `DeadLetters`).
        let (dead, later) = match self.logs_dead() {
            true => {
                let later = self.dead.split_off(self.dead_before.min(self.dead.len()));
                self.wait_for_time();
                self.queue_dead();
                (std::mem::take(&mut self.dead), later)
            }
            false => (Vec::new(), Vec::new()),
        };
        if !self.batch.is_empty() || !dead.is_empty() {
            let rows = std::mem::replace(&mut self.batch, Vec::with_capacity(self.batch_rows));
            let (index, epoch, at) = (self.ctx.index, self.epoch, self.position);
            let dead = DeadLetters {
                rows: dead,
                to: Some(&self.ctx.sink),
                stamp: None,
            };
            self.ctx
                .ingest
                .samples_of(index, epoch, rows, (&self.messages, dead), at);
        }
        self.messages.clear();
        if self.merged.elapsed() >= super::watch::MERGE_EVERY {
            self.merge_seen();
        }
        self.publish_counts();
        self.flush_dead();
        (self.dead, self.dead_before) = (later, 0);
    }

    /// Hands what the source has seen of its tags to the tag watch.
    fn merge_seen(&mut self) {
        self.ctx.watch.merge(&mut self.seen);
        self.merged = std::time::Instant::now();
    }

    /// The source has nothing more for now: hands its batch over, its tags
    /// to the tag watch, and lets the engine complete the current time.
    pub fn idle(&mut self) {
        self.flush();
        self.merge_seen();
        self.ctx.ingest.settle();
    }

    fn publish_counts(&mut self) {
        let c = std::mem::take(&mut self.counts);
        let s = &self.ctx.stats;
        if c.read > 0 || c.bytes > 0 || self.max_ts.is_some() {
            s.source_read(&self.ctx.id, c.read, c.bytes, self.max_ts);
        }
        for (counter, n) in [
            (&s.rows_read, c.read),
            (&s.rows_accepted, c.accepted),
            (&s.dropped_quality, c.dropped_quality),
            (&s.late_rows, c.late),
        ] {
            if n > 0 {
                counter.fetch_add(n, Relaxed);
            }
        }
    }

    /// Before a logged file's dead letters go: waits while many of them wait
    /// for the time (this source far ahead of another, see
    /// `Ingest::dead_ahead`).
    fn wait_for_time(&self) {
        if self.dead.is_empty() {
            return;
        }
        let mut waited = false;
        while self.ctx.ingest.dead_ahead() as u64 > MAX_QUEUED_DEAD_LETTERS && !self.ctx.stopped() {
            waited = true;
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        if waited {
            let event = "dead letters: reading paused until the other sources caught up";
            self.ctx.stats.event(event, 1);
        }
    }

    /// Counts the dead letters about to go to the writer, after waiting
    /// while it is behind on them.
    fn queue_dead(&self) {
        if self.dead.is_empty() {
            return;
        }
        let stats = &self.ctx.stats;
        if wait_for_writer(
            &stats.dead_letters_queued,
            MAX_QUEUED_DEAD_LETTERS,
            &self.ctx.stop,
        ) {
            stats.event("dead letters: reading paused until the writer caught up", 1);
        }
        stats
            .dead_letters_queued
            .fetch_add(self.dead.len() as u64, Relaxed);
    }

    fn flush_dead(&mut self) {
        if !self.dead.is_empty() {
            self.queue_dead();
            let _ = self.ctx.sink.send(Stamped {
                time: self.ctx.replayed.then_some(self.epoch),
                batch: SinkBatch::DeadLetters(std::mem::take(&mut self.dead)),
            });
        }
    }

    /// Flushes and tells the engine this source is done.
    pub fn end(mut self) {
        self.flush();
        self.merge_seen();
        self.ctx.ingest.end_source(self.ctx.index);
    }
}

/// A message's identity in the input log: its topic and payload.
fn message_hash(topic: &str, payload: &[u8]) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(topic.as_bytes());
    h.update(&[0]);
    h.update(payload);
    h.digest()
}

/// Waits while more than `limit` rows are `queued` for the writer (a slow
/// or stuck disk): the source stops reading, so a flood of bad input pushes
/// back (MQTT stops acknowledging, replay stops reading) instead of growing
/// memory. Returns whether it waited; `stop` ends the wait.
pub fn wait_for_writer(queued: &AtomicU64, limit: u64, stop: &AtomicBool) -> bool {
    let mut waited = false;
    while queued.load(Relaxed) > limit && !stop.load(Relaxed) {
        waited = true;
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    waited
}

/// The counter key of a message rejection: the reason without its details
/// (batch element index, parser position, numbers), so counters stay few.
pub fn reason_class(reason: &str) -> String {
    let r = match reason.strip_prefix("element ") {
        Some(rest) => rest.split_once(": ").map(|(_, r)| r).unwrap_or(rest),
        None => reason,
    };
    let cut = [r.find(": "), r.find(" (")].into_iter().flatten().min();
    let r = cut.map(|i| &r[..i]).unwrap_or(r);
    r.chars()
        .map(|c| if c.is_ascii_digit() { 'N' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_wait_for_a_writer_behind_on_dead_letters() {
        let queued = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        // Under the bound: no wait.
        assert!(!wait_for_writer(&queued, 10, &stop));
        // Over it: the source waits until the writer has written enough.
        queued.store(11, Relaxed);
        let (q, s) = (queued.clone(), stop.clone());
        let source = std::thread::spawn(move || wait_for_writer(&q, 10, &s));
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!source.is_finished(), "still waiting while 11 > 10");
        queued.fetch_sub(1, Relaxed);
        assert!(source.join().unwrap(), "it waited, then went on");
        // A stopping run ends the wait even if the writer never catches up.
        queued.store(1_000, Relaxed);
        let (q, s) = (queued.clone(), stop.clone());
        let source = std::thread::spawn(move || wait_for_writer(&q, 10, &s));
        stop.store(true, Relaxed);
        assert!(source.join().unwrap() || stop.load(Relaxed));
    }

    #[test]
    fn reason_classes_stay_few() {
        assert_eq!(
            reason_class("element 3: wrong type: `value` is a JSON string"),
            "wrong type"
        );
        assert_eq!(
            reason_class("malformed JSON: EOF while parsing at line 1 column 4"),
            "malformed JSON"
        );
        assert_eq!(
            reason_class("alias 17 was never born"),
            "alias NN was never born"
        );
        assert_eq!(
            reason_class("topic matches no route"),
            "topic matches no route"
        );
    }
}
