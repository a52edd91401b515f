//! MQTT throughput harness: workload v1 samples published through Mosquitto
//! on loopback, end to end into plantflow (decode, normalise, window,
//! context joins, Parquet), next to a plain rumqttc subscriber that only
//! counts messages, measured in the same run on the same broker.
//!
//! ```text
//! cargo bench --bench mqtt                                   # 2,000 tags x 3,600 s (7.2M samples)
//! PLANTFLOW_BENCH_TAGS=500 PLANTFLOW_BENCH_SECONDS=600 cargo bench --bench mqtt
//! PLANTFLOW_BENCH_ONLY_DECODE=1 cargo bench --bench mqtt      # payloads parsed on 1 thread against 2
//! ```
//!
//! Two payload shapes: one sample per message (`plant/<tag>`, JSON object)
//! and batches of 100 samples (`batch/<n>`, JSON array with a `tag` field).
//! plantflow runs four ways: durable as configured by default (input log,
//! checkpoints every 10 s), checkpoints every 1 s, the input log without
//! checkpoints, and neither (not durable: the baseline). Then a restart on
//! the default run's state is timed (the last checkpoint loaded, the log
//! after it replayed), with the checkpoint's size per tag.
//! Messages are published at QoS 1 by one rumqttc publisher; each consumer
//! subscribes at QoS 1 before publishing starts, and the clock runs from the
//! first publish to the consumer's last sample. Needs `mosquitto` on PATH.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn messages(input: &Path, batch: usize) -> (Vec<(String, Vec<u8>)>, u64) {
    let text = std::fs::read_to_string(input.join("samples.csv")).unwrap();
    let rows: Vec<(&str, &str, &str, &str)> = text
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[0], f[1], f[2], f[3])
        })
        .collect();
    let n = rows.len() as u64;
    if batch <= 1 {
        let m = rows
            .iter()
            .map(|(ts, tag, v, q)| {
                (
                    format!("plant/{tag}"),
                    format!(r#"{{"ts":{ts},"value":{v},"quality":{q}}}"#).into_bytes(),
                )
            })
            .collect();
        return (m, n);
    }
    let m = rows
        .chunks(batch)
        .enumerate()
        .map(|(i, c)| {
            let body: Vec<String> = c
                .iter()
                .map(|(ts, tag, v, q)| {
                    format!(r#"{{"tag":"{tag}","ts":{ts},"value":{v},"quality":{q}}}"#)
                })
                .collect();
            (
                format!("batch/{i}"),
                format!("[{}]", body.join(",")).into_bytes(),
            )
        })
        .collect();
    (m, n)
}

fn publish(port: u16, msgs: &[(String, Vec<u8>)]) {
    publish_qos(port, msgs, QoS::AtLeastOnce)
}

/// Publishes `msgs` at `qos` (1 or 2) and returns once the broker has
/// them all (PUBACK, or PUBCOMP at QoS 2).
fn publish_qos(port: u16, msgs: &[(String, Vec<u8>)], qos: QoS) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let msgs = msgs.to_vec();
    rt.block_on(async move {
        let mut o = MqttOptions::new("bench-pub", "127.0.0.1", port);
        o.set_max_packet_size(1 << 20, 1 << 20).set_inflight(1000);
        let (c, mut lp) = AsyncClient::new(o, 10_000);
        let n = msgs.len();
        tokio::spawn(async move {
            for (t, m) in msgs {
                c.publish(t, qos, false, m).await.unwrap();
            }
        });
        let mut acked = 0;
        while acked < n {
            match lp.poll().await.unwrap() {
                Event::Incoming(Packet::PubAck(_)) if qos == QoS::AtLeastOnce => acked += 1,
                Event::Incoming(Packet::PubComp(_)) if qos == QoS::ExactlyOnce => acked += 1,
                _ => {}
            }
        }
    });
}

/// A plain subscriber that counts messages (and samples: messages × batch).
fn counter(
    port: u16,
    filter: &str,
    expect_msgs: u64,
) -> (Arc<AtomicBool>, std::thread::JoinHandle<Instant>) {
    counter_qos(port, filter, expect_msgs, QoS::AtLeastOnce)
}

/// [`counter`] subscribed at `qos`.
fn counter_qos(
    port: u16,
    filter: &str,
    expect_msgs: u64,
    qos: QoS,
) -> (Arc<AtomicBool>, std::thread::JoinHandle<Instant>) {
    let ready = Arc::new(AtomicBool::new(false));
    let r = ready.clone();
    let filter = filter.to_string();
    let h = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut o = MqttOptions::new(format!("bench-count-{qos:?}"), "127.0.0.1", port);
            o.set_max_packet_size(1 << 20, 1 << 20);
            let (c, mut lp) = AsyncClient::new(o, 100);
            c.subscribe(filter, qos).await.unwrap();
            let mut n = 0;
            loop {
                match lp.poll().await.unwrap() {
                    Event::Incoming(Packet::SubAck(_)) => r.store(true, Relaxed),
                    Event::Incoming(Packet::Publish(_)) => {
                        n += 1;
                        if n == expect_msgs {
                            return Instant::now();
                        }
                    }
                    _ => {}
                }
            }
        })
    });
    (ready, h)
}

fn dataflow(dir: &Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("dataflows/workload_v1_mqtt.toml"),
    )
    .unwrap();
    // The reference dataflow, plus a route for batches; no publish sink.
    let text = text
        .split("# Action events back")
        .next()
        .unwrap()
        .to_string();
    let text = text.replace(
        "[[sources.topics]]\ntopic = \"plantflow/context/production\"",
        "[[sources.topics]]\ntopic = \"batch/{n}\"\nformat = \"json\"\n\n[[sources.topics]]\ntopic = \"plantflow/context/production\"",
    );
    let f = dir.join("bench_mqtt.toml");
    std::fs::write(&f, text).unwrap();
    f
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let tags = env_or("PLANTFLOW_BENCH_TAGS", 2000) as usize;
    let seconds = env_or("PLANTFLOW_BENCH_SECONDS", 3600);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    plantflow::gen::workload::generate(
        &plantflow::gen::workload::Params {
            tags,
            seconds,
            ..Default::default()
        },
        &input,
    )
    .unwrap();
    let port = plantflow::sim::broker::free_port().unwrap();
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(&conf, format!("listener {port} 127.0.0.1\nallow_anonymous true\nuser root\nmax_queued_messages 0\nmax_inflight_messages 1000\n")).unwrap();
    let mut broker = Command::new("mosquitto")
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto on PATH");
    std::thread::sleep(Duration::from_millis(300));
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    println!("MQTT end to end through Mosquitto on loopback: {tags} tags x {seconds} s, QoS 1, {} cores ({cpu})", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    // PLANTFLOW_BENCH_ONLY_DECODE=1: only payloads parsed on 1 thread against 2.
    if env_or("PLANTFLOW_BENCH_ONLY_DECODE", 0) == 1 {
        decoding_spread(dir.path(), &input, port);
        let _ = broker.kill();
        let _ = broker.wait();
        return;
    }
    println!(
        "{:<12} {:>10} {:>12} {:>12} {:>7} {:>12} {:>8} {:>8} {:>8}",
        "payload",
        "messages",
        "counter s/s",
        "plantflow",
        "ratio",
        "not durable",
        "ck 10s",
        "ck 1s",
        "log only"
    );
    let mut recoveries = Vec::new();
    // PLANTFLOW_BENCH_ONLY_QOS=1: only the QoS 2 against QoS 1 rows.
    let only = env_or("PLANTFLOW_BENCH_ONLY_QOS", 0) + env_or("PLANTFLOW_BENCH_ONLY_SCRAPE", 0);
    let batches: &[usize] = if only > 0 { &[] } else { &[1, 100] };
    for &batch in batches {
        let (msgs, samples) = messages(&input, batch);
        let filter = if batch == 1 { "plant/#" } else { "batch/#" };
        // Baseline: count messages.
        let (ready, h) = counter(port, filter, msgs.len() as u64);
        while !ready.load(Relaxed) {
            std::thread::sleep(Duration::from_millis(10));
        }
        let t0 = Instant::now();
        publish(port, &msgs);
        let base = h.join().unwrap().duration_since(t0).as_secs_f64();
        // plantflow: the whole dataflow, 2 workers, in each durability mode.
        let pf: Vec<f64> = MODES
            .iter()
            .map(|m| run_plantflow(dir.path(), &input, port, batch, m, &msgs, samples))
            .collect();
        // A restart on the default run's state.
        let r = recovery(dir.path(), &input, port, batch);
        recoveries.push(format!(
            "{:<12} restart: checkpoint {:.1} MB ({:.0} bytes/tag) loaded and {} log entries ({:.1} MB) replayed in {:.2} s",
            if batch == 1 { "1 sample" } else { "100 samples" },
            r.checkpoint as f64 / 1e6,
            r.checkpoint as f64 / tags as f64,
            r.entries,
            r.log as f64 / 1e6,
            r.secs,
        ));
        let ratio = |i: usize| pf[3] / pf[i];
        println!(
            "{:<12} {:>10} {:>12.0} {:>12.0} {:>6.2}x {:>12.0} {:>7.2}x {:>7.2}x {:>7.2}x",
            if batch == 1 {
                "1 sample"
            } else {
                "100 samples"
            },
            msgs.len(),
            samples as f64 / base,
            samples as f64 / pf[0],
            base / pf[0],
            samples as f64 / pf[3],
            ratio(0),
            ratio(1),
            ratio(2),
        );
    }
    println!(
        "(ck 10s, ck 1s, log only: throughput against not durable; ratio: against the counter)"
    );
    for r in recoveries {
        println!("{r}");
    }
    if env_or("PLANTFLOW_BENCH_ONLY_SCRAPE", 0) == 0 {
        qos2_against_qos1(dir.path(), &input, port);
    }
    scrape_cost(dir.path(), &input, port);
    decoding_spread(dir.path(), &input, port);
    let _ = broker.kill();
    let _ = broker.wait();
}

/// A restart: its checkpoint's bytes, the log's bytes and entries it
/// replayed, and the seconds until its sources went on.
struct Recovery {
    checkpoint: u64,
    log: u64,
    entries: u64,
    secs: f64,
}

/// Starts plantflow again on the state of the default run of `batch` and
/// times it until its input log is replayed (sources go on).
fn recovery(dir: &Path, input: &Path, port: u16, batch: usize) -> Recovery {
    let run_name = format!("{batch}-{}", MODES[0].name);
    let out = dir.join(format!("out{run_name}"));
    let state = out.join(".plantflow/workload_v1_mqtt");
    let size = |suffix: &str, prefix: &str| -> u64 {
        std::fs::read_dir(&state)
            .unwrap_or_else(|e| panic!("{}: {e}", state.display()))
            .flatten()
            .filter(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.ends_with(suffix) && n.starts_with(prefix)
            })
            .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
            .max()
            .unwrap_or(0)
    };
    let checkpoint = size(".bin", "checkpoint-");
    let plan = load(dir, input, &out, port, &run_name);
    let t0 = Instant::now();
    let (stats, stop, run) = spawn_run(plan, false);
    let replayed = "input log: entries replayed at start";
    let entries = loop {
        if let Some(n) = stats.events().get(replayed) {
            break *n;
        }
        assert!(!run.is_finished(), "the restart ended before its replay");
        std::thread::sleep(Duration::from_millis(5));
    };
    let secs = t0.elapsed().as_secs_f64();
    // The segments it replayed (a new one begins with its first checkpoint).
    let log: u64 = std::fs::read_dir(&state)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".wal"))
        .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
        .sum();
    stop.store(true, Relaxed);
    run.join().unwrap().unwrap();
    Recovery {
        checkpoint,
        log,
        entries,
        secs,
    }
}

/// A plantflow run on its thread: its counters, its stop flag and the thread.
type Spawned = (
    Arc<plantflow::stats::Stats>,
    Arc<AtomicBool>,
    std::thread::JoinHandle<Result<plantflow::run::RunSummary, plantflow::run::RunError>>,
);

/// A plantflow run on 2 workers on a thread of its own.
fn spawn_run(plan: plantflow::dataflow::Dataflow, no_input_log: bool) -> Spawned {
    let stats = Arc::new(plantflow::stats::Stats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let (s, st) = (stats.clone(), stop.clone());
    let run = std::thread::spawn(move || {
        plantflow::run::run(
            plan,
            plantflow::run::RunOptions {
                workers: 2,
                stop: Some(st),
                stats: Some(s),
                no_input_log,
                ..Default::default()
            },
        )
    });
    (stats, stop, run)
}

/// How a plantflow run keeps its state.
struct Mode {
    name: &'static str,
    log: bool,
    /// `checkpoint_interval` (none: off).
    checkpoint_ms: Option<i64>,
}

const MODES: [Mode; 4] = [
    Mode {
        name: "ck10s",
        log: true,
        checkpoint_ms: Some(10_000),
    },
    Mode {
        name: "ck1s",
        log: true,
        checkpoint_ms: Some(1_000),
    },
    Mode {
        name: "logonly",
        log: true,
        checkpoint_ms: None,
    },
    Mode {
        name: "none",
        log: false,
        checkpoint_ms: None,
    },
];

/// One plantflow run over `msgs`: seconds from the first publish to the last
/// sample read.
fn run_plantflow(
    dir: &Path,
    input: &Path,
    port: u16,
    batch: usize,
    mode: &Mode,
    msgs: &[(String, Vec<u8>)],
    samples: u64,
) -> f64 {
    let run_name = format!("{batch}-{}", mode.name);
    let out = dir.join(format!("out{run_name}"));
    let mut plan = load(dir, input, &out, port, &run_name);
    plan.plan.window.checkpoint_ms = mode.checkpoint_ms;
    let no_input_log = !mode.log;
    if let plantflow::dataflow::SourcePlan::Mqtt(m) = &mut plan.sources[0] {
        m.conn.clean = true;
    }
    let (stats, stop, run) = spawn_run(plan, no_input_log);
    let pf = timed_publish(port, msgs, &stats, samples);
    stop.store(true, Relaxed);
    run.join().unwrap().unwrap();
    pf
}

/// Publishes `msgs` to a plantflow that has had a moment to subscribe;
/// the seconds from the first publish until it has read `samples`.
fn timed_publish(
    port: u16,
    msgs: &[(String, Vec<u8>)],
    stats: &plantflow::stats::Stats,
    samples: u64,
) -> f64 {
    std::thread::sleep(Duration::from_millis(800));
    let t0 = Instant::now();
    let pubt = std::thread::spawn({
        let msgs = msgs.to_vec();
        move || publish(port, &msgs)
    });
    while stats.rows_read.load(Relaxed) < samples {
        std::thread::sleep(Duration::from_millis(2));
    }
    let secs = t0.elapsed().as_secs_f64();
    pubt.join().unwrap();
    secs
}

/// The operator surface's cost (issue 26: under 2 % of the MQTT
/// throughput): the 100-sample messages through the default durable node,
/// without `[http]` and with it while a scraper reads `/metrics`,
/// `/api/v1/tags` and `/api/v1/actions` every second.
/// `PLANTFLOW_BENCH_SCRAPE_PAIRS` (default 3) pairs, their order alternating.
fn scrape_cost(dir: &Path, input: &Path, port: u16) {
    let (msgs, samples) = messages(input, 100);
    let pairs = env_or("PLANTFLOW_BENCH_SCRAPE_PAIRS", 3);
    let (mut ratios, mut rounds, mut last_bytes) = (Vec::new(), Vec::new(), 0);
    for pair in 0..pairs {
        let mut secs = [0.0; 2];
        let order = if pair % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for scraped in order {
            let name = format!("scrape{pair}-{scraped}");
            let out = dir.join(format!("out-{name}"));
            let mut plan = load(dir, input, &out, port, &name);
            if scraped {
                plan.plan.http = Some(plantflow::config::HttpPlan {
                    listen: "127.0.0.1:0".parse().unwrap(),
                    token: None,
                });
            }
            if let plantflow::dataflow::SourcePlan::Mqtt(m) = &mut plan.sources[0] {
                m.conn.clean = true;
            }
            let (stats, stop, run) = spawn_run(plan, false);
            let scraper = scraped.then(|| {
                while stats.http_addr().is_none() {
                    std::thread::sleep(Duration::from_millis(10));
                }
                let addr = stats.http_addr().unwrap();
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let (mut bytes, mut busy, mut rounds) = (0usize, [Duration::ZERO; 3], 0u32);
                    while !stop.load(Relaxed) {
                        for (i, path) in SCRAPED.iter().enumerate() {
                            let t = Instant::now();
                            bytes += http_get(addr, path);
                            busy[i] += t.elapsed();
                        }
                        rounds += 1;
                        std::thread::sleep(Duration::from_secs(1));
                    }
                    (bytes, busy.map(|b| b / rounds.max(1)))
                })
            });
            secs[usize::from(scraped)] = timed_publish(port, &msgs, &stats, samples);
            stop.store(true, Relaxed);
            run.join().unwrap().unwrap();
            if let Some(s) = scraper {
                let (bytes, each) = s.join().unwrap();
                assert!(bytes > 0, "the scraper read nothing");
                rounds.push(each.map(|d| d.as_secs_f64() * 1000.0));
                last_bytes = bytes;
            }
        }
        let ratio = secs[0] / secs[1];
        println!(
            "scraped every second: {:.0} samples/s, not: {:.0} samples/s, ratio {ratio:.3}x",
            samples as f64 / secs[1],
            samples as f64 / secs[0]
        );
        ratios.push(ratio);
    }
    ratios.sort_by(f64::total_cmp);
    if let Some(m) = ratios.get(ratios.len() / 2) {
        println!("operator surface scraped every second: median {m:.3}x of the throughput without it ({pairs} pairs; {last_bytes} bytes read in the last run)");
    }
    for (i, path) in SCRAPED.iter().enumerate() {
        let mut ms: Vec<f64> = rounds.iter().map(|r| r[i]).collect();
        ms.sort_by(f64::total_cmp);
        if let Some(m) = ms.get(ms.len() / 2) {
            println!("  GET {path}: answered in {m:.2} ms (median of the runs' means)");
        }
    }
}

/// What the bench's scraper reads every second.
const SCRAPED: [&str; 3] = ["/metrics", "/api/v1/tags", "/api/v1/actions"];

/// `GET path` on `addr`; the bytes of the answer.
fn http_get(addr: std::net::SocketAddr, path: &str) -> usize {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return 0;
    };
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    );
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    buf.len()
}

/// QoS 2 against QoS 1 in the same run (issue 31: a QoS 2 stream must
/// arrive whole at no less than half the QoS 1 rate): the first
/// `PLANTFLOW_BENCH_QOS_MESSAGES` (default 200,000) one-sample messages,
/// published and subscribed at each QoS, into the durable default run.
fn qos2_against_qos1(dir: &Path, input: &Path, port: u16) {
    let n = env_or("PLANTFLOW_BENCH_QOS_MESSAGES", 200_000) as usize;
    let (mut msgs, _) = messages(input, 1);
    msgs.truncate(n);
    let qos_of = |q: u8| {
        if q == 2 {
            QoS::ExactlyOnce
        } else {
            QoS::AtLeastOnce
        }
    };
    // plantflow subscribed at `q` as client `run_name`, persistent or not.
    let start = |run_name: &str, q: u8, clean: bool| {
        let out = dir.join(format!("out{run_name}"));
        let mut plan = load(dir, input, &out, port, run_name);
        if let plantflow::dataflow::SourcePlan::Mqtt(m) = &mut plan.sources[0] {
            m.conn.clean = clean;
            m.routes.iter_mut().for_each(|r| r.qos = q);
        }
        spawn_run(plan, false)
    };
    // Messages per second from `t0` until every message is read; the run
    // is stopped and must have read each once.
    let finish = |(stats, stop, run): Spawned, t0: Instant, what: &str| {
        while stats.rows_read.load(Relaxed) < msgs.len() as u64 {
            std::thread::sleep(Duration::from_millis(2));
        }
        let secs = t0.elapsed().as_secs_f64();
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Relaxed);
        let s = run.join().unwrap().unwrap();
        assert_eq!(s.rows_read, msgs.len() as u64, "{what}: every message once");
        msgs.len() as f64 / secs
    };
    // Live: published while plantflow is subscribed.
    let live = |q: u8| {
        let node = start(&format!("qos{q}"), q, true);
        std::thread::sleep(Duration::from_millis(800));
        let t0 = Instant::now();
        publish_qos(port, &msgs, qos_of(q));
        finish(node, t0, &format!("QoS {q}"))
    };
    // The broker's own pace at each QoS: a plain subscriber that counts.
    let plain = |q: u8| {
        let (ready, h) = counter_qos(port, "plant/#", msgs.len() as u64, qos_of(q));
        while !ready.load(Relaxed) {
            std::thread::sleep(Duration::from_millis(10));
        }
        let t0 = Instant::now();
        publish_qos(port, &msgs, qos_of(q));
        msgs.len() as f64 / h.join().unwrap().duration_since(t0).as_secs_f64()
    };
    // The subscriber's own pace, without the publisher's: the broker holds
    // the messages for plantflow's persistent session while it is away,
    // then delivers them at the subscription's QoS; timed from the first
    // sample read to the last.
    let held = |q: u8| {
        let name = format!("queued-qos{q}");
        let (_, stop, run) = start(&name, q, false);
        std::thread::sleep(Duration::from_millis(800));
        stop.store(true, Relaxed);
        run.join().unwrap().unwrap();
        publish_qos(port, &msgs, qos_of(q));
        let node = start(&name, q, false);
        while node.0.rows_read.load(Relaxed) == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        finish(node, Instant::now(), &format!("held QoS {q}"))
    };
    let (c1, c2) = (plain(1), plain(2));
    let (q1, q2) = (live(1), live(2));
    let (k1, k2) = (held(1), held(2));
    println!(
        "QoS 2 against QoS 1, {} one-sample messages from one publisher, published and subscribed at each:",
        msgs.len()
    );
    println!(
        "  counter    QoS 1 {c1:>8.0}/s  QoS 2 {c2:>8.0}/s ({:.2}x)",
        c2 / c1
    );
    println!(
        "  plantflow  QoS 1 {q1:>8.0}/s  QoS 2 {q2:>8.0}/s ({:.2}x)",
        q2 / q1
    );
    println!(
        "  plantflow, held by the broker for its session, then delivered: QoS 1 {k1:>8.0}/s  QoS 2 {k2:>8.0}/s ({:.2}x)",
        k2 / k1
    );
}

/// Payloads parsed on one thread against two (the process's workers, the
/// default): the broker holds the batched messages (100 samples each, at
/// QoS 1) for plantflow's persistent session while it is away, then delivers
/// them as fast as plantflow takes them (2 workers, not durable, so the
/// decoder and the dataflow set the pace), timed from the first sample read
/// to the last; each way `PLANTFLOW_BENCH_DECODE_RUNS` times (default 3),
/// alternating, medians.
fn decoding_spread(dir: &Path, input: &Path, port: u16) {
    let (msgs, samples) = messages(input, 100);
    let runs = env_or("PLANTFLOW_BENCH_DECODE_RUNS", 3);
    let start = |name: &str, threads: usize| {
        let out = dir.join(format!("out{name}"));
        let _ = std::fs::remove_dir_all(&out);
        let mut plan = load(dir, input, &out, port, name);
        if let plantflow::dataflow::SourcePlan::Mqtt(m) = &mut plan.sources[0] {
            m.conn.clean = false;
            m.decode_threads = threads;
        }
        spawn_run(plan, true)
    };
    let held = |threads: usize, round: u64| {
        let name = format!("decode-{threads}-{round}");
        let (_, stop, run) = start(&name, threads);
        std::thread::sleep(Duration::from_millis(800));
        stop.store(true, Relaxed);
        run.join().unwrap().unwrap();
        publish(port, &msgs);
        let (stats, stop, run) = start(&name, threads);
        while stats.rows_read.load(Relaxed) == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let t0 = Instant::now();
        while stats.rows_read.load(Relaxed) < samples {
            std::thread::sleep(Duration::from_millis(2));
        }
        let secs = t0.elapsed().as_secs_f64();
        stop.store(true, Relaxed);
        let s = run.join().unwrap().unwrap();
        assert_eq!(s.rows_read, samples, "every sample once");
        samples as f64 / secs
    };
    let (mut one, mut two) = (Vec::new(), Vec::new());
    for round in 0..runs {
        one.push(held(1, round));
        two.push(held(0, round));
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (a, b) = (median(&mut one), median(&mut two));
    println!(
        "payloads parsed on 1 thread against 2 ({} held messages of 100 samples, 2 workers, medians of {runs}):",
        msgs.len()
    );
    println!(
        "  1 thread {a:>10.0} samples/s   2 threads {b:>10.0} samples/s   ({:.2}x)",
        b / a
    );
}

/// The bench dataflow writing to `out`, as client `bench-plantflow-<run>`.
fn load(
    dir: &Path,
    input: &Path,
    out: &Path,
    port: u16,
    run: &str,
) -> plantflow::dataflow::Dataflow {
    let vars = [
        ("INPUT_DIR", input.display().to_string()),
        ("OUT_DIR", out.display().to_string()),
        ("MQTT_URL", format!("mqtt://127.0.0.1:{port}")),
        ("MQTT_CLIENT_ID", format!("bench-plantflow-{run}")),
    ];
    let env = move |k: &str| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone());
    plantflow::dataflow::load_with_env(&dataflow(dir), &env)
        .unwrap_or_else(|e| panic!("{}", e.render()))
}
