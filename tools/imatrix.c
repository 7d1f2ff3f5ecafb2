/* imatrix.c: importance matrices (imatrix.h) and `hearth imatrix` (tools.h).
 *
 * Sections: the in-memory table, the two file formats, collection through the engine's matmul
 * observer, and the command that runs a text through a model in chunks.
 */
#include "imatrix.h"
#include "perplexity.h"
#include "tools.h"

#include "../src/base/buf.h"
#include "../src/base/mem.h"
#include "../src/base/num.h"
#include "../src/engine/engine.h"
#include "../src/gguf/gguf.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ============================================================================================
 * The table: entries sorted by name
 * ============================================================================================
 *
 * A model has a few hundred to a few thousand weight matrices, and the observer looks one up
 * per matrix product; a sorted array with binary search is plenty and keeps the file order
 * (llama-imatrix sorts by name too) for free.
 */

static int find_index(const struct imatrix *im, const char *name, int *pos) {
    int lo = 0, hi = im->n_entries;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        int c = strcmp(im->entries[mid].name, name);
        if (c == 0) {
            *pos = mid;
            return 1;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *pos = lo;
    return 0;
}

const struct imatrix_entry *imatrix_find(const struct imatrix *im, const char *name) {
    int pos;
    return im && find_index(im, name, &pos) ? &im->entries[pos] : NULL;
}

struct imatrix_entry *imatrix_get(struct imatrix *im, const char *name, int64_t n_cols, int n_mat,
                                  struct error *err) {
    int pos;
    if (find_index(im, name, &pos)) {
        struct imatrix_entry *e = &im->entries[pos];
        if (e->n_mat != n_mat || e->n_values != n_cols * n_mat) {
            error_set(err, ERR_INVALID, "imatrix: %s has %d x %lld values, now seen as %d x %lld",
                      name, e->n_mat, (long long)(e->n_values / e->n_mat), n_mat,
                      (long long)n_cols);
            return NULL;
        }
        return e;
    }
    if (n_cols < 1 || n_mat < 1 || n_cols > (INT64_C(1) << 40) / n_mat) {
        error_set(err, ERR_INVALID, "imatrix: %s: bad shape %lld x %d", name, (long long)n_cols,
                  n_mat);
        return NULL;
    }
    if (im->n_entries == im->cap_entries) {
        int cap = im->cap_entries ? im->cap_entries * 2 : 64;
        struct imatrix_entry *ne = mem_realloc(im->entries, (size_t)cap * sizeof(*ne));
        if (!ne) goto oom;
        im->entries = ne;
        im->cap_entries = cap;
    }
    struct imatrix_entry e = {0};
    e.name = mem_strdup(name);
    e.n_values = n_cols * n_mat;
    e.n_mat = n_mat;
    e.sums = mem_calloc((size_t)e.n_values, sizeof(double));
    e.counts = mem_calloc((size_t)n_mat, sizeof(int64_t));
    if (!e.name || !e.sums || !e.counts) {
        mem_free(e.name);
        mem_free(e.sums);
        mem_free(e.counts);
        goto oom;
    }
    memmove(&im->entries[pos + 1], &im->entries[pos],
            (size_t)(im->n_entries - pos) * sizeof(*im->entries));
    im->entries[pos] = e;
    im->n_entries++;
    return &im->entries[pos];
oom:
    error_set(err, ERR_NOMEM, "imatrix: out of memory");
    return NULL;
}

void imatrix_free(struct imatrix *im) {
    if (!im) return;
    for (int i = 0; i < im->n_entries; i++) {
        mem_free(im->entries[i].name);
        mem_free(im->entries[i].sums);
        mem_free(im->entries[i].counts);
    }
    mem_free(im->entries);
    for (int i = 0; i < im->n_datasets; i++) mem_free(im->datasets[i]);
    mem_free(im->datasets);
    mem_free(im);
}

static int add_dataset(struct imatrix *im, const char *s, size_t n) {
    char **d = mem_realloc(im->datasets, (size_t)(im->n_datasets + 1) * sizeof(char *));
    if (!d) return ERR_NOMEM;
    im->datasets = d;
    if (!(d[im->n_datasets] = mem_strndup(s, n))) return ERR_NOMEM;
    im->n_datasets++;
    return 0;
}

float *imatrix_means(const struct imatrix_entry *e, struct error *err) {
    float *w = mem_alloc((size_t)e->n_values * sizeof(float));
    if (!w) {
        error_set(err, ERR_NOMEM, "imatrix: out of memory");
        return NULL;
    }
    int64_t n_cols = e->n_values / e->n_mat;
    for (int m = 0; m < e->n_mat; m++) {
        double c = (double)e->counts[m];
        for (int64_t j = 0; j < n_cols; j++) {
            double v = c > 0 ? e->sums[m * n_cols + j] / c : 1.0;
            if (!isfinite(v)) {
                mem_free(w);
                error_set(err, ERR_FORMAT, "imatrix: %s holds a non-finite value", e->name);
                return NULL;
            }
            w[m * n_cols + j] = (float)v;
        }
    }
    return w;
}

/* ============================================================================================
 * Files: GGUF (read and write) and legacy .dat (read)
 * ============================================================================================ */

static int load_gguf(struct imatrix *im, const char *path, struct error *err) {
    struct gguf *g = NULL;
    int rc = gguf_open(&g, path, err);
    if (rc) return rc;
    int64_t k = gguf_find_key(g, "imatrix.datasets");
    if (k >= 0 && gguf_kv_type(g, k) == GGUF_TYPE_ARRAY &&
        gguf_kv_arr_type(g, k) == GGUF_TYPE_STRING) {
        for (uint64_t i = 0; i < gguf_kv_arr_n(g, k) && !rc; i++) {
            struct gguf_str s = gguf_kv_arr_str(g, k, i);
            rc = add_dataset(im, s.data, (size_t)s.len);
        }
    }
    uint32_t u = 0;
    if (!rc && gguf_get_uint32(g, "imatrix.chunk_count", &u) == 0) im->chunk_count = (int)u;
    if (!rc && gguf_get_uint32(g, "imatrix.chunk_size", &u) == 0) im->chunk_size = (int)u;
    static const char sum_sfx[] = ".in_sum2", cnt_sfx[] = ".counts";
    for (int64_t i = 0; i < gguf_n_tensors(g) && !rc; i++) {
        const struct gguf_tensor_info *t = gguf_tensor(g, i);
        size_t len = strlen(t->name);
        if (len <= sizeof(sum_sfx) - 1 || strcmp(t->name + len - (sizeof(sum_sfx) - 1), sum_sfx))
            continue;
        char name[128];
        snprintf(name, sizeof(name), "%.*s", (int)(len - (sizeof(sum_sfx) - 1)), t->name);
        char cname[160];
        snprintf(cname, sizeof(cname), "%s%s", name, cnt_sfx);
        const struct gguf_tensor_info *c = gguf_find_tensor(g, cname);
        if (!c) {
            rc = error_set(err, ERR_FORMAT, "%s: %s has no %s", path, t->name, cname);
            break;
        }
        if (t->type != 0 || c->type != 0) {
            rc = error_set(err, ERR_FORMAT, "%s: %s and its counts must be F32", path, t->name);
            break;
        }
        int64_t n_vals = t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
        int64_t n_cnt = c->ne[0] * c->ne[1] * c->ne[2] * c->ne[3];
        if (n_cnt < 1 || n_cnt > 1 << 20 || n_vals % n_cnt != 0) {
            rc = error_set(err, ERR_FORMAT, "%s: %s: %lld values for %lld counts", path, t->name,
                           (long long)n_vals, (long long)n_cnt);
            break;
        }
        struct imatrix_entry *e = imatrix_get(im, name, n_vals / n_cnt, (int)n_cnt, err);
        if (!e) {
            rc = err && err->code ? err->code : ERR_NOMEM;
            break;
        }
        const unsigned char *vp = t->data, *cp = c->data;
        for (int64_t j = 0; j < n_vals; j++) {
            float v;
            memcpy(&v, vp + 4 * j, 4);
            e->sums[j] += v;
        }
        for (int64_t j = 0; j < n_cnt; j++) {
            float v;
            memcpy(&v, cp + 4 * j, 4);
            if (!(v >= 0 && v < 9e18f)) {
                rc = error_set(err, ERR_FORMAT, "%s: %s: bad count %g", path, cname, (double)v);
                break;
            }
            e->counts[j] += llroundf(v);
        }
    }
    if (!rc && im->n_entries == 0) rc = error_set(err, ERR_FORMAT, "%s: no imatrix entries", path);
    gguf_close(g);
    return rc;
}

/* Bounded reader over the bytes of a legacy file. */
struct cursor {
    const unsigned char *p;
    size_t n, off;
};

static int cur_i32(struct cursor *c, int32_t *v) {
    if (c->n - c->off < 4) return 0;
    memcpy(v, c->p + c->off, 4);
    c->off += 4;
    return 1;
}

static int load_legacy(struct imatrix *im, const char *path, const unsigned char *data, size_t n,
                       struct error *err) {
    struct cursor c = {data, n, 0};
    int32_t n_entries;
    if (!cur_i32(&c, &n_entries) || n_entries < 1)
        return error_set(err, ERR_FORMAT, "%s: not an imatrix file (no entries)", path);
    for (int32_t i = 0; i < n_entries; i++) {
        int32_t len, ncall, nval;
        if (!cur_i32(&c, &len) || len < 1 || len > 1024 || c.n - c.off < (size_t)len)
            return error_set(err, ERR_FORMAT, "%s: entry %d: bad name at byte %zu", path, i, c.off);
        char name[1025];
        memcpy(name, c.p + c.off, (size_t)len);
        name[len] = 0;
        c.off += (size_t)len;
        if (!cur_i32(&c, &ncall) || !cur_i32(&c, &nval) || nval < 1 || ncall < 0 ||
            (c.n - c.off) / 4 < (size_t)nval)
            return error_set(err, ERR_FORMAT, "%s: entry '%s': bad sizes at byte %zu", path, name,
                             c.off);
        struct imatrix_entry *e = imatrix_get(im, name, nval, 1, err);
        if (!e) return err && err->code ? err->code : ERR_NOMEM;
        for (int32_t j = 0; j < nval; j++) {
            float v;
            memcpy(&v, c.p + c.off + 4 * (size_t)j, 4);
            e->sums[j] += v;
        }
        c.off += 4 * (size_t)nval;
        e->counts[0] += ncall;
    }
    int32_t chunks, len;
    if (cur_i32(&c, &chunks)) {
        im->chunk_count = chunks;
        if (cur_i32(&c, &len) && len > 0 && c.n - c.off >= (size_t)len &&
            add_dataset(im, (const char *)c.p + c.off, (size_t)len))
            return error_set(err, ERR_NOMEM, "imatrix: out of memory");
    }
    im->is_legacy = 1;
    return 0;
}

int imatrix_load(struct imatrix **out, const char *path, struct error *err) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return error_set(err, errno == ENOENT ? ERR_NOT_FOUND : ERR_IO, "%s: %s", path,
                         strerror(errno));
    unsigned char magic[4] = {0};
    size_t got = fread(magic, 1, 4, f);
    struct imatrix *im = mem_calloc(1, sizeof(*im));
    if (!im) {
        fclose(f);
        return error_set(err, ERR_NOMEM, "imatrix: out of memory");
    }
    int rc;
    if (got == 4 && !memcmp(magic, "GGUF", 4)) {
        fclose(f);
        rc = load_gguf(im, path, err);
    } else {
        unsigned char *data = NULL;
        long n = -1;
        if (fseek(f, 0, SEEK_END) == 0) n = ftell(f);
        if (n >= 0 && fseek(f, 0, SEEK_SET) == 0 && (data = mem_alloc((size_t)n + 1)) != NULL &&
            fread(data, 1, (size_t)n, f) == (size_t)n)
            rc = load_legacy(im, path, data, (size_t)n, err);
        else
            rc = error_set(err, data || n < 0 ? ERR_IO : ERR_NOMEM, "%s: cannot read", path);
        mem_free(data);
        fclose(f);
    }
    if (rc) {
        imatrix_free(im);
        return rc;
    }
    *out = im;
    return 0;
}

int imatrix_save(const struct imatrix *im, const char *path, struct error *err) {
    struct gguf_writer *w = NULL;
    int rc = gguf_writer_create(&w, err);
    if (rc) return rc;
    float **bufs = mem_calloc((size_t)(2 * im->n_entries + 1), sizeof(float *));
    if (!bufs) {
        gguf_writer_free(w);
        return error_set(err, ERR_NOMEM, "imatrix: out of memory");
    }
    rc = gguf_writer_set_str(w, "general.type", "imatrix");
    if (!rc)
        rc = gguf_writer_set_arr_str(w, "imatrix.datasets", (const char *const *)im->datasets,
                                     (uint64_t)im->n_datasets);
    if (!rc) rc = gguf_writer_set_u32(w, "imatrix.chunk_count", (uint32_t)im->chunk_count);
    if (!rc) rc = gguf_writer_set_u32(w, "imatrix.chunk_size", (uint32_t)im->chunk_size);
    for (int i = 0; i < im->n_entries && !rc; i++) {
        const struct imatrix_entry *e = &im->entries[i];
        int64_t n_cols = e->n_values / e->n_mat;
        float *s = bufs[2 * i] = mem_alloc((size_t)e->n_values * sizeof(float));
        float *c = bufs[2 * i + 1] = mem_alloc((size_t)e->n_mat * sizeof(float));
        if (!s || !c) {
            rc = ERR_NOMEM;
            break;
        }
        for (int64_t j = 0; j < e->n_values; j++) s[j] = (float)e->sums[j];
        for (int m = 0; m < e->n_mat; m++) c[m] = (float)e->counts[m];
        char name[160];
        int64_t ne_s[2] = {n_cols, e->n_mat}, ne_c[2] = {1, e->n_mat};
        snprintf(name, sizeof(name), "%s.in_sum2", e->name);
        rc = gguf_writer_add_tensor(w, name, 0, 2, ne_s, s, (uint64_t)e->n_values * 4);
        snprintf(name, sizeof(name), "%s.counts", e->name);
        if (!rc) rc = gguf_writer_add_tensor(w, name, 0, 2, ne_c, c, (uint64_t)e->n_mat * 4);
    }
    if (rc)
        rc = error_set(err, rc, "imatrix: cannot build %s (%s)", path, error_name(rc));
    else
        rc = gguf_writer_write_file(w, path, err);
    for (int i = 0; i < 2 * im->n_entries; i++) mem_free(bufs[i]);
    mem_free(bufs);
    gguf_writer_free(w);
    return rc;
}

/* ============================================================================================
 * Collection: the matmul observer
 * ============================================================================================
 *
 * llama-imatrix's rules (tools/imatrix/imatrix.cpp collect_imatrix): weights outside blocks
 * are skipped (the LM head only with --process-output), dense products of fewer than 16 rows
 * are skipped (single-token decodes would over-weight a few positions), and an expert stack
 * accumulates each routed (token, slot) into its expert's row with a count per expert.
 */

void imatrix_observe(void *ctx, const char *tensor, const float *rows, int n_rows, int row_len,
                     const int32_t *ids, int n_used, int x_per_slot) {
    struct imatrix_collector *c = ctx;
    if (c->failed) return;
    if (strncmp(tensor, "blk.", 4) && !(c->process_output && !strcmp(tensor, "output.weight")))
        return;
    if (ids) {
        int n_tokens = x_per_slot ? n_rows / n_used : n_rows;
        struct imatrix_entry *e = imatrix_get(c->im, tensor, row_len, c->n_expert, &c->error);
        if (!e) {
            c->failed = 1;
            return;
        }
        for (int t = 0; t < n_tokens; t++) {
            for (int s = 0; s < n_used; s++) {
                int32_t ex = ids[(int64_t)t * n_used + s];
                if (ex < 0 || ex >= c->n_expert) continue; /* CHECKed by the model already */
                const float *x = rows + (int64_t)(x_per_slot ? t * n_used + s : t) * row_len;
                double *acc = e->sums + (int64_t)ex * row_len;
                for (int j = 0; j < row_len; j++) acc[j] += (double)x[j] * x[j];
                e->counts[ex]++;
            }
        }
        return;
    }
    /* the LM head runs in slices of a few rows (SCRATCH_LOGIT_ROWS); llama.cpp's head product
     * has every output row of the batch, so the 16-row rule is not applied to it */
    if (n_rows < 16 && strcmp(tensor, "output.weight")) return;
    struct imatrix_entry *e = imatrix_get(c->im, tensor, row_len, 1, &c->error);
    if (!e) {
        c->failed = 1;
        return;
    }
    for (int r = 0; r < n_rows; r++) {
        const float *x = rows + (int64_t)r * row_len;
        for (int j = 0; j < row_len; j++) e->sums[j] += (double)x[j] * x[j];
    }
    e->counts[0] += n_rows;
}

/* ============================================================================================
 * Command
 * ============================================================================================ */

struct imatrix_run {
    FILE *out;
    struct ppl_acc acc;
    int compute_ppl;
    struct imatrix *im;
};

static int on_imatrix_chunk(void *p, int chunk, const float *logits, const int32_t *tokens,
                            int n_ctx, int first, int n_vocab) {
    struct imatrix_run *r = p;
    r->im->chunk_count = chunk + 1;
    if (!r->compute_ppl) {
        fprintf(r->out, "[%d]", chunk + 1);
    } else {
        for (int i = 0; i < n_ctx - 1 - first; i++) {
            double v = ppl_nll(logits + (int64_t)i * n_vocab, n_vocab, tokens[first + i + 1]);
            r->acc.nll += v;
            r->acc.nll2 += v * v;
            r->acc.count++;
        }
        fprintf(r->out, "[%d]%.4f,", chunk + 1, exp(r->acc.nll / (double)r->acc.count));
    }
    fflush(r->out);
    return 0;
}

static void usage(FILE *f) {
    fprintf(f, "usage: hearth imatrix -m MODEL -f TEXT -o FILE [-c CTX] [options]\n"
               "  -o FILE            output (GGUF imatrix, llama-imatrix's format; default\n"
               "                     imatrix.gguf)\n"
               "  -c CTX             tokens per chunk (default 512)\n"
               "  --chunks N         process at most N chunks\n"
               "  --process-output   also collect output.weight\n"
               "  --no-ppl           do not compute the text's perplexity\n"
               "  --parse-special    match special tokens written in the text\n"
               "  -b N, -t N         batch size (default 512), threads\n");
}

int tool_imatrix_run(int argc, char **argv, FILE *out, FILE *err_out) {
    const char *model = NULL, *text_path = NULL, *out_path = "imatrix.gguf";
    long n_ctx = 512, max_chunks = -1, n_batch = 512, n_threads = 0;
    int process_output = 0, compute_ppl = 1, parse_special = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(out);
            return 0;
        }
        if (!strcmp(a, "--process-output")) {
            process_output = 1;
            continue;
        }
        if (!strcmp(a, "--no-ppl")) {
            compute_ppl = 0;
            continue;
        }
        if (!strcmp(a, "--parse-special")) {
            parse_special = 1;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(err_out, "hearth imatrix: %s needs a value (see --help)\n", a);
            return 1;
        }
        const char *v = argv[++i];
        long *num = NULL, lo = 1;
        if (!strcmp(a, "-m") || !strcmp(a, "--model"))
            model = v;
        else if (!strcmp(a, "-f") || !strcmp(a, "--file"))
            text_path = v;
        else if (!strcmp(a, "-o") || !strcmp(a, "--output"))
            out_path = v;
        else if (!strcmp(a, "-c") || !strcmp(a, "--ctx-size"))
            num = &n_ctx, lo = 4;
        else if (!strcmp(a, "--chunks"))
            num = &max_chunks;
        else if (!strcmp(a, "-b") || !strcmp(a, "--batch-size"))
            num = &n_batch;
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads"))
            num = &n_threads;
        else {
            fprintf(err_out, "hearth imatrix: unknown option '%s' (see --help)\n", a);
            return 1;
        }
        long long parsed;
        if (num) {
            if (num_parse_int(v, lo, 1 << 20, &parsed)) {
                fprintf(err_out, "hearth imatrix: %s: bad value '%s'\n", a, v);
                return 1;
            }
            *num = (long)parsed;
        }
    }
    if (!model || !text_path) {
        fprintf(err_out, "hearth imatrix: want -m MODEL -f TEXT [-o FILE] (see --help)\n");
        return 1;
    }

    int ret = 1;
    struct error err = {0};
    struct engine *e = NULL;
    struct session *s = NULL;
    char *text = NULL;
    int32_t *tokens = NULL;
    int64_t n_tokens = 0;
    struct imatrix_collector col = {0};
    struct imatrix_run run = {0};

    struct engine_params ep;
    engine_params_default(&ep);
    ep.n_threads = (int)n_threads;
    ep.n_batch = (int)n_batch;
    if (engine_open(&e, model, &ep, &err)) goto fail;
    struct engine_info info;
    engine_get_info(e, &info);
    FILE *tf = fopen(text_path, "rb");
    if (!tf) {
        error_set(&err, errno == ENOENT ? ERR_NOT_FOUND : ERR_IO, "%s: %s", text_path,
                  strerror(errno));
        goto fail;
    }
    struct buf tb;
    buf_init(&tb);
    char chunk_buf[65536];
    size_t got;
    while ((got = fread(chunk_buf, 1, sizeof(chunk_buf), tf)) > 0) buf_append(&tb, chunk_buf, got);
    int bad = ferror(tf);
    fclose(tf);
    size_t n_text = tb.len;
    text = buf_detach(&tb);
    if (bad || !text) {
        error_set(&err, bad ? ERR_IO : ERR_NOMEM, "%s: cannot read", text_path);
        goto fail;
    }
    if (engine_tokenize(e, text, n_text, engine_add_bos(e), parse_special, &tokens, &n_tokens,
                        &err))
        goto fail;
    if (n_tokens < 2 * n_ctx) {
        error_set(&err, ERR_RANGE,
                  "%s has %lld tokens; a context of %ld needs at least %ld (use a smaller -c)",
                  text_path, (long long)n_tokens, n_ctx, 2 * n_ctx);
        goto fail;
    }
    int n_chunk = (int)(n_tokens / n_ctx);
    if (max_chunks > 0 && max_chunks < n_chunk) n_chunk = (int)max_chunks;

    col.im = mem_calloc(1, sizeof(struct imatrix));
    if (!col.im || add_dataset(col.im, text_path, strlen(text_path))) goto oom;
    col.im->chunk_size = (int)n_ctx;
    col.n_expert = info.n_expert;
    col.process_output = process_output;
    struct session_params sp;
    session_params_default(&sp);
    sp.n_ctx = (int)n_ctx;
    if (session_create(&s, e, &sp, &err)) goto fail;
    fprintf(err_out, "hearth imatrix: %s, %lld tokens, %d chunks of %ld -> %s\n", info.name,
            (long long)n_tokens, n_chunk, n_ctx, out_path);
    run.out = out;
    run.compute_ppl = compute_ppl;
    run.im = col.im;
    engine_set_observer(e, imatrix_observe, &col);
    int32_t bos = engine_add_bos(e) ? engine_token_bos(e) : -1;
    int rc = ppl_run_chunks(s, tokens, n_chunk, (int)n_ctx, bos, process_output, on_imatrix_chunk,
                            &run, &err);
    engine_set_observer(e, NULL, NULL);
    fprintf(out, "\n");
    if (rc) goto fail;
    if (col.failed) {
        err = col.error;
        goto fail;
    }
    double ppl, ppl_err;
    if (compute_ppl && ppl_estimate(&run.acc, &ppl, &ppl_err) == 0)
        fprintf(out, "Final estimate: PPL = %.4f +/- %.5f\n", ppl, ppl_err);
    int partial = 0;
    for (int i = 0; i < col.im->n_entries; i++)
        for (int m = 0; m < col.im->entries[i].n_mat; m++) partial += !col.im->entries[i].counts[m];
    if (partial)
        fprintf(err_out,
                "hearth imatrix: warning: %d expert matrices saw no token (saved with count 0; "
                "quantize then weighs their columns equally)\n",
                partial);
    if (imatrix_save(col.im, out_path, &err)) goto fail;
    fprintf(err_out, "hearth imatrix: %d entries over %d chunks saved to %s\n", col.im->n_entries,
            col.im->chunk_count, out_path);
    ret = 0;
    goto done;
oom:
    error_set(&err, ERR_NOMEM, "out of memory");
fail:
    fprintf(err_out, "hearth imatrix: %s\n", err.msg);
done:
    imatrix_free(col.im);
    mem_free(tokens);
    mem_free(text);
    session_free(s);
    engine_close(e);
    return ret;
}

int tool_imatrix_main(int argc, char **argv) {
    return tool_imatrix_run(argc, argv, stdout, stderr);
}
