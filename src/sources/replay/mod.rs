//! `replay`: historian exports as CSV or Parquet (`ts,tag,value,quality`).
//!
//! Runs on a tokio blocking thread. With `--follow`, a CSV file is tailed:
//! new complete lines are read as they are appended, until shutdown.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::time::Duration;

mod chunks;
pub mod config;
pub mod format;
mod groups;
mod lookup;
mod parallel;

pub use config::{ReplayFormat, ReplayPlan};

use crate::ingest::normalize::{Normalizer, SourceCtx};

/// Whether a file is read in jobs (a CSV file over 2 MiB read to its end,
/// a Parquet file): every process of a cluster reads its share of them. A
/// file read whole is read by one process.
pub fn read_in_jobs(plan: &ReplayPlan, follow: bool) -> bool {
    match (&plan.format, &plan.export) {
        (ReplayFormat::Csv, None) => !follow && chunks::worth_it(&plan.path),
        (ReplayFormat::Parquet, None) => true,
        _ => false,
    }
}

/// Reads the whole source (or tails it), then ends it.
pub fn run(plan: &ReplayPlan, ctx: SourceCtx) -> Result<(), String> {
    let mut n = Normalizer::new(ctx, plan.batch_rows);
    if !read_in_jobs(plan, n.ctx().follow) && !n.ctx().runs_whole() {
        n.end();
        return Ok(());
    }
    let poll = Duration::from_millis(plan.poll_interval_ms.max(1));
    let r = match (&plan.format, &plan.export) {
        (ReplayFormat::Csv, None) => run_csv(plan, &mut n),
        (ReplayFormat::Parquet, None) => {
            let decoders = n.ctx().ingest.workers();
            groups::pump(&plan.path, &mut n, plan.batch_rows, decoders)
        }
        (ReplayFormat::Csv, Some(f)) => format::read::run_csv(&plan.path, f, &mut n, poll),
        (ReplayFormat::Parquet, Some(f)) => {
            format::read::run_parquet(&plan.path, f, &mut n, plan.batch_rows)
        }
    };
    n.end();
    r
}

/// One line of a CSV replay file, split into fields.
pub enum CsvLine<'a> {
    /// A complete row with the header's column count: `ts, tag, value, quality` ("" when absent).
    Row {
        ts: &'a str,
        tag: &'a str,
        value: &'a str,
        quality: &'a str,
        /// The whole line, for a dead letter.
        text: &'a str,
    },
    /// A complete line with the wrong number of fields (or not UTF-8).
    Malformed { reason: String, text: String },
    /// An empty line.
    Empty,
    /// A last line without its newline (yet): in follow mode, wait for the rest.
    Partial,
    /// End of the file (for now).
    Eof,
}

/// The CSV replay reader: a 1 MiB buffered reader over bytes, one reused
/// line buffer, fields found with `memchr` (no per-row allocation; quotes are
/// only trimmed when present).
pub struct CsvReader {
    reader: BufReader<File>,
    line: Vec<u8>,
    columns: Columns,
    header_end: u64,
    /// A partial line is held until its newline arrives.
    partial: bool,
    /// Bytes read from the file, and where the current line starts.
    consumed: u64,
    line_start: u64,
}

fn unquote(f: &str) -> &str {
    if f.as_bytes().first() == Some(&b'"') || f.as_bytes().last() == Some(&b'"') {
        f.trim_matches('"')
    } else {
        f
    }
}

impl CsvReader {
    /// Opens `path` and reads its header.
    pub fn open(path: &Path) -> Result<CsvReader, String> {
        let file = File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let mut header = String::new();
        reader
            .read_line(&mut header)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        // A spreadsheet's export often starts with a UTF-8 byte order mark.
        let cols: Vec<&str> = header
            .strip_prefix('\u{feff}')
            .unwrap_or(&header)
            .trim_end()
            .split(',')
            .map(|c| c.trim().trim_matches('"'))
            .collect();
        let pos = |name: &str| cols.iter().position(|c| *c == name);
        let (Some(its), Some(itag), Some(ival)) = (pos("ts"), pos("tag"), pos("value")) else {
            return Err(format!(
                "{}: the header must name `ts`, `tag` and `value` (and optionally `quality`), found `{}`",
                path.display(),
                header.trim_end()
            ));
        };
        let width = cols.len();
        if width > 16 {
            return Err(format!(
                "{}: at most 16 columns are supported, found {width}",
                path.display()
            ));
        }
        Ok(CsvReader {
            reader,
            line: Vec::with_capacity(256),
            columns: Columns {
                at: [its, itag, ival, pos("quality").unwrap_or(usize::MAX)],
                width,
            },
            header_end: header.len() as u64,
            partial: false,
            consumed: header.len() as u64,
            line_start: header.len() as u64,
        })
    }

    /// Goes on from byte `at` (a line start the input log recorded).
    pub fn seek(&mut self, at: u64) -> std::io::Result<()> {
        use std::io::Seek;
        self.reader.seek(std::io::SeekFrom::Start(at))?;
        self.line.clear();
        self.partial = false;
        (self.consumed, self.line_start) = (at, at);
        Ok(())
    }

    /// Where the next line starts (a partial line's start while it waits
    /// for its end): every line before it has been read.
    pub fn resume_point(&self) -> u64 {
        if self.partial {
            self.line_start
        } else {
            self.consumed
        }
    }

    /// Reads the next line. `follow` keeps a partial last line for later.
    pub fn next_line(&mut self, follow: bool) -> std::io::Result<CsvLine<'_>> {
        if !self.partial {
            self.line.clear();
            self.line_start = self.consumed;
        }
        let n = self.reader.read_until(b'\n', &mut self.line)?;
        self.consumed += n as u64;
        let complete = self.line.last() == Some(&b'\n');
        if !complete {
            if follow {
                self.partial = true;
                return Ok(CsvLine::Partial);
            }
            if n == 0 && self.line.is_empty() {
                return Ok(CsvLine::Eof);
            }
        }
        self.partial = false;
        let mut end = self.line.len();
        while end > 0 && matches!(self.line[end - 1], b'\n' | b'\r') {
            end -= 1;
        }
        let text = match std::str::from_utf8(&self.line[..end]) {
            Ok(t) => t,
            Err(_) => {
                return Ok(CsvLine::Malformed {
                    reason: "row is not UTF-8".into(),
                    text: String::from_utf8_lossy(&self.line[..end]).into_owned(),
                })
            }
        };
        if text.is_empty() {
            return Ok(CsvLine::Empty);
        }
        Ok(self.columns.split(text))
    }

    /// The header's columns.
    pub fn columns(&self) -> Columns {
        self.columns
    }

    /// Where the header ends (the first row starts).
    pub fn header_end(&self) -> u64 {
        self.header_end
    }
}

/// Where a CSV file's columns are: positions of ts, tag, value, quality
/// (`usize::MAX` when absent), and how many there are.
#[derive(Clone, Copy, Debug)]
pub struct Columns {
    pub(super) at: [usize; 4],
    pub(super) width: usize,
}

impl Columns {
    /// Splits a complete, non-empty line into its fields (no allocation;
    /// quotes are only trimmed when present).
    pub fn split<'a>(&self, text: &'a str) -> CsvLine<'a> {
        let mut fields = [""; 16];
        let mut count = 0;
        let mut from = 0;
        for comma in memchr::memchr_iter(b',', text.as_bytes()).chain(std::iter::once(text.len())) {
            if count < fields.len() {
                fields[count] = &text[from..comma];
            }
            count += 1;
            from = comma + 1;
        }
        if count != self.width {
            return CsvLine::Malformed {
                reason: format!("malformed row ({count} fields, expected {})", self.width),
                text: text.to_string(),
            };
        }
        let [its, itag, ival, iq] = self.at;
        CsvLine::Row {
            ts: unquote(fields[its]),
            tag: unquote(fields[itag]),
            value: unquote(fields[ival]),
            quality: if iq == usize::MAX {
                ""
            } else {
                unquote(fields[iq])
            },
            text,
        }
    }
}

fn run_csv(plan: &ReplayPlan, n: &mut Normalizer) -> Result<(), String> {
    let csv = CsvReader::open(&plan.path)?;
    let poll = Duration::from_millis(plan.poll_interval_ms.max(1));
    let err = |e| format!("cannot read {}: {e}", plan.path.display());
    // A file read to its end is decoded in chunks, by as many threads as
    // there are workers (a followed file grows: one reader tails it).
    let decoders = n.ctx().ingest.workers();
    if !n.ctx().follow && chunks::worth_it(&plan.path) {
        return chunks::pump(csv, &plan.path, n, decoders);
    }
    pump_csv(csv, n, poll).map_err(err)
}

/// Feeds every line of `csv` to the normaliser until the end of the file
/// (or, in follow mode, until shutdown; `poll` between checks for more).
pub fn pump_csv(mut csv: CsvReader, n: &mut Normalizer, poll: Duration) -> std::io::Result<()> {
    let follow = n.ctx().follow;
    let resumed = n.take_resumed_position();
    if let Some(at) = resumed {
        csv.seek(at)?;
    }
    // Bytes read: from the start (the header too), or where it resumed.
    let mut counted = resumed.unwrap_or(0);
    loop {
        if n.ctx().stopped() {
            break;
        }
        // Every line before the next one has been handed over (the input
        // log records it with the rows, so a restart goes on from there).
        let at = csv.resume_point();
        n.set_position(at);
        n.bytes_in(at.saturating_sub(counted));
        counted = at;
        match csv.next_line(follow)? {
            CsvLine::Row {
                ts,
                tag,
                value,
                quality,
                text,
            } => n.text_row(ts, tag, value, quality, &|| text.to_string()),
            CsvLine::Malformed { reason, text } => n.reject(&reason, text),
            CsvLine::Empty => {}
            CsvLine::Partial => {
                // End of what is there now; a partial last line waits for its end.
                n.idle();
                std::thread::sleep(poll);
            }
            CsvLine::Eof => break,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(text: &[u8]) -> (tempfile::TempDir, CsvReader) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.csv");
        std::fs::write(&p, text).unwrap();
        let r = CsvReader::open(&p).unwrap();
        (dir, r)
    }

    fn fields(l: CsvLine<'_>) -> Option<(String, String, String, String)> {
        match l {
            CsvLine::Row {
                ts,
                tag,
                value,
                quality,
                ..
            } => Some((ts.into(), tag.into(), value.into(), quality.into())),
            _ => None,
        }
    }

    #[test]
    fn columns_by_header_quotes_crlf_and_bad_rows() {
        let (_d, mut r) =
            reader(b"\"value\",tag,ts\r\n1.5,\"a/b\",10\r\n2.5,c\n\xff,x,1\n\n7,d,11");
        assert_eq!(
            fields(r.next_line(false).unwrap()),
            Some(("10".into(), "a/b".into(), "1.5".into(), "".into()))
        );
        match r.next_line(false).unwrap() {
            CsvLine::Malformed { reason, text } => {
                assert_eq!(reason, "malformed row (2 fields, expected 3)");
                assert_eq!(text, "2.5,c");
            }
            _ => panic!("expected a malformed row"),
        }
        assert!(
            matches!(r.next_line(false).unwrap(), CsvLine::Malformed { reason, .. } if reason.contains("UTF-8"))
        );
        assert!(matches!(r.next_line(false).unwrap(), CsvLine::Empty));
        // The last line has no newline: read as a row when not following.
        assert_eq!(
            fields(r.next_line(false).unwrap()),
            Some(("11".into(), "d".into(), "7".into(), "".into()))
        );
        assert!(matches!(r.next_line(false).unwrap(), CsvLine::Eof));
    }

    #[test]
    fn follow_waits_for_the_rest_of_a_partial_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.csv");
        std::fs::write(&p, "ts,tag,value,quality\n5,a,1.2").unwrap();
        let mut r = CsvReader::open(&p).unwrap();
        assert!(matches!(r.next_line(true).unwrap(), CsvLine::Partial));
        let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        std::io::Write::write_all(&mut f, b"5,1\n6,b,2,0\n").unwrap();
        assert_eq!(
            fields(r.next_line(true).unwrap()),
            Some(("5".into(), "a".into(), "1.25".into(), "1".into()))
        );
        assert_eq!(
            fields(r.next_line(true).unwrap()),
            Some(("6".into(), "b".into(), "2".into(), "0".into()))
        );
        assert!(matches!(r.next_line(true).unwrap(), CsvLine::Partial));
    }

    /// A byte order mark before the header (a spreadsheet's CSV export) is
    /// not part of the first column's name; positions still count it.
    #[test]
    fn a_byte_order_mark_before_the_header_is_skipped() {
        let (_d, mut r) = reader(b"\xef\xbb\xbfts,tag,value\n10,a,1.5\n");
        assert_eq!(r.line_start, 16, "the mark's 3 bytes and the header's 13");
        assert_eq!(
            fields(r.next_line(false).unwrap()),
            Some(("10".into(), "a".into(), "1.5".into(), "".into()))
        );
    }

    #[test]
    fn a_header_without_ts_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.csv");
        std::fs::write(&p, "time,tag,value\n").unwrap();
        let e = CsvReader::open(&p).err().unwrap();
        assert!(e.contains("must name `ts`"), "{e}");
    }
}
