/* fuzz_gguf.c: libFuzzer target for the GGUF reader (`make fuzz`).
 *
 * Parses the input with gguf_open_memory and, when it is accepted, reads everything a loader
 * could: every key and value through the typed getters, array elements (capped per array),
 * every tensor and its data bytes (which must lie inside the input), and the name lookups. It
 * then feeds the metadata and tensors to a writer: whatever the reader accepts, the writer must
 * accept too. Any crash, sanitizer report or abort() here is a bug.
 */
#include "../../src/base/mem.h"
#include "../../src/gguf/gguf.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define FUZZ_ARR_CAP 256 /* elements read per array */

static volatile uint64_t g_sink;

static void touch_kv(const struct gguf *g, int64_t i) {
    struct gguf_str key = gguf_kv_key(g, i);
    if (key.len == 0) abort();
    g_sink += (unsigned char)key.data[0] + (unsigned char)key.data[key.len - 1];
    if (gguf_find_key(g, "") >= 0) abort();

    /* Look the key up by name (keys with a NUL byte cannot be named). */
    char name[128];
    int by_name = key.len < sizeof(name) && !memchr(key.data, 0, (size_t)key.len);
    if (by_name) {
        memcpy(name, key.data, (size_t)key.len);
        name[key.len] = 0;
        if (gguf_find_key(g, name) != i) abort();
        int64_t v;
        uint32_t u;
        double d;
        int b;
        struct gguf_str s;
        g_sink += (uint64_t)gguf_get_int(g, name, &v) + (uint64_t)gguf_get_uint32(g, name, &u) +
                  (uint64_t)gguf_get_float(g, name, &d) + (uint64_t)gguf_get_bool(g, name, &b) +
                  (uint64_t)gguf_get_str(g, name, &s);
        char *dup = gguf_get_strdup(g, name);
        if (dup) g_sink += strlen(dup);
        mem_free(dup);
    }

    enum gguf_type t = gguf_kv_type(g, i);
    if (t == GGUF_TYPE_STRING) {
        struct gguf_str s = gguf_kv_str(g, i);
        for (uint64_t k = 0; k < s.len; k += 97) g_sink += (unsigned char)s.data[k];
        if (s.len) g_sink += (unsigned char)s.data[s.len - 1];
        return;
    }
    if (t != GGUF_TYPE_ARRAY) {
        const unsigned char *p = gguf_kv_arr_data(g, i);
        if (!p || gguf_kv_arr_n(g, i) != 1 || gguf_kv_arr_type(g, i) != GGUF_TYPE_COUNT) abort();
        for (size_t k = 0; k < gguf_type_size(t); k++) g_sink += p[k];
        return;
    }
    enum gguf_type et = gguf_kv_arr_type(g, i);
    uint64_t n = gguf_kv_arr_n(g, i);
    const unsigned char *raw = gguf_kv_arr_data(g, i);
    if (et != GGUF_TYPE_STRING && n > 0) g_sink += raw[n * gguf_type_size(et) - 1];
    for (uint64_t j = 0; j < n; j++) {
        if (j == FUZZ_ARR_CAP && n > 2 * FUZZ_ARR_CAP) j = n - FUZZ_ARR_CAP; /* head and tail */
        if (et == GGUF_TYPE_STRING) {
            struct gguf_str s = gguf_kv_arr_str(g, i, j);
            if (s.len) g_sink += (unsigned char)s.data[0] + (unsigned char)s.data[s.len - 1];
        } else {
            g_sink += (uint64_t)(gguf_kv_arr_float(g, i, j) > 0);
            if (et != GGUF_TYPE_FLOAT32 && et != GGUF_TYPE_FLOAT64)
                g_sink += (uint64_t)gguf_kv_arr_int(g, i, j);
        }
    }
}

static void touch_tensors(const struct gguf *g, const uint8_t *data, size_t size) {
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        const struct gguf_tensor_info *t = gguf_tensor(g, i);
        const uint8_t *d = t->data;
        if (d < data || t->n_bytes > size || (size_t)(d - data) > size - t->n_bytes) abort();
        if (t->n_dims < 1 || t->n_dims > GGUF_MAX_DIMS || t->shard != 0) abort();
        if (t->file_offset % gguf_alignment(g) != 0) abort();
        if (t->n_bytes) g_sink += d[0] + d[t->n_bytes - 1];
        int64_t be, bb;
        if (gguf_type_block(t->type, &be, &bb) || t->ne[0] % be) abort();
        g_sink += strlen(gguf_tensor_type_name(t->type));
        if (gguf_find_tensor(g, t->name) != t) abort();
    }
}

/* The writer must take everything the reader accepted. */
static void feed_writer(const struct gguf *g) {
    struct gguf_writer *w;
    if (gguf_writer_create(&w, NULL)) abort();
    for (int64_t i = 0; i < gguf_n_kv(g); i++)
        if (gguf_writer_copy_kv(w, g, i)) abort();
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        const struct gguf_tensor_info *t = gguf_tensor(g, i);
        if (gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne, t->data, t->n_bytes))
            abort();
    }
    gguf_writer_free(w);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    struct gguf *g = NULL;
    struct error err = {0};
    int rc = gguf_open_memory(&g, data, size, &err);
    if (rc) {
        if (g || (rc != ERR_FORMAT && rc != ERR_UNSUPPORTED) || !strstr(err.msg, "at byte"))
            abort();
        return 0;
    }
    g_sink += gguf_version(g) + gguf_alignment(g) + (uint64_t)gguf_n_shards(g) + gguf_file_bytes(g);
    for (int64_t i = 0; i < gguf_n_kv(g); i++) touch_kv(g, i);
    touch_tensors(g, data, size);
    if (gguf_find_tensor(g, "") || gguf_find_tensor(g, "no such tensor")) g_sink++;
    feed_writer(g);
    gguf_close(g);
    return 0;
}
