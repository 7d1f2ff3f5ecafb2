/* gguf_read.c: open, validate and query GGUF files (see gguf.h; format: docs/reference/gguf.md).
 *
 * A file (or each shard) is mmapped read-only and parsed once, through a bounded cursor, into
 * small index arrays: struct gguf_kv per metadata record and struct gguf_tensor_info per tensor.
 * Keys, strings and numeric arrays stay in the mapping (pointer + length); only tensor names
 * (NUL-terminated copies) and the element table of string arrays are allocated. Everything the
 * accessors rely on is validated here, so after a successful open no accessor can read outside
 * the mapping.
 */
#include "gguf.h"

#include "../base/mem.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define GGUF_MAGIC        0x46554747u  /* "GGUF" read as a little-endian u32 */
#define GGUF_MAX_STR_LEN  (1ull << 30) /* ggml's limit for string values */
#define GGUF_MAX_KEY_LEN  65535ull
#define GGUF_MAX_ARR_N    (1ull << 30) /* ggml's limit for array element counts */
#define GGUF_MAX_NAME_LEN 63ull        /* ggml's name buffer is 64 bytes with the NUL */
/* Smallest possible records, used to bound counts against the file size before allocating:
 * kv = key length (8) + 1 key byte + type (4) + 1 value byte; tensor info = name length (8) +
 * 1 name byte + n_dims (4) + one ne (8) + type (4) + offset (8). */
#define GGUF_MIN_KV_BYTES     14ull
#define GGUF_MIN_TENSOR_BYTES 33ull

struct gguf_kv {
    struct gguf_str key;     /* into the mapping, 1..65535 bytes */
    enum gguf_type type;     /* value type */
    enum gguf_type arr_type; /* element type for arrays, GGUF_TYPE_COUNT for scalars */
    uint64_t n;              /* array elements; 1 for scalars */
    const uint8_t *data;     /* scalar value, string bytes, or first packed numeric element */
    uint64_t str_len;        /* bytes of a string scalar */
    struct gguf_str *strs;   /* [n] elements of a string array (owned), else NULL */
    uint64_t pos;            /* byte offset of the value in its file, for messages */
};

/* One parsed file: the whole model, or one shard of it. */
struct gguf_file {
    const uint8_t *base;  /* mapping or caller buffer, n_bytes long */
    uint64_t n_bytes;     /* file size */
    int is_mapped;        /* 1: munmap at close (a file mapping or an anonymous copy) */
    uint32_t version;     /* 2 or 3 */
    uint32_t alignment;   /* general.alignment or 32 */
    uint64_t data_offset; /* start of the data section (aligned) */
    struct gguf_kv *kvs;  /* [n_kv] */
    int64_t n_kv;
    struct gguf_tensor_info *tensors; /* [n_tensors] */
    int64_t n_tensors;
    char *names;        /* [n_tensors][64] NUL-terminated tensor names */
    uint64_t *info_pos; /* [n_tensors] byte offset of each tensor-info record */
};

/* Open addressing hash index from a name to an array index (keys or tensor names). */
struct name_index {
    int64_t *slots; /* [mask + 1], -1 = empty */
    uint64_t mask;  /* capacity - 1, capacity a power of two >= 2 * entries */
};

struct gguf {
    struct gguf_file *files; /* [n_files], shard order */
    int n_files;
    const struct gguf_kv *kvs; /* = files[0].kvs: metadata comes from the first shard */
    int64_t n_kv;
    struct gguf_tensor_info *tensors; /* [n_tensors] all shards, in shard order */
    int64_t n_tensors;
    int owns_tensors;               /* 1 if tensors is a concatenation (several shards) */
    struct name_index kv_index;     /* key -> kv index */
    struct name_index tensor_index; /* name -> tensor index */
};

/* ======================================================================================
 * Little-endian reads and the bounded cursor
 *
 * Every read goes through cur_* and first checks `size - pos >= n`, which cannot overflow
 * because pos <= size always holds. The first failure formats the message (with the byte
 * offset where the bad field starts and, for files, the path) and is returned unchanged up
 * the call chain, so the caller sees the first problem, not a consequence of it.
 * ====================================================================================== */

static uint16_t rd_u16(const uint8_t *p) {
    return (uint16_t)(p[0] | (unsigned)p[1] << 8);
}

static uint32_t rd_u32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t rd_u64(const uint8_t *p) {
    return (uint64_t)rd_u32(p) | (uint64_t)rd_u32(p + 4) << 32;
}

struct cursor {
    const uint8_t *base;
    uint64_t size;    /* bytes at base */
    uint64_t pos;     /* next byte to read, <= size */
    const char *path; /* for messages; NULL for memory buffers */
    struct error *err;
};

static int cur_fail(struct cursor *c, uint64_t at, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int cur_fail(struct cursor *c, uint64_t at, int code, const char *fmt, ...) {
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (c->path)
        return error_set(c->err, code, "gguf: %s: at byte %llu: %s", c->path,
                         (unsigned long long)at, msg);
    return error_set(c->err, code, "gguf: at byte %llu: %s", (unsigned long long)at, msg);
}

static uint64_t cur_left(const struct cursor *c) {
    return c->size - c->pos;
}

static int cur_need(struct cursor *c, uint64_t n, const char *what) {
    if (cur_left(c) >= n) return 0;
    return cur_fail(c, c->pos, ERR_FORMAT, "%s runs past end of file (size %llu)", what,
                    (unsigned long long)c->size);
}

static int cur_u32(struct cursor *c, uint32_t *v, const char *what) {
    int rc = cur_need(c, 4, what);
    if (rc) return rc;
    *v = rd_u32(c->base + c->pos);
    c->pos += 4;
    return 0;
}

static int cur_u64(struct cursor *c, uint64_t *v, const char *what) {
    int rc = cur_need(c, 8, what);
    if (rc) return rc;
    *v = rd_u64(c->base + c->pos);
    c->pos += 8;
    return 0;
}

/* A GGUF string: u64 length, then that many bytes, which must lie inside the file. */
static int cur_str(struct cursor *c, struct gguf_str *s, uint64_t max_len, const char *what) {
    uint64_t at = c->pos, len;
    int rc = cur_u64(c, &len, what);
    if (rc) return rc;
    if (len > max_len)
        return cur_fail(c, at, ERR_FORMAT, "%s length %llu exceeds the limit %llu", what,
                        (unsigned long long)len, (unsigned long long)max_len);
    if (len > cur_left(c))
        return cur_fail(c, at, ERR_FORMAT, "%s length %llu runs past end of file (size %llu)", what,
                        (unsigned long long)len, (unsigned long long)c->size);
    s->data = (const char *)(c->base + c->pos);
    s->len = len;
    c->pos += len;
    return 0;
}

/* A printable, truncated copy of untrusted text for error messages. */
static const char *shown(char *buf, size_t cap, const char *s, uint64_t n) {
    size_t o = 0;
    uint64_t i = 0;
    for (; i < n && o + 4 < cap; i++) {
        unsigned char ch = (unsigned char)s[i];
        buf[o++] = ch >= 0x20 && ch < 0x7f ? (char)ch : '?';
    }
    if (i < n) {
        memcpy(buf + o, "...", 3);
        o += 3;
    }
    buf[o] = 0;
    return buf;
}

/* ======================================================================================
 * Name index
 *
 * Keys and tensor names are looked up by the model loader once per weight, and a hostile file
 * may hold millions of records, so duplicate detection and lookups use a hash index instead
 * of pairwise comparison. The index stores array positions; the names stay where they are.
 * ====================================================================================== */

typedef struct gguf_str (*name_at_fn)(const void *ctx, int64_t i);

static uint64_t name_hash(const char *s, uint64_t n) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (uint64_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

static int index_init(struct name_index *ix, int64_t n_entries) {
    uint64_t cap = 16;
    while (cap < 2 * (uint64_t)n_entries) cap *= 2;
    ix->slots = mem_alloc(cap * sizeof(int64_t));
    if (!ix->slots) return ERR_NOMEM;
    for (uint64_t i = 0; i < cap; i++) ix->slots[i] = -1;
    ix->mask = cap - 1;
    return 0;
}

static void index_free(struct name_index *ix) {
    mem_free(ix->slots);
    ix->slots = NULL;
}

/* Returns the index stored under name, or -1. With insert >= 0, stores insert if absent. */
static int64_t index_lookup(struct name_index *ix, const char *s, uint64_t n, name_at_fn name_at,
                            const void *ctx, int64_t insert) {
    if (!ix->slots) return -1;
    for (uint64_t h = name_hash(s, n) & ix->mask;; h = (h + 1) & ix->mask) {
        int64_t i = ix->slots[h];
        if (i < 0) {
            if (insert >= 0) ix->slots[h] = insert;
            return -1;
        }
        struct gguf_str other = name_at(ctx, i);
        if (other.len == n && memcmp(other.data, s, n) == 0) return i;
    }
}

static struct gguf_str kv_name_at(const void *ctx, int64_t i) {
    return ((const struct gguf_kv *)ctx)[i].key;
}

static struct gguf_str tensor_name_at(const void *ctx, int64_t i) {
    const char *name = ((const struct gguf_tensor_info *)ctx)[i].name;
    return (struct gguf_str){name, strlen(name)};
}

/* ======================================================================================
 * Parsing one file
 *
 * The order follows the file: header, metadata records, tensor infos, data section. Counts
 * are bounded by what the remaining bytes could possibly hold before anything is allocated,
 * so a 40-byte file cannot make us allocate gigabytes. Tensor data ranges are checked last,
 * when the data section start (which depends on general.alignment) is known.
 * ====================================================================================== */

static int is_integer_type(enum gguf_type t) {
    switch (t) {
    case GGUF_TYPE_UINT8:
    case GGUF_TYPE_INT8:
    case GGUF_TYPE_UINT16:
    case GGUF_TYPE_INT16:
    case GGUF_TYPE_UINT32:
    case GGUF_TYPE_INT32:
    case GGUF_TYPE_UINT64:
    case GGUF_TYPE_INT64:
    case GGUF_TYPE_BOOL:
        return 1;
    default:
        return 0;
    }
}

/* Integer (or bool) value at p; ERR_FORMAT for other types or a u64 above INT64_MAX. */
static int value_to_i64(enum gguf_type t, const uint8_t *p, int64_t *out) {
    switch (t) {
    case GGUF_TYPE_UINT8:
    case GGUF_TYPE_BOOL:
        *out = p[0];
        return 0;
    case GGUF_TYPE_INT8:
        *out = (int8_t)p[0];
        return 0;
    case GGUF_TYPE_UINT16:
        *out = rd_u16(p);
        return 0;
    case GGUF_TYPE_INT16:
        *out = (int16_t)rd_u16(p);
        return 0;
    case GGUF_TYPE_UINT32:
        *out = rd_u32(p);
        return 0;
    case GGUF_TYPE_INT32:
        *out = (int32_t)rd_u32(p);
        return 0;
    case GGUF_TYPE_INT64:
        *out = (int64_t)rd_u64(p);
        return 0;
    case GGUF_TYPE_UINT64: {
        uint64_t v = rd_u64(p);
        if (v > (uint64_t)INT64_MAX) return ERR_FORMAT;
        *out = (int64_t)v;
        return 0;
    }
    default:
        return ERR_FORMAT;
    }
}

static int value_to_f64(enum gguf_type t, const uint8_t *p, double *out) {
    if (t == GGUF_TYPE_FLOAT32) {
        uint32_t u = rd_u32(p);
        float f;
        memcpy(&f, &u, 4);
        *out = f;
        return 0;
    }
    if (t == GGUF_TYPE_FLOAT64) {
        uint64_t u = rd_u64(p);
        memcpy(out, &u, 8);
        return 0;
    }
    if (t == GGUF_TYPE_UINT64) {
        *out = (double)rd_u64(p);
        return 0;
    }
    int64_t v;
    if (t == GGUF_TYPE_BOOL || value_to_i64(t, p, &v)) return ERR_FORMAT;
    *out = (double)v;
    return 0;
}

static int parse_array(struct cursor *c, struct gguf_kv *kv, const char *key) {
    uint64_t at = c->pos;
    uint32_t elem;
    int rc = cur_u32(c, &elem, "array element type");
    if (rc) return rc;
    if (elem == GGUF_TYPE_ARRAY)
        return cur_fail(c, at, ERR_FORMAT, "key '%s': nested arrays are not supported", key);
    if (elem >= GGUF_TYPE_COUNT)
        return cur_fail(c, at, ERR_FORMAT, "key '%s': unknown array element type %u", key, elem);
    kv->arr_type = (enum gguf_type)elem;
    at = c->pos;
    rc = cur_u64(c, &kv->n, "array length");
    if (rc) return rc;
    if (kv->n > GGUF_MAX_ARR_N)
        return cur_fail(c, at, ERR_FORMAT, "key '%s': array length %llu exceeds the limit %llu",
                        key, (unsigned long long)kv->n, GGUF_MAX_ARR_N);
    kv->data = c->base + c->pos;
    if (elem != GGUF_TYPE_STRING) {
        uint64_t n_bytes = kv->n * gguf_type_size(kv->arr_type); /* <= 2^33: no overflow */
        if (n_bytes > cur_left(c))
            return cur_fail(c, at, ERR_FORMAT,
                            "key '%s': array of %llu %s (%llu bytes) runs past end of file "
                            "(size %llu)",
                            key, (unsigned long long)kv->n, gguf_type_name(kv->arr_type),
                            (unsigned long long)n_bytes, (unsigned long long)c->size);
        if (elem == GGUF_TYPE_BOOL) {
            for (uint64_t j = 0; j < kv->n; j++)
                if (c->base[c->pos + j] > 1)
                    return cur_fail(c, c->pos + j, ERR_FORMAT,
                                    "key '%s': bool array element %llu has value %u (not 0/1)", key,
                                    (unsigned long long)j, c->base[c->pos + j]);
        }
        c->pos += n_bytes;
        return 0;
    }
    /* Each string needs at least its 8-byte length: bound n before allocating the table. */
    if (kv->n > cur_left(c) / 8)
        return cur_fail(c, at, ERR_FORMAT,
                        "key '%s': array of %llu strings runs past end of file (size %llu)", key,
                        (unsigned long long)kv->n, (unsigned long long)c->size);
    kv->data = NULL;
    if (kv->n > 0) {
        kv->strs = mem_alloc(kv->n * sizeof(struct gguf_str));
        if (!kv->strs) return error_set(c->err, ERR_NOMEM, "gguf: out of memory");
    }
    for (uint64_t j = 0; j < kv->n; j++) {
        rc = cur_str(c, &kv->strs[j], GGUF_MAX_STR_LEN, "string array element");
        if (rc) return rc;
    }
    return 0;
}

static int parse_kv(struct cursor *c, struct gguf_file *f, struct name_index *ix, int64_t i) {
    struct gguf_kv *kv = &f->kvs[i];
    char key[80];
    uint64_t at = c->pos;
    int rc = cur_str(c, &kv->key, GGUF_MAX_KEY_LEN, "key");
    if (rc) return rc;
    if (kv->key.len == 0)
        return cur_fail(c, at, ERR_FORMAT, "empty key (record %lld)", (long long)i);
    shown(key, sizeof(key), kv->key.data, kv->key.len);
    if (index_lookup(ix, kv->key.data, kv->key.len, kv_name_at, f->kvs, i) >= 0)
        return cur_fail(c, at, ERR_FORMAT, "duplicate key '%s'", key);

    uint32_t type;
    at = c->pos;
    rc = cur_u32(c, &type, "value type");
    if (rc) return rc;
    if (type >= GGUF_TYPE_COUNT)
        return cur_fail(c, at, ERR_FORMAT, "key '%s': unknown value type %u", key, type);
    kv->type = (enum gguf_type)type;
    kv->arr_type = GGUF_TYPE_COUNT;
    kv->n = 1;
    kv->pos = c->pos;
    kv->data = c->base + c->pos;
    if (type == GGUF_TYPE_ARRAY) return parse_array(c, kv, key);
    if (type == GGUF_TYPE_STRING) {
        struct gguf_str s;
        rc = cur_str(c, &s, GGUF_MAX_STR_LEN, "string value");
        if (rc) return rc;
        kv->data = (const uint8_t *)s.data;
        kv->str_len = s.len;
        return 0;
    }
    uint64_t size = gguf_type_size(kv->type);
    rc = cur_need(c, size, "value");
    if (rc) return rc;
    if (type == GGUF_TYPE_BOOL && kv->data[0] > 1)
        return cur_fail(c, kv->pos, ERR_FORMAT, "key '%s': bool value %u (not 0/1)", key,
                        kv->data[0]);
    c->pos += size;
    return 0;
}

static int parse_tensor_info(struct cursor *c, struct gguf_file *f, int64_t i) {
    struct gguf_tensor_info *t = &f->tensors[i];
    char *name = f->names + i * (GGUF_MAX_NAME_LEN + 1);
    struct gguf_str s;
    uint64_t at = c->pos;
    f->info_pos[i] = at;
    int rc = cur_str(c, &s, GGUF_MAX_NAME_LEN, "tensor name");
    if (rc) return rc;
    if (s.len == 0)
        return cur_fail(c, at, ERR_FORMAT, "tensor %lld has an empty name", (long long)i);
    if (memchr(s.data, 0, s.len))
        return cur_fail(c, at, ERR_FORMAT, "tensor %lld: name contains a NUL byte", (long long)i);
    memcpy(name, s.data, s.len);
    name[s.len] = 0;
    t->name = name;
    char shown_name[80];
    shown(shown_name, sizeof(shown_name), s.data, s.len);

    uint32_t n_dims;
    at = c->pos;
    rc = cur_u32(c, &n_dims, "tensor n_dims");
    if (rc) return rc;
    if (n_dims < 1 || n_dims > GGUF_MAX_DIMS)
        return cur_fail(c, at, ERR_FORMAT, "tensor '%s': n_dims %u is not in 1..%d", shown_name,
                        n_dims, GGUF_MAX_DIMS);
    t->n_dims = (int)n_dims;
    int64_t n_elems = 1;
    for (int d = 0; d < GGUF_MAX_DIMS; d++) {
        t->ne[d] = 1;
        if (d >= t->n_dims) continue;
        uint64_t ne;
        at = c->pos;
        rc = cur_u64(c, &ne, "tensor dimension");
        if (rc) return rc;
        if (ne > (uint64_t)INT64_MAX)
            return cur_fail(c, at, ERR_FORMAT, "tensor '%s': ne[%d] = %llu is negative as int64",
                            shown_name, d, (unsigned long long)ne);
        t->ne[d] = (int64_t)ne;
        if (__builtin_mul_overflow(n_elems, t->ne[d], &n_elems))
            return cur_fail(c, at, ERR_FORMAT, "tensor '%s': element count overflows int64",
                            shown_name);
    }
    at = c->pos;
    rc = cur_u32(c, &t->type, "tensor type");
    if (rc) return rc;
    int64_t block_elems, block_bytes;
    if (gguf_type_block(t->type, &block_elems, &block_bytes))
        return cur_fail(c, at, t->type > 42 ? ERR_UNSUPPORTED : ERR_FORMAT,
                        "tensor '%s': unknown tensor type id %u", shown_name, t->type);
    if (t->ne[0] % block_elems != 0)
        return cur_fail(c, at, ERR_FORMAT,
                        "tensor '%s': ne[0] = %lld is not a multiple of the %s block size %lld",
                        shown_name, (long long)t->ne[0], gguf_tensor_type_name(t->type),
                        (long long)block_elems);
    /* ne[0] is a multiple of the block, so n_elems is too. */
    if (__builtin_mul_overflow((uint64_t)(n_elems / block_elems), (uint64_t)block_bytes,
                               &t->n_bytes))
        return cur_fail(c, at, ERR_FORMAT, "tensor '%s': byte size overflows", shown_name);
    at = c->pos;
    rc = cur_u64(c, &t->offset, "tensor offset");
    if (rc) return rc;
    if (t->offset % f->alignment != 0)
        return cur_fail(c, at, ERR_FORMAT,
                        "tensor '%s': offset %llu is not a multiple of the alignment %u",
                        shown_name, (unsigned long long)t->offset, f->alignment);
    return 0;
}

struct span {
    uint64_t begin, end; /* [begin, end) relative to the data section */
    int64_t i;           /* tensor index */
};

static int span_cmp(const void *a, const void *b) {
    const struct span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

/* Every tensor's data inside the file and no two tensors sharing bytes. Gaps are tolerated:
 * ggml writes offsets dense and in order, but nothing we do depends on that. */
static int check_data_ranges(struct cursor *c, struct gguf_file *f, int shard) {
    if (f->n_tensors == 0) return 0;
    if (f->data_offset > f->n_bytes)
        return cur_fail(c, f->n_bytes, ERR_FORMAT,
                        "data section starts at %llu, past end of file (size %llu)",
                        (unsigned long long)f->data_offset, (unsigned long long)f->n_bytes);
    uint64_t avail = f->n_bytes - f->data_offset;
    for (int64_t i = 0; i < f->n_tensors; i++) {
        struct gguf_tensor_info *t = &f->tensors[i];
        if (t->offset > avail || t->n_bytes > avail - t->offset)
            return cur_fail(c, f->info_pos[i], ERR_FORMAT,
                            "tensor '%s': data (offset %llu, %llu bytes) runs past end of file "
                            "(data section at %llu, size %llu)",
                            t->name, (unsigned long long)t->offset, (unsigned long long)t->n_bytes,
                            (unsigned long long)f->data_offset, (unsigned long long)f->n_bytes);
        t->file_offset = f->data_offset + t->offset;
        t->data = f->base + t->file_offset;
        t->shard = shard;
    }
    struct span *spans = mem_alloc((size_t)f->n_tensors * sizeof(struct span));
    if (!spans) return error_set(c->err, ERR_NOMEM, "gguf: out of memory");
    for (int64_t i = 0; i < f->n_tensors; i++)
        spans[i] =
            (struct span){f->tensors[i].offset, f->tensors[i].offset + f->tensors[i].n_bytes, i};
    qsort(spans, (size_t)f->n_tensors, sizeof(struct span), span_cmp);
    int rc = 0;
    for (int64_t k = 1; k < f->n_tensors && !rc; k++) {
        const struct span *a = &spans[k - 1], *b = &spans[k];
        if (a->end > b->begin)
            rc = cur_fail(c, f->info_pos[b->i], ERR_FORMAT,
                          "tensor '%s' data [%llu, %llu) overlaps tensor '%s' [%llu, %llu)",
                          f->tensors[b->i].name, (unsigned long long)b->begin,
                          (unsigned long long)b->end, f->tensors[a->i].name,
                          (unsigned long long)a->begin, (unsigned long long)a->end);
    }
    mem_free(spans);
    return rc;
}

static int parse_header(struct cursor *c, struct gguf_file *f, uint64_t *n_tensors,
                        uint64_t *n_kv) {
    uint32_t magic;
    if (c->size < 4)
        return cur_fail(c, 0, ERR_FORMAT, "file too short for the GGUF magic (size %llu)",
                        (unsigned long long)c->size);
    int rc = cur_u32(c, &magic, "magic");
    if (rc) return rc;
    if (magic != GGUF_MAGIC)
        return cur_fail(c, 0, ERR_FORMAT, "bad magic %02x %02x %02x %02x (expected 'GGUF')",
                        c->base[0], c->base[1], c->base[2], c->base[3]);
    rc = cur_u32(c, &f->version, "version");
    if (rc) return rc;
    if (f->version != 0 && (f->version & 0xFFFF) == 0)
        return cur_fail(c, 4, ERR_UNSUPPORTED,
                        "version field 0x%08x looks like a big-endian file, which is not "
                        "supported",
                        f->version);
    if (f->version < 2 || f->version > 3)
        return cur_fail(c, 4, ERR_UNSUPPORTED, "GGUF version %u is not supported (only 2 and 3)",
                        f->version);
    rc = cur_u64(c, n_tensors, "tensor count");
    if (!rc) rc = cur_u64(c, n_kv, "metadata count");
    if (rc) return rc;
    uint64_t left = cur_left(c);
    if (*n_kv > left / GGUF_MIN_KV_BYTES)
        return cur_fail(c, 16, ERR_FORMAT,
                        "metadata count %llu is impossible for a file of %llu bytes",
                        (unsigned long long)*n_kv, (unsigned long long)c->size);
    if (*n_tensors > (left - *n_kv * GGUF_MIN_KV_BYTES) / GGUF_MIN_TENSOR_BYTES)
        return cur_fail(c, 8, ERR_FORMAT,
                        "tensor count %llu is impossible for a file of %llu bytes",
                        (unsigned long long)*n_tensors, (unsigned long long)c->size);
    return 0;
}

static void file_free(struct gguf_file *f) {
    if (f->kvs)
        for (int64_t i = 0; i < f->n_kv; i++) mem_free(f->kvs[i].strs);
    mem_free(f->kvs);
    mem_free(f->tensors);
    mem_free(f->names);
    mem_free(f->info_pos);
    if (f->is_mapped && f->base) munmap((void *)f->base, f->n_bytes);
    memset(f, 0, sizeof(*f));
}

/* Parses and validates f->base[0..n_bytes). On failure f keeps what it allocated so far and
 * the caller frees it with file_free. */
static int file_parse(struct gguf_file *f, int shard, const char *path, struct error *err) {
    struct cursor c = {f->base, f->n_bytes, 0, path, err};
    struct name_index ix = {0};
    uint64_t n_tensors, n_kv;
    int rc = parse_header(&c, f, &n_tensors, &n_kv);
    if (rc) return rc;
    f->alignment = GGUF_DEFAULT_ALIGNMENT;
    /* Counts are bounded by the file size here, so these sizes cannot overflow. */
    f->kvs = mem_calloc((size_t)n_kv + 1, sizeof(struct gguf_kv));
    f->tensors = mem_calloc((size_t)n_tensors + 1, sizeof(struct gguf_tensor_info));
    f->names = mem_alloc(((size_t)n_tensors + 1) * (GGUF_MAX_NAME_LEN + 1));
    f->info_pos = mem_alloc(((size_t)n_tensors + 1) * sizeof(uint64_t));
    if (!f->kvs || !f->tensors || !f->names || !f->info_pos || index_init(&ix, (int64_t)n_kv)) {
        index_free(&ix);
        return error_set(err, ERR_NOMEM, "gguf: out of memory");
    }
    for (uint64_t i = 0; i < n_kv && !rc; i++) {
        f->n_kv = (int64_t)i + 1; /* so file_free frees this record's string table */
        rc = parse_kv(&c, f, &ix, (int64_t)i);
        const struct gguf_kv *kv = &f->kvs[i];
        if (rc || kv->key.len != 17 || memcmp(kv->key.data, "general.alignment", 17)) continue;
        if (kv->type != GGUF_TYPE_UINT32)
            rc = cur_fail(&c, kv->pos, ERR_FORMAT, "general.alignment must be u32, not %s",
                          gguf_type_name(kv->type));
        else {
            uint32_t a = rd_u32(kv->data);
            if (a == 0 || (a & (a - 1)))
                rc = cur_fail(&c, kv->pos, ERR_FORMAT, "general.alignment %u is not a power of two",
                              a);
            f->alignment = a;
        }
    }
    index_free(&ix);
    if (rc) return rc;
    for (uint64_t i = 0; i < n_tensors; i++) {
        f->n_tensors = (int64_t)i + 1;
        rc = parse_tensor_info(&c, f, (int64_t)i);
        if (rc) return rc;
    }
    /* pos <= size < 2^63 and alignment <= 2^31: no overflow. */
    f->data_offset = (c.pos + f->alignment - 1) / f->alignment * f->alignment;
    return check_data_ranges(&c, f, shard);
}

/* ======================================================================================
 * Opening files and shards
 *
 * A file is mmapped whole (read-only, private) and stays mapped until gguf_close, since tensor
 * data is used in place. A name like model-00001-of-00003.gguf opens the three shards; each is
 * parsed on its own and must agree with its split.no / split.count keys when it has them.
 * ====================================================================================== */

/* 1 when transparent huge pages can be had with madvise (enabled is [always] or [madvise]). */
static int thp_available(void) {
    char buf[128] = {0};
    FILE *fp = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
    if (!fp) return 0;
    size_t n = fread(buf, 1, sizeof(buf) - 1, fp);
    fclose(fp);
    buf[n] = 0;
    return strstr(buf, "[always]") || strstr(buf, "[madvise]");
}

/* MemAvailable in bytes, 0 if unknown. */
static uint64_t mem_available(void) {
    char line[256];
    uint64_t kb = 0;
    FILE *fp = fopen("/proc/meminfo", "r");
    if (!fp) return 0;
    while (fgets(line, sizeof(line), fp))
        if (!strncmp(line, "MemAvailable:", 13)) kb = strtoull(line + 13, NULL, 10);
    fclose(fp);
    return kb * 1024;
}

#define HUGE_PAGE (2u << 20)

/* The file's size bytes read into a fresh anonymous mapping aligned to a huge page (asked for
 * with MADV_HUGEPAGE), then made read-only. Returns the mapping or NULL (errno set). */
static void *file_copy(int fd, size_t size) {
    size_t span = size + HUGE_PAGE;
    char *raw = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) return NULL;
    char *p = (char *)(((uintptr_t)raw + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1));
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t tail = ((size + page - 1) / page) * page; /* mapping kept: [p, p + tail) */
    if (p > raw) munmap(raw, (size_t)(p - raw));
    if (raw + span > p + tail) munmap(p + tail, (size_t)(raw + span - (p + tail)));
    madvise(p, tail, MADV_HUGEPAGE); /* a hint: without it the copy still works */
    size_t done = 0;
    while (done < size) {
        size_t want = size - done < (64u << 20) ? size - done : (64u << 20);
        ssize_t r = pread(fd, p + done, want, (off_t)done);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            int e = r < 0 ? errno : EIO; /* 0: the file shrank under us */
            munmap(p, tail);
            errno = e;
            return NULL;
        }
        done += (size_t)r;
    }
    mprotect(p, tail, PROT_READ);
    return p;
}

static int file_map(struct gguf_file *f, const char *path, enum gguf_load how, struct error *err) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return error_set(err, errno == ENOENT ? ERR_NOT_FOUND : ERR_IO, "gguf: %s: cannot open: %s",
                         path, strerror(errno));
    struct stat st;
    int rc = 0;
    if (fstat(fd, &st) != 0)
        rc = error_set(err, ERR_IO, "gguf: %s: cannot stat: %s", path, strerror(errno));
    else if (!S_ISREG(st.st_mode))
        rc = error_set(err, ERR_IO, "gguf: %s: not a regular file", path);
    else if (st.st_size < 4)
        rc = error_set(err, ERR_FORMAT,
                       "gguf: %s: at byte 0: file too short for a GGUF header "
                       "(size %lld)",
                       path, (long long)st.st_size);
    else if ((uint64_t)st.st_size > SIZE_MAX)
        rc = error_set(err, ERR_IO, "gguf: %s: file too large to map", path);
    int fallback = how == GGUF_LOAD_AUTO; /* auto: a failed copy falls back to the mapping */
    if (!rc && how == GGUF_LOAD_AUTO) {
        uint64_t avail = mem_available();
        how = thp_available() && avail > 0 && (uint64_t)st.st_size <= avail / 4 * 3
                  ? GGUF_LOAD_COPY
                  : GGUF_LOAD_MMAP;
    }
    const void *p = NULL;
    if (!rc && how == GGUF_LOAD_COPY && !(p = file_copy(fd, (size_t)st.st_size))) {
        if (fallback)
            how = GGUF_LOAD_MMAP;
        else
            rc = error_set(err, errno == ENOMEM ? ERR_NOMEM : ERR_IO,
                           "gguf: %s: cannot read into memory: %s", path, strerror(errno));
    }
    if (!rc && how == GGUF_LOAD_MMAP) {
        p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED)
            rc = error_set(err, ERR_IO, "gguf: %s: mmap failed: %s", path, strerror(errno));
    }
    if (!rc) {
        f->base = p;
        f->n_bytes = (uint64_t)st.st_size;
        f->is_mapped = 1;
    }
    close(fd);
    return rc;
}

/* n_split if path names the first shard `*-00001-of-NNNNN.gguf` (NNNNN >= 1), else 0; sets
 * *prefix_len to the length of the part before "-00001". */
static int split_count_from_name(const char *path, size_t *prefix_len) {
    static const char tail[] = "-00001-of-NNNNN.gguf";
    size_t n = strlen(path), tl = sizeof(tail) - 1;
    if (n < tl) return 0;
    const char *t = path + n - tl;
    if (memcmp(t, "-00001-of-", 10) != 0 || strcmp(t + 15, ".gguf") != 0) return 0;
    int count = 0;
    for (int k = 10; k < 15; k++) {
        if (t[k] < '0' || t[k] > '9') return 0;
        count = count * 10 + (t[k] - '0');
    }
    *prefix_len = n - tl;
    return count;
}

static int64_t find_kv(const struct gguf_kv *kvs, int64_t n, const char *key) {
    size_t len = strlen(key);
    for (int64_t i = 0; i < n; i++)
        if (kvs[i].key.len == len && memcmp(kvs[i].key.data, key, len) == 0) return i;
    return -1;
}

/* split.no / split.count of shard k must match the file name when present. */
static int check_split_keys(const struct gguf_file *f, int k, int n_split, const char *path,
                            struct error *err) {
    static const char *const keys[2] = {"split.no", "split.count"};
    const int64_t want[2] = {k, n_split};
    for (int j = 0; j < 2; j++) {
        int64_t i = find_kv(f->kvs, f->n_kv, keys[j]), v;
        if (i < 0) continue;
        if (f->kvs[i].type == GGUF_TYPE_ARRAY || value_to_i64(f->kvs[i].type, f->kvs[i].data, &v))
            return error_set(err, ERR_FORMAT, "gguf: %s: at byte %llu: %s must be an integer", path,
                             (unsigned long long)f->kvs[i].pos, keys[j]);
        if (v != want[j])
            return error_set(err, ERR_FORMAT,
                             "gguf: %s: at byte %llu: %s is %lld, expected %lld "
                             "from the file name",
                             path, (unsigned long long)f->kvs[i].pos, keys[j], (long long)v,
                             (long long)want[j]);
    }
    return 0;
}

/* Builds the tensor table over all files and the two name indexes. */
static int gguf_finish(struct gguf *g, const char *path, struct error *err) {
    g->kvs = g->files[0].kvs;
    g->n_kv = g->files[0].n_kv;
    int64_t n = 0;
    for (int k = 0; k < g->n_files; k++) n += g->files[k].n_tensors;
    if (g->n_files == 1) {
        g->tensors = g->files[0].tensors;
    } else {
        g->tensors = mem_alloc(((size_t)n + 1) * sizeof(struct gguf_tensor_info));
        if (!g->tensors) return error_set(err, ERR_NOMEM, "gguf: out of memory");
        g->owns_tensors = 1;
        int64_t o = 0;
        for (int k = 0; k < g->n_files; k++)
            for (int64_t i = 0; i < g->files[k].n_tensors; i++)
                g->tensors[o++] = g->files[k].tensors[i];
    }
    g->n_tensors = n;
    if (index_init(&g->kv_index, g->n_kv) || index_init(&g->tensor_index, n))
        return error_set(err, ERR_NOMEM, "gguf: out of memory");
    for (int64_t i = 0; i < g->n_kv; i++)
        index_lookup(&g->kv_index, g->kvs[i].key.data, g->kvs[i].key.len, kv_name_at, g->kvs, i);
    int64_t i = 0;
    for (int k = 0; k < g->n_files; k++) {
        for (int64_t j = 0; j < g->files[k].n_tensors; j++, i++) {
            const char *name = g->tensors[i].name;
            int64_t other =
                index_lookup(&g->tensor_index, name, strlen(name), tensor_name_at, g->tensors, i);
            if (other < 0) continue;
            char where[300] = "";
            if (path) snprintf(where, sizeof(where), "%s: ", path);
            if (g->n_files > 1)
                snprintf(where + strlen(where), sizeof(where) - strlen(where), "shard %d: ", k + 1);
            return error_set(err, ERR_FORMAT,
                             "gguf: %sat byte %llu: duplicate tensor name '%s' (also tensor %lld)",
                             where, (unsigned long long)g->files[k].info_pos[j], name,
                             (long long)other);
        }
    }
    return 0;
}

int gguf_open_memory(struct gguf **out, const void *data, size_t n_bytes, struct error *err) {
    *out = NULL;
    struct gguf *g = mem_calloc(1, sizeof(*g));
    if (g) g->files = mem_calloc(1, sizeof(struct gguf_file));
    if (!g || !g->files) {
        mem_free(g);
        return error_set(err, ERR_NOMEM, "gguf: out of memory");
    }
    g->n_files = 1;
    g->files[0].base = data;
    g->files[0].n_bytes = n_bytes;
    int rc = file_parse(&g->files[0], 0, NULL, err);
    if (!rc) rc = gguf_finish(g, NULL, err);
    if (rc) {
        gguf_close(g);
        return rc;
    }
    *out = g;
    return 0;
}

int gguf_open(struct gguf **out, const char *path, struct error *err) {
    return gguf_open_load(out, path, GGUF_LOAD_MMAP, err);
}

int gguf_open_load(struct gguf **out, const char *path, enum gguf_load how, struct error *err) {
    *out = NULL;
    size_t prefix_len = 0;
    int n_split = split_count_from_name(path, &prefix_len);
    if (n_split == 0) n_split = 1;
    struct gguf *g = mem_calloc(1, sizeof(*g));
    char *shard_path = mem_alloc(strlen(path) + 32);
    if (g) g->files = mem_calloc((size_t)n_split, sizeof(struct gguf_file));
    if (!g || !g->files || !shard_path) {
        if (g) mem_free(g->files);
        mem_free(g);
        mem_free(shard_path);
        return error_set(err, ERR_NOMEM, "gguf: out of memory");
    }
    int rc = 0;
    for (int k = 0; k < n_split && !rc; k++) {
        if (n_split == 1)
            strcpy(shard_path, path);
        else
            snprintf(shard_path, strlen(path) + 32, "%.*s-%05d-of-%05d.gguf", (int)prefix_len, path,
                     k + 1, n_split);
        g->n_files = k + 1;
        rc = file_map(&g->files[k], shard_path, how, err);
        if (!rc) rc = file_parse(&g->files[k], k, shard_path, err);
        if (!rc && n_split > 1) rc = check_split_keys(&g->files[k], k, n_split, shard_path, err);
        if (rc && n_split > 1 && err) error_prefix(err, "shard %d of %d", k + 1, n_split);
    }
    if (!rc) rc = gguf_finish(g, path, err);
    if (!rc && n_split > 1) {
        /* split.tensors.count (shard 1) must equal the tensors found over all shards. */
        int64_t total;
        int64_t i = gguf_find_key(g, "split.tensors.count");
        if (i >= 0 && (gguf_get_int(g, "split.tensors.count", &total) || total != g->n_tensors))
            rc = error_set(err, ERR_FORMAT,
                           "gguf: %s: at byte %llu: split.tensors.count does not match the %lld "
                           "tensors found in %d shards",
                           path, (unsigned long long)g->kvs[i].pos, (long long)g->n_tensors,
                           n_split);
    }
    mem_free(shard_path);
    if (rc) {
        gguf_close(g);
        return rc;
    }
    *out = g;
    return 0;
}

void gguf_close(struct gguf *g) {
    if (!g) return;
    if (g->owns_tensors) mem_free(g->tensors);
    index_free(&g->kv_index);
    index_free(&g->tensor_index);
    if (g->files)
        for (int k = 0; k < g->n_files; k++) file_free(&g->files[k]);
    mem_free(g->files);
    mem_free(g);
}

/* ======================================================================================
 * Accessors
 *
 * Index arguments are the caller's responsibility (CHECKed: a bad index is a bug); value types
 * come from the file, so typed lookups return ERR_FORMAT instead of aborting.
 * ====================================================================================== */

uint32_t gguf_version(const struct gguf *g) {
    return g->files[0].version;
}

uint32_t gguf_alignment(const struct gguf *g) {
    return g->files[0].alignment;
}

int gguf_n_shards(const struct gguf *g) {
    return g->n_files;
}

uint64_t gguf_file_bytes(const struct gguf *g) {
    uint64_t n = 0;
    for (int k = 0; k < g->n_files; k++) n += g->files[k].n_bytes;
    return n;
}

int64_t gguf_n_kv(const struct gguf *g) {
    return g->n_kv;
}

int64_t gguf_find_key(const struct gguf *g, const char *key) {
    struct name_index ix = g->kv_index; /* lookup without insert does not modify it */
    return index_lookup(&ix, key, strlen(key), kv_name_at, g->kvs, -1);
}

static const struct gguf_kv *kv_at(const struct gguf *g, int64_t i) {
    CHECK(i >= 0 && i < g->n_kv);
    return &g->kvs[i];
}

struct gguf_str gguf_kv_key(const struct gguf *g, int64_t i) {
    return kv_at(g, i)->key;
}

enum gguf_type gguf_kv_type(const struct gguf *g, int64_t i) {
    return kv_at(g, i)->type;
}

enum gguf_type gguf_kv_arr_type(const struct gguf *g, int64_t i) {
    return kv_at(g, i)->arr_type;
}

uint64_t gguf_kv_arr_n(const struct gguf *g, int64_t i) {
    return kv_at(g, i)->n;
}

const void *gguf_kv_arr_data(const struct gguf *g, int64_t i) {
    const struct gguf_kv *kv = kv_at(g, i);
    if (kv->type == GGUF_TYPE_STRING || kv->arr_type == GGUF_TYPE_STRING) return NULL;
    return kv->data;
}

struct gguf_str gguf_kv_arr_str(const struct gguf *g, int64_t i, uint64_t j) {
    const struct gguf_kv *kv = kv_at(g, i);
    CHECK(kv->type == GGUF_TYPE_ARRAY && kv->arr_type == GGUF_TYPE_STRING && j < kv->n);
    return kv->strs[j];
}

int64_t gguf_kv_arr_int(const struct gguf *g, int64_t i, uint64_t j) {
    const struct gguf_kv *kv = kv_at(g, i);
    CHECK(kv->type == GGUF_TYPE_ARRAY && is_integer_type(kv->arr_type) && j < kv->n);
    const uint8_t *p = kv->data + j * gguf_type_size(kv->arr_type);
    int64_t v;
    if (value_to_i64(kv->arr_type, p, &v)) return INT64_MAX; /* u64 above INT64_MAX */
    return v;
}

double gguf_kv_arr_float(const struct gguf *g, int64_t i, uint64_t j) {
    const struct gguf_kv *kv = kv_at(g, i);
    CHECK(kv->type == GGUF_TYPE_ARRAY && kv->arr_type != GGUF_TYPE_STRING && j < kv->n);
    double v = 0;
    const uint8_t *p = kv->data + j * gguf_type_size(kv->arr_type);
    if (kv->arr_type == GGUF_TYPE_BOOL)
        v = p[0];
    else
        value_to_f64(kv->arr_type, p, &v);
    return v;
}

struct gguf_str gguf_kv_str(const struct gguf *g, int64_t i) {
    const struct gguf_kv *kv = kv_at(g, i);
    CHECK(kv->type == GGUF_TYPE_STRING);
    return (struct gguf_str){(const char *)kv->data, kv->str_len};
}

static const struct gguf_kv *kv_by_key(const struct gguf *g, const char *key) {
    int64_t i = gguf_find_key(g, key);
    return i < 0 ? NULL : &g->kvs[i];
}

int gguf_get_int(const struct gguf *g, const char *key, int64_t *out) {
    const struct gguf_kv *kv = kv_by_key(g, key);
    if (!kv) return ERR_NOT_FOUND;
    int64_t v;
    if (value_to_i64(kv->type, kv->data, &v)) return ERR_FORMAT;
    *out = v;
    return 0;
}

int gguf_get_uint32(const struct gguf *g, const char *key, uint32_t *out) {
    int64_t v;
    int rc = gguf_get_int(g, key, &v);
    if (rc) return rc;
    if (v < 0 || v > (int64_t)UINT32_MAX) return ERR_FORMAT;
    *out = (uint32_t)v;
    return 0;
}

int gguf_get_float(const struct gguf *g, const char *key, double *out) {
    const struct gguf_kv *kv = kv_by_key(g, key);
    if (!kv) return ERR_NOT_FOUND;
    double v;
    if (value_to_f64(kv->type, kv->data, &v)) return ERR_FORMAT;
    *out = v;
    return 0;
}

int gguf_get_bool(const struct gguf *g, const char *key, int *out) {
    const struct gguf_kv *kv = kv_by_key(g, key);
    if (!kv) return ERR_NOT_FOUND;
    int64_t v;
    if (value_to_i64(kv->type, kv->data, &v)) return ERR_FORMAT;
    *out = v != 0;
    return 0;
}

int gguf_get_str(const struct gguf *g, const char *key, struct gguf_str *out) {
    const struct gguf_kv *kv = kv_by_key(g, key);
    if (!kv) return ERR_NOT_FOUND;
    if (kv->type != GGUF_TYPE_STRING) return ERR_FORMAT;
    *out = (struct gguf_str){(const char *)kv->data, kv->str_len};
    return 0;
}

char *gguf_get_strdup(const struct gguf *g, const char *key) {
    struct gguf_str s;
    if (gguf_get_str(g, key, &s)) return NULL;
    return mem_strndup(s.data, (size_t)s.len);
}

int64_t gguf_n_tensors(const struct gguf *g) {
    return g->n_tensors;
}

const struct gguf_tensor_info *gguf_tensor(const struct gguf *g, int64_t i) {
    CHECK(i >= 0 && i < g->n_tensors);
    return &g->tensors[i];
}

const struct gguf_tensor_info *gguf_find_tensor(const struct gguf *g, const char *name) {
    struct name_index ix = g->tensor_index;
    int64_t i = index_lookup(&ix, name, strlen(name), tensor_name_at, g->tensors, -1);
    return i < 0 ? NULL : &g->tensors[i];
}
