/* jinja_format.c: Python's two string formatting languages as templates use them:
 * printf-style `'%s=%d' % (k, v)` (also the |format filter) and str.format with the common
 * format-spec forms ({:>8}, {:.2f}, {:05d}, {:,}, {0[1]}, {name.attr}, !r).
 *
 * Numbers go through C printf with the same flags, which rounds like Python (both are correctly
 * rounded); widths count characters, not bytes.
 */
#include "jinja_internal.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ============================================================================================
 * printf-style formatting: `'%s=%d' % (k, v)` and the |format filter
 * ============================================================================================
 */

static void pad_to(struct buf *b, const char *s, size_t n, size_t width, int left, char fill) {
    size_t chars = jinja_utf8_count(s, n);
    size_t pad = width > chars ? width - chars : 0;
    if (!left)
        for (size_t k = 0; k < pad; k++) buf_append_char(b, fill);
    buf_append(b, s, n);
    if (left)
        for (size_t k = 0; k < pad; k++) buf_append_char(b, ' ');
}

struct tpl_value *jinja_percent_format(struct jinja_render *st, uint32_t line,
                                       struct tpl_value *fmt, struct tpl_value *args) {
    struct tpl_value **items = &args;
    size_t n_items = 1, next_arg = 0;
    /* Python treats any non-tuple argument with __getitem__ as a mapping: extra arguments are
     * then not an error ('abc' % [] == 'abc') */
    int is_map = args->kind == TPL_OBJECT ||
                 (args->kind == TPL_ARRAY && !(args->flags & (TPL_F_TUPLE | TPL_F_GEN)));
    if (args->kind == TPL_ARRAY && (args->flags & TPL_F_TUPLE)) {
        items = args->u.arr->items;
        n_items = args->u.arr->n;
    }
    struct buf b, tmp;
    buf_init(&b);
    buf_init(&tmp);
    const char *p = fmt->u.s.p;
    size_t n = fmt->u.s.n, i = 0;
    const char *err = NULL;
    while (i < n && !err) {
        const char *pct = memchr(p + i, '%', n - i);
        size_t run = pct ? (size_t)(pct - p) : n;
        buf_append(&b, p + i, run - i);
        if (!pct) break;
        i = run + 1;
        struct tpl_value *arg = NULL;
        if (i < n && p[i] == '(') {
            const char *close = memchr(p + i, ')', n - i);
            if (!close || args->kind != TPL_OBJECT) {
                err = close ? "format requires a mapping" : "incomplete format key";
                break;
            }
            arg = tpl_object_find(args->u.obj, p + i + 1, (size_t)(close - p) - i - 1);
            if (!arg) {
                err = "format key not found";
                break;
            }
            i = (size_t)(close - p) + 1;
        }
        char flags[8] = {0};
        size_t nf = 0;
        while (i < n && strchr("-+ #0", p[i]) && nf < sizeof(flags) - 1) flags[nf++] = p[i++];
        int width = -1, prec = -1;
        while (i < n && p[i] >= '0' && p[i] <= '9' && width < 100000)
            width = (width < 0 ? 0 : width * 10) + (p[i++] - '0');
        if (i < n && p[i] == '.') {
            i++;
            prec = 0;
            while (i < n && p[i] >= '0' && p[i] <= '9' && prec < 100000)
                prec = prec * 10 + (p[i++] - '0');
        }
        if (i >= n) {
            err = "incomplete format";
            break;
        }
        char conv = p[i++];
        if (conv == '%') {
            buf_append_char(&b, '%');
            continue;
        }
        if (!arg) {
            if (is_map) {
                arg = args;
            } else {
                if (next_arg >= n_items) {
                    err = "not enough arguments for format string";
                    break;
                }
                arg = items[next_arg++];
            }
        }
        if (width > 4096 || prec > 4096) {
            err = "format width too large";
            break;
        }
        int left = strchr(flags, '-') != NULL;
        buf_clear(&tmp);
        tmp.len = 0;
        char spec[32];
        switch (conv) {
        case 's':
        case 'r':
        case 'a': {
            if (arg->kind == TPL_UNDEFINED && conv == 's') {
                /* str(Undefined) is '' */
            } else if (conv == 's' ? tpl_value_str(&tmp, arg) : tpl_value_repr(&tmp, arg)) {
                err = "value nested too deeply";
                break;
            }
            size_t len = tmp.len;
            if (prec >= 0) len = jinja_utf8_offset(tmp.data ? tmp.data : "", tmp.len, (size_t)prec);
            pad_to(&b, tmp.data ? tmp.data : "", len, width < 0 ? 0 : (size_t)width, left, ' ');
            break;
        }
        case 'd':
        case 'i':
        case 'u':
        case 'x':
        case 'X':
        case 'o':
        case 'c': {
            if (!tpl_is_number(arg)) {
                err = "%d format: a real number is required";
                break;
            }
            int64_t v;
            if (arg->kind == TPL_FLOAT) {
                if (!(fabs(arg->u.f) < 9.2e18)) {
                    err = "cannot convert float to integer";
                    break;
                }
                v = (int64_t)arg->u.f;
            } else {
                v = arg->u.i;
            }
            if (conv == 'c') {
                jinja_utf8_put(&b, (uint32_t)v);
                break;
            }
            char fc = conv == 'i' || conv == 'u' ? 'd' : conv;
            int k = snprintf(spec, sizeof(spec), "%%%s", flags);
            if (width >= 0) k += snprintf(spec + k, sizeof(spec) - (size_t)k, "%d", width);
            if (prec >= 0) k += snprintf(spec + k, sizeof(spec) - (size_t)k, ".%d", prec);
            snprintf(spec + k, sizeof(spec) - (size_t)k, "ll%c", fc);
            buf_printf(&tmp, spec, (long long)v);
            buf_append(&b, tmp.data, tmp.len);
            break;
        }
        case 'f':
        case 'F':
        case 'e':
        case 'E':
        case 'g':
        case 'G': {
            if (!tpl_is_number(arg)) {
                err = "must be real number";
                break;
            }
            int k = snprintf(spec, sizeof(spec), "%%%s", flags);
            if (width >= 0) k += snprintf(spec + k, sizeof(spec) - (size_t)k, "%d", width);
            snprintf(spec + k, sizeof(spec) - (size_t)k, ".%d%c", prec < 0 ? 6 : prec, conv);
            buf_printf(&tmp, spec, tpl_to_double(arg));
            buf_append(&b, tmp.data, tmp.len);
            break;
        }
        default:
            err = "unsupported format character";
            break;
        }
    }
    if (!err && !is_map && next_arg < n_items)
        err = "not all arguments converted during string formatting";
    buf_free(&tmp);
    if (err) {
        buf_free(&b);
        jinja_fail(st, line, ERR_INVALID, "%s", err);
        return NULL;
    }
    return jinja_buf_to_string(st, &b);
}

/* ---- str.format ---------------------------------------------------------------------------- */

/* format(value, spec) for the common spec forms: [[fill]align][sign][0][width][.prec][type]. */
static int format_spec(struct buf *out, struct tpl_value *v, const char *spec, size_t n) {
    char fill = ' ', align = 0, sign = '-';
    size_t i = 0;
    if (n >= 2 && strchr("<>^=", spec[1])) {
        fill = spec[0];
        align = spec[1];
        i = 2;
    } else if (n >= 1 && strchr("<>^=", spec[0])) {
        align = spec[0];
        i = 1;
    }
    if (i < n && strchr("+- ", spec[i])) sign = spec[i++];
    if (i < n && spec[i] == '0') {
        if (!align) {
            fill = '0';
            align = '=';
        }
        i++;
    }
    int width = 0, prec = -1;
    char group = 0;
    while (i < n && spec[i] >= '0' && spec[i] <= '9' && width < 10000)
        width = width * 10 + (spec[i++] - '0');
    if (i < n && (spec[i] == ',' || spec[i] == '_')) group = spec[i++];
    if (i < n && spec[i] == '.') {
        i++;
        prec = 0;
        while (i < n && spec[i] >= '0' && spec[i] <= '9' && prec < 10000)
            prec = prec * 10 + (spec[i++] - '0');
    }
    char type = i < n ? spec[i++] : 0;
    if (i != n) return ERR_UNSUPPORTED;
    struct buf body;
    buf_init(&body);
    int is_num = tpl_is_number(v);
    if (!type || type == 's') {
        if (type == 's' && v->kind != TPL_STRING) {
            buf_free(&body);
            return ERR_INVALID;
        }
        if (is_num && prec >= 0 && v->kind == TPL_FLOAT) {
            buf_printf(&body, "%.*g", prec, v->u.f);
        } else if (tpl_value_str(&body, v)) {
            buf_free(&body);
            return ERR_RANGE;
        }
        if (!is_num && prec >= 0)
            body.len = jinja_utf8_offset(body.data ? body.data : "", body.len, (size_t)prec);
    } else if (strchr("dxXob", type)) {
        if (v->kind != TPL_INT && v->kind != TPL_BOOL) {
            buf_free(&body);
            return ERR_INVALID;
        }
        int64_t x = v->u.i;
        uint64_t mag = x < 0 ? (uint64_t)0 - (uint64_t)x : (uint64_t)x;
        if (x < 0) buf_append_char(&body, '-');
        if (type == 'b') {
            char t[65];
            int k = 64;
            t[k] = 0;
            do t[--k] = (char)('0' + (mag & 1));
            while (mag >>= 1);
            buf_append_str(&body, t + k);
        } else {
            buf_printf(&body,
                       type == 'd'   ? "%" PRIu64
                       : type == 'x' ? "%" PRIx64
                       : type == 'X' ? "%" PRIX64
                                     : "%" PRIo64,
                       mag);
        }
    } else if (strchr("feEgG%", type)) {
        if (!is_num) {
            buf_free(&body);
            return ERR_INVALID;
        }
        double x = tpl_to_double(v);
        if (type == '%') {
            buf_printf(&body, "%.*f%%", prec < 0 ? 6 : prec, x * 100);
        } else {
            char f[8] = {'%', '.', '*', type, 0};
            buf_printf(&body, f, prec < 0 ? 6 : prec, x);
        }
    } else {
        buf_free(&body);
        return ERR_UNSUPPORTED;
    }
    if (group && is_num && (!type || strchr("dfeEgG%", type))) {
        /* insert the separator every three digits of the integer part */
        struct buf g;
        buf_init(&g);
        const char *d = body.data ? body.data : "";
        size_t len = body.len, k = 0, int_start, int_end;
        if (k < len && d[k] == '-') k++;
        int_start = k;
        while (k < len && d[k] >= '0' && d[k] <= '9') k++;
        int_end = k;
        buf_append(&g, d, int_start);
        for (size_t j = int_start; j < int_end; j++) {
            if (j > int_start && (int_end - j) % 3 == 0) buf_append_char(&g, group);
            buf_append_char(&g, d[j]);
        }
        buf_append(&g, d + int_end, len - int_end);
        buf_free(&body);
        body = g;
    }
    const char *s = body.data ? body.data : "";
    size_t len = body.len;
    int neg = is_num && len && s[0] == '-';
    if (is_num && !neg && (sign == '+' || sign == ' ')) {
        buf_append_char(out, sign);
        width = width > 0 ? width - 1 : 0;
    }
    if (!align) align = is_num ? '>' : '<';
    size_t chars = jinja_utf8_count(s, len);
    size_t pad = (size_t)width > chars ? (size_t)width - chars : 0;
    if (align == '=' && neg) {
        buf_append_char(out, '-');
        s++;
        len--;
    }
    size_t before = align == '<' ? 0 : align == '^' ? pad / 2 : pad;
    for (size_t k = 0; k < before; k++) buf_append_char(out, fill);
    buf_append(out, s, len);
    for (size_t k = before; k < pad; k++) buf_append_char(out, fill);
    buf_free(&body);
    return 0;
}

struct tpl_value *jinja_str_format(struct jinja_render *st, uint32_t line, struct tpl_value *fmt,
                                   struct jinja_args *args) {
    struct buf b;
    buf_init(&b);
    const char *p = fmt->u.s.p;
    size_t n = fmt->u.s.n, i = 0, auto_idx = 0;
    const char *err = NULL;
    while (i < n && !err) {
        char c = p[i];
        if (c == '}') {
            if (i + 1 < n && p[i + 1] == '}') {
                buf_append_char(&b, '}');
                i += 2;
                continue;
            }
            err = "Single '}' encountered in format string";
            break;
        }
        if (c != '{') {
            buf_append_char(&b, c);
            i++;
            continue;
        }
        if (i + 1 < n && p[i + 1] == '{') {
            buf_append_char(&b, '{');
            i += 2;
            continue;
        }
        const char *close = memchr(p + i, '}', n - i);
        if (!close) {
            err = "Single '{' encountered in format string";
            break;
        }
        const char *field = p + i + 1, *end = close, *spec = NULL, *conv = NULL;
        for (const char *q = field; q < end; q++) {
            if (*q == '!' && !conv && !spec) conv = q;
            if (*q == ':') {
                spec = q;
                break;
            }
        }
        const char *name_end = conv ? conv : spec ? spec : end;
        const char *first_end = field;
        while (first_end < name_end && *first_end != '.' && *first_end != '[') first_end++;
        struct tpl_value *v = NULL;
        size_t name_n = (size_t)(first_end - field);
        if (name_n == 0) {
            if (auto_idx >= args->n_pos) {
                err = "Replacement index out of range for positional args tuple";
                break;
            }
            v = args->pos[auto_idx++];
        } else if (field[0] >= '0' && field[0] <= '9') {
            size_t idx = (size_t)strtoul(field, NULL, 10);
            if (idx >= args->n_pos) {
                err = "Replacement index out of range for positional args tuple";
                break;
            }
            v = args->pos[idx];
        } else {
            for (size_t k = 0; k < args->n_kw; k++)
                if (args->kw[k].n == name_n && memcmp(args->kw[k].name, field, name_n) == 0)
                    v = args->kw[k].v;
            if (!v) {
                err = "format key not found";
                break;
            }
        }
        /* .attr and [key] parts: getattr / getitem (a key of digits is an index) */
        for (const char *q = first_end; q < name_end && v && !err;) {
            int is_item = *q == '[';
            const char *ps = q + 1, *pe = ps;
            while (pe < name_end && *pe != (is_item ? ']' : '.') && (is_item || *pe != '[')) pe++;
            if (is_item && pe >= name_end) {
                err = "Missing ']' in format string";
                break;
            }
            int digits = pe > ps;
            for (const char *d = ps; d < pe; d++) digits &= *d >= '0' && *d <= '9';
            if (is_item) {
                struct tpl_value *key = digits ? jinja_new_int(st, strtoll(ps, NULL, 10))
                                               : jinja_new_string(st, ps, (size_t)(pe - ps));
                v = key ? jinja_getitem(st, line, v, key) : NULL;
            } else {
                v = jinja_getattr(st, line, v, ps, (size_t)(pe - ps));
            }
            q = is_item ? pe + 1 : pe;
        }
        if (!v) {
            buf_free(&b);
            return NULL;
        }
        if (conv && conv + 1 < end && (conv[1] == 'r' || conv[1] == 'a')) {
            struct buf r;
            buf_init(&r);
            tpl_value_repr(&r, v);
            v = jinja_buf_to_string(st, &r);
            if (!v) {
                buf_free(&b);
                return NULL;
            }
        }
        if (format_spec(&b, v, spec ? spec + 1 : "", spec ? (size_t)(end - spec - 1) : 0)) {
            err = "unsupported format specification";
            break;
        }
        i = (size_t)(close - p) + 1;
    }
    if (err) {
        buf_free(&b);
        jinja_fail(st, line, ERR_INVALID, "%s", err);
        return NULL;
    }
    return jinja_buf_to_string(st, &b);
}
