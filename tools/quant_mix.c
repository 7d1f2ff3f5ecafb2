/* quant_mix.c: per-tensor type rules for the file-type presets (see quant_mix.h).
 *
 * Source of truth: llama.cpp src/llama-quant.cpp (tensor_allows_quantization,
 * llama_tensor_get_type_impl, tensor_type_fallback, init_quantize_state_counters), the revision
 * that wrote ../shared/models/synthetic. Only the rules of the presets listed in g_ftypes are
 * ported; the IQ1/IQ2/IQ3 presets need grid quantizers hearth does not have.
 */
#include "quant_mix.h"

#include "../src/base/mem.h"

#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ============================================================================================
 * Presets
 * ============================================================================================ */

static const struct ftype_info g_ftypes[] = {
    {"F32", FTYPE_ALL_F32, DTYPE_F32, 0, "32-bit floats"},
    {"F16", FTYPE_MOSTLY_F16, DTYPE_F16, 0, "16-bit floats"},
    {"BF16", FTYPE_MOSTLY_BF16, DTYPE_BF16, 0, "bfloat16"},
    {"Q8_0", FTYPE_MOSTLY_Q8_0, DTYPE_Q8_0, 0, "8.5 bpw"},
    {"Q6_K", FTYPE_MOSTLY_Q6_K, DTYPE_Q6_K, 0, "6.56 bpw"},
    {"Q5_K_M", FTYPE_MOSTLY_Q5_K_M, DTYPE_Q5_K, 0, "Q5_K, Q6_K on half of attn_v/ffn_down"},
    {"Q5_K_S", FTYPE_MOSTLY_Q5_K_S, DTYPE_Q5_K, 0, "Q5_K"},
    {"Q4_K_M", FTYPE_MOSTLY_Q4_K_M, DTYPE_Q4_K, 0, "Q4_K, Q6_K on half of attn_v/ffn_down"},
    {"Q4_K_S", FTYPE_MOSTLY_Q4_K_S, DTYPE_Q4_K, 0, "Q4_K, Q5_K on the first attn_v/ffn_down"},
    {"Q4_K_XL", FTYPE_MOSTLY_Q4_K_M, DTYPE_Q4_K, 1,
     "dynamic: Q3_K..Q8_0 by measured error, at most Q4_K_M's size"},
    {"Q3_K_L", FTYPE_MOSTLY_Q3_K_L, DTYPE_Q3_K, 0, "Q3_K, Q5_K on attn_v/ffn_down"},
    {"Q3_K_M", FTYPE_MOSTLY_Q3_K_M, DTYPE_Q3_K, 0, "Q3_K, Q4_K/Q5_K on attn_v/ffn_down"},
    {"Q3_K_S", FTYPE_MOSTLY_Q3_K_S, DTYPE_Q3_K, 0, "Q3_K"},
    {"Q2_K", FTYPE_MOSTLY_Q2_K, DTYPE_Q2_K, 0, "Q2_K, Q3_K/Q4_K on attn_v/ffn_down"},
    {"Q4_0", FTYPE_MOSTLY_Q4_0, DTYPE_Q4_0, 0, "4.5 bpw, legacy"},
    {"Q4_1", FTYPE_MOSTLY_Q4_1, DTYPE_Q4_1, 0, "5.0 bpw, legacy"},
    {"Q5_0", FTYPE_MOSTLY_Q5_0, DTYPE_Q5_0, 0, "5.5 bpw, legacy"},
    {"Q5_1", FTYPE_MOSTLY_Q5_1, DTYPE_Q5_1, 0, "6.0 bpw, legacy"},
    {"IQ4_XS", FTYPE_MOSTLY_IQ4_XS, DTYPE_IQ4_XS, 0, "4.25 bpw, non-linear"},
    {"IQ4_NL", FTYPE_MOSTLY_IQ4_NL, DTYPE_IQ4_NL, 0, "4.5 bpw, non-linear"},
    {"MXFP4_MOE", FTYPE_MOSTLY_MXFP4_MOE, DTYPE_MXFP4, 0, "MXFP4 experts, Q8_0 elsewhere"},
};

#define N_FTYPES ((int)(sizeof(g_ftypes) / sizeof(g_ftypes[0])))

const struct ftype_info *ftype_find(const char *name) {
    for (int i = 0; i < N_FTYPES; i++)
        if (!strcasecmp(g_ftypes[i].name, name)) return &g_ftypes[i];
    return NULL;
}

const char *ftype_list(void) {
    return "F32, F16, BF16, Q8_0, Q6_K, Q5_K_M, Q5_K_S, Q4_K_M, Q4_K_S, Q4_K_XL, Q3_K_L, Q3_K_M, "
           "Q3_K_S, Q2_K, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_XS, IQ4_NL, MXFP4_MOE";
}

int ftype_count(void) {
    return N_FTYPES;
}

const struct ftype_info *ftype_at(int i) {
    return i >= 0 && i < N_FTYPES ? &g_ftypes[i] : NULL;
}

/* ============================================================================================
 * Tensor names: order, block index, categories, "is it ever quantized"
 * ============================================================================================ */

int quant_mix_layer(const char *name) {
    int il = -1;
    if (sscanf(name, "blk.%d.", &il) != 1) return -1;
    return il;
}

int quant_mix_name_cmp(const char *a, const char *b) {
    int la = quant_mix_layer(a), lb = quant_mix_layer(b);
    if (la != lb) return la < lb ? -1 : 1;
    return strcmp(a, b);
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !strcmp(s + n - m, suffix);
}

static int has(const char *name, const char *part) {
    return strstr(name, part) != NULL;
}

int quant_mix_is_quantizable(const char *name, int n_dims) {
    if (n_dims < 2 || !ends_with(name, "weight")) return 0;
    /* llama.cpp's list, minus architectures hearth will not meet (RWKV, T5, vision) */
    static const char *const keep[] = {
        "_norm.weight",
        "ffn_gate_inp.weight",
        "ffn_gate_tid2eid.weight",
        "altup",
        "laurel",
        "per_layer_model_proj",
        "ssm_conv1d",
        "shortconv.conv.weight",
        "indexer.k_proj.weight",
        "indexer.q_proj.weight",
        "attn_rel_b.weight",
        ".position_embd",
        ".rel_pos",
        ".patch_embd",
        ".patch_merger",
    };
    for (size_t i = 0; i < sizeof(keep) / sizeof(keep[0]); i++)
        if (has(name, keep[i])) return 0;
    if (!strcmp(name, "position_embd.weight") || !strcmp(name, "token_types.weight")) return 0;
    return 1;
}

enum category {
    CAT_TOKEN_EMBD,
    CAT_ATTN_Q,
    CAT_ATTN_V,
    CAT_ATTN_K,
    CAT_ATTN_QKV,
    CAT_ATTN_KV_B,
    CAT_ATTN_OUTPUT,
    CAT_FFN_UP,
    CAT_FFN_GATE,
    CAT_FFN_DOWN,
    CAT_OUTPUT,
    CAT_OTHER,
};

/* Broad categories by substring, first match wins (llama.cpp's tensor_get_category). */
static enum category category_of(const char *name) {
    if (!strcmp(name, "output.weight")) return CAT_OUTPUT;
    if (!strcmp(name, "token_embd.weight") || !strcmp(name, "per_layer_token_embd.weight"))
        return CAT_TOKEN_EMBD;
    if (has(name, "attn_qkv.weight")) return CAT_ATTN_QKV;
    if (has(name, "attn_kv_b.weight")) return CAT_ATTN_KV_B;
    if (has(name, "attn_v.weight")) return CAT_ATTN_V;
    if (has(name, "attn_k.weight")) return CAT_ATTN_K;
    if (has(name, "attn_q.weight")) return CAT_ATTN_Q;
    if (has(name, "attn_output.weight")) return CAT_ATTN_OUTPUT;
    if (has(name, "ffn_up")) return CAT_FFN_UP;
    if (has(name, "ffn_gate")) return CAT_FFN_GATE;
    if (has(name, "ffn_down")) return CAT_FFN_DOWN;
    return CAT_OTHER;
}

/* V-like tensors share one counter: in hybrid models (qwen35) attn_v of the attention layers
 * and attn_qkv of the linear-attention layers are counted together. */
static int is_attn_v_like(enum category c) {
    return c == CAT_ATTN_V || c == CAT_ATTN_QKV || c == CAT_ATTN_KV_B;
}

/* ============================================================================================
 * The rules (llama_tensor_get_type_impl)
 * ============================================================================================ */

struct mix_state {
    const struct mix_params *p;
    const struct mix_model *m;
    enum ftype ftype;
    int n_attention_wv, i_attention_wv; /* V-like tensors: total, seen so far */
    int n_ffn_down, i_ffn_down;         /* n = n_layer; i counts ffn_down tensors (dense) */
    int has_tied;                       /* no output.weight: token_embd is the LM head */
    int is_70b;
    int is_falcon;
    struct error *err;
    int failed;
};

/* First and last eighth of the layers, and every third layer between. */
static int use_more_bits(int i, int n) {
    return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;
}

static int n_gqa(const struct mix_model *m) {
    return m->n_head_kv > 0 ? m->n_head / m->n_head_kv : 0;
}

/* The layer an ffn tensor belongs to: for MoE models parsed from the name (expert tensors are
 * not in layer order in some files), else the running count. */
static int ffn_layer(struct mix_state *s, int counter, const char *name) {
    if (s->m->n_expert <= 1) return counter;
    int il = quant_mix_layer(name);
    if (il < 0 || il >= s->m->n_layer) {
        if (!s->failed)
            error_set(s->err, ERR_INVALID, "%s: block index outside [0, %d)", name, s->m->n_layer);
        s->failed = 1;
        return 0;
    }
    return il;
}

static enum dtype rule_type(struct mix_state *s, enum dtype t, const struct mix_tensor *x,
                            enum category cat) {
    const enum ftype ft = s->ftype;
    const struct mix_model *m = s->m;
    if (cat == CAT_OUTPUT || (s->has_tied && cat == CAT_TOKEN_EMBD)) {
        if (s->p->output_type >= 0) return (enum dtype)s->p->output_type;
        const struct dtype_traits *tr = dtype_traits(t);
        if (ft == FTYPE_MOSTLY_MXFP4_MOE)
            t = DTYPE_Q8_0;
        else if (s->is_falcon || !tr || x->ne[0] % tr->block_size != 0)
            t = DTYPE_Q8_0;
        else if (t != DTYPE_Q8_0)
            t = DTYPE_Q6_K;
        return t;
    }
    if (ft == FTYPE_MOSTLY_MXFP4_MOE) /* expert stacks MXFP4, everything else Q8_0 */
        return x->n_dims >= 3 && x->ne[2] > 1 ? DTYPE_MXFP4 : DTYPE_Q8_0;
    if (cat == CAT_TOKEN_EMBD) {
        if (s->p->token_embd_type >= 0) t = (enum dtype)s->p->token_embd_type;
        return t;
    }
    if (is_attn_v_like(cat)) {
        if (ft == FTYPE_MOSTLY_Q2_K)
            t = n_gqa(m) >= 4 ? DTYPE_Q4_K : DTYPE_Q3_K;
        else if (ft == FTYPE_MOSTLY_Q3_K_M)
            t = s->i_attention_wv < 2 ? DTYPE_Q5_K : DTYPE_Q4_K;
        else if (ft == FTYPE_MOSTLY_Q3_K_L)
            t = DTYPE_Q5_K;
        else if ((ft == FTYPE_MOSTLY_IQ4_NL || ft == FTYPE_MOSTLY_IQ4_XS) && n_gqa(m) >= 4)
            t = DTYPE_Q5_K;
        else if ((ft == FTYPE_MOSTLY_Q4_K_M || ft == FTYPE_MOSTLY_Q5_K_M) &&
                 use_more_bits(s->i_attention_wv, s->n_attention_wv))
            t = DTYPE_Q6_K;
        else if (ft == FTYPE_MOSTLY_Q4_K_S && s->i_attention_wv < 4)
            t = DTYPE_Q5_K;
        /* 70B: 8 query heads share each V head, so attn_v is small; more bits are cheap */
        if (s->is_70b && (t == DTYPE_Q3_K || t == DTYPE_Q4_K)) t = DTYPE_Q5_K;
        if (m->n_expert == 8) t = DTYPE_Q8_0;
        s->i_attention_wv++;
        return t;
    }
    if (cat == CAT_ATTN_K) {
        if (m->n_expert == 8) t = DTYPE_Q8_0;
        return t;
    }
    if (cat == CAT_FFN_DOWN) {
        int il = ffn_layer(s, s->i_ffn_down, x->name), n = s->n_ffn_down;
        if (ft == FTYPE_MOSTLY_Q2_K)
            t = DTYPE_Q3_K;
        else if (ft == FTYPE_MOSTLY_Q3_K_M)
            t = il < n / 16                             ? DTYPE_Q5_K
                : !s->is_falcon || use_more_bits(il, n) ? DTYPE_Q4_K
                                                        : DTYPE_Q3_K;
        else if (ft == FTYPE_MOSTLY_Q3_K_L)
            t = s->is_falcon ? DTYPE_Q4_K : DTYPE_Q5_K;
        else if (ft == FTYPE_MOSTLY_Q4_K_M) {
            if (s->is_falcon)
                t = il < n / 16 ? DTYPE_Q6_K : use_more_bits(il, n) ? DTYPE_Q5_K : DTYPE_Q4_K;
            else if (use_more_bits(il, n))
                t = DTYPE_Q6_K;
        } else if (il < n / 8 && (ft == FTYPE_MOSTLY_IQ4_NL || ft == FTYPE_MOSTLY_IQ4_XS) &&
                   !s->p->has_imatrix)
            t = DTYPE_Q5_K;
        else if (ft == FTYPE_MOSTLY_Q5_K_M && use_more_bits(il, n))
            t = DTYPE_Q6_K;
        else if (ft == FTYPE_MOSTLY_Q4_K_S && !s->is_falcon && il < n / 8)
            t = DTYPE_Q5_K;
        else if ((ft == FTYPE_MOSTLY_Q4_0 || ft == FTYPE_MOSTLY_Q5_0) && s->p->has_imatrix &&
                 il < n / 8)
            t = ft == FTYPE_MOSTLY_Q4_0 ? DTYPE_Q4_1 : DTYPE_Q5_1;
        s->i_ffn_down++;
        return t;
    }
    if (cat == CAT_ATTN_OUTPUT) {
        if (!s->is_falcon) {
            if (m->n_expert == 8) {
                if (ft == FTYPE_MOSTLY_Q2_K || ft == FTYPE_MOSTLY_Q3_K_S ||
                    ft == FTYPE_MOSTLY_Q3_K_M || ft == FTYPE_MOSTLY_IQ4_NL ||
                    ft == FTYPE_MOSTLY_Q4_K_S || ft == FTYPE_MOSTLY_Q4_K_M ||
                    ft == FTYPE_MOSTLY_IQ4_XS)
                    t = DTYPE_Q5_K;
            } else if (ft == FTYPE_MOSTLY_Q2_K) {
                t = DTYPE_Q3_K;
            } else if (ft == FTYPE_MOSTLY_Q3_K_M) {
                t = DTYPE_Q4_K;
            } else if (ft == FTYPE_MOSTLY_Q3_K_L) {
                t = DTYPE_Q5_K;
            }
        } else if (ft == FTYPE_MOSTLY_Q3_K_L) {
            t = DTYPE_Q4_K;
        }
        return t;
    }
    /* attn_qkv has its own rule in llama.cpp (Q5_K for Q4_K_M), but the V-like branch above
     * always takes it first. ffn_gate/ffn_up only move their counters (IQ3_XS rules). */
    if (cat == CAT_FFN_GATE || cat == CAT_FFN_UP) (void)ffn_layer(s, 0, x->name);
    return t;
}

/* A row length the type's block does not divide: llama.cpp's tensor_type_fallback. Sets
 * *fell to 1 when it changes anything. */
static enum dtype fallback(enum dtype t, int64_t ne0, int *fell) {
    const struct dtype_traits *tr = dtype_traits(t);
    if (tr && ne0 % tr->block_size == 0) return t;
    *fell = 1;
    enum dtype r;
    switch (t) {
    case DTYPE_IQ4_XS:
        r = DTYPE_IQ4_NL;
        break;
    case DTYPE_Q2_K:
    case DTYPE_Q3_K:
        r = DTYPE_Q4_0;
        break;
    case DTYPE_Q4_K:
        r = DTYPE_Q5_0;
        break;
    case DTYPE_Q5_K:
        r = DTYPE_Q5_1;
        break;
    case DTYPE_Q6_K:
        r = DTYPE_Q8_0;
        break;
    default:
        r = t; /* a 32-block type has nothing smaller to fall back to */
    }
    tr = dtype_traits(r);
    if (!tr || ne0 % tr->block_size != 0) r = DTYPE_F16;
    return r;
}

static int is_float_type(enum dtype t) {
    return t == DTYPE_F32 || t == DTYPE_F16 || t == DTYPE_BF16;
}

/* llama_tensor_get_type: overrides, then the preset's rules, then the shape fallback. */
static enum dtype choose(struct mix_state *s, const struct mix_tensor *x, enum category cat,
                         regex_t *re, int *fell, int *user) {
    const struct mix_params *p = s->p;
    if (!quant_mix_is_quantizable(x->name, x->n_dims)) return x->type;
    *user = 1;
    if (p->leave_output && !strcmp(x->name, "output.weight")) return x->type;
    /* llama.cpp returns these two without the shape check; hearth falls back rather than
     * writing a file no reader accepts */
    if (p->token_embd_type >= 0 && cat == CAT_TOKEN_EMBD)
        return fallback((enum dtype)p->token_embd_type, x->ne[0], fell);
    if (p->output_type >= 0 && cat == CAT_OUTPUT)
        return fallback((enum dtype)p->output_type, x->ne[0], fell);
    *user = 0;
    enum dtype t = p->ft->base;
    if (is_float_type(t)) return t;
    int manual = 0;
    for (int k = 0; k < p->n_override; k++) {
        if (regexec(&re[k], x->name, 0, NULL, 0) == 0) {
            t = p->override[k].type;
            manual = *user = 1;
            break;
        }
    }
    if (!manual && !p->pure) t = rule_type(s, t, x, cat);
    return fallback(t, x->ne[0], fell);
}

/* ============================================================================================
 * Planning a file
 * ============================================================================================ */

static int order_cmp(const void *a, const void *b, void *ctx) {
    const struct mix_tensor *t = ctx;
    int ia = *(const int *)a, ib = *(const int *)b;
    int c = quant_mix_name_cmp(t[ia].name, t[ib].name);
    return c ? c : (ia > ib) - (ia < ib);
}

int quant_mix_plan(const struct mix_params *p, const struct mix_model *m,
                   const struct mix_tensor *t, int n, enum dtype *types, uint8_t *flags,
                   struct error *err) {
    struct mix_state s = {0};
    s.p = p;
    s.m = m;
    s.ftype = p->ft->ftype;
    s.err = err;
    s.has_tied = 1;
    s.n_ffn_down = m->n_layer;
    const char *arch = m->arch ? m->arch : "";
    s.is_falcon = !strcmp(arch, "falcon");
    s.is_70b = m->n_layer == 80 &&
               ((!strcmp(arch, "llama") && m->n_head != m->n_head_kv) || !strcmp(arch, "qwen2"));
    for (int i = 0; i < n; i++) {
        enum category c = category_of(t[i].name);
        if (is_attn_v_like(c)) s.n_attention_wv++;
        if (c == CAT_OUTPUT) s.has_tied = 0;
    }

    int rc = 0;
    int n_re = 0;
    regex_t *re = p->n_override ? mem_calloc((size_t)p->n_override, sizeof(regex_t)) : NULL;
    int *order = mem_alloc((size_t)(n > 0 ? n : 1) * sizeof(int));
    if ((p->n_override && !re) || !order) {
        rc = error_set(err, ERR_NOMEM, "out of memory planning tensor types");
        goto done;
    }
    for (; n_re < p->n_override; n_re++) {
        char *pat = mem_strdup(p->override[n_re].pattern);
        if (!pat) {
            rc = error_set(err, ERR_NOMEM, "out of memory planning tensor types");
            goto done;
        }
        for (char *c = pat; *c; c++)
            if (*c >= 'A' && *c <= 'Z') *c = (char)(*c - 'A' + 'a');
        int rr = regcomp(&re[n_re], pat, REG_EXTENDED | REG_NOSUB);
        mem_free(pat);
        if (rr != 0) {
            rc = error_set(err, ERR_INVALID, "--tensor-type: bad regular expression '%s'",
                           p->override[n_re].pattern);
            goto done;
        }
    }
    for (int i = 0; i < n; i++) order[i] = i;
    qsort_r(order, (size_t)n, sizeof(int), order_cmp, (void *)t);
    for (int k = 0; k < n; k++) {
        int i = order[k], fell = 0, user = 0;
        types[i] = choose(&s, &t[i], category_of(t[i].name), re, &fell, &user);
        if (flags) flags[i] = (uint8_t)((fell ? MIX_FELL_BACK : 0) | (user ? MIX_USER : 0));
        if (s.failed) {
            rc = ERR_INVALID;
            goto done;
        }
    }
done:
    for (int k = 0; k < n_re; k++) regfree(&re[k]);
    mem_free(re);
    mem_free(order);
    return rc;
}

/* ============================================================================================
 * Budgeted allocation (dynamic presets)
 * ============================================================================================
 *
 * A greedy rate-distortion allocation: the classic answer to "spend B bytes over independent
 * items with convex cost curves" is to keep taking the step with the best cost drop per byte.
 * The curves here are close to convex (each extra bit cuts the squared error about 4x), and
 * considering jumps to any higher candidate (not just the next one) handles the dents.
 */

uint64_t quant_mix_allocate(const struct mix_alloc_item *items, int n, uint64_t budget,
                            int *choice) {
    uint64_t total = 0;
    for (int i = 0; i < n; i++) {
        choice[i] = 0;
        total += items[i].bytes[0];
    }
    for (;;) {
        int best_i = -1, best_c = -1;
        double best_rate = 0.0;
        for (int i = 0; i < n; i++) {
            const struct mix_alloc_item *it = &items[i];
            int c0 = choice[i];
            for (int c = c0 + 1; c < it->n_cand; c++) {
                if (it->bytes[c] <= it->bytes[c0]) continue;
                uint64_t extra = it->bytes[c] - it->bytes[c0];
                if (total + extra > budget) continue;
                double gain = it->cost[c0] - it->cost[c];
                if (!(gain > 0)) continue;
                double rate = gain / (double)extra;
                if (rate > best_rate) {
                    best_rate = rate;
                    best_i = i;
                    best_c = c;
                }
            }
        }
        if (best_i < 0) break;
        total += items[best_i].bytes[best_c] - items[best_i].bytes[choice[best_i]];
        choice[best_i] = best_c;
    }
    return total;
}
