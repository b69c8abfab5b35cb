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


def test_every_message_failing_is_a_failed_run(chat, model):
    """One good message among bad ones is a run that worked (exit 0, above); when
    every message fails the exit status says so."""
    r = run([chat, "-m", model, *FAST], input=b"caf\xe9\n\xc3\n")
    err = r.stderr.decode()
    assert r.returncode == 1, err
    assert r.stdout.decode() == "\n\n"  # each failed message still gets its empty line
    assert "ember-chat: error: every message (2) failed" in err


def test_llama_cpp_spellings_seed_and_system_prompt(chat, model, tmp_path):
    """-s is the seed, as in llama.cpp (it was the system prompt); the system
    prompt is -sys / --system-prompt (--system still works) or -sysf FILE."""
    sampled = ["-c", "256", "-t", "2", "-n", "12", "--temp", "1"]
    by_s = run([chat, "-m", model, *sampled, "-s", "7"], input=b"Tell me a story\n")
    by_seed = run([chat, "-m", model, *sampled, "--seed", "7"], input=b"Tell me a story\n")
    other = run([chat, "-m", model, *sampled, "-s", "8"], input=b"Tell me a story\n")
    assert by_s.returncode == 0 and by_seed.returncode == 0, by_s.stderr.decode()
    assert by_s.stdout == by_seed.stdout and by_s.stdout != other.stdout
    (tmp_path / "sys.txt").write_text("You are a pirate. Answer like one.\n")
    replies = {}
    for flags in (["-sys", "You are a pirate. Answer like one."],
                  ["--system-prompt", "You are a pirate. Answer like one."],
                  ["--system", "You are a pirate. Answer like one."], ["-sysf", tmp_path / "sys.txt"], []):
        got, _ = talk(chat, model, ["Hello"], *flags)
        replies[str(flags[:1])] = got[0]
    assert len({replies[k] for k in replies if k != "[]"}) == 1, replies  # the same prompt each way
    assert replies["['-sys']"] != replies["[]"]  # and it changed the reply
    (tmp_path / "bad.txt").write_bytes(b"caf\xe9")
    for flags, needle in ((["-sysf", tmp_path / "missing.txt"], "cannot read"),
                          (["-sysf", tmp_path / "bad.txt"], "not valid UTF-8 at byte 3"), (["-s", "x"], "--seed")):
        r = run([chat, "-m", model, *flags], input=b"hi\n")
        assert r.returncode == 1 and needle in r.stderr.decode(), (flags, r.stderr.decode())
