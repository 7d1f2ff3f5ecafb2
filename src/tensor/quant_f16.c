/* quant_f16.c: the plain float formats F32, F16 and BF16 (quant.h).
 *
 * All three dots share one fixed 16-lane order (see f32_dot_f32_ref): the order of llama.cpp's
 * x86 matrix products for these types (tinyBLAS in llamafile_sgemm: one 16-lane FMA accumulator
 * per output, then a horizontal sum), and what a 512-bit vector unit computes. A product of two
 * f16 or two bf16 values is exact in f32, so each FMA rounds once.
 */
#include "quant.h"

#include <math.h>
#include <string.h>

/* ---- F32 ---- */

void f32_dequantize_row_ref(const void *x, float *y, int64_t n) {
    memcpy(y, x, (size_t)n * sizeof(float));
}

void f32_quantize_row_ref(const float *x, void *y, int64_t n) {
    memcpy(y, x, (size_t)n * sizeof(float));
}

/* The f32 dot uses a fixed 16-lane order: lane l accumulates products i = l (mod 16) with
 * fused multiply-adds, then the lanes are added pairwise (8+8, 4+4, 2+2, 1+1). That is what a
 * 512-bit vector unit computes, so the AVX-512 kernel is bit-identical to this reference, and
 * it agrees with llama.cpp's f32 GEMM on x86 far better than a sequential sum. A tail shorter
 * than 16 is added in double. */
float f32_dot_f32_ref(const void *vx, const void *vy, int64_t n) {
    const float *x = vx, *y = vy;
    float lane[16] = {0};
    int64_t n16 = n & ~(int64_t)15;
    for (int64_t i = 0; i < n16; i += 16)
        for (int l = 0; l < 16; l++) lane[l] = fmaf(x[i + l], y[i + l], lane[l]);
    for (int l = 0; l < 8; l++) lane[l] += lane[l + 8];
    for (int l = 0; l < 4; l++) lane[l] += lane[l + 4];
    double sum = (double)((lane[0] + lane[2]) + (lane[1] + lane[3]));
    for (int64_t i = n16; i < n; i++) sum += (double)(x[i] * y[i]);
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
    float lane[16] = {0};
    int64_t n16 = n & ~(int64_t)15;
    for (int64_t i = 0; i < n16; i += 16)
        for (int l = 0; l < 16; l++)
            lane[l] = fmaf(fp16_to_fp32(x[i + l]), fp16_to_fp32(y[i + l]), lane[l]);
    for (int l = 0; l < 8; l++) lane[l] += lane[l + 8];
    for (int l = 0; l < 4; l++) lane[l] += lane[l + 4];
    double sum = (double)((lane[0] + lane[2]) + (lane[1] + lane[3]));
    for (int64_t i = n16; i < n; i++) sum += (double)(fp16_to_fp32(x[i]) * fp16_to_fp32(y[i]));
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
    float lane[16] = {0};
    int64_t n16 = n & ~(int64_t)15;
    for (int64_t i = 0; i < n16; i += 16)
        for (int l = 0; l < 16; l++)
            lane[l] = fmaf(bf16_to_fp32(x[i + l]), bf16_to_fp32(y[i + l]), lane[l]);
    for (int l = 0; l < 8; l++) lane[l] += lane[l + 8];
    for (int l = 0; l < 4; l++) lane[l] += lane[l + 4];
    double sum = (double)((lane[0] + lane[2]) + (lane[1] + lane[3]));
    for (int64_t i = n16; i < n; i++) sum += (double)(bf16_to_fp32(x[i]) * bf16_to_fp32(y[i]));
    return (float)sum;
}
