#!/usr/bin/env bash
# Recall@10 of the default LSH mode (lsh.target_recall = 0.95) against exact top-10 on real
# catalogues and a generated one: trains once per set (factors 64), then re-runs the recommend
# stage on that model in lsh mode at the defaults, at the pre-target defaults (head 256, one
# table of 32: lsh.target_recall = 0), and in exact mode.
# Usage: scripts/lsh-target.sh [RECFLOW_BIN] [OUT_DIR] [SET...]
#   sets: ml-100k citeulike amazon-sports gowalla generated (default: all)
#   env: WORKERS (2) ITERS (15) DATA_DIR (../shared/data) GEN ("users items nnz", generated set)
#        SIMILAR=K: also write K similar items per item; the lsh rows then add how they were
#        found (recall@K against exact cosine top-K on the item sample, share scored, rounds)
set -euo pipefail
BIN=$(realpath "${1:-target/release/recflow}")
OUT=${2:-target/lsh-target}; shift 2 || true
SETS=("$@"); [ ${#SETS[@]} -gt 0 ] || SETS=(ml-100k citeulike amazon-sports gowalla generated)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DATA=$(realpath "${DATA_DIR:-$ROOT/../shared/data}")
W=${WORKERS:-2}; ITERS=${ITERS:-15}; read -r GU GI GN <<<"${GEN:-200000 50000 2000000}"
mkdir -p "$OUT"; OUT=$(realpath "$OUT")
input() { # set -> [input] lines
  case $1 in
    ml-100k) printf 'path = ["%s"]\nformat = "tsv"\nheader = "false"\nweight = 2\nmin_weight = 4.0\n' "$DATA/ml-100k/u.data" ;;
    citeulike|amazon-sports) printf 'path = ["%s"]\nformat = "whitespace"\nheader = "false"\nweight = "none"\n' "$DATA/$1/train.txt" ;;
    gowalla) printf 'path = ["%s"]\nformat = "tsv"\nheader = "false"\n' "$DATA/gowalla-lightgcn/train.tsv.gz" ;;
    generated)
      local f="$OUT/gen-$GU-$GI-$GN.tsv"
      [ -s "$f" ] || "$BIN" generate --users "$GU" --items "$GI" --nnz "$GN" --seed 2 --out "$f" >/dev/null
      printf 'path = ["%s"]\nheader = "false"\nweight = 2\n' "$f" ;;
  esac
}
report() { # set label store
  python3 - "$1" "$2" "$3"/v*/manifest.json <<'PY'
import json, sys
m = json.load(open(sys.argv[3]))
def similar(c):
    if not c:
        return ""
    rec = c.get("recall_at_k")
    return (f" similar ({c['method']}): recall@{c['recall_k']} {'-' if rec is None else f'{rec:.4f}'} on "
            f"{c['sample_items']} items, share {c['catalog_share']:.4f}, {len(c['rounds'])} rounds, "
            f"met {c.get('target_met')}: {c['stopped']} |")
r = m["recommend"]; l = r.get("lsh") or {}
c = l.get("calibration") or {}
z = c.get("chosen") or {}
share = l.get("catalog_share", (r.get("exact") or {}).get("catalog_share", 1.0))
rec = l.get("recall_at_k")
print(f"| {sys.argv[1]} | {sys.argv[2]} | {m['counts']['items'] if 'counts' in m and 'items' in m['counts'] else '?'} | "
      f"{'-' if rec is None else f'{rec:.4f}'} | {share:.4f} | "
      f"{z.get('head', '-')}/{z.get('tables', '-')}/{z.get('bucket_items', '-')} | {len(c.get('rounds', []))} | "
      f"{l.get('target_met', '-')} | {m['timings']['recommend_secs']:.2f} |" + similar(l.get("similar")))
PY
}
echo "# $(date -u +%FT%TZ) $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null), $W workers, factors 64, cg x $ITERS"
echo "| set | mode | items | recall@10 | share scored | head/tables/bucket_items | rounds | target met | recommend s |"
echo "|---|---|---|---|---|---|---|---|---|"
for s in "${SETS[@]}"; do
  job="$OUT/$s.toml"; store="$OUT/$s-store"
  { echo "[input]"; input "$s"
    printf '[als]\nfactors = 64\niterations = %s\nloss_every = 0\n[recommend]\nk = 10\nmode = "lsh"\n' "$ITERS"
    printf '[eval]\nrecall_sample = 2000\n[output]\nkeep_versions = 1\n'
    [ -z "${SIMILAR:-}" ] || printf '[similar]\nk = %s\n' "$SIMILAR"; } > "$job"
  rm -rf "$store"
  "$BIN" run "$job" -w "$W" -q --set output.store="$store" --set recommend.k=0 >/dev/null
  again=(--set output.store="$store" --set model.warm_start=true --set model.snapshot=false --set als.iterations=0)
  "$BIN" run "$job" -w "$W" -q "${again[@]}" >/dev/null; report "$s" "lsh (default)" "$store"
  "$BIN" run "$job" -w "$W" -q "${again[@]}" --set lsh.target_recall=0 >/dev/null; report "$s" "lsh, target off" "$store"
  "$BIN" run "$job" -w "$W" -q "${again[@]}" --set recommend.mode=exact >/dev/null; report "$s" "exact" "$store"
done
