//! OPC UA `DataValue` → sample fields: event time, number, quality.
//!
//! - Event time is the SourceTimestamp; without one the ServerTimestamp;
//!   without either the receive time. Which one was used is returned
//!   ([`TsOrigin`]) and counted per source.
//! - Quality is the StatusCode's severity (bits 31–30: good, uncertain, bad).
//! - Numbers: every numeric scalar and Boolean (0/1). Strings, arrays,
//!   structures and other types are type mismatches: the caller
//!   dead-letters them with the reason returned here.
//! - A bad value carries no number (Part 4 §7.39: "shall never be used"):
//!   it becomes a bad-quality row holding the item's last good value, so
//!   the quality policy decides what happens to it and no number is invented.

use opcua::types::{DataValue, DateTime, StatusCode, Variant};

use crate::model::Quality;

/// Which timestamp became the event time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TsOrigin {
    Source,
    Server,
    Receive,
}

impl TsOrigin {
    pub fn counter(self) -> &'static str {
        match self {
            TsOrigin::Source => "opcua: event time from SourceTimestamp",
            TsOrigin::Server => "opcua: event time from ServerTimestamp (no SourceTimestamp)",
            TsOrigin::Receive => "opcua: event time from receive time (no timestamps)",
        }
    }
}

/// A converted value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Converted {
    pub ts: i64,
    pub origin: TsOrigin,
    pub value: f64,
    pub quality: Quality,
}

/// Quality from a StatusCode's severity bits.
pub fn quality(status: StatusCode) -> Quality {
    match status.bits() >> 30 {
        0 => Quality::Good,
        1 => Quality::Uncertain,
        _ => Quality::Bad,
    }
}

fn millis(t: &Option<DateTime>) -> Option<i64> {
    t.as_ref()
        .filter(|t| !t.is_null())
        .map(|t| t.as_chrono().timestamp_millis())
}

/// The error of a notification that carries no value at all (servers send
/// these for points not read yet); the source counts them, they are not data.
pub const NO_VALUE: &str = "no value";

/// A numeric scalar, or why it is not one.
pub fn number(v: &Variant) -> Result<f64, String> {
    Ok(match v {
        Variant::Boolean(b) => f64::from(u8::from(*b)),
        Variant::SByte(x) => f64::from(*x),
        Variant::Byte(x) => f64::from(*x),
        Variant::Int16(x) => f64::from(*x),
        Variant::UInt16(x) => f64::from(*x),
        Variant::Int32(x) => f64::from(*x),
        Variant::UInt32(x) => f64::from(*x),
        Variant::Int64(x) => *x as f64,
        Variant::UInt64(x) => *x as f64,
        Variant::Float(x) => f64::from(*x),
        Variant::Double(x) => *x,
        Variant::Array(a) => {
            return Err(format!(
                "type mismatch: an array of {} values where a single number is expected",
                a.values.len()
            ))
        }
        Variant::ExtensionObject(o) => {
            return Err(format!(
                "type mismatch: a structure ({}) where a number is expected",
                o.type_name()
                    .map(|n| n.rsplit("::").next().unwrap_or(n))
                    .unwrap_or("unknown type")
            ))
        }
        Variant::Empty => return Err(NO_VALUE.into()),
        other => {
            return Err(format!(
                "type mismatch: {} where a number is expected",
                type_name(other)
            ))
        }
    })
}

fn type_name(v: &Variant) -> String {
    match v.scalar_type_id() {
        Some(t) => format!("{t:?}"),
        None => "a non-scalar value".into(),
    }
}

/// Converts one notification. `last` is the item's last good value (used
/// for bad rows); `recv_ms` the time it arrived.
pub fn convert(dv: &DataValue, last: Option<f64>, recv_ms: i64) -> Result<Converted, String> {
    let status = dv.status.unwrap_or(StatusCode::Good);
    let (ts, origin) = match (millis(&dv.source_timestamp), millis(&dv.server_timestamp)) {
        (Some(t), _) => (t, TsOrigin::Source),
        (None, Some(t)) => (t, TsOrigin::Server),
        (None, None) => (recv_ms, TsOrigin::Receive),
    };
    let q = quality(status);
    let value = if q == Quality::Bad {
        last.unwrap_or(0.0)
    } else {
        match &dv.value {
            Some(v) => number(v)?,
            None => return Err(NO_VALUE.into()),
        }
    };
    Ok(Converted {
        ts,
        origin,
        value,
        quality: q,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dv(v: Variant, status: StatusCode, src: Option<i64>, srv: Option<i64>) -> DataValue {
        let t = |ms: i64| DateTime::from(chrono::DateTime::from_timestamp_millis(ms).unwrap());
        DataValue {
            value: Some(v),
            status: Some(status),
            source_timestamp: src.map(t),
            source_picoseconds: None,
            server_timestamp: srv.map(t),
            server_picoseconds: None,
        }
    }

    #[test]
    fn severity_bits_make_the_quality() {
        assert_eq!(quality(StatusCode::Good), Quality::Good);
        assert_eq!(
            quality(StatusCode::from(0x4000_0000u32)),
            Quality::Uncertain
        );
        assert_eq!(
            quality(StatusCode::UncertainLastUsableValue),
            Quality::Uncertain
        );
        assert_eq!(quality(StatusCode::BadNodeIdUnknown), Quality::Bad);
        assert_eq!(quality(StatusCode::from(0xC000_0000u32)), Quality::Bad);
    }

    #[test]
    fn source_time_then_server_time_then_receive_time() {
        let c = convert(
            &dv(
                Variant::Double(2.5),
                StatusCode::Good,
                Some(1_000),
                Some(2_000),
            ),
            None,
            9,
        )
        .unwrap();
        assert_eq!((c.ts, c.origin, c.value), (1_000, TsOrigin::Source, 2.5));
        let c = convert(
            &dv(Variant::Int16(-3), StatusCode::Good, None, Some(2_000)),
            None,
            9,
        )
        .unwrap();
        assert_eq!((c.ts, c.origin, c.value), (2_000, TsOrigin::Server, -3.0));
        let c = convert(
            &dv(Variant::Boolean(true), StatusCode::Good, None, None),
            None,
            9,
        )
        .unwrap();
        assert_eq!((c.ts, c.origin, c.value), (9, TsOrigin::Receive, 1.0));
    }

    #[test]
    fn bad_values_keep_the_last_good_number_and_say_bad() {
        let c = convert(
            &dv(
                Variant::Double(123.0),
                StatusCode::BadSensorFailure,
                Some(5),
                None,
            ),
            Some(7.0),
            9,
        )
        .unwrap();
        assert_eq!((c.value, c.quality), (7.0, Quality::Bad));
        let mut d = dv(
            Variant::Empty,
            StatusCode::BadCommunicationError,
            Some(5),
            None,
        );
        d.value = None;
        assert_eq!(convert(&d, None, 9).unwrap().quality, Quality::Bad);
    }

    #[test]
    fn non_numbers_are_named() {
        let e = convert(
            &dv(Variant::from("on"), StatusCode::Good, Some(1), None),
            None,
            0,
        )
        .unwrap_err();
        assert!(e.contains("String"), "{e}");
        let e = convert(
            &dv(
                Variant::from(vec![1.0f64, 2.0]),
                StatusCode::Good,
                Some(1),
                None,
            ),
            None,
            0,
        )
        .unwrap_err();
        assert!(e.contains("array of 2"), "{e}");
        let e = convert(
            &dv(
                Variant::from(opcua::types::ExtensionObject::from_message(
                    opcua::types::Range {
                        low: 0.0,
                        high: 1.0,
                    },
                )),
                StatusCode::Good,
                Some(1),
                None,
            ),
            None,
            0,
        )
        .unwrap_err();
        assert!(e.contains("structure (Range)"), "{e}");
    }
}
