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

/// The reference dataflow with files rolling every second (commits come
/// while a test watches), its lake under `dir` and the environment.
fn workload(dir: &std::path::Path) -> (String, std::path::PathBuf, [(&'static str, String); 2]) {
    let text = std::fs::read_to_string(dataflow("workload_v1.toml"))
        .unwrap()
        .replace("roll_interval = \"1m\"", "roll_interval = \"1s\"");
    let lake = dir.join("lake");
    let env = [
        ("INPUT_DIR", fixture_dir().display().to_string()),
        ("OUT_DIR", lake.display().to_string()),
    ];
    (text, lake, env)
}

/// `(action_id, revision)` of every action listed, sorted.
fn listed_ids<'a>(actions: impl IntoIterator<Item = &'a serde_json::Value>) -> Vec<(String, i64)> {
    let mut out: Vec<(String, i64)> = actions
        .into_iter()
        .map(|a| {
            let id = a["action_id"].as_str().unwrap().to_string();
            (id, a["revision"].as_i64().unwrap())
        })
        .collect();
    out.sort();
    out
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
    let (text, lake, env) = workload(dir.path());
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
    // Bytes in: the whole file.
    let size = std::fs::metadata(fixture_dir().join("samples.csv"))
        .unwrap()
        .len() as f64;
    wait_for("every byte of the file counted", || {
        let (_, m) = http_get(port, "/metrics");
        let series = "plantflow_source_read_bytes_total{source=\"samples\"}";
        (value(&m, series) == Some(size)).then_some(())
    });
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

/// The node's token for the actions API in these tests.
const TOKEN: &str = "test-token-0123456789abcdef";

/// Reads server-sent events from `/api/v1/events` until one of `kind`
/// whose data satisfies `want`; returns its data.
fn sse_until(
    port: u16,
    kind: &str,
    want: impl Fn(&serde_json::Value) -> bool + Send + 'static,
) -> std::sync::mpsc::Receiver<serde_json::Value> {
    use std::io::{BufRead, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let kind = kind.to_string();
    let mut r = std::io::BufReader::new(s);
    // The headers are read before this returns: the stream is subscribed.
    let mut line = String::new();
    while r.read_line(&mut line).unwrap() > 0 && line != "\r\n" {
        line.clear();
    }
    std::thread::spawn(move || {
        let mut event = String::new();
        for line in r.lines() {
            let Ok(line) = line else { return };
            if let Some(e) = line.strip_prefix("event: ") {
                event = e.to_string();
            } else if let Some(d) = line.strip_prefix("data: ") {
                if event == kind {
                    if let Ok(v) = serde_json::from_str::<serde_json::Value>(d) {
                        if want(&v) {
                            let _ = tx.send(v);
                            return;
                        }
                    }
                }
            }
        }
    });
    rx
}

/// The actions API of a node with a lifecycle file: the list and each
/// action equal the lake's; a status change needs the token (401 without
/// it or with another, nothing written), a well-formed body (400), a known
/// action (404) and a change the lifecycle allows (409); an accepted one
/// reaches the lake as a new revision, and its followers as an event.
#[test]
fn the_actions_api_lists_the_lakes_actions_and_takes_status_changes_with_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let status = dir.path().join("status.jsonl");
    let text = std::fs::read_to_string(dataflow("workload_v1.toml"))
        .unwrap()
        .replace("roll_interval = \"1m\"", "roll_interval = \"1s\"")
        + &format!("\n[lifecycle]\npath = \"{}\"\n", status.display());
    let text =
        format!("{text}\n[http]\nlisten = \"127.0.0.1:{port}\"\ntoken_env = \"NODE_TOKEN\"\n");
    let df = dir.path().join("df.toml");
    std::fs::write(&df, text).unwrap();
    let lake = dir.path().join("lake");
    let env = [
        ("INPUT_DIR", fixture_dir().display().to_string()),
        ("OUT_DIR", lake.display().to_string()),
        ("NODE_TOKEN", TOKEN.to_string()),
    ];
    let (mut child, mut lines) = follow_node_lines(&df, &env, dir.path(), &[]);
    lines.wait_for(&format!("operator surface on http://127.0.0.1:{port}/"));
    // The list is the lake's latest version of every action, by value.
    let lake_latest = || latest(rows(&lake, "actions"), &["action_id"]);
    let listed = wait_for("the API and the lake to hold the same actions", || {
        let (code, body) = http_get(port, "/api/v1/actions");
        assert_eq!(code, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let key = |a: &serde_json::Value| {
            let id = a["action_id"].as_str().unwrap().to_string();
            let status = a["status"].as_str().unwrap().to_string();
            (id, a["revision"].as_i64().unwrap(), status)
        };
        let got: Vec<(String, i64, String)> =
            v["actions"].as_array().unwrap().iter().map(key).collect();
        let mut want: Vec<(String, i64, String)> = lake_latest()
            .values()
            .map(|a| key(&serde_json::to_value(a).unwrap()))
            .collect();
        let mut sorted = got.clone();
        sorted.sort();
        want.sort();
        (!want.is_empty() && sorted == want).then_some(v)
    });
    let values: Vec<f64> = listed["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["value"].as_f64().unwrap())
        .collect();
    assert!(
        values.windows(2).all(|w| w[0] >= w[1]),
        "by value: {values:?}"
    );
    assert_eq!(listed["total"].as_u64().unwrap() as usize, values.len());
    // The largest open action, and the filters.
    let first = listed["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["status"] == "open")
        .expect("an open action")
        .clone();
    let id = first["action_id"].as_str().unwrap().to_string();
    let owner = first["owner"].as_str().unwrap();
    let (_, body) = http_get(port, &format!("/api/v1/actions?owner={owner}&status=open"));
    let mine: serde_json::Value = serde_json::from_str(&body).unwrap();
    let mine = mine["actions"].as_array().unwrap();
    let want_mine = lake_latest()
        .values()
        .filter(|a| a["owner"] == owner && a["status"] == "open")
        .count();
    assert_eq!(mine.len(), want_mine);
    assert!(mine
        .iter()
        .all(|a| a["owner"] == owner && a["status"] == "open"));
    assert_eq!(http_get(port, "/api/v1/actions?colour=red").0, 400);
    // One action: every revision the lake has of it.
    let (code, body) = http_get(port, &format!("/api/v1/actions/{id}"));
    assert_eq!(code, 200);
    let one: serde_json::Value = serde_json::from_str(&body).unwrap();
    let revs: Vec<i64> = one["revisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["revision"].as_i64().unwrap())
        .collect();
    let mut lake_revs: Vec<i64> = rows(&lake, "actions")
        .iter()
        .filter(|a| a["action_id"] == id.as_str())
        .map(|a| a["revision"].as_i64().unwrap())
        .collect();
    lake_revs.sort();
    assert_eq!(revs, lake_revs);
    assert_eq!(http_get(port, "/api/v1/actions/nope").0, 404);

    // Refusals change nothing.
    let ack = format!("/api/v1/actions/{id}/ack");
    let json = [("Content-Type", "application/json")];
    let auth = format!("Bearer {TOKEN}");
    let with_token = [
        ("Content-Type", "application/json"),
        ("Authorization", auth.as_str()),
    ];
    let body = r#"{"by":"ana","note":"valve checked"}"#;
    assert_eq!(http_request(port, "POST", &ack, &json, body).0, 401);
    let wrong = [("Authorization", "Bearer test-token-0123456789abcdeX")];
    assert_eq!(http_request(port, "POST", &ack, &wrong, body).0, 401);
    assert_eq!(
        http_request(port, "POST", &ack, &with_token, "{\"note\":1").0,
        400
    );
    assert_eq!(
        http_request(port, "POST", &ack, &with_token, r#"{"note":"no one"}"#).0,
        400
    );
    assert_eq!(
        http_request(port, "POST", "/api/v1/actions/nope/ack", &with_token, body).0,
        404
    );
    assert!(!status.exists() || std::fs::read_to_string(&status).unwrap().is_empty());

    // Accepted: on disk at once, in the lake and to followers soon after.
    let events = sse_until(port, "action", {
        let id = id.clone();
        move |a| a["action_id"] == id.as_str() && a["status"] == "acknowledged"
    });
    let (code, answer) = http_request(port, "POST", &ack, &with_token, body);
    assert_eq!(code, 202, "{answer}");
    let line = std::fs::read_to_string(&status).unwrap();
    assert!(
        line.contains(&id) && line.contains("\"acknowledged\""),
        "{line}"
    );
    // A second acknowledgement conflicts (the first is on its way).
    let (code, why) = http_request(port, "POST", &ack, &with_token, body);
    assert_eq!(code, 409, "{why}");
    assert!(why.contains("acknowledged"), "{why}");
    let ev = events
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("the acknowledged revision as an event");
    assert_eq!(ev["status_by"], "ana");
    wait_for("the acknowledged revision in the lake", || {
        let a = lake_latest().remove(&format!("{id:?}"))?;
        (a["status"] == "acknowledged"
            && a["status_by"] == "ana"
            && a["status_note"] == "valve checked"
            && a["revision"] == ev["revision"])
            .then_some(())
    });
    // Done, then a rejection of a done action conflicts.
    let done = format!("/api/v1/actions/{id}/done");
    assert_eq!(http_request(port, "POST", &done, &with_token, body).0, 202);
    let reject = format!("/api/v1/actions/{id}/reject");
    let (code, why) = http_request(port, "POST", &reject, &with_token, body);
    assert_eq!(code, 409, "{why}");
    wait_for("the done revision in the lake", || {
        let a = lake_latest().remove(&format!("{id:?}"))?;
        (a["status"] == "done").then_some(())
    });
    let (_, m) = http_get(port, "/metrics");
    let open_total: f64 = m
        .lines()
        .filter(|l| l.starts_with("plantflow_actions_open{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    let want_open = lake_latest()
        .values()
        .filter(|a| a["status"] == "open" || a["status"] == "acknowledged")
        .count();
    assert_eq!(open_total, want_open as f64, "{m}");
    // Every operation of the OpenAPI description answers with one of the
    // codes it documents (the event stream is followed above).
    let spec: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/openapi.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let mut checked = 0;
    for (path, ops) in spec["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            if path == "/api/v1/events" {
                continue;
            }
            let url = path.replace("{id}", &id);
            let (code, body) = http_request(
                port,
                &method.to_uppercase(),
                &url,
                &with_token,
                r#"{"by":"spec"}"#,
            );
            assert!(
                op["responses"].get(code.to_string()).is_some(),
                "{method} {url}: {code} is not documented: {body}"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 10);
    let (st, summary) = child.stop_for_summary();
    assert!(st.success(), "{summary}");
    // The token never shows in what the node printed.
    assert!(!summary.contains(TOKEN));
    assert!(!lines.all().contains(TOKEN));
}

/// `[http]` beyond loopback without a token, or with a token that is not
/// there or too short, is a configuration error naming the key (exit 78).
#[test]
fn http_without_a_usable_token_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let base = std::fs::read_to_string(dataflow("workload_v1.toml")).unwrap();
    let short = dir.path().join("short.token");
    std::fs::write(&short, "abc\n").unwrap();
    for (http, key, says) in [
        (
            "listen = \"0.0.0.0:9464\"",
            "http.listen",
            "beyond this machine",
        ),
        (
            "listen = \"127.0.0.1:9464\"\ntoken_env = \"PLANTFLOW_NO_SUCH_VAR\"",
            "http.token_env",
            "is not set",
        ),
        (
            &format!(
                "listen = \"127.0.0.1:9464\"\ntoken_file = \"{}\"",
                short.display()
            ),
            "http.token_file",
            "16 or more",
        ),
    ] {
        let df = dir.path().join("df.toml");
        std::fs::write(&df, format!("{base}\n[http]\n{http}\n")).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_plantflow"))
            .arg("validate")
            .arg(&df)
            .env("INPUT_DIR", fixture_dir())
            .env("OUT_DIR", dir.path().join("lake"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{err}");
        assert!(
            err.contains(&format!("key `{key}`")) && err.contains(says),
            "{err}"
        );
        assert!(!err.contains("abc\n"), "{err}");
    }
}

/// After a restart from a checkpoint (the engine sends again nothing it
/// sent before), the board still lists every action: it reads the lake's
/// latest revisions at start.
#[test]
fn the_board_holds_the_lakes_actions_after_a_restart_from_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (text, lake, env) = workload(dir.path());
    let ids = |v: &serde_json::Value| listed_ids(v["actions"].as_array().unwrap());
    let lake_ids = || {
        let latest = latest(rows(&lake, "actions"), &["action_id"]);
        let as_json: Vec<serde_json::Value> = latest
            .values()
            .map(|a| serde_json::json!({"action_id": a["action_id"], "revision": a["revision"]}))
            .collect();
        listed_ids(&as_json)
    };
    let mut first = node(dir.path(), &text, port, &env);
    wait_for(
        "the first run's actions in the lake and on the board",
        || {
            let (_, body) = http_get(port, "/api/v1/actions?limit=5000");
            let v: serde_json::Value = serde_json::from_str(&body).ok()?;
            let want = lake_ids();
            (!want.is_empty() && ids(&v) == want).then_some(())
        },
    );
    assert!(first.terminate().success());
    let before = lake_ids();
    let _again = node(dir.path(), &text, port, &env);
    let (_, m) = http_get(port, "/metrics");
    assert_eq!(
        value(
            &m,
            "plantflow_source_events_total{event=\"started from a checkpoint\"}"
        ),
        Some(1.0),
        "{m}"
    );
    let (_, body) = http_get(port, "/api/v1/actions?limit=5000");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ids(&v), before);
}

/// A lake whose disk is nearly full makes the node not ready, naming the
/// sink (a tmpfs of 4 MiB, below the 16 MiB the check asks for).
#[test]
fn a_nearly_full_lake_disk_makes_the_node_not_ready() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let Some(_disk) = small_disk(&lake, "4m") else {
        return;
    };
    let port = free_port();
    let text = std::fs::read_to_string(dataflow("workload_v1.toml")).unwrap();
    let env = [
        ("INPUT_DIR", fixture_dir().display().to_string()),
        ("OUT_DIR", lake.display().to_string()),
    ];
    let mut child = node(dir.path(), &text, port, &env);
    let (code, body) = http_get(port, "/readyz");
    assert_eq!(code, 503, "{body}");
    let r: serde_json::Value = serde_json::from_str(&body).unwrap();
    let why = r["not_ready"][0].as_str().unwrap();
    assert!(
        why.starts_with("sink: the lake's disk has") && why.contains("KiB free"),
        "{body}"
    );
    assert!(!lake.join(".plantflow-ready-probe").exists());
    child.terminate();
}
