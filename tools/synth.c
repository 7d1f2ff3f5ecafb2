/* synth.c: `hearth synth` — random-weight GGUF files at real model shapes.
 *
 * Speed has to be measured at real sizes without real weights, on the same file for hearth and
 * llama.cpp. This tool writes a complete, loadable GGUF: the architecture's hyper-parameters, a
 * tokenizer (a byte-fallback SentencePiece vocabulary padded to n_vocab, or one copied from
 * another GGUF and padded), and every tensor with the names and shapes the architecture needs,
 * filled with N(0, std) matrices and norm weights near 1, quantized per tensor with the reference
 * quantizers under a file-type preset's mix (tools/quant_mix.c).
 *
 * Each row's random numbers come from a generator seeded by (seed, tensor name, row), so the
 * output is identical for any thread count, and a file in another type has the same underlying
 * weights (so F32 and Q4_K_M files of one seed are twins).
 */
#include "tools.h"

#include "../src/base/mem.h"
#include "../src/base/threads.h"
#include "../src/gguf/gguf.h"
#include "../src/tensor/dtype.h"
#include "quant_mix.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* ============================================================================================
 * Shapes
 * ============================================================================================ */

struct synth_cfg {
    const char *preset;
    const char *arch;
    int n_vocab, n_embd, n_layer, n_head, n_head_kv, head_dim, n_ff;
    int n_expert, n_expert_used, n_ff_exp;
    int n_ctx;
    float rope_base, rms_eps;
    int tied;     /* no output.weight */
    int qkv_bias; /* qwen2 */
    int qk_norm;  /* qwen3, qwen3moe */
    /* hybrid Gated DeltaNet models (qwen35, qwen35moe); n_layer counts the trunk only */
    int n_rot;         /* rope.dimension_count (0: head_dim) */
    int ssm_d_conv;    /* conv kernel (4) */
    int ssm_d_state;   /* key and value head size d_k = d_v (128) */
    int ssm_n_group;   /* H_k: q/k heads */
    int ssm_dt_rank;   /* H_v: value heads */
    int attn_interval; /* full_attention_interval: layer il is attention iff (il+1) % it == 0 */
    int n_ff_shexp;    /* shared expert width (qwen35moe) */
    int n_nextn;       /* MTP blocks appended after the trunk */
};

/* Real model shapes (from the published configs) plus tiny ones for tests. */
static const struct synth_cfg g_presets[] = {
#define DENSE(name, arch_, v, e, l, h, kv, hd, ff, ctx, base, eps, tied_, bias, qkn)               \
    {                                                                                              \
        .preset = name, .arch = arch_, .n_vocab = v, .n_embd = e, .n_layer = l, .n_head = h,       \
        .n_head_kv = kv, .head_dim = hd, .n_ff = ff, .n_ctx = ctx, .rope_base = base,              \
        .rms_eps = eps, .tied = tied_, .qkv_bias = bias, .qk_norm = qkn                            \
    }
    DENSE("qwen3-0.6b", "qwen3", 151936, 1024, 28, 16, 8, 128, 3072, 40960, 1e6f, 1e-6f, 1, 0, 1),
    DENSE("qwen3-1.7b", "qwen3", 151936, 2048, 28, 16, 8, 128, 6144, 40960, 1e6f, 1e-6f, 1, 0, 1),
    DENSE("qwen3-4b", "qwen3", 151936, 2560, 36, 32, 8, 128, 9728, 40960, 1e6f, 1e-6f, 1, 0, 1),
    DENSE("qwen3-8b", "qwen3", 151936, 4096, 36, 32, 8, 128, 12288, 40960, 1e6f, 1e-6f, 0, 0, 1),
    DENSE("qwen2.5-0.5b", "qwen2", 151936, 896, 24, 14, 2, 64, 4864, 32768, 1e6f, 1e-6f, 1, 1, 0),
    DENSE("qwen2.5-7b", "qwen2", 152064, 3584, 28, 28, 4, 128, 18944, 32768, 1e6f, 1e-6f, 0, 1, 0),
    DENSE("llama-3-8b", "llama", 128256, 4096, 32, 32, 8, 128, 14336, 8192, 5e5f, 1e-5f, 0, 0, 0),
    DENSE("qwen3-tiny", "qwen3", 512, 256, 2, 2, 1, 128, 512, 4096, 1e6f, 1e-6f, 1, 0, 1),
    DENSE("qwen2-tiny", "qwen2", 512, 256, 2, 4, 2, 64, 512, 4096, 1e6f, 1e-6f, 1, 1, 0),
    DENSE("llama-tiny", "llama", 512, 256, 2, 4, 2, 64, 512, 4096, 1e4f, 1e-5f, 0, 0, 0),
#undef DENSE
    {.preset = "qwen3moe-30b-a3b",
     .arch = "qwen3moe",
     .n_vocab = 151936,
     .n_embd = 2048,
     .n_layer = 48,
     .n_head = 32,
     .n_head_kv = 4,
     .head_dim = 128,
     .n_expert = 128,
     .n_expert_used = 8,
     .n_ff_exp = 768,
     .n_ctx = 40960,
     .rope_base = 1e6f,
     .rms_eps = 1e-6f,
     .qk_norm = 1},
    {.preset = "qwen3moe-tiny",
     .arch = "qwen3moe",
     .n_vocab = 512,
     .n_embd = 256,
     .n_layer = 2,
     .n_head = 2,
     .n_head_kv = 1,
     .head_dim = 128,
     .n_expert = 8,
     .n_expert_used = 2,
     .n_ff_exp = 256,
     .n_ctx = 4096,
     .rope_base = 1e6f,
     .rms_eps = 1e-6f,
     .qk_norm = 1},
    /* Qwen3.6-27B / 35B-A3B (architectures.md 5.5): IMROPE n_rot 64 of head_dim 256, GDN heads
     * of 128, attention every 4th layer; the MTP block is optional (--nextn 1) */
    {.preset = "qwen3.6-27b",
     .arch = "qwen35",
     .n_vocab = 248320,
     .n_embd = 5120,
     .n_layer = 64,
     .n_head = 24,
     .n_head_kv = 4,
     .head_dim = 256,
     .n_ff = 17408,
     .n_ctx = 262144,
     .rope_base = 1e7f,
     .rms_eps = 1e-6f,
     .n_rot = 64,
     .ssm_d_conv = 4,
     .ssm_d_state = 128,
     .ssm_n_group = 16,
     .ssm_dt_rank = 48,
     .attn_interval = 4},
    {.preset = "qwen3.6-35b-a3b",
     .arch = "qwen35moe",
     .n_vocab = 248320,
     .n_embd = 2048,
     .n_layer = 40,
     .n_head = 16,
     .n_head_kv = 2,
     .head_dim = 256,
     .n_expert = 256,
     .n_expert_used = 8,
     .n_ff_exp = 512,
     .n_ctx = 262144,
     .rope_base = 1e7f,
     .rms_eps = 1e-6f,
     .n_rot = 64,
     .ssm_d_conv = 4,
     .ssm_d_state = 128,
     .ssm_n_group = 16,
     .ssm_dt_rank = 32,
     .attn_interval = 4,
     .n_ff_shexp = 512},
    /* the shapes of ../shared/models/synthetic/qwen35-f32.gguf and qwen35moe-f32.gguf */
    {.preset = "qwen35-tiny",
     .arch = "qwen35",
     .n_vocab = 512,
     .n_embd = 128,
     .n_layer = 4,
     .n_head = 2,
     .n_head_kv = 1,
     .head_dim = 256,
     .n_ff = 384,
     .n_ctx = 4096,
     .rope_base = 1e7f,
     .rms_eps = 1e-6f,
     .tied = 1,
     .n_rot = 64,
     .ssm_d_conv = 4,
     .ssm_d_state = 128,
     .ssm_n_group = 2,
     .ssm_dt_rank = 4,
     .attn_interval = 4},
    {.preset = "qwen35moe-tiny",
     .arch = "qwen35moe",
     .n_vocab = 512,
     .n_embd = 256,
     .n_layer = 2,
     .n_head = 2,
     .n_head_kv = 1,
     .head_dim = 128,
     .n_expert = 4,
     .n_expert_used = 2,
     .n_ff_exp = 256,
     .n_ctx = 4096,
     .rope_base = 1e7f,
     .rms_eps = 1e-6f,
     .tied = 1,
     .n_rot = 64,
     .ssm_d_conv = 4,
     .ssm_d_state = 128,
     .ssm_n_group = 2,
     .ssm_dt_rank = 4,
     .attn_interval = 2,
     .n_ff_shexp = 256},
};

static int is_hybrid(const struct synth_cfg *c) {
    return c->ssm_dt_rank > 0;
}

/* ============================================================================================
 * Random numbers: splitmix64-seeded xoshiro256** per row, Box-Muller normals
 * ============================================================================================ */

struct rng {
    uint64_t s[4];
};

static uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static void rng_seed(struct rng *r, uint64_t seed) {
    for (int i = 0; i < 4; i++) r->s[i] = mix64(seed += 0x9e3779b97f4a7c15ULL);
}

static uint64_t rng_u64(struct rng *r) {
    uint64_t *s = r->s, result = ((s[1] * 5) << 7 | (s[1] * 5) >> 57) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = s[3] << 45 | s[3] >> 19;
    return result;
}

static double rng_unit(struct rng *r) { /* (0, 1) */
    return ((double)(rng_u64(r) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

static uint64_t hash_name(const char *s) {
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

/* ============================================================================================
 * Tensor list
 * ============================================================================================ */

/* Matrices N(0, std); norm weights uniform(0.8, 1.2) (output_norm times a gain that gives
 * logits a std of about 4); biases N(0, 0.3); Gated DeltaNet parameters in the ranges of
 * ../shared/models/synthetic: ssm_a uniform(-0.6, -0.05) (stored as -exp(A_log)), ssm_dt.bias
 * uniform(-1, 1), ssm_conv1d uniform(-0.5, 0.5). */
enum fill { FILL_NORMAL, FILL_NORM, FILL_OUT_NORM, FILL_BIAS, FILL_SSM_A, FILL_DT_BIAS, FILL_CONV };

struct synth_tensor {
    char name[64];
    int n_dims;
    int64_t ne[3];
    int layer;
    enum fill fill;
    enum dtype type; /* chosen by the mix */
};

struct tensor_list {
    struct synth_tensor *t;
    int n, cap;
};

static int add_tensor(struct tensor_list *l, int layer, enum fill fill, int n_dims, int64_t ne0,
                      int64_t ne1, int64_t ne2, const char *fmt, ...)
    __attribute__((format(printf, 8, 9)));

static int add_tensor(struct tensor_list *l, int layer, enum fill fill, int n_dims, int64_t ne0,
                      int64_t ne1, int64_t ne2, const char *fmt, ...) {
    if (l->n == l->cap) {
        int cap = l->cap ? l->cap * 2 : 64;
        struct synth_tensor *t = mem_realloc(l->t, (size_t)cap * sizeof(*t));
        if (!t) return ERR_NOMEM;
        l->t = t;
        l->cap = cap;
    }
    struct synth_tensor *t = &l->t[l->n++];
    memset(t, 0, sizeof(*t));
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->name, sizeof(t->name), fmt, ap);
    va_end(ap);
    t->n_dims = n_dims;
    t->ne[0] = ne0;
    t->ne[1] = ne1;
    t->ne[2] = ne2;
    t->layer = layer;
    t->fill = fill;
    return 0;
}

/* qwen35 / qwen35moe: names and shapes as arch_qwen35.c binds them. */
static int build_hybrid_list(const struct synth_cfg *c, struct tensor_list *l) {
    const int64_t E = c->n_embd, hd = c->head_dim, q = (int64_t)c->n_head * hd;
    const int64_t kv = (int64_t)c->n_head_kv * hd, hv = c->ssm_dt_rank, dv = c->ssm_d_state;
    const int64_t V = hv * dv, C = 2 * (int64_t)c->ssm_n_group * c->ssm_d_state + V;
    int rc = 0;
    for (int il = 0; il < c->n_layer + c->n_nextn && !rc; il++) {
        int is_mtp = il >= c->n_layer, is_rec = !is_mtp && (il + 1) % c->attn_interval != 0;
        rc |= add_tensor(l, il, FILL_NORM, 1, E, 1, 1, "blk.%d.attn_norm.weight", il);
        rc |= add_tensor(l, il, FILL_NORM, 1, E, 1, 1, "blk.%d.post_attention_norm.weight", il);
        if (is_rec) {
            rc |= add_tensor(l, il, FILL_NORMAL, 2, E, C, 1, "blk.%d.attn_qkv.weight", il);
            rc |= add_tensor(l, il, FILL_NORMAL, 2, E, V, 1, "blk.%d.attn_gate.weight", il);
            rc |= add_tensor(l, il, FILL_CONV, 2, c->ssm_d_conv, C, 1, "blk.%d.ssm_conv1d.weight",
                             il);
            rc |= add_tensor(l, il, FILL_DT_BIAS, 1, hv, 1, 1, "blk.%d.ssm_dt.bias", il);
            rc |= add_tensor(l, il, FILL_SSM_A, 1, hv, 1, 1, "blk.%d.ssm_a", il);
            rc |= add_tensor(l, il, FILL_NORMAL, 2, E, hv, 1, "blk.%d.ssm_beta.weight", il);
            rc |= add_tensor(l, il, FILL_NORMAL, 2, E, hv, 1, "blk.%d.ssm_alpha.weight", il);
            rc |= add_tensor(l, il, FILL_NORM, 1, dv, 1, 1, "blk.%d.ssm_norm.weight", il);
            rc |= add_tensor(l, il, FILL_NORMAL, 2, V, E, 1, "blk.%d.ssm_out.weight", il);
        } else { /* gated attention: attn_q yields query and gate */
            rc |= add_tensor(l, il, FILL_NORMAL, 2, E, 2 * q, 1, "blk.%d.attn_q.weight", il);
            rc |= add_tensor(l, il, FILL_NORMAL, 2, E, kv, 1, "blk.%d.attn_k.weight", il);
            rc |= add_tensor(l, il, FILL_NORMAL, 2, E, kv, 1, "blk.%d.attn_v.weight", il);
            rc |= add_tensor(l, il, FILL_NORMAL, 2, q, E, 1, "blk.%d.attn_output.weight", il);
            rc |= add_tensor(l, il, FILL_NORM, 1, hd, 1, 1, "blk.%d.attn_q_norm.weight", il);
            rc |= add_tensor(l, il, FILL_NORM, 1, hd, 1, 1, "blk.%d.attn_k_norm.weight", il);
        }
        if (c->n_expert > 0) {
            const int64_t F = c->n_ff_exp, X = c->n_expert, S = c->n_ff_shexp;
            rc |= add_tensor(l, il, FILL_NORMAL, 2, E, X, 1, "blk.%d.ffn_gate_inp.weight", il);
            rc |= add_tensor(l, il, FILL_NORMAL, 3, E, F, X, "blk.%d.ffn_gate_exps.weight", il);
            rc |= add_tensor(l, il, FILL_NORMAL, 3, E, F, X, "blk.%d.ffn_up_exps.weight", il);
            rc |= add_tensor(l, il, FILL_NORMAL, 3, F, E, X, "blk.%d.ffn_down_exps.weight", il);
            if (S > 0) {
                rc |= add_tensor(l, il, FILL_NORMAL, 1, E, 1, 1, "blk.%d.ffn_gate_inp_shexp.weight",
                                 il);
                rc |=
                    add_tensor(l, il, FILL_NORMAL, 2, E, S, 1, "blk.%d.ffn_gate_shexp.weight", il);
                rc |= add_tensor(l, il, FILL_NORMAL, 2, E, S, 1, "blk.%d.ffn_up_shexp.weight", il);
                rc |=
                    add_tensor(l, il, FILL_NORMAL, 2, S, E, 1, "blk.%d.ffn_down_shexp.weight", il);
            }
        } else {
            const int64_t F = c->n_ff;
            rc |= add_tensor(l, il, FILL_NORMAL, 2, E, F, 1, "blk.%d.ffn_gate.weight", il);
            rc |= add_tensor(l, il, FILL_NORMAL, 2, E, F, 1, "blk.%d.ffn_up.weight", il);
            rc |= add_tensor(l, il, FILL_NORMAL, 2, F, E, 1, "blk.%d.ffn_down.weight", il);
        }
        if (is_mtp) { /* the MTP head: [embedding ; hidden] -> n_embd, its norms */
            rc |= add_tensor(l, il, FILL_NORMAL, 2, 2 * E, E, 1, "blk.%d.nextn.eh_proj.weight", il);
            rc |= add_tensor(l, il, FILL_NORM, 1, E, 1, 1, "blk.%d.nextn.enorm.weight", il);
            rc |= add_tensor(l, il, FILL_NORM, 1, E, 1, 1, "blk.%d.nextn.hnorm.weight", il);
            rc |= add_tensor(l, il, FILL_OUT_NORM, 1, E, 1, 1,
                             "blk.%d.nextn.shared_head_norm.weight", il);
        }
    }
    return rc;
}

static int build_tensor_list(const struct synth_cfg *c, struct tensor_list *l) {
    const int64_t E = c->n_embd, V = c->n_vocab, hd = c->head_dim;
    const int64_t q = (int64_t)c->n_head * hd, kv = (int64_t)c->n_head_kv * hd;
    int rc = 0;
    rc |= add_tensor(l, -1, FILL_NORMAL, 2, E, V, 1, "token_embd.weight");
    rc |= add_tensor(l, -1, FILL_OUT_NORM, 1, E, 1, 1, "output_norm.weight");
    if (!c->tied) rc |= add_tensor(l, -1, FILL_NORMAL, 2, E, V, 1, "output.weight");
    if (is_hybrid(c)) return rc || build_hybrid_list(c, l) ? ERR_NOMEM : 0;
    for (int il = 0; il < c->n_layer && !rc; il++) {
        rc |= add_tensor(l, il, FILL_NORM, 1, E, 1, 1, "blk.%d.attn_norm.weight", il);
        rc |= add_tensor(l, il, FILL_NORMAL, 2, E, q, 1, "blk.%d.attn_q.weight", il);
        rc |= add_tensor(l, il, FILL_NORMAL, 2, E, kv, 1, "blk.%d.attn_k.weight", il);
        rc |= add_tensor(l, il, FILL_NORMAL, 2, E, kv, 1, "blk.%d.attn_v.weight", il);
        rc |= add_tensor(l, il, FILL_NORMAL, 2, q, E, 1, "blk.%d.attn_output.weight", il);
        if (c->qkv_bias) {
            rc |= add_tensor(l, il, FILL_BIAS, 1, q, 1, 1, "blk.%d.attn_q.bias", il);
            rc |= add_tensor(l, il, FILL_BIAS, 1, kv, 1, 1, "blk.%d.attn_k.bias", il);
            rc |= add_tensor(l, il, FILL_BIAS, 1, kv, 1, 1, "blk.%d.attn_v.bias", il);
        }
        if (c->qk_norm) {
            rc |= add_tensor(l, il, FILL_NORM, 1, hd, 1, 1, "blk.%d.attn_q_norm.weight", il);
            rc |= add_tensor(l, il, FILL_NORM, 1, hd, 1, 1, "blk.%d.attn_k_norm.weight", il);
        }
        rc |= add_tensor(l, il, FILL_NORM, 1, E, 1, 1, "blk.%d.ffn_norm.weight", il);
        if (c->n_expert > 0) {
            const int64_t F = c->n_ff_exp, X = c->n_expert;
            rc |= add_tensor(l, il, FILL_NORMAL, 2, E, X, 1, "blk.%d.ffn_gate_inp.weight", il);
            rc |= add_tensor(l, il, FILL_NORMAL, 3, E, F, X, "blk.%d.ffn_gate_exps.weight", il);
            rc |= add_tensor(l, il, FILL_NORMAL, 3, E, F, X, "blk.%d.ffn_up_exps.weight", il);
            rc |= add_tensor(l, il, FILL_NORMAL, 3, F, E, X, "blk.%d.ffn_down_exps.weight", il);
        } else {
            const int64_t F = c->n_ff;
            rc |= add_tensor(l, il, FILL_NORMAL, 2, E, F, 1, "blk.%d.ffn_gate.weight", il);
            rc |= add_tensor(l, il, FILL_NORMAL, 2, E, F, 1, "blk.%d.ffn_up.weight", il);
            rc |= add_tensor(l, il, FILL_NORMAL, 2, F, E, 1, "blk.%d.ffn_down.weight", il);
        }
    }
    return rc ? ERR_NOMEM : 0;
}

/* ============================================================================================
 * Metadata: hyper-parameters and a tokenizer
 * ============================================================================================ */

static int set_hparams(struct gguf_writer *w, const struct synth_cfg *c,
                       const struct ftype_info *ft) {
    char key[128];
    int rc = 0;
#define ARCH_KEY(suffix) (snprintf(key, sizeof(key), "%s.%s", c->arch, suffix), key)
    rc |= gguf_writer_set_str(w, "general.architecture", c->arch);
    char name[96];
    snprintf(name, sizeof(name), "synthetic %s %s", c->preset, ft->name);
    rc |= gguf_writer_set_str(w, "general.name", name);
    rc |= gguf_writer_set_u32(w, "general.file_type", (uint32_t)ft->ftype);
    rc |= gguf_writer_set_u32(w, "general.quantization_version", 2);
    rc |= gguf_writer_set_u32(w, ARCH_KEY("context_length"), (uint32_t)c->n_ctx);
    rc |= gguf_writer_set_u32(w, ARCH_KEY("embedding_length"), (uint32_t)c->n_embd);
    rc |= gguf_writer_set_u32(w, ARCH_KEY("block_count"), (uint32_t)(c->n_layer + c->n_nextn));
    if (c->n_ff > 0 || is_hybrid(c)) /* llama.cpp's qwen35moe files carry the expert width */
        rc |= gguf_writer_set_u32(w, ARCH_KEY("feed_forward_length"),
                                  (uint32_t)(c->n_ff > 0 ? c->n_ff : c->n_ff_exp));
    rc |= gguf_writer_set_u32(w, ARCH_KEY("attention.head_count"), (uint32_t)c->n_head);
    rc |= gguf_writer_set_u32(w, ARCH_KEY("attention.head_count_kv"), (uint32_t)c->n_head_kv);
    rc |= gguf_writer_set_u32(w, ARCH_KEY("attention.key_length"), (uint32_t)c->head_dim);
    rc |= gguf_writer_set_u32(w, ARCH_KEY("attention.value_length"), (uint32_t)c->head_dim);
    rc |= gguf_writer_set_u32(w, ARCH_KEY("rope.dimension_count"),
                              (uint32_t)(c->n_rot > 0 ? c->n_rot : c->head_dim));
    rc |= gguf_writer_set_f32(w, ARCH_KEY("attention.layer_norm_rms_epsilon"), c->rms_eps);
    rc |= gguf_writer_set_f32(w, ARCH_KEY("rope.freq_base"), c->rope_base);
    if (c->n_expert > 0) {
        rc |= gguf_writer_set_u32(w, ARCH_KEY("expert_count"), (uint32_t)c->n_expert);
        rc |= gguf_writer_set_u32(w, ARCH_KEY("expert_used_count"), (uint32_t)c->n_expert_used);
        rc |= gguf_writer_set_u32(w, ARCH_KEY("expert_feed_forward_length"), (uint32_t)c->n_ff_exp);
    }
    if (is_hybrid(c)) {
        /* IMROPE sections (text: every section carries the position) */
        static const int32_t sections[4] = {11, 11, 10, 0};
        rc |= gguf_writer_set_arr(w, ARCH_KEY("rope.dimension_sections"), GGUF_TYPE_INT32, sections,
                                  4);
        rc |= gguf_writer_set_u32(w, ARCH_KEY("ssm.conv_kernel"), (uint32_t)c->ssm_d_conv);
        rc |= gguf_writer_set_u32(w, ARCH_KEY("ssm.state_size"), (uint32_t)c->ssm_d_state);
        rc |= gguf_writer_set_u32(w, ARCH_KEY("ssm.group_count"), (uint32_t)c->ssm_n_group);
        rc |= gguf_writer_set_u32(w, ARCH_KEY("ssm.time_step_rank"), (uint32_t)c->ssm_dt_rank);
        rc |= gguf_writer_set_u32(w, ARCH_KEY("ssm.inner_size"),
                                  (uint32_t)(c->ssm_dt_rank * c->ssm_d_state));
        rc |=
            gguf_writer_set_u32(w, ARCH_KEY("full_attention_interval"), (uint32_t)c->attn_interval);
        if (c->n_ff_shexp > 0)
            rc |= gguf_writer_set_u32(w, ARCH_KEY("expert_shared_feed_forward_length"),
                                      (uint32_t)c->n_ff_shexp);
        if (c->n_nextn > 0)
            rc |= gguf_writer_set_u32(w, ARCH_KEY("nextn_predict_layers"), (uint32_t)c->n_nextn);
    }
#undef ARCH_KEY
    return rc ? ERR_NOMEM : 0;
}

/* A SentencePiece vocabulary: <unk>, <s>, </s>, the 256 byte tokens, then "[PAD<i>]" up to
 * n_vocab (type unused). Any text tokenizes through byte fallback. */
static int set_builtin_vocab(struct gguf_writer *w, int n_vocab) {
    char **toks = mem_calloc((size_t)n_vocab, sizeof(char *));
    float *scores = mem_calloc((size_t)n_vocab, sizeof(float));
    int32_t *types = mem_calloc((size_t)n_vocab, sizeof(int32_t));
    int rc = ERR_NOMEM;
    if (!toks || !scores || !types) goto done;
    for (int i = 0; i < n_vocab; i++) {
        char s[32];
        if (i == 0)
            snprintf(s, sizeof(s), "<unk>"), types[i] = 2;
        else if (i == 1)
            snprintf(s, sizeof(s), "<s>"), types[i] = 3;
        else if (i == 2)
            snprintf(s, sizeof(s), "</s>"), types[i] = 3;
        else if (i < 259)
            snprintf(s, sizeof(s), "<0x%02X>", i - 3), types[i] = 6;
        else
            snprintf(s, sizeof(s), "[PAD%d]", i), types[i] = 5;
        scores[i] = i < 259 ? 0.0f : -1e9f;
        if (!(toks[i] = mem_strdup(s))) goto done;
    }
    rc = gguf_writer_set_str(w, "tokenizer.ggml.model", "llama");
    rc |= gguf_writer_set_str(w, "tokenizer.ggml.pre", "default");
    rc |= gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)toks,
                                  (uint64_t)n_vocab);
    rc |= gguf_writer_set_arr(w, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, scores,
                              (uint64_t)n_vocab);
    rc |= gguf_writer_set_arr(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, types,
                              (uint64_t)n_vocab);
    rc |= gguf_writer_set_u32(w, "tokenizer.ggml.unknown_token_id", 0);
    rc |= gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 1);
    rc |= gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", 2);
    rc |= gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", 1);
    rc = rc ? ERR_NOMEM : 0;
done:
    for (int i = 0; toks && i < n_vocab; i++) mem_free(toks[i]);
    mem_free(toks);
    mem_free(scores);
    mem_free(types);
    return rc;
}

/* Copies tokenizer.* from src and pads tokens/scores/token_type to n_vocab ("[PAD<i>]"). */
static int copy_vocab(struct gguf_writer *w, const struct gguf *src, int n_vocab,
                      struct error *err) {
    int64_t ti = gguf_find_key(src, "tokenizer.ggml.tokens");
    if (ti < 0 || gguf_kv_type(src, ti) != GGUF_TYPE_ARRAY ||
        gguf_kv_arr_type(src, ti) != GGUF_TYPE_STRING)
        return error_set(err, ERR_FORMAT, "--vocab-from: no tokenizer.ggml.tokens");
    uint64_t n_src = gguf_kv_arr_n(src, ti);
    if (n_src > (uint64_t)n_vocab)
        return error_set(err, ERR_INVALID, "--vocab-from has %llu tokens, more than n_vocab %d",
                         (unsigned long long)n_src, n_vocab);
    for (int64_t i = 0; i < gguf_n_kv(src); i++) {
        struct gguf_str k = gguf_kv_key(src, i);
        if (k.len < 10 || memcmp(k.data, "tokenizer.", 10)) continue;
        int rc = gguf_writer_copy_kv(w, src, i);
        if (rc) return error_set(err, rc, "copying tokenizer metadata failed");
    }
    if (n_src == (uint64_t)n_vocab) return 0;
    char **toks = mem_calloc((size_t)n_vocab, sizeof(char *));
    float *scores = mem_calloc((size_t)n_vocab, sizeof(float));
    int32_t *types = mem_calloc((size_t)n_vocab, sizeof(int32_t));
    int64_t si = gguf_find_key(src, "tokenizer.ggml.scores");
    int64_t yi = gguf_find_key(src, "tokenizer.ggml.token_type");
    int rc = ERR_NOMEM;
    if (!toks || !scores || !types) goto done;
    for (int i = 0; i < n_vocab; i++) {
        if ((uint64_t)i < n_src) {
            struct gguf_str s = gguf_kv_arr_str(src, ti, (uint64_t)i);
            toks[i] = mem_strndup(s.data, s.len);
            scores[i] = si >= 0 && (uint64_t)i < gguf_kv_arr_n(src, si)
                            ? (float)gguf_kv_arr_float(src, si, (uint64_t)i)
                            : 0.0f;
            types[i] = yi >= 0 && (uint64_t)i < gguf_kv_arr_n(src, yi)
                           ? (int32_t)gguf_kv_arr_int(src, yi, (uint64_t)i)
                           : 1;
        } else {
            char s[32];
            snprintf(s, sizeof(s), "[PAD%d]", i);
            toks[i] = mem_strdup(s);
            scores[i] = -1e9f;
            types[i] = 5;
        }
        if (!toks[i]) goto done;
    }
    rc = gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)toks,
                                 (uint64_t)n_vocab);
    if (si >= 0)
        rc |= gguf_writer_set_arr(w, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, scores,
                                  (uint64_t)n_vocab);
    rc |= gguf_writer_set_arr(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, types,
                              (uint64_t)n_vocab);
    rc = rc ? ERR_NOMEM : 0;
done:
    for (int i = 0; toks && i < n_vocab; i++) mem_free(toks[i]);
    mem_free(toks);
    mem_free(scores);
    mem_free(types);
    if (rc) error_set(err, rc, "out of memory padding the vocabulary");
    return rc;
}

/* ============================================================================================
 * Generating and quantizing tensor data (parallel over rows)
 * ============================================================================================ */

struct gen_args {
    const struct synth_tensor *t;
    uint64_t seed;
    float std, out_gain;
    int64_t n_rows, row0; /* rows of this chunk */
    float *f32;           /* [n_rows][ne0] scratch */
    void *dst;            /* quantized rows of the chunk */
    size_t row_bytes;
};

static void gen_task(void *p, int ith, int nth) {
    struct gen_args *a = p;
    int64_t ne0 = a->t->ne[0];
    const struct dtype_traits *tr = dtype_traits(a->t->type);
    uint64_t h = hash_name(a->t->name) ^ mix64(a->seed);
    for (int64_t r = ith; r < a->n_rows; r += nth) {
        struct rng g;
        rng_seed(&g, h ^ mix64((uint64_t)(a->row0 + r) + 0x1234567ULL));
        float *x = a->f32 + r * ne0;
        for (int64_t i = 0; i < ne0; i += 2) {
            double u1 = rng_unit(&g), u2 = rng_unit(&g), rad = sqrt(-2.0 * log(u1));
            double z0 = rad * cos(2 * M_PI * u2), z1 = rad * sin(2 * M_PI * u2);
            switch (a->t->fill) {
            case FILL_NORMAL:
                x[i] = (float)(z0 * a->std);
                if (i + 1 < ne0) x[i + 1] = (float)(z1 * a->std);
                break;
            case FILL_BIAS:
                x[i] = (float)(z0 * 0.3);
                if (i + 1 < ne0) x[i + 1] = (float)(z1 * 0.3);
                break;
            case FILL_SSM_A:
            case FILL_DT_BIAS:
            case FILL_CONV: {
                double lo = a->t->fill == FILL_SSM_A ? -0.6 : a->t->fill == FILL_CONV ? -0.5 : -1;
                double hi = a->t->fill == FILL_SSM_A ? -0.05 : -lo;
                x[i] = (float)(lo + (hi - lo) * u1);
                if (i + 1 < ne0) x[i + 1] = (float)(lo + (hi - lo) * u2);
                break;
            }
            case FILL_NORM:
            case FILL_OUT_NORM: {
                float gain = a->t->fill == FILL_OUT_NORM ? a->out_gain : 1.0f;
                x[i] = (float)(0.8 + 0.4 * u1) * gain;
                if (i + 1 < ne0) x[i + 1] = (float)(0.8 + 0.4 * u2) * gain;
                break;
            }
            }
        }
        tr->from_float(x, (char *)a->dst + (size_t)r * a->row_bytes, ne0);
    }
}

/* ============================================================================================
 * Command
 * ============================================================================================ */

static void usage(FILE *f) {
    fprintf(f,
            "usage: hearth synth --preset NAME -o OUT.gguf [--type T] [options]\n"
            "  --preset NAME      qwen3-0.6b, qwen3-1.7b, qwen3-4b, qwen3-8b, qwen3moe-30b-a3b,\n"
            "                     qwen2.5-0.5b, qwen2.5-7b, llama-3-8b, qwen3.6-27b,\n"
            "                     qwen3.6-35b-a3b, qwen3-tiny, qwen3moe-tiny, qwen2-tiny,\n"
            "                     llama-tiny, qwen35-tiny, qwen35moe-tiny\n"
            "  --type T           file type preset (default F16): %s\n"
            "  --layers N         override the number of blocks (e.g. a few layers of a big MoE;\n"
            "                     qwen3.6: trunk blocks, attention every --attn-interval-th)\n"
            "  --nextn N          qwen3.6: append N MTP blocks (0 or 1)\n"
            "  --n-vocab N --n-embd N --n-head N --n-head-kv N --head-dim N --n-ff N\n"
            "  --n-expert N --n-expert-used N --n-ff-exp N --n-ff-shexp N --attn-interval N\n"
            "                     other shape overrides\n"
            "  --vocab-from FILE  copy tokenizer.* from FILE (padded to n_vocab)\n"
            "  --seed S --std X   weight seed (default 1) and standard deviation (default 0.02)\n"
            "  -t N               threads (default: all CPUs)\n",
            ftype_list());
}

int tool_synth_main(int argc, char **argv) {
    const char *preset = NULL, *out_path = NULL, *type_name = "F16", *vocab_from = NULL;
    long long seed = 1, n_threads = 0;
    double std = 0.02;
    struct synth_cfg c;
    int have_preset = 0;
    enum { N_OV = 14 };
    long long overrides[N_OV];
    for (int i = 0; i < N_OV; i++) overrides[i] = -1;
    static const char *const ov_names[N_OV] = {
        "--layers",   "--n-vocab", "--n-embd",        "--n-head",        "--n-head-kv",
        "--head-dim", "--n-ff",    "--n-expert",      "--n-expert-used", "--n-ff-exp",
        "--ctx",      "--nextn",   "--attn-interval", "--n-ff-shexp"};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "hearth synth: %s needs a value (see --help)\n", a);
            return 1;
        }
        const char *v = argv[++i];
        char *end;
        errno = 0;
        if (!strcmp(a, "--preset"))
            preset = v;
        else if (!strcmp(a, "-o") || !strcmp(a, "--out"))
            out_path = v;
        else if (!strcmp(a, "--type"))
            type_name = v;
        else if (!strcmp(a, "--vocab-from"))
            vocab_from = v;
        else if (!strcmp(a, "--std")) {
            std = strtod(v, &end);
            if (*end || errno || !(std > 0)) goto bad_value;
        } else if (!strcmp(a, "--seed")) {
            seed = strtoll(v, &end, 10);
            if (*end || errno) goto bad_value;
        } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
            n_threads = strtoll(v, &end, 10);
            if (*end || errno || n_threads < 0 || n_threads > 512) goto bad_value;
        } else {
            int k;
            for (k = 0; k < N_OV; k++)
                if (!strcmp(a, ov_names[k])) break;
            if (k == N_OV) {
                fprintf(stderr, "hearth synth: unknown option '%s' (see --help)\n", a);
                return 1;
            }
            overrides[k] = strtoll(v, &end, 10);
            if (*end || errno || overrides[k] < 0 || overrides[k] > (1 << 24)) goto bad_value;
        }
        continue;
    bad_value:
        fprintf(stderr, "hearth synth: %s: bad value '%s'\n", a, v);
        return 1;
    }
    if (!preset || !out_path) {
        fprintf(stderr, "hearth synth: --preset and -o are required (see --help)\n");
        return 1;
    }
    for (size_t i = 0; i < sizeof(g_presets) / sizeof(g_presets[0]); i++)
        if (!strcasecmp(g_presets[i].preset, preset)) {
            c = g_presets[i];
            have_preset = 1;
        }
    if (!have_preset) {
        fprintf(stderr, "hearth synth: unknown preset '%s' (see --help)\n", preset);
        return 1;
    }
    const struct ftype_info *ft = ftype_find(type_name);
    if (!ft) {
        fprintf(stderr, "hearth synth: unknown type '%s' (one of %s)\n", type_name, ftype_list());
        return 1;
    }
    int *fields[N_OV] = {&c.n_layer,  &c.n_vocab, &c.n_embd,        &c.n_head,        &c.n_head_kv,
                         &c.head_dim, &c.n_ff,    &c.n_expert,      &c.n_expert_used, &c.n_ff_exp,
                         &c.n_ctx,    &c.n_nextn, &c.attn_interval, &c.n_ff_shexp};
    for (int k = 0; k < N_OV; k++)
        if (overrides[k] >= 0) *fields[k] = (int)overrides[k];
    if (c.n_layer < 1 || c.n_embd < 1 || c.n_head < 1 || c.n_head_kv < 1 ||
        c.n_head % c.n_head_kv || c.head_dim < 2 || c.n_vocab < 259 ||
        (c.n_expert > 0 && (c.n_expert_used < 1 || c.n_expert_used > c.n_expert)) ||
        (c.n_expert == 0 && c.n_ff < 1) || c.n_layer + c.n_nextn > 512 || c.n_rot > c.head_dim ||
        ((c.n_nextn > 0 || c.n_ff_shexp > 0) && !is_hybrid(&c)) ||
        (is_hybrid(&c) && (c.attn_interval < 1 || c.n_nextn > 1))) {
        fprintf(stderr, "hearth synth: inconsistent shape (check the overrides)\n");
        return 1;
    }

    int ret = 1;
    struct error err = {0};
    struct gguf_writer *w = NULL;
    struct gguf *vsrc = NULL;
    struct threadpool *pool = NULL;
    struct tensor_list tl = {0};
    float *f32 = NULL;
    void *qbuf = NULL;
    if (gguf_writer_create(&w, &err) || build_tensor_list(&c, &tl)) goto oom;
    if (set_hparams(w, &c, ft)) goto oom;
    if (vocab_from) {
        if (gguf_open(&vsrc, vocab_from, &err) || copy_vocab(w, vsrc, c.n_vocab, &err)) goto fail;
    } else if (set_builtin_vocab(w, c.n_vocab)) {
        goto oom;
    }
    uint64_t total = 0;
    int64_t max_tensor_bytes = 0, row_cap = c.n_embd > c.n_ff ? c.n_embd : c.n_ff;
    {
        struct mix_tensor *mt = mem_calloc((size_t)tl.n, sizeof(*mt));
        enum dtype *types = mem_calloc((size_t)tl.n, sizeof(*types));
        struct mix_params mp = {ft, 0, 0, 0, -1, -1, NULL, 0};
        struct mix_model mm = {c.arch, c.n_layer + c.n_nextn, c.n_expert, c.n_head, c.n_head_kv};
        int prc = !mt || !types ? ERR_NOMEM : 0;
        for (int i = 0; i < tl.n && !prc; i++)
            mt[i] = (struct mix_tensor){tl.t[i].name, tl.t[i].n_dims, tl.t[i].ne, DTYPE_F32};
        if (!prc) prc = quant_mix_plan(&mp, &mm, mt, tl.n, types, NULL, &err);
        for (int i = 0; i < tl.n && !prc; i++) tl.t[i].type = types[i];
        mem_free(mt);
        mem_free(types);
        if (prc) goto fail;
    }
    for (int i = 0; i < tl.n; i++) {
        if (tl.t[i].ne[0] > row_cap) row_cap = tl.t[i].ne[0];
        struct synth_tensor *t = &tl.t[i];
        if (!dtype_traits(t->type) || !dtype_traits(t->type)->from_float) {
            error_set(&err, ERR_UNSUPPORTED, "no quantizer for %s", dtype_name(t->type));
            goto fail;
        }
        int64_t nb = (int64_t)dtype_row_bytes(t->type, t->ne[0]) * t->ne[1] * t->ne[2];
        if (gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne, NULL, 0)) goto oom;
        total += (uint64_t)nb;
        if (nb > max_tensor_bytes) max_tensor_bytes = nb;
    }
    if (threadpool_create(&pool, n_threads > 0 ? (int)n_threads : threads_n_cpus())) goto oom;
    const int64_t chunk_rows = 256;
    f32 = mem_alloc((size_t)chunk_rows * (size_t)row_cap * sizeof(float) * 4 + (1 << 20));
    qbuf = mem_alloc((size_t)max_tensor_bytes);
    if (!f32 || !qbuf) goto oom;
    fprintf(stderr, "hearth synth: %s (%s), %d layers%s, %d tensors, %.2f GiB -> %s\n", c.preset,
            ft->name, c.n_layer, c.n_nextn ? " + MTP" : "", tl.n, (double)total / (1 << 30),
            out_path);
    if (gguf_writer_stream_begin(w, out_path, &err)) goto fail;
    float out_gain = (float)(4.0 / (std * sqrt((double)c.n_embd)));
    uint64_t done_bytes = 0;
    time_t last = 0;
    for (int i = 0; i < tl.n; i++) {
        struct synth_tensor *t = &tl.t[i];
        int64_t rows = t->ne[1] * t->ne[2];
        size_t row_bytes = dtype_row_bytes(t->type, t->ne[0]);
        int64_t max_rows_f32 = (chunk_rows * row_cap * 4) / t->ne[0];
        if (max_rows_f32 < 1) max_rows_f32 = 1;
        for (int64_t r0 = 0; r0 < rows; r0 += max_rows_f32) {
            struct gen_args ga = {t,
                                  (uint64_t)seed,
                                  (float)std,
                                  out_gain,
                                  rows - r0 < max_rows_f32 ? rows - r0 : max_rows_f32,
                                  r0,
                                  f32,
                                  (char *)qbuf + (size_t)r0 * row_bytes,
                                  row_bytes};
            threadpool_run(pool, gen_task, &ga);
        }
        if (gguf_writer_stream_tensor(w, qbuf, (uint64_t)row_bytes * (uint64_t)rows, &err))
            goto fail;
        done_bytes += (uint64_t)row_bytes * (uint64_t)rows;
        time_t now = time(NULL);
        if (now != last || i == tl.n - 1) {
            fprintf(stderr, "\r  [%3d%%] %d/%d tensors", (int)(100.0 * done_bytes / total), i + 1,
                    tl.n);
            last = now;
        }
    }
    fprintf(stderr, "\n");
    if (gguf_writer_stream_end(w, &err)) goto fail;
    ret = 0;
    goto done;
oom:
    error_set(&err, ERR_NOMEM, "out of memory");
fail:
    fprintf(stderr, "hearth synth: %s\n", err.msg);
done:
    mem_free(f32);
    mem_free(qbuf);
    mem_free(tl.t);
    threadpool_free(pool);
    gguf_close(vsrc);
    gguf_writer_free(w);
    return ret;
}
