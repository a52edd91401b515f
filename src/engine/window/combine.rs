//! A cluster's samples combined before they cross processes.
//!
//! On one process, every worker's rows go straight into its window
//! operator. In a cluster, a window's rows may be read by several processes
//! (a file's chunks, a shared subscription), and half of all samples or
//! more would cross the network to their tag's worker. [`combine`] folds
//! each worker's on-time rows into a partial window per tag ([`Piece::Part`])
//! and sends one per window once no on-time row of it can come any more:
//! on workload v1, 60 samples of a minute cross as one record.
//!
//! The partial is sent at the last time before its window's end, so the
//! window operator takes it on time, as it would have taken the rows, and
//! closes the window when it would have. This operator's capability follows
//! its input's frontier (it is below a window's end until the window is
//! sent), so nothing downstream waits for it longer than for the rows. A
//! late row (its window already closed at the time it is sent) goes on
//! alone at its own time ([`Piece::Late`]), so the window operator corrects
//! the window with it exactly as it would without combining.
//!
//! The partial windows not sent yet are state: a checkpoint holds them
//! (part `combine`), or a cluster started again would lose their rows.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::Stream;

use super::acc::Acc;
use crate::ingest::Geometry;
use crate::model::{Sample, TagId};

/// What crosses to a tag's window operator in a cluster.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum Piece {
    /// On-time rows of one tag's window (starting at `.0`) on one worker.
    Part(i64, Acc),
    /// A row that arrived after its window closed.
    Late(Sample),
}

impl Piece {
    pub fn tag(&self) -> TagId {
        match self {
            Piece::Part(_, a) => a.tag,
            Piece::Late(s) => s.tag,
        }
    }
}

/// Folds `samples` into partial windows, each sent once the input frontier
/// reaches its window's end (at the time just before it); late rows pass.
pub fn combine<'s>(
    samples: Stream<'s, u64, Vec<Sample>>,
    geo: Geometry,
    ck: &crate::engine::checkpoint::Checkpoints,
) -> Stream<'s, u64, Vec<Piece>> {
    let (barrier, restore) = (ck.barrier.clone(), ck.restore.clone());
    let scope = samples.scope();
    samples.unary_frontier::<CapacityContainerBuilder<Vec<Piece>>, _, _, _>(
        Pipeline,
        "combine",
        move |cap, info| {
            let mut cap = Some(cap);
            let mut open: BTreeMap<i64, FxHashMap<TagId, Acc>> = BTreeMap::new();
            let saved: Option<Vec<(i64, Vec<Acc>)>> = restore.take("combine");
            for (end, parts) in saved.into_iter().flatten() {
                open.insert(end, parts.into_iter().map(|a| (a.tag, a)).collect());
            }
            barrier.register("combine", Some(scope.activator_for(info.address.clone())));
            let mut late: Vec<(u64, Sample)> = Vec::new();
            move |(input, frontier), output| {
                input.for_each_stamp(|stamp, data| {
                    let t = stamp.least().copied().unwrap_or(0);
                    for batch in data {
                        for s in batch.drain(..) {
                            let start = geo.start_of(s.ts);
                            let end = start + geo.size_ms;
                            if (t as i64) >= end {
                                late.push((t, s));
                                continue;
                            }
                            let at = (s.ts - start) as u32;
                            open.entry(end)
                                .or_default()
                                .entry(s.tag)
                                .and_modify(|a| a.add(&s, at))
                                .or_insert_with(|| Acc::new(&s, at));
                        }
                    }
                });
                let Some(c) = cap.as_mut() else { return };
                for (t, s) in late.drain(..) {
                    output.session(&c.delayed(&t)).give(Piece::Late(s));
                }
                let f = frontier.frontier().iter().min().copied();
                // Windows no on-time row can reach any more.
                while let Some(entry) = open.first_entry() {
                    if f.is_some_and(|f| (f as i64) < *entry.key()) {
                        break;
                    }
                    let (end, w) = entry.remove_entry();
                    let start = end - geo.size_ms;
                    let mut parts: Vec<Acc> = w.into_values().collect();
                    parts.sort_unstable_by_key(|a| a.tag);
                    // The capability is at the frontier of the last
                    // activation, which was below `end`.
                    let at = c.delayed(&(end as u64 - 1));
                    output
                        .session(&at)
                        .give_iterator(parts.into_iter().map(|a| Piece::Part(start, a)));
                }
                // Every row before a checkpoint's time is in: what is open
                // is its part (nothing after it comes until it is over).
                if let Some(at) = barrier.wants("combine") {
                    if crate::engine::checkpoint::ready(at, f, None) {
                        barrier.put("combine", &saved_parts(&open));
                    }
                }
                match f {
                    Some(h) if h > *c.time() => c.downgrade(&h),
                    Some(_) => {}
                    None => cap = None,
                }
            }
        },
    )
}

/// The open partial windows as a checkpoint keeps them: by window end,
/// each window's parts in tag order.
fn saved_parts(open: &BTreeMap<i64, FxHashMap<TagId, Acc>>) -> Vec<(i64, Vec<Acc>)> {
    open.iter()
        .map(|(end, w)| {
            let mut parts: Vec<Acc> = w.values().cloned().collect();
            parts.sort_unstable_by_key(|a| a.tag);
            (*end, parts)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Quality, WindowAgg};

    fn sample(at: i64, value: f64) -> Sample {
        Sample {
            tag: 7,
            ts: at,
            value,
            quality: Quality::Good,
        }
    }

    fn fold(rows: &[Sample]) -> Acc {
        let mut a = Acc::new(&rows[0], rows[0].ts as u32);
        for s in &rows[1..] {
            a.add(s, s.ts as u32);
        }
        a
    }

    fn agg(a: &Acc) -> WindowAgg {
        a.agg(0, 60_000)
    }

    /// A window's rows split between processes (contiguous runs, or every
    /// other run as a file's chunks are), folded apart and merged: count,
    /// min, max, first and last equal the rows folded one by one; the sum
    /// (so the mean) to the last bits.
    #[test]
    fn partial_windows_merged_equal_the_rows_folded_one_by_one() {
        // 60 rows a second apart, out of time order in places.
        let rows: Vec<Sample> = (0..60)
            .map(|i| {
                let at = if i % 13 == 5 {
                    (60 - i) * 1000
                } else {
                    i * 1000 + 7
                };
                sample(at, ((i * 37) % 11) as f64 * 0.3 - 1.1)
            })
            .collect();
        let want = agg(&fold(&rows));
        for k in [1, 7, 30, 59] {
            let mut a = fold(&rows[..k]);
            a.merge(&fold(&rows[k..]));
            let got = agg(&a);
            assert_eq!(
                (got.count, got.min, got.max, got.first, got.last),
                (want.count, want.min, want.max, want.first, want.last),
                "split at {k}"
            );
            assert!((got.mean.0 - want.mean.0).abs() < 1e-12, "split at {k}");
        }
        // Every other run of 10 rows on one process, the rest on another.
        let run = |odd: usize| -> Vec<Sample> {
            rows.iter()
                .enumerate()
                .filter(|(i, _)| (i / 10) % 2 == odd)
                .map(|(_, s)| *s)
                .collect()
        };
        let (mine, theirs) = (run(0), run(1));
        let mut a = fold(&mine);
        a.merge(&fold(&theirs));
        let got = agg(&a);
        assert_eq!(
            (got.count, got.min, got.max, got.first, got.last),
            (want.count, want.min, want.max, want.first, want.last)
        );
    }
}
