//! Plain MQTT payloads → sample rows: a bare number, a JSON object, or a JSON
//! array of objects (a batch, each naming its tag).
//!
//! Field names are configurable. Timestamps may be epoch milliseconds, epoch
//! seconds (integer or fractional) or RFC 3339 strings; quality may be
//! `0|1|2`, an OPC UA StatusCode, or `good|uncertain|bad`. A row without a
//! timestamp gets the receive time (the caller fills it in). Every problem
//! is an error string that becomes the dead letter's reason; nothing panics.

use serde_json::Value;

use crate::model::Quality;

/// How timestamps are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TsUnit {
    /// Numbers below 10^11 are seconds, others milliseconds; strings RFC 3339 or numeric.
    Auto,
    Millis,
    Seconds,
    Rfc3339,
}

/// Payload field names and conventions for JSON payloads.
#[derive(Clone, Debug, PartialEq)]
pub struct JsonFields {
    pub value: String,
    pub ts: String,
    pub quality: String,
    pub tag: String,
    pub ts_unit: TsUnit,
}

impl Default for JsonFields {
    fn default() -> Self {
        JsonFields {
            value: "value".into(),
            ts: "ts".into(),
            quality: "quality".into(),
            tag: "tag".into(),
            ts_unit: TsUnit::Auto,
        }
    }
}

/// One decoded row; `tag: None` means "the topic's tag", `ts: None` "receive time".
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub tag: Option<String>,
    pub ts: Option<i64>,
    pub value: f64,
    pub quality: Quality,
}

/// Parses a bare-number payload (`42`, `-1.5e3`, `true`/`false` as 1/0).
pub fn decode_number(payload: &[u8]) -> Result<Row, String> {
    let text = std::str::from_utf8(payload).map_err(|_| "payload is not UTF-8 text".to_string())?;
    let t = text.trim();
    let value = match t {
        "true" => 1.0,
        "false" => 0.0,
        _ => t
            .parse::<f64>()
            .map_err(|_| format!("payload is not a number: `{}`", clip(t)))?,
    };
    if !value.is_finite() {
        return Err("value is NaN or infinite".into());
    }
    Ok(Row {
        tag: None,
        ts: None,
        value,
        quality: Quality::Good,
    })
}

/// An array element that could not be used: why, and the element itself
/// (its JSON text), which its dead letter keeps instead of the whole payload.
#[derive(Clone, Debug, PartialEq)]
pub struct BadElement {
    pub reason: String,
    pub raw: String,
}

/// Decodes a JSON object or array payload into rows. An array element that
/// fails is reported with its index and its own text; the other elements
/// still count. A single object's error has the payload as its text.
pub fn decode_json(payload: &[u8], f: &JsonFields) -> Result<Vec<Result<Row, BadElement>>, String> {
    let v: Value = serde_json::from_slice(payload).map_err(|e| format!("malformed JSON: {e}"))?;
    match v {
        Value::Object(_) => Ok(vec![object(&v, f, false).map_err(|reason| BadElement {
            reason,
            raw: String::from_utf8_lossy(payload).into_owned(),
        })]),
        Value::Array(items) => {
            if items.is_empty() {
                return Err("empty JSON array".into());
            }
            Ok(items
                .iter()
                .enumerate()
                .map(|(i, it)| {
                    object(it, f, true).map_err(|e| BadElement {
                        reason: format!("element {i}: {e}"),
                        raw: it.to_string(),
                    })
                })
                .collect())
        }
        Value::Number(_) | Value::Bool(_) => {
            // A JSON scalar is a bare number.
            decode_number(payload).map(|r| vec![Ok(r)])
        }
        other => Err(format!(
            "wrong type: a JSON {}, expected an object, an array of objects or a number",
            kind(&other)
        )),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn clip(s: &str) -> String {
    s.chars().take(40).collect()
}

fn object(v: &Value, f: &JsonFields, in_batch: bool) -> Result<Row, String> {
    let Value::Object(m) = v else {
        return Err(format!(
            "wrong type: a JSON {}, expected an object",
            kind(v)
        ));
    };
    let value = match m.get(&f.value) {
        None => return Err(format!("no `{}` field", f.value)),
        Some(Value::Number(n)) => n
            .as_f64()
            .ok_or_else(|| format!("`{}` is not representable as a number", f.value))?,
        Some(Value::Bool(b)) => f64::from(u8::from(*b)),
        Some(Value::String(s)) => match s.trim().parse::<f64>() {
            // Numbers sent as strings are common (PLC gateways); NaN/inf are not values.
            Ok(x) if x.is_finite() => x,
            Ok(_) => return Err("value is NaN or infinite".into()),
            Err(_) => {
                return Err(format!(
                    "wrong type: `{}` is the string `{}`, expected a number",
                    f.value,
                    clip(s)
                ))
            }
        },
        Some(other) => {
            return Err(format!(
                "wrong type: `{}` is a JSON {}, expected a number",
                f.value,
                kind(other)
            ))
        }
    };
    if !value.is_finite() {
        return Err("value is NaN or infinite".into());
    }
    let ts = match m.get(&f.ts) {
        None | Some(Value::Null) => None,
        Some(t) => Some(timestamp(t, f.ts_unit).map_err(|e| format!("`{}`: {e}", f.ts))?),
    };
    let quality = match m.get(&f.quality) {
        None | Some(Value::Null) => Quality::Good,
        Some(q) => quality(q).map_err(|e| format!("`{}`: {e}", f.quality))?,
    };
    let tag = match m.get(&f.tag) {
        None if in_batch => return Err(format!("no `{}` field in a batch element", f.tag)),
        None => None,
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Some(other) => {
            return Err(format!(
                "wrong type: `{}` is a JSON {}, expected a non-empty string",
                f.tag,
                kind(other)
            ))
        }
    };
    Ok(Row {
        tag,
        ts,
        value,
        quality,
    })
}

/// Epoch ms from a JSON timestamp.
pub fn timestamp(v: &Value, unit: TsUnit) -> Result<i64, String> {
    let from_num = |x: f64, unit: TsUnit| -> Result<i64, String> {
        if !x.is_finite() {
            return Err("not a finite number".into());
        }
        let ms = match unit {
            TsUnit::Millis => x,
            TsUnit::Seconds => x * 1000.0,
            TsUnit::Auto if x.abs() < 1e11 => x * 1000.0,
            TsUnit::Auto => x,
            TsUnit::Rfc3339 => return Err("expected an RFC 3339 string".into()),
        };
        if ms.abs() > 9.0e15 {
            return Err("out of range".into());
        }
        Ok(ms.round() as i64)
    };
    match v {
        Value::Number(n) => from_num(n.as_f64().unwrap_or(f64::NAN), unit),
        Value::String(s) => {
            let s = s.trim();
            if unit != TsUnit::Rfc3339 {
                if let Ok(x) = s.parse::<f64>() {
                    return from_num(x, unit);
                }
            }
            chrono::DateTime::parse_from_rfc3339(s)
                .map(|d| d.timestamp_millis())
                .map_err(|_| format!("invalid timestamp `{}`", clip(s)))
        }
        other => Err(format!("wrong type: a JSON {}", kind(other))),
    }
}

/// Quality from a number (0/1/2 or StatusCode) or a word.
pub fn quality(v: &Value) -> Result<Quality, String> {
    match v {
        Value::Number(n) => n
            .as_u64()
            .and_then(Quality::from_code)
            .ok_or_else(|| format!("invalid quality `{n}`")),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "good" => Ok(Quality::Good),
            "uncertain" => Ok(Quality::Uncertain),
            "bad" => Ok(Quality::Bad),
            other => other
                .parse::<u64>()
                .ok()
                .and_then(Quality::from_code)
                .ok_or_else(|| format!("invalid quality `{}`", clip(other))),
        },
        other => Err(format!("wrong type: a JSON {}", kind(other))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn one(p: &str) -> Result<Row, String> {
        let mut v = decode_json(p.as_bytes(), &JsonFields::default())?;
        v.remove(0).map_err(|b| b.reason)
    }

    #[test]
    fn objects() {
        let r = one(r#"{"ts":1767596100032,"value":63.13,"quality":0}"#).unwrap();
        assert_eq!(r.ts, Some(1_767_596_100_032));
        assert_eq!(r.value, 63.13);
        assert_eq!(r.quality, Quality::Good);
        // Seconds, fractional seconds, RFC 3339 all land on the same millisecond.
        let a = one(r#"{"ts":1767596100.032,"value":1}"#).unwrap().ts;
        let b = one(r#"{"ts":"2026-01-05T07:35:00.032Z","value":1}"#)
            .unwrap()
            .ts;
        assert_eq!(a, Some(1_767_596_100_032));
        assert_eq!(b, Some(1_767_598_500_032));
        assert_eq!(
            one(r#"{"ts":1767596100,"value":1}"#).unwrap().ts,
            Some(1_767_596_100_000)
        );
        // Quality words and OPC UA StatusCodes (BadNodeIdUnknown = 0x80340000).
        assert_eq!(
            one(r#"{"value":1,"quality":"Uncertain"}"#).unwrap().quality,
            Quality::Uncertain
        );
        assert_eq!(
            one(r#"{"value":1,"quality":2150891520}"#).unwrap().quality,
            Quality::Bad
        );
        // No timestamp: the receive time is used (None here).
        assert_eq!(one(r#"{"value":"2.5"}"#).unwrap().ts, None);
    }

    #[test]
    fn bad_payloads_say_why() {
        let f = JsonFields::default();
        assert!(decode_json(b"{not json", &f)
            .unwrap_err()
            .starts_with("malformed JSON"));
        assert!(one(r#"{"value":"abc"}"#)
            .unwrap_err()
            .contains("wrong type"));
        assert!(one(r#"{"value":[1]}"#).unwrap_err().contains("wrong type"));
        assert!(one(r#"{"v":1}"#).unwrap_err().contains("no `value` field"));
        assert!(one(r#"{"value":"NaN"}"#).unwrap_err().contains("NaN"));
        assert!(one(r#"{"value":1,"quality":"great"}"#)
            .unwrap_err()
            .contains("invalid quality"));
        assert!(one(r#"{"value":1,"ts":"yesterday"}"#)
            .unwrap_err()
            .contains("invalid timestamp"));
        assert!(decode_json(b"\"hi\"", &f)
            .unwrap_err()
            .contains("wrong type"));
        assert!(decode_number(b"NaN").is_err());
        assert!(decode_number(b"inf").is_err());
        assert!(decode_number(&[0xff, 0xfe]).is_err());
        assert_eq!(decode_number(b" 42.5\n").unwrap().value, 42.5);
    }

    #[test]
    fn batches_keep_good_elements() {
        let p =
            br#"[{"tag":"a","ts":1767596100000,"value":1},{"tag":"b","value":"x"},{"value":3}]"#;
        let rows = decode_json(p, &JsonFields::default()).unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].as_ref().unwrap().tag.as_deref(), Some("a"));
        let bad = rows[1].as_ref().unwrap_err();
        assert!(bad.reason.starts_with("element 1: wrong type"));
        // The element's own text, not the whole payload.
        assert_eq!(bad.raw, r#"{"tag":"b","value":"x"}"#);
        let bad = rows[2].as_ref().unwrap_err();
        assert!(bad.reason.contains("no `tag` field"));
        assert_eq!(bad.raw, r#"{"value":3}"#);
    }

    proptest! {
        // Any bytes: an error or rows, never a panic, and rows are finite.
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(rows) = decode_json(&bytes, &JsonFields::default()) {
                for r in rows.into_iter().flatten() {
                    prop_assert!(r.value.is_finite());
                }
            }
            if let Ok(r) = decode_number(&bytes) {
                prop_assert!(r.value.is_finite());
            }
        }

        // Structured JSON with arbitrary field values.
        #[test]
        fn arbitrary_objects(v in proptest::option::of(any::<f64>()), ts in any::<i64>(),
                             q in "[a-z]{0,8}", tag in ".{0,8}") {
            let obj = serde_json::json!({"value": v, "ts": ts, "quality": q, "tag": tag});
            let bytes = serde_json::to_vec(&obj).unwrap();
            let _ = decode_json(&bytes, &JsonFields::default());
        }
    }
}
