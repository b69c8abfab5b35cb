"""LoRA adapters in the command-line tools (issue 19): --lora / --lora-scaled in
ember-run, ember-chat, ember-perplexity and ember-bench; ember-inspect on an
adapter file (with and without -m BASE); ember-export-lora, whose merged model
computes what the unmerged adapters compute; and hostile adapter files, each
refused by every tool with one clear error line and exit status 1.

Adapters are made here with gguf-py's GGUFWriter, as llama.cpp's
convert_lora_to_gguf.py writes them: general.type = "adapter", adapter.type =
"lora", adapter.lora.alpha, general.architecture, and per adapted matrix W
(ggml shape [n_in, n_out]) the pair W.lora_a [n_in, r] and W.lora_b [r, n_out]
-- numpy arrays of shape (r, n_in) and (n_out, r), the shapes reversed -- the
token embedding's pair the other way round (lora_a [r, n_vocab], lora_b
[r, n_embd]). The bases are the tiny F32 models of tests/data/arch and the
default model SmolLM2-135M (Q4_1)."""
from __future__ import annotations

import functools
import json
import math
import re
import subprocess
import time
from pathlib import Path

import gguf
import numpy as np
import pytest

from conftest import BUILD, DEFAULT_MODELS, ROOT, model_path, run, tool

ARCH = ROOT / "tests/data/arch"
TINY = ARCH / "llama.gguf"
T = gguf.GGMLQuantizationType
LORA_TOOLS = ["ember-run", "ember-chat", "ember-perplexity", "ember-bench", "ember-export-lora"]
FAST = ["-t", "2"]  # CI has two slow cores
TEXT = ("The quick brown fox jumps over the lazy dog. " * 40).encode()


# ---- making adapters ------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def model_layout(path: Path) -> tuple[str, dict[str, list[int]]]:
    """The base model's architecture and tensors (name -> ggml shape), read once per file
    (gguf-py takes seconds to read SmolLM2's vocabulary)."""
    r = gguf.GGUFReader(path)
    arch = r.fields["general.architecture"]
    return bytes(arch.parts[arch.data[0]]).decode(), {t.name: [int(x) for x in t.shape] for t in r.tensors}


def base_tensors(path: Path) -> dict[str, list[int]]:
    return model_layout(path)[1]


def matrices(path: Path) -> list[str]:
    """Every matrix of the model (what the forward pass multiplies: the 2-D tensors)."""
    return [n for n, s in base_tensors(path).items() if len(s) == 2]


def random_pair(shape, rank: int, rng, embd: bool = False, strength: float = 1.0):
    """A LoRA pair (A, B) as numpy arrays for a base matrix of ggml shape [n_in, n_out]."""
    n_in, n_out = shape
    if embd:  # lora_a [r, n_vocab], lora_b [r, n_embd] in ggml order
        return ((rng.standard_normal((n_out, rank)) * strength).astype(np.float32),
                (rng.standard_normal((n_in, rank)) * 0.5 * strength).astype(np.float32))
    return ((rng.standard_normal((rank, n_in)) / np.sqrt(n_in) * strength).astype(np.float32),
            (rng.standard_normal((n_out, rank)) * 0.5 * strength).astype(np.float32))


def write_adapter(path: Path, pairs: dict, arch: str = "llama", alpha: float | None = 8.0,
                  types: tuple = (T.F32, T.F32), kv: dict | None = None, general_type: str | None = "adapter",
                  adapter_type: str | None = "lora", tensors: dict | None = None) -> Path:
    """pairs: base tensor name -> (A, B) numpy float32 arrays; written in `types`
    (F32, F16, BF16 or a block type through gguf.quants). tensors: extra raw tensors."""
    w = gguf.GGUFWriter(str(path), arch)
    if general_type is not None:
        w.add_string("general.type", general_type)
    if adapter_type is not None:
        w.add_string("adapter.type", adapter_type)
    if alpha is not None:
        w.add_float32("adapter.lora.alpha", alpha)
    for k, v in (kv or {}).items():
        if isinstance(v, str):
            w.add_string(k, v)
        elif isinstance(v, float):
            w.add_float32(k, v)
        elif isinstance(v, list):
            w.add_array(k, v)
        else:
            w.add_uint32(k, v)
    for name, ab in pairs.items():
        for suffix, arr, ty in ((".lora_a", ab[0], types[0]), (".lora_b", ab[1], types[1])):
            if ty == T.F32:
                w.add_tensor(name + suffix, arr.astype(np.float32))
            elif ty == T.F16:
                w.add_tensor(name + suffix, arr.astype(np.float16))
            else:
                w.add_tensor(name + suffix, gguf.quants.quantize(arr.astype(np.float32), ty), raw_dtype=ty)
    for name, arr in (tensors or {}).items():
        w.add_tensor(name, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def full_adapter(base: Path, path: Path, seed: int, rank: int = 4, alpha: float = 8.0, types=(T.F32, T.F32),
                 only: list[str] | None = None, strength: float = 1.0) -> tuple[Path, dict]:
    """An adapter on every matrix of `base` (or those in `only`); returns the path and its pairs."""
    rng = np.random.default_rng(seed)
    arch, shapes = model_layout(base)
    pairs = {n: random_pair(shapes[n], rank, rng, embd=n == "token_embd.weight", strength=strength)
             for n in (only or matrices(base))}
    return write_adapter(path, pairs, arch=arch, alpha=alpha, types=types), pairs


def need(name: str) -> Path:
    p = BUILD / "bin" / name
    if not p.exists():
        pytest.skip(f"SKIPPED: {p} is missing; build it (cmake --build {BUILD} --target {name})")
    return p


def logits(model: Path, ids: list[int], out: Path, lora: str | None = None) -> np.ndarray:
    """ember's logits at every position (ember-testtool logits), with adapters FILE:SCALE,...; an F32
    KV cache, so that the F16 rounding of keys and values does not magnify the rounding compared"""
    r = run([need("ember-testtool"), "logits", model, out, "--threads", "2", "--kv", "f32",
             *(["--lora-scaled", lora] if lora else []), ",".join(map(str, ids))])
    assert r.returncode == 0, r.stderr.decode()
    return np.fromfile(out, dtype=np.float32).reshape(len(ids), -1)


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a.astype(np.float64) - b) / np.linalg.norm(a.astype(np.float64)))


def one_error(r: subprocess.CompletedProcess, name: str) -> str:
    """A refusal: exit status 1 (no signal), one 'NAME: error: ...' line on stderr."""
    err = r.stderr.decode(errors="replace")
    assert r.returncode == 1, f"{name}: status {r.returncode}\n{err}"
    lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(lines) == 1 and lines[0].startswith(f"{name}: error: "), err
    return lines[0]


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("lora")


@pytest.fixture(scope="module")
def text(work) -> Path:
    p = work / "text.txt"
    p.write_bytes(TEXT)
    return p


@pytest.fixture(scope="module")
def tiny_lora(work) -> Path:
    """A strong adapter on every matrix of the tiny Llama (token embedding included)."""
    return full_adapter(TINY, work / "tiny-lora.gguf", seed=1, strength=2.0)[0]


@pytest.fixture(scope="module")
def smol():
    return model_path(DEFAULT_MODELS[0])


# how each tool is run on a model for a short, deterministic result
def invocation(name: str, model: Path, text: Path, out: Path) -> tuple[list, bytes | None]:
    if name == "ember-run":
        return [tool(name), "-m", model, "-p", "The fox", "-n", "12", "--temp", "0", *FAST], None
    if name == "ember-chat":
        return [tool(name), "-m", model, "-n", "12", "--temp", "0", *FAST], b"Hello there\n"
    if name == "ember-perplexity":
        return [tool(name), "-m", model, "-f", text, "-c", "32", "--chunks", "2", *FAST], None
    if name == "ember-bench":
        return [tool(name), "-m", model, "-p", "8", "-n", "2", "-r", "1", "--json", *FAST], None
    if name == "ember-export-lora":
        return [tool(name), "-m", model, "-o", out, *FAST], None
    raise AssertionError(name)


# ---- --help -----------------------------------------------------------------------

@pytest.mark.parametrize("name", LORA_TOOLS)
def test_help_names_the_lora_flags(name):
    r = run([tool(name), "--help"])
    assert r.returncode == 0, r.stderr.decode()
    out = r.stdout.decode()
    assert "--lora FILE[,FILE...]" in out and "--lora-scaled FILE:SCALE[,FILE:SCALE...]" in out, out
    assert "alpha / rank" in out, out


def test_inspect_help_names_the_base_model_flag():
    out = run([tool("ember-inspect"), "--help"]).stdout.decode()
    assert "-m, --model BASE" in out and "adapter" in out, out


# ---- the output changes with an adapter, and not at scale 0 ------------------------------

def output_of(name: str, r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 0, f"{name}: {r.stderr.decode()}"
    out = r.stdout.decode()
    if name == "ember-perplexity":
        m = re.search(r"Final estimate: PPL = (\S+)", out)
        assert m, out
        return m.group(1)
    return out


@pytest.mark.parametrize("name", ["ember-run", "ember-chat", "ember-perplexity"])
def test_an_adapter_changes_the_output_and_scale_0_does_not(name, tiny_lora, text, work):
    args, stdin = invocation(name, TINY, text, work / "unused.gguf")
    plain = output_of(name, run(args, input=stdin))
    r = run([*args, "--lora", tiny_lora], input=stdin)
    adapted = output_of(name, r)
    assert adapted != plain, (name, plain, adapted)
    assert f"{name}: lora: {tiny_lora} (scale 1: alpha 8, rank 4;" in r.stderr.decode(), r.stderr.decode()
    off = output_of(name, run([*args, "--lora-scaled", f"{tiny_lora}:0"], input=stdin))
    assert off == plain, (name, plain, off)
    # a scale of 1 spelled out is --lora
    assert output_of(name, run([*args, "--lora-scaled", f"{tiny_lora}:1"], input=stdin)) == adapted


def test_two_half_adapters_are_one_whole(tiny_lora, text, work):
    """Stacking: the same adapter twice at 0.5 adds what it adds once at 1, up to rounding: the mean
    log-likelihood (log PPL, ~12 here: this strong adapter makes the tiny model's PPL ~2e5) within
    1e-3 (measured 2.5e-4 in a -O2 sanitizer build, less in Release)."""
    args, _ = invocation("ember-perplexity", TINY, text, work / "unused.gguf")
    once = output_of("ember-perplexity", run([*args, "--lora", tiny_lora]))
    twice = output_of("ember-perplexity", run([*args, "--lora-scaled", f"{tiny_lora}:0.5,{tiny_lora}:0.5"]))
    assert abs(math.log(float(once)) - math.log(float(twice))) <= 1e-3, (once, twice)


def test_smollm2_run_and_perplexity_with_an_adapter(smol, work):
    lora, _ = full_adapter(smol, work / "smol-q.gguf", seed=5, rank=8, alpha=16.0, types=(T.F16, T.F16),
                           only=[f"blk.{i}.attn_q.weight" for i in range(30)] +
                                [f"blk.{i}.ffn_down.weight" for i in range(30)], strength=0.5)
    prompt = ["-p", "The capital of France is", "-n", "8", "--temp", "0", "-c", "64", *FAST]
    plain = run([tool("ember-run"), "-m", smol, *prompt])
    adapted = run([tool("ember-run"), "-m", smol, *prompt, "--lora", lora])
    off = run([tool("ember-run"), "-m", smol, *prompt, "--lora-scaled", f"{lora}:0"])
    assert plain.returncode == adapted.returncode == off.returncode == 0, adapted.stderr.decode()
    assert adapted.stdout != plain.stdout and off.stdout == plain.stdout
    text = work / "smol.txt"
    text.write_bytes(b"The history of the city begins with a small settlement on the river. " * 30)
    ppl = [run([tool("ember-perplexity"), "-m", smol, "-f", text, "-c", "64", "--chunks", "2", *FAST, *extra])
           for extra in ([], ["--lora", lora], ["--lora-scaled", f"{lora}:0"])]
    vals = [output_of("ember-perplexity", r) for r in ppl]
    assert vals[1] != vals[0] and vals[2] == vals[0], vals


def test_bench_names_the_adapters(tiny_lora, work):
    args, _ = invocation("ember-bench", TINY, work / "x", work / "unused.gguf")
    plain = json.loads(run(args).stdout)
    assert all(e["adapters"] == [] for e in plain)
    r = run([*args, "--lora", tiny_lora, "--lora-scaled", f"{tiny_lora}:0.5"])
    assert r.returncode == 0, r.stderr.decode()
    out = json.loads(r.stdout)
    assert [e["test"] for e in out] == ["pp8", "tg2"]
    for e in out:
        assert [(a["path"], a["scale"]) for a in e["adapters"]] == [(str(tiny_lora), 1.0), (str(tiny_lora), 0.5)]
        assert e["adapters"][0]["rank"] == 4 and e["adapters"][0]["alpha"] == 8.0 and e["adapters"][0]["bytes"] > 0
    # the table: a 'lora' column and the adapters in the header line, only when there are adapters
    table = run([tool("ember-bench"), "-m", TINY, "-p", "8", "-n", "0", "-r", "1", *FAST, "--lora-scaled",
                 f"{tiny_lora}:0.25"])
    assert table.returncode == 0, table.stderr.decode()
    lines = table.stdout.decode().splitlines()
    assert f"lora: {tiny_lora} (scale 0.25" in lines[0], lines[0]
    assert re.match(r"\| model +\| +size \| +params \| lora +\| threads \|", lines[2]), lines[2]
    assert "| tiny-lora.gguf:0.25 |" in lines[4], lines[4]
    plain_table = run([tool("ember-bench"), "-m", TINY, "-p", "8", "-n", "0", "-r", "1", *FAST]).stdout.decode()
    assert "lora" not in plain_table, plain_table


def test_lists_repeat_combine_and_keep_their_order(tiny_lora, work):
    """--lora A,B --lora-scaled C:0.5 --lora D: four adapters in that order; a quoted item may hold
    a comma, a path may hold ':' (the scale follows the last one)."""
    odd = work / "odd,name:x.gguf"
    odd.write_bytes(tiny_lora.read_bytes())
    r = run([tool("ember-run"), "-m", TINY, "-p", "a", "-n", "1", *FAST, "--lora", f"{tiny_lora},{tiny_lora}",
             "--lora-scaled", f"{tiny_lora}:+0.5", "--lora", f'"{odd}"', "--lora-scaled", f'"{odd}:-0.25"'])
    assert r.returncode == 0, r.stderr.decode()
    got = re.findall(r"^ember-run: lora: (.*) \(scale (\S+):", r.stderr.decode(), re.M)
    assert got == [(str(tiny_lora), "1"), (str(tiny_lora), "1"), (str(tiny_lora), "0.5"), (str(odd), "1"),
                   (str(odd), "-0.25")], got


# ---- bad command lines: usage errors naming the flag and the item --------------------------

BAD_FLAGS = [  # (flag value maker, what the message says)
    (lambda a: ["--lora", "/nonexistent/x.gguf"], "cannot open the adapter '/nonexistent/x.gguf'"),
    (lambda a: ["--lora", str(a.parent)], "is a directory"),
    (lambda a: ["--lora", f"{a},,{a}"], "an empty item"),
    (lambda a: ["--lora", ""], "--lora needs FILE"),
    (lambda a: ["--lora", f"{a},"], "an empty item"),
    (lambda a: ["--lora", f'"{a}'], "a quote is not closed"),
    (lambda a: ["--lora-scaled", f"{a}:abc"], "the scale 'abc' is not a finite number"),
    (lambda a: ["--lora-scaled", f"{a}:nan"], "the scale 'nan' is not a finite number"),
    (lambda a: ["--lora-scaled", f"{a}:inf"], "the scale 'inf' is not a finite number"),
    (lambda a: ["--lora-scaled", f"{a}:-inf"], "the scale '-inf' is not a finite number"),
    (lambda a: ["--lora-scaled", f"{a}:1e40"], "the scale '1e40' is not a finite number"),
    (lambda a: ["--lora-scaled", f"{a}:"], "the scale '' is not a finite number"),
    (lambda a: ["--lora-scaled", f"{a}:+"], "the scale '+' is not a finite number"),
    (lambda a: ["--lora-scaled", f"{a}:0.5x"], "the scale '0.5x' is not a finite number"),
    (lambda a: ["--lora-scaled", f"{a}"], "no scale; give FILE:SCALE"),
    (lambda a: ["--lora-scaled", ":0.5"], "no file before the ':'"),
    (lambda a: ["--lora-scaled", f"{a}:1,,{a}:2"], "an empty item"),
    (lambda a: ["--lora"], "--lora needs a value"),
]


@pytest.mark.parametrize("name", LORA_TOOLS)
def test_bad_lora_flags_are_usage_errors(name, tiny_lora, text, work):
    args, stdin = invocation(name, TINY, text, work / f"bad-flags-{name}.gguf")
    for make, needle in BAD_FLAGS:
        extra = make(tiny_lora)
        line = one_error(run([*args, *extra], input=stdin), name)
        assert needle in line, (extra, line)
        assert "--lora" in line, line  # names the flag
    assert not (work / f"bad-flags-{name}.gguf").exists()


# ---- hostile adapter files -----------------------------------------------------------------

def hostile_cases(work: Path) -> dict[str, tuple[Path, str, bool]]:
    """name -> (file, what the library's error says, structural: ember-inspect finds it without -m)."""
    rng = np.random.default_rng(7)
    q = random_pair([64, 64], 2, rng)
    d = work / "hostile"
    d.mkdir(exist_ok=True)
    good = write_adapter(d / "good.gguf", {"blk.0.attn_q.weight": q})
    cases = {
        "not an adapter (a model)": (TINY, 'not an adapter: general.type is "model"', False),
        "no general.type": (write_adapter(d / "no-type.gguf", {"blk.0.attn_q.weight": q}, general_type=None),
                            "not an adapter: it has no general.type", False),
        "not lora": (write_adapter(d / "cvec.gguf", {"blk.0.attn_q.weight": q}, adapter_type="control_vector"),
                     'adapter.type is "control_vector"', True),
        "wrong architecture": (write_adapter(d / "arch.gguf", {"blk.0.attn_q.weight": q}, arch="qwen2"),
                               'made for architecture "qwen2"', False),
        "missing lora_b": (write_adapter(d / "half.gguf", {}, tensors={"blk.0.attn_q.weight.lora_a": q[0]}),
                           "'blk.0.attn_q.weight' has no lora_b", True),
        "bad shapes": (write_adapter(d / "shape.gguf", {"blk.0.attn_q.weight": (np.zeros((2, 65), np.float32), q[1])}),
                       "the pair of 'blk.0.attn_q.weight' does not fit it", False),
        "rank mismatch": (write_adapter(d / "rank.gguf",
                                        {"blk.0.attn_q.weight": (q[0], np.zeros((64, 3), np.float32))}),
                          "the same in both", True),
        "unknown target": (write_adapter(d / "unknown.gguf", {"blk.0.attn_foo.weight": q}),
                           "which the model", False),
        "target beyond the layers": (write_adapter(d / "layer.gguf", {"blk.7.attn_q.weight": q}),
                                     "which the model", False),
        "unused target (rope factors)": (write_adapter(d / "rope.gguf", {"rope_freqs.weight": (
            np.zeros((2, 8), np.float32), np.zeros((1, 2), np.float32))}), "not a matrix the forward pass multiplies",
            False),
        "output head of a tied model": (write_adapter(d / "output.gguf",
                                                      {"output.weight": random_pair([64, 200], 2, rng)}),
                                        "tied to token_embd", False),
        "not 2-D": (write_adapter(d / "3d.gguf", {"blk.0.attn_q.weight": (q[0].reshape(1, 2, 64), q[1])}),
                    "a LoRA tensor is a 2-D matrix", True),
        "unsupported type Q4_0": (write_adapter(d / "q4_0.gguf",
                                                {"blk.0.attn_q.weight": random_pair([64, 64], 32, rng)},
                                                types=(T.Q4_0, T.Q4_0)),
                                  "has type Q4_0; LoRA tensors may be F32, F16, BF16 or Q8_0", True),
        "activated LoRA": (write_adapter(d / "alora.gguf", {"blk.0.attn_q.weight": q},
                                         kv={"adapter.alora.invocation_tokens": [1, 2, 3]}),
                           "activated LoRA", True),
        "alpha not a float": (write_adapter(d / "alpha.gguf", {"blk.0.attn_q.weight": q}, alpha=None,
                                            kv={"adapter.lora.alpha": "eight"}),
                              "adapter.lora.alpha has type string", True),
        "alpha nan": (write_adapter(d / "nan.gguf", {"blk.0.attn_q.weight": q}, alpha=float("nan")),
                      "adapter.lora.alpha is nan", True),
        "a tensor that is not half of a pair": (
            write_adapter(d / "stray.gguf", {"blk.0.attn_q.weight": q},
                          tensors={"blk.0.attn_q.weight": np.zeros((64, 64), np.float32)}),
            "is not half of a LoRA pair", True),
        "no tensors": (write_adapter(d / "empty.gguf", {}), "it has no tensors", True),
        "a pair on a norm vector": (write_adapter(d / "norm-pair.gguf", {"blk.0.attn_norm.weight": (
            np.zeros((1, 64), np.float32), np.zeros((1, 1), np.float32))}),
            "not a matrix the forward pass multiplies", False),
        "only norm vectors": (write_adapter(d / "norm.gguf", {}, tensors={
            "blk.0.attn_norm.weight": np.ones(64, np.float32)}), "only norm vectors, which are not applied", True),
        "a value that is not finite": (write_adapter(d / "inf.gguf", {"blk.0.attn_q.weight": (
            q[0], np.where(np.arange(128).reshape(64, 2) == 77, np.inf, q[1]).astype(np.float32))}),
            "holds a value that is not a finite number (element 77 of 128)", True),
        "alpha beyond any rank": (write_adapter(d / "alpha-big.gguf", {"blk.0.attn_q.weight": q}, alpha=1e9),
                                  "adapter.lora.alpha is 1000000000; it must be a finite number", False),
    }
    trunc = d / "truncated.gguf"
    trunc.write_bytes(good.read_bytes()[:-200])
    cases["truncated"] = (trunc, "truncated", True)
    garbage = d / "garbage.gguf"
    garbage.write_bytes(b"this is not a GGUF file at all\n" * 4)
    cases["not GGUF"] = (garbage, "garbage.gguf", True)
    return cases


@pytest.fixture(scope="module")
def hostile(work):
    return hostile_cases(work)


@pytest.mark.parametrize("name", LORA_TOOLS)
def test_hostile_adapters_are_refused_by_every_tool(name, hostile, text, work):
    out = work / f"hostile-{name}.gguf"
    args, stdin = invocation(name, TINY, text, out)
    for case, (path, needle, _) in hostile.items():
        line = one_error(run([*args, "--lora", path], input=stdin), name)
        assert needle in line, (case, line)
        assert str(path) in line, (case, line)  # names the file
        assert not out.exists(), case


def test_hostile_adapters_in_ember_inspect(hostile):
    """With -m BASE: the library's error, status 1, nothing on stdout. Without: what no base
    model could make right is an error too (status 1, the listing printed); what only a base
    model can tell (architecture, targets, shapes) is not."""
    inspect = tool("ember-inspect")
    for case, (path, needle, structural) in hostile.items():
        r = run([inspect, path, "-m", TINY])
        line = one_error(r, "ember-inspect")
        assert needle in line and r.stdout == b"", (case, line)
        r = run([inspect, path])
        if case in ("truncated", "not GGUF"):
            assert needle in one_error(r, "ember-inspect"), case
        elif structural:
            line = one_error(r, "ember-inspect")
            assert "cannot be applied to any model" in line and needle.split(";")[0] in line, (case, line)
            assert b"adapter: " in r.stdout and b"problem: " in r.stdout, case
        else:
            assert r.returncode == 0, (case, r.stderr.decode())
            assert r.stderr == b"", (case, r.stderr.decode())


# ---- ember-inspect on an adapter -------------------------------------------------------------

def test_inspect_describes_an_adapter(work):
    rng = np.random.default_rng(3)
    pairs = {"token_embd.weight": random_pair([64, 200], 3, rng, embd=True),
             "blk.0.attn_q.weight": random_pair([64, 64], 3, rng),
             "blk.1.ffn_down.weight": random_pair([96, 64], 5, rng)}
    path = write_adapter(work / "described.gguf", pairs, alpha=16.0, types=(T.F16, T.F32),
                         kv={"general.name": "tuned", "adapter.lora.task_name": "chat"},
                         tensors={"blk.0.attn_norm.weight": np.ones(64, np.float32)})  # a norm vector: skipped
    r = run([tool("ember-inspect"), path])
    assert r.returncode == 0, r.stderr.decode()
    out = r.stdout.decode()
    assert out.startswith("GGUF v3  ") and "metadata: " in out and "tensors: 7" in out  # as for a model
    assert 'adapter: lora for architecture "llama", name "tuned"' in out, out
    assert "alpha 16: a pair of rank r adds scale * alpha / r times B A" in out, out
    assert "rank 3 to 5" in out and 'task name "chat"' in out, out
    assert re.search(r"token_embd\.weight +3 +64 x 200 +F16 +F32$", out, re.M), out
    assert re.search(r"blk\.1\.ffn_down\.weight +5 +96 x 64 +F16 +F32$", out, re.M), out
    assert "not applied: 1 norm vector (as llama.cpp): blk.0.attn_norm.weight" in out, out
    assert "-m BASE" in out
    j = json.loads(run([tool("ember-inspect"), path, "--json"]).stdout)
    a = j["adapter"]
    assert (a["type"], a["arch"], a["name"], a["alpha"], a["rank_min"], a["rank_max"]) == \
        ("lora", "llama", "tuned", 16.0, 3, 5)
    assert [(t["tensor"], t["rank"], t["shape"], t["type_a"], t["type_b"]) for t in a["targets"]] == [
        ("token_embd.weight", 3, [64, 200], "F16", "F32"), ("blk.0.attn_q.weight", 3, [64, 64], "F16", "F32"),
        ("blk.1.ffn_down.weight", 5, [96, 64], "F16", "F32")]
    n = sum(a.size + b.size for a, b in pairs.values())
    assert a["n_params"] == n and a["skipped"] == ["blk.0.attn_norm.weight"] and a["problems"] == []
    assert a["checked_against"] is None
    # checked against the base: the library's view, the same targets
    r = run([tool("ember-inspect"), path, "-m", TINY, "--json"])
    assert r.returncode == 0, r.stderr.decode()
    b = json.loads(r.stdout)["adapter"]
    assert b["checked_against"] == str(TINY) and b["targets"] == a["targets"] and b["n_params"] == n
    assert b["skipped"] == ["blk.0.attn_norm.weight"]
    r = run([tool("ember-inspect"), path, "--model", TINY])
    assert f"checked against '{TINY}': it fits" in r.stdout.decode()
    # a model stays a model: no adapter section
    assert "adapter" not in json.loads(run([tool("ember-inspect"), TINY, "--json"]).stdout)
    assert run([tool("ember-inspect"), path, "-m"]).returncode == 2  # -m without a value


# ---- ember-export-lora --------------------------------------------------------------------------

def merge_reference(base: Path, adapters: list[tuple[dict, float, float]]) -> dict[str, np.ndarray]:
    """The merged matrices in float64: W + sum s B A, s = scale * alpha / r (scale if alpha is 0)."""
    reader = gguf.GGUFReader(base)
    out = {}
    for t in reader.tensors:
        deltas = [(pairs[t.name], scale, alpha) for pairs, scale, alpha in adapters if t.name in pairs]
        if not deltas:
            continue
        w = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float64)  # numpy (n_out, n_in)
        for (a, b), scale, alpha in deltas:
            a, b = a.astype(np.float64), b.astype(np.float64)
            rank = a.shape[1] if t.name == "token_embd.weight" else a.shape[0]
            s = float(np.float32(np.float32(alpha) / np.float32(rank)) * np.float32(scale)) if alpha else scale
            w = w + s * (a @ b.T if t.name == "token_embd.weight" else b @ a)
        out[t.name] = w
    return out


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3", "gemma3", "phi3", "phi3-partial"])
def test_merged_logits_equal_the_unmerged_adapters(arch, work):
    """Every matrix adapted (token_embd, fused attn_qkv / ffn_up, a separate or tied head), two
    adapters stacked (F32 and F16 pairs; one with alpha 0; scales 0.75 and -0.5): the merged F32
    model's logits equal a session's with the adapters within float32 rounding (W x + s B (A x)
    and (W + s B A) x round differently): measured 4e-7 to 1.3e-6 relative L2 (phi3's fused
    attn_qkv the largest) with an F32 KV cache; the bound is 1e-5. (With the default F16 cache the
    rounding of keys and values, magnified by these strong random adapters' attention, gives up to
    4.5e-5.) The merged weights themselves are checked against a float64 merge, to float32 rounding."""
    base = ARCH / f"{arch}.gguf"
    a1, p1 = full_adapter(base, work / f"{arch}-a1.gguf", seed=11)
    a2, p2 = full_adapter(base, work / f"{arch}-a2.gguf", seed=12, rank=3, alpha=0.0, types=(T.F16, T.F16),
                          strength=0.5)
    out = work / f"{arch}-merged.gguf"
    r = run([tool("ember-export-lora"), "-m", base, "-o", out, "--lora-scaled", f"{a1}:0.75", "--lora-scaled",
             f"{a2}:-0.5", *FAST])
    assert r.returncode == 0, r.stderr.decode()
    err = r.stderr.decode()
    n = len(matrices(base))
    assert f"merged {n} tensors with 2 adapters" in err, err
    ids = [int(x) for x in np.random.default_rng(0).integers(3, 200, 20)]
    unmerged = logits(base, ids, work / "u.bin", f"{a1}:0.75,{a2}:-0.5")
    merged = logits(out, ids, work / "m.bin")
    plain = logits(base, ids, work / "p.bin")
    assert rel(unmerged, plain) > 1e-2  # the adapters do change the logits
    assert rel(unmerged, merged) < 1e-5, rel(unmerged, merged)
    # the merged tensors are the float64 reference's, rounded to float32; the others are copied byte for byte
    f16 = lambda pairs: {k: (a.astype(np.float16).astype(np.float32), b.astype(np.float16).astype(np.float32))
                         for k, (a, b) in pairs.items()}
    ref = merge_reference(base, [(p1, 0.75, 8.0), (f16(p2), -0.5, 0.0)])
    got = {t.name: t for t in gguf.GGUFReader(out).tensors}
    for t in gguf.GGUFReader(base).tensors:
        g = got[t.name]
        assert [int(x) for x in g.shape] == [int(x) for x in t.shape]
        if t.name in ref:
            assert g.tensor_type == T.F32
            np.testing.assert_allclose(g.data, ref[t.name], rtol=2e-6, atol=2e-6 * np.abs(ref[t.name]).max())
        else:
            assert g.tensor_type == t.tensor_type and bytes(g.data) == bytes(t.data), t.name
    if "output.weight" not in base_tensors(base):  # a tied head is written out unchanged
        emb = next(t for t in gguf.GGUFReader(base).tensors if t.name == "token_embd.weight")
        assert bytes(got["output.weight"].data) == bytes(emb.data)
        assert "the output head is tied to token_embd.weight" in err


def test_merge_keeps_the_metadata_and_scale_0_changes_nothing(work):
    lora, _ = full_adapter(TINY, work / "meta-lora.gguf", seed=21)
    out = work / "scale0.gguf"
    r = run([tool("ember-export-lora"), "-m", TINY, "-o", out, "--lora-scaled", f"{lora}:0", *FAST])
    assert r.returncode == 0, r.stderr.decode()
    a, b = gguf.GGUFReader(TINY), gguf.GGUFReader(out)
    fields = lambda rd: {k: (f.types, [bytes(p) for p in f.parts]) for k, f in rd.fields.items()
                         if not k.startswith("GGUF.")}
    assert fields(a) == fields(b)  # every key, in type and value (general.file_type unchanged: F32 stays F32)
    tb = {t.name: t for t in b.tensors}
    for t in a.tensors:  # W + 0 = W: every tensor's bytes as they were
        assert bytes(tb[t.name].data) == bytes(t.data), t.name
    assert list(tb)[:len(a.tensors)] == [t.name for t in a.tensors]  # in the same order


def test_merge_as_another_type(work):
    """--type Q8_0 on every matrix: general.file_type becomes Q8_0's (7); the matrices are the
    reference quantized (within one Q8_0 step); --type Q4_K falls back on rows of 64 as
    ember-quantize does (Q5_0)."""
    lora, pairs = full_adapter(TINY, work / "type-lora.gguf", seed=31)
    out = work / "q8.gguf"
    r = run([tool("ember-export-lora"), "-m", TINY, "-o", out, "--lora", lora, "--type", "q8_0", *FAST])
    assert r.returncode == 0, r.stderr.decode()
    rd = gguf.GGUFReader(out)
    assert int(rd.fields["general.file_type"].parts[-1][0]) == 7
    assert int(rd.fields["general.quantization_version"].parts[-1][0]) == 2
    ref = merge_reference(TINY, [(pairs, 1.0, 8.0)])
    for t in rd.tensors:
        if t.name in ref:
            assert t.tensor_type == T.Q8_0
            got = gguf.quants.dequantize(t.data, t.tensor_type)
            step = np.abs(ref[t.name]).reshape(-1, 32).max(axis=1) / 127  # Q8_0's scale per block
            # half a step, and the F16 rounding of the step (127 x 2^-11 of a step)
            assert (np.abs(got - ref[t.name]).reshape(-1, 32) <= step[:, None] * 0.57 + 1e-6).all(), t.name
    r = run([tool("ember-export-lora"), "-m", TINY, "-o", work / "q4k.gguf", "--lora", lora, "--type", "Q4_K", *FAST])
    assert r.returncode == 0, r.stderr.decode()
    assert "-> Q5_0" in r.stderr.decode() and "rows of 64 do not fit Q4_K's blocks of 256" in r.stderr.decode()
    assert {t.tensor_type for t in gguf.GGUFReader(work / "q4k.gguf").tensors if t.name in ref} == {T.Q5_0}
    bad = run([tool("ember-export-lora"), "-m", TINY, "-o", work / "x.gguf", "--lora", lora, "--type", "IQ2_XXS"])
    assert "--type 'IQ2_XXS' is not a type ember can write" in one_error(bad, "ember-export-lora")


def test_quantized_adapters_merge(work):
    """Q8_0 and BF16 pairs (ember's extension; llama-export-lora refuses quantized ones): merged as
    the session applies them."""
    only = ["blk.0.attn_q.weight", "blk.1.ffn_up.weight", "blk.1.attn_v.weight"]
    a, _ = full_adapter(TINY, work / "q8-lora.gguf", seed=41, rank=32, types=(T.Q8_0, T.Q8_0), only=only)
    b, _ = full_adapter(TINY, work / "bf16-lora.gguf", seed=42, rank=2, types=(T.BF16, T.BF16), only=only)
    out = work / "quant-merged.gguf"
    r = run([tool("ember-export-lora"), "-m", TINY, "-o", out, "--lora", f"{a},{b}", *FAST])
    assert r.returncode == 0, r.stderr.decode()
    ids = list(range(5, 25))
    u, m = logits(TINY, ids, work / "u.bin", f"{a}:1,{b}:1"), logits(out, ids, work / "m.bin")
    assert rel(u, logits(TINY, ids, work / "p.bin")) > 1e-2 and rel(u, m) < 1e-5, rel(u, m)


def test_merged_smollm2_in_f16(smol, work):
    """SmolLM2 (Q4_1 matrices, a Q8_0 tied embedding), every matrix adapted (rank 8, F16 pairs):
    the adapted matrices are dequantized, merged and written as F16 (llama-export-lora's default).
    Bound: the merged model's logits differ from the session's with the adapter by what writing
    the weights in F16 costs, which is measured here on the base model alone (SmolLM2 vs its F16
    conversion by ember-quantize: 7.1e-4 relative L2 with an F32 KV cache); merged vs unmerged
    measured 6.3e-4 (the adapter's own effect: 0.42). The bound is twice the measured F16 cost."""
    lora, _ = full_adapter(smol, work / "smol-all.gguf", seed=51, rank=8, alpha=16.0, types=(T.F16, T.F16),
                           strength=0.3)
    out = work / "smol-merged.gguf"
    t0 = time.time()
    r = run([tool("ember-export-lora"), "-m", smol, "-o", out, "--lora", lora, *FAST])
    seconds = time.time() - t0
    assert r.returncode == 0, r.stderr.decode()
    err = r.stderr.decode()
    assert "merged 211 tensors with 1 adapter" in err and "Q4_1 -> F16" in err and "Q8_0 -> F16" in err, err
    print(f"ember-export-lora: SmolLM2, 211 matrices, rank 8, 2 threads: {seconds:.1f} s")
    meta = json.loads(run([tool("ember-inspect"), out, "--json"]).stdout)["metadata"]
    assert meta["general.file_type"] == 1  # mostly F16 now (was 3, Q4_1)
    f16 = work / "smol-f16.gguf"
    assert run([tool("ember-quantize"), smol, f16, "F16", "--threads", "2"]).returncode == 0
    ids = [int(x) for x in np.random.default_rng(1).integers(100, 40000, 24)]
    base = logits(smol, ids, work / "b.bin")
    cost = rel(base, logits(f16, ids, work / "f.bin"))
    unmerged = logits(smol, ids, work / "u.bin", f"{lora}:1")
    merged = logits(out, ids, work / "m.bin")
    assert rel(unmerged, base) > 2e-2
    assert rel(unmerged, merged) <= 2 * cost, (rel(unmerged, merged), cost)
    # the merged model runs in the tools like any model
    g = run([tool("ember-run"), "-m", out, "-p", "The capital of France is", "-n", "4", "--temp", "0", "-c", "64",
             *FAST])
    assert g.returncode == 0 and g.stdout.strip(), g.stderr.decode()


def test_export_refuses_to_overwrite_an_input_and_leaves_files_as_they_were(tiny_lora, hostile, work):
    exp = tool("ember-export-lora")
    copy = work / "base-copy.gguf"
    copy.write_bytes(TINY.read_bytes())
    lora_copy = work / "lora-copy.gguf"
    lora_copy.write_bytes(tiny_lora.read_bytes())
    before = (copy.read_bytes(), lora_copy.read_bytes())
    line = one_error(run([exp, "-m", copy, "-o", copy, "--lora", lora_copy]), "ember-export-lora")
    assert "is the base model" in line, line
    line = one_error(run([exp, "-m", copy, "-o", lora_copy, "--lora", lora_copy]), "ember-export-lora")
    assert "is the adapter" in line, line
    link = work / "link.gguf"
    link.symlink_to(copy)
    line = one_error(run([exp, "-m", copy, "-o", link, "--lora", lora_copy]), "ember-export-lora")
    assert "is the base model" in line, line
    (work / "adir").mkdir(exist_ok=True)
    assert "is a directory" in one_error(run([exp, "-m", copy, "-o", work / "adir", "--lora", lora_copy]),
                                         "ember-export-lora")
    assert "does not exist" in one_error(run([exp, "-m", copy, "-o", work / "no" / "x.gguf", "--lora", lora_copy]),
                                         "ember-export-lora")
    # an adapter that does not fit: an existing OUT stays as it was, no temporary file is left
    out = work / "existing.gguf"
    out.write_bytes(b"precious")
    bad, _, _ = hostile["bad shapes"]
    assert "does not fit" in one_error(run([exp, "-m", copy, "-o", out, "--lora", lora_copy, "--lora", bad]),
                                       "ember-export-lora")
    assert out.read_bytes() == b"precious"
    assert not list(work.glob("existing.gguf.tmp*"))
    assert (copy.read_bytes(), lora_copy.read_bytes()) == before
    # the same file merged twice is two adapters
    r = run([exp, "-m", copy, "-o", out, "--lora", f"{lora_copy},{lora_copy}", *FAST])
    assert r.returncode == 0 and "with 2 adapters" in r.stderr.decode(), r.stderr.decode()
    # a scale that overflows: refused before anything is written, or once a merged value does not fit the type
    merged = out.read_bytes()
    line = one_error(run([exp, "-m", copy, "-o", out, "--lora-scaled", f"{lora_copy}:3e38", *FAST]),
                     "ember-export-lora")
    assert "is not a finite float; use a smaller scale" in line, line
    line = one_error(run([exp, "-m", copy, "-o", out, "--lora-scaled", f"{lora_copy}:1e30", "--type", "F16", *FAST]),
                     "ember-export-lora")
    assert "which F16 cannot hold; nothing was written" in line and "--type F32" in line, line
    assert out.read_bytes() == merged  # the last good merge, untouched
    assert not list(work.glob("existing.gguf.tmp*"))
    # required arguments
    assert "no adapter to merge" in one_error(run([exp, "-m", copy, "-o", out]), "ember-export-lora")
    assert "no output" in one_error(run([exp, "-m", copy, "--lora", lora_copy]), "ember-export-lora")
    assert "no base model" in one_error(run([exp, "-o", out, "--lora", lora_copy]), "ember-export-lora")


def test_export_reads_the_base_as_stored_with_and_without_mmap(smol, work):
    """--no-mmap reads the base into memory; the merge must see the file's weights there too (a
    model load that repacks its weights gives the copy's pages back: ember-export-lora loads the
    base with EMBER_REPACK=0). Both ways write the same bytes."""
    lora, _ = full_adapter(smol, work / "smol-two.gguf", seed=61, rank=4, alpha=8.0,
                           only=["blk.0.attn_q.weight", "blk.29.ffn_down.weight"], strength=0.3)
    outs = []
    for extra in ([], ["--no-mmap"], ["-lm", "none"]):
        out = work / f"smol-two-{len(outs)}.gguf"
        r = run([tool("ember-export-lora"), "-m", smol, "-o", out, "--lora", lora, *FAST, *extra])
        assert r.returncode == 0, r.stderr.decode()
        outs.append(out.read_bytes())
    assert outs[0] == outs[1] == outs[2]
    # and the merged matrices are what the adapter adds (not zeros): far from the base's F16
    ids = [int(x) for x in np.random.default_rng(2).integers(100, 40000, 12)]
    unmerged = logits(smol, ids, work / "u2.bin", f"{lora}:1")
    merged = logits(work / "smol-two-1.gguf", ids, work / "m2.bin")
    assert rel(unmerged, merged) < 5e-3, rel(unmerged, merged)
