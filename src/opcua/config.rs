//! Validation of `type = "opcua"` sources.

use serde::Deserialize;

use crate::config::Loader;
use crate::opcua::conn::{self, ConnPlan, Identity};
use crate::opcua::nodes::{self, BrowseSpec, NodeRef, NodeSpec};
use crate::opcua::{Deadband, GroupPlan, OpcUaSourcePlan};
use opcua::types::{DataChangeTrigger, MessageSecurityMode};

#[derive(Deserialize, Debug, schemars::JsonSchema)]
pub struct RawOpcUa {
    id: String,
    endpoint: String,
    #[serde(default)]
    security_policy: Option<String>,
    #[serde(default)]
    security_mode: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    username_env: Option<String>,
    #[serde(default)]
    password_env: Option<String>,
    #[serde(default)]
    password_file: Option<String>,
    #[serde(default)]
    user_certificate: Option<String>,
    #[serde(default)]
    user_private_key: Option<String>,
    #[serde(default)]
    pki_dir: Option<String>,
    #[serde(default)]
    trust_server_certs: Option<bool>,
    #[serde(default)]
    application_uri: Option<String>,
    #[serde(default)]
    session_timeout: Option<String>,
    #[serde(default)]
    keep_alive: Option<String>,
    #[serde(default)]
    request_timeout: Option<String>,
    #[serde(default)]
    batch_rows: Option<usize>,
    /// After a gap, read what was missed from the server's history (default true).
    #[serde(default)]
    backfill: Option<bool>,
    /// Most values one gap's backfill reads (default 1,000,000).
    #[serde(default)]
    backfill_max_values: Option<u64>,
    #[serde(default)]
    #[schemars(with = "Vec<RawNode>")]
    nodes: Vec<toml::Value>,
    #[serde(default)]
    #[schemars(with = "Vec<RawBrowse>")]
    browse: Vec<toml::Value>,
    #[serde(default)]
    #[schemars(with = "Vec<RawGroup>")]
    groups: Vec<toml::Value>,
}

const KEYS: &[&str] = &[
    "type",
    "id",
    "endpoint",
    "security_policy",
    "security_mode",
    "username",
    "username_env",
    "password_env",
    "password_file",
    "user_certificate",
    "user_private_key",
    "pki_dir",
    "trust_server_certs",
    "application_uri",
    "session_timeout",
    "keep_alive",
    "request_timeout",
    "batch_rows",
    "backfill",
    "backfill_max_values",
    "nodes",
    "browse",
    "groups",
];

#[derive(Deserialize, Debug, schemars::JsonSchema)]
pub struct RawNode {
    #[serde(default)]
    node_id: Option<String>,
    #[serde(default)]
    browse_path: Option<String>,
    #[serde(default)]
    tag: Option<String>,
    #[serde(default)]
    group: Option<String>,
}

const NODE_KEYS: &[&str] = &["node_id", "browse_path", "tag", "group"];

#[derive(Deserialize, Debug, schemars::JsonSchema)]
pub struct RawBrowse {
    #[serde(default)]
    root: Option<String>,
    #[serde(default)]
    root_node_id: Option<String>,
    #[serde(default)]
    include: Option<Vec<String>>,
    #[serde(default)]
    exclude: Option<Vec<String>>,
    #[serde(default)]
    tag: Option<String>,
    #[serde(default)]
    max_depth: Option<usize>,
    #[serde(default)]
    group: Option<String>,
}

const BROWSE_KEYS: &[&str] = &[
    "root",
    "root_node_id",
    "include",
    "exclude",
    "tag",
    "max_depth",
    "group",
];

#[derive(Deserialize, Debug, schemars::JsonSchema)]
pub struct RawGroup {
    name: String,
    #[serde(default)]
    publishing_interval: Option<String>,
    #[serde(default)]
    sampling_interval: Option<String>,
    #[serde(default)]
    queue_size: Option<u32>,
    #[serde(default)]
    discard_oldest: Option<bool>,
    #[serde(default)]
    trigger: Option<String>,
    #[serde(default)]
    deadband_type: Option<String>,
    #[serde(default)]
    deadband: Option<f64>,
    #[serde(default)]
    keep_alive_count: Option<u32>,
    #[serde(default)]
    lifetime_count: Option<u32>,
    #[serde(default)]
    max_items_per_subscription: Option<usize>,
}

const GROUP_KEYS: &[&str] = &[
    "name",
    "publishing_interval",
    "sampling_interval",
    "queue_size",
    "discard_oldest",
    "trigger",
    "deadband_type",
    "deadband",
    "keep_alive_count",
    "lifetime_count",
    "max_items_per_subscription",
];

fn group(l: &mut Loader<'_>, key: &str, g: RawGroup) -> GroupPlan {
    let mut p = GroupPlan::named(&g.name);
    if let Some(s) = &g.publishing_interval {
        if let Some(ms) = l.duration(&format!("{key}.publishing_interval"), s) {
            p.publishing_interval_ms = ms.max(1) as u64;
        }
    }
    match g.sampling_interval.as_deref() {
        None | Some("fastest") => p.sampling_interval_ms = 0.0,
        Some("publishing") => p.sampling_interval_ms = -1.0,
        Some(s) => {
            if let Some(ms) = l.duration(&format!("{key}.sampling_interval"), s) {
                p.sampling_interval_ms = ms as f64;
            }
        }
    }
    if let Some(q) = g.queue_size {
        if q == 0 {
            l.at_value(
                &format!("{key}.queue_size"),
                "queue_size must be at least 1".into(),
                Some("2 or more keeps changes that happen between samples and publishes".into()),
            );
        }
        p.queue_size = q.max(1);
    }
    if let Some(d) = g.discard_oldest {
        p.discard_oldest = d;
    }
    if let Some(t) = &g.trigger {
        p.trigger = match t.as_str() {
            "status" => DataChangeTrigger::Status,
            "status_value" => DataChangeTrigger::StatusValue,
            "status_value_timestamp" => DataChangeTrigger::StatusValueTimestamp,
            other => {
                l.one_of(
                    &format!("{key}.trigger"),
                    other,
                    &["status", "status_value", "status_value_timestamp"],
                    "data change trigger",
                );
                DataChangeTrigger::StatusValue
            }
        };
    }
    let v = g.deadband.unwrap_or(0.0);
    p.deadband = match g.deadband_type.as_deref() {
        None | Some("none") => {
            if g.deadband.is_some() {
                l.at(
                    &format!("{key}.deadband"),
                    "a deadband value needs `deadband_type` (absolute or percent)".into(),
                    None,
                );
            }
            Deadband::None
        }
        Some("absolute") => {
            if !(v >= 0.0 && v.is_finite()) {
                l.at_value(
                    &format!("{key}.deadband"),
                    format!("an absolute deadband must be ≥ 0 (got {v})"),
                    None,
                );
            }
            Deadband::Absolute(v)
        }
        Some("percent") => {
            if !(0.0..=100.0).contains(&v) {
                l.at_value(
                    &format!("{key}.deadband"),
                    format!("a percent deadband is 0–100 % of the EURange (got {v})"),
                    None,
                );
            }
            Deadband::Percent(v)
        }
        Some(other) => {
            l.one_of(
                &format!("{key}.deadband_type"),
                other,
                &["none", "absolute", "percent"],
                "deadband type",
            );
            Deadband::None
        }
    };
    if let Some(k) = g.keep_alive_count {
        p.keep_alive_count = k.max(1);
    }
    if let Some(k) = g.lifetime_count {
        p.lifetime_count = k;
    }
    if let Some(m) = g.max_items_per_subscription {
        p.max_items_per_subscription = m.max(1);
    }
    p
}

/// Validates an `opcua` source table.
pub fn source(
    l: &mut Loader<'_>,
    key: &str,
    v: toml::Value,
    dataflow: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<OpcUaSourcePlan> {
    let r: RawOpcUa = l.de(key, v, KEYS)?;
    if !r.endpoint.starts_with("opc.tcp://") {
        l.at_value(
            &format!("{key}.endpoint"),
            format!("`{}` is not an opc.tcp:// URL", r.endpoint),
            Some("e.g. opc.tcp://plc1.plant.local:4840/".into()),
        );
    }
    let (policy, mode) = security(l, key, &r);
    let identity = identity(l, key, &r, env);
    let ms = |l: &mut Loader<'_>, k: &str, v: &Option<String>, d: i64| match v {
        Some(s) => l.duration(&format!("{key}.{k}"), s).unwrap_or(d).max(1),
        None => d,
    };
    let session_timeout_ms = ms(l, "session_timeout", &r.session_timeout, 60_000);
    let keep_alive_ms = ms(l, "keep_alive", &r.keep_alive, 5_000);
    let request_timeout_ms = ms(l, "request_timeout", &r.request_timeout, 30_000);

    // Subscription groups.
    let mut groups = Vec::new();
    for (i, g) in r.groups.into_iter().enumerate() {
        let gk = format!("{key}.groups[{i}]");
        if let Some(raw) = l.de::<RawGroup>(&gk, g, GROUP_KEYS) {
            if groups.iter().any(|x: &GroupPlan| x.name == raw.name) {
                l.at_value(
                    &format!("{gk}.name"),
                    format!("duplicate group `{}`", raw.name),
                    None,
                );
            }
            groups.push(group(l, &gk, raw));
        }
    }
    if groups.is_empty() {
        groups.push(GroupPlan::named("default"));
    }
    let names: Vec<String> = groups.iter().map(|g| g.name.clone()).collect();
    let nodes_out = nodes(l, key, r.nodes, &names);
    let browse_out = browses(l, key, r.browse, &names);
    if nodes_out.is_empty() && browse_out.is_empty() {
        l.at(
            key,
            "an opcua source needs `[[sources.nodes]]` or `[[sources.browse]]` entries".into(),
            None,
        );
    }
    let pki_dir = l.output_path(
        &format!("{key}.pki_dir"),
        r.pki_dir.as_deref().unwrap_or("pki"),
    );
    Some(OpcUaSourcePlan {
        conn: ConnPlan {
            endpoint: r.endpoint,
            policy,
            mode,
            identity,
            pki_dir,
            trust_server_certs: r.trust_server_certs.unwrap_or(false),
            application_name: format!("plantflow {dataflow}/{}", r.id),
            application_uri: r
                .application_uri
                .unwrap_or_else(|| format!("urn:plantflow:{dataflow}:{}", r.id)),
            session_timeout_ms: session_timeout_ms.clamp(1_000, u32::MAX as i64) as u32,
            keep_alive_ms: keep_alive_ms as u64,
            request_timeout_ms: request_timeout_ms as u64,
        },
        id: r.id,
        nodes: nodes_out,
        browse: browse_out,
        groups,
        batch_rows: r.batch_rows.unwrap_or(8192).max(1),
        channel: 256,
        backfill: r
            .backfill
            .unwrap_or(true)
            .then(|| r.backfill_max_values.unwrap_or(1_000_000).max(1)),
    })
}

/// The security policy and mode, which must go together.
fn security(
    l: &mut Loader<'_>,
    key: &str,
    r: &RawOpcUa,
) -> (opcua::crypto::SecurityPolicy, MessageSecurityMode) {
    let policy_name = r.security_policy.as_deref().unwrap_or("None");
    let policy = conn::policy(policy_name);
    if policy.is_none() {
        l.one_of(
            &format!("{key}.security_policy"),
            policy_name,
            conn::POLICIES,
            "security policy",
        );
    }
    let policy = policy.unwrap_or(opcua::crypto::SecurityPolicy::None);
    let none = policy == opcua::crypto::SecurityPolicy::None;
    let mode = match r.security_mode.as_deref() {
        None if none => MessageSecurityMode::None,
        None => MessageSecurityMode::SignAndEncrypt,
        Some(m) => match conn::mode(m) {
            Some(x) => x,
            None => {
                l.one_of(
                    &format!("{key}.security_mode"),
                    m,
                    conn::MODES,
                    "security mode",
                );
                MessageSecurityMode::None
            }
        },
    };
    if none != (mode == MessageSecurityMode::None) {
        l.at_value(
            &format!("{key}.security_mode"),
            format!("security policy {policy_name} does not go with mode {mode:?}"),
            Some(
                "policy None goes with mode None; any other policy with Sign or SignAndEncrypt"
                    .into(),
            ),
        );
    }
    (policy, mode)
}

/// The user identity: anonymous, username and password, or an X.509 certificate.
fn identity(
    l: &mut Loader<'_>,
    key: &str,
    r: &RawOpcUa,
    env: &dyn Fn(&str) -> Option<String>,
) -> Identity {
    let (username, password) = crate::config::credentials(
        l,
        key,
        &r.username,
        &r.username_env,
        &r.password_env,
        &r.password_file,
        env,
    );
    let cert = r
        .user_certificate
        .as_ref()
        .map(|p| l.file_exists(&format!("{key}.user_certificate"), p));
    let pkey = r
        .user_private_key
        .as_ref()
        .map(|p| l.file_exists(&format!("{key}.user_private_key"), p));
    match (username, password, cert, pkey) {
        (None, None, None, None) => Identity::Anonymous,
        (Some(user), Some(password), None, None) => Identity::UserName { user, password },
        (Some(_), None, None, None) => {
            l.at(
                key,
                "a `username` needs a password (`password_env` or `password_file`)".into(),
                None,
            );
            Identity::Anonymous
        }
        (None, Some(_), None, None) => {
            l.at(
                key,
                "a password needs a `username` (or `username_env`)".into(),
                None,
            );
            Identity::Anonymous
        }
        (None, None, Some(cert), Some(key)) => Identity::X509 { cert, key },
        (None, None, _, _) => {
            l.at(
                key,
                "`user_certificate` and `user_private_key` go together".into(),
                None,
            );
            Identity::Anonymous
        }
        _ => {
            l.at(
                key,
                "choose one user identity: username/password or user_certificate/user_private_key"
                    .into(),
                None,
            );
            Identity::Anonymous
        }
    }
}

/// The index of subscription group `g` (the first when none is named).
fn group_of(l: &mut Loader<'_>, names: &[String], k: &str, g: &Option<String>) -> usize {
    match g {
        None => 0,
        Some(n) => match names.iter().position(|x| x == n) {
            Some(i) => i,
            None => {
                let allowed: Vec<&str> = names.iter().map(String::as_str).collect();
                l.one_of(k, n, &allowed, "subscription group");
                0
            }
        },
    }
}

/// A node given by exactly one of a NodeId (`what.0`) and a browse path (`what.1`).
fn node_ref(
    l: &mut Loader<'_>,
    k: &str,
    id: Option<String>,
    path: Option<String>,
    what: (&str, &str),
) -> Option<NodeRef> {
    match (id, path) {
        (Some(id), None) => {
            if id.parse::<opcua::types::NodeId>().is_err() {
                l.at_value(
                    &format!("{k}.{}", what.0),
                    format!("`{id}` is not a NodeId"),
                    Some("e.g. ns=2;s=Plant/site1/comp01/power_kw or ns=3;i=1001".into()),
                );
            }
            Some(NodeRef::Id(id))
        }
        (None, Some(p)) => Some(NodeRef::Path(p)),
        _ => {
            l.at(
                k,
                format!("give exactly one of `{}` and `{}`", what.0, what.1),
                None,
            );
            None
        }
    }
}

/// `[[sources.nodes]]`: nodes by NodeId or browse path.
fn nodes(l: &mut Loader<'_>, key: &str, raw: Vec<toml::Value>, names: &[String]) -> Vec<NodeSpec> {
    let mut nodes_out = Vec::new();
    for (i, n) in raw.into_iter().enumerate() {
        let nk = format!("{key}.nodes[{i}]");
        let Some(raw) = l.de::<RawNode>(&nk, n, NODE_KEYS) else {
            continue;
        };
        let g = group_of(l, names, &format!("{nk}.group"), &raw.group);
        let is_id = raw.node_id.is_some();
        let Some(node) = node_ref(
            l,
            &nk,
            raw.node_id,
            raw.browse_path,
            ("node_id", "browse_path"),
        ) else {
            continue;
        };
        if is_id && raw.tag.is_none() {
            l.at(
                &nk,
                "a node given by `node_id` needs a `tag` name".into(),
                Some("or give a `browse_path`, whose path becomes the tag".into()),
            );
        }
        nodes_out.push(NodeSpec {
            node,
            tag: raw.tag,
            group: g,
        });
    }
    nodes_out
}

/// `[[sources.browse]]`: subtrees discovered by browsing, filtered by globs.
fn browses(
    l: &mut Loader<'_>,
    key: &str,
    raw: Vec<toml::Value>,
    names: &[String],
) -> Vec<BrowseSpec> {
    let mut browse_out = Vec::new();
    for (i, b) in raw.into_iter().enumerate() {
        let bk = format!("{key}.browse[{i}]");
        let Some(raw) = l.de::<RawBrowse>(&bk, b, BROWSE_KEYS) else {
            continue;
        };
        let g = group_of(l, names, &format!("{bk}.group"), &raw.group);
        let Some(root) = node_ref(l, &bk, raw.root_node_id, raw.root, ("root_node_id", "root"))
        else {
            continue;
        };
        let include = raw.include.unwrap_or_else(|| vec!["**".into()]);
        let exclude = raw.exclude.unwrap_or_default();
        for (k, list) in [("include", &include), ("exclude", &exclude)] {
            if let Err(e) = nodes::globs(list) {
                l.at_value(
                    &format!("{bk}.{k}"),
                    e,
                    Some("globs: * within a segment, ** across segments".into()),
                );
            }
        }
        let tag = raw.tag.unwrap_or_else(|| "{path}".into());
        if !tag.contains("{path}") && !tag.contains("{name}") {
            l.at_value(
                &format!("{bk}.tag"),
                "the tag template must use {path} or {name}, or every node gets the same tag"
                    .into(),
                None,
            );
        }
        browse_out.push(BrowseSpec {
            root,
            include,
            exclude,
            tag,
            max_depth: raw.max_depth.unwrap_or(16).max(1),
            group: g,
        });
    }
    browse_out
}
