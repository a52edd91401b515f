//! `mqtt` source: subscribes to topic filters on a broker and turns messages
//! into samples (plain number, JSON object or batch, Sparkplug B) or into
//! context-table edits.
//!
//! - [`conn`]: one v3.1.1/v5 connection, TLS, credentials, persistent session.
//! - [`topic`]: topic templates (`plant/{site}/{asset}/{signal}`) and filter matching.
//! - [`payload`]: JSON/number payload decoding.
//! - [`sparkplug`]: Sparkplug B protobuf and the host's edge-node state machine.
//! - [`context`]: context rows (assets, tariff, production, maintenance) from messages.
//! - [`stall`]: a subscription gone quiet, reported.
//! - `parse`: payloads parsed on several threads, ahead of the normaliser.
//!
//! # Delivery
//! A tokio task drives the connection and hands messages to this source's
//! blocking thread over a bounded channel. The thread decodes them, hands
//! the samples to the engine, and only then acknowledges the QoS 1/2
//! messages (manual acks): a message is acknowledged once the engine has
//! it, so with a persistent session nothing the broker accepted is lost when
//! plantflow stops or crashes. Unacknowledged messages count against the
//! broker's in-flight window, so a slow engine slows the broker's delivery
//! (backpressure) instead of growing a queue here. Delivery is at least once:
//! after a crash, messages received but not yet acknowledged are delivered
//! again.

pub mod config;
pub mod conn;
pub mod context;
mod parse;
pub mod payload;
pub mod publish;
pub mod sparkplug;
pub mod stall;
pub mod topic;

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use conn::{AckToken, Conn, ConnPlan, Incoming, Msg};
use parse::{Item, Parsed};
use payload::JsonFields;
use sparkplug::{Host, SpNaming};
use topic::{TagTemplate, TopicTemplate};

use crate::ingest::normalize::{Normalizer, SourceCtx};
use crate::model::{now_ms, Quality};

/// How a route's payloads are read.
#[derive(Clone, Debug)]
pub enum Format {
    /// The payload is a bare number.
    Number,
    /// JSON object, or array of objects (batch).
    Json(JsonFields),
    /// Sparkplug B protobuf under `spBv1.0/...`.
    Sparkplug(SpNaming),
    /// Context-table edits.
    Context(context::Table),
}

/// One subscription and how to read what arrives on it.
#[derive(Clone, Debug)]
pub struct Route {
    /// Subscription filter (may be `$share/{group}/{filter}`).
    pub filter: String,
    pub qos: u8,
    /// Topic template with named segments; when absent any topic under the filter matches.
    pub template: Option<TopicTemplate>,
    /// Tag template over the template's captures; absent: the `tag` capture, else the topic.
    pub tag: Option<TagTemplate>,
    pub format: Format,
}

/// A validated `mqtt` source.
#[derive(Clone, Debug)]
pub struct MqttSourcePlan {
    pub id: String,
    pub conn: ConnPlan,
    pub routes: Vec<Route>,
    /// Payloads above this size are dead-lettered (their first KiB is kept).
    pub max_payload: usize,
    pub batch_rows: usize,
    /// Send Sparkplug `NCMD` rebirth requests (the one message a host sends to edge nodes).
    pub request_rebirth: bool,
    /// Capacity of the channel between the connection task and the decoder.
    pub channel: usize,
    /// A live connection without a message this long is reported as
    /// stalled (`None`: not watched).
    pub stall_after: Option<Duration>,
    /// Threads that parse payloads (0: as many as the process has
    /// workers; the MQTT bench sets 1 for its baseline).
    pub decode_threads: usize,
}

impl MqttSourcePlan {
    /// Whether the broker splits this source's samples between subscribers:
    /// every route of samples is a shared subscription (`share`), and none
    /// is Sparkplug (whose births must reach every member). Such a source
    /// runs on every process of a cluster; context routes, not shared,
    /// reach them all.
    pub fn split_by_broker(&self) -> bool {
        let mut samples = self
            .routes
            .iter()
            .filter(|r| !matches!(r.format, Format::Context(_)))
            .peekable();
        samples.peek().is_some()
            && samples.all(|r| {
                r.filter.starts_with("$share/") && !matches!(r.format, Format::Sparkplug(_))
            })
    }
}

impl Route {
    /// Whether `topic` belongs to this route, and its captures.
    fn captures<'t>(&self, topic: &'t str) -> Option<Vec<(&str, &'t str)>> {
        if !topic::filter_matches(&self.filter, topic) {
            return None;
        }
        match &self.template {
            Some(t) => t.captures(topic),
            None => Some(Vec::new()),
        }
    }

    fn tag_of(&self, topic: &str, caps: &[(&str, &str)]) -> String {
        match &self.tag {
            Some(t) => t.render(caps),
            None => caps
                .iter()
                .find(|(n, _)| *n == "tag")
                .map(|(_, v)| v.to_string())
                .unwrap_or_else(|| topic.to_string()),
        }
    }
}

/// At most this many messages are parsed together (see `parse`).
const BATCH: usize = 256;

/// Control messages from the decoder thread to the connection task.
enum Ctl {
    Ack(Vec<(u64, AckToken)>),
    Publish { topic: String, payload: Vec<u8> },
}

/// Queues acks in order until the client's request queue is full; acks of
/// an earlier connection are dropped (the broker redelivers those messages).
fn send_acks(conn: &Conn, acks: &mut std::collections::VecDeque<(u64, AckToken)>) {
    while let Some((g, t)) = acks.front() {
        if *g != conn.generation() || conn.client.try_ack(t).is_ok() {
            acks.pop_front();
        } else {
            break;
        }
    }
}

/// Runs the source until stopped (the blocking half; spawns the connection task on `rt`).
pub fn run(
    plan: &MqttSourcePlan,
    ctx: SourceCtx,
    rt: tokio::runtime::Handle,
) -> Result<(), String> {
    // In a cluster every process subscribes to the shared routes under its
    // own client id (one id for two connections would have the broker drop
    // one of them).
    let mut conn_plan = plan.conn.clone();
    if ctx.share.1 > 1 && plan.split_by_broker() {
        conn_plan.client_id = format!("{}-p{}", conn_plan.client_id, ctx.share.0);
    }
    let conn = Conn::new(&conn_plan, true, None, 256)?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Msg>(plan.channel.max(16));
    let (ctl_tx, ctl_rx) = tokio::sync::mpsc::unbounded_channel::<Ctl>();
    let stop = ctx.stop.clone();
    let conn_task = rt.spawn(connection(plan, conn, tx, ctl_rx, ctx.stats.clone()));

    // Payloads are parsed on as many threads as the process has workers.
    let threads = match plan.decode_threads {
        0 => ctx.ingest.workers(),
        n => n,
    };
    let mut dec = Decoder::new(plan, ctx);
    let mut pending: Vec<(u64, AckToken)> = Vec::new();
    loop {
        match rx.try_recv() {
            Ok(m) => {
                // What the broker has sent so far, parsed together.
                let mut batch = vec![m];
                while batch.len() < BATCH {
                    match rx.try_recv() {
                        Ok(m) => batch.push(m),
                        Err(_) => break,
                    }
                }
                let parsed = parse::parse_all(plan, &batch, threads);
                for (m, p) in batch.into_iter().zip(parsed) {
                    dec.message(m, p, &mut pending, &ctl_tx);
                    if pending.len() >= 4096 {
                        dec.n.flush();
                        ack(&dec, &mut pending, &ctl_tx)?;
                    }
                }
                continue;
            }
            Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => break,
            Err(tokio::sync::mpsc::error::TryRecvError::Empty) => {}
        }
        // Nothing queued: hand what we have to the engine, then acknowledge it.
        dec.n.idle();
        ack(&dec, &mut pending, &ctl_tx)?;
        if stop.load(Relaxed) {
            break;
        }
        match rt
            .block_on(async { tokio::time::timeout(Duration::from_millis(100), rx.recv()).await })
        {
            Ok(Some(m)) => dec.message(m, Parsed::InOrder, &mut pending, &ctl_tx),
            Ok(None) => break,
            Err(_) => {}
        }
    }
    // Stop taking messages; what arrived but is not acknowledged stays with the
    // broker (persistent session) and is delivered again next time.
    rx.close();
    dec.n.flush();
    ack(&dec, &mut pending, &ctl_tx)?;
    drop(ctl_tx);
    let _ = rt.block_on(conn_task);
    dec.n.end();
    Ok(())
}

/// The connection task: polls the event loop (which also reconnects),
/// subscribes after every connect, forwards messages, sends acks, and
/// watches for a subscription gone quiet ([`stall`]).
fn connection(
    plan: &MqttSourcePlan,
    mut conn: Conn,
    tx: tokio::sync::mpsc::Sender<Msg>,
    mut ctl_rx: tokio::sync::mpsc::UnboundedReceiver<Ctl>,
    stats: std::sync::Arc<crate::stats::Stats>,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let filters: Vec<(String, u8)> = plan
        .routes
        .iter()
        .map(|r| (r.filter.clone(), r.qos))
        .collect();
    let id = plan.id.clone();
    let url = format!(
        "{}://{}:{}",
        if plan.conn.tls { "mqtts" } else { "mqtt" },
        plan.conn.host,
        plan.conn.port
    );
    let mut watch = stall::StallWatch::new(plan.stall_after);
    stats.set_connected(&id, false);
    async move {
        let mut failures = 0u32;
        // Acks go out strictly in arrival order (MQTT 4.6; brokers such as
        // rumqttd drop a connection on an out-of-order ack), and only on the
        // connection that received the message.
        let mut acks: std::collections::VecDeque<(u64, AckToken)> = Default::default();
        let mut tick = tokio::time::interval(watch.tick());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            send_acks(&conn, &mut acks);
            if let Some(waited) = watch.acks_waiting(!acks.is_empty(), std::time::Instant::now()) {
                tracing::warn!(source = %id, "MQTT acknowledgements go out again after {waited:.1?} (the stall is over)");
            }
            tokio::select! {
                ev = conn.poll() => match ev {
                    Incoming::Publish(m) => {
                        if let Some(quiet) = watch.message(std::time::Instant::now()) {
                            tracing::warn!(source = %id, "MQTT messages again after {quiet:.1?} without (the stall is over)");
                        }
                        if tx.send(*m).await.is_err() {
                            break;
                        }
                    }
                    Incoming::Connected { session_present } => {
                        if failures > 0 {
                            tracing::info!(source = %id, %url, session_present, "MQTT reconnected");
                        } else {
                            tracing::info!(source = %id, %url, session_present, "MQTT connected");
                        }
                        failures = 0;
                        watch.connected(std::time::Instant::now());
                        stats.set_connected(&id, true);
                        let c = conn.client.clone();
                        let f = filters.clone();
                        let id = id.clone();
                        tokio::spawn(async move {
                            if let Err(e) = c.subscribe(&f).await {
                                tracing::error!(source = %id, "MQTT subscribe failed: {e}");
                            }
                        });
                    }
                    Incoming::Error(e) => {
                        watch.lost();
                        stats.set_connected(&id, false);
                        let wait = conn::backoff(failures);
                        if failures == 0 || failures.is_power_of_two() {
                            tracing::warn!(source = %id, %url, "MQTT connection lost ({e}); retrying in {wait:?}");
                        }
                        failures = failures.saturating_add(1);
                        tokio::time::sleep(wait).await;
                    }
                    Incoming::Other => {}
                },
                c = ctl_rx.recv() => match c {
                    Some(Ctl::Ack(tokens)) => acks.extend(tokens),
                    Some(Ctl::Publish { topic, payload }) => {
                        let c = conn.client.clone();
                        tokio::spawn(async move {
                            let _ = c.publish(&topic, 0, false, payload).await;
                        });
                    }
                    None => {
                        finish(&mut conn, &mut acks).await;
                        break;
                    }
                },
                _ = tick.tick() => report_stall(&mut watch, &id, &url, &stats),
                _ = tokio::time::sleep(Duration::from_millis(5)), if !acks.is_empty() => {}
            }
        }
    }
}

/// Says what the watch found: one warning per stall, and a counter.
fn report_stall(watch: &mut stall::StallWatch, id: &str, url: &str, stats: &crate::stats::Stats) {
    match watch.check(std::time::Instant::now()) {
        Some(stall::Stall::Quiet(d)) => {
            tracing::warn!(source = %id, %url, "MQTT subscription stalled: connected, but no message for {:.0?} (`stall_after`); the broker may hold a QoS 2 flow or have dropped the subscription, or the publishers are quiet", d);
            stats.event(
                "mqtt: subscription stalled (no message for `stall_after`)",
                1,
            );
        }
        Some(stall::Stall::Acks(d)) => {
            tracing::warn!(source = %id, %url, "MQTT acknowledgements stalled: waiting {:.0?} to go out (the client's request queue is full)", d);
            stats.event("mqtt: acknowledgements stalled", 1);
        }
        None => {}
    }
}

/// The decoder is done: send the remaining acks, let them go out, then
/// disconnect cleanly.
async fn finish(conn: &mut Conn, acks: &mut std::collections::VecDeque<(u64, AckToken)>) {
    let _ = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            send_acks(conn, acks);
            if acks.is_empty() {
                break;
            }
            if let Incoming::Error(_) = conn.poll().await {
                break;
            }
        }
    })
    .await;
    let c = conn.client.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        c.disconnect().await;
    });
    let _ = tokio::time::timeout(Duration::from_secs(3), async {
        while !matches!(conn.poll().await, Incoming::Error(_)) {}
    })
    .await;
}

/// Acknowledges the messages handed to the engine, once the input log
/// holding their rows is on disk (a durable node): the broker delivers
/// again whatever the log may not have. A log that cannot be written ends
/// the source (and the run), unacknowledged.
fn ack(
    dec: &Decoder<'_>,
    pending: &mut Vec<(u64, AckToken)>,
    ctl: &tokio::sync::mpsc::UnboundedSender<Ctl>,
) -> Result<(), String> {
    if pending.is_empty() {
        return Ok(());
    }
    dec.n.ctx().ingest.sync()?;
    let _ = ctl.send(Ctl::Ack(std::mem::take(pending)));
    Ok(())
}

/// Decodes messages into normaliser rows (the blocking half's state).
struct Decoder<'p> {
    plan: &'p MqttSourcePlan,
    n: Normalizer,
    hosts: Vec<Option<Host>>,
}

impl<'p> Decoder<'p> {
    fn new(plan: &'p MqttSourcePlan, ctx: SourceCtx) -> Decoder<'p> {
        let hosts = plan
            .routes
            .iter()
            .map(|r| match &r.format {
                Format::Sparkplug(naming) => Some(Host::new(naming.clone())),
                _ => None,
            })
            .collect();
        Decoder {
            plan,
            n: Normalizer::new(ctx, plan.batch_rows),
            hosts,
        }
    }

    /// Hands message `m` (`parsed` ahead, or not) to the normaliser.
    fn message(
        &mut self,
        m: Msg,
        parsed: Parsed,
        pending: &mut Vec<(u64, AckToken)>,
        ctl: &tokio::sync::mpsc::UnboundedSender<Ctl>,
    ) {
        if self.n.redelivered(&m.topic, &m.payload) {
            let what = "mqtt: redelivered messages dropped (already in the input log)";
            self.n.ctx().stats.event(what, 1);
            pending.extend(m.token);
            return;
        }
        self.n.begin_message();
        self.decode(&m, parsed, ctl);
        self.n.end_message(&m.topic, &m.payload);
        if let Some(t) = m.token {
            pending.push(t);
        }
    }

    fn decode(&mut self, m: &Msg, parsed: Parsed, ctl: &tokio::sync::mpsc::UnboundedSender<Ctl>) {
        let recv = now_ms();
        let topic = m.topic.as_str();
        self.n.set_topic(Some(topic));
        if let Parsed::Items(items) = parsed {
            self.apply(m, items);
            return;
        }
        if m.payload.len() > self.plan.max_payload {
            let head = &m.payload[..1024.min(m.payload.len())];
            self.n.reject_message(
                &format!(
                    "payload of {} bytes exceeds max_payload ({} bytes); first KiB kept",
                    m.payload.len(),
                    self.plan.max_payload
                ),
                topic,
                head,
            );
            return;
        }
        let Some((ri, _)) = self
            .plan
            .routes
            .iter()
            .enumerate()
            .find_map(|(i, r)| r.captures(topic).map(|c| (i, c)))
        else {
            self.n
                .reject_message("topic matches no route", topic, &m.payload);
            return;
        };
        let route = &self.plan.routes[ri];
        match &route.format {
            Format::Number | Format::Json(_) => {
                if let Parsed::Items(items) = parse::parse(self.plan, m, recv) {
                    self.apply(m, items);
                }
            }
            Format::Sparkplug(_) => {
                let host = self.hosts[ri].as_mut().expect("a host per Sparkplug route");
                let out = host.handle(topic, &m.payload, recv);
                for reason in &out.dead {
                    self.n.reject_message(reason, topic, &m.payload);
                }
                for r in out.rows {
                    self.row(&r.tag, r.ts, r.value, r.quality, &m.payload);
                }
                if let Some((group, node)) = out.rebirth {
                    if self.plan.request_rebirth {
                        tracing::info!(source = %self.plan.id, %group, %node, "requesting Sparkplug rebirth");
                        let _ = ctl.send(Ctl::Publish {
                            topic: format!("spBv1.0/{group}/NCMD/{node}"),
                            payload: sparkplug::rebirth_payload(recv),
                        });
                    }
                }
            }
            Format::Context(table) => {
                let table = *table;
                match context::decode(table, &m.payload) {
                    Ok(edits) => {
                        let ctx = self.n.ctx();
                        if let Err(e) = ctx.context_edits(edits) {
                            self.n.reject_message(&e, topic, &m.payload);
                        }
                    }
                    Err(e) => self.n.reject_message(&e, topic, &m.payload),
                }
            }
        }
    }

    /// A parsed message's rows and dead letters, in its payload's order.
    fn apply(&mut self, m: &Msg, items: Vec<Item>) {
        for item in items {
            match item {
                Item::Row {
                    tag,
                    ts,
                    value,
                    quality,
                } => self.row(&tag, ts, value, quality, &m.payload),
                Item::Reject { reason, raw } => {
                    let raw = raw.as_ref().map_or(&m.payload[..], |r| r.as_bytes());
                    self.n.reject_message(&reason, &m.topic, raw)
                }
            }
        }
    }

    fn row(&mut self, tag: &str, ts: i64, value: f64, q: Quality, payload: &[u8]) {
        self.n.row(ts, tag, value, q, &|| {
            String::from_utf8_lossy(&payload[..payload.len().min(4096)]).into_owned()
        });
    }
}
