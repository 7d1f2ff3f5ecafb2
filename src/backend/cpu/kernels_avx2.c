/* kernels_avx2.c: AVX2 + FMA + F16C kernels, compiled with those flags only for this file
 * (Makefile ISA_AVX2). Entries not filled here fall back to the scalar table.
 *
 * Every kernel computes what its scalar twin computes, bit for bit (tests/test_kernels.c), the
 * same designs as kernels_avx512.c on 256-bit vectors: a 16-lane f32 order is two 8-lane
 * accumulators; without VNNI the byte products go through vpmaddubsw (the sign of the weight
 * moved onto the activation where the weight is signed) and vpmaddwd. With 16 vector registers
 * the tiles are 4 weight rows x 2 tokens for the quantized types and 2 x 2 for the float types;
 * smaller tiles repeat their last row / token and drop those results. AVX-VNNI is not used yet.
 */
#include "cpu_kernels.h"

#include "../../base/error.h"
#include "../../tensor/quant.h"

#include <immintrin.h>
#include <math.h>
#include <string.h>

#define INLINE static inline __attribute__((always_inline))

enum { QW = 4, QX = 2, FW = 2, FX = 2 }; /* tile sizes: quantized, float */

/* ============================================================================================
 * Helpers (the horizontal sums follow the scalar trees: 4+4, then (0+2)+(1+3))
 * ============================================================================================ */

INLINE float hsum_ps8(__m256 v) {
    __m128 b = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    __m128 c = _mm_add_ps(b, _mm_movehl_ps(b, b));
    return _mm_cvtss_f32(_mm_add_ss(c, _mm_movehdup_ps(c)));
}

INLINE float f16_to_f32(uint16_t h) {
    return _cvtsh_ss(h);
}

INLINE __m256 load_f16x8(const void *p) {
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}

INLINE __m256 load_bf16x8(const void *p) {
    __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
}

INLINE const char *tile_row(const void *base, size_t stride, int r, int n) {
    return (const char *)base + (size_t)(r < n ? r : n - 1) * stride;
}

/* ============================================================================================
 * F32, F16, BF16: the 16-lane order of f32_dot_f32_ref as two 8-lane accumulators per pair
 * ============================================================================================ */

enum float_kind { KIND_F32, KIND_F16, KIND_BF16 };

INLINE __m256 load_kind(int kind, const char *p, int64_t i) {
    if (kind == KIND_F32) return _mm256_loadu_ps((const float *)p + i);
    if (kind == KIND_F16) return load_f16x8((const uint16_t *)p + i);
    return load_bf16x8((const uint16_t *)p + i);
}

INLINE float scalar_kind(int kind, const char *p, int64_t i) {
    if (kind == KIND_F32) return ((const float *)p)[i];
    if (kind == KIND_F16) return f16_to_f32(((const uint16_t *)p)[i]);
    return bf16_to_fp32(((const uint16_t *)p)[i]);
}

INLINE void float_tile(int kind, int nw_max, int nx_max, const void *w, size_t w_stride,
                       const void *x, size_t x_stride, int64_t k, float *out, size_t out_stride,
                       int n_w, int n_x) {
    const char *wr[FW], *xr[FX];
    __m256 lo[FW][FX], hi[FW][FX];
#pragma GCC unroll 16
    for (int i = 0; i < nw_max; i++) wr[i] = tile_row(w, w_stride, i, n_w);
#pragma GCC unroll 16
    for (int j = 0; j < nx_max; j++) xr[j] = tile_row(x, x_stride, j, n_x);
#pragma GCC unroll 16
    for (int i = 0; i < nw_max; i++)
#pragma GCC unroll 16
        for (int j = 0; j < nx_max; j++) lo[i][j] = hi[i][j] = _mm256_setzero_ps();
    int64_t n16 = k & ~(int64_t)15;
    for (int64_t t = 0; t < n16; t += 16) {
        __m256 xl[FX], xh[FX];
#pragma GCC unroll 16
        for (int j = 0; j < nx_max; j++) {
            xl[j] = load_kind(kind, xr[j], t);
            xh[j] = load_kind(kind, xr[j], t + 8);
        }
#pragma GCC unroll 16
        for (int i = 0; i < nw_max; i++) {
            __m256 wl = load_kind(kind, wr[i], t), wh = load_kind(kind, wr[i], t + 8);
#pragma GCC unroll 16
            for (int j = 0; j < nx_max; j++) {
                lo[i][j] = _mm256_fmadd_ps(wl, xl[j], lo[i][j]);
                hi[i][j] = _mm256_fmadd_ps(wh, xh[j], hi[i][j]);
            }
        }
    }
    for (int j = 0; j < n_x && j < nx_max; j++)
        for (int i = 0; i < n_w && i < nw_max; i++) {
            double sum = (double)hsum_ps8(_mm256_add_ps(lo[i][j], hi[i][j]));
            for (int64_t e = n16; e < k; e++)
                sum += (double)(scalar_kind(kind, wr[i], e) * scalar_kind(kind, xr[j], e));
            out[(size_t)j * out_stride + (size_t)i] = (float)sum;
        }
}

static float f32_dot_f32_avx2(const void *w, const void *x, int64_t n) {
    float out;
    float_tile(KIND_F32, 1, 1, w, 0, x, 0, n, &out, 0, 1, 1);
    return out;
}
static float f16_dot_f16_avx2(const void *w, const void *x, int64_t n) {
    float out;
    float_tile(KIND_F16, 1, 1, w, 0, x, 0, n, &out, 0, 1, 1);
    return out;
}
static float bf16_dot_bf16_avx2(const void *w, const void *x, int64_t n) {
    float out;
    float_tile(KIND_BF16, 1, 1, w, 0, x, 0, n, &out, 0, 1, 1);
    return out;
}

static void f32_gemm_tile_avx2(const void *w, size_t ws, const void *x, size_t xs, int64_t k,
                               float *out, size_t os, int n_w, int n_x) {
    if (n_x == 1)
        float_tile(KIND_F32, FW, 1, w, ws, x, xs, k, out, os, n_w, n_x);
    else
        float_tile(KIND_F32, FW, FX, w, ws, x, xs, k, out, os, n_w, n_x);
}
static void f16_gemm_tile_avx2(const void *w, size_t ws, const void *x, size_t xs, int64_t k,
                               float *out, size_t os, int n_w, int n_x) {
    if (n_x == 1)
        float_tile(KIND_F16, FW, 1, w, ws, x, xs, k, out, os, n_w, n_x);
    else
        float_tile(KIND_F16, FW, FX, w, ws, x, xs, k, out, os, n_w, n_x);
}
static void bf16_gemm_tile_avx2(const void *w, size_t ws, const void *x, size_t xs, int64_t k,
                                float *out, size_t os, int n_w, int n_x) {
    if (n_x == 1)
        float_tile(KIND_BF16, FW, 1, w, ws, x, xs, k, out, os, n_w, n_x);
    else
        float_tile(KIND_BF16, FW, FX, w, ws, x, xs, k, out, os, n_w, n_x);
}

/* ============================================================================================
 * F16 and BF16 conversions (see kernels_avx512.c: vcvtps2ph is fp32_to_fp16; BF16 rounds in
 * integer arithmetic)
 * ============================================================================================ */

static void f16_from_f32_avx2(const float *x, void *vy, int64_t n) {
    uint16_t *y = vy;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128(
            (__m128i *)(y + i),
            _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    for (; i < n; i++) y[i] = fp32_to_fp16(x[i]);
}

static void f16_to_f32_avx2(const void *vx, float *y, int64_t n) {
    const uint16_t *x = vx;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, load_f16x8(x + i));
    for (; i < n; i++) y[i] = f16_to_f32(x[i]);
}

static void bf16_from_f32_avx2(const float *x, void *vy, int64_t n) {
    uint16_t *y = vy;
    const __m256i abs_mask = _mm256_set1_epi32(0x7fffffff), inf = _mm256_set1_epi32(0x7f800000);
    const __m256i bias = _mm256_set1_epi32(0x7fff), one = _mm256_set1_epi32(1);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i u = _mm256_loadu_si256((const __m256i *)(x + i));
        __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, abs_mask), inf);
        __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), one);
        __m256i r = _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_add_epi32(bias, lsb)), 16);
        __m256i q = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(64));
        r = _mm256_blendv_epi8(r, q, nan);
        __m128i p = _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
        _mm_storeu_si128((__m128i *)(y + i), p);
    }
    for (; i < n; i++) y[i] = fp32_to_bf16(x[i]);
}

static void bf16_to_f32_avx2(const void *vx, float *y, int64_t n) {
    const uint16_t *x = vx;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, load_bf16x8(x + i));
    for (; i < n; i++) y[i] = bf16_to_fp32(x[i]);
}

/* ============================================================================================
 * Attention on an F16 cache (attn_*_f16_ref): four 16-lane accumulators as eight 8-lane ones
 * ============================================================================================ */

static float attn_dot_f16_avx2(const uint16_t *q, const uint16_t *k, int64_t n) {
    __m256 a[8];
    for (int i = 0; i < 8; i++) a[i] = _mm256_setzero_ps();
    int64_t n64 = n & ~(int64_t)63;
    for (int64_t i = 0; i < n64; i += 64)
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++)
            a[j] = _mm256_fmadd_ps(load_f16x8(q + i + 8 * j), load_f16x8(k + i + 8 * j), a[j]);
    /* accumulator r is a[2r] (lanes 0-7) and a[2r+1] (lanes 8-15) */
    __m256 l0 = _mm256_add_ps(_mm256_add_ps(a[0], a[4]), _mm256_add_ps(a[2], a[6]));
    __m256 l1 = _mm256_add_ps(_mm256_add_ps(a[1], a[5]), _mm256_add_ps(a[3], a[7]));
    double sum = (double)hsum_ps8(_mm256_add_ps(l0, l1));
    for (int64_t i = n64; i < n; i++) sum += (double)(f16_to_f32(q[i]) * f16_to_f32(k[i]));
    return (float)sum;
}

static void attn_dots_f16_avx2(const uint16_t *q, const uint16_t *k, size_t k_stride, int64_t n,
                               float *out, int64_t n_k) {
    for (int64_t j = 0; j < n_k; j++)
        out[j] =
            attn_dot_f16_avx2(q, (const uint16_t *)((const char *)k + (size_t)j * k_stride), n);
}

static void attn_mad_f16_avx2(uint16_t *acc, const uint16_t *v, float s, int64_t n) {
    const __m256 vs = _mm256_set1_ps(s);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 r = _mm256_fmadd_ps(load_f16x8(v + i), vs, load_f16x8(acc + i));
        _mm_storeu_si128((__m128i *)(acc + i),
                         _mm256_cvtps_ph(r, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
    for (; i < n; i++) acc[i] = fp32_to_fp16(fmaf(f16_to_f32(v[i]), s, f16_to_f32(acc[i])));
}

static void attn_scale_f16_avx2(uint16_t *acc, float s, int64_t n) {
    const __m256 vs = _mm256_set1_ps(s);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 r = _mm256_mul_ps(load_f16x8(acc + i), vs);
        _mm_storeu_si128((__m128i *)(acc + i),
                         _mm256_cvtps_ph(r, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
    for (; i < n; i++) acc[i] = fp32_to_fp16(f16_to_f32(acc[i]) * s);
}

/* ---- tiled attention products (f32_gemm_seq_ref): 4 rows x 16 columns of named registers,
 * every element one FMA chain in index order; the softmax step stays the scalar table's ---- */

#define GS2_ROW(i)                                                                                 \
    __m256 c##i##0 = _mm256_loadu_ps(C + (size_t)(i)*ldc),                                         \
           c##i##1 = _mm256_loadu_ps(C + (size_t)(i)*ldc + 8)
#define GS2_FMA(i)                                                                                 \
    do {                                                                                           \
        __m256 ai = _mm256_broadcast_ss(a + (size_t)(i)*a_si);                                     \
        c##i##0 = _mm256_fmadd_ps(ai, b0, c##i##0);                                                \
        c##i##1 = _mm256_fmadd_ps(ai, b1, c##i##1);                                                \
    } while (0)
#define GS2_STORE(i)                                                                               \
    do {                                                                                           \
        _mm256_storeu_ps(C + (size_t)(i)*ldc, c##i##0);                                            \
        _mm256_storeu_ps(C + (size_t)(i)*ldc + 8, c##i##1);                                        \
    } while (0)

INLINE void gemm_seq_4x16_avx2(float *C, size_t ldc, const float *A, size_t a_si, size_t a_sk,
                               const float *B, size_t ldb, int K) {
    GS2_ROW(0);
    GS2_ROW(1);
    GS2_ROW(2);
    GS2_ROW(3);
    for (int k = 0; k < K; k++) {
        const float *b = B + (size_t)k * ldb, *a = A + (size_t)k * a_sk;
        __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);
        GS2_FMA(0);
        GS2_FMA(1);
        GS2_FMA(2);
        GS2_FMA(3);
    }
    GS2_STORE(0);
    GS2_STORE(1);
    GS2_STORE(2);
    GS2_STORE(3);
}

static void f32_gemm_seq_avx2(float *C, size_t ldc, const float *A, size_t a_si, size_t a_sk,
                              const float *B, size_t ldb, int M, int K, int N) {
    int j = 0;
    for (; j + 16 <= N; j += 16) {
        int i = 0;
        for (; i + 4 <= M; i += 4)
            gemm_seq_4x16_avx2(C + (size_t)i * ldc + j, ldc, A + (size_t)i * a_si, a_si, a_sk,
                               B + j, ldb, K);
        for (; i < M; i++)
            for (int jj = j; jj < j + 16; jj += 8) {
                float *c = C + (size_t)i * ldc + jj;
                __m256 acc = _mm256_loadu_ps(c);
                for (int k = 0; k < K; k++)
                    acc = _mm256_fmadd_ps(
                        _mm256_broadcast_ss(A + (size_t)i * a_si + (size_t)k * a_sk),
                        _mm256_loadu_ps(B + (size_t)k * ldb + jj), acc);
                _mm256_storeu_ps(c, acc);
            }
    }
    for (int i = 0; i < M; i++) /* columns past the last 16: one fmaf chain each */
        for (int jj = j; jj < N; jj++) {
            float c = C[(size_t)i * ldc + jj];
            for (int k = 0; k < K; k++)
                c = fmaf(A[(size_t)i * a_si + (size_t)k * a_sk], B[(size_t)k * ldb + jj], c);
            C[(size_t)i * ldc + jj] = c;
        }
}

/* ---- gated delta rule (gdn_rows_ref); its dots are ggml_vec_dot_f32's (f32_id_dot_avx2) ---- */

static float f32_id_dot_avx2(const float *w, const float *x, int64_t n);

static void gdn_rows_avx2(float *S, int dk, int dv, const float *kn, const float *qn,
                          const float *v, float beta, float decay, float scale, float *out) {
    int n64 = dk & ~63, n8 = dk & ~7;
    const __m256 vdecay = _mm256_set1_ps(decay);
    for (int jv = 0; jv < dv; jv++) {
        float *s = S + (size_t)jv * dk;
        int i = 0;
        for (; i < n8; i += 8)
            _mm256_storeu_ps(s + i, _mm256_mul_ps(_mm256_loadu_ps(s + i), vdecay));
        for (; i < dk; i++) s[i] *= decay;
        float d = (v[jv] - f32_id_dot_avx2(s, kn, dk)) * beta;
        const __m256 vd = _mm256_set1_ps(d);
        for (i = 0; i < n64; i += 8)
            _mm256_storeu_ps(s + i,
                             _mm256_fmadd_ps(_mm256_loadu_ps(kn + i), vd, _mm256_loadu_ps(s + i)));
        for (; i < dk; i++) s[i] += kn[i] * d;
        out[jv] = f32_id_dot_avx2(s, qn, dk) * scale;
    }
}

/* ---- the fused update (attn_rows_f16_ref) ---- */

/* attn_exp_ref on 4 double lanes (the same double operations per lane). */
INLINE __m128 attn_exp4_pd(__m128 xf) {
    __m256d x = _mm256_cvtps_pd(xf);
    __m256d kd = _mm256_add_pd(_mm256_mul_pd(_mm256_set1_pd(ATTN_EXP_INVLN2N), x),
                               _mm256_set1_pd(ATTN_EXP_SHIFT));
    __m256i ki = _mm256_castpd_si256(kd);
    kd = _mm256_sub_pd(kd, _mm256_set1_pd(ATTN_EXP_SHIFT));
    __m256d r = _mm256_fmadd_pd(_mm256_set1_pd(ATTN_EXP_INVLN2N), x,
                                _mm256_sub_pd(_mm256_setzero_pd(), kd));
    __m256i idx = _mm256_and_si256(ki, _mm256_set1_epi64x(31));
    __m256i t = _mm256_i64gather_epi64((const long long *)attn_exp_tab, idx, 8);
    t = _mm256_add_epi64(t, _mm256_slli_epi64(ki, 47));
    __m256d p = _mm256_fmadd_pd(
        _mm256_fmadd_pd(_mm256_set1_pd(ATTN_EXP_C0), r, _mm256_set1_pd(ATTN_EXP_C1)),
        _mm256_mul_pd(r, r), _mm256_fmadd_pd(_mm256_set1_pd(ATTN_EXP_C2), r, _mm256_set1_pd(1.0)));
    __m128 y = _mm256_cvtpd_ps(_mm256_mul_pd(p, _mm256_castsi256_pd(t)));
    __m128 low = _mm_cmp_ps(xf, _mm_set1_ps(ATTN_EXP_MIN), _CMP_LT_OQ);
    y = _mm_andnot_ps(low, y);
    __m128 nan = _mm_cmp_ps(xf, xf, _CMP_UNORD_Q);
    return _mm_blendv_ps(y, _mm_add_ps(xf, xf), nan);
}

/* attn_exp_ref on 8 lanes. */
INLINE __m256 attn_exp8(__m256 x) {
    __m128 lo = attn_exp4_pd(_mm256_castps256_ps128(x));
    __m128 hi = attn_exp4_pd(_mm256_extractf128_ps(x, 1));
    return _mm256_insertf128_ps(_mm256_castps128_ps256(lo), hi, 1);
}

static void attn_exp_n_avx2(float *x, int n) {
    int i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, attn_exp8(_mm256_loadu_ps(x + i)));
    for (; i < n; i++) x[i] = attn_exp_ref(x[i]);
}

INLINE __m256 round_f16(__m256 x) {
    return _mm256_cvtph_ps(_mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

#define SMALL_BLOCK 64 /* positions per block of the register path */

/* Heads of 8 elements: each row's accumulator lives in a register for the whole call and NR rows
 * go in turn per position so their chains overlap. Scores of 4 keys at a time: the keys
 * transposed to 4 double lanes per element, then per row one double fma per element in element
 * order (the f16 products are exact, so fma == add of the product, as attn_dot_f16_ref adds them
 * in double for n < 64). */
INLINE void attn_rows_8_avx2(struct cpu_attn_rows_f16 *a, const int NR) {
    const size_t st = a->kv_stride;
    __m256 acc[CPU_ATTN_ROWS];
    float m[CPU_ATTN_ROWS], l[CPU_ATTN_ROWS];
    double qd[CPU_ATTN_ROWS][8];
    float e[CPU_ATTN_ROWS][SMALL_BLOCK];
    uint64_t is_max[CPU_ATTN_ROWS];
    float kf[4][8];
    const __m128i kidx = _mm_setr_epi32(0, 8, 16, 24);
#pragma GCC unroll 8
    for (int r = 0; r < NR; r++) {
        acc[r] = load_f16x8(a->acc[r]);
        m[r] = a->m[r];
        l[r] = a->l[r];
        for (int i = 0; i < 8; i++) qd[r][i] = (double)f16_to_f32(a->q[r][i]);
    }
    for (int j0 = 0; j0 < a->n_pos; j0 += SMALL_BLOCK) {
        int nb = a->n_pos - j0 < SMALL_BLOCK ? a->n_pos - j0 : SMALL_BLOCK;
        for (int b0 = 0; b0 < nb; b0 += 4) {
            int nk = nb - b0 < 4 ? nb - b0 : 4;
            __m256d kt[8];
            for (int i = 0; i < 8; i++) kt[i] = _mm256_setzero_pd();
#pragma GCC unroll 8
            for (int r = 0; r < NR; r++) {
                if (r == 0 || a->k[r] != a->k[r - 1]) { /* a new KV head: its keys transposed */
                    const char *kb = (const char *)a->k[r] + (size_t)(j0 + b0) * st;
                    for (int c = 0; c < 4; c++)
                        _mm256_storeu_ps(kf[c], c < nk ? load_f16x8(kb + (size_t)c * st)
                                                       : _mm256_setzero_ps());
                    for (int i = 0; i < 8; i++)
                        kt[i] = _mm256_cvtps_pd(_mm_i32gather_ps(&kf[0][i], kidx, 4));
                }
                __m256d sum = _mm256_setzero_pd();
                for (int i = 0; i < 8; i++)
                    sum = _mm256_fmadd_pd(_mm256_set1_pd(qd[r][i]), kt[i], sum);
                __m128 sc = _mm_mul_ps(_mm256_cvtpd_ps(sum), _mm_set1_ps(a->scale));
                _mm_storeu_ps(&e[r][b0], sc);
            }
        }
#pragma GCC unroll 8
        for (int r = 0; r < NR; r++) {
            float mm = m[r];
            uint64_t bits = 0;
            for (int b = 0; b < nb; b++) {
                float s = e[r][b];
                if (s > mm) {
                    e[r][b] = mm - s;
                    mm = s;
                    bits |= (uint64_t)1 << b;
                } else {
                    e[r][b] = s - mm;
                }
            }
            m[r] = mm;
            is_max[r] = bits;
            attn_exp_n_avx2(e[r], nb);
        }
        for (int b = 0; b < nb; b++) {
            size_t off = (size_t)(j0 + b) * st;
            __m256 vf = _mm256_setzero_ps();
#pragma GCC unroll 8
            for (int r = 0; r < NR; r++) {
                if (r == 0 || a->v[r] != a->v[r - 1]) vf = load_f16x8((const char *)a->v[r] + off);
                float ms = 1.0f, vs = e[r][b];
                if ((is_max[r] >> b) & 1) {
                    ms = vs;
                    vs = 1.0f;
                    acc[r] = round_f16(_mm256_mul_ps(acc[r], _mm256_set1_ps(ms)));
                }
                acc[r] = round_f16(_mm256_fmadd_ps(vf, _mm256_set1_ps(vs), acc[r]));
                l[r] = l[r] * ms + vs;
            }
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < NR; r++) {
        _mm_storeu_si128((__m128i *)a->acc[r],
                         _mm256_cvtps_ph(acc[r], _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        a->m[r] = m[r];
        a->l[r] = l[r];
    }
}

static void attn_rows_f16_avx2(struct cpu_attn_rows_f16 *a) {
    if (a->n != 8) {
        attn_rows_f16_with(a, attn_dots_f16_avx2, attn_mad_f16_avx2, attn_scale_f16_avx2,
                           attn_exp_n_avx2);
        return;
    }
    switch (a->n_rows) {
    case 1:
        attn_rows_8_avx2(a, 1);
        break;
    case 2:
        attn_rows_8_avx2(a, 2);
        break;
    case 3:
        attn_rows_8_avx2(a, 3);
        break;
    case 4:
        attn_rows_8_avx2(a, 4);
        break;
    case 5:
        attn_rows_8_avx2(a, 5);
        break;
    case 6:
        attn_rows_8_avx2(a, 6);
        break;
    case 7:
        attn_rows_8_avx2(a, 7);
        break;
    default:
        attn_rows_8_avx2(a, 8);
        break;
    }
}

/* ============================================================================================
 * F32 experts, swiglu, RoPE (f32_id_dot_ref, swiglu_ref, rope_pairs_ref): the four 16-lane
 * accumulators as eight 8-lane ones
 * ============================================================================================ */

static float f32_id_dot_avx2(const float *w, const float *x, int64_t n) {
    __m256 lo[4], hi[4];
    for (int a = 0; a < 4; a++) lo[a] = hi[a] = _mm256_setzero_ps();
    int64_t n64 = n & ~(int64_t)63;
    for (int64_t i = 0; i < n64; i += 64)
#pragma GCC unroll 4
        for (int a = 0; a < 4; a++) {
            const float *wp = w + i + 16 * a, *xp = x + i + 16 * a;
            lo[a] = _mm256_fmadd_ps(_mm256_loadu_ps(wp), _mm256_loadu_ps(xp), lo[a]);
            hi[a] = _mm256_fmadd_ps(_mm256_loadu_ps(wp + 8), _mm256_loadu_ps(xp + 8), hi[a]);
        }
    __m256 l = _mm256_add_ps(_mm256_add_ps(lo[0], lo[2]), _mm256_add_ps(lo[1], lo[3]));
    __m256 h = _mm256_add_ps(_mm256_add_ps(hi[0], hi[2]), _mm256_add_ps(hi[1], hi[3]));
    float sum = hsum_ps8(_mm256_add_ps(l, h));
    for (int64_t i = n64; i < n; i++) sum = fmaf(w[i], x[i], sum);
    return sum;
}

static void f32_id_tile_avx2(const void *w, size_t ws, const void *x, size_t xs, int64_t k,
                             float *out, size_t os, int n_w, int n_x) {
    for (int j = 0; j < n_x; j++)
        for (int i = 0; i < n_w; i++)
            out[(size_t)j * os + (size_t)i] =
                f32_id_dot_avx2((const float *)((const char *)w + (size_t)i * ws),
                                (const float *)((const char *)x + (size_t)j * xs), k);
}

/* expf_ggml_ref on 8 lanes for |n| <= 126, where 2^n is a normal float built from its exponent
 * bits and j * 2^n rounds once, as ldexpf; blocks with larger |n| go to the reference. */
INLINE int expf_ggml_avx2(__m256 x, __m256 *res) {
    const __m256 r = _mm256_set1_ps(0x1.8p23f);
    __m256 z = _mm256_fmadd_ps(x, _mm256_set1_ps(0x1.715476p+0f), r);
    __m256 n = _mm256_sub_ps(z, r);
    __m256 an = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), n);
    if (_mm256_movemask_ps(_mm256_cmp_ps(an, _mm256_set1_ps(126), _CMP_NLE_UQ))) return 0;
    __m256 b = _mm256_fnmadd_ps(n, _mm256_set1_ps(0x1.7f7d1cp-20f),
                                _mm256_fnmadd_ps(n, _mm256_set1_ps(0x1.62e4p-1f), x));
    __m256 u = _mm256_mul_ps(b, b);
    __m256 hi = _mm256_fmadd_ps(
        _mm256_fmadd_ps(_mm256_set1_ps(0x1.0e4020p-7f), b, _mm256_set1_ps(0x1.573e2ep-5f)), u,
        _mm256_fmadd_ps(_mm256_set1_ps(0x1.555e66p-3f), b, _mm256_set1_ps(0x1.fffdb6p-2f)));
    __m256 j = _mm256_fmadd_ps(
        hi, u, _mm256_fmadd_ps(_mm256_set1_ps(0x1.ffffecp-1f), b, _mm256_set1_ps(1.0f)));
    __m256i e =
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    *res = _mm256_mul_ps(j, _mm256_castsi256_ps(e));
    return 1;
}

static void swiglu_avx2(const float *gate, const float *up, float *out, int64_t n) {
    const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 g = _mm256_loadu_ps(gate + i), e;
        if (!expf_ggml_avx2(_mm256_sub_ps(zero, g), &e)) {
            swiglu_ref(gate + i, up + i, out + i, 8);
            continue;
        }
        __m256 s = _mm256_div_ps(g, _mm256_add_ps(one, e));
        _mm256_storeu_ps(out + i, _mm256_mul_ps(s, _mm256_loadu_ps(up + i)));
    }
    if (i < n) swiglu_ref(gate + i, up + i, out + i, n - i);
}

static void silu_avx2(const float *x, float *out, int64_t n) {
    const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i), e;
        if (!expf_ggml_avx2(_mm256_sub_ps(zero, v), &e)) {
            silu_ref(x + i, out + i, 8);
            continue;
        }
        _mm256_storeu_ps(out + i, _mm256_div_ps(v, _mm256_add_ps(one, e)));
    }
    if (i < n) silu_ref(x + i, out + i, n - i);
}

/* Pairs [i0, n) of rope_pairs_ref; fmaf is one instruction here (-mfma). */
INLINE void rope_pairs_rest(float *x, const float *cs, const float *sn, int i0, int n, int half) {
    int step = half ? 1 : 2, off = half ? half : 1;
    for (int i = i0; i < n; i++) {
        float *p = x + (int64_t)i * step;
        float x0 = p[0], x1 = p[off];
        p[0] = fmaf(x0, cs[i], -(x1 * sn[i]));
        p[off] = fmaf(x0, sn[i], x1 * cs[i]);
    }
}

static void rope_pairs_avx2(float *x, const float *cs, const float *sn, int n, int half) {
    int i = 0;
    if (half)
        for (; i + 8 <= n; i += 8) {
            __m256 x0 = _mm256_loadu_ps(x + i), x1 = _mm256_loadu_ps(x + i + half);
            __m256 c = _mm256_loadu_ps(cs + i), s = _mm256_loadu_ps(sn + i);
            _mm256_storeu_ps(x + i, _mm256_fmsub_ps(x0, c, _mm256_mul_ps(x1, s)));
            _mm256_storeu_ps(x + i + half, _mm256_fmadd_ps(x0, s, _mm256_mul_ps(x1, c)));
        }
    rope_pairs_rest(x, cs, sn, i, n, half);
}

/* ============================================================================================
 * Activation quantizers (q8_0_quantize_row_act, q8_k_quantize_row_act)
 * ============================================================================================ */

INLINE __m256 abs_ps(__m256 v) {
    return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v);
}

INLINE float hmax_ps8(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    return _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
}

/* x * s rounded half to even, as int32 */
INLINE __m256i round_mul(__m256 x, __m256 s) {
    return _mm256_cvtps_epi32(
        _mm256_round_ps(_mm256_mul_ps(x, s), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

/* 32 int32 in -127..127 (four vectors, element order) to 32 bytes. */
INLINE __m256i pack_bytes(__m256i a, __m256i b, __m256i c, __m256i d) {
    __m256i ab = _mm256_packs_epi32(a, b), cd = _mm256_packs_epi32(c, d);
    __m256i r = _mm256_packs_epi16(ab, cd); /* dword order 0 4 1 5 2 6 3 7 */
    return _mm256_permutevar8x32_epi32(r, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

static void q8_0_quantize_row_act_avx2(const float *x, void *vy, int64_t n) {
    CHECK(n % QK8_0 == 0);
    struct block_q8_0 *y = vy;
    for (int64_t ib = 0; ib < n / QK8_0; ib++) {
        const float *xb = x + ib * QK8_0;
        __m256 v[4];
        for (int g = 0; g < 4; g++) v[g] = _mm256_loadu_ps(xb + 8 * g);
        __m256 m = _mm256_max_ps(_mm256_max_ps(abs_ps(v[0]), abs_ps(v[1])),
                                 _mm256_max_ps(abs_ps(v[2]), abs_ps(v[3])));
        float amax = hmax_ps8(m);
        float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        y[ib].d = fp32_to_fp16(amax / 127.0f);
        __m256 s = _mm256_set1_ps(id);
        _mm256_storeu_si256((__m256i *)y[ib].qs,
                            pack_bytes(round_mul(v[0], s), round_mul(v[1], s), round_mul(v[2], s),
                                       round_mul(v[3], s)));
    }
}

static void q8_1_quantize_row_act_avx2(const float *x, void *vy, int64_t n) {
    CHECK(n % QK8_1 == 0);
    struct block_q8_1 *y = vy;
    for (int64_t ib = 0; ib < n / QK8_1; ib++) {
        const float *xb = x + ib * QK8_1;
        __m256 v[4];
        for (int g = 0; g < 4; g++) v[g] = _mm256_loadu_ps(xb + 8 * g);
        __m256 m = _mm256_max_ps(_mm256_max_ps(abs_ps(v[0]), abs_ps(v[1])),
                                 _mm256_max_ps(abs_ps(v[2]), abs_ps(v[3])));
        float amax = hmax_ps8(m);
        float d = amax / 127.0f;
        float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        __m256 s = _mm256_set1_ps(id);
        __m256i q[4];
        for (int g = 0; g < 4; g++) q[g] = round_mul(v[g], s);
        _mm256_storeu_si256((__m256i *)y[ib].qs, pack_bytes(q[0], q[1], q[2], q[3]));
        __m256i t = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
        __m128i u = _mm_add_epi32(_mm256_castsi256_si128(t), _mm256_extracti128_si256(t, 1));
        u = _mm_hadd_epi32(u, u);
        int sum = _mm_cvtsi128_si32(_mm_hadd_epi32(u, u));
        y[ib].d = fp32_to_fp16(d);
        y[ib].s = fp32_to_fp16(d * (float)sum);
    }
}

static void q8_k_quantize_row_act_avx2(const float *x, void *vy, int64_t n) {
    CHECK(n % QK_K == 0);
    struct block_q8_k *y = vy;
    const __m256i lim = _mm256_set1_epi32(127), nlim = _mm256_set1_epi32(-127);
    for (int64_t ib = 0; ib < n / QK_K; ib++) {
        const float *xb = x + ib * QK_K;
        __m256 m = _mm256_setzero_ps();
        for (int g = 0; g < QK_K / 8; g++)
            m = _mm256_max_ps(m, abs_ps(_mm256_loadu_ps(xb + 8 * g)));
        float amax = hmax_ps8(m);
        memset(&y[ib], 0, sizeof(y[ib]));
        if (amax == 0.0f) continue;
        float iscale = 127.0f / amax;
        __m256 s = _mm256_set1_ps(iscale);
        for (int g = 0; g < QK_K / 32; g++) {
            __m256i q[4];
            for (int h = 0; h < 4; h++) {
                q[h] = round_mul(_mm256_loadu_ps(xb + 32 * g + 8 * h), s);
                q[h] = _mm256_max_epi32(_mm256_min_epi32(q[h], lim), nlim);
            }
            for (int h = 0; h < 2; h++) {
                __m256i t = _mm256_add_epi32(q[2 * h], q[2 * h + 1]);
                __m128i u =
                    _mm_add_epi32(_mm256_castsi256_si128(t), _mm256_extracti128_si256(t, 1));
                u = _mm_hadd_epi32(u, u);
                y[ib].bsums[2 * g + h] = (int16_t)_mm_cvtsi128_si32(_mm_hadd_epi32(u, u));
            }
            _mm256_storeu_si256((__m256i *)(y[ib].qs + 32 * g), pack_bytes(q[0], q[1], q[2], q[3]));
        }
        y[ib].d = 1.0f / iscale;
    }
}

/* ============================================================================================
 * The Q8_0 family: Q8_0, Q4_0, IQ4_NL weights against Q8_0 activations
 * The order of q8_0_dot_q8_0_ref. Without VNNI: vpmaddubsw(|w|, sign(x, w)) gives the int16
 * pair sums (at most 2 * 128 * 127), vpmaddwd with ones the 8 int32 lanes of 4 products.
 * ============================================================================================ */

/* Q4_1 and Q5_1 (value d q + m) dot Q8_1 rows; the m_x s_y terms go to a separate FMA chain per
 * (row, token), as in their references. */
enum q8_family { FAM_Q8_0, FAM_Q4_0, FAM_IQ4_NL, FAM_Q5_0, FAM_Q4_1, FAM_Q5_1 };
enum { FAM_CHUNK = 32 };

INLINE size_t fam_block_bytes(int fam) {
    return fam == FAM_Q8_0   ? sizeof(struct block_q8_0)
           : fam == FAM_Q5_0 ? sizeof(struct block_q5_0)
           : fam == FAM_Q4_1 ? sizeof(struct block_q4_1)
           : fam == FAM_Q5_1 ? sizeof(struct block_q5_1)
                             : sizeof(struct block_q4_0);
}

INLINE int fam_has_min(int fam) {
    return fam == FAM_Q4_1 || fam == FAM_Q5_1;
}

/* Activation blocks: Q8_1 (d, s, qs) for the families with a min, else Q8_0 (d, qs). */
INLINE size_t fam_act_bytes(int fam) {
    return fam_has_min(fam) ? sizeof(struct block_q8_1) : sizeof(struct block_q8_0);
}

/* 32 bytes: 0xff where bit j of bits is set, else 0. */
INLINE __m256i bits_to_bytes(uint32_t bits) {
    const __m256i spread = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2,
                                            2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)bits), spread);
    return _mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit);
}

/* The 32 weights of a block in element order, signed (Q4_1, Q5_1: the unsigned q). */
INLINE __m256i fam_weights(int fam, const char *blk, __m256i table) {
    if (fam == FAM_Q8_0) return _mm256_loadu_si256((const __m256i *)(blk + 2));
    size_t qs = fam == FAM_Q5_0 ? 6 : fam == FAM_Q4_1 ? 4 : fam == FAM_Q5_1 ? 8 : 2;
    __m128i v = _mm_loadu_si128((const __m128i *)(blk + qs));
    __m256i q = _mm256_set_m128i(_mm_srli_epi16(v, 4), v);
    q = _mm256_and_si256(q, _mm256_set1_epi8(0x0f));
    if (fam == FAM_Q4_1) return q;
    if (fam == FAM_Q5_0 || fam == FAM_Q5_1) { /* bit j of qh: the 16 of element j */
        uint32_t qh;
        memcpy(&qh, blk + (fam == FAM_Q5_0 ? 2 : 4), sizeof(qh));
        q = _mm256_or_si256(q, _mm256_and_si256(bits_to_bytes(qh), _mm256_set1_epi8(0x10)));
        return fam == FAM_Q5_1 ? q : _mm256_sub_epi8(q, _mm256_set1_epi8(16));
    }
    return fam == FAM_IQ4_NL ? _mm256_shuffle_epi8(table, q)
                             : _mm256_sub_epi8(q, _mm256_set1_epi8(8));
}

/* dd[p][b] = dw_i * dx_j of block b0 + b for the pairs p = i * nx_max + j; with a min also
 * mw[i][b] = m_i and sx[j][b] = s_j (the fp16 field after d, in both blocks). */
INLINE void fam_scales(int fam, int nw_max, int nx_max, const char *const *wr,
                       const char *const *xr, int64_t b0, int n, float dd[QW * QX][FAM_CHUNK],
                       float mw[QW][FAM_CHUNK], float sx[QX][FAM_CHUNK]) {
    uint16_t h[FAM_CHUNK];
    float dw[QW][FAM_CHUNK], dx[QX][FAM_CHUNK];
    size_t wb = fam_block_bytes(fam);
    for (int i = 0; i < nw_max + nx_max; i++) {
        const char *row = i < nw_max ? wr[i] : xr[i - nw_max];
        size_t bytes = i < nw_max ? wb : fam_act_bytes(fam);
        for (int f = 0; f < 1 + fam_has_min(fam); f++) {
            for (int b = 0; b < FAM_CHUNK; b++) {
                h[b] = 0;
                if (b < n) memcpy(&h[b], row + (size_t)(b0 + b) * bytes + 2 * f, sizeof(uint16_t));
            }
            float *dst =
                f ? (i < nw_max ? mw[i] : sx[i - nw_max]) : (i < nw_max ? dw[i] : dx[i - nw_max]);
            for (int b = 0; b < FAM_CHUNK; b += 8) _mm256_storeu_ps(dst + b, load_f16x8(h + b));
        }
    }
    for (int i = 0; i < nw_max; i++)
        for (int j = 0; j < nx_max; j++)
            for (int b = 0; b < FAM_CHUNK; b += 8)
                _mm256_storeu_ps(dd[i * nx_max + j] + b, _mm256_mul_ps(_mm256_loadu_ps(dw[i] + b),
                                                                       _mm256_loadu_ps(dx[j] + b)));
}

INLINE void fam_tile(int fam, int nw_max, int nx_max, const void *w, size_t w_stride, const void *x,
                     size_t x_stride, int64_t k, float *out, size_t out_stride, int n_w, int n_x) {
    CHECK(k % QK8_0 == 0);
    const size_t wb = fam_block_bytes(fam);
    const char *wr[QW], *xr[QX];
#pragma GCC unroll 16
    for (int i = 0; i < nw_max; i++) wr[i] = tile_row(w, w_stride, i, n_w);
#pragma GCC unroll 16
    for (int j = 0; j < nx_max; j++) xr[j] = tile_row(x, x_stride, j, n_x);
    const __m256i table =
        _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)kvalues_iq4nl));
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[QW][QX];
#pragma GCC unroll 16
    for (int i = 0; i < nw_max; i++)
#pragma GCC unroll 16
        for (int j = 0; j < nx_max; j++) acc[i][j] = _mm256_setzero_ps();
    float dd[QW * QX][FAM_CHUNK], mw[QW][FAM_CHUNK], sx[QX][FAM_CHUNK];
    float msum[QW][QX] = {{0}};
    const size_t ab = fam_act_bytes(fam), aq = fam_has_min(fam) ? 4 : 2;
    const int64_t nb = k / QK8_0;
    for (int64_t b0 = 0; b0 < nb; b0 += FAM_CHUNK) {
        int n = nb - b0 < FAM_CHUNK ? (int)(nb - b0) : FAM_CHUNK;
        fam_scales(fam, nw_max, nx_max, wr, xr, b0, n, dd, mw, sx);
        for (int b = 0; b < n; b++) {
            __m256i xv[QX];
#pragma GCC unroll 16
            for (int j = 0; j < nx_max; j++)
                xv[j] = _mm256_loadu_si256((const __m256i *)(xr[j] + (size_t)(b0 + b) * ab + aq));
#pragma GCC unroll 16
            for (int i = 0; i < nw_max; i++) {
                __m256i ws = fam_weights(fam, wr[i] + (size_t)(b0 + b) * wb, table);
                __m256i wa = _mm256_sign_epi8(ws, ws);
#pragma GCC unroll 16
                for (int j = 0; j < nx_max; j++) {
                    __m256i p = _mm256_maddubs_epi16(wa, _mm256_sign_epi8(xv[j], ws));
                    __m256i s = _mm256_madd_epi16(p, ones);
                    acc[i][j] = _mm256_fmadd_ps(_mm256_set1_ps(dd[i * nx_max + j][b]),
                                                _mm256_cvtepi32_ps(s), acc[i][j]);
                    if (fam_has_min(fam)) msum[i][j] = fmaf(mw[i][b], sx[j][b], msum[i][j]);
                }
            }
        }
    }
    for (int j = 0; j < n_x && j < nx_max; j++)
        for (int i = 0; i < n_w && i < nw_max; i++)
            out[(size_t)j * out_stride + (size_t)i] =
                fam_has_min(fam) ? hsum_ps8(acc[i][j]) + msum[i][j] : hsum_ps8(acc[i][j]);
}

static float q8_0_dot_q8_0_avx2(const void *w, const void *x, int64_t n) {
    float out;
    fam_tile(FAM_Q8_0, 1, 1, w, 0, x, 0, n, &out, 0, 1, 1);
    return out;
}
static float q4_0_dot_q8_0_avx2(const void *w, const void *x, int64_t n) {
    float out;
    fam_tile(FAM_Q4_0, 1, 1, w, 0, x, 0, n, &out, 0, 1, 1);
    return out;
}
static float iq4_nl_dot_q8_0_avx2(const void *w, const void *x, int64_t n) {
    float out;
    fam_tile(FAM_IQ4_NL, 1, 1, w, 0, x, 0, n, &out, 0, 1, 1);
    return out;
}

static float q4_1_dot_q8_1_avx2(const void *w, const void *x, int64_t n) {
    float out;
    fam_tile(FAM_Q4_1, 1, 1, w, 0, x, 0, n, &out, 0, 1, 1);
    return out;
}
static float q5_1_dot_q8_1_avx2(const void *w, const void *x, int64_t n) {
    float out;
    fam_tile(FAM_Q5_1, 1, 1, w, 0, x, 0, n, &out, 0, 1, 1);
    return out;
}
static void q4_1_gemm_tile_avx2(const void *w, size_t ws, const void *x, size_t xs, int64_t k,
                                float *out, size_t os, int n_w, int n_x) {
    if (n_x == 1)
        fam_tile(FAM_Q4_1, QW, 1, w, ws, x, xs, k, out, os, n_w, n_x);
    else
        fam_tile(FAM_Q4_1, QW, QX, w, ws, x, xs, k, out, os, n_w, n_x);
}
static void q5_1_gemm_tile_avx2(const void *w, size_t ws, const void *x, size_t xs, int64_t k,
                                float *out, size_t os, int n_w, int n_x) {
    if (n_x == 1)
        fam_tile(FAM_Q5_1, QW, 1, w, ws, x, xs, k, out, os, n_w, n_x);
    else
        fam_tile(FAM_Q5_1, QW, QX, w, ws, x, xs, k, out, os, n_w, n_x);
}

static float q5_0_dot_q8_0_avx2(const void *w, const void *x, int64_t n) {
    float out;
    fam_tile(FAM_Q5_0, 1, 1, w, 0, x, 0, n, &out, 0, 1, 1);
    return out;
}
static void q5_0_gemm_tile_avx2(const void *w, size_t ws, const void *x, size_t xs, int64_t k,
                                float *out, size_t os, int n_w, int n_x) {
    if (n_x == 1)
        fam_tile(FAM_Q5_0, QW, 1, w, ws, x, xs, k, out, os, n_w, n_x);
    else
        fam_tile(FAM_Q5_0, QW, QX, w, ws, x, xs, k, out, os, n_w, n_x);
}

static void q8_0_gemm_tile_avx2(const void *w, size_t ws, const void *x, size_t xs, int64_t k,
                                float *out, size_t os, int n_w, int n_x) {
    if (n_x == 1)
        fam_tile(FAM_Q8_0, QW, 1, w, ws, x, xs, k, out, os, n_w, n_x);
    else
        fam_tile(FAM_Q8_0, QW, QX, w, ws, x, xs, k, out, os, n_w, n_x);
}
static void q4_0_gemm_tile_avx2(const void *w, size_t ws, const void *x, size_t xs, int64_t k,
                                float *out, size_t os, int n_w, int n_x) {
    if (n_x == 1)
        fam_tile(FAM_Q4_0, QW, 1, w, ws, x, xs, k, out, os, n_w, n_x);
    else
        fam_tile(FAM_Q4_0, QW, QX, w, ws, x, xs, k, out, os, n_w, n_x);
}
static void iq4_nl_gemm_tile_avx2(const void *w, size_t ws, const void *x, size_t xs, int64_t k,
                                  float *out, size_t os, int n_w, int n_x) {
    if (n_x == 1)
        fam_tile(FAM_IQ4_NL, QW, 1, w, ws, x, xs, k, out, os, n_w, n_x);
    else
        fam_tile(FAM_IQ4_NL, QW, QX, w, ws, x, xs, k, out, os, n_w, n_x);
}

/* ============================================================================================
 * K-quants (Q4_K, Q5_K, Q6_K) and IQ4_XS against Q8_K activations
 * Exact int32 sums per super-block as in kernels_avx512.c, 32 values at a time: vpmaddubsw
 * (IQ4_XS: |value| against sign(activation, value)), vpmaddwd with the sub-block scale, add.
 * The 8 lanes of each of the 8 (row, token) pairs are then summed by a vphaddd tree, lane
 * p = i * nx + j, and the f32 step runs on the 8 pairs in one vector.
 * ============================================================================================ */

enum kq_type { KQ_Q4_K, KQ_Q5_K, KQ_Q6_K, KQ_IQ4_XS, KQ_Q2_K, KQ_Q3_K };

INLINE size_t kq_block_bytes(int type) {
    return type == KQ_Q4_K   ? sizeof(struct block_q4_k)
           : type == KQ_Q5_K ? sizeof(struct block_q5_k)
           : type == KQ_Q6_K ? sizeof(struct block_q6_k)
           : type == KQ_Q2_K ? sizeof(struct block_q2_k)
           : type == KQ_Q3_K ? sizeof(struct block_q3_k)
                             : sizeof(struct block_iq4_xs);
}

/* Per row and super-block: the int16 scales (8 per sub-block of 32; Q6_K 16 of 16), mins and
 * f32 super-scales. */
struct kq_row {
    int16_t sc[16]; /* Q4_K/Q5_K/IQ4_XS: sc[0..7]; Q2_K/Q3_K/Q6_K: all 16 */
    int16_t mn[16]; /* Q4_K/Q5_K: mn[0..7]; Q2_K: all 16 */
    float d, dmin;
};

INLINE void kq_row_load(int type, const char *blk, struct kq_row *r) {
    if (type == KQ_Q4_K || type == KQ_Q5_K) {
        const struct block_q4_k *b = (const struct block_q4_k *)blk; /* same head in Q5_K */
        uint32_t w0, w1, w2;
        memcpy(&w0, b->scales, 4);
        memcpy(&w1, b->scales + 4, 4);
        memcpy(&w2, b->scales + 8, 4);
        uint32_t sc_lo = w0 & 0x3f3f3f3f, mn_lo = w1 & 0x3f3f3f3f;
        uint32_t sc_hi = (w2 & 0x0f0f0f0f) | ((w0 >> 6) & 0x03030303) << 4;
        uint32_t mn_hi = ((w2 >> 4) & 0x0f0f0f0f) | ((w1 >> 6) & 0x03030303) << 4;
        _mm_storeu_si128((__m128i *)r->sc,
                         _mm_cvtepu8_epi16(_mm_set_epi32(0, 0, (int)sc_hi, (int)sc_lo)));
        _mm_storeu_si128((__m128i *)r->mn,
                         _mm_cvtepu8_epi16(_mm_set_epi32(0, 0, (int)mn_hi, (int)mn_lo)));
        r->d = f16_to_f32(b->d);
        r->dmin = f16_to_f32(b->dmin);
    } else if (type == KQ_Q6_K) {
        const struct block_q6_k *b = (const struct block_q6_k *)blk;
        _mm256_storeu_si256((__m256i *)r->sc,
                            _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)b->scales)));
        r->d = f16_to_f32(b->d);
        r->dmin = 0.0f;
    } else if (type == KQ_Q2_K) { /* scales[i]: low nibble scale, high nibble min */
        const struct block_q2_k *b = (const struct block_q2_k *)blk;
        for (int i = 0; i < 16; i++) {
            r->sc[i] = (int16_t)(b->scales[i] & 0x0f);
            r->mn[i] = (int16_t)(b->scales[i] >> 4);
        }
        r->d = f16_to_f32(b->d);
        r->dmin = f16_to_f32(b->dmin);
    } else if (type == KQ_Q3_K) {
        const struct block_q3_k *b = (const struct block_q3_k *)blk;
        /* q3_k_get_scale: low nibbles in bytes 0-7 (j < 8: low, else high nibble of byte
         * j - 8); the 2 high bits of scale j at bits 2(j/4) of byte 8 + j%4; stored + 32 */
        __m128i v = _mm_loadl_epi64((const __m128i *)b->scales);
        __m128i lo = _mm_unpacklo_epi64(_mm_and_si128(v, _mm_set1_epi8(0x0f)),
                                        _mm_and_si128(_mm_srli_epi16(v, 4), _mm_set1_epi8(0x0f)));
        uint32_t hw;
        memcpy(&hw, b->scales + 8, 4);
        __m256i h = _mm256_set1_epi32((int)hw);
        const __m256i three = _mm256_set1_epi32(3);
        __m256i h0 = _mm256_and_si256(
            _mm256_srlv_epi32(h, _mm256_setr_epi32(0, 8, 16, 24, 2, 10, 18, 26)), three);
        __m256i h1 = _mm256_and_si256(
            _mm256_srlv_epi32(h, _mm256_setr_epi32(4, 12, 20, 28, 6, 14, 22, 30)), three);
        __m256i hh = _mm256_packs_epi32(h0, h1);
        /* packs interleaves 128-bit halves: words h0[0..3] h1[0..3] h0[4..7] h1[4..7] */
        hh = _mm256_permute4x64_epi64(hh, _MM_SHUFFLE(3, 1, 2, 0));
        __m256i sc = _mm256_or_si256(_mm256_cvtepu8_epi16(lo), _mm256_slli_epi16(hh, 4));
        _mm256_storeu_si256((__m256i *)r->sc, _mm256_sub_epi16(sc, _mm256_set1_epi16(32)));
        r->d = f16_to_f32(b->d);
        r->dmin = 0.0f;
    } else {
        const struct block_iq4_xs *b = (const struct block_iq4_xs *)blk;
        for (int ib = 0; ib < 8; ib++)
            r->sc[ib] = (int16_t)((((b->scales_l[ib / 2] >> (4 * (ib % 2))) & 0x0f) |
                                   ((b->scales_h >> (2 * ib)) & 3) << 4) -
                                  32);
        r->d = f16_to_f32(b->d);
        r->dmin = 0.0f;
    }
}

/* Values 32g .. 32g+31 of a super-block as unsigned bytes (IQ4_XS: the signed table values). */
INLINE __m256i kq_part_weights(int type, const char *blk, int g) {
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    if (type == KQ_Q4_K || type == KQ_Q5_K) {
        const uint8_t *qs = type == KQ_Q4_K ? ((const struct block_q4_k *)blk)->qs
                                            : ((const struct block_q5_k *)blk)->qs;
        __m256i v = _mm256_loadu_si256((const __m256i *)(qs + 32 * (g / 2)));
        __m256i q = _mm256_and_si256(g % 2 ? _mm256_srli_epi16(v, 4) : v, m4);
        if (type == KQ_Q4_K) return q;
        __m256i h = _mm256_loadu_si256((const __m256i *)((const struct block_q5_k *)blk)->qh);
        h = _mm256_and_si256(_mm256_srli_epi16(h, g), _mm256_set1_epi8(1));
        return _mm256_or_si256(q, _mm256_slli_epi16(h, 4));
    }
    if (type == KQ_Q2_K || type == KQ_Q3_K) { /* bits 2j of qs[32h + l]; Q3_K: + 4 * bit 4h + j
                                               * of hmask[l] (the stored q + 4) */
        int h = g / 4, j = g % 4;
        const uint8_t *qs = type == KQ_Q2_K ? ((const struct block_q2_k *)blk)->qs
                                            : ((const struct block_q3_k *)blk)->qs;
        __m256i v = _mm256_loadu_si256((const __m256i *)(qs + 32 * h));
        v = _mm256_and_si256(_mm256_srli_epi16(v, 2 * j), _mm256_set1_epi8(3));
        if (type == KQ_Q2_K) return v;
        __m256i hm = _mm256_loadu_si256((const __m256i *)((const struct block_q3_k *)blk)->hmask);
        hm = _mm256_and_si256(_mm256_srli_epi16(hm, 4 * h + j), _mm256_set1_epi8(1));
        return _mm256_or_si256(v, _mm256_slli_epi16(hm, 2));
    }
    if (type == KQ_Q6_K) {
        const struct block_q6_k *b = (const struct block_q6_k *)blk;
        int h = g / 4, kq = g % 4;
        __m256i l = _mm256_loadu_si256((const __m256i *)(b->ql + 64 * h + 32 * (kq % 2)));
        l = _mm256_and_si256(kq / 2 ? _mm256_srli_epi16(l, 4) : l, m4);
        __m256i hb = _mm256_loadu_si256((const __m256i *)(b->qh + 32 * h));
        hb = _mm256_and_si256(_mm256_srli_epi16(hb, 2 * kq), _mm256_set1_epi8(3));
        return _mm256_or_si256(l, _mm256_slli_epi16(hb, 4));
    }
    const struct block_iq4_xs *b = (const struct block_iq4_xs *)blk;
    __m128i v = _mm_loadu_si128((const __m128i *)(b->qs + 16 * g));
    __m256i q = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(v, 4), v), m4);
    return _mm256_shuffle_epi8(
        _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)kvalues_iq4nl)), q);
}

/* int16 scale of each of the 16 pairs of values 32g .. 32g+31. */
INLINE __m256i kq_part_scales(int type, const struct kq_row *r, int g) {
    if (type == KQ_Q6_K || type == KQ_Q3_K || type == KQ_Q2_K) /* sub-blocks of 16 */
        return _mm256_set_m128i(_mm_set1_epi16(r->sc[2 * g + 1]), _mm_set1_epi16(r->sc[2 * g]));
    return _mm256_set1_epi16(r->sc[g]);
}

/* Lane p of the result: the sum of the 8 lanes of v[p], p < n_pairs <= 8. */
INLINE __m256i kq_sum_pairs(const __m256i *v, int n_pairs) {
    const __m256i z = _mm256_setzero_si256();
    __m256i h[4];
    for (int q = 0; q < 4; q++)
        h[q] = _mm256_hadd_epi32(2 * q < n_pairs ? v[2 * q] : z,
                                 2 * q + 1 < n_pairs ? v[2 * q + 1] : z);
    __m256i a = _mm256_hadd_epi32(h[0], h[1]), b = _mm256_hadd_epi32(h[2], h[3]);
    return _mm256_add_epi32(_mm256_permute2x128_si256(a, b, 0x20),
                            _mm256_permute2x128_si256(a, b, 0x31));
}

/* Lane p: sum of the 4 int32 lanes of v[p] (p < 8). */
INLINE __m256i kq_sum_pairs128(const __m128i *v, int n_pairs) {
    const __m128i z = _mm_setzero_si128();
    __m128i h[4];
    for (int q = 0; q < 4; q++)
        h[q] =
            _mm_hadd_epi32(2 * q < n_pairs ? v[2 * q] : z, 2 * q + 1 < n_pairs ? v[2 * q + 1] : z);
    return _mm256_set_m128i(_mm_hadd_epi32(h[2], h[3]), _mm_hadd_epi32(h[0], h[1]));
}

INLINE void kq_tile(int type, int nw_max, int nx_max, const void *w, size_t w_stride, const void *x,
                    size_t x_stride, int64_t k, float *out, size_t out_stride, int n_w, int n_x) {
    CHECK(k % QK_K == 0);
    const size_t wb = kq_block_bytes(type);
    const int n_pairs = nw_max * nx_max;
    const int has_min = type == KQ_Q4_K || type == KQ_Q5_K || type == KQ_Q2_K;
    const char *wr[QW], *xr[QX];
#pragma GCC unroll 16
    for (int i = 0; i < nw_max; i++) wr[i] = tile_row(w, w_stride, i, n_w);
#pragma GCC unroll 16
    for (int j = 0; j < nx_max; j++) xr[j] = tile_row(x, x_stride, j, n_x);
    const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i lane_i = nx_max == 2 ? _mm256_srli_epi32(iota, 1) : iota;
    const __m256i lane_j =
        nx_max == 2 ? _mm256_and_si256(iota, _mm256_set1_epi32(1)) : _mm256_setzero_si256();
    __m256 sum = _mm256_setzero_ps();
    for (int64_t ib = 0; ib < k / QK_K; ib++) {
        const struct block_q8_k *yb[QX];
        float rd[4] = {0}, rdmin[4] = {0}, ty[4] = {0};
        struct kq_row row[QW];
        __m256i acc[QW * QX];
#pragma GCC unroll 16
        for (int j = 0; j < nx_max; j++) {
            yb[j] = (const struct block_q8_k *)xr[j] + ib;
            ty[j] = yb[j]->d;
        }
#pragma GCC unroll 16
        for (int i = 0; i < nw_max; i++) {
            kq_row_load(type, wr[i] + (size_t)ib * wb, &row[i]);
            rd[i] = row[i].d;
            rdmin[i] = row[i].dmin;
        }
#pragma GCC unroll 16
        for (int p = 0; p < n_pairs; p++) acc[p] = _mm256_setzero_si256();
        for (int g = 0; g < QK_K / 32; g++) {
            __m256i a[QX];
#pragma GCC unroll 16
            for (int j = 0; j < nx_max; j++)
                a[j] = _mm256_loadu_si256((const __m256i *)(yb[j]->qs + 32 * g));
#pragma GCC unroll 16
            for (int i = 0; i < nw_max; i++) {
                __m256i q = kq_part_weights(type, wr[i] + (size_t)ib * wb, g);
                __m256i sc = kq_part_scales(type, &row[i], g);
                __m256i qa = type == KQ_IQ4_XS ? _mm256_sign_epi8(q, q) : q;
#pragma GCC unroll 16
                for (int j = 0; j < nx_max; j++) {
                    __m256i aj = type == KQ_IQ4_XS ? _mm256_sign_epi8(a[j], q) : a[j];
                    __m256i s = _mm256_madd_epi16(_mm256_maddubs_epi16(qa, aj), sc);
                    acc[i * nx_max + j] = _mm256_add_epi32(acc[i * nx_max + j], s);
                }
            }
        }
        if (type == KQ_Q6_K || type == KQ_Q3_K) /* q = stored - 32 (Q3_K: - 4): add
                                                 * -32 (-4) * sum_s scale_s * bsum_s */
#pragma GCC unroll 16
            for (int i = 0; i < nw_max; i++) {
                __m256i neg = _mm256_sub_epi16(
                    _mm256_setzero_si256(),
                    _mm256_slli_epi16(_mm256_loadu_si256((const __m256i *)row[i].sc),
                                      type == KQ_Q6_K ? 5 : 2));
#pragma GCC unroll 16
                for (int j = 0; j < nx_max; j++) {
                    __m256i bs = _mm256_loadu_si256((const __m256i *)yb[j]->bsums);
                    acc[i * nx_max + j] =
                        _mm256_add_epi32(acc[i * nx_max + j], _mm256_madd_epi16(neg, bs));
                }
            }
        __m256 fi = _mm256_cvtepi32_ps(kq_sum_pairs(acc, n_pairs));
        __m256 dx = _mm256_permutevar8x32_ps(_mm256_zextps128_ps256(_mm_loadu_ps(rd)), lane_i);
        __m256 dy = _mm256_permutevar8x32_ps(_mm256_zextps128_ps256(_mm_loadu_ps(ty)), lane_j);
        __m256 t = _mm256_mul_ps(_mm256_mul_ps(dx, dy), fi);
        if (has_min) {
            __m256i fmi;
            if (type == KQ_Q2_K) { /* isum_min = sum of the 16 mins times the 16 bsums */
                __m256i mv[QW * QX];
#pragma GCC unroll 16
                for (int i = 0; i < nw_max; i++)
#pragma GCC unroll 16
                    for (int j = 0; j < nx_max; j++)
                        mv[i * nx_max + j] =
                            _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)row[i].mn),
                                              _mm256_loadu_si256((const __m256i *)yb[j]->bsums));
                fmi = kq_sum_pairs(mv, n_pairs);
            } else { /* 8 mins times the sums of 32 (bsum pairs) */
                __m128i b2[QX], mv[QW * QX];
#pragma GCC unroll 16
                for (int j = 0; j < nx_max; j++) {
                    __m256i bs = _mm256_loadu_si256((const __m256i *)yb[j]->bsums);
                    __m256i s2 = _mm256_madd_epi16(bs, _mm256_set1_epi16(1)); /* 8 pair sums */
                    b2[j] = _mm_packs_epi32(_mm256_castsi256_si128(s2),
                                            _mm256_extracti128_si256(s2, 1));
                }
#pragma GCC unroll 16
                for (int i = 0; i < nw_max; i++)
#pragma GCC unroll 16
                    for (int j = 0; j < nx_max; j++)
                        mv[i * nx_max + j] =
                            _mm_madd_epi16(_mm_loadu_si128((const __m128i *)row[i].mn), b2[j]);
                fmi = kq_sum_pairs128(mv, n_pairs);
            }
            __m256 dm =
                _mm256_permutevar8x32_ps(_mm256_zextps128_ps256(_mm_loadu_ps(rdmin)), lane_i);
            __m256 fm = _mm256_cvtepi32_ps(fmi);
            t = _mm256_sub_ps(t, _mm256_mul_ps(_mm256_mul_ps(dm, dy), fm));
        }
        sum = _mm256_add_ps(sum, t);
    }
    float res[8];
    _mm256_storeu_ps(res, sum);
    for (int j = 0; j < n_x && j < nx_max; j++)
        for (int i = 0; i < n_w && i < nw_max; i++)
            out[(size_t)j * out_stride + (size_t)i] = res[i * nx_max + j];
}

static float q2_k_dot_q8_k_avx2(const void *w, const void *x, int64_t n) {
    float out;
    kq_tile(KQ_Q2_K, 1, 1, w, 0, x, 0, n, &out, 0, 1, 1);
    return out;
}
static float q3_k_dot_q8_k_avx2(const void *w, const void *x, int64_t n) {
    float out;
    kq_tile(KQ_Q3_K, 1, 1, w, 0, x, 0, n, &out, 0, 1, 1);
    return out;
}
static void q2_k_gemm_tile_avx2(const void *w, size_t ws, const void *x, size_t xs, int64_t k,
                                float *out, size_t os, int n_w, int n_x) {
    if (n_x == 1)
        kq_tile(KQ_Q2_K, QW, 1, w, ws, x, xs, k, out, os, n_w, n_x);
    else
        kq_tile(KQ_Q2_K, QW, QX, w, ws, x, xs, k, out, os, n_w, n_x);
}
static void q3_k_gemm_tile_avx2(const void *w, size_t ws, const void *x, size_t xs, int64_t k,
                                float *out, size_t os, int n_w, int n_x) {
    if (n_x == 1)
        kq_tile(KQ_Q3_K, QW, 1, w, ws, x, xs, k, out, os, n_w, n_x);
    else
        kq_tile(KQ_Q3_K, QW, QX, w, ws, x, xs, k, out, os, n_w, n_x);
}
static float q4_k_dot_q8_k_avx2(const void *w, const void *x, int64_t n) {
    float out;
    kq_tile(KQ_Q4_K, 1, 1, w, 0, x, 0, n, &out, 0, 1, 1);
    return out;
}
static float q5_k_dot_q8_k_avx2(const void *w, const void *x, int64_t n) {
    float out;
    kq_tile(KQ_Q5_K, 1, 1, w, 0, x, 0, n, &out, 0, 1, 1);
    return out;
}
static float q6_k_dot_q8_k_avx2(const void *w, const void *x, int64_t n) {
    float out;
    kq_tile(KQ_Q6_K, 1, 1, w, 0, x, 0, n, &out, 0, 1, 1);
    return out;
}
static float iq4_xs_dot_q8_k_avx2(const void *w, const void *x, int64_t n) {
    float out;
    kq_tile(KQ_IQ4_XS, 1, 1, w, 0, x, 0, n, &out, 0, 1, 1);
    return out;
}
static void q4_k_gemm_tile_avx2(const void *w, size_t ws, const void *x, size_t xs, int64_t k,
                                float *out, size_t os, int n_w, int n_x) {
    if (n_x == 1)
        kq_tile(KQ_Q4_K, QW, 1, w, ws, x, xs, k, out, os, n_w, n_x);
    else
        kq_tile(KQ_Q4_K, QW, QX, w, ws, x, xs, k, out, os, n_w, n_x);
}
static void q5_k_gemm_tile_avx2(const void *w, size_t ws, const void *x, size_t xs, int64_t k,
                                float *out, size_t os, int n_w, int n_x) {
    if (n_x == 1)
        kq_tile(KQ_Q5_K, QW, 1, w, ws, x, xs, k, out, os, n_w, n_x);
    else
        kq_tile(KQ_Q5_K, QW, QX, w, ws, x, xs, k, out, os, n_w, n_x);
}
static void q6_k_gemm_tile_avx2(const void *w, size_t ws, const void *x, size_t xs, int64_t k,
                                float *out, size_t os, int n_w, int n_x) {
    if (n_x == 1)
        kq_tile(KQ_Q6_K, QW, 1, w, ws, x, xs, k, out, os, n_w, n_x);
    else
        kq_tile(KQ_Q6_K, QW, QX, w, ws, x, xs, k, out, os, n_w, n_x);
}
static void iq4_xs_gemm_tile_avx2(const void *w, size_t ws, const void *x, size_t xs, int64_t k,
                                  float *out, size_t os, int n_w, int n_x) {
    if (n_x == 1)
        kq_tile(KQ_IQ4_XS, QW, 1, w, ws, x, xs, k, out, os, n_w, n_x);
    else
        kq_tile(KQ_IQ4_XS, QW, QX, w, ws, x, xs, k, out, os, n_w, n_x);
}

/* ============================================================================================
 * Dequantization: the f32 expressions of the *_dequantize_row_ref functions
 * ============================================================================================ */

INLINE __m256 bytes8_to_ps(const int8_t *p) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)));
}

static void q8_0_to_f32_avx2(const void *vx, float *y, int64_t n) {
    CHECK(n % QK8_0 == 0);
    const struct block_q8_0 *x = vx;
    for (int64_t ib = 0; ib < n / QK8_0; ib++) {
        __m256 d = _mm256_set1_ps(f16_to_f32(x[ib].d));
        for (int h = 0; h < 4; h++)
            _mm256_storeu_ps(y + ib * QK8_0 + 8 * h,
                             _mm256_mul_ps(d, bytes8_to_ps(x[ib].qs + 8 * h)));
    }
}

INLINE void nibble_blocks_to_f32(int iq4, const void *vx, float *y, int64_t n) {
    CHECK(n % QK4_0 == 0);
    const struct block_q4_0 *x = vx; /* same layout as block_iq4_nl */
    const __m128i m4 = _mm_set1_epi8(0x0f), eight = _mm_set1_epi8(8);
    const __m128i table = _mm_loadu_si128((const __m128i *)kvalues_iq4nl);
    for (int64_t ib = 0; ib < n / QK4_0; ib++) {
        __m256 d = _mm256_set1_ps(f16_to_f32(x[ib].d));
        __m128i v = _mm_loadu_si128((const __m128i *)x[ib].qs);
        __m128i lo = _mm_and_si128(v, m4), hi = _mm_and_si128(_mm_srli_epi16(v, 4), m4);
        lo = iq4 ? _mm_shuffle_epi8(table, lo) : _mm_sub_epi8(lo, eight);
        hi = iq4 ? _mm_shuffle_epi8(table, hi) : _mm_sub_epi8(hi, eight);
        int8_t q[32];
        _mm_storeu_si128((__m128i *)q, lo);
        _mm_storeu_si128((__m128i *)(q + 16), hi);
        for (int h = 0; h < 4; h++)
            _mm256_storeu_ps(y + ib * QK4_0 + 8 * h, _mm256_mul_ps(d, bytes8_to_ps(q + 8 * h)));
    }
}

static void q5_0_to_f32_avx2(const void *vx, float *y, int64_t n) {
    CHECK(n % QK5_0 == 0);
    const struct block_q5_0 *x = vx;
    for (int64_t ib = 0; ib < n / QK5_0; ib++) {
        __m256 d = _mm256_set1_ps(f16_to_f32(x[ib].d));
        int8_t q[32];
        _mm256_storeu_si256((__m256i *)q,
                            fam_weights(FAM_Q5_0, (const char *)&x[ib], _mm256_setzero_si256()));
        for (int h = 0; h < 4; h++)
            _mm256_storeu_ps(y + ib * QK5_0 + 8 * h, _mm256_mul_ps(d, bytes8_to_ps(q + 8 * h)));
    }
}

/* Q4_1, Q5_1: (float)q * d + m */
INLINE void min_blocks_to_f32(int fam, const void *vx, float *y, int64_t n) {
    CHECK(n % 32 == 0);
    size_t bytes = fam_block_bytes(fam);
    for (int64_t ib = 0; ib < n / 32; ib++) {
        const char *blk = (const char *)vx + (size_t)ib * bytes;
        uint16_t dm[2];
        memcpy(dm, blk, sizeof(dm));
        __m256 d = _mm256_set1_ps(f16_to_f32(dm[0])), m = _mm256_set1_ps(f16_to_f32(dm[1]));
        int8_t q[32];
        _mm256_storeu_si256((__m256i *)q, fam_weights(fam, blk, _mm256_setzero_si256()));
        for (int h = 0; h < 4; h++)
            _mm256_storeu_ps(y + ib * 32 + 8 * h,
                             _mm256_add_ps(_mm256_mul_ps(bytes8_to_ps(q + 8 * h), d), m));
    }
}

static void q4_1_to_f32_avx2(const void *x, float *y, int64_t n) {
    min_blocks_to_f32(FAM_Q4_1, x, y, n);
}
static void q5_1_to_f32_avx2(const void *x, float *y, int64_t n) {
    min_blocks_to_f32(FAM_Q5_1, x, y, n);
}

static void q4_0_to_f32_avx2(const void *x, float *y, int64_t n) {
    nibble_blocks_to_f32(0, x, y, n);
}
static void iq4_nl_to_f32_avx2(const void *x, float *y, int64_t n) {
    nibble_blocks_to_f32(1, x, y, n);
}

INLINE void kq_to_f32(int type, const void *vx, float *y, int64_t n) {
    CHECK(n % QK_K == 0);
    const size_t wb = kq_block_bytes(type);
    for (int64_t ib = 0; ib < n / QK_K; ib++) {
        const char *blk = (const char *)vx + (size_t)ib * wb;
        struct kq_row r;
        kq_row_load(type, blk, &r);
        for (int g = 0; g < QK_K / 32; g++) {
            __m256i q = kq_part_weights(type, blk, g);
            if (type == KQ_Q6_K) q = _mm256_sub_epi8(q, _mm256_set1_epi8(32));
            if (type == KQ_Q3_K) q = _mm256_sub_epi8(q, _mm256_set1_epi8(4));
            int8_t qb[32];
            _mm256_storeu_si256((__m256i *)qb, q);
            for (int h = 0; h < 4; h++) {
                __m256 v = bytes8_to_ps(qb + 8 * h);
                float *dst = y + ib * QK_K + 32 * g + 8 * h;
                if (type == KQ_Q6_K || type == KQ_Q3_K) {
                    float ds = r.d * (float)r.sc[2 * g + h / 2];
                    _mm256_storeu_ps(dst, _mm256_mul_ps(_mm256_set1_ps(ds), v));
                } else if (type == KQ_IQ4_XS) {
                    float dl = r.d * (float)r.sc[g];
                    _mm256_storeu_ps(dst, _mm256_mul_ps(_mm256_set1_ps(dl), v));
                } else {
                    int s16 = type == KQ_Q2_K ? 2 * g + h / 2 : g;
                    float ds = r.d * (float)r.sc[s16], ms = r.dmin * (float)r.mn[s16];
                    _mm256_storeu_ps(dst, _mm256_sub_ps(_mm256_mul_ps(_mm256_set1_ps(ds), v),
                                                        _mm256_set1_ps(ms)));
                }
            }
        }
    }
}

static void q2_k_to_f32_avx2(const void *x, float *y, int64_t n) {
    kq_to_f32(KQ_Q2_K, x, y, n);
}
static void q3_k_to_f32_avx2(const void *x, float *y, int64_t n) {
    kq_to_f32(KQ_Q3_K, x, y, n);
}
static void q4_k_to_f32_avx2(const void *x, float *y, int64_t n) {
    kq_to_f32(KQ_Q4_K, x, y, n);
}
static void q5_k_to_f32_avx2(const void *x, float *y, int64_t n) {
    kq_to_f32(KQ_Q5_K, x, y, n);
}
static void q6_k_to_f32_avx2(const void *x, float *y, int64_t n) {
    kq_to_f32(KQ_Q6_K, x, y, n);
}
static void iq4_xs_to_f32_avx2(const void *x, float *y, int64_t n) {
    kq_to_f32(KQ_IQ4_XS, x, y, n);
}

/* ============================================================================================
 * The table
 * ============================================================================================ */

static void set_dot(struct cpu_kernels *k, enum dtype t, cpu_vec_dot_fn dot, cpu_gemm_tile_fn tile,
                    int tw, int tx) {
    k->vec_dot[t] = dot;
    k->gemm_tile[t] = tile;
    k->gemm_tile_w[t] = tw;
    k->gemm_tile_x[t] = tx;
}

int cpu_kernels_fill_avx2(struct cpu_kernels *k, const struct cpu_features *f) {
    memset(k, 0, sizeof(*k));
    k->name = "avx2";
    set_dot(k, DTYPE_F32, f32_dot_f32_avx2, f32_gemm_tile_avx2, FW, FX);
    set_dot(k, DTYPE_F16, f16_dot_f16_avx2, f16_gemm_tile_avx2, FW, FX);
    set_dot(k, DTYPE_BF16, bf16_dot_bf16_avx2, bf16_gemm_tile_avx2, FW, FX);
    set_dot(k, DTYPE_Q8_0, q8_0_dot_q8_0_avx2, q8_0_gemm_tile_avx2, QW, QX);
    set_dot(k, DTYPE_Q4_0, q4_0_dot_q8_0_avx2, q4_0_gemm_tile_avx2, QW, QX);
    set_dot(k, DTYPE_IQ4_NL, iq4_nl_dot_q8_0_avx2, iq4_nl_gemm_tile_avx2, QW, QX);
    set_dot(k, DTYPE_Q5_0, q5_0_dot_q8_0_avx2, q5_0_gemm_tile_avx2, QW, QX);
    set_dot(k, DTYPE_Q4_1, q4_1_dot_q8_1_avx2, q4_1_gemm_tile_avx2, QW, QX);
    set_dot(k, DTYPE_Q5_1, q5_1_dot_q8_1_avx2, q5_1_gemm_tile_avx2, QW, QX);
    set_dot(k, DTYPE_Q2_K, q2_k_dot_q8_k_avx2, q2_k_gemm_tile_avx2, QW, QX);
    set_dot(k, DTYPE_Q3_K, q3_k_dot_q8_k_avx2, q3_k_gemm_tile_avx2, QW, QX);
    set_dot(k, DTYPE_Q4_K, q4_k_dot_q8_k_avx2, q4_k_gemm_tile_avx2, QW, QX);
    set_dot(k, DTYPE_Q5_K, q5_k_dot_q8_k_avx2, q5_k_gemm_tile_avx2, QW, QX);
    set_dot(k, DTYPE_Q6_K, q6_k_dot_q8_k_avx2, q6_k_gemm_tile_avx2, QW, QX);
    set_dot(k, DTYPE_IQ4_XS, iq4_xs_dot_q8_k_avx2, iq4_xs_gemm_tile_avx2, QW, QX);
    k->from_float[DTYPE_Q8_0] = q8_0_quantize_row_act_avx2;
    k->from_float[DTYPE_Q8_K] = q8_k_quantize_row_act_avx2;
    k->from_float[DTYPE_Q8_1] = q8_1_quantize_row_act_avx2;
    k->from_float[DTYPE_F16] = f16_from_f32_avx2;
    k->from_float[DTYPE_BF16] = bf16_from_f32_avx2;
    k->to_float[DTYPE_F16] = f16_to_f32_avx2;
    k->to_float[DTYPE_BF16] = bf16_to_f32_avx2;
    k->to_float[DTYPE_Q8_0] = q8_0_to_f32_avx2;
    k->to_float[DTYPE_Q4_0] = q4_0_to_f32_avx2;
    k->to_float[DTYPE_IQ4_NL] = iq4_nl_to_f32_avx2;
    k->to_float[DTYPE_Q5_0] = q5_0_to_f32_avx2;
    k->to_float[DTYPE_Q4_1] = q4_1_to_f32_avx2;
    k->to_float[DTYPE_Q5_1] = q5_1_to_f32_avx2;
    k->to_float[DTYPE_Q2_K] = q2_k_to_f32_avx2;
    k->to_float[DTYPE_Q3_K] = q3_k_to_f32_avx2;
    k->to_float[DTYPE_Q4_K] = q4_k_to_f32_avx2;
    k->to_float[DTYPE_Q5_K] = q5_k_to_f32_avx2;
    k->to_float[DTYPE_Q6_K] = q6_k_to_f32_avx2;
    k->to_float[DTYPE_IQ4_XS] = iq4_xs_to_f32_avx2;
    k->attn_dot_f16 = attn_dot_f16_avx2;
    k->attn_mad_f16 = attn_mad_f16_avx2;
    k->attn_scale_f16 = attn_scale_f16_avx2;
    k->attn_dots_f16 = attn_dots_f16_avx2;
    k->f32_id_tile = f32_id_tile_avx2;
    k->swiglu = swiglu_avx2;
    k->silu = silu_avx2;
    k->rope_pairs = rope_pairs_avx2;
    k->gdn_rows = gdn_rows_avx2;
    k->f32_gemm_seq = f32_gemm_seq_avx2;
    k->attn_rows_f16 = attn_rows_f16_avx2;
    return 0;
}
