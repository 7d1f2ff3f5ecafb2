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

#include <stddef.h>
#include <stdint.h>

struct engine;
struct session;

struct engine_params {
    int n_threads; /* 0 = all CPUs */
    int n_batch;   /* max tokens per forward pass; default 512 */
};

struct engine_info {
    const char *arch; /* general.architecture */
    const char *name; /* general.name or the file name */
    int n_vocab, n_ctx_train, n_embd, n_layer, n_head, n_head_kv, n_expert, n_expert_used;
    uint64_t n_params;     /* weights, elements */
    uint64_t weight_bytes; /* bytes of tensor data */
    uint64_t file_bytes;
    int n_threads;
    const char *kernels; /* CPU kernel set in use ("scalar", "avx2", "avx512") */
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
/* The GGUF's tokenizer.chat_template (Jinja source), or NULL when the file has none. Valid until
 * engine_close. */
const char *engine_chat_template(const struct engine *e);

/* ---- sessions ---- */
enum kv_type { KV_TYPE_F16 = 0, KV_TYPE_F32 = 1, KV_TYPE_Q8_0 = 2 };

struct session_params {
    int n_ctx;            /* positions; 0 = min(n_ctx_train, 4096) */
    enum kv_type kv_type; /* default F16 */
};

void session_params_default(struct session_params *p);
int session_create(struct session **out, struct engine *e, const struct session_params *p,
                   struct error *err);
void session_free(struct session *s);

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
/* Forgets everything from position n_past on (0 <= n_past <= current). */
int session_truncate(struct session *s, int n_past, struct error *err);

/* Copies the first n_past positions (KV rows and tokens) of src into dst, which must belong to
 * the same engine and have room; dst's previous content is dropped. Used by the prefix cache:
 * a new request starts from a cached session's common prefix instead of re-evaluating it. */
int session_copy_prefix(struct session *dst, const struct session *src, int n_past,
                        struct error *err);

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
