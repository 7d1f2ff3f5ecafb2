/* kernels_avx512.c: AVX-512 kernels (F/BW/VL/DQ + VNNI + BF16), compiled with those flags only
 * for this file (Makefile ISA_AVX512). Entries not filled here fall back to the scalar table.
 *
 * Every kernel computes what its scalar twin in src/tensor (or kernels_scalar.c) computes, bit
 * for bit; tests/test_kernels.c checks that. The dots and gemm tiles of one dtype are one
 * always-inline kernel instantiated for a few shapes: 1 x 1 (vec_dot), 4 weight rows x 1 token
 * (decode) and 4 x 4 (prompt processing; 4 x 8 with two tokens per vector for the Q8_0 family;
 * 16 x 64 on AMX for the K-quants, kernels_amx.c). A smaller tile runs the full-size kernel with
 * its last row / token repeated and drops the repeated results, which keeps the register tiles
 * fixed and small enough for both gcc and clang to keep in registers.
 *
 * Sections: helpers; F32/F16/BF16; conversions; attention; activation quantizers; the Q8_0
 * family (Q8_0, Q4_0, Q5_0, IQ4_NL, Q4_1, Q5_1); K-quants and IQ4_XS (VNNI, then the AMX
 * wrappers); dequantization; the table.
 */
#include "cpu_kernels.h"

#include "../../base/error.h"
#include "../../tensor/quant.h"

#include <immintrin.h>
#include <math.h>
#include <string.h>

#define INLINE static inline __attribute__((always_inline))

enum { TILE_W = 4, TILE_X = 4 };

/* ============================================================================================
 * Helpers
 * The horizontal sums follow the scalar trees exactly: 16 lanes are added 8+8, then 4+4, then
 * (0+2)+(1+3) (f32_dot_f32_ref); 8 lanes 4+4 then the same (quant_sum_lanes8).
 * ============================================================================================ */

INLINE float hsum_ps8(__m256 v) {
    __m128 b = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    __m128 c = _mm_add_ps(b, _mm_movehl_ps(b, b)); /* c0 = b0 + b2, c1 = b1 + b3 */
    return _mm_cvtss_f32(_mm_add_ss(c, _mm_movehdup_ps(c)));
}

INLINE float hsum_ps16(__m512 v) {
    return hsum_ps8(_mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1)));
}

/* hsum_ps16 of four vectors side by side: [hsum(a), hsum(b), hsum(c), hsum(d)], the same tree. */
INLINE __m128 hsum4_ps16(__m512 a, __m512 b, __m512 c, __m512 d) {
    /* lanes l + (l + 8): 128-bit lanes [x.0 + x.2, x.1 + x.3] of each vector, two per vector */
    __m512 ab = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x44), _mm512_shuffle_f32x4(a, b, 0xee));
    __m512 cd = _mm512_add_ps(_mm512_shuffle_f32x4(c, d, 0x44), _mm512_shuffle_f32x4(c, d, 0xee));
    /* lanes l + (l + 4): 128-bit lane r holds vector r's four */
    __m512 u =
        _mm512_add_ps(_mm512_shuffle_f32x4(ab, cd, 0x88), _mm512_shuffle_f32x4(ab, cd, 0xdd));
    /* (0 + 2) + (1 + 3) within each 128-bit lane */
    __m512 e = _mm512_add_ps(u, _mm512_permute_ps(u, _MM_SHUFFLE(1, 0, 3, 2)));
    __m512 f = _mm512_add_ps(e, _mm512_permute_ps(e, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm512_castps512_ps128(_mm512_permutexvar_ps(
        _mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), f));
}

INLINE float f16_to_f32(uint16_t h) {
    return _cvtsh_ss(h);
}

INLINE __m512 load_f16x16(const void *p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
}

INLINE __m512 load_bf16x16(const void *p) {
    __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
}

/* 32 bytes at a in the low half, 32 bytes at b in the high half. */
INLINE __m512i load_2x256(const char *a, const char *b) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)a)),
                              _mm256_loadu_si256((const __m256i *)b), 1);
}

/* Row pointers of a tile: row r of n (r >= n repeats the last row). */
INLINE const char *tile_row(const void *base, size_t stride, int r, int n) {
    return (const char *)base + (size_t)(r < n ? r : n - 1) * stride;
}

/* ============================================================================================
 * F32, F16, BF16: dots and tiles
 * One 16-lane FMA accumulator per (row, token), as f32_dot_f32_ref; the tail past the last
 * multiple of 16 in double. The tile is FMA-bound: 4 + 4 loads feed 16 FMAs per step.
 * ============================================================================================ */

enum float_kind { KIND_F32, KIND_F16, KIND_BF16 };

INLINE __m512 load_kind(int kind, const char *p, int64_t i) {
    if (kind == KIND_F32) return _mm512_loadu_ps((const float *)p + i);
    if (kind == KIND_F16) return load_f16x16((const uint16_t *)p + i);
    return load_bf16x16((const uint16_t *)p + i);
}

/* Elements i.. of the lanes in m (the others 0). */
INLINE __m512 load_kind_mask(int kind, const char *p, int64_t i, __mmask16 m) {
    if (kind == KIND_F32) return _mm512_maskz_loadu_ps(m, (const float *)p + i);
    __m256i h = _mm256_maskz_loadu_epi16(m, (const uint16_t *)p + i);
    if (kind == KIND_F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

INLINE float scalar_kind(int kind, const char *p, int64_t i) {
    if (kind == KIND_F32) return ((const float *)p)[i];
    if (kind == KIND_F16) return f16_to_f32(((const uint16_t *)p)[i]);
    return bf16_to_fp32(((const uint16_t *)p)[i]);
}

INLINE float float_finish(int kind, __m512 acc, const char *w, const char *x, int64_t n16,
                          int64_t k) {
    double sum = (double)hsum_ps16(acc);
    for (int64_t i = n16; i < k; i++)
        sum += (double)(scalar_kind(kind, w, i) * scalar_kind(kind, x, i));
    return (float)sum;
}

INLINE void float_tile(int kind, int nw_max, int nx_max, const void *w, size_t w_stride,
                       const void *x, size_t x_stride, int64_t k, float *out, size_t out_stride,
                       int n_w, int n_x) {
    const char *wr[TILE_W], *xr[TILE_X];
    __m512 acc[TILE_W][TILE_X];
#pragma GCC unroll 16
    for (int i = 0; i < nw_max; i++) wr[i] = tile_row(w, w_stride, i, n_w);
#pragma GCC unroll 16
    for (int j = 0; j < nx_max; j++) xr[j] = tile_row(x, x_stride, j, n_x);
#pragma GCC unroll 16
    for (int i = 0; i < nw_max; i++)
#pragma GCC unroll 16
        for (int j = 0; j < nx_max; j++) acc[i][j] = _mm512_setzero_ps();
    int64_t n16 = k & ~(int64_t)15;
    for (int64_t t = 0; t < n16; t += 16) {
        __m512 xv[TILE_X];
#pragma GCC unroll 16
        for (int j = 0; j < nx_max; j++) xv[j] = load_kind(kind, xr[j], t);
#pragma GCC unroll 16
        for (int i = 0; i < nw_max; i++) {
            __m512 wv = load_kind(kind, wr[i], t);
#pragma GCC unroll 16
            for (int j = 0; j < nx_max; j++) acc[i][j] = _mm512_fmadd_ps(wv, xv[j], acc[i][j]);
        }
    }
    if (nw_max == 4) { /* the four rows' sums side by side (short k: the sums are the cost) */
        int nt = (int)(k - n16); /* the tail: each row's f32 products added in double, in order,
                                    the four rows in four double lanes */
        __mmask16 tm = (__mmask16)((1u << nt) - 1);
        for (int j = 0; j < n_x && j < nx_max; j++) {
            __m128 h = hsum4_ps16(acc[0][j], acc[1][j], acc[2][j], acc[3][j]);
            if (nt > 0) {
                float prod[4][16];
                __m512 xv = load_kind_mask(kind, xr[j], n16, tm);
                for (int i = 0; i < 4; i++)
                    _mm512_storeu_ps(prod[i],
                                     _mm512_mul_ps(load_kind_mask(kind, wr[i], n16, tm), xv));
                __m256d sum = _mm256_cvtps_pd(h);
                for (int t = 0; t < nt; t++)
                    sum = _mm256_add_pd(sum, _mm256_cvtps_pd(_mm_setr_ps(prod[0][t], prod[1][t],
                                                                         prod[2][t], prod[3][t])));
                h = _mm256_cvtpd_ps(sum);
            }
            float hv[4];
            _mm_storeu_ps(hv, h);
            for (int i = 0; i < n_w && i < 4; i++) out[(size_t)j * out_stride + (size_t)i] = hv[i];
        }
        return;
    }
    for (int j = 0; j < n_x && j < nx_max; j++)
        for (int i = 0; i < n_w && i < nw_max; i++)
            out[(size_t)j * out_stride + (size_t)i] =
                float_finish(kind, acc[i][j], wr[i], xr[j], n16, k);
}

static float f32_dot_f32_avx512(const void *w, const void *x, int64_t n) {
    float out;
    float_tile(KIND_F32, 1, 1, w, 0, x, 0, n, &out, 0, 1, 1);
    return out;
}
static float f16_dot_f16_avx512(const void *w, const void *x, int64_t n) {
    float out;
    float_tile(KIND_F16, 1, 1, w, 0, x, 0, n, &out, 0, 1, 1);
    return out;
}
static float bf16_dot_bf16_avx512(const void *w, const void *x, int64_t n) {
    float out;
    float_tile(KIND_BF16, 1, 1, w, 0, x, 0, n, &out, 0, 1, 1);
    return out;
}

static void f32_gemm_tile_avx512(const void *w, size_t ws, const void *x, size_t xs, int64_t k,
                                 float *out, size_t os, int n_w, int n_x) {
    if (n_x == 1)
        float_tile(KIND_F32, TILE_W, 1, w, ws, x, xs, k, out, os, n_w, n_x);
    else
        float_tile(KIND_F32, TILE_W, TILE_X, w, ws, x, xs, k, out, os, n_w, n_x);
}
static void f16_gemm_tile_avx512(const void *w, size_t ws, const void *x, size_t xs, int64_t k,
                                 float *out, size_t os, int n_w, int n_x) {
    if (n_x == 1)
        float_tile(KIND_F16, TILE_W, 1, w, ws, x, xs, k, out, os, n_w, n_x);
    else
        float_tile(KIND_F16, TILE_W, TILE_X, w, ws, x, xs, k, out, os, n_w, n_x);
}
static void bf16_gemm_tile_avx512(const void *w, size_t ws, const void *x, size_t xs, int64_t k,
                                  float *out, size_t os, int n_w, int n_x) {
    if (n_x == 1)
        float_tile(KIND_BF16, TILE_W, 1, w, ws, x, xs, k, out, os, n_w, n_x);
    else
        float_tile(KIND_BF16, TILE_W, TILE_X, w, ws, x, xs, k, out, os, n_w, n_x);
}

/* ============================================================================================
 * F16 and BF16 conversions
 * vcvtps2ph with round-to-nearest-even is fp32_to_fp16 exactly (subnormals, overflow, NaN).
 * BF16 rounds with integer arithmetic: vcvtneps2bf16 would flush subnormal inputs to zero.
 * ============================================================================================ */

static void f16_from_f32_avx512(const float *x, void *vy, int64_t n) {
    uint16_t *y = vy;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256(
            (__m256i *)(y + i),
            _mm512_cvtps_ph(_mm512_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    if (i < n) { /* the tail in one masked step (a head of 8 is all tail) */
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        _mm256_mask_storeu_epi16(y + i, m,
                                 _mm512_cvtps_ph(_mm512_maskz_loadu_ps(m, x + i),
                                                 _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
}

static void f16_to_f32_avx512(const void *vx, float *y, int64_t n) {
    const uint16_t *x = vx;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, load_f16x16(x + i));
    for (; i < n; i++) y[i] = f16_to_f32(x[i]);
}

static void bf16_from_f32_avx512(const float *x, void *vy, int64_t n) {
    uint16_t *y = vy;
    const __m512i abs_mask = _mm512_set1_epi32(0x7fffffff), inf = _mm512_set1_epi32(0x7f800000);
    const __m512i bias = _mm512_set1_epi32(0x7fff), one = _mm512_set1_epi32(1);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512i u = _mm512_loadu_si512(x + i);
        __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, abs_mask), inf);
        __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), one);
        __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(bias, lsb)), 16);
        __m512i q = _mm512_or_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(64));
        r = _mm512_mask_mov_epi32(r, nan, q);
        _mm256_storeu_si256((__m256i *)(y + i), _mm512_cvtepi32_epi16(r));
    }
    for (; i < n; i++) y[i] = fp32_to_bf16(x[i]);
}

static void bf16_to_f32_avx512(const void *vx, float *y, int64_t n) {
    const uint16_t *x = vx;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, load_bf16x16(x + i));
    for (; i < n; i++) y[i] = bf16_to_fp32(x[i]);
}

/* ============================================================================================
 * Attention on an F16 cache (attn_*_f16_ref)
 * ============================================================================================ */

static float attn_dot_f16_avx512(const uint16_t *q, const uint16_t *k, int64_t n) {
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int64_t n64 = n & ~(int64_t)63;
    for (int64_t i = 0; i < n64; i += 64) {
        a0 = _mm512_fmadd_ps(load_f16x16(q + i), load_f16x16(k + i), a0);
        a1 = _mm512_fmadd_ps(load_f16x16(q + i + 16), load_f16x16(k + i + 16), a1);
        a2 = _mm512_fmadd_ps(load_f16x16(q + i + 32), load_f16x16(k + i + 32), a2);
        a3 = _mm512_fmadd_ps(load_f16x16(q + i + 48), load_f16x16(k + i + 48), a3);
    }
    __m512 s = _mm512_add_ps(_mm512_add_ps(a0, a2), _mm512_add_ps(a1, a3));
    double sum = (double)hsum_ps16(s);
    for (int64_t i = n64; i < n; i++) sum += (double)(f16_to_f32(q[i]) * f16_to_f32(k[i]));
    return (float)sum;
}

/* Keys four at a time with q in registers (n a multiple of 64 up to 256, else key by key). Each
 * key's four accumulators reduce to one vector, (a0 + a2) + (a1 + a3); the four vectors then go
 * through the 8+8, 4+4, (0+2)+(1+3) tree side by side. */
/* Short heads (n < 64, e.g. head_dim 8): attn_dot_f16 sums the f32 products one by one in
 * double. Eight keys go side by side, one double lane each: the products of 16 lanes at a time
 * (the same f32 roundings) into a buffer, then per element the same double adds in the same
 * order, so each key's sum is the same bits. */
static void attn_dots_f16_short(const uint16_t *q, const uint16_t *k, size_t k_stride, int64_t n,
                                float *out, int64_t n_k) {
    float prod[8 * 64];
    const __m256i idx =
        _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32((int)n));
    int64_t j = 0;
    for (; j + 8 <= n_k; j += 8) {
        for (int r = 0; r < 8; r++) {
            const uint16_t *kr = (const uint16_t *)((const char *)k + (size_t)(j + r) * k_stride);
            for (int64_t i = 0; i < n; i += 16) {
                __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
                __m512 p = _mm512_mul_ps(_mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, q + i)),
                                         _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, kr + i)));
                _mm512_mask_storeu_ps(prod + r * n + i, m, p);
            }
        }
        __m512d sum = _mm512_setzero_pd();
        for (int64_t i = 0; i < n; i++)
            sum = _mm512_add_pd(sum, _mm512_cvtps_pd(_mm256_i32gather_ps(prod + i, idx, 4)));
        _mm256_storeu_ps(out + j, _mm512_cvtpd_ps(sum));
    }
    for (; j < n_k; j++)
        out[j] =
            attn_dot_f16_avx512(q, (const uint16_t *)((const char *)k + (size_t)j * k_stride), n);
}

static void attn_dots_f16_avx512(const uint16_t *q, const uint16_t *k, size_t k_stride, int64_t n,
                                 float *out, int64_t n_k) {
    if (n > 0 && n < 64) {
        attn_dots_f16_short(q, k, k_stride, n, out, n_k);
        return;
    }
    if (n % 64 != 0 || n > 256 || n == 0) {
        for (int64_t j = 0; j < n_k; j++)
            out[j] = attn_dot_f16_avx512(
                q, (const uint16_t *)((const char *)k + (size_t)j * k_stride), n);
        return;
    }
    __m512 qf[16];
    int steps = (int)(n / 64);
    for (int i = 0; i < 4 * steps; i++) qf[i] = load_f16x16(q + 16 * i);
    int64_t j = 0;
    for (; j + 4 <= n_k; j += 4) {
        __m512 v[4];
#pragma GCC unroll 4
        for (int r = 0; r < 4; r++) {
            const uint16_t *kr = (const uint16_t *)((const char *)k + (size_t)(j + r) * k_stride);
            __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            for (int s = 0; s < steps; s++) {
                a0 = _mm512_fmadd_ps(qf[4 * s], load_f16x16(kr + 64 * s), a0);
                a1 = _mm512_fmadd_ps(qf[4 * s + 1], load_f16x16(kr + 64 * s + 16), a1);
                a2 = _mm512_fmadd_ps(qf[4 * s + 2], load_f16x16(kr + 64 * s + 32), a2);
                a3 = _mm512_fmadd_ps(qf[4 * s + 3], load_f16x16(kr + 64 * s + 48), a3);
            }
            v[r] = _mm512_add_ps(_mm512_add_ps(a0, a2), _mm512_add_ps(a1, a3));
        }
        /* lanes l + (l + 8): 128-bit lanes [x.0 + x.2, x.1 + x.3] of key x, two keys per vector */
        __m512 ab = _mm512_add_ps(_mm512_shuffle_f32x4(v[0], v[1], 0x44),
                                  _mm512_shuffle_f32x4(v[0], v[1], 0xee));
        __m512 cd = _mm512_add_ps(_mm512_shuffle_f32x4(v[2], v[3], 0x44),
                                  _mm512_shuffle_f32x4(v[2], v[3], 0xee));
        /* lanes l + (l + 4): 128-bit lane r holds key r's four */
        __m512 u =
            _mm512_add_ps(_mm512_shuffle_f32x4(ab, cd, 0x88), _mm512_shuffle_f32x4(ab, cd, 0xdd));
        /* (0 + 2) + (1 + 3) within each 128-bit lane */
        __m512 c = _mm512_add_ps(u, _mm512_permute_ps(u, _MM_SHUFFLE(1, 0, 3, 2)));
        __m512 d = _mm512_add_ps(c, _mm512_permute_ps(c, _MM_SHUFFLE(2, 3, 0, 1)));
        __m512 r4 = _mm512_permutexvar_ps(
            _mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), d);
        _mm_storeu_ps(out + j, _mm512_castps512_ps128(r4));
    }
    for (; j < n_k; j++)
        out[j] =
            attn_dot_f16_avx512(q, (const uint16_t *)((const char *)k + (size_t)j * k_stride), n);
}

static void attn_mad_f16_avx512(uint16_t *acc, const uint16_t *v, float s, int64_t n) {
    const __m512 vs = _mm512_set1_ps(s);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 r = _mm512_fmadd_ps(load_f16x16(v + i), vs, load_f16x16(acc + i));
        _mm256_storeu_si256((__m256i *)(acc + i),
                            _mm512_cvtps_ph(r, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
    if (i < n) { /* the tail in one masked step (head_dim 8 is all tail): the same fma and RNE */
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        __m512 r = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, v + i)), vs,
                                   _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, acc + i)));
        _mm256_mask_storeu_epi16(acc + i, m,
                                 _mm512_cvtps_ph(r, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
}

static void attn_scale_f16_avx512(uint16_t *acc, float s, int64_t n) {
    const __m512 vs = _mm512_set1_ps(s);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 r = _mm512_mul_ps(load_f16x16(acc + i), vs);
        _mm256_storeu_si256((__m256i *)(acc + i),
                            _mm512_cvtps_ph(r, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        __m512 r = _mm512_mul_ps(_mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, acc + i)), vs);
        _mm256_mask_storeu_epi16(acc + i, m,
                                 _mm512_cvtps_ph(r, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
}

/* ---- gated delta rule (gdn_rows_ref); its dots are ggml_vec_dot_f32's (f32_id_dot_avx512) ---- */

static float f32_id_dot_avx512(const float *w, const float *x, int64_t n);

static void gdn_rows_avx512(float *S, int dk, int dv, const float *kn, const float *qn,
                            const float *v, float beta, float decay, float scale, float *out) {
    int n64 = dk & ~63, n16 = dk & ~15;
    const __m512 vdecay = _mm512_set1_ps(decay);
    for (int jv = 0; jv < dv; jv++) {
        float *s = S + (size_t)jv * dk;
        int i = 0;
        for (; i < n16; i += 16)
            _mm512_storeu_ps(s + i, _mm512_mul_ps(_mm512_loadu_ps(s + i), vdecay));
        for (; i < dk; i++) s[i] *= decay;
        float d = (v[jv] - f32_id_dot_avx512(s, kn, dk)) * beta;
        const __m512 vd = _mm512_set1_ps(d);
        for (i = 0; i < n64; i += 16)
            _mm512_storeu_ps(s + i,
                             _mm512_fmadd_ps(_mm512_loadu_ps(kn + i), vd, _mm512_loadu_ps(s + i)));
        for (; i < dk; i++) s[i] += kn[i] * d;
        out[jv] = f32_id_dot_avx512(s, qn, dk) * scale;
    }
}

/* ---- the fused update (attn_rows_f16_ref) ---- */

/* attn_exp_ref on 8 double lanes. */
INLINE __m256 attn_exp8_pd(__m256 xf) {
    const __m512i tab_lo = _mm512_loadu_si512(attn_exp_tab),
                  tab_hi = _mm512_loadu_si512(attn_exp_tab + 8);
    const __m512i tab_lo2 = _mm512_loadu_si512(attn_exp_tab + 16),
                  tab_hi2 = _mm512_loadu_si512(attn_exp_tab + 24);
    __m512d x = _mm512_cvtps_pd(xf);
    __m512d kd = _mm512_add_pd(_mm512_mul_pd(_mm512_set1_pd(ATTN_EXP_INVLN2N), x),
                               _mm512_set1_pd(ATTN_EXP_SHIFT));
    __m512i ki = _mm512_castpd_si512(kd);
    kd = _mm512_sub_pd(kd, _mm512_set1_pd(ATTN_EXP_SHIFT));
    __m512d r = _mm512_fmadd_pd(_mm512_set1_pd(ATTN_EXP_INVLN2N), x,
                                _mm512_sub_pd(_mm512_setzero_pd(), kd));
    __m512i idx = _mm512_and_si512(ki, _mm512_set1_epi64(31));
    __m512i t0 = _mm512_permutex2var_epi64(tab_lo, idx, tab_hi);   /* entries 0..15 */
    __m512i t1 = _mm512_permutex2var_epi64(tab_lo2, idx, tab_hi2); /* entries 16..31 */
    __mmask8 upper = _mm512_test_epi64_mask(idx, _mm512_set1_epi64(16));
    __m512i t = _mm512_add_epi64(_mm512_mask_mov_epi64(t0, upper, t1), _mm512_slli_epi64(ki, 47));
    __m512d p = _mm512_fmadd_pd(
        _mm512_fmadd_pd(_mm512_set1_pd(ATTN_EXP_C0), r, _mm512_set1_pd(ATTN_EXP_C1)),
        _mm512_mul_pd(r, r), _mm512_fmadd_pd(_mm512_set1_pd(ATTN_EXP_C2), r, _mm512_set1_pd(1.0)));
    __m256 y = _mm512_cvtpd_ps(_mm512_mul_pd(p, _mm512_castsi512_pd(t)));
    __mmask8 low = _mm256_cmp_ps_mask(xf, _mm256_set1_ps(ATTN_EXP_MIN), _CMP_LT_OQ);
    y = _mm256_mask_mov_ps(y, low, _mm256_setzero_ps());
    __mmask8 nan = _mm256_cmp_ps_mask(xf, xf, _CMP_UNORD_Q);
    return _mm256_mask_add_ps(y, nan, xf, xf);
}

/* attn_exp_ref on 16 lanes (bit for bit: the same double operations per lane). */
INLINE __m512 attn_exp16(__m512 x) {
    __m256 lo = attn_exp8_pd(_mm512_castps512_ps256(x));
    __m256 hi = attn_exp8_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1)));
    return _mm512_insertf32x8(_mm512_castps256_ps512(lo), hi, 1);
}

static void attn_exp_n_avx512(float *x, int n) {
    for (int i = 0; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(x + i, m, attn_exp16(_mm512_maskz_loadu_ps(m, x + i)));
    }
}

/* Lanes moved up by d (a constant), the low d lanes from fill's top lanes. */
#define SHIFT_IN_PS(x, fill, d)                                                                    \
    _mm512_castsi512_ps(                                                                           \
        _mm512_alignr_epi32(_mm512_castps_si512(x), _mm512_castps_si512(fill), 16 - (d)))

INLINE __m512 round_f16(__m512 x) {
    return _mm512_cvtph_ps(_mm512_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

#define SMALL_BLOCK 64 /* positions per block of the register path */

/* Heads of up to 16 elements: each row's accumulator lives in a register (f32 lanes holding f16
 * values) for the whole call, and NR rows go in turn per position so their chains overlap. Scores
 * of 8 keys at a time: the keys transposed to 8 double lanes per element, then per row one double
 * fma per element in element order (the f16 products are exact, so fma == add of the product, as
 * attn_dot_f16_ref adds them in double for n < 64). */
/* Keys of 8 elements, nk <= 8 of them st bytes apart (the others read as 0): kt[i] = element i
 * of the 8 keys as doubles. Two 16-bit permutes transpose the 8 x 8 f16 block. */
INLINE void transpose_keys8(const char *kb, size_t st, int nk, __m512d *kt) {
    static const uint16_t idx[2][32] = {
        {0, 8,  16, 24, 32, 40, 48, 56, 1, 9,  17, 25, 33, 41, 49, 57,
         2, 10, 18, 26, 34, 42, 50, 58, 3, 11, 19, 27, 35, 43, 51, 59},
        {4, 12, 20, 28, 36, 44, 52, 60, 5, 13, 21, 29, 37, 45, 53, 61,
         6, 14, 22, 30, 38, 46, 54, 62, 7, 15, 23, 31, 39, 47, 55, 63}};
    __m128i k[8];
    for (int c = 0; c < 8; c++)
        k[c] = _mm_maskz_loadu_epi16(c < nk ? (__mmask8)0xff : 0, kb + (size_t)c * st);
    __m512i za = _mm512_inserti32x4(
        _mm512_inserti32x4(_mm512_inserti32x4(_mm512_castsi128_si512(k[0]), k[1], 1), k[2], 2),
        k[3], 3);
    __m512i zb = _mm512_inserti32x4(
        _mm512_inserti32x4(_mm512_inserti32x4(_mm512_castsi128_si512(k[4]), k[5], 1), k[6], 2),
        k[7], 3);
    for (int h = 0; h < 2; h++) {
        __m512i t = _mm512_permutex2var_epi16(za, _mm512_loadu_si512(idx[h]), zb);
        __m512 lo = _mm512_cvtph_ps(_mm512_castsi512_si256(t));
        __m512 hi = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(t, 1));
        kt[4 * h] = _mm512_cvtps_pd(_mm512_castps512_ps256(lo));
        kt[4 * h + 1] = _mm512_cvtps_pd(_mm512_extractf32x8_ps(lo, 1));
        kt[4 * h + 2] = _mm512_cvtps_pd(_mm512_castps512_ps256(hi));
        kt[4 * h + 3] = _mm512_cvtps_pd(_mm512_extractf32x8_ps(hi, 1));
    }
}

/* N: head_dim as a constant (8, 16: kt[] in registers) or 0 (any n <= 16, from a). */
INLINE void attn_rows_small_avx512(struct cpu_attn_rows_f16 *a, const int NR, const int N) {
    const int n = N ? N : (int)a->n;
    const __mmask16 mk = (__mmask16)((1u << n) - 1);
    const size_t st = a->kv_stride;
    __m512 acc[CPU_ATTN_ROWS];
    float m[CPU_ATTN_ROWS], l[CPU_ATTN_ROWS];
    double qd[CPU_ATTN_ROWS][16];
    float e[CPU_ATTN_ROWS][SMALL_BLOCK];
    uint8_t pos_max[SMALL_BLOCK]; /* bit r: the position raised row r's max */
    float kf[8][16];
    const __m256i kidx = _mm256_setr_epi32(0, 16, 32, 48, 64, 80, 96, 112);
#pragma GCC unroll 8
    for (int r = 0; r < NR; r++) {
        acc[r] = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mk, a->acc[r]));
        m[r] = a->m[r];
        l[r] = a->l[r];
        for (int i = 0; i < n; i++) qd[r][i] = (double)f16_to_f32(a->q[r][i]);
    }
    const __m512 scale = _mm512_set1_ps(a->scale);
    for (int j0 = 0; j0 < a->n_pos; j0 += SMALL_BLOCK) {
        int nb = a->n_pos - j0 < SMALL_BLOCK ? a->n_pos - j0 : SMALL_BLOCK;
        for (int b0 = 0; b0 < nb; b0 += 8) {
            int nk = nb - b0 < 8 ? nb - b0 : 8;
            __m512d kt[16] = {0}; /* lanes past n stay unused; set for the compiler */
#pragma GCC unroll 8
            for (int r = 0; r < NR; r++) {
                if (r == 0 || a->k[r] != a->k[r - 1]) { /* a new KV head: its keys transposed */
                    const char *kb = (const char *)a->k[r] + (size_t)(j0 + b0) * st;
                    if (N == 8) {
                        transpose_keys8(kb, st, nk, kt);
                    } else {
                        for (int c = 0; c < 8; c++) {
                            __mmask16 mc = c < nk ? mk : 0;
                            _mm512_storeu_ps(kf[c], _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(
                                                        mc, kb + (size_t)c * st)));
                        }
#pragma GCC unroll 16
                        for (int i = 0; i < n; i++)
                            kt[i] = _mm512_cvtps_pd(_mm256_i32gather_ps(&kf[0][i], kidx, 4));
                    }
                }
                __m512d sum = _mm512_setzero_pd();
#pragma GCC unroll 16
                for (int i = 0; i < n; i++)
                    sum = _mm512_fmadd_pd(_mm512_set1_pd(qd[r][i]), kt[i], sum);
                __m256 sc = _mm256_mul_ps(_mm512_cvtpd_ps(sum), _mm512_castps512_ps256(scale));
                _mm256_storeu_ps(&e[r][b0], sc);
            }
        }
        /* running max, exp arguments and exps 16 positions at a time: P[b] = max(s[b], P[b-1])
         * as a scan (max_ps(later, earlier) keeps the earlier operand on ties, which is the
         * sequential "s > m ? s : m", so the max has the reference's bits), then
         * is_max = s > P[b-1] and the argument m - s or s - m against P[b-1] */
        const __m512 ninf = _mm512_set1_ps(-INFINITY);
        memset(pos_max, 0, sizeof(pos_max));
#pragma GCC unroll 8
        for (int r = 0; r < NR; r++) {
            __m512 mv = _mm512_set1_ps(m[r]);
            for (int b = 0; b < nb; b += 16) {
                __mmask16 lm = nb - b >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (nb - b)) - 1);
                __m512 sv = _mm512_mask_loadu_ps(ninf, lm, &e[r][b]), q = sv;
                q = _mm512_max_ps(q, SHIFT_IN_PS(q, ninf, 1));
                q = _mm512_max_ps(q, SHIFT_IN_PS(q, ninf, 2));
                q = _mm512_max_ps(q, SHIFT_IN_PS(q, ninf, 4));
                q = _mm512_max_ps(q, SHIFT_IN_PS(q, ninf, 8));
                __m512 p = _mm512_max_ps(q, mv);
                __m512 ex = SHIFT_IN_PS(p, mv, 1); /* the max before each position */
                __mmask16 mx = _mm512_mask_cmp_ps_mask(lm, sv, ex, _CMP_GT_OQ);
                __m512 arg = _mm512_mask_sub_ps(_mm512_sub_ps(sv, ex), mx, ex, sv);
                _mm512_mask_storeu_ps(&e[r][b], lm, attn_exp16(arg));
                __m128i pm = _mm_loadu_si128((const __m128i *)&pos_max[b]);
                pm = _mm_mask_mov_epi8(pm, mx, _mm_or_si128(pm, _mm_set1_epi8((char)(1 << r))));
                _mm_storeu_si128((__m128i *)&pos_max[b], pm);
                mv = _mm512_permutexvar_ps(_mm512_set1_epi32(15), p);
            }
            m[r] = _mm512_cvtss_f32(mv);
        }
        for (int b = 0; b < nb; b++) {
            size_t off = (size_t)(j0 + b) * st;
            __m512 vf = _mm512_setzero_ps();
            if (pos_max[b] == 0) { /* no row's max moved (the usual case): ms = 1, l * 1 = l */
#pragma GCC unroll 8
                for (int r = 0; r < NR; r++) {
                    if (r == 0 || a->v[r] != a->v[r - 1])
                        vf = _mm512_cvtph_ps(
                            _mm256_maskz_loadu_epi16(mk, (const char *)a->v[r] + off));
                    float vs = e[r][b];
                    acc[r] = round_f16(_mm512_fmadd_ps(vf, _mm512_set1_ps(vs), acc[r]));
                    l[r] = l[r] + vs;
                }
                continue;
            }
#pragma GCC unroll 8
            for (int r = 0; r < NR; r++) {
                if (r == 0 || a->v[r] != a->v[r - 1])
                    vf = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mk, (const char *)a->v[r] + off));
                float ms = 1.0f, vs = e[r][b];
                if ((pos_max[b] >> r) & 1) {
                    ms = vs;
                    vs = 1.0f;
                    acc[r] = round_f16(_mm512_mul_ps(acc[r], _mm512_set1_ps(ms)));
                }
                acc[r] = round_f16(_mm512_fmadd_ps(vf, _mm512_set1_ps(vs), acc[r]));
                l[r] = l[r] * ms + vs;
            }
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < NR; r++) {
        _mm256_mask_storeu_epi16(
            a->acc[r], mk, _mm512_cvtps_ph(acc[r], _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        a->m[r] = m[r];
        a->l[r] = l[r];
    }
}

INLINE void attn_rows_small_n_avx512(struct cpu_attn_rows_f16 *a, const int N) {
    switch (a->n_rows) {
    case 1:
        attn_rows_small_avx512(a, 1, N);
        break;
    case 2:
        attn_rows_small_avx512(a, 2, N);
        break;
    case 3:
        attn_rows_small_avx512(a, 3, N);
        break;
    case 4:
        attn_rows_small_avx512(a, 4, N);
        break;
    case 5:
        attn_rows_small_avx512(a, 5, N);
        break;
    case 6:
        attn_rows_small_avx512(a, 6, N);
        break;
    case 7:
        attn_rows_small_avx512(a, 7, N);
        break;
    default:
        attn_rows_small_avx512(a, 8, N);
        break;
    }
}

static void attn_rows_f16_avx512(struct cpu_attn_rows_f16 *a) {
    if (a->n == 8)
        attn_rows_small_n_avx512(a, 8);
    else if (a->n == 16)
        attn_rows_small_n_avx512(a, 16);
    else if (a->n < 16)
        attn_rows_small_n_avx512(a, 0);
    else
        attn_rows_f16_with(a, attn_dots_f16_avx512, attn_mad_f16_avx512, attn_scale_f16_avx512,
                           attn_exp_n_avx512);
}

/* ============================================================================================
 * F32 experts, swiglu, RoPE (f32_id_dot_ref, swiglu_ref, rope_pairs_ref)
 * ============================================================================================ */

static float f32_id_dot_avx512(const float *w, const float *x, int64_t n) {
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int64_t n64 = n & ~(int64_t)63;
    for (int64_t i = 0; i < n64; i += 64) {
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w + i), _mm512_loadu_ps(x + i), a0);
        a1 = _mm512_fmadd_ps(_mm512_loadu_ps(w + i + 16), _mm512_loadu_ps(x + i + 16), a1);
        a2 = _mm512_fmadd_ps(_mm512_loadu_ps(w + i + 32), _mm512_loadu_ps(x + i + 32), a2);
        a3 = _mm512_fmadd_ps(_mm512_loadu_ps(w + i + 48), _mm512_loadu_ps(x + i + 48), a3);
    }
    float sum = hsum_ps16(_mm512_add_ps(_mm512_add_ps(a0, a2), _mm512_add_ps(a1, a3)));
    for (int64_t i = n64; i < n; i++) sum = fmaf(w[i], x[i], sum);
    return sum;
}

static void f32_id_tile_avx512(const void *w, size_t ws, const void *x, size_t xs, int64_t k,
                               float *out, size_t os, int n_w, int n_x) {
    for (int j = 0; j < n_x; j++)
        for (int i = 0; i < n_w; i++)
            out[(size_t)j * os + (size_t)i] =
                f32_id_dot_avx512((const float *)((const char *)w + (size_t)i * ws),
                                  (const float *)((const char *)x + (size_t)j * xs), k);
}

/* expf_ggml_ref on 16 lanes: vscalefps scales by 2^n exactly as ldexpf does. */
INLINE __m512 expf_ggml_avx512(__m512 x) {
    const __m512 r = _mm512_set1_ps(0x1.8p23f), zero = _mm512_setzero_ps();
    __m512 z = _mm512_fmadd_ps(x, _mm512_set1_ps(0x1.715476p+0f), r);
    __m512 n = _mm512_sub_ps(z, r);
    __m512 b = _mm512_fnmadd_ps(n, _mm512_set1_ps(0x1.7f7d1cp-20f),
                                _mm512_fnmadd_ps(n, _mm512_set1_ps(0x1.62e4p-1f), x));
    __m512 u = _mm512_mul_ps(b, b);
    __m512 hi = _mm512_fmadd_ps(
        _mm512_fmadd_ps(_mm512_set1_ps(0x1.0e4020p-7f), b, _mm512_set1_ps(0x1.573e2ep-5f)), u,
        _mm512_fmadd_ps(_mm512_set1_ps(0x1.555e66p-3f), b, _mm512_set1_ps(0x1.fffdb6p-2f)));
    __m512 j = _mm512_fmadd_ps(
        hi, u, _mm512_fmadd_ps(_mm512_set1_ps(0x1.ffffecp-1f), b, _mm512_set1_ps(1.0f)));
    __m512 res = _mm512_scalef_ps(j, n);
    __mmask16 big = _mm512_cmp_ps_mask(_mm512_abs_ps(n), _mm512_set1_ps(192), _CMP_GT_OQ);
    if (big) {
        __mmask16 neg = _mm512_cmp_ps_mask(n, zero, _CMP_LE_OQ);
        res = _mm512_mask_blend_ps(big, res,
                                   _mm512_mask_blend_ps(neg, _mm512_set1_ps(INFINITY), zero));
    }
    return res;
}

static void swiglu_avx512(const float *gate, const float *up, float *out, int64_t n) {
    const __m512 one = _mm512_set1_ps(1.0f), zero = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 g = _mm512_loadu_ps(gate + i);
        __m512 e = expf_ggml_avx512(_mm512_sub_ps(zero, g));
        __m512 s = _mm512_div_ps(g, _mm512_add_ps(one, e));
        _mm512_storeu_ps(out + i, _mm512_mul_ps(s, _mm512_loadu_ps(up + i)));
    }
    if (i < n) swiglu_ref(gate + i, up + i, out + i, n - i);
}

static void silu_avx512(const float *x, float *out, int64_t n) {
    const __m512 one = _mm512_set1_ps(1.0f), zero = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 v = _mm512_loadu_ps(x + i);
        __m512 e = expf_ggml_avx512(_mm512_sub_ps(zero, v));
        _mm512_storeu_ps(out + i, _mm512_div_ps(v, _mm512_add_ps(one, e)));
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

static void rope_pairs_avx512(float *x, const float *cs, const float *sn, int n, int half) {
    int i = 0;
    if (half)
        for (; i + 16 <= n; i += 16) {
            __m512 x0 = _mm512_loadu_ps(x + i), x1 = _mm512_loadu_ps(x + i + half);
            __m512 c = _mm512_loadu_ps(cs + i), s = _mm512_loadu_ps(sn + i);
            _mm512_storeu_ps(x + i, _mm512_fmsub_ps(x0, c, _mm512_mul_ps(x1, s)));
            _mm512_storeu_ps(x + i + half, _mm512_fmadd_ps(x0, s, _mm512_mul_ps(x1, c)));
        }
    rope_pairs_rest(x, cs, sn, i, n, half);
}

/* ============================================================================================
 * Tiled attention (f32_gemm_seq_ref, attn_tile_softmax_ref)
 * Each element of a product is one FMA chain in index order, so the register tile (4 rows x 64
 * columns, A broadcast, B loaded once per k for the 4 rows) changes nothing but speed. The
 * softmax runs across 16 query lanes per vector; the per-block sums of the reference (16
 * positions, _mm512_reduce_add_ps's tree) become vector adds of position rows.
 * ============================================================================================ */

/* The accumulators are named registers: gcc keeps an array of them in memory. */
#define GS_LOAD(i)                                                                                 \
    __m512 c##i##0 = _mm512_loadu_ps(C + (size_t)(i)*ldc),                                         \
           c##i##1 = _mm512_loadu_ps(C + (size_t)(i)*ldc + 16),                                    \
           c##i##2 = _mm512_loadu_ps(C + (size_t)(i)*ldc + 32),                                    \
           c##i##3 = _mm512_loadu_ps(C + (size_t)(i)*ldc + 48)
#define GS_FMA(i)                                                                                  \
    do {                                                                                           \
        __m512 ai = _mm512_set1_ps(a[(size_t)(i)*a_si]);                                           \
        c##i##0 = _mm512_fmadd_ps(ai, b0, c##i##0);                                                \
        c##i##1 = _mm512_fmadd_ps(ai, b1, c##i##1);                                                \
        c##i##2 = _mm512_fmadd_ps(ai, b2, c##i##2);                                                \
        c##i##3 = _mm512_fmadd_ps(ai, b3, c##i##3);                                                \
    } while (0)
#define GS_STORE(i)                                                                                \
    do {                                                                                           \
        _mm512_storeu_ps(C + (size_t)(i)*ldc, c##i##0);                                            \
        _mm512_storeu_ps(C + (size_t)(i)*ldc + 16, c##i##1);                                       \
        _mm512_storeu_ps(C + (size_t)(i)*ldc + 32, c##i##2);                                       \
        _mm512_storeu_ps(C + (size_t)(i)*ldc + 48, c##i##3);                                       \
    } while (0)

INLINE void gemm_seq_4x64(float *C, size_t ldc, const float *A, size_t a_si, size_t a_sk,
                          const float *B, size_t ldb, int K) {
    GS_LOAD(0);
    GS_LOAD(1);
    GS_LOAD(2);
    GS_LOAD(3);
    for (int k = 0; k < K; k++) {
        const float *b = B + (size_t)k * ldb, *a = A + (size_t)k * a_sk;
        __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16);
        __m512 b2 = _mm512_loadu_ps(b + 32), b3 = _mm512_loadu_ps(b + 48);
        GS_FMA(0);
        GS_FMA(1);
        GS_FMA(2);
        GS_FMA(3);
    }
    GS_STORE(0);
    GS_STORE(1);
    GS_STORE(2);
    GS_STORE(3);
}

INLINE void gemm_seq_6x64(float *C, size_t ldc, const float *A, size_t a_si, size_t a_sk,
                          const float *B, size_t ldb, int K) {
    GS_LOAD(0);
    GS_LOAD(1);
    GS_LOAD(2);
    GS_LOAD(3);
    GS_LOAD(4);
    GS_LOAD(5);
    for (int k = 0; k < K; k++) {
        const float *b = B + (size_t)k * ldb, *a = A + (size_t)k * a_sk;
        __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16);
        __m512 b2 = _mm512_loadu_ps(b + 32), b3 = _mm512_loadu_ps(b + 48);
        GS_FMA(0);
        GS_FMA(1);
        GS_FMA(2);
        GS_FMA(3);
        GS_FMA(4);
        GS_FMA(5);
    }
    GS_STORE(0);
    GS_STORE(1);
    GS_STORE(2);
    GS_STORE(3);
    GS_STORE(4);
    GS_STORE(5);
}

/* One row, 16 columns (fewer with mask m). */
INLINE void gemm_seq_1x16(float *C, const float *A, size_t a_sk, const float *B, size_t ldb, int K,
                          __mmask16 m) {
    __m512 c = _mm512_maskz_loadu_ps(m, C);
    for (int k = 0; k < K; k++)
        c = _mm512_fmadd_ps(_mm512_set1_ps(A[(size_t)k * a_sk]),
                            _mm512_maskz_loadu_ps(m, B + (size_t)k * ldb), c);
    _mm512_mask_storeu_ps(C, m, c);
}

static void f32_gemm_seq_avx512(float *C, size_t ldc, const float *A, size_t a_si, size_t a_sk,
                                const float *B, size_t ldb, int M, int K, int N) {
    int j = 0;
    for (; j + 64 <= N; j += 64) {
        int i = 0;
        for (; i + 6 <= M; i += 6)
            gemm_seq_6x64(C + (size_t)i * ldc + j, ldc, A + (size_t)i * a_si, a_si, a_sk, B + j,
                          ldb, K);
        for (; i + 4 <= M; i += 4)
            gemm_seq_4x64(C + (size_t)i * ldc + j, ldc, A + (size_t)i * a_si, a_si, a_sk, B + j,
                          ldb, K);
        for (; i < M; i++)
            for (int z = 0; z < 64; z += 16)
                gemm_seq_1x16(C + (size_t)i * ldc + j + z, A + (size_t)i * a_si, a_sk, B + j + z,
                              ldb, K, 0xffff);
    }
    for (; j < N; j += 16) {
        __mmask16 m = N - j >= 16 ? 0xffff : (__mmask16)((1u << (N - j)) - 1);
        for (int i = 0; i < M; i++)
            gemm_seq_1x16(C + (size_t)i * ldc + j, A + (size_t)i * a_si, a_sk, B + j, ldb, K, m);
    }
}

static void attn_tile_softmax_avx512(struct cpu_attn_tile *t) {
    enum { T = CPU_ATTN_TILE };
    const __m512 ninf = _mm512_set1_ps(-INFINITY), one = _mm512_set1_ps(1.0f);
    const __m512 zero = _mm512_setzero_ps(), scale = _mm512_set1_ps(t->scale);
    for (int g = 0; g < T; g += 16) {
        __m512i qp = _mm512_loadu_si512(t->qpos + g);
        __m512 mold = _mm512_loadu_ps(t->m + g), tmax = ninf;
        for (int j = 0; j < t->n_kv; j++) {
            __mmask16 vis = _mm512_cmp_epi32_mask(_mm512_set1_epi32(t->kv0 + j), qp, _MM_CMPINT_LE);
            float *row = t->kq + (size_t)j * T + g;
            __m512 s = _mm512_mask_mul_ps(ninf, vis, _mm512_loadu_ps(row), scale);
            _mm512_storeu_ps(row, s);
            tmax = _mm512_max_ps(tmax, s);
        }
        __mmask16 live = _mm512_cmp_ps_mask(tmax, ninf, _CMP_NEQ_OQ);
        __m512 mnew = _mm512_mask_max_ps(mold, live, mold, tmax);
        __mmask16 up = _mm512_mask_cmp_ps_mask(live, mnew, mold, _CMP_GT_OQ);
        __m512 ms = one;
        if (up) ms = _mm512_mask_mov_ps(one, up, attn_exp16(_mm512_sub_ps(mold, mnew)));
        __m512 l = _mm512_mul_ps(_mm512_loadu_ps(t->l + g), ms);
        if (up) {
            float msv[16];
            _mm512_storeu_ps(msv, ms);
            for (unsigned bits = up; bits; bits &= bits - 1) {
                int r = g + __builtin_ctz(bits);
                float *acc = t->acc + (size_t)r * t->dv;
                __m512 f = _mm512_set1_ps(msv[r - g]);
                int i = 0;
                for (; i + 16 <= t->dv; i += 16)
                    _mm512_storeu_ps(acc + i, _mm512_mul_ps(_mm512_loadu_ps(acc + i), f));
                for (; i < t->dv; i++) acc[i] *= msv[r - g];
            }
        }
        _mm512_storeu_ps(t->m + g, mnew);
        __m512d sum_lo = _mm512_setzero_pd(), sum_hi = _mm512_setzero_pd();
        for (int b = 0; b < T; b += 16) {
            __m512 p[16];
            for (int i = 0; i < 16; i++) {
                int j = b + i;
                if (j < t->n_kv) {
                    __m512 s = _mm512_loadu_ps(t->kq + (size_t)j * T + g);
                    p[i] = _mm512_maskz_mov_ps(live, expf_ggml_avx512(_mm512_sub_ps(s, mnew)));
                } else {
                    p[i] = zero;
                }
                _mm512_storeu_ps(t->kq + (size_t)j * T + g, p[i]);
            }
            if (b >= t->n_kv) continue;
            for (int i = 0; i < 8; i++) p[i] = _mm512_add_ps(p[i], p[i + 8]);
            for (int i = 0; i < 4; i++) p[i] = _mm512_add_ps(p[i], p[i + 4]);
            for (int i = 0; i < 2; i++) p[i] = _mm512_add_ps(p[i], p[i + 2]);
            __m512 w = _mm512_add_ps(p[0], p[1]);
            sum_lo = _mm512_add_pd(sum_lo, _mm512_cvtps_pd(_mm512_castps512_ps256(w)));
            sum_hi = _mm512_add_pd(sum_hi, _mm512_cvtps_pd(_mm512_extractf32x8_ps(w, 1)));
        }
        __m256 l_lo =
            _mm512_cvtpd_ps(_mm512_add_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(l)), sum_lo));
        __m256 l_hi =
            _mm512_cvtpd_ps(_mm512_add_pd(_mm512_cvtps_pd(_mm512_extractf32x8_ps(l, 1)), sum_hi));
        _mm512_storeu_ps(t->l + g, _mm512_insertf32x8(_mm512_castps256_ps512(l_lo), l_hi, 1));
    }
}

/* ============================================================================================
 * Activation quantizers (q8_0_quantize_row_act, q8_k_quantize_row_act)
 * Scale 127/amax, round half to even (embedded rounding of the conversion), the same f32
 * product x * scale as the scalar code, so the quants are identical.
 * ============================================================================================ */

INLINE __m512i round_to_epi32(__m512 v) {
    return _mm512_cvt_roundps_epi32(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

static void q8_0_quantize_row_act_avx512(const float *x, void *vy, int64_t n) {
    CHECK(n % QK8_0 == 0);
    struct block_q8_0 *y = vy;
    for (int64_t ib = 0; ib < n / QK8_0; ib++) {
        __m512 v0 = _mm512_loadu_ps(x + ib * QK8_0), v1 = _mm512_loadu_ps(x + ib * QK8_0 + 16);
        float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
        float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        y[ib].d = fp32_to_fp16(amax / 127.0f);
        __m512 s = _mm512_set1_ps(id);
        __m512i q0 = round_to_epi32(_mm512_mul_ps(v0, s)),
                q1 = round_to_epi32(_mm512_mul_ps(v1, s));
        _mm_storeu_si128((__m128i *)y[ib].qs, _mm512_cvtepi32_epi8(q0));
        _mm_storeu_si128((__m128i *)(y[ib].qs + 16), _mm512_cvtepi32_epi8(q1));
    }
}

static void q8_1_quantize_row_act_avx512(const float *x, void *vy, int64_t n) {
    CHECK(n % QK8_1 == 0);
    struct block_q8_1 *y = vy;
    for (int64_t ib = 0; ib < n / QK8_1; ib++) {
        __m512 v0 = _mm512_loadu_ps(x + ib * QK8_1), v1 = _mm512_loadu_ps(x + ib * QK8_1 + 16);
        float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
        float d = amax / 127.0f;
        float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        __m512 s = _mm512_set1_ps(id);
        __m512i q0 = round_to_epi32(_mm512_mul_ps(v0, s)),
                q1 = round_to_epi32(_mm512_mul_ps(v1, s));
        _mm_storeu_si128((__m128i *)y[ib].qs, _mm512_cvtepi32_epi8(q0));
        _mm_storeu_si128((__m128i *)(y[ib].qs + 16), _mm512_cvtepi32_epi8(q1));
        int sum = _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
        y[ib].d = fp32_to_fp16(d);
        y[ib].s = fp32_to_fp16(d * (float)sum);
    }
}

static void q8_k_quantize_row_act_avx512(const float *x, void *vy, int64_t n) {
    CHECK(n % QK_K == 0);
    struct block_q8_k *y = vy;
    const __m512i lim = _mm512_set1_epi32(127), nlim = _mm512_set1_epi32(-127);
    for (int64_t ib = 0; ib < n / QK_K; ib++) {
        const float *xb = x + ib * QK_K;
        __m512 m = _mm512_setzero_ps();
        for (int g = 0; g < QK_K / 16; g++)
            m = _mm512_max_ps(m, _mm512_abs_ps(_mm512_loadu_ps(xb + 16 * g)));
        float amax = _mm512_reduce_max_ps(m);
        memset(&y[ib], 0, sizeof(y[ib]));
        if (amax == 0.0f) continue;
        float iscale = 127.0f / amax;
        __m512 s = _mm512_set1_ps(iscale);
        for (int g = 0; g < QK_K / 16; g++) {
            __m512i q = round_to_epi32(_mm512_mul_ps(_mm512_loadu_ps(xb + 16 * g), s));
            q = _mm512_max_epi32(_mm512_min_epi32(q, lim), nlim);
            y[ib].bsums[g] = (int16_t)_mm512_reduce_add_epi32(q);
            _mm_storeu_si128((__m128i *)(y[ib].qs + 16 * g), _mm512_cvtepi32_epi8(q));
        }
        y[ib].d = 1.0f / iscale;
    }
}

/* ============================================================================================
 * The Q8_0 family: Q8_0, Q4_0 and IQ4_NL weights against Q8_0 activations
 * The fixed order (q8_0_dot_q8_0_ref): per block, 8 int32 lanes of 4-product sums, each scaled
 * by dw*dx into its own f32 lane with an FMA. vpdpbusd multiplies unsigned by signed bytes, so the
 * weights are made unsigned with an offset c (Q8_0: w + 128; Q4_0: the nibble, w + 8; IQ4_NL:
 * table value + 128) and each lane starts at -c * (sum of its 4 activations), which depends on
 * the token only: sum (w + c) x - c sum x = sum w x, exactly. The dw*dx products of a chunk of
 * blocks are formed up front with vector multiplies, so the inner loop is vpdpbusd, vcvtdq2ps
 * and one FMA (with a broadcast load) per (row, token, block).
 * ============================================================================================ */

/* Q4_1 and Q5_1 (value d q + m) dot Q8_1 rows: no offset, and the m_x s_y terms go to a separate
 * FMA chain per (row, token), as in their references. */
enum q8_family { FAM_Q8_0, FAM_Q4_0, FAM_IQ4_NL, FAM_Q5_0, FAM_Q4_1, FAM_Q5_1 };
enum { FAM_CHUNK = 32 }; /* blocks whose scale products are formed together */

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
INLINE size_t fam_act_qs(int fam) {
    return fam_has_min(fam) ? 4 : 2;
}

/* The family's offset c: the weights enter vpdpbusd as w + c. */
INLINE int fam_offset(int fam) {
    return fam == FAM_Q4_0 ? 8 : fam == FAM_Q5_0 ? 16 : fam_has_min(fam) ? 0 : 128;
}

/* The 32 weights of a block plus the family's offset, as unsigned bytes in element order. */
INLINE __m256i fam_weights(int fam, const char *blk, __m256i table) {
    if (fam == FAM_Q8_0)
        return _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(blk + 2)),
                                _mm256_set1_epi8((char)0x80));
    size_t qs = fam == FAM_Q5_0 ? 6 : fam == FAM_Q4_1 ? 4 : fam == FAM_Q5_1 ? 8 : 2;
    __m256i v = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(blk + qs)));
    v = _mm256_and_si256(_mm256_mask_srli_epi16(v, 0xff00, v, 4), _mm256_set1_epi8(0x0f));
    if (fam == FAM_Q5_0 || fam == FAM_Q5_1) { /* bit j of qh: the 16 of element j */
        uint32_t qh;
        memcpy(&qh, blk + (fam == FAM_Q5_0 ? 2 : 4), sizeof(qh));
        return _mm256_or_si256(v, _mm256_and_si256(_mm256_movm_epi8(qh), _mm256_set1_epi8(0x10)));
    }
    return fam == FAM_IQ4_NL ? _mm256_shuffle_epi8(table, v) : v;
}

/* dd[p][b] = dw_i[b0 + b] * dx_j[b0 + b] for the pairs p = i * nx_max + j, b < n; with a min
 * also mw[i][b] = m_i and sx[j][b] = s_j (the fp16 field after d, in both blocks). */
INLINE void fam_scales(int fam, int nw_max, int nx_max, const char *const *wr,
                       const char *const *xr, int64_t b0, int n,
                       float dd[TILE_W * TILE_X][FAM_CHUNK], float mw[TILE_W][FAM_CHUNK],
                       float sx[TILE_X][FAM_CHUNK]) {
    uint16_t h[FAM_CHUNK];
    float dw[TILE_W][FAM_CHUNK], dx[TILE_X][FAM_CHUNK];
    size_t wb = fam_block_bytes(fam);
#pragma GCC unroll 16
    for (int i = 0; i < nw_max + nx_max; i++) {
        const char *row = i < nw_max ? wr[i] : xr[i - nw_max];
        size_t bytes = i < nw_max ? wb : fam_act_bytes(fam);
        for (int f = 0; f < 1 + fam_has_min(fam); f++) {
            for (int b = 0; b < FAM_CHUNK; b++) {
                h[b] = 0; /* d (then m or s) open every block of the family */
                if (b < n) memcpy(&h[b], row + (size_t)(b0 + b) * bytes + 2 * f, sizeof(uint16_t));
            }
            float *dst =
                f ? (i < nw_max ? mw[i] : sx[i - nw_max]) : (i < nw_max ? dw[i] : dx[i - nw_max]);
            for (int b = 0; b < FAM_CHUNK; b += 16) _mm512_storeu_ps(dst + b, load_f16x16(h + b));
        }
    }
#pragma GCC unroll 16
    for (int i = 0; i < nw_max; i++)
#pragma GCC unroll 16
        for (int j = 0; j < nx_max; j++)
            for (int b = 0; b < FAM_CHUNK; b += 16)
                _mm512_storeu_ps(dd[i * nx_max + j] + b, _mm512_mul_ps(_mm512_loadu_ps(dw[i] + b),
                                                                       _mm512_loadu_ps(dx[j] + b)));
}

INLINE void fam_tile(int fam, int nw_max, int nx_max, const void *w, size_t w_stride, const void *x,
                     size_t x_stride, int64_t k, float *out, size_t out_stride, int n_w, int n_x) {
    CHECK(k % QK8_0 == 0);
    const size_t wb = fam_block_bytes(fam);
    const char *wr[TILE_W], *xr[TILE_X];
#pragma GCC unroll 16
    for (int i = 0; i < nw_max; i++) wr[i] = tile_row(w, w_stride, i, n_w);
#pragma GCC unroll 16
    for (int j = 0; j < nx_max; j++) xr[j] = tile_row(x, x_stride, j, n_x);
    const __m256i table = _mm256_xor_si256(
        _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)kvalues_iq4nl)),
        _mm256_set1_epi8((char)0x80));
    const __m256i offset = _mm256_set1_epi8((char)fam_offset(fam));
    const __m256i zero = _mm256_setzero_si256();
    __m256 acc[TILE_W][TILE_X];
#pragma GCC unroll 16
    for (int i = 0; i < nw_max; i++)
#pragma GCC unroll 16
        for (int j = 0; j < nx_max; j++) acc[i][j] = _mm256_setzero_ps();
    float dd[TILE_W * TILE_X][FAM_CHUNK], mw[TILE_W][FAM_CHUNK], sx[TILE_X][FAM_CHUNK];
    float msum[TILE_W][TILE_X] = {{0}};
    const size_t ab = fam_act_bytes(fam), aq = fam_act_qs(fam);
    const int64_t nb = k / QK8_0;
    for (int64_t b0 = 0; b0 < nb; b0 += FAM_CHUNK) {
        int n = nb - b0 < FAM_CHUNK ? (int)(nb - b0) : FAM_CHUNK;
        fam_scales(fam, nw_max, nx_max, wr, xr, b0, n, dd, mw, sx);
        for (int b = 0; b < n; b++) {
            __m256i xv[TILE_X], start[TILE_X];
#pragma GCC unroll 16
            for (int j = 0; j < nx_max; j++) {
                xv[j] = _mm256_loadu_si256((const __m256i *)(xr[j] + (size_t)(b0 + b) * ab + aq));
                start[j] = fam_has_min(fam)
                               ? zero
                               : _mm256_sub_epi32(zero, _mm256_dpbusd_epi32(zero, offset, xv[j]));
            }
#pragma GCC unroll 16
            for (int i = 0; i < nw_max; i++) {
                __m256i wu = fam_weights(fam, wr[i] + (size_t)(b0 + b) * wb, table);
#pragma GCC unroll 16
                for (int j = 0; j < nx_max; j++) {
                    __m256i s = _mm256_dpbusd_epi32(start[j], wu, xv[j]);
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

static float q8_0_dot_q8_0_avx512(const void *w, const void *x, int64_t n) {
    float out;
    fam_tile(FAM_Q8_0, 1, 1, w, 0, x, 0, n, &out, 0, 1, 1);
    return out;
}
static float q4_0_dot_q8_0_avx512(const void *w, const void *x, int64_t n) {
    float out;
    fam_tile(FAM_Q4_0, 1, 1, w, 0, x, 0, n, &out, 0, 1, 1);
    return out;
}
static float iq4_nl_dot_q8_0_avx512(const void *w, const void *x, int64_t n) {
    float out;
    fam_tile(FAM_IQ4_NL, 1, 1, w, 0, x, 0, n, &out, 0, 1, 1);
    return out;
}

/* Prompt tiles: 4 rows x 8 tokens in 512-bit vectors. Two tokens share a vector: their activation
 * dwords are interleaved (lane 2l: token a's lane l, lane 2l+1: token b's), the weights' dwords
 * duplicated, so one vpdpbusd, one vcvtdq2ps and one FMA serve two (row, token) pairs, and the
 * two scale products (d_a, d_b) come in with a single 64-bit broadcast load. Each lane still
 * follows the 8-lane order of the reference. */
enum { PAIR_W = 4, PAIR_X = 8 };

/* dd2[i][p][2b + t] = dw_i[b0 + b] * dx_{2p+t}[b0 + b], b < FAM_CHUNK. */
INLINE void fam_scales_pairs(int fam, const char *const *wr, const char *const *xr, int64_t b0,
                             int n, float dd2[PAIR_W][PAIR_X / 2][2 * FAM_CHUNK]) {
    uint16_t h[FAM_CHUNK];
    float dw[PAIR_W][FAM_CHUNK], dx[PAIR_X][FAM_CHUNK];
    size_t wb = fam_block_bytes(fam);
    for (int i = 0; i < PAIR_W + PAIR_X; i++) {
        const char *row = i < PAIR_W ? wr[i] : xr[i - PAIR_W];
        size_t bytes = i < PAIR_W ? wb : sizeof(struct block_q8_0);
        for (int b = 0; b < FAM_CHUNK; b++) {
            h[b] = 0;
            if (b < n) memcpy(&h[b], row + (size_t)(b0 + b) * bytes, sizeof(uint16_t));
        }
        float *dst = i < PAIR_W ? dw[i] : dx[i - PAIR_W];
        for (int b = 0; b < FAM_CHUNK; b += 16) _mm512_storeu_ps(dst + b, load_f16x16(h + b));
    }
    const __m512i lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i hi = _mm512_add_epi32(lo, _mm512_set1_epi32(8));
    for (int i = 0; i < PAIR_W; i++)
        for (int p = 0; p < PAIR_X / 2; p++)
            for (int b = 0; b < FAM_CHUNK; b += 16) {
                __m512 w = _mm512_loadu_ps(dw[i] + b);
                __m512 a = _mm512_mul_ps(w, _mm512_loadu_ps(dx[2 * p] + b));
                __m512 c = _mm512_mul_ps(w, _mm512_loadu_ps(dx[2 * p + 1] + b));
                _mm512_storeu_ps(dd2[i][p] + 2 * b, _mm512_permutex2var_ps(a, lo, c));
                _mm512_storeu_ps(dd2[i][p] + 2 * b + 16, _mm512_permutex2var_ps(a, hi, c));
            }
}

/* The 32 unsigned weights of a block (fam_weights) with every dword duplicated. */
INLINE __m512i fam_weights_dup(int fam, const char *blk, __m256i table) {
    const __m512i dup = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
    return _mm512_permutexvar_epi32(dup, _mm512_castsi256_si512(fam_weights(fam, blk, table)));
}

INLINE void fam_tile_pairs(int fam, const void *w, size_t w_stride, const void *x, size_t x_stride,
                           int64_t k, float *out, size_t out_stride, int n_w, int n_x) {
    CHECK(k % QK8_0 == 0);
    const size_t wb = fam_block_bytes(fam);
    const char *wr[PAIR_W], *xr[PAIR_X];
#pragma GCC unroll 16
    for (int i = 0; i < PAIR_W; i++) wr[i] = tile_row(w, w_stride, i, n_w);
#pragma GCC unroll 16
    for (int j = 0; j < PAIR_X; j++) xr[j] = tile_row(x, x_stride, j, n_x);
    const __m256i table = _mm256_xor_si256(
        _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)kvalues_iq4nl)),
        _mm256_set1_epi8((char)0x80));
    const __m512i offset = _mm512_set1_epi8((char)fam_offset(fam));
    const __m512i zero = _mm512_setzero_si512();
    const __m512i ilv = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    __m512 acc[PAIR_W][PAIR_X / 2];
#pragma GCC unroll 16
    for (int i = 0; i < PAIR_W; i++)
#pragma GCC unroll 16
        for (int p = 0; p < PAIR_X / 2; p++) acc[i][p] = _mm512_setzero_ps();
    float dd2[PAIR_W][PAIR_X / 2][2 * FAM_CHUNK];
    const int64_t nb = k / QK8_0;
    for (int64_t b0 = 0; b0 < nb; b0 += FAM_CHUNK) {
        int n = nb - b0 < FAM_CHUNK ? (int)(nb - b0) : FAM_CHUNK;
        fam_scales_pairs(fam, wr, xr, b0, n, dd2);
        for (int b = 0; b < n; b++) {
            __m512i xv[PAIR_X / 2], start[PAIR_X / 2];
#pragma GCC unroll 16
            for (int p = 0; p < PAIR_X / 2; p++) {
                const struct block_q8_0 *xa = (const struct block_q8_0 *)xr[2 * p] + b0 + b;
                const struct block_q8_0 *xb = (const struct block_q8_0 *)xr[2 * p + 1] + b0 + b;
                __m512i va = _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)xa->qs));
                __m512i vb = _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)xb->qs));
                xv[p] = _mm512_permutex2var_epi32(va, ilv, vb);
                start[p] = _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, offset, xv[p]));
            }
#pragma GCC unroll 16
            for (int i = 0; i < PAIR_W; i++) {
                __m512i wu = fam_weights_dup(fam, wr[i] + (size_t)(b0 + b) * wb, table);
#pragma GCC unroll 16
                for (int p = 0; p < PAIR_X / 2; p++) {
                    double d2;
                    memcpy(&d2, dd2[i][p] + 2 * b, sizeof(d2));
                    __m512 d = _mm512_castpd_ps(_mm512_set1_pd(d2));
                    __m512i sv = _mm512_dpbusd_epi32(start[p], wu, xv[p]);
                    acc[i][p] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(sv), acc[i][p]);
                }
            }
        }
    }
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
    for (int p = 0; p < PAIR_X / 2; p++)
        for (int i = 0; i < n_w && i < PAIR_W; i++) {
            __m512 v = _mm512_permutexvar_ps(even, acc[i][p]); /* token 2p: low 8, 2p+1: high 8 */
            if (2 * p < n_x)
                out[(size_t)(2 * p) * out_stride + (size_t)i] = hsum_ps8(_mm512_castps512_ps256(v));
            if (2 * p + 1 < n_x)
                out[(size_t)(2 * p + 1) * out_stride + (size_t)i] =
                    hsum_ps8(_mm512_extractf32x8_ps(v, 1));
        }
}

static float q4_1_dot_q8_1_avx512(const void *w, const void *x, int64_t n) {
    float out;
    fam_tile(FAM_Q4_1, 1, 1, w, 0, x, 0, n, &out, 0, 1, 1);
    return out;
}
static float q5_1_dot_q8_1_avx512(const void *w, const void *x, int64_t n) {
    float out;
    fam_tile(FAM_Q5_1, 1, 1, w, 0, x, 0, n, &out, 0, 1, 1);
    return out;
}
static void q4_1_gemm_tile_avx512(const void *w, size_t ws, const void *x, size_t xs, int64_t k,
                                  float *out, size_t os, int n_w, int n_x) {
    if (n_x == 1)
        fam_tile(FAM_Q4_1, TILE_W, 1, w, ws, x, xs, k, out, os, n_w, n_x);
    else
        fam_tile(FAM_Q4_1, TILE_W, TILE_X, w, ws, x, xs, k, out, os, n_w, n_x);
}
static void q5_1_gemm_tile_avx512(const void *w, size_t ws, const void *x, size_t xs, int64_t k,
                                  float *out, size_t os, int n_w, int n_x) {
    if (n_x == 1)
        fam_tile(FAM_Q5_1, TILE_W, 1, w, ws, x, xs, k, out, os, n_w, n_x);
    else
        fam_tile(FAM_Q5_1, TILE_W, TILE_X, w, ws, x, xs, k, out, os, n_w, n_x);
}

static float q5_0_dot_q8_0_avx512(const void *w, const void *x, int64_t n) {
    float out;
    fam_tile(FAM_Q5_0, 1, 1, w, 0, x, 0, n, &out, 0, 1, 1);
    return out;
}
/* Decode (one token) for the families without a min: the rows go in pairs, one 512-bit vector
 * per pair (lanes 0-7: row a's 8 lanes, 8-15: row b's) against the activation block broadcast
 * to both halves, so vpdpbusd, vcvtdq2ps and the FMA each serve two rows; the dw * dx products of
 * 16 blocks come from gathered f16 scales. Every lane is fam_tile's lane, bit for bit; the rows'
 * 8 lanes are then summed with fam_tile's tree. Fewer instructions per weight byte keep more of
 * the weight stream in flight. */
/* dd[i] = dw_i * dx for the 16 blocks (mask m) of the 4 rows wr from block b0 on, against the
 * activation blocks from xc (block b0 of x): the blocks' f16 scales gathered (4 bytes at each
 * block's start; offsets w_off / x_off), converted and multiplied. */
INLINE void dec4_scales(const char *const *wr, size_t wb, __m512i w_off, const char *xc,
                        __m512i x_off, int64_t b0, __mmask16 m, __m512 dd[4]) {
    const __m512i zero = _mm512_setzero_si512();
    __m512 dx =
        _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_mask_i32gather_epi32(zero, m, x_off, xc, 1)));
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++)
        dd[i] = _mm512_mul_ps(_mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_mask_i32gather_epi32(
                                  zero, m, w_off, wr[i] + (size_t)b0 * wb, 1))),
                              dx);
}

INLINE void fam_dec4(int fam, const void *w, size_t w_stride, const void *x, int64_t k, float *out,
                     int n_w) {
    CHECK(k % QK8_0 == 0);
    const size_t wb = fam_block_bytes(fam), xb = sizeof(struct block_q8_0);
    const char *wr[4];
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) wr[i] = tile_row(w, w_stride, i, n_w);
    const __m256i table = _mm256_xor_si256(
        _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)kvalues_iq4nl)),
        _mm256_set1_epi8((char)0x80));
    const __m512i offset = _mm512_set1_epi8((char)fam_offset(fam)), zero = _mm512_setzero_si512();
    const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512i w_off = _mm512_mullo_epi32(iota, _mm512_set1_epi32((int)wb));
    const __m512i x_off = _mm512_mullo_epi32(iota, _mm512_set1_epi32((int)xb));
    const __m512i halves =
        _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 16, 16, 16, 16, 16, 16, 16, 16);
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    const int64_t nb = k / QK8_0;
    for (int64_t b0 = 0; b0 < nb; b0 += 16) {
        int n = nb - b0 < 16 ? (int)(nb - b0) : 16;
        __mmask16 m = n == 16 ? (__mmask16)0xffff : (__mmask16)((1u << n) - 1);
        const char *xc = (const char *)x + (size_t)b0 * xb;
        __m512 dd[4];
        dec4_scales(wr, wb, w_off, xc, x_off, b0, m, dd);
        for (int b = 0; b < n; b++) {
            __m512i xv = _mm512_broadcast_i64x4(
                _mm256_loadu_si256((const __m256i *)(xc + (size_t)b * xb + 2)));
            __m512i start = _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, offset, xv));
            __m512i idx = _mm512_add_epi32(halves, _mm512_set1_epi32(b));
            size_t o = (size_t)(b0 + b) * wb;
            __m512i w01, w23;
            if (fam == FAM_Q8_0) { /* the + 128 on both rows at once */
                const __m512i flip = _mm512_set1_epi8((char)0x80);
                w01 = _mm512_xor_si512(flip, load_2x256(wr[0] + o + 2, wr[1] + o + 2));
                w23 = _mm512_xor_si512(flip, load_2x256(wr[2] + o + 2, wr[3] + o + 2));
            } else {
                w01 = _mm512_inserti64x4(_mm512_castsi256_si512(fam_weights(fam, wr[0] + o, table)),
                                         fam_weights(fam, wr[1] + o, table), 1);
                w23 = _mm512_inserti64x4(_mm512_castsi256_si512(fam_weights(fam, wr[2] + o, table)),
                                         fam_weights(fam, wr[3] + o, table), 1);
            }
            __m512i s01 = _mm512_dpbusd_epi32(start, w01, xv);
            __m512i s23 = _mm512_dpbusd_epi32(start, w23, xv);
            acc0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s01),
                                   _mm512_permutex2var_ps(dd[0], idx, dd[1]), acc0);
            acc1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s23),
                                   _mm512_permutex2var_ps(dd[2], idx, dd[3]), acc1);
        }
    }
    float r[4];
    r[0] = hsum_ps8(_mm512_castps512_ps256(acc0));
    r[1] = hsum_ps8(_mm512_extractf32x8_ps(acc0, 1));
    r[2] = hsum_ps8(_mm512_castps512_ps256(acc1));
    r[3] = hsum_ps8(_mm512_extractf32x8_ps(acc1, 1));
    for (int i = 0; i < n_w && i < 4; i++) out[i] = r[i];
}

/* Q8_0 decode in llama.cpp's AMX order (q8_0_dot_q8_0_blk_ref: each block's exact int32 sum,
 * then one FMA per block, in block order), 4 rows. Per block, rows (0,1) and (2,3) share a
 * 512-bit vpdpbusd as in fam_dec4; the 8 vectors of 4 blocks are then summed together to one
 * vector of 16 block sums (lanes row * 4 + j for block j of the four: 21 shuffles and adds
 * instead of 6 per vector), converted once, and the FMA chain steps through the four lanes of
 * each 128-bit lane: each step broadcasts the previous lane's accumulator (vpermilps) and runs
 * one FMA for all four rows. The scale products dw * dx of 16 blocks come from gathered f16
 * scales, rearranged to the same lanes with a 4 x 4 transpose of 128-bit lanes. Blocks past
 * the last whole four go through the reference's loop. */
struct q8_0_pq {
    __m512i p, q; /* rows 0 | 1, rows 2 | 3: 8 int32 lanes each */
};

/* One block (qs at byte o of each row) of the 4 rows against the activation's qs at xq. */
INLINE struct q8_0_pq q8_0_blk_block(const char *const *wr, size_t o, const char *xq) {
    const __m512i flip = _mm512_set1_epi8((char)0x80), zero = _mm512_setzero_si512();
    __m512i xv = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)xq));
    __m512i start = _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, flip, xv));
    __m512i w01 = load_2x256(wr[0] + o, wr[1] + o), w23 = load_2x256(wr[2] + o, wr[3] + o);
    return (struct q8_0_pq){_mm512_dpbusd_epi32(start, _mm512_xor_si512(w01, flip), xv),
                            _mm512_dpbusd_epi32(start, _mm512_xor_si512(w23, flip), xv)};
}

/* Lanes of a and b summed in pairs: per 128-bit lane (a, b, a, b). */
INLINE __m512i q8_0_sum2(__m512i a, __m512i b) {
    return _mm512_add_epi32(_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b));
}

/* Two (a, b, a, b) vectors to (a, b, c, d) per 128-bit lane. */
INLINE __m512i q8_0_sum4(__m512i ab, __m512i cd) {
    return _mm512_add_epi32(_mm512_unpacklo_epi64(ab, cd), _mm512_unpackhi_epi64(ab, cd));
}

static void q8_0_blk_dec4(const void *w, size_t w_stride, const void *x, int64_t k, float *out,
                          int n_w) {
    CHECK(k % QK8_0 == 0);
    const size_t bb = sizeof(struct block_q8_0);
    const char *wr[4];
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) wr[i] = tile_row(w, w_stride, i, n_w);
    const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512i off = _mm512_mullo_epi32(iota, _mm512_set1_epi32((int)bb));
    const int64_t nb = k / QK8_0, nb4 = nb / 4 * 4;
    __m512 acc = _mm512_setzero_ps(); /* row r's accumulator: lane 4 r + 3 after each four */
    for (int64_t b0 = 0; b0 < nb4; b0 += 16) {
        int n = nb4 - b0 < 16 ? (int)(nb4 - b0) : 16;
        __mmask16 m = n == 16 ? (__mmask16)0xffff : (__mmask16)((1u << n) - 1);
        const char *xc = (const char *)x + (size_t)b0 * bb;
        __m512 dd[4];
        dec4_scales(wr, bb, off, xc, off, b0, m, dd);
        /* dg[g]: lanes 4 r + j = dd[r][4 g + j] */
        __m512 t0 = _mm512_shuffle_f32x4(dd[0], dd[1], 0x44),
               t1 = _mm512_shuffle_f32x4(dd[2], dd[3], 0x44);
        __m512 t2 = _mm512_shuffle_f32x4(dd[0], dd[1], 0xee),
               t3 = _mm512_shuffle_f32x4(dd[2], dd[3], 0xee);
        __m512 dg[4] = {_mm512_shuffle_f32x4(t0, t1, 0x88), _mm512_shuffle_f32x4(t0, t1, 0xdd),
                        _mm512_shuffle_f32x4(t2, t3, 0x88), _mm512_shuffle_f32x4(t2, t3, 0xdd)};
        for (int g = 0; g < n / 4; g++) {
            size_t o = (size_t)(b0 + 4 * g) * bb + 2;
            const char *xq = xc + (size_t)(4 * g) * bb + 2;
            struct q8_0_pq s0 = q8_0_blk_block(wr, o, xq);
            struct q8_0_pq s1 = q8_0_blk_block(wr, o + bb, xq + bb);
            __m512i tp01 = q8_0_sum2(s0.p, s1.p), tq01 = q8_0_sum2(s0.q, s1.q);
            struct q8_0_pq s2 = q8_0_blk_block(wr, o + 2 * bb, xq + 2 * bb);
            struct q8_0_pq s3 = q8_0_blk_block(wr, o + 3 * bb, xq + 3 * bb);
            __m512i tp23 = q8_0_sum2(s2.p, s3.p), tq23 = q8_0_sum2(s2.q, s3.q);
            __m512i up = q8_0_sum4(tp01, tp23), uq = q8_0_sum4(tq01, tq23);
            __m512 sf = _mm512_cvtepi32_ps(_mm512_add_epi32(_mm512_shuffle_i32x4(up, uq, 0x88),
                                                            _mm512_shuffle_i32x4(up, uq, 0xdd)));
            acc = _mm512_fmadd_ps(sf, dg[g], _mm512_permute_ps(acc, 0xff));
            acc = _mm512_fmadd_ps(sf, dg[g], _mm512_permute_ps(acc, 0x00));
            acc = _mm512_fmadd_ps(sf, dg[g], _mm512_permute_ps(acc, 0x55));
            acc = _mm512_fmadd_ps(sf, dg[g], _mm512_permute_ps(acc, 0xaa));
        }
    }
    float a[16];
    _mm512_storeu_ps(a, acc);
    for (int i = 0; i < n_w && i < 4; i++) {
        float r = a[4 * i + 3];
        const struct block_q8_0 *wb = (const struct block_q8_0 *)wr[i], *xb = x;
        for (int64_t ib = nb4; ib < nb; ib++) {
            int32_t isum = 0;
            for (int j = 0; j < QK8_0; j++) isum += (int32_t)wb[ib].qs[j] * (int32_t)xb[ib].qs[j];
            r = fmaf((float)isum, fp16_to_fp32(wb[ib].d) * fp16_to_fp32(xb[ib].d), r);
        }
        out[i] = r;
    }
}

static void q5_0_gemm_tile_avx512(const void *w, size_t ws, const void *x, size_t xs, int64_t k,
                                  float *out, size_t os, int n_w, int n_x) {
    if (n_x == 1)
        fam_dec4(FAM_Q5_0, w, ws, x, k, out, n_w);
    else
        fam_tile_pairs(FAM_Q5_0, w, ws, x, xs, k, out, os, n_w, n_x);
}

static void q8_0_gemm_tile_avx512(const void *w, size_t ws, const void *x, size_t xs, int64_t k,
                                  float *out, size_t os, int n_w, int n_x) {
    if (n_x == 1)
        fam_dec4(FAM_Q8_0, w, ws, x, k, out, n_w);
    else
        fam_tile_pairs(FAM_Q8_0, w, ws, x, xs, k, out, os, n_w, n_x);
}
static void q4_0_gemm_tile_avx512(const void *w, size_t ws, const void *x, size_t xs, int64_t k,
                                  float *out, size_t os, int n_w, int n_x) {
    if (n_x == 1)
        fam_dec4(FAM_Q4_0, w, ws, x, k, out, n_w);
    else
        fam_tile_pairs(FAM_Q4_0, w, ws, x, xs, k, out, os, n_w, n_x);
}
static void iq4_nl_gemm_tile_avx512(const void *w, size_t ws, const void *x, size_t xs, int64_t k,
                                    float *out, size_t os, int n_w, int n_x) {
    if (n_x == 1)
        fam_dec4(FAM_IQ4_NL, w, ws, x, k, out, n_w);
    else
        fam_tile_pairs(FAM_IQ4_NL, w, ws, x, xs, k, out, os, n_w, n_x);
}

/* ============================================================================================
 * K-quants (Q4_K, Q5_K, Q6_K) and IQ4_XS against Q8_K activations
 * The references sum each super-block exactly in int32 (isum; isum_min for the mins) and only
 * then scale in f32, so any integer order gives the same bits. Per 64-value chunk the weights
 * become 64 unsigned bytes in element order (IQ4_XS: |value|, its sign moved onto the
 * activation); vpmaddubsw multiplies them with the activation bytes into 32 int16 pair sums (at
 * most 2 * 63 * 127: no saturation) and vpdpwssd scales those by the sub-block scales into int32
 * lanes. Q6_K's -32 offset joins the same lanes as -32 * scale * bsum. After the super-block the
 * 16 lanes of every (row, token) pair are summed for the whole tile at once by a transposing
 * reduction, and the f32 step runs on all pairs of the tile in one vector, lane p = i * nx + j.
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

/* Sub-blocks of 16 values (Q2_K, Q3_K, Q6_K), else of 32. */
INLINE int kq_sub16(int type) {
    return type == KQ_Q6_K || type == KQ_Q3_K || type == KQ_Q2_K;
}

/* Per row and super-block: scales as int16 (8 per sub-block of 32; Q6_K 16 per sub-block of 16),
 * Q4_K/Q5_K mins as int16, and the f32 super-scales. */
struct kq_row {
    __m256i sc;    /* Q4_K/Q5_K/IQ4_XS: 8 scales (low half); Q2_K/Q3_K/Q6_K: 16 scales */
    __m128i mn;    /* Q4_K/Q5_K: 8 mins */
    __m256i mn16;  /* Q2_K: 16 mins */
    __m256i neg;   /* Q6_K: -32, Q3_K: -4 times the 16 scales (the offset of the stored q) */
    float d, dmin; /* super-scale, super-min (Q2_K/Q4_K/Q5_K) */
};

/* Q4_K/Q5_K 12-byte packing (k_quant_get_scale_min), four sub-blocks per 32-bit word. */
INLINE void kq_unpack_scale_min(const uint8_t *p, __m128i *sc, __m128i *mn) {
    uint32_t w0, w1, w2;
    memcpy(&w0, p, 4);
    memcpy(&w1, p + 4, 4);
    memcpy(&w2, p + 8, 4);
    uint32_t sc_lo = w0 & 0x3f3f3f3f, mn_lo = w1 & 0x3f3f3f3f;
    uint32_t sc_hi = (w2 & 0x0f0f0f0f) | ((w0 >> 6) & 0x03030303) << 4;
    uint32_t mn_hi = ((w2 >> 4) & 0x0f0f0f0f) | ((w1 >> 6) & 0x03030303) << 4;
    *sc = _mm_cvtepu8_epi16(_mm_set_epi32(0, 0, (int)sc_hi, (int)sc_lo));
    *mn = _mm_cvtepu8_epi16(_mm_set_epi32(0, 0, (int)mn_hi, (int)mn_lo));
}

INLINE struct kq_row kq_row_load(int type, const char *blk) {
    struct kq_row r;
    memset(&r, 0, sizeof(r));
    if (type == KQ_Q4_K || type == KQ_Q5_K) {
        const struct block_q4_k *b = (const struct block_q4_k *)blk; /* same head in Q5_K */
        __m128i sc;
        kq_unpack_scale_min(b->scales, &sc, &r.mn);
        r.sc = _mm256_castsi128_si256(sc);
        r.d = f16_to_f32(b->d);
        r.dmin = f16_to_f32(b->dmin);
    } else if (type == KQ_Q6_K) {
        const struct block_q6_k *b = (const struct block_q6_k *)blk;
        r.sc = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)b->scales));
        r.neg = _mm256_sub_epi16(_mm256_setzero_si256(), _mm256_slli_epi16(r.sc, 5));
        r.d = f16_to_f32(b->d);
    } else if (type == KQ_Q2_K) { /* scales[i]: low nibble scale, high nibble min */
        const struct block_q2_k *b = (const struct block_q2_k *)blk;
        __m256i v = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)b->scales));
        r.sc = _mm256_and_si256(v, _mm256_set1_epi16(0x0f));
        r.mn16 = _mm256_srli_epi16(v, 4);
        r.d = f16_to_f32(b->d);
        r.dmin = f16_to_f32(b->dmin);
    } else if (type == KQ_Q3_K) { /* q3_k_get_scale: low nibbles in bytes 0-7 (j < 8: low,
                                   * else high nibble of byte j - 8), 2 high bits of scale j at
                                   * bits 2(j/4) of byte 8 + j%4; stored + 32 */
        const struct block_q3_k *b = (const struct block_q3_k *)blk;
        __m128i v = _mm_loadl_epi64((const __m128i *)b->scales);
        __m128i lo = _mm_unpacklo_epi64(_mm_and_si128(v, _mm_set1_epi8(0x0f)),
                                        _mm_and_si128(_mm_srli_epi16(v, 4), _mm_set1_epi8(0x0f)));
        uint32_t hw;
        memcpy(&hw, b->scales + 8, 4);
        __m256i h = _mm256_cvtepu8_epi16(
            _mm_shuffle_epi8(_mm_cvtsi32_si128((int)hw),
                             _mm_setr_epi8(0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3)));
        h = _mm256_srlv_epi16(h, _mm256_setr_epi16(0, 0, 0, 0, 2, 2, 2, 2, 4, 4, 4, 4, 6, 6, 6, 6));
        h = _mm256_slli_epi16(_mm256_and_si256(h, _mm256_set1_epi16(3)), 4);
        r.sc =
            _mm256_sub_epi16(_mm256_or_si256(_mm256_cvtepu8_epi16(lo), h), _mm256_set1_epi16(32));
        r.neg = _mm256_sub_epi16(_mm256_setzero_si256(), _mm256_slli_epi16(r.sc, 2));
        r.d = f16_to_f32(b->d);
    } else {
        const struct block_iq4_xs *b = (const struct block_iq4_xs *)blk;
        uint32_t sl;
        memcpy(&sl, b->scales_l, 4);
        __m128i lo = _mm_unpacklo_epi8(_mm_cvtsi32_si128((int)(sl & 0x0f0f0f0f)),
                                       _mm_cvtsi32_si128((int)((sl >> 4) & 0x0f0f0f0f)));
        __m128i hi = _mm_srlv_epi16(_mm_set1_epi16((short)b->scales_h),
                                    _mm_setr_epi16(0, 2, 4, 6, 8, 10, 12, 14));
        hi = _mm_slli_epi16(_mm_and_si128(hi, _mm_set1_epi16(3)), 4);
        __m128i ls = _mm_or_si128(_mm_cvtepu8_epi16(lo), hi);
        r.sc = _mm256_castsi128_si256(_mm_sub_epi16(ls, _mm_set1_epi16(32)));
        r.d = f16_to_f32(b->d);
    }
    return r;
}

/* Sub-block of each int16 pair of a 64-value chunk, relative to the chunk's first sub-block. */
static const int16_t g_pair_sub32[32] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                         1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
static const int16_t g_pair_sub16[32] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                         2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3};

/* int16 scale of every pair of chunk c's 64 values (vpmaddubsw pairs them). */
INLINE __m512i kq_chunk_scales(int type, const struct kq_row *r, int c) {
    int q6 = kq_sub16(type); /* sub-blocks of 16 values, else of 32 */
    __m512i idx = _mm512_add_epi16(_mm512_loadu_si512(q6 ? g_pair_sub16 : g_pair_sub32),
                                   _mm512_set1_epi16((short)(q6 ? 4 * c : 2 * c)));
    return _mm512_permutexvar_epi16(idx, _mm512_castsi256_si512(r->sc));
}

/* Chunk c (values 64c .. 64c+63) of a super-block as 64 unsigned bytes in element order. For
 * IQ4_XS the bytes are |value| and *neg marks the negative values. */
INLINE __m512i kq_chunk_weights(int type, const char *blk, int c, __mmask64 *neg) {
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    if (type == KQ_Q4_K || type == KQ_Q5_K) {
        const uint8_t *qs = type == KQ_Q4_K ? ((const struct block_q4_k *)blk)->qs
                                            : ((const struct block_q5_k *)blk)->qs;
        __m512i v = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(qs + 32 * c)));
        __m512i q = _mm512_and_si512(_mm512_mask_srli_epi16(v, 0xffff0000, v, 4), m4);
        if (type == KQ_Q4_K) return q;
        /* 5th bit: bit 2c of qh[l] for the first 32 values, bit 2c+1 for the next 32 */
        const struct block_q5_k *b = (const struct block_q5_k *)blk;
        __m512i h = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)b->qh));
        h = _mm512_mask_srli_epi16(h, 0xffff0000, h, 1);
        h = 2 * c <= 4 ? _mm512_slli_epi16(h, (unsigned)(4 - 2 * c)) : _mm512_srli_epi16(h, 2);
        return _mm512_or_si512(q, _mm512_and_si512(h, _mm512_set1_epi8(0x10)));
    }
    if (type == KQ_Q2_K || type == KQ_Q3_K) {
        /* half h = c/2; quarters j = 2(c%2), 2(c%2)+1: bits 2j of qs[32h + l]; Q3_K: plus 4 *
         * bit 4h + j of hmask[l] (the stored q + 4, 0..7) */
        int h = c / 2, j0 = 2 * (c % 2);
        const uint8_t *qs = type == KQ_Q2_K ? ((const struct block_q2_k *)blk)->qs
                                            : ((const struct block_q3_k *)blk)->qs;
        __m512i v = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(qs + 32 * h)));
        v = _mm512_mask_srli_epi16(v, 0xffff0000, v, 2);
        v = _mm512_and_si512(_mm512_srli_epi16(v, (unsigned)(2 * j0)), _mm512_set1_epi8(3));
        if (type == KQ_Q2_K) return v;
        const struct block_q3_k *b = (const struct block_q3_k *)blk;
        __m512i hm = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)b->hmask));
        hm = _mm512_mask_srli_epi16(hm, 0xffff0000, hm, 1);
        hm = _mm512_and_si512(_mm512_srli_epi16(hm, (unsigned)(4 * h + j0)), _mm512_set1_epi8(1));
        return _mm512_or_si512(v, _mm512_slli_epi16(hm, 2));
    }
    if (type == KQ_Q6_K) {
        /* half h = c/2; quarters k = 2(c%2), 2(c%2)+1: low nibble (c%2) of ql[64h .. 64h+63],
         * high 2 bits at bits 2k of qh[32h + l] */
        const struct block_q6_k *b = (const struct block_q6_k *)blk;
        int h = c / 2, kk = c % 2;
        __m512i l = _mm512_loadu_si512(b->ql + 64 * h);
        if (kk) l = _mm512_srli_epi16(l, 4);
        l = _mm512_and_si512(l, m4);
        __m512i hb = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(b->qh + 32 * h)));
        hb = _mm512_mask_srli_epi16(hb, 0xffff0000, hb, 2);
        if (!kk) hb = _mm512_slli_epi16(hb, 4); /* kk = 1: bits 4..5 already */
        return _mm512_or_si512(l, _mm512_and_si512(hb, _mm512_set1_epi8(0x30)));
    }
    /* IQ4_XS: sub-blocks 2c, 2c+1 = qs[32c .. 32c+31]; each 16 bytes give 16 low nibbles, then
     * 16 high nibbles */
    const struct block_iq4_xs *b = (const struct block_iq4_xs *)blk;
    __m512i v = _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(b->qs + 32 * c)));
    v = _mm512_shuffle_i64x2(v, v, _MM_SHUFFLE(1, 1, 0, 0));
    __m512i q = _mm512_and_si512(_mm512_mask_srli_epi16(v, 0xff00ff00, v, 4), m4);
    const __m512i abs_table = _mm512_broadcast_i32x4(
        _mm_setr_epi8(127, 104, 83, 65, 49, 35, 22, 10, 1, 13, 25, 38, 53, 69, 89, 113));
    *neg = _mm512_cmplt_epu8_mask(q, _mm512_set1_epi8(8)); /* kvalues_iq4nl[0..7] < 0 */
    return _mm512_shuffle_epi8(abs_table, q);
}

/* The 16 int32 lanes of v[p], p < n_pairs, summed: lane p of the result (a transposing tree). */
INLINE __m512i kq_sum_pairs(const __m512i *v, int n_pairs) {
    if (n_pairs == 1)
        return _mm512_castsi128_si512(_mm_cvtsi32_si128(_mm512_reduce_add_epi32(v[0])));
    const __m512i z = _mm512_setzero_si512();
    __m512i t[8], u[4];
#pragma GCC unroll 16
    for (int q = 0; q < 8; q++) {
        __m512i a = 2 * q < n_pairs ? v[2 * q] : z, b = 2 * q + 1 < n_pairs ? v[2 * q + 1] : z;
        t[q] = _mm512_add_epi32(_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b));
    }
#pragma GCC unroll 16
    for (int q = 0; q < 4; q++)
        u[q] = _mm512_add_epi32(_mm512_unpacklo_epi64(t[2 * q], t[2 * q + 1]),
                                _mm512_unpackhi_epi64(t[2 * q], t[2 * q + 1]));
    __m512i s01 = _mm512_add_epi32(_mm512_shuffle_i32x4(u[0], u[1], 0x88),
                                   _mm512_shuffle_i32x4(u[0], u[1], 0xdd));
    __m512i s23 = _mm512_add_epi32(_mm512_shuffle_i32x4(u[2], u[3], 0x88),
                                   _mm512_shuffle_i32x4(u[2], u[3], 0xdd));
    return _mm512_add_epi32(_mm512_shuffle_i32x4(s01, s23, 0x88),
                            _mm512_shuffle_i32x4(s01, s23, 0xdd));
}

INLINE void kq_tile(int type, int nw_max, int nx_max, const void *w, size_t w_stride, const void *x,
                    size_t x_stride, int64_t k, float *out, size_t out_stride, int n_w, int n_x) {
    CHECK(k % QK_K == 0);
    const size_t wb = kq_block_bytes(type);
    const int n_pairs = nw_max * nx_max;
    const int has_min = type == KQ_Q4_K || type == KQ_Q5_K || type == KQ_Q2_K;
    const char *wr[TILE_W], *xr[TILE_X];
#pragma GCC unroll 16
    for (int i = 0; i < nw_max; i++) wr[i] = tile_row(w, w_stride, i, n_w);
#pragma GCC unroll 16
    for (int j = 0; j < nx_max; j++) xr[j] = tile_row(x, x_stride, j, n_x);
    /* lane p = i * nx_max + j: row i, token j */
    const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512i lane_i = nx_max == 4 ? _mm512_srli_epi32(iota, 2) : iota;
    const __m512i lane_j =
        nx_max == 4 ? _mm512_and_si512(iota, _mm512_set1_epi32(3)) : _mm512_setzero_si512();
    __m512 sum = _mm512_setzero_ps();
    for (int64_t ib = 0; ib < k / QK_K; ib++) {
        const struct block_q8_k *yb[TILE_X];
        float rd[TILE_W] = {0}, rdmin[TILE_W] = {0}, ty[TILE_X] = {0};
        struct kq_row row[TILE_W];
        __m512i acc[TILE_W * TILE_X];
#pragma GCC unroll 16
        for (int j = 0; j < nx_max; j++) {
            yb[j] = (const struct block_q8_k *)xr[j] + ib;
            ty[j] = yb[j]->d;
        }
#pragma GCC unroll 16
        for (int i = 0; i < nw_max; i++) {
            row[i] = kq_row_load(type, wr[i] + (size_t)ib * wb);
            rd[i] = row[i].d;
            rdmin[i] = row[i].dmin;
        }
#pragma GCC unroll 16
        for (int p = 0; p < n_pairs; p++) acc[p] = _mm512_setzero_si512();
        for (int c = 0; c < QK_K / 64; c++) {
            __m512i a[TILE_X];
#pragma GCC unroll 16
            for (int j = 0; j < nx_max; j++) a[j] = _mm512_loadu_si512(yb[j]->qs + 64 * c);
#pragma GCC unroll 16
            for (int i = 0; i < nw_max; i++) {
                __mmask64 neg = 0;
                __m512i q = kq_chunk_weights(type, wr[i] + (size_t)ib * wb, c, &neg);
                __m512i sc = kq_chunk_scales(type, &row[i], c);
#pragma GCC unroll 16
                for (int j = 0; j < nx_max; j++) {
                    __m512i aj = a[j];
                    if (type == KQ_IQ4_XS)
                        aj = _mm512_mask_sub_epi8(aj, neg, _mm512_setzero_si512(), aj);
                    acc[i * nx_max + j] =
                        _mm512_dpwssd_epi32(acc[i * nx_max + j], _mm512_maddubs_epi16(q, aj), sc);
                }
            }
        }
        if (type == KQ_Q6_K || type == KQ_Q3_K) /* the offset of the stored q */
#pragma GCC unroll 16
            for (int i = 0; i < nw_max; i++)
#pragma GCC unroll 16
                for (int j = 0; j < nx_max; j++) {
                    __m256i bs = _mm256_loadu_si256((const __m256i *)yb[j]->bsums);
                    acc[i * nx_max + j] =
                        _mm512_dpwssd_epi32(acc[i * nx_max + j], _mm512_zextsi256_si512(row[i].neg),
                                            _mm512_zextsi256_si512(bs));
                }
        __m512 fi = _mm512_cvtepi32_ps(kq_sum_pairs(acc, n_pairs));
        __m512 dx = _mm512_permutexvar_ps(lane_i, _mm512_zextps128_ps512(_mm_loadu_ps(rd)));
        __m512 dy = _mm512_permutexvar_ps(lane_j, _mm512_zextps128_ps512(_mm_loadu_ps(ty)));
        __m512 t = _mm512_mul_ps(_mm512_mul_ps(dx, dy), fi);
        if (has_min) {
            /* isum_min[p] = sum_s m_i[s] b_j[s], with b the sums of the mins' sub-blocks
             * (Q4_K/Q5_K: bsums[2s] + bsums[2s+1]; Q2_K: bsums[s], two halves of 8): int32
             * lane 4r + t of allm / allb holds the int16 pair (s = 2t, 2t+1) of row / token r */
            __m512i mi = _mm512_setzero_si512();
            for (int half = 0; half < (type == KQ_Q2_K ? 2 : 1); half++) {
                __m512i allm = _mm512_setzero_si512(), allb = _mm512_setzero_si512();
#pragma GCC unroll 16
                for (int i = 0; i < nw_max; i++) {
                    __m128i m = type == KQ_Q2_K ? (half ? _mm256_extracti128_si256(row[i].mn16, 1)
                                                        : _mm256_castsi256_si128(row[i].mn16))
                                                : row[i].mn;
                    allm = _mm512_mask_broadcast_i32x4(allm, (__mmask16)(0xf << (4 * i)), m);
                }
#pragma GCC unroll 16
                for (int j = 0; j < nx_max; j++) {
                    __m256i bs = _mm256_loadu_si256((const __m256i *)yb[j]->bsums);
                    __m128i b2 =
                        type == KQ_Q2_K
                            ? (half ? _mm256_extracti128_si256(bs, 1) : _mm256_castsi256_si128(bs))
                            : _mm256_cvtepi32_epi16(_mm256_madd_epi16(bs, _mm256_set1_epi16(1)));
                    allb = _mm512_mask_broadcast_i32x4(allb, (__mmask16)(0xf << (4 * j)), b2);
                }
#pragma GCC unroll 16
                for (int s = 0; s < 4; s++) {
                    __m512i im =
                        _mm512_add_epi32(_mm512_slli_epi32(lane_i, 2), _mm512_set1_epi32(s));
                    __m512i jb =
                        _mm512_add_epi32(_mm512_slli_epi32(lane_j, 2), _mm512_set1_epi32(s));
                    mi = _mm512_dpwssd_epi32(mi, _mm512_permutexvar_epi32(im, allm),
                                             _mm512_permutexvar_epi32(jb, allb));
                }
            }
            __m512 dm = _mm512_permutexvar_ps(lane_i, _mm512_zextps128_ps512(_mm_loadu_ps(rdmin)));
            t = _mm512_sub_ps(t, _mm512_mul_ps(_mm512_mul_ps(dm, dy), _mm512_cvtepi32_ps(mi)));
        }
        sum = _mm512_add_ps(sum, t);
    }
    float res[16];
    _mm512_storeu_ps(res, sum);
    for (int j = 0; j < n_x && j < nx_max; j++)
        for (int i = 0; i < n_w && i < nw_max; i++)
            out[(size_t)j * out_stride + (size_t)i] = res[i * nx_max + j];
}

/* ---- Q4_K decode: four rows against one token ----
 * kq_tile spends most of a decode step outside the products (a scale permute per 64 values, the
 * 6-bit scales unpacked one row at a time), and decode speed follows the kernel's speed even
 * when memory is the limit. Here each row's 128 bytes of quants are two loads: low nibbles give
 * sub-blocks (0, 2) and (4, 6), high nibbles (1, 3) and (5, 7), against the token's bytes
 * arranged to match once per super-block for all rows. vpdpbusd sums four products per int32
 * lane (|lane| <= 4 * 15 * 127, so it fits int16): two such vectors are packed to int16 and
 * multiplied by their sub-block scales in one vpdpwssd. The four rows' 12-byte scale/min
 * fields are unpacked together, one row per 128-bit lane. Every sum is exact, and the f32 steps
 * are q4_k_dot_q8_k_ref's, super-block by super-block, so the result has the same bits. */
/* word w of a sub-block scale vector: sub-block (w / 16) * 2 + (w % 8) / 4 of the row's 8 */
static const int16_t g_q4k_sc_pat[32] = {0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1,
                                         2, 2, 2, 2, 3, 3, 3, 3, 2, 2, 2, 2, 3, 3, 3, 3};

INLINE void kq45_dec4(int q5, const void *w, size_t ws, const void *x, int64_t k, float *out,
                      int n_w) {
    CHECK(k % QK_K == 0);
    const size_t bb = q5 ? sizeof(struct block_q5_k) : sizeof(struct block_q4_k);
    const char *wr[4];
    for (int i = 0; i < 4; i++) wr[i] = tile_row(w, ws, i, n_w);
    const struct block_q8_k *y = x;
    const __m512i m4 = _mm512_set1_epi8(0x0f), zero = _mm512_setzero_si512();
    /* per 128-bit lane (one row): bytes 0-3 d, dmin; 4-15 the 12 packed bytes s[0..11] */
    const __m512i idx_p = _mm512_broadcast_i32x4(
        _mm_setr_epi8(4, 5, 6, 7, 12, 13, 14, 15, 8, 9, 10, 11, 12, 13, 14, 15));
    const __m512i idx_q = _mm512_broadcast_i32x4(
        _mm_setr_epi8(-1, -1, -1, -1, 4, 5, 6, 7, -1, -1, -1, -1, 8, 9, 10, 11));
    const __m512i mask_a = _mm512_broadcast_i32x4(
        _mm_setr_epi8(63, 63, 63, 63, 15, 15, 15, 15, 63, 63, 63, 63, 0, 0, 0, 0));
    const __m512i mask_b =
        _mm512_broadcast_i32x4(_mm_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 15, 15, 15, 15));
    const __m512i lane0 = _mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
    __m512i sidx[4][2]; /* row i's scales are words 8i .. 8i+7 of sc16; [1]: sub-blocks + 4 */
    for (int i = 0; i < 4; i++) {
        sidx[i][0] =
            _mm512_add_epi16(_mm512_loadu_si512(g_q4k_sc_pat), _mm512_set1_epi16((short)(8 * i)));
        sidx[i][1] = _mm512_add_epi16(sidx[i][0], _mm512_set1_epi16(4));
    }
    __m128 sum = _mm_setzero_ps();
    for (int64_t ib = 0; ib < k / QK_K; ib++) {
        const struct block_q8_k *yb = y + ib;
        __m512i a0 = _mm512_loadu_si512(yb->qs), a1 = _mm512_loadu_si512(yb->qs + 64);
        __m512i a2 = _mm512_loadu_si512(yb->qs + 128), a3 = _mm512_loadu_si512(yb->qs + 192);
        __m512i alo0 = _mm512_shuffle_i64x2(a0, a1, 0x44),
                ahi0 = _mm512_shuffle_i64x2(a0, a1, 0xee);
        __m512i alo1 = _mm512_shuffle_i64x2(a2, a3, 0x44),
                ahi1 = _mm512_shuffle_i64x2(a2, a3, 0xee);
        const struct block_q4_k *b[4]; /* the same head in Q5_K */
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++) b[i] = (const struct block_q4_k *)(wr[i] + (size_t)ib * bb);
        /* scales (bytes 0-7) and mins (8-15) of row i in lane i: k_quant_get_scale_min */
        __m512i h = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)b[0]));
        h = _mm512_inserti32x4(h, _mm_loadu_si128((const __m128i *)b[1]), 1);
        h = _mm512_inserti32x4(h, _mm_loadu_si128((const __m128i *)b[2]), 2);
        h = _mm512_inserti32x4(h, _mm_loadu_si128((const __m128i *)b[3]), 3);
        __m512i p = _mm512_shuffle_epi8(h, idx_p), q = _mm512_shuffle_epi8(h, idx_q);
        __m512i r =
            _mm512_or_si512(_mm512_or_si512(_mm512_and_si512(p, mask_a),
                                            _mm512_and_si512(_mm512_srli_epi16(p, 4), mask_b)),
                            _mm512_and_si512(_mm512_srli_epi16(q, 2), _mm512_set1_epi8(0x30)));
        __m512i sc16 = _mm512_unpacklo_epi8(r, zero), mn16 = _mm512_unpackhi_epi8(r, zero);
        __m512i acc[4];
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++) {
            const uint8_t *qs = q5 ? ((const struct block_q5_k *)b[i])->qs : b[i]->qs;
            __m512i w0 = _mm512_loadu_si512(qs), w1 = _mm512_loadu_si512(qs + 64);
            __m512i q0 = _mm512_and_si512(w0, m4),
                    q1 = _mm512_and_si512(_mm512_srli_epi16(w0, 4), m4);
            __m512i q2 = _mm512_and_si512(w1, m4),
                    q3 = _mm512_and_si512(_mm512_srli_epi16(w1, 4), m4);
            if (q5) { /* value 32j + l has its 5th bit in bit j of qh[l]; byte bit 0 of qh:
                       * j = 0 (bytes 0-31: values 0-31), j = 2 (bytes 32-63: values 64-95) */
                const __m512i m10 = _mm512_set1_epi8(0x10);
                __m512i qh = _mm512_broadcast_i64x4(
                    _mm256_loadu_si256((const __m256i *)((const struct block_q5_k *)b[i])->qh));
                qh = _mm512_mask_srli_epi16(qh, 0xffff0000, qh, 2);
                q0 = _mm512_or_si512(q0, _mm512_and_si512(_mm512_slli_epi16(qh, 4), m10));
                q1 = _mm512_or_si512(q1, _mm512_and_si512(_mm512_slli_epi16(qh, 3), m10));
                q2 = _mm512_or_si512(q2, _mm512_and_si512(qh, m10));
                q3 = _mm512_or_si512(q3, _mm512_and_si512(_mm512_srli_epi16(qh, 1), m10));
            }
            __m512i p0 = _mm512_dpbusd_epi32(zero, q0, alo0);
            __m512i p1 = _mm512_dpbusd_epi32(zero, q1, ahi0);
            __m512i p2 = _mm512_dpbusd_epi32(zero, q2, alo1);
            __m512i p3 = _mm512_dpbusd_epi32(zero, q3, ahi1);
            __m512i s01 = _mm512_permutexvar_epi16(sidx[i][0], sc16);
            __m512i s23 = _mm512_permutexvar_epi16(sidx[i][1], sc16);
            acc[i] = _mm512_dpwssd_epi32(_mm512_madd_epi16(_mm512_packs_epi32(p0, p1), s01),
                                         _mm512_packs_epi32(p2, p3), s23);
        }
        /* mins: lane i sums m_j * (bsums[2j] + bsums[2j+1]) */
        __m256i bs = _mm256_loadu_si256((const __m256i *)yb->bsums);
        __m128i b2 = _mm256_cvtepi32_epi16(_mm256_madd_epi16(bs, _mm256_set1_epi16(1)));
        __m512i mm = _mm512_madd_epi16(mn16, _mm512_broadcast_i32x4(b2));
        mm = _mm512_add_epi32(mm, _mm512_shuffle_epi32(mm, _MM_PERM_BADC));
        mm = _mm512_add_epi32(mm, _mm512_shuffle_epi32(mm, _MM_PERM_CDAB));
        __m128 fi = _mm_cvtepi32_ps(_mm512_castsi512_si128(kq_sum_pairs(acc, 4)));
        __m128 mi = _mm_cvtepi32_ps(_mm512_castsi512_si128(_mm512_permutexvar_epi32(lane0, mm)));
        __m256 dd = _mm256_cvtph_ps(_mm512_castsi512_si128(_mm512_permutexvar_epi32(lane0, h)));
        __m128 dx = _mm256_castps256_ps128(
            _mm256_permutexvar_ps(_mm256_setr_epi32(0, 2, 4, 6, 0, 0, 0, 0), dd));
        __m128 dm = _mm256_castps256_ps128(
            _mm256_permutexvar_ps(_mm256_setr_epi32(1, 3, 5, 7, 0, 0, 0, 0), dd));
        __m128 dy = _mm_set1_ps(yb->d);
        sum = _mm_add_ps(sum, _mm_sub_ps(_mm_mul_ps(_mm_mul_ps(dx, dy), fi),
                                         _mm_mul_ps(_mm_mul_ps(dm, dy), mi)));
    }
    float res[4];
    _mm_storeu_ps(res, sum);
    for (int i = 0; i < n_w && i < 4; i++) out[i] = res[i];
}

static void q4_k_dec4(const void *w, size_t ws, const void *x, int64_t k, float *out, int n_w) {
    kq45_dec4(0, w, ws, x, k, out, n_w);
}
static void q5_k_dec4(const void *w, size_t ws, const void *x, int64_t k, float *out, int n_w) {
    kq45_dec4(1, w, ws, x, k, out, n_w);
}

/* ---- Q6_K decode: four rows against one token ----
 * The same plan as q4_k_dec4. Each half super-block is 64 bytes of low nibbles and 32 of high
 * bit pairs: the low nibbles with bits 0-1 / 2-3 of qh give values 0-63 in element order, the
 * high nibbles with bits 4-5 / 6-7 values 64-127, so the token's bytes are used as stored.
 * vpdpbusd sums q * a over four values per lane, starting from -32 * (the four a's) (computed
 * once per super-block for all rows), i.e. the sum of (q - 32) * a: |lane| <= 4 * 32 * 127 fits
 * int16, so two vectors pack into one vpdpwssd against their 16-value groups' int8 scales. */
/* word w of a group scale vector: group w / 8 + 4 * ((w % 8) / 4) (+ 8 for the second) */
static const int16_t g_q6k_sc_pat[32] = {0, 0, 0, 0, 4, 4, 4, 4, 1, 1, 1, 1, 5, 5, 5, 5,
                                         2, 2, 2, 2, 6, 6, 6, 6, 3, 3, 3, 3, 7, 7, 7, 7};

static void q6_k_dec4(const void *w, size_t ws, const void *x, int64_t k, float *out, int n_w) {
    CHECK(k % QK_K == 0);
    const char *wr[4];
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) wr[i] = tile_row(w, ws, i, n_w);
    const struct block_q8_k *y = x;
    const __m512i m4 = _mm512_set1_epi8(0x0f), m30 = _mm512_set1_epi8(0x30);
    const __m512i zero = _mm512_setzero_si512(), c32 = _mm512_set1_epi8(32);
    __m512i sidx[2][2]; /* rows 2r, 2r+1: scales at words 0-15 / 16-31 of sc[r] */
    for (int r = 0; r < 2; r++)
        for (int h = 0; h < 2; h++)
            sidx[r][h] = _mm512_add_epi16(_mm512_loadu_si512(g_q6k_sc_pat),
                                          _mm512_set1_epi16((short)(16 * r + 8 * h)));
    __m128 sum = _mm_setzero_ps();
    for (int64_t ib = 0; ib < k / QK_K; ib++) {
        const struct block_q8_k *yb = y + ib;
        __m512i a[4], na[4];
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++) {
            a[j] = _mm512_loadu_si512(yb->qs + 64 * j);
            na[j] = _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, c32, a[j]));
        }
        const struct block_q6_k *b[4];
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++) b[i] = (const struct block_q6_k *)wr[i] + ib;
        __m512i sc[2]; /* rows 2r, 2r+1: 16 int16 scales each */
#pragma GCC unroll 2
        for (int r = 0; r < 2; r++)
            sc[r] = _mm512_cvtepi8_epi16(_mm256_inserti128_si256(
                _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)b[2 * r]->scales)),
                _mm_loadu_si128((const __m128i *)b[2 * r + 1]->scales), 1));
        __m512i acc[4];
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++) {
            __m512i p[4];
#pragma GCC unroll 2
            for (int n = 0; n < 2; n++) {
                __m512i l = _mm512_loadu_si512(b[i]->ql + 64 * n);
                __m512i hb = _mm512_broadcast_i64x4(
                    _mm256_loadu_si256((const __m256i *)(b[i]->qh + 32 * n)));
                hb = _mm512_mask_srli_epi16(hb, 0xffff0000, hb, 2);
                __m512i qlo = _mm512_or_si512(_mm512_and_si512(l, m4),
                                              _mm512_and_si512(_mm512_slli_epi16(hb, 4), m30));
                __m512i qhi = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(l, 4), m4),
                                              _mm512_and_si512(hb, m30));
                p[2 * n] = _mm512_dpbusd_epi32(na[2 * n], qlo, a[2 * n]);
                p[2 * n + 1] = _mm512_dpbusd_epi32(na[2 * n + 1], qhi, a[2 * n + 1]);
            }
            __m512i s01 = _mm512_permutexvar_epi16(sidx[i % 2][0], sc[i / 2]);
            __m512i s23 = _mm512_permutexvar_epi16(sidx[i % 2][1], sc[i / 2]);
            acc[i] = _mm512_dpwssd_epi32(_mm512_madd_epi16(_mm512_packs_epi32(p[0], p[1]), s01),
                                         _mm512_packs_epi32(p[2], p[3]), s23);
        }
        __m128 fi = _mm_cvtepi32_ps(_mm512_castsi512_si128(kq_sum_pairs(acc, 4)));
        __m128 dx = _mm_cvtph_ps(_mm_setr_epi16((short)b[0]->d, (short)b[1]->d, (short)b[2]->d,
                                                (short)b[3]->d, 0, 0, 0, 0));
        sum = _mm_add_ps(sum, _mm_mul_ps(_mm_mul_ps(dx, _mm_set1_ps(yb->d)), fi));
    }
    float res[4];
    _mm_storeu_ps(res, sum);
    for (int i = 0; i < n_w && i < 4; i++) out[i] = res[i];
}

static float q2_k_dot_q8_k_avx512(const void *w, const void *x, int64_t n) {
    float out;
    kq_tile(KQ_Q2_K, 1, 1, w, 0, x, 0, n, &out, 0, 1, 1);
    return out;
}
static float q3_k_dot_q8_k_avx512(const void *w, const void *x, int64_t n) {
    float out;
    kq_tile(KQ_Q3_K, 1, 1, w, 0, x, 0, n, &out, 0, 1, 1);
    return out;
}
static void q2_k_gemm_tile_avx512(const void *w, size_t ws, const void *x, size_t xs, int64_t k,
                                  float *out, size_t os, int n_w, int n_x) {
    if (n_x == 1)
        kq_tile(KQ_Q2_K, TILE_W, 1, w, ws, x, xs, k, out, os, n_w, n_x);
    else
        kq_tile(KQ_Q2_K, TILE_W, TILE_X, w, ws, x, xs, k, out, os, n_w, n_x);
}
static void q3_k_gemm_tile_avx512(const void *w, size_t ws, const void *x, size_t xs, int64_t k,
                                  float *out, size_t os, int n_w, int n_x) {
    if (n_x == 1)
        kq_tile(KQ_Q3_K, TILE_W, 1, w, ws, x, xs, k, out, os, n_w, n_x);
    else
        kq_tile(KQ_Q3_K, TILE_W, TILE_X, w, ws, x, xs, k, out, os, n_w, n_x);
}
static float q4_k_dot_q8_k_avx512(const void *w, const void *x, int64_t n) {
    float out;
    kq_tile(KQ_Q4_K, 1, 1, w, 0, x, 0, n, &out, 0, 1, 1);
    return out;
}
static float q5_k_dot_q8_k_avx512(const void *w, const void *x, int64_t n) {
    float out;
    kq_tile(KQ_Q5_K, 1, 1, w, 0, x, 0, n, &out, 0, 1, 1);
    return out;
}
static float q6_k_dot_q8_k_avx512(const void *w, const void *x, int64_t n) {
    float out;
    kq_tile(KQ_Q6_K, 1, 1, w, 0, x, 0, n, &out, 0, 1, 1);
    return out;
}
static float iq4_xs_dot_q8_k_avx512(const void *w, const void *x, int64_t n) {
    float out;
    kq_tile(KQ_IQ4_XS, 1, 1, w, 0, x, 0, n, &out, 0, 1, 1);
    return out;
}
static void q4_k_gemm_tile_avx512(const void *w, size_t ws, const void *x, size_t xs, int64_t k,
                                  float *out, size_t os, int n_w, int n_x) {
    if (n_x == 1)
        q4_k_dec4(w, ws, x, k, out, n_w);
    else
        kq_tile(KQ_Q4_K, TILE_W, TILE_X, w, ws, x, xs, k, out, os, n_w, n_x);
}
static void q5_k_gemm_tile_avx512(const void *w, size_t ws, const void *x, size_t xs, int64_t k,
                                  float *out, size_t os, int n_w, int n_x) {
    if (n_x == 1)
        q5_k_dec4(w, ws, x, k, out, n_w);
    else
        kq_tile(KQ_Q5_K, TILE_W, TILE_X, w, ws, x, xs, k, out, os, n_w, n_x);
}
static void q6_k_gemm_tile_avx512(const void *w, size_t ws, const void *x, size_t xs, int64_t k,
                                  float *out, size_t os, int n_w, int n_x) {
    if (n_x == 1)
        q6_k_dec4(w, ws, x, k, out, n_w);
    else
        kq_tile(KQ_Q6_K, TILE_W, TILE_X, w, ws, x, xs, k, out, os, n_w, n_x);
}
static void iq4_xs_gemm_tile_avx512(const void *w, size_t ws, const void *x, size_t xs, int64_t k,
                                    float *out, size_t os, int n_w, int n_x) {
    if (n_x == 1)
        kq_tile(KQ_IQ4_XS, TILE_W, 1, w, ws, x, xs, k, out, os, n_w, n_x);
    else
        kq_tile(KQ_IQ4_XS, TILE_W, TILE_X, w, ws, x, xs, k, out, os, n_w, n_x);
}

/* With AMX-INT8 (cpu_features.has_amx_int8) the K-quant tiles grow to 16 rows x 256 tokens
 * (the B tiles of 16 rows are built once for 256 tokens: 0.6B Q4_K_M pp512 +25% over 64):
 * whole groups of 16 tokens go to the AMX kernel (kernels_amx.c), the rest to the 4 x 4 / 4 x 1
 * kernels above; all give the same bits. */
enum { AMX_W = 16, AMX_X = 256 };

INLINE void kq_amx_tile(int type, enum dtype dt, int q4k_scaled, const void *w, size_t ws,
                        const void *x, size_t xs, int64_t k, float *out, size_t os, int n_w,
                        int n_x) {
    int groups = n_x / 16;
    if (groups) cpu_amx_kq_tiles(dt, q4k_scaled, w, ws, x, xs, k, out, os, n_w, groups);
    for (int j = 16 * groups; j < n_x; j += TILE_X) {
        int nx = n_x - j < TILE_X ? n_x - j : TILE_X;
        for (int i = 0; i < n_w; i += TILE_W) {
            int nw = n_w - i < TILE_W ? n_w - i : TILE_W;
            const char *wi = (const char *)w + (size_t)i * ws,
                       *xj = (const char *)x + (size_t)j * xs;
            float *o = out + (size_t)j * os + (size_t)i;
            if (nx == 1 && type == KQ_Q4_K)
                q4_k_dec4(wi, ws, xj, k, o, nw);
            else if (nx == 1 && type == KQ_Q5_K)
                q5_k_dec4(wi, ws, xj, k, o, nw);
            else if (nx == 1 && type == KQ_Q6_K)
                q6_k_dec4(wi, ws, xj, k, o, nw);
            else if (nx == 1)
                kq_tile(type, TILE_W, 1, wi, ws, xj, xs, k, o, os, nw, nx);
            else
                kq_tile(type, TILE_W, TILE_X, wi, ws, xj, xs, k, o, os, nw, nx);
        }
    }
}

static void q4_k_gemm_tile_amx(const void *w, size_t ws, const void *x, size_t xs, int64_t k,
                               float *out, size_t os, int n_w, int n_x) {
    kq_amx_tile(KQ_Q4_K, DTYPE_Q4_K, 0, w, ws, x, xs, k, out, os, n_w, n_x);
}
/* Q8_0 in llama.cpp's AMX order (q8_0_dot_q8_0_blk_ref): whole groups of 16 tokens in one AMX
 * call, each other token (decode) through q8_0_blk_dec4, 4 rows at a time. */
static void q8_0_blk_tile_amx(const void *w, size_t ws, const void *x, size_t xs, int64_t k,
                              float *out, size_t os, int n_w, int n_x) {
    int groups = n_x / 16;
    if (groups) cpu_amx_q8_0_tiles(w, ws, x, xs, k, out, os, n_w, groups);
    for (int j = 16 * groups; j < n_x; j++)
        for (int i = 0; i < n_w; i += 4)
            q8_0_blk_dec4((const char *)w + (size_t)i * ws, ws, (const char *)x + (size_t)j * xs, k,
                          out + (size_t)j * os + (size_t)i, n_w - i < 4 ? n_w - i : 4);
}

static void q4_k_gemm_tile_amx_vbmi(const void *w, size_t ws, const void *x, size_t xs, int64_t k,
                                    float *out, size_t os, int n_w, int n_x) {
    kq_amx_tile(KQ_Q4_K, DTYPE_Q4_K, 1, w, ws, x, xs, k, out, os, n_w, n_x);
}
static void q5_k_gemm_tile_amx(const void *w, size_t ws, const void *x, size_t xs, int64_t k,
                               float *out, size_t os, int n_w, int n_x) {
    kq_amx_tile(KQ_Q5_K, DTYPE_Q5_K, 0, w, ws, x, xs, k, out, os, n_w, n_x);
}
static void q6_k_gemm_tile_amx(const void *w, size_t ws, const void *x, size_t xs, int64_t k,
                               float *out, size_t os, int n_w, int n_x) {
    kq_amx_tile(KQ_Q6_K, DTYPE_Q6_K, 0, w, ws, x, xs, k, out, os, n_w, n_x);
}
static void iq4_xs_gemm_tile_amx(const void *w, size_t ws, const void *x, size_t xs, int64_t k,
                                 float *out, size_t os, int n_w, int n_x) {
    kq_amx_tile(KQ_IQ4_XS, DTYPE_IQ4_XS, 0, w, ws, x, xs, k, out, os, n_w, n_x);
}

/* ============================================================================================
 * Dequantization (get_rows, quantized KV caches)
 * The same f32 expressions as the *_dequantize_row_ref functions, operation for operation.
 * ============================================================================================ */

INLINE __m512 bytes_to_ps(__m128i b) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b));
}

static void q8_0_to_f32_avx512(const void *vx, float *y, int64_t n) {
    CHECK(n % QK8_0 == 0);
    const struct block_q8_0 *x = vx;
    for (int64_t ib = 0; ib < n / QK8_0; ib++) {
        __m512 d = _mm512_set1_ps(f16_to_f32(x[ib].d));
        for (int h = 0; h < 2; h++)
            _mm512_storeu_ps(y + ib * QK8_0 + 16 * h,
                             _mm512_mul_ps(d, bytes_to_ps(_mm_loadu_si128(
                                                  (const __m128i *)(x[ib].qs + 16 * h)))));
    }
}

/* Q4_0 (value q - 8) and IQ4_NL (table value): nibbles as signed bytes. */
INLINE void nibble_blocks_to_f32(int iq4, const void *vx, float *y, int64_t n) {
    CHECK(n % QK4_0 == 0);
    const struct block_q4_0 *x = vx; /* same layout as block_iq4_nl */
    const __m128i m4 = _mm_set1_epi8(0x0f), eight = _mm_set1_epi8(8);
    const __m128i table = _mm_loadu_si128((const __m128i *)kvalues_iq4nl);
    for (int64_t ib = 0; ib < n / QK4_0; ib++) {
        __m512 d = _mm512_set1_ps(f16_to_f32(x[ib].d));
        __m128i v = _mm_loadu_si128((const __m128i *)x[ib].qs);
        __m128i lo = _mm_and_si128(v, m4), hi = _mm_and_si128(_mm_srli_epi16(v, 4), m4);
        lo = iq4 ? _mm_shuffle_epi8(table, lo) : _mm_sub_epi8(lo, eight);
        hi = iq4 ? _mm_shuffle_epi8(table, hi) : _mm_sub_epi8(hi, eight);
        _mm512_storeu_ps(y + ib * QK4_0, _mm512_mul_ps(d, bytes_to_ps(lo)));
        _mm512_storeu_ps(y + ib * QK4_0 + 16, _mm512_mul_ps(d, bytes_to_ps(hi)));
    }
}

static void q5_0_to_f32_avx512(const void *vx, float *y, int64_t n) {
    CHECK(n % QK5_0 == 0);
    const struct block_q5_0 *x = vx;
    for (int64_t ib = 0; ib < n / QK5_0; ib++) {
        __m512 d = _mm512_set1_ps(f16_to_f32(x[ib].d));
        __m256i q = fam_weights(FAM_Q5_0, (const char *)&x[ib], _mm256_setzero_si256());
        q = _mm256_sub_epi8(q, _mm256_set1_epi8(16));
        _mm512_storeu_ps(y + ib * QK5_0, _mm512_mul_ps(d, bytes_to_ps(_mm256_castsi256_si128(q))));
        _mm512_storeu_ps(y + ib * QK5_0 + 16,
                         _mm512_mul_ps(d, bytes_to_ps(_mm256_extracti128_si256(q, 1))));
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
        __m512 d = _mm512_set1_ps(f16_to_f32(dm[0])), m = _mm512_set1_ps(f16_to_f32(dm[1]));
        __m256i q = fam_weights(fam, blk, _mm256_setzero_si256());
        _mm512_storeu_ps(
            y + ib * 32,
            _mm512_add_ps(_mm512_mul_ps(bytes_to_ps(_mm256_castsi256_si128(q)), d), m));
        _mm512_storeu_ps(
            y + ib * 32 + 16,
            _mm512_add_ps(_mm512_mul_ps(bytes_to_ps(_mm256_extracti128_si256(q, 1)), d), m));
    }
}

static void q4_1_to_f32_avx512(const void *x, float *y, int64_t n) {
    min_blocks_to_f32(FAM_Q4_1, x, y, n);
}
static void q5_1_to_f32_avx512(const void *x, float *y, int64_t n) {
    min_blocks_to_f32(FAM_Q5_1, x, y, n);
}

static void q4_0_to_f32_avx512(const void *x, float *y, int64_t n) {
    nibble_blocks_to_f32(0, x, y, n);
}
static void iq4_nl_to_f32_avx512(const void *x, float *y, int64_t n) {
    nibble_blocks_to_f32(1, x, y, n);
}

/* K-quants and IQ4_XS: the chunk decoders of the dots give the quants in element order. */
INLINE void kq_to_f32(int type, const void *vx, float *y, int64_t n) {
    CHECK(n % QK_K == 0);
    const size_t wb = kq_block_bytes(type);
    for (int64_t ib = 0; ib < n / QK_K; ib++) {
        const char *blk = (const char *)vx + (size_t)ib * wb;
        struct kq_row r = kq_row_load(type, blk);
        int16_t sc[16], mn[16];
        _mm256_storeu_si256((__m256i *)sc, r.sc);
        if (type == KQ_Q2_K)
            _mm256_storeu_si256((__m256i *)mn, r.mn16);
        else
            _mm_storeu_si128((__m128i *)mn, r.mn);
        for (int c = 0; c < QK_K / 64; c++) {
            __mmask64 neg = 0;
            __m512i q = kq_chunk_weights(type, blk, c, &neg);
            if (type == KQ_Q6_K) q = _mm512_sub_epi8(q, _mm512_set1_epi8(32));
            if (type == KQ_Q3_K) q = _mm512_sub_epi8(q, _mm512_set1_epi8(4));
            if (type == KQ_IQ4_XS) q = _mm512_mask_sub_epi8(q, neg, _mm512_setzero_si512(), q);
            int8_t qb[64];
            _mm512_storeu_si512(qb, q);
            for (int g = 0; g < 4; g++) {
                __m512 v = bytes_to_ps(_mm_loadu_si128((const __m128i *)(qb + 16 * g)));
                float *dst = y + ib * QK_K + 64 * c + 16 * g;
                if (type == KQ_Q6_K || type == KQ_Q3_K) { /* d * scale * q */
                    float ds = r.d * (float)sc[4 * c + g];
                    _mm512_storeu_ps(dst, _mm512_mul_ps(_mm512_set1_ps(ds), v));
                } else if (type == KQ_IQ4_XS) { /* (d * scale) * value */
                    float dl = r.d * (float)sc[2 * c + g / 2];
                    _mm512_storeu_ps(dst, _mm512_mul_ps(_mm512_set1_ps(dl), v));
                } else { /* (d * scale) * q - dmin * min */
                    int s = type == KQ_Q2_K ? 4 * c + g : 2 * c + g / 2;
                    float ds = r.d * (float)sc[s], ms = r.dmin * (float)mn[s];
                    _mm512_storeu_ps(dst, _mm512_sub_ps(_mm512_mul_ps(_mm512_set1_ps(ds), v),
                                                        _mm512_set1_ps(ms)));
                }
            }
        }
    }
}

static void q2_k_to_f32_avx512(const void *x, float *y, int64_t n) {
    kq_to_f32(KQ_Q2_K, x, y, n);
}
static void q3_k_to_f32_avx512(const void *x, float *y, int64_t n) {
    kq_to_f32(KQ_Q3_K, x, y, n);
}
static void q4_k_to_f32_avx512(const void *x, float *y, int64_t n) {
    kq_to_f32(KQ_Q4_K, x, y, n);
}
static void q5_k_to_f32_avx512(const void *x, float *y, int64_t n) {
    kq_to_f32(KQ_Q5_K, x, y, n);
}
static void q6_k_to_f32_avx512(const void *x, float *y, int64_t n) {
    kq_to_f32(KQ_Q6_K, x, y, n);
}
static void iq4_xs_to_f32_avx512(const void *x, float *y, int64_t n) {
    kq_to_f32(KQ_IQ4_XS, x, y, n);
}

/* ============================================================================================
 * The table
 * ============================================================================================ */

static void set_dot(struct cpu_kernels *k, enum dtype t, cpu_vec_dot_fn dot,
                    cpu_gemm_tile_fn tile) {
    int pairs = t == DTYPE_Q8_0 || t == DTYPE_Q4_0 || t == DTYPE_IQ4_NL || t == DTYPE_Q5_0;
    k->vec_dot[t] = dot;
    k->gemm_tile[t] = tile;
    k->gemm_tile_w[t] = pairs ? PAIR_W : TILE_W;
    k->gemm_tile_x[t] = pairs ? PAIR_X : TILE_X;
}

int cpu_kernels_fill_avx512(struct cpu_kernels *k, const struct cpu_features *f) {
    memset(k, 0, sizeof(*k));
    k->name = "avx512";
    set_dot(k, DTYPE_F32, f32_dot_f32_avx512, f32_gemm_tile_avx512);
    set_dot(k, DTYPE_F16, f16_dot_f16_avx512, f16_gemm_tile_avx512);
    set_dot(k, DTYPE_BF16, bf16_dot_bf16_avx512, bf16_gemm_tile_avx512);
    set_dot(k, DTYPE_Q8_0, q8_0_dot_q8_0_avx512, q8_0_gemm_tile_avx512);
    set_dot(k, DTYPE_Q4_0, q4_0_dot_q8_0_avx512, q4_0_gemm_tile_avx512);
    set_dot(k, DTYPE_IQ4_NL, iq4_nl_dot_q8_0_avx512, iq4_nl_gemm_tile_avx512);
    set_dot(k, DTYPE_Q5_0, q5_0_dot_q8_0_avx512, q5_0_gemm_tile_avx512);
    set_dot(k, DTYPE_Q4_1, q4_1_dot_q8_1_avx512, q4_1_gemm_tile_avx512);
    set_dot(k, DTYPE_Q5_1, q5_1_dot_q8_1_avx512, q5_1_gemm_tile_avx512);
    set_dot(k, DTYPE_Q2_K, q2_k_dot_q8_k_avx512, q2_k_gemm_tile_avx512);
    set_dot(k, DTYPE_Q3_K, q3_k_dot_q8_k_avx512, q3_k_gemm_tile_avx512);
    set_dot(k, DTYPE_Q4_K, q4_k_dot_q8_k_avx512, q4_k_gemm_tile_avx512);
    set_dot(k, DTYPE_Q5_K, q5_k_dot_q8_k_avx512, q5_k_gemm_tile_avx512);
    set_dot(k, DTYPE_Q6_K, q6_k_dot_q8_k_avx512, q6_k_gemm_tile_avx512);
    set_dot(k, DTYPE_IQ4_XS, iq4_xs_dot_q8_k_avx512, iq4_xs_gemm_tile_avx512);
    k->from_float[DTYPE_Q8_0] = q8_0_quantize_row_act_avx512;
    k->from_float[DTYPE_Q8_K] = q8_k_quantize_row_act_avx512;
    k->from_float[DTYPE_Q8_1] = q8_1_quantize_row_act_avx512;
    k->from_float[DTYPE_F16] = f16_from_f32_avx512;
    k->from_float[DTYPE_BF16] = bf16_from_f32_avx512;
    k->to_float[DTYPE_F16] = f16_to_f32_avx512;
    k->to_float[DTYPE_BF16] = bf16_to_f32_avx512;
    k->to_float[DTYPE_Q8_0] = q8_0_to_f32_avx512;
    k->to_float[DTYPE_Q4_0] = q4_0_to_f32_avx512;
    k->to_float[DTYPE_IQ4_NL] = iq4_nl_to_f32_avx512;
    k->to_float[DTYPE_Q5_0] = q5_0_to_f32_avx512;
    k->to_float[DTYPE_Q4_1] = q4_1_to_f32_avx512;
    k->to_float[DTYPE_Q5_1] = q5_1_to_f32_avx512;
    k->to_float[DTYPE_Q2_K] = q2_k_to_f32_avx512;
    k->to_float[DTYPE_Q3_K] = q3_k_to_f32_avx512;
    k->to_float[DTYPE_Q4_K] = q4_k_to_f32_avx512;
    k->to_float[DTYPE_Q5_K] = q5_k_to_f32_avx512;
    k->to_float[DTYPE_Q6_K] = q6_k_to_f32_avx512;
    k->to_float[DTYPE_IQ4_XS] = iq4_xs_to_f32_avx512;
    if (f->has_amx_int8) {
        static const enum dtype amx_types[4] = {DTYPE_Q4_K, DTYPE_Q5_K, DTYPE_Q6_K, DTYPE_IQ4_XS};
        const cpu_gemm_tile_fn amx_tiles[4] = {
            f->has_avx512vbmi ? q4_k_gemm_tile_amx_vbmi : q4_k_gemm_tile_amx, q5_k_gemm_tile_amx,
            q6_k_gemm_tile_amx, iq4_xs_gemm_tile_amx};
        for (int i = 0; i < 4; i++) {
            k->gemm_tile[amx_types[i]] = amx_tiles[i];
            k->gemm_tile_w[amx_types[i]] = AMX_W;
            k->gemm_tile_x[amx_types[i]] = AMX_X;
        }
        k->q8_0_blk_dot = q8_0_dot_q8_0_blk_ref;
        k->q8_0_blk_tile = q8_0_blk_tile_amx;
        k->q8_0_blk_tile_w = AMX_W;
        k->q8_0_blk_tile_x = AMX_X;
        k->name = "avx512-amx";
    }
    k->attn_dot_f16 = attn_dot_f16_avx512;
    k->attn_mad_f16 = attn_mad_f16_avx512;
    k->attn_scale_f16 = attn_scale_f16_avx512;
    k->attn_dots_f16 = attn_dots_f16_avx512;
    k->f32_id_tile = f32_id_tile_avx512;
    k->swiglu = swiglu_avx512;
    k->silu = silu_avx512;
    k->rope_pairs = rope_pairs_avx512;
    k->gdn_rows = gdn_rows_avx512;
    k->attn_rows_f16 = attn_rows_f16_avx512;
    k->f32_gemm_seq = f32_gemm_seq_avx512;
    k->attn_tile_softmax = attn_tile_softmax_avx512;
    return 0;
}
