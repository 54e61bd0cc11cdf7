#!/usr/bin/env bash
# One nightly retraining: warm-start JOB from its store's current version with yesterday's
# events, for cron or a systemd timer.
#
#   scripts/nightly/nightly.sh JOB.toml EVENTS_DIR [recflow run flags...]
#
# Events are expected under EVENTS_DIR/YYYY-MM-DD/ (one directory per day; any number of files,
# same format as the job's input). DAY=YYYY-MM-DD overrides "yesterday" (to catch up a missed
# night, run the days in order). RECFLOW is the binary (default: recflow on PATH).
# Exit codes are recflow's: 0 published, 1 failed (nothing published, CURRENT unchanged),
# 2 bad job, 3 another run holds the store (this day was not trained: run it again with
# DAY=YYYY-MM-DD once the other run has ended).
set -euo pipefail
job=${1:?usage: nightly.sh JOB.toml EVENTS_DIR [recflow run flags...]}
events=${2:?usage: nightly.sh JOB.toml EVENTS_DIR [recflow run flags...]}
shift 2
day=${DAY:-$(date -d yesterday +%F)}
recflow=${RECFLOW:-recflow}
dir="$events/$day"
if ! compgen -G "$dir/*" > /dev/null; then
    echo "$(date -Is) recflow nightly: no events in $dir, nothing to do"
    exit 0
fi
echo "$(date -Is) recflow nightly: $job with $dir"
# The day's directory: recflow reads its regular files except hidden ones (write partial files
# as .name.tmp and rename them when complete), and refuses a file an earlier version consumed.
status=0
"$recflow" run "$job" --set model.warm_start=true --set "input.path=[\"$dir\"]" "$@" || status=$?
case $status in
    0) echo "$(date -Is) recflow nightly: published" ;;
    3) echo "$(date -Is) recflow nightly: the store is locked by another run; $day was not trained" ;;
    *) echo "$(date -Is) recflow nightly: failed with exit code $status; the current version is unchanged" ;;
esac
exit $status
