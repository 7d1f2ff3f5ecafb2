#!/bin/bash
# bench/run.sh: hearth's own benchmarks (`make bench`): `hearth bench` on every benchmark model.
#
#   bench/run.sh [MODEL_NAME...]     names from bench/models.sh (default: all)
#   env: THREADS (default 2), PP (512), TG (128), REPS (3), HEARTH_BENCH_DIR, BENCH_ARGS
#
# Missing model files are generated once with `hearth synth` (the 8B one takes ~15 minutes).
set -eu
cd "$(dirname "$0")/.."
. bench/models.sh
THREADS=${THREADS:-2}
names=${*:-$(bench_models)}
for name in $names; do
    path=$(bench_file "$name")
    echo "== $name"
    # shellcheck disable=SC2086
    "$HEARTH" bench -m "$path" -t "$THREADS" -p "${PP:-512}" -n "${TG:-128}" -r "${REPS:-3}" \
        ${BENCH_ARGS:-}
done
