/* chat_template.h: a Jinja2 engine for chat templates (a GGUF's tokenizer.chat_template).
 *
 * Renders the Jinja2 that chat templates use, byte for byte like Python Jinja2 configured the
 * way Hugging Face transformers renders chat templates: ImmutableSandboxedEnvironment with
 * trim_blocks, lstrip_blocks and the loopcontrols extension, `tojson` = json.dumps(
 * ensure_ascii=False, indent, separators, sort_keys) (not Jinja's HTML-escaping one), and the
 * globals raise_exception(msg) and strftime_now(fmt). Values print like Python's str(): None,
 * True, 1.0, 1e-05, ['a', 1], {'k': 'v'}.
 *
 * Lifetimes: a parsed template is immutable; parse once, then render it from any number of
 * threads at once. Values (struct tpl_value) live in a struct tpl_arena: the caller builds the
 * context in an arena of its own (per request) and frees the whole arena after rendering;
 * everything a render creates lives in a private arena freed before the render returns.
 *
 * Not supported (render or parse error): template inheritance, include and import (there is no
 * loader), autoescape true, the `do` extension, \N{NAME} escapes, Python integers beyond int64.
 * Known differences that need odd templates to show: upper/lower/title map ASCII, Latin, Greek
 * and Cyrillic letters only; results of map/select/... behave like Jinja's generators (always
 * true, no len) but are not consumed by use and fail early on a non-iterable; dict.items() and
 * friends print as lists. Rendering is bounded: output size, memory, steps and nesting depth
 * all have limits, so a hostile template fails instead of hanging.
 */
#ifndef HEARTH_CHAT_TEMPLATE_H
#define HEARTH_CHAT_TEMPLATE_H

#include <stddef.h>
#include <stdint.h>

#include "../base/buf.h"
#include "../base/error.h"

struct chat_template;
struct tpl_arena;
struct tpl_value;

/* ---- values ------------------------------------------------------------------------------ */

/* An arena that owns values. max_bytes bounds what it may allocate (0: no bound); past it every
 * constructor returns NULL and the arena reports failed. Free with tpl_arena_free. */
struct tpl_arena *tpl_arena_create(size_t max_bytes);
void tpl_arena_free(struct tpl_arena *a);        /* a may be NULL; frees every value built in it */
int tpl_arena_failed(const struct tpl_arena *a); /* 1 after any failed allocation */

/* Constructors. None and booleans are static (no arena). The others return NULL when the arena
 * is out of memory; pushing or setting a NULL value then fails with ERR_NOMEM, so a builder may
 * check once at the end. Strings are copied and must be UTF-8 (invalid bytes are kept and
 * treated as one character each). */
struct tpl_value *tpl_value_none(void);
struct tpl_value *tpl_value_bool(int b);
struct tpl_value *tpl_value_int(struct tpl_arena *a, int64_t v);
struct tpl_value *tpl_value_float(struct tpl_arena *a, double v);
struct tpl_value *tpl_value_string(struct tpl_arena *a, const char *s, size_t n);
struct tpl_value *tpl_value_array(struct tpl_arena *a);
struct tpl_value *tpl_value_object(struct tpl_arena *a); /* keeps insertion order */

/* Appends v to the array arr (both from arena a, or v static). 0 or ERR_NOMEM/ERR_INVALID. */
int tpl_array_push(struct tpl_arena *a, struct tpl_value *arr, struct tpl_value *v);
/* Sets obj[key] = v; a new key goes last, an existing key keeps its place (Python dict). */
int tpl_object_set(struct tpl_arena *a, struct tpl_value *obj, const char *key, size_t key_len,
                   struct tpl_value *v);
/* obj[key], or NULL when obj is not an object or lacks the key. Valid while the arena lives. */
const struct tpl_value *tpl_object_get(const struct tpl_value *obj, const char *key,
                                       size_t key_len);

/* Appends json.dumps(v, ensure_ascii=False) to out. ERR_INVALID for a value JSON cannot hold,
 * ERR_RANGE when nested too deeply. */
int tpl_value_to_json(const struct tpl_value *v, struct buf *out, struct error *err);

/* ---- templates --------------------------------------------------------------------------- */

/* Parses template source (UTF-8, len bytes). On success *out owns the template (free with
 * chat_template_free). ERR_FORMAT with "line L:C: ..." for a syntax error, ERR_NOMEM. */
int chat_template_parse(struct chat_template **out, const char *src, size_t len, struct error *err);
void chat_template_free(struct chat_template *t); /* t may be NULL */

/* Limits and inputs of one render; a zero field takes the default. */
struct chat_template_opts {
    size_t max_output_bytes; /* bytes of output, and of any captured block; default 32 MiB */
    size_t max_memory_bytes; /* the render's own arena; default 256 MiB */
    uint64_t max_steps;      /* statements + loop iterations + calls; default 10 000 000 */
    int64_t now_unix;        /* the time strftime_now formats (local time); default: now */
};

/* Renders t with the variables of context (an object: messages, tools, add_generation_prompt,
 * bos_token, ... ; NULL for none) and appends the text to out. On failure out is left as it
 * was and the code is: ERR_INVALID for a template error (raise_exception: err->msg is exactly
 * the template's message; otherwise "line N: ..." like Jinja's TypeError/UndefinedError),
 * ERR_RANGE for an exceeded limit, ERR_UNSUPPORTED for a feature this engine lacks, ERR_NOMEM.
 * Thread-safe for one template from many threads. */
int chat_template_render(const struct chat_template *t, const struct tpl_value *context,
                         struct buf *out, struct error *err);
int chat_template_render_opts(const struct chat_template *t, const struct tpl_value *context,
                              const struct chat_template_opts *opts, struct buf *out,
                              struct error *err);

#endif
