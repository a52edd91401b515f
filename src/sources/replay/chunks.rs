//! A CSV replay file in chunks: the file (after its header) is cut into
//! 1 MiB chunks, a line belonging to the chunk its first byte is in; each
//! chunk is read and parsed on its own (see [`super::parallel`] for how the
//! chunks are spread over threads and handed over in order).

use std::borrow::Cow;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use super::lookup::Lookup;
use super::parallel::{in_order, Bad, Decoded, Feed, Row, Spare, Unknown};
use super::{Columns, CsvLine, CsvReader};
use crate::ingest::normalize::{parse_text, trim, Normalizer};
use crate::model::hint::AHEAD;

/// Bytes of a chunk.
pub(super) const CHUNK: u64 = 1 << 20;

/// A chunk: lines starting in `[from, to)`; `exact`: a line starts at `from`.
#[derive(Clone, Copy)]
struct Job {
    from: u64,
    to: u64,
    exact: bool,
}

/// The chunks of `chunk` bytes from `start` (a line start) to the end of
/// the file, each with its number: chunk `j` holds the lines that start
/// in `[header_end + j * chunk, header_end + (j + 1) * chunk)`, and the first
/// one starts at `start`.
fn jobs(header_end: u64, start: u64, len: u64, chunk: u64) -> impl Iterator<Item = (usize, Job)> {
    let first = (start - header_end) / chunk + 1;
    let next = move |j: u64| header_end + j * chunk;
    let head = Job {
        from: start,
        to: next(first).min(len.max(start)),
        exact: true,
    };
    let rest = (first..)
        .map(move |j| Job {
            from: next(j),
            to: next(j + 1).min(len),
            exact: false,
        })
        .take_while(move |j| j.from < len);
    let number = (first - 1) as usize;
    std::iter::once(head)
        .chain(rest)
        .enumerate()
        .map(move |(i, job)| (number + i, job))
}

/// Whether a file is worth decoding in parallel: more than two chunks.
pub fn worth_it(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.len() > 2 * CHUNK)
}

/// Feeds every line of `csv`'s file to the normaliser, decoded by
/// `decoders` threads, until the end of the file or a stop.
pub fn pump(
    csv: CsvReader,
    path: &Path,
    n: &mut Normalizer,
    decoders: usize,
) -> Result<(), String> {
    let err = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
    let len = std::fs::metadata(path).map_err(err)?.len();
    let header_end = csv.header_end();
    let columns = csv.columns();
    drop(csv);
    let resumed = n.take_resumed_position();
    let start = resumed
        .unwrap_or(header_end)
        .clamp(header_end, len.max(header_end));
    let tags = n.ctx().tags.clone();
    let stop = n.ctx().stop.clone();
    let spare = Spare::default();
    // Bytes read: from the start (the header too), or where it resumed.
    let mut feed = Feed {
        tags: tags.clone(),
        bytes: true,
        counted: resumed.unwrap_or(0),
        end: start,
        spare: Some(&spare),
    };
    let decoder = || {
        let file = File::open(path).map_err(err)?;
        Ok((file, Lookup::new(&tags), Vec::new()))
    };
    let decode = |(file, lookup, marks): &mut (File, Lookup, Vec<u32>),
                  job: Job,
                  emit: &mut dyn FnMut(Decoded) -> bool| {
        let (mut buf, rows) = spare.take();
        let first = read_job(file, job, &mut buf).map_err(err)?;
        emit(decode(buf, first, job, columns, lookup, (rows, marks)));
        Ok(())
    };
    // Chunks are numbered from the header's end: a process that goes on
    // from its logged position keeps its own share.
    let jobs = jobs(header_end, start, len, CHUNK)
        .filter(|(j, _)| n.ctx().reads_job(*j))
        .map(|(_, job)| job)
        .collect();
    in_order(jobs, decoders, &stop, decoder, decode, |c| feed.take(n, c))?;
    if !stop.load(std::sync::atomic::Ordering::Relaxed) {
        feed.finish(n);
    }
    Ok(())
}

/// Reads a chunk's bytes into `buf`, from the byte before `from` (or
/// `from` itself when a line starts there) through the end of the line
/// that holds byte `to - 1`. Returns where the first line starts in `buf`
/// (`buf`'s first byte is at file position `job_base(job)`).
fn read_job(file: &mut File, job: Job, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    let base = job_base(job);
    buf.clear();
    file.seek(SeekFrom::Start(base))?;
    (&mut *file).take(job.to - base).read_to_end(buf)?;
    // The last line may go on past `to`: read on to its newline.
    let mut from = buf.len().saturating_sub(1);
    loop {
        if memchr::memchr(b'\n', &buf[from..]).is_some() {
            break;
        }
        from = buf.len();
        let n = (&mut *file).take(64 * 1024).read_to_end(buf)?;
        if n == 0 {
            break;
        }
    }
    if job.exact {
        return Ok(0);
    }
    // The line the byte before `from` is in belongs to the chunk before.
    Ok(memchr::memchr(b'\n', buf).map_or(buf.len(), |i| i + 1))
}

fn job_base(job: Job) -> u64 {
    if job.exact {
        job.from
    } else {
        job.from - 1
    }
}

/// Parses the lines that start in the chunk, as [`CsvReader::next_line`]
/// and [`Normalizer::text_row`] would.
fn decode(
    buf: Vec<u8>,
    first: usize,
    job: Job,
    columns: Columns,
    tags: &mut Lookup,
    (mut rows, marks): (Vec<Row>, &mut Vec<u32>),
) -> Decoded {
    let base = job_base(job);
    let limit = (job.to - base) as usize;
    // The chunk's lines: through the newline of the line at `limit - 1`.
    let stop = match limit
        .checked_sub(1)
        .filter(|l| *l >= first && *l < buf.len())
    {
        Some(l) => memchr::memchr(b'\n', &buf[l..]).map_or(buf.len(), |i| l + i + 1),
        None => first.max(limit).min(buf.len()),
    };
    let end = match fast(
        &buf[first..stop],
        base + first as u64,
        columns,
        tags,
        (&mut rows, marks),
    ) {
        Some(done) => first + done,
        None => {
            rows.clear();
            slow(&buf, first, limit, base, columns, tags, &mut rows)
        }
    };
    Decoded {
        rows,
        buf,
        base,
        end: base + end as u64,
    }
}

/// The common case in one pass: text that is valid UTF-8 and has no
/// quotes, its commas and newlines found by one vectorised scan. Returns
/// the length decoded, or `None` to decode the chunk line by line.
fn fast(
    region: &[u8],
    base: u64,
    columns: Columns,
    tags: &mut Lookup,
    (rows, marks): (&mut Vec<Row>, &mut Vec<u32>),
) -> Option<usize> {
    if memchr::memchr(b'"', region).is_some() {
        return None;
    }
    let text = std::str::from_utf8(region).ok()?;
    let [its, itag, ival, iq] = columns.at;
    // Field bounds of the current line: starts of fields, then its end.
    let mut bounds = [0usize; 17];
    let mut count = 1;
    let mut line = 0;
    let mut ahead = std::collections::VecDeque::with_capacity(AHEAD + 1);
    if region.len() >= u32::MAX as usize {
        return None;
    }
    marks.clear();
    structurals(region, marks);
    let ends = marks
        .iter()
        .map(|m| *m as usize)
        .chain(std::iter::once(region.len()));
    for at in ends {
        let newline = at == region.len() || region[at] == b'\n';
        if !newline {
            if count < bounds.len() - 1 {
                bounds[count] = at + 1;
            }
            count += 1;
            continue;
        }
        if at == region.len() && at == line {
            break;
        }
        // The line without its trailing returns.
        let mut end = at;
        while end > line && region[end - 1] == b'\r' {
            end -= 1;
        }
        let start = line;
        let fields = count;
        (line, count) = (at + 1, 1);
        if end == start {
            continue;
        }
        let split = if fields != columns.width {
            Line::Malformed(start, end, fields)
        } else {
            bounds[0] = start;
            bounds[fields] = end + 1;
            let field = |i: usize| (bounds[i], bounds[i + 1] - 1);
            let quality = if iq == usize::MAX { (0, 0) } else { field(iq) };
            let (from, to) = field(itag);
            let hash = Lookup::hash(trim(&text[from..to]));
            tags.prefetch(hash);
            let fields = [field(its), (from, to), field(ival), quality];
            Line::Fields(start, end, fields, hash)
        };
        // The line waits while the next few are split, so that its tag's
        // slot has arrived in the cache when it is looked up.
        ahead.push_back(split);
        if ahead.len() > AHEAD {
            let split = ahead.pop_front().expect("queued");
            rows.push(split.row(text, base, columns.width, tags));
        }
    }
    for split in ahead {
        rows.push(split.row(text, base, columns.width, tags));
    }
    Some(line.min(region.len()))
}

/// A line [`fast`] has split: `(start, end)` in the region, and either its
/// field count (not the header's) or its fields' bounds (time, tag, value,
/// quality) and its tag's [`Lookup::hash`].
enum Line {
    Malformed(usize, usize, usize),
    Fields(usize, usize, [(usize, usize); 4], u64),
}

impl Line {
    fn row(self, text: &str, base: u64, width: usize, tags: &mut Lookup) -> Row {
        match self {
            Line::Malformed(start, end, fields) => Row::Bad(Box::new(Bad {
                at: base + start as u64,
                reason: Cow::Owned(format!("malformed row ({fields} fields, expected {width})")),
                raw: text[start..end].to_string(),
            })),
            Line::Fields(start, end, f, hash) => {
                let field = |(a, b): (usize, usize)| &text[a..b];
                let fields = (field(f[0]), field(f[1]), field(f[2]), field(f[3]));
                row(
                    base + start as u64,
                    fields,
                    &text[start..end],
                    tags,
                    Some(hash),
                )
            }
        }
    }
}

/// The offsets of every comma and newline in `text`, in order: 64 bytes
/// at a time into a bit mask, then one offset per set bit.
fn structurals(text: &[u8], out: &mut Vec<u32>) {
    let mut base = 0u32;
    let mut blocks = text.chunks_exact(64);
    for block in &mut blocks {
        let mut m = mask64(block);
        while m != 0 {
            out.push(base + m.trailing_zeros());
            m &= m - 1;
        }
        base += 64;
    }
    let mut m = mask_scalar(blocks.remainder());
    while m != 0 {
        out.push(base + m.trailing_zeros());
        m &= m - 1;
    }
}

/// Bit `i` set where `block[i]` (of up to 64 bytes) is a comma or a newline.
fn mask_scalar(block: &[u8]) -> u64 {
    let mut m = 0u64;
    for (i, &c) in block.iter().enumerate() {
        m |= ((c == b',' || c == b'\n') as u64) << i;
    }
    m
}

/// [`mask_scalar`] of 64 bytes with SSE2 (part of every x86-64 CPU):
/// sixteen compares per instruction.
#[cfg(target_arch = "x86_64")]
fn mask64(block: &[u8]) -> u64 {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
    };
    assert!(block.len() >= 64);
    let mut m = 0u64;
    // SAFETY: SSE2 is in the x86-64 baseline; each unaligned load reads 16
    // bytes at offsets 0, 16, 32 and 48 of a block of at least 64 (asserted).
    unsafe {
        let (comma, newline) = (_mm_set1_epi8(b',' as i8), _mm_set1_epi8(b'\n' as i8));
        for k in 0..4 {
            let v = _mm_loadu_si128(block.as_ptr().add(16 * k) as *const __m128i);
            let hits = _mm_or_si128(_mm_cmpeq_epi8(v, comma), _mm_cmpeq_epi8(v, newline));
            m |= (_mm_movemask_epi8(hits) as u16 as u64) << (16 * k);
        }
    }
    m
}

#[cfg(not(target_arch = "x86_64"))]
fn mask64(block: &[u8]) -> u64 {
    mask_scalar(&block[..64])
}

/// Line by line, as [`CsvReader::next_line`] splits them.
fn slow(
    buf: &[u8],
    first: usize,
    limit: usize,
    base: u64,
    columns: Columns,
    tags: &mut Lookup,
    rows: &mut Vec<Row>,
) -> usize {
    let mut start = first;
    while start < limit && start < buf.len() {
        let (line_end, next) = match memchr::memchr(b'\n', &buf[start..]) {
            Some(i) => (start + i, start + i + 1),
            None => (buf.len(), buf.len()),
        };
        let (line, at) = (start, base + start as u64);
        let mut end = line_end;
        while end > line && matches!(buf[end - 1], b'\n' | b'\r') {
            end -= 1;
        }
        start = next;
        let Ok(text) = std::str::from_utf8(&buf[line..end]) else {
            rows.push(Row::Bad(Box::new(Bad {
                at,
                reason: Cow::Borrowed("row is not UTF-8"),
                raw: String::from_utf8_lossy(&buf[line..end]).into_owned(),
            })));
            continue;
        };
        if text.is_empty() {
            continue;
        }
        rows.push(match columns.split(text) {
            CsvLine::Row {
                ts,
                tag,
                value,
                quality,
                text,
            } => row(at, (ts, tag, value, quality), text, tags, None),
            CsvLine::Malformed { reason, text } => Row::Bad(Box::new(Bad {
                at,
                reason: Cow::Owned(reason),
                raw: text,
            })),
            CsvLine::Empty | CsvLine::Partial | CsvLine::Eof => continue,
        });
    }
    start.min(buf.len())
}

/// One row's fields, checked as [`Normalizer::text_row`] and
/// [`Normalizer::row`] check them.
fn row(
    at: u64,
    (ts, tag, value, quality): (&str, &str, &str, &str),
    text: &str,
    tags: &mut Lookup,
    hash: Option<u64>,
) -> Row {
    let bad = |reason: &'static str| {
        Row::Bad(Box::new(Bad {
            at,
            reason: Cow::Borrowed(reason),
            raw: text.to_string(),
        }))
    };
    let (ts, value, quality) = match parse_text(ts, value, quality) {
        Ok(v) => v,
        Err(reason) => return bad(reason),
    };
    if !value.is_finite() {
        return bad("value is NaN or infinite");
    }
    let tag = trim(tag);
    let id = match hash {
        Some(hash) => tags.id_hashed(tag, hash),
        None => tags.id(tag),
    };
    match id {
        Some(tag) => Row::Sample {
            at,
            aux: text.len() as u32,
            ts,
            tag,
            value,
            quality,
        },
        None => Row::Unknown(Box::new(Unknown {
            at,
            ts,
            value,
            tag: tag.into(),
            raw: text.into(),
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::super::parallel::show;
    use super::*;
    use crate::ingest::TagRegistry;
    use std::sync::Arc;

    #[test]
    fn chunks_cover_the_file_once() {
        let h = 21;
        let list = |start, len| -> Vec<(usize, u64, u64)> {
            jobs(h, start, len, CHUNK)
                .map(|(j, job)| (j, job.from, job.to))
                .collect()
        };
        let all: Vec<(usize, Job)> = jobs(h, h, h + 3 * CHUNK + 5, CHUNK).collect();
        assert_eq!(all.len(), 4);
        assert_eq!(
            (all[0].1.from, all[0].1.to, all[0].1.exact),
            (h, h + CHUNK, true)
        );
        assert_eq!(
            list(h, h + 3 * CHUNK + 5)[3],
            (3, h + 3 * CHUNK, h + 3 * CHUNK + 5)
        );
        // A resume inside chunk 1 starts exactly there, and keeps the
        // chunks' numbers (a cluster's process keeps its share).
        assert_eq!(
            list(h + CHUNK + 7, h + 3 * CHUNK),
            [
                (1, h + CHUNK + 7, h + 2 * CHUNK),
                (2, h + 2 * CHUNK, h + 3 * CHUNK)
            ]
        );
        // A resume at a chunk's first byte: that chunk, whole.
        assert_eq!(
            list(h + 2 * CHUNK, h + 3 * CHUNK)[0],
            (2, h + 2 * CHUNK, h + 3 * CHUNK)
        );
        // A resume at the end: one empty chunk.
        assert_eq!(list(h + 10, h + 10), [(0, h + 10, h + 10)]);
    }

    /// Every chunking of a file of awkward lines decodes to what one
    /// reader reads, line for line, at the same positions.
    #[test]
    fn any_chunking_reads_what_one_reader_reads() {
        let mut text = b"\xef\xbb\xbfts,tag,value,quality\n".to_vec();
        for i in 0..40u64 {
            let line = match i % 10 {
                0 => format!("{},a,{}.5,0\n", 1_767_596_100_000 + i, i),
                1 => format!("{},\"b\",{},1\r\n", 1_767_596_100_000 + i, i),
                2 => "\n\r\n".to_string(),
                3 => format!("{},a,x{i},0\n", 1_767_596_100_000 + i),
                4 => format!("{},a,1,0,extra\n", i),
                5 => format!("{},zz,2,0\n", 1_767_596_100_000 + i),
                6 => format!(
                    "{},b,{},{}\n",
                    1_767_596_100_000 + i,
                    "9".repeat(40),
                    "1073741824"
                ),
                7 => format!("{},a,NaN,0\n", 1_767_596_100_000 + i),
                8 => format!(" {} , a ,  3 , 2 \n", 1_767_596_100_000 + i),
                _ => format!("{},b,{},0\r\r\n", 1_767_596_100_000 + i, i as f64 / 7.0),
            };
            text.extend_from_slice(line.as_bytes());
            if i == 17 {
                text.extend_from_slice(b"1767596100017,\xff\xfe,1,0\n");
            }
        }
        text.extend_from_slice(b"1767596100999,a,4,0");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.csv");
        std::fs::write(&path, &text).unwrap();
        let tags = Arc::new(TagRegistry::default());
        tags.intern("a");
        tags.intern("b");
        let mut lookup = Lookup::new(&tags);
        // One reader, line by line.
        let mut csv = CsvReader::open(&path).unwrap();
        let (header_end, columns) = (csv.header_end(), csv.columns());
        let mut want = Vec::new();
        loop {
            let at = csv.resume_point();
            match csv.next_line(false).unwrap() {
                CsvLine::Row {
                    ts,
                    tag,
                    value,
                    quality,
                    text,
                } => want.push(show(&row(
                    at,
                    (ts, tag, value, quality),
                    text,
                    &mut lookup,
                    None,
                ))),
                CsvLine::Malformed { reason, text } => want.push(show(&Row::Bad(Box::new(Bad {
                    at,
                    reason: Cow::Owned(reason),
                    raw: text,
                })))),
                CsvLine::Empty | CsvLine::Partial => {}
                CsvLine::Eof => break,
            }
        }
        assert!(want.len() > 30, "{want:?}");
        let len = text.len() as u64;
        for chunk in [1, 5, 13, 64, 333, 1 << 20] {
            for start in [header_end, header_end + 20] {
                // A resume starts at a line start.
                let start = if start == header_end {
                    start
                } else {
                    let from = start as usize;
                    from as u64 + memchr::memchr(b'\n', &text[from..]).unwrap() as u64 + 1
                };
                let mut file = File::open(&path).unwrap();
                let mut got = Vec::new();
                let mut end = start;
                for (_, job) in jobs(header_end, start, len, chunk) {
                    let mut buf = Vec::new();
                    let first = read_job(&mut file, job, &mut buf).unwrap();
                    let d = decode(buf, first, job, columns, &mut lookup, (vec![], &mut vec![]));
                    assert!(d.end >= end, "chunk {chunk}: ends go forward");
                    end = d.end;
                    got.extend(d.rows.iter().map(show));
                }
                assert_eq!(end, len, "chunk {chunk}: read to the end");
                let skip = want
                    .iter()
                    .position(|w| {
                        w.split([' ', '+']).next().unwrap().parse::<u64>().unwrap() >= start
                    })
                    .unwrap();
                assert_eq!(got, want[skip..], "chunk {chunk}, start {start}");
            }
        }
    }

    #[test]
    fn vector_masks_equal_scalar_ones() {
        let text: Vec<u8> = (0..4096u32)
            .map(|i| b"a,\n9x\r,,\n\"\xff"[(i * 7 % 11) as usize])
            .collect();
        for off in 0..64 {
            let block = &text[off..off + 64];
            assert_eq!(mask64(block), mask_scalar(block));
        }
        let mut marks = Vec::new();
        structurals(&text[3..], &mut marks);
        let want: Vec<u32> = text[3..]
            .iter()
            .enumerate()
            .filter(|(_, c)| **c == b',' || **c == b'\n')
            .map(|(i, _)| i as u32)
            .collect();
        assert_eq!(marks, want);
    }
}
