/* cpu_kernels.h: the CPU kernel table, one per instruction set.
 *
 * Each ISA file (kernels_scalar.c, kernels_avx2.c, kernels_avx512.c, later kernels_neon.c) fills
 * a struct cpu_kernels. Entries it leaves NULL fall back to the scalar table, whose entries come
 * from the reference functions in src/tensor (dtype_traits) and the attention references below.
 * The table is chosen once at start-up from CPUID, or forced with HEARTH_CPU=scalar|avx2|avx512;
 * it is the only global mutable state of the backend. Every SIMD entry has a test against its
 * scalar twin (tests/test_kernels.c). Kernels keep no state, allocate nothing and may be called
 * from any thread.
 *
 * Numerics: an entry computes exactly what its scalar twin computes, bit for bit, wherever the
 * reference fixes a summation order (F32/F16/BF16: 16 FMA lanes; Q8_0/Q4_0/IQ4_NL: 8 lanes of
 * 4-product integer sums, or, for Q8_0 on AMX CPUs, q8_0_blk_tile's exact block sums as
 * llama.cpp does there; K-quants, IQ4_XS: exact integer sums per super-block; the attention
 * helpers, the tiled attention's FMA chains), and gemm_tile[t] equals vec_dot[t] bit for bit on
 * every element.
 */
#ifndef HEARTH_CPU_KERNELS_H
#define HEARTH_CPU_KERNELS_H

#include "../../tensor/dtype.h"

#include <stddef.h>
#include <stdint.h>

/* Dot product of a weight row (dtype d) with an activation row in d's vec_dot_type. */
typedef float (*cpu_vec_dot_fn)(const void *w, const void *x, int64_t n);
/* Quantize / convert an f32 activation row to a vec_dot_type. */
typedef void (*cpu_from_float_fn)(const float *x, void *y, int64_t n);
/* Dequantize a weight row to f32. */
typedef void (*cpu_to_float_fn)(const void *x, float *y, int64_t n);

/* A tile of dot products, the kernel of prompt processing: for i < n_w, j < n_x
 *   out[j * out_stride + i] = vec_dot(w + i * w_stride, x + j * x_stride, k)
 * bit for bit. w: n_w weight rows of k elements in the weight dtype; x: n_x activation rows in
 * its vec_dot_type (as from_float wrote them); strides in bytes. out is token-major like the
 * backend's y[token * n_out + row]; out_stride in floats. 1 <= n_w <= gemm_tile_w[dtype] and
 * 1 <= n_x <= gemm_tile_x[dtype]; any smaller tile is allowed (edges). Each weight block is
 * loaded once for the n_x activation rows and each activation block once for the n_w weight
 * rows. n_x == 1 is the decode case: several weight rows against one activation row, which
 * also hides the latency of vec_dot's single accumulator chain. */
typedef void (*cpu_gemm_tile_fn)(const void *w, size_t w_stride, const void *x, size_t x_stride,
                                 int64_t k, float *out, size_t out_stride, int n_w, int n_x);

/* Attention over an F16 KV cache, llama.cpp's flash-attention arithmetic (docs/MODELS.md):
 *   attn_dot_f16(q, k, n)       score = sum q[i] * k[i] over f16 inputs, in ggml's AVX-512
 *                               ggml_vec_dot_f16 order (attn_dot_f16_ref)
 *   attn_mad_f16(acc, v, s, n)  acc[i] = f16(fma(v[i], s, acc[i]))   (ggml_vec_mad_f16)
 *   attn_scale_f16(acc, s, n)   acc[i] = f16(acc[i] * s)             (ggml_vec_scale_f16)
 * Vectors are raw IEEE binary16 bits; any n >= 0, any alignment. */
typedef float (*cpu_attn_dot_f16_fn)(const uint16_t *q, const uint16_t *k, int64_t n);
typedef void (*cpu_attn_mad_f16_fn)(uint16_t *acc, const uint16_t *v, float s, int64_t n);
typedef void (*cpu_attn_scale_f16_fn)(uint16_t *acc, float s, int64_t n);
/* out[j] = attn_dot_f16(q, k + j * k_stride bytes, n) for j < n_k, bit for bit: one query against
 * many keys (the rows of a KV cache), without a call and a q conversion per key. */
typedef void (*cpu_attn_dots_f16_fn)(const uint16_t *q, const uint16_t *k, size_t k_stride,
                                     int64_t n, float *out, int64_t n_k);

/* Elementwise ops with llama.cpp's x86 arithmetic (AVX-512 build), references in kernels_scalar.c:
 *   swiglu(g, u, out, n)           out[i] = g[i] / (1 + expf_ggml(-g[i])) * u[i]  (swiglu_ref)
 *   silu(x, out, n)                out[i] = x[i] / (1 + expf_ggml(-x[i]))          (silu_ref)
 *   rope_pairs(x, cs, sn, n, half) rotates n pairs (x[i*step], x[i*step + half]) with
 *                                  step = half ? 1 : 2 (NEOX when half > 0, else adjacent
 *                                  pairs): y0 = fmaf(x0, c, -(x1 * s)), y1 = fmaf(x0, s, x1 * c),
 *                                  the contraction gcc makes of ggml's x0*c - x1*s, x0*s + x1*c. */
typedef void (*cpu_swiglu_fn)(const float *gate, const float *up, float *out, int64_t n);
typedef void (*cpu_silu_fn)(const float *x, float *out, int64_t n);
typedef void (*cpu_rope_pairs_fn)(float *x, const float *cs, const float *sn, int n, int half);
/* The whole online-softmax update of an F16-cache attention for a group of rows over a block of
 * positions (the heads of a GQA group, neighbouring tokens, other KV heads of one token). For
 * each row r, independently, and each position j < n_pos in order, with kj = k[r] + j *
 * kv_stride bytes and vj = v[r] + j * kv_stride bytes:
 *   s = attn_dot_f16(q[r], kj, n) * scale
 *   s > m[r]:  ms = attn_exp(m[r] - s), m[r] = s, attn_scale_f16(acc[r], ms), vs = 1
 *   otherwise: ms = 1, vs = attn_exp(s - m[r])
 *   attn_mad_f16(acc[r], vj, vs), l[r] = l[r] * ms + vs
 * Each row's result depends only on its own query and state (never on the other rows or on how
 * the positions are cut into blocks), and every table computes attn_rows_f16_ref's bits. */
#define CPU_ATTN_ROWS 8 /* most rows of one attn_rows_f16 call */
struct cpu_attn_rows_f16 {
    const uint16_t *k[CPU_ATTN_ROWS]; /* each row's first key of the block (n elements); rows
                                         of one KV head come together and share it */
    const uint16_t *v[CPU_ATTN_ROWS]; /* each row's first value, likewise */
    size_t kv_stride;                 /* bytes from one position to the next (k and v) */
    int64_t n;                        /* head_dim, >= 1 */
    int n_pos;                        /* positions in the block, >= 0; every row sees all */
    int n_rows;                       /* 1..CPU_ATTN_ROWS */
    float scale;                      /* score scale */
    const uint16_t *q[CPU_ATTN_ROWS]; /* [n] f16 query of each row */
    uint16_t *acc[CPU_ATTN_ROWS];     /* [n] f16 running value sum, in and out */
    float m[CPU_ATTN_ROWS], l[CPU_ATTN_ROWS]; /* running max and sum, in and out */
};
typedef void (*cpu_attn_rows_f16_fn)(struct cpu_attn_rows_f16 *a);

/* One token of the gated delta rule on one value head's state S ([dv][dk], row jv = S[:, jv]),
 * row by row (rows are independent, so ggml's four passes fuse without changing any element's
 * operations); for each jv < dv, with s = S + jv * dk:
 *   s[i] *= decay;  d = (v[jv] - f32_id_dot_ref(s, kn, dk)) * beta;
 *   s[i] = fmaf(kn[i], d, s[i]) over whole blocks of 64, s[i] += kn[i] * d on the tail
 *   (ggml_vec_mad_f32);  out[jv] = f32_id_dot_ref(s, qn, dk) * scale.
 * The dots are ggml_vec_dot_f32's, as for F32 experts (f32_id_dot_ref). */
typedef void (*cpu_gdn_rows_fn)(float *S, int dk, int dv, const float *kn, const float *qn,
                                const float *v, float beta, float decay, float scale, float *out);

/* llama.cpp's tiled flash attention (ggml_compute_forward_flash_attn_ext_tiled, taken when a
 * batch has >= 64 query rows and an F16/F32 cache): queries stay F32, keys and values are widened
 * to F32 64 positions at a time, scores and the value sums are F32 matrix products in which every
 * element is one chain of FMAs in index order (ggml's simd_gemm), the running sum is F32.
 *
 * f32_gemm_seq: C[i][j] = fma(A[i][K-1], B[K-1][j], ... fma(A[i][0], B[0][j], C[i][j])) for
 *   i < M, j < N: C at C + i * ldc + j, A[i][k] at A + i * a_si + k * a_sk, B[k][j] at
 *   B + k * ldb + j. Any M, K, N >= 0. Each element's chain is the same whatever the tiling. */
typedef void (*cpu_f32_gemm_seq_fn)(float *C, size_t ldc, const float *A, size_t a_si, size_t a_sk,
                                    const float *B, size_t ldb, int M, int K, int N);
/* The softmax step of one 64-position tile for CPU_ATTN_TILE query rows ("lanes"), in the
 * transposed layout kq[j * CPU_ATTN_TILE + r] (position j of the tile, query row r). On entry
 * rows j < n_kv hold the raw scores q_r . k_j (f32_gemm_seq); rows past n_kv are not read. For
 * each lane r, as llama.cpp does for a query row (ggml_vec_soft_max_f32, AVX-512 build):
 *   s_j = kq * scale where kv0 + j <= qpos[r] and j < n_kv, else -inf;  t = max_j s_j;
 *   t == -inf: the row is skipped (p_j = 0; m, l, acc untouched);  otherwise
 *   M = fmaxf(m[r], t); M > m[r]: ms = attn_exp(m[r] - M), acc[r][:] *= ms, l[r] *= ms;  m[r] = M;
 *   p_j = expf_ggml(s_j - M); each block of 16 positions summed as _mm512_reduce_add_ps does
 *   ((p_i + p_i+8) then +4, +2, +1), the block sums added in double, l[r] = (float)(l[r] + sum).
 * On return kq[j][r] = p_j for every j < CPU_ATTN_TILE (0 past n_kv). acc: [CPU_ATTN_TILE][dv]. */
#define CPU_ATTN_TILE 64
struct cpu_attn_tile {
    float *kq;       /* [CPU_ATTN_TILE][CPU_ATTN_TILE] scores in, probabilities out */
    int n_kv;        /* positions of the tile that exist, 1..CPU_ATTN_TILE */
    int kv0;         /* position of the tile's first key */
    const int *qpos; /* [CPU_ATTN_TILE] each lane's position (-1: padding, sees nothing) */
    float scale;     /* score scale */
    float *m, *l;    /* [CPU_ATTN_TILE] running max and sum, in and out */
    float *acc;      /* [CPU_ATTN_TILE][dv] running value sums, rescaled when a max moves */
    int dv;
};
typedef void (*cpu_attn_tile_softmax_fn)(struct cpu_attn_tile *t);

struct cpu_kernels {
    const char *name;                          /* "scalar", "avx2", "avx512" */
    cpu_vec_dot_fn vec_dot[DTYPE_COUNT];       /* indexed by weight dtype */
    cpu_from_float_fn from_float[DTYPE_COUNT]; /* indexed by activation dtype */
    cpu_to_float_fn to_float[DTYPE_COUNT];     /* indexed by dtype */
    cpu_gemm_tile_fn gemm_tile[DTYPE_COUNT];   /* indexed by weight dtype; set with vec_dot */
    int gemm_tile_w[DTYPE_COUNT];              /* largest n_w of gemm_tile[t] (weight rows) */
    int gemm_tile_x[DTYPE_COUNT];              /* largest n_x of gemm_tile[t] (tokens) */
    cpu_attn_dot_f16_fn attn_dot_f16;
    cpu_attn_mad_f16_fn attn_mad_f16;
    cpu_attn_scale_f16_fn attn_scale_f16;
    cpu_attn_dots_f16_fn attn_dots_f16;
    /* F32 expert products (matmul_id): out[j * out_stride + i] = f32_id_dot_ref(w_i, x_j, k), for
     * any tile up to gemm_tile_w/x[DTYPE_F32]. llama.cpp multiplies F32 experts with
     * ggml_vec_dot_f32, whose order is not its dense F32 gemm's (gemm_tile[DTYPE_F32]). */
    cpu_gemm_tile_fn f32_id_tile;
    cpu_swiglu_fn swiglu;
    cpu_silu_fn silu;
    cpu_rope_pairs_fn rope_pairs;
    cpu_attn_rows_f16_fn attn_rows_f16;
    cpu_gdn_rows_fn gdn_rows;
    cpu_f32_gemm_seq_fn f32_gemm_seq;
    cpu_attn_tile_softmax_fn attn_tile_softmax;
    /* Q8_0 in llama.cpp's AMX order (q8_0_dot_q8_0_blk_ref), filled by the AVX-512 table when the
     * CPU has AMX-INT8, NULL elsewhere: llama.cpp on such a CPU repacks Q8_0 weights for its AMX
     * kernels, which sum each block exactly in int32 and do one f32 FMA per block, in prompt
     * processing and decoding alike; only a weight it keeps in a plain buffer (token_embd, read by
     * get_rows, so a tied output head) goes through ggml_vec_dot_q8_0_q8_0's 8-lane order. The
     * tile is q8_0_blk_dot bit for bit on every element; sizes as gemm_tile_w/x. */
    cpu_vec_dot_fn q8_0_blk_dot;
    cpu_gemm_tile_fn q8_0_blk_tile;
    int q8_0_blk_tile_w, q8_0_blk_tile_x;
};

enum cpu_isa { CPU_ISA_SCALAR = 0, CPU_ISA_AVX2 = 1, CPU_ISA_AVX512 = 2 };

struct cpu_features {
    int has_avx2, has_fma, has_f16c, has_avx512f, has_avx512bw, has_avx512vl, has_avx512dq,
        has_avx512vnni, has_avx512bf16, has_avxvnni, has_avx512vbmi;
    int has_amx_int8; /* AMX-TILE + AMX-INT8, enabled by the OS and granted to this process */
};

void cpu_features_detect(struct cpu_features *f);
/* Best ISA the CPU supports. */
enum cpu_isa cpu_isa_best(const struct cpu_features *f);

/* Fill a table for one ISA. Scalar fills every supported dtype; the others fill what they have
 * (the caller merges over the scalar table; an ISA that fills vec_dot[t] fills gemm_tile[t] and
 * its sizes too). f: the CPU's features, for variants chosen at fill time (AVX-VNNI). Return 0,
 * or -1 if the ISA is not compiled in. */
int cpu_kernels_fill_scalar(struct cpu_kernels *k);
int cpu_kernels_fill_avx2(struct cpu_kernels *k, const struct cpu_features *f);
int cpu_kernels_fill_avx512(struct cpu_kernels *k, const struct cpu_features *f);

/* AMX tiles of the K-quants and IQ4_XS (kernels_amx.c, used by the AVX-512 table when the CPU
 * has AMX-INT8): out[j * out_stride + i] for i < n_w <= 16 weight rows and j < 16 * n_groups
 * tokens (whole groups of 16, 1 <= n_groups <= 16), bit for bit what the dtype's vec_dot gives.
 * type is DTYPE_Q4_K, DTYPE_Q5_K, DTYPE_Q6_K or DTYPE_IQ4_XS. q4k_scaled (needs AVX512-VBMI):
 * Q4_K with the sub-block scales multiplied into the tiles (same bits, fewer instructions). */
/* AMX Q8_0 tiles in the block order (q8_0_dot_q8_0_blk_ref): out[j * out_stride + i] for i < n_w
 * <= 16 rows and j < 16 * n_groups tokens (1 <= n_groups <= 16); x_stride may be 0 (one token
 * repeated). */
void cpu_amx_q8_0_tiles(const void *w, size_t w_stride, const void *x, size_t x_stride, int64_t k,
                        float *out, size_t out_stride, int n_w, int n_groups);
void cpu_amx_kq_tiles(enum dtype type, int q4k_scaled, const void *w, size_t w_stride,
                      const void *x, size_t x_stride, int64_t k, float *out, size_t out_stride,
                      int n_w, int n_groups);

/* The table of isa merged over scalar, for the CPU features f (the variants chosen at fill time
 * follow f: tests and benchmarks build AVX-512 with and without AMX this way). Returns 0, or -1
 * if f lacks the ISA or it is not compiled in. */
int cpu_kernels_build(struct cpu_kernels *out, enum cpu_isa isa, const struct cpu_features *f);

/* The table in use (chosen on first call from CPUID and HEARTH_CPU=scalar|avx2|avx512|
 * avx512-noamx). Thread-safe. */
const struct cpu_kernels *cpu_kernels_get(void);
/* A specific table merged over scalar, for tests; NULL if the CPU lacks the ISA. */
const struct cpu_kernels *cpu_kernels_for(enum cpu_isa isa);

/* Scalar references of the attention helpers (kernels_scalar.c). attn_dot_f16_ref: 64-element
 * steps into four 16-lane FMA accumulators (lane l of accumulator a takes element 16a + l of each
 * step), reduced a0+a2, a1+a3, then a0+a1, then lanes 8+8, 4+4, (0+2)+(1+3); elements past the
 * last full step are added in double, and the double is rounded to float. */
float attn_dot_f16_ref(const uint16_t *q, const uint16_t *k, int64_t n);
void attn_mad_f16_ref(uint16_t *acc, const uint16_t *v, float s, int64_t n);
void attn_scale_f16_ref(uint16_t *acc, float s, int64_t n);
void attn_dots_f16_ref(const uint16_t *q, const uint16_t *k, size_t k_stride, int64_t n, float *out,
                       int64_t n_k);

/* ggml_vec_dot_f32 as llama.cpp's AVX-512 build computes it: 64-element steps into four 16-lane
 * FMA accumulators, reduced as in attn_dot_f16_ref, the sum rounded to float; elements past the
 * last full step are then added one by one with fmaf in float. */
float f32_id_dot_ref(const float *w, const float *x, int64_t n);
/* ggml_v_expf (AVX-512): exp by a degree-5 polynomial and 2^n scaling, not correctly rounded;
 * its silu is x / (1 + e^-x). llama.cpp's swiglu uses it on every full 16-element block of a
 * row (libm expf on a row's tail; here every element goes through expf_ggml_ref). */
float expf_ggml_ref(float x);
void swiglu_ref(const float *gate, const float *up, float *out, int64_t n);
void silu_ref(const float *x, float *out, int64_t n);
void rope_pairs_ref(float *x, const float *cs, const float *sn, int n, int half);
/* The attention's exp, bit for bit glibc's expf (what ggml's CPU flash attention calls for every
 * ms and vs), in a form the SIMD tables repeat lane by lane: in double, k = round(x * 32 / ln 2)
 * (adding 1.5 * 2^52), r = fma(32 / ln 2, x, -k), 2^(k/32) = ATTN_EXP_TAB[k % 32] + (k << 47) as
 * bits, p = fma(fma(C0, r, C1), r * r, fma(C2, r, 1)) with the degree-3 coefficients of 2^(r/32)
 * that glibc uses, result (float)(p * 2^(k/32)); 0 below -103.97, NaN stays NaN. Checked against
 * glibc's expf on every float in [-104.5, 0] (all equal) and by kernels_attn_exp_is_expf.
 * A cheaper float polynomial (~0.9 ulp) moved qwen2-f32's golden log-probs from 2.5e-6 to 2.8e-4:
 * one f16 rounding of a running sum goes the other way. */
#define ATTN_EXP_INVLN2N 0x1.71547652b82fep+5 /* 32 / ln 2 */
#define ATTN_EXP_SHIFT   0x1.8p+52
#define ATTN_EXP_C0      (0x1.c6af84b912394p-5 / 32768.0)
#define ATTN_EXP_C1      (0x1.ebfce50fac4f3p-3 / 1024.0)
#define ATTN_EXP_C2      (0x1.62e42ff0c52d6p-1 / 32.0)
#define ATTN_EXP_MIN     -0x1.9fe368p6f /* below: 0 */
extern const uint64_t attn_exp_tab[32]; /* bits of 2^(i/32) rounded to double, minus i << 47 */
void f32_gemm_seq_ref(float *C, size_t ldc, const float *A, size_t a_si, size_t a_sk,
                      const float *B, size_t ldb, int M, int K, int N);
void attn_tile_softmax_ref(struct cpu_attn_tile *t);
/* Q8_0 weights . Q8_0 activations in llama.cpp's AMX order: per block the 32 products summed
 * exactly in int32, then acc = fma((float)isum, dw * dx, acc), one accumulator from 0. */
float q8_0_dot_q8_0_blk_ref(const void *w, const void *x,
                            int64_t n); /* bits of 2^(i/32) rounded to double, minus i << 47 */
float attn_exp_ref(float x);
/* The fused update in plain C over the given helpers (attn_rows_f16_ref passes the references);
 * exp_n(x, n) replaces x[i] by attn_exp(x[i]) for i < n. The SIMD tables use it for heads over
 * their register paths, with their own helpers, which give the references' bits. */
void attn_rows_f16_with(struct cpu_attn_rows_f16 *a, cpu_attn_dots_f16_fn dots,
                        cpu_attn_mad_f16_fn mad, cpu_attn_scale_f16_fn scale,
                        void (*exp_n)(float *x, int n));
void attn_rows_f16_ref(struct cpu_attn_rows_f16 *a);
void gdn_rows_ref(float *S, int dk, int dv, const float *kn, const float *qn, const float *v,
                  float beta, float decay, float scale, float *out);

#endif
