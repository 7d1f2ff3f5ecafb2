# bench/models.sh: the benchmark models (sourced by run.sh and compare.sh).
#
# Random-weight GGUFs at real shapes, written by `hearth synth` into $HEARTH_BENCH_DIR (default
# ../hearth-bench, beside the checkout like ../shared, not inside it: the 8B file is ~5 GB). bench_models prints the
# names; bench_file NAME ensures the file exists (generating it once) and prints its path.

BENCH_DIR=${HEARTH_BENCH_DIR:-../hearth-bench}
HEARTH=${HEARTH:-./hearth}

# name  preset  type  extra synth options
BENCH_TABLE="
qwen3-0.6b-q8_0              qwen3-0.6b        Q8_0
qwen3-0.6b-q4_k_m            qwen3-0.6b        Q4_K_M
qwen3-8b-q4_k_m              qwen3-8b          Q4_K_M
qwen3moe-30b-a3b-6l-q4_k_m   qwen3moe-30b-a3b  Q4_K_M  --layers 6
qwen3.6-27b-4l-q4_k_m        qwen3.6-27b       Q4_K_M  --layers 4
qwen3.6-35b-a3b-4l-q4_k_m    qwen3.6-35b-a3b   Q4_K_M  --layers 4
"

bench_models() {
    echo "$BENCH_TABLE" | awk 'NF { print $1 }'
}

bench_file() {
    local line preset type extra path
    line=$(echo "$BENCH_TABLE" | awk -v n="$1" '$1 == n')
    [ -n "$line" ] || { echo "unknown bench model $1" >&2; return 1; }
    preset=$(echo "$line" | awk '{ print $2 }')
    type=$(echo "$line" | awk '{ print $3 }')
    extra=$(echo "$line" | awk '{ for (i = 4; i <= NF; i++) printf "%s ", $i }')
    mkdir -p "$BENCH_DIR" || return 1
    path="$(cd "$BENCH_DIR" && pwd)/$1.gguf" # absolute: compare.sh runs llama.cpp from its folder
    if [ ! -f "$path" ]; then
        echo "generating $path (once)" >&2
        # shellcheck disable=SC2086
        "$HEARTH" synth --preset "$preset" --type "$type" $extra -o "$path.tmp" >&2 &&
            mv "$path.tmp" "$path" || return 1
    fi
    echo "$path"
}
