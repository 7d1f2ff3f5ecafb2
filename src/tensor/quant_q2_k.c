/* quant_q2_k.c: Q2_K (quant.h), 256 weights per super-block, sixteen sub-blocks of 16:
 * value = d * sc * q - dmin * m, with 4-bit sc (low nibble of scales[e/16]) and m (high
 * nibble), q in 0..3.
 *
 * Layout: element e, h = e/128, j = (e%128)/32, l = e%32: q = bits 2j..2j+1 of qs[32h + l].
 * Quantizer: quant_fit_super_scale_min with 16 sub-blocks of 16, 4-bit codes. Dot with Q8_K
 * like ggml's generic kernel: d_x d_y sum_i sc_i sum(q a) - dmin_x d_y sum_i m_i bsums[i].
 */
#include "quant.h"

#include "../base/error.h"

#include <string.h>

static int quant_at(const struct block_q2_k *b, int e) {
    int h = e / 128, j = (e % 128) / 32, l = e % 32;
    return (b->qs[32 * h + l] >> (2 * j)) & 3;
}

void q2_k_dequantize_row_ref(const void *vx, float *y, int64_t n) {
    CHECK(n % QK_K == 0);
    const struct block_q2_k *x = vx;
    for (int64_t ib = 0; ib < n / QK_K; ib++) {
        float d = fp16_to_fp32(x[ib].d), dmin = fp16_to_fp32(x[ib].dmin);
        for (int i = 0; i < QK_K / 16; i++) {
            float dl = d * (float)(x[ib].scales[i] & 0x0f);
            float ml = dmin * (float)(x[ib].scales[i] >> 4);
            for (int l = 0; l < 16; l++)
                y[ib * QK_K + 16 * i + l] = dl * (float)quant_at(&x[ib], 16 * i + l) - ml;
        }
    }
}

void q2_k_quantize_row_imatrix(const float *x, void *vy, int64_t n, const float *w) {
    CHECK(n % QK_K == 0);
    struct block_q2_k *y = vy;
    for (int64_t ib = 0; ib < n / QK_K; ib++) {
        float d, dmin;
        uint8_t sc[16], m[16], q[QK_K];
        quant_fit_super_scale_min(x + ib * QK_K, w ? w + ib * QK_K : NULL, 16, 16, 15, 3, &d, &dmin,
                                  sc, m, q);
        y[ib].d = fp32_to_fp16(d);
        y[ib].dmin = fp32_to_fp16(dmin);
        for (int i = 0; i < 16; i++) y[ib].scales[i] = (uint8_t)(sc[i] | m[i] << 4);
        memset(y[ib].qs, 0, sizeof(y[ib].qs));
        for (int e = 0; e < QK_K; e++) {
            int h = e / 128, j = (e % 128) / 32, l = e % 32;
            y[ib].qs[32 * h + l] |= (uint8_t)(q[e] << (2 * j));
        }
    }
}

void q2_k_quantize_row_ref(const float *x, void *y, int64_t n) {
    q2_k_quantize_row_imatrix(x, y, n, NULL);
}

float q2_k_dot_q8_k_ref(const void *vx, const void *vy, int64_t n) {
    CHECK(n % QK_K == 0);
    const struct block_q2_k *x = vx;
    const struct block_q8_k *y = vy;
    float sum = 0.0f;
    for (int64_t ib = 0; ib < n / QK_K; ib++) {
        int32_t isum = 0, isum_min = 0;
        for (int i = 0; i < QK_K / 16; i++) {
            int32_t sub = 0;
            for (int l = 0; l < 16; l++) sub += quant_at(&x[ib], 16 * i + l) * y[ib].qs[16 * i + l];
            isum += (x[ib].scales[i] & 0x0f) * sub;
            isum_min += (x[ib].scales[i] >> 4) * y[ib].bsums[i];
        }
        sum += y[ib].d * fp16_to_fp32(x[ib].d) * (float)isum -
               y[ib].d * fp16_to_fp32(x[ib].dmin) * (float)isum_min;
    }
    return sum;
}
