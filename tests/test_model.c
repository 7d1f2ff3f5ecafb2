/* test_model.c: end-to-end forward-pass checks against references nobody here wrote.
 *
 * - stories260K (a real trained llama): greedy 256 tokens from BOS equal the stored continuation,
 *   and the step-0/1 logits match a float64 reference within 1e-4.
 * - ../shared/models/synthetic/NAME.golden.json (llama.cpp's own outputs): greedy continuation
 *   identical, and top-5 log-softmax at every recorded position within tolerance.
 * - batched prefill equals token-by-token evaluation.
 */
#include "test.h"
#include "../src/backend/cpu/cpu_kernels.h"

#include "../src/base/mem.h"
#include "../src/engine/engine.h"
#include "json_mini.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static struct engine *open_engine(const char *path, int n_threads) {
    struct engine_params ep;
    engine_params_default(&ep);
    ep.n_threads = n_threads;
    struct error err = {0};
    struct engine *e = NULL;
    if (engine_open(&e, path, &ep, &err)) {
        test_fail(__FILE__, __LINE__, "engine_open(%s): %s", path, err.msg);
        return NULL;
    }
    return e;
}

static struct session *new_session(struct engine *e, int n_ctx, enum kv_type kv) {
    struct session_params sp;
    session_params_default(&sp);
    sp.n_ctx = n_ctx;
    sp.kv_type = kv;
    struct error err = {0};
    struct session *s = NULL;
    if (session_create(&s, e, &sp, &err)) test_fail(__FILE__, __LINE__, "session: %s", err.msg);
    return s;
}

static int argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

static void log_softmax(const float *x, int n, double *out) {
    double mx = -INFINITY, sum = 0;
    for (int i = 0; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    for (int i = 0; i < n; i++) sum += exp(x[i] - mx);
    double lse = mx + log(sum);
    for (int i = 0; i < n; i++) out[i] = x[i] - lse;
}

/* ---- stories260K ---- */

TEST(model_stories_greedy256) {
    const char *path = test_model_path("stories/stories260K.gguf");
    const char *ref = test_model_path("stories/stories260K.greedy256.txt");
    if (!path || !ref) SKIP_TEST("../shared/models/stories not found");
    char *text = test_read_file(test_model_path("stories/stories260K.greedy256.txt"), NULL);
    ASSERT(text);
    /* the id line is the first line that does not start with '#' */
    char *line = text;
    while (*line == '#') line = strchr(line, '\n') + 1;
    int want[256], n_want = 0;
    for (char *p = line; *p && *p != '\n' && n_want < 256;) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p) break;
        want[n_want++] = (int)v;
        p = end;
    }
    mem_free(text);
    ASSERT(n_want == 256);
    struct engine *e = open_engine(path, 2);
    ASSERT(e);
    for (int kv = 0; kv < 2; kv++) { /* F16 (default) and F32 KV cache */
        struct session *s = new_session(e, 512, kv == 0 ? KV_TYPE_F16 : KV_TYPE_F32);
        ASSERT(s);
        struct error err = {0};
        int32_t tok = engine_token_bos(e);
        EXPECT_EQ_INT(tok, 1);
        int n_match = 0;
        for (int i = 0; i < 256; i++) {
            ASSERT(session_eval(s, &tok, 1, NULL, &err) == 0);
            tok = argmax(session_logits(s), 512);
            if (tok != want[i]) break;
            n_match++;
        }
        EXPECT_MSG(n_match == 256, "kv %s: first %d of 256 greedy tokens match",
                   kv == 0 ? "f16" : "f32", n_match);
        session_free(s);
    }
    engine_close(e);
}

TEST(model_stories_logits) {
    const char *path = test_model_path("stories/stories260K.gguf");
    if (!path || !test_model_path("stories/stories260K.logits-bos.txt"))
        SKIP_TEST("../shared/models/stories not found");
    char *text = test_read_file(test_model_path("stories/stories260K.logits-bos.txt"), NULL);
    ASSERT(text);
    static float ref[2][512];
    char *p = text;
    for (int row = 0; row < 2; row++) {
        while (*p == '#') p = strchr(p, '\n') + 1;
        for (int i = 0; i < 512; i++) ref[row][i] = strtof(p, &p);
        while (*p == '\n') p++;
    }
    mem_free(text);
    struct engine *e = open_engine(path, 2);
    ASSERT(e);
    struct session *s = new_session(e, 64, KV_TYPE_F32);
    struct error err = {0};
    int32_t ids[2] = {1, 403};
    double max_err = 0;
    for (int step = 0; step < 2; step++) {
        ASSERT(session_eval(s, &ids[step], 1, NULL, &err) == 0);
        const float *l = session_logits(s);
        for (int i = 0; i < 512; i++) max_err = fmax(max_err, fabs(l[i] - ref[step][i]));
    }
    EXPECT_MSG(max_err <= 1e-4, "max |logit - reference| = %g (want <= 1e-4)", max_err);
    session_free(s);
    engine_close(e);
}

/* ---- synthetic goldens (llama.cpp) ---- */

struct golden {
    struct jm *root;
    int32_t prompt[64];
    int n_prompt;
    int32_t greedy[64];
    int n_greedy;
};

static int golden_load(const char *path, struct golden *g) {
    size_t n;
    char *text = test_read_file(path, &n);
    if (!text) return -1;
    g->root = jm_parse(text, n);
    mem_free(text);
    if (!g->root) return -1;
    const struct jm *pr = jm_get(g->root, "prompt_ids"), *gr = jm_get(g->root, "greedy_ids");
    if (!pr || !gr || pr->len > 64 || gr->len > 64) return -1;
    g->n_prompt = (int)pr->len;
    g->n_greedy = (int)gr->len;
    for (size_t i = 0; i < pr->len; i++) g->prompt[i] = (int32_t)pr->items[i].num;
    for (size_t i = 0; i < gr->len; i++) g->greedy[i] = (int32_t)gr->items[i].num;
    return 0;
}

/* Max |our log-softmax - golden| over the top-5 of one recorded position. */
static double compare_top(const struct jm *pos, const float *logits, int n_vocab, double *lsm) {
    log_softmax(logits, n_vocab, lsm);
    const struct jm *top = jm_get(pos, "top");
    double worst = 0;
    for (size_t j = 0; top && j < top->len; j++) {
        int id = (int)top->items[j].items[0].num;
        double lp = top->items[j].items[1].num;
        worst = fmax(worst, fabs(lsm[id] - lp));
    }
    return worst;
}

/* Tolerances (see README "Correctness"). llama.cpp's own numbers are not exactly reproducible:
 * - F32 weights: llama.cpp is deterministic here, but its default F16 KV cache rounds q, K, V and
 *   the running attention sum to f16, so a 1e-7 difference anywhere upstream (summation order,
 *   its vectorised exp, an FMA contraction) can move one rounding by an f16 ulp and a log-prob by
 *   up to ~4e-3. hearth reproduces the arithmetic of that path (the F32 gemm and expert dot
 *   orders, ggml's vector exp in swiglu and silu, the contracted RoPE rotation and conv taps):
 *   every F32 file agrees to the goldens' 1e-6 rounding; 1e-3 leaves room for other CPUs.
 * - quantized weights: llama.cpp's log-probs at a position change by up to 0.19 (qwen3-q4_k_m)
 *   when the same tokens are evaluated in a batch of a different length (its matmul picks
 *   repacked/AMX kernels with their own activation rounding per row group; measured with
 *   ../shared/peer/logits.mjs), and the goldens were recorded on another CPU. 0.25 bounds that.
 *   Greedy ids must match, except at a step where hearth's own top-2 margin is inside that
 *   tolerance (a near-tie); at most one such step is allowed, and the golden id is then fed. */
#define TOL_F32   1e-3
#define TOL_QUANT 0.25

/* Runs one golden file the way it was recorded: the log-probs come from one batched evaluation
 * of prompt + the first 31 generated ids; the greedy ids from token-by-token generation. */
static void check_golden(const char *name, double tol, enum kv_type kv) {
    char rel[256], grel[256];
    snprintf(rel, sizeof(rel), "synthetic/%s.gguf", name);
    snprintf(grel, sizeof(grel), "synthetic/%s.golden.json", name);
    if (!test_model_path(rel)) {
        test_skip("../shared/models/%s not found", rel);
        return;
    }
    char path[4096];
    snprintf(path, sizeof(path), "%s", test_model_path(rel));
    struct golden g = {0};
    if (golden_load(test_model_path(grel), &g)) {
        test_fail(__FILE__, __LINE__, "%s: cannot read golden", name);
        jm_free(g.root);
        return;
    }
    struct engine *e = open_engine(path, 2);
    if (!e) {
        jm_free(g.root);
        return;
    }
    struct engine_info info;
    engine_get_info(e, &info);
    int V = info.n_vocab, n_all = g.n_prompt + g.n_greedy - 1;
    int32_t all_ids[128];
    memcpy(all_ids, g.prompt, (size_t)g.n_prompt * sizeof(int32_t));
    memcpy(all_ids + g.n_prompt, g.greedy, (size_t)(g.n_greedy - 1) * sizeof(int32_t));
    struct session *s = new_session(e, 128, kv), *s2 = new_session(e, 128, kv);
    float *all = mem_alloc((size_t)n_all * V * sizeof(float));
    double *lsm = mem_alloc((size_t)V * sizeof(double));
    struct error err = {0};
    const struct jm *positions = jm_get(g.root, "positions");
    double worst = 0;
    int worst_pos = -1, n_match = 0, n_near_tie = 0, n_pos = 0, n_within_1e3 = 0;
    if (!s || !s2 || !all || !lsm || session_eval(s, all_ids, n_all, all, &err)) {
        test_fail(__FILE__, __LINE__, "%s: eval failed: %s", name, err.msg);
        goto done;
    }
    for (size_t i = 0; positions && i < positions->len; i++) {
        const struct jm *pos = &positions->items[i];
        int p = (int)jm_get(pos, "pos")->num;
        if (p >= n_all) continue;
        double w = compare_top(pos, all + (size_t)p * V, V, lsm);
        if (getenv("HEARTH_TEST_VERBOSE")) printf("    pos %d err %.2e\n", p, w);
        n_pos++;
        n_within_1e3 += w <= 1e-3;
        if (w > worst) worst = w, worst_pos = p;
    }
    if (session_eval(s2, g.prompt, g.n_prompt, NULL, &err)) {
        test_fail(__FILE__, __LINE__, "%s: eval failed: %s", name, err.msg);
        goto done;
    }
    for (int i = 0; i < g.n_greedy; i++) {
        const float *l = session_logits(s2);
        int32_t tok = argmax(l, V);
        if (tok != g.greedy[i]) {
            /* logit differences equal log-prob differences */
            double gap = (double)l[tok] - (double)l[g.greedy[i]];
            if (tol < TOL_QUANT || gap > tol) break;
            n_near_tie++;
            tok = g.greedy[i];
        }
        n_match++;
        if (session_eval(s2, &tok, 1, NULL, &err)) break;
    }
    EXPECT_MSG(n_match == g.n_greedy, "%s: %d of %d greedy ids match llama.cpp", name, n_match,
               g.n_greedy);
    EXPECT_MSG(n_near_tie <= 1, "%s: %d near-tie steps", name, n_near_tie);
    EXPECT_MSG(worst <= tol, "%s: top-5 log-softmax max error %g at pos %d (tolerance %g)", name,
               worst, worst_pos, tol);
    printf("  %s: greedy %d/%d (%d near-tie), top-5 logprob max err %.2e, %d/%d positions "
           "within 1e-3\n",
           name, n_match, g.n_greedy, n_near_tie, worst, n_within_1e3, n_pos);
done:
    mem_free(all);
    mem_free(lsm);
    session_free(s);
    session_free(s2);
    engine_close(e);
    jm_free(g.root);
}

/* Long prompts (tests/data/long/NAME.json, written by ../shared/peer/logits.mjs: llama.cpp's
 * top-5 log-probs at every position of one batched evaluation of 100 ids). A batch of 64 or more
 * query rows takes llama.cpp's tiled flash attention (F32 query, K and V widened to F32, 64x64
 * tiles, F32 running sum), whose arithmetic differs from the short batches of the goldens above;
 * hearth repeats it (cpu_backend.c, attention_tiled), so F32 files agree to float rounding. */
static void check_peer_logits(const char *name, const char *dir, int min_ids) {
    char rel[256], data[256];
    snprintf(rel, sizeof(rel), "synthetic/%s.gguf", name);
    snprintf(data, sizeof(data), "tests/data/%s/%s.json", dir, name);
    if (!test_model_path(rel)) {
        test_skip("../shared/models/%s not found", rel);
        return;
    }
    size_t n;
    char *text = test_read_file(data, &n);
    ASSERT(text);
    struct jm *root = jm_parse(text, n);
    mem_free(text);
    ASSERT(root);
    const struct jm *pr = jm_get(root, "prompt_ids"), *positions = jm_get(root, "positions");
    ASSERT(pr && positions && (int)pr->len >= min_ids && pr->len <= 512);
    int32_t ids[512];
    int n_ids = (int)pr->len;
    for (int i = 0; i < n_ids; i++) ids[i] = (int32_t)pr->items[i].num;
    struct engine *e = open_engine(test_model_path(rel), 2);
    ASSERT(e);
    struct engine_info info;
    engine_get_info(e, &info);
    int V = info.n_vocab;
    struct session *s = new_session(e, 512, KV_TYPE_F16);
    float *all = mem_alloc((size_t)n_ids * V * sizeof(float));
    double *lsm = mem_alloc((size_t)V * sizeof(double));
    struct error err = {0};
    ASSERT(s && all && lsm);
    ASSERT(session_eval(s, ids, n_ids, all, &err) == 0);
    double worst = 0;
    int worst_pos = -1, n_argmax = 0;
    for (size_t i = 0; i < positions->len; i++) {
        const struct jm *pos = &positions->items[i];
        int p = (int)jm_get(pos, "pos")->num;
        ASSERT(p >= 0 && p < n_ids);
        double w = compare_top(pos, all + (size_t)p * V, V, lsm);
        if (getenv("HEARTH_TEST_VERBOSE")) printf("    pos %d err %.2e\n", p, w);
        const struct jm *top = jm_get(pos, "top");
        n_argmax += argmax(all + (size_t)p * V, V) == (int32_t)top->items[0].items[0].num;
        if (w > worst) worst = w, worst_pos = p;
    }
    EXPECT_MSG(worst <= TOL_F32, "%s: top-5 log-softmax max error %g at pos %d vs %s", name, worst,
               worst_pos, data);
    EXPECT_MSG(n_argmax == (int)positions->len, "%s: argmax agrees at %d of %zu positions", name,
               n_argmax, positions->len);
    printf("  %s: %d-token batch, top-5 logprob max err %.2e\n", name, n_ids, worst);
    mem_free(all);
    mem_free(lsm);
    session_free(s);
    engine_close(e);
    jm_free(root);
}

static void check_long_logits(const char *name) {
    check_peer_logits(name, "long", 64);
}

TEST(model_long_qwen3_f32) {
    check_long_logits("qwen3-f32");
}
TEST(model_long_qwen2_f32) {
    check_long_logits("qwen2-f32");
}
TEST(model_long_qwen3moe_f32) {
    check_long_logits("qwen3moe-f32");
}
TEST(model_long_qwen35_f32) {
    check_long_logits("qwen35-f32");
}
TEST(model_long_qwen35moe_f32) {
    check_long_logits("qwen35moe-f32");
}

/* Q8_0 on a CPU with AMX (tests/data/amx: llama.cpp run on such a CPU over the goldens' 47 ids):
 * llama.cpp's Q8_0 products there are its AMX kernels' block order, except the tied output head
 * (token_embd); hearth's AMX table does the same (cpu_kernels.h, q8_0_blk_tile). Measured 4.1e-6
 * and 4.7e-6; the goldens, recorded without AMX, differ from these by up to 0.18. */
static void check_amx_logits(const char *name) {
    if (!cpu_kernels_get()->q8_0_blk_tile) {
        test_skip("%s: the kernel table in use has no AMX Q8_0 order (no AMX-INT8, or HEARTH_CPU "
                  "chose another)",
                  name);
        return;
    }
    check_peer_logits(name, "amx", 16);
}
TEST(model_amx_qwen3_q8_0) {
    check_amx_logits("qwen3-q8_0");
}
TEST(model_amx_qwen35moe_q8_0) {
    check_amx_logits("qwen35moe-q8_0");
}

TEST(model_golden_qwen2_f32) {
    check_golden("qwen2-f32", TOL_F32, KV_TYPE_F16);
}
TEST(model_golden_qwen3_f32) {
    check_golden("qwen3-f32", TOL_F32, KV_TYPE_F16);
}
TEST(model_golden_qwen3moe_f32) {
    check_golden("qwen3moe-f32", TOL_F32, KV_TYPE_F16);
}
TEST(model_golden_qwen3_q8_0) {
    check_golden("qwen3-q8_0", TOL_QUANT, KV_TYPE_F16);
}
TEST(model_golden_qwen3_q6_k) {
    check_golden("qwen3-q6_k", TOL_QUANT, KV_TYPE_F16);
}
TEST(model_golden_qwen3_q4_k_m) {
    check_golden("qwen3-q4_k_m", TOL_QUANT, KV_TYPE_F16);
}

/* qwen35 (hybrid Gated DeltaNet + gated attention). qwen35-f32's smallest top-1 margin is
 * 0.0038 (step 2), so its greedy ids only match if the log-probs agree well inside that. */
TEST(model_golden_qwen35_f32) {
    check_golden("qwen35-f32", TOL_F32, KV_TYPE_F16);
}
/* The same trunk plus one MTP block, which the trunk forward must not run. */
TEST(model_golden_qwen35_mtp_f32) {
    check_golden("qwen35-mtp-f32", TOL_F32, KV_TYPE_F16);
}
TEST(model_golden_qwen35moe_f32) {
    check_golden("qwen35moe-f32", TOL_F32, KV_TYPE_F16);
}
TEST(model_golden_qwen35moe_q8_0) {
    check_golden("qwen35moe-q8_0", TOL_QUANT, KV_TYPE_F16);
}
TEST(model_golden_qwen35moe_q6_k) {
    check_golden("qwen35moe-q6_k", TOL_QUANT, KV_TYPE_F16);
}
TEST(model_golden_qwen35moe_q4_k_m) {
    check_golden("qwen35moe-q4_k_m", TOL_QUANT, KV_TYPE_F16);
}

/* ---- equivalences ---- */

static void check_batched_equals_sequential(const char *rel, double tol) {
    const char *p = test_model_path(rel);
    if (!p) {
        test_skip("../shared/models/%s not found", rel);
        return;
    }
    char path[4096];
    snprintf(path, sizeof(path), "%s", p);
    struct engine *e = open_engine(path, 2);
    if (!e) return;
    struct engine_info info;
    engine_get_info(e, &info);
    int V = info.n_vocab, n = 40;
    int32_t ids[40];
    for (int i = 0; i < n; i++) ids[i] = (int32_t)((i * 37 + 11) % V);
    ids[0] = 1;
    struct session *a = new_session(e, 64, KV_TYPE_F32), *b = new_session(e, 64, KV_TYPE_F32);
    float *all = mem_alloc((size_t)n * V * sizeof(float));
    struct error err = {0};
    double worst = 0;
    if (!a || !b || !all || session_eval(a, ids, n, all, &err)) {
        test_fail(__FILE__, __LINE__, "eval: %s", err.msg);
        goto done;
    }
    for (int i = 0; i < n; i++) {
        if (session_eval(b, &ids[i], 1, NULL, &err)) {
            test_fail(__FILE__, __LINE__, "eval: %s", err.msg);
            goto done;
        }
        const float *l = session_logits(b);
        for (int j = 0; j < V; j++) worst = fmax(worst, fabs(l[j] - all[(size_t)i * V + j]));
    }
    if (getenv("HEARTH_TEST_VERBOSE"))
        printf("    %s: batched vs sequential max diff %g\n", rel, worst);
    EXPECT_MSG(worst <= tol, "%s: batched vs token-by-token max diff %g (tol %g)", rel, worst, tol);
done:
    mem_free(all);
    session_free(a);
    session_free(b);
    engine_close(e);
}

TEST(model_batched_equals_sequential) {
    /* exact: every row's arithmetic is independent of the batch (speculation relies on it) */
    check_batched_equals_sequential("stories/stories260K.gguf", 0);
    check_batched_equals_sequential("synthetic/qwen3-f32.gguf", 0);
    check_batched_equals_sequential("synthetic/qwen3moe-f32.gguf", 0);
    check_batched_equals_sequential("synthetic/qwen2-f32.gguf", 0);
    check_batched_equals_sequential("synthetic/qwen35-f32.gguf", 0);
    check_batched_equals_sequential("synthetic/qwen35moe-f32.gguf", 0);
}

TEST(model_truncate_reeval_equals_fresh) {
    const char *p = test_model_path("stories/stories260K.gguf");
    if (!p) SKIP_TEST("../shared/models/stories not found");
    struct engine *e = open_engine(p, 2);
    ASSERT(e);
    struct session *s = new_session(e, 64, KV_TYPE_F16), *f = new_session(e, 64, KV_TYPE_F16);
    struct error err = {0};
    int32_t a[10] = {1, 403, 407, 261, 378, 432, 383, 286, 261, 376};
    int32_t b[4] = {300, 301, 302, 303};
    ASSERT(session_eval(s, a, 10, NULL, &err) == 0);
    ASSERT(session_truncate(s, 6, &err) == 0);
    ASSERT(session_eval(s, b, 4, NULL, &err) == 0);
    ASSERT(session_eval(f, a, 6, NULL, &err) == 0);
    ASSERT(session_eval(f, b, 4, NULL, &err) == 0);
    EXPECT(memcmp(session_logits(s), session_logits(f), 512 * sizeof(float)) == 0);
    EXPECT_EQ_INT(session_n_past(s), 10);
    EXPECT(session_truncate(s, 11, &err) != 0);
    session_free(s);
    session_free(f);
    engine_close(e);
}

TEST(model_errors_are_clean) {
    struct error err = {0};
    struct engine *e = NULL;
    EXPECT(engine_open(&e, "/nonexistent/model.gguf", NULL, &err) == ERR_NOT_FOUND);
    EXPECT(strstr(err.msg, "nonexistent") != NULL);
    const char *vocab = test_model_path("vocab/ggml-vocab-gpt-2.gguf");
    if (!vocab) SKIP_TEST("../shared/models/vocab not found");
    EXPECT(engine_open(&e, vocab, NULL, &err) == ERR_UNSUPPORTED);
    EXPECT_MSG(strstr(err.msg, "gpt2") != NULL, "message: %s", err.msg);
    const char *p = test_model_path("stories/stories260K.gguf");
    e = open_engine(p, 1);
    ASSERT(e);
    struct session *s = new_session(e, 8, KV_TYPE_F16);
    int32_t ids[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    EXPECT(session_eval(s, ids, 9, NULL, &err) == ERR_RANGE);
    EXPECT_EQ_INT(session_n_past(s), 0);
    int32_t bad = 512;
    EXPECT(session_eval(s, &bad, 1, NULL, &err) == ERR_INVALID);
    session_free(s);
    engine_close(e);
}

/* Several sessions in one forward pass give the same logits as each session alone, and a
 * copied prefix continues exactly like the original. */
static void check_eval_batch_equals_separate(const char *rel) {
    const char *p = test_model_path(rel);
    if (!p) {
        test_skip("../shared/models/%s not found", rel);
        return;
    }
    char path[4096];
    snprintf(path, sizeof(path), "%s", p);
    struct engine *e = open_engine(path, 2);
    if (!e) return;
    struct engine_info info;
    engine_get_info(e, &info);
    size_t lb = (size_t)info.n_vocab * sizeof(float);
    struct error err = {0};
    struct session *a = new_session(e, 64, KV_TYPE_F16), *b = new_session(e, 64, KV_TYPE_F16);
    struct session *c = new_session(e, 64, KV_TYPE_F16), *ra = new_session(e, 64, KV_TYPE_F16);
    struct session *rb = new_session(e, 64, KV_TYPE_F16), *rc = new_session(e, 64, KV_TYPE_F16);
    struct session *f = new_session(e, 64, KV_TYPE_F16);
    int32_t pa[5] = {1, 13, 42, 100, 7}, pb[3] = {1, 300, 55}, pc[7] = {1, 2, 3, 4, 5, 6, 7};
    int32_t t1 = 9, t2 = 10, t3 = 11, t4 = 7;
    struct session_batch_item items[3] = {{a, pa, 5, NULL}, {b, pb, 3, NULL}, {c, pc, 7, NULL}};
    struct session_batch_item step[3] = {{a, &t1, 1, NULL}, {b, &t2, 1, NULL}, {c, &t3, 1, NULL}};
    struct session_batch_item dup[2] = {{a, &t1, 1, NULL}, {a, &t2, 1, NULL}};
    if (!a || !b || !c || !ra || !rb || !rc || !f) goto done;
    EXPECT(session_eval(ra, pa, 5, NULL, &err) == 0);
    EXPECT(session_eval(rb, pb, 3, NULL, &err) == 0);
    EXPECT(session_eval(rc, pc, 7, NULL, &err) == 0);
    EXPECT(engine_eval_batch(e, items, 3, &err) == 0);
    EXPECT_MSG(memcmp(session_logits(a), session_logits(ra), lb) == 0, "%s: a", rel);
    EXPECT_MSG(memcmp(session_logits(b), session_logits(rb), lb) == 0, "%s: b", rel);
    EXPECT_MSG(memcmp(session_logits(c), session_logits(rc), lb) == 0, "%s: c", rel);
    EXPECT_EQ_INT(session_n_past(c), 7);
    /* one decode step for all three at once */
    EXPECT(engine_eval_batch(e, step, 3, &err) == 0);
    EXPECT(session_eval(ra, &t1, 1, NULL, &err) == 0);
    EXPECT(session_eval(rb, &t2, 1, NULL, &err) == 0);
    EXPECT_MSG(memcmp(session_logits(a), session_logits(ra), lb) == 0, "%s: a step", rel);
    EXPECT_MSG(memcmp(session_logits(b), session_logits(rb), lb) == 0, "%s: b step", rel);
    /* prefix copy: c continues from a's first 4 tokens */
    EXPECT(session_copy_prefix(c, a, 4, &err) == 0);
    EXPECT_EQ_INT(session_common_prefix(c, pa, 5), 4);
    EXPECT(session_eval(c, &t4, 1, NULL, &err) == 0);
    EXPECT(session_eval(f, pa, 5, NULL, &err) == 0);
    EXPECT_MSG(memcmp(session_logits(c), session_logits(f), lb) == 0, "%s: copied prefix", rel);
    /* errors: duplicate session */
    EXPECT(engine_eval_batch(e, dup, 2, &err) == ERR_INVALID);
done:
    session_free(a);
    session_free(b);
    session_free(c);
    session_free(ra);
    session_free(rb);
    session_free(rc);
    session_free(f);
    engine_close(e);
}

TEST(model_eval_batch_equals_separate) {
    check_eval_batch_equals_separate("synthetic/qwen3-f32.gguf");
    check_eval_batch_equals_separate("synthetic/qwen35-f32.gguf");
}

/* ---- recurrent-state rollback (hybrid models) ----
 * Truncating a qwen35 session and evaluating again must give exactly (bit for bit) the logits
 * of a fresh session that evaluated the same tokens: from a snapshot (a copy), from an earlier
 * snapshot plus replay, and from the start. */

static struct session *new_session_rs(struct engine *e, int n_ckpt, int n_tail) {
    struct session_params sp;
    session_params_default(&sp);
    sp.n_ctx = 64;
    sp.n_rs_checkpoints = n_ckpt;
    sp.n_rs_tail = n_tail;
    struct error err = {0};
    struct session *s = NULL;
    if (session_create(&s, e, &sp, &err)) test_fail(__FILE__, __LINE__, "session: %s", err.msg);
    return s;
}

/* Logits after a fresh session evaluates a[0..na) then b[0..nb): 0 when they equal got. */
static int differs_from_fresh(struct engine *e, const int32_t *a, int na, const int32_t *b, int nb,
                              const float *got) {
    struct engine_info info;
    engine_get_info(e, &info);
    struct session *f = new_session(e, 64, KV_TYPE_F16);
    struct error err = {0};
    int rc = !f || (na && session_eval(f, a, na, NULL, &err)) || session_eval(f, b, nb, NULL, &err);
    if (!rc) rc = memcmp(session_logits(f), got, (size_t)info.n_vocab * sizeof(float)) != 0;
    session_free(f);
    return rc;
}

static struct engine *open_qwen35(void) {
    const char *p = test_model_path("synthetic/qwen35-f32.gguf");
    return p ? open_engine(p, 2) : NULL;
}

static const int32_t g_a[12] = {1, 13, 42, 100, 7, 300, 55, 211, 480, 99, 3, 256};
static const int32_t g_b[4] = {17, 400, 64, 128};

TEST(model_qwen35_truncate_reeval_equals_fresh) {
    if (!test_model_path("synthetic/qwen35-f32.gguf")) SKIP_TEST("../shared/models not found");
    struct engine *e = open_qwen35();
    ASSERT(e);
    struct session *s = new_session_rs(e, 0, 4);
    struct error err = {0};
    ASSERT(s && session_eval(s, g_a, 12, NULL, &err) == 0);
    /* the tail keeps positions 8..11; nothing earlier */
    EXPECT_EQ_INT(session_truncate_cost(s, 9), 0);
    EXPECT_EQ_INT(session_truncate_cost(s, 8), 0);
    EXPECT_EQ_INT(session_truncate_cost(s, 7), 7);
    EXPECT_EQ_INT(session_truncate_cost(s, 12), 0);
    EXPECT_EQ_INT(session_truncate_cost(s, 13), -1);
    ASSERT(session_truncate(s, 9, &err) == 0);
    EXPECT(session_logits(s) == NULL);
    ASSERT(session_eval(s, g_b, 4, NULL, &err) == 0);
    EXPECT_MSG(!differs_from_fresh(e, g_a, 9, g_b, 4, session_logits(s)), "snapshot at 9");
    /* that eval started inside its own tail window: the pre-eval state (9) was kept too */
    EXPECT_EQ_INT(session_truncate_cost(s, 9), 0);
    ASSERT(session_truncate(s, 9, &err) == 0);
    ASSERT(session_eval(s, g_b, 4, NULL, &err) == 0);
    EXPECT_MSG(!differs_from_fresh(e, g_a, 9, g_b, 4, session_logits(s)), "again at 9");
    /* no snapshot at 5: replay from the start */
    EXPECT_EQ_INT(session_truncate_cost(s, 5), 5);
    ASSERT(session_truncate(s, 5, &err) == 0);
    EXPECT_EQ_INT(session_n_past(s), 5);
    ASSERT(session_eval(s, g_b, 4, NULL, &err) == 0);
    EXPECT_MSG(!differs_from_fresh(e, g_a, 5, g_b, 4, session_logits(s)), "replay to 5");
    /* back to the empty state */
    ASSERT(session_truncate(s, 0, &err) == 0);
    ASSERT(session_eval(s, g_b, 4, NULL, &err) == 0);
    EXPECT_MSG(!differs_from_fresh(e, NULL, 0, g_b, 4, session_logits(s)), "from 0");
    /* one-token steps (decoding) keep the window too: pre-eval copies */
    ASSERT(session_truncate(s, 0, &err) == 0);
    ASSERT(session_eval(s, g_a, 6, NULL, &err) == 0);
    for (int i = 6; i < 9; i++) ASSERT(session_eval(s, &g_a[i], 1, NULL, &err) == 0);
    for (int p = 5; p <= 9; p++) EXPECT_MSG(session_truncate_cost(s, p) == 0, "pos %d", p);
    ASSERT(session_truncate(s, 6, &err) == 0);
    ASSERT(session_eval(s, g_b, 4, NULL, &err) == 0);
    EXPECT_MSG(!differs_from_fresh(e, g_a, 6, g_b, 4, session_logits(s)), "decode tail at 6");
    session_free(s);
    engine_close(e);
}

TEST(model_qwen35_checkpoints) {
    if (!test_model_path("synthetic/qwen35-f32.gguf")) SKIP_TEST("../shared/models not found");
    struct engine *e = open_qwen35();
    ASSERT(e);
    struct session *s = new_session_rs(e, 2, 0), *none = new_session_rs(e, 0, 0);
    struct error err = {0};
    ASSERT(s && none);
    ASSERT(session_eval(s, g_a, 6, NULL, &err) == 0);
    ASSERT(session_checkpoint(s, &err) == 0);
    ASSERT(session_checkpoint_at(s, 10, &err) == 0);
    ASSERT(session_checkpoint_at(s, 11, &err) == 0);
    EXPECT(session_checkpoint_at(s, 9, &err) == ERR_INVALID); /* two requests pending */
    ASSERT(session_eval(s, g_a + 6, 6, NULL, &err) == 0);     /* passes 10 and 11 */
    /* slots: 6 (evicted, oldest), 10, 11 */
    EXPECT_EQ_INT(session_truncate_cost(s, 10), 0);
    EXPECT_EQ_INT(session_truncate_cost(s, 11), 0);
    EXPECT_EQ_INT(session_truncate_cost(s, 8), 8);
    ASSERT(session_truncate(s, 10, &err) == 0);
    ASSERT(session_eval(s, g_b, 4, NULL, &err) == 0);
    EXPECT_MSG(!differs_from_fresh(e, g_a, 10, g_b, 4, session_logits(s)), "checkpoint at 10");
    /* 11 was dropped by the truncation to 10 */
    EXPECT_EQ_INT(session_truncate_cost(s, 11), 11 - 10);
    /* replay from the checkpoint at 10 */
    ASSERT(session_truncate(s, 12, &err) == 0);
    ASSERT(session_eval(s, g_b, 1, NULL, &err) == 0);
    int32_t mix[12];
    memcpy(mix, g_a, 10 * sizeof(int32_t));
    memcpy(mix + 10, g_b, 2 * sizeof(int32_t));
    ASSERT(session_truncate(s, 11, &err) == 0);
    ASSERT(session_eval(s, g_b + 1, 1, NULL, &err) == 0);
    EXPECT_MSG(!differs_from_fresh(e, mix, 11, g_b + 1, 1, session_logits(s)), "replay from 10");
    /* errors */
    EXPECT(session_checkpoint(none, &err) == ERR_INVALID);
    EXPECT(session_checkpoint_at(s, 3, &err) == ERR_INVALID);
    EXPECT(session_truncate(s, 40, &err) == ERR_INVALID);
    session_free(s);
    session_free(none);
    engine_close(e);
}

TEST(model_qwen35_copy_prefix) {
    if (!test_model_path("synthetic/qwen35-f32.gguf")) SKIP_TEST("../shared/models not found");
    struct engine *e = open_qwen35();
    ASSERT(e);
    struct session *src = new_session_rs(e, 0, 3), *dst = new_session_rs(e, 0, 0);
    struct error err = {0};
    ASSERT(src && dst);
    ASSERT(session_eval(src, g_a, 12, NULL, &err) == 0);
    const int cuts[3] = {12, 10, 4}; /* live state, tail snapshot, replay from the start */
    for (int i = 0; i < 3; i++) {
        ASSERT(session_copy_prefix(dst, src, cuts[i], &err) == 0);
        EXPECT_EQ_INT(session_n_past(dst), cuts[i]);
        ASSERT(session_eval(dst, g_b, 4, NULL, &err) == 0);
        EXPECT_MSG(!differs_from_fresh(e, g_a, cuts[i], g_b, 4, session_logits(dst)),
                   "copy of %d positions", cuts[i]);
    }
    session_free(src);
    session_free(dst);
    engine_close(e);
}

/* A speculative round on two sessions at once: verify batches through engine_eval_batch, then
 * each session keeps a different number of the drafted tokens. */
TEST(model_qwen35_batch_verify_rollback) {
    if (!test_model_path("synthetic/qwen35-f32.gguf")) SKIP_TEST("../shared/models not found");
    struct engine *e = open_qwen35();
    ASSERT(e);
    struct session *s1 = new_session_rs(e, 0, 4), *s2 = new_session_rs(e, 0, 4);
    struct error err = {0};
    ASSERT(s1 && s2);
    ASSERT(session_eval(s1, g_a, 6, NULL, &err) == 0);
    ASSERT(session_eval(s2, g_a, 3, NULL, &err) == 0);
    struct session_batch_item verify[2] = {{s1, g_b, 4, NULL}, {s2, g_a + 3, 5, NULL}};
    ASSERT(engine_eval_batch(e, verify, 2, &err) == 0);
    EXPECT_EQ_INT(session_truncate_cost(s1, 7), 0);
    EXPECT_EQ_INT(session_truncate_cost(s2, 6), 0);
    ASSERT(session_truncate(s1, 7, &err) == 0); /* kept the first token of the batch only */
    ASSERT(session_truncate(s2, 6, &err) == 0);
    int32_t t = 5;
    struct session_batch_item step[2] = {{s1, &t, 1, NULL}, {s2, &t, 1, NULL}};
    ASSERT(engine_eval_batch(e, step, 2, &err) == 0);
    int32_t p1[7];
    memcpy(p1, g_a, 6 * sizeof(int32_t));
    p1[6] = g_b[0];
    EXPECT_MSG(!differs_from_fresh(e, p1, 7, &t, 1, session_logits(s1)), "s1");
    EXPECT_MSG(!differs_from_fresh(e, g_a, 6, &t, 1, session_logits(s2)), "s2");
    session_free(s1);
    session_free(s2);
    engine_close(e);
}

/* The server's needs: the GGUF's chat template (none in these files) and what a session costs
 * in RAM (for the prefix cache's cap): bytes grow with n_ctx by the KV rows. */
TEST(model_engine_chat_template_and_session_bytes) {
    const char *p = test_model_path("synthetic/qwen3-f32.gguf");
    if (!p) SKIP_TEST("../shared/models/synthetic not found");
    struct engine *e = open_engine(p, 1);
    ASSERT(e);
    EXPECT(engine_chat_template(e) == NULL);
    struct session *a = new_session(e, 32, KV_TYPE_F16), *b = new_session(e, 64, KV_TYPE_F16);
    ASSERT(a && b);
    size_t ba = session_bytes(a), bb = session_bytes(b);
    EXPECT(ba > 0 && bb > ba);
    /* 32 more positions: K and V rows of every layer in f16, plus 32 token ids */
    struct engine_info info;
    engine_get_info(e, &info);
    EXPECT(bb - ba >= (size_t)32 * (size_t)info.n_layer * 2 * 2);
    session_free(a);
    session_free(b);
    engine_close(e);
}
