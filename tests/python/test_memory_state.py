"""Memory and saved state through the Python API: estimate_memory, memory
budgets, quantized KV caches, Session.save / load (the tools' side is
test_memory_tools.py)."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

from conftest import BUILD, DEFAULT_MODELS, model_path

# The package of the build tree, or with EMBER_TEST_INSTALLED=1 the one `pip install .` put in this Python
PKG = BUILD / "python"
if os.environ.get("EMBER_TEST_INSTALLED") != "1":
    if not (PKG / "ember").exists():
        pytest.skip(f"SKIPPED: {PKG}/ember is absent; configure with -DEMBER_PYTHON=ON", allow_module_level=True)
    sys.path.insert(0, str(PKG))
import ember  # noqa: E402

SMOL = DEFAULT_MODELS[0]
GEMMA = DEFAULT_MODELS[1]


@pytest.fixture(scope="module")
def smol():
    return ember.Model(model_path(SMOL))


@pytest.fixture(scope="module")
def gemma():
    return ember.Model(model_path(GEMMA))


# ---- the Python API -------------------------------------------------------------------


def test_estimate_memory_parts_and_kv_types():
    path = model_path(SMOL)
    f16 = ember.estimate_memory(path, n_ctx=4096)
    q8 = ember.estimate_memory(path, n_ctx=4096, kv_type="q8_0")
    q4 = ember.estimate_memory(path, n_ctx=4096, kv_type="q4_0")
    mixed = ember.estimate_memory(path, n_ctx=4096, kv_type_k="q8_0", kv_type_v="q4_0")
    # SmolLM2: 30 layers, 3 KV heads of 64 values, keys and values
    assert f16["kv_cache"] == 30 * 2 * 192 * 4096 * 2
    assert q8["kv_cache"] * 64 == f16["kv_cache"] * 34
    assert q4["kv_cache"] * 64 == f16["kv_cache"] * 18
    assert mixed["kv_cache"] * 128 == f16["kv_cache"] * (34 + 18)
    for e in (f16, q8, q4):
        assert e["host_total"] == e["model_host"] + e["session_host"]
        assert e["n_ctx"] == 4096
        assert "KV cache" in e["table"]
    assert ember.estimate_memory(path, n_ctx=512)["kv_cache"] * 8 == f16["kv_cache"]
    with pytest.raises(ember.InvalidArgumentError, match="q5_1"):
        ember.estimate_memory(path, kv_type="q5_1")
    with pytest.raises(ember.NotFoundError):
        ember.estimate_memory("/nonexistent/model.gguf")


def test_sliding_window_layers_need_less_kv():
    e = ember.estimate_memory(model_path(GEMMA), n_ctx=32768)
    # Gemma-3: 5 of every 6 layers see a window of 512 tokens: a ring, not 32768 cells
    assert 0 < e["kv_swa_layers"] < e["kv_full_layers"]
    assert e["kv_cache"] == e["kv_full_layers"] + e["kv_swa_layers"]


def test_parse_memory_size_and_available_memory():
    assert ember.parse_memory_size("512M") == 512 << 20
    assert ember.parse_memory_size("1.5G") == 3 << 29
    assert ember.parse_memory_size("4096") == 4096
    for bad in ("", "-1M", "12Q", "M", "1e999G"):
        with pytest.raises(ember.InvalidArgumentError):
            ember.parse_memory_size(bad)
    assert ember.available_memory() > 0


def test_session_over_budget_is_refused_with_the_numbers(smol):
    with pytest.raises(ember.OutOfMemoryError) as e:
        ember.Session(smol, n_ctx=32768, memory_budget="64M")
    msg = str(e.value)
    assert "64 MiB" in msg and "budget" in msg and "n_ctx" in msg, msg
    with pytest.raises(ember.InvalidArgumentError, match="memory_budget"):
        ember.Session(smol, memory_budget="lots")
    with pytest.raises(ember.InvalidArgumentError, match="memory_budget"):
        ember.Session(smol, memory_budget=-1)
    s = ember.Session(smol, n_ctx=512, memory_budget="1G")  # within it: works
    assert s.generate("Hello", max_tokens=2, temperature=0) is not None


def test_model_over_budget_is_refused(smol):
    with pytest.raises(ember.OutOfMemoryError, match="budget"):
        ember.Model(model_path(SMOL), memory_budget=1 << 20)


@pytest.mark.parametrize("kv", ["f16", "q8_0", "q4_0"])
def test_state_round_trip_bytes_and_file(smol, tmp_path, kv):
    a = ember.Session(smol, n_ctx=256, kv_type=kv)
    b = ember.Session(smol, n_ctx=256, kv_type=kv)
    assert a.kv_type_k == kv and a.kv_type_v == kv
    "".join(a.generate("The fridge holds milk, eggs and", max_tokens=5, temperature=0))
    state = a.save()
    assert isinstance(state, bytes)
    b.load(state)
    assert b.tokens == a.tokens
    ta = "".join(a.generate(" and", max_tokens=12, temperature=0))
    tb = "".join(b.generate(" and", max_tokens=12, temperature=0))
    assert ta == tb and ta
    assert a.tokens == b.tokens
    # through a file: the logits after the same token are bit-identical
    f = tmp_path / "state.bin"
    a.save(f)
    c = ember.Session(smol, n_ctx=512, kv_type=kv)  # a larger context is fine
    c.load(f)
    la = a.eval([42])
    lc = c.eval([42])
    assert np.array_equal(la, lc)


def test_state_refusals_leave_the_session_unchanged(smol, tmp_path):
    a = ember.Session(smol, n_ctx=256)
    a.eval(smol.tokenize("Bread, butter and jam"))
    state = bytearray(a.save())
    b = ember.Session(smol, n_ctx=256)
    b.eval(smol.tokenize("Something else entirely"))
    before, logits = b.tokens, b.logits.copy()

    def unchanged():
        assert b.tokens == before
        assert np.array_equal(b.logits, logits)

    bad = bytearray(state)
    bad[len(bad) // 2] ^= 0x20
    with pytest.raises(ember.InvalidFileError, match="checksum"):
        b.load(bytes(bad))
    unchanged()
    with pytest.raises(ember.InvalidFileError):
        b.load(bytes(state[: len(state) - 9]))
    unchanged()
    with pytest.raises(ember.InvalidFileError):
        b.load(b"GGUF" + bytes(state[4:]))
    unchanged()
    small = ember.Session(smol, n_ctx=4)
    with pytest.raises(ember.InvalidArgumentError, match="n_ctx|context"):
        small.load(bytes(state))
    other_k = ember.Session(smol, n_ctx=256, kv_type_k="q8_0")
    with pytest.raises(ember.InvalidArgumentError, match="q8_0|f16"):
        other_k.load(bytes(state))
    other_v = ember.Session(smol, n_ctx=256, kv_type_v="q4_0")
    with pytest.raises(ember.InvalidArgumentError, match="q4_0|f16"):
        other_v.load(bytes(state))
    assert "".join(b.generate(" more", max_tokens=2, temperature=0))  # still usable


def test_state_of_another_model_is_refused(smol, gemma):
    a = ember.Session(gemma, n_ctx=256)
    a.eval(gemma.tokenize("Milk"))
    b = ember.Session(smol, n_ctx=256)
    with pytest.raises(ember.InvalidArgumentError, match="model"):
        b.load(a.save())


def test_state_with_sliding_window_layers(gemma):
    """Gemma-3's ring layers: more tokens than its 512-token window, saved and restored."""
    a = ember.Session(gemma, n_ctx=1024, n_batch=128)
    text = " ".join(f"item {i} is on shelf {i % 7}." for i in range(90))
    ids = gemma.tokenize(text)
    assert len(ids) > 600
    a.eval(ids)
    b = ember.Session(gemma, n_ctx=1024, n_batch=128)
    b.load(a.save())
    assert np.array_equal(a.eval([100]), b.eval([100]))
    ga = "".join(a.generate(" Then", max_tokens=8, temperature=0))
    gb = "".join(b.generate(" Then", max_tokens=8, temperature=0))
    assert ga == gb and a.tokens == b.tokens


def test_save_is_atomic(smol, tmp_path):
    s = ember.Session(smol, n_ctx=128)
    s.eval(smol.tokenize("Eggs"))
    target = tmp_path / "state.bin"
    target.write_bytes(b"old contents")
    s.save(target)  # replaced whole, and no temporary left beside it
    assert target.read_bytes() == s.save()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.bin"]
    # a write that cannot complete (the rename onto a non-empty directory fails) leaves
    # what was there as it was, and no temporary
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / "keep").write_bytes(b"x")
    with pytest.raises(ember.IoError):
        s.save(blocked)
    assert (blocked / "keep").read_bytes() == b"x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocked", "state.bin"]
    with pytest.raises((ember.IoError, ember.NotFoundError)):
        s.save(tmp_path / "no" / "such" / "dir" / "state.bin")


def test_load_takes_any_bytes_like_and_refuses_other_types(smol):
    a = ember.Session(smol, n_ctx=128)
    a.eval(smol.tokenize("Jam"))
    state = a.save()
    b = ember.Session(smol, n_ctx=128)
    b.load(memoryview(state))
    b.load(bytearray(state))
    assert b.tokens == a.tokens
    # a strided or reversed view is read as the bytes it shows, never past its buffer
    doubled = bytes(x for byte in state for x in (byte, 0))
    b.reset()
    b.load(memoryview(doubled)[::2])
    assert b.tokens == a.tokens
    with pytest.raises(ember.InvalidFileError):
        b.load(memoryview(state)[::-1])
    for bad in (5, None, 1.5):
        with pytest.raises(TypeError):
            b.load(bad)
    with pytest.raises(TypeError):
        b.save(5)
