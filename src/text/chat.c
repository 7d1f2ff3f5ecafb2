/* chat.c: the incremental parser of Qwen-family output (see chat.h).
 *
 * Bytes flow through three stages: UTF-8 repair (complete characters only, invalid bytes become
 * U+FFFD), a per-byte state machine (content, reasoning, tool calls), and the output channels,
 * which trim blank space and record deltas. Every decision depends only on the bytes seen, never
 * on where a piece ended: whatever may still change meaning (a possible tag, trailing blanks, a
 * JSON prefix that is not yet safe to close) is held in a buffer until a later byte or the end
 * decides it. That is what makes streamed and one-shot parses agree.
 */
#include "chat.h"

#include "../base/buf.h"
#include "../base/mem.h"
#include "json_schema.h"
#include "jval.h"

#include <string.h>

/* ============================================================================================
 * Output: channels, deltas, the message
 *
 * Content and reasoning each keep their blank space back until non-blank text follows, so
 * leading and trailing blanks (the "\n\n" around </think> and before <tool_call>) never reach
 * the client, while blanks inside the text do. Deltas of one feed share one byte buffer; they
 * are stored as offsets and turned into pointers when the feed returns.
 * ============================================================================================ */

enum channel { CH_CONTENT = 0, CH_REASONING = 1 };

struct delta_rec {
    enum chat_delta_type type;
    int tool_index;
    size_t off, len; /* text in p->dbuf */
    size_t id_off;   /* TOOL_CALL: NUL-terminated id in p->dbuf */
};

struct call {
    char id[32];
    struct buf name;
    struct buf args;
};

enum pstate {
    S_CONTENT,
    S_REASONING,
    S_TC_OPEN,   /* after <tool_call>: blanks, a code fence, then { or <function= */
    S_TC_FENCE,  /* inside a ``` fence line */
    S_JSON,      /* the {"name", "arguments"} object */
    S_XML_FNAME, /* after <function= */
    S_XML_BODY,  /* between parameters */
    S_XML_PNAME, /* after <parameter= */
    S_XML_VALUE,
    S_XML_VFEND, /* saw </function> inside a value: is </tool_call> next? */
    S_TC_SKIP,   /* after a call: drop text until </tool_call> */
    S_BARE_AFTER /* after a bare <function=...></function>: optional </tool_call> */
};

/* JSON scanner (one value, fed byte by byte) */
#define JSCAN_MAX_DEPTH 128
enum js_state {
    JS_VALUE,
    JS_STR,
    JS_STR_ESC,
    JS_STR_U,
    JS_NUM_MINUS,
    JS_NUM_ZERO,
    JS_NUM_INT,
    JS_NUM_DOT,
    JS_NUM_FRAC,
    JS_NUM_E,
    JS_NUM_ESIGN,
    JS_NUM_EXP,
    JS_LIT,
    JS_AFTER,
    JS_OBJ_FIRST,
    JS_OBJ_KEY,
    JS_COLON,
    JS_ARR_FIRST,
    JS_DONE,
};
enum { JSR_MORE, JSR_DONE, JSR_DONE_BEFORE, JSR_ERROR };

struct jscan {
    enum js_state st;
    int in_key;                  /* JS_STR*: the string is an object key */
    int depth;                   /* open containers */
    char stack[JSCAN_MAX_DEPTH]; /* '{' or '[' per level */
    const char *lit;             /* JS_LIT: the literal, lit_pos bytes matched */
    int lit_pos;
    int u_left;           /* JS_STR_U: hex digits left */
    unsigned u_val, u_hi; /* \u value so far; pending high surrogate (0: none) */
    int u8_left;          /* UTF-8 continuation bytes expected inside a string */
    struct buf *capture;  /* decoded text of a top-level string value, or NULL */
};

/* JSON tool-call object */
enum jo_state { JO_FIRST, JO_KEY, JO_COLON, JO_VALUE_START, JO_VALUE, JO_NEXT, JO_KEYSTART };
enum jo_target { JT_SKIP, JT_NAME, JT_ARGS };

#define HOLD_MAX 32

struct chat_parser {
    struct chat_parser_params p;
    struct jval *tools; /* parsed tools_json, or NULL */
    int finished;
    /* UTF-8 repair */
    unsigned char u8[4];
    int u8_n, u8_need;
    /* state machine */
    enum pstate st;
    char hold[HOLD_MAX]; /* bytes that are a proper prefix of a marker of the state */
    int hold_n;
    size_t hold_start;   /* S_TC_OPEN: where the held "<" is in raw */
    enum channel ret_ch; /* channel a failed tool call falls back to */
    struct buf raw;      /* text since <tool_call> (or <function=) while not committed */
    int committed;       /* the current call has been announced */
    int bare;            /* the current call started with <function= (no <tool_call>) */
    int call_index;      /* index of the current call */
    /* JSON calls */
    enum jo_state jo;
    enum jo_target jt;
    struct jscan key_scan, val_scan;
    struct buf key, name;
    int args_started, args_done, args_string;
    struct buf args_hold;    /* argument bytes not yet safe to emit */
    struct buf args_early;   /* safe argument bytes seen before the name */
    struct buf args_closer;  /* what closes the arguments emitted so far */
    int args_emitted;        /* some argument bytes were released */
    struct buf args_decoded; /* string-encoded arguments, decoded */
    /* XML calls */
    struct buf pname;               /* parameter name */
    int n_params;                   /* parameters written */
    int value_stream;               /* the value is a string streamed as it comes */
    int value_first;                /* no value byte seen yet (the leading newline is dropped) */
    int value_nl;                   /* a newline is held (it is dropped if it is the last one) */
    unsigned value_types;           /* JSON_SCHEMA_T_* of the parameter, 0: unknown */
    struct buf value;               /* held value text (typed values) */
    struct buf fend;                /* "</function>" and blanks inside a value */
    const struct jval *tool_params; /* the current tool's parameters schema, or NULL */
    /* output */
    struct buf ws[2];
    int started[2];
    struct buf msg_text[2]; /* content, reasoning */
    struct call *calls;
    int n_calls, cap_calls;
    struct buf dbuf;
    struct delta_rec *drec;
    int n_drec, cap_drec;
    struct chat_delta *deltas;
    int cap_deltas;
    struct chat_message view;
    struct chat_tool_call *view_calls;
    int oom;
};

static int is_blank(unsigned char b) {
    return b == ' ' || b == '\n' || b == '\r' || b == '\t';
}

static void delta_add(struct chat_parser *p, enum chat_delta_type type, int index, const char *text,
                      size_t len) {
    if (len == 0 && type != CHAT_DELTA_TOOL_CALL) return;
    struct delta_rec *last = p->n_drec ? &p->drec[p->n_drec - 1] : NULL;
    if (type != CHAT_DELTA_TOOL_CALL && last && last->type == type && last->tool_index == index &&
        last->off + last->len == p->dbuf.len) {
        buf_append(&p->dbuf, text, len);
        last->len += len;
        return;
    }
    if (p->n_drec == p->cap_drec) {
        int ncap = p->cap_drec ? p->cap_drec * 2 : 16;
        struct delta_rec *d = mem_realloc(p->drec, (size_t)ncap * sizeof(*d));
        if (!d) {
            p->oom = 1;
            return;
        }
        p->drec = d;
        p->cap_drec = ncap;
    }
    struct delta_rec *d = &p->drec[p->n_drec++];
    d->type = type;
    d->tool_index = index;
    d->off = p->dbuf.len;
    d->len = len;
    d->id_off = 0;
    buf_append(&p->dbuf, text, len);
    if (type == CHAT_DELTA_TOOL_CALL) {
        buf_append_char(&p->dbuf, 0);
        d->id_off = p->dbuf.len;
        buf_append_str(&p->dbuf, p->calls[index].id);
        buf_append_char(&p->dbuf, 0);
    }
}

static void channel_raw(struct chat_parser *p, enum channel ch, const char *s, size_t n) {
    buf_append(&p->msg_text[ch], s, n);
    delta_add(p, ch == CH_CONTENT ? CHAT_DELTA_CONTENT : CHAT_DELTA_REASONING, -1, s, n);
}

/* Text for a channel, with blank space held back (see the banner). */
static void channel_text(struct chat_parser *p, enum channel ch, const char *s, size_t n) {
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        if (!is_blank((unsigned char)s[i])) continue;
        if (i > run) {
            if (p->started[ch] && p->ws[ch].len) channel_raw(p, ch, p->ws[ch].data, p->ws[ch].len);
            buf_clear(&p->ws[ch]);
            channel_raw(p, ch, s + run, i - run);
            p->started[ch] = 1;
        }
        buf_append_char(&p->ws[ch], s[i]);
        run = i + 1;
    }
    if (n > run) {
        if (p->started[ch] && p->ws[ch].len) channel_raw(p, ch, p->ws[ch].data, p->ws[ch].len);
        buf_clear(&p->ws[ch]);
        channel_raw(p, ch, s + run, n - run);
        p->started[ch] = 1;
    }
}

static void channel_cut(struct chat_parser *p, enum channel ch) { /* drops held blanks */
    buf_clear(&p->ws[ch]);
}

static void make_id(uint64_t seed, int index, char out[32]) {
    static const char alnum[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    uint64_t x = seed ^ (0x9e3779b97f4a7c15ULL * (uint64_t)(index + 1));
    memcpy(out, "call_", 5);
    for (int i = 0; i < 24; i++) {
        x += 0x9e3779b97f4a7c15ULL;
        uint64_t z = x;
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        z ^= z >> 31;
        out[5 + i] = alnum[z % 62];
    }
    out[29] = 0;
}

/* Announces a call: its index, id and name. -1 when out of memory (p->oom is set). */
static int call_begin(struct chat_parser *p, const char *name, size_t len) {
    if (p->n_calls == p->cap_calls) {
        int ncap = p->cap_calls ? p->cap_calls * 2 : 4;
        struct call *c = mem_realloc(p->calls, (size_t)ncap * sizeof(*c));
        if (!c) {
            p->oom = 1;
            return -1;
        }
        p->calls = c;
        p->cap_calls = ncap;
    }
    struct call *c = &p->calls[p->n_calls];
    memset(c, 0, sizeof(*c));
    make_id(p->p.id_seed, p->n_calls, c->id);
    buf_append(&c->name, name, len);
    p->call_index = p->n_calls++;
    p->committed = 1;
    channel_cut(p, CH_CONTENT);
    channel_cut(p, CH_REASONING);
    delta_add(p, CHAT_DELTA_TOOL_CALL, p->call_index, name, len);
    return 0;
}

static void call_args(struct chat_parser *p, const char *s, size_t n) {
    if (!n || !p->committed || p->call_index >= p->n_calls) return;
    buf_append(&p->calls[p->call_index].args, s, n);
    delta_add(p, CHAT_DELTA_TOOL_ARGS, p->call_index, s, n);
}

/* JSON string escaping of raw text, without the quotes. */
static void escape_into(struct buf *out, const char *s, size_t n) {
    struct buf tmp;
    buf_init(&tmp);
    jval_write_string(s, n, &tmp);
    if (tmp.len >= 2) buf_append(out, tmp.data + 1, tmp.len - 2);
    if (tmp.failed) out->failed = 1;
    buf_free(&tmp);
}

/* ============================================================================================
 * JSON scanner
 *
 * Reads one JSON value a byte at a time and knows, after every byte, whether the text so far
 * can be closed by appending quotes and brackets only ("closable"). Arguments are released only
 * at such points, so a call cut short (or broken by a bad byte) is repaired by appending the
 * closer of the last released point. Raw control characters inside strings are tolerated (the
 * caller escapes them on output): models do write literal newlines into JSON strings.
 * ============================================================================================ */

static void jscan_init(struct jscan *j, struct buf *capture) {
    memset(j, 0, sizeof(*j));
    j->st = JS_VALUE;
    j->capture = capture;
}

static void capture_cp(struct jscan *j, unsigned cp) {
    if (!j->capture || j->depth != 0 || j->in_key) return;
    char t[4];
    size_t n;
    if (cp < 0x80) {
        t[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        t[0] = (char)(0xC0 | (cp >> 6));
        t[1] = (char)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        t[0] = (char)(0xE0 | (cp >> 12));
        t[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        t[2] = (char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        t[0] = (char)(0xF0 | (cp >> 18));
        t[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        t[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        t[3] = (char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    buf_append(j->capture, t, n);
}

static void capture_byte(struct jscan *j, unsigned char b) {
    if (j->capture && j->depth == 0 && !j->in_key) buf_append_char(j->capture, (char)b);
}

static int jscan_value_done(struct jscan *j) {
    if (j->depth == 0) {
        j->st = JS_DONE;
        return JSR_DONE;
    }
    j->st = JS_AFTER;
    return JSR_MORE;
}

static int jscan_feed(struct jscan *j, unsigned char b);

static int jscan_number_end(struct jscan *j, unsigned char b) {
    if (j->depth == 0) {
        j->st = JS_DONE;
        return JSR_DONE_BEFORE;
    }
    j->st = JS_AFTER;
    return jscan_feed(j, b);
}

static int hexval(unsigned char b) {
    if (b >= '0' && b <= '9') return b - '0';
    if (b >= 'a' && b <= 'f') return b - 'a' + 10;
    if (b >= 'A' && b <= 'F') return b - 'A' + 10;
    return -1;
}

static int jscan_feed(struct jscan *j, unsigned char b) {
    switch (j->st) {
    case JS_VALUE:
        if (is_blank(b)) return JSR_MORE;
        if (b == '{' || b == '[') {
            if (j->depth >= JSCAN_MAX_DEPTH) return JSR_ERROR;
            j->stack[j->depth++] = (char)b;
            j->st = b == '{' ? JS_OBJ_FIRST : JS_ARR_FIRST;
            return JSR_MORE;
        }
        if (b == '"') {
            j->st = JS_STR;
            j->in_key = 0;
            return JSR_MORE;
        }
        if (b == '-') {
            j->st = JS_NUM_MINUS;
            return JSR_MORE;
        }
        if (b == '0') {
            j->st = JS_NUM_ZERO;
            return JSR_MORE;
        }
        if (b >= '1' && b <= '9') {
            j->st = JS_NUM_INT;
            return JSR_MORE;
        }
        if (b == 't' || b == 'f' || b == 'n') {
            j->lit = b == 't' ? "true" : b == 'f' ? "false" : "null";
            j->lit_pos = 1;
            j->st = JS_LIT;
            return JSR_MORE;
        }
        return JSR_ERROR;
    case JS_STR:
        if (j->u8_left > 0) {
            if ((b & 0xC0) != 0x80) return JSR_ERROR;
            j->u8_left--;
            capture_byte(j, b);
            return JSR_MORE;
        }
        if (b == '"') {
            if (j->in_key) {
                j->in_key = 0;
                j->st = JS_COLON;
                return JSR_MORE;
            }
            return jscan_value_done(j);
        }
        if (b == '\\') {
            j->st = JS_STR_ESC;
            return JSR_MORE;
        }
        if (b >= 0x80) j->u8_left = b >= 0xF0 ? 3 : b >= 0xE0 ? 2 : 1;
        capture_byte(j, b);
        return JSR_MORE;
    case JS_STR_ESC: {
        static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
        const char *e = b ? strchr(from, b) : NULL;
        if (e) {
            if (j->u_hi) capture_cp(j, 0xFFFD);
            j->u_hi = 0;
            capture_byte(j, (unsigned char)to[e - from]);
            j->st = JS_STR;
            return JSR_MORE;
        }
        if (b != 'u') return JSR_ERROR;
        j->st = JS_STR_U;
        j->u_left = 4;
        j->u_val = 0;
        return JSR_MORE;
    }
    case JS_STR_U: {
        int h = hexval(b);
        if (h < 0) return JSR_ERROR;
        j->u_val = j->u_val << 4 | (unsigned)h;
        if (--j->u_left > 0) return JSR_MORE;
        unsigned cp = j->u_val;
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (j->u_hi) capture_cp(j, 0xFFFD);
            j->u_hi = cp;
        } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
            capture_cp(j, j->u_hi ? 0x10000 + ((j->u_hi - 0xD800) << 10) + (cp - 0xDC00) : 0xFFFD);
            j->u_hi = 0;
        } else {
            if (j->u_hi) capture_cp(j, 0xFFFD);
            j->u_hi = 0;
            capture_cp(j, cp);
        }
        j->st = JS_STR;
        return JSR_MORE;
    }
    case JS_NUM_MINUS:
        if (b == '0')
            j->st = JS_NUM_ZERO;
        else if (b >= '1' && b <= '9')
            j->st = JS_NUM_INT;
        else
            return JSR_ERROR;
        return JSR_MORE;
    case JS_NUM_ZERO:
    case JS_NUM_INT:
        if (j->st == JS_NUM_INT && b >= '0' && b <= '9') return JSR_MORE;
        if (b == '.') {
            j->st = JS_NUM_DOT;
            return JSR_MORE;
        }
        if (b == 'e' || b == 'E') {
            j->st = JS_NUM_E;
            return JSR_MORE;
        }
        return jscan_number_end(j, b);
    case JS_NUM_DOT:
        if (b < '0' || b > '9') return JSR_ERROR;
        j->st = JS_NUM_FRAC;
        return JSR_MORE;
    case JS_NUM_FRAC:
        if (b >= '0' && b <= '9') return JSR_MORE;
        if (b == 'e' || b == 'E') {
            j->st = JS_NUM_E;
            return JSR_MORE;
        }
        return jscan_number_end(j, b);
    case JS_NUM_E:
        if (b == '+' || b == '-') {
            j->st = JS_NUM_ESIGN;
            return JSR_MORE;
        }
        /* fall through */
    case JS_NUM_ESIGN:
        if (b < '0' || b > '9') return JSR_ERROR;
        j->st = JS_NUM_EXP;
        return JSR_MORE;
    case JS_NUM_EXP:
        if (b >= '0' && b <= '9') return JSR_MORE;
        return jscan_number_end(j, b);
    case JS_LIT:
        if (b != (unsigned char)j->lit[j->lit_pos]) return JSR_ERROR;
        if (j->lit[++j->lit_pos] == 0) return jscan_value_done(j);
        return JSR_MORE;
    case JS_AFTER:
        if (is_blank(b)) return JSR_MORE;
        if (b == ',') {
            j->st = j->stack[j->depth - 1] == '{' ? JS_OBJ_KEY : JS_VALUE;
            return JSR_MORE;
        }
        if ((b == '}' && j->stack[j->depth - 1] == '{') ||
            (b == ']' && j->stack[j->depth - 1] == '[')) {
            j->depth--;
            return jscan_value_done(j);
        }
        return JSR_ERROR;
    case JS_OBJ_FIRST:
    case JS_OBJ_KEY:
        if (is_blank(b)) return JSR_MORE;
        if (b == '"') {
            j->st = JS_STR;
            j->in_key = 1;
            return JSR_MORE;
        }
        if (b == '}' && j->st == JS_OBJ_FIRST) {
            j->depth--;
            return jscan_value_done(j);
        }
        return JSR_ERROR;
    case JS_COLON:
        if (is_blank(b)) return JSR_MORE;
        if (b != ':') return JSR_ERROR;
        j->st = JS_VALUE;
        return JSR_MORE;
    case JS_ARR_FIRST:
        if (is_blank(b)) return JSR_MORE;
        if (b == ']') {
            j->depth--;
            return jscan_value_done(j);
        }
        j->st = JS_VALUE;
        return jscan_feed(j, b);
    case JS_DONE:
        return JSR_DONE_BEFORE;
    }
    return JSR_ERROR;
}

static int jscan_in_string(const struct jscan *j) {
    return j->st == JS_STR || j->st == JS_STR_ESC || j->st == JS_STR_U;
}

static int jscan_closable(const struct jscan *j) {
    switch (j->st) {
    case JS_STR:
        return !j->in_key && j->u8_left == 0;
    case JS_NUM_ZERO:
    case JS_NUM_INT:
    case JS_NUM_FRAC:
    case JS_NUM_EXP:
    case JS_AFTER:
    case JS_OBJ_FIRST:
    case JS_ARR_FIRST:
    case JS_DONE:
        return 1;
    default:
        return 0;
    }
}

static void jscan_closer(const struct jscan *j, struct buf *out) {
    buf_clear(out);
    if (j->st == JS_STR) buf_append_char(out, '"');
    for (int i = j->depth - 1; i >= 0; i--) buf_append_char(out, j->stack[i] == '{' ? '}' : ']');
}

/* ============================================================================================
 * Tools: finding a tool's parameter schema and the types of a parameter
 * ============================================================================================ */

static const struct jval *tool_params_for(const struct chat_parser *p, const char *name) {
    const struct jval *tools = p->tools;
    if (!tools || tools->type != JVAL_ARRAY) return NULL;
    for (size_t i = 0; i < tools->n; i++) {
        const struct jval *t = &tools->items[i];
        const struct jval *fn = jval_get(t, "function");
        if (!fn) fn = t;
        const char *n = jval_get_str(fn, "name");
        if (n && strcmp(n, name) == 0) return jval_get(fn, "parameters");
    }
    return NULL;
}

/* ============================================================================================
 * The state machine
 *
 * Each state has a list of markers (tags). A byte that could start or continue one of them
 * goes to p->hold; when hold becomes a whole marker the state acts on it, when it can no longer
 * become one, its first byte is ordinary text and the rest is fed again. Tool calls are not
 * announced until their name is known; until then every byte is also kept in p->raw, and a call
 * that turns out unreadable is given back as text. Once announced, a call is always completed
 * (arguments closed), whatever follows.
 * ============================================================================================ */

enum marker {
    M_THINK,
    M_THINK_END,
    M_TOOL_CALL,
    M_TOOL_CALL_END,
    M_FUNCTION,
    M_FUNCTION_END,
    M_PARAMETER,
    M_PARAMETER_END,
};

static const char *const MARKER_TEXT[] = {
    "<think>",    "</think>",    "<tool_call>", "</tool_call>",
    "<function=", "</function>", "<parameter=", "</parameter>",
};

static int markers_of(const struct chat_parser *p, enum pstate st, enum marker *out) {
    int n = 0, tools = p->p.tool_format != CHAT_TOOL_FORMAT_NONE;
    int think = p->p.reasoning != CHAT_REASONING_NONE;
    switch (st) {
    case S_CONTENT:
        if (think) {
            out[n++] = M_THINK;
            out[n++] = M_THINK_END;
        }
        if (tools) {
            out[n++] = M_TOOL_CALL;
            out[n++] = M_TOOL_CALL_END;
            out[n++] = M_FUNCTION;
        }
        break;
    case S_REASONING:
        out[n++] = M_THINK_END;
        if (tools) out[n++] = M_TOOL_CALL;
        break;
    case S_XML_BODY:
        out[n++] = M_PARAMETER;
        out[n++] = M_FUNCTION_END;
        out[n++] = M_TOOL_CALL;
        out[n++] = M_TOOL_CALL_END;
        break;
    case S_XML_VALUE:
        out[n++] = M_PARAMETER_END;
        out[n++] = M_FUNCTION_END;
        break;
    case S_XML_VFEND:
    case S_BARE_AFTER:
        out[n++] = M_TOOL_CALL_END;
        break;
    case S_TC_SKIP:
        out[n++] = M_TOOL_CALL_END;
        out[n++] = M_TOOL_CALL;
        break;
    default:
        break;
    }
    return n;
}

static void step(struct chat_parser *p, unsigned char b);

static void feed_bytes(struct chat_parser *p, const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) step(p, (unsigned char)s[i]);
}

/* Gives an unannounced call back as text: raw[0..keep) becomes text of the channel it started
 * in, raw[keep..] is fed again after it (so a tag inside it can still be recognised). */
static void fallback(struct chat_parser *p, size_t keep) {
    char *rest = NULL;
    size_t n_rest = p->raw.len > keep ? p->raw.len - keep : 0;
    if (n_rest) {
        rest = mem_alloc(n_rest);
        if (!rest) {
            p->oom = 1;
            n_rest = 0;
        } else {
            memcpy(rest, p->raw.data + keep, n_rest);
        }
    }
    enum channel ch = p->ret_ch;
    if (keep > p->raw.len) keep = p->raw.len;
    if (keep) channel_text(p, ch, p->raw.data, keep);
    buf_clear(&p->raw);
    p->st = ch == CH_REASONING ? S_REASONING : S_CONTENT;
    p->hold_n = 0;
    if (n_rest) feed_bytes(p, rest, n_rest);
    mem_free(rest);
}

static void start_call(struct chat_parser *p, enum channel from, int bare) {
    p->ret_ch = from;
    p->committed = 0;
    p->bare = bare;
    buf_clear(&p->raw);
    buf_append_str(&p->raw, bare ? "<function=" : "<tool_call>");
    p->st = bare ? S_XML_FNAME : S_TC_OPEN;
    buf_clear(&p->name);
    p->tool_params = NULL;
}

/* ---- JSON calls ---- */

static void args_release(struct chat_parser *p, const char *s, size_t n) {
    if (!n) return;
    p->args_emitted = 1;
    if (p->committed)
        call_args(p, s, n);
    else
        buf_append(&p->args_early, s, n);
}

static void json_reset(struct chat_parser *p) {
    p->jo = JO_FIRST;
    p->args_started = p->args_done = p->args_string = p->args_emitted = 0;
    buf_clear(&p->args_hold);
    buf_clear(&p->args_early);
    buf_clear(&p->args_closer);
    buf_clear(&p->args_decoded);
    buf_clear(&p->key);
}

/* Closes the arguments of a JSON call (complete, cut short or broken) and ends the call. */
static void json_finish_call(struct chat_parser *p) {
    if (p->args_started && !p->args_done) {
        if (p->args_string || !p->args_emitted)
            args_release(p, "{}", 2);
        else
            args_release(p, p->args_closer.data, p->args_closer.len);
    } else if (!p->args_started) {
        args_release(p, "{}", 2);
    }
    buf_clear(&p->args_hold);
}

static void json_commit(struct chat_parser *p) {
    if (call_begin(p, p->name.data ? p->name.data : "", p->name.len)) return;
    call_args(p, p->args_early.data, p->args_early.len);
    buf_clear(&p->args_early);
    buf_clear(&p->raw);
}

/* The arguments value is complete: release what is held. */
static void json_args_complete(struct chat_parser *p) {
    p->args_done = 1;
    if (p->args_string) {
        struct jval *v = NULL;
        if (jval_parse(&v, p->args_decoded.data, p->args_decoded.len, NULL) == 0)
            args_release(p, p->args_decoded.data, p->args_decoded.len);
        else
            args_release(p, p->args_hold.data, p->args_hold.len);
        jval_free(v);
    } else {
        args_release(p, p->args_hold.data, p->args_hold.len);
    }
    buf_clear(&p->args_hold);
}

/* One byte of the arguments value; returns the scanner's result. */
static int json_args_byte(struct chat_parser *p, unsigned char b) {
    int in_str = jscan_in_string(&p->val_scan);
    if (!p->args_started) {
        p->args_started = 1;
        p->args_string = b == '"';
        if (p->args_string) jscan_init(&p->val_scan, &p->args_decoded);
    }
    int r = jscan_feed(&p->val_scan, b);
    if (r == JSR_ERROR || r == JSR_DONE_BEFORE) return r;
    if (in_str && b < 0x20)
        escape_into(&p->args_hold, (const char *)&b, 1);
    else
        buf_append_char(&p->args_hold, (char)b);
    if (!p->args_string && jscan_closable(&p->val_scan)) {
        args_release(p, p->args_hold.data, p->args_hold.len);
        buf_clear(&p->args_hold);
        jscan_closer(&p->val_scan, &p->args_closer);
    }
    return r;
}

static void json_error(struct chat_parser *p, unsigned char b) {
    if (!p->committed) {
        fallback(p, p->raw.len - 1); /* the bad byte is fed again as text */
        return;
    }
    json_finish_call(p);
    p->st = S_TC_SKIP;
    p->hold_n = 0;
    step(p, b);
}

static void json_object_done(struct chat_parser *p) {
    if (!p->committed) {
        fallback(p, p->raw.len);
        return;
    }
    json_finish_call(p);
    p->st = S_TC_SKIP;
    p->hold_n = 0;
}

static void json_step(struct chat_parser *p, unsigned char b) {
    if (!p->committed) buf_append_char(&p->raw, (char)b);
    switch (p->jo) {
    case JO_FIRST:
    case JO_KEYSTART:
        if (is_blank(b)) return;
        if (b == '}' && p->jo == JO_FIRST) {
            json_object_done(p);
            return;
        }
        if (b != '"') break;
        buf_clear(&p->key);
        jscan_init(&p->key_scan, &p->key);
        jscan_feed(&p->key_scan, b);
        p->jo = JO_KEY;
        return;
    case JO_KEY: {
        int r = jscan_feed(&p->key_scan, b);
        if (r == JSR_ERROR) break;
        if (r == JSR_DONE) p->jo = JO_COLON;
        return;
    }
    case JO_COLON:
        if (is_blank(b)) return;
        if (b != ':') break;
        p->jo = JO_VALUE_START;
        return;
    case JO_VALUE_START: {
        if (is_blank(b)) return;
        const char *k = p->key.data ? p->key.data : "";
        int is_args =
            (strcmp(k, "arguments") == 0 || strcmp(k, "parameters") == 0) && !p->args_started;
        if (strcmp(k, "name") == 0 && !p->committed && b == '"') {
            buf_clear(&p->name);
            jscan_init(&p->val_scan, &p->name);
            p->jt = JT_NAME;
        } else if (is_args) {
            jscan_init(&p->val_scan, NULL);
            p->jt = JT_ARGS;
        } else {
            jscan_init(&p->val_scan, NULL);
            p->jt = JT_SKIP;
        }
        p->jo = JO_VALUE;
    }
        /* fall through */
    case JO_VALUE: {
        int r;
        if (p->jt == JT_ARGS) {
            r = json_args_byte(p, b);
            if (r == JSR_DONE || r == JSR_DONE_BEFORE) json_args_complete(p);
        } else {
            r = jscan_feed(&p->val_scan, b);
        }
        if (r == JSR_ERROR) break;
        if (r == JSR_MORE) return;
        if (p->jt == JT_NAME && !p->committed) {
            if (p->name.len) {
                json_commit(p);
            }
        }
        p->jo = JO_NEXT;
        if (r == JSR_DONE) return;
        if (!p->committed && p->raw.len) p->raw.len--; /* fed again below */
        json_step(p, b);
        return;
    }
    case JO_NEXT:
        if (is_blank(b)) return;
        if (b == ',') {
            p->jo = JO_KEYSTART;
            return;
        }
        if (b == '}') {
            json_object_done(p);
            return;
        }
        break;
    }
    /* a byte that does not fit: before the name, the call is text; after it, the arguments
     * end at their last safe point */
    json_error(p, b);
}

/* ---- XML calls ---- */

static void xml_commit(struct chat_parser *p) {
    /* trim the name */
    const char *s = p->name.data ? p->name.data : "";
    size_t a = 0, e = p->name.len;
    while (a < e && is_blank((unsigned char)s[a])) a++;
    while (e > a && is_blank((unsigned char)s[e - 1])) e--;
    buf_clear(&p->raw);
    p->n_params = 0;
    p->tool_params = NULL;
    if (call_begin(p, s + a, e - a)) return;
    const char *name = p->calls[p->call_index].name.data;
    p->tool_params = tool_params_for(p, name ? name : "");
}

static void xml_value_text(struct chat_parser *p, const char *s, size_t n) {
    if (p->value_stream) {
        struct buf t;
        buf_init(&t);
        escape_into(&t, s, n);
        call_args(p, t.data, t.len);
        buf_free(&t);
    } else {
        buf_append(&p->value, s, n);
    }
}

static void xml_value_byte(struct chat_parser *p, unsigned char b) {
    if (p->value_first) {
        p->value_first = 0;
        if (b == '\n') return;
    }
    if (p->value_nl) {
        p->value_nl = 0;
        xml_value_text(p, "\n", 1);
    }
    if (b == '\n') {
        p->value_nl = 1;
        return;
    }
    char c = (char)b;
    xml_value_text(p, &c, 1);
}

static void xml_param_begin(struct chat_parser *p) {
    const char *s = p->pname.data ? p->pname.data : "";
    size_t a = 0, e = p->pname.len;
    while (a < e && is_blank((unsigned char)s[a])) a++;
    while (e > a && is_blank((unsigned char)s[e - 1])) e--;
    struct buf t;
    buf_init(&t);
    buf_append_str(&t, p->n_params ? ", " : "{");
    jval_write_string(s + a, e - a, &t);
    buf_append_str(&t, ": ");
    char *key = mem_strndup(s + a, e - a);
    const struct jval *schema =
        key && p->tool_params ? json_schema_property(p->tool_params, p->tool_params, key) : NULL;
    mem_free(key);
    p->value_types = schema ? json_schema_types(p->tool_params, schema) : 0;
    p->value_stream = p->value_types == JSON_SCHEMA_T_STRING;
    if (p->value_stream) buf_append_char(&t, '"');
    call_args(p, t.data, t.len);
    buf_free(&t);
    p->n_params++;
    p->value_first = 1;
    p->value_nl = 0;
    buf_clear(&p->value);
    p->st = S_XML_VALUE;
}

/* Writes a held value as JSON: parsed when the schema allows its JSON type, else a string. */
static void xml_param_end(struct chat_parser *p) {
    p->value_nl = 0;
    if (p->value_stream) {
        call_args(p, "\"", 1);
        return;
    }
    const char *s = p->value.data ? p->value.data : "";
    size_t a = 0, e = p->value.len;
    while (a < e && is_blank((unsigned char)s[a])) a++;
    while (e > a && is_blank((unsigned char)s[e - 1])) e--;
    struct jval *v = NULL;
    int ok = e > a && jval_parse(&v, s + a, e - a, NULL) == 0;
    unsigned types = p->value_types, vt = 0;
    if (ok) {
        switch (v->type) {
        case JVAL_NULL:
            vt = JSON_SCHEMA_T_NULL;
            break;
        case JVAL_BOOL:
            vt = JSON_SCHEMA_T_BOOLEAN;
            break;
        case JVAL_NUMBER:
            vt =
                v->is_integer ? JSON_SCHEMA_T_INTEGER | JSON_SCHEMA_T_NUMBER : JSON_SCHEMA_T_NUMBER;
            break;
        case JVAL_STRING:
            vt = JSON_SCHEMA_T_STRING;
            break;
        case JVAL_ARRAY:
            vt = JSON_SCHEMA_T_ARRAY;
            break;
        case JVAL_OBJECT:
            vt = JSON_SCHEMA_T_OBJECT;
            break;
        }
    }
    jval_free(v);
    int as_json;
    if (types == 0) /* untyped: only objects and arrays are taken as JSON */
        as_json = ok && (vt & (JSON_SCHEMA_T_OBJECT | JSON_SCHEMA_T_ARRAY));
    else if (ok && (vt & types & ~(unsigned)JSON_SCHEMA_T_STRING))
        as_json = 1;
    else
        as_json = ok && !(types & JSON_SCHEMA_T_STRING);
    struct buf t;
    buf_init(&t);
    if (as_json)
        buf_append(&t, s + a, e - a);
    else
        jval_write_string(s, p->value.len, &t);
    call_args(p, t.data, t.len);
    buf_free(&t);
    buf_clear(&p->value);
}

static void xml_finish_call(struct chat_parser *p) {
    if (p->st == S_XML_VALUE || p->st == S_XML_VFEND) xml_param_end(p);
    call_args(p, p->n_params ? "}" : "{}", p->n_params ? 1 : 2);
}

/* ---- markers ---- */

static void on_marker(struct chat_parser *p, enum marker m) {
    switch (p->st) {
    case S_CONTENT:
        if (m == M_THINK) {
            channel_cut(p, CH_CONTENT);
            p->st = S_REASONING;
        } else if (m == M_TOOL_CALL) {
            start_call(p, CH_CONTENT, 0);
        } else if (m == M_FUNCTION) {
            start_call(p, CH_CONTENT, 1);
        }
        /* a stray </think> or </tool_call> is markup, not content: dropped */
        return;
    case S_REASONING:
        if (m == M_THINK_END) {
            channel_cut(p, CH_REASONING);
            p->st = S_CONTENT;
        } else {
            start_call(p, CH_REASONING, 0);
        }
        return;
    case S_XML_BODY:
        if (m == M_PARAMETER) {
            buf_clear(&p->pname);
            p->st = S_XML_PNAME;
            return;
        }
        xml_finish_call(p);
        if (m == M_FUNCTION_END)
            p->st = p->bare ? S_BARE_AFTER : S_TC_SKIP;
        else if (m == M_TOOL_CALL_END)
            p->st = S_CONTENT;
        else
            start_call(p, CH_CONTENT, 0);
        return;
    case S_XML_VALUE:
        if (m == M_PARAMETER_END) {
            xml_param_end(p);
            p->st = S_XML_BODY;
        } else {
            buf_clear(&p->fend);
            buf_append_str(&p->fend, MARKER_TEXT[M_FUNCTION_END]);
            p->st = S_XML_VFEND;
        }
        return;
    case S_XML_VFEND: /* </function> then </tool_call>: the value ended without </parameter> */
        xml_finish_call(p);
        p->st = S_CONTENT;
        return;
    case S_BARE_AFTER:
        p->st = S_CONTENT;
        return;
    case S_TC_SKIP:
        if (m == M_TOOL_CALL_END)
            p->st = S_CONTENT;
        else
            start_call(p, CH_CONTENT, 0);
        return;
    default:
        return;
    }
}

/* A byte that is not part of a marker. */
static void plain(struct chat_parser *p, unsigned char b) {
    char c = (char)b;
    switch (p->st) {
    case S_CONTENT:
        channel_text(p, CH_CONTENT, &c, 1);
        return;
    case S_REASONING:
        channel_text(p, CH_REASONING, &c, 1);
        return;
    case S_XML_VALUE:
        xml_value_byte(p, b);
        return;
    case S_XML_VFEND:
        if (is_blank(b)) {
            buf_append_char(&p->fend, c);
            return;
        }
        { /* not the end after all: the held text belongs to the value */
            struct buf f = p->fend;
            buf_init(&p->fend);
            p->st = S_XML_VALUE;
            for (size_t i = 0; i < f.len; i++) xml_value_byte(p, (unsigned char)f.data[i]);
            buf_free(&f);
            step(p, b);
        }
        return;
    case S_BARE_AFTER:
        if (is_blank(b)) return;
        p->st = S_CONTENT;
        step(p, b);
        return;
    default:
        return; /* S_XML_BODY, S_TC_SKIP: dropped */
    }
}

static void step_markers(struct chat_parser *p, unsigned char b) {
    enum marker ms[8];
    int n = markers_of(p, p->st, ms);
    if (p->hold_n == 0) {
        int starts = 0;
        for (int i = 0; i < n && !starts; i++) starts = (unsigned char)MARKER_TEXT[ms[i]][0] == b;
        if (!starts) {
            plain(p, b);
            return;
        }
    }
    p->hold[p->hold_n++] = (char)b;
    int prefix = 0;
    for (int i = 0; i < n; i++) {
        const char *t = MARKER_TEXT[ms[i]];
        size_t tl = strlen(t);
        if ((size_t)p->hold_n > tl || memcmp(t, p->hold, (size_t)p->hold_n) != 0) continue;
        if ((size_t)p->hold_n == tl) {
            p->hold_n = 0;
            on_marker(p, ms[i]);
            return;
        }
        prefix = 1;
    }
    if (prefix) return;
    /* hold can no longer become a marker: its first byte is text, the rest is fed again */
    char again[HOLD_MAX];
    int n_again = p->hold_n - 1;
    memcpy(again, p->hold + 1, (size_t)n_again);
    unsigned char first = (unsigned char)p->hold[0];
    p->hold_n = 0;
    plain(p, first);
    feed_bytes(p, again, (size_t)n_again);
}

static void step(struct chat_parser *p, unsigned char b) {
    switch (p->st) {
    case S_TC_OPEN:
        buf_append_char(&p->raw, (char)b);
        if (p->hold_n) { /* matching "<function=" */
            p->hold[p->hold_n++] = (char)b;
            const char *f = MARKER_TEXT[M_FUNCTION];
            if (b != (unsigned char)f[p->hold_n - 1]) {
                p->hold_n = 0;
                fallback(p, p->hold_start); /* "<..." may be another tag: fed again */
                return;
            }
            if (f[p->hold_n] == 0) {
                p->hold_n = 0;
                buf_clear(&p->name);
                p->st = S_XML_FNAME;
            }
            return;
        }
        if (is_blank(b)) return;
        if (b == '`') {
            p->st = S_TC_FENCE;
            return;
        }
        if (b == '{') {
            json_reset(p);
            p->st = S_JSON;
            buf_clear(&p->name);
            return;
        }
        if (b == '<') {
            p->hold[0] = '<';
            p->hold_n = 1;
            p->hold_start = p->raw.len - 1;
            return;
        }
        fallback(p, p->raw.len - 1);
        return;
    case S_TC_FENCE:
        buf_append_char(&p->raw, (char)b);
        if (b == '\n') p->st = S_TC_OPEN;
        if (p->raw.len > 4096) fallback(p, p->raw.len);
        return;
    case S_JSON:
        json_step(p, b);
        return;
    case S_XML_FNAME:
        buf_append_char(&p->raw, (char)b);
        if (b == '>') {
            if (p->name.len == 0) {
                fallback(p, p->raw.len);
                return;
            }
            xml_commit(p);
            p->st = S_XML_BODY;
            return;
        }
        if (b == '\n' || b == '<' || p->name.len >= 256) {
            fallback(p, p->raw.len - 1);
            return;
        }
        buf_append_char(&p->name, (char)b);
        return;
    case S_XML_PNAME:
        if (b == '>') {
            if (p->pname.len == 0) {
                p->st = S_XML_BODY;
                return;
            }
            xml_param_begin(p);
            return;
        }
        if (b == '\n' || b == '<' || p->pname.len >= 256) { /* malformed: drop it */
            p->st = S_XML_BODY;
            step(p, b);
            return;
        }
        buf_append_char(&p->pname, (char)b);
        return;
    default:
        step_markers(p, b);
        return;
    }
}

/* End of generation in whatever state. */
static void finish_state(struct chat_parser *p) {
    switch (p->st) {
    case S_CONTENT:
    case S_REASONING: {
        char h[HOLD_MAX];
        int n = p->hold_n;
        memcpy(h, p->hold, (size_t)n);
        p->hold_n = 0;
        channel_text(p, p->st == S_REASONING ? CH_REASONING : CH_CONTENT, h, (size_t)n);
        break;
    }
    case S_TC_OPEN:
    case S_TC_FENCE:
    case S_XML_FNAME:
        fallback(p, p->raw.len);
        break;
    case S_JSON:
        if (!p->committed)
            fallback(p, p->raw.len);
        else
            json_finish_call(p);
        break;
    case S_XML_BODY:
    case S_XML_PNAME:
    case S_XML_VALUE:
    case S_XML_VFEND:
        p->hold_n = 0; /* a cut-off closing tag is dropped */
        xml_finish_call(p);
        break;
    default:
        break;
    }
    /* fallback may have left held text behind (it feeds again): flush it as text too */
    if ((p->st == S_CONTENT || p->st == S_REASONING) && p->hold_n) finish_state(p);
    p->st = S_CONTENT;
    channel_cut(p, CH_CONTENT);
    channel_cut(p, CH_REASONING);
}

/* ============================================================================================
 * UTF-8 repair and the public API
 * ============================================================================================ */

static void emit_fffd(struct chat_parser *p) {
    step(p, 0xEF);
    step(p, 0xBF);
    step(p, 0xBD);
}

static void utf8_byte(struct chat_parser *p, unsigned char b) {
    if (p->u8_n > 0) {
        unsigned lo = 0x80, hi = 0xBF;
        if (p->u8_n == 1) {
            if (p->u8[0] == 0xE0) lo = 0xA0;
            if (p->u8[0] == 0xED) hi = 0x9F;
            if (p->u8[0] == 0xF0) lo = 0x90;
            if (p->u8[0] == 0xF4) hi = 0x8F;
        }
        if (b >= lo && b <= hi) {
            p->u8[p->u8_n++] = b;
            if (p->u8_n == p->u8_need) {
                for (int i = 0; i < p->u8_n; i++) step(p, p->u8[i]);
                p->u8_n = 0;
            }
            return;
        }
        p->u8_n = 0;
        emit_fffd(p);
        /* b starts afresh */
    }
    if (b < 0x80) {
        step(p, b);
    } else if (b >= 0xC2 && b <= 0xF4) {
        p->u8[0] = b;
        p->u8_n = 1;
        p->u8_need = b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
    } else {
        emit_fffd(p);
    }
}

static void begin_call_output(struct chat_parser *p) {
    buf_clear(&p->dbuf);
    p->n_drec = 0;
}

static void update_view(struct chat_parser *p) {
    struct chat_message *v = &p->view;
    v->content = p->msg_text[CH_CONTENT].data ? p->msg_text[CH_CONTENT].data : "";
    v->content_len = p->msg_text[CH_CONTENT].len;
    v->reasoning = p->msg_text[CH_REASONING].data ? p->msg_text[CH_REASONING].data : "";
    v->reasoning_len = p->msg_text[CH_REASONING].len;
    v->n_tool_calls = 0;
    v->tool_calls = NULL;
    if (p->n_calls) {
        struct chat_tool_call *tc =
            mem_realloc(p->view_calls, (size_t)p->n_calls * sizeof(struct chat_tool_call));
        if (!tc) {
            p->oom = 1;
            return;
        }
        p->view_calls = tc;
        for (int i = 0; i < p->n_calls; i++) {
            struct call *c = &p->calls[i];
            tc[i].id = c->id;
            tc[i].name = c->name.data ? c->name.data : "";
            tc[i].arguments = c->args.data ? c->args.data : "";
            tc[i].arguments_len = c->args.len;
        }
        v->tool_calls = tc;
        v->n_tool_calls = p->n_calls;
    }
}

static int end_call_output(struct chat_parser *p, const struct chat_delta **deltas, int *n_deltas) {
    int failed = p->oom || p->dbuf.failed || p->msg_text[0].failed || p->msg_text[1].failed ||
                 p->raw.failed || p->args_hold.failed || p->value.failed;
    for (int i = 0; i < p->n_calls && !failed; i++)
        failed = p->calls[i].name.failed || p->calls[i].args.failed;
    if (!failed && p->n_drec > p->cap_deltas) {
        struct chat_delta *d = mem_realloc(p->deltas, (size_t)p->n_drec * sizeof(*d));
        if (!d)
            failed = 1;
        else {
            p->deltas = d;
            p->cap_deltas = p->n_drec;
        }
    }
    if (failed) {
        p->oom = 1;
        if (deltas) *deltas = NULL;
        if (n_deltas) *n_deltas = 0;
        return ERR_NOMEM;
    }
    for (int i = 0; i < p->n_drec; i++) {
        const struct delta_rec *r = &p->drec[i];
        struct chat_delta *d = &p->deltas[i];
        d->type = r->type;
        d->tool_index = r->tool_index;
        d->text = p->dbuf.data ? p->dbuf.data + r->off : "";
        d->len = r->len;
        d->id = r->type == CHAT_DELTA_TOOL_CALL ? p->dbuf.data + r->id_off : NULL;
    }
    update_view(p);
    if (deltas) *deltas = p->deltas;
    if (n_deltas) *n_deltas = p->n_drec;
    return p->oom ? ERR_NOMEM : 0;
}

int chat_parser_create(struct chat_parser **out, const struct chat_parser_params *params,
                       struct error *err) {
    *out = NULL;
    struct chat_parser *p = mem_calloc(1, sizeof(*p));
    if (!p) return error_set(err, ERR_NOMEM, "out of memory");
    p->p = *params;
    p->p.tools_json = NULL;
    if (params->tools_json && params->tools_json_len) {
        int rc = jval_parse(&p->tools, params->tools_json, params->tools_json_len, err);
        if (rc) {
            error_prefix(err, "tools");
            chat_parser_free(p);
            return rc == ERR_NOMEM ? rc : ERR_INVALID;
        }
    }
    p->st = params->reasoning == CHAT_REASONING_FORCED ? S_REASONING : S_CONTENT;
    update_view(p);
    *out = p;
    return 0;
}

void chat_parser_free(struct chat_parser *p) {
    if (!p) return;
    jval_free(p->tools);
    struct buf *bufs[] = {&p->raw,         &p->key,         &p->name,        &p->args_hold,
                          &p->args_early,  &p->args_closer, &p->pname,       &p->value,
                          &p->fend,        &p->ws[0],       &p->ws[1],       &p->msg_text[0],
                          &p->msg_text[1], &p->dbuf,        &p->args_decoded};
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++) buf_free(bufs[i]);
    for (int i = 0; i < p->n_calls; i++) {
        buf_free(&p->calls[i].name);
        buf_free(&p->calls[i].args);
    }
    mem_free(p->calls);
    mem_free(p->drec);
    mem_free(p->deltas);
    mem_free(p->view_calls);
    mem_free(p);
}

int chat_parser_feed(struct chat_parser *p, const char *text, size_t len,
                     const struct chat_delta **deltas, int *n_deltas) {
    if (deltas) *deltas = NULL;
    if (n_deltas) *n_deltas = 0;
    if (p->finished) return ERR_INVALID;
    if (p->oom) return ERR_NOMEM;
    begin_call_output(p);
    for (size_t i = 0; i < len; i++) utf8_byte(p, (unsigned char)text[i]);
    return end_call_output(p, deltas, n_deltas);
}

int chat_parser_finish(struct chat_parser *p, const struct chat_delta **deltas, int *n_deltas) {
    if (deltas) *deltas = NULL;
    if (n_deltas) *n_deltas = 0;
    if (p->finished) return ERR_INVALID;
    if (p->oom) return ERR_NOMEM;
    begin_call_output(p);
    if (p->u8_n) {
        p->u8_n = 0;
        emit_fffd(p);
    }
    finish_state(p);
    p->finished = 1;
    return end_call_output(p, deltas, n_deltas);
}

const struct chat_message *chat_parser_message(const struct chat_parser *p) {
    return &p->view;
}

void chat_message_free(struct chat_message *m) {
    if (!m) return;
    mem_free(m->content);
    mem_free(m->reasoning);
    for (int i = 0; i < m->n_tool_calls; i++) {
        mem_free(m->tool_calls[i].id);
        mem_free(m->tool_calls[i].name);
        mem_free(m->tool_calls[i].arguments);
    }
    mem_free(m->tool_calls);
    memset(m, 0, sizeof(*m));
}

int chat_parse(const struct chat_parser_params *params, const char *text, size_t len,
               struct chat_message *out, struct error *err) {
    memset(out, 0, sizeof(*out));
    struct chat_parser *p;
    int rc = chat_parser_create(&p, params, err);
    if (rc) return rc;
    if (chat_parser_feed(p, text, len, NULL, NULL) || chat_parser_finish(p, NULL, NULL)) {
        chat_parser_free(p);
        return error_set(err, ERR_NOMEM, "out of memory");
    }
    const struct chat_message *m = &p->view;
    out->content = mem_strndup(m->content, m->content_len);
    out->content_len = m->content_len;
    out->reasoning = mem_strndup(m->reasoning, m->reasoning_len);
    out->reasoning_len = m->reasoning_len;
    int ok = out->content && out->reasoning;
    if (ok && m->n_tool_calls) {
        out->tool_calls = mem_calloc((size_t)m->n_tool_calls, sizeof(*out->tool_calls));
        ok = out->tool_calls != NULL;
        for (int i = 0; ok && i < m->n_tool_calls; i++) {
            out->n_tool_calls = i + 1;
            struct chat_tool_call *d = &out->tool_calls[i];
            d->id = mem_strdup(m->tool_calls[i].id);
            d->name = mem_strdup(m->tool_calls[i].name);
            d->arguments = mem_strndup(m->tool_calls[i].arguments, m->tool_calls[i].arguments_len);
            d->arguments_len = m->tool_calls[i].arguments_len;
            ok = d->id && d->name && d->arguments;
        }
    }
    chat_parser_free(p);
    if (!ok) {
        chat_message_free(out);
        return error_set(err, ERR_NOMEM, "out of memory");
    }
    return 0;
}

/* ---- detection helpers ---- */

static const char *find_last(const char *s, size_t len, const char *needle) {
    size_t n = strlen(needle);
    if (n > len) return NULL;
    for (size_t i = len - n + 1; i-- > 0;)
        if (memcmp(s + i, needle, n) == 0) return s + i;
    return NULL;
}

static int contains(const char *s, size_t len, const char *needle) {
    return find_last(s, len, needle) != NULL;
}

enum chat_tool_format chat_tool_format_detect(const char *src, size_t len) {
    if (!src) return CHAT_TOOL_FORMAT_NONE;
    if (contains(src, len, "<function=") || contains(src, len, "<parameter="))
        return CHAT_TOOL_FORMAT_XML;
    if (contains(src, len, "<tool_call>")) return CHAT_TOOL_FORMAT_JSON;
    return CHAT_TOOL_FORMAT_NONE;
}

enum chat_reasoning chat_reasoning_detect(const char *prompt, size_t len) {
    if (!prompt) return CHAT_REASONING_PARSE;
    /* only the generation prompt counts, not a "<think>" quoted in some earlier message */
    const char *turn = find_last(prompt, len, "<|im_start|>assistant");
    if (turn) {
        len -= (size_t)(turn - prompt);
        prompt = turn;
    }
    const char *open = find_last(prompt, len, "<think>");
    if (!open) return CHAT_REASONING_PARSE;
    size_t rest = len - (size_t)(open - prompt);
    return contains(open, rest, "</think>") ? CHAT_REASONING_PARSE : CHAT_REASONING_FORCED;
}
