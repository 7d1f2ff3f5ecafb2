/* quant_q8_0.c: Q8_0 and Q8_1 (quant.h), 32 values per block, value = d * qs[j].
 *
 * Both quantizers reproduce ggml's quantize_row_q8_0_ref / quantize_row_q8_1_ref bit for bit
 * (quant-formats.md §6): d = amax / 127, q = roundf(x * (1/d)) (round half away from zero), the
 * unrounded f32 d used for 1/d and for Q8_1's s. They quantize activations for the dots of
 * Q4_0/Q5_0/Q8_0/IQ4_NL/MXFP4 (Q8_0) and Q4_1/Q5_1 (Q8_1); Q8_0 weights use the same rule.
 */
#include "quant.h"

#include "../base/error.h"

#include <math.h>

static float block_amax(const float *x, int n) {
    float amax = 0.0f;
    for (int j = 0; j < n; j++) {
        float a = fabsf(x[j]);
        if (a > amax) amax = a;
    }
    return amax;
}

/* ---- Q8_0 ---- */

void q8_0_dequantize_row_ref(const void *vx, float *y, int64_t n) {
    CHECK(n % QK8_0 == 0);
    const struct block_q8_0 *x = vx;
    for (int64_t ib = 0; ib < n / QK8_0; ib++) {
        float d = fp16_to_fp32(x[ib].d);
        for (int j = 0; j < QK8_0; j++) y[ib * QK8_0 + j] = d * (float)x[ib].qs[j];
    }
}

void q8_0_quantize_row_ref(const float *x, void *vy, int64_t n) {
    CHECK(n % QK8_0 == 0);
    struct block_q8_0 *y = vy;
    for (int64_t ib = 0; ib < n / QK8_0; ib++) {
        const float *xb = x + ib * QK8_0;
        float d = block_amax(xb, QK8_0) / 127.0f;
        float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[ib].d = fp32_to_fp16(d);
        for (int j = 0; j < QK8_0; j++) y[ib].qs[j] = (int8_t)roundf(xb[j] * id);
    }
}

/* Activation quantizer (what the matmuls use for Q8_0's activation rows): like the reference
 * but with the scale applied as 127/amax and round-half-to-even, which is what a vector unit
 * does and what llama.cpp's x86 backend computes; values that sit exactly on a rounding edge
 * then land on the same side in both engines. */
void q8_0_quantize_row_act(const float *x, void *vy, int64_t n) {
    CHECK(n % QK8_0 == 0);
    struct block_q8_0 *y = vy;
    for (int64_t ib = 0; ib < n / QK8_0; ib++) {
        const float *xb = x + ib * QK8_0;
        float amax = block_amax(xb, QK8_0);
        float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        y[ib].d = fp32_to_fp16(amax / 127.0f);
        for (int j = 0; j < QK8_0; j++) y[ib].qs[j] = (int8_t)quant_rint(xb[j] * id);
    }
}

/* Per block: the 32 products summed as 8 partial integer sums of 4 (the lanes of an 8-wide
 * vector unit), each scaled by dx*dy and accumulated in its own f32 lane; the 8 lanes are added
 * pairwise at the end. This fixed order is the one the SIMD kernels use too. */
float q8_0_dot_q8_0_ref(const void *vx, const void *vy, int64_t n) {
    CHECK(n % QK8_0 == 0);
    const struct block_q8_0 *x = vx;
    const struct block_q8_0 *y = vy;
    float lane[8] = {0};
    for (int64_t ib = 0; ib < n / QK8_0; ib++) {
        float d = fp16_to_fp32(x[ib].d) * fp16_to_fp32(y[ib].d);
        for (int l = 0; l < 8; l++) {
            int32_t sumi = 0;
            for (int j = 4 * l; j < 4 * l + 4; j++)
                sumi += (int32_t)x[ib].qs[j] * (int32_t)y[ib].qs[j];
            lane[l] = fmaf(d, (float)sumi, lane[l]);
        }
    }
    return quant_sum_lanes8(lane);
}

/* ---- Q8_1 ---- */

/* Activation quantizer for Q4_1/Q5_1 (as llama.cpp's x86 quantize_row_q8_1): scale 127/amax and
 * round half to even like q8_0_quantize_row_act; d = amax/127 is stored, and s = d * sum(q) with
 * the unrounded d. */
void q8_1_quantize_row_act(const float *x, void *vy, int64_t n) {
    CHECK(n % QK8_1 == 0);
    struct block_q8_1 *y = vy;
    for (int64_t ib = 0; ib < n / QK8_1; ib++) {
        const float *xb = x + ib * QK8_1;
        float amax = block_amax(xb, QK8_1);
        float d = amax / 127.0f;
        float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        int sum = 0;
        for (int j = 0; j < QK8_1; j++) {
            y[ib].qs[j] = (int8_t)quant_rint(xb[j] * id);
            sum += y[ib].qs[j];
        }
        y[ib].d = fp32_to_fp16(d);
        y[ib].s = fp32_to_fp16(d * (float)sum);
    }
}

void q8_1_dequantize_row_ref(const void *vx, float *y, int64_t n) {
    CHECK(n % QK8_1 == 0);
    const struct block_q8_1 *x = vx;
    for (int64_t ib = 0; ib < n / QK8_1; ib++) {
        float d = fp16_to_fp32(x[ib].d);
        for (int j = 0; j < QK8_1; j++) y[ib * QK8_1 + j] = d * (float)x[ib].qs[j];
    }
}

void q8_1_quantize_row_ref(const float *x, void *vy, int64_t n) {
    CHECK(n % QK8_1 == 0);
    struct block_q8_1 *y = vy;
    for (int64_t ib = 0; ib < n / QK8_1; ib++) {
        const float *xb = x + ib * QK8_1;
        float d = block_amax(xb, QK8_1) / 127.0f;
        float id = d != 0.0f ? 1.0f / d : 0.0f;
        int sum = 0;
        for (int j = 0; j < QK8_1; j++) {
            y[ib].qs[j] = (int8_t)roundf(xb[j] * id);
            sum += y[ib].qs[j];
        }
        y[ib].d = fp32_to_fp16(d);
        y[ib].s = fp32_to_fp16((float)sum * d);
    }
}
