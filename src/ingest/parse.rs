//! Text fields of a row to values: timestamps, numbers and quality codes,
//! with fast paths for the plain forms a historian export has (and the
//! same result as the standard library's parsers on every input).

use crate::model::Quality;

/// The time, value and quality of a text row, or why it is rejected.
pub fn parse_text(
    ts: &str,
    value: &str,
    quality: &str,
) -> Result<(i64, f64, Quality), &'static str> {
    let ts = parse_ts(ts).ok_or("invalid timestamp")?;
    let value = parse_f64(trim(value)).ok_or("non-numeric value")?;
    let quality = match trim(quality).as_bytes() {
        [] => Some(0),
        [d @ b'0'..=b'9'] => Some((d - b'0') as u64),
        q => std::str::from_utf8(q)
            .ok()
            .and_then(|q| q.parse::<u64>().ok()),
    };
    let quality = quality
        .and_then(Quality::from_code)
        .ok_or("invalid quality")?;
    Ok((ts, value, quality))
}

/// Parses a number as `str::parse::<f64>` does. Plain decimals of up to
/// 15 digits take Clinger's fast path: the digits and the power of ten are
/// both exact doubles, so one division rounds correctly (the same bits).
pub fn parse_f64(s: &str) -> Option<f64> {
    const POW10: [f64; 16] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
    ];
    let b = s.as_bytes();
    let (neg, digits) = match b.first() {
        Some(b'-') => (true, &b[1..]),
        Some(b'+') => (false, &b[1..]),
        _ => (false, b),
    };
    let (mut m, mut n, mut frac, mut dot) = (0u64, 0usize, 0usize, false);
    for &c in digits {
        match c {
            b'0'..=b'9' => {
                m = m * 10 + (c - b'0') as u64;
                n += 1;
                frac += dot as usize;
                if n > 15 {
                    return s.parse().ok();
                }
            }
            b'.' if !dot => dot = true,
            _ => return s.parse().ok(),
        }
    }
    if n == 0 {
        return s.parse().ok();
    }
    let v = m as f64 / POW10[frac];
    Some(if neg { -v } else { v })
}

/// `str::trim` without its Unicode scan when the ends are plain ASCII
/// (the common case, per row).
pub fn trim(s: &str) -> &str {
    match (s.as_bytes().first(), s.as_bytes().last()) {
        (Some(a), Some(b))
            if !a.is_ascii_whitespace()
                && !b.is_ascii_whitespace()
                && a.is_ascii()
                && b.is_ascii() =>
        {
            s
        }
        _ => s.trim(),
    }
}

/// The value of eight ASCII digits, if they are (in a few multiplications).
fn eight_digits(b: &[u8]) -> Option<u64> {
    let x = u64::from_le_bytes(b.try_into().ok()?);
    // Each byte is 0x30..=0x39: high nibble 3, and adding 6 does not carry into it.
    let digits = (x & 0xf0f0_f0f0_f0f0_f0f0) == 0x3030_3030_3030_3030
        && ((x.wrapping_add(0x0606_0606_0606_0606)) & 0xf0f0_f0f0_f0f0_f0f0)
            == 0x3030_3030_3030_3030;
    if !digits {
        return None;
    }
    let x = x & 0x0f0f_0f0f_0f0f_0f0f;
    let x = (x.wrapping_mul(10) + (x >> 8)) & 0x00ff_00ff_00ff_00ff;
    let x = (x.wrapping_mul(100) + (x >> 16)) & 0x0000_ffff_0000_ffff;
    Some((x.wrapping_mul(10_000) + (x >> 32)) & 0xffff_ffff)
}

/// Epoch milliseconds, or RFC 3339.
pub fn parse_ts(s: &str) -> Option<i64> {
    let s = trim(s);
    // Fast path: 1 to 18 ASCII digits cannot overflow an i64.
    let b = s.as_bytes();
    if (8..=18).contains(&b.len()) {
        // The last eight digits at once (SWAR), the rest one by one.
        let (head, tail) = b.split_at(b.len() - 8);
        if let (Some(low), true) = (eight_digits(tail), head.iter().all(u8::is_ascii_digit)) {
            let high = head.iter().fold(0i64, |n, d| n * 10 + (d - b'0') as i64);
            return Some(high * 100_000_000 + low as i64);
        }
    } else if !b.is_empty() && b.len() < 8 && b.iter().all(u8::is_ascii_digit) {
        return Some(b.iter().fold(0i64, |n, d| n * 10 + (d - b'0') as i64));
    }
    if let Ok(ms) = s.parse::<i64>() {
        return Some(ms);
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|d| d.timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digit_timestamps_parse_as_std() {
        for c in [
            "0",
            "7",
            "1234567",
            "12345678",
            "123456789",
            "1767596100000",
            "999999999999999999",
            "000000001767596100000",
            "1767596100a00",
            "17675961000:0",
            "1767596/00000",
            "12345678 ",
            "-1767596100000",
            "+12345678",
            "1767596100000.5",
        ] {
            let want = c.trim().parse::<i64>().ok();
            assert_eq!(parse_ts(c), want, "{c:?}");
        }
        for i in (0..100_000_000_000u64).step_by(7_777_777) {
            let c = format!("{:013}", 1_700_000_000_000 + i);
            assert_eq!(parse_ts(&c), c.parse::<i64>().ok(), "{c}");
        }
    }

    #[test]
    fn numbers_parse_to_the_same_bits_as_std() {
        let cases = [
            "0",
            "-0",
            "+5",
            "1.",
            ".5",
            "84.445",
            "1.428",
            "0.1",
            "-123.456789012345",
            "999999999999999",
            "9999999999999999",
            "1234567.8901234567",
            "1e3",
            "2.5E-3",
            "inf",
            "NaN",
            "-",
            ".",
            "",
            "1.2.3",
            "12a",
            " 1",
            "0.000000000000001",
            "4503599627370497",
            "3.14159265358979",
        ];
        for c in cases {
            let want = c.parse::<f64>().ok().map(f64::to_bits);
            assert_eq!(parse_f64(c).map(f64::to_bits), want, "{c:?}");
        }
        // Every 3-decimal value of the workload's range.
        for i in (0..2_000_000u64).step_by(7) {
            let c = format!("{}.{:03}", i / 1000, i % 1000);
            assert_eq!(
                parse_f64(&c).map(f64::to_bits),
                c.parse::<f64>().ok().map(f64::to_bits),
                "{c}"
            );
        }
    }

    #[test]
    fn timestamps() {
        assert_eq!(parse_ts("1767596100032"), Some(1_767_596_100_032));
        assert_eq!(
            parse_ts("2026-01-05T07:35:00.032Z"),
            Some(1_767_598_500_032)
        );
        assert_eq!(parse_ts("yesterday"), None);
        assert_eq!(parse_ts(" 42 "), Some(42));
        assert_eq!(parse_ts("-1000"), Some(-1000));
        assert_eq!(
            parse_ts("999999999999999999"),
            Some(999_999_999_999_999_999)
        );
        assert_eq!(parse_ts("99999999999999999999"), None);
        assert_eq!(trim("\u{a0}x\u{a0}"), "x");
        assert_eq!(trim("a b"), "a b");
    }
}
