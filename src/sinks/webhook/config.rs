//! The `webhook` sink's table in a dataflow file.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::config::{strip_type, Loader};
use crate::model::Secret;

/// A validated `webhook` sink.
#[derive(Clone, Debug)]
pub struct WebhookPlan {
    pub id: String,
    /// Its table's key in the dataflow (`sinks[1]`), for messages.
    pub key: String,
    pub url: String,
    pub tables: Vec<String>,
    /// The body template (a file) and its text; none: the row's document.
    pub template: Option<(PathBuf, String)>,
    /// Headers as given, and headers whose values come from the environment.
    pub headers: Vec<(String, String)>,
    pub secret_headers: Vec<(String, Secret)>,
    pub idempotency_header: String,
    pub timeout_ms: u64,
    /// A failing delivery is retried this long, then dead-lettered.
    pub retry_for_ms: u64,
    /// Revisions waiting to be sent; past it, a revision is dead-lettered.
    pub max_queue: usize,
    /// The CA certificates (DER) an https:// endpoint is checked against
    /// instead of the public roots (a plant's own CA).
    pub ca: Option<Vec<Vec<u8>>>,
}

#[derive(Deserialize, Debug, schemars::JsonSchema)]
pub struct RawWebhookSink {
    id: String,
    /// `http://` or `https://` address the documents are POSTed to.
    url: String,
    /// actions (default), outcomes.
    #[serde(default)]
    tables: Option<Vec<String>>,
    /// A MiniJinja template file making each body (JSON) from the row's fields.
    #[serde(default)]
    template: Option<String>,
    /// Headers sent as given.
    #[serde(default)]
    headers: Option<BTreeMap<String, String>>,
    /// Headers whose value is an environment variable's (secrets: never logged).
    #[serde(default)]
    headers_env: Option<BTreeMap<String, String>>,
    /// The header carrying `<action_id>-<revision>` (default `Idempotency-Key`).
    #[serde(default)]
    idempotency_header: Option<String>,
    /// One request's time limit (default 10s).
    #[serde(default)]
    timeout: Option<String>,
    /// How long a failing delivery is retried before it is dead-lettered (default 10m).
    #[serde(default)]
    retry_for: Option<String>,
    /// Revisions waiting to be sent (default 10000).
    #[serde(default)]
    max_queue: Option<usize>,
    /// PEM file of the CA(s) an https:// endpoint's certificate must chain
    /// to, instead of the public (WebPKI) roots: a plant's own CA.
    #[serde(default)]
    ca_file: Option<String>,
}

/// The tables a webhook sends: revisions someone acts on.
pub const TABLES: &[&str] = &["actions", "outcomes"];

const KEYS: &[&str] = &[
    "type",
    "id",
    "url",
    "tables",
    "template",
    "headers",
    "headers_env",
    "idempotency_header",
    "timeout",
    "retry_for",
    "max_queue",
    "ca_file",
];

/// A header name as HTTP allows it (a token).
fn header_name(n: &str) -> bool {
    !n.is_empty()
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Validates a `webhook` sink table at `key`.
pub fn plan(
    l: &mut Loader<'_>,
    key: &str,
    v: toml::Value,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<WebhookPlan> {
    let p = l.de::<RawWebhookSink>(key, strip_type(v), KEYS)?;
    let k = |leaf: &str| format!("{key}.{leaf}");
    let tables = p.tables.clone().unwrap_or_else(|| vec!["actions".into()]);
    for (j, t) in tables.iter().enumerate() {
        l.one_of(&format!("{key}.tables[{j}]"), t, TABLES, "table");
    }
    match ureq::http::Uri::try_from(p.url.as_str()) {
        Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() => {}
        _ => l.at_value(
            &k("url"),
            format!(
                "`{}` is not an http:// or https:// address",
                super::redact(&p.url)
            ),
            Some("e.g. \"https://cmms.example.com/api/work-requests\"".into()),
        ),
    }
    let template = p.template.as_ref().map(|t| {
        let path = l.file_exists(&k("template"), t);
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if let Err(e) = super::compile(&text) {
            l.at_value(
                &k("template"),
                format!("the template does not compile: {e}"),
                None,
            );
        }
        (path, text)
    });
    let mut headers = Vec::new();
    for (name, value) in p.headers.iter().flatten() {
        if !header_name(name) {
            l.at(
                &format!("{key}.headers.{name}"),
                format!("`{name}` is not a header name"),
                None,
            );
        }
        headers.push((name.clone(), value.clone()));
    }
    let mut secret_headers = Vec::new();
    for (name, var) in p.headers_env.iter().flatten() {
        let at = format!("{key}.headers_env.{name}");
        if !header_name(name) {
            l.at(&at, format!("`{name}` is not a header name"), None);
        }
        match env(var) {
            Some(value) => secret_headers.push((name.clone(), Secret(value))),
            None => l.at_value(
                &at,
                format!("the environment variable `{var}` is not set"),
                Some("headers_env names variables holding the values, e.g. Authorization = \"CMMS_AUTHORIZATION\"".into()),
            ),
        }
    }
    let idempotency_header = p
        .idempotency_header
        .unwrap_or_else(|| "Idempotency-Key".into());
    if !header_name(&idempotency_header) {
        l.at_value(&k("idempotency_header"), "not a header name".into(), None);
    }
    let duration = |l: &mut Loader<'_>, leaf: &str, v: &Option<String>, default: u64| match v {
        Some(s) => l
            .positive_duration(&k(leaf), s)
            .map_or(default, |ms| ms as u64),
        None => default,
    };
    let timeout_ms = duration(l, "timeout", &p.timeout, 10_000);
    let retry_for_ms = duration(l, "retry_for", &p.retry_for, 600_000);
    let max_queue = p.max_queue.unwrap_or(10_000);
    if max_queue == 0 {
        l.at_value(&k("max_queue"), "max_queue must be at least 1".into(), None);
    }
    let ca = p.ca_file.as_ref().map(|f| {
        if !p.url.starts_with("https://") {
            l.at_value(
                &k("ca_file"),
                "a CA file is for an https:// url".into(),
                None,
            );
        }
        let path = l.file_exists(&k("ca_file"), f);
        let pem = std::fs::read(&path).unwrap_or_default();
        let certs = ca_certs(&pem);
        if certs.is_empty() && path.exists() {
            l.at_value(
                &k("ca_file"),
                format!("{} holds no PEM certificate", path.display()),
                Some("a file of `-----BEGIN CERTIFICATE-----` blocks".into()),
            );
        }
        certs
    });
    Some(WebhookPlan {
        id: p.id,
        key: key.to_string(),
        url: p.url,
        tables,
        template,
        headers,
        secret_headers,
        idempotency_header,
        timeout_ms,
        retry_for_ms,
        max_queue: max_queue.max(1),
        ca,
    })
}

/// The certificates of a PEM file, in DER (other PEM items are skipped).
fn ca_certs(pem: &[u8]) -> Vec<Vec<u8>> {
    ureq::tls::parse_pem(pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(c.der().to_vec()),
            _ => None,
        })
        .collect()
}
