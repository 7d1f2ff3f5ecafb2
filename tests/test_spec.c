/* test_spec.c: speculative decoding leaves the output unchanged (greedy: identical tokens;
 * sampling: the same distribution). */
#include "test.h"

#include "../src/base/mem.h"
#include "../src/engine/engine.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Under the sanitizers the qwen35 forward pass is ~80x slower: the newer hybrid-model tests
 * then run on fewer tokens. */
#if defined(__SANITIZE_ADDRESS__)
#define SPEC_SAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SPEC_SAN 1
#endif
#endif
#ifndef SPEC_SAN
#define SPEC_SAN 0
#endif

static struct engine *open_stories(void) {
    const char *p = test_model_path("stories/stories260K.gguf");
    if (!p) return NULL;
    struct engine_params ep;
    engine_params_default(&ep);
    ep.n_threads = 1;
    struct error err = {0};
    struct engine *e = NULL;
    if (engine_open(&e, p, &ep, &err)) test_fail(__FILE__, __LINE__, "%s", err.msg);
    return e;
}

/* Generates n tokens from prompt with the given speculation (spp: NULL = defaults with mode and
 * draft); returns the count written. */
static int generate_p(struct engine *e, const struct spec_params *spp_in, float temp, uint64_t seed,
                      const int32_t *prompt, int n_prompt, int32_t *out, int n,
                      struct spec_stats *st) {
    struct error err = {0};
    struct session *s = NULL;
    struct session_params sp;
    session_params_default(&sp);
    sp.n_ctx = 512;
    struct sampler_params smp_p;
    sampler_params_default(&smp_p);
    smp_p.temperature = temp;
    smp_p.top_k = 0;
    smp_p.top_p = 1.0f;
    smp_p.min_p = 0;
    smp_p.seed = seed;
    struct sampler *smp = NULL;
    struct generator *g = NULL;
    int got = 0;
    if (session_create(&s, e, &sp, &err) || sampler_create(&smp, &smp_p, 512, &err) ||
        generator_create(&g, s, smp, spp_in, &err) ||
        generator_prefill(g, prompt, n_prompt, &err)) {
        test_fail(__FILE__, __LINE__, "setup: %s", err.msg);
        goto done;
    }
    while (got < n) {
        int k = generator_next(g, out + got, n - got, &err);
        if (k <= 0) {
            test_fail(__FILE__, __LINE__, "generator_next: %s", err.msg);
            break;
        }
        got += k;
    }
    if (st) generator_stats(g, st);
done:
    generator_free(g);
    sampler_free(smp);
    session_free(s);
    return got;
}

static int generate(struct engine *e, enum spec_mode mode, struct engine *draft, float temp,
                    uint64_t seed, const int32_t *prompt, int n_prompt, int32_t *out, int n,
                    struct spec_stats *st) {
    struct spec_params spp;
    spec_params_default(&spp);
    spp.mode = mode;
    spp.draft_engine = draft;
    return generate_p(e, &spp, temp, seed, prompt, n_prompt, out, n, st);
}

TEST(spec_greedy_identical_all_modes) {
    struct engine *e = open_stories();
    if (!e) SKIP_TEST("../shared/models/stories not found");
    int32_t bos = 1, base[256], out[256];
    ASSERT(generate(e, SPEC_NONE, NULL, 0, 1, &bos, 1, base, 256, NULL) == 256);
    EXPECT_EQ_INT(base[0], 403); /* the stored greedy continuation starts 403 407 261 */
    EXPECT_EQ_INT(base[2], 261);
    struct spec_stats st;
    memset(out, 0, sizeof(out));
    ASSERT(generate(e, SPEC_NGRAM, NULL, 0, 1, &bos, 1, out, 256, &st) == 256);
    EXPECT(memcmp(base, out, sizeof(base)) == 0);
    EXPECT_MSG(st.n_accepted > 20 && st.n_steps < 240, "ngram: %lld accepted in %lld passes",
               (long long)st.n_accepted, (long long)st.n_steps);
    /* self-drafting: everything accepted; a draft costs as much as the target, so the adaptive
     * length stays at 1 token */
    memset(out, 0, sizeof(out));
    ASSERT(generate(e, SPEC_DRAFT, e, 0, 1, &bos, 1, out, 256, &st) == 256);
    EXPECT(memcmp(base, out, sizeof(base)) == 0);
    EXPECT_MSG(st.n_accepted == st.n_drafted && st.n_steps <= 128,
               "self-draft: %lld of %lld accepted in %lld passes", (long long)st.n_accepted,
               (long long)st.n_drafted, (long long)st.n_steps);
    EXPECT(st.n_drafted_by[SPEC_SRC_DRAFT] == st.n_drafted && st.n_accepted_by[SPEC_SRC_DRAFT]);
    struct spec_params fixed;
    spec_params_default(&fixed);
    fixed.mode = SPEC_DRAFT;
    fixed.draft_engine = e;
    fixed.adaptive = 0; /* always draft_max (8) */
    memset(out, 0, sizeof(out));
    ASSERT(generate_p(e, &fixed, 0, 1, &bos, 1, out, 256, &st) == 256);
    EXPECT(memcmp(base, out, sizeof(base)) == 0);
    EXPECT_MSG(st.n_accepted == st.n_drafted && st.n_steps < 64,
               "self-draft, fixed length: %lld of %lld accepted in %lld passes",
               (long long)st.n_accepted, (long long)st.n_drafted, (long long)st.n_steps);
    memset(out, 0, sizeof(out));
    ASSERT(generate(e, SPEC_AUTO, NULL, 0, 1, &bos, 1, out, 256, NULL) == 256);
    EXPECT(memcmp(base, out, sizeof(base)) == 0);
    engine_close(e);
}

/* With sampling, the distribution of the k-th token is the same with and without speculation
 * (self-drafting proposes the greedy token; the rejection rule must correct for it). */
TEST(spec_sampling_distribution_unchanged) {
    struct engine *e = open_stories();
    if (!e) SKIP_TEST("../shared/models/stories not found");
    int32_t prompt[5] = {1, 403, 407, 261, 378};
    enum { RUNS = 800, POS = 1 };
    static int hist_a[512], hist_b[512];
    memset(hist_a, 0, sizeof(hist_a));
    memset(hist_b, 0, sizeof(hist_b));
    for (int r = 0; r < RUNS; r++) {
        int32_t a[2], b[2];
        generate(e, SPEC_NONE, NULL, 1.0f, 1000 + (uint64_t)r, prompt, 5, a, 2, NULL);
        generate(e, SPEC_DRAFT, e, 1.0f, 5000 + (uint64_t)r, prompt, 5, b, 2, NULL);
        hist_a[a[POS]]++;
        hist_b[b[POS]]++;
    }
    double tv = 0;
    int distinct = 0;
    for (int i = 0; i < 512; i++) {
        tv += fabs((double)(hist_a[i] - hist_b[i])) / (2.0 * RUNS);
        distinct += hist_a[i] > 0;
    }
    EXPECT_MSG(distinct >= 3, "distribution too peaked to test (%d distinct)", distinct);
    /* two samples of 800 from one distribution: TV well under 0.1; a rule that always kept the
     * greedy draft would give the draft token ~all the mass instead */
    if (getenv("HEARTH_TEST_VERBOSE")) printf("    TV %.3f over %d outcomes\n", tv, distinct);
    EXPECT_MSG(tv < 0.1, "total variation %.3f between plain and speculative sampling", tv);
    engine_close(e);
}

TEST(spec_errors) {
    struct engine *e = open_stories();
    if (!e) SKIP_TEST("../shared/models/stories not found");
    struct error err = {0};
    struct session *s = NULL;
    ASSERT(session_create(&s, e, NULL, &err) == 0);
    struct sampler_params sp;
    sampler_params_default(&sp);
    struct sampler *smp = NULL;
    ASSERT(sampler_create(&smp, &sp, 512, &err) == 0);
    struct generator *g = NULL;
    struct spec_params p;
    spec_params_default(&p);
    p.mode = SPEC_DRAFT;
    EXPECT(generator_create(&g, s, smp, &p, &err) == ERR_INVALID); /* no draft model */
    p.mode = SPEC_MTP; /* stories260K has no MTP block */
    EXPECT(generator_create(&g, s, smp, &p, &err) == ERR_UNSUPPORTED);
    p.mode = SPEC_AUTO; /* falls back to n-gram */
    ASSERT(generator_create(&g, s, smp, &p, &err) == 0);
    generator_free(g);
    g = NULL;
    EXPECT(!strcmp(spec_source_name(SPEC_SRC_MTP), "mtp"));
    p.mode = SPEC_NGRAM;
    p.draft_max = 1000;
    EXPECT(generator_create(&g, s, smp, &p, &err) == ERR_INVALID);
    p.draft_max = 8;
    p.mtp_max = -1;
    EXPECT(generator_create(&g, s, smp, &p, &err) == ERR_INVALID);
    enum spec_mode m;
    EXPECT(spec_mode_parse("ngram", &m) == 0 && m == SPEC_NGRAM);
    EXPECT(spec_mode_parse("bogus", &m) != 0);
    const char *other = test_model_path("synthetic/qwen3-f32.gguf");
    if (other) { /* same 512-token vocabulary: compatible */
        struct engine *q = NULL;
        ASSERT(engine_open(&q, other, NULL, &err) == 0);
        EXPECT(engine_check_vocab_compatible(e, q, &err) == 0);
        engine_close(q);
    }
    const char *tiny = test_model_path("tiny/llama-2-tiny-random.gguf");
    if (tiny) { /* 32000 tokens: incompatible */
        struct engine *t = NULL;
        ASSERT(engine_open(&t, tiny, NULL, &err) == 0);
        EXPECT(engine_check_vocab_compatible(e, t, &err) == ERR_INVALID);
        engine_close(t);
    }
    sampler_free(smp);
    session_free(s);
    engine_close(e);
}

/* Hybrid models (qwen35): a rejected draft rolls the recurrent state back through the
 * session's tail snapshots; greedy output stays identical to plain decoding, also with a
 * hybrid draft model (qwen35moe-f32 shares the 512-token vocabulary). */
TEST(spec_qwen35_greedy_identical) {
    const char *pt = test_model_path("synthetic/qwen35-f32.gguf");
    if (!pt) SKIP_TEST("../shared/models/synthetic not found");
    char path[4096];
    snprintf(path, sizeof(path), "%s", pt);
    const char *pd = test_model_path("synthetic/qwen35moe-f32.gguf");
    ASSERT(pd);
    struct error err = {0};
    struct engine *e = NULL, *d = NULL;
    ASSERT(engine_open(&e, path, NULL, &err) == 0);
    ASSERT(engine_open(&d, pd, NULL, &err) == 0);
    int32_t prompt[16] = {1, 13, 42, 100, 7, 300, 55, 211, 480, 99, 3, 256, 17, 400, 64, 128};
    int32_t base[32], out[32];
    struct spec_stats st;
    ASSERT(generate(e, SPEC_NONE, NULL, 0, 1, prompt, 16, base, 32, NULL) == 32);
    EXPECT_EQ_INT(base[0], 420); /* llama.cpp's greedy continuation starts 420 273 117 */
    EXPECT_EQ_INT(base[2], 117);
    ASSERT(generate(e, SPEC_NGRAM, NULL, 0, 1, prompt, 16, out, 32, NULL) == 32);
    EXPECT(memcmp(base, out, sizeof(base)) == 0);
    ASSERT(generate(e, SPEC_DRAFT, d, 0, 1, prompt, 16, out, 32, &st) == 32);
    EXPECT(memcmp(base, out, sizeof(base)) == 0);
    EXPECT_MSG(st.n_drafted > st.n_accepted, "hybrid draft: %lld of %lld accepted (no rejection)",
               (long long)st.n_accepted, (long long)st.n_drafted);
    ASSERT(generate(e, SPEC_DRAFT, e, 0, 1, prompt, 16, out, 32, &st) == 32);
    EXPECT(memcmp(base, out, sizeof(base)) == 0);
    EXPECT_MSG(st.n_accepted == st.n_drafted, "self-draft: %lld of %lld accepted",
               (long long)st.n_accepted, (long long)st.n_drafted);
    engine_close(d);
    engine_close(e);
}

/* MTP drafting (qwen35-mtp-f32: random weights, so the head rarely agrees with the trunk):
 * greedy output is identical with every mode; rejected drafts roll back the trunk, the
 * recurrent state and the MTP layer's cache. */
TEST(spec_mtp_greedy_identical) {
    const char *path = test_model_path("synthetic/qwen35-mtp-f32.gguf");
    if (!path) SKIP_TEST("../shared/models/synthetic not found");
    struct error err = {0};
    struct engine *e = NULL;
    ASSERT(engine_open(&e, path, NULL, &err) == 0);
    int32_t prompt[16] = {1, 13, 42, 100, 7, 300, 55, 211, 480, 99, 3, 256, 17, 400, 64, 128};
    int32_t base[48], out[48];
    struct spec_stats st;
    ASSERT(generate(e, SPEC_NONE, NULL, 0, 1, prompt, 16, base, 48, NULL) == 48);
    EXPECT_EQ_INT(base[0], 420); /* llama.cpp's greedy continuation (golden) starts 420 273 117 */
    EXPECT_EQ_INT(base[2], 117);
    const enum spec_mode modes[3] = {SPEC_MTP, SPEC_AUTO, SPEC_NGRAM};
    for (int i = 0; i < 3; i++) {
        memset(out, 0, sizeof(out));
        ASSERT(generate(e, modes[i], NULL, 0, 1, prompt, 16, out, 48, &st) == 48);
        EXPECT_MSG(memcmp(base, out, sizeof(base)) == 0, "%s differs", spec_mode_name(modes[i]));
        if (getenv("HEARTH_TEST_VERBOSE"))
            printf("    %s: %lld passes, mtp %lld/%lld, ngram %lld/%lld accepted\n",
                   spec_mode_name(modes[i]), (long long)st.n_steps,
                   (long long)st.n_accepted_by[SPEC_SRC_MTP],
                   (long long)st.n_drafted_by[SPEC_SRC_MTP],
                   (long long)st.n_accepted_by[SPEC_SRC_NGRAM],
                   (long long)st.n_drafted_by[SPEC_SRC_NGRAM]);
        if (modes[i] == SPEC_MTP) {
            /* a draft every pass; the length adapts down to 1 at this acceptance */
            EXPECT(st.n_drafted_by[SPEC_SRC_MTP] >= st.n_steps - 1);
            EXPECT(st.n_drafted_by[SPEC_SRC_MTP] <= st.n_steps + 8);
            EXPECT(st.n_drafted == st.n_drafted_by[SPEC_SRC_MTP]);
        }
    }
    /* fixed draft length 3 with every token verified: long rejected tails */
    struct spec_params fixed;
    spec_params_default(&fixed);
    fixed.mode = SPEC_MTP;
    fixed.adaptive = 0;
    ASSERT(generate_p(e, &fixed, 0, 1, prompt, 16, out, 48, &st) == 48);
    EXPECT(memcmp(base, out, sizeof(base)) == 0);
    EXPECT(st.n_drafted >= 3 * (st.n_steps - 4)); /* shorter at the end: n - got left */
    engine_close(e);
}

/* Samples two tokens after prompt[0..6) on session s (which holds prompt[0..5) and a checkpoint
 * there) and returns the second one, whose step verified a draft. */
static int32_t second_token(struct session *s, const struct spec_params *spp, const int32_t *prompt,
                            uint64_t seed) {
    struct error err = {0};
    struct sampler_params smp_p;
    sampler_params_default(&smp_p);
    smp_p.temperature = 0.6f;
    smp_p.top_k = 0;
    smp_p.top_p = 1.0f;
    smp_p.min_p = 0;
    smp_p.seed = seed;
    struct sampler *smp = NULL;
    struct generator *g = NULL;
    int32_t out[2] = {-1, -1};
    int got = 0;
    if (session_truncate(s, 5, &err) || sampler_create(&smp, &smp_p, 512, &err) ||
        generator_create(&g, s, smp, spp, &err) || generator_prefill(g, prompt + 5, 1, &err)) {
        test_fail(__FILE__, __LINE__, "setup: %s", err.msg);
    } else {
        while (got < 2) {
            int k = generator_next(g, out + got, 2 - got, &err);
            if (k <= 0) {
                test_fail(__FILE__, __LINE__, "generator_next: %s", err.msg);
                break;
            }
            got += k;
        }
    }
    generator_free(g);
    sampler_free(smp);
    return out[1];
}

/* With sampling, MTP drafts (mostly rejected here, so the residual draw is what is tested)
 * leave the distribution unchanged. */
TEST(spec_mtp_sampling_distribution_unchanged) {
    const char *path = test_model_path("synthetic/qwen35-mtp-f32.gguf");
    if (!path) SKIP_TEST("../shared/models/synthetic not found");
    struct error err = {0};
    struct engine_params ep;
    engine_params_default(&ep);
    ep.n_threads = 1;
    struct engine *e = NULL;
    ASSERT(engine_open(&e, path, &ep, &err) == 0);
    int32_t prompt[6] = {1, 13, 42, 100, 7, 300};
    enum { RUNS = 400 };
    static int hist_a[512], hist_b[512];
    memset(hist_a, 0, sizeof(hist_a));
    memset(hist_b, 0, sizeof(hist_b));
    struct spec_params none, fixed;
    spec_params_default(&none);
    spec_params_default(&fixed);
    fixed.mode = SPEC_MTP;
    fixed.adaptive = 0;
    fixed.mtp_max = 2;
    struct session_params sp;
    session_params_default(&sp);
    sp.n_ctx = 64;
    sp.n_rs_checkpoints = 1;
    sp.mtp = 1;
    struct session *s = NULL;
    ASSERT(session_create(&s, e, &sp, &err) == 0);
    ASSERT(session_eval(s, prompt, 5, NULL, &err) == 0 && session_checkpoint(s, &err) == 0);
    for (int r = 0; r < RUNS; r++) {
        int32_t a = second_token(s, &none, prompt, 1000 + (uint64_t)r);
        int32_t b = second_token(s, &fixed, prompt, 9000 + (uint64_t)r);
        ASSERT(a >= 0 && a < 512 && b >= 0 && b < 512);
        hist_a[a]++;
        hist_b[b]++;
    }
    double tv = 0;
    int distinct = 0;
    for (int i = 0; i < 512; i++) {
        tv += fabs((double)(hist_a[i] - hist_b[i])) / (2.0 * RUNS);
        distinct += hist_a[i] > 0;
    }
    if (getenv("HEARTH_TEST_VERBOSE")) printf("    TV %.3f over %d outcomes\n", tv, distinct);
    EXPECT_MSG(distinct >= 3, "distribution too peaked to test (%d distinct)", distinct);
    /* two samples of 400 from one distribution over ~16 outcomes: TV ~0.05; a rule that kept
     * (or always discarded) the head's drafts moves far more mass */
    EXPECT_MSG(tv < 0.12, "total variation %.3f between plain and MTP-speculative sampling", tv);
    session_free(s);
    engine_close(e);
}

/* A drafter whose drafts are rejected stops costing verify rows: with 1-gram lookup (a match
 * nearly every step) on a random-weight model, the n-gram drafter backs off to one-token
 * probes 1, 2, 4 .. 16 steps apart instead of verifying a draft every pass. Output unchanged. */
TEST(spec_ngram_backs_off_when_rejected) {
    const char *path = test_model_path("synthetic/qwen35-f32.gguf");
    if (!path) SKIP_TEST("../shared/models/synthetic not found");
    struct error err = {0};
    struct engine_params ep;
    engine_params_default(&ep);
    ep.n_threads = 1;
    struct engine *e = NULL;
    ASSERT(engine_open(&e, path, &ep, &err) == 0);
    enum { NP = SPEC_SAN ? 48 : 96, NG = SPEC_SAN ? 24 : 48 };
    int32_t prompt[NP], base[NG], out[NG]; /* distinct ids: many tokens have a match */
    for (int i = 0; i < NP; i++) prompt[i] = 1 + (i * 5) % 509;
    struct spec_stats st;
    ASSERT(generate(e, SPEC_NONE, NULL, 0, 1, prompt, NP, base, NG, NULL) == NG);
    struct spec_params p;
    spec_params_default(&p);
    p.mode = SPEC_NGRAM;
    p.ngram_min = p.ngram_max = 1;
    ASSERT(generate_p(e, &p, 0, 1, prompt, NP, out, NG, &st) == NG);
    EXPECT(memcmp(base, out, sizeof(base)) == 0);
    if (getenv("HEARTH_TEST_VERBOSE"))
        printf("    adaptive: %lld passes, %lld drafts, %lld/%lld accepted\n",
               (long long)st.n_steps, (long long)st.n_drafts, (long long)st.n_accepted,
               (long long)st.n_drafted);
    /* three one-token drafts drive the estimate below break-even, then probes 1, 2, 4 .. apart */
    EXPECT_MSG(st.n_drafted <= 10 && st.n_drafted == st.n_drafts,
               "%lld tokens drafted in %lld drafts", (long long)st.n_drafted,
               (long long)st.n_drafts);
    p.adaptive = 0;
    if (SPEC_SAN) { /* the fixed-length comparison costs 8-token verify passes: skip it */
        engine_close(e);
        return;
    }
    ASSERT(generate_p(e, &p, 0, 1, prompt, NP, out, NG, &st) == NG);
    EXPECT(memcmp(base, out, sizeof(base)) == 0);
    if (getenv("HEARTH_TEST_VERBOSE"))
        printf("    fixed: %lld passes, %lld drafts, %lld/%lld accepted\n", (long long)st.n_steps,
               (long long)st.n_drafts, (long long)st.n_accepted, (long long)st.n_drafted);
    EXPECT_MSG(st.n_drafted >= 40, "the fixed length drafted only %lld tokens",
               (long long)st.n_drafted); /* so the lookup did find matches */
    engine_close(e);
}

/* ============================================================================================
 * The two halves: plan and commit around a batched pass
 * ============================================================================================ */

/* Runs n_seq generators side by side, each step's plans evaluated in one engine_eval_batch
 * (the server's loop), until each has n tokens; out is [n_seq][n]. */
static void generate_batched(struct engine *e, const struct spec_params *spp, float temp,
                             const int32_t *prompt, int n_prompt, int n_seq, int32_t *out, int n,
                             struct spec_stats *st) {
    enum { MAXS = 4 };
    struct error err = {0};
    struct session *s[MAXS] = {0};
    struct sampler *smp[MAXS] = {0};
    struct generator *g[MAXS] = {0};
    int got[MAXS] = {0};
    struct engine_info info;
    engine_get_info(e, &info);
    for (int q = 0; q < n_seq; q++) {
        struct session_params sp;
        session_params_default(&sp);
        sp.n_ctx = 512;
        struct sampler_params smp_p;
        sampler_params_default(&smp_p);
        smp_p.temperature = temp;
        smp_p.seed = 7 + (uint64_t)q;
        if (session_create(&s[q], e, &sp, &err) ||
            sampler_create(&smp[q], &smp_p, info.n_vocab, &err) ||
            generator_create(&g[q], s[q], smp[q], spp, &err) ||
            generator_begin(g[q], NULL, SPEC_AUTO, -1, &err)) {
            test_fail(__FILE__, __LINE__, "setup: %s", err.msg);
            goto done;
        }
    }
    /* the prompts in one batch too (each sequence starts from a different prompt suffix) */
    struct session_batch_item items[MAXS];
    for (int q = 0; q < n_seq; q++) {
        items[q] = (struct session_batch_item){s[q], prompt, n_prompt - q, NULL};
        for (int i = 0; i < n_prompt - q; i++) sampler_accept(smp[q], prompt[i]);
    }
    if (engine_eval_batch(e, items, n_seq, &err)) {
        test_fail(__FILE__, __LINE__, "prompt: %s", err.msg);
        goto done;
    }
    for (int step = 0; step < 4 * n; step++) {
        int n_items = 0, idx[MAXS], alive = 0;
        for (int q = 0; q < n_seq; q++) {
            if (got[q] >= n) continue;
            alive++;
            struct generator_plan plan;
            if (generator_plan(g[q], n - got[q], &plan, &err)) {
                test_fail(__FILE__, __LINE__, "plan: %s", err.msg);
                goto done;
            }
            if (plan.n == 0) { /* the first token: nothing to evaluate */
                int k = generator_commit(g[q], out + q * n + got[q], &err);
                ASSERT(k == 1);
                got[q] += k;
                continue;
            }
            items[n_items] = (struct session_batch_item){s[q], plan.ids, plan.n, plan.logits};
            idx[n_items++] = q;
        }
        if (!alive) break;
        if (n_items && engine_eval_batch(e, items, n_items, &err)) {
            test_fail(__FILE__, __LINE__, "batch: %s", err.msg);
            goto done;
        }
        for (int i = 0; i < n_items; i++) {
            int q = idx[i];
            int32_t tmp[65];
            int k = generator_commit(g[q], tmp, &err);
            ASSERT_MSG(k >= 1 && got[q] + k <= n, "commit gave %d", k);
            memcpy(out + q * n + got[q], tmp, (size_t)k * sizeof(int32_t));
            got[q] += k;
        }
    }
    for (int q = 0; q < n_seq; q++) EXPECT_EQ_INT(got[q], n);
    if (st) {
        memset(st, 0, sizeof(*st));
        for (int q = 0; q < n_seq; q++) {
            struct spec_stats x;
            generator_stats(g[q], &x);
            st->n_drafted += x.n_drafted;
            st->n_accepted += x.n_accepted;
            st->n_steps += x.n_steps;
            for (int i = 0; i < SPEC_SRC_COUNT; i++) {
                st->n_drafted_by[i] += x.n_drafted_by[i];
                st->n_accepted_by[i] += x.n_accepted_by[i];
            }
        }
    }
done:
    for (int q = 0; q < n_seq; q++) {
        generator_free(g[q]);
        sampler_free(smp[q]);
        session_free(s[q]);
    }
}

/* Three sequences verified in one batched pass per step give exactly what each gives alone
 * with generator_next (greedy, and sampling with the same seeds). */
TEST(spec_plan_commit_batched_equals_next) {
    struct engine *e = open_stories();
    if (!e) SKIP_TEST("../shared/models/stories not found");
    int32_t prompt[6] = {1, 403, 407, 261, 378, 262};
    enum { N = 96 };
    static int32_t batched[3 * N], alone[N];
    struct spec_params p;
    spec_params_default(&p);
    p.mode = SPEC_NGRAM;
    struct spec_stats st;
    for (int temp = 0; temp < 2; temp++) {
        generate_batched(e, &p, (float)temp, prompt, 6, 3, batched, N, &st);
        EXPECT_MSG(st.n_accepted > 2 && st.n_drafted > 10, "temp %d: %lld of %lld accepted", temp,
                   (long long)st.n_accepted, (long long)st.n_drafted);
        for (int q = 0; q < 3; q++) {
            struct error err = {0};
            struct session *s = NULL;
            struct session_params sp;
            session_params_default(&sp);
            sp.n_ctx = 512;
            struct sampler_params smp_p;
            sampler_params_default(&smp_p);
            smp_p.temperature = (float)temp;
            smp_p.seed = 7 + (uint64_t)q;
            struct sampler *smp = NULL;
            struct generator *g = NULL;
            ASSERT(session_create(&s, e, &sp, &err) == 0 &&
                   sampler_create(&smp, &smp_p, 512, &err) == 0 &&
                   generator_create(&g, s, smp, &p, &err) == 0 &&
                   generator_prefill(g, prompt, 6 - q, &err) == 0);
            int got = 0;
            while (got < N) {
                int k = generator_next(g, alone + got, N - got, &err);
                ASSERT_MSG(k > 0, "%s", err.msg);
                got += k;
            }
            EXPECT_MSG(memcmp(alone, batched + q * N, sizeof(alone)) == 0,
                       "temp %d, sequence %d: batched differs from alone", temp, q);
            generator_free(g);
            sampler_free(smp);
            session_free(s);
        }
    }
    engine_close(e);
}

/* The same with the MTP head on a hybrid model: rollbacks of the recurrent state and of the MTP
 * cache inside a shared batch leave every sequence's greedy output unchanged. */
TEST(spec_mtp_plan_commit_batched) {
    const char *path = test_model_path("synthetic/qwen35-mtp-f32.gguf");
    if (!path) SKIP_TEST("../shared/models/synthetic not found");
    struct error err = {0};
    struct engine *e = NULL;
    ASSERT(engine_open(&e, path, NULL, &err) == 0);
    int32_t prompt[12] = {1, 13, 42, 100, 7, 300, 55, 211, 480, 99, 3, 256};
    enum { N = SPEC_SAN ? 8 : 20 };
    int32_t batched[2 * N], base[N];
    struct spec_params p;
    spec_params_default(&p);
    p.mode = SPEC_MTP;
    p.adaptive = 0; /* 3-token drafts every step: long rejected tails */
    struct spec_stats st;
    generate_batched(e, &p, 0, prompt, 12, 2, batched, N, &st);
    EXPECT(st.n_drafted_by[SPEC_SRC_MTP] > 2 * N);
    for (int q = 0; q < 2; q++) {
        ASSERT(generate(e, SPEC_NONE, NULL, 0, 1, prompt, 12 - q, base, N, NULL) == N);
        EXPECT_MSG(memcmp(base, batched + q * N, sizeof(base)) == 0, "sequence %d differs", q);
    }
    engine_close(e);
}

/* generator_begin: which modes a generator can narrow to, and a reused generator starting a new
 * generation from whatever the session holds. */
TEST(spec_generator_begin) {
    struct engine *e = open_stories();
    if (!e) SKIP_TEST("../shared/models/stories not found");
    struct error err = {0};
    struct session *s = NULL;
    struct session_params sp;
    session_params_default(&sp);
    sp.n_ctx = 256;
    ASSERT(session_create(&s, e, &sp, &err) == 0);
    struct sampler_params smp_p;
    sampler_params_default(&smp_p);
    smp_p.temperature = 0;
    struct sampler *smp = NULL;
    ASSERT(sampler_create(&smp, &smp_p, 512, &err) == 0);
    struct spec_params p;
    spec_params_default(&p);
    p.mode = SPEC_NONE;
    struct generator *g = NULL;
    ASSERT(generator_create(&g, s, NULL, &p, &err) == 0);
    EXPECT_EQ_INT(generator_max_step(g), 1);
    EXPECT(generator_begin(g, smp, SPEC_NGRAM, -1, &err) == ERR_UNSUPPORTED);
    EXPECT(generator_begin(g, smp, SPEC_AUTO, -1, &err) == 0);
    generator_free(g);
    p.mode = SPEC_NGRAM;
    ASSERT(generator_create(&g, s, NULL, &p, &err) == 0);
    EXPECT_EQ_INT(generator_max_step(g), 9);
    EXPECT(generator_begin(g, smp, SPEC_MTP, -1, &err) == ERR_UNSUPPORTED);
    EXPECT(strstr(err.msg, "mtp") != NULL);
    EXPECT(generator_begin(g, smp, SPEC_DRAFT, -1, &err) == ERR_UNSUPPORTED);
    /* two generations on one generator, the second with speculation off and then with a
     * 1-token cap: the same greedy tokens as a fresh generator_next run */
    int32_t bos = 1, want[64], got[64];
    ASSERT(generate(e, SPEC_NONE, NULL, 0, 1, &bos, 1, want, 64, NULL) == 64);
    const int caps[3][2] = {{SPEC_AUTO, -1}, {SPEC_NONE, -1}, {SPEC_NGRAM, 1}};
    for (int r = 0; r < 3; r++) {
        ASSERT(session_truncate(s, 0, &err) == 0);
        sampler_reset(smp);
        ASSERT(generator_begin(g, smp, (enum spec_mode)caps[r][0], caps[r][1], &err) == 0);
        ASSERT(session_eval(s, &bos, 1, NULL, &err) == 0);
        struct spec_stats st0, st1;
        generator_stats(g, &st0);
        int n = 0;
        while (n < 64) {
            int32_t step[9];
            int k = generator_next(g, step, 64 - n, &err);
            ASSERT_MSG(k > 0, "%s", err.msg);
            for (int i = 0; i < k; i++) got[n + i] = step[i];
            n += k;
            EXPECT(k <= (r == 1 ? 1 : r == 2 ? 2 : 9));
        }
        generator_stats(g, &st1);
        EXPECT_MSG(memcmp(want, got, sizeof(want)) == 0, "generation %d differs", r);
        if (r == 1) EXPECT(st1.n_drafted == st0.n_drafted);
        if (r != 1) EXPECT(st1.n_drafted > st0.n_drafted);
    }
    generator_free(g);
    sampler_free(smp);
    session_free(s);
    engine_close(e);
}

/* A sampler constraint with speculation: a draft the constraint forbids is rejected (its
 * probability is 0), and the constraint is told exactly the emitted tokens, in order. The
 * constraint here bans two frequent tokens, so n-gram drafts (copied from the unconstrained
 * prompt) keep proposing them. */
struct ban_ctx {
    int32_t ban[2];
    int32_t seen[128];
    int n_seen, n_masks;
};

static void ban_mask(void *ctx, float *logits, int n_vocab) {
    struct ban_ctx *b = ctx;
    (void)n_vocab;
    logits[b->ban[0]] = -INFINITY;
    logits[b->ban[1]] = -INFINITY;
    b->n_masks++;
}

static void ban_accept(void *ctx, int32_t id) {
    struct ban_ctx *b = ctx;
    if (b->n_seen < 128) b->seen[b->n_seen] = id;
    b->n_seen++;
}

static int generate_banned(struct engine *e, enum spec_mode mode, float temp, const int32_t *prompt,
                           int n_prompt, struct ban_ctx *b, int32_t *out, int n,
                           struct spec_stats *st) {
    struct error err = {0};
    struct session *s = NULL;
    struct sampler_params smp_p;
    sampler_params_default(&smp_p);
    smp_p.temperature = temp;
    smp_p.seed = 11;
    struct sampler *smp = NULL;
    struct generator *g = NULL;
    struct spec_params p;
    spec_params_default(&p);
    p.mode = mode;
    int got = 0;
    struct sampler_constraint hook = {b, ban_mask, ban_accept};
    if (session_create(&s, e, NULL, &err) || sampler_create(&smp, &smp_p, 512, &err) ||
        sampler_set_constraint(smp, &hook) || generator_create(&g, s, smp, &p, &err) ||
        generator_prefill(g, prompt, n_prompt, &err)) {
        test_fail(__FILE__, __LINE__, "setup: %s", err.msg);
        goto done;
    }
    while (got < n) {
        int k = generator_next(g, out + got, n - got, &err);
        if (k <= 0) {
            test_fail(__FILE__, __LINE__, "generator_next: %s", err.msg);
            break;
        }
        got += k;
    }
    generator_stats(g, st);
done:
    generator_free(g);
    sampler_free(smp);
    session_free(s);
    return got;
}

TEST(spec_constraint_sees_emitted_tokens) {
    struct engine *e = open_stories();
    if (!e) SKIP_TEST("../shared/models/stories not found");
    int32_t bos = 1, free_run[128];
    ASSERT(generate(e, SPEC_NONE, NULL, 0, 1, &bos, 1, free_run, 128, NULL) == 128);
    /* ban the two most frequent tokens of the unconstrained text */
    static int count[512];
    memset(count, 0, sizeof(count));
    for (int i = 0; i < 128; i++) count[free_run[i]]++;
    struct ban_ctx b0 = {{0, 0}, {0}, 0, 0};
    for (int t = 1; t < 512; t++) {
        if (count[t] > count[b0.ban[0]]) {
            b0.ban[1] = b0.ban[0];
            b0.ban[0] = t;
        } else if (count[t] > count[b0.ban[1]]) {
            b0.ban[1] = t;
        }
    }
    for (int temp = 0; temp < 2; temp++) {
        struct ban_ctx plain = b0, spec = b0;
        int32_t a[96], c[96];
        struct spec_stats st;
        /* the prompt is the unconstrained text: full of the banned tokens for n-gram to copy */
        ASSERT(generate_banned(e, SPEC_NONE, (float)temp, free_run, 64, &plain, a, 96, &st) == 96);
        ASSERT(generate_banned(e, SPEC_NGRAM, (float)temp, free_run, 64, &spec, c, 96, &st) == 96);
        EXPECT_MSG(st.n_drafted > st.n_accepted && st.n_accepted > 0,
                   "temp %d: %lld of %lld accepted", temp, (long long)st.n_accepted,
                   (long long)st.n_drafted);
        for (int i = 0; i < 96; i++) {
            EXPECT(c[i] != b0.ban[0] && c[i] != b0.ban[1]);
            if (temp == 0) EXPECT(a[i] == c[i]);
        }
        /* told every emitted token once, in order */
        EXPECT_EQ_INT(spec.n_seen, 96);
        EXPECT(memcmp(spec.seen, c, sizeof(c)) == 0);
        EXPECT(memcmp(plain.seen, a, sizeof(a)) == 0);
    }
    engine_close(e);
}
