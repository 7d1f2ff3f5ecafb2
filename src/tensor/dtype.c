/* dtype.c: the dtype table (dtype.h), type names, and the scalar fp16/bf16 conversions.
 *
 * The table is the one place that ties a ggml type id to its block geometry and its reference
 * functions in tensor/quant_*.c. Geometry and activation types follow quant-formats.md §2/§6.
 */
#include "dtype.h"

#include "quant.h"

#include "../base/error.h"
#include "../gguf/gguf.h"

#include <string.h>

/* ======================================================================================
 * fp16 / bf16 conversions
 * ======================================================================================
 * Written out bit by bit rather than relying on _Float16 or F16C, so every build (and the
 * sanitizer build) converts identically. fp16: 1 sign, 5 exponent (bias 15), 10 mantissa bits;
 * fp32: 1, 8 (bias 127), 23. */

static uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof(u));
    return u;
}

static float f32_from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof(f));
    return f;
}

float fp16_to_fp32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t mant = h & 0x3ff;
    if (exp == 0x1f) return f32_from_bits(sign | 0x7f800000 | mant << 13); /* inf / NaN */
    if (exp != 0) return f32_from_bits(sign | (exp + 112) << 23 | mant << 13);
    if (mant == 0) return f32_from_bits(sign); /* +-0 */
    /* Subnormal: mant * 2^-24. Normalise: shift until the leading 1 reaches bit 10. */
    uint32_t e = 113; /* fp32 biased exponent of 2^-14, the exponent a normalised mant has */
    while (!(mant & 0x400)) {
        mant <<= 1;
        e--;
    }
    return f32_from_bits(sign | e << 23 | (mant & 0x3ff) << 13);
}

/* Rounds the integer m / 2^shift to nearest, ties to even (shift in 1..31). */
static uint32_t shift_round_even(uint32_t m, int shift) {
    uint32_t r = m >> shift;
    uint32_t rem = m & ((1u << shift) - 1);
    uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (r & 1))) r++;
    return r;
}

uint16_t fp32_to_fp16(float f) {
    uint32_t u = f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
    uint32_t a = u & 0x7fffffff;
    if (a > 0x7f800000) /* NaN: keep the top payload bits, force quiet (never becomes inf) */
        return (uint16_t)(sign | 0x7e00 | ((a >> 13) & 0x3ff));
    if (a == 0x7f800000) return (uint16_t)(sign | 0x7c00);
    int e = (int)(a >> 23);                         /* fp32 biased exponent */
    if (e >= 143) return (uint16_t)(sign | 0x7c00); /* >= 2^16: overflows */
    if (e >= 113) {
        /* Normal range 2^-14 .. 2^16. A mantissa carry on rounding bumps the exponent, which
         * is right, and turns 65520 and above into inf (0x7c00), also right. */
        uint32_t h = (uint32_t)(e - 112) << 10 | (a & 0x7fffff) >> 13;
        uint32_t rem = a & 0x1fff;
        if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++;
        return (uint16_t)(sign | h);
    }
    if (e < 102) return sign; /* below 2^-25: rounds to zero */
    /* Subnormal result: value = m * 2^(e - 150) with the implicit bit, in units of 2^-24. A
     * round-up to 0x400 is the smallest normal, which is the correct encoding. */
    uint32_t m = (a & 0x7fffff) | 0x800000;
    return (uint16_t)(sign | shift_round_even(m, 126 - e));
}

float bf16_to_fp32(uint16_t h) {
    return f32_from_bits((uint32_t)h << 16);
}

uint16_t fp32_to_bf16(float f) {
    uint32_t u = f32_bits(f);
    if ((u & 0x7fffffff) > 0x7f800000) return (uint16_t)((u >> 16) | 64); /* quiet NaN */
    return (uint16_t)((u + 0x7fff + ((u >> 16) & 1)) >> 16);              /* nearest even */
}

/* ======================================================================================
 * The table and names
 * ====================================================================================== */

static const struct dtype_traits g_traits[DTYPE_COUNT] = {
    [DTYPE_F32] = {"F32", 1, 4, 0, DTYPE_F32, f32_dequantize_row_ref, f32_quantize_row_ref,
                   f32_dot_f32_ref, NULL},
    [DTYPE_F16] = {"F16", 1, 2, 0, DTYPE_F16, f16_dequantize_row_ref, f16_quantize_row_ref,
                   f16_dot_f16_ref, NULL},
    [DTYPE_BF16] = {"BF16", 1, 2, 0, DTYPE_BF16, bf16_dequantize_row_ref, bf16_quantize_row_ref,
                    bf16_dot_bf16_ref, NULL},
    [DTYPE_Q4_0] = {"Q4_0", QK4_0, sizeof(struct block_q4_0), 1, DTYPE_Q8_0,
                    q4_0_dequantize_row_ref, q4_0_quantize_row_ref, q4_0_dot_q8_0_ref,
                    q4_0_quantize_row_imatrix},
    [DTYPE_Q4_1] = {"Q4_1", QK4_1, sizeof(struct block_q4_1), 1, DTYPE_Q8_1,
                    q4_1_dequantize_row_ref, q4_1_quantize_row_ref, q4_1_dot_q8_1_ref,
                    q4_1_quantize_row_imatrix},
    [DTYPE_Q5_0] = {"Q5_0", QK5_0, sizeof(struct block_q5_0), 1, DTYPE_Q8_0,
                    q5_0_dequantize_row_ref, q5_0_quantize_row_ref, q5_0_dot_q8_0_ref,
                    q5_0_quantize_row_imatrix},
    [DTYPE_Q5_1] = {"Q5_1", QK5_1, sizeof(struct block_q5_1), 1, DTYPE_Q8_1,
                    q5_1_dequantize_row_ref, q5_1_quantize_row_ref, q5_1_dot_q8_1_ref,
                    q5_1_quantize_row_imatrix},
    [DTYPE_Q8_0] = {"Q8_0", QK8_0, sizeof(struct block_q8_0), 1, DTYPE_Q8_0,
                    q8_0_dequantize_row_ref, q8_0_quantize_row_ref, q8_0_dot_q8_0_ref, NULL},
    [DTYPE_Q8_1] = {"Q8_1", QK8_1, sizeof(struct block_q8_1), 1, DTYPE_Q8_1,
                    q8_1_dequantize_row_ref, q8_1_quantize_row_ref, NULL, NULL},
    [DTYPE_Q2_K] = {"Q2_K", QK_K, sizeof(struct block_q2_k), 1, DTYPE_Q8_K, q2_k_dequantize_row_ref,
                    q2_k_quantize_row_ref, q2_k_dot_q8_k_ref, q2_k_quantize_row_imatrix},
    [DTYPE_Q3_K] = {"Q3_K", QK_K, sizeof(struct block_q3_k), 1, DTYPE_Q8_K, q3_k_dequantize_row_ref,
                    q3_k_quantize_row_ref, q3_k_dot_q8_k_ref, q3_k_quantize_row_imatrix},
    [DTYPE_Q4_K] = {"Q4_K", QK_K, sizeof(struct block_q4_k), 1, DTYPE_Q8_K, q4_k_dequantize_row_ref,
                    q4_k_quantize_row_ref, q4_k_dot_q8_k_ref, q4_k_quantize_row_imatrix},
    [DTYPE_Q5_K] = {"Q5_K", QK_K, sizeof(struct block_q5_k), 1, DTYPE_Q8_K, q5_k_dequantize_row_ref,
                    q5_k_quantize_row_ref, q5_k_dot_q8_k_ref, q5_k_quantize_row_imatrix},
    [DTYPE_Q6_K] = {"Q6_K", QK_K, sizeof(struct block_q6_k), 1, DTYPE_Q8_K, q6_k_dequantize_row_ref,
                    q6_k_quantize_row_ref, q6_k_dot_q8_k_ref, q6_k_quantize_row_imatrix},
    [DTYPE_Q8_K] = {"Q8_K", QK_K, sizeof(struct block_q8_k), 1, DTYPE_Q8_K, q8_k_dequantize_row_ref,
                    q8_k_quantize_row_ref, q8_k_dot_q8_k_ref, NULL},
    [DTYPE_IQ4_NL] = {"IQ4_NL", QK4_NL, sizeof(struct block_iq4_nl), 1, DTYPE_Q8_0,
                      iq4_nl_dequantize_row_ref, iq4_nl_quantize_row_ref, iq4_nl_dot_q8_0_ref,
                      iq4_nl_quantize_row_imatrix},
    [DTYPE_IQ4_XS] = {"IQ4_XS", QK_K, sizeof(struct block_iq4_xs), 1, DTYPE_Q8_K,
                      iq4_xs_dequantize_row_ref, iq4_xs_quantize_row_ref, iq4_xs_dot_q8_k_ref,
                      iq4_xs_quantize_row_imatrix},
    [DTYPE_MXFP4] = {"MXFP4", QK_MXFP4, sizeof(struct block_mxfp4), 1, DTYPE_Q8_0,
                     mxfp4_dequantize_row_ref, mxfp4_quantize_row_ref, mxfp4_dot_q8_0_ref, NULL},
};

const struct dtype_traits *dtype_traits(uint32_t type) {
    if (type >= DTYPE_COUNT || g_traits[type].name == NULL) return NULL;
    return &g_traits[type];
}

/* Types hearth does not compute with are named by the GGUF layer's table of every type id. */
const char *dtype_name(uint32_t type) {
    const struct dtype_traits *tr = dtype_traits(type);
    return tr ? tr->name : gguf_tensor_type_name(type);
}

size_t dtype_row_bytes(enum dtype type, int64_t n) {
    const struct dtype_traits *tr = dtype_traits(type);
    CHECK(tr != NULL && n >= 0 && n % tr->block_size == 0);
    return (size_t)(n / tr->block_size) * (size_t)tr->type_size;
}

static int ascii_lower(int c) {
    return c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c;
}

int dtype_from_name(const char *name, enum dtype *out) {
    if (!name) return -1;
    for (uint32_t t = 0; t < DTYPE_COUNT; t++) {
        const char *n = g_traits[t].name;
        if (!n) continue;
        size_t i = 0;
        while (n[i] && name[i] &&
               ascii_lower((unsigned char)n[i]) == ascii_lower((unsigned char)name[i]))
            i++;
        if (n[i] == 0 && name[i] == 0) {
            *out = (enum dtype)t;
            return 0;
        }
    }
    return -1;
}
