/* test_kernels.c: the CPU kernel tables (src/backend/cpu) against the scalar references.
 *
 * For every table the host supports (cpu_kernels_for), every dtype and several sizes (one block,
 * odd block counts, 4096 / 11008-like rows, pointers misaligned for vectors): vec_dot, the gemm
 * tiles (every tile shape up to the declared maximum, against vec_dot), from_float, to_float and
 * the F16 attention helpers must equal the scalar table bit for bit: every SIMD kernel follows
 * its reference's summation order. Weight rows are quantized gaussians (several scales) and raw
 * random quant bytes, so every code of every format is exercised. Separately the dots are
 * checked against a double-precision dot of the unquantized data with a per-format bound.
 */
#include "test.h"

#include "../src/backend/cpu/cpu_kernels.h"
#include "../src/base/mem.h"
#include "../src/tensor/dtype.h"
#include "../src/tensor/quant.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* ======================================================================================
 * Data
 * ====================================================================================== */

static uint64_t g_state = 1;

static uint32_t rng_u32(void) { /* xorshift64* */
    g_state ^= g_state >> 12;
    g_state ^= g_state << 25;
    g_state ^= g_state >> 27;
    return (uint32_t)((g_state * 0x2545F4914F6CDD1DULL) >> 32);
}

static float rng_gauss(void) {
    double u1 = (rng_u32() + 1.0) / 4294967297.0, u2 = rng_u32() / 4294967296.0;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

static void fill_gauss(float *x, int64_t n, float sigma, float mean) {
    for (int64_t i = 0; i < n; i++) x[i] = mean + sigma * rng_gauss();
}

static void fill_bytes(void *p, size_t n) {
    for (size_t i = 0; i < n; i++) ((uint8_t *)p)[i] = (uint8_t)rng_u32();
}

/* Overwrites the quant bytes (not the fp16 scales) of n elements of dtype t with random bytes,
 * so codes the quantizers never write (Q8_0's -128, every Q6_K/IQ4_XS scale) are covered. */
static void randomize_quants(enum dtype t, void *row, int64_t n) {
    const struct dtype_traits *tr = dtype_traits(t);
    for (int64_t ib = 0; ib < n / tr->block_size; ib++) {
        char *b = (char *)row + ib * tr->type_size;
        switch (t) {
        case DTYPE_Q8_0:
        case DTYPE_Q4_0:
        case DTYPE_IQ4_NL:
            fill_bytes(b + 2, (size_t)tr->type_size - 2);
            break;
        case DTYPE_Q4_K:
        case DTYPE_Q5_K:
            fill_bytes(b + 4, (size_t)tr->type_size - 4);
            break;
        case DTYPE_Q6_K:
            fill_bytes(b, (size_t)tr->type_size - 2);
            break;
        case DTYPE_IQ4_XS:
            fill_bytes(b + 2, (size_t)tr->type_size - 2);
            break;
        default:
            break;
        }
    }
}

/* Quantized weight row: gaussian (sigma from the row's variant) or random quant bytes. */
static void make_weights(enum dtype t, int variant, float *tmp, void *row, int64_t n) {
    static const float sigmas[4] = {0.02f, 1.0f, 300.0f, 1e-4f};
    fill_gauss(tmp, n, sigmas[variant % 4], variant % 3 == 2 ? 0.01f : 0.0f);
    dtype_traits(t)->from_float(tmp, row, n);
    if (variant % 2 == 1) randomize_quants(t, row, n);
}

/* Activation row in t's vec_dot_type, from the scalar table's quantizer. */
static void make_act(const struct cpu_kernels *scalar, enum dtype t, int variant, float *tmp,
                     void *row, int64_t n) {
    fill_gauss(tmp, n, variant % 2 ? 3.0f : 0.5f, variant % 3 == 1 ? 1.0f : 0.0f);
    scalar->from_float[dtype_traits(t)->vec_dot_type](tmp, row, n);
}

static int same_bits(float a, float b) {
    return memcmp(&a, &b, sizeof(float)) == 0;
}

/* Tables to compare with scalar: each ISA the host has (the scalar one too, which checks the
 * tiles and tables themselves), and AVX-512 without AMX where the host has AMX. */
static int tables(const struct cpu_kernels *out[5]) {
    static struct cpu_kernels no_amx, amx_no_vbmi;
    int n = 0;
    for (int isa = CPU_ISA_SCALAR; isa <= CPU_ISA_AVX512; isa++) {
        const struct cpu_kernels *k = cpu_kernels_for((enum cpu_isa)isa);
        if (k) out[n++] = k;
    }
    struct cpu_features f;
    cpu_features_detect(&f);
    if (f.has_amx_int8 && f.has_avx512vbmi && cpu_kernels_for(CPU_ISA_AVX512)) {
        f.has_avx512vbmi = 0; /* AMX Q4_K without the scales in the tiles */
        if (cpu_kernels_build(&amx_no_vbmi, CPU_ISA_AVX512, &f) == 0) out[n++] = &amx_no_vbmi;
        f.has_avx512vbmi = 1;
    }
    if (f.has_amx_int8 && cpu_kernels_for(CPU_ISA_AVX512)) {
        f.has_amx_int8 = 0;
        if (cpu_kernels_build(&no_amx, CPU_ISA_AVX512, &f) == 0) out[n++] = &no_amx;
    }
    return n;
}

static int64_t g_sizes[] = {1, 3, 7, 13, 16, 43, 4096, 11008}; /* in blocks of 256, capped */

/* Element count for size index si and dtype t (a multiple of the block size). */
static int64_t size_for(enum dtype t, int si) {
    int64_t bs = dtype_traits(t)->block_size;
    int64_t n = g_sizes[si] >= 4096 ? g_sizes[si] : g_sizes[si] * (bs == 1 ? 17 : bs);
    if (bs > 1) n = n / bs * bs;
    if (n == 0) n = bs;
    return n;
}

enum { N_SIZES = (int)(sizeof(g_sizes) / sizeof(g_sizes[0])), MAX_N = 11008, PAD = 64 };

/* ======================================================================================
 * Table shape
 * ====================================================================================== */

TEST(kernels_tables_complete) {
    const struct cpu_kernels *ks[5];
    int nk = tables(ks);
    ASSERT(nk >= 1 && cpu_kernels_get() != NULL);
    for (int ik = 0; ik < nk; ik++) {
        const struct cpu_kernels *k = ks[ik];
        for (int t = 0; t < DTYPE_COUNT; t++) {
            const struct dtype_traits *tr = dtype_traits((uint32_t)t);
            if (!tr || !tr->vec_dot) continue;
            EXPECT_MSG(k->vec_dot[t] && k->gemm_tile[t] && k->gemm_tile_w[t] >= 1 &&
                           k->gemm_tile_x[t] >= 1 && k->gemm_tile_w[t] <= 64 &&
                           k->gemm_tile_x[t] <= 256,
                       "%s: %s lacks a dot or tile", k->name, tr->name);
            EXPECT_MSG(k->from_float[tr->vec_dot_type] && k->to_float[t], "%s: %s conversions",
                       k->name, tr->name);
        }
        EXPECT(k->attn_dot_f16 && k->attn_mad_f16 && k->attn_scale_f16 && k->attn_dots_f16 &&
               k->attn_rows_f16 && k->gdn_rows && k->f32_gemm_seq && k->attn_tile_softmax);
    }
}

/* ======================================================================================
 * from_float, to_float
 * ====================================================================================== */

TEST(kernels_from_float_bit_identical) {
    const struct cpu_kernels *ks[5], *sc = cpu_kernels_for(CPU_ISA_SCALAR);
    int nk = tables(ks);
    const enum dtype acts[] = {DTYPE_Q8_0, DTYPE_Q8_K, DTYPE_Q8_1,
                               DTYPE_F16,  DTYPE_BF16, DTYPE_F32};
    char *buf = mem_alloc(MAX_N * 4 + PAD), *ya = mem_alloc(MAX_N * 4 + PAD);
    char *yb = mem_alloc(MAX_N * 4 + PAD);
    ASSERT(buf && ya && yb);
    float *x = (float *)(buf + 4); /* misaligned for vectors */
    g_state = 11;
    for (int ik = 0; ik < nk; ik++)
        for (size_t ia = 0; ia < sizeof(acts) / sizeof(acts[0]); ia++) {
            enum dtype t = acts[ia];
            /* (a block of subnormals has 127/amax = inf: not an input the quantizers define) */
            int is_q8 = t == DTYPE_Q8_0 || t == DTYPE_Q8_K || t == DTYPE_Q8_1;
            if (ks[ik]->from_float[t] == sc->from_float[t]) continue;
            for (int si = 0; si < N_SIZES; si++)
                for (int v = 0; v < 6; v++) {
                    int64_t n = size_for(t, si);
                    fill_gauss(x, n, v % 3 == 0 ? 1e-3f : v % 3 == 1 ? 1.0f : 1e4f, 0.0f);
                    if (v == 3) /* exact halves: 127/amax = 1, so x * scale ties */
                        for (int64_t i = 0; i < n; i++)
                            x[i] =
                                i % 32 == 0 ? 127.0f : (float)((int)(rng_u32() % 253) - 126) + 0.5f;
                    if (v == 4) /* zero blocks, +-0; subnormals for the float formats */
                        for (int64_t i = 0; i < n; i++)
                            x[i] = (i / 256) % 2 ? 0.0f : i % 3 ? (is_q8 ? 1e-3f : 1e-41f) : -0.0f;
                    size_t bytes = dtype_row_bytes(t, n);
                    memset(ya, 0x5a, bytes + 4);
                    memset(yb, 0x5a, bytes + 4);
                    sc->from_float[t](x, ya + 4, n);
                    ks[ik]->from_float[t](x, yb + 4, n);
                    EXPECT_MSG(!memcmp(ya, yb, bytes + 4), "%s from_float %s n=%lld v=%d differs",
                               ks[ik]->name, dtype_name(t), (long long)n, v);
                }
        }
    mem_free(buf);
    mem_free(ya);
    mem_free(yb);
}

TEST(kernels_to_float_bit_identical) {
    const struct cpu_kernels *ks[5], *sc = cpu_kernels_for(CPU_ISA_SCALAR);
    int nk = tables(ks);
    float *tmp = mem_alloc(MAX_N * 4), *ya = mem_alloc(MAX_N * 4 + PAD);
    float *yb = mem_alloc(MAX_N * 4 + PAD);
    char *q = mem_alloc(MAX_N * 4 + PAD);
    ASSERT(tmp && ya && yb && q);
    g_state = 12;
    for (int ik = 0; ik < nk; ik++)
        for (int t = 0; t < DTYPE_COUNT; t++) {
            const struct dtype_traits *tr = dtype_traits((uint32_t)t);
            if (!tr || !tr->to_float || !tr->from_float || ks[ik]->to_float[t] == sc->to_float[t])
                continue;
            for (int si = 0; si < N_SIZES; si++)
                for (int v = 0; v < 2; v++) {
                    int64_t n = size_for((enum dtype)t, si);
                    make_weights((enum dtype)t, v, tmp, q + 4, n);
                    sc->to_float[t](q + 4, ya + 1, n);
                    ks[ik]->to_float[t](q + 4, yb + 1, n);
                    EXPECT_MSG(!memcmp(ya + 1, yb + 1, (size_t)n * sizeof(float)),
                               "%s to_float %s n=%lld v=%d differs", ks[ik]->name, tr->name,
                               (long long)n, v);
                }
        }
    mem_free(tmp);
    mem_free(ya);
    mem_free(yb);
    mem_free(q);
}

/* ======================================================================================
 * Dots and tiles
 * ====================================================================================== */

TEST(kernels_vec_dot_bit_identical) {
    const struct cpu_kernels *ks[5], *sc = cpu_kernels_for(CPU_ISA_SCALAR);
    int nk = tables(ks);
    float *tmp = mem_alloc(MAX_N * 4);
    char *w = mem_alloc(MAX_N * 4 + PAD), *a = mem_alloc(MAX_N * 4 + PAD);
    ASSERT(tmp && w && a);
    g_state = 13;
    for (int ik = 0; ik < nk; ik++)
        for (int t = 0; t < DTYPE_COUNT; t++) {
            const struct dtype_traits *tr = dtype_traits((uint32_t)t);
            if (!tr || !tr->vec_dot || ks[ik]->vec_dot[t] == sc->vec_dot[t]) continue;
            int fails = 0;
            for (int si = 0; si < N_SIZES; si++)
                for (int v = 0; v < 4; v++) {
                    int64_t n = size_for((enum dtype)t, si);
                    make_weights((enum dtype)t, v, tmp, w + 4, n);
                    make_act(sc, (enum dtype)t, v, tmp, a + 4, n);
                    float r = sc->vec_dot[t](w + 4, a + 4, n);
                    float s = ks[ik]->vec_dot[t](w + 4, a + 4, n);
                    if (!same_bits(r, s) && fails++ < 3)
                        test_fail(__FILE__, __LINE__, "%s %s n=%lld v=%d: %.9g vs scalar %.9g",
                                  ks[ik]->name, tr->name, (long long)n, v, s, r);
                }
        }
    mem_free(tmp);
    mem_free(w);
    mem_free(a);
}

/* Tile shapes n_w x n_x: all up to 4, and around the block sizes of bigger tiles (4, 8, 16 rows;
 * groups of 16 tokens up to 64). */
static int tile_sizes(int max, int *out) { /* out: up to 19 */
    static const int cand[] = {1,  2,  3,  4,  5,  7,  8,  9,   15, 16,
                               17, 31, 32, 33, 48, 63, 64, 100, 256};
    int n = 0;
    for (size_t i = 0; i < sizeof(cand) / sizeof(cand[0]); i++)
        if (cand[i] <= max) out[n++] = cand[i];
    return n;
}

/* Every such tile shape, strided rows and output, against the table's own vec_dot (which the
 * previous test ties to scalar); entries outside the tile untouched. */
TEST(kernels_gemm_tile_equals_vec_dot) {
    const struct cpu_kernels *ks[5], *sc = cpu_kernels_for(CPU_ISA_SCALAR);
    int nk = tables(ks);
    const int64_t ks_elems[] = {256, 768, 4096}; /* one, three and sixteen super-blocks */
    enum { MAXT = 256, OS = 67, ROW = 4200 * 4 };
    float *tmp = mem_alloc(ROW), *out = mem_alloc(MAXT * OS * sizeof(float));
    float *want = mem_alloc(MAXT * MAXT * sizeof(float));
    char *w = mem_alloc((size_t)MAXT * ROW + PAD), *a = mem_alloc((size_t)MAXT * ROW + PAD);
    ASSERT(tmp && out && want && w && a);
    g_state = 14;
    for (int ik = 0; ik < nk; ik++)
        for (int t = 0; t < DTYPE_COUNT; t++) {
            const struct dtype_traits *tr = dtype_traits((uint32_t)t);
            const struct cpu_kernels *k = ks[ik];
            if (!tr || !tr->vec_dot) continue;
            int tw = k->gemm_tile_w[t] < MAXT ? k->gemm_tile_w[t] : MAXT;
            int tx = k->gemm_tile_x[t] < MAXT ? k->gemm_tile_x[t] : MAXT;
            int nws[20], nxs[20], n_nw = tile_sizes(tw, nws), n_nx = tile_sizes(tx, nxs);
            int fails = 0;
            for (int ie = 0; ie < 3; ie++) {
                int64_t n = ks_elems[ie];
                if (tx > 16 && n > 768) continue; /* keep the big tiles quick */
                if (tr->block_size == 1) n += 5;  /* a tail past the 16-lane steps */
                size_t wstride = dtype_row_bytes((enum dtype)t, n) + 4;
                size_t astride = dtype_row_bytes(tr->vec_dot_type, n) + 8;
                for (int i = 0; i < tw; i++)
                    make_weights((enum dtype)t, i, tmp, w + 4 + (size_t)i * wstride, n);
                for (int j = 0; j < tx; j++)
                    make_act(sc, (enum dtype)t, j, tmp, a + 4 + (size_t)j * astride, n);
                for (int j = 0; j < tx; j++)
                    for (int i = 0; i < tw; i++)
                        want[j * MAXT + i] = k->vec_dot[t](w + 4 + (size_t)i * wstride,
                                                           a + 4 + (size_t)j * astride, n);
                for (int iw = 0; iw < n_nw; iw++)
                    for (int ix = 0; ix < n_nx; ix++) {
                        int nw = nws[iw], nx = nxs[ix];
                        for (int e = 0; e < MAXT * OS; e++) out[e] = -12345.0f;
                        k->gemm_tile[t](w + 4, wstride, a + 4, astride, n, out, OS, nw, nx);
                        for (int j = 0; j < MAXT; j++)
                            for (int i = 0; i < OS && i < MAXT; i++) {
                                float got = out[j * OS + i];
                                if (i < nw && j < nx) {
                                    if (!same_bits(got, want[j * MAXT + i]) && fails++ < 3)
                                        test_fail(__FILE__, __LINE__,
                                                  "%s %s tile %dx%d n=%lld (%d,%d): %.9g vs %.9g",
                                                  k->name, tr->name, nw, nx, (long long)n, i, j,
                                                  got, want[j * MAXT + i]);
                                } else if (got != -12345.0f && fails++ < 3) {
                                    test_fail(__FILE__, __LINE__, "%s %s tile %dx%d wrote (%d,%d)",
                                              k->name, tr->name, nw, nx, i, j);
                                }
                            }
                    }
            }
        }
    mem_free(tmp);
    mem_free(out);
    mem_free(want);
    mem_free(w);
    mem_free(a);
}

/* Q8_0 in llama.cpp's AMX order (tables that have it): the tile against q8_0_dot_q8_0_blk_ref,
 * bit for bit, for tile shapes up to 16 rows x 256 tokens (whole groups of 16 on AMX, the other
 * tokens through the block-order decode kernel), 1, 21 and 128 blocks. */
TEST(kernels_q8_0_blk_tile_equals_ref) {
    const struct cpu_kernels *ks[5], *sc = cpu_kernels_for(CPU_ISA_SCALAR);
    int nk = tables(ks), n_tested = 0;
    enum { MAXW = 16, MAXX = 256, OS = 19 };
    const int64_t ns[] = {32, 672, 4096};
    size_t row = dtype_row_bytes(DTYPE_Q8_0, 4096) + 4;
    float *tmp = mem_alloc(4096 * sizeof(float)), *out = mem_alloc(MAXX * OS * sizeof(float));
    char *w = mem_alloc(MAXW * row + PAD), *a = mem_alloc(MAXX * row + PAD);
    ASSERT(tmp && out && w && a);
    g_state = 41;
    for (int ik = 0; ik < nk; ik++) {
        const struct cpu_kernels *k = ks[ik];
        if (!k->q8_0_blk_tile) continue;
        n_tested++;
        EXPECT(k->q8_0_blk_dot && k->q8_0_blk_tile_w >= 1 && k->q8_0_blk_tile_w <= MAXW &&
               k->q8_0_blk_tile_x >= 1 && k->q8_0_blk_tile_x <= MAXX);
        int nws[20], nxs[20], n_nw = tile_sizes(k->q8_0_blk_tile_w, nws),
                              n_nx = tile_sizes(k->q8_0_blk_tile_x, nxs);
        int fails = 0;
        for (int ie = 0; ie < 3; ie++) {
            int64_t n = ns[ie];
            size_t ws = dtype_row_bytes(DTYPE_Q8_0, n) + 4;
            for (int i = 0; i < MAXW; i++) make_weights(DTYPE_Q8_0, i, tmp, w + 4 + i * ws, n);
            for (int j = 0; j < MAXX; j++) make_act(sc, DTYPE_Q8_0, j, tmp, a + 4 + j * ws, n);
            for (int iw = 0; iw < n_nw; iw++)
                for (int ix = 0; ix < n_nx; ix++) {
                    int nw = nws[iw], nx = nxs[ix];
                    if (n > 672 && nx > 16 && nx != 256) continue; /* keep it quick */
                    for (int e = 0; e < MAXX * OS; e++) out[e] = -12345.0f;
                    k->q8_0_blk_tile(w + 4, ws, a + 4, ws, n, out, OS, nw, nx);
                    for (int j = 0; j < MAXX; j++)
                        for (int i = 0; i < OS; i++) {
                            float got = out[j * OS + i];
                            if (i < nw && j < nx) {
                                float want =
                                    q8_0_dot_q8_0_blk_ref(w + 4 + i * ws, a + 4 + j * ws, n);
                                if (!same_bits(got, want) && fails++ < 3)
                                    test_fail(__FILE__, __LINE__,
                                              "%s q8_0_blk tile %dx%d n=%lld (%d,%d): %.9g vs %.9g",
                                              k->name, nw, nx, (long long)n, i, j, got, want);
                            } else if (got != -12345.0f && fails++ < 3) {
                                test_fail(__FILE__, __LINE__,
                                          "%s q8_0_blk tile %dx%d wrote (%d,%d)", k->name, nw, nx,
                                          i, j);
                            }
                        }
                }
        }
    }
    if (!n_tested) test_skip("no kernel table with the AMX Q8_0 order (this CPU has no AMX-INT8)");
    mem_free(tmp);
    mem_free(out);
    mem_free(w);
    mem_free(a);
}

/* The reference dots against a double-precision dot of the unquantized f32 data: the bound
 * (relative to sum |w x|) is the format's own quantization error plus the activation's. */
TEST(kernels_dot_vs_double) {
    const struct cpu_kernels *ks[5], *sc = cpu_kernels_for(CPU_ISA_SCALAR);
    int nk = tables(ks);
    enum { N = 4096 };
    float *xw = mem_alloc(N * 4), *xa = mem_alloc(N * 4);
    char *w = mem_alloc(N * 4), *a = mem_alloc(N * 4);
    ASSERT(xw && xa && w && a);
    g_state = 15;
    for (int ik = 0; ik < nk; ik++)
        for (int t = 0; t < DTYPE_COUNT; t++) {
            const struct dtype_traits *tr = dtype_traits((uint32_t)t);
            if (!tr || !tr->vec_dot || t == DTYPE_Q8_K) continue;
            double bound = t == DTYPE_F32                                          ? 1e-6
                           : t == DTYPE_F16                                        ? 2e-3
                           : t == DTYPE_BF16                                       ? 1e-2
                           : t == DTYPE_Q8_0                                       ? 1.5e-2
                           : t == DTYPE_Q6_K                                       ? 3e-2
                           : t == DTYPE_Q5_K || t == DTYPE_Q5_0 || t == DTYPE_Q5_1 ? 6e-2
                           : t == DTYPE_Q2_K || t == DTYPE_Q3_K                    ? 3e-1
                                                                                   : 1.2e-1;
            for (int rep = 0; rep < 3; rep++) {
                fill_gauss(xw, N, 0.05f, 0.0f);
                fill_gauss(xa, N, 2.0f, rep == 2 ? 1.0f : 0.0f);
                tr->from_float(xw, w, N);
                sc->from_float[tr->vec_dot_type](xa, a, N);
                double exact = 0.0, abs_terms = 0.0;
                for (int i = 0; i < N; i++) {
                    exact += (double)xw[i] * xa[i];
                    abs_terms += fabs((double)xw[i] * xa[i]);
                }
                double got = ks[ik]->vec_dot[t](w, a, N);
                EXPECT_MSG(fabs(got - exact) <= bound * abs_terms,
                           "%s %s: %.9g vs double %.9g (%.3g of sum|terms| > %g)", ks[ik]->name,
                           tr->name, got, exact, fabs(got - exact) / abs_terms, bound);
            }
        }
    mem_free(xw);
    mem_free(xa);
    mem_free(w);
    mem_free(a);
}

/* ======================================================================================
 * Attention helpers
 * ====================================================================================== */

TEST(kernels_attention_f16_bit_identical) {
    const struct cpu_kernels *ks[5], *sc = cpu_kernels_for(CPU_ISA_SCALAR);
    int nk = tables(ks);
    enum { N = 1000 };
    uint16_t q[N + 3], k[N + 3], v[N + 3], acc_a[N + 3], acc_b[N + 3];
    static uint16_t keys[11 * (N + 5)];
    const int64_t lens[] = {0, 1, 8, 15, 16, 17, 63, 64, 65, 128, 200, 576, N};
    g_state = 16;
    for (int ik = 0; ik < nk; ik++)
        for (size_t il = 0; il < sizeof(lens) / sizeof(lens[0]); il++)
            for (int rep = 0; rep < 4; rep++) {
                int64_t n = lens[il];
                for (int i = 0; i < N + 3; i++) {
                    q[i] = fp32_to_fp16(rng_gauss() * (rep == 3 ? 200.0f : 1.0f));
                    k[i] = fp32_to_fp16(rng_gauss());
                    v[i] = fp32_to_fp16(rng_gauss() * (rep == 2 ? 1e-5f : 1.0f));
                    acc_a[i] = acc_b[i] = fp32_to_fp16(rng_gauss() * (rep == 3 ? 3e4f : 2.0f));
                }
                float da = sc->attn_dot_f16(q + 1, k + 1, n),
                      db = ks[ik]->attn_dot_f16(q + 1, k + 1, n);
                EXPECT_MSG(same_bits(da, db), "%s attn_dot_f16 n=%lld: %.9g vs %.9g", ks[ik]->name,
                           (long long)n, db, da);
                float dots_a[11], dots_b[11]; /* 11 keys (a block of 8 + 3), rows N + 5 apart */
                for (int i = 0; i < 11 * (N + 5); i++) keys[i] = fp32_to_fp16(rng_gauss());
                sc->attn_dots_f16(q + 1, keys + 1, (N + 5) * 2, n, dots_a, 11);
                ks[ik]->attn_dots_f16(q + 1, keys + 1, (N + 5) * 2, n, dots_b, 11);
                EXPECT_MSG(!memcmp(dots_a, dots_b, sizeof(dots_a)), "%s attn_dots_f16 n=%lld",
                           ks[ik]->name, (long long)n);
                float s = rep == 0 ? 0.7f : rep == 1 ? 1e-3f : 3.0f;
                sc->attn_mad_f16(acc_a + 1, v + 1, s, n);
                ks[ik]->attn_mad_f16(acc_b + 1, v + 1, s, n);
                EXPECT_MSG(!memcmp(acc_a, acc_b, sizeof(acc_a)), "%s attn_mad_f16 n=%lld",
                           ks[ik]->name, (long long)n);
                sc->attn_scale_f16(acc_a + 1, s, n);
                ks[ik]->attn_scale_f16(acc_b + 1, s, n);
                EXPECT_MSG(!memcmp(acc_a, acc_b, sizeof(acc_a)), "%s attn_scale_f16 n=%lld",
                           ks[ik]->name, (long long)n);
            }
}

/* The llama.cpp-arithmetic entries: F32 expert tiles (against f32_id_dot_ref), swiglu and silu
 * with ggml's vector exp, the RoPE rotation (NEOX and adjacent pairs), each table bit for bit. */
TEST(kernels_moe_swiglu_rope_bit_identical) {
    const struct cpu_kernels *ks[5];
    int nk = tables(ks);
    enum { N = 1100 };
    static float w[4 * (N + 3)], x[4 * (N + 3)], g[N + 3], u[N + 3], oa[N + 3], ob[N + 3];
    static float ra[2 * N + 8], rb[2 * N + 8], cs[N], sn[N];
    const int64_t lens[] = {0, 1, 15, 16, 17, 63, 64, 65, 128, 200, 256, 1000, N};
    g_state = 17;
    for (int ik = 0; ik < nk; ik++)
        for (size_t il = 0; il < sizeof(lens) / sizeof(lens[0]); il++) {
            int64_t n = lens[il];
            size_t rs = (size_t)(N + 3) * sizeof(float);
            fill_gauss(w, 4 * (N + 3), 1.0f, 0.1f);
            fill_gauss(x, 4 * (N + 3), 2.0f, 0.0f);
            float ta[16], tb[16];
            for (int nw = 1; nw <= 4; nw++)
                for (int nx = 1; nx <= 4; nx++) {
                    memset(tb, 0, sizeof(tb));
                    ks[ik]->f32_id_tile(w + 1, rs, x + 1, rs, n, tb, 4, nw, nx);
                    for (int j = 0; j < nx; j++)
                        for (int i = 0; i < nw; i++) {
                            ta[j * 4 + i] =
                                f32_id_dot_ref(w + 1 + i * (N + 3), x + 1 + j * (N + 3), n);
                            EXPECT_MSG(same_bits(ta[j * 4 + i], tb[j * 4 + i]),
                                       "%s f32_id_tile n=%lld %dx%d", ks[ik]->name, (long long)n,
                                       nw, nx);
                        }
                }
            /* gates over the whole range, including exp overflow / underflow */
            for (int i = 0; i < N + 3; i++) {
                g[i] = rng_gauss() * (il % 3 == 0 ? 40.0f : 4.0f);
                u[i] = rng_gauss();
            }
            g[5] = 100.0f, g[6] = -100.0f, g[7] = 0.0f, g[8] = -0.0f, g[9] = 88.5f, g[10] = -95.0f;
            swiglu_ref(g + 1, u + 1, oa + 1, n);
            ks[ik]->swiglu(g + 1, u + 1, ob + 1, n);
            EXPECT_MSG(!memcmp(oa + 1, ob + 1, (size_t)n * sizeof(float)), "%s swiglu n=%lld",
                       ks[ik]->name, (long long)n);
            silu_ref(g + 1, oa + 1, n);
            ks[ik]->silu(g + 1, ob + 1, n);
            EXPECT_MSG(!memcmp(oa + 1, ob + 1, (size_t)n * sizeof(float)), "%s silu n=%lld",
                       ks[ik]->name, (long long)n);
            int np = (int)(n < N ? n : N);
            for (int i = 0; i < np; i++) {
                float th = rng_gauss() * 3.0f;
                cs[i] = cosf(th), sn[i] = sinf(th);
            }
            for (int half = 0; half <= 1; half++) {
                fill_gauss(ra, 2 * N + 8, 3.0f, 0.0f);
                memcpy(rb, ra, sizeof(ra));
                rope_pairs_ref(ra + 1, cs, sn, np, half ? np : 0);
                ks[ik]->rope_pairs(rb + 1, cs, sn, np, half ? np : 0);
                EXPECT_MSG(!memcmp(ra, rb, sizeof(ra)), "%s rope_pairs n=%d half=%d", ks[ik]->name,
                           np, half);
            }
        }
}

/* expf_ggml_ref is ggml's approximation: within a few ulp of exp over the range it keeps, 1 at 0,
 * and it saturates to 0 / inf like the vector code. */
TEST(kernels_expf_ggml_close_to_exp) {
    EXPECT(expf_ggml_ref(0.0f) == 1.0f);
    EXPECT(expf_ggml_ref(-200.0f) == 0.0f);
    EXPECT(isinf(expf_ggml_ref(200.0f)));
    double worst = 0;
    for (float v = -80.0f; v <= 80.0f; v += 0.0137f) {
        double e = exp((double)v), d = fabs((double)expf_ggml_ref(v) - e) / e;
        if (d > worst) worst = d;
    }
    EXPECT_MSG(worst < 4 * 1.2e-7, "max relative error %g", worst);
}

/* gdn_rows: every table against the reference, bit for bit, on the state and the outputs, at
 * the real head size (128 x 128), a 64-multiple, and sizes with tails; unaligned pointers; 20
 * tokens in a row so the state grows as in a model. */
TEST(kernels_gdn_rows_bit_identical) {
    const struct cpu_kernels *ks[5];
    int nk = tables(ks);
    static const int dims[][2] = {{128, 128}, {64, 32}, {100, 7}, {1, 3}, {192, 16}};
    enum { MAXF = 128 * 128 + 1 };
    static float sa[MAXF], sb[MAXF], kn[257], qn[257], v[257], oa[257], ob[257];
    g_state = 23;
    for (int ik = 0; ik < nk; ik++)
        for (size_t id = 0; id < sizeof(dims) / sizeof(dims[0]); id++) {
            int dk = dims[id][0], dv = dims[id][1];
            fill_gauss(sa, MAXF, 0.5f, 0.0f);
            memcpy(sb, sa, sizeof(sa));
            int same = 1;
            for (int t = 0; t < 20 && same; t++) {
                fill_gauss(kn, 257, 0.1f, 0.0f);
                fill_gauss(qn, 257, 0.1f, 0.0f);
                fill_gauss(v, 257, 1.0f, 0.0f);
                float beta = 0.3f + 0.03f * (float)t, decay = 0.9f + 0.004f * (float)t;
                gdn_rows_ref(sa + 1, dk, dv, kn + 1, qn + 1, v + 1, beta, decay, 0.088f, oa + 1);
                ks[ik]->gdn_rows(sb + 1, dk, dv, kn + 1, qn + 1, v + 1, beta, decay, 0.088f,
                                 ob + 1);
                same = !memcmp(sa, sb, sizeof(sa)) && !memcmp(oa + 1, ob + 1, (size_t)dv * 4);
            }
            EXPECT_MSG(same, "%s gdn_rows dk=%d dv=%d", ks[ik]->name, dk, dv);
        }
}

/* f32_gemm_seq: every table against the reference, bit for bit, over shapes with full and partial
 * register tiles (M % 4, N % 64, N % 16), strided and transposed A, an odd address. */
TEST(kernels_f32_gemm_seq_bit_identical) {
    const struct cpu_kernels *ks[5];
    int nk = tables(ks);
    static const int shapes[][3] = {{64, 128, 64}, {37, 256, 64}, {64, 64, 128}, {5, 3, 17},
                                    {1, 1, 1},     {8, 100, 80},  {3, 64, 200},  {0, 4, 16}};
    enum { MAXE = 64 * 256 + 300 };
    static float A[MAXE], B[MAXE], C0[MAXE], ca[MAXE], cb[MAXE];
    g_state = 31;
    for (int ik = 0; ik < nk; ik++)
        for (size_t is = 0; is < sizeof(shapes) / sizeof(shapes[0]); is++)
            for (int trans = 0; trans < 2; trans++) {
                int M = shapes[is][0], K = shapes[is][1], N = shapes[is][2];
                size_t ldc = (size_t)N + 3, ldb = (size_t)N + 1;
                size_t a_si = trans ? 1 : (size_t)K + 2, a_sk = trans ? (size_t)M + 5 : 1;
                fill_gauss(A, MAXE, 1.0f, 0.0f);
                fill_gauss(B, MAXE, 1.0f, 0.0f);
                fill_gauss(C0, MAXE, 4.0f, 0.0f);
                memcpy(ca, C0, sizeof(C0));
                memcpy(cb, C0, sizeof(C0));
                f32_gemm_seq_ref(ca + 1, ldc, A + 1, a_si, a_sk, B + 1, ldb, M, K, N);
                ks[ik]->f32_gemm_seq(cb + 1, ldc, A + 1, a_si, a_sk, B + 1, ldb, M, K, N);
                EXPECT_MSG(!memcmp(ca, cb, sizeof(ca)), "%s f32_gemm_seq M=%d K=%d N=%d trans=%d",
                           ks[ik]->name, M, K, N, trans);
            }
}

/* attn_tile_softmax: every table against the reference, bit for bit (scores, m, l, acc), with
 * lanes in every state: padding (qpos -1), a causal edge inside the tile, a max that moves, a
 * max that stays, a lane whose tile is fully masked, partial tiles (n_kv < 64). */
TEST(kernels_attn_tile_softmax_bit_identical) {
    const struct cpu_kernels *ks[5];
    int nk = tables(ks);
    enum { T = CPU_ATTN_TILE, DV = 40 };
    static float kq0[T * T], ka[T * T], kb[T * T], acc0[T * DV], aa[T * DV], ab[T * DV];
    float m0[T], l0[T], ma[T], la[T], mb[T], lb[T];
    int qpos[T];
    static const int n_kvs[] = {64, 1, 17, 63, 48};
    g_state = 37;
    for (int ik = 0; ik < nk; ik++)
        for (size_t in = 0; in < sizeof(n_kvs) / sizeof(n_kvs[0]); in++)
            for (int rep = 0; rep < 3; rep++) {
                int n_kv = n_kvs[in], kv0 = 64 * rep;
                fill_gauss(kq0, T * T, 3.0f, 0.0f);
                fill_gauss(acc0, T * DV, 1.0f, 0.0f);
                for (int r = 0; r < T; r++) {
                    qpos[r] = r >= 60 ? -1 : kv0 + (r * 7) % 80 - 8; /* some see nothing */
                    m0[r] = r % 3 == 0 ? -INFINITY : (float)((r * 13) % 11) - 5.0f;
                    l0[r] = m0[r] == -INFINITY ? 0.0f : 1.0f + 0.25f * (float)(r % 5);
                }
                memcpy(ka, kq0, sizeof(ka));
                memcpy(kb, kq0, sizeof(kb));
                memcpy(aa, acc0, sizeof(aa));
                memcpy(ab, acc0, sizeof(ab));
                memcpy(ma, m0, sizeof(ma));
                memcpy(mb, m0, sizeof(mb));
                memcpy(la, l0, sizeof(la));
                memcpy(lb, l0, sizeof(lb));
                struct cpu_attn_tile ta = {ka, n_kv, kv0, qpos, 0.125f, ma, la, aa, DV};
                struct cpu_attn_tile tb = {kb, n_kv, kv0, qpos, 0.125f, mb, lb, ab, DV};
                attn_tile_softmax_ref(&ta);
                ks[ik]->attn_tile_softmax(&tb);
                int same = !memcmp(ka, kb, sizeof(ka)) && !memcmp(aa, ab, sizeof(aa)) &&
                           !memcmp(ma, mb, sizeof(ma)) && !memcmp(la, lb, sizeof(la));
                EXPECT_MSG(same, "%s attn_tile_softmax n_kv=%d kv0=%d", ks[ik]->name, n_kv, kv0);
            }
}

/* attn_exp_ref is glibc's expf bit for bit (the exhaustive check over [-104.5, 0] was run once;
 * here every 97th float of that range, the special values, and every table's attention on
 * random data through kernels_attn_rows_f16_bit_identical). */
TEST(kernels_attn_exp_is_expf) {
    EXPECT(attn_exp_ref(0.0f) == 1.0f && attn_exp_ref(-0.0f) == 1.0f);
    EXPECT(attn_exp_ref(-INFINITY) == 0.0f && isnan(attn_exp_ref(NAN)));
    EXPECT(attn_exp_ref(-110.0f) == 0.0f);
    long n_bad = 0, n = 0;
    for (uint32_t b = 0x80000000u; b <= 0xC2D00000u; b += 97) {
        float x, want, got;
        memcpy(&x, &b, sizeof(x));
        want = expf(x);
        got = attn_exp_ref(x);
        n++;
        if (memcmp(&want, &got, sizeof(want))) {
            if (n_bad++ < 3) printf("  x=%a expf=%a attn_exp_ref=%a\n", x, want, got);
        }
    }
    EXPECT_MSG(n_bad == 0, "attn_exp_ref differs from expf at %ld of %ld arguments", n_bad, n);
}

/* One job of attn_rows_f16 on random data: rows with their own state (the first with a finite
 * max, the rest fresh), keys and values rows kv_stride apart, all at an odd address. */
struct rows_case {
    uint16_t *q, *acc, *kv; /* n_rows * n, n_rows * n, 2 * n_pos * stride elements */
    float m[CPU_ATTN_ROWS], l[CPU_ATTN_ROWS];
};

static void rows_job(struct cpu_attn_rows_f16 *job, uint16_t *q, uint16_t *acc, const uint16_t *kv,
                     const float *m, const float *l, int64_t n, int n_rows, int n_pos, int stride) {
    memset(job, 0, sizeof(*job));
    for (int r = 0; r < n_rows; r++) { /* rows 0..n/2 on one KV head, the rest on the next */
        size_t head = r <= n_rows / 2 ? 0 : (size_t)n;
        job->k[r] = kv + head;
        job->v[r] = kv + (size_t)n_pos * stride + head;
    }
    job->kv_stride = (size_t)stride * 2;
    job->n = n;
    job->n_pos = n_pos;
    job->n_rows = n_rows;
    job->scale = 1.0f / sqrtf((float)n);
    for (int r = 0; r < n_rows; r++) {
        job->q[r] = q + r * n;
        job->acc[r] = acc + r * n;
        job->m[r] = m[r];
        job->l[r] = l[r];
    }
}

TEST(kernels_attn_rows_f16_bit_identical) {
    const struct cpu_kernels *ks[5], *sc = cpu_kernels_for(CPU_ISA_SCALAR);
    int nk = tables(ks);
    const int64_t dims[] = {4, 8, 12, 16, 24, 64, 128};
    const int rows[] = {1, 2, 3, 8}, poss[] = {0, 1, 7, 67, 150};
    g_state = 77;
    for (size_t id = 0; id < sizeof(dims) / sizeof(dims[0]); id++)
        for (size_t ir = 0; ir < sizeof(rows) / sizeof(rows[0]); ir++)
            for (size_t ip = 0; ip < sizeof(poss) / sizeof(poss[0]); ip++) {
                int64_t n = dims[id];
                int nr = rows[ir], np = poss[ip], stride = (int)n * 3 + 1; /* 3 heads + 1 */
                size_t nq = (size_t)nr * (size_t)n, nkv = 2 * (size_t)np * (size_t)stride + 1;
                uint16_t *q = mem_alloc((nq + 1) * 2), *acc0 = mem_alloc((nq + 1) * 2);
                uint16_t *acc_a = mem_alloc((nq + 1) * 2), *acc_b = mem_alloc((nq + 1) * 2);
                uint16_t *kv = mem_alloc((nkv + 1) * 2);
                ASSERT(q && acc0 && acc_a && acc_b && kv);
                float qs = ip % 2 ? 8.0f : 1.0f; /* sharp and flat softmaxes */
                for (size_t i = 0; i < nq + 1; i++) {
                    q[i] = fp32_to_fp16(rng_gauss() * qs);
                    acc0[i] = fp32_to_fp16(rng_gauss());
                }
                for (size_t i = 0; i < nkv + 1; i++) kv[i] = fp32_to_fp16(rng_gauss());
                float m[CPU_ATTN_ROWS], l[CPU_ATTN_ROWS];
                for (int r = 0; r < CPU_ATTN_ROWS; r++) {
                    m[r] = r == 0 ? 0.5f : -INFINITY;
                    l[r] = r == 0 ? 2.0f : 0.0f;
                    if (r > 0 && r < nr)
                        for (int64_t i = 0; i < n; i++) acc0[1 + (size_t)r * n + i] = 0;
                }
                struct cpu_attn_rows_f16 ja, jb;
                memcpy(acc_a, acc0, (nq + 1) * 2);
                rows_job(&ja, q + 1, acc_a + 1, kv + 1, m, l, n, nr, np, stride);
                sc->attn_rows_f16(&ja);
                for (int ik = 0; ik < nk; ik++) {
                    memcpy(acc_b, acc0, (nq + 1) * 2);
                    rows_job(&jb, q + 1, acc_b + 1, kv + 1, m, l, n, nr, np, stride);
                    ks[ik]->attn_rows_f16(&jb);
                    EXPECT_MSG(!memcmp(acc_a, acc_b, (nq + 1) * 2) &&
                                   !memcmp(ja.m, jb.m, sizeof(ja.m)) &&
                                   !memcmp(ja.l, jb.l, sizeof(ja.l)),
                               "%s attn_rows_f16 n=%lld rows=%d positions=%d", ks[ik]->name,
                               (long long)n, nr, np);
                    /* one row alone, and the positions in two calls: the same bits */
                    if (nr > 1 && np > 1) {
                        memcpy(acc_b, acc0, (nq + 1) * 2);
                        int r = nr - 1, cut = np / 3;
                        rows_job(&jb, q + 1 + (size_t)r * n, acc_b + 1 + (size_t)r * n, kv + 1,
                                 m + r, l + r, n, 1, np, stride);
                        jb.k[0] = ja.k[r];
                        jb.v[0] = ja.v[r];
                        jb.n_pos = cut;
                        ks[ik]->attn_rows_f16(&jb);
                        jb.k[0] = ja.k[r] + (size_t)cut * (size_t)stride;
                        jb.v[0] = ja.v[r] + (size_t)cut * (size_t)stride;
                        jb.n_pos = np - cut;
                        ks[ik]->attn_rows_f16(&jb);
                        EXPECT_MSG(!memcmp(acc_a + 1 + (size_t)r * n, acc_b + 1 + (size_t)r * n,
                                           (size_t)n * 2) &&
                                       same_bits(ja.m[r], jb.m[0]) && same_bits(ja.l[r], jb.l[0]),
                                   "%s attn_rows_f16 row alone n=%lld rows=%d positions=%d",
                                   ks[ik]->name, (long long)n, nr, np);
                    }
                }
                mem_free(q);
                mem_free(acc0);
                mem_free(acc_a);
                mem_free(acc_b);
                mem_free(kv);
            }
}
