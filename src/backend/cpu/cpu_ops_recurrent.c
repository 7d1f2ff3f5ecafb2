/* cpu_ops_recurrent.c: CPU ops of the hybrid (Gated DeltaNet) models: the short causal conv
 * with its rolling state, the gated delta-rule recurrence, and a sigmoid gate (see backend.h).
 *
 * The recurrence is sequential over tokens but independent per value head, so the op splits
 * the heads over the threads and each thread walks all tokens of its heads, updating the
 * d_v x d_k state in place (O(d_k d_v) per token and head, no quadratic work). The arithmetic
 * follows ggml's CPU gated_delta_net op (llama.cpp runs qwen35 through it), including the
 * order of its f32 dot products, so hearth agrees with llama.cpp to float rounding. The inner
 * loops (dot, axpy, scale over d_k) are the ones a SIMD table can later replace.
 */
#include "../../base/error.h"
#include "cpu_internal.h"
#include "cpu_kernels.h"

#include <math.h>
#include <string.h>

#define GDN_MAX_DIM 1024 /* d_k, d_v bound for the per-thread stack buffers */

/* ============================================================================================
 * Vector helpers
 * (The state update itself is the kernel table's gdn_rows: ggml_vec_dot_f32's AVX-512 order,
 * which keeps the state bit-close to llama.cpp's over hundreds of tokens.)
 * ============================================================================================ */

/* y = x / max(||x||, eps) (ggml_l2_norm: sum of squares in double). */
static void l2_norm_f32(const float *x, float *y, int n, float eps) {
    double sum = 0;
    for (int i = 0; i < n; i++) sum += (double)(x[i] * x[i]);
    float scale = 1.0f / fmaxf(sqrtf((float)sum), eps);
    for (int i = 0; i < n; i++) y[i] = x[i] * scale;
}

static float sigmoid_f32(float x) {
    return 1.0f / (1.0f + expf(-x));
}

static float softplus_f32(float x) { /* ggml's softplus: linear above 20 */
    return x > 20.0f ? x : logf(1.0f + expf(x));
}

/* ============================================================================================
 * Short causal conv
 * As ggml's ssm_conv + silu: the taps summed with fused multiply-adds (gcc contracts ggml's
 * sumf += s * c), then SiLU with ggml's vector exp (kern->silu) on the full 16-channel blocks.
 * Channels are independent, so each thread takes a channel range for all tokens, including the
 * state update and the snapshots, and no thread reads what another writes.
 * ============================================================================================ */

static void ssm_conv_task(void *p, int ith, int nth) {
    const struct ssm_conv_args *a = p;
    int64_t c0, c1;
    cpu_split_range(a->n_ch, ith, nth, &c0, &c1);
    if (c0 >= c1) return;
    int d = a->d_conv, nc = a->n_ch, nw = d - 1;
    /* u(j): row j of [state ; x]; j < nw reads the state (zeros on reset). */
#define U(j, c)                                                                                    \
    ((j) < nw ? (a->reset ? 0.0f : a->state[(int64_t)(j)*nc + (c)])                                \
              : a->x[(int64_t)((j)-nw) * a->x_stride + (c)])
    const struct cpu_kernels *kern = cpu_kernels_get();
    int64_t nc16 = nc & ~(int64_t)15, v1 = c1 < nc16 ? c1 : nc16;
    for (int t = 0; t < a->n_tokens; t++) {
        float *o = a->out + (int64_t)t * nc;
        for (int64_t c = c0; c < c1; c++) {
            const float *w = a->w + c * d;
            float sum = 0.0f;
            for (int i = 0; i < d; i++) sum = fmaf(U(t + i, c), w[i], sum);
            o[c] = sum;
        }
        /* ggml_vec_silu_f32: ggml's vector exp on each full 16-channel block, libm on the tail */
        if (c0 < v1) kern->silu(o + c0, o + c0, v1 - c0);
        for (int64_t c = c0 > nc16 ? c0 : nc16; c < c1; c++) o[c] = o[c] / (1.0f + expf(-o[c]));
        if (a->snap && a->snap[t]) { /* state after token t = u(t+1 .. t+nw) */
            float *s = a->snap[t] + a->snap_off;
            for (int j = 0; j < nw; j++)
                for (int64_t c = c0; c < c1; c++) s[(int64_t)j * nc + c] = U(t + 1 + j, c);
        }
    }
    /* new state = u(n .. n+nw-1); ascending j only reads rows at or after the one it writes */
    for (int j = 0; j < nw; j++) {
        int src = a->n_tokens + j;
        float *dst = a->state + (int64_t)j * nc;
        for (int64_t c = c0; c < c1; c++) dst[c] = U(src, c);
    }
#undef U
}

static void cpu_ssm_conv(struct backend *be, const struct ssm_conv_args *a) {
    CHECK(a->d_conv >= 1 && a->n_ch > 0 && a->n_tokens > 0);
    threadpool_run(cpu_backend_pool(be), ssm_conv_task, (void *)a);
}

/* ============================================================================================
 * Gated delta rule
 * Per value head, tokens in order: decay the state, correct it toward v along k (delta rule),
 * read it out with q. The state rows are the value dimension (row jv holds S[:, jv]), so every
 * inner loop is a contiguous pass over d_k floats.
 * ============================================================================================ */

struct gdn_job {
    const struct gdn_args *a;
    const struct cpu_kernels *kern;
};

static void gdn_task(void *p, int ith, int nth) {
    const struct gdn_job *job = p;
    const struct gdn_args *a = job->a;
    int64_t h0, h1;
    cpu_split_range(a->n_head_v, ith, nth, &h0, &h1);
    int dk = a->d_k, dv = a->d_v, hk = a->n_head_k, hv = a->n_head_v;
    int64_t k_off = (int64_t)hk * dk, v_off = 2 * k_off, head_floats = (int64_t)dk * dv;
    float qn[GDN_MAX_DIM], kn[GDN_MAX_DIM];
    float scale = 1.0f / sqrtf((float)dv);
    for (int64_t h = h0; h < h1; h++) {
        float *S = a->state + h * head_floats;
        if (a->reset) memset(S, 0, (size_t)head_floats * sizeof(float));
        int64_t j = h % hk; /* tiled head mapping */
        for (int t = 0; t < a->n_tokens; t++) {
            const float *row = a->qkv + (int64_t)t * a->qkv_stride;
            l2_norm_f32(row + j * dk, qn, dk, a->eps);
            l2_norm_f32(row + k_off + j * dk, kn, dk, a->eps);
            const float *v = row + v_off + h * dv;
            float beta = sigmoid_f32(a->beta[(int64_t)t * hv + h]);
            float g = softplus_f32(a->alpha[(int64_t)t * hv + h] + a->dt_bias[h]) * a->ssm_a[h];
            float *o = a->out + (int64_t)t * hv * dv + h * dv;
            job->kern->gdn_rows(S, dk, dv, kn, qn, v, beta, expf(g), scale, o);
            if (a->snap && a->snap[t])
                memcpy(a->snap[t] + a->snap_off + h * head_floats, S,
                       (size_t)head_floats * sizeof(float));
        }
    }
}

static void cpu_gated_delta_net(struct backend *be, const struct gdn_args *a) {
    CHECK(a->d_k > 0 && a->d_k <= GDN_MAX_DIM && a->d_v > 0 && a->d_v <= GDN_MAX_DIM);
    CHECK(a->n_head_k > 0 && a->n_head_v % a->n_head_k == 0 && a->n_tokens > 0);
    struct gdn_job job = {a, cpu_backend_kernels(be)};
    threadpool_run(cpu_backend_pool(be), gdn_task, &job);
}

/* ============================================================================================
 * Sigmoid gate (gated attention output, gated shared expert)
 * ============================================================================================ */

struct sigmoid_mul_args {
    const float *x, *gate;
    int gate_stride, gate_is_scalar;
    float *out;
    int n_rows, dim;
};

static void sigmoid_mul_task(void *p, int ith, int nth) {
    const struct sigmoid_mul_args *a = p;
    int64_t r0, r1;
    cpu_split_range(a->n_rows, ith, nth, &r0, &r1);
    for (int64_t r = r0; r < r1; r++) {
        const float *x = a->x + r * a->dim, *g = a->gate + r * a->gate_stride;
        float *o = a->out + r * a->dim;
        if (a->gate_is_scalar) {
            float s = sigmoid_f32(g[0]);
            for (int i = 0; i < a->dim; i++) o[i] = x[i] * s;
        } else {
            for (int i = 0; i < a->dim; i++) o[i] = x[i] * sigmoid_f32(g[i]);
        }
    }
}

static void cpu_sigmoid_mul(struct backend *be, const float *x, const float *gate, int gate_stride,
                            int gate_is_scalar, float *out, int n_rows, int dim) {
    struct sigmoid_mul_args a = {x, gate, gate_stride, gate_is_scalar, out, n_rows, dim};
    if ((int64_t)n_rows * dim < 8192)
        sigmoid_mul_task(&a, 0, 1);
    else
        threadpool_run(cpu_backend_pool(be), sigmoid_mul_task, &a);
}

void cpu_ops_recurrent_install(struct backend *be) {
    be->ssm_conv = cpu_ssm_conv;
    be->gated_delta_net = cpu_gated_delta_net;
    be->sigmoid_mul = cpu_sigmoid_mul;
}
