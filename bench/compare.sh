#!/bin/bash
# bench/compare.sh: hearth vs llama.cpp on the same GGUF files, alternating the two engines.
#
#   bench/compare.sh [MODEL_NAME...]      names from bench/models.sh (default: all)
#   env: THREADS (2), PP (512), TG (128), ROUNDS (3: alternations per model), REPS (2: timed
#        runs per engine per round), HEARTH_BENCH_DIR (files, default ../hearth-bench),
#        HEARTH_PEER (an installed copy of ../shared/peer; default: installed into
#        $HEARTH_BENCH_DIR/peer on first use, with npm, as its README says)
#
# Each round runs `hearth bench` and then llama.cpp's `node bench.mjs` (../shared/peer) on the
# same file with the same thread count, so both see the same machine load; the machine is
# shared and noisy, so the table reports the median over rounds of each engine's per-round
# figure (hearth: mean of REPS runs; llama.cpp: median of REPS runs after one warm-up).
# llama.cpp's tg figure includes node-llama-cpp's per-token JavaScript and full-vocabulary
# sampling; its pp figure is llama-bench's. Raw per-round numbers go to $OUT (a .tsv). The
# "per CPU-s" ratios compare tokens per CPU-second (t/s / CPU share): with THREADS=1 they do
# not depend on how busy the machine was; with more threads a spinning engine counts its spins.
set -eu
cd "$(dirname "$0")/.."
. bench/models.sh
THREADS=${THREADS:-2}
PP=${PP:-512}
TG=${TG:-128}
ROUNDS=${ROUNDS:-3}
REPS=${REPS:-2}
OUT=${OUT:-$BENCH_DIR/compare-$(date +%Y%m%d-%H%M%S).tsv}

PEER=${HEARTH_PEER:-$BENCH_DIR/peer}
if [ ! -f "$PEER/bench.mjs" ] || [ ! -d "$PEER/node_modules" ]; then
    echo "installing ../shared/peer into $PEER" >&2
    mkdir -p "$PEER"
    cp -r ../shared/peer/. "$PEER/"
    (cd "$PEER" && NODE_LLAMA_CPP_SKIP_DOWNLOAD=true npm ci --omit=optional >&2)
fi

names=${*:-$(bench_models)}
printf 'model\tround\tengine\tpp_ts\ttg_ts\tpp_cpu\ttg_cpu\ttg_bound\n' > "$OUT"
for name in $names; do
    path=$(bench_file "$name")
    for round in $(seq 1 "$ROUNDS"); do
        h=$("$HEARTH" bench -m "$path" -t "$THREADS" -p "$PP" -n "$TG" -r "$REPS" --json)
        read -r hpp htg hppc htgc hbf < <(echo "$h" | python3 -c '
import json, sys
r = json.load(sys.stdin)
pp = [x for x in r if x["n_prompt"] > 0] or [{"avg_ts": 0, "cpu_share": 0}]
tg = [x for x in r if x["n_gen"] > 0] or [{"avg_ts": 0, "cpu_share": 0}]
print(pp[0]["avg_ts"], tg[0]["avg_ts"], pp[0]["cpu_share"], tg[0]["cpu_share"],
      tg[0].get("bound_frac") or 0)')
        l=$(cd "$PEER" && node bench.mjs "$path" --threads "$THREADS" --pp "$PP" --tg "$TG" \
            --reps "$REPS" 2>/dev/null | tail -1)
        read -r lpp ltg lppc ltgc < <(echo "$l" | python3 -c '
import json, statistics, sys
r = json.load(sys.stdin)
share = lambda k: statistics.median(r.get(k) or [0])
print(r.get("pp_tps", 0), r.get("tg_tps", 0), share("pp_cpu_share"), share("tg_cpu_share"))')
        printf '%s\t%s\thearth\t%s\t%s\t%s\t%s\t%s\n' "$name" "$round" "$hpp" "$htg" "$hppc" \
            "$htgc" "$hbf" >> "$OUT"
        printf '%s\t%s\tllama.cpp\t%s\t%s\t%s\t%s\t0\n' "$name" "$round" "$lpp" "$ltg" "$lppc" \
            "$ltgc" >> "$OUT"
        echo "$name round $round: hearth pp $hpp tg $htg (cpu $hppc $htgc) |" \
            "llama.cpp pp $lpp tg $ltg (cpu $lppc $ltgc)" >&2
    done
done

python3 - "$OUT" "$PP" "$TG" "$THREADS" <<'PY'
import csv, statistics, sys
path, pp, tg, threads = sys.argv[1:5]
rows = list(csv.DictReader(open(path), delimiter="\t"))
models = []
for r in rows:
    if r["model"] not in models:
        models.append(r["model"])
print(f"\n{threads} threads, median over rounds (raw: {path})\n")
print(f"| model | hearth pp{pp} | llama.cpp pp{pp} | ratio | hearth tg{tg} | llama.cpp tg{tg} | ratio |"
      f" pp ratio per CPU-s | tg ratio per CPU-s | hearth tg of bound |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for m in models:
    def med(engine, key, per_cpu=False):
        v = []
        for r in rows:
            if r["model"] != m or r["engine"] != engine:
                continue
            x = float(r[key])
            if per_cpu:  # tokens per CPU-second: load-independent for 1 thread
                c = float(r[key.replace("_ts", "_cpu")])
                x = x / c if c > 0 else 0.0
            v.append(x)
        return statistics.median(v) if v else 0.0
    hp, lp = med("hearth", "pp_ts"), med("llama.cpp", "pp_ts")
    ht, lt = med("hearth", "tg_ts"), med("llama.cpp", "tg_ts")
    ratio = lambda a, b: a / b if b else 0.0
    cp = ratio(med("hearth", "pp_ts", True), med("llama.cpp", "pp_ts", True))
    ct = ratio(med("hearth", "tg_ts", True), med("llama.cpp", "tg_ts", True))
    print(f"| {m} | {hp:.1f} | {lp:.1f} | {ratio(hp, lp):.2f}x | {ht:.2f} | {lt:.2f} | "
          f"{ratio(ht, lt):.2f}x | {cp:.2f}x | {ct:.2f}x | {100 * med('hearth', 'tg_bound'):.0f}% |")
cpu = lambda e, k: statistics.median([float(r[k]) for r in rows if r["engine"] == e] or [0])
print(f"\nmedian CPU share (CPU time / (wall x threads); ~1 on an idle machine; spinning counts): "
      f"hearth pp {cpu('hearth', 'pp_cpu'):.2f} tg {cpu('hearth', 'tg_cpu'):.2f}, llama.cpp pp "
      f"{cpu('llama.cpp', 'pp_cpu'):.2f} tg {cpu('llama.cpp', 'tg_cpu'):.2f}")
PY
