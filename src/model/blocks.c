/* blocks.c: shared forward-pass blocks (see blocks.h). */
#include "blocks.h"

#include "kv_cache.h"

#include <string.h>

void block_embed(struct model *m, const struct batch *b) {
    struct backend *be = model_backend(m);
    be->get_rows(be, *model_tok_embd(m), b->tokens, b->n_tokens, model_scratch(m)->x);
}

void block_attention(struct model *m, int il, const struct batch *b, const float *in, float *out) {
    const struct model_hparams *hp = model_hparams(m);
    const struct layer *l = &model_layers(m)[il];
    struct backend *be = model_backend(m);
    struct scratch *sc = model_scratch(m);
    int n = b->n_tokens, hd = hp->head_dim;
    int q_dim = hp->n_head * hd, k_dim = hp->n_head_kv * hd;

    model_matmul_multi(m, 3, (const struct tensor *[]){l->attn_q, l->attn_k, l->attn_v},
                       (const struct tensor *[]){l->attn_q_bias, l->attn_k_bias, l->attn_v_bias},
                       in, (float *[]){sc->q, sc->k, sc->v}, n);
    if (l->attn_q_norm) /* per-head RMSNorm (qwen3): rows of head_dim */
        be->rms_norm(be, sc->q, hd, l->attn_q_norm, sc->q, hd, n * hp->n_head, hd, hp->rms_eps);
    if (l->attn_k_norm)
        be->rms_norm(be, sc->k, hd, l->attn_k_norm, sc->k, hd, n * hp->n_head_kv, hd, hp->rms_eps);
    be->rope(be, sc->q, q_dim, b->pos, n, hp->n_head, hd, &hp->rope);
    be->rope(be, sc->k, k_dim, b->pos, n, hp->n_head_kv, hd, &hp->rope);
    block_attend(m, il, b);
    model_matmul(m, l->attn_output, l->attn_output_bias, sc->attn, out, n);
}

void block_attend(struct model *m, int il, const struct batch *b) {
    const struct model_hparams *hp = model_hparams(m);
    struct backend *be = model_backend(m);
    struct scratch *sc = model_scratch(m);
    int n = b->n_tokens, hd = hp->head_dim;
    int q_dim = hp->n_head * hd, k_dim = hp->n_head_kv * hd, v_dim = hp->n_head_kv * hp->head_dim_v;
    /* One KV store + attention call per run of tokens of the same sequence. */
    for (int i0 = 0; i0 < n;) {
        int i1 = i0 + 1;
        while (i1 < n && b->seq[i1] == b->seq[i0]) i1++;
        struct kv_cache *kv = b->kv[b->seq[i0]];
        be->kv_store(be, kv->k[il], kv->v[il], kv->type, k_dim, sc->k + (int64_t)i0 * k_dim,
                     sc->v + (int64_t)i0 * v_dim, k_dim, b->pos[i0], i1 - i0);
        struct attn_args a = {
            .q = sc->q + (int64_t)i0 * q_dim,
            .q_stride = q_dim,
            .k = kv->k[il],
            .v = kv->v[il],
            .kv_type = kv->type,
            .n_tokens = i1 - i0,
            .pos0 = b->pos[i0],
            .n_head = hp->n_head,
            .n_head_kv = hp->n_head_kv,
            .head_dim = hd,
            .scale = hp->attn_scale,
            .out = sc->attn + (int64_t)i0 * hp->n_head * hp->head_dim_v,
        };
        be->attention(be, &a);
        i0 = i1;
    }
}

void block_ffn(struct model *m, const struct layer *l, int n, const float *in, float *out) {
    struct backend *be = model_backend(m);
    struct scratch *sc = model_scratch(m);
    int64_t n_ff = l->ffn_gate->ne[1];
    model_matmul_multi(m, 2, (const struct tensor *[]){l->ffn_gate, l->ffn_up}, NULL, in,
                       (float *[]){sc->ffn_a, sc->ffn_b}, n);
    be->swiglu(be, sc->ffn_a, sc->ffn_b, sc->ffn_a, n * n_ff);
    model_matmul(m, l->ffn_down, NULL, sc->ffn_a, out, n);
}

void block_moe(struct model *m, const struct layer *l, int n, const float *in, float *out) {
    const struct model_hparams *hp = model_hparams(m);
    struct backend *be = model_backend(m);
    struct scratch *sc = model_scratch(m);
    int k = hp->n_expert_used;
    model_matmul(m, l->ffn_gate_inp, NULL, in, sc->router, n);
    be->moe_route(be, sc->router, n, hp->n_expert, k, 1, sc->ids, sc->ew);
    model_matmul_id(m, l->ffn_gate_exps, in, 0, sc->ids, n, k, sc->ffn_a);
    model_matmul_id(m, l->ffn_up_exps, in, 0, sc->ids, n, k, sc->ffn_b);
    be->swiglu(be, sc->ffn_a, sc->ffn_b, sc->ffn_a, (int64_t)n * k * hp->n_ff_exp);
    model_matmul_id(m, l->ffn_down_exps, sc->ffn_a, 1, sc->ids, n, k, sc->moe_y);
    be->moe_combine(be, sc->moe_y, sc->ew, n, k, hp->n_embd, out);
}

void block_output(struct model *m, const struct batch *b) {
    block_output_head(m, b, *model_output_norm(m), *model_output(m));
}

void block_output_head(struct model *m, const struct batch *b, const struct tensor *norm,
                       const struct tensor *head) {
    const struct model_hparams *hp = model_hparams(m);
    struct backend *be = model_backend(m);
    struct scratch *sc = model_scratch(m);
    int E = hp->n_embd;
    for (int i = 0; i < b->n_outputs; i++)
        memcpy(sc->out_h + (int64_t)i * E, sc->x + (int64_t)b->out_rows[i] * E,
               (size_t)E * sizeof(float));
    be->rms_norm(be, sc->out_h, E, norm, sc->out_h, E, b->n_outputs, E, hp->rms_eps);
    for (int i0 = 0; i0 < b->n_outputs; i0 += SCRATCH_LOGIT_ROWS) {
        int nr = b->n_outputs - i0 < SCRATCH_LOGIT_ROWS ? b->n_outputs - i0 : SCRATCH_LOGIT_ROWS;
        model_matmul(m, head, NULL, sc->out_h + (int64_t)i0 * E, sc->logits, nr);
        be->download(be, b->logits + (int64_t)i0 * hp->n_vocab, sc->logits,
                     (size_t)nr * (size_t)hp->n_vocab * sizeof(float));
    }
}

void block_hidden(struct model *m, const struct batch *b, const struct tensor *norm) {
    const struct model_hparams *hp = model_hparams(m);
    struct backend *be = model_backend(m);
    struct scratch *sc = model_scratch(m);
    int E = hp->n_embd, n = b->n_tokens;
    be->rms_norm(be, sc->x, E, norm, sc->out_h, E, n, E, hp->rms_eps);
    be->download(be, b->hidden, sc->out_h, (size_t)n * (size_t)E * sizeof(float));
}

/* ============================================================================================
 * Binding helpers and the classic forward
 * ============================================================================================ */

int block_bind_io(struct model *m, struct error *err) {
    struct model_hparams *hp = model_hparams_mut(m);
    const int64_t E = hp->n_embd;
    const struct tensor *t = model_bind(m, 1, 2, (int64_t[]){E, -1}, err, "token_embd.weight");
    if (!t) return err ? err->code : ERR_FORMAT;
    if (t->ne[1] < 1 || t->ne[1] > (1 << 24))
        return error_set(err, ERR_FORMAT, "token_embd.weight: bad vocabulary size %lld",
                         (long long)t->ne[1]);
    hp->n_vocab = (int)t->ne[1];
    *model_tok_embd(m) = t;
    const struct tensor *on = model_bind(m, 1, 1, (int64_t[]){E}, err, "output_norm.weight");
    if (!on) return err ? err->code : ERR_FORMAT;
    if (on->type != DTYPE_F32) return error_set(err, ERR_UNSUPPORTED, "output_norm must be F32");
    *model_output_norm(m) = on;
    struct error e2 = {0};
    const struct tensor *o = model_bind(m, 0, 2, (int64_t[]){E, hp->n_vocab}, &e2, "output.weight");
    if (!o && e2.code) return error_set(err, e2.code, "%s", e2.msg);
    *model_output(m) = o ? o : t; /* tied embeddings */
    return 0;
}

/* Optional tensor: NULL when absent, error only when present but wrong. */
static int bind_opt(struct model *m, const struct tensor **slot, int required, int n_dims,
                    const int64_t *ne, struct error *err, const char *name, int il) {
    struct error e2 = {0};
    *slot = model_bind(m, required, n_dims, ne, &e2, "blk.%d.%s", il, name);
    if (!*slot && e2.code) return error_set(err, e2.code, "%s", e2.msg);
    return 0;
}

int block_bind_classic_layer(struct model *m, int il, int flags, struct error *err) {
    const struct model_hparams *hp = model_hparams(m);
    struct layer *l = &model_layers(m)[il];
    const int64_t E = hp->n_embd, hd = hp->head_dim;
    const int64_t q_dim = hp->n_head * hd, k_dim = hp->n_head_kv * hd;
    const int64_t v_dim = (int64_t)hp->n_head_kv * hp->head_dim_v;
    const int64_t o_dim = (int64_t)hp->n_head * hp->head_dim_v;
    int bias = (flags & BIND_QKV_BIAS) != 0, qkn = (flags & BIND_QK_NORM) != 0;
    int rc;
    if ((rc = bind_opt(m, &l->attn_norm, 1, 1, (int64_t[]){E}, err, "attn_norm.weight", il)) ||
        (rc = bind_opt(m, &l->attn_q, 1, 2, (int64_t[]){E, q_dim}, err, "attn_q.weight", il)) ||
        (rc = bind_opt(m, &l->attn_k, 1, 2, (int64_t[]){E, k_dim}, err, "attn_k.weight", il)) ||
        (rc = bind_opt(m, &l->attn_v, 1, 2, (int64_t[]){E, v_dim}, err, "attn_v.weight", il)) ||
        (rc = bind_opt(m, &l->attn_output, 1, 2, (int64_t[]){o_dim, E}, err, "attn_output.weight",
                       il)) ||
        (rc = bind_opt(m, &l->attn_q_bias, bias, 1, (int64_t[]){q_dim}, err, "attn_q.bias", il)) ||
        (rc = bind_opt(m, &l->attn_k_bias, bias, 1, (int64_t[]){k_dim}, err, "attn_k.bias", il)) ||
        (rc = bind_opt(m, &l->attn_v_bias, bias, 1, (int64_t[]){v_dim}, err, "attn_v.bias", il)) ||
        (rc = bind_opt(m, &l->attn_output_bias, 0, 1, (int64_t[]){E}, err, "attn_output.bias",
                       il)) ||
        (rc = bind_opt(m, &l->attn_q_norm, qkn, 1, (int64_t[]){hd}, err, "attn_q_norm.weight",
                       il)) ||
        (rc = bind_opt(m, &l->attn_k_norm, qkn, 1, (int64_t[]){hd}, err, "attn_k_norm.weight",
                       il)) ||
        (rc = bind_opt(m, &l->ffn_norm, 1, 1, (int64_t[]){E}, err, "ffn_norm.weight", il)))
        return rc;
    const struct tensor *biases[] = {l->attn_q_bias, l->attn_k_bias, l->attn_v_bias,
                                     l->attn_output_bias};
    const struct tensor *norms[] = {l->attn_norm, l->attn_q_norm, l->attn_k_norm, l->ffn_norm};
    for (int i = 0; i < 4; i++)
        if ((biases[i] && biases[i]->type != DTYPE_F32) ||
            (norms[i] && norms[i]->type != DTYPE_F32))
            return error_set(err, ERR_UNSUPPORTED, "layer %d: norms and biases must be F32", il);
    if (flags & BIND_MOE) {
        const int64_t F = hp->n_ff_exp, X = hp->n_expert;
        if ((rc = bind_opt(m, &l->ffn_gate_inp, 1, 2, (int64_t[]){E, X}, err, "ffn_gate_inp.weight",
                           il)) ||
            (rc = bind_opt(m, &l->ffn_gate_exps, 1, 3, (int64_t[]){E, F, X}, err,
                           "ffn_gate_exps.weight", il)) ||
            (rc = bind_opt(m, &l->ffn_up_exps, 1, 3, (int64_t[]){E, F, X}, err,
                           "ffn_up_exps.weight", il)) ||
            (rc = bind_opt(m, &l->ffn_down_exps, 1, 3, (int64_t[]){F, E, X}, err,
                           "ffn_down_exps.weight", il)))
            return rc;
    } else {
        const int64_t F = hp->n_ff;
        if ((rc = bind_opt(m, &l->ffn_gate, 1, 2, (int64_t[]){E, F}, err, "ffn_gate.weight", il)) ||
            (rc = bind_opt(m, &l->ffn_up, 1, 2, (int64_t[]){E, F}, err, "ffn_up.weight", il)) ||
            (rc = bind_opt(m, &l->ffn_down, 1, 2, (int64_t[]){F, E}, err, "ffn_down.weight", il)))
            return rc;
    }
    return 0;
}

void block_forward_classic(struct model *m, const struct batch *b) {
    const struct model_hparams *hp = model_hparams(m);
    struct backend *be = model_backend(m);
    struct scratch *sc = model_scratch(m);
    int n = b->n_tokens, E = hp->n_embd;
    block_embed(m, b);
    for (int il = 0; il < hp->n_layer; il++) {
        const struct layer *l = &model_layers(m)[il];
        be->rms_norm(be, sc->x, E, l->attn_norm, sc->xn, E, n, E, hp->rms_eps);
        block_attention(m, il, b, sc->xn, sc->y);
        be->add(be, sc->x, sc->y, sc->x, (int64_t)n * E);
        be->rms_norm(be, sc->x, E, l->ffn_norm, sc->xn, E, n, E, hp->rms_eps);
        if (l->ffn_gate_inp)
            block_moe(m, l, n, sc->xn, sc->y);
        else
            block_ffn(m, l, n, sc->xn, sc->y);
        be->add(be, sc->x, sc->y, sc->x, (int64_t)n * E);
    }
    if (b->n_outputs > 0) block_output(m, b);
}
