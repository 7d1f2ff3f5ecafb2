/* grammar.h: context-free grammars over bytes, and the matcher that runs them.
 *
 * A grammar is a list of rules; a rule is a list of alternatives; an alternative is a sequence
 * of elements, each either one byte out of a set or a reference to a rule (GBNF's model, built
 * through calls instead of parsed from text). Builders (json_schema.c, chat_grammar.c) add rules
 * with the grammar_alt_* calls; allocation failures are remembered and reported once by
 * grammar_finish, which also checks the grammar (every rule defined, no left recursion, size
 * limits) and freezes it. A finished grammar is immutable and may be shared between threads.
 *
 * The matcher runs a finished grammar as a pushdown automaton over bytes. Its state is the set
 * of parse stacks still alive; each distinct set is interned as a small integer, and every
 * (state, byte) transition is memoised, so a warm matcher steps with one table lookup. That is
 * what makes token masks affordable (engine/constraint.h walks a token trie with it). A matcher
 * is per request and not thread-safe. Not here: token vocabularies, GBNF text, JSON schema.
 */
#ifndef HEARTH_GRAMMAR_H
#define HEARTH_GRAMMAR_H

#include "../base/buf.h"
#include "../base/error.h"

#include <stddef.h>
#include <stdint.h>

#define GRAMMAR_MAX_ELEMS         (1 << 20) /* elements in all alternatives of a grammar */
#define GRAMMAR_MAX_DEPTH         256       /* parse-stack depth; deeper nesting is not matched */
#define GRAMMAR_MATCHER_MAX_BYTES ((size_t)512 << 20) /* memo size at which next() gives up */

struct grammar;

/* ---- building ---- */

int grammar_create(struct grammar **out, struct error *err);
void grammar_free(struct grammar *g);

/* Adds an empty rule (its alternatives follow with grammar_alt_*); name is for grammar_print
 * only: a string that outlives g (normally a literal), or NULL. Returns the rule id (>= 0), or
 * -1 after an allocation failure. */
int32_t grammar_rule_add(struct grammar *g, const char *name);

/* One alternative of rule: begin, then elements in order, then end. An alternative with no
 * elements matches the empty string. Alternatives of different rules may not interleave. */
void grammar_alt_begin(struct grammar *g, int32_t rule);
void grammar_alt_lit(struct grammar *g, const char *s, size_t n);  /* the bytes s[0..n) */
void grammar_alt_str(struct grammar *g, const char *s);            /* NUL-terminated literal */
void grammar_alt_range(struct grammar *g, uint8_t lo, uint8_t hi); /* one byte in [lo, hi] */
void grammar_alt_set(struct grammar *g, const uint8_t set[32]);    /* one byte whose bit is set */
void grammar_alt_ref(struct grammar *g, int32_t rule);
void grammar_alt_end(struct grammar *g);

/* Shorthands that add a new rule and return its id (-1 after an allocation failure). */
int32_t grammar_rule_lit(struct grammar *g, const char *s, size_t n); /* exactly s */
/* item repeated min..max times (max < 0: unbounded). Counts above 100000 are clamped. */
int32_t grammar_rule_repeat(struct grammar *g, int32_t item, int min, int max);
/* Any byte string in which the first occurrence of one of ends[] is at its very end (so the
 * match includes that terminator) and that contains none of bans[] (bans are checked on the
 * whole string, terminator included). Patterns must be non-empty and at most 64 bytes. */
int32_t grammar_rule_until(struct grammar *g, const char *const *ends, int n_ends,
                           const char *const *bans, int n_bans);

/* Checks and freezes g with root as the start rule. ERR_NOMEM if any builder call failed,
 * ERR_INVALID for a rule without alternatives, a dangling reference or left recursion (a rule
 * that can reach itself without consuming a byte), ERR_RANGE past GRAMMAR_MAX_ELEMS. */
int grammar_finish(struct grammar *g, int32_t root, struct error *err);

int32_t grammar_n_rules(const struct grammar *g);
/* Appends a GBNF-like listing (`name ::= alt | alt`) for debugging and tests. */
void grammar_print(const struct grammar *g, struct buf *out);

/* ---- matching ---- */

#define GRAMMAR_DEAD (-1) /* the state after a byte the grammar cannot take */

struct grammar_matcher;

/* The matcher borrows g (finished), which must outlive it. */
int grammar_matcher_create(struct grammar_matcher **out, const struct grammar *g,
                           struct error *err);
void grammar_matcher_free(struct grammar_matcher *m);

/* Feeds bytes to the current state. 0 if all were accepted; ERR_INVALID if one was not (the
 * state is then left where it was before the call); ERR_NOMEM. */
int grammar_matcher_feed(struct grammar_matcher *m, const void *bytes, size_t n);
/* 1 if the bytes fed so far form a complete sentence of the grammar. */
int grammar_matcher_is_complete(const struct grammar_matcher *m);
/* 1 if some byte may still follow (the grammar is not exhausted). */
int grammar_matcher_can_continue(const struct grammar_matcher *m);
void grammar_matcher_reset(struct grammar_matcher *m); /* back to the start state */

/* Low-level stepping for token masks. States are ids >= 0, valid until the next
 * grammar_matcher_trim. next() returns GRAMMAR_DEAD when byte cannot follow, and also when
 * memory ran out or the memo passed GRAMMAR_MATCHER_MAX_BYTES (then grammar_matcher_failed()
 * is 1 until the next trim that frees something). */
int32_t grammar_matcher_state(const struct grammar_matcher *m);
void grammar_matcher_set_state(struct grammar_matcher *m, int32_t state);
int32_t grammar_matcher_next(struct grammar_matcher *m, int32_t state, uint8_t byte);
int grammar_matcher_accepts(const struct grammar_matcher *m, int32_t state); /* complete? */
/* For inner loops: rows[state] is NULL or the memo of state's 256 successors, each a state id,
 * GRAMMAR_DEAD, or GRAMMAR_UNKNOWN (not computed yet: ask grammar_matcher_next). The array is
 * valid until the next grammar_matcher_next that computes a transition, or a trim. */
#define GRAMMAR_UNKNOWN (-2)
int32_t *const *grammar_matcher_rows(const struct grammar_matcher *m);
int grammar_matcher_failed(const struct grammar_matcher *m);
int32_t grammar_matcher_n_states(const struct grammar_matcher *m);
/* If the memo tables hold more than max_bytes, forgets all states but the current one (which
 * gets a new id) and returns 1: every state id held by the caller is then invalid. Else 0. */
int grammar_matcher_trim(struct grammar_matcher *m, size_t max_bytes);
size_t grammar_matcher_memory(const struct grammar_matcher *m); /* bytes held by the memo */

#endif
