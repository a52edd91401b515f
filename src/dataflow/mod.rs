//! A whole dataflow file: the registry of component kinds, and the loader
//! that validates every section into a [`Dataflow`].
//!
//! The registry is a plain list per role ([`SOURCES`], [`SINKS`]): a kind's
//! name and the function that validates its table, each living with its
//! component (`sources/replay/config.rs`, `mqtt/config.rs`,
//! `opcua/config.rs`, `sinks/parquet/config.rs`). The core sections go to
//! [`crate::config::plan`]. Adding a source type adds a line here, a
//! variant to [`SourcePlan`] and an arm in `run/`'s `spawn_source`.

pub mod schema;

use std::ops::{Deref, DerefMut};
use std::path::Path;

use crate::bacnet::BacnetSourcePlan;
use crate::config::diagnostic::file_diag;
use crate::config::{take_type, ConfigErrors, Diagnostic, Loader, Plan};
use crate::modbus::ModbusSourcePlan;
use crate::mqtt::publish::PublishPlan;
use crate::mqtt::MqttSourcePlan;
use crate::opcua::OpcUaSourcePlan;
use crate::sinks::jsonl::JsonlPlan;
use crate::sinks::parquet::ParquetPlan;
use crate::sinks::webhook::WebhookPlan;
use crate::sources::replay::ReplayPlan;

/// A validated dataflow, ready to run: the core [`Plan`] (which it derefs
/// to) and the plans of its sources and sinks.
#[derive(Clone, Debug)]
pub struct Dataflow {
    pub plan: Plan,
    pub sources: Vec<SourcePlan>,
    /// The lake (exactly one `parquet` sink).
    pub sink: ParquetPlan,
    /// `mqtt_publish` sinks.
    pub publish: Vec<PublishPlan>,
    /// `jsonl` sinks.
    pub jsonl: Vec<JsonlPlan>,
    /// `webhook` sinks.
    pub webhooks: Vec<WebhookPlan>,
    /// A hash of the dataflow file's content (its TOML, comments and layout
    /// aside): the lake's commit record says which file wrote it.
    pub fingerprint: String,
}

impl Deref for Dataflow {
    type Target = Plan;
    fn deref(&self) -> &Plan {
        &self.plan
    }
}

impl DerefMut for Dataflow {
    fn deref_mut(&mut self) -> &mut Plan {
        &mut self.plan
    }
}

/// A validated source of any kind.
#[derive(Clone, Debug)]
pub enum SourcePlan {
    Replay(ReplayPlan),
    Mqtt(Box<MqttSourcePlan>),
    OpcUa(Box<OpcUaSourcePlan>),
    Modbus(Box<ModbusSourcePlan>),
    Bacnet(Box<BacnetSourcePlan>),
}

impl SourcePlan {
    pub fn id(&self) -> &str {
        match self {
            SourcePlan::Replay(r) => &r.id,
            SourcePlan::Mqtt(m) => &m.id,
            SourcePlan::OpcUa(o) => &o.id,
            SourcePlan::Modbus(m) => &m.id,
            SourcePlan::Bacnet(b) => &b.id,
        }
    }
}

/// A sink of any kind.
enum SinkPlan {
    Parquet(ParquetPlan),
    Publish(Box<PublishPlan>),
    Jsonl(JsonlPlan),
    Webhook(Box<WebhookPlan>),
}

/// What a component's validator gets: the loader, its table's key path
/// (`sources[2]`), the table itself, the dataflow's name (default client
/// ids) and the environment (credentials).
type Validate<P> =
    fn(&mut Loader<'_>, &str, toml::Value, &str, &dyn Fn(&str) -> Option<String>) -> Option<P>;

/// Source kinds: the `type` of a `[[sources]]` table and its validator.
pub const SOURCES: &[(&str, Validate<SourcePlan>)] = &[
    ("replay", |l, key, v, _, _| {
        crate::sources::replay::config::plan(l, key, v).map(SourcePlan::Replay)
    }),
    ("mqtt", |l, key, v, name, env| {
        crate::mqtt::config::source(l, key, v, name, env).map(|p| SourcePlan::Mqtt(Box::new(p)))
    }),
    ("opcua", |l, key, v, name, env| {
        let v = crate::config::strip_type(v);
        crate::opcua::config::source(l, key, v, name, env).map(|p| SourcePlan::OpcUa(Box::new(p)))
    }),
    ("modbus", |l, key, v, _, _| {
        let v = crate::config::strip_type(v);
        crate::modbus::config::source(l, key, v).map(|p| SourcePlan::Modbus(Box::new(p)))
    }),
    ("bacnet", |l, key, v, _, _| {
        let v = crate::config::strip_type(v);
        crate::bacnet::config::source(l, key, v).map(|p| SourcePlan::Bacnet(Box::new(p)))
    }),
];

/// Sink kinds: the `type` of a `[[sinks]]` table and its validator.
const SINKS: &[(&str, Validate<SinkPlan>)] = &[
    ("parquet", |l, key, v, _, _| {
        crate::sinks::parquet::config::plan(l, key, v).map(SinkPlan::Parquet)
    }),
    ("mqtt_publish", |l, key, v, name, env| {
        crate::mqtt::config::publish(l, key, v, name, env).map(|p| SinkPlan::Publish(Box::new(p)))
    }),
    ("jsonl", |l, key, v, _, _| {
        crate::sinks::jsonl::config::plan(l, key, v).map(SinkPlan::Jsonl)
    }),
    ("webhook", |l, key, v, _, env| {
        crate::sinks::webhook::config::plan(l, key, v, env).map(|p| SinkPlan::Webhook(Box::new(p)))
    }),
];

/// Loads and validates a dataflow file with the process environment.
pub fn load(file: &Path) -> Result<Dataflow, ConfigErrors> {
    load_with_env(file, &|k| std::env::var(k).ok())
}

/// Loads and validates a dataflow file; `env` resolves `${VAR}` references.
pub fn load_with_env(
    file: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Dataflow, ConfigErrors> {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            return Err(ConfigErrors {
                diagnostics: vec![file_diag(
                    file,
                    format!("cannot read dataflow file: {e}"),
                    None,
                )],
                sources: vec![],
            })
        }
    };
    let result = validate_text(file, &text, env);
    result.map_err(|diagnostics| ConfigErrors {
        diagnostics,
        sources: vec![(file.to_path_buf(), text.clone())],
    })
}

fn validate_text(
    file: &Path,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Dataflow, Vec<Diagnostic>> {
    let (mut l, mut raw) = Loader::parse(file, text, env)?;
    let name = raw.name.clone();
    let sources = sources(&mut l, std::mem::take(&mut raw.sources), &name, env);
    let sinks = std::mem::take(&mut raw.sinks);
    let plan = crate::config::plan(&mut l, file, raw, env);
    let Sinks {
        sink,
        mut publish,
        jsonl,
        webhooks,
    } = sinks_of(&mut l, sinks, &name, env);
    l.finish()?;
    for p in &mut publish {
        p.metrics = plan.metrics.iter().map(|m| m.name.clone()).collect();
    }
    Ok(Dataflow {
        plan,
        sources,
        sink: sink.expect("a sink was validated above"),
        publish,
        jsonl,
        webhooks,
        fingerprint: fingerprint(text),
    })
}

/// A hash of a dataflow file's TOML: comments, layout and key order aside,
/// and the node's operational sections too: `[memory]` (how much memory the
/// node may use), `[http]` (where it answers operators) and `[tag_quality]`
/// (when a tag is reported stale) change nothing it keeps, so raising a
/// limit or adding the surface must not make the lake another dataflow's.
/// Nor does a sink's `format` (bare Parquet or Delta tables: the same rows).
fn fingerprint(text: &str) -> String {
    let canonical = toml::from_str::<toml::Value>(text)
        .map(|mut v| {
            if let Some(t) = v.as_table_mut() {
                t.remove("memory");
                t.remove("http");
                t.remove("tag_quality");
                // The lake's format changes what readers get, not its rows.
                if let Some(toml::Value::Array(sinks)) = t.get_mut("sinks") {
                    for s in sinks.iter_mut().filter_map(|s| s.as_table_mut()) {
                        s.remove("format");
                        s.remove("local");
                    }
                }
            }
            v.to_string()
        })
        .unwrap_or_else(|_| text.to_string());
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(canonical.as_bytes()))
}

/// Validates the table at `key` with the validator its `type` names in
/// `kinds` (`what` names the role in errors: `source type`).
fn validate<P>(
    l: &mut Loader<'_>,
    key: &str,
    v: toml::Value,
    kinds: &[(&str, Validate<P>)],
    what: &str,
    name: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<P> {
    let names: Vec<&str> = kinds.iter().map(|(k, _)| *k).collect();
    let ty = take_type(l, key, &v, &names, what)?;
    let (_, f) = kinds.iter().find(|(k, _)| *k == ty)?;
    f(l, key, v, name, env)
}

/// `[[sources]]`: at least one, each of a registered kind, ids unique.
fn sources(
    l: &mut Loader<'_>,
    raw: Vec<toml::Value>,
    name: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Vec<SourcePlan> {
    let mut sources = Vec::<SourcePlan>::new();
    if raw.is_empty() {
        l.at(
            "sources",
            "a dataflow needs at least one source".into(),
            None,
        );
    }
    for (i, v) in raw.into_iter().enumerate() {
        let key = format!("sources[{i}]");
        if let Some(s) = validate(l, &key, v, SOURCES, "source type", name, env) {
            if sources.iter().any(|o| o.id() == s.id()) {
                l.at_value(
                    &format!("{key}.id"),
                    format!("duplicate source id `{}`", s.id()),
                    None,
                );
            }
            sources.push(s);
        }
    }
    sources
}

/// `[[sinks]]`: exactly one Parquet sink (the lake), any number of MQTT
/// publishers, JSON-lines files and webhooks.
fn sinks_of(
    l: &mut Loader<'_>,
    raw: Vec<toml::Value>,
    name: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Sinks {
    let mut s = Sinks::default();
    let parquet_count = raw
        .iter()
        .filter(|v| v.get("type").and_then(|t| t.as_str()) == Some("parquet"))
        .count();
    if parquet_count != 1 {
        l.at(
            "sinks",
            format!("exactly one `parquet` sink is needed, found {parquet_count}"),
            None,
        );
    }
    for (i, v) in raw.into_iter().enumerate() {
        let key = format!("sinks[{i}]");
        match validate(l, &key, v, SINKS, "sink type", name, env) {
            Some(SinkPlan::Parquet(p)) => s.sink = Some(p),
            Some(SinkPlan::Publish(p)) => s.publish.push(*p),
            Some(SinkPlan::Jsonl(p)) => s.jsonl.push(p),
            Some(SinkPlan::Webhook(p)) => s.webhooks.push(*p),
            None => {}
        }
    }
    s
}

/// A dataflow's sinks by kind.
#[derive(Default)]
struct Sinks {
    sink: Option<ParquetPlan>,
    publish: Vec<PublishPlan>,
    jsonl: Vec<JsonlPlan>,
    webhooks: Vec<WebhookPlan>,
}

#[cfg(test)]
mod tests {
    #[test]
    fn operational_sections_leave_the_fingerprint_alone() {
        let base = "name = \"x\"\n[window]\nsize = \"1m\"\n";
        let same = format!("{base}[memory]\nmax = \"2GiB\"\n[http]\nlisten = \"127.0.0.1:9464\"\n");
        assert_eq!(super::fingerprint(base), super::fingerprint(&same));
        let other = base.replace("1m", "5m");
        assert_ne!(super::fingerprint(base), super::fingerprint(&other));
        let sink = format!("{base}[[sinks]]\ntype = \"parquet\"\npath = \"out\"\n");
        let delta = format!("{sink}format = \"delta\"\n");
        assert_eq!(super::fingerprint(&sink), super::fingerprint(&delta));
        assert_ne!(
            super::fingerprint(&sink),
            super::fingerprint(&sink.replace("out", "o2"))
        );
    }
}
