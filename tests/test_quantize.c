/* test_quantize.c: hearth quantize (type mixes against llama-quantize's own files, output
 * bytes against the reference quantizers, options, split and quantized inputs). */
#include "test.h"

#include "../src/base/mem.h"
#include "../src/engine/engine.h"
#include "../src/gguf/gguf.h"
#include "../src/tensor/dtype.h"
#include "../tools/imatrix.h"
#include "../tools/quant_mix.h"
#include "../tools/tools.h"

#include <stdlib.h>
#include <string.h>

/* Under the sanitizers the qwen35 forward pass is ~80x slower: the Q4_K_XL test then runs its
 * code paths on a few tokens and skips the statistical comparison. */
#if defined(__SANITIZE_ADDRESS__)
#define QZ_SAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define QZ_SAN 1
#endif
#endif
#ifndef QZ_SAN
#define QZ_SAN 0
#endif

/* ============================================================================================
 * Helpers
 * ============================================================================================ */

/* Runs a tool in-process with the given arguments; captures stdout and stderr (caller frees). */
static int run_tool(int (*fn)(int, char **, FILE *, FILE *), int argc, const char **args,
                    char **out_text, char **err_text) {
    FILE *out = tmpfile(), *err = tmpfile();
    CHECK(out && err);
    char *argv[64];
    CHECK(argc < 64);
    for (int i = 0; i < argc; i++) argv[i] = (char *)args[i];
    argv[argc] = NULL;
    int rc = fn(argc, argv, out, err);
    FILE *fs[2] = {out, err};
    char **texts[2] = {out_text, err_text};
    for (int k = 0; k < 2; k++) {
        long n = ftell(fs[k]);
        rewind(fs[k]);
        char *t = mem_alloc((size_t)n + 1);
        CHECK(t && fread(t, 1, (size_t)n, fs[k]) == (size_t)n);
        t[n] = 0;
        fclose(fs[k]);
        if (texts[k])
            *texts[k] = t;
        else
            mem_free(t);
    }
    return rc;
}

static int quantize(const char *in, const char *out, const char *type, const char *extra1,
                    const char *extra2, char **err_text) {
    const char *args[8] = {"quantize", in, out, type, "-t", "2"};
    int n = 6;
    if (extra1) args[n++] = extra1;
    if (extra2) args[n++] = extra2;
    return run_tool(tool_quantize_run, n, args, NULL, err_text);
}

static const char *tmp(const char *name) {
    static char paths[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(paths[k], sizeof(paths[k]), "%s/%s", test_tmp_dir(), name);
    return paths[k];
}

static int files_equal(const char *a, const char *b) {
    size_t na, nb;
    char *x = test_read_file(a, &na), *y = test_read_file(b, &nb);
    int eq = x && y && na == nb && !memcmp(x, y, na);
    mem_free(x);
    mem_free(y);
    return eq;
}

/* ============================================================================================
 * The rules, on model shapes llama-quantize's files do not cover
 * ============================================================================================ */

struct plan_case {
    struct mix_tensor t[1024];
    int64_t ne[1024][3];
    char names[1024][64];
    enum dtype types[1024];
    uint8_t fell[1024];
    int n;
};

static void add_t(struct plan_case *c, const char *name, int64_t ne0, int64_t ne1, int64_t ne2) {
    CHECK(c->n < 1024);
    snprintf(c->names[c->n], sizeof(c->names[0]), "%s", name);
    c->ne[c->n][0] = ne0;
    c->ne[c->n][1] = ne1;
    c->ne[c->n][2] = ne2;
    c->t[c->n] = (struct mix_tensor){c->names[c->n], ne2 > 1 ? 3 : (ne1 > 1 ? 2 : 1), c->ne[c->n],
                                     DTYPE_F32};
    c->n++;
}

static enum dtype type_of(const struct plan_case *c, const char *name) {
    for (int i = 0; i < c->n; i++)
        if (!strcmp(c->names[i], name)) return c->types[i];
    CHECK(0);
    return DTYPE_F32;
}

/* A dense llama-like model: n_layer blocks, hidden E, ff F, output separate or tied. */
static void build_dense(struct plan_case *c, int n_layer, int64_t E, int64_t F, int tied) {
    char s[64];
    c->n = 0;
    add_t(c, "token_embd.weight", E, 1000, 1);
    if (!tied) add_t(c, "output.weight", E, 1000, 1);
    add_t(c, "output_norm.weight", E, 1, 1);
    for (int il = 0; il < n_layer; il++) {
        const char *mats[] = {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up"};
        for (int k = 0; k < 6; k++) {
            snprintf(s, sizeof(s), "blk.%d.%s.weight", il, mats[k]);
            add_t(c, s, E, E, 1);
        }
        snprintf(s, sizeof(s), "blk.%d.ffn_down.weight", il);
        add_t(c, s, F, E, 1);
        snprintf(s, sizeof(s), "blk.%d.attn_norm.weight", il);
        add_t(c, s, E, 1, 1);
    }
}

static int plan(struct plan_case *c, const char *ftype, const struct mix_model *m, int has_imat) {
    struct mix_params p = {ftype_find(ftype), has_imat, 0, 0, -1, -1, NULL, 0};
    CHECK(p.ft);
    struct error err = {0};
    return quant_mix_plan(&p, m, c->t, c->n, c->types, c->fell, &err);
}

TEST(quantize_mix_rules_like_llama_quant) {
    static struct plan_case c;
    char s[64];
    /* Q4_K_M on 32 layers: use_more_bits = first/last 4 layers and (i - 4) % 3 == 2 */
    struct mix_model m32 = {"llama", 32, 0, 32, 8};
    build_dense(&c, 32, 4096, 11008, 0);
    ASSERT(plan(&c, "Q4_K_M", &m32, 0) == 0);
    for (int il = 0; il < 32; il++) {
        int more = il < 4 || il >= 28 || (il - 4) % 3 == 2;
        snprintf(s, sizeof(s), "blk.%d.attn_v.weight", il);
        EXPECT_MSG(type_of(&c, s) == (more ? DTYPE_Q6_K : DTYPE_Q4_K), "%s", s);
        snprintf(s, sizeof(s), "blk.%d.ffn_down.weight", il);
        /* 11008 = 43 x 256: K-quants fit */
        EXPECT_MSG(type_of(&c, s) == (more ? DTYPE_Q6_K : DTYPE_Q4_K), "%s", s);
        snprintf(s, sizeof(s), "blk.%d.attn_q.weight", il);
        EXPECT(type_of(&c, s) == DTYPE_Q4_K);
    }
    EXPECT(type_of(&c, "output.weight") == DTYPE_Q6_K);
    EXPECT(type_of(&c, "token_embd.weight") == DTYPE_Q4_K); /* untied: no rule */
    EXPECT(type_of(&c, "output_norm.weight") == DTYPE_F32);

    /* Q4_K_S: Q5_K for the first 4 attn_v and the ffn_down of the first eighth */
    ASSERT(plan(&c, "Q4_K_S", &m32, 0) == 0);
    EXPECT(type_of(&c, "blk.3.attn_v.weight") == DTYPE_Q5_K);
    EXPECT(type_of(&c, "blk.4.attn_v.weight") == DTYPE_Q4_K);
    EXPECT(type_of(&c, "blk.3.ffn_down.weight") == DTYPE_Q5_K);
    EXPECT(type_of(&c, "blk.4.ffn_down.weight") == DTYPE_Q4_K);
    EXPECT(type_of(&c, "output.weight") == DTYPE_Q6_K);

    /* Q5_K_M and Q6_K, Q8_0 and Q4_0 heads */
    ASSERT(plan(&c, "Q5_K_M", &m32, 0) == 0);
    EXPECT(type_of(&c, "blk.0.attn_v.weight") == DTYPE_Q6_K);
    EXPECT(type_of(&c, "blk.4.attn_v.weight") == DTYPE_Q5_K);
    ASSERT(plan(&c, "Q8_0", &m32, 0) == 0);
    EXPECT(type_of(&c, "output.weight") == DTYPE_Q8_0);
    ASSERT(plan(&c, "Q4_0", &m32, 0) == 0);
    EXPECT(type_of(&c, "output.weight") == DTYPE_Q6_K);
    EXPECT(type_of(&c, "blk.0.ffn_down.weight") == DTYPE_Q4_0);
    ASSERT(plan(&c, "Q4_0", &m32, 1) == 0); /* with an imatrix: first eighth of ffn_down Q4_1 */
    EXPECT(type_of(&c, "blk.3.ffn_down.weight") == DTYPE_Q4_1);
    EXPECT(type_of(&c, "blk.4.ffn_down.weight") == DTYPE_Q4_0);

    /* IQ4_XS: attn_v Q5_K when n_gqa >= 4; ffn_down first eighth Q5_K only without imatrix */
    ASSERT(plan(&c, "IQ4_XS", &m32, 0) == 0);
    EXPECT(type_of(&c, "blk.10.attn_v.weight") == DTYPE_Q5_K);
    EXPECT(type_of(&c, "blk.0.ffn_down.weight") == DTYPE_Q5_K);
    EXPECT(type_of(&c, "blk.10.ffn_down.weight") == DTYPE_IQ4_XS);
    ASSERT(plan(&c, "IQ4_XS", &m32, 1) == 0);
    EXPECT(type_of(&c, "blk.0.ffn_down.weight") == DTYPE_IQ4_XS);
    struct mix_model m32_mha = {"llama", 32, 0, 32, 32};
    ASSERT(plan(&c, "IQ4_XS", &m32_mha, 0) == 0);
    EXPECT(type_of(&c, "blk.10.attn_v.weight") == DTYPE_IQ4_XS);

    /* 70B (llama, 80 layers, GQA): attn_v Q4_K -> Q5_K */
    struct mix_model m80 = {"llama", 80, 0, 64, 8};
    build_dense(&c, 80, 512, 512, 0);
    ASSERT(plan(&c, "Q4_K_M", &m80, 0) == 0);
    EXPECT(type_of(&c, "blk.11.attn_v.weight") == DTYPE_Q5_K);
    EXPECT(type_of(&c, "blk.12.attn_v.weight") == DTYPE_Q6_K);

    /* Tied embeddings: token_embd takes the head's rule; row lengths that need fallbacks */
    struct mix_model m2 = {"qwen3", 2, 0, 2, 1};
    build_dense(&c, 2, 64, 172, 1);
    ASSERT(plan(&c, "Q4_K_M", &m2, 0) == 0);
    EXPECT(type_of(&c, "token_embd.weight") == DTYPE_Q8_0); /* 64 % 256: the head rule's Q8_0 */
    EXPECT(type_of(&c, "blk.0.attn_q.weight") == DTYPE_Q5_0);
    EXPECT(type_of(&c, "blk.1.attn_v.weight") == DTYPE_Q8_0);
    EXPECT(type_of(&c, "blk.1.ffn_down.weight") == DTYPE_F16); /* 172 % 32 */
    EXPECT(c.fell[0] == 0 && c.fell[2] == MIX_FELL_BACK);      /* the head rule itself picks Q8_0 */
    ASSERT(plan(&c, "IQ4_XS", &m2, 0) == 0);
    EXPECT(type_of(&c, "blk.0.attn_q.weight") == DTYPE_IQ4_NL);
    ASSERT(plan(&c, "Q8_0", &m2, 0) == 0);
    EXPECT(type_of(&c, "blk.0.ffn_down.weight") == DTYPE_F16);

    /* MoE with 8 experts: attn_v/attn_k Q8_0, attn_output Q5_K; ffn_down_exps by block index
     * from the name; hybrid (qwen35-like) models count attn_qkv and attn_v together */
    c.n = 0;
    add_t(&c, "token_embd.weight", 256, 1000, 1);
    for (int il = 0; il < 8; il++) {
        int full = il % 4 == 3;
        snprintf(s, sizeof(s), "blk.%d.%s.weight", il, full ? "attn_v" : "attn_qkv");
        add_t(&c, s, 256, 512, 1);
        snprintf(s, sizeof(s), "blk.%d.%s.weight", il, full ? "attn_k" : "ssm_out");
        add_t(&c, s, 256, 256, 1);
        snprintf(s, sizeof(s), "blk.%d.attn_output.weight", il);
        if (full) add_t(&c, s, 256, 256, 1);
        snprintf(s, sizeof(s), "blk.%d.ffn_down_exps.weight", il);
        add_t(&c, s, 256, 256, 8);
        snprintf(s, sizeof(s), "blk.%d.ffn_down_shexp.weight", il);
        add_t(&c, s, 256, 256, 1);
        snprintf(s, sizeof(s), "blk.%d.ffn_gate_inp.weight", il);
        add_t(&c, s, 256, 8, 1);
    }
    struct mix_model moe8 = {"qwen35moe", 8, 8, 16, 2};
    ASSERT(plan(&c, "Q4_K_M", &moe8, 0) == 0);
    EXPECT(type_of(&c, "blk.3.attn_v.weight") == DTYPE_Q8_0);
    EXPECT(type_of(&c, "blk.3.attn_k.weight") == DTYPE_Q8_0);
    EXPECT(type_of(&c, "blk.3.attn_output.weight") == DTYPE_Q5_K);
    EXPECT(type_of(&c, "blk.0.ffn_gate_inp.weight") == DTYPE_F32);
    EXPECT(type_of(&c, "blk.0.ssm_out.weight") == DTYPE_Q4_K);
    for (int il = 0; il < 8; il++) { /* use_more_bits(il, 8): 0, 3, 6, 7 */
        int more = il == 0 || il == 3 || il == 6 || il == 7;
        snprintf(s, sizeof(s), "blk.%d.ffn_down_exps.weight", il);
        EXPECT_MSG(type_of(&c, s) == (more ? DTYPE_Q6_K : DTYPE_Q4_K), "%s", s);
        snprintf(s, sizeof(s), "blk.%d.ffn_down_shexp.weight", il);
        EXPECT_MSG(type_of(&c, s) == (more ? DTYPE_Q6_K : DTYPE_Q4_K), "%s", s);
    }
    struct mix_model moe4 = {"qwen35moe", 8, 4, 16, 2};
    ASSERT(plan(&c, "Q4_K_M", &moe4, 0) == 0);
    for (int il = 0; il < 8; il++) { /* V-like index il of 8: the same pattern */
        int more = il == 0 || il == 3 || il == 6 || il == 7;
        snprintf(s, sizeof(s), "blk.%d.%s.weight", il, il % 4 == 3 ? "attn_v" : "attn_qkv");
        EXPECT_MSG(type_of(&c, s) == (more ? DTYPE_Q6_K : DTYPE_Q4_K), "%s", s);
    }
    EXPECT(type_of(&c, "blk.3.attn_output.weight") == DTYPE_Q4_K);
    /* a block index outside the model in an expert tensor is an error, as in llama.cpp */
    struct mix_model moe_short = {"qwen35moe", 4, 4, 16, 2};
    EXPECT(plan(&c, "Q4_K_M", &moe_short, 0) == ERR_INVALID);

    /* overrides: first matching pattern wins, before the rules; --pure; output/embd types */
    build_dense(&c, 4, 256, 256, 0);
    struct mix_override ov[2] = {{"ATTN_[qk]", DTYPE_Q8_0}, {"attn", DTYPE_Q5_K}};
    struct mix_params p = {ftype_find("Q4_K_M"), 0, 0, 0, DTYPE_Q8_0, DTYPE_Q6_K, ov, 2};
    struct mix_model m4 = {"llama", 4, 0, 4, 4};
    struct error err = {0};
    ASSERT(quant_mix_plan(&p, &m4, c.t, c.n, c.types, NULL, &err) == 0);
    EXPECT(type_of(&c, "blk.0.attn_q.weight") == DTYPE_Q8_0);
    EXPECT(type_of(&c, "blk.0.attn_k.weight") == DTYPE_Q8_0);
    EXPECT(type_of(&c, "blk.0.attn_v.weight") == DTYPE_Q5_K);
    EXPECT(type_of(&c, "output.weight") == DTYPE_Q8_0);
    EXPECT(type_of(&c, "token_embd.weight") == DTYPE_Q6_K);
    EXPECT(type_of(&c, "blk.3.ffn_down.weight") == DTYPE_Q6_K);
    EXPECT(type_of(&c, "blk.1.ffn_down.weight") == DTYPE_Q4_K);
    p.override = NULL;
    p.n_override = 0;
    p.pure = 1;
    p.output_type = p.token_embd_type = -1;
    ASSERT(quant_mix_plan(&p, &m4, c.t, c.n, c.types, NULL, &err) == 0);
    EXPECT(type_of(&c, "blk.0.ffn_down.weight") == DTYPE_Q4_K);
    EXPECT(type_of(&c, "blk.0.attn_v.weight") == DTYPE_Q4_K);
    EXPECT(type_of(&c, "output.weight") == DTYPE_Q4_K);
    struct mix_override bad[1] = {{"attn_(q", DTYPE_Q8_0}};
    p.override = bad;
    p.n_override = 1;
    EXPECT(quant_mix_plan(&p, &m4, c.t, c.n, c.types, NULL, &err) == ERR_INVALID);

    /* llama.cpp's tensor order: outside blocks first, then by block index, then by name */
    EXPECT(quant_mix_name_cmp("output.weight", "blk.0.attn_q.weight") < 0);
    EXPECT(quant_mix_name_cmp("blk.2.ffn_up.weight", "blk.10.attn_q.weight") < 0);
    EXPECT(quant_mix_name_cmp("blk.2.attn_v.weight", "blk.2.attn_q.weight") > 0);
}

/* ============================================================================================
 * Against llama-quantize's files in ../shared/models/synthetic
 * ============================================================================================ */

/* Relative rmse of file q's tensor against the F32 original, summed over one type's tensors. */
struct err_sum {
    double err, ref;
};

static void add_error(const struct gguf *q, const struct gguf *f, enum dtype type,
                      struct err_sum *s) {
    for (int64_t i = 0; i < gguf_n_tensors(q); i++) {
        const struct gguf_tensor_info *t = gguf_tensor(q, i);
        if (t->type != type) continue;
        const struct gguf_tensor_info *x = gguf_find_tensor(f, t->name);
        CHECK(x && x->type == DTYPE_F32);
        int64_t n = t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
        float *y = mem_alloc((size_t)n * sizeof(float));
        CHECK(y);
        dtype_traits(type)->to_float(t->data, y, n);
        const float *xf = x->data;
        for (int64_t k = 0; k < n; k++) {
            s->err += ((double)y[k] - xf[k]) * ((double)y[k] - xf[k]);
            s->ref += (double)xf[k] * xf[k];
        }
        mem_free(y);
    }
}

TEST(quantize_matches_llama_quantize_files) {
    static const char *const models[] = {"qwen3", "qwen35moe"};
    static const char *const types[] = {"Q4_K_M", "Q6_K", "Q8_0"};
    static const char *const lower[] = {"q4_k_m", "q6_k", "q8_0"};
    if (!test_model_path("synthetic/qwen3-f32.gguf"))
        SKIP_TEST("../shared/models/synthetic not found");
    for (int mi = 0; mi < 2; mi++) {
        char rel[128];
        snprintf(rel, sizeof(rel), "synthetic/%s-f32.gguf", models[mi]);
        char f32_path[512];
        snprintf(f32_path, sizeof(f32_path), "%s", test_model_path(rel));
        for (int ti = 0; ti < 3; ti++) {
            snprintf(rel, sizeof(rel), "synthetic/%s-%s.gguf", models[mi], lower[ti]);
            const char *theirs = test_model_path(rel);
            ASSERT(theirs);
            char their_path[512];
            snprintf(their_path, sizeof(their_path), "%s", theirs);
            const char *ours = tmp("ours.gguf");
            char *log = NULL;
            int rc = quantize(f32_path, ours, types[ti], NULL, NULL, &log);
            EXPECT_MSG(rc == 0, "%s %s: %s", models[mi], types[ti], log);
            mem_free(log);
            if (rc) continue;
            struct error err = {0};
            struct gguf *a = NULL, *b = NULL, *f = NULL;
            ASSERT(gguf_open(&a, ours, &err) == 0);
            ASSERT(gguf_open(&b, their_path, &err) == 0);
            ASSERT(gguf_open(&f, f32_path, &err) == 0);
            /* the same tensors in the same order, types, shapes and offsets */
            EXPECT_EQ_INT(gguf_n_tensors(a), gguf_n_tensors(b));
            for (int64_t i = 0; i < gguf_n_tensors(a) && i < gguf_n_tensors(b); i++) {
                const struct gguf_tensor_info *x = gguf_tensor(a, i), *y = gguf_tensor(b, i);
                EXPECT_MSG(!strcmp(x->name, y->name) && x->type == y->type &&
                               !memcmp(x->ne, y->ne, sizeof(x->ne)) && x->offset == y->offset,
                           "%s %s: tensor %lld: ours %s %s, llama-quantize's %s %s", models[mi],
                           types[ti], (long long)i, x->name, dtype_name(x->type), y->name,
                           dtype_name(y->type));
            }
            /* the same metadata keys in the same order (values: general.file_type) */
            EXPECT_EQ_INT(gguf_n_kv(a), gguf_n_kv(b));
            for (int64_t i = 0; i < gguf_n_kv(a) && i < gguf_n_kv(b); i++) {
                struct gguf_str ka = gguf_kv_key(a, i), kb = gguf_kv_key(b, i);
                EXPECT_MSG(ka.len == kb.len && !memcmp(ka.data, kb.data, ka.len),
                           "key %lld: %.*s vs %.*s", (long long)i, (int)ka.len, ka.data,
                           (int)kb.len, kb.data);
            }
            int64_t fa = -1, fb = -2;
            EXPECT(gguf_get_int(a, "general.file_type", &fa) == 0 &&
                   gguf_get_int(b, "general.file_type", &fb) == 0 && fa == fb);
            /* Q8_0 is the reference rounding: the whole file is byte for byte llama's */
            if (ti == 2)
                EXPECT_MSG(files_equal(ours, their_path), "%s Q8_0 differs from llama-quantize's",
                           models[mi]);
            /* similar error: per type, our relative rmse within 2% of llama-quantize's (below
             * it in practice: our scale search is exhaustive) */
            const enum dtype kinds[] = {DTYPE_Q4_K, DTYPE_Q6_K, DTYPE_Q8_0};
            for (int k = 0; k < 3; k++) {
                struct err_sum ea = {0, 0}, eb = {0, 0};
                add_error(a, f, kinds[k], &ea);
                add_error(b, f, kinds[k], &eb);
                if (eb.ref == 0) continue;
                double ra = sqrt(ea.err / ea.ref), rb = sqrt(eb.err / eb.ref);
                if (getenv("HEARTH_TEST_VERBOSE"))
                    printf("    %-9s %-6s %-5s rel. rmse ours %.5f, llama-quantize %.5f\n",
                           models[mi], types[ti], dtype_name(kinds[k]), ra, rb);
                EXPECT_MSG(ra <= 1.02 * rb, "%s %s %s: rmse %.5f vs llama-quantize's %.5f",
                           models[mi], types[ti], dtype_name(kinds[k]), ra, rb);
            }
            gguf_close(a);
            gguf_close(b);
            gguf_close(f);
            remove(ours);
        }
    }
}

/* ============================================================================================
 * Output bytes, threads, loading
 * ============================================================================================ */

/* Every tensor of the output dequantizes (through the reader) to exactly what the reference
 * quantizer gives for the same source rows; the file is the same for 1 and 2 threads. */
TEST(quantize_output_is_quantize_row_of_source) {
    const char *src_rel = "synthetic/qwen35moe-f32.gguf";
    if (!test_model_path(src_rel)) SKIP_TEST("../shared/models/synthetic not found");
    char src[512];
    snprintf(src, sizeof(src), "%s", test_model_path(src_rel));
    static const char *const types[] = {"Q4_K_M", "Q4_0"};
    for (int ti = 0; ti < 2; ti++) {
        const char *out = tmp("rows.gguf");
        ASSERT(quantize(src, out, types[ti], NULL, NULL, NULL) == 0);
        struct error err = {0};
        struct gguf *q = NULL, *f = NULL;
        ASSERT(gguf_open(&q, out, &err) == 0);
        ASSERT(gguf_open(&f, src, &err) == 0);
        int n_quant = 0;
        for (int64_t i = 0; i < gguf_n_tensors(q); i++) {
            const struct gguf_tensor_info *t = gguf_tensor(q, i);
            const struct gguf_tensor_info *x = gguf_find_tensor(f, t->name);
            ASSERT(x);
            const struct dtype_traits *tr = dtype_traits(t->type);
            ASSERT(tr);
            int64_t n = t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
            size_t nb = dtype_row_bytes(t->type, t->ne[0]) * (size_t)(n / t->ne[0]);
            EXPECT_EQ_INT(nb, t->n_bytes);
            void *mine = mem_alloc(nb);
            float *a = mem_alloc((size_t)n * sizeof(float)), *b = mem_alloc((size_t)n * 4);
            ASSERT(mine && a && b);
            tr->from_float(x->data, mine, n); /* rows are whole blocks: one call = row by row */
            tr->to_float(mine, a, n);
            tr->to_float(t->data, b, n);
            EXPECT_MSG(!memcmp(a, b, (size_t)n * sizeof(float)), "%s %s (%s) differs", types[ti],
                       t->name, tr->name);
            n_quant += tr->is_quantized;
            mem_free(mine);
            mem_free(a);
            mem_free(b);
        }
        EXPECT(n_quant >= 20);
        gguf_close(q);
        gguf_close(f);
        if (ti == 0) { /* thread count does not change a byte */
            const char *args[] = {"quantize", src, tmp("rows-t1.gguf"), "Q4_K_M", "-t", "1"};
            ASSERT(run_tool(tool_quantize_run, 6, args, NULL, NULL) == 0);
            EXPECT(files_equal(out, args[2]));
            remove(args[2]);
        }
        remove(out);
    }
}

/* stories260K: rows of 64 and 172 elements, so every K-quant falls back like llama.cpp's
 * (Q4_K -> Q5_0, Q6_K -> Q8_0, 172 columns -> F16); the result loads and generates. */
TEST(quantize_stories_fallbacks_load) {
    const char *m = test_model_path("stories/stories260K.gguf");
    if (!m) SKIP_TEST("../shared/models/stories not found");
    char src[512];
    snprintf(src, sizeof(src), "%s", m);
    const char *out = tmp("stories-q4km.gguf");
    char *log = NULL;
    ASSERT(quantize(src, out, "Q4_K_M", NULL, NULL, &log) == 0);
    EXPECT_MSG(strstr(log, "36 of 48 tensors") != NULL, "%s", log);
    mem_free(log);
    struct error err = {0};
    struct gguf *g = NULL;
    ASSERT(gguf_open(&g, out, &err) == 0);
    struct {
        const char *name;
        enum dtype type;
    } want[] = {
        {"token_embd.weight", DTYPE_Q5_0},    {"output.weight", DTYPE_Q8_0},
        {"blk.0.attn_v.weight", DTYPE_Q5_0},  {"blk.2.attn_v.weight", DTYPE_Q8_0},
        {"blk.4.attn_v.weight", DTYPE_Q8_0},  {"blk.1.attn_q.weight", DTYPE_Q5_0},
        {"blk.3.ffn_down.weight", DTYPE_F16}, {"blk.3.ffn_up.weight", DTYPE_Q5_0},
        {"blk.3.ffn_norm.weight", DTYPE_F32},
    };
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        const struct gguf_tensor_info *t = gguf_find_tensor(g, want[i].name);
        EXPECT_MSG(t && t->type == want[i].type, "%s: %s", want[i].name,
                   t ? dtype_name(t->type) : "missing");
    }
    gguf_close(g);
    struct engine *e = NULL;
    ASSERT_MSG(engine_open(&e, out, NULL, &err) == 0, "%s", err.msg);
    struct session *s = NULL;
    ASSERT(session_create(&s, e, NULL, &err) == 0);
    int32_t ids[1] = {1};
    ASSERT(session_eval(s, ids, 1, NULL, &err) == 0);
    const float *l = session_logits(s);
    int best = 0;
    for (int j = 1; j < 512; j++)
        if (l[j] > l[best]) best = j;
    EXPECT_EQ_INT(best, 403); /* "Once", as the F32 model */
    session_free(s);
    engine_close(e);
    remove(out);
}

/* ============================================================================================
 * Inputs: split files, quantized files; options; errors
 * ============================================================================================ */

static int write_two_shards(const char *src, const char *prefix) {
    struct error err = {0};
    struct gguf *g = NULL;
    if (gguf_open(&g, src, &err)) return -1;
    int64_t n = gguf_n_tensors(g), half = n / 2;
    int rc = 0;
    for (int k = 0; k < 2 && !rc; k++) {
        struct gguf_writer *w = NULL;
        rc = gguf_writer_create(&w, &err);
        if (rc) break;
        if (k == 0)
            for (int64_t i = 0; i < gguf_n_kv(g) && !rc; i++) rc = gguf_writer_copy_kv(w, g, i);
        if (!rc) rc = gguf_writer_set_u16(w, "split.no", (uint16_t)k);
        if (!rc) rc = gguf_writer_set_u16(w, "split.count", 2);
        if (!rc) rc = gguf_writer_set_i32(w, "split.tensors.count", (int32_t)n);
        for (int64_t i = k ? half : 0; i < (k ? n : half) && !rc; i++) {
            const struct gguf_tensor_info *t = gguf_tensor(g, i);
            rc = gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne, t->data, t->n_bytes);
        }
        char path[600];
        snprintf(path, sizeof(path), "%s-%05d-of-00002.gguf", prefix, k + 1);
        if (!rc) rc = gguf_writer_write_file(w, path, &err);
        gguf_writer_free(w);
    }
    gguf_close(g);
    return rc;
}

TEST(quantize_split_and_quantized_inputs) {
    const char *m = test_model_path("synthetic/qwen3-f32.gguf");
    if (!m) SKIP_TEST("../shared/models/synthetic not found");
    char src[512], prefix[512], first[600];
    snprintf(src, sizeof(src), "%s", m);
    snprintf(prefix, sizeof(prefix), "%s/split", test_tmp_dir());
    ASSERT(write_two_shards(src, prefix) == 0);
    snprintf(first, sizeof(first), "%s-00001-of-00002.gguf", prefix);
    /* a split input gives the same file as the single one (split keys dropped) */
    const char *a = tmp("from-split.gguf"), *b = tmp("from-single.gguf");
    ASSERT(quantize(first, a, "Q4_K_M", NULL, NULL, NULL) == 0);
    ASSERT(quantize(src, b, "Q4_K_M", NULL, NULL, NULL) == 0);
    EXPECT(files_equal(a, b));
    struct error err = {0};
    struct gguf *g = NULL;
    ASSERT(gguf_open(&g, a, &err) == 0);
    EXPECT(gguf_find_key(g, "split.count") < 0 && gguf_find_key(g, "split.no") < 0);
    gguf_close(g);
    /* a quantized input is dequantized and requantized, with a warning; the same type is
     * copied as it is */
    char *log = NULL;
    const char *c = tmp("requant.gguf");
    ASSERT(quantize(b, c, "Q8_0", NULL, NULL, &log) == 0);
    EXPECT_MSG(strstr(log, "warning: requantizing from Q6_K") != NULL, "%s", log);
    mem_free(log);
    ASSERT(quantize(b, tmp("requant2.gguf"), "Q4_K_M", "--allow-requantize", NULL, &log) == 0);
    EXPECT_MSG(!strstr(log, "requantizing"), "%s", log);
    mem_free(log);
    EXPECT(files_equal(b, tmp("requant2.gguf"))); /* every tensor kept its type: a copy */
    struct engine *e = NULL;
    ASSERT_MSG(engine_open(&e, c, NULL, &err) == 0, "%s", err.msg);
    engine_close(e);
    remove(a);
    remove(b);
    remove(c);
    remove(tmp("requant2.gguf"));
    remove(first);
    snprintf(first, sizeof(first), "%s-00002-of-00002.gguf", prefix);
    remove(first);
}

TEST(quantize_options_and_errors) {
    const char *m = test_model_path("stories/stories260K.gguf");
    if (!m) SKIP_TEST("../shared/models/stories not found");
    char src[512];
    snprintf(src, sizeof(src), "%s", m);
    const char *out = tmp("opts.gguf");
    const char *args[] = {"quantize",
                          src,
                          out,
                          "Q4_K_M",
                          "--tensor-type",
                          "ffn_(gate|up)=q8_0",
                          "--tensor-type",
                          "attn=Q4_1",
                          "--output-tensor-type",
                          "F16",
                          "--token-embedding-type",
                          "q8_0"};
    char *text = NULL;
    ASSERT_MSG(run_tool(tool_quantize_run, 12, args, NULL, &text) == 0, "%s", text);
    mem_free(text);
    struct error err = {0};
    struct gguf *g = NULL;
    ASSERT(gguf_open(&g, out, &err) == 0);
    const struct gguf_tensor_info *t;
    EXPECT((t = gguf_find_tensor(g, "blk.0.ffn_gate.weight")) && t->type == DTYPE_Q8_0);
    EXPECT((t = gguf_find_tensor(g, "blk.0.ffn_up.weight")) && t->type == DTYPE_Q8_0);
    EXPECT((t = gguf_find_tensor(g, "blk.0.attn_v.weight")) && t->type == DTYPE_Q4_1);
    EXPECT((t = gguf_find_tensor(g, "output.weight")) && t->type == DTYPE_F16);
    EXPECT((t = gguf_find_tensor(g, "token_embd.weight")) && t->type == DTYPE_Q8_0);
    EXPECT((t = gguf_find_tensor(g, "blk.0.ffn_down.weight")) && t->type == DTYPE_F16);
    gguf_close(g);
    /* --leave-output-tensor, --pure, --dry-run */
    const char *args2[] = {"quantize", src, out, "q8_0", "--leave-output-tensor", "--dry-run"};
    char *plan = NULL;
    ASSERT(run_tool(tool_quantize_run, 6, args2, &plan, NULL) == 0);
    EXPECT_MSG(strstr(plan, "output.weight                            F32    -> F32") != NULL, "%s",
               plan);
    EXPECT(strstr(plan, "blk.0.attn_q.weight                      F32    -> Q8_0") != NULL);
    mem_free(plan);
    /* errors: one line, exit 1, nothing written */
    remove(out);
    const char *bad[][5] = {
        {"quantize", src, out, "Q9_K", NULL},
        {"quantize", src, src, "Q8_0", NULL},
        {"quantize", "/nonexistent.gguf", out, "Q8_0", NULL},
        {"quantize", src, out, NULL, NULL},
        {"quantize", src, out, "Q8_0", "--tensor-type"},
        {"quantize", src, out, "Q8_0", "--bogus"},
        {"quantize", src, out, "Q4_K_M", "--imatrix"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int argc = 0;
        while (argc < 5 && bad[i][argc]) argc++;
        char *e = NULL;
        int rc = run_tool(tool_quantize_run, argc, bad[i], NULL, &e);
        size_t nl = 0;
        for (char *p = e; *p; p++) nl += *p == '\n';
        EXPECT_MSG(rc == 1 && nl == 1, "case %zu: rc %d, '%s'", i, rc, e);
        mem_free(e);
    }
    const char *bad_re[] = {"quantize", src, out, "Q8_0", "--tensor-type", "attn_(q=q8_0"};
    char *e = NULL;
    EXPECT(run_tool(tool_quantize_run, 6, bad_re, NULL, &e) == 1 && strstr(e, "regular") != NULL);
    mem_free(e);
    FILE *f = fopen(out, "rb");
    EXPECT(f == NULL);
    if (f) fclose(f);
}

/* ============================================================================================
 * Perplexity and KL divergence (hearth perplexity)
 * ============================================================================================ */

/* The number after `key` in text, or NAN. */
static double number_after(const char *text, const char *key) {
    const char *p = text ? strstr(text, key) : NULL;
    return p ? strtod(p + strlen(key), NULL) : NAN;
}

static const char *stories_text(void) {
    static char path[512];
    snprintf(path, sizeof(path), "tests/data/stories.txt");
    return path;
}

/* stories260K on children's stories (tests/data/stories.txt, written for this test): F32 and
 * Q8_0 perplexities within 0.5%; the KL statistics against the F32 base agree with both runs. */
TEST(ppl_stories_q8_0_matches_f32) {
    const char *m = test_model_path("stories/stories260K.gguf");
    if (!m) SKIP_TEST("../shared/models/stories not found");
    char f32[512], q8[512], base[512];
    snprintf(f32, sizeof(f32), "%s", m);
    snprintf(q8, sizeof(q8), "%s", tmp("stories-q8_0.gguf"));
    snprintf(base, sizeof(base), "%s", tmp("stories.kld"));
    ASSERT(quantize(f32, q8, "Q8_0", NULL, NULL, NULL) == 0);
    const char *a1[] = {"perplexity", "-m", f32,  "-f", stories_text(),         "-c", "128",
                        "--chunks",   "8",  "-t", "2",  "--kl-divergence-base", base};
    char *out = NULL, *err = NULL;
    ASSERT_MSG(run_tool(tool_perplexity_run, 13, a1, &out, &err) == 0, "%s", err);
    double ppl_f32 = number_after(out, "Final estimate: PPL = ");
    double unc_f32 = number_after(out, " +/- ");
    EXPECT_MSG(strstr(out, "[8]") && !strstr(out, "[9]"), "%s", out);
    mem_free(out);
    mem_free(err);
    const char *a2[] = {"perplexity", "-m", q8,   "-f", stories_text(), "-c", "128",
                        "--chunks",   "8",  "-t", "2"};
    ASSERT(run_tool(tool_perplexity_run, 11, a2, &out, NULL) == 0);
    double ppl_q8 = number_after(out, "Final estimate: PPL = ");
    mem_free(out);
    if (getenv("HEARTH_TEST_VERBOSE"))
        printf("    stories260K ppl F32 %.4f +/- %.4f, Q8_0 %.4f\n", ppl_f32, unc_f32, ppl_q8);
    EXPECT_MSG(ppl_f32 > 2 && ppl_f32 < 10 && unc_f32 > 0, "F32 ppl %f +/- %f", ppl_f32, unc_f32);
    EXPECT_MSG(fabs(ppl_q8 / ppl_f32 - 1) < 0.005, "Q8_0 ppl %.4f vs F32 %.4f", ppl_q8, ppl_f32);

    /* the base file is llama-perplexity's layout */
    size_t n = 0;
    char *bytes = test_read_file(base, &n);
    ASSERT(bytes);
    int32_t hdr[3];
    memcpy(hdr, bytes + 8, sizeof(hdr));
    EXPECT(!memcmp(bytes, "_logits_", 8) && hdr[0] == 128 && hdr[1] == 512 && hdr[2] == 8);
    size_t rows = (size_t)8 * (128 - 1 - 64), nv = 2 * ((512 + 1) / 2) + 4;
    EXPECT_EQ_INT(n, 20 + 4 * 8 * 128 + rows * nv * 2);
    int32_t tok0;
    memcpy(&tok0, bytes + 20, 4);
    EXPECT_EQ_INT(tok0, 1); /* the text's tokens, BOS first */
    mem_free(bytes);

    const char *a3[] = {"perplexity",           "-m", q8,   "--kl-divergence",
                        "--kl-divergence-base", base, "-t", "2"};
    ASSERT(run_tool(tool_perplexity_run, 8, a3, &out, &err) == 0);
    double kld = number_after(out, "Mean    KLD: ");
    double top = number_after(out, "Same top p: ");
    double pq = number_after(out, "Mean PPL(Q)                   : ");
    double pb = number_after(out, "Mean PPL(base)                : ");
    double ratio = number_after(out, "Mean PPL(Q)/PPL(base)         : ");
    if (getenv("HEARTH_TEST_VERBOSE")) printf("%s", out);
    EXPECT_MSG(kld >= 0 && kld < 0.005, "KLD %f", kld);
    EXPECT_MSG(top > 95 && top <= 100, "same top %f", top);
    EXPECT_NEAR(pq, ppl_q8, 1e-3 * ppl_q8);
    EXPECT_NEAR(pb, ppl_f32, 1e-3 * ppl_f32); /* the base log-probs are stored in 16 bits */
    EXPECT_NEAR(ratio, ppl_q8 / ppl_f32, 2e-3);
    EXPECT(strstr(out, "99.0%   KLD:") && strstr(out, "RMS Δp"));
    mem_free(out);
    mem_free(err);
    remove(q8);
    remove(base);
}

TEST(ppl_errors) {
    const char *m = test_model_path("stories/stories260K.gguf");
    if (!m) SKIP_TEST("../shared/models/stories not found");
    char f32[512];
    snprintf(f32, sizeof(f32), "%s", m);
    const char *cases[][8] = {
        {"perplexity", "-m", f32, "-f", stories_text(), "-c", "4096", NULL}, /* too short */
        {"perplexity", "-m", f32, NULL},                                     /* no text */
        {"perplexity", "-m", f32, "-f", "/nonexistent.txt", NULL},
        {"perplexity", "-m", f32, "--kl-divergence", "--kl-divergence-base", "/nonexistent", NULL},
        {"perplexity", "-m", f32, "--kl-divergence", "--kl-divergence-base", stories_text(),
         NULL}, /* not a base file */
        {"perplexity", "-m", f32, "-f", stories_text(), "-c", "x", NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int argc = 0;
        while (argc < 8 && cases[i][argc]) argc++;
        char *e = NULL;
        int rc = run_tool(tool_perplexity_run, argc, cases[i], NULL, &e);
        size_t nl = 0;
        for (char *p = e; *p; p++) nl += *p == '\n';
        EXPECT_MSG(rc == 1 && nl == 1, "case %zu: rc %d, '%s'", i, rc, e);
        mem_free(e);
    }
}

/* ============================================================================================
 * Importance matrices (hearth imatrix, quantize --imatrix)
 * ============================================================================================ */

static int imatrix_cmd(const char *model, const char *out, const char *ctx, const char *chunks,
                       const char *extra) {
    const char *args[] = {"imatrix", "-m", model,      "-f",   stories_text(), "-o", out,
                          "-c",      ctx,  "--chunks", chunks, "-t",           "2",  extra};
    char *e = NULL;
    int rc = run_tool(tool_imatrix_run, extra ? 14 : 13, args, NULL, &e);
    if (rc) test_fail(__FILE__, __LINE__, "imatrix: %s", e);
    mem_free(e);
    return rc;
}

static int same_sums(const struct imatrix_entry *a, const struct imatrix_entry *b) {
    if (!a || !b || a->n_values != b->n_values || a->counts[0] != b->counts[0]) return 0;
    for (int64_t j = 0; j < a->n_values; j++)
        if (a->sums[j] != b->sums[j]) return 0;
    return 1;
}

TEST(imatrix_collects_llama_format) {
    const char *m = test_model_path("stories/stories260K.gguf");
    if (!m) SKIP_TEST("../shared/models/stories not found");
    char model[512], path[512];
    snprintf(model, sizeof(model), "%s", m);
    snprintf(path, sizeof(path), "%s", tmp("stories.imatrix.gguf"));
    ASSERT(imatrix_cmd(model, path, "128", "4", "--process-output") == 0);
    /* the file: llama-imatrix's keys and tensor pairs */
    struct error err = {0};
    struct gguf *g = NULL;
    ASSERT(gguf_open(&g, path, &err) == 0);
    struct gguf_str v;
    EXPECT(gguf_get_str(g, "general.type", &v) == 0 && v.len == 7 && !memcmp(v.data, "imatrix", 7));
    uint32_t u = 0;
    EXPECT(gguf_get_uint32(g, "imatrix.chunk_count", &u) == 0 && u == 4);
    EXPECT(gguf_get_uint32(g, "imatrix.chunk_size", &u) == 0 && u == 128);
    EXPECT_EQ_INT(gguf_n_tensors(g), 2 * 36); /* 5 blocks x 7 matrices + the head */
    const struct gguf_tensor_info *t = gguf_find_tensor(g, "blk.0.ffn_down.weight.in_sum2");
    EXPECT(t && t->type == DTYPE_F32 && t->ne[0] == 172 && t->ne[1] == 1);
    t = gguf_find_tensor(g, "blk.0.ffn_down.weight.counts");
    EXPECT(t && t->ne[0] == 1 && t->ne[1] == 1 && ((const float *)t->data)[0] == 512.0f);
    EXPECT(!strcmp(gguf_tensor(g, 0)->name, "blk.0.attn_k.weight.in_sum2")); /* sorted */
    gguf_close(g);

    struct imatrix *im = NULL;
    ASSERT(imatrix_load(&im, path, &err) == 0);
    EXPECT_EQ_INT(im->n_entries, 36);
    EXPECT(im->n_datasets == 1 && strstr(im->datasets[0], "stories.txt"));
    EXPECT(im->chunk_count == 4 && im->chunk_size == 128 && !im->is_legacy);
    /* q, k and v multiply the same rows; so do gate and up */
    const struct imatrix_entry *q = imatrix_find(im, "blk.2.attn_q.weight");
    EXPECT(same_sums(q, imatrix_find(im, "blk.2.attn_k.weight")));
    EXPECT(same_sums(q, imatrix_find(im, "blk.2.attn_v.weight")));
    EXPECT(same_sums(imatrix_find(im, "blk.2.ffn_gate.weight"),
                     imatrix_find(im, "blk.2.ffn_up.weight")));
    EXPECT(!same_sums(q, imatrix_find(im, "blk.2.ffn_up.weight")));
    const struct imatrix_entry *o = imatrix_find(im, "output.weight");
    EXPECT(o && o->counts[0] == 4 * 128); /* --process-output: every row of every chunk */
    float *w = q ? imatrix_means(q, &err) : NULL;
    ASSERT(w);
    for (int j = 0; j < 64; j++) EXPECT(w[j] > 0 && w[j] < 1e4f);
    mem_free(w);
    /* save and load again: the same numbers (sums are stored as F32) */
    ASSERT(imatrix_save(im, tmp("again.imatrix.gguf"), &err) == 0);
    struct imatrix *im2 = NULL;
    ASSERT(imatrix_load(&im2, tmp("again.imatrix.gguf"), &err) == 0);
    EXPECT(im2->n_entries == im->n_entries && same_sums(imatrix_find(im2, "blk.2.attn_q.weight"),
                                                        imatrix_find(im, "blk.2.attn_q.weight")));
    imatrix_free(im2);
    imatrix_free(im);
    remove(tmp("again.imatrix.gguf"));
    remove(path);
}

/* llama.cpp's legacy .dat: values are mean x^2 times ncall. */
TEST(imatrix_legacy_dat_and_experts) {
    const char *path = tmp("legacy.dat");
    FILE *f = fopen(path, "wb");
    ASSERT(f);
    int32_t n = 2, len, ncall = 10, nval = 4;
    fwrite(&n, 4, 1, f);
    const char *names[2] = {"blk.0.attn_q.weight", "blk.0.ffn_down_exps.weight"};
    for (int e = 0; e < 2; e++) {
        len = (int32_t)strlen(names[e]);
        fwrite(&len, 4, 1, f);
        fwrite(names[e], 1, (size_t)len, f);
        fwrite(&ncall, 4, 1, f);
        fwrite(&nval, 4, 1, f);
        float vals[4] = {10, 20, 30, 40 * (float)(e + 1)};
        fwrite(vals, 4, 4, f);
    }
    int32_t chunks = 7, dlen = 5;
    fwrite(&chunks, 4, 1, f);
    fwrite(&dlen, 4, 1, f);
    fwrite("wiki1", 1, 5, f);
    fclose(f);
    struct error err = {0};
    struct imatrix *im = NULL;
    ASSERT_MSG(imatrix_load(&im, path, &err) == 0, "%s", err.msg);
    EXPECT(im->is_legacy && im->chunk_count == 7 && im->n_datasets == 1 &&
           !strcmp(im->datasets[0], "wiki1"));
    const struct imatrix_entry *e = imatrix_find(im, "blk.0.ffn_down_exps.weight");
    ASSERT(e);
    float *w = imatrix_means(e, &err);
    ASSERT(w);
    EXPECT(w[0] == 1.0f && w[3] == 8.0f);
    mem_free(w);
    imatrix_free(im);
    /* truncated or garbage files are refused with a message */
    size_t nb = 0;
    char *bytes = test_read_file(path, &nb);
    ASSERT(bytes);
    for (size_t cut = 1; cut < 60; cut += 7) {
        f = fopen(path, "wb");
        fwrite(bytes, 1, cut, f);
        fclose(f);
        im = NULL;
        EXPECT_MSG(imatrix_load(&im, path, &err) == ERR_FORMAT, "cut %zu", cut);
        imatrix_free(im);
    }
    mem_free(bytes);
    remove(path);

    /* an MoE model: one row per expert, counts per routed (token, slot) */
    const char *moe = test_model_path("synthetic/qwen3moe-f32.gguf");
    if (!moe) SKIP_TEST("../shared/models/synthetic not found");
    char model[512], out[512];
    snprintf(model, sizeof(model), "%s", moe);
    snprintf(out, sizeof(out), "%s", tmp("moe.imatrix.gguf"));
    ASSERT(imatrix_cmd(model, out, "64", "2", "--no-ppl") == 0);
    ASSERT(imatrix_load(&im, out, &err) == 0);
    const struct imatrix_entry *up = imatrix_find(im, "blk.1.ffn_up_exps.weight");
    const struct imatrix_entry *down = imatrix_find(im, "blk.1.ffn_down_exps.weight");
    ASSERT(up && down);
    EXPECT(up->n_mat == 8 && up->n_values == 8 * 256 && down->n_values == 8 * 128);
    int64_t total = 0;
    for (int x = 0; x < 8; x++) {
        EXPECT(up->counts[x] == down->counts[x]);
        total += up->counts[x];
    }
    EXPECT_EQ_INT(total, 2 * 64 * 2); /* tokens x experts used */
    EXPECT(imatrix_find(im, "blk.0.ffn_gate_inp.weight")->counts[0] == 128);
    imatrix_free(im);
    /* and quantize takes it (per-expert slices) */
    char *log = NULL;
    EXPECT(quantize(model, tmp("moe-im.gguf"), "Q4_K_M", "--imatrix", out, &log) == 0);
    mem_free(log);
    struct gguf *g = NULL;
    ASSERT(gguf_open(&g, tmp("moe-im.gguf"), &err) == 0);
    int64_t v = 0;
    EXPECT(gguf_get_int(g, "quantize.imatrix.entries_count", &v) == 0 && v == 16);
    EXPECT(gguf_get_int(g, "quantize.imatrix.chunks_count", &v) == 0 && v == 2);
    EXPECT(gguf_find_key(g, "quantize.imatrix.file") >= 0 &&
           gguf_find_key(g, "quantize.imatrix.dataset") >= 0);
    gguf_close(g);
    remove(tmp("moe-im.gguf"));
    remove(out);
}

/* sum over the file's quantized matrices of sum_j imat_j (W - W')_j^2 / sum_j imat_j W_j^2: the
 * relative output error on the calibration activations (diagonal approximation). */
static double imatrix_weighted_error(const char *qpath, const char *fpath,
                                     const struct imatrix *im) {
    struct error err = {0};
    struct gguf *q = NULL, *f = NULL;
    CHECK(gguf_open(&q, qpath, &err) == 0 && gguf_open(&f, fpath, &err) == 0);
    double e = 0, s = 0;
    for (int64_t i = 0; i < gguf_n_tensors(q); i++) {
        const struct gguf_tensor_info *t = gguf_tensor(q, i);
        const struct imatrix_entry *ie = imatrix_find(im, t->name);
        if (!ie || !dtype_traits(t->type)->is_quantized) continue;
        const struct gguf_tensor_info *x = gguf_find_tensor(f, t->name);
        float *w = imatrix_means(ie, &err);
        int64_t n = t->ne[0] * t->ne[1];
        float *y = mem_alloc((size_t)n * sizeof(float));
        CHECK(w && y && x);
        dtype_traits(t->type)->to_float(t->data, y, n);
        const float *xf = x->data;
        for (int64_t k = 0; k < n; k++) {
            double d = (double)y[k] - xf[k];
            e += w[k % t->ne[0]] * d * d;
            s += w[k % t->ne[0]] * (double)xf[k] * xf[k];
        }
        mem_free(w);
        mem_free(y);
    }
    gguf_close(q);
    gguf_close(f);
    return e / s;
}

/* Quantizing with the importance matrix lowers the error where it matters: the activation-
 * weighted weight error on the calibration text for every preset tried, and the KL divergence
 * of the model on that text (Q4_0: 0.072 -> 0.061; at 5 bits, stories260K's KLD changes stay
 * within their noise, see README). */
TEST(imatrix_lowers_quantization_error) {
    const char *m = test_model_path("stories/stories260K.gguf");
    if (!m) SKIP_TEST("../shared/models/stories not found");
    char model[512], imat[512], base[512];
    snprintf(model, sizeof(model), "%s", m);
    snprintf(imat, sizeof(imat), "%s", tmp("lower.imatrix.gguf"));
    snprintf(base, sizeof(base), "%s", tmp("lower.kld"));
    ASSERT(imatrix_cmd(model, imat, "128", QZ_SAN ? "2" : "8", "--no-ppl") == 0);
    struct error err = {0};
    struct imatrix *im = NULL;
    ASSERT(imatrix_load(&im, imat, &err) == 0);
    const char *ab[] = {"perplexity",
                        "-m",
                        model,
                        "-f",
                        stories_text(),
                        "-c",
                        "128",
                        "--chunks",
                        QZ_SAN ? "2" : "8",
                        "-t",
                        "2",
                        "--kl-divergence-base",
                        base};
    ASSERT(run_tool(tool_perplexity_run, 13, ab, NULL, NULL) == 0);
    static const char *const types[] = {"Q4_0", "Q3_K_M", "Q4_K_M", "IQ4_NL"};
    for (int ti = 0; ti < 4; ti++) {
        double werr[2], kld[2];
        for (int with = 0; with < 2; with++) {
            const char *q = tmp("lower-q.gguf");
            ASSERT(quantize(model, q, types[ti], with ? "--imatrix" : NULL, with ? imat : NULL,
                            NULL) == 0);
            werr[with] = imatrix_weighted_error(q, model, im);
            kld[with] = NAN;
            if (ti == 0) {
                const char *ak[] = {"perplexity",           "-m", q,    "--kl-divergence",
                                    "--kl-divergence-base", base, "-t", "2"};
                char *out = NULL;
                ASSERT(run_tool(tool_perplexity_run, 8, ak, &out, NULL) == 0);
                kld[with] = number_after(out, "Mean    KLD: ");
                mem_free(out);
            }
            remove(q);
        }
        if (getenv("HEARTH_TEST_VERBOSE"))
            printf("    %-7s weighted error %.5f -> %.5f with imatrix, KLD %.5f -> %.5f\n",
                   types[ti], werr[0], werr[1], kld[0], kld[1]);
        EXPECT_MSG(werr[1] < 0.95 * werr[0], "%s: weighted error %.5f with vs %.5f without",
                   types[ti], werr[1], werr[0]);
        if (ti == 0 && !QZ_SAN)
            EXPECT_MSG(kld[1] < 0.95 * kld[0], "%s: KLD %.5f with imatrix vs %.5f without",
                       types[ti], kld[1], kld[0]);
    }
    imatrix_free(im);
    remove(imat);
    remove(base);
}

/* ============================================================================================
 * Q4_K_XL (dynamic allocation)
 * ============================================================================================ */

TEST(quantize_allocate_greedy_budget) {
    /* three tensors; candidate costs fall ~4x per step */
    struct mix_alloc_item it[3] = {
        {3, {100, 125, 150}, {1.0, 0.25, 0.06}}, /* big, plain */
        {3, {10, 13, 16}, {8.0, 2.0, 0.5}},      /* small, sensitive */
        {2, {50, 100}, {0.2, 0.19}},             /* an upgrade that buys almost nothing */
    };
    int choice[3];
    uint64_t used = quant_mix_allocate(it, 3, 162, choice);
    EXPECT_EQ_INT(used, 160); /* the floors; the cheapest upgrade needs 3 more bytes */
    EXPECT(choice[0] == 0 && choice[1] == 0 && choice[2] == 0);
    used = quant_mix_allocate(it, 3, 200, choice);
    EXPECT(used <= 200);
    EXPECT(choice[1] == 2);                   /* the small sensitive one first, all the way */
    EXPECT(choice[0] == 1 && choice[2] == 0); /* then the big one, as far as the budget goes */
    used = quant_mix_allocate(it, 3, 1000, choice);
    EXPECT(choice[0] == 2 && choice[1] == 2 && choice[2] == 1 && used == 266);
    used = quant_mix_allocate(it, 3, 0, choice); /* nothing fits: the floors */
    EXPECT(choice[0] == 0 && choice[1] == 0 && choice[2] == 0 && used == 160);
}

static uint64_t file_size(const char *path) {
    size_t n = 0;
    char *b = test_read_file(path, &n);
    mem_free(b);
    return b ? n : 0;
}

static enum dtype tensor_type(const char *path, const char *name) {
    struct error err = {0};
    struct gguf *g = NULL;
    CHECK(gguf_open(&g, path, &err) == 0);
    const struct gguf_tensor_info *t = gguf_find_tensor(g, name);
    enum dtype d = t ? (enum dtype)t->type : DTYPE_COUNT;
    gguf_close(g);
    return d;
}

/* Q4_K_XL on the synthetic hybrid qwen35 (imatrix from the calibration text, KLD on the other
 * text): at most Q4_K_M's size and a much lower KL divergence than Q4_K_M with the same
 * imatrix (README: 0.37 vs 0.68 over the whole text). */
TEST(quantize_q4_k_xl_beats_q4_k_m) {
    const char *m = test_model_path("synthetic/qwen35-f32.gguf");
    if (!m) SKIP_TEST("../shared/models/synthetic not found");
    char model[512], imat[512], base[512], xl[512], km[512];
    snprintf(model, sizeof(model), "%s", m);
    snprintf(imat, sizeof(imat), "%s", tmp("xl.imatrix.gguf"));
    snprintf(base, sizeof(base), "%s", tmp("xl.kld"));
    snprintf(xl, sizeof(xl), "%s", tmp("xl-q4kxl.gguf"));
    snprintf(km, sizeof(km), "%s", tmp("xl-q4km.gguf"));
    const char *ctx = QZ_SAN ? "32" : "64";
    const char *ai[] = {"imatrix",
                        "-m",
                        model,
                        "-f",
                        "tests/data/stories-calib.txt",
                        "-o",
                        imat,
                        "-c",
                        ctx,
                        "--chunks",
                        QZ_SAN ? "1" : "6",
                        "-t",
                        "2",
                        "--no-ppl"};
    ASSERT(run_tool(tool_imatrix_run, 14, ai, NULL, NULL) == 0);
    const char *ab[] = {"perplexity",
                        "-m",
                        model,
                        "-f",
                        stories_text(),
                        "-c",
                        ctx,
                        "--chunks",
                        QZ_SAN ? "2" : "8",
                        "-t",
                        "2",
                        "--kl-divergence-base",
                        base};
    ASSERT(run_tool(tool_perplexity_run, 13, ab, NULL, NULL) == 0);
    char *log = NULL;
    ASSERT(quantize(model, km, "Q4_K_M", "--imatrix", imat, NULL) == 0);
    ASSERT(quantize(model, xl, "Q4_K_XL", "--imatrix", imat, &log) == 0);
    mem_free(log);
    double kld[2];
    const char *paths[2] = {km, xl};
    for (int k = 0; k < 2; k++) {
        const char *ak[] = {"perplexity",           "-m", paths[k], "--kl-divergence",
                            "--kl-divergence-base", base, "-t",     "2"};
        char *out = NULL;
        ASSERT(run_tool(tool_perplexity_run, 8, ak, &out, NULL) == 0);
        kld[k] = number_after(out, "Mean    KLD: ");
        mem_free(out);
    }
    uint64_t s_km = file_size(km), s_xl = file_size(xl);
    if (getenv("HEARTH_TEST_VERBOSE"))
        printf("    qwen35: Q4_K_M %llu bytes KLD %.4f, Q4_K_XL %llu bytes KLD %.4f\n",
               (unsigned long long)s_km, kld[0], (unsigned long long)s_xl, kld[1]);
    EXPECT_MSG(s_xl <= s_km, "Q4_K_XL %llu bytes > Q4_K_M %llu", (unsigned long long)s_xl,
               (unsigned long long)s_km);
    EXPECT(kld[0] > 0 && kld[1] > 0);
    if (!QZ_SAN)
        EXPECT_MSG(kld[1] < 0.8 * kld[0], "KLD Q4_K_XL %.4f vs Q4_K_M %.4f", kld[1], kld[0]);
    /* the LM head (tied token_embd) keeps Q4_K_M's type; the first block's linear attention
     * gets more bits than the rules give it */
    EXPECT(tensor_type(xl, "token_embd.weight") == DTYPE_Q8_0);
    static const char *const more[] = {"blk.0.attn_qkv.weight", "blk.0.ssm_out.weight",
                                       "blk.0.ssm_beta.weight"};
    for (int i = 0; i < 3; i++) {
        const struct dtype_traits *a = dtype_traits(tensor_type(xl, more[i]));
        const struct dtype_traits *b = dtype_traits(tensor_type(km, more[i]));
        ASSERT(a && b);
        EXPECT_MSG(a->type_size * b->block_size > b->type_size * a->block_size, "%s: %s vs %s",
                   more[i], a->name, b->name);
    }
    int64_t ft = 0;
    struct error err = {0};
    struct gguf *g = NULL;
    ASSERT(gguf_open(&g, xl, &err) == 0);
    EXPECT(gguf_get_int(g, "general.file_type", &ft) == 0 && ft == 15);
    gguf_close(g);
    /* the same bytes for another thread count (the measurement is deterministic) */
    const char *a1[] = {"quantize", model, tmp("xl-t1.gguf"), "Q4_K_XL", "--imatrix", imat,
                        "-t",       "1"};
    ASSERT(run_tool(tool_quantize_run, 8, a1, NULL, NULL) == 0);
    EXPECT(files_equal(xl, tmp("xl-t1.gguf")));
    remove(tmp("xl-t1.gguf"));
    /* stories260K: rows of 64, the 32-block ladder; still no bigger than Q4_K_M and the head
     * stays Q8_0 */
    const char *st = test_model_path("stories/stories260K.gguf");
    if (st) {
        char sp[512];
        snprintf(sp, sizeof(sp), "%s", st);
        ASSERT(quantize(sp, km, "Q4_K_M", NULL, NULL, NULL) == 0);
        ASSERT(quantize(sp, xl, "Q4_K_XL", NULL, NULL, &log) == 0);
        EXPECT_MSG(strstr(log, "without --imatrix") != NULL, "%s", log);
        mem_free(log);
        EXPECT(file_size(xl) <= file_size(km));
        EXPECT(tensor_type(xl, "output.weight") == DTYPE_Q8_0);
        /* user overrides are kept out of the allocation */
        ASSERT(quantize(sp, xl, "Q4_K_XL", "--tensor-type", "ffn_up=q4_0", NULL) == 0);
        EXPECT(tensor_type(xl, "blk.0.ffn_up.weight") == DTYPE_Q4_0 &&
               tensor_type(xl, "blk.4.ffn_up.weight") == DTYPE_Q4_0);
    }
    remove(imat);
    remove(base);
    remove(xl);
    remove(km);
}
