"""GGUF files cross between ember and the `gguf` package in both directions,
and ember-inspect reports what the package reads."""
import json
import os

import gguf
import numpy as np
import pytest

from conftest import DEFAULT_MODELS, model_path, run, vocab_path


def py_value(field: gguf.ReaderField):
    return field.contents()


def test_gguf_py_reads_what_ember_writes(testtool, tmp_path):
    path = tmp_path / "sample.gguf"
    r = run([testtool, "write-sample", path])
    assert r.returncode == 0, r.stderr.decode()
    rd = gguf.GGUFReader(str(path))
    f = rd.fields
    expect = {
        "general.architecture": "sample", "general.alignment": 64, "s.u8": 250, "s.i8": -120, "s.u16": 65000,
        "s.i16": -32000, "s.u32": 4000000000, "s.i32": -2000000000, "s.f32": 0.15625, "s.bool": True,
        "s.str": "café ▁", "s.u64": 18000000000000000000, "s.i64": -9000000000000000000, "s.f64": -2.5e-300,
        "s.arr_i32": [-1, 0, 7], "s.arr_f32": [1.5, -0.25], "s.arr_str": ["<s>", "", "你好"],
        "s.arr_bool": [False, True], "s.arr_u64": [1, 1 << 40],
    }
    for k, v in expect.items():
        assert py_value(f[k]) == v, k
    assert f["s.u8"].types == [gguf.GGUFValueType.UINT8]
    assert f["s.f64"].types == [gguf.GGUFValueType.FLOAT64]
    assert f["s.arr_str"].types == [gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.STRING]
    names = [t.name for t in rd.tensors]
    assert names == ["w.F32", "w.F16", "w.Q4_0", "w.Q4_1", "w.Q5_0", "w.Q5_1", "w.Q8_0",
                     "w.Q2_K", "w.Q3_K", "w.Q4_K", "w.Q5_K", "w.Q6_K", "w.BF16"]
    for t in rd.tensors:
        assert t.data_offset % 64 == 0, t.name
        assert t.tensor_type.name == t.name[2:]
        # the values ember quantized decode (by gguf-py) to what it meant: within the format's error
        y = gguf.quants.dequantize(t.data, t.tensor_type)
        assert np.all(np.isfinite(y)) and np.max(np.abs(y)) < 2.5, t.name


def test_ember_reads_what_gguf_py_writes(inspect_tool, tmp_path):
    path = tmp_path / "py.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_uint8("p.u8", 7)
    w.add_int8("p.i8", -7)
    w.add_uint16("p.u16", 700)
    w.add_int16("p.i16", -700)
    w.add_uint32("p.u32", 70000)
    w.add_int32("p.i32", -70000)
    w.add_float32("p.f32", 0.1)
    w.add_uint64("p.u64", 1 << 60)
    w.add_int64("p.i64", -(1 << 60))
    w.add_float64("p.f64", 0.1)
    w.add_bool("p.bool", False)
    w.add_string("p.str", "héllo\n")
    w.add_array("p.arr_i32", [1, -2, 3])
    w.add_array("p.arr_str", ["x", "yy", ""])
    w.add_array("p.arr_f32", [0.5, 0.25])
    w.add_tensor("a", np.arange(64, dtype=np.float32).reshape(2, 32))
    w.add_tensor("b", np.zeros((4, 64), dtype=np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    r = run([inspect_tool, path, "--json"])
    assert r.returncode == 0, r.stderr.decode()
    j = json.loads(r.stdout)
    m, ty = j["metadata"], j["metadata_types"]
    assert j["version"] == 3
    assert m["general.architecture"] == "llama"
    assert (m["p.u8"], m["p.i8"], m["p.u16"], m["p.i16"]) == (7, -7, 700, -700)
    assert (m["p.u32"], m["p.i32"], m["p.u64"], m["p.i64"]) == (70000, -70000, 1 << 60, -(1 << 60))
    assert m["p.f32"] == pytest.approx(0.1, rel=1e-7) and ty["p.f32"] == "float32"
    assert m["p.f64"] == 0.1 and ty["p.f64"] == "float64"
    assert m["p.bool"] is False and m["p.str"] == "héllo\n"
    assert m["p.arr_i32"] == [1, -2, 3] and ty["p.arr_i32"] == "array[int32]"
    assert m["p.arr_str"] == ["x", "yy", ""] and ty["p.arr_str"] == "array[string]"
    assert m["p.arr_f32"] == [0.5, 0.25]
    t = {x["name"]: x for x in j["tensors"]}
    assert t["a"]["type"] == "F32" and t["a"]["shape"] == [32, 2] and t["a"]["bytes"] == 256
    assert t["b"]["type"] == "F16" and t["b"]["shape"] == [64, 4] and t["b"]["bytes"] == 512


@pytest.mark.parametrize("name", DEFAULT_MODELS)
def test_inspect_json_matches_gguf_py(inspect_tool, name):
    path = model_path(name)
    r = run([inspect_tool, path, "--json"])
    assert r.returncode == 0, r.stderr.decode()
    j = json.loads(r.stdout)
    rd = gguf.GGUFReader(str(path))
    keys = [k for k in rd.fields if not k.startswith("GGUF.")]
    assert list(j["metadata"]) == keys
    for k in keys:
        v = py_value(rd.fields[k])
        if isinstance(v, float):
            assert j["metadata"][k] == pytest.approx(v, rel=1e-7), k
        elif isinstance(v, list) and v and isinstance(v[0], float):
            assert j["metadata"][k] == pytest.approx(v, rel=1e-7), k
        else:
            assert j["metadata"][k] == v, k
    assert len(j["tensors"]) == len(rd.tensors)
    for ours, ref in zip(j["tensors"], rd.tensors):
        assert ours["name"] == ref.name
        assert ours["type"] == ref.tensor_type.name
        assert ours["shape"] == [int(d) for d in ref.shape]
        assert ours["offset"] == ref.data_offset
        assert ours["bytes"] == ref.n_bytes


def test_inspect_text_on_a_model(inspect_tool):
    path = model_path(DEFAULT_MODELS[0])
    r = run([inspect_tool, path])
    assert r.returncode == 0
    out = r.stdout.decode()
    assert out.startswith("GGUF v3")
    assert "llama.block_count" in out and "uint32" in out
    assert "tokenizer.ggml.tokens" in out and "(49152 items)" in out
    assert "token_embd.weight" in out and "Q8_0" in out
    assert "totals: 272 tensors" in out


def test_inspect_vocab_only_files(inspect_tool):
    vocab = vocab_path()
    files = sorted(vocab.glob("*.gguf"))
    assert files
    for p in files:
        r = run([inspect_tool, p])
        assert r.returncode == 0, r.stderr.decode()
        assert "tensors: 0" in r.stdout.decode()
        r = run([inspect_tool, p, "--json"])
        assert r.returncode == 0
        j = json.loads(r.stdout)
        assert j["tensors"] == [] and len(j["metadata"]["tokenizer.ggml.tokens"]) > 1000


def bad_files(tmp_path):
    good = tmp_path / "good.gguf"
    w = gguf.GGUFWriter(str(good), "llama")
    w.add_array("tokenizer.ggml.tokens", ["a", "b", "c"])
    w.add_tensor("a", np.arange(64, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    data = good.read_bytes()
    cases = {
        "empty": b"",
        "text": b"this is not a model\n" * 10,
        "truncated-header": data[:20],
        "truncated-metadata": data[:60],
        "truncated-data": data[:-8],
        "bad-version": data[:4] + (7).to_bytes(4, "little") + data[8:],
        "huge-kv-count": data[:16] + (2 ** 64 - 1).to_bytes(8, "little") + data[24:],
    }
    for name, blob in cases.items():
        p = tmp_path / f"{name}.gguf"
        p.write_bytes(blob)
        yield name, p
    yield "missing", tmp_path / "does-not-exist.gguf"
    yield "directory", tmp_path


def test_inspect_bad_files_exit_1_with_the_error(inspect_tool, tmp_path):
    for name, p in bad_files(tmp_path):
        for extra in ([], ["--json"]):
            r = run([inspect_tool, p, *extra])
            err = r.stderr.decode()
            assert r.returncode == 1, f"{name}: exit {r.returncode}, stderr {err!r}"
            assert "ember-inspect: error:" in err, name
            assert str(p) in err, name
            assert r.stdout == b"", name


def test_inspect_usage_errors(inspect_tool):
    assert run([inspect_tool]).returncode == 2
    assert run([inspect_tool, "--bogus", "x"]).returncode == 2
    r = run([inspect_tool, "--version"])
    assert r.returncode == 0 and r.stdout.decode().startswith("ember ")
