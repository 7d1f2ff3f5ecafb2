/* json.c: see json.h. */
#include "json.h"

#include "../base/mem.h"
#include "utf8.h"

#include <math.h>
#include <string.h>

void json_use_mem(void) {
    json_set_alloc_funcs(mem_alloc, mem_free);
}

int json_parse_object(const char *body, size_t len, json_t **out, struct error *err) {
    *out = NULL;
    json_error_t je;
    json_t *v = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
    if (!v) {
        if (len == 0) return error_set(err, ERR_FORMAT, "the request body is empty");
        return error_set(err, ERR_FORMAT, "invalid JSON at byte %d: %s", je.position, je.text);
    }
    if (!json_is_object(v)) {
        json_decref(v);
        return error_set(err, ERR_INVALID, "the request body must be a JSON object");
    }
    *out = v;
    return 0;
}

static const json_t *field(const json_t *obj, const char *key) {
    const json_t *v = json_object_get(obj, key);
    return v && !json_is_null(v) ? v : NULL;
}

int json_get_bool(const json_t *obj, const char *key, int *out, struct error *err) {
    const json_t *v = field(obj, key);
    if (!v) return 0;
    if (!json_is_boolean(v)) return error_set(err, ERR_INVALID, "'%s' must be a boolean", key);
    *out = json_is_true(v);
    return 1;
}

int json_get_int(const json_t *obj, const char *key, int64_t lo, int64_t hi, int64_t *out,
                 struct error *err) {
    const json_t *v = field(obj, key);
    if (!v) return 0;
    int64_t x;
    if (json_is_integer(v)) {
        x = (int64_t)json_integer_value(v);
    } else if (json_is_real(v)) {
        double d = json_real_value(v);
        if (!(d == floor(d)) || d < -9.2e18 || d > 9.2e18)
            return error_set(err, ERR_INVALID, "'%s' must be an integer", key);
        x = (int64_t)d;
    } else {
        return error_set(err, ERR_INVALID, "'%s' must be an integer", key);
    }
    if (x < lo || x > hi)
        return error_set(err, ERR_INVALID, "'%s' must be between %lld and %lld (got %lld)", key,
                         (long long)lo, (long long)hi, (long long)x);
    *out = x;
    return 1;
}

int json_get_num(const json_t *obj, const char *key, double lo, double hi, double *out,
                 struct error *err) {
    const json_t *v = field(obj, key);
    if (!v) return 0;
    if (!json_is_number(v)) return error_set(err, ERR_INVALID, "'%s' must be a number", key);
    double x = json_number_value(v);
    if (!(x >= lo && x <= hi))
        return error_set(err, ERR_INVALID, "'%s' must be between %g and %g (got %g)", key, lo, hi,
                         x);
    *out = x;
    return 1;
}

int json_get_str(const json_t *obj, const char *key, const char **out, size_t *len,
                 struct error *err) {
    const json_t *v = field(obj, key);
    if (!v) return 0;
    if (!json_is_string(v)) return error_set(err, ERR_INVALID, "'%s' must be a string", key);
    *out = json_string_value(v);
    if (len) *len = json_string_length(v);
    return 1;
}

json_t *json_str_lossy(const char *s, size_t n) {
    if (utf8_valid(s, n)) return json_stringn(s, n);
    struct buf b;
    buf_init(&b);
    utf8_repair(s, n, &b);
    json_t *v = b.failed ? NULL : json_stringn(b.data ? b.data : "", b.len);
    buf_free(&b);
    return v;
}

static int dump_cb(const char *chunk, size_t size, void *data) {
    struct buf *b = data;
    buf_append(b, chunk, size);
    return b->failed ? -1 : 0;
}

int json_dump_to(const json_t *v, struct buf *out) {
    if (json_dump_callback(v, dump_cb, out, JSON_COMPACT | JSON_ENCODE_ANY) != 0 || out->failed)
        return ERR_NOMEM;
    return 0;
}

char *json_dump_str(const json_t *v, size_t flags) {
    struct buf b;
    buf_init(&b);
    if (json_dump_callback(v, dump_cb, &b, flags | JSON_ENCODE_ANY) != 0 || b.failed) {
        buf_free(&b);
        return NULL;
    }
    return buf_detach(&b);
}
