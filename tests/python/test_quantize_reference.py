"""ember's scalar quantization against the `gguf` package: identical bytes for
every type the package can quantize, and bounded error for the K-quants it
cannot (checked through the package's own dequantize)."""
import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as T

from conftest import run

EXACT = ["F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"]
# K-quants: the bound on sqrt(sum sq err) / n for x = 0.1 + 2 cos(i), as in ggml's tests
KQUANT_BOUND = {"Q2_K": 0.0075, "Q3_K": 0.004, "Q4_K": 0.002, "Q5_K": 0.002, "Q6_K": 0.002}


def ember_quantize(testtool, qtype: str, x: np.ndarray) -> bytes:
    x = np.ascontiguousarray(x, dtype=np.float32).ravel()
    r = run([testtool, "quantize", qtype, x.size], input=x.tobytes())
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout


def datasets(block: int):
    rng = np.random.default_rng(42)
    n = block * 64
    yield "normal", rng.standard_normal(n).astype(np.float32)
    yield "wide", (rng.standard_normal(n) * np.exp(rng.uniform(-20, 20, n))).astype(np.float32)
    yield "uniform", rng.uniform(-1, 1, n).astype(np.float32)
    # exact ties for the rounding rules: multiples of 1/8 and of the step
    yield "ties", (rng.integers(-64, 64, n) / 8.0).astype(np.float32)
    z = rng.standard_normal(n).astype(np.float32)
    z[: block * 4] = 0.0                      # whole zero blocks
    z[block * 4: block * 5] = 3.0             # constant block
    z[block * 5: block * 6] = -1e-30          # tiny values (subnormal scales)
    yield "edge", z
    yield "large", (rng.standard_normal(n) * 3e4).astype(np.float32)


@pytest.mark.parametrize("qtype", EXACT)
def test_same_bytes_as_gguf(testtool, qtype):
    t = T[qtype]
    block = max(gguf.GGML_QUANT_SIZES[t][0], 32)
    for name, x in datasets(block):
        ours = np.frombuffer(ember_quantize(testtool, qtype, x), dtype=np.uint8)
        ref = gguf.quants.quantize(x.reshape(-1, block), t).ravel().view(np.uint8)
        assert ours.shape == ref.shape, f"{qtype}/{name}: size {ours.shape} vs {ref.shape}"
        bad = np.nonzero(ours != ref)[0]
        assert len(bad) == 0, (f"{qtype}/{name}: {len(bad)} bytes differ, first at byte {bad[0]} "
                               f"(block {bad[0] // gguf.GGML_QUANT_SIZES[t][1]})")


@pytest.mark.parametrize("qtype", list(KQUANT_BOUND))
def test_kquant_error_bound(testtool, qtype):
    t = T[qtype]
    x = (0.1 + 2 * np.cos(np.arange(4096, dtype=np.float32) + 0.5)).astype(np.float32)
    q = np.frombuffer(ember_quantize(testtool, qtype, x), dtype=np.uint8)
    y = gguf.quants.dequantize(q, t).ravel()
    err = float(np.sqrt(np.sum((y.astype(np.float64) - x) ** 2)) / x.size)
    assert err < KQUANT_BOUND[qtype], f"{qtype}: error {err}"


@pytest.mark.parametrize("qtype", list(KQUANT_BOUND))
def test_kquant_relative_error_on_gaussian(testtool, qtype):
    # expected relative RMS error of a good quantizer at this many bits, with margin
    limit = {"Q2_K": 0.45, "Q3_K": 0.22, "Q4_K": 0.11, "Q5_K": 0.055, "Q6_K": 0.03}[qtype]
    rng = np.random.default_rng(3)
    x = rng.standard_normal(256 * 256).astype(np.float32)
    q = np.frombuffer(ember_quantize(testtool, qtype, x), dtype=np.uint8)
    y = gguf.quants.dequantize(q, T[qtype]).ravel()
    rel = float(np.sqrt(np.mean((y - x) ** 2)) / np.sqrt(np.mean(x ** 2)))
    print(f"{qtype}: relative rms error {rel:.4f}")
    assert rel < limit
