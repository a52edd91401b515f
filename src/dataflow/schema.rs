//! The JSON Schema of dataflow files (`plantflow schema`,
//! `schemas/dataflow.schema.json`), generated from the same raw config
//! types the loader deserialises: editors complete keys and flag a typo
//! before `validate` (which still checks what a schema cannot: durations,
//! expressions, files, columns).
//!
//! Each source and sink kind is one branch of a `oneOf`, told apart by its
//! `type`; every table is closed (`additionalProperties: false`), as the
//! loader is.

use schemars::JsonSchema;
use serde_json::{json, Map, Value};

use crate::bacnet::config::RawBacnet;
use crate::config::raw::RawDataflow;
use crate::modbus::config::RawModbus;
use crate::mqtt::config::{RawConn, RawMqtt, RawPublish};
use crate::opcua::config::RawOpcUa;
use crate::sinks::jsonl::config::RawJsonlSink;
use crate::sinks::parquet::config::RawParquetSink;
use crate::sinks::webhook::config::RawWebhookSink;
use crate::sources::replay::config::RawReplay;

/// A kind's schema: the properties of its tables' raw types, merged.
type Parts = fn() -> Vec<Value>;

fn of<T: JsonSchema>() -> Value {
    serde_json::to_value(
        schemars::generate::SchemaSettings::draft2020_12()
            .into_generator()
            .into_root_schema_for::<T>(),
    )
    .expect("a schema is JSON")
}

/// Source kinds and the raw types of their tables (see `SOURCES`).
pub const SOURCE_KINDS: &[(&str, Parts)] = &[
    ("replay", || vec![of::<RawReplay>()]),
    ("mqtt", || vec![of::<RawConn>(), of::<RawMqtt>()]),
    ("opcua", || vec![of::<RawOpcUa>()]),
    ("modbus", || vec![of::<RawModbus>()]),
    ("bacnet", || vec![of::<RawBacnet>()]),
];

/// Sink kinds and the raw types of their tables (see `SINKS`).
pub const SINK_KINDS: &[(&str, Parts)] = &[
    ("parquet", || vec![of::<RawParquetSink>()]),
    ("mqtt_publish", || vec![of::<RawConn>(), of::<RawPublish>()]),
    ("jsonl", || vec![of::<RawJsonlSink>()]),
    ("webhook", || vec![of::<RawWebhookSink>()]),
];

/// One `oneOf` branch: the parts' properties and required keys, and
/// `type` fixed to the kind. Their `$defs` go to `defs`.
fn kind(name: &str, parts: Vec<Value>, defs: &mut Map<String, Value>) -> Value {
    let mut properties = Map::new();
    let mut required = vec![json!("type")];
    properties.insert(
        "type".into(),
        json!({ "const": name, "description": format!("`{name}`") }),
    );
    let mut description = None;
    for mut p in parts {
        if let Some(Value::Object(d)) = p.get_mut("$defs").map(Value::take) {
            for (k, v) in d {
                // Two raw types of one name would silently share a definition.
                if let Some(old) = defs.insert(k.clone(), v.clone()) {
                    assert_eq!(old, v, "two schema definitions named `{k}`: rename one");
                }
            }
        }
        if let Some(Value::Object(props)) = p.get_mut("properties").map(Value::take) {
            properties.extend(props);
        }
        if let Some(Value::Array(r)) = p.get_mut("required").map(Value::take) {
            required.extend(r);
        }
        description = description.or_else(|| p.get("description").cloned());
    }
    let mut k = json!({
        "title": name,
        "type": "object",
        "properties": properties,
        "required": required,
    });
    if let Some(d) = description {
        k["description"] = d;
    }
    k
}

/// Closes every table: a key the loader does not know is an error there.
fn close(v: &mut Value) {
    match v {
        Value::Object(o) => {
            if o.contains_key("properties") && !o.contains_key("additionalProperties") {
                o.insert("additionalProperties".into(), Value::Bool(false));
            }
            o.values_mut().for_each(close);
        }
        Value::Array(a) => a.iter_mut().for_each(close),
        _ => {}
    }
}

/// The schema of a dataflow file.
pub fn dataflow() -> Value {
    let mut root = of::<RawDataflow>();
    let mut defs = match root.get_mut("$defs").map(Value::take) {
        Some(Value::Object(d)) => d,
        _ => Map::new(),
    };
    for (key, kinds) in [("sources", SOURCE_KINDS), ("sinks", SINK_KINDS)] {
        let branches: Vec<Value> = kinds
            .iter()
            .map(|(name, parts)| kind(name, parts(), &mut defs))
            .collect();
        root["properties"][key]["items"] = json!({ "oneOf": branches });
    }
    root["$defs"] = Value::Object(defs);
    root["title"] = json!("plantflow dataflow");
    root["description"] = json!(
        "A plantflow dataflow file (TOML): sources, context, windows, metrics, rules, sinks. \
         `plantflow validate` checks what a schema cannot (durations, expressions, files)."
    );
    close(&mut root);
    root
}

/// The schema as the text `plantflow schema` prints.
pub fn text() -> String {
    serde_json::to_string_pretty(&dataflow()).expect("a schema is JSON") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every source and sink kind the loader knows has a branch.
    #[test]
    fn every_kind_has_a_schema() {
        let names = |k: &[(&str, Parts)]| k.iter().map(|(n, _)| n.to_string()).collect::<Vec<_>>();
        assert_eq!(
            names(SOURCE_KINDS),
            super::super::SOURCES
                .iter()
                .map(|(n, _)| n.to_string())
                .collect::<Vec<_>>()
        );
        assert_eq!(
            names(SINK_KINDS),
            super::super::SINKS
                .iter()
                .map(|(n, _)| n.to_string())
                .collect::<Vec<_>>()
        );
    }
}
