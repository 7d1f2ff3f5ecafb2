/* quant_q5_1.c: Q5_1 (quant.h), 32 weights per block, value = d * q + m, q in 0..31.
 *
 * 5-bit assembly as in Q5_0 (nibbles + qh bits), unsigned. Dot with Q8_1 like Q4_1.
 */
#include "quant.h"

#include "../base/error.h"

#include <math.h>
#include <string.h>

static void unpack(const struct block_q5_1 *b, int *q) {
    uint32_t qh;
    memcpy(&qh, b->qh, sizeof(qh));
    for (int j = 0; j < QK5_1 / 2; j++) {
        q[j] = (b->qs[j] & 0x0f) | (int)((qh >> j) & 1) << 4;
        q[j + 16] = (b->qs[j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4;
    }
}

static void pack(struct block_q5_1 *b, float d, float m, const uint8_t *q /* 0..31 */) {
    uint32_t qh = 0;
    b->d = fp32_to_fp16(d);
    b->m = fp32_to_fp16(m);
    for (int j = 0; j < QK5_1 / 2; j++) {
        b->qs[j] = (uint8_t)((q[j] & 0x0f) | (q[j + 16] & 0x0f) << 4);
        qh |= (uint32_t)(q[j] >> 4) << j | (uint32_t)(q[j + 16] >> 4) << (j + 16);
    }
    memcpy(b->qh, &qh, sizeof(qh));
}

void q5_1_dequantize_row_ref(const void *vx, float *y, int64_t n) {
    CHECK(n % QK5_1 == 0);
    const struct block_q5_1 *x = vx;
    for (int64_t ib = 0; ib < n / QK5_1; ib++) {
        int q[QK5_1];
        unpack(&x[ib], q);
        float d = fp16_to_fp32(x[ib].d), m = fp16_to_fp32(x[ib].m);
        for (int j = 0; j < QK5_1; j++) y[ib * QK5_1 + j] = (float)q[j] * d + m;
    }
}

/* m = block minimum, d = (max - min) / 31, round to nearest. */
void q5_1_quantize_row_ref(const float *x, void *vy, int64_t n) {
    CHECK(n % QK5_1 == 0);
    struct block_q5_1 *y = vy;
    for (int64_t ib = 0; ib < n / QK5_1; ib++) {
        const float *xb = x + ib * QK5_1;
        float min = xb[0], max = xb[0];
        for (int j = 1; j < QK5_1; j++) {
            if (xb[j] < min) min = xb[j];
            if (xb[j] > max) max = xb[j];
        }
        float d = quant_fp16_round((max - min) / 31.0f), m = quant_fp16_round(min);
        uint8_t q[QK5_1];
        quant_round_scale_offset(QK5_1, xb, NULL, d, m, 31, q);
        pack(&y[ib], d, m, q);
    }
}

void q5_1_quantize_row_imatrix(const float *x, void *vy, int64_t n, const float *w) {
    CHECK(n % QK5_1 == 0);
    struct block_q5_1 *y = vy;
    for (int64_t ib = 0; ib < n / QK5_1; ib++) {
        const float *xb = x + ib * QK5_1;
        const float *wb = w ? w + ib * QK5_1 : NULL;
        uint8_t q[QK5_1];
        float m;
        float d = quant_fp16_round(quant_fit_scale_offset(QK5_1, xb, wb, 31, 0, q, &m));
        m = quant_fp16_round(m);
        quant_round_scale_offset(QK5_1, xb, wb, d, m, 31, q);
        pack(&y[ib], d, m, q);
    }
}

/* llama.cpp's x86 order: per block 8 lanes of 4-product integer sums scaled by dx*dy with an
 * FMA (as q8_0_dot_q8_0_ref), the offsets m_x * s_y accumulated with FMAs on their own, the two
 * added at the end. */
float q5_1_dot_q8_1_ref(const void *vx, const void *vy, int64_t n) {
    CHECK(n % QK5_1 == 0);
    const struct block_q5_1 *x = vx;
    const struct block_q8_1 *y = vy;
    float lane[8] = {0}, msum = 0.0f;
    for (int64_t ib = 0; ib < n / QK5_1; ib++) {
        int q[QK5_1];
        unpack(&x[ib], q);
        float d = fp16_to_fp32(x[ib].d) * fp16_to_fp32(y[ib].d);
        for (int l = 0; l < 8; l++) {
            int32_t sumi = 0;
            for (int j = 4 * l; j < 4 * l + 4; j++) sumi += q[j] * y[ib].qs[j];
            lane[l] = fmaf(d, (float)sumi, lane[l]);
        }
        msum = fmaf(fp16_to_fp32(x[ib].m), fp16_to_fp32(y[ib].s), msum);
    }
    return quant_sum_lanes8(lane) + msum;
}
