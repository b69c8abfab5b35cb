"""The float64 NumPy references (reference_arch.py for gemma3 / qwen2 / qwen3 /
phi3, reference_llama.py for llama) against Hugging Face transformers' float64
logits of the fixtures in tests/data/arch/ (written by scripts/make-arch-testdata;
the README there lists them).  Needs only numpy and gguf: the transformers
logits are stored in the .npz files.

Each fixture has three prompts of random ids (12, 30, 45 tokens); the error is
the relative L2 per position, ||ref - hf|| / ||hf||, and every position must be
within 1e-6.  Measured (transformers 5.24.0 run entirely in float64):

    qwen2, qwen3, gemma3, gemma3-linear   <= 2e-14
    phi3, phi3-partial                    <= 4e-12
    llama                                 <= 1.3e-8 (the converter computes
                                          the Llama 3 rope factors in float32)

The negative controls change one thing the architecture depends on (the
sliding window, the softcap, the local rope base, QK-norm, biases, LongRoPE's
factor choice, ...) and require the logits to move by at least 1e-3 at the
median position -- measured 2e-2 .. 1.2, so each of them is something these
fixtures would catch.
"""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

import reference_arch as A
import reference_llama as RL

DATA = Path(__file__).resolve().parents[1] / "data" / "arch"
FIXTURES = ["llama", "gemma3", "gemma3-linear", "qwen2", "qwen3", "phi3", "phi3-partial"]
N_PROMPTS = 3
MAX_REL_L2 = 1e-6       # reference vs transformers, every position
CONTROL_MIN = 1e-3      # a negative control must move the median position by more


def rel_l2(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per row: ||a - b|| / ||b||."""
    return np.linalg.norm(a - b, axis=-1) / np.linalg.norm(b, axis=-1)


_MODELS: dict = {}


def loaded(name: str):
    """(module, model) for a fixture, loaded once."""
    if name not in _MODELS:
        path = DATA / f"{name}.gguf"
        assert path.exists(), f"{path} is missing: the fixtures are committed (scripts/make-arch-testdata writes them)"
        _MODELS[name] = A.load_any(str(path))
    return _MODELS[name]


def prompts(name: str) -> list[tuple[np.ndarray, np.ndarray]]:
    z = np.load(DATA / f"{name}.npz")
    return [(z[f"ids_{i}"], z[f"logits_{i}"]) for i in range(N_PROMPTS)]


def errors(name: str, model=None, **kw) -> np.ndarray:
    """Relative L2 of every position of every prompt, reference vs transformers."""
    mod, m = loaded(name)
    m = m if model is None else model
    return np.concatenate([rel_l2(mod.forward(m, ids, **kw), hf) for ids, hf in prompts(name)])


@pytest.mark.parametrize("name", FIXTURES)
def test_reference_matches_transformers(name):
    mod, m = loaded(name)
    worst = []
    for i, (ids, hf) in enumerate(prompts(name)):
        assert hf.shape == (len(ids), m.hp.n_vocab), f"{name}.npz logits_{i} has shape {hf.shape}"
        assert np.std(hf) > 0.1 and np.isfinite(hf).all()
        e = rel_l2(mod.forward(m, ids), hf)
        print(f"{name} prompt {i} ({len(ids)} tokens): rel L2 max {e.max():.2e} median {np.median(e):.2e}")
        worst.append(e.max())
        bad = np.nonzero(e > MAX_REL_L2)[0]
        assert len(bad) == 0, (f"{name} prompt {i}: positions {bad.tolist()} differ from transformers by "
                               f"{e[bad].max():.3g} (relative L2), more than {MAX_REL_L2}")


# ------------------------------------------------------- metadata as read

def test_gemma3_hparams():
    hp = loaded("gemma3")[1].hp
    assert (hp.n_layer, hp.n_embd, hp.n_head, hp.n_head_kv, hp.head_dim_k, hp.n_rot) == (6, 32, 4, 1, 16, 16)
    assert hp.swa_layers == (True,) * 5 + (False,)  # no pattern key: llama.cpp's period 6
    assert (hp.sliding_window, hp.rope_freq_base_swa, hp.rope_freq_base) == (8, 10000.0, 1000000.0)
    assert hp.final_softcap == 30.0 and hp.rope_scale == 1.0
    assert hp.embd_scale == pytest.approx(np.sqrt(32), rel=1e-15) and hp.attn_scale == 0.25
    hp = loaded("gemma3-linear")[1].hp
    assert (hp.sliding_window, hp.rope_scale, hp.final_softcap, hp.n_head_kv) == (5, 8.0, 0.0, 2)


def test_gemma3_norms_stored_with_the_one_added():
    """The converter writes Gemma's (1 + w): the stored norm weights are around 1."""
    m = loaded("gemma3")[1]
    for w in (m.output_norm, m.layers[0].attn_norm, m.layers[0].q_norm, m.layers[0].post_ffn_norm):
        assert 0.5 < np.mean(w) < 1.5 and np.std(w) > 0.05


def test_qwen_phi_hparams():
    hp = loaded("qwen3")[1].hp
    assert (hp.head_dim_k, hp.n_rot, hp.n_head * hp.head_dim_k, hp.n_embd) == (24, 24, 96, 64)
    assert loaded("qwen2")[1].layers[0].bq is not None
    m = loaded("phi3")[1]
    assert (m.hp.n_rot, m.hp.rope_orig_ctx, m.hp.rope_attn_factor) == (16, 16, 1.5)
    assert m.rope_factors_long.shape == (8,) and m.output is not m.token_embd
    m = loaded("phi3-partial")[1]
    assert (m.hp.n_rot, m.hp.head_dim_k, m.hp.rope_orig_ctx, m.hp.rope_attn_factor) == (12, 16, 256, 1.5)
    assert m.output is m.token_embd


class _Field:
    def __init__(self, v):
        self.v = v

    def contents(self):
        return self.v


class _Reader:
    def __init__(self, fields):
        self.fields = fields

    def get_field(self, key):
        return _Field(self.fields[key]) if key in self.fields else None


def test_swa_pattern_formats():
    key = "gemma3.attention.sliding_window_pattern"
    f = A.swa_layers_from_metadata
    assert f(_Reader({}), "gemma3", 8, 512) == (True,) * 5 + (False,) + (True,) * 2
    assert f(_Reader({key: 2}), "gemma3", 4, 512) == (True, False, True, False)
    assert f(_Reader({key: 0}), "gemma3", 3, 512) == (True, True, True)
    assert f(_Reader({key: [False, True, True]}), "gemma3", 3, 512) == (False, True, True)
    assert f(_Reader({key: 2}), "gemma3", 4, 0) == (False,) * 4  # no window: no local layers


def test_visible_mask():
    v = A.visible(6, 3)
    assert v[5].tolist() == [False, False, False, True, True, True]   # 5 - j < 3
    assert v[1].tolist() == [True, True, False, False, False, False]  # causal
    assert A.visible(4, 0).sum() == 10


def test_causal_prefix():
    """A position's logits do not depend on later tokens (sliding window included)."""
    mod, m = loaded("gemma3")
    ids = prompts("gemma3")[2][0]
    np.testing.assert_allclose(mod.forward(m, ids[:20]), mod.forward(m, ids)[:20], rtol=0, atol=1e-12)


# ------------------------------------------------------- negative controls

def _edit(name, change):
    m = copy.deepcopy(loaded(name)[1])
    change(m)
    return m


def _no_window(m): m.hp.sliding_window = 0
def _no_softcap(m): m.hp.final_softcap = 0.0
def _all_global(m): m.hp.swa_layers = (False,) * m.hp.n_layer
def _all_local(m): m.hp.swa_layers = (True,) * m.hp.n_layer
def _local_uses_global_base(m): m.hp.rope_freq_base_swa = m.hp.rope_freq_base
def _no_embd_scale(m): m.hp.embd_scale = 1.0
def _no_linear_scaling(m): m.hp.rope_scale = 1.0
def _no_attn_factor(m): m.hp.rope_attn_factor = 1.0
def _swap_longrope(m): m.rope_factors_long, m.rope_factors_short = m.rope_factors_short, m.rope_factors_long
def _no_rope_freqs(m): m.rope_freqs = None


def _norm_plus_one(m):
    for layer in m.layers:
        layer.attn_norm = layer.attn_norm + 1.0


def _no_post_norms(m):
    for layer in m.layers:
        layer.post_attn_norm = layer.post_ffn_norm = None


def _no_qk_norm(m):
    for layer in m.layers:
        layer.q_norm = layer.k_norm = None


def _no_bias(m):
    for layer in m.layers:
        layer.bq = layer.bk = layer.bv = None


def _swap_gate_up(m):
    for layer in m.layers:
        layer.w_gate, layer.w_up = layer.w_up, layer.w_gate


CONTROLS = [
    ("gemma3", _no_window), ("gemma3", _no_softcap), ("gemma3", _all_global), ("gemma3", _all_local),
    ("gemma3", _local_uses_global_base), ("gemma3", _norm_plus_one), ("gemma3", _no_embd_scale),
    ("gemma3", _no_post_norms), ("gemma3", _no_qk_norm),
    ("gemma3-linear", _no_linear_scaling), ("gemma3-linear", _no_window),
    ("qwen2", _no_bias), ("qwen3", _no_qk_norm),
    ("phi3", _no_attn_factor), ("phi3", _swap_longrope), ("phi3", _swap_gate_up),
    ("phi3-partial", _no_attn_factor), ("llama", _no_rope_freqs),
]


@pytest.mark.parametrize("name,change", CONTROLS, ids=[f"{n}{c.__name__}" for n, c in CONTROLS])
def test_negative_control(name, change):
    e = errors(name, _edit(name, change))
    print(f"{name} {change.__name__.lstrip('_')}: rel L2 max {e.max():.3g} median {np.median(e):.3g}")
    assert np.median(e) > CONTROL_MIN, f"{name}: {change.__name__} does not change the logits ({np.median(e):.2e})"


def test_gemma3_without_softcap_is_the_uncapped_logits():
    """The softcap is the last step: undoing it on transformers' logits gives the reference's uncapped ones."""
    mod, m = loaded("gemma3")
    ids, hf = prompts("gemma3")[1]
    raw = mod.forward(_edit("gemma3", _no_softcap), ids)
    np.testing.assert_allclose(30.0 * np.arctanh(hf / 30.0), raw, rtol=1e-9, atol=1e-9)


def test_phi3_longrope_selection():
    """transformers picks the long factors when the sequence is longer than the
    original context (16): the 12-token prompt ran with the short ones, the 30-
    and 45-token prompts with the long ones.  Here n_ctx says which."""
    mod, m = loaded("phi3")
    (ids0, hf0), (ids1, hf1), _ = prompts("phi3")
    assert rel_l2(mod.forward(m, ids0, n_ctx=16), hf0).max() < MAX_REL_L2      # short: n_ctx <= 16
    assert rel_l2(mod.forward(m, ids1, n_ctx=17), hf1).max() < MAX_REL_L2      # long: n_ctx > 16
    assert np.median(rel_l2(mod.forward(m, ids0, n_ctx=17), hf0)) > CONTROL_MIN
    assert np.median(rel_l2(mod.forward(m, ids1, n_ctx=16), hf1)) > CONTROL_MIN
    # phi3-partial (original context 256): short factors for every prompt
    mod, m = loaded("phi3-partial")
    ids, hf = prompts("phi3-partial")[2]
    assert rel_l2(mod.forward(m, ids, n_ctx=256), hf).max() < MAX_REL_L2
    assert np.median(rel_l2(mod.forward(m, ids, n_ctx=257), hf)) > CONTROL_MIN


def test_refuses_other_architectures():
    with pytest.raises(ValueError, match="not supported"):
        A.load_model(str(DATA / "llama.gguf"))
    assert A.load_any(str(DATA / "llama.gguf"))[0] is RL
