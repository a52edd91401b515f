//! `plantflow gen workload`: a deterministic generator of the workload v1
//! file formats (WORKLOAD.md) at any size.
//!
//! Same model as the reference fixture: two tags per asset (`power_kw`,
//! `aux_kw`), production runs of 15–45 min with 3–20 min gaps per line, about
//! a third of assets left running while their line is idle, ~0.5 % of rows
//! arriving out of order (up to 5 s late), ~0.1 % bad rows with garbage
//! values and ~1 % uncertain. The same `(tags, seconds, seed)` always gives
//! the same bytes.

use std::collections::BinaryHeap;
use std::io::{BufWriter, Write};
use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Generator parameters.
#[derive(Clone, Debug)]
pub struct Params {
    pub tags: usize,
    pub seconds: u64,
    pub seed: u64,
    pub start_ms: i64,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            tags: 100,
            seconds: 900,
            seed: 7,
            start_ms: 1_767_596_100_000,
        }
    }
}

/// What was generated.
#[derive(Clone, Debug, Default)]
pub struct Manifest {
    pub rows: u64,
    pub bad_rows: u64,
    pub uncertain_rows: u64,
    pub out_of_order_rows: u64,
    pub max_lateness_ms: i64,
    pub assets: usize,
    pub lines: usize,
    pub production_runs: usize,
}

const KINDS: &[&str] = &["compressor", "chiller", "motor", "lighting"];

struct Asset {
    name: String,
    line: usize,
    power_kw: f64,
    aux_kw: f64,
    standby_kw: f64,
    left_running: bool,
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Delayed {
    arrival: std::cmp::Reverse<(i64, i64, usize)>,
    line: String,
}

/// Writes `samples.csv`, `assets.csv`, `tariff.csv`, `production.csv` and `MANIFEST.txt` into `out`.
pub fn generate(p: &Params, out: &Path) -> std::io::Result<Manifest> {
    std::fs::create_dir_all(out)?;
    let mut rng = ChaCha8Rng::seed_from_u64(p.seed);
    let n_assets = p.tags.div_ceil(2).max(1);
    let n_lines = (n_assets * 2).div_ceil(5).max(1);
    let lines: Vec<String> = (0..n_lines)
        .map(|l| format!("site{}/line{}", l / 8 + 1, l % 8 + 1))
        .collect();
    let mut per_line = vec![0usize; n_lines];
    let assets: Vec<Asset> = (0..n_assets)
        .map(|i| {
            let line = i % n_lines;
            per_line[line] += 1;
            Asset {
                name: format!("{}/comp{:02}", lines[line], per_line[line]),
                line,
                power_kw: rng.random_range(20.0..100.0),
                aux_kw: rng.random_range(1.0..4.0),
                standby_kw: rng.random_range(1.0..5.0),
                left_running: rng.random_range(0..3) == 0,
            }
        })
        .collect();

    // Tags: (asset index, is power).
    let mut tags: Vec<(usize, bool, String, i64)> = Vec::with_capacity(p.tags);
    for i in 0..p.tags {
        let a = i / 2;
        let power = i % 2 == 0;
        let name = format!(
            "{}/{}",
            assets[a].name,
            if power { "power_kw" } else { "aux_kw" }
        );
        let phase = rng.random_range(0..1000);
        tags.push((a, power, name, phase));
    }

    write_assets(out, p, &assets, &lines, &tags)?;

    std::fs::write(
        out.join("tariff.csv"),
        "start_hour,end_hour,price_per_kwh\n0,7,0.08\n7,17,0.22\n17,21,0.3\n21,24,0.12\n",
    )?;

    // Production runs per line, covering the whole span.
    let end_ms = p.start_ms + p.seconds as i64 * 1000;
    let (runs, n_runs) = write_production(out, p, &lines, end_ms, &mut rng)?;

    // Samples, in arrival order.
    let mut order: Vec<usize> = (0..tags.len()).collect();
    order.sort_by_key(|&i| (tags[i].3, i));
    let mut m = Manifest {
        assets: n_assets,
        lines: n_lines,
        production_runs: n_runs,
        ..Manifest::default()
    };
    let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(out.join("samples.csv"))?);
    writeln!(w, "ts,tag,value,quality")?;
    let mut delayed: BinaryHeap<Delayed> = BinaryHeap::new();
    let mut seq = 0usize;
    let producing = |line: usize, ts: i64| runs[line].iter().any(|(a, b)| *a <= ts && ts < *b);
    let mut line_buf = String::with_capacity(96);
    for s in 0..p.seconds as i64 {
        let sec = p.start_ms + s * 1000;
        for &i in &order {
            let (a, power, ref name, phase) = tags[i];
            let ts = sec + phase;
            let asset = &assets[a];
            let noise: f64 = rng.random_range(-1.0..1.0);
            let running = asset.left_running || producing(asset.line, ts);
            let mut value = match (power, running) {
                (true, true) => asset.power_kw * (1.0 + 0.05 * noise),
                (true, false) => asset.standby_kw * 0.5 * (1.0 + 0.1 * noise),
                (false, _) => asset.aux_kw * (1.0 + 0.05 * noise),
            };
            let roll: f64 = rng.random();
            let quality = if roll < 0.001 {
                value = 1.0e6 * (1.0 + noise.abs());
                m.bad_rows += 1;
                2
            } else if roll < 0.011 {
                m.uncertain_rows += 1;
                1
            } else {
                0
            };
            line_buf.clear();
            use std::fmt::Write as _;
            let _ = write!(line_buf, "{ts},{name},{value:.3},{quality}");
            m.rows += 1;
            if rng.random_bool(0.005) {
                let delay = rng.random_range(1..5_000);
                m.out_of_order_rows += 1;
                m.max_lateness_ms = m.max_lateness_ms.max(delay);
                seq += 1;
                delayed.push(Delayed {
                    arrival: std::cmp::Reverse((ts + delay, ts, seq)),
                    line: line_buf.clone(),
                });
                continue;
            }
            while let Some(d) = delayed.peek() {
                if d.arrival.0 .0 <= ts {
                    let d = delayed.pop().expect("peeked");
                    writeln!(w, "{}", d.line)?;
                } else {
                    break;
                }
            }
            writeln!(w, "{line_buf}")?;
        }
    }
    while let Some(d) = delayed.pop() {
        writeln!(w, "{}", d.line)?;
    }
    w.flush()?;

    std::fs::write(
        out.join("MANIFEST.txt"),
        format!(
            "workload=plant energy workload v1 (plantflow generator)\ntags={}\nseconds={}\nseed={}\nstart_ms={}\nrows={}\nbad_rows={}\nuncertain_rows={}\nout_of_order_rows={}\nmax_lateness_ms={}\nassets={}\nlines={}\nproduction_runs={}\n",
            p.tags, p.seconds, p.seed, p.start_ms, m.rows, m.bad_rows, m.uncertain_rows, m.out_of_order_rows, m.max_lateness_ms, m.assets, m.lines, m.production_runs
        ),
    )?;
    Ok(m)
}

/// `assets.csv`: one row per tag.
fn write_assets(
    out: &Path,
    p: &Params,
    assets: &[Asset],
    lines: &[String],
    tags: &[(usize, bool, String, i64)],
) -> std::io::Result<()> {
    let mut w = BufWriter::new(std::fs::File::create(out.join("assets.csv"))?);
    writeln!(w, "tag,asset,site,line,kind,standby_kw")?;
    for (a, _, name, _) in tags {
        let asset = &assets[*a];
        let site = lines[asset.line].split('/').next().unwrap_or("site1");
        let kind = KINDS[(*a * 7 + p.seed as usize) % KINDS.len()];
        writeln!(
            w,
            "{name},{},{site},{},{kind},{:.3}",
            asset.name, lines[asset.line], asset.standby_kw
        )?;
    }
    w.flush()?;
    Ok(())
}

/// Each line's production runs, `[start, end)` in epoch ms.
type Runs = Vec<Vec<(i64, i64)>>;

/// `production.csv`: runs of each line from before `p.start_ms` to `end_ms`;
/// returns each line's runs and their count.
fn write_production(
    out: &Path,
    p: &Params,
    lines: &[String],
    end_ms: i64,
    rng: &mut ChaCha8Rng,
) -> std::io::Result<(Runs, usize)> {
    let mut runs: Vec<Vec<(i64, i64)>> = vec![Vec::new(); lines.len()];
    let mut w = BufWriter::new(std::fs::File::create(out.join("production.csv"))?);
    writeln!(w, "line,start_ms,end_ms")?;
    let mut n_runs = 0;
    for (l, line) in lines.iter().enumerate() {
        let mut t = p.start_ms - rng.random_range(0..1_800) * 1000;
        if rng.random_bool(0.5) {
            t += rng.random_range(3..20) * 60_000;
        }
        while t < end_ms {
            let len = rng.random_range(15 * 60..45 * 60) * 1000;
            runs[l].push((t, t + len));
            writeln!(w, "{line},{t},{}", t + len)?;
            n_runs += 1;
            t += len + rng.random_range(3 * 60..20 * 60) * 1000;
        }
    }
    w.flush()?;
    Ok((runs, n_runs))
}

/// Converts a `ts,tag,value,quality` CSV (as [`generate`] writes it) into a
/// zstd Parquet file with the same rows in the same order, the way historians
/// export: `ts` as a UTC millisecond timestamp, `tag` as a string (dictionary
/// encoded by the writer), `value` double, `quality` uint8, in row groups
/// of 2^20 rows. Returns the rows.
pub fn samples_to_parquet(csv: &Path, parquet: &Path) -> std::io::Result<u64> {
    samples_to_parquet_in_groups(csv, parquet, 1 << 20)
}

/// [`samples_to_parquet`] in row groups of `group_rows` rows.
pub fn samples_to_parquet_in_groups(
    csv: &Path,
    parquet: &Path,
    group_rows: usize,
) -> std::io::Result<u64> {
    use std::io::BufRead;
    use std::sync::Arc;

    use arrow::array::{
        ArrayRef, Float64Builder, StringBuilder, TimestampMillisecondBuilder, UInt8Builder,
    };
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use arrow::record_batch::RecordBatch;
    use parquet::arrow::ArrowWriter;
    use parquet::basic::{Compression, ZstdLevel};
    use parquet::file::properties::WriterProperties;

    let bad = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
    let schema = Arc::new(Schema::new(vec![
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        ),
        Field::new("tag", DataType::Utf8, false),
        Field::new("value", DataType::Float64, false),
        Field::new("quality", DataType::UInt8, false),
    ]));
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_max_row_group_row_count(Some(group_rows.max(1)))
        .build();
    let tmp = parquet.with_extension("parquet.tmp");
    let mut writer =
        ArrowWriter::try_new(std::fs::File::create(&tmp)?, schema.clone(), Some(props))
            .map_err(|e| bad(e.to_string()))?;
    let mut r = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(csv)?);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let mut rows = 0u64;
    const BATCH: usize = 1 << 16;
    loop {
        let mut ts = TimestampMillisecondBuilder::with_capacity(BATCH).with_timezone("UTC");
        let mut tag = StringBuilder::with_capacity(BATCH, BATCH * 40);
        let mut value = Float64Builder::with_capacity(BATCH);
        let mut quality = UInt8Builder::with_capacity(BATCH);
        let mut n = 0;
        while n < BATCH {
            line.clear();
            if r.read_line(&mut line)? == 0 {
                break;
            }
            let mut f = line.trim_end().split(',');
            let (Some(t), Some(g), Some(v), Some(q)) = (f.next(), f.next(), f.next(), f.next())
            else {
                return Err(bad(format!("malformed line `{}`", line.trim_end())));
            };
            ts.append_value(t.parse().map_err(|_| bad(format!("bad ts `{t}`")))?);
            tag.append_value(g);
            value.append_value(v.parse().map_err(|_| bad(format!("bad value `{v}`")))?);
            quality.append_value(q.parse().map_err(|_| bad(format!("bad quality `{q}`")))?);
            n += 1;
        }
        if n == 0 {
            break;
        }
        rows += n as u64;
        let cols: Vec<ArrayRef> = vec![
            Arc::new(ts.finish()),
            Arc::new(tag.finish()),
            Arc::new(value.finish()),
            Arc::new(quality.finish()),
        ];
        let batch = RecordBatch::try_new(schema.clone(), cols).map_err(|e| bad(e.to_string()))?;
        writer.write(&batch).map_err(|e| bad(e.to_string()))?;
    }
    writer.close().map_err(|e| bad(e.to_string()))?;
    std::fs::rename(&tmp, parquet)?;
    Ok(rows)
}
