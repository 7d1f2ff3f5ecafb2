/* quant_mix.h: which dtype each tensor gets under a file-type preset (Q4_K_M, Q8_0, ...).
 *
 * Shared by `hearth synth` (random-weight files at real shapes) and `hearth quantize`. The rules
 * follow llama.cpp's documented behaviour for its presets: 1-D tensors, norms, routers and
 * recurrent-state parameters stay F32; the LM head (or a tied token_embd) gets Q6_K under the
 * K-quant presets; _M presets give Q6_K to attn_v and ffn_down of the first and last eighth of
 * the layers and every third layer between; rows that are not a multiple of 256 fall back to a
 * 32-block type of similar size.
 */
#ifndef HEARTH_QUANT_MIX_H
#define HEARTH_QUANT_MIX_H

#include "../src/tensor/dtype.h"

#include <stdint.h>

enum ftype {
    FTYPE_ALL_F32 = 0,
    FTYPE_MOSTLY_F16 = 1,
    FTYPE_MOSTLY_Q4_0 = 2,
    FTYPE_MOSTLY_Q4_1 = 3,
    FTYPE_MOSTLY_Q8_0 = 7,
    FTYPE_MOSTLY_Q5_0 = 8,
    FTYPE_MOSTLY_Q5_1 = 9,
    FTYPE_MOSTLY_Q2_K = 10,
    FTYPE_MOSTLY_Q3_K_M = 12,
    FTYPE_MOSTLY_Q4_K_S = 14,
    FTYPE_MOSTLY_Q4_K_M = 15,
    FTYPE_MOSTLY_Q5_K_S = 16,
    FTYPE_MOSTLY_Q5_K_M = 17,
    FTYPE_MOSTLY_Q6_K = 18,
    FTYPE_MOSTLY_IQ4_NL = 25,
    FTYPE_MOSTLY_IQ4_XS = 30,
    FTYPE_MOSTLY_BF16 = 32,
};

struct ftype_info {
    const char *name;  /* "Q4_K_M" */
    enum ftype ftype;  /* general.file_type value */
    enum dtype base;   /* default matrix type */
};

/* Looks up a preset name (case-insensitive); NULL if unknown. */
const struct ftype_info *ftype_find(const char *name);
const char *ftype_list(void); /* "F32, F16, ..." for messages */

/* Context of one tensor for the mix rules. */
struct mix_tensor {
    const char *name;  /* GGUF name, e.g. "blk.3.attn_v.weight" */
    int n_dims;
    const int64_t *ne;
    int layer;         /* block index, -1 if not in a block */
    int n_layer;       /* number of blocks (block_count: MTP blocks included) */
    int has_output;    /* file has a separate output.weight (else token_embd is the head) */
};

/* The dtype this tensor gets under ftype (F32 for tensors that are never quantized). */
enum dtype quant_mix_choose(const struct ftype_info *ft, const struct mix_tensor *t);

/* Whether a tensor is ever quantized (matrices that are weights of a linear map/embedding). */
int quant_mix_is_quantizable(const char *name, int n_dims);

#endif
