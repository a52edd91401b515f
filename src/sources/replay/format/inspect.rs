//! `plantflow import inspect FILE`: guesses an export's layout from its
//! first rows (delimiter, preamble, time column and format, decimal comma,
//! long or wide, quality columns) and writes a ready `[sources.format]`
//! block, with the first samples as that block reads them.

use std::io::Read;
use std::path::Path;

use super::{Columns, Format, Layout, QualityCodes, TimeFormat};

/// What inspection found.
pub struct Guess {
    pub format: Format,
    /// The `[sources.format]` block, TOML.
    pub block: String,
    /// The first samples as the block reads them: time (UTC), tag, value, quality.
    pub preview: Vec<String>,
    /// What the guess could not know (a local time's zone).
    pub notes: Vec<String>,
}

impl Guess {
    /// The block to paste, its notes and preview as TOML comments.
    pub fn render(&self, file: &Path) -> String {
        let mut out = format!(
            "# {}: paste under its [[sources]] table (type = \"replay\")\n{}\n",
            file.display(),
            self.block
        );
        for n in &self.notes {
            out += &format!("# note: {n}\n");
        }
        out += "# the first samples as this block reads them (time in UTC, tag, value, quality):\n";
        for p in &self.preview {
            out += &format!("#   {p}\n");
        }
        out
    }
}

/// Bytes read to guess from.
const SAMPLE_BYTES: usize = 256 << 10;

/// Time layouts tried, in order (`auto` first, then common export patterns).
const PATTERNS: &[&str] = &[
    "%d.%m.%Y %H:%M:%S%.f",
    "%d.%m.%Y %H:%M:%S,%3f",
    "%d.%m.%Y %H:%M",
    "%d/%m/%Y %H:%M:%S%.f",
    "%m/%d/%Y %H:%M:%S%.f",
    "%m/%d/%Y %I:%M:%S %p",
    "%m/%d/%Y %I:%M:%S%.f %p",
    "%d/%m/%Y %H:%M",
    "%m/%d/%Y %H:%M",
    "%d-%b-%Y %H:%M:%S%.f",
    "%d-%b-%y %H:%M:%S%.f",
    "%Y/%m/%d %H:%M:%S%.f",
    "%Y-%m-%d %H:%M",
];

/// Guesses the layout of a CSV or Parquet export at `path`.
pub fn inspect(path: &Path) -> Result<Guess, String> {
    let mut bytes = Vec::with_capacity(SAMPLE_BYTES);
    std::fs::File::open(path)
        .and_then(|f| f.take(SAMPLE_BYTES as u64).read_to_end(&mut bytes))
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let truncated = bytes.len() == SAMPLE_BYTES;
    let text =
        String::from_utf8_lossy(bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(&bytes)).into_owned();
    if path.extension().is_some_and(|x| x == "parquet") || bytes.starts_with(b"PAR1") {
        let (header, rows) = parquet_sample(path)?;
        return guess(path, &header, &rows, (b',', 0, false));
    }
    let (delimiter, header_row, records) = [b',', b';', b'\t', b'|']
        .into_iter()
        .filter_map(|d| split(&text, d, truncated))
        .max_by_key(|(_, h, r)| (r.len() - h, r[*h].len()))
        .ok_or_else(|| format!("{}: no delimited rows found", path.display()))?;
    let rows = &records[header_row + 1..records.len().min(header_row + 201)];
    guess(
        path,
        &records[header_row],
        rows,
        (delimiter, header_row, true),
    )
}

/// The first rows of a Parquet file as text (its time column as RFC 3339
/// or epoch numbers, as Arrow writes them).
fn parquet_sample(path: &Path) -> Result<(Vec<String>, Vec<Vec<String>>), String> {
    use arrow::array::{Array, AsArray};
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let mut reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.with_batch_size(200).build())
        .map_err(|e| format!("{}: not a Parquet file: {e}", path.display()))?;
    let batch = match reader.next() {
        Some(b) => b.map_err(|e| format!("{}: {e}", path.display()))?,
        None => return Err(format!("{}: no rows", path.display())),
    };
    let header: Vec<String> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let mut rows = vec![vec![String::new(); header.len()]; batch.num_rows()];
    use arrow::datatypes::{DataType, Int64Type, TimeUnit};
    let err = |j: usize, e: arrow::error::ArrowError| {
        format!("{}: column `{}`: {e}", path.display(), header[j])
    };
    for (j, c) in batch.columns().iter().enumerate() {
        if let DataType::Timestamp(unit, _) = c.data_type() {
            // As RFC 3339 in UTC (Arrow's own text needs the zone database).
            let per_ms = match unit {
                TimeUnit::Second => -1000,
                TimeUnit::Millisecond => 1,
                TimeUnit::Microsecond => 1000,
                TimeUnit::Nanosecond => 1_000_000,
            };
            let raw = arrow::compute::cast(c, &DataType::Int64).map_err(|e| err(j, e))?;
            let raw = raw.as_primitive::<Int64Type>();
            for (i, row) in rows.iter_mut().enumerate() {
                if !raw.is_null(i) {
                    let v = raw.value(i);
                    let ms = if per_ms < 0 { v * 1000 } else { v / per_ms };
                    row[j] = chrono::DateTime::from_timestamp_millis(ms)
                        .map_or(ms.to_string(), |t| {
                            t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
                        });
                }
            }
            continue;
        }
        let text = arrow::compute::cast(c, &DataType::Utf8).map_err(|e| err(j, e))?;
        let text = text.as_string::<i32>();
        for (i, row) in rows.iter_mut().enumerate() {
            if !text.is_null(i) {
                row[j] = text.value(i).to_string();
            }
        }
    }
    Ok((header, rows))
}

/// The guess from a header and rows; `delimiter`, the header's index and
/// whether decimal commas are possible (text files) as read.
fn guess(
    path: &Path,
    header: &[String],
    rows: &[Vec<String>],
    (delimiter, header_row, text_file): (u8, usize, bool),
) -> Result<Guess, String> {
    let header: Vec<&str> = header.iter().map(|h| h.trim()).collect();
    if rows.is_empty() {
        return Err(format!("{}: a header but no rows", path.display()));
    }
    let mut f = Format {
        delimiter,
        header_row: header_row + 1,
        ..Format::default()
    };
    let cells = |j: usize| {
        rows.iter()
            .map(move |r| r[j].trim())
            .filter(|c| !c.is_empty())
    };
    // The time column: the leftmost one whose every cell reads as a time.
    let (ts, time_format) = (0..header.len())
        .find_map(|j| time_format_of(&cells(j).collect::<Vec<_>>()).map(|t| (j, t)))
        .ok_or_else(|| format!("{}: no column reads as a time", path.display()))?;
    f.time_format = time_format;
    f.timestamp = Some(header[ts].to_string());
    // Decimal commas: more cells read with a comma than with a point.
    let others: Vec<usize> = (0..header.len()).filter(|&j| j != ts).collect();
    let count = |f: &Format| {
        let mut b = String::new();
        others
            .iter()
            .flat_map(|&j| cells(j))
            .filter(|c| f.number(c, &mut b).is_some())
            .count()
    };
    if text_file && delimiter != b',' {
        let comma = Format {
            decimal: b',',
            ..f.clone()
        };
        let comma_k = Format {
            decimal: b',',
            thousands: Some(b'.'),
            ..f.clone()
        };
        let (point, with_comma, with_k) = (count(&f), count(&comma), count(&comma_k));
        if with_k > with_comma.max(point) {
            (f.decimal, f.thousands) = (b',', Some(b'.'));
        } else if with_comma > point {
            f.decimal = b',';
        }
    }
    layout_of(&mut f, &header, rows, &others);
    let quality_cells: Vec<&str> = match f.columns(&header) {
        Ok(Columns::Long {
            quality: Some(q), ..
        }) => cells(q).collect(),
        Ok(Columns::Wide { tags, .. }) => tags
            .iter()
            .filter_map(|t| t.quality)
            .flat_map(&cells)
            .collect(),
        _ => Vec::new(),
    };
    if quality_cells.contains(&"192") {
        f.quality_codes = QualityCodes::OpcDa;
    }
    let mut notes = Vec::new();
    let local = !matches!(
        f.time_format,
        TimeFormat::EpochMs | TimeFormat::EpochS | TimeFormat::Rfc3339
    ) && !cells(ts)
        .next()
        .is_some_and(|c| c.ends_with('Z') || c.contains('+'));
    if local {
        notes.push(
            "the times have no offset: they are read in `time_zone` (UTC here); set your historian's zone"
                .to_string(),
        );
    }
    let preview = preview(&f, &header, rows);
    Ok(Guess {
        block: block(&f, local),
        format: f,
        preview,
        notes,
    })
}

/// Long or wide, and the tag, value and quality columns, from the cells
/// of the columns `others` (all but the time column).
fn layout_of(f: &mut Format, header: &[&str], rows: &[Vec<String>], others: &[usize]) {
    let cells = |j: usize| {
        rows.iter()
            .map(move |r| r[j].trim())
            .filter(|c| !c.is_empty())
    };
    let mut b = String::new();
    let numeric = |j: usize, b: &mut String| {
        let all: Vec<&str> = cells(j).collect();
        let n = all.iter().filter(|c| f.number(c, b).is_some()).count();
        !all.is_empty() && n * 2 >= all.len()
    };
    let named_quality = |h: &str| {
        let h = h.to_lowercase();
        // `FIC101.Q`, `FIC101|q`, `FIC101_Q`: a one-letter suffix after a separator.
        let suffix_q = h.len() > 2
            && h.ends_with('q')
            && h[..h.len() - 1]
                .chars()
                .last()
                .is_some_and(|c| !c.is_alphanumeric());
        suffix_q
            || ["quality", "qualität", "qualitaet", "status"]
                .iter()
                .any(|q| h.contains(q))
    };
    let texts: Vec<usize> = others
        .iter()
        .copied()
        .filter(|&j| !numeric(j, &mut b) && !named_quality(header[j]))
        .collect();
    let values: Vec<usize> = others
        .iter()
        .copied()
        .filter(|&j| numeric(j, &mut b) && !named_quality(header[j]))
        .collect();
    let qualities: Vec<usize> = others
        .iter()
        .copied()
        .filter(|&j| named_quality(header[j]))
        .collect();
    if texts.len() == 1 && !values.is_empty() {
        f.layout = Layout::Long;
        f.tag = header[texts[0]].to_string();
        let value = values
            .iter()
            .find(|&&j| ["value", "wert", "val", "pv"].contains(&header[j].to_lowercase().as_str()))
            .unwrap_or(&values[0]);
        f.value = header[*value].to_string();
        f.quality = Some(
            qualities
                .first()
                .map_or(String::new(), |&q| header[q].to_string()),
        );
    } else {
        f.layout = Layout::Wide;
        let tags: Vec<usize> = others
            .iter()
            .copied()
            .filter(|j| !qualities.contains(j))
            .collect();
        // Each tag's quality column: the tag's name and one suffix.
        let suffix = qualities.iter().find_map(|&q| {
            let s = tags
                .iter()
                .find_map(|&t| header[q].strip_prefix(header[t]))?;
            tags.iter()
                .all(|&t| header.contains(&format!("{}{s}", header[t]).as_str()))
                .then(|| s.to_string())
        });
        f.quality = suffix.map(|s| format!("{{tag}}{s}"));
        let unused_quality = f.quality.is_none() && !qualities.is_empty();
        if unused_quality {
            f.tags = tags.iter().map(|&t| header[t].to_string()).collect();
        }
    }
}

/// The records of `text` split by `d`, and the first row of the longest
/// run of equally wide records at the end (the header; lines before it are
/// a preamble). None if no run is at least two fields wide.
fn split(text: &str, d: u8, truncated: bool) -> Option<(u8, usize, Vec<Vec<String>>)> {
    let mut r = csv::ReaderBuilder::new()
        .delimiter(d)
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes());
    let mut records: Vec<Vec<String>> = r
        .records()
        .filter_map(Result::ok)
        .map(|r| r.iter().map(str::to_string).collect())
        .filter(|r: &Vec<String>| !(r.len() == 1 && r[0].trim().is_empty()))
        .collect();
    if truncated {
        records.pop();
    }
    let width = records.last()?.len();
    if width < 2 {
        return None;
    }
    let header = records
        .iter()
        .rposition(|r| r.len() != width)
        .map_or(0, |i| i + 1);
    (header + 1 < records.len()).then_some((d, header, records))
}

/// The first time format every cell reads in (and in time order, where
/// day and month could be either way round).
fn time_format_of(cells: &[&str]) -> Option<TimeFormat> {
    if cells.is_empty() {
        return None;
    }
    let digits = |c: &&str| c.bytes().all(|b| b.is_ascii_digit());
    if cells.iter().all(|c| digits(c) && c.len() == 13) {
        return Some(TimeFormat::EpochMs);
    }
    if cells.iter().all(|c| {
        c.len() >= 10
            && c.split_once('.')
                .map_or(digits(c), |(s, f)| digits(&s) && digits(&f))
            && c.split('.').next().is_some_and(|s| s.len() == 10)
    }) {
        return Some(TimeFormat::EpochS);
    }
    let reads = |t: &TimeFormat| {
        let mut c = Format {
            time_format: t.clone(),
            ..Format::default()
        }
        .clock();
        let times: Option<Vec<i64>> = cells.iter().map(|s| c.parse(s).ok()).collect();
        times.map(|t| t.windows(2).filter(|w| w[1] < w[0]).count())
    };
    if cells.iter().all(|c| !digits(c)) && reads(&TimeFormat::Auto).is_some() {
        return Some(TimeFormat::Auto);
    }
    PATTERNS
        .iter()
        .map(|p| TimeFormat::Pattern(p.to_string()))
        .filter_map(|t| reads(&t).map(|backwards| (backwards, t)))
        .min_by_key(|(backwards, _)| *backwards)
        .map(|(_, t)| t)
}

fn quoted(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// The `[sources.format]` block of a guess.
fn block(f: &Format, local: bool) -> String {
    let d = Format::default();
    let mut lines = vec!["[sources.format]".to_string()];
    let mut put = |k: &str, v: String| lines.push(format!("{k} = {v}"));
    put(
        "layout",
        quoted(if f.layout == Layout::Wide {
            "wide"
        } else {
            "long"
        }),
    );
    if f.delimiter != d.delimiter {
        put("delimiter", quoted(&(f.delimiter as char).to_string()));
    }
    if f.decimal != d.decimal {
        put("decimal", quoted(&(f.decimal as char).to_string()));
    }
    if let Some(t) = f.thousands {
        put("thousands", quoted(&(t as char).to_string()));
    }
    if f.header_row != 1 {
        put("header_row", f.header_row.to_string());
    }
    if let Some(t) = &f.timestamp {
        put("timestamp", quoted(t));
    }
    let tf = match &f.time_format {
        TimeFormat::Auto => "auto".to_string(),
        TimeFormat::EpochMs => "epoch_ms".to_string(),
        TimeFormat::EpochS => "epoch_s".to_string(),
        TimeFormat::Rfc3339 => "rfc3339".to_string(),
        TimeFormat::Pattern(p) => p.clone(),
    };
    put("time_format", quoted(&tf));
    if local {
        put(
            "time_zone",
            format!("{}   # the historian's zone: set it", quoted("UTC")),
        );
    }
    if f.layout == Layout::Long {
        put("tag", quoted(&f.tag));
        put("value", quoted(&f.value));
    } else if !f.tags.is_empty() {
        let tags: Vec<String> = f.tags.iter().map(|t| quoted(t)).collect();
        put("tags", format!("[{}]", tags.join(", ")));
    }
    if let Some(q) = f.quality.as_deref().filter(|q| !q.is_empty()) {
        put("quality", quoted(q));
    }
    if f.quality_codes == QualityCodes::OpcDa {
        put("quality_codes", quoted("opc_da"));
    }
    lines.join("\n")
}

/// The first few samples as the guessed format reads them.
fn preview(f: &Format, header: &[&str], rows: &[Vec<String>]) -> Vec<String> {
    let Ok(columns) = f.columns(header) else {
        return Vec::new();
    };
    let mut clock = f.clock();
    let mut b = String::new();
    let mut out = Vec::new();
    let show = |ts: Result<i64, String>,
                tag: &str,
                value: Option<f64>,
                q: Option<crate::model::Quality>| {
        let ts = match ts {
            Ok(ms) => chrono::DateTime::from_timestamp_millis(ms).map_or(ms.to_string(), |t| {
                t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
            }),
            Err(e) => format!("(time: {e})"),
        };
        let v = value.map_or("(not a number)".to_string(), |v| v.to_string());
        let q = q.map_or("(unknown quality)".to_string(), |q| {
            format!("{q:?}").to_lowercase()
        });
        format!("{ts}  {tag}  {v}  {q}")
    };
    for r in rows.iter().take(8) {
        let cell = |j: usize| r.get(j).map_or("", |c| c.as_str());
        match &columns {
            Columns::Long {
                ts,
                tag,
                value,
                quality,
            } => {
                let t = clock.parse(cell(*ts));
                let q = quality.map_or(Some(crate::model::Quality::Good), |q| f.quality(cell(q)));
                out.push(show(
                    t,
                    cell(*tag).trim(),
                    f.number(cell(*value), &mut b),
                    q,
                ));
            }
            Columns::Wide { ts, tags } => {
                let t = clock.parse(cell(*ts));
                for c in tags
                    .iter()
                    .filter(|c| !cell(c.value).trim().is_empty())
                    .take(3)
                {
                    let q = c
                        .quality
                        .map_or(Some(crate::model::Quality::Good), |q| f.quality(cell(q)));
                    out.push(show(t.clone(), &c.tag, f.number(cell(c.value), &mut b), q));
                }
            }
        }
        if out.len() >= 8 {
            break;
        }
    }
    out
}
