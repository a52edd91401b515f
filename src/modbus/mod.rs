//! `modbus` source: Modbus TCP devices polled by register map
//! (tokio-modbus client), read-only toward the devices.
//!
//! - [`config`]: devices, shared register maps, poll groups; address and
//!   overlap checks.
//! - [`register`]: data types, word/byte order, scale, bit fields, counters.
//! - `poll`: request coalescing and the per-device polling task.
//!
//! # What it does to a device
//! It opens one TCP connection per device and sends only read requests
//! (functions 1–4: coils, discrete inputs, holding and input registers). It
//! never writes.
//!
//! # Timing, failures and gaps
//! Each device has a task of its own on the node's runtime, so a device
//! that times out or answers garbage never delays another. A device's poll
//! groups are polled at their intervals; a sample's event time is the time
//! its group's poll began. Adjacent registers of a group are read in one
//! request (up to 125 registers or 2,000 bits, or the device's `max_read`;
//! `max_gap` unused registers may be read to join two runs).
//!
//! A request that times out, or a broken or garbled connection, is tried
//! again on a new connection (`retries`); then the device is down: its tags
//! get a bad-quality marker at the last good poll, the device is reconnected
//! with backoff (0.25 s doubling to `reconnect_max`), and when it answers
//! again the outage becomes a `gaps` row (a Modbus device keeps no history,
//! so nothing is filled in). A Modbus exception names registers: a joined
//! request that fails with illegal function/address/value or a device
//! failure is split into one request per tag for the rest of the run, and a
//! register that still fails gives a dead letter naming device, table,
//! address, tag and exception (once until it recovers) and a bad-quality
//! sample at each poll (its last good value) while it fails.

pub mod config;
mod poll;
pub mod register;

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use crate::ingest::normalize::{Normalizer, SourceCtx};
use crate::model::{now_ms, Gap, Quality, SinkBatch, Stamped};
use register::{Decode, Table};

/// A poll group: tags polled together at one interval.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupPlan {
    pub name: String,
    pub interval_ms: u64,
}

/// One tag's register(s).
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    pub tag: String,
    pub table: Table,
    /// Protocol address (0-based; register 40001 of a manual is holding 0).
    pub address: u16,
    pub decode: Decode,
    pub group: usize,
}

impl Point {
    /// Registers (or bits) it spans.
    pub fn words(&self) -> u16 {
        if self.table.is_bits() {
            1
        } else {
            self.decode.kind.words()
        }
    }
}

/// One device (a unit id behind a host:port).
#[derive(Clone, Debug)]
pub struct DevicePlan {
    pub name: String,
    /// `host:port`.
    pub host: String,
    pub unit: u8,
    pub timeout_ms: u64,
    pub retries: u32,
    pub reconnect_max_ms: u64,
    /// Most registers in one request.
    pub max_read: u16,
    /// Unused registers a request may span to join two runs.
    pub max_gap: u16,
    pub points: Vec<Point>,
}

/// A validated `modbus` source.
#[derive(Clone, Debug)]
pub struct ModbusSourcePlan {
    pub id: String,
    pub devices: Vec<DevicePlan>,
    pub groups: Vec<GroupPlan>,
    pub batch_rows: usize,
    /// Capacity (polls) of the devices → decoder channel.
    pub channel: usize,
}

/// A device task → the decoder.
enum Ev {
    /// One poll of a group: values and the registers that raised exceptions.
    Polled {
        device: usize,
        ts: i64,
        values: Vec<(u32, f64)>,
        failed: Vec<(u32, String)>,
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
    plan: &ModbusSourcePlan,
    ctx: SourceCtx,
    rt: tokio::runtime::Handle,
) -> Result<(), String> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Ev>(plan.channel.max(4));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stop = ctx.stop.clone();
    let tasks: Vec<_> = plan
        .devices
        .iter()
        .enumerate()
        .map(|(i, d)| {
            rt.spawn(poll::device_task(
                Arc::new(d.clone()),
                i,
                plan.groups.clone(),
                tx.clone(),
                stop_rx.clone(),
                ctx.stats.clone(),
            ))
        })
        .collect();
    drop(tx);
    let mut dec = Decoder::new(plan, ctx);
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
    Ok(())
}

fn decode_loop(dec: &mut Decoder, rx: &Receiver<Ev>, stop: &AtomicBool) {
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
    failing: Vec<bool>,
}

/// The blocking half: polls → samples, outages → gaps, exceptions → dead
/// letters.
struct Decoder {
    n: Normalizer,
    id: String,
    devices: Vec<DevicePlan>,
    state: Vec<DeviceState>,
}

impl Decoder {
    fn new(plan: &ModbusSourcePlan, ctx: SourceCtx) -> Decoder {
        let mut d = Decoder {
            n: Normalizer::new(ctx, plan.batch_rows),
            id: plan.id.clone(),
            devices: plan.devices.clone(),
            state: plan
                .devices
                .iter()
                .map(|d| DeviceState {
                    last_good: vec![None; d.points.len()],
                    failing: vec![false; d.points.len()],
                    ..Default::default()
                })
                .collect(),
        };
        // A restart from the input log: what the devices read while the
        // node was down is gone (they keep no history).
        if let Some(at) = d.n.take_resumed_at() {
            let tags = d.devices.iter().map(|x| x.points.len()).sum::<usize>();
            d.gap(
                at,
                now_ms(),
                tags,
                "plantflow was down (restarted from its input log)".into(),
            );
        }
        d
    }

    fn event(&mut self, ev: Ev) {
        match ev {
            Ev::Polled {
                device,
                ts,
                values,
                failed,
            } => self.polled(device, ts, values, failed),
            Ev::Down { device, reason } => self.down(device, reason),
            Ev::Up { device, at } => {
                let dev = &self.devices[device];
                tracing::info!(source = %self.id, device = %dev.name, "Modbus device answers again");
                if let Some((start, reason)) = self.state[device].down.take() {
                    let n = dev.points.len();
                    let reason =
                        format!("device {} ({}) unreachable: {reason}", dev.name, dev.host);
                    self.gap(start, at, n, reason);
                }
            }
        }
    }

    fn polled(
        &mut self,
        device: usize,
        ts: i64,
        values: Vec<(u32, f64)>,
        failed: Vec<(u32, String)>,
    ) {
        let dev = &self.devices[device];
        let st = &mut self.state[device];
        st.last_ok = Some(ts);
        for (p, v) in values {
            let point = &dev.points[p as usize];
            let raw = || format!("{} {} {}: {v}", dev.name, point.table.name(), point.address);
            self.n.row(ts, &point.tag, v, Quality::Good, &raw);
            st.last_good[p as usize] = Some(v);
            if std::mem::take(&mut st.failing[p as usize]) {
                self.n.ctx().stats.event("modbus: registers recovered", 1);
            }
        }
        for (p, why) in failed {
            let point = &dev.points[p as usize];
            if let Some(v) = st.last_good[p as usize] {
                let raw = || {
                    format!(
                        "{} {} {}: {why}",
                        dev.name,
                        point.table.name(),
                        point.address
                    )
                };
                self.n.row(ts, &point.tag, v, Quality::Bad, &raw);
            }
            self.n.ctx().stats.event("modbus: register reads failed", 1);
            if !std::mem::replace(&mut st.failing[p as usize], true) {
                let reason = format!(
                    "Modbus exception {why} reading {} register {} (tag `{}`) of device {} ({} unit {})",
                    point.table.name(),
                    point.address,
                    point.tag,
                    dev.name,
                    dev.host,
                    dev.unit
                );
                let at = format!("{}/{}/{}", dev.name, point.table.name(), point.address);
                self.n.reject_at(&reason, &at, at.clone());
            }
        }
    }

    fn down(&mut self, device: usize, reason: String) {
        let dev = &self.devices[device];
        let st = &mut self.state[device];
        tracing::warn!(source = %self.id, device = %dev.name, host = %dev.host, "Modbus device down: {reason}");
        self.n.ctx().stats.event("modbus: devices down", 1);
        let start = st.last_ok.unwrap_or_else(now_ms);
        if st.down.is_none() {
            st.down = Some((start, reason));
        }
        if let Some(at) = st.last_ok {
            for (i, point) in dev.points.iter().enumerate() {
                if let Some(v) = st.last_good[i] {
                    let raw = || format!("{}: gap marker", point.tag);
                    self.n.row(at, &point.tag, v, Quality::Bad, &raw);
                }
            }
        }
    }

    fn gap(&mut self, start: i64, end: i64, tags: usize, reason: String) {
        tracing::warn!(source = %self.id, tags, "data gap from {start} to {end}: {reason}");
        self.n.ctx().stats.event("modbus: gaps marked", 1);
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
                recovery: "none: Modbus devices keep no history; polling resumed".into(),
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
                    dev.name, dev.host
                );
                self.gap(start, now, dev.points.len(), reason);
            }
        }
        self.n.end();
    }
}
