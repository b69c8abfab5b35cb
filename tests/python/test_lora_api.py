"""LoRA adapters in the Python API: Model.load_adapter, ember.Adapter,
Session.set_adapters / adapters / adapters= -- what they accept, what they
refuse (with the error class and a message that says what), and that a new
list keeps the history and re-evaluates it.  The numbers themselves are
checked against float64 references and PEFT in test_lora_reference.py and the
C++ unit tests."""
import math
import os
import sys
import threading

import gguf
import numpy as np
import pytest

from conftest import BUILD

PKG = BUILD / "python"
if os.environ.get("EMBER_TEST_INSTALLED") != "1":
    if not (PKG / "ember").exists():
        pytest.skip(f"SKIPPED: {PKG}/ember is absent; configure with -DEMBER_PYTHON=ON", allow_module_level=True)
    sys.path.insert(0, str(PKG))
import ember  # noqa: E402

ARCH = os.path.join(os.path.dirname(__file__), "..", "data", "arch")
BASE = os.path.join(ARCH, "llama.gguf")
IDS = [1, 5, 9, 20, 33, 7, 8]


def write_adapter(path, base=BASE, rank=4, alpha=8.0, seed=0, arch=None, targets=None, extra=None):
    """A random LoRA adapter for `base` (numpy shapes are ggml's reversed: A (r, n_in), B (n_out, r))."""
    rd = gguf.GGUFReader(base)
    base_arch = str(bytes(rd.fields["general.architecture"].parts[-1]), "utf-8")
    w = gguf.GGUFWriter(str(path), arch or base_arch)
    w.add_string("general.type", "adapter")
    w.add_string("adapter.type", "lora")
    w.add_float32("adapter.lora.alpha", alpha)
    for k, v in (extra or {}).items():
        w.add_string(k, v)
    rng = np.random.default_rng(seed)
    for t in rd.tensors:
        if len(t.shape) != 2 or t.name == "token_embd.weight":
            continue
        if targets and not any(t.name.endswith(x) for x in targets):
            continue
        n_in, n_out = int(t.shape[0]), int(t.shape[1])
        w.add_tensor(t.name + ".lora_a", rng.normal(0, 1 / math.sqrt(n_in), (rank, n_in)).astype(np.float32))
        w.add_tensor(t.name + ".lora_b", rng.normal(0, 0.3, (n_out, rank)).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return str(path)


@pytest.fixture(scope="module")
def model():
    return ember.Model(BASE)


@pytest.fixture(scope="module")
def adapter_path(tmp_path_factory):
    return write_adapter(tmp_path_factory.mktemp("lora") / "a.gguf")


def logits(model, adapters=None, ids=IDS):
    s = model.session(n_ctx=64, n_threads=2, precision="exact", adapters=adapters)
    return s.eval(ids, all_logits=True)


def test_adapter_object(model, adapter_path):
    a = model.load_adapter(adapter_path)
    assert isinstance(a, ember.Adapter)
    assert a.path == adapter_path and a.model is model
    assert a.alpha == 8.0 and a.rank == 4 and a.name == ""
    assert len(a.targets) == 14  # 2 layers x 7 projections
    t = a.targets[0]
    assert set(t) == {"tensor", "rank", "n_in", "n_out", "type_a", "type_b"}
    assert t["rank"] == 4 and t["type_a"] == "F32"
    assert a.n_params == sum(x["rank"] * (x["n_in"] + x["n_out"]) for x in a.targets)
    assert a.nbytes == 4 * a.n_params
    assert a.metadata["general.type"] == "adapter"
    assert "rank=4" in repr(a)


def test_set_adapters_forms_and_effect(model, adapter_path):
    a = model.load_adapter(adapter_path)
    base = logits(model)
    with_a = logits(model, [(a, 1.0)])
    assert np.abs(with_a - base).max() > 1e-2
    np.testing.assert_array_equal(logits(model, [a]), with_a)  # an Adapter alone: scale 1
    np.testing.assert_array_equal(logits(model, [(a, 0)]), base)  # scale 0: exactly the base
    np.testing.assert_array_equal(logits(model, {a: 1.0}), with_a)  # a dict {Adapter: scale}
    np.testing.assert_array_equal(logits(model, [(a, np.float32(1.0))]), with_a)  # NumPy scalars are numbers
    assert model.session(n_ctx=32, adapters={a: 0.25}).adapters == [(a, 0.25)]
    s = ember.Session(model, n_ctx=64, n_threads=2, precision="exact", adapters=[(a, 0.5)])
    assert s.adapters == [(a, 0.5)] and s.adapters[0][0] is a
    s.set_adapters([(a, 1)])
    np.testing.assert_array_equal(s.eval(IDS, all_logits=True), with_a)
    s.set_adapters([])
    assert s.adapters == []
    s.reset()
    np.testing.assert_array_equal(s.eval(IDS, all_logits=True), base)


def test_new_list_keeps_history_and_reevaluates(model, adapter_path):
    a = model.load_adapter(adapter_path)
    s = model.session(n_ctx=64, n_threads=2, precision="exact")
    s.eval(IDS)
    s.set_adapters([(a, 1.0)])
    assert s.tokens == IDS  # kept
    assert s.logits is None  # until evaluated again
    s.eval([11])
    fresh = model.session(n_ctx=64, n_threads=2, precision="exact", adapters=[(a, 1.0)])
    fresh.eval(IDS + [11])
    np.testing.assert_array_equal(s.logits, fresh.logits)


def test_refusals(model, adapter_path, tmp_path):
    a = model.load_adapter(adapter_path)
    s = model.session(n_ctx=64, n_threads=2)
    with pytest.raises(TypeError, match="list of"):
        s.set_adapters("adapter.gguf")
    with pytest.raises(TypeError, match="item 0"):
        s.set_adapters([1])
    with pytest.raises(TypeError, match="scale of adapter 0"):
        s.set_adapters([(a, "1")])
    with pytest.raises(TypeError, match="scale of adapter 0"):
        s.set_adapters([(a, True)])
    with pytest.raises(ValueError, match="finite float32"):
        s.set_adapters([(a, 1e300)])
    with pytest.raises(ember.InvalidArgumentError, match="is not a finite number"):
        s.set_adapters([(a, 3e38)])  # times alpha / r (2)
    with pytest.raises(ValueError, match="finite float32"):
        s.set_adapters([(a, float("nan"))])
    other = ember.Model(BASE)
    with pytest.raises(ember.InvalidArgumentError, match="was loaded for another Model object"):
        s.set_adapters([(other.load_adapter(adapter_path), 1.0)])
    with pytest.raises(ember.InvalidArgumentError, match="was loaded for another Model object"):
        other.session(n_ctx=32, adapters=[a])
    assert s.adapters == []
    # files
    with pytest.raises(ember.InvalidFileError, match="not an adapter"):
        model.load_adapter(BASE)
    with pytest.raises(ember.NotFoundError):
        model.load_adapter(tmp_path / "missing.gguf")
    wrong = write_adapter(tmp_path / "qwen.gguf", arch="qwen2")
    with pytest.raises(ember.InvalidFileError, match='architecture "qwen2"'):
        model.load_adapter(wrong)
    other_base = write_adapter(tmp_path / "phi.gguf", base=os.path.join(ARCH, "phi3.gguf"), arch="llama")
    with pytest.raises(ember.InvalidFileError, match="does not have|does not fit"):
        model.load_adapter(other_base)
    alora = write_adapter(tmp_path / "alora.gguf", extra={"adapter.alora.invocation_tokens": "x"})
    with pytest.raises(ember.UnsupportedError, match="activated LoRA"):
        model.load_adapter(alora)
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(open(adapter_path, "rb").read()[:3000])
    with pytest.raises(ember.InvalidFileError):
        model.load_adapter(truncated)


def test_set_adapters_ends_a_running_stream(model, adapter_path):
    """set_adapters, like every other call, first ends the session's unfinished Generation."""
    a = model.load_adapter(adapter_path)
    s = model.session(n_ctx=64, n_threads=2)
    g = s.generate(IDS, max_tokens=40, ignore_eos=True, temperature=0)
    next(g)
    s.set_adapters([(a, 1.0)])
    assert g.done
    assert s.adapters == [(a, 1.0)]


def test_two_sessions_two_adapters_two_threads(model, adapter_path, tmp_path):
    a = model.load_adapter(adapter_path)
    b = model.load_adapter(write_adapter(tmp_path / "b.gguf", seed=5, targets=["attn_q.weight", "ffn_down.weight"]))
    want = {"a": logits(model, [(a, 1.0)]), "b": logits(model, [(b, 0.7)])}
    got = {}

    def run(name, adapters):
        for _ in range(4):
            got[name] = logits(model, adapters)

    threads = [threading.Thread(target=run, args=("a", [(a, 1.0)])), threading.Thread(target=run, args=("b", [(b, 0.7)]))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    np.testing.assert_array_equal(got["a"], want["a"])
    np.testing.assert_array_equal(got["b"], want["b"])
