"""Interop check for the value layer's tables: runs dataflows/demand_peak.toml
on the PV1 load (tests/fixtures/value_vectors.md) and lets DuckDB recompute the
bill from plantflow's own `aggregates` table and compare it with the `billing`
row, besides the hand-checked PV1 figures.

usage: duckdb_billing.py PLANTFLOW_BINARY
"""
import os
import subprocess
import sys
import tempfile

import duckdb

binary = sys.argv[1]
t0 = 1_767_571_200_000  # 2026-01-05 00:00 UTC
work = tempfile.mkdtemp()
inp, out = os.path.join(work, "in"), os.path.join(work, "out")
os.makedirs(inp)
with open(os.path.join(inp, "assets.csv"), "w") as f:
    f.write("tag,asset,site,line,kind,standby_kw\nm/main/power_kw,m/main,m,m/l1,meter,0\n")
with open(os.path.join(inp, "tariff.csv"), "w") as f:
    f.write("start_hour,end_hour,price_per_kwh\n0,13,0.12\n13,19,0.30\n19,24,0.12\n")
with open(os.path.join(inp, "samples.csv"), "w") as f:
    f.write("ts,tag,value,quality\n")
    for m in range(1440):
        kw = 240.0 if 900 <= m < 915 else 180.0 if 180 <= m < 195 else 100.0
        f.write(f"{t0 + m * 60_000 + 30_000},m/main/power_kw,{kw},0\n")
env = dict(os.environ, INPUT_DIR=inp, OUT_DIR=out, BILLING_PERIOD="day")
subprocess.run([binary, "run", "dataflows/demand_peak.toml"], check=True, env=env)

con = duckdb.connect()
bill = con.execute(f"""
  SELECT energy_kwh, energy_cost, peak_kw, demand_cost, total_cost, peak_shave_value,
         typeof(period_start)
  FROM read_parquet('{out}/billing/**/*.parquet', hive_partitioning=true)
  QUALIFY revision = max(revision) OVER (PARTITION BY site, period_start)
""").fetchall()
assert len(bill) == 1, bill
bill = bill[0]
# DuckDB's own bill from the aggregates: 15-minute buckets, max average kW.
mine = con.execute(f"""
  WITH w AS (
    SELECT * FROM read_parquet('{out}/aggregates/**/*.parquet', hive_partitioning=true)
    QUALIFY revision = max(revision) OVER (PARTITION BY tag, window_start)),
  iv AS (SELECT time_bucket(INTERVAL 15 MINUTE, window_start) b, sum(energy_kwh) kwh FROM w GROUP BY b)
  SELECT (SELECT sum(energy_kwh) FROM w), (SELECT sum(cost) FROM w), max(kwh) * 4 FROM iv
""").fetchone()
print("billing row", bill)
print("duckdb     ", mine)
want = [2455.0, 408.90, 240.0, 3600.0, 4008.90, 910.50]
for g, w, name in zip(bill[:6], want, ["energy_kwh", "energy_cost", "peak_kw", "demand_cost", "total_cost", "peak_shave_value"]):
    assert abs(g - w) <= 1e-6 * abs(w), f"{name}: {g} vs PV1 {w}"
for g, w, name in zip(bill[:3], mine, ["energy_kwh", "energy_cost", "peak_kw"]):
    assert abs(g - w) <= 1e-9 * abs(w), f"{name}: {g} vs DuckDB {w}"
assert bill[6] == "TIMESTAMP WITH TIME ZONE", bill[6]
print("interop billing: 2 passed, 0 failed")
