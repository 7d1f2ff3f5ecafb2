/* quant.h: block layouts and reference (scalar) functions of every tensor format hearth computes
 * with. Internal to tensor/ and to the code that tests, accelerates or writes these formats
 * (tests, backend/cpu kernels, tools/quantize); everything else uses the table in dtype.h.
 *
 * Each format lives in tensor/quant_<fmt>.c and offers, for n elements (n a multiple of the
 * block size, CHECKed):
 *   <fmt>_dequantize_row_ref(x, y, n)       blocks -> n floats; bit-exact with ggml
 *   <fmt>_quantize_row_ref(x, y, n)         n floats -> blocks (activation formats: bit-exact
 *                                           with ggml's reference; weight formats: our own)
 *   <fmt>_quantize_row_imatrix(x, y, n, w)  the same, minimising sum_i w[i] (x[i] - x'[i])^2
 *                                           (x' = dequantized result); w NULL = all ones
 *   <fmt>_dot_<act>_ref(x, y, n)            dot product with the activation format <act>,
 *                                           formed like ggml's generic CPU kernels
 * These functions are the spec: plain C, written to be read, slow. They keep no state, allocate
 * nothing and are safe to call from any thread. Source of truth for every layout and formula:
 * docs/reference/quant-formats.md (ggml's ggml-common.h, ggml-quants.c, ggml-cpu/quants.c).
 * All fields are little-endian and hearth builds only for little-endian hosts. fp16 fields are
 * stored as raw uint16_t bits (fp16_to_fp32 in dtype.h decodes them).
 */
#ifndef HEARTH_QUANT_H
#define HEARTH_QUANT_H

#include "dtype.h"

#include <math.h>
#include <stdint.h>

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "block layouts assume little-endian");

#define QK4_0    32
#define QK4_1    32
#define QK5_0    32
#define QK5_1    32
#define QK8_0    32
#define QK8_1    32
#define QK4_NL   32
#define QK_MXFP4 32
/* QK_K (256), the K-quant super-block size, is in dtype.h. */

/* ======================================================================================
 * Block layouts. "@N" is the byte offset of the field inside the block.
 * ====================================================================================== */

/* Q4_0, 18 bytes / 32 weights. value[j] = d * (q[j] - 8), q in 0..15. */
struct block_q4_0 {
    uint16_t d;            /* @0  fp16 scale */
    uint8_t qs[QK4_0 / 2]; /* @2  low nibble of qs[j] = q[j], high nibble = q[j + 16] */
};

/* Q4_1, 20 bytes / 32 weights. value[j] = d * q[j] + m, q in 0..15. */
struct block_q4_1 {
    uint16_t d;            /* @0  fp16 scale */
    uint16_t m;            /* @2  fp16 offset (the block minimum) */
    uint8_t qs[QK4_1 / 2]; /* @4  nibbles as in Q4_0 */
};

/* Q5_0, 22 bytes / 32 weights. value[j] = d * (q[j] - 16), q in 0..31. */
struct block_q5_0 {
    uint16_t d;            /* @0  fp16 scale */
    uint8_t qh[4];         /* @2  little-endian u32: bit j = 5th bit (value 16) of q[j] */
    uint8_t qs[QK5_0 / 2]; /* @6  low 4 bits, nibbles as in Q4_0 */
};

/* Q5_1, 24 bytes / 32 weights. value[j] = d * q[j] + m, q in 0..31. */
struct block_q5_1 {
    uint16_t d;            /* @0  fp16 scale */
    uint16_t m;            /* @2  fp16 offset */
    uint8_t qh[4];         /* @4  as in Q5_0 */
    uint8_t qs[QK5_1 / 2]; /* @8  as in Q5_0 */
};

/* Q8_0, 34 bytes / 32 values. value[j] = d * qs[j]. Weight format and the activation format
 * of Q4_0, Q5_0, Q8_0, IQ4_NL and MXFP4. */
struct block_q8_0 {
    uint16_t d;       /* @0  fp16 scale */
    int8_t qs[QK8_0]; /* @2  signed quants */
};

/* Q8_1, 36 bytes / 32 values: Q8_0 plus s = d * sum(qs), which folds the offset m of
 * Q4_1/Q5_1 into their dot product. Activation format only. */
struct block_q8_1 {
    uint16_t d;       /* @0  fp16 scale */
    uint16_t s;       /* @2  fp16, d * sum_j qs[j] (d before fp16 rounding) */
    int8_t qs[QK8_1]; /* @4  signed quants */
};

/* Q2_K, 84 bytes / 256 weights, sixteen sub-blocks of 16.
 * Element e: h = e/128, j = (e%128)/32, l = e%32, q = (qs[32h + l] >> 2j) & 3,
 * value = d * (scales[e/16] & 15) * q - dmin * (scales[e/16] >> 4). */
struct block_q2_k {
    uint8_t scales[QK_K / 16]; /* @0   per sub-block: low nibble scale, high nibble min */
    uint8_t qs[QK_K / 4];      /* @16  2-bit quants, four per byte */
    uint16_t d;                /* @80  fp16 super-scale of the scales */
    uint16_t dmin;             /* @82  fp16 super-scale of the mins */
};

/* Q3_K, 110 bytes / 256 weights, sixteen sub-blocks of 16 with signed 6-bit scales.
 * Element e: h, j, l as in Q2_K; q = ((qs[32h + l] >> 2j) & 3) - (bit (4h + j) of hmask[l] ?
 * 0 : 4), q in -4..3; value = d * sc[e/16] * q, sc in -32..31 (packing: q3_k_get_scale). */
struct block_q3_k {
    uint8_t hmask[QK_K / 8]; /* @0   high bits of the quants (set = no -4) */
    uint8_t qs[QK_K / 4];    /* @32  low 2 bits, four per byte */
    uint8_t scales[12];      /* @96  sixteen 6-bit scales (+32 bias), packed */
    uint16_t d;              /* @108 fp16 super-scale */
};

/* Q4_K, 144 bytes / 256 weights, eight sub-blocks of 32 with unsigned 6-bit scale and min.
 * value = d * sc[s] * q - dmin * m[s], s = e/32, q in 0..15. Chunk c = e/64 uses qs[32c..32c+31]:
 * low nibbles for sub-block 2c, high nibbles for sub-block 2c+1. */
struct block_q4_k {
    uint16_t d;           /* @0   fp16 super-scale of the scales */
    uint16_t dmin;        /* @2   fp16 super-scale of the mins */
    uint8_t scales[12];   /* @4   8 scales + 8 mins, 6 bits each (k_quant_get_scale_min) */
    uint8_t qs[QK_K / 2]; /* @16  4-bit quants */
};

/* Q5_K, 176 bytes / 256 weights: Q4_K plus a 5th bit. q = low4 + 16 * bit (2c + half) of qh[l]
 * where c = e/64, half = (e%64) >= 32, l = e%32; q in 0..31. */
struct block_q5_k {
    uint16_t d;           /* @0   fp16 super-scale of the scales */
    uint16_t dmin;        /* @2   fp16 super-scale of the mins */
    uint8_t scales[12];   /* @4   as in Q4_K */
    uint8_t qh[QK_K / 8]; /* @16  5th bits: byte l holds the bit of element 32k + l in bit k */
    uint8_t qs[QK_K / 2]; /* @48  low 4 bits, as Q4_K's qs */
};

/* Q6_K, 210 bytes / 256 weights, sixteen sub-blocks of 16 with signed 8-bit scales.
 * value = d * scales[e/16] * q, q = (low4 | high2 << 4) - 32 in -32..31. Half h = e/128 uses
 * ql[64h..64h+63] and qh[32h..32h+31]; quarter k = (e%128)/32, l = e%32: low4 = nibble (k/2) of
 * ql[64h + 32(k%2) + l], high2 = bits 2k..2k+1 of qh[32h + l]. */
struct block_q6_k {
    uint8_t ql[QK_K / 2];     /* @0   low 4 bits */
    uint8_t qh[QK_K / 4];     /* @128 high 2 bits */
    int8_t scales[QK_K / 16]; /* @192 signed sub-block scales */
    uint16_t d;               /* @208 fp16 super-scale */
};

/* Q8_K, 292 bytes / 256 values. value[j] = d * qs[j]. Activation format of the K-quants and
 * IQ4_XS; bsums let the K-quant dots fold the mins in with 16 multiplies. */
struct block_q8_k {
    float d;                  /* @0   f32 scale (negative when the largest |x| is positive) */
    int8_t qs[QK_K];          /* @4   signed quants */
    int16_t bsums[QK_K / 16]; /* @260 bsums[i] = sum of qs[16i .. 16i+15] */
};

/* IQ4_NL, 18 bytes / 32 weights. value[j] = d * kvalues_iq4nl[q[j]], nibbles as in Q4_0. */
struct block_iq4_nl {
    uint16_t d;             /* @0  fp16 scale */
    uint8_t qs[QK4_NL / 2]; /* @2  4-bit indices into kvalues_iq4nl */
};

/* IQ4_XS, 136 bytes / 256 weights, eight sub-blocks of 32 with 6-bit scales ls (bias 32).
 * value = d * (ls[ib] - 32) * kvalues_iq4nl[q], ib = e/32; sub-block ib uses qs[16ib..16ib+15]
 * with the Q4_0 nibble split. ls[ib] = nibble (ib%2) of scales_l[ib/2] | bits 2ib..2ib+1 of
 * scales_h << 4. */
struct block_iq4_xs {
    uint16_t d;                  /* @0  fp16 super-scale */
    uint16_t scales_h;           /* @2  high 2 bits of the eight scales */
    uint8_t scales_l[QK_K / 64]; /* @4  low 4 bits, two scales per byte (even ib = low nibble) */
    uint8_t qs[QK_K / 2];        /* @8  4-bit indices into kvalues_iq4nl */
};

/* MXFP4, 17 bytes / 32 weights. value[j] = kvalues_mxfp4[q[j]] * 2^(e - 128), nibbles as Q4_0. */
struct block_mxfp4 {
    uint8_t e;                /* @0  E8M0 exponent (bias 127; the table is doubled, hence 128) */
    uint8_t qs[QK_MXFP4 / 2]; /* @1  4-bit indices into kvalues_mxfp4 */
};

_Static_assert(sizeof(struct block_q4_0) == 18, "Q4_0 block size");
_Static_assert(sizeof(struct block_q4_1) == 20, "Q4_1 block size");
_Static_assert(sizeof(struct block_q5_0) == 22, "Q5_0 block size");
_Static_assert(sizeof(struct block_q5_1) == 24, "Q5_1 block size");
_Static_assert(sizeof(struct block_q8_0) == 34, "Q8_0 block size");
_Static_assert(sizeof(struct block_q8_1) == 36, "Q8_1 block size");
_Static_assert(sizeof(struct block_q2_k) == 84, "Q2_K block size");
_Static_assert(sizeof(struct block_q3_k) == 110, "Q3_K block size");
_Static_assert(sizeof(struct block_q4_k) == 144, "Q4_K block size");
_Static_assert(sizeof(struct block_q5_k) == 176, "Q5_K block size");
_Static_assert(sizeof(struct block_q6_k) == 210, "Q6_K block size");
_Static_assert(sizeof(struct block_q8_k) == 292, "Q8_K block size");
_Static_assert(sizeof(struct block_iq4_nl) == 18, "IQ4_NL block size");
_Static_assert(sizeof(struct block_iq4_xs) == 136, "IQ4_XS block size");
_Static_assert(sizeof(struct block_mxfp4) == 17, "MXFP4 block size");

/* The 16 signed levels of IQ4_NL / IQ4_XS (ascending) and the doubled FP4-E2M1 values of MXFP4. */
extern const int8_t kvalues_iq4nl[16];
extern const int8_t kvalues_mxfp4[16];

/* ======================================================================================
 * Reference functions, one group per file.
 * ====================================================================================== */

/* quant_f16.c: plain float formats. Dots: 16 FMA lanes, pairwise lane sum (f32_dot_f32_ref). */
void f32_dequantize_row_ref(const void *x, float *y, int64_t n);
void f32_quantize_row_ref(const float *x, void *y, int64_t n);
float f32_dot_f32_ref(const void *x, const void *y, int64_t n);
void f16_dequantize_row_ref(const void *x, float *y, int64_t n);
void f16_quantize_row_ref(const float *x, void *y, int64_t n);
float f16_dot_f16_ref(const void *x, const void *y, int64_t n);
void bf16_dequantize_row_ref(const void *x, float *y, int64_t n);
void bf16_quantize_row_ref(const float *x, void *y, int64_t n);
float bf16_dot_bf16_ref(const void *x, const void *y, int64_t n);

/* quant_q8_0.c: Q8_0 and Q8_1. The quantizers are ggml's reference activation quantizers
 * (d = amax/127, q = roundf(x/d)), bit for bit. */
void q8_0_dequantize_row_ref(const void *x, float *y, int64_t n);
void q8_0_quantize_row_ref(const float *x, void *y, int64_t n);
float q8_0_dot_q8_0_ref(const void *x, const void *y, int64_t n);
/* Activation-row quantizer used by the matmuls (scale 127/amax, round half to even). */
void q8_0_quantize_row_act(const float *x, void *y, int64_t n);
void q8_1_dequantize_row_ref(const void *x, float *y, int64_t n);
void q8_1_quantize_row_ref(const float *x, void *y, int64_t n);
/* Activation-row quantizer of the Q4_1/Q5_1 matmuls (scale 127/amax, round half to even). */
void q8_1_quantize_row_act(const float *x, void *y, int64_t n);

/* quant_q8_k.c: Q8_K, bit for bit ggml's quantize_row_q8_K_ref. */
void q8_k_dequantize_row_ref(const void *x, float *y, int64_t n);
void q8_k_quantize_row_ref(const float *x, void *y, int64_t n);
float q8_k_dot_q8_k_ref(const void *x, const void *y, int64_t n);
/* Activation-row quantizer used by the K-quant matmuls (positive scale, round half to even). */
void q8_k_quantize_row_act(const float *x, void *y, int64_t n);

/* quant_q4_0.c, quant_q4_1.c, quant_q5_0.c, quant_q5_1.c. _ref quantizers take the scale from
 * the largest magnitude (Q4_0/Q5_0) or the min..max range (Q4_1/Q5_1) and round to nearest,
 * as llama-quantize does without an importance matrix; _imatrix searches the scale. */
void q4_0_dequantize_row_ref(const void *x, float *y, int64_t n);
void q4_0_quantize_row_ref(const float *x, void *y, int64_t n);
void q4_0_quantize_row_imatrix(const float *x, void *y, int64_t n, const float *w);
float q4_0_dot_q8_0_ref(const void *x, const void *y, int64_t n);
void q4_1_dequantize_row_ref(const void *x, float *y, int64_t n);
void q4_1_quantize_row_ref(const float *x, void *y, int64_t n);
void q4_1_quantize_row_imatrix(const float *x, void *y, int64_t n, const float *w);
float q4_1_dot_q8_1_ref(const void *x, const void *y, int64_t n);
void q5_0_dequantize_row_ref(const void *x, float *y, int64_t n);
void q5_0_quantize_row_ref(const float *x, void *y, int64_t n);
void q5_0_quantize_row_imatrix(const float *x, void *y, int64_t n, const float *w);
float q5_0_dot_q8_0_ref(const void *x, const void *y, int64_t n);
void q5_1_dequantize_row_ref(const void *x, float *y, int64_t n);
void q5_1_quantize_row_ref(const float *x, void *y, int64_t n);
void q5_1_quantize_row_imatrix(const float *x, void *y, int64_t n, const float *w);
float q5_1_dot_q8_1_ref(const void *x, const void *y, int64_t n);

/* K-quants (quant_q2_k.c ... quant_q6_k.c), all dotted with Q8_K. The _ref quantizers are the
 * _imatrix ones with w = NULL (plain least squares). */
void q2_k_dequantize_row_ref(const void *x, float *y, int64_t n);
void q2_k_quantize_row_ref(const float *x, void *y, int64_t n);
void q2_k_quantize_row_imatrix(const float *x, void *y, int64_t n, const float *w);
float q2_k_dot_q8_k_ref(const void *x, const void *y, int64_t n);
void q3_k_dequantize_row_ref(const void *x, float *y, int64_t n);
void q3_k_quantize_row_ref(const float *x, void *y, int64_t n);
void q3_k_quantize_row_imatrix(const float *x, void *y, int64_t n, const float *w);
float q3_k_dot_q8_k_ref(const void *x, const void *y, int64_t n);
void q4_k_dequantize_row_ref(const void *x, float *y, int64_t n);
void q4_k_quantize_row_ref(const float *x, void *y, int64_t n);
void q4_k_quantize_row_imatrix(const float *x, void *y, int64_t n, const float *w);
float q4_k_dot_q8_k_ref(const void *x, const void *y, int64_t n);
void q5_k_dequantize_row_ref(const void *x, float *y, int64_t n);
void q5_k_quantize_row_ref(const float *x, void *y, int64_t n);
void q5_k_quantize_row_imatrix(const float *x, void *y, int64_t n, const float *w);
float q5_k_dot_q8_k_ref(const void *x, const void *y, int64_t n);
void q6_k_dequantize_row_ref(const void *x, float *y, int64_t n);
void q6_k_quantize_row_ref(const float *x, void *y, int64_t n);
void q6_k_quantize_row_imatrix(const float *x, void *y, int64_t n, const float *w);
float q6_k_dot_q8_k_ref(const void *x, const void *y, int64_t n);

/* quant_iq4.c: IQ4_NL (dotted with Q8_0) and IQ4_XS (dotted with Q8_K). */
void iq4_nl_dequantize_row_ref(const void *x, float *y, int64_t n);
void iq4_nl_quantize_row_ref(const float *x, void *y, int64_t n);
void iq4_nl_quantize_row_imatrix(const float *x, void *y, int64_t n, const float *w);
float iq4_nl_dot_q8_0_ref(const void *x, const void *y, int64_t n);
void iq4_xs_dequantize_row_ref(const void *x, float *y, int64_t n);
void iq4_xs_quantize_row_ref(const float *x, void *y, int64_t n);
void iq4_xs_quantize_row_imatrix(const float *x, void *y, int64_t n, const float *w);
float iq4_xs_dot_q8_k_ref(const void *x, const void *y, int64_t n);

/* quant_mxfp4.c: MXFP4 (dotted with Q8_0). The quantizer picks the power-of-two scale that
 * minimises the squared error (sign-magnitude FP4 has no other freedom). */
void mxfp4_dequantize_row_ref(const void *x, float *y, int64_t n);
void mxfp4_quantize_row_ref(const float *x, void *y, int64_t n);
float mxfp4_dot_q8_0_ref(const void *x, const void *y, int64_t n);
float mxfp4_e8m0_to_fp32_half(uint8_t e); /* 2^(e - 128), exact for every e */

/* ======================================================================================
 * Helpers shared by the formats.
 * ====================================================================================== */

/* Round to nearest, ties to even, for |f| <= 2^22: ggml's nearest_int (adds 1.5 * 2^23 and
 * reads the mantissa). Used where bit-exactness with ggml's rounding matters (Q8_K). */
static inline int quant_nearest_int(float f) {
    union {
        float f;
        int32_t i;
    } u;
    u.f = f + 12582912.0f;
    return (u.i & 0x007fffff) - 0x00400000;
}

/* Round half to even for any finite f (what a vector unit's round instruction does); the
 * result is returned as a float holding an integer. */
static inline float quant_rint(float f) {
    if (!(fabsf(f) < 8388608.0f)) return f; /* already an integer (or NaN) */
    float r = f + (f >= 0 ? 8388608.0f : -8388608.0f);
    return r - (f >= 0 ? 8388608.0f : -8388608.0f);
}

/* Pairwise sum of 8 lanes: (l0+l4, l1+l5, l2+l6, l3+l7), then (a0+a2, a1+a3), then the two —
 * the horizontal add of an 8-wide f32 vector register. */
static inline float quant_sum_lanes8(const float lane[8]) {
    float a[4];
    for (int l = 0; l < 4; l++) a[l] = lane[l + 4] + lane[l];
    return (a[0] + a[2]) + (a[1] + a[3]);
}

/* K-quant 12-byte scale/min packing (Q4_K, Q5_K; quant-formats.md §4): sub-block s in 0..7. */
void k_quant_get_scale_min(const uint8_t *scales, int s, uint8_t *sc, uint8_t *m);
void k_quant_pack_scale_min(const uint8_t sc[8], const uint8_t m[8], uint8_t *scales);

/* Q3_K 12-byte packing of sixteen 6-bit scales: returns sc_j - 32 (in -32..31) / packs
 * codes[j] in 0..63. */
int q3_k_get_scale(const uint8_t *scales, int j);
void q3_k_pack_scales(const uint8_t codes[16], uint8_t *scales);

/* quant_search.c: the scale searches behind our weight quantizers (our own design; see the
 * file's banner). x has n values (n <= QK_K), w the weights or NULL (= all ones); a group
 * whose weights are all zero is fitted with all ones instead. */

/* Finds d minimising sum w (x - d q)^2 with integers q in [lo, hi] (lo < 0 < hi); writes q and
 * returns d (0 and q = 0 for an all-zero x). d may be negative. */
float quant_fit_scale(int n, const float *x, const float *w, int lo, int hi, int8_t *q);
/* Finds d >= 0 and m minimising sum w (x - (d q + m))^2 with q in [0, hi]; with m_le_zero the
 * offset is constrained to m <= 0 (K-quant mins are subtracted, unsigned). Writes q and *m,
 * returns d. */
float quant_fit_scale_offset(int n, const float *x, const float *w, int hi, int m_le_zero,
                             uint8_t *q, float *m);
/* Finds d minimising sum w (x - d kvalues_iq4nl[q])^2; writes the indices q, returns d. */
float quant_fit_iq4(int n, const float *x, const float *w, uint8_t *q);
/* Index of the kvalues_iq4nl level nearest to v (v in table units). */
int quant_iq4_nearest(float v);
/* q = clamp(round(x / d), lo, hi) (q = 0 where d == 0); returns the weighted squared error. */
float quant_round_scale(int n, const float *x, const float *w, float d, int lo, int hi, int8_t *q);
/* q = clamp(round((x - m) / d), 0, hi); returns sum w (x - (d q + m))^2. */
float quant_round_scale_offset(int n, const float *x, const float *w, float d, float m, int hi,
                               uint8_t *q);
/* q = nearest level of x / d; returns sum w (x - d kvalues_iq4nl[q])^2. */
float quant_round_iq4(int n, const float *x, const float *w, float d, uint8_t *q);
/* w, or NULL when w is NULL or all n weights are zero (such a group is fitted unweighted). */
const float *quant_usable_weights(int n, const float *w);
/* fp16(v) decoded back: the value a stored fp16 scale really has. */
float quant_fp16_round(float v);

/* Super-block fits of the K-quants. x[0 .. n_sub * sub_len) is one super-block, w its weights
 * or NULL. Results: fp16-exact super-scales (store them with fp32_to_fp16, no rounding happens)
 * and per sub-block integer codes, quants q[n_sub * sub_len].
 *
 * Scale and min (Q2_K: 16 x 16, codes 0..15, q 0..3; Q4_K/Q5_K: 8 x 32, codes 0..63, q 0..15 /
 * 0..31): x ~ d sc[s] q - dmin m[s]. */
void quant_fit_super_scale_min(const float *x, const float *w, int n_sub, int sub_len, int code_max,
                               int hi, float *d, float *dmin, uint8_t *sc, uint8_t *m, uint8_t *q);
/* Signed scale (Q3_K: 16 x 16, codes -32..31, q -4..3; Q6_K: 16 x 16, codes -128..127,
 * q -32..31): x ~ d sc[s] q. */
void quant_fit_super_scale(const float *x, const float *w, int n_sub, int sub_len, int code_lo,
                           int code_hi, int lo, int hi, float *d, int8_t *sc, int8_t *q);

#endif
