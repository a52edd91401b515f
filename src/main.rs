//! `plantflow` command line: run, validate, gen, demo.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use plantflow::dataflow;
use plantflow::gen::workload;
use plantflow::run::{run, RunOptions};

#[derive(Parser)]
#[command(
    name = "plantflow",
    version,
    about = "Stream processing value layer for industrial plants"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum StateCommand {
    /// Print what a lake's commit record holds (a dataflow file or a lake directory).
    Inspect { path: PathBuf },
}

#[derive(Subcommand)]
enum LakeCommand {
    /// Rewrite each partition's small files into files of about --target-size: one Delta
    /// version removes them and adds the new ones (readers see one or the other). Safe
    /// while a node writes the lake. Delta tables only (`format = "delta"`).
    Compact {
        /// The lake: the Parquet sink's `path`.
        lake: PathBuf,
        #[arg(long, default_value = "128MiB")]
        target_size: String,
        /// Only this table.
        #[arg(long)]
        table: Option<String>,
    },
    /// Delete the files no current Delta version names: compacted away, or never
    /// committed (a cut compaction), longer than --retain ago. Readers of older
    /// versions (time travel) lose them.
    Vacuum {
        lake: PathBuf,
        #[arg(long, default_value = "7d")]
        retain: String,
        /// List what would be deleted, delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// The bucket the lake is shipped to (its sink's `path`): what the local
        /// copy has not shipped yet goes up first, then the same files go there too.
        #[arg(long)]
        remote: Option<String>,
    },
}

#[derive(Subcommand)]
enum ImportCommand {
    /// Guess a historian export's layout (CSV or Parquet) and print a ready [sources.format] block.
    Inspect { file: PathBuf },
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Run a dataflow on N processes on loopback, with one summary.
    Local {
        dataflow: PathBuf,
        #[arg(long, default_value_t = 2)]
        processes: usize,
        /// Worker threads per process.
        #[arg(long, short = 'w', default_value_t = 1)]
        workers: usize,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum Command {
    /// Run a dataflow until its sources end (or, with --follow, until stopped).
    Run {
        /// The dataflow file (TOML).
        dataflow: PathBuf,
        /// Dataflow worker threads.
        #[arg(long, short = 'w', default_value_t = 1)]
        workers: usize,
        /// Tail replay files and watch context files for changes until SIGINT/SIGTERM.
        #[arg(long)]
        follow: bool,
        /// Print the summary as JSON instead of text.
        #[arg(long)]
        json: bool,
        /// After SIGINT/SIGTERM or a component's failure, exit with code 124
        /// if the run has not ended within this time (e.g. `30s`, `2m`).
        #[arg(long, default_value = "30s", value_parser = shutdown_timeout)]
        shutdown_timeout: std::time::Duration,
        /// Forget the lake's commit record (from another dataflow, or an
        /// earlier version of this one) and write from the start; the files
        /// already in the lake stay.
        #[arg(long)]
        reset_state: bool,
        /// On SIGINT/SIGTERM, close every open window and period as if the
        /// input had ended, and commit them (to retire a node; its lake
        /// cannot be resumed). Without it a stop keeps what is not final
        /// for the next start.
        #[arg(long)]
        drain: bool,
        /// Run the dataflow on this many processes together (a cluster on
        /// timely's own communication); each reads its share of the input.
        #[arg(long, default_value_t = 1)]
        processes: usize,
        /// This process's index in the cluster, 0..processes (process 0
        /// writes the lake).
        #[arg(long, default_value_t = 0)]
        process: usize,
        /// Every process's host:port, one per line in process order
        /// (default: 127.0.0.1:2101 and on).
        #[arg(long)]
        hostfile: Option<PathBuf>,
    },
    /// Try a cluster on this machine: the processes of one dataflow on loopback.
    Cluster {
        #[command(subcommand)]
        what: ClusterCommand,
    },
    /// What a dataflow's rules would have found over history, and its worth (no lake kept).
    Backtest {
        dataflow: PathBuf,
        /// The history: the directory the dataflow reads as ${INPUT_DIR}.
        #[arg(long)]
        input: PathBuf,
        /// Only this rule's actions.
        #[arg(long)]
        rule: Option<String>,
        /// Another version of the dataflow to compare with (actions added, removed, changed).
        #[arg(long)]
        baseline: Option<PathBuf>,
        /// The page written (HTML, with a chart).
        #[arg(long, default_value = "backtest.html")]
        page: PathBuf,
        /// Print the actions as JSON instead of text.
        #[arg(long)]
        json: bool,
        #[arg(long, short = 'w', default_value_t = 1)]
        workers: usize,
    },
    /// Print the JSON Schema of dataflow files (for editors: see README).
    Schema,
    /// Historian exports (CSV or Parquet): their layout.
    Import {
        #[command(subcommand)]
        what: ImportCommand,
    },
    /// Durable state of a lake.
    State {
        #[command(subcommand)]
        what: StateCommand,
    },
    /// Upkeep of a lake's Delta tables: compaction and retention.
    Lake {
        #[command(subcommand)]
        what: LakeCommand,
    },
    /// Check dataflow files and report every problem (exit 78 on any).
    Validate {
        #[arg(required = true)]
        dataflows: Vec<PathBuf>,
    },
    /// Generate inputs.
    Gen {
        #[command(subcommand)]
        what: GenCommand,
    },
    /// Record an action status update (appends to the dataflow's `[lifecycle]` file).
    Action {
        /// ack, done or reject.
        #[arg(value_parser = ["ack", "acknowledged", "done", "reject", "rejected"])]
        verb: String,
        action_id: String,
        /// The dataflow whose `[lifecycle] path` receives the update.
        #[arg(long, short = 'd', required_unless_present = "file")]
        dataflow: Option<PathBuf>,
        /// Append to this JSON-lines file instead.
        #[arg(long, conflicts_with = "dataflow")]
        file: Option<PathBuf>,
        /// When it happened: epoch ms or RFC 3339 (default: now).
        #[arg(long)]
        at: Option<String>,
        /// Who did it.
        #[arg(long, default_value = "")]
        by: String,
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Serve a plant over OPC UA: the tags of INPUT/assets.csv, fed from INPUT/samples.csv
    /// (try `dataflows/opcua_plant.toml` against it).
    SimOpcua {
        /// Directory with assets.csv and samples.csv (e.g. from `plantflow gen workload`).
        #[arg(long)]
        input: PathBuf,
        #[arg(long, default_value_t = 4840)]
        port: u16,
        /// Event-time speed-up (60 = one hour of samples per minute; 0 = as fast as possible).
        #[arg(long, default_value_t = 60.0)]
        speed: f64,
        /// Seconds to wait before the first value (time for clients to subscribe).
        #[arg(long, default_value_t = 5)]
        delay: u64,
        /// Username/password a client must use instead of anonymous (`user:password`).
        #[arg(long)]
        user: Option<String>,
        /// Directory of the server's own certificate.
        #[arg(long, default_value = "pki-sim")]
        pki: PathBuf,
    },
    /// Run a simulated plant (OPC UA + MQTT + Sparkplug B) through `dataflows/demo.toml`:
    /// actions as they open, verified savings, a Parquet lake and report.html.
    Demo {
        /// Output directory: lake/, report.html, input/ (context files, status.jsonl).
        #[arg(long, default_value = "plantflow-demo")]
        out: PathBuf,
        /// Simulated time per wall-clock time (10080: one week in a minute).
        #[arg(long, default_value_t = 10080.0)]
        speed: f64,
        /// Simulated duration (e.g. 7d, 36h); the injected problems need the full week.
        #[arg(long, default_value = "7d")]
        duration: String,
        #[arg(long, short = 'w', default_value_t = 2)]
        workers: usize,
        /// No progress bar or action lines (the summary is still printed).
        #[arg(long)]
        quiet: bool,
        /// Where the action board and /metrics listen (another free port when taken).
        #[arg(long, default_value = "127.0.0.1:9464")]
        http: std::net::SocketAddr,
        /// Keep the node and its board running after the simulated time, until Ctrl-C.
        #[arg(long)]
        serve: bool,
        /// Ship the lake to an object store as Delta tables (`s3://bucket/prefix`, an
        /// empty prefix; credentials from AWS_* variables); OUT/lake is its local copy.
        #[arg(long)]
        lake: Option<String>,
    },
    /// Build the self-contained HTML report from a Parquet lake.
    Report {
        /// The lake: the Parquet sink's `path`.
        #[arg(long)]
        lake: PathBuf,
        #[arg(long, default_value = "report.html")]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum GenCommand {
    /// Workload v1 files (samples, assets, tariff, production).
    Workload {
        #[arg(long, default_value_t = 2000)]
        tags: usize,
        #[arg(long, default_value_t = 3600)]
        seconds: u64,
        #[arg(long, default_value_t = 7)]
        seed: u64,
        #[arg(long)]
        out: PathBuf,
        /// Also write the samples as `samples.parquet` (a historian export).
        #[arg(long)]
        parquet: bool,
    },
}

fn init_tracing() {
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("PLANTFLOW_LOG").unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new(
                // plantflow logs connection changes itself; the protocol stacks only their errors.
                // The embedded broker (demo, tests) logs clients going away and our own
                // readiness probes as errors; it stays quiet.
                "warn,opcua_client=error,opcua_server=error,opcua_core=error,rumqttd=off",
            )
        });
    // Colours only on a terminal: a log file keeps plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .try_init();
}

fn main() -> ExitCode {
    init_tracing();
    plantflow::run::install_panic_hook();
    let cli = Cli::parse();
    match cli.command {
        Command::Action {
            verb,
            action_id,
            dataflow,
            file,
            at,
            by,
            note,
        } => action(verb, action_id, dataflow, file, at, by, note),
        Command::Run {
            dataflow,
            workers,
            follow,
            json,
            shutdown_timeout,
            reset_state,
            drain,
            processes,
            process,
            hostfile,
        } => {
            let cluster = match processes {
                // One process is no cluster (its hostfile aside).
                1 if process == 0 => None,
                _ => match plantflow::config::cluster::Cluster::new(
                    processes,
                    process,
                    hostfile.as_deref(),
                ) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        eprintln!("{e}");
                        return ExitCode::from(plantflow::EXIT_CONFIG as u8);
                    }
                },
            };
            let how = RunHow {
                workers,
                follow,
                json,
                shutdown_timeout,
                reset_state,
                drain,
                cluster,
            };
            run_dataflow(&dataflow, how)
        }
        Command::Cluster {
            what:
                ClusterCommand::Local {
                    dataflow,
                    processes,
                    workers,
                    json,
                },
        } => plantflow::run::cluster::main_local(&dataflow, processes, workers, json),
        Command::State {
            what: StateCommand::Inspect { path },
        } => plantflow::run::state_inspect(&path),
        Command::Lake { what } => match what {
            LakeCommand::Compact {
                lake,
                target_size,
                table,
            } => plantflow::run::lake_compact(&lake, &target_size, table.as_deref()),
            LakeCommand::Vacuum {
                lake,
                retain,
                dry_run,
                remote,
            } => plantflow::run::lake_vacuum(&lake, &retain, dry_run, remote.as_deref()),
        },
        Command::Validate { dataflows } => validate(&dataflows),
        Command::Backtest {
            dataflow,
            input,
            rule,
            baseline,
            page,
            json,
            workers,
        } => {
            let o = plantflow::report::backtest::Options {
                dataflow,
                input,
                rule,
                baseline,
                workers,
            };
            plantflow::report::backtest::main(&o, &page, json)
        }
        Command::Schema => {
            print!("{}", plantflow::dataflow::schema::text());
            ExitCode::SUCCESS
        }
        Command::Import {
            what: ImportCommand::Inspect { file },
        } => import_inspect(&file),
        Command::SimOpcua {
            input,
            port,
            speed,
            delay,
            user,
            pki,
        } => plantflow::sim::opcua_cli::main(&input, port, speed, delay, user, pki),
        Command::Gen {
            what:
                GenCommand::Workload {
                    tags,
                    seconds,
                    seed,
                    out,
                    parquet,
                },
        } => gen_workload(tags, seconds, seed, &out, parquet),
        Command::Demo {
            out,
            speed,
            duration,
            workers,
            quiet,
            http,
            serve,
            lake,
        } => demo(out, speed, &duration, workers, (quiet, http, serve), lake),
        Command::Report { lake, out } => match plantflow::report::write(&lake, &out) {
            Ok(r) => {
                println!(
                    "wrote {} ({} actions, {} verified, {} charts)",
                    out.display(),
                    r.actions,
                    r.verified,
                    r.charts
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("plantflow report: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

/// `plantflow run`: one dataflow to the end of its sources (or a signal).
/// `--shutdown-timeout`: a positive duration.
fn shutdown_timeout(s: &str) -> Result<std::time::Duration, String> {
    match plantflow::config::units::parse_duration_ms(s)? {
        0 => Err("must be greater than 0".into()),
        ms => Ok(std::time::Duration::from_millis(ms)),
    }
}

/// `plantflow run`'s options.
struct RunHow {
    workers: usize,
    follow: bool,
    json: bool,
    shutdown_timeout: std::time::Duration,
    reset_state: bool,
    drain: bool,
    cluster: Option<plantflow::config::cluster::Cluster>,
}

fn run_dataflow(dataflow: &Path, how: RunHow) -> ExitCode {
    let RunHow {
        workers,
        follow,
        json,
        shutdown_timeout,
        reset_state,
        drain,
        cluster,
    } = how;
    let plan = match dataflow::load(dataflow) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{}", e.render());
            return ExitCode::from(plantflow::EXIT_CONFIG as u8);
        }
    };
    let currency = plan.currency.clone();
    let stop = Arc::new(AtomicBool::new(false));
    // A replay on a terminal shows how far it is.
    let stats = Arc::new(plantflow::stats::Stats::default());
    let ended = Arc::new(AtomicBool::new(false));
    let bar =
        plantflow::run::progress::replay_bar(&plan.sources, follow, stats.clone(), ended.clone());
    let options = RunOptions {
        workers,
        follow,
        stop: Some(stop),
        stats: Some(stats),
        tally_actions_only: true,
        shutdown_timeout: Some(shutdown_timeout),
        reset_state,
        drain,
        cluster,
        ..Default::default()
    };
    // A panic outside every component (the panic hook has said where).
    let result = std::panic::catch_unwind(|| run(plan, options));
    ended.store(true, std::sync::atomic::Ordering::Relaxed);
    if let Some(b) = bar {
        let _ = b.join();
    }
    let Ok(result) = result else {
        return ExitCode::from(plantflow::run::supervise::EXIT_INTERNAL);
    };
    match result {
        Ok(summary) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "rows_read": summary.rows_read,
                        "rows_accepted": summary.rows_accepted,
                        "dropped_quality": summary.dropped_quality,
                        "late_rows": summary.late_rows,
                        "dead_letters": summary.dead_letters,
                        "source_events": summary.events,
                        "windows": summary.windows,
                        "corrections": summary.corrections,
                        "windows_spilled": summary.windows_spilled,
                        "windows_restored": summary.windows_restored,
                        "groups_spilled": summary.groups_spilled,
                        "groups_restored": summary.groups_restored,
                        "actions": summary.report.tally.seen(),
                        "outcomes": summary.report.outcomes.len(),
                        "bills": summary.report.bills.len(),
                        "suppressed_maintenance": summary.suppressed_maintenance,
                        "suppressed_cooldown": summary.suppressed_cooldown,
                        "files": summary.report.files,
                        "sink_queue_peak_bytes": summary.sink_queue_peak,
                        "resumed": summary.resumed.as_ref().map(|r| serde_json::json!({
                            "after_commit": r.seq,
                            "before": r.before,
                            "republished": r.republished,
                            "orphans_deleted": r.orphans,
                            "nothing_to_do": r.nothing_to_do,
                        })),
                        "elapsed_s": summary.elapsed.as_secs_f64(),
                        "peak_rss_bytes": plantflow::run::peak_rss_bytes(),
                    })
                );
            } else {
                print!("{}", summary.render(&currency));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("plantflow: {e}");
            ExitCode::from(e.code)
        }
    }
}

/// `plantflow import inspect`: the guessed `[sources.format]` block.
fn import_inspect(file: &Path) -> ExitCode {
    match plantflow::sources::replay::format::inspect::inspect(file) {
        Ok(g) => {
            print!("{}", g.render(file));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

/// `plantflow validate`: every problem of every file, exit 78 on any.
fn validate(dataflows: &[PathBuf]) -> ExitCode {
    let mut bad = false;
    for d in dataflows {
        match dataflow::load(d) {
            Ok(p) => println!(
                "{}: ok ({} source{}, {} metric{}, {} rule{})",
                d.display(),
                p.sources.len(),
                if p.sources.len() == 1 { "" } else { "s" },
                p.metrics.len(),
                if p.metrics.len() == 1 { "" } else { "s" },
                p.rules.len(),
                if p.rules.len() == 1 { "" } else { "s" }
            ),
            Err(e) => {
                eprintln!("{}", e.render());
                bad = true;
            }
        }
    }
    if bad {
        ExitCode::from(plantflow::EXIT_CONFIG as u8)
    } else {
        ExitCode::SUCCESS
    }
}

/// `plantflow gen workload`: the deterministic reference workload.
fn gen_workload(tags: usize, seconds: u64, seed: u64, out: &Path, parquet: bool) -> ExitCode {
    let params = workload::Params {
        tags,
        seconds,
        seed,
        ..workload::Params::default()
    };
    let written = workload::generate(&params, out).and_then(|m| {
        if parquet {
            workload::samples_to_parquet(&out.join("samples.csv"), &out.join("samples.parquet"))?;
        }
        Ok(m)
    });
    match written {
        Ok(m) => {
            println!(
                "wrote {} rows ({} tags x {} s, {} out of order, {} bad) to {}",
                m.rows,
                tags,
                seconds,
                m.out_of_order_rows,
                m.bad_rows,
                out.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: cannot write {}: {e}", out.display());
            ExitCode::FAILURE
        }
    }
}

fn demo(
    out: PathBuf,
    speed: f64,
    duration: &str,
    workers: usize,
    (quiet, http, serve): (bool, std::net::SocketAddr, bool),
    lake_url: Option<String>,
) -> ExitCode {
    let duration_ms = match plantflow::config::units::parse_duration_ms(duration) {
        Ok(ms) if ms >= 3_600_000 => ms as i64,
        Ok(_) => {
            eprintln!("plantflow demo: --duration must be at least 1h");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("plantflow demo: --duration: {e}");
            return ExitCode::from(2);
        }
    };
    if !(speed.is_finite() && speed >= 1.0) {
        eprintln!("plantflow demo: --speed must be at least 1");
        return ExitCode::from(2);
    }
    let opts = plantflow::demo::DemoOptions {
        out: out.clone(),
        speed,
        duration_ms,
        workers,
        interactive: !quiet,
        http,
        serve,
        lake_url,
    };
    match plantflow::demo::run(&opts) {
        Ok(r) => {
            print!("{}", plantflow::demo::summary(&r));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("plantflow demo: {e}");
            ExitCode::FAILURE
        }
    }
}

fn action(
    verb: String,
    action_id: String,
    dataflow: Option<PathBuf>,
    file: Option<PathBuf>,
    at: Option<String>,
    by: String,
    note: String,
) -> ExitCode {
    use std::io::Write;
    let path = match (file, dataflow) {
        (Some(f), _) => f,
        (None, Some(d)) => match dataflow::load(&d) {
            Ok(p) => match p.plan.lifecycle {
                Some(l) => l.path,
                None => {
                    eprintln!(
                        "plantflow: {} has no `[lifecycle] path` for status updates",
                        d.display()
                    );
                    return ExitCode::from(plantflow::EXIT_CONFIG as u8);
                }
            },
            Err(e) => {
                eprintln!("{}", e.render());
                return ExitCode::from(plantflow::EXIT_CONFIG as u8);
            }
        },
        (None, None) => unreachable!("clap requires one"),
    };
    let at = match at
        .as_deref()
        .map(plantflow::sources::status::parse_time_str)
    {
        None => plantflow::model::now_ms(),
        Some(Ok(ms)) => ms,
        Some(Err(e)) => {
            eprintln!("plantflow: --at: {e}");
            return ExitCode::from(2);
        }
    };
    let status = plantflow::model::canonical_status(&verb).unwrap_or("done");
    let line = serde_json::json!({
        "action_id": action_id, "status": status, "at": at, "by": by, "note": note,
    });
    let result = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| writeln!(f, "{line}"));
    match result {
        Ok(()) => {
            println!("{status} {action_id} at {at} -> {}", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("plantflow: cannot append to {}: {e}", path.display());
            ExitCode::from(1)
        }
    }
}
