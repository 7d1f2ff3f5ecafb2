/* inspect.c: `hearth inspect FILE [--all]` prints what a GGUF holds (see tools.h).
 *
 * Output, in file order: a header block (paths, version, alignment, counts, bytes), every
 * metadata key as `key : type = value`, the tensor table (name, type, shape in ne order,
 * offset in its shard's data section, bytes) and a per-type summary. Long strings and arrays
 * are abbreviated unless --all is given; control characters are escaped so the output stays
 * one line per key whatever the file holds.
 */
#include "tools.h"

#include "../src/gguf/gguf.h"

#include <string.h>

#define INSPECT_STR_MAX      200 /* bytes of a string value shown */
#define INSPECT_ELEM_STR_MAX 60  /* bytes of each string array element shown */
#define INSPECT_ARR_MAX      8   /* array elements shown */

/* Prints s[0..n) as a quoted, escaped string, at most max bytes (cut at a UTF-8 boundary). */
static void print_quoted(FILE *out, const char *s, uint64_t n, uint64_t max) {
    uint64_t shown = n;
    if (max && n > max) {
        shown = max;
        while (shown > 0 && ((unsigned char)s[shown] & 0xC0) == 0x80) shown--;
    }
    fputc('"', out);
    for (uint64_t i = 0; i < shown; i++) {
        unsigned char c = (unsigned char)s[i];
        switch (c) {
        case '"':
            fputs("\\\"", out);
            break;
        case '\\':
            fputs("\\\\", out);
            break;
        case '\n':
            fputs("\\n", out);
            break;
        case '\r':
            fputs("\\r", out);
            break;
        case '\t':
            fputs("\\t", out);
            break;
        default:
            if (c < 0x20 || c == 0x7f)
                fprintf(out, "\\x%02x", c);
            else
                fputc(c, out);
        }
    }
    fputc('"', out);
    if (shown < n) fprintf(out, "...(%llu bytes)", (unsigned long long)n);
}

/* One numeric value of type t at p (little-endian, possibly unaligned). */
static void print_number(FILE *out, enum gguf_type t, const unsigned char *p) {
    uint64_t u = 0;
    for (size_t k = gguf_type_size(t); k > 0; k--) u = u << 8 | p[k - 1];
    switch (t) {
    case GGUF_TYPE_FLOAT32: {
        uint32_t bits = (uint32_t)u;
        float f;
        memcpy(&f, &bits, 4);
        fprintf(out, "%.9g", (double)f);
        break;
    }
    case GGUF_TYPE_FLOAT64: {
        double d;
        memcpy(&d, &u, 8);
        fprintf(out, "%.17g", d);
        break;
    }
    case GGUF_TYPE_BOOL:
        fputs(u ? "true" : "false", out);
        break;
    case GGUF_TYPE_INT8:
        fprintf(out, "%d", (int8_t)u);
        break;
    case GGUF_TYPE_INT16:
        fprintf(out, "%d", (int16_t)u);
        break;
    case GGUF_TYPE_INT32:
        fprintf(out, "%d", (int32_t)u);
        break;
    case GGUF_TYPE_INT64:
        fprintf(out, "%lld", (long long)(int64_t)u);
        break;
    default:
        fprintf(out, "%llu", (unsigned long long)u);
        break;
    }
}

static void print_kv(FILE *out, const struct gguf *g, int64_t i, int all) {
    struct gguf_str key = gguf_kv_key(g, i);
    enum gguf_type t = gguf_kv_type(g, i);
    fputs("  ", out);
    /* Keys are usually plain ASCII; quote only the odd ones. */
    int plain = 1;
    for (uint64_t k = 0; k < key.len; k++)
        if ((unsigned char)key.data[k] <= 0x20 || (unsigned char)key.data[k] >= 0x7f) plain = 0;
    if (plain)
        fwrite(key.data, 1, (size_t)key.len, out);
    else
        print_quoted(out, key.data, key.len, all ? 0 : INSPECT_STR_MAX);
    if (t == GGUF_TYPE_STRING) {
        struct gguf_str s = gguf_kv_str(g, i);
        fputs(" : string = ", out);
        print_quoted(out, s.data, s.len, all ? 0 : INSPECT_STR_MAX);
    } else if (t == GGUF_TYPE_ARRAY) {
        enum gguf_type et = gguf_kv_arr_type(g, i);
        uint64_t n = gguf_kv_arr_n(g, i), shown = all || n <= INSPECT_ARR_MAX ? n : INSPECT_ARR_MAX;
        fprintf(out, " : [%llu x %s] = [", (unsigned long long)n, gguf_type_name(et));
        const unsigned char *data = gguf_kv_arr_data(g, i);
        size_t size = gguf_type_size(et);
        for (uint64_t j = 0; j < shown; j++) {
            if (j) fputs(", ", out);
            if (et == GGUF_TYPE_STRING) {
                struct gguf_str s = gguf_kv_arr_str(g, i, j);
                print_quoted(out, s.data, s.len, all ? 0 : INSPECT_ELEM_STR_MAX);
            } else {
                print_number(out, et, data + j * size);
            }
        }
        if (shown < n) fprintf(out, ", ... (%llu more)", (unsigned long long)(n - shown));
        fputc(']', out);
    } else {
        fprintf(out, " : %s = ", gguf_type_name(t));
        print_number(out, t, gguf_kv_arr_data(g, i));
    }
    fputc('\n', out);
}

static void print_tensors(FILE *out, const struct gguf *g) {
    int64_t n = gguf_n_tensors(g);
    int name_w = 4;
    for (int64_t i = 0; i < n; i++) {
        int len = (int)strlen(gguf_tensor(g, i)->name);
        if (len > name_w) name_w = len;
    }
    int multi = gguf_n_shards(g) > 1;
    fprintf(out, "\ntensors:\n  %5s  %-*s  %-7s  %-26s  %12s  %12s%s\n", "#", name_w, "name",
            "type", "shape", "offset", "bytes", multi ? "  shard" : "");
    for (int64_t i = 0; i < n; i++) {
        const struct gguf_tensor_info *t = gguf_tensor(g, i);
        char shape[128];
        int o = snprintf(shape, sizeof(shape), "[");
        for (int d = 0; d < t->n_dims; d++)
            o += snprintf(shape + o, sizeof(shape) - (size_t)o, "%s%lld", d ? ", " : "",
                          (long long)t->ne[d]);
        snprintf(shape + o, sizeof(shape) - (size_t)o, "]");
        fprintf(out, "  %5lld  %-*s  %-7s  %-26s  %12llu  %12llu", (long long)i, name_w, t->name,
                gguf_tensor_type_name(t->type), shape, (unsigned long long)t->offset,
                (unsigned long long)t->n_bytes);
        if (multi) fprintf(out, "  %5d", t->shard + 1);
        fputc('\n', out);
    }

    /* Per-type summary, in type id order. */
    enum { N_IDS = 64 };
    int64_t count[N_IDS] = {0};
    uint64_t bytes[N_IDS] = {0}, total = 0;
    for (int64_t i = 0; i < n; i++) {
        const struct gguf_tensor_info *t = gguf_tensor(g, i);
        count[t->type % N_IDS]++; /* ids are < 43 after validation */
        bytes[t->type % N_IDS] += t->n_bytes;
        total += t->n_bytes;
    }
    fprintf(out, "\nper type:\n");
    for (int k = 0; k < N_IDS; k++)
        if (count[k])
            fprintf(out, "  %-7s  %6lld tensors  %14llu bytes\n",
                    gguf_tensor_type_name((uint32_t)k), (long long)count[k],
                    (unsigned long long)bytes[k]);
    fprintf(out, "  %-7s  %6lld tensors  %14llu bytes\n", "total", (long long)n,
            (unsigned long long)total);
}

int tool_inspect_run(int argc, char **argv, FILE *out, FILE *err_out) {
    const char *path = NULL;
    int all = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--all"))
            all = 1;
        else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            fprintf(out, "usage: hearth inspect FILE.gguf [--all]\n");
            return 0;
        } else if (argv[i][0] == '-' || path) {
            fprintf(err_out,
                    "hearth inspect: unexpected argument '%s' (usage: hearth inspect "
                    "FILE.gguf [--all])\n",
                    argv[i]);
            return 1;
        } else
            path = argv[i];
    }
    if (!path) {
        fprintf(err_out,
                "hearth inspect: missing FILE (usage: hearth inspect FILE.gguf [--all])\n");
        return 1;
    }
    struct gguf *g;
    struct error err = {0};
    if (gguf_open(&g, path, &err)) {
        fprintf(err_out, "hearth inspect: %s\n", err.msg);
        return 1;
    }
    fprintf(out, "file: %s\n", path);
    if (gguf_n_shards(g) > 1) {
        /* gguf_open accepted the name, so it ends in -00001-of-NNNNN.gguf (20 bytes). */
        int prefix_len = (int)strlen(path) - 20;
        fprintf(out, "shards: %d\n", gguf_n_shards(g));
        for (int k = 0; k < gguf_n_shards(g); k++)
            fprintf(out, "  %.*s-%05d-of-%05d.gguf\n", prefix_len, path, k + 1, gguf_n_shards(g));
    }
    fprintf(out, "version: %u\nalignment: %u\nkv count: %lld\ntensor count: %lld\n",
            gguf_version(g), gguf_alignment(g), (long long)gguf_n_kv(g),
            (long long)gguf_n_tensors(g));
    fprintf(out, "total bytes: %llu\n", (unsigned long long)gguf_file_bytes(g));
    fprintf(out, "\nmetadata:\n");
    for (int64_t i = 0; i < gguf_n_kv(g); i++) print_kv(out, g, i, all);
    print_tensors(out, g);
    gguf_close(g);
    if (fflush(out) != 0 || ferror(out)) {
        fprintf(err_out, "hearth inspect: write error\n");
        return 1;
    }
    return 0;
}

int tool_inspect_main(int argc, char **argv) {
    return tool_inspect_run(argc, argv, stdout, stderr);
}
