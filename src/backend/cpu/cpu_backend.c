/* cpu_backend.c: the CPU implementation of struct backend (see backend.h).
 *
 * Every op packs its arguments into a small struct and runs a task function on the thread pool;
 * each thread takes a contiguous slice of the op's independent work (output rows, heads, tokens).
 * Matrix products follow llama.cpp's CPU scheme: the f32 activations are first converted to the
 * weight type's vec_dot_type (Q8_0, Q8_K, F16, ...) once per op, then every weight row is read
 * once and dotted with all activation rows of the batch. The per-dtype kernels come from the
 * kernel table (cpu_kernels.h), chosen once at start-up.
 */
#include "../backend.h"

#include "../../base/log.h"
#include "../../base/mem.h"
#include "../../base/threads.h"
#include "cpu_internal.h"
#include "cpu_kernels.h"

#include <float.h>
#include <math.h>
#include <string.h>

struct cpu_ctx {
    struct threadpool *pool;
    const struct cpu_kernels *kern;
    void *work;       /* scratch for quantized activations and per-thread buffers */
    size_t work_size; /* bytes */
};

static struct cpu_ctx *ctx_of(struct backend *be) {
    return (struct cpu_ctx *)be->ctx;
}

/* Scratch of at least n_bytes, kept between ops (grows, never shrinks). CHECKs on failure:
 * sizes are bounded by the batch and context fixed at session creation, and the engine reserves
 * the worst case up front (cpu_reserve), so a failure here is a bug. */
static void *work_get(struct cpu_ctx *c, size_t n_bytes) {
    if (n_bytes > c->work_size) {
        mem_free(c->work);
        c->work = mem_alloc_aligned(64, n_bytes);
        CHECK(c->work != NULL);
        c->work_size = n_bytes;
    }
    return c->work;
}

static void split_range(int64_t n, int ith, int nth, int64_t *lo, int64_t *hi) {
    int64_t per = (n + nth - 1) / nth;
    *lo = per * ith < n ? per * ith : n;
    *hi = *lo + per < n ? *lo + per : n;
}

void cpu_split_range(int64_t n, int ith, int nth, int64_t *lo, int64_t *hi) {
    split_range(n, ith, nth, lo, hi);
}

struct threadpool *cpu_backend_pool(struct backend *be) {
    return ctx_of(be)->pool;
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
 * Cheap ops; split over rows or elements so that large batches still use every thread.
 * ============================================================================================ */

struct get_rows_args {
    const struct cpu_kernels *kern;
    const struct tensor *w;
    const int32_t *ids;
    int n;
    float *out;
};

static void get_rows_task(void *p, int ith, int nth) {
    struct get_rows_args *a = p;
    int64_t lo, hi;
    split_range(a->n, ith, nth, &lo, &hi);
    int64_t dim = a->w->ne[0];
    for (int64_t i = lo; i < hi; i++)
        a->kern->to_float[a->w->type](tensor_row(a->w, a->ids[i], 0), a->out + i * dim, dim);
}

static void cpu_get_rows(struct backend *be, const struct tensor *w, const int32_t *ids, int n,
                         float *out) {
    struct get_rows_args a = {ctx_of(be)->kern, w, ids, n, out};
    for (int i = 0; i < n; i++) CHECK(ids[i] >= 0 && ids[i] < w->ne[1]);
    threadpool_run(ctx_of(be)->pool, get_rows_task, &a);
}

struct rms_norm_args {
    const float *x;
    int x_stride;
    const float *w;
    float *out;
    int out_stride, n_rows, dim;
    float eps;
};

static void rms_norm_task(void *p, int ith, int nth) {
    struct rms_norm_args *a = p;
    int64_t lo, hi;
    split_range(a->n_rows, ith, nth, &lo, &hi);
    for (int64_t r = lo; r < hi; r++) {
        const float *x = a->x + r * a->x_stride;
        float *y = a->out + r * a->out_stride;
        double sum = 0; /* ggml accumulates the sum of squares in double */
        for (int i = 0; i < a->dim; i++) sum += (double)(x[i] * x[i]);
        float scale = 1.0f / sqrtf((float)(sum / a->dim) + a->eps);
        if (a->w)
            for (int i = 0; i < a->dim; i++) y[i] = x[i] * scale * a->w[i];
        else
            for (int i = 0; i < a->dim; i++) y[i] = x[i] * scale;
    }
}

static void cpu_rms_norm(struct backend *be, const float *x, int x_stride, const struct tensor *w,
                         float *out, int out_stride, int n_rows, int dim, float eps) {
    CHECK(!w || (w->type == DTYPE_F32 && w->ne[0] == dim));
    struct rms_norm_args a = {
        x, x_stride, w ? (const float *)w->data : NULL, out, out_stride, n_rows, dim, eps};
    if ((int64_t)n_rows * dim < 4096)
        rms_norm_task(&a, 0, 1);
    else
        threadpool_run(ctx_of(be)->pool, rms_norm_task, &a);
}

struct binary_args {
    const float *a, *b;
    float *out;
    int64_t n;
    int op; /* 0 add, 1 swiglu */
};

static void binary_task(void *p, int ith, int nth) {
    struct binary_args *a = p;
    int64_t lo, hi;
    split_range(a->n, ith, nth, &lo, &hi);
    if (a->op == 0) {
        for (int64_t i = lo; i < hi; i++) a->out[i] = a->a[i] + a->b[i];
    } else {
        for (int64_t i = lo; i < hi; i++) {
            float g = a->a[i];
            a->out[i] = g / (1.0f + expf(-g)) * a->b[i];
        }
    }
}

static void run_binary(struct backend *be, const float *x, const float *y, float *out, int64_t n,
                       int op) {
    struct binary_args a = {x, y, out, n, op};
    if (n < 8192)
        binary_task(&a, 0, 1);
    else
        threadpool_run(ctx_of(be)->pool, binary_task, &a);
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
    float cs[1024], sn[1024]; /* n_rot/2 <= 512 checked by the caller */
    int64_t lo, hi;
    split_range(a->n, ith, nth, &lo, &hi);
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
            if (rp->mode == ROPE_MODE_NEOX) {
                int half = n_rot / 2;
                for (int i = 0; i < half; i++) {
                    float x0 = x[i], x1 = x[i + half];
                    x[i] = x0 * cs[i] - x1 * sn[i];
                    x[i + half] = x0 * sn[i] + x1 * cs[i];
                }
            } else {
                for (int i = 0; i < n_rot / 2; i++) {
                    float x0 = x[2 * i], x1 = x[2 * i + 1];
                    x[2 * i] = x0 * cs[i] - x1 * sn[i];
                    x[2 * i + 1] = x0 * sn[i] + x1 * cs[i];
                }
            }
        }
    }
}

static void cpu_rope(struct backend *be, float *x, int stride, const int32_t *pos, int n,
                     int n_head, int head_dim, const struct rope_params *rp) {
    CHECK(rp->n_rot > 0 && rp->n_rot <= head_dim && rp->n_rot % 2 == 0 && rp->n_rot <= 2048);
    struct rope_args a = {x, stride, pos, n, n_head, head_dim, rp};
    threadpool_run(ctx_of(be)->pool, rope_task, &a);
}

/* ============================================================================================
 * Matrix products
 * Phase 1 converts the activation rows to the weight's vec_dot_type (in parallel over rows);
 * phase 2 splits the output rows over threads, and each thread reads a weight row once and
 * dots it with every activation row.
 * ============================================================================================ */

struct quantize_args {
    cpu_from_float_fn from_float;
    const float *x;
    int64_t k;
    int n_rows;
    void *xq;
    size_t row_bytes;
};

static void quantize_task(void *p, int ith, int nth) {
    struct quantize_args *a = p;
    int64_t lo, hi;
    split_range(a->n_rows, ith, nth, &lo, &hi);
    for (int64_t r = lo; r < hi; r++)
        a->from_float(a->x + r * a->k, (char *)a->xq + r * a->row_bytes, a->k);
}

/* Converts n_rows rows of k floats to vt; returns the converted rows (x itself for F32). */
static const void *quantize_rows(struct backend *be, enum dtype vt, const float *x, int64_t k,
                                 int n_rows, size_t *row_bytes, size_t offset) {
    struct cpu_ctx *c = ctx_of(be);
    if (vt == DTYPE_F32) {
        *row_bytes = (size_t)k * sizeof(float);
        return x;
    }
    *row_bytes = dtype_row_bytes(vt, k);
    char *xq = (char *)work_get(c, offset + *row_bytes * (size_t)n_rows) + offset;
    struct quantize_args a = {c->kern->from_float[vt], x, k, n_rows, xq, *row_bytes};
    CHECK(a.from_float != NULL);
    if (n_rows == 1)
        quantize_task(&a, 0, 1);
    else
        threadpool_run(c->pool, quantize_task, &a);
    return xq;
}

struct matmul_args {
    cpu_vec_dot_fn dot;
    const struct tensor *w;
    const float *bias;
    const void *xq;
    size_t xq_row_bytes;
    float *y;
    int n;
};

static void matmul_task(void *p, int ith, int nth) {
    struct matmul_args *a = p;
    int64_t k = a->w->ne[0], n_out = a->w->ne[1];
    int64_t lo, hi;
    split_range(n_out, ith, nth, &lo, &hi);
    for (int64_t r = lo; r < hi; r++) {
        const void *wr = tensor_row(a->w, r, 0);
        float b = a->bias ? a->bias[r] : 0.0f;
        for (int t = 0; t < a->n; t++)
            a->y[(int64_t)t * n_out + r] =
                a->dot(wr, (const char *)a->xq + (size_t)t * a->xq_row_bytes, k) + b;
    }
}

static void cpu_matmul(struct backend *be, const struct tensor *w, const struct tensor *bias,
                       const float *x, float *y, int n) {
    struct cpu_ctx *c = ctx_of(be);
    const struct dtype_traits *tr = dtype_traits(w->type);
    CHECK(tr && c->kern->vec_dot[w->type]);
    CHECK(!bias || (bias->type == DTYPE_F32 && bias->ne[0] == w->ne[1]));
    size_t row_bytes;
    const void *xq = quantize_rows(be, tr->vec_dot_type, x, w->ne[0], n, &row_bytes, 0);
    struct matmul_args a = {
        c->kern->vec_dot[w->type], w, bias ? (const float *)bias->data : NULL, xq, row_bytes, y, n};
    threadpool_run(c->pool, matmul_task, &a);
}

/* ---- mixture of experts ---- */

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
    cpu_vec_dot_fn dot;
    const struct tensor *w;
    const void *xq;
    size_t xq_row_bytes;
    int x_per_slot, k;
    const int32_t *slot_of;      /* [n*k] slots grouped by expert */
    const int32_t *expert_start; /* [n_expert+1] offsets into slot_of */
    float *y;
};

static void matmul_id_task(void *p, int ith, int nth) {
    struct matmul_id_args *a = p;
    int64_t kdim = a->w->ne[0], n_out = a->w->ne[1], n_expert = a->w->ne[2];
    int64_t lo, hi;
    split_range(n_out, ith, nth, &lo, &hi);
    for (int64_t e = 0; e < n_expert; e++) {
        int s0 = a->expert_start[e], s1 = a->expert_start[e + 1];
        if (s0 == s1) continue;
        for (int64_t r = lo; r < hi; r++) {
            const void *wr = tensor_row(a->w, r, e);
            for (int s = s0; s < s1; s++) {
                int slot = a->slot_of[s]; /* = t*k + j */
                int xrow = a->x_per_slot ? slot : slot / a->k;
                a->y[(int64_t)slot * n_out + r] =
                    a->dot(wr, (const char *)a->xq + (size_t)xrow * a->xq_row_bytes, kdim);
            }
        }
    }
}

static void cpu_matmul_id(struct backend *be, const struct tensor *w, const float *x,
                          int x_per_slot, const int32_t *ids, int n, int k, float *y) {
    struct cpu_ctx *c = ctx_of(be);
    const struct dtype_traits *tr = dtype_traits(w->type);
    CHECK(tr && c->kern->vec_dot[w->type]);
    int64_t n_expert = w->ne[2];
    int n_slots = n * k, n_xrows = x_per_slot ? n_slots : n;
    /* Group slots by expert (counting sort) in the front of the scratch. */
    size_t index_bytes = ((size_t)n_slots + (size_t)n_expert + 1) * sizeof(int32_t);
    size_t offset = (index_bytes + 63) & ~(size_t)63;
    size_t row_bytes;
    if (tr->vec_dot_type != DTYPE_F32) /* reserve all at once so quantize_rows won't move it */
        work_get(c, offset + dtype_row_bytes(tr->vec_dot_type, w->ne[0]) * (size_t)n_xrows);
    else
        work_get(c, offset);
    const void *xq = quantize_rows(be, tr->vec_dot_type, x, w->ne[0], n_xrows, &row_bytes, offset);
    int32_t *slot_of = (int32_t *)c->work;
    int32_t *start = slot_of + n_slots;
    memset(start, 0, ((size_t)n_expert + 1) * sizeof(int32_t));
    for (int s = 0; s < n_slots; s++) {
        CHECK(ids[s] >= 0 && ids[s] < n_expert);
        start[ids[s] + 1]++;
    }
    for (int64_t e = 0; e < n_expert; e++) start[e + 1] += start[e];
    /* Fill using a running cursor per expert; cursor reuses the next expert's start (restored
     * afterwards by a shift). */
    for (int s = 0; s < n_slots; s++) slot_of[start[ids[s]]++] = s;
    for (int64_t e = n_expert; e > 0; e--) start[e] = start[e - 1];
    start[0] = 0;
    struct matmul_id_args a = {
        c->kern->vec_dot[w->type], w, xq, row_bytes, x_per_slot, k, slot_of, start, y};
    threadpool_run(c->pool, matmul_id_task, &a);
}

static void cpu_moe_combine(struct backend *be, const float *y, const float *weights, int n, int k,
                            int dim, float *out) {
    for (int t = 0; t < n; t++) {
        float *o = out + (int64_t)t * dim;
        for (int i = 0; i < dim; i++) o[i] = 0;
        for (int j = 0; j < k; j++) {
            const float *yr = y + ((int64_t)t * k + j) * dim;
            float wj = weights[t * k + j];
            for (int i = 0; i < dim; i++) o[i] += wj * yr[i];
        }
    }
}

/* ============================================================================================
 * KV cache and attention
 * The cache holds K and V rows per position in the session's cache dtype. Attention walks the
 * positions once per (token, head) with an online softmax (running max and sum), so memory is
 * O(head_dim) per task and never O(n_ctx^2).
 * ============================================================================================ */

static void kv_row_to_float(enum dtype type, const void *row, int64_t off, int n, float *out,
                            const struct cpu_kernels *kern) {
    switch (type) {
    case DTYPE_F32:
        memcpy(out, (const float *)row + off, (size_t)n * sizeof(float));
        break;
    case DTYPE_F16: {
        const uint16_t *h = (const uint16_t *)row + off;
        for (int i = 0; i < n; i++) out[i] = fp16_to_fp32(h[i]);
        break;
    }
    default: { /* block type: off and n are multiples of the block size */
        kern->to_float[type]((const char *)row + dtype_row_bytes(type, off), out, n);
        break;
    }
    }
}

static void cpu_kv_store(struct backend *be, void *k_cache, void *v_cache, enum dtype kv_type,
                         int kv_dim, const float *k, const float *v, int src_stride, int pos0,
                         int n) {
    const struct cpu_kernels *kern = ctx_of(be)->kern;
    size_t row_bytes = dtype_row_bytes(kv_type, kv_dim);
    for (int t = 0; t < n; t++) {
        const float *src[2] = {k + (int64_t)t * src_stride, v + (int64_t)t * src_stride};
        void *dst[2] = {(char *)k_cache + (size_t)(pos0 + t) * row_bytes,
                        (char *)v_cache + (size_t)(pos0 + t) * row_bytes};
        for (int i = 0; i < 2; i++) {
            if (kv_type == DTYPE_F32)
                memcpy(dst[i], src[i], (size_t)kv_dim * sizeof(float));
            else if (kv_type == DTYPE_F16)
                for (int j = 0; j < kv_dim; j++) ((uint16_t *)dst[i])[j] = fp32_to_fp16(src[i][j]);
            else
                kern->from_float[kv_type](src[i], dst[i], kv_dim);
        }
    }
}

struct attn_task_args {
    const struct attn_args *a;
    const struct cpu_kernels *kern;
    float *work; /* per thread: 3*head_dim floats */
};

/* F16 cache: the arithmetic of llama.cpp's CPU flash attention, so logits agree with it to
 * float rounding: the query is rounded to f16 (to dot with f16 keys), scores are f16 products
 * summed in f32, and the running value sum is kept in f16 (rounded after every update). */
static void attention_f16_row(const struct attn_args *a, const float *q, int g, int n_kv,
                              size_t row_bytes, float *qh, float *acc, float *o) {
    int hd = a->head_dim;
    for (int i = 0; i < hd; i++) qh[i] = fp16_to_fp32(fp32_to_fp16(q[i]));
    float m = -INFINITY, l = 0;
    for (int i = 0; i < hd; i++) acc[i] = 0;
    for (int j = 0; j < n_kv; j++) {
        const uint16_t *kr =
            (const uint16_t *)((const char *)a->k + (size_t)j * row_bytes) + g * hd;
        const uint16_t *vr =
            (const uint16_t *)((const char *)a->v + (size_t)j * row_bytes) + g * hd;
        float s = 0;
        for (int i = 0; i < hd; i++) s += qh[i] * fp16_to_fp32(kr[i]);
        s *= a->scale;
        float ms = 1.0f, vs = 1.0f;
        if (s > m) {
            ms = expf(m - s); /* 0 on the first position */
            m = s;
            for (int i = 0; i < hd; i++) acc[i] = fp16_to_fp32(fp32_to_fp16(acc[i] * ms));
        } else {
            vs = expf(s - m);
        }
        for (int i = 0; i < hd; i++)
            acc[i] = fp16_to_fp32(fp32_to_fp16(fmaf(fp16_to_fp32(vr[i]), vs, acc[i])));
        l = l * ms + vs;
    }
    float inv = l > 0 ? 1.0f / l : 0.0f;
    for (int i = 0; i < hd; i++) o[i] = acc[i] * inv;
}

/* F32 / block-quantized cache: plain online softmax in f32. */
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

static void attention_task(void *p, int ith, int nth) {
    struct attn_task_args *ta = p;
    const struct attn_args *a = ta->a;
    int hd = a->head_dim, kv_dim = a->n_head_kv * hd, group = a->n_head / a->n_head_kv;
    size_t row_bytes = dtype_row_bytes(a->kv_type, kv_dim);
    float *b0 = ta->work + (size_t)ith * 3 * hd, *b1 = b0 + hd, *acc = b1 + hd;
    int64_t lo, hi;
    split_range((int64_t)a->n_tokens * a->n_head, ith, nth, &lo, &hi);
    for (int64_t task = lo; task < hi; task++) {
        int it = (int)(task / a->n_head), h = (int)(task % a->n_head), g = h / group;
        const float *q = a->q + (int64_t)it * a->q_stride + (int64_t)h * hd;
        float *o = a->out + (int64_t)it * a->n_head * hd + (int64_t)h * hd;
        int n_kv = a->pos0 + it + 1;
        if (a->kv_type == DTYPE_F16)
            attention_f16_row(a, q, g, n_kv, row_bytes, b0, acc, o);
        else
            attention_f32_row(a, q, g, n_kv, row_bytes, ta->kern, b0, b1, acc, o);
    }
}

static void cpu_attention(struct backend *be, const struct attn_args *a) {
    struct cpu_ctx *c = ctx_of(be);
    CHECK(a->n_head % a->n_head_kv == 0 && a->head_dim > 0);
    int nth = threadpool_n_threads(c->pool);
    float *work = work_get(c, (size_t)nth * 3 * (size_t)a->head_dim * sizeof(float));
    struct attn_task_args ta = {a, c->kern, work};
    threadpool_run(c->pool, attention_task, &ta);
}

/* ============================================================================================
 * Construction
 * ============================================================================================ */

static void cpu_free(struct backend *be) {
    struct cpu_ctx *c = ctx_of(be);
    threadpool_free(c->pool);
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
    if (threadpool_create(&c->pool, n_threads) != 0) goto nomem;
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
    mem_free(c);
    mem_free(be);
    return error_set(err, ERR_NOMEM, "out of memory creating the CPU backend");
}

void backend_free(struct backend *be) {
    if (be) be->free(be);
}
