//! Shared helpers for the integration tests: running a dataflow, reading the
//! Parquet lake back, and comparing numbers.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, Int64Type, TimestampMillisecondType};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

pub fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/workload_v1_small")
}

pub fn dataflow(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("dataflows")
        .join(name)
}

/// Loads `file` with INPUT_DIR / OUT_DIR set to the given directories.
pub fn load(file: &Path, input: &Path, out: &Path) -> plantflow::dataflow::Dataflow {
    let (i, o) = (input.display().to_string(), out.display().to_string());
    let env = move |k: &str| match k {
        "INPUT_DIR" => Some(i.clone()),
        "OUT_DIR" => Some(o.clone()),
        _ => None,
    };
    match plantflow::dataflow::load_with_env(file, &env) {
        Ok(p) => p,
        Err(e) => panic!("{}", e.render()),
    }
}

pub fn run(file: &Path, input: &Path, out: &Path, workers: usize) -> plantflow::run::RunSummary {
    let plan = load(file, input, out);
    plantflow::run::run(
        plan,
        plantflow::run::RunOptions {
            workers,
            follow: false,
            ..Default::default()
        },
    )
    .expect("run succeeds")
}

/// Every committed Parquet file of `table` (hidden in-progress files excluded).
pub fn parquet_files(root: &Path, table: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                let p = e.path();
                let hidden = p.file_name().unwrap().to_string_lossy().starts_with('_');
                if p.is_dir() && !hidden {
                    walk(&p, out);
                } else if p.extension().is_some_and(|x| x == "parquet")
                    && !p.file_name().unwrap().to_string_lossy().starts_with('.')
                {
                    out.push(p);
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(&root.join(table), &mut out);
    out.sort();
    out
}

pub fn batches(root: &Path, table: &str) -> Vec<RecordBatch> {
    parquet_files(root, table)
        .into_iter()
        .flat_map(|f| {
            let file = std::fs::File::open(&f).unwrap();
            ParquetRecordBatchReaderBuilder::try_new(file)
                .unwrap()
                .build()
                .unwrap()
                .map(|b| b.unwrap())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// One `aggregates` row as read back.
#[derive(Clone, Debug, PartialEq)]
pub struct Agg {
    pub count: i64,
    pub mean: f64,
    pub min: f64,
    pub max: f64,
    pub energy_kwh: f64,
    pub cost: f64,
    pub producing: bool,
    pub waste_kwh: f64,
    pub price: f64,
    pub revision: i64,
}

fn f64s(b: &RecordBatch, name: &str) -> Vec<f64> {
    let c = b
        .column_by_name(name)
        .unwrap_or_else(|| panic!("column {name}"));
    c.as_primitive::<Float64Type>().values().to_vec()
}

fn strs(b: &RecordBatch, name: &str) -> Vec<String> {
    let c = b
        .column_by_name(name)
        .unwrap_or_else(|| panic!("column {name}"));
    let s = c.as_string::<i32>();
    (0..s.len()).map(|i| s.value(i).to_string()).collect()
}

fn tss(b: &RecordBatch, name: &str) -> Vec<i64> {
    let c = b
        .column_by_name(name)
        .unwrap_or_else(|| panic!("column {name}"));
    c.as_primitive::<TimestampMillisecondType>()
        .values()
        .to_vec()
}

fn i64s(b: &RecordBatch, name: &str) -> Vec<i64> {
    let c = b
        .column_by_name(name)
        .unwrap_or_else(|| panic!("column {name}"));
    c.as_primitive::<Int64Type>().values().to_vec()
}

/// Every revision of every aggregate, keyed by (tag, window_start).
pub fn all_aggregates(root: &Path) -> Vec<((String, i64), Agg)> {
    let mut out = Vec::new();
    for b in batches(root, "aggregates") {
        let (tag, ws, count) = (strs(&b, "tag"), tss(&b, "window_start"), i64s(&b, "count"));
        let (mean, min, max) = (f64s(&b, "mean"), f64s(&b, "min"), f64s(&b, "max"));
        let (e, c, w, p) = (
            f64s(&b, "energy_kwh"),
            f64s(&b, "cost"),
            f64s(&b, "waste_kwh"),
            f64s(&b, "price_per_kwh"),
        );
        let prod = b.column_by_name("producing").unwrap().as_boolean().clone();
        let rev = i64s(&b, "revision");
        for i in 0..b.num_rows() {
            out.push((
                (tag[i].clone(), ws[i]),
                Agg {
                    count: count[i],
                    mean: mean[i],
                    min: min[i],
                    max: max[i],
                    energy_kwh: e[i],
                    cost: c[i],
                    producing: prod.value(i),
                    waste_kwh: w[i],
                    price: p[i],
                    revision: rev[i],
                },
            ));
        }
    }
    out
}

/// The latest revision of each aggregate.
pub fn latest_aggregates(root: &Path) -> HashMap<(String, i64), Agg> {
    latest_of(all_aggregates(root))
}

/// The latest revision of each aggregate among `rows` (one read of the lake:
/// a test that checks a row count and then reads the latest revisions must
/// take both from the same read, or a file landing in between makes them
/// disagree).
pub fn latest_of(rows: Vec<((String, i64), Agg)>) -> HashMap<(String, i64), Agg> {
    let mut m: HashMap<(String, i64), Agg> = HashMap::new();
    for (k, a) in rows {
        match m.get(&k) {
            Some(old) if old.revision > a.revision => {}
            Some(old) if old.revision == a.revision => {
                panic!("duplicate revision {} for {k:?}", a.revision)
            }
            _ => {
                m.insert(k, a);
            }
        }
    }
    m
}

/// One `actions` row as read back.
#[derive(Clone, Debug)]
pub struct Action {
    pub action_id: String,
    pub asset: String,
    pub period_start: i64,
    pub value: f64,
    pub owner: String,
    pub action_type: String,
    pub value_category: String,
    pub status: String,
    pub evidence: serde_json::Value,
    pub revision: i64,
}

pub fn all_actions(root: &Path) -> Vec<Action> {
    let mut out = Vec::new();
    for b in batches(root, "actions") {
        let (id, asset, ps, v) = (
            strs(&b, "action_id"),
            strs(&b, "asset"),
            tss(&b, "period_start"),
            f64s(&b, "value"),
        );
        let (o, t, vc, st, ev) = (
            strs(&b, "owner"),
            strs(&b, "action_type"),
            strs(&b, "value_category"),
            strs(&b, "status"),
            strs(&b, "evidence"),
        );
        let rev = i64s(&b, "revision");
        for i in 0..b.num_rows() {
            out.push(Action {
                action_id: id[i].clone(),
                asset: asset[i].clone(),
                period_start: ps[i],
                value: v[i],
                owner: o[i].clone(),
                action_type: t[i].clone(),
                value_category: vc[i].clone(),
                status: st[i].clone(),
                evidence: serde_json::from_str(&ev[i]).unwrap(),
                revision: rev[i],
            });
        }
    }
    out
}

/// Latest revision of each action, keyed by (asset, period_start); withdrawn ones dropped.
pub fn latest_actions(root: &Path) -> HashMap<(String, i64), Action> {
    let mut by_id: HashMap<String, Action> = HashMap::new();
    for a in all_actions(root) {
        match by_id.get(&a.action_id) {
            Some(old) if old.revision > a.revision => {}
            _ => {
                by_id.insert(a.action_id.clone(), a);
            }
        }
    }
    by_id
        .into_values()
        .filter(|a| a.status != "withdrawn")
        .map(|a| ((a.asset.clone(), a.period_start), a))
        .collect()
}

/// Dead-letter rows: (reason, raw).
pub fn dead_letters(root: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for b in batches(root, "dead_letter") {
        let (r, raw) = (strs(&b, "reason"), strs(&b, "raw"));
        out.extend(r.into_iter().zip(raw));
    }
    out
}

pub fn close(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs()) || (a - b).abs() < 1e-12
}

#[track_caller]
pub fn assert_close(got: f64, want: f64, what: &str) {
    assert!(close(got, want), "{what}: got {got}, want {want}");
}

/// A CA made now and a `localhost` server certificate it signed, as PEM
/// files in `dir`: `ca.pem`, `server.pem`, `server.key` (rcgen).
pub fn test_ca(dir: &Path, ca_name: &str) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, ca_name);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let srv_key = rcgen::KeyPair::generate().unwrap();
    let srv = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&srv_key, &issuer)
        .unwrap();
    std::fs::write(dir.join("server.pem"), srv.pem()).unwrap();
    std::fs::write(dir.join("server.key"), srv_key.serialize_pem()).unwrap();
}

/// Kills the child if the test fails before it exits on its own.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

impl KillOnDrop {
    /// Sends SIGTERM (a clean shutdown) and waits for the exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.0.id().to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -TERM {pid}");
        self.0.wait().unwrap()
    }

    /// [`KillOnDrop::terminate`], then the summary the run printed on its
    /// stdout (piped).
    pub fn stop_for_summary(&mut self) -> (std::process::ExitStatus, String) {
        let status = self.terminate();
        let mut out = String::new();
        std::io::Read::read_to_string(self.0.stdout.as_mut().unwrap(), &mut out).unwrap();
        (status, out)
    }
}

pub fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    loop {
        if let Some(x) = f() {
            return x;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Starts `plantflow run --follow <df>` with INPUT_DIR / OUT_DIR set; killed on drop.
pub fn spawn_follow(df: &Path, input: &Path, out: &Path) -> KillOnDrop {
    spawn_follow_workers(df, input, out, 1)
}

/// [`spawn_follow`] on `workers` timely workers.
/// Drained when stopped: these tests end a followed run to see its final lake.
pub fn spawn_follow_workers(df: &Path, input: &Path, out: &Path, workers: usize) -> KillOnDrop {
    KillOnDrop(
        std::process::Command::new(env!("CARGO_BIN_EXE_plantflow"))
            .args([
                "run",
                "--follow",
                "--drain",
                "--workers",
                &workers.to_string(),
            ])
            .arg(df)
            .env("INPUT_DIR", input)
            .env("OUT_DIR", out)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    )
}

/// The expected aggregates of the fixture (DuckDB oracle), keyed by (tag, window_start).
pub fn expected_aggregates() -> HashMap<(String, i64), Agg> {
    let mut r = csv::Reader::from_path(fixture_dir().join("expected/aggregates.csv")).unwrap();
    let mut m = HashMap::new();
    for rec in r.records() {
        let rec = rec.unwrap();
        let f = |i: usize| rec[i].parse::<f64>().unwrap();
        m.insert(
            (rec[0].to_string(), rec[1].parse().unwrap()),
            Agg {
                count: rec[2].parse().unwrap(),
                mean: f(3),
                min: f(4),
                max: f(5),
                energy_kwh: f(6),
                cost: f(7),
                producing: &rec[8] == "true",
                waste_kwh: f(9),
                price: f64::NAN,
                revision: 0,
            },
        );
    }
    m
}

pub fn assert_aggregates_equal(
    got: &HashMap<(String, i64), Agg>,
    want: &HashMap<(String, i64), Agg>,
) {
    let mut gk: Vec<_> = got.keys().collect();
    let mut wk: Vec<_> = want.keys().collect();
    gk.sort();
    wk.sort();
    assert_eq!(gk, wk, "aggregate keys differ");
    for (k, w) in want {
        let g = &got[k];
        assert_eq!(g.count, w.count, "count of {k:?}");
        assert_eq!(g.producing, w.producing, "producing of {k:?}");
        assert_close(g.mean, w.mean, &format!("mean of {k:?}"));
        assert_close(g.min, w.min, &format!("min of {k:?}"));
        assert_close(g.max, w.max, &format!("max of {k:?}"));
        assert_close(g.energy_kwh, w.energy_kwh, &format!("energy of {k:?}"));
        assert_close(g.cost, w.cost, &format!("cost of {k:?}"));
        assert_close(g.waste_kwh, w.waste_kwh, &format!("waste of {k:?}"));
    }
}

/// Checks the latest actions against the fixture's oracle; returns how many.
pub fn assert_actions_match_oracle(out: &Path) -> usize {
    let actions = latest_actions(out);
    let mut r = csv::Reader::from_path(fixture_dir().join("expected/actions.csv")).unwrap();
    let mut n = 0;
    for rec in r.records() {
        let rec = rec.unwrap();
        let key = (rec[0].to_string(), rec[1].parse::<i64>().unwrap());
        let a = actions
            .get(&key)
            .unwrap_or_else(|| panic!("missing action {key:?}"));
        assert_close(a.value, rec[3].parse().unwrap(), "waste_cost");
        assert_close(
            a.evidence["measures"]["waste_kwh"].as_f64().unwrap(),
            rec[2].parse().unwrap(),
            "waste_kwh",
        );
        assert_eq!(
            (
                a.owner.as_str(),
                a.action_type.as_str(),
                a.value_category.as_str()
            ),
            ("operations", "operational_change", "energy_cost")
        );
        n += 1;
    }
    assert_eq!(actions.len(), n, "no actions beyond the oracle's");
    n
}

/// A plain MQTT peer for tests (rumqttc v3.1.1 or v5, its own runtime):
/// publishes and waits for the broker's acks, or collects what it receives.
pub mod peer {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

    fn host_port(url: &str) -> (String, u16) {
        let hp = url.trim_start_matches("mqtt://");
        let (h, p) = hp.rsplit_once(':').unwrap();
        (h.to_string(), p.parse().unwrap())
    }

    fn qos(q: u8) -> QoS {
        match q {
            0 => QoS::AtMostOnce,
            1 => QoS::AtLeastOnce,
            _ => QoS::ExactlyOnce,
        }
    }

    /// Publishes every message and returns once the broker acknowledged all
    /// of them (QoS ≥ 1) or they were written (QoS 0).
    pub fn publish_all(url: &str, id: &str, msgs: Vec<(String, Vec<u8>)>, q: u8) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let (h, p) = host_port(url);
            let mut o = MqttOptions::new(id, h, p);
            o.set_keep_alive(Duration::from_secs(30))
                .set_max_packet_size(64 << 20, 64 << 20);
            let (c, mut lp) = AsyncClient::new(o, 1000);
            let n = msgs.len();
            tokio::spawn(async move {
                for (t, m) in msgs {
                    c.publish(t, qos(q), false, m).await.unwrap();
                }
            });
            let (mut acked, mut sent) = (0, 0);
            while (q > 0 && acked < n) || (q == 0 && sent < n) {
                match tokio::time::timeout(Duration::from_secs(30), lp.poll()).await {
                    Ok(Ok(Event::Incoming(Packet::PubAck(_) | Packet::PubComp(_)))) => acked += 1,
                    Ok(Ok(Event::Outgoing(rumqttc::Outgoing::Publish(_)))) => sent += 1,
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => panic!("publisher connection failed: {e}"),
                    Err(_) => panic!("publisher stalled: {acked}/{n} acked"),
                }
            }
            // Let the last packets leave before the connection drops.
            let _ = tokio::time::timeout(Duration::from_millis(200), lp.poll()).await;
        });
    }

    /// Received (topic, payload) pairs.
    pub type Received = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

    /// Collects (topic, payload) of everything published on `filter`, on a thread.
    pub struct Collector {
        pub got: Received,
        pub subscribed: Arc<std::sync::atomic::AtomicBool>,
    }

    pub fn collect(url: &str, id: &str, filter: &str) -> Collector {
        let got = Arc::new(Mutex::new(Vec::new()));
        let subscribed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (g, s) = (got.clone(), subscribed.clone());
        let (h, p) = host_port(url);
        let (id, filter) = (id.to_string(), filter.to_string());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let mut o = MqttOptions::new(id, h, p);
                o.set_keep_alive(Duration::from_secs(30))
                    .set_max_packet_size(64 << 20, 64 << 20);
                let (c, mut lp) = AsyncClient::new(o, 100);
                c.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
                loop {
                    match lp.poll().await {
                        Ok(Event::Incoming(Packet::SubAck(_))) => {
                            s.store(true, std::sync::atomic::Ordering::SeqCst)
                        }
                        Ok(Event::Incoming(Packet::Publish(p))) => {
                            g.lock().unwrap().push((p.topic, p.payload.to_vec()))
                        }
                        Ok(_) => {}
                        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
            });
        });
        super::wait_for("the collector's subscription", || {
            subscribed
                .load(std::sync::atomic::Ordering::SeqCst)
                .then_some(())
        });
        Collector { got, subscribed }
    }
}

/// Runs a plan in-process on a thread until `stop` is set; returns the stats
/// (to watch progress) and the join handle (the summary).
pub fn start_run(
    plan: plantflow::dataflow::Dataflow,
    workers: usize,
) -> (
    std::sync::Arc<plantflow::stats::Stats>,
    std::sync::Arc<std::sync::atomic::AtomicBool>,
    std::thread::JoinHandle<Result<plantflow::run::RunSummary, plantflow::run::RunError>>,
) {
    let stats = std::sync::Arc::new(plantflow::stats::Stats::default());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (s, st) = (stats.clone(), stop.clone());
    let h = std::thread::spawn(move || {
        plantflow::run::run(
            plan,
            plantflow::run::RunOptions {
                workers,
                follow: false,
                stop: Some(st),
                stats: Some(s),
                tally_actions_only: false,
                shutdown_timeout: None,
                reset_state: false,
                no_input_log: false,
                // A live stream has no end: setting `stop` ends the run,
                // closing every window (as the oracles do).
                drain: true,
                cluster: None,
            },
        )
    });
    (stats, stop, h)
}

/// Loads a dataflow with extra environment variables.
pub fn load_env(file: &Path, vars: &[(&str, String)]) -> plantflow::dataflow::Dataflow {
    let vars: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let env = move |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    match plantflow::dataflow::load_with_env(file, &env) {
        Ok(p) => p,
        Err(e) => panic!("{}", e.render()),
    }
}

/// The fixture's samples as `plant/<tag>` JSON messages, in file order.
pub fn fixture_messages() -> Vec<(String, Vec<u8>)> {
    let text = std::fs::read_to_string(fixture_dir().join("samples.csv")).unwrap();
    text.lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            let payload = format!(r#"{{"ts":{},"value":{},"quality":{}}}"#, f[0], f[2], f[3]);
            (format!("plant/{}", f[1]), payload.into_bytes())
        })
        .collect()
}

/// Dead letters of message sources: (reason, topic, raw, raw_encoding).
pub fn message_dead_letters(root: &Path) -> Vec<(String, String, String, String)> {
    let mut out = Vec::new();
    for b in batches(root, "dead_letter") {
        let (r, t, raw, e) = (
            strs(&b, "reason"),
            strs(&b, "topic"),
            strs(&b, "raw"),
            strs(&b, "raw_encoding"),
        );
        for i in 0..r.len() {
            out.push((r[i].clone(), t[i].clone(), raw[i].clone(), e[i].clone()));
        }
    }
    out
}

/// A dataflow file in `dir` around one source table (TOML text), with the
/// given assets, a flat 0.2/kWh tariff, 1-minute windows (`drop_bad`) and a
/// Parquet sink under `dir/out`; loaded with `vars` as the environment.
pub fn source_plan(
    dir: &Path,
    source: &str,
    assets: &str,
    vars: &[(&str, String)],
) -> plantflow::dataflow::Dataflow {
    let fx = dir.join("fx");
    std::fs::create_dir_all(&fx).unwrap();
    std::fs::write(fx.join("assets.csv"), assets).unwrap();
    std::fs::write(
        fx.join("tariff.csv"),
        "start_hour,end_hour,price_per_kwh\n0,24,0.2\n",
    )
    .unwrap();
    let text = format!(
        r#"name = "source_test"
currency = "EUR"

{source}

[context.assets]
path = "{fx}/assets.csv"

[context.tariff]
path = "{fx}/tariff.csv"

[window]
size = "1m"
allowed_lateness = "2s"
quality = "drop_bad"
retention = "2h"

[metrics]
energy_kwh = "mean / 60.0"
cost = "energy_kwh * price_per_kwh"
waste_kwh = "0.0"

[[sinks]]
type = "parquet"
id = "lake"
path = "{out}"
"#,
        fx = fx.display(),
        out = dir.join("out").display(),
    );
    let f = dir.join("df.toml");
    std::fs::write(&f, text).unwrap();
    load_env(&f, vars)
}

// --- Generic table rows as JSON maps (any table) ---------------------------

pub fn col_str(b: &RecordBatch, n: &str) -> Vec<String> {
    let c = b.column_by_name(n).unwrap_or_else(|| panic!("column {n}"));
    let c = c.as_string::<i32>();
    (0..c.len()).map(|i| c.value(i).to_string()).collect()
}
pub fn col_f64(b: &RecordBatch, n: &str) -> Vec<Option<f64>> {
    let c = b.column_by_name(n).unwrap().as_primitive::<Float64Type>();
    (0..c.len())
        .map(|i| (!c.is_null(i)).then(|| c.value(i)))
        .collect()
}
pub fn col_i64(b: &RecordBatch, n: &str) -> Vec<i64> {
    let c = b.column_by_name(n).unwrap().as_primitive::<Int64Type>();
    (0..c.len()).map(|i| c.value(i)).collect()
}
pub fn col_ts(b: &RecordBatch, n: &str) -> Vec<i64> {
    let c = b
        .column_by_name(n)
        .unwrap()
        .as_primitive::<TimestampMillisecondType>();
    (0..c.len()).map(|i| c.value(i)).collect()
}
pub fn col_bool(b: &RecordBatch, n: &str) -> Vec<bool> {
    let c = b.column_by_name(n).unwrap().as_boolean();
    (0..c.len()).map(|i| c.value(i)).collect()
}

/// Every row of a table as name → JSON value, with its revision.
pub fn rows(root: &Path, table: &str) -> Vec<HashMap<String, serde_json::Value>> {
    let mut out = Vec::new();
    for b in batches(root, table) {
        let schema = b.schema();
        let mut cols: Vec<(String, Vec<serde_json::Value>)> = Vec::new();
        for f in schema.fields() {
            let n = f.name();
            let vals: Vec<serde_json::Value> = match f.data_type() {
                arrow::datatypes::DataType::Utf8 => {
                    col_str(&b, n).into_iter().map(Into::into).collect()
                }
                arrow::datatypes::DataType::Float64 => {
                    col_f64(&b, n).into_iter().map(Into::into).collect()
                }
                arrow::datatypes::DataType::Int64 => {
                    let c = b.column_by_name(n).unwrap().as_primitive::<Int64Type>();
                    (0..c.len())
                        .map(|i| (!c.is_null(i)).then(|| c.value(i)).into())
                        .collect()
                }
                arrow::datatypes::DataType::Boolean => {
                    col_bool(&b, n).into_iter().map(Into::into).collect()
                }
                arrow::datatypes::DataType::Timestamp(..) => {
                    let c = b
                        .column_by_name(n)
                        .unwrap()
                        .as_primitive::<TimestampMillisecondType>();
                    (0..c.len())
                        .map(|i| (!c.is_null(i)).then(|| c.value(i)).into())
                        .collect()
                }
                other => panic!("unexpected type {other}"),
            };
            cols.push((n.clone(), vals));
        }
        for i in 0..b.num_rows() {
            out.push(
                cols.iter()
                    .map(|(n, v)| (n.clone(), v[i].clone()))
                    .collect(),
            );
        }
    }
    out
}

/// Latest revision per key column.
pub fn latest(
    rows: Vec<HashMap<String, serde_json::Value>>,
    key: &[&str],
) -> HashMap<String, HashMap<String, serde_json::Value>> {
    let mut m: HashMap<String, HashMap<String, serde_json::Value>> = HashMap::new();
    for r in rows {
        let k = key
            .iter()
            .map(|c| r[*c].to_string())
            .collect::<Vec<_>>()
            .join("|");
        let newer = m
            .get(&k)
            .is_none_or(|o| o["revision"].as_i64() <= r["revision"].as_i64());
        if newer {
            m.insert(k, r);
        }
    }
    m
}

/// What `state inspect` says the input log of `df` holds: (samples, restarts).
pub fn logged(df: &Path, env: &[(&str, String)]) -> Option<(u64, u64)> {
    log_counts(df, env).map(|c| (c.samples, c.restarts))
}

/// What `state inspect` says the input log of `df` holds.
pub struct LogCounts {
    pub samples: u64,
    pub restarts: u64,
    pub context: u64,
}

pub fn log_counts(df: &Path, env: &[(&str, String)]) -> Option<LogCounts> {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_plantflow"))
        .args(["state", "inspect"])
        .arg(df)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let line = text.lines().find(|l| l.trim_start().starts_with("holds"))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let num = |after: &str| -> Option<u64> {
        let i = words
            .iter()
            .position(|w| w.trim_end_matches(',') == after)?;
        words.get(i - 1)?.parse().ok()
    };
    Some(LogCounts {
        samples: num("samples")?,
        restarts: num("restarts")?,
        context: num("context")?,
    })
}

/// A node reading the fixture stream (90,000 QoS 1 messages, persistent
/// session as `client`) from the broker at `url` (peers publish at
/// `peer_url`) is killed with SIGKILL `kills` times while the stream is
/// published, and started again each time. Its lake must equal the DuckDB
/// oracle's, with no (key, revision) twice, and its input log hold each
/// message once.
pub fn mqtt_stream_killed(url: &str, peer_url: &str, client: &str, kills: usize) {
    mqtt_stream_stopped(url, peer_url, client, kills, Stop::Kill);
}

/// How a node is stopped: SIGKILL, or SIGTERM (a clean stop, as for an upgrade).
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Stop {
    Kill,
    Term,
}

/// `workload_v1_mqtt.toml` written to `dir`, committing the lake and
/// checkpointing every 100 ms, so stops land before, inside and after
/// them; its samples on a shared subscription (`share`) when `shared`.
pub fn mqtt_dataflow_often(dir: &Path, shared: bool) -> PathBuf {
    let text = std::fs::read_to_string(dataflow("workload_v1_mqtt.toml")).unwrap();
    let mut often = text
        .replace("roll_interval = \"1m\"", "roll_interval = \"100ms\"")
        .replace(
            "size = \"1m\"",
            "size = \"1m\"\ncheckpoint_interval = \"100ms\"",
        );
    if shared {
        let topic = "topic = \"plant/{tag+}\"";
        often = often.replace(topic, &format!("{topic}\nshare = \"plantflow\""));
    }
    assert_ne!(often, text);
    let df = dir.join("workload_v1_mqtt.toml");
    std::fs::write(&df, often).unwrap();
    df
}

/// `mqtt_stream_killed` with the node stopped `how`, and checkpoints and
/// commits many times a second, so stops land before, inside and after them.
pub fn mqtt_stream_stopped(url: &str, peer_url: &str, client: &str, stops: usize, how: Stop) {
    use rand::{Rng, SeedableRng};
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let df = mqtt_dataflow_often(dir.path(), false);
    let env = vec![
        ("INPUT_DIR", fixture_dir().display().to_string()),
        ("OUT_DIR", out.display().to_string()),
        ("MQTT_URL", url.to_string()),
        ("MQTT_CLIENT_ID", client.to_string()),
    ];
    let start = || follow_node(&df, &env, dir.path(), 2);
    // The last node drains when it is stopped: its stream has no end, and
    // the oracle closes every window.
    let start_last = || follow_node_with(&df, &env, dir.path(), 2, &["--drain"]);
    let mut node = start();
    // A first connect has no session yet: wait for the subscription.
    std::thread::sleep(Duration::from_millis(1500));
    let msgs = fixture_messages();
    let url = peer_url.to_string();
    let publisher = std::thread::spawn(move || {
        for chunk in msgs.chunks(3000) {
            peer::publish_all(&url, "kill-publisher", chunk.to_vec(), 1);
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(31);
    for i in 0..stops {
        std::thread::sleep(Duration::from_millis(rng.random_range(150..700)));
        match how {
            Stop::Kill => {
                let _ = node.0.kill();
                let _ = node.0.wait();
            }
            Stop::Term => {
                let status = node.terminate();
                assert!(status.success(), "a clean stop: {status:?}");
            }
        }
        node = if i + 1 == stops {
            start_last()
        } else {
            start()
        };
    }
    publisher.join().unwrap();
    // The manifest's 77 bad-quality rows are dropped before the log.
    let (samples, restarts) = wait_for("the node to log the whole stream", || {
        logged(&df, &env).filter(|(s, _)| *s >= 90_000 - 77)
    });
    assert_eq!(samples, 90_000 - 77, "each message once in the log");
    // A node killed while still replaying its log never logs its own start.
    assert!(
        restarts >= 1,
        "{restarts} restarts went on after their replay"
    );
    let status = node.terminate();
    assert!(status.success(), "{status:?}");
    assert_aggregates_equal(&latest_aggregates(&out), &expected_aggregates());
    assert!(assert_actions_match_oracle(&out) > 0);
    assert_no_revision_twice(&out);
}

/// The lake's versioned tables and the columns that key their rows.
pub const KEYED: &[(&str, &[&str])] = &[
    ("aggregates", &["tag", "window_start"]),
    ("actions", &["action_id"]),
    ("outcomes", &["action_id"]),
];

/// No (key, revision) of a versioned table is in the lake at `out` twice.
pub fn assert_no_revision_twice(out: &Path) {
    for (t, key) in KEYED {
        let mut seen = std::collections::HashSet::new();
        for r in rows(out, t) {
            let k: Vec<String> = key.iter().map(|c| r[*c].to_string()).collect();
            assert!(
                seen.insert((k.clone(), r["revision"].as_i64())),
                "{t}: ({k:?}, revision) twice"
            );
        }
    }
}

/// The latest row of every key of every versioned table is the same in
/// both lakes.
pub fn assert_latest_equal(got: &Path, want: &Path) {
    for (t, key) in KEYED {
        let (g, w) = (latest(rows(got, t), key), latest(rows(want, t), key));
        assert_eq!(g.len(), w.len(), "{t}");
        for (k, row) in &w {
            assert_eq!(g.get(k), Some(row), "{t} {k}");
        }
    }
}

/// `plantflow run --follow -w <workers> <df>` with `env`, in `cwd` (its
/// relative paths stay out of the repository), killed when dropped.
pub fn follow_node(df: &Path, env: &[(&str, String)], cwd: &Path, workers: usize) -> KillOnDrop {
    follow_node_with(df, env, cwd, workers, &[])
}

/// [`follow_node`] with more arguments (`--drain`).
pub fn follow_node_with(
    df: &Path,
    env: &[(&str, String)],
    cwd: &Path,
    workers: usize,
    args: &[&str],
) -> KillOnDrop {
    KillOnDrop(
        std::process::Command::new(env!("CARGO_BIN_EXE_plantflow"))
            .args(["run", "--follow", "-w", &workers.to_string()])
            .args(args)
            .arg(df)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .current_dir(cwd)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// Unmounts a small file system when the test ends, however it ends.
pub struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// A tmpfs of `size` (`64k`) at `dir` (created): a disk that fills. None,
/// with a SKIPPED line, where mounting needs a root this run lacks (CI
/// runs as root).
pub fn small_disk(dir: &Path, size: &str) -> Option<Mounted> {
    std::fs::create_dir_all(dir).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .output()
        .unwrap();
    if !mounted.status.success() {
        eprintln!(
            "SKIPPED: cannot mount a tmpfs here: {}",
            String::from_utf8_lossy(&mounted.stderr)
        );
        return None;
    }
    Some(Mounted(dir.to_path_buf()))
}

/// The time of the first row of a samples CSV file's `text` (after its
/// header).
pub fn first_ts(text: &str) -> i64 {
    let line = text.lines().nth(1).expect("a row after the header");
    line.split(',').next().unwrap().parse().unwrap()
}

/// The lake at `out` has a gaps row for the time its node was down.
pub fn assert_downtime_gap(out: &Path) {
    let gaps = rows(out, "gaps");
    assert!(
        gaps.iter()
            .any(|g| g["reason"].as_str().unwrap().contains("plantflow was down")),
        "{gaps:?}"
    );
}

/// Runs `cmd` (stdout discarded, stderr captured while it runs) to its end,
/// killed if it outlives [`wait_for`]'s bound (`what` names it then): its
/// exit status and stderr.
pub fn run_to_end(
    what: &str,
    cmd: &mut std::process::Command,
) -> (std::process::ExitStatus, String) {
    let mut child = KillOnDrop(
        cmd.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut pipe = child.0.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut pipe, &mut s);
        s
    });
    let status = wait_for(what, || child.0.try_wait().unwrap());
    (status, reader.join().unwrap())
}

/// A child's stderr lines as they come (each also echoed to this test's
/// stderr), kept, so a wait finds a line that came before another's.
pub struct Lines {
    rx: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Lines {
    /// Reads `child`'s stderr (piped) line by line.
    pub fn of(child: &mut KillOnDrop) -> Lines {
        use std::io::BufRead;
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let err = child.0.stderr.take().unwrap();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(err).lines().map_while(Result::ok) {
                eprintln!("{l}");
                let _ = tx.send(l);
            }
        });
        Lines {
            rx,
            seen: Vec::new(),
        }
    }

    /// Waits until a line holding `needle` has come.
    pub fn wait_for(&mut self, needle: &str) {
        wait_for(needle, || {
            self.seen.extend(self.rx.try_iter());
            self.seen.iter().any(|l| l.contains(needle)).then_some(())
        })
    }

    /// Every line so far, one text.
    pub fn all(&mut self) -> String {
        self.seen.extend(self.rx.try_iter());
        self.seen.join("\n")
    }
}

/// `plantflow run --follow <args> <df>` with `env`, in `cwd`, killed when
/// dropped: stdout piped (the summary, see [`KillOnDrop::stop_for_summary`]),
/// stderr read line by line.
pub fn follow_node_lines(
    df: &Path,
    env: &[(&str, String)],
    cwd: &Path,
    args: &[&str],
) -> (KillOnDrop, Lines) {
    let mut child = KillOnDrop(
        std::process::Command::new(env!("CARGO_BIN_EXE_plantflow"))
            .args(["run", "--follow"])
            .args(args)
            .arg(df)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .current_dir(cwd)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let lines = Lines::of(&mut child);
    (child, lines)
}

/// `GET path` on 127.0.0.1:`port` over HTTP/1.1: the status code and the
/// body (`(0, "")` while nothing answers).
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    http_request(port, "GET", path, &[], "")
}

/// A request on 127.0.0.1:`port` over HTTP/1.1 with `headers` and `body`:
/// the status code and the body (`(0, "")` while nothing answers).
pub fn http_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    let _ = write!(s, "{head}\r\n{body}");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

/// `plantflow validate df` (with `INPUT_DIR` = `input`) fails with exit 78,
/// `message`, and the file and line of the last line setting `key`.
pub fn assert_config_error(df: &Path, input: &Path, key: &str, message: &str) {
    let text = std::fs::read_to_string(df).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let line = lines
        .iter()
        .rposition(|l| l.starts_with(&format!("{key} =")))
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("no `{key} =` in {text}"));
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_plantflow"))
        .arg("validate")
        .arg(df)
        .env("INPUT_DIR", input)
        .env("OUT_DIR", input.join("out"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(78), "{key}: {stderr}");
    assert!(stderr.contains(message), "{key}: {stderr}");
    assert!(
        stderr.contains(&format!("{}:{line}:", df.display())),
        "{key}: expected line {line}: {stderr}"
    );
}

/// `plantflow gen workload` into `<dir>/in`: `tags` tags for `seconds`.
pub fn gen_workload(dir: &Path, tags: u32, seconds: u32) -> PathBuf {
    let input = dir.join("in");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_plantflow"))
        .args(["gen", "workload", "--tags", &tags.to_string()])
        .args(["--seconds", &seconds.to_string(), "--out"])
        .arg(&input)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    input
}

/// Runs `cmd` (output discarded) and SIGKILLs it after `after`.
pub fn kill_after(cmd: &mut std::process::Command, after: std::time::Duration) {
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(after);
    let _ = child.kill();
    let _ = child.wait();
}

/// A field-device node (`df`, logged, in `dir`) SIGKILLed once `n`
/// samples are in its input log and started again with `--drain` until
/// `n` more are: the downtime is a gap row and the lake counts every
/// logged sample once. Returns the lake's latest aggregates.
pub fn killed_and_restarted(df: &Path, dir: &Path, n: u64) -> HashMap<(String, i64), Agg> {
    let mut node = follow_node(df, &[], dir, 1);
    wait_for("samples in the input log", || {
        logged(df, &[]).filter(|(got, _)| *got >= n)
    });
    let _ = node.0.kill();
    let _ = node.0.wait();
    let (before, _) = logged(df, &[]).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let mut node = follow_node_with(df, &[], dir, 1, &["--drain"]);
    wait_for("samples after the restart", || {
        logged(df, &[]).filter(|(got, r)| *got >= before + n && *r >= 1)
    });
    assert!(node.terminate().success());
    let out = dir.join("out");
    assert_downtime_gap(&out);
    let (logged_n, _) = logged(df, &[]).unwrap();
    let aggs = latest_aggregates(&out);
    let counted: i64 = aggs.values().map(|a| a.count).sum();
    assert_eq!(counted as u64, logged_n, "every logged sample once");
    aggs
}

/// `processes` processes of `workload_v1_mqtt.toml` (its samples route a
/// shared subscription) on the broker at `url` (plantflow's side; the
/// fixture is published through `peer_url`), writing the lake `out`: the
/// fixture's 90,000 messages are published once every process has
/// connected, and the processes are stopped once they have read them all
/// together. Returns each process's rows read.
pub fn mqtt_cluster(
    url: &str,
    peer_url: &str,
    processes: usize,
    dir: &Path,
    out: &Path,
) -> Vec<u64> {
    let text = std::fs::read_to_string(dataflow("workload_v1_mqtt.toml")).unwrap();
    let shared = text.replace(
        "topic = \"plant/{tag+}\"",
        "topic = \"plant/{tag+}\"\nshare = \"plantflow\"",
    );
    assert_ne!(shared, text);
    let df = dir.join("workload_v1_mqtt.toml");
    std::fs::write(&df, shared).unwrap();
    // The same ids for 2 then 3 processes on one broker: a process's stored
    // session stays a member of the shared group while it is away, and the
    // broker would queue its share there.
    let client = format!("pf-cluster-{}", std::process::id());
    let vars = vec![
        ("INPUT_DIR", fixture_dir().display().to_string()),
        ("OUT_DIR", out.display().to_string()),
        ("MQTT_URL", url.to_string()),
        ("MQTT_CLIENT_ID", client),
    ];
    let c = LocalCluster::start(&df, processes, dir, |_| vars.clone());
    c.wait_logged("MQTT connected");
    // The subscription goes out just after the connection.
    std::thread::sleep(std::time::Duration::from_millis(500));
    peer::publish_all(peer_url, "fixture-publisher", fixture_messages(), 1);
    c.stop_after(90_000)
}

/// [`mqtt_cluster`] with `n` processes: every message is read once, every
/// process reads a share (the broker split the stream), and the lake equals
/// the DuckDB oracle's aggregates and actions.
pub fn assert_mqtt_cluster(url: &str, peer_url: &str, n: usize) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("lake");
    let per = mqtt_cluster(url, peer_url, n, dir.path(), &out);
    assert_eq!(
        per.iter().sum::<u64>(),
        90_000,
        "each message once: {per:?}"
    );
    assert!(
        per.iter().all(|r| *r > 0),
        "the broker split the stream: {per:?}"
    );
    assert_aggregates_equal(&latest_aggregates(&out), &expected_aggregates());
    assert!(assert_actions_match_oracle(&out) > 0);
}

/// A hostfile in `dir` naming `n` free loopback ports; returns it and them.
pub fn hostfile(dir: &Path, n: usize) -> (PathBuf, Vec<u16>) {
    let ports: Vec<u16> = (0..n)
        .map(|_| plantflow::sim::broker::free_port().unwrap())
        .collect();
    let path = dir.join("hosts");
    let text: String = ports.iter().map(|p| format!("127.0.0.1:{p}\n")).collect();
    std::fs::write(&path, text).unwrap();
    (path, ports)
}

/// Processes of one cluster (`run --drain --processes N`), each logging at
/// info level to its own file.
pub struct LocalCluster {
    children: Vec<(KillOnDrop, PathBuf)>,
}

impl LocalCluster {
    /// Starts `processes` processes of `df` on loopback ports, process `i`
    /// with the environment `vars(i)`.
    pub fn start(
        df: &Path,
        processes: usize,
        dir: &Path,
        vars: impl Fn(usize) -> Vec<(&'static str, String)>,
    ) -> LocalCluster {
        Self::start_with(df, (processes, "--drain"), dir, vars)
    }

    /// [`LocalCluster::start`] with another flag of `run` than `--drain`.
    pub fn start_with(
        df: &Path,
        (processes, flag): (usize, &str),
        dir: &Path,
        vars: impl Fn(usize) -> Vec<(&'static str, String)>,
    ) -> LocalCluster {
        use std::process::{Command, Stdio};
        let (hosts, _) = hostfile(dir, processes);
        let children = (0..processes)
            .map(|i| {
                let err = dir.join(format!("stderr-{i}"));
                let child = Command::new(env!("CARGO_BIN_EXE_plantflow"))
                    .arg("run")
                    .args(flag.split_whitespace())
                    .args(["--processes", &processes.to_string()])
                    .args(["--process", &i.to_string(), "--hostfile"])
                    .arg(&hosts)
                    .arg(df)
                    .env("PLANTFLOW_LOG", "info,rumqttd=off,opcua_client=warn,opcua_server=warn,opcua_core=warn,opcua_crypto=warn")
                    .envs(vars(i))
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(std::fs::File::create(&err).unwrap())
                    .spawn()
                    .unwrap();
                (KillOnDrop(child), err)
            })
            .collect();
        LocalCluster { children }
    }

    /// Sends process `i` a signal (`"TERM"`, `"STOP"`).
    pub fn signal(&self, i: usize, signal: &str) {
        let pid = self.children[i].0 .0.id().to_string();
        let sent = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -{signal} {pid}");
    }

    /// Kills process `i` (SIGKILL) and reaps it.
    pub fn kill(&mut self, i: usize) {
        let child = &mut self.children[i].0 .0;
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Waits for process `i`'s exit.
    pub fn wait(&mut self, i: usize) -> std::process::ExitStatus {
        let child = &mut self.children[i].0 .0;
        wait_for("the process's exit", || child.try_wait().unwrap())
    }

    /// Process `i`'s log so far.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.children[i].1).unwrap_or_default()
    }

    /// Waits until every process's log has `needle`.
    pub fn wait_logged(&self, needle: &str) {
        for i in 0..self.children.len() {
            wait_for(needle, || self.log(i).contains(needle).then_some(()));
        }
    }

    /// Process `i`'s rows read, as it last logged them (every second).
    pub fn read(&self, i: usize) -> u64 {
        self.log(i)
            .lines()
            .rev()
            .find_map(|l| {
                l.split(" rows read")
                    .next()?
                    .rsplit(' ')
                    .next()?
                    .parse()
                    .ok()
            })
            .unwrap_or(0)
    }

    /// Once the lake at `out` names a checkpoint both processes of a
    /// cluster of 2 wrote, kills process 1 (SIGKILL): process 0 exits 69,
    /// naming it.
    pub fn kill_1_at_a_checkpoint(&mut self, out: &Path) {
        wait_for(
            "a checkpoint both processes wrote, named by the lake",
            || named_checkpoint(out),
        );
        self.kill(1);
        let status = self.wait(0);
        assert_eq!(status.code(), Some(69), "{}", self.log(0));
        assert!(self.log(0).contains("process 1"), "{}", self.log(0));
    }

    /// Sends every process SIGTERM and waits for each one's clean exit.
    pub fn stop_all(&mut self) {
        for i in 0..self.children.len() {
            self.signal(i, "TERM");
        }
        for i in 0..self.children.len() {
            let status = self.wait(i);
            assert!(status.success(), "process {i}: {}", self.log(i));
        }
    }

    /// Once the processes have read `n` rows together, sends each SIGTERM
    /// and waits for its clean exit; returns each one's rows read.
    pub fn stop_after(mut self, n: u64) -> Vec<u64> {
        let count = self.children.len();
        wait_for("every row read by the processes together", || {
            ((0..count).map(|i| self.read(i)).sum::<u64>() >= n).then_some(())
        });
        for i in 0..count {
            self.signal(i, "TERM");
        }
        let mut per = Vec::new();
        for i in 0..count {
            let status = wait_for("the process's exit", || {
                self.children[i].0 .0.try_wait().unwrap()
            });
            assert!(status.success(), "process {i}: {}", self.log(i));
            per.push(self.read(i));
        }
        per
    }
}

/// The time of the checkpoint the lake's last commit names, if it names
/// one every process of a cluster of 2 wrote.
pub fn named_checkpoint(out: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(out.join("_plantflow/commit.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let c = &v["checkpoint"];
    (c["processes"] == 2).then(|| c["at"].as_u64())?
}

/// A durable cluster of 2 processes on `df` (in `dir`; its sources, named
/// `sources`, poll live devices), with checkpoints every 200 ms and commits
/// every 100 ms. Process 1 is killed (SIGKILL) once both input logs hold
/// `n` samples together and the lake names a checkpoint both processes
/// wrote: process 0 stops with exit 69, naming it. Started again (drained
/// when stopped) once the logs hold `n` more, each process goes on from
/// that checkpoint: every sample in the two logs is in the lake once
/// (their windows' counts sum to it), no (key, revision) twice, and the
/// time the cluster was down is a `gaps` row of each source. Returns the
/// latest aggregates.
pub fn cluster_killed_and_restarted(
    df: &Path,
    dir: &Path,
    n: u64,
    sources: &[&str],
) -> HashMap<(String, i64), Agg> {
    let text = std::fs::read_to_string(df).unwrap();
    let often = text
        .replace(
            "size = \"1m\"",
            "size = \"1m\"\ncheckpoint_interval = \"200ms\"",
        )
        .replace("id = \"lake\"", "id = \"lake\"\nroll_interval = \"100ms\"");
    assert!(often.contains("checkpoint_interval") && often.contains("roll_interval"));
    std::fs::write(df, often).unwrap();
    let out = dir.join("out");
    let none = |_: usize| Vec::new();
    let logged = || logged_by_all(df, &[]);
    let mut c = LocalCluster::start(df, 2, dir, none);
    wait_for("samples in both processes' logs", || {
        let (got, logs) = logged();
        (got >= n && logs == 2).then_some(())
    });
    c.kill_1_at_a_checkpoint(&out);
    let (before, _) = logged();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let mut c = LocalCluster::start(df, 2, dir, none);
    wait_for("samples after the restart", || {
        (logged().0 >= before + n).then_some(())
    });
    assert!(
        c.log(0).contains("starting from a checkpoint"),
        "{}",
        c.log(0)
    );
    c.stop_all();
    let (total, logs) = logged();
    assert_eq!(logs, 2);
    let down: Vec<String> = rows(&out, "gaps")
        .into_iter()
        .filter(|g| g["reason"].as_str().unwrap().contains("plantflow was down"))
        .map(|g| g["source"].as_str().unwrap().to_string())
        .collect();
    for s in sources {
        assert!(down.iter().any(|d| d == s), "{s}: {down:?}");
    }
    let aggs = latest_aggregates(&out);
    let counted: i64 = aggs.values().map(|a| a.count).sum();
    assert_eq!(counted as u64, total, "every logged sample once");
    assert_no_revision_twice(&out);
    aggs
}

/// Samples in the input logs of every process of `df`'s cluster, as
/// `state inspect` says (one `holds` line per process), and how many logs.
pub fn logged_by_all(df: &Path, env: &[(&str, String)]) -> (u64, usize) {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_plantflow"))
        .args(["state", "inspect"])
        .arg(df)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let holds: Vec<u64> = text
        .lines()
        .filter_map(|l| {
            let l = l.trim_start().strip_prefix("holds")?;
            l.split_whitespace().next()?.parse().ok()
        })
        .collect();
    (holds.iter().sum(), holds.len())
}

/// A cluster of 2 processes reads the fixture stream (90,000 QoS 1
/// messages) from a broker through a shared subscription, with
/// checkpoints and commits every 100 ms. It is killed three times while
/// the stream is published (SIGKILL to process 1, then 0, then 1: the
/// other stops with 69 naming it) and started again each time. Every
/// process keeps its own input log and checkpoints, and the restarts go on
/// from a checkpoint every process wrote: each message is in exactly one
/// process's log once, and the lake equals the DuckDB oracle's with no
/// (key, revision) twice. Before, a cluster of live sources kept no log
/// and could not be started again on its lake. The broker is at `url`
/// (plantflow's side; the fixture is published through `peer_url`).
pub fn mqtt_cluster_killed(url: &str, peer_url: &str) {
    use rand::{Rng, SeedableRng};
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("lake");
    let df = mqtt_dataflow_often(dir.path(), true);
    let vars = vec![
        ("INPUT_DIR", fixture_dir().display().to_string()),
        ("OUT_DIR", out.display().to_string()),
        ("MQTT_URL", url.to_string()),
        ("MQTT_CLIENT_ID", format!("pf-kill-{}", std::process::id())),
    ];
    let start = |flag: &str| LocalCluster::start_with(&df, (2, flag), dir.path(), |_| vars.clone());
    let mut c = start("--follow");
    c.wait_logged("MQTT connected");
    std::thread::sleep(Duration::from_millis(500));
    let url = peer_url.to_string();
    let publisher = std::thread::spawn(move || {
        for chunk in fixture_messages().chunks(3000) {
            peer::publish_all(&url, "cluster-kill-publisher", chunk.to_vec(), 1);
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(27);
    let mut from_checkpoint = 0;
    // SIGKILL to process 1, SIGTERM to process 0 (a clean stop of the
    // whole cluster, as for an upgrade), SIGKILL to process 1.
    for (round, (p, kill)) in [(1, true), (0, false), (1, true)].into_iter().enumerate() {
        std::thread::sleep(Duration::from_millis(rng.random_range(400..1200)));
        if kill {
            c.kill(p);
            let other = 1 - p;
            let status = c.wait(other);
            assert_eq!(status.code(), Some(69), "{}", c.log(other));
            let named = format!("process {p}");
            assert!(c.log(other).contains(&named), "{}", c.log(other));
        } else {
            c.signal(p, "TERM");
            for i in 0..2 {
                let status = c.wait(i);
                assert!(status.success(), "process {i}: {}", c.log(i));
            }
            // One process cannot go on from the cluster's checkpoints.
            let alone = std::process::Command::new(env!("CARGO_BIN_EXE_plantflow"))
                .arg("run")
                .arg(&df)
                .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
                .output()
                .unwrap();
            let said = String::from_utf8_lossy(&alone.stderr);
            assert_eq!(alone.status.code(), Some(78), "{said}");
            assert!(said.contains("a cluster of 2 processes"), "{said}");
        }
        c = start(if round == 2 { "--drain" } else { "--follow" });
        c.wait_logged("MQTT connected");
        from_checkpoint += usize::from(c.log(0).contains("starting from a checkpoint"));
    }
    publisher.join().unwrap();
    // The manifest's 77 bad-quality rows are dropped before the logs.
    let until = std::time::Instant::now() + Duration::from_secs(90);
    let (samples, logs) = loop {
        let (n, logs) = logged_by_all(&df, &vars);
        if n >= 90_000 - 77 {
            break (n, logs);
        }
        let (zero, one) = (c.log(0), c.log(1));
        assert!(
            std::time::Instant::now() < until,
            "the cluster logged {n} samples of {}:\n{zero}\n{one}",
            90_000 - 77
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(logs, 2, "one input log per process");
    assert_eq!(
        samples,
        90_000 - 77,
        "each message once, in one process's log"
    );
    assert!(from_checkpoint >= 1, "a restart went on from a checkpoint");
    c.stop_all();
    // Each process deletes what a named checkpoint replaces (process 0
    // tells the others): a few are left (the two the last commit it heard
    // of named, and those written since), not one per round (131 on
    // process 1 in a run without deleting them).
    for i in 0..2 {
        let state = out.join(format!(".plantflow/workload_v1_mqtt/process-{i}"));
        let kept = std::fs::read_dir(&state)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|f| f.starts_with("checkpoint-") && f.ends_with(".bin"))
            .count();
        assert!(
            (1..=20).contains(&kept),
            "process {i} keeps {kept} checkpoints"
        );
    }
    assert_aggregates_equal(&latest_aggregates(&out), &expected_aggregates());
    assert!(assert_actions_match_oracle(&out) > 0);
    assert_no_revision_twice(&out);
}
