/* test_mtp.c: the MTP ("nextn") block of qwen35 files and the session plumbing around it.
 *
 * No llama.cpp golden exists for the MTP head (its main pass never runs it), so the forward pass
 * is checked against a float64 reference written here from architectures.md section 6.2 (the
 * weights of ../shared/models/synthetic/qwen35-mtp-f32.gguf are F32, read straight from the
 * file); the trunk's hidden states it starts from come from hearth's trunk, which the golden
 * tests cover. The session tests check that drafting after a rollback, after token-by-token
 * evaluation or after a prefix copy sees exactly the MTP cache and hidden states a fresh
 * evaluation gives.
 */
#include "test.h"

#include "../src/base/mem.h"
#include "../src/engine/engine.h"
#include "../src/model/kv_cache.h"
#include "../src/model/model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MTP_FILE    "synthetic/qwen35-mtp-f32.gguf"
#define REF_MAX_POS 32

/* ============================================================================================
 * float64 reference of the MTP block
 * ============================================================================================ */

struct ref {
    const struct gguf *g;
    int il, E, hd, n_head, n_head_kv, n_ff, V, n_rot;
    double base, eps;
    double *k, *v; /* [REF_MAX_POS][n_head_kv * hd] the block's cache */
};

static const float *ref_w(const struct ref *r, const char *fmt, int il) {
    char name[128];
    snprintf(name, sizeof(name), fmt, il);
    const struct gguf_tensor_info *t = gguf_find_tensor(r->g, name);
    if (!t || t->type != 0 /* F32 */) return NULL;
    return t->data;
}

/* y = W x for W {n_in, n_out} (rows of n_in). */
static void ref_matvec(const float *w, int n_in, int n_out, const double *x, double *y) {
    for (int o = 0; o < n_out; o++) {
        double acc = 0;
        for (int i = 0; i < n_in; i++) acc += (double)w[(size_t)o * n_in + i] * x[i];
        y[o] = acc;
    }
}

static void ref_rmsnorm(const double *x, int n, const float *w, double eps, double *y) {
    double ss = 0;
    for (int i = 0; i < n; i++) ss += x[i] * x[i];
    double s = 1.0 / sqrt(ss / n + eps);
    for (int i = 0; i < n; i++) y[i] = x[i] * s * w[i];
}

/* NEOX rotation of the first n_rot dims: pairs (i, i + n_rot/2). */
static void ref_rope(double *x, int n_rot, int pos, double base) {
    for (int i = 0; i < n_rot / 2; i++) {
        double th = pos * pow(base, -2.0 * i / n_rot), c = cos(th), s = sin(th);
        double a = x[i], b = x[i + n_rot / 2];
        x[i] = a * c - b * s;
        x[i + n_rot / 2] = a * s + b * c;
    }
}

/* One token through the MTP block at pos (the cache holds positions < pos): logits [V] for the
 * token after tok and the normed output hout [E]. */
static void ref_step(struct ref *r, int32_t tok, const float *h, int pos, double *logits,
                     double *hout) {
    int E = r->E, hd = r->hd, nh = r->n_head, nkv = r->n_head_kv, il = r->il;
    double *e = calloc((size_t)E, sizeof(double)), *cat = calloc(2 * (size_t)E, sizeof(double));
    double *x = calloc((size_t)E, sizeof(double)), *xn = calloc((size_t)E, sizeof(double));
    double *f = calloc(2 * (size_t)nh * hd, sizeof(double)),
           *q = calloc((size_t)hd, sizeof(double));
    double *o = calloc((size_t)nh * hd, sizeof(double)), *y = calloc((size_t)E, sizeof(double));
    double *g = calloc((size_t)r->n_ff, sizeof(double)),
           *u = calloc((size_t)r->n_ff, sizeof(double));
    double *sc = calloc(REF_MAX_POS, sizeof(double));
    const float *emb = ref_w(r, "token_embd.weight", 0);
    for (int i = 0; i < E; i++) e[i] = emb[(size_t)tok * E + i];
    ref_rmsnorm(e, E, ref_w(r, "blk.%d.nextn.enorm.weight", il), r->eps, cat);
    for (int i = 0; i < E; i++) e[i] = h[i];
    ref_rmsnorm(e, E, ref_w(r, "blk.%d.nextn.hnorm.weight", il), r->eps, cat + E);
    ref_matvec(ref_w(r, "blk.%d.nextn.eh_proj.weight", il), 2 * E, E, cat, x);
    /* gated attention */
    ref_rmsnorm(x, E, ref_w(r, "blk.%d.attn_norm.weight", il), r->eps, xn);
    ref_matvec(ref_w(r, "blk.%d.attn_q.weight", il), E, 2 * nh * hd, xn, f);
    double *kr = r->k + (size_t)pos * nkv * hd, *vr = r->v + (size_t)pos * nkv * hd;
    ref_matvec(ref_w(r, "blk.%d.attn_k.weight", il), E, nkv * hd, xn, kr);
    ref_matvec(ref_w(r, "blk.%d.attn_v.weight", il), E, nkv * hd, xn, vr);
    for (int j = 0; j < nkv; j++) {
        double tmp[512];
        ref_rmsnorm(kr + j * hd, hd, ref_w(r, "blk.%d.attn_k_norm.weight", il), r->eps, tmp);
        memcpy(kr + j * hd, tmp, (size_t)hd * sizeof(double));
        ref_rope(kr + j * hd, r->n_rot, pos, r->base);
    }
    for (int hh = 0; hh < nh; hh++) {
        ref_rmsnorm(f + (size_t)2 * hh * hd, hd, ref_w(r, "blk.%d.attn_q_norm.weight", il), r->eps,
                    q);
        ref_rope(q, r->n_rot, pos, r->base);
        int j = hh / (nh / nkv);
        double mx = -INFINITY, sum = 0;
        for (int p = 0; p <= pos; p++) {
            double d = 0;
            for (int i = 0; i < hd; i++) d += q[i] * r->k[((size_t)p * nkv + j) * hd + i];
            sc[p] = d / sqrt((double)hd);
            mx = sc[p] > mx ? sc[p] : mx;
        }
        for (int p = 0; p <= pos; p++) sum += (sc[p] = exp(sc[p] - mx));
        for (int i = 0; i < hd; i++) {
            double acc = 0;
            for (int p = 0; p <= pos; p++) acc += sc[p] * r->v[((size_t)p * nkv + j) * hd + i];
            double gate = f[(size_t)2 * hh * hd + hd + i];
            o[(size_t)hh * hd + i] = acc / sum / (1.0 + exp(-gate));
        }
    }
    ref_matvec(ref_w(r, "blk.%d.attn_output.weight", il), nh * hd, E, o, y);
    for (int i = 0; i < E; i++) x[i] += y[i];
    /* FFN */
    ref_rmsnorm(x, E, ref_w(r, "blk.%d.post_attention_norm.weight", il), r->eps, xn);
    ref_matvec(ref_w(r, "blk.%d.ffn_gate.weight", il), E, r->n_ff, xn, g);
    ref_matvec(ref_w(r, "blk.%d.ffn_up.weight", il), E, r->n_ff, xn, u);
    for (int i = 0; i < r->n_ff; i++) g[i] = g[i] / (1.0 + exp(-g[i])) * u[i];
    ref_matvec(ref_w(r, "blk.%d.ffn_down.weight", il), r->n_ff, E, g, y);
    for (int i = 0; i < E; i++) x[i] += y[i];
    /* head: shared_head_norm, the tied LM head of this file */
    ref_rmsnorm(x, E, ref_w(r, "blk.%d.nextn.shared_head_norm.weight", il), r->eps, hout);
    const float *head = ref_w(r, "output.weight", 0);
    ref_matvec(head ? head : emb, E, r->V, hout, logits);
    free(e), free(cat), free(x), free(xn), free(f), free(q), free(o), free(y), free(g), free(u);
    free(sc);
}

/* ============================================================================================
 * Model-level fixture: the trunk's hidden states and hearth's MTP pass
 * ============================================================================================ */

struct fixture {
    struct model *m;
    struct kv_cache *kv;
    struct ref r;
};

static int fixture_open(struct fixture *fx, const char *path) {
    memset(fx, 0, sizeof(*fx));
    struct error err = {0};
    struct model_params mp = {1, 64, 0};
    if (model_load(&fx->m, path, &mp, &err)) {
        test_fail(__FILE__, __LINE__, "%s", err.msg);
        return -1;
    }
    const struct model_hparams *hp = model_hparams(fx->m);
    int has_kv[MODEL_MAX_LAYERS];
    for (int il = 0; il <= hp->n_layer; il++) has_kv[il] = !hp->is_recurrent[il];
    int C = 2 * hp->ssm_n_group * hp->ssm_d_state + hp->ssm_d_inner;
    if (kv_cache_create(&fx->kv, model_backend(fx->m), hp->n_layer + 1, has_kv, REF_MAX_POS,
                        hp->n_head_kv * hp->head_dim, hp->n_head_kv * hp->head_dim, DTYPE_F32,
                        &err) ||
        kv_cache_add_recurrent(fx->kv, hp->is_recurrent, (hp->ssm_d_conv - 1) * C,
                               hp->ssm_d_inner * hp->ssm_d_state, &err)) {
        test_fail(__FILE__, __LINE__, "%s", err.msg);
        return -1;
    }
    struct ref *r = &fx->r;
    r->g = model_gguf(fx->m);
    r->il = hp->n_layer;
    r->E = hp->n_embd;
    r->hd = hp->head_dim;
    r->n_head = hp->n_head;
    r->n_head_kv = hp->n_head_kv;
    r->n_ff = hp->n_ff;
    r->V = hp->n_vocab;
    r->n_rot = hp->rope.n_rot;
    r->base = hp->rope.freq_base;
    r->eps = hp->rms_eps;
    r->k = calloc((size_t)REF_MAX_POS * r->n_head_kv * r->hd, sizeof(double));
    r->v = calloc((size_t)REF_MAX_POS * r->n_head_kv * r->hd, sizeof(double));
    return 0;
}

static void fixture_close(struct fixture *fx) {
    free(fx->r.k);
    free(fx->r.v);
    kv_cache_free(fx->kv);
    model_free(fx->m);
}

/* Largest |a - b| over n, and the largest |b| (the scale). */
static double max_diff(const float *a, const double *b, int n, double *scale) {
    double d = 0, s = 0;
    for (int i = 0; i < n; i++) {
        d = fmax(d, fabs((double)a[i] - b[i]));
        s = fmax(s, fabs(b[i]));
    }
    if (scale) *scale = s;
    return d;
}

static int argmax_d(const double *x, int n, double *margin) {
    int best = 0, second = -1;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    for (int i = 0; i < n; i++)
        if (i != best && (second < 0 || x[i] > x[second])) second = i;
    if (margin) *margin = x[best] - x[second];
    return best;
}

static const int32_t g_prompt[12] = {1, 13, 42, 100, 7, 300, 55, 211, 480, 99, 3, 256};

/* hearth's MTP pass over a prompt (each token paired with the trunk's hidden state of the
 * position before) and over two chained draft steps equals the float64 reference. */
TEST(mtp_forward_matches_reference) {
    const char *path = test_model_path(MTP_FILE);
    if (!path) SKIP_TEST("../shared/models/synthetic not found");
    struct fixture fx;
    ASSERT(fixture_open(&fx, path) == 0);
    struct ref *r = &fx.r;
    enum { N = 12 };
    int E = r->E, V = r->V;
    float *h = calloc((size_t)(N + 1) * E, sizeof(float)); /* row 0: zeros (before position 0) */
    float *logits = calloc((size_t)N * V, sizeof(float)),
          *hm = calloc((size_t)N * E, sizeof(float));
    double *rl = calloc((size_t)V, sizeof(double)), *rh = calloc((size_t)E, sizeof(double));
    int32_t pos[N], seq[N] = {0}, rows[N];
    for (int i = 0; i < N; i++) pos[i] = rows[i] = i;
    struct kv_cache *kvs[1] = {fx.kv};
    struct error err = {0};
    struct batch trunk = {
        .n_tokens = N, .tokens = g_prompt, .pos = pos, .seq = seq, .kv = kvs, .hidden = h + E};
    ASSERT(model_forward(fx.m, &trunk, &err) == 0);
    struct batch mb = {.n_tokens = N,
                       .tokens = g_prompt,
                       .pos = pos,
                       .seq = seq,
                       .kv = kvs,
                       .n_outputs = N,
                       .out_rows = rows,
                       .logits = logits,
                       .hidden = hm,
                       .h_in = h};
    ASSERT(model_forward_mtp(fx.m, &mb, &err) == 0);
    double worst = 0, worst_h = 0, scale = 0, scale_h = 0;
    int agree = 0;
    for (int p = 0; p < N; p++) {
        ref_step(r, g_prompt[p], h + (size_t)p * E, p, rl, rh);
        double s, sh;
        worst = fmax(worst, max_diff(logits + (size_t)p * V, rl, V, &s));
        worst_h = fmax(worst_h, max_diff(hm + (size_t)p * E, rh, E, &sh));
        scale = fmax(scale, s);
        scale_h = fmax(scale_h, sh);
        double margin;
        int best = argmax_d(rl, V, &margin);
        int hb = 0;
        for (int v = 1; v < V; v++)
            if (logits[(size_t)p * V + v] > logits[(size_t)p * V + hb]) hb = v;
        agree += hb == best || margin < 1e-3;
    }
    if (getenv("HEARTH_TEST_VERBOSE"))
        printf("    prompt rows: logits max diff %.3g (scale %.3g), hidden %.3g (scale %.3g)\n",
               worst, scale, worst_h, scale_h);
    EXPECT_MSG(worst < 1e-3 * scale, "logits differ by %.3g (scale %.3g)", worst, scale);
    EXPECT_MSG(worst_h < 1e-4 * scale_h, "hidden differs by %.3g (scale %.3g)", worst_h, scale_h);
    EXPECT_EQ_INT(agree, N);
    /* two chained draft steps after the prompt: token 5 at N with the trunk's h(N-1), then the
     * first draft at N+1 with the block's own output */
    int32_t tok = 5, p1 = N, row0 = 0;
    float hin[512], hout[512];
    ASSERT(E <= 512);
    memcpy(hin, h + (size_t)N * E, (size_t)E * sizeof(float));
    for (int step = 0; step < 2; step++, p1++) {
        struct batch db = {.n_tokens = 1,
                           .tokens = &tok,
                           .pos = &p1,
                           .seq = seq,
                           .kv = kvs,
                           .n_outputs = 1,
                           .out_rows = &row0,
                           .logits = logits,
                           .hidden = hout,
                           .h_in = hin};
        ASSERT(model_forward_mtp(fx.m, &db, &err) == 0);
        ref_step(r, tok, hin, p1, rl, rh);
        double s, d = max_diff(logits, rl, V, &s), margin;
        EXPECT_MSG(d < 1e-3 * s, "draft step %d: logits differ by %.3g (scale %.3g)", step, d, s);
        int best = argmax_d(rl, V, &margin);
        memcpy(hin, hout, (size_t)E * sizeof(float));
        tok = best;
    }
    free(h), free(logits), free(hm), free(rl), free(rh);
    fixture_close(&fx);
}

/* ============================================================================================
 * Sessions
 * ============================================================================================ */

static struct session *mtp_session(struct engine *e, int n_tail) {
    struct session_params sp;
    session_params_default(&sp);
    sp.n_ctx = 64;
    sp.mtp = 1;
    sp.n_rs_tail = n_tail;
    struct error err = {0};
    struct session *s = NULL;
    if (session_create(&s, e, &sp, &err)) test_fail(__FILE__, __LINE__, "%s", err.msg);
    return s;
}

/* Drafts 4 tokens after next; 0 and the tokens/probabilities, or -1. */
static int draft4(struct session *s, int32_t next, int32_t *out, float *probs) {
    struct error err = {0};
    int n = session_mtp_draft(s, next, 4, 0.0f, out, probs, &err);
    if (n != 4) test_fail(__FILE__, __LINE__, "session_mtp_draft: %d (%s)", n, err.msg);
    return n == 4 ? 0 : -1;
}

static int same_draft(const int32_t *a, const float *pa, const int32_t *b, const float *pb) {
    for (int i = 0; i < 4; i++)
        if (a[i] != b[i] || fabsf(pa[i] - pb[i]) > 1e-6f * fmaxf(1.0f, pa[i])) return 0;
    return 1;
}

/* The draft after a prompt is the reference chain's argmax (session plumbing: MTP pass over the
 * prompt, hidden-state store, chaining). */
TEST(mtp_session_draft_matches_reference) {
    const char *path = test_model_path(MTP_FILE);
    if (!path) SKIP_TEST("../shared/models/synthetic not found");
    struct fixture fx;
    ASSERT(fixture_open(&fx, path) == 0);
    enum { N = 12 };
    int E = fx.r.E, V = fx.r.V;
    float *h = calloc((size_t)(N + 1) * E, sizeof(float));
    double *rl = calloc((size_t)V, sizeof(double)), *rh = calloc((size_t)E, sizeof(double));
    int32_t pos[N], seq[N] = {0};
    for (int i = 0; i < N; i++) pos[i] = i;
    struct kv_cache *kvs[1] = {fx.kv};
    struct error err = {0};
    struct batch trunk = {
        .n_tokens = N, .tokens = g_prompt, .pos = pos, .seq = seq, .kv = kvs, .hidden = h + E};
    ASSERT(model_forward(fx.m, &trunk, &err) == 0);
    for (int p = 0; p < N; p++) ref_step(&fx.r, g_prompt[p], h + (size_t)p * E, p, rl, rh);
    int32_t want[4], tok = 5;
    float hin[512];
    memcpy(hin, h + (size_t)N * E, (size_t)E * sizeof(float));
    double margins[4];
    for (int i = 0; i < 4; i++) {
        ref_step(&fx.r, tok, hin, N + i, rl, rh);
        want[i] = tok = argmax_d(rl, V, &margins[i]);
        for (int j = 0; j < E; j++) hin[j] = (float)rh[j];
    }
    struct engine_params ep;
    engine_params_default(&ep);
    ep.n_threads = 2;
    struct engine *e = NULL;
    ASSERT(engine_open(&e, path, &ep, &err) == 0);
    struct session_params sp;
    session_params_default(&sp);
    sp.kv_type = KV_TYPE_F32;
    sp.mtp = 1;
    sp.n_ctx = 64;
    struct session *s = NULL;
    ASSERT(session_create(&s, e, &sp, &err) == 0);
    ASSERT(session_eval(s, g_prompt, N, NULL, &err) == 0);
    int32_t got[4];
    float probs[4];
    ASSERT(draft4(s, 5, got, probs) == 0);
    for (int i = 0; i < 4; i++) {
        EXPECT_MSG(got[i] == want[i] || margins[i] < 1e-3, "draft %d: %d, reference %d", i, got[i],
                   want[i]);
        EXPECT(probs[i] > 0 && probs[i] <= 1);
        if (got[i] != want[i]) break; /* the chain diverges after a near-tie */
    }
    /* p_min stops before the first draft below it */
    float p_min = probs[0] + 1e-6f;
    EXPECT_EQ_INT(session_mtp_draft(s, 5, 4, p_min, got, NULL, &err), 0);
    session_free(s);
    engine_close(e);
    free(h), free(rl), free(rh);
    fixture_close(&fx);
}

/* Drafting after a rolled-back verify batch, after token-by-token evaluation, through
 * engine_eval_batch and after a prefix copy gives exactly the drafts of a fresh evaluation. */
TEST(mtp_session_rollback_equals_fresh) {
    const char *path = test_model_path(MTP_FILE);
    if (!path) SKIP_TEST("../shared/models/synthetic not found");
    struct error err = {0};
    struct engine *e = NULL;
    ASSERT(engine_open(&e, path, NULL, &err) == 0);
    struct engine_info info;
    engine_get_info(e, &info);
    EXPECT(info.has_mtp && info.n_nextn == 1);
    EXPECT(info.mtp_bytes_per_token > 0 && info.mtp_bytes_per_token < info.bytes_per_token);
    int32_t want[4], got[4];
    float pw[4], pg[4];
    /* fresh: prompt + 20, then draft after 30 */
    struct session *f = mtp_session(e, 0);
    int32_t seqa[14];
    memcpy(seqa, g_prompt, sizeof(g_prompt));
    seqa[12] = 20;
    seqa[13] = 21;
    ASSERT(f && session_eval(f, seqa, 13, NULL, &err) == 0);
    ASSERT(draft4(f, 30, want, pw) == 0);
    /* verify batch [20, 21, 22] then keep 20 only */
    struct session *s = mtp_session(e, 4);
    ASSERT(s && session_eval(s, g_prompt, 12, NULL, &err) == 0);
    ASSERT(draft4(s, 20, got, pg) == 0); /* writes provisional MTP rows */
    int32_t verify[3] = {20, 21, 22};
    ASSERT(session_eval(s, verify, 3, NULL, &err) == 0);
    ASSERT(session_truncate(s, 13, &err) == 0);
    ASSERT(draft4(s, 30, got, pg) == 0);
    EXPECT_MSG(same_draft(want, pw, got, pg), "after rollback: %d %d %d %d vs %d %d %d %d", got[0],
               got[1], got[2], got[3], want[0], want[1], want[2], want[3]);
    /* token by token, then two more one-token steps rolled back */
    struct session *t = mtp_session(e, 3);
    ASSERT(t);
    for (int i = 0; i < 13; i++) ASSERT(session_eval(t, &seqa[i], 1, NULL, &err) == 0);
    ASSERT(draft4(t, 30, got, pg) == 0);
    EXPECT_MSG(same_draft(want, pw, got, pg), "token by token");
    ASSERT(session_eval(t, &seqa[13], 1, NULL, &err) == 0);
    ASSERT(session_eval(t, &verify[2], 1, NULL, &err) == 0);
    ASSERT(session_truncate(t, 13, &err) == 0);
    ASSERT(draft4(t, 30, got, pg) == 0);
    EXPECT_MSG(same_draft(want, pw, got, pg), "one-token steps rolled back");
    /* two sessions in one pass */
    struct session *b1 = mtp_session(e, 0), *b2 = mtp_session(e, 0);
    ASSERT(b1 && b2);
    ASSERT(session_eval(b1, g_prompt, 10, NULL, &err) == 0);
    struct session_batch_item items[2] = {{b1, seqa + 10, 3, NULL}, {b2, seqa, 13, NULL}};
    ASSERT(engine_eval_batch(e, items, 2, &err) == 0);
    ASSERT(draft4(b1, 30, got, pg) == 0);
    EXPECT_MSG(same_draft(want, pw, got, pg), "engine_eval_batch, first item");
    ASSERT(draft4(b2, 30, got, pg) == 0);
    EXPECT_MSG(same_draft(want, pw, got, pg), "engine_eval_batch, second item");
    /* a prefix copy of 13 positions from a longer session */
    struct session *c = mtp_session(e, 0);
    ASSERT(c && session_eval(s, &seqa[13], 1, NULL, &err) == 0);
    ASSERT(session_copy_prefix(c, s, 13, &err) == 0);
    ASSERT(draft4(c, 30, got, pg) == 0);
    EXPECT_MSG(same_draft(want, pw, got, pg), "prefix copy");
    /* errors */
    struct session *plain = NULL;
    ASSERT(session_create(&plain, e, NULL, &err) == 0);
    EXPECT(session_mtp_draft(plain, 30, 4, 0, got, NULL, &err) == ERR_INVALID);
    EXPECT(session_mtp_draft(f, 100000, 4, 0, got, NULL, &err) == ERR_INVALID);
    EXPECT(session_enable_mtp(plain, &err) == 0);
    session_free(plain);
    session_free(c);
    session_free(b1);
    session_free(b2);
    session_free(t);
    session_free(s);
    session_free(f);
    engine_close(e);
    /* a file without nextn layers */
    const char *p2 = test_model_path("synthetic/qwen35-f32.gguf");
    if (p2) {
        ASSERT(engine_open(&e, p2, NULL, &err) == 0);
        engine_get_info(e, &info);
        EXPECT(!info.has_mtp && info.mtp_bytes_per_token == 0);
        ASSERT(session_create(&plain, e, NULL, &err) == 0);
        EXPECT(session_enable_mtp(plain, &err) == ERR_UNSUPPORTED);
        session_free(plain);
        engine_close(e);
    }
}
