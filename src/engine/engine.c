/* engine.c: engine (model + tokenizer) and sessions (KV cache + position + logits).
 *
 * session_eval splits a long prompt into batches of at most n_batch tokens, one forward pass
 * each, and asks for logits only where the caller needs them (the last token, or every token
 * for all_logits). The session keeps the tokens it has evaluated so later features (prefix
 * cache, speculative rollback) can compare and truncate.
 *
 * Hybrid models add a recurrent state to the session (kv->rs) that cannot be truncated; the
 * session keeps snapshots of it at chosen positions, planned before each eval and written by
 * the forward pass's ops as they pass those tokens (see "Recurrent-state snapshots").
 *
 * Models with an MTP block can draft tokens with it (see "MTP"): a session with MTP enabled runs
 * the block after every forward pass, over the same tokens, to keep the MTP layer's own KV cache
 * in step with the trunk's.
 */
#include "engine.h"

#include "../base/log.h"
#include "../base/mem.h"
#include "../model/kv_cache.h"
#include "../model/model.h"
#include "../text/tokenizer.h"
#include "../backend/cpu/cpu_kernels.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

struct engine {
    struct model *model;
    engine_observe_fn observe; /* optional, see engine_set_observer */
    void *observe_ctx;
    struct tokenizer *tok;
    char *name;
    char *chat_template; /* tokenizer.chat_template or NULL */
    /* engine_eval_batch staging, sized n_batch tokens (outputs) and batch_cap sequences */
    int32_t *b_tok, *b_pos, *b_seq, *b_out; /* [n_batch] */
    float **b_dst;                          /* [n_batch] where each output row goes */
    float *b_logits;                        /* [n_batch][n_vocab] */
    float **b_snap;                         /* [n_batch] per-token recurrent-state snapshots */
    struct kv_cache **b_kv;                 /* [batch_cap] cache of each sequence in a pass */
    struct session **b_ses;                 /* [batch_cap] its session */
    int *b_take;                            /* [batch_cap] its tokens in the pass */
    int batch_cap;
    /* MTP passes (models with nextn layers; NULL otherwise) */
    float *b_hid; /* [n_batch][n_embd] trunk hidden states of one pass */
    float *b_hin; /* [n_batch][n_embd] MTP input: the hidden state before each row */
    int32_t *m_tok, *m_pos, *m_seq; /* [n_batch] rows of the MTP pass */
    struct kv_cache **m_kv;         /* [n_batch] cache of each of its sequences */
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

/* One saved recurrent state (hybrid models). */
struct rs_slot {
    int pos;        /* the state after tokens [0, pos); -1 = empty */
    uint64_t stamp; /* creation order: checkpoints are evicted oldest first */
    float *data;    /* backend buffer of kv_cache_rs_bytes, the layout of kv->rs */
};

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
    /* recurrent-state snapshots (hybrid models; all empty otherwise) */
    struct rs_slot *ckpt; /* [n_ckpt] session_checkpoint(_at) */
    struct rs_slot *tail; /* [n_tail] the positions just before n_past */
    int n_ckpt, n_tail;
    int32_t *want; /* [n_ckpt] positions asked for by session_checkpoint_at */
    int n_want;
    uint64_t stamp;
    int n_plan;        /* snapshots the current eval writes: */
    int32_t *plan_pos; /* [n_ckpt + n_tail] position */
    float **plan_dst;  /* [n_ckpt + n_tail] slot data */
    float **snap_buf;  /* [n_batch] per-token targets of one pass of session_eval */
    /* MTP (session_enable_mtp): the trunk's final normed hidden states of the last positions
     * evaluated, so that drafting can start after any of them (rollback of a verify batch) */
    int mtp;      /* 1: every eval also runs the MTP block over its tokens */
    float *mtp_h; /* [MTP_KEEP][n_embd] hidden states of positions mtp_h_pos .. +mtp_h_n-1 */
    int mtp_h_pos, mtp_h_n;
};

/* Hidden states a session keeps: enough to truncate back over a 64-token verify batch. */
#define MTP_KEEP 66

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
    struct model_params mp = {p->n_threads, p->n_batch, p->load};
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
        e->b_snap = mem_calloc(nb, sizeof(float *));
        e->b_logits = mem_calloc(nb * V, sizeof(float));
        if (!e->b_tok || !e->b_pos || !e->b_seq || !e->b_out || !e->b_dst || !e->b_snap ||
            !e->b_logits) {
            rc = error_set(err, ERR_NOMEM, "out of memory");
            goto fail;
        }
        if (model_has_mtp(e->model)) {
            size_t E = (size_t)model_hparams(e->model)->n_embd;
            e->b_hid = mem_calloc(nb * E, sizeof(float));
            e->b_hin = mem_calloc(nb * E, sizeof(float));
            e->m_tok = mem_calloc(nb, sizeof(int32_t));
            e->m_pos = mem_calloc(nb, sizeof(int32_t));
            e->m_seq = mem_calloc(nb, sizeof(int32_t));
            e->m_kv = mem_calloc(nb, sizeof(struct kv_cache *));
            if (!e->b_hid || !e->b_hin || !e->m_tok || !e->m_pos || !e->m_seq || !e->m_kv) {
                rc = error_set(err, ERR_NOMEM, "out of memory");
                goto fail;
            }
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
    mem_free(e->b_snap);
    mem_free(e->b_logits);
    mem_free(e->b_kv);
    mem_free(e->b_ses);
    mem_free(e->b_take);
    mem_free(e->b_hid);
    mem_free(e->b_hin);
    mem_free(e->m_tok);
    mem_free(e->m_pos);
    mem_free(e->m_seq);
    mem_free(e->m_kv);
    mem_free(e);
}

/* Weight bytes read to produce one token: every trunk tensor, routed-expert stacks scaled by
 * n_expert_used/n_expert, the LM head, but one row of the embeddings; for an MTP draft step the
 * same over the nextn blocks plus the head they use. */
static void weights_per_token(const struct engine *e, uint64_t *trunk, uint64_t *mtp) {
    const struct model_hparams *hp = model_hparams(e->model);
    const struct gguf *g = model_gguf(e->model);
    double t = 0, d = 0, head = 0, mtp_head = -1;
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        const struct gguf_tensor_info *ti = gguf_tensor(g, i);
        double nb = (double)ti->n_bytes;
        int il = -1;
        if (sscanf(ti->name, "blk.%d.", &il) != 1) il = -1;
        if (ti->n_dims >= 3 && ti->ne[2] > 1 && hp->n_expert > 0)
            nb *= (double)hp->n_expert_used / (double)hp->n_expert;
        if (!strcmp(ti->name, "output.weight")) {
            head = nb;
        } else if (!strcmp(ti->name, "token_embd.weight")) {
            if (!gguf_find_tensor(g, "output.weight")) head = nb;
        } else if (strstr(ti->name, ".nextn.shared_head_head.")) {
            mtp_head = nb;
        } else if (strstr(ti->name, ".nextn.embed_tokens.")) {
            continue; /* one row per token */
        } else if (il >= hp->n_layer) {
            d += nb;
        } else {
            t += nb;
        }
    }
    *trunk = (uint64_t)(t + head);
    *mtp = model_has_mtp(e->model) ? (uint64_t)(d + (mtp_head >= 0 ? mtp_head : head)) : 0;
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
    info->n_layer_recurrent = hp->n_layer_recurrent;
    info->n_nextn = hp->n_nextn;
    info->has_mtp = model_has_mtp(e->model);
    weights_per_token(e, &info->bytes_per_token, &info->mtp_bytes_per_token);
}

static void engine_observe_trampoline(void *ctx, const struct tensor *w, const float *x, int n_rows,
                                      int row_len, const int32_t *ids, int n_used, int x_per_slot) {
    struct engine *e = ctx;
    e->observe(e->observe_ctx, w->name ? w->name : "", x, n_rows, row_len, ids, n_used, x_per_slot);
}

void engine_set_observer(struct engine *e, engine_observe_fn fn, void *ctx) {
    e->observe = fn;
    e->observe_ctx = ctx;
    model_set_observer(e->model, fn ? engine_observe_trampoline : NULL, fn ? e : NULL);
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

const char *engine_token_text(const struct engine *e, int32_t id) {
    return tokenizer_token_text(e->tok, id);
}

int engine_check_vocab_compatible(const struct engine *target, const struct engine *draft,
                                  struct error *err) {
    int nt = tokenizer_n_vocab(target->tok), nd = tokenizer_n_vocab(draft->tok);
    if (nt - nd > 128 || nd - nt > 128)
        return error_set(err, ERR_INVALID,
                         "draft model vocabulary (%d tokens) differs too much from the target's "
                         "(%d)",
                         nd, nt);
    if (model_hparams(target->model)->n_vocab != model_hparams(draft->model)->n_vocab)
        return error_set(err, ERR_INVALID, "draft model has %d logits, the target %d",
                         model_hparams(draft->model)->n_vocab,
                         model_hparams(target->model)->n_vocab);
    int n = nt < nd ? nt : nd;
    for (int i = 0; i < n; i++) {
        const char *a = tokenizer_token_text(target->tok, i),
                   *b = tokenizer_token_text(draft->tok, i);
        if (strcmp(a ? a : "", b ? b : ""))
            return error_set(err, ERR_INVALID,
                             "draft model vocabulary differs from the target's at token %d", i);
    }
    return 0;
}

/* ============================================================================================
 * Sessions
 * ============================================================================================ */

void session_params_default(struct session_params *p) {
    memset(p, 0, sizeof(*p));
    p->kv_type = KV_TYPE_F16;
}

/* Allocates the recurrent state and the snapshot slots of a hybrid model's session. */
static int session_create_recurrent(struct session *s, const struct session_params *p,
                                    struct error *err) {
    const struct model_hparams *hp = model_hparams(s->e->model);
    int C = 2 * hp->ssm_n_group * hp->ssm_d_state + hp->ssm_d_inner;
    int ssm = hp->ssm_d_inner * hp->ssm_d_state; /* H_v * d_v * d_k */
    int rc = kv_cache_add_recurrent(s->kv, hp->is_recurrent, (hp->ssm_d_conv - 1) * C, ssm, err);
    if (rc) return rc;
    if (p->n_rs_checkpoints < 0 || p->n_rs_checkpoints > 64 || p->n_rs_tail < 0 ||
        p->n_rs_tail > 64)
        return error_set(err, ERR_INVALID,
                         "recurrent-state slots: %d checkpoints, %d tail "
                         "(each 0..64)",
                         p->n_rs_checkpoints, p->n_rs_tail);
    s->n_ckpt = p->n_rs_checkpoints;
    s->want = mem_calloc((size_t)s->n_ckpt + 1, sizeof(int32_t));
    s->snap_buf = mem_calloc((size_t)model_n_batch(s->e->model), sizeof(float *));
    if (!s->want || !s->snap_buf) return error_set(err, ERR_NOMEM, "out of memory");
    return session_set_rs_tail(s, p->n_rs_tail, err);
}

int session_set_rs_tail(struct session *s, int n_tail, struct error *err) {
    if (s->kv->n_rs_layer == 0) return 0;
    if (n_tail < 0 || n_tail > 64)
        return error_set(err, ERR_INVALID, "rollback depth %d out of range (0..64)", n_tail);
    struct backend *be = model_backend(s->e->model);
    int n_old = s->ckpt ? s->n_ckpt + s->n_tail : 0, n_new = s->n_ckpt + n_tail;
    for (int i = n_new; i < n_old; i++) be->buffer_free(be, s->ckpt[i].data);
    if (n_new < n_old) s->n_tail = n_tail; /* the freed slots are gone even if realloc fails */
    struct rs_slot *slots = mem_realloc(s->ckpt, ((size_t)n_new + 1) * sizeof(*slots));
    int32_t *pp = slots ? mem_realloc(s->plan_pos, ((size_t)n_new + 1) * sizeof(int32_t)) : NULL;
    if (slots) s->ckpt = slots;
    if (pp) s->plan_pos = pp;
    float **pd = pp ? mem_realloc(s->plan_dst, ((size_t)n_new + 1) * sizeof(float *)) : NULL;
    if (pd) s->plan_dst = pd;
    if (!slots || !pp || !pd) return error_set(err, ERR_NOMEM, "out of memory");
    for (int i = n_old; i < n_new; i++) s->ckpt[i] = (struct rs_slot){-1, 0, NULL};
    s->n_tail = n_tail;
    s->tail = s->ckpt + s->n_ckpt;
    for (int i = 0; i < n_tail; i++) s->tail[i].pos = -1;
    for (int i = n_old; i < n_new; i++) {
        s->ckpt[i].data = be->buffer_alloc(be, kv_cache_rs_bytes(s->kv));
        if (!s->ckpt[i].data) { /* keep the slots that exist */
            s->n_tail = i > s->n_ckpt ? i - s->n_ckpt : 0;
            return error_set(err, ERR_NOMEM,
                             "out of memory allocating %d recurrent-state slots of %zu bytes",
                             n_new - i, kv_cache_rs_bytes(s->kv));
        }
    }
    return 0;
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
    /* the trunk's layers, plus the MTP layer (allocated by session_enable_mtp) */
    int has_kv[MODEL_MAX_LAYERS], n_kv_layer = hp->n_layer + (model_has_mtp(e->model) ? 1 : 0);
    for (int il = 0; il < n_kv_layer; il++) has_kv[il] = il < hp->n_layer && !hp->is_recurrent[il];
    int rc = kv_cache_create(&s->kv, model_backend(e->model), n_kv_layer, has_kv, n_ctx,
                             hp->n_head_kv * hp->head_dim, hp->n_head_kv * hp->head_dim_v, kt, err);
    if (rc) goto fail;
    if (hp->n_layer_recurrent > 0 && (rc = session_create_recurrent(s, p, err))) goto fail;
    if (p->mtp && (rc = session_enable_mtp(s, err))) goto fail;
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
    if (s->ckpt) {
        struct backend *be = model_backend(s->e->model);
        for (int i = 0; i < s->n_ckpt + s->n_tail; i++) be->buffer_free(be, s->ckpt[i].data);
    }
    mem_free(s->ckpt);
    mem_free(s->want);
    mem_free(s->plan_pos);
    mem_free(s->plan_dst);
    mem_free(s->snap_buf);
    kv_cache_free(s->kv);
    mem_free(s->tokens);
    mem_free(s->logits);
    mem_free(s->pos_buf);
    mem_free(s->seq_buf);
    mem_free(s->out_rows);
    mem_free(s->mtp_h);
    mem_free(s);
}

struct engine *session_engine(const struct session *s) {
    return s->e;
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
    size_t mtp = s->mtp ? (size_t)MTP_KEEP * (size_t)model_hparams(s->e->model)->n_embd : 0;
    return sizeof(*s) + kv_cache_bytes(s->kv) + (size_t)s->n_ctx * sizeof(int32_t) +
           (V + mtp) * sizeof(float) + 3 * nb * sizeof(int32_t);
}

const float *session_logits(const struct session *s) {
    return s->has_logits ? s->logits : NULL;
}

/* ============================================================================================
 * Recurrent-state snapshots
 * Before an eval of n tokens from position p0, rs_plan decides which positions in (p0, p0+n]
 * get a snapshot (the tail window and pending checkpoint requests) and assigns each a slot; the
 * forward pass then copies the state into the slot right after the token that ends there
 * (batch.rs_snap), so a speculative verify batch of k tokens leaves k restore points without a
 * second pass. The tail window is [p0+n-n_tail, p0+n): slots outside it are recycled, and
 * when the window reaches back to p0 itself the live state is copied before the eval.
 * ============================================================================================ */

static int is_hybrid(const struct session *s) {
    return s->kv->n_rs_layer > 0;
}

/* The slot holding position pos (> 0), or NULL. */
static struct rs_slot *rs_find(const struct session *s, int pos) {
    for (int i = 0; i < s->n_ckpt + s->n_tail; i++)
        if (s->ckpt[i].pos == pos) return &s->ckpt[i];
    return NULL;
}

/* The slot with the largest position <= pos, or NULL (then the start, position 0, is best). */
static struct rs_slot *rs_best_below(const struct session *s, int pos) {
    struct rs_slot *best = NULL;
    for (int i = 0; i < s->n_ckpt + s->n_tail; i++)
        if (s->ckpt[i].pos > 0 && s->ckpt[i].pos <= pos && (!best || s->ckpt[i].pos > best->pos))
            best = &s->ckpt[i];
    return best;
}

static void rs_drop_after(struct session *s, int pos) {
    for (int i = 0; i < s->n_ckpt + s->n_tail; i++)
        if (s->ckpt[i].pos > pos) s->ckpt[i].pos = -1;
}

static void rs_claim(struct session *s, struct rs_slot *slot, int pos) {
    slot->pos = pos;
    slot->stamp = ++s->stamp;
}

/* Copies the live state into slot as position pos. */
static void rs_save(struct session *s, struct rs_slot *slot, int pos) {
    struct backend *be = model_backend(s->e->model);
    be->copy(be, slot->data, s->kv->rs, kv_cache_rs_bytes(s->kv));
    rs_claim(s, slot, pos);
}

/* Live state := the state at slot's position (the zero state needs no copy: the forward pass
 * ignores the buffer at position 0). */
static void rs_restore(struct session *s, const float *data) {
    struct backend *be = model_backend(s->e->model);
    if (data) be->copy(be, s->kv->rs, data, kv_cache_rs_bytes(s->kv));
}

/* Checkpoint slot for pos: the one already holding it, else an empty one, else the oldest. */
static struct rs_slot *ckpt_victim(struct session *s, int pos) {
    struct rs_slot *v = NULL;
    for (int i = 0; i < s->n_ckpt; i++) {
        struct rs_slot *c = &s->ckpt[i];
        if (c->pos == pos) return c;
        if (!v || (v->pos >= 0 && (c->pos < 0 || c->stamp < v->stamp))) v = c;
    }
    return v;
}

static struct rs_slot *tail_free(struct session *s) {
    for (int i = 0; i < s->n_tail; i++)
        if (s->tail[i].pos < 0) return &s->tail[i];
    CHECK(0 && "tail window larger than its slots");
    return NULL;
}

static void plan_add(struct session *s, int pos, float *dst) {
    for (int i = 0; i < s->n_plan; i++)
        if (s->plan_dst[i] == dst) { /* a slot reassigned within one plan: the later wins */
            s->plan_pos[i] = pos;
            return;
        }
    s->plan_pos[s->n_plan] = pos;
    s->plan_dst[s->n_plan++] = dst;
}

static void rs_plan(struct session *s, int p0, int n) {
    s->n_plan = 0;
    if (!is_hybrid(s)) return;
    if (s->n_tail > 0) {
        int lo = p0 + n - s->n_tail, have_p0 = 0;
        for (int i = 0; i < s->n_tail; i++) {
            struct rs_slot *t = &s->tail[i];
            if (t->pos < lo || t->pos > p0) t->pos = -1;
            have_p0 |= t->pos == p0;
        }
        if (lo <= p0 && p0 > 0 && !have_p0) rs_save(s, tail_free(s), p0);
        for (int pos = lo > p0 + 1 ? lo : p0 + 1; pos <= p0 + n - 1; pos++) {
            struct rs_slot *t = tail_free(s);
            rs_claim(s, t, pos);
            plan_add(s, pos, t->data);
        }
    }
    int kept = 0;
    for (int i = 0; i < s->n_want; i++) {
        int w = s->want[i];
        if (w > p0 + n) {
            s->want[kept++] = w;
        } else if (w > p0) {
            struct rs_slot *c = ckpt_victim(s, w);
            rs_claim(s, c, w);
            plan_add(s, w, c->data);
        }
    }
    s->n_want = kept;
}

/* Snapshot target for the state after tokens [0, pos), or NULL. */
static float *plan_target(const struct session *s, int pos) {
    for (int i = 0; i < s->n_plan; i++)
        if (s->plan_pos[i] == pos) return s->plan_dst[i];
    return NULL;
}

int session_checkpoint(struct session *s, struct error *err) {
    if (!is_hybrid(s)) return 0;
    if (s->n_ckpt == 0)
        return error_set(err, ERR_INVALID,
                         "the session has no checkpoint slots (session_params.n_rs_checkpoints)");
    if (s->n_past > 0) rs_save(s, ckpt_victim(s, s->n_past), s->n_past);
    return 0;
}

int session_checkpoint_at(struct session *s, int pos, struct error *err) {
    if (!is_hybrid(s)) return 0;
    if (pos == s->n_past) return session_checkpoint(s, err);
    if (pos < s->n_past || pos > s->n_ctx)
        return error_set(err, ERR_INVALID, "cannot checkpoint position %d (at %d, context %d)", pos,
                         s->n_past, s->n_ctx);
    for (int i = 0; i < s->n_want; i++)
        if (s->want[i] == pos) return 0;
    if (s->n_want >= s->n_ckpt)
        return error_set(err, ERR_INVALID, "%d checkpoint requests already pending", s->n_want);
    s->want[s->n_want++] = pos;
    return 0;
}

int session_truncate_cost(const struct session *s, int n_past) {
    if (n_past < 0 || n_past > s->n_past) return -1;
    if (!is_hybrid(s) || n_past == s->n_past || n_past == 0 || rs_find(s, n_past)) return 0;
    const struct rs_slot *b = rs_best_below(s, n_past);
    return n_past - (b ? b->pos : 0);
}

/* Brings the live state from position from (already restored) to to by evaluating the
 * session's own tokens again. */
static int session_replay(struct session *s, int from, int to, struct error *err) {
    s->n_past = from;
    if (to == from) return 0;
    return session_eval(s, s->tokens + from, to - from, NULL, err);
}

/* ============================================================================================
 * MTP
 * llama.cpp's MTP driver (common/speculative.cpp, draft-mtp for qwen35/qwen35moe) runs the MTP
 * block after every target batch, prompt batches included, over the same tokens: the token at
 * position p is paired with the trunk's hidden state at p-1 (the previous batch's last row for
 * the first token, zeros at position 0), which fills the MTP layer's KV cache for every
 * position, so a draft's attention sees the whole context. hearth does the same (mtp_pass after
 * each forward pass of an MTP session). Rows of a verify batch that are rejected leave stale
 * MTP cache entries beyond n_past, which the next eval overwrites, as in the trunk's cache. The
 * session keeps the last MTP_KEEP hidden states so that drafting can start after any accepted
 * prefix of a verify batch; a truncation further back (or a copied prefix without them) starts
 * from zeros, which only lowers the first draft's quality.
 * ============================================================================================ */

/* dst := the trunk's hidden state at pos, or zeros when there is none (pos < 0, not kept). */
static void mtp_h_lookup(const struct session *s, int pos, float *dst) {
    size_t E = (size_t)model_hparams(s->e->model)->n_embd;
    if (pos >= s->mtp_h_pos && pos < s->mtp_h_pos + s->mtp_h_n && pos >= 0)
        memcpy(dst, s->mtp_h + (size_t)(pos - s->mtp_h_pos) * E, E * sizeof(float));
    else
        memset(dst, 0, E * sizeof(float));
}

/* After n tokens at positions p0.. whose hidden states are rows (h_prev: the one at p0-1, as
 * looked up): keeps the newest MTP_KEEP positions, older ones from the store where it reaches
 * p0-1 (so one-token steps keep a window too), else h_prev alone. */
static void mtp_h_store(struct session *s, int p0, int n, const float *h_prev, const float *rows) {
    size_t E = (size_t)model_hparams(s->e->model)->n_embd;
    int n_new = n < MTP_KEEP ? n : MTP_KEEP, r0 = n - n_new, m = 0;
    if (r0 == 0) {
        int room = MTP_KEEP - n_new, op = s->mtp_h_pos;
        if (s->mtp_h_n > 0 && op <= p0 - 1 && op + s->mtp_h_n >= p0) {
            m = p0 - op < room ? p0 - op : room;
            memmove(s->mtp_h, s->mtp_h + (size_t)(p0 - m - op) * E, (size_t)m * E * sizeof(float));
        } else if (room > 0) {
            memcpy(s->mtp_h, h_prev, E * sizeof(float));
            m = 1;
        }
    }
    memcpy(s->mtp_h + (size_t)m * E, rows + (size_t)r0 * E, (size_t)n_new * E * sizeof(float));
    s->mtp_h_pos = p0 + r0 - m;
    s->mtp_h_n = m + n_new;
}

/* The MTP pass after trunk pass b (whose hidden rows are in e->b_hid): for every sequence q of
 * b whose session ses[q] has MTP, its rows paired with the hidden state before each. */
static int mtp_pass(struct engine *e, const struct batch *b, struct session *const *ses,
                    struct error *err) {
    size_t E = (size_t)model_hparams(e->model)->n_embd;
    int n = 0, nq = 0;
    for (int i0 = 0; i0 < b->n_tokens;) {
        int i1 = i0 + 1;
        while (i1 < b->n_tokens && b->seq[i1] == b->seq[i0]) i1++;
        struct session *s = ses[b->seq[i0]];
        if (s->mtp) {
            int p0 = b->pos[i0], nt = i1 - i0;
            float *hin = e->b_hin + (size_t)n * E;
            mtp_h_lookup(s, p0 - 1, hin);
            memcpy(hin + E, e->b_hid + (size_t)i0 * E, (size_t)(nt - 1) * E * sizeof(float));
            mtp_h_store(s, p0, nt, hin, e->b_hid + (size_t)i0 * E);
            for (int t = 0; t < nt; t++) {
                e->m_tok[n + t] = b->tokens[i0 + t];
                e->m_pos[n + t] = p0 + t;
                e->m_seq[n + t] = nq;
            }
            e->m_kv[nq++] = s->kv;
            n += nt;
        }
        i0 = i1;
    }
    if (n == 0) return 0;
    struct batch mb = {
        .n_tokens = n,
        .tokens = e->m_tok,
        .pos = e->m_pos,
        .seq = e->m_seq,
        .kv = e->m_kv,
        .h_in = e->b_hin,
    };
    return model_forward_mtp(e->model, &mb, err);
}

int session_enable_mtp(struct session *s, struct error *err) {
    const struct model_hparams *hp = model_hparams(s->e->model);
    if (!model_has_mtp(s->e->model))
        return error_set(err, ERR_UNSUPPORTED,
                         "the model has no MTP (nextn) layers; MTP drafting needs an MTP GGUF");
    if (s->mtp) return 0;
    int rc = kv_cache_alloc_layer(s->kv, hp->n_layer, err);
    if (rc) return rc;
    s->mtp_h = mem_calloc((size_t)MTP_KEEP * (size_t)hp->n_embd, sizeof(float));
    if (!s->mtp_h) return error_set(err, ERR_NOMEM, "out of memory");
    s->mtp_h_n = 0;
    s->mtp = 1;
    return 0;
}

int session_mtp_draft(struct session *s, int32_t next, int n, float p_min, int32_t *out,
                      float *probs, struct error *err) {
    struct engine *e = s->e;
    const struct model_hparams *hp = model_hparams(e->model);
    if (!s->mtp) return error_set(err, ERR_INVALID, "MTP is not enabled on this session");
    if (next < 0 || next >= hp->n_vocab)
        return error_set(err, ERR_INVALID, "token id %d out of range (vocabulary %d)", next,
                         hp->n_vocab);
    size_t E = (size_t)hp->n_embd, V = (size_t)hp->n_vocab;
    struct kv_cache *kvs[1] = {s->kv};
    mtp_h_lookup(s, s->n_past - 1, e->b_hin);
    int32_t tok = next;
    int k = 0;
    while (k < n && s->n_past + k < s->n_ctx) {
        s->pos_buf[0] = s->n_past + k;
        s->seq_buf[0] = 0;
        s->out_rows[0] = 0;
        struct batch b = {
            .n_tokens = 1,
            .tokens = &tok,
            .pos = s->pos_buf,
            .seq = s->seq_buf,
            .kv = kvs,
            .n_outputs = 1,
            .out_rows = s->out_rows,
            .logits = e->b_logits,
            .hidden = e->b_hid,
            .h_in = e->b_hin,
        };
        int rc = model_forward_mtp(e->model, &b, err);
        if (rc) return rc;
        const float *l = e->b_logits;
        size_t best = 0;
        for (size_t v = 1; v < V; v++)
            if (l[v] > l[best]) best = v;
        double sum = 0;
        for (size_t v = 0; v < V; v++) sum += exp((double)l[v] - (double)l[best]);
        float p = (float)(1.0 / sum);
        if (p < p_min) break;
        out[k] = (int32_t)best;
        if (probs) probs[k] = p;
        k++;
        tok = (int32_t)best;
        memcpy(e->b_hin, e->b_hid, E * sizeof(float)); /* chain on the block's own output */
    }
    return k;
}

/* ============================================================================================
 * Evaluation
 * ============================================================================================ */

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
    rs_plan(s, s->n_past, n);
    for (int i0 = 0; i0 < n; i0 += nb) {
        int nt = n - i0 < nb ? n - i0 : nb;
        int last_batch = i0 + nt == n, any_snap = 0;
        for (int i = 0; i < nt; i++) {
            s->pos_buf[i] = s->n_past + i;
            if (s->n_plan) any_snap |= (s->snap_buf[i] = plan_target(s, s->n_past + i + 1)) != 0;
        }
        struct batch b = {
            .n_tokens = nt,
            .tokens = ids + i0,
            .pos = s->pos_buf,
            .seq = s->seq_buf,
            .kv = kvs,
            .rs_snap = any_snap ? s->snap_buf : NULL,
            .hidden = s->mtp ? s->e->b_hid : NULL,
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
        if (!rc && s->mtp) rc = mtp_pass(s->e, &b, &s, err);
        if (rc) return rc; /* cannot happen after the checks above, but keep state consistent */
        memmove(s->tokens + s->n_past, ids + i0,
                (size_t)nt * sizeof(int32_t)); /* may be a replay */
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
    if (dst == src) return session_truncate(dst, n_past, err);
    /* hybrid: the state at n_past, or the nearest earlier one to replay from */
    const float *state = NULL;
    int from = n_past;
    if (is_hybrid(src) && n_past > 0) {
        const struct rs_slot *sl = n_past == src->n_past ? NULL : rs_find(src, n_past);
        if (n_past == src->n_past) {
            state = src->kv->rs;
        } else if (sl) {
            state = sl->data;
        } else {
            sl = rs_best_below(src, n_past);
            from = sl ? sl->pos : 0;
            state = sl ? sl->data : NULL;
        }
    }
    struct backend *be = model_backend(dst->e->model);
    size_t rk = dtype_row_bytes(src->kv->type, src->kv->kv_dim_k);
    size_t rv = dtype_row_bytes(src->kv->type, src->kv->kv_dim_v);
    for (int il = 0; il < src->kv->n_layer; il++) {
        if (!src->kv->k[il] || il >= dst->kv->n_layer || !dst->kv->k[il]) continue;
        be->copy(be, dst->kv->k[il], src->kv->k[il], rk * (size_t)n_past);
        be->copy(be, dst->kv->v[il], src->kv->v[il], rv * (size_t)n_past);
    }
    memcpy(dst->tokens, src->tokens, (size_t)n_past * sizeof(int32_t));
    dst->n_past = n_past;
    dst->has_logits = 0;
    if (dst->mtp) { /* the hidden states, where src has them (else drafts start from zeros) */
        dst->mtp_h_n = src->mtp ? src->mtp_h_n : 0;
        dst->mtp_h_pos = src->mtp_h_pos;
        if (src->mtp)
            memcpy(dst->mtp_h, src->mtp_h,
                   (size_t)MTP_KEEP * (size_t)model_hparams(dst->e->model)->n_embd * sizeof(float));
    }
    if (!is_hybrid(dst)) return 0;
    rs_drop_after(dst, -1);
    dst->n_want = 0;
    rs_restore(dst, state);
    int rc = session_replay(dst, from, n_past, err);
    dst->has_logits = 0;
    return rc;
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
    for (int i = 0; i < n_items; i++) rs_plan(items[i].s, items[i].s->n_past, items[i].n);
    /* Fill passes of up to nb tokens; an item may be split across passes. */
    int item = 0, done = 0; /* done = tokens of `item` already evaluated */
    while (item < n_items) {
        int nt = 0, n_seq = 0, n_out = 0, any_snap = 0, any_mtp = 0;
        while (item < n_items && nt < nb) {
            struct session_batch_item *it = &items[item];
            int take = it->n - done < nb - nt ? it->n - done : nb - nt;
            struct session *s = it->s;
            e->b_kv[n_seq] = s->kv;
            e->b_ses[n_seq] = s;
            e->b_take[n_seq] = take;
            any_mtp |= s->mtp;
            for (int t = 0; t < take; t++) {
                e->b_tok[nt + t] = it->ids[done + t];
                e->b_pos[nt + t] = s->n_past + t;
                e->b_seq[nt + t] = n_seq;
                e->b_snap[nt + t] = s->n_plan ? plan_target(s, s->n_past + t + 1) : NULL;
                any_snap |= e->b_snap[nt + t] != NULL;
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
            .rs_snap = any_snap ? e->b_snap : NULL,
            .hidden = any_mtp ? e->b_hid : NULL,
        };
        int rc = model_forward(m, &b, err);
        if (!rc && any_mtp) rc = mtp_pass(e, &b, e->b_ses, err);
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
    int rc = 0;
    if (is_hybrid(s) && n_past < s->n_past) {
        rs_drop_after(s, n_past);
        const struct rs_slot *sl = n_past > 0 ? rs_find(s, n_past) : NULL;
        if (sl || n_past == 0) {
            rs_restore(s, sl ? sl->data : NULL);
        } else { /* no snapshot here: replay from the nearest earlier one */
            sl = rs_best_below(s, n_past);
            rs_restore(s, sl ? sl->data : NULL);
            rc = session_replay(s, sl ? sl->pos : 0, n_past, err);
        }
    }
    s->n_past = rc ? s->n_past : n_past;
    s->has_logits = 0;
    return rc;
}

int32_t session_sample(struct session *s, struct sampler *smp) {
    CHECK(s->has_logits);
    return sampler_sample(smp, s->logits, NULL);
}
