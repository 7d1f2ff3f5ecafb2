/* sampler.c: the sampling chain (see sampler.h).
 *
 * Filters work on a candidate list (id, logit). Top-k uses a quickselect, and min-p is applied
 * before sorting: with the chain's order (top-p then min-p) both keep a prefix of the sorted
 * list, and min-p's threshold (a ratio to the best probability) does not depend on top-p's
 * renormalisation, so cutting min-p first keeps the result identical while sorting far fewer
 * candidates. Probabilities for top-p/min-p use temperature 1, as llama.cpp's chain does;
 * temperature only shapes the final draw.
 */
#include "sampler.h"

#include "../base/mem.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct cand {
    int32_t id;
    float logit;
};

struct sampler {
    struct sampler_params p;
    int n_vocab;
    float *bias; /* [n_vocab] additive logit bias */
    int has_bias;
    struct cand *cands;      /* [n_vocab] */
    struct token_prob *dist; /* [n_vocab] the last sampler_dist result */
    float greedy_prob;       /* softmax probability of the greedy pick in the last dist */
    struct sampler_constraint constraint;
    int has_constraint;
    float *masked;    /* [n_vocab] working copy of the logits for the constraint, or NULL */
    int32_t *counts;  /* [n_vocab] occurrences in the penalty window (zero between uses) */
    int32_t *history; /* [hist_cap] ring of recent tokens */
    int hist_cap, hist_len, hist_head;
    uint64_t rng[4]; /* xoshiro256** state */
};

/* ---- PRNG: splitmix64 seeding, xoshiro256** draws (public-domain algorithms) ---- */

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) {
    return (x << k) | (x >> (64 - k));
}

static uint64_t rng_next(uint64_t *s) {
    uint64_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

static double rng_uniform(uint64_t *s) { /* [0, 1) */
    return (double)(rng_next(s) >> 11) * (1.0 / 9007199254740992.0);
}

/* ---- lifecycle ---- */

void sampler_params_default(struct sampler_params *p) {
    p->temperature = 0.8f;
    p->top_k = 40;
    p->top_p = 0.95f;
    p->min_p = 0.05f;
    p->repeat_penalty = 1.0f;
    p->presence_penalty = 0.0f;
    p->frequency_penalty = 0.0f;
    p->penalty_last_n = 64;
    p->seed = SAMPLER_SEED_RANDOM;
}

int sampler_create(struct sampler **out, const struct sampler_params *p, int n_vocab,
                   struct error *err) {
    *out = NULL;
    if (n_vocab <= 0) return error_set(err, ERR_INVALID, "sampler: empty vocabulary");
    if (!(p->temperature == p->temperature) || p->top_p < 0 || p->min_p < 0 || p->min_p > 1)
        return error_set(err, ERR_INVALID, "sampler: parameters out of range");
    struct sampler *s = mem_calloc(1, sizeof(*s));
    if (!s) return error_set(err, ERR_NOMEM, "out of memory");
    s->p = *p;
    s->n_vocab = n_vocab;
    s->hist_cap = p->penalty_last_n < 0 ? 1 << 16 : (p->penalty_last_n > 0 ? p->penalty_last_n : 1);
    s->bias = mem_calloc((size_t)n_vocab, sizeof(float));
    s->cands = mem_calloc((size_t)n_vocab, sizeof(struct cand));
    s->dist = mem_calloc((size_t)n_vocab, sizeof(struct token_prob));
    s->counts = mem_calloc((size_t)n_vocab, sizeof(int32_t));
    s->history = mem_calloc((size_t)s->hist_cap, sizeof(int32_t));
    if (!s->bias || !s->cands || !s->dist || !s->counts || !s->history) {
        sampler_free(s);
        return error_set(err, ERR_NOMEM, "out of memory");
    }
    uint64_t seed = p->seed;
    if (seed == SAMPLER_SEED_RANDOM) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        seed = (uint64_t)ts.tv_sec * 1000000007ULL ^ (uint64_t)ts.tv_nsec ^ (uint64_t)(uintptr_t)s;
    }
    for (int i = 0; i < 4; i++) s->rng[i] = splitmix64(&seed);
    *out = s;
    return 0;
}

void sampler_free(struct sampler *s) {
    if (!s) return;
    mem_free(s->bias);
    mem_free(s->cands);
    mem_free(s->dist);
    mem_free(s->masked);
    mem_free(s->counts);
    mem_free(s->history);
    mem_free(s);
}

int sampler_set_logit_bias(struct sampler *s, int32_t id, float bias) {
    if (id < 0 || id >= s->n_vocab) return ERR_INVALID;
    s->bias[id] = bias;
    s->has_bias = 1;
    return 0;
}

void sampler_accept(struct sampler *s, int32_t id) {
    s->history[s->hist_head] = id;
    s->hist_head = (s->hist_head + 1) % s->hist_cap;
    if (s->hist_len < s->hist_cap) s->hist_len++;
}

void sampler_take(struct sampler *s, int32_t id) {
    sampler_accept(s, id);
    if (s->has_constraint && s->constraint.accept) s->constraint.accept(s->constraint.ctx, id);
}

int sampler_set_constraint(struct sampler *s, const struct sampler_constraint *c) {
    if (!c) {
        s->has_constraint = 0;
        return 0;
    }
    CHECK(c->mask != NULL);
    if (!s->masked) {
        s->masked = mem_alloc((size_t)s->n_vocab * sizeof(float));
        if (!s->masked) return ERR_NOMEM;
    }
    s->constraint = *c;
    s->has_constraint = 1;
    return 0;
}

void sampler_reset(struct sampler *s) {
    s->hist_len = 0;
    s->hist_head = 0;
}

/* ---- the chain ---- */

static int32_t hist_at(const struct sampler *s, int i) { /* i-th most recent */
    return s->history[(s->hist_head - 1 - i + s->hist_cap) % s->hist_cap];
}

static void apply_penalties(struct sampler *s) {
    const struct sampler_params *p = &s->p;
    if (s->hist_len == 0 ||
        (p->repeat_penalty == 1.0f && p->presence_penalty == 0 && p->frequency_penalty == 0))
        return;
    int n =
        p->penalty_last_n < 0 || p->penalty_last_n > s->hist_len ? s->hist_len : p->penalty_last_n;
    for (int i = 0; i < n; i++) {
        int32_t id = hist_at(s, i);
        if (id >= 0 && id < s->n_vocab) s->counts[id]++;
    }
    for (int i = 0; i < n; i++) {
        int32_t id = hist_at(s, i);
        if (id < 0 || id >= s->n_vocab || s->counts[id] == 0) continue;
        float *l = &s->cands[id].logit; /* cands are still indexed by id here */
        if (*l <= 0)
            *l *= p->repeat_penalty;
        else
            *l /= p->repeat_penalty;
        *l -= (float)s->counts[id] * p->frequency_penalty + p->presence_penalty;
        s->counts[id] = 0; /* handled; also restores the all-zero invariant */
    }
}

static int cand_desc(const void *a, const void *b) {
    float x = ((const struct cand *)a)->logit, y = ((const struct cand *)b)->logit;
    if (x > y) return -1;
    if (x < y) return 1;
    int32_t i = ((const struct cand *)a)->id, j = ((const struct cand *)b)->id;
    return (i > j) - (i < j);
}

/* Moves the k largest candidates (by logit) to the front, in any order. */
static void select_top_k(struct cand *c, int n, int k) {
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        float pivot = c[(lo + hi) / 2].logit;
        int i = lo, j = hi;
        while (i <= j) {
            while (c[i].logit > pivot) i++;
            while (c[j].logit < pivot) j--;
            if (i <= j) {
                struct cand t = c[i];
                c[i] = c[j];
                c[j] = t;
                i++;
                j--;
            }
        }
        if (k - 1 <= j)
            hi = j;
        else if (k - 1 >= i)
            lo = i;
        else
            break;
    }
}

int sampler_dist(struct sampler *s, const float *logits, const struct token_prob **out) {
    const struct sampler_params *p = &s->p;
    int n = s->n_vocab;
    int masked = 0;
    if (s->has_constraint) {
        memcpy(s->masked, logits, (size_t)n * sizeof(float));
        s->constraint.mask(s->constraint.ctx, s->masked, n);
        for (int i = 0; i < n && !masked; i++) masked = s->masked[i] != -INFINITY;
        if (masked) logits = s->masked;
    }
    for (int i = 0; i < n; i++) {
        s->cands[i].id = i;
        s->cands[i].logit = s->has_bias ? logits[i] + s->bias[i] : logits[i];
    }
    apply_penalties(s);
    struct cand *c = s->cands;
    if (masked) { /* masked tokens leave the chain (a -INFINITY candidate could be drawn) */
        int m = 0;
        for (int i = 0; i < n; i++)
            if (c[i].logit != -INFINITY) c[m++] = c[i];
        if (m > 0) n = m;
    }
    struct token_prob *d = s->dist;
    *out = d;
    if (p->temperature <= 0) { /* greedy: argmax, lowest id on ties */
        int best = 0;
        for (int i = 1; i < n; i++)
            if (c[i].logit > c[best].logit || (c[i].logit == c[best].logit && c[i].id < c[best].id))
                best = i;
        double sum = 0;
        for (int i = 0; i < n; i++) sum += exp((double)c[i].logit - c[best].logit);
        s->greedy_prob = (float)(1.0 / sum);
        d[0].id = c[best].id;
        d[0].p = 1.0f;
        return 1;
    }
    if (p->top_k > 0 && p->top_k < n) {
        select_top_k(c, n, p->top_k);
        n = p->top_k;
    }
    float mx = -INFINITY;
    for (int i = 0; i < n; i++) mx = fmaxf(mx, c[i].logit);
    double sum = 0;
    for (int i = 0; i < n; i++) sum += exp((double)c[i].logit - mx);
    if (p->min_p > 0) { /* keep p >= min_p * p_max, i.e. logit >= max + log(min_p) */
        float cut = mx + logf(p->min_p);
        int m = 0;
        for (int i = 0; i < n; i++)
            if (c[i].logit >= cut) c[m++] = c[i];
        n = m > 0 ? m : 1;
    }
    qsort(c, (size_t)n, sizeof(*c), cand_desc);
    if (p->top_p < 1.0f) {
        double cum = 0;
        int m = n;
        for (int i = 0; i < n; i++) {
            cum += exp((double)c[i].logit - mx) / sum;
            if (cum >= p->top_p) {
                m = i + 1;
                break;
            }
        }
        n = m;
    }
    double tsum = 0;
    float top = c[0].logit / p->temperature;
    for (int i = 0; i < n; i++) tsum += exp((double)(c[i].logit / p->temperature) - top);
    for (int i = 0; i < n; i++) {
        d[i].id = c[i].id;
        d[i].p = (float)(exp((double)(c[i].logit / p->temperature) - top) / tsum);
    }
    return n;
}

int sampler_is_greedy(const struct sampler *s) {
    return s->p.temperature <= 0;
}

double sampler_uniform(struct sampler *s) {
    return rng_uniform(s->rng);
}

int32_t sampler_draw(struct sampler *s, const struct token_prob *dist, int n, int32_t exclude) {
    double total = 0;
    for (int i = 0; i < n; i++)
        if (dist[i].id != exclude) total += dist[i].p;
    if (!(total > 0)) return -1;
    double r = rng_uniform(s->rng) * total, acc = 0;
    int32_t last = -1;
    for (int i = 0; i < n; i++) {
        if (dist[i].id == exclude) continue;
        acc += dist[i].p;
        last = dist[i].id;
        if (r < acc) return dist[i].id;
    }
    return last;
}

int32_t sampler_sample(struct sampler *s, const float *logits, float *prob_out) {
    const struct token_prob *d;
    int n = sampler_dist(s, logits, &d);
    int32_t picked;
    float prob = 1.0f;
    if (n == 1) {
        picked = d[0].id;
        if (prob_out && s->p.temperature <= 0) { /* greedy: report the softmax probability */
            double sum = 0, mx = s->cands[picked].logit; /* greedy leaves cands in id order */
            for (int i = 0; i < s->n_vocab; i++) sum += exp((double)s->cands[i].logit - mx);
            prob = (float)(1.0 / sum);
        }
    } else {
        picked = sampler_draw(s, d, n, -1);
        for (int i = 0; i < n; i++)
            if (d[i].id == picked) prob = d[i].p;
    }
    if (prob_out) *prob_out = prob;
    sampler_take(s, picked);
    return picked;
}
