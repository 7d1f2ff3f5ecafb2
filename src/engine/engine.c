/* engine.c: engine (model + tokenizer) and sessions (KV cache + position + logits).
 *
 * session_eval splits a long prompt into batches of at most n_batch tokens, one forward pass
 * each, and asks for logits only where the caller needs them (the last token, or every token
 * for all_logits). The session keeps the tokens it has evaluated so later features (prefix
 * cache, speculative rollback) can compare and truncate.
 */
#include "engine.h"

#include "../base/log.h"
#include "../base/mem.h"
#include "../model/kv_cache.h"
#include "../model/model.h"
#include "../text/tokenizer.h"
#include "../backend/cpu/cpu_kernels.h"

#include <string.h>

struct engine {
    struct model *model;
    struct tokenizer *tok;
    char *name;
    char *chat_template; /* tokenizer.chat_template or NULL */
    /* engine_eval_batch staging, sized n_batch tokens (outputs) and batch_cap sequences */
    int32_t *b_tok, *b_pos, *b_seq, *b_out; /* [n_batch] */
    float **b_dst;                          /* [n_batch] where each output row goes */
    float *b_logits;                        /* [n_batch][n_vocab] */
    struct kv_cache **b_kv;                 /* [batch_cap] cache of each sequence in a pass */
    struct session **b_ses;                 /* [batch_cap] its session */
    int *b_take;                            /* [batch_cap] its tokens in the pass */
    int batch_cap;
};

/* Grows the per-pass sequence table; token-sized buffers are allocated at open. */
static int batch_reserve(struct engine *e, int n_seq, struct error *err) {
    struct kv_cache **kv = mem_realloc(e->b_kv, (size_t)n_seq * sizeof(*kv));
    if (kv) e->b_kv = kv;
    struct session **ses = kv ? mem_realloc(e->b_ses, (size_t)n_seq * sizeof(*ses)) : NULL;
    if (ses) e->b_ses = ses;
    int *take = ses ? mem_realloc(e->b_take, (size_t)n_seq * sizeof(*take)) : NULL;
    if (!take) return error_set(err, ERR_NOMEM, "out of memory");
    e->b_take = take;
    e->batch_cap = n_seq;
    return 0;
}

struct session {
    struct engine *e;
    struct kv_cache *kv;
    int n_ctx;
    int n_past;
    int32_t *tokens; /* [n_ctx] */
    float *logits;   /* [n_vocab] logits after the last token */
    int has_logits;
    int32_t *pos_buf;  /* [n_batch] */
    int32_t *seq_buf;  /* [n_batch] zeros */
    int32_t *out_rows; /* [n_batch] */
};

/* ============================================================================================
 * Engine
 * ============================================================================================ */

void engine_params_default(struct engine_params *p) {
    memset(p, 0, sizeof(*p));
    p->n_batch = 512;
}

int engine_open(struct engine **out, const char *path, const struct engine_params *p,
                struct error *err) {
    *out = NULL;
    struct engine_params defaults;
    if (!p) {
        engine_params_default(&defaults);
        p = &defaults;
    }
    struct engine *e = mem_calloc(1, sizeof(*e));
    if (!e) return error_set(err, ERR_NOMEM, "out of memory");
    struct model_params mp = {p->n_threads, p->n_batch};
    int rc = model_load(&e->model, path, &mp, err);
    if (rc) goto fail;
    if ((rc = tokenizer_load(&e->tok, model_gguf(e->model), err))) {
        error_prefix(err, "%s", path);
        goto fail;
    }
    if (tokenizer_n_vocab(e->tok) > model_hparams(e->model)->n_vocab) {
        rc = error_set(err, ERR_FORMAT, "%s: tokenizer has %d tokens but the model only %d", path,
                       tokenizer_n_vocab(e->tok), model_hparams(e->model)->n_vocab);
        goto fail;
    }
    {
        size_t nb = (size_t)model_n_batch(e->model), V = (size_t)model_hparams(e->model)->n_vocab;
        e->b_tok = mem_calloc(nb, sizeof(int32_t));
        e->b_pos = mem_calloc(nb, sizeof(int32_t));
        e->b_seq = mem_calloc(nb, sizeof(int32_t));
        e->b_out = mem_calloc(nb, sizeof(int32_t));
        e->b_dst = mem_calloc(nb, sizeof(float *));
        e->b_logits = mem_calloc(nb * V, sizeof(float));
        if (!e->b_tok || !e->b_pos || !e->b_seq || !e->b_out || !e->b_dst || !e->b_logits) {
            rc = error_set(err, ERR_NOMEM, "out of memory");
            goto fail;
        }
    }
    e->name = gguf_get_strdup(model_gguf(e->model), "general.name");
    if (!e->name) {
        const char *base = strrchr(path, '/');
        e->name = mem_strdup(base ? base + 1 : path);
        if (!e->name) {
            rc = error_set(err, ERR_NOMEM, "out of memory");
            goto fail;
        }
    }
    e->chat_template = gguf_get_strdup(model_gguf(e->model), "tokenizer.chat_template");
    *out = e;
    return 0;
fail:
    engine_close(e);
    return rc;
}

void engine_close(struct engine *e) {
    if (!e) return;
    tokenizer_free(e->tok);
    model_free(e->model);
    mem_free(e->name);
    mem_free(e->chat_template);
    mem_free(e->b_tok);
    mem_free(e->b_pos);
    mem_free(e->b_seq);
    mem_free(e->b_out);
    mem_free(e->b_dst);
    mem_free(e->b_logits);
    mem_free(e->b_kv);
    mem_free(e->b_ses);
    mem_free(e->b_take);
    mem_free(e);
}

void engine_get_info(const struct engine *e, struct engine_info *info) {
    const struct model_hparams *hp = model_hparams(e->model);
    memset(info, 0, sizeof(*info));
    info->arch = hp->arch;
    info->name = e->name;
    info->n_vocab = hp->n_vocab;
    info->n_ctx_train = hp->n_ctx_train;
    info->n_embd = hp->n_embd;
    info->n_layer = hp->n_layer;
    info->n_head = hp->n_head;
    info->n_head_kv = hp->n_head_kv;
    info->n_expert = hp->n_expert;
    info->n_expert_used = hp->n_expert_used;
    info->n_params = model_n_params(e->model);
    info->weight_bytes = model_weight_bytes(e->model);
    info->file_bytes = gguf_file_bytes(model_gguf(e->model));
    info->kernels = cpu_kernels_get()->name;
}

int engine_tokenize(const struct engine *e, const char *text, size_t len, int add_bos,
                    int parse_special, int32_t **ids, int64_t *n_ids, struct error *err) {
    return tokenizer_encode(e->tok, text, len, add_bos, parse_special, ids, n_ids, err);
}

void engine_detokenize(const struct engine *e, const int32_t *ids, int64_t n, int render_special,
                       struct buf *out) {
    tokenizer_decode(e->tok, ids, n, render_special, out);
}

void engine_token_piece(const struct engine *e, int32_t id, int render_special, struct buf *out) {
    tokenizer_decode_piece(e->tok, id, render_special, out);
}

int engine_token_is_eog(const struct engine *e, int32_t id) {
    return tokenizer_is_eog(e->tok, id);
}

const char *engine_chat_template(const struct engine *e) {
    return e->chat_template;
}

int32_t engine_token_bos(const struct engine *e) {
    return tokenizer_bos(e->tok);
}

int32_t engine_token_eos(const struct engine *e) {
    return tokenizer_eos(e->tok);
}

int engine_add_bos(const struct engine *e) {
    return tokenizer_add_bos(e->tok);
}

/* ============================================================================================
 * Sessions
 * ============================================================================================ */

void session_params_default(struct session_params *p) {
    memset(p, 0, sizeof(*p));
    p->kv_type = KV_TYPE_F16;
}

int session_create(struct session **out, struct engine *e, const struct session_params *p,
                   struct error *err) {
    *out = NULL;
    struct session_params defaults;
    if (!p) {
        session_params_default(&defaults);
        p = &defaults;
    }
    const struct model_hparams *hp = model_hparams(e->model);
    int n_ctx = p->n_ctx > 0 ? p->n_ctx : (hp->n_ctx_train < 4096 ? hp->n_ctx_train : 4096);
    if (n_ctx > (1 << 24)) return error_set(err, ERR_INVALID, "context size %d too large", n_ctx);
    enum dtype kt = p->kv_type == KV_TYPE_F32    ? DTYPE_F32
                    : p->kv_type == KV_TYPE_Q8_0 ? DTYPE_Q8_0
                                                 : DTYPE_F16;
    struct session *s = mem_calloc(1, sizeof(*s));
    if (!s) return error_set(err, ERR_NOMEM, "out of memory");
    s->e = e;
    s->n_ctx = n_ctx;
    int nb = model_n_batch(e->model);
    int rc = kv_cache_create(&s->kv, model_backend(e->model), hp->n_layer, NULL, n_ctx,
                             hp->n_head_kv * hp->head_dim, hp->n_head_kv * hp->head_dim_v, kt, err);
    if (rc) goto fail;
    s->tokens = mem_calloc((size_t)n_ctx, sizeof(int32_t));
    s->logits = mem_calloc((size_t)hp->n_vocab, sizeof(float));
    s->pos_buf = mem_calloc((size_t)nb, sizeof(int32_t));
    s->seq_buf = mem_calloc((size_t)nb, sizeof(int32_t));
    s->out_rows = mem_calloc((size_t)nb, sizeof(int32_t));
    if (!s->tokens || !s->logits || !s->pos_buf || !s->seq_buf || !s->out_rows) {
        rc = error_set(err, ERR_NOMEM, "out of memory");
        goto fail;
    }
    *out = s;
    return 0;
fail:
    session_free(s);
    return rc;
}

void session_free(struct session *s) {
    if (!s) return;
    kv_cache_free(s->kv);
    mem_free(s->tokens);
    mem_free(s->logits);
    mem_free(s->pos_buf);
    mem_free(s->seq_buf);
    mem_free(s->out_rows);
    mem_free(s);
}

int session_n_ctx(const struct session *s) {
    return s->n_ctx;
}

int session_n_past(const struct session *s) {
    return s->n_past;
}

const int32_t *session_tokens(const struct session *s) {
    return s->tokens;
}

size_t session_bytes(const struct session *s) {
    size_t nb = (size_t)model_n_batch(s->e->model), V = (size_t)model_hparams(s->e->model)->n_vocab;
    return sizeof(*s) + kv_cache_bytes(s->kv) + (size_t)s->n_ctx * sizeof(int32_t) +
           V * sizeof(float) + 3 * nb * sizeof(int32_t);
}

const float *session_logits(const struct session *s) {
    return s->has_logits ? s->logits : NULL;
}

int session_eval(struct session *s, const int32_t *ids, int n, float *all_logits,
                 struct error *err) {
    struct model *m = s->e->model;
    int n_vocab = model_hparams(m)->n_vocab, nb = model_n_batch(m);
    if (n <= 0) return error_set(err, ERR_INVALID, "nothing to evaluate");
    if (n > s->n_ctx - s->n_past)
        return error_set(err, ERR_RANGE,
                         "%d tokens do not fit in the context: %d of %d positions used", n,
                         s->n_past, s->n_ctx);
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= n_vocab)
            return error_set(err, ERR_INVALID, "token id %d out of range (vocabulary %d)", ids[i],
                             n_vocab);
    struct kv_cache *kvs[1] = {s->kv};
    for (int i0 = 0; i0 < n; i0 += nb) {
        int nt = n - i0 < nb ? n - i0 : nb;
        int last_batch = i0 + nt == n;
        for (int i = 0; i < nt; i++) s->pos_buf[i] = s->n_past + i;
        struct batch b = {
            .n_tokens = nt,
            .tokens = ids + i0,
            .pos = s->pos_buf,
            .seq = s->seq_buf,
            .kv = kvs,
        };
        if (all_logits) {
            for (int i = 0; i < nt; i++) s->out_rows[i] = i;
            b.n_outputs = nt;
            b.out_rows = s->out_rows;
            b.logits = all_logits + (int64_t)i0 * n_vocab;
        } else if (last_batch) {
            s->out_rows[0] = nt - 1;
            b.n_outputs = 1;
            b.out_rows = s->out_rows;
            b.logits = s->logits;
        }
        int rc = model_forward(m, &b, err);
        if (rc) return rc; /* cannot happen after the checks above, but keep state consistent */
        memcpy(s->tokens + s->n_past, ids + i0, (size_t)nt * sizeof(int32_t));
        s->n_past += nt;
    }
    if (all_logits)
        memcpy(s->logits, all_logits + (int64_t)(n - 1) * n_vocab, (size_t)n_vocab * sizeof(float));
    s->has_logits = 1;
    return 0;
}

int session_copy_prefix(struct session *dst, const struct session *src, int n_past,
                        struct error *err) {
    if (dst->e != src->e) return error_set(err, ERR_INVALID, "sessions of different engines");
    if (n_past < 0 || n_past > src->n_past || n_past > dst->n_ctx)
        return error_set(err, ERR_INVALID, "cannot copy %d positions (source has %d, room %d)",
                         n_past, src->n_past, dst->n_ctx);
    if (dst->kv->type != src->kv->type)
        return error_set(err, ERR_INVALID, "sessions have different KV cache types");
    struct backend *be = model_backend(dst->e->model);
    size_t rk = dtype_row_bytes(src->kv->type, src->kv->kv_dim_k);
    size_t rv = dtype_row_bytes(src->kv->type, src->kv->kv_dim_v);
    for (int il = 0; il < src->kv->n_layer; il++) {
        if (!src->kv->k[il]) continue;
        be->copy(be, dst->kv->k[il], src->kv->k[il], rk * (size_t)n_past);
        be->copy(be, dst->kv->v[il], src->kv->v[il], rv * (size_t)n_past);
    }
    memcpy(dst->tokens, src->tokens, (size_t)n_past * sizeof(int32_t));
    dst->n_past = n_past;
    dst->has_logits = 0;
    return 0;
}

int session_common_prefix(const struct session *s, const int32_t *ids, int n) {
    int i = 0;
    while (i < n && i < s->n_past && s->tokens[i] == ids[i]) i++;
    return i;
}

int engine_eval_batch(struct engine *e, struct session_batch_item *items, int n_items,
                      struct error *err) {
    struct model *m = e->model;
    int n_vocab = model_hparams(m)->n_vocab, nb = model_n_batch(m);
    if (n_items <= 0) return error_set(err, ERR_INVALID, "empty batch");
    for (int i = 0; i < n_items; i++) {
        struct session *s = items[i].s;
        if (s->e != e) return error_set(err, ERR_INVALID, "session of another engine");
        if (items[i].n <= 0) return error_set(err, ERR_INVALID, "item %d has no tokens", i);
        if (items[i].n > s->n_ctx - s->n_past)
            return error_set(err, ERR_RANGE,
                             "%d tokens do not fit in the context: %d of %d positions used",
                             items[i].n, s->n_past, s->n_ctx);
        for (int j = 0; j < i; j++)
            if (items[j].s == s) return error_set(err, ERR_INVALID, "a session appears twice");
        for (int t = 0; t < items[i].n; t++)
            if (items[i].ids[t] < 0 || items[i].ids[t] >= n_vocab)
                return error_set(err, ERR_INVALID, "token id %d out of range (vocabulary %d)",
                                 items[i].ids[t], n_vocab);
    }
    if (e->batch_cap < n_items && batch_reserve(e, n_items, err)) return ERR_NOMEM;
    /* Fill passes of up to nb tokens; an item may be split across passes. */
    int item = 0, done = 0; /* done = tokens of `item` already evaluated */
    while (item < n_items) {
        int nt = 0, n_seq = 0, n_out = 0;
        while (item < n_items && nt < nb) {
            struct session_batch_item *it = &items[item];
            int take = it->n - done < nb - nt ? it->n - done : nb - nt;
            struct session *s = it->s;
            e->b_kv[n_seq] = s->kv;
            e->b_ses[n_seq] = s;
            e->b_take[n_seq] = take;
            for (int t = 0; t < take; t++) {
                e->b_tok[nt + t] = it->ids[done + t];
                e->b_pos[nt + t] = s->n_past + t;
                e->b_seq[nt + t] = n_seq;
            }
            int last = done + take == it->n;
            if (it->all_logits) {
                for (int t = 0; t < take; t++) {
                    e->b_out[n_out] = nt + t;
                    e->b_dst[n_out++] = it->all_logits + (int64_t)(done + t) * n_vocab;
                }
            } else if (last) {
                e->b_out[n_out] = nt + take - 1;
                e->b_dst[n_out++] = s->logits;
            }
            memcpy(s->tokens + s->n_past, it->ids + done, (size_t)take * sizeof(int32_t));
            nt += take;
            n_seq++;
            done += take;
            if (last) {
                item++;
                done = 0;
            }
        }
        struct batch b = {
            .n_tokens = nt,
            .tokens = e->b_tok,
            .pos = e->b_pos,
            .seq = e->b_seq,
            .kv = e->b_kv,
            .n_outputs = n_out,
            .out_rows = e->b_out,
            .logits = e->b_logits,
        };
        int rc = model_forward(m, &b, err);
        if (rc) return rc;
        for (int o = 0; o < n_out; o++)
            memcpy(e->b_dst[o], e->b_logits + (int64_t)o * n_vocab,
                   (size_t)n_vocab * sizeof(float));
        for (int q = 0; q < n_seq; q++) e->b_ses[q]->n_past += e->b_take[q];
    }
    for (int i = 0; i < n_items; i++) {
        if (items[i].all_logits)
            memcpy(items[i].s->logits, items[i].all_logits + (int64_t)(items[i].n - 1) * n_vocab,
                   (size_t)n_vocab * sizeof(float));
        items[i].s->has_logits = 1;
    }
    return 0;
}

int session_truncate(struct session *s, int n_past, struct error *err) {
    if (n_past < 0 || n_past > s->n_past)
        return error_set(err, ERR_INVALID, "cannot truncate to %d (have %d)", n_past, s->n_past);
    s->n_past = n_past;
    s->has_logits = 0;
    return 0;
}

int32_t session_sample(struct session *s, struct sampler *smp) {
    CHECK(s->has_logits);
    return sampler_sample(smp, s->logits, NULL);
}
