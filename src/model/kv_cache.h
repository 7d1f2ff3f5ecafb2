/* kv_cache.h: the attention KV cache of one sequence (owned by a session).
 *
 * For each attention layer: K and V buffers of [n_ctx][kv_dim] in the cache dtype (F32, F16 or
 * Q8_0), in backend memory. Layers without attention (recurrent layers of hybrid models) have
 * no buffers. The cache does not track which positions are valid: the session owns n_past and
 * truncating is just lowering it (positions beyond are overwritten by the next eval).
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
};

/* has_kv[il] says which layers get buffers (NULL = all). ERR_NOMEM on failure,
 * ERR_INVALID for a type that can't hold these rows (Q8_0 needs kv_dim % 32 == 0). */
int kv_cache_create(struct kv_cache **out, struct backend *be, int n_layer, const int *has_kv,
                    int n_ctx, int kv_dim_k, int kv_dim_v, enum dtype type, struct error *err);
void kv_cache_free(struct kv_cache *kv);
size_t kv_cache_bytes(const struct kv_cache *kv);

#endif
