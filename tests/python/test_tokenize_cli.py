"""ember-tokenize from the command line: output formats, input sources,
vocab-only files, invalid UTF-8 and bad input."""
import pytest

from conftest import DEFAULT_MODELS, llama_cpp_vocab_path, model_path, run, tool, vocab_path


@pytest.fixture(scope="module")
def tokenize():
    return tool("ember-tokenize")


def vocab(name: str):
    return vocab_path(name)


def test_ids_match_the_conformance_vectors(tokenize):
    p = vocab("ggml-vocab-gpt-2.gguf")
    texts = p.with_name(p.name + ".inp").read_text().split("\n__ggml_vocab_test__\n")[:-1]
    outs = p.with_name(p.name + ".out").read_text().splitlines()
    for text, out in list(zip(texts, outs))[:20]:
        r = run([tokenize, "-m", p, "--ids", "--no-add-special", "-p", text])
        assert r.returncode == 0, r.stderr
        assert r.stdout.decode().split() == out.split(), repr(text)


@pytest.mark.parametrize("name", ["ggml-vocab-qwen2.gguf", "ggml-vocab-phi-3.gguf"])
def test_llama_cpp_vectors(tokenize, name):
    """llama.cpp's vectors (read from the fetched source package, never copied here) through the
    tool: the first 20 strings (one process each; loading Qwen2's 151k-token vocabulary takes a
    few tenths of a second). tests/unit/test_tokenizer.cpp checks all of them."""
    p = llama_cpp_vocab_path(name)
    texts = p.with_name(p.name + ".inp").read_bytes().split(b"\n__ggml_vocab_test__\n")[:-1]
    outs = p.with_name(p.name + ".out").read_bytes().splitlines()
    assert len(texts) == len(outs) and len(texts) >= 20
    texts, outs = texts[:20], outs[:20]
    wrong = []
    for text, out in zip(texts, outs):
        r = run([tokenize, "-m", p, "--ids", "--no-add-special", "-p", text.decode()])
        assert r.returncode == 0, r.stderr
        if r.stdout.split() != out.split():
            wrong.append((text.decode(), out.decode(), r.stdout.decode().strip()))
    assert not wrong, f"{len(wrong)}/{len(texts)} strings differ (text, want, got): {wrong[:5]}"


def test_piece_lines_and_stdin(tokenize):
    p = vocab("ggml-vocab-llama-spm.gguf")
    r = run([tokenize, "-m", p], input="Hello world".encode())
    assert r.returncode == 0
    lines = r.stdout.decode().splitlines()
    assert lines[0] == "1\t<s>"                      # BOS added: the metadata says so
    assert [ln.split("\t")[1] for ln in lines[1:]] == [" Hello", " world"]
    r = run([tokenize, "-m", p, "--no-add-special", "--ids", "-p", "Hello world"])
    assert r.stdout.decode().strip() == "15043 3186"


def test_parse_special(tokenize):
    p = model_path(DEFAULT_MODELS[0])
    plain = run([tokenize, "-m", p, "--ids", "-p", "<|im_start|>user"]).stdout.decode().split()
    special = run([tokenize, "-m", p, "--ids", "--parse-special", "-p", "<|im_start|>user"]).stdout.decode().split()
    assert special[0] == "1" and "1" not in plain


def test_invalid_utf8_and_files(tokenize, tmp_path):
    p = vocab("ggml-vocab-llama-spm.gguf")
    r = run([tokenize, "-m", p, "--no-add-special"], input=b"ab\xff\xfe\xc3")
    assert r.returncode == 0
    assert r.stdout.decode().splitlines()[1:] == ["258\t\\xff", "257\t\\xfe", "198\t\\xc3"]  # byte fallback
    f = tmp_path / "t.txt"
    f.write_bytes("café ½".encode())
    r = run([tokenize, "-m", p, "--ids", "-f", f])
    assert r.returncode == 0 and len(r.stdout.split()) > 2


def test_errors(tokenize, tmp_path):
    r = run([tokenize, "-m", tmp_path / "missing.gguf", "-p", "x"])
    assert r.returncode == 1 and b"missing.gguf" in r.stderr
    r = run([tokenize, "-m", vocab("ggml-vocab-gpt-2.gguf"), "-f", tmp_path / "nope.txt"])
    assert r.returncode == 1 and b"nope.txt" in r.stderr
    notok = tmp_path / "notok.gguf"
    notok.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\x00" * 16)   # valid, empty: no vocabulary
    r = run([tokenize, "-m", notok, "-p", "x"])
    assert r.returncode == 1 and b"tokenizer.ggml.model' is missing" in r.stderr
    assert run([tokenize, "-p", "x"]).returncode == 2
    assert run([tokenize, "-m", notok, "--bogus"]).returncode == 2
