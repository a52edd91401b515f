//! The operator surface (`[http]`): health, readiness and Prometheus
//! metrics of a running node, read over loopback as a scraper would, and
//! the metrics parsed by Prometheus's own Python client.

use std::io::Write;

use crate::common::*;

/// A port nothing listens on now.
fn free_port() -> u16 {
    plantflow::sim::broker::free_port().unwrap()
}

/// The node in `--follow` with `[http]` on `port` (appended to `text`),
/// once its surface says where it listens.
fn node(dir: &std::path::Path, text: &str, port: u16, env: &[(&str, String)]) -> KillOnDrop {
    let df = dir.join("df.toml");
    std::fs::write(
        &df,
        format!("{text}\n[http]\nlisten = \"127.0.0.1:{port}\"\n"),
    )
    .unwrap();
    let (child, mut lines) = follow_node_lines(&df, env, dir, &[]);
    lines.wait_for(&format!("operator surface on http://127.0.0.1:{port}/"));
    child
}

/// Rows in the visible files of `table`.
fn rows_of(lake: &std::path::Path, table: &str) -> usize {
    batches(lake, table).iter().map(|b| b.num_rows()).sum()
}

/// A metric's value in Prometheus text (`name{labels} value`).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// A replay node: alive, ready (a replay has no connection to wait for),
/// and its metrics, read by Prometheus's own parser, count every row of the
/// input file and agree with the run's summary.
#[test]
fn a_replay_node_serves_health_readiness_and_metrics_prometheus_reads() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // Files roll every second, so commits come while the test watches.
    let text = std::fs::read_to_string(dataflow("workload_v1.toml"))
        .unwrap()
        .replace("roll_interval = \"1m\"", "roll_interval = \"1s\"");
    let lake = dir.path().join("lake");
    let env = [
        ("INPUT_DIR", fixture_dir().display().to_string()),
        ("OUT_DIR", lake.display().to_string()),
    ];
    let mut child = node(dir.path(), &text, port, &env);
    assert_eq!(http_get(port, "/healthz"), (200, "ok\n".to_string()));
    // The oracle: the rows of the file.
    let file_rows = std::fs::read_to_string(fixture_dir().join("samples.csv"))
        .unwrap()
        .lines()
        .count() as f64
        - 1.0;
    let metrics = wait_for("every row counted", || {
        let (code, body) = http_get(port, "/metrics");
        assert_eq!(code, 200);
        (value(&body, "plantflow_samples_read_total") == Some(file_rows)).then_some(body)
    });
    // Per source: its rows, and the latest event time in the file.
    let max_ts = std::fs::read_to_string(fixture_dir().join("samples.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .filter_map(|l| l.split(',').next()?.parse::<i64>().ok())
        .max()
        .unwrap();
    assert_eq!(
        value(
            &metrics,
            "plantflow_source_samples_read_total{source=\"samples\"}"
        ),
        Some(file_rows)
    );
    assert_eq!(
        value(
            &metrics,
            "plantflow_source_event_time_seconds{source=\"samples\"}"
        ),
        Some(max_ts as f64 / 1000.0),
        "{metrics}"
    );
    let (code, body) = http_get(port, "/readyz");
    assert_eq!(code, 200, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["ready"], true);
    // Prometheus's own parser reads it whole (OpenMetrics, `# EOF`).
    let py = std::process::Command::new("python3")
        .args(["-c", "import sys, json\nfrom prometheus_client.openmetrics.parser import text_string_to_metric_families as p\nout = {}\nfor f in p(sys.stdin.read()):\n    for s in f.samples:\n        out[s.name + json.dumps(s.labels, sort_keys=True)] = s.value\nprint(json.dumps(out))"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 with prometheus_client (installed by .ci/run)");
    py.stdin
        .as_ref()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let out = py.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: std::collections::HashMap<String, f64> =
        serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(parsed["plantflow_samples_read_total{}"], file_rows);
    let dead: f64 = parsed
        .iter()
        .filter(|(k, _)| k.starts_with("plantflow_dead_letters_total{"))
        .map(|(_, v)| v)
        .sum();
    assert!(parsed["plantflow_memory_in_use_bytes{}"] > 0.0);
    assert!(parsed["plantflow_process_resident_memory_bytes{}"] > 0.0);
    // What the lake committed, by table, as a reader of the lake sees it
    // (read until a commit is not in between).
    wait_for("the lake's counters to match its files", || {
        let (_, m) = http_get(port, "/metrics");
        let files = parquet_files(&lake, "aggregates");
        let bytes: u64 = files
            .iter()
            .map(|f| std::fs::metadata(f).unwrap().len())
            .sum();
        let want = [
            ("files", files.len() as f64),
            ("rows", rows_of(&lake, "aggregates") as f64),
            ("bytes", bytes as f64),
        ];
        (!files.is_empty()
            && want.iter().all(|(what, n)| {
                value(
                    &m,
                    &format!("plantflow_lake_{what}_total{{table=\"aggregates\"}}"),
                ) == Some(*n)
            }))
        .then_some(())
    });
    // Actions by owner and type: the lake's latest versions (withdrawn
    // ones left out) are the oracle.
    wait_for("the action counters to match the lake", || {
        let (_, m) = http_get(port, "/metrics");
        let mut want: std::collections::BTreeMap<(String, String), (f64, f64)> = Default::default();
        for a in latest(rows(&lake, "actions"), &["action_id"]).values() {
            if a["status"] == "withdrawn" {
                continue;
            }
            let k = (
                a["owner"].as_str().unwrap().to_string(),
                a["action_type"].as_str().unwrap().to_string(),
            );
            let e = want.entry(k).or_default();
            e.0 += 1.0;
            e.1 += a["value"].as_f64().unwrap();
        }
        let got = |name: &str, (o, t): &(String, String)| {
            value(
                &m,
                &format!("plantflow_{name}{{owner=\"{o}\",action_type=\"{t}\"}}"),
            )
        };
        (!want.is_empty()
            && want.iter().all(|(k, (n, v))| {
                got("actions", k) == Some(*n)
                    && got("actions_value", k).is_some_and(|x| close(x, *v))
            }))
        .then_some(())
    });
    // The summary at the end says the same.
    let (status, summary) = child.stop_for_summary();
    assert!(status.success(), "{summary}");
    let count = |label: &str| -> f64 {
        summary
            .lines()
            .find(|l| l.trim_start().starts_with(label))
            .and_then(|l| l.split_whitespace().nth(2))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("`{label}` in:\n{summary}"))
    };
    assert_eq!(count("rows in"), file_rows);
    assert_eq!(count("dead letters"), dead, "{summary}");
}

/// A live node is not ready while its broker is away (503, naming the
/// source), and ready once the broker is there.
#[test]
fn readiness_follows_the_mqtt_connection() {
    let dir = tempfile::tempdir().unwrap();
    let (p4, p5, port) = (free_port(), free_port(), free_port());
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mqtt");
    let text = std::fs::read_to_string(fixtures.join("dataflow.toml")).unwrap();
    let env = [
        ("INPUT_DIR", fixtures.display().to_string()),
        ("OUT_DIR", dir.path().join("lake").display().to_string()),
        ("MQTT_URL", format!("mqtt://127.0.0.1:{p5}")),
        ("CLIENT_ID", "plantflow-ready".to_string()),
    ];
    let mut child = node(dir.path(), &text, port, &env);
    let (code, body) = http_get(port, "/readyz");
    assert_eq!(code, 503, "{body}");
    let r: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(r["ready"], false);
    assert_eq!(r["not_ready"][0], "source `mqtt`: not connected", "{body}");
    assert_eq!(http_get(port, "/healthz").0, 200, "alive all the same");
    let _broker = plantflow::sim::broker::start(p4, p5).unwrap();
    wait_for("ready once the broker is there", || {
        (http_get(port, "/readyz").0 == 200).then_some(())
    });
    let (_, metrics) = http_get(port, "/metrics");
    assert_eq!(
        value(&metrics, "plantflow_source_connected{source=\"mqtt\"}"),
        Some(1.0),
        "{metrics}"
    );
    assert!(child.terminate().success());
}
