/* test_quant.c: tensor/dtype.c and the reference formats in tensor/quant_*.c.
 *
 * Dequantizers are checked bit-exactly against the test vectors of quant-formats.md §9 (made
 * with ggml's own dequantize_row_*); fp16/bf16 conversions exhaustively; quantizers by their
 * error on gaussian data; dots against double-precision sums; and, with ../shared present,
 * llama-quantize's output in the synthetic GGUFs against their F32 twins.
 */
#include "test.h"

#include "../src/base/mem.h"
#include "../src/tensor/dtype.h"
#include "../src/tensor/quant.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

/* ======================================================================================
 * §9 test vectors
 * ====================================================================================== */

struct vector_case {
    enum dtype type;
    int d_offsets[2];    /* fp16 d fields (:= 0x2C00), -1 = none */
    int dmin_offsets[2]; /* fp16 dmin / m fields (:= 0x2800), -1 = none */
    double first[8], last[4], sum, wsum;
};

static const struct vector_case g_vectors[] = {
    {DTYPE_Q4_0,
     {0, -1},
     {-1, -1},
     {0.1875, -0.25, 0.3125, -0.125, 0.4375, 0, -0.4375, 0.125},
     {-0.375, -0.0625, 0.1875, -0.5},
     -2.0625,
     -49.9375},
    {DTYPE_Q4_1,
     {0, -1},
     {2, -1},
     {0.84375, 0.40625, 0.96875, 0.53125, 0.09375, 0.65625, 0.21875, 0.78125},
     {0.71875, 0.03125, 0.28125, 0.59375},
     15.0625,
     233.125},
    {DTYPE_Q5_0,
     {0, -1},
     {-1, -1},
     {0.9375, 0.5, -0.9375, 0.625, 0.1875, 0.75, -0.6875, 0.875},
     {0.25, -0.4375, -0.1875, 0.125},
     -2.8125,
     -74.0625},
    {DTYPE_Q5_1,
     {0, -1},
     {2, -1},
     {1.09375, 0.65625, 1.21875, 1.78125, 0.34375, 0.90625, 1.46875, 0.03125},
     {0.84375, 1.15625, 0.40625, 0.71875},
     32.3125,
     519.5},
    {DTYPE_Q8_0,
     {0, -1},
     {-1, -1},
     {-4.3125, 0.25, 4.8125, -6.625, -2.0625, 2.5, 7.0625, -4.375},
     {-4.5625, 0, 4.5625, -6.875},
     -3,
     -43},
    {DTYPE_Q2_K,
     {80, -1},
     {82, -1},
     {0.5, 1.0625, 1.625, -0.0625, 0.5, 1.0625, 1.625, -0.0625},
     {-0.21875, -0.21875, -0.21875, -0.21875},
     127.6875,
     15686.875},
    {DTYPE_Q3_K,
     {108, -1},
     {-1, -1},
     {-0.4375, 0.875, -1.3125, 1.75, -0.4375, 0.875, -1.3125, 1.75},
     {-1.5, -1, 1.5, -1.5},
     14.625,
     2171.625},
    {DTYPE_Q4_K,
     {0, -1},
     {2, -1},
     {5.78125, 0.09375, 7.40625, 1.71875, 9.03125, 3.34375, 10.65625, 4.96875},
     {-0.71875, -0.71875, -0.71875, -0.71875},
     3334.5,
     460585.5},
    {DTYPE_Q5_K,
     {0, -1},
     {2, -1},
     {18.78125, 0.09375, 20.40625, 1.71875, 22.03125, 3.34375, 23.65625, 4.96875},
     {-0.71875, -0.71875, -0.71875, -0.71875},
     6879.5,
     931531.5},
    {DTYPE_Q6_K,
     {208, -1},
     {-1, -1},
     {10.0625, -2.875, -38.8125, 40.25, 4.3125, -8.625, -44.5625, 34.5},
     {72, -60, -45, 18},
     -927.75,
     -101758},
    {DTYPE_Q8_K,
     {-1, -1},
     {-1, -1}, /* f32 d := 0.5, set below */
     {38.5, -53, -16.5, 20, 56.5, -35, 1.5, 38},
     {20.5, 57, -34.5, 2},
     -64,
     32960},
    {DTYPE_IQ4_NL,
     {0, -1},
     {-1, -1},
     {2.375, -3.0625, 4.3125, -1.375, 7.0625, 0.0625, -6.5, 1.5625},
     {-5.1875, -0.625, 2.375, -7.9375},
     -30.0625,
     -754.75},
    {DTYPE_IQ4_XS,
     {0, -1},
     {-1, -1},
     {-188.5, 45.3125, -117.8125, 96.0625, -63.4375, 161.3125, -18.125, -230.1875},
     {-99.375, 195, 65.625, -46.875},
     -403.125,
     55190.6875},
    {DTYPE_MXFP4,
     {-1, -1},
     {-1, -1}, /* e := 127, set below */
     {1, -1.5, 2, -3, 4, -6, 0, 0.5},
     {-3, 1, 6, -1.5},
     12.5,
     313},
};

static void put_u16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)(v & 0xff);
    p[1] = (uint8_t)(v >> 8);
}

TEST(quant_test_vectors) {
    for (size_t c = 0; c < sizeof(g_vectors) / sizeof(g_vectors[0]); c++) {
        const struct vector_case *vc = &g_vectors[c];
        const struct dtype_traits *tr = dtype_traits(vc->type);
        ASSERT(tr != NULL && tr->to_float != NULL);
        /* The largest block is 292 bytes; 4-byte aligned for Q8_K's f32 d. */
        _Alignas(8) uint8_t block[512];
        float y[QK_K];
        int n_bytes = (int)tr->type_size, n = (int)tr->block_size;
        for (int k = 0; k < n_bytes; k++) block[k] = (uint8_t)((73 * k + 41) % 256);
        for (int i = 0; i < 2; i++) {
            if (vc->d_offsets[i] >= 0) put_u16(block + vc->d_offsets[i], 0x2C00);
            if (vc->dmin_offsets[i] >= 0) put_u16(block + vc->dmin_offsets[i], 0x2800);
        }
        if (vc->type == DTYPE_Q8_K) {
            float half = 0.5f;
            memcpy(block, &half, sizeof(half));
        }
        if (vc->type == DTYPE_MXFP4) block[0] = 127;
        tr->to_float(block, y, n);
        double sum = 0.0, wsum = 0.0;
        for (int i = 0; i < n; i++) {
            sum += y[i];
            wsum += (double)(i + 1) * y[i];
        }
        for (int i = 0; i < 8; i++)
            EXPECT_MSG(y[i] == vc->first[i], "%s y[%d] = %.9g, want %.9g", tr->name, i, y[i],
                       vc->first[i]);
        for (int i = 0; i < 4; i++)
            EXPECT_MSG(y[n - 4 + i] == vc->last[i], "%s y[%d] = %.9g, want %.9g", tr->name,
                       n - 4 + i, y[n - 4 + i], vc->last[i]);
        EXPECT_MSG(sum == vc->sum, "%s sum %.9g, want %.9g", tr->name, sum, vc->sum);
        EXPECT_MSG(wsum == vc->wsum, "%s weighted sum %.9g, want %.9g", tr->name, wsum, vc->wsum);
    }
}

/* ======================================================================================
 * fp16 / bf16
 * ====================================================================================== */

static uint32_t bits_of(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof(u));
    return u;
}

static float float_of(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof(f));
    return f;
}

/* The exact value of a finite half, computed independently in double. */
static double half_value(uint16_t h) {
    int e = (h >> 10) & 0x1f, m = h & 0x3ff;
    double v = e ? ldexp(1024 + m, e - 25) : ldexp(m, -24);
    return (h & 0x8000) ? -v : v;
}

TEST(quant_fp16_exhaustive_round_trip) {
    for (uint32_t h = 0; h < 65536; h++) {
        float f = fp16_to_fp32((uint16_t)h);
        int is_special = ((h >> 10) & 0x1f) == 0x1f;
        if (is_special && (h & 0x3ff)) { /* NaN: stays NaN, comes back quiet, sign kept */
            EXPECT_MSG(isnan(f), "h=%04x", h);
            EXPECT_EQ_INT(fp32_to_fp16(f), h | 0x200);
            continue;
        }
        if (is_special)
            EXPECT_MSG(isinf(f) && (f < 0) == ((h & 0x8000) != 0), "h=%04x", h);
        else
            EXPECT_MSG((double)f == half_value((uint16_t)h), "h=%04x: %.9g", h, f);
        EXPECT_MSG(fp32_to_fp16(f) == h, "h=%04x -> %.9g -> %04x", h, f, fp32_to_fp16(f));
        if (test_failed() > 10) return;
    }
}

TEST(quant_fp16_rounding) {
    struct {
        float f;
        uint16_t h;
    } cases[] = {
        {0.0f, 0x0000},
        {-0.0f, 0x8000},
        {1.0f, 0x3c00},
        {-2.0f, 0xc000},
        {65504.0f, 0x7bff},
        {65519.99f, 0x7bff}, /* just below the halfway point to 2^16 */
        {65520.0f, 0x7c00},  /* the tie rounds to even = inf */
        {1e6f, 0x7c00},
        {-1e6f, 0xfc00},
        {INFINITY, 0x7c00},
        {-INFINITY, 0xfc00},
        {0x1p-14f, 0x0400},                   /* smallest normal */
        {0x1p-24f, 0x0001},                   /* smallest subnormal */
        {0x1p-25f, 0x0000},                   /* tie between 0 and 2^-24: even = 0 */
        {0x1.000002p-25f, 0x0001},            /* just above the tie */
        {0x1.8p-24f, 0x0002},                 /* 1.5 units: tie, even = 2 */
        {0x1.4p-23f, 0x0002},                 /* 2.5 units: tie, even = 2 */
        {0x1p-14f - 0x1p-25f, 0x0400},        /* largest subnormal + half: rounds up to normal */
        {1.0f + 0x1p-11f, 0x3c00},            /* tie, even mantissa kept */
        {1.0f + 0x1.8p-10f, 0x3c02},          /* tie, rounds up to even */
        {1.0f + 0x1p-11f + 0x1p-23f, 0x3c01}, /* above the tie */
        {1e-10f, 0x0000},
        {-1e-10f, 0x8000},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        EXPECT_MSG(fp32_to_fp16(cases[i].f) == cases[i].h, "%a -> %04x, want %04x", cases[i].f,
                   fp32_to_fp16(cases[i].f), cases[i].h);
    uint16_t nan = fp32_to_fp16(NAN);
    EXPECT((nan & 0x7c00) == 0x7c00 && (nan & 0x3ff) != 0);
    EXPECT(fp32_to_fp16(float_of(0x7f800001)) != 0x7c00); /* signalling NaN stays a NaN */

    /* Random floats around the half range: the result is the nearest half (ties to even). */
    uint32_t state = 0x12345678;
    for (int i = 0; i < 200000; i++) {
        state = state * 1664525u + 1013904223u;
        uint32_t u = (state & 0x807fffff) | (uint32_t)(100 + (state >> 8) % 45) << 23;
        float f = float_of(u);
        uint16_t h = fp32_to_fp16(f);
        if (((h >> 10) & 0x1f) == 0x1f) {
            EXPECT_MSG(fabsf(f) >= 65520.0f, "%a overflowed", f);
            continue;
        }
        double err = fabs((double)f - half_value(h));
        for (int dlt = -1; dlt <= 1; dlt += 2) {
            uint16_t g = (uint16_t)(h + dlt);
            if ((g & 0x8000) != (h & 0x8000) || ((g >> 10) & 0x1f) == 0x1f) continue;
            double eg = fabs((double)f - half_value(g));
            EXPECT_MSG(err < eg || (err == eg && (h & 1) == 0), "%a -> %04x, %04x is closer", f, h,
                       g);
        }
        if (test_failed() > 10) return;
    }
}

TEST(quant_bf16_conversions) {
    for (uint32_t h = 0; h < 65536; h++) {
        float f = bf16_to_fp32((uint16_t)h);
        EXPECT_EQ_INT(bits_of(f), h << 16);
        if (isnan(f))
            EXPECT_EQ_INT(fp32_to_bf16(f), h | 0x40);
        else
            EXPECT_EQ_INT(fp32_to_bf16(f), h);
        if (test_failed() > 10) return;
    }
    EXPECT_EQ_INT(fp32_to_bf16(1.0f), 0x3f80);
    EXPECT_EQ_INT(fp32_to_bf16(1.0f + 0x1p-8f), 0x3f80); /* tie, even kept */
    EXPECT_EQ_INT(fp32_to_bf16(1.0f + 0x3p-8f), 0x3f82); /* tie, rounds up to even */
    EXPECT_EQ_INT(fp32_to_bf16(1.0f + 0x1p-8f + 0x1p-20f), 0x3f81);
    EXPECT_EQ_INT(fp32_to_bf16(-1.0f - 0x1p-7f + 0x1p-20f), 0xbf81);
    EXPECT_EQ_INT(fp32_to_bf16(float_of(0x7f7fffff)), 0x7f80); /* FLT_MAX rounds to inf */
    EXPECT_EQ_INT(fp32_to_bf16(INFINITY), 0x7f80);
    EXPECT_EQ_INT(fp32_to_bf16(float_of(0x7f800001)), 0x7fc0); /* signalling NaN -> quiet */
    EXPECT_EQ_INT(fp32_to_bf16(float_of(0xffc00000)), 0xffc0);
    EXPECT_EQ_INT(fp32_to_bf16(float_of(0x00000001)), 0x0000); /* tiny subnormal -> 0 */
}
