"""The early Python module (ember._ember, built with -DEMBER_PYTHON=ON): the
GGUF reader and dequantization, checked against the gguf package."""
import sys

import gguf
import numpy as np
import pytest

from conftest import BUILD, DEFAULT_MODELS, model_path

PKG = BUILD / "python"
if not (PKG / "ember").exists():
    pytest.skip(f"SKIPPED: {PKG}/ember is absent; configure with -DEMBER_PYTHON=ON", allow_module_level=True)
sys.path.insert(0, str(PKG))
import ember  # noqa: E402


def test_version_and_build_info():
    assert ember.__version__ == ember.version()
    assert ember.build_info().startswith("ember " + ember.version())
    assert "cuda: " in ember.build_info()
    # devices, or why there are none (not built; no module, driver or cuBLAS): never an exception
    assert ember.device_info().startswith("cuda: ")


def test_metadata_and_tensors_match_gguf_py():
    path = model_path(DEFAULT_MODELS[0])
    f = ember.GGUFFile(str(path))
    rd = gguf.GGUFReader(str(path))
    assert f.version == 3
    md = f.metadata
    assert list(md) == [k for k in rd.fields if not k.startswith("GGUF.")]
    assert md["llama.block_count"] == 30
    assert md["tokenizer.ggml.tokens"][:3] == ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    assert isinstance(md["tokenizer.ggml.token_type"], np.ndarray)
    assert np.array_equal(md["tokenizer.ggml.token_type"], rd.fields["tokenizer.ggml.token_type"].contents())
    assert f.metadata_types["llama.rope.freq_base"] == "float32"
    assert [t["name"] for t in f.tensors] == [t.name for t in rd.tensors]
    for name in ["token_embd.weight", "blk.0.attn_q.weight", "blk.3.ffn_norm.weight"]:
        ref_t = next(t for t in rd.tensors if t.name == name)
        ours = f.dequantize(name)
        ref = gguf.quants.dequantize(ref_t.data, ref_t.tensor_type)
        assert ours.shape == ref.shape
        assert np.array_equal(ours.view(np.uint32), np.ascontiguousarray(ref, dtype=np.float32).view(np.uint32))


def test_errors_raise_ember_error(tmp_path):
    with pytest.raises(ember.Error, match="does-not-exist"):
        ember.GGUFFile(str(tmp_path / "does-not-exist.gguf"))
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 16)
    with pytest.raises(ember.Error, match="byte offset"):
        ember.GGUFFile(str(bad))
    f = ember.GGUFFile(str(model_path(DEFAULT_MODELS[0])))
    with pytest.raises(ember.Error, match="tensor 'nope' is missing"):
        f.dequantize("nope")
