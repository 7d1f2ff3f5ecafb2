/* tokenizer_internal.h: struct tokenizer and what tokenizer.c, tokenizer_spm.c and
 * tokenizer_bpe.c share. Not for use outside src/text/.
 *
 * The vocabulary is copied out of the gguf into one arena; a token's text is looked up with an
 * open-addressing hash table of ids, BPE merges with a second one keyed by the id pair.
 * Everything is built once by tokenizer_load and read-only afterwards, so one tokenizer may be
 * used from several threads at once (each encode call owns its scratch memory).
 */
#ifndef HEARTH_TOKENIZER_INTERNAL_H
#define HEARTH_TOKENIZER_INTERNAL_H

#include "pretokenize.h"
#include "tokenizer.h"

#include <stddef.h>
#include <stdint.h>

enum tokenizer_kind {
    TOKENIZER_SPM, /* tokenizer.ggml.model "llama" */
    TOKENIZER_BPE, /* tokenizer.ggml.model "gpt2" (byte-level) */
};

/* Token attributes as llama.cpp derives them (llama_token_attr): the file's type, plus
 * CONTROL added to "control-looking" tokens found by text (EOG and FIM tokens). */
enum token_attr {
    TOKEN_ATTR_UNKNOWN = 1 << 0,
    TOKEN_ATTR_UNUSED = 1 << 1,
    TOKEN_ATTR_NORMAL = 1 << 2,
    TOKEN_ATTR_CONTROL = 1 << 3,
    TOKEN_ATTR_USER_DEFINED = 1 << 4,
    TOKEN_ATTR_BYTE = 1 << 5,
};

/* One BPE merge: the pair (left, right) of token ids merges into result at priority rank. */
struct bpe_merge {
    uint64_t key;   /* ((uint64_t)left << 32 | right) + 1; 0 marks an empty slot */
    int32_t rank;   /* index in tokenizer.ggml.merges: lower merges first */
    int32_t result; /* token id of left+right */
};

struct tokenizer {
    enum tokenizer_kind kind;
    enum pretok_kind pre; /* BPE only */
    int32_t n_vocab;

    char *arena;          /* every token text, NUL-terminated, back to back */
    uint32_t *text_off;   /* [n_vocab] offset of each token's text in arena */
    uint32_t *text_len;   /* [n_vocab] bytes */
    float *scores;        /* [n_vocab] SentencePiece scores (0 when absent) */
    uint8_t *type;        /* [n_vocab] enum token_type as in the file */
    uint8_t *attr;        /* [n_vocab] enum token_attr bits */
    size_t max_token_len; /* bytes of the longest token text */

    int32_t *index; /* [index_mask + 1] token ids by text hash, -1 empty */
    uint32_t index_mask;

    struct bpe_merge *merges; /* [merge_mask + 1] BPE merges by id pair */
    uint32_t merge_mask;
    int32_t n_merges; /* merges used (both parts and the result are tokens) */

    /* BPE: token of each byte's GPT-2 codepoint. SPM: the <0xXX> token (else the one-byte
     * token, else -1). */
    int32_t byte_token[256];

    int32_t *special; /* [n_special] CONTROL/USER_DEFINED/UNKNOWN ids, longest text first */
    int32_t n_special;

    int32_t bos, eos, eot, eom, unk, sep, pad; /* -1 when none */
    int32_t fim_pre, fim_suf, fim_mid, fim_pad, fim_rep, fim_sep;
    int32_t *eog; /* [n_eog] end-of-generation ids, ascending */
    int32_t n_eog;

    int add_bos;          /* tokenizer.ggml.add_bos_token or llama.cpp's default */
    int add_space_prefix; /* SPM: prefix " " to a text that starts the input or follows a special
                             token */
    int ignore_merges;    /* BPE (llama-bpe): a word that is a whole token is not merged */
    int clean_spaces;     /* decode: llama.cpp's clean_up_tokenization_spaces passes */
};

/* Id of the token whose text is s[0..n), or -1. */
int32_t tokenizer_lookup(const struct tokenizer *t, const char *s, size_t n);
static inline const char *tokenizer_text(const struct tokenizer *t, int32_t id) {
    return t->arena + t->text_off[id];
}

/* A growable id array (encode output). */
struct id_vec {
    int32_t *ids; /* [n] */
    int64_t n;
    int64_t cap;
};
int id_vec_push(struct id_vec *v, int32_t id); /* 0 or ERR_NOMEM */

/* SentencePiece BPE over text[0..len) (already escaped: spaces are U+2581), appending ids. */
int tokenizer_spm_encode(const struct tokenizer *t, const char *text, size_t len,
                         struct id_vec *out);

/* Adds merge (left, right) -> result at rank to t->merges unless the pair has one already;
 * returns 1 if added. The table must have a free slot. */
int tokenizer_bpe_add_merge(struct tokenizer *t, int32_t left, int32_t right, int32_t rank,
                            int32_t result);

/* Byte-level BPE of one text fragment: pre-tokenize, map bytes to GPT-2 codepoints, merge. */
struct bpe_scratch;
struct bpe_scratch *bpe_scratch_create(void);
void bpe_scratch_free(struct bpe_scratch *s);
int tokenizer_bpe_encode(const struct tokenizer *t, const char *text, size_t len,
                         struct bpe_scratch *s, struct id_vec *out);

#endif
