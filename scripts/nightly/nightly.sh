#!/usr/bin/env bash
# Nightly retraining: warm-start JOB from its store's current version with each day's events,
# for cron or a systemd timer.
#
#   scripts/nightly/nightly.sh JOB.toml EVENTS_DIR [recflow run flags...]
#
# Events are expected under EVENTS_DIR/YYYY-MM-DD/ (one directory per day; any number of files,
# same format as the job's input; hidden files are skipped, so write partial files as .name.tmp
# and rename them when complete). The last day trained is kept in STATE (default
# EVENTS_DIR/.recflow-last-trained): every later day up to DAY (default yesterday) is trained in
# order, so a night that was missed, locked out or failed is caught up the next time. Without a
# state file only DAY is trained (set FROM=YYYY-MM-DD to start earlier).
# RECFLOW is the binary (default: recflow on PATH).
# Exit codes are recflow's for the first day that did not publish: 1 failed (nothing published,
# CURRENT unchanged), 2 bad job, 3 another run holds the store; 0 when every day published.
set -euo pipefail
job=${1:?usage: nightly.sh JOB.toml EVENTS_DIR [recflow run flags...]}
events=${2:?usage: nightly.sh JOB.toml EVENTS_DIR [recflow run flags...]}
shift 2
day=${DAY:-$(date -d yesterday +%F)}
recflow=${RECFLOW:-recflow}
state=${STATE:-$events/.recflow-last-trained}
last=$(cat "$state" 2>/dev/null || true)
from=${FROM:-}
if [[ -z $last && -z $from ]]; then from=$day; fi
log() { echo "$(date -Is) recflow nightly: $*"; }
for d in $(ls -1 "$events" | grep -E '^[0-9]{4}-[0-9]{2}-[0-9]{2}$' | sort); do
    if [[ -n $last && ! $d > $last ]] || [[ -n $from && $d < $from ]]; then continue; fi
    if [[ $d > $day ]]; then break; fi
    dir="$events/$d"
    if ! compgen -G "$dir/*" > /dev/null; then
        log "no events in $dir"
        echo "$d" > "$state"
        continue
    fi
    log "$job with $dir"
    status=0
    "$recflow" run "$job" --set model.warm_start=true --set "input.path=[\"$dir\"]" "$@" || status=$?
    case $status in
        0) log "published $d"; echo "$d" > "$state" ;;
        3) log "the store is locked by another run; $d and later days wait for the next run"; exit 3 ;;
        *) log "$d failed with exit code $status; the current version is unchanged"; exit $status ;;
    esac
done
