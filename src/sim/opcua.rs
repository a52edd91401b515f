//! A simulated plant's OPC UA server (async-opcua), for the demo, the tests
//! and the OPC UA benchmark.
//!
//! The address space is `Objects/Plant/<path segments>`: every tag path
//! (`site1/line1/comp01/power_kw`) becomes folders for its leading segments
//! and an `AnalogItemType` variable (Double) for the last one, with the
//! `EURange` and `EngineeringUnits` properties clients need for percent
//! deadbands. NodeIds are `ns=<plant>;s=<path>` so both explicit NodeIds and
//! browse-based discovery have something real to find.
//!
//! Values change when [`PlantServer::set`] is called, or on a schedule with
//! [`PlantServer::tick`]. A few odd nodes (`Plant/odd/...`: a string, an
//! array, a structure, a bad-status value) exercise clients' type checks.
//!
//! Endpoints: None, and Basic256Sha256, Aes128_Sha256_RsaOaep and
//! Aes256_Sha256_RsaPss with Sign and SignAndEncrypt; anonymous and
//! username/password users. The server trusts client certificates (it is a
//! simulator); its own key pair is created in `pki_dir` on first start.

use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use opcua::crypto::SecurityPolicy;
use opcua::server::address_space::{AddressSpace, VariableBuilder};
use opcua::server::diagnostics::NamespaceMetadata;
use opcua::server::node_manager::memory::{simple_node_manager, SimpleNodeManager};
use opcua::server::{ServerBuilder, ServerHandle, ServerUserToken, ANONYMOUS_USER_TOKEN_ID};
use opcua::types::{
    DataTypeId, DataValue, DateTime, EUInformation, ExtensionObject, MessageSecurityMode, NodeId,
    QualifiedName, Range, StatusCode, VariableTypeId, Variant,
};

/// Namespace URI of the plant nodes.
pub const NAMESPACE: &str = "urn:plantflow:sim:plant";

/// One simulated variable.
#[derive(Clone, Debug)]
pub struct SimTag {
    /// Path below `Plant`, `/`-separated; also the NodeId's string.
    pub path: String,
    pub unit: String,
    pub eu_low: f64,
    pub eu_high: f64,
}

impl SimTag {
    pub fn new(path: &str, unit: &str, eu_high: f64) -> SimTag {
        SimTag {
            path: path.to_string(),
            unit: unit.to_string(),
            eu_low: 0.0,
            eu_high,
        }
    }
}

/// How to start a [`PlantServer`].
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// TCP port; 0 picks a free one.
    pub port: u16,
    pub tags: Vec<SimTag>,
    /// Username/password pairs accepted besides anonymous.
    pub users: Vec<(String, String)>,
    /// Directory of the server's own certificate and key (created if missing).
    pub pki_dir: PathBuf,
    /// Add the `Plant/odd/...` nodes.
    pub odd_nodes: bool,
    /// Offer anonymous login (off: a user must log in).
    pub anonymous: bool,
    /// Interval at which the server samples and publishes (ms).
    pub min_publishing_interval_ms: u64,
    /// Offer the unsecured None endpoint.
    pub offer_none: bool,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            port: 0,
            tags: Vec::new(),
            users: Vec::new(),
            pki_dir: std::env::temp_dir().join("plantflow-opcua-sim-pki"),
            odd_nodes: false,
            anonymous: true,
            min_publishing_interval_ms: 50,
            offer_none: true,
        }
    }
}

/// A running server; dropping it does not stop it, [`PlantServer::stop`] does.
pub struct PlantServer {
    pub port: u16,
    handle: ServerHandle,
    nm: Arc<SimpleNodeManager>,
    ns: u16,
    ids: Vec<NodeId>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The security policies and modes the simulator offers (besides None).
pub const SECURE_ENDPOINTS: &[(SecurityPolicy, &str)] = &[
    (SecurityPolicy::Basic256Sha256, "basic256sha256"),
    (SecurityPolicy::Aes128Sha256RsaOaep, "aes128sha256rsaoaep"),
    (SecurityPolicy::Aes256Sha256RsaPss, "aes256sha256rsapss"),
];

impl PlantServer {
    /// Starts the server on its own runtime thread; returns once it listens.
    pub fn start(opts: ServerOptions) -> Result<PlantServer, String> {
        let port = if opts.port == 0 {
            crate::sim::broker::free_port().map_err(|e| e.to_string())?
        } else {
            opts.port
        };
        let url = format!("opc.tcp://localhost:{port}/");
        type Ready = Result<(ServerHandle, Arc<SimpleNodeManager>, u16, Vec<NodeId>), String>;
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Ready>();
        let (tags, odd) = (opts.tags.clone(), opts.odd_nodes);
        let url2 = url.clone();
        let thread = std::thread::Builder::new()
            .name("plantflow-opcua-sim".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                rt.block_on(async move {
                    // The server spawns its samplers while it is built.
                    let built =
                        make_builder(&opts, port, &url2)
                            .build()
                            .and_then(|(server, handle)| {
                                let nm = handle
                                    .node_managers()
                                    .get_of_type::<SimpleNodeManager>()
                                    .ok_or("the simulator's node manager is missing")?;
                                let ns = handle
                                    .get_namespace_index(NAMESPACE)
                                    .ok_or("the simulator's namespace is missing")?;
                                let ids = {
                                    let mut space = nm.address_space().write();
                                    populate(&mut space, ns, &tags, odd)
                                };
                                Ok((server, handle, nm, ns, ids))
                            });
                    let (server, handle, nm, ns, ids) = match built {
                        Ok(x) => x,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let listener = match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
                        Ok(l) => l,
                        Err(e) => {
                            let _ =
                                ready_tx.send(Err(format!("OPC UA simulator port {port}: {e}")));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok((handle, nm, ns, ids)));
                    if let Err(e) = server.run_with(listener).await {
                        tracing::error!("OPC UA simulator stopped: {e}");
                    }
                });
            })
            .map_err(|e| e.to_string())?;
        let (handle, nm, ns, ids) = ready_rx
            .recv()
            .map_err(|_| "the OPC UA simulator did not start".to_string())??;
        Ok(PlantServer {
            port,
            handle,
            nm,
            ns,
            ids,
            thread: Some(thread),
        })
    }

    /// The endpoint URL (by `localhost`, the name in the server's certificate).
    pub fn url(&self) -> String {
        format!("opc.tcp://localhost:{}/", self.port)
    }

    /// NodeId of the variable at `path`.
    pub fn node_id(&self, path: &str) -> NodeId {
        NodeId::new(self.ns, path.to_string())
    }

    /// Writes values: `(tag index, value, source time ms, good?)`. Subscribed
    /// clients are notified by the server's sampler.
    pub fn set(&self, updates: &[(usize, f64, i64, StatusCode)]) -> Result<(), String> {
        let values: Vec<(NodeId, DataValue)> = updates
            .iter()
            .filter_map(|(i, v, ts, status)| {
                let id = self.ids.get(*i)?.clone();
                let t = DateTime::from(
                    chrono::DateTime::from_timestamp_millis(*ts).unwrap_or_default(),
                );
                let dv = DataValue {
                    value: Some(Variant::Double(*v)),
                    status: Some(*status),
                    source_timestamp: Some(t),
                    source_picoseconds: None,
                    server_timestamp: Some(DateTime::now()),
                    server_picoseconds: None,
                };
                Some((id, dv))
            })
            .collect();
        // The node manager notifies subscribers with each node's value after
        // the whole call, so a node changes at most once per call.
        let mut round: Vec<&(NodeId, DataValue)> = Vec::new();
        let mut in_round = std::collections::HashSet::new();
        let flush = |round: &mut Vec<&(NodeId, DataValue)>| {
            let r = self.nm.set_values(
                self.handle.subscriptions(),
                round.iter().map(|(id, dv)| (id, None, dv.clone())),
            );
            round.clear();
            r.map_err(|e| format!("setting simulator values: {e}"))
        };
        for v in &values {
            if !in_round.insert(&v.0) {
                flush(&mut round)?;
                in_round.clear();
                in_round.insert(&v.0);
            }
            round.push(v);
        }
        flush(&mut round)?;
        Ok(())
    }

    /// Writes a raw variant to a node of the plant namespace (odd-node tests).
    pub fn set_variant(&self, path: &str, v: Variant, status: StatusCode) -> Result<(), String> {
        let id = self.node_id(path);
        let dv = DataValue {
            value: Some(v),
            status: Some(status),
            source_timestamp: Some(DateTime::now()),
            source_picoseconds: None,
            server_timestamp: Some(DateTime::now()),
            server_picoseconds: None,
        };
        self.nm
            .set_value(self.handle.subscriptions(), &id, None, dv)
            .map_err(|e| format!("setting {path}: {e}"))
    }

    /// Stops the server (connections drop, sessions and subscriptions are gone).
    pub fn stop(mut self) {
        self.handle.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The server's configuration: endpoints, users, limits, the plant namespace.
fn make_builder(opts: &ServerOptions, port: u16, url: &str) -> ServerBuilder {
    let mut user_ids: Vec<String> = Vec::new();
    if opts.anonymous {
        user_ids.push(ANONYMOUS_USER_TOKEN_ID.to_string());
    }
    let mut builder = ServerBuilder::new()
        .application_name("plantflow simulated plant")
        .application_uri("urn:plantflow:sim")
        .product_uri("urn:plantflow:sim")
        .create_sample_keypair(true)
        .pki_dir(&opts.pki_dir)
        .host("localhost")
        .port(port)
        .trust_client_certs(true)
        .discovery_urls(vec![url.to_string()])
        .subscription_poll_interval_ms(opts.min_publishing_interval_ms.clamp(10, 1000))
        .max_array_length(1_000_000)
        .max_message_size(256 << 20)
        .max_chunk_count(4096)
        .with_node_manager(simple_node_manager(
            NamespaceMetadata {
                namespace_uri: NAMESPACE.to_string(),
                ..Default::default()
            },
            "plant",
        ));
    for (i, (u, p)) in opts.users.iter().enumerate() {
        let id = format!("user{i}");
        builder = builder.add_user_token(&id, ServerUserToken::user_pass(u.as_str(), p.as_str()));
        user_ids.push(id);
    }
    let ids: Vec<&str> = user_ids.iter().map(String::as_str).collect();
    if opts.offer_none {
        builder = builder.add_endpoint(
            "none",
            (
                "/",
                SecurityPolicy::None,
                MessageSecurityMode::None,
                &ids[..],
            ),
        );
    }
    for (policy, name) in SECURE_ENDPOINTS {
        for (mode, m) in [
            (MessageSecurityMode::Sign, "sign"),
            (MessageSecurityMode::SignAndEncrypt, "sign_encrypt"),
        ] {
            builder = builder.add_endpoint(format!("{name}_{m}"), ("/", *policy, mode, &ids[..]));
        }
    }
    {
        let limits = builder.limits_mut();
        limits.max_array_length = 1_000_000;
        limits.max_message_size = 256 << 20;
        limits.max_chunk_count = 4096;
        limits.subscriptions.max_monitored_items_per_sub = 100_000;
        limits.subscriptions.max_queued_notifications = 1_000_000;
        limits.subscriptions.max_monitored_item_queue_size = 100_000;
        limits.subscriptions.max_notifications_per_publish = 100_000;
        limits.operational.max_monitored_items_per_call = 5_000;
        // Every change is reported when a client asks for sampling 0.
        limits.subscriptions.min_sampling_interval_ms = 0.0;
        limits.subscriptions.min_publishing_interval_ms = 10.0;
    }
    builder
}

/// Builds `Objects/Plant/...`; returns the variables' NodeIds in tag order.
fn populate(space: &mut AddressSpace, ns: u16, tags: &[SimTag], odd: bool) -> Vec<NodeId> {
    let root = NodeId::new(ns, "Plant");
    space.add_folder(&root, "Plant", "Plant", &NodeId::objects_folder_id());
    let mut folders = std::collections::HashSet::new();
    let folder = |space: &mut AddressSpace,
                  folders: &mut std::collections::HashSet<String>,
                  path: &str|
     -> NodeId {
        let mut parent = root.clone();
        let mut prefix = String::new();
        for seg in path.split('/') {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(seg);
            let id = NodeId::new(ns, format!("{prefix}/"));
            if folders.insert(prefix.clone()) {
                space.add_folder(&id, QualifiedName::new(ns, seg), seg, &parent);
            }
            parent = id;
        }
        parent
    };
    let mut ids = Vec::with_capacity(tags.len());
    for t in tags {
        let (dir, name) = t.path.rsplit_once('/').unwrap_or(("", t.path.as_str()));
        let parent = if dir.is_empty() {
            root.clone()
        } else {
            folder(space, &mut folders, dir)
        };
        let id = NodeId::new(ns, t.path.clone());
        VariableBuilder::new(&id, QualifiedName::new(ns, name), name)
            .data_type(DataTypeId::Double)
            .value(0.0f64)
            .has_type_definition(VariableTypeId::AnalogItemType)
            .organized_by(parent)
            .insert(space);
        // No value until the simulation writes one (what real servers report
        // for a point that has not been read from the device yet).
        if let Some(opcua::server::address_space::NodeType::Variable(v)) = space.find_mut(&id) {
            v.set_data_value(DataValue {
                value: None,
                status: Some(StatusCode::BadWaitingForInitialData),
                source_timestamp: None,
                source_picoseconds: None,
                server_timestamp: Some(DateTime::now()),
                server_picoseconds: None,
            });
        }
        let range = NodeId::new(ns, format!("{}#EURange", t.path));
        VariableBuilder::new(&range, "EURange", "EURange")
            .data_type(DataTypeId::Range)
            .value(Variant::from(ExtensionObject::from_message(Range {
                low: t.eu_low,
                high: t.eu_high,
            })))
            .has_type_definition(VariableTypeId::PropertyType)
            .property_of(id.clone())
            .insert(space);
        let units = NodeId::new(ns, format!("{}#EngineeringUnits", t.path));
        VariableBuilder::new(&units, "EngineeringUnits", "EngineeringUnits")
            .data_type(DataTypeId::EUInformation)
            .value(Variant::from(ExtensionObject::from_message(
                EUInformation {
                    namespace_uri: "http://www.opcfoundation.org/UA/units/un/cefact".into(),
                    unit_id: -1,
                    display_name: t.unit.as_str().into(),
                    description: t.unit.as_str().into(),
                },
            )))
            .has_type_definition(VariableTypeId::PropertyType)
            .property_of(id.clone())
            .insert(space);
        ids.push(id);
    }
    if odd {
        let dir = folder(space, &mut folders, "odd");
        let add = |space: &mut AddressSpace, name: &str, dt: DataTypeId, v: Variant| {
            VariableBuilder::new(
                &NodeId::new(ns, format!("odd/{name}")),
                QualifiedName::new(ns, name),
                name,
            )
            .data_type(dt)
            .value(v)
            .organized_by(dir.clone())
            .insert(space);
        };
        add(space, "text", DataTypeId::String, Variant::from("running"));
        add(
            space,
            "array",
            DataTypeId::Double,
            Variant::from(vec![1.0f64, 2.0, 3.0]),
        );
        add(
            space,
            "range",
            DataTypeId::Range,
            Variant::from(ExtensionObject::from_message(Range {
                low: 0.0,
                high: 1.0,
            })),
        );
        add(space, "flag", DataTypeId::Boolean, Variant::from(true));
        add(space, "count", DataTypeId::Int32, Variant::from(7i32));
    }
    ids
}

/// Tags of a workload-v1-style plant: `site{s}/line{l}/comp{c}/power_kw`.
pub fn plant_tags(n: usize) -> Vec<SimTag> {
    (0..n)
        .map(|i| {
            let (s, l, c) = (i / 1000 + 1, (i / 50) % 20 + 1, i % 50 + 1);
            SimTag::new(&format!("site{s}/line{l}/comp{c:02}/power_kw"), "kW", 200.0)
        })
        .collect()
}

/// Sleeps in small steps until `until` or `stop`.
pub fn sleep_until(until: std::time::Instant, stop: &std::sync::atomic::AtomicBool) {
    while std::time::Instant::now() < until && !stop.load(Relaxed) {
        std::thread::sleep(Duration::from_millis(5).min(until - std::time::Instant::now()));
    }
}

/// Serves the tags of `input/assets.csv` and writes `input/samples.csv`
/// (`ts,tag,value,quality`) into them in file order, paced by event time
/// divided by `speed` (0 = as fast as the server takes them). Quality 0/1/2
/// become Good / UncertainLastUsableValue / BadSensorFailure. Returns the
/// number of values written.
pub fn replay_csv(
    server: &PlantServer,
    tags: &[String],
    samples: &std::path::Path,
    speed: f64,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<u64, String> {
    let index: std::collections::HashMap<&str, usize> = tags
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i))
        .collect();
    let text =
        std::fs::read_to_string(samples).map_err(|e| format!("{}: {e}", samples.display()))?;
    let started = std::time::Instant::now();
    let mut first_ts = None;
    let mut chunk = Vec::with_capacity(512);
    let mut n = 0u64;
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let (Some(ts), Some(i), Some(v)) = (
            f.first().and_then(|s| s.parse::<i64>().ok()),
            f.get(1).and_then(|t| index.get(t.trim())),
            f.get(2).and_then(|s| s.parse::<f64>().ok()),
        ) else {
            continue;
        };
        let status = match f.get(3).map(|s| s.trim()) {
            Some("1") => StatusCode::UncertainLastUsableValue,
            Some("2") => StatusCode::BadSensorFailure,
            _ => StatusCode::Good,
        };
        chunk.push((*i, v, ts, status));
        if chunk.len() == 512 {
            if speed > 0.0 {
                let t0 = *first_ts.get_or_insert(chunk[0].2);
                let due = Duration::from_secs_f64(((ts - t0).max(0) as f64 / 1000.0) / speed);
                sleep_until(started + due, stop);
            }
            if stop.load(Relaxed) {
                break;
            }
            server.set(&chunk)?;
            n += chunk.len() as u64;
            chunk.clear();
        }
    }
    if !stop.load(Relaxed) && !chunk.is_empty() {
        server.set(&chunk)?;
        n += chunk.len() as u64;
    }
    Ok(n)
}
