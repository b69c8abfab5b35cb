"""ember's scalar dequantization against the `gguf` package (PyPI), bit for
bit: on random blocks of every type and on every tensor of both default
models. (When both results are NaN their payloads may differ; see below.)"""
import subprocess

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as T

from conftest import DEFAULT_MODELS, model_path, run

TYPES = ["F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]


def ember_dequant_raw(testtool, qtype: str, raw: bytes, n: int) -> np.ndarray:
    r = run([testtool, "dequant-raw", qtype, n], input=raw)
    assert r.returncode == 0, r.stderr.decode()
    return np.frombuffer(r.stdout, dtype=np.float32)


def assert_bits_equal(ours: np.ndarray, ref: np.ndarray, what: str):
    ours_u = np.ascontiguousarray(ours, dtype=np.float32).view(np.uint32).ravel()
    ref_u = np.ascontiguousarray(ref, dtype=np.float32).view(np.uint32).ravel()
    assert ours_u.shape == ref_u.shape, f"{what}: {ours_u.shape} elements vs {ref_u.shape}"
    # bit for bit, except that when both are NaN the payload may differ: which
    # operand's payload an operation on two NaNs keeps is not defined by IEEE 754
    both_nan = np.isnan(ours_u.view(np.float32)) & np.isnan(ref_u.view(np.float32))
    bad = np.nonzero((ours_u != ref_u) & ~both_nan)[0]
    if len(bad):
        i = bad[0]
        pytest.fail(f"{what}: {len(bad)} of {len(ref_u)} values differ; first at {i}: "
                    f"ember {ours_u[i]:#010x} ({ours.ravel()[i]!r}) vs gguf {ref_u[i]:#010x} ({ref.ravel()[i]!r})")


@pytest.mark.parametrize("qtype", TYPES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_blocks(testtool, qtype, seed):
    """Fully random bytes: every bit pattern of scales and quants, NaN and inf included."""
    t = T[qtype]
    block_size, type_size = gguf.GGML_QUANT_SIZES[t]
    n_blocks = 4096 // block_size * 4
    rng = np.random.default_rng(seed * 100 + t.value)
    raw = rng.integers(0, 256, size=n_blocks * type_size, dtype=np.uint8)
    ref = gguf.quants.dequantize(raw, t)
    ours = ember_dequant_raw(testtool, qtype, raw.tobytes(), n_blocks * block_size)
    assert_bits_equal(ours, ref, f"{qtype} random blocks (seed {seed})")


def test_file_written_by_gguf_py(testtool, tmp_path):
    """A file written by gguf-py's GGUFWriter, read by ember's reader."""
    path = tmp_path / "pywritten.gguf"
    w = gguf.GGUFWriter(str(path), "test")
    rng = np.random.default_rng(5)
    expected = []
    for qtype in TYPES:
        t = T[qtype]
        block_size, type_size = gguf.GGML_QUANT_SIZES[t]
        raw = rng.integers(0, 256, size=(3, 2 * type_size), dtype=np.uint8)
        w.add_tensor(f"t.{qtype}", raw, raw_dtype=t)
        expected.append(gguf.quants.dequantize(raw, t))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    r = run([testtool, "dequant", path])
    assert r.returncode == 0, r.stderr.decode()
    ours = np.frombuffer(r.stdout, dtype=np.float32)
    assert_bits_equal(ours, np.concatenate([e.ravel() for e in expected]), "gguf-py written file")


@pytest.mark.parametrize("name", DEFAULT_MODELS)
def test_every_tensor_of_the_default_models(testtool, name):
    path = model_path(name)
    reader = gguf.GGUFReader(str(path))
    proc = subprocess.Popen([str(testtool), "dequant", str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for t in reader.tensors:
            n = int(np.prod(t.shape))
            buf = proc.stdout.read(n * 4)
            assert len(buf) == n * 4, f"{t.name}: ember stopped early: {proc.stderr.read().decode()}"
            ours = np.frombuffer(buf, dtype=np.float32)
            ref = gguf.quants.dequantize(t.data, t.tensor_type)
            assert_bits_equal(ours, ref, f"{name}: {t.name} ({t.tensor_type.name})")
        assert proc.stdout.read(1) == b"", "ember produced more data than the file has tensors"
    finally:
        proc.stdout.close()
        rc = proc.wait()
    assert rc == 0, proc.stderr.read().decode()
