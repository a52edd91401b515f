//! The loader: TOML text → spans and a raw top level, and the shared means
//! of every section's validation (deserialising with unknown-key reports,
//! durations, file paths, one-of checks, expressions, credentials).

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use super::diagnostic::{line_col, Diagnostic};
use super::raw::RawDataflow;
use super::spans::{self, SpanIndex};
use super::units;
use crate::expr::{ColType, Expr, Scope};
use crate::model::{did_you_mean, Secret};

/// Reads one dataflow file: every section's validation reports through it by
/// key path, and it turns each report into a [`Diagnostic`] with file, line
/// and column. Validators never work out a line: the loader does.
pub struct Loader<'a> {
    file: &'a Path,
    text: &'a str,
    spans: SpanIndex,
    diags: Vec<Diagnostic>,
    base_dir: PathBuf,
}

impl Loader<'_> {
    pub fn at(&mut self, path: &str, message: String, hint: Option<String>) {
        let span = self.spans.lookup(path);
        self.push(path, span, message, hint);
    }

    pub fn at_value(&mut self, path: &str, message: String, hint: Option<String>) {
        let span = self.spans.value(path);
        self.push(path, span, message, hint);
    }

    pub fn push(
        &mut self,
        path: &str,
        span: std::ops::Range<usize>,
        message: String,
        hint: Option<String>,
    ) {
        let (line, column) = line_col(self.text, span.start);
        self.diags.push(Diagnostic {
            file: self.file.to_path_buf(),
            line,
            column,
            key_path: path.to_string(),
            message,
            hint,
            span,
        });
    }

    /// Deserializes `value` (found at `path`) into `T`, reporting every unknown key
    /// and the first type error.
    pub fn de<T: DeserializeOwned>(
        &mut self,
        path: &str,
        value: toml::Value,
        known: &[&str],
    ) -> Option<T> {
        let mut unknown = Vec::new();
        let mut track = serde_path_to_error::Track::new();
        let result = {
            let de = serde_path_to_error::Deserializer::new(value, &mut track);
            serde_ignored::deserialize(de, |p| unknown.push(p.to_string()))
        };
        for u in unknown {
            let full = spans::join(path, &normalise_path(&u));
            let leaf = full.rsplit(['.', '[']).next().unwrap_or("").to_string();
            let parent = parent_of(&full);
            let hint = did_you_mean(&leaf, known_for(&parent, path, known));
            let where_ = if parent.is_empty() {
                "the top level".to_string()
            } else {
                format!("`{parent}`")
            };
            self.at(&full, format!("unknown key `{leaf}` in {where_}"), hint);
        }
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                let inner = spans::join(path, &normalise_path(&track.path().to_string()));
                let msg = e.to_string();
                if let Some(field) = msg
                    .strip_prefix("missing field `")
                    .and_then(|s| s.split('`').next())
                {
                    let full = spans::join(&inner, field);
                    let span = self.spans.lookup(&inner);
                    let target = if inner.is_empty() {
                        "the top level".to_string()
                    } else {
                        format!("`{inner}`")
                    };
                    self.push(
                        &full,
                        span,
                        format!("missing key `{field}` in {target}"),
                        None,
                    );
                } else {
                    let first = msg.lines().next().unwrap_or("").trim().to_string();
                    let msg = first.replace("invalid type: ", "wrong type: ");
                    let leaf = inner.rsplit('.').next().unwrap_or("");
                    let hint = DURATION_KEYS
                        .contains(&leaf)
                        .then(|| units::DURATION_HINT.to_string());
                    self.at_value(&inner, msg, hint);
                }
                None
            }
        }
    }

    pub fn resolve_path(&self, p: &str) -> PathBuf {
        let pb = PathBuf::from(p);
        if pb.is_absolute() {
            pb
        } else {
            self.base_dir.join(pb)
        }
    }

    /// A path the node writes or creates (a lake, a status file, a key
    /// directory): resolved like any path, and never empty.
    pub fn output_path(&mut self, key: &str, p: &str) -> PathBuf {
        if p.trim().is_empty() {
            self.at_value(
                key,
                "the path is empty".into(),
                Some("give a file or directory, e.g. `${OUT_DIR}`".into()),
            );
        }
        self.resolve_path(p)
    }

    pub fn file_exists(&mut self, key: &str, p: &str) -> PathBuf {
        let pb = self.resolve_path(p);
        if !pb.is_file() {
            self.at_value(
                key,
                format!("file `{p}` does not exist"),
                Some(
                    "paths are relative to the working directory; `${VAR}` reads the environment"
                        .into(),
                ),
            );
        }
        pb
    }

    pub fn duration(&mut self, key: &str, s: &str) -> Option<i64> {
        match units::parse_duration_ms(s) {
            Ok(v) => Some(v as i64),
            Err(e) => {
                self.at_value(key, e, Some(units::DURATION_HINT.into()));
                None
            }
        }
    }

    /// A size in bytes (`64MiB`) of at least `min` (written `min_text` in
    /// the error); none (reported at `key`) if it is not.
    pub fn size(&mut self, key: &str, s: &str, (min, min_text): (u64, &str)) -> Option<u64> {
        match units::parse_size_bytes(s) {
            Ok(b) if b >= min => Some(b),
            Ok(_) => {
                self.at_value(key, format!("must be at least {min_text}"), None);
                None
            }
            Err(e) => {
                self.at_value(key, e, Some(units::SIZE_HINT.into()));
                None
            }
        }
    }

    /// A duration that must be greater than zero (periods, intervals).
    pub fn positive_duration(&mut self, key: &str, s: &str) -> Option<i64> {
        let ms = self.duration(key, s)?;
        if ms <= 0 {
            self.at_value(
                key,
                format!("`{s}` is zero; this duration must be greater than 0"),
                Some(units::DURATION_HINT.into()),
            );
            return None;
        }
        Some(ms)
    }

    pub fn one_of(&mut self, key: &str, got: &str, allowed: &[&str], what: &str) {
        if !allowed.contains(&got) {
            let hint = did_you_mean(got, allowed.iter().copied())
                .unwrap_or_else(|| format!("one of: {}", allowed.join(", ")));
            self.at_value(key, format!("unknown {what} `{got}`"), Some(hint));
        }
    }

    pub fn expr(
        &mut self,
        key: &str,
        src: &str,
        scope: &Scope,
        want: Option<ColType>,
    ) -> Option<ColType> {
        match Expr::compile(src, scope, want) {
            Ok(e) => Some(e.result),
            Err(e) => {
                self.at_value(key, e.message, e.hint);
                None
            }
        }
    }
}

/// `a.b.0.c` (serde paths) → `a.b[0].c`.
fn normalise_path(p: &str) -> String {
    if p == "." || p == "?" {
        return String::new();
    }
    let mut out = String::new();
    for seg in p.split('.') {
        if seg.is_empty() || seg == "?" {
            continue;
        }
        if seg.chars().all(|c| c.is_ascii_digit()) {
            out.push_str(&format!("[{seg}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(seg);
        }
    }
    out
}

fn parent_of(path: &str) -> String {
    match path.rfind('.') {
        Some(i) => path[..i].to_string(),
        None => match path.rfind('[') {
            Some(i) => path[..i].to_string(),
            None => String::new(),
        },
    }
}

/// Known keys of the struct at `parent`, for did-you-mean hints.
fn known_for<'k>(parent: &str, base: &str, known: &'k [&'k str]) -> Vec<&'k str> {
    const TABLE: &[&str] = &["path"];
    const ACTION: &[&str] = &[
        "owner",
        "action_type",
        "value_category",
        "value",
        "severity",
        "one_per",
        "cooldown",
        "expire_after",
    ];
    const SEVERITY: &[&str] = &["medium", "high"];
    let last = parent.rsplit('.').next().unwrap_or("");
    let v: &[&str] = if parent == base {
        known
    } else if base == "context" && last == "tariff" {
        &["path", "holidays"]
    } else if base == "context" {
        TABLE
    } else if last == "action" {
        ACTION
    } else if last == "severity" {
        SEVERITY
    } else if last == "verify" {
        VERIFY_KEYS
    } else {
        known
    };
    v.to_vec()
}

impl<'a> Loader<'a> {
    /// Parses `text` (the contents of `file`) as TOML, resolving `${VAR}`
    /// with `env`, and reads its top level. Fails with every problem found
    /// when the file is not TOML or its top level does not read.
    pub fn parse(
        file: &'a Path,
        text: &'a str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(Loader<'a>, RawDataflow), Vec<Diagnostic>> {
        let mut l = Loader {
            file,
            text,
            spans: SpanIndex::default(),
            diags: Vec::new(),
            base_dir: std::env::current_dir().unwrap_or_default(),
        };
        let doc = match toml::de::DeTable::parse(text) {
            Ok(d) => d,
            Err(e) => {
                let span = e.span().unwrap_or(0..0);
                l.push(
                    "",
                    span,
                    format!("invalid TOML: {}", e.message().trim()),
                    None,
                );
                return Err(l.diags);
            }
        };
        let mut interp_errors = Vec::new();
        let mut spans = SpanIndex::default();
        let table = spans::convert(&doc, &mut spans, env, &mut interp_errors);
        l.spans = spans;
        for (p, e) in interp_errors {
            l.at_value(
                &p,
                e,
                Some("set it, or give a default: `${VAR:-default}`".into()),
            );
        }

        let raw: Option<RawDataflow> = l.de("", toml::Value::Table(table), TOP_KEYS);
        let Some(raw) = raw else { return Err(l.diags) };
        Ok((l, raw))
    }

    /// Every problem reported, in the order they appear in the file, or
    /// nothing when the file is valid.
    pub fn finish(mut self) -> Result<(), Vec<Diagnostic>> {
        if self.diags.is_empty() {
            return Ok(());
        }
        self.diags.sort_by_key(|d| d.span.start);
        Err(self.diags)
    }
}

/// Keys whose values are durations, for hints on type errors.
const DURATION_KEYS: &[&str] = &[
    "size",
    "allowed_lateness",
    "retention",
    "max_future",
    "spill_after",
    "period",
    "poll_interval",
    "roll_interval",
    "cooldown",
    "expire_after",
    "baseline",
    "reporting",
    "demand_interval",
];

const TOP_KEYS: &[&str] = &[
    "name",
    "description",
    "currency",
    "sources",
    "context",
    "window",
    "metrics",
    "rules",
    "sinks",
    "timezone",
    "billing",
    "lifecycle",
    "routing",
    "dead_letter",
    "memory",
    "http",
    "tag_quality",
];

const VERIFY_KEYS: &[&str] = &[
    "baseline",
    "reporting",
    "granularity",
    "energy",
    "drivers",
    "max_cv_rmse",
    "max_nmbe",
    "max_fsu",
];

/// A username (literal or from an environment variable) and a password
/// (from an environment variable or a file, never from the config text),
/// shared by the protocol sources and sinks.
pub fn credentials(
    l: &mut Loader<'_>,
    key: &str,
    username: &Option<String>,
    username_env: &Option<String>,
    password_env: &Option<String>,
    password_file: &Option<String>,
    env: &dyn Fn(&str) -> Option<String>,
) -> (Option<String>, Option<Secret>) {
    let mut user = username.clone();
    let from_env = |l: &mut Loader<'_>, k: &str, var: &Option<String>| {
        let var = var.as_ref()?;
        let v = env(var);
        if v.is_none() {
            l.at_value(
                &format!("{key}.{k}"),
                format!("environment variable `{var}` is not set"),
                None,
            );
        }
        v
    };
    if let Some(v) = from_env(l, "username_env", username_env) {
        user = Some(v);
    }
    let mut password = from_env(l, "password_env", password_env).map(Secret);
    if let Some(f) = password_file {
        let p = l.file_exists(&format!("{key}.password_file"), f);
        if let Ok(s) = std::fs::read_to_string(&p) {
            password = Some(Secret(s.trim_end_matches(['\n', '\r']).to_string()));
        }
    }
    (user, password)
}

pub fn take_type(
    l: &mut Loader<'_>,
    key: &str,
    v: &toml::Value,
    allowed: &[&str],
    what: &str,
) -> Option<String> {
    let Some(t) = v.as_table() else {
        l.at_value(
            key,
            format!("wrong type: {}, expected a table", v.type_str()),
            None,
        );
        return None;
    };
    match t.get("type").and_then(|t| t.as_str()) {
        Some(ty) if allowed.contains(&ty) => Some(ty.to_string()),
        Some(ty) => {
            l.one_of(&format!("{key}.type"), ty, allowed, what);
            None
        }
        None => {
            l.at(
                key,
                format!("missing key `type` in `{key}`"),
                Some(format!("one of: {}", allowed.join(", "))),
            );
            None
        }
    }
}

pub fn strip_type(v: toml::Value) -> toml::Value {
    match v {
        toml::Value::Table(mut t) => {
            t.remove("type");
            toml::Value::Table(t)
        }
        other => other,
    }
}
