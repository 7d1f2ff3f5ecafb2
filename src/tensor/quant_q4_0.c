/* quant_q4_0.c: Q4_0 (quant.h), 32 weights per block, value = d * (q - 8), q in 0..15.
 *
 * Layout: low nibble of qs[j] is element j, high nibble element j + 16 (split, not
 * interleaved). Dot with Q8_0 like ggml's generic kernel: integer block sum, times d_x * d_y.
 */
#include "quant.h"

#include "../base/error.h"

#include <math.h>

void q4_0_dequantize_row_ref(const void *vx, float *y, int64_t n) {
    CHECK(n % QK4_0 == 0);
    const struct block_q4_0 *x = vx;
    for (int64_t ib = 0; ib < n / QK4_0; ib++) {
        float d = fp16_to_fp32(x[ib].d);
        for (int j = 0; j < QK4_0 / 2; j++) {
            y[ib * QK4_0 + j] = d * (float)((x[ib].qs[j] & 0x0f) - 8);
            y[ib * QK4_0 + j + 16] = d * (float)((x[ib].qs[j] >> 4) - 8);
        }
    }
}

static void pack(struct block_q4_0 *b, float d, const int8_t *q /* -8..7 */) {
    b->d = fp32_to_fp16(d);
    for (int j = 0; j < QK4_0 / 2; j++) b->qs[j] = (uint8_t)((q[j] + 8) | (q[j + 16] + 8) << 4);
}

/* The largest-magnitude element x_max goes to level -8 (d = x_max / -8, so the other sign gets
 * the 7 levels), everything rounds to nearest. */
void q4_0_quantize_row_ref(const float *x, void *vy, int64_t n) {
    CHECK(n % QK4_0 == 0);
    struct block_q4_0 *y = vy;
    for (int64_t ib = 0; ib < n / QK4_0; ib++) {
        const float *xb = x + ib * QK4_0;
        float max = 0.0f;
        for (int j = 0; j < QK4_0; j++)
            if (fabsf(xb[j]) > fabsf(max)) max = xb[j];
        float d = quant_fp16_round(max / -8.0f);
        int8_t q[QK4_0];
        quant_round_scale(QK4_0, xb, NULL, d, -8, 7, q);
        pack(&y[ib], d, q);
    }
}

void q4_0_quantize_row_imatrix(const float *x, void *vy, int64_t n, const float *w) {
    CHECK(n % QK4_0 == 0);
    struct block_q4_0 *y = vy;
    for (int64_t ib = 0; ib < n / QK4_0; ib++) {
        const float *xb = x + ib * QK4_0;
        const float *wb = w ? w + ib * QK4_0 : NULL;
        int8_t q[QK4_0];
        float d = quant_fp16_round(quant_fit_scale(QK4_0, xb, wb, -8, 7, q));
        quant_round_scale(QK4_0, xb, wb, d, -8, 7, q);
        pack(&y[ib], d, q);
    }
}

/* The fixed order of the Q8_0 dot (q8_0_dot_q8_0_ref): per block, 8 partial integer sums of 4
 * consecutive products (elements 4l..4l+3 in block order, lanes 0-3 from the low nibbles), each
 * scaled by dx*dy into its own f32 lane with an FMA; the lanes are added pairwise at the end.
 * This is also the order of llama.cpp's AVX2 kernel. */
float q4_0_dot_q8_0_ref(const void *vx, const void *vy, int64_t n) {
    CHECK(n % QK4_0 == 0);
    const struct block_q4_0 *x = vx;
    const struct block_q8_0 *y = vy;
    float lane[8] = {0};
    for (int64_t ib = 0; ib < n / QK4_0; ib++) {
        float d = fp16_to_fp32(x[ib].d) * fp16_to_fp32(y[ib].d);
        for (int l = 0; l < 8; l++) {
            int32_t sumi = 0;
            for (int j = 4 * l; j < 4 * l + 4; j++) {
                int q = j < 16 ? x[ib].qs[j] & 0x0f : x[ib].qs[j - 16] >> 4;
                sumi += (q - 8) * y[ib].qs[j];
            }
            lane[l] = fmaf(d, (float)sumi, lane[l]);
        }
    }
    return quant_sum_lanes8(lane);
}
