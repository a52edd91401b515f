//! `plantflow demo` end to end: the binary starts its own broker and OPC UA
//! server, simulates the week (fast), and the lake must show exactly one
//! action per injected problem, a verified outcome for the compressor fix,
//! and a report with its charts.

use std::collections::HashMap;
use std::process::Command;

use crate::common::*;
use plantflow::sim::plant::EXPECTED;

fn f(r: &HashMap<String, serde_json::Value>, k: &str) -> f64 {
    r[k].as_f64().unwrap_or_else(|| panic!("{k} = {}", r[k]))
}

#[test]
fn demo_finds_every_injected_problem_once_and_verifies_the_fix() {
    let out = tempfile::tempdir().unwrap();
    let res = Command::new(env!("CARGO_BIN_EXE_plantflow"))
        .args([
            "demo",
            "--quiet",
            "--duration",
            "7d",
            "--speed",
            "60000",
            "--http",
            "127.0.0.1:0",
            "--out",
        ])
        .arg(out.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&res.stdout);
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(res.status.success(), "demo failed:\n{stdout}\n{stderr}");
    let lake = out.path().join("lake");

    // Exactly one action per injected problem, with the right owner and work.
    let actions = latest(rows(&lake, "actions"), &["action_id"]);
    let mut seen: Vec<String> = Vec::new();
    for (rule, site, asset, owner, action_type) in EXPECTED {
        let found: Vec<_> = actions
            .values()
            .filter(|a| a["rule"] == *rule && a["site"] == *site && a["asset"] == *asset)
            .collect();
        assert_eq!(found.len(), 1, "{rule} on {site}/{asset}: {found:#?}");
        assert_eq!(found[0]["owner"], *owner, "{rule}");
        assert_eq!(found[0]["action_type"], *action_type, "{rule}");
        assert!(f(found[0], "value") > 0.0, "{rule} has a value at stake");
        seen.push(found[0]["action_id"].as_str().unwrap().to_string());
    }
    let extra: Vec<_> = actions
        .values()
        .filter(|a| !seen.contains(&a["action_id"].as_str().unwrap().to_string()))
        .map(|a| format!("{} {}/{}", a["rule"], a["site"], a["asset"]))
        .collect();
    assert!(
        extra.is_empty(),
        "actions for problems nobody injected: {extra:?}"
    );

    // The compressor fix is verified. The plant model draws 12 kW unloaded
    // plus 0.25 kW per unit/h while producing, so the baseline regression
    // must find about that; after the auto-stop it idles at 1.5 kW.
    let comp = actions
        .values()
        .find(|a| a["rule"] == "compressor_off_hours")
        .unwrap();
    assert_eq!(comp["status"], "verified", "{comp:#?}");
    // The crew leaves one action for the board's user.
    let left = actions
        .values()
        .find(|a| a["rule"] == plantflow::sim::crew::LEFT_OPEN)
        .unwrap();
    assert_eq!(left["status"], "open", "{left:#?}");
    let outcomes = latest(rows(&lake, "outcomes"), &["action_id"]);
    let o = outcomes
        .values()
        .find(|o| o["action_id"] == comp["action_id"])
        .expect("the compressor's outcome");
    assert_eq!(o["verdict"], "verified", "{o:#?}");
    assert_eq!(o["final"], true);
    let model = o["model"].as_str().unwrap();
    let nums: Vec<f64> = model
        .split(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-'))
        .filter_map(|s| s.parse().ok())
        .collect();
    assert!(
        (nums[0] - 12.0).abs() < 0.3 && (nums[1] - 0.25).abs() < 0.01,
        "baseline model {model}"
    );
    // Every idle reporting hour saves about 12 − 1.5 kWh; producing hours none.
    let buckets: Vec<_> = rows(&lake, "outcome_buckets")
        .into_iter()
        .filter(|b| b["action_id"] == comp["action_id"])
        .collect();
    let rev = buckets
        .iter()
        .map(|b| b["revision"].as_i64().unwrap())
        .max()
        .unwrap();
    let rep: Vec<_> = buckets
        .iter()
        .filter(|b| b["revision"].as_i64() == Some(rev) && b["period"] == "reporting")
        .collect();
    let idle = rep.iter().filter(|b| f(b, "units") == 0.0).count() as f64;
    assert!(idle >= 24.0, "{idle} idle reporting hours");
    let avoided = f(o, "avoided_kwh");
    assert!(
        (avoided - idle * 10.5).abs() < 0.05 * idle * 10.5,
        "avoided {avoided} kWh vs {idle} idle hours x 10.5 kWh"
    );
    let sum: f64 = rep
        .iter()
        .map(|b| f(b, "predicted_kwh") - f(b, "measured_kwh"))
        .sum();
    assert!((sum - avoided).abs() < 1e-6 * avoided.abs().max(1.0));
    assert!(f(o, "avoided_cost") > 0.0);

    // The chiller was cleaned: its action is done and no new one opened
    // (checked above), and its last hours run at 0.62 kW/ton again.
    let chiller = actions
        .values()
        .find(|a| a["rule"] == "chiller_kw_per_ton")
        .unwrap();
    assert_eq!(chiller["status"], "done", "{chiller:#?}");

    // The compressor's Modbus sub-meter, read out record by record with its
    // time register: its counter's kWh over the run equal the compressor's
    // energy from its OPC UA windows over the same span, every 15-minute
    // record is one sample at its own time, and its PF is the one served.
    let aggs = latest(rows(&lake, "aggregates"), &["tag", "window_start"]);
    let of = |tag: &str| -> Vec<&HashMap<String, serde_json::Value>> {
        aggs.values().filter(|a| a["tag"] == tag).collect()
    };
    let ws = |a: &HashMap<String, serde_json::Value>| a["window_start"].as_i64().unwrap();
    let kwh = of("site1/l1/pm1/kwh");
    let last = kwh.iter().map(|a| ws(a)).max().expect("meter kWh windows");
    let meter: f64 = kwh.iter().map(|a| f(a, "mean") * f(a, "count")).sum();
    let comp: f64 = of("site1/l1/comp1/power_kw")
        .iter()
        .filter(|a| ws(a) < last)
        .map(|a| f(a, "mean") / 60.0)
        .sum();
    assert!(comp > 1000.0, "the compressor ran: {comp} kWh");
    assert!(
        (meter - comp).abs() < 0.011 + 1e-9 * comp,
        "meter {meter} kWh vs compressor {comp} kWh"
    );
    let t0 = plantflow::sim::plant::T0;
    let kw = of("site1/l1/pm1/kw");
    assert_eq!(kw.len() as i64, (last - t0) / (15 * 60_000) + 1);
    assert!(kw
        .iter()
        .all(|a| f(a, "count") == 1.0 && (ws(a) - t0) % (15 * 60_000) == 0));
    assert!(of("site1/l1/pm1/pf")
        .iter()
        .all(|a| (f(a, "mean") - 0.92).abs() < 1e-9));

    // The summary and the report.
    assert!(stdout.contains("verified savings:"), "{stdout}");
    assert!(stdout.contains("duckdb -c"), "{stdout}");
    let html = std::fs::read_to_string(out.path().join("report.html")).unwrap();
    assert!(html.matches("<svg").count() >= 3, "charts in the report");
    assert!(html.contains("comp1"), "the verified action's chart");
    assert!(!html.contains("src=\"http") && !html.contains("href=\"http"));

    // `plantflow report` builds the same report from the lake alone.
    let again = out.path().join("again.html");
    let res = Command::new(env!("CARGO_BIN_EXE_plantflow"))
        .args(["report", "--lake"])
        .arg(&lake)
        .arg("--out")
        .arg(&again)
        .output()
        .unwrap();
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    let html2 = std::fs::read_to_string(&again).unwrap();
    assert_eq!(html2.matches("<svg").count(), html.matches("<svg").count());
    assert!(String::from_utf8_lossy(&res.stdout).contains("1 verified"));
}
