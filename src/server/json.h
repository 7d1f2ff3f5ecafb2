/* json.h: jansson helpers for the API layer.
 *
 * jansson does the parsing and printing (it validates UTF-8 on input, reports the byte position
 * of errors, keeps object key order). This file adds what every handler needs around it: routing
 * jansson's allocations through base/mem, typed field readers whose error message names the
 * field (the client sees it), and UTF-8 repair for generated text, which may contain invalid or
 * split sequences that jansson would refuse to hold. Names avoid jansson's own json_* set.
 */
#ifndef HEARTH_SERVER_JSON_H
#define HEARTH_SERVER_JSON_H

#include "../base/buf.h"
#include "../base/error.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* Points jansson's allocator at base/mem (process-wide; call once before any other use). */
void json_use_mem(void);

/* Parses a request body that must be one JSON object. ERR_FORMAT with jansson's message and the
 * byte position for malformed JSON or invalid UTF-8, ERR_INVALID when the value is not an
 * object. *out is a new reference. */
int json_parse_object(const char *body, size_t len, json_t **out, struct error *err);

/* Field readers. Each returns 0 when the key is absent or null (out untouched), 1 when it was
 * read, or ERR_INVALID with "'key' must be ..." when the value has the wrong type or range. */
int json_get_bool(const json_t *obj, const char *key, int *out, struct error *err);
/* An integer (a real with an integral value is accepted) in [lo, hi]. */
int json_get_int(const json_t *obj, const char *key, int64_t lo, int64_t hi, int64_t *out,
                 struct error *err);
/* A number in [lo, hi]. */
int json_get_num(const json_t *obj, const char *key, double lo, double hi, double *out,
                 struct error *err);
/* A string; *out borrows the value (valid while obj holds it); *len may be NULL. */
int json_get_str(const json_t *obj, const char *key, const char **out, size_t *len,
                 struct error *err);

/* A JSON string from possibly invalid UTF-8 (repaired); NULL only on allocation failure. */
json_t *json_str_lossy(const char *s, size_t n);

/* Compact one-line serialisation appended to out (0, or ERR_NOMEM). */
int json_dump_to(const json_t *v, struct buf *out);
/* Serialisation with jansson flags (0: json.dumps-style ", " and ": " separators) as a
 * NUL-terminated string the caller frees with mem_free; NULL when out of memory. Use this, not
 * json_dumps, whose result belongs to jansson's allocator. */
char *json_dump_str(const json_t *v, size_t flags);

#endif
