/* quant_q5_0.c: Q5_0 (quant.h), 32 weights per block, value = d * (q - 16), q in 0..31.
 *
 * The low 4 bits of q are nibbles as in Q4_0; bit j of the little-endian u32 qh is the 5th bit
 * (value 16) of element j. Dot with Q8_0 like Q4_0.
 */
#include "quant.h"

#include "../base/error.h"

#include <math.h>
#include <string.h>

/* q[0..32) in 0..31 of one block. */
static void unpack(const struct block_q5_0 *b, int *q) {
    uint32_t qh;
    memcpy(&qh, b->qh, sizeof(qh));
    for (int j = 0; j < QK5_0 / 2; j++) {
        q[j] = (b->qs[j] & 0x0f) | (int)((qh >> j) & 1) << 4;
        q[j + 16] = (b->qs[j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4;
    }
}

static void pack(struct block_q5_0 *b, float d, const int8_t *q /* -16..15 */) {
    uint32_t qh = 0;
    b->d = fp32_to_fp16(d);
    for (int j = 0; j < QK5_0 / 2; j++) {
        int q0 = q[j] + 16, q1 = q[j + 16] + 16;
        b->qs[j] = (uint8_t)((q0 & 0x0f) | (q1 & 0x0f) << 4);
        qh |= (uint32_t)(q0 >> 4) << j | (uint32_t)(q1 >> 4) << (j + 16);
    }
    memcpy(b->qh, &qh, sizeof(qh));
}

void q5_0_dequantize_row_ref(const void *vx, float *y, int64_t n) {
    CHECK(n % QK5_0 == 0);
    const struct block_q5_0 *x = vx;
    for (int64_t ib = 0; ib < n / QK5_0; ib++) {
        int q[QK5_0];
        unpack(&x[ib], q);
        float d = fp16_to_fp32(x[ib].d);
        for (int j = 0; j < QK5_0; j++) y[ib * QK5_0 + j] = d * (float)(q[j] - 16);
    }
}

/* The largest-magnitude element goes to level -16, everything rounds to nearest. */
void q5_0_quantize_row_ref(const float *x, void *vy, int64_t n) {
    CHECK(n % QK5_0 == 0);
    struct block_q5_0 *y = vy;
    for (int64_t ib = 0; ib < n / QK5_0; ib++) {
        const float *xb = x + ib * QK5_0;
        float max = 0.0f;
        for (int j = 0; j < QK5_0; j++)
            if (fabsf(xb[j]) > fabsf(max)) max = xb[j];
        float d = quant_fp16_round(max / -16.0f);
        int8_t q[QK5_0];
        quant_round_scale(QK5_0, xb, NULL, d, -16, 15, q);
        pack(&y[ib], d, q);
    }
}

void q5_0_quantize_row_imatrix(const float *x, void *vy, int64_t n, const float *w) {
    CHECK(n % QK5_0 == 0);
    struct block_q5_0 *y = vy;
    for (int64_t ib = 0; ib < n / QK5_0; ib++) {
        const float *xb = x + ib * QK5_0;
        const float *wb = w ? w + ib * QK5_0 : NULL;
        int8_t q[QK5_0];
        float d = quant_fp16_round(quant_fit_scale(QK5_0, xb, wb, -16, 15, q));
        quant_round_scale(QK5_0, xb, wb, d, -16, 15, q);
        pack(&y[ib], d, q);
    }
}

/* The fixed order of the Q8_0 dot (see q4_0_dot_q8_0_ref): 8 lanes of 4-product integer sums
 * per block, scaled by dx*dy with an FMA into f32 lanes, added pairwise at the end. */
float q5_0_dot_q8_0_ref(const void *vx, const void *vy, int64_t n) {
    CHECK(n % QK5_0 == 0);
    const struct block_q5_0 *x = vx;
    const struct block_q8_0 *y = vy;
    float lane[8] = {0};
    for (int64_t ib = 0; ib < n / QK5_0; ib++) {
        int q[QK5_0];
        unpack(&x[ib], q);
        float d = fp16_to_fp32(x[ib].d) * fp16_to_fp32(y[ib].d);
        for (int l = 0; l < 8; l++) {
            int32_t sumi = 0;
            for (int j = 4 * l; j < 4 * l + 4; j++) sumi += (q[j] - 16) * y[ib].qs[j];
            lane[l] = fmaf(d, (float)sumi, lane[l]);
        }
    }
    return quant_sum_lanes8(lane);
}
