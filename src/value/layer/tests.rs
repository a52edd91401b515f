//! The value layer's unit tests.

use super::*;

fn layer() -> ValueLayer {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let fixture = root.join("tests/fixtures/workload_v1_small");
    let out = tempfile::tempdir().unwrap();
    let env = |k: &str| match k {
        "INPUT_DIR" => Some(fixture.display().to_string()),
        "OUT_DIR" => Some(out.path().display().to_string()),
        _ => None,
    };
    let plan = crate::dataflow::load_with_env(&root.join("dataflows/workload_v1.toml"), &env)
        .expect("workload_v1 loads");
    let aging = Aging {
        size_ms: 60_000,
        period_ms: 3_600_000,
        retention_ms: 7_200_000,
    };
    ValueLayer::new(Arc::new(plan.plan), aging)
}

/// 600 assets with waste in the hour [0, 1 h): one action each when it closes.
fn feed(l: &mut ValueLayer) {
    for i in 0..600 {
        let asset: SharedName = format!("m{i}").into();
        let f = Finding {
            rule: 0,
            group: vec!["s".into(), "l".into(), asset.clone()].into(),
            period_start: 0,
            period_end: 3_600_000,
            value: F64(1.0 + i as f64),
            windows: 60,
            in_maintenance: false,
            measures: format!("{{\"waste_kwh\": {}}}", 5.0 + i as f64),
            site: "s".into(),
            line: "l".into(),
            asset,
            kind: "compressor".into(),
        };
        l.apply(ValueIn::Finding(f), 3_600_000, 1);
    }
}

#[test]
fn a_step_hands_out_its_actions_in_parts_in_one_batchs_order() {
    let mut whole = layer();
    whole.part_actions = usize::MAX;
    feed(&mut whole);
    let mut no_parts = 0;
    let one = whole.step(3_600_000, false, &mut |_| no_parts += 1);
    assert_eq!(no_parts, 0);
    assert_eq!(one.actions.len(), 600);

    let mut parted = layer();
    feed(&mut parted);
    let mut parts = Vec::new();
    let last = parted.step(3_600_000, false, &mut |p| parts.push(p));
    let sizes: Vec<usize> = parts.iter().map(|p| p.actions.len()).collect();
    assert_eq!(sizes, [256, 256], "two full parts");
    assert_eq!(last.actions.len(), 600 - 512);
    let joined: Vec<(ActionRow, i64)> = parts
        .into_iter()
        .flat_map(|p| p.actions)
        .chain(last.actions)
        .collect();
    assert_eq!(joined, one.actions);
    // Nothing new at the next step, parted or not.
    assert!(parted
        .step(3_660_000, false, &mut |_| panic!("a part"))
        .is_empty());
}

const H: i64 = 3_600_000;

fn finding(asset: &str, hour: i64, value: f64, maint: bool) -> Finding {
    Finding {
        rule: 0,
        group: vec!["s".into(), "l".into(), asset.into()].into(),
        period_start: hour * H,
        period_end: (hour + 1) * H,
        value: F64(value),
        windows: 60,
        in_maintenance: maint,
        measures: format!("{{\"waste_kwh\": {value}}}"),
        site: "s".into(),
        line: "l".into(),
        asset: asset.into(),
        kind: "compressor".into(),
    }
}

fn ack(id: &str, status: &str, at: i64, seq: u64) -> StatusUpdate {
    StatusUpdate {
        action_id: id.into(),
        status: status.into(),
        at,
        by: "op".into(),
        note: String::new(),
        seq,
        raw: String::new(),
    }
}

/// Feeds both layers the same input, restoring what `cold` evicted
/// (through JSON, as the ledger stores it) when an update names it, and
/// steps both; returns both outputs' action versions.
#[allow(clippy::type_complexity)]
fn both(
    kept: &mut ValueLayer,
    cold: &mut ValueLayer,
    ledger: &mut Vec<String>,
    t: i64,
    input: Vec<(ValueIn, isize)>,
) -> (Vec<(ActionRow, i64)>, Vec<(ActionRow, i64)>) {
    for (d, r) in &input {
        if let Some(id) = cold.wants_back(d, t, *r) {
            let pos = ledger
                .iter()
                .position(|j| serde_json::from_str::<ColdAction>(j).unwrap().row.action_id == id);
            if let Some(pos) = pos {
                cold.restore(serde_json::from_str(&ledger.remove(pos)).unwrap());
            }
        }
        kept.apply(d.clone(), t, *r);
        cold.apply(d.clone(), t, *r);
    }
    let a = kept.step(t - 1, false, &mut |_| panic!("no parts"));
    let b = cold.step(t - 1, false, &mut |_| panic!("no parts"));
    for c in cold.evict() {
        ledger.push(serde_json::to_string(&c).unwrap());
    }
    assert_eq!(kept.counters(), cold.counters(), "counters at {t}");
    (a.actions, b.actions)
}

#[test]
fn evicted_actions_come_back_for_updates_and_corrections_with_the_same_results() {
    let (mut kept, mut cold, mut ledger) = (layer(), layer(), Vec::new());
    let name = kept.plan.name.clone();
    let rule = kept.plan.rules[0].id.clone();
    let group = |a: &str| -> Vec<SharedName> { vec!["s".into(), "l".into(), a.into()] };
    let id = |a: &str, h: i64| action_id(&name, &rule, &group(a), h * H);
    // Hours 0..8: m1 wastes every hour; m2 at hours 0 and 5, in
    // maintenance at hour 1 (suppressed, counted).
    for h in 0..8 {
        let mut input = vec![(ValueIn::Finding(finding("m1", h, 2.0 + h as f64, false)), 1)];
        if h == 0 || h == 5 {
            input.push((ValueIn::Finding(finding("m2", h, 7.0, false)), 1));
        }
        if h == 1 {
            input.push((ValueIn::Finding(finding("m2", h, 9.0, true)), 1));
        }
        if h == 2 {
            // m1's hour-0 action, on disk since hour 0 closed, is acknowledged.
            input.push((
                ValueIn::Status(ack(&id("m1", 0), "acknowledged", 2 * H + 5, 1)),
                1,
            ));
        }
        let (a, b) = both(&mut kept, &mut cold, &mut ledger, (h + 1) * H + 1, input);
        assert_eq!(a, b, "hour {h}");
        assert!(!cold.knows(&id("m1", h)), "hour {h} left when it closed");
    }
    // Now is 8 h: every closed period's action is on disk (m1's eight,
    // m2's two); the suppressed hour-1 finding left as a count once final.
    assert_eq!(ledger.len(), 10);
    assert!(!cold.knows(&id("m2", 0)) && !cold.knows(&id("m2", 5)));
    assert_eq!(cold.counters().suppressed_maintenance, 1);
    assert!(
        kept.knows(&id("m1", 0)),
        "the reference layer keeps everything"
    );

    // Status updates for actions on disk bring them back: the same new
    // versions as the layer that kept them (acknowledged, then done).
    let t = 8 * H + 1;
    let input = vec![
        (ValueIn::Status(ack(&id("m1", 0), "done", 8 * H - 10, 2)), 1),
        (
            ValueIn::Status(ack(&id("m2", 0), "rejected", 8 * H - 5, 3)),
            1,
        ),
        (ValueIn::Finding(finding("m1", 8, 3.0, false)), 1),
    ];
    let (a, b) = both(&mut kept, &mut cold, &mut ledger, t + H, input);
    assert_eq!(a, b);
    let statuses: Vec<(&str, &str, i64)> = b
        .iter()
        .map(|(r, rev)| (r.action_id.as_str(), r.status.as_str(), *rev))
        .collect();
    let (m1, m2, new) = (id("m1", 0), id("m2", 0), id("m1", 8));
    assert!(statuses.contains(&(m1.as_str(), "done", 2)), "{statuses:?}");
    assert!(
        statuses.contains(&(m2.as_str(), "rejected", 1)),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&(new.as_str(), "open", 0)),
        "{statuses:?}"
    );
    assert_eq!(
        b.len(),
        3,
        "nothing else: no withdrawn versions of evicted actions"
    );

    // A late row corrects m1's hour 7 (closed, on disk, not yet final):
    // the correction brings it back and revises it, as in the layer that
    // kept it.
    let m7 = id("m1", 7);
    assert!(!cold.knows(&m7));
    let input = vec![
        (ValueIn::Finding(finding("m1", 7, 9.0, false)), -1),
        (ValueIn::Finding(finding("m1", 7, 20.0, false)), 1),
    ];
    let (a, b) = both(&mut kept, &mut cold, &mut ledger, 9 * H + 60_001, input);
    assert_eq!(a, b);
    assert_eq!(b.len(), 1);
    assert_eq!((b[0].0.action_id.as_str(), b[0].1), (m7.as_str(), 1));
    assert_eq!(b[0].0.value, F64(20.0));
    // The retraction that only means "aged out" fetches nothing.
    let aged = ValueIn::Finding(finding("m1", 8, 3.0, false));
    assert_eq!(cold.wants_back(&aged, 11 * H + 1, -1), None);
    // The next period's pass takes them all out again.
    let (a, b) = both(&mut kept, &mut cold, &mut ledger, 10 * H + 1, Vec::new());
    assert_eq!(a, b);
    assert!(!cold.knows(&m1) && !cold.knows(&m2) && !cold.knows(&m7));
}

/// Workload v1's rule as `one_per = "group"` with expiry after 2 h: a
/// group with a finding every hour for two days (every fifth in
/// maintenance) opens an action, it expires, the next finding opens the
/// next. The compacting layer's output equals one that never compacts,
/// step by step, with the same suppression counts, while it holds a few
/// findings and actions instead of all of them.
#[test]
fn a_compacted_group_gives_the_same_actions_and_forgets_its_settled_past() {
    const H: i64 = 3_600_000;
    let mk = || {
        let mut l = layer();
        let mut plan = (*l.plan).clone();
        plan.rules[0].one_per_group = true;
        plan.rules[0].expire_after_ms = Some(2 * H);
        l.plan = Arc::new(plan);
        l.compiled = Compiled::new(&l.plan);
        l
    };
    let (mut a, mut b) = (mk(), mk());
    b.compacted_bucket = i64::MAX; // never compacts
    let group: Group = vec!["s".into(), "l".into(), "m1".into()].into();
    for h in 0..48 {
        let f = Finding {
            rule: 0,
            group: group.clone(),
            period_start: h * H,
            period_end: (h + 1) * H,
            value: F64(1.0 + h as f64),
            windows: 60,
            in_maintenance: h % 5 == 4,
            measures: format!("{{\"waste_kwh\": {}}}", 5.0 + h as f64),
            site: "s".into(),
            line: "l".into(),
            asset: "m1".into(),
            kind: "compressor".into(),
        };
        for l in [&mut a, &mut b] {
            l.apply(ValueIn::Finding(f.clone()), (h + 1) * H + 1, 1);
        }
        let t = (h + 1) * H + 1;
        let (x, y) = (
            a.step(t, false, &mut |_| panic!("no parts")),
            b.step(t, false, &mut |_| panic!("no parts")),
        );
        assert_eq!(x.actions, y.actions, "hour {h}");
        assert_eq!(a.counters(), b.counters(), "hour {h}");
    }
    let (x, y) = (
        a.step(49 * H, true, &mut |_| panic!("no parts")),
        b.step(49 * H, true, &mut |_| panic!("no parts")),
    );
    assert_eq!(x.actions, y.actions, "at the end");
    assert_eq!(a.counters(), b.counters());
    assert!(a.counters().suppressed_maintenance > 0);
    let held = |l: &ValueLayer| l.d.findings.values().map(|m| m.0.len()).sum::<usize>();
    assert_eq!(
        held(&b),
        48,
        "the layer that never compacts holds every finding"
    );
    assert!(held(&a) <= 12, "the compacting one holds {}", held(&a));
    assert!(
        a.d.actions.len() <= 4 && a.compacted > 0,
        "{} actions held",
        a.d.actions.len()
    );
}
