//! A replay file decoded on several threads and handed over in order.
//!
//! The file is cut into jobs (a CSV file's 1 MiB chunks, see
//! [`super::chunks`]; a Parquet file's row groups, see [`super::groups`]);
//! decoder `k` of `K` parses jobs `k, k + K, …` into [`Row`]s. The source's
//! own thread takes the decoded pieces back in file order ([`in_order`])
//! and hands their rows to the normaliser ([`Feed`]), so event-time order,
//! watermarks, lateness, dead letters and resume positions are exactly
//! those of one reader: only the parsing runs in parallel. Each decoder has
//! two pieces in flight at most.

use std::borrow::Cow;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;

use crate::ingest::normalize::Normalizer;
use crate::ingest::TagRegistry;
use crate::model::hint::AHEAD;
use crate::model::{Quality, TagId};

/// One decoded row.
pub(super) enum Row {
    Sample {
        at: u64,
        /// What rebuilds the row's text for a dead letter: the line's
        /// length (a CSV chunk's text is in its buffer), or the quality
        /// code as read (a Parquet batch).
        aux: u32,
        ts: i64,
        tag: TagId,
        value: f64,
        quality: Quality,
    },
    /// A good row of a tag the assets table does not know.
    Unknown(Box<Unknown>),
    Bad(Box<Bad>),
}

/// A good row of a tag the assets table does not know (boxed: rare, and a
/// row stays the size of a sample).
pub(super) struct Unknown {
    pub(super) at: u64,
    pub(super) ts: i64,
    pub(super) value: f64,
    pub(super) tag: Box<str>,
    pub(super) raw: Box<str>,
}

/// A rejected row.
pub(super) struct Bad {
    pub(super) at: u64,
    pub(super) reason: Cow<'static, str>,
    pub(super) raw: String,
}

impl Row {
    pub(super) fn at(&self) -> u64 {
        match self {
            Row::Sample { at, .. } => *at,
            Row::Unknown(u) => u.at,
            Row::Bad(b) => b.at,
        }
    }
}

/// A chunk's rows, its bytes (from file position `base`; none for a
/// Parquet batch), and where its rows end. Positions are byte offsets in a
/// CSV file, row indexes in a Parquet one.
pub(super) struct Decoded {
    pub(super) rows: Vec<Row>,
    pub(super) buf: Vec<u8>,
    pub(super) base: u64,
    pub(super) end: u64,
}

impl Decoded {
    /// The text of a sample's row (for a dead letter).
    fn text(
        &self,
        at: u64,
        (ts, tag, value, aux): (i64, TagId, f64, u32),
        tags: &TagRegistry,
    ) -> String {
        if self.buf.is_empty() {
            let name = tags.view().key(tag).to_string();
            return format!("{ts},{name},{value},{aux}");
        }
        let from = (at - self.base) as usize;
        String::from_utf8_lossy(&self.buf[from..from + aux as usize]).into_owned()
    }
}

/// What a decoder sends: a piece of its current job, or the job's end.
enum Piece {
    Part(Decoded),
    Done,
    Failed(String),
}

/// Decodes `jobs` on `threads` threads (job `j` on thread `j % threads`,
/// each with its own `decoder` state; each thread two pieces ahead at most)
/// and hands their pieces to `take` on this thread, in job order. With one
/// thread, all of it runs on this one. Ends early at a stop.
pub(super) fn in_order<J: Send, D>(
    jobs: Vec<J>,
    threads: usize,
    stop: &std::sync::atomic::AtomicBool,
    decoder: impl Fn() -> Result<D, String> + Sync,
    decode: impl Fn(&mut D, J, &mut dyn FnMut(Decoded) -> bool) -> Result<(), String> + Sync,
    mut take: impl FnMut(Decoded),
) -> Result<(), String> {
    let stopped = || stop.load(std::sync::atomic::Ordering::Relaxed);
    // The test hook of a slow input: a pause per piece handed over, so a
    // run lasts long enough for its checkpoints to be cut at any of them.
    let pause = std::env::var("PLANTFLOW_TEST_SLOW_SOURCE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(std::time::Duration::from_millis);
    let mut take = move |c: Decoded| {
        if let Some(d) = pause {
            std::thread::sleep(d);
        }
        take(c)
    };
    let k = threads.max(1).min(jobs.len().max(1));
    if k == 1 {
        let mut d = decoder()?;
        for job in jobs {
            if stopped() {
                break;
            }
            decode(&mut d, job, &mut |c| {
                take(c);
                true
            })?;
        }
        return Ok(());
    }
    let mut mine: Vec<Vec<J>> = (0..k).map(|_| Vec::new()).collect();
    let count = jobs.len();
    for (j, job) in jobs.into_iter().enumerate() {
        mine[j % k].push(job);
    }
    std::thread::scope(|scope| {
        let mut pieces: Vec<Receiver<Piece>> = Vec::new();
        for list in mine {
            let (tx, rx) = sync_channel(2);
            pieces.push(rx);
            let (decoder, decode) = (&decoder, &decode);
            let spawned = std::thread::Builder::new()
                .name("plantflow-decode".into())
                .spawn_scoped(scope, move || {
                    let mut d = match decoder() {
                        Ok(d) => d,
                        Err(e) => return drop(tx.send(Piece::Failed(e))),
                    };
                    for job in list {
                        if stopped() {
                            return;
                        }
                        let sent = decode(&mut d, job, &mut |c| tx.send(Piece::Part(c)).is_ok());
                        let end = match sent {
                            Ok(()) => Piece::Done,
                            Err(e) => Piece::Failed(e),
                        };
                        let failed = matches!(end, Piece::Failed(_));
                        if tx.send(end).is_err() || failed {
                            return;
                        }
                    }
                });
            spawned.map_err(|e| format!("cannot start a decoder: {e}"))?;
        }
        for j in 0..count {
            loop {
                if stopped() {
                    return Ok(());
                }
                match pieces[j % k].recv() {
                    Ok(Piece::Part(c)) => take(c),
                    Ok(Piece::Done) => break,
                    Ok(Piece::Failed(e)) => return Err(e),
                    // A decoder stopped (the run is stopping).
                    Err(_) => return Ok(()),
                }
            }
        }
        Ok(())
    })
}

/// Buffers of chunks handed over, for the decoders to fill again (a fresh
/// megabyte per chunk costs page faults).
#[derive(Default)]
pub(super) struct Spare(std::sync::Mutex<Vec<(Vec<u8>, Vec<Row>)>>);

impl Spare {
    pub(super) fn take(&self) -> (Vec<u8>, Vec<Row>) {
        let spare = self.0.lock().ok().and_then(|mut s| s.pop());
        spare.unwrap_or_else(|| {
            (
                Vec::with_capacity(super::chunks::CHUNK as usize + 64 * 1024),
                Vec::with_capacity(super::chunks::CHUNK as usize / 48),
            )
        })
    }

    fn give(&self, mut buf: Vec<u8>, mut rows: Vec<Row>) {
        buf.clear();
        rows.clear();
        if let Ok(mut s) = self.0.lock() {
            s.push((buf, rows));
        }
    }
}

/// Hands decoded chunks to the normaliser, with their positions.
pub(super) struct Feed<'a> {
    pub(super) tags: Arc<TagRegistry>,
    /// Positions are byte offsets (a CSV file): the bytes read are counted.
    pub(super) bytes: bool,
    pub(super) counted: u64,
    pub(super) end: u64,
    /// Where a chunk's buffers go back to, for the next chunk.
    pub(super) spare: Option<&'a Spare>,
}

impl Feed<'_> {
    pub(super) fn take(&mut self, n: &mut Normalizer, mut chunk: Decoded) {
        let mut rows = std::mem::take(&mut chunk.rows);
        let mut rest = rows.drain(..);
        while let Some(row) = rest.next() {
            if let Some(Row::Sample { tag, .. }) = rest.as_slice().get(AHEAD) {
                n.prefetch(*tag);
            }
            let at = row.at();
            n.set_position(at);
            if self.bytes {
                n.bytes_in(at.saturating_sub(self.counted));
            }
            self.counted = at;
            hand_over(n, row, &chunk, &self.tags);
        }
        drop(rest);
        self.end = chunk.end;
        if let Some(spare) = self.spare {
            spare.give(chunk.buf, rows);
        }
    }

    /// Everything before the end of the last chunk has been handed over.
    pub(super) fn finish(&mut self, n: &mut Normalizer) {
        n.set_position(self.end);
        if self.bytes {
            n.bytes_in(self.end.saturating_sub(self.counted));
        }
    }
}

fn hand_over(n: &mut Normalizer, row: Row, chunk: &Decoded, tags: &TagRegistry) {
    match row {
        Row::Sample {
            at,
            aux,
            ts,
            tag,
            value,
            quality,
        } => {
            let text = || chunk.text(at, (ts, tag, value, aux), tags);
            n.row_id(ts, tag, value, quality, &text)
        }
        Row::Unknown(u) => n.unknown_tag(&u.tag, u.ts, u.value, &|| u.raw.to_string()),
        Row::Bad(b) => n.reject(&b.reason, b.raw),
    }
}

/// What a row says, for comparing in tests.
#[cfg(test)]
pub(super) fn show(r: &Row) -> String {
    match r {
        Row::Sample {
            at,
            aux,
            ts,
            tag,
            value,
            quality,
        } => format!("{at}+{aux} {ts} #{tag} {value:?} {quality:?}"),
        Row::Unknown(u) => format!(
            "{} unknown {} {} {:?} {}",
            u.at, u.tag, u.ts, u.value, u.raw
        ),
        Row::Bad(b) => format!("{} bad {}: {}", b.at, b.reason, b.raw),
    }
}
