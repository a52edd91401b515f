//! Reading a described export (CSV or Parquet) into the normaliser: the
//! general path, one row's cells at a time, whatever the layout.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{DataType, Float64Type, Int64Type, TimeUnit};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::records::{Next, Records};
use super::{quality_code, Columns, Format, TimeFormat};
use crate::ingest::normalize::Normalizer;
use crate::model::TagId;

/// One cell of a row, as its file holds it.
pub enum Cell<'a> {
    Text(&'a str),
    Number(f64),
    /// Epoch milliseconds (a Parquet timestamp).
    Time(i64),
    Null,
}

/// A row of any file: its cells by column, and its text for a dead letter.
pub trait Row {
    fn cell(&self, col: usize) -> Cell<'_>;
    fn text(&self) -> String;
    /// How many fields the row has (0: a file with a schema, always right).
    fn text_width(&self) -> usize;
}

/// Reads a row's cells into samples (and dead letters).
pub struct Reader<'f> {
    f: &'f Format,
    columns: Arc<Columns>,
    width: usize,
    clock: super::Clock,
    buf: String,
    /// Wide: each tag column's id, once the assets table has it.
    ids: Vec<Option<TagId>>,
}

impl<'f> Reader<'f> {
    pub fn new(f: &'f Format, columns: Columns, width: usize) -> Reader<'f> {
        let ids = match &columns {
            Columns::Wide { tags, .. } => vec![None; tags.len()],
            Columns::Long { .. } => Vec::new(),
        };
        Reader {
            f,
            columns: Arc::new(columns),
            width,
            clock: f.clock(),
            buf: String::new(),
            ids,
        }
    }

    fn time(&mut self, c: Cell<'_>) -> Result<i64, String> {
        match c {
            Cell::Text(s) => self.clock.parse(s),
            Cell::Time(ms) => Ok(ms),
            Cell::Number(x) if self.f.time_format == TimeFormat::EpochS => {
                Ok((x * 1000.0).round() as i64)
            }
            Cell::Number(x) if x.fract() == 0.0 => Ok(x as i64),
            Cell::Number(_) => Err("not epoch milliseconds".into()),
            Cell::Null => Err("empty".into()),
        }
    }

    fn number(&mut self, c: Cell<'_>) -> Option<f64> {
        match c {
            Cell::Text(s) => self.f.number(s, &mut self.buf),
            Cell::Number(x) => Some(x),
            Cell::Time(_) | Cell::Null => None,
        }
    }

    fn quality(&self, c: Cell<'_>) -> Option<crate::model::Quality> {
        match c {
            Cell::Text(s) => self.f.quality(s),
            Cell::Number(x) if x >= 0.0 && x.fract() == 0.0 => {
                quality_code(x as u64, self.f.quality_codes)
            }
            Cell::Null => Some(crate::model::Quality::Good),
            _ => None,
        }
    }

    /// One row: a sample (long), or a sample per non-empty tag cell (wide).
    pub fn row(&mut self, r: &dyn Row, n: &mut Normalizer) {
        if self.width > 0 && r.text_width() != self.width {
            let got = r.text_width();
            return n.reject(
                &format!("malformed row ({got} fields, expected {})", self.width),
                r.text(),
            );
        }
        let columns = self.columns.clone();
        match &*columns {
            Columns::Long {
                ts,
                tag,
                value,
                quality,
            } => {
                let ts = match self.time(r.cell(*ts)) {
                    Ok(t) => t,
                    Err(e) => return n.reject(&format!("invalid timestamp: {e}"), r.text()),
                };
                let tag = match r.cell(*tag) {
                    Cell::Text(t) if !t.trim().is_empty() => t.trim().to_string(),
                    _ => return n.reject("null field", r.text()),
                };
                let Some(value) = self.number(r.cell(*value)) else {
                    return n.reject("non-numeric value", r.text());
                };
                let q = quality.map_or(Some(crate::model::Quality::Good), |q| {
                    self.quality(r.cell(q))
                });
                let Some(q) = q else {
                    return n.reject("invalid quality", r.text());
                };
                n.row(ts, &tag, value, q, &|| r.text());
            }
            Columns::Wide { ts, tags } => {
                let ts = match self.time(r.cell(*ts)) {
                    Ok(t) => t,
                    Err(e) => return n.reject(&format!("invalid timestamp: {e}"), r.text()),
                };
                // A restart resumes at the row the input log recorded; the
                // row's samples it already has are each a tag's last logged
                // sample, not counted twice (the normaliser's `sent_again`).
                for (k, col) in tags.iter().enumerate() {
                    let cell = r.cell(col.value);
                    let raw = || {
                        let v = match r.cell(col.value) {
                            Cell::Text(s) => s.to_string(),
                            Cell::Number(x) => x.to_string(),
                            _ => String::new(),
                        };
                        format!("{ts},{},{v}", col.tag)
                    };
                    if matches!(cell, Cell::Null)
                        || matches!(cell, Cell::Text(s) if s.trim().is_empty())
                    {
                        continue;
                    }
                    let Some(value) = self.number(cell) else {
                        n.reject("non-numeric value", raw());
                        continue;
                    };
                    let q = col.quality.map_or(Some(crate::model::Quality::Good), |q| {
                        self.quality(r.cell(q))
                    });
                    let Some(q) = q else {
                        n.reject("invalid quality", raw());
                        continue;
                    };
                    match self.ids[k] {
                        Some(id) if value.is_finite() => n.row_id(ts, id, value, q, &raw),
                        _ => {
                            self.ids[k] = n.tag_id(&col.tag);
                            n.row(ts, &col.tag, value, q, &raw);
                        }
                    }
                }
            }
        }
    }
}

/// A CSV record as a row.
struct CsvRow<'a>(&'a Records);

impl Row for CsvRow<'_> {
    fn cell(&self, col: usize) -> Cell<'_> {
        Cell::Text(self.0.field(col))
    }
    fn text(&self) -> String {
        self.0.text()
    }
    fn text_width(&self) -> usize {
        self.0.len()
    }
}

/// Reads the preamble and header of a described CSV file: its columns
/// and how many fields a row has.
pub fn csv_header(path: &Path, f: &Format) -> Result<(Records, Columns, usize), String> {
    let mut rec = Records::open(path, f.delimiter)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    for line in 1..=f.header_row {
        match rec.next(false) {
            Ok(Next::Record) if line == f.header_row => {}
            Ok(_) if line < f.header_row => {}
            Ok(_) => return Err(format!("{}: line {line} is not a header", path.display())),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        }
    }
    let header: Vec<&str> = (0..rec.len()).map(|i| rec.field(i).trim()).collect();
    let columns = f
        .columns(&header)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let width = header.len();
    Ok((rec, columns, width))
}

/// Checks a file's header (or Parquet schema) against the format.
pub fn header_of(
    path: &Path,
    kind: &super::super::ReplayFormat,
    f: &Format,
) -> Result<Columns, String> {
    match kind {
        super::super::ReplayFormat::Csv => csv_header(path, f).map(|(_, c, _)| c),
        super::super::ReplayFormat::Parquet => {
            let file = std::fs::File::open(path)
                .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
            let b = ParquetRecordBatchReaderBuilder::try_new(file)
                .map_err(|e| format!("{}: not a Parquet file: {e}", path.display()))?;
            let names: Vec<&str> = b
                .schema()
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect();
            f.columns(&names)
                .map_err(|e| format!("{}: {e}", path.display()))
        }
    }
}

/// The general CSV path: every record of the file (tailed with `--follow`).
pub fn run_csv(path: &Path, f: &Format, n: &mut Normalizer, poll: Duration) -> Result<(), String> {
    let (mut rec, columns, width) = csv_header(path, f)?;
    let io = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
    let mut reader = Reader::new(f, columns, width);
    let follow = n.ctx().follow;
    let resumed = n.take_resumed_position();
    if let Some(at) = resumed {
        rec.seek(at).map_err(io)?;
    }
    let mut counted = resumed.unwrap_or(0);
    loop {
        if n.ctx().stopped() {
            break;
        }
        let at = rec.resume_point();
        n.set_position(at);
        n.bytes_in(at.saturating_sub(counted));
        counted = at;
        match rec.next(follow).map_err(io)? {
            Next::Record => reader.row(&CsvRow(&rec), n),
            Next::NotUtf8 => n.reject("row is not UTF-8", rec.text()),
            Next::Empty => {}
            Next::Partial => {
                n.idle();
                std::thread::sleep(poll);
            }
            Next::Eof => break,
        }
    }
    Ok(())
}

/// A Parquet column prepared for cells.
enum Prepared {
    Text(ArrayRef),
    Number(ArrayRef),
    Time(ArrayRef),
}

struct ParquetRow<'a> {
    cols: &'a [Option<Prepared>],
    i: usize,
}

impl Row for ParquetRow<'_> {
    fn cell(&self, col: usize) -> Cell<'_> {
        let Some(Some(p)) = self.cols.get(col) else {
            return Cell::Null;
        };
        let (Prepared::Text(a) | Prepared::Number(a) | Prepared::Time(a)) = p;
        if a.is_null(self.i) {
            return Cell::Null;
        }
        match p {
            Prepared::Text(a) => Cell::Text(a.as_string::<i32>().value(self.i)),
            Prepared::Number(a) => Cell::Number(a.as_primitive::<Float64Type>().value(self.i)),
            Prepared::Time(a) => Cell::Time(a.as_primitive::<Int64Type>().value(self.i)),
        }
    }
    fn text(&self) -> String {
        let cells: Vec<String> = (0..self.cols.len())
            .filter(|&c| self.cols[c].is_some())
            .map(|c| match self.cell(c) {
                Cell::Text(s) => s.to_string(),
                Cell::Number(x) => x.to_string(),
                Cell::Time(ms) => ms.to_string(),
                Cell::Null => String::new(),
            })
            .collect();
        cells.join(",")
    }
    fn text_width(&self) -> usize {
        0
    }
}

fn prepare(c: &ArrayRef, time: bool) -> Result<Prepared, arrow::error::ArrowError> {
    use arrow::compute::cast;
    Ok(match c.data_type() {
        DataType::Timestamp(_, _) => {
            let ms = cast(c, &DataType::Timestamp(TimeUnit::Millisecond, None))?;
            Prepared::Time(cast(&ms, &DataType::Int64)?)
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Dictionary(_, _) => {
            Prepared::Text(cast(c, &DataType::Utf8)?)
        }
        DataType::Int64 if time => Prepared::Time(c.clone()),
        _ => Prepared::Number(cast(c, &DataType::Float64)?),
    })
}

/// The general Parquet path: columns by name, long or wide.
pub fn run_parquet(
    path: &Path,
    f: &Format,
    n: &mut Normalizer,
    batch: usize,
) -> Result<(), String> {
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| format!("{}: not a Parquet file: {e}", path.display()))?;
    let schema = builder.schema().clone();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let columns = f
        .columns(&names)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let (used, time_col) = match &columns {
        Columns::Long {
            ts,
            tag,
            value,
            quality,
        } => (
            [Some(*ts), Some(*tag), Some(*value), *quality]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>(),
            *ts,
        ),
        Columns::Wide { ts, tags } => {
            let mut v = vec![*ts];
            for t in tags {
                v.push(t.value);
                v.extend(t.quality);
            }
            (v, *ts)
        }
    };
    let skip = n.take_resumed_position().unwrap_or(0);
    let reader = builder
        .with_batch_size(batch.max(1024))
        .with_offset(skip as usize)
        .build()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut rows = Reader::new(f, columns, 0);
    let mut at = skip;
    for b in reader {
        if n.ctx().stopped() {
            break;
        }
        let b = b.map_err(|e| format!("{}: {e}", path.display()))?;
        let mut cols: Vec<Option<Prepared>> = (0..b.num_columns()).map(|_| None).collect();
        for &c in &used {
            let p = prepare(b.column(c), c == time_col)
                .map_err(|e| format!("{}: column `{}`: {e}", path.display(), names[c]))?;
            cols[c] = Some(p);
        }
        for i in 0..b.num_rows() {
            n.set_position(at);
            at += 1;
            rows.row(&ParquetRow { cols: &cols, i }, n);
        }
    }
    n.set_position(at);
    Ok(())
}
