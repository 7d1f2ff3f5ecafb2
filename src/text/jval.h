/* jval.h: a small JSON reader and writer for the text layer.
 *
 * The server speaks JSON through jansson; the text layer may not depend on it, yet the chat
 * parser and the schema compiler need to read JSON (tool lists, schemas, tool-call arguments).
 * So they get their own reader, strict RFC 8259 like jansson: UTF-8 validated, no comments, no
 * trailing commas, nesting at most JVAL_MAX_DEPTH. A parsed tree owns all its memory (one
 * jval_free releases it); object members keep their order. The writer prints compact JSON with
 * Python json.dumps spacing (", " and ": "), which is what Qwen templates' tojson produces.
 * Not here: streaming (see chat.c's scanner), number arithmetic beyond a double.
 */
#ifndef HEARTH_JVAL_H
#define HEARTH_JVAL_H

#include "../base/buf.h"
#include "../base/error.h"

#include <stddef.h>

#define JVAL_MAX_DEPTH 200

enum jval_type {
    JVAL_NULL = 0,
    JVAL_BOOL = 1,
    JVAL_NUMBER = 2,
    JVAL_STRING = 3,
    JVAL_ARRAY = 4,
    JVAL_OBJECT = 5,
};

struct jval {
    enum jval_type type;
    int boolean;        /* JVAL_BOOL: 0 or 1 */
    double number;      /* JVAL_NUMBER: the value (inf for out-of-range exponents) */
    int is_integer;     /* JVAL_NUMBER: the text had no fraction and no exponent */
    char *str;          /* JVAL_STRING: decoded UTF-8, NUL-terminated (may hold NUL bytes);
                           JVAL_NUMBER: the number's source text, NUL-terminated */
    size_t len;         /* JVAL_STRING / JVAL_NUMBER: bytes in str */
    struct jval *items; /* JVAL_ARRAY elements / JVAL_OBJECT member values, [n] */
    char **keys;        /* JVAL_OBJECT: member names, decoded, NUL-terminated, [n] */
    size_t *key_lens;   /* JVAL_OBJECT: bytes of each key, [n] */
    size_t n;           /* JVAL_ARRAY / JVAL_OBJECT: element count */
};

/* Parses exactly one JSON value (whitespace around it allowed) from text[0..len). *out
 * (caller frees with jval_free) is NULL on error. Errors: ERR_FORMAT with the byte offset in
 * the message (also for nesting deeper than JVAL_MAX_DEPTH), ERR_NOMEM. */
int jval_parse(struct jval **out, const char *text, size_t len, struct error *err);
/* Like jval_parse, but stops after the first value: *consumed gets the bytes read up to the
 * end of that value (trailing text is left alone). */
int jval_parse_prefix(struct jval **out, const char *text, size_t len, size_t *consumed,
                      struct error *err);
void jval_free(struct jval *v);

/* Member of an object by name (first match), NULL if v is not an object or has no such key. */
const struct jval *jval_get(const struct jval *v, const char *key);
/* The string of member key if it is a string, else NULL. */
const char *jval_get_str(const struct jval *v, const char *key);
/* 1 if a and b are equal JSON values (numbers compared by value, objects as unordered maps). */
int jval_equal(const struct jval *a, const struct jval *b);

/* Appends v as compact JSON (", " and ": " separators, numbers as their source text, non-ASCII
 * unescaped) to out. */
void jval_write(const struct jval *v, struct buf *out);
/* Appends s[0..len) as a JSON string literal: quotes, escapes for '"', '\\' and control
 * characters (\n \r \t \b \f, else \u00XX); other bytes are copied as they are. */
void jval_write_string(const char *s, size_t len, struct buf *out);

#endif
