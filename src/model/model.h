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
    float *logits; /* [SCRATCH_LOGIT_ROWS][n_vocab] */
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
};

const struct arch *arch_find(const char *name); /* NULL if unsupported */
const char *arch_supported_list(void);          /* "llama, qwen2, ..." */

struct model_params {
    int n_threads; /* 0 = all CPUs */
    int n_batch;   /* max tokens per forward pass (scratch sizing), default 512 */
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
void model_matmul_id(struct model *m, const struct tensor *w, const float *x, int x_per_slot,
                     const int32_t *ids, int n, int k, float *y);

/* Runs a batch after validating it (token ids < n_vocab, positions inside each cache,
 * sequences contiguous, n_tokens <= n_batch). ERR_INVALID / ERR_RANGE otherwise. */
int model_forward(struct model *m, const struct batch *b, struct error *err);

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
