//! Interop suite: the lake on object storage (`path = "s3://…"`), against
//! moto's S3 server on loopback with request signing enforced (installed by
//! `.ci/run`; nobody here wrote it), read back by Python's `deltalake`. Run
//! with `cargo test --features interop --test interop s3::`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use rand::{Rng, SeedableRng};

use crate::common::*;

const PLANTFLOW: &str = env!("CARGO_BIN_EXE_plantflow");

/// The S3 server, its endpoint and a key it knows.
struct S3 {
    _server: KillOnDrop,
    endpoint: String,
    key: String,
    secret: String,
}

fn s3(bucket: &str) -> S3 {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/s3_server.py");
    let mut child = Command::new("python3")
        .arg(script)
        .arg(bucket)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 with moto[server] (installed by .ci/run)");
    let out = child.stdout.take().unwrap();
    let server = KillOnDrop(child);
    let line = BufReader::new(out).lines().next().and_then(Result::ok);
    let v: serde_json::Value = serde_json::from_str(&line.expect("the S3 server starts")).unwrap();
    let s = |k: &str| v[k].as_str().unwrap().to_string();
    S3 {
        _server: server,
        endpoint: s("endpoint"),
        key: s("key"),
        secret: s("secret"),
    }
}

impl S3 {
    /// The environment a process reading or writing the bucket gets.
    fn env(&self, c: &mut Command) {
        c.env("AWS_ENDPOINT_URL", &self.endpoint)
            .env("AWS_ACCESS_KEY_ID", &self.key)
            .env("AWS_SECRET_ACCESS_KEY", &self.secret)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ALLOW_HTTP", "true");
    }

    fn check(&self, args: &[&str]) -> String {
        let mut c = Command::new("python3");
        c.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/delta_check.py"))
            .args(args);
        self.env(&mut c);
        let o = c.output().expect("python3 with deltalake");
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(
            o.status.success(),
            "delta_check.py {args:?}:\n{out}\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        out
    }
}

/// The reference dataflow writing to `url` (local copy `local`), as Delta
/// tables, committing every 30 ms.
fn s3_dataflow(dir: &Path, url: &str, local: &Path) -> PathBuf {
    let text = std::fs::read_to_string(dataflow("workload_v1.toml")).unwrap();
    let path = dir.join("workload_v1.toml");
    let text = text
        .replacen(
            "path = \"${OUT_DIR:-out}\"",
            &format!("path = \"{url}\"\nlocal = \"{}\"", local.display()),
            1,
        )
        .replacen(
            "roll_interval = \"1m\"",
            "roll_interval = \"30ms\"\nformat = \"delta\"",
            1,
        );
    assert!(text.contains(url));
    std::fs::write(&path, text).unwrap();
    path
}

fn node(s3: &S3, df: &Path, input: &Path) -> Command {
    let mut c = Command::new(PLANTFLOW);
    c.args(["run", "-w", "2"])
        .arg(df)
        .env("INPUT_DIR", input)
        .stdin(Stdio::null());
    s3.env(&mut c);
    c
}

fn run_ok(s3: &S3, df: &Path, input: &Path) -> String {
    let o = node(s3, df, input).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn seq(local: &Path) -> u64 {
    let text = std::fs::read_to_string(local.join("_plantflow/commit.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["seq"].as_u64().unwrap()
}

/// The reference workload written to a bucket: Python's `deltalake` reads
/// every table from S3, equal to the oracle's CSVs and to the node's copy.
#[test]
fn the_workload_in_a_bucket_equals_the_oracle() {
    let s3 = s3("lake");
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("local");
    let url = "s3://lake/plant";
    let df = s3_dataflow(dir.path(), url, &local);
    run_ok(&s3, &df, &fixture_dir());
    let expected = fixture_dir().join("expected");
    let n = seq(&local).to_string();
    let shown = s3.check(&[
        "oracle",
        url,
        expected.to_str().unwrap(),
        "plantflow/workload_v1",
        &n,
    ]);
    assert!(shown.contains("delta oracle: ok"), "{shown}");
    s3.check(&["shipped-whole", url, local.to_str().unwrap()]);
}

/// Wrong credentials and a missing bucket end the run before it reads
/// anything, with what to check (and never the secret).
#[test]
fn wrong_credentials_and_a_missing_bucket_are_clear_errors() {
    let s3 = s3("lake");
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("local");
    let df = s3_dataflow(dir.path(), "s3://lake/plant", &local);
    let o = node(&s3, &df, &fixture_dir())
        .env("AWS_SECRET_ACCESS_KEY", "not-the-secret")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("s3://lake/plant") && err.contains("credentials"),
        "{err}"
    );
    assert!(
        !err.contains("not-the-secret") && !err.contains(&s3.secret),
        "{err}"
    );
    let df = s3_dataflow(dir.path(), "s3://no-such-bucket/plant", &local);
    let o = node(&s3, &df, &fixture_dir()).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("s3://no-such-bucket/plant") && err.contains("bucket"),
        "{err}"
    );
}

/// Kills while a node ships its commits (a crash point before a commit's
/// upload, then SIGKILLs at random): every table in the bucket stays
/// readable at a version of the node's copy, with that version's rows; the
/// next start ships what the bucket lacks, and the last run ends with the
/// bucket equal to the copy and the copy equal to an uninterrupted run.
#[test]
fn kills_while_shipping_leave_every_table_readable() {
    let s3 = s3("lake");
    let dir = tempfile::tempdir().unwrap();
    let input = gen_workload(dir.path(), 100, 14400);
    let want_local = dir.path().join("want");
    run_ok(
        &s3,
        &s3_dataflow(dir.path(), "s3://lake/want", &want_local),
        &input,
    );
    let local = dir.path().join("local");
    let url = "s3://lake/plant";
    let df = s3_dataflow(dir.path(), url, &local);
    let o = node(&s3, &df, &input)
        .env("PLANTFLOW_TEST_CRASH", "before-ship:5")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("test crash at before-ship of commit 5"),
        "{err}"
    );
    s3.check(&["shipped", url, local.to_str().unwrap()]);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2028);
    for _ in 0..3 {
        let after = Duration::from_millis(rng.random_range(300..1500));
        kill_after(&mut node(&s3, &df, &input), after);
        s3.check(&["shipped", url, local.to_str().unwrap()]);
    }
    run_ok(&s3, &df, &input);
    s3.check(&["shipped-whole", url, local.to_str().unwrap()]);
    assert_latest_equal(&local, &want_local);
}

/// A data file above the part size goes up as a multipart upload: a
/// 20 MiB file of random doubles (it does not compress) shipped byte for
/// byte, and the table read back from the bucket row for row.
#[test]
fn a_large_file_goes_up_in_parts() {
    use arrow::array::{Float64Array, RecordBatch};
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;
    let s3 = s3("lake");
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("local");
    let part = local.join("aggregates/date=2026-01-01");
    std::fs::create_dir_all(&part).unwrap();
    let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Float64, false)]));
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(8);
    let values: Vec<f64> = (0..2_700_000).map(|_| rng.random::<f64>()).collect();
    let batch =
        RecordBatch::try_new(schema.clone(), vec![Arc::new(Float64Array::from(values))]).unwrap();
    let file = part.join("part-big.parquet");
    let mut w = parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(&file).unwrap(),
        schema.clone(),
        None,
    )
    .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let size = std::fs::metadata(&file).unwrap().len();
    assert!(size > 16 << 20, "{size} bytes: more than two parts");
    // A Delta table over it, as a lake written as bare Parquet becomes one.
    let tables = vec![("aggregates".to_string(), schema)];
    plantflow::sinks::parquet::delta::DeltaLake::open(&local, "test", &tables, None).unwrap();
    let settings = [
        ("aws_endpoint", s3.endpoint.as_str()),
        ("aws_access_key_id", s3.key.as_str()),
        ("aws_secret_access_key", s3.secret.as_str()),
        ("aws_region", "us-east-1"),
        ("aws_allow_http", "true"),
    ];
    let connect = plantflow::sinks::parquet::ship::Shipper::connect_with;
    let mut ship = connect("s3://lake/big", &local, &settings).unwrap();
    let shipped = ship.sync().unwrap();
    assert_eq!((shipped.versions, shipped.files), (1, 1), "{shipped:?}");
    let got = s3.check(&["shipped-whole", "s3://lake/big", local.to_str().unwrap()]);
    assert!(got.contains("aggregates 0 2700000"), "{got}");
}

/// `plantflow lake compact` on the node's copy reaches the bucket at the
/// next shipping, and `plantflow lake vacuum --remote` deletes the
/// compacted files there too, once the bucket has the version that removed
/// them: its tables stay readable, with the copy's rows.
#[test]
fn compaction_and_vacuum_reach_the_bucket() {
    let s3 = s3("lake");
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("local");
    let url = "s3://lake/plant";
    let df = s3_dataflow(dir.path(), url, &local);
    let input = gen_workload(dir.path(), 100, 7200);
    run_ok(&s3, &df, &input);
    let count = |what: &str| -> usize { s3.check(&["objects", url, what]).trim().parse().unwrap() };
    let before = count("aggregates");
    assert!(before > 5, "{before} files");
    let lake = local.to_str().unwrap();
    let o = Command::new(PLANTFLOW)
        .args(["lake", "compact", lake])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut c = Command::new(PLANTFLOW);
    c.args(["lake", "vacuum", "--retain", "0s", "--remote", url, lake]);
    s3.env(&mut c);
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        count("aggregates"),
        1,
        "one compacted file left in the bucket"
    );
    s3.check(&["shipped-whole", url, lake]);
}

/// The demo plant's lake shipped to a bucket (`plantflow demo --lake`):
/// every table read from the bucket equals the demo's local copy; a second
/// demo to the same prefix (another lake) is refused, naming the prefix.
#[test]
fn the_demo_ships_its_lake_and_another_lake_at_its_prefix_is_refused() {
    let s3 = s3("lake");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo");
    let demo = || {
        let mut c = Command::new(PLANTFLOW);
        c.args(["demo", "--quiet", "--duration", "1d", "--speed", "60000"])
            .args(["--http", "127.0.0.1:0", "--lake", "s3://lake/demo", "--out"])
            .arg(&out)
            .stdin(Stdio::null());
        s3.env(&mut c);
        c.output().unwrap()
    };
    let o = demo();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let lake = out.join("lake");
    assert!(lake.join("aggregates/_delta_log").is_dir());
    s3.check(&["shipped-whole", "s3://lake/demo", lake.to_str().unwrap()]);
    // The demo starts from an empty local copy: another lake, refused.
    let o = demo();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("s3://lake/demo") && err.contains("another lake at this prefix"),
        "{err}"
    );
}

/// Keys from an AWS profile (`AWS_PROFILE` in a shared credentials file,
/// its region in the config file) when the environment has none; a
/// profile that is not there is named, with the file looked in.
#[test]
fn keys_from_an_aws_profile() {
    let s3 = s3("lake");
    let dir = tempfile::tempdir().unwrap();
    let credentials = dir.path().join("credentials");
    let text = format!(
        "[default]\naws_access_key_id = AKIAOTHER\naws_secret_access_key = other\n\n\
         [plant]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
        s3.key, s3.secret
    );
    std::fs::write(&credentials, text).unwrap();
    let config = dir.path().join("config");
    std::fs::write(&config, "[profile plant]\nregion = us-east-1\n").unwrap();
    let local = dir.path().join("local");
    let url = "s3://lake/plant";
    let df = s3_dataflow(dir.path(), url, &local);
    let run = |profile: &str| {
        let mut c = Command::new(PLANTFLOW);
        c.args(["run", "-w", "2"])
            .arg(&df)
            .env("INPUT_DIR", fixture_dir())
            .env("AWS_ENDPOINT_URL", &s3.endpoint)
            .env("AWS_ALLOW_HTTP", "true")
            .env("AWS_PROFILE", profile)
            .env("AWS_SHARED_CREDENTIALS_FILE", &credentials)
            .env("AWS_CONFIG_FILE", &config)
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("AWS_REGION")
            .env_remove("AWS_DEFAULT_REGION")
            .stdin(Stdio::null());
        c.output().unwrap()
    };
    let o = run("plant");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    s3.check(&["shipped-whole", url, local.to_str().unwrap()]);
    let o = run("elsewhere");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("AWS_PROFILE=elsewhere") && err.contains("credentials"),
        "{err}"
    );
}
