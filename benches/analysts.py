"""What an analyst would run instead of plantflow: workload v1 (dataflows/workload_v1.toml,
/work/shared/WORKLOAD.md) as one DuckDB SQL query and one Polars lazy query, each timed as a
whole process (interpreter start to exit) with its peak RSS, medians over N runs.

    python3 benches/analysts.py                      # 2,000 tags x 3,600 s (7.2M rows), 3 runs, both tools
    python3 benches/analysts.py --runs 1 --tools polars --input DIR --out DIR
    python3 benches/analysts.py --check-against PLANTFLOW_OUT_DIR   # also compare with plantflow's lake

Each tool writes what benches/pipeline.rs's `baseline` writes: OUT/<tool>/aggregates.parquet (one
row per tag and 1-minute window) and OUT/<tool>/actions.parquet (idle_running: asset and hour with
sum(waste_kwh) > 1), zstd. After the runs the outputs are compared: row counts, sum(count) and
sum(energy_kwh) (and the actions' count and sum(waste_kwh)) must agree within 1e-6 relative.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_INPUT = Path(__file__).resolve().parent.parent / "target/bench-data/workload-2000x3600"
TOOLS = ("duckdb", "polars")
REL = 1e-6
LABELS = ("agg_rows", "sum_count", "sum_energy_kwh", "actions", "sum_waste_kwh")


def run_duckdb(inp, out):
    import duckdb

    con = duckdb.connect()  # threads: DuckDB's default, every core
    con.sql(f"""
      CREATE TEMP TABLE windows AS
      WITH w AS (
        SELECT tag, ts // 60000 * 60000 AS ws, count(*) AS count,
               avg(value) AS mean, min(value) AS min, max(value) AS max
        FROM read_csv('{inp}/samples.csv', header = true, columns = {{
               'ts': 'BIGINT', 'tag': 'VARCHAR', 'value': 'DOUBLE', 'quality': 'TINYINT'}})
        WHERE quality <> 2
        GROUP BY ALL),
      e AS (
        SELECT w.*, a.asset, a.standby_kw, t.price_per_kwh AS price, w.mean / 60.0 AS energy_kwh,
               EXISTS (SELECT 1 FROM read_csv('{inp}/production.csv') p
                       WHERE p.line = a.line AND p.start_ms <= w.ws AND w.ws < p.end_ms) AS producing
        FROM w
        JOIN read_csv('{inp}/assets.csv') a USING (tag)
        JOIN read_csv('{inp}/tariff.csv') t
          ON w.ws // 3600000 % 24 >= t.start_hour AND w.ws // 3600000 % 24 < t.end_hour)
      SELECT *, energy_kwh * price AS cost,
             CASE WHEN NOT producing AND mean > standby_kw THEN energy_kwh ELSE 0.0 END AS waste_kwh
      FROM e""")
    con.sql(f"""
      COPY (SELECT tag, to_timestamp(ws // 1000) AS window_start, count, mean, min, max,
                   energy_kwh, cost, producing, waste_kwh FROM windows)
      TO '{out}/aggregates.parquet' (FORMAT parquet, COMPRESSION zstd)""")
    con.sql(f"""
      COPY (SELECT asset, ws // 3600000 * 3600000 AS hour_start,
                   sum(waste_kwh) AS waste_kwh, sum(waste_kwh * price) AS waste_cost
            FROM windows WHERE waste_kwh > 0.0 GROUP BY ALL HAVING sum(waste_kwh) > 1.0)
      TO '{out}/actions.parquet' (FORMAT parquet, COMPRESSION zstd)""")


def run_polars(inp, out):
    import polars as pl

    samples = pl.scan_csv(f"{inp}/samples.csv", schema={
        "ts": pl.Int64, "tag": pl.String, "value": pl.Float64, "quality": pl.Int8})
    assets = pl.scan_csv(f"{inp}/assets.csv", schema_overrides={"standby_kw": pl.Float64})
    # Tariff periods -> one price per UTC hour of day.
    price = (pl.scan_csv(f"{inp}/tariff.csv")
             .select(pl.int_ranges("start_hour", "end_hour").alias("hour"),
                     pl.col("price_per_kwh").alias("price"))
             .explode("hour"))
    # Production runs -> every window start (line, ws) that lies inside one.
    producing = (pl.scan_csv(f"{inp}/production.csv")
                 .select("line", pl.int_ranges(-(-pl.col("start_ms") // 60_000) * 60_000,  # ceil
                                               "end_ms", 60_000).alias("ws"))
                 .explode("ws").drop_nulls().unique().with_columns(producing=pl.lit(True)))
    energy = pl.col("energy_kwh")
    windows = (
        samples.filter(pl.col("quality") != 2)
        .group_by("tag", (pl.col("ts") // 60_000 * 60_000).alias("ws"))
        .agg(pl.len().cast(pl.Int64).alias("count"), pl.col("value").mean().alias("mean"),
             pl.col("value").min().alias("min"), pl.col("value").max().alias("max"))
        .join(assets, on="tag")
        .with_columns(hour=pl.col("ws") // 3_600_000 % 24, energy_kwh=pl.col("mean") / 60.0)
        .join(price, on="hour")
        .join(producing, on=["line", "ws"], how="left")
        .with_columns(pl.col("producing").fill_null(False))
        .with_columns(cost=energy * pl.col("price"),
                      waste_kwh=pl.when(~pl.col("producing") & (pl.col("mean") > pl.col("standby_kw")))
                      .then(energy).otherwise(0.0))
        .collect(engine="streaming"))
    (windows.select("tag", pl.from_epoch("ws", time_unit="ms").dt.replace_time_zone("UTC").alias("window_start"),
                    "count", "mean", "min", "max", "energy_kwh", "cost", "producing", "waste_kwh")
     .write_parquet(f"{out}/aggregates.parquet", compression="zstd"))
    (windows.filter(pl.col("waste_kwh") > 0.0)
     .group_by("asset", (pl.col("ws") // 3_600_000 * 3_600_000).alias("hour_start"))
     .agg(pl.col("waste_kwh").sum(), (pl.col("waste_kwh") * pl.col("price")).sum().alias("waste_cost"))
     .filter(pl.col("waste_kwh") > 1.0)
     .write_parquet(f"{out}/actions.parquet", compression="zstd"))


def importable(tool):
    try:
        __import__(tool)
        return True
    except ImportError:
        return False


def input_rows(inp):
    """Rows in samples.csv: from MANIFEST.txt when the generator wrote one, else counted."""
    manifest = inp / "MANIFEST.txt"
    if manifest.exists():
        for line in manifest.read_text().splitlines():
            if line.startswith("rows="):
                return int(line[5:])
    with open(inp / "samples.csv", "rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 24), b"")) - 1


def timed_run(tool, inp, out):
    """One whole child process; returns (wall seconds, peak RSS MiB)."""
    cmd = [sys.executable, __file__, "--one", tool, "--input", str(inp), "--out", str(out)]
    start = time.perf_counter()
    child = subprocess.Popen(cmd)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        sys.exit(f"{tool} failed with exit code {child.returncode}")
    return wall, usage.ru_maxrss / 1024  # ru_maxrss is KiB on Linux


def summaries(outs, plantflow):
    """name -> (aggregate rows, sum(count), sum(energy_kwh), action rows, sum(waste_kwh))."""
    import duckdb

    con = duckdb.connect()
    found = {}
    for tool, d in outs.items():
        found[tool] = con.sql(f"""
          SELECT (SELECT count(*) FROM '{d}/aggregates.parquet'),
                 (SELECT sum(count) FROM '{d}/aggregates.parquet'),
                 (SELECT sum(energy_kwh) FROM '{d}/aggregates.parquet'),
                 (SELECT count(*) FROM '{d}/actions.parquet'),
                 (SELECT sum(waste_kwh) FROM '{d}/actions.parquet')""").fetchall()[0]
    if plantflow:
        # Plantflow's lake keeps every revision: the latest per key is the answer.
        found["plantflow"] = con.sql(f"""
          WITH agg AS (
            SELECT * FROM read_parquet('{plantflow}/aggregates/**/*.parquet', hive_partitioning = true)
            QUALIFY revision = max(revision) OVER (PARTITION BY tag, window_start)),
          act AS (
            SELECT * FROM read_parquet('{plantflow}/actions/**/*.parquet', hive_partitioning = true)
            QUALIFY revision = max(revision) OVER (PARTITION BY action_id))
          SELECT (SELECT count(*) FROM agg), (SELECT sum(count) FROM agg), (SELECT sum(energy_kwh) FROM agg),
                 (SELECT count(*) FROM act WHERE status <> 'withdrawn'),
                 (SELECT sum(json_extract(evidence, '$.measures.waste_kwh')::DOUBLE)
                  FROM act WHERE status <> 'withdrawn')""").fetchall()[0]
    return found


def check(outs, plantflow):
    """Compares every output with the first; returns True when all agree."""
    if not importable("duckdb"):
        print("check: skipped (duckdb is needed to read the outputs)")
        return True
    found = summaries(outs, plantflow)
    print("\n{:<10} {:>9} {:>10} {:>20} {:>8} {:>18}".format("output", *LABELS))
    for name, (n, c, e, a, w) in found.items():
        print(f"{name:<10} {n:>9} {c:>10} {e:>20.12f} {a:>8} {w:>18.12f}")
    (ref_name, ref), ok = next(iter(found.items())), True
    for name, got in found.items():
        bad = [label for label, g, r in zip(LABELS, got, ref)
               if (abs(g - r) > REL * abs(r) if isinstance(r, float) else g != r)]
        if bad:
            print(f"check: {name} differs from {ref_name} in {', '.join(bad)}")
            ok = False
    print(f"check: {'ok' if ok else 'FAILED'} ({', '.join(found)}; counts equal, sums within {REL:g} relative)")
    return ok


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--input", type=Path, default=DEFAULT_INPUT)
    p.add_argument("--out", type=Path, default=None, help="default: a new temporary directory")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--tools", default=",".join(TOOLS))
    p.add_argument("--check-against", type=Path, help="plantflow output dir of the same input")
    p.add_argument("--one", choices=TOOLS, help=argparse.SUPPRESS)  # child: run one tool once
    args = p.parse_args()
    inp = args.input.resolve()
    out = (args.out or Path(tempfile.mkdtemp(prefix="analysts-"))).resolve()

    if args.one:
        out.mkdir(parents=True, exist_ok=True)
        {"duckdb": run_duckdb, "polars": run_polars}[args.one](inp, out)
        return

    rows = input_rows(inp)
    print(f"input {inp} ({rows:,} rows), output {out}, {args.runs} run(s), {os.cpu_count()} cores")
    outs = {}
    print(f"{'tool':<10} {'wall_s':>8} {'rows_per_s':>12} {'peak_rss_mib':>13}")
    for tool in args.tools.split(","):
        if tool not in TOOLS:
            sys.exit(f"unknown tool {tool!r}; choose from {', '.join(TOOLS)}")
        if not importable(tool):
            print(f"{tool:<10} skipped: python module {tool!r} is not importable (pip install {tool})")
            continue
        outs[tool] = out / tool
        runs = [timed_run(tool, inp, outs[tool]) for _ in range(args.runs)]
        wall = statistics.median(w for w, _ in runs)
        rss = statistics.median(r for _, r in runs)
        print(f"{tool:<10} {wall:>8.2f} {rows / wall:>12,.0f} {rss:>13.0f}", flush=True)
    if outs and not check(outs, args.check_against):
        sys.exit(1)


if __name__ == "__main__":
    main()
