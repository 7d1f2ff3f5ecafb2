/* kernels_amx.c: AMX-INT8 tiles for the K-quants and IQ4_XS, compiled with the AVX-512 and AMX
 * flags only for this file (Makefile ISA_AMX). Called by the AVX-512 table's gemm tiles for whole
 * groups of 16 tokens when the CPU has AMX; the caller handles the rest of a tile.
 *
 * The references sum each super-block exactly in int32 before any f32 arithmetic, so a tile
 * multiply that produces exact sub-block sums gives the same bits as vec_dot. One TDPBSUD
 * (TDPBSSD for IQ4_XS) multiplies 16 tokens (tile A: activation bytes, read in place from the
 * Q8_K rows with the row stride) by 16 weight rows (tile B: the sub-block's unsigned quants in
 * the VNNI layout, B[k/4][4n + k%4] = q_n[k]) into C[token][row] = the sub-block sum of every
 * pair. The quants are put into that layout by a 16 x 16 dword transpose per 64 raw bytes of 16
 * rows. Each C row is then scaled by the rows' sub-block scales (vpmulld) into int32
 * super-block sums; mins / offsets and the f32 step follow the references, 16 rows per vector.
 * Tiles: C in tmm0-3 (four sub-blocks in flight), A in tmm4, B in tmm6.
 */
#include "cpu_kernels.h"

#include "../../base/error.h"
#include "../../tensor/quant.h"

#include <immintrin.h>
#include <string.h>

#define INLINE static inline __attribute__((always_inline))

/* LDTILECFG operand (palette 1). */
struct tile_config {
    uint8_t palette_id;
    uint8_t start_row;
    uint8_t reserved[14];
    uint16_t colsb[16]; /* bytes per row of tile t */
    uint8_t rows[16];   /* rows of tile t */
};

/* The AMX instructions as inline assembly that tells the compiler what memory they touch (gcc
 * 12's intrinsics declare neither that ldtilecfg reads 64 bytes nor that tileloadd reads memory,
 * so the stores that fill a config or a B buffer could be dropped). Tile numbers are immediates,
 * hence the macros. */
#define TILE_LOADD(t, base, stride)                                                                \
    __asm__ volatile("tileloadd (%0,%1,1), %%tmm" #t ::"r"(base), "r"((long)(stride)) : "memory")
#define TILE_STORED(t, base, stride)                                                               \
    __asm__ volatile("tilestored %%tmm" #t ", (%0,%1,1)" ::"r"(base), "r"((long)(stride))          \
                     : "memory")
#define TILE_ZERO(t)         __asm__ volatile("tilezero %%tmm" #t ::)
#define TILE_DPBSUD(c, a, b) __asm__ volatile("tdpbsud %%tmm" #b ", %%tmm" #a ", %%tmm" #c ::)
#define TILE_DPBSSD(c, a, b) __asm__ volatile("tdpbssd %%tmm" #b ", %%tmm" #a ", %%tmm" #c ::)

/* The Q4_K path with the scales in the B tiles (amx_q4k_tiles): C in tmm0-3, A in tmm4-5, B in
 * tmm6-7, K = 64 everywhere. */
static void tiles_configure_k64(void) {
    struct tile_config c __attribute__((aligned(64)));
    memset(&c, 0, sizeof(c));
    c.palette_id = 1;
    static const int used[8] = {0, 1, 2, 3, 4, 5, 6, 7};
    for (int i = 0; i < 8; i++) {
        c.rows[used[i]] = 16;
        c.colsb[used[i]] = 64;
    }
    __asm__ volatile("ldtilecfg %0" ::"m"(c));
}

/* sub: values per sub-block (the K of one multiply): 32, or 16 for Q6_K. */
static void tiles_configure(int sub) {
    struct tile_config c __attribute__((aligned(64)));
    memset(&c, 0, sizeof(c));
    c.palette_id = 1;
    for (int t = 0; t < 4; t++) {
        c.rows[t] = 16; /* C: 16 tokens x 16 rows int32 */
        c.colsb[t] = 64;
    }
    c.rows[4] = 16; /* A: 16 tokens x sub bytes */
    c.colsb[4] = (uint16_t)sub;
    c.rows[6] = (uint8_t)(sub / 4); /* B: sub/4 rows x (16 rows x 4 bytes) */
    c.colsb[6] = 64;
    __asm__ volatile("ldtilecfg %0" ::"m"(c));
}

/* ============================================================================================
 * Weight side: transposes and the per-type layout
 * ============================================================================================ */

/* r[i] = dwords of row i -> r[j] = dword j of every row (lane i). */
INLINE void transpose16(__m512i r[16]) {
    __m512i t[16], u[16];
#pragma GCC unroll 16
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
#pragma GCC unroll 16
    for (int q = 0; q < 4; q++) {
        u[4 * q] = _mm512_unpacklo_epi64(t[4 * q], t[4 * q + 2]);
        u[4 * q + 1] = _mm512_unpackhi_epi64(t[4 * q], t[4 * q + 2]);
        u[4 * q + 2] = _mm512_unpacklo_epi64(t[4 * q + 1], t[4 * q + 3]);
        u[4 * q + 3] = _mm512_unpackhi_epi64(t[4 * q + 1], t[4 * q + 3]);
    }
    /* u[4q + c] holds, in 128-bit lane L, rows 4q..4q+3 of column 4L + c */
#pragma GCC unroll 16
    for (int c = 0; c < 4; c++) {
        __m512i v0 = _mm512_shuffle_i32x4(u[c], u[4 + c], 0x44);
        __m512i v1 = _mm512_shuffle_i32x4(u[c], u[4 + c], 0xee);
        __m512i v2 = _mm512_shuffle_i32x4(u[8 + c], u[12 + c], 0x44);
        __m512i v3 = _mm512_shuffle_i32x4(u[8 + c], u[12 + c], 0xee);
        r[c] = _mm512_shuffle_i32x4(v0, v2, 0x88);
        r[4 + c] = _mm512_shuffle_i32x4(v0, v2, 0xdd);
        r[8 + c] = _mm512_shuffle_i32x4(v1, v3, 0x88);
        r[12 + c] = _mm512_shuffle_i32x4(v1, v3, 0xdd);
    }
}

/* The 64 bytes at byte offset off of each of the 16 rows, transposed: out[j] lane i = dword j of
 * row i's 64 bytes. */
INLINE void load_transposed(const char *const *rows, size_t off, __m512i out[16]) {
#pragma GCC unroll 16
    for (int i = 0; i < 16; i++) out[i] = _mm512_loadu_si512(rows[i] + off);
    transpose16(out);
}

/* Dword at byte offset off of each row: lane i. */
INLINE __m512i gather_dword(const char *blk0, __m512i row_offsets, size_t off) {
    return _mm512_i32gather_epi32(row_offsets, blk0 + off, 1);
}

/* Per super-block and 16 rows: sub-block scales and the other per-row numbers, lane = row. */
struct amx_rows {
    int32_t sc[16][16]; /* [sub-block][row] scale (Q4_K/Q5_K/IQ4_XS: 8 sub-blocks; Q6_K: 16) */
    __m512i mn[4];      /* Q4_K/Q5_K: int16 pairs (min 2t, min 2t+1) per row */
    __m512i neg[8];     /* Q6_K: int16 pairs (-32 scale 2t, -32 scale 2t+1) per row */
    __m512 d, dmin;     /* super-scales */
};

/* B tiles of a super-block: [sub-block][k/4][row][4] bytes. */
struct amx_b {
    uint8_t b[16][8][64];
};

INLINE size_t kq_block_bytes(enum dtype type) {
    return type == DTYPE_Q4_K   ? sizeof(struct block_q4_k)
           : type == DTYPE_Q5_K ? sizeof(struct block_q5_k)
           : type == DTYPE_Q6_K ? sizeof(struct block_q6_k)
                                : sizeof(struct block_iq4_xs);
}

/* Bytes (2t, 2t+1) of each dword's 4 bytes as an int16 pair, for t = 0, 1. */
INLINE __m512i byte_pair16(__m512i v, int t, int is_signed) {
    __m512i lo = _mm512_srli_epi32(v, 16 * t);
    __m512i b0 = is_signed ? _mm512_srai_epi32(_mm512_slli_epi32(lo, 24), 24)
                           : _mm512_and_si512(lo, _mm512_set1_epi32(0xff));
    __m512i b1 = is_signed ? _mm512_srai_epi32(_mm512_slli_epi32(lo, 16), 24)
                           : _mm512_and_si512(_mm512_srli_epi32(lo, 8), _mm512_set1_epi32(0xff));
    return _mm512_or_si512(_mm512_and_si512(b0, _mm512_set1_epi32(0xffff)),
                           _mm512_slli_epi32(b1, 16));
}

INLINE void amx_rows_load(enum dtype type, const char *const *rows, __m512i offs, size_t blk,
                          struct amx_rows *r) {
    const char *base = rows[0] + blk;
    const __m512i m8 = _mm512_set1_epi32(0xff);
    if (type == DTYPE_Q4_K || type == DTYPE_Q5_K) {
        __m512i hd = gather_dword(base, offs, 0); /* d | dmin << 16 */
        __m512i w0 = gather_dword(base, offs, 4), w1 = gather_dword(base, offs, 8);
        __m512i w2 = gather_dword(base, offs, 12);
        r->d = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(hd));
        r->dmin = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(hd, 16)));
        const __m512i m6 = _mm512_set1_epi32(0x3f3f3f3f), m4 = _mm512_set1_epi32(0x0f0f0f0f);
        const __m512i m2 = _mm512_set1_epi32(0x03030303);
        __m512i sc_lo = _mm512_and_si512(w0, m6), mn_lo = _mm512_and_si512(w1, m6);
        __m512i sc_hi =
            _mm512_or_si512(_mm512_and_si512(w2, m4),
                            _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(w0, 6), m2), 4));
        __m512i mn_hi =
            _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(w2, 4), m4),
                            _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(w1, 6), m2), 4));
#pragma GCC unroll 8
        for (int s = 0; s < 4; s++) {
            _mm512_storeu_si512(r->sc[s], _mm512_and_si512(_mm512_srli_epi32(sc_lo, 8 * s), m8));
            _mm512_storeu_si512(r->sc[4 + s],
                                _mm512_and_si512(_mm512_srli_epi32(sc_hi, 8 * s), m8));
        }
        r->mn[0] = byte_pair16(mn_lo, 0, 0);
        r->mn[1] = byte_pair16(mn_lo, 1, 0);
        r->mn[2] = byte_pair16(mn_hi, 0, 0);
        r->mn[3] = byte_pair16(mn_hi, 1, 0);
    } else if (type == DTYPE_Q6_K) {
        __m512i hd = gather_dword(base, offs, 208);
        r->d = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(hd));
        r->dmin = _mm512_setzero_ps();
#pragma GCC unroll 8
        for (int q = 0; q < 4; q++) { /* scales 4q .. 4q+3 */
            __m512i w = gather_dword(base, offs, 192 + 4 * (size_t)q);
#pragma GCC unroll 8
            for (int b = 0; b < 4; b++)
                _mm512_storeu_si512(r->sc[4 * q + b],
                                    _mm512_srai_epi32(_mm512_slli_epi32(w, 24 - 8 * b), 24));
            /* -32 * scale as int16 pairs (2t, 2t+1), t = 2q, 2q+1 */
            for (int t = 0; t < 2; t++) {
                __m512i p = byte_pair16(w, t, 1);
                r->neg[2 * q + t] =
                    _mm512_sub_epi16(_mm512_setzero_si512(), _mm512_slli_epi16(p, 5));
            }
        }
    } else {                                      /* IQ4_XS */
        __m512i hd = gather_dword(base, offs, 0); /* d | scales_h << 16 */
        __m512i sl = gather_dword(base, offs, 4);
        r->d = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(hd));
        r->dmin = _mm512_setzero_ps();
        __m512i sh = _mm512_srli_epi32(hd, 16);
#pragma GCC unroll 8
        for (int ib = 0; ib < 8; ib++) {
            __m512i lo = _mm512_and_si512(_mm512_srli_epi32(sl, 4 * ib), _mm512_set1_epi32(0xf));
            __m512i hi = _mm512_and_si512(_mm512_srli_epi32(sh, 2 * ib), _mm512_set1_epi32(3));
            __m512i ls = _mm512_or_si512(lo, _mm512_slli_epi32(hi, 4));
            _mm512_storeu_si512(r->sc[ib], _mm512_sub_epi32(ls, _mm512_set1_epi32(32)));
        }
    }
}

/* The B tiles of one super-block of 16 rows. */
INLINE void amx_b_build(enum dtype type, const char *const *rows, size_t blk, struct amx_b *b) {
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    __m512i v[16];
    if (type == DTYPE_Q4_K || type == DTYPE_Q5_K) {
        size_t qs = type == DTYPE_Q4_K ? 16 : 48;
        __m512i h[16];
        if (type == DTYPE_Q5_K) load_transposed(rows, blk + 16, h); /* qh: dwords 0..7 */
        for (int half = 0; half < 2; half++) {                      /* chunks 2 half, 2 half + 1 */
            load_transposed(rows, blk + qs + 64 * (size_t)half, v);
#pragma GCC unroll 16
            for (int j = 0; j < 16; j++) { /* chunk c = 2 half + j / 8, k/4 = j % 8 */
                int c = 2 * half + j / 8, k4 = j % 8;
                __m512i lo = _mm512_and_si512(v[j], m4);
                __m512i hi = _mm512_and_si512(_mm512_srli_epi32(v[j], 4), m4);
                if (type == DTYPE_Q5_K) {
                    __m512i qh = h[k4];
                    const __m512i one = _mm512_set1_epi8(1);
                    lo = _mm512_or_si512(
                        lo,
                        _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(qh, 2 * c), one), 4));
                    hi = _mm512_or_si512(
                        hi, _mm512_slli_epi32(
                                _mm512_and_si512(_mm512_srli_epi32(qh, 2 * c + 1), one), 4));
                }
                _mm512_storeu_si512(b->b[2 * c][k4], lo);
                _mm512_storeu_si512(b->b[2 * c + 1][k4], hi);
            }
        }
    } else if (type == DTYPE_Q6_K) {
        /* sub-block u = 8h + 2kq + p (16 values): low4 = nibble kq/2 of ql dword
         * 16h + 8(kq%2) + 4p + k4, high2 = bits 2kq of qh dword 8h + 4p + k4 */
        __m512i hb[16];
        load_transposed(rows, blk + 128, hb); /* qh: dwords 8h .. 8h+7 for half h */
        for (int h = 0; h < 2; h++) {
            load_transposed(rows, blk + 64 * (size_t)h, v); /* ql of half h */
#pragma GCC unroll 16
            for (int kq = 0; kq < 4; kq++)
#pragma GCC unroll 16
                for (int p = 0; p < 2; p++)
#pragma GCC unroll 16
                    for (int k4 = 0; k4 < 4; k4++) {
                        __m512i l = v[8 * (kq % 2) + 4 * p + k4];
                        l = _mm512_and_si512(kq / 2 ? _mm512_srli_epi32(l, 4) : l, m4);
                        __m512i q = hb[8 * h + 4 * p + k4];
                        q = _mm512_and_si512(_mm512_srli_epi32(q, 2 * kq), _mm512_set1_epi8(3));
                        _mm512_storeu_si512(b->b[8 * h + 2 * kq + p][k4],
                                            _mm512_or_si512(l, _mm512_slli_epi32(q, 4)));
                    }
        }
    } else { /* IQ4_XS: sub-block ib = qs[16ib .. 16ib+15]: low nibbles, then high nibbles */
        const __m512i table =
            _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)kvalues_iq4nl));
        for (int half = 0; half < 2; half++) {
            load_transposed(rows, blk + 8 + 64 * (size_t)half, v);
#pragma GCC unroll 16
            for (int j = 0; j < 16; j++) { /* sub-block 4 half + j / 4, qs dword j % 4 */
                int ib = 4 * half + j / 4, d4 = j % 4;
                __m512i lo = _mm512_and_si512(v[j], m4);
                __m512i hi = _mm512_and_si512(_mm512_srli_epi32(v[j], 4), m4);
                _mm512_storeu_si512(b->b[ib][d4], _mm512_shuffle_epi8(table, lo));
                _mm512_storeu_si512(b->b[ib][4 + d4], _mm512_shuffle_epi8(table, hi));
            }
        }
    }
}

/* ============================================================================================
 * The tile loop
 * ============================================================================================ */

/* C tiles of sub-blocks s0 .. s0+3 against the A rows at a_base (+ sub bytes per sub-block). */
INLINE void amx_four(enum dtype type, const char *a_base, size_t x_stride, const struct amx_b *b,
                     int s0, int32_t c[4][16][16]) {
    int sub = type == DTYPE_Q6_K ? 16 : 32;
#define AMX_STEP(T)                                                                                \
    do {                                                                                           \
        TILE_ZERO(T);                                                                              \
        TILE_LOADD(4, a_base + (size_t)(s0 + (T)) * (size_t)sub, x_stride);                        \
        TILE_LOADD(6, b->b[s0 + (T)], 64);                                                         \
        if (type == DTYPE_IQ4_XS)                                                                  \
            TILE_DPBSSD(T, 4, 6);                                                                  \
        else                                                                                       \
            TILE_DPBSUD(T, 4, 6);                                                                  \
    } while (0)
    AMX_STEP(0);
    AMX_STEP(1);
    AMX_STEP(2);
    AMX_STEP(3);
#undef AMX_STEP
    TILE_STORED(0, c[0], 64);
    TILE_STORED(1, c[1], 64);
    TILE_STORED(2, c[2], 64);
    TILE_STORED(3, c[3], 64);
}

enum { AMX_MAX_GROUPS = 16 }; /* token groups of 16 per call (the B tiles are built once) */

/* ---- Q4_K with the sub-block scales inside the B tiles ----
 * The 6-bit scale splits as sc = lo + 8 hi (3 bits each), and q * lo, q * hi (at most 15 * 7 =
 * 105) are still unsigned bytes. So B_lo = q * lo and B_hi = q * hi per sub-block, and two
 * accumulating TDPBSUDs over the super-block (four steps of K = 64) give, per token and row,
 * C_lo = sum a q lo and C_hi = sum a q hi: isum = C_lo + 8 C_hi exactly, with no per-sub-block
 * int32 multiplies after the tiles (the other path's cost). The products come from one table
 * lookup per 64 bytes (vpermi2b on 16 * factor + q, AVX512-VBMI). */
#define MUL16(f)                                                                                   \
    0 * (f), 1 * (f), 2 * (f), 3 * (f), 4 * (f), 5 * (f), 6 * (f), 7 * (f), 8 * (f), 9 * (f),      \
        10 * (f), 11 * (f), 12 * (f), 13 * (f), 14 * (f), 15 * (f)
static const uint8_t q4_times_factor[128] __attribute__((aligned(64))) = {
    MUL16(0), MUL16(1), MUL16(2), MUL16(3), MUL16(4), MUL16(5), MUL16(6), MUL16(7)};
#undef MUL16

struct amx_b2 {
    uint8_t lo[8][8][64], hi[8][8][64]; /* [sub-block][k/4][row][4]: q * lo, q * hi */
};

/* 16 * f in every byte of dword n, f = the 3-bit piece (shift 0: lo, 3: hi) of row n's scale. */
INLINE __m512i scale_index(const int32_t *sc, int shift) {
    __m512i f = _mm512_slli_epi32(
        _mm512_and_si512(_mm512_srli_epi32(_mm512_loadu_si512(sc), shift), _mm512_set1_epi32(7)),
        4);
    return _mm512_mullo_epi32(f, _mm512_set1_epi32(0x01010101));
}

INLINE void amx_b_build_q4k(const char *const *rows, size_t blk, const struct amx_rows *rd,
                            struct amx_b2 *b) {
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    const __m512i t0 = _mm512_load_si512(q4_times_factor),
                  t1 = _mm512_load_si512(q4_times_factor + 64);
    __m512i il[8], ih[8], v[16];
    for (int s = 0; s < 8; s++) {
        il[s] = scale_index(rd->sc[s], 0);
        ih[s] = scale_index(rd->sc[s], 3);
    }
    for (int half = 0; half < 2; half++) { /* chunks 2 half, 2 half + 1 */
        load_transposed(rows, blk + 16 + 64 * (size_t)half, v);
#pragma GCC unroll 16
        for (int j = 0; j < 16; j++) { /* chunk c = 2 half + j / 8, k/4 = j % 8 */
            int c = 2 * half + j / 8, k4 = j % 8;
            __m512i q0 = _mm512_and_si512(v[j], m4);                       /* sub-block 2c */
            __m512i q1 = _mm512_and_si512(_mm512_srli_epi32(v[j], 4), m4); /* 2c + 1 */
            _mm512_storeu_si512(b->lo[2 * c][k4],
                                _mm512_permutex2var_epi8(t0, _mm512_or_si512(q0, il[2 * c]), t1));
            _mm512_storeu_si512(b->hi[2 * c][k4],
                                _mm512_permutex2var_epi8(t0, _mm512_or_si512(q0, ih[2 * c]), t1));
            _mm512_storeu_si512(
                b->lo[2 * c + 1][k4],
                _mm512_permutex2var_epi8(t0, _mm512_or_si512(q1, il[2 * c + 1]), t1));
            _mm512_storeu_si512(
                b->hi[2 * c + 1][k4],
                _mm512_permutex2var_epi8(t0, _mm512_or_si512(q1, ih[2 * c + 1]), t1));
        }
    }
}

/* c[g][0] = C_lo, c[g][1] = C_hi ([token][row]) of the n_groups groups of 16 tokens whose Q8_K
 * quants start at a_base + g * g_stride (rows x_stride apart). Two groups go through the tiles
 * together: four accumulator chains in flight (tmm0-3) against the same two B tiles. */
INLINE void amx_q4k_tiles(const char *a_base, size_t x_stride, size_t g_stride, int n_groups,
                          const struct amx_b2 *b, int32_t c[][2][16][16]) {
    int g = 0;
    for (; g + 2 <= n_groups; g += 2) {
        const char *a0 = a_base + (size_t)g * g_stride, *a1 = a0 + g_stride;
        TILE_ZERO(0);
        TILE_ZERO(1);
        TILE_ZERO(2);
        TILE_ZERO(3);
#define AMX_Q4K_STEP2(T)                                                                           \
    do {                                                                                           \
        TILE_LOADD(6, b->lo[2 * (T)], 64);                                                         \
        TILE_LOADD(7, b->hi[2 * (T)], 64);                                                         \
        TILE_LOADD(4, a0 + 64 * (T), x_stride);                                                    \
        TILE_LOADD(5, a1 + 64 * (T), x_stride);                                                    \
        TILE_DPBSUD(0, 4, 6);                                                                      \
        TILE_DPBSUD(1, 4, 7);                                                                      \
        TILE_DPBSUD(2, 5, 6);                                                                      \
        TILE_DPBSUD(3, 5, 7);                                                                      \
    } while (0)
        AMX_Q4K_STEP2(0);
        AMX_Q4K_STEP2(1);
        AMX_Q4K_STEP2(2);
        AMX_Q4K_STEP2(3);
#undef AMX_Q4K_STEP2
        TILE_STORED(0, c[g][0], 64);
        TILE_STORED(1, c[g][1], 64);
        TILE_STORED(2, c[g + 1][0], 64);
        TILE_STORED(3, c[g + 1][1], 64);
    }
    if (g < n_groups) {
        const char *a0 = a_base + (size_t)g * g_stride;
        TILE_ZERO(0);
        TILE_ZERO(1);
#define AMX_Q4K_STEP(T)                                                                            \
    do {                                                                                           \
        TILE_LOADD(6, b->lo[2 * (T)], 64);                                                         \
        TILE_LOADD(7, b->hi[2 * (T)], 64);                                                         \
        TILE_LOADD(4, a0 + 64 * (T), x_stride);                                                    \
        TILE_DPBSUD(0, 4, 6);                                                                      \
        TILE_DPBSUD(1, 4, 7);                                                                      \
    } while (0)
        AMX_Q4K_STEP(0);
        AMX_Q4K_STEP(1);
        AMX_Q4K_STEP(2);
        AMX_Q4K_STEP(3);
#undef AMX_Q4K_STEP
        TILE_STORED(0, c[g][0], 64);
        TILE_STORED(1, c[g][1], 64);
    }
}

INLINE void amx_kq(enum dtype type, int q4k_scaled, const void *w, size_t w_stride, const void *x,
                   size_t x_stride, int64_t k, float *out, size_t out_stride, int n_w,
                   int n_groups) {
    CHECK(k % QK_K == 0 && n_w >= 1 && n_w <= 16 && n_groups >= 1 && n_groups <= AMX_MAX_GROUPS);
    CHECK((size_t)(n_w - 1) * w_stride < 0x7fffffff);
    const size_t wb = kq_block_bytes(type);
    const int n_sub = type == DTYPE_Q6_K ? 16 : 8;
    const char *rows[16];
    int32_t offs_arr[16];
    for (int i = 0; i < 16; i++) {
        rows[i] = (const char *)w + (size_t)(i < n_w ? i : n_w - 1) * w_stride;
        offs_arr[i] = (int32_t)(rows[i] - rows[0]);
    }
    const __m512i offs = _mm512_loadu_si512(offs_arr);
    const int scaled = type == DTYPE_Q4_K && q4k_scaled;
    struct amx_rows rd;
    struct amx_b bt;
    struct amx_b2 bt2;
    int32_t cq[AMX_MAX_GROUPS][2][16][16] __attribute__((aligned(64)));
    int32_t c[4][16][16];
    float res[AMX_MAX_GROUPS][16][16];
    memset(res, 0, sizeof(res));
    if (scaled)
        tiles_configure_k64();
    else
        tiles_configure(type == DTYPE_Q6_K ? 16 : 32);
    for (int64_t ib = 0; ib < k / QK_K; ib++) {
        size_t blk = (size_t)ib * wb;
        amx_rows_load(type, rows, offs, blk, &rd);
        if (scaled)
            amx_b_build_q4k(rows, blk, &rd, &bt2);
        else
            amx_b_build(type, rows, blk, &bt);
        if (scaled)
            amx_q4k_tiles((const char *)x + (size_t)ib * sizeof(struct block_q8_k) + 4, x_stride,
                          16 * x_stride, n_groups, &bt2, cq);
        for (int g = 0; g < n_groups; g++) {
            const char *xg = (const char *)x + (size_t)(16 * g) * x_stride;
            const char *a_base = xg + (size_t)ib * sizeof(struct block_q8_k) + 4; /* qs */
            __m512i isum[16];
#pragma GCC unroll 16
            for (int m = 0; m < 16; m++)
                isum[m] =
                    scaled ? _mm512_add_epi32(_mm512_load_si512(cq[g][0][m]),
                                              _mm512_slli_epi32(_mm512_load_si512(cq[g][1][m]), 3))
                           : _mm512_setzero_si512();
            for (int s0 = 0; s0 < n_sub && !scaled; s0 += 4) {
                amx_four(type, a_base, x_stride, &bt, s0, c);
#pragma GCC unroll 4
                for (int t = 0; t < 4; t++) {
                    __m512i sc = _mm512_loadu_si512(rd.sc[s0 + t]);
#pragma GCC unroll 16
                    for (int m = 0; m < 16; m++)
                        isum[m] = _mm512_add_epi32(
                            isum[m], _mm512_mullo_epi32(_mm512_loadu_si512(c[t][m]), sc));
                }
            }
            /* per token: offsets, mins and the f32 step, 16 rows per vector */
#pragma GCC unroll 16
            for (int m = 0; m < 16; m++) {
                const struct block_q8_k *y =
                    (const struct block_q8_k *)(xg + (size_t)m * x_stride) + ib;
                __m512 dy = _mm512_set1_ps(y->d);
                if (type == DTYPE_Q6_K)
                    for (int t = 0; t < 8; t++) {
                        int32_t pair;
                        memcpy(&pair, &y->bsums[2 * t], 4);
                        isum[m] = _mm512_dpwssd_epi32(isum[m], rd.neg[t], _mm512_set1_epi32(pair));
                    }
                __m512 r = _mm512_loadu_ps(res[g][m]);
                __m512 t1 = _mm512_mul_ps(_mm512_mul_ps(rd.d, dy), _mm512_cvtepi32_ps(isum[m]));
                if (type == DTYPE_Q4_K || type == DTYPE_Q5_K) {
                    __m256i bs = _mm256_loadu_si256((const __m256i *)y->bsums);
                    __m256i s2 = _mm256_madd_epi16(bs, _mm256_set1_epi16(1));
                    int32_t bp[4]; /* int16 pairs (2t, 2t+1) of the 8 sums of 32 */
                    _mm_storeu_si128((__m128i *)bp, _mm256_cvtepi32_epi16(s2));
                    __m512i mi = _mm512_setzero_si512();
                    for (int t = 0; t < 4; t++)
                        mi = _mm512_dpwssd_epi32(mi, rd.mn[t], _mm512_set1_epi32(bp[t]));
                    t1 = _mm512_sub_ps(
                        t1, _mm512_mul_ps(_mm512_mul_ps(rd.dmin, dy), _mm512_cvtepi32_ps(mi)));
                }
                _mm512_storeu_ps(res[g][m], _mm512_add_ps(r, t1));
            }
        }
    }
    __mmask16 keep = (__mmask16)((1u << n_w) - 1);
    for (int g = 0; g < n_groups; g++)
        for (int m = 0; m < 16; m++)
            _mm512_mask_storeu_ps(out + (size_t)(16 * g + m) * out_stride, keep,
                                  _mm512_loadu_ps(res[g][m]));
    __asm__ volatile("tilerelease" ::);
}

/* ============================================================================================
 * Q8_0 weights in llama.cpp's AMX order (q8_0_dot_q8_0_blk_ref: exact int32 block sums, then
 * one FMA per block)
 * One TDPBSSD per block multiplies 16 tokens (A: the block's 32 activation bytes, in place) by 16
 * weight rows (B: 8 x 64 bytes, dword t of row n at B[t][4n .. 4n+3], from a dword transpose of
 * two blocks of the 16 rows) into the 16 x 16 block sums; per token the f32 step
 * acc = fma((float)isum, dw * dx, acc) runs on 16 rows per vector. The B tiles and the weight
 * scales of a chunk of blocks are built once for all the token groups; four blocks are in flight
 * in tmm0-3 before their sums are read back.
 * ============================================================================================ */

enum { Q8_CHUNK = 16 }; /* blocks per chunk: 8 KiB of B tiles */

INLINE void q8_b_build(const char *const *rows, __m512i offs, int64_t b0, int n,
                       uint8_t b[Q8_CHUNK][8][64], float dw[Q8_CHUNK][16]) {
    const size_t bb = sizeof(struct block_q8_0);
    for (int c = 0; c < n; c += 2) {
        size_t o0 = (size_t)(b0 + c) * bb + 2, o1 = c + 1 < n ? o0 + bb : o0;
        __m512i v[16];
#pragma GCC unroll 16
        for (int i = 0; i < 16; i++)
            v[i] = _mm512_inserti64x4(
                _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(rows[i] + o0))),
                _mm256_loadu_si256((const __m256i *)(rows[i] + o1)), 1);
        transpose16(v);
#pragma GCC unroll 8
        for (int t = 0; t < 8; t++) {
            _mm512_storeu_si512(b[c][t], v[t]);
            if (c + 1 < n) _mm512_storeu_si512(b[c + 1][t], v[8 + t]);
        }
    }
    for (int c = 0; c < n; c++) {
        __m512i hd = gather_dword(rows[0], offs, (size_t)(b0 + c) * bb);
        _mm512_storeu_ps(dw[c], _mm512_cvtph_ps(_mm512_cvtepi32_epi16(hd)));
    }
}

/* The f32 step of one block for the 16 tokens: sums c[token][row], dx[token][block]. */
INLINE void q8_f32_step(__m512 acc[16], const int32_t c[16][16], const float *dw,
                        const float (*dx)[Q8_CHUNK], int b) {
    __m512 d = _mm512_loadu_ps(dw);
#pragma GCC unroll 16
    for (int m = 0; m < 16; m++)
        acc[m] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_loadu_si512(c[m])),
                                 _mm512_mul_ps(d, _mm512_set1_ps(dx[m][b])), acc[m]);
}

void cpu_amx_q8_0_tiles(const void *w, size_t w_stride, const void *x, size_t x_stride, int64_t k,
                        float *out, size_t out_stride, int n_w, int n_groups) {
    CHECK(k % QK8_0 == 0 && n_w >= 1 && n_w <= 16 && n_groups >= 1 && n_groups <= AMX_MAX_GROUPS);
    CHECK((size_t)(n_w - 1) * w_stride < 0x7fffffff);
    const size_t bb = sizeof(struct block_q8_0); /* activation blocks */
    const int64_t nb = k / QK8_0;
    const char *rows[16];
    for (int i = 0; i < 16; i++)
        rows[i] = (const char *)w + (size_t)(i < n_w ? i : n_w - 1) * w_stride;
    const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512i offs = _mm512_mullo_epi32(_mm512_min_epi32(iota, _mm512_set1_epi32(n_w - 1)),
                                            _mm512_set1_epi32((int)w_stride));
    const __m512i boffs = _mm512_mullo_epi32(iota, _mm512_set1_epi32((int)bb));
    uint8_t bt[Q8_CHUNK][8][64] __attribute__((aligned(64)));
    float dw[Q8_CHUNK][16], dx[16][Q8_CHUNK];
    int32_t c[4][16][16] __attribute__((aligned(64)));
    float res[AMX_MAX_GROUPS][16][16];
    tiles_configure(32);
    for (int64_t b0 = 0; b0 < nb; b0 += Q8_CHUNK) {
        int n = nb - b0 < Q8_CHUNK ? (int)(nb - b0) : Q8_CHUNK;
        q8_b_build(rows, offs, b0, n, bt, dw);
        for (int g = 0; g < n_groups; g++) {
            const char *xg = (const char *)x + (size_t)(16 * g) * x_stride;
            const char *a_base = xg + (size_t)b0 * bb + 2; /* qs of block b0, token 0 */
            __mmask16 nm = (__mmask16)((1u << n) - 1);
            for (int m = 0; m < 16; m++) {
                __m512i hd =
                    _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), nm, boffs,
                                                xg + (size_t)m * x_stride + (size_t)b0 * bb, 1);
                _mm512_storeu_ps(dx[m], _mm512_cvtph_ps(_mm512_cvtepi32_epi16(hd)));
            }
            __m512 acc[16];
#pragma GCC unroll 16
            for (int m = 0; m < 16; m++)
                acc[m] = b0 ? _mm512_loadu_ps(res[g][m]) : _mm512_setzero_ps();
            int b = 0;
            for (; b + 4 <= n; b += 4) {
#define Q8_STEP(T)                                                                                 \
    do {                                                                                           \
        TILE_ZERO(T);                                                                              \
        TILE_LOADD(4, a_base + (size_t)(b + (T)) * bb, x_stride);                                  \
        TILE_LOADD(6, bt[b + (T)], 64);                                                            \
        TILE_DPBSSD(T, 4, 6);                                                                      \
    } while (0)
                Q8_STEP(0);
                Q8_STEP(1);
                Q8_STEP(2);
                Q8_STEP(3);
                TILE_STORED(0, c[0], 64);
                TILE_STORED(1, c[1], 64);
                TILE_STORED(2, c[2], 64);
                TILE_STORED(3, c[3], 64);
                for (int t = 0; t < 4; t++) q8_f32_step(acc, c[t], dw[b + t], dx, b + t);
            }
            for (; b < n; b++) {
                Q8_STEP(0);
                TILE_STORED(0, c[0], 64);
                q8_f32_step(acc, c[0], dw[b], dx, b);
            }
#undef Q8_STEP
#pragma GCC unroll 16
            for (int m = 0; m < 16; m++) _mm512_storeu_ps(res[g][m], acc[m]);
        }
    }
    __mmask16 keep = (__mmask16)((1u << n_w) - 1);
    for (int g = 0; g < n_groups; g++)
        for (int m = 0; m < 16; m++)
            _mm512_mask_storeu_ps(out + (size_t)(16 * g + m) * out_stride, keep,
                                  _mm512_loadu_ps(res[g][m]));
    __asm__ volatile("tilerelease" ::);
}

void cpu_amx_kq_tiles(enum dtype type, int q4k_scaled, const void *w, size_t w_stride,
                      const void *x, size_t x_stride, int64_t k, float *out, size_t out_stride,
                      int n_w, int n_groups) {
    switch (type) {
    case DTYPE_Q4_K:
        if (q4k_scaled)
            amx_kq(DTYPE_Q4_K, 1, w, w_stride, x, x_stride, k, out, out_stride, n_w, n_groups);
        else
            amx_kq(DTYPE_Q4_K, 0, w, w_stride, x, x_stride, k, out, out_stride, n_w, n_groups);
        break;
    case DTYPE_Q5_K:
        amx_kq(DTYPE_Q5_K, 0, w, w_stride, x, x_stride, k, out, out_stride, n_w, n_groups);
        break;
    case DTYPE_Q6_K:
        amx_kq(DTYPE_Q6_K, 0, w, w_stride, x, x_stride, k, out, out_stride, n_w, n_groups);
        break;
    case DTYPE_IQ4_XS:
        amx_kq(DTYPE_IQ4_XS, 0, w, w_stride, x, x_stride, k, out, out_stride, n_w, n_groups);
        break;
    default:
        CHECK(!"cpu_amx_kq_tiles: unsupported type");
    }
}
