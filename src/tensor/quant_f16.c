/* quant_f16.c: the plain float formats F32, F16 and BF16 (quant.h).
 *
 * Dots accumulate products in double, like ggml's ggml_vec_dot_f32/f16/bf16 (ggml_float sums);
 * each product is formed in f32 first, as there.
 */
#include "quant.h"

#include <string.h>

/* ---- F32 ---- */

void f32_dequantize_row_ref(const void *x, float *y, int64_t n) {
    memcpy(y, x, (size_t)n * sizeof(float));
}

void f32_quantize_row_ref(const float *x, void *y, int64_t n) {
    memcpy(y, x, (size_t)n * sizeof(float));
}

float f32_dot_f32_ref(const void *vx, const void *vy, int64_t n) {
    const float *x = vx, *y = vy;
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) sum += (double)(x[i] * y[i]);
    return (float)sum;
}

/* ---- F16 ---- */

void f16_dequantize_row_ref(const void *vx, float *y, int64_t n) {
    const uint16_t *x = vx;
    for (int64_t i = 0; i < n; i++) y[i] = fp16_to_fp32(x[i]);
}

void f16_quantize_row_ref(const float *x, void *vy, int64_t n) {
    uint16_t *y = vy;
    for (int64_t i = 0; i < n; i++) y[i] = fp32_to_fp16(x[i]);
}

float f16_dot_f16_ref(const void *vx, const void *vy, int64_t n) {
    const uint16_t *x = vx, *y = vy;
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) sum += (double)(fp16_to_fp32(x[i]) * fp16_to_fp32(y[i]));
    return (float)sum;
}

/* ---- BF16 ---- */

void bf16_dequantize_row_ref(const void *vx, float *y, int64_t n) {
    const uint16_t *x = vx;
    for (int64_t i = 0; i < n; i++) y[i] = bf16_to_fp32(x[i]);
}

void bf16_quantize_row_ref(const float *x, void *vy, int64_t n) {
    uint16_t *y = vy;
    for (int64_t i = 0; i < n; i++) y[i] = fp32_to_bf16(x[i]);
}

float bf16_dot_bf16_ref(const void *vx, const void *vy, int64_t n) {
    const uint16_t *x = vx, *y = vy;
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) sum += (double)(bf16_to_fp32(x[i]) * bf16_to_fp32(y[i]));
    return (float)sum;
}
