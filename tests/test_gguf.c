/* test_gguf.c: gguf/ reader, writer, split files, corruption sweep, and the inspect tool.
 *
 * Shared-model facts come from ../shared/models/SOURCES.md and synthetic/README.md; tests that
 * need ../shared SKIP without it. Hand-built files use the little byte builder below, so the
 * reader tests do not depend on the writer.
 */
#include "test.h"

#include "../src/base/buf.h"
#include "../src/base/mem.h"
#include "../src/gguf/gguf.h"
#include "../tools/tools.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- byte builder for hand-made files ---- */

static void put_u32(struct buf *b, uint32_t v) {
    unsigned char p[4] = {(unsigned char)v, (unsigned char)(v >> 8), (unsigned char)(v >> 16),
                          (unsigned char)(v >> 24)};
    buf_append(b, p, 4);
}

static void put_u64(struct buf *b, uint64_t v) {
    put_u32(b, (uint32_t)v);
    put_u32(b, (uint32_t)(v >> 32));
}

static void put_str(struct buf *b, const char *s) {
    put_u64(b, strlen(s));
    buf_append(b, s, strlen(s));
}

static void put_header(struct buf *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
    buf_append(b, "GGUF", 4);
    put_u32(b, version);
    put_u64(b, n_tensors);
    put_u64(b, n_kv);
}

static void put_pad(struct buf *b, size_t align) {
    while (b->len % align) buf_append_char(b, 0);
}

/* Opens b's bytes; returns the rc and leaves the message in err. */
static int open_buf(const struct buf *b, struct error *err) {
    struct gguf *g = NULL;
    memset(err, 0, sizeof(*err));
    int rc = gguf_open_memory(&g, b->data, b->len, err);
    gguf_close(g);
    return rc;
}

static uint64_t round_up(uint64_t x, uint64_t a) {
    return (x + a - 1) / a * a;
}

/* ---- type table ---- */

TEST(gguf_type_table) {
    int64_t be, bb;
    EXPECT(gguf_type_block(0, &be, &bb) == 0 && be == 1 && bb == 4);
    EXPECT(gguf_type_block(12, &be, &bb) == 0 && be == 256 && bb == 144);
    EXPECT(gguf_type_block(8, &be, &bb) == 0 && be == 32 && bb == 34);
    EXPECT(gguf_type_block(39, &be, &bb) == 0 && be == 32 && bb == 17);
    EXPECT(gguf_type_block(40, &be, &bb) == 0 && be == 64 && bb == 36);
    EXPECT(gguf_type_block(41, &be, &bb) == 0 && be == 128 && bb == 18);
    EXPECT(gguf_type_block(42, &be, &bb) == 0 && be == 64 && bb == 18);
    EXPECT(gguf_type_block(28, &be, &bb) == 0 && be == 1 && bb == 8);
    EXPECT(gguf_type_block(34, &be, &bb) == 0 && be == 256 && bb == 54);
    const uint32_t invalid[] = {4, 5, 31, 32, 33, 36, 37, 38, 43, 1000, UINT32_MAX};
    for (size_t i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++) {
        EXPECT_EQ_INT(gguf_type_block(invalid[i], &be, &bb), ERR_UNSUPPORTED);
        EXPECT(strcmp(gguf_tensor_type_name(invalid[i]), "?") == 0);
    }
    int n_valid = 0;
    for (uint32_t t = 0; t < 64; t++) n_valid += gguf_type_block(t, NULL, NULL) == 0;
    EXPECT_EQ_INT(n_valid, 43 - 8);
    EXPECT(strcmp(gguf_tensor_type_name(14), "Q6_K") == 0);
    EXPECT(strcmp(gguf_tensor_type_name(30), "BF16") == 0);
    EXPECT(strcmp(gguf_type_name(GGUF_TYPE_UINT32), "u32") == 0);
    EXPECT(strcmp(gguf_type_name(GGUF_TYPE_ARRAY), "array") == 0);
    EXPECT_EQ_INT(gguf_type_size(GGUF_TYPE_FLOAT64), 8);
    EXPECT_EQ_INT(gguf_type_size(GGUF_TYPE_STRING), 0);
}

/* ---- shared files ---- */

/* Layout facts every shared file satisfies (SOURCES.md): v3, alignment 32, offsets dense and
 * in order, file size = aligned header + tensor data. */
static void check_layout(const struct gguf *g) {
    EXPECT_EQ_INT(gguf_version(g), 3);
    EXPECT_EQ_INT(gguf_alignment(g), 32);
    uint64_t next = 0, end = 0;
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        const struct gguf_tensor_info *t = gguf_tensor(g, i);
        EXPECT_EQ_INT(t->offset, next);
        next = round_up(t->offset + t->n_bytes, 32);
        end = t->file_offset + t->n_bytes;
        EXPECT(gguf_find_tensor(g, t->name) == t);
    }
    if (gguf_n_tensors(g) > 0) EXPECT_EQ_INT(round_up(end, 32), gguf_file_bytes(g));
}

static int64_t get_int(const struct gguf *g, const char *key) {
    int64_t v = -12345;
    EXPECT_MSG(gguf_get_int(g, key, &v) == 0, "key %s", key);
    return v;
}

static int str_is(const struct gguf *g, const char *key, const char *want) {
    struct gguf_str s;
    if (gguf_get_str(g, key, &s)) return 0;
    return s.len == strlen(want) && memcmp(s.data, want, s.len) == 0;
}

static int arr_str_is(const struct gguf *g, const char *key, uint64_t j, const char *want) {
    int64_t i = gguf_find_key(g, key);
    if (i < 0 || gguf_kv_arr_type(g, i) != GGUF_TYPE_STRING || j >= gguf_kv_arr_n(g, i)) return 0;
    struct gguf_str s = gguf_kv_arr_str(g, i, j);
    return s.len == strlen(want) && memcmp(s.data, want, s.len) == 0;
}

static int64_t arr_n(const struct gguf *g, const char *key) {
    int64_t i = gguf_find_key(g, key);
    return i < 0 || gguf_kv_type(g, i) != GGUF_TYPE_ARRAY ? -1 : (int64_t)gguf_kv_arr_n(g, i);
}

static int shape_is(const struct gguf_tensor_info *t, uint32_t type, int n_dims, int64_t ne0,
                    int64_t ne1) {
    return t && t->type == type && t->n_dims == n_dims && t->ne[0] == ne0 && t->ne[1] == ne1 &&
           t->ne[2] == 1 && t->ne[3] == 1;
}

TEST(gguf_stories260k_facts) {
    const char *path = test_model_path("stories/stories260K.gguf");
    if (!path) SKIP_TEST("../shared/models/stories/stories260K.gguf not found");
    struct gguf *g;
    struct error err = {0};
    ASSERT_MSG(gguf_open(&g, path, &err) == 0, "%s", err.msg);
    check_layout(g);
    EXPECT_EQ_INT(gguf_n_kv(g), 19);
    EXPECT_EQ_INT(gguf_n_tensors(g), 48);
    EXPECT_EQ_INT(gguf_n_shards(g), 1);
    EXPECT_EQ_INT(gguf_file_bytes(g), 1185376);
    EXPECT(str_is(g, "general.architecture", "llama"));
    EXPECT(str_is(g, "general.name", "llama"));
    EXPECT(str_is(g, "tokenizer.ggml.model", "llama"));
    EXPECT_EQ_INT(get_int(g, "llama.context_length"), 2048);
    EXPECT_EQ_INT(get_int(g, "llama.embedding_length"), 64);
    EXPECT_EQ_INT(get_int(g, "llama.block_count"), 5);
    EXPECT_EQ_INT(get_int(g, "llama.feed_forward_length"), 172);
    EXPECT_EQ_INT(get_int(g, "llama.attention.head_count"), 8);
    EXPECT_EQ_INT(get_int(g, "llama.attention.head_count_kv"), 4);
    EXPECT_EQ_INT(get_int(g, "llama.rope.dimension_count"), 8);
    EXPECT_EQ_INT(get_int(g, "tokenizer.ggml.bos_token_id"), 1);
    EXPECT_EQ_INT(get_int(g, "tokenizer.ggml.eos_token_id"), 2);
    EXPECT_EQ_INT(get_int(g, "tokenizer.ggml.unknown_token_id"), 0);
    EXPECT_EQ_INT(get_int(g, "tokenizer.ggml.seperator_token_id"), 4294967295LL);
    uint32_t u32 = 0;
    EXPECT(gguf_get_uint32(g, "tokenizer.ggml.padding_token_id", &u32) == 0 && u32 == UINT32_MAX);
    double eps = 0;
    EXPECT(gguf_get_float(g, "llama.attention.layer_norm_rms_epsilon", &eps) == 0);
    EXPECT_NEAR(eps, 1e-5, 1e-12);
    double d = 42;
    EXPECT_EQ_INT(gguf_get_float(g, "llama.rope.freq_base", &d), ERR_NOT_FOUND);
    EXPECT(d == 42);
    EXPECT_EQ_INT(gguf_find_key(g, "llama.vocab_size"), -1);
    EXPECT_EQ_INT(gguf_find_key(g, "general.alignment"), -1);
    int64_t v;
    EXPECT_EQ_INT(gguf_get_int(g, "general.architecture", &v), ERR_FORMAT);
    struct gguf_str s;
    EXPECT_EQ_INT(gguf_get_str(g, "llama.block_count", &s), ERR_FORMAT);
    char *arch = gguf_get_strdup(g, "general.architecture");
    EXPECT(arch && strcmp(arch, "llama") == 0);
    mem_free(arch);
    EXPECT(gguf_get_strdup(g, "no.such.key") == NULL);

    EXPECT_EQ_INT(arr_n(g, "tokenizer.ggml.tokens"), 512);
    EXPECT_EQ_INT(arr_n(g, "tokenizer.ggml.scores"), 512);
    EXPECT_EQ_INT(arr_n(g, "tokenizer.ggml.token_type"), 512);
    EXPECT(arr_str_is(g, "tokenizer.ggml.tokens", 1, "<s>"));
    EXPECT(arr_str_is(g, "tokenizer.ggml.tokens", 2, "</s>"));
    EXPECT(arr_str_is(g, "tokenizer.ggml.tokens", 3, "<0x00>"));
    EXPECT(arr_str_is(g, "tokenizer.ggml.tokens", 258, "<0xFF>"));
    int64_t tt = gguf_find_key(g, "tokenizer.ggml.token_type");
    ASSERT(tt >= 0);
    EXPECT_EQ_INT(gguf_kv_arr_type(g, tt), GGUF_TYPE_INT32);
    EXPECT_EQ_INT(gguf_kv_arr_int(g, tt, 3), 6); /* byte token */
    EXPECT(gguf_kv_arr_data(g, tt) != NULL);
    int64_t tok = gguf_find_key(g, "tokenizer.ggml.tokens");
    EXPECT(gguf_kv_arr_data(g, tok) == NULL);
    int64_t sc = gguf_find_key(g, "tokenizer.ggml.scores");
    EXPECT(isfinite(gguf_kv_arr_float(g, sc, 300)));
    int64_t arch_i = gguf_find_key(g, "general.architecture");
    EXPECT_EQ_INT(gguf_kv_arr_type(g, arch_i), GGUF_TYPE_COUNT);
    EXPECT_EQ_INT(gguf_kv_arr_n(g, arch_i), 1);

    EXPECT(shape_is(gguf_find_tensor(g, "token_embd.weight"), 0, 2, 64, 512));
    EXPECT(shape_is(gguf_find_tensor(g, "output.weight"), 0, 2, 64, 512));
    EXPECT(shape_is(gguf_find_tensor(g, "output_norm.weight"), 0, 1, 64, 1));
    EXPECT(shape_is(gguf_find_tensor(g, "blk.4.attn_k.weight"), 0, 2, 64, 32));
    EXPECT(shape_is(gguf_find_tensor(g, "blk.0.ffn_down.weight"), 0, 2, 172, 64));
    EXPECT(shape_is(gguf_find_tensor(g, "blk.2.ffn_up.weight"), 0, 2, 64, 172));
    EXPECT(gguf_find_tensor(g, "blk.5.attn_q.weight") == NULL);
    int64_t n_elems = 0;
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        const struct gguf_tensor_info *t = gguf_tensor(g, i);
        n_elems += t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
        EXPECT_EQ_INT(t->n_bytes, (t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3]) * 4);
        EXPECT_EQ_INT(t->shard, 0);
    }
    EXPECT_EQ_INT(n_elems, 292800);
    /* output.weight equals token_embd.weight value for value (SOURCES.md). */
    const struct gguf_tensor_info *a = gguf_find_tensor(g, "token_embd.weight");
    const struct gguf_tensor_info *b = gguf_find_tensor(g, "output.weight");
    EXPECT(a && b && memcmp(a->data, b->data, a->n_bytes) == 0);
    gguf_close(g);
}

TEST(gguf_tiny_llama_facts) {
    const char *path = test_model_path("tiny/llama-2-tiny-random.gguf");
    if (!path) SKIP_TEST("../shared/models/tiny/llama-2-tiny-random.gguf not found");
    struct gguf *g;
    struct error err = {0};
    ASSERT_MSG(gguf_open(&g, path, &err) == 0, "%s", err.msg);
    check_layout(g);
    EXPECT_EQ_INT(gguf_n_kv(g), 18);
    EXPECT_EQ_INT(gguf_n_tensors(g), 12);
    EXPECT(str_is(g, "general.name", "LLaMA v2"));
    EXPECT_EQ_INT(get_int(g, "general.file_type"), 1);
    EXPECT_EQ_INT(get_int(g, "llama.context_length"), 4096);
    EXPECT_EQ_INT(get_int(g, "llama.embedding_length"), 8);
    EXPECT_EQ_INT(get_int(g, "llama.feed_forward_length"), 32);
    EXPECT_EQ_INT(get_int(g, "llama.rope.dimension_count"), 4);
    EXPECT_EQ_INT(arr_n(g, "tokenizer.ggml.tokens"), 32000);
    EXPECT(shape_is(gguf_find_tensor(g, "token_embd.weight"), 1, 2, 8, 32000));
    EXPECT(shape_is(gguf_find_tensor(g, "output.weight"), 1, 2, 8, 32000));
    EXPECT(shape_is(gguf_find_tensor(g, "blk.0.ffn_down.weight"), 1, 2, 32, 8));
    EXPECT(shape_is(gguf_find_tensor(g, "blk.0.attn_norm.weight"), 0, 1, 8, 1));
    int n_f16 = 0, n_f32 = 0;
    int64_t n_elems = 0;
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        const struct gguf_tensor_info *t = gguf_tensor(g, i);
        n_f16 += t->type == 1;
        n_f32 += t->type == 0;
        n_elems += t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
    }
    EXPECT_EQ_INT(n_f16, 9);
    EXPECT_EQ_INT(n_f32, 3);
    EXPECT_EQ_INT(n_elems, 513048);
    gguf_close(g);
}

TEST(gguf_vocab_files) {
    const char *path = test_model_path("vocab/ggml-vocab-llama-spm.gguf");
    if (!path) SKIP_TEST("../shared/models/vocab not found");
    struct gguf *g;
    struct error err = {0};
    ASSERT_MSG(gguf_open(&g, path, &err) == 0, "%s", err.msg);
    EXPECT_EQ_INT(gguf_n_kv(g), 22);
    EXPECT_EQ_INT(gguf_n_tensors(g), 0);
    EXPECT(str_is(g, "tokenizer.ggml.pre", "default"));
    EXPECT_EQ_INT(get_int(g, "llama.vocab_size"), 32000);
    EXPECT_EQ_INT(arr_n(g, "tokenizer.ggml.tokens"), 32000);
    int add_bos = 0, add_eos = 1;
    EXPECT(gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &add_bos) == 0 && add_bos == 1);
    EXPECT(gguf_get_bool(g, "tokenizer.ggml.add_eos_token", &add_eos) == 0 && add_eos == 0);
    int64_t tt = gguf_find_key(g, "tokenizer.ggml.token_type");
    ASSERT(tt >= 0);
    int counts[7] = {0};
    for (uint64_t j = 0; j < gguf_kv_arr_n(g, tt); j++) {
        int64_t v = gguf_kv_arr_int(g, tt, j);
        if (v >= 0 && v < 7) counts[v]++;
    }
    EXPECT_EQ_INT(counts[1], 31741);
    EXPECT_EQ_INT(counts[6], 256);
    EXPECT_EQ_INT(counts[3], 2);
    EXPECT_EQ_INT(counts[2], 1);
    gguf_close(g);

    path = test_model_path("vocab/ggml-vocab-gpt-2.gguf");
    ASSERT(path);
    ASSERT_MSG(gguf_open(&g, path, &err) == 0, "%s", err.msg);
    EXPECT_EQ_INT(gguf_n_kv(g), 16);
    EXPECT(str_is(g, "general.architecture", "gpt2"));
    EXPECT(str_is(g, "tokenizer.ggml.pre", "gpt-2"));
    EXPECT_EQ_INT(arr_n(g, "tokenizer.ggml.tokens"), 50257);
    EXPECT_EQ_INT(arr_n(g, "tokenizer.ggml.merges"), 50000);
    EXPECT(arr_str_is(g, "tokenizer.ggml.merges", 0, "\xc4\xa0 t"));
    EXPECT(arr_str_is(g, "tokenizer.ggml.merges", 3, "i n"));
    EXPECT_EQ_INT(get_int(g, "tokenizer.ggml.bos_token_id"), 50256);
    EXPECT_EQ_INT(get_int(g, "tokenizer.ggml.eos_token_id"), 50256);
    EXPECT_EQ_INT(gguf_find_key(g, "tokenizer.ggml.scores"), -1);
    gguf_close(g);

    /* The other vocab files: open and have a token list. */
    const char *others[] = {"vocab/ggml-vocab-llama-bpe.gguf", "vocab/ggml-vocab-qwen2.gguf",
                            "vocab/ggml-vocab-qwen35.gguf"};
    for (size_t k = 0; k < sizeof(others) / sizeof(others[0]); k++) {
        path = test_model_path(others[k]);
        if (!path) continue;
        EXPECT_MSG(gguf_open(&g, path, &err) == 0, "%s: %s", others[k], err.msg);
        if (!g) continue;
        EXPECT(arr_n(g, "tokenizer.ggml.tokens") > 1000);
        EXPECT(arr_n(g, "tokenizer.ggml.merges") > 1000);
        EXPECT_EQ_INT(gguf_n_tensors(g), 0);
        gguf_close(g);
    }
}

struct synth_fact {
    const char *file;
    const char *arch;
    int64_t n_tensors;
    uint64_t n_bytes;
    int n_f32, n_q4_k, n_q6_k, n_q8_0;
};

static const struct synth_fact g_synth[] = {
    {"qwen2-f32.gguf", "qwen2", 26, 5265280, 26, 0, 0, 0},
    {"qwen3-f32.gguf", "qwen3", 24, 5263136, 24, 0, 0, 0},
    {"qwen3-q4_k_m.gguf", "qwen3", 24, 833568, 9, 12, 3, 0},
    {"qwen3-q6_k.gguf", "qwen3", 24, 1095456, 9, 0, 15, 0},
    {"qwen3-q8_0.gguf", "qwen3", 24, 1412896, 9, 0, 0, 15},
    {"qwen35-f32.gguf", "qwen35", 55, 6900832, 55, 0, 0, 0},
    {"qwen35-mtp-f32.gguf", "qwen35", 70, 8675840, 70, 0, 0, 0},
    {"qwen35moe-f32.gguf", "qwen35moe", 37, 11590496, 37, 0, 0, 0},
    {"qwen35moe-q4_k_m.gguf", "qwen35moe", 37, 1797856, 15, 18, 4, 0},
    {"qwen35moe-q6_k.gguf", "qwen35moe", 37, 2415136, 15, 0, 22, 0},
    {"qwen35moe-q8_0.gguf", "qwen35moe", 37, 3113952, 15, 0, 0, 22},
    {"qwen3moe-f32.gguf", "qwen3moe", 27, 8949984, 27, 0, 0, 0},
};

TEST(gguf_synthetic_files) {
    if (!test_model_path("synthetic")) SKIP_TEST("../shared/models/synthetic not found");
    for (size_t k = 0; k < sizeof(g_synth) / sizeof(g_synth[0]); k++) {
        const struct synth_fact *f = &g_synth[k];
        char rel[128];
        snprintf(rel, sizeof(rel), "synthetic/%s", f->file);
        const char *path = test_model_path(rel);
        EXPECT_MSG(path != NULL, "%s missing", rel);
        if (!path) continue;
        struct gguf *g;
        struct error err = {0};
        EXPECT_MSG(gguf_open(&g, path, &err) == 0, "%s", err.msg);
        if (!g) continue;
        check_layout(g);
        EXPECT_MSG(str_is(g, "general.architecture", f->arch), "%s", f->file);
        EXPECT_EQ_INT(gguf_n_tensors(g), f->n_tensors);
        EXPECT_EQ_INT(gguf_file_bytes(g), f->n_bytes);
        EXPECT_EQ_INT(arr_n(g, "tokenizer.ggml.tokens"), 512);
        int n[64] = {0};
        for (int64_t i = 0; i < gguf_n_tensors(g); i++) n[gguf_tensor(g, i)->type & 63]++;
        EXPECT_MSG(
            n[0] == f->n_f32 && n[12] == f->n_q4_k && n[14] == f->n_q6_k && n[8] == f->n_q8_0,
            "%s: type counts F32 %d Q4_K %d Q6_K %d Q8_0 %d", f->file, n[0], n[12], n[14], n[8]);
        char key[64];
        snprintf(key, sizeof(key), "%s.embedding_length", f->arch);
        int64_t n_embd = get_int(g, key);
        const struct gguf_tensor_info *emb = gguf_find_tensor(g, "token_embd.weight");
        EXPECT(emb && emb->ne[0] == n_embd && emb->ne[1] == 512);
        gguf_close(g);
    }
}

/* ---- hand-made files: what the reader must reject, and how ---- */

struct bad_case {
    const char *what;
    int want_rc;
    const char *want_msg; /* substring of the message */
};

/* A file with one u32 kv and one F32 [8] tensor at offset 0, built with variations. */
static void build_small(struct buf *b, uint32_t version, const char *key, uint32_t kv_type,
                        uint32_t tensor_type, uint64_t ne0, uint64_t offset) {
    buf_clear(b);
    put_header(b, version, 1, 1);
    put_str(b, key);
    put_u32(b, kv_type);
    put_u32(b, 7);
    put_str(b, "w");
    put_u32(b, 1);
    put_u64(b, ne0);
    put_u32(b, tensor_type);
    put_u64(b, offset);
    put_pad(b, 32);
    for (int i = 0; i < 32; i++) buf_append_char(b, 1);
}

static void expect_reject(const struct buf *b, int want_rc, const char *want_msg,
                          const char *what) {
    struct error err;
    int rc = open_buf(b, &err);
    EXPECT_MSG(rc == want_rc, "%s: rc %d, want %d (%s)", what, rc, want_rc, err.msg);
    EXPECT_MSG(strstr(err.msg, want_msg) != NULL, "%s: message '%s' lacks '%s'", what, err.msg,
               want_msg);
    EXPECT_MSG(rc == 0 || strstr(err.msg, "at byte ") != NULL, "%s: no byte offset: %s", what,
               err.msg);
}

TEST(gguf_rejects_bad_files) {
    struct buf b;
    buf_init(&b);
    struct error err;
    build_small(&b, 3, "a.b", GGUF_TYPE_UINT32, 0, 8, 0);
    EXPECT_MSG(open_buf(&b, &err) == 0, "%s", err.msg);
    build_small(&b, 2, "a.b", GGUF_TYPE_UINT32, 0, 8, 0);
    EXPECT_MSG(open_buf(&b, &err) == 0, "v2: %s", err.msg);

    build_small(&b, 1, "a.b", GGUF_TYPE_UINT32, 0, 8, 0);
    expect_reject(&b, ERR_UNSUPPORTED, "version 1", "v1");
    build_small(&b, 0, "a.b", GGUF_TYPE_UINT32, 0, 8, 0);
    expect_reject(&b, ERR_UNSUPPORTED, "version 0", "v0");
    build_small(&b, 4, "a.b", GGUF_TYPE_UINT32, 0, 8, 0);
    expect_reject(&b, ERR_UNSUPPORTED, "version 4", "v4");
    build_small(&b, 0x03000000, "a.b", GGUF_TYPE_UINT32, 0, 8, 0);
    expect_reject(&b, ERR_UNSUPPORTED, "big-endian", "big-endian");
    build_small(&b, 3, "a.b", GGUF_TYPE_UINT32, 0, 8, 0);
    b.data[0] = 'X';
    expect_reject(&b, ERR_FORMAT, "bad magic", "magic");

    build_small(&b, 3, "", GGUF_TYPE_UINT32, 0, 8, 0);
    expect_reject(&b, ERR_FORMAT, "empty key", "empty key");
    build_small(&b, 3, "a.b", 13, 0, 8, 0);
    expect_reject(&b, ERR_FORMAT, "unknown value type 13", "value type");
    build_small(&b, 3, "a.b", GGUF_TYPE_BOOL, 0, 8, 0); /* bool byte = 7 */
    expect_reject(&b, ERR_FORMAT, "bool value 7", "bool");
    build_small(&b, 3, "a.b", GGUF_TYPE_UINT32, 4, 32, 0);
    expect_reject(&b, ERR_FORMAT, "unknown tensor type id 4", "type 4");
    build_small(&b, 3, "a.b", GGUF_TYPE_UINT32, 99, 32, 0);
    expect_reject(&b, ERR_UNSUPPORTED, "unknown tensor type id 99", "type 99");
    build_small(&b, 3, "a.b", GGUF_TYPE_UINT32, 8, 8, 0); /* Q8_0 needs ne[0] % 32 */
    expect_reject(&b, ERR_FORMAT, "not a multiple of the Q8_0 block size 32", "block");
    build_small(&b, 3, "a.b", GGUF_TYPE_UINT32, 0, 8, 16);
    expect_reject(&b, ERR_FORMAT, "not a multiple of the alignment 32", "offset align");
    build_small(&b, 3, "a.b", GGUF_TYPE_UINT32, 0, 9, 0); /* 36 bytes, 32 available */
    expect_reject(&b, ERR_FORMAT, "runs past end of file", "data past end");
    build_small(&b, 3, "a.b", GGUF_TYPE_UINT32, 0, 1ull << 63, 0);
    expect_reject(&b, ERR_FORMAT, "negative", "ne negative");
    build_small(&b, 3, "general.alignment", GGUF_TYPE_UINT32, 0, 8, 0); /* value 7 */
    expect_reject(&b, ERR_FORMAT, "not a power of two", "alignment 7");
    build_small(&b, 3, "general.alignment", GGUF_TYPE_INT32, 0, 8, 0);
    expect_reject(&b, ERR_FORMAT, "general.alignment must be u32", "alignment type");

    /* Counts impossible for the file size. */
    buf_clear(&b);
    put_header(&b, 3, 0, 1000000);
    expect_reject(&b, ERR_FORMAT, "metadata count 1000000 is impossible", "n_kv");
    buf_clear(&b);
    put_header(&b, 3, UINT64_MAX, 0);
    expect_reject(&b, ERR_FORMAT, "tensor count", "n_tensors");

    /* A string length far past the end. */
    buf_clear(&b);
    put_header(&b, 3, 0, 1);
    put_str(&b, "k");
    put_u32(&b, GGUF_TYPE_STRING);
    put_u64(&b, 99999999);
    buf_append(&b, "abcdefgh", 8);
    expect_reject(&b, ERR_FORMAT,
                  "at byte 37: string value length 99999999 runs past end of file (size 53)",
                  "string length");
    buf_clear(&b);
    put_header(&b, 3, 0, 1);
    put_str(&b, "k");
    put_u32(&b, GGUF_TYPE_STRING);
    put_u64(&b, (1ull << 30) + 1);
    for (int i = 0; i < 20; i++) buf_append_char(&b, 'x');
    expect_reject(&b, ERR_FORMAT, "exceeds the limit", "string limit");

    /* Duplicate keys, nested arrays, huge arrays, bad bools in arrays. */
    buf_clear(&b);
    put_header(&b, 3, 0, 2);
    for (int k = 0; k < 2; k++) {
        put_str(&b, "dup.key");
        put_u32(&b, GGUF_TYPE_UINT8);
        buf_append_char(&b, 1);
    }
    expect_reject(&b, ERR_FORMAT, "duplicate key 'dup.key'", "dup key");
    buf_clear(&b);
    put_header(&b, 3, 0, 1);
    put_str(&b, "nested");
    put_u32(&b, GGUF_TYPE_ARRAY);
    put_u32(&b, GGUF_TYPE_ARRAY);
    put_u64(&b, 1);
    for (int i = 0; i < 20; i++) buf_append_char(&b, 0);
    expect_reject(&b, ERR_FORMAT, "nested arrays", "nested");
    buf_clear(&b);
    put_header(&b, 3, 0, 1);
    put_str(&b, "huge");
    put_u32(&b, GGUF_TYPE_ARRAY);
    put_u32(&b, GGUF_TYPE_UINT64);
    put_u64(&b, 1ull << 29);
    for (int i = 0; i < 20; i++) buf_append_char(&b, 0);
    expect_reject(&b, ERR_FORMAT, "runs past end of file", "huge array");
    buf_clear(&b);
    put_header(&b, 3, 0, 1);
    put_str(&b, "huge");
    put_u32(&b, GGUF_TYPE_ARRAY);
    put_u32(&b, GGUF_TYPE_STRING);
    put_u64(&b, UINT64_MAX);
    expect_reject(&b, ERR_FORMAT, "exceeds the limit", "huge string array");
    buf_clear(&b);
    put_header(&b, 3, 0, 1);
    put_str(&b, "bools");
    put_u32(&b, GGUF_TYPE_ARRAY);
    put_u32(&b, GGUF_TYPE_BOOL);
    put_u64(&b, 3);
    buf_append(&b, "\x01\x00\x02", 3);
    expect_reject(&b, ERR_FORMAT, "bool array element 2", "bool array");

    /* Tensor infos: duplicate names, overlap, bad n_dims, long names, overflow. */
    buf_clear(&b);
    put_header(&b, 3, 2, 0);
    for (int k = 0; k < 2; k++) {
        put_str(&b, "t");
        put_u32(&b, 1);
        put_u64(&b, 8);
        put_u32(&b, 0);
        put_u64(&b, (uint64_t)k * 32);
    }
    put_pad(&b, 32);
    for (int i = 0; i < 64; i++) buf_append_char(&b, 0);
    expect_reject(&b, ERR_FORMAT, "duplicate tensor name 't'", "dup tensor");
    buf_clear(&b);
    put_header(&b, 3, 2, 0);
    for (int k = 0; k < 2; k++) {
        put_str(&b, k ? "b" : "a");
        put_u32(&b, 1);
        put_u64(&b, 16); /* 64 bytes */
        put_u32(&b, 0);
        put_u64(&b, (uint64_t)k * 32);
    }
    put_pad(&b, 32);
    for (int i = 0; i < 128; i++) buf_append_char(&b, 0);
    expect_reject(&b, ERR_FORMAT, "overlaps tensor 'a'", "overlap");
    buf_clear(&b);
    put_header(&b, 3, 1, 0);
    put_str(&b, "t");
    put_u32(&b, 5);
    for (int i = 0; i < 60; i++) buf_append_char(&b, 0);
    expect_reject(&b, ERR_FORMAT, "n_dims 5", "n_dims");
    buf_clear(&b);
    put_header(&b, 3, 1, 0);
    put_str(&b, "0123456789012345678901234567890123456789012345678901234567890123");
    for (int i = 0; i < 60; i++) buf_append_char(&b, 0);
    expect_reject(&b, ERR_FORMAT, "tensor name length 64 exceeds the limit 63", "long name");
    buf_clear(&b);
    put_header(&b, 3, 1, 0);
    put_str(&b, "t");
    put_u32(&b, 3);
    put_u64(&b, 1ull << 32);
    put_u64(&b, 1ull << 32);
    put_u64(&b, 1ull << 32);
    for (int i = 0; i < 60; i++) buf_append_char(&b, 0);
    expect_reject(&b, ERR_FORMAT, "element count overflows", "ne overflow");
    buf_clear(&b);
    put_header(&b, 3, 1, 0);
    put_str(&b, "t");
    put_u32(&b, 2);
    put_u64(&b, 1ull << 31);
    put_u64(&b, 1ull << 31);
    put_u32(&b, 27); /* I64: 2^62 elements of 8 bytes */
    put_u64(&b, 0);
    for (int i = 0; i < 60; i++) buf_append_char(&b, 0);
    expect_reject(&b, ERR_FORMAT, "byte size overflows", "bytes overflow");

    /* Truncations in every part of a valid file. */
    build_small(&b, 3, "a.b", GGUF_TYPE_UINT32, 0, 8, 0);
    size_t full = b.len;
    for (size_t n = 0; n < full; n++) {
        struct gguf *g = NULL;
        int rc = gguf_open_memory(&g, b.data, n, &err);
        EXPECT_MSG(rc == ERR_FORMAT && strstr(err.msg, "at byte"), "truncated to %zu: %d %s", n, rc,
                   err.msg);
        gguf_close(g);
    }
    buf_free(&b);
}

TEST(gguf_open_errors_name_path) {
    struct gguf *g = NULL;
    struct error err = {0};
    EXPECT_EQ_INT(gguf_open(&g, "/nonexistent/dir/model.gguf", &err), ERR_NOT_FOUND);
    EXPECT(g == NULL);
    EXPECT(strstr(err.msg, "/nonexistent/dir/model.gguf") != NULL);
    char path[512];
    snprintf(path, sizeof(path), "%s/short.gguf", test_tmp_dir());
    FILE *f = fopen(path, "wb");
    ASSERT(f);
    fwrite("GGUF\x03\x00\x00\x00\x01", 1, 9, f);
    fclose(f);
    EXPECT_EQ_INT(gguf_open(&g, path, &err), ERR_FORMAT);
    EXPECT(strstr(err.msg, path) != NULL && strstr(err.msg, "at byte 8:") != NULL);
    EXPECT_EQ_INT(gguf_open(&g, test_tmp_dir(), &err), ERR_IO); /* a directory */
}

/* The three load modes give the same file: every tensor's bytes, read back through the copy,
 * equal the mapped ones (the copy is a different buffer). */
TEST(gguf_load_modes_agree) {
    const char *path = test_model_path("stories/stories260K.gguf");
    if (!path) SKIP_TEST("../shared/models/stories/stories260K.gguf not found");
    struct gguf *gm = NULL, *gc = NULL, *ga = NULL;
    struct error err = {0};
    ASSERT(gguf_open_load(&gm, path, GGUF_LOAD_MMAP, &err) == 0);
    ASSERT(gguf_open_load(&gc, path, GGUF_LOAD_COPY, &err) == 0);
    ASSERT(gguf_open_load(&ga, path, GGUF_LOAD_AUTO, &err) == 0);
    EXPECT_EQ_INT(gguf_n_tensors(gc), gguf_n_tensors(gm));
    EXPECT_EQ_INT(gguf_n_kv(gc), gguf_n_kv(gm));
    int same = 1;
    for (int64_t i = 0; i < gguf_n_tensors(gm); i++) {
        const struct gguf_tensor_info *a = gguf_tensor(gm, i), *b = gguf_tensor(gc, i),
                                      *c = gguf_tensor(ga, i);
        same &= !strcmp(a->name, b->name) && a->n_bytes == b->n_bytes && a->data != b->data &&
                memcmp(a->data, b->data, a->n_bytes) == 0 && c->n_bytes == a->n_bytes &&
                memcmp(a->data, c->data, a->n_bytes) == 0;
    }
    EXPECT(same);
    gguf_close(gm);
    gguf_close(gc);
    gguf_close(ga);
    EXPECT_EQ_INT(gguf_open_load(&gc, "/nonexistent/dir/model.gguf", GGUF_LOAD_COPY, &err),
                  ERR_NOT_FOUND);
    EXPECT(gc == NULL);
}

/* ---- writer ---- */

static uint64_t g_rng = 0x9E3779B97F4A7C15ull;

static uint32_t rng_next(void) {
    g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(g_rng >> 33);
}

static void fill_random(void *p, size_t n) {
    for (size_t i = 0; i < n; i++) ((unsigned char *)p)[i] = (unsigned char)rng_next();
}

static const char *tmp_path(const char *name) {
    static char path[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(path[k], sizeof(path[k]), "%s/%s", test_tmp_dir(), name);
    return path[k];
}

static int files_equal(const char *a, const char *b) {
    size_t na, nb;
    char *da = test_read_file(a, &na), *db = test_read_file(b, &nb);
    int eq = da && db && na == nb && memcmp(da, db, na) == 0;
    mem_free(da);
    mem_free(db);
    return eq;
}

/* Writes g's metadata and tensors (from its mapping) to path with a new writer. */
static int rewrite(const struct gguf *g, const char *path, struct error *err) {
    struct gguf_writer *w;
    int rc = gguf_writer_create(&w, err);
    if (rc) return rc;
    for (int64_t i = 0; i < gguf_n_kv(g) && !rc; i++) rc = gguf_writer_copy_kv(w, g, i);
    for (int64_t i = 0; i < gguf_n_tensors(g) && !rc; i++) {
        const struct gguf_tensor_info *t = gguf_tensor(g, i);
        rc = gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne, t->data, t->n_bytes);
    }
    if (!rc) rc = gguf_writer_write_file(w, path, err);
    gguf_writer_free(w);
    return rc;
}

struct test_tensor {
    const char *name;
    uint32_t type;
    int n_dims;
    int64_t ne[4];
};

static const struct test_tensor g_test_tensors[] = {
    {"token_embd.weight", 0, 2, {8, 3, 1, 1}},
    {"blk.0.attn_q.weight", 8, 2, {64, 2, 1, 1}},
    {"blk.0.ffn_up.weight", 12, 2, {256, 2, 1, 1}},
    {"blk.0.attn_norm.weight", 1, 1, {16, 1, 1, 1}},
    {"blk.0.ffn_down_exps.weight", 30, 3, {4, 2, 3, 1}},
    {"blk.0.empty", 0, 2, {32, 0, 1, 1}},
    {"blk.0.i8", 24, 4, {5, 1, 1, 2}},
    {"blk.0.q6k", 14, 2, {256, 1, 1, 1}},
    {"blk.0.mxfp4", 39, 1, {64, 1, 1, 1}},
    {"output.weight", 0, 1, {7, 1, 1, 1}},
};
#define N_TEST_TENSORS (sizeof(g_test_tensors) / sizeof(g_test_tensors[0]))

static uint64_t tensor_bytes(const struct test_tensor *t) {
    int64_t be, bb;
    CHECK(gguf_type_block(t->type, &be, &bb) == 0);
    return (uint64_t)(t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3] / be * bb);
}

/* Sets one key of every value type (and arrays of every element type) on w. */
static void set_all_types(struct gguf_writer *w) {
    EXPECT(gguf_writer_set_u8(w, "t.u8", 200) == 0);
    EXPECT(gguf_writer_set_i8(w, "t.i8", -100) == 0);
    EXPECT(gguf_writer_set_u16(w, "t.u16", 60000) == 0);
    EXPECT(gguf_writer_set_i16(w, "t.i16", -30000) == 0);
    EXPECT(gguf_writer_set_u32(w, "t.u32", 4000000000u) == 0);
    EXPECT(gguf_writer_set_i32(w, "t.i32", -2000000000) == 0);
    EXPECT(gguf_writer_set_u64(w, "t.u64", UINT64_MAX) == 0);
    EXPECT(gguf_writer_set_i64(w, "t.i64", INT64_MIN) == 0);
    EXPECT(gguf_writer_set_f32(w, "t.f32", 3.5f) == 0);
    EXPECT(gguf_writer_set_f64(w, "t.f64", -1e300) == 0);
    EXPECT(gguf_writer_set_bool(w, "t.true", 7) == 0);
    EXPECT(gguf_writer_set_bool(w, "t.false", 0) == 0);
    EXPECT(gguf_writer_set_str(w, "t.str", "hello \"world\"\n\t\x01") == 0);
    EXPECT(gguf_writer_set_str(w, "t.empty", "") == 0);
    const uint8_t u8s[] = {0, 1, 255};
    const int8_t i8s[] = {-128, 0, 127};
    const uint16_t u16s[] = {0, 65535};
    const int16_t i16s[] = {-32768, 32767};
    const uint32_t u32s[] = {0, 1, 4294967295u};
    const int32_t i32s[] = {11, 11, 10, 0};
    const float f32s[] = {0.5f, -2.25f, 1e30f};
    const uint8_t bools[] = {1, 0, 1};
    const uint64_t u64s[] = {UINT64_MAX, 0};
    const int64_t i64s[] = {INT64_MIN, -1, INT64_MAX};
    const double f64s[] = {1e-300, -0.0};
    EXPECT(gguf_writer_set_arr(w, "a.u8", GGUF_TYPE_UINT8, u8s, 3) == 0);
    EXPECT(gguf_writer_set_arr(w, "a.i8", GGUF_TYPE_INT8, i8s, 3) == 0);
    EXPECT(gguf_writer_set_arr(w, "a.u16", GGUF_TYPE_UINT16, u16s, 2) == 0);
    EXPECT(gguf_writer_set_arr(w, "a.i16", GGUF_TYPE_INT16, i16s, 2) == 0);
    EXPECT(gguf_writer_set_arr(w, "a.u32", GGUF_TYPE_UINT32, u32s, 3) == 0);
    EXPECT(gguf_writer_set_arr(w, "a.i32", GGUF_TYPE_INT32, i32s, 4) == 0);
    EXPECT(gguf_writer_set_arr(w, "a.f32", GGUF_TYPE_FLOAT32, f32s, 3) == 0);
    EXPECT(gguf_writer_set_arr(w, "a.bool", GGUF_TYPE_BOOL, bools, 3) == 0);
    EXPECT(gguf_writer_set_arr(w, "a.u64", GGUF_TYPE_UINT64, u64s, 2) == 0);
    EXPECT(gguf_writer_set_arr(w, "a.i64", GGUF_TYPE_INT64, i64s, 3) == 0);
    EXPECT(gguf_writer_set_arr(w, "a.f64", GGUF_TYPE_FLOAT64, f64s, 2) == 0);
    EXPECT(gguf_writer_set_arr(w, "a.empty", GGUF_TYPE_INT32, NULL, 0) == 0);
    const char *strs[] = {"a", "", "ccc \xe2\x96\x81"};
    EXPECT(gguf_writer_set_arr_str(w, "a.str", strs, 3) == 0);
    EXPECT(gguf_writer_set_arr_str(w, "a.str_empty", NULL, 0) == 0);
}

static void check_all_types(const struct gguf *g) {
    int64_t v;
    double d;
    int b;
    EXPECT(gguf_get_int(g, "t.u8", &v) == 0 && v == 200);
    EXPECT(gguf_get_int(g, "t.i8", &v) == 0 && v == -100);
    EXPECT(gguf_get_int(g, "t.u16", &v) == 0 && v == 60000);
    EXPECT(gguf_get_int(g, "t.i16", &v) == 0 && v == -30000);
    EXPECT(gguf_get_int(g, "t.u32", &v) == 0 && v == 4000000000LL);
    EXPECT(gguf_get_int(g, "t.i32", &v) == 0 && v == -2000000000);
    EXPECT_EQ_INT(gguf_get_int(g, "t.u64", &v), ERR_FORMAT); /* does not fit int64 */
    EXPECT(gguf_get_float(g, "t.u64", &d) == 0 && d == 18446744073709551615.0);
    EXPECT(gguf_get_int(g, "t.i64", &v) == 0 && v == INT64_MIN);
    EXPECT(gguf_get_float(g, "t.f32", &d) == 0 && d == 3.5);
    EXPECT(gguf_get_float(g, "t.f64", &d) == 0 && d == -1e300);
    EXPECT(gguf_get_float(g, "t.i16", &d) == 0 && d == -30000);
    EXPECT_EQ_INT(gguf_get_int(g, "t.f32", &v), ERR_FORMAT);
    EXPECT(gguf_get_bool(g, "t.true", &b) == 0 && b == 1);
    EXPECT(gguf_get_bool(g, "t.false", &b) == 0 && b == 0);
    EXPECT(gguf_get_int(g, "t.true", &v) == 0 && v == 1);
    EXPECT_EQ_INT(gguf_get_bool(g, "t.str", &b), ERR_FORMAT);
    uint32_t u;
    EXPECT(gguf_get_uint32(g, "t.u32", &u) == 0 && u == 4000000000u);
    EXPECT_EQ_INT(gguf_get_uint32(g, "t.i32", &u), ERR_FORMAT);
    EXPECT_EQ_INT(gguf_get_uint32(g, "t.i64", &u), ERR_FORMAT);
    EXPECT_EQ_INT(gguf_get_uint32(g, "a.u32", &u), ERR_FORMAT); /* array, not scalar */
    EXPECT(str_is(g, "t.str", "hello \"world\"\n\t\x01"));
    EXPECT(str_is(g, "t.empty", ""));
    int64_t i = gguf_find_key(g, "t.u16");
    ASSERT(i >= 0);
    EXPECT_EQ_INT(gguf_kv_type(g, i), GGUF_TYPE_UINT16);
    const unsigned char *raw = gguf_kv_arr_data(g, i);
    EXPECT(raw && raw[0] == (60000 & 255) && raw[1] == (60000 >> 8));

    struct {
        const char *key;
        enum gguf_type type;
        uint64_t n;
        double vals[4];
    } arrs[] = {
        {"a.u8", GGUF_TYPE_UINT8, 3, {0, 1, 255}},
        {"a.i8", GGUF_TYPE_INT8, 3, {-128, 0, 127}},
        {"a.u16", GGUF_TYPE_UINT16, 2, {0, 65535}},
        {"a.i16", GGUF_TYPE_INT16, 2, {-32768, 32767}},
        {"a.u32", GGUF_TYPE_UINT32, 3, {0, 1, 4294967295.0}},
        {"a.i32", GGUF_TYPE_INT32, 4, {11, 11, 10, 0}},
        {"a.f32", GGUF_TYPE_FLOAT32, 3, {0.5, -2.25, (double)1e30f}},
        {"a.bool", GGUF_TYPE_BOOL, 3, {1, 0, 1}},
        {"a.u64", GGUF_TYPE_UINT64, 2, {18446744073709551615.0, 0}},
        {"a.i64", GGUF_TYPE_INT64, 3, {-9223372036854775808.0, -1, 9223372036854775807.0}},
        {"a.f64", GGUF_TYPE_FLOAT64, 2, {1e-300, -0.0}},
        {"a.empty", GGUF_TYPE_INT32, 0, {0}},
    };
    for (size_t k = 0; k < sizeof(arrs) / sizeof(arrs[0]); k++) {
        i = gguf_find_key(g, arrs[k].key);
        EXPECT_MSG(i >= 0, "%s", arrs[k].key);
        if (i < 0) continue;
        EXPECT(gguf_kv_type(g, i) == GGUF_TYPE_ARRAY);
        EXPECT_MSG(gguf_kv_arr_type(g, i) == arrs[k].type && gguf_kv_arr_n(g, i) == arrs[k].n, "%s",
                   arrs[k].key);
        for (uint64_t j = 0; j < arrs[k].n && j < gguf_kv_arr_n(g, i); j++)
            EXPECT_MSG(gguf_kv_arr_float(g, i, j) == arrs[k].vals[j], "%s[%llu]", arrs[k].key,
                       (unsigned long long)j);
    }
    i = gguf_find_key(g, "a.i64");
    EXPECT(gguf_kv_arr_int(g, i, 0) == INT64_MIN && gguf_kv_arr_int(g, i, 2) == INT64_MAX);
    i = gguf_find_key(g, "a.u64");
    EXPECT(gguf_kv_arr_int(g, i, 0) == INT64_MAX); /* saturates */
    i = gguf_find_key(g, "a.i8");
    EXPECT(gguf_kv_arr_int(g, i, 0) == -128);
    EXPECT(arr_str_is(g, "a.str", 0, "a"));
    EXPECT(arr_str_is(g, "a.str", 1, ""));
    EXPECT(arr_str_is(g, "a.str", 2, "ccc \xe2\x96\x81"));
    EXPECT_EQ_INT(arr_n(g, "a.str"), 3);
    EXPECT_EQ_INT(arr_n(g, "a.str_empty"), 0);
}

TEST(gguf_writer_roundtrip) {
    struct error err = {0};
    struct gguf_writer *w;
    ASSERT(gguf_writer_create(&w, &err) == 0);
    EXPECT(gguf_writer_set_str(w, "general.architecture", "test") == 0);
    EXPECT(gguf_writer_set_u32(w, "replace.me", 1) == 0);
    EXPECT(gguf_writer_set_u32(w, "remove.me", 1) == 0);
    set_all_types(w);
    EXPECT(gguf_writer_set_str(w, "replace.me", "now a string") == 0); /* same position */
    EXPECT_EQ_INT(gguf_writer_remove_key(w, "remove.me"), 0);
    EXPECT_EQ_INT(gguf_writer_remove_key(w, "remove.me"), ERR_NOT_FOUND);
    gguf_writer_set_alignment(w, 64);

    void *data[N_TEST_TENSORS];
    for (size_t k = 0; k < N_TEST_TENSORS; k++) {
        const struct test_tensor *t = &g_test_tensors[k];
        uint64_t n = tensor_bytes(t);
        data[k] = mem_alloc(n + 1);
        fill_random(data[k], n);
        EXPECT_MSG(gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne, data[k], n) == 0,
                   "%s", t->name);
    }
    const char *path = tmp_path("roundtrip.gguf");
    EXPECT_MSG(gguf_writer_write_file(w, path, &err) == 0, "%s", err.msg);
    gguf_writer_free(w);

    struct gguf *g;
    ASSERT_MSG(gguf_open(&g, path, &err) == 0, "%s", err.msg);
    EXPECT_EQ_INT(gguf_version(g), 3);
    EXPECT_EQ_INT(gguf_alignment(g), 64);
    EXPECT_EQ_INT(gguf_n_kv(g), 1 + 1 + 14 + 14 + 1); /* + general.alignment */
    struct gguf_str k0 = gguf_kv_key(g, 0), k1 = gguf_kv_key(g, 1);
    EXPECT(k0.len == 20 && memcmp(k0.data, "general.architecture", 20) == 0);
    EXPECT(k1.len == 10 && memcmp(k1.data, "replace.me", 10) == 0);
    EXPECT(str_is(g, "replace.me", "now a string"));
    EXPECT_EQ_INT(gguf_find_key(g, "remove.me"), -1);
    int64_t al;
    EXPECT(gguf_get_int(g, "general.alignment", &al) == 0 && al == 64);
    check_all_types(g);
    EXPECT_EQ_INT(gguf_n_tensors(g), N_TEST_TENSORS);
    uint64_t end = 0;
    for (size_t k = 0; k < N_TEST_TENSORS && k < (size_t)gguf_n_tensors(g); k++) {
        const struct test_tensor *want = &g_test_tensors[k];
        const struct gguf_tensor_info *t = gguf_tensor(g, (int64_t)k);
        EXPECT(strcmp(t->name, want->name) == 0);
        EXPECT(t->type == want->type && t->n_dims == want->n_dims);
        for (int d = 0; d < 4; d++) EXPECT(t->ne[d] == want->ne[d]);
        EXPECT_EQ_INT(t->n_bytes, tensor_bytes(want));
        EXPECT(t->offset % 64 == 0 && t->file_offset % 64 == 0);
        EXPECT(t->n_bytes == 0 || memcmp(t->data, data[k], t->n_bytes) == 0);
        end = t->file_offset + round_up(t->n_bytes, 64);
    }
    EXPECT_EQ_INT(gguf_file_bytes(g), end);

    /* Copying every kv and tensor into a new writer reproduces the file byte for byte. */
    const char *path2 = tmp_path("roundtrip2.gguf");
    EXPECT_MSG(rewrite(g, path2, &err) == 0, "%s", err.msg);
    EXPECT(files_equal(path, path2));
    gguf_close(g);
    for (size_t k = 0; k < N_TEST_TENSORS; k++) mem_free(data[k]);
}

/* Rewriting a llama.cpp-written file through copy_kv + add_tensor reproduces it exactly: same
 * key order and encoding, dense offsets, padding after every tensor. */
TEST(gguf_writer_reproduces_shared_files) {
    const char *files[] = {"stories/stories260K.gguf", "synthetic/qwen35moe-q4_k_m.gguf",
                           "vocab/ggml-vocab-llama-spm.gguf"};
    int n_done = 0;
    for (size_t k = 0; k < sizeof(files) / sizeof(files[0]); k++) {
        const char *path = test_model_path(files[k]);
        if (!path) continue;
        struct gguf *g;
        struct error err = {0};
        ASSERT_MSG(gguf_open(&g, path, &err) == 0, "%s", err.msg);
        const char *out = tmp_path("rewrite.gguf");
        EXPECT_MSG(rewrite(g, out, &err) == 0, "%s", err.msg);
        EXPECT_MSG(files_equal(path, out), "%s differs after rewrite", files[k]);
        gguf_close(g);
        n_done++;
    }
    if (!n_done) SKIP_TEST("../shared/models not found");
}

TEST(gguf_writer_rejects_bad_input) {
    struct error err = {0};
    struct gguf_writer *w;
    ASSERT(gguf_writer_create(&w, &err) == 0);
    const int64_t ne[4] = {32, 2, 1, 1};
    static char data[4096];
    EXPECT_EQ_INT(gguf_writer_set_u32(w, "", 1), ERR_INVALID);
    EXPECT_EQ_INT(gguf_writer_set_u32(w, "general.alignment", 3), ERR_INVALID);
    EXPECT_EQ_INT(gguf_writer_set_u32(w, "general.alignment", 0), ERR_INVALID);
    EXPECT_EQ_INT(gguf_writer_set_u64(w, "general.alignment", 64), ERR_INVALID);
    const uint8_t bad_bools[] = {0, 2};
    EXPECT_EQ_INT(gguf_writer_set_arr(w, "b", GGUF_TYPE_BOOL, bad_bools, 2), ERR_INVALID);
    EXPECT_EQ_INT(gguf_writer_set_arr(w, "b", GGUF_TYPE_STRING, data, 1), ERR_INVALID);
    EXPECT_EQ_INT(gguf_writer_set_arr(w, "b", GGUF_TYPE_ARRAY, data, 1), ERR_INVALID);
    EXPECT_EQ_INT(gguf_writer_set_arr(w, "b", GGUF_TYPE_UINT8, data, (1ull << 30) + 1),
                  ERR_INVALID);
    EXPECT_EQ_INT(gguf_writer_add_tensor(w, "", 0, 2, ne, data, 256), ERR_INVALID);
    EXPECT_EQ_INT(gguf_writer_add_tensor(w,
                                         "0123456789012345678901234567890123456789012345678"
                                         "901234567890123",
                                         0, 2, ne, data, 256),
                  ERR_INVALID);
    EXPECT_EQ_INT(gguf_writer_add_tensor(w, "t", 0, 0, ne, data, 256), ERR_INVALID);
    EXPECT_EQ_INT(gguf_writer_add_tensor(w, "t", 0, 5, ne, data, 256), ERR_INVALID);
    EXPECT_EQ_INT(gguf_writer_add_tensor(w, "t", 4, 2, ne, data, 256), ERR_INVALID);
    EXPECT_EQ_INT(gguf_writer_add_tensor(w, "t", 12, 2, ne, data, 256), ERR_INVALID); /* Q4_K */
    EXPECT_EQ_INT(gguf_writer_add_tensor(w, "t", 0, 2, ne, data, 255), ERR_INVALID);
    const int64_t neg[2] = {32, -1};
    EXPECT_EQ_INT(gguf_writer_add_tensor(w, "t", 0, 2, neg, data, 0), ERR_INVALID);
    const int64_t huge[3] = {1ll << 32, 1ll << 32, 1ll << 32};
    EXPECT_EQ_INT(gguf_writer_add_tensor(w, "t", 0, 3, huge, NULL, 0), ERR_INVALID);
    EXPECT_EQ_INT(gguf_writer_add_tensor(w, "t", 0, 2, ne, data, 256), 0);
    EXPECT_EQ_INT(gguf_writer_add_tensor(w, "t", 0, 2, ne, data, 256), ERR_INVALID); /* dup */
    EXPECT_EQ_INT(gguf_writer_add_tensor(w, "s", 0, 2, ne, NULL, 0), 0);
    const char *path = tmp_path("bad.gguf");
    EXPECT_EQ_INT(gguf_writer_write_file(w, path, &err), ERR_INVALID); /* 's' has no data */
    EXPECT(strstr(err.msg, "'s'") != NULL);

    /* Streaming misuse: wrong size aborts the stream and removes the partial file. */
    EXPECT_EQ_INT(gguf_writer_stream_tensor(w, data, 256, &err), ERR_INVALID); /* not begun */
    ASSERT(gguf_writer_stream_begin(w, path, &err) == 0);
    EXPECT_EQ_INT(gguf_writer_stream_tensor(w, data, 100, &err), ERR_INVALID);
    EXPECT(strstr(err.msg, "needs 256 bytes, got 100") != NULL);
    EXPECT(test_read_file(path, NULL) == NULL);
    ASSERT(gguf_writer_stream_begin(w, path, &err) == 0);
    EXPECT(gguf_writer_stream_tensor(w, data, 256, &err) == 0);
    EXPECT_EQ_INT(gguf_writer_stream_end(w, &err), ERR_INVALID); /* 1 of 2 */
    EXPECT(test_read_file(path, NULL) == NULL);
    EXPECT_EQ_INT(gguf_writer_stream_begin(w, "/nonexistent/dir/x.gguf", &err), ERR_IO);
    gguf_writer_free(w);
}

TEST(gguf_writer_streaming) {
    struct error err = {0};
    struct gguf_writer *w;
    ASSERT(gguf_writer_create(&w, &err) == 0);
    EXPECT(gguf_writer_set_str(w, "general.architecture", "stream") == 0);
    gguf_writer_set_alignment(w, 128);
    gguf_writer_set_alignment(w, 32); /* back to the default: no general.alignment key */
    void *data[N_TEST_TENSORS];
    for (size_t k = 0; k < N_TEST_TENSORS; k++) {
        const struct test_tensor *t = &g_test_tensors[k];
        uint64_t n = tensor_bytes(t);
        data[k] = mem_alloc(n + 1);
        fill_random(data[k], n);
        EXPECT(gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne, NULL, n) == 0);
    }
    const char *path = tmp_path("stream.gguf");
    ASSERT_MSG(gguf_writer_stream_begin(w, path, &err) == 0, "%s", err.msg);
    for (size_t k = 0; k < N_TEST_TENSORS; k++)
        EXPECT_MSG(gguf_writer_stream_tensor(w, data[k], tensor_bytes(&g_test_tensors[k]), &err) ==
                       0,
                   "%s", err.msg);
    EXPECT_MSG(gguf_writer_stream_end(w, &err) == 0, "%s", err.msg);
    gguf_writer_free(w);
    struct gguf *g;
    ASSERT_MSG(gguf_open(&g, path, &err) == 0, "%s", err.msg);
    EXPECT_EQ_INT(gguf_n_kv(g), 1);
    EXPECT_EQ_INT(gguf_alignment(g), 32);
    check_layout(g);
    for (size_t k = 0; k < N_TEST_TENSORS; k++) {
        const struct gguf_tensor_info *t = gguf_find_tensor(g, g_test_tensors[k].name);
        EXPECT(t && (t->n_bytes == 0 || memcmp(t->data, data[k], t->n_bytes) == 0));
        mem_free(data[k]);
    }
    gguf_close(g);
}

/* ---- split files ---- */

static int run_inspect(int argc, const char **args, char **out_text, char **err_text);

/* Writes g as n_split shards prefix-0000k-of-0000n.gguf: shard 1 holds all metadata, every shard
 * the split keys and a contiguous run of the tensors. bad_no is added to split.no of shard 2
 * (to make a bad file). */
static int write_split(const struct gguf *g, const char *prefix, int n_split, int bad_no,
                       struct error *err) {
    int64_t n = gguf_n_tensors(g), per = (n + n_split - 1) / n_split;
    int rc = 0;
    for (int k = 0; k < n_split && !rc; k++) {
        struct gguf_writer *w;
        rc = gguf_writer_create(&w, err);
        if (rc) return rc;
        if (k == 0)
            for (int64_t i = 0; i < gguf_n_kv(g) && !rc; i++) rc = gguf_writer_copy_kv(w, g, i);
        if (!rc) rc = gguf_writer_set_u16(w, "split.no", (uint16_t)(k + (k == 1 ? bad_no : 0)));
        if (!rc) rc = gguf_writer_set_u16(w, "split.count", (uint16_t)n_split);
        if (!rc) rc = gguf_writer_set_i32(w, "split.tensors.count", (int32_t)n);
        for (int64_t i = k * per; i < (k + 1) * per && i < n && !rc; i++) {
            const struct gguf_tensor_info *t = gguf_tensor(g, i);
            rc = gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne, t->data, t->n_bytes);
        }
        char path[600];
        snprintf(path, sizeof(path), "%s-%05d-of-%05d.gguf", prefix, k + 1, n_split);
        if (!rc) rc = gguf_writer_write_file(w, path, err);
        gguf_writer_free(w);
    }
    return rc;
}

/* A small model written by the writer (so split tests run without ../shared). */
static const char *write_test_model(void) {
    struct error err = {0};
    struct gguf_writer *w;
    CHECK(gguf_writer_create(&w, &err) == 0);
    CHECK(gguf_writer_set_str(w, "general.architecture", "llama") == 0);
    CHECK(gguf_writer_set_u32(w, "llama.block_count", 1) == 0);
    const char *toks[] = {"<unk>", "<s>", "</s>", "a", "b"};
    CHECK(gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", toks, 5) == 0);
    void *data[N_TEST_TENSORS];
    for (size_t k = 0; k < N_TEST_TENSORS; k++) {
        const struct test_tensor *t = &g_test_tensors[k];
        uint64_t n = tensor_bytes(t);
        data[k] = mem_alloc(n + 1);
        fill_random(data[k], n);
        CHECK(gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne, data[k], n) == 0);
    }
    const char *path = tmp_path("model.gguf");
    CHECK(gguf_writer_write_file(w, path, &err) == 0);
    gguf_writer_free(w);
    for (size_t k = 0; k < N_TEST_TENSORS; k++) mem_free(data[k]);
    return path;
}

static void check_split_roundtrip(const char *src_path, const char *prefix) {
    struct error err = {0};
    struct gguf *g, *s;
    ASSERT_MSG(gguf_open(&g, src_path, &err) == 0, "%s", err.msg);
    char first[600];
    snprintf(first, sizeof(first), "%s-00001-of-00003.gguf", prefix);
    ASSERT_MSG(write_split(g, prefix, 3, 0, &err) == 0, "%s", err.msg);
    ASSERT_MSG(gguf_open(&s, first, &err) == 0, "%s", err.msg);
    EXPECT_EQ_INT(gguf_n_shards(s), 3);
    EXPECT_EQ_INT(gguf_n_kv(s), gguf_n_kv(g) + 3);
    EXPECT_EQ_INT(gguf_n_tensors(s), gguf_n_tensors(g));
    int64_t per = (gguf_n_tensors(g) + 2) / 3;
    for (int64_t i = 0; i < gguf_n_tensors(g) && i < gguf_n_tensors(s); i++) {
        const struct gguf_tensor_info *a = gguf_tensor(g, i), *b = gguf_tensor(s, i);
        EXPECT(strcmp(a->name, b->name) == 0 && a->type == b->type && a->n_dims == b->n_dims);
        EXPECT(memcmp(a->ne, b->ne, sizeof(a->ne)) == 0 && a->n_bytes == b->n_bytes);
        EXPECT(a->n_bytes == 0 || memcmp(a->data, b->data, a->n_bytes) == 0);
        EXPECT_EQ_INT(b->shard, i / per);
        EXPECT(gguf_find_tensor(s, a->name) == b);
    }
    for (int64_t i = 0; i < gguf_n_kv(g); i++) {
        struct gguf_str k = gguf_kv_key(g, i), k2 = gguf_kv_key(s, i);
        EXPECT(k.len == k2.len && memcmp(k.data, k2.data, k.len) == 0);
    }
    gguf_close(s);

    /* Opening shard 2 by its own name gives just that shard. */
    char second[600];
    snprintf(second, sizeof(second), "%s-00002-of-00003.gguf", prefix);
    ASSERT_MSG(gguf_open(&s, second, &err) == 0, "%s", err.msg);
    EXPECT_EQ_INT(gguf_n_shards(s), 1);
    EXPECT_EQ_INT(gguf_n_kv(s), 3);
    gguf_close(s);

    /* inspect lists every shard and the shard of each tensor. */
    char *out, *errs;
    const char *args[] = {"inspect", first};
    EXPECT_EQ_INT(run_inspect(2, args, &out, &errs), 0);
    EXPECT(strstr(out, "shards: 3\n") && strstr(out, "-00003-of-00003.gguf\n") &&
           strstr(out, "  shard\n"));
    mem_free(out);
    mem_free(errs);

    /* split.no disagreeing with the file name. */
    ASSERT_MSG(write_split(g, prefix, 3, 1, &err) == 0, "%s", err.msg);
    s = NULL;
    EXPECT_EQ_INT(gguf_open(&s, first, &err), ERR_FORMAT);
    EXPECT(s == NULL);
    EXPECT_MSG(strstr(err.msg, "split.no is 2, expected 1") && strstr(err.msg, "at byte") &&
                   strstr(err.msg, "00002-of-00003"),
               "%s", err.msg);

    /* A missing shard is a clean error naming it. */
    ASSERT_MSG(write_split(g, prefix, 3, 0, &err) == 0, "%s", err.msg);
    char third[600];
    snprintf(third, sizeof(third), "%s-00003-of-00003.gguf", prefix);
    EXPECT(remove(third) == 0);
    EXPECT_EQ_INT(gguf_open(&s, first, &err), ERR_NOT_FOUND);
    EXPECT(s == NULL);
    EXPECT_MSG(strstr(err.msg, "shard 3 of 3") && strstr(err.msg, third), "%s", err.msg);
    gguf_close(g);
}

TEST(gguf_split_files) {
    char prefix[600];
    snprintf(prefix, sizeof(prefix), "%s/own", test_tmp_dir());
    check_split_roundtrip(write_test_model(), prefix);
    const char *stories = test_model_path("stories/stories260K.gguf");
    if (!stories) SKIP_TEST("../shared/models/stories/stories260K.gguf not found");
    snprintf(prefix, sizeof(prefix), "%s/stories", test_tmp_dir());
    check_split_roundtrip(stories, prefix);
}

/* ---- hearth inspect ---- */

/* Runs inspect with args; returns rc and the captured stdout/stderr (caller frees). */
static int run_inspect(int argc, const char **args, char **out_text, char **err_text) {
    FILE *out = tmpfile(), *err = tmpfile();
    CHECK(out && err);
    int rc = tool_inspect_run(argc, (char **)args, out, err);
    FILE *fs[2] = {out, err};
    char **texts[2] = {out_text, err_text};
    for (int k = 0; k < 2; k++) {
        long n = ftell(fs[k]);
        rewind(fs[k]);
        *texts[k] = mem_alloc((size_t)n + 1);
        CHECK(*texts[k] && fread(*texts[k], 1, (size_t)n, fs[k]) == (size_t)n);
        (*texts[k])[n] = 0;
        fclose(fs[k]);
    }
    return rc;
}

static int count_lines(const char *s) {
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

TEST(gguf_inspect_tool) {
    struct error err = {0};
    struct gguf_writer *w;
    ASSERT(gguf_writer_create(&w, &err) == 0);
    set_all_types(w);
    char long_str[600];
    memset(long_str, 'x', sizeof(long_str) - 1);
    long_str[sizeof(long_str) - 1] = 0;
    EXPECT(gguf_writer_set_str(w, "t.long", long_str) == 0);
    int32_t many[100];
    for (int i = 0; i < 100; i++) many[i] = i * 3;
    EXPECT(gguf_writer_set_arr(w, "a.many", GGUF_TYPE_INT32, many, 100) == 0);
    static char data[4096];
    const int64_t ne[2] = {256, 2};
    EXPECT(gguf_writer_add_tensor(w, "blk.0.ffn_up.weight", 12, 2, ne, data, 288) == 0);
    EXPECT(gguf_writer_add_tensor(w, "blk.0.ffn_down.weight", 12, 2, ne, data, 288) == 0);
    EXPECT(gguf_writer_add_tensor(w, "output_norm.weight", 0, 1, ne, data, 1024) == 0);
    const char *path = tmp_path("inspect.gguf");
    ASSERT_MSG(gguf_writer_write_file(w, path, &err) == 0, "%s", err.msg);
    gguf_writer_free(w);

    char *out, *errs;
    const char *args[] = {"inspect", path, "--all"};
    EXPECT_EQ_INT(run_inspect(2, args, &out, &errs), 0);
    EXPECT(errs[0] == 0);
    EXPECT(strstr(out, "version: 3\n") && strstr(out, "alignment: 32\n"));
    EXPECT(strstr(out, "kv count: 30\n") && strstr(out, "tensor count: 3\n"));
    EXPECT(strstr(out, "  t.u8 : u8 = 200\n") && strstr(out, "  t.i8 : i8 = -100\n"));
    EXPECT(strstr(out, "  t.u64 : u64 = 18446744073709551615\n"));
    EXPECT(strstr(out, "  t.i64 : i64 = -9223372036854775808\n"));
    EXPECT(strstr(out, "  t.f32 : f32 = 3.5\n") && strstr(out, "  t.true : bool = true\n"));
    EXPECT(strstr(out, "  t.str : string = \"hello \\\"world\\\"\\n\\t\\x01\"\n"));
    EXPECT(strstr(out, "...(599 bytes)\n"));
    EXPECT(strstr(out, "  a.i32 : [4 x i32] = [11, 11, 10, 0]\n"));
    EXPECT(strstr(out, "  a.str : [3 x string] = [\"a\", \"\", \"ccc \xe2\x96\x81\"]\n"));
    EXPECT(strstr(out, "  a.many : [100 x i32] = [0, 3, 6, 9, 12, 15, 18, 21, ... (92 more)]\n"));
    EXPECT(strstr(out, "  a.empty : [0 x i32] = []\n"));
    EXPECT(strstr(out, "blk.0.ffn_down.weight  Q4_K     [256, 2]"));
    EXPECT(strstr(out, "output_norm.weight     F32      [256]"));
    EXPECT(strstr(out, "  Q4_K          2 tensors             576 bytes\n"));
    EXPECT(strstr(out, "  total         3 tensors            1600 bytes\n"));
    int n_lines = count_lines(out);
    mem_free(out);
    mem_free(errs);

    EXPECT_EQ_INT(run_inspect(3, args, &out, &errs), 0);
    EXPECT(strstr(out, "(92 more)") == NULL && strstr(out, ", 297]\n"));
    EXPECT(strstr(out, "...(599 bytes)") == NULL);
    EXPECT_EQ_INT(count_lines(out), n_lines);
    mem_free(out);
    mem_free(errs);

    /* Errors: one line on stderr, exit code 1. */
    const char *bad[] = {"inspect", "/nonexistent/x.gguf"};
    EXPECT_EQ_INT(run_inspect(2, bad, &out, &errs), 1);
    EXPECT(out[0] == 0 && count_lines(errs) == 1 && strstr(errs, "/nonexistent/x.gguf"));
    mem_free(out);
    mem_free(errs);
    EXPECT_EQ_INT(run_inspect(1, bad, &out, &errs), 1);
    EXPECT(count_lines(errs) == 1);
    mem_free(out);
    mem_free(errs);
    const char *path_short = tmp_path("short.gguf");
    FILE *f = fopen(path_short, "wb");
    ASSERT(f);
    fwrite("GGUF\x03\x00\x00\x00\x01", 1, 9, f);
    fclose(f);
    const char *trunc[] = {"inspect", path_short};
    EXPECT_EQ_INT(run_inspect(2, trunc, &out, &errs), 1);
    EXPECT(count_lines(errs) == 1 && strstr(errs, "at byte 8"));
    mem_free(out);
    mem_free(errs);
}

/* ---- corruption sweep ----
 *
 * Truncated, overwritten and length-inflated copies of real files must either open (and then
 * every tensor lies inside the buffer) or fail with ERR_FORMAT/ERR_UNSUPPORTED and a message
 * naming the byte. Each candidate is parsed from an allocation of exactly its size, so ASan
 * catches any read past the end. */

#if defined(__SANITIZE_ADDRESS__)
#define CORRUPT_SAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CORRUPT_SAN 1
#endif
#endif
#ifndef CORRUPT_SAN
#define CORRUPT_SAN 0
#endif

struct corrupt_stats {
    int64_t n_open, n_ok, n_fail;
};

/* Reads every accessor of an opened file (what a loader or the fuzzer would do). */
static void touch_all(const struct gguf *g, const unsigned char *buf, size_t n) {
    volatile uint64_t sink = 0;
    for (int64_t i = 0; i < gguf_n_kv(g); i++) {
        struct gguf_str k = gguf_kv_key(g, i);
        sink += (unsigned char)k.data[k.len - 1];
        enum gguf_type t = gguf_kv_type(g, i);
        if (t == GGUF_TYPE_STRING) {
            struct gguf_str s = gguf_kv_str(g, i);
            if (s.len) sink += (unsigned char)s.data[s.len - 1];
        } else if (t == GGUF_TYPE_ARRAY) {
            enum gguf_type et = gguf_kv_arr_type(g, i);
            uint64_t m = gguf_kv_arr_n(g, i);
            for (uint64_t j = m > 4 ? m - 4 : 0; j < m; j++) {
                if (et == GGUF_TYPE_STRING) {
                    struct gguf_str s = gguf_kv_arr_str(g, i, j);
                    if (s.len) sink += (unsigned char)s.data[s.len - 1];
                } else if (et == GGUF_TYPE_FLOAT32 || et == GGUF_TYPE_FLOAT64) {
                    sink += (uint64_t)(gguf_kv_arr_float(g, i, j) != 0);
                } else {
                    sink += (uint64_t)gguf_kv_arr_int(g, i, j);
                }
            }
        } else {
            int64_t v;
            double d;
            sink += (uint64_t)gguf_get_int(g, "general.alignment", &v);
            sink += (uint64_t)(gguf_get_float(g, "general.architecture", &d) == 0);
        }
    }
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        const struct gguf_tensor_info *t = gguf_tensor(g, i);
        const unsigned char *d = t->data;
        EXPECT_MSG(d >= buf && t->n_bytes <= n && (size_t)(d - buf) <= n - t->n_bytes,
                   "tensor '%s' data outside the buffer", t->name);
        if (t->n_bytes) sink += d[t->n_bytes - 1];
        EXPECT(gguf_find_tensor(g, t->name) != NULL);
    }
    (void)sink;
}

/* data must be an allocation of exactly n bytes (so ASan sees any overread). */
static void corrupt_try(const unsigned char *copy, size_t n, struct corrupt_stats *st,
                        const char *what, size_t where) {
    struct gguf *g = NULL;
    struct error err = {0};
    int rc = gguf_open_memory(&g, copy, n, &err);
    st->n_open++;
    if (rc == 0) {
        st->n_ok++;
        touch_all(g, copy, n);
        gguf_close(g);
    } else {
        st->n_fail++;
        EXPECT_MSG((rc == ERR_FORMAT || rc == ERR_UNSUPPORTED) && strstr(err.msg, "byte"),
                   "%s at %zu: rc %d '%s'", what, where, rc, err.msg);
        EXPECT(g == NULL);
    }
}

/* Positions of the u64 length/count fields of a valid file's header (string lengths, array
 * counts, tensor count, kv count, ne, offsets), by a walk independent of the reader. */
static size_t header_u64_fields(const unsigned char *p, size_t n, size_t *out, size_t cap) {
    size_t k = 0, pos = 8;
#define RD64(at)                                                                                   \
    (p[(at)] | (uint64_t)p[(at) + 1] << 8 | (uint64_t)p[(at) + 2] << 16 |                          \
     (uint64_t)p[(at) + 3] << 24 | (uint64_t)p[(at) + 4] << 32 | (uint64_t)p[(at) + 5] << 40 |     \
     (uint64_t)p[(at) + 6] << 48 | (uint64_t)p[(at) + 7] << 56)
#define RD32(at)                                                                                   \
    (uint32_t)(p[(at)] | (uint32_t)p[(at) + 1] << 8 | (uint32_t)p[(at) + 2] << 16 |                \
               (uint32_t)p[(at) + 3] << 24)
#define FIELD(at)                                                                                  \
    do {                                                                                           \
        if (k < cap) out[k++] = (at);                                                              \
    } while (0)
    uint64_t n_tensors = RD64(8), n_kv = RD64(16);
    FIELD(8);
    FIELD(16);
    pos = 24;
    static const size_t sizes[13] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    for (uint64_t i = 0; i < n_kv && pos < n; i++) {
        FIELD(pos);
        pos += 8 + RD64(pos);
        uint32_t t = RD32(pos);
        pos += 4;
        if (t == GGUF_TYPE_STRING) {
            FIELD(pos);
            pos += 8 + RD64(pos);
        } else if (t == GGUF_TYPE_ARRAY) {
            uint32_t et = RD32(pos);
            FIELD(pos + 4);
            uint64_t m = RD64(pos + 4);
            pos += 12;
            if (et == GGUF_TYPE_STRING) {
                uint64_t stride = m > 64 ? m / 64 : 1;
                for (uint64_t j = 0; j < m; j++) {
                    if (j % stride == 0 || j + 1 == m) FIELD(pos);
                    pos += 8 + RD64(pos);
                }
            } else {
                pos += m * sizes[et];
            }
        } else {
            pos += sizes[t];
        }
    }
    for (uint64_t i = 0; i < n_tensors && pos < n; i++) {
        FIELD(pos);
        pos += 8 + RD64(pos);
        uint32_t n_dims = RD32(pos);
        pos += 4;
        for (uint32_t d = 0; d < n_dims; d++, pos += 8) FIELD(pos);
        pos += 4;
        FIELD(pos);
        pos += 8;
    }
#undef RD64
#undef RD32
#undef FIELD
    return k;
}

/* Header end: the data section start of a valid file (or its size with no tensors). */
static size_t header_bytes(const unsigned char *data, size_t n) {
    struct gguf *g;
    struct error err;
    CHECK(gguf_open_memory(&g, data, n, &err) == 0);
    size_t end = n;
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        size_t at = (size_t)(gguf_tensor(g, i)->file_offset - gguf_tensor(g, i)->offset);
        if (at < end) end = at;
    }
    gguf_close(g);
    return end;
}

/* Runs the sweep over one valid file. `light` thins it out (big files under ASan). */
static void corrupt_sweep(const unsigned char *data, size_t n, int light,
                          struct corrupt_stats *st) {
    size_t hdr = header_bytes(data, n);
    size_t dense = light ? 2048 : 4096, stride = light ? 17 : 5;
    /* 1. Truncation: every length in the first bytes, then a stride through the header, then
     * a few points in the data section. */
    for (size_t len = 0; len < n; len += len < dense ? 1 : len < hdr ? stride : n / 16 + 1) {
        unsigned char *part = mem_alloc(len ? len : 1);
        CHECK(part != NULL);
        memcpy(part, data, len);
        corrupt_try(part, len, st, "truncated", len);
        mem_free(part);
    }

    unsigned char *copy = mem_alloc(n);
    CHECK(copy != NULL);
    memcpy(copy, data, n);
    /* 2. Overwrites: each header byte (every byte early on, then a stride) with 0, 0xFF, a
     * random value and a flipped top bit. */
    for (size_t pos = 0; pos < hdr; pos += pos < dense ? 1 : stride) {
        unsigned char orig = copy[pos];
        const unsigned char vals[4] = {0, 0xFF, (unsigned char)rng_next(), orig ^ 0x80};
        for (int v = 0; v < (light ? 2 : 4); v++) {
            copy[pos] = vals[light ? (size_t)(2 * v) + (pos & 1) : (size_t)v];
            corrupt_try(copy, n, st, "overwritten", pos);
        }
        copy[pos] = orig;
    }
    /* 3. Length and count fields set to huge or off-by-one values. */
    size_t fields[512];
    size_t n_fields = header_u64_fields(data, n, fields, 512);
    CHECK(n_fields >= 2);
    for (size_t f = 0; f < n_fields; f++) {
        size_t at = fields[f];
        uint64_t orig;
        memcpy(&orig, copy + at, 8);
        const uint64_t vals[8] = {UINT64_MAX,  1ull << 63, (1ull << 30) + 1, 1ull << 32,
                                  (uint64_t)n, orig + 1,   orig - 1,         orig * 2 + 64};
        for (int v = 0; v < 8; v++) {
            memcpy(copy + at, &vals[v], 8);
            corrupt_try(copy, n, st, "length field", at);
        }
        memcpy(copy + at, &orig, 8);
    }
    mem_free(copy);
}

TEST(gguf_corruption_sweep) {
    struct corrupt_stats st = {0};
    /* Our own small file: every value type and several tensor types. */
    struct error err = {0};
    struct gguf_writer *w;
    ASSERT(gguf_writer_create(&w, &err) == 0);
    set_all_types(w);
    gguf_writer_set_alignment(w, 64);
    void *data[N_TEST_TENSORS];
    for (size_t k = 0; k < N_TEST_TENSORS; k++) {
        const struct test_tensor *t = &g_test_tensors[k];
        uint64_t nb = tensor_bytes(t);
        data[k] = mem_alloc(nb + 1);
        fill_random(data[k], nb);
        EXPECT(gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne, data[k], nb) == 0);
    }
    const char *path = tmp_path("corrupt.gguf");
    ASSERT_MSG(gguf_writer_write_file(w, path, &err) == 0, "%s", err.msg);
    gguf_writer_free(w);
    for (size_t k = 0; k < N_TEST_TENSORS; k++) mem_free(data[k]);
    size_t n;
    unsigned char *bytes = (unsigned char *)test_read_file(path, &n);
    ASSERT(bytes);
    corrupt_sweep(bytes, n, 0, &st);
    mem_free(bytes);

    const char *shared[] = {"stories/stories260K.gguf", "synthetic/qwen3-q4_k_m.gguf"};
    int n_shared = 0;
    for (size_t k = 0; k < sizeof(shared) / sizeof(shared[0]); k++) {
        const char *p = test_model_path(shared[k]);
        if (!p) continue;
        bytes = (unsigned char *)test_read_file(p, &n);
        ASSERT(bytes);
        corrupt_sweep(bytes, n, CORRUPT_SAN, &st);
        mem_free(bytes);
        n_shared++;
    }
    printf("  gguf_corruption_sweep: %lld opens, %lld accepted, %lld rejected\n",
           (long long)st.n_open, (long long)st.n_ok, (long long)st.n_fail);
    EXPECT(st.n_fail > st.n_ok);
    if (!n_shared) SKIP_TEST("../shared/models not found (own file swept only)");
}

/* ---- allocation failures ---- */

/* Every allocation of open (memory, file, split) and of the writer may fail: the result is a
 * clean ERR_NOMEM and nothing leaks. */
TEST(gguf_out_of_memory) {
    const char *model = write_test_model();
    char prefix[600], first[640];
    snprintf(prefix, sizeof(prefix), "%s/oom", test_tmp_dir());
    snprintf(first, sizeof(first), "%s-00001-of-00003.gguf", prefix);
    struct error err = {0};
    struct gguf *src;
    ASSERT(gguf_open(&src, model, &err) == 0);
    ASSERT(write_split(src, prefix, 3, 0, &err) == 0);
    size_t n;
    char *bytes = test_read_file(model, &n);
    ASSERT(bytes);
    int64_t live0 = mem_live_bytes();
    for (int which = 0; which < 3; which++) {
        int done = 0;
        for (int64_t k = 0; k < 1000 && !done; k++) {
            struct gguf *g = NULL;
            mem_fail_after(k);
            int rc = which == 0   ? gguf_open_memory(&g, bytes, n, &err)
                     : which == 1 ? gguf_open(&g, model, &err)
                                  : gguf_open(&g, first, &err);
            mem_fail_after(-1);
            if (rc == 0) {
                EXPECT(gguf_n_tensors(g) == (int64_t)N_TEST_TENSORS);
                gguf_close(g);
                done = 1;
            } else {
                EXPECT_MSG(rc == ERR_NOMEM, "open %d, failing alloc %lld: %d %s", which,
                           (long long)k, rc, err.msg);
                EXPECT(g == NULL);
            }
            EXPECT_EQ_INT(mem_live_bytes(), live0);
        }
        EXPECT(done);
    }
    /* The writer: every setter, add_tensor and the write itself. */
    const char *out = tmp_path("oom_out.gguf");
    int done = 0;
    for (int64_t k = 0; k < 1000 && !done; k++) {
        struct gguf_writer *w = NULL;
        mem_fail_after(k);
        int rc = gguf_writer_create(&w, &err);
        for (int64_t i = 0; i < gguf_n_kv(src) && !rc; i++) rc = gguf_writer_copy_kv(w, src, i);
        if (!rc) rc = gguf_writer_set_str(w, "x.str", "value");
        if (!rc) rc = gguf_writer_set_u32(w, "general.alignment", 64);
        for (int64_t i = 0; i < gguf_n_tensors(src) && !rc; i++) {
            const struct gguf_tensor_info *t = gguf_tensor(src, i);
            rc = gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne, t->data, t->n_bytes);
        }
        if (!rc) rc = gguf_writer_write_file(w, out, &err);
        mem_fail_after(-1);
        gguf_writer_free(w);
        EXPECT_MSG(rc == 0 || rc == ERR_NOMEM, "writer, failing alloc %lld: %d", (long long)k, rc);
        done = rc == 0;
        EXPECT_EQ_INT(mem_live_bytes(), live0);
    }
    EXPECT(done);
    mem_free(bytes);
    gguf_close(src);
}
