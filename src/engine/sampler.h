/* sampler.h: turning logits into the next token.
 *
 * The chain, in llama.cpp's default order: logit bias -> repetition/presence/frequency
 * penalties over the last penalty_last_n tokens -> top-k -> top-p -> min-p -> temperature ->
 * draw with the sampler's own seeded PRNG. temperature <= 0 is greedy (argmax, lowest id on
 * ties) and ignores the rest. The same seed and the same logits give the same tokens.
 * A sampler owns its buffers; it is sized once for n_vocab and never allocates while sampling.
 * An optional constraint (grammar-constrained decoding, engine/constraint.h) masks logits before
 * the chain and is told every token the sampler generates.
 */
#ifndef HEARTH_SAMPLER_H
#define HEARTH_SAMPLER_H

#include "../base/error.h"

#include <stdint.h>

struct sampler_params {
    float temperature;       /* default 0.8; <= 0: greedy */
    int top_k;               /* default 40; <= 0: off */
    float top_p;             /* default 0.95; >= 1: off */
    float min_p;             /* default 0.05; <= 0: off */
    float repeat_penalty;    /* default 1.0 (off) */
    float presence_penalty;  /* default 0 */
    float frequency_penalty; /* default 0 */
    int penalty_last_n;      /* default 64; -1 = whole history */
    uint64_t seed;           /* SAMPLER_SEED_RANDOM (default): from the clock; else fixed */
};

#define SAMPLER_SEED_RANDOM UINT64_MAX

struct sampler;

/* A constraint on the next token. mask sets logits[id] = -INFINITY for every token that may not
 * come next; it runs on the sampler's working copy of the logits, before logit bias, penalties
 * and the filters. accept is told each generated token (sampler_sample's picks and the tokens
 * passed to sampler_take), not the prompt tokens given to sampler_accept. */
typedef void (*sampler_mask_fn)(void *ctx, float *logits, int n_vocab);
typedef void (*sampler_pick_fn)(void *ctx, int32_t id);
struct sampler_constraint {
    void *ctx;              /* passed to both callbacks */
    sampler_mask_fn mask;   /* required */
    sampler_pick_fn accept; /* may be NULL */
};

void sampler_params_default(struct sampler_params *p);
int sampler_create(struct sampler **out, const struct sampler_params *p, int n_vocab,
                   struct error *err);
void sampler_free(struct sampler *s);
/* Adds a bias to one token's logit before sampling (OpenAI logit_bias); -INFINITY bans it. */
int sampler_set_logit_bias(struct sampler *s, int32_t id, float bias);
/* Records tokens (e.g. the prompt) in the penalty history without sampling. */
void sampler_accept(struct sampler *s, int32_t id);
/* Records a generated token chosen outside sampler_sample (e.g. an accepted speculative draft):
 * penalty history and the constraint's accept. */
void sampler_take(struct sampler *s, int32_t id);
/* Installs c (copied; NULL removes it). The first call allocates a working copy of n_vocab
 * logits: 0 or ERR_NOMEM. Candidates masked to -INFINITY never reach the chain; if a mask
 * leaves no candidate at all, the unmasked logits are used. */
int sampler_set_constraint(struct sampler *s, const struct sampler_constraint *c);
void sampler_reset(struct sampler *s); /* clears history (keeps params, biases, RNG state) */
/* One candidate of the final distribution. */
struct token_prob {
    int32_t id;
    float p;
};

/* The distribution the sampler would draw from for these logits (after bias, penalties,
 * filters and temperature), most probable first; returns the number of candidates written to
 * *out (a buffer owned by the sampler, valid until the next call). Greedy gives one candidate
 * with p = 1. Does not record anything in the history. Speculative decoding uses this to accept
 * or reject draft tokens without changing the output distribution. */
int sampler_dist(struct sampler *s, const float *logits, const struct token_prob **out);
/* Draws from a distribution returned by sampler_dist, ignoring candidate `exclude` (-1 for
 * none) and renormalising the rest; uses the sampler's PRNG. Returns -1 if nothing is left. */
int32_t sampler_draw(struct sampler *s, const struct token_prob *dist, int n, int32_t exclude);
/* Whether the sampler is greedy (temperature <= 0). */
int sampler_is_greedy(const struct sampler *s);
/* A uniform number in [0, 1) from the sampler's PRNG. */
double sampler_uniform(struct sampler *s);

/* Picks a token from logits[n_vocab] (not modified) and records it in the history.
 * If probs_out is non-NULL it receives the probability of the picked token under the
 * final distribution. */
int32_t sampler_sample(struct sampler *s, const float *logits, float *prob_out);

#endif
