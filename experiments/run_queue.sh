#!/usr/bin/env bash
# Run the shell commands of a queue file, SLOTS at a time, one log per line; resumable.
#
# Usage: experiments/run_queue.sh QUEUE_FILE [SLOTS]
#   QUEUE_FILE: one "<name> <command...>" per line (blank lines and # comments skipped). A line whose name is in
#   QUEUE_FILE.done is skipped, so the same file can be run again after a restart; each command must itself be
#   restartable (sdnet experiment ... --run-index K skips finished runs and resumes killed ones from last.pt).
#   Logs: QUEUE_FILE.logs/<name>.log; a line of QUEUE_FILE.status per start and end.
# Used for the long studies on a 2-core machine (docs/results/acdc_factorisation_study.md), from a fixed commit in
# a git worktree with its own .venv.
set -uo pipefail
queue="$1"
slots="${2:-2}"
logs="$queue.logs"
mkdir -p "$logs"
touch "$queue.done"
running=0
while IFS= read -r line || [[ -n "$line" ]]; do
    [[ -z "${line// }" || "$line" == \#* ]] && continue
    name="${line%% *}"
    cmd="${line#* }"
    if grep -qxF "$name" "$queue.done"; then
        continue
    fi
    while (( running >= slots )); do
        wait -n
        running=$((running - 1))
    done
    (
        echo "$(date -Is) start $name" >> "$queue.status"
        if bash -c "$cmd" > "$logs/$name.log" 2>&1; then
            echo "$name" >> "$queue.done"
            echo "$(date -Is) done $name" >> "$queue.status"
        else
            echo "$(date -Is) FAILED($?) $name" >> "$queue.status"
        fi
    ) &
    running=$((running + 1))
done < "$queue"
wait
