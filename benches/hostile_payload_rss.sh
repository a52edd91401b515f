#!/bin/bash
# Peak RSS of a node given one 1 MiB MQTT array of bad elements, against an idle node.
# Usage: cargo build --release && bash benches/hostile_payload_rss.sh (needs mosquitto, mosquitto_pub, python3 with duckdb).
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/plantflow}
PORT=${PORT:-18831}
TMP=$(mktemp -d)
mosquitto -p $PORT >/dev/null 2>&1 & MOSQ=$!
sleep 0.5
python3 - > $TMP/hostile.json <<'PY'
el='{"value":"xxxxxxxxxxxxxxx"}'
n=(1<<20)//(len(el)+1)
print("["+",".join([el]*n)+"]",end="")
PY
echo "payload bytes: $(stat -c %s $TMP/hostile.json), elements: $(grep -o value $TMP/hostile.json | wc -l)"

for mode in idle hostile; do
  out=$(mktemp -d)
  INPUT_DIR=tests/fixtures/workload_v1_small OUT_DIR=$out MQTT_URL=mqtt://127.0.0.1:$PORT MQTT_CLIENT_ID=rss-$mode \
    $BIN run dataflows/workload_v1_mqtt.toml --json > $TMP/rss-$mode.json 2>$TMP/rss-$mode.err &
  P=$!
  sleep 2
  if [ $mode = hostile ]; then mosquitto_pub -p $PORT -q 1 -t plant/s1/l1/m1/power_kw -f $TMP/hostile.json; fi
  sleep 5
  kill -TERM $P; wait $P; echo "exit $?"
  echo "$mode: $(python3 -c "import json;d=json.load(open('$TMP/rss-$mode.json'));print('peak_rss MiB', round(d['peak_rss_bytes']/2**20,1), 'dead letters', d.get('dead_letters'))")"
  python3 -c "import duckdb;print(duckdb.sql(\"select count(*), max(length(raw)), sum(length(raw)) from read_parquet('$out/dead_letter/**/*.parquet')\").fetchall())" 2>&1 | tail -1
done
kill $MOSQ
