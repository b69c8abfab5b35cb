"""A float64 NumPy reference of the llama-family forward pass, read straight
from a GGUF file.  It is the oracle ember's C++ forward pass is tested against,
so it is written to be obviously right rather than fast: one function per step,
no KV cache (the whole token sequence goes through at once, positions
0..n-1), every weight dequantized with the `gguf` package (PyPI) and held as
float64.

Conventions (those of llama.cpp and of the Hugging Face model it was
converted from):

* Shapes.  GGUF lists dimensions in ggml order, fastest first: a matrix with
  GGUF shape [n_in, n_out] is a NumPy array of shape (n_out, n_in) after
  `gguf.quants.dequantize(t.data, t.tensor_type)`, so `y = x @ W.T` maps
  (n, n_in) -> (n, n_out).
* The layer:   h   = x + attn(rmsnorm(x) * attn_norm)
               out = h + ffn(rmsnorm(h) * ffn_norm)
  with rmsnorm(v) = v / sqrt(mean(v^2) + eps) and
  ffn(v) = W_down(silu(W_gate v) * (W_up v)); then a final rmsnorm with
  output_norm and logits = W_out x, where W_out is `output.weight` or, when
  the file has none (tied embeddings), `token_embd.weight`.
* RoPE.  theta_i = pos * freq_base^(-2i / n_rot) / freq_factor_i,
  i = 0 .. n_rot/2 - 1, with freq_factor_i from the optional tensor
  `rope_freqs.weight` (Llama 3.1; 1 when absent), and pos divided by the
  factor under linear rope scaling.  YaRN scaling (rope.scaling.type "yarn")
  is ggml's: pairs below the correction range keep theta (extrapolation),
  pairs above it get theta / factor (interpolation), a linear ramp between,
  and cos/sin are multiplied by 1 + 0.1 ln(factor) (see rope_angles).
  Which dimensions form
  a rotated pair depends on the architecture (ROPE_STYLE below): "normal"
  rotates adjacent pairs (2i, 2i+1) -- llama in GGUF, because llama.cpp's
  converter permutes the Q and K rows of the Hugging Face weights into that
  layout -- and "neox" rotates (i, i + n_rot/2).  Dimensions at and past n_rot
  (partial rotary) are left as they are.
* Attention: causal, scaled by 1/sqrt(head_dim), softmax in float64; grouped
  query attention maps query head h to KV head h // (n_head / n_head_kv).

Usage:

    model = load_model("models/SmolLM2-135M-Instruct.Q4_1.gguf")
    logits = forward(model, [1, 2, 3])        # (3, n_vocab) float64
    ids = greedy_continue(model, prompt_ids, 8)

The command-line wrapper is scripts/reference-forward.  The checks of this
module (against llama.cpp among others) are tests/python/test_reference_llama.py.
"""
from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass, field

# One BLAS thread unless the caller set OPENBLAS_NUM_THREADS: the matrices are
# small, and on a shared 2-core machine multi-threaded OpenBLAS spins (a
# 16-token forward took 0.2 s on one thread and 2-5 s on two under load).  One
# thread also fixes the order of the sums, so the float64 results repeat
# exactly.  The environment variables only work when this module imports numpy
# first; _limit_blas_threads() below covers the case where it was already
# imported (pytest collecting other test files first).
_USER_SET_BLAS_THREADS = "OPENBLAS_NUM_THREADS" in os.environ
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import gguf  # noqa: E402
import numpy as np  # noqa: E402


def _limit_blas_threads() -> None:
    """Best effort, Linux only: one thread for an OpenBLAS already loaded
    (numpy's wheels bundle one with prefixed symbol names)."""
    if _USER_SET_BLAS_THREADS:
        return
    try:
        with open("/proc/self/maps") as f:
            libs = {line.split()[-1] for line in f if "openblas" in line.lower() and ".so" in line}
        for lib in libs:
            handle = ctypes.CDLL(lib)
            for name in ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
                         "openblas_set_num_threads64_", "openblas_set_num_threads"):
                if hasattr(handle, name):
                    getattr(handle, name)(1)
                    break
    except OSError:
        pass


_limit_blas_threads()

# Rotary style per GGUF architecture (general.architecture), as llama.cpp's
# llama_model_rope_type() assigns it.  Only architectures whose forward pass is
# the one in this file may be run (SUPPORTED_ARCHS); the table is wider so that
# it can be read as the mapping to copy.
ROPE_STYLE = {
    "llama": "normal",
    "deci": "normal",
    "baichuan": "normal",
    "granite": "normal",
    "olmo": "normal",
    "qwen2": "neox",
    "qwen3": "neox",
    "phi3": "neox",
    "gemma": "neox",
    "gemma2": "neox",
    "gemma3": "neox",
    "stablelm": "neox",
    "starcoder2": "neox",
    "falcon": "neox",
    "gptneox": "neox",
}

# Architectures whose GGUF tensors and forward pass are exactly the ones below.
# (Others differ in more than the rope style: biases, qk-norm, post-norms,
# embedding scale, other activations ...)
SUPPORTED_ARCHS = ("llama",)

# The tensors of one block, by the name after "blk.N.".  Anything else in a
# block (biases, qk-norm, post-norms, ...) makes load_model() refuse the file
# rather than silently ignore it.
BLOCK_TENSORS = (
    "attn_norm.weight",    # [n_embd]
    "attn_q.weight",       # GGUF [n_embd, n_head * head_dim_k]    -> (n_head*hd_k, n_embd)
    "attn_k.weight",       # GGUF [n_embd, n_head_kv * head_dim_k] -> (n_head_kv*hd_k, n_embd)
    "attn_v.weight",       # GGUF [n_embd, n_head_kv * head_dim_v] -> (n_head_kv*hd_v, n_embd)
    "attn_output.weight",  # GGUF [n_head * head_dim_v, n_embd]    -> (n_embd, n_head*hd_v)
    "ffn_norm.weight",     # [n_embd]
    "ffn_gate.weight",     # GGUF [n_embd, n_ff] -> (n_ff, n_embd)
    "ffn_up.weight",       # GGUF [n_embd, n_ff] -> (n_ff, n_embd)
    "ffn_down.weight",     # GGUF [n_ff, n_embd] -> (n_embd, n_ff)
)


# --------------------------------------------------------------------------
# Hyperparameters
# --------------------------------------------------------------------------

@dataclass
class Hparams:
    arch: str            # general.architecture
    n_layer: int         # {arch}.block_count
    n_embd: int          # {arch}.embedding_length
    n_ff: int            # {arch}.feed_forward_length
    n_head: int          # {arch}.attention.head_count
    n_head_kv: int       # {arch}.attention.head_count_kv (= n_head when absent)
    head_dim_k: int      # {arch}.attention.key_length   (= n_embd / n_head when absent)
    head_dim_v: int      # {arch}.attention.value_length (= n_embd / n_head when absent)
    n_rot: int           # {arch}.rope.dimension_count   (= head_dim_k when absent)
    rope_freq_base: float  # {arch}.rope.freq_base (= 10000 when absent, as llama.cpp)
    rope_style: str      # "normal" or "neox", from ROPE_STYLE[arch]
    rope_scale: float    # positions are divided by this (linear scaling); 1 = none
    rms_eps: float       # {arch}.attention.layer_norm_rms_epsilon
    n_vocab: int         # rows of token_embd
    # YaRN (rope.scaling.type "yarn"); rope_scale is then 1 and these apply:
    yarn_factor: float = 1.0    # {arch}.rope.scaling.factor; 1 = no YaRN
    yarn_orig_ctx: int = 0      # {arch}.rope.scaling.original_context_length (= context_length when absent)
    yarn_beta_fast: float = 32.0  # {arch}.rope.scaling.yarn_beta_fast (llama.cpp's default)
    yarn_beta_slow: float = 1.0   # {arch}.rope.scaling.yarn_beta_slow
    yarn_attn_factor: float = 1.0  # {arch}.rope.scaling.attn_factor: multiplies cos/sin


def _field(reader: gguf.GGUFReader, key: str, default=None, required: bool = False):
    """The value of metadata key `key`, or `default` when the file lacks it."""
    f = reader.get_field(key)
    if f is None:
        if required:
            raise ValueError(f"GGUF metadata key '{key}' is missing")
        return default
    return f.contents()


def attention_shape(key) -> tuple[int, int, int, int, int, int]:
    """(n_embd, n_head, n_head_kv, head_dim_k, head_dim_v, n_rot) from the metadata;
    `key(name, default=None, required=False)` reads "{arch}." + name."""
    n_embd = int(key("embedding_length", required=True))
    n_head = int(key("attention.head_count", required=True))
    n_head_kv = int(key("attention.head_count_kv", n_head))
    if n_head % n_head_kv != 0:
        raise ValueError(f"head_count {n_head} is not a multiple of head_count_kv {n_head_kv}")
    head_dim_k = int(key("attention.key_length", n_embd // n_head))
    head_dim_v = int(key("attention.value_length", n_embd // n_head))
    n_rot = int(key("rope.dimension_count", head_dim_k))
    if n_rot % 2 != 0 or n_rot > head_dim_k:
        raise ValueError(f"rope.dimension_count {n_rot} must be even and <= head dim {head_dim_k}")
    return n_embd, n_head, n_head_kv, head_dim_k, head_dim_v, n_rot


def read_hparams(reader: gguf.GGUFReader) -> Hparams:
    """Every hyperparameter from the GGUF metadata; refuses what it cannot run."""
    arch = _field(reader, "general.architecture", required=True)
    if arch not in SUPPORTED_ARCHS:
        raise ValueError(f"architecture '{arch}' is not supported by this reference "
                         f"(supported: {', '.join(SUPPORTED_ARCHS)})")

    def key(name, default=None, required=False):
        return _field(reader, f"{arch}.{name}", default, required)

    n_embd, n_head, n_head_kv, head_dim_k, head_dim_v, n_rot = attention_shape(key)

    # Rope scaling: none, linear (positions divided by the factor) or YaRN.
    # The older key rope.scale_linear means linear scaling too.
    scaling_type = key("rope.scaling.type", None)
    rope_scale = 1.0
    yarn = {}
    if scaling_type in (None, "none"):
        legacy = key("rope.scale_linear", None)
        if legacy is not None:
            rope_scale = float(legacy)
    elif scaling_type == "linear":
        factor = key("rope.scaling.factor", None)
        if factor is None:
            raise ValueError(f"{arch}.rope.scaling.type is 'linear' but {arch}.rope.scaling.factor is missing")
        rope_scale = float(factor)
    elif scaling_type == "yarn":
        factor = float(key("rope.scaling.factor", 1.0))
        if factor <= 0:
            factor = 1.0  # as for linear: 0 means no scaling
        yarn = dict(
            yarn_factor=factor,
            yarn_orig_ctx=int(key("rope.scaling.original_context_length", key("context_length", required=True))),
            yarn_beta_fast=float(key("rope.scaling.yarn_beta_fast", 32.0)),
            yarn_beta_slow=float(key("rope.scaling.yarn_beta_slow", 1.0)),
            yarn_attn_factor=float(key("rope.scaling.attn_factor", 1.0)),
        )
    else:
        raise ValueError(f"rope scaling type '{scaling_type}' is not supported by this reference "
                         f"(only none, linear and yarn)")
    if rope_scale <= 0:
        rope_scale = 1.0  # llama.cpp reads a factor of 0 as "no scaling"

    embd = next(t for t in reader.tensors if t.name == "token_embd.weight")
    return Hparams(
        arch=arch,
        n_layer=int(key("block_count", required=True)),
        n_embd=n_embd,
        n_ff=int(key("feed_forward_length", required=True)),
        n_head=n_head,
        n_head_kv=n_head_kv,
        head_dim_k=head_dim_k,
        head_dim_v=head_dim_v,
        n_rot=n_rot,
        rope_freq_base=float(key("rope.freq_base", 10000.0)),
        rope_style=ROPE_STYLE[arch],
        rope_scale=rope_scale,
        rms_eps=float(key("attention.layer_norm_rms_epsilon", required=True)),
        n_vocab=int(embd.shape[1]),  # GGUF [n_embd, n_vocab]
        **yarn,
    )


# --------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------

@dataclass
class Layer:
    attn_norm: np.ndarray  # (n_embd,)
    wq: np.ndarray         # (n_head * head_dim_k, n_embd)
    wk: np.ndarray         # (n_head_kv * head_dim_k, n_embd)
    wv: np.ndarray         # (n_head_kv * head_dim_v, n_embd)
    wo: np.ndarray         # (n_embd, n_head * head_dim_v)
    ffn_norm: np.ndarray   # (n_embd,)
    w_gate: np.ndarray     # (n_ff, n_embd)
    w_up: np.ndarray       # (n_ff, n_embd)
    w_down: np.ndarray     # (n_embd, n_ff)


@dataclass
class Model:
    hp: Hparams
    token_embd: np.ndarray   # (n_vocab, n_embd)
    output_norm: np.ndarray  # (n_embd,)
    output: np.ndarray       # (n_vocab, n_embd); the same array as token_embd when tied
    layers: list[Layer] = field(default_factory=list)
    rope_freqs: np.ndarray | None = None  # (n_rot/2,) divisors of the RoPE frequencies, or None


def dequantize_tensor(t: gguf.ReaderTensor) -> np.ndarray:
    """A GGUF tensor as float64, in NumPy order (the reverse of the GGUF shape)."""
    w = gguf.quants.dequantize(t.data, t.tensor_type)
    expected = tuple(int(d) for d in reversed(t.shape))
    w = w.reshape(expected)  # a 1-D tensor comes back as (n,) already
    return w.astype(np.float64)


def load_model(path: str) -> Model:
    """Reads hyperparameters and every weight (as float64) from a GGUF file."""
    reader = gguf.GGUFReader(str(path))
    hp = read_hparams(reader)
    tensors = {t.name: t for t in reader.tensors}

    def get(name: str, shape: tuple[int, ...]) -> np.ndarray:
        if name not in tensors:
            raise ValueError(f"tensor '{name}' is missing from {path}")
        w = dequantize_tensor(tensors[name])
        if w.shape != shape:
            raise ValueError(f"tensor '{name}' has NumPy shape {w.shape}, expected {shape}")
        return w

    # Refuse tensors this forward pass would ignore (biases, qk-norm, ...).
    known = {"token_embd.weight", "output_norm.weight", "output.weight", "rope_freqs.weight"}
    known |= {f"blk.{i}.{n}" for i in range(hp.n_layer) for n in BLOCK_TENSORS}
    unknown = sorted(set(tensors) - known)
    if unknown:
        raise ValueError(f"{path} has tensors this reference does not implement: {unknown[:8]}")

    d, q, kv, kvv = hp.n_embd, hp.n_head * hp.head_dim_k, hp.n_head_kv * hp.head_dim_k, hp.n_head_kv * hp.head_dim_v
    token_embd = get("token_embd.weight", (hp.n_vocab, d))
    output = get("output.weight", (hp.n_vocab, d)) if "output.weight" in tensors else token_embd
    model = Model(hp=hp, token_embd=token_embd, output_norm=get("output_norm.weight", (d,)), output=output)
    if "rope_freqs.weight" in tensors:
        model.rope_freqs = get("rope_freqs.weight", (hp.n_rot // 2,))
    for i in range(hp.n_layer):
        p = f"blk.{i}."
        model.layers.append(Layer(
            attn_norm=get(p + "attn_norm.weight", (d,)),
            wq=get(p + "attn_q.weight", (q, d)),
            wk=get(p + "attn_k.weight", (kv, d)),
            wv=get(p + "attn_v.weight", (kvv, d)),
            wo=get(p + "attn_output.weight", (d, hp.n_head * hp.head_dim_v)),
            ffn_norm=get(p + "ffn_norm.weight", (d,)),
            w_gate=get(p + "ffn_gate.weight", (hp.n_ff, d)),
            w_up=get(p + "ffn_up.weight", (hp.n_ff, d)),
            w_down=get(p + "ffn_down.weight", (d, hp.n_ff)),
        ))
    return model


# --------------------------------------------------------------------------
# The steps of the forward pass
# --------------------------------------------------------------------------

def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    """x: (n, d), weight: (d,) -> (n, d):  x / sqrt(mean(x^2) + eps) * weight."""
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight


def yarn_corr_dims(hp: Hparams) -> tuple[float, float]:
    """YaRN's correction range [low, high] in pair indices (ggml's
    ggml_rope_yarn_corr_dims): the pair that turns `beta` times over the
    original context is n_rot * ln(orig_ctx / (2 pi beta)) / (2 ln base);
    low = floor of that for beta_fast, high = ceil for beta_slow, clamped to
    [0, n_rot - 1]."""
    def dim(beta: float) -> float:
        return hp.n_rot * np.log(hp.yarn_orig_ctx / (beta * 2.0 * np.pi)) / (2.0 * np.log(hp.rope_freq_base))
    low = max(0.0, float(np.floor(dim(hp.yarn_beta_fast))))
    high = min(float(hp.n_rot - 1), float(np.ceil(dim(hp.yarn_beta_slow))))
    return low, high


def rope_angles(hp: Hparams, n_tokens: int, freq_factors: np.ndarray | None = None) -> np.ndarray:
    """(n_tokens, n_rot/2): theta[p, i] = (p / scale) * freq_base^(-2i / n_rot) / freq_factors[i].

    Under YaRN (hp.yarn_factor != 1), theta_extrap = p * freq_base^(-2i/n_rot) / freq_factors[i]
    and theta_interp = theta_extrap / factor are mixed per pair:
    theta = theta_interp * (1 - r_i) + theta_extrap * r_i with
    r_i = 1 - clip((i - low) / max(0.001, high - low), 0, 1) over the correction
    range (yarn_corr_dims): the fast-turning pairs keep their angles, the slow
    ones are interpolated.  (The magnitude correction is rope_mscale.)"""
    pos = np.arange(n_tokens, dtype=np.float64) / hp.rope_scale       # (n,)
    i = np.arange(hp.n_rot // 2, dtype=np.float64)                    # (n_rot/2,)
    inv_freq = hp.rope_freq_base ** (-2.0 * i / hp.n_rot)             # (n_rot/2,)
    if freq_factors is not None:
        inv_freq = inv_freq / np.asarray(freq_factors, dtype=np.float64)
    theta = pos[:, None] * inv_freq[None, :]
    if hp.yarn_factor != 1.0:
        low, high = yarn_corr_dims(hp)
        ramp = 1.0 - np.clip((i - low) / max(0.001, high - low), 0.0, 1.0)  # (n_rot/2,): 1 = extrapolate
        theta = (theta / hp.yarn_factor) * (1.0 - ramp) + theta * ramp
    return theta


def rope_mscale(hp: Hparams) -> float:
    """The factor on cos and sin: YaRN's attention temperature
    attn_factor * (1 + 0.1 ln(factor)); 1 without YaRN."""
    if hp.yarn_factor == 1.0:
        return 1.0
    return hp.yarn_attn_factor * (1.0 + 0.1 * np.log(hp.yarn_factor))


def apply_rope(x: np.ndarray, theta: np.ndarray, n_rot: int, style: str, mscale: float = 1.0) -> np.ndarray:
    """x: (n, heads, head_dim), theta: (n, n_rot/2) -> (n, heads, head_dim).

    Each pair (a, b) of the first n_rot dimensions is rotated by its angle:
    (a cos - b sin, a sin + b cos), cos and sin multiplied by mscale (YaRN).
    "normal": pair i is dims (2i, 2i+1); "neox": pair i is dims (i, i + n_rot/2).
    Dims >= n_rot are unchanged."""
    cos = mscale * np.cos(theta)[:, None, :]  # (n, 1, n_rot/2), broadcast over heads
    sin = mscale * np.sin(theta)[:, None, :]
    out = x.copy()
    if style == "normal":
        a, b = x[..., 0:n_rot:2], x[..., 1:n_rot:2]
        out[..., 0:n_rot:2] = a * cos - b * sin
        out[..., 1:n_rot:2] = a * sin + b * cos
    elif style == "neox":
        half = n_rot // 2
        a, b = x[..., :half], x[..., half:n_rot]
        out[..., :half] = a * cos - b * sin
        out[..., half:n_rot] = a * sin + b * cos
    else:
        raise ValueError(f"unknown rope style '{style}'")
    return out


def softmax(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis; -inf entries get probability 0."""
    m = np.max(x, axis=-1, keepdims=True)
    e = np.exp(x - m)
    return e / np.sum(e, axis=-1, keepdims=True)


def attention(hp: Hparams, layer: Layer, x: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Causal grouped-query self-attention.  x: (n, n_embd) (already normed) -> (n, n_embd)."""
    n = x.shape[0]
    q = (x @ layer.wq.T).reshape(n, hp.n_head, hp.head_dim_k)      # (n, n_head, hd_k)
    k = (x @ layer.wk.T).reshape(n, hp.n_head_kv, hp.head_dim_k)   # (n, n_head_kv, hd_k)
    v = (x @ layer.wv.T).reshape(n, hp.n_head_kv, hp.head_dim_v)   # (n, n_head_kv, hd_v)
    q = apply_rope(q, theta, hp.n_rot, hp.rope_style, rope_mscale(hp))
    k = apply_rope(k, theta, hp.n_rot, hp.rope_style, rope_mscale(hp))

    scale = 1.0 / np.sqrt(hp.head_dim_k)
    future = np.triu(np.ones((n, n), dtype=bool), k=1)  # future[i, j]: j > i, masked
    group = hp.n_head // hp.n_head_kv                   # query heads per KV head
    out = np.empty((n, hp.n_head, hp.head_dim_v))
    for h in range(hp.n_head):
        kvh = h // group
        scores = (q[:, h, :] @ k[:, kvh, :].T) * scale  # (n, n): query i, key j
        scores[future] = -np.inf
        out[:, h, :] = softmax(scores) @ v[:, kvh, :]   # (n, hd_v)
    return out.reshape(n, hp.n_head * hp.head_dim_v) @ layer.wo.T  # (n, n_embd)


def silu(x: np.ndarray) -> np.ndarray:
    """x * sigmoid(x)."""
    return x / (1.0 + np.exp(-x))


def feed_forward(layer: Layer, x: np.ndarray) -> np.ndarray:
    """SwiGLU.  x: (n, n_embd) (already normed) -> (n, n_embd)."""
    gate = x @ layer.w_gate.T                  # (n, n_ff)
    up = x @ layer.w_up.T                      # (n, n_ff)
    return (silu(gate) * up) @ layer.w_down.T  # (n, n_embd)


def transformer_block(hp: Hparams, layer: Layer, x: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """One layer with pre-norm residuals.  x: (n, n_embd) -> (n, n_embd)."""
    h = x + attention(hp, layer, rms_norm(x, layer.attn_norm, hp.rms_eps), theta)
    return h + feed_forward(layer, rms_norm(h, layer.ffn_norm, hp.rms_eps))


def forward(model: Model, tokens) -> np.ndarray:
    """Logits for every position of `tokens` (positions 0..n-1): (n, n_vocab) float64."""
    hp = model.hp
    tokens = np.asarray(tokens, dtype=np.int64)
    if tokens.ndim != 1 or len(tokens) == 0:
        raise ValueError("tokens must be a non-empty 1-D sequence of ids")
    if tokens.min() < 0 or tokens.max() >= hp.n_vocab:
        raise ValueError(f"token ids must be in [0, {hp.n_vocab})")

    x = model.token_embd[tokens]                 # (n, n_embd)
    theta = rope_angles(hp, len(tokens), model.rope_freqs)  # (n, n_rot/2)
    for layer in model.layers:
        x = transformer_block(hp, layer, x, theta)
    x = rms_norm(x, model.output_norm, hp.rms_eps)
    return x @ model.output.T                    # (n, n_vocab)


def greedy_continue(model: Model, tokens, n_new: int, stop_ids=()) -> list[int]:
    """Appends up to n_new argmax tokens (recomputing the whole sequence each
    step; there is no KV cache).  Returns only the new ids."""
    seq = list(int(t) for t in tokens)
    new: list[int] = []
    for _ in range(n_new):
        nxt = int(np.argmax(forward(model, seq)[-1]))
        new.append(nxt)
        seq.append(nxt)
        if nxt in stop_ids:
            break
    return new


def token_strings(path: str) -> list[str]:
    """The vocabulary (tokenizer.ggml.tokens) of a GGUF file, for printing ids."""
    reader = gguf.GGUFReader(str(path))
    return list(_field(reader, "tokenizer.ggml.tokens", [], required=True))
