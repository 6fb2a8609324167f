#!/usr/bin/env bash
# Commit the small result files of a long study's finished runs as they finish (resume notes: a session may end
# at any time, and only committed files survive a change of machine).
#
# Usage: experiments/harvest_results.sh INTERVAL_S STUDY_DIR=NAME [STUDY_DIR=NAME ...]
#   Every INTERVAL_S seconds, when the number of finished runs (study result.json files) under the STUDY_DIRs has
#   changed, runs `experiments/study_curves.py STUDY_DIR --out docs/results/acdc_factorisation_NAME` for each
#   (result files, configs, epoch records, curves, flatness table) and commits only those paths. Run from the
#   repository's main checkout, e.g. for issue 24:
#   nohup setsid experiments/harvest_results.sh 600 /work/studies/s24long=long /work/studies/s24short=short &
set -uo pipefail
interval="$1"; shift
shopt -s nullglob
seen=""
dirs=(); for pair in "$@"; do dirs+=("${pair%%=*}"); done
while true; do
  results=(); for d in "${dirs[@]}"; do results+=("$d"/*/*/*/result.json); done
  n=$( (( ${#results[@]} )) && grep -l '"sdnet.study.run' "${results[@]}" | wc -l || echo 0)
  if [[ "$n" != "$seen" ]]; then
    paths=()
    for pair in "$@"; do
      dir="${pair%%=*}"; name="${pair#*=}"
      [[ -d "$dir" ]] && nice .venv/bin/python experiments/study_curves.py "$dir" --out "docs/results/acdc_factorisation_$name" > /dev/null 2>&1
      paths+=(docs/results/acdc_factorisation_"$name"_*)
    done
    if (( ${#paths[@]} )) && git add "${paths[@]}" && { git diff --cached --quiet -- "${paths[@]}" || git commit -q -m "Finished study runs' result files ($n runs: $*)" -- "${paths[@]}"; }; then
      seen="$n"; echo "$(date -Is) $n finished runs harvested"
    else
      echo "$(date -Is) commit failed ($n)"
    fi
  fi
  sleep "$interval"
done
