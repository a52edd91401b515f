//! The `jsonl` sink's table in a dataflow file.

use std::path::PathBuf;

use serde::Deserialize;

use crate::config::{strip_type, Loader};

/// A validated `jsonl` sink.
#[derive(Clone, Debug)]
pub struct JsonlPlan {
    pub id: String,
    /// Its table's key in the dataflow (`sinks[1]`), for messages.
    pub key: String,
    pub path: PathBuf,
    pub tables: Vec<String>,
    /// The file is rotated once it would pass this size.
    pub rotate_bytes: u64,
    /// Rotated files kept (0: all).
    pub keep: usize,
}

#[derive(Deserialize, Debug, schemars::JsonSchema)]
pub struct RawJsonlSink {
    id: String,
    path: String,
    #[serde(default)]
    tables: Option<Vec<String>>,
    #[serde(default)]
    rotate_size: Option<String>,
    #[serde(default)]
    keep: Option<usize>,
}

const KEYS: &[&str] = &["type", "id", "path", "tables", "rotate_size", "keep"];

/// The tables a `jsonl` sink writes: the versioned value tables.
pub const TABLES: &[&str] = &["actions", "outcomes", "billing"];

/// Validates a `jsonl` sink table at `key`.
pub fn plan(l: &mut Loader<'_>, key: &str, v: toml::Value) -> Option<JsonlPlan> {
    let p = l.de::<RawJsonlSink>(key, strip_type(v), KEYS)?;
    let tables = p.tables.clone().unwrap_or_else(|| vec!["actions".into()]);
    for (j, t) in tables.iter().enumerate() {
        l.one_of(&format!("{key}.tables[{j}]"), t, TABLES, "table");
    }
    let rotate_bytes = match &p.rotate_size {
        Some(s) => l
            .size(&format!("{key}.rotate_size"), s, (1 << 10, "1KiB"))
            .unwrap_or(1 << 10),
        None => 64 << 20,
    };
    Some(JsonlPlan {
        id: p.id,
        key: key.to_string(),
        path: l.output_path(&format!("{key}.path"), &p.path),
        tables,
        rotate_bytes,
        keep: p.keep.unwrap_or(10),
    })
}
