/* constraint.h: grammar-constrained decoding: which tokens may come next.
 *
 * A constraint_vocab holds the byte string of every token of a model in a trie (built once per
 * engine, read-only afterwards, shareable between threads). A constraint joins a vocabulary and
 * a finished grammar (text/grammar.h) for one generation: constraint_apply sets the logit of
 * every token that cannot continue a valid output to -INFINITY, constraint_accept advances the
 * grammar by a chosen token. End-of-generation tokens are allowed exactly when the output so
 * far is a complete sentence. Tokens without bytes (control tokens) are never allowed.
 *
 * Cost: a mask is computed by walking the trie with the grammar's memoised automaton, pruning
 * whole subtrees at the first byte the grammar refuses, and is cached per automaton state, so
 * the steady state (e.g. inside a long string) costs one pass over the logits. The memo is
 * bounded (CONSTRAINT_MAX_MEMO_BYTES) and trimmed between steps.
 * Not here: lazy/triggered grammars, sampling itself (sampler.h; see constraint_hook).
 */
#ifndef HEARTH_CONSTRAINT_H
#define HEARTH_CONSTRAINT_H

#include "../base/error.h"
#include "../text/grammar.h"
#include "engine.h"
#include "sampler.h"

#include <stddef.h>
#include <stdint.h>

#define CONSTRAINT_MAX_MEMO_BYTES ((size_t)256 << 20) /* automaton memo + cached masks */

struct constraint_vocab;

/* Token bytes from the engine's detokenizer (engine_token_piece without special rendering)
 * and its end-of-generation set. */
int constraint_vocab_create(struct constraint_vocab **out, const struct engine *e,
                            struct error *err);
/* From explicit pieces: pieces[id][0..lens[id]) for id < n_vocab; is_eog[id] != 0 marks
 * end-of-generation tokens (may be NULL: none). The bytes are copied. */
int constraint_vocab_create_from_pieces(struct constraint_vocab **out, int32_t n_vocab,
                                        const char *const *pieces, const size_t *lens,
                                        const uint8_t *is_eog, struct error *err);
void constraint_vocab_free(struct constraint_vocab *v);
int32_t constraint_vocab_n_vocab(const struct constraint_vocab *v);

struct constraint;

/* Borrows v and g (finished), which must outlive the constraint. ERR_NOMEM. */
int constraint_create(struct constraint **out, const struct constraint_vocab *v,
                      const struct grammar *g, struct error *err);
void constraint_free(struct constraint *c);

/* Sets logits[id] = -INFINITY (logits has n_vocab entries) for every token that may not come
 * next. Returns the number of tokens left allowed. If none would be (the vocabulary cannot
 * spell any continuation, or memory ran out), the end-of-generation tokens are left allowed
 * so generation stops, and 0 is returned. */
int constraint_apply(struct constraint *c, float *logits);
/* 1 if token id may come next. */
int constraint_allows(struct constraint *c, int32_t id);
/* Advances by token id. 0, or ERR_INVALID if the token was not allowed (state unchanged), or
 * ERR_NOMEM. An end-of-generation token is accepted (without moving) when the output is
 * complete. */
int constraint_accept(struct constraint *c, int32_t id);
/* 1 if the output so far is a complete sentence of the grammar. */
int constraint_is_complete(const struct constraint *c);
void constraint_reset(struct constraint *c); /* back to the empty output */

/* Fills a sampler hook that applies c before the sampling chain and accepts each token the
 * sampler picks: sampler_set_constraint(smp, &hook). */
void constraint_hook(struct constraint *c, struct sampler_constraint *hook);

/* Statistics for measurements: masks computed by walking the trie, masks served from cache,
 * total nanoseconds spent in constraint_apply. */
struct constraint_stats {
    int64_t n_walks;
    int64_t n_cached;
    int64_t apply_ns;
    int64_t n_states; /* automaton states interned so far */
};
void constraint_get_stats(const struct constraint *c, struct constraint_stats *out);

#endif
