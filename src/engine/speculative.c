/* speculative.c: the decode loop with draft-and-verify (see speculative.h).
 *
 * State between steps: the last emitted token (`pending`) has been sampled but not evaluated;
 * the session holds everything before it. A step evaluates [pending, d1..dk] in one pass with
 * logits for every row; row i is the target's distribution for the token after position i, so
 * d(i+1) is checked against row i. The first rejected draft and everything after it are removed
 * from the session with session_truncate; the token sampled in its place becomes the new
 * pending token. When every draft is accepted, the last row gives one more token for free.
 * generator_plan builds [pending, d1..dk]; the caller evaluates it (alone or batched with other
 * sessions); generator_commit does the verification.
 */
#include "speculative.h"

#include "../base/mem.h"
#include "engine.h"

#include <math.h>
#include <string.h>

/* Marginal cost of one more row in a verify pass, relative to a one-token decode step. Extra rows
 * reuse the weights already streamed for the first, but their arithmetic is not free on a CPU:
 * with the AVX-512 kernels prompt processing ran at ~2-2.5x the decode rate on Qwen3.6-shaped
 * files (an extra row ~0.4 of a step) and real models with more threads do better; 0.25 sits
 * between. It only steers the draft length (speculative-decoding.md 1, 3.4). */
#define SPEC_VERIFY_ROW_COST 0.25
/* Weight of older steps in the acceptance estimate (an exponential window of ~10 steps). */
#define SPEC_DECAY 0.9
/* SPEC_AUTO: after an MTP draft that was not worth verifying, wait 1, 2, 4 .. this many steps
 * before drafting with the head again (each try costs draft steps). The n-gram drafter backs off
 * the same way, verifying a one-token probe after each wait (its estimate only moves when a
 * draft is verified). */
#define SPEC_BACKOFF_MAX 16

/* One drafter's adaptive state. */
struct drafter {
    int on;       /* used by this generator */
    int k_cap;    /* longest draft the generator was created for */
    int k_max;    /* longest draft in this generation (<= k_cap) */
    double cost;  /* cost of one drafted token relative to a decode step: a verify row plus
                     drafting it (the drafter's weight bytes per token over the target's) */
    double n_acc; /* decayed count of accepted draft tokens */
    double n_rej; /* decayed count of rejected ones (at most one per step) */
    int wait;     /* steps to skip before the next draft (backing off) */
    int backoff;  /* current back-off length, 0 when not backing off */
};

struct generator {
    struct session *s;    /* borrowed target session */
    struct sampler *smp;  /* borrowed */
    struct spec_params p; /* as created: mode NONE, NGRAM, DRAFT, MTP or AUTO; draft_max is the
                             capacity of the buffers and of the session's rollback tail */
    enum spec_mode mode;  /* this generation's (generator_begin narrows p.mode) */
    int draft_max;        /* this generation's longest draft (<= p.draft_max) */
    int n_vocab;
    int greedy;      /* sampler temperature <= 0 */
    int32_t pending; /* emitted, not yet evaluated; -1 before the first token */
    int plan_n;      /* tokens of the outstanding plan, -1 when none */
    int plan_base;   /* session n_past when it was planned */
    enum spec_source plan_src;
    struct drafter d[SPEC_SRC_COUNT];
    int32_t *batch;     /* [draft_max + 1] pending + the chosen draft */
    int32_t *alt;       /* [draft_max + 1] the other candidate draft (SPEC_AUTO); the draft
                           model's catch-up tokens (SPEC_DRAFT) */
    float *probs;       /* [draft_max] MTP probabilities of the drafted tokens */
    float *logits;      /* [draft_max + 1][n_vocab] */
    struct session *ds; /* SPEC_DRAFT: the draft model's session */
    struct spec_stats st;
};

void spec_params_default(struct spec_params *p) {
    memset(p, 0, sizeof(*p));
    p->mode = SPEC_NONE;
    p->draft_max = 8;
    p->mtp_max = 3;
    p->mtp_p_min = 0.0f;
    p->ngram_min = 2;
    p->ngram_max = 4;
    p->adaptive = 1;
}

static const char *const g_mode_names[] = {"none", "ngram", "draft", "mtp", "auto"};
static const char *const g_source_names[] = {"ngram", "draft", "mtp"};

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

const char *spec_source_name(enum spec_source src) {
    return (unsigned)src < SPEC_SRC_COUNT ? g_source_names[src] : "?";
}

/* ============================================================================================
 * Draft length
 * With per-token acceptance a, a draft of k tokens yields 1 + a + ... + a^k tokens per target
 * pass on average (the accepted prefix plus the target's own token), and costs 1 + k * cost
 * decode steps. choose_length takes the k in 1..k_max with the most tokens per unit of cost;
 * a is the drafter's decayed acceptance rate with a uniform prior (1/2 before any evidence).
 * Everything here depends on token counts only, so a seeded run drafts the same way each time.
 * ============================================================================================ */

static double acceptance(const struct drafter *d) {
    return (d->n_acc + 1.0) / (d->n_acc + d->n_rej + 2.0);
}

static int choose_length(const struct generator *g, const struct drafter *d) {
    if (!g->p.adaptive) return d->k_max;
    double a = acceptance(d), yield = 1.0, ak = 1.0, best_v = 0;
    int best = 1;
    for (int k = 1; k <= d->k_max; k++) {
        ak *= a;
        yield += ak;
        double v = yield / (1.0 + d->cost * k);
        if (v > best_v + 1e-12) {
            best_v = v;
            best = k;
        }
    }
    return best;
}

static void record(struct generator *g, enum spec_source src, int n_draft, int n_acc) {
    struct drafter *d = &g->d[src];
    d->n_acc = d->n_acc * SPEC_DECAY + n_acc;
    d->n_rej = d->n_rej * SPEC_DECAY + (n_acc < n_draft ? 1 : 0);
    if (src == SPEC_SRC_NGRAM && n_acc > 0) d->backoff = d->wait = 0; /* probe again at once */
    g->st.n_drafted_by[src] += n_draft;
    g->st.n_accepted_by[src] += n_acc;
}

/* Starts or lengthens a drafter's back-off: 1, 2, 4 .. SPEC_BACKOFF_MAX steps. */
static void back_off(struct drafter *d) {
    d->backoff = d->backoff ? 2 * d->backoff : 1;
    if (d->backoff > SPEC_BACKOFF_MAX) d->backoff = SPEC_BACKOFF_MAX;
    d->wait = d->backoff;
}

/* Tokens per unit of cost of verifying the first m tokens of a draft whose i-th token is
 * accepted (given the ones before) with probability q[i] (or q0 for all when q is NULL):
 * (1 + sum_i prod_{j<=i} q_j) / (1 + cost * m). Without a draft it is 1. Also returns the best
 * m in *m_best. */
static double draft_value(const float *q, double q0, int n, double cost, int *m_best) {
    double yield = 1.0, pr = 1.0, best = 1.0;
    *m_best = 0;
    for (int m = 1; m <= n; m++) {
        pr *= q ? (double)q[m - 1] : q0;
        yield += pr;
        double v = yield / (1.0 + cost * m);
        if (v > best) {
            best = v;
            *m_best = m;
        }
    }
    return best;
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
    int behind = n_past - common;
    if (behind <= g->p.draft_max) { /* the usual case: catch up and add pending in one pass */
        memcpy(g->alt, tt + common, (size_t)behind * sizeof(int32_t));
        g->alt[behind] = g->pending;
        if (session_eval(g->ds, g->alt, behind + 1, NULL, err)) return -1;
    } else if (session_eval(g->ds, tt + common, behind, NULL, err) ||
               session_eval(g->ds, &g->pending, 1, NULL, err)) {
        return -1;
    }
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

/* The n-gram draft for this step, into out: the lookup cut to the length worth verifying at the
 * drafter's acceptance estimate. When even one token is not worth it, the drafter backs off and
 * then verifies a one-token probe after each wait (1, 2, 4 .. steps; an accepted probe ends the
 * back-off), so its estimate can recover when the text turns repetitive. Returns the length
 * (0: none this step); *value gets its tokens per unit of cost (1 without a draft). */
static int draft_ngram_step(struct generator *g, int limit, int32_t *out, double *value) {
    struct drafter *ng = &g->d[SPEC_SRC_NGRAM];
    *value = 1.0;
    if (ng->wait > 0) {
        ng->wait--;
        return 0;
    }
    int k = choose_length(g, ng);
    if (k > limit) k = limit;
    int n = draft_ngram(g, session_tokens(g->s), session_n_past(g->s), g->pending, out, k);
    if (n == 0) return 0;
    int m;
    double v = draft_value(NULL, acceptance(ng), n, ng->cost, &m);
    if (!g->p.adaptive) {
        *value = v;
        return n;
    }
    if (m == 0) { /* not worth verifying: a probe now, then wait longer */
        back_off(ng);
        m = 1;
        v = draft_value(NULL, acceptance(ng), 1, ng->cost, &k);
    } else {
        ng->backoff = 0;
    }
    *value = v;
    return m;
}

/* SPEC_AUTO: the n-gram draft (free) and, unless it already promises more than the head could,
 * the MTP head's draft with its probabilities as acceptance estimates; the one with more tokens
 * per unit of cost wins (the head's cut to its best length). */
static int draft_auto(struct generator *g, int limit, enum spec_source *src, struct error *err) {
    struct drafter *mt = &g->d[SPEC_SRC_MTP];
    double v_ng;
    int n_ng = draft_ngram_step(g, limit, g->batch + 1, &v_ng), m = 0;
    *src = SPEC_SRC_NGRAM;
    if (!mt->on) return n_ng;
    int k_mt = choose_length(g, mt);
    if (k_mt > limit) k_mt = limit;
    double v_max = (1.0 + k_mt) / (1.0 + mt->cost * k_mt); /* a draft the head is sure of */
    if (v_ng >= v_max || mt->wait > 0) {
        if (mt->wait > 0) mt->wait--;
        return n_ng;
    }
    int n_mt = session_mtp_draft(g->s, g->pending, k_mt, g->p.mtp_p_min, g->alt, g->probs, err);
    if (n_mt < 0) return n_mt;
    double v_mt = draft_value(g->probs, 0, n_mt, mt->cost, &m);
    if (m == 0) { /* not worth verifying: back off */
        back_off(mt);
        return n_ng;
    }
    mt->backoff = 0;
    if (v_mt <= v_ng) return n_ng;
    memcpy(g->batch + 1, g->alt, (size_t)m * sizeof(int32_t));
    *src = SPEC_SRC_MTP;
    return m;
}

/* The draft for this step in g->batch[1..]: its length (0: none) and source, or -1. */
static int make_draft(struct generator *g, int limit, enum spec_source *src, struct error *err) {
    int32_t *out = g->batch + 1;
    double v;
    int k;
    switch (g->mode) {
    case SPEC_NGRAM:
        *src = SPEC_SRC_NGRAM;
        return draft_ngram_step(g, limit, out, &v);
    case SPEC_DRAFT:
        *src = SPEC_SRC_DRAFT;
        k = choose_length(g, &g->d[SPEC_SRC_DRAFT]);
        return draft_model(g, out, k < limit ? k : limit, err);
    case SPEC_MTP:
        *src = SPEC_SRC_MTP;
        k = choose_length(g, &g->d[SPEC_SRC_MTP]);
        return session_mtp_draft(g->s, g->pending, k < limit ? k : limit, g->p.mtp_p_min, out,
                                 g->probs, err);
    case SPEC_AUTO:
        return draft_auto(g, limit, src, err);
    default:
        *src = SPEC_SRC_NGRAM;
        return 0;
    }
}

/* ============================================================================================
 * Generator
 *
 * Creation sizes everything for the created draft_max (buffers, the hybrid session's rollback
 * tail, the draft model's session), so a reused generator (one per server slot) never
 * allocates again: generator_begin only narrows the mode and the length for one generation.
 * ============================================================================================ */

int generator_create(struct generator **out, struct session *s, struct sampler *smp,
                     const struct spec_params *p, struct error *err) {
    *out = NULL;
    struct spec_params def;
    if (!p) {
        spec_params_default(&def);
        p = &def;
    }
    if (p->draft_max < 0 || p->draft_max > SPEC_DRAFT_MAX || p->mtp_max < 0 ||
        p->mtp_max > SPEC_DRAFT_MAX)
        return error_set(err, ERR_INVALID, "draft length %d out of range (0..%d)",
                         p->draft_max < 0 || p->draft_max > SPEC_DRAFT_MAX ? p->draft_max
                                                                           : p->mtp_max,
                         SPEC_DRAFT_MAX);
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
    g->greedy = smp ? sampler_is_greedy(smp) : 0;
    g->pending = -1;
    g->plan_n = -1;
    double trunk = info.bytes_per_token ? (double)info.bytes_per_token : 1.0;
    int mtp_max = p->mtp_max < p->draft_max ? p->mtp_max : p->draft_max;
    int rc = 0;
    /* n-gram lookup needs nothing: every generator that may draft has it (generator_begin) */
    g->d[SPEC_SRC_NGRAM] = (struct drafter){
        p->mode != SPEC_NONE, p->draft_max, p->draft_max, SPEC_VERIFY_ROW_COST, 0, 0, 0, 0};
    switch (p->mode) {
    case SPEC_AUTO:
        if (!info.has_mtp) break; /* else the MTP head too: */
        /* fall through */
    case SPEC_MTP:
        if (!info.has_mtp) {
            rc = error_set(err, ERR_UNSUPPORTED,
                           "MTP speculation needs a model with an MTP block (nextn layers, e.g. "
                           "an \"MTP\" GGUF of Qwen3.5/3.6); this file has none: use --spec ngram "
                           "or draft");
            goto fail;
        }
        if ((rc = session_enable_mtp(s, err))) goto fail;
        g->d[SPEC_SRC_MTP] = (struct drafter){
            1, mtp_max, mtp_max, SPEC_VERIFY_ROW_COST + (double)info.mtp_bytes_per_token / trunk,
            0, 0,       0,       0};
        break;
    case SPEC_DRAFT: {
        if (!p->draft_engine) {
            rc = error_set(err, ERR_INVALID, "draft speculation needs a draft model");
            goto fail;
        }
        if ((rc = engine_check_vocab_compatible(e, p->draft_engine, err))) goto fail;
        struct engine_info di;
        engine_get_info(p->draft_engine, &di);
        g->d[SPEC_SRC_DRAFT] =
            (struct drafter){1,
                             p->draft_max,
                             p->draft_max,
                             SPEC_VERIFY_ROW_COST + (double)di.bytes_per_token / trunk,
                             0,
                             0,
                             0,
                             0};
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
    g->mode = g->p.mode;
    g->draft_max = g->p.draft_max;
    /* hybrid targets: keep the state after each verified token so a rejection is a copy */
    if (g->p.draft_max > 0 && (rc = session_set_rs_tail(s, g->p.draft_max, err))) goto fail;
    size_t k1 = (size_t)g->p.draft_max + 1;
    g->batch = mem_calloc(k1, sizeof(int32_t));
    g->alt = mem_calloc(k1, sizeof(int32_t));
    g->probs = mem_calloc(k1, sizeof(float));
    g->logits = g->p.draft_max > 0 ? mem_calloc(k1 * (size_t)g->n_vocab, sizeof(float)) : NULL;
    if (!g->batch || !g->alt || !g->probs || (g->p.draft_max > 0 && !g->logits)) {
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
    mem_free(g->alt);
    mem_free(g->probs);
    mem_free(g->logits);
    mem_free(g);
}

void generator_stats(const struct generator *g, struct spec_stats *st) {
    *st = g->st;
}

int generator_max_step(const struct generator *g) {
    return g->p.draft_max + 1;
}

int generator_prefill(struct generator *g, const int32_t *ids, int n, struct error *err) {
    int rc = session_eval(g->s, ids, n, NULL, err);
    if (rc) return rc;
    for (int i = 0; i < n; i++) sampler_accept(g->smp, ids[i]);
    g->pending = -1;
    g->plan_n = -1;
    return 0;
}

int generator_begin(struct generator *g, struct sampler *smp, enum spec_mode mode, int draft_max,
                    struct error *err) {
    if (mode == SPEC_AUTO) mode = g->p.mode;
    int ok = mode == SPEC_NONE || mode == g->p.mode ||
             (mode == SPEC_NGRAM && g->p.mode != SPEC_NONE) ||
             (mode == SPEC_MTP && g->d[SPEC_SRC_MTP].on) ||
             (mode == SPEC_DRAFT && g->d[SPEC_SRC_DRAFT].on);
    if (!ok)
        return error_set(err, ERR_UNSUPPORTED,
                         "speculation '%s' is not available here (started with '%s')",
                         spec_mode_name(mode), spec_mode_name(g->p.mode));
    if (smp) g->smp = smp;
    g->greedy = sampler_is_greedy(g->smp);
    g->mode = mode;
    g->draft_max = mode == SPEC_NONE                              ? 0
                   : draft_max >= 0 && draft_max < g->p.draft_max ? draft_max
                                                                  : g->p.draft_max;
    for (int i = 0; i < SPEC_SRC_COUNT; i++) {
        struct drafter *d = &g->d[i];
        d->k_max = d->k_cap < g->draft_max ? d->k_cap : g->draft_max;
        d->n_acc = d->n_rej = 0;
        d->wait = d->backoff = 0;
    }
    g->pending = -1;
    g->plan_n = -1;
    return 0;
}

/* Probability of id in a sampler distribution (0 if it was filtered out). */
static float dist_prob(const struct token_prob *d, int n, int32_t id) {
    for (int i = 0; i < n; i++)
        if (d[i].id == id) return d[i].p;
    return 0.0f;
}

int generator_plan(struct generator *g, int max, struct generator_plan *plan, struct error *err) {
    CHECK(g->smp != NULL && g->plan_n < 0);
    memset(plan, 0, sizeof(*plan));
    if (max < 1) return error_set(err, ERR_INVALID, "no room for tokens");
    if (g->pending < 0) { /* first token: from the logits the prompt left */
        if (!session_logits(g->s)) return error_set(err, ERR_INVALID, "nothing evaluated yet");
        g->plan_n = 0;
        plan->ids = g->batch;
        return 0;
    }
    int room = session_n_ctx(g->s) - session_n_past(g->s);
    if (room < 1) return error_set(err, ERR_RANGE, "context full (%d tokens)", session_n_ctx(g->s));
    int limit = g->draft_max;
    if (limit > room - 1) limit = room - 1;
    if (limit > max - 1) limit = max - 1;
    int nd = 0;
    enum spec_source src = SPEC_SRC_NGRAM;
    if (limit > 0) {
        nd = make_draft(g, limit, &src, err);
        if (nd < 0) return err && err->code ? err->code : ERR_INVALID;
    }
    g->batch[0] = g->pending;
    g->plan_n = nd + 1;
    g->plan_base = session_n_past(g->s);
    g->plan_src = src;
    plan->ids = g->batch;
    plan->n = nd + 1;
    plan->logits = nd > 0 ? g->logits : NULL;
    return 0;
}

int generator_commit(struct generator *g, int32_t *out, struct error *err) {
    int n_plan = g->plan_n;
    CHECK(n_plan >= 0);
    g->plan_n = -1;
    if (n_plan == 0) { /* first token after the prompt */
        if (!session_logits(g->s)) return error_set(err, ERR_INVALID, "nothing evaluated yet");
        g->pending = sampler_sample(g->smp, session_logits(g->s), NULL);
        out[0] = g->pending;
        g->st.n_emitted++;
        return 1;
    }
    CHECK(session_n_past(g->s) == g->plan_base + n_plan); /* the caller evaluated the plan */
    int nd = n_plan - 1, rc;
    enum spec_source src = g->plan_src;
    g->st.n_steps++;
    g->st.n_drafted += nd;
    if (nd > 0) g->st.n_drafts++;
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
        record(g, src, nd, i);
        return n_out;
    }
    const float *last = nd > 0 ? g->logits + (size_t)nd * g->n_vocab : session_logits(g->s);
    int32_t x = sampler_sample(g->smp, last, NULL);
    out[n_out++] = x;
    g->pending = x;
    g->st.n_accepted += nd;
    g->st.n_emitted += n_out;
    if (nd > 0) record(g, src, nd, nd);
    return n_out;
}

int generator_next(struct generator *g, int32_t *out, int max, struct error *err) {
    struct generator_plan plan;
    int rc = generator_plan(g, max, &plan, err);
    if (rc) return rc;
    if (plan.n > 0 && (rc = session_eval(g->s, plan.ids, plan.n, plan.logits, err))) {
        g->plan_n = -1; /* the session is unchanged: the pending token stays pending */
        return rc;
    }
    return generator_commit(g, out, err);
}
