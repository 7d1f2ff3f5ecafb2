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

/* Per block: (sum_j qx * qy) * (dx * dy), accumulated in f32. */
float q8_0_dot_q8_0_ref(const void *vx, const void *vy, int64_t n) {
    CHECK(n % QK8_0 == 0);
    const struct block_q8_0 *x = vx;
    const struct block_q8_0 *y = vy;
    float sum = 0.0f;
    for (int64_t ib = 0; ib < n / QK8_0; ib++) {
        int32_t sumi = 0;
        for (int j = 0; j < QK8_0; j++) sumi += (int32_t)x[ib].qs[j] * (int32_t)y[ib].qs[j];
        sum += (float)sumi * (fp16_to_fp32(x[ib].d) * fp16_to_fp32(y[ib].d));
    }
    return sum;
}

/* ---- Q8_1 ---- */

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
