"""ember-chat driven through a pipe, as a script would: one reply line per
message, history kept (and reused from the KV cache), /reset, /quit, a full
context, and bad input."""
import re

import pytest

from conftest import DEFAULT_MODELS, model_path, run, tool

FAST = ["-c", "256", "-t", "2", "-n", "32", "--temp", "0"]  # CI has two slow cores


@pytest.fixture(scope="module")
def chat():
    return tool("ember-chat")


@pytest.fixture(scope="module")
def model():
    return model_path(DEFAULT_MODELS[0])


def talk(chat, model, lines, *flags):
    r = run([chat, "-m", model, *FAST, *flags], input="".join(f"{ln}\n" for ln in lines).encode())
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout.decode().split("\n")[:-1], r.stderr.decode()


def test_two_turns_keep_history_and_reuse_the_cache(chat, model):
    replies, err = talk(chat, model, ["What is the capital of France?", "And what about Germany?"], "--timings")
    assert len(replies) == 2, replies
    assert "Paris" in replies[0]
    assert replies[1].strip()
    assert "> " not in "".join(replies)  # no prompt decorations through a pipe
    reused = [int(n) for n in re.findall(r"reused (\d+) cached tokens", err)]
    assert reused[0] == 0 and reused[1] > 20, err  # the second turn evaluates only its new part


def test_reset_and_quit(chat, model):
    q = "What is the capital of France?"
    replies, _ = talk(chat, model, [q, "/reset", "", q, "/quit", "this is never read"])
    assert len(replies) == 2, replies  # no line for /reset, the blank line or after /quit
    assert replies[0] == replies[1]   # greedy, and the second time starts from scratch


def test_quit_and_end_of_input(chat, model):
    assert talk(chat, model, ["/quit"])[0] == []
    assert talk(chat, model, [])[0] == []


def test_full_context_drops_the_oldest_exchange(chat, model):
    questions = [f"What is the capital of {c}?" for c in ["France", "Germany", "Italy", "Spain", "Japan"]]
    replies, err = talk(chat, model, questions, "-c", "128", "-n", "12")
    assert len(replies) == 5, replies
    assert "dropped the oldest" in err


def test_errors(chat, model, tmp_path):
    r = run([chat, "-m", tmp_path / "missing.gguf"], input=b"hi\n")
    assert r.returncode == 1 and r.stderr.decode().startswith("ember-chat: error: ")
    for flags in (["--top-p", "2"], ["-t", "-1"], ["--bogus"], ["--ignore-eos"]):
        r = run([chat, "-m", model, *flags], input=b"hi\n")
        assert r.returncode == 1 and r.stderr.decode().startswith("ember-chat: error: "), flags
    # a message that cannot fit gets an empty reply line and an error; the chat goes on
    replies, err = talk(chat, model, ["word " * 300, "What is the capital of France?"], "-c", "128")
    assert len(replies) == 2 and replies[0] == "" and "Paris" in replies[1]
    assert "does not fit" in err
    r = run([chat, "-m", model, *FAST], input=b"caf\xe9\nWhat is the capital of France?\n")
    replies = r.stdout.decode().split("\n")[:-1]
    assert r.returncode == 0 and len(replies) == 2 and replies[0] == "" and "Paris" in replies[1]
    assert "not valid UTF-8 at byte 3" in r.stderr.decode()
