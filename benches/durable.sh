#!/usr/bin/env bash
# The durable lake's cost on a replay: workload v1 (2,000 tags x 1 h, 7.2M
# rows, CSV -> Parquet, 1 worker) with a commit every 1 s, every 10 s and
# once a minute (the library dataflow's roll_interval), interleaved, 3 rounds,
# medians. With BEFORE=<binary of an earlier commit> that binary runs too
# (the lake before the commit record: files renamed one by one).
#
#   bash benches/durable.sh
#   BEFORE=/tmp/pf-before bash benches/durable.sh
#   TAGS=500 SECONDS_=600 bash benches/durable.sh
set -euo pipefail
cd "$(dirname "$0")/.."
TAGS=${TAGS:-2000}
SECS=${SECONDS_:-3600}
ROUNDS=${ROUNDS:-3}
cargo build --release --quiet
bin=target/release/plantflow
work=target/bench-data/durable
input=target/bench-data/workload-${TAGS}x${SECS}
mkdir -p "$work"
if [ ! -f "$input/samples.csv" ]; then
  "$bin" gen workload --tags "$TAGS" --seconds "$SECS" --out "$input" >/dev/null
fi
flow() { # roll_interval -> dataflow file
  sed "s/^roll_interval = \"1m\"/roll_interval = \"$1\"/" dataflows/workload_v1.toml > "$work/flow-$1.toml"
  echo "$work/flow-$1.toml"
}
variants=("1s" "10s" "1m")
[ -n "${BEFORE:-}" ] && variants+=("before")
declare -A times
for r in $(seq "$ROUNDS"); do
  for v in "${variants[@]}"; do
    out="$work/out-$v"
    rm -rf "$out"
    if [ "$v" = before ]; then b="$BEFORE"; f=$(flow 1m); else b="$bin"; f=$(flow "$v"); fi
    s=$(INPUT_DIR="$input" OUT_DIR="$out" "$b" run --json "$f" | python3 -c 'import json,sys; print(json.load(sys.stdin)["elapsed_s"])')
    commits=$( [ -f "$out/_plantflow/commit.json" ] && python3 -c "import json;print(json.load(open('$out/_plantflow/commit.json'))['seq'])" || echo -)
    times[$v]="${times[$v]:-} $s"
    echo "round $r  $v  ${s}s  commits=$commits" >&2
  done
done
median() { printf '%s\n' $1 | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ref=$(median "${times[1m]}")
printf '%-10s %10s %12s %14s\n' "commit" "median s" "rows/s" "vs once a min"
for v in "${variants[@]}"; do
  m=$(median "${times[$v]}")
  python3 -c "print(f'{\"$v\":<10} {$m:>10.2f} {$TAGS*$SECS/$m:>12.0f} {$ref/$m:>13.2f}x')"
done
