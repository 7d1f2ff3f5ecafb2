/* perplexity.h: llama-perplexity's scoring method, shared by `hearth perplexity` and
 * `hearth imatrix` (which reports the perplexity of the text it collects over).
 *
 * The text is cut into chunks of n_ctx tokens; each chunk is evaluated from an empty cache with
 * its first token replaced by BOS (when the vocabulary adds one), and only the second half is
 * scored, so every scored token has at least n_ctx/2 tokens of context: the logits at positions
 * first = n_ctx/2 .. n_ctx-2 predict tokens first+1 .. n_ctx-1 (n_ctx - 1 - first per chunk).
 * Source: llama.cpp tools/perplexity/perplexity.cpp (perplexity, kl_divergence).
 */
#ifndef HEARTH_PERPLEXITY_H
#define HEARTH_PERPLEXITY_H

#include "../src/base/error.h"

#include <stdint.h>

struct session;

/* Called once per chunk with the logits of positions first .. n_ctx-1 ([n_ctx - first][n_vocab])
 * and the chunk's original tokens [n_ctx] (before the BOS replacement). Return 0 to go on, or a
 * negative ERR_* to stop (ppl_run_chunks returns it). */
typedef int (*ppl_chunk_fn)(void *ctx, int chunk, const float *logits, const int32_t *tokens,
                            int n_ctx, int first, int n_vocab);

/* Evaluates n_chunk chunks of tokens[chunk * n_ctx ...] on s (whose n_ctx must be >= n_ctx),
 * replacing each chunk's first token by bos when bos >= 0. With all_outputs every position's
 * logits are computed (llama-imatrix does this, so --process-output sees every row); the
 * callback still gets the second half only. ERR_NOMEM, an eval error, or the callback's. */
int ppl_run_chunks(struct session *s, const int32_t *tokens, int n_chunk, int n_ctx, int32_t bos,
                   int all_outputs, ppl_chunk_fn fn, void *ctx, struct error *err);

/* -log p(tok) from raw logits: max + log(sum exp(l - max)) - l[tok], summed in double as
 * llama.cpp does. */
double ppl_nll(const float *logits, int n_vocab, int tok);

/* Running negative log-likelihood sums; ppl = exp(nll / count). */
struct ppl_acc {
    double nll, nll2; /* sum of -log p and of its square */
    int64_t count;    /* scored tokens */
};
/* Final estimate and its standard error (llama.cpp: sqrt(var(nll) / (count - 1)) * ppl).
 * Returns 0, or -1 with fewer than two scored tokens. */
int ppl_estimate(const struct ppl_acc *a, double *ppl, double *ppl_err);

#endif
