/* quant_q4_k.c: Q4_K (quant.h), 256 weights per super-block, eight sub-blocks of 32:
 * value = d * sc[s] * q - dmin * m[s], 6-bit sc/m, q in 0..15. Also the 12-byte scale/min
 * packing that Q5_K shares.
 *
 * Quantizer: quant_fit_super_scale_min (quant_search.c) with 8 sub-blocks of 32, 6-bit codes.
 *
 * Dot with Q8_K like ggml's generic kernel: per super-block the integer sum
 * sum_s sc[s] sum(q a) times d_x d_y, minus dmin_x d_y sum_s m[s] (bsums[2s] + bsums[2s+1]).
 */
#include "quant.h"

#include "../base/error.h"

/* ======================================================================================
 * Scale/min packing (quant-formats.md §4)
 * ====================================================================================== */

void k_quant_get_scale_min(const uint8_t *b, int s, uint8_t *sc, uint8_t *m) {
    if (s < 4) {
        *sc = b[s] & 63;
        *m = b[s + 4] & 63;
    } else {
        *sc = (uint8_t)((b[s + 4] & 0x0f) | (b[s - 4] >> 6) << 4);
        *m = (uint8_t)((b[s + 4] >> 4) | (b[s] >> 6) << 4);
    }
}

void k_quant_pack_scale_min(const uint8_t sc[8], const uint8_t m[8], uint8_t *b) {
    for (int s = 0; s < 4; s++) {
        b[s] = (uint8_t)((sc[s] & 63) | (sc[s + 4] >> 4) << 6);
        b[s + 4] = (uint8_t)((m[s] & 63) | (m[s + 4] >> 4) << 6);
        b[s + 8] = (uint8_t)((sc[s + 4] & 0x0f) | (m[s + 4] & 0x0f) << 4);
    }
}

/* ======================================================================================
 * Q4_K
 * ====================================================================================== */

void q4_k_dequantize_row_ref(const void *vx, float *y, int64_t n) {
    CHECK(n % QK_K == 0);
    const struct block_q4_k *x = vx;
    for (int64_t ib = 0; ib < n / QK_K; ib++) {
        float d = fp16_to_fp32(x[ib].d), dmin = fp16_to_fp32(x[ib].dmin);
        float *yb = y + ib * QK_K;
        for (int c = 0; c < 4; c++) { /* 64-value chunk: sub-blocks 2c (low) and 2c+1 (high) */
            uint8_t sc0, m0, sc1, m1;
            k_quant_get_scale_min(x[ib].scales, 2 * c, &sc0, &m0);
            k_quant_get_scale_min(x[ib].scales, 2 * c + 1, &sc1, &m1);
            float d0 = d * (float)sc0, min0 = dmin * (float)m0;
            float d1 = d * (float)sc1, min1 = dmin * (float)m1;
            const uint8_t *qs = x[ib].qs + 32 * c;
            for (int l = 0; l < 32; l++) {
                yb[64 * c + l] = d0 * (float)(qs[l] & 0x0f) - min0;
                yb[64 * c + 32 + l] = d1 * (float)(qs[l] >> 4) - min1;
            }
        }
    }
}

void q4_k_quantize_row_imatrix(const float *x, void *vy, int64_t n, const float *w) {
    CHECK(n % QK_K == 0);
    struct block_q4_k *y = vy;
    for (int64_t ib = 0; ib < n / QK_K; ib++) {
        uint8_t sc[8], m[8], q[QK_K];
        float d, dmin;
        quant_fit_super_scale_min(x + ib * QK_K, w ? w + ib * QK_K : NULL, 8, 32, 63, 15, &d, &dmin,
                                  sc, m, q);
        y[ib].d = fp32_to_fp16(d);
        y[ib].dmin = fp32_to_fp16(dmin);
        k_quant_pack_scale_min(sc, m, y[ib].scales);
        for (int c = 0; c < 4; c++)
            for (int l = 0; l < 32; l++)
                y[ib].qs[32 * c + l] = (uint8_t)(q[64 * c + l] | q[64 * c + 32 + l] << 4);
    }
}

void q4_k_quantize_row_ref(const float *x, void *y, int64_t n) {
    q4_k_quantize_row_imatrix(x, y, n, NULL);
}

float q4_k_dot_q8_k_ref(const void *vx, const void *vy, int64_t n) {
    CHECK(n % QK_K == 0);
    const struct block_q4_k *x = vx;
    const struct block_q8_k *y = vy;
    float sum = 0.0f;
    for (int64_t ib = 0; ib < n / QK_K; ib++) {
        int32_t isum = 0, isum_min = 0;
        for (int s = 0; s < 8; s++) {
            uint8_t sc, m;
            k_quant_get_scale_min(x[ib].scales, s, &sc, &m);
            const uint8_t *qs = x[ib].qs + 32 * (s / 2);
            const int8_t *a = y[ib].qs + 32 * s;
            int32_t sub = 0;
            for (int l = 0; l < 32; l++) sub += (s % 2 ? qs[l] >> 4 : qs[l] & 0x0f) * a[l];
            isum += sc * sub;
            isum_min += m * (y[ib].bsums[2 * s] + y[ib].bsums[2 * s + 1]);
        }
        sum += fp16_to_fp32(x[ib].d) * y[ib].d * (float)isum -
               fp16_to_fp32(x[ib].dmin) * y[ib].d * (float)isum_min;
    }
    return sum;
}
