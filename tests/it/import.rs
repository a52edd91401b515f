//! Historian exports as they come (issue 32): the workload v1 fixture
//! written in the shapes of three common exports (a PI DataLink-style wide
//! file, an Ignition/Canary-style wide file with quality columns, a
//! European SCADA long file with `;`, decimal commas and a BOM; layouts in
//! `tests/fixtures/historian/README.md`) replays through `[sources.format]`
//! to the DuckDB oracle's aggregates of the long file; `import inspect`
//! guesses each block; a wrong block is a config error with file and line.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use chrono::TimeZone;

use crate::common::*;

/// One row of the long fixture.
struct Sample {
    ts: i64,
    tag: String,
    value: String,
    quality: u8,
}

fn samples() -> Vec<Sample> {
    let text = std::fs::read_to_string(fixture_dir().join("samples.csv")).unwrap();
    text.lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            Sample {
                ts: f[0].parse().unwrap(),
                tag: f[1].to_string(),
                value: f[2].to_string(),
                quality: f[3].parse().unwrap(),
            }
        })
        .collect()
}

fn local(ts: i64, tz: chrono_tz::Tz, pattern: &str) -> String {
    tz.timestamp_millis_opt(ts)
        .unwrap()
        .format(pattern)
        .to_string()
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Consecutive samples at the same time of distinct tags: one wide row.
fn wide_rows(s: &[Sample]) -> Vec<&[Sample]> {
    let mut rows = Vec::new();
    let mut start = 0;
    for i in 1..=s.len() {
        let ends =
            i == s.len() || s[i].ts != s[start].ts || s[start..i].iter().any(|x| x.tag == s[i].tag);
        if ends {
            rows.push(&s[start..i]);
            start = i;
        }
    }
    rows
}

/// PI DataLink style: a two-line preamble, a quoted header of tag names,
/// Berlin local times `05-Jan-2026 08:35:00.032`, a bad sample as the
/// digital state `Bad Input`, no quality columns.
fn pi_wide(s: &[Sample], tags: &[String]) -> String {
    let mut out = String::from(
        "\"PI DataLink export\",\"Compressed data\",\"Server: PISRV01\"\n\
         \"Start: 05-Jan-2026 08:35:00\",\"End: 05-Jan-2026 08:50:00\"\n",
    );
    let header: Vec<String> = std::iter::once("Timestamp".to_string())
        .chain(tags.iter().cloned())
        .map(|h| quote(&h))
        .collect();
    out += &(header.join(",") + "\n");
    for row in wide_rows(s) {
        let mut cells = vec![String::new(); tags.len() + 1];
        cells[0] = local(
            row[0].ts,
            chrono_tz::Europe::Berlin,
            "%d-%b-%Y %H:%M:%S%.3f",
        );
        for x in row {
            let i = tags.iter().position(|t| *t == x.tag).unwrap() + 1;
            cells[i] = if x.quality == 2 {
                "Bad Input".into()
            } else {
                x.value.clone()
            };
        }
        out += &(cells.join(",") + "\n");
    }
    out
}

/// Ignition/Canary style: `t_stamp` in Chicago local time with AM/PM, a
/// value and a `<tag> Quality` column per tag with OPC DA codes (192 good,
/// 64 uncertain, 0 bad).
fn ignition_wide(s: &[Sample], tags: &[String]) -> String {
    let mut header = vec!["t_stamp".to_string()];
    for t in tags {
        header.push(t.clone());
        header.push(format!("{t} Quality"));
    }
    let mut out = header.join(",") + "\n";
    for row in wide_rows(s) {
        let mut cells = vec![String::new(); 2 * tags.len() + 1];
        cells[0] = local(
            row[0].ts,
            chrono_tz::America::Chicago,
            "%m/%d/%Y %I:%M:%S%.3f %p",
        );
        for x in row {
            let i = 2 * tags.iter().position(|t| *t == x.tag).unwrap() + 1;
            cells[i] = x.value.clone();
            cells[i + 1] = ["192", "64", "0"][x.quality as usize].into();
        }
        out += &(cells.join(",") + "\n");
    }
    out
}

/// A European SCADA's long export: a byte order mark, `;`, CRLF, quoted
/// German header and tags, Berlin local times with a comma before the
/// milliseconds, decimal commas with `.` between thousands, quality words.
fn scada_long_de(s: &[Sample]) -> Vec<u8> {
    let mut out = String::from("\u{feff}\"Zeitstempel\";\"Messstelle\";\"Wert\";\"Qualität\"\r\n");
    for x in s {
        let (int, frac) = x.value.split_once('.').unwrap_or((&x.value, ""));
        let (sign, digits) = int.strip_prefix('-').map_or(("", int), |d| ("-", d));
        let mut grouped = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                grouped.push('.');
            }
            grouped.push(c);
        }
        let value = if frac.is_empty() {
            format!("{sign}{grouped}")
        } else {
            format!("{sign}{grouped},{frac}")
        };
        out += &format!(
            "{};{};{value};{}\r\n",
            local(x.ts, chrono_tz::Europe::Berlin, "%d.%m.%Y %H:%M:%S,%3f"),
            quote(&x.tag),
            ["Good", "Uncertain", "Bad"][x.quality as usize]
        );
    }
    out.into_bytes()
}

/// The three shapes: file name, bytes, the block that reads it.
fn shapes() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let s = samples();
    let tags: Vec<String> = s
        .iter()
        .map(|x| x.tag.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    vec![
        ("pi_wide.csv", pi_wide(&s, &tags).into_bytes(), PI_BLOCK),
        (
            "ignition_wide.csv",
            ignition_wide(&s, &tags).into_bytes(),
            IGNITION_BLOCK,
        ),
        ("scada_long_de.csv", scada_long_de(&s), SCADA_BLOCK),
    ]
}

const PI_BLOCK: &str = r#"[sources.format]
layout = "wide"
header_row = 3
timestamp = "Timestamp"
time_format = "%d-%b-%Y %H:%M:%S%.f"
time_zone = "Europe/Berlin""#;

const IGNITION_BLOCK: &str = r#"[sources.format]
layout = "wide"
timestamp = "t_stamp"
time_format = "%m/%d/%Y %I:%M:%S%.f %p"
time_zone = "America/Chicago"
quality = "{tag} Quality"
quality_codes = "opc_da""#;

const SCADA_BLOCK: &str = r#"[sources.format]
layout = "long"
delimiter = ";"
decimal = ","
thousands = "."
timestamp = "Zeitstempel"
time_format = "%d.%m.%Y %H:%M:%S,%3f"
time_zone = "Europe/Berlin"
tag = "Messstelle"
value = "Wert"
quality = "Qualität""#;

/// An input directory with the fixture's context files and `file`.
fn input_with(file: &str, bytes: &[u8]) -> tempfile::TempDir {
    let input = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(fixture_dir()).unwrap().flatten() {
        if e.path().is_file() && e.file_name() != "samples.csv" {
            std::fs::copy(e.path(), input.path().join(e.file_name())).unwrap();
        }
    }
    std::fs::write(input.path().join(file), bytes).unwrap();
    input
}

/// Workload v1 reading `file` through `block`.
fn dataflow_with(dir: &Path, file: &str, block: &str) -> PathBuf {
    let text = std::fs::read_to_string(dataflow("workload_v1.toml")).unwrap();
    let from = "path = \"${INPUT_DIR}/${SAMPLES_FILE:-samples.csv}\"";
    assert!(text.contains(from));
    let df = dir.join(format!("{file}.toml"));
    std::fs::write(
        &df,
        text.replace(from, &format!("path = \"${{INPUT_DIR}}/{file}\"\n{block}")),
    )
    .unwrap();
    df
}

/// Samples the long file's run accepts: every one but the bad ones
/// (`quality = "drop_bad"`).
fn accepted_in_fixture() -> u64 {
    samples().iter().filter(|s| s.quality != 2).count() as u64
}

#[test]
fn historian_shaped_exports_replay_to_the_oracle_aggregates() {
    let bad = samples().iter().filter(|s| s.quality == 2).count() as u64;
    for (file, bytes, block) in shapes() {
        let input = input_with(file, &bytes);
        let out = tempfile::tempdir().unwrap();
        let df = dataflow_with(input.path(), file, block);
        let s = run(&df, input.path(), out.path(), 2);
        assert_eq!(s.rows_accepted, accepted_in_fixture(), "{file}");
        assert_aggregates_equal(&latest_aggregates(out.path()), &expected_aggregates());
        let digital_states = s
            .dead_letters
            .get("non-numeric value")
            .copied()
            .unwrap_or(0);
        if file == "pi_wide.csv" {
            assert_eq!(digital_states, bad, "each `Bad Input` is a dead letter");
        } else {
            assert_eq!(
                s.dropped_quality, bad,
                "{file}: bad samples dropped by quality"
            );
        }
    }
}

/// `import inspect` reads each export's first rows and guesses its block;
/// with the historian's zone set (which no file says), that block replays
/// the whole file to the oracle.
#[test]
fn import_inspect_guesses_a_block_that_reads_each_export() {
    for (file, bytes, block) in shapes() {
        let input = input_with(file, &bytes);
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_plantflow"))
            .args(["import", "inspect"])
            .arg(input.path().join(file))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(
            o.status.success(),
            "{file}: {stdout}{}",
            String::from_utf8_lossy(&o.stderr)
        );
        // Every key of the hand-written block but the zone, guessed alike.
        let zone = block.lines().find(|l| l.starts_with("time_zone")).unwrap();
        for line in block.lines().filter(|l| !l.starts_with("time_zone")) {
            assert!(
                stdout.lines().any(|l| l == line),
                "{file}: `{line}` not guessed:\n{stdout}"
            );
        }
        assert!(
            stdout.contains("# note: the times have no offset"),
            "{stdout}"
        );
        let guessed: Vec<String> = stdout
            .lines()
            .map(|l| {
                if l.starts_with("time_zone") {
                    zone.to_string()
                } else {
                    l.to_string()
                }
            })
            .collect();
        let out = tempfile::tempdir().unwrap();
        let df = dataflow_with(input.path(), file, &guessed.join("\n"));
        let s = run(&df, input.path(), out.path(), 1);
        assert_eq!(s.rows_accepted, accepted_in_fixture(), "{file}");
        assert_aggregates_equal(&latest_aggregates(out.path()), &expected_aggregates());
    }
}

/// The committed examples in `tests/fixtures/historian/` (what the README
/// there documents) are the first rows of the shapes these tests replay.
#[test]
fn the_documented_examples_are_the_shapes_tested() {
    let s = samples();
    let head = &s[..12];
    let tags: Vec<String> = s
        .iter()
        .map(|x| x.tag.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/historian");
    let want: [(&str, Vec<u8>); 3] = [
        ("pi_wide.csv", pi_wide(head, &tags).into_bytes()),
        ("ignition_wide.csv", ignition_wide(head, &tags).into_bytes()),
        ("scada_long_de.csv", scada_long_de(head)),
    ];
    for (file, bytes) in want {
        let got = std::fs::read(dir.join(file)).unwrap_or_default();
        if got != bytes && std::env::var_os("PLANTFLOW_BLESS").is_some() {
            std::fs::write(dir.join(file), &bytes).unwrap();
            continue;
        }
        assert!(
            got == bytes,
            "{file} differs from its generator (PLANTFLOW_BLESS=1 rewrites it)"
        );
    }
}

/// Writes `columns` as one Parquet file.
fn write_parquet(path: &Path, columns: Vec<(&str, arrow::array::ArrayRef)>) {
    let batch = arrow::array::RecordBatch::try_from_iter(columns).unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

/// Parquet exports by column name: a long one with other names, a
/// timestamp column and quality words; a wide one with epoch-millisecond
/// times, a nullable value column and an OPC UA code column per tag. The
/// block `import inspect` guesses for each reads it to the oracle.
#[test]
fn parquet_exports_long_and_wide_replay_to_the_oracle_aggregates() {
    use arrow::array::{
        ArrayRef, Float64Array, Int64Array, StringArray, TimestampMillisecondArray,
    };
    use std::sync::Arc;
    let s = samples();
    let value = |x: &Sample| x.value.parse::<f64>().unwrap();
    let long: Vec<(&str, ArrayRef)> = vec![
        (
            "time",
            Arc::new(
                TimestampMillisecondArray::from_iter_values(s.iter().map(|x| x.ts))
                    .with_timezone("UTC"),
            ),
        ),
        (
            "name",
            Arc::new(StringArray::from_iter_values(
                s.iter().map(|x| x.tag.as_str()),
            )),
        ),
        (
            "val",
            Arc::new(Float64Array::from_iter_values(s.iter().map(value))),
        ),
        (
            "status",
            Arc::new(StringArray::from_iter_values(
                s.iter()
                    .map(|x| ["Good", "Uncertain", "Bad"][x.quality as usize]),
            )),
        ),
    ];
    let tags: Vec<String> = s
        .iter()
        .map(|x| x.tag.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let rows = wide_rows(&s);
    let mut wide: Vec<(String, ArrayRef)> = vec![(
        "t".into(),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r[0].ts))),
    )];
    for t in &tags {
        let cells: Vec<Option<&Sample>> = rows
            .iter()
            .map(|r| r.iter().find(|x| x.tag == *t))
            .collect();
        let v: Float64Array = cells.iter().map(|c| c.map(value)).collect();
        let q: Int64Array = cells.iter().map(|c| c.map(|x| x.quality as i64)).collect();
        wide.push((t.clone(), Arc::new(v)));
        wide.push((format!("{t}|q"), Arc::new(q)));
    }
    type Columns<'a> = Vec<(&'a str, ArrayRef)>;
    let cases: [(&str, Columns, &str); 2] = [
        (
            "long.parquet",
            long,
            "[sources.format]\ntimestamp = \"time\"\ntag = \"name\"\nvalue = \"val\"\nquality = \"status\"",
        ),
        (
            "wide.parquet",
            wide.iter().map(|(n, a)| (n.as_str(), a.clone())).collect(),
            "[sources.format]\nlayout = \"wide\"\ntimestamp = \"t\"\nquality = \"{tag}|q\"",
        ),
    ];
    for (file, columns, block) in cases {
        let input = input_with("unused", b"");
        write_parquet(&input.path().join(file), columns);
        // `import inspect` reads the schema and first rows and guesses the
        // block: every line of the hand-written one is in it.
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_plantflow"))
            .args(["import", "inspect"])
            .arg(input.path().join(file))
            .output()
            .unwrap();
        let guessed = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(
            o.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        for line in block.lines() {
            assert!(
                guessed.lines().any(|l| l == line),
                "{file}: `{line}` not guessed:\n{guessed}"
            );
        }
        let out = tempfile::tempdir().unwrap();
        let df = dataflow_with(input.path(), file, &guessed);
        let summary = run(&df, input.path(), out.path(), 2);
        assert_eq!(summary.rows_accepted, accepted_in_fixture(), "{file}");
        assert_aggregates_equal(&latest_aggregates(out.path()), &expected_aggregates());
    }
}

#[test]
fn a_wrong_format_block_is_a_config_error_with_file_and_line() {
    let s = samples();
    let bytes = scada_long_de(&s[..50]);
    let cases = [
        (
            SCADA_BLOCK.replace("\"Zeitstempel\"", "\"Zeit\""),
            "timestamp",
            "no time column `Zeit`",
        ),
        (
            SCADA_BLOCK.replace("Europe/Berlin", "Europe/Berlim"),
            "time_zone",
            "unknown time zone `Europe/Berlim`",
        ),
        (
            SCADA_BLOCK.replace("delimiter = \";\"\n", ""),
            "decimal",
            "the decimal separator is also the delimiter",
        ),
        (
            SCADA_BLOCK.replace("%d.%m.%Y", "%d.%J.%Y"),
            "time_format",
            "is not a time format",
        ),
        (
            SCADA_BLOCK.replace("layout = \"long\"", "layout = \"wide\""),
            "tag",
            "`tag` is for layout = \"long\"",
        ),
        (
            SCADA_BLOCK.replace("thousands", "thousand"),
            "thousand",
            "unknown key `thousand`",
        ),
    ];
    for (block, key, message) in cases {
        let input = input_with("scada_long_de.csv", &bytes);
        let df = dataflow_with(input.path(), "scada_long_de.csv", &block);
        assert_config_error(&df, input.path(), key, message);
    }
}
