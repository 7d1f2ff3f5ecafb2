/* quant_q4_1.c: Q4_1 (quant.h), 32 weights per block, value = d * q + m, q in 0..15.
 *
 * Nibbles as in Q4_0. Dot with Q8_1: d_x d_y sum(q a) + m_x s_y,
 * where s_y = d_y sum(a) is stored in the Q8_1 block.
 */
#include "quant.h"

#include "../base/error.h"

#include <math.h>

void q4_1_dequantize_row_ref(const void *vx, float *y, int64_t n) {
    CHECK(n % QK4_1 == 0);
    const struct block_q4_1 *x = vx;
    for (int64_t ib = 0; ib < n / QK4_1; ib++) {
        float d = fp16_to_fp32(x[ib].d), m = fp16_to_fp32(x[ib].m);
        for (int j = 0; j < QK4_1 / 2; j++) {
            y[ib * QK4_1 + j] = (float)(x[ib].qs[j] & 0x0f) * d + m;
            y[ib * QK4_1 + j + 16] = (float)(x[ib].qs[j] >> 4) * d + m;
        }
    }
}

static void pack(struct block_q4_1 *b, float d, float m, const uint8_t *q) {
    b->d = fp32_to_fp16(d);
    b->m = fp32_to_fp16(m);
    for (int j = 0; j < QK4_1 / 2; j++) b->qs[j] = (uint8_t)(q[j] | q[j + 16] << 4);
}

/* m = block minimum, d = (max - min) / 15, round to nearest (against the fp16-rounded d, m). */
void q4_1_quantize_row_ref(const float *x, void *vy, int64_t n) {
    CHECK(n % QK4_1 == 0);
    struct block_q4_1 *y = vy;
    for (int64_t ib = 0; ib < n / QK4_1; ib++) {
        const float *xb = x + ib * QK4_1;
        float min = xb[0], max = xb[0];
        for (int j = 1; j < QK4_1; j++) {
            if (xb[j] < min) min = xb[j];
            if (xb[j] > max) max = xb[j];
        }
        float d = quant_fp16_round((max - min) / 15.0f), m = quant_fp16_round(min);
        uint8_t q[QK4_1];
        quant_round_scale_offset(QK4_1, xb, NULL, d, m, 15, q);
        pack(&y[ib], d, m, q);
    }
}

void q4_1_quantize_row_imatrix(const float *x, void *vy, int64_t n, const float *w) {
    CHECK(n % QK4_1 == 0);
    struct block_q4_1 *y = vy;
    for (int64_t ib = 0; ib < n / QK4_1; ib++) {
        const float *xb = x + ib * QK4_1;
        const float *wb = w ? w + ib * QK4_1 : NULL;
        uint8_t q[QK4_1];
        float m;
        float d = quant_fp16_round(quant_fit_scale_offset(QK4_1, xb, wb, 15, 0, q, &m));
        m = quant_fp16_round(m);
        quant_round_scale_offset(QK4_1, xb, wb, d, m, 15, q);
        pack(&y[ib], d, m, q);
    }
}

/* llama.cpp's x86 order: per block 8 lanes of 4-product integer sums scaled by dx*dy with an
 * FMA (as q8_0_dot_q8_0_ref), the offsets m_x * s_y accumulated with FMAs on their own, the two
 * added at the end. */
float q4_1_dot_q8_1_ref(const void *vx, const void *vy, int64_t n) {
    CHECK(n % QK4_1 == 0);
    const struct block_q4_1 *x = vx;
    const struct block_q8_1 *y = vy;
    float lane[8] = {0}, msum = 0.0f;
    for (int64_t ib = 0; ib < n / QK4_1; ib++) {
        float d = fp16_to_fp32(x[ib].d) * fp16_to_fp32(y[ib].d);
        for (int l = 0; l < 8; l++) {
            int32_t sumi = 0;
            for (int j = 4 * l; j < 4 * l + 4; j++) {
                int q = j < 16 ? x[ib].qs[j] & 0x0f : x[ib].qs[j - 16] >> 4;
                sumi += q * y[ib].qs[j];
            }
            lane[l] = fmaf(d, (float)sumi, lane[l]);
        }
        msum = fmaf(fp16_to_fp32(x[ib].m), fp16_to_fp32(y[ib].s), msum);
    }
    return quant_sum_lanes8(lane) + msum;
}
