//! Validation of `type = "modbus"` sources: devices, shared register maps
//! and poll groups. Addresses past 65535, requests the protocol cannot
//! make, overlapping registers and duplicate tags are errors at their line.

use std::collections::HashMap;

use serde::Deserialize;

use crate::config::Loader;
use crate::modbus::register::{DataType, Decode, Order, Table};
use crate::modbus::{DevicePlan, GroupPlan, ModbusSourcePlan, Point};

#[derive(Deserialize, Debug, schemars::JsonSchema)]
pub struct RawModbus {
    id: String,
    /// Poll interval of the `default` group (default 1s).
    #[serde(default)]
    interval: Option<String>,
    /// Per request and per connect (default 1s); devices may override.
    #[serde(default)]
    timeout: Option<String>,
    /// Tries on a new connection after a timeout or I/O error before the
    /// device counts as down (default 1).
    #[serde(default)]
    retries: Option<u32>,
    /// Longest wait between reconnects to a down device (default 30s).
    #[serde(default)]
    reconnect_max: Option<String>,
    /// Most registers in one request (1–125, default 125).
    #[serde(default)]
    max_read: Option<u16>,
    /// Unused registers a request may span to join two runs (default 0).
    #[serde(default)]
    max_gap: Option<u16>,
    #[serde(default)]
    batch_rows: Option<usize>,
    #[serde(default)]
    #[schemars(with = "Vec<RawModbusGroup>")]
    groups: Vec<toml::Value>,
    #[serde(default)]
    #[schemars(with = "Vec<RawModbusMap>")]
    maps: Vec<toml::Value>,
    #[serde(default)]
    #[schemars(with = "Vec<RawModbusDevice>")]
    devices: Vec<toml::Value>,
}

const KEYS: &[&str] = &[
    "type",
    "id",
    "interval",
    "timeout",
    "retries",
    "reconnect_max",
    "max_read",
    "max_gap",
    "batch_rows",
    "groups",
    "maps",
    "devices",
];

#[derive(Deserialize, Debug, schemars::JsonSchema)]
pub struct RawModbusGroup {
    name: String,
    interval: String,
}

const GROUP_KEYS: &[&str] = &["name", "interval"];

/// A register map shared by devices of one model.
#[derive(Deserialize, Debug, schemars::JsonSchema)]
pub struct RawModbusMap {
    name: String,
    /// The device's clock: its register gives every poll's event time.
    #[serde(default)]
    #[schemars(with = "Option<RawModbusTime>")]
    time: Option<toml::Value>,
    #[serde(default)]
    #[schemars(with = "Vec<RawModbusRegister>")]
    registers: Vec<toml::Value>,
}

const MAP_KEYS: &[&str] = &["name", "time", "registers"];

/// A register holding the device's own time (a logger's record time):
/// each poll's samples take it as their event time.
#[derive(Deserialize, Debug, schemars::JsonSchema)]
pub struct RawModbusTime {
    /// holding (default) or input.
    #[serde(default)]
    table: Option<String>,
    address: i64,
    /// u32 (default), u64 or i64.
    #[serde(default, rename = "type")]
    kind: Option<String>,
    /// ABCD (default), CDAB, BADC, DCBA.
    #[serde(default)]
    order: Option<String>,
    /// s (default: Unix seconds) or ms.
    #[serde(default)]
    unit: Option<String>,
}

const TIME_KEYS: &[&str] = &["table", "address", "type", "order", "unit"];

#[derive(Deserialize, Debug, schemars::JsonSchema)]
pub struct RawModbusDevice {
    name: String,
    /// `host:port` (port 502 if left out).
    host: String,
    /// Unit id (slave address) 0–255 (default 1).
    #[serde(default)]
    unit: Option<i64>,
    /// A `[[sources.maps]]` name.
    #[serde(default)]
    map: Option<String>,
    /// The device's clock (overrides its map's).
    #[serde(default)]
    #[schemars(with = "Option<RawModbusTime>")]
    time: Option<toml::Value>,
    #[serde(default)]
    timeout: Option<String>,
    #[serde(default)]
    retries: Option<u32>,
    #[serde(default)]
    reconnect_max: Option<String>,
    #[serde(default)]
    max_read: Option<u16>,
    #[serde(default)]
    max_gap: Option<u16>,
    #[serde(default)]
    #[schemars(with = "Vec<RawModbusRegister>")]
    registers: Vec<toml::Value>,
}

const DEVICE_KEYS: &[&str] = &[
    "name",
    "host",
    "unit",
    "map",
    "time",
    "timeout",
    "retries",
    "reconnect_max",
    "max_read",
    "max_gap",
    "registers",
];

#[derive(Deserialize, Debug, schemars::JsonSchema)]
pub struct RawModbusRegister {
    /// Tag name; `{device}` is the device's name.
    tag: String,
    /// holding (default), input, coil or discrete.
    #[serde(default)]
    table: Option<String>,
    /// Protocol address, 0-based (holding 0 is "40001" in many manuals).
    address: i64,
    /// u16 (default), i16, u32, i32, f32, u64, i64, f64, or bool.
    #[serde(default, rename = "type")]
    kind: Option<String>,
    /// ABCD (default), CDAB (word swap), BADC (byte swap), DCBA.
    #[serde(default)]
    order: Option<String>,
    #[serde(default)]
    scale: Option<f64>,
    #[serde(default)]
    offset: Option<f64>,
    /// One bit (0–15) of a 16-bit register, read as 0 or 1.
    #[serde(default)]
    bit: Option<i64>,
    /// A counter: samples are its increase since the previous poll (scaled).
    #[serde(default)]
    counter: Option<bool>,
    /// The raw value a counter wraps at (default: its type's range).
    #[serde(default)]
    rollover: Option<f64>,
    #[serde(default)]
    group: Option<String>,
}

const REGISTER_KEYS: &[&str] = &[
    "tag", "table", "address", "type", "order", "scale", "offset", "bit", "counter", "rollover",
    "group",
];

/// Validates a `modbus` source table.
pub fn source(l: &mut Loader<'_>, key: &str, v: toml::Value) -> Option<ModbusSourcePlan> {
    let r: RawModbus = l.de(key, v, KEYS)?;
    let groups = groups(l, key, &r);
    let names: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
    let mut maps: HashMap<String, MapPlan> = HashMap::new();
    for (i, m) in r.maps.into_iter().enumerate() {
        let mk = format!("{key}.maps[{i}]");
        let Some(m) = l.de::<RawModbusMap>(&mk, m, MAP_KEYS) else {
            continue;
        };
        if maps.contains_key(&m.name) {
            l.at_value(
                &format!("{mk}.name"),
                format!("duplicate map `{}`", m.name),
                None,
            );
        }
        let regs = registers(l, &format!("{mk}.registers"), m.registers, &names);
        let time = m
            .time
            .and_then(|t| time_register(l, &format!("{mk}.time"), t));
        maps.insert(m.name, (regs, time));
    }
    let defaults = Defaults {
        timeout_ms: ms(l, &format!("{key}.timeout"), &r.timeout).unwrap_or(1_000),
        reconnect_max_ms: ms(l, &format!("{key}.reconnect_max"), &r.reconnect_max)
            .unwrap_or(30_000),
        retries: r.retries.unwrap_or(1),
        max_read: max_read(l, &format!("{key}.max_read"), r.max_read).unwrap_or(125),
        max_gap: r.max_gap.unwrap_or(0),
    };
    let mut devices: Vec<DevicePlan> = Vec::new();
    let mut tags: HashMap<String, String> = HashMap::new();
    for (i, d) in r.devices.into_iter().enumerate() {
        let dk = format!("{key}.devices[{i}]");
        let Some(d) = l.de::<RawModbusDevice>(&dk, d, DEVICE_KEYS) else {
            continue;
        };
        if devices.iter().any(|x| x.name == d.name) {
            l.at_value(
                &format!("{dk}.name"),
                format!("duplicate device `{}`", d.name),
                None,
            );
        }
        let Some(dev) = device(l, &dk, d, &defaults, &maps, &names) else {
            continue;
        };
        for (pk, p) in &dev.1 {
            if let Some(other) = tags.insert(p.tag.clone(), dev.0.name.clone()) {
                l.at_value(
                    &format!("{pk}.tag"),
                    format!(
                        "tag `{}` is mapped twice (devices `{other}` and `{}`)",
                        p.tag, dev.0.name
                    ),
                    Some("use {device} in a shared map's tag names".into()),
                );
            }
        }
        devices.push(dev.0);
    }
    if devices.is_empty() {
        l.at(
            key,
            "a modbus source needs `[[sources.devices]]`".into(),
            None,
        );
    }
    Some(ModbusSourcePlan {
        id: r.id,
        devices,
        groups,
        batch_rows: r.batch_rows.unwrap_or(8192).max(1),
        channel: 1024,
    })
}

/// A map's registers (with their keys) and its time register.
type MapPlan = (Vec<(String, Point)>, Option<(String, Point)>);

struct Defaults {
    timeout_ms: i64,
    reconnect_max_ms: i64,
    retries: u32,
    max_read: u16,
    max_gap: u16,
}

fn ms(l: &mut Loader<'_>, k: &str, v: &Option<String>) -> Option<i64> {
    v.as_ref().and_then(|s| l.positive_duration(k, s))
}

fn max_read(l: &mut Loader<'_>, k: &str, v: Option<u16>) -> Option<u16> {
    let v = v?;
    if !(1..=125).contains(&v) {
        l.at_value(
            k,
            format!("max_read must be 1–125 registers (got {v})"),
            Some("125 is the protocol's limit; some devices take fewer".into()),
        );
        return None;
    }
    Some(v)
}

/// The `default` group (the source's `interval`) and `[[sources.groups]]`.
fn groups(l: &mut Loader<'_>, key: &str, r: &RawModbus) -> Vec<GroupPlan> {
    let interval = ms(l, &format!("{key}.interval"), &r.interval).unwrap_or(1_000);
    let mut out = vec![GroupPlan {
        name: "default".into(),
        interval_ms: interval as u64,
    }];
    for (i, g) in r.groups.iter().enumerate() {
        let gk = format!("{key}.groups[{i}]");
        let Some(g) = l.de::<RawModbusGroup>(&gk, g.clone(), GROUP_KEYS) else {
            continue;
        };
        let ms = l.positive_duration(&format!("{gk}.interval"), &g.interval);
        if g.name == "default" {
            out[0].interval_ms = ms.unwrap_or(interval) as u64;
        } else if out.iter().any(|x| x.name == g.name) {
            l.at_value(
                &format!("{gk}.name"),
                format!("duplicate group `{}`", g.name),
                None,
            );
        } else {
            out.push(GroupPlan {
                name: g.name,
                interval_ms: ms.unwrap_or(interval) as u64,
            });
        }
    }
    out
}

/// One device: its connection settings and points (its map's, then its own).
#[allow(clippy::type_complexity)]
fn device(
    l: &mut Loader<'_>,
    dk: &str,
    d: RawModbusDevice,
    def: &Defaults,
    maps: &HashMap<String, MapPlan>,
    groups: &[&str],
) -> Option<(DevicePlan, Vec<(String, Point)>)> {
    let host = if d
        .host
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        && !d.host.ends_with(']')
    {
        d.host.clone()
    } else if d.host.contains(':') && !d.host.starts_with('[') {
        l.at_value(
            &format!("{dk}.host"),
            format!("`{}` is not host:port", d.host),
            Some("e.g. 10.0.4.21:502, meter1.plant.local (port 502), [fd00::5]:502".into()),
        );
        d.host.clone()
    } else {
        format!("{}:502", d.host)
    };
    if d.name.is_empty() || d.name.contains(['/', ' ']) {
        l.at_value(
            &format!("{dk}.name"),
            format!(
                "device name `{}` must be non-empty, without spaces or /",
                d.name
            ),
            None,
        );
    }
    let unit = d.unit.unwrap_or(1);
    if !(0..=255).contains(&unit) {
        l.at_value(
            &format!("{dk}.unit"),
            format!("unit id {unit} is outside 0–255"),
            Some("1–247 on a serial line behind a gateway; 255 or 1 for most TCP devices".into()),
        );
    }
    let mut points: Vec<(String, Point)> = Vec::new();
    let mut time = d
        .time
        .and_then(|t| time_register(l, &format!("{dk}.time"), t));
    if let Some(m) = &d.map {
        match maps.get(m) {
            Some((regs, t)) => {
                points.extend(regs.iter().cloned());
                time = time.or_else(|| t.clone());
            }
            None => {
                let names: Vec<&str> = maps.keys().map(String::as_str).collect();
                l.one_of(&format!("{dk}.map"), m, &names, "register map");
            }
        }
    }
    points.extend(registers(
        l,
        &format!("{dk}.registers"),
        d.registers,
        groups,
    ));
    if points.is_empty() {
        l.at(
            dk,
            format!("device `{}` has no registers", d.name),
            Some("give it a `map` or `[[sources.devices.registers]]`".into()),
        );
    }
    for (_, p) in &mut points {
        p.tag = p.tag.replace("{device}", &d.name);
    }
    let mut all = points.clone();
    all.extend(time.clone());
    overlaps(l, &d.name, &all);
    let plan = DevicePlan {
        time: time.map(|(_, p)| p),
        host,
        unit: unit.clamp(0, 255) as u8,
        timeout_ms: ms(l, &format!("{dk}.timeout"), &d.timeout).unwrap_or(def.timeout_ms) as u64,
        retries: d.retries.unwrap_or(def.retries),
        reconnect_max_ms: ms(l, &format!("{dk}.reconnect_max"), &d.reconnect_max)
            .unwrap_or(def.reconnect_max_ms)
            .max(250) as u64,
        max_read: max_read(l, &format!("{dk}.max_read"), d.max_read).unwrap_or(def.max_read),
        max_gap: d.max_gap.unwrap_or(def.max_gap),
        points: points.iter().map(|(_, p)| p.clone()).collect(),
        name: d.name,
    };
    Some((plan, points))
}

/// A device's time register: a point with no tag whose decoded value is
/// milliseconds (its `scale` turns seconds into them).
fn time_register(l: &mut Loader<'_>, key: &str, v: toml::Value) -> Option<(String, Point)> {
    let t: RawModbusTime = l.de(key, v, TIME_KEYS)?;
    let k = |s: &str| format!("{key}.{s}");
    let table = match t.table.as_deref() {
        None | Some("holding") => Table::Holding,
        Some("input") => Table::Input,
        Some(x) => {
            l.one_of(
                &k("table"),
                x,
                &["holding", "input"],
                "table of a time register",
            );
            return None;
        }
    };
    let kind = match t.kind.as_deref() {
        None | Some("u32") => DataType::U32,
        Some("u64") => DataType::U64,
        Some("i64") => DataType::I64,
        Some(x) => {
            l.one_of(
                &k("type"),
                x,
                &["u32", "u64", "i64"],
                "type of a time register",
            );
            return None;
        }
    };
    let order = match t.order.as_deref() {
        None => Order::BIG,
        Some(o) => Order::parse(o).unwrap_or_else(|| {
            l.one_of(&k("order"), o, Order::NAMES, "byte order");
            Order::BIG
        }),
    };
    let scale = match t.unit.as_deref() {
        None | Some("s") => 1000.0,
        Some("ms") => 1.0,
        Some(x) => {
            l.one_of(&k("unit"), x, &["s", "ms"], "time unit");
            return None;
        }
    };
    if !(0..=65535 - i64::from(kind.words()) + 1).contains(&t.address) {
        l.at_value(
            &k("address"),
            format!("address {} is outside 0–65535 for its type", t.address),
            None,
        );
        return None;
    }
    Some((
        key.to_string(),
        Point {
            tag: "(device time)".into(),
            table,
            address: t.address as u16,
            decode: Decode {
                kind,
                order,
                scale,
                offset: 0.0,
                bit: None,
                rollover: None,
            },
            group: 0,
        },
    ))
}

/// Two registers of a device that share a word are an error, unless they
/// span exactly the same words (bit fields of one register; a counter and
/// its reading).
fn overlaps(l: &mut Loader<'_>, device: &str, points: &[(String, Point)]) {
    let mut order: Vec<usize> = (0..points.len()).collect();
    order.sort_by_key(|&i| (points[i].1.table, points[i].1.address));
    for w in order.windows(2) {
        let (a, b) = (&points[w[0]].1, &points[w[1]].1);
        let a_end = u32::from(a.address) + u32::from(a.words());
        let same = a.address == b.address && a.words() == b.words();
        if a.table == b.table && u32::from(b.address) < a_end && !same {
            l.at_value(
                &format!("{}.address", points[w[1]].0),
                format!(
                    "{} register {} (`{}`) overlaps {} {}–{} (`{}`) on device `{device}`",
                    b.table.name(),
                    b.address,
                    b.tag,
                    a.table.name(),
                    a.address,
                    a_end - 1,
                    a.tag
                ),
                Some("a 32-bit value takes 2 registers, a 64-bit value 4".into()),
            );
        }
    }
}

/// `registers` entries: each checked and turned into a point (tag still
/// a template), with its key for later errors.
fn registers(
    l: &mut Loader<'_>,
    key: &str,
    raw: Vec<toml::Value>,
    groups: &[&str],
) -> Vec<(String, Point)> {
    let mut out = Vec::new();
    for (i, v) in raw.into_iter().enumerate() {
        let rk = format!("{key}[{i}]");
        let Some(r) = l.de::<RawModbusRegister>(&rk, v, REGISTER_KEYS) else {
            continue;
        };
        if let Some(p) = register(l, &rk, r, groups) {
            out.push((rk, p));
        }
    }
    out
}

fn register(l: &mut Loader<'_>, rk: &str, r: RawModbusRegister, groups: &[&str]) -> Option<Point> {
    let k = |s: &str| format!("{rk}.{s}");
    let table = match r.table.as_deref() {
        None => Table::Holding,
        Some(t) => match Table::parse(t) {
            Some(t) => t,
            None => {
                l.one_of(&k("table"), t, Table::NAMES, "Modbus table");
                return None;
            }
        },
    };
    let kind = match r.kind.as_deref() {
        None if table.is_bits() => DataType::Bool,
        None => DataType::U16,
        Some(t) => match DataType::parse(t) {
            Some(t) => t,
            None => {
                l.one_of(&k("type"), t, DataType::NAMES, "register type");
                return None;
            }
        },
    };
    if table.is_bits() && kind != DataType::Bool {
        l.at_value(
            &k("type"),
            format!("a {} is one bit: its type is bool", table.name()),
            None,
        );
    }
    let order = match r.order.as_deref() {
        None => Order::BIG,
        Some(o) => Order::parse(o).unwrap_or_else(|| {
            l.one_of(&k("order"), o, Order::NAMES, "byte order");
            Order::BIG
        }),
    };
    let words = if table.is_bits() { 1 } else { kind.words() };
    if !(0..=65535).contains(&r.address) || r.address + i64::from(words) - 1 > 65535 {
        l.at_value(
            &k("address"),
            format!(
                "address {} is outside 0–65535{}",
                r.address,
                if words > 1 && (0..=65535).contains(&r.address) {
                    format!(
                        " (a {} takes {words} registers)",
                        r.kind.as_deref().unwrap_or("u16")
                    )
                } else {
                    String::new()
                }
            ),
            Some("addresses are 0-based protocol addresses: holding register 40001 is 0".into()),
        );
        return None;
    }
    let bit = match r.bit {
        None => None,
        Some(b) if (0..=15).contains(&b) && matches!(kind, DataType::U16 | DataType::I16) => {
            Some(b as u8)
        }
        Some(b) => {
            l.at_value(
                &k("bit"),
                format!("bit {b}: a bit field is bit 0–15 of a u16 or i16 register"),
                None,
            );
            None
        }
    };
    let scale = r.scale.unwrap_or(1.0);
    let offset = r.offset.unwrap_or(0.0);
    for (name, x) in [("scale", scale), ("offset", offset)] {
        if !x.is_finite() {
            l.at_value(&k(name), format!("{name} must be a finite number"), None);
        }
    }
    let rollover = match (r.counter.unwrap_or(false), r.rollover) {
        (false, None) => None,
        (false, Some(_)) => {
            l.at(
                &k("rollover"),
                "`rollover` goes with `counter = true`".into(),
                None,
            );
            None
        }
        (true, given) => match (kind.wraps_at(), bit) {
            (Some(range), None) => match given {
                Some(x) if !(x > 0.0 && x <= range) => {
                    l.at_value(
                        &k("rollover"),
                        format!("rollover {x} must be > 0 and at most {range} for a {kind:?}"),
                        None,
                    );
                    None
                }
                Some(x) => Some(x),
                None => Some(range),
            },
            _ => {
                l.at(
                    &k("counter"),
                    "a counter is an unsigned integer register (u16, u32 or u64)".into(),
                    None,
                );
                None
            }
        },
    };
    let group = match &r.group {
        None => 0,
        Some(g) => match groups.iter().position(|x| x == g) {
            Some(i) => i,
            None => {
                l.one_of(&k("group"), g, groups, "poll group");
                0
            }
        },
    };
    if r.tag.trim().is_empty() {
        l.at_value(&k("tag"), "a register needs a tag name".into(), None);
    }
    Some(Point {
        tag: r.tag,
        table,
        address: r.address as u16,
        decode: Decode {
            kind,
            order,
            scale,
            offset,
            bit,
            rollover,
        },
        group,
    })
}
