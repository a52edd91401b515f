//! Sparkplug host tests: hand-built payloads through the state machine.

use prost::Message;

use super::*;
use crate::model::Quality;
use proptest::prelude::*;

fn metric(name: Option<&str>, alias: Option<u64>, dt: u32, v: Value, ts: u64) -> Metric {
    Metric {
        name: name.map(str::to_string),
        alias,
        timestamp: Some(ts),
        datatype: Some(dt),
        value: Some(v),
        ..Metric::default()
    }
}

fn payload(seq: Option<u64>, metrics: Vec<Metric>) -> Vec<u8> {
    Payload {
        timestamp: Some(1_000),
        metrics,
        seq,
        uuid: None,
        body: None,
    }
    .encode_to_vec()
}

fn nbirth() -> Vec<u8> {
    payload(
        Some(0),
        vec![
            metric(
                Some("bdSeq"),
                None,
                datatype::INT64,
                Value::LongValue(3),
                1_000,
            ),
            metric(
                Some("Node Control/Rebirth"),
                None,
                datatype::BOOLEAN,
                Value::BooleanValue(false),
                1_000,
            ),
            metric(
                Some("power_kw"),
                Some(1),
                datatype::DOUBLE,
                Value::DoubleValue(10.0),
                1_000,
            ),
            metric(
                Some("temp"),
                Some(2),
                datatype::INT16,
                Value::IntValue(0xFFF6),
                1_000,
            ),
        ],
    )
}

#[test]
fn birth_data_death_rebirth() {
    let mut h = Host::default();
    let o = h.handle("spBv1.0/g/NBIRTH/n1", &nbirth(), 5);
    assert!(o.dead.is_empty(), "{:?}", o.dead);
    assert_eq!(o.rows.len(), 2);
    assert_eq!(
        o.rows[0],
        SpRow {
            tag: "g/n1/power_kw".into(),
            ts: 1_000,
            value: 10.0,
            quality: Quality::Good
        }
    );
    // Int16 two's complement: 0xFFF6 = -10.
    assert_eq!(o.rows[1].value, -10.0);

    // NDATA by alias only.
    let d = payload(
        Some(1),
        vec![metric(
            None,
            Some(1),
            datatype::DOUBLE,
            Value::DoubleValue(12.5),
            2_000,
        )],
    );
    let o = h.handle("spBv1.0/g/NDATA/n1", &d, 5);
    assert_eq!(
        o.rows,
        vec![SpRow {
            tag: "g/n1/power_kw".into(),
            ts: 2_000,
            value: 12.5,
            quality: Quality::Good
        }]
    );
    assert!(o.rebirth.is_none());

    // A seq gap (expected 2, got 4) asks for rebirth but keeps the values.
    let d = payload(
        Some(4),
        vec![metric(
            None,
            Some(1),
            datatype::DOUBLE,
            Value::DoubleValue(13.0),
            3_000,
        )],
    );
    let o = h.handle("spBv1.0/g/NDATA/n1", &d, 6);
    assert_eq!(o.rows.len(), 1);
    assert_eq!(o.rebirth, Some(("g".into(), "n1".into())));

    // An alias never born: dead letter, rebirth held off (asked 1 ms ago).
    let d = payload(
        Some(5),
        vec![metric(
            None,
            Some(9),
            datatype::DOUBLE,
            Value::DoubleValue(1.0),
            3_000,
        )],
    );
    let o = h.handle("spBv1.0/g/NDATA/n1", &d, 7);
    assert_eq!(o.dead, vec!["alias 9 was never born".to_string()]);
    assert!(o.rebirth.is_none());

    // NDEATH with a stale bdSeq is ignored; with the right one, tags go bad at its time.
    let death = |bd: u64| {
        payload(
            None,
            vec![metric(
                Some("bdSeq"),
                None,
                datatype::INT64,
                Value::LongValue(bd),
                4_000,
            )],
        )
    };
    let o = h.handle("spBv1.0/g/NDEATH/n1", &death(2), 8);
    assert!(o.ignored && o.rows.is_empty());
    let o = h.handle("spBv1.0/g/NDEATH/n1", &death(3), 8);
    assert_eq!(o.rows.len(), 2);
    assert!(o
        .rows
        .iter()
        .all(|r| r.quality == Quality::Bad && r.ts == 1_000));
    assert_eq!(o.rows[0].value, 13.0, "stale marker carries the last value");

    // Data after death: dead letter + rebirth request (hold-off passed).
    let d = payload(
        Some(6),
        vec![metric(
            None,
            Some(1),
            datatype::DOUBLE,
            Value::DoubleValue(1.0),
            5_000,
        )],
    );
    let o = h.handle("spBv1.0/g/NDATA/n1", &d, 10_000);
    assert!(o.rows.is_empty());
    assert_eq!(o.rebirth, Some(("g".into(), "n1".into())));
}

#[test]
fn devices_and_history() {
    let mut h = Host::default();
    h.handle("spBv1.0/g/NBIRTH/n1", &nbirth(), 5);
    let b = payload(
        Some(1),
        vec![metric(
            Some("kw"),
            Some(10),
            datatype::FLOAT,
            Value::FloatValue(2.5),
            1_500,
        )],
    );
    let o = h.handle("spBv1.0/g/DBIRTH/n1/d1", &b, 5);
    assert_eq!(o.rows[0].tag, "g/n1/d1/kw");
    let mut m = metric(None, Some(10), datatype::FLOAT, Value::FloatValue(1.0), 500);
    m.is_historical = Some(true);
    let o = h.handle("spBv1.0/g/DDATA/n1/d1", &payload(Some(2), vec![m]), 5);
    assert_eq!(
        o.rows,
        vec![SpRow {
            tag: "g/n1/d1/kw".into(),
            ts: 500,
            value: 1.0,
            quality: Quality::Good
        }]
    );
    // DDEATH: the device's tag goes bad with its last *live* value (2.5, not the historical 1.0).
    let o = h.handle("spBv1.0/g/DDEATH/n1/d1", &payload(Some(3), vec![]), 5);
    assert_eq!(
        o.rows,
        vec![SpRow {
            tag: "g/n1/d1/kw".into(),
            ts: 1_000,
            value: 2.5,
            quality: Quality::Bad
        }]
    );
}

#[test]
fn bad_messages() {
    let mut h = Host::default();
    let o = h.handle("spBv1.0/g/NBIRTH/n1", &[0x0a, 0xff, 0x01], 5);
    assert!(o.dead[0].starts_with("invalid Sparkplug protobuf"));
    let o = h.handle("spBv1.0/g/NDATA/n9", &payload(Some(0), vec![]), 5);
    assert!(o.dead[0].contains("not been born"));
    assert!(o.rebirth.is_some());
    assert!(h.handle("spBv1.0/g/BOGUS/n1", &[], 5).dead[0].contains("unknown"));
    assert!(h.handle("spBv1.0/g/NDATA", &[], 5).dead[0].contains("malformed"));
    assert!(
        h.handle("spBv1.0/g/NCMD/n1", &rebirth_payload(1), 5)
            .ignored
    );
    let r = Payload::decode(rebirth_payload(7).as_slice()).unwrap();
    assert_eq!(r.metrics[0].name.as_deref(), Some("Node Control/Rebirth"));
    assert_eq!(r.metrics[0].value, Some(Value::BooleanValue(true)));
}

proptest! {
    #[test]
    fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512),
                            kind in prop::sample::select(vec!["NBIRTH","DBIRTH","NDATA","DDATA","NDEATH","DDEATH"])) {
        let mut h = Host::default();
        h.handle("spBv1.0/g/NBIRTH/n", &nbirth(), 0);
        let topic = if kind.starts_with('D') { format!("spBv1.0/g/{kind}/n/d") } else { format!("spBv1.0/g/{kind}/n") };
        let o = h.handle(&topic, &bytes, 1);
        for r in o.rows { prop_assert!(r.value.is_finite()); }
    }
}
