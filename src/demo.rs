//! `plantflow demo`: the whole product in one process, on a simulated plant.
//!
//! It starts an embedded MQTT broker (rumqttd) and the project's OPC UA server
//! on free loopback ports, writes the plant's context files, and runs
//! `dataflows/demo.toml` in `--follow` mode while the simulator
//! ([`crate::sim::plant`]) publishes a week of data on an accelerated clock:
//! site 1 as OPC UA variables, site 2's line as MQTT JSON and its utilities as
//! a Sparkplug B edge node. Actions come back over MQTT (the dataflow's
//! `mqtt_publish` sink) and are printed as they open; the simulated crew
//! acknowledges them and fixes the compressor, appending to `status.jsonl`,
//! so its outcome is verified by the end. Then it prints a summary and writes
//! `report.html` beside the Parquet lake.
//!
//! Nothing here blocks the engine: the simulator and the MQTT clients run on
//! their own threads, the engine on its own.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::sim::crew::{place, subscribe_actions, Crew};
use crate::sim::edge::{MqttPublisher, SparkplugNode};
use crate::sim::opcua::{PlantServer, ServerOptions, SimTag};
use crate::sim::plant::{iso, Fixes, Plant, Via, T0};
use crate::stats::Stats;

/// The demo's dataflow, embedded so the binary runs it anywhere.
pub const DEMO_TOML: &str = include_str!("../dataflows/demo.toml");

/// Simulated seconds between two samples of every tag.
pub const STEP_MS: i64 = 30_000;

/// How to run the demo.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Output directory: `lake/`, `report.html`, `input/`.
    pub out: PathBuf,
    /// Simulated time per wall-clock time.
    pub speed: f64,
    /// Simulated duration (ms).
    pub duration_ms: i64,
    pub workers: usize,
    /// Print action lines and the progress bar.
    pub interactive: bool,
    /// Where the action board listens (another free port when taken).
    pub http: std::net::SocketAddr,
    /// Keep the node and its board running after the simulated time, until
    /// SIGINT or SIGTERM.
    pub serve: bool,
    /// Ship the lake to this object store (`s3://bucket/prefix`) as Delta
    /// tables; `out/lake` is then its local copy.
    pub lake_url: Option<String>,
}

/// What a demo run produced.
#[derive(Debug)]
pub struct DemoResult {
    pub lake: PathBuf,
    pub report: PathBuf,
    pub summary: crate::run::RunSummary,
    pub samples_published: u64,
    /// The dataflow's currency.
    pub currency: String,
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

const TARIFF_CSV: &str = "start_hour,end_hour,price_per_kwh,day_types
0,7,0.12,weekday
7,21,0.22,weekday
21,24,0.12,weekday
0,24,0.10,weekend
";

/// Runs the demo to the end of its simulated duration.
pub fn run(opts: &DemoOptions) -> Result<DemoResult, String> {
    let plant = Plant::new();
    let out = &opts.out;
    let (input, lake, dataflow) = write_inputs(out, &plant, opts)?;

    // Servers on free loopback ports.
    let broker = crate::sim::broker::start(0, 0)?;
    let meter = MeterLog::start(&plant)?;
    let opc_tags = opc_tags(&plant);
    let server = PlantServer::start(ServerOptions {
        tags: opc_tags.iter().map(|(_, t)| t.clone()).collect(),
        pki_dir: input.join("pki-server"),
        min_publishing_interval_ms: 20,
        ..ServerOptions::default()
    })?;
    let say = |s: String| {
        if opts.interactive {
            println!("{s}");
        }
    };
    say(format!(
        "plantflow demo: a simulated plant, two sites, {} from {} at {}x\n  MQTT broker   {}  (v3.1.1 on port {})\n  OPC UA server {}\n  Modbus meter  127.0.0.1:{}  (site 1's compressor sub-meter)\n  output        {}\n",
        span(opts.duration_ms), iso(T0), opts.speed, broker.url_v5(), broker.v4_port, server.url(), meter.port(), out.display()
    ));

    // The engine, in follow mode, on its own thread.
    let Engine {
        thread: engine,
        stats,
        stop,
        currency,
    } = start_engine(opts, &dataflow, &input, &lake, (&broker, &server, &meter))?;
    let (board, engine) = board_url(&stats, &input, engine)?;
    say(format!(
        "  action board  {board}\n                (the crew leaves one action open: acknowledge it there; --serve keeps the board up after the run)\n"
    ));

    // Actions come back over MQTT.
    let (ev_tx, ev_rx) = std::sync::mpsc::channel();
    subscribe_actions(&broker.url_v4(), ev_tx)?;
    let publisher = MqttPublisher::connect(&broker.url_v4(), "plantflow-demo-sim")?;

    // Wait until both sources take data: the MQTT source has no persistent
    // session to catch up from in a fresh broker. The first instant is
    // published until one value of every OPC UA and MQTT tag is in.
    let v0 = plant.step(T0, &Fixes::default());
    let first = opc_values(&opc_tags, &v0, T0);
    let json_msgs = |t: i64, v: &[f64]| json_messages(&plant, t, v);
    let n_json = json_msgs(T0, &v0).len() as u64;
    let ready = Instant::now();
    loop {
        server.set(&first)?;
        publisher.publish_all(&json_msgs(T0, &v0))?;
        std::thread::sleep(Duration::from_millis(200));
        if stats.rows_read.load(Relaxed) >= first.len() as u64 + n_json {
            break;
        }
        if engine.is_finished() {
            return Err(match engine.join() {
                Ok(Err(e)) => format!("the dataflow stopped: {e}"),
                _ => "the dataflow stopped before it received data".into(),
            });
        }
        if ready.elapsed() > Duration::from_secs(60) {
            stop.store(true, Relaxed);
            return Err("the demo's dataflow did not receive data from the OPC UA server and the MQTT broker within 60 s".into());
        }
    }

    let bar = progress_bar(opts);
    let printer = bar.clone();
    let mut crew = Crew::new(input.join("status.jsonl"), currency.clone());
    let mut sp = SparkplugNode::new(&plant);
    publisher.publish_all(&sp.births(T0, &plant.step(T0, &Fixes::default())))?;

    let mut logger = MeterLog::new(&plant);
    let started = Instant::now();
    let mut published: u64 = 0;
    let mut t = T0;
    let end = T0 + opts.duration_ms;
    while t < end {
        // Pace: simulated time / speed.
        let due = Duration::from_secs_f64((t - T0) as f64 / 1000.0 / opts.speed);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
        // Never run more than a few simulated hours ahead of the engine: an
        // OPC UA server drops what overflows its queues, and a slow machine
        // (or a debug build) must still see every value.
        let lag_limit = 400 * plant.tags.len() as u64;
        while published.saturating_sub(stats.rows_read.load(Relaxed)) > lag_limit {
            std::thread::sleep(Duration::from_millis(2));
        }
        for ev in ev_rx.try_iter() {
            if let Some(line) = crew.hear(&ev, t) {
                // indicatif drops lines when its bar is hidden (not a terminal).
                if printer.is_hidden() {
                    say(line);
                } else {
                    printer.println(line);
                }
            }
        }
        crew.act(t)?;
        let v = plant.step(t, &crew.fixes);
        logger.step(&meter, t, &v, || engine.is_finished())?;
        server.set(&opc_values(&opc_tags, &v, t))?;
        let mut msgs = json_msgs(t, &v);
        msgs.extend(sp.data(t, &v));
        publisher.publish_all(&msgs)?;
        published += plant.tags.len() as u64;
        if (t - T0) % 3_600_000 == 0 {
            show_progress(&bar, t, stats.rows_read.load(Relaxed), crew.opened);
        }
        t += STEP_MS;
    }
    bar.finish_and_clear();
    // Wait until the engine has taken every sample, then stop it: follow
    // mode closes the open windows and commits every file.
    let births = sp.birth_samples;
    wait_taken(&stats, published + births);
    // The last action events and the crew's last updates.
    std::thread::sleep(Duration::from_millis(300));
    for ev in ev_rx.try_iter() {
        if let Some(line) = crew.hear(&ev, end) {
            say(line);
        }
    }
    end_or_serve(opts, &board, &stop);
    let summary = engine
        .join()
        .map_err(|_| "the engine thread panicked".to_string())?
        .map_err(|e| e.to_string())?;
    for ev in ev_rx.try_iter() {
        if let Some(line) = crew.hear(&ev, end) {
            say(line);
        }
    }
    server.stop();
    meter.stop();
    let report = out.join("report.html");
    crate::report::write(&lake, &report)?;
    Ok(DemoResult {
        lake,
        report,
        summary,
        samples_published: published,
        currency,
    })
}

/// The Modbus meter's log: it integrates the compressor's power step by
/// step and, every `EVERY_MS`, serves a record and waits until the node
/// has read it (the accelerated clock outruns any poll interval).
struct MeterLog {
    measures: usize,
    kwh: f64,
}

impl MeterLog {
    /// Starts the meter with its first record (a logger always has one,
    /// before the node polls it).
    fn start(plant: &Plant) -> Result<crate::sim::meter::MeterServer, String> {
        let meter = crate::sim::meter::MeterServer::start()?;
        MeterLog::new(plant).record(&meter, T0, &plant.step(T0, &Fixes::default()));
        Ok(meter)
    }

    fn new(plant: &Plant) -> MeterLog {
        let measures = plant
            .tags
            .iter()
            .position(|t| t.tag == crate::sim::meter::MEASURES)
            .expect("the metered compressor is a plant tag");
        MeterLog { measures, kwh: 0.0 }
    }

    /// At `t`: a record of the energy before `t` on every record time, then
    /// this step's energy counted.
    fn step(
        &mut self,
        meter: &crate::sim::meter::MeterServer,
        t: i64,
        v: &[f64],
        engine_done: impl Fn() -> bool,
    ) -> Result<(), String> {
        let kw = v[self.measures];
        if (t - T0) % crate::sim::meter::EVERY_MS == 0 {
            self.record(meter, t, v);
            if !meter.wait_read(Duration::from_secs(60), engine_done) {
                return Err(format!(
                    "the dataflow did not read the simulated Modbus meter (127.0.0.1:{}) within 60 s",
                    meter.port()
                ));
            }
        }
        self.kwh += kw * STEP_MS as f64 / 3_600_000.0;
        Ok(())
    }

    /// Serves the record of time `t`: the power now, the energy before.
    fn record(&self, meter: &crate::sim::meter::MeterServer, t: i64, v: &[f64]) {
        use crate::sim::meter::{Record, PF};
        let kw = v[self.measures];
        meter.set(Record {
            t_ms: t,
            kw: kw as f32,
            kvar: (kw * PF.acos().tan()) as f32,
            pf_milli: (PF * 1000.0).round() as i16,
            kwh_centi: ((self.kwh * 100.0).floor() as u64 % (1 << 32)) as u32,
        });
    }
}

/// A simulated duration in words: `one week`, `36 hours`, `2 days`.
fn span(ms: i64) -> String {
    const H: i64 = 3_600_000;
    match ms {
        ms if ms == 7 * 24 * H => "one week".into(),
        ms if ms == 24 * H => "one day".into(),
        ms if ms % (24 * H) == 0 => format!("{} days", ms / (24 * H)),
        ms => format!("{:.0} hours", ms as f64 / H as f64),
    }
}

/// Stops the node, or with `--serve` says the board stays up (until a signal).
fn end_or_serve(opts: &DemoOptions, board: &str, stop: &AtomicBool) {
    if opts.serve {
        // Not on stdout alone: tests and scripts wait for this line. The
        // token stays in input/http.token (and on stdout when interactive).
        let at = board.split('#').next().unwrap_or_default();
        eprintln!("plantflow demo: the simulated week is over; the node and its board stay up at {at} until Ctrl-C");
    } else {
        stop.store(true, Relaxed);
    }
}

/// The plant's context files and the dataflow, under `out/input`; the lake
/// goes to `out/lake` (emptied first).
fn write_inputs(
    out: &Path,
    plant: &Plant,
    opts: &DemoOptions,
) -> Result<(PathBuf, PathBuf, PathBuf), String> {
    let days = (opts.duration_ms + crate::sim::plant::DAY - 1) / crate::sim::plant::DAY;
    let input = out.join("input");
    let lake = out.join("lake");
    let _ = std::fs::remove_dir_all(&lake);
    std::fs::create_dir_all(&input)
        .map_err(|e| format!("cannot create {}: {e}", input.display()))?;
    write(
        &input.join("assets.csv"),
        &(plant.assets_csv() + crate::sim::meter::ASSET_ROWS),
    )?;
    write(
        &input.join("production.csv"),
        &Plant::production_csv(days.max(1)),
    )?;
    write(&input.join("tariff.csv"), TARIFF_CSV)?;
    write(&input.join("status.jsonl"), "")?;
    write(&input.join("http.token"), &new_token())?;
    let dataflow = input.join("demo.toml");
    let text = match &opts.lake_url {
        // The lake in a bucket: Delta tables, shipped from `out/lake`.
        Some(url) => DEMO_TOML.replacen(
            "path = \"${OUT_DIR:-out}\"",
            &format!("path = \"{url}\"\nformat = \"delta\"\nlocal = \"${{OUT_DIR:-out}}\""),
            1,
        ),
        None => DEMO_TOML.to_string(),
    };
    write(&dataflow, &text)?;
    Ok((input, lake, dataflow))
}

/// A fresh token for the demo's board: 24 random bytes from the kernel, in hex.
fn new_token() -> String {
    use std::io::Read;
    let mut b = [0u8; 24];
    let from_kernel = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b));
    if from_kernel.is_err() {
        // Not Linux: the clock and the process id, mixed.
        let seed = crate::model::now_ms() as u64 ^ (u64::from(std::process::id()) << 32);
        let mut x = seed;
        for v in &mut b {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *v = x as u8;
        }
    }
    b.iter().map(|v| format!("{v:02x}")).collect()
}

type EngineThread = std::thread::JoinHandle<Result<crate::run::RunSummary, crate::run::RunError>>;

/// The board's address once the node listens, with the token (the page
/// keeps it and takes it out of the address bar).
/// A node that ended before it listened says why.
fn board_url(
    stats: &Stats,
    input: &Path,
    engine: EngineThread,
) -> Result<(String, EngineThread), String> {
    let token = std::fs::read_to_string(input.join("http.token")).map_err(|e| e.to_string())?;
    let since = Instant::now();
    loop {
        if let Some(a) = stats.http_addr() {
            return Ok((format!("http://{a}/#token={}", token.trim()), engine));
        }
        if engine.is_finished() {
            return Err(match engine.join() {
                Ok(Err(e)) => e.message,
                _ => "the demo's node ended before it started its HTTP surface".into(),
            });
        }
        if since.elapsed() > Duration::from_secs(60) {
            return Err("the demo's node did not start its HTTP surface".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `want` when it can be bound now, else any free loopback port.
fn listen_on(want: std::net::SocketAddr) -> std::net::SocketAddr {
    match std::net::TcpListener::bind(want) {
        Ok(_) => want,
        Err(_) => std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
    }
}

/// The dataflow running in follow mode on a thread of its own.
struct Engine {
    thread: std::thread::JoinHandle<Result<crate::run::RunSummary, crate::run::RunError>>,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
    currency: String,
}

/// Starts the demo's dataflow against the embedded broker and OPC UA server.
fn start_engine(
    opts: &DemoOptions,
    dataflow: &Path,
    input: &Path,
    lake: &Path,
    (broker, server, meter): (
        &crate::sim::broker::Broker,
        &PlantServer,
        &crate::sim::meter::MeterServer,
    ),
) -> Result<Engine, String> {
    let publish_ms = 50.0;
    let lateness_s = ((opts.speed * publish_ms * 4.0 / 1000.0) / 60.0)
        .ceil()
        .max(5.0)
        * 60.0;
    let vars: Vec<(String, String)> = vec![
        ("INPUT_DIR".into(), input.display().to_string()),
        ("OUT_DIR".into(), lake.display().to_string()),
        ("MQTT_URL".into(), broker.url_v5()),
        ("OPCUA_URL".into(), server.url()),
        ("METER_HOST".into(), format!("127.0.0.1:{}", meter.port())),
        (
            // A third of a record's interval on the wall clock: every
            // record is read while the demo waits for it.
            "METER_POLL".into(),
            format!(
                "{}ms",
                ((crate::sim::meter::EVERY_MS as f64 / opts.speed / 3.0) as i64).clamp(1, 1000)
            ),
        ),
        ("DEMO_HTTP".into(), listen_on(opts.http).to_string()),
        ("DEMO_LATENESS".into(), format!("{}s", lateness_s as i64)),
        (
            "DEMO_RETENTION".into(),
            format!("{}s", lateness_s as i64 + 3 * 3600),
        ),
    ];
    let env = move |k: &str| {
        vars.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .or_else(|| std::env::var(k).ok())
    };
    let plan = crate::dataflow::load_with_env(dataflow, &env).map_err(|e| e.render())?;
    let currency = plan.currency.clone();
    let stats = Arc::new(Stats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let engine = {
        let (stats, stop, workers) = (stats.clone(), stop.clone(), opts.workers);
        std::thread::Builder::new()
            .name("plantflow-demo-engine".into())
            .spawn(move || {
                crate::run::run(
                    plan,
                    crate::run::RunOptions {
                        workers,
                        follow: true,
                        stop: Some(stop),
                        stats: Some(stats),
                        tally_actions_only: false,
                        shutdown_timeout: None,
                        reset_state: false,
                        no_input_log: false,
                        // The simulated plant has ended when the demo stops
                        // the run: everything it sent is final.
                        drain: true,
                        cluster: None,
                    },
                )
            })
            .map_err(|e| e.to_string())?
    };
    Ok(Engine {
        thread: engine,
        stats,
        stop,
        currency,
    })
}

/// A bar of simulated minutes when interactive, else a hidden one.
fn progress_bar(opts: &DemoOptions) -> indicatif::ProgressBar {
    if opts.interactive {
        let b = indicatif::ProgressBar::new((opts.duration_ms / 60_000) as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    } else {
        indicatif::ProgressBar::hidden()
    }
}

/// Waits (at most 60 s, or 10 s without progress) until the engine has
/// read `n` rows.
fn wait_taken(stats: &Stats, n: u64) {
    let wait = Instant::now();
    let mut last = (0, Instant::now());
    while wait.elapsed() < Duration::from_secs(60) {
        let got = stats.rows_read.load(Relaxed);
        if got >= n {
            break;
        }
        if got != last.0 {
            last = (got, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(10) {
            break; // nothing more is coming
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Site 1's tags, served over OPC UA, with their index among the plant's tags.
fn opc_tags(plant: &Plant) -> Vec<(usize, SimTag)> {
    plant
        .tags
        .iter()
        .enumerate()
        .filter(|(_, t)| t.via == Via::OpcUa)
        .map(|(i, t)| {
            let path = t.tag.clone();
            (i, SimTag::new(&path, t.unit, t.eu_high))
        })
        .collect()
}

/// Site 2's line tags as MQTT JSON messages at `t`.
fn json_messages(plant: &Plant, t: i64, v: &[f64]) -> Vec<(String, Vec<u8>)> {
    plant
        .tags
        .iter()
        .enumerate()
        .filter(|(_, s)| s.via == Via::MqttJson)
        .map(|(i, s)| {
            (
                format!("plant/{}", s.tag),
                format!("{{\"ts\":{t},\"value\":{:.4}}}", v[i]).into_bytes(),
            )
        })
        .collect()
}

/// Site 1's values at `t` for the OPC UA server, by its tag index.
fn opc_values(
    opc_tags: &[(usize, SimTag)],
    v: &[f64],
    t: i64,
) -> Vec<(usize, f64, i64, opcua::types::StatusCode)> {
    opc_tags
        .iter()
        .enumerate()
        .map(|(k, (i, _))| (k, v[*i], t, opcua::types::StatusCode::Good))
        .collect()
}

/// The bar at simulated time `t`.
fn show_progress(bar: &indicatif::ProgressBar, t: i64, rows: u64, actions: usize) {
    bar.set_position(((t - T0) / 60_000) as u64);
    bar.set_message(format!(
        "{}  {} rows in, {} actions",
        chrono::DateTime::from_timestamp_millis(t)
            .map(|d| d.format("%a %d %b %H:%M").to_string())
            .unwrap_or_default(),
        rows,
        actions
    ));
}

/// The end-of-run summary: actions by owner, verified savings, where things went.
pub fn summary(r: &DemoResult) -> String {
    use std::collections::BTreeMap;
    use std::fmt::Write as _;
    let s = &r.summary;
    let cur = &r.currency;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n{} samples published, {} rows in, {} windows, {} dead letters, {:.1} s",
        r.samples_published,
        s.rows_read,
        s.windows,
        s.dead_letters.values().sum::<u64>(),
        s.elapsed.as_secs_f64()
    );
    let mut by_owner: BTreeMap<&str, (usize, f64, usize, usize)> = BTreeMap::new();
    for (a, _) in s.report.actions.values() {
        let e = by_owner.entry(a.owner.as_str()).or_default();
        e.0 += 1;
        e.1 += a.value.0;
        match a.status.as_str() {
            "open" | "acknowledged" => e.2 += 1,
            "verified" => e.3 += 1,
            _ => {}
        }
    }
    let _ = writeln!(
        out,
        "\n{:<12} {:>7} {:>16} {:>6} {:>9}",
        "owner", "actions", "value at stake", "open", "verified"
    );
    for (owner, (n, v, open, ver)) in &by_owner {
        let _ = writeln!(out, "{owner:<12} {n:>7} {v:>12.2} {cur} {open:>6} {ver:>9}");
    }
    let _ = writeln!(out, "\nactions:");
    let mut acts: Vec<_> = s.report.actions.values().map(|(a, _)| a).collect();
    acts.sort_by(|a, b| b.value.0.total_cmp(&a.value.0));
    for a in acts {
        let place = place(&a.site, &a.line, &a.asset);
        let _ = writeln!(
            out,
            "  {:<21} {:<20} {:<11} {:<18} {:>9.2} {cur}  {}",
            a.rule, place, a.owner, a.action_type, a.value.0, a.status
        );
    }
    let verified: Vec<_> = s
        .report
        .outcomes
        .values()
        .filter(|(o, _)| o.verdict == "verified")
        .map(|(o, _)| o)
        .collect();
    let _ = writeln!(out, "\nverified savings:");
    if verified.is_empty() {
        let _ = writeln!(
            out,
            "  none yet (the compressor fix needs the full week: --duration 7d)"
        );
    }
    for o in verified {
        let _ = writeln!(
            out,
            "  {} {}: {:.0} kWh avoided ({:.0} % of the adjusted baseline), {:.2} {cur}; CV(RMSE) {:.1} %, FSU68 {:.1} %",
            o.asset,
            o.rule,
            o.avoided_kwh.unwrap_or(0.0),
            o.fractional_savings.unwrap_or(0.0) * 100.0,
            o.avoided_cost.unwrap_or(0.0),
            o.cv_rmse.unwrap_or(0.0) * 100.0,
            o.fsu_68.unwrap_or(0.0) * 100.0
        );
    }
    let lake = r.lake.display();
    let _ = writeln!(out, "\nreport   {}", r.report.display());
    let _ = writeln!(
        out,
        "lake     {lake}/  (aggregates, actions, outcomes, outcome_buckets, billing, dead_letter)"
    );
    let _ = writeln!(
        out,
        "query    duckdb -c \"SELECT owner, count(*) AS actions, round(sum(value), 2) AS value FROM (SELECT * FROM read_parquet('{lake}/actions/**/*.parquet', hive_partitioning=true) QUALIFY revision = max(revision) OVER (PARTITION BY action_id)) GROUP BY ALL ORDER BY value DESC\""
    );
    out
}
