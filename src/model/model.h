/* model.h: a loaded model = hyper-parameters + weights bound to the GGUF mapping + the
 * architecture's forward pass.
 *
 * model_load opens the GGUF, picks the architecture from general.architecture, and lets the
 * architecture file read its hparams and bind every tensor it needs (required/optional, with
 * shape and dtype checks). Everything is validated here, so forward() has no error paths. The
 * model owns the gguf mapping; every struct tensor points into it and lives until model_free.
 */
#ifndef HEARTH_MODEL_H
#define HEARTH_MODEL_H

#include "../backend/backend.h"
#include "../base/error.h"
#include "../gguf/gguf.h"
#include "../tensor/tensor.h"

#include <stdint.h>

#define MODEL_MAX_LAYERS 512

struct model_hparams {
    char arch[32];   /* general.architecture */
    int n_vocab;     /* rows of token_embd */
    int n_ctx_train; /* <arch>.context_length */
    int n_embd;
    int n_layer;     /* trunk blocks (block_count minus nextn layers) */
    int n_layer_all; /* block_count */
    int n_head, n_head_kv;
    int head_dim;   /* key_length (qwen3: not n_embd/n_head) */
    int head_dim_v; /* value_length */
    int n_ff;       /* dense FFN width (0 for MoE-only) */
    int n_expert, n_expert_used, n_ff_exp;
    float rms_eps;
    float attn_scale; /* 1/sqrt(head_dim) unless the file says otherwise */
    struct rope_params rope;

    /* hybrid Gated DeltaNet models (qwen35, qwen35moe); 0 otherwise */
    int n_nextn;           /* nextn_predict_layers: MTP blocks after the trunk (not run by it) */
    int n_ff_shexp;        /* shared expert width (qwen35moe) */
    int ssm_d_conv;        /* conv kernel size (4) */
    int ssm_d_state;       /* d_k: key head dim of the delta-rule state (128) */
    int ssm_n_group;       /* H_k: q/k heads */
    int ssm_dt_rank;       /* H_v: value heads */
    int ssm_d_inner;       /* H_v * d_v */
    int n_layer_recurrent; /* trunk layers that are recurrent */
    uint8_t is_recurrent[MODEL_MAX_LAYERS]; /* [n_layer_all] 1 = Gated DeltaNet layer */
};

/* Weights of one block; NULL where the architecture or file has none. Names follow GGUF. */
struct layer {
    const struct tensor *attn_norm;   /* {n_embd} */
    const struct tensor *attn_q;      /* {n_embd, n_head*head_dim} */
    const struct tensor *attn_k;      /* {n_embd, n_head_kv*head_dim} */
    const struct tensor *attn_v;      /* {n_embd, n_head_kv*head_dim_v} */
    const struct tensor *attn_output; /* {n_head*head_dim_v, n_embd} */
    const struct tensor *attn_q_bias, *attn_k_bias, *attn_v_bias, *attn_output_bias;
    const struct tensor *attn_q_norm;   /* {head_dim} (qwen3) */
    const struct tensor *attn_k_norm;   /* {head_dim} */
    const struct tensor *ffn_norm;      /* {n_embd} */
    const struct tensor *ffn_gate;      /* {n_embd, n_ff} */
    const struct tensor *ffn_up;        /* {n_embd, n_ff} */
    const struct tensor *ffn_down;      /* {n_ff, n_embd} */
    const struct tensor *ffn_gate_inp;  /* {n_embd, n_expert} router */
    const struct tensor *ffn_gate_exps; /* {n_embd, n_ff_exp, n_expert} */
    const struct tensor *ffn_up_exps;   /* {n_embd, n_ff_exp, n_expert} */
    const struct tensor *ffn_down_exps; /* {n_ff_exp, n_embd, n_expert} */

    /* hybrid models (qwen35, qwen35moe); C = 2*H_k*d_k + H_v*d_v conv channels, V = H_v*d_v */
    const struct tensor *post_attention_norm; /* {n_embd} the pre-FFN norm of these archs */
    const struct tensor *attn_qkv;            /* {n_embd, C} GDN input projection (q, k, v) */
    const struct tensor *attn_gate;           /* {n_embd, V} output gate z */
    const struct tensor *ssm_conv1d;          /* {d_conv, C} F32 */
    const struct tensor *ssm_dt;              /* {H_v} F32 (ssm_dt.bias) */
    const struct tensor *ssm_a;               /* {H_v} F32, A = -exp(A_log) */
    const struct tensor *ssm_beta;            /* {n_embd, H_v} */
    const struct tensor *ssm_alpha;           /* {n_embd, H_v} */
    const struct tensor *ssm_norm;            /* {d_v} F32 gated RMSNorm */
    const struct tensor *ssm_out;             /* {V, n_embd} */
    const struct tensor *ffn_gate_inp_shexp;  /* {n_embd} shared-expert gate (qwen35moe) */
    const struct tensor *ffn_gate_shexp;      /* {n_embd, n_ff_shexp} */
    const struct tensor *ffn_up_shexp;        /* {n_embd, n_ff_shexp} */
    const struct tensor *ffn_down_shexp;      /* {n_ff_shexp, n_embd} */
    /* MTP ("nextn") block, layers n_layer .. n_layer_all-1 (bound, not run by the trunk) */
    const struct tensor *nextn_eh_proj;          /* {2*n_embd, n_embd} */
    const struct tensor *nextn_enorm;            /* {n_embd} */
    const struct tensor *nextn_hnorm;            /* {n_embd} */
    const struct tensor *nextn_shared_head_norm; /* {n_embd} or NULL (use output_norm) */
    const struct tensor *nextn_embed_tokens;     /* {n_embd, n_vocab} or NULL (token_embd) */
    const struct tensor *nextn_shared_head_head; /* {n_embd, n_vocab} or NULL (output) */
};

struct model;

/* A batch of tokens for one forward pass. Tokens of the same sequence are contiguous and at
 * consecutive positions; each sequence has its own KV cache. */
struct batch {
    int n_tokens;
    const int32_t *tokens;   /* [n_tokens] */
    const int32_t *pos;      /* [n_tokens] absolute positions */
    const int32_t *seq;      /* [n_tokens] index into kv[] */
    struct kv_cache **kv;    /* per sequence */
    int n_outputs;           /* rows whose logits are wanted */
    const int32_t *out_rows; /* [n_outputs] indices into the batch, ascending */
    float *logits;           /* [n_outputs][n_vocab], host memory */
    /* Hybrid models: NULL, or [n_tokens] where a non-NULL entry asks for a copy of that token's
     * sequence's whole recurrent state (layout of kv->rs) after the token, written there. */
    float *const *rs_snap;
    /* Architectures with MTP blocks (arch->forward_mtp): NULL, or [n_tokens][n_embd] host memory
     * that receives every row's final normed hidden state (the trunk: RMSNorm(x; output_norm),
     * the MTP seed; an MTP pass: its shared_head_norm output, the seed of the next draft). */
    float *hidden;
    /* MTP passes only (model_forward_mtp): [n_tokens][n_embd] host memory, for each token the
     * hidden state of its sequence at the position before it (zeros where there is none). */
    const float *h_in;
};

/* Activation buffers for one forward pass of up to n_batch tokens, in backend memory. Shared by
 * every session of the model (forward passes are serialised), sized at load time. */
struct scratch {
    int n_batch;
    float *x;      /* [n_batch][n_embd] residual stream */
    float *xn;     /* [n_batch][n_embd] normalised input of a sub-block */
    float *q;      /* [n_batch][q_dim] queries (q_dim = n_head*head_dim) */
    float *k, *v;  /* [n_batch][n_head_kv*head_dim(_v)] */
    float *attn;   /* [n_batch][n_head*head_dim_v] attention output */
    float *ffn_a;  /* [n_batch][ff_max] gate (dense) or [n_batch][n_expert_used][n_ff_exp] */
    float *ffn_b;  /* same size: up */
    float *moe_y;  /* [n_batch][n_expert_used][n_embd] expert outputs */
    float *router; /* [n_batch][n_expert] router logits */
    int32_t *ids;  /* [n_batch][n_expert_used] host: routed experts */
    float *ew;     /* [n_batch][n_expert_used] host: expert weights */
    float *y;      /* [n_batch][n_embd] output of a sub-block before the residual add */
    float *out_h;  /* [n_batch][n_embd] hidden states of the output rows */
    /* hybrid models (0-sized otherwise) */
    float *mix;        /* [n_batch][max(C, 2*q_dim)] GDN qkv projection / attention q+gate */
    float *conv;       /* [n_batch][C] conv + silu output */
    float *ssm_z;      /* [n_batch][V] GDN output gate */
    float *ssm_alpha;  /* [n_batch][H_v] decay logits */
    float *ssm_beta;   /* [n_batch][H_v] update logits */
    float *ssm_o;      /* [n_batch][V] GDN output */
    float *y2;         /* [n_batch][n_embd] shared-expert output */
    float *shexp_gate; /* [n_batch] shared-expert gate logits */
    float *mtp_in;     /* [n_batch][2*n_embd] MTP: [RMSNorm(embed); RMSNorm(h)] (nextn files) */
    float *logits;     /* [SCRATCH_LOGIT_ROWS][n_vocab] */
};

#define SCRATCH_LOGIT_ROWS 8

/* Per-architecture entry points (one file each: arch_llama.c, arch_qwen3.c, ...). */
struct arch {
    const char *name; /* general.architecture value */
    /* Reads hparams and binds weights; validates shapes. ERR_FORMAT/ERR_UNSUPPORTED on bad
     * files, message naming the tensor or key. */
    int (*load)(struct model *m, struct error *err);
    /* Runs the batch; fills batch->logits. Never fails: inputs are checked by the caller. */
    void (*forward)(struct model *m, const struct batch *b);
    /* (optional) Runs the first MTP ("nextn") block over the batch: token x at position p with
     * batch->h_in = the trunk's hidden state at p-1; writes the block's K/V at p into the MTP
     * layer's cache (layer n_layer), the logits for the token after x into batch->logits (output
     * rows) and the block's normed output into batch->hidden (if set). */
    void (*forward_mtp)(struct model *m, const struct batch *b);
};

const struct arch *arch_find(const char *name); /* NULL if unsupported */
const char *arch_supported_list(void);          /* "llama, qwen2, ..." */

struct model_params {
    int n_threads; /* 0 = all CPUs */
    int n_batch;   /* max tokens per forward pass (scratch sizing), default 512 */
    int load;      /* enum gguf_load: how the file gets into memory (0 = auto) */
};

int model_load(struct model **out, const char *path, const struct model_params *p,
               struct error *err);
void model_free(struct model *m);

const struct model_hparams *model_hparams(const struct model *m);
struct backend *model_backend(const struct model *m);
const struct gguf *model_gguf(const struct model *m);
int model_n_batch(const struct model *m);
uint64_t model_n_params(const struct model *m);
uint64_t model_weight_bytes(const struct model *m);

/* Observer of matmul inputs (for importance matrices): called before every matrix product with
 * the weight, the n_rows input rows of row_len floats (host memory on the CPU backend), and for
 * expert stacks the routed expert ids ([n_tokens][n_used]; x rows are per token when
 * x_per_slot == 0, per (token, slot) otherwise). NULL ids for ordinary matrices. */
typedef void (*model_observe_fn)(void *ctx, const struct tensor *w, const float *x, int n_rows,
                                 int row_len, const int32_t *ids, int n_used, int x_per_slot);
void model_set_observer(struct model *m, model_observe_fn fn, void *ctx);

/* The matmuls model code must use (they feed the observer): see backend.h matmul/matmul_id. */
void model_matmul(struct model *m, const struct tensor *w, const struct tensor *bias,
                  const float *x, float *y, int n);
/* y[i] = w[i] x (+ bias[i]) for n_w (<= BACKEND_MULTI_MAX) matrices in one backend job; bias
 * may be NULL, and so may each bias[i]. */
void model_matmul_multi(struct model *m, int n_w, const struct tensor *const *w,
                        const struct tensor *const *bias, const float *x, float *const *y, int n);
void model_matmul_id(struct model *m, const struct tensor *w, const float *x, int x_per_slot,
                     const int32_t *ids, int n, int k, float *y);

/* Runs a batch after validating it (token ids < n_vocab, positions inside each cache,
 * sequences contiguous, n_tokens <= n_batch). ERR_INVALID / ERR_RANGE otherwise. */
int model_forward(struct model *m, const struct batch *b, struct error *err);

/* Whether the model can draft with its MTP block: the file has nextn layers and the
 * architecture runs them (qwen35, qwen35moe). */
int model_has_mtp(const struct model *m);
/* The MTP pass (arch->forward_mtp) after the same validation as model_forward, plus: the model
 * has MTP, batch->h_in is set and every cache has the MTP layer (kv_cache_alloc_layer of layer
 * n_layer). ERR_UNSUPPORTED without MTP, ERR_INVALID otherwise. */
int model_forward_mtp(struct model *m, const struct batch *b, struct error *err);

/* ---- used by the architecture files (model.c) ---- */

/* Mutable access to hparams and weight slots while loading. */
struct model_hparams *model_hparams_mut(struct model *m);
struct layer *model_layers(struct model *m); /* [n_layer_all] */
const struct tensor **model_tok_embd(struct model *m);
const struct tensor **model_output_norm(struct model *m);
const struct tensor **model_output(struct model *m);
struct scratch *model_scratch(struct model *m);

/* Binds tensor `name` (printf-style) with expected dims ne[0..n_dims) (-1 = any). Returns the
 * view, or NULL: if absent and !required (no error), or with err set (ERR_FORMAT: wrong shape,
 * missing required; ERR_UNSUPPORTED: dtype hearth can't compute with). */
const struct tensor *model_bind(struct model *m, int required, int n_dims, const int64_t *ne,
                                struct error *err, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

/* Hparam readers: "<arch>.<suffix>" as int/float; default used when absent. ERR_FORMAT if
 * present with a wrong type or out of [lo, hi]. Per-layer arrays: the first element is used
 * (hearth requires uniform layers for now; a non-uniform array is ERR_UNSUPPORTED). */
int model_get_int(struct model *m, const char *suffix, int required, int64_t def, int64_t lo,
                  int64_t hi, int *out, struct error *err);
int model_get_float(struct model *m, const char *suffix, int required, double def, float *out,
                    struct error *err);
/* Reads the shared attention hparams (heads, dims, eps, rope incl. scaling keys). */
int model_load_common_hparams(struct model *m, enum rope_mode mode, struct error *err);

#endif
