/* backend.h: the ops the models call, as a table of function pointers plus a context.
 *
 * Model files (src/model/arch_*.c) call these and nothing else; they never see SIMD, threads or
 * (later) CUDA. Activations are float arrays in backend memory, row-major: a batch of n rows of
 * `dim` floats is x[i*dim + j]. Weights are struct tensor views (any supported dtype) into the
 * model's mapping. The KV cache is backend memory in the cache dtype (F32, F16 or Q8_0).
 *
 * Every op is synchronous: when it returns, its output is written. Ops are called from one
 * thread at a time per backend (the engine's compute thread); the backend parallelises inside.
 * Memory comes from buffer_alloc so a device backend can keep activations on the device.
 */
#ifndef HEARTH_BACKEND_H
#define HEARTH_BACKEND_H

#include "../base/error.h"
#include "../tensor/tensor.h"

#include <stddef.h>
#include <stdint.h>

enum rope_mode {
    ROPE_MODE_NORM = 0, /* rotate adjacent pairs (2i, 2i+1): llama */
    ROPE_MODE_NEOX = 2, /* rotate (i, i + n_rot/2): qwen2/qwen3 ("rotate_half") */
};

/* RoPE constants of a model. theta_i = pos * freq_scale * base^(-2i/n_rot) / freq_factors[i]
 * (YaRN blends this with the unscaled angle per dimension, see cpu_backend.c). */
struct rope_params {
    enum rope_mode mode;
    int n_rot;                  /* rotated dims per head (<= head_dim); the rest pass through */
    float freq_base;            /* e.g. 10000, 1e6 */
    float freq_scale;           /* 1 / rope.scaling.factor (linear and yarn), 1 if none */
    int is_yarn;                /* rope.scaling.type == yarn */
    int n_ctx_orig;             /* yarn: original context length */
    float ext_factor;           /* yarn: extrapolation mix factor (1 when yarn, else 0) */
    float attn_factor;          /* yarn: multiplier for cos/sin magnitudes (mscale) */
    float beta_fast, beta_slow; /* yarn ramp bounds (32, 1) */
    const float *freq_factors;  /* [n_rot/2] divisors (rope_freqs.weight) or NULL */
};

/* One attention call: n_tokens query rows of one sequence against that sequence's KV cache
 * layer. Query row it sits at position pos0 + it and attends to cache positions
 * [0, pos0 + it] (causal). The rows for pos0..pos0+n_tokens-1 must already be in the cache. */
struct attn_args {
    const float *q;     /* [n_tokens][q_stride], head h at q + h*head_dim */
    int q_stride;       /* floats between query rows (>= n_head*head_dim) */
    const void *k;      /* this layer's K cache: [n_ctx][n_head_kv*head_dim] in kv_type */
    const void *v;      /* this layer's V cache: same layout */
    enum dtype kv_type; /* F32, F16 or Q8_0 */
    int n_tokens, pos0;
    int n_head, n_head_kv, head_dim;
    float scale; /* usually 1/sqrt(head_dim) */
    float *out;  /* [n_tokens][n_head*head_dim] */
};

/* Depthwise causal convolution + SiLU over n_tokens consecutive tokens of one sequence (the
 * short conv of Gated DeltaNet layers): out[t][c] = silu(sum_{i<d_conv} w[c][i] * u[t+i][c]),
 * where u is the previous d_conv-1 inputs (the state) followed by the n_tokens new inputs. */
struct ssm_conv_args {
    const float *x; /* [n_tokens][x_stride] new inputs, channel c at x[t*x_stride + c] */
    int x_stride;   /* floats between token rows of x */
    int n_tokens, n_ch, d_conv;
    const float *w;     /* [n_ch][d_conv] kernel (ssm_conv1d {d_conv, n_ch}, F32); index d_conv-1
                           multiplies the newest token */
    float *state;       /* [d_conv-1][n_ch] inputs of the previous tokens, oldest first; updated */
    int reset;          /* 1: the sequence starts here, the state is taken as zeros (not read) */
    float *out;         /* [n_tokens][n_ch] */
    float *const *snap; /* NULL or [n_tokens]: when snap[t] != NULL, the state after token t is
                           written to snap[t] + snap_off (same layout as state) */
    size_t snap_off;    /* floats */
};

/* Gated delta rule (Gated DeltaNet) over n_tokens consecutive tokens of one sequence. Per token
 * and value head h (q/k head j = h mod n_head_k, the tiled head order of qwen35 GGUFs):
 *   q^, k^ = L2-normalised q_j, k_j (x / max(|x|, eps)); beta = sigmoid(beta_in[h]);
 *   g = ssm_a[h] * softplus(alpha[h] + dt_bias[h]);  S_h <- exp(g) S_h;
 *   S_h <- S_h + k^ (beta (v_h - S_h^T k^))^T;  out_h = S_h^T q^ / sqrt(d_v).
 * S_h is d_k x d_v, stored transposed: state[h][jv][ik] = S_h[ik][jv] (rows contiguous over
 * the key dimension). */
struct gdn_args {
    const float *qkv;     /* [n_tokens][qkv_stride]: n_head_k q heads of d_k, n_head_k k heads of
                             d_k, n_head_v v heads of d_v (the conv output) */
    int qkv_stride;       /* floats between token rows */
    const float *alpha;   /* [n_tokens][n_head_v] decay logits (ssm_alpha x) */
    const float *beta;    /* [n_tokens][n_head_v] update-strength logits (ssm_beta x) */
    const float *ssm_a;   /* [n_head_v] A = -exp(A_log) (< 0) */
    const float *dt_bias; /* [n_head_v] */
    int n_tokens, n_head_k, n_head_v, d_k, d_v;
    float eps;          /* L2-norm epsilon (the model's rms eps) */
    float *state;       /* [n_head_v][d_v][d_k], f32, updated */
    int reset;          /* 1: the sequence starts here, the state is taken as zeros */
    float *out;         /* [n_tokens][n_head_v*d_v] */
    float *const *snap; /* as in ssm_conv_args: the state after token t -> snap[t] + snap_off */
    size_t snap_off;
};

#define BACKEND_MULTI_MAX 4

struct backend {
    const char *name; /* "cpu" */
    void *ctx;        /* backend-private */

    /* ---- memory ---- */
    /* Zeroed buffer of n_bytes, 64-byte aligned; NULL on failure. */
    void *(*buffer_alloc)(struct backend *be, size_t n_bytes);
    void (*buffer_free)(struct backend *be, void *p);
    /* Copy between host memory and backend buffers (memcpy on the CPU). */
    void (*upload)(struct backend *be, void *dst, const void *src, size_t n_bytes);
    void (*download)(struct backend *be, void *dst, const void *src, size_t n_bytes);
    /* Copy between two backend buffers. */
    void (*copy)(struct backend *be, void *dst, const void *src, size_t n_bytes);

    /* ---- ops ---- */
    /* out[i] = row ids[i] of w (dequantized to f32); w is {dim, n_rows}. */
    void (*get_rows)(struct backend *be, const struct tensor *w, const int32_t *ids, int n,
                     float *out);
    /* y[t] = W x[t] for t < n: W {K, N} any dtype, x [n][K], y [n][N]. When bias is non-NULL
     * ({N}, F32) it is added. x and y must not overlap. */
    void (*matmul)(struct backend *be, const struct tensor *w, const struct tensor *bias,
                   const float *x, float *y, int n);
    /* The same x times n_w (<= BACKEND_MULTI_MAX) matrices: y[i][t] = w[i] x[t] (+ bias[i] when
     * bias and bias[i] are non-NULL), with the same results as n_w matmul calls (one job, so
     * the threads meet once; x is converted once). */
    void (*matmul_multi)(struct backend *be, int n_w, const struct tensor *const *w,
                         const struct tensor *const *bias, const float *x, float *const *y, int n);
    /* out[r] = x[r] / sqrt(mean(x[r]^2) + eps) * w for n_rows rows of dim floats, reading row r
     * at x + r*x_stride and writing at out + r*out_stride; w {dim} F32 or NULL (no gain).
     * In place allowed. */
    void (*rms_norm)(struct backend *be, const float *x, int x_stride, const struct tensor *w,
                     float *out, int out_stride, int n_rows, int dim, float eps);
    /* out[i] = a[i] + b[i], i < n. In place allowed. */
    void (*add)(struct backend *be, const float *a, const float *b, float *out, int64_t n);
    /* out[i] = silu(gate[i]) * up[i], i < n. In place allowed. */
    void (*swiglu)(struct backend *be, const float *gate, const float *up, float *out, int64_t n);
    /* In-place RoPE on n rows: row t holds n_head heads of head_dim at x + t*stride + h*head_dim,
     * rotated at position pos[t]. */
    void (*rope)(struct backend *be, float *x, int stride, const int32_t *pos, int n, int n_head,
                 int head_dim, const struct rope_params *rp);
    /* Writes n rows of k and v ([n][n_head_kv*head_dim] f32, row stride src_stride floats) into
     * the caches at positions pos0..pos0+n-1, converting to kv_type. */
    void (*kv_store)(struct backend *be, void *k_cache, void *v_cache, enum dtype kv_type,
                     int kv_dim, const float *k, const float *v, int src_stride, int pos0, int n);
    /* Causal attention for one sequence (see struct attn_args); never forms a n_ctx^2 matrix. */
    void (*attention)(struct backend *be, const struct attn_args *a);
    /* MoE routing: for each of n rows of logits [n][n_expert]: p = softmax(logits); pick the
     * k largest p (ids in descending p), weights = p of the picked, renormalised to sum 1 when
     * norm (denominator clamped at 6.1035e-5). ids/weights: [n][k]. */
    void (*moe_route)(struct backend *be, const float *logits, int n, int n_expert, int k, int norm,
                      int32_t *ids, float *weights);
    /* Expert matmul: w is a stack {K, N, n_expert}; for t < n, j < k:
     * y[t][j] = W[ids[t][j]] x_row, with x_row = x[t] when x_per_slot == 0 ([n][K]) or
     * x[t*k + j] when x_per_slot ([n][k][K]); y is [n][k][N]. Tokens routed to the same expert
     * are processed together so each expert's weights are read once per call. */
    void (*matmul_id)(struct backend *be, const struct tensor *w, const float *x, int x_per_slot,
                      const int32_t *ids, int n, int k, float *y);
    /* out[t] = sum_j weights[t][j] * y[t][j] for y [n][k][dim], out [n][dim]. */
    void (*moe_combine)(struct backend *be, const float *y, const float *weights, int n, int k,
                        int dim, float *out);

    /* ---- hybrid models (qwen35, qwen35moe); NULL in a backend without them ---- */
    /* Short causal conv + SiLU with its rolling state (struct ssm_conv_args). */
    void (*ssm_conv)(struct backend *be, const struct ssm_conv_args *a);
    /* Gated delta-rule recurrence (struct gdn_args); parallel over value heads. */
    void (*gated_delta_net)(struct backend *be, const struct gdn_args *a);
    /* out[r][i] = x[r][i] * sigmoid(gate[r*gate_stride + i]) for n_rows rows of dim floats (x and
     * out contiguous rows); with gate_is_scalar the gate is one value per row:
     * gate[r*gate_stride]. In place allowed (out == x). */
    void (*sigmoid_mul)(struct backend *be, const float *x, const float *gate, int gate_stride,
                        int gate_is_scalar, float *out, int n_rows, int dim);

    void (*free)(struct backend *be); /* releases the backend itself */
};

/* Creates the CPU backend with n_threads threads (0 = number of CPUs, at most what the machine
 * has). Kernel set from CPUID, overridable with HEARTH_CPU=scalar|avx2|avx512. */
int backend_cpu_create(struct backend **out, int n_threads, struct error *err);
void backend_free(struct backend *be); /* NULL allowed */

#endif
