//! Unit strings in config values: durations (`"500ms"`, `"5s"`, `"1m"`, `"2h"`, `"1d"`)
//! and sizes (`"128MiB"`, `"64KiB"`, `"1GB"`, plain bytes).

/// Parses a duration string into milliseconds.
pub fn parse_duration_ms(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '_')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let num: u64 = num
        .replace('_', "")
        .parse()
        .map_err(|_| format!("`{s}` is not a duration"))?;
    let mult = match unit.trim() {
        "ms" => 1,
        "s" => 1_000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "" => return Err(format!("`{s}` has no unit")),
        _ => return Err(format!("`{s}` has an unknown unit")),
    };
    // Durations are kept as signed milliseconds.
    num.checked_mul(mult)
        .filter(|ms| *ms <= i64::MAX as u64)
        .ok_or_else(|| format!("`{s}` is too long"))
}

/// Parses a size string into bytes.
pub fn parse_size_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '_')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let num: u64 = num
        .replace('_', "")
        .parse()
        .map_err(|_| format!("`{s}` is not a size"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return Err(format!("`{s}` has an unknown unit")),
    };
    num.checked_mul(mult)
        .filter(|b| *b <= i64::MAX as u64)
        .ok_or_else(|| format!("`{s}` is too large"))
}

pub const DURATION_HINT: &str = "write a number with a unit: `500ms`, `5s`, `1m`, `2h` or `1d`";
pub const SIZE_HINT: &str =
    "write a number with a unit: `64KiB`, `128MiB`, `1GiB` (or plain bytes)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("500ms"), Ok(500));
        assert_eq!(parse_duration_ms("5s"), Ok(5_000));
        assert_eq!(parse_duration_ms("1m"), Ok(60_000));
        assert_eq!(parse_duration_ms("2h"), Ok(7_200_000));
        assert!(parse_duration_ms("5").is_err());
        assert!(parse_duration_ms("5 parsecs").is_err());
        // Overflow is an error, not a wrapped (or negative) number.
        assert_eq!(
            parse_duration_ms("9999999999999999d"),
            Err("`9999999999999999d` is too long".to_string())
        );
        assert_eq!(
            parse_duration_ms("9223372036854775807ms"),
            Ok(i64::MAX as u64)
        );
        assert!(parse_duration_ms("9223372036854775808ms").is_err());
        assert!(parse_size_bytes("18446744073709551615GiB").is_err());
        assert_eq!(parse_size_bytes("64KiB"), Ok(65_536));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size_bytes("128MiB"), Ok(128 << 20));
        assert_eq!(parse_size_bytes("1_000"), Ok(1000));
        assert!(parse_size_bytes("1 lb").is_err());
    }
}
