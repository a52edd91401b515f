#!/usr/bin/env bash
# The Delta log's cost on a replay: workload v1 (2,000 tags x 1 h, 7.2M rows,
# CSV -> lake, 1 worker) written as bare Parquet (`format = "parquet"`) and
# as Delta tables (`format = "delta"`), with a commit once a minute (the
# library dataflow's roll_interval) and every 50 ms (a Delta version per table
# and commit: ~20 in the run); interleaved, 5 rounds,
# medians, ratios against bare Parquet at the same commit interval. With moto
# installed (`pip install "moto[server]" boto3`), also to its S3 server on
# loopback (`delta-s3`: written locally, each commit shipped; moto is a
# Python server on the same 2 cores, so this is a floor, not S3's rate).
#
#   bash benches/lake_format.sh
#   TAGS=500 SECONDS_=600 bash benches/lake_format.sh
set -euo pipefail
cd "$(dirname "$0")/.."
TAGS=${TAGS:-2000}
SECS=${SECONDS_:-3600}
ROUNDS=${ROUNDS:-5}
cargo build --release --quiet
bin=target/release/plantflow
work=target/bench-data/lake-format
input=target/bench-data/workload-${TAGS}x${SECS}
mkdir -p "$work"
if [ ! -f "$input/samples.csv" ]; then
  "$bin" gen workload --tags "$TAGS" --seconds "$SECS" --out "$input" >/dev/null
fi
flow() { # format roll_interval [s3 url] -> dataflow file
  local f="$work/flow-$1-$2.toml"
  if [ "$1" = delta-s3 ]; then
    sed -e "s/^roll_interval = \"1m\"/roll_interval = \"$2\"\nformat = \"delta\"/" \
        -e "s|^path = \"\${OUT_DIR:-out}\"|path = \"$3\"\nlocal = \"\${OUT_DIR}\"|" dataflows/workload_v1.toml > "$f"
  else
    sed "s/^roll_interval = \"1m\"/roll_interval = \"$2\"\nformat = \"$1\"/" dataflows/workload_v1.toml > "$f"
  fi
  echo "$f"
}
variants=("parquet 1m" "delta 1m" "parquet 50ms" "delta 50ms")
if python3 -c "import moto, boto3" 2>/dev/null; then
  python3 tests/interop/s3_server.py bench > "$work/s3.json" 2>/dev/null &
  s3_pid=$!
  trap 'kill $s3_pid 2>/dev/null || true' EXIT
  for _ in $(seq 50); do [ -s "$work/s3.json" ] && break; sleep 0.2; done
  eval "$(python3 -c "import json; d=json.load(open('$work/s3.json')); print(f'export AWS_ENDPOINT_URL={d[\"endpoint\"]} AWS_ACCESS_KEY_ID={d[\"key\"]} AWS_SECRET_ACCESS_KEY={d[\"secret\"]}')")"
  export AWS_REGION=us-east-1 AWS_ALLOW_HTTP=true
  variants+=("delta-s3 1m" "delta-s3 50ms")
fi
declare -A times
for r in $(seq "$ROUNDS"); do
  for v in "${variants[@]}"; do
    set -- $v
    out="$work/out-$1-$2"
    rm -rf "$out"
    s=$(INPUT_DIR="$input" OUT_DIR="$out" "$bin" run --json "$(flow "$1" "$2" "s3://bench/r$r-$2")" | python3 -c 'import json,sys; print(json.load(sys.stdin)["elapsed_s"])')
    versions=$(ls "$out/aggregates/_delta_log" 2>/dev/null | grep -c '\.json$' || true)
    times[$v]="${times[$v]:-} $s"
    echo "round $r  $v  ${s}s  delta versions (aggregates)=$versions" >&2
  done
done
median() { printf '%s\n' $1 | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
printf '%-12s %10s %12s %16s\n' "lake" "median s" "rows/s" "vs bare Parquet"
for v in "${variants[@]}"; do
  set -- $v
  m=$(median "${times[$v]}")
  ref=$(median "${times[parquet $2]}")
  python3 -c "print(f'{\"$v\":<12} {$m:>10.2f} {$TAGS*$SECS/$m:>12.0f} {$ref/$m:>15.2f}x')"
done
