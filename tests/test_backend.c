/* test_backend.c: the CPU backend's ops against plain loops over the kernel table.
 *
 * The backend cuts every op into tiles and units that threads claim in any order; these tests
 * pin down that this never changes a number: matmul and matmul_id equal one vec_dot per output
 * element bit for bit (odd sizes, bias, prefill and decode shapes, 1 and 3 threads), attention
 * of a query row is the same alone or inside a batch for every cache type, and the pool's
 * dynamic jobs run every item once. Plus the KV-cache default: F16 keeps the synthetic goldens'
 * greedy ids.
 */
#include "test.h"

#include "../src/backend/backend.h"
#include "../src/backend/cpu/cpu_kernels.h"
#include "../src/base/mem.h"
#include "../src/base/threads.h"
#include "../src/engine/engine.h"
#include "json_mini.h"

#include <math.h>
#include <sched.h>
#include <unistd.h>
#include <stdatomic.h>
#include <string.h>

static uint64_t g_rng = 88172645463325252ull;

static float frand(void) { /* uniform in [-1, 1) */
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (float)((double)(g_rng >> 11) / (double)(1ull << 53)) * 2.0f - 1.0f;
}

/* Weights {k, n_rows, n_mat} of dtype t from random floats (reference quantizer). */
static void *make_weights(enum dtype t, int64_t k, int64_t n_rows, int64_t n_mat,
                          struct tensor *w) {
    size_t rb = dtype_row_bytes(t, k);
    char *data = mem_alloc(rb * (size_t)(n_rows * n_mat));
    float *row = mem_alloc((size_t)k * sizeof(float));
    if (!data || !row) {
        mem_free(data);
        mem_free(row);
        return NULL;
    }
    for (int64_t r = 0; r < n_rows * n_mat; r++) {
        for (int64_t i = 0; i < k; i++) row[i] = frand();
        if (t == DTYPE_F32)
            memcpy(data + (size_t)r * rb, row, rb);
        else
            dtype_traits(t)->from_float(row, data + (size_t)r * rb, k);
    }
    mem_free(row);
    int64_t ne[3] = {k, n_rows, n_mat};
    tensor_init(w, t, n_mat > 1 ? 3 : 2, ne, data);
    return data;
}

/* vec_dot of weight row r of matrix e with activation row x (f32, converted like the backend). */
static float ref_dot(const struct cpu_kernels *kern, const struct tensor *w, int64_t r, int64_t e,
                     const float *x, void *xq) {
    enum dtype vt = dtype_traits(w->type)->vec_dot_type;
    const void *xa = x;
    if (vt != DTYPE_F32) {
        kern->from_float[vt](x, xq, w->ne[0]);
        xa = xq;
    }
    /* Q8_0 on an AMX table: llama.cpp's AMX block order (cpu_kernels.h, q8_0_blk_dot) */
    if (w->type == DTYPE_Q8_0 && kern->q8_0_blk_dot)
        return kern->q8_0_blk_dot(tensor_row(w, r, e), xa, w->ne[0]);
    return kern->vec_dot[w->type](tensor_row(w, r, e), xa, w->ne[0]);
}

TEST(backend_matmul_tiles_bit_exact) {
    const enum dtype types[] = {DTYPE_F32,  DTYPE_F16,  DTYPE_Q8_0, DTYPE_Q4_0,
                                DTYPE_Q4_K, DTYPE_Q5_K, DTYPE_Q6_K};
    const int ns[] = {1, 2, 5, 70};
    const int64_t k = 512;
    const struct cpu_kernels *kern = cpu_kernels_get();
    float *x = mem_alloc((size_t)70 * k * sizeof(float));
    float *y = mem_alloc((size_t)70 * 300 * sizeof(float));
    float *bias = mem_alloc((size_t)300 * sizeof(float));
    void *xq = mem_alloc((size_t)k * 8);
    ASSERT(x && y && bias && xq);
    for (int64_t i = 0; i < 70 * k; i++) x[i] = frand();
    for (int64_t i = 0; i < 300; i++) bias[i] = frand();
    for (int nthr = 1; nthr <= 3; nthr += 2) {
        struct backend *be = NULL;
        struct error err = {0};
        ASSERT(backend_cpu_create(&be, nthr, &err) == 0);
        for (size_t it = 0; it < 4 * sizeof(types) / sizeof(types[0]); it++) {
            /* the F32 gemm's shape, and not; 29 and 300: decode units cut into runs of rows of
             * unequal length (mm_unit; with 4-row tiles and one thread 300 rows make units of 40
             * and a last one of 20 rows: runs of 3 rows, the last of 2) */
            static const int64_t shapes[4] = {37, 36, 29, 300};
            const int64_t n_out = shapes[it % 4];
            const enum dtype type = types[it / 4];
            struct tensor w, bt;
            tensor_init(&bt, DTYPE_F32, 1, (int64_t[]){n_out}, bias);
            void *data = make_weights(type, k, n_out, 1, &w);
            if (!data) continue;
            for (size_t in = 0; in < sizeof(ns) / sizeof(ns[0]); in++) {
                int n = ns[in], use_bias = in & 1, bad = 0;
                be->matmul(be, &w, use_bias ? &bt : NULL, x, y, n);
                for (int t = 0; t < n && !bad; t++)
                    for (int64_t r = 0; r < n_out && !bad; r++) {
                        /* F32 with a row count not a multiple of 4: ggml_vec_dot_f32's order
                         * (llama.cpp's F32 gemm does not take that shape) */
                        float want =
                            type == DTYPE_F32 && n_out % 4
                                ? f32_id_dot_ref(tensor_row(&w, r, 0), x + (size_t)t * k, k)
                                : ref_dot(kern, &w, r, 0, x + (size_t)t * k, xq);
                        if (use_bias) want += bias[r];
                        float got = y[(size_t)t * n_out + r];
                        if (memcmp(&want, &got, sizeof(float))) {
                            test_fail(__FILE__, __LINE__,
                                      "%s n=%d threads=%d: y[%d][%lld] = %.9g, vec_dot %.9g",
                                      dtype_name(type), n, nthr, t, (long long)r, got, want);
                            bad = 1;
                        }
                    }
            }
            mem_free(data);
        }
        backend_free(be);
    }
    mem_free(x);
    mem_free(y);
    mem_free(bias);
    mem_free(xq);
}

TEST(backend_matmul_id_bit_exact) {
    const int64_t k = 256, n_out = 21, n_exp = 6;
    const int n = 9, kk = 2;
    const struct cpu_kernels *kern = cpu_kernels_get();
    float *x = mem_alloc((size_t)n * kk * k * sizeof(float));
    float *y = mem_alloc((size_t)n * kk * n_out * sizeof(float));
    void *xq = mem_alloc((size_t)k * 8);
    int32_t ids[9 * 2];
    ASSERT(x && y && xq);
    for (int64_t i = 0; i < n * kk * k; i++) x[i] = frand();
    for (int t = 0; t < n; t++) { /* distinct experts per token; expert 5 never used */
        ids[t * kk] = (t * 3) % 5;
        ids[t * kk + 1] = (t * 3 + 1 + t % 3) % 5;
        if (ids[t * kk + 1] == ids[t * kk]) ids[t * kk + 1] = (ids[t * kk] + 1) % 5;
    }
    const enum dtype types[] = {DTYPE_F32, DTYPE_Q8_0, DTYPE_Q4_K};
    for (int nthr = 1; nthr <= 3; nthr += 2) {
        struct backend *be = NULL;
        struct error err = {0};
        ASSERT(backend_cpu_create(&be, nthr, &err) == 0);
        for (size_t it = 0; it < 3; it++) {
            struct tensor w;
            void *data = make_weights(types[it], k, n_out, n_exp, &w);
            ASSERT(data);
            for (int per_slot = 0; per_slot <= 1; per_slot++) {
                for (int nn = 1; nn <= n; nn += n - 1) { /* decode (1 token) and a batch */
                    be->matmul_id(be, &w, x, per_slot, ids, nn, kk, y);
                    int bad = 0;
                    for (int s = 0; s < nn * kk && !bad; s++)
                        for (int64_t r = 0; r < n_out && !bad; r++) {
                            const float *xr = x + (size_t)(per_slot ? s : s / kk) * k;
                            /* F32 experts: ggml_vec_dot_f32's order, as llama.cpp's
                             * mul_mat_id (not the dense gemm's) */
                            float want = types[it] == DTYPE_F32
                                             ? f32_id_dot_ref(tensor_row(&w, r, ids[s]), xr, k)
                                             : ref_dot(kern, &w, r, ids[s], xr, xq);
                            float got = y[(size_t)s * n_out + r];
                            if (memcmp(&want, &got, sizeof(float))) {
                                test_fail(__FILE__, __LINE__,
                                          "%s per_slot=%d n=%d: slot %d row %lld: %.9g vs %.9g",
                                          dtype_name(types[it]), per_slot, nn, s, (long long)r, got,
                                          want);
                                bad = 1;
                            }
                        }
                }
            }
            mem_free(data);
        }
        backend_free(be);
    }
    mem_free(x);
    mem_free(y);
    mem_free(xq);
}

/* Attention of every query row is the same computed alone (decode) or in a batch of fewer than
 * 64 rows; a batch of 64 or more takes llama.cpp's tiled arithmetic (F16/F32 caches), where a
 * row is the same in any such batch (here all 75 rows, or the last 67 on their own); every row is
 * close to a double-precision softmax. */
static double attention_vs_double(const float *q, const float *kx, const float *vx, int tok,
                                  int q_dim, int kv_dim, int nh, int nkv, int hd, const float *o) {
    double worst = 0;
    for (int h = 0; h < nh; h++) {
        int g = h / (nh / nkv);
        double mx = -1e300, l = 0, acc[64] = {0}, s[128];
        for (int j = 0; j <= tok; j++) {
            s[j] = 0;
            for (int d = 0; d < hd; d++)
                s[j] += (double)q[tok * q_dim + h * hd + d] * kx[j * kv_dim + g * hd + d];
            s[j] *= 0.125;
            mx = fmax(mx, s[j]);
        }
        for (int j = 0; j <= tok; j++) {
            double p = exp(s[j] - mx);
            l += p;
            for (int d = 0; d < hd; d++) acc[d] += p * vx[j * kv_dim + g * hd + d];
        }
        for (int d = 0; d < hd; d++) worst = fmax(worst, fabs(acc[d] / l - o[h * hd + d]));
    }
    return worst;
}

TEST(backend_attention_rows_independent_of_batch) {
    enum { N = 75, NH = 4, NKV = 2, HD = 64, SHORT = 40, SKIP = 8 };
    const enum dtype kv_types[] = {DTYPE_F16, DTYPE_F32, DTYPE_Q8_0};
    int kv_dim = NKV * HD, q_dim = NH * HD;
    float *q = mem_alloc(sizeof(float) * N * q_dim), *kx = mem_alloc(sizeof(float) * N * kv_dim);
    float *vx = mem_alloc(sizeof(float) * N * kv_dim);
    float *o_all = mem_alloc(sizeof(float) * N * q_dim), *o_one = mem_alloc(sizeof(float) * q_dim);
    float *o_part = mem_alloc(sizeof(float) * N * q_dim);
    ASSERT(q && kx && vx && o_all && o_one && o_part);
    for (int i = 0; i < N * q_dim; i++) q[i] = frand() * 2;
    for (int i = 0; i < N * kv_dim; i++) kx[i] = frand() * 2, vx[i] = frand();
    struct backend *be = NULL;
    struct error err = {0};
    ASSERT(backend_cpu_create(&be, 2, &err) == 0);
    for (size_t it = 0; it < 3; it++) {
        enum dtype t = kv_types[it];
        int tiled = t != DTYPE_Q8_0;
        size_t rb = dtype_row_bytes(t, kv_dim);
        void *kc = be->buffer_alloc(be, rb * N), *vc = be->buffer_alloc(be, rb * N);
        ASSERT(kc && vc);
        /* stored in two pieces: batch store equals row-by-row store */
        be->kv_store(be, kc, vc, t, kv_dim, kx, vx, kv_dim, 0, 50);
        be->kv_store(be, kc, vc, t, kv_dim, kx + 50 * kv_dim, vx + 50 * kv_dim, kv_dim, 50, N - 50);
        struct attn_args a = {q, q_dim, kc, vc, t, N, 0, NH, NKV, HD, 0.125f, o_all};
        be->attention(be, &a);
        struct attn_args tail = a; /* the last N - SKIP rows (still >= 64) */
        tail.q = q + SKIP * q_dim;
        tail.n_tokens = N - SKIP;
        tail.pos0 = SKIP;
        tail.out = o_part + SKIP * q_dim;
        be->attention(be, &tail);
        EXPECT_MSG(!memcmp(o_part + SKIP * q_dim, o_all + SKIP * q_dim,
                           sizeof(float) * (N - SKIP) * q_dim),
                   "%s: rows of a 67-row batch differ from the 75-row batch", dtype_name(t));
        struct attn_args sh = a; /* a short batch: the first SHORT rows */
        sh.n_tokens = SHORT;
        sh.out = o_part;
        be->attention(be, &sh);
        double worst = 0;
        int mismatch = -1, short_mismatch = -1;
        for (int tok = 0; tok < N; tok++) {
            struct attn_args b = a;
            b.q = q + tok * q_dim;
            b.n_tokens = 1;
            b.pos0 = tok;
            b.out = o_one;
            be->attention(be, &b);
            if (tok < SHORT && short_mismatch < 0 &&
                memcmp(o_one, o_part + tok * q_dim, sizeof(float) * q_dim))
                short_mismatch = tok;
            if (!tiled && mismatch < 0 && memcmp(o_one, o_all + tok * q_dim, sizeof(float) * q_dim))
                mismatch = tok;
            worst =
                fmax(worst, attention_vs_double(q, kx, vx, tok, q_dim, kv_dim, NH, NKV, HD, o_one));
            worst = fmax(worst, attention_vs_double(q, kx, vx, tok, q_dim, kv_dim, NH, NKV, HD,
                                                    o_all + tok * q_dim));
        }
        EXPECT_MSG(short_mismatch < 0, "%s: token %d alone differs from a %d-row batch",
                   dtype_name(t), short_mismatch, SHORT);
        EXPECT_MSG(mismatch < 0, "%s: token %d alone differs from the batch", dtype_name(t),
                   mismatch);
        EXPECT_MSG(worst < (t == DTYPE_F32 ? 1e-5 : 2e-2), "%s: max error vs double %g",
                   dtype_name(t), worst);
        be->buffer_free(be, kc);
        be->buffer_free(be, vc);
    }
    backend_free(be);
    mem_free(q);
    mem_free(kx);
    mem_free(vx);
    mem_free(o_all);
    mem_free(o_one);
    mem_free(o_part);
}

/* threadpool_run_dynamic: every claimed item runs exactly once, later phases see everything
 * earlier ones wrote, and the job returns only when every thread that joined has left (even
 * with more threads than cores, when workers often join late or not at all). threadpool_run
 * still runs fn on every thread. */
struct dyn_job {
    _Atomic int64_t next, done;
    int64_t n;
    int round;
    int *hits;   /* [n] */
    int *phase2; /* [n] */
    _Atomic int ran[8];
    _Atomic int errors;
};

static void dyn_task(void *p, int ith, int nth) {
    struct dyn_job *j = p;
    atomic_fetch_add(&j->ran[ith], 1);
    int64_t i;
    while ((i = atomic_fetch_add(&j->next, 1)) < j->n) {
        j->hits[i] = j->round;
        atomic_fetch_add(&j->done, 1);
    }
    while (atomic_load(&j->done) < j->n) sched_yield();
    for (int64_t k = ith; k < j->n; k += nth) /* phase 2 reads phase 1 */
        if (j->hits[(k * 7) % j->n] != j->round) atomic_fetch_add(&j->errors, 1);
}

static void all_task(void *p, int ith, int nth) {
    struct dyn_job *j = p;
    atomic_fetch_add(&j->ran[ith], 1);
}

TEST(backend_threadpool_dynamic_jobs) {
    for (int nthr = 1; nthr <= 5; nthr += 2) {
        struct threadpool *pool = NULL;
        ASSERT(threadpool_create(&pool, nthr) == 0);
        static struct dyn_job j;
        memset(&j, 0, sizeof(j));
        j.n = 257;
        j.hits = mem_calloc((size_t)j.n, sizeof(int));
        ASSERT(j.hits);
        for (j.round = 1; j.round <= 200; j.round++) {
            atomic_store(&j.next, 0);
            atomic_store(&j.done, 0);
            threadpool_run_dynamic(pool, dyn_task, &j);
            for (int64_t i = 0; i < j.n; i++)
                if (j.hits[i] != j.round) atomic_fetch_add(&j.errors, 1);
        }
        EXPECT_MSG(atomic_load(&j.errors) == 0, "%d threads: %d errors", nthr,
                   atomic_load(&j.errors));
        EXPECT_EQ_INT(atomic_load(&j.ran[0]), 200); /* the caller always runs its job */
        for (int t = 1; t < nthr; t++) EXPECT(atomic_load(&j.ran[t]) <= 200);
        memset((void *)j.ran, 0, sizeof(j.ran));
        for (int r = 0; r < 50; r++) threadpool_run(pool, all_task, &j);
        for (int t = 0; t < nthr; t++) EXPECT_EQ_INT(atomic_load(&j.ran[t]), 50);
        mem_free(j.hits);
        threadpool_free(pool);
    }
}

/* threadpool_set_idle: waiting workers (never the caller) call the idle function between jobs,
 * with their own ith, until it returns 0, and not again before their next job. */
struct idle_job {
    _Atomic int calls[4];  /* idle calls per ith while its budget lasted */
    _Atomic int budget[4]; /* the last call with work returns 0 */
    _Atomic int bad_ith;
};

static int idle_count(void *ctx, int ith) {
    struct idle_job *j = ctx;
    if (ith <= 0 || ith >= 4) {
        atomic_fetch_add(&j->bad_ith, 1);
        return 0;
    }
    int b = atomic_fetch_sub(&j->budget[ith], 1);
    if (b > 0) atomic_fetch_add(&j->calls[ith], 1); /* calls while there was work */
    return b > 1;
}

static void idle_noop_task(void *p, int ith, int nth) {
    (void)p, (void)ith, (void)nth;
}

TEST(backend_threadpool_idle_work) {
    struct threadpool *pool = NULL;
    ASSERT(threadpool_create(&pool, 3) == 0);
    static struct idle_job j;
    memset(&j, 0, sizeof(j));
    for (int t = 1; t < 3; t++) atomic_store(&j.budget[t], 5);
    threadpool_set_idle(pool, idle_count, &j);
    threadpool_run(pool, idle_noop_task, NULL); /* every worker runs it, then waits */
    for (int spins = 0;
         spins < 2000000 && (atomic_load(&j.calls[1]) < 5 || atomic_load(&j.calls[2]) < 5); spins++)
        sched_yield();
    usleep(2000); /* calls after the one that returned 0 would show up now */
    for (int t = 1; t < 3; t++)
        EXPECT_MSG(atomic_load(&j.calls[t]) == 5, "worker %d: %d idle calls, want 5", t,
                   atomic_load(&j.calls[t]));
    EXPECT_EQ_INT(atomic_load(&j.calls[0]), 0); /* the caller never waits for jobs */
    EXPECT_EQ_INT(atomic_load(&j.bad_ith), 0);
    for (int t = 1; t < 3; t++) atomic_store(&j.budget[t], 3);
    usleep(2000); /* no calls without a job */
    for (int t = 1; t < 3; t++) EXPECT_EQ_INT(atomic_load(&j.calls[t]), 5);
    threadpool_run(pool, idle_noop_task, NULL); /* a job arms it again */
    for (int spins = 0;
         spins < 2000000 && (atomic_load(&j.calls[1]) < 8 || atomic_load(&j.calls[2]) < 8); spins++)
        sched_yield();
    usleep(2000);
    for (int t = 1; t < 3; t++) EXPECT_EQ_INT(atomic_load(&j.calls[t]), 8);
    threadpool_free(pool);
}

/* The default KV cache is F16, and with it greedy decoding of the synthetic F32 models gives
 * llama.cpp's greedy ids, the same as an F32 cache. */
TEST(backend_kv_f16_default_keeps_golden_greedy) {
    struct session_params sp;
    session_params_default(&sp);
    EXPECT_EQ_INT(sp.kv_type, KV_TYPE_F16);
    const char *names[] = {"qwen3-f32", "qwen3moe-f32", "qwen2-f32"};
    for (int m = 0; m < 3; m++) {
        char rel[128], grel[128], path[4096];
        snprintf(rel, sizeof(rel), "synthetic/%s.gguf", names[m]);
        snprintf(grel, sizeof(grel), "synthetic/%s.golden.json", names[m]);
        if (!test_model_path(rel) || !test_model_path(grel))
            SKIP_TEST("../shared/models/synthetic not found");
        snprintf(path, sizeof(path), "%s", test_model_path(rel));
        char *text = test_read_file(test_model_path(grel), NULL);
        struct jm *g = text ? jm_parse(text, strlen(text)) : NULL;
        mem_free(text);
        ASSERT(g);
        const struct jm *pr = jm_get(g, "prompt_ids"), *gr = jm_get(g, "greedy_ids");
        ASSERT(pr && gr && pr->len <= 64 && gr->len <= 64);
        int32_t prompt[64];
        for (size_t i = 0; i < pr->len; i++) prompt[i] = (int32_t)pr->items[i].num;
        struct engine *e = NULL;
        struct error err = {0};
        ASSERT_MSG(engine_open(&e, path, NULL, &err) == 0, "%s", err.msg);
        struct engine_info info;
        engine_get_info(e, &info);
        int32_t got[2][64];
        for (int kv = 0; kv < 2; kv++) {
            struct session *s = NULL;
            sp.n_ctx = 128;
            sp.kv_type = kv == 0 ? KV_TYPE_F16 : KV_TYPE_F32;
            ASSERT(session_create(&s, e, &sp, &err) == 0);
            ASSERT(session_eval(s, prompt, (int)pr->len, NULL, &err) == 0);
            for (size_t i = 0; i < gr->len; i++) {
                const float *l = session_logits(s);
                int32_t best = 0;
                for (int v = 1; v < info.n_vocab; v++)
                    if (l[v] > l[best]) best = v;
                got[kv][i] = best;
                ASSERT(session_eval(s, &best, 1, NULL, &err) == 0);
            }
            session_free(s);
        }
        int same_f16 = 1, same_f32 = 1;
        for (size_t i = 0; i < gr->len; i++) {
            same_f16 &= got[0][i] == (int32_t)gr->items[i].num;
            same_f32 &= got[1][i] == (int32_t)gr->items[i].num;
        }
        EXPECT_MSG(same_f16, "%s: F16 KV greedy differs from llama.cpp's", names[m]);
        EXPECT_MSG(same_f32, "%s: F32 KV greedy differs from llama.cpp's", names[m]);
        engine_close(e);
        jm_free(g);
    }
}

/* Whole forward passes on quantized synthetic models (AMX / multi-token tiles for prefill, the
 * one-token path for decode, F16 cache): a prompt evaluated in one batch gives bit for bit the
 * logits of the same tokens evaluated one at a time, and of an uneven split. */
TEST(backend_quantized_prefill_equals_decode_bits) {
    const char *names[] = {"synthetic/qwen3-q4_k_m.gguf", "synthetic/qwen3-q8_0.gguf",
                           "synthetic/qwen3-q6_k.gguf"};
    for (int m = 0; m < 3; m++) {
        const char *p = test_model_path(names[m]);
        if (!p) SKIP_TEST("../shared/models/synthetic not found");
        struct engine *e = NULL;
        struct error err = {0};
        struct engine_params ep;
        engine_params_default(&ep);
        ep.n_threads = 2;
        ASSERT_MSG(engine_open(&e, p, &ep, &err) == 0, "%s", err.msg);
        struct engine_info info;
        engine_get_info(e, &info);
        enum { N = 45 };
        int32_t ids[N];
        for (int i = 0; i < N; i++) ids[i] = (int32_t)((i * 7919 + 3) % info.n_vocab);
        size_t V = (size_t)info.n_vocab;
        float *all = mem_alloc(N * V * sizeof(float)), *split = mem_alloc(N * V * sizeof(float));
        ASSERT(all && split);
        struct session_params sp;
        session_params_default(&sp);
        sp.n_ctx = 64;
        struct session *a = NULL, *b = NULL, *c = NULL;
        ASSERT(session_create(&a, e, &sp, &err) == 0 && session_create(&b, e, &sp, &err) == 0 &&
               session_create(&c, e, &sp, &err) == 0);
        ASSERT(session_eval(a, ids, N, all, &err) == 0);
        ASSERT(session_eval(c, ids, 17, split, &err) == 0);
        ASSERT(session_eval(c, ids + 17, N - 17, split + 17 * V, &err) == 0);
        int bad = -1;
        for (int i = 0; i < N; i++) {
            ASSERT(session_eval(b, &ids[i], 1, NULL, &err) == 0);
            if (bad < 0 && memcmp(session_logits(b), all + i * V, V * sizeof(float))) bad = i;
        }
        EXPECT_MSG(bad < 0, "%s: token %d: batched logits differ from one-at-a-time", names[m],
                   bad);
        EXPECT_MSG(memcmp(all, split, N * V * sizeof(float)) == 0, "%s: 17+28 split differs",
                   names[m]);
        session_free(a);
        session_free(b);
        session_free(c);
        mem_free(all);
        mem_free(split);
        engine_close(e);
    }
}
