"""Memory and saved state through the tools: --mem-budget in every tool that
loads a model, --kv-type / -ctk / -ctv, ember-run --prompt-cache, ember-chat
--save / --load, ember-inspect --memory (the API's side is
test_memory_state.py)."""
from __future__ import annotations

import json
import re

import pytest

from conftest import DEFAULT_MODELS, model_path, run, tool

SMOL = DEFAULT_MODELS[0]
FAST = ["-t", "2", "--temp", "0"]


LONG_SYSTEM = (
    "<|im_start|>system\nYou are the assistant of a kitchen appliance. "
    + " ".join(f"Rule {i}: keep the {w} at {i % 9 + 1} degrees." for i, w in enumerate(["milk", "eggs", "cheese"] * 30))
    + "<|im_end|>\n<|im_start|>user\n"
)


def test_run_prompt_cache_reuses_the_prompt(tmp_path):
    m = model_path(SMOL)
    cache = tmp_path / "prompt.cache"
    cmd = [tool("ember-run"), "-m", m, *FAST, "-c", "2048", "-n", "12", "--prompt-cache", cache]
    first = run([*cmd, "-p", LONG_SYSTEM + "What should the milk be kept at?<|im_end|>\n<|im_start|>assistant\n"])
    assert first.returncode == 0, first.stderr.decode()
    assert cache.exists()
    m1 = re.search(r"prompt cache .*: (\d+) of (\d+) prompt tokens reused", first.stderr.decode())
    assert m1 and m1.group(1) == "0", first.stderr.decode()
    # the same prompt again: everything reused, the same text
    again = run([*cmd, "-p", LONG_SYSTEM + "What should the milk be kept at?<|im_end|>\n<|im_start|>assistant\n"])
    m2 = re.search(r": (\d+) of (\d+) prompt tokens reused", again.stderr.decode())
    assert m2 and m2.group(1) == m2.group(2), again.stderr.decode()
    assert again.stdout == first.stdout
    # another question after the same long system prompt: the shared prefix reused, and the
    # text equals a run without the cache
    q = LONG_SYSTEM + "And the eggs?<|im_end|>\n<|im_start|>assistant\n"
    cached = run([*cmd, "-p", q])
    m3 = re.search(r": (\d+) of (\d+) prompt tokens reused", cached.stderr.decode())
    assert m3 and int(m3.group(1)) > 300 and int(m3.group(1)) < int(m3.group(2)), cached.stderr.decode()
    plain = run([tool("ember-run"), "-m", m, *FAST, "-c", "2048", "-n", "12", "-p", q])
    assert cached.stdout == plain.stdout


def test_run_prompt_cache_that_cannot_be_used_is_replaced(tmp_path):
    m = model_path(SMOL)
    cache = tmp_path / "prompt.cache"
    cmd = [tool("ember-run"), "-m", m, *FAST, "-c", "256", "-n", "4", "--prompt-cache", cache, "-p", "Hello"]
    # a file that is not a session state (here: a text; it could be the model) is left alone
    cache.write_bytes(b"this is not a state file at all" * 10)
    r = run(cmd)
    assert r.returncode == 1 and "is not an ember session state" in r.stderr.decode(), r.stderr.decode()
    assert cache.read_bytes() == b"this is not a state file at all" * 10
    r = run([tool("ember-run"), "-m", m, "-p", "Hi", "-n", "1", "--prompt-cache", m])
    assert r.returncode == 1 and m.read_bytes()[:4] == b"GGUF"
    # a damaged state: said, and replaced by a good one
    cache.write_bytes(b"EMBRSTAT" + b"\0" * 100)
    r = run(cmd)
    assert r.returncode == 0 and "not used" in r.stderr.decode(), r.stderr.decode()
    assert len(cache.read_bytes()) > 1000
    # a state saved with another KV type: said, and replaced
    r = run([tool("ember-run"), "-m", m, *FAST, "-c", "256", "-n", "4", "--kv-type", "q8_0", "--prompt-cache", cache,
             "-p", "Hello"])
    assert r.returncode == 0 and "not used" in r.stderr.decode(), r.stderr.decode()
    r = run(cmd[:-2] + ["-p", "Hello"])
    assert r.returncode == 0 and "not used" in r.stderr.decode()  # and back: f16 again
    d = tmp_path / "adir"
    d.mkdir()
    r = run([tool("ember-run"), "-m", m, "-p", "Hi", "-n", "1", "--prompt-cache", d])
    assert r.returncode == 1 and "not a regular file" in r.stderr.decode()


def test_chat_save_and_load_across_restarts(tmp_path):
    m = model_path(SMOL)
    chat = tool("ember-chat")
    conv = tmp_path / "conv.bin"
    base = [chat, "-m", m, *FAST, "-c", "512", "-n", "24"]
    whole = run(base, input=b"My name is Ada.\nWhat is my name?\n")
    assert whole.returncode == 0, whole.stderr.decode()
    first = run([*base, "--save", conv], input=b"My name is Ada.\n")
    assert first.returncode == 0 and conv.exists(), first.stderr.decode()
    second = run([*base, "--load", conv, "--save", conv, "--timings"], input=b"What is my name?\n")
    assert second.returncode == 0, second.stderr.decode()
    assert "continuing the conversation" in second.stderr.decode()
    # the restarted chat answers as the one that never stopped
    assert second.stdout.decode().split("\n")[0] == whole.stdout.decode().split("\n")[1]
    reused = re.search(r"reused (\d+) cached tokens", second.stderr.decode())
    assert reused and int(reused.group(1)) > 10
    bad = tmp_path / "bad.bin"
    bad.write_bytes(conv.read_bytes()[:-20])
    r = run([*base, "--load", bad], input=b"Hi\n")
    assert r.returncode == 1 and "truncated" in r.stderr.decode(), r.stderr.decode()
    r = run([*base, "--load", tmp_path / "missing.bin"], input=b"Hi\n")
    assert r.returncode == 1 and "cannot open" in r.stderr.decode()


@pytest.mark.parametrize("name", ["ember-run", "ember-chat", "ember-bench", "ember-perplexity"])
def test_tools_refuse_a_budget_before_allocating(name, tmp_path):
    m = model_path(SMOL)
    args = {"ember-run": ["-p", "Hi", "-n", "2", "-c", "32768"],
            "ember-chat": ["-c", "32768"],
            "ember-bench": ["-p", "8", "-n", "2", "-r", "1"],
            "ember-perplexity": ["-f", __file__, "-c", "128"]}[name]
    r = run([tool(name), "-m", m, "-t", "2", "--mem-budget", "40M", *args], input=b"Hi\n")
    assert r.returncode == 1, r.stderr.decode()
    err = r.stderr.decode()
    assert "budget" in err and "40 MiB" in err, err
    bad = run([tool(name), "-m", m, "--mem-budget", "12 parsecs", *args], input=b"")
    assert bad.returncode == 1 and "--mem-budget" in bad.stderr.decode()


def test_kv_type_flags(tmp_path):
    m = model_path(SMOL)
    r = run([tool("ember-run"), "-m", m, *FAST, "-c", "256", "-n", "6", "-ctk", "q8_0", "-ctv", "q4_0", "-p",
             "The capital of France is"])
    assert r.returncode == 0, r.stderr.decode()
    assert "Paris" in r.stdout.decode()
    r = run([tool("ember-run"), "-m", m, "-ctk", "q3_k", "-p", "Hi"])
    assert r.returncode == 1 and "-ctk must be f16, f32, q8_0 or q4_0" in r.stderr.decode()


def test_inspect_memory(tmp_path):
    m = model_path(SMOL)
    r = run([tool("ember-inspect"), m, "--memory", "-c", "4096", "--kv-type", "q8_0", "--json"])
    assert r.returncode == 0, r.stderr.decode()
    j = json.loads(r.stdout)
    assert j["kv_cache"] == 30 * 2 * 192 * 4096 * 34 // 32
    assert j["host_total"] == j["model_host"] + j["session_host"]
    assert j["session_host"] == j["kv_cache"] + j["activations"]
    r = run([tool("ember-inspect"), m, "--memory", "-c", "32768", "--mem-budget", "100M"])
    assert r.returncode == 1 and "does not fit" in r.stdout.decode()
