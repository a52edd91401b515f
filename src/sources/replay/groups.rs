//! A Parquet replay file decoded by row groups, on as many threads as there
//! are workers, and handed over in row order (as a CSV file's chunks are:
//! see [`super::parallel`]). A row group is sent on in batches, so each
//! decoder holds two batches ahead at most. Positions are row indexes.

use std::borrow::Cow;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{
    DataType, Field, Float64Type, Int32Type, Int64Type, Schema, SchemaRef, TimeUnit, UInt64Type,
};
use parquet::arrow::arrow_reader::{
    ArrowReaderOptions, ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder, RowSelection,
    RowSelector,
};

use super::lookup::Lookup;
use super::parallel::{in_order, Bad, Decoded, Feed, Row, Unknown};
use crate::ingest::normalize::Normalizer;
use crate::model::{Quality, TagId};

/// Reads the whole file (from where the input log says it goes on).
pub fn pump(
    path: &Path,
    n: &mut Normalizer,
    batch_rows: usize,
    decoders: usize,
) -> Result<(), String> {
    let file = Groups::open(path, batch_rows)?;
    // A restart goes on after the rows the input log has.
    let skip = n.take_resumed_position().unwrap_or(0).min(file.total);
    let tags = n.ctx().tags.clone();
    let stop = n.ctx().stop.clone();
    let decoder = || Ok((Lookup::new(&tags), Dict::default(), None));
    let decode = |state: &mut State, job, emit: &mut dyn FnMut(Decoded) -> bool| {
        file.decode(state, job, emit)
    };
    let mut feed = Feed {
        tags: tags.clone(),
        bytes: false,
        counted: skip,
        end: skip,
        spare: None,
    };
    in_order(
        file.jobs(skip, (JOB_ROWS, decoders), |j| n.ctx().reads_job(j)),
        decoders,
        &stop,
        decoder,
        decode,
        |c| feed.take(n, c),
    )?;
    if !n.ctx().stopped() {
        feed.finish(n);
    }
    Ok(())
}

/// A Parquet file's row groups.
struct Groups<'a> {
    path: &'a Path,
    /// The schema to read with (see [`tag_as_dictionary`]).
    hint: Option<SchemaRef>,
    /// The first row of each group, and how many rows there are.
    first: Vec<u64>,
    total: u64,
    batch_rows: usize,
}

/// Rows of a group to read: the group's index, the first row (of the
/// file) and how many; and every part (offset in the group, rows) of the
/// group the same decoder reads (one reader selects them all, so a page is
/// decoded once per decoder, not once per job).
#[derive(Clone)]
struct Job {
    group: usize,
    at: u64,
    rows: usize,
    mine: Arc<Vec<(usize, usize)>>,
}

/// A decoder's reader over the parts of a group it reads, and the rows
/// of its last batch not handed over yet.
struct Reading {
    mine: Arc<Vec<(usize, usize)>>,
    reader: ParquetRecordBatchReader,
    left: Option<RecordBatch>,
}

/// A decoder's state.
type State = (Lookup, Dict, Option<Reading>);

/// Rows of a job: a decoder runs two jobs ahead of the hand-over at most
/// (a row group can hold millions), and a page a job boundary cuts is
/// decoded by both decoders.
const JOB_ROWS: u64 = 1 << 16;

impl<'a> Groups<'a> {
    fn open(path: &'a Path, batch_rows: usize) -> Result<Groups<'a>, String> {
        let builder = ParquetRecordBatchReaderBuilder::try_new(open(path)?)
            .map_err(|e| format!("{}: not a Parquet file: {e}", path.display()))?;
        let mut first = Vec::new();
        let mut total = 0u64;
        for g in builder.metadata().row_groups() {
            first.push(total);
            total += g.num_rows().max(0) as u64;
        }
        Ok(Groups {
            path,
            hint: tag_as_dictionary(builder.schema()),
            first,
            total,
            batch_rows,
        })
    }

    /// The rows from row `skip` on that this process reads, in jobs of at
    /// most `job_rows` rows within a group, for `decoders` decoders (job
    /// `j` of the list on decoder `j % decoders`, as [`in_order`] deals
    /// them). Jobs are cut and numbered from each group's first row, and
    /// `mine(j)` says whether the file's job `j` is this process's: the
    /// share is the same whatever `skip` is.
    fn jobs(
        &self,
        skip: u64,
        (job_rows, decoders): (u64, usize),
        mine: impl Fn(usize) -> bool,
    ) -> Vec<Job> {
        let mut parts = Vec::new();
        let mut j = 0;
        for (g, &start) in self.first.iter().enumerate() {
            let end = self.first.get(g + 1).copied().unwrap_or(self.total);
            let mut at = start;
            while at < end {
                let to = (at + job_rows.max(1)).min(end);
                if mine(j) && to > skip {
                    let from = at.max(skip);
                    parts.push((g, from, (from - start) as usize, (to - from) as usize));
                }
                (at, j) = (to, j + 1);
            }
        }
        let k = decoders.max(1).min(parts.len().max(1));
        let mut mine: std::collections::HashMap<(usize, usize), Vec<(usize, usize)>> =
            Default::default();
        for (j, (g, _, offset, rows)) in parts.iter().enumerate() {
            mine.entry((j % k, *g)).or_default().push((*offset, *rows));
        }
        let mine: std::collections::HashMap<_, _> = mine
            .into_iter()
            .map(|(key, v)| (key, Arc::new(v)))
            .collect();
        parts
            .into_iter()
            .enumerate()
            .map(|(j, (group, at, _, rows))| Job {
                group,
                at,
                rows,
                mine: mine[&(j % k, group)].clone(),
            })
            .collect()
    }

    /// A reader over the parts of `job`'s group that its decoder reads.
    fn reading(&self, job: &Job) -> Result<Reading, String> {
        let file = open(self.path)?;
        let builder = match &self.hint {
            Some(h) => ParquetRecordBatchReaderBuilder::try_new_with_options(
                file,
                ArrowReaderOptions::new().with_schema(h.clone()),
            ),
            None => ParquetRecordBatchReaderBuilder::try_new(file),
        };
        let mut selectors = Vec::new();
        let mut pos = 0;
        for &(offset, rows) in job.mine.iter() {
            if offset > pos {
                selectors.push(RowSelector::skip(offset - pos));
            }
            selectors.push(RowSelector::select(rows));
            pos = offset + rows;
        }
        let reader = builder
            .and_then(|b| {
                b.with_row_groups(vec![job.group])
                    .with_row_selection(RowSelection::from(selectors))
                    .with_batch_size(self.batch_rows.max(1024))
                    .build()
            })
            .map_err(|e| format!("{}: {e}", self.path.display()))?;
        Ok(Reading {
            mine: job.mine.clone(),
            reader,
            left: None,
        })
    }

    /// Decodes a job's rows in batches, handing each to `emit`.
    fn decode(
        &self,
        (lookup, dict, reading): &mut State,
        job: Job,
        emit: &mut dyn FnMut(Decoded) -> bool,
    ) -> Result<(), String> {
        let fresh = !matches!(reading, Some(r) if Arc::ptr_eq(&r.mine, &job.mine));
        if fresh {
            *reading = Some(self.reading(&job)?);
        }
        let Some(r) = reading.as_mut() else {
            return Ok(());
        };
        // The job is handed over whole: a decoder runs up to two jobs ahead.
        let mut rows = Vec::with_capacity(job.rows);
        let (mut at, mut need) = (job.at, job.rows);
        while need > 0 {
            let batch = match r.left.take() {
                Some(b) => b,
                None => match r.reader.next() {
                    Some(b) => b.map_err(|e| format!("{}: {e}", self.path.display()))?,
                    None => {
                        let g = job.group;
                        return Err(format!(
                            "{}: row group {g} ended early",
                            self.path.display()
                        ));
                    }
                },
            };
            let take = batch.num_rows().min(need);
            if take < batch.num_rows() {
                r.left = Some(batch.slice(take, batch.num_rows() - take));
            }
            let batch = batch.slice(0, take);
            decode_batch(&batch, at, self.path, lookup, dict, &mut rows)?;
            (at, need) = (at + take as u64, need - take);
        }
        emit(Decoded {
            rows,
            buf: Vec::new(),
            base: 0,
            end: at,
        });
        Ok(())
    }
}

fn open(path: &Path) -> Result<File, String> {
    File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))
}

/// The file's schema with a string `tag` column read as a dictionary:
/// historian exports are dictionary-encoded, so each distinct tag is looked
/// up once per dictionary instead of once per row.
fn tag_as_dictionary(schema: &SchemaRef) -> Option<SchemaRef> {
    let i = schema.index_of("tag").ok()?;
    if schema.field(i).data_type() != &DataType::Utf8 {
        return None;
    }
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields[i] = fields[i].clone().with_data_type(DataType::Dictionary(
        Box::new(DataType::Int32),
        Box::new(DataType::Utf8),
    ));
    Some(Arc::new(Schema::new_with_metadata(
        fields,
        schema.metadata().clone(),
    )))
}

/// Tag ids of the current dictionary's entries, filled on first use. The
/// dictionary is held, so its buffer's address names it (a freed one could
/// be reused by the next).
#[derive(Default)]
struct Dict {
    values: Option<ArrayRef>,
    ids: Vec<Option<Option<TagId>>>,
}

impl Dict {
    /// Whether `values` is the dictionary held.
    fn holds(&self, values: &ArrayRef) -> bool {
        let data = |a: &ArrayRef| {
            let d = a.to_data();
            (d.buffers().get(1).map(|b| b.as_ptr() as usize), d.len())
        };
        self.values
            .as_ref()
            .is_some_and(|v| data(v) == data(values))
    }
}

/// A batch's columns, cast to what the rows need.
fn column(batch: &RecordBatch, name: &str, to: &DataType, path: &Path) -> Result<ArrayRef, String> {
    let c = batch
        .column_by_name(name)
        .ok_or_else(|| format!("{}: no `{name}` column", path.display()))?;
    let c = match c.data_type() {
        DataType::Timestamp(TimeUnit::Millisecond, _) => arrow::compute::cast(c, &DataType::Int64),
        DataType::Timestamp(_, _) => {
            arrow::compute::cast(c, &DataType::Timestamp(TimeUnit::Millisecond, None))
                .and_then(|c| arrow::compute::cast(&c, &DataType::Int64))
        }
        DataType::Dictionary(_, _) if to == &DataType::Utf8 => Ok(c.clone()),
        _ => arrow::compute::cast(c, to),
    };
    c.map_err(|e| format!("{}: column `{name}`: {e}", path.display()))
}

/// One batch's rows, checked as [`Normalizer::row`] checks them; the first
/// is row `at` of the file.
fn decode_batch(
    batch: &RecordBatch,
    at: u64,
    path: &Path,
    lookup: &mut Lookup,
    dict: &mut Dict,
    rows: &mut Vec<Row>,
) -> Result<(), String> {
    let ts = column(batch, "ts", &DataType::Int64, path)?;
    let tag = column(batch, "tag", &DataType::Utf8, path)?;
    let value = column(batch, "value", &DataType::Float64, path)?;
    let quality = match batch.column_by_name("quality") {
        Some(_) => Some(column(batch, "quality", &DataType::UInt64, path)?),
        None => None,
    };
    let ts = ts.as_primitive::<Int64Type>();
    let dictionary = tag.as_dictionary_opt::<Int32Type>();
    let (keys, names) = match dictionary {
        Some(d) => (Some(d.keys()), d.values().as_string::<i32>()),
        None => (None, tag.as_string::<i32>()),
    };
    if let Some(d) = dictionary {
        if !dict.holds(d.values()) {
            dict.values = Some(d.values().clone());
            dict.ids.clear();
            dict.ids.resize(names.len(), None);
        }
    }
    let value = value.as_primitive::<Float64Type>();
    let quality = quality.as_ref().map(|q| q.as_primitive::<UInt64Type>());
    for i in 0..batch.num_rows() {
        let at = at + i as u64;
        let name = |i: usize| match keys {
            Some(k) => names.value(k.value(i) as usize),
            None => names.value(i),
        };
        let code = quality.map(|q| q.value(i)).unwrap_or(0);
        // A null field is empty in the row's text.
        let raw = || {
            let tag = if tag.is_null(i) { "" } else { name(i) };
            let ts = (!ts.is_null(i)).then(|| ts.value(i).to_string());
            let value = (!value.is_null(i)).then(|| value.value(i).to_string());
            let (ts, value) = (ts.unwrap_or_default(), value.unwrap_or_default());
            format!("{ts},{tag},{value},{code}")
        };
        let bad = |reason: &'static str| {
            Row::Bad(Box::new(Bad {
                at,
                reason: Cow::Borrowed(reason),
                raw: raw(),
            }))
        };
        if ts.is_null(i) || tag.is_null(i) || value.is_null(i) {
            rows.push(bad("null field"));
            continue;
        }
        let code = quality.filter(|q| !q.is_null(i)).map_or(0, |q| q.value(i));
        let Some(q) = Quality::from_code(code) else {
            rows.push(bad("invalid quality"));
            continue;
        };
        let (ts, v) = (ts.value(i), value.value(i));
        if !v.is_finite() {
            rows.push(bad("value is NaN or infinite"));
            continue;
        }
        let id = match keys {
            Some(k) => {
                let key = k.value(i) as usize;
                match dict.ids[key] {
                    Some(id) => id,
                    None => {
                        let id = lookup.id(names.value(key));
                        dict.ids[key] = Some(id);
                        id
                    }
                }
            }
            None => lookup.id(names.value(i)),
        };
        rows.push(match id {
            Some(tag) => Row::Sample {
                at,
                aux: code as u32,
                ts,
                tag,
                value: v,
                quality: q,
            },
            None => Row::Unknown(Box::new(Unknown {
                at,
                ts,
                value: v,
                tag: name(i).into(),
                raw: raw().into(),
            })),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::parallel::show;
    use super::*;
    use crate::ingest::TagRegistry;

    /// Twelve rows in three groups of four: good rows, a null, a quality
    /// code out of range, a NaN and an unknown tag.
    fn file(dir: &Path) -> std::path::PathBuf {
        use arrow::array::{Float64Array, Int64Array, StringArray, UInt64Array};
        let ts: Vec<Option<i64>> = (0..12).map(|i| Some(1_767_596_100_000 + i)).collect();
        let mut tag: Vec<Option<&str>> = (0..12).map(|i| Some(["a", "b"][i % 2])).collect();
        let mut value: Vec<Option<f64>> = (0..12).map(|i| Some(i as f64 + 0.5)).collect();
        let mut quality: Vec<Option<u64>> = (0..12).map(|i| Some(i % 2)).collect();
        value[2] = None;
        quality[5] = Some(1 << 33);
        value[6] = Some(f64::NAN);
        tag[9] = Some("zz");
        quality[11] = Some(0x4000_0000); // an OPC UA uncertain code
        let batch = RecordBatch::try_from_iter(vec![
            ("ts", Arc::new(Int64Array::from(ts)) as ArrayRef),
            ("tag", Arc::new(StringArray::from(tag)) as ArrayRef),
            ("value", Arc::new(Float64Array::from(value)) as ArrayRef),
            ("quality", Arc::new(UInt64Array::from(quality)) as ArrayRef),
        ])
        .unwrap();
        let path = dir.join("s.parquet");
        let props = parquet::file::properties::WriterProperties::builder()
            .set_max_row_group_row_count(Some(4))
            .build();
        let f = File::create(&path).unwrap();
        let mut w = parquet::arrow::ArrowWriter::try_new(f, batch.schema(), Some(props)).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        path
    }

    #[test]
    fn groups_on_several_threads_read_every_row_once_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = file(dir.path());
        let tags = Arc::new(TagRegistry::default());
        tags.intern("a");
        tags.intern("b");
        let t = |i: u64| 1_767_596_100_000 + i;
        let want: Vec<String> = vec![
            format!("0+0 {} #0 0.5 Good", t(0)),
            format!("1+1 {} #1 1.5 Uncertain", t(1)),
            format!("2 bad null field: {},a,,0", t(2)),
            format!("3+1 {} #1 3.5 Uncertain", t(3)),
            format!("4+0 {} #0 4.5 Good", t(4)),
            format!("5 bad invalid quality: {},b,5.5,8589934592", t(5)),
            format!("6 bad value is NaN or infinite: {},a,NaN,0", t(6)),
            format!("7+1 {} #1 7.5 Uncertain", t(7)),
            format!("8+0 {} #0 8.5 Good", t(8)),
            format!("9 unknown zz {} 9.5 {},zz,9.5,1", t(9), t(9)),
            format!("10+0 {} #0 10.5 Good", t(10)),
            format!("11+1073741824 {} #1 11.5 Uncertain", t(11)),
        ];
        let groups = Groups::open(&path, 2).unwrap();
        assert_eq!((groups.first.clone(), groups.total), (vec![0, 4, 8], 12));
        let stop = std::sync::atomic::AtomicBool::new(false);
        for threads in [1, 2, 3] {
            for (skip, job_rows) in [(0, 1 << 16), (5, 1 << 16), (8, 3), (12, 1), (1, 3), (2, 1)] {
                let mut got = Vec::new();
                let mut ends = Vec::new();
                in_order(
                    groups.jobs(skip, (job_rows, threads), |_| true),
                    threads,
                    &stop,
                    || Ok((Lookup::new(&tags), Dict::default(), None)),
                    |s: &mut State, job, emit: &mut dyn FnMut(Decoded) -> bool| {
                        groups.decode(s, job, emit)
                    },
                    |d| {
                        got.extend(d.rows.iter().map(show));
                        ends.push(d.end);
                    },
                )
                .unwrap();
                assert_eq!(
                    got,
                    want[skip as usize..],
                    "{threads} threads, from row {skip}"
                );
                assert!(ends.windows(2).all(|w| w[0] < w[1]), "{ends:?}");
                assert_eq!(ends.last().copied().unwrap_or(12), 12);
            }
        }
        // A cluster's processes: each reads its share of the jobs; together
        // every row once; and a process going on from any row it reached
        // reads the rest of its own share, whatever the decoders.
        let read = |skip, job_rows, threads, share: (usize, usize)| {
            let mut got = Vec::new();
            in_order(
                groups.jobs(skip, (job_rows, threads), |j| j % share.1 == share.0),
                threads,
                &stop,
                || Ok((Lookup::new(&tags), Dict::default(), None)),
                |s: &mut State, job, emit: &mut dyn FnMut(Decoded) -> bool| {
                    groups.decode(s, job, emit)
                },
                |d| got.extend(d.rows.iter().map(|r| (r.at(), show(r)))),
            )
            .unwrap();
            got
        };
        for (threads, job_rows, of) in [(1, 3, 2), (2, 1, 2), (2, 3, 3), (3, 1, 3), (2, 2, 2)] {
            let mut all = Vec::new();
            for me in 0..of {
                let fresh = read(0, job_rows, threads, (me, of));
                assert!(!fresh.is_empty(), "process {me} of {of} reads a share");
                for skip in 1..=12 {
                    let rest: Vec<_> = fresh.iter().filter(|r| r.0 >= skip).cloned().collect();
                    let got = read(skip, job_rows, threads, (me, of));
                    assert_eq!(
                        got, rest,
                        "process {me} of {of}, {threads} threads, from {skip}"
                    );
                }
                all.extend(fresh);
            }
            all.sort();
            let all: Vec<String> = all.into_iter().map(|r| r.1).collect();
            assert_eq!(
                all, want,
                "{of} processes, {threads} threads, {job_rows} a job"
            );
        }
    }
}
