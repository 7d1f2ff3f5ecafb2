/* quant_mix.c: per-tensor type rules for the file-type presets (see quant_mix.h). */
#include "quant_mix.h"

#include <string.h>
#include <strings.h>

static const struct ftype_info g_ftypes[] = {
    {"F32", FTYPE_ALL_F32, DTYPE_F32},
    {"F16", FTYPE_MOSTLY_F16, DTYPE_F16},
    {"BF16", FTYPE_MOSTLY_BF16, DTYPE_BF16},
    {"Q8_0", FTYPE_MOSTLY_Q8_0, DTYPE_Q8_0},
    {"Q4_0", FTYPE_MOSTLY_Q4_0, DTYPE_Q4_0},
    {"Q4_1", FTYPE_MOSTLY_Q4_1, DTYPE_Q4_1},
    {"Q5_0", FTYPE_MOSTLY_Q5_0, DTYPE_Q5_0},
    {"Q5_1", FTYPE_MOSTLY_Q5_1, DTYPE_Q5_1},
    {"Q6_K", FTYPE_MOSTLY_Q6_K, DTYPE_Q6_K},
    {"Q5_K_M", FTYPE_MOSTLY_Q5_K_M, DTYPE_Q5_K},
    {"Q5_K_S", FTYPE_MOSTLY_Q5_K_S, DTYPE_Q5_K},
    {"Q4_K_M", FTYPE_MOSTLY_Q4_K_M, DTYPE_Q4_K},
    {"Q4_K_S", FTYPE_MOSTLY_Q4_K_S, DTYPE_Q4_K},
    {"IQ4_XS", FTYPE_MOSTLY_IQ4_XS, DTYPE_IQ4_XS},
    {"IQ4_NL", FTYPE_MOSTLY_IQ4_NL, DTYPE_IQ4_NL},
};

const struct ftype_info *ftype_find(const char *name) {
    for (size_t i = 0; i < sizeof(g_ftypes) / sizeof(g_ftypes[0]); i++)
        if (!strcasecmp(g_ftypes[i].name, name)) return &g_ftypes[i];
    return NULL;
}

const char *ftype_list(void) {
    return "F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q6_K, Q5_K_M, Q5_K_S, Q4_K_M, Q4_K_S, "
           "IQ4_XS, IQ4_NL";
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !strcmp(s + n - m, suffix);
}

static int has_part(const char *name, const char *part) {
    return strstr(name, part) != NULL;
}

int quant_mix_is_quantizable(const char *name, int n_dims) {
    if (n_dims < 2 || !ends_with(name, ".weight")) return 0;
    /* never quantized: routers, norms, recurrent-layer parameters, position tables */
    /* (ssm_a and ssm_dt.bias have no ".weight"; ssm_alpha.weight is quantized, as llama.cpp does)
     */
    static const char *const keep[] = {"_norm", "ffn_gate_inp", "ssm_conv1d", "rope_freqs",
                                       "pos_embd"};
    for (size_t i = 0; i < sizeof(keep) / sizeof(keep[0]); i++)
        if (has_part(name, keep[i])) return 0;
    return 1;
}

/* llama.cpp's "use more bits" layer pattern: first and last eighth, and every third between. */
static int use_more_bits(int i, int n) {
    return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;
}

/* Same-size type for rows that are not a multiple of QK_K. */
static enum dtype fallback_32(enum dtype t) {
    switch (t) {
    case DTYPE_Q2_K:
    case DTYPE_Q3_K:
    case DTYPE_IQ4_XS:
        return DTYPE_IQ4_NL;
    case DTYPE_Q4_K:
        return DTYPE_Q5_0;
    case DTYPE_Q5_K:
        return DTYPE_Q5_1;
    case DTYPE_Q6_K:
        return DTYPE_Q8_0;
    default:
        return t;
    }
}

enum dtype quant_mix_choose(const struct ftype_info *ft, const struct mix_tensor *t) {
    if (!quant_mix_is_quantizable(t->name, t->n_dims)) return DTYPE_F32;
    enum dtype type = ft->base;
    if (type == DTYPE_F32 || type == DTYPE_F16 || type == DTYPE_BF16) return type;
    int is_kq = ft->ftype == FTYPE_MOSTLY_Q4_K_M || ft->ftype == FTYPE_MOSTLY_Q4_K_S ||
                ft->ftype == FTYPE_MOSTLY_Q5_K_M || ft->ftype == FTYPE_MOSTLY_Q5_K_S ||
                ft->ftype == FTYPE_MOSTLY_Q6_K || ft->ftype == FTYPE_MOSTLY_IQ4_XS;
    int is_head = !strcmp(t->name, "output.weight") ||
                  (!t->has_output && !strcmp(t->name, "token_embd.weight"));
    int is_m = ft->ftype == FTYPE_MOSTLY_Q4_K_M || ft->ftype == FTYPE_MOSTLY_Q5_K_M;
    if (is_head) {
        if (ft->ftype != FTYPE_MOSTLY_Q8_0) type = DTYPE_Q6_K;
    } else if ((has_part(t->name, "attn_v.weight") || has_part(t->name, "attn_qkv.weight")) &&
               t->layer >= 0) {
        /* llama.cpp counts attn_qkv (the Gated DeltaNet input projection of qwen35) with attn_v:
         * one V-like tensor per block, so the index is the block index */
        if (is_m && use_more_bits(t->layer, t->n_layer))
            type = DTYPE_Q6_K;
        else if (ft->ftype == FTYPE_MOSTLY_Q4_K_S && t->layer < 4)
            type = DTYPE_Q5_K;
    } else if ((has_part(t->name, "ffn_down") || has_part(t->name, "ffn_down_exps") ||
                has_part(t->name, "ffn_down_shexp")) &&
               t->layer >= 0) {
        if (is_m && use_more_bits(t->layer, t->n_layer))
            type = DTYPE_Q6_K;
        else if (ft->ftype == FTYPE_MOSTLY_Q4_K_S && t->layer < t->n_layer / 8)
            type = DTYPE_Q5_K;
    }
    if (is_kq || type == DTYPE_Q6_K || type == DTYPE_Q5_K || type == DTYPE_Q4_K) {
        if (t->ne[0] % QK_K != 0) type = fallback_32(type);
    }
    const struct dtype_traits *tr = dtype_traits(type);
    if (!tr || t->ne[0] % tr->block_size != 0) return DTYPE_F16;
    return type;
}
