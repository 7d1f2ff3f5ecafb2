/* quant_q8_k.c: Q8_K (quant.h), the activation format of the K-quants and IQ4_XS.
 *
 * The quantizer reproduces ggml's quantize_row_q8_K_ref bit for bit (quant-formats.md §6): the
 * element of largest magnitude, with its sign, is `max`; iscale = -127 / max, so that element
 * lands on -127 and d = 1 / iscale has the opposite sign of max; q = nearest_int(iscale * x)
 * (ties to even), clamped to <= 127. An all-zero block stores d = 0 and zero quants.
 */
#include "quant.h"

#include "../base/error.h"

#include <math.h>
#include <string.h>

void q8_k_dequantize_row_ref(const void *vx, float *y, int64_t n) {
    CHECK(n % QK_K == 0);
    const struct block_q8_k *x = vx;
    for (int64_t ib = 0; ib < n / QK_K; ib++)
        for (int j = 0; j < QK_K; j++) y[ib * QK_K + j] = x[ib].d * (float)x[ib].qs[j];
}

void q8_k_quantize_row_ref(const float *x, void *vy, int64_t n) {
    CHECK(n % QK_K == 0);
    struct block_q8_k *y = vy;
    for (int64_t ib = 0; ib < n / QK_K; ib++) {
        const float *xb = x + ib * QK_K;
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < QK_K; j++) {
            float a = fabsf(xb[j]);
            if (a > amax) {
                amax = a;
                max = xb[j];
            }
        }
        memset(&y[ib], 0, sizeof(y[ib]));
        if (amax == 0.0f) continue;
        float iscale = -127.0f / max;
        for (int j = 0; j < QK_K; j++) {
            int v = quant_nearest_int(iscale * xb[j]);
            y[ib].qs[j] = (int8_t)(v < 127 ? v : 127);
        }
        for (int i = 0; i < QK_K / 16; i++) {
            int sum = 0;
            for (int j = 0; j < 16; j++) sum += y[ib].qs[16 * i + j];
            y[ib].bsums[i] = (int16_t)sum;
        }
        y[ib].d = 1.0f / iscale;
    }
}

/* Q8_K x Q8_K (not used by ggml's CPU backend; kept for symmetry and tests). */
float q8_k_dot_q8_k_ref(const void *vx, const void *vy, int64_t n) {
    CHECK(n % QK_K == 0);
    const struct block_q8_k *x = vx;
    const struct block_q8_k *y = vy;
    float sum = 0.0f;
    for (int64_t ib = 0; ib < n / QK_K; ib++) {
        int32_t sumi = 0;
        for (int j = 0; j < QK_K; j++) sumi += (int32_t)x[ib].qs[j] * (int32_t)y[ib].qs[j];
        sum += x[ib].d * y[ib].d * (float)sumi;
    }
    return sum;
}
