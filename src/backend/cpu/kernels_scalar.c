/* kernels_scalar.c: the scalar kernel table, built from the reference functions in src/tensor.
 * It is both the portable fallback and the oracle the SIMD tables are tested against.
 * Activation rows use the activation quantizers (round half to even, as a vector unit does), not
 * the weight quantizers, so every ISA rounds activations identically. The gemm tiles are loops
 * over the reference dots (one wrapper per dtype, since a tile entry carries no dtype); the
 * attention references fix llama.cpp's summation order for the F16 KV cache. */
#include "cpu_kernels.h"

#include "../../tensor/quant.h"

#include <math.h>
#include <string.h>

/* ---- gemm tiles: loops over the reference dots ---- */

static void tile_loop(cpu_vec_dot_fn dot, const void *w, size_t w_stride, const void *x,
                      size_t x_stride, int64_t k, float *out, size_t out_stride, int n_w, int n_x) {
    for (int j = 0; j < n_x; j++)
        for (int i = 0; i < n_w; i++)
            out[(size_t)j * out_stride + (size_t)i] = dot(
                (const char *)w + (size_t)i * w_stride, (const char *)x + (size_t)j * x_stride, k);
}

static void f32_tile(const void *w, size_t ws, const void *x, size_t xs, int64_t k, float *out,
                     size_t os, int nw, int nx) {
    tile_loop(f32_dot_f32_ref, w, ws, x, xs, k, out, os, nw, nx);
}
static void f16_tile(const void *w, size_t ws, const void *x, size_t xs, int64_t k, float *out,
                     size_t os, int nw, int nx) {
    tile_loop(f16_dot_f16_ref, w, ws, x, xs, k, out, os, nw, nx);
}
static void bf16_tile(const void *w, size_t ws, const void *x, size_t xs, int64_t k, float *out,
                      size_t os, int nw, int nx) {
    tile_loop(bf16_dot_bf16_ref, w, ws, x, xs, k, out, os, nw, nx);
}
static void q4_0_tile(const void *w, size_t ws, const void *x, size_t xs, int64_t k, float *out,
                      size_t os, int nw, int nx) {
    tile_loop(q4_0_dot_q8_0_ref, w, ws, x, xs, k, out, os, nw, nx);
}
static void q4_1_tile(const void *w, size_t ws, const void *x, size_t xs, int64_t k, float *out,
                      size_t os, int nw, int nx) {
    tile_loop(q4_1_dot_q8_1_ref, w, ws, x, xs, k, out, os, nw, nx);
}
static void q5_0_tile(const void *w, size_t ws, const void *x, size_t xs, int64_t k, float *out,
                      size_t os, int nw, int nx) {
    tile_loop(q5_0_dot_q8_0_ref, w, ws, x, xs, k, out, os, nw, nx);
}
static void q5_1_tile(const void *w, size_t ws, const void *x, size_t xs, int64_t k, float *out,
                      size_t os, int nw, int nx) {
    tile_loop(q5_1_dot_q8_1_ref, w, ws, x, xs, k, out, os, nw, nx);
}
static void q8_0_tile(const void *w, size_t ws, const void *x, size_t xs, int64_t k, float *out,
                      size_t os, int nw, int nx) {
    tile_loop(q8_0_dot_q8_0_ref, w, ws, x, xs, k, out, os, nw, nx);
}
static void q2_k_tile(const void *w, size_t ws, const void *x, size_t xs, int64_t k, float *out,
                      size_t os, int nw, int nx) {
    tile_loop(q2_k_dot_q8_k_ref, w, ws, x, xs, k, out, os, nw, nx);
}
static void q3_k_tile(const void *w, size_t ws, const void *x, size_t xs, int64_t k, float *out,
                      size_t os, int nw, int nx) {
    tile_loop(q3_k_dot_q8_k_ref, w, ws, x, xs, k, out, os, nw, nx);
}
static void q4_k_tile(const void *w, size_t ws, const void *x, size_t xs, int64_t k, float *out,
                      size_t os, int nw, int nx) {
    tile_loop(q4_k_dot_q8_k_ref, w, ws, x, xs, k, out, os, nw, nx);
}
static void q5_k_tile(const void *w, size_t ws, const void *x, size_t xs, int64_t k, float *out,
                      size_t os, int nw, int nx) {
    tile_loop(q5_k_dot_q8_k_ref, w, ws, x, xs, k, out, os, nw, nx);
}
static void q6_k_tile(const void *w, size_t ws, const void *x, size_t xs, int64_t k, float *out,
                      size_t os, int nw, int nx) {
    tile_loop(q6_k_dot_q8_k_ref, w, ws, x, xs, k, out, os, nw, nx);
}
static void q8_k_tile(const void *w, size_t ws, const void *x, size_t xs, int64_t k, float *out,
                      size_t os, int nw, int nx) {
    tile_loop(q8_k_dot_q8_k_ref, w, ws, x, xs, k, out, os, nw, nx);
}
static void iq4_nl_tile(const void *w, size_t ws, const void *x, size_t xs, int64_t k, float *out,
                        size_t os, int nw, int nx) {
    tile_loop(iq4_nl_dot_q8_0_ref, w, ws, x, xs, k, out, os, nw, nx);
}
static void iq4_xs_tile(const void *w, size_t ws, const void *x, size_t xs, int64_t k, float *out,
                        size_t os, int nw, int nx) {
    tile_loop(iq4_xs_dot_q8_k_ref, w, ws, x, xs, k, out, os, nw, nx);
}
static void mxfp4_tile(const void *w, size_t ws, const void *x, size_t xs, int64_t k, float *out,
                       size_t os, int nw, int nx) {
    tile_loop(mxfp4_dot_q8_0_ref, w, ws, x, xs, k, out, os, nw, nx);
}

static const cpu_gemm_tile_fn g_tiles[DTYPE_COUNT] = {
    [DTYPE_F32] = f32_tile,       [DTYPE_F16] = f16_tile,     [DTYPE_BF16] = bf16_tile,
    [DTYPE_Q4_0] = q4_0_tile,     [DTYPE_Q4_1] = q4_1_tile,   [DTYPE_Q5_0] = q5_0_tile,
    [DTYPE_Q5_1] = q5_1_tile,     [DTYPE_Q8_0] = q8_0_tile,   [DTYPE_Q2_K] = q2_k_tile,
    [DTYPE_Q3_K] = q3_k_tile,     [DTYPE_Q4_K] = q4_k_tile,   [DTYPE_Q5_K] = q5_k_tile,
    [DTYPE_Q6_K] = q6_k_tile,     [DTYPE_Q8_K] = q8_k_tile,   [DTYPE_IQ4_NL] = iq4_nl_tile,
    [DTYPE_IQ4_XS] = iq4_xs_tile, [DTYPE_MXFP4] = mxfp4_tile,
};

/* ---- attention on an F16 cache ---- */

/* ggml_vec_dot_f16 as llama.cpp's AVX-512 build computes it (GGML_F16_STEP 64, GGML_F16_EPR 16,
 * GGML_F32x16_REDUCE, _mm512_reduce_add_ps), which its flash attention uses for q.k with an F16
 * cache. The products of two f16 values are exact in f32, so each FMA rounds once. */
float attn_dot_f16_ref(const uint16_t *q, const uint16_t *k, int64_t n) {
    float acc[4][16] = {{0}};
    int64_t n64 = n & ~(int64_t)63;
    for (int64_t i = 0; i < n64; i += 64)
        for (int a = 0; a < 4; a++)
            for (int l = 0; l < 16; l++)
                acc[a][l] = fmaf(fp16_to_fp32(q[i + 16 * a + l]), fp16_to_fp32(k[i + 16 * a + l]),
                                 acc[a][l]);
    float lane[16];
    for (int l = 0; l < 16; l++) lane[l] = (acc[0][l] + acc[2][l]) + (acc[1][l] + acc[3][l]);
    for (int l = 0; l < 8; l++) lane[l] += lane[l + 8];
    for (int l = 0; l < 4; l++) lane[l] += lane[l + 4];
    double sum = (double)((lane[0] + lane[2]) + (lane[1] + lane[3]));
    for (int64_t i = n64; i < n; i++) sum += (double)(fp16_to_fp32(q[i]) * fp16_to_fp32(k[i]));
    return (float)sum;
}

void attn_mad_f16_ref(uint16_t *acc, const uint16_t *v, float s, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        acc[i] = fp32_to_fp16(fmaf(fp16_to_fp32(v[i]), s, fp16_to_fp32(acc[i])));
}

void attn_scale_f16_ref(uint16_t *acc, float s, int64_t n) {
    for (int64_t i = 0; i < n; i++) acc[i] = fp32_to_fp16(fp16_to_fp32(acc[i]) * s);
}

void attn_dots_f16_ref(const uint16_t *q, const uint16_t *k, size_t k_stride, int64_t n, float *out,
                       int64_t n_k) {
    for (int64_t j = 0; j < n_k; j++)
        out[j] = attn_dot_f16_ref(q, (const uint16_t *)((const char *)k + (size_t)j * k_stride), n);
}

/* ---- F32 experts, swiglu, RoPE ---- */

float f32_id_dot_ref(const float *w, const float *x, int64_t n) {
    float acc[4][16] = {{0}};
    int64_t n64 = n & ~(int64_t)63;
    for (int64_t i = 0; i < n64; i += 64)
        for (int a = 0; a < 4; a++)
            for (int l = 0; l < 16; l++)
                acc[a][l] = fmaf(w[i + 16 * a + l], x[i + 16 * a + l], acc[a][l]);
    float lane[16];
    for (int l = 0; l < 16; l++) lane[l] = (acc[0][l] + acc[2][l]) + (acc[1][l] + acc[3][l]);
    for (int l = 0; l < 8; l++) lane[l] += lane[l + 8];
    for (int l = 0; l < 4; l++) lane[l] += lane[l + 4];
    float sum = (lane[0] + lane[2]) + (lane[1] + lane[3]);
    for (int64_t i = n64; i < n; i++) sum = fmaf(w[i], x[i], sum);
    return sum;
}

static void f32_id_tile_ref(const void *w, size_t ws, const void *x, size_t xs, int64_t k,
                            float *out, size_t os, int nw, int nx) {
    for (int j = 0; j < nx; j++)
        for (int i = 0; i < nw; i++)
            out[(size_t)j * os + (size_t)i] =
                f32_id_dot_ref((const float *)((const char *)w + (size_t)i * ws),
                               (const float *)((const char *)x + (size_t)j * xs), k);
}

float expf_ggml_ref(float x) {
    const float r = 0x1.8p23f;
    float z = fmaf(x, 0x1.715476p+0f, r);
    float n = z - r; /* round(x / ln 2) */
    float b = fmaf(-n, 0x1.7f7d1cp-20f, fmaf(-n, 0x1.62e4p-1f, x));
    float u = b * b;
    float j = fmaf(
        fmaf(fmaf(0x1.0e4020p-7f, b, 0x1.573e2ep-5f), u, fmaf(0x1.555e66p-3f, b, 0x1.fffdb6p-2f)),
        u, fmaf(0x1.ffffecp-1f, b, 1.0f));
    if (isnan(n)) return n;
    if (fabsf(n) > 192) return n <= 0 ? 0.0f : INFINITY;
    return ldexpf(j, (int)n); /* vscalefps: j * 2^n, rounded once */
}

void swiglu_ref(const float *gate, const float *up, float *out, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        float g = gate[i];
        out[i] = g / (1.0f + expf_ggml_ref(0.0f - g)) * up[i];
    }
}

void silu_ref(const float *x, float *out, int64_t n) {
    for (int64_t i = 0; i < n; i++) out[i] = x[i] / (1.0f + expf_ggml_ref(0.0f - x[i]));
}

void rope_pairs_ref(float *x, const float *cs, const float *sn, int n, int half) {
    int step = half ? 1 : 2, off = half ? half : 1;
    for (int i = 0; i < n; i++) {
        float *p = x + (int64_t)i * step;
        float x0 = p[0], x1 = p[off];
        p[0] = fmaf(x0, cs[i], -(x1 * sn[i]));
        p[off] = fmaf(x0, sn[i], x1 * cs[i]);
    }
}

/* ---- the fused update (attn_rows_f16) ---- */

/* 2^(i/32) rounded to double (computed with exp2l), as bits, minus i << 47. */
const uint64_t attn_exp_tab[32] = {
    0x3ff0000000000000u, 0x3fefd9b0d3158574u, 0x3fefb5586cf9890fu, 0x3fef9301d0125b51u,
    0x3fef72b83c7d517bu, 0x3fef54873168b9aau, 0x3fef387a6e756238u, 0x3fef1e9df51fdee1u,
    0x3fef06fe0a31b715u, 0x3feef1a7373aa9cbu, 0x3feedea64c123422u, 0x3feece086061892du,
    0x3feebfdad5362a27u, 0x3feeb42b569d4f82u, 0x3feeab07dd485429u, 0x3feea47eb03a5585u,
    0x3feea09e667f3bcdu, 0x3fee9f75e8ec5f74u, 0x3feea11473eb0187u, 0x3feea589994cce13u,
    0x3feeace5422aa0dbu, 0x3feeb737b0cdc5e5u, 0x3feec49182a3f090u, 0x3feed503b23e255du,
    0x3feee89f995ad3adu, 0x3feeff76f2fb5e47u, 0x3fef199bdd85529cu, 0x3fef3720dcef9069u,
    0x3fef5818dcfba487u, 0x3fef7c97337b9b5fu, 0x3fefa4afa2a490dau, 0x3fefd0765b6e4540u,
};

float attn_exp_ref(float x) {
    if (isnan(x)) return x + x;
    if (x < ATTN_EXP_MIN) return 0.0f;
    double xd = (double)x;
    double kd = ATTN_EXP_INVLN2N * xd + ATTN_EXP_SHIFT; /* not fused: two roundings */
    uint64_t ki;
    memcpy(&ki, &kd, sizeof(ki));
    kd -= ATTN_EXP_SHIFT;
    double r = fma(ATTN_EXP_INVLN2N, xd, -kd);
    uint64_t t = attn_exp_tab[ki % 32] + (ki << 47);
    double s;
    memcpy(&s, &t, sizeof(s));
    double p = fma(fma(ATTN_EXP_C0, r, ATTN_EXP_C1), r * r, fma(ATTN_EXP_C2, r, 1.0));
    return (float)(p * s);
}

static void attn_exp_n_ref(float *x, int n) {
    for (int i = 0; i < n; i++) x[i] = attn_exp_ref(x[i]);
}

#define ROWS_BLOCK 64 /* positions per block: all rows' scores, then the updates */

void attn_rows_f16_with(struct cpu_attn_rows_f16 *a, cpu_attn_dots_f16_fn dots,
                        cpu_attn_mad_f16_fn mad, cpu_attn_scale_f16_fn scale,
                        void (*exp_n)(float *x, int n)) {
    float e[CPU_ATTN_ROWS][ROWS_BLOCK];        /* exp arguments, then exps */
    uint8_t is_max[CPU_ATTN_ROWS][ROWS_BLOCK]; /* position raised the max (e = ms) or not (vs) */
    for (int j0 = 0; j0 < a->n_pos; j0 += ROWS_BLOCK) {
        int nb = a->n_pos - j0 < ROWS_BLOCK ? a->n_pos - j0 : ROWS_BLOCK;
        size_t off = (size_t)j0 * a->kv_stride;
        for (int r = 0; r < a->n_rows; r++) {
            dots(a->q[r], (const uint16_t *)((const char *)a->k[r] + off), a->kv_stride, a->n, e[r],
                 nb);
            float m = a->m[r];
            for (int b = 0; b < nb; b++) {
                float s = e[r][b] * a->scale;
                is_max[r][b] = s > m;
                if (is_max[r][b]) { /* ms = exp(m_old - s): 0 on the first position */
                    e[r][b] = m - s;
                    m = s;
                } else { /* vs = exp(s - m) */
                    e[r][b] = s - m;
                }
            }
            a->m[r] = m;
            exp_n(e[r], nb);
        }
        for (int b = 0; b < nb; b++) {
            for (int r = 0; r < a->n_rows; r++) { /* rows in turn: their chains overlap */
                const uint16_t *vr =
                    (const uint16_t *)((const char *)a->v[r] + off + (size_t)b * a->kv_stride);
                float ms = 1.0f, vs = 1.0f;
                if (is_max[r][b]) {
                    ms = e[r][b];
                    scale(a->acc[r], ms, a->n);
                } else {
                    vs = e[r][b];
                }
                mad(a->acc[r], vr, vs, a->n);
                a->l[r] = a->l[r] * ms + vs;
            }
        }
    }
}

/* ---- gated delta rule (gdn_rows) ---- */

void gdn_rows_ref(float *S, int dk, int dv, const float *kn, const float *qn, const float *v,
                  float beta, float decay, float scale, float *out) {
    int n64 = dk & ~63;
    for (int jv = 0; jv < dv; jv++) {
        float *s = S + (size_t)jv * dk;
        for (int i = 0; i < dk; i++) s[i] *= decay;
        float d = (v[jv] - f32_id_dot_ref(s, kn, dk)) * beta;
        for (int i = 0; i < n64; i++) s[i] = fmaf(kn[i], d, s[i]);
        for (int i = n64; i < dk; i++) s[i] += kn[i] * d;
        out[jv] = f32_id_dot_ref(s, qn, dk) * scale;
    }
}

void attn_rows_f16_ref(struct cpu_attn_rows_f16 *a) {
    attn_rows_f16_with(a, attn_dots_f16_ref, attn_mad_f16_ref, attn_scale_f16_ref, attn_exp_n_ref);
}

/* ---- tiled attention (f32_gemm_seq, attn_tile_softmax) ---- */

void f32_gemm_seq_ref(float *C, size_t ldc, const float *A, size_t a_si, size_t a_sk,
                      const float *B, size_t ldb, int M, int K, int N) {
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            float c = C[(size_t)i * ldc + (size_t)j];
            for (int k = 0; k < K; k++)
                c = fmaf(A[(size_t)i * a_si + (size_t)k * a_sk], B[(size_t)k * ldb + (size_t)j], c);
            C[(size_t)i * ldc + (size_t)j] = c;
        }
}

/* _mm512_reduce_add_ps of 16 values: halves added lane by lane, 8, 4, 2, 1. */
static float reduce16_ref(const float *p) {
    float t[8];
    for (int i = 0; i < 8; i++) t[i] = p[i] + p[i + 8];
    for (int i = 0; i < 4; i++) t[i] = t[i] + t[i + 4];
    for (int i = 0; i < 2; i++) t[i] = t[i] + t[i + 2];
    return t[0] + t[1];
}

void attn_tile_softmax_ref(struct cpu_attn_tile *t) {
    enum { T = CPU_ATTN_TILE };
    for (int r = 0; r < T; r++) {
        float s[T];
        float mx = -INFINITY;
        for (int j = 0; j < T; j++) {
            int vis = j < t->n_kv && t->kv0 + j <= t->qpos[r];
            s[j] = vis ? t->kq[j * T + r] * t->scale : -INFINITY;
            mx = s[j] > mx ? s[j] : mx;
        }
        if (mx == -INFINITY) { /* nothing visible: llama.cpp skips the row */
            for (int j = 0; j < T; j++) t->kq[j * T + r] = 0.0f;
            continue;
        }
        float mold = t->m[r], mnew = fmaxf(mold, mx);
        if (mnew > mold) {
            float ms = attn_exp_ref(mold - mnew);
            float *acc = t->acc + (size_t)r * t->dv;
            for (int i = 0; i < t->dv; i++) acc[i] *= ms;
            t->l[r] *= ms;
        }
        t->m[r] = mnew;
        double sum = 0;
        for (int b = 0; b < T; b += 16) {
            float p[16];
            for (int i = 0; i < 16; i++) p[i] = expf_ggml_ref(s[b + i] - mnew);
            sum += (double)reduce16_ref(p);
            for (int i = 0; i < 16; i++) t->kq[(b + i) * T + r] = p[i];
        }
        t->l[r] = (float)((double)t->l[r] + sum);
    }
}

/* ---- Q8_0 in llama.cpp's AMX order ---- */

float q8_0_dot_q8_0_blk_ref(const void *vw, const void *vx, int64_t n) {
    const struct block_q8_0 *w = vw, *x = vx;
    float acc = 0.0f;
    for (int64_t ib = 0; ib < n / QK8_0; ib++) {
        int32_t isum = 0;
        for (int j = 0; j < QK8_0; j++) isum += (int32_t)w[ib].qs[j] * (int32_t)x[ib].qs[j];
        acc = fmaf((float)isum, fp16_to_fp32(w[ib].d) * fp16_to_fp32(x[ib].d), acc);
    }
    return acc;
}

/* ---- the table ---- */

int cpu_kernels_fill_scalar(struct cpu_kernels *k) {
    memset(k, 0, sizeof(*k));
    k->name = "scalar";
    for (int t = 0; t < DTYPE_COUNT; t++) {
        const struct dtype_traits *tr = dtype_traits((uint32_t)t);
        if (!tr) continue;
        k->vec_dot[t] = tr->vec_dot;
        k->from_float[t] = tr->from_float;
        k->to_float[t] = tr->to_float;
        if (tr->vec_dot) {
            k->gemm_tile[t] = g_tiles[t];
            k->gemm_tile_w[t] = 4;
            k->gemm_tile_x[t] = 4;
        }
    }
    k->from_float[DTYPE_Q8_0] = q8_0_quantize_row_act;
    k->from_float[DTYPE_Q8_K] = q8_k_quantize_row_act;
    k->from_float[DTYPE_Q8_1] = q8_1_quantize_row_act;
    k->attn_dot_f16 = attn_dot_f16_ref;
    k->attn_mad_f16 = attn_mad_f16_ref;
    k->attn_scale_f16 = attn_scale_f16_ref;
    k->attn_dots_f16 = attn_dots_f16_ref;
    k->f32_id_tile = f32_id_tile_ref;
    k->swiglu = swiglu_ref;
    k->silu = silu_ref;
    k->rope_pairs = rope_pairs_ref;
    k->attn_rows_f16 = attn_rows_f16_ref;
    k->gdn_rows = gdn_rows_ref;
    k->f32_gemm_seq = f32_gemm_seq_ref;
    k->attn_tile_softmax = attn_tile_softmax_ref;
    return 0;
}
