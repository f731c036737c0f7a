#!/usr/bin/env bash
# The reliability suite's summary table, from the result files its parts wrote: what each part did and
# the two figures the promise is about, runs lost and duplicate results, both of which must be 0.
set -euo pipefail
RESULTS=${MOESWEEP_RELIABILITY_RESULTS:?ctest passes the results directory}
parts=(kill_random kill_worker torn_files bad_inputs readers_wal readers_rollback disk_full)
total_faults=0 total_bad=0 total_sweeps=0 total_lost=0 total_duplicates=0 failed=0
row() { printf '%-16s %-7s %7s %11s %8s %10s %11s %8s  %s\n' "$@" | tee -a "$RESULTS/summary.txt"; }
mkdir -p "$RESULTS" && : > "$RESULTS/summary.txt"
row part result faults "bad inputs" sweeps "runs lost" duplicates seconds note
for part in "${parts[@]}"; do
  file=$RESULTS/$part.result
  if [ ! -f "$file" ]; then
    row "$part" "not run" - - - - - - ""
    continue
  fi
  declare -A r=()
  while IFS='=' read -r key value; do r[$key]=$value; done < "$file"
  row "$part" "${r[status]}" "${r[faults]}" "${r[bad_inputs]}" "${r[sweeps]}" "${r[lost]}" "${r[duplicates]}" \
    "${r[seconds]}" "${r[note]}"
  total_faults=$((total_faults + r[faults])) total_bad=$((total_bad + r[bad_inputs]))
  total_sweeps=$((total_sweeps + r[sweeps])) total_lost=$((total_lost + r[lost]))
  total_duplicates=$((total_duplicates + r[duplicates]))
  [ "${r[status]}" = fail ] && failed=$((failed + 1))
  unset r
done
row total "" "$total_faults" "$total_bad" "$total_sweeps" "$total_lost" "$total_duplicates" "" ""
echo "(also in $RESULTS/summary.txt)"
[ "$total_lost" -eq 0 ] || { echo "FAIL: $total_lost runs lost"; exit 1; }
[ "$total_duplicates" -eq 0 ] || { echo "FAIL: $total_duplicates duplicate results"; exit 1; }
[ "$failed" -eq 0 ] || { echo "FAIL: $failed part(s) failed"; exit 1; }
echo "reliability: faults injected $total_faults, bad inputs tried $total_bad, sweeps completed $total_sweeps, runs lost 0, duplicate results 0"
