"""A float64 NumPy reference of the gemma3, qwen2, qwen3 and phi3 forward
passes, read straight from a GGUF file: the oracle for ember's forward pass on
these architectures, as reference_llama.py is for llama.  It is written the
same way -- obviously right rather than fast, one function per step, no KV
cache (the whole sequence at once, positions 0..n-1), every weight dequantized
with the `gguf` package and held as float64 -- and it reuses that module's
GGUF reading and its RoPE rotation (`apply_rope`), RMSNorm, softmax and SiLU.

Everything comes from the GGUF metadata and tensors, never from a Hugging Face
config.  Shapes follow reference_llama.py: a GGUF tensor [n_in, n_out] is a
NumPy (n_out, n_in) array and y = x @ W.T.  rmsnorm(v, w) = v / sqrt(mean(v^2)
+ eps) * w over the last axis, eps = {arch}.attention.layer_norm_rms_epsilon.
All four architectures use NeoX RoPE: pair i of a head is dims (i, i + n_rot/2),
i < n_rot/2, rotated by theta_i(p) = p * scale * base^(-2i/n_rot) / f_i (f_i a
per-pair frequency factor, 1 unless a factor tensor says otherwise); dims at and
past n_rot are not rotated.  Attention is causal and grouped (query head h uses
KV head h // (n_head / n_head_kv)); head_dim is {arch}.attention.key_length
(value_length for V), else n_embd / n_head.

The published model definitions (Hugging Face transformers' modeling_gemma3 /
_qwen2 / _qwen3 / _phi3, which llama.cpp's converter maps to these tensors):

qwen2 (Qwen1.5 / Qwen2 / Qwen2.5)
    llama's layer (pre-norm residuals, SwiGLU FFN) with biases on Q, K and V
    (blk.N.attn_{q,k,v}.bias; none on the output projection) and NeoX RoPE
    (llama's GGUF Q/K rows are permuted for adjacent pairs; qwen2's are not).

qwen3
    qwen2 without the biases, plus QK-norm: after the Q and K projections,
    each head's vector (head_dim values) is RMS-normed with
    blk.N.attn_q_norm / attn_k_norm (shape [head_dim]) BEFORE RoPE.
    head_dim = key_length, which need not be n_embd / n_head.

gemma3 (Gemma 3 text; Gemma3ForCausalLM)
    x = token_embd[ids] * sqrt(n_embd)
    per layer:  h   = x + post_attention_norm(attn(attn_norm(x)))
                out = h + post_ffw_norm(ffn(ffn_norm(h)))
    ffn(v) = W_down(gelu_tanh(W_gate v) * (W_up v)),
    gelu_tanh(u) = 0.5 u (1 + tanh(sqrt(2/pi) (u + 0.044715 u^3))).
    Every norm weight in the file is already the (1 + w) of Gemma's RMSNorm:
    the converter adds the 1 (Gemma3Model.norm_shift), so it is used as it is.
    Attention: QK-norm per head before RoPE (as qwen3); scores scaled by
    1/sqrt(head_dim) -- transformers uses query_pre_attn_scalar^-0.5, which the
    GGUF does not record; llama.cpp takes 1/sqrt(head_dim), and
    1/sqrt(n_embd/n_head) for the 62-layer 27B, whose query_pre_attn_scalar is
    that, and so does this reference.
    Sliding-window (local) layers: key j is visible from query p iff
    j <= p and p - j < sliding_window ({arch}.attention.sliding_window; absent
    or 0: no local layers).  Which layers are local: the per-layer bool array
    or the integer period {arch}.attention.sliding_window_pattern when present
    (period P: layer il is local iff il % P < P - 1; P = 0: all local);
    absent -- as in every converted Gemma 3, the converter does not write it --
    the period is 6 (llama.cpp's default for gemma3; transformers' layer_types
    default), i.e. layers 5, 11, 17, ... are global.
    Local layers rotate with base {arch}.rope.freq_base_swa (10000 when absent,
    llama.cpp's default) and no scaling; global layers with
    {arch}.rope.freq_base and, with rope.scaling.type "linear", positions
    divided by rope.scaling.factor (Gemma 3 4B/12B/27B: 8).
    Output: final rmsnorm (output_norm), logits = token_embd x (tied; or
    output.weight when present), then cap * tanh(logits / cap) with
    cap = {arch}.final_logit_softcapping when present and > 0.

phi3 (Phi-3, Phi-3.5, Phi-4-mini)
    llama's layer with fused projections: blk.N.attn_qkv.weight holds Q, K and
    V rows stacked (n_head*hd, then n_head_kv*hd, then n_head_kv*hd; separate
    attn_q/k/v are accepted too), and blk.N.ffn_up.weight holds 2*n_ff rows:
    the first n_ff are the gate, the second n_ff the up projection
    (ffn = W_down(silu(gate) * up)).  NeoX RoPE over the first
    n_rot = {arch}.rope.dimension_count dims (partial rotary, Phi-4-mini).
    LongRoPE: rope_factors_long.weight / rope_factors_short.weight ([n_rot/2])
    are the f_i above; the long ones are used when the context n_ctx exceeds
    {arch}.rope.scaling.original_context_length (default: context_length),
    the short ones otherwise (llama.cpp's rule with n_ctx = its context size;
    transformers decides per call with n_ctx = the sequence length).  cos and
    sin are multiplied by {arch}.rope.scaling.attn_factor (default 1), so the
    scores scale by its square.  {arch}.attention.sliding_window is ignored,
    as llama.cpp ignores it for phi3 (it only matters past the window).

Usage:

    model = load_model("tests/data/arch/gemma3.gguf")
    logits = forward(model, [5, 17, 42])          # (3, n_vocab) float64
    logits = forward(model, ids, n_ctx=4096)      # phi3: LongRoPE for a 4096 context

The checks of this module (against transformers' float64 logits stored in
tests/data/arch/) are tests/python/test_arch_reference.py.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import gguf
import numpy as np

import reference_llama as RL  # also limits BLAS to one thread
from reference_llama import _field, apply_rope, dequantize_tensor, rms_norm, silu, softmax

SUPPORTED_ARCHS = ("gemma3", "qwen2", "qwen3", "phi3")

# The tensors of one block, by the name after "blk.N.": required, optional.
BLOCK_TENSORS = {
    "qwen2": (("attn_norm.weight", "attn_q.weight", "attn_k.weight", "attn_v.weight", "attn_output.weight",
               "ffn_norm.weight", "ffn_gate.weight", "ffn_up.weight", "ffn_down.weight"),
              ("attn_q.bias", "attn_k.bias", "attn_v.bias")),
    "qwen3": (("attn_norm.weight", "attn_q.weight", "attn_k.weight", "attn_v.weight", "attn_q_norm.weight",
               "attn_k_norm.weight", "attn_output.weight", "ffn_norm.weight", "ffn_gate.weight", "ffn_up.weight",
               "ffn_down.weight"), ()),
    "gemma3": (("attn_norm.weight", "attn_q.weight", "attn_k.weight", "attn_v.weight", "attn_q_norm.weight",
                "attn_k_norm.weight", "attn_output.weight", "post_attention_norm.weight", "ffn_norm.weight",
                "ffn_gate.weight", "ffn_up.weight", "ffn_down.weight", "post_ffw_norm.weight"), ()),
    "phi3": (("attn_norm.weight", "attn_output.weight", "ffn_norm.weight", "ffn_up.weight", "ffn_down.weight"),
             ("attn_qkv.weight", "attn_q.weight", "attn_k.weight", "attn_v.weight")),
}
GLOBAL_TENSORS = ("token_embd.weight", "output_norm.weight", "output.weight",
                  "rope_freqs.weight", "rope_factors_long.weight", "rope_factors_short.weight")

GEMMA3_DEFAULT_SWA_PERIOD = 6      # llama.cpp: load_swa_pattern(ml, 6) for gemma3
DEFAULT_FREQ_BASE_SWA = 10000.0    # llama.cpp: hparams.rope_freq_base_train_swa


# --------------------------------------------------------------------------
# Hyperparameters
# --------------------------------------------------------------------------

@dataclass
class Hparams:
    arch: str              # general.architecture
    n_layer: int           # {arch}.block_count
    n_embd: int            # {arch}.embedding_length
    n_ff: int              # {arch}.feed_forward_length
    n_head: int            # {arch}.attention.head_count
    n_head_kv: int         # {arch}.attention.head_count_kv (= n_head)
    head_dim_k: int        # {arch}.attention.key_length (= n_embd / n_head)
    head_dim_v: int        # {arch}.attention.value_length (= n_embd / n_head)
    n_rot: int             # {arch}.rope.dimension_count (= head_dim_k)
    rms_eps: float         # {arch}.attention.layer_norm_rms_epsilon
    n_vocab: int           # rows of token_embd
    n_ctx_train: int       # {arch}.context_length
    rope_freq_base: float  # {arch}.rope.freq_base (global layers)
    rope_scale: float = 1.0  # linear rope scaling factor (positions divided by it; global layers)
    rope_style: str = "neox"  # every architecture here; "normal" only for experiments (tests' controls)
    attn_scale: float = 0.0  # the factor on q.k; 0 = 1/sqrt(head_dim_k)
    # gemma3
    embd_scale: float = 1.0               # sqrt(n_embd) for gemma3
    sliding_window: int = 0               # {arch}.attention.sliding_window; 0 = none
    swa_layers: tuple = ()                # per layer: True = sliding-window (local) layer
    rope_freq_base_swa: float = DEFAULT_FREQ_BASE_SWA  # {arch}.rope.freq_base_swa (local layers)
    final_softcap: float = 0.0            # {arch}.final_logit_softcapping; 0 = none
    # phi3 (LongRoPE)
    rope_orig_ctx: int = 0                # {arch}.rope.scaling.original_context_length
    rope_attn_factor: float = 1.0         # {arch}.rope.scaling.attn_factor: multiplies cos and sin


def swa_layers_from_metadata(reader: gguf.GGUFReader, arch: str, n_layer: int, window: int) -> tuple:
    """Which layers are local (sliding-window): see the module docstring."""
    if window <= 0:
        return (False,) * n_layer
    pattern = _field(reader, f"{arch}.attention.sliding_window_pattern", None)
    if pattern is None:
        pattern = GEMMA3_DEFAULT_SWA_PERIOD
    if isinstance(pattern, list):
        if len(pattern) != n_layer:
            raise ValueError(f"{arch}.attention.sliding_window_pattern has {len(pattern)} entries for {n_layer} layers")
        return tuple(bool(v) for v in pattern)
    period = int(pattern)
    return tuple(period == 0 or (il % period) < (period - 1) for il in range(n_layer))


def read_hparams(reader: gguf.GGUFReader) -> Hparams:
    arch = _field(reader, "general.architecture", required=True)
    if arch not in SUPPORTED_ARCHS:
        raise ValueError(f"architecture '{arch}' is not supported by this reference "
                         f"(supported: {', '.join(SUPPORTED_ARCHS)}; llama is reference_llama.py)")

    def key(name, default=None, required=False):
        return _field(reader, f"{arch}.{name}", default, required)

    n_layer = int(key("block_count", required=True))
    n_embd, n_head, n_head_kv, head_dim_k, head_dim_v, n_rot = RL.attention_shape(key)

    scaling = key("rope.scaling.type", None)
    rope_scale = 1.0
    if scaling == "linear":
        rope_scale = float(key("rope.scaling.factor", required=True)) or 1.0
    elif scaling not in (None, "none"):
        raise ValueError(f"rope scaling type '{scaling}' is not supported by this reference (none, linear)")
    if key("attn_logit_softcapping", None):
        raise ValueError(f"{arch}.attn_logit_softcapping is set: attention softcapping (Gemma 2) is not implemented")

    embd = next(t for t in reader.tensors if t.name == "token_embd.weight")
    hp = Hparams(
        arch=arch, n_layer=n_layer, n_embd=n_embd, n_ff=int(key("feed_forward_length", required=True)),
        n_head=n_head, n_head_kv=n_head_kv, head_dim_k=head_dim_k, head_dim_v=head_dim_v, n_rot=n_rot,
        rms_eps=float(key("attention.layer_norm_rms_epsilon", required=True)),
        n_vocab=int(embd.shape[1]), n_ctx_train=int(key("context_length", 0)),
        rope_freq_base=float(key("rope.freq_base", 10000.0)), rope_scale=rope_scale,
        swa_layers=(False,) * n_layer,
    )
    if arch == "gemma3":
        hp.embd_scale = float(np.sqrt(n_embd))
        hp.sliding_window = int(key("attention.sliding_window", 0))
        hp.swa_layers = swa_layers_from_metadata(reader, arch, n_layer, hp.sliding_window)
        hp.rope_freq_base_swa = float(key("rope.freq_base_swa", DEFAULT_FREQ_BASE_SWA))
        hp.final_softcap = float(key("final_logit_softcapping", 0.0))
        if n_layer == 62:  # Gemma 3 27B: query_pre_attn_scalar = n_embd / n_head
            hp.attn_scale = 1.0 / np.sqrt(n_embd / n_head)
    if arch == "phi3":
        hp.rope_orig_ctx = int(key("rope.scaling.original_context_length", hp.n_ctx_train))
        hp.rope_attn_factor = float(key("rope.scaling.attn_factor", 1.0))
    if hp.attn_scale == 0.0:
        hp.attn_scale = 1.0 / np.sqrt(head_dim_k)
    return hp


# --------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------

@dataclass
class Layer(RL.Layer):
    """reference_llama's layer (norms, wq/wk/wv/wo, gate/up/down) plus what the
    other architectures add; None where an architecture has no such tensor."""
    bq: np.ndarray | None = None        # (n_head * hd_k,)     qwen2
    bk: np.ndarray | None = None        # (n_head_kv * hd_k,)  qwen2
    bv: np.ndarray | None = None        # (n_head_kv * hd_v,)  qwen2
    q_norm: np.ndarray | None = None    # (hd_k,)  qwen3, gemma3
    k_norm: np.ndarray | None = None    # (hd_k,)  qwen3, gemma3
    post_attn_norm: np.ndarray | None = None  # (n_embd,)  gemma3
    post_ffn_norm: np.ndarray | None = None   # (n_embd,)  gemma3


@dataclass
class Model:
    hp: Hparams
    token_embd: np.ndarray    # (n_vocab, n_embd)
    output_norm: np.ndarray   # (n_embd,)
    output: np.ndarray        # (n_vocab, n_embd); token_embd itself when tied
    layers: list[Layer] = field(default_factory=list)
    rope_freqs: np.ndarray | None = None          # (n_rot/2,) rope_freqs.weight
    rope_factors_long: np.ndarray | None = None   # (n_rot/2,) phi3 LongRoPE
    rope_factors_short: np.ndarray | None = None  # (n_rot/2,)


def split_rows(w: np.ndarray, sizes: list[int], what: str) -> list[np.ndarray]:
    """A fused (sum(sizes), n_in) matrix cut into consecutive row blocks."""
    if w.shape[0] != sum(sizes):
        raise ValueError(f"{what} has {w.shape[0]} rows, expected {' + '.join(map(str, sizes))}")
    return np.split(w, np.cumsum(sizes)[:-1], axis=0)


def load_model(path: str) -> Model:
    """Hyperparameters and every weight (float64) of a gemma3 / qwen2 / qwen3 / phi3 GGUF."""
    reader = gguf.GGUFReader(str(path))
    hp = read_hparams(reader)
    tensors = {t.name: t for t in reader.tensors}
    required, optional = BLOCK_TENSORS[hp.arch]
    known = set(GLOBAL_TENSORS) | {f"blk.{i}.{n}" for i in range(hp.n_layer) for n in required + optional}
    unknown = sorted(set(tensors) - known)
    if unknown:
        raise ValueError(f"{path} has tensors this reference does not implement: {unknown[:8]}")

    def get(name: str, shape: tuple[int, ...]) -> np.ndarray:
        if name not in tensors:
            raise ValueError(f"tensor '{name}' is missing from {path}")
        w = dequantize_tensor(tensors[name])
        if w.shape != shape:
            raise ValueError(f"tensor '{name}' has NumPy shape {w.shape}, expected {shape}")
        return w

    def opt(name: str, shape: tuple[int, ...]) -> np.ndarray | None:
        return get(name, shape) if name in tensors else None

    d, ff = hp.n_embd, hp.n_ff
    q, k, v = hp.n_head * hp.head_dim_k, hp.n_head_kv * hp.head_dim_k, hp.n_head_kv * hp.head_dim_v
    token_embd = get("token_embd.weight", (hp.n_vocab, d))
    model = Model(hp=hp, token_embd=token_embd, output_norm=get("output_norm.weight", (d,)),
                  output=opt("output.weight", (hp.n_vocab, d)))
    if model.output is None:
        model.output = token_embd
    model.rope_freqs = opt("rope_freqs.weight", (hp.n_rot // 2,))
    model.rope_factors_long = opt("rope_factors_long.weight", (hp.n_rot // 2,))
    model.rope_factors_short = opt("rope_factors_short.weight", (hp.n_rot // 2,))
    if (model.rope_factors_long is None) != (model.rope_factors_short is None):
        raise ValueError(f"{path} has only one of rope_factors_long / rope_factors_short")

    for i in range(hp.n_layer):
        p = f"blk.{i}."
        if hp.arch == "phi3":
            if p + "attn_qkv.weight" in tensors:
                wq, wk, wv = split_rows(get(p + "attn_qkv.weight", (q + k + v, d)), [q, k, v], p + "attn_qkv.weight")
            else:
                wq, wk, wv = get(p + "attn_q.weight", (q, d)), get(p + "attn_k.weight", (k, d)), get(p + "attn_v.weight", (v, d))
            w_gate, w_up = split_rows(get(p + "ffn_up.weight", (2 * ff, d)), [ff, ff], p + "ffn_up.weight")
        else:
            wq, wk, wv = get(p + "attn_q.weight", (q, d)), get(p + "attn_k.weight", (k, d)), get(p + "attn_v.weight", (v, d))
            w_gate, w_up = get(p + "ffn_gate.weight", (ff, d)), get(p + "ffn_up.weight", (ff, d))
        model.layers.append(Layer(
            attn_norm=get(p + "attn_norm.weight", (d,)),
            wq=wq, wk=wk, wv=wv,
            wo=get(p + "attn_output.weight", (d, hp.n_head * hp.head_dim_v)),
            ffn_norm=get(p + "ffn_norm.weight", (d,)),
            w_gate=w_gate, w_up=w_up,
            w_down=get(p + "ffn_down.weight", (d, ff)),
            bq=opt(p + "attn_q.bias", (q,)), bk=opt(p + "attn_k.bias", (k,)), bv=opt(p + "attn_v.bias", (v,)),
            q_norm=opt(p + "attn_q_norm.weight", (hp.head_dim_k,)),
            k_norm=opt(p + "attn_k_norm.weight", (hp.head_dim_k,)),
            post_attn_norm=opt(p + "post_attention_norm.weight", (d,)),
            post_ffn_norm=opt(p + "post_ffw_norm.weight", (d,)),
        ))
    return model


# --------------------------------------------------------------------------
# The steps of the forward pass
# --------------------------------------------------------------------------

def embed(model: Model, tokens: np.ndarray) -> np.ndarray:
    """(n,) ids -> (n, n_embd): rows of token_embd, times sqrt(n_embd) for gemma3."""
    return model.token_embd[tokens] * model.hp.embd_scale


def rope_freq_factors(model: Model, n_ctx: int) -> np.ndarray | None:
    """The per-pair divisors f_i of the rotation frequencies: rope_freqs.weight
    when present, else phi3's LongRoPE long factors when n_ctx exceeds the
    original context, the short ones otherwise; None (all 1) without either."""
    if model.rope_freqs is not None:
        return model.rope_freqs
    if model.rope_factors_long is not None:
        return model.rope_factors_long if n_ctx > model.hp.rope_orig_ctx else model.rope_factors_short
    return None


def layer_rope(hp: Hparams, il: int) -> tuple[float, float]:
    """(freq_base, linear scale factor) of layer il: a local (sliding-window)
    layer of gemma3 has base rope.freq_base_swa and no scaling."""
    if hp.swa_layers[il]:
        return hp.rope_freq_base_swa, 1.0
    return hp.rope_freq_base, hp.rope_scale


def rope_angles(n_tokens: int, n_rot: int, base: float, scale: float, factors: np.ndarray | None) -> np.ndarray:
    """(n_tokens, n_rot/2): theta[p, i] = (p / scale) * base^(-2i/n_rot) / factors[i]."""
    pos = np.arange(n_tokens, dtype=np.float64) / scale
    inv_freq = base ** (-2.0 * np.arange(n_rot // 2, dtype=np.float64) / n_rot)
    if factors is not None:
        inv_freq = inv_freq / factors
    return pos[:, None] * inv_freq[None, :]


def visible(n: int, window: int) -> np.ndarray:
    """(n, n) bool: key j is visible from query p iff j <= p and, with a window
    (> 0), p - j < window."""
    p = np.arange(n)[:, None]
    j = np.arange(n)[None, :]
    ok = j <= p
    if window > 0:
        ok &= (p - j) < window
    return ok


def head_norm(x: np.ndarray, weight: np.ndarray | None, eps: float) -> np.ndarray:
    """QK-norm: x (n, heads, head_dim) RMS-normed per head with weight (head_dim,); identity without a weight."""
    return x if weight is None else rms_norm(x, weight, eps)


def attention(hp: Hparams, layer: Layer, x: np.ndarray, theta: np.ndarray, window: int) -> np.ndarray:
    """Causal grouped-query self-attention.  x: (n, n_embd), already normed -> (n, n_embd)."""
    n = x.shape[0]
    q, k, v = x @ layer.wq.T, x @ layer.wk.T, x @ layer.wv.T
    if layer.bq is not None:
        q = q + layer.bq
    if layer.bk is not None:
        k = k + layer.bk
    if layer.bv is not None:
        v = v + layer.bv
    q = head_norm(q.reshape(n, hp.n_head, hp.head_dim_k), layer.q_norm, hp.rms_eps)
    k = head_norm(k.reshape(n, hp.n_head_kv, hp.head_dim_k), layer.k_norm, hp.rms_eps)
    v = v.reshape(n, hp.n_head_kv, hp.head_dim_v)
    q = apply_rope(q, theta, hp.n_rot, hp.rope_style, hp.rope_attn_factor)
    k = apply_rope(k, theta, hp.n_rot, hp.rope_style, hp.rope_attn_factor)

    mask = visible(n, window)
    group = hp.n_head // hp.n_head_kv
    out = np.empty((n, hp.n_head, hp.head_dim_v))
    for h in range(hp.n_head):
        kvh = h // group
        scores = (q[:, h, :] @ k[:, kvh, :].T) * hp.attn_scale  # (n, n): query p, key j
        scores[~mask] = -np.inf
        out[:, h, :] = softmax(scores) @ v[:, kvh, :]
    return out.reshape(n, hp.n_head * hp.head_dim_v) @ layer.wo.T


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    """GELU, tanh approximation (PyTorch's gelu(approximate='tanh'))."""
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)))


def feed_forward(hp: Hparams, layer: Layer, x: np.ndarray) -> np.ndarray:
    """Gated FFN, x (n, n_embd) already normed: W_down(act(W_gate x) * W_up x),
    act = gelu_tanh for gemma3, silu otherwise."""
    act = gelu_tanh if hp.arch == "gemma3" else silu
    return (act(x @ layer.w_gate.T) * (x @ layer.w_up.T)) @ layer.w_down.T


def transformer_block(hp: Hparams, layer: Layer, x: np.ndarray, theta: np.ndarray, window: int) -> np.ndarray:
    """One layer.  Pre-norm residuals; gemma3 also norms each branch's output
    (post_attention_norm, post_ffw_norm) before adding it."""
    a = attention(hp, layer, rms_norm(x, layer.attn_norm, hp.rms_eps), theta, window)
    if layer.post_attn_norm is not None:
        a = rms_norm(a, layer.post_attn_norm, hp.rms_eps)
    h = x + a
    f = feed_forward(hp, layer, rms_norm(h, layer.ffn_norm, hp.rms_eps))
    if layer.post_ffn_norm is not None:
        f = rms_norm(f, layer.post_ffn_norm, hp.rms_eps)
    return h + f


def softcap(logits: np.ndarray, cap: float) -> np.ndarray:
    """cap * tanh(logits / cap); unchanged for cap <= 0."""
    return logits if cap <= 0 else cap * np.tanh(logits / cap)


def forward(model: Model, tokens, n_ctx: int | None = None) -> np.ndarray:
    """Logits of every position of `tokens` (positions 0..n-1): (n, n_vocab)
    float64.  n_ctx is the context size the sequence runs in (default: its
    length); only phi3's LongRoPE depends on it."""
    hp = model.hp
    tokens = np.asarray(tokens, dtype=np.int64)
    if tokens.ndim != 1 or len(tokens) == 0:
        raise ValueError("tokens must be a non-empty 1-D sequence of ids")
    if tokens.min() < 0 or tokens.max() >= hp.n_vocab:
        raise ValueError(f"token ids must be in [0, {hp.n_vocab})")
    n = len(tokens)
    factors = rope_freq_factors(model, n if n_ctx is None else n_ctx)

    x = embed(model, tokens)
    for il, layer in enumerate(model.layers):
        base, scale = layer_rope(hp, il)
        theta = rope_angles(n, hp.n_rot, base, scale, factors)
        window = hp.sliding_window if hp.swa_layers[il] else 0
        x = transformer_block(hp, layer, x, theta, window)
    x = rms_norm(x, model.output_norm, hp.rms_eps)
    return softcap(x @ model.output.T, hp.final_softcap)


def load_any(path: str):
    """(module, model): this module for its architectures, reference_llama for llama."""
    reader = gguf.GGUFReader(str(path))
    arch = _field(reader, "general.architecture", required=True)
    if arch in RL.SUPPORTED_ARCHS:
        return RL, RL.load_model(str(path))
    import sys
    return sys.modules[__name__], load_model(str(path))


# --------------------------------------------------------------------------
# LoRA adapters (llama.cpp's GGUF adapter format), merged in float64
# --------------------------------------------------------------------------

# GGUF per-layer tensor -> the Layer fields it feeds (fused ones split by rows)
_LORA_LAYER_TARGETS = {
    "attn_q.weight": ("wq",), "attn_k.weight": ("wk",), "attn_v.weight": ("wv",),
    "attn_qkv.weight": ("wq", "wk", "wv"), "attn_output.weight": ("wo",),
    "ffn_gate.weight": ("w_gate",), "ffn_down.weight": ("w_down",),
}


def apply_lora(model, path: str, scale: float = 1.0):
    """`model` (from load_any) with the LoRA adapter at `path` merged in float64
    at user scale `scale`: W + s * B @ A, s = scale * alpha / r (scale alone when
    alpha is 0) -- the same function as applying it unmerged.  The token
    embedding's pair is stored transposed (A [n_vocab, r], B [n_embd, r] as
    NumPy arrays): E + s * A @ B.T.  A tied output stays the unadapted
    embedding (llama.cpp's converter and ember adapt output.weight only when the
    model has one).  Modifies `model` in place and returns it."""
    reader = gguf.GGUFReader(str(path))
    alpha = _field(reader, "adapter.lora.alpha", required=False)
    alpha = 0.0 if alpha is None else float(alpha)
    pairs: dict[str, dict[str, np.ndarray]] = {}
    for t in reader.tensors:
        base, half = t.name.rsplit(".", 1)
        pairs.setdefault(base, {})[half] = dequantize_tensor(t)
    for base, p in pairs.items():
        if base.endswith("_norm.weight"):
            continue
        a, b = p["lora_a"], p["lora_b"]
        if base == "token_embd.weight":
            r = a.shape[1]
            s = scale * alpha / r if alpha else scale
            embd = model.token_embd + s * (a @ b.T)
            model.token_embd = embd  # a tied output keeps the old array
            continue
        r = a.shape[0]
        s = scale * alpha / r if alpha else scale
        delta = s * (b @ a)  # (n_out, n_in)
        if base == "output.weight":
            model.output = model.output + delta
            continue
        il, name = base[len("blk."):].split(".", 1)
        layer = model.layers[int(il)]
        fields = _LORA_LAYER_TARGETS.get(name)
        if name == "ffn_up.weight":
            fields = ("w_gate", "w_up") if model.hp.arch == "phi3" else ("w_up",)
        if fields is None:
            raise ValueError(f"{path}: no reference for LoRA target {base}")
        sizes = [getattr(layer, f).shape[0] for f in fields]
        for f, part in zip(fields, split_rows(delta, sizes, base)):
            setattr(layer, f, getattr(layer, f) + part)
    return model
