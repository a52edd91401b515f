//! MQTT ingestion and publishing against a real broker: the embedded
//! rumqttd (`plantflow::sim::broker`). Numbers are checked against the same
//! independent oracles as the replay tests (DuckDB's expected output).

mod common;

use std::collections::HashMap;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};

use common::*;

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
