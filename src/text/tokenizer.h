/* tokenizer.h: text <-> token ids, loaded from a GGUF's tokenizer.* keys.
 *
 * Two models: `llama` (SentencePiece-style, scores + byte fallback) and `gpt2` (byte-level BPE
 * with merges), the latter with the pre-tokenizers default, gpt-2, llama-bpe, qwen2, qwen35
 * (and the names llama.cpp maps to those same regexes). Behaviour follows llama.cpp's
 * llama-vocab.cpp: defaults per model, special-token matching, EOG set, detokenizer passes.
 * The tokenizer copies what it needs out of the gguf, so it outlives the file; after load it
 * is read-only and may be shared between threads. Depends only on base/ and gguf/.
 * Not here: chat templates, UGM/WPM/RWKV vocabularies, add_eos/add_sep, lstrip/rstrip tokens.
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

/* Builds the tokenizer from g's tokenizer.* metadata. ERR_NOT_FOUND without
 * tokenizer.ggml.model, ERR_UNSUPPORTED for an unknown model or pre-tokenizer (the message names
 * it), ERR_FORMAT for inconsistent arrays (missing/mistyped tokens or merges, short scores or
 * types, duplicate tokens, add_bos_token without a BOS), ERR_NOMEM. On error *out is NULL. */
int tokenizer_load(struct tokenizer **out, const struct gguf *g, struct error *err);
void tokenizer_free(struct tokenizer *t);

int32_t tokenizer_n_vocab(const struct tokenizer *t);
int32_t tokenizer_bos(const struct tokenizer *t); /* -1 if none */
int32_t tokenizer_eos(const struct tokenizer *t); /* -1 if none */
/* tokenizer.ggml.add_bos_token, else llama.cpp's default: 1 for llama (SPM) and llama-bpe,
 * 0 for the other BPE pre-tokenizers. */
int tokenizer_add_bos(const struct tokenizer *t);
/* End of generation: eos, eot, eom, FIM pad/repo/file-sep, and every token whose text is one
 * of llama.cpp's EOG texts (<|im_end|>, <|endoftext|>, <|eot_id|>, <|eom_id|>, <end_of_turn>,
 * </s>, ...). */
int tokenizer_is_eog(const struct tokenizer *t, int32_t id);
/* The EOG ids, ascending, valid until tokenizer_free; returns their count. */
int tokenizer_eog_ids(const struct tokenizer *t, const int32_t **ids);
/* Control as llama.cpp sees it: type 3, or a "control-looking" token found by its text (the
 * EOG and FIM tokens above), whatever type the file gives it. 0 for out-of-range ids. */
int tokenizer_is_control(const struct tokenizer *t, int32_t id);
/* The type stored in the file (TOKEN_TYPE_UNDEFINED for out-of-range ids). */
enum token_type tokenizer_token_type(const struct tokenizer *t, int32_t id);
/* Raw vocab string, NUL-terminated, valid until tokenizer_free ("" for out-of-range ids). */
const char *tokenizer_token_text(const struct tokenizer *t, int32_t id);
int32_t tokenizer_find_token(const struct tokenizer *t, const char *text); /* -1 if absent */

/* Tokenizes text[0..len). add_bos: prepend BOS (when the vocab has one; callers normally pass
 * tokenizer_add_bos(t)). Special tokens are cut out of the text first, longest text first:
 * user-defined tokens (<think>, <tool_call>, ...) always, control and unknown tokens only with
 * parse_special. SPM text after a special token (and at the start) gets the add_space_prefix
 * space. *out_ids (mem_alloc'ed, never NULL on success, caller frees) receives *n_out ids.
 * Returns 0 or ERR_NOMEM. Invalid UTF-8 is tokenized byte-wise, never rejected, and decodes
 * back to the same bytes (llama.cpp substitutes U+FFFD there; valid text is identical). */
int tokenizer_encode(const struct tokenizer *t, const char *text, size_t len, int add_bos,
                     int parse_special, int32_t **out_ids, int64_t *n_out, struct error *err);

/* Appends the bytes of one token to out (byte tokens become their byte, SentencePiece U+2581
 * becomes a space, byte-level BPE is mapped back to bytes, user-defined tokens their text).
 * Control and unknown tokens append their text only with render_special; unused tokens and
 * out-of-range ids append nothing. No space is stripped (streaming-safe). */
void tokenizer_decode_piece(const struct tokenizer *t, int32_t id, int render_special,
                            struct buf *out);
/* Decodes a sequence like llama.cpp's detokenize (remove_special = false): with
 * add_space_prefix (SPM) one leading space is removed from the piece of ids[0] only (so
 * decode(encode(s)) == s; a BOS first means the next piece keeps its space); for pre-tokenizers
 * with clean_up_tokenization_spaces (gpt-2, llama-bpe, default; not qwen2/qwen35) " ?" " !"
 * " ." " ," " 's" " 'm" " 're" " 've" lose the space and " ' " becomes "'". Appends to out. */
void tokenizer_decode(const struct tokenizer *t, const int32_t *ids, int64_t n, int render_special,
                      struct buf *out);

#endif
