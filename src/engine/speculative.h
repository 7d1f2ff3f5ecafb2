/* speculative.h: token generation with optional speculative decoding.
 *
 * A generator owns the decode loop of one session: it samples, and when speculation is on it
 * asks a drafter for up to draft_max tokens, verifies all of them in ONE batched forward pass
 * of the target, keeps the longest accepted prefix (plus one token sampled by the target) and
 * rolls the session back over the rest. Drafts are treated as deterministic proposals: a draft
 * token d is accepted with probability p(d) under the target's sampling distribution, and on a
 * rejection the next token is drawn from p with d removed — the standard rejection rule, so the
 * output distribution equals plain sampling; at temperature 0 the output is token-for-token
 * identical to plain greedy decoding (the engine's batched and one-token passes are bit-equal).
 *
 * Drafters: n-gram (prompt lookup in the session's own tokens), a draft model (a second engine
 * with the same vocabulary), MTP heads (qwen35 files with nextn layers; when available). The
 * draft length adapts to the measured acceptance rate.
 */
#ifndef HEARTH_SPECULATIVE_H
#define HEARTH_SPECULATIVE_H

#include "../base/error.h"
#include "sampler.h"

#include <stdint.h>

struct engine;
struct session;

enum spec_mode {
    SPEC_NONE = 0,
    SPEC_NGRAM = 1,
    SPEC_DRAFT = 2, /* needs draft_engine */
    SPEC_MTP = 3,   /* needs a model with nextn layers */
    SPEC_AUTO = 4,  /* MTP when the model has nextn layers, plus n-gram */
};

struct spec_params {
    enum spec_mode mode;
    int draft_max;               /* most tokens drafted per step (default 8 for n-gram) */
    int ngram_min, ngram_max;    /* n-gram lengths to look up (default 2..4) */
    struct engine *draft_engine; /* SPEC_DRAFT: borrowed; must outlive the generator */
    int adaptive;                /* adapt the draft length to the acceptance rate (default 1) */
};

struct spec_stats {
    int64_t n_steps;    /* target forward passes in the decode loop */
    int64_t n_drafted;  /* draft tokens proposed and verified */
    int64_t n_accepted; /* of which accepted */
    int64_t n_emitted;  /* tokens produced */
};

struct generator;

void spec_params_default(struct spec_params *p);
/* Parses "none", "ngram", "draft", "mtp", "auto"; 0 or -1. */
int spec_mode_parse(const char *name, enum spec_mode *out);
const char *spec_mode_name(enum spec_mode m);

/* The generator borrows the session and sampler (both must outlive it). SPEC_DRAFT checks the
 * vocabularies match (ERR_INVALID with the first differing token otherwise); SPEC_MTP on a model
 * without nextn layers is ERR_UNSUPPORTED; SPEC_AUTO quietly falls back to n-gram. */
int generator_create(struct generator **out, struct session *s, struct sampler *smp,
                     const struct spec_params *p, struct error *err);
void generator_free(struct generator *g);

/* Evaluates the prompt (appended to whatever the session holds) and records it in the sampler's
 * penalty history. */
int generator_prefill(struct generator *g, const int32_t *ids, int n, struct error *err);

/* Produces the next tokens: at least 1, at most max (a speculative step may yield several).
 * Tokens are the model's choice; the caller checks for end of generation and stops. Returns
 * the number written to out, or a negative ERR_* (ERR_RANGE when the context is full). */
int generator_next(struct generator *g, int32_t *out, int max, struct error *err);

void generator_stats(const struct generator *g, struct spec_stats *st);

#endif
