/* quant_mix.h: which dtype each tensor gets under a file-type preset (Q4_K_M, Q8_0, ...).
 *
 * Shared by `hearth synth` (random-weight files at real shapes) and `hearth quantize`. The
 * standard presets reproduce llama.cpp's llama-quantize (src/llama-quant.cpp, the revision that
 * made ../shared/models/synthetic) tensor by tensor: which tensors are never quantized, the
 * per-category rules of each preset (LM head, V-like attention tensors counted in file order,
 * ffn_down by layer, the 8-expert and 70B special cases), user overrides, and the fallback to a
 * 32-block type when a row length is not a multiple of 256. The rules are stateful (running
 * counters over the tensors), so a whole file is planned at once, in llama.cpp's tensor order
 * (quant_mix_name_cmp).
 *
 * The dynamic preset Q4_K_XL is not a rule table: quant_mix_allocate distributes a byte budget
 * over per-tensor candidate types from measured errors (tools/quantize.c measures them).
 * This module only decides types; it reads and writes no tensor data.
 */
#ifndef HEARTH_QUANT_MIX_H
#define HEARTH_QUANT_MIX_H

#include "../src/base/error.h"
#include "../src/tensor/dtype.h"

#include <stdint.h>

/* llama.cpp's llama_ftype values (general.file_type). */
enum ftype {
    FTYPE_ALL_F32 = 0,
    FTYPE_MOSTLY_F16 = 1,
    FTYPE_MOSTLY_Q4_0 = 2,
    FTYPE_MOSTLY_Q4_1 = 3,
    FTYPE_MOSTLY_Q8_0 = 7,
    FTYPE_MOSTLY_Q5_0 = 8,
    FTYPE_MOSTLY_Q5_1 = 9,
    FTYPE_MOSTLY_Q2_K = 10,
    FTYPE_MOSTLY_Q3_K_S = 11,
    FTYPE_MOSTLY_Q3_K_M = 12,
    FTYPE_MOSTLY_Q3_K_L = 13,
    FTYPE_MOSTLY_Q4_K_S = 14,
    FTYPE_MOSTLY_Q4_K_M = 15,
    FTYPE_MOSTLY_Q5_K_S = 16,
    FTYPE_MOSTLY_Q5_K_M = 17,
    FTYPE_MOSTLY_Q6_K = 18,
    FTYPE_MOSTLY_IQ4_NL = 25,
    FTYPE_MOSTLY_IQ4_XS = 30,
    FTYPE_MOSTLY_BF16 = 32,
    FTYPE_MOSTLY_MXFP4_MOE = 38,
};

struct ftype_info {
    const char *name;  /* "Q4_K_M" */
    enum ftype ftype;  /* general.file_type value written to the file */
    enum dtype base;   /* default matrix type */
    int is_dynamic;    /* 1 for Q4_K_XL: types come from quant_mix_allocate, not the rules */
    const char *about; /* one line for --help */
};

/* Looks up a preset name (case-insensitive); NULL if unknown. */
const struct ftype_info *ftype_find(const char *name);
const char *ftype_list(void); /* "F32, F16, ..." for messages */
int ftype_count(void);
const struct ftype_info *ftype_at(int i);

/* Model-level facts the rules need (from the file's metadata). */
struct mix_model {
    const char *arch; /* general.architecture */
    int n_layer;      /* {arch}.block_count, MTP blocks included (llama.cpp's n_layer_all) */
    int n_expert;     /* {arch}.expert_count, 0 for dense models */
    int n_head;       /* attention.head_count of layer 0 */
    int n_head_kv;    /* attention.head_count_kv of layer 0 (0 if absent) */
};

/* One tensor to plan. */
struct mix_tensor {
    const char *name;  /* GGUF name, e.g. "blk.3.attn_v.weight" */
    int n_dims;        /* 1..4 */
    const int64_t *ne; /* [n_dims] elements per dim */
    enum dtype type;   /* current type: kept by tensors that are never quantized */
};

/* --tensor-type PATTERN=TYPE: an extended regular expression searched in the tensor name (the
 * pattern is lower-cased first, as llama-quantize does); the first match wins. */
struct mix_override {
    const char *pattern;
    enum dtype type;
};

struct mix_params {
    const struct ftype_info *ft;
    int has_imatrix;                     /* an importance matrix is used (changes some rules) */
    int pure;                            /* --pure: the base type everywhere (no mix rules) */
    int leave_output;                    /* --leave-output-tensor: output.weight not quantized */
    int output_type;                     /* --output-tensor-type as enum dtype, -1 if unset */
    int token_embd_type;                 /* --token-embedding-type, -1 if unset */
    const struct mix_override *override; /* [n_override] */
    int n_override;
};

/* llama.cpp's tensor order (the order of its weights map, which the counters run in and
 * llama-quantize writes): by block index (tensors outside blocks first), then by name. */
int quant_mix_name_cmp(const char *a, const char *b);

/* Per-tensor facts quant_mix_plan reports besides the type. */
enum mix_flag {
    MIX_FELL_BACK = 1, /* the row length forced a fallback type (llama-quantize's warning) */
    MIX_USER = 2,      /* the type comes from --tensor-type / --output-tensor-type /
                          --token-embedding-type / --leave-output-tensor, not from the preset */
};

/* Plans the whole file: types[i] for t[i] (t in any order; the rules' counters run in
 * quant_mix_name_cmp order). For a dynamic preset this is the starting point (the Q4_K_M
 * rules). flags (may be NULL) gets the mix_flag bits of each tensor. Returns 0, ERR_INVALID
 * (bad override pattern; a bad block index in an expert tensor's name) or ERR_NOMEM, with a
 * message in err. */
int quant_mix_plan(const struct mix_params *p, const struct mix_model *m,
                   const struct mix_tensor *t, int n, enum dtype *types, uint8_t *flags,
                   struct error *err);

/* Whether llama.cpp would ever quantize this tensor (2-D/3-D weight matrices, not norms,
 * routers, convolution kernels or position tables). */
int quant_mix_is_quantizable(const char *name, int n_dims);

/* Block index of "blk.N....", or -1. */
int quant_mix_layer(const char *name);

/* ---- dynamic allocation (Q4_K_XL) ----
 * Each item is one tensor with its candidate types, cheapest first: bytes[c] of the whole
 * tensor and cost[c], the expected harm (measured error times a sensitivity; must not increase
 * with c for the allocation to be meaningful). quant_mix_allocate starts every item at
 * candidate 0 and repeatedly takes the upgrade (to any higher candidate of one item) with the
 * largest cost reduction per extra byte while the total stays <= budget. Deterministic (ties go
 * to the lower index). Writes the chosen candidate index per item and returns the total bytes
 * (the floor, above the budget, if the cheapest candidates already exceed it). */
#define MIX_MAX_CANDIDATES 8
struct mix_alloc_item {
    int n_cand;
    uint64_t bytes[MIX_MAX_CANDIDATES];
    double cost[MIX_MAX_CANDIDATES];
};
uint64_t quant_mix_allocate(const struct mix_alloc_item *items, int n, uint64_t budget,
                            int *choice);

#endif
