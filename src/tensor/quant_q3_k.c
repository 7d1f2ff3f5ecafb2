/* quant_q3_k.c: Q3_K (quant.h), 256 weights per super-block, sixteen sub-blocks of 16:
 * value = d * sc[e/16] * q, 6-bit signed scales sc in -32..31, q in -4..3.
 *
 * Layout (quant-formats.md §4): element e, h = e/128, j = (e%128)/32, l = e%32: the low 2 bits
 * of q + 4 are bits 2j..2j+1 of qs[32h + l]; bit (4h + j) of hmask[l] is its third bit (set:
 * q = low2, clear: q = low2 - 4). Scale j: low 4 bits in nibble j/8 of scales[j%8], high 2
 * bits in bits 2(j/4)..2(j/4)+1 of scales[8 + j%4], stored + 32.
 * Quantizer: quant_fit_super_scale with codes -32..31. Dot with Q8_K: d_x d_y sum_j sc_j
 * sum(q a) over the 16-value sub-blocks.
 */
#include "quant.h"

#include "../base/error.h"

#include <string.h>

int q3_k_get_scale(const uint8_t *scales, int j) {
    int low = j < 8 ? scales[j] & 0x0f : scales[j - 8] >> 4;
    int high = (scales[8 + j % 4] >> (2 * (j / 4))) & 3;
    return (low | high << 4) - 32;
}

void q3_k_pack_scales(const uint8_t codes[16], uint8_t *scales) {
    memset(scales, 0, 12);
    for (int j = 0; j < 16; j++) {
        scales[j % 8] |= (uint8_t)((codes[j] & 0x0f) << (j < 8 ? 0 : 4));
        scales[8 + j % 4] |= (uint8_t)((codes[j] >> 4) << (2 * (j / 4)));
    }
}

/* q[0..256) in -4..3 of one super-block. */
static void unpack(const struct block_q3_k *b, int8_t *q) {
    for (int e = 0; e < QK_K; e++) {
        int h = e / 128, j = (e % 128) / 32, l = e % 32;
        int low2 = (b->qs[32 * h + l] >> (2 * j)) & 3;
        int hb = (b->hmask[l] >> (4 * h + j)) & 1;
        q[e] = (int8_t)(low2 - (hb ? 0 : 4));
    }
}

static void pack(struct block_q3_k *b, const int8_t *q /* -4..3 */) {
    memset(b->hmask, 0, sizeof(b->hmask));
    memset(b->qs, 0, sizeof(b->qs));
    for (int e = 0; e < QK_K; e++) {
        int h = e / 128, j = (e % 128) / 32, l = e % 32;
        int u = q[e] + 4; /* 0..7: bit 2 is the hmask bit */
        b->qs[32 * h + l] |= (uint8_t)((u & 3) << (2 * j));
        b->hmask[l] |= (uint8_t)((u >> 2) << (4 * h + j));
    }
}

void q3_k_dequantize_row_ref(const void *vx, float *y, int64_t n) {
    CHECK(n % QK_K == 0);
    const struct block_q3_k *x = vx;
    for (int64_t ib = 0; ib < n / QK_K; ib++) {
        float d = fp16_to_fp32(x[ib].d);
        int8_t q[QK_K];
        unpack(&x[ib], q);
        for (int j = 0; j < QK_K / 16; j++) {
            float dl = d * (float)q3_k_get_scale(x[ib].scales, j);
            for (int l = 0; l < 16; l++) y[ib * QK_K + 16 * j + l] = dl * (float)q[16 * j + l];
        }
    }
}

void q3_k_quantize_row_imatrix(const float *x, void *vy, int64_t n, const float *w) {
    CHECK(n % QK_K == 0);
    struct block_q3_k *y = vy;
    for (int64_t ib = 0; ib < n / QK_K; ib++) {
        float d;
        int8_t sc[16], q[QK_K];
        quant_fit_super_scale(x + ib * QK_K, w ? w + ib * QK_K : NULL, 16, 16, -32, 31, -4, 3, &d,
                              sc, q);
        uint8_t codes[16];
        for (int j = 0; j < 16; j++) codes[j] = (uint8_t)(sc[j] + 32);
        y[ib].d = fp32_to_fp16(d);
        q3_k_pack_scales(codes, y[ib].scales);
        pack(&y[ib], q);
    }
}

void q3_k_quantize_row_ref(const float *x, void *y, int64_t n) {
    q3_k_quantize_row_imatrix(x, y, n, NULL);
}

float q3_k_dot_q8_k_ref(const void *vx, const void *vy, int64_t n) {
    CHECK(n % QK_K == 0);
    const struct block_q3_k *x = vx;
    const struct block_q8_k *y = vy;
    float sum = 0.0f;
    for (int64_t ib = 0; ib < n / QK_K; ib++) {
        int8_t q[QK_K];
        unpack(&x[ib], q);
        int32_t isum = 0;
        for (int j = 0; j < QK_K / 16; j++) {
            int32_t sub = 0;
            for (int l = 0; l < 16; l++) sub += q[16 * j + l] * y[ib].qs[16 * j + l];
            isum += q3_k_get_scale(x[ib].scales, j) * sub;
        }
        sum += fp16_to_fp32(x[ib].d) * y[ib].d * (float)isum;
    }
    return sum;
}
