/* arch_llama.c: `llama` (Llama 1/2/3, Mistral, TinyStories...).
 *
 * Classic pre-norm block, NORM-style RoPE (adjacent pairs: the converter permuted Q/K rows so
 * this equals HF's rotate_half), optional attention biases, optional rope_freqs divisors
 * (Llama-3.1 long context), dense SwiGLU or routed experts (Mixtral-style files). Source of
 * truth: llama.cpp src/models/llama.cpp; ../shared/docs/reference/architectures.md section 1.
 */
#include "blocks.h"

static int llama_load(struct model *m, struct error *err) {
    struct model_hparams *hp = model_hparams_mut(m);
    int rc = model_load_common_hparams(m, ROPE_MODE_NORM, err);
    if (rc) return rc;
    if (hp->rope.n_rot != hp->head_dim)
        return error_set(err, ERR_FORMAT, "llama: rope.dimension_count %d must equal head dim %d",
                         hp->rope.n_rot, hp->head_dim);
    if ((rc = model_get_int(m, "expert_count", 0, 0, 0, 4096, &hp->n_expert, err))) return rc;
    int flags = 0;
    if (hp->n_expert > 0) {
        flags |= BIND_MOE;
        if ((rc = model_get_int(m, "expert_used_count", 1, 0, 1, hp->n_expert, &hp->n_expert_used,
                                err)))
            return rc;
    }
    if ((rc = model_get_int(m, "feed_forward_length", 1, 0, 1, 1 << 20, &hp->n_ff, err))) return rc;
    if (hp->n_expert > 0) hp->n_ff_exp = hp->n_ff;
    if ((rc = block_bind_io(m, err))) return rc;
    struct error e2 = {0};
    const struct tensor *ff =
        model_bind(m, 0, 1, (int64_t[]){hp->rope.n_rot / 2}, &e2, "rope_freqs.weight");
    if (!ff && e2.code) return error_set(err, e2.code, "%s", e2.msg);
    if (ff) {
        if (ff->type != DTYPE_F32) return error_set(err, ERR_UNSUPPORTED, "rope_freqs must be F32");
        hp->rope.freq_factors = (const float *)ff->data;
    }
    for (int il = 0; il < hp->n_layer; il++)
        if ((rc = block_bind_classic_layer(m, il, flags, err))) return rc;
    return 0;
}

const struct arch arch_llama = {"llama", llama_load, block_forward_classic, NULL};
