//! Records of a delimited file (RFC 4180: quoted fields, doubled quotes,
//! newlines inside quotes, CRLF) by `csv-core`, read a line at a time so a
//! followed file's last, partial record waits for its end and every record
//! has a byte position to resume from.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

/// What [`Records::next`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// A record: its fields are [`Records::field`].
    Record,
    /// A record that is not UTF-8.
    NotUtf8,
    /// A blank line.
    Empty,
    /// A last record without its end (yet): in follow mode, wait for the rest.
    Partial,
    Eof,
}

pub struct Records {
    reader: BufReader<File>,
    core: csv_core::Reader,
    /// The current record's bytes (one line, or more inside quotes).
    raw: Vec<u8>,
    /// Its fields, unquoted, and where each ends.
    fields: String,
    ends: Vec<usize>,
    partial: bool,
    consumed: u64,
    start: u64,
}

impl Records {
    /// Opens `path` for records separated by `delimiter`; a UTF-8 byte
    /// order mark at the start is skipped.
    pub fn open(path: &Path, delimiter: u8) -> std::io::Result<Records> {
        let mut reader = BufReader::with_capacity(1 << 20, File::open(path)?);
        let bom = reader.fill_buf()?.starts_with(b"\xef\xbb\xbf");
        if bom {
            reader.consume(3);
        }
        let at = if bom { 3 } else { 0 };
        Ok(Records {
            reader,
            core: csv_core::ReaderBuilder::new().delimiter(delimiter).build(),
            raw: Vec::with_capacity(512),
            fields: String::new(),
            ends: Vec::with_capacity(64),
            partial: false,
            consumed: at,
            start: at,
        })
    }

    /// Goes on from byte `at` (a record start the input log recorded).
    pub fn seek(&mut self, at: u64) -> std::io::Result<()> {
        use std::io::Seek;
        self.reader.seek(std::io::SeekFrom::Start(at))?;
        self.raw.clear();
        self.partial = false;
        (self.consumed, self.start) = (at, at);
        Ok(())
    }

    /// Where the next record starts (a partial record's start while it
    /// waits for its end).
    pub fn resume_point(&self) -> u64 {
        if self.partial {
            self.start
        } else {
            self.consumed
        }
    }

    /// Reads the next record; `follow` keeps a partial last one for later.
    pub fn next(&mut self, follow: bool) -> std::io::Result<Next> {
        if !self.partial {
            self.raw.clear();
            self.start = self.consumed;
        }
        loop {
            let n = self.reader.read_until(b'\n', &mut self.raw)?;
            self.consumed += n as u64;
            // Nothing more read: the input ends here (for now), even if
            // the record so far ends with a newline inside quotes.
            let ended = n > 0 && self.raw.last() == Some(&b'\n');
            if !ended {
                if follow {
                    self.partial = true;
                    return Ok(Next::Partial);
                }
                if self.raw.is_empty() {
                    return Ok(Next::Eof);
                }
            }
            self.partial = false;
            if self.raw.iter().all(|b| matches!(b, b'\n' | b'\r')) {
                return Ok(Next::Empty);
            }
            match self.parse(!ended) {
                Some(next) => return Ok(next),
                // Inside quotes at the line's end: the record goes on.
                None => continue,
            }
        }
    }

    /// Parses `raw` as one record; `None` if it ends inside quotes (and
    /// the input does not end here).
    fn parse(&mut self, at_end: bool) -> Option<Next> {
        use csv_core::ReadRecordResult as R;
        self.core.reset();
        let mut out = std::mem::take(&mut self.fields).into_bytes();
        out.clear();
        out.resize(self.raw.len().max(64), 0);
        self.ends.clear();
        self.ends.resize(self.ends.capacity().max(64), 0);
        let (mut nin, mut nout, mut nend) = (0, 0, 0);
        let done = loop {
            let input = &self.raw[nin..];
            let (r, i, o, e) =
                self.core
                    .read_record(input, &mut out[nout..], &mut self.ends[nend..]);
            // `ends` count from the record's start, whatever the slice given.
            (nin, nout, nend) = (nin + i, nout + o, nend + e);
            match r {
                R::Record => break true,
                R::OutputFull => out.resize(out.len() * 2, 0),
                R::OutputEndsFull => self.ends.resize(self.ends.len() * 2, 0),
                R::InputEmpty if nin < self.raw.len() => {}
                R::InputEmpty if at_end => {
                    // End of input: an empty read ends the record.
                    let (r, _, o, e) =
                        self.core
                            .read_record(&[], &mut out[nout..], &mut self.ends[nend..]);
                    (nout, nend) = (nout + o, nend + e);
                    break r == R::Record;
                }
                R::InputEmpty | R::End => break false,
            }
        };
        if !done && !at_end {
            self.fields = String::from_utf8(out).unwrap_or_default();
            return None;
        }
        out.truncate(nout);
        self.ends.truncate(nend);
        match String::from_utf8(out) {
            Ok(s) => {
                self.fields = s;
                Some(Next::Record)
            }
            Err(e) => {
                self.fields = String::from_utf8(e.into_bytes()).unwrap_or_default();
                self.ends.clear();
                Some(Next::NotUtf8)
            }
        }
    }

    /// How many fields the record has.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Field `i` of the record ("" past its end).
    pub fn field(&self, i: usize) -> &str {
        match self.ends.get(i) {
            Some(&end) => {
                let start = if i == 0 { 0 } else { self.ends[i - 1] };
                &self.fields[start..end]
            }
            None => "",
        }
    }

    /// The record's text as it is in the file, without its line end.
    pub fn text(&self) -> String {
        let t = String::from_utf8_lossy(&self.raw);
        t.trim_end_matches(['\r', '\n']).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(text: &[u8], delimiter: u8) -> (tempfile::TempDir, Records) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.csv");
        std::fs::write(&p, text).unwrap();
        let r = Records::open(&p, delimiter).unwrap();
        (dir, r)
    }

    fn all(r: &Records) -> Vec<&str> {
        (0..r.len()).map(|i| r.field(i)).collect()
    }

    #[test]
    fn quotes_semicolons_crlf_and_newlines_inside_quotes() {
        let (_d, mut r) = records(
            b"\xef\xbb\xbf\"Zeit\";\"Tag\";\"Wert\"\r\n05.01.2026;\"a;b\";1,5\r\n\r\n06.01.2026;\"say \"\"hi\"\"\nthere\";2\n\xff;x;1\n7;y;3",
            b';',
        );
        assert_eq!(r.next(false).unwrap(), Next::Record);
        assert_eq!(all(&r), ["Zeit", "Tag", "Wert"]);
        assert_eq!(r.resume_point(), 3 + 21, "the mark and the header line");
        assert_eq!(r.next(false).unwrap(), Next::Record);
        assert_eq!(all(&r), ["05.01.2026", "a;b", "1,5"]);
        assert_eq!(r.next(false).unwrap(), Next::Empty);
        assert_eq!(r.next(false).unwrap(), Next::Record);
        assert_eq!(all(&r), ["06.01.2026", "say \"hi\"\nthere", "2"]);
        assert_eq!(r.next(false).unwrap(), Next::NotUtf8);
        // The last record has no newline: read when not following.
        assert_eq!(r.next(false).unwrap(), Next::Record);
        assert_eq!(all(&r), ["7", "y", "3"]);
        assert_eq!(r.next(false).unwrap(), Next::Eof);
    }

    #[test]
    fn a_partial_record_waits_in_follow_mode_and_resumes_by_position() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.csv");
        std::fs::write(&p, "t,a\n1,\"x\n").unwrap();
        let mut r = Records::open(&p, b',').unwrap();
        assert_eq!(r.next(true).unwrap(), Next::Record);
        let at = r.resume_point();
        assert_eq!(at, 4);
        // Inside quotes at the end of what is there: wait.
        assert_eq!(r.next(true).unwrap(), Next::Partial);
        assert_eq!(r.resume_point(), 4);
        let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        std::io::Write::write_all(&mut f, b"y\"\n2,z\n").unwrap();
        assert_eq!(r.next(true).unwrap(), Next::Record);
        assert_eq!(all(&r), ["1", "x\ny"]);
        let mut again = Records::open(&p, b',').unwrap();
        again.seek(at).unwrap();
        assert_eq!(again.next(true).unwrap(), Next::Record);
        assert_eq!(all(&again), ["1", "x\ny"]);
        assert_eq!(again.next(true).unwrap(), Next::Record);
        assert_eq!(all(&again), ["2", "z"]);
    }
}
