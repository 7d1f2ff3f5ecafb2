/* quant_mxfp4.c: MXFP4 (quant.h), 32 weights per block: FP4-E2M1 values with one shared
 * E8M0 power-of-two scale. value = kvalues_mxfp4[q] * 2^(e - 128); nibbles as Q4_0.
 *
 * kvalues_mxfp4 holds the E2M1 values doubled (0, 0.5, 1, 1.5, 2, 3, 4, 6 -> 0..12, sign in
 * bit 3), so the scale is half of the E8M0 value 2^(e - 127). Dotted with Q8_0 like ggml's
 * generic kernel: d_y * 2^(e - 128) * integer block sum.
 */
#include "quant.h"

#include "../base/error.h"

#include <math.h>
#include <string.h>

const int8_t kvalues_mxfp4[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};

float mxfp4_e8m0_to_fp32_half(uint8_t e) {
    /* 2^(e - 128): for e >= 2 a normal float with biased exponent e - 1; e = 0, 1 are the
     * f32 subnormals 2^-128 (bit 21) and 2^-127 (bit 22). */
    uint32_t bits = e < 2 ? 0x00200000u << e : (uint32_t)(e - 1) << 23;
    float f;
    memcpy(&f, &bits, sizeof(f));
    return f;
}

void mxfp4_dequantize_row_ref(const void *vx, float *y, int64_t n) {
    CHECK(n % QK_MXFP4 == 0);
    const struct block_mxfp4 *x = vx;
    for (int64_t ib = 0; ib < n / QK_MXFP4; ib++) {
        float d = mxfp4_e8m0_to_fp32_half(x[ib].e);
        for (int j = 0; j < QK_MXFP4 / 2; j++) {
            y[ib * QK_MXFP4 + j] = (float)kvalues_mxfp4[x[ib].qs[j] & 0x0f] * d;
            y[ib * QK_MXFP4 + j + 16] = (float)kvalues_mxfp4[x[ib].qs[j] >> 4] * d;
        }
    }
}

static int nearest_level(float v) {
    int best = 0;
    for (int k = 1; k < 16; k++)
        if (fabsf(v - (float)kvalues_mxfp4[k]) < fabsf(v - (float)kvalues_mxfp4[best])) best = k;
    return best;
}

/* The exponent is the only freedom: try the three around "largest magnitude fits under 12"
 * and keep the one with the least squared error. */
void mxfp4_quantize_row_ref(const float *x, void *vy, int64_t n) {
    CHECK(n % QK_MXFP4 == 0);
    struct block_mxfp4 *y = vy;
    for (int64_t ib = 0; ib < n / QK_MXFP4; ib++) {
        const float *xb = x + ib * QK_MXFP4;
        float amax = 0.0f;
        for (int j = 0; j < QK_MXFP4; j++) amax = fmaxf(amax, fabsf(xb[j]));
        int e0 = amax > 0.0f ? (int)ceilf(log2f(amax / 12.0f)) + 128 : 0;
        float best_err = INFINITY;
        uint8_t q[QK_MXFP4];
        for (int e = e0 - 1; e <= e0 + 1; e++) {
            if (e < 0 || e > 254) continue;
            float d = mxfp4_e8m0_to_fp32_half((uint8_t)e);
            uint8_t trial[QK_MXFP4];
            double err = 0.0;
            for (int j = 0; j < QK_MXFP4; j++) {
                trial[j] = (uint8_t)nearest_level(xb[j] / d);
                double r = (double)xb[j] - (double)kvalues_mxfp4[trial[j]] * d;
                err += r * r;
            }
            if (err < best_err) {
                best_err = (float)err;
                y[ib].e = (uint8_t)e;
                memcpy(q, trial, sizeof(q));
            }
        }
        if (best_err == INFINITY) { /* all-zero block */
            y[ib].e = 0;
            memset(q, 0, sizeof(q));
        }
        for (int j = 0; j < QK_MXFP4 / 2; j++) y[ib].qs[j] = (uint8_t)(q[j] | q[j + 16] << 4);
    }
}

float mxfp4_dot_q8_0_ref(const void *vx, const void *vy, int64_t n) {
    CHECK(n % QK_MXFP4 == 0);
    const struct block_mxfp4 *x = vx;
    const struct block_q8_0 *y = vy;
    float sum = 0.0f;
    for (int64_t ib = 0; ib < n / QK_MXFP4; ib++) {
        int32_t sumi = 0;
        for (int j = 0; j < QK_MXFP4 / 2; j++) {
            sumi += kvalues_mxfp4[x[ib].qs[j] & 0x0f] * y[ib].qs[j];
            sumi += kvalues_mxfp4[x[ib].qs[j] >> 4] * y[ib].qs[j + 16];
        }
        float d = fp16_to_fp32(y[ib].d) * mxfp4_e8m0_to_fp32_half(x[ib].e);
        sum += d * (float)sumi;
    }
    return sum;
}
