/* test_bench.c: `hearth bench` runs on stories260K and prints what llama-bench tooling reads:
 * a markdown table with pp/tg rows, and with --json an array of records carrying llama-bench's
 * field names. Speed itself is not checked (the machine is shared); only that numbers are
 * there and sane. */
#include "test.h"

#include "../src/base/mem.h"
#include "json_mini.h"

#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

static int bench_run_cmd(const char *cmd, char *out, size_t cap) {
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

TEST(bench_json_has_llama_bench_fields) {
    const char *m = test_model_path("stories/stories260K.gguf");
    if (!m) SKIP_TEST("../shared/models/stories not found");
    char cmd[8192];
    static char out[1 << 16];
    snprintf(cmd, sizeof(cmd),
             "./hearth bench -m %s -p 8,16 -n 4 -r 2 -t 2 --bw-mib 16 --json 2>/dev/null", m);
    int rc = bench_run_cmd(cmd, out, sizeof(out));
    ASSERT_MSG(rc == 0, "exit %d: '%s'", rc, out);
    struct jm *j = jm_parse(out, strlen(out));
    ASSERT_MSG(j && j->type == JM_ARR, "not a JSON array: '%s'", out);
    EXPECT_EQ_INT(j->len, 3);
    static const char *fields[] = {
        "build_commit",   "cpu_info", "model_filename", "model_type", "model_size",
        "model_n_params", "n_batch",  "n_ubatch",       "n_threads",  "type_k",
        "type_v",         "n_prompt", "n_gen",          "test_time",  "avg_ns",
        "stddev_ns",      "avg_ts",   "stddev_ts",      "samples_ns", "samples_ts"};
    for (size_t i = 0; i < j->len; i++) {
        const struct jm *r = jm_at(j, i);
        for (size_t f = 0; f < sizeof(fields) / sizeof(fields[0]); f++)
            EXPECT_MSG(jm_get(r, fields[f]) != NULL, "record %zu lacks %s", i, fields[f]);
        const struct jm *ts = jm_get(r, "avg_ts"), *np = jm_get(r, "n_prompt");
        const struct jm *ng = jm_get(r, "n_gen"), *nt = jm_get(r, "n_threads");
        const struct jm *samples = jm_get(r, "samples_ts"), *size = jm_get(r, "model_size");
        if (!ts || !np || !ng || !nt || !samples || !size) continue;
        EXPECT_MSG(ts->type == JM_NUM && ts->num > 0, "record %zu: avg_ts %g", i, ts->num);
        EXPECT_EQ_INT(nt->num, 2);
        EXPECT(samples->type == JM_ARR && samples->len == 2);
        EXPECT(size->num > 1e6 && size->num < 2e6);
        if (ng->num > 0) { /* generation rows carry the bandwidth bound */
            const struct jm *b = jm_get(r, "bound_ts"), *bpt = jm_get(r, "bytes_per_token");
            EXPECT_MSG(b && b->num > 0, "record %zu: no bound_ts", i);
            EXPECT_MSG(bpt && bpt->num > 1e5 && bpt->num < 2e6, "record %zu: bytes_per_token", i);
        }
    }
    const struct jm *r0 = jm_at(j, 0), *r2 = jm_at(j, 2);
    EXPECT(r0 && jm_get(r0, "n_prompt") && jm_get(r0, "n_prompt")->num == 8);
    EXPECT(r2 && jm_get(r2, "n_gen") && jm_get(r2, "n_gen")->num == 4);
    jm_free(j);
}

TEST(bench_table_and_errors) {
    const char *m = test_model_path("stories/stories260K.gguf");
    if (!m) SKIP_TEST("../shared/models/stories not found");
    char cmd[8192];
    static char out[1 << 16];
    snprintf(cmd, sizeof(cmd), "./hearth bench -m %s -p 8 -n 4 -r 1 -t 1 --bw-mib 16 2>&1", m);
    int rc = bench_run_cmd(cmd, out, sizeof(out));
    ASSERT_MSG(rc == 0, "exit %d: '%s'", rc, out);
    EXPECT_MSG(strstr(out, "| pp8 ") || strstr(out, " pp8 |"), "no pp8 row: '%s'", out);
    EXPECT_MSG(strstr(out, " tg4 |"), "no tg4 row: '%s'", out);
    EXPECT_MSG(strstr(out, "t/s"), "no header: '%s'", out);
    EXPECT_MSG(strstr(out, "GB/s"), "no bandwidth: '%s'", out);
    EXPECT(bench_run_cmd("./hearth bench 2>&1", out, sizeof(out)) == 1);
    EXPECT(bench_run_cmd("./hearth bench -m x -p 1,abc 2>&1", out, sizeof(out)) == 1);
    EXPECT(bench_run_cmd("./hearth bench -m /nonexistent.gguf 2>&1", out, sizeof(out)) == 1);
    EXPECT_MSG(strstr(out, "nonexistent"), "got '%s'", out);
}
