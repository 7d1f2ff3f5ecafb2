/* test_quant.c: tensor/dtype.c and the reference formats in tensor/quant_*.c.
 *
 * Dequantizers are checked bit-exactly against the test vectors of quant-formats.md §9 (made
 * with ggml's own dequantize_row_*); fp16/bf16 conversions exhaustively; quantizers by their
 * error on gaussian data; dots against double-precision sums; and, with ../shared present,
 * llama-quantize's output in the synthetic GGUFs against their F32 twins.
 */
#include "test.h"

#include "../src/base/mem.h"
#include "../src/gguf/gguf.h"
#include "../src/tensor/dtype.h"
#include "../src/tensor/quant.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
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

/* ======================================================================================
 * The table
 * ====================================================================================== */

TEST(quant_dtype_table) {
    static const struct {
        enum dtype type;
        const char *name;
        int64_t block_size, type_size;
        int is_quantized;
        enum dtype vec_dot_type; /* quant-formats.md §6 */
    } want[] = {
        {DTYPE_F32, "F32", 1, 4, 0, DTYPE_F32},
        {DTYPE_F16, "F16", 1, 2, 0, DTYPE_F16},
        {DTYPE_BF16, "BF16", 1, 2, 0, DTYPE_BF16},
        {DTYPE_Q4_0, "Q4_0", 32, 18, 1, DTYPE_Q8_0},
        {DTYPE_Q4_1, "Q4_1", 32, 20, 1, DTYPE_Q8_1},
        {DTYPE_Q5_0, "Q5_0", 32, 22, 1, DTYPE_Q8_0},
        {DTYPE_Q5_1, "Q5_1", 32, 24, 1, DTYPE_Q8_1},
        {DTYPE_Q8_0, "Q8_0", 32, 34, 1, DTYPE_Q8_0},
        {DTYPE_Q8_1, "Q8_1", 32, 36, 1, DTYPE_Q8_1},
        {DTYPE_Q2_K, "Q2_K", 256, 84, 1, DTYPE_Q8_K},
        {DTYPE_Q3_K, "Q3_K", 256, 110, 1, DTYPE_Q8_K},
        {DTYPE_Q4_K, "Q4_K", 256, 144, 1, DTYPE_Q8_K},
        {DTYPE_Q5_K, "Q5_K", 256, 176, 1, DTYPE_Q8_K},
        {DTYPE_Q6_K, "Q6_K", 256, 210, 1, DTYPE_Q8_K},
        {DTYPE_Q8_K, "Q8_K", 256, 292, 1, DTYPE_Q8_K},
        {DTYPE_IQ4_NL, "IQ4_NL", 32, 18, 1, DTYPE_Q8_0},
        {DTYPE_IQ4_XS, "IQ4_XS", 256, 136, 1, DTYPE_Q8_K},
        {DTYPE_MXFP4, "MXFP4", 32, 17, 1, DTYPE_Q8_0},
    };
    int n_supported = 0;
    for (uint32_t t = 0; t < 64; t++) n_supported += dtype_traits(t) != NULL;
    EXPECT_EQ_INT(n_supported, (int)(sizeof(want) / sizeof(want[0])));
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        const struct dtype_traits *tr = dtype_traits(want[i].type);
        ASSERT(tr != NULL);
        EXPECT(strcmp(tr->name, want[i].name) == 0);
        EXPECT(strcmp(dtype_name(want[i].type), want[i].name) == 0);
        EXPECT_EQ_INT(tr->block_size, want[i].block_size);
        EXPECT_EQ_INT(tr->type_size, want[i].type_size);
        EXPECT_EQ_INT(tr->is_quantized, want[i].is_quantized);
        EXPECT_EQ_INT(tr->vec_dot_type, want[i].vec_dot_type);
        EXPECT(tr->to_float != NULL && tr->from_float != NULL);
        EXPECT((tr->vec_dot != NULL) == (want[i].type != DTYPE_Q8_1));
        const struct dtype_traits *act = dtype_traits(tr->vec_dot_type);
        EXPECT(act != NULL && act->from_float != NULL && act->block_size == tr->block_size);
        /* the GGUF layer's geometry table agrees */
        int64_t be = 0, bb = 0;
        EXPECT(gguf_type_block(want[i].type, &be, &bb) == 0);
        EXPECT_EQ_INT(be, tr->block_size);
        EXPECT_EQ_INT(bb, tr->type_size);
        enum dtype parsed;
        EXPECT(dtype_from_name(want[i].name, &parsed) == 0 && parsed == want[i].type);
    }
    /* weighted quantizers exist for every weight format with a scale to search */
    enum dtype with_imatrix[] = {DTYPE_Q4_0, DTYPE_Q4_1,   DTYPE_Q5_0,  DTYPE_Q5_1,
                                 DTYPE_Q2_K, DTYPE_Q3_K,   DTYPE_Q4_K,  DTYPE_Q5_K,
                                 DTYPE_Q6_K, DTYPE_IQ4_NL, DTYPE_IQ4_XS};
    for (size_t i = 0; i < sizeof(with_imatrix) / sizeof(with_imatrix[0]); i++)
        EXPECT(dtype_traits(with_imatrix[i])->from_float_imatrix != NULL);

    /* unsupported / unknown ids */
    EXPECT(dtype_traits(4) == NULL && dtype_traits(16) == NULL && dtype_traits(24) == NULL);
    EXPECT(dtype_traits(DTYPE_COUNT) == NULL && dtype_traits(UINT32_MAX) == NULL);
    EXPECT(strcmp(dtype_name(16), "IQ2_XXS") == 0);
    EXPECT(strcmp(dtype_name(35), "TQ2_0") == 0);
    EXPECT(strcmp(dtype_name(24), "I8") == 0);
    EXPECT(strcmp(dtype_name(1000), "?") == 0);

    enum dtype t = DTYPE_F32;
    EXPECT(dtype_from_name("q4_k", &t) == 0 && t == DTYPE_Q4_K);
    EXPECT(dtype_from_name("Bf16", &t) == 0 && t == DTYPE_BF16);
    EXPECT(dtype_from_name("iq4_xs", &t) == 0 && t == DTYPE_IQ4_XS);
    EXPECT(dtype_from_name("mxfp4", &t) == 0 && t == DTYPE_MXFP4);
    EXPECT(dtype_from_name("Q4_K_M", &t) == -1);
    EXPECT(dtype_from_name("Q4_", &t) == -1);
    EXPECT(dtype_from_name("", &t) == -1);
    EXPECT(dtype_from_name("IQ2_XXS", &t) == -1); /* named, but not computable */
    EXPECT(dtype_from_name(NULL, &t) == -1);

    EXPECT_EQ_INT(dtype_row_bytes(DTYPE_Q4_K, 512), 288);
    EXPECT_EQ_INT(dtype_row_bytes(DTYPE_F16, 3), 6);
    EXPECT_EQ_INT(dtype_row_bytes(DTYPE_Q8_0, 0), 0);
    EXPECT_EQ_INT(dtype_row_bytes(DTYPE_MXFP4, 64), 34);
}

TEST(quant_scale_packing) {
    uint32_t state = 99;
    for (int it = 0; it < 200; it++) {
        uint8_t sc[8], m[8], b[12], codes[16], b3[12];
        for (int s = 0; s < 8; s++) {
            state = state * 1664525u + 1013904223u;
            sc[s] = (uint8_t)((state >> 8) & 63);
            m[s] = (uint8_t)((state >> 16) & 63);
        }
        k_quant_pack_scale_min(sc, m, b);
        for (int s = 0; s < 8; s++) {
            uint8_t sc2, m2;
            k_quant_get_scale_min(b, s, &sc2, &m2);
            EXPECT(sc2 == sc[s] && m2 == m[s]);
        }
        for (int j = 0; j < 16; j++) {
            state = state * 1664525u + 1013904223u;
            codes[j] = (uint8_t)((state >> 10) & 63);
        }
        q3_k_pack_scales(codes, b3);
        for (int j = 0; j < 16; j++) EXPECT_EQ_INT(q3_k_get_scale(b3, j), codes[j] - 32);
    }
    EXPECT(mxfp4_e8m0_to_fp32_half(0) == 0x1p-128f);
    EXPECT(mxfp4_e8m0_to_fp32_half(1) == 0x1p-127f);
    EXPECT(mxfp4_e8m0_to_fp32_half(127) == 0.5f);
    EXPECT(mxfp4_e8m0_to_fp32_half(254) == 0x1p126f);
    for (int i = -200; i <= 200; i++) /* nearest level, by brute force */
    {
        float v = (float)i * 0.7f;
        int k = quant_iq4_nearest(v), best = 0;
        for (int j = 1; j < 16; j++)
            if (fabsf(v - kvalues_iq4nl[j]) < fabsf(v - kvalues_iq4nl[best])) best = j;
        EXPECT_MSG(fabsf(v - kvalues_iq4nl[k]) == fabsf(v - kvalues_iq4nl[best]), "v=%g", v);
    }
}

/* ======================================================================================
 * Activation quantizers: bit-exact rules of ggml's reference
 * ====================================================================================== */

TEST(quant_activation_quantizers_exact) {
    /* Q8_0 / Q8_1: d = amax/127 = 1, roundf = half away from zero. */
    float x[QK_K * 3];
    memset(x, 0, sizeof(x));
    x[0] = 127.0f, x[1] = 0.5f, x[2] = -0.5f, x[3] = 2.5f, x[4] = -126.5f, x[5] = 3.49f;
    struct block_q8_0 b0;
    q8_0_quantize_row_ref(x, &b0, QK8_0);
    EXPECT_EQ_INT(b0.d, 0x3c00);
    int want0[6] = {127, 1, -1, 3, -127, 3};
    for (int j = 0; j < 6; j++) EXPECT_EQ_INT(b0.qs[j], want0[j]);
    struct block_q8_1 b1;
    q8_1_quantize_row_ref(x, &b1, QK8_1);
    EXPECT_EQ_INT(b1.d, 0x3c00);
    EXPECT(fp16_to_fp32(b1.s) == 127 + 1 - 1 + 3 - 127 + 3);
    for (int j = 0; j < 6; j++) EXPECT_EQ_INT(b1.qs[j], want0[j]);
    /* d is stored rounded to fp16 but 1/d uses the f32 amax/127 */
    float y[QK8_0];
    for (int j = 0; j < QK8_0; j++) y[j] = (float)j * 0.0123f - 0.2f;
    q8_0_quantize_row_ref(y, &b0, QK8_0);
    float d = 0.2f / 127.0f;
    EXPECT_EQ_INT(b0.d, fp32_to_fp16(d));
    for (int j = 0; j < QK8_0; j++) EXPECT_EQ_INT(b0.qs[j], (int)roundf(y[j] * (1.0f / d)));

    /* Q8_K: largest magnitude -127 (negative) -> iscale = 1, ties to even. */
    x[0] = -127.0f, x[1] = 0.5f, x[2] = 1.5f, x[3] = 2.5f, x[4] = -0.5f, x[5] = -3.5f;
    for (int j = 16; j < 32; j++) x[j] = 1.0f;
    /* second block all zero; third: largest magnitude +127 -> d = -1 */
    x[2 * QK_K] = 127.0f, x[2 * QK_K + 1] = 1.0f, x[2 * QK_K + 2] = -126.9f;
    struct block_q8_k bk[3];
    q8_k_quantize_row_ref(x, bk, 3 * QK_K);
    EXPECT(bk[0].d == 1.0f);
    int wantk[6] = {-127, 0, 2, 2, 0, -4};
    for (int j = 0; j < 6; j++) EXPECT_EQ_INT(bk[0].qs[j], wantk[j]);
    EXPECT_EQ_INT(bk[0].bsums[0], -127 + 0 + 2 + 2 + 0 - 4);
    EXPECT_EQ_INT(bk[0].bsums[1], 16);
    EXPECT_EQ_INT(bk[0].bsums[2], 0);
    EXPECT(bk[1].d == 0.0f);
    for (int j = 0; j < QK_K; j++) EXPECT_EQ_INT(bk[1].qs[j], 0);
    EXPECT(bk[2].d == -1.0f);
    EXPECT_EQ_INT(bk[2].qs[0], -127);
    EXPECT_EQ_INT(bk[2].qs[1], -1);
    EXPECT_EQ_INT(bk[2].qs[2], 127);
    EXPECT_EQ_INT(bk[2].bsums[0], -1);
}

/* ======================================================================================
 * Quantizer error on random data
 * ====================================================================================== */

static uint64_t g_rng = 1;

static double rng_uniform(void) { /* xorshift64, (0, 1) */
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return ((double)(g_rng >> 11) + 0.5) / 9007199254740992.0;
}

static float rng_gauss(void) {
    return (float)(sqrt(-2.0 * log(rng_uniform())) * cos(6.283185307179586 * rng_uniform()));
}

static float *gauss_alloc(int64_t n, float sigma) {
    float *x = mem_alloc((size_t)n * sizeof(float));
    if (x)
        for (int64_t i = 0; i < n; i++) x[i] = sigma * rng_gauss();
    return x;
}

/* Expected relative RMSE (error / RMS of the data) on gaussian data, with ~8% headroom over
 * what the quantizers reach (llama-quantize reaches 0.53% Q8_0, 1.75% Q6_K, 7.09% Q4_K on the
 * same kind of data: see quant_synthetic_files). Index: dtype; 0 = not tested. */
struct error_bound {
    enum dtype type;
    double ref, imatrix; /* from_float, from_float_imatrix(w = NULL) */
};

static const struct error_bound g_bounds[] = {
    {DTYPE_F32, 1e-9, 0},         {DTYPE_F16, 0.0003, 0},       {DTYPE_BF16, 0.0025, 0},
    {DTYPE_Q8_0, 0.0058, 0},      {DTYPE_Q8_1, 0.0058, 0},      {DTYPE_Q8_K, 0.0076, 0},
    {DTYPE_Q4_0, 0.093, 0.088},   {DTYPE_Q4_1, 0.085, 0.075},   {DTYPE_Q5_0, 0.046, 0.0435},
    {DTYPE_Q5_1, 0.041, 0.0365},  {DTYPE_Q2_K, 0.283, 0.283},   {DTYPE_Q3_K, 0.155, 0.155},
    {DTYPE_Q4_K, 0.0755, 0.0755}, {DTYPE_Q5_K, 0.0375, 0.0375}, {DTYPE_Q6_K, 0.0186, 0.0186},
    {DTYPE_IQ4_NL, 0.079, 0.079}, {DTYPE_IQ4_XS, 0.080, 0.080}, {DTYPE_MXFP4, 0.121, 0},
};

static double rel_rmse(const float *x, const float *y, int64_t n) {
    double e = 0.0, r = 0.0;
    for (int64_t i = 0; i < n; i++) {
        e += ((double)x[i] - y[i]) * ((double)x[i] - y[i]);
        r += (double)x[i] * x[i];
    }
    return r > 0.0 ? sqrt(e / r) : sqrt(e);
}

TEST(quant_round_trip_error) {
    const int64_t n_rows = 6, n_per_row = 1024;
    const int64_t n = n_rows * n_per_row;
    const float sigmas[3] = {0.02f, 1.0f, 30.0f};
    float *y = mem_alloc((size_t)n * sizeof(float));
    void *q = mem_alloc((size_t)n * sizeof(float));
    ASSERT(y && q);
    g_rng = 7;
    for (size_t b = 0; b < sizeof(g_bounds) / sizeof(g_bounds[0]); b++) {
        const struct dtype_traits *tr = dtype_traits(g_bounds[b].type);
        for (int is = 0; is < 3; is++) {
            float *x = gauss_alloc(n, sigmas[is]);
            ASSERT(x);
            for (int variant = 0; variant < 2; variant++) {
                double bound = variant ? g_bounds[b].imatrix : g_bounds[b].ref;
                if (bound == 0) continue;
                for (int64_t r = 0; r < n_rows; r++) { /* row by row, as a tool would */
                    const float *xr = x + r * n_per_row;
                    char *qr = (char *)q + dtype_row_bytes(g_bounds[b].type, n_per_row) * (size_t)r;
                    if (variant)
                        tr->from_float_imatrix(xr, qr, n_per_row, NULL);
                    else
                        tr->from_float(xr, qr, n_per_row);
                }
                tr->to_float(q, y, n);
                double e = rel_rmse(x, y, n);
                EXPECT_MSG(e <= bound, "%s%s sigma %g: relative rmse %.5f > %.5f", tr->name,
                           variant ? " (imatrix)" : "", sigmas[is], e, bound);
            }
            mem_free(x);
        }
    }
    mem_free(y);
    mem_free(q);
}

static int all_finite(const float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(y[i])) return 0;
    return 1;
}

TEST(quant_edge_rows) {
    enum { N = 512 };
    float x[N], y[N];
    _Alignas(8) uint8_t q[N * 4];
    for (size_t b = 0; b < sizeof(g_bounds) / sizeof(g_bounds[0]); b++) {
        const struct dtype_traits *tr = dtype_traits(g_bounds[b].type);
        for (int variant = 0; variant < 2; variant++) {
            if (variant && !tr->from_float_imatrix) continue;
            const char *vn = variant ? " (imatrix)" : "";
#define QUANTIZE(src)                                                                              \
    (variant ? tr->from_float_imatrix(src, q, N, NULL) : tr->from_float(src, q, N))
            /* all zero: exactly zero back */
            memset(x, 0, sizeof(x));
            QUANTIZE(x);
            tr->to_float(q, y, N);
            for (int i = 0; i < N; i++) EXPECT_MSG(y[i] == 0.0f, "%s%s zero row", tr->name, vn);
            /* constant rows, either sign */
            for (int i = 0; i < N; i++) x[i] = i < N / 2 ? 0.37f : -1.3f;
            QUANTIZE(x);
            tr->to_float(q, y, N);
            /* MXFP4 levels are 2^k times {1, 1.5}: up to ~15% off for a single value */
            int is_fp4 = g_bounds[b].type == DTYPE_MXFP4;
            EXPECT_MSG(rel_rmse(x, y, N) <= (is_fp4 ? 0.16 : 0.005), "%s%s constant rows: %g",
                       tr->name, vn, rel_rmse(x, y, N));
            /* gaussian with outliers of 1000 sigma: finite, outliers kept within 2% (fp4 20%) */
            g_rng = 11;
            for (int i = 0; i < N; i++) x[i] = rng_gauss();
            x[5] = 1000.0f, x[300] = -700.0f;
            QUANTIZE(x);
            tr->to_float(q, y, N);
            EXPECT_MSG(all_finite(y, N), "%s%s outliers: non-finite output", tr->name, vn);
            float tol = is_fp4 ? 0.2f : 0.02f;
            EXPECT_MSG(fabsf(y[5] - x[5]) <= tol * 1000 && fabsf(y[300] - x[300]) <= tol * 700,
                       "%s%s outliers: %g %g", tr->name, vn, y[5], y[300]);
            /* magnitudes from 1e-7 to 1e4 in one row: finite */
            for (int i = 0; i < N; i++) x[i] = rng_gauss() * powf(10.0f, (float)(i % 12) - 7.0f);
            QUANTIZE(x);
            tr->to_float(q, y, N);
            EXPECT_MSG(all_finite(y, N), "%s%s wide range: non-finite output", tr->name, vn);
#undef QUANTIZE
        }
    }
}

/* With importance weights the weighted error must drop against the unweighted fit, and
 * all-zero weights must behave exactly like no weights. */
TEST(quant_imatrix_weights) {
    enum { N = 2048 };
    float *x = mem_alloc(N * sizeof(float)), *w = mem_alloc(N * sizeof(float));
    float *y = mem_alloc(N * sizeof(float)), *zero = mem_calloc(N, sizeof(float));
    uint8_t *q1 = mem_alloc(N * 4), *q2 = mem_alloc(N * 4);
    ASSERT(x && w && y && zero && q1 && q2);
    g_rng = 23;
    for (int i = 0; i < N; i++) {
        x[i] = rng_gauss();
        w[i] = expf(2.0f * rng_gauss()); /* log-normal: a few columns matter a lot */
    }
    for (uint32_t t = 0; t < DTYPE_COUNT; t++) {
        const struct dtype_traits *tr = dtype_traits(t);
        if (!tr || !tr->from_float_imatrix) continue;
        double e_plain = 0.0, e_weighted = 0.0;
        tr->from_float_imatrix(x, q1, N, NULL);
        tr->to_float(q1, y, N);
        for (int i = 0; i < N; i++) e_plain += w[i] * ((double)x[i] - y[i]) * ((double)x[i] - y[i]);
        tr->from_float_imatrix(x, q2, N, w);
        tr->to_float(q2, y, N);
        for (int i = 0; i < N; i++)
            e_weighted += w[i] * ((double)x[i] - y[i]) * ((double)x[i] - y[i]);
        EXPECT_MSG(e_weighted < 0.9 * e_plain, "%s: weighted error %g vs unweighted %g", tr->name,
                   e_weighted, e_plain);
        if (getenv("HEARTH_TEST_VERBOSE"))
            printf("    %-6s weighted error with / without the weights: %.3f\n", tr->name,
                   e_weighted / e_plain);
        tr->from_float_imatrix(x, q2, N, zero);
        EXPECT_MSG(memcmp(q1, q2, dtype_row_bytes(t, N)) == 0, "%s: zero weights differ", tr->name);
    }
    mem_free(x);
    mem_free(w);
    mem_free(y);
    mem_free(zero);
    mem_free(q1);
    mem_free(q2);
}

/* ======================================================================================
 * Dot products
 * ====================================================================================== */

/* Σ_blocks |m| |s - d Σq|: how far Q8_1's stored s (fp16 of d·Σq, d unrounded) is from what
 * the dequantized block sums to. The Q4_1/Q5_1 dots use s, so they may differ by this much
 * from the dequantized dot. Zero for the other formats. */
static double q8_1_s_slack(enum dtype type, const void *w, const void *a, int64_t n) {
    if (type != DTYPE_Q4_1 && type != DTYPE_Q5_1) return 0.0;
    const struct block_q8_1 *ab = a;
    double slack = 0.0;
    for (int64_t ib = 0; ib < n / 32; ib++) {
        uint16_t m_bits;
        memcpy(&m_bits, (const char *)w + ib * dtype_traits(type)->type_size + 2, 2);
        int sum = 0;
        for (int j = 0; j < 32; j++) sum += ab[ib].qs[j];
        double s_deq = (double)fp16_to_fp32(ab[ib].d) * sum;
        slack += fabs(fp16_to_fp32(m_bits)) * fabs(fp16_to_fp32(ab[ib].s) - s_deq);
    }
    return slack;
}

TEST(quant_vec_dot) {
    const int64_t sizes[3] = {256, 1024, 4096};
    float *xw = mem_alloc(4096 * sizeof(float)), *xa = mem_alloc(4096 * sizeof(float));
    float *dw = mem_alloc(4096 * sizeof(float)), *da = mem_alloc(4096 * sizeof(float));
    void *qw = mem_alloc(4096 * 4), *qa = mem_alloc(4096 * 4);
    ASSERT(xw && xa && dw && da && qw && qa);
    g_rng = 5;
    for (uint32_t t = 0; t < DTYPE_COUNT; t++) {
        const struct dtype_traits *tr = dtype_traits(t);
        if (!tr || !tr->vec_dot) continue;
        const struct dtype_traits *act = dtype_traits(tr->vec_dot_type);
        double worst_consistency = 0.0, worst_accuracy = 0.0;
        for (int is = 0; is < 3; is++) {
            for (int rep = 0; rep < 3; rep++) {
                int64_t n = sizes[is];
                for (int64_t i = 0; i < n; i++) {
                    xw[i] = 0.05f * rng_gauss();
                    xa[i] = 3.0f * rng_gauss() + (rep == 2 ? 2.0f : 0.0f); /* also a mean */
                }
                tr->from_float(xw, qw, n);
                act->from_float(xa, qa, n);
                tr->to_float(qw, dw, n);
                act->to_float(qa, da, n);
                double dot = tr->vec_dot(qw, qa, n);
                /* (i) the kernel computes the dot of the two dequantized rows */
                double exact = 0.0, abs_terms = 0.0, exact_f32 = 0.0, abs_f32 = 0.0;
                for (int64_t i = 0; i < n; i++) {
                    exact += (double)dw[i] * da[i];
                    abs_terms += fabs((double)dw[i] * da[i]);
                    exact_f32 += (double)dw[i] * xa[i];
                    abs_f32 += fabs((double)dw[i] * xa[i]);
                }
                double slack = q8_1_s_slack((enum dtype)t, qw, qa, n);
                double c = fabs(dot - exact) / (abs_terms + 1e-30);
                if (c > worst_consistency) worst_consistency = c;
                EXPECT_MSG(fabs(dot - exact) <= 2e-6 * abs_terms + slack,
                           "%s n=%lld: dot %.9g, dequantized %.9g (sum|terms| %g, slack %g)",
                           tr->name, (long long)n, dot, exact, abs_terms, slack);
                /* (ii) and is close to the dot with the f32 activations */
                double a = fabs(dot - exact_f32) / abs_f32;
                if (a > worst_accuracy) worst_accuracy = a;
                double bound = tr->vec_dot_type == DTYPE_F32    ? 1e-6
                               : tr->vec_dot_type == DTYPE_F16  ? 2e-4
                               : tr->vec_dot_type == DTYPE_BF16 ? 2e-3
                                                                : 5e-3;
                EXPECT_MSG(a <= bound, "%s n=%lld: dot %.9g vs f32 activations %.9g (%.3g > %g)",
                           tr->name, (long long)n, dot, exact_f32, a, bound);
            }
        }
        if (getenv("HEARTH_TEST_VERBOSE"))
            printf("    %-6s x %-4s: |dot - deq dot| / sum|terms| <= %.2g, vs f32 act %.2g\n",
                   tr->name, act->name, worst_consistency, worst_accuracy);
    }
    mem_free(xw);
    mem_free(xa);
    mem_free(dw);
    mem_free(da);
    mem_free(qw);
    mem_free(qa);
}

/* ======================================================================================
 * llama-quantize's output in the shared synthetic models
 * ====================================================================================== */

/* Relative RMSE llama-quantize reaches on these normal(0, std) tensors (0.53% Q8_0, 1.75%
 * Q6_K, 7.09% Q4_K), plus headroom. */
static double synthetic_bound(uint32_t type) {
    switch (type) {
    case DTYPE_Q8_0:
        return 0.0060;
    case DTYPE_Q6_K:
        return 0.0190;
    case DTYPE_Q4_K:
        return 0.0760;
    default:
        return 0.0;
    }
}

/* Per format: squared errors of llama's quantization and of ours on the same F32 values, and
 * of ours re-quantizing llama's dequantized values. */
struct synth_totals {
    double err_llama, err_ours, sum_sq, err_requant, sum_sq_deq;
};

static void synthetic_compare(const char *quant_rel, const char *f32_rel,
                              struct synth_totals *totals /* [DTYPE_COUNT] */) {
    char quant_path[4096];
    const char *p = test_model_path(quant_rel);
    if (!p) return;
    snprintf(quant_path, sizeof(quant_path), "%s", p);
    const char *f32_path = test_model_path(f32_rel);
    ASSERT_MSG(f32_path != NULL, "%s is missing", f32_rel);
    struct gguf *gq = NULL, *gf = NULL;
    struct error err = {0};
    ASSERT_MSG(gguf_open(&gq, quant_path, &err) == 0, "%s: %s", quant_rel, err.msg);
    if (gguf_open(&gf, f32_path, &err) != 0) {
        gguf_close(gq);
        ASSERT_MSG(0, "%s: %s", f32_rel, err.msg);
    }
    int n_checked = 0;
    for (int64_t it = 0; it < gguf_n_tensors(gq); it++) {
        const struct gguf_tensor_info *tq = gguf_tensor(gq, it);
        const struct dtype_traits *tr = dtype_traits(tq->type);
        if (!tr || !tr->is_quantized) continue;
        const struct gguf_tensor_info *tf = gguf_find_tensor(gf, tq->name);
        EXPECT_MSG(tf && tf->type == DTYPE_F32, "%s: no F32 twin of %s", quant_rel, tq->name);
        if (!tf || tf->type != DTYPE_F32) continue;
        int64_t n = 1;
        for (int k = 0; k < GGUF_MAX_DIMS; k++) {
            EXPECT(tq->ne[k] == tf->ne[k]);
            n *= tq->ne[k];
        }
        const float *x = tf->data;
        float *deq = mem_alloc((size_t)n * sizeof(float));
        float *ours = mem_alloc((size_t)n * sizeof(float));
        void *q = mem_alloc((size_t)n * sizeof(float));
        if (!deq || !ours || !q) {
            mem_free(deq), mem_free(ours), mem_free(q);
            test_fail(__FILE__, __LINE__, "out of memory");
            break;
        }
        /* whole tensor: llama's quantization is within the format's error of the F32 */
        tr->to_float(tq->data, deq, n);
        double e = rel_rmse(x, deq, n);
        EXPECT_MSG(e <= synthetic_bound(tq->type), "%s %s (%s): relative rmse %.5f > %.5f",
                   quant_rel, tq->name, tr->name, e, synthetic_bound(tq->type));
        /* a sample (the first rows) through our quantizer, from the F32 and from llama's
         * dequantized values */
        int64_t m = n < 8192 ? n : 8192;
        struct synth_totals *st = &totals[tq->type];
        tr->from_float(x, q, m);
        tr->to_float(q, ours, m);
        for (int64_t i = 0; i < m; i++) {
            st->err_llama += ((double)deq[i] - x[i]) * ((double)deq[i] - x[i]);
            st->err_ours += ((double)ours[i] - x[i]) * ((double)ours[i] - x[i]);
            st->sum_sq += (double)x[i] * x[i];
        }
        tr->from_float(deq, q, m);
        tr->to_float(q, ours, m);
        for (int64_t i = 0; i < m; i++) {
            st->err_requant += ((double)ours[i] - deq[i]) * ((double)ours[i] - deq[i]);
            st->sum_sq_deq += (double)deq[i] * deq[i];
        }
        mem_free(deq);
        mem_free(ours);
        mem_free(q);
        n_checked++;
    }
    EXPECT_MSG(n_checked > 0, "%s: no quantized tensors", quant_rel);
    gguf_close(gq);
    gguf_close(gf);
}

TEST(quant_synthetic_files) {
    static const char *const cases[][2] = {
        {"synthetic/qwen3-q8_0.gguf", "synthetic/qwen3-f32.gguf"},
        {"synthetic/qwen3-q6_k.gguf", "synthetic/qwen3-f32.gguf"},
        {"synthetic/qwen3-q4_k_m.gguf", "synthetic/qwen3-f32.gguf"},
        {"synthetic/qwen35moe-q4_k_m.gguf", "synthetic/qwen35moe-f32.gguf"},
    };
    if (!test_model_path(cases[0][0])) SKIP_TEST("../shared/models/synthetic is not present");
    struct synth_totals totals[DTYPE_COUNT];
    memset(totals, 0, sizeof(totals));
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++)
        synthetic_compare(cases[c][0], cases[c][1], totals);
    int n_types = 0;
    for (uint32_t t = 0; t < DTYPE_COUNT; t++) {
        const struct synth_totals *st = &totals[t];
        if (st->sum_sq == 0.0) continue;
        n_types++;
        double ratio = sqrt(st->err_ours / st->err_llama);
        double requant = sqrt(st->err_requant / st->sum_sq_deq);
        double own = sqrt(st->err_ours / st->sum_sq);
        if (getenv("HEARTH_TEST_VERBOSE"))
            printf("    %-5s llama-quantize rmse %.3f%%, ours %.3f%% (ratio %.4f); re-quantizing "
                   "llama's dequantized values: %.4f%%\n",
                   dtype_name(t), 100 * sqrt(st->err_llama / st->sum_sq), 100 * own, ratio,
                   100 * requant);
        /* ours is no worse than llama-quantize's (it is 0.97-1.0x) */
        EXPECT_MSG(ratio <= 1.01, "%s: our rmse is %.4fx llama-quantize's", dtype_name(t), ratio);
        /* llama's output is (nearly) a fixed point of our quantizer */
        EXPECT_MSG(requant <= 0.05 * own, "%s: re-quantizing moved values by %.5f", dtype_name(t),
                   requant);
    }
    EXPECT_EQ_INT(n_types, 3); /* Q8_0, Q4_K, Q6_K */
}
