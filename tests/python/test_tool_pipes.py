"""Every tool treats a closed stdout (EPIPE: the reader of a pipe went away, as
with `| head`) as a normal end -- status 0, no signal, nothing said on stderr --
and a generation stops there instead of running to its end; any other write
error (/dev/full: ENOSPC) is still an error with a message and status 1."""
import os
import re
import subprocess
from pathlib import Path

import pytest

from conftest import DEFAULT_MODELS, model_path, run, tool

FAST = ["-c", "256", "-t", "2"]  # CI has two slow cores
GENERATED = re.compile(r"generation: (\d+) tokens, .* stop: (\w+)$", re.M)
ALL_TOOLS = ["ember-run", "ember-chat", "ember-inspect", "ember-tokenize", "ember-bench", "ember-perplexity",
             "ember-quantize", "ember-export-lora"]
WITH_VERSION = ALL_TOOLS  # every tool answers --version (ember-bench, -perplexity, -quantize, -tokenize refused it)


@pytest.fixture(scope="module")
def model():
    return model_path(DEFAULT_MODELS[0])


def through(reader: str, args, input: bytes | None = None):
    """`args | reader` in bash with pipefail. Returns the pipeline's status, the
    tool's own status (PIPESTATUS[0]), the reader's output and the tool's stderr."""
    script = f'"$@" | {reader}; echo "status $? ${{PIPESTATUS[0]}}" >&2'
    r = subprocess.run(["bash", "-o", "pipefail", "-c", script, "bash", *[str(a) for a in args]],
                       input=input, capture_output=True, check=False)
    *err, last = r.stderr.decode().rstrip("\n").split("\n")
    m = re.fullmatch(r"status (\d+) (\d+)", last)
    assert m, r.stderr.decode()
    return int(m[1]), int(m[2]), r.stdout, "\n".join(err)


def with_closed_stdout(args, input: bytes | None = None) -> subprocess.CompletedProcess:
    """Runs the tool with stdout a pipe whose reader is already gone, so that
    its first write to stdout fails with EPIPE (or kills it by SIGPIPE, which
    subprocess restores to its default in the child)."""
    r, w = os.pipe()
    os.close(r)
    try:
        return subprocess.run([str(a) for a in args], input=input, stdout=w, stderr=subprocess.PIPE, check=False)
    finally:
        os.close(w)


def assert_quiet(err: str):
    for word in ("error", "pipe", "Broken", "stdout", "terminate", "Segmentation"):
        assert word not in err, err


def generated(err: str) -> tuple[int, str]:
    m = GENERATED.search(err)
    assert m, err
    return int(m[1]), m[2]


# ---- help and version -------------------------------------------------------

@pytest.mark.parametrize("name", ALL_TOOLS)
def test_help_into_a_closed_pipe(name):
    status, tool_status, out, err = through("head -n 1", [tool(name), "--help"])
    assert (status, tool_status) == (0, 0), err
    assert out.startswith(b"usage: ") and err == ""
    r = with_closed_stdout([tool(name), "--help"])
    assert r.returncode == 0, r.stderr.decode()
    assert r.stderr == b""


@pytest.mark.parametrize("name", WITH_VERSION)
def test_version_names_the_tool_and_ember(name):
    r = run([tool(name), "--version"])
    assert r.returncode == 0 and r.stderr == b"", r.stderr.decode()
    first = r.stdout.decode().splitlines()[0]
    assert re.fullmatch(rf"({re.escape(name)} \(ember \d+\.\d+\.\d+\)|ember \d+\.\d+\.\d+.*)", first), first


@pytest.mark.parametrize("name", WITH_VERSION)
def test_version_into_a_closed_pipe(name):
    status, tool_status, out, err = through("head -n1", [tool(name), "--version"])
    assert (status, tool_status) == (0, 0) and out and err == ""
    r = with_closed_stdout([tool(name), "--version"])
    assert r.returncode == 0 and r.stderr == b"", r.stderr.decode()


# ---- tools that print a listing ----------------------------------------------

def test_inspect_into_head(model):
    inspect = tool("ember-inspect")
    status, tool_status, out, err = through("head -n 12", [inspect, model])  # scripts/quickstart
    assert (status, tool_status) == (0, 0), err
    assert out.startswith(b"GGUF v3") and out.count(b"\n") == 12 and err == ""
    # megabytes of JSON (the whole vocabulary): more than a pipe holds, so the writes meet EPIPE
    status, tool_status, out, err = through("head -n 1", [inspect, model, "--json", "--full"])
    assert (status, tool_status) == (0, 0), err
    assert out == b"{\n" and err == ""
    for flags in ([], ["--json"]):
        r = with_closed_stdout([inspect, model, *flags])
        assert r.returncode == 0 and r.stderr == b"", r.stderr.decode()


def test_tokenize_into_head(model):
    tokenize = tool("ember-tokenize")
    text = ("The quick brown fox jumps over the lazy dog. " * 4000).encode()  # ~40k tokens, ~400 KB of lines
    status, tool_status, out, err = through("head -n 1", [tokenize, "-m", model], input=text)
    assert (status, tool_status) == (0, 0), err
    assert out.count(b"\n") == 1 and err == ""
    r = with_closed_stdout([tokenize, "-m", model, "--ids", "-p", "Hello world"])
    assert r.returncode == 0 and r.stderr == b"", r.stderr.decode()


def test_bench_into_head(tmp_path):
    bench = tool("ember-bench")
    tiny = tmp_path / "tiny.gguf"
    r = run([tool("ember-testtool"), "write-synthetic", tiny, "--embd", "64", "--layers", "2", "--heads", "4",
             "--kv-heads", "2", "--ff", "128", "--vocab", "300", "--ctx", "256", "--type", "Q8_0"])
    assert r.returncode == 0, r.stderr.decode()
    args = [bench, "-m", tiny, "-p", "16", "-n", "4", "-r", "2", "-t", "2"]
    status, tool_status, out, err = through("head -n 1", args)
    assert (status, tool_status) == (0, 0), err
    assert out.startswith(b"ember ") and out.count(b"\n") == 1
    assert_quiet(err)
    for flags in ([], ["--json"]):
        r = with_closed_stdout([*args, *flags])
        assert r.returncode == 0, r.stderr.decode()
        assert_quiet(r.stderr.decode())


# ---- generation stops ---------------------------------------------------------

def test_run_into_head(model):
    args = [tool("ember-run"), "-m", model, "-p", "Once upon a time", "-n", "200", "--temp", "0", *FAST]
    status, tool_status, out, err = through("head -c 10", args)
    assert (status, tool_status) == (0, 0), err
    assert len(out) == 10
    assert_quiet(err)


def test_run_stops_generating_when_stdout_is_closed(model):
    # the reader is gone before the first piece: that piece's write fails, the
    # callback stops the generation -- a handful of tokens, not 200
    r = with_closed_stdout([tool("ember-run"), "-m", model, "-p", "Once upon a time", "-n", "200", "--temp", "0",
                            "--ignore-eos", *FAST])
    err = r.stderr.decode()
    assert r.returncode == 0, err
    assert_quiet(err)
    n, stop = generated(err)
    assert stop == "callback" and n < 10, err
    # --echo: the prompt's write fails, nothing is generated
    r = with_closed_stdout([tool("ember-run"), "-m", model, "-p", "Once upon a time", "-n", "200", "--echo", *FAST])
    assert r.returncode == 0, r.stderr.decode()
    assert generated(r.stderr.decode())[0] == 0


def test_run_stops_when_the_reader_goes_mid_generation(model):
    # generation would run until the context (256) is full; the reader leaves
    # after the first byte, so the next piece's write stops it
    p = subprocess.Popen([str(a) for a in [tool("ember-run"), "-m", model, "-p", "Once upon a time", "-n", "-1",
                                           "--ignore-eos", *FAST]],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert p.stdout.read(1)  # generation has started
        p.stdout.close()
        err = p.stderr.read().decode()
        p.wait(timeout=120)
    finally:
        p.kill()
    assert p.returncode == 0, err
    assert_quiet(err)
    assert generated(err)[1] == "callback", err


def test_chat_into_head(model):
    chat = tool("ember-chat")
    args = [chat, "-m", model, *FAST, "-n", "64", "--temp", "0", "--timings"]
    messages = b"Tell me a story.\nAnd another one.\nAnd a third.\n"
    status, tool_status, out, err = through("head -c 5", args, input=messages)
    assert (status, tool_status) == (0, 0), err
    assert len(out) == 5
    assert_quiet(err)
    # stdout gone before the first reply: its first piece stops it, and the chat ends there
    r = with_closed_stdout(args, input=messages)
    err = r.stderr.decode()
    assert r.returncode == 0, err
    assert_quiet(err)
    assert "reused" not in err, err  # no turn was completed and reported


# ---- other write errors stay errors -------------------------------------------

needs_dev_full = pytest.mark.skipif(not Path("/dev/full").exists(), reason="SKIPPED: no /dev/full here")


def to_dev_full(args, input: bytes | None = None) -> subprocess.CompletedProcess:
    with open("/dev/full", "wb") as full:
        return subprocess.run([str(a) for a in args], input=input, stdout=full, stderr=subprocess.PIPE, check=False)


@needs_dev_full
def test_full_disk_is_an_error(model):
    cases = [  # (tool, arguments); ember-chat reads one message
        ("ember-inspect", [model]),
        ("ember-inspect", [model, "--json"]),
        ("ember-tokenize", ["-m", model, "-p", "Hello world"]),
        ("ember-run", ["-m", model, "-p", "Once upon a time", "-n", "8", "--temp", "0", *FAST]),
        ("ember-chat", ["-m", model, *FAST, "-n", "8"]),
        ("ember-run", ["--help"]),
        ("ember-inspect", ["--version"]),
        ("ember-bench", ["--help"]),
    ]
    for name, args in cases:
        r = to_dev_full([tool(name), *args], input=b"Hi\n" if name == "ember-chat" else None)
        err = r.stderr.decode()
        assert r.returncode == 1, (name, args, err)
        assert f"{name}: error: writing to stdout failed: No space left on device" in err, (name, args, err)
