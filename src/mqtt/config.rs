//! Validation of `type = "mqtt"` sources and `type = "mqtt_publish"` sinks.

use serde::Deserialize;

use crate::config::{units, Loader};
use crate::model::edit::Table;
use crate::mqtt::conn::{parse_url, ConnPlan, Version};
use crate::mqtt::payload::{JsonFields, TsUnit};
use crate::mqtt::publish::{Payload, PublishPlan, DEFAULT_MAX_MESSAGE_BYTES};
use crate::mqtt::sparkplug::SpNaming;
use crate::mqtt::topic::{TagTemplate, TopicTemplate};
use crate::mqtt::{Format, MqttSourcePlan, Route};

/// Connection keys shared by the source and the publish sink.
#[derive(Deserialize, Debug, schemars::JsonSchema)]
pub struct RawConn {
    pub url: String,
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub username_env: Option<String>,
    #[serde(default)]
    pub password_env: Option<String>,
    #[serde(default)]
    pub password_file: Option<String>,
    #[serde(default)]
    pub ca_file: Option<String>,
    #[serde(default)]
    pub client_cert: Option<String>,
    #[serde(default)]
    pub client_key: Option<String>,
    #[serde(default)]
    pub keep_alive: Option<String>,
    #[serde(default)]
    pub clean_start: Option<bool>,
    #[serde(default)]
    pub session_expiry: Option<String>,
    #[serde(default)]
    pub inflight: Option<u16>,
}

pub const CONN_KEYS: &[&str] = &[
    "url",
    "protocol",
    "client_id",
    "username",
    "username_env",
    "password_env",
    "password_file",
    "ca_file",
    "client_cert",
    "client_key",
    "keep_alive",
    "clean_start",
    "session_expiry",
    "inflight",
];

#[derive(Deserialize, Debug, schemars::JsonSchema)]
pub struct RawMqtt {
    id: String,
    #[serde(default)]
    qos: Option<u8>,
    #[serde(default)]
    max_payload: Option<String>,
    #[serde(default)]
    batch_rows: Option<usize>,
    #[serde(default)]
    request_rebirth: Option<bool>,
    #[serde(default)]
    stall_after: Option<String>,
    #[schemars(with = "Vec<RawTopic>")]
    topics: Vec<toml::Value>,
}

/// A live MQTT subscription without a message this long is reported.
pub const DEFAULT_STALL_AFTER_MS: i64 = 60_000;

const MQTT_KEYS: &[&str] = &[
    "type",
    "id",
    "qos",
    "max_payload",
    "batch_rows",
    "request_rebirth",
    "stall_after",
    "topics",
];

#[derive(Deserialize, Debug, schemars::JsonSchema)]
pub struct RawTopic {
    #[serde(default)]
    topic: Option<String>,
    #[serde(default)]
    filter: Option<String>,
    #[serde(default)]
    share: Option<String>,
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    qos: Option<u8>,
    #[serde(default)]
    tag: Option<String>,
    #[serde(default)]
    node_tag: Option<String>,
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    value_field: Option<String>,
    #[serde(default)]
    ts_field: Option<String>,
    #[serde(default)]
    quality_field: Option<String>,
    #[serde(default)]
    tag_field: Option<String>,
    #[serde(default)]
    ts_unit: Option<String>,
    #[serde(default)]
    table: Option<String>,
}

const TOPIC_KEYS: &[&str] = &[
    "topic",
    "filter",
    "share",
    "format",
    "qos",
    "tag",
    "node_tag",
    "group",
    "value_field",
    "ts_field",
    "quality_field",
    "tag_field",
    "ts_unit",
    "table",
];

fn all_keys(extra: &[&'static str]) -> Vec<&'static str> {
    let mut v: Vec<&str> = CONN_KEYS.to_vec();
    v.extend_from_slice(extra);
    v
}

/// Splits a source/sink table into its connection keys and the rest, so each
/// half is checked for unknown keys against the union of both key lists.
fn split(v: toml::Value) -> (toml::Value, toml::Value) {
    let mut conn = toml::Table::new();
    let mut rest = toml::Table::new();
    if let toml::Value::Table(t) = v {
        for (k, v) in t {
            if k == "type" {
                continue;
            }
            if CONN_KEYS.contains(&k.as_str()) {
                conn.insert(k, v);
            } else {
                rest.insert(k, v);
            }
        }
    }
    (toml::Value::Table(conn), toml::Value::Table(rest))
}

/// A `qos` key (or its default); 3 and above are reported.
fn qos(l: &mut Loader<'_>, key: &str, given: Option<u8>, default: u8) -> u8 {
    let q = given.unwrap_or(default);
    if q > 2 {
        l.at_value(
            &format!("{key}.qos"),
            format!("QoS {q} does not exist (0, 1 or 2)"),
            None,
        );
    }
    q
}

/// Validates connection keys; `default_id` is the stable client id when none is given.
pub fn conn(
    l: &mut Loader<'_>,
    key: &str,
    c: &RawConn,
    default_id: String,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<ConnPlan> {
    let (host, port, tls) = match parse_url(&c.url) {
        Ok(x) => x,
        Err(e) => {
            l.at_value(&format!("{key}.url"), e, None);
            return None;
        }
    };
    let version = match c.protocol.as_deref() {
        None | Some("5") | Some("v5") | Some("5.0") => Version::V5,
        Some("3.1.1") | Some("v3.1.1") | Some("4") => Version::V311,
        Some(other) => {
            l.one_of(
                &format!("{key}.protocol"),
                other,
                &["5", "3.1.1"],
                "MQTT protocol",
            );
            Version::V5
        }
    };
    let (username, password) = crate::config::credentials(
        l,
        key,
        &c.username,
        &c.username_env,
        &c.password_env,
        &c.password_file,
        env,
    );
    if password.is_some() && username.is_none() {
        l.at(
            key,
            "a password needs a `username` (or `username_env`)".into(),
            None,
        );
    }
    let file = |l: &mut Loader<'_>, k: &str, v: &Option<String>| {
        v.as_ref().map(|p| l.file_exists(&format!("{key}.{k}"), p))
    };
    let ca_file = file(l, "ca_file", &c.ca_file);
    let client_cert = file(l, "client_cert", &c.client_cert);
    let client_key = file(l, "client_key", &c.client_key);
    if client_cert.is_some() != client_key.is_some() {
        l.at(
            key,
            "`client_cert` and `client_key` go together".into(),
            None,
        );
    }
    if !tls && (ca_file.is_some() || client_cert.is_some()) {
        l.at_value(
            &format!("{key}.url"),
            "certificates are set but the URL is not `mqtts://`".into(),
            None,
        );
    }
    let keep_alive_s = match &c.keep_alive {
        Some(s) => {
            let k = format!("{key}.keep_alive");
            let ms = l.duration(&k, s).unwrap_or(30_000);
            // MQTT counts it in whole seconds, at most 65535 (under 5 s, 5 s is used).
            if ms % 1000 != 0 || ms > 65_535_000 {
                l.at_value(
                    &k,
                    format!("keep_alive `{s}` is not a whole number of seconds up to 65535"),
                    Some("e.g. `keep_alive = \"30s\"`".into()),
                );
            }
            ms / 1000
        }
        None => 30,
    };
    let session_expiry_s = match &c.session_expiry {
        Some(s) if s == "never" => u32::MAX,
        Some(s) => (l.duration(&format!("{key}.session_expiry"), s).unwrap_or(0) / 1000)
            .clamp(0, u32::MAX as i64 - 1) as u32,
        None => 7 * 24 * 3600,
    };
    Some(ConnPlan {
        host,
        port,
        tls,
        version,
        client_id: c.client_id.clone().unwrap_or(default_id),
        username,
        password,
        ca_file,
        client_cert,
        client_key,
        keep_alive_s: keep_alive_s.max(5) as u64,
        clean: c.clean_start.unwrap_or(false),
        session_expiry_s,
        inflight: c.inflight.unwrap_or(100).max(1),
        max_packet: 64 << 20,
    })
}

/// Validates an `mqtt` source table.
pub fn source(
    l: &mut Loader<'_>,
    key: &str,
    v: toml::Value,
    dataflow: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<MqttSourcePlan> {
    let keys = all_keys(MQTT_KEYS);
    let (c, rest) = split(v);
    let rc: Option<RawConn> = l.de(key, c, &keys);
    let r: RawMqtt = l.de(key, rest, &keys)?;
    let conn = conn(l, key, &rc?, format!("plantflow-{dataflow}-{}", r.id), env)?;
    let default_qos = qos(l, key, r.qos, 1);
    let max_payload = match &r.max_payload {
        Some(s) => match units::parse_size_bytes(s) {
            Ok(b) => b as usize,
            Err(e) => {
                l.at_value(
                    &format!("{key}.max_payload"),
                    e,
                    Some(units::SIZE_HINT.into()),
                );
                0
            }
        },
        None => 1 << 20,
    };
    // "0s" turns the watch off.
    let stall_after = match &r.stall_after {
        Some(s) => l.duration(&format!("{key}.stall_after"), s).unwrap_or(0),
        None => DEFAULT_STALL_AFTER_MS,
    };
    if r.topics.is_empty() {
        l.at(
            &format!("{key}.topics"),
            "an mqtt source needs at least one `[[sources.topics]]` entry".into(),
            None,
        );
    }
    let mut routes = Vec::new();
    for (i, t) in r.topics.into_iter().enumerate() {
        let tk = format!("{key}.topics[{i}]");
        let Some(t) = l.de::<RawTopic>(&tk, t, TOPIC_KEYS) else {
            continue;
        };
        if let Some(route) = topic_route(l, &tk, t, default_qos) {
            routes.push(route);
        }
    }
    Some(MqttSourcePlan {
        id: r.id,
        conn,
        routes,
        max_payload,
        batch_rows: r.batch_rows.unwrap_or(8192).max(1),
        request_rebirth: r.request_rebirth.unwrap_or(true),
        channel: 1024,
        stall_after: (stall_after > 0)
            .then(|| std::time::Duration::from_millis(stall_after as u64)),
        decode_threads: 0,
    })
}

fn topic_route(l: &mut Loader<'_>, tk: &str, t: RawTopic, default_qos: u8) -> Option<Route> {
    let qos = qos(l, tk, t.qos, default_qos);
    let format_name = t.format.clone().unwrap_or_else(|| "json".into());
    const FORMATS: &[&str] = &["json", "number", "sparkplug", "context"];
    if !FORMATS.contains(&format_name.as_str()) {
        l.one_of(
            &format!("{tk}.format"),
            &format_name,
            FORMATS,
            "payload format",
        );
        return None;
    }
    let template = match &t.topic {
        Some(s) if format_name != "sparkplug" => match TopicTemplate::parse(s) {
            Ok(tt) => Some(tt),
            Err(e) => {
                l.at_value(
                    &format!("{tk}.topic"),
                    e,
                    Some("e.g. `plant/{site}/{asset}/{signal}` or `plant/{tag+}`".into()),
                );
                return None;
            }
        },
        Some(_) => {
            l.at_value(
                &format!("{tk}.topic"),
                "Sparkplug topics are fixed; use `group` to pick a group".into(),
                None,
            );
            None
        }
        None => None,
    };
    let mut filter = match (&t.filter, &template, &t.group) {
        (Some(f), _, _) => f.clone(),
        (None, Some(tt), _) => tt.filter(),
        (None, None, Some(g)) if format_name == "sparkplug" => format!("spBv1.0/{g}/#"),
        (None, None, None) if format_name == "sparkplug" => "spBv1.0/#".into(),
        _ => {
            l.at(tk, "give `topic` (a template) or `filter`".into(), None);
            return None;
        }
    };
    if let Some(g) = &t.share {
        if g.is_empty() || g.contains(['/', '+', '#']) {
            l.at_value(
                &format!("{tk}.share"),
                "a share group name has no `/`, `+` or `#`".into(),
                None,
            );
        }
        filter = format!("$share/{g}/{filter}");
    }
    let names: Vec<String> = template
        .as_ref()
        .map(|tt| tt.names().iter().map(|s| s.to_string()).collect())
        .unwrap_or_default();
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let format = match format_name.as_str() {
        "json" | "number" => {
            if format_name == "json" {
                Format::Json(json_fields(l, tk, &t))
            } else {
                Format::Number
            }
        }
        "sparkplug" => {
            let naming = sp_naming(l, tk, &t);
            return Some(Route {
                filter,
                qos,
                template: None,
                tag: None,
                format: Format::Sparkplug(naming),
            });
        }
        _ => {
            let Some(name) = &t.table else {
                l.at(
                    tk,
                    "a context topic needs `table` (assets, tariff, production or maintenance)"
                        .into(),
                    None,
                );
                return None;
            };
            match Table::parse(name) {
                Some(tb) => Format::Context(tb),
                None => {
                    l.one_of(
                        &format!("{tk}.table"),
                        name,
                        &["assets", "tariff", "production", "maintenance"],
                        "context table",
                    );
                    return None;
                }
            }
        }
    };
    let tag = match &t.tag {
        Some(s) => match TagTemplate::parse(s, &name_refs) {
            Ok(tt) => Some(tt),
            Err(e) => {
                l.at_value(&format!("{tk}.tag"), e, None);
                None
            }
        },
        None => None,
    };
    Some(Route {
        filter,
        qos,
        template,
        tag,
        format,
    })
}

/// A JSON route's field names and timestamp unit.
fn json_fields(l: &mut Loader<'_>, tk: &str, t: &RawTopic) -> JsonFields {
    let d = JsonFields::default();
    let ts_unit = match t.ts_unit.as_deref() {
        None | Some("auto") => TsUnit::Auto,
        Some("ms") => TsUnit::Millis,
        Some("s") => TsUnit::Seconds,
        Some("rfc3339") => TsUnit::Rfc3339,
        Some(other) => {
            l.one_of(
                &format!("{tk}.ts_unit"),
                other,
                &["auto", "ms", "s", "rfc3339"],
                "timestamp unit",
            );
            TsUnit::Auto
        }
    };
    JsonFields {
        value: t.value_field.clone().unwrap_or(d.value),
        ts: t.ts_field.clone().unwrap_or(d.ts),
        quality: t.quality_field.clone().unwrap_or(d.quality),
        tag: t.tag_field.clone().unwrap_or(d.tag),
        ts_unit,
    }
}

/// A Sparkplug route's tag names for device and node metrics.
fn sp_naming(l: &mut Loader<'_>, tk: &str, t: &RawTopic) -> SpNaming {
    let sp_names = ["group", "node", "device", "metric"];
    let mut naming = SpNaming::default();
    if let Some(s) = &t.tag {
        match TagTemplate::parse(s, &sp_names) {
            Ok(tt) => naming.device_tag = tt,
            Err(e) => l.at_value(&format!("{tk}.tag"), e, None),
        }
    }
    if let Some(s) = &t.node_tag {
        match TagTemplate::parse(s, &sp_names[..]) {
            Ok(tt) => naming.node_tag = tt,
            Err(e) => l.at_value(&format!("{tk}.node_tag"), e, None),
        }
    }
    naming
}

#[derive(Deserialize, Debug, schemars::JsonSchema)]
pub struct RawPublish {
    id: String,
    #[serde(default)]
    topic: Option<String>,
    #[serde(default)]
    tables: Option<Vec<String>>,
    #[serde(default)]
    qos: Option<u8>,
    #[serde(default)]
    retain: Option<bool>,
    #[serde(default)]
    payload: Option<String>,
    #[serde(default)]
    max_message_bytes: Option<i64>,
}

const PUBLISH_KEYS: &[&str] = &[
    "type",
    "id",
    "topic",
    "tables",
    "qos",
    "retain",
    "payload",
    "max_message_bytes",
];

/// The fields a publish topic template may name.
pub const PUBLISH_FIELDS: &[&str] = &[
    "table",
    "dataflow",
    "site",
    "line",
    "asset",
    "rule",
    "owner",
    "action_id",
    "status",
    "tag",
];

/// Validates an `mqtt_publish` sink table.
pub fn publish(
    l: &mut Loader<'_>,
    key: &str,
    v: toml::Value,
    dataflow: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<PublishPlan> {
    let keys = all_keys(PUBLISH_KEYS);
    let (c, rest) = split(v);
    let rc: Option<RawConn> = l.de(key, c, &keys);
    let r: RawPublish = l.de(key, rest, &keys)?;
    let conn = conn(l, key, &rc?, format!("plantflow-{dataflow}-{}", r.id), env)?;
    let topic_src = r
        .topic
        .clone()
        .unwrap_or_else(|| "plantflow/{dataflow}/{table}/{site}/{asset}".into());
    let topic = match TagTemplate::parse(&topic_src, PUBLISH_FIELDS) {
        Ok(t) => t,
        Err(e) => {
            l.at_value(&format!("{key}.topic"), e, None);
            return None;
        }
    };
    let tables = r.tables.clone().unwrap_or_else(|| vec!["actions".into()]);
    const PUB_TABLES: &[&str] = &["aggregates", "actions", "outcomes", "billing"];
    for (j, t) in tables.iter().enumerate() {
        l.one_of(&format!("{key}.tables[{j}]"), t, PUB_TABLES, "table");
    }
    let qos = qos(l, key, r.qos, 1);
    let max_bytes = match r.max_message_bytes {
        None => DEFAULT_MAX_MESSAGE_BYTES,
        Some(n) if (1024..=conn.max_packet as i64).contains(&n) => n as usize,
        Some(n) => {
            l.at_value(
                &format!("{key}.max_message_bytes"),
                format!("{n} is out of range"),
                Some(format!("1024 to {} bytes", conn.max_packet)),
            );
            return None;
        }
    };
    let payload = match r.payload.as_deref() {
        None | Some("row") => {
            if r.max_message_bytes.is_some() {
                l.at_value(
                    &format!("{key}.max_message_bytes"),
                    "applies only with `payload = \"array\"`".into(),
                    None,
                );
                return None;
            }
            Payload::Row
        }
        Some("array") => Payload::Array { max_bytes },
        Some(other) => {
            l.one_of(
                &format!("{key}.payload"),
                other,
                &["row", "array"],
                "payload",
            );
            return None;
        }
    };
    Some(PublishPlan {
        id: r.id,
        key: key.to_string(),
        conn,
        topic,
        tables,
        qos,
        retain: r.retain.unwrap_or(false),
        payload,
        metrics: Vec::new(),
    })
}
