/* test_tokenizer.c: tokenizer tests against llama.cpp's vocab test vectors and the stories260K
 * golden text, plus special tokens, BOS, byte fallback, invalid UTF-8 and speed. */
#include "test.h"

#include "../src/base/buf.h"
#include "../src/base/mem.h"
#include "../src/gguf/gguf.h"
#include "../src/text/pretokenize.h"
#include "../src/text/tokenizer.h"
#include "../src/text/unicode.h"
#include "../tools/tools.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- helpers ---- */

struct loaded {
    struct gguf *g;
    struct tokenizer *t;
};

/* Opens ../shared/models/<rel> and loads its tokenizer; returns 0 and SKIPs if absent. */
static int load_vocab(const char *rel, struct loaded *l) {
    memset(l, 0, sizeof(*l));
    const char *path = test_model_path(rel);
    if (!path) return 0;
    struct error err = {0};
    if (gguf_open(&l->g, path, &err) != 0) {
        test_fail(__FILE__, __LINE__, "gguf_open(%s): %s", rel, err.msg);
        return 0;
    }
    if (tokenizer_load(&l->t, l->g, &err) != 0) {
        test_fail(__FILE__, __LINE__, "tokenizer_load(%s): %s", rel, err.msg);
        gguf_close(l->g);
        l->g = NULL;
        return 0;
    }
    return 1;
}

static void unload(struct loaded *l) {
    tokenizer_free(l->t);
    gguf_close(l->g);
}

static int encode(const struct tokenizer *t, const char *s, size_t n, int add_bos,
                  int parse_special, int32_t **ids, int64_t *n_ids) {
    struct error err = {0};
    int rc = tokenizer_encode(t, s, n, add_bos, parse_special, ids, n_ids, &err);
    if (rc != 0) test_fail(__FILE__, __LINE__, "tokenizer_encode: %s", err.msg);
    return rc;
}

static int ids_equal(const int32_t *a, int64_t na, const int32_t *b, int64_t nb) {
    return na == nb && (na == 0 || memcmp(a, b, (size_t)na * sizeof(*a)) == 0);
}

/* Parses space-separated ids; returns the count (at most cap). */
static int64_t parse_ids(const char *line, size_t len, int32_t *ids, int64_t cap) {
    int64_t n = 0;
    size_t i = 0;
    while (i < len && n < cap) {
        while (i < len && line[i] == ' ') i++;
        if (i >= len) break;
        long v = 0;
        while (i < len && line[i] >= '0' && line[i] <= '9') v = v * 10 + (line[i++] - '0');
        ids[n++] = (int32_t)v;
        while (i < len && line[i] != ' ') i++;
    }
    return n;
}

static void fmt_ids(char *out, size_t cap, const int32_t *ids, int64_t n) {
    size_t k = 0;
    out[0] = '\0';
    for (int64_t i = 0; i < n && k + 16 < cap; i++)
        k += (size_t)snprintf(out + k, cap - k, " %d", ids[i]);
}

/* ---- llama.cpp vocab vectors ----
 *
 * X.gguf.inp: strings separated by "\n__ggml_vocab_test__\n" (the last piece, empty, is
 * dropped); X.gguf.out: one line of expected ids per string (add_bos 0, parse_special 0).
 * Round trip: decode(encode(s)) == s exactly, except where the vocabulary's detokenizer
 * cleans spaces (gpt-2, llama-bpe: llama.cpp's clean_up_tokenization_spaces), where the
 * concatenated raw pieces must equal s instead. For SPM the decoder drops the one space the
 * encoder prefixed, so the round trip is exact there too. */
static void run_vectors(const char *name, int expect_clean_spaces) {
    char rel[256];
    snprintf(rel, sizeof(rel), "vocab/%s", name);
    struct loaded l;
    if (!load_vocab(rel, &l)) {
        if (!test_failed()) SKIP_TEST("../shared/models/%s not found", rel);
        return;
    }
    char inp_rel[300], out_rel[300];
    snprintf(inp_rel, sizeof(inp_rel), "%s.inp", rel);
    snprintf(out_rel, sizeof(out_rel), "%s.out", rel);
    size_t n_inp = 0, n_out = 0;
    char *inp = test_read_file(test_model_path(inp_rel), &n_inp);
    char *outf = test_read_file(test_model_path(out_rel), &n_out);
    if (!inp || !outf) {
        test_fail(__FILE__, __LINE__, "cannot read %s / %s", inp_rel, out_rel);
        goto done;
    }
    static const char sep[] = "\n__ggml_vocab_test__\n";
    const size_t n_sep = sizeof(sep) - 1;
    int n_cases = 0, n_pass = 0, n_roundtrip = 0;
    const char *p = inp, *end = inp + n_inp;
    const char *line = outf, *lend = outf + n_out;
    int32_t expected[4096];
    char got_s[1024], exp_s[1024];
    while (p < end) {
        const char *q = memmem(p, (size_t)(end - p), sep, n_sep);
        if (!q) break;
        size_t len = (size_t)(q - p);
        const char *nl = memchr(line, '\n', (size_t)(lend - line));
        size_t line_len = nl ? (size_t)(nl - line) : (size_t)(lend - line);
        int64_t n_exp = parse_ids(line, line_len, expected, 4096);
        int32_t *ids = NULL;
        int64_t n_ids = 0;
        n_cases++;
        if (encode(l.t, p, len, 0, 0, &ids, &n_ids) == 0) {
            if (ids_equal(ids, n_ids, expected, n_exp)) {
                n_pass++;
            } else {
                fmt_ids(got_s, sizeof(got_s), ids, n_ids);
                fmt_ids(exp_s, sizeof(exp_s), expected, n_exp);
                test_fail(__FILE__, __LINE__, "%s case %d '%.*s':\n     got%s\n    want%s", name,
                          n_cases, (int)(len > 60 ? 60 : len), p, got_s, exp_s);
            }
            struct buf b;
            buf_init(&b);
            if (expect_clean_spaces) {
                for (int64_t i = 0; i < n_ids; i++) tokenizer_decode_piece(l.t, ids[i], 0, &b);
            } else {
                tokenizer_decode(l.t, ids, n_ids, 0, &b);
            }
            if (b.len == len && (len == 0 || memcmp(b.data, p, len) == 0)) {
                n_roundtrip++;
            } else {
                test_fail(__FILE__, __LINE__, "%s case %d round trip: '%.*s' -> '%.*s'", name,
                          n_cases, (int)(len > 60 ? 60 : len), p, (int)(b.len > 60 ? 60 : b.len),
                          b.data ? b.data : "");
            }
            buf_free(&b);
        }
        mem_free(ids);
        p = q + n_sep;
        line = nl ? nl + 1 : lend;
    }
    printf("  %s: %d/%d vectors, %d/%d round trips\n", name, n_pass, n_cases, n_roundtrip, n_cases);
    EXPECT(n_cases > 0);
done:
    mem_free(inp);
    mem_free(outf);
    unload(&l);
}

TEST(tokenizer_vectors_llama_spm) {
    run_vectors("ggml-vocab-llama-spm.gguf", 0);
}

TEST(tokenizer_vectors_gpt2) {
    run_vectors("ggml-vocab-gpt-2.gguf", 1);
}

TEST(tokenizer_vectors_llama_bpe) {
    run_vectors("ggml-vocab-llama-bpe.gguf", 1);
}

TEST(tokenizer_vectors_qwen2) {
    run_vectors("ggml-vocab-qwen2.gguf", 0);
}

TEST(tokenizer_vectors_qwen35) {
    run_vectors("ggml-vocab-qwen35.gguf", 0);
}

/* ---- a small synthetic byte-level BPE vocabulary ----
 *
 * ids 0..255: the GPT-2 codepoint of each byte; then "he" "ll" "hell" "hello" (merges in that
 * order); then <think> </think> (user-defined), <|im_start|> <|im_end|> <|endoftext|>
 * (control). eos = <|im_end|>, bos = <|endoftext|>. */
enum {
    SYN_HE = 256,
    SYN_LL,
    SYN_HELL,
    SYN_HELLO,
    SYN_THINK,
    SYN_THINK_END,
    SYN_IM_START,
    SYN_IM_END,
    SYN_EOT,
    SYN_N
};

static int write_synthetic(const char *path, const char *pre) {
    static char bytes[256][4];
    const char *tokens[SYN_N];
    int32_t types[SYN_N];
    for (int b = 0; b < 256; b++) {
        size_t n = unicode_encode_utf8(unicode_byte_to_cpt((uint8_t)b), bytes[b]);
        bytes[b][n] = '\0';
        tokens[b] = bytes[b];
        types[b] = TOKEN_TYPE_NORMAL;
    }
    const char *extra[] = {"he",       "ll",           "hell",       "hello",        "<think>",
                           "</think>", "<|im_start|>", "<|im_end|>", "<|endoftext|>"};
    const int32_t extra_types[] = {1, 1, 1, 1, 4, 4, 3, 3, 3};
    for (int i = 0; i < SYN_N - 256; i++) {
        tokens[256 + i] = extra[i];
        types[256 + i] = extra_types[i];
    }
    const char *merges[] = {"h e", "l l", "he ll", "hell o"};
    struct gguf_writer *w = NULL;
    struct error err = {0};
    int rc = gguf_writer_create(&w, &err);
    if (rc) return rc;
    rc |= gguf_writer_set_str(w, "general.architecture", "qwen2");
    rc |= gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2");
    rc |= gguf_writer_set_str(w, "tokenizer.ggml.pre", pre);
    rc |= gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", tokens, SYN_N);
    rc |= gguf_writer_set_arr(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, types, SYN_N);
    rc |= gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", merges, 4);
    rc |= gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", SYN_IM_END);
    rc |= gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", SYN_EOT);
    if (rc == 0) rc = gguf_writer_write_file(w, path, &err);
    gguf_writer_free(w);
    return rc;
}

static int load_synthetic(const char *pre, struct loaded *l, struct error *err) {
    char path[512];
    snprintf(path, sizeof(path), "%s/tok-synthetic-%s.gguf", test_tmp_dir(), pre);
    memset(l, 0, sizeof(*l));
    if (write_synthetic(path, pre) != 0) return -1;
    int rc = gguf_open(&l->g, path, err);
    if (rc) return rc;
    rc = tokenizer_load(&l->t, l->g, err);
    if (rc) {
        gguf_close(l->g);
        l->g = NULL;
    }
    return rc;
}

static void expect_ids(const struct tokenizer *t, const char *s, int parse_special,
                       const int32_t *want, int64_t n_want, int line) {
    int32_t *ids = NULL;
    int64_t n = 0;
    if (encode(t, s, strlen(s), 0, parse_special, &ids, &n) != 0) return;
    if (!ids_equal(ids, n, want, n_want)) {
        char got_s[512], want_s[512];
        fmt_ids(got_s, sizeof(got_s), ids, n);
        fmt_ids(want_s, sizeof(want_s), want, n_want);
        test_fail(__FILE__, line, "'%s' (parse_special %d): got%s want%s", s, parse_special, got_s,
                  want_s);
    }
    mem_free(ids);
}

static void expect_decode(const struct tokenizer *t, const int32_t *ids, int64_t n,
                          int render_special, const char *want, int line) {
    struct buf b;
    buf_init(&b);
    tokenizer_decode(t, ids, n, render_special, &b);
    if (b.failed || b.len != strlen(want) || (b.len && memcmp(b.data, want, b.len))) {
        test_fail(__FILE__, line, "decode: got '%s' want '%s'", b.data ? b.data : "", want);
    }
    buf_free(&b);
}

TEST(tokenizer_special_user_defined_and_control) {
    struct loaded l;
    struct error err = {0};
    ASSERT_MSG(load_synthetic("qwen2", &l, &err) == 0, "load: %s", err.msg);
    const struct tokenizer *t = l.t;
    EXPECT_EQ_INT(tokenizer_n_vocab(t), SYN_N);
    EXPECT_EQ_INT(tokenizer_bos(t), SYN_EOT);
    EXPECT_EQ_INT(tokenizer_eos(t), SYN_IM_END);
    EXPECT_EQ_INT(tokenizer_add_bos(t), 0);

    /* BPE merges by rank */
    int32_t hello[] = {SYN_HELLO};
    expect_ids(t, "hello", 0, hello, 1, __LINE__);
    int32_t hell_h[] = {SYN_HELL, 'h' - '!' + 0};
    hell_h[1] = tokenizer_find_token(t, "h");
    expect_ids(t, "hellh", 0, hell_h, 2, __LINE__);

    /* user-defined tokens are matched whole with or without parse_special */
    int32_t think[] = {SYN_THINK, SYN_HELLO, SYN_THINK_END};
    expect_ids(t, "<think>hello</think>", 0, think, 3, __LINE__);
    expect_ids(t, "<think>hello</think>", 1, think, 3, __LINE__);

    /* control tokens only with parse_special */
    int32_t chat[] = {SYN_IM_START, SYN_HELLO, SYN_IM_END};
    expect_ids(t, "<|im_start|>hello<|im_end|>", 1, chat, 3, __LINE__);
    int32_t *ids = NULL;
    int64_t n = 0;
    if (encode(t, "<|im_start|>", 12, 0, 0, &ids, &n) == 0) {
        EXPECT_EQ_INT(n, 12); /* twelve single-byte tokens */
        for (int64_t i = 0; i < n; i++) EXPECT(ids[i] < 256);
        mem_free(ids);
    }

    /* BOS only when asked */
    int32_t *ids2 = NULL;
    if (encode(t, "hello", 5, 1, 0, &ids2, &n) == 0) {
        EXPECT_EQ_INT(n, 2);
        EXPECT_EQ_INT(ids2[0], SYN_EOT);
        mem_free(ids2);
    }

    EXPECT(tokenizer_is_eog(t, SYN_IM_END));
    EXPECT(tokenizer_is_eog(t, SYN_EOT));
    EXPECT(!tokenizer_is_eog(t, SYN_IM_START));
    EXPECT(tokenizer_is_control(t, SYN_IM_START));
    EXPECT(!tokenizer_is_control(t, SYN_THINK));
    EXPECT_EQ_INT(tokenizer_token_type(t, SYN_THINK), TOKEN_TYPE_USER_DEFINED);
    EXPECT(!strcmp(tokenizer_token_text(t, SYN_IM_END), "<|im_end|>"));
    EXPECT_EQ_INT(tokenizer_find_token(t, "</think>"), SYN_THINK_END);
    EXPECT_EQ_INT(tokenizer_find_token(t, "nope"), -1);

    /* decode: control tokens only with render_special, user-defined always */
    expect_decode(t, chat, 3, 0, "hello", __LINE__);
    expect_decode(t, chat, 3, 1, "<|im_start|>hello<|im_end|>", __LINE__);
    expect_decode(t, think, 3, 0, "<think>hello</think>", __LINE__);
    int32_t bad[] = {-1, SYN_N, SYN_HELLO};
    expect_decode(t, bad, 3, 1, "hello", __LINE__); /* out-of-range ids decode to nothing */
    unload(&l);
}

TEST(tokenizer_unknown_pre_and_model) {
    struct loaded l;
    struct error err = {0};
    int rc = load_synthetic("no-such-pre", &l, &err);
    EXPECT_EQ_INT(rc, ERR_UNSUPPORTED);
    EXPECT(strstr(err.msg, "no-such-pre") != NULL);
    if (rc == 0) unload(&l);

    /* a model other than llama/gpt2 */
    char path[512];
    snprintf(path, sizeof(path), "%s/tok-bert.gguf", test_tmp_dir());
    struct gguf_writer *w = NULL;
    ASSERT(gguf_writer_create(&w, &err) == 0);
    const char *tokens[] = {"a", "b"};
    gguf_writer_set_str(w, "tokenizer.ggml.model", "bert");
    gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", tokens, 2);
    ASSERT(gguf_writer_write_file(w, path, &err) == 0);
    gguf_writer_free(w);
    struct gguf *g = NULL;
    ASSERT(gguf_open(&g, path, &err) == 0);
    struct tokenizer *t = NULL;
    EXPECT_EQ_INT(tokenizer_load(&t, g, &err), ERR_UNSUPPORTED);
    EXPECT(strstr(err.msg, "bert") != NULL);
    EXPECT(t == NULL);
    gguf_close(g);
}

TEST(tokenizer_special_qwen2_chat) {
    struct loaded l;
    if (!load_vocab("vocab/ggml-vocab-qwen2.gguf", &l)) {
        if (!test_failed()) SKIP_TEST("../shared/models/vocab/ggml-vocab-qwen2.gguf not found");
        return;
    }
    const struct tokenizer *t = l.t;
    const int32_t im_start = 151644, im_end = 151645, eot = 151643;
    EXPECT_EQ_INT(tokenizer_find_token(t, "<|im_start|>"), im_start);
    EXPECT(tokenizer_is_eog(t, im_end));
    EXPECT(tokenizer_is_eog(t, eot));
    EXPECT(!tokenizer_is_eog(t, im_start));
    EXPECT_EQ_INT(tokenizer_add_bos(t), 0);

    /* expected: the special ids around the separately encoded text pieces */
    const char *chat = "<|im_start|>user\nHello, who are you?<|im_end|>\n<|im_start|>assistant\n";
    int32_t want[64];
    int64_t n_want = 0;
    const char *pieces[] = {NULL, "user\nHello, who are you?", NULL, "\n", NULL, "assistant\n"};
    const int32_t specials[] = {im_start, 0, im_end, 0, im_start, 0};
    for (int i = 0; i < 6; i++) {
        if (!pieces[i]) {
            want[n_want++] = specials[i];
            continue;
        }
        int32_t *ids = NULL;
        int64_t n = 0;
        ASSERT(encode(t, pieces[i], strlen(pieces[i]), 0, 0, &ids, &n) == 0);
        for (int64_t j = 0; j < n && n_want < 64; j++) want[n_want++] = ids[j];
        mem_free(ids);
    }
    expect_ids(t, chat, 1, want, n_want, __LINE__);
    expect_decode(t, want, n_want, 1, chat, __LINE__);
    expect_decode(t, want, n_want, 0, "user\nHello, who are you?\nassistant\n", __LINE__);

    /* without parse_special the markers are plain text; the padding tokens ([PAD151646],
     * user-defined) are matched even then */
    int32_t *ids = NULL;
    int64_t n = 0;
    if (encode(t, chat, strlen(chat), 0, 0, &ids, &n) == 0) {
        for (int64_t i = 0; i < n; i++) EXPECT(ids[i] < eot);
        mem_free(ids);
    }
    int32_t pad[] = {151646};
    expect_ids(t, "[PAD151646]", 0, pad, 1, __LINE__);
    unload(&l);
}

TEST(tokenizer_add_bos_defaults) {
    static const struct {
        const char *file;
        int add_bos;
        int32_t bos;
    } cases[] = {
        {"vocab/ggml-vocab-llama-spm.gguf", 1, 1},      {"vocab/ggml-vocab-gpt-2.gguf", 0, 50256},
        {"vocab/ggml-vocab-llama-bpe.gguf", 1, 128000}, /* llama-bpe defaults to BOS */
        {"vocab/ggml-vocab-qwen2.gguf", 0, 151643},     {"stories/stories260K.gguf", 1, 1},
    };
    int n_run = 0;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct loaded l;
        if (!load_vocab(cases[i].file, &l)) continue;
        n_run++;
        EXPECT_EQ_INT(tokenizer_add_bos(l.t), cases[i].add_bos);
        EXPECT_EQ_INT(tokenizer_bos(l.t), cases[i].bos);
        int32_t *ids = NULL;
        int64_t n = 0;
        if (encode(l.t, "Hi", 2, 1, 0, &ids, &n) == 0) {
            EXPECT(n >= 2 && ids[0] == cases[i].bos);
            mem_free(ids);
        }
        if (encode(l.t, "", 0, 1, 0, &ids, &n) == 0) {
            EXPECT(n == 1 && ids[0] == cases[i].bos);
            mem_free(ids);
        }
        if (encode(l.t, "", 0, 0, 0, &ids, &n) == 0) {
            EXPECT_EQ_INT(n, 0);
            EXPECT(ids != NULL);
            mem_free(ids);
        }
        unload(&l);
    }
    if (n_run == 0 && !test_failed()) SKIP_TEST("no vocab files under ../shared/models");
}

TEST(tokenizer_spm_byte_fallback_and_spaces) {
    struct loaded l;
    if (!load_vocab("vocab/ggml-vocab-llama-spm.gguf", &l)) {
        if (!test_failed()) SKIP_TEST("../shared/models/vocab/ggml-vocab-llama-spm.gguf not found");
        return;
    }
    const struct tokenizer *t = l.t;
    /* U+10FFFD (private use) is no token: " " then its four bytes as <0xXX> */
    const char *s = "\xf4\x8f\xbf\xbd";
    int32_t want[5] = {tokenizer_find_token(t, "\xe2\x96\x81"), tokenizer_find_token(t, "<0xF4>"),
                       tokenizer_find_token(t, "<0x8F>"), tokenizer_find_token(t, "<0xBF>"),
                       tokenizer_find_token(t, "<0xBD>")};
    EXPECT_EQ_INT(want[1], 3 + 0xF4);
    expect_ids(t, s, 0, want, 5, __LINE__);
    expect_decode(t, want, 5, 0, s, __LINE__);
    EXPECT_EQ_INT(tokenizer_token_type(t, want[1]), TOKEN_TYPE_BYTE);

    /* the prefix space is removed from the first piece only */
    int32_t hw[2] = {tokenizer_find_token(t, "\xe2\x96\x81Hello"),
                     tokenizer_find_token(t, "\xe2\x96\x81world")};
    EXPECT(hw[0] >= 0 && hw[1] >= 0);
    expect_ids(t, "Hello world", 0, hw, 2, __LINE__);
    expect_decode(t, hw, 2, 0, "Hello world", __LINE__);
    expect_decode(t, hw + 1, 1, 0, "world", __LINE__);
    struct buf b;
    buf_init(&b);
    tokenizer_decode_piece(t, hw[1], 0, &b);
    EXPECT(b.len == 6 && !memcmp(b.data, " world", 6));
    buf_free(&b);

    /* after a special token the text gets a prefix space again (parse_special) */
    int32_t *ids = NULL;
    int64_t n = 0;
    if (encode(t, "Hello</s>world", 14, 0, 1, &ids, &n) == 0) {
        int32_t w3[3] = {hw[0], 2, hw[1]};
        EXPECT(ids_equal(ids, n, w3, 3));
        mem_free(ids);
    }
    EXPECT(tokenizer_is_eog(t, 2));
    EXPECT(tokenizer_is_control(t, 1));
    unload(&l);
}

/* A tiny SPM vocabulary without byte tokens: merges go by score, unknown characters become
 * <unk>, and add_space_prefix can be turned off. */
static int load_tiny_spm(int add_space_prefix, struct loaded *l, struct error *err) {
    const char *tokens[] = {"<unk>", "<s>", "</s>", "\xe2\x96\x81", "a",
                            "b",     "c",   "ab",   "bc",           "\342\226\201a"};
    const float scores[] = {0, 0, 0, -5, -5, -5, -5, -1, -0.5f, -3};
    const int32_t types[] = {2, 3, 3, 1, 1, 1, 1, 1, 1, 1};
    char path[512];
    snprintf(path, sizeof(path), "%s/tok-tiny-spm-%d.gguf", test_tmp_dir(), add_space_prefix);
    struct gguf_writer *w = NULL;
    memset(l, 0, sizeof(*l));
    int rc = gguf_writer_create(&w, err);
    if (rc) return rc;
    gguf_writer_set_str(w, "tokenizer.ggml.model", "llama");
    gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", tokens, 10);
    gguf_writer_set_arr(w, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, scores, 10);
    gguf_writer_set_arr(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, types, 10);
    gguf_writer_set_bool(w, "tokenizer.ggml.add_space_prefix", add_space_prefix);
    rc = gguf_writer_write_file(w, path, err);
    gguf_writer_free(w);
    if (rc) return rc;
    if ((rc = gguf_open(&l->g, path, err)) != 0) return rc;
    if ((rc = tokenizer_load(&l->t, l->g, err)) != 0) gguf_close(l->g);
    return rc;
}

TEST(tokenizer_spm_scores_and_unknown) {
    struct loaded l;
    struct error err = {0};
    ASSERT_MSG(load_tiny_spm(1, &l, &err) == 0, "%s", err.msg);
    /* "▁abc": "bc" (-0.5) beats "ab" (-1) and "▁a" (-3) */
    int32_t abc[] = {9, 8};
    expect_ids(l.t, "abc", 0, abc, 2, __LINE__);
    /* "ab" (-1) beats "▁a" (-3) */
    int32_t ab[] = {3, 7};
    expect_ids(l.t, "ab", 0, ab, 2, __LINE__);
    /* 'd' is no token and there are no byte tokens: <unk> (one per byte) */
    int32_t d[] = {9, 0, 3, 5};
    expect_ids(l.t, "ad b", 0, d, 4, __LINE__);
    EXPECT_EQ_INT(tokenizer_add_bos(l.t), 1);
    EXPECT(!tokenizer_is_eog(l.t, 0));
    EXPECT(tokenizer_is_eog(l.t, 2));
    /* <unk> and control tokens are rendered only with render_special */
    expect_decode(l.t, d, 4, 0, "a b", __LINE__);
    expect_decode(l.t, d, 4, 1, "a<unk> b", __LINE__);
    unload(&l);

    ASSERT_MSG(load_tiny_spm(0, &l, &err) == 0, "%s", err.msg);
    int32_t abc2[] = {4, 8};
    expect_ids(l.t, "abc", 0, abc2, 2, __LINE__);
    expect_decode(l.t, abc, 2, 0, " abc", __LINE__); /* no prefix space to remove */
    unload(&l);
}

TEST(tokenizer_gpt2_clean_spaces) {
    struct loaded l;
    if (!load_vocab("vocab/ggml-vocab-gpt-2.gguf", &l)) {
        if (!test_failed()) SKIP_TEST("../shared/models/vocab/ggml-vocab-gpt-2.gguf not found");
        return;
    }
    const char *s = "Hello , world ! I 'm here ' ok";
    int32_t *ids = NULL;
    int64_t n = 0;
    if (encode(l.t, s, strlen(s), 0, 0, &ids, &n) == 0) {
        /* llama.cpp's clean_up_tokenization_spaces, on for the gpt-2 pre-tokenizer */
        expect_decode(l.t, ids, n, 0, "Hello, world! I'm here'ok", __LINE__);
        mem_free(ids);
    }
    /* <|endoftext|> is control-looking: matched with parse_special, an end of generation */
    int32_t eot[] = {50256};
    expect_ids(l.t, "<|endoftext|>", 1, eot, 1, __LINE__);
    EXPECT(tokenizer_is_eog(l.t, 50256));
    EXPECT(tokenizer_is_control(l.t, 50256));
    unload(&l);
}

/* Invalid UTF-8 and arbitrary bytes: no crash, and the bytes come back. hearth keeps invalid
 * bytes where llama.cpp substitutes U+FFFD (BPE) or lets an invalid lead byte swallow the next
 * bytes (SPM); for valid UTF-8 both agree. (A literal U+2581 in SPM input would decode as a
 * space, in llama.cpp too; the random bytes here never contain one.) */
TEST(tokenizer_invalid_utf8_roundtrip) {
    /* is_spm: decode with tokenizer_decode (drops the prefix space); BPE: raw pieces (no
     * clean-up pass of gpt-2/llama-bpe) */
    static const struct {
        const char *file;
        int is_spm;
    } files[] = {{"vocab/ggml-vocab-llama-spm.gguf", 1}, {"vocab/ggml-vocab-gpt-2.gguf", 0},
                 {"vocab/ggml-vocab-qwen2.gguf", 0},     {"vocab/ggml-vocab-qwen35.gguf", 0},
                 {"vocab/ggml-vocab-llama-bpe.gguf", 0}, {"stories/stories260K.gguf", 1}};
    static const char *fixed[] = {"\xff",
                                  "\xc3",
                                  "a\x80z",
                                  "\xe2\x96",
                                  "\xf0\x9f\x98",
                                  "\xed\xa0\x80 surrogate",
                                  "\xc0\x80 overlong",
                                  "\xf7\xbf\xbf\xbf",
                                  "ok \xfe\xfe\n\t\x01"};
    int n_run = 0;
    for (size_t f = 0; f < sizeof(files) / sizeof(files[0]); f++) {
        struct loaded l;
        if (!load_vocab(files[f].file, &l)) continue;
        n_run++;
        uint32_t seed = 12345;
        for (int c = 0; c < 200; c++) {
            char s[80];
            size_t len;
            if (c < (int)(sizeof(fixed) / sizeof(fixed[0]))) {
                len = strlen(fixed[c]);
                memcpy(s, fixed[c], len);
            } else {
                seed = seed * 1103515245u + 12345u;
                len = (seed >> 16) % sizeof(s);
                for (size_t i = 0; i < len; i++) {
                    seed = seed * 1103515245u + 12345u;
                    s[i] = (char)(seed >> 16);
                }
            }
            int32_t *ids = NULL;
            int64_t n = 0;
            if (encode(l.t, s, len, 0, 0, &ids, &n) != 0) continue;
            struct buf b;
            buf_init(&b);
            if (files[f].is_spm) {
                tokenizer_decode(l.t, ids, n, 0, &b);
            } else {
                for (int64_t i = 0; i < n; i++) tokenizer_decode_piece(l.t, ids[i], 0, &b);
            }
            EXPECT_MSG(b.len == len && (len == 0 || !memcmp(b.data, s, len)),
                       "%s case %d: %zu bytes in, %zu out", files[f].file, c, len, b.len);
            buf_free(&b);
            mem_free(ids);
        }
        unload(&l);
    }
    if (n_run == 0 && !test_failed()) SKIP_TEST("no vocab files under ../shared/models");
}

/* stories260K: the greedy ids decode to the stored text; encoding the first sentence gives
 * the same ids as the model produced. */
TEST(tokenizer_stories260k_golden) {
    struct loaded l;
    if (!load_vocab("stories/stories260K.gguf", &l)) {
        if (!test_failed()) SKIP_TEST("../shared/models/stories/stories260K.gguf not found");
        return;
    }
    size_t n_file = 0;
    char *file = test_read_file(test_model_path("stories/stories260K.greedy256.txt"), &n_file);
    ASSERT(file);
    /* line 3: ids; lines 5..: text */
    const char *p = file;
    for (int i = 0; i < 2; i++) p = strchr(p, '\n') + 1;
    const char *ids_end = strchr(p, '\n');
    int32_t ids[300];
    int64_t n = parse_ids(p, (size_t)(ids_end - p), ids, 300);
    EXPECT_EQ_INT(n, 256);
    const char *text = strchr(ids_end + 1, '\n') + 1;
    size_t n_text = (size_t)(file + n_file - text);

    struct buf b;
    buf_init(&b);
    tokenizer_decode(l.t, ids, n, 0, &b);
    /* the file ends with a newline after the text */
    size_t cmp = n_text && text[n_text - 1] == '\n' && (b.len == n_text - 1) ? n_text - 1 : n_text;
    EXPECT_MSG(b.len == cmp && !memcmp(b.data, text, cmp), "decoded text differs:\n%.*s",
               (int)(b.len > 200 ? 200 : b.len), b.data);

    const char *sentence = "Once upon a time, there was a little girl named Lily.";
    int32_t *got = NULL;
    int64_t n_got = 0;
    if (encode(l.t, sentence, strlen(sentence), 0, 0, &got, &n_got) == 0) {
        EXPECT_MSG(n_got <= n && ids_equal(got, n_got, ids, n_got), "first sentence ids differ");
        /* and those ids decode to exactly the sentence */
        struct buf s;
        buf_init(&s);
        tokenizer_decode(l.t, ids, n_got, 0, &s);
        EXPECT(s.len == strlen(sentence) && !memcmp(s.data, sentence, s.len));
        buf_free(&s);
        mem_free(got);
    }
    buf_free(&b);
    mem_free(file);
    unload(&l);
}

/* The whole text of the vectors, repeated to 100 KB, tokenized in well under a second. */
TEST(tokenizer_speed_100kb) {
    static const char *files[] = {"vocab/ggml-vocab-qwen2.gguf", "vocab/ggml-vocab-llama-spm.gguf",
                                  "vocab/ggml-vocab-llama-bpe.gguf"};
    size_t n_inp = 0;
    const char *inp_path = test_model_path("vocab/ggml-vocab-qwen35.gguf.inp");
    if (!inp_path) SKIP_TEST("../shared/models/vocab not found");
    char *inp = test_read_file(inp_path, &n_inp);
    ASSERT(inp && n_inp > 0);
    size_t n_text = 100 * 1024;
    char *text = mem_alloc(n_text);
    ASSERT(text);
    for (size_t i = 0; i < n_text; i++) text[i] = inp[i % n_inp];
    for (size_t f = 0; f < sizeof(files) / sizeof(files[0]); f++) {
        struct timespec t0, t1, t2;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        struct loaded l;
        if (!load_vocab(files[f], &l)) continue;
        clock_gettime(CLOCK_MONOTONIC, &t1);
        int32_t *ids = NULL;
        int64_t n = 0;
        int rc = encode(l.t, text, n_text, 0, 1, &ids, &n);
        clock_gettime(CLOCK_MONOTONIC, &t2);
        double load_s = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
        double enc_s = (double)(t2.tv_sec - t1.tv_sec) + 1e-9 * (double)(t2.tv_nsec - t1.tv_nsec);
        printf("  %s: load %.3f s, 100 KB -> %lld tokens in %.3f s\n", files[f], load_s,
               (long long)n, enc_s);
        EXPECT(rc == 0 && n > 10000);
        EXPECT_MSG(enc_s < 1.0, "%s: encoding 100 KB took %.2f s", files[f], enc_s);
        EXPECT_MSG(load_s < 2.0, "%s: loading took %.2f s", files[f], load_s);
        mem_free(ids);
        unload(&l);
    }
    mem_free(text);
    mem_free(inp);
}

/* ---- unit tests of the pieces ---- */

TEST(tokenizer_unicode_tables) {
    EXPECT(unicode_flags('a') & UNICODE_LETTER);
    EXPECT(unicode_flags('7') & UNICODE_NUMBER);
    EXPECT(unicode_flags(' ') & UNICODE_WHITESPACE);
    EXPECT(!(unicode_flags(0x1C) & UNICODE_WHITESPACE)); /* isspace() yes, White_Space no */
    EXPECT(unicode_flags(0x3000) & UNICODE_WHITESPACE);
    EXPECT(unicode_flags(0x0301) & UNICODE_MARK);
    EXPECT(unicode_flags(0x4E2D) & UNICODE_LETTER);
    EXPECT(unicode_flags(0x0663) & UNICODE_NUMBER); /* ARABIC-INDIC DIGIT THREE */
    EXPECT(unicode_flags(0xFFFD) & UNICODE_SYMBOL);
    EXPECT_EQ_INT(unicode_flags(0x10FFFF), UNICODE_OTHER);
    EXPECT_EQ_INT(unicode_flags(0x110000), UNICODE_OTHER);
    for (int b = 0; b < 256; b++) {
        uint32_t c = unicode_byte_to_cpt((uint8_t)b);
        EXPECT(c >= 0x21 && c < 0x144);
        EXPECT_EQ_INT(unicode_cpt_to_byte(c), b);
    }
    EXPECT_EQ_INT(unicode_byte_to_cpt(' '), 0x120); /* "Ġ" */
    EXPECT_EQ_INT(unicode_cpt_to_byte(0x144), -1);
    uint32_t cpt;
    EXPECT_EQ_INT(unicode_decode_utf8("\xe2\x96\x81", 3, &cpt), 3);
    EXPECT_EQ_INT(cpt, 0x2581);
    EXPECT_EQ_INT(unicode_decode_utf8("\xe2\x96", 2, &cpt), 1);
    EXPECT_EQ_INT(cpt, 0xFFFD);
}

static void expect_split(enum pretok_kind kind, const char *s, const char *const *want, int line) {
    struct pretok_buf b;
    pretok_buf_init(&b);
    size_t len = strlen(s);
    if (pretokenize_split(kind, s, len, &b) != 0) {
        test_fail(__FILE__, line, "pretokenize_split failed");
        pretok_buf_free(&b);
        return;
    }
    size_t n_want = 0;
    while (want[n_want]) n_want++;
    int ok = b.n_words == n_want;
    size_t start = 0;
    for (size_t i = 0; ok && i < n_want; i++) {
        size_t n = b.ends[i] - start;
        ok = n == strlen(want[i]) && !memcmp(s + start, want[i], n);
        start = b.ends[i];
    }
    if (!ok) {
        char got[512];
        size_t k = 0;
        start = 0;
        for (size_t i = 0; i < b.n_words && k < 400; i++) {
            k += (size_t)snprintf(got + k, sizeof(got) - k, "[%.*s]", (int)(b.ends[i] - start),
                                  s + start);
            start = b.ends[i];
        }
        test_fail(__FILE__, line, "split '%s' (kind %d): got %s", s, (int)kind, got);
    }
    pretok_buf_free(&b);
}

TEST(tokenizer_pretokenize_regexes) {
    const char *const a[] = {"Hello", " world", "!!", "  ", " ", "1", "2", "3", NULL};
    expect_split(PRETOK_QWEN2, "Hello world!!   123", a, __LINE__);
    const char *const b[] = {"Hello", " world", "!!", "  ", " ", "123", NULL};
    expect_split(PRETOK_LLAMA3, "Hello world!!   123", b, __LINE__);
    const char *const c[] = {"Hello", " world", "!!", "  ", " 123", NULL};
    expect_split(PRETOK_GPT2, "Hello world!!   123", c, __LINE__);
    /* contractions: case-insensitive in llama3/qwen, not in gpt-2 */
    const char *const d[] = {"I", "'M", " fine", NULL};
    expect_split(PRETOK_QWEN2, "I'M fine", d, __LINE__);
    const char *const e[] = {"I", "'", "M", " fine", NULL};
    expect_split(PRETOK_GPT2, "I'M fine", e, __LINE__);
    /* \s*[\r\n]+ and trailing whitespace */
    const char *const f[] = {"a", " \n\n", "  ", " b", "  ", NULL};
    expect_split(PRETOK_QWEN2, "a \n\n   b  ", f, __LINE__);
    /* punctuation keeps following newlines */
    const char *const g[] = {"x", ".\n", "y", NULL};
    expect_split(PRETOK_QWEN2, "x.\ny", g, __LINE__);
    /* combining marks: other in qwen2, letters in qwen35 */
    const char *const h[] = {"e", "\xcc\x81", NULL};
    expect_split(PRETOK_QWEN2, "e\xcc\x81", h, __LINE__);
    const char *const i[] = {"e\xcc\x81", NULL};
    expect_split(PRETOK_QWEN35, "e\xcc\x81", i, __LINE__);
    const char *const j2[] = {"re\xcc\x81sume\xcc\x81", NULL};
    expect_split(PRETOK_QWEN35, "re\xcc\x81sume\xcc\x81", j2, __LINE__);
    /* llama.cpp's BPE default: punctuation runs, GPT-2, digit runs, ASCII digit triples */
    const char *const k[] = {"a", "+", "b", "=", "123", "45", NULL};
    expect_split(PRETOK_DEFAULT, "a+b=12345", k, __LINE__);
}

/* Every allocation failure during load and encode is a clean ERR_NOMEM without leaks. */
static void alloc_fail_loop(const struct gguf *g, const char *text) {
    struct error err = {0};
    int64_t base = mem_live_bytes();
    int ok = 0, n_failed = 0;
    for (int64_t k = 0; k < 500 && !ok; k++) {
        struct tokenizer *t = NULL;
        mem_fail_after(k);
        int rc = tokenizer_load(&t, g, &err);
        if (rc == 0) {
            int32_t *ids = NULL;
            int64_t n = 0;
            rc = tokenizer_encode(t, text, strlen(text), 1, 1, &ids, &n, &err);
            mem_fail_after(-1);
            if (rc == 0) {
                ok = 1;
                EXPECT(n > 2);
                mem_free(ids);
            }
            tokenizer_free(t);
        }
        mem_fail_after(-1);
        if (rc != 0) {
            n_failed++;
            EXPECT_EQ_INT(rc, ERR_NOMEM);
        }
        EXPECT_EQ_INT(mem_live_bytes(), base);
    }
    mem_fail_after(-1);
    EXPECT(ok);
    EXPECT(n_failed > 5);
}

TEST(tokenizer_alloc_failures) {
    struct loaded l;
    struct error err = {0};
    ASSERT_MSG(load_synthetic("qwen35", &l, &err) == 0, "%s", err.msg);
    tokenizer_free(l.t);
    alloc_fail_loop(l.g, "<|im_start|>hello <think>hello</think> \xff world 123<|im_end|>");
    gguf_close(l.g);

    const char *path = test_model_path("stories/stories260K.gguf");
    if (!path) SKIP_TEST("../shared/models/stories/stories260K.gguf not found");
    struct gguf *g = NULL;
    ASSERT(gguf_open(&g, path, &err) == 0);
    alloc_fail_loop(g, "Once upon a time</s> there\xff was");
    gguf_close(g);
}

/* `hearth tokenize`: ids on one line; --bos; --no-parse-special; errors are one line, exit 1. */
static int run_tool(const char *model, const char *input, const char *flag, char *out_s, size_t cap,
                    char *err_s, size_t err_cap) {
    FILE *in = tmpfile(), *out = tmpfile(), *err = tmpfile();
    if (!in || !out || !err) return -1;
    fputs(input, in);
    rewind(in);
    char *argv[5] = {"tokenize", "-m", (char *)model, (char *)flag, NULL};
    int argc = flag ? 4 : 3;
    if (!model) argc = 1;
    int rc = tool_tokenize_run(argc, argv, in, out, err);
    rewind(out);
    rewind(err);
    size_t n = fread(out_s, 1, cap - 1, out);
    out_s[n] = '\0';
    n = fread(err_s, 1, err_cap - 1, err);
    err_s[n] = '\0';
    fclose(in);
    fclose(out);
    fclose(err);
    return rc;
}

TEST(tokenizer_tool_tokenize) {
    const char *model = test_model_path("vocab/ggml-vocab-qwen2.gguf");
    if (!model) SKIP_TEST("../shared/models/vocab/ggml-vocab-qwen2.gguf not found");
    char path[4096];
    snprintf(path, sizeof(path), "%s", model);
    char out[4096], err[1024];
    EXPECT_EQ_INT(run_tool(path, "Hello world<|im_end|>", NULL, out, sizeof(out), err, sizeof(err)),
                  0);
    EXPECT_MSG(!strcmp(out, "9707 1879 151645\n"), "got '%s'", out);
    EXPECT_EQ_INT(
        run_tool(path, "Hello<|im_end|>", "--no-parse-special", out, sizeof(out), err, sizeof(err)),
        0);
    EXPECT_MSG(!strcmp(out, "9707 27 91 318 6213 91 29\n"), "got '%s'", out);
    EXPECT_EQ_INT(run_tool(path, "Hi", "--bos", out, sizeof(out), err, sizeof(err)), 0);
    EXPECT_MSG(!strncmp(out, "151643 ", 7), "got '%s'", out);
    EXPECT_EQ_INT(run_tool(path, "", NULL, out, sizeof(out), err, sizeof(err)), 0);
    EXPECT_MSG(!strcmp(out, "\n"), "got '%s'", out);

    EXPECT_EQ_INT(run_tool(path, "x", "--bogus", out, sizeof(out), err, sizeof(err)), 1);
    EXPECT(strchr(err, '\n') == err + strlen(err) - 1 && strstr(err, "--bogus"));
    EXPECT_EQ_INT(run_tool("/nonexistent.gguf", "x", NULL, out, sizeof(out), err, sizeof(err)), 1);
    EXPECT(strchr(err, '\n') == err + strlen(err) - 1);
    EXPECT_EQ_INT(run_tool(NULL, "x", NULL, out, sizeof(out), err, sizeof(err)), 1);
    EXPECT(strstr(err, "usage") != NULL);
}

/* A Qwen3-style vocabulary: the qwen2 file with ids 151646..151668 renamed to Qwen3's added
 * tokens, typed as llama.cpp's converter types them (special -> control, else user-defined). */
static const char *const k_qwen3_added[] = {"<|object_ref_start|>",
                                            "<|object_ref_end|>",
                                            "<|box_start|>",
                                            "<|box_end|>",
                                            "<|quad_start|>",
                                            "<|quad_end|>",
                                            "<|vision_start|>",
                                            "<|vision_end|>",
                                            "<|vision_pad|>",
                                            "<|image_pad|>",
                                            "<|video_pad|>",
                                            "<tool_call>",
                                            "</tool_call>",
                                            "<|fim_prefix|>",
                                            "<|fim_middle|>",
                                            "<|fim_suffix|>",
                                            "<|fim_pad|>",
                                            "<|repo_name|>",
                                            "<|file_sep|>",
                                            "<tool_response>",
                                            "</tool_response>",
                                            "<think>",
                                            "</think>"};

static int write_qwen3_like(const struct gguf *src, const char *path) {
    int64_t ki = gguf_find_key(src, "tokenizer.ggml.tokens");
    int64_t ti = gguf_find_key(src, "tokenizer.ggml.token_type");
    if (ki < 0 || ti < 0) return -1;
    uint64_t n = gguf_kv_arr_n(src, ki);
    char **texts = mem_calloc(n, sizeof(*texts));
    int32_t *types = mem_alloc(n * sizeof(*types));
    struct gguf_writer *w = NULL;
    struct error err = {0};
    int rc = -1;
    if (!texts || !types || gguf_writer_create(&w, &err) != 0) goto done;
    for (uint64_t i = 0; i < n; i++) {
        struct gguf_str s = gguf_kv_arr_str(src, ki, i);
        int32_t ty = (int32_t)gguf_kv_arr_int(src, ti, i);
        if (i >= 151646 && i <= 151668) {
            const char *added = k_qwen3_added[i - 151646];
            s.data = added;
            s.len = strlen(added);
            ty = i <= 151656 ? TOKEN_TYPE_CONTROL : TOKEN_TYPE_USER_DEFINED;
        }
        if (!(texts[i] = mem_strndup(s.data, (size_t)s.len))) goto done;
        types[i] = ty;
    }
    for (int64_t k = 0; k < gguf_n_kv(src); k++) {
        if (k != ki && k != ti && gguf_writer_copy_kv(w, src, k) != 0) goto done;
    }
    if (gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)texts, n) ||
        gguf_writer_set_arr(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, types, n)) {
        goto done;
    }
    rc = gguf_writer_write_file(w, path, &err);
done:
    gguf_writer_free(w);
    for (uint64_t i = 0; texts && i < n; i++) mem_free(texts[i]);
    mem_free(texts);
    mem_free(types);
    return rc;
}

TEST(tokenizer_qwen3_added_tokens) {
    struct loaded q2;
    if (!load_vocab("vocab/ggml-vocab-qwen2.gguf", &q2)) {
        if (!test_failed()) SKIP_TEST("../shared/models/vocab/ggml-vocab-qwen2.gguf not found");
        return;
    }
    char path[512];
    snprintf(path, sizeof(path), "%s/tok-qwen3-like.gguf", test_tmp_dir());
    int rc = write_qwen3_like(q2.g, path);
    unload(&q2);
    ASSERT(rc == 0);
    struct loaded l = {0};
    struct error err = {0};
    ASSERT(gguf_open(&l.g, path, &err) == 0);
    ASSERT_MSG(tokenizer_load(&l.t, l.g, &err) == 0, "%s", err.msg);
    const struct tokenizer *t = l.t;

    /* user-defined: single ids even without parse_special */
    const char *s = "<think>\nok</think>\n\n<tool_call>\n{\"name\": \"f\"}\n</tool_call>";
    for (int ps = 0; ps < 2; ps++) {
        int32_t *ids = NULL;
        int64_t n = 0;
        if (encode(t, s, strlen(s), 0, ps, &ids, &n) != 0) continue;
        int seen[4] = {0};
        for (int64_t i = 0; i < n; i++) {
            if (ids[i] == 151667) seen[0]++;
            if (ids[i] == 151668) seen[1]++;
            if (ids[i] == 151657) seen[2]++;
            if (ids[i] == 151658) seen[3]++;
        }
        EXPECT(n > 0 && ids[0] == 151667);
        EXPECT(seen[0] == 1 && seen[1] == 1 && seen[2] == 1 && seen[3] == 1);
        expect_decode(t, ids, n, 0, s, __LINE__);
        mem_free(ids);
    }
    /* FIM tokens are control-looking (llama.cpp): matched only with parse_special, EOG for
     * pad/repo/file_sep, not rendered without render_special */
    int32_t fim[] = {151659};
    expect_ids(t, "<|fim_prefix|>", 1, fim, 1, __LINE__);
    int32_t *ids = NULL;
    int64_t n = 0;
    if (encode(t, "<|fim_prefix|>", 14, 0, 0, &ids, &n) == 0) {
        EXPECT(n > 1);
        mem_free(ids);
    }
    EXPECT(tokenizer_is_control(t, 151659));
    EXPECT(!tokenizer_is_control(t, 151667));
    /* 128247 is the plain BPE token "</s>": llama.cpp's EOG text list has "</s>" (for
     * paddleocr), so it ends generation for Qwen vocabularies too */
    const int32_t eog_want[] = {128247, 151643, 151645, 151662, 151663, 151664};
    const int32_t *eog = NULL;
    int n_eog = tokenizer_eog_ids(t, &eog);
    EXPECT_EQ_INT(n_eog, 6);
    for (int i = 0; i < n_eog && i < 6; i++) EXPECT_EQ_INT(eog[i], eog_want[i]);
    int32_t vis[] = {151652, 151667, 151645};
    expect_decode(t, vis, 3, 0, "<think>", __LINE__);
    expect_decode(t, vis, 3, 1, "<|vision_start|><think><|im_end|>", __LINE__);
    unload(&l);
}
