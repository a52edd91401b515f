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

use std::sync::Arc;

use crate::ingest::field::{self, FieldDevice, Protocol};
use crate::ingest::normalize::SourceCtx;
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
    /// The device's clock: read with every group's poll, its value (ms)
    /// is the poll's event time; `None`: the poll's own time.
    pub time: Option<Point>,
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

/// Runs the source until `ctx.stop`.
pub fn run(
    plan: &ModbusSourcePlan,
    ctx: SourceCtx,
    rt: tokio::runtime::Handle,
) -> Result<(), String> {
    let stats = ctx.stats.clone();
    field::run(
        (PROTOCOL, &plan.id),
        plan.devices.iter().map(field_device).collect(),
        (ctx, plan.batch_rows, plan.channel),
        &rt,
        |(tx, stop)| {
            plan.devices
                .iter()
                .enumerate()
                .map(|(i, d)| {
                    rt.spawn(poll::device_task(
                        Arc::new(d.clone()),
                        i,
                        plan.groups.clone(),
                        tx.clone(),
                        stop.clone(),
                        stats.clone(),
                    ))
                })
                .collect()
        },
    );
    Ok(())
}

const PROTOCOL: Protocol = Protocol {
    name: "Modbus",
    key: "modbus",
    point: "register",
    recovery: "none: Modbus devices keep no history; polling resumed",
};

/// What the decoder knows of a device.
fn field_device(d: &DevicePlan) -> FieldDevice {
    FieldDevice {
        name: d.name.clone(),
        addr: d.host.clone(),
        detail: format!("{} unit {}", d.host, d.unit),
        tags: d.points.iter().map(|p| p.tag.clone()).collect(),
        labels: d
            .points
            .iter()
            .map(|p| format!("{} register {}", p.table.name(), p.address))
            .collect(),
        keys: d
            .points
            .iter()
            .map(|p| format!("{}/{}", p.table.name(), p.address))
            .collect(),
    }
}
