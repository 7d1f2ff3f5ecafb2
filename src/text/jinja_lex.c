/* jinja_lex.c: template source -> tokens, the way Jinja2's lexer (jinja2/lexer.py) does it.
 *
 * Jinja's lexer is a set of regular expressions; this is the same state machine written as a
 * cursor over the bytes. The parts that decide output bytes are whitespace control:
 *   - `{%-`, `{{-`, `{#-` strip all whitespace (Python's str.isspace set) before the tag;
 *     `-%}`, `-}}`, `-#}` strip all whitespace after it.
 *   - trim_blocks: a block or comment end `%}` / `#}` eats one following newline
 *     (not after `{% raw %}`, and never after `}}`).
 *   - lstrip_blocks: spaces/tabs between a line start and a `{%` or `{#` are dropped; the line
 *     start may be the template start or the end of a tag that itself ended with a newline.
 *   - `+` (`{%+`, `+%}`) turns lstrip/trim off for that side.
 * Inside tags, `}}` and `%}` only end the tag when brackets are balanced.
 */
#include "jinja_internal.h"

#include "../base/mem.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct lexer {
    const char *src;
    size_t n, pos;
    uint32_t line;
    size_t line_start; /* offset of the current line's first byte */
    struct tpl_arena *arena;
    struct jinja_tokens *out;
    struct error *err;
    int line_starting; /* the last match ended with '\n' (lstrip_blocks) */
};

/* ============================================================================================
 * Helpers
 * ============================================================================================
 * The cursor counts lines as it moves, for error positions.
 */

char *jinja_normalize(struct tpl_arena *a, const char *src, size_t n, size_t *out_n) {
    char *p = tpl_arena_alloc(a, n + 1);
    if (!p) return NULL;
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        if (src[i] == '\r') {
            p[j++] = '\n';
            if (i + 1 < n && src[i + 1] == '\n') i++;
        } else {
            p[j++] = src[i];
        }
    }
    if (j > 0 && p[j - 1] == '\n') j--; /* keep_trailing_newline=False drops one */
    p[j] = 0;
    *out_n = j;
    return p;
}

static uint32_t col_of(const struct lexer *lx, size_t off) {
    /* line_start tracks the line of lx->pos; off is never before it when we report */
    return (uint32_t)(off >= lx->line_start ? off - lx->line_start + 1 : 1);
}

static int lex_fail(struct lexer *lx, size_t off, const char *msg, const char *arg) {
    return error_set(lx->err, ERR_FORMAT, "line %u:%u: %s%s", lx->line, col_of(lx, off), msg,
                     arg ? arg : "");
}

/* Moves the cursor to `to`, counting newlines. */
static void advance(struct lexer *lx, size_t to) {
    for (size_t i = lx->pos; i < to; i++) {
        if (lx->src[i] == '\n') {
            lx->line++;
            lx->line_start = i + 1;
        }
    }
    lx->pos = to;
}

static struct jinja_token *push(struct lexer *lx, uint8_t type, size_t off) {
    struct jinja_tokens *t = lx->out;
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 256;
        struct jinja_token *v = mem_realloc(t->v, cap * sizeof(*v));
        if (!v) return NULL;
        t->v = v;
        t->cap = cap;
    }
    struct jinja_token *tok = &t->v[t->n++];
    memset(tok, 0, sizeof(*tok));
    tok->type = type;
    tok->line = lx->line;
    tok->col = col_of(lx, off);
    return tok;
}

/* Python whitespace (str.isspace / regex \s) at s[i]: returns its byte length or 0. */
static size_t space_at(const char *s, size_t n, size_t i) {
    unsigned char c = (unsigned char)s[i];
    if (c < 0x80) return (c >= 9 && c <= 13) || (c >= 0x1c && c <= 0x20) ? 1 : 0;
    size_t j = i;
    uint32_t cp = jinja_utf8_next(s, n, &j);
    return cp >= 0x80 && jinja_is_pyspace(cp) ? j - i : 0;
}

static size_t skip_space(const char *s, size_t n, size_t i) {
    size_t k;
    while (i < n && (k = space_at(s, n, i)) > 0) i += k;
    return i;
}

/* Length of s[0..n) after Python's rstrip(): drops trailing whitespace characters. */
static size_t rstrip_len(const char *s, size_t n) {
    while (n > 0) {
        size_t start = n - 1;
        while (start > 0 && n - start < 4 && ((unsigned char)s[start] & 0xc0) == 0x80) start--;
        size_t k = space_at(s, n, start);
        if (k == 0 || start + k != n) break;
        n = start;
    }
    return n;
}

/* Emits text as a data token after Jinja's OptionalLStrip: sign '-' rstrips it; otherwise with
 * lstrip_blocks (and not before `{{`) trailing spaces after the last newline are dropped when
 * that line started a line. */
static int emit_data(struct lexer *lx, size_t start, size_t end, char sign, int is_variable) {
    size_t len = end - start;
    const char *text = lx->src + start;
    if (sign == '-') {
        len = rstrip_len(text, len);
    } else if (sign != '+' && !is_variable) {
        size_t l_pos = len;
        while (l_pos > 0 && text[l_pos - 1] != '\n') l_pos--;
        if ((l_pos > 0 || lx->line_starting) && l_pos < len && skip_space(text, len, l_pos) == len)
            len = l_pos;
    }
    if (len == 0) return 0;
    struct jinja_token *tok = push(lx, TK_DATA, start);
    if (!tok) return ERR_NOMEM;
    tok->p = text;
    tok->n = len;
    return 0;
}

/* ============================================================================================
 * Tokens inside tags
 * ============================================================================================
 * Names, numbers (Jinja's forms: 1_000, 0x1f, 1e3, but `1.` is 1 then a dot), strings with
 * Python escapes and operators. An end delimiter only ends the tag when brackets balance.
 */

static int is_name_start(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c >= 0x80;
}

static int is_name_char(unsigned char c) {
    return is_name_start(c) || (c >= '0' && c <= '9');
}

static int is_digit(char c) {
    return c >= '0' && c <= '9';
}

/* (\d+_)*\d+ at s[i]: returns the end or i when absent. */
static size_t digits_at(const char *s, size_t n, size_t i) {
    size_t j = i;
    if (j >= n || !is_digit(s[j])) return i;
    while (j < n) {
        while (j < n && is_digit(s[j])) j++;
        if (j + 1 < n && s[j] == '_' && is_digit(s[j + 1]))
            j++;
        else
            break;
    }
    return j;
}

/* Jinja's float_re: digits, then a fraction and/or an exponent; never right after a '.'. */
static size_t float_at(const char *s, size_t n, size_t i) {
    if (i > 0 && s[i - 1] == '.') return 0;
    size_t j = digits_at(s, n, i);
    if (j == i) return 0;
    size_t frac = 0;
    if (j < n && s[j] == '.') {
        size_t k = digits_at(s, n, j + 1);
        if (k > j + 1) frac = k;
    }
    size_t e = frac ? frac : j;
    if (e < n && (s[e] == 'e' || s[e] == 'E')) {
        size_t k = e + 1;
        if (k < n && (s[k] == '+' || s[k] == '-')) k++;
        size_t m = digits_at(s, n, k);
        if (m > k) return m;
    }
    return frac;
}

/* Jinja's integer_re: 0b/0o/0x with optional '_' between digits, [1-9](_?\d)*, 0(_?0)*. */
static size_t int_at(const char *s, size_t n, size_t i, int *base) {
    *base = 10;
    if (i >= n || !is_digit(s[i])) return 0;
    if (s[i] == '0' && i + 1 < n) {
        char c = (char)(s[i + 1] | 0x20);
        int b = c == 'b' ? 2 : c == 'o' ? 8 : c == 'x' ? 16 : 0;
        if (b) {
            size_t j = i + 2, end = 0;
            for (;;) {
                size_t k = j;
                if (k < n && s[k] == '_') k++;
                if (k >= n) break;
                char d = s[k];
                int ok = b == 16 ? (is_digit(d) || ((d | 0x20) >= 'a' && (d | 0x20) <= 'f'))
                                 : (d >= '0' && d < '0' + b);
                if (!ok) break;
                j = k + 1;
                end = j;
            }
            if (end) {
                *base = b;
                return end;
            }
        }
    }
    size_t j = i + 1;
    char first = s[i];
    for (;;) {
        size_t k = j;
        if (k < n && s[k] == '_') k++;
        if (k < n && (first == '0' ? s[k] == '0' : is_digit(s[k])))
            j = k + 1;
        else
            break;
    }
    return j;
}

static int parse_int_token(struct lexer *lx, size_t start, size_t end, int base,
                           struct jinja_token *tok) {
    size_t i = start + (base == 10 ? 0 : 2);
    uint64_t v = 0;
    for (; i < end; i++) {
        char c = lx->src[i];
        if (c == '_') continue;
        int d = is_digit(c) ? c - '0' : (c | 0x20) - 'a' + 10;
        if (v > (UINT64_MAX - (uint64_t)d) / (uint64_t)base ||
            v * (uint64_t)base + (uint64_t)d > INT64_MAX)
            return lex_fail(lx, start, "integer literal too large", NULL);
        v = v * (uint64_t)base + (uint64_t)d;
    }
    tok->i = (int64_t)v;
    return 0;
}

static int parse_float_token(struct lexer *lx, size_t start, size_t end, struct jinja_token *tok) {
    char tmp[128];
    size_t k = 0;
    for (size_t i = start; i < end && k + 1 < sizeof(tmp); i++)
        if (lx->src[i] != '_') tmp[k++] = lx->src[i];
    tmp[k] = 0;
    tok->f = strtod(tmp, NULL);
    if (isinf(tok->f)) tok->f = INFINITY; /* Python's literal_eval gives inf too */
    return 0;
}

/* Decodes a string literal body like Python's unicode-escape after backslashreplace (what Jinja
 * does): \\ \' \" \a \b \f \n \r \t \v, \ooo, \xhh, \uhhhh, \Uhhhhhhhh; any other escape stays as
 * written, and \N{...} is refused. A backslash before a non-ASCII character stays a backslash
 * followed by that character's \xhh / \uhhhh / \Uhhhhhhhh text, as in Jinja. */
static int decode_string(struct lexer *lx, size_t start, size_t end, struct jinja_token *tok) {
    struct buf b;
    buf_init(&b);
    const char *s = lx->src;
    size_t i = start;
    while (i < end) {
        size_t run = i;
        while (i < end && s[i] != '\\') i++;
        buf_append(&b, s + run, i - run);
        if (i >= end) break;
        i++; /* backslash; the literal regex guarantees a following character */
        if (i >= end) break;
        char c = s[i];
        uint32_t cp = 0;
        int hex = 0;
        switch (c) {
        case '\n':
            i++;
            continue; /* line continuation */
        case '\\':
            buf_append_char(&b, '\\');
            i++;
            continue;
        case '\'':
            buf_append_char(&b, '\'');
            i++;
            continue;
        case '"':
            buf_append_char(&b, '"');
            i++;
            continue;
        case 'a':
            buf_append_char(&b, '\a');
            i++;
            continue;
        case 'b':
            buf_append_char(&b, '\b');
            i++;
            continue;
        case 'f':
            buf_append_char(&b, '\f');
            i++;
            continue;
        case 'n':
            buf_append_char(&b, '\n');
            i++;
            continue;
        case 'r':
            buf_append_char(&b, '\r');
            i++;
            continue;
        case 't':
            buf_append_char(&b, '\t');
            i++;
            continue;
        case 'v':
            buf_append_char(&b, '\v');
            i++;
            continue;
        case 'x':
            hex = 2;
            break;
        case 'u':
            hex = 4;
            break;
        case 'U':
            hex = 8;
            break;
        default:
            break;
        }
        if (c == 'N') { /* \N{NAME}: Unicode names are not available here */
            buf_free(&b);
            return lex_fail(lx, start,
                            i + 1 < end && s[i + 1] == '{' ? "\\N{...} escapes are not supported"
                                                           : "malformed \\N character escape",
                            NULL);
        }
        if (c >= '0' && c <= '7') {
            int k = 0;
            while (k < 3 && i < end && s[i] >= '0' && s[i] <= '7') {
                cp = cp * 8 + (uint32_t)(s[i] - '0');
                i++;
                k++;
            }
            jinja_utf8_put(&b, cp);
            continue;
        }
        if (hex) {
            size_t j = i + 1;
            int k = 0;
            for (; k < hex && j < end; k++, j++) {
                char d = s[j];
                int v = is_digit(d)                                ? d - '0'
                        : ((d | 0x20) >= 'a' && (d | 0x20) <= 'f') ? (d | 0x20) - 'a' + 10
                                                                   : -1;
                if (v < 0) break;
                cp = cp * 16 + (uint32_t)v;
            }
            if (k < hex) {
                buf_free(&b);
                return lex_fail(lx, start, "truncated \\xXX, \\uXXXX or \\UXXXXXXXX escape", NULL);
            }
            if (cp > 0x10ffff) {
                buf_free(&b);
                return lex_fail(lx, start, "illegal Unicode character", NULL);
            }
            jinja_utf8_put(&b, cp);
            i = j;
            continue;
        }
        if ((unsigned char)c >= 0x80) {
            /* Jinja encodes non-ASCII as \xe9 / \u4e2d / \U0001f600 before decoding escapes, so
             * the backslash here pairs with that backslash: the result is a literal backslash
             * followed by the escape's letters. */
            size_t j = i;
            uint32_t ch = jinja_utf8_next(s, end, &j);
            buf_append_char(&b, '\\');
            if (ch < 0x100)
                buf_printf(&b, "x%02x", ch);
            else if (ch < 0x10000)
                buf_printf(&b, "u%04x", ch);
            else
                buf_printf(&b, "U%08x", ch);
            i = j;
            continue;
        }
        buf_append_char(&b, '\\'); /* unknown escape: kept */
    }
    if (b.failed) {
        buf_free(&b);
        return ERR_NOMEM;
    }
    char *p = tpl_arena_alloc(lx->arena, b.len + 1);
    if (!p) {
        buf_free(&b);
        return ERR_NOMEM;
    }
    if (b.len) memcpy(p, b.data, b.len);
    p[b.len] = 0;
    tok->p = p;
    tok->n = b.len;
    buf_free(&b);
    return 0;
}

static const struct {
    const char *text;
    uint8_t op;
} k_ops[] = {
    {"**", OP_POW},     {"//", OP_FLOORDIV}, {"==", OP_EQ},    {"!=", OP_NE},
    {">=", OP_GTEQ},    {"<=", OP_LTEQ},     {"+", OP_ADD},    {"-", OP_SUB},
    {"/", OP_DIV},      {"*", OP_MUL},       {"%", OP_MOD},    {"~", OP_TILDE},
    {"[", OP_LBRACKET}, {"]", OP_RBRACKET},  {"(", OP_LPAREN}, {")", OP_RPAREN},
    {"{", OP_LBRACE},   {"}", OP_RBRACE},    {">", OP_GT},     {"<", OP_LT},
    {"=", OP_ASSIGN},   {".", OP_DOT},       {":", OP_COLON},  {"|", OP_PIPE},
    {",", OP_COMMA},    {";", OP_SEMICOLON},
};

#define LEX_MAX_BRACKETS 256

/* Tokens of one `{{ ... }}` (is_block 0) or `{% ... %}` (is_block 1) up to and including the end
 * delimiter. */
static int lex_tag(struct lexer *lx, int is_block) {
    const char *s = lx->src;
    size_t n = lx->n;
    char closer = is_block ? '%' : '}';
    char stack[LEX_MAX_BRACKETS];
    int depth = 0;
    for (;;) {
        size_t i = lx->pos;
        if (i >= n) return lex_fail(lx, i, "unexpected end of template", " (unclosed tag)");
        if (depth == 0) { /* the end rule comes first */
            size_t end = 0;
            int strip = 0;
            if (s[i] == '+' && i + 2 < n && s[i + 1] == closer && s[i + 2] == '}' && is_block)
                end = i + 3;
            else if (s[i] == '-' && i + 2 < n && s[i + 1] == closer && s[i + 2] == '}')
                end = i + 3, strip = 1;
            else if (s[i] == closer && i + 1 < n && s[i + 1] == '}')
                end = i + 2;
            if (end) {
                if (!push(lx, is_block ? TK_BLOCK_END : TK_VAR_END, i)) return ERR_NOMEM;
                if (strip)
                    end = skip_space(s, n, end);
                else if (is_block && s[i] != '+' && end < n && s[end] == '\n')
                    end++; /* trim_blocks */
                lx->line_starting = end > 0 && s[end - 1] == '\n';
                advance(lx, end);
                return 0;
            }
        }
        size_t k = space_at(s, n, i);
        if (k) {
            advance(lx, skip_space(s, n, i));
            continue;
        }
        size_t end;
        int base;
        unsigned char c = (unsigned char)s[i];
        if ((end = float_at(s, n, i)) > 0) {
            struct jinja_token *tok = push(lx, TK_FLOAT, i);
            if (!tok) return ERR_NOMEM;
            parse_float_token(lx, i, end, tok);
        } else if ((end = int_at(s, n, i, &base)) > 0) {
            struct jinja_token *tok = push(lx, TK_INT, i);
            if (!tok) return ERR_NOMEM;
            int rc = parse_int_token(lx, i, end, base, tok);
            if (rc) return rc;
        } else if (is_name_start(c)) {
            end = i + 1;
            while (end < n && is_name_char((unsigned char)s[end])) end++;
            struct jinja_token *tok = push(lx, TK_NAME, i);
            if (!tok) return ERR_NOMEM;
            tok->p = s + i;
            tok->n = end - i;
        } else if (c == '\'' || c == '"') {
            end = i + 1;
            while (end < n && s[end] != (char)c) end += s[end] == '\\' && end + 1 < n ? 2 : 1;
            if (end >= n)
                return lex_fail(lx, i, "unexpected char '", "\"'\" (unterminated string)");
            struct jinja_token *tok = push(lx, TK_STRING, i);
            if (!tok) return ERR_NOMEM;
            int rc = decode_string(lx, i + 1, end, tok);
            if (rc) return rc;
            end++;
        } else {
            size_t o = 0;
            for (; o < sizeof(k_ops) / sizeof(k_ops[0]); o++) {
                size_t len = strlen(k_ops[o].text);
                if (i + len <= n && memcmp(s + i, k_ops[o].text, len) == 0) break;
            }
            if (o == sizeof(k_ops) / sizeof(k_ops[0])) {
                char what[8] = {0};
                what[0] = (char)c;
                return lex_fail(lx, i, "unexpected char ", c >= 0x20 && c < 0x7f ? what : "?");
            }
            uint8_t op = k_ops[o].op;
            if (op == OP_LBRACE || op == OP_LPAREN || op == OP_LBRACKET) {
                if (depth == LEX_MAX_BRACKETS)
                    return lex_fail(lx, i, "brackets nested too deeply", NULL);
                stack[depth++] = op == OP_LBRACE ? '}' : op == OP_LPAREN ? ')' : ']';
            } else if (op == OP_RBRACE || op == OP_RPAREN || op == OP_RBRACKET) {
                char msg[32];
                if (depth == 0) {
                    snprintf(msg, sizeof(msg), "'%c'", c);
                    return lex_fail(lx, i, "unexpected ", msg);
                }
                if (stack[depth - 1] != (char)c) {
                    snprintf(msg, sizeof(msg), "'%c', expected '%c'", c, stack[depth - 1]);
                    return lex_fail(lx, i, "unexpected ", msg);
                }
                depth--;
            }
            struct jinja_token *tok = push(lx, TK_OP, i);
            if (!tok) return ERR_NOMEM;
            tok->op = op;
            end = i + strlen(k_ops[o].text);
        }
        lx->line_starting = s[end - 1] == '\n';
        advance(lx, end);
    }
}

/* ============================================================================================
 * Root state: data, comments, raw blocks
 * ============================================================================================
 * Finds the next `{{`, `{%` or `{#`, applies whitespace control to the text before it, then
 * lexes the tag (or skips the comment, or copies the raw block).
 */

/* Matches `{%[-+]? \s* raw \s* (-%}\s* | %})` at i; returns the end or 0. *sign gets [-+]. */
static size_t raw_begin_at(const char *s, size_t n, size_t i, const char *word, char *sign,
                           int trim) {
    if (i + 2 > n || s[i] != '{' || s[i + 1] != '%') return 0;
    size_t j = i + 2;
    *sign = 0;
    if (j < n && (s[j] == '-' || s[j] == '+')) *sign = s[j++];
    j = skip_space(s, n, j);
    size_t wl = strlen(word);
    if (j + wl > n || memcmp(s + j, word, wl) != 0) return 0;
    j = skip_space(s, n, j + wl);
    if (trim && j + 2 < n && s[j] == '+' && s[j + 1] == '%' && s[j + 2] == '}') return j + 3;
    if (j + 2 < n && s[j] == '-' && s[j + 1] == '%' && s[j + 2] == '}')
        return skip_space(s, n, j + 3);
    if (j + 1 < n && s[j] == '%' && s[j + 1] == '}') {
        j += 2;
        if (trim && j < n && s[j] == '\n') j++;
        return j;
    }
    return 0;
}

int jinja_lex(const char *src, size_t n, struct tpl_arena *a, struct jinja_tokens *out,
              struct error *err) {
    struct lexer lx = {
        .src = src, .n = n, .line = 1, .arena = a, .out = out, .err = err, .line_starting = 1};
    memset(out, 0, sizeof(*out));
    int rc = 0;
    while (lx.pos < n && !rc) {
        size_t q = lx.pos;
        while (q + 1 < n &&
               !(src[q] == '{' && (src[q + 1] == '{' || src[q + 1] == '%' || src[q + 1] == '#')))
            q++;
        if (q + 1 >= n) { /* the rest is data */
            rc = emit_data(&lx, lx.pos, n, 0, 1);
            advance(&lx, n);
            break;
        }
        char kind = src[q + 1];
        char sign = q + 2 < n && (src[q + 2] == '-' || src[q + 2] == '+') ? src[q + 2] : 0;
        char raw_sign;
        size_t raw_end = kind == '%' ? raw_begin_at(src, n, q, "raw", &raw_sign, 0) : 0;
        rc = emit_data(&lx, lx.pos, q, sign, kind == '{');
        if (rc) break;
        advance(&lx, q);
        if (raw_end) {
            lx.line_starting = src[raw_end - 1] == '\n';
            advance(&lx, raw_end);
            size_t r = lx.pos, e = 0;
            char end_sign = 0;
            for (; r + 1 < n; r++)
                if (src[r] == '{' && src[r + 1] == '%' &&
                    (e = raw_begin_at(src, n, r, "endraw", &end_sign, 1)) > 0)
                    break;
            if (!e) {
                rc = lex_fail(&lx, q, "Missing end of raw directive", NULL);
                break;
            }
            rc = emit_data(&lx, lx.pos, r, end_sign, 0);
            lx.line_starting = src[e - 1] == '\n';
            advance(&lx, e);
            continue;
        }
        size_t body = q + 2 + (sign ? 1 : 0);
        if (kind == '#') {
            size_t k = body;
            while (k + 1 < n && !(src[k] == '#' && src[k + 1] == '}')) k++;
            if (k + 1 >= n) {
                rc = lex_fail(&lx, q, "Missing end of comment tag", NULL);
                break;
            }
            size_t end = k + 2;
            char csign = k > body && (src[k - 1] == '-' || src[k - 1] == '+') ? src[k - 1] : 0;
            if (csign == '-')
                end = skip_space(src, n, end);
            else if (csign != '+' && end < n && src[end] == '\n')
                end++;
            lx.line_starting = src[end - 1] == '\n';
            advance(&lx, end);
            continue;
        }
        if (!push(&lx, kind == '{' ? TK_VAR_BEGIN : TK_BLOCK_BEGIN, q)) {
            rc = ERR_NOMEM;
            break;
        }
        lx.line_starting = 0;
        advance(&lx, body);
        rc = lex_tag(&lx, kind == '%');
    }
    if (!rc) {
        struct jinja_token *tok = push(&lx, TK_EOF, lx.pos);
        if (!tok) rc = ERR_NOMEM;
    }
    if (rc == ERR_NOMEM) error_set(err, ERR_NOMEM, "template: out of memory");
    if (rc) {
        mem_free(out->v);
        memset(out, 0, sizeof(*out));
    }
    return rc;
}
