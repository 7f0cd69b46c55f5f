#!/usr/bin/env bash
# Grow the study seed by seed (docs/study.md): for each seed of study/params.yaml
# whose summaries are not committed, run its stages and the report (`dvc repro --allow-missing`),
# then commit study/ alone, so that a run stopped at any point loses at most the seed it was on.
# Usage: bash scripts/study_by_seed.sh [SEED...]   (default: every seed of study/params.yaml)
set -euo pipefail
cd "$(dirname "$0")/../study"
export PATH="$PWD/../.venv/bin:$PATH"
seeds=("$@")
if [ ${#seeds[@]} -eq 0 ]; then
  mapfile -t seeds < <(python -c 'import yaml; print(*yaml.safe_load(open("params.yaml"))["seeds"], sep="\n")')
fi
arms=$(python -c 'import yaml; print(*yaml.safe_load(open("params.yaml"))["arms"])')
for seed in "${seeds[@]}"; do
  targets=()
  for arm in $arms; do targets+=("summarize@${seed}-${arm}"); done
  began=$(date +%s)
  dvc repro --allow-missing "${targets[@]}"
  dvc repro --single-item report  # the report alone: its upstream is every seed
  echo "seed ${seed}: $(( $(date +%s) - began )) s"
  git add -A .
  git commit -q -m "study: seed ${seed} (its summaries, outcomes and the report at this seed)" -- . \
    || echo "seed ${seed}: nothing new to commit"
done
