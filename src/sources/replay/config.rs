//! The `replay` source's table in a dataflow file.

use std::path::PathBuf;

use serde::Deserialize;

use crate::config::{strip_type, Loader};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplayFormat {
    Csv,
    Parquet,
}

#[derive(Clone, Debug)]
pub struct ReplayPlan {
    pub id: String,
    pub path: PathBuf,
    pub format: ReplayFormat,
    pub batch_rows: usize,
    pub poll_interval_ms: u64,
    /// How the export is laid out (`[sources.format]`); none: a plain long
    /// file, read by the fast reader.
    pub export: Option<Box<super::format::Format>>,
}

#[derive(Deserialize, Debug, schemars::JsonSchema)]
pub struct RawReplay {
    pub id: String,
    pub path: String,
    /// `csv` or `parquet` (by file extension when absent), or a table
    /// describing the export (`[sources.format]`).
    #[serde(default)]
    #[schemars(with = "Option<FormatSchema>")]
    pub format: Option<toml::Value>,
    /// Rows per batch handed to the engine.
    #[serde(default)]
    pub batch_rows: Option<usize>,
    /// How often a followed file is polled for new rows.
    #[serde(default)]
    pub poll_interval: Option<String>,
}

/// `format`: a file kind, or a table describing the export.
#[derive(schemars::JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum FormatSchema {
    Kind(FileKind),
    Table(Box<super::format::config::RawFormat>),
}

#[derive(schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
enum FileKind {
    Csv,
    Parquet,
}

const REPLAY_KEYS: &[&str] = &[
    "type",
    "id",
    "path",
    "format",
    "batch_rows",
    "poll_interval",
];

/// Validates a `replay` source table at `key`.
pub fn plan(l: &mut Loader<'_>, key: &str, v: toml::Value) -> Option<ReplayPlan> {
    let r = l.de::<RawReplay>(key, strip_type(v), REPLAY_KEYS)?;
    let (kind, export) = match r.format {
        Some(toml::Value::String(s)) => (Some(s), None),
        Some(t @ toml::Value::Table(_)) => {
            match super::format::config::plan(l, &format!("{key}.format"), t) {
                Some((f, kind)) => (kind, Some(Box::new(f))),
                None => (None, None),
            }
        }
        Some(_) => {
            l.at_value(
                &format!("{key}.format"),
                "wrong type: expected \"csv\", \"parquet\" or a [sources.format] table".into(),
                None,
            );
            (None, None)
        }
        None => (None, None),
    };
    let format = match kind.as_deref() {
        Some("csv") => ReplayFormat::Csv,
        Some("parquet") => ReplayFormat::Parquet,
        Some(other) => {
            l.one_of(
                &format!("{key}.format"),
                other,
                &["csv", "parquet"],
                "replay format",
            );
            ReplayFormat::Csv
        }
        None if r.path.ends_with(".parquet") => ReplayFormat::Parquet,
        None => ReplayFormat::Csv,
    };
    let path = l.file_exists(&format!("{key}.path"), &r.path);
    // The block is checked against the file's header while it is there.
    let export = export.filter(|f| !f.is_plain());
    if let (Some(f), true) = (&export, path.is_file()) {
        if let Err(e) = super::format::read::header_of(&path, &format, f) {
            let mut leaf = super::format::config::header_key(&e);
            if leaf == "tag" && f.layout == super::format::Layout::Wide {
                leaf = "tags";
            }
            l.at_value(&format!("{key}.format.{leaf}"), e, None);
        }
    }
    let poll = match &r.poll_interval {
        Some(s) => l
            .positive_duration(&format!("{key}.poll_interval"), s)
            .unwrap_or(200),
        None => 200,
    };
    Some(ReplayPlan {
        id: r.id,
        path,
        format,
        batch_rows: r.batch_rows.unwrap_or(8192).max(1),
        poll_interval_ms: poll as u64,
        export,
    })
}
