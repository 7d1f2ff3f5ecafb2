/* model.c: loading (GGUF -> hparams + bound weights), scratch sizing, batch validation.
 *
 * The architecture files do the model-specific parts through model_bind / model_get_*; this file
 * owns the mapping, the tensor views and the generic checks, so an arch file stays a short list
 * of "this tensor, this shape" plus its forward pass.
 */
#include "model.h"

#include "../base/log.h"
#include "../base/mem.h"
#include "kv_cache.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

struct model {
    struct gguf *gguf; /* owns the mapping */
    const struct arch *arch;
    struct model_hparams hp;
    struct backend *be; /* owned */
    int64_t n_tensors;
    struct tensor *tensors; /* [n_tensors] views, one per GGUF tensor */
    uint8_t *bound;         /* [n_tensors] 1 once an arch bound it */
    struct layer *layers;   /* [MODEL_MAX_LAYERS] */
    const struct tensor *tok_embd, *output_norm, *output;
    struct scratch sc;
    int n_batch;
    model_observe_fn observe; /* optional matmul-input observer */
    void *observe_ctx;
};

/* ============================================================================================
 * Accessors
 * ============================================================================================ */

const struct model_hparams *model_hparams(const struct model *m) {
    return &m->hp;
}
struct model_hparams *model_hparams_mut(struct model *m) {
    return &m->hp;
}
struct backend *model_backend(const struct model *m) {
    return m->be;
}
const struct gguf *model_gguf(const struct model *m) {
    return m->gguf;
}
int model_n_batch(const struct model *m) {
    return m->n_batch;
}
struct layer *model_layers(struct model *m) {
    return m->layers;
}
const struct tensor **model_tok_embd(struct model *m) {
    return &m->tok_embd;
}
const struct tensor **model_output_norm(struct model *m) {
    return &m->output_norm;
}
const struct tensor **model_output(struct model *m) {
    return &m->output;
}
struct scratch *model_scratch(struct model *m) {
    return &m->sc;
}

uint64_t model_n_params(const struct model *m) {
    uint64_t n = 0;
    for (int64_t i = 0; i < m->n_tensors; i++) n += (uint64_t)tensor_nelements(&m->tensors[i]);
    return n;
}

uint64_t model_weight_bytes(const struct model *m) {
    uint64_t n = 0;
    for (int64_t i = 0; i < m->n_tensors; i++) n += gguf_tensor(m->gguf, i)->n_bytes;
    return n;
}

/* ============================================================================================
 * Binding weights and reading hparams
 * ============================================================================================ */

const struct tensor *model_bind(struct model *m, int required, int n_dims, const int64_t *ne,
                                struct error *err, const char *fmt, ...) {
    char name[128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof(name), fmt, ap);
    va_end(ap);
    const struct gguf_tensor_info *ti = gguf_find_tensor(m->gguf, name);
    if (!ti) {
        if (required) error_set(err, ERR_FORMAT, "missing tensor %s", name);
        return NULL;
    }
    int64_t idx = ti - gguf_tensor(m->gguf, 0);
    if (!dtype_traits(ti->type) || !dtype_traits(ti->type)->to_float) {
        error_set(err, ERR_UNSUPPORTED, "tensor %s has type %s, which hearth does not support",
                  name, dtype_name(ti->type));
        return NULL;
    }
    for (int d = 0; d < GGUF_MAX_DIMS; d++) {
        int64_t want = d < n_dims ? ne[d] : 1;
        if (want >= 0 && ti->ne[d] != want) {
            error_set(err, ERR_FORMAT,
                      "tensor %s has shape [%lld, %lld, %lld, %lld], expected dim %d = %lld", name,
                      (long long)ti->ne[0], (long long)ti->ne[1], (long long)ti->ne[2],
                      (long long)ti->ne[3], d, (long long)want);
            return NULL;
        }
    }
    m->bound[idx] = 1;
    return &m->tensors[idx];
}

static int64_t find_arch_key(struct model *m, const char *suffix) {
    char key[160];
    snprintf(key, sizeof(key), "%s.%s", m->hp.arch, suffix);
    return gguf_find_key(m->gguf, key);
}

int model_get_int(struct model *m, const char *suffix, int required, int64_t def, int64_t lo,
                  int64_t hi, int *out, struct error *err) {
    int64_t i = find_arch_key(m, suffix), v = def;
    if (i < 0) {
        if (required) return error_set(err, ERR_FORMAT, "missing key %s.%s", m->hp.arch, suffix);
    } else if (gguf_kv_type(m->gguf, i) == GGUF_TYPE_ARRAY) {
        enum gguf_type et = gguf_kv_arr_type(m->gguf, i);
        uint64_t n = gguf_kv_arr_n(m->gguf, i);
        if (n == 0 || et == GGUF_TYPE_STRING || et == GGUF_TYPE_FLOAT32 || et == GGUF_TYPE_FLOAT64)
            return error_set(err, ERR_FORMAT, "key %s.%s: bad array", m->hp.arch, suffix);
        v = gguf_kv_arr_int(m->gguf, i, 0);
        for (uint64_t j = 1; j < n; j++)
            if (gguf_kv_arr_int(m->gguf, i, j) != v)
                return error_set(err, ERR_UNSUPPORTED,
                                 "key %s.%s varies per layer; hearth needs uniform layers",
                                 m->hp.arch, suffix);
    } else {
        char key[160];
        snprintf(key, sizeof(key), "%s.%s", m->hp.arch, suffix);
        int rc = gguf_get_int(m->gguf, key, &v);
        if (rc) return error_set(err, ERR_FORMAT, "key %s is not an integer", key);
    }
    if (v < lo || v > hi)
        return error_set(err, ERR_FORMAT, "key %s.%s = %lld out of range [%lld, %lld]", m->hp.arch,
                         suffix, (long long)v, (long long)lo, (long long)hi);
    *out = (int)v;
    return 0;
}

int model_get_float(struct model *m, const char *suffix, int required, double def, float *out,
                    struct error *err) {
    char key[160];
    snprintf(key, sizeof(key), "%s.%s", m->hp.arch, suffix);
    double v = def;
    int rc = gguf_get_float(m->gguf, key, &v);
    if (rc == ERR_NOT_FOUND) {
        if (required) return error_set(err, ERR_FORMAT, "missing key %s", key);
        v = def;
    } else if (rc) {
        return error_set(err, ERR_FORMAT, "key %s is not a number", key);
    }
    if (!isfinite(v)) return error_set(err, ERR_FORMAT, "key %s is not finite", key);
    *out = (float)v;
    return 0;
}

int model_load_common_hparams(struct model *m, enum rope_mode mode, struct error *err) {
    struct model_hparams *hp = &m->hp;
    int rc;
    if ((rc = model_get_int(m, "embedding_length", 1, 0, 1, 1 << 20, &hp->n_embd, err)) ||
        (rc = model_get_int(m, "block_count", 1, 0, 1, MODEL_MAX_LAYERS, &hp->n_layer_all, err)) ||
        (rc = model_get_int(m, "context_length", 0, 4096, 1, INT32_MAX, &hp->n_ctx_train, err)) ||
        (rc = model_get_int(m, "attention.head_count", 1, 0, 1, 4096, &hp->n_head, err)) ||
        (rc = model_get_int(m, "attention.head_count_kv", 0, hp->n_head, 1, hp->n_head,
                            &hp->n_head_kv, err)) ||
        (rc = model_get_int(m, "attention.key_length", 0, hp->n_embd / hp->n_head, 1, 4096,
                            &hp->head_dim, err)) ||
        (rc = model_get_int(m, "attention.value_length", 0, hp->head_dim, 1, 4096, &hp->head_dim_v,
                            err)) ||
        (rc = model_get_float(m, "attention.layer_norm_rms_epsilon", 1, 0, &hp->rms_eps, err)))
        return rc;
    if (hp->n_head % hp->n_head_kv)
        return error_set(err, ERR_FORMAT, "head_count %d is not a multiple of head_count_kv %d",
                         hp->n_head, hp->n_head_kv);
    hp->n_layer = hp->n_layer_all;
    float scale = 0;
    if ((rc = model_get_float(m, "attention.scale", 0, 0, &scale, err))) return rc;
    hp->attn_scale = scale != 0 ? scale : 1.0f / sqrtf((float)hp->head_dim);

    struct rope_params *rp = &hp->rope;
    memset(rp, 0, sizeof(*rp));
    rp->mode = mode;
    if ((rc = model_get_int(m, "rope.dimension_count", 0, hp->head_dim, 2, hp->head_dim, &rp->n_rot,
                            err)) ||
        (rc = model_get_float(m, "rope.freq_base", 0, 10000.0, &rp->freq_base, err)))
        return rc;
    if (rp->n_rot % 2) return error_set(err, ERR_FORMAT, "rope.dimension_count must be even");
    float factor = 0;
    if ((rc = model_get_float(m, "rope.scaling.factor", 0, 0, &factor, err))) return rc;
    if (factor == 0 && (rc = model_get_float(m, "rope.scale_linear", 0, 0, &factor, err)))
        return rc;
    rp->freq_scale = factor > 0 ? 1.0f / factor : 1.0f;
    char key[160];
    snprintf(key, sizeof(key), "%s.rope.scaling.type", hp->arch);
    struct gguf_str st;
    if (gguf_get_str(m->gguf, key, &st) == 0) {
        if (st.len == 4 && !memcmp(st.data, "yarn", 4)) {
            rp->is_yarn = 1;
        } else if (!((st.len == 6 && !memcmp(st.data, "linear", 6)) ||
                     (st.len == 4 && !memcmp(st.data, "none", 4)))) {
            return error_set(err, ERR_UNSUPPORTED, "rope scaling type '%.*s' not supported",
                             (int)(st.len > 32 ? 32 : st.len), st.data);
        }
    }
    if (rp->is_yarn) {
        if ((rc = model_get_int(m, "rope.scaling.original_context_length", 0, hp->n_ctx_train, 1,
                                INT32_MAX, &rp->n_ctx_orig, err)) ||
            (rc =
                 model_get_float(m, "rope.scaling.yarn_ext_factor", 0, -1, &rp->ext_factor, err)) ||
            (rc = model_get_float(m, "rope.scaling.attn_factor", 0, 1, &rp->attn_factor, err)) ||
            (rc = model_get_float(m, "rope.scaling.yarn_beta_fast", 0, 32, &rp->beta_fast, err)) ||
            (rc = model_get_float(m, "rope.scaling.yarn_beta_slow", 0, 1, &rp->beta_slow, err)))
            return rc;
        if (rp->ext_factor < 0) rp->ext_factor = rp->freq_scale < 1 ? 1.0f : 0.0f;
    }
    return 0;
}

/* ============================================================================================
 * Load / free
 * ============================================================================================ */

static int scratch_alloc(struct model *m, struct error *err) {
    const struct model_hparams *hp = &m->hp;
    struct backend *be = m->be;
    struct scratch *sc = &m->sc;
    size_t B = (size_t)m->n_batch;
    size_t q_dim = (size_t)hp->n_head *
                   (size_t)(hp->head_dim > hp->head_dim_v ? hp->head_dim : hp->head_dim_v);
    size_t kv_dim = (size_t)hp->n_head_kv *
                    (size_t)(hp->head_dim > hp->head_dim_v ? hp->head_dim : hp->head_dim_v);
    size_t ff = (size_t)hp->n_ff;
    size_t ff_moe = (size_t)hp->n_expert_used * (size_t)hp->n_ff_exp;
    if (ff_moe > ff) ff = ff_moe;
    if ((size_t)hp->n_ff_shexp > ff) ff = (size_t)hp->n_ff_shexp;
    if (ff == 0) ff = 1;
    size_t used = hp->n_expert_used > 0 ? (size_t)hp->n_expert_used : 1;
    size_t n_exp = hp->n_expert > 0 ? (size_t)hp->n_expert : 1;
    size_t E = (size_t)hp->n_embd;
    sc->n_batch = m->n_batch;
#define ALLOC(field, n)                                                                            \
    do {                                                                                           \
        sc->field = be->buffer_alloc(be, (n) * sizeof(*sc->field));                                \
        if (!sc->field) goto nomem;                                                                \
    } while (0)
    ALLOC(x, B * E);
    ALLOC(xn, B * E);
    ALLOC(q, B * q_dim);
    ALLOC(k, B * kv_dim);
    ALLOC(v, B * kv_dim);
    ALLOC(attn, B * (q_dim > E ? q_dim : E));
    ALLOC(ffn_a, B * ff);
    ALLOC(ffn_b, B * ff);
    ALLOC(moe_y, B * used * E);
    ALLOC(router, B * n_exp);
    ALLOC(y, B * E);
    ALLOC(out_h, B * E);
    ALLOC(logits, (size_t)SCRATCH_LOGIT_ROWS * (size_t)hp->n_vocab);
    {
        size_t hv = (size_t)hp->ssm_dt_rank, V = (size_t)hp->ssm_d_inner;
        size_t C = 2 * (size_t)hp->ssm_n_group * (size_t)hp->ssm_d_state + V;
        size_t mix = hv ? (C > 2 * q_dim ? C : 2 * q_dim) : 0, shexp = hp->n_ff_shexp ? 1 : 0;
        ALLOC(mix, B * mix);
        ALLOC(conv, B * (hv ? C : 0));
        ALLOC(ssm_z, B * V);
        ALLOC(ssm_alpha, B * hv);
        ALLOC(ssm_beta, B * hv);
        ALLOC(ssm_o, B * V);
        ALLOC(y2, B * E * shexp);
        ALLOC(shexp_gate, B * shexp);
        ALLOC(mtp_in, B * 2 * E * (hp->n_nextn > 0 ? 1 : 0));
    }
#undef ALLOC
    sc->ids = mem_calloc(B * used, sizeof(int32_t));
    sc->ew = mem_calloc(B * used, sizeof(float));
    if (!sc->ids || !sc->ew) goto nomem;
    return 0;
nomem:
    return error_set(err, ERR_NOMEM, "out of memory allocating activation buffers (batch %d)",
                     m->n_batch);
}

static void scratch_free(struct model *m) {
    struct scratch *sc = &m->sc;
    struct backend *be = m->be;
    if (!be) return;
    float *bufs[] = {sc->x,      sc->xn,    sc->q,          sc->k,      sc->v,         sc->attn,
                     sc->ffn_a,  sc->ffn_b, sc->moe_y,      sc->router, sc->y,         sc->out_h,
                     sc->logits, sc->mix,   sc->conv,       sc->ssm_z,  sc->ssm_alpha, sc->ssm_beta,
                     sc->ssm_o,  sc->y2,    sc->shexp_gate, sc->mtp_in};
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++) be->buffer_free(be, bufs[i]);
    mem_free(sc->ids);
    mem_free(sc->ew);
    memset(sc, 0, sizeof(*sc));
}

int model_load(struct model **out, const char *path, const struct model_params *p,
               struct error *err) {
    *out = NULL;
    struct model *m = mem_calloc(1, sizeof(*m));
    if (!m) return error_set(err, ERR_NOMEM, "out of memory");
    int rc = gguf_open_load(&m->gguf, path, p ? (enum gguf_load)p->load : GGUF_LOAD_AUTO, err);
    if (rc) goto fail;
    struct gguf_str arch;
    if (gguf_get_str(m->gguf, "general.architecture", &arch) != 0) {
        rc =
            error_set(err, ERR_FORMAT, "%s: no general.architecture key (not a model file?)", path);
        goto fail;
    }
    if (arch.len >= sizeof(m->hp.arch)) arch.len = sizeof(m->hp.arch) - 1;
    memcpy(m->hp.arch, arch.data, arch.len);
    m->hp.arch[arch.len] = 0;
    m->arch = arch_find(m->hp.arch);
    if (!m->arch) {
        rc = error_set(err, ERR_UNSUPPORTED,
                       "%s: architecture '%s' is not supported (supported: %s)", path, m->hp.arch,
                       arch_supported_list());
        goto fail;
    }
    m->n_tensors = gguf_n_tensors(m->gguf);
    m->tensors = mem_calloc((size_t)m->n_tensors + 1, sizeof(struct tensor));
    m->bound = mem_calloc((size_t)m->n_tensors + 1, 1);
    m->layers = mem_calloc(MODEL_MAX_LAYERS, sizeof(struct layer));
    if (!m->tensors || !m->bound || !m->layers) {
        rc = error_set(err, ERR_NOMEM, "out of memory");
        goto fail;
    }
    for (int64_t i = 0; i < m->n_tensors; i++) {
        const struct gguf_tensor_info *ti = gguf_tensor(m->gguf, i);
        struct tensor *t = &m->tensors[i];
        const struct dtype_traits *tr = dtype_traits(ti->type);
        t->name = ti->name;
        if (!tr) { /* unsupported type: only an error if the arch binds it */
            t->type = (enum dtype)ti->type;
            continue;
        }
        tensor_init(t, (enum dtype)ti->type, ti->n_dims, ti->ne, (void *)ti->data);
        t->name = ti->name;
    }
    m->n_batch = p && p->n_batch > 0 ? p->n_batch : 512;
    if ((rc = backend_cpu_create(&m->be, p ? p->n_threads : 0, err))) goto fail;
    if ((rc = m->arch->load(m, err))) {
        error_prefix(err, "%s", path);
        goto fail;
    }
    int64_t n_unused = 0;
    for (int64_t i = 0; i < m->n_tensors; i++) n_unused += !m->bound[i];
    if (n_unused)
        LOG_WARN("%s: %lld tensors not used by the %s forward pass", path, (long long)n_unused,
                 m->hp.arch);
    if ((rc = scratch_alloc(m, err))) goto fail;
    *out = m;
    return 0;
fail:
    model_free(m);
    return rc;
}

void model_free(struct model *m) {
    if (!m) return;
    scratch_free(m);
    backend_free(m->be);
    mem_free(m->tensors);
    mem_free(m->bound);
    mem_free(m->layers);
    gguf_close(m->gguf);
    mem_free(m);
}

void model_set_observer(struct model *m, model_observe_fn fn, void *ctx) {
    m->observe = fn;
    m->observe_ctx = ctx;
}

void model_matmul(struct model *m, const struct tensor *w, const struct tensor *bias,
                  const float *x, float *y, int n) {
    if (m->observe) m->observe(m->observe_ctx, w, x, n, (int)w->ne[0], NULL, 0, 0);
    m->be->matmul(m->be, w, bias, x, y, n);
}

void model_matmul_multi(struct model *m, int n_w, const struct tensor *const *w,
                        const struct tensor *const *bias, const float *x, float *const *y, int n) {
    if (m->observe)
        for (int i = 0; i < n_w; i++)
            m->observe(m->observe_ctx, w[i], x, n, (int)w[i]->ne[0], NULL, 0, 0);
    m->be->matmul_multi(m->be, n_w, w, bias, x, y, n);
}

void model_matmul_id(struct model *m, const struct tensor *w, const float *x, int x_per_slot,
                     const int32_t *ids, int n, int k, float *y) {
    if (m->observe)
        m->observe(m->observe_ctx, w, x, x_per_slot ? n * k : n, (int)w->ne[0], ids, k, x_per_slot);
    m->be->matmul_id(m->be, w, x, x_per_slot, ids, n, k, y);
}

/* ============================================================================================
 * Forward entry
 * ============================================================================================ */

/* Checks shared by model_forward and model_forward_mtp. */
static int check_batch(const struct model *m, const struct batch *b, struct error *err) {
    if (b->n_tokens <= 0 || b->n_tokens > m->n_batch)
        return error_set(err, ERR_INVALID, "batch of %d tokens (allowed 1..%d)", b->n_tokens,
                         m->n_batch);
    for (int i = 0; i < b->n_tokens; i++) {
        if (b->tokens[i] < 0 || b->tokens[i] >= m->hp.n_vocab)
            return error_set(err, ERR_INVALID, "token id %d out of range (vocabulary %d)",
                             b->tokens[i], m->hp.n_vocab);
        const struct kv_cache *kv = b->kv[b->seq[i]];
        if (kv->n_layer < m->hp.n_layer || kv->n_rs_layer != m->hp.n_layer_recurrent)
            return error_set(err, ERR_INVALID, "cache does not fit this model's layers");
        if (b->pos[i] < 0 || b->pos[i] >= kv->n_ctx)
            return error_set(err, ERR_RANGE, "position %d outside the context (%d)", b->pos[i],
                             kv->n_ctx);
        if (i > 0 && b->seq[i] == b->seq[i - 1] && b->pos[i] != b->pos[i - 1] + 1)
            return error_set(err, ERR_INVALID, "positions of a sequence must be consecutive");
    }
    for (int i = 0; i < b->n_outputs; i++)
        if (b->out_rows[i] < 0 || b->out_rows[i] >= b->n_tokens ||
            (i > 0 && b->out_rows[i] <= b->out_rows[i - 1]))
            return error_set(err, ERR_INVALID, "bad output rows");
    return 0;
}

int model_forward(struct model *m, const struct batch *b, struct error *err) {
    int rc = check_batch(m, b, err);
    if (rc) return rc;
    m->arch->forward(m, b);
    return 0;
}

int model_has_mtp(const struct model *m) {
    return m->hp.n_nextn > 0 && m->arch->forward_mtp != NULL;
}

int model_forward_mtp(struct model *m, const struct batch *b, struct error *err) {
    if (!model_has_mtp(m))
        return error_set(err, ERR_UNSUPPORTED, "the model has no MTP (nextn) block hearth can run");
    int rc = check_batch(m, b, err);
    if (rc) return rc;
    if (!b->h_in) return error_set(err, ERR_INVALID, "an MTP pass needs the hidden-state input");
    int il = m->hp.n_layer;
    for (int i = 0; i < b->n_tokens; i++) {
        const struct kv_cache *kv = b->kv[b->seq[i]];
        if (kv->n_layer <= il || !kv->k[il])
            return error_set(err, ERR_INVALID, "cache has no MTP layer");
    }
    m->arch->forward_mtp(m, b);
    return 0;
}
