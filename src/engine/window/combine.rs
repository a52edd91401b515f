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
                // Every row before a checkpoint's time is in (nothing after
                // it comes until it is over): the windows sent before that
                // time go, then what is open is its part. A window sent at
                // or after it (its end is past the time: the input may pass
                // both at once) is in the part, not sent before it.
                let asked = barrier.wants("combine");
                let asked = asked.filter(|at| crate::engine::checkpoint::ready(*at, f, None));
                let upto =
                    |limit: Option<u64>| move |end: i64| limit.is_none_or(|l| (l as i64) >= end);
                let mut send = |open: &mut BTreeMap<i64, FxHashMap<TagId, Acc>>,
                                due: &dyn Fn(i64) -> bool| {
                    // Windows no on-time row can reach any more.
                    while let Some(entry) = open.first_entry() {
                        if !due(*entry.key()) {
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
                };
                if let Some(at) = asked {
                    send(&mut open, &upto(Some(at.min(f.unwrap_or(at)))));
                    barrier.put("combine", &saved_parts(&open));
                }
                send(&mut open, &upto(f));
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

    /// A checkpoint whose time the input passes together with a window's
    /// end: the window is in the checkpoint's part (its rows are before
    /// the checkpoint) and sent after it, at the last time before its end.
    /// Before, it was sent first and the part left it out, so a cluster
    /// started from that checkpoint lost its rows.
    #[test]
    fn a_window_whose_end_comes_with_a_checkpoint_is_in_the_checkpoint() {
        use crate::engine::checkpoint::Checkpoints;
        use std::cell::RefCell;
        use std::rc::Rc;
        use timely::dataflow::operators::core::Inspect;
        use timely::dataflow::operators::Probe;
        use timely::dataflow::{InputHandle, ProbeHandle};
        let geo = Geometry {
            size_ms: 60_000,
            period_ms: 60_000,
            retention_ms: 3_600_000,
        };
        let (saved, sent) = timely::execute_directly(move |worker| {
            let ck = Checkpoints::default();
            let mut input = InputHandle::<u64, CapacityContainerBuilder<Vec<Sample>>>::new();
            let probe = ProbeHandle::new();
            let sent: Rc<RefCell<Vec<(u64, i64, u32)>>> = Rc::default();
            let s2 = sent.clone();
            worker.dataflow::<u64, _, _>(|scope| {
                combine(input.to_stream(scope), geo, &ck)
                    .inspect_core(move |c| {
                        if let Ok((t, data)) = c {
                            for p in data.iter() {
                                if let Piece::Part(start, a) = p {
                                    let t = t.iter().next().copied().unwrap_or(0);
                                    s2.borrow_mut().push((t, *start, agg(a).count as u32));
                                }
                            }
                        }
                    })
                    .probe_with(&probe);
            });
            input.advance_to(1);
            input.send(sample(1_000, 2.0));
            input.send(sample(2_000, 3.0));
            input.advance_to(2);
            while probe.less_than(&2) {
                worker.step();
            }
            // A cut at 5, then the input passes it and the window's end.
            ck.barrier.ask(5);
            input.advance_to(60_001);
            while probe.less_than(&60_001) {
                worker.step();
            }
            let (at, parts, _) = ck.barrier.take().expect("combine put its part");
            assert_eq!(at, 5);
            let saved: Vec<(i64, Vec<Acc>)> = postcard::from_bytes(&parts[0].1).unwrap();
            drop(input);
            while worker.step() {}
            let sent = sent.borrow().clone();
            (saved, sent)
        });
        assert_eq!(saved.len(), 1, "the open window is in the part: {saved:?}");
        assert_eq!((saved[0].0, agg(&saved[0].1[0]).count), (60_000, 2));
        assert_eq!(sent, vec![(59_999, 0, 2)], "sent after the checkpoint");
    }
}
