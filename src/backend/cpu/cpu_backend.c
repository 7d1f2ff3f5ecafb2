/* cpu_backend.c: the CPU implementation of struct backend (see backend.h).
 *
 * Every op packs its arguments into a small struct and runs one job on the persistent thread
 * pool (base/threads.h, threadpool_run_dynamic). Work is cut into units (row chunks, tiles,
 * attention rows) that threads claim from an atomic counter, and only the threads that are ready
 * take part, so a worker that lost its core to another process (the machine is shared) costs
 * its share of throughput instead of stalling every op. An op with several phases (quantize the
 * activations, then multiply) keeps them in one job: a thread that finishes its phase-1 items
 * waits only for items already claimed. Small ops run inline on the caller: a wake-up costs
 * more than they do.
 *
 * Numerics do not depend on the schedule: every output element is computed by exactly one
 * kernel call whose arguments do not depend on the thread count, the unit boundaries or the
 * other rows of the batch. That keeps batched prefill equal to token-by-token evaluation and a
 * multi-session batch equal to separate sessions, bit for bit, whichever kernel table is used.
 * The per-dtype kernels come from the kernel table (cpu_kernels.h), chosen once at start-up.
 */
#include "../backend.h"

#include "../../base/log.h"
#include "../../base/mem.h"
#include "../../base/threads.h"
#include "cpu_internal.h"
#include "cpu_kernels.h"

#include <float.h>
#include <math.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* ============================================================================================
 * Context, scratch and work claiming
 * One scratch buffer per backend (ops run one at a time), and the two ways work is shared out:
 * a claim (chunks taken from a counter) and a phase (a claim whose items must all be finished
 * before anyone moves on). Nothing is split by thread index: the pool's dynamic jobs only run
 * on the threads that are ready.
 * ============================================================================================ */

struct pf_trace; /* decode products in the order they ran (section "Prefetching the next job") */

struct cpu_ctx {
    struct threadpool *pool;
    int n_threads;
    const struct cpu_kernels *kern;
    void *work;       /* scratch for quantized activations and per-thread buffers */
    size_t work_size; /* bytes */
    struct pf_trace *pf;
};

static struct cpu_ctx *ctx_of(struct backend *be) {
    return (struct cpu_ctx *)be->ctx;
}

/* Scratch of at least n_bytes, kept between ops (grows, never shrinks). CHECKs on failure:
 * sizes are bounded by the batch and context fixed at session creation, so a failure here is
 * an out-of-memory the engine could not have reported anyway. */
static void *work_get(struct cpu_ctx *c, size_t n_bytes) {
    if (n_bytes > c->work_size) {
        mem_free(c->work);
        c->work = mem_alloc_aligned(64, n_bytes);
        CHECK(c->work != NULL);
        c->work_size = n_bytes;
    }
    return c->work;
}

static size_t align64(size_t n) {
    return (n + 63) & ~(size_t)63;
}

static int64_t min64(int64_t a, int64_t b) {
    return a < b ? a : b;
}

/* Work claimed dynamically: threads take [lo, hi) chunks of [0, n) until none is left. */
struct claim {
    _Atomic int64_t next;
    int64_t n, chunk;
};

/* Chunks of about n / (4 * n_threads) items, at least min_chunk. */
static void claim_init(struct claim *c, int64_t n, int n_threads, int64_t min_chunk) {
    atomic_init(&c->next, 0);
    c->n = n;
    c->chunk = (n + 4 * (int64_t)n_threads - 1) / (4 * (int64_t)n_threads);
    if (c->chunk < min_chunk) c->chunk = min_chunk;
    if (c->chunk < 1) c->chunk = 1;
}

static int claim_next(struct claim *c, int64_t *lo, int64_t *hi) {
    int64_t i = atomic_fetch_add_explicit(&c->next, c->chunk, memory_order_relaxed);
    if (i >= c->n) return 0;
    *lo = i;
    *hi = min64(i + c->chunk, c->n);
    return 1;
}

/* A phase of a multi-phase job: its items are claimed like a struct claim, and threads that
 * move on to the next phase first wait until every claimed item of this one is finished. */
struct phase {
    struct claim c;
    _Atomic int64_t done; /* items finished */
};

static void phase_done(struct phase *ph, int64_t n_items) {
    atomic_fetch_add_explicit(&ph->done, n_items, memory_order_release);
}

static void phase_wait(struct phase *ph) {
    int spins = 0;
    while (atomic_load_explicit(&ph->done, memory_order_acquire) < ph->c.n)
        if (++spins > 4000) sched_yield();
}

/* Static split for the ops that run on every thread (threadpool_run: cpu_ops_recurrent.c). */
void cpu_split_range(int64_t n, int ith, int nth, int64_t *lo, int64_t *hi) {
    int64_t per = (n + nth - 1) / nth;
    *lo = per * ith < n ? per * ith : n;
    *hi = *lo + per < n ? *lo + per : n;
}

struct threadpool *cpu_backend_pool(struct backend *be) {
    return ctx_of(be)->pool;
}

const struct cpu_kernels *cpu_backend_kernels(struct backend *be) {
    return ctx_of(be)->kern;
}

/* ============================================================================================
 * Memory
 * ============================================================================================ */

static void *cpu_buffer_alloc(struct backend *be, size_t n_bytes) {
    void *p = mem_alloc_aligned(64, n_bytes ? n_bytes : 1);
    if (p) memset(p, 0, n_bytes);
    return p;
}

static void cpu_buffer_free(struct backend *be, void *p) {
    mem_free(p);
}

static void cpu_copy(struct backend *be, void *dst, const void *src, size_t n_bytes) {
    memcpy(dst, src, n_bytes);
}

/* ============================================================================================
 * Element-wise ops and norms
 * Cheap ops; split over rows or elements so that large batches still use every thread, and run
 * inline below a size where waking the pool costs more than the work.
 * ============================================================================================ */

#define INLINE_ELEMS 16384 /* element-wise work below this runs on the caller */

struct get_rows_args {
    const struct cpu_kernels *kern;
    const struct tensor *w;
    const int32_t *ids;
    float *out;
    struct claim c; /* rows */
};

static void get_rows_task(void *p, int ith, int nth) {
    struct get_rows_args *a = p;
    int64_t dim = a->w->ne[0], lo, hi;
    while (claim_next(&a->c, &lo, &hi)) {
        for (int64_t i = lo; i < hi; i++)
            a->kern->to_float[a->w->type](tensor_row(a->w, a->ids[i], 0), a->out + i * dim, dim);
    }
}

static void cpu_get_rows(struct backend *be, const struct tensor *w, const int32_t *ids, int n,
                         float *out) {
    struct cpu_ctx *c = ctx_of(be);
    struct get_rows_args a = {c->kern, w, ids, out, {0}};
    for (int i = 0; i < n; i++) CHECK(ids[i] >= 0 && ids[i] < w->ne[1]);
    claim_init(&a.c, n, c->n_threads, 1);
    if (n == 1)
        get_rows_task(&a, 0, 1);
    else
        threadpool_run_dynamic(c->pool, get_rows_task, &a);
}

struct rms_norm_args {
    const float *x;
    int x_stride;
    const float *w;
    float *out;
    int out_stride, n_rows, dim;
    float eps;
    struct claim c; /* rows */
};

/* Sums of squares of rows x[0..nr) (nr <= 4), each accumulated in double in element order as
 * ggml does; the rows go side by side so their addition chains overlap (each row's sum is still
 * the same sequence of additions). */
static void sum_squares(const float *const *x, int nr, int dim, double *sum) {
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    const float *x0 = x[0], *x1 = x[nr > 1 ? 1 : 0], *x2 = x[nr > 2 ? 2 : 0];
    const float *x3 = x[nr > 3 ? 3 : 0];
    for (int i = 0; i < dim; i++) {
        s0 += (double)(x0[i] * x0[i]);
        s1 += (double)(x1[i] * x1[i]);
        s2 += (double)(x2[i] * x2[i]);
        s3 += (double)(x3[i] * x3[i]);
    }
    double all[4] = {s0, s1, s2, s3};
    for (int r = 0; r < nr; r++) sum[r] = all[r];
}

static void rms_norm_task(void *p, int ith, int nth) {
    struct rms_norm_args *a = p;
    int64_t lo, hi;
    while (claim_next(&a->c, &lo, &hi)) {
        for (int64_t r0 = lo; r0 < hi; r0 += 4) {
            int nr = (int)min64(4, hi - r0);
            const float *xs[4];
            double sum[4];
            for (int r = 0; r < nr; r++) xs[r] = a->x + (r0 + r) * a->x_stride;
            sum_squares(xs, nr, a->dim, sum);
            for (int r = 0; r < nr; r++) {
                const float *x = xs[r];
                float *y = a->out + (r0 + r) * a->out_stride;
                float scale = 1.0f / sqrtf((float)(sum[r] / a->dim) + a->eps);
                if (a->w)
                    for (int i = 0; i < a->dim; i++) y[i] = x[i] * scale * a->w[i];
                else
                    for (int i = 0; i < a->dim; i++) y[i] = x[i] * scale;
            }
        }
    }
}

static void cpu_rms_norm(struct backend *be, const float *x, int x_stride, const struct tensor *w,
                         float *out, int out_stride, int n_rows, int dim, float eps) {
    CHECK(!w || (w->type == DTYPE_F32 && w->ne[0] == dim));
    struct rms_norm_args a = {
        x, x_stride, w ? (const float *)w->data : NULL, out, out_stride, n_rows, dim, eps, {0}};
    claim_init(&a.c, n_rows, ctx_of(be)->n_threads, 4);
    if ((int64_t)n_rows * dim < INLINE_ELEMS)
        rms_norm_task(&a, 0, 1);
    else
        threadpool_run_dynamic(ctx_of(be)->pool, rms_norm_task, &a);
}

struct binary_args {
    const float *a, *b;
    float *out;
    int op; /* 0 add, 1 swiglu (kern->swiglu) */
    const struct cpu_kernels *kern;
    struct claim c; /* elements */
};

static void binary_task(void *p, int ith, int nth) {
    struct binary_args *a = p;
    int64_t lo, hi;
    while (claim_next(&a->c, &lo, &hi)) {
        if (a->op == 0) {
            for (int64_t i = lo; i < hi; i++) a->out[i] = a->a[i] + a->b[i];
        } else {
            a->kern->swiglu(a->a + lo, a->b + lo, a->out + lo, hi - lo);
        }
    }
}

static void run_binary(struct backend *be, const float *x, const float *y, float *out, int64_t n,
                       int op) {
    struct binary_args a = {x, y, out, op, ctx_of(be)->kern, {0}};
    claim_init(&a.c, n, ctx_of(be)->n_threads, 1024);
    if (n < (op == 0 ? 4 * INLINE_ELEMS : INLINE_ELEMS / 2))
        binary_task(&a, 0, 1);
    else
        threadpool_run_dynamic(ctx_of(be)->pool, binary_task, &a);
}

static void cpu_add(struct backend *be, const float *a, const float *b, float *out, int64_t n) {
    run_binary(be, a, b, out, n, 0);
}

static void cpu_swiglu(struct backend *be, const float *gate, const float *up, float *out,
                       int64_t n) {
    run_binary(be, gate, up, out, n, 1);
}

/* ============================================================================================
 * RoPE
 * Angles are computed as ggml does (theta starts at pos and is multiplied by
 * base^(-2/n_rot) once per pair, in float), so positions far into the context round the same
 * way as llama.cpp. YaRN follows the paper's ramp between interpolation and extrapolation.
 * The rotation itself is kern->rope_pairs, with the FMA contraction of llama.cpp's build.
 * ============================================================================================ */

static float yarn_corr_dim(int n_rot, int n_ctx_orig, float n_turns, float base) {
    return (float)n_rot * logf((float)n_ctx_orig / (n_turns * 2.0f * (float)M_PI)) /
           (2.0f * logf(base));
}

static float yarn_ramp(float low, float high, int i0) {
    float y = ((float)i0 / 2 - low) / fmaxf(0.001f, high - low);
    return 1.0f - fminf(1.0f, fmaxf(0.0f, y));
}

struct rope_args {
    float *x;
    int stride;
    const int32_t *pos;
    int n, n_head, head_dim;
    const struct rope_params *rp;
    const struct cpu_kernels *kern;
    struct claim c; /* tokens */
};

static void rope_task(void *p, int ith, int nth) {
    struct rope_args *a = p;
    const struct rope_params *rp = a->rp;
    int n_rot = rp->n_rot;
    float theta_scale = powf(rp->freq_base, -2.0f / (float)n_rot);
    float corr_lo = 0, corr_hi = 0;
    if (rp->is_yarn && rp->ext_factor != 0) {
        corr_lo = floorf(yarn_corr_dim(n_rot, rp->n_ctx_orig, rp->beta_fast, rp->freq_base));
        corr_hi = ceilf(yarn_corr_dim(n_rot, rp->n_ctx_orig, rp->beta_slow, rp->freq_base));
        corr_lo = fmaxf(0, corr_lo);
        corr_hi = fminf((float)(n_rot - 1), corr_hi);
    }
    float cs[1024], sn[1024]; /* n_rot/2 <= 1024 checked by the caller */
    int64_t lo, hi;
    while (claim_next(&a->c, &lo, &hi)) {
        for (int64_t t = lo; t < hi; t++) {
            float theta = (float)a->pos[t];
            for (int i = 0; i < n_rot / 2; i++) {
                float th = theta;
                if (rp->freq_factors) th /= rp->freq_factors[i];
                float th_interp = rp->freq_scale * th, th_final = th_interp, mscale = 1.0f;
                if (rp->is_yarn) {
                    mscale = rp->attn_factor;
                    if (rp->ext_factor != 0) {
                        float mix = yarn_ramp(corr_lo, corr_hi, 2 * i) * rp->ext_factor;
                        th_final = th_interp * (1 - mix) + th * mix;
                        mscale *= 1.0f + 0.1f * logf(1.0f / rp->freq_scale);
                    }
                }
                cs[i] = cosf(th_final) * mscale;
                sn[i] = sinf(th_final) * mscale;
                theta *= theta_scale;
            }
            for (int h = 0; h < a->n_head; h++) {
                float *x = a->x + t * a->stride + (int64_t)h * a->head_dim;
                a->kern->rope_pairs(x, cs, sn, n_rot / 2,
                                    rp->mode == ROPE_MODE_NEOX ? n_rot / 2 : 0);
            }
        }
    }
}

static void cpu_rope(struct backend *be, float *x, int stride, const int32_t *pos, int n,
                     int n_head, int head_dim, const struct rope_params *rp) {
    CHECK(rp->n_rot > 0 && rp->n_rot <= head_dim && rp->n_rot % 2 == 0 && rp->n_rot <= 2048);
    struct rope_args a = {x, stride, pos, n, n_head, head_dim, rp, ctx_of(be)->kern, {0}};
    claim_init(&a.c, n, ctx_of(be)->n_threads, 1);
    if (n < 4)
        rope_task(&a, 0, 1);
    else
        threadpool_run_dynamic(ctx_of(be)->pool, rope_task, &a);
}

/* ============================================================================================
 * Matrix products
 * y[t][r] = W[r] . x[t]. The activation rows are first converted to the weight's vec_dot_type
 * (Q8_0, Q8_K, F16...), once per op. The product is then cut into units of unit_rows weight
 * rows x unit_toks tokens; inside a unit the kernel's gemm tile (up to tile_w rows x tile_x
 * tokens) reads each weight block once for tile_x tokens and each activation block once for
 * tile_w rows, with the weight rows of a tile kept hot in L1 while the unit's tokens stream
 * past them from L2. For decode (one token) a unit is a chunk of rows and the tile is tile_w
 * rows against the one activation row.
 * ============================================================================================ */

#define DECODE_STREAMS    8 /* decode: rows read side by side, each from its own long run */
#define STREAM_MAX_TOKS   4 /* units with at most this many tokens read their rows that way */
#define STREAM_MIN_BYTES  (16 * 1024) /* ... when the unit is this big (small ones sit in cache) */
#define PREFETCH_AHEAD    512         /* decode: prefetch distance past the tile's start, bytes */
#define PREFETCH_MAX_TOKS 4  /* units with at most this many tokens prefetch their weights */
#define UNIT_TOKS         64 /* tokens per prefill unit: their activations stay in L2 */
#define UNIT_MIN_ROWS     16 /* smallest row chunk (decode) */
#define UNITS_PER_THR     8  /* aim for this many units per thread, for balance */
/* ... in decode, where longer runs read faster (mm_unit): the 0.6B's per-layer matrices
 * (0.6-2.6 MB) on 2 threads stream at 17.5 GB/s in 8 units per thread, 19.8 in 2 */
#define DECODE_UNITS_PER_THR 2
#define MOE_UNIT_ROWS        256           /* largest row chunk of an expert unit */
#define UNIT_MAX_BYTES       (1024 * 1024) /* decode: weight bytes per unit at most (LM head) */

struct mm_plan {
    int tile_w, tile_x;
    int64_t unit_rows, unit_toks;
    int64_t n_row_units, n_tok_units;
};

/* Q8_0 weights go through the table's block-order tile where it has one (AMX CPUs: what
 * llama.cpp does there, cpu_kernels.h), except token_embd, which llama.cpp keeps in a plain
 * buffer (a tied output head runs in ggml_vec_dot_q8_0_q8_0's order). */
static int q8_0_blk(const struct cpu_kernels *kern, const struct tensor *w) {
    return w->type == DTYPE_Q8_0 && kern->q8_0_blk_tile &&
           !(w->name && !strcmp(w->name, "token_embd.weight"));
}

/* Unit sizes for an n_out x n product on nth threads. */
static void mm_plan_make(int tile_w, int tile_x, size_t row_bytes, int64_t n_out, int64_t n,
                         int nth, struct mm_plan *p) {
    p->tile_w = tile_w > 0 ? tile_w : 1;
    p->tile_x = tile_x > 0 ? tile_x : 1;
    int64_t unit_toks = (UNIT_TOKS + p->tile_x - 1) / p->tile_x * p->tile_x;
    p->unit_toks = n <= unit_toks ? n : unit_toks;
    p->n_tok_units = (n + p->unit_toks - 1) / p->unit_toks;
    int64_t want = (int64_t)nth * (n <= STREAM_MAX_TOKS ? DECODE_UNITS_PER_THR : UNITS_PER_THR);
    int64_t row_units = (want + p->n_tok_units - 1) / p->n_tok_units;
    int64_t rows = (n_out + row_units - 1) / row_units;
    int64_t by_bytes = (int64_t)(UNIT_MAX_BYTES / (row_bytes ? row_bytes : 1));
    if (p->n_tok_units == 1 && rows > by_bytes) rows = by_bytes; /* big matrices, decode */
    if (rows < UNIT_MIN_ROWS) rows = UNIT_MIN_ROWS;
    rows = (rows + p->tile_w - 1) / p->tile_w * p->tile_w;
    p->unit_rows = rows;
    p->n_row_units = (n_out + rows - 1) / rows;
}

/* One unit: weight rows [r0, r1) x tokens [t0, t1), written at y[t * y_stride + r].
 * With at most STREAM_MAX_TOKS tokens (decode, speculative verification) the weights stream from
 * memory once and the speed is the memory's. This machine's memory keeps up only with several
 * long sequential runs in flight per core: a tile of rows next to each other is several short
 * runs (one row each, 1-2 KB) that the prefetchers ramp up for again and again, and a single
 * run (row after row) has too few misses in flight. So the unit's rows are cut into
 * DECODE_STREAMS runs of consecutive rows and a tile takes one row of each run (row stride =
 * run length): each run is read front to back. Measured (2 threads, Qwen3-8B Q4_K_M, tg):
 * 2.9 -> 4.5 t/s; bench_kernels' Q4_K matvec on two cores at once: 2 x 7.2 GB/s with rows of
 * 2.3 KB, 2 x 16 GB/s with the same kernel on long rows. Otherwise (and for short units) the
 * tile's bytes are prefetched (into L2, PREFETCH_AHEAD bytes ahead) before the call. */
static void mm_unit(cpu_gemm_tile_fn tile, const struct mm_plan *p, const void *w, size_t w_rb,
                    int64_t k, const void *xq, size_t xq_rb, int64_t r0, int64_t r1, int64_t t0,
                    int64_t t1, float *y, size_t y_stride) {
    const char *w_end = (const char *)w + (size_t)r1 * w_rb;
    int ns = DECODE_STREAMS, nt = (int)(t1 - t0);
    if (nt <= STREAM_MAX_TOKS && nt <= p->tile_x && r1 - r0 >= 2 * ns &&
        (size_t)(r1 - r0) * w_rb >= STREAM_MIN_BYTES) {
        /* ns long runs of rows side by side: at step s, row i of the tile is r0 + s + i * len
         * (tiles of at most tile_w of those rows) */
        int64_t len = (r1 - r0 + ns - 1) / ns;
        float tmp[STREAM_MAX_TOKS * DECODE_STREAMS];
        for (int64_t s = 0; s < len; s++) {
            int nw = 0;
            while (nw < ns && r0 + s + nw * len < r1) nw++;
            for (int i0 = 0; i0 < nw; i0 += p->tile_w)
                tile((const char *)w + (size_t)(r0 + s + i0 * len) * w_rb, (size_t)len * w_rb,
                     (const char *)xq + (size_t)t0 * xq_rb, xq_rb, k, tmp + i0, (size_t)ns,
                     nw - i0 < p->tile_w ? nw - i0 : p->tile_w, nt);
            for (int t = 0; t < nt; t++)
                for (int i = 0; i < nw; i++)
                    y[(size_t)(t0 + t) * y_stride + (size_t)(r0 + s + i * len)] = tmp[t * ns + i];
        }
        return;
    }
    for (int64_t r = r0; r < r1; r += p->tile_w) {
        int nw = (int)min64(p->tile_w, r1 - r);
        if (t1 - t0 <= PREFETCH_MAX_TOKS) {
            const char *pf = (const char *)w + (size_t)r * w_rb + PREFETCH_AHEAD;
            for (size_t o = 0; o < (size_t)nw * w_rb && pf + o < w_end; o += 64)
                __builtin_prefetch(pf + o, 0, 2);
        }
        for (int64_t t = t0; t < t1; t += p->tile_x) {
            int nx = (int)min64(p->tile_x, t1 - t);
            tile((const char *)w + (size_t)r * w_rb, w_rb, (const char *)xq + (size_t)t * xq_rb,
                 xq_rb, k, y + (size_t)t * y_stride + (size_t)r, y_stride, nw, nx);
        }
    }
}

/* The rows of unit v of a product (v counted within the product) and whether mm_unit reads them
 * as DECODE_STREAMS runs side by side (then run i starts at row r0 + i * len). */
struct unit_rows {
    int64_t r0, r1, t0, t1, len;
    int streams;
};

static struct unit_rows unit_rows_of(const struct mm_plan *p, int64_t v, int64_t n_out, int64_t n,
                                     size_t w_rb) {
    struct unit_rows u;
    u.r0 = (v / p->n_tok_units) * p->unit_rows;
    u.t0 = (v % p->n_tok_units) * p->unit_toks;
    u.r1 = min64(u.r0 + p->unit_rows, n_out);
    u.t1 = min64(u.t0 + p->unit_toks, n);
    int64_t nt = u.t1 - u.t0;
    u.streams = nt <= STREAM_MAX_TOKS && nt <= p->tile_x && u.r1 - u.r0 >= 2 * DECODE_STREAMS &&
                (size_t)(u.r1 - u.r0) * w_rb >= STREAM_MIN_BYTES;
    u.len = u.streams ? (u.r1 - u.r0 + DECODE_STREAMS - 1) / DECODE_STREAMS : u.r1 - u.r0;
    return u;
}

/* ============================================================================================
 * Prefetching the next job
 * A decode step runs the same products in the same order every token, and between two of them
 * the memory bus idles: while one thread finishes its last unit, and while the caller runs the
 * small ops in between (norms, RoPE, attention) and the workers wait. So the backend remembers,
 * for each decode product (keyed by its first matrix), the product that came next last time,
 * and a thread with nothing left to do prefetches into L2 the start of the unit it will most
 * likely take first in that next product (unit ith: the caller claims first, the workers join
 * in order). Threads do that after their last unit while others still work, and workers go on
 * while they wait for the next job (threadpool_set_idle), a few lines per call. Only hints: a
 * wrong guess costs bandwidth, never a result.
 * ============================================================================================ */

#define PF_SLOTS       1024        /* remembered products (open addressing) */
#define PF_UNIT_BYTES  (64 * 1024) /* prefetched per thread: the start of its first unit */
#define PF_STEP_LINES  16          /* lines per idle call */
#define PF_MAX_THREADS 64          /* threads beyond this do not prefetch */
/* Only ahead of a product of at most this many weight bytes: where a job's edges are a real
 * share of its time (0.6B Q4_K_M, 1-4 MB per job: tg +2%); before the 8B's 9-41 MB jobs it
 * measured -2% (alternating runs, within noise but every time). */
#define PF_MAX_JOB_BYTES ((size_t)8 << 20)

struct pf_prod { /* one product of a remembered job */
    const char *data;
    size_t w_rb;
    int64_t n_out;
    struct mm_plan plan;
};

struct pf_job {
    int n_prod;
    int64_t n;    /* tokens */
    size_t bytes; /* weight bytes of all its products */
    struct pf_prod prod[BACKEND_MULTI_MAX];
};

struct pf_slot {
    const void *key; /* first matrix's data of a decode job */
    struct pf_job next;
};

struct pf_cursor { /* one thread's prefetching: runs of bytes, read side by side */
    _Alignas(64) const char *base;
    size_t stride, bytes, off;
    int runs;
    _Atomic int armed; /* written by its thread, read by the same thread's idle calls */
};

struct pf_trace {
    struct pf_slot slots[PF_SLOTS];
    const void *last_key; /* the decode job that ran last */
    struct pf_cursor cur[PF_MAX_THREADS];
};

static size_t pf_hash(const void *key) {
    uintptr_t k = (uintptr_t)key >> 6;
    return (size_t)((k * 0x9E3779B97F4A7C15ull) >> 54) % PF_SLOTS;
}

/* The slot of key (inserted if absent and insert); NULL if the table is full or key absent. */
static struct pf_slot *pf_slot(struct pf_trace *t, const void *key, int insert) {
    size_t h = pf_hash(key);
    for (size_t i = 0; i < PF_SLOTS; i++) {
        struct pf_slot *s = &t->slots[(h + i) % PF_SLOTS];
        if (s->key == key) return s;
        if (!s->key) {
            if (!insert) return NULL;
            s->key = key;
            return s;
        }
    }
    return NULL;
}

/* Thread ith's cursor set to the start of its likely first unit of job j. */
static void pf_arm(struct pf_trace *t, const struct pf_job *j, int ith) {
    if (ith >= PF_MAX_THREADS || !j || j->n_prod == 0) return;
    int64_t u = ith;
    int ip = 0;
    for (; ip < j->n_prod; ip++) {
        int64_t nu = j->prod[ip].plan.n_row_units * j->prod[ip].plan.n_tok_units;
        if (u < nu) break;
        u -= nu;
    }
    if (ip == j->n_prod) return;
    const struct pf_prod *p = &j->prod[ip];
    struct unit_rows r = unit_rows_of(&p->plan, u, p->n_out, j->n, p->w_rb);
    struct pf_cursor *c = &t->cur[ith];
    c->base = p->data + (size_t)r.r0 * p->w_rb;
    c->runs = r.streams ? DECODE_STREAMS : 1;
    c->stride = (size_t)r.len * p->w_rb;
    size_t per_run = PF_UNIT_BYTES / (size_t)c->runs;
    c->bytes = per_run < c->stride ? per_run : c->stride;
    c->off = 0;
    atomic_store_explicit(&c->armed, 1, memory_order_relaxed);
}

/* Up to `lines` more lines of thread ith's prefetching; returns 0 when it has none left. */
static int pf_step(struct pf_trace *t, int ith, int lines) {
    if (ith >= PF_MAX_THREADS) return 0;
    struct pf_cursor *c = &t->cur[ith];
    if (!atomic_load_explicit(&c->armed, memory_order_relaxed)) return 0;
    for (int l = 0; l < lines; l += c->runs) {
        if (c->off >= c->bytes) {
            atomic_store_explicit(&c->armed, 0, memory_order_relaxed);
            return 0;
        }
        for (int i = 0; i < c->runs; i++)
            __builtin_prefetch(c->base + (size_t)i * c->stride + c->off, 0, 2);
        c->off += 64;
    }
    return 1;
}

static int pf_idle(void *ctx, int ith) {
    return pf_step((struct pf_trace *)ctx, ith, PF_STEP_LINES);
}

/* A decode job is starting: it becomes the last job's successor, and the job remembered after
 * it (if any) is returned for its threads to prefetch when they are done. */
static const struct pf_job *pf_enter(struct pf_trace *t, const struct pf_job *job) {
    const void *key = job->prod[0].data;
    if (t->last_key && t->last_key != key) {
        struct pf_slot *prev = pf_slot(t, t->last_key, 1);
        if (prev) prev->next = *job;
    }
    t->last_key = key;
    struct pf_slot *self = pf_slot(t, key, 0);
    return self && self->next.n_prod ? &self->next : NULL;
}

/* Phase 1 of a product: activation rows to the vec_dot_type. */
struct quantize_args {
    cpu_from_float_fn from_float; /* NULL: nothing to do (F32, or done on the caller) */
    const float *x;
    int64_t k;
    void *xq;
    size_t row_bytes;
    struct phase ph; /* rows */
};

static void quantize_phase(struct quantize_args *a) {
    int64_t lo, hi;
    if (!a->from_float) return;
    while (claim_next(&a->ph.c, &lo, &hi)) {
        for (int64_t r = lo; r < hi; r++)
            a->from_float(a->x + r * a->k, (char *)a->xq + r * a->row_bytes, a->k);
        phase_done(&a->ph, hi - lo);
    }
    phase_wait(&a->ph);
}

/* One product of a matmul job, with its units numbered from unit0 in the job. */
struct mm_prod {
    cpu_gemm_tile_fn tile;
    const struct tensor *w;
    const float *bias;
    float *y;
    struct mm_plan plan;
    int64_t unit0;
};

struct matmul_args {
    struct quantize_args q; /* phase 1 */
    const void *xq;
    size_t xq_rb;
    int64_t n;
    int n_prod;
    struct mm_prod prod[BACKEND_MULTI_MAX];
    int64_t n_units;
    _Atomic int64_t next; /* next unit to claim */
    struct pf_trace *pf;
    const struct pf_job *pf_next; /* the job expected next (decode), or NULL */
    _Atomic int64_t units_left;   /* units not finished yet */
};

static void matmul_task(void *p, int ith, int nth) {
    (void)nth;
    struct matmul_args *a = p;
    quantize_phase(&a->q);
    int ip = 0;
    for (int64_t u;
         (u = atomic_fetch_add_explicit(&a->next, 1, memory_order_relaxed)) < a->n_units;) {
        while (ip + 1 < a->n_prod && u >= a->prod[ip + 1].unit0) ip++;
        const struct mm_prod *m = &a->prod[ip];
        const struct mm_plan *pl = &m->plan;
        int64_t k = m->w->ne[0], n_out = m->w->ne[1], v = u - m->unit0;
        struct unit_rows r = unit_rows_of(pl, v, n_out, a->n, m->w->nb[1]);
        mm_unit(m->tile, pl, m->w->data, m->w->nb[1], k, a->xq, a->xq_rb, r.r0, r.r1, r.t0, r.t1,
                m->y, (size_t)n_out);
        if (m->bias)
            for (int64_t t = r.t0; t < r.t1; t++)
                for (int64_t i = r.r0; i < r.r1; i++) m->y[t * n_out + i] += m->bias[i];
        atomic_fetch_sub_explicit(&a->units_left, 1, memory_order_relaxed);
    }
    if (a->pf_next) { /* bus time the others leave: the next job's first unit */
        pf_arm(a->pf, a->pf_next, ith);
        while (atomic_load_explicit(&a->units_left, memory_order_relaxed) > 0 &&
               pf_step(a->pf, ith, PF_STEP_LINES)) {
        }
    }
}

/* Products of one x with n_w matrices that share K and the activation format, in one job. */
static void matmul_job(struct cpu_ctx *c, int n_w, const struct tensor *const *w,
                       const struct tensor *const *bias, const float *x, float *const *y, int n) {
    const struct dtype_traits *tr = dtype_traits(w[0]->type);
    int64_t k = w[0]->ne[0];
    enum dtype vt = tr->vec_dot_type;
    struct matmul_args a;
    memset(&a, 0, sizeof(a));
    a.n = n;
    if (vt == DTYPE_F32) {
        a.xq = x;
        a.xq_rb = (size_t)k * sizeof(float);
    } else {
        a.xq_rb = dtype_row_bytes(vt, k);
        void *xq = work_get(c, a.xq_rb * (size_t)n);
        a.xq = xq;
        cpu_from_float_fn ff = c->kern->from_float[vt];
        CHECK(ff != NULL);
        if (n == 1) { /* one row: cheaper on the caller than as a phase */
            ff(x, xq, k);
        } else {
            a.q.from_float = ff;
            a.q.x = x;
            a.q.k = k;
            a.q.xq = xq;
            a.q.row_bytes = a.xq_rb;
            claim_init(&a.q.ph.c, n, c->n_threads, 1);
        }
    }
    for (int i = 0; i < n_w; i++) {
        struct mm_prod *m = &a.prod[a.n_prod++];
        CHECK(c->kern->gemm_tile[w[i]->type]);
        CHECK(!bias || !bias[i] || (bias[i]->type == DTYPE_F32 && bias[i]->ne[0] == w[i]->ne[1]));
        m->w = w[i];
        m->bias = bias && bias[i] ? (const float *)bias[i]->data : NULL;
        m->y = y[i];
        m->tile = c->kern->gemm_tile[w[i]->type];
        /* llama.cpp's F32 gemm (tinyBLAS) takes only row counts that are multiples of 4 and
         * rows of whole 16-float vectors; other shapes (a one-row gate) go through
         * ggml_vec_dot_f32. */
        if (w[i]->type == DTYPE_F32 && (w[i]->ne[1] % 4 != 0 || w[i]->ne[0] % 16 != 0))
            m->tile = c->kern->f32_id_tile;
        int tw = c->kern->gemm_tile_w[w[i]->type], tx = c->kern->gemm_tile_x[w[i]->type];
        if (q8_0_blk(c->kern, w[i])) {
            m->tile = c->kern->q8_0_blk_tile;
            tw = c->kern->q8_0_blk_tile_w;
            tx = c->kern->q8_0_blk_tile_x;
        }
        mm_plan_make(tw, tx, w[i]->nb[1], w[i]->ne[1], n, c->n_threads, &m->plan);
        m->unit0 = a.n_units;
        a.n_units += m->plan.n_row_units * m->plan.n_tok_units;
    }
    atomic_init(&a.next, 0);
    atomic_init(&a.units_left, a.n_units);
    if (c->pf && n <= STREAM_MAX_TOKS && c->n_threads > 1) {
        struct pf_job job = {.n_prod = a.n_prod, .n = n};
        for (int i = 0; i < a.n_prod; i++) {
            job.prod[i] = (struct pf_prod){(const char *)a.prod[i].w->data, a.prod[i].w->nb[1],
                                           a.prod[i].w->ne[1], a.prod[i].plan};
            job.bytes += tensor_nbytes(a.prod[i].w);
        }
        a.pf = c->pf;
        a.pf_next = pf_enter(c->pf, &job);
        if (a.pf_next && a.pf_next->bytes > PF_MAX_JOB_BYTES) a.pf_next = NULL;
    }
    threadpool_run_dynamic(c->pool, matmul_task, &a);
}

static void cpu_matmul(struct backend *be, const struct tensor *w, const struct tensor *bias,
                       const float *x, float *y, int n) {
    CHECK(dtype_traits(w->type));
    matmul_job(ctx_of(be), 1, &w, &bias, x, &y, n);
}

/* One job for each run of matrices that share K and the activation format. */
static void cpu_matmul_multi(struct backend *be, int n_w, const struct tensor *const *w,
                             const struct tensor *const *bias, const float *x, float *const *y,
                             int n) {
    CHECK(n_w >= 1 && n_w <= BACKEND_MULTI_MAX);
    for (int i0 = 0, i1; i0 < n_w; i0 = i1) {
        const struct dtype_traits *tr = dtype_traits(w[i0]->type);
        CHECK(tr);
        for (i1 = i0 + 1; i1 < n_w; i1++) {
            const struct dtype_traits *t1 = dtype_traits(w[i1]->type);
            CHECK(t1);
            if (w[i1]->ne[0] != w[i0]->ne[0] || t1->vec_dot_type != tr->vec_dot_type) break;
        }
        matmul_job(ctx_of(be), i1 - i0, w + i0, bias ? bias + i0 : NULL, x, y + i0, n);
    }
}

/* ---- mixture of experts ----
 * matmul_id groups the (token, slot) pairs by expert (a counting sort), gathers each group's
 * activation rows into one contiguous run, and then multiplies every expert's weights with its
 * run exactly like a dense matmul, so each expert's weights are read once per call however
 * many tokens chose it. Outputs go through a per-thread tile buffer back to y[slot]. F32
 * experts use kern->f32_id_tile (ggml_vec_dot_f32's order, as llama.cpp's mul_mat_id), the other
 * dtypes the dense tile (their vec_dot order is the same in both of llama.cpp's ops). */

static void cpu_moe_route(struct backend *be, const float *logits, int n, int n_expert, int k,
                          int norm, int32_t *ids, float *weights) {
    CHECK(k >= 1 && k <= n_expert && n_expert <= 4096);
    float p[4096];
    for (int t = 0; t < n; t++) {
        const float *l = logits + (int64_t)t * n_expert;
        float mx = -INFINITY;
        for (int e = 0; e < n_expert; e++) mx = fmaxf(mx, l[e]);
        double sum = 0;
        for (int e = 0; e < n_expert; e++) {
            p[e] = expf(l[e] - mx);
            sum += p[e];
        }
        float inv = (float)(1.0 / sum); /* scale by the reciprocal, as ggml's soft_max does */
        for (int e = 0; e < n_expert; e++) p[e] *= inv;
        float wsum = 0;
        for (int j = 0; j < k; j++) { /* k largest, descending; ties keep the lower id */
            int best = -1;
            for (int e = 0; e < n_expert; e++) {
                int taken = 0;
                for (int q = 0; q < j; q++) taken |= ids[t * k + q] == e;
                if (!taken && (best < 0 || p[e] > p[best])) best = e;
            }
            ids[t * k + j] = best;
            weights[t * k + j] = p[best];
            wsum += p[best];
        }
        if (norm) {
            float d = fmaxf(wsum, 6.103515625e-5f);
            for (int j = 0; j < k; j++) weights[t * k + j] /= d;
        }
    }
}

struct matmul_id_args {
    cpu_from_float_fn from_float; /* NULL for F32 activations (copied) */
    cpu_gemm_tile_fn tile;
    const struct tensor *w;
    const float *x;
    int x_per_slot, k, n_slots;
    const int32_t *slot_of;      /* [n_slots] slots (t*k + j) grouped by expert */
    const int32_t *expert_start; /* [n_expert+1] offsets into slot_of */
    const int64_t *unit_base;    /* [n_used+1] first unit of each used expert */
    const int32_t *used;         /* [n_used] experts with at least one slot */
    int n_used;
    void *xg;     /* [n_slots] activation rows in grouped order, vec_dot_type */
    size_t xg_rb; /* bytes per row */
    float *tmp;   /* per thread: unit_rows x unit_toks floats */
    size_t tmp_stride;
    float *y;
    struct mm_plan plan; /* unit_rows and unit_toks (tile sizes) shared by all experts */
    struct phase gather; /* phase 1: grouped rows */
    _Atomic int64_t next;
};

static void matmul_id_task(void *p, int ith, int nth) {
    struct matmul_id_args *a = p;
    int64_t kdim = a->w->ne[0], n_out = a->w->ne[1];
    /* phase 1: activation rows in grouped order */
    int64_t lo, hi;
    while (claim_next(&a->gather.c, &lo, &hi)) {
        for (int64_t g = lo; g < hi; g++) {
            int slot = a->slot_of[g];
            const float *xr = a->x + (int64_t)(a->x_per_slot ? slot : slot / a->k) * kdim;
            char *dst = (char *)a->xg + (size_t)g * a->xg_rb;
            if (a->from_float)
                a->from_float(xr, dst, kdim);
            else
                memcpy(dst, xr, a->xg_rb);
        }
        phase_done(&a->gather, hi - lo);
    }
    phase_wait(&a->gather);
    /* phase 2: units of (expert, row chunk, token chunk) */
    const struct mm_plan *pl = &a->plan;
    float *tmp = a->tmp + (size_t)ith * a->tmp_stride;
    int64_t n_units = a->unit_base[a->n_used];
    int ie = 0;
    for (int64_t u; (u = atomic_fetch_add_explicit(&a->next, 1, memory_order_relaxed)) < n_units;) {
        while (u >= a->unit_base[ie + 1]) ie++;
        while (u < a->unit_base[ie]) ie--;
        int e = a->used[ie];
        int64_t s0 = a->expert_start[e], cnt = a->expert_start[e + 1] - s0;
        int64_t n_tok_units = (cnt + pl->unit_toks - 1) / pl->unit_toks;
        int64_t v = u - a->unit_base[ie];
        int64_t r0 = (v / n_tok_units) * pl->unit_rows, t0 = (v % n_tok_units) * pl->unit_toks;
        int64_t r1 = min64(r0 + pl->unit_rows, n_out), t1 = min64(t0 + pl->unit_toks, cnt);
        /* tmp holds the unit as [t - t0][r - r0] */
        mm_unit(a->tile, pl, tensor_row(a->w, r0, e), a->w->nb[1], kdim,
                (const char *)a->xg + (size_t)(s0 + t0) * a->xg_rb, a->xg_rb, 0, r1 - r0, 0,
                t1 - t0, tmp, (size_t)pl->unit_rows);
        for (int64_t t = t0; t < t1; t++)
            memcpy(a->y + (int64_t)a->slot_of[s0 + t] * n_out + r0,
                   tmp + (size_t)(t - t0) * pl->unit_rows, (size_t)(r1 - r0) * sizeof(float));
    }
}

static void cpu_matmul_id(struct backend *be, const struct tensor *w, const float *x,
                          int x_per_slot, const int32_t *ids, int n, int k, float *y) {
    struct cpu_ctx *c = ctx_of(be);
    const struct dtype_traits *tr = dtype_traits(w->type);
    CHECK(tr && c->kern->gemm_tile[w->type]);
    int64_t n_expert = w->ne[2], kdim = w->ne[0], n_out = w->ne[1];
    int n_slots = n * k, nth = c->n_threads;
    enum dtype vt = tr->vec_dot_type;
    size_t xg_rb = vt == DTYPE_F32 ? (size_t)kdim * sizeof(float) : dtype_row_bytes(vt, kdim);

    /* Plan: UNIT_TOKS tokens of one expert per unit; rows so that the used experts together
     * give about UNITS_PER_THR units per thread (at most MOE_UNIT_ROWS, which bounds the
     * per-thread tile buffer). */
    struct matmul_id_args a;
    memset(&a, 0, sizeof(a));
    uint8_t seen[4096] = {0};
    int64_t n_used_est = 0;
    CHECK(n_expert <= 4096);
    for (int s = 0; s < n_slots; s++) {
        CHECK(ids[s] >= 0 && ids[s] < n_expert);
        n_used_est += !seen[ids[s]];
        seen[ids[s]] = 1;
    }
    int tw = c->kern->gemm_tile_w[w->type], tx = c->kern->gemm_tile_x[w->type];
    if (q8_0_blk(c->kern, w)) {
        tw = c->kern->q8_0_blk_tile_w;
        tx = c->kern->q8_0_blk_tile_x;
    }
    mm_plan_make(tw, tx, w->nb[1], n_out, 1, nth, &a.plan);
    if (n <= STREAM_MAX_TOKS) {
        /* decode: few long units (a whole expert matrix where it fits UNIT_MAX_BYTES), so
         * mm_unit's runs are long; the tile buffer is n tokens wide */
        int64_t want = (int64_t)nth * DECODE_UNITS_PER_THR;
        int64_t rows = (n_out * n_used_est + want - 1) / want;
        int64_t by_bytes = (int64_t)(UNIT_MAX_BYTES / w->nb[1]);
        if (rows > by_bytes) rows = by_bytes;
        if (rows > n_out) rows = n_out;
        if (rows < UNIT_MIN_ROWS) rows = UNIT_MIN_ROWS;
        a.plan.unit_rows = (rows + a.plan.tile_w - 1) / a.plan.tile_w * a.plan.tile_w;
        a.plan.unit_toks = n;
    } else {
        int64_t want = (int64_t)nth * UNITS_PER_THR;
        int64_t rows = (n_out * n_used_est + want - 1) / want;
        if (rows > MOE_UNIT_ROWS) rows = MOE_UNIT_ROWS;
        if (rows < UNIT_MIN_ROWS) rows = UNIT_MIN_ROWS;
        a.plan.unit_rows = (rows + a.plan.tile_w - 1) / a.plan.tile_w * a.plan.tile_w;
        a.plan.unit_toks = (UNIT_TOKS + a.plan.tile_x - 1) / a.plan.tile_x * a.plan.tile_x;
    }

    /* Scratch: index arrays, grouped activations, per-thread tile buffers. */
    size_t off_start = align64((size_t)n_slots * sizeof(int32_t));
    size_t off_used = off_start + align64(((size_t)n_expert + 1) * sizeof(int32_t));
    size_t off_base = off_used + align64((size_t)n_expert * sizeof(int32_t));
    size_t off_xg = off_base + align64(((size_t)n_expert + 1) * sizeof(int64_t));
    size_t off_tmp = off_xg + align64(xg_rb * (size_t)n_slots);
    size_t tmp_stride = (size_t)a.plan.unit_rows * (size_t)a.plan.unit_toks;
    char *work = work_get(c, off_tmp + tmp_stride * sizeof(float) * (size_t)nth);
    int32_t *slot_of = (int32_t *)work, *start = (int32_t *)(work + off_start);
    int32_t *used = (int32_t *)(work + off_used);
    int64_t *base = (int64_t *)(work + off_base);

    /* Group slots by expert (counting sort, stable: slots of one expert stay in token order). */
    memset(start, 0, ((size_t)n_expert + 1) * sizeof(int32_t));
    for (int s = 0; s < n_slots; s++) start[ids[s] + 1]++;
    for (int64_t e = 0; e < n_expert; e++) start[e + 1] += start[e];
    for (int s = 0; s < n_slots; s++) slot_of[start[ids[s]]++] = s;
    for (int64_t e = n_expert; e > 0; e--) start[e] = start[e - 1];
    start[0] = 0;
    int n_used = 0;
    base[0] = 0;
    for (int64_t e = 0; e < n_expert; e++) {
        int64_t cnt = start[e + 1] - start[e];
        if (!cnt) continue;
        int64_t units = ((n_out + a.plan.unit_rows - 1) / a.plan.unit_rows) *
                        ((cnt + a.plan.unit_toks - 1) / a.plan.unit_toks);
        used[n_used] = (int32_t)e;
        base[n_used + 1] = base[n_used] + units;
        n_used++;
    }

    a.from_float = vt == DTYPE_F32 ? NULL : c->kern->from_float[vt];
    CHECK(vt == DTYPE_F32 || a.from_float);
    a.tile = w->type == DTYPE_F32   ? c->kern->f32_id_tile
             : q8_0_blk(c->kern, w) ? c->kern->q8_0_blk_tile
                                    : c->kern->gemm_tile[w->type];
    a.w = w;
    a.x = x;
    a.x_per_slot = x_per_slot;
    a.k = k;
    a.n_slots = n_slots;
    a.slot_of = slot_of;
    a.expert_start = start;
    a.used = used;
    a.unit_base = base;
    a.n_used = n_used;
    a.xg = work + off_xg;
    a.xg_rb = xg_rb;
    a.tmp = (float *)(work + off_tmp);
    a.tmp_stride = tmp_stride;
    a.y = y;
    claim_init(&a.gather.c, n_slots, nth, 1);
    atomic_init(&a.next, 0);
    threadpool_run_dynamic(c->pool, matmul_id_task, &a);
}

struct moe_combine_args {
    const float *y, *weights;
    int n, k, dim;
    float *out;
    struct claim c; /* tokens */
};

static void moe_combine_task(void *p, int ith, int nth) {
    struct moe_combine_args *a = p;
    int64_t lo, hi;
    while (claim_next(&a->c, &lo, &hi)) {
        for (int64_t t = lo; t < hi; t++) {
            float *o = a->out + t * a->dim;
            for (int i = 0; i < a->dim; i++) o[i] = 0;
            for (int j = 0; j < a->k; j++) {
                const float *yr = a->y + (t * a->k + j) * a->dim;
                float wj = a->weights[t * a->k + j];
                for (int i = 0; i < a->dim; i++) o[i] += wj * yr[i];
            }
        }
    }
}

static void cpu_moe_combine(struct backend *be, const float *y, const float *weights, int n, int k,
                            int dim, float *out) {
    struct moe_combine_args a = {y, weights, n, k, dim, out, {0}};
    claim_init(&a.c, n, ctx_of(be)->n_threads, 1);
    if ((int64_t)n * k * dim < INLINE_ELEMS)
        moe_combine_task(&a, 0, 1);
    else
        threadpool_run_dynamic(ctx_of(be)->pool, moe_combine_task, &a);
}

/* ============================================================================================
 * KV cache and attention
 * The cache holds K and V rows per position in the session's cache dtype. Attention walks the
 * positions once per (token, head) with an online softmax (running max and sum), so memory is
 * O(head_dim) per task and never O(n_ctx^2). Work units are (KV head, token, head of the
 * group) rows, claimed in that order so that the rows running at the same time read the same
 * K/V rows, longest (latest token) first so the tail of the job is short rows.
 * ============================================================================================ */

struct kv_store_args {
    const struct cpu_kernels *kern;
    void *k_cache, *v_cache;
    enum dtype kv_type;
    int kv_dim, src_stride, pos0, n;
    const float *k, *v;
    struct claim c; /* 2 * n rows: K and V of each token */
};

static void kv_store_task(void *p, int ith, int nth) {
    struct kv_store_args *a = p;
    size_t row_bytes = dtype_row_bytes(a->kv_type, a->kv_dim);
    int64_t lo, hi;
    while (claim_next(&a->c, &lo, &hi)) {
        for (int64_t i = lo; i < hi; i++) {
            int t = (int)(i >> 1), is_v = (int)(i & 1);
            const float *src = (is_v ? a->v : a->k) + (int64_t)t * a->src_stride;
            void *dst =
                (char *)(is_v ? a->v_cache : a->k_cache) + (size_t)(a->pos0 + t) * row_bytes;
            if (a->kv_type == DTYPE_F32)
                memcpy(dst, src, (size_t)a->kv_dim * sizeof(float));
            else
                a->kern->from_float[a->kv_type](src, dst, a->kv_dim);
        }
    }
}

static void cpu_kv_store(struct backend *be, void *k_cache, void *v_cache, enum dtype kv_type,
                         int kv_dim, const float *k, const float *v, int src_stride, int pos0,
                         int n) {
    struct cpu_ctx *c = ctx_of(be);
    CHECK(kv_type == DTYPE_F32 || c->kern->from_float[kv_type]);
    struct kv_store_args a = {c->kern, k_cache, v_cache, kv_type, kv_dim, src_stride,
                              pos0,    n,       k,       v,       {0}};
    claim_init(&a.c, 2 * (int64_t)n, c->n_threads, 2);
    if ((int64_t)n * kv_dim < INLINE_ELEMS)
        kv_store_task(&a, 0, 1);
    else
        threadpool_run_dynamic(c->pool, kv_store_task, &a);
}

/* ---- F16 cache ----
 * The arithmetic of llama.cpp's CPU flash attention, so logits agree with it to float rounding:
 * the query is rounded to f16 (to dot with f16 keys), scores are f16 products summed in f32
 * (attn_dot_f16's order), and the running value sum is kept in f16, rounded after every update
 * (attn_scale_f16 when the max moves, attn_mad_f16 per position); the exps are attn_exp's.
 *
 * That last step is a chain: each position's update of a row reads the previous one, so one
 * row alone runs at the latency of convert, fma, convert per position. A group of up to
 * ATTN_GROUP rows that read the same K/V head (the heads of a GQA group, then neighbouring
 * tokens) therefore advances together through the kernel table's attn_rows_f16, which
 * interleaves the rows' chains (in registers for short heads). Rows come longest first, so the
 * positions split into segments that a prefix of the rows sees: [0, shortest n_kv) with every
 * row, then one more segment per shorter row left. Each row still sees exactly the operations,
 * values and order of a row computed alone, which keeps a row's result independent of its
 * batch. */

#define ATTN_GROUP CPU_ATTN_ROWS /* rows advanced together */

struct attn_row {
    const float *q; /* [head_dim] */
    float *o;       /* [head_dim] */
    int n_kv;       /* positions this row attends to */
    int g;          /* its KV head */
    uint16_t *qh;   /* [head_dim] f16 query */
    uint16_t *acc;  /* [head_dim] f16 running value sum */
};

static void attention_f16_rows(const struct attn_args *a, const struct cpu_kernels *kern,
                               size_t row_bytes, struct attn_row *rows, int nr) {
    int hd = a->head_dim;
    const char *kbase = (const char *)a->k, *vbase = (const char *)a->v;
    struct cpu_attn_rows_f16 job;
    memset(&job, 0, sizeof(job));
    job.kv_stride = row_bytes;
    job.n = hd;
    job.scale = a->scale;
    for (int r = 0; r < nr; r++) {
        CHECK(r == 0 || rows[r].n_kv <= rows[r - 1].n_kv);
        kern->from_float[DTYPE_F16](rows[r].q, rows[r].qh, hd);
        memset(rows[r].acc, 0, (size_t)hd * sizeof(uint16_t));
        job.q[r] = rows[r].qh;
        job.acc[r] = rows[r].acc;
        job.m[r] = -INFINITY;
        job.l[r] = 0;
    }
    for (int na = nr, p = 0; na > 0; na--) { /* rows [0, na) see positions [p, n_kv of row na-1) */
        int end = rows[na - 1].n_kv;
        if (end <= p) continue;
        for (int r = 0; r < na; r++) {
            job.k[r] = (const uint16_t *)(kbase + (size_t)p * row_bytes) + (size_t)rows[r].g * hd;
            job.v[r] = (const uint16_t *)(vbase + (size_t)p * row_bytes) + (size_t)rows[r].g * hd;
        }
        job.n_pos = end - p;
        job.n_rows = na;
        kern->attn_rows_f16(&job);
        p = end;
    }
    for (int r = 0; r < nr; r++) {
        float inv = job.l[r] > 0 ? 1.0f / job.l[r] : 0.0f;
        kern->to_float[DTYPE_F16](rows[r].acc, rows[r].o, hd);
        for (int i = 0; i < hd; i++) rows[r].o[i] *= inv;
    }
}

/* ---- F32 / block-quantized cache: plain online softmax in f32, one row at a time ---- */

static void kv_row_to_float(enum dtype type, const void *row, int64_t off, int n, float *out,
                            const struct cpu_kernels *kern) {
    if (type == DTYPE_F32) /* block types: off and n are multiples of the block size */
        memcpy(out, (const float *)row + off, (size_t)n * sizeof(float));
    else
        kern->to_float[type]((const char *)row + dtype_row_bytes(type, off), out, n);
}

static void attention_f32_row(const struct attn_args *a, const float *q, int g, int n_kv,
                              size_t row_bytes, const struct cpu_kernels *kern, float *kbuf,
                              float *vbuf, float *acc, float *o) {
    int hd = a->head_dim;
    float m = -INFINITY, l = 0;
    for (int i = 0; i < hd; i++) acc[i] = 0;
    for (int j = 0; j < n_kv; j++) {
        kv_row_to_float(a->kv_type, (const char *)a->k + (size_t)j * row_bytes, (int64_t)g * hd, hd,
                        kbuf, kern);
        float s = 0;
        for (int i = 0; i < hd; i++) s += q[i] * kbuf[i];
        s *= a->scale;
        kv_row_to_float(a->kv_type, (const char *)a->v + (size_t)j * row_bytes, (int64_t)g * hd, hd,
                        vbuf, kern);
        float ms = 1.0f, vs = 1.0f;
        if (s > m) {
            ms = expf(m - s);
            m = s;
            for (int i = 0; i < hd; i++) acc[i] *= ms;
        } else {
            vs = expf(s - m);
        }
        for (int i = 0; i < hd; i++) acc[i] = fmaf(vbuf[i], vs, acc[i]);
        l = l * ms + vs;
    }
    float inv = l > 0 ? 1.0f / l : 0.0f;
    for (int i = 0; i < hd; i++) o[i] = acc[i] * inv;
}

/* ---- tiled (batches of >= ATTN_TILED_MIN query rows, F16 or F32 cache) ----
 * llama.cpp switches to ggml_compute_forward_flash_attn_ext_tiled when a batch has 64 or more
 * query rows (and head_dim is a multiple of 16): the query stays F32, keys and values are widened
 * to F32 a tile of 64 positions at a time, and the running value sum is F32. hearth does the same
 * with the same arithmetic (cpu_kernels.h: f32_gemm_seq, attn_tile_softmax), so long prompts
 * agree with llama.cpp to float rounding (tests/data/long), and the work is two F32 matrix
 * products per tile instead of a convert-fma-convert chain per position. A unit is one query
 * head and 64 consecutive tokens; its keys and values are widened once per tile. The scores are
 * kept transposed (position-major) so the softmax runs across the 64 query rows at once. */

#define ATTN_TILED_MIN 64 /* llama.cpp's GGML_FA_TILE_Q */
#define AT             CPU_ATTN_TILE

static size_t attn_tiled_scratch(int hd) {
    return align64((size_t)(4 * AT * hd + AT * AT + 2 * AT) * sizeof(float) + AT * sizeof(int));
}

struct attn_tiled_args {
    const struct attn_args *a;
    const struct cpu_kernels *kern;
    char *work;   /* per thread: attn_tiled_scratch(head_dim) bytes */
    int n_qtiles; /* tiles of AT tokens */
    struct claim c;
};

static void kv_tile_to_f32(const struct attn_args *a, const struct cpu_kernels *kern,
                           const void *base, size_t row_bytes, int g, int kv0, int n, float *out) {
    int hd = a->head_dim;
    for (int j = 0; j < n; j++)
        kv_row_to_float(a->kv_type, (const char *)base + (size_t)(kv0 + j) * row_bytes,
                        (int64_t)g * hd, hd, out + (size_t)j * hd, kern);
}

/* Units: (query tile descending, head): the tiles with the most positions come first. */
static void attention_tiled_task(void *p, int ith, int nth) {
    struct attn_tiled_args *ta = p;
    const struct attn_args *a = ta->a;
    const struct cpu_kernels *kern = ta->kern;
    int hd = a->head_dim, group = a->n_head / a->n_head_kv;
    size_t row_bytes = dtype_row_bytes(a->kv_type, (int64_t)a->n_head_kv * hd);
    float *qt = (float *)(ta->work + (size_t)ith * attn_tiled_scratch(hd));
    float *acc = qt + (size_t)AT * hd, *k32 = acc + (size_t)AT * hd, *v32 = k32 + (size_t)AT * hd;
    float *kq = v32 + (size_t)AT * hd, *m = kq + AT * AT, *l = m + AT;
    int *qpos = (int *)(l + AT);
    int64_t lo, hi;
    while (claim_next(&ta->c, &lo, &hi)) {
        for (int64_t u = lo; u < hi; u++) {
            int tile = ta->n_qtiles - 1 - (int)(u / a->n_head), h = (int)(u % a->n_head);
            int g = h / group, it0 = tile * AT,
                nq = a->n_tokens - it0 < AT ? a->n_tokens - it0 : AT;
            const float *q0 = a->q + (int64_t)it0 * a->q_stride + (int64_t)h * hd;
            for (int d = 0; d < hd; d++) { /* transposed, rows past nq zero */
                float *qd = qt + (size_t)d * AT;
                for (int r = 0; r < nq; r++) qd[r] = q0[(int64_t)r * a->q_stride + d];
                for (int r = nq; r < AT; r++) qd[r] = 0.0f;
            }
            for (int r = 0; r < AT; r++) {
                qpos[r] = r < nq ? a->pos0 + it0 + r : -1;
                m[r] = -INFINITY;
                l[r] = 0.0f;
            }
            memset(acc, 0, (size_t)AT * hd * sizeof(float));
            int n_kv = a->pos0 + it0 + nq; /* positions the last row sees */
            for (int kv0 = 0; kv0 < n_kv; kv0 += AT) {
                int n = n_kv - kv0 < AT ? n_kv - kv0 : AT;
                kv_tile_to_f32(a, kern, a->k, row_bytes, g, kv0, n, k32);
                kv_tile_to_f32(a, kern, a->v, row_bytes, g, kv0, n, v32);
                if (n < AT) memset(v32 + (size_t)n * hd, 0, (size_t)(AT - n) * hd * sizeof(float));
                memset(kq, 0, (size_t)n * AT * sizeof(float));
                kern->f32_gemm_seq(kq, AT, k32, (size_t)hd, 1, qt, AT, n, hd, AT);
                struct cpu_attn_tile st = {kq, n, kv0, qpos, a->scale, m, l, acc, hd};
                kern->attn_tile_softmax(&st);
                kern->f32_gemm_seq(acc, (size_t)hd, kq, 1, AT, v32, (size_t)hd, nq, AT, hd);
            }
            for (int r = 0; r < nq; r++) {
                float inv = l[r] == 0.0f ? 0.0f : 1.0f / l[r];
                float *o = a->out + (int64_t)(it0 + r) * a->n_head * hd + (int64_t)h * hd;
                const float *ar = acc + (size_t)r * hd;
                for (int d = 0; d < hd; d++) o[d] = ar[d] * inv;
            }
        }
    }
}

static int attention_tiled_applies(const struct attn_args *a) {
    return a->n_tokens >= ATTN_TILED_MIN && a->head_dim % 16 == 0 &&
           (a->kv_type == DTYPE_F16 || a->kv_type == DTYPE_F32);
}

static void attention_tiled(struct cpu_ctx *c, const struct attn_args *a) {
    struct attn_tiled_args ta;
    ta.a = a;
    ta.kern = c->kern;
    ta.work = work_get(c, (size_t)c->n_threads * attn_tiled_scratch(a->head_dim));
    ta.n_qtiles = (a->n_tokens + AT - 1) / AT;
    claim_init(&ta.c, (int64_t)ta.n_qtiles * a->n_head, c->n_threads, 1);
    ta.c.chunk = 1;
    threadpool_run_dynamic(c->pool, attention_tiled_task, &ta);
}

/* ---- the op ---- */

/* Per-thread scratch: ATTN_GROUP rows of state with two f16 vectors each, 3 f32 vectors. */
static size_t attn_thread_scratch(int hd) {
    size_t f16 = align64((size_t)hd * sizeof(uint16_t));
    return align64(ATTN_GROUP * sizeof(struct attn_row)) + ATTN_GROUP * 2 * f16 +
           align64((size_t)hd * 3 * sizeof(float));
}

struct attn_task_args {
    const struct attn_args *a;
    const struct cpu_kernels *kern;
    char *work;           /* per thread: attn_thread_scratch(head_dim) bytes */
    int64_t units_per_kv; /* units of one KV head (unit_rows 0) */
    int unit_rows;        /* > 0: units are this many consecutive rows of all the heads */
    struct claim c;       /* units */
};

/* Rows of KV head g in the order (token descending, head of the group): row i of the head is
 * token n_tokens - 1 - i / group, head g * group + i % group. Units are ATTN_GROUP consecutive
 * rows of one KV head (which share the transposed keys of the short-head kernels); the latest
 * tokens (the longest rows) come first. When a KV head has fewer rows than that (decoding), the
 * rows of all heads in the order (token descending, head) instead, row i is token
 * n_tokens - 1 - i / n_head, head i % n_head, cut into units of unit_rows: other KV heads' rows
 * keep the chains overlapping. */
static void attention_task(void *p, int ith, int nth) {
    struct attn_task_args *ta = p;
    const struct attn_args *a = ta->a;
    int hd = a->head_dim, kv_dim = a->n_head_kv * hd, group = a->n_head / a->n_head_kv;
    int64_t rows_per_kv = (int64_t)a->n_tokens * group;
    size_t row_bytes = dtype_row_bytes(a->kv_type, kv_dim), f16 = align64((size_t)hd * 2);
    char *w = ta->work + (size_t)ith * attn_thread_scratch(hd);
    struct attn_row *rows = (struct attn_row *)w;
    char *vec = w + align64(ATTN_GROUP * sizeof(struct attn_row));
    float *b0 = (float *)(vec + ATTN_GROUP * 2 * f16), *b1 = b0 + hd, *acc = b1 + hd;
    for (int r = 0; r < ATTN_GROUP; r++) {
        rows[r].qh = (uint16_t *)(vec + (size_t)(2 * r) * f16);
        rows[r].acc = (uint16_t *)(vec + (size_t)(2 * r + 1) * f16);
    }
    int64_t lo, hi;
    while (claim_next(&ta->c, &lo, &hi)) {
        for (int64_t u = lo; u < hi; u++) {
            int nr, g0, per_tok; /* rows, first KV head, rows per token in the order */
            int64_t i0;
            if (ta->unit_rows > 0) {
                g0 = 0;
                per_tok = a->n_head;
                i0 = u * ta->unit_rows;
                nr = (int)min64(ta->unit_rows, (int64_t)a->n_tokens * a->n_head - i0);
            } else {
                g0 = (int)(u / ta->units_per_kv);
                per_tok = group;
                i0 = (u % ta->units_per_kv) * ATTN_GROUP;
                nr = (int)min64(ATTN_GROUP, rows_per_kv - i0);
            }
            for (int r = 0; r < nr; r++) {
                int64_t i = i0 + r;
                int it = a->n_tokens - 1 - (int)(i / per_tok);
                int h = g0 * group + (int)(i % per_tok), g = h / group;
                rows[r].q = a->q + (int64_t)it * a->q_stride + (int64_t)h * hd;
                rows[r].o = a->out + (int64_t)it * a->n_head * hd + (int64_t)h * hd;
                rows[r].n_kv = a->pos0 + it + 1;
                rows[r].g = g;
            }
            if (a->kv_type == DTYPE_F16) {
                attention_f16_rows(a, ta->kern, row_bytes, rows, nr);
            } else {
                for (int r = 0; r < nr; r++)
                    attention_f32_row(a, rows[r].q, rows[r].g, rows[r].n_kv, row_bytes, ta->kern,
                                      b0, b1, acc, rows[r].o);
            }
        }
    }
}

static void cpu_attention(struct backend *be, const struct attn_args *a) {
    struct cpu_ctx *c = ctx_of(be);
    CHECK(a->n_head % a->n_head_kv == 0 && a->head_dim > 0);
    CHECK(a->kv_type != DTYPE_F16 || c->kern->attn_rows_f16);
    if (attention_tiled_applies(a)) {
        attention_tiled(c, a);
        return;
    }
    struct attn_task_args ta;
    ta.a = a;
    ta.kern = c->kern;
    ta.work = work_get(c, (size_t)c->n_threads * attn_thread_scratch(a->head_dim));
    int64_t rows_per_kv = (int64_t)a->n_tokens * (a->n_head / a->n_head_kv);
    ta.units_per_kv = (rows_per_kv + ATTN_GROUP - 1) / ATTN_GROUP;
    ta.unit_rows = 0;
    int64_t n_units = ta.units_per_kv * a->n_head_kv;
    if (a->n_tokens == 1 && rows_per_kv < ATTN_GROUP) { /* decoding: a unit per thread */
        int64_t total = (int64_t)a->n_tokens * a->n_head;
        ta.unit_rows = (int)min64(ATTN_GROUP, (total + c->n_threads - 1) / c->n_threads);
        n_units = (total + ta.unit_rows - 1) / ta.unit_rows;
    }
    claim_init(&ta.c, n_units, c->n_threads, 1);
    ta.c.chunk = 1; /* units are big and uneven (causal): one per claim */
    threadpool_run_dynamic(c->pool, attention_task, &ta);
}

/* ============================================================================================
 * Construction
 * ============================================================================================ */

static void cpu_free(struct backend *be) {
    struct cpu_ctx *c = ctx_of(be);
    threadpool_free(c->pool);
    mem_free(c->pf);
    mem_free(c->work);
    mem_free(c);
    mem_free(be);
}

int backend_cpu_create(struct backend **out, int n_threads, struct error *err) {
    *out = NULL;
    if (n_threads <= 0) n_threads = threads_n_cpus();
    if (n_threads > 512) return error_set(err, ERR_INVALID, "too many threads: %d", n_threads);
    struct backend *be = mem_calloc(1, sizeof(*be));
    struct cpu_ctx *c = mem_calloc(1, sizeof(*c));
    if (!be || !c) goto nomem;
    c->pf = mem_alloc_aligned(64, sizeof(*c->pf));
    if (!c->pf) goto nomem;
    memset(c->pf, 0, sizeof(*c->pf));
    if (threadpool_create(&c->pool, n_threads) != 0) goto nomem;
    threadpool_set_idle(c->pool, pf_idle, c->pf);
    c->n_threads = n_threads;
    c->kern = cpu_kernels_get();
    be->name = "cpu";
    be->ctx = c;
    be->buffer_alloc = cpu_buffer_alloc;
    be->buffer_free = cpu_buffer_free;
    be->upload = cpu_copy;
    be->download = cpu_copy;
    be->copy = cpu_copy;
    be->get_rows = cpu_get_rows;
    be->matmul = cpu_matmul;
    be->matmul_multi = cpu_matmul_multi;
    be->rms_norm = cpu_rms_norm;
    be->add = cpu_add;
    be->swiglu = cpu_swiglu;
    be->rope = cpu_rope;
    be->kv_store = cpu_kv_store;
    be->attention = cpu_attention;
    be->moe_route = cpu_moe_route;
    be->matmul_id = cpu_matmul_id;
    be->moe_combine = cpu_moe_combine;
    be->free = cpu_free;
    cpu_ops_recurrent_install(be);
    LOG_INFO("cpu backend: %d threads, kernels %s", n_threads, c->kern->name);
    *out = be;
    return 0;
nomem:
    if (c) mem_free(c->pf);
    mem_free(c);
    mem_free(be);
    return error_set(err, ERR_NOMEM, "out of memory creating the CPU backend");
}

void backend_free(struct backend *be) {
    if (be) be->free(be);
}
