//! `opcua` source: subscriptions to an OPC UA server (async-opcua client),
//! read-only toward the server.
//!
//! - [`conn`]: PKI, endpoint selection (policy × mode), user tokens, errors.
//! - [`nodes`]: explicit NodeIds, browse paths, browse discovery → items.
//! - [`value`]: `DataValue` → event time, number, quality.
//!
//! # What it does to the server
//! It opens one session, browses, reads (values, and history after a gap),
//! creates subscriptions and monitored items, publishes, republishes, asks
//! whether its subscriptions still exist (SetPublishingMode on them), and
//! closes the session. It never writes,
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
//!
//! # Backfill
//! A gap (and the time the node itself was down, after a restart from its
//! input log) is then read from the server's history (HistoryRead,
//! ReadRawModifiedDetails, continuation points followed up to
//! `backfill_max_values`): those values enter as late data, so the windows
//! they fall in are corrected as new revisions, and the gap row says how
//! many were backfilled, or that the server keeps no history of the nodes.
//! Values the live stream also delivered (a recreated item's initial value)
//! are counted once.
//! Repeated notifications (same timestamp, value and status, as after a
//! transfer or republish) are counted once.

mod backfill;
pub mod config;
pub mod conn;
mod decode;
mod history;
pub mod nodes;
mod session;
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
use crate::model::{now_ms, Gap, Quality};
use crate::model::{SinkBatch, Stamped};
use conn::ConnPlan;
use decode::{decode_loop, Decoder};
use nodes::{BrowseSpec, Item, NodeSpec};
use session::session_task;

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
    /// After a gap, read what was missed from the server's history (at most
    /// this many values a gap); `None`: do not.
    pub backfill: Option<u64>,
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
    /// Values read from the server's history for backfill `id`.
    History {
        id: u64,
        values: Vec<(u32, DataValue)>,
    },
    HistoryDone(history::Done),
    /// The server keeps subscription `sub` for `ms` without publish requests.
    Lifetime {
        sub: usize,
        ms: i64,
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
    /// Read the history of a gap.
    History(history::Request),
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
        (ctx.stats.clone(), ctx.share),
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
    dec.finish();
    result.map_err(|e| format!("opcua source `{}`: {e}", plan.id))
}
