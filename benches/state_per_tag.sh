#!/usr/bin/env bash
# State per tag: heap of `plantflow run --workers 1` (workload v1) under
# valgrind's massif at two tag counts; the difference per extra tag, in total
# and by the component that allocated it (nearest plantflow frame).
#
# Two measurements per tag count:
# - at rest: `run --follow` over the 6 h file; once it has caught up (its CPU
#   time stops growing) and waits for more input, as a live node does between
#   samples, `vgdb` takes a detailed snapshot. This is the state the node
#   holds: windows, accumulators, actions, context, nothing in flight.
# - replay: the same file at full speed; the floor and median of the second
#   half also count the rows a close sends on their way out (a replay is
#   always closing a window somewhere in the pipeline).
#
#   bash benches/state_per_tag.sh                  # 200 and 2000 tags x 6 h, spill_after = 10m
#   SPILL= bash benches/state_per_tag.sh           # everything in memory
#   ROLL=processing bash benches/state_per_tag.sh  # files roll on wall-clock time, as configured
#   TAGS_A=500 TAGS_B=5000 SECONDS_=7200 bash benches/state_per_tag.sh
#
# Also the state over time: the smaller tag count at rest after a run 10x as
# long (60 h; a 2 GB input file); LONG=0 skips it.
#
# Needs valgrind and python3; builds the release binary. Takes a few minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
A=${TAGS_A:-200}
B=${TAGS_B:-2000}
# 6 h: a period's actions leave memory 2 h (the retention) after it ends, so
# the second half of the run is the steady state.
SECS=${SECONDS_:-21600}
SPILL=${SPILL-10m}
work=target/bench-data/state-per-tag
mkdir -p "$work"
cargo build --release --quiet
bin=target/release/plantflow
flow="$work/flow.toml"
# Files roll per minute of event time, as a live node's `roll_interval = "1m"`
# does (a replay runs hours of event time within one wall-clock minute, so a
# wall-clock roll would measure one file's growing row group instead of state).
# ROLL=processing measures the replay as configured.
ROLL=${ROLL:-event_time}
cp dataflows/workload_v1.toml "$flow"
if [ "$ROLL" = event_time ]; then
  sed -i 's|roll_interval = "1m"|roll_interval = "1m"\nroll_by = "event_time"|' "$flow"
fi
if [ -n "$SPILL" ]; then
  sed -i "s|retention = \"2h\"|retention = \"2h\"\nspill_after = \"$SPILL\"\nstate_dir = \"$work/state\"|" "$flow"
fi
input() { # tags seconds -> directory of the generated workload
  local in="$work/w-$1-$2"
  [ -f "$in/samples.csv" ] || "$bin" gen workload --tags "$1" --seconds "$2" --out "$in" > /dev/null
  echo "$in"
}
# At rest: follow a file until caught up (two 3-second spans with under
# 0.2 s of CPU), take a detailed snapshot into $3, stop.
rest() { # input-dir name snapshot
  rm -rf "$work/out" "$3"
  INPUT_DIR="$1" OUT_DIR="$work/out" valgrind --tool=massif --threshold=0.2 \
    --massif-out-file="$work/massif.follow.$2" "$bin" run --follow --workers 1 "$flow" > "$work/follow.$2.log" 2>&1 &
  local vpid=$! prev=0 idle=0 cur
  while [ "$idle" -lt 2 ]; do
    sleep 3
    cur=$(awk '{print $14 + $15}' "/proc/$vpid/stat")
    if [ $((cur - prev)) -lt 20 ]; then idle=$((idle + 1)); else idle=0; fi
    prev=$cur
  done
  vgdb --pid="$vpid" detailed_snapshot "$3" > /dev/null
  kill -TERM "$vpid"
  wait "$vpid" || true
}
for t in "$A" "$B"; do
  in=$(input "$t" "$SECS")
  rm -rf "$work/out"
  INPUT_DIR="$in" OUT_DIR="$work/out" valgrind --tool=massif --threshold=0.2 --detailed-freq=1 --max-snapshots=150 \
    --massif-out-file="$work/massif.$t" "$bin" run --workers 1 "$flow" > "$work/run.$t.log" 2>&1
  rest "$in" "$t" "$work/rest.$t"
done
# Over time: the smaller tag count at rest after a run 10x as long (LONG=0 skips it).
long=none
if [ "${LONG:-1}" != 0 ]; then
  long="$work/rest.$A.x10"
  rest "$(input "$A" $((SECS * 10)))" "$A.x10" "$long"
fi
python3 - "$work/massif.$A" "$work/massif.$B" "$A" "$B" "${SPILL:-off}" "$ROLL" "$work/rest.$A" "$work/rest.$B" "$long" "$SECS" <<'EOF'
import collections, re, sys

# The component an allocation belongs to, by the nearest plantflow frame of
# its stack (or timely, for buffers it allocates between our operators).
PF = re.compile(r'(plantflow::[\w:]+)')
GROUPS = [
    ('windows', ('plantflow::engine::window', 'plantflow::engine::spill')),
    ('rules fold', ('plantflow::engine::rules', 'plantflow::value::rules::Compiled::group_acc',
                    'plantflow::value::rules::Compiled::accumulate', 'plantflow::value::rules::Compiled::finding')),
    ('value layer', ('plantflow::value::layer', 'plantflow::engine::value', 'plantflow::engine::ledger')),
    ('context tables', ('plantflow::engine::context', 'plantflow::run::', 'plantflow::sources::context',
                        'plantflow::ingest::tags', 'plantflow::engine::Names')),
    ('rows in flight', ('plantflow::value::rules::Compiled::derive', 'plantflow::value::rules::Compiled::contributions',
                        'plantflow::engine::output', 'timely')),
    ('sources', ('plantflow::sources', 'plantflow::ingest', 'plantflow::mqtt', 'plantflow::opcua')),
    ('sinks', ('plantflow::sinks',)),
]

def group(owner):
    for g, prefixes in GROUPS:
        if owner.startswith(prefixes):
            return g
    return 'other'

def load(path):
    """Snapshots: fraction of the run, heap (+ massif's extra), bytes by component."""
    lines = open(path).read().split('\n')
    snaps, i = [], 0
    def tree(i, depth, owner, attr):
        m = re.match(r'\s*n(\d+): (\d+) (.*)', lines[i])
        n, b, fn = int(m.group(1)), int(m.group(2)), m.group(3)
        if owner is None and depth > 0:
            c = PF.search(fn)
            if c:
                owner = c.group(1)
            elif 'timely::' in fn:
                owner = 'timely'
        i += 1
        below = 0
        for _ in range(n):
            i, cb = tree(i, depth + 1, owner, attr)
            below += cb
        if b > below:
            attr[group(owner or 'other')] += b - below
        return i, b
    while i < len(lines):
        l = lines[i]
        if l.startswith('snapshot='):
            snaps.append({})
        elif l.startswith('time='):
            snaps[-1]['t'] = int(l[5:])
        elif l.startswith('mem_heap_B='):
            snaps[-1]['h'] = int(l[11:])
        elif l.startswith('mem_heap_extra_B='):
            snaps[-1]['h'] += int(l[17:])
        elif l.startswith('heap_tree=detailed') or l.startswith('heap_tree=peak'):
            attr = collections.Counter()
            i, _ = tree(i + 1, 0, None, attr)
            snaps[-1]['attr'] = attr
            continue
        i += 1
    end = max(s['t'] for s in snaps)
    for s in snaps:
        s['f'] = s['t'] / end
    return snaps

a, b = load(sys.argv[1]), load(sys.argv[2])
ta, tb, spill, roll = int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6]
ra, rb = load(sys.argv[7])[0], load(sys.argv[8])[0]
extra = tb - ta
order = [g for g, _ in GROUPS] + ['other']
print(f"state per tag: workload v1, {ta} vs {tb} tags, 1 worker, spill_after = {spill}, files roll by {roll}")
print(f"  at rest after the 6 h (follow mode, caught up): {ra['h'] / 2**20:6.1f} vs {rb['h'] / 2**20:6.1f} MiB"
      f" -> {(rb['h'] - ra['h']) / extra:6.0f} B per extra tag")
print("    " + ", ".join(f"{k} {(rb['attr'][k] - ra['attr'][k]) / extra:.0f}" for k in order))
if sys.argv[9] != 'none':
    rl, hours = load(sys.argv[9])[0], int(sys.argv[10]) / 3600
    print(f"  at rest after {hours:g} h and after {10 * hours:g} h, {ta} tags: {ra['h'] / 2**20:6.2f} vs {rl['h'] / 2**20:6.2f} MiB"
          f" -> {(rl['h'] - ra['h']) / (9 * hours) / 1024:5.1f} KiB per extra hour,"
          f" {(rl['h'] - ra['h']) / (9 * hours) / ta:5.1f} B per tag and hour")
    print("    " + ", ".join(f"{k} {(rl['attr'][k] - ra['attr'][k]) / 1024:.0f} KiB" for k in order))

def steady(snaps):
    """The detailed snapshots of the second half of the run, lowest heap first."""
    return sorted((s for s in snaps if s['f'] >= 0.5 and 'attr' in s), key=lambda s: s['h'])

def mean(xs):
    return sum(xs) / len(xs)

sa, sb = steady(a), steady(b)
# The floor is what stays between window closes (the lowest quarter of the
# snapshots); the median also catches a close's rows on their way out.
fa, fb = sa[:max(3, len(sa) // 4)], sb[:max(3, len(sb) // 4)]
for name, xa, xb in [("floor (lowest quarter)", fa, fb),
                     ("median", [sa[len(sa) // 2]], [sb[len(sb) // 2]])]:
    ha, hb = mean([s['h'] for s in xa]), mean([s['h'] for s in xb])
    print(f"  replay, {name:22} of the second half: {ha / 2**20:6.1f} vs {hb / 2**20:6.1f} MiB"
          f" -> {(hb - ha) / extra:6.0f} B per extra tag")
print("  replay, the floor by component, B per extra tag:")
ca, cb = collections.Counter(), collections.Counter()
for xs, c in [(fa, ca), (fb, cb)]:
    for s in xs:
        for k, v in s['attr'].items():
            c[k] += v / len(xs)
for k in order:
    print(f"    {(cb[k] - ca[k]) / extra:6.0f}  {k}")
EOF
