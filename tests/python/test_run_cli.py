"""ember-run from the command line: greedy output, stdout carrying nothing but
the generated text, the timing line, seeds, prompt files, stop strings,
Ctrl-C, and bad input failing with one message and exit status 1."""
import re
import signal
import subprocess

import pytest

from conftest import DEFAULT_MODELS, model_path, run, tool

TIMING = re.compile(r"^prompt: \d+ tokens, (\S+) tok/s \| generation: \d+ tokens, (\S+) tok/s \| "
                    r"first token: \d+ ms \| stop: \w+$")
FAST = ["-c", "256", "-t", "2"]  # CI has two slow cores


@pytest.fixture(scope="module")
def ember_run():
    return tool("ember-run")


@pytest.fixture(scope="module")
def model():
    return model_path(DEFAULT_MODELS[0])


def last_line(stderr: bytes) -> str:
    return stderr.decode().rstrip("\n").split("\n")[-1]


def test_greedy_continuation(ember_run, model):
    r = run([ember_run, "-m", model, "-p", "The capital of France is", "-n", "16", "--temp", "0", *FAST])
    assert r.returncode == 0, r.stderr.decode()
    out = r.stdout.decode()
    assert "Paris" in out
    assert not out.startswith("The capital")            # the prompt is not echoed
    assert "tok/s" not in out and "ember-run" not in out  # diagnostics stay on stderr
    assert TIMING.match(last_line(r.stderr)), r.stderr.decode()
    assert last_line(r.stderr).endswith("stop: max_tokens")
    assert out.endswith("\n")  # also in a pipe, the output's last line is complete


def test_ctrl_c_while_a_long_prompt_is_tokenized_exits_130(ember_run, model, tmp_path):
    f = tmp_path / "long.txt"
    f.write_text("The quick brown fox jumps over the lazy dog. " * 100_000)  # 4.5 MB: seconds to tokenize
    p = subprocess.Popen([str(a) for a in [ember_run, "-m", model, "-f", f, "-n", "4", *FAST]],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for line in p.stderr:  # the line describing the session comes right before generate()
            if b"ember-run: " in line and b"n_ctx" in line:
                break
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=120)
    finally:
        p.kill()
    assert p.returncode == 130, err.decode()
    assert last_line(err).endswith("stop: cancelled"), err.decode()


def test_echo_prints_the_prompt_first(ember_run, model):
    r = run([ember_run, "-m", model, "-p", "The capital of France is", "-n", "4", "--temp", "0", "--echo", *FAST])
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout.decode().startswith("The capital of France is")


def test_same_seed_same_text(ember_run, model):
    args = [ember_run, "-m", model, "-p", "Once upon a time", "-n", "12", "--temp", "1", "--seed", "1234", *FAST]
    a, b = run(args), run(args)
    assert a.returncode == 0 and b.returncode == 0, a.stderr.decode()
    assert a.stdout and a.stdout == b.stdout


def test_prompt_file_and_stop_string(ember_run, model, tmp_path):
    f = tmp_path / "prompt.txt"
    f.write_text("The capital of France is")
    from_file = run([ember_run, "-m", model, "-f", f, "-n", "8", "--temp", "0", *FAST])
    from_flag = run([ember_run, "-m", model, "-p", "The capital of France is", "-n", "8", "--temp", "0", *FAST])
    assert from_file.returncode == 0, from_file.stderr.decode()
    assert from_file.stdout == from_flag.stdout
    r = run([ember_run, "-m", model, "-f", f, "-n", "8", "--temp", "0", "--stop", "Paris", *FAST])
    assert r.returncode == 0 and b"Paris" not in r.stdout
    assert last_line(r.stderr).endswith("stop: stop_string")


def test_ctrl_c_cancels_and_still_reports(ember_run, model):
    p = subprocess.Popen([str(a) for a in [ember_run, "-m", model, "-p", "Once upon a time", "-n", "-1",
                                           "--ignore-eos", *FAST]],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert p.stdout.read(1)  # generation has started
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=60)
    finally:
        p.kill()
    assert p.returncode == 130, err.decode()
    assert TIMING.match(last_line(err)) and last_line(err).endswith("stop: cancelled"), err.decode()


def test_help_and_version(ember_run):
    r = run([ember_run, "--help"])
    assert r.returncode == 0 and b"usage: ember-run" in r.stdout and b"--repeat-last-n" in r.stdout
    r = run([ember_run, "--version"])
    assert r.returncode == 0 and r.stdout.startswith(b"ember-run (ember ")


BAD_FLAGS = [
    (["-t", "-1"], "-t"),
    (["--temp", "-1"], "temperature"),
    (["--top-p", "2"], "top_p"),
    (["-n", "abc"], "-n"),
    (["--temp", "0.5x"], "--temp"),
    (["--kv-type", "q8"], "--kv-type"),
    (["-c", "-5"], "-c"),
    (["--seed", "-2"], "--seed"),
    (["--stop", ""], "--stop"),
    (["--bogus"], "--bogus"),
    (["-n"], "needs a value"),
]


def assert_clean_failure(r, what: str):
    err = r.stderr.decode()
    assert r.returncode == 1, err
    assert r.stdout == b""
    assert err.startswith("ember-run: error: ") and what in err, err
    assert "Segmentation" not in err and "terminate called" not in err and "Traceback" not in err


@pytest.mark.parametrize("flags,what", BAD_FLAGS, ids=[" ".join(f) for f, _ in BAD_FLAGS])
def test_bad_flags(ember_run, model, flags, what):
    assert_clean_failure(run([ember_run, "-m", model, "-p", "x", *flags]), what)


def test_bad_inputs(ember_run, model, tmp_path):
    assert_clean_failure(run([ember_run, "-p", "x"]), "-m")
    assert_clean_failure(run([ember_run, "-m", model]), "prompt")
    assert_clean_failure(run([ember_run, "-m", tmp_path / "missing.gguf", "-p", "x"]), "missing.gguf")
    notgguf = tmp_path / "not.gguf"
    notgguf.write_text("not a model")
    assert_clean_failure(run([ember_run, "-m", notgguf, "-p", "x"]), "GGUF")
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"ab\xff\xfe")
    assert_clean_failure(run([ember_run, "-m", model, "-f", bad]), "UTF-8")
    assert_clean_failure(run([ember_run, "-m", model, "-f", tmp_path / "nope.txt"]), "nope.txt")
    r = run([ember_run, "-m", model, "-p", "word " * 200, "-c", "32"])
    err = r.stderr.decode()
    assert r.returncode == 1 and "does not fit" in err and last_line(r.stderr).startswith("ember-run: error: "), err


def test_minimal_cpp_example(model):
    r = run([tool("ember-simple-cpp"), model])   # examples/cpp/simple.cpp: greedy, 32 tokens
    assert r.returncode == 0, r.stderr.decode()
    assert "Paris" in r.stdout.decode()
