//! `opcua` source: subscriptions to an OPC UA server (async-opcua client),
//! read-only toward the server.
//!
//! - [`conn`]: PKI, endpoint selection (policy × mode), user tokens, errors.
//! - [`nodes`]: explicit NodeIds, browse paths, browse discovery → items.
//! - [`value`]: `DataValue` → event time, number, quality.
//!
//! # What it does to the server
//! It opens one session, browses, reads, creates subscriptions and monitored
//! items, publishes, republishes, and closes the session. It never writes,
//! calls methods, or changes anything beyond its own session and
//! subscriptions.
//!
//! # Delivery and gaps
//! A tokio task owns the session: it drives async-opcua's event loop (keep-
//! alives, reconnects: a new secure channel and ActivateSession on the old
//! session; failing that, a new session and TransferSubscriptions, else
//! recreated subscriptions). Notifications go over a bounded channel to this
//! source's blocking thread (when it is full the session task waits: the
//! server keeps queueing, which is the backpressure OPC UA offers).
//!
//! The thread tracks each subscription's sequence numbers. A missing number
//! is asked for again with Republish; if the server no longer has it, or the
//! subscriptions were lost (server restart), the outage becomes a `gaps` row
//! and a bad-quality marker per affected tag at the last instant data was
//! complete, and current values are read (or arrive as the new monitored
//! items' initial values). Outputs show the gap; nothing is interpolated.
//! Repeated notifications (same timestamp, value and status, as after a
//! transfer or republish) are counted once.

pub mod config;
pub mod conn;
pub mod nodes;
pub mod value;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use opcua::client::{
    MonitoredItemMap, OnSubscriptionNotificationCore, Session, SessionConnectMode,
    SessionPollResult,
};
use opcua::types::{
    AttributeId, DataChangeFilter, DataChangeNotification, DataChangeTrigger, DataValue,
    DeadbandType, ExtensionObject, MonitoredItemCreateRequest, MonitoringMode,
    MonitoringParameters, NotificationMessage, ReadValueId, StatusChangeNotification, StatusCode,
    TimestampsToReturn, VariableId,
};

use crate::ingest::normalize::{Normalizer, SourceCtx};
use crate::model::SinkBatch;
use crate::model::{now_ms, DeadLetter, Gap, Quality};
use conn::ConnPlan;
use nodes::{BrowseSpec, Item, NodeSpec};

/// Deadband of a DataChangeFilter.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Deadband {
    None,
    Absolute(f64),
    /// Percent of the item's EURange (AnalogItems).
    Percent(f64),
}

/// Subscription settings shared by a group of nodes.
#[derive(Clone, Debug)]
pub struct GroupPlan {
    pub name: String,
    pub publishing_interval_ms: u64,
    /// Negative: the publishing interval; 0: the fastest the server offers.
    pub sampling_interval_ms: f64,
    pub queue_size: u32,
    pub discard_oldest: bool,
    pub trigger: DataChangeTrigger,
    pub deadband: Deadband,
    pub keep_alive_count: u32,
    pub lifetime_count: u32,
    pub max_items_per_subscription: usize,
}

impl GroupPlan {
    pub fn named(name: &str) -> GroupPlan {
        GroupPlan {
            name: name.to_string(),
            publishing_interval_ms: 1000,
            // Every change (the server's fastest); -1 would sample at the
            // publishing interval and drop changes in between.
            sampling_interval_ms: 0.0,
            queue_size: 100,
            discard_oldest: true,
            trigger: DataChangeTrigger::StatusValue,
            deadband: Deadband::None,
            keep_alive_count: 10,
            lifetime_count: 60,
            max_items_per_subscription: 5000,
        }
    }
}

/// A validated `opcua` source.
#[derive(Clone, Debug)]
pub struct OpcUaSourcePlan {
    pub id: String,
    pub conn: ConnPlan,
    pub nodes: Vec<NodeSpec>,
    pub browse: Vec<BrowseSpec>,
    pub groups: Vec<GroupPlan>,
    pub batch_rows: usize,
    /// Capacity (notification messages) of the session → decoder channel.
    pub channel: usize,
}

/// One monitored item as the decoder sees it (index = client handle − 1).
#[derive(Clone, Debug)]
struct ItemInfo {
    tag: String,
    node: String,
    sub: usize,
}

/// Session task → decoder.
enum Ev {
    Items(Arc<Vec<ItemInfo>>),
    Unresolved(Vec<(String, String)>),
    Data {
        sub: usize,
        seq: u32,
        values: Vec<(u32, DataValue)>,
        republished: bool,
    },
    KeepAlive {
        sub: usize,
        seq: u32,
    },
    Status {
        sub: usize,
        status: StatusCode,
    },
    RepublishFailed {
        sub: usize,
        missing: u32,
        status: StatusCode,
    },
    Read(Vec<(u32, DataValue)>),
    Lost(String),
    Reconnected {
        new_session: bool,
    },
}

/// Decoder → session task.
enum Ctl {
    Republish {
        sub: usize,
        seqs: Vec<u32>,
    },
    Read {
        handles: Vec<u32>,
    },
    /// Close the session and open a new one (subscriptions recreated).
    Restart(String),
}

/// Sends to the decoder; when the channel is full, waits without stalling
/// the runtime's other tasks.
fn send(tx: &SyncSender<Ev>, ev: Ev) -> bool {
    match tx.try_send(ev) {
        Ok(()) => true,
        Err(TrySendError::Full(ev)) => tokio::task::block_in_place(|| tx.send(ev).is_ok()),
        Err(TrySendError::Disconnected(_)) => false,
    }
}

/// The subscription callback: forwards whole notification messages.
struct Notify {
    tx: SyncSender<Ev>,
    sub: usize,
}

impl OnSubscriptionNotificationCore for Notify {
    fn on_subscription_notification(
        &mut self,
        msg: NotificationMessage,
        _items: MonitoredItemMap<'_>,
    ) {
        let seq = msg.sequence_number;
        let data = msg.notification_data.unwrap_or_default();
        if data.is_empty() {
            send(&self.tx, Ev::KeepAlive { sub: self.sub, seq });
            return;
        }
        let (values, status) = split(data);
        if !values.is_empty() || status.is_none() {
            send(
                &self.tx,
                Ev::Data {
                    sub: self.sub,
                    seq,
                    values,
                    republished: false,
                },
            );
        }
        if let Some(status) = status {
            send(
                &self.tx,
                Ev::Status {
                    sub: self.sub,
                    status,
                },
            );
        }
    }
}

/// Data changes and the subscription status change of a message.
fn split(data: Vec<ExtensionObject>) -> (Vec<(u32, DataValue)>, Option<StatusCode>) {
    let mut values = Vec::new();
    let mut status = None;
    for obj in data {
        if let Some(dc) = obj.inner_as::<DataChangeNotification>() {
            for n in dc.monitored_items.iter().flatten() {
                values.push((n.client_handle, n.value.clone()));
            }
        } else if let Some(sc) = obj.inner_as::<StatusChangeNotification>() {
            status = Some(sc.status);
        }
    }
    (values, status)
}

/// Runs the source until `ctx.stop`.
pub fn run(
    plan: &OpcUaSourcePlan,
    ctx: SourceCtx,
    rt: tokio::runtime::Handle,
) -> Result<(), String> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Ev>(plan.channel.max(4));
    let (ctl_tx, ctl_rx) = tokio::sync::mpsc::unbounded_channel::<Ctl>();
    let stop = ctx.stop.clone();
    let task = rt.spawn(session_task(
        plan.clone(),
        tx,
        ctl_rx,
        stop.clone(),
        ctx.stats.clone(),
    ));
    let mut dec = Decoder::new(plan, ctx);
    decode_loop(&mut dec, &rx, &ctl_tx, &stop);
    // Stopping: the session task closes the session and drops its sender.
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(ev) => dec.event(ev, &ctl_tx),
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) if task.is_finished() => break,
            Err(RecvTimeoutError::Timeout) => {}
        }
    }
    let result = rt
        .block_on(task)
        .unwrap_or_else(|e| Err(format!("OPC UA session task: {e}")));
    dec.n.end();
    result.map_err(|e| format!("opcua source `{}`: {e}", plan.id))
}

fn decode_loop(
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
        dec.n.flush();
        dec.n.ctx().ingest.settle();
        if stop.load(Relaxed) {
            return;
        }
    }
}

/// The blocking half: notifications → samples, sequence tracking, gaps.
struct Decoder {
    n: Normalizer,
    id: String,
    items: Arc<Vec<ItemInfo>>,
    /// Last row per item: (ts, value bits, quality) for duplicate detection.
    last: Vec<Option<(i64, u64, Quality)>>,
    last_good: Vec<Option<f64>>,
    /// Per subscription: last data sequence number and when data was last complete.
    seq: HashMap<usize, u32>,
    complete_at: HashMap<usize, i64>,
    lost: Option<(i64, String)>,
}

impl Decoder {
    fn new(plan: &OpcUaSourcePlan, ctx: SourceCtx) -> Decoder {
        Decoder {
            n: Normalizer::new(ctx, plan.batch_rows),
            id: plan.id.clone(),
            items: Arc::new(Vec::new()),
            last: Vec::new(),
            last_good: Vec::new(),
            seq: HashMap::new(),
            complete_at: HashMap::new(),
            lost: None,
        }
    }

    fn dead(&mut self, reason: String, node: &str, raw: String) {
        let stats = &self.n.ctx().stats;
        stats.rows_read.fetch_add(1, Relaxed);
        stats.dead_letter(&crate::ingest::normalize::reason_class(&reason));
        let mut d = DeadLetter::text(&self.id, reason, raw);
        d.topic = Some(node.to_string());
        let _ = self.n.ctx().sink.send(SinkBatch::DeadLetters(vec![d]));
    }

    fn event(&mut self, ev: Ev, ctl: &tokio::sync::mpsc::UnboundedSender<Ctl>) {
        let now = now_ms();
        match ev {
            Ev::Items(items) => {
                self.last = vec![None; items.len()];
                self.last_good = vec![None; items.len()];
                self.items = items;
            }
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
                if !republished {
                    self.check_seq(sub, seq, ctl);
                    self.complete_at.insert(sub, now);
                }
                self.values(values, now);
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
                );
                let _ = ctl.send(Ctl::Read { handles });
            }
            Ev::Read(values) => self.values(values, now),
            Ev::Lost(why) => {
                if self.lost.is_none() {
                    // Data was complete up to the last message of any subscription.
                    let at = self.complete_at.values().copied().max().unwrap_or(now);
                    self.lost = Some((at, why));
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
                    );
                    self.seq.clear();
                }
                self.lost = None;
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

    fn values(&mut self, values: Vec<(u32, DataValue)>, now: i64) {
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
                Ok(c) => {
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
    fn gap(&mut self, sub: Option<usize>, reason: String, recovery: &str) -> Vec<u32> {
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
            if let Some(v) = self.last_good[i] {
                let raw = || format!("{}: gap marker", item.tag);
                self.n.row(start, &item.tag, v, Quality::Bad, &raw);
                self.last[i] = None;
            }
        }
        tracing::warn!(source = %self.id, tags = handles.len(), "data gap from {start}: {reason}");
        self.n.ctx().stats.event("opcua: gaps marked", 1);
        let _ = self.n.ctx().sink.send(SinkBatch::Gaps(vec![Gap {
            source: self.id.clone(),
            start,
            end: now,
            tags: handles.len() as i64,
            reason,
            recovery: recovery.to_string(),
        }]));
        handles
    }
}

/// Statuses that say the item itself is wrong (configuration), as opposed
/// to a bad measurement.
fn is_node_error(status: StatusCode) -> bool {
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

/// Operation limits the server announces (0: none announced).
#[derive(Clone, Copy, Debug)]
struct Limits {
    browse: usize,
    monitored: usize,
    read: usize,
}

async fn limits(session: &Session) -> Limits {
    let ids = [
        VariableId::Server_ServerCapabilities_OperationLimits_MaxNodesPerBrowse,
        VariableId::Server_ServerCapabilities_OperationLimits_MaxMonitoredItemsPerCall,
        VariableId::Server_ServerCapabilities_OperationLimits_MaxNodesPerRead,
    ];
    let reads: Vec<ReadValueId> = ids
        .iter()
        .map(|v| ReadValueId {
            node_id: (*v).into(),
            attribute_id: AttributeId::Value as u32,
            ..Default::default()
        })
        .collect();
    let vals = session
        .read(&reads, TimestampsToReturn::Neither, 0.0)
        .await
        .unwrap_or_default();
    let get = |i: usize, default: usize| {
        vals.get(i)
            .and_then(|dv| dv.value.as_ref())
            .and_then(|v| value::number(v).ok())
            .filter(|n| *n >= 1.0)
            .map(|n| n as usize)
            .unwrap_or(default)
    };
    Limits {
        browse: get(0, 500).min(5000),
        monitored: get(1, 1000).min(5000),
        read: get(2, 1000).min(5000),
    }
}

/// Connects (retrying while the server is unreachable), waits for the
/// session, and returns it with its event stream. `first` makes
/// configuration-class failures (no such endpoint, untrusted certificate,
/// refused user) fatal instead of retried.
async fn open(
    client: &mut opcua::client::Client,
    plan: &OpcUaSourcePlan,
    stop: &AtomicBool,
    first: bool,
) -> Result<
    Option<(
        Arc<Session>,
        tokio::sync::mpsc::UnboundedReceiver<Result<SessionPollResult, StatusCode>>,
        tokio::task::JoinHandle<()>,
    )>,
    String,
> {
    let mut failures = 0u32;
    loop {
        if stop.load(Relaxed) {
            return Ok(None);
        }
        let attempt = async {
            let (session, ev_loop) = conn::connect(client, &plan.conn).await?;
            let (etx, mut erx) = tokio::sync::mpsc::unbounded_channel();
            let poller = tokio::spawn(async move {
                let s = ev_loop.enter();
                futures::pin_mut!(s);
                while let Some(r) = s.next().await {
                    if etx.send(r).is_err() {
                        break;
                    }
                }
            });
            // Wait for the first activation; a refused certificate or user
            // shows up as failed reconnects, never as a connection.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            loop {
                let r = tokio::time::timeout_at(deadline, erx.recv()).await;
                match r {
                    Ok(Some(Ok(SessionPollResult::Reconnected(_)))) => break,
                    Ok(Some(Ok(SessionPollResult::ReconnectFailed(s)))) | Ok(Some(Err(s))) => {
                        poller.abort();
                        return Err((s, conn::explain(&plan.conn, s, "session activation failed")));
                    }
                    Ok(Some(Ok(_))) => {}
                    Ok(None) => {
                        return Err((
                            StatusCode::BadConnectionClosed,
                            "the session event loop ended".into(),
                        ))
                    }
                    Err(_) => {
                        poller.abort();
                        return Err((StatusCode::BadTimeout, "no session after 30 s".into()));
                    }
                }
            }
            Ok((session, erx, poller))
        };
        let r: Result<_, (StatusCode, String)> = attempt.await;
        match r {
            Ok(x) => return Ok(Some(x)),
            Err((status, msg)) => {
                let unreachable = matches!(
                    status,
                    StatusCode::BadNotConnected
                        | StatusCode::BadConnectionClosed
                        | StatusCode::BadCommunicationError
                        | StatusCode::BadTimeout
                        | StatusCode::BadServerNotConnected
                        | StatusCode::BadSecureChannelClosed
                        | StatusCode::BadTcpInternalError
                );
                if first && !unreachable {
                    return Err(msg);
                }
                let wait = Duration::from_millis((250u64 << failures.min(6)).min(10_000));
                if failures == 0 || failures.is_power_of_two() {
                    tracing::warn!(source = %plan.id, "{msg}; retrying in {wait:?}");
                }
                failures = failures.saturating_add(1);
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Creates the subscriptions and monitored items. Returns the items that
/// failed as `(what, why)`.
async fn subscribe(
    session: &Session,
    plan: &OpcUaSourcePlan,
    items: &[Item],
    subs: &[(usize, Vec<usize>)],
    per_call: usize,
    tx: &SyncSender<Ev>,
    stats: Option<&crate::stats::Stats>,
) -> Result<Vec<(String, String)>, String> {
    let mut failed = Vec::new();
    let mut revised = 0usize;
    let mut created = 0u64;
    for (key, (g, members)) in subs.iter().enumerate() {
        let group = &plan.groups[*g];
        let sub_id = session
            .create_subscription(
                Duration::from_millis(group.publishing_interval_ms),
                group.lifetime_count.max(3 * group.keep_alive_count),
                group.keep_alive_count,
                0,
                0,
                true,
                Notify {
                    tx: tx.clone(),
                    sub: key,
                },
            )
            .await
            .map_err(|e| format!("CreateSubscription (group `{}`): {e}", group.name))?;
        let filter = {
            let (dt, v) = match group.deadband {
                Deadband::None => (DeadbandType::None, 0.0),
                Deadband::Absolute(v) => (DeadbandType::Absolute, v),
                Deadband::Percent(v) => (DeadbandType::Percent, v),
            };
            if dt == DeadbandType::None && group.trigger == DataChangeTrigger::StatusValue {
                ExtensionObject::null()
            } else {
                ExtensionObject::from_message(DataChangeFilter {
                    trigger: group.trigger,
                    deadband_type: dt as u32,
                    deadband_value: v,
                })
            }
        };
        for chunk in members.chunks(per_call.max(1)) {
            let reqs: Vec<MonitoredItemCreateRequest> = chunk
                .iter()
                .map(|&i| MonitoredItemCreateRequest {
                    item_to_monitor: ReadValueId {
                        node_id: items[i].node.clone(),
                        attribute_id: AttributeId::Value as u32,
                        ..Default::default()
                    },
                    monitoring_mode: MonitoringMode::Reporting,
                    requested_parameters: MonitoringParameters {
                        client_handle: i as u32 + 1,
                        sampling_interval: group.sampling_interval_ms,
                        filter: filter.clone(),
                        queue_size: group.queue_size,
                        discard_oldest: group.discard_oldest,
                    },
                })
                .collect();
            let results = session
                .create_monitored_items(sub_id, TimestampsToReturn::Both, reqs)
                .await
                .map_err(|e| format!("CreateMonitoredItems (group `{}`): {e}", group.name))?;
            for (&i, r) in chunk.iter().zip(results) {
                let r = r.result;
                if !r.status_code.is_good() {
                    failed.push((
                        format!("node {} (tag {})", items[i].node, items[i].tag),
                        format!("the server refused the monitored item: {}", r.status_code),
                    ));
                } else {
                    created += 1;
                }
                if r.status_code.is_good()
                    && (r.revised_queue_size < group.queue_size.max(1)
                        || (group.sampling_interval_ms > 0.0
                            && r.revised_sampling_interval > group.sampling_interval_ms))
                {
                    revised += 1;
                }
            }
        }
    }
    if let Some(st) = stats {
        st.event("opcua: monitored items created", created);
    }
    if revised > 0 {
        tracing::info!(
            source = %plan.id,
            items = revised,
            "the server revised the sampling interval or queue size of some items (slower or smaller than asked)"
        );
    }
    Ok(failed)
}

async fn session_task(
    plan: OpcUaSourcePlan,
    tx: SyncSender<Ev>,
    mut ctl: tokio::sync::mpsc::UnboundedReceiver<Ctl>,
    stop: Arc<AtomicBool>,
    stats: Arc<crate::stats::Stats>,
) -> Result<(), String> {
    let mut client = conn::client(&plan.conn)?;
    // Items, and per subscription: (group, member item indices).
    type Resolved = (Vec<Item>, Vec<(usize, Vec<usize>)>);
    let mut resolved: Option<Resolved> = None;
    let mut first = true;
    loop {
        let Some((session, mut events, poller)) = open(&mut client, &plan, &stop, first).await?
        else {
            return Ok(());
        };
        let lim = limits(&session).await;
        if resolved.is_none() {
            let (items, failed) = nodes::resolve(&session, &plan.nodes, &plan.browse, lim.browse)
                .await
                .map_err(|e| conn::explain(&plan.conn, StatusCode::Good, &e))?;
            if items.is_empty() {
                let why: Vec<String> = failed.iter().map(|(w, y)| format!("{w}: {y}")).collect();
                return Err(format!(
                    "none of the configured nodes exist on {} ({})",
                    plan.conn.endpoint,
                    why.join("; ")
                ));
            }
            // Subscriptions: per group, at most max_items_per_subscription each.
            let mut subs: Vec<(usize, Vec<usize>)> = Vec::new();
            for (g, group) in plan.groups.iter().enumerate() {
                let members: Vec<usize> =
                    (0..items.len()).filter(|&i| items[i].group == g).collect();
                for c in members.chunks(group.max_items_per_subscription.max(1)) {
                    subs.push((g, c.to_vec()));
                }
            }
            let mut sub_of = vec![0usize; items.len()];
            for (k, (_, m)) in subs.iter().enumerate() {
                for &i in m {
                    sub_of[i] = k;
                }
            }
            let info: Vec<ItemInfo> = items
                .iter()
                .enumerate()
                .map(|(i, it)| ItemInfo {
                    tag: it.tag.clone(),
                    node: it.node.to_string(),
                    sub: sub_of[i],
                })
                .collect();
            tracing::info!(source = %plan.id, items = items.len(), subscriptions = subs.len(), "OPC UA nodes resolved");
            send(&tx, Ev::Items(Arc::new(info)));
            if !failed.is_empty() {
                send(&tx, Ev::Unresolved(failed));
            }
            resolved = Some((items, subs));
        } else {
            // A whole new session after the old one could not be recovered.
            send(&tx, Ev::Reconnected { new_session: true });
        }
        let (items, subs) = resolved.as_ref().expect("resolved above");
        let failed = subscribe(
            &session,
            &plan,
            items,
            subs,
            lim.monitored,
            &tx,
            Some(&stats),
        )
        .await?;
        if !failed.is_empty() {
            send(&tx, Ev::Unresolved(failed));
        }
        first = false;
        tracing::info!(source = %plan.id, endpoint = %plan.conn.endpoint, "OPC UA subscriptions active");

        // Steady state.
        let mut failures = 0u32;
        let ended = loop {
            tokio::select! {
                e = events.recv() => match e {
                    Some(Ok(SessionPollResult::ConnectionLost(s))) => {
                        tracing::warn!(source = %plan.id, "OPC UA connection lost: {s}");
                        send(&tx, Ev::Lost(format!("connection lost ({s})")));
                    }
                    Some(Ok(SessionPollResult::ReconnectFailed(s))) => {
                        if failures == 0 || failures.is_power_of_two() {
                            tracing::warn!(source = %plan.id, "OPC UA reconnect failed: {s}");
                        }
                        failures = failures.saturating_add(1);
                    }
                    Some(Ok(SessionPollResult::Reconnected(mode))) => {
                        failures = 0;
                        let new_session = matches!(mode, SessionConnectMode::NewSession(_));
                        tracing::info!(source = %plan.id, new_session, "OPC UA reconnected");
                        // async-opcua 0.19 does not always restart publishing
                        // after recreating subscriptions; ask for it.
                        session.trigger_publish_now();
                        send(&tx, Ev::Reconnected { new_session });
                    }
                    Some(Ok(_)) => {}
                    Some(Err(s)) => break format!("session ended: {s}"),
                    None => break "session event loop ended".to_string(),
                },
                c = ctl.recv() => match c {
                    Some(Ctl::Republish { sub, seqs }) => {
                        let sub_id = current_sub_id(&session, subs, sub);
                        for seq in seqs {
                            let r = match sub_id {
                                Some(id) => session.republish(id, seq).await.map_err(|e| e.status()),
                                None => Err(StatusCode::BadSubscriptionIdInvalid),
                            };
                            match r {
                                Ok(msg) => {
                                    let (values, _) = split(msg.notification_data.unwrap_or_default());
                                    send(&tx, Ev::Data { sub, seq, values, republished: true });
                                }
                                Err(status) => {
                                    send(&tx, Ev::RepublishFailed { sub, missing: seq, status });
                                    break;
                                }
                            }
                        }
                    }
                    Some(Ctl::Restart(why)) => {
                        let _ = tokio::time::timeout(Duration::from_secs(3), session.disconnect()).await;
                        break why;
                    }
                    Some(Ctl::Read { handles }) => {
                        for chunk in handles.chunks(lim.read.max(1)) {
                            let reads: Vec<ReadValueId> = chunk
                                .iter()
                                .map(|h| ReadValueId {
                                    node_id: items[*h as usize - 1].node.clone(),
                                    attribute_id: AttributeId::Value as u32,
                                    ..Default::default()
                                })
                                .collect();
                            match session.read(&reads, TimestampsToReturn::Both, 0.0).await {
                                Ok(vals) => {
                                    send(&tx, Ev::Read(chunk.iter().copied().zip(vals).collect()));
                                }
                                Err(e) => tracing::warn!(source = %plan.id, "reading current values after a gap: {e}"),
                            }
                        }
                    }
                    None => {}
                },
                _ = tokio::time::sleep(Duration::from_millis(100)) => {
                    if stop.load(Relaxed) {
                        let _ = tokio::time::timeout(Duration::from_secs(3), session.disconnect()).await;
                        poller.abort();
                        return Ok(());
                    }
                }
            }
        };
        poller.abort();
        tracing::warn!(source = %plan.id, "{ended}; opening a new session");
        send(&tx, Ev::Lost(ended));
    }
}

/// The server's id of subscription `key` now (it changes when the client
/// recreates subscriptions after a new session).
fn current_sub_id(session: &Session, subs: &[(usize, Vec<usize>)], key: usize) -> Option<u32> {
    let handle = subs.get(key)?.1.first().map(|i| *i as u32 + 1)?;
    let state = session.subscription_state().lock();
    for id in state.subscription_ids()? {
        if let Some(s) = state.get(id) {
            if s.monitored_items().any(|m| m.client_handle() == handle) {
                return Some(id);
            }
        }
    }
    None
}
