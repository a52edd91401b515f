//! The host application's edge-node state machine: births define metrics
//! and aliases, data resolves through them, deaths mark tags stale, and gaps
//! ask for a rebirth.

use std::collections::HashMap;

use prost::Message;

use super::proto::{datatype, Metric, Payload, PropValue, Value};
use super::topic::{parse_topic, Kind};
use super::REBIRTH_HOLDOFF_MS;
use crate::model::Quality;
use crate::mqtt::topic::TagTemplate;

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
