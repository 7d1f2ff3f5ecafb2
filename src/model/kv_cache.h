/* kv_cache.h: the attention KV cache of one sequence (owned by a session).
 *
 * For each attention layer: K and V buffers of [n_ctx][kv_dim] in the cache dtype (F32, F16 or
 * Q8_0), in backend memory. Layers without attention (recurrent layers of hybrid models) have
 * no buffers. The cache does not track which positions are valid: the session owns n_past and
 * truncating is just lowering it (positions beyond are overwritten by the next eval).
 *
 * Hybrid models (qwen35) also keep a fixed-size recurrent state per sequence here
 * (kv_cache_add_recurrent): for each recurrent layer its conv window and its delta-rule state,
 * f32, in one buffer. It describes the sequence after its last evaluated token; it cannot be
 * truncated, so rolling it back means restoring a copy (the engine keeps those snapshots).
 */
#ifndef HEARTH_KV_CACHE_H
#define HEARTH_KV_CACHE_H

#include "../backend/backend.h"

struct kv_cache {
    struct backend *be; /* borrowed */
    enum dtype type;    /* F32, F16 or Q8_0 */
    int n_ctx;          /* positions */
    int n_layer;
    int kv_dim_k; /* n_head_kv * head_dim */
    int kv_dim_v; /* n_head_kv * head_dim_v */
    void **k;     /* [n_layer] buffers [n_ctx][kv_dim_k] or NULL for a layer without KV */
    void **v;     /* [n_layer] buffers [n_ctx][kv_dim_v] or NULL */

    /* recurrent state (hybrid models; 0 / NULL otherwise) */
    int n_rs_layer;      /* recurrent layers */
    int rs_conv_floats;  /* per layer: conv window [d_conv-1][conv channels] */
    int rs_layer_floats; /* per layer: conv window, then delta-rule state [H_v][d_v][d_k] */
    int *rs_index;       /* [n_layer] slice of a recurrent layer in rs, -1 for other layers */
    float *rs;           /* [n_rs_layer][rs_layer_floats] backend buffer */
};

/* has_kv[il] says which layers get buffers (NULL = all). ERR_NOMEM on failure,
 * ERR_INVALID for a type that can't hold these rows (Q8_0 needs kv_dim % 32 == 0). */
int kv_cache_create(struct kv_cache **out, struct backend *be, int n_layer, const int *has_kv,
                    int n_ctx, int kv_dim_k, int kv_dim_v, enum dtype type, struct error *err);
/* Adds the recurrent state for the layers with is_recurrent[il] != 0: conv_floats + ssm_floats
 * f32 per layer (zeroed). ERR_NOMEM on failure. */
int kv_cache_add_recurrent(struct kv_cache *kv, const uint8_t *is_recurrent, int conv_floats,
                           int ssm_floats, struct error *err);
/* Bytes of the recurrent state (0 without one): the size of a snapshot of kv->rs. */
size_t kv_cache_rs_bytes(const struct kv_cache *kv);
/* Conv window / delta-rule state of recurrent layer il (CHECKs that il is recurrent). */
float *kv_cache_rs_conv(const struct kv_cache *kv, int il);
float *kv_cache_rs_ssm(const struct kv_cache *kv, int il);
void kv_cache_free(struct kv_cache *kv);
size_t kv_cache_bytes(const struct kv_cache *kv);

#endif
