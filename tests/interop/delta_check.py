"""Interop check: Python `deltalake` (delta-rs, nobody here wrote it) reads
plantflow's lake as Delta tables.

usage:
  delta_check.py oracle LAKE EXPECTED_DIR APP SEQ [TABLE...]
      the latest revisions of aggregates and actions, read through the Delta
      logs, equal the oracle's expected CSVs (DuckDB SQL over the raw input);
      every table's txn for APP is SEQ or below, and SEQ for the TABLEs the
      lake's last commit (SEQ) wrote.
  delta_check.py files LAKE [MAYBE_FILE...]
      every table reads; its log names only files that are there, and every
      committed file (`date=*/*.parquet`) but the MAYBE ones (relative to the
      lake: the last commit's, which a kill may have cut off from its Delta
      commit); the table holds exactly the rows of the files it names.
      Prints `<table> <version> <rows>` per table.
  delta_check.py objects S3_LAKE TABLE
      prints how many data files of TABLE the bucket holds.
  delta_check.py shipped[-whole] S3_LAKE LOCAL_LAKE
      every table in the bucket (S3 server and key from AWS_* variables) reads,
      at a version the node's local copy has (its last, with -whole), with
      the local copy's rows at that version.
"""
import glob
import os
import sys

import duckdb
from deltalake import DeltaTable

TABLES = ["aggregates", "actions", "outcomes", "billing", "dead_letter", "gaps",
          "tag_quality", "outcome_buckets"]


def options(lake):
    """A lake in a bucket: the S3 server and key from the environment."""
    if not lake.startswith("s3://"):
        return None
    keys = ["AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION",
            "AWS_ALLOW_HTTP"]
    return {k: os.environ[k] for k in keys if k in os.environ}


def read(lake, table, version=None):
    dt = DeltaTable(f"{lake}/{table}", version=version, storage_options=options(lake))
    return dt, dt.to_pyarrow_table()


def same_rows(a, b, what):
    con = duckdb.connect()
    con.register("a", a)
    con.register("b", b)
    cols = ", ".join(f'"{c}"' for c in a.column_names)
    extra = con.sql(f"SELECT count(*) FROM (SELECT {cols} FROM a EXCEPT ALL SELECT {cols} FROM b)").fetchall()[0][0]
    missing = con.sql(f"SELECT count(*) FROM (SELECT {cols} FROM b EXCEPT ALL SELECT {cols} FROM a)").fetchall()[0][0]
    assert extra == 0 and missing == 0, f"{what}: {extra} rows more, {missing} fewer"


def shipped(remote, local, whole):
    """Each table in the bucket reads, at a version the local copy has,
    with the local copy's rows at that version (all of them when whole)."""
    for t in TABLES:
        if not os.path.isdir(os.path.join(local, t, "_delta_log")):
            continue
        rdt, rows = read(remote, t)
        ldt = DeltaTable(os.path.join(local, t))
        v = rdt.version()
        assert v <= ldt.version(), f"{t}: the bucket is at {v}, the local copy at {ldt.version()}"
        if whole:
            assert v == ldt.version(), f"{t}: the bucket is at {v}, the local copy at {ldt.version()}"
        _, want = read(local, t, version=v)
        same_rows(rows, want, f"{t} at version {v}")
        print(t, v, rows.num_rows)


def oracle(lake, expected, app, seq, last):
    con = duckdb.connect()
    _, agg = read(lake, "aggregates")
    con.register("agg", agg)
    got = con.sql("""
      SELECT count(*), sum(count), sum(mean), sum(energy_kwh), sum(cost), sum(waste_kwh),
             count(DISTINCT date)
      FROM (SELECT * FROM agg QUALIFY revision = max(revision) OVER (PARTITION BY tag, window_start))
    """).fetchall()[0]
    want = con.sql(f"""
      SELECT count(*), sum(count), sum(mean_kw), sum(energy_kwh), sum(cost), sum(waste_kwh)
      FROM read_csv('{expected}/aggregates.csv')
    """).fetchall()[0]
    print("aggregates got ", got)
    print("aggregates want", want)
    assert got[0] == want[0] and got[1] == want[1], "row and sample counts"
    for g, w, name in zip(got[2:6], want[2:6], ["mean", "energy_kwh", "cost", "waste_kwh"]):
        assert abs(g - w) <= 1e-9 * abs(w), f"sum({name}): {g} vs {w}"
    assert got[6] >= 1, "the date partition is a column"
    _, act = read(lake, "actions")
    con.register("act", act)
    got_a = con.sql("""
      SELECT count(*), sum(value), sum(json_extract(evidence, '$.measures.waste_kwh')::DOUBLE)
      FROM (SELECT * FROM act QUALIFY revision = max(revision) OVER (PARTITION BY action_id))
      WHERE status <> 'withdrawn'
    """).fetchall()[0]
    want_a = con.sql(
        f"SELECT count(*), sum(waste_cost), sum(waste_kwh) FROM read_csv('{expected}/actions.csv')"
    ).fetchall()[0]
    print("actions got ", got_a)
    print("actions want", want_a)
    assert got_a[0] == want_a[0], "action count"
    assert abs(got_a[1] - want_a[1]) <= 1e-9 * abs(want_a[1]), "sum(value)"
    assert abs(got_a[2] - want_a[2]) <= 1e-9 * abs(want_a[2]), "sum(waste_kwh)"
    for t in TABLES:
        dt = DeltaTable(os.path.join(lake, t))
        v = dt.transaction_version(app)
        assert v is None or v <= seq, f"{t}: txn {v} above the lake's commit {seq}"
        if t in last:
            assert v == seq, f"{t}'s txn is {v}, the lake's last commit {seq} wrote it"
    print("delta oracle: ok")


def files(lake, skip):
    con = duckdb.connect()
    for t in TABLES:
        dt, tab = read(lake, t)
        root = os.path.join(lake, t)
        named = {os.path.relpath(u.removeprefix("file://"), lake) for u in dt.file_uris()}
        visible = {os.path.relpath(p, lake) for p in glob.glob(os.path.join(root, "date=*", "*.parquet"))}
        assert named <= visible, f"{t}: the log names files that are not there: {sorted(named - visible)}"
        lacking = visible - named
        assert lacking <= skip, f"{t}: committed files the log lacks: {sorted(lacking - skip)}"
        con.register("d", tab)
        if named:
            f = "read_parquet([" + ", ".join(f"'{os.path.join(lake, p)}'" for p in sorted(named)) + "], hive_partitioning=false)"
            cols = ", ".join(f'"{c}"' for c in tab.column_names if c != "date")
            extra = con.sql(f"SELECT count(*) FROM (SELECT {cols} FROM d EXCEPT ALL SELECT {cols} FROM {f})").fetchall()[0][0]
            missing = con.sql(f"SELECT count(*) FROM (SELECT {cols} FROM {f} EXCEPT ALL SELECT {cols} FROM d)").fetchall()[0][0]
        else:
            extra, missing = tab.num_rows, 0
        assert extra == 0 and missing == 0, f"{t}: {extra} rows its files lack, {missing} the table lacks"
        print(t, dt.version(), tab.num_rows)


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "oracle":
        oracle(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), set(sys.argv[6:]))
    elif mode == "objects":
        # The data files of a table in the bucket: objects under date=*/.
        import boto3
        bucket, _, prefix = sys.argv[2].removeprefix("s3://").partition("/")
        s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"],
                          region_name=os.environ["AWS_REGION"])
        pages = s3.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=f"{prefix}/{sys.argv[3]}/date=")
        print(sum(1 for p in pages for o in p.get("Contents", []) if o["Key"].endswith(".parquet")))
    elif mode in ("shipped", "shipped-whole"):
        shipped(sys.argv[2], sys.argv[3], mode == "shipped-whole")
    elif mode == "files":
        files(sys.argv[2], set(sys.argv[3:]))
    else:
        sys.exit(f"unknown mode {mode}")
