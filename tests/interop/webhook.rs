//! The `webhook` sink (issue 32) against a work-order endpoint nobody here
//! wrote: Python's own `http.server`, answering HTTP 500 for a while, then
//! 201. Every action revision of the lake arrives with status 201 exactly
//! once per idempotency key, rendered by the example CMMS template; the
//! secret header comes from the environment and is never in a log or the lake.

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};

use arrow::array::{Array, AsArray};
use arrow::datatypes::Int64Type;

use crate::common::*;

const TOKEN: &str = "Bearer s3cr3t-7f1c9e-token";

/// Every (action_id, revision) the lake's `actions` table holds.
fn lake_revisions(out: &Path) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    for f in parquet_files(out, "actions") {
        let r = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            std::fs::File::open(&f).unwrap(),
        )
        .unwrap()
        .build()
        .unwrap();
        for b in r {
            let b = b.unwrap();
            let ids = b.column_by_name("action_id").unwrap();
            let ids = arrow::compute::cast(ids, &arrow::datatypes::DataType::Utf8).unwrap();
            let ids = ids.as_string::<i32>();
            let revs = b.column_by_name("revision").unwrap();
            let revs = arrow::compute::cast(revs, &arrow::datatypes::DataType::Int64).unwrap();
            let revs = revs.as_primitive::<Int64Type>();
            for i in 0..b.num_rows() {
                assert!(!ids.is_null(i));
                keys.insert(format!("{}-{}", ids.value(i), revs.value(i)));
            }
        }
    }
    keys
}

#[test]
fn every_action_revision_arrives_once_per_key_across_a_server_that_fails_then_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("requests.jsonl");
    let mut server = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/webhook_server.py"))
        .arg(&log)
        .arg("4")
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut port = String::new();
    std::io::BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut port)
        .unwrap();
    let port: u16 = port.trim().parse().unwrap();
    let template =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/webhook/cmms_work_request.json");
    let text = std::fs::read_to_string(dataflow("workload_v1.toml")).unwrap();
    let df = dir.path().join("webhook.toml");
    std::fs::write(
        &df,
        format!(
            "{text}\n[[sinks]]\ntype = \"webhook\"\nid = \"cmms\"\n\
             url = \"http://127.0.0.1:{port}/api/work-requests?apikey=q-s3cr3t\"\n\
             template = \"{}\"\nheaders = {{ \"X-Plant\" = \"north\" }}\n\
             headers_env = {{ Authorization = \"CMMS_AUTHORIZATION\" }}\n",
            template.display()
        ),
    )
    .unwrap();
    let out = dir.path().join("out");
    let o = Command::new(env!("CARGO_BIN_EXE_plantflow"))
        .args(["run", "--workers", "2"])
        .arg(&df)
        .env("INPUT_DIR", fixture_dir())
        .env("OUT_DIR", &out)
        .env("CMMS_AUTHORIZATION", TOKEN)
        .env("PLANTFLOW_LOG", "debug,opcua=warn,rumqttd=off")
        .current_dir(dir.path())
        .output()
        .unwrap();
    let _ = server.kill();
    let _ = server.wait();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    );
    assert!(o.status.success(), "{stderr}");
    let want = lake_revisions(&out);
    assert!(want.len() >= 5, "only {} action revisions", want.len());
    let requests: Vec<serde_json::Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // The server was down for the first four requests: they were tried again.
    assert_eq!(
        requests.iter().filter(|r| r["status"] == 500).count(),
        4,
        "{requests:#?}"
    );
    let mut delivered: BTreeMap<String, usize> = BTreeMap::new();
    for r in requests.iter().filter(|r| r["status"] == 201) {
        *delivered
            .entry(r["key"].as_str().unwrap().to_string())
            .or_default() += 1;
        assert_eq!(r["authorization"], TOKEN);
        assert_eq!(r["content_type"], "application/json");
        // The example template's work request, filled from the action row.
        let body = &r["body"];
        let key = r["key"].as_str().unwrap();
        assert_eq!(body["externalId"], key);
        let id = body["source"]["actionId"].as_str().unwrap();
        let rev = body["source"]["revision"].as_i64().unwrap();
        assert_eq!(format!("{id}-{rev}"), key);
        assert!(body["title"]
            .as_str()
            .unwrap()
            .contains(body["asset"].as_str().unwrap()));
        assert!((1..=3).contains(&body["priority"].as_i64().unwrap()));
    }
    let got: BTreeSet<String> = delivered.keys().cloned().collect();
    assert_eq!(got, want, "delivered keys vs the lake's revisions");
    assert!(delivered.values().all(|&n| n == 1), "{delivered:?}");
    assert!(
        stdout.contains("webhook `cmms`: revisions delivered"),
        "{stdout}"
    );
    // The secrets never show: not in the log (at debug), not in the lake.
    for secret in ["s3cr3t-7f1c9e", "q-s3cr3t"] {
        assert!(!stderr.contains(secret), "`{secret}` logged:\n{stderr}");
        assert!(!stdout.contains(secret), "`{secret}` printed");
    }
    assert!(
        stderr.contains("HTTP 500"),
        "the retries are logged: {stderr}"
    );
}

/// A work-order endpoint behind a plant's own CA (HTTPS, its certificate
/// signed by a CA made now): without `ca_file` nothing is delivered (the
/// public roots do not know that CA; the revisions are dead-lettered after
/// `retry_for`), with it every action revision is, once per key.
#[test]
fn a_webhook_to_an_https_endpoint_trusts_the_plants_own_ca_from_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    test_ca(d, "plant CA (test)");
    let text = std::fs::read_to_string(dataflow("workload_v1.toml")).unwrap();
    let run = |name: &str, extra: &str| {
        let log = d.join(format!("{name}.jsonl"));
        let mut server = Command::new("python3")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/webhook_server.py"))
            .arg(&log)
            .arg("0")
            .arg(d.join("server.pem"))
            .arg(d.join("server.key"))
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let mut port = String::new();
        std::io::BufReader::new(server.stdout.take().unwrap())
            .read_line(&mut port)
            .unwrap();
        let port: u16 = port.trim().parse().unwrap();
        let df = d.join(format!("{name}.toml"));
        std::fs::write(
            &df,
            format!(
                "{text}\n[[sinks]]\ntype = \"webhook\"\nid = \"cmms\"\n\
                 url = \"https://localhost:{port}/api/work-requests\"\nretry_for = \"1s\"\n{extra}\n"
            ),
        )
        .unwrap();
        let out = d.join(format!("{name}-out"));
        let o = Command::new(env!("CARGO_BIN_EXE_plantflow"))
            .arg("run")
            .arg(&df)
            .env("INPUT_DIR", fixture_dir())
            .env("OUT_DIR", &out)
            .current_dir(d)
            .output()
            .unwrap();
        let _ = server.kill();
        let _ = server.wait();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let requests: Vec<serde_json::Value> = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (out, requests)
    };
    // The public roots: the handshake fails, nothing arrives, every
    // revision is a dead letter naming the certificate.
    let (out, requests) = run("public", "");
    assert!(requests.is_empty(), "{requests:?}");
    let want = lake_revisions(&out);
    assert!(want.len() >= 5);
    let dead = dead_letters(&out);
    let tls: Vec<_> = dead
        .iter()
        .filter(|(r, _)| r.to_lowercase().contains("certificate") || r.contains("UnknownIssuer"))
        .collect();
    assert_eq!(tls.len(), want.len(), "{dead:?}");
    // The plant's CA: every revision arrives once.
    let (out, requests) = run(
        "plant-ca",
        &format!("ca_file = \"{}\"", d.join("ca.pem").display()),
    );
    let want = lake_revisions(&out);
    let got: BTreeSet<String> = requests
        .iter()
        .map(|r| r["key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(requests.len(), want.len(), "once per key");
    assert_eq!(got, want);
}
