//! The source's blocking thread: notifications → samples, sequence checks,
//! republish requests, gaps and dead letters.

use super::*;

pub(super) fn decode_loop(
    dec: &mut Decoder,
    rx: &Receiver<Ev>,
    ctl: &tokio::sync::mpsc::UnboundedSender<Ctl>,
    stop: &AtomicBool,
) {
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(ev) => {
                dec.event(ev, ctl);
                // Take what is queued, then hand it to the engine.
                for _ in 0..256 {
                    match rx.try_recv() {
                        Ok(ev) => dec.event(ev, ctl),
                        Err(_) => break,
                    }
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        dec.n.idle();
        if stop.load(Relaxed) {
            return;
        }
    }
}

/// The blocking half: notifications → samples, sequence tracking, gaps.
pub(super) struct Decoder {
    pub(super) n: Normalizer,
    id: String,
    items: Arc<Vec<ItemInfo>>,
    /// Last row per item: (ts, value bits, quality) for duplicate detection.
    last: Vec<Option<(i64, u64, Quality)>>,
    last_good: Vec<Option<f64>>,
    /// Per subscription: last data sequence number and when data was last complete.
    seq: HashMap<usize, u32>,
    complete_at: HashMap<usize, i64>,
    lost: Option<(i64, String)>,
    /// Backfill: budget, the gaps waiting for their history, and per item
    /// what a running backfill has fed.
    pub(super) fill: super::backfill::Fills,
    /// Per subscription: how long the server keeps it without publish
    /// requests (its revised lifetime, ms).
    lifetime: HashMap<usize, i64>,
    /// History values of the chunk being fed: (new, already had).
    pub(super) history_counts: (u64, u64),
}

impl Decoder {
    pub(super) fn new(plan: &OpcUaSourcePlan, ctx: SourceCtx) -> Decoder {
        Decoder {
            n: Normalizer::new(ctx, plan.batch_rows),
            id: plan.id.clone(),
            items: Arc::new(Vec::new()),
            last: Vec::new(),
            last_good: Vec::new(),
            seq: HashMap::new(),
            complete_at: HashMap::new(),
            lost: None,
            fill: super::backfill::Fills::new(plan.backfill),
            lifetime: HashMap::new(),
            history_counts: (0, 0),
        }
    }

    fn dead(&mut self, reason: String, node: &str, raw: String) {
        self.n.reject_at(&reason, node, raw);
    }

    pub(super) fn event(&mut self, ev: Ev, ctl: &tokio::sync::mpsc::UnboundedSender<Ctl>) {
        let now = now_ms();
        match ev {
            Ev::Items(items) => {
                self.last = vec![None; items.len()];
                self.last_good = vec![None; items.len()];
                self.fill.items(items.len());
                self.items = items;
                // A restart from the input log: the subscription cannot send
                // what changed while plantflow was down; that time is a gap
                // (read from the server's history where it keeps one).
                if let Some(at) = self.n.take_resumed_at() {
                    self.lost = Some((at, "plantflow was down".into()));
                    let reason = "plantflow was down (restarted from its input log)";
                    self.gap(None, reason.into(), "", ctl);
                    self.lost = None;
                }
            }
            Ev::History { id, values } => self.history(id, values, now),
            Ev::Lifetime { sub, ms } => {
                self.lifetime.insert(sub, ms);
            }
            Ev::HistoryDone(done) => self.history_done(done),
            Ev::Unresolved(list) => {
                for (what, why) in list {
                    self.dead(format!("cannot monitor {what}: {why}"), &what, what.clone());
                }
            }
            Ev::Data {
                sub,
                seq,
                values,
                republished,
            } => {
                if republished {
                    self.n
                        .ctx()
                        .stats
                        .event("opcua: notifications republished", 1);
                } else {
                    self.check_seq(sub, seq, ctl);
                    self.complete_at.insert(sub, now);
                }
                self.values(values, now, false);
            }
            Ev::KeepAlive { sub, seq } => {
                // A keep-alive carries the next sequence number.
                self.check_seq(sub, seq.wrapping_sub(1), ctl);
                self.complete_at.insert(sub, now);
            }
            Ev::Status { sub, status } => {
                tracing::warn!(source = %self.id, sub, "subscription status change: {status}");
                if status.is_bad() {
                    // The server ended a subscription (e.g. its lifetime ran
                    // out): start over on a new session rather than go quiet.
                    // The reconnect marks the gap.
                    let _ = ctl.send(Ctl::Restart(format!(
                        "subscription ended by the server ({status})"
                    )));
                }
            }
            Ev::RepublishFailed {
                sub,
                missing,
                status,
            } => {
                let handles = self.gap(
                    Some(sub),
                    format!("notification {missing} missing and not republished ({status})"),
                    "current values read",
                    ctl,
                );
                let _ = ctl.send(Ctl::Read { handles });
            }
            Ev::Read(values) => self.values(values, now, false),
            Ev::Lost(why) => {
                if self.lost.is_none() {
                    // Data was complete up to the last message of any subscription.
                    let at = self.complete_at.values().copied().max().unwrap_or(now);
                    self.lost = Some((at, why));
                    self.fill
                        .loss_began(self.last.iter().map(|l| l.map(|(ts, _, _)| ts)));
                }
            }
            Ev::Reconnected { new_session } => {
                if new_session {
                    // Subscriptions were transferred or recreated: treat the
                    // outage as a gap (the recreated items send current values).
                    let why = self
                        .lost
                        .as_ref()
                        .map(|(_, w)| w.clone())
                        .unwrap_or_else(|| "session lost".into());
                    self.gap(
                        None,
                        format!("new session after: {why}"),
                        "subscriptions recreated, initial values read",
                        ctl,
                    );
                    self.fill.loss_ended();
                    self.seq.clear();
                }
                // A link down for longer than the subscriptions' lifetime:
                // per OPC UA Part 4 the server has deleted them (some keep
                // them half alive, with keep-alives and no data). Start over
                // on a new session, so the outage is a gap, backfilled.
                let min_life = self.lifetime.values().copied().min();
                if let (false, Some((at, _)), Some(life)) = (new_session, &self.lost, min_life) {
                    if now - at > life {
                        let why = format!(
                            "link down for {:.1} s, longer than the subscriptions' lifetime ({:.1} s)",
                            (now - at) as f64 / 1000.0,
                            life as f64 / 1000.0
                        );
                        tracing::warn!(source = %self.id, "{why}: opening a new session");
                        self.n
                            .ctx()
                            .stats
                            .event("opcua: sessions restarted after a long outage", 1);
                        let _ = ctl.send(Ctl::Restart(why));
                        return;
                    }
                }
                self.lost = None;
                self.fill.loss_ended();
            }
        }
    }

    fn check_seq(&mut self, sub: usize, seq: u32, ctl: &tokio::sync::mpsc::UnboundedSender<Ctl>) {
        match self.seq.get(&sub) {
            Some(&last) if seq > last.wrapping_add(1) && seq - last < 10_000 => {
                let seqs: Vec<u32> = (last + 1..seq).collect();
                tracing::info!(source = %self.id, from = last + 1, to = seq - 1, "notification sequence gap: republishing");
                self.n.ctx().stats.event(
                    "opcua: notifications republish requested",
                    seqs.len() as u64,
                );
                let _ = ctl.send(Ctl::Republish { sub, seqs });
                self.seq.insert(sub, seq);
            }
            Some(&last) if seq <= last => {}
            _ => {
                self.seq.insert(sub, seq);
            }
        }
    }

    /// Notifications (or history, `history`) → rows.
    pub(super) fn values(&mut self, values: Vec<(u32, DataValue)>, now: i64, history: bool) {
        let items = self.items.clone();
        for (h, dv) in values {
            let i = h.wrapping_sub(1) as usize;
            let Some(item) = items.get(i) else {
                self.dead(
                    format!("notification for unknown client handle {h}"),
                    "",
                    format!("{dv:?}"),
                );
                continue;
            };
            let status = dv.status.unwrap_or(StatusCode::Good);
            if status == StatusCode::BadWaitingForInitialData {
                // Not a value: the server has not read the point yet.
                self.n
                    .ctx()
                    .stats
                    .event("opcua: no initial value yet (BadWaitingForInitialData)", 1);
                continue;
            }
            if is_node_error(status) {
                // The node is wrong, not the measurement: say so once per change.
                self.dead(
                    format!(
                        "cannot monitor node {} (tag {}): {status}",
                        item.node, item.tag
                    ),
                    &item.node,
                    format!("{}: {dv:?}", item.tag),
                );
                continue;
            }
            if status.bits() & 0x480 == 0x480 {
                self.n.ctx().stats.event(
                    "opcua: server queue overflowed, values lost (raise queue_size)",
                    1,
                );
            }
            match value::convert(&dv, self.last_good[i], now) {
                Ok(c) if history => {
                    if self.fill.history_new(i, c.ts, &mut self.history_counts) {
                        let raw = || format!("{} {} (history): {dv:?}", item.tag, item.node);
                        self.n.row(c.ts, &item.tag, c.value, c.quality, &raw);
                    }
                }
                Ok(c) => {
                    if !self.fill.live_new(i, c.ts) {
                        self.n
                            .ctx()
                            .stats
                            .event("opcua: values already read from history", 1);
                        continue;
                    }
                    let key = (c.ts, c.value.to_bits(), c.quality);
                    if self.last[i] == Some(key) {
                        self.n
                            .ctx()
                            .stats
                            .event("opcua: repeated notifications ignored", 1);
                        continue;
                    }
                    self.last[i] = Some(key);
                    if c.quality != Quality::Bad {
                        self.last_good[i] = Some(c.value);
                    }
                    if c.origin != value::TsOrigin::Source {
                        self.n.ctx().stats.event(c.origin.counter(), 1);
                    }
                    let raw = || format!("{} {}: {dv:?}", item.tag, item.node);
                    self.n.row(c.ts, &item.tag, c.value, c.quality, &raw);
                }
                Err(e) if e == value::NO_VALUE => {
                    self.n
                        .ctx()
                        .stats
                        .event("opcua: notifications without a value ignored", 1);
                }
                Err(e) => self.dead(e, &item.node, format!("{}: {dv:?}", item.tag)),
            }
        }
    }

    /// Marks a gap for one subscription's items (or all): a bad-quality row
    /// per tag at the last complete instant, and a `gaps` row. Returns the
    /// affected client handles.
    fn gap(
        &mut self,
        sub: Option<usize>,
        reason: String,
        recovery: &str,
        ctl: &tokio::sync::mpsc::UnboundedSender<Ctl>,
    ) -> Vec<u32> {
        let now = now_ms();
        let start = match (&self.lost, sub) {
            (Some((at, _)), _) => *at,
            (None, Some(s)) => self.complete_at.get(&s).copied().unwrap_or(now),
            (None, None) => self.complete_at.values().copied().max().unwrap_or(now),
        };
        let items = self.items.clone();
        let mut handles = Vec::new();
        for (i, item) in items.iter().enumerate() {
            if sub.is_some_and(|s| s != item.sub) {
                continue;
            }
            handles.push(i as u32 + 1);
            // What the item had before the gap (its history after that is new).
            let after = match self.last[i] {
                Some((ts, _, _)) => ts,
                None => self.n.resumed_ts(&item.tag).unwrap_or(start - 1),
            };
            self.fill.begin(i, after, now);
            if let Some(v) = self.last_good[i] {
                let raw = || format!("{}: gap marker", item.tag);
                self.n.row(start, &item.tag, v, Quality::Bad, &raw);
                self.last[i] = None;
            }
        }
        tracing::warn!(source = %self.id, tags = handles.len(), "data gap from {start}: {reason}");
        self.n.ctx().stats.event("opcua: gaps marked", 1);
        let gap = Gap {
            source: self.id.clone(),
            start,
            end: now,
            tags: handles.len() as i64,
            reason,
            recovery: recovery.to_string(),
        };
        // With backfill, the row waits for the history read to say what it found.
        if let Some(gap) = self.fill.request(gap, &handles, ctl) {
            let _ = self
                .n
                .ctx()
                .sink
                .send(Stamped::now(SinkBatch::Gaps(vec![gap])));
        }
        handles
    }
}

/// Statuses that say the item itself is wrong (configuration), as opposed
/// to a bad measurement.
pub(super) fn is_node_error(status: StatusCode) -> bool {
    [
        StatusCode::BadNodeIdUnknown,
        StatusCode::BadNodeIdInvalid,
        StatusCode::BadAttributeIdInvalid,
        StatusCode::BadNotReadable,
        StatusCode::BadUserAccessDenied,
        StatusCode::BadIndexRangeInvalid,
    ]
    .iter()
    .any(|s| s.bits() == status.bits() & 0xFFFF_0000)
}
