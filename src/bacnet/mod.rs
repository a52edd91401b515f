//! `bacnet` source: BACnet/IP devices (bacnet-client, rusty-bacnet),
//! read-only toward the devices.
//!
//! - [`config`]: the node's port, devices, shared point maps.
//! - `device`: one task per device (discovery, ReadPropertyMultiple polls,
//!   SubscribeCOV and its renewal) and the COV notifications' dispatcher.
//!
//! # What it does to a device
//! It sends Who-Is (broadcast, or directed to a device's known address),
//! ReadPropertyMultiple of `present-value`, `status-flags` and (once per
//! connection, analog objects) `units`, and SubscribeCOV with a finite
//! lifetime, renewed at half of it. It never writes a property.
//!
//! # Values, quality, units
//! Analog objects give their REAL value, binary ones 0 or 1, multi-state
//! ones their state number (1-based), each times `scale` plus `offset`.
//! Status flags give the quality: `fault` → bad; `out-of-service` or
//! `overridden` → uncertain (the value is not the process's own); `in-alarm`
//! alone is still good. A point's `unit` is checked against the device's
//! `units`: another unit is a dead letter naming both, and the point's
//! samples are uncertain until the device reports the expected one.
//!
//! # COV and polling
//! With `cov = true` (the default) each point is subscribed to (SubscribeCOV
//! for its object, unconfirmed notifications unless `cov_confirmed`); an
//! object the device refuses (services / cov-subscription-failed, or any
//! error) is polled at `interval` instead. A sample of a COV point is a
//! notification (event time: when it arrived); one that repeats the point's
//! last value and quality (the renewal's first notification) is skipped. A
//! device whose points all report by COV is still read every `interval`
//! (its device object's `system-status`), so an outage is seen.
//!
//! # Failures and gaps
//! A device that does not answer within `timeout` (twice) is down: its tags
//! get a bad-quality marker at the last good sample and the device is tried
//! again with backoff (0.25 s doubling to `reconnect_max`). When it answers,
//! its subscriptions are made again (a restarted device has forgotten them)
//! and the outage is a `gaps` row. An object that answers with an error
//! (unknown object, a property it lacks) is a dead letter naming it, once
//! until it recovers, and bad-quality samples of its last good value.

pub mod config;
mod device;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::str::FromStr;

use bacnet_types::enums::{EngineeringUnits, ObjectType};

use crate::ingest::field::{self, FieldDevice, Protocol};
use crate::ingest::normalize::SourceCtx;

/// A BACnet object the source reads: its type and instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Object {
    /// The object type's number (0 analog-input, ... 19 multi-state-value).
    pub kind: u32,
    pub instance: u32,
}

/// The object types a point may name: analog, binary, multi-state inputs,
/// outputs and values.
const KINDS: &[(&str, ObjectType)] = &[
    ("analog-input", ObjectType::ANALOG_INPUT),
    ("analog-output", ObjectType::ANALOG_OUTPUT),
    ("analog-value", ObjectType::ANALOG_VALUE),
    ("binary-input", ObjectType::BINARY_INPUT),
    ("binary-output", ObjectType::BINARY_OUTPUT),
    ("binary-value", ObjectType::BINARY_VALUE),
    ("multi-state-input", ObjectType::MULTI_STATE_INPUT),
    ("multi-state-output", ObjectType::MULTI_STATE_OUTPUT),
    ("multi-state-value", ObjectType::MULTI_STATE_VALUE),
];

impl Object {
    /// `analog-input:1` (any of BACnet's spellings of the type).
    pub fn parse(s: &str) -> Result<Object, String> {
        let Some((t, i)) = s.rsplit_once(':') else {
            return Err(format!("`{s}` is not `<object type>:<instance>`"));
        };
        let kind = ObjectType::from_str(t.trim())
            .ok()
            .filter(|k| KINDS.iter().any(|(_, x)| x == k))
            .ok_or_else(|| {
                let names: Vec<&str> = KINDS.iter().map(|(n, _)| *n).collect();
                format!(
                    "`{t}` is not an object type the source reads (one of {})",
                    names.join(", ")
                )
            })?;
        let instance = i
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|&n| n <= 4_194_302)
            .ok_or_else(|| format!("`{i}` is not an object instance (0–4194302)"))?;
        Ok(Object {
            kind: kind.to_raw(),
            instance,
        })
    }

    pub fn object_type(&self) -> ObjectType {
        ObjectType::from_raw(self.kind)
    }

    pub fn is_analog(&self) -> bool {
        matches!(
            self.object_type(),
            ObjectType::ANALOG_INPUT | ObjectType::ANALOG_OUTPUT | ObjectType::ANALOG_VALUE
        )
    }
}

impl std::fmt::Display for Object {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = self.object_type();
        let name = KINDS
            .iter()
            .find(|(_, k)| *k == t)
            .map_or("object", |(n, _)| n);
        write!(f, "{name}:{}", self.instance)
    }
}

/// A unit by any of BACnet's spellings (`degrees-celsius`, `DEGREES_CELSIUS`).
pub fn parse_unit(s: &str) -> Option<u32> {
    EngineeringUnits::from_str(s.trim())
        .ok()
        .map(|u| u.to_raw())
}

/// A unit's name as BACnet spells it in the standard's text.
pub fn unit_name(raw: u32) -> String {
    let u = EngineeringUnits::from_raw(raw);
    match u.name() {
        Some(n) => n.to_ascii_lowercase().replace('_', "-"),
        None => format!("unit {raw}"),
    }
}

/// A unit's symbol, for the units plants write in their asset tables
/// (empty where this table has none: the name stands then).
pub fn unit_symbol(raw: u32) -> &'static str {
    use EngineeringUnits as U;
    const SYMBOLS: &[(EngineeringUnits, &str)] = &[
        (U::DEGREES_CELSIUS, "°C"),
        (U::DEGREES_FAHRENHEIT, "°F"),
        (U::DEGREES_KELVIN, "K"),
        (U::WATTS, "W"),
        (U::KILOWATTS, "kW"),
        (U::MEGAWATTS, "MW"),
        (U::KILOWATT_HOURS, "kWh"),
        (U::MEGAWATT_HOURS, "MWh"),
        (U::KILOVOLT_AMPERES, "kVA"),
        (U::KILOVOLT_AMPERES_REACTIVE, "kvar"),
        (U::VOLTS, "V"),
        (U::AMPERES, "A"),
        (U::HERTZ, "Hz"),
        (U::PERCENT, "%"),
        (U::PERCENT_RELATIVE_HUMIDITY, "%RH"),
        (U::PASCALS, "Pa"),
        (U::KILOPASCALS, "kPa"),
        (U::BARS, "bar"),
        (U::CUBIC_METERS_PER_HOUR, "m³/h"),
        (U::CUBIC_METERS_PER_SECOND, "m³/s"),
        (U::LITERS_PER_SECOND, "l/s"),
        (U::LITERS_PER_MINUTE, "l/min"),
        (U::REVOLUTIONS_PER_MINUTE, "rpm"),
        (U::TONS_REFRIGERATION, "tonR"),
        (U::PARTS_PER_MILLION, "ppm"),
        (U::SECONDS, "s"),
        (U::MINUTES, "min"),
        (U::HOURS, "h"),
    ];
    let u = EngineeringUnits::from_raw(raw);
    SYMBOLS.iter().find(|(x, _)| *x == u).map_or("", |(_, s)| s)
}

/// One tag's object.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    pub tag: String,
    pub object: Object,
    /// The unit the device should report (raw EngineeringUnits).
    pub unit: Option<u32>,
    /// Subscribe to COV (if the source does and the device takes it).
    pub cov: bool,
    pub scale: f64,
    pub offset: f64,
}

/// One device.
#[derive(Clone, Debug)]
pub struct DevicePlan {
    pub name: String,
    pub instance: u32,
    /// Known address; `None`: found by Who-Is.
    pub address: Option<SocketAddrV4>,
    pub points: Vec<Point>,
}

/// A validated `bacnet` source.
#[derive(Clone, Debug)]
pub struct BacnetSourcePlan {
    pub id: String,
    pub bind: SocketAddrV4,
    pub broadcast: Ipv4Addr,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub reconnect_max_ms: u64,
    pub cov: bool,
    pub cov_lifetime_s: u32,
    pub cov_confirmed: bool,
    pub max_objects: usize,
    pub devices: Vec<DevicePlan>,
    pub batch_rows: usize,
    /// Capacity (events) of the devices → decoder channel.
    pub channel: usize,
}

const PROTOCOL: Protocol = Protocol {
    name: "BACnet",
    key: "bacnet",
    point: "object",
    recovery:
        "none: not read back from the device's trend logs; polling and COV subscriptions resumed",
};

/// Runs the source until `ctx.stop`.
pub fn run(
    plan: &BacnetSourcePlan,
    ctx: SourceCtx,
    rt: tokio::runtime::Handle,
) -> Result<(), String> {
    let client = rt
        .block_on(device::start(plan))
        .map_err(|e| format!("BACnet/IP port {}: {e}", plan.bind))?;
    let stats = ctx.stats.clone();
    field::run(
        (PROTOCOL, &plan.id),
        plan.devices.iter().map(field_device).collect(),
        (ctx, plan.batch_rows, plan.channel),
        &rt,
        |(tx, stop)| device::spawn(&rt, plan, &client, tx, stop, &stats),
    );
    rt.block_on(device::stop(client));
    Ok(())
}

fn field_device(d: &DevicePlan) -> FieldDevice {
    let addr = match d.address {
        Some(a) => format!("{a}, instance {}", d.instance),
        None => format!("instance {}", d.instance),
    };
    FieldDevice {
        name: d.name.clone(),
        detail: addr.clone(),
        addr,
        tags: d.points.iter().map(|p| p.tag.clone()).collect(),
        labels: d.points.iter().map(|p| p.object.to_string()).collect(),
        keys: d.points.iter().map(|p| p.object.to_string()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_and_units_parse_by_bacnet_names() {
        let o = Object::parse("analog-input:1").unwrap();
        assert_eq!((o.kind, o.instance), (0, 1));
        assert_eq!(o.to_string(), "analog-input:1");
        assert_eq!(
            Object::parse("MULTI_STATE_VALUE:4").unwrap().to_string(),
            "multi-state-value:4"
        );
        assert!(Object::parse("device:1").is_err());
        assert!(Object::parse("analog-input").is_err());
        assert!(Object::parse("analog-input:4194303").is_err());
        assert_eq!(parse_unit("degrees-celsius"), Some(62));
        assert_eq!(parse_unit("kilowatts"), Some(48));
        assert_eq!(unit_name(62), "degrees-celsius");
        assert_eq!(parse_unit("furlongs"), None);
        assert_eq!(unit_symbol(62), "°C");
        assert_eq!(unit_symbol(48), "kW");
        assert_eq!(unit_symbol(53), "Pa");
        assert_eq!(unit_symbol(95), "", "no-units has no symbol");
    }
}
