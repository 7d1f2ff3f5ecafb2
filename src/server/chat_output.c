/* chat_output.c: see chat_output.h.
 *
 * A three-state machine over the undecided bytes (pend): content, reasoning, inside a tool
 * call. In content and reasoning the bytes before a marker are decided at once, except a tail
 * that is a proper prefix of the marker being looked for; inside a call everything waits for
 * the closing marker, because a call is only useful whole (its name first, its arguments
 * complete). Trailing whitespace of a part is held (ws) and only committed when more text of the
 * same part follows, so "answer\n\n<tool_call>" yields "answer" in both streaming and one-shot
 * use.
 */
#include "chat_output.h"

#include "../base/mem.h"

#include "json.h"

#include <string.h>

static const char THINK_OPEN[] = "<think>", THINK_CLOSE[] = "</think>";
static const char CALL_OPEN[] = "<tool_call>", CALL_CLOSE[] = "</tool_call>";

static int is_space(char c) {
    return c == ' ' || c == '\n' || c == '\t' || c == '\r';
}

void chat_out_init(struct chat_out *o, int parse_tools, int reasoning_open) {
    memset(o, 0, sizeof(*o));
    buf_init(&o->content);
    buf_init(&o->reasoning);
    buf_init(&o->pend);
    buf_init(&o->ws);
    o->parse_tools = parse_tools;
    o->mode = reasoning_open ? CHAT_OUT_REASONING : CHAT_OUT_CONTENT;
    o->seen_text = reasoning_open;
}

void chat_out_free(struct chat_out *o) {
    buf_free(&o->content);
    buf_free(&o->reasoning);
    buf_free(&o->pend);
    buf_free(&o->ws);
    for (int i = 0; i < o->n_calls; i++) {
        mem_free(o->calls[i].name);
        mem_free(o->calls[i].args);
    }
    mem_free(o->calls);
    memset(o, 0, sizeof(*o));
}

/* Appends s to a part: leading whitespace of the part is dropped, trailing whitespace held. */
static void part_append(struct chat_out *o, struct buf *part, const char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        size_t j = i;
        while (j < n && is_space(s[j])) j++;
        if (j > i && part->len) buf_append(&o->ws, s + i, j - i);
        if (j == n) break;
        size_t k = j;
        while (k < n && !is_space(s[k])) k++;
        if (o->ws.len) {
            buf_append(part, o->ws.data, o->ws.len);
            buf_clear(&o->ws);
        }
        buf_append(part, s + j, k - j);
        i = k;
    }
}

static void consume(struct chat_out *o, size_t n) {
    memmove(o->pend.data, o->pend.data + n, o->pend.len - n);
    o->pend.len -= n;
    if (o->pend.data) o->pend.data[o->pend.len] = 0;
}

/* Longest k < strlen(tag) such that s ends with the first k bytes of tag. */
static size_t partial_suffix(const char *s, size_t n, const char *tag) {
    size_t lt = strlen(tag), k = lt - 1 < n ? lt - 1 : n;
    for (; k > 0; k--)
        if (memcmp(s + n - k, tag, k) == 0) return k;
    return 0;
}

/* ---- tool calls ---- */

static void trim(const char **s, size_t *n) {
    while (*n && is_space(**s)) (*s)++, (*n)--;
    while (*n && is_space((*s)[*n - 1])) (*n)--;
}

static int add_call(struct chat_out *o, const char *name, size_t name_len, json_t *args) {
    if (o->n_calls == o->cap_calls) {
        int cap = o->cap_calls ? 2 * o->cap_calls : 4;
        struct chat_out_call *v = mem_realloc(o->calls, (size_t)cap * sizeof(*v));
        if (!v) {
            o->failed = 1;
            return -1;
        }
        o->calls = v;
        o->cap_calls = cap;
    }
    char *a = json_dump_str(args, JSON_COMPACT);
    char *nm = mem_strndup(name, name_len);
    if (!a || !nm) {
        mem_free(a);
        mem_free(nm);
        o->failed = 1;
        return -1;
    }
    o->calls[o->n_calls].name = nm;
    o->calls[o->n_calls].args = a;
    o->n_calls++;
    return 0;
}

/* {"name": "f", "arguments": {...}} (arguments may also be a JSON string of an object). */
static int parse_json_call(struct chat_out *o, const char *s, size_t n) {
    json_t *v = json_loadb(s, n, 0, NULL);
    const json_t *name = json_object_get(v, "name");
    json_t *args = json_object_get(v, "arguments");
    if (!args) args = json_object_get(v, "parameters");
    json_t *parsed = NULL;
    if (json_is_string(args)) args = parsed = json_loads(json_string_value(args), 0, NULL);
    int rc = -1;
    if (json_is_string(name) && json_string_length(name) && (!args || json_is_object(args))) {
        json_t *empty = args ? NULL : json_object();
        rc = add_call(o, json_string_value(name), json_string_length(name), args ? args : empty);
        json_decref(empty);
    }
    json_decref(parsed);
    json_decref(v);
    return rc;
}

/* <function=NAME><parameter=KEY>\nVALUE\n</parameter>...</function>: a value that reads as a
 * non-string JSON value (number, boolean, null, array, object) is taken as one, anything else
 * is a string. */
static int parse_xml_call(struct chat_out *o, const char *s, size_t n) {
    static const char FN[] = "<function=", PARAM[] = "<parameter=", PEND[] = "</parameter>";
    if (n < sizeof(FN) - 1 || memcmp(s, FN, sizeof(FN) - 1)) return -1;
    const char *end = s + n, *p = s + sizeof(FN) - 1;
    const char *gt = memchr(p, '>', (size_t)(end - p));
    if (!gt || gt == p) return -1;
    const char *name = p;
    size_t name_len = (size_t)(gt - p);
    json_t *args = json_object();
    if (!args) return -1;
    p = gt + 1;
    int rc = 0;
    for (;;) {
        while (p < end && is_space(*p)) p++;
        if (p == end || (size_t)(end - p) < sizeof(PARAM) - 1 ||
            memcmp(p, PARAM, sizeof(PARAM) - 1))
            break;
        p += sizeof(PARAM) - 1;
        const char *kgt = memchr(p, '>', (size_t)(end - p));
        if (!kgt) {
            rc = -1;
            break;
        }
        char *key = mem_strndup(p, (size_t)(kgt - p));
        const char *v = kgt + 1;
        const char *ve = memmem(v, (size_t)(end - v), PEND, sizeof(PEND) - 1);
        const char *next = ve ? ve + sizeof(PEND) - 1 : end;
        if (!ve) ve = end; /* tolerate a missing close at the end of the text */
        if (v < ve && *v == '\n') v++;
        if (ve > v && ve[-1] == '\n') ve--;
        json_t *val = json_loadb(v, (size_t)(ve - v), JSON_DECODE_ANY, NULL);
        if (!val || json_is_string(val)) {
            json_decref(val);
            val = json_stringn(v, (size_t)(ve - v));
        }
        if (!key || !val || json_object_set_new(args, key, val)) rc = -1;
        mem_free(key);
        if (rc) break;
        p = next;
    }
    if (!rc) {
        while (p < end && is_space(*p)) p++;
        static const char FEND[] = "</function>";
        if (p < end && ((size_t)(end - p) < sizeof(FEND) - 1 || memcmp(p, FEND, sizeof(FEND) - 1)))
            rc = -1;
    }
    if (!rc) rc = add_call(o, name, name_len, args);
    json_decref(args);
    return rc;
}

static void handle_call(struct chat_out *o, const char *body, size_t n, int closed) {
    const char *s = body;
    size_t m = n;
    trim(&s, &m);
    int rc = -1;
    if (m && *s == '{')
        rc = parse_json_call(o, s, m);
    else if (m)
        rc = parse_xml_call(o, s, m);
    if (rc == 0) return;
    /* not a call after all: the raw text is content */
    part_append(o, &o->content, CALL_OPEN, sizeof(CALL_OPEN) - 1);
    part_append(o, &o->content, body, n);
    if (closed) part_append(o, &o->content, CALL_CLOSE, sizeof(CALL_CLOSE) - 1);
}

/* ---- the state machine ---- */

static void process(struct chat_out *o, int final) {
    for (;;) {
        const char *p = o->pend.data;
        size_t n = o->pend.len;
        if (n == 0) return;
        if (o->mode == CHAT_OUT_CONTENT) {
            if (!o->seen_text) { /* a leading <think> opens reasoning */
                size_t i = 0, lt = sizeof(THINK_OPEN) - 1;
                while (i < n && is_space(p[i])) i++;
                if (i == n && !final) return;
                size_t rem = n - i;
                if (rem < lt && !memcmp(p + i, THINK_OPEN, rem) && !final) return;
                o->seen_text = 1;
                if (rem >= lt && !memcmp(p + i, THINK_OPEN, lt)) {
                    consume(o, i + lt);
                    o->mode = CHAT_OUT_REASONING;
                    continue;
                }
            }
            const char *m = o->parse_tools ? memmem(p, n, CALL_OPEN, sizeof(CALL_OPEN) - 1) : NULL;
            if (m) {
                part_append(o, &o->content, p, (size_t)(m - p));
                consume(o, (size_t)(m - p) + sizeof(CALL_OPEN) - 1);
                buf_clear(&o->ws);
                o->mode = CHAT_OUT_TOOL;
                continue;
            }
            size_t hold = final || !o->parse_tools ? 0 : partial_suffix(p, n, CALL_OPEN);
            part_append(o, &o->content, p, n - hold);
            consume(o, n - hold);
            return;
        }
        if (o->mode == CHAT_OUT_REASONING) {
            const char *m = memmem(p, n, THINK_CLOSE, sizeof(THINK_CLOSE) - 1);
            if (m) {
                part_append(o, &o->reasoning, p, (size_t)(m - p));
                consume(o, (size_t)(m - p) + sizeof(THINK_CLOSE) - 1);
                buf_clear(&o->ws);
                o->mode = CHAT_OUT_CONTENT;
                o->seen_text = 1;
                continue;
            }
            size_t hold = final ? 0 : partial_suffix(p, n, THINK_CLOSE);
            part_append(o, &o->reasoning, p, n - hold);
            consume(o, n - hold);
            return;
        }
        /* inside a tool call */
        const char *m = memmem(p, n, CALL_CLOSE, sizeof(CALL_CLOSE) - 1);
        if (m) {
            handle_call(o, p, (size_t)(m - p), 1);
            consume(o, (size_t)(m - p) + sizeof(CALL_CLOSE) - 1);
            o->mode = CHAT_OUT_CONTENT;
            continue;
        }
        if (!final) return;
        handle_call(o, p, n, 0);
        consume(o, n);
        o->mode = CHAT_OUT_CONTENT;
        return;
    }
}

void chat_out_feed(struct chat_out *o, const char *s, size_t n) {
    buf_append(&o->pend, s, n);
    process(o, 0);
    if (o->pend.failed || o->content.failed || o->reasoning.failed || o->ws.failed) o->failed = 1;
}

void chat_out_finish(struct chat_out *o) {
    process(o, 1);
    buf_clear(&o->ws);
    if (o->pend.failed || o->content.failed || o->reasoning.failed) o->failed = 1;
}
