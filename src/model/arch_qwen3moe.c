/* arch_qwen3moe.c: `qwen3moe` (Qwen3-30B-A3B, Qwen3-235B-A22B).
 *
 * qwen3 attention (per-head q/k norm, NEOX RoPE) with the FFN replaced by routed experts and no
 * shared expert: softmax over all experts, top expert_used_count, weights renormalised to sum 1.
 * Source of truth: llama.cpp src/models/qwen3moe.cpp and build_moe_ffn; architectures.md sec. 4.
 */
#include "blocks.h"

static int qwen3moe_load(struct model *m, struct error *err) {
    struct model_hparams *hp = model_hparams_mut(m);
    int rc = model_load_common_hparams(m, ROPE_MODE_NEOX, err);
    if (rc || (rc = model_get_int(m, "expert_count", 1, 0, 1, 4096, &hp->n_expert, err)) ||
        (rc = model_get_int(m, "expert_used_count", 1, 0, 1, hp->n_expert, &hp->n_expert_used,
                            err)) ||
        (rc = model_get_int(m, "expert_feed_forward_length", 1, 0, 1, 1 << 20, &hp->n_ff_exp,
                            err)) ||
        (rc = block_bind_io(m, err)))
        return rc;
    for (int il = 0; il < hp->n_layer; il++)
        if ((rc = block_bind_classic_layer(m, il, BIND_QK_NORM | BIND_MOE, err))) return rc;
    return 0;
}

const struct arch arch_qwen3moe = {"qwen3moe", qwen3moe_load, block_forward_classic, NULL};
