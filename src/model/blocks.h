/* blocks.h: the shared pieces the architecture files build their forward passes from.
 *
 * Each block reads its input rows from one scratch buffer and writes its output rows to another,
 * for all n = batch->n_tokens rows at once, calling only backend ops. Optional weights (biases,
 * q/k norms) are applied when the layer has them; anything that differs between architectures
 * in a way weights can't express belongs in the arch file, not here.
 */
#ifndef HEARTH_BLOCKS_H
#define HEARTH_BLOCKS_H

#include "model.h"

/* x = token_embd rows of the batch's tokens -> scratch x. */
void block_embed(struct model *m, const struct batch *b);

/* Causal self-attention of layer il on in [n][n_embd] -> out [n][n_embd]:
 * q/k/v projections (+bias), per-head q/k RMSNorm when the layer has attn_q_norm/attn_k_norm,
 * RoPE (model rope params), KV store + attention per sequence, output projection (+bias). */
void block_attention(struct model *m, int il, const struct batch *b, const float *in, float *out);

/* The second half of block_attention: stores scratch k/v (normed, rotated) into layer il's KV
 * cache and attends scratch q to it, into scratch attn [n][n_head*head_dim_v], one call per run
 * of tokens of the same sequence. For architectures that build q/k/v their own way. */
void block_attend(struct model *m, int il, const struct batch *b);

/* SwiGLU FFN: out = ffn_down(silu(ffn_gate in) * ffn_up in). */
void block_ffn(struct model *m, const struct layer *l, int n, const float *in, float *out);

/* Routed MoE FFN (softmax over all experts, top-k, renormalised): out = sum_j w_j FFN_e_j(in). */
void block_moe(struct model *m, const struct layer *l, int n, const float *in, float *out);

/* Final norm and LM head for the batch's output rows of scratch x -> batch->logits. */
void block_output(struct model *m, const struct batch *b);

/* ---- weight binding helpers for the classic pre-norm block ---- */
enum bind_flags {
    BIND_QKV_BIAS = 1, /* attn_q/k/v.bias required (qwen2); otherwise optional */
    BIND_QK_NORM = 2,  /* attn_q_norm/attn_k_norm required (qwen3, qwen3moe) */
    BIND_MOE = 4,      /* routed experts instead of a dense FFN */
};

/* Binds token_embd (sets n_vocab), output_norm, output (tied to token_embd when absent). */
int block_bind_io(struct model *m, struct error *err);
/* Binds attn_norm, attn_q/k/v/output (+biases, +q/k norms per flags), ffn_norm and the dense
 * or MoE FFN of layer il. */
int block_bind_classic_layer(struct model *m, int il, int flags, struct error *err);

/* The classic pre-norm forward used by llama, qwen2, qwen3, qwen3moe:
 * x = embed; per layer x += attn(norm(x)); x += ffn_or_moe(norm(x)); logits = head(norm(x)). */
void block_forward_classic(struct model *m, const struct batch *b);

#endif
