/* arch_qwen3.c: `qwen3` (dense Qwen3).
 *
 * Like qwen2 without Q/K/V biases and with a per-head RMSNorm on q and k (attn_q_norm,
 * attn_k_norm, one {head_dim} weight shared by all heads) applied after the projection and before
 * NEOX RoPE. head_dim comes from attention.key_length (128 for every size, not n_embd/n_head).
 * Source of truth: llama.cpp src/models/qwen3.cpp; architectures.md section 3.
 */
#include "blocks.h"

static int qwen3_load(struct model *m, struct error *err) {
    struct model_hparams *hp = model_hparams_mut(m);
    int rc = model_load_common_hparams(m, ROPE_MODE_NEOX, err);
    if (rc || (rc = model_get_int(m, "feed_forward_length", 1, 0, 1, 1 << 20, &hp->n_ff, err)) ||
        (rc = block_bind_io(m, err)))
        return rc;
    for (int il = 0; il < hp->n_layer; il++)
        if ((rc = block_bind_classic_layer(m, il, BIND_QK_NORM, err))) return rc;
    return 0;
}

const struct arch arch_qwen3 = {"qwen3", qwen3_load, block_forward_classic, NULL};
