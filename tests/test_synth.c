/* test_synth.c: `hearth synth` for the hybrid Qwen3.5/3.6 architectures.
 *
 * The tiny presets must reproduce the tensor list (names, shapes, types) and the hyper-parameters
 * of the files in ../shared/models/synthetic, which llama.cpp loads: qwen35-f32 and qwen35-mtp-f32
 * (F32), and qwen35moe-q4_k_m, whose per-tensor types llama-quantize chose. The real-shape
 * presets are run with few layers and small widths: they must load, and speculative decoding
 * with their MTP block must leave greedy output unchanged (this is also the only MoE MTP
 * file the suite has).
 */
#include "test.h"

#include "../src/base/mem.h"
#include "../src/engine/engine.h"
#include "../src/gguf/gguf.h"

#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

static int synth_rc(const char *args, const char *path, int must_succeed) {
    char cmd[2048], out[4096];
    snprintf(cmd, sizeof(cmd), "./hearth synth %s -o %s -t 2 2>&1", args, path);
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    size_t n = fread(out, 1, sizeof(out) - 1, p);
    out[n] = 0;
    int st = pclose(p);
    int rc = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    if (rc && must_succeed) test_fail(__FILE__, __LINE__, "%s: %s", cmd, out);
    return rc;
}

static int synth(const char *args, const char *path) {
    return synth_rc(args, path, 1);
}

/* Every tensor of want is in got with the same type and shape, and the counts match; every
 * "<arch>." integer key of want has the same value in got. Returns the number of mismatches. */
static int same_layout(const char *got_path, const char *want_path) {
    struct error err = {0};
    struct gguf *got = NULL, *want = NULL;
    if (gguf_open(&got, got_path, &err) || gguf_open(&want, want_path, &err)) {
        test_fail(__FILE__, __LINE__, "%s", err.msg);
        gguf_close(got);
        return 1;
    }
    int bad = 0;
    if (gguf_n_tensors(got) != gguf_n_tensors(want)) {
        test_fail(__FILE__, __LINE__, "%lld tensors, want %lld", (long long)gguf_n_tensors(got),
                  (long long)gguf_n_tensors(want));
        bad++;
    }
    for (int64_t i = 0; i < gguf_n_tensors(want); i++) {
        const struct gguf_tensor_info *w = gguf_tensor(want, i);
        const struct gguf_tensor_info *g = gguf_find_tensor(got, w->name);
        int same = g && g->type == w->type && g->n_dims == w->n_dims;
        for (int d = 0; same && d < GGUF_MAX_DIMS; d++) same = g->ne[d] == w->ne[d];
        if (!same) {
            test_fail(__FILE__, __LINE__,
                      "%s: type %d [%lld, %lld, %lld], want %d [%lld, %lld, %lld]", w->name,
                      g ? (int)g->type : -1, g ? (long long)g->ne[0] : 0,
                      g ? (long long)g->ne[1] : 0, g ? (long long)g->ne[2] : 0, (int)w->type,
                      (long long)w->ne[0], (long long)w->ne[1], (long long)w->ne[2]);
            bad++;
        }
    }
    struct gguf_str arch;
    if (gguf_get_str(want, "general.architecture", &arch) == 0) {
        for (int64_t i = 0; i < gguf_n_kv(want); i++) {
            struct gguf_str k = gguf_kv_key(want, i);
            char key[160];
            if (k.len >= sizeof(key) || k.len <= arch.len || memcmp(k.data, arch.data, arch.len))
                continue;
            memcpy(key, k.data, k.len);
            key[k.len] = 0;
            int64_t a = 0, b = 0;
            if (gguf_get_int(want, key, &b)) continue; /* floats, arrays */
            if (gguf_get_int(got, key, &a) || a != b) {
                test_fail(__FILE__, __LINE__, "%s = %lld, want %lld", key, (long long)a,
                          (long long)b);
                bad++;
            }
        }
    }
    gguf_close(got);
    gguf_close(want);
    return bad;
}

TEST(synth_qwen35_tiny_matches_shared_files) {
    const char *w1 = test_model_path("synthetic/qwen35-f32.gguf");
    if (!w1) SKIP_TEST("../shared/models/synthetic not found");
    char want[4096], path[1024];
    snprintf(want, sizeof(want), "%s", w1);
    snprintf(path, sizeof(path), "%s/synth-qwen35.gguf", test_tmp_dir());
    ASSERT(synth("--preset qwen35-tiny --type F32", path) == 0);
    EXPECT_EQ_INT(same_layout(path, want), 0);
    snprintf(want, sizeof(want), "%s", test_model_path("synthetic/qwen35-mtp-f32.gguf"));
    ASSERT(synth("--preset qwen35-tiny --nextn 1 --type F32", path) == 0);
    EXPECT_EQ_INT(same_layout(path, want), 0);
    /* llama-quantize's Q4_K_M mix: Q4_K for attn_qkv/attn_gate/ssm_out/ssm_alpha/ssm_beta,
     * Q6_K for the tied head and the V-like tensor and ffn_down(_shexp/_exps) of the last block,
     * F32 for norms, routers, ssm_conv1d/ssm_a/ssm_dt and the shared-expert gate */
    snprintf(want, sizeof(want), "%s", test_model_path("synthetic/qwen35moe-q4_k_m.gguf"));
    ASSERT(synth("--preset qwen35moe-tiny --type Q4_K_M", path) == 0);
    EXPECT_EQ_INT(same_layout(path, want), 0);
    remove(path);
}

/* Greedy output with --spec mtp equals plain decoding on a file made by synth. */
static void check_mtp_file(const char *path, int n_layer, int n_recurrent) {
    struct error err = {0};
    struct engine *e = NULL;
    ASSERT_MSG(engine_open(&e, path, NULL, &err) == 0, "%s: %s", path, err.msg);
    struct engine_info info;
    engine_get_info(e, &info);
    EXPECT_EQ_INT(info.n_layer, n_layer);
    EXPECT_EQ_INT(info.n_layer_recurrent, n_recurrent);
    EXPECT(info.n_nextn == 1 && info.has_mtp);
    enum { N = 12 };
    int32_t prompt[8] = {1, 300, 301, 302, 303, 7, 8, 9}, out[2][N];
    const enum spec_mode modes[2] = {SPEC_NONE, SPEC_MTP};
    for (int m = 0; m < 2; m++) {
        struct session *s = NULL;
        struct sampler *smp = NULL;
        struct generator *g = NULL;
        struct sampler_params sp;
        sampler_params_default(&sp);
        sp.temperature = 0;
        struct spec_params spp;
        spec_params_default(&spp);
        spp.mode = modes[m];
        spp.adaptive = 0;
        int got = 0;
        if (session_create(&s, e, NULL, &err) || sampler_create(&smp, &sp, info.n_vocab, &err) ||
            generator_create(&g, s, smp, &spp, &err) || generator_prefill(g, prompt, 8, &err))
            test_fail(__FILE__, __LINE__, "%s", err.msg);
        while (g && got < N) {
            int k = generator_next(g, out[m] + got, N - got, &err);
            if (k <= 0) {
                test_fail(__FILE__, __LINE__, "%s", err.msg);
                break;
            }
            got += k;
        }
        if (g && modes[m] == SPEC_MTP) {
            struct spec_stats st;
            generator_stats(g, &st);
            EXPECT(st.n_drafted_by[SPEC_SRC_MTP] > 0);
        }
        generator_free(g);
        sampler_free(smp);
        session_free(s);
        EXPECT_MSG(got == N && !memcmp(out[0], out[m], sizeof(out[0])), "%s: %s differs", path,
                   spec_mode_name(modes[m]));
    }
    engine_close(e);
}

/* The Qwen3.6 presets at their real head and state geometry, with 2 trunk blocks (a Gated
 * DeltaNet and an attention block) and the MTP block, at reduced width and vocabulary. */
TEST(synth_qwen36_presets_load_and_run) {
    char path[1024];
    snprintf(path, sizeof(path), "%s/synth-qwen36.gguf", test_tmp_dir());
    ASSERT(synth("--preset qwen3.6-27b --layers 2 --attn-interval 2 --nextn 1 --n-vocab 1024 "
                 "--n-embd 256 --n-ff 512 --std 0.05 --type Q8_0",
                 path) == 0);
    check_mtp_file(path, 2, 1);
    ASSERT(synth("--preset qwen3.6-35b-a3b --layers 4 --nextn 1 --n-vocab 1024 --n-embd 256 "
                 "--n-expert 16 --std 0.05 --type Q4_K_M",
                 path) == 0);
    check_mtp_file(path, 4, 3);
    /* the real mix on the MoE preset: the MTP block counts as a block (n_layer 5) */
    struct error err = {0};
    struct gguf *g = NULL;
    ASSERT(gguf_open(&g, path, &err) == 0);
    /* use_more_bits(i, 5): blocks 2 and 4; the V-like tensor of each block is attn_qkv or
     * attn_v */
    const char *names[] = {
        "blk.4.attn_v.weight",   "blk.4.ffn_down_exps.weight",  "output.weight",
        "blk.2.attn_qkv.weight", "blk.2.ffn_down_shexp.weight", "blk.0.attn_qkv.weight",
        "blk.3.attn_v.weight",   "blk.3.ffn_down_exps.weight"};
    const int types[] = {14, 14, 14, 14, 14, 12, 12, 12}; /* Q6_K, Q4_K */
    for (int i = 0; i < 8; i++) {
        const struct gguf_tensor_info *t = gguf_find_tensor(g, names[i]);
        EXPECT_MSG(t && (int)t->type == types[i], "%s: %d, want %d", names[i],
                   t ? (int)t->type : -1, types[i]);
    }
    const struct gguf_tensor_info *t = gguf_find_tensor(g, "blk.4.nextn.eh_proj.weight");
    EXPECT(t && t->type == 12 /* Q4_K */ && t->ne[0] == 512 && t->ne[1] == 256);
    gguf_close(g);
    remove(path);
    /* shapes that do not fit */
    EXPECT(synth_rc("--preset qwen3-tiny --nextn 1", path, 0) == 1);
    EXPECT(synth_rc("--preset qwen35-tiny --attn-interval 0", path, 0) == 1);
}
