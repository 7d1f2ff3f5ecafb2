/* kv_cache.c: allocation of per-layer K/V buffers (see kv_cache.h). */
#include "kv_cache.h"

#include "../base/mem.h"

int kv_cache_create(struct kv_cache **out, struct backend *be, int n_layer, const int *has_kv,
                    int n_ctx, int kv_dim_k, int kv_dim_v, enum dtype type, struct error *err) {
    *out = NULL;
    if (type != DTYPE_F32 && type != DTYPE_F16 && type != DTYPE_Q8_0)
        return error_set(err, ERR_INVALID, "KV cache type %s not supported (f32, f16, q8_0)",
                         dtype_name(type));
    const struct dtype_traits *tr = dtype_traits(type);
    if (kv_dim_k % tr->block_size || kv_dim_v % tr->block_size)
        return error_set(err, ERR_INVALID,
                         "KV cache type %s needs rows that are a multiple of %lld values "
                         "(this model has %d and %d)",
                         tr->name, (long long)tr->block_size, kv_dim_k, kv_dim_v);
    if (n_ctx <= 0) return error_set(err, ERR_INVALID, "context size must be positive");
    struct kv_cache *kv = mem_calloc(1, sizeof(*kv));
    if (!kv) return error_set(err, ERR_NOMEM, "out of memory");
    kv->be = be;
    kv->type = type;
    kv->n_ctx = n_ctx;
    kv->n_layer = n_layer;
    kv->kv_dim_k = kv_dim_k;
    kv->kv_dim_v = kv_dim_v;
    kv->k = mem_calloc((size_t)n_layer, sizeof(void *));
    kv->v = mem_calloc((size_t)n_layer, sizeof(void *));
    if (!kv->k || !kv->v) goto nomem;
    for (int il = 0; il < n_layer; il++) {
        if (has_kv && !has_kv[il]) continue;
        kv->k[il] = be->buffer_alloc(be, dtype_row_bytes(type, kv_dim_k) * (size_t)n_ctx);
        kv->v[il] = be->buffer_alloc(be, dtype_row_bytes(type, kv_dim_v) * (size_t)n_ctx);
        if (!kv->k[il] || !kv->v[il]) goto nomem;
    }
    *out = kv;
    return 0;
nomem:
    kv_cache_free(kv);
    return error_set(err, ERR_NOMEM, "out of memory allocating the KV cache (%d positions)", n_ctx);
}

int kv_cache_add_recurrent(struct kv_cache *kv, const uint8_t *is_recurrent, int conv_floats,
                           int ssm_floats, struct error *err) {
    CHECK(!kv->rs_index && conv_floats >= 0 && ssm_floats > 0);
    kv->rs_index = mem_calloc((size_t)kv->n_layer, sizeof(int));
    if (!kv->rs_index) return error_set(err, ERR_NOMEM, "out of memory");
    int n = 0;
    for (int il = 0; il < kv->n_layer; il++) kv->rs_index[il] = is_recurrent[il] ? n++ : -1;
    kv->n_rs_layer = n;
    kv->rs_conv_floats = conv_floats;
    kv->rs_layer_floats = conv_floats + ssm_floats;
    if (n == 0) return 0;
    kv->rs = kv->be->buffer_alloc(kv->be, kv_cache_rs_bytes(kv));
    if (!kv->rs)
        return error_set(err, ERR_NOMEM, "out of memory allocating the recurrent state (%zu bytes)",
                         kv_cache_rs_bytes(kv));
    return 0;
}

size_t kv_cache_rs_bytes(const struct kv_cache *kv) {
    return (size_t)kv->n_rs_layer * (size_t)kv->rs_layer_floats * sizeof(float);
}

float *kv_cache_rs_conv(const struct kv_cache *kv, int il) {
    CHECK(kv->rs && il >= 0 && il < kv->n_layer && kv->rs_index[il] >= 0);
    return kv->rs + (size_t)kv->rs_index[il] * (size_t)kv->rs_layer_floats;
}

float *kv_cache_rs_ssm(const struct kv_cache *kv, int il) {
    return kv_cache_rs_conv(kv, il) + kv->rs_conv_floats;
}

void kv_cache_free(struct kv_cache *kv) {
    if (!kv) return;
    for (int il = 0; il < kv->n_layer; il++) {
        if (kv->k) kv->be->buffer_free(kv->be, kv->k[il]);
        if (kv->v) kv->be->buffer_free(kv->be, kv->v[il]);
    }
    mem_free(kv->k);
    mem_free(kv->v);
    if (kv->rs) kv->be->buffer_free(kv->be, kv->rs);
    mem_free(kv->rs_index);
    mem_free(kv);
}

size_t kv_cache_bytes(const struct kv_cache *kv) {
    size_t n = 0;
    for (int il = 0; il < kv->n_layer; il++)
        if (kv->k[il])
            n += (dtype_row_bytes(kv->type, kv->kv_dim_k) +
                  dtype_row_bytes(kv->type, kv->kv_dim_v)) *
                 (size_t)kv->n_ctx;
    return n + kv_cache_rs_bytes(kv);
}
