//! Decoding spread over threads. Parsing a number or JSON payload needs
//! nothing but the payload and its route, and it is most of an `mqtt`
//! source's work with batched payloads. So the source's thread takes what
//! the broker has sent in a batch, has the batch parsed on up to as many
//! threads as the process has workers, and then hands the rows to the
//! normaliser in arrival order itself: watermarks, redeliveries,
//! acknowledgements, Sparkplug aliases and context edits depend on the
//! order, and stay on one thread.

use super::conn::Msg;
use super::{payload, Format, MqttSourcePlan};
use crate::model::Quality;

/// What one message of a number or JSON route holds, in payload order.
#[derive(Debug)]
pub(super) enum Item {
    Row {
        tag: String,
        ts: i64,
        value: f64,
        quality: Quality,
    },
    /// A dead letter: its reason, and its text (`None`: the payload's).
    Reject { reason: String, raw: Option<String> },
}

/// A message parsed ahead of the normaliser, or one it decodes itself in
/// order (Sparkplug, context edits, no route, too large).
#[derive(Debug)]
pub(super) enum Parsed {
    Items(Vec<Item>),
    InOrder,
}

/// A batch parsed on several threads only when it is worth the threads:
/// this many bytes of payload at least.
const PARALLEL_BYTES: usize = 64 * 1024;

/// Parses `m` (received at `recv`, the time of rows without one), unless
/// its route's format needs the source's state.
pub(super) fn parse(plan: &MqttSourcePlan, m: &Msg, recv: i64) -> Parsed {
    let topic = m.topic.as_str();
    if m.payload.len() > plan.max_payload {
        return Parsed::InOrder;
    }
    let Some((route, caps)) = plan
        .routes
        .iter()
        .find_map(|r| r.captures(topic).map(|c| (r, c)))
    else {
        return Parsed::InOrder;
    };
    let reject = |reason: String| Item::Reject { reason, raw: None };
    let items = match &route.format {
        Format::Number => match payload::decode_number(&m.payload) {
            Ok(r) => vec![Item::Row {
                tag: route.tag_of(topic, &caps),
                ts: r.ts.unwrap_or(recv),
                value: r.value,
                quality: r.quality,
            }],
            Err(e) => vec![reject(e)],
        },
        Format::Json(fields) => match payload::decode_json(&m.payload, fields) {
            Ok(rows) => {
                let topic_tag = route.tag_of(topic, &caps);
                rows.into_iter()
                    .map(|r| match r {
                        Ok(r) => Item::Row {
                            tag: r.tag.unwrap_or_else(|| topic_tag.clone()),
                            ts: r.ts.unwrap_or(recv),
                            value: r.value,
                            quality: r.quality,
                        },
                        Err(bad) => Item::Reject {
                            reason: bad.reason,
                            raw: Some(bad.raw),
                        },
                    })
                    .collect()
            }
            Err(e) => vec![reject(e)],
        },
        Format::Sparkplug(_) | Format::Context(_) => return Parsed::InOrder,
    };
    Parsed::Items(items)
}

/// Parses `msgs` on up to `threads` threads (on this one alone when the
/// batch is small), in their order.
pub(super) fn parse_all(plan: &MqttSourcePlan, msgs: &[Msg], threads: usize) -> Vec<Parsed> {
    let recv = crate::model::now_ms();
    let bytes: usize = msgs.iter().map(|m| m.payload.len()).sum();
    let threads = threads.min(msgs.len()).max(1);
    if threads == 1 || bytes < PARALLEL_BYTES {
        return msgs.iter().map(|m| parse(plan, m, recv)).collect();
    }
    let per = msgs.len().div_ceil(threads);
    std::thread::scope(|s| {
        let others: Vec<_> = msgs
            .chunks(per)
            .skip(1)
            .map(|c| s.spawn(move || c.iter().map(|m| parse(plan, m, recv)).collect::<Vec<_>>()))
            .collect();
        let mut out: Vec<Parsed> = msgs[..per].iter().map(|m| parse(plan, m, recv)).collect();
        for h in others {
            match h.join() {
                Ok(part) => out.extend(part),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        out
    })
}

#[cfg(test)]
mod tests {
    use super::super::conn::{ConnPlan, Version};
    use super::super::topic::TopicTemplate;
    use super::super::Route;
    use super::*;

    fn plan() -> MqttSourcePlan {
        let route = |filter: &str, format: Format| Route {
            filter: filter.into(),
            qos: 1,
            template: Some(TopicTemplate::parse(&filter.replace('#', "{tag+}")).unwrap()),
            tag: None,
            format,
        };
        MqttSourcePlan {
            id: "m".into(),
            conn: ConnPlan {
                host: "localhost".into(),
                port: 1883,
                tls: false,
                version: Version::V5,
                client_id: "c".into(),
                username: None,
                password: None,
                ca_file: None,
                client_cert: None,
                client_key: None,
                keep_alive_s: 30,
                clean: false,
                session_expiry_s: 0,
                inflight: 100,
                max_packet: 1 << 20,
            },
            routes: vec![
                route("n/#", Format::Number),
                route("j/#", Format::Json(Default::default())),
            ],
            max_payload: 4096,
            batch_rows: 1000,
            request_rebirth: false,
            channel: 64,
            stall_after: None,
            decode_threads: 0,
        }
    }

    fn msg(topic: &str, payload: String) -> Msg {
        Msg {
            topic: topic.into(),
            payload: payload.into_bytes().into(),
            qos: 1,
            retain: false,
            token: None,
        }
    }

    /// A batch of numbers, JSON objects and arrays (some elements bad),
    /// malformed payloads, a topic of no route and one too large parses on
    /// three threads exactly as on one, in arrival order, and each
    /// message as it would alone.
    #[test]
    fn a_batch_parsed_on_several_threads_equals_it_parsed_on_one() {
        let plan = plan();
        let mut msgs = Vec::new();
        for i in 0..3000 {
            msgs.push(match i % 6 {
                0 => msg(&format!("n/a/{i}"), format!("{i}.5")),
                1 => msg(&format!("n/a/{i}"), "not a number".into()),
                2 => msg(
                    &format!("j/b/{i}"),
                    format!(r#"{{"ts":{i},"value":{i},"quality":192}}"#),
                ),
                3 => msg(
                    "j/batch",
                    format!(r#"[{{"tag":"t{i}","ts":1,"value":2}},{{"tag":"t","value":"x"}}]"#),
                ),
                4 => msg("elsewhere", "1".into()),
                _ => msg("j/big", "x".repeat(5000)),
            });
        }
        let bytes: usize = msgs.iter().map(|m| m.payload.len()).sum();
        assert!(bytes >= PARALLEL_BYTES, "large enough to spread");
        let one = format!("{:?}", parse_all(&plan, &msgs, 1));
        let three = format!("{:?}", parse_all(&plan, &msgs, 3));
        // (rows without a time take the batch's receive time: none here
        // but the numbers, whose times are compared apart)
        let clear = |s: &str| -> String {
            s.split("ts: ")
                .map(|p| p.trim_start_matches(|c: char| c.is_ascii_digit()))
                .collect()
        };
        assert_eq!(clear(&one), clear(&three));
        let got = parse_all(&plan, &msgs, 3);
        assert!(
            matches!(&got[0], Parsed::Items(i) if matches!(&i[..], [Item::Row { value, .. }] if *value == 0.5))
        );
        assert!(
            matches!(&got[1], Parsed::Items(i) if matches!(&i[..], [Item::Reject { raw: None, .. }]))
        );
        assert!(
            matches!(&got[3], Parsed::Items(i) if i.len() == 2 && matches!(&i[1], Item::Reject { raw: Some(_), .. }))
        );
        assert!(matches!(got[4], Parsed::InOrder), "no route: in order");
        assert!(matches!(got[5], Parsed::InOrder), "too large: in order");
        let Parsed::Items(items) = &got[2996] else {
            panic!("{:?}", got[2996])
        };
        // (a JSON `ts` is in seconds unless `ts_unit` says otherwise)
        let want = "[Row { tag: \"b/2996\", ts: 2996000, value: 2996.0, quality: Good }]";
        assert_eq!(format!("{items:?}"), want);
    }
}
