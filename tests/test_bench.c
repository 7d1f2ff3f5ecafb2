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

/* --spec none,ngram on stories260K after BOS: the model's own text repeats, so n-gram lookup
 * drafts and is accepted, and greedy speculation reproduces plain greedy decoding. */
TEST(bench_spec_ngram_identical_json) {
    const char *m = test_model_path("stories/stories260K.gguf");
    if (!m) SKIP_TEST("../shared/models/stories not found");
    char cmd[8192];
    static char out[1 << 16];
    snprintf(cmd, sizeof(cmd),
             "./hearth bench -m %s -p 0 -n 256 -r 2 -t 2 --bw-mib 16 --spec none,ngram --json "
             "2>/dev/null",
             m);
    int rc = bench_run_cmd(cmd, out, sizeof(out));
    ASSERT_MSG(rc == 0, "exit %d: '%s'", rc, out);
    struct jm *j = jm_parse(out, strlen(out));
    ASSERT_MSG(j && j->type == JM_ARR, "not a JSON array: '%s'", out);
    ASSERT_MSG(j->len == 2, "%zu records: '%s'", j->len, out);
    static const char *fields[] = {"n_gen",           "avg_ts",    "samples_ts", "spec_mode",
                                   "draft_max",       "n_drafted", "n_accepted", "acceptance_rate",
                                   "tokens_per_pass", "n_passes",  "identical"};
    for (size_t i = 0; i < 2; i++)
        for (size_t f = 0; f < sizeof(fields) / sizeof(fields[0]); f++)
            EXPECT_MSG(jm_get(jm_at(j, i), fields[f]) != NULL, "record %zu lacks %s", i, fields[f]);
    const struct jm *none = jm_at(j, 0), *ng = jm_at(j, 1);
    const struct jm *mode0 = jm_get(none, "spec_mode"), *mode1 = jm_get(ng, "spec_mode");
    ASSERT(mode0 && mode1 && mode0->type == JM_STR && mode1->type == JM_STR);
    EXPECT(!strcmp(mode0->str, "none") && !strcmp(mode1->str, "ngram"));
    const struct jm *same = jm_get(ng, "identical"), *same0 = jm_get(none, "identical");
    EXPECT_MSG(same && same->type == JM_BOOL && same->num == 1, "ngram output differs: '%s'", out);
    EXPECT(same0 && same0->type == JM_NULL);
    const struct jm *acc = jm_get(ng, "n_accepted"), *dr = jm_get(ng, "n_drafted");
    const struct jm *rate = jm_get(ng, "acceptance_rate"), *per = jm_get(ng, "tokens_per_pass");
    ASSERT(acc && dr && rate && per);
    EXPECT_MSG(acc->num > 0 && dr->num >= acc->num, "accepted %g of %g", acc->num, dr->num);
    EXPECT_NEAR(rate->num, acc->num / dr->num, 1e-3);
    EXPECT_MSG(per->num > 1.0, "tokens per pass %g", per->num);
    const struct jm *per0 = jm_get(none, "tokens_per_pass"), *dr0 = jm_get(none, "n_drafted");
    EXPECT(per0 && per0->num == 1.0 && dr0 && dr0->num == 0);
    const struct jm *ts = jm_get(ng, "avg_ts"), *ng1 = jm_get(ng, "n_gen");
    EXPECT(ts && ts->num > 0 && ng1 && ng1->num == 256);
    jm_free(j);

    /* the table: a row per mode and the identity line */
    snprintf(cmd, sizeof(cmd),
             "./hearth bench -m %s -p 0 -n 64 -r 1 -t 1 --bw-mib 16 --spec none,ngram --prompt "
             "'Once upon a time' 2>&1",
             m);
    rc = bench_run_cmd(cmd, out, sizeof(out));
    ASSERT_MSG(rc == 0, "exit %d: '%s'", rc, out);
    EXPECT_MSG(strstr(out, "| ngram |") && strstr(out, "| none  |"), "no mode rows: '%s'", out);
    EXPECT_MSG(strstr(out, "ngram output identical to plain greedy"), "no identity line: '%s'",
               out);
}

/* Bad speculation options: one line on stderr naming the problem, exit code 1. */
TEST(bench_spec_bad_values) {
    const char *m = test_model_path("stories/stories260K.gguf");
    if (!m) SKIP_TEST("../shared/models/stories not found");
    static const struct {
        const char *args, *expect;
    } cases[] = {
        {"--spec bogus", "--spec"},
        {"--spec none,bogus", "--spec"},
        {"--spec ngram,ngram", "--spec"},
        {"--draft-max 0", "--draft-max"},
        {"--draft-max -2", "--draft-max"},
        {"--draft-max 65", "--draft-max"},
        {"--spec draft", "--draft-model"},
        {"--spec none,draft", "--draft-model"},
        {"--spec mtp", "MTP"},
    };
    char cmd[8192];
    static char out[1 << 14];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(cmd, sizeof(cmd), "./hearth bench -m %s -p 0 -n 4 -r 1 -t 1 --bw-mib 0 %s 2>&1", m,
                 cases[i].args);
        int rc = bench_run_cmd(cmd, out, sizeof(out));
        EXPECT_MSG(rc == 1, "%s: exit %d", cases[i].args, rc);
        EXPECT_MSG(strstr(out, cases[i].expect) != NULL, "%s: '%s'", cases[i].args, out);
        const char *nl = strchr(out, '\n');
        EXPECT_MSG(nl && nl[1] == 0, "%s: not one line: '%s'", cases[i].args, out);
    }
}
