/* dtype.h: tensor element types hearth computes with, and their reference (scalar) traits.
 *
 * The enum values are ggml's type ids, so a GGUF tensor's `type` field is a dtype. The table
 * gives for each supported type: block geometry, the activation type its dot product uses
 * (as llama.cpp's CPU backend: Q8_0 for Q4_0/Q5_0/Q8_0/IQ4_NL/MXFP4, Q8_1 for Q4_1/Q5_1,
 * Q8_K for the K-quants and IQ4_XS, F16/BF16/F32 for themselves) and the reference functions
 * from tensor/quant_*.c. These reference functions are the spec: plain C, readable, slow. Fast
 * kernels live in backend/cpu and are tested against them.
 */
#ifndef HEARTH_DTYPE_H
#define HEARTH_DTYPE_H

#include <stddef.h>
#include <stdint.h>

enum dtype {
    DTYPE_F32 = 0,
    DTYPE_F16 = 1,
    DTYPE_Q4_0 = 2,
    DTYPE_Q4_1 = 3,
    DTYPE_Q5_0 = 6,
    DTYPE_Q5_1 = 7,
    DTYPE_Q8_0 = 8,
    DTYPE_Q8_1 = 9,
    DTYPE_Q2_K = 10,
    DTYPE_Q3_K = 11,
    DTYPE_Q4_K = 12,
    DTYPE_Q5_K = 13,
    DTYPE_Q6_K = 14,
    DTYPE_Q8_K = 15,
    DTYPE_IQ4_NL = 20,
    DTYPE_IQ4_XS = 23,
    DTYPE_BF16 = 30,
    DTYPE_MXFP4 = 39,
    DTYPE_COUNT = 42, /* one past the largest ggml id we know the size of */
};

#define QK_K 256

/* y[0..n) = dequantized x; n is a multiple of block_size. */
typedef void (*dtype_to_float_fn)(const void *x, float *y, int64_t n);
/* y = quantized x[0..n); n is a multiple of block_size. Reference quantizer. */
typedef void (*dtype_from_float_fn)(const float *x, void *y, int64_t n);
/* Same as dtype_from_float_fn, but the search minimises sum_i w[i] (x[i] - x'[i])^2 (x' = the
 * dequantized result); w has n entries (one row: pass the importance matrix row), NULL = ones. */
typedef void (*dtype_from_float_imatrix_fn)(const float *x, void *y, int64_t n, const float *w);
/* Dot product of n elements: x in this dtype, y in its vec_dot_type. */
typedef float (*dtype_vec_dot_fn)(const void *x, const void *y, int64_t n);

struct dtype_traits {
    const char *name;               /* "Q4_K" */
    int64_t block_size;             /* elements per block */
    int64_t type_size;              /* bytes per block */
    int is_quantized;               /* 1 for block formats (Q*, IQ*, MXFP4); 0 for F32, F16, BF16 */
    enum dtype vec_dot_type;        /* activation format for dot products */
    dtype_to_float_fn to_float;     /* NULL if unsupported */
    dtype_from_float_fn from_float; /* reference quantizer; NULL if none */
    dtype_vec_dot_fn vec_dot;       /* reference dot with vec_dot_type; NULL if none */
    dtype_from_float_imatrix_fn from_float_imatrix; /* weighted quantizer; NULL if none */
};

/* Traits of a supported dtype, or NULL if hearth does not compute with this type id. */
const struct dtype_traits *dtype_traits(uint32_t type);
const char *dtype_name(uint32_t type); /* also names unsupported ids, "?" if unknown */
/* Bytes of a row of n elements (n must be a multiple of the block size; CHECKed). */
size_t dtype_row_bytes(enum dtype type, int64_t n);
/* Parses "Q4_K", "q8_0", "f16"... (case-insensitive, supported types only); returns 0 and
 * sets *out, or -1. */
int dtype_from_name(const char *name, enum dtype *out);

/* Scalar conversions (IEEE binary16 with subnormals/inf/NaN; bf16 round-to-nearest-even). */
float fp16_to_fp32(uint16_t h);
uint16_t fp32_to_fp16(float f);
float bf16_to_fp32(uint16_t h);
uint16_t fp32_to_bf16(float f);

#endif
