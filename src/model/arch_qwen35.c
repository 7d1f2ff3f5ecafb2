/* arch_qwen35.c: `qwen35` and `qwen35moe` (Qwen3.5 / Qwen3.6 dense and MoE).
 *
 * Hybrid stacks: trunk layer il is a Gated DeltaNet (linear attention, "recurrent") layer iff
 * (il+1) % full_attention_interval != 0 (or attention.recurrent_layers says so), else a gated
 * full-attention layer. Both kinds sit in the same pre-norm block, whose pre-FFN norm is called
 * post_attention_norm in these files. The two archs differ only in the FFN: dense SwiGLU
 * (qwen35) or routed experts plus a sigmoid-gated shared expert (qwen35moe), so they share this
 * file. block_count includes the MTP ("nextn") blocks appended after the trunk; the trunk forward
 * never runs them: qwen35_forward_mtp runs the first one for speculative drafting.
 * Source of truth: llama.cpp src/models/qwen35.cpp, qwen35moe.cpp, delta-net-base.cpp and
 * ggml's CPU ssm_conv / l2_norm / gated_delta_net ops; architectures.md sections 5 and 6.
 */
#include "blocks.h"
#include "kv_cache.h"

#include <stdio.h>
#include <string.h>

/* ============================================================================================
 * Loading
 * Every tensor of every block is bound with its shape; norms and the small GDN parameters must
 * be F32 (the ops read them as floats). The head sizes are checked here so that the forward
 * pass has no error paths.
 * ============================================================================================ */

static int bind(struct model *m, const struct tensor **slot, int required, int n_dims,
                const int64_t *ne, struct error *err, const char *name, int il) {
    struct error e2 = {0};
    *slot = model_bind(m, required, n_dims, ne, &e2, "blk.%d.%s", il, name);
    if (!*slot && e2.code) return error_set(err, e2.code, "%s", e2.msg);
    return 0;
}

static int need_f32(const struct tensor *t, struct error *err) {
    if (t && t->type != DTYPE_F32)
        return error_set(err, ERR_UNSUPPORTED, "tensor %s must be F32 (is %s)", t->name,
                         dtype_name(t->type));
    return 0;
}

/* Gated full attention: attn_q holds query and gate, interleaved per head. */
static int bind_attention(struct model *m, int il, struct error *err) {
    const struct model_hparams *hp = model_hparams(m);
    struct layer *l = &model_layers(m)[il];
    const int64_t E = hp->n_embd, hd = hp->head_dim, q_dim = (int64_t)hp->n_head * hd;
    const int64_t kv_dim = (int64_t)hp->n_head_kv * hd;
    int rc;
    if ((rc = bind(m, &l->attn_q, 1, 2, (int64_t[]){E, 2 * q_dim}, err, "attn_q.weight", il)) ||
        (rc = bind(m, &l->attn_k, 1, 2, (int64_t[]){E, kv_dim}, err, "attn_k.weight", il)) ||
        (rc = bind(m, &l->attn_v, 1, 2, (int64_t[]){E, kv_dim}, err, "attn_v.weight", il)) ||
        (rc = bind(m, &l->attn_output, 1, 2, (int64_t[]){q_dim, E}, err, "attn_output.weight",
                   il)) ||
        (rc = bind(m, &l->attn_q_norm, 1, 1, (int64_t[]){hd}, err, "attn_q_norm.weight", il)) ||
        (rc = bind(m, &l->attn_k_norm, 1, 1, (int64_t[]){hd}, err, "attn_k_norm.weight", il)) ||
        (rc = need_f32(l->attn_q_norm, err)) || (rc = need_f32(l->attn_k_norm, err)))
        return rc;
    return 0;
}

static int bind_gdn(struct model *m, int il, struct error *err) {
    const struct model_hparams *hp = model_hparams(m);
    struct layer *l = &model_layers(m)[il];
    const int64_t E = hp->n_embd, hv = hp->ssm_dt_rank, V = hp->ssm_d_inner;
    const int64_t C = 2 * (int64_t)hp->ssm_n_group * hp->ssm_d_state + V, dv = V / hv;
    int rc;
    if ((rc = bind(m, &l->attn_qkv, 1, 2, (int64_t[]){E, C}, err, "attn_qkv.weight", il)) ||
        (rc = bind(m, &l->attn_gate, 1, 2, (int64_t[]){E, V}, err, "attn_gate.weight", il)) ||
        (rc = bind(m, &l->ssm_conv1d, 1, 2, (int64_t[]){hp->ssm_d_conv, C}, err,
                   "ssm_conv1d.weight", il)) ||
        (rc = bind(m, &l->ssm_dt, 1, 1, (int64_t[]){hv}, err, "ssm_dt.bias", il)) ||
        (rc = bind(m, &l->ssm_a, 1, 1, (int64_t[]){hv}, err, "ssm_a", il)) ||
        (rc = bind(m, &l->ssm_beta, 1, 2, (int64_t[]){E, hv}, err, "ssm_beta.weight", il)) ||
        (rc = bind(m, &l->ssm_alpha, 1, 2, (int64_t[]){E, hv}, err, "ssm_alpha.weight", il)) ||
        (rc = bind(m, &l->ssm_norm, 1, 1, (int64_t[]){dv}, err, "ssm_norm.weight", il)) ||
        (rc = bind(m, &l->ssm_out, 1, 2, (int64_t[]){V, E}, err, "ssm_out.weight", il)) ||
        (rc = need_f32(l->ssm_conv1d, err)) || (rc = need_f32(l->ssm_dt, err)) ||
        (rc = need_f32(l->ssm_a, err)) || (rc = need_f32(l->ssm_norm, err)))
        return rc;
    return 0;
}

static int bind_ffn(struct model *m, int il, int is_moe, struct error *err) {
    struct model_hparams *hp = model_hparams_mut(m);
    struct layer *l = &model_layers(m)[il];
    const int64_t E = hp->n_embd;
    int rc;
    if (!is_moe) {
        const int64_t F = hp->n_ff;
        if ((rc = bind(m, &l->ffn_gate, 1, 2, (int64_t[]){E, F}, err, "ffn_gate.weight", il)) ||
            (rc = bind(m, &l->ffn_up, 1, 2, (int64_t[]){E, F}, err, "ffn_up.weight", il)) ||
            (rc = bind(m, &l->ffn_down, 1, 2, (int64_t[]){F, E}, err, "ffn_down.weight", il)))
            return rc;
        return 0;
    }
    const int64_t F = hp->n_ff_exp, X = hp->n_expert;
    if ((rc = bind(m, &l->ffn_gate_inp, 1, 2, (int64_t[]){E, X}, err, "ffn_gate_inp.weight", il)) ||
        (rc = bind(m, &l->ffn_gate_exps, 1, 3, (int64_t[]){E, F, X}, err, "ffn_gate_exps.weight",
                   il)) ||
        (rc =
             bind(m, &l->ffn_up_exps, 1, 3, (int64_t[]){E, F, X}, err, "ffn_up_exps.weight", il)) ||
        (rc = bind(m, &l->ffn_down_exps, 1, 3, (int64_t[]){F, E, X}, err, "ffn_down_exps.weight",
                   il)))
        return rc;
    /* shared expert: all four tensors or none */
    const int64_t S = hp->n_ff_shexp > 0 ? hp->n_ff_shexp : -1;
    if ((rc = bind(m, &l->ffn_up_shexp, 0, 2, (int64_t[]){E, S}, err, "ffn_up_shexp.weight", il)))
        return rc;
    if (!l->ffn_up_shexp) return 0;
    if (hp->n_ff_shexp == 0) {
        if (l->ffn_up_shexp->ne[1] > (1 << 20))
            return error_set(err, ERR_FORMAT, "blk.%d.ffn_up_shexp.weight: width too large", il);
        hp->n_ff_shexp = (int)l->ffn_up_shexp->ne[1];
    }
    const int64_t S2 = hp->n_ff_shexp;
    if ((rc = bind(m, &l->ffn_gate_shexp, 1, 2, (int64_t[]){E, S2}, err, "ffn_gate_shexp.weight",
                   il)) ||
        (rc = bind(m, &l->ffn_down_shexp, 1, 2, (int64_t[]){S2, E}, err, "ffn_down_shexp.weight",
                   il)) ||
        (rc = bind(m, &l->ffn_gate_inp_shexp, 1, 1, (int64_t[]){E}, err,
                   "ffn_gate_inp_shexp.weight", il)))
        return rc;
    return 0;
}

static int bind_nextn(struct model *m, int il, struct error *err) {
    const struct model_hparams *hp = model_hparams(m);
    struct layer *l = &model_layers(m)[il];
    const int64_t E = hp->n_embd, nv = hp->n_vocab;
    int rc;
    if ((rc = bind(m, &l->nextn_eh_proj, 1, 2, (int64_t[]){2 * E, E}, err, "nextn.eh_proj.weight",
                   il)) ||
        (rc = bind(m, &l->nextn_enorm, 1, 1, (int64_t[]){E}, err, "nextn.enorm.weight", il)) ||
        (rc = bind(m, &l->nextn_hnorm, 1, 1, (int64_t[]){E}, err, "nextn.hnorm.weight", il)) ||
        (rc = bind(m, &l->nextn_shared_head_norm, 0, 1, (int64_t[]){E}, err,
                   "nextn.shared_head_norm.weight", il)) ||
        (rc = bind(m, &l->nextn_embed_tokens, 0, 2, (int64_t[]){E, nv}, err,
                   "nextn.embed_tokens.weight", il)) ||
        (rc = bind(m, &l->nextn_shared_head_head, 0, 2, (int64_t[]){E, nv}, err,
                   "nextn.shared_head_head.weight", il)) ||
        (rc = need_f32(l->nextn_enorm, err)) || (rc = need_f32(l->nextn_hnorm, err)) ||
        (rc = need_f32(l->nextn_shared_head_norm, err)))
        return rc;
    return 0;
}

/* Which trunk layers are recurrent: attention.recurrent_layers (one bool per block) when the
 * file has it, else every layer but each full_attention_interval-th. MTP blocks never are. */
static int load_layer_pattern(struct model *m, struct error *err) {
    struct model_hparams *hp = model_hparams_mut(m);
    const struct gguf *g = model_gguf(m);
    char key[160];
    snprintf(key, sizeof(key), "%s.attention.recurrent_layers", hp->arch);
    int64_t ki = gguf_find_key(g, key);
    int interval = 4, rc;
    if ((rc = model_get_int(m, "full_attention_interval", 0, 4, 1, MODEL_MAX_LAYERS, &interval,
                            err)))
        return rc;
    if (ki >= 0 &&
        (gguf_kv_type(g, ki) != GGUF_TYPE_ARRAY || gguf_kv_arr_type(g, ki) == GGUF_TYPE_STRING ||
         gguf_kv_arr_n(g, ki) != (uint64_t)hp->n_layer_all))
        return error_set(err, ERR_FORMAT, "key %s must be an array of %d flags", key,
                         hp->n_layer_all);
    hp->n_layer_recurrent = 0;
    for (int il = 0; il < hp->n_layer_all; il++) {
        int rec = ki >= 0 ? gguf_kv_arr_float(g, ki, (uint64_t)il) != 0 : (il + 1) % interval != 0;
        hp->is_recurrent[il] = (uint8_t)(il < hp->n_layer && rec);
        hp->n_layer_recurrent += hp->is_recurrent[il];
    }
    return 0;
}

static int qwen35_load_hparams(struct model *m, int is_moe, struct error *err) {
    struct model_hparams *hp = model_hparams_mut(m);
    /* IMROPE with sections [11, 11, 10, 0]: every section carries the token position for text,
     * so it is NEOX RoPE on the first rope.dimension_count dims. */
    int rc = model_load_common_hparams(m, ROPE_MODE_NEOX, err);
    if (rc || (rc = model_get_int(m, "ssm.conv_kernel", 1, 0, 1, 64, &hp->ssm_d_conv, err)) ||
        (rc = model_get_int(m, "ssm.state_size", 1, 0, 1, 1024, &hp->ssm_d_state, err)) ||
        (rc = model_get_int(m, "ssm.group_count", 1, 0, 1, 4096, &hp->ssm_n_group, err)) ||
        (rc = model_get_int(m, "ssm.time_step_rank", 1, 0, 1, 4096, &hp->ssm_dt_rank, err)) ||
        (rc = model_get_int(m, "ssm.inner_size", 1, 0, 1, 1 << 20, &hp->ssm_d_inner, err)) ||
        (rc = model_get_int(m, "nextn_predict_layers", 0, 0, 0, hp->n_layer_all - 1, &hp->n_nextn,
                            err)))
        return rc;
    if (hp->ssm_dt_rank % hp->ssm_n_group || hp->ssm_d_inner % hp->ssm_dt_rank ||
        hp->ssm_d_inner / hp->ssm_dt_rank > 1024)
        return error_set(err, ERR_FORMAT,
                         "bad Gated DeltaNet sizes: %d value heads, %d key heads, inner size %d",
                         hp->ssm_dt_rank, hp->ssm_n_group, hp->ssm_d_inner);
    if (hp->head_dim_v != hp->head_dim)
        return error_set(err, ERR_UNSUPPORTED, "key and value head sizes differ (%d, %d)",
                         hp->head_dim, hp->head_dim_v);
    hp->n_layer = hp->n_layer_all - hp->n_nextn;
    if (!is_moe) return model_get_int(m, "feed_forward_length", 1, 0, 1, 1 << 20, &hp->n_ff, err);
    if ((rc = model_get_int(m, "expert_count", 1, 0, 1, 4096, &hp->n_expert, err)) ||
        (rc = model_get_int(m, "expert_used_count", 1, 0, 1, hp->n_expert, &hp->n_expert_used,
                            err)) ||
        (rc = model_get_int(m, "expert_feed_forward_length", 1, 0, 1, 1 << 20, &hp->n_ff_exp,
                            err)) ||
        (rc = model_get_int(m, "expert_shared_feed_forward_length", 0, 0, 0, 1 << 20,
                            &hp->n_ff_shexp, err)))
        return rc;
    return 0;
}

static int qwen35_load_common(struct model *m, int is_moe, struct error *err) {
    struct model_hparams *hp = model_hparams_mut(m);
    int rc;
    if ((rc = qwen35_load_hparams(m, is_moe, err)) || (rc = load_layer_pattern(m, err)) ||
        (rc = block_bind_io(m, err)))
        return rc;
    for (int il = 0; il < hp->n_layer_all; il++) {
        struct layer *l = &model_layers(m)[il];
        const int64_t E = hp->n_embd;
        if ((rc = bind(m, &l->attn_norm, 1, 1, (int64_t[]){E}, err, "attn_norm.weight", il)) ||
            (rc = bind(m, &l->post_attention_norm, 1, 1, (int64_t[]){E}, err,
                       "post_attention_norm.weight", il)) ||
            (rc = need_f32(l->attn_norm, err)) || (rc = need_f32(l->post_attention_norm, err)) ||
            (rc = hp->is_recurrent[il] ? bind_gdn(m, il, err) : bind_attention(m, il, err)) ||
            (rc = bind_ffn(m, il, is_moe, err)) ||
            (rc = il >= hp->n_layer ? bind_nextn(m, il, err) : 0))
            return rc;
    }
    return 0;
}

static int qwen35_load(struct model *m, struct error *err) {
    return qwen35_load_common(m, 0, err);
}

static int qwen35moe_load(struct model *m, struct error *err) {
    return qwen35_load_common(m, 1, err);
}

/* ============================================================================================
 * Forward pass
 * The projections run over the whole batch; the conv and the recurrence run once per run of
 * tokens of one sequence, on that sequence's state (a run starting at position 0 starts from
 * the zero state, whatever the buffer holds). Snapshots requested by the batch are written by
 * the ops as they pass the token.
 * ============================================================================================ */

/* Gated DeltaNet layer il: in [n][n_embd] -> out [n][n_embd]. */
static void gdn_block(struct model *m, int il, const struct batch *b, const float *in, float *out) {
    const struct model_hparams *hp = model_hparams(m);
    const struct layer *l = &model_layers(m)[il];
    struct backend *be = model_backend(m);
    struct scratch *sc = model_scratch(m);
    int n = b->n_tokens, hk = hp->ssm_n_group, hv = hp->ssm_dt_rank, dk = hp->ssm_d_state;
    int V = hp->ssm_d_inner, dv = V / hv, C = 2 * hk * dk + V;

    model_matmul_multi(
        m, 4, (const struct tensor *[]){l->attn_qkv, l->attn_gate, l->ssm_beta, l->ssm_alpha}, NULL,
        in, (float *[]){sc->mix, sc->ssm_z, sc->ssm_beta, sc->ssm_alpha}, n);
    for (int i0 = 0; i0 < n;) {
        int i1 = i0 + 1;
        while (i1 < n && b->seq[i1] == b->seq[i0]) i1++;
        struct kv_cache *kv = b->kv[b->seq[i0]];
        size_t off = (size_t)kv->rs_index[il] * (size_t)kv->rs_layer_floats;
        float *const *snap = b->rs_snap ? b->rs_snap + i0 : NULL;
        struct ssm_conv_args ca = {
            .x = sc->mix + (int64_t)i0 * C,
            .x_stride = C,
            .n_tokens = i1 - i0,
            .n_ch = C,
            .d_conv = hp->ssm_d_conv,
            .w = (const float *)l->ssm_conv1d->data,
            .state = kv_cache_rs_conv(kv, il),
            .reset = b->pos[i0] == 0,
            .out = sc->conv + (int64_t)i0 * C,
            .snap = snap,
            .snap_off = off,
        };
        be->ssm_conv(be, &ca);
        struct gdn_args ga = {
            .qkv = sc->conv + (int64_t)i0 * C,
            .qkv_stride = C,
            .alpha = sc->ssm_alpha + (int64_t)i0 * hv,
            .beta = sc->ssm_beta + (int64_t)i0 * hv,
            .ssm_a = (const float *)l->ssm_a->data,
            .dt_bias = (const float *)l->ssm_dt->data,
            .n_tokens = i1 - i0,
            .n_head_k = hk,
            .n_head_v = hv,
            .d_k = dk,
            .d_v = dv,
            .eps = hp->rms_eps,
            .state = kv_cache_rs_ssm(kv, il),
            .reset = b->pos[i0] == 0,
            .out = sc->ssm_o + (int64_t)i0 * V,
            .snap = snap,
            .snap_off = off + (size_t)kv->rs_conv_floats,
        };
        be->gated_delta_net(be, &ga);
        i0 = i1;
    }
    /* gated RMSNorm per head: norm(o_h; ssm_norm) * silu(z_h) */
    be->rms_norm(be, sc->ssm_o, dv, l->ssm_norm, sc->ssm_o, dv, n * hv, dv, hp->rms_eps);
    be->swiglu(be, sc->ssm_z, sc->ssm_o, sc->ssm_o, (int64_t)n * V);
    model_matmul(m, l->ssm_out, NULL, sc->ssm_o, out, n);
}

/* Gated full attention of layer il: per head, the query is normed and rotated, the attention
 * output is multiplied by sigmoid(gate) before the output projection. */
static void gated_attention(struct model *m, int il, const struct batch *b, const float *in,
                            float *out) {
    const struct model_hparams *hp = model_hparams(m);
    const struct layer *l = &model_layers(m)[il];
    struct backend *be = model_backend(m);
    struct scratch *sc = model_scratch(m);
    int n = b->n_tokens, hd = hp->head_dim, nh = hp->n_head, nkv = hp->n_head_kv;

    /* mix row t = [q_0, gate_0, q_1, gate_1, ...]: rows of one head sit 2*hd apart */
    model_matmul_multi(m, 3, (const struct tensor *[]){l->attn_q, l->attn_k, l->attn_v}, NULL, in,
                       (float *[]){sc->mix, sc->k, sc->v}, n);
    be->rms_norm(be, sc->mix, 2 * hd, l->attn_q_norm, sc->q, hd, n * nh, hd, hp->rms_eps);
    be->rms_norm(be, sc->k, hd, l->attn_k_norm, sc->k, hd, n * nkv, hd, hp->rms_eps);
    be->rope(be, sc->q, nh * hd, b->pos, n, nh, hd, &hp->rope);
    be->rope(be, sc->k, nkv * hd, b->pos, n, nkv, hd, &hp->rope);
    block_attend(m, il, b);
    be->sigmoid_mul(be, sc->attn, sc->mix + hd, 2 * hd, 0, sc->attn, n * nh, hd);
    model_matmul(m, l->attn_output, NULL, sc->attn, out, n);
}

/* qwen35moe FFN: routed experts + sigmoid(ffn_gate_inp_shexp . x) * SharedFFN(x). */
static void moe_shared(struct model *m, const struct layer *l, int n, const float *in, float *out) {
    const struct model_hparams *hp = model_hparams(m);
    struct backend *be = model_backend(m);
    struct scratch *sc = model_scratch(m);
    int E = hp->n_embd;
    block_moe(m, l, n, in, out);
    if (!l->ffn_up_shexp) return;
    model_matmul_multi(
        m, 3, (const struct tensor *[]){l->ffn_gate_shexp, l->ffn_up_shexp, l->ffn_gate_inp_shexp},
        NULL, in, (float *[]){sc->ffn_a, sc->ffn_b, sc->shexp_gate}, n);
    be->swiglu(be, sc->ffn_a, sc->ffn_b, sc->ffn_a, (int64_t)n * hp->n_ff_shexp);
    model_matmul(m, l->ffn_down_shexp, NULL, sc->ffn_a, sc->y2, n);
    be->sigmoid_mul(be, sc->y2, sc->shexp_gate, 1, 1, sc->y2, n, E);
    be->add(be, out, sc->y2, out, (int64_t)n * E);
}

/* One pre-norm block on scratch x (trunk layers and the MTP block share it). */
static void qwen35_layer(struct model *m, int il, const struct batch *b) {
    const struct model_hparams *hp = model_hparams(m);
    const struct layer *l = &model_layers(m)[il];
    struct backend *be = model_backend(m);
    struct scratch *sc = model_scratch(m);
    int n = b->n_tokens, E = hp->n_embd;
    be->rms_norm(be, sc->x, E, l->attn_norm, sc->xn, E, n, E, hp->rms_eps);
    if (hp->is_recurrent[il])
        gdn_block(m, il, b, sc->xn, sc->y);
    else
        gated_attention(m, il, b, sc->xn, sc->y);
    be->add(be, sc->x, sc->y, sc->x, (int64_t)n * E);
    be->rms_norm(be, sc->x, E, l->post_attention_norm, sc->xn, E, n, E, hp->rms_eps);
    if (l->ffn_gate_inp)
        moe_shared(m, l, n, sc->xn, sc->y);
    else
        block_ffn(m, l, n, sc->xn, sc->y);
    be->add(be, sc->x, sc->y, sc->x, (int64_t)n * E);
}

static void qwen35_forward(struct model *m, const struct batch *b) {
    const struct model_hparams *hp = model_hparams(m);
    block_embed(m, b);
    for (int il = 0; il < hp->n_layer; il++) /* the trunk only: MTP blocks are not run */
        qwen35_layer(m, il, b);
    if (b->hidden) block_hidden(m, b, *model_output_norm(m)); /* the MTP seed h_t */
    if (b->n_outputs > 0) block_output(m, b);
}

/* ============================================================================================
 * MTP ("nextn") block
 * llama.cpp graph_mtp for qwen35/qwen35moe: for token x at position p and the trunk's final
 * normed hidden state h at p-1, c = eh_proj [RMSNorm(embed(x); enorm) ; RMSNorm(h; hnorm)]
 * (embedding first), then one gated full-attention block with the MTP layer's own KV cache
 * (same positions as the trunk) and its FFN, then RMSNorm(shared_head_norm, else output_norm)
 * and the LM head (shared_head_head, else output): logits for the token after x. The normed
 * output is also the h of the next chained draft. Only the first MTP block is run (llama.cpp
 * supports exactly one for these architectures).
 * ============================================================================================ */

static void qwen35_forward_mtp(struct model *m, const struct batch *b) {
    const struct model_hparams *hp = model_hparams(m);
    struct backend *be = model_backend(m);
    struct scratch *sc = model_scratch(m);
    int il = hp->n_layer, n = b->n_tokens, E = hp->n_embd;
    const struct layer *l = &model_layers(m)[il];
    const struct tensor *embd = l->nextn_embed_tokens ? l->nextn_embed_tokens : *model_tok_embd(m);
    const struct tensor *norm =
        l->nextn_shared_head_norm ? l->nextn_shared_head_norm : *model_output_norm(m);
    const struct tensor *head =
        l->nextn_shared_head_head ? l->nextn_shared_head_head : *model_output(m);

    be->get_rows(be, embd, b->tokens, n, sc->x);
    be->rms_norm(be, sc->x, E, l->nextn_enorm, sc->mtp_in, 2 * E, n, E, hp->rms_eps);
    be->upload(be, sc->xn, b->h_in, (size_t)n * (size_t)E * sizeof(float));
    be->rms_norm(be, sc->xn, E, l->nextn_hnorm, sc->mtp_in + E, 2 * E, n, E, hp->rms_eps);
    model_matmul(m, l->nextn_eh_proj, NULL, sc->mtp_in, sc->x, n);
    qwen35_layer(m, il, b);
    if (b->hidden) block_hidden(m, b, norm);
    if (b->n_outputs > 0) block_output_head(m, b, norm, head);
}

const struct arch arch_qwen35 = {"qwen35", qwen35_load, qwen35_forward, qwen35_forward_mtp};
const struct arch arch_qwen35moe = {"qwen35moe", qwen35moe_load, qwen35_forward,
                                    qwen35_forward_mtp};
