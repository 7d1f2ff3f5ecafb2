/* quant_q6_k.c: Q6_K (quant.h), 256 weights per super-block, sixteen sub-blocks of 16:
 * value = d * scales[e/16] * q, signed 8-bit scales, q in -32..31 (6 bits, stored + 32).
 *
 * Layout: two 128-value halves h; quarter k = (e%128)/32 of a half takes its low 4 bits from
 * nibble k/2 of ql[64h + 32(k%2) + l] and its high 2 bits from bits 2k..2k+1 of qh[32h + l].
 * Quantizer: quant_fit_super_scale with codes -128..127. Dot with Q8_K like ggml's generic
 * kernel: d_x d_y sum_i scales[i] sum(q a) over the 16-value sub-blocks.
 */
#include "quant.h"

#include "../base/error.h"

/* q[0..256) in -32..31 of one super-block. */
static void unpack(const struct block_q6_k *b, int8_t *q) {
    for (int h = 0; h < 2; h++) {
        const uint8_t *ql = b->ql + 64 * h, *qh = b->qh + 32 * h;
        for (int l = 0; l < 32; l++) {
            q[128 * h + l] = (int8_t)(((ql[l] & 0x0f) | ((qh[l] >> 0) & 3) << 4) - 32);
            q[128 * h + 32 + l] = (int8_t)(((ql[32 + l] & 0x0f) | ((qh[l] >> 2) & 3) << 4) - 32);
            q[128 * h + 64 + l] = (int8_t)(((ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4) - 32);
            q[128 * h + 96 + l] = (int8_t)(((ql[32 + l] >> 4) | ((qh[l] >> 6) & 3) << 4) - 32);
        }
    }
}

static void pack(struct block_q6_k *b, const int8_t *q /* -32..31 */) {
    for (int h = 0; h < 2; h++) {
        uint8_t *ql = b->ql + 64 * h, *qh = b->qh + 32 * h;
        const int8_t *qq = q + 128 * h;
        for (int l = 0; l < 32; l++) {
            int q0 = qq[l] + 32, q1 = qq[32 + l] + 32, q2 = qq[64 + l] + 32, q3 = qq[96 + l] + 32;
            ql[l] = (uint8_t)((q0 & 0x0f) | (q2 & 0x0f) << 4);
            ql[32 + l] = (uint8_t)((q1 & 0x0f) | (q3 & 0x0f) << 4);
            qh[l] = (uint8_t)((q0 >> 4) | (q1 >> 4) << 2 | (q2 >> 4) << 4 | (q3 >> 4) << 6);
        }
    }
}

void q6_k_dequantize_row_ref(const void *vx, float *y, int64_t n) {
    CHECK(n % QK_K == 0);
    const struct block_q6_k *x = vx;
    for (int64_t ib = 0; ib < n / QK_K; ib++) {
        float d = fp16_to_fp32(x[ib].d);
        int8_t q[QK_K];
        unpack(&x[ib], q);
        for (int e = 0; e < QK_K; e++)
            y[ib * QK_K + e] = d * (float)x[ib].scales[e / 16] * (float)q[e];
    }
}

void q6_k_quantize_row_imatrix(const float *x, void *vy, int64_t n, const float *w) {
    CHECK(n % QK_K == 0);
    struct block_q6_k *y = vy;
    for (int64_t ib = 0; ib < n / QK_K; ib++) {
        float d;
        int8_t q[QK_K];
        quant_fit_super_scale(x + ib * QK_K, w ? w + ib * QK_K : NULL, 16, 16, -128, 127, -32, 31,
                              &d, y[ib].scales, q);
        y[ib].d = fp32_to_fp16(d);
        pack(&y[ib], q);
    }
}

void q6_k_quantize_row_ref(const float *x, void *y, int64_t n) {
    q6_k_quantize_row_imatrix(x, y, n, NULL);
}

float q6_k_dot_q8_k_ref(const void *vx, const void *vy, int64_t n) {
    CHECK(n % QK_K == 0);
    const struct block_q6_k *x = vx;
    const struct block_q8_k *y = vy;
    float sum = 0.0f;
    for (int64_t ib = 0; ib < n / QK_K; ib++) {
        int8_t q[QK_K];
        unpack(&x[ib], q);
        int32_t isum = 0;
        for (int i = 0; i < QK_K / 16; i++) {
            int32_t sub = 0;
            for (int l = 0; l < 16; l++) sub += q[16 * i + l] * y[ib].qs[16 * i + l];
            isum += x[ib].scales[i] * sub;
        }
        sum += fp16_to_fp32(x[ib].d) * y[ib].d * (float)isum;
    }
    return sum;
}
