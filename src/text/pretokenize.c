/* pretokenize.c: the pre-tokenizer regexes of byte-level BPE, written as code.
 *
 * llama.cpp (src/unicode.cpp) runs hand-written matchers for the GPT-2 and Llama-3 regexes and
 * std::regex over a "collapsed" text (one byte per codepoint standing for its class) for the
 * others, Qwen2 and Qwen3.5 among them. For these regexes both paths reduce to the same
 * leftmost-first alternation over codepoint classes, so each kind below is one loop that tries
 * the alternatives in order at the current position and emits the end of the word it matched.
 * The classes are unicode.h's: \p{L} letter, \p{N} number, \p{M} mark, \s White_Space; ASCII
 * letters are only A-Z a-z and ASCII digits only 0-9, exactly as in llama.cpp. Matching never
 * crosses the end of the text it is given (a special-token fragment), which is what `(?!\S)`
 * sees as the end.
 */
#include "pretokenize.h"

#include "../base/error.h"
#include "../base/mem.h"
#include "unicode.h"

#include <string.h>

void pretok_buf_init(struct pretok_buf *b) {
    memset(b, 0, sizeof(*b));
}

void pretok_buf_free(struct pretok_buf *b) {
    mem_free(b->cpts);
    mem_free(b->flags);
    mem_free(b->offs);
    mem_free(b->ends);
    mem_free(b->tmp);
    pretok_buf_init(b);
}

/* ======================================================================================
 * Matching state
 *
 * A span is one chunk [ini, end) of the codepoint array. Reads outside it return class 0 and
 * codepoint SPAN_OUT, like llama.cpp's _get_flags/_get_cpt, so the alternatives can look one
 * codepoint ahead without bounds checks of their own. Every in-range codepoint has a non-zero
 * class (each has a general category), so `fl() != 0` means "inside the span".
 * ====================================================================================== */

#define SPAN_OUT 0xFFFFFFFFu

struct span {
    const uint32_t *cpts; /* [n] codepoints of the whole text */
    const uint8_t *flags; /* [n] their classes */
    size_t ini, end;      /* the chunk being split, codepoint indices */
    size_t *out;          /* word ends (codepoint index, exclusive), appended */
    size_t n_out;         /* entries of out */
    size_t prev;          /* end of the last emitted word */
};

static unsigned fl(const struct span *s, size_t pos) {
    return pos < s->end ? s->flags[pos] : 0;
}

static uint32_t cp(const struct span *s, size_t pos) {
    return pos < s->end ? s->cpts[pos] : SPAN_OUT;
}

static void emit(struct span *s, size_t end) {
    if (end > s->prev) s->out[s->n_out++] = end;
    s->prev = end;
}

static uint32_t ascii_lower(uint32_t c) {
    return (c >= 'A' && c <= 'Z') ? c + 32 : c;
}

/* Length of an English contraction at pos ('s 't 'm 'd 're 've 'll), 0 if none. The
 * case-insensitive form ((?i:...) in the Llama-3/Qwen regexes) only needs ASCII folding: no
 * codepoint above U+007F lowercases to one of these letters (Python str.lower, all planes). */
static size_t match_contraction(const struct span *s, size_t pos, int fold_case) {
    if (cp(s, pos) != '\'' || pos + 1 >= s->end) return 0;
    uint32_t c1 = cp(s, pos + 1);
    if (fold_case) c1 = ascii_lower(c1);
    if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') return 2;
    if (pos + 2 >= s->end) return 0;
    uint32_t c2 = cp(s, pos + 2);
    if (fold_case) c2 = ascii_lower(c2);
    if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l')) return 3;
    return 0;
}

/* ======================================================================================
 * GPT-2:  's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 *
 * Contractions are case-sensitive here. `\s+(?!\S)` leaves the last whitespace of a run for
 * the next word (" world" keeps its space) unless the run ends the text.
 * ====================================================================================== */

static void split_gpt2(struct span *s) {
    size_t pos = s->ini;
    while (pos < s->end) {
        uint32_t c = cp(s, pos);
        size_t n = match_contraction(s, pos, 0);
        if (n) {
            pos += n;
            emit(s, pos);
            continue;
        }
        unsigned f2 = c == ' ' ? fl(s, pos + 1) : fl(s, pos);
        if (f2 & UNICODE_LETTER) { /*  ?\p{L}+ */
            pos += c == ' ';
            while (fl(s, pos) & UNICODE_LETTER) pos++;
            emit(s, pos);
            continue;
        }
        if (f2 & UNICODE_NUMBER) { /*  ?\p{N}+ */
            pos += c == ' ';
            while (fl(s, pos) & UNICODE_NUMBER) pos++;
            emit(s, pos);
            continue;
        }
        const unsigned word = UNICODE_WHITESPACE | UNICODE_LETTER | UNICODE_NUMBER;
        if (!(f2 & word) && f2) { /*  ?[^\s\p{L}\p{N}]+ */
            pos += c == ' ';
            while (!(fl(s, pos) & word) && fl(s, pos)) pos++;
            emit(s, pos);
            continue;
        }
        size_t n_ws = 0;
        while (fl(s, pos + n_ws) & UNICODE_WHITESPACE) n_ws++;
        if (n_ws > 1 && pos + n_ws < s->end) { /* \s+(?!\S) */
            pos += n_ws - 1;
            emit(s, pos);
            continue;
        }
        if (n_ws > 0) { /* \s+ */
            pos += n_ws;
            emit(s, pos);
            continue;
        }
        emit(s, ++pos);
    }
}

/* ======================================================================================
 * Llama-3, Qwen2, Qwen3.5
 *
 * llama-bpe (llama.cpp LLAMA_VOCAB_PRE_TYPE_LLAMA3):
 *   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|
 *   \s*[\r\n]+|\s+(?!\S)|\s+
 * qwen2: the same with \p{N} instead of \p{N}{1,3}.
 * qwen35: llama.cpp (src/llama-vocab.cpp, LLAMA_VOCAB_PRE_TYPE_QWEN35) uses
 *   (?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|
 *   \p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
 * i.e. marks continue (or start) a letter run in alternative 2 and are not punctuation in
 * alternative 4; note the optional prefix of alternative 2 may itself be a mark. Decomposed
 * "e\u0301" is one word under qwen35 and two under qwen2.
 *
 * Backtracking reduces to: alt 2 takes one prefix codepoint (anything but CR, LF, a letter or
 * a number) only if a letter follows; alt 5 ends after the last CR/LF of the whitespace run;
 * alt 6 gives back the run's last codepoint unless the run ends the text.
 * ====================================================================================== */

static void split_llama3(struct span *s, size_t max_digits, int marks_are_letters) {
    const unsigned letter = UNICODE_LETTER | (marks_are_letters ? UNICODE_MARK : 0u);
    const unsigned word = UNICODE_WHITESPACE | UNICODE_LETTER | UNICODE_NUMBER |
                          (marks_are_letters ? UNICODE_MARK : 0u);
    size_t pos = s->ini;
    while (pos < s->end) {
        uint32_t c = cp(s, pos);
        unsigned f = fl(s, pos);
        size_t n = match_contraction(s, pos, 1);
        if (n) {
            pos += n;
            emit(s, pos);
            continue;
        }
        /* [^\r\n\p{L}\p{N}]?\p{L}+ */
        if (!(c == '\r' || c == '\n' || (f & UNICODE_NUMBER)) &&
            ((f & letter) || (fl(s, pos + 1) & letter))) {
            pos++;
            while (fl(s, pos) & letter) pos++;
            emit(s, pos);
            continue;
        }
        /* \p{N}{1,max_digits} */
        if (f & UNICODE_NUMBER) {
            size_t ini = pos;
            while (fl(s, pos) & UNICODE_NUMBER) {
                pos++;
                if (pos - ini >= max_digits) {
                    emit(s, pos);
                    ini = pos;
                }
            }
            emit(s, pos);
            continue;
        }
        /*  ?[^\s\p{L}\p{N}]+[\r\n]* */
        unsigned f2 = c == ' ' ? fl(s, pos + 1) : f;
        if (!(f2 & word) && f) {
            pos += c == ' ';
            while (!(fl(s, pos) & word) && fl(s, pos)) pos++;
            while (cp(s, pos) == '\r' || cp(s, pos) == '\n') pos++;
            emit(s, pos);
            continue;
        }
        size_t n_ws = 0, last_crlf_end = 0;
        while (fl(s, pos + n_ws) & UNICODE_WHITESPACE) {
            uint32_t c2 = cp(s, pos + n_ws);
            if (c2 == '\r' || c2 == '\n') last_crlf_end = pos + n_ws + 1;
            n_ws++;
        }
        if (last_crlf_end > 0) { /* \s*[\r\n]+ */
            pos = last_crlf_end;
            emit(s, pos);
            continue;
        }
        if (n_ws > 1 && pos + n_ws < s->end) { /* \s+(?!\S) */
            pos += n_ws - 1;
            emit(s, pos);
            continue;
        }
        if (n_ws > 0) { /* \s+ */
            pos += n_ws;
            emit(s, pos);
            continue;
        }
        emit(s, ++pos);
    }
}

/* ======================================================================================
 * llama.cpp's BPE "default" (also used when tokenizer.ggml.pre is missing)
 *
 * Four regexes applied one after the other, each splitting every piece of the previous one
 * (matches and the gaps between them both become pieces):
 *   [\p{P}\$\+<=>\^~\|]+   then GPT-2   then \p{N}+   then [0-9][0-9][0-9]
 * ====================================================================================== */

static int is_default_punct(uint32_t c, unsigned f) {
    return (f & UNICODE_PUNCT) || (c < 128 && c && strchr("$+<=>^~|", (int)c));
}

/* Pieces are the maximal runs of codepoints with and without the property. */
static void split_runs(struct span *s, int which) {
    size_t pos = s->ini;
    int prev_in = -1;
    for (; pos < s->end; pos++) {
        unsigned f = s->flags[pos];
        int in = which == 0 ? is_default_punct(s->cpts[pos], f) : (f & UNICODE_NUMBER) != 0;
        if (prev_in >= 0 && in != prev_in) emit(s, pos);
        prev_in = in;
    }
    emit(s, s->end);
}

static int is_ascii_digit(uint32_t c) {
    return c >= '0' && c <= '9';
}

static void split_three_digits(struct span *s) {
    size_t pos = s->ini;
    while (pos < s->end) {
        if (pos + 3 <= s->end && is_ascii_digit(s->cpts[pos]) && is_ascii_digit(s->cpts[pos + 1]) &&
            is_ascii_digit(s->cpts[pos + 2])) {
            emit(s, pos);
            pos += 3;
            emit(s, pos);
        } else {
            pos++;
        }
    }
    emit(s, s->end);
}

/* ======================================================================================
 * Driver
 * ====================================================================================== */

static int reserve(struct pretok_buf *b, size_t n_cpts) {
    if (n_cpts <= b->cap_cpts && n_cpts <= b->cap_words) return 0;
    size_t cap = n_cpts < 64 ? 64 : n_cpts + n_cpts / 2;
    uint32_t *cpts = mem_realloc(b->cpts, cap * sizeof(*cpts));
    if (!cpts) return ERR_NOMEM;
    b->cpts = cpts;
    uint8_t *flags = mem_realloc(b->flags, cap);
    if (!flags) return ERR_NOMEM;
    b->flags = flags;
    size_t *offs = mem_realloc(b->offs, (cap + 1) * sizeof(*offs));
    if (!offs) return ERR_NOMEM;
    b->offs = offs;
    size_t *ends = mem_realloc(b->ends, cap * sizeof(*ends));
    if (!ends) return ERR_NOMEM;
    b->ends = ends;
    size_t *tmp = mem_realloc(b->tmp, cap * sizeof(*tmp));
    if (!tmp) return ERR_NOMEM;
    b->tmp = tmp;
    b->cap_cpts = cap;
    b->cap_words = cap;
    return 0;
}

enum split_step {
    STEP_GPT2,
    STEP_LLAMA3,
    STEP_QWEN2,
    STEP_QWEN35,
    STEP_PUNCT,
    STEP_NUMBER,
    STEP_DIGITS3
};

/* Splits each piece listed in in[0..n_in) (ends) with one step into out; returns out's count. */
static size_t run_step(struct pretok_buf *b, enum split_step step, const size_t *in, size_t n_in,
                       size_t *out) {
    struct span s = {.cpts = b->cpts, .flags = b->flags, .out = out};
    size_t ini = 0;
    for (size_t i = 0; i < n_in; i++) {
        s.ini = ini;
        s.end = in[i];
        s.prev = ini;
        switch (step) {
        case STEP_GPT2:
            split_gpt2(&s);
            break;
        case STEP_LLAMA3:
            split_llama3(&s, 3, 0);
            break;
        case STEP_QWEN2:
            split_llama3(&s, 1, 0);
            break;
        case STEP_QWEN35:
            split_llama3(&s, 1, 1);
            break;
        case STEP_PUNCT:
            split_runs(&s, 0);
            break;
        case STEP_NUMBER:
            split_runs(&s, 1);
            break;
        case STEP_DIGITS3:
            split_three_digits(&s);
            break;
        }
        ini = in[i];
    }
    return s.n_out;
}

int pretokenize_split(enum pretok_kind kind, const char *text, size_t len, struct pretok_buf *b) {
    b->n_words = 0;
    if (len == 0) return 0;
    /* at most one codepoint per byte */
    if (reserve(b, len) != 0) return ERR_NOMEM;
    size_t n = 0;
    for (size_t i = 0; i < len; n++) {
        uint32_t cpt;
        size_t k = unicode_decode_utf8(text + i, len - i, &cpt);
        b->cpts[n] = cpt;
        b->flags[n] = (uint8_t)unicode_flags(cpt);
        b->offs[n] = i;
        i += k;
    }
    b->offs[n] = len;

    static const enum split_step steps_default[] = {STEP_PUNCT, STEP_GPT2, STEP_NUMBER,
                                                    STEP_DIGITS3};
    enum split_step one;
    const enum split_step *steps = &one;
    size_t n_steps = 1;
    switch (kind) {
    case PRETOK_DEFAULT:
        steps = steps_default;
        n_steps = sizeof(steps_default) / sizeof(steps_default[0]);
        break;
    case PRETOK_GPT2:
        one = STEP_GPT2;
        break;
    case PRETOK_LLAMA3:
        one = STEP_LLAMA3;
        break;
    case PRETOK_QWEN2:
        one = STEP_QWEN2;
        break;
    case PRETOK_QWEN35:
        one = STEP_QWEN35;
        break;
    }

    /* ping-pong between ends and tmp; start with one piece covering everything */
    size_t *cur = b->ends, *next = b->tmp;
    cur[0] = n;
    size_t n_cur = 1;
    for (size_t i = 0; i < n_steps; i++) {
        n_cur = run_step(b, steps[i], cur, n_cur, next);
        size_t *t = cur;
        cur = next;
        next = t;
    }
    if (cur != b->ends) memcpy(b->ends, cur, n_cur * sizeof(*cur));
    for (size_t i = 0; i < n_cur; i++) b->ends[i] = b->offs[b->ends[i]];
    b->n_words = n_cur;
    return 0;
}
