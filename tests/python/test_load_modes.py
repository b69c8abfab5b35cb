"""How the tools bring a model file into memory: --no-mmap (llama.cpp's long-
standing flag) and --load-mode/-lm mmap|none (current llama.cpp's) in every
tool that loads a model; a bad mode is the tool's usual 'error:' usage error.
The tools that load through the library's Model::load or gguf::File::open with
the option are checked to really not map the file (/proc/PID/maps)."""
import os
import subprocess
import time
from pathlib import Path

import pytest

from conftest import BUILD, run

TINY = ["--embd", "64", "--layers", "2", "--heads", "4", "--kv-heads", "2", "--ff", "128",
        "--vocab", "300", "--ctx", "256", "--type", "Q8_0"]


def need(name: str) -> Path:
    p = BUILD / "bin" / name
    if not p.exists():
        pytest.skip(f"SKIPPED: {p} is missing; build it (cmake --build {BUILD} --target {name})")
    return p


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("load_modes") / "tiny.gguf"
    r = run([need("ember-testtool"), "write-synthetic", path, *TINY])
    assert r.returncode == 0, r.stderr.decode()
    return path


@pytest.fixture(scope="module")
def text(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("load_modes_text") / "text.txt"
    path.write_text("the quick brown fox jumps over the lazy dog " * 20)
    return path


# Each tool's command line around the load flags: (tool, args before, args after).
def commands(tiny: Path, text: Path, out: Path):
    return [
        ("ember-run", ["-m", tiny, "-p", "hello", "-n", "3", "-t", "2"], []),
        ("ember-chat", ["-m", tiny, "-n", "3", "-t", "2"], []),
        ("ember-bench", ["-m", tiny, "-p", "8", "-n", "2", "-r", "1", "-t", "2"], []),
        ("ember-perplexity", ["-m", tiny, "-f", text, "-c", "16", "--chunks", "1", "-t", "2"], []),
        ("ember-tokenize", ["-m", tiny, "-p", "hello world"], []),
        ("ember-quantize", [tiny, out, "Q8_0"], []),
    ]


@pytest.mark.parametrize("flags", [["--no-mmap"], ["--load-mode", "none"], ["-lm", "none"], ["--load-mode", "mmap"],
                                   ["-lm", "mmap"]])
def test_every_tool_takes_the_load_flags(tiny, text, tmp_path, flags):
    for name, before, after in commands(tiny, text, tmp_path / "out.gguf"):
        (tmp_path / "out.gguf").unlink(missing_ok=True)
        r = run([need(name), *before, *flags, *after], input=b"hi\n")
        assert r.returncode == 0, f"{name} {flags}: {r.stderr.decode()}"


@pytest.mark.parametrize("flag", ["--load-mode", "-lm"])
def test_a_bad_load_mode_is_a_usage_error(tiny, text, tmp_path, flag):
    for name, before, after in commands(tiny, text, tmp_path / "out.gguf"):
        r = run([need(name), *before, flag, "bogus", *after], input=b"hi\n")
        err = r.stderr.decode()
        assert r.returncode in (1, 2), f"{name}: {r.returncode} {err}"
        assert f"{name}: error: {flag} must be mmap or none, got 'bogus'" in err, f"{name}: {err}"
        assert not (tmp_path / "out.gguf").exists()


def test_the_help_of_every_tool_names_the_flags(tiny, text, tmp_path):
    for name, _, _ in commands(tiny, text, tmp_path / "out.gguf"):
        r = run([need(name), "--help"])
        assert r.returncode == 0, name
        out = r.stdout.decode()
        assert "--no-mmap" in out and "--load-mode" in out and "-lm" in out, f"{name}: {out}"


def mapped_while_running(args, path: Path, timeout=60.0) -> bool:
    """Runs args and watches /proc/PID/maps: whether `path` was ever mapped."""
    p = subprocess.Popen([str(a) for a in args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seen = False
    deadline = time.monotonic() + timeout
    target = str(path.resolve())
    while p.poll() is None and time.monotonic() < deadline:
        try:
            with open(f"/proc/{p.pid}/maps") as f:
                if target in f.read():
                    seen = True
        except OSError:
            break
        time.sleep(0.002)
    _, err = p.communicate(timeout=timeout)
    assert p.returncode == 0, err.decode()
    return seen


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs /proc/PID/maps")
def test_no_mmap_does_not_map_the_file(tiny):
    bench = need("ember-bench")
    args = [bench, "-m", tiny, "-p", "0", "-n", "32", "-r", "4", "-t", "2"]
    assert mapped_while_running(args, tiny)  # the default maps it
    assert not mapped_while_running([*args, "--no-mmap"], tiny)
    assert not mapped_while_running([*args, "-lm", "none"], tiny)
