//! Sparkplug B host: protobuf payloads → samples, with the edge-node state
//! machine the specification asks of a host application.
//!
//! - `NBIRTH`/`DBIRTH` define metric names, aliases and types (and carry
//!   current values, which count as samples).
//! - `NDATA`/`DDATA` metrics are resolved through the aliases of the birth.
//! - A `seq` gap, an alias never born, or data from a node we have not seen
//!   born trigger a rebirth request (`NCMD` with `Node Control/Rebirth = true`),
//!   at most once per [`REBIRTH_HOLDOFF_MS`] per node.
//! - `NDEATH` (unless its `bdSeq` is the previous session's) and `DDEATH` mark every
//!   tag of the node or device stale: a bad-quality sample at that instant.
//! - `is_historical` metrics are late data: they land in their own windows
//!   (and correct them) without changing what the host considers current.
//!
//! The protobuf types below follow the field numbers of Eclipse Tahu's
//! `sparkplug_b.proto` (proto2); only what a host reads is declared, and the
//! dataset/template/extension values are kept as opaque bytes.

use std::collections::HashMap;

use prost::Message;

use super::topic::TagTemplate;
use crate::model::Quality;

/// A host asks one node for rebirth at most this often.
pub const REBIRTH_HOLDOFF_MS: i64 = 5_000;

/// Sparkplug B `Payload`.
#[derive(Clone, PartialEq, Message)]
pub struct Payload {
    #[prost(uint64, optional, tag = "1")]
    pub timestamp: Option<u64>,
    #[prost(message, repeated, tag = "2")]
    pub metrics: Vec<Metric>,
    #[prost(uint64, optional, tag = "3")]
    pub seq: Option<u64>,
    #[prost(string, optional, tag = "4")]
    pub uuid: Option<String>,
    #[prost(bytes = "vec", optional, tag = "5")]
    pub body: Option<Vec<u8>>,
}

/// Sparkplug B `Payload.Metric`.
#[derive(Clone, PartialEq, Message)]
pub struct Metric {
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    #[prost(uint64, optional, tag = "2")]
    pub alias: Option<u64>,
    #[prost(uint64, optional, tag = "3")]
    pub timestamp: Option<u64>,
    #[prost(uint32, optional, tag = "4")]
    pub datatype: Option<u32>,
    #[prost(bool, optional, tag = "5")]
    pub is_historical: Option<bool>,
    #[prost(bool, optional, tag = "6")]
    pub is_transient: Option<bool>,
    #[prost(bool, optional, tag = "7")]
    pub is_null: Option<bool>,
    /// `MetaData`, not interpreted.
    #[prost(bytes = "vec", optional, tag = "8")]
    pub metadata: Option<Vec<u8>>,
    #[prost(message, optional, tag = "9")]
    pub properties: Option<PropertySet>,
    #[prost(oneof = "Value", tags = "10, 11, 12, 13, 14, 15, 16, 17, 18, 19")]
    pub value: Option<Value>,
}

/// The metric value `oneof`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Value {
    #[prost(uint32, tag = "10")]
    IntValue(u32),
    #[prost(uint64, tag = "11")]
    LongValue(u64),
    #[prost(float, tag = "12")]
    FloatValue(f32),
    #[prost(double, tag = "13")]
    DoubleValue(f64),
    #[prost(bool, tag = "14")]
    BooleanValue(bool),
    #[prost(string, tag = "15")]
    StringValue(String),
    #[prost(bytes, tag = "16")]
    BytesValue(Vec<u8>),
    /// `DataSet`, not interpreted.
    #[prost(bytes, tag = "17")]
    DatasetValue(Vec<u8>),
    /// `Template`, not interpreted.
    #[prost(bytes, tag = "18")]
    TemplateValue(Vec<u8>),
    #[prost(bytes, tag = "19")]
    ExtensionValue(Vec<u8>),
}

/// Sparkplug B `Payload.PropertySet`.
#[derive(Clone, PartialEq, Message)]
pub struct PropertySet {
    #[prost(string, repeated, tag = "1")]
    pub keys: Vec<String>,
    #[prost(message, repeated, tag = "2")]
    pub values: Vec<PropertyValue>,
}

/// Sparkplug B `Payload.PropertyValue` (nested sets kept opaque).
#[derive(Clone, PartialEq, Message)]
pub struct PropertyValue {
    #[prost(uint32, optional, tag = "1")]
    pub r#type: Option<u32>,
    #[prost(bool, optional, tag = "2")]
    pub is_null: Option<bool>,
    #[prost(oneof = "PropValue", tags = "3, 4, 5, 6, 7, 8, 9, 10, 11")]
    pub value: Option<PropValue>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum PropValue {
    #[prost(uint32, tag = "3")]
    IntValue(u32),
    #[prost(uint64, tag = "4")]
    LongValue(u64),
    #[prost(float, tag = "5")]
    FloatValue(f32),
    #[prost(double, tag = "6")]
    DoubleValue(f64),
    #[prost(bool, tag = "7")]
    BooleanValue(bool),
    #[prost(string, tag = "8")]
    StringValue(String),
    #[prost(bytes, tag = "9")]
    PropertySet(Vec<u8>),
    #[prost(bytes, tag = "10")]
    PropertySets(Vec<u8>),
    #[prost(bytes, tag = "11")]
    Extension(Vec<u8>),
}

/// Sparkplug data types (the ones with a numeric reading).
pub mod datatype {
    pub const INT8: u32 = 1;
    pub const INT16: u32 = 2;
    pub const INT32: u32 = 3;
    pub const INT64: u32 = 4;
    pub const UINT8: u32 = 5;
    pub const UINT16: u32 = 6;
    pub const UINT32: u32 = 7;
    pub const UINT64: u32 = 8;
    pub const FLOAT: u32 = 9;
    pub const DOUBLE: u32 = 10;
    pub const BOOLEAN: u32 = 11;
    pub const STRING: u32 = 12;
    pub const DATETIME: u32 = 13;
}

/// The message kinds of the `spBv1.0` namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    NBirth,
    NDeath,
    DBirth,
    DDeath,
    NData,
    DData,
    NCmd,
    DCmd,
    State,
}

/// A parsed Sparkplug topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpTopic<'a> {
    pub group: &'a str,
    pub kind: Kind,
    pub node: &'a str,
    pub device: Option<&'a str>,
}

/// Parses `spBv1.0/{group}/{type}/{node}[/{device}]`.
pub fn parse_topic(topic: &str) -> Result<SpTopic<'_>, String> {
    let p: Vec<&str> = topic.split('/').collect();
    if p.first() != Some(&"spBv1.0") {
        return Err("not a Sparkplug B topic (`spBv1.0/...`)".into());
    }
    if p.get(1) == Some(&"STATE") {
        return Ok(SpTopic {
            group: "",
            kind: Kind::State,
            node: p.get(2).copied().unwrap_or(""),
            device: None,
        });
    }
    let kind = match p.get(2).copied() {
        Some("NBIRTH") => Kind::NBirth,
        Some("NDEATH") => Kind::NDeath,
        Some("DBIRTH") => Kind::DBirth,
        Some("DDEATH") => Kind::DDeath,
        Some("NDATA") => Kind::NData,
        Some("DDATA") => Kind::DData,
        Some("NCMD") => Kind::NCmd,
        Some("DCMD") => Kind::DCmd,
        other => {
            return Err(format!(
                "unknown Sparkplug message type `{}`",
                other.unwrap_or("")
            ))
        }
    };
    let device_kind = matches!(kind, Kind::DBirth | Kind::DDeath | Kind::DData | Kind::DCmd);
    let ok_len = if device_kind {
        p.len() == 5
    } else {
        p.len() == 4
    };
    if !ok_len || p.iter().any(|s| s.is_empty()) {
        return Err("malformed Sparkplug topic".into());
    }
    Ok(SpTopic {
        group: p[1],
        kind,
        node: p[3],
        device: if device_kind { Some(p[4]) } else { None },
    })
}

/// A sample produced by the host.
#[derive(Clone, Debug, PartialEq)]
pub struct SpRow {
    pub tag: String,
    pub ts: i64,
    pub value: f64,
    pub quality: Quality,
}

/// What one message produced.
#[derive(Debug, Default)]
pub struct HostOutput {
    pub rows: Vec<SpRow>,
    /// Reasons for dead letters (the caller attaches topic and payload).
    pub dead: Vec<String>,
    /// Ask this node (`group`, `node`) to rebirth.
    pub rebirth: Option<(String, String)>,
    /// Messages that were recognised but carry no samples (commands, STATE, stale deaths).
    pub ignored: bool,
}

#[derive(Clone, Debug)]
struct MetricDef {
    device: Option<String>,
    name: String,
    datatype: u32,
    last: f64,
}

#[derive(Debug, Default)]
struct NodeState {
    born: bool,
    bd_seq: Option<u64>,
    seq: Option<u8>,
    /// alias → metric; and metric names without aliases, keyed by (device, name).
    by_alias: HashMap<u64, usize>,
    by_name: HashMap<(Option<String>, String), usize>,
    metrics: Vec<MetricDef>,
    devices_dead: Vec<String>,
    last_rebirth_ms: Option<i64>,
}

/// Tag naming for Sparkplug metrics.
#[derive(Clone, Debug, PartialEq)]
pub struct SpNaming {
    /// For device metrics: captures `group`, `node`, `device`, `metric`.
    pub device_tag: TagTemplate,
    /// For node metrics: `group`, `node`, `metric`.
    pub node_tag: TagTemplate,
}

impl Default for SpNaming {
    fn default() -> Self {
        let names = ["group", "node", "device", "metric"];
        SpNaming {
            device_tag: TagTemplate::parse("{group}/{node}/{device}/{metric}", &names)
                .expect("valid default"),
            node_tag: TagTemplate::parse("{group}/{node}/{metric}", &names).expect("valid default"),
        }
    }
}

/// The host's view of every edge node it has heard from.
#[derive(Debug, Default)]
pub struct Host {
    nodes: HashMap<(String, String), NodeState>,
    naming: SpNaming,
}

fn signed(v: u64, bits: u32) -> f64 {
    let shift = 64 - bits;
    (((v << shift) as i64) >> shift) as f64
}

/// A metric's numeric reading, by its datatype (signed ints are two's complement).
fn numeric(v: &Value, datatype: u32) -> Option<f64> {
    use datatype::*;
    Some(match v {
        Value::IntValue(x) => match datatype {
            INT8 => signed(*x as u64, 8),
            INT16 => signed(*x as u64, 16),
            INT32 => signed(*x as u64, 32),
            _ => *x as f64,
        },
        Value::LongValue(x) => match datatype {
            INT64 | DATETIME => *x as i64 as f64,
            _ => *x as f64,
        },
        Value::FloatValue(x) => *x as f64,
        Value::DoubleValue(x) => *x,
        Value::BooleanValue(b) => f64::from(u8::from(*b)),
        _ => return None,
    })
}

fn metric_quality(m: &Metric) -> Quality {
    let Some(p) = &m.properties else {
        return Quality::Good;
    };
    for (k, v) in p.keys.iter().zip(&p.values) {
        if k.eq_ignore_ascii_case("quality") {
            let code = match &v.value {
                Some(PropValue::IntValue(x)) => *x as i64,
                Some(PropValue::LongValue(x)) => *x as i64,
                _ => continue,
            };
            return match code {
                192 => Quality::Good,
                500 => Quality::Uncertain,
                _ => Quality::Bad,
            };
        }
    }
    Quality::Good
}

/// Control and bookkeeping metrics that are not process values.
fn is_control(name: &str) -> bool {
    name == "bdSeq" || name.starts_with("Node Control/") || name.starts_with("Device Control/")
}

impl Host {
    pub fn new(naming: SpNaming) -> Host {
        Host {
            nodes: HashMap::new(),
            naming,
        }
    }

    fn tag(&self, group: &str, node: &str, device: Option<&str>, metric: &str) -> String {
        match device {
            Some(d) => self.naming.device_tag.render(&[
                ("group", group),
                ("node", node),
                ("device", d),
                ("metric", metric),
            ]),
            None => {
                self.naming
                    .node_tag
                    .render(&[("group", group), ("node", node), ("metric", metric)])
            }
        }
    }

    /// Handles one message received at `recv_ms`.
    pub fn handle(&mut self, topic: &str, payload: &[u8], recv_ms: i64) -> HostOutput {
        let mut out = HostOutput::default();
        let t = match parse_topic(topic) {
            Ok(t) => t,
            Err(e) => {
                out.dead.push(e);
                return out;
            }
        };
        if matches!(t.kind, Kind::NCmd | Kind::DCmd | Kind::State) {
            out.ignored = true;
            return out;
        }
        let p = match Payload::decode(payload) {
            Ok(p) => p,
            Err(e) => {
                out.dead.push(format!("invalid Sparkplug protobuf: {e}"));
                return out;
            }
        };
        let key = (t.group.to_string(), t.node.to_string());
        let msg_ts = p.timestamp.map(|x| x as i64).unwrap_or(recv_ms);
        let device = t.device.map(str::to_string);
        match t.kind {
            Kind::NBirth => {
                let st = self.nodes.entry(key.clone()).or_default();
                let rebirth_at = st.last_rebirth_ms;
                *st = NodeState {
                    born: true,
                    last_rebirth_ms: rebirth_at,
                    seq: p.seq.map(|s| s as u8),
                    ..NodeState::default()
                };
                for m in &p.metrics {
                    if m.name.as_deref() == Some("bdSeq") {
                        st.bd_seq = m
                            .value
                            .as_ref()
                            .and_then(|v| numeric(v, datatype::UINT64))
                            .map(|x| x as u64);
                    }
                }
                self.birth(&key, None, &p, msg_ts, &mut out);
            }
            Kind::DBirth => {
                if !self.check_seq(&key, &p, recv_ms, &mut out) {
                    return out;
                }
                let st = self.nodes.get_mut(&key).expect("checked above");
                let d = device.clone().unwrap_or_default();
                st.devices_dead.retain(|x| *x != d);
                // A device rebirth replaces its previous definitions.
                let old: Vec<u64> = st
                    .by_alias
                    .iter()
                    .filter(|(_, i)| st.metrics[**i].device.as_deref() == Some(d.as_str()))
                    .map(|(a, _)| *a)
                    .collect();
                for a in old {
                    st.by_alias.remove(&a);
                }
                self.birth(&key, device.as_deref(), &p, msg_ts, &mut out);
            }
            Kind::NData | Kind::DData => {
                if !self.check_seq(&key, &p, recv_ms, &mut out) {
                    return out;
                }
                self.data(&key, device.as_deref(), &p, msg_ts, recv_ms, &mut out);
            }
            Kind::NDeath => {
                let bd = p
                    .metrics
                    .iter()
                    .find(|m| m.name.as_deref() == Some("bdSeq"))
                    .and_then(|m| m.value.as_ref())
                    .and_then(|v| numeric(v, datatype::UINT64))
                    .map(|x| x as u64);
                let Some(st) = self.nodes.get_mut(&key) else {
                    out.ignored = true;
                    return out;
                };
                // The death of the previous session (bdSeq one below the
                // birth's) arriving after the rebirth is stale. Other
                // mismatches are accepted: some edge nodes increment bdSeq
                // before sending their NDEATH.
                let stale = match (bd, st.bd_seq) {
                    (Some(d), Some(b)) => d % 256 == (b + 255) % 256 && d != b,
                    _ => false,
                };
                if !st.born || stale {
                    out.ignored = true;
                    return out;
                }
                if bd.is_some() && st.bd_seq.is_some() && bd != st.bd_seq {
                    tracing::debug!(group = %key.0, node = %key.1, ?bd, birth = ?st.bd_seq, "NDEATH bdSeq differs from the birth's; accepted");
                }
                st.born = false;
                let ts = if p.timestamp.is_some() {
                    msg_ts
                } else {
                    recv_ms
                };
                let rows: Vec<(Option<String>, String, f64)> = st
                    .metrics
                    .iter()
                    .filter(|m| !is_control(&m.name))
                    .map(|m| (m.device.clone(), m.name.clone(), m.last))
                    .collect();
                for (d, name, last) in rows {
                    let tag = self.tag(&key.0, &key.1, d.as_deref(), &name);
                    out.rows.push(SpRow {
                        tag,
                        ts,
                        value: last,
                        quality: Quality::Bad,
                    });
                }
            }
            Kind::DDeath => {
                if !self.check_seq(&key, &p, recv_ms, &mut out) {
                    return out;
                }
                let st = self.nodes.get_mut(&key).expect("checked above");
                let d = device.unwrap_or_default();
                st.devices_dead.push(d.clone());
                let rows: Vec<(String, f64)> = st
                    .metrics
                    .iter()
                    .filter(|m| m.device.as_deref() == Some(d.as_str()) && !is_control(&m.name))
                    .map(|m| (m.name.clone(), m.last))
                    .collect();
                for (name, last) in rows {
                    let tag = self.tag(&key.0, &key.1, Some(&d), &name);
                    out.rows.push(SpRow {
                        tag,
                        ts: msg_ts,
                        value: last,
                        quality: Quality::Bad,
                    });
                }
            }
            Kind::NCmd | Kind::DCmd | Kind::State => unreachable!("returned above"),
        }
        out
    }

    /// Checks `seq` against the node's counter. Returns false when the
    /// message cannot be used (node never born).
    fn check_seq(
        &mut self,
        key: &(String, String),
        p: &Payload,
        now: i64,
        out: &mut HostOutput,
    ) -> bool {
        let st = self.nodes.entry(key.clone()).or_default();
        if !st.born {
            out.dead
                .push("data from an edge node that has not been born (rebirth requested)".into());
            Self::want_rebirth(st, key, now, out);
            return false;
        }
        match (st.seq, p.seq) {
            (Some(prev), Some(s)) => {
                let s = s as u8;
                if s != prev.wrapping_add(1) {
                    tracing::warn!(group = %key.0, node = %key.1, expected = prev.wrapping_add(1), got = s, "Sparkplug seq gap; requesting rebirth");
                    Self::want_rebirth(st, key, now, out);
                }
                st.seq = Some(s);
            }
            (_, Some(s)) => st.seq = Some(s as u8),
            (_, None) => {}
        }
        true
    }

    fn want_rebirth(st: &mut NodeState, key: &(String, String), now: i64, out: &mut HostOutput) {
        if st
            .last_rebirth_ms
            .is_none_or(|t| now - t >= REBIRTH_HOLDOFF_MS)
        {
            st.last_rebirth_ms = Some(now);
            out.rebirth = Some(key.clone());
        }
    }

    fn birth(
        &mut self,
        key: &(String, String),
        device: Option<&str>,
        p: &Payload,
        msg_ts: i64,
        out: &mut HostOutput,
    ) {
        let mut rows = Vec::new();
        {
            let st = self.nodes.get_mut(key).expect("node exists");
            for m in &p.metrics {
                let Some(name) = m.name.clone() else {
                    out.dead.push("birth metric without a name".into());
                    continue;
                };
                let dt = m.datatype.unwrap_or(0);
                let value = m.value.as_ref().and_then(|v| numeric(v, dt));
                let ik = (device.map(str::to_string), name.clone());
                let idx = match st.by_name.get(&ik) {
                    Some(i) => {
                        st.metrics[*i].datatype = dt;
                        *i
                    }
                    None => {
                        st.metrics.push(MetricDef {
                            device: device.map(str::to_string),
                            name: name.clone(),
                            datatype: dt,
                            last: 0.0,
                        });
                        st.by_name.insert(ik, st.metrics.len() - 1);
                        st.metrics.len() - 1
                    }
                };
                if let Some(a) = m.alias {
                    st.by_alias.insert(a, idx);
                }
                if is_control(&name) || m.is_null == Some(true) {
                    continue;
                }
                if let Some(v) = value.filter(|v| v.is_finite()) {
                    if m.is_historical != Some(true) {
                        st.metrics[idx].last = v;
                    }
                    let ts = m.timestamp.map(|t| t as i64).unwrap_or(msg_ts);
                    rows.push((name, ts, v, metric_quality(m)));
                }
            }
        }
        for (name, ts, value, quality) in rows {
            let tag = self.tag(&key.0, &key.1, device, &name);
            out.rows.push(SpRow {
                tag,
                ts,
                value,
                quality,
            });
        }
    }

    fn data(
        &mut self,
        key: &(String, String),
        device: Option<&str>,
        p: &Payload,
        msg_ts: i64,
        now: i64,
        out: &mut HostOutput,
    ) {
        let mut rows = Vec::new();
        let mut unknown = false;
        {
            let st = self.nodes.get_mut(key).expect("node exists");
            if let Some(d) = device {
                if st.devices_dead.iter().any(|x| x == d) {
                    // Data from a dead device: it must be reborn first.
                    unknown = true;
                }
            }
            for m in &p.metrics {
                let idx = match (m.alias, &m.name) {
                    (Some(a), _) => st.by_alias.get(&a).copied(),
                    (None, Some(n)) => st
                        .by_name
                        .get(&(device.map(str::to_string), n.clone()))
                        .copied(),
                    (None, None) => None,
                };
                let Some(idx) = idx else {
                    out.dead.push(match (m.alias, &m.name) {
                        (Some(a), _) => format!("alias {a} was never born"),
                        (None, Some(n)) => format!("metric `{n}` was never born"),
                        _ => "metric with neither name nor alias".into(),
                    });
                    unknown = true;
                    continue;
                };
                let def = st.metrics[idx].clone();
                if def.device.as_deref() != device {
                    out.dead
                        .push(format!("alias of `{}` used by another device", def.name));
                    unknown = true;
                    continue;
                }
                if is_control(&def.name) || m.is_null == Some(true) {
                    continue;
                }
                let dt = m.datatype.unwrap_or(def.datatype);
                let Some(v) = m.value.as_ref().and_then(|v| numeric(v, dt)) else {
                    out.dead
                        .push(format!("metric `{}` has no numeric value", def.name));
                    continue;
                };
                if !v.is_finite() {
                    out.dead
                        .push(format!("metric `{}` is NaN or infinite", def.name));
                    continue;
                }
                if m.is_historical != Some(true) {
                    st.metrics[idx].last = v;
                }
                let ts = m.timestamp.map(|t| t as i64).unwrap_or(msg_ts);
                rows.push((def.name.clone(), ts, v, metric_quality(m)));
            }
            if unknown {
                Self::want_rebirth(st, key, now, out);
            }
        }
        for (name, ts, value, quality) in rows {
            let tag = self.tag(&key.0, &key.1, device, &name);
            out.rows.push(SpRow {
                tag,
                ts,
                value,
                quality,
            });
        }
    }
}

/// The `NCMD` payload asking a node to rebirth.
pub fn rebirth_payload(now_ms: i64) -> Vec<u8> {
    Payload {
        timestamp: Some(now_ms as u64),
        metrics: vec![Metric {
            name: Some("Node Control/Rebirth".into()),
            timestamp: Some(now_ms as u64),
            datatype: Some(datatype::BOOLEAN),
            value: Some(Value::BooleanValue(true)),
            ..Metric::default()
        }],
        seq: None,
        uuid: None,
        body: None,
    }
    .encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn metric(name: Option<&str>, alias: Option<u64>, dt: u32, v: Value, ts: u64) -> Metric {
        Metric {
            name: name.map(str::to_string),
            alias,
            timestamp: Some(ts),
            datatype: Some(dt),
            value: Some(v),
            ..Metric::default()
        }
    }

    fn payload(seq: Option<u64>, metrics: Vec<Metric>) -> Vec<u8> {
        Payload {
            timestamp: Some(1_000),
            metrics,
            seq,
            uuid: None,
            body: None,
        }
        .encode_to_vec()
    }

    fn nbirth() -> Vec<u8> {
        payload(
            Some(0),
            vec![
                metric(
                    Some("bdSeq"),
                    None,
                    datatype::INT64,
                    Value::LongValue(3),
                    1_000,
                ),
                metric(
                    Some("Node Control/Rebirth"),
                    None,
                    datatype::BOOLEAN,
                    Value::BooleanValue(false),
                    1_000,
                ),
                metric(
                    Some("power_kw"),
                    Some(1),
                    datatype::DOUBLE,
                    Value::DoubleValue(10.0),
                    1_000,
                ),
                metric(
                    Some("temp"),
                    Some(2),
                    datatype::INT16,
                    Value::IntValue(0xFFF6),
                    1_000,
                ),
            ],
        )
    }

    #[test]
    fn birth_data_death_rebirth() {
        let mut h = Host::default();
        let o = h.handle("spBv1.0/g/NBIRTH/n1", &nbirth(), 5);
        assert!(o.dead.is_empty(), "{:?}", o.dead);
        assert_eq!(o.rows.len(), 2);
        assert_eq!(
            o.rows[0],
            SpRow {
                tag: "g/n1/power_kw".into(),
                ts: 1_000,
                value: 10.0,
                quality: Quality::Good
            }
        );
        // Int16 two's complement: 0xFFF6 = -10.
        assert_eq!(o.rows[1].value, -10.0);

        // NDATA by alias only.
        let d = payload(
            Some(1),
            vec![metric(
                None,
                Some(1),
                datatype::DOUBLE,
                Value::DoubleValue(12.5),
                2_000,
            )],
        );
        let o = h.handle("spBv1.0/g/NDATA/n1", &d, 5);
        assert_eq!(
            o.rows,
            vec![SpRow {
                tag: "g/n1/power_kw".into(),
                ts: 2_000,
                value: 12.5,
                quality: Quality::Good
            }]
        );
        assert!(o.rebirth.is_none());

        // A seq gap (expected 2, got 4) asks for rebirth but keeps the values.
        let d = payload(
            Some(4),
            vec![metric(
                None,
                Some(1),
                datatype::DOUBLE,
                Value::DoubleValue(13.0),
                3_000,
            )],
        );
        let o = h.handle("spBv1.0/g/NDATA/n1", &d, 6);
        assert_eq!(o.rows.len(), 1);
        assert_eq!(o.rebirth, Some(("g".into(), "n1".into())));

        // An alias never born: dead letter, rebirth held off (asked 1 ms ago).
        let d = payload(
            Some(5),
            vec![metric(
                None,
                Some(9),
                datatype::DOUBLE,
                Value::DoubleValue(1.0),
                3_000,
            )],
        );
        let o = h.handle("spBv1.0/g/NDATA/n1", &d, 7);
        assert_eq!(o.dead, vec!["alias 9 was never born".to_string()]);
        assert!(o.rebirth.is_none());

        // NDEATH with a stale bdSeq is ignored; with the right one, tags go bad at its time.
        let death = |bd: u64| {
            payload(
                None,
                vec![metric(
                    Some("bdSeq"),
                    None,
                    datatype::INT64,
                    Value::LongValue(bd),
                    4_000,
                )],
            )
        };
        let o = h.handle("spBv1.0/g/NDEATH/n1", &death(2), 8);
        assert!(o.ignored && o.rows.is_empty());
        let o = h.handle("spBv1.0/g/NDEATH/n1", &death(3), 8);
        assert_eq!(o.rows.len(), 2);
        assert!(o
            .rows
            .iter()
            .all(|r| r.quality == Quality::Bad && r.ts == 1_000));
        assert_eq!(o.rows[0].value, 13.0, "stale marker carries the last value");

        // Data after death: dead letter + rebirth request (hold-off passed).
        let d = payload(
            Some(6),
            vec![metric(
                None,
                Some(1),
                datatype::DOUBLE,
                Value::DoubleValue(1.0),
                5_000,
            )],
        );
        let o = h.handle("spBv1.0/g/NDATA/n1", &d, 10_000);
        assert!(o.rows.is_empty());
        assert_eq!(o.rebirth, Some(("g".into(), "n1".into())));
    }

    #[test]
    fn devices_and_history() {
        let mut h = Host::default();
        h.handle("spBv1.0/g/NBIRTH/n1", &nbirth(), 5);
        let b = payload(
            Some(1),
            vec![metric(
                Some("kw"),
                Some(10),
                datatype::FLOAT,
                Value::FloatValue(2.5),
                1_500,
            )],
        );
        let o = h.handle("spBv1.0/g/DBIRTH/n1/d1", &b, 5);
        assert_eq!(o.rows[0].tag, "g/n1/d1/kw");
        let mut m = metric(None, Some(10), datatype::FLOAT, Value::FloatValue(1.0), 500);
        m.is_historical = Some(true);
        let o = h.handle("spBv1.0/g/DDATA/n1/d1", &payload(Some(2), vec![m]), 5);
        assert_eq!(
            o.rows,
            vec![SpRow {
                tag: "g/n1/d1/kw".into(),
                ts: 500,
                value: 1.0,
                quality: Quality::Good
            }]
        );
        // DDEATH: the device's tag goes bad with its last *live* value (2.5, not the historical 1.0).
        let o = h.handle("spBv1.0/g/DDEATH/n1/d1", &payload(Some(3), vec![]), 5);
        assert_eq!(
            o.rows,
            vec![SpRow {
                tag: "g/n1/d1/kw".into(),
                ts: 1_000,
                value: 2.5,
                quality: Quality::Bad
            }]
        );
    }

    #[test]
    fn bad_messages() {
        let mut h = Host::default();
        let o = h.handle("spBv1.0/g/NBIRTH/n1", &[0x0a, 0xff, 0x01], 5);
        assert!(o.dead[0].starts_with("invalid Sparkplug protobuf"));
        let o = h.handle("spBv1.0/g/NDATA/n9", &payload(Some(0), vec![]), 5);
        assert!(o.dead[0].contains("not been born"));
        assert!(o.rebirth.is_some());
        assert!(h.handle("spBv1.0/g/BOGUS/n1", &[], 5).dead[0].contains("unknown"));
        assert!(h.handle("spBv1.0/g/NDATA", &[], 5).dead[0].contains("malformed"));
        assert!(
            h.handle("spBv1.0/g/NCMD/n1", &rebirth_payload(1), 5)
                .ignored
        );
        let r = Payload::decode(rebirth_payload(7).as_slice()).unwrap();
        assert_eq!(r.metrics[0].name.as_deref(), Some("Node Control/Rebirth"));
        assert_eq!(r.metrics[0].value, Some(Value::BooleanValue(true)));
    }

    proptest! {
        #[test]
        fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512),
                                kind in prop::sample::select(vec!["NBIRTH","DBIRTH","NDATA","DDATA","NDEATH","DDEATH"])) {
            let mut h = Host::default();
            h.handle("spBv1.0/g/NBIRTH/n", &nbirth(), 0);
            let topic = if kind.starts_with('D') { format!("spBv1.0/g/{kind}/n/d") } else { format!("spBv1.0/g/{kind}/n") };
            let o = h.handle(&topic, &bytes, 1);
            for r in o.rows { prop_assert!(r.value.is_finite()); }
        }
    }
}
