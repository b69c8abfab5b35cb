"""Checks of the float64 NumPy reference forward pass (reference_llama.py),
the oracle ember's C++ forward pass is tested against.

In ember's venv (numpy, gguf, pytest) the self-checks and the greedy "Paris"
check run; the comparisons with llama.cpp (llama_cpp) and with Hugging Face
transformers skip with a message.  All of them run in the scratch venv that
scripts/make-tokenizer-testdata describes (llama-cpp-python 0.3.36,
transformers 5.23.0, torch 2.15.0, gguf 0.19.0, numpy 2.4.6; plus
`pip install accelerate pytest`, which transformers' GGUF loader and this
command need):

    /tmp/tokref/bin/python -m pytest tests/python/test_reference_llama.py -v

Measured with that command's environment on SmolLM2-135M-Instruct.Q4_1.gguf
(printed by the tests with -s), relative L2 error per position
||ref - other|| / ||other|| of the logits:

* vs transformers (GGUF dequantized by transformers, Q/K un-permuted back to
  the HF layout, HF's NeoX-style rotate_half RoPE, float32 kernels), the
  23-token chat prompt + answer:  max 5.0e-06, median 1.2e-06, max abs
  8.9e-05, top-1 23/23 (1.05e-06 / 3.3e-07 when asked for float64 weights).
  This is float32 rounding: the reference's layout, RoPE, GQA and masking
  agree with an independent implementation.
* vs llama.cpp (Llama(logits_all=True, n_ctx=512) defaults: f16 KV cache,
  activations quantized to Q8_1/Q8_0 for the quantized matmuls):
  chat prompt (16 tokens): max 0.084, median 0.039, top-1 14/16 (both misses
  are near-ties: 11.78 vs 11.84 and 23.43 vs 23.53);
  "The quick brown fox ..." (26 tokens): max 0.118, median 0.032, top-1 26/26.
  That is llama.cpp's own noise on this model, not the reference's: llama.cpp
  against itself with an f32 instead of an f16 KV cache differs by max 0.166,
  median 0.035, and with n_batch=1 by max 0.104, median 0.025.  A wrong rope
  style (NeoX pairs) gives median 1.3 (checked below as a negative control).

Keep it short: the whole file runs in well under a minute on 2 cores.
"""
import subprocess
import sys

import numpy as np
import pytest

import reference_llama as R
from conftest import ROOT, model_path

SMOLLM = "SmolLM2-135M-Instruct.Q4_1.gguf"

# "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
# tokenized by llama.cpp (llama-cpp-python 0.3.36, special tokens parsed, no BOS
# added); test_chat_prompt_tokens re-checks it where llama_cpp is importable.
CHAT_PROMPT = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
CHAT_TOKENS = [1, 4093, 198, 1780, 314, 260, 3575, 282, 4649, 47, 2, 198, 1, 520, 9531, 198]
# The reference's greedy answer: "The capital of France is Paris." <|im_end|>
CHAT_ANSWER = [504, 3575, 282, 4649, 314, 7042, 30, 2]
FOX_PROMPT = ("The quick brown fox jumps over the lazy dog. Once upon a time, "
              "in a land far away, there lived a king who")


@pytest.fixture(scope="module")
def smollm():
    return R.load_model(str(model_path(SMOLLM)))


@pytest.fixture(scope="module")
def vocab():
    return R.token_strings(str(model_path(SMOLLM)))


def rel_l2(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per row: ||a - b|| / ||b||."""
    return np.linalg.norm(a - b, axis=-1) / np.linalg.norm(b, axis=-1)


def detok(vocab, ids) -> str:
    """Byte-level BPE pieces joined, with GPT-2's space/newline markers undone."""
    return "".join(vocab[i] for i in ids).replace("Ġ", " ").replace("Ċ", "\n")


# ---------------------------------------------------------------- self-checks

def test_hparams_from_metadata(smollm):
    hp = smollm.hp
    assert (hp.arch, hp.n_layer, hp.n_embd, hp.n_ff) == ("llama", 30, 576, 1536)
    assert (hp.n_head, hp.n_head_kv, hp.head_dim_k, hp.head_dim_v, hp.n_rot) == (9, 3, 64, 64, 64)
    assert hp.rope_freq_base == 100000.0 and hp.rope_style == "normal" and hp.rope_scale == 1.0
    assert abs(hp.rms_eps - 1e-5) < 1e-12 and hp.n_vocab == 49152
    assert smollm.output is smollm.token_embd  # tied: the file has no output.weight


def test_shapes_and_finite(smollm):
    logits = R.forward(smollm, CHAT_TOKENS[:5])
    assert logits.shape == (5, smollm.hp.n_vocab) and logits.dtype == np.float64
    assert np.isfinite(logits).all()
    assert 1.0 < np.std(logits[-1]) < 100.0  # neither collapsed nor blown up


def test_causal(smollm):
    """A position's logits do not depend on later tokens."""
    full = R.forward(smollm, CHAT_TOKENS)
    prefix = R.forward(smollm, CHAT_TOKENS[:7])
    np.testing.assert_allclose(prefix, full[:7], rtol=0, atol=1e-9)


def test_rope_properties():
    hp = R.Hparams(arch="llama", n_layer=1, n_embd=32, n_ff=8, n_head=2, n_head_kv=1,
                   head_dim_k=16, head_dim_v=16, n_rot=12, rope_freq_base=10000.0,
                   rope_style="normal", rope_scale=1.0, rms_eps=1e-5, n_vocab=4)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 2, 16))            # (n, heads, head_dim)
    theta = R.rope_angles(hp, 5)                   # (n, n_rot/2)
    assert theta.shape == (5, 6)
    assert theta[1, 1] == pytest.approx(10000.0 ** (-2 / 12))
    for style in ("normal", "neox"):
        y = R.apply_rope(x, theta, hp.n_rot, style)
        np.testing.assert_allclose(y[0], x[0], atol=0)                # position 0: identity
        np.testing.assert_allclose(y[..., 12:], x[..., 12:], atol=0)  # past n_rot: untouched
        np.testing.assert_allclose(np.linalg.norm(y, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-13)
    # NeoX is "normal" with the rotated dims reordered: (0,2,4,..,1,3,5,..) <-> (0..5, 6..11)
    perm = np.r_[0:12:2, 1:12:2, 12:16]
    np.testing.assert_allclose(R.apply_rope(x[..., perm], theta, 12, "neox"),
                               R.apply_rope(x, theta, 12, "normal")[..., perm], atol=1e-14)
    # relative position: <rope(q, p), rope(k, p - 1)> is the same for every p
    qs = R.apply_rope(np.repeat(x[:1, :1], 5, axis=0), theta, 12, "normal")[:, 0]  # q0 at 0..4
    ks = R.apply_rope(np.repeat(x[:1, 1:], 5, axis=0), theta, 12, "normal")[:, 0]  # k0 at 0..4
    dots = [np.dot(qs[p], ks[p - 1]) for p in range(1, 5)]
    np.testing.assert_allclose(dots, dots[0], rtol=1e-12)


def test_yarn_and_freq_factors():
    """YaRN as ggml computes it: pairs below the correction range keep their
    angle, pairs above it are divided by the factor, a linear ramp between;
    cos/sin grow by 1 + 0.1 ln(factor).  rope_freqs divides the angles."""
    hp = R.Hparams(arch="llama", n_layer=1, n_embd=256, n_ff=8, n_head=4, n_head_kv=4,
                   head_dim_k=64, head_dim_v=64, n_rot=64, rope_freq_base=10000.0,
                   rope_style="normal", rope_scale=1.0, rms_eps=1e-5, n_vocab=4,
                   yarn_factor=4.0, yarn_orig_ctx=256)
    # pair d turns orig_ctx / (2 pi base^(2d/n_rot)) times over the original context:
    # beta_fast = 32 turns at d = 0.84 (floor: 0), beta_slow = 1 turn at d = 12.88 (ceil: 13)
    assert R.yarn_corr_dims(hp) == (0.0, 13.0)
    plain = R.rope_angles(R.Hparams(**{**hp.__dict__, "yarn_factor": 1.0}), 10)
    yarn = R.rope_angles(hp, 10)
    np.testing.assert_allclose(yarn[:, 0], plain[:, 0], rtol=1e-15)             # ramp 1: extrapolate
    np.testing.assert_allclose(yarn[:, 13:], plain[:, 13:] / 4.0, rtol=1e-15)   # ramp 0: interpolate
    r = 1.0 - 5.0 / 13.0                                                        # pair 5: on the ramp
    np.testing.assert_allclose(yarn[:, 5], plain[:, 5] * (r + (1.0 - r) / 4.0), rtol=1e-14)
    assert R.rope_mscale(hp) == pytest.approx(1.0 + 0.1 * np.log(4.0))
    ff = np.linspace(1.0, 8.0, 32)
    np.testing.assert_allclose(R.rope_angles(hp, 10, ff)[:, 13:], plain[:, 13:] / ff[13:] / 4.0, rtol=1e-15)


def test_rms_norm_and_silu():
    x = np.array([[3.0, 4.0]])
    np.testing.assert_allclose(R.rms_norm(x, np.array([1.0, 2.0]), 0.0),
                               [[3 / np.sqrt(12.5), 8 / np.sqrt(12.5)]])
    np.testing.assert_allclose(R.silu(np.array([0.0, 1.0])), [0.0, 1 / (1 + np.exp(-1))])


def test_greedy_says_paris(smollm, vocab):
    new = R.greedy_continue(smollm, CHAT_TOKENS, 8, stop_ids=(2,))
    text = detok(vocab, new)
    print(f"\ngreedy: {new} {text!r}")
    assert "Paris" in text
    assert new == CHAT_ANSWER


def test_cli(tmp_path):
    """scripts/reference-forward prints the top tokens and saves every position's logits."""
    model = model_path(SMOLLM)
    out = tmp_path / "logits.npy"
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "reference-forward"), str(model),
                        "--tokens", ",".join(map(str, CHAT_TOKENS)), "--top", "3", "--out", str(out)],
                       capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    assert "'The'" in r.stdout and "'Paris'" in r.stdout
    logits = np.load(out)
    assert logits.shape == (len(CHAT_TOKENS), 49152) and logits.dtype == np.float64


# ----------------------------------------------------- independent references

def llama_cpp_logits(path: str, text: str):
    """llama.cpp's tokens and logits (every position) for `text`."""
    try:
        from llama_cpp import Llama
    except ImportError:
        pytest.skip("SKIPPED: llama_cpp is not importable here; run this file with "
                    "/tmp/tokref/bin/python -m pytest (see the module docstring)")
    llm = Llama(path, logits_all=True, n_ctx=512, verbose=False)
    tokens = llm.tokenize(text.encode(), add_bos=False, special=True)
    llm.eval(tokens)
    return tokens, np.array(llm.scores[: len(tokens)], dtype=np.float64)


def test_chat_prompt_tokens():
    tokens, _ = llama_cpp_logits(str(model_path(SMOLLM)), CHAT_PROMPT)
    assert tokens == CHAT_TOKENS


@pytest.mark.parametrize("text", [CHAT_PROMPT, FOX_PROMPT], ids=["chat", "fox"])
def test_against_llama_cpp(smollm, text):
    tokens, theirs = llama_cpp_logits(str(model_path(SMOLLM)), text)
    ours = R.forward(smollm, tokens)
    rel = rel_l2(ours, theirs)
    top1 = ours.argmax(1) == theirs.argmax(1)
    print(f"\nvs llama.cpp, {len(tokens)} tokens: rel L2 max {rel.max():.3g} median {np.median(rel):.3g}, "
          f"max abs {np.abs(ours - theirs).max():.3g}, top-1 {top1.sum()}/{len(tokens)}")
    print("rel per position:", np.array2string(rel, precision=3))
    # llama.cpp's quantized activations and f16 KV cache move its own logits by
    # up to ~0.17 (median ~0.03) on this model (see the docstring).
    assert np.median(rel) < 0.06 and rel.max() < 0.25
    assert top1.mean() >= 0.8
    for i in np.nonzero(~top1)[0]:  # disagreements only on near-ties
        a, b = ours[i].argmax(), theirs[i].argmax()
        assert abs(ours[i, a] - ours[i, b]) < 0.5, f"position {i}: {a} vs {b}"

    # Negative control: the wrong rope style is far outside that noise.
    smollm.hp.rope_style = "neox"
    try:
        wrong = rel_l2(R.forward(smollm, tokens), theirs)
    finally:
        smollm.hp.rope_style = "normal"
    assert np.median(wrong) > 0.3


def test_against_transformers(smollm):
    """transformers builds its own LlamaForCausalLM from the same GGUF (its own
    dequantization, Q/K un-permuted, NeoX-style RoPE): agreement to float32 rounding."""
    try:
        import accelerate  # noqa: F401  (transformers' GGUF loader needs it)
        import torch
        from transformers import AutoModelForCausalLM
    except ImportError:
        pytest.skip("SKIPPED: torch/transformers/accelerate are not importable here; run this "
                    "file with /tmp/tokref/bin/python -m pytest (see the module docstring)")
    path = model_path(SMOLLM)
    hf = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    hf.eval()
    tokens = CHAT_TOKENS + CHAT_ANSWER[:-1]
    with torch.no_grad():
        theirs = hf(torch.tensor([tokens])).logits[0].double().numpy()
    ours = R.forward(smollm, tokens)
    rel = rel_l2(ours, theirs)
    print(f"\nvs transformers, {len(tokens)} tokens: rel L2 max {rel.max():.3g} median {np.median(rel):.3g}, "
          f"max abs {np.abs(ours - theirs).max():.3g}")
    assert rel.max() < 1e-4
    assert (ours.argmax(1) == theirs.argmax(1)).all()
