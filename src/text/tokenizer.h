/* tokenizer.h: text <-> token ids, loaded from a GGUF's tokenizer.* keys.
 *
 * Two models: `llama` (SentencePiece-style, scores + byte fallback) and `gpt2` (byte-level BPE
 * with merges), the latter with the pre-tokenizers default, gpt-2, llama-bpe, qwen2, qwen35.
 * Special/control/user-defined tokens are matched whole in the text when parse_special is set
 * (as llama.cpp's tokenize with parse_special=true). The tokenizer copies what it needs out of
 * the gguf, so it outlives the file. Depends only on base/ and gguf/.
 */
#ifndef HEARTH_TOKENIZER_H
#define HEARTH_TOKENIZER_H

#include "../base/buf.h"
#include "../base/error.h"
#include "../gguf/gguf.h"

#include <stddef.h>
#include <stdint.h>

enum token_type {
    TOKEN_TYPE_UNDEFINED = 0,
    TOKEN_TYPE_NORMAL = 1,
    TOKEN_TYPE_UNKNOWN = 2,
    TOKEN_TYPE_CONTROL = 3,
    TOKEN_TYPE_USER_DEFINED = 4,
    TOKEN_TYPE_UNUSED = 5,
    TOKEN_TYPE_BYTE = 6,
};

struct tokenizer;

/* Builds the tokenizer from g's tokenizer.* metadata. ERR_UNSUPPORTED for an unknown
 * tokenizer.ggml.model or pre-tokenizer, ERR_FORMAT for inconsistent arrays. */
int tokenizer_load(struct tokenizer **out, const struct gguf *g, struct error *err);
void tokenizer_free(struct tokenizer *t);

int32_t tokenizer_n_vocab(const struct tokenizer *t);
int32_t tokenizer_bos(const struct tokenizer *t);  /* -1 if none */
int32_t tokenizer_eos(const struct tokenizer *t);  /* -1 if none */
int tokenizer_add_bos(const struct tokenizer *t);  /* tokenizer.ggml.add_bos_token (with llama.cpp's default per model) */
/* End of generation: eos, eot, eom and the other tokens llama.cpp treats as EOG. */
int tokenizer_is_eog(const struct tokenizer *t, int32_t id);
/* The EOG ids, ascending, valid until tokenizer_free; returns their count. */
int tokenizer_eog_ids(const struct tokenizer *t, const int32_t **ids);
int tokenizer_is_control(const struct tokenizer *t, int32_t id);
enum token_type tokenizer_token_type(const struct tokenizer *t, int32_t id);
const char *tokenizer_token_text(const struct tokenizer *t, int32_t id); /* raw vocab string */
int32_t tokenizer_find_token(const struct tokenizer *t, const char *text); /* -1 if absent */

/* Tokenizes text[0..len). add_bos: prepend BOS (when the vocab has one). parse_special: match
 * control/user-defined tokens by their text. *out_ids (mem_alloc'ed, caller frees) receives
 * *n_out ids. Returns 0 or ERR_NOMEM. Invalid UTF-8 is tokenized byte-wise, never rejected. */
int tokenizer_encode(const struct tokenizer *t, const char *text, size_t len, int add_bos,
                     int parse_special, int32_t **out_ids, int64_t *n_out, struct error *err);

/* Appends the bytes of one token to out (byte tokens become their byte, SentencePiece U+2581
 * becomes a space, byte-level BPE is mapped back to bytes). Control tokens append nothing
 * unless render_special. */
void tokenizer_decode_piece(const struct tokenizer *t, int32_t id, int render_special,
                            struct buf *out);
/* Decodes a sequence (llama.cpp's detokenize: a leading space from add_space_prefix is
 * removed when the first token starts a text). */
void tokenizer_decode(const struct tokenizer *t, const int32_t *ids, int64_t n,
                      int render_special, struct buf *out);

#endif
