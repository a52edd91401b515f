//! Field devices read by polling or by change notification (Modbus TCP,
//! BACnet/IP): one task per device on the node's runtime, so a device that
//! times out or answers garbage never delays another, and one blocking
//! decoder that turns what they read into samples, outages into `gaps`
//! rows and points that fail into dead letters. The protocols own their
//! tasks; this module owns everything after the wire.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::Duration;

use crate::ingest::normalize::{Normalizer, SourceCtx};
use crate::model::{now_ms, Gap, Quality, SinkBatch, Stamped};

/// What the decoder knows of one device's points.
#[derive(Clone, Debug)]
pub struct FieldDevice {
    pub name: String,
    /// Where it is, in gap rows: `10.0.4.21:502`.
    pub addr: String,
    /// Where it is, in a point's dead letter: `10.0.4.21:502 unit 1`.
    pub detail: String,
    /// Each point's tag.
    pub tags: Vec<String>,
    /// Each point as the protocol names it: `holding register 4`,
    /// `analog-value:1`.
    pub labels: Vec<String>,
    /// Each point in a dead letter's topic (`<device>/<key>`):
    /// `holding/4`, `analog-value:1`.
    pub keys: Vec<String>,
}

/// What a protocol's device task tells the decoder.
#[derive(Debug)]
pub enum FieldEv {
    /// One poll: values (point, value, quality) and the points that failed
    /// (point, why: `Modbus exception 02 illegal data address`).
    Polled {
        device: usize,
        ts: i64,
        values: Vec<(u32, f64, Quality)>,
        failed: Vec<(u32, String)>,
    },
    /// A point's value as the device reported a change: kept only if value
    /// or quality differ from the point's last sample since the device was
    /// last up (a renewed subscription repeats the current value).
    Changed {
        device: usize,
        ts: i64,
        point: u32,
        value: f64,
        quality: Quality,
    },
    /// A dead letter about one point, said once until the device is next
    /// down (a unit the config does not expect).
    Reject {
        device: usize,
        point: u32,
        reason: String,
    },
    /// The unit a point's device reports, for the tag-quality view.
    Unit {
        device: usize,
        point: u32,
        unit: crate::ingest::watch::ReportedUnit,
    },
    Down {
        device: usize,
        reason: String,
    },
    Up {
        device: usize,
        at: i64,
    },
}

/// Sends to the decoder; when the channel is full, waits without stalling
/// the runtime's other tasks. False once the decoder is gone.
pub fn send(tx: &SyncSender<FieldEv>, ev: FieldEv) -> bool {
    match tx.try_send(ev) {
        Ok(()) => true,
        Err(TrySendError::Full(ev)) => tokio::task::block_in_place(|| tx.send(ev).is_ok()),
        Err(TrySendError::Disconnected(_)) => false,
    }
}

/// How one protocol names itself in messages, counters and gap rows.
#[derive(Clone, Copy, Debug)]
pub struct Protocol {
    /// `Modbus`, `BACnet`: in log lines.
    pub name: &'static str,
    /// `modbus`, `bacnet`: the counters' prefix.
    pub key: &'static str,
    /// `register`, `object`: what a point is, in counters.
    pub point: &'static str,
    /// The `recovery` of its gap rows.
    pub recovery: &'static str,
}

/// What a protocol's device tasks get: where to send, and when to stop.
pub type TaskEnds = (SyncSender<FieldEv>, tokio::sync::watch::Receiver<bool>);

/// Runs a field source until `ctx.stop`: `spawn` starts the protocol's
/// device tasks (each with a clone of the sender and the stop signal), the
/// decoder runs on this thread, and at the end the tasks are told to stop
/// and what they still send is drained.
pub fn run(
    (proto, id): (Protocol, &str),
    devices: Vec<FieldDevice>,
    (ctx, batch_rows, channel): (SourceCtx, usize, usize),
    rt: &tokio::runtime::Handle,
    spawn: impl FnOnce(&TaskEnds) -> Vec<tokio::task::JoinHandle<()>>,
) {
    let (tx, rx) = std::sync::mpsc::sync_channel::<FieldEv>(channel.max(4));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let tasks = spawn(&(tx, stop_rx));
    let stop = ctx.stop.clone();
    let mut dec = Decoder::new(proto, id, devices, ctx, batch_rows);
    decode_loop(&mut dec, &rx, &stop);
    let _ = stop_tx.send(true);
    // Stopping: the tasks end at their next await and drop their senders.
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(ev) => dec.event(ev),
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) if tasks.iter().all(|t| t.is_finished()) => break,
            Err(RecvTimeoutError::Timeout) => {}
        }
    }
    for t in tasks {
        let _ = rt.block_on(t);
    }
    dec.finish();
}

fn decode_loop(dec: &mut Decoder, rx: &Receiver<FieldEv>, stop: &AtomicBool) {
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(ev) => {
                dec.event(ev);
                for _ in 0..256 {
                    match rx.try_recv() {
                        Ok(ev) => dec.event(ev),
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

/// What the decoder knows of one device.
#[derive(Default)]
struct DeviceState {
    last_ok: Option<i64>,
    down: Option<(i64, String)>,
    last_good: Vec<Option<f64>>,
    /// The last sample of a point reported by change, since the device was
    /// last up.
    last_change: Vec<Option<(f64, Quality)>>,
    failing: Vec<bool>,
    rejected: Vec<bool>,
}

/// The blocking half: polls → samples, outages → gaps, failures → dead
/// letters.
struct Decoder {
    n: Normalizer,
    proto: Protocol,
    id: String,
    devices: Vec<FieldDevice>,
    state: Vec<DeviceState>,
}

impl Decoder {
    fn new(
        proto: Protocol,
        id: &str,
        devices: Vec<FieldDevice>,
        ctx: SourceCtx,
        batch_rows: usize,
    ) -> Decoder {
        let state = devices
            .iter()
            .map(|d| DeviceState {
                last_good: vec![None; d.tags.len()],
                last_change: vec![None; d.tags.len()],
                failing: vec![false; d.tags.len()],
                rejected: vec![false; d.tags.len()],
                ..Default::default()
            })
            .collect();
        let mut d = Decoder {
            n: Normalizer::new(ctx, batch_rows),
            proto,
            id: id.into(),
            devices,
            state,
        };
        // A restart from the input log: what the devices read while the
        // node was down is gone.
        if let Some(at) = d.n.take_resumed_at() {
            let tags = d.devices.iter().map(|x| x.tags.len()).sum::<usize>();
            d.gap(
                at,
                now_ms(),
                tags,
                "plantflow was down (restarted from its input log)".into(),
            );
        }
        d
    }

    fn count(&self, what: &str, n: u64) {
        self.n
            .ctx()
            .stats
            .event(&format!("{}: {what}", self.proto.key), n);
    }

    fn event(&mut self, ev: FieldEv) {
        match ev {
            FieldEv::Polled {
                device,
                ts,
                values,
                failed,
            } => self.polled(device, ts, values, failed),
            FieldEv::Changed {
                device,
                ts,
                point,
                value,
                quality,
            } => {
                let last = &mut self.state[device].last_change[point as usize];
                if *last == Some((value, quality)) {
                    self.count("unchanged notifications skipped", 1);
                    return;
                }
                *last = Some((value, quality));
                self.polled(device, ts, [(point, value, quality)], Vec::new());
            }
            FieldEv::Reject {
                device,
                point,
                reason,
            } => {
                if !std::mem::replace(&mut self.state[device].rejected[point as usize], true) {
                    let dev = &self.devices[device];
                    let at = format!("{}/{}", dev.name, dev.keys[point as usize]);
                    self.n.reject_at(&reason, &at, at.clone());
                }
            }
            FieldEv::Unit {
                device,
                point,
                unit,
            } => {
                let tag = &self.devices[device].tags[point as usize];
                self.n.ctx().watch.report_unit(tag, unit);
            }
            FieldEv::Down { device, reason } => self.down(device, reason),
            FieldEv::Up { device, at } => {
                let dev = &self.devices[device];
                tracing::info!(source = %self.id, device = %dev.name, "{} device answers again", self.proto.name);
                let st = &mut self.state[device];
                st.last_change.iter_mut().for_each(|x| *x = None);
                st.rejected.iter_mut().for_each(|x| *x = false);
                if let Some((start, reason)) = st.down.take() {
                    let n = dev.tags.len();
                    let reason =
                        format!("device {} ({}) unreachable: {reason}", dev.name, dev.addr);
                    self.gap(start, at, n, reason);
                }
            }
        }
    }

    fn polled(
        &mut self,
        device: usize,
        ts: i64,
        values: impl IntoIterator<Item = (u32, f64, Quality)>,
        failed: Vec<(u32, String)>,
    ) {
        let dev = &self.devices[device];
        let st = &mut self.state[device];
        st.last_ok = Some(ts);
        let mut recovered = 0;
        for (p, v, q) in values {
            let (tag, label) = (&dev.tags[p as usize], &dev.labels[p as usize]);
            let raw = || format!("{} {label}: {v}", dev.name);
            self.n.row(ts, tag, v, q, &raw);
            if q != Quality::Bad {
                st.last_good[p as usize] = Some(v);
            }
            recovered += u64::from(std::mem::take(&mut st.failing[p as usize]));
        }
        let n_failed = failed.len() as u64;
        for (p, why) in failed {
            let (tag, label) = (&dev.tags[p as usize], &dev.labels[p as usize]);
            if let Some(v) = st.last_good[p as usize] {
                let raw = || format!("{} {label}: {why}", dev.name);
                self.n.row(ts, tag, v, Quality::Bad, &raw);
            }
            if !std::mem::replace(&mut st.failing[p as usize], true) {
                let reason = format!(
                    "{why} reading {label} (tag `{tag}`) of device {} ({})",
                    dev.name, dev.detail
                );
                let at = format!("{}/{}", dev.name, dev.keys[p as usize]);
                self.n.reject_at(&reason, &at, at.clone());
            }
        }
        if recovered > 0 {
            self.count(&format!("{}s recovered", self.proto.point), recovered);
        }
        if n_failed > 0 {
            self.count(&format!("{} reads failed", self.proto.point), n_failed);
        }
    }

    fn down(&mut self, device: usize, reason: String) {
        let dev = &self.devices[device];
        let st = &mut self.state[device];
        tracing::warn!(source = %self.id, device = %dev.name, addr = %dev.addr, "{} device down: {reason}", self.proto.name);
        let start = st.last_ok.unwrap_or_else(now_ms);
        if st.down.is_none() {
            st.down = Some((start, reason));
        }
        if let Some(at) = st.last_ok {
            for (i, tag) in dev.tags.iter().enumerate() {
                if let Some(v) = st.last_good[i] {
                    let raw = || format!("{tag}: gap marker");
                    self.n.row(at, tag, v, Quality::Bad, &raw);
                }
            }
        }
        self.count("devices down", 1);
    }

    fn gap(&mut self, start: i64, end: i64, tags: usize, reason: String) {
        tracing::warn!(source = %self.id, tags, "data gap from {start} to {end}: {reason}");
        self.count("gaps marked", 1);
        let _ = self
            .n
            .ctx()
            .sink
            .send(Stamped::now(SinkBatch::Gaps(vec![Gap {
                source: self.id.clone(),
                start,
                end,
                tags: tags as i64,
                reason,
                recovery: self.proto.recovery.into(),
            }])));
    }

    /// The source stops: devices still down end their gap now.
    fn finish(mut self) {
        let now = now_ms();
        for i in 0..self.devices.len() {
            if let Some((start, reason)) = self.state[i].down.take() {
                let dev = &self.devices[i];
                let reason = format!(
                    "device {} ({}) unreachable: {reason} (still when the source stopped)",
                    dev.name, dev.addr
                );
                self.gap(start, now, dev.tags.len(), reason);
            }
        }
        self.n.end();
    }
}
