//! The tag-quality view (`GET /api/v1/tags`, the `tag_quality` table):
//! four tags written to be ok, stale, flat-lining and out of range, one
//! the assets table does not know, and the rest of the assets table never
//! sampled, each status and figure worked out by hand from the input.

use std::collections::HashMap;

use crate::common::*;

/// 2026-01-01T00:00:00Z.
const T0: i64 = 1_767_225_600_000;
const MIN: i64 = 60_000;
const OK: &str = "site1/line1/comp01/power_kw";
const STALE: &str = "site1/line1/comp01/aux_kw";
const FLAT: &str = "site1/line1/comp02/power_kw";
const HIGH: &str = "site1/line1/comp02/aux_kw";
const GHOST: &str = "site9/ghost/kw";

/// One sample a minute over an hour (61) for OK, FLAT and HIGH, half an
/// hour (31) for STALE; FLAT holds 5.0 from minute 10; HIGH ends at 999;
/// OK has one bad-quality sample more (dropped); GHOST three samples.
fn samples() -> String {
    let mut s = String::from("ts,tag,value,quality\n");
    for m in 0..=60 {
        let ts = T0 + m * MIN;
        s += &format!("{ts},{OK},{},0\n", 10 + m % 7);
        if m <= 30 {
            s += &format!("{ts},{STALE},{},0\n", 2 + m % 3);
        }
        s += &format!("{ts},{FLAT},{},0\n", if m < 10 { m as f64 } else { 5.0 });
        s += &format!("{ts},{HIGH},{},0\n", if m == 60 { 999 } else { 100 + m });
        if m == 30 {
            s += &format!("{},{OK},5000,2\n", ts + 1);
        }
        if m < 3 {
            s += &format!("{ts},{GHOST},1.5,0\n");
        }
    }
    s
}

#[test]
fn tag_quality_names_every_tag_with_its_status_as_worked_out_by_hand() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input");
    std::fs::create_dir_all(&input).unwrap();
    for f in ["assets.csv", "tariff.csv", "production.csv"] {
        std::fs::copy(fixture_dir().join(f), input.join(f)).unwrap();
    }
    std::fs::write(input.join("samples.csv"), samples()).unwrap();
    let port = plantflow::sim::broker::free_port().unwrap();
    let text = std::fs::read_to_string(dataflow("workload_v1.toml")).unwrap()
        + &format!(
            "\n[tag_quality]\nflatline_after = \"30m\"\n\n[[tag_quality.range]]\ntags = \"*/comp02/aux_kw\"\nmax = 500\n\n[http]\nlisten = \"127.0.0.1:{port}\"\n"
        );
    let df = dir.path().join("df.toml");
    std::fs::write(&df, text).unwrap();
    let lake = dir.path().join("lake");
    let env = [
        ("INPUT_DIR", input.display().to_string()),
        ("OUT_DIR", lake.display().to_string()),
    ];
    let (mut child, mut lines) = follow_node_lines(&df, &env, dir.path(), &[]);
    lines.wait_for(&format!("operator surface on http://127.0.0.1:{port}/"));
    let api = wait_for("every sample in the tag view", || {
        let (code, body) = http_get(port, "/api/v1/tags?limit=100000");
        assert_eq!(code, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let ok = v["tags"]
            .as_array()?
            .iter()
            .find(|t| t["tag"] == OK)?
            .clone();
        (ok["samples"] == 61).then_some(v)
    });
    let assets = std::fs::read_to_string(input.join("assets.csv"))
        .unwrap()
        .lines()
        .count()
        - 1;
    let counts = &api["counts"];
    assert_eq!(counts["missing"], assets - 4, "{counts}");
    for (status, n) in [
        ("ok", 1),
        ("stale", 1),
        ("flatline", 1),
        ("out_of_range", 1),
        ("unmapped", 1),
    ] {
        assert_eq!(counts[status], n, "{status}: {counts}");
    }
    assert_eq!(api["at"], "2026-01-01T01:00:00.000Z");
    let by_tag: HashMap<String, serde_json::Value> = api["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["tag"].as_str().unwrap().to_string(), t.clone()))
        .collect();
    let t = |tag: &str| &by_tag[tag];
    // OK: 61 samples (the bad one dropped), 10 + m % 7.
    assert_eq!(t(OK)["status"], "ok");
    assert_eq!(t(OK)["last_value"], 10.0 + (60 % 7) as f64);
    assert_eq!(
        (t(OK)["min"].as_f64(), t(OK)["max"].as_f64()),
        (Some(10.0), Some(16.0))
    );
    assert_eq!(t(OK)["interval_ms"], MIN);
    assert_eq!(t(OK)["site"], "site1");
    // STALE: its last sample at 00:30, 30 min before the data's end > 5 × 1 min.
    assert_eq!(t(STALE)["status"], "stale");
    assert_eq!(t(STALE)["samples"], 31);
    assert_eq!(t(STALE)["last_ts"], "2026-01-01T00:30:00.000Z");
    assert!(
        t(STALE)["detail"].as_str().unwrap().contains("30m"),
        "{}",
        t(STALE)
    );
    // FLAT: 5.0 since minute 10 (minute 5 was 5.0 too, then 6..9): 50 min ≥ 30m.
    assert_eq!(t(FLAT)["status"], "flatline");
    assert_eq!(t(FLAT)["unchanged_since"], "2026-01-01T00:10:00.000Z");
    // HIGH: 999 > 500.
    assert_eq!(t(HIGH)["status"], "out_of_range");
    assert_eq!(t(HIGH)["last_value"], 999.0);
    assert_eq!(t(HIGH)["max"], 999.0);
    // GHOST: three samples, dead-lettered as an unknown tag.
    assert_eq!(t(GHOST)["status"], "unmapped");
    assert_eq!(t(GHOST)["samples"], 3);
    assert_eq!(t(GHOST)["asset"], "");
    let (_, body) = http_get(port, "/api/v1/tags?status=stale,flatline");
    let some: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(some["total"], 2);
    assert_eq!(http_get(port, "/api/v1/tags?colour=red").0, 400);
    let (_, m) = http_get(port, "/metrics");
    assert!(
        m.lines()
            .any(|l| l == format!("plantflow_tags{{status=\"missing\"}} {}", assets - 4)),
        "{m}"
    );
    let (st, summary) = child.stop_for_summary();
    assert!(st.success(), "{summary}");

    // The lake's last snapshot says the same.
    let rows = rows(&lake, "tag_quality");
    let last = rows
        .iter()
        .map(|r| r["snapshot_at"].as_i64().unwrap())
        .max()
        .expect("a tag_quality snapshot");
    assert_eq!(last, T0 + 60 * MIN);
    let snap: HashMap<String, &HashMap<String, serde_json::Value>> = rows
        .iter()
        .filter(|r| r["snapshot_at"] == last)
        .map(|r| (r["tag"].as_str().unwrap().to_string(), r))
        .collect();
    assert_eq!(snap.len(), assets + 1);
    for (tag, status, samples) in [
        (OK, "ok", 61),
        (STALE, "stale", 31),
        (FLAT, "flatline", 61),
        (HIGH, "out_of_range", 61),
        (GHOST, "unmapped", 3),
    ] {
        assert_eq!(snap[tag]["status"], status, "{tag}");
        assert_eq!(snap[tag]["samples"], samples, "{tag}");
    }
    assert_eq!(snap[FLAT]["unchanged_since"], T0 + 10 * MIN);
    let missing = snap.values().filter(|r| r["status"] == "missing").count();
    assert_eq!(missing, assets - 4);
    assert!(snap
        .values()
        .filter(|r| r["status"] == "missing")
        .all(|r| r["last_ts"].is_null()));
}
