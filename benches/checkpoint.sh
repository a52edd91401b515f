#!/usr/bin/env bash
# The cost of checkpoints on a logged replay: workload v1 (2,000 tags x 1 h,
# 7.2M rows) split by tag into two replay sources (so the input is logged:
# the interleaving of two files depends on timing), CSV -> Parquet, 2
# workers, with checkpoints every 1 s, every 10 s (the default) and none (the
# input log alone), each with closed state spilled after 10 minutes (the
# default) and with everything in memory (`:0s`); interleaved, 3 rounds,
# medians. Prints each run's last checkpoint size and its spilled state's.
#
#   bash benches/checkpoint.sh
#   TAGS=500 SECONDS_=600 bash benches/checkpoint.sh
#   VARIANTS="10s 10s:0s 0s" bash benches/checkpoint.sh
set -euo pipefail
cd "$(dirname "$0")/.."
TAGS=${TAGS:-2000}
SECS=${SECONDS_:-3600}
ROUNDS=${ROUNDS:-3}
cargo build --release --quiet
bin=target/release/plantflow
work=target/bench-data/checkpoint
input=target/bench-data/workload-${TAGS}x${SECS}
mkdir -p "$work"
if [ ! -f "$input/samples.csv" ]; then
  "$bin" gen workload --tags "$TAGS" --seconds "$SECS" --out "$input" >/dev/null
fi
if [ ! -f "$input/a.csv" ]; then
  python3 - "$input" <<'PY'
import sys, zlib
d = sys.argv[1]
with open(f"{d}/samples.csv") as f, open(f"{d}/a.csv", "w") as a, open(f"{d}/b.csv", "w") as b:
    head = f.readline(); a.write(head); b.write(head)
    for line in f:
        tag = line.split(",", 2)[1]
        (a if zlib.crc32(tag.encode()) % 2 == 0 else b).write(line)
PY
fi
flow() { # checkpoint_interval[:spill_after] -> dataflow file
  python3 - "$1" "$work/flow-$1.toml" <<'PY'
import sys
every, out = sys.argv[1], sys.argv[2]
every, _, spill = every.partition(":")
spill = f'\nspill_after = "{spill}"' if spill else ""
t = open("dataflows/workload_v1.toml").read()
two = ('path = "${INPUT_DIR}/a.csv"\n\n[[sources]]\ntype = "replay"\nid = "more"\n'
       'path = "${INPUT_DIR}/b.csv"')
t = t.replace('path = "${INPUT_DIR}/${SAMPLES_FILE:-samples.csv}"', two, 1)
t = t.replace('size = "1m"', f'size = "1m"\ncheckpoint_interval = "{every}"{spill}', 1)
open(out, "w").write(t)
PY
  echo "$work/flow-$1.toml"
}
read -r -a variants <<< "${VARIANTS:-1s 10s 1s:0s 10s:0s 0s 0s:0s}"
declare -A times
for r in $(seq "$ROUNDS"); do
  for v in "${variants[@]}"; do
    out="$work/out-$v"
    rm -rf "$out"
    f=$(flow "$v")
    s=$(INPUT_DIR="$input" OUT_DIR="$out" "$bin" run -w 2 --json "$f" | python3 -c 'import json,sys; print(json.load(sys.stdin)["elapsed_s"])')
    size=$( (ls -l "$out"/.plantflow/workload_v1/checkpoint-*.bin 2>/dev/null || true) | awk '{print $5}' | tail -1)
    spilled=$( (du -sb "$out"/.plantflow/workload_v1/checkpoint-*.spill 2>/dev/null || true) | awk '{print $1}' | tail -1)
    times[$v]="${times[$v]:-} $s"
    echo "round $r  checkpoint every $v  ${s}s  last checkpoint ${size:-none} bytes, spilled ${spilled:-none} bytes" >&2
  done
done
median() { printf '%s\n' $1 | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ref=$(median "${times[0s]}")
printf '%-12s %10s %12s %12s\n' "checkpoints" "median s" "rows/s" "vs none"
for v in "${variants[@]}"; do
  m=$(median "${times[$v]}")
  name=${v/:0s/ in memory}; name=${name/#0s/none}
  python3 -c "print(f'{\"$name\":<12} {$m:>10.2f} {$TAGS*$SECS/$m:>12.0f} {$ref/$m:>11.2f}x')"
done
