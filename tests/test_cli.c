/* test_cli.c: the command-line contract scripts depend on (runs ./hearth as a subprocess), and
 * `hearth synth` files loading and running. */
#include "test.h"

#include "../src/base/mem.h"
#include "../src/engine/engine.h"
#include "../src/gguf/gguf.h"

#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

/* Runs a shell command, captures stdout (and stderr when merge), returns the exit code. */
static int run_cmd(const char *cmd, char *out, size_t cap) {
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

TEST(cli_run_print_ids_matches_golden) {
    const char *m = test_model_path("stories/stories260K.gguf");
    if (!m) SKIP_TEST("../shared/models/stories not found");
    char cmd[8192], out[65536];
    snprintf(cmd, sizeof(cmd), "./hearth run -m %s --ids 1 -n 16 --temp 0 --print-ids 2>/dev/null",
             m);
    EXPECT_EQ_INT(run_cmd(cmd, out, sizeof(out)), 0);
    EXPECT_MSG(!strcmp(out, "403 407 261 378 432 383 286 261 376 298 315 421 395 317 426 338\n"),
               "got '%s'", out);
    /* BOS alone is the default prompt; text goes to stdout, timings to stderr */
    snprintf(cmd, sizeof(cmd), "./hearth run -m %s -n 12 --temp 0 2>/dev/null", m);
    EXPECT_EQ_INT(run_cmd(cmd, out, sizeof(out)), 0);
    EXPECT_MSG(strstr(out, "Once upon a time, there was a little girl") != NULL, "got '%s'", out);
    snprintf(cmd, sizeof(cmd), "./hearth run -m %s -n 4 --temp 0 2>&1 >/dev/null", m);
    EXPECT_EQ_INT(run_cmd(cmd, out, sizeof(out)), 0);
    EXPECT_MSG(strstr(out, "tok/s") != NULL, "stderr: '%s'", out);
    /* same seed, same text; sampling on */
    char a[4096], b[4096];
    snprintf(cmd, sizeof(cmd), "./hearth run -m %s -n 30 --temp 1 --seed 7 --print-ids 2>/dev/null",
             m);
    run_cmd(cmd, a, sizeof(a));
    run_cmd(cmd, b, sizeof(b));
    EXPECT(strlen(a) > 10 && !strcmp(a, b));
}

TEST(cli_errors_one_line_exit_1) {
    char out[65536];
    const char *cases[] = {
        "./hearth run -m /nonexistent.gguf 2>&1",
        "./hearth run 2>&1",
        "./hearth run -m x --temp abc 2>&1",
        "./hearth run -m x --bogus 2>&1",
        "./hearth frobnicate 2>&1",
        "./hearth inspect /nonexistent.gguf 2>&1",
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int rc = run_cmd(cases[i], out, sizeof(out));
        EXPECT_MSG(rc == 1, "%s: exit %d", cases[i], rc);
        size_t nl = 0;
        for (char *p = out; *p; p++) nl += *p == '\n';
        EXPECT_MSG(nl == 1 && strlen(out) > 10, "%s: want one line, got '%s'", cases[i], out);
    }
    const char *m = test_model_path("stories/stories260K.gguf");
    if (!m) return;
    char cmd[8192];
    snprintf(cmd, sizeof(cmd), "./hearth run -m %s --ids 1,2,99999 2>&1", m);
    EXPECT_EQ_INT(run_cmd(cmd, out, sizeof(out)), 1);
    EXPECT_MSG(strstr(out, "99999") != NULL, "got '%s'", out);
    snprintf(cmd, sizeof(cmd), "./hearth run -m %s -c 4 --ids 1,2,3,4,5,6 2>&1", m);
    EXPECT_EQ_INT(run_cmd(cmd, out, sizeof(out)), 1);
    EXPECT_MSG(strstr(out, "context") != NULL, "got '%s'", out);
}

/* hearth synth writes files that load and run, with the preset's quantization mix. */
TEST(cli_synth_tiny_models_load_and_run) {
    const char *presets[] = {"qwen3-tiny", "qwen3moe-tiny", "qwen2-tiny", "llama-tiny"};
    const char *types[] = {"F32", "Q4_K_M", "Q8_0", "Q6_K"};
    for (size_t i = 0; i < 4; i++) {
        char path[1024], cmd[2048], out[4096];
        snprintf(path, sizeof(path), "%s/synth-%s-%s.gguf", test_tmp_dir(), presets[i], types[i]);
        snprintf(cmd, sizeof(cmd), "./hearth synth --preset %s --type %s -o %s -t 2 2>&1",
                 presets[i], types[i], path);
        int rc = run_cmd(cmd, out, sizeof(out));
        ASSERT_MSG(rc == 0, "%s: %s", cmd, out);
        struct error err = {0};
        struct engine *e = NULL;
        ASSERT_MSG(engine_open(&e, path, NULL, &err) == 0, "%s: %s", path, err.msg);
        struct session *s = NULL;
        ASSERT(session_create(&s, e, NULL, &err) == 0);
        int32_t ids[4] = {1, 300, 301, 302};
        EXPECT(session_eval(s, ids, 4, NULL, &err) == 0);
        const float *l = session_logits(s);
        int finite = 1;
        for (int j = 0; j < 512; j++) finite &= l[j] == l[j] && l[j] > -1e30f && l[j] < 1e30f;
        EXPECT_MSG(finite, "%s: non-finite logits", path);
        session_free(s);
        engine_close(e);
        /* the mix: Q4_K_M puts Q6_K on the head (tied embeddings here) and attn_v of layer 0 */
        if (!strcmp(types[i], "Q4_K_M")) {
            struct gguf *g = NULL;
            ASSERT(gguf_open(&g, path, &err) == 0);
            const struct gguf_tensor_info *t = gguf_find_tensor(g, "blk.0.ffn_gate_exps.weight");
            EXPECT(t && t->type == 12 /* Q4_K */);
            t = gguf_find_tensor(g, "blk.0.ffn_down_exps.weight");
            EXPECT(t && t->type == 12);
            t = gguf_find_tensor(g, "blk.1.ffn_down_exps.weight");
            EXPECT(t && t->type == 14 /* Q6_K: the last eighth of the layers, as llama.cpp */);
            t = gguf_find_tensor(g, "blk.1.attn_v.weight");
            EXPECT(t && t->type == 8 /* Q8_0: llama.cpp's rule for models with 8 experts */);
            t = gguf_find_tensor(g, "blk.0.ffn_norm.weight");
            EXPECT(t && t->type == 0);
            t = gguf_find_tensor(g, "blk.0.ffn_gate_inp.weight");
            EXPECT(t && t->type == 0 /* routers stay F32 */);
            int64_t ft = 0;
            EXPECT(gguf_get_int(g, "general.file_type", &ft) == 0 && ft == 15);
            gguf_close(g);
        }
        remove(path);
    }
    /* same seed, different thread counts: byte-identical files */
    char cmd[8192], out[4096], p1[512], p2[512];
    snprintf(p1, sizeof(p1), "%s/s1.gguf", test_tmp_dir());
    snprintf(p2, sizeof(p2), "%s/s2.gguf", test_tmp_dir());
    snprintf(cmd, sizeof(cmd),
             "./hearth synth --preset qwen3-tiny --type F32 -o %s -t 1 2>&1 && "
             "./hearth synth --preset qwen3-tiny --type F32 -o %s -t 2 2>&1 && cmp %s %s",
             p1, p2, p1, p2);
    EXPECT_MSG(run_cmd(cmd, out, sizeof(out)) == 0, "synth not deterministic across threads: %s",
               out);
    remove(p1);
    remove(p2);
    EXPECT(run_cmd("./hearth synth --preset nope -o /dev/null 2>&1", out, sizeof(out)) == 1);
}

/* A tensor type hearth cannot compute with is refused by name at load time. */
TEST(cli_unsupported_tensor_type_refused) {
    const char *src = test_model_path("synthetic/qwen3-f32.gguf");
    if (!src) SKIP_TEST("../shared/models/synthetic not found");
    struct error err = {0};
    struct gguf *g = NULL;
    ASSERT(gguf_open(&g, src, &err) == 0);
    struct gguf_writer *w = NULL;
    ASSERT(gguf_writer_create(&w, &err) == 0);
    for (int64_t i = 0; i < gguf_n_kv(g); i++) EXPECT(gguf_writer_copy_kv(w, g, i) == 0);
    void *junk = mem_calloc(1, 1 << 20);
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        const struct gguf_tensor_info *t = gguf_tensor(g, i);
        if (!strcmp(t->name, "blk.0.attn_q.weight")) { /* IQ2_XXS: 66 bytes per 256 values */
            uint64_t nb = (uint64_t)(t->ne[0] / 256) * 66 * (uint64_t)t->ne[1];
            EXPECT(gguf_writer_add_tensor(w, t->name, 16, t->n_dims, t->ne, junk, nb) == 0);
        } else {
            EXPECT(gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne, t->data,
                                          t->n_bytes) == 0);
        }
    }
    char path[4096];
    snprintf(path, sizeof(path), "%s/iq2.gguf", test_tmp_dir());
    ASSERT(gguf_writer_write_file(w, path, &err) == 0);
    gguf_writer_free(w);
    gguf_close(g);
    mem_free(junk);
    struct engine *e = NULL;
    EXPECT(engine_open(&e, path, NULL, &err) == ERR_UNSUPPORTED);
    EXPECT_MSG(strstr(err.msg, "IQ2_XXS") && strstr(err.msg, "blk.0.attn_q.weight"), "msg: %s",
               err.msg);
    remove(path);
}
