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
 * with the same vocabulary), the model's own MTP head (qwen35/qwen35moe files with nextn layers;
 * the generator enables MTP on the session, see session_enable_mtp). SPEC_AUTO uses the MTP head
 * and n-gram lookup together and verifies whichever draft promises more tokens per unit of
 * work. Each drafter's draft length adapts to its measured acceptance rate: the length that
 * maximises expected tokens per target pass over the pass's cost (one verify row and the
 * drafting itself are charged per drafted token; see choose_length in speculative.c). A drafter
 * whose drafts are not worth verifying at that rate backs off (n-gram: one-token probes 1, 2, 4
 * .. 16 steps apart; the MTP head under SPEC_AUTO: no drafting for as long), so a model that
 * never accepts a draft decodes at nearly the plain speed.
 *
 * A step is two halves (generator_plan, generator_commit) around the target's forward pass, so
 * the server evaluates the verify rows of all its slots in one batched pass; generator_next runs
 * both halves around session_eval for a single sequence (hearth run).
 */
#ifndef HEARTH_SPECULATIVE_H
#define HEARTH_SPECULATIVE_H

#include "../base/error.h"
#include "sampler.h"

#include <stdint.h>

struct engine;
struct session;

/* Longest draft: a verify pass has draft + 1 rows, and a batch of 64 or more rows takes the tiled
 * attention (llama.cpp's arithmetic for long batches, whose rounding differs from a row decoded
 * alone), so verification stays at most 63 rows and speculation never changes the output. */
#define SPEC_DRAFT_MAX 62

enum spec_mode {
    SPEC_NONE = 0,
    SPEC_NGRAM = 1,
    SPEC_DRAFT = 2, /* needs draft_engine */
    SPEC_MTP = 3,   /* needs a model with nextn layers */
    SPEC_AUTO = 4,  /* MTP when the model has nextn layers, plus n-gram */
};

struct spec_params {
    enum spec_mode mode;
    int draft_max;               /* most tokens drafted per step (default 8) */
    int mtp_max;                 /* most tokens the MTP head drafts per step (default 3; llama.cpp
                                    measured 2-3 best for Qwen3.6); capped by draft_max */
    float mtp_p_min;             /* MTP: end a draft before a token the head gives less
                                    probability (default 0: never) */
    int ngram_min, ngram_max;    /* n-gram lengths to look up (default 2..4) */
    struct engine *draft_engine; /* SPEC_DRAFT: borrowed; must outlive the generator */
    int adaptive;                /* adapt the draft length to the acceptance rate (default 1) */
};

/* Who proposed a draft (per-drafter statistics). */
enum spec_source { SPEC_SRC_NGRAM = 0, SPEC_SRC_DRAFT = 1, SPEC_SRC_MTP = 2, SPEC_SRC_COUNT = 3 };

struct spec_stats {
    int64_t n_steps;                       /* target forward passes in the decode loop */
    int64_t n_drafted;                     /* draft tokens proposed and verified */
    int64_t n_accepted;                    /* of which accepted */
    int64_t n_emitted;                     /* tokens produced */
    int64_t n_drafts;                      /* passes that verified a draft */
    int64_t n_drafted_by[SPEC_SRC_COUNT];  /* n_drafted per drafter */
    int64_t n_accepted_by[SPEC_SRC_COUNT]; /* n_accepted per drafter */
};

struct generator;

void spec_params_default(struct spec_params *p);
/* Parses "none", "ngram", "draft", "mtp", "auto"; 0 or -1. */
int spec_mode_parse(const char *name, enum spec_mode *out);
const char *spec_mode_name(enum spec_mode m);
const char *spec_source_name(enum spec_source src); /* "ngram", "draft", "mtp" */

/* The generator borrows the session and sampler (both must outlive it; smp may be NULL until
 * generator_begin). SPEC_DRAFT checks the vocabularies match (ERR_INVALID with the first
 * differing token otherwise); SPEC_MTP on a model without nextn layers is ERR_UNSUPPORTED;
 * SPEC_AUTO quietly uses n-gram alone there. MTP modes enable MTP on the session: create the
 * generator before evaluating the prompt (positions the session already holds are missing from
 * the MTP layer's cache, which lowers acceptance). p->draft_max is the generator's capacity:
 * hybrid sessions get a rollback tail of that many positions (session_set_rs_tail). */
int generator_create(struct generator **out, struct session *s, struct sampler *smp,
                     const struct spec_params *p, struct error *err);
void generator_free(struct generator *g);

/* Evaluates the prompt (appended to whatever the session holds) and records it in the sampler's
 * penalty history. The next step samples the first generated token. */
int generator_prefill(struct generator *g, const int32_t *ids, int n, struct error *err);

/* Starts a new generation on a generator that is reused (a server slot): the caller evaluates
 * the prompt itself and records it in the sampler; the first step after this samples from the
 * logits the session holds then. smp (borrowed; NULL keeps the current one) samples this
 * generation. mode narrows the speculation for it: SPEC_AUTO keeps the generator's own mode,
 * SPEC_NONE turns drafting off, SPEC_NGRAM is always available unless the generator was
 * created with SPEC_NONE, SPEC_MTP and SPEC_DRAFT need that drafter (MTP: created with SPEC_MTP
 * or with SPEC_AUTO on an MTP model); anything else is ERR_UNSUPPORTED. draft_max < 0 keeps the
 * created length, otherwise it is capped to it. The drafters' acceptance estimates start over;
 * statistics keep counting. */
int generator_begin(struct generator *g, struct sampler *smp, enum spec_mode mode, int draft_max,
                    struct error *err);

/* One decode step in two halves, so that a scheduler can evaluate the steps of several
 * generators in one batched forward pass (engine_eval_batch):
 *   generator_plan   drafts and says which tokens to append to the session;
 *   (the caller evaluates exactly plan.ids on the session, every row's logits into plan.logits)
 *   generator_commit verifies the draft against those logits, emits the accepted tokens and the
 *                    target's own next one, and truncates the session over the rejected drafts.
 * generator_next is plan + session_eval + commit. */
struct generator_plan {
    const int32_t *ids; /* [n] the pending token, then the draft (the generator's buffer) */
    int n;              /* 0: nothing to evaluate (the first token of a generation comes from the
                           session's current logits); else 1 + draft length */
    float *logits;      /* [n][n_vocab] where the evaluation must write every row's logits (the
                           all_logits of session_eval / session_batch_item) when n > 1, else
                           NULL (the session's own last-token logits are used) */
};

/* Plans a step that emits at most max tokens (>= 1; a step with a draft of k tokens emits 1..k+1).
 * The plan stays valid until generator_commit. ERR_RANGE when the context has no room for the
 * pending token, ERR_INVALID before anything was evaluated, or a drafter's error. */
int generator_plan(struct generator *g, int max, struct generator_plan *plan, struct error *err);
/* Completes the planned step after its tokens were evaluated: writes the emitted tokens to out
 * (room for plan.n tokens, at least 1) and returns their count, or a negative ERR_*. Every
 * emitted token has gone through the sampler (sampler_sample or sampler_take, in order, so a
 * constraint hook sees each one). If the evaluation failed instead, call generator_begin (or
 * generator_prefill) before the next step. */
int generator_commit(struct generator *g, int32_t *out, struct error *err);

/* Produces the next tokens: at least 1, at most max (a speculative step may yield several).
 * Tokens are the model's choice; the caller checks for end of generation and stops. Returns
 * the number written to out, or a negative ERR_* (ERR_RANGE when the context is full). */
int generator_next(struct generator *g, int32_t *out, int max, struct error *err);

/* Statistics since generator_create (they keep counting across generator_begin). */
void generator_stats(const struct generator *g, struct spec_stats *st);
/* The most tokens a step can evaluate (1 + the created draft_max): the room callers need. */
int generator_max_step(const struct generator *g);

#endif
