#!/usr/bin/env bash
# Runs `make PHASE` for each argument in order, timing each, and prints a summary. It keeps going
# after a failed phase (so one run reports every broken part) unless FAIL_FAST=1, and exits
# non-zero if any phase failed. `make test` uses it.
set -uo pipefail

declare -a names=() results=() times=()
failed=0
for phase in "$@"; do
	start=$SECONDS
	echo
	echo "==> make $phase"
	if "${MAKE:-make}" --no-print-directory "$phase"; then
		results+=(ok)
	else
		results+=(FAILED)
		failed=1
	fi
	names+=("$phase")
	times+=($((SECONDS - start)))
	echo "<== make $phase: ${results[-1]} in ${times[-1]} s"
	if ((failed)) && [[ "${FAIL_FAST:-0}" == 1 ]]; then
		break
	fi
done

echo
echo "==> summary"
total=0
for i in "${!names[@]}"; do
	printf '  %-22s %-7s %5d s\n' "${names[$i]}" "${results[$i]}" "${times[$i]}"
	total=$((total + times[i]))
done
printf '  %-22s %-7s %5d s\n' total "$( ((failed)) && echo FAILED || echo ok)" "$total"
exit "$failed"
