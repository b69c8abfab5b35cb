"""ember-perplexity and ember-quantize: the perplexity against the float64
reference on the same chunks, the output format, the per-tensor types of the
llama.cpp mixes (rules re-derived here), metadata kept, files that load, and
bad input failing with one clear message. Where llama-cpp-python is available
(EMBER_LLAMA_CPP_PYTHON=/path/to/python with llama_cpp importable), the
quantized files are also compared byte for byte with llama.cpp's."""
import ctypes  # noqa: F401  (used in the llama.cpp worker text)
import importlib.util
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest

from conftest import DEFAULT_MODELS, ROOT, model_path, run, tool

CORPUS = Path("/usr/share/common-licenses/GPL-3")  # Debian's base-files: on every Debian system
FINAL = re.compile(r"^Final estimate: PPL = (\d+\.\d{4}) \+/- (\d+\.\d{5})$", re.M)


@pytest.fixture(scope="module")
def model():
    return model_path(DEFAULT_MODELS[0])


@pytest.fixture(scope="module")
def corpus():
    if not CORPUS.exists():
        pytest.skip(f"SKIPPED: {CORPUS} (Debian's base-files) is absent")
    return CORPUS


@pytest.fixture(scope="module")
def f16_model(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("quant") / "smol-f16.gguf"
    r = run([tool("ember-quantize"), model, out, "F16", "--threads", "2"])
    assert r.returncode == 0, r.stderr.decode()
    return out


def load_reference():
    spec = importlib.util.spec_from_file_location("reference_llama", ROOT / "tests/python/reference_llama.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


# ---- ember-perplexity ---------------------------------------------------------

# ---- the perplexity fidelity gate (issue 17) ----------------------------------------

GATE_CTX = 512
GATE_CHUNKS = 2            # the full text is a recorded benchmark (docs/ACCURACY.md)
GATE_PPL = 2e-3            # the default path: within 0.2% of the float64 reference's perplexity
# The fast precision does not hold the gate yet: its generation path is +0.35% on
# these two chunks (+0.14% on the full text), its prompt product (8-bit, per 16)
# +0.76% (+0.32%; llama.cpp +0.44%), so it is not the default. The 8-bit rounding
# makes its figure on two chunks jumpy: a rounding-level change upstream (the
# tiled prompt attention's order of summation) moved it from +0.39% to +0.76%,
# the full text from +0.27% to +0.32%, Gemma-3's from +0.18% to +0.07%. Its bound
# records where it stands, with room for that jitter, so a real worsening fails.
FAST_PPL = 1e-2
GATE_MARGIN = 0.1          # top-1 compared where the reference's best two differ by more
GATE_TOP1 = 0.99           # ... and equal at >= 99% of those positions


@pytest.fixture(scope="module")
def gate_reference(model, corpus):
    """The float64 reference on the gate's chunks, by ember-perplexity's method (no
    BOS for SmolLM2, the second half of each chunk scored): (token ids, PPL, its
    error estimate, per chunk the reference's top-1 and top-two margin at every position)."""
    ids = run([tool("ember-tokenize"), "-m", model, "-f", corpus, "--ids"])
    assert ids.returncode == 0
    toks = [int(t) for t in ids.stdout.split()]
    ref = load_reference()
    rm = ref.load_model(str(model))
    nll, nll2, cnt, top1, margin = 0.0, 0.0, 0, [], []
    for c in range(GATE_CHUNKS):
        chunk = toks[c * GATE_CTX:(c + 1) * GATE_CTX]
        logits = ref.forward(rm, chunk)
        for j in range(GATE_CTX // 2, GATE_CTX - 1):
            row = logits[j]
            v = math.log(np.exp(row - row.max()).sum()) + row.max() - row[toks[c * GATE_CTX + j + 1]]
            nll, nll2, cnt = nll + v, nll2 + v * v, cnt + 1
        srt = np.sort(logits, axis=1)
        top1.append(logits.argmax(1))
        margin.append(srt[:, -1] - srt[:, -2])
        del logits, srt
    ppl = math.exp(nll / cnt)
    return toks, ppl, math.sqrt((nll2 / cnt - (nll / cnt) ** 2) / (cnt - 1)) * ppl, top1, margin


def ember_ppl(model, corpus, precision, batch):
    r = run([tool("ember-perplexity"), "-m", model, "-f", corpus, "-c", str(GATE_CTX), "-b", str(batch),
             "--chunks", str(GATE_CHUNKS), "-t", "2", *(["--precision", precision] if precision else [])])
    assert r.returncode == 0, r.stderr.decode()
    out = r.stdout.decode()
    m = FINAL.search(out)
    assert m, out
    assert re.match(r"^\[1\]\d+\.\d{4},\[2\]\d+\.\d{4},", out), out  # the running estimate per chunk
    # stderr is a pipe here, not a terminal: progress as lines, no bar redrawn with \r
    err = r.stderr.decode()
    assert "\r" not in err and f"ember-perplexity: chunk {GATE_CHUNKS}/{GATE_CHUNKS}," in err, err
    return float(m.group(1)), float(m.group(2))


# (label, --precision, -b): the default (a prompt batch: the float panel product),
# the default precision of the integer kernels that generation uses (batches under
# 16), and the fast one of both (a prompt batch: the 8-bit panel product, gemm_u8)
GATE_RUNS = [("default", None, GATE_CTX), ("default, batches of 8", None, 8), ("fast, batches of 8", "fast", 8),
             ("fast", "fast", GATE_CTX)]


@pytest.mark.parametrize("label,precision,batch", GATE_RUNS, ids=[r[0] for r in GATE_RUNS])
def test_perplexity_fidelity_gate(model, corpus, gate_reference, testtool, tmp_path, label, precision, batch):
    """ember-perplexity -c 512 within 0.2% of the float64 reference, and ember's
    top-1 equal to the reference's at >= 99% of the positions with a clear top-1."""
    toks, want, want_err, ref_top1, ref_margin = gate_reference
    ppl, err = ember_ppl(model, corpus, precision, batch)
    assert abs(err - want_err) / want_err < 2e-2, (err, want_err)  # the error estimate, by the same method
    agree = clear = 0
    for c in range(GATE_CHUNKS):
        out = tmp_path / f"gate-{c}.f32"
        env = dict(os.environ)
        env.pop("EMBER_PRECISION", None)
        if precision:
            env["EMBER_PRECISION"] = precision
        chunk = toks[c * GATE_CTX:(c + 1) * GATE_CTX]
        r = subprocess.run([str(testtool), "logits", str(model), str(out), "--ctx", str(GATE_CTX), "--batch",
                            str(batch), "--threads", "2", ",".join(map(str, chunk))], capture_output=True, env=env)
        assert r.returncode == 0, r.stderr.decode()
        ours = np.fromfile(out, dtype="<f4").reshape(GATE_CTX, -1).argmax(1)
        out.unlink()
        sel = ref_margin[c] > GATE_MARGIN
        clear += int(sel.sum())
        agree += int((ours[sel] == ref_top1[c][sel]).sum())
    print(f"\nperplexity gate, {label}: ember {ppl:.4f}, float64 reference {want:.4f} "
          f"({(ppl - want) / want * 100:+.3f}%); top-1 {agree}/{clear} where the margin > {GATE_MARGIN}")
    assert abs(ppl - want) / want < (FAST_PPL if precision == "fast" else GATE_PPL), (ppl, want)
    assert agree >= GATE_TOP1 * clear, (agree, clear)


def test_perplexity_bad_input(model, corpus, tmp_path):
    ppl = tool("ember-perplexity")
    short = tmp_path / "short.txt"
    short.write_text("Only a few words here.\n")
    cases = [
        ([ppl, "-m", model, "-f", short], ["has", "tokens", "needs at least 1024"]),
        ([ppl, "-m", model], ["no text"]),
        ([ppl, "-f", corpus], ["no model"]),
        ([ppl, "-m", model, "-f", tmp_path / "missing.txt"], ["missing.txt"]),
        ([ppl, "-m", corpus, "-f", corpus], ["not a GGUF file"]),
        ([ppl, "-m", model, "-f", corpus, "-c", "0"], ["-c"]),
        ([ppl, "-m", model, "-f", corpus, "-c", "513"], ["odd"]),
        ([ppl, "-m", model, "-f", corpus, "--chunks", "0"], ["--chunks"]),
        ([ppl, "-m", model, "-f", corpus, "--bogus"], ["--bogus"]),
    ]
    for argv, needles in cases:
        r = run(argv)
        err = r.stderr.decode()
        assert r.returncode == 1, (argv, err)
        assert "ember-perplexity: error:" in err, err
        for n in needles:
            assert n in err, (n, err)
        assert "Final estimate" not in r.stdout.decode()


# ---- ember-quantize -------------------------------------------------------------

def more_bits(i, n):
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


FALLBACK = {"Q6_K": "Q8_0", "Q5_K": "Q5_1", "Q4_K": "Q5_0", "Q3_K": "Q4_0", "Q2_K": "Q4_0"}


def expected_type(name, shape, target, has_output, n_layer):
    """llama.cpp's choice for one tensor (llama family), re-derived from its rules."""
    if len(shape) < 2:
        return "F32"
    want = target.replace("_M", "") if target.endswith("_M") else target
    if target.endswith("_M"):
        layer = int(name.split(".")[1]) if name.startswith("blk.") else -1
        if name == "output.weight" or (not has_output and name == "token_embd.weight"):
            want = "Q6_K"
        elif (name.endswith(".attn_v.weight") or name.endswith(".ffn_down.weight")) and more_bits(layer, n_layer):
            want = "Q6_K"
    if want in FALLBACK and shape[0] % 256:
        want = FALLBACK[want]
    return want


FILE_TYPE = {"F16": 1, "BF16": 32, "Q8_0": 7, "Q5_1": 9, "Q5_0": 8, "Q4_1": 3, "Q4_0": 2, "Q6_K": 18, "Q5_K": 16,
             "Q4_K": 14, "Q3_K": 11, "Q2_K": 10, "Q4_K_M": 15, "Q5_K_M": 17}


def field_value(reader, key):
    f = reader.fields[key]
    if f.types and f.types[0] == gguf.GGUFValueType.STRING:
        return bytes(f.parts[-1]).decode()
    if f.types and f.types[0] == gguf.GGUFValueType.ARRAY:
        return [f.parts[i].tobytes() for i in f.data]
    return f.parts[-1].tolist()


@pytest.mark.parametrize("target", list(FILE_TYPE))
def test_quantize_types_metadata_and_loading(f16_model, tmp_path, target):
    out = tmp_path / f"smol-{target}.gguf"
    r = run([tool("ember-quantize"), f16_model, out, target.lower() if target == "Q4_0" else target])
    assert r.returncode == 0, r.stderr.decode()
    assert "token_embd.weight" in r.stderr.decode()  # per-tensor progress

    src, dst = gguf.GGUFReader(f16_model), gguf.GGUFReader(out)
    n_layer = field_value(src, "llama.block_count")[0]
    has_output = any(t.name == "output.weight" for t in src.tensors)
    got = {t.name: t for t in dst.tensors}
    assert set(got) == {t.name for t in src.tensors}
    for t in src.tensors:
        shape = [int(d) for d in t.shape]
        want = expected_type(t.name, shape, target, has_output, n_layer)
        assert got[t.name].tensor_type.name == want, (t.name, got[t.name].tensor_type.name, want)
        assert [int(d) for d in got[t.name].shape] == shape
    # every key kept with its value; general.file_type updated
    for key in src.fields:
        if key.startswith("GGUF.") or key == "general.file_type":
            continue
        assert key in dst.fields, key
        assert field_value(dst, key) == field_value(src, key), key
    assert field_value(dst, "general.file_type") == [FILE_TYPE[target]]

    # Q8_0 and F16 are bit-exact against the gguf package's own quantizer
    if target in ("Q8_0", "F16"):
        qt = gguf.GGMLQuantizationType[target]
        for t in src.tensors[:12]:
            if len(t.shape) < 2:
                continue
            x = gguf.quants.dequantize(t.data, t.tensor_type)
            want = gguf.quants.quantize(x, qt)
            assert np.array_equal(np.asarray(got[t.name].data).view(np.uint8).ravel(), want.view(np.uint8).ravel())

    # the file runs: a few greedy tokens
    r = run([tool("ember-run"), "-m", out, "-p", "The capital of France is", "-n", "4", "--temp", "0", "-c", "64",
             "-t", "2"])
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout.decode().strip()


def test_quantize_bad_input(f16_model, model, tmp_path):
    q = tool("ember-quantize")
    cases = [
        ([q, f16_model, f16_model, "Q4_0"], ["is the input file"]),
        ([q, f16_model, tmp_path / "x.gguf", "Q7_K"], ["unknown TYPE 'Q7_K'", "Q4_K_M"]),
        ([q, ROOT / "README.md", tmp_path / "x.gguf", "Q4_0"], ["not a GGUF file"]),
        ([q, tmp_path / "missing.gguf", tmp_path / "x.gguf", "Q4_0"], ["missing.gguf"]),
        ([q, f16_model, tmp_path / "x.gguf"], ["IN.gguf OUT.gguf TYPE"]),
        ([q, f16_model, tmp_path / "x.gguf", "Q4_0", "--threads", "0"], ["--threads"]),
    ]
    before = f16_model.read_bytes()
    for argv, needles in cases:
        r = run(argv)
        err = r.stderr.decode()
        assert r.returncode == 1, (argv, err)
        assert "ember-quantize: error:" in err, err
        for n in needles:
            assert n in err, (n, err)
    assert f16_model.read_bytes() == before  # the input survived the attempt to overwrite it
    assert not (tmp_path / "x.gguf").exists()


def test_quantize_never_replaces_what_it_did_not_create(tmp_path):
    """OUT is checked before any work. A device node, a directory or a pipe at
    OUT is refused and left as it was (as root, `ember-quantize M /dev/full Q8_0`
    once replaced the device node with a regular file). A missing or read-only
    folder is refused before quantizing. Temp files that a killed run left
    (OUT.tmp.PID of a PID no longer running) are removed by the next run; a live
    PID's are kept."""
    q = tool("ember-quantize")
    src = ROOT / "tests" / "data" / "arch" / "llama.gguf"
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "folder").mkdir()
    for out, needle in (("/dev/full", "is a character device"), (tmp_path / "folder", "is a directory"),
                        (tmp_path / "fifo", "is a named pipe"),
                        (tmp_path / "nowhere" / "x.gguf", "the folder")):
        r = run([q, src, out, "Q8_0"])
        err = r.stderr.decode()
        assert r.returncode == 1, (out, err)
        assert "ember-quantize: error:" in err and needle in err, (out, err)
        assert "[   1/" not in err, f"{out}: it quantized before refusing"
    assert Path("/dev/full").is_char_device()
    assert (tmp_path / "folder").is_dir() and not any((tmp_path / "folder").iterdir())
    assert (tmp_path / "fifo").is_fifo()
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        r = run([q, src, ro / "x.gguf", "Q8_0"])
        err = r.stderr.decode()
        assert r.returncode == 1 and "cannot write in the folder" in err and "[   1/" not in err, err
        ro.chmod(0o755)

    # a run killed while writing left OUT.tmp.PID; the next run removes it, not a live process's
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f"out.gguf.tmp.{dead.pid}"
    live = tmp_path / f"out.gguf.tmp.{os.getpid()}"
    stale.write_bytes(b"partial")
    live.write_bytes(b"someone else's")
    # names it could not have made, or not a plain file: never touched
    zero = tmp_path / f"out.gguf.tmp.0{dead.pid}"
    zero.write_bytes(b"a user's file")
    (tmp_path / "keep.txt").write_bytes(b"the link's target")
    dead2 = subprocess.Popen(["true"])
    dead2.wait()
    link_temp = tmp_path / f"out.gguf.tmp.{dead2.pid}"
    link_temp.symlink_to(tmp_path / "keep.txt")
    r = run([q, src, tmp_path / "out.gguf", "Q8_0"])
    assert r.returncode == 0, r.stderr.decode()
    assert not stale.exists()
    assert live.read_bytes() == b"someone else's"
    assert zero.read_bytes() == b"a user's file" and link_temp.is_symlink()
    assert (tmp_path / "keep.txt").read_bytes() == b"the link's target"
    assert sorted(p.name for p in tmp_path.glob("out.gguf*")) == sorted(
        ["out.gguf", live.name, zero.name, link_temp.name])

    # a link planted at the very temp name a writer will use is never written through
    # (this test's own PID stands in for the writer's: the next run's temp is made with O_EXCL)
    (tmp_path / "victim.txt").write_bytes(b"precious")
    r = run([sys.executable, "-c", f"""
import os, subprocess
os.symlink({str(tmp_path / 'victim.txt')!r}, {str(tmp_path / 'out2.gguf')!r} + '.tmp.' + str(os.getpid()))
os.execv({str(q)!r}, [{str(q)!r}, {str(src)!r}, {str(tmp_path / 'out2.gguf')!r}, 'Q8_0'])
"""])
    assert r.returncode == 0, r.stderr.decode()
    assert (tmp_path / "victim.txt").read_bytes() == b"precious"
    assert (tmp_path / "out2.gguf").is_file() and not (tmp_path / "out2.gguf").is_symlink()

    # a dangling link at OUT is refused, not replaced
    dangling = tmp_path / "dangling.gguf"
    dangling.symlink_to(tmp_path / "nothing-here.gguf")
    r = run([q, src, dangling, "Q8_0"])
    assert r.returncode == 1 and "symbolic link to a missing file" in r.stderr.decode(), r.stderr.decode()
    assert dangling.is_symlink() and not (tmp_path / "nothing-here.gguf").exists()

    # a link to a regular file: the file is replaced, the link stays a link
    link = tmp_path / "link.gguf"
    link.symlink_to(tmp_path / "out.gguf")
    r = run([q, src, link, "Q4_0"])
    assert r.returncode == 0, r.stderr.decode()
    assert link.is_symlink() and gguf.GGUFReader(str(tmp_path / "out.gguf")).tensors[1].tensor_type.name == "Q4_0"


LLAMA_WORKER = r"""
import ctypes, sys, llama_cpp
inp, out, ftype, pure = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
p = llama_cpp.llama_model_quantize_default_params()
p.ftype, p.nthread, p.pure = ftype, 2, pure
sys.exit(llama_cpp.llama_model_quantize(inp.encode(), out.encode(), ctypes.byref(p)))
"""

LLAMA_LOAD = r"""
import sys
from llama_cpp import Llama
m = Llama(model_path=sys.argv[1], n_ctx=64, verbose=False)
print(m.tokenize(b"hello", add_bos=False))
"""


@pytest.mark.parametrize("target", ["Q4_0", "Q4_K", "Q6_K", "Q4_K_M", "Q5_K_M"])
def test_quantize_same_bytes_as_llama_cpp(f16_model, tmp_path, target):
    py = os.environ.get("EMBER_LLAMA_CPP_PYTHON")
    if not py:
        pytest.skip("SKIPPED: set EMBER_LLAMA_CPP_PYTHON to a python with llama-cpp-python to compare with llama.cpp")
    ours, theirs = tmp_path / "ours.gguf", tmp_path / "theirs.gguf"
    assert run([tool("ember-quantize"), f16_model, ours, target]).returncode == 0
    pure = "0" if target.endswith("_M") else "1"
    r = subprocess.run([py, "-c", LLAMA_WORKER, str(f16_model), str(theirs), str(FILE_TYPE[target]), pure],
                       capture_output=True)
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    a = {t.name: t for t in gguf.GGUFReader(ours).tensors}
    b = {t.name: t for t in gguf.GGUFReader(theirs).tensors}
    assert set(a) == set(b)
    for name in a:
        assert a[name].tensor_type == b[name].tensor_type, name
        assert np.asarray(a[name].data).tobytes() == np.asarray(b[name].data).tobytes(), name
    r = subprocess.run([py, "-c", LLAMA_LOAD, str(ours)], capture_output=True)  # llama.cpp loads ember's file
    assert r.returncode == 0, r.stderr.decode()[-2000:]
