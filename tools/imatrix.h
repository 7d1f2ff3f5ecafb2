/* imatrix.h: importance matrices — per input column of every weight matrix, the sum of x^2
 * over the activations x it multiplied (per expert for expert stacks), as llama.cpp's
 * llama-imatrix collects them.
 *
 * Files interoperate with llama.cpp in both its formats:
 *   - GGUF (llama-imatrix's default since 2025): general.type = "imatrix", imatrix.datasets
 *     (string array), imatrix.chunk_count and imatrix.chunk_size (u32), and per weight two F32
 *     tensors "<weight>.in_sum2" {n_cols, n_mat} (raw sums of x^2) and "<weight>.counts"
 *     {1, n_mat} (rows summed per matrix), sorted by name. hearth writes this format.
 *   - the legacy binary .dat (read only): i32 n_entries, then per entry i32 name length, name,
 *     i32 ncall, i32 n_values, f32 values[n_values] (= mean x^2 times ncall), then optionally
 *     i32 chunk count, i32 length + dataset name.
 * Loading validates every size against the file (untrusted bytes). An imatrix owns all its
 * memory; imatrix_free releases it.
 */
#ifndef HEARTH_IMATRIX_H
#define HEARTH_IMATRIX_H

#include "../src/base/error.h"

#include <stdint.h>

struct imatrix_entry {
    char *name;       /* weight name, e.g. "blk.0.ffn_down_exps.weight" (owned) */
    int64_t n_values; /* n_cols * n_mat */
    int n_mat;        /* 1, or n_expert for expert stacks (legacy files: always 1) */
    double *sums;     /* [n_mat][n_cols] sum of x^2 (legacy: mean x^2 times ncall) */
    int64_t *counts;  /* [n_mat] rows summed into each matrix (legacy: [1] = ncall) */
};

struct imatrix {
    struct imatrix_entry *entries; /* [n_entries], sorted by name */
    int n_entries, cap_entries;
    char **datasets; /* [n_datasets] calibration text names (owned) */
    int n_datasets;
    int chunk_count; /* chunks of text the sums cover */
    int chunk_size;  /* tokens per chunk (0 if unknown) */
    int is_legacy;   /* loaded from a .dat file */
};

/* Loads a GGUF or legacy .dat imatrix. ERR_NOT_FOUND / ERR_IO / ERR_FORMAT (names the problem) /
 * ERR_NOMEM. */
int imatrix_load(struct imatrix **out, const char *path, struct error *err);
/* Writes the GGUF format (entries sorted by name). ERR_IO / ERR_NOMEM / ERR_INVALID. */
int imatrix_save(const struct imatrix *im, const char *path, struct error *err);
void imatrix_free(struct imatrix *im);

const struct imatrix_entry *imatrix_find(const struct imatrix *im, const char *name);
/* The entry for name, created with zero sums if absent (n_cols, n_mat give its shape; an
 * existing entry must have the same shape, else NULL with ERR_INVALID). NULL on ERR_NOMEM. */
struct imatrix_entry *imatrix_get(struct imatrix *im, const char *name, int64_t n_cols, int n_mat,
                                  struct error *err);

/* The per-column weights a quantizer uses: mean x^2 per column and matrix, [n_mat][n_cols]
 * (a matrix that never saw a row gets all ones), as llama-quantize normalises. n_values floats,
 * caller frees with mem_free; NULL on ERR_NOMEM or a non-finite value (ERR_FORMAT). */
float *imatrix_means(const struct imatrix_entry *e, struct error *err);

/* ---- collection (hearth imatrix) ----
 * imatrix_observe is an engine_observe_fn (engine.h): ctx is a struct imatrix_collector. It
 * keeps llama-imatrix's choices: only "blk.*" weights (plus output.weight with
 * process_output), dense products with fewer than 16 rows skipped, expert stacks counted per
 * routed (token, slot). */
struct imatrix_collector {
    struct imatrix *im;
    int n_expert;       /* experts per stack (engine_info.n_expert) */
    int process_output; /* also collect output.weight */
    int failed;         /* set on the first error; collection stops */
    struct error error; /* the first error */
};
void imatrix_observe(void *ctx, const char *tensor, const float *rows, int n_rows, int row_len,
                     const int32_t *ids, int n_used, int x_per_slot);

#endif
