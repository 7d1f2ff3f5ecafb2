/* engine.h: the public boundary. The CLI and the server include only this header (and base/).
 *
 * An engine is a loaded model (weights mmapped, tokenizer, backend with its threads). A session
 * is one timeline on it: its own KV cache, position and logits. Sessions of one engine may be
 * used from different threads only if calls are serialised (the engine's forward passes share
 * one set of activation buffers); the server's scheduler thread owns them all.
 *
 * Lifetimes: engine_open/engine_close, session_create/session_free (free sessions first).
 * Errors: negative ERR_* with a one-line message in the caller's struct error.
 */
#ifndef HEARTH_ENGINE_H
#define HEARTH_ENGINE_H

#include "../base/buf.h"
#include "../base/error.h"
#include "sampler.h"
#include "speculative.h"

#include <stddef.h>
#include <stdint.h>

struct engine;
struct session;

struct engine_params {
    int n_threads; /* 0 = all CPUs */
    int n_batch;   /* max tokens per forward pass; default 512 */
    int load;      /* enum gguf_load (gguf.h): 0 = auto, huge-page copy or mmap */
};

struct engine_info {
    const char *arch; /* general.architecture */
    const char *name; /* general.name or the file name */
    int n_vocab, n_ctx_train, n_embd, n_layer, n_head, n_head_kv, n_expert, n_expert_used;
    uint64_t n_params;     /* weights, elements */
    uint64_t weight_bytes; /* bytes of tensor data */
    uint64_t file_bytes;
    int n_threads;
    const char *kernels;          /* CPU kernel set in use ("scalar", "avx2", "avx512") */
    int n_layer_recurrent;        /* hybrid models (qwen35*): trunk layers with a recurrent state */
    int n_nextn;                  /* MTP ("nextn") blocks in the file (not part of n_layer) */
    int has_mtp;                  /* the MTP block can draft (session_enable_mtp) */
    uint64_t bytes_per_token;     /* weight bytes read per generated token (routed experts: the
                                     used share; the embeddings: one row) */
    uint64_t mtp_bytes_per_token; /* the same for one MTP draft step (its block and LM head) */
};

void engine_params_default(struct engine_params *p);
int engine_open(struct engine **out, const char *path, const struct engine_params *p,
                struct error *err);
void engine_close(struct engine *e);
void engine_get_info(const struct engine *e, struct engine_info *info);

/* ---- text ---- */
/* Tokenizes; *ids (caller frees with mem_free) gets *n_ids ids. add_bos: prepend BOS if the
 * vocabulary has one. parse_special: match control tokens written in the text. */
int engine_tokenize(const struct engine *e, const char *text, size_t len, int add_bos,
                    int parse_special, int32_t **ids, int64_t *n_ids, struct error *err);
/* Appends the text of ids to out (control tokens only when render_special). */
void engine_detokenize(const struct engine *e, const int32_t *ids, int64_t n, int render_special,
                       struct buf *out);
/* Appends one token's bytes (may be a partial UTF-8 sequence). */
void engine_token_piece(const struct engine *e, int32_t id, int render_special, struct buf *out);
int engine_token_is_eog(const struct engine *e, int32_t id);
int32_t engine_token_bos(const struct engine *e); /* -1 if none */
int32_t engine_token_eos(const struct engine *e); /* -1 if none */
int engine_add_bos(const struct engine *e);       /* whether prompts should start with BOS */
const char *engine_token_text(const struct engine *e, int32_t id); /* raw vocabulary string */
/* A draft model must share the target's vocabulary: sizes within 128 of each other and every
 * common id with the same text. 0 or ERR_INVALID naming the first mismatch. */
int engine_check_vocab_compatible(const struct engine *target, const struct engine *draft,
                                  struct error *err);

/* Observer of every matrix product's input rows (importance-matrix collection): tensor is the
 * GGUF name of the weight; rows are row_len floats; for expert stacks ids gives the routed
 * experts ([n_tokens][n_used], rows per token when !x_per_slot, else per (token, slot)).
 * NULL fn removes it. Called from the thread running the forward pass. */
typedef void (*engine_observe_fn)(void *ctx, const char *tensor, const float *rows, int n_rows,
                                  int row_len, const int32_t *ids, int n_used, int x_per_slot);
void engine_set_observer(struct engine *e, engine_observe_fn fn, void *ctx);
/* The GGUF's tokenizer.chat_template (Jinja source), or NULL when the file has none. Valid until
 * engine_close. */
const char *engine_chat_template(const struct engine *e);

/* ---- sessions ---- */
enum kv_type { KV_TYPE_F16 = 0, KV_TYPE_F32 = 1, KV_TYPE_Q8_0 = 2 };

struct session_params {
    int n_ctx;            /* positions; 0 = min(n_ctx_train, 4096) */
    enum kv_type kv_type; /* default F16 */
    /* Hybrid models only (see "recurrent state" below); each slot holds one full copy of the
     * recurrent state (e.g. ~63 MiB for Qwen3.6-35B-A3B, ~150 MiB for Qwen3.6-27B). */
    int n_rs_checkpoints; /* slots for session_checkpoint / session_checkpoint_at; default 0 */
    int n_rs_tail;        /* rollback depth: positions n_past-1 .. n_past-n_rs_tail stay a copy
                             away after every eval (speculative decoding); default 0 */
    int mtp;              /* models with an MTP block: session_enable_mtp at creation */
};

void session_params_default(struct session_params *p);
int session_create(struct session **out, struct engine *e, const struct session_params *p,
                   struct error *err);
void session_free(struct session *s);

struct engine *session_engine(const struct session *s);
int session_n_ctx(const struct session *s);
int session_n_past(const struct session *s);            /* tokens in the cache */
const int32_t *session_tokens(const struct session *s); /* [n_past] the tokens in the cache */
/* Bytes the session holds (KV cache for n_ctx positions plus its buffers): what a prefix cache
 * entry of this size costs in RAM. */
size_t session_bytes(const struct session *s);

/* Appends n tokens at position n_past (split into batches internally) and computes the logits
 * of the last one. If all_logits is non-NULL it receives [n][n_vocab] logits, one row per
 * token. ERR_RANGE if the context would overflow (nothing is evaluated then), ERR_INVALID for
 * a token id outside the vocabulary. */
int session_eval(struct session *s, const int32_t *ids, int n, float *all_logits,
                 struct error *err);
/* Logits [n_vocab] after the last token of the last eval; NULL before any eval. Valid until
 * the next eval/truncate. */
const float *session_logits(const struct session *s);
/* Forgets everything from position n_past on (0 <= n_past <= current). For hybrid models this
 * restores the recurrent state at n_past: a copy when a snapshot of that position exists (see
 * below), otherwise the nearest earlier snapshot (or the start) is restored and the session's
 * own tokens up to n_past are evaluated again (session_truncate_cost says how many). */
int session_truncate(struct session *s, int n_past, struct error *err);

/* Copies the first n_past positions (KV rows, tokens and, for hybrid models, the recurrent
 * state at n_past) of src into dst, which must belong to the same engine and have room; dst's
 * previous content is dropped. Used by the prefix cache: a new request starts from a cached
 * session's common prefix instead of re-evaluating it. Hybrid models: a copy when src is at
 * n_past or has a snapshot there, otherwise dst re-evaluates the tokens after src's nearest
 * earlier snapshot. */
int session_copy_prefix(struct session *dst, const struct session *src, int n_past,
                        struct error *err);

/* ---- recurrent state (hybrid models: qwen35, qwen35moe) ----
 * Their Gated DeltaNet layers keep a fixed-size state per session that every token overwrites,
 * so going back to an earlier position needs a saved copy ("snapshot") of the state there.
 * Snapshots come from three places, all kept in slots allocated at session_create:
 * - session_checkpoint: the current position (n_rs_checkpoints slots, oldest evicted first);
 * - session_checkpoint_at: a later position, saved by the eval that passes it (same slots);
 * - n_rs_tail: after every eval the previous n_rs_tail positions are kept (the ops copy the
 *   state after each token of a speculative verify batch as they go).
 * Position 0 (the empty state) is always available. Snapshots beyond a truncation point are
 * dropped. For other models all of this is a no-op and truncation is always free. */

/* Saves the state at the current position. ERR_INVALID if the session has no checkpoint
 * slots. */
int session_checkpoint(struct session *s, struct error *err);
/* Asks the next evals to save the state at position pos (> n_past; pos == n_past is
 * session_checkpoint). At most n_rs_checkpoints requests are pending (ERR_INVALID beyond). */
int session_checkpoint_at(struct session *s, int pos, struct error *err);
/* Changes the rollback depth (session_params.n_rs_tail) of an existing session, allocating or
 * freeing slots; tail snapshots taken so far are dropped. For a decode loop that verifies up
 * to k drafted tokens per pass, k makes every rejection a copy. No-op for other models.
 * ERR_INVALID outside 0..64, ERR_NOMEM. */
int session_set_rs_tail(struct session *s, int n_tail, struct error *err);
/* Tokens that session_truncate(s, n_past) would evaluate again: 0 when it is a copy (or the
 * model has no recurrent state), -1 if n_past is out of range. */
int session_truncate_cost(const struct session *s, int n_past);

/* ---- MTP drafting (models with nextn layers: qwen35, qwen35moe MTP files) ----
 * The MTP block predicts the token after next from a token and the trunk's hidden state at the
 * position before it. A session with MTP enabled keeps the MTP layer's own KV cache (one
 * attention layer, positions as the trunk's) in step with the trunk: every eval also runs the
 * block over the evaluated tokens (llama.cpp does the same, prompt included), which costs about
 * one extra layer per token, and keeps the trunk's hidden states of the last 66 positions.
 * Truncation and prefix copies need nothing more: stale entries beyond n_past are overwritten. */

/* Allocates the MTP layer's cache and starts running the block with every eval. Positions
 * evaluated before this call are missing from that cache (zeros): enable it before the prompt.
 * Idempotent. ERR_UNSUPPORTED if the model has no MTP block, ERR_NOMEM. */
int session_enable_mtp(struct session *s, struct error *err);
/* Drafts up to n tokens to follow the session's tokens and `next` (the token for position
 * n_past, chosen but not evaluated yet): each the MTP head's argmax, chained on the head's own
 * hidden state, stopping before the first one whose probability is below p_min (0: never) or
 * at the end of the context. out (and probs, if non-NULL) get the tokens and their
 * probabilities under the head. Writes only MTP cache rows at positions >= n_past, which the
 * next eval overwrites. Returns the number drafted (0..n), ERR_INVALID without MTP enabled or
 * for a bad token id. */
int session_mtp_draft(struct session *s, int32_t next, int n, float p_min, int32_t *out,
                      float *probs, struct error *err);

/* Length of the common prefix of the session's tokens and ids[0..n). */
int session_common_prefix(const struct session *s, const int32_t *ids, int n);

/* ---- several sessions in one forward pass (continuous batching) ---- */
struct session_batch_item {
    struct session *s;
    const int32_t *ids; /* tokens to append to s */
    int n;              /* >= 1 */
    float *all_logits;  /* optional [n][n_vocab]; else only the last token's logits are kept */
};

/* Evaluates every item's tokens in as few forward passes as possible (all items share each
 * pass; a pass holds up to n_batch tokens), then each session's logits are those of its last
 * token, exactly as if session_eval had been called on each. Sessions must be distinct and
 * belong to e. On error nothing is evaluated (checks happen first). */
int engine_eval_batch(struct engine *e, struct session_batch_item *items, int n_items,
                      struct error *err);

/* ---- generation helper ---- */
/* Samples the next token from the session's current logits with sampler (which also records
 * the token in its penalty history). */
int32_t session_sample(struct session *s, struct sampler *smp);

#endif
