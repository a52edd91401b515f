//! Criterion benches of the per-row stages, each through the code a run uses
//! (`plantflow::bench`): the replay CSV reader, decoding (reader, normaliser
//! and bridge), and pre-aggregation (the timely window operator on decoded
//! batches). Throughput is reported in rows.
//!
//! ```text
//! cargo bench --bench stages                 # 200 tags x 600 s = 120,000 rows
//! ```

use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

fn workload() -> (PathBuf, u64) {
    let (tags, seconds) = (200usize, 600u64);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-data");
    (
        plantflow::bench::workload(&root, tags, seconds),
        tags as u64 * seconds,
    )
}

fn stages(c: &mut Criterion) {
    let (dir, rows) = workload();
    let csv = dir.join("samples.csv");
    let mut g = c.benchmark_group("stages");
    g.throughput(Throughput::Elements(rows));
    g.sample_size(20);
    g.bench_function("csv_read", |b| {
        b.iter(|| plantflow::bench::csv_rows(&csv).expect("read"))
    });
    g.bench_function("decode", |b| {
        b.iter(|| plantflow::bench::decode_csv(&dir).expect("decode"))
    });
    let batches = plantflow::bench::decode_csv(&dir).expect("decode");
    g.bench_function("preaggregate", |b| {
        b.iter_batched(
            || batches.clone(),
            plantflow::bench::preaggregate,
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, stages);
criterion_main!(benches);
