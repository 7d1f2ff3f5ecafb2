/* quant_q5_k.c: Q5_K (quant.h), Q4_K with a 5th bit: value = d * sc[s] * q - dmin * m[s],
 * q in 0..31. The low 4 bits sit in qs exactly as Q4_K's quants; bit (2c + half) of qh[l] is
 * the 5th bit of the value at 64c + 32 half + l (qh is shared by all four 64-value chunks).
 *
 * Quantizer: quant_fit_super_scale_min with 32 levels, as Q4_K. Dot with Q8_K
 * as Q4_K.
 */
#include "quant.h"

#include "../base/error.h"

/* q[0..256) in 0..31 of one super-block. */
static void unpack(const struct block_q5_k *b, uint8_t *q) {
    for (int c = 0; c < 4; c++) {
        for (int l = 0; l < 32; l++) {
            uint8_t lo = b->qs[32 * c + l];
            q[64 * c + l] = (uint8_t)((lo & 0x0f) | ((b->qh[l] >> (2 * c)) & 1) << 4);
            q[64 * c + 32 + l] = (uint8_t)((lo >> 4) | ((b->qh[l] >> (2 * c + 1)) & 1) << 4);
        }
    }
}

void q5_k_dequantize_row_ref(const void *vx, float *y, int64_t n) {
    CHECK(n % QK_K == 0);
    const struct block_q5_k *x = vx;
    for (int64_t ib = 0; ib < n / QK_K; ib++) {
        float d = fp16_to_fp32(x[ib].d), dmin = fp16_to_fp32(x[ib].dmin);
        uint8_t q[QK_K];
        unpack(&x[ib], q);
        for (int s = 0; s < 8; s++) {
            uint8_t sc, m;
            k_quant_get_scale_min(x[ib].scales, s, &sc, &m);
            float ds = d * (float)sc, mins = dmin * (float)m;
            for (int l = 0; l < 32; l++)
                y[ib * QK_K + 32 * s + l] = ds * (float)q[32 * s + l] - mins;
        }
    }
}

void q5_k_quantize_row_imatrix(const float *x, void *vy, int64_t n, const float *w) {
    CHECK(n % QK_K == 0);
    struct block_q5_k *y = vy;
    for (int64_t ib = 0; ib < n / QK_K; ib++) {
        uint8_t sc[8], m[8], q[QK_K];
        float d, dmin;
        quant_fit_super_scale_min(x + ib * QK_K, w ? w + ib * QK_K : NULL, 8, 32, 63, 31, &d, &dmin,
                                  sc, m, q);
        y[ib].d = fp32_to_fp16(d);
        y[ib].dmin = fp32_to_fp16(dmin);
        k_quant_pack_scale_min(sc, m, y[ib].scales);
        for (int l = 0; l < 32; l++) y[ib].qh[l] = 0;
        for (int c = 0; c < 4; c++) {
            for (int l = 0; l < 32; l++) {
                uint8_t q0 = q[64 * c + l], q1 = q[64 * c + 32 + l];
                y[ib].qs[32 * c + l] = (uint8_t)((q0 & 0x0f) | (q1 & 0x0f) << 4);
                y[ib].qh[l] |= (uint8_t)((q0 >> 4) << (2 * c) | (q1 >> 4) << (2 * c + 1));
            }
        }
    }
}

void q5_k_quantize_row_ref(const float *x, void *y, int64_t n) {
    q5_k_quantize_row_imatrix(x, y, n, NULL);
}

float q5_k_dot_q8_k_ref(const void *vx, const void *vy, int64_t n) {
    CHECK(n % QK_K == 0);
    const struct block_q5_k *x = vx;
    const struct block_q8_k *y = vy;
    float sum = 0.0f;
    for (int64_t ib = 0; ib < n / QK_K; ib++) {
        uint8_t q[QK_K];
        unpack(&x[ib], q);
        int32_t isum = 0, isum_min = 0;
        for (int s = 0; s < 8; s++) {
            uint8_t sc, m;
            k_quant_get_scale_min(x[ib].scales, s, &sc, &m);
            int32_t sub = 0;
            for (int l = 0; l < 32; l++) sub += q[32 * s + l] * y[ib].qs[32 * s + l];
            isum += sc * sub;
            isum_min += m * (y[ib].bsums[2 * s] + y[ib].bsums[2 * s + 1]);
        }
        sum += fp16_to_fp32(x[ib].d) * y[ib].d * (float)isum -
               fp16_to_fp32(x[ib].dmin) * y[ib].d * (float)isum_min;
    }
    return sum;
}
