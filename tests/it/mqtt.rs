//! MQTT ingestion and publishing against a real broker: the embedded
//! rumqttd (`plantflow::sim::broker`). Numbers are checked against the same
//! independent oracles as the replay tests (DuckDB's expected output).

use std::collections::HashMap;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};

use crate::common::*;

fn broker() -> plantflow::sim::broker::Broker {
    plantflow::sim::broker::start(0, 0).expect("embedded broker starts")
}

#[test]
fn workload_v1_over_mqtt_matches_the_oracle_and_publishes_actions() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("info,rumqttd=warn")
        .with_test_writer()
        .try_init();
    let b = broker();
    let out = tempfile::tempdir().unwrap();
    let url = b.url_v5();
    let plan = load_env(
        &dataflow("workload_v1_mqtt.toml"),
        &[
            ("INPUT_DIR", fixture_dir().display().to_string()),
            ("OUT_DIR", out.path().display().to_string()),
            ("MQTT_URL", url.clone()),
        ],
    );
    // Peers speak 3.1.1 on the broker's v4 listener; plantflow uses v5.
    let peer_url = b.url_v4();
    let actions_seen = peer::collect(&peer_url, "action-watcher", "plantflow/actions/#");
    let (stats, stop, run) = start_run(plan, 2);
    // The source subscribes on connect; wait for it before publishing
    // (a first connect has no session to hold earlier messages).
    std::thread::sleep(std::time::Duration::from_millis(500));
    let msgs = fixture_messages();
    assert_eq!(msgs.len(), 90_000);
    peer::publish_all(&peer_url, "fixture-publisher", msgs, 1);
    wait_for("all 90,000 samples to be read", || {
        (stats.rows_read.load(Relaxed) >= 90_000).then_some(())
    });
    stop.store(true, SeqCst);
    let summary = run.join().unwrap().expect("run succeeds");
    assert_eq!(summary.rows_read, 90_000, "each message exactly once");
    assert_eq!(
        summary.dropped_quality, 77,
        "the manifest lists 77 bad rows"
    );
    assert!(
        summary.dead_letters.is_empty(),
        "{:?}",
        summary.dead_letters
    );

    assert_aggregates_equal(&latest_aggregates(out.path()), &expected_aggregates());
    let n = assert_actions_match_oracle(out.path());
    assert!(n > 0);

    // Every action was published; the highest revision per id equals the table's row.
    let table = latest_actions(out.path());
    wait_for("the published actions", || {
        let got = actions_seen.got.lock().unwrap();
        let ids: std::collections::HashSet<String> = got
            .iter()
            .map(|(_, p)| {
                serde_json::from_slice::<serde_json::Value>(p).unwrap()["action_id"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        (ids.len() == table.len()).then_some(())
    });
    let got = actions_seen.got.lock().unwrap();
    let mut latest: HashMap<String, serde_json::Value> = HashMap::new();
    for (topic, p) in got.iter() {
        let v: serde_json::Value = serde_json::from_slice(p).unwrap();
        assert_eq!(v["table"], "actions");
        assert_eq!(
            topic,
            &format!(
                "plantflow/actions/{}/{}",
                v["site"].as_str().unwrap(),
                v["asset"].as_str().unwrap()
            )
        );
        let id = v["action_id"].as_str().unwrap().to_string();
        let newer = latest
            .get(&id)
            .is_none_or(|o| o["revision"].as_i64() < v["revision"].as_i64());
        if newer {
            latest.insert(id, v);
        }
    }
    for a in table.values() {
        let m = latest
            .values()
            .find(|v| {
                v["asset"] == a.asset.as_str() && v["period_start"].as_i64() == Some(a.period_start)
            })
            .unwrap_or_else(|| panic!("action for {} not published", a.asset));
        assert_close(m["value"].as_f64().unwrap(), a.value, "published value");
        assert_eq!(m["owner"], "operations");
    }
}

const BASE: i64 = 1_767_596_100_000; // 2026-01-05T07:35:00Z, a minute boundary

fn formats_plan(
    url: &str,
    out: &std::path::Path,
    client_id: &str,
) -> plantflow::dataflow::Dataflow {
    formats_plan_with(url, out, client_id, "1KiB")
}

fn formats_plan_with(
    url: &str,
    out: &std::path::Path,
    client_id: &str,
    max_payload: &str,
) -> plantflow::dataflow::Dataflow {
    load_env(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mqtt/dataflow.toml"),
        &[
            (
                "INPUT_DIR",
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("tests/fixtures/mqtt")
                    .display()
                    .to_string(),
            ),
            ("OUT_DIR", out.display().to_string()),
            ("MQTT_URL", url.to_string()),
            ("CLIENT_ID", client_id.to_string()),
            ("MAX_PAYLOAD", max_payload.to_string()),
        ],
    )
}

fn json_sample(tag: &str, ts: i64, v: f64) -> (String, Vec<u8>) {
    (
        format!("plant/{tag}"),
        format!(r#"{{"ts":{ts},"value":{v}}}"#).into_bytes(),
    )
}

/// Runs the formats dataflow, publishes `msgs`, waits until `rows` rows were read, stops.
fn run_formats(
    b: &plantflow::sim::broker::Broker,
    out: &std::path::Path,
    msgs: Vec<(String, Vec<u8>)>,
    rows: u64,
) -> plantflow::run::RunSummary {
    let (stats, stop, run) = start_run(formats_plan(&b.url_v5(), out, "plantflow-formats"), 1);
    std::thread::sleep(std::time::Duration::from_millis(500));
    peer::publish_all(&b.url_v4(), "test-publisher", msgs, 1);
    wait_for("the rows", || {
        (stats.rows_read.load(Relaxed) >= rows).then_some(())
    });
    stop.store(true, SeqCst);
    run.join().unwrap().expect("run succeeds")
}

/// One message of 17,000 bad array elements (just under 1 MiB): 100 rows
/// keep their own element, one row counts the other 16,900 and keeps the
/// payload's first 4 KiB; every element is still counted. Before the
/// bound, each element's row carried the whole payload (17,000 × 1 MB).
#[test]
fn a_hostile_array_yields_bounded_dead_letters_that_keep_their_element() {
    let b = broker();
    let out = tempfile::tempdir().unwrap();
    let topic = "plant/s1/l1/m1/power_kw";
    let bad = r#"{"tag":"s1/l1/m1/power_kw","ts":1767596101000,"value":"x"}"#;
    let big = format!("[{}]", vec![bad; 17_000].join(","));
    assert!(big.len() < 1 << 20, "{} bytes", big.len());
    let mixed = format!(
        r#"[{{"tag":"s1/l1/m1/power_kw","ts":{},"value":1}},{{"tag":"s1/l1/m1/power_kw","ts":{},"value":"on"}},{{"tag":"s1/l1/m1/power_kw","ts":{},"value":2}}]"#,
        BASE + 1_000,
        BASE + 2_000,
        BASE + 3_000
    );
    let msgs = vec![
        (topic.to_string(), big.clone().into_bytes()),
        (topic.to_string(), mixed.into_bytes()),
    ];
    let plan = formats_plan_with(&b.url_v5(), out.path(), "plantflow-hostile", "1MiB");
    let (stats, stop, run) = start_run(plan, 1);
    std::thread::sleep(std::time::Duration::from_millis(500));
    peer::publish_all(&b.url_v4(), "test-publisher", msgs, 1);
    wait_for("the rows", || {
        (stats.rows_read.load(Relaxed) >= 17_003).then_some(())
    });
    stop.store(true, SeqCst);
    let s = run.join().unwrap().expect("run succeeds");
    assert_eq!(s.rows_accepted, 2);
    assert_eq!(
        s.dead_letters.get("wrong type"),
        Some(&17_001),
        "{:?}",
        s.dead_letters
    );
    let dl = rows(out.path(), "dead_letter");
    assert_eq!(
        dl.len(),
        100 + 1 + 1,
        "100 elements, one count, one element of the mixed array"
    );
    let elements: Vec<_> = dl
        .iter()
        .filter(|r| r["reason"].as_str().unwrap().starts_with("element "))
        .collect();
    assert_eq!(elements.len(), 101);
    for r in &elements {
        assert_eq!(r["topic"], topic);
        assert_eq!(
            r["raw_bytes"].as_i64(),
            Some(r["raw"].as_str().unwrap().len() as i64)
        );
    }
    assert!(elements.iter().filter(|r| r["raw"] == bad).count() == 100);
    assert!(elements.iter().any(|r| r["raw"]
        == format!(
            r#"{{"tag":"s1/l1/m1/power_kw","ts":{},"value":"on"}}"#,
            BASE + 2_000
        )
        && r["reason"]
            .as_str()
            .unwrap()
            .starts_with("element 1: wrong type")));
    let rest: Vec<_> = dl
        .iter()
        .filter(|r| r["reason"].as_str().unwrap().contains("more rejections"))
        .collect();
    assert_eq!(rest.len(), 1);
    assert!(
        rest[0]["reason"].as_str().unwrap().starts_with(
            "16900 more rejections in this message not kept (the first: element 100: wrong type"
        ),
        "{}",
        rest[0]["reason"]
    );
    assert_eq!(rest[0]["raw"].as_str().unwrap(), &big[..4096]);
    assert_eq!(rest[0]["raw_bytes"].as_i64(), Some(big.len() as i64));
    assert_eq!(rest[0]["raw_hash"].as_str().unwrap().len(), 16);
}

/// `[dead_letter]` sets both bounds: 10 rows per message, 64 bytes of each.
#[test]
fn dead_letter_limits_come_from_the_dataflow() {
    let b = broker();
    let dir = tempfile::tempdir().unwrap();
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mqtt");
    let text = std::fs::read_to_string(fixtures.join("dataflow.toml")).unwrap()
        + "\n[dead_letter]\nmax_raw = \"64B\"\nper_message = 10\n";
    let df = dir.path().join("df.toml");
    std::fs::write(&df, text).unwrap();
    let out = dir.path().join("out");
    let plan = load_env(
        &df,
        &[
            ("INPUT_DIR", fixtures.display().to_string()),
            ("OUT_DIR", out.display().to_string()),
            ("MQTT_URL", b.url_v5()),
            ("CLIENT_ID", "plantflow-dl-limits".to_string()),
            ("MAX_PAYLOAD", "1MiB".to_string()),
        ],
    );
    assert_eq!(plan.dead_letter.per_message, 10);
    let bad = r#"{"tag":"s1/l1/m1/power_kw","ts":1767596101000,"value":"a string that is longer than sixty-four bytes, to be cut"}"#;
    let big = format!("[{}]", vec![bad; 500].join(","));
    let (stats, stop, run) = start_run(plan, 1);
    std::thread::sleep(std::time::Duration::from_millis(500));
    peer::publish_all(
        &b.url_v4(),
        "test-publisher",
        vec![(
            "plant/s1/l1/m1/power_kw".to_string(),
            big.clone().into_bytes(),
        )],
        1,
    );
    wait_for("the rows", || {
        (stats.rows_read.load(Relaxed) >= 500).then_some(())
    });
    stop.store(true, SeqCst);
    let s = run.join().unwrap().expect("run succeeds");
    assert_eq!(s.dead_letters.get("wrong type"), Some(&500));
    let dl = rows(&out, "dead_letter");
    assert_eq!(dl.len(), 11, "10 rows and one count");
    for r in &dl {
        assert!(r["raw"].as_str().unwrap().len() <= 64, "{r:?}");
    }
    assert_eq!(dl.iter().filter(|r| r["raw"] == bad[..64]).count(), 10);
    assert!(dl.iter().any(|r| r["reason"]
        .as_str()
        .unwrap()
        .starts_with("490 more rejections in this message not kept")
        && r["raw_bytes"].as_i64() == Some(big.len() as i64)));
}

#[test]
fn bad_messages_are_dead_lettered_with_topic_reason_and_payload() {
    use plantflow::mqtt::sparkplug::{datatype, Metric, Payload, Value};
    use prost::Message;
    let b = broker();
    let out = tempfile::tempdir().unwrap();
    let birth = Payload {
        timestamp: Some(BASE as u64),
        seq: Some(0),
        metrics: vec![Metric {
            name: Some("temp".into()),
            alias: Some(1),
            datatype: Some(datatype::DOUBLE),
            timestamp: Some(BASE as u64),
            value: Some(Value::DoubleValue(3.0)),
            ..Default::default()
        }],
        ..Default::default()
    };
    let unborn = Payload {
        timestamp: Some(BASE as u64),
        seq: Some(1),
        metrics: vec![Metric {
            alias: Some(7),
            timestamp: Some(BASE as u64),
            value: Some(Value::DoubleValue(1.0)),
            ..Default::default()
        }],
        ..Default::default()
    };
    let msgs = vec![
        json_sample("s1/l1/m1/power_kw", BASE + 1_000, 4.0), // good
        (
            "plant/s1/l1/m1/power_kw".into(),
            b"{\"ts\":1767596101000,".to_vec(),
        ),
        (
            "plant/s1/l1/m1/power_kw".into(),
            br#"{"ts":1767596101000,"value":"abc"}"#.to_vec(),
        ),
        (
            "plant/s1/l1/m1/power_kw".into(),
            br#"{"ts":1767596101000,"value":"NaN"}"#.to_vec(),
        ),
        (
            "plant/s1/l1/m1/power_kw".into(),
            br#"{"ts":1767596101000,"value":[1,2]}"#.to_vec(),
        ),
        (
            "plant/nope/power_kw".into(),
            br#"{"ts":1767596101000,"value":1}"#.to_vec(),
        ),
        ("other/a/b/c".into(), br#"{"value":1}"#.to_vec()),
        (
            "plant/s1/l1/m1/power_kw".into(),
            format!(r#"{{"ts":{BASE},"value":1,"pad":"{}"}}"#, "x".repeat(2048)).into_bytes(),
        ),
        ("num/s1/l1/m1/power_kw".into(), b"inf".to_vec()),
        ("spBv1.0/g1/NBIRTH/n1".into(), vec![0x0a, 0xff, 0xff, 0xff]),
        ("spBv1.0/g1/NBIRTH/n1".into(), birth.encode_to_vec()),
        ("spBv1.0/g1/NDATA/n1".into(), unborn.encode_to_vec()),
    ];
    // 1 good JSON + 1 Sparkplug birth value + 10 rejects = 12 rows read.
    let s = run_formats(&b, out.path(), msgs, 12);
    assert_eq!(s.rows_accepted, 2, "{:?}", s.dead_letters);
    let dl = message_dead_letters(out.path());
    let has = |reason: &str, topic: &str| {
        dl.iter()
            .find(|(r, t, _, _)| r.contains(reason) && t == topic)
            .unwrap_or_else(|| panic!("no dead letter `{reason}` on {topic}: {dl:#?}"))
            .clone()
    };
    let (_, _, raw, enc) = has("malformed JSON", "plant/s1/l1/m1/power_kw");
    assert_eq!(
        (raw.as_str(), enc.as_str()),
        ("{\"ts\":1767596101000,", "text")
    );
    has(
        "wrong type: `value` is the string `abc`",
        "plant/s1/l1/m1/power_kw",
    );
    has("NaN or infinite", "plant/s1/l1/m1/power_kw");
    has(
        "wrong type: `value` is a JSON array",
        "plant/s1/l1/m1/power_kw",
    );
    has("unknown tag", "plant/nope/power_kw");
    has("topic matches no route", "other/a/b/c");
    let (_, _, raw, _) = has("exceeds max_payload", "plant/s1/l1/m1/power_kw");
    assert_eq!(raw.len(), 1024, "the first KiB is kept");
    has("value is NaN or infinite", "num/s1/l1/m1/power_kw");
    let (_, _, raw, enc) = has("invalid Sparkplug protobuf", "spBv1.0/g1/NBIRTH/n1");
    assert_eq!((raw.as_str(), enc.as_str()), ("Cv///w==", "base64"));
    has("alias 7 was never born", "spBv1.0/g1/NDATA/n1");
    assert_eq!(dl.len(), 10, "{dl:#?}");
    // Counters stay per reason class, not per message.
    assert_eq!(
        s.dead_letters.get("wrong type"),
        Some(&2),
        "{:?}",
        s.dead_letters
    );
}

#[test]
fn sparkplug_host_resolves_aliases_requests_rebirth_and_marks_death() {
    use plantflow::mqtt::sparkplug::{datatype, Metric, Payload, Value};
    use prost::Message;
    let b = broker();
    let out = tempfile::tempdir().unwrap();
    let ncmd = peer::collect(&b.url_v4(), "ncmd-watcher", "spBv1.0/g1/NCMD/#");
    let m = |name: Option<&str>, alias: Option<u64>, dt: u32, v: Value, ts: i64| Metric {
        name: name.map(str::to_string),
        alias,
        datatype: Some(dt),
        timestamp: Some(ts as u64),
        value: Some(v),
        ..Default::default()
    };
    let p = |seq: Option<u64>, metrics: Vec<Metric>| {
        Payload {
            timestamp: Some(BASE as u64),
            seq,
            metrics,
            ..Default::default()
        }
        .encode_to_vec()
    };
    let t = |s: &str| format!("spBv1.0/g1/{s}");
    let msgs = vec![
        (
            t("NBIRTH/n1"),
            p(
                Some(0),
                vec![
                    m(
                        Some("bdSeq"),
                        None,
                        datatype::INT64,
                        Value::LongValue(4),
                        BASE,
                    ),
                    m(
                        Some("Node Control/Rebirth"),
                        None,
                        datatype::BOOLEAN,
                        Value::BooleanValue(false),
                        BASE,
                    ),
                    m(
                        Some("temp"),
                        Some(1),
                        datatype::INT16,
                        Value::IntValue(0xFFFB),
                        BASE,
                    ), // -5
                ],
            ),
        ),
        (
            t("DBIRTH/n1/d1"),
            p(
                Some(1),
                vec![m(
                    Some("power_kw"),
                    Some(2),
                    datatype::FLOAT,
                    Value::FloatValue(10.0),
                    BASE,
                )],
            ),
        ),
        (
            t("DDATA/n1/d1"),
            p(
                Some(2),
                vec![m(
                    None,
                    Some(2),
                    datatype::FLOAT,
                    Value::FloatValue(20.0),
                    BASE + 20_000,
                )],
            ),
        ),
        // seq 3 is lost: the host asks for a rebirth, and keeps the value.
        (
            t("DDATA/n1/d1"),
            p(
                Some(4),
                vec![m(
                    None,
                    Some(2),
                    datatype::FLOAT,
                    Value::FloatValue(30.0),
                    BASE + 40_000,
                )],
            ),
        ),
        (
            t("NDATA/n1"),
            p(
                Some(5),
                vec![m(
                    None,
                    Some(1),
                    datatype::INT16,
                    Value::IntValue(7),
                    BASE + 61_000,
                )],
            ),
        ),
        // Historical value for an earlier window: a correction, not the current value.
        (
            t("DDATA/n1/d1"),
            p(
                Some(6),
                vec![Metric {
                    is_historical: Some(true),
                    ..m(
                        None,
                        Some(2),
                        datatype::FLOAT,
                        Value::FloatValue(60.0),
                        BASE + 50_000,
                    )
                }],
            ),
        ),
        // Death of the node at BASE + 90 s: its tags go bad with their last live values.
        (
            t("NDEATH/n1"),
            Payload {
                timestamp: Some((BASE + 90_000) as u64),
                seq: None,
                metrics: vec![m(
                    Some("bdSeq"),
                    None,
                    datatype::INT64,
                    Value::LongValue(4),
                    BASE + 90_000,
                )],
                ..Default::default()
            }
            .encode_to_vec(),
        ),
    ];
    // Rows: temp(-5) + power(10) + 20 + 30 + temp 7 + historical 60 + 2 death markers = 8.
    let s = run_formats(&b, out.path(), msgs, 8);
    assert!(s.dead_letters.is_empty(), "{:?}", s.dead_letters);
    let agg = latest_aggregates(out.path());
    let w0 = &agg[&("g1/n1/d1/power_kw".to_string(), BASE)];
    // Window 0: 10, 20, 30, 60 (historical) → mean 30.
    assert_eq!(w0.count, 4);
    assert_close(w0.mean, 30.0, "power mean");
    assert_close(w0.min, 10.0, "power min");
    let w1 = &agg[&("g1/n1/d1/power_kw".to_string(), BASE + 60_000)];
    // Window 1: only the death marker, bad quality, carrying the last live value 30 (not 60).
    assert_eq!(w1.count, 1);
    assert_close(w1.mean, 30.0, "stale marker value");
    let temp0 = &agg[&("g1/n1/temp".to_string(), BASE)];
    assert_close(temp0.mean, -5.0, "Int16 two's complement");
    let temp1 = &agg[&("g1/n1/temp".to_string(), BASE + 60_000)];
    assert_eq!(temp1.count, 2, "live 7 and the death marker");
    // The rebirth request went out as NCMD with Node Control/Rebirth = true.
    let cmds = wait_for("the rebirth NCMD", || {
        let g = ncmd.got.lock().unwrap();
        (!g.is_empty()).then(|| g.clone())
    });
    assert_eq!(cmds[0].0, "spBv1.0/g1/NCMD/n1");
    let req = Payload::decode(cmds[0].1.as_slice()).unwrap();
    assert_eq!(req.metrics[0].name.as_deref(), Some("Node Control/Rebirth"));
    assert_eq!(req.metrics[0].value, Some(Value::BooleanValue(true)));
}

#[test]
fn production_runs_over_mqtt_correct_the_producing_flag() {
    let b = broker();
    let out = tempfile::tempdir().unwrap();
    let mut msgs = vec![(
        "ctx/production".to_string(),
        format!(r#"{{"line":"s1/l1","event":"start","ts":{BASE}}}"#).into_bytes(),
    )];
    for i in 0..240 {
        msgs.push(json_sample("s1/l1/m1/power_kw", BASE + i * 1_000, 6.0));
    }
    // The run stops after two minutes, reported once the samples are in.
    msgs.push((
        "ctx/production".into(),
        format!(
            r#"{{"line":"s1/l1","event":"stop","ts":{},"units":120}}"#,
            BASE + 120_000
        )
        .into_bytes(),
    ));
    let s = run_formats(&b, out.path(), msgs, 240);
    assert!(s.dead_letters.is_empty(), "{:?}", s.dead_letters);
    let agg = latest_aggregates(out.path());
    for w in 0..4 {
        let a = &agg[&("s1/l1/m1/power_kw".to_string(), BASE + w * 60_000)];
        assert_eq!(a.count, 60);
        assert_eq!(a.producing, w < 2, "window {w}");
        // Idle (not producing) windows above standby (1 kW) waste their energy: 6 kW × 1 min.
        assert_close(a.waste_kwh, if w < 2 { 0.0 } else { 0.1 }, "waste");
    }
}

#[test]
fn persistent_session_delivers_what_was_published_while_down_exactly_once() {
    let b = broker();
    let out1 = tempfile::tempdir().unwrap();
    let out2 = tempfile::tempdir().unwrap();
    // First run: connects with a persistent session (clean start 0) and subscribes.
    let (stats, stop, run) = start_run(
        formats_plan(&b.url_v5(), out1.path(), "plantflow-persist"),
        1,
    );
    std::thread::sleep(std::time::Duration::from_millis(500)); // first connect: wait for the subscription
    peer::publish_all(
        &b.url_v4(),
        "p1",
        vec![json_sample("s1/l1/m1/power_kw", BASE, 1.0)],
        1,
    );
    wait_for("the first sample", || {
        (stats.rows_read.load(Relaxed) >= 1).then_some(())
    });
    stop.store(true, SeqCst);
    run.join().unwrap().unwrap();
    // While plantflow is down: 500 samples at QoS 1.
    let msgs: Vec<_> = (0..500)
        .map(|i| json_sample("s1/l1/m2/power_kw", BASE + i * 100, i as f64))
        .collect();
    peer::publish_all(&b.url_v4(), "p2", msgs, 1);
    // Second run, same client id: the broker delivers the session's queue.
    let (stats, stop, run) = start_run(
        formats_plan(&b.url_v5(), out2.path(), "plantflow-persist"),
        1,
    );
    wait_for("the queued samples", || {
        (stats.rows_read.load(Relaxed) >= 500).then_some(())
    });
    std::thread::sleep(std::time::Duration::from_millis(500)); // nothing more may arrive
    stop.store(true, SeqCst);
    let s = run.join().unwrap().unwrap();
    assert_eq!(s.rows_read, 500, "each queued message exactly once");
    let agg = latest_aggregates(out2.path());
    let total: i64 = agg.values().map(|a| a.count).sum();
    assert_eq!(total, 500);
    // Sum of 0..500 over the windows = 124,750.
    let sum: f64 = agg.values().map(|a| a.mean * a.count as f64).sum();
    assert_close(sum, 124_750.0, "sum of values");
}

/// A publish broker that is away never holds up the lake or the end of a
/// run: the replay's lake equals the oracle, and the run returns once the
/// publisher's bounded drain is over (it used to wait for the broker forever).
#[test]
fn a_publish_broker_that_is_away_does_not_stall_the_lake() {
    // A port nothing listens on: connections are refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let text = std::fs::read_to_string(dataflow("workload_v1.toml")).unwrap()
        + &format!(
            "\n[[sinks]]\ntype = \"mqtt_publish\"\nid = \"live\"\nurl = \"mqtt://127.0.0.1:{port}\"\ntopic = \"p/{{table}}/{{asset}}\"\ntables = [\"aggregates\", \"actions\"]\n"
        );
    let df = dir.path().join("df.toml");
    std::fs::write(&df, text).unwrap();
    let plan = load_env(
        &df,
        &[
            ("INPUT_DIR", fixture_dir().display().to_string()),
            ("OUT_DIR", out.display().to_string()),
        ],
    );
    let (_stats, _stop, run) = start_run(plan, 1);
    wait_for("the run to end", || run.is_finished().then_some(()));
    let s = run.join().unwrap().expect("run succeeds");
    assert!(s.rows_accepted > 0);
    assert_aggregates_equal(&latest_aggregates(&out), &expected_aggregates());
    assert_actions_match_oracle(&out);
}

/// A subscription that goes quiet on a live connection is reported, not
/// silent: a warning naming the source and `stall_after`, a line when
/// messages come again, and a counter in the summary (issue 31: a QoS 2
/// stall went unnoticed).
#[test]
fn a_quiet_subscription_is_reported_as_stalled_and_its_end_too() {
    let b = broker();
    let dir = tempfile::tempdir().unwrap();
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mqtt");
    let env = [
        ("INPUT_DIR", fixtures.display().to_string()),
        ("OUT_DIR", dir.path().join("out").display().to_string()),
        ("MQTT_URL", b.url_v5()),
        ("CLIENT_ID", "plantflow-stall".to_string()),
        ("STALL_AFTER", "1s".to_string()),
        ("PLANTFLOW_LOG", "info,rumqttd=off".to_string()),
    ];
    let (mut child, mut lines) =
        follow_node_lines(&fixtures.join("dataflow.toml"), &env, dir.path(), &[]);
    let mut until = |what: &str| lines.wait_for(what);
    until("MQTT connected");
    std::thread::sleep(std::time::Duration::from_millis(300)); // the subscription
    peer::publish_all(
        &b.url_v4(),
        "p",
        vec![json_sample("s1/l1/m1/power_kw", BASE, 1.0)],
        1,
    );
    until("MQTT subscription stalled: connected, but no message for 1s");
    peer::publish_all(
        &b.url_v4(),
        "p",
        vec![json_sample("s1/l1/m1/power_kw", BASE + 60_000, 2.0)],
        1,
    );
    until("MQTT messages again after");
    let (status, out) = child.stop_for_summary();
    assert!(status.success(), "{status:?}");
    let line = out
        .lines()
        .find(|l| l.contains("mqtt: subscription stalled"))
        .unwrap_or_else(|| panic!("no counter in the summary:\n{out}"));
    let n: u64 = line.split_whitespace().last().unwrap().parse().unwrap();
    assert!(n >= 1, "{line}");
}
