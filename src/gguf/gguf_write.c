/* gguf_write.c: build and write GGUF v3 files (see gguf.h; format: docs/reference/gguf.md).
 *
 * The writer keeps each metadata value already encoded the way it appears in the file (the
 * bytes after the type field), so writing is a concatenation and copying a value from an open
 * file needs no per-type code beyond the encoding. Tensors are described up front (name, type,
 * shape) and their data is borrowed; write_file is the streaming API run over the borrowed
 * data, so both paths produce the same bytes. Offsets are dense and in order, each tensor padded
 * with zeros to the alignment, exactly as ggml writes them.
 */
#include "gguf.h"

#include "../base/buf.h"
#include "../base/mem.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#define WRITER_MAX_STR_LEN  (1ull << 30)
#define WRITER_MAX_KEY_LEN  65535u
#define WRITER_MAX_ARR_N    (1ull << 30)
#define WRITER_MAX_NAME_LEN 63u

struct writer_kv {
    char *key;      /* key bytes + NUL (owned) */
    size_t key_len; /* bytes, without the NUL */
    enum gguf_type type;
    uint8_t *value;   /* the value encoded as in the file (owned) */
    size_t value_len; /* bytes */
};

struct writer_tensor {
    char name[WRITER_MAX_NAME_LEN + 1];
    uint32_t type;             /* ggml type id */
    int n_dims;                /* 1..4 */
    int64_t ne[GGUF_MAX_DIMS]; /* unused dims are 1 */
    const void *data;          /* borrowed; NULL for streaming */
    uint64_t n_bytes;          /* payload size */
    uint64_t offset;           /* in the data section, set when the header is written */
};

struct gguf_writer {
    struct writer_kv *kvs; /* [n_kv], in insertion order */
    int64_t n_kv, cap_kv;
    struct writer_tensor *tensors; /* [n_tensors], in insertion (= file) order */
    int64_t n_tensors, cap_tensors;
    uint32_t alignment;  /* power of two; general.alignment in the file when != 32 */
    FILE *out;           /* open while streaming */
    char *out_path;      /* path being written (owned), for messages and cleanup */
    int64_t next_tensor; /* next tensor stream_tensor expects */
};

/* ======================================================================================
 * Metadata
 * ====================================================================================== */

static void enc_u32(struct buf *b, uint32_t v) {
    unsigned char p[4] = {(unsigned char)v, (unsigned char)(v >> 8), (unsigned char)(v >> 16),
                          (unsigned char)(v >> 24)};
    buf_append(b, p, 4);
}

static void enc_u64(struct buf *b, uint64_t v) {
    enc_u32(b, (uint32_t)v);
    enc_u32(b, (uint32_t)(v >> 32));
}

static void enc_str(struct buf *b, const char *s, uint64_t n) {
    enc_u64(b, n);
    buf_append(b, s, (size_t)n);
}

int gguf_writer_create(struct gguf_writer **out, struct error *err) {
    *out = mem_calloc(1, sizeof(struct gguf_writer));
    if (!*out) return error_set(err, ERR_NOMEM, "gguf: out of memory");
    (*out)->alignment = GGUF_DEFAULT_ALIGNMENT;
    return 0;
}

static void stream_abort(struct gguf_writer *w) {
    if (w->out) {
        fclose(w->out);
        remove(w->out_path);
    }
    w->out = NULL;
    mem_free(w->out_path);
    w->out_path = NULL;
}

void gguf_writer_free(struct gguf_writer *w) {
    if (!w) return;
    stream_abort(w);
    for (int64_t i = 0; i < w->n_kv; i++) {
        mem_free(w->kvs[i].key);
        mem_free(w->kvs[i].value);
    }
    mem_free(w->kvs);
    mem_free(w->tensors);
    mem_free(w);
}

static int is_alignment_key(const char *key, size_t len) {
    return len == 17 && memcmp(key, "general.alignment", 17) == 0;
}

void gguf_writer_set_alignment(struct gguf_writer *w, uint32_t alignment) {
    CHECK(alignment != 0 && (alignment & (alignment - 1)) == 0 && !w->out);
    w->alignment = alignment;
}

static int64_t find_kv(const struct gguf_writer *w, const char *key, size_t len) {
    for (int64_t i = 0; i < w->n_kv; i++)
        if (w->kvs[i].key_len == len && memcmp(w->kvs[i].key, key, len) == 0) return i;
    return -1;
}

/* Stores (key, type, encoded value), replacing an existing key in place. Consumes val (its
 * bytes are taken or freed). Errors: ERR_INVALID (bad key, bad general.alignment), ERR_NOMEM. */
static int set_value(struct gguf_writer *w, const char *key, size_t key_len, enum gguf_type type,
                     struct buf *val) {
    CHECK(!w->out);
    int rc = 0;
    if (val->failed)
        rc = ERR_NOMEM;
    else if (key_len == 0 || key_len > WRITER_MAX_KEY_LEN)
        rc = ERR_INVALID;
    else if (is_alignment_key(key, key_len)) {
        const unsigned char *p = (const unsigned char *)val->data;
        uint32_t a = 0;
        if (type == GGUF_TYPE_UINT32 && val->len == 4)
            a = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
        if (a == 0 || (a & (a - 1))) rc = ERR_INVALID;
    }
    if (rc) {
        buf_free(val);
        return rc;
    }
    int64_t i = find_kv(w, key, key_len);
    if (i < 0 && w->n_kv == w->cap_kv) {
        int64_t cap = w->cap_kv ? 2 * w->cap_kv : 16;
        struct writer_kv *kvs = mem_realloc(w->kvs, (size_t)cap * sizeof(*kvs));
        if (!kvs) {
            buf_free(val);
            return ERR_NOMEM;
        }
        w->kvs = kvs;
        w->cap_kv = cap;
    }
    char *key_copy = i < 0 ? mem_strndup(key, key_len) : NULL;
    size_t value_len = val->len;
    uint8_t *value = (uint8_t *)buf_detach(val);
    if (!value || (i < 0 && !key_copy)) {
        mem_free(value);
        mem_free(key_copy);
        return ERR_NOMEM;
    }
    if (i < 0) {
        i = w->n_kv++;
        w->kvs[i].key = key_copy;
        w->kvs[i].key_len = key_len;
    } else {
        mem_free(w->kvs[i].value);
    }
    w->kvs[i].type = type;
    w->kvs[i].value = value;
    w->kvs[i].value_len = value_len;
    if (is_alignment_key(key, key_len))
        w->alignment = (uint32_t)value[0] | (uint32_t)value[1] << 8 | (uint32_t)value[2] << 16 |
                       (uint32_t)value[3] << 24;
    return 0;
}

/* A scalar given as its little-endian bytes. */
static int set_scalar(struct gguf_writer *w, const char *key, enum gguf_type type, uint64_t bits) {
    struct buf b;
    buf_init(&b);
    for (size_t k = 0; k < gguf_type_size(type); k++) buf_append_char(&b, (char)(bits >> (8 * k)));
    return set_value(w, key, strlen(key), type, &b);
}

int gguf_writer_set_u8(struct gguf_writer *w, const char *key, uint8_t v) {
    return set_scalar(w, key, GGUF_TYPE_UINT8, v);
}

int gguf_writer_set_i8(struct gguf_writer *w, const char *key, int8_t v) {
    return set_scalar(w, key, GGUF_TYPE_INT8, (uint8_t)v);
}

int gguf_writer_set_u16(struct gguf_writer *w, const char *key, uint16_t v) {
    return set_scalar(w, key, GGUF_TYPE_UINT16, v);
}

int gguf_writer_set_i16(struct gguf_writer *w, const char *key, int16_t v) {
    return set_scalar(w, key, GGUF_TYPE_INT16, (uint16_t)v);
}

int gguf_writer_set_u32(struct gguf_writer *w, const char *key, uint32_t v) {
    return set_scalar(w, key, GGUF_TYPE_UINT32, v);
}

int gguf_writer_set_i32(struct gguf_writer *w, const char *key, int32_t v) {
    return set_scalar(w, key, GGUF_TYPE_INT32, (uint32_t)v);
}

int gguf_writer_set_u64(struct gguf_writer *w, const char *key, uint64_t v) {
    return set_scalar(w, key, GGUF_TYPE_UINT64, v);
}

int gguf_writer_set_i64(struct gguf_writer *w, const char *key, int64_t v) {
    return set_scalar(w, key, GGUF_TYPE_INT64, (uint64_t)v);
}

int gguf_writer_set_f32(struct gguf_writer *w, const char *key, float v) {
    uint32_t bits;
    memcpy(&bits, &v, 4);
    return set_scalar(w, key, GGUF_TYPE_FLOAT32, bits);
}

int gguf_writer_set_f64(struct gguf_writer *w, const char *key, double v) {
    uint64_t bits;
    memcpy(&bits, &v, 8);
    return set_scalar(w, key, GGUF_TYPE_FLOAT64, bits);
}

int gguf_writer_set_bool(struct gguf_writer *w, const char *key, int v) {
    return set_scalar(w, key, GGUF_TYPE_BOOL, v != 0);
}

static int set_str_n(struct gguf_writer *w, const char *key, size_t key_len, const char *v,
                     uint64_t n) {
    if (n > WRITER_MAX_STR_LEN) return ERR_INVALID;
    struct buf b;
    buf_init(&b);
    enc_str(&b, v, n);
    return set_value(w, key, key_len, GGUF_TYPE_STRING, &b);
}

int gguf_writer_set_str(struct gguf_writer *w, const char *key, const char *v) {
    return set_str_n(w, key, strlen(key), v, strlen(v));
}

static int set_arr_n(struct gguf_writer *w, const char *key, size_t key_len,
                     enum gguf_type elem_type, const void *data, uint64_t n) {
    size_t size = gguf_type_size(elem_type);
    if (size == 0 || n > WRITER_MAX_ARR_N || (n > 0 && !data)) return ERR_INVALID;
    if (elem_type == GGUF_TYPE_BOOL)
        for (uint64_t j = 0; j < n; j++)
            if (((const uint8_t *)data)[j] > 1) return ERR_INVALID;
    struct buf b;
    buf_init(&b);
    enc_u32(&b, elem_type);
    enc_u64(&b, n);
    buf_append(&b, data, (size_t)n * size); /* n <= 2^30, size <= 8 */
    return set_value(w, key, key_len, GGUF_TYPE_ARRAY, &b);
}

int gguf_writer_set_arr(struct gguf_writer *w, const char *key, enum gguf_type elem_type,
                        const void *data, uint64_t n) {
    return set_arr_n(w, key, strlen(key), elem_type, data, n);
}

int gguf_writer_set_arr_str(struct gguf_writer *w, const char *key, const char *const *strs,
                            uint64_t n) {
    if (n > WRITER_MAX_ARR_N) return ERR_INVALID;
    struct buf b;
    buf_init(&b);
    enc_u32(&b, GGUF_TYPE_STRING);
    enc_u64(&b, n);
    for (uint64_t j = 0; j < n; j++) {
        size_t len = strlen(strs[j]);
        if (len > WRITER_MAX_STR_LEN) {
            buf_free(&b);
            return ERR_INVALID;
        }
        enc_str(&b, strs[j], len);
    }
    return set_value(w, key, strlen(key), GGUF_TYPE_ARRAY, &b);
}

int gguf_writer_copy_kv(struct gguf_writer *w, const struct gguf *g, int64_t i) {
    struct gguf_str key = gguf_kv_key(g, i);
    enum gguf_type type = gguf_kv_type(g, i);
    if (type == GGUF_TYPE_STRING) {
        struct gguf_str s = gguf_kv_str(g, i);
        return set_str_n(w, key.data, (size_t)key.len, s.data, s.len);
    }
    if (type != GGUF_TYPE_ARRAY) {
        struct buf b;
        buf_init(&b);
        buf_append(&b, gguf_kv_arr_data(g, i), gguf_type_size(type));
        return set_value(w, key.data, (size_t)key.len, type, &b);
    }
    enum gguf_type elem = gguf_kv_arr_type(g, i);
    uint64_t n = gguf_kv_arr_n(g, i);
    if (elem != GGUF_TYPE_STRING)
        return set_arr_n(w, key.data, (size_t)key.len, elem, gguf_kv_arr_data(g, i), n);
    struct buf b;
    buf_init(&b);
    enc_u32(&b, GGUF_TYPE_STRING);
    enc_u64(&b, n);
    for (uint64_t j = 0; j < n; j++) {
        struct gguf_str s = gguf_kv_arr_str(g, i, j);
        enc_str(&b, s.data, s.len);
    }
    return set_value(w, key.data, (size_t)key.len, GGUF_TYPE_ARRAY, &b);
}

int gguf_writer_remove_key(struct gguf_writer *w, const char *key) {
    CHECK(!w->out);
    int64_t i = find_kv(w, key, strlen(key));
    if (i < 0) return ERR_NOT_FOUND;
    if (is_alignment_key(key, strlen(key))) w->alignment = GGUF_DEFAULT_ALIGNMENT;
    mem_free(w->kvs[i].key);
    mem_free(w->kvs[i].value);
    memmove(&w->kvs[i], &w->kvs[i + 1], (size_t)(w->n_kv - i - 1) * sizeof(w->kvs[0]));
    w->n_kv--;
    return 0;
}

/* ======================================================================================
 * Tensors and output
 *
 * The header (everything before the data section) is built in memory, then the tensor data is
 * written straight from the caller's buffers, each followed by zero padding to the alignment.
 * A failed write removes the partial file, so a path either holds a complete GGUF or nothing
 * of ours.
 * ====================================================================================== */

int gguf_writer_add_tensor(struct gguf_writer *w, const char *name, uint32_t type, int n_dims,
                           const int64_t *ne, const void *data, uint64_t n_bytes) {
    CHECK(!w->out);
    size_t name_len = strlen(name);
    int64_t block_elems, block_bytes;
    if (name_len == 0 || name_len > WRITER_MAX_NAME_LEN || n_dims < 1 || n_dims > GGUF_MAX_DIMS ||
        gguf_type_block(type, &block_elems, &block_bytes))
        return ERR_INVALID;
    struct writer_tensor t = {.type = type, .n_dims = n_dims, .data = data};
    memcpy(t.name, name, name_len + 1);
    int64_t n_elems = 1;
    for (int d = 0; d < GGUF_MAX_DIMS; d++) {
        t.ne[d] = d < n_dims ? ne[d] : 1;
        if (t.ne[d] < 0 || __builtin_mul_overflow(n_elems, t.ne[d], &n_elems)) return ERR_INVALID;
    }
    if (t.ne[0] % block_elems != 0 || __builtin_mul_overflow((uint64_t)(n_elems / block_elems),
                                                             (uint64_t)block_bytes, &t.n_bytes))
        return ERR_INVALID;
    if (n_bytes != t.n_bytes && !(data == NULL && n_bytes == 0)) return ERR_INVALID;
    for (int64_t i = 0; i < w->n_tensors; i++)
        if (strcmp(w->tensors[i].name, name) == 0) return ERR_INVALID;
    if (w->n_tensors == w->cap_tensors) {
        int64_t cap = w->cap_tensors ? 2 * w->cap_tensors : 64;
        struct writer_tensor *ts = mem_realloc(w->tensors, (size_t)cap * sizeof(*ts));
        if (!ts) return ERR_NOMEM;
        w->tensors = ts;
        w->cap_tensors = cap;
    }
    w->tensors[w->n_tensors++] = t;
    return 0;
}

static uint64_t pad_to(uint64_t x, uint64_t align) {
    return (align - x % align) % align;
}

/* Header, metadata, tensor infos and the padding before the data section. */
static void build_header(struct gguf_writer *w, struct buf *b) {
    int has_alignment_key = find_kv(w, "general.alignment", 17) >= 0;
    int add_alignment_key = !has_alignment_key && w->alignment != GGUF_DEFAULT_ALIGNMENT;
    buf_append(b, "GGUF", 4);
    enc_u32(b, 3);
    enc_u64(b, (uint64_t)w->n_tensors);
    enc_u64(b, (uint64_t)(w->n_kv + add_alignment_key));
    for (int64_t i = 0; i < w->n_kv; i++) {
        const struct writer_kv *kv = &w->kvs[i];
        enc_str(b, kv->key, kv->key_len);
        enc_u32(b, kv->type);
        if (is_alignment_key(kv->key, kv->key_len))
            enc_u32(b, w->alignment); /* set_alignment may have changed it since */
        else
            buf_append(b, kv->value, kv->value_len);
    }
    if (add_alignment_key) {
        enc_str(b, "general.alignment", 17);
        enc_u32(b, GGUF_TYPE_UINT32);
        enc_u32(b, w->alignment);
    }
    uint64_t offset = 0;
    for (int64_t i = 0; i < w->n_tensors; i++) {
        struct writer_tensor *t = &w->tensors[i];
        enc_str(b, t->name, strlen(t->name));
        enc_u32(b, (uint32_t)t->n_dims);
        for (int d = 0; d < t->n_dims; d++) enc_u64(b, (uint64_t)t->ne[d]);
        enc_u32(b, t->type);
        t->offset = offset;
        enc_u64(b, offset);
        offset += t->n_bytes + pad_to(t->n_bytes, w->alignment);
    }
    if (w->n_tensors > 0)
        for (uint64_t k = pad_to(b->len, w->alignment); k > 0; k--) buf_append_char(b, 0);
}

static int stream_fail(struct gguf_writer *w, struct error *err, int code, const char *what) {
    int e = errno;
    error_set(err, code, "gguf: %s: %s%s%s", w->out_path ? w->out_path : "(no file)", what,
              code == ERR_IO ? ": " : "", code == ERR_IO ? strerror(e) : "");
    stream_abort(w);
    return code;
}

static int write_zeros(FILE *f, uint64_t n) {
    static const char zeros[64];
    while (n > 0) {
        size_t k = n < sizeof(zeros) ? (size_t)n : sizeof(zeros);
        if (fwrite(zeros, 1, k, f) != k) return -1;
        n -= k;
    }
    return 0;
}

int gguf_writer_stream_begin(struct gguf_writer *w, const char *path, struct error *err) {
    if (w->out) return error_set(err, ERR_INVALID, "gguf: %s: a stream is already open", path);
    struct buf b;
    buf_init(&b);
    build_header(w, &b);
    if (b.failed) {
        buf_free(&b);
        return error_set(err, ERR_NOMEM, "gguf: out of memory");
    }
    w->out_path = mem_strdup(path);
    if (!w->out_path) {
        buf_free(&b);
        return error_set(err, ERR_NOMEM, "gguf: out of memory");
    }
    w->out = fopen(path, "wb");
    if (!w->out) {
        int e = errno;
        buf_free(&b);
        mem_free(w->out_path);
        w->out_path = NULL;
        return error_set(err, ERR_IO, "gguf: %s: cannot create: %s", path, strerror(e));
    }
    w->next_tensor = 0;
    size_t n = b.len;
    int ok = fwrite(b.data, 1, n, w->out) == n;
    buf_free(&b);
    if (!ok) return stream_fail(w, err, ERR_IO, "write failed");
    return 0;
}

int gguf_writer_stream_tensor(struct gguf_writer *w, const void *data, uint64_t n_bytes,
                              struct error *err) {
    if (!w->out) return error_set(err, ERR_INVALID, "gguf: no stream is open");
    if (w->next_tensor >= w->n_tensors)
        return stream_fail(w, err, ERR_INVALID, "more tensor data than tensors");
    const struct writer_tensor *t = &w->tensors[w->next_tensor];
    if (n_bytes != t->n_bytes || (n_bytes > 0 && !data)) {
        char what[160];
        snprintf(what, sizeof(what), "tensor '%s' needs %llu bytes, got %llu", t->name,
                 (unsigned long long)t->n_bytes, (unsigned long long)n_bytes);
        return stream_fail(w, err, ERR_INVALID, what);
    }
    if (fwrite(data, 1, (size_t)n_bytes, w->out) != (size_t)n_bytes ||
        write_zeros(w->out, pad_to(n_bytes, w->alignment)))
        return stream_fail(w, err, ERR_IO, "write failed");
    w->next_tensor++;
    return 0;
}

int gguf_writer_stream_end(struct gguf_writer *w, struct error *err) {
    if (!w->out) return error_set(err, ERR_INVALID, "gguf: no stream is open");
    if (w->next_tensor != w->n_tensors) {
        char what[120];
        snprintf(what, sizeof(what), "stream ended after %lld of %lld tensors",
                 (long long)w->next_tensor, (long long)w->n_tensors);
        return stream_fail(w, err, ERR_INVALID, what);
    }
    FILE *f = w->out;
    int bad = ferror(f);
    w->out = NULL;
    if (fclose(f) != 0 || bad) {
        int e = errno;
        remove(w->out_path);
        error_set(err, ERR_IO, "gguf: %s: write failed: %s", w->out_path, strerror(e));
        mem_free(w->out_path);
        w->out_path = NULL;
        return ERR_IO;
    }
    mem_free(w->out_path);
    w->out_path = NULL;
    return 0;
}

int gguf_writer_write_file(struct gguf_writer *w, const char *path, struct error *err) {
    for (int64_t i = 0; i < w->n_tensors; i++)
        if (!w->tensors[i].data && w->tensors[i].n_bytes > 0)
            return error_set(err, ERR_INVALID, "gguf: %s: tensor '%s' has no data", path,
                             w->tensors[i].name);
    int rc = gguf_writer_stream_begin(w, path, err);
    for (int64_t i = 0; i < w->n_tensors && !rc; i++)
        rc = gguf_writer_stream_tensor(w, w->tensors[i].data, w->tensors[i].n_bytes, err);
    if (!rc) rc = gguf_writer_stream_end(w, err);
    return rc;
}
