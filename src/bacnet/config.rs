//! Validation of `type = "bacnet"` sources: the node's BACnet/IP port,
//! devices by instance (found by Who-Is, or at a known address), shared
//! point maps. Unknown object types, units and duplicate tags are errors at
//! their line.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};

use serde::Deserialize;

use crate::bacnet::{BacnetSourcePlan, DevicePlan, Object, Point};
use crate::config::Loader;

#[derive(Deserialize, Debug, schemars::JsonSchema)]
pub struct RawBacnet {
    id: String,
    /// The node's own BACnet/IP address and UDP port (default
    /// `0.0.0.0:47808`; another port when a device on this host has it).
    #[serde(default)]
    bind: Option<String>,
    /// Where a Who-Is for devices without `address` goes (default
    /// `255.255.255.255`; the subnet's broadcast address on most sites).
    #[serde(default)]
    broadcast: Option<String>,
    /// Poll interval of objects read by polling, and of the liveness read
    /// of devices whose objects all report by COV (default 10s).
    #[serde(default)]
    interval: Option<String>,
    /// APDU timeout of a request (default 3s).
    #[serde(default)]
    timeout: Option<String>,
    /// Longest wait between tries of a device that does not answer
    /// (default 30s).
    #[serde(default)]
    reconnect_max: Option<String>,
    /// Subscribe to COV where the device takes it (default true; objects it
    /// refuses are polled).
    #[serde(default)]
    cov: Option<bool>,
    /// Lifetime of a COV subscription; renewed at half of it (default 10m).
    #[serde(default)]
    cov_lifetime: Option<String>,
    /// Ask for confirmed COV notifications (default false).
    #[serde(default)]
    cov_confirmed: Option<bool>,
    /// Most objects in one ReadPropertyMultiple (default 16).
    #[serde(default)]
    max_objects: Option<u16>,
    #[serde(default)]
    batch_rows: Option<usize>,
    #[serde(default)]
    #[schemars(with = "Vec<RawBacnetMap>")]
    maps: Vec<toml::Value>,
    #[serde(default)]
    #[schemars(with = "Vec<RawBacnetDevice>")]
    devices: Vec<toml::Value>,
}

const KEYS: &[&str] = &[
    "type",
    "id",
    "bind",
    "broadcast",
    "interval",
    "timeout",
    "reconnect_max",
    "cov",
    "cov_lifetime",
    "cov_confirmed",
    "max_objects",
    "batch_rows",
    "maps",
    "devices",
];

/// A point list shared by devices of one model.
#[derive(Deserialize, Debug, schemars::JsonSchema)]
pub struct RawBacnetMap {
    name: String,
    #[serde(default)]
    #[schemars(with = "Vec<RawBacnetPoint>")]
    points: Vec<toml::Value>,
}

const MAP_KEYS: &[&str] = &["name", "points"];

#[derive(Deserialize, Debug, schemars::JsonSchema)]
pub struct RawBacnetDevice {
    name: String,
    /// Device instance (0–4194302); a string of digits too (for `${VAR}`).
    instance: Instance,
    /// `ip:port` (port 47808 if left out); without it (or empty), Who-Is
    /// finds it.
    #[serde(default)]
    address: Option<String>,
    /// A `[[sources.maps]]` name.
    #[serde(default)]
    map: Option<String>,
    #[serde(default)]
    #[schemars(with = "Vec<RawBacnetPoint>")]
    points: Vec<toml::Value>,
}

const DEVICE_KEYS: &[&str] = &["name", "instance", "address", "map", "points"];

/// A device instance: a number, or a string of digits.
#[derive(Deserialize, Debug, schemars::JsonSchema)]
#[serde(untagged)]
pub enum Instance {
    Number(i64),
    Text(String),
}

#[derive(Deserialize, Debug, schemars::JsonSchema)]
pub struct RawBacnetPoint {
    /// Tag name; `{device}` is the device's name.
    tag: String,
    /// `analog-input:1`: an analog, binary or multi-state input, output or
    /// value object and its instance.
    object: String,
    /// The engineering unit the device should report (`degrees-celsius`,
    /// `kilowatts`, ...; BACnet's names): another unit is a dead letter,
    /// and the point's samples are uncertain.
    #[serde(default)]
    unit: Option<String>,
    /// False: poll this object even if the device takes COV for it.
    #[serde(default)]
    cov: Option<bool>,
    #[serde(default)]
    scale: Option<f64>,
    #[serde(default)]
    offset: Option<f64>,
}

const POINT_KEYS: &[&str] = &["tag", "object", "unit", "cov", "scale", "offset"];

/// Validates a `bacnet` source table.
pub fn source(l: &mut Loader<'_>, key: &str, v: toml::Value) -> Option<BacnetSourcePlan> {
    let r: RawBacnet = l.de(key, v, KEYS)?;
    let bind = match r.bind.as_deref() {
        None => SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 47808),
        Some(s) => address(l, &format!("{key}.bind"), s)
            .unwrap_or(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 47808)),
    };
    let broadcast = match r.broadcast.as_deref() {
        None => Ipv4Addr::BROADCAST,
        Some(s) => s.parse().unwrap_or_else(|_| {
            l.at_value(
                &format!("{key}.broadcast"),
                format!("`{s}` is not an IPv4 address"),
                Some("the subnet's broadcast address, e.g. 10.0.4.255".into()),
            );
            Ipv4Addr::BROADCAST
        }),
    };
    let ms = |l: &mut Loader<'_>, k: &str, v: &Option<String>, d: i64| {
        v.as_ref()
            .and_then(|s| l.positive_duration(&format!("{key}.{k}"), s))
            .unwrap_or(d) as u64
    };
    let interval_ms = ms(l, "interval", &r.interval, 10_000);
    let timeout_ms = ms(l, "timeout", &r.timeout, 3_000);
    let reconnect_max_ms = ms(l, "reconnect_max", &r.reconnect_max, 30_000).max(250);
    let cov_lifetime_s = (ms(l, "cov_lifetime", &r.cov_lifetime, 600_000) / 1000).max(1);
    let max_objects = r.max_objects.unwrap_or(16);
    if max_objects == 0 {
        l.at_value(
            &format!("{key}.max_objects"),
            "max_objects must be at least 1".into(),
            None,
        );
    }
    let mut maps: HashMap<String, Vec<(String, Point)>> = HashMap::new();
    for (i, m) in r.maps.into_iter().enumerate() {
        let mk = format!("{key}.maps[{i}]");
        let Some(m) = l.de::<RawBacnetMap>(&mk, m, MAP_KEYS) else {
            continue;
        };
        if maps.contains_key(&m.name) {
            l.at_value(
                &format!("{mk}.name"),
                format!("duplicate map `{}`", m.name),
                None,
            );
        }
        let pts = points(l, &format!("{mk}.points"), m.points);
        maps.insert(m.name, pts);
    }
    let mut devices: Vec<DevicePlan> = Vec::new();
    let mut tags: HashMap<String, String> = HashMap::new();
    for (i, d) in r.devices.into_iter().enumerate() {
        let dk = format!("{key}.devices[{i}]");
        let Some(d) = l.de::<RawBacnetDevice>(&dk, d, DEVICE_KEYS) else {
            continue;
        };
        let Some((dev, pts)) = device(l, &dk, d, &maps) else {
            continue;
        };
        if devices
            .iter()
            .any(|x| x.name == dev.name || x.instance == dev.instance)
        {
            l.at_value(
                &format!("{dk}.name"),
                format!(
                    "duplicate device `{}` (instance {})",
                    dev.name, dev.instance
                ),
                None,
            );
        }
        for (pk, p) in &pts {
            if let Some(other) = tags.insert(p.tag.clone(), dev.name.clone()) {
                l.at_value(
                    &format!("{pk}.tag"),
                    format!(
                        "tag `{}` is mapped twice (devices `{other}` and `{}`)",
                        p.tag, dev.name
                    ),
                    Some("use {device} in a shared map's tag names".into()),
                );
            }
        }
        devices.push(dev);
    }
    if devices.is_empty() {
        l.at(
            key,
            "a bacnet source needs `[[sources.devices]]`".into(),
            None,
        );
    }
    Some(BacnetSourcePlan {
        id: r.id,
        bind,
        broadcast,
        interval_ms,
        timeout_ms,
        reconnect_max_ms,
        cov: r.cov.unwrap_or(true),
        cov_lifetime_s: cov_lifetime_s.min(u64::from(u32::MAX)) as u32,
        cov_confirmed: r.cov_confirmed.unwrap_or(false),
        max_objects: max_objects.max(1) as usize,
        devices,
        batch_rows: r.batch_rows.unwrap_or(8192).max(1),
        channel: 1024,
    })
}

/// `ip` or `ip:port` (47808 if left out).
fn address(l: &mut Loader<'_>, k: &str, s: &str) -> Option<SocketAddrV4> {
    let parsed = s.parse::<SocketAddrV4>().ok().or_else(|| {
        s.parse::<Ipv4Addr>()
            .ok()
            .map(|ip| SocketAddrV4::new(ip, 47808))
    });
    if parsed.is_none() {
        l.at_value(
            k,
            format!("`{s}` is not an IPv4 address with an optional port"),
            Some("e.g. 10.0.4.30 (port 47808) or 10.0.4.30:47809".into()),
        );
    }
    parsed
}

/// One device: its address and points (its map's, then its own).
fn device(
    l: &mut Loader<'_>,
    dk: &str,
    d: RawBacnetDevice,
    maps: &HashMap<String, Vec<(String, Point)>>,
) -> Option<(DevicePlan, Vec<(String, Point)>)> {
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
    let instance = match &d.instance {
        Instance::Number(n) => Some(*n),
        Instance::Text(s) => s.trim().parse::<i64>().ok(),
    };
    let Some(instance) = instance.filter(|n| (0..=4_194_302).contains(n)) else {
        l.at_value(
            &format!("{dk}.instance"),
            format!(
                "device instance {:?} is not a number in 0–4194302",
                d.instance
            ),
            None,
        );
        return None;
    };
    let addr = match d.address.as_deref().map(str::trim) {
        Some(s) if !s.is_empty() => Some(address(l, &format!("{dk}.address"), s)?),
        _ => None,
    };
    let mut pts: Vec<(String, Point)> = Vec::new();
    if let Some(m) = &d.map {
        match maps.get(m) {
            Some(p) => pts.extend(p.iter().cloned()),
            None => {
                let names: Vec<&str> = maps.keys().map(String::as_str).collect();
                l.one_of(&format!("{dk}.map"), m, &names, "point map");
            }
        }
    }
    pts.extend(points(l, &format!("{dk}.points"), d.points));
    if pts.is_empty() {
        l.at(
            dk,
            format!("device `{}` has no points", d.name),
            Some("give it a `map` or `[[sources.devices.points]]`".into()),
        );
    }
    for (_, p) in &mut pts {
        p.tag = p.tag.replace("{device}", &d.name);
    }
    for (i, (pk, p)) in pts.iter().enumerate() {
        if let Some((_, q)) = pts[..i].iter().find(|(_, q)| q.object == p.object) {
            l.at_value(
                &format!("{pk}.object"),
                format!(
                    "object {} is mapped twice on device `{}` (`{}` and `{}`)",
                    p.object, d.name, q.tag, p.tag
                ),
                Some("scale a second tag from the first with a metric instead".into()),
            );
        }
    }
    let plan = DevicePlan {
        name: d.name,
        instance: instance as u32,
        address: addr,
        points: pts.iter().map(|(_, p)| p.clone()).collect(),
    };
    Some((plan, pts))
}

fn points(l: &mut Loader<'_>, key: &str, raw: Vec<toml::Value>) -> Vec<(String, Point)> {
    let mut out = Vec::new();
    for (i, v) in raw.into_iter().enumerate() {
        let pk = format!("{key}[{i}]");
        let Some(r) = l.de::<RawBacnetPoint>(&pk, v, POINT_KEYS) else {
            continue;
        };
        if let Some(p) = point(l, &pk, r) {
            out.push((pk, p));
        }
    }
    out
}

fn point(l: &mut Loader<'_>, pk: &str, r: RawBacnetPoint) -> Option<Point> {
    let k = |s: &str| format!("{pk}.{s}");
    let object = match Object::parse(&r.object) {
        Ok(o) => o,
        Err(e) => {
            l.at_value(
                &k("object"),
                e,
                Some(
                    "`<type>:<instance>`, e.g. analog-input:1, binary-value:3, multi-state-value:4"
                        .into(),
                ),
            );
            return None;
        }
    };
    let unit = match &r.unit {
        None => None,
        Some(u) => match super::parse_unit(u) {
            Some(x) => Some(x),
            None => {
                l.at_value(
                    &k("unit"),
                    format!("`{u}` is not a BACnet engineering unit"),
                    Some("BACnet's names: degrees-celsius, kilowatts, percent, pascals, …".into()),
                );
                None
            }
        },
    };
    if unit.is_some() && !object.is_analog() {
        l.at_value(
            &k("unit"),
            format!("{} has no units (only analog objects do)", r.object),
            None,
        );
    }
    let scale = r.scale.unwrap_or(1.0);
    let offset = r.offset.unwrap_or(0.0);
    for (name, x) in [("scale", scale), ("offset", offset)] {
        if !x.is_finite() {
            l.at_value(&k(name), format!("{name} must be a finite number"), None);
        }
    }
    Some(Point {
        tag: r.tag,
        object,
        unit,
        cov: r.cov.unwrap_or(true),
        scale,
        offset,
    })
}
