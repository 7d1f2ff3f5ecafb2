/* arch_qwen2.c: `qwen2` (Qwen2, Qwen2.5).
 *
 * Classic pre-norm block with biases on Q, K and V (required), NEOX RoPE over the whole head,
 * dense SwiGLU, LM head tied to token_embd when output.weight is absent. Source of truth:
 * llama.cpp src/models/qwen2.cpp; ../shared/docs/reference/architectures.md section 2.
 */
#include "blocks.h"

static int qwen2_load(struct model *m, struct error *err) {
    struct model_hparams *hp = model_hparams_mut(m);
    int rc = model_load_common_hparams(m, ROPE_MODE_NEOX, err);
    if (rc || (rc = model_get_int(m, "feed_forward_length", 1, 0, 1, 1 << 20, &hp->n_ff, err)) ||
        (rc = block_bind_io(m, err)))
        return rc;
    for (int il = 0; il < hp->n_layer; il++)
        if ((rc = block_bind_classic_layer(m, il, BIND_QKV_BIAS, err))) return rc;
    return 0;
}

const struct arch arch_qwen2 = {"qwen2", qwen2_load, block_forward_classic, NULL};
