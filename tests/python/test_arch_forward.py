"""ember's forward pass on every architecture fixture in tests/data/arch/
(llama, gemma3, gemma3-linear, qwen2, qwen3, phi3, phi3-partial; see the README
there) against Hugging Face transformers' float64 logits stored beside them.

ember's logits come from `ember-testtool logits MODEL OUT --threads 2 IDS...`
(one session; n_ctx = the number of ids unless --ctx is given).  The error is
the relative L2 per position, ||ember - hf|| / ||hf||, and every position must
be within the bound of its session variant:

    f32      --kv f32, one batch                         1e-4
    f16      the default F16 KV cache                    5e-3
    batch4   --kv f32 --batch 4: many batches; Gemma 3's 1e-4
             sliding-window layers (window 8 and 5) see their window
             cross batch boundaries (and a ring cache wrap)
    batch1   --kv f32 --batch 1: token by token          1e-4
    split    --kv f32 --split n/3,2n/3: three eval()     1e-4
             calls (cache continuation)

The weights are F32, so ember should be near float32 rounding.  Measured
(x86-64, the build of the commit that added these tests, default kernel set):
F32 cache, any batching or split, <= 1.2e-6 on every fixture (phi3's long-
factor prompts are the largest); F16 cache <= 1.3e-3.

LongRoPE (phi3): ember is expected to choose the factors as llama.cpp does,
rope_factors_long when the session's n_ctx exceeds
phi3.rope.scaling.original_context_length and rope_factors_short otherwise.
With n_ctx = the number of ids that is also transformers' choice for these
prompts (phi3: original context 16, so the 12-id prompt runs with the short
factors and the 30- and 45-id prompts with the long ones; phi3-partial: 256,
short everywhere).  test_phi3_longrope_follows_n_ctx also runs with --ctx 64
and 512 and compares with the float64 reference (reference_arch.py) for that
n_ctx.

When ember fails or differs, the message says how: ember-testtool's error, or
which positions are off, by how much, and which simple mistake of the
reference (no sliding window, softcap skipped, norms +1 twice, wrong LongRoPE
set, ...) reproduces ember's logits best -- a pointer, not a proof.
"""
from __future__ import annotations

import copy
import itertools
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

import reference_arch as A

DATA = Path(__file__).resolve().parents[1] / "data" / "arch"
FIXTURES = ["llama", "gemma3", "gemma3-linear", "qwen2", "qwen3", "phi3", "phi3-partial"]
N_PROMPTS = 3
THREADS = "2"

# variant -> (ember-testtool options for a prompt of n ids, bound)
VARIANTS = {
    "f32": (lambda n: ["--kv", "f32"], 1e-4),
    "f16": (lambda n: [], 5e-3),
    "batch4": (lambda n: ["--kv", "f32", "--batch", "4"], 1e-4),
    "batch1": (lambda n: ["--kv", "f32", "--batch", "1"], 1e-4),
    "split": (lambda n: ["--kv", "f32", "--split", f"{n // 3},{2 * n // 3}"], 1e-4),
}

_COUNTER = itertools.count()


def rel_l2(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per row: ||a - b|| / ||b||."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return np.linalg.norm(a - b, axis=-1) / np.linalg.norm(b, axis=-1)


def fixture_path(name: str) -> Path:
    p = DATA / f"{name}.gguf"
    assert p.exists(), f"{p} is missing: the fixtures are committed (scripts/make-arch-testdata writes them)"
    return p


def prompts(name: str) -> list[tuple[np.ndarray, np.ndarray]]:
    z = np.load(DATA / f"{name}.npz")
    return [(z[f"ids_{i}"], z[f"logits_{i}"]) for i in range(N_PROMPTS)]


def ember_logits(testtool, name: str, ids, tmp_path: Path, opts: list[str]) -> np.ndarray:
    """ember's logits of every position, (n_tokens, n_vocab) float32."""
    out = tmp_path / f"logits-{next(_COUNTER)}.f32"
    cmd = [str(testtool), "logits", str(fixture_path(name)), str(out), "--threads", THREADS, *opts,
           ",".join(str(int(t)) for t in ids)]
    env = dict(os.environ)
    env.pop("EMBER_ISA", None)
    env["EMBER_PRECISION"] = "exact"  # the 16-bit path: these fixtures' bounds are float rounding
    r = subprocess.run(cmd, capture_output=True, check=False, env=env)
    if r.returncode != 0:
        pytest.fail(f"{name}: ember-testtool logits failed (exit {r.returncode}) on {fixture_path(name).name} "
                    f"({architecture(name)}):\n  {r.stderr.decode(errors='replace').strip()}\n"
                    f"  command: {' '.join(cmd[:6 + len(opts)])} <{len(ids)} ids>", pytrace=False)
    x = np.fromfile(out, dtype="<f4")
    out.unlink()
    if x.size % len(ids) != 0:
        pytest.fail(f"{name}: ember wrote {x.size} floats for {len(ids)} tokens", pytrace=False)
    return x.reshape(len(ids), -1)


# ------------------------------------------------------------ diagnosis

_REF: dict = {}


def reference(name: str):
    if name not in _REF:
        _REF[name] = A.load_any(str(fixture_path(name)))
    return _REF[name]


def architecture(name: str) -> str:
    return reference(name)[1].hp.arch


def _variants(name: str):
    """(description, reference module, edited model) of plausible mistakes, for the diagnosis."""
    mod, m = reference(name)
    out = []

    def add(desc, change):
        mm = copy.deepcopy(m)
        change(mm)
        out.append((desc, mod, mm))

    def layers(attr, value):
        def f(mm):
            for layer in mm.layers:
                setattr(layer, attr, value(layer) if callable(value) else value)
        return f

    hp = m.hp
    if hp.arch == "llama":
        add("rope_freqs.weight ignored", lambda mm: setattr(mm, "rope_freqs", None))
        add("rope_freqs.weight multiplied instead of divided",
            lambda mm: setattr(mm, "rope_freqs", 1.0 / mm.rope_freqs))
        add("NeoX rope pairs", lambda mm: setattr(mm.hp, "rope_style", "neox"))
        return out
    add("GPT-J (adjacent) rope pairs instead of NeoX", lambda mm: setattr(mm.hp, "rope_style", "normal"))
    if hp.arch == "gemma3":
        add("no sliding window (every layer attends to all positions)", lambda mm: setattr(mm.hp, "sliding_window", 0))
        add("sliding window one token wider (p - j <= window)",
            lambda mm: setattr(mm.hp, "sliding_window", mm.hp.sliding_window + 1))
        add("sliding window one token narrower", lambda mm: setattr(mm.hp, "sliding_window", mm.hp.sliding_window - 1))
        add("every layer local (sliding window everywhere)", lambda mm: setattr(mm.hp, "swa_layers", (True,) * mm.hp.n_layer))
        add("local layers rotated with the global rope.freq_base",
            lambda mm: setattr(mm.hp, "rope_freq_base_swa", mm.hp.rope_freq_base))
        add("final logit softcap not applied", lambda mm: setattr(mm.hp, "final_softcap", 0.0))
        add("no sqrt(n_embd) embedding scale", lambda mm: setattr(mm.hp, "embd_scale", 1.0))
        add("norm weights with 1 added again", layers("attn_norm", lambda l: l.attn_norm + 1.0))
        add("no post-attention / post-FFN norms", lambda mm: (layers("post_attn_norm", None)(mm), layers("post_ffn_norm", None)(mm)))
        add("no QK-norm", lambda mm: (layers("q_norm", None)(mm), layers("k_norm", None)(mm)))
        add("SiLU instead of GELU(tanh)", lambda mm: setattr(mm.hp, "arch", "qwen2"))
        if hp.rope_scale != 1.0:
            add("linear rope scaling ignored", lambda mm: setattr(mm.hp, "rope_scale", 1.0))
    if hp.arch == "qwen2":
        add("q/k/v biases ignored", lambda mm: (layers("bq", None)(mm), layers("bk", None)(mm), layers("bv", None)(mm)))
    if hp.arch == "qwen3":
        add("no QK-norm", lambda mm: (layers("q_norm", None)(mm), layers("k_norm", None)(mm)))
    if hp.arch == "phi3":
        add("LongRoPE: the long factors always", lambda mm: setattr(mm, "rope_factors_short", mm.rope_factors_long))
        add("LongRoPE: the short factors always", lambda mm: setattr(mm, "rope_factors_long", mm.rope_factors_short))
        add("no LongRoPE factors", lambda mm: (setattr(mm, "rope_factors_long", None),
                                               setattr(mm, "rope_factors_short", None)))
        add("rope.scaling.attn_factor ignored", lambda mm: setattr(mm.hp, "rope_attn_factor", 1.0))
        add("gate and up halves of the fused ffn_up swapped", swap_gate_up)
    return out


def swap_gate_up(m) -> None:
    for layer in m.layers:
        layer.w_gate, layer.w_up = layer.w_up, layer.w_gate


def diagnose(name: str, ids, ours: np.ndarray, **fw) -> str:
    """Which reference variant ember's logits are closest to."""
    mod, m = reference(name)
    exact = rel_l2(ours, mod.forward(m, ids, **fw) if mod is A else mod.forward(m, ids))
    best = []
    for desc, vmod, vm in _variants(name):
        try:
            ref = vmod.forward(vm, ids, **fw) if vmod is A else vmod.forward(vm, ids)
        except Exception as e:  # noqa: BLE001 - a diagnosis must not hide the failure
            best.append((np.inf, f"{desc} (reference failed: {e})"))
            continue
        best.append((float(np.max(rel_l2(ours, ref))), desc))
    best.sort()
    lines = [f"  vs the float64 reference: max {exact.max():.3g}"]
    if best and best[0][0] < 0.5 * exact.max():
        lines.append(f"  ember matches the reference best with: {best[0][1]} (max {best[0][0]:.3g})")
        lines += [f"    then: {d} (max {e:.3g})" for e, d in best[1:3]]
    else:
        lines.append("  no simple mistake of the reference reproduces ember's logits better")
    return "\n".join(lines)


def check(name: str, i: int, ids, ours: np.ndarray, expected: np.ndarray, bound: float, what: str, **fw) -> float:
    if ours.shape != expected.shape:
        pytest.fail(f"{name} prompt {i} ({what}): ember gave logits of shape {ours.shape}, expected {expected.shape}",
                    pytrace=False)
    e = rel_l2(ours, expected)
    bad = np.nonzero(~(e <= bound))[0]  # NaN counts as bad
    if len(bad):
        hp = reference(name)[1].hp
        window = f", sliding window {hp.sliding_window}" if getattr(hp, "sliding_window", 0) else ""
        per_pos = " ".join(f"{x:.1e}" for x in e)
        pytest.fail(
            f"{name} ({hp.arch}{window}) prompt {i}, {len(ids)} ids, {what}: {len(bad)} of {len(ids)} positions "
            f"differ by more than {bound:g} (relative L2); first bad position {bad[0]}, worst {np.nanmax(e):.3g} "
            f"at {int(np.nanargmax(e))}\n  per position: {per_pos}\n{diagnose(name, ids, ours, **fw)}",
            pytrace=False)
    return float(e.max())


# ------------------------------------------------------------ tests

@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("name", FIXTURES)
def test_arch_logits_match_transformers(testtool, tmp_path, name, variant):
    opts, bound = VARIANTS[variant]
    worst = []
    for i, (ids, hf) in enumerate(prompts(name)):
        ours = ember_logits(testtool, name, ids, tmp_path, opts(len(ids)))
        worst.append(check(name, i, ids, ours, hf, bound, f"{variant} {' '.join(opts(len(ids)))}".strip()))
    print(f"{name} {variant}: rel L2 max per prompt " + ", ".join(f"{w:.2e}" for w in worst))


@pytest.mark.parametrize("n_ctx", [64, 512])
def test_phi3_longrope_follows_n_ctx(testtool, tmp_path, n_ctx):
    """With --ctx above the original context (16) every prompt uses the long
    factors; the float64 reference with the same n_ctx is the oracle."""
    mod, m = reference("phi3")
    for i, (ids, _) in enumerate(prompts("phi3")):
        ours = ember_logits(testtool, "phi3", ids, tmp_path, ["--kv", "f32", "--ctx", str(n_ctx)])
        check("phi3", i, ids, ours, mod.forward(m, ids, n_ctx=n_ctx), 1e-4, f"--kv f32 --ctx {n_ctx}", n_ctx=n_ctx)


@pytest.mark.parametrize("name", ["llama", "gemma3", "qwen2", "qwen3", "phi3"])
@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_0"])
def test_repacked_weights_on_every_architecture(testtool, tmp_path, name, qtype):
    """The fixture quantized (ember-quantize), then its logits with the weights
    repacked at load (EMBER_REPACK=1) against the file's blocks (0): every matrix
    the architecture binds is packed on x86, phi3's q/k/v as row ranges of one
    fused attn_qkv, the tied or separate head too. Token by token the packed
    kernels sum in another order (float rounding, exact precision); a prompt in
    one batch puts the packed rows back and must agree bit for bit."""
    model = tmp_path / f"{name}-{qtype}.gguf"
    r = subprocess.run([str(testtool.parent / "ember-quantize"), str(fixture_path(name)), str(model), qtype],
                       capture_output=True, check=False)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    ids = np.random.default_rng(11).integers(0, 200, 20).tolist()

    def logits(repack: str, opts: list[str]) -> np.ndarray:
        out = tmp_path / f"logits-{next(_COUNTER)}.f32"
        env = {**os.environ, "EMBER_PRECISION": "exact", "EMBER_REPACK": repack}
        env.pop("EMBER_ISA", None)
        r = subprocess.run([str(testtool), "logits", str(model), str(out), "--threads", THREADS, "--kv", "f32", *opts,
                            ",".join(str(int(t)) for t in ids)], capture_output=True, check=False, env=env)
        assert r.returncode == 0, r.stderr.decode(errors="replace")
        return np.fromfile(out, dtype="<f4").reshape(len(ids), -1)

    a, b = logits("0", ["--batch", "1"]), logits("1", ["--batch", "1"])
    rel = np.linalg.norm(a - b, axis=1) / np.linalg.norm(a, axis=1)
    print(f"\n{name} {qtype}: packed vs file rows token by token, rel L2 max {rel.max():.2e}")
    assert rel.max() < 5e-4
    assert rel.max() > 0, "the same logits both ways: were the weights packed at all?"
    assert np.array_equal(logits("0", []), logits("1", []))
