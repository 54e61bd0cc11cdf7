#!/usr/bin/env bash
# Renders a run report (report.html) to a PNG with headless Chromium.
#
#   scripts/report-screenshot.sh REPORT_OR_STORE [OUT.png] [WIDTH] [HEIGHT]
#
# REPORT_OR_STORE: a report.html, a version directory, or a model store (its CURRENT version).
# Needs Chromium: on Debian/Ubuntu `sudo apt-get install -y chromium` (set CHROMIUM to use
# another binary, e.g. google-chrome). The page needs no network and no JavaScript.
set -euo pipefail

if [ $# -lt 1 ]; then
  echo "usage: $0 REPORT_OR_STORE [OUT.png] [WIDTH] [HEIGHT]" >&2
  exit 2
fi
src=$1
out=${2:-report.png}
width=${3:-1400}
height=${4:-2200}

if [ -d "$src" ]; then
  if [ -f "$src/report.html" ]; then
    src=$src/report.html
  elif [ -f "$src/CURRENT" ]; then
    src=$src/$(tr -d '[:space:]' < "$src/CURRENT")/report.html
  fi
fi
if [ ! -f "$src" ]; then
  echo "error: no report.html at $src (run a job first: recflow run JOB.toml)" >&2
  exit 1
fi

browser=${CHROMIUM:-}
if [ -z "$browser" ]; then
  for b in chromium chromium-browser google-chrome google-chrome-stable; do
    if command -v "$b" > /dev/null 2>&1; then
      browser=$b
      break
    fi
  done
fi
if [ -z "$browser" ]; then
  echo "error: Chromium not found: install it (Debian: sudo apt-get install -y chromium) or set CHROMIUM" >&2
  exit 1
fi

abs=$(cd "$(dirname "$src")" && pwd)/$(basename "$src")
case $out in
  /*) out_abs=$out ;;
  *) out_abs=$(pwd)/$out ;;
esac
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
# --no-sandbox: needed when running as root (containers, CI); the page is a local file.
"$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars \
  --user-data-dir="$profile" --no-first-run --disable-extensions \
  --window-size="$width,$height" --screenshot="$out_abs" "file://$abs" > /dev/null 2>&1 || true
if [ ! -s "$out_abs" ]; then
  echo "error: $browser wrote no screenshot to $out_abs" >&2
  exit 1
fi
echo "$out_abs"
