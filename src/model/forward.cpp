#include "model/forward.hpp"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <optional>

#include "ember/error.hpp"

namespace ember {

ForwardBuffers alloc_forward_buffers(Backend& be, const Hparams& hp, int64_t n_batch, bool embed_only) {
    ForwardBuffers b;
    const auto n = static_cast<size_t>(n_batch);
    b.n_batch = n_batch;
    b.n_logit_rows = std::min<int64_t>(n_batch, 32);
    b.x = be.alloc_f32(n * hp.n_embd);
    b.pos.resize(n);
    if (embed_only) return b;
    b.h = be.alloc_f32(n * hp.n_embd);
    b.q = be.alloc_f32(n * hp.n_head * hp.head_dim_k);
    b.k = be.alloc_f32(n * hp.n_embd_k_gqa());
    b.v = be.alloc_f32(n * hp.n_embd_v_gqa());
    b.attn = be.alloc_f32(n * hp.n_head * hp.head_dim_v);
    b.o = be.alloc_f32(n * hp.n_embd);
    b.gate = be.alloc_f32(n * hp.n_ff);
    b.up = be.alloc_f32(n * hp.n_ff);
    b.logits = be.alloc_f32(static_cast<size_t>(b.n_logit_rows) * hp.n_vocab);
    return b;
}

void ensure_lora_buffers(Backend& be, const Hparams& hp, ForwardBuffers& buf, int64_t max_rank) {
    if (max_rank <= buf.lora_rank) return;
    const int64_t widest = std::max({hp.n_embd, hp.n_q(), hp.n_embd_k_gqa(), hp.n_embd_v_gqa(), hp.n_ff});
    const int64_t out_len = std::max(buf.n_batch * widest, buf.n_logit_rows * static_cast<int64_t>(hp.n_vocab));
    buf.lora_r = be.alloc_f32(static_cast<size_t>(buf.n_batch * max_rank));
    if (buf.lora_out == nullptr) {
        buf.lora_out = be.alloc_f32(static_cast<size_t>(out_len));
        buf.lora_out_len = out_len;
    }
    buf.lora_rank = max_rank;
}

RopeParams rope_params(const Hparams& hp, const float* freq_factors, bool swa_layer) {
    RopeParams p;
    p.n_rot = static_cast<int32_t>(hp.rope_dim);
    p.neox = hp.rope_style == RopeStyle::Neox;
    p.freq_base = hp.rope_freq_base;
    p.freq_factors = freq_factors;
    p.attn_factor = hp.rope_attn_factor;
    if (swa_layer) {  // sliding-window layers: their own base, never scaled (Gemma-3)
        p.freq_base = hp.rope_freq_base_swa;
        return p;
    }
    if (hp.rope_scaling != RopeScaling::None) p.freq_scale = 1.0f / hp.rope_scale_factor;
    if (hp.rope_scaling == RopeScaling::Yarn) {
        // YaRN (Peng et al. 2023) as ggml implements it: pairs rotating faster
        // than beta_fast turns over the original context keep their angle
        // (extrapolate), pairs slower than beta_slow are interpolated, with a
        // linear ramp in between; this is the pair index where a pair makes
        // `turns` rotations over the original context.
        p.ext_factor = 1.0f;
        const double n_orig = hp.rope_orig_ctx ? hp.rope_orig_ctx : hp.n_ctx_train;
        auto corr_dim = [&](double turns) {
            return hp.rope_dim * std::log(n_orig / (turns * 2.0 * std::numbers::pi)) /
                   (2.0 * std::log(static_cast<double>(hp.rope_freq_base)));
        };
        p.corr_low = static_cast<float>(std::max(0.0, std::floor(corr_dim(hp.yarn_beta_fast))));
        p.corr_high = static_cast<float>(std::min(hp.rope_dim - 1.0, std::ceil(corr_dim(hp.yarn_beta_slow))));
    }
    return p;
}

namespace {

// Calls be.end_step() when the ops of a step are done; if an exception leaves
// the step (cancellation, a backend error), abort_step() discards it instead.
class StepGuard {
public:
    StepGuard(Backend& be, int64_t n_tok) : be_(be) { be_.begin_step(n_tok); }
    ~StepGuard() {
        if (open_) be_.abort_step();
    }
    StepGuard(const StepGuard&) = delete;
    StepGuard& operator=(const StepGuard&) = delete;
    void end() {
        open_ = false;
        be_.end_step();
    }

private:
    Backend& be_;
    bool open_ = true;
};

// y += sum over the pairs of scale * B (A x).   x: [n_tok, n_in], y: [n_tok, n_out]
void add_lora(Backend& be, const LoraList& pairs, const float* x, int64_t n_tok, float* y, const ForwardBuffers& buf) {
    if (!pairs.empty()) be.add_low_rank(pairs.data(), pairs.size(), x, n_tok, y, buf.lora_r, buf.lora_out);
}

}  // namespace

void forward(const Model::Impl& m, std::span<const Stage> stages, const int32_t* tokens, int64_t n_tok,
             int64_t pos0, bool all_logits, float* logits_out, const std::atomic<bool>* cancel,
             std::vector<float>& staging) {
    const Hparams& hp = m.hp;
    const int64_t d = hp.n_embd;
    const float eps = hp.norm_eps;
    if (stages.empty()) throw Error(ErrorCode::Internal, "forward: no stages");
    for (const Stage& st : stages)
        if (n_tok <= 0 || n_tok > st.buf->n_batch)
            throw Error(ErrorCode::Internal, "forward: batch of " + std::to_string(n_tok) + " tokens (buffers hold " +
                                                 std::to_string(st.buf->n_batch) + ")");

    AttnParams ap;
    ap.n_head = static_cast<int32_t>(hp.n_head);
    ap.n_head_kv = static_cast<int32_t>(hp.n_head_kv);
    ap.head_dim_k = static_cast<int32_t>(hp.head_dim_k);
    ap.head_dim_v = static_cast<int32_t>(hp.head_dim_v);
    ap.scale = hp.attn_scale;
    auto cancelled = [&] {
        if (cancel && cancel->load(std::memory_order_relaxed))
            throw Error(ErrorCode::Cancelled, "evaluation cancelled by Session::cancel()");
    };

    for (size_t si = 0; si < stages.size(); ++si) {
        const Stage& st = stages[si];
        Backend& be = *st.be;
        ForwardBuffers& buf = *st.buf;
        const Weights& w = *st.w;
        const bool last = si + 1 == stages.size();
        if (si > 0) {  // the residual stream crosses to this stage's backend
            const Stage& prev = stages[si - 1];
            if (prev.buf->x != buf.x) {
                const size_t n = static_cast<size_t>(n_tok * d);
                if (staging.size() < n) staging.resize(n);
                prev.be->to_host(prev.buf->x, staging.data(), n);
                be.from_host(staging.data(), buf.x, n);
            }
        }
        if (si > 0 && st.first_layer == st.end_layer && !last) continue;

        for (int64_t t = 0; t < n_tok; ++t) buf.pos[static_cast<size_t>(t)] = static_cast<int32_t>(pos0 + t);
        // LongRoPE (Phi-3): the long factors once the context exceeds the original one
        const float* freq_factors = w.rope_freqs;
        if (!freq_factors && w.rope_long && st.cache->n_ctx > static_cast<int64_t>(hp.rope_orig_ctx))
            freq_factors = w.rope_long;
        if (!freq_factors) freq_factors = w.rope_short;
        const RopeParams rope_global = rope_params(hp, freq_factors, false);
        const RopeParams rope_local = rope_params(hp, freq_factors, true);
        StepGuard step(be, n_tok);
        // x: [n_tok, n_embd] -- the residual stream every block reads and adds to; the
        // embedding is looked up in host memory, so the first stage is the CPU's
        const LoraLayer* lora_layers = st.lora != nullptr && !st.lora->layers.empty() ? st.lora->layers.data()
                                                                                       : nullptr;
        if (st.lora != nullptr && !st.lora->empty() && buf.lora_rank < st.lora->max_rank)
            throw Error(ErrorCode::Internal, "forward: LoRA scratch smaller than the adapters' rank");
        if (si == 0) {
            be.get_rows(m.w.token_embd, tokens, n_tok, buf.x);
            if (st.lora != nullptr)  // the delta of a token's row: B A[:, token] (A's rows are tokens)
                for (const LoraPair& p : st.lora->token_embd) {
                    be.get_rows(p.a, tokens, n_tok, buf.lora_r);
                    be.scale(buf.lora_r, p.scale, n_tok * p.rank());
                    be.matmul(p.b, buf.lora_r, n_tok, buf.lora_out);
                    be.add(buf.x, buf.lora_out, n_tok * d);
                }
            if (hp.embd_scale != 1.0f) be.scale(buf.x, hp.embd_scale, n_tok * d);
        }
        for (int64_t il = st.first_layer; il < st.end_layer; ++il) {
            cancelled();
            const LayerWeights& L = w.layers[static_cast<size_t>(il)];
            const int64_t cl = il - st.first_layer;  // the layer's index in this stage's cache
            const bool swa = hp.is_swa(static_cast<size_t>(il));
            const RopeParams& rope = swa ? rope_local : rope_global;
            ap.n_swa = swa ? static_cast<int32_t>(hp.n_swa) : 0;

            // attention: x += post_norm(wo * attention(rope(qk_norm(wq h + bq)), rope(qk_norm(wk h + bk)),
            // wv h + bv)),  h = rmsnorm(x); the biases, norms and post-norm where the architecture has them
            be.rms_norm(buf.x, L.attn_norm, n_tok, d, eps, buf.h);
            const WeightView* qkv_w[3] = {&L.wq, &L.wk, &L.wv};
            float* qkv[3] = {buf.q, buf.k, buf.v};
            be.matmul_shared(qkv_w, qkv, 3, buf.h, n_tok);  // q = wq h, k = wk h, v = wv h
            const LoraLayer* lora = lora_layers != nullptr ? &lora_layers[il] : nullptr;
            if (lora != nullptr) {  // the adapters' deltas, before the biases (y = W x + B A x + b)
                add_lora(be, lora->wq, buf.h, n_tok, buf.q, buf);
                add_lora(be, lora->wk, buf.h, n_tok, buf.k, buf);
                add_lora(be, lora->wv, buf.h, n_tok, buf.v, buf);
            }
            if (L.bq) {
                be.add_bias(buf.q, L.bq, n_tok, hp.n_q());
                be.add_bias(buf.k, L.bk, n_tok, hp.n_embd_k_gqa());
                be.add_bias(buf.v, L.bv, n_tok, hp.n_embd_v_gqa());
            }
            if (L.q_norm) {  // RMSNorm of every head's vector
                be.rms_norm(buf.q, L.q_norm, n_tok * hp.n_head, hp.head_dim_k, eps, buf.q);
                be.rms_norm(buf.k, L.k_norm, n_tok * hp.n_head_kv, hp.head_dim_k, eps, buf.k);
            }
            be.rope(buf.q, n_tok, hp.n_head, hp.head_dim_k, buf.pos.data(), rope);
            be.rope(buf.k, n_tok, hp.n_head_kv, hp.head_dim_k, buf.pos.data(), rope);
            be.kv_store(*st.cache, cl, buf.k, buf.v, pos0, n_tok);
            be.attention(*st.cache, cl, buf.q, n_tok, pos0, ap, buf.attn);
            be.matmul(L.wo, buf.attn, n_tok, buf.o);
            if (lora != nullptr) add_lora(be, lora->wo, buf.attn, n_tok, buf.o, buf);
            if (L.attn_post_norm) be.rms_norm(buf.o, L.attn_post_norm, n_tok, d, eps, buf.o);
            be.add(buf.x, buf.o, n_tok * d);

            // feed-forward: x += post_norm(w_down * (act(w_gate h) * (w_up h))),  h = rmsnorm(x),
            // act = SiLU (SwiGLU) or tanh-GELU (GeGLU)
            be.rms_norm(buf.x, L.ffn_norm, n_tok, d, eps, buf.h);
            const WeightView* gate_up_w[2] = {&L.w_gate, &L.w_up};
            float* gate_up[2] = {buf.gate, buf.up};
            be.matmul_shared(gate_up_w, gate_up, 2, buf.h, n_tok);  // gate = w_gate h, up = w_up h
            if (lora != nullptr) {
                add_lora(be, lora->w_gate, buf.h, n_tok, buf.gate, buf);
                add_lora(be, lora->w_up, buf.h, n_tok, buf.up, buf);
            }
            if (hp.ffn_act == FfnActivation::GeluTanh)
                be.geglu(buf.gate, buf.up, n_tok * hp.n_ff, buf.gate);
            else
                be.swiglu(buf.gate, buf.up, n_tok * hp.n_ff, buf.gate);
            be.matmul(L.w_down, buf.gate, n_tok, buf.o);
            if (lora != nullptr) add_lora(be, lora->w_down, buf.gate, n_tok, buf.o, buf);
            if (L.ffn_post_norm) be.rms_norm(buf.o, L.ffn_post_norm, n_tok, d, eps, buf.o);
            be.add(buf.x, buf.o, n_tok * d);
        }
        if (!last) {
            step.end();
            continue;
        }

        // output head: logits = output * rmsnorm(x), for the rows asked for, in chunks;
        // the first chunk is part of the layers' step, later ones are steps of their own
        const int64_t first = all_logits ? 0 : n_tok - 1;
        for (int64_t r = first; r < n_tok; r += buf.n_logit_rows) {
            const int64_t nr = std::min(buf.n_logit_rows, n_tok - r);
            std::optional<StepGuard> chunk_step;
            if (r != first) chunk_step.emplace(be, nr);
            be.rms_norm(buf.x + r * d, w.output_norm, nr, d, eps, buf.h);
            be.matmul(w.output, buf.h, nr, buf.logits);
            if (st.lora != nullptr) add_lora(be, st.lora->output, buf.h, nr, buf.logits, buf);
            if (hp.final_softcap > 0) be.softcap(buf.logits, hp.final_softcap, nr * hp.n_vocab);
            if (chunk_step) chunk_step->end(); else step.end();
            be.to_host(buf.logits, logits_out + (r - first) * hp.n_vocab, static_cast<size_t>(nr) * hp.n_vocab);
        }
    }
}

void forward(const Model::Impl& m, Backend& be, const KvCache& cache, ForwardBuffers& buf, const int32_t* tokens,
             int64_t n_tok, int64_t pos0, bool all_logits, float* logits_out, const std::atomic<bool>* cancel) {
    const Stage st{&be, &m.w, &cache, &buf, 0, static_cast<int64_t>(m.hp.n_layer)};
    std::vector<float> staging;
    forward(m, std::span<const Stage>(&st, 1), tokens, n_tok, pos0, all_logits, logits_out, cancel, staging);
}

}  // namespace ember
