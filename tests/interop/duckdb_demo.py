"""Interop check on `plantflow demo`'s output: DuckDB reads the lake, finds
one action per injected problem, and recomputes the compressor's M&V outcome
independently: hourly energy from the aggregates table, production units from
the demo's production.csv (pro rata by overlap), an OLS fit with DuckDB's
regr_intercept/regr_slope over the baseline hours, and the avoided energy over
the reporting hours. They must match the `outcomes` row.

usage: duckdb_demo.py DEMO_OUT_DIR
"""
import re
import sys

import duckdb

out = sys.argv[1]
lake, inp = f"{out}/lake", f"{out}/input"
con = duckdb.connect()
con.execute("SET TimeZone = 'UTC'")
con.execute(f"""
  CREATE VIEW actions AS SELECT * FROM read_parquet('{lake}/actions/**/*.parquet', hive_partitioning=true)
  QUALIFY revision = max(revision) OVER (PARTITION BY action_id)""")
con.execute(f"""
  CREATE VIEW outcomes AS SELECT * FROM read_parquet('{lake}/outcomes/**/*.parquet', hive_partitioning=true)
  QUALIFY revision = max(revision) OVER (PARTITION BY action_id)""")
con.execute(f"""
  CREATE VIEW aggs AS SELECT * FROM read_parquet('{lake}/aggregates/**/*.parquet', hive_partitioning=true)
  QUALIFY revision = max(revision) OVER (PARTITION BY tag, window_start)""")

rows = con.execute("SELECT rule, site, asset, owner, action_type, status FROM actions ORDER BY rule").fetchall()
for r in rows:
    print("action", r)
rules = sorted(r[0] for r in rows)
assert rules == sorted(["baseload_creep", "chiller_kw_per_ton", "compressor_off_hours",
                        "demand_peak", "idle_load"]), rules

(aid, b0, b1, r0, r1, model, avoided, verdict) = con.execute("""
  SELECT o.action_id, epoch_ms(baseline_start), epoch_ms(baseline_end), epoch_ms(reporting_start),
         epoch_ms(reporting_end), model, avoided_kwh, verdict
  FROM outcomes o JOIN actions a USING (action_id) WHERE a.rule = 'compressor_off_hours'""").fetchone()
print("outcome", verdict, model, avoided)
assert verdict == "verified", verdict

con.execute(f"""
  CREATE TABLE hours AS
  WITH e AS (
    SELECT epoch_ms(date_trunc('hour', window_start)) AS h, sum(energy_kwh) AS kwh
    FROM aggs WHERE asset = 'comp1' GROUP BY ALL),
  runs AS (
    SELECT start_ms AS s, end_ms AS t, units
    FROM read_csv('{inp}/production.csv') WHERE line = 'l1')
  SELECT h, kwh,
         coalesce((SELECT sum(units * greatest(0, least(t, h + 3600000) - greatest(s, h)) / (t - s))
                   FROM runs), 0) AS units
  FROM e""")
a, b, n = con.execute(f"""
  SELECT regr_intercept(kwh, units), regr_slope(kwh, units), count(*)
  FROM hours WHERE h >= {b0} AND h < {b1}""").fetchone()
print(f"duckdb baseline fit over {n} hours: kwh = {a:.6f} + {b:.6f} * units")
ma, mb = [float(x) for x in re.findall(r"-?\d+\.\d+", model)]
assert abs(a - ma) <= 1e-5 * max(1, abs(a)) and abs(b - mb) <= 1e-5 * max(1, abs(b)), (a, b, model)
(dk,) = con.execute(f"""
  SELECT sum({a} + {b} * units - kwh) FROM hours WHERE h >= {r0} AND h < {r1}""").fetchone()
print(f"duckdb avoided {dk:.4f} kWh, plantflow {avoided:.4f} kWh")
assert abs(dk - avoided) <= 1e-6 * abs(avoided), (dk, avoided)
print("demo lake OK")
