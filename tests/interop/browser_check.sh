#!/usr/bin/env bash
# Loads an HTML file in headless Chromium: the DOM must contain the report's
# charts, the console must stay free of errors, and a screenshot is written.
# usage: browser_check.sh REPORT.html SCREENSHOT.png
set -euo pipefail
page=$(realpath "$1"); shot=$(realpath -m "$2")
profile=$(mktemp -d)
flags=(--headless --no-sandbox --disable-gpu --disable-quic --no-first-run
       --disable-background-networking --disable-component-update --disable-sync
       --user-data-dir="$profile" --enable-logging=stderr --v=0)
dom=$(chromium "${flags[@]}" --virtual-time-budget=2000 --dump-dom "file://$page" 2>"$profile/console.log")
charts=$(grep -o '<svg' <<<"$dom" | wc -l)
echo "chromium: DOM loaded, $charts SVG charts"
[ "$charts" -ge 3 ] || { echo "expected at least 3 charts in the rendered DOM"; exit 1; }
if grep -E 'CONSOLE|Uncaught|ERROR:.*(javascript|Failed to load)' "$profile/console.log" | grep -v 'Fontconfig'; then
  echo "console errors while loading the report"; exit 1
fi
chromium "${flags[@]}" --window-size=1280,2400 --hide-scrollbars --screenshot="$shot" "file://$page" 2>/dev/null
[ -s "$shot" ] || { echo "no screenshot written"; exit 1; }
echo "screenshot: $shot ($(stat -c %s "$shot") bytes)"
rm -rf "$profile"
