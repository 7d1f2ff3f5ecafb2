/* pretokenize.h: splits text into words before byte-level BPE (the "pre-tokenizer" regexes).
 *
 * llama.cpp chooses a regex by tokenizer.ggml.pre and, for the common ones, runs hand-written
 * matchers instead of a regex engine; hearth does the same for every kind it supports, so no
 * regex library is involved. Matching works on codepoints classified by unicode.h. Output
 * words are byte ranges of the input (the input bytes are never rewritten, so invalid UTF-8
 * survives byte for byte; an invalid byte is classified like U+FFFD, as llama.cpp does).
 * The caller owns a struct pretok_buf and may reuse it across calls to avoid reallocations.
 */
#ifndef HEARTH_PRETOKENIZE_H
#define HEARTH_PRETOKENIZE_H

#include <stddef.h>
#include <stdint.h>

enum pretok_kind {
    PRETOK_DEFAULT, /* llama.cpp's BPE default: punctuation runs, GPT-2, digit runs, 3 digits */
    PRETOK_GPT2,    /* 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
    PRETOK_LLAMA3,  /* Llama-3: see pretokenize.c */
    PRETOK_QWEN2,   /* Llama-3 with single digits */
    PRETOK_QWEN35,  /* Qwen2 with \p{M} joining letters */
};

struct pretok_buf {
    uint32_t *cpts;   /* [n_cpts] decoded codepoints of the current text */
    uint8_t *flags;   /* [n_cpts] unicode_flags of each codepoint */
    size_t *offs;     /* [n_cpts + 1] byte offset where each codepoint starts; offs[n] = len */
    size_t cap_cpts;  /* allocated entries of cpts/flags (offs has one more) */
    size_t *ends;     /* [n_words] exclusive end of each word, in codepoints then in bytes */
    size_t *tmp;      /* scratch word ends for multi-step kinds */
    size_t n_words;   /* words of the last split */
    size_t cap_words; /* allocated entries of ends and tmp */
};

void pretok_buf_init(struct pretok_buf *b);
void pretok_buf_free(struct pretok_buf *b);

/* Splits text[0..len) into words: afterwards b->ends[0..b->n_words) are the exclusive byte
 * ends of consecutive words covering the whole text (word i starts at ends[i-1], or 0).
 * Returns 0 or ERR_NOMEM. */
int pretokenize_split(enum pretok_kind kind, const char *text, size_t len, struct pretok_buf *b);

#endif
