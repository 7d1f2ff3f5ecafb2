/* speculative.c: the decode loop with draft-and-verify (see speculative.h).
 *
 * State between calls: the last emitted token (`pending`) has been sampled but not evaluated;
 * the session holds everything before it. A step evaluates [pending, d1..dk] in one pass with
 * logits for every row; row i is the target's distribution for the token after position i, so
 * d(i+1) is checked against row i. The first rejected draft and everything after it are removed
 * from the session with session_truncate; the token sampled in its place becomes the new
 * pending token. When every draft is accepted, the last row gives one more token for free.
 */
#include "speculative.h"

#include "../base/mem.h"
#include "engine.h"

#include <string.h>

struct generator {
    struct session *s;    /* borrowed target session */
    struct sampler *smp;  /* borrowed */
    struct spec_params p; /* resolved: mode is NONE, NGRAM, DRAFT or MTP */
    int n_vocab;
    int greedy;         /* sampler temperature <= 0 */
    int32_t pending;    /* emitted, not yet evaluated; -1 before the first token */
    int cur_k;          /* current draft length (adaptive) */
    int32_t *batch;     /* [draft_max + 1] pending + drafts */
    float *logits;      /* [draft_max + 1][n_vocab] */
    struct session *ds; /* SPEC_DRAFT: the draft model's session */
    struct spec_stats st;
};

void spec_params_default(struct spec_params *p) {
    memset(p, 0, sizeof(*p));
    p->mode = SPEC_NONE;
    p->draft_max = 8;
    p->ngram_min = 2;
    p->ngram_max = 4;
    p->adaptive = 1;
}

static const char *const g_mode_names[] = {"none", "ngram", "draft", "mtp", "auto"};

int spec_mode_parse(const char *name, enum spec_mode *out) {
    for (int i = 0; i < 5; i++)
        if (!strcmp(name, g_mode_names[i])) {
            *out = (enum spec_mode)i;
            return 0;
        }
    return -1;
}

const char *spec_mode_name(enum spec_mode m) {
    return (unsigned)m < 5 ? g_mode_names[m] : "?";
}

/* ============================================================================================
 * Drafters
 * ============================================================================================ */

/* Prompt lookup over the virtual history h = tok[0..len) followed by `last` (the pending token):
 * find the most recent earlier occurrence of h's last n tokens (n from ngram_max down to
 * ngram_min) and propose up to k tokens that followed it. */
static int32_t hist_at(const int32_t *tok, int len, int32_t last, int i) {
    return i < len ? tok[i] : last;
}

static int draft_ngram(const struct generator *g, const int32_t *tok, int len, int32_t last,
                       int32_t *out, int k) {
    int total = len + 1;
    for (int n = g->p.ngram_max; n >= g->p.ngram_min; n--) {
        if (total < n + 1) continue;
        int s0 = total - n; /* suffix start */
        for (int i = s0 - 1; i >= 0; i--) {
            int j = 0;
            while (j < n && hist_at(tok, len, last, i + j) == hist_at(tok, len, last, s0 + j)) j++;
            if (j < n) continue;
            int m = 0;
            while (m < k && i + n + m < total) {
                out[m] = hist_at(tok, len, last, i + n + m);
                m++;
            }
            if (m > 0) return m;
        }
    }
    return 0;
}

/* Draft model: bring the draft session to the target's tokens plus `pending`, then decode k
 * tokens greedily. The draft session ends holding the first k-1 drafts (the last one needs no
 * evaluation); the next step trims it back to what the target accepted. */
static int draft_model(struct generator *g, int32_t *out, int k, struct error *err) {
    const int32_t *tt = session_tokens(g->s);
    int n_past = session_n_past(g->s);
    int common = session_common_prefix(g->ds, tt, n_past);
    if (common < session_n_past(g->ds) && session_truncate(g->ds, common, err)) return -1;
    if (n_past + 1 + k > session_n_ctx(g->ds)) k = session_n_ctx(g->ds) - n_past - 1;
    if (k <= 0) return 0;
    if (common < n_past && session_eval(g->ds, tt + common, n_past - common, NULL, err)) return -1;
    if (session_eval(g->ds, &g->pending, 1, NULL, err)) return -1;
    for (int j = 0; j < k; j++) {
        const float *l = session_logits(g->ds);
        int32_t best = 0;
        for (int32_t v = 1; v < g->n_vocab; v++)
            if (l[v] > l[best]) best = v;
        out[j] = best;
        if (j + 1 < k && session_eval(g->ds, &out[j], 1, NULL, err)) return -1;
    }
    return k;
}

/* ============================================================================================
 * Generator
 * ============================================================================================ */

int generator_create(struct generator **out, struct session *s, struct sampler *smp,
                     const struct spec_params *p, struct error *err) {
    *out = NULL;
    struct spec_params def;
    if (!p) {
        spec_params_default(&def);
        p = &def;
    }
    if (p->draft_max < 0 || p->draft_max > 64)
        return error_set(err, ERR_INVALID, "draft length %d out of range (0..64)", p->draft_max);
    if (p->mode != SPEC_NONE &&
        (p->ngram_min < 1 || p->ngram_max < p->ngram_min || p->ngram_max > 64))
        return error_set(err, ERR_INVALID, "n-gram lengths %d..%d out of range", p->ngram_min,
                         p->ngram_max);
    struct engine *e = session_engine(s);
    struct engine_info info;
    engine_get_info(e, &info);
    struct generator *g = mem_calloc(1, sizeof(*g));
    if (!g) return error_set(err, ERR_NOMEM, "out of memory");
    g->s = s;
    g->smp = smp;
    g->p = *p;
    g->n_vocab = info.n_vocab;
    g->greedy = sampler_is_greedy(smp);
    g->pending = -1;
    int rc = 0;
    switch (p->mode) {
    case SPEC_AUTO:
        g->p.mode = SPEC_NGRAM; /* MTP joins here once nextn heads are supported */
        break;
    case SPEC_MTP:
        rc = error_set(err, ERR_UNSUPPORTED,
                       "MTP speculation needs a model with nextn layers and MTP support, which "
                       "this build does not have yet; use --spec ngram or draft");
        goto fail;
    case SPEC_DRAFT: {
        if (!p->draft_engine) {
            rc = error_set(err, ERR_INVALID, "draft speculation needs a draft model");
            goto fail;
        }
        if ((rc = engine_check_vocab_compatible(e, p->draft_engine, err))) goto fail;
        struct session_params sp;
        session_params_default(&sp);
        sp.n_ctx = session_n_ctx(s);
        sp.n_rs_tail = p->draft_max; /* hybrid draft models: cheap trims */
        if ((rc = session_create(&g->ds, p->draft_engine, &sp, err))) goto fail;
        break;
    }
    default:
        break;
    }
    if (g->p.mode == SPEC_NONE) g->p.draft_max = 0;
    /* hybrid targets: keep the state after each verified token so a rejection is a copy */
    if (g->p.draft_max > 0 && (rc = session_set_rs_tail(s, g->p.draft_max, err))) goto fail;
    g->cur_k = g->p.draft_max;
    g->batch = mem_calloc((size_t)g->p.draft_max + 1, sizeof(int32_t));
    g->logits = mem_calloc(((size_t)g->p.draft_max + 1) * (size_t)g->n_vocab, sizeof(float));
    if (!g->batch || !g->logits) {
        rc = error_set(err, ERR_NOMEM, "out of memory");
        goto fail;
    }
    *out = g;
    return 0;
fail:
    generator_free(g);
    return rc;
}

void generator_free(struct generator *g) {
    if (!g) return;
    session_free(g->ds);
    mem_free(g->batch);
    mem_free(g->logits);
    mem_free(g);
}

void generator_stats(const struct generator *g, struct spec_stats *st) {
    *st = g->st;
}

int generator_prefill(struct generator *g, const int32_t *ids, int n, struct error *err) {
    int rc = session_eval(g->s, ids, n, NULL, err);
    if (rc) return rc;
    for (int i = 0; i < n; i++) sampler_accept(g->smp, ids[i]);
    g->pending = -1;
    return 0;
}

/* Probability of id in a sampler distribution (0 if it was filtered out). */
static float dist_prob(const struct token_prob *d, int n, int32_t id) {
    for (int i = 0; i < n; i++)
        if (d[i].id == id) return d[i].p;
    return 0.0f;
}

static void adapt(struct generator *g, int n_draft, int n_acc) {
    if (!g->p.adaptive || n_draft == 0) return;
    if (n_acc == n_draft && g->cur_k < g->p.draft_max)
        g->cur_k++;
    else if (n_acc * 2 < n_draft && g->cur_k > 1)
        g->cur_k = (g->cur_k + 1) / 2;
}

int generator_next(struct generator *g, int32_t *out, int max, struct error *err) {
    if (max < 1) return error_set(err, ERR_INVALID, "no room for tokens");
    if (g->pending < 0) { /* first token after the prompt */
        if (!session_logits(g->s)) return error_set(err, ERR_INVALID, "nothing evaluated yet");
        g->pending = sampler_sample(g->smp, session_logits(g->s), NULL);
        out[0] = g->pending;
        g->st.n_emitted++;
        return 1;
    }
    int room = session_n_ctx(g->s) - session_n_past(g->s);
    if (room < 1) return error_set(err, ERR_RANGE, "context full (%d tokens)", session_n_ctx(g->s));
    int k = g->cur_k;
    if (k > room - 1) k = room - 1;
    if (k > max - 1) k = max - 1;
    int nd = 0;
    if (k > 0) {
        if (g->p.mode == SPEC_NGRAM) {
            nd = draft_ngram(g, session_tokens(g->s), session_n_past(g->s), g->pending,
                             g->batch + 1, k);
        } else if (g->p.mode == SPEC_DRAFT) {
            nd = draft_model(g, g->batch + 1, k, err);
            if (nd < 0) return err ? err->code : ERR_INVALID;
        }
    }
    g->batch[0] = g->pending;
    int rc = session_eval(g->s, g->batch, nd + 1, nd > 0 ? g->logits : NULL, err);
    if (rc) return rc;
    g->st.n_steps++;
    g->st.n_drafted += nd;
    int n_out = 0;
    for (int i = 0; i < nd; i++) {
        const struct token_prob *d;
        int n = sampler_dist(g->smp, g->logits + (size_t)i * g->n_vocab, &d);
        int32_t draft = g->batch[1 + i];
        int ok = g->greedy ? d[0].id == draft : sampler_uniform(g->smp) < dist_prob(d, n, draft);
        if (ok) {
            sampler_take(g->smp, draft);
            out[n_out++] = draft;
            continue;
        }
        int32_t x = g->greedy ? d[0].id : sampler_draw(g->smp, d, n, draft);
        if (x < 0) x = d[0].id;
        sampler_take(g->smp, x);
        out[n_out++] = x;
        /* drop drafts i..nd-1 from the session: it keeps pending + the accepted drafts */
        if ((rc = session_truncate(g->s, session_n_past(g->s) - (nd - i), err))) return rc;
        g->pending = x;
        g->st.n_accepted += i;
        g->st.n_emitted += n_out;
        adapt(g, nd, i);
        return n_out;
    }
    const float *last = nd > 0 ? g->logits + (size_t)nd * g->n_vocab : session_logits(g->s);
    int32_t x = sampler_sample(g->smp, last, NULL);
    out[n_out++] = x;
    g->pending = x;
    g->st.n_accepted += nd;
    g->st.n_emitted += n_out;
    adapt(g, nd, nd);
    return n_out;
}
