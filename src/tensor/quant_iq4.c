/* quant_iq4.c: IQ4_NL and IQ4_XS (quant.h): 4-bit indices into a fixed non-linear table of 16
 * signed levels, denser near zero (kvalues_iq4nl).
 *
 * IQ4_NL: 32 weights per block, value = d * T[q]; nibbles as Q4_0; dotted with Q8_0.
 * IQ4_XS: 256 per super-block, eight sub-blocks of 32 with 6-bit scales ls (bias 32),
 * value = (d * (ls - 32)) * T[q]; dotted with Q8_K.
 * Quantizers (our own): quant_fit_iq4 per block / sub-block; IQ4_XS then quantizes the
 * sub-block scales against the fp16 super-scale like the K-quants (largest scale -> code -32,
 * neighbouring codes tried, least-squares refit of d).
 */
#include "quant.h"

#include "../base/error.h"

#include <math.h>
#include <string.h>

const int8_t kvalues_iq4nl[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                  1,    13,   25,  38,  53,  69,  89,  113};

/* ======================================================================================
 * IQ4_NL
 * ====================================================================================== */

void iq4_nl_dequantize_row_ref(const void *vx, float *y, int64_t n) {
    CHECK(n % QK4_NL == 0);
    const struct block_iq4_nl *x = vx;
    for (int64_t ib = 0; ib < n / QK4_NL; ib++) {
        float d = fp16_to_fp32(x[ib].d);
        for (int j = 0; j < QK4_NL / 2; j++) {
            y[ib * QK4_NL + j] = d * (float)kvalues_iq4nl[x[ib].qs[j] & 0x0f];
            y[ib * QK4_NL + j + 16] = d * (float)kvalues_iq4nl[x[ib].qs[j] >> 4];
        }
    }
}

void iq4_nl_quantize_row_imatrix(const float *x, void *vy, int64_t n, const float *w) {
    CHECK(n % QK4_NL == 0);
    struct block_iq4_nl *y = vy;
    for (int64_t ib = 0; ib < n / QK4_NL; ib++) {
        const float *xb = x + ib * QK4_NL;
        const float *wb = quant_usable_weights(QK4_NL, w ? w + ib * QK4_NL : NULL);
        uint8_t q[QK4_NL];
        float d = quant_fp16_round(quant_fit_iq4(QK4_NL, xb, wb, q));
        quant_round_iq4(QK4_NL, xb, wb, d, q);
        y[ib].d = fp32_to_fp16(d);
        for (int j = 0; j < QK4_NL / 2; j++) y[ib].qs[j] = (uint8_t)(q[j] | q[j + 16] << 4);
    }
}

void iq4_nl_quantize_row_ref(const float *x, void *y, int64_t n) {
    iq4_nl_quantize_row_imatrix(x, y, n, NULL);
}

/* The fixed order of the Q8_0 dot (see q4_0_dot_q8_0_ref): 8 lanes of 4-product integer sums
 * per block, scaled by dx*dy with an FMA into f32 lanes, added pairwise at the end. */
float iq4_nl_dot_q8_0_ref(const void *vx, const void *vy, int64_t n) {
    CHECK(n % QK4_NL == 0);
    const struct block_iq4_nl *x = vx;
    const struct block_q8_0 *y = vy;
    float lane[8] = {0};
    for (int64_t ib = 0; ib < n / QK4_NL; ib++) {
        float d = fp16_to_fp32(x[ib].d) * fp16_to_fp32(y[ib].d);
        for (int l = 0; l < 8; l++) {
            int32_t sumi = 0;
            for (int j = 4 * l; j < 4 * l + 4; j++) {
                int q = j < 16 ? x[ib].qs[j] & 0x0f : x[ib].qs[j - 16] >> 4;
                sumi += kvalues_iq4nl[q] * y[ib].qs[j];
            }
            lane[l] = fmaf(d, (float)sumi, lane[l]);
        }
    }
    return quant_sum_lanes8(lane);
}

/* ======================================================================================
 * IQ4_XS
 * ====================================================================================== */

static int iq4_xs_scale(const struct block_iq4_xs *b, int ib) {
    int low = (b->scales_l[ib / 2] >> (4 * (ib % 2))) & 0x0f;
    int high = (b->scales_h >> (2 * ib)) & 3;
    return (low | high << 4) - 32;
}

void iq4_xs_dequantize_row_ref(const void *vx, float *y, int64_t n) {
    CHECK(n % QK_K == 0);
    const struct block_iq4_xs *x = vx;
    for (int64_t ibl = 0; ibl < n / QK_K; ibl++) {
        float d = fp16_to_fp32(x[ibl].d);
        for (int ib = 0; ib < QK_K / 32; ib++) {
            float dl = d * (float)iq4_xs_scale(&x[ibl], ib);
            const uint8_t *qs = x[ibl].qs + 16 * ib;
            float *yb = y + ibl * QK_K + 32 * ib;
            for (int j = 0; j < 16; j++) {
                yb[j] = dl * (float)kvalues_iq4nl[qs[j] & 0x0f];
                yb[j + 16] = dl * (float)kvalues_iq4nl[qs[j] >> 4];
            }
        }
    }
}

/* Code in -32..31 for a sub-block whose ideal scale is `scale`, among the neighbours of the
 * rounded one; writes the code and indices, returns the error. */
static float pick_code(const float *x, const float *w, float dd, float scale, int *code,
                       uint8_t *q) {
    if (dd == 0.0f) {
        *code = 0;
        return quant_round_iq4(32, x, w, 0.0f, q);
    }
    int c0 = quant_nearest_int(fminf(fmaxf(scale / dd, -32.0f), 31.0f));
    uint8_t trial[32];
    float best = INFINITY;
    for (int c = c0 - 1; c <= c0 + 1; c++) {
        if (c < -32 || c > 31) continue;
        float err = quant_round_iq4(32, x, w, dd * (float)c, trial);
        if (err < best) {
            best = err;
            *code = c;
            memcpy(q, trial, 32);
        }
    }
    return best;
}

/* One super-block: sub-block scales, super-scale, codes (see quant_search.c's K-quant banner). */
static void iq4_xs_fit(const float *x, const float *w, float *d, int *code, uint8_t *q) {
    const float *ws[8];
    float scale[8], smax = 0.0f;
    for (int ib = 0; ib < 8; ib++) {
        ws[ib] = quant_usable_weights(32, w ? w + 32 * ib : NULL);
        scale[ib] = quant_fit_iq4(32, x + 32 * ib, ws[ib], q + 32 * ib);
        if (fabsf(scale[ib]) > fabsf(smax)) smax = scale[ib];
    }
    float dd = quant_fp16_round(smax / -32.0f);
    float err = 0.0f;
    for (int ib = 0; ib < 8; ib++)
        err += pick_code(x + 32 * ib, ws[ib], dd, scale[ib], &code[ib], q + 32 * ib);

    double sxa = 0.0, saa = 0.0;
    for (int ib = 0; ib < 8; ib++) {
        for (int l = 0; l < 32; l++) {
            double wi = ws[ib] ? ws[ib][l] : 1.0;
            double a = (double)code[ib] * kvalues_iq4nl[q[32 * ib + l]];
            sxa += wi * x[32 * ib + l] * a;
            saa += wi * a * a;
        }
    }
    if (saa > 0.0) {
        float d2 = quant_fp16_round((float)(sxa / saa));
        int code2[8];
        uint8_t q2[QK_K];
        float err2 = 0.0f;
        for (int ib = 0; ib < 8; ib++)
            err2 +=
                pick_code(x + 32 * ib, ws[ib], d2, dd * (float)code[ib], &code2[ib], q2 + 32 * ib);
        if (err2 < err) {
            dd = d2;
            memcpy(code, code2, sizeof(code2));
            memcpy(q, q2, QK_K);
        }
    }
    *d = dd;
}

void iq4_xs_quantize_row_imatrix(const float *x, void *vy, int64_t n, const float *w) {
    CHECK(n % QK_K == 0);
    struct block_iq4_xs *y = vy;
    for (int64_t ibl = 0; ibl < n / QK_K; ibl++) {
        float d;
        int code[8];
        uint8_t q[QK_K];
        iq4_xs_fit(x + ibl * QK_K, w ? w + ibl * QK_K : NULL, &d, code, q);
        y[ibl].d = fp32_to_fp16(d);
        y[ibl].scales_h = 0;
        memset(y[ibl].scales_l, 0, sizeof(y[ibl].scales_l));
        for (int ib = 0; ib < 8; ib++) {
            int ls = code[ib] + 32;
            y[ibl].scales_l[ib / 2] |= (uint8_t)((ls & 0x0f) << (4 * (ib % 2)));
            y[ibl].scales_h |= (uint16_t)((ls >> 4) << (2 * ib));
            for (int j = 0; j < 16; j++)
                y[ibl].qs[16 * ib + j] = (uint8_t)(q[32 * ib + j] | q[32 * ib + j + 16] << 4);
        }
    }
}

void iq4_xs_quantize_row_ref(const float *x, void *y, int64_t n) {
    iq4_xs_quantize_row_imatrix(x, y, n, NULL);
}

float iq4_xs_dot_q8_k_ref(const void *vx, const void *vy, int64_t n) {
    CHECK(n % QK_K == 0);
    const struct block_iq4_xs *x = vx;
    const struct block_q8_k *y = vy;
    float sum = 0.0f;
    for (int64_t ibl = 0; ibl < n / QK_K; ibl++) {
        int32_t isum = 0;
        for (int ib = 0; ib < QK_K / 32; ib++) {
            const uint8_t *qs = x[ibl].qs + 16 * ib;
            const int8_t *a = y[ibl].qs + 32 * ib;
            int32_t sub = 0;
            for (int j = 0; j < 16; j++) {
                sub += kvalues_iq4nl[qs[j] & 0x0f] * a[j];
                sub += kvalues_iq4nl[qs[j] >> 4] * a[j + 16];
            }
            isum += iq4_xs_scale(&x[ibl], ib) * sub;
        }
        sum += fp16_to_fp32(x[ibl].d) * y[ibl].d * (float)isum;
    }
    return sum;
}
