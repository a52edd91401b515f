"""Interop check: DuckDB reads plantflow's Parquet lake with Hive partitions
and its sums match the oracle's expected CSVs (computed by DuckDB SQL over the
raw input, independently of plantflow).

usage: duckdb_check.py OUT_DIR EXPECTED_DIR
"""
import sys

import duckdb

out, expected = sys.argv[1], sys.argv[2]
con = duckdb.connect()
latest = f"""
  SELECT * FROM read_parquet('{out}/aggregates/**/*.parquet', hive_partitioning=true)
  QUALIFY revision = max(revision) OVER (PARTITION BY tag, window_start)
"""
got = con.execute(f"""
  SELECT count(*), sum(count), sum(mean), sum(energy_kwh), sum(cost), sum(waste_kwh),
         count(DISTINCT date), min(typeof(window_start))
  FROM ({latest})
""").fetchone()
want = con.execute(f"""
  SELECT count(*), sum(count), sum(mean_kw), sum(energy_kwh), sum(cost), sum(waste_kwh)
  FROM read_csv('{expected}/aggregates.csv')
""").fetchone()
print("aggregates got ", got)
print("aggregates want", want)
assert got[0] == want[0] and got[1] == want[1], "row and sample counts"
for g, w, name in zip(got[2:6], want[2:6], ["mean", "energy_kwh", "cost", "waste_kwh"]):
    assert abs(g - w) <= 1e-9 * abs(w), f"sum({name}): {g} vs {w}"
assert got[6] >= 1, "hive partition column `date` is visible"
assert got[7] == "TIMESTAMP WITH TIME ZONE", f"window_start type is {got[7]}"

got_a = con.execute(f"""
  WITH latest AS (
    SELECT * FROM read_parquet('{out}/actions/**/*.parquet', hive_partitioning=true)
    QUALIFY revision = max(revision) OVER (PARTITION BY action_id))
  SELECT count(*), sum(value), sum(json_extract(evidence, '$.measures.waste_kwh')::DOUBLE) FROM latest
  WHERE status <> 'withdrawn'
""").fetchone()
want_a = con.execute(f"SELECT count(*), sum(waste_cost), sum(waste_kwh) FROM read_csv('{expected}/actions.csv')").fetchone()
print("actions got ", got_a)
print("actions want", want_a)
assert got_a[0] == want_a[0], "action count"
assert abs(got_a[1] - want_a[1]) <= 1e-9 * abs(want_a[1]), "sum(value)"
assert abs(got_a[2] - want_a[2]) <= 1e-9 * abs(want_a[2]), "sum(waste_kwh)"
print("interop: 2 passed, 0 failed")
