"""llama.cpp's example grammars (grammars/*.gbnf in the llama-cpp-python source that
scripts/fetch-llama-cpp-src unpacks) parse with ember.Grammar, and the strings ember samples
from them are strings of their languages -- checked by ember's own matcher and, where the
language has one, by an independent check (JSON by json.loads, the others by a regular
expression or a small structural check written from the grammar's intent)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conftest import FETCH_LLAMA_CPP_SRC, LLAMA_CPP_VOCAB, missing_resource

ember = pytest.importorskip("ember")

SEEDS = range(50)


def grammars_dir() -> Path:
    # LLAMA_CPP_VOCAB is <llama.cpp>/models; the grammars are beside it
    d = LLAMA_CPP_VOCAB.parent / "grammars"
    if not d.is_dir():
        missing_resource(d, FETCH_LLAMA_CPP_SRC)
    return d


def grammar_files() -> list[Path]:
    files = sorted(grammars_dir().glob("*.gbnf"))
    assert files, f"no *.gbnf in {grammars_dir()}"
    return files


def is_json_grammar(path: Path) -> bool:
    return path.name.startswith("json")


# Independent checks of the non-JSON grammars' samples, from what each grammar says it is.
ARITH_LINE = re.compile(r"[a-z0-9_+\-*/()= \t\n]+\n")
CHESS_MOVE = r"(?:[a-h]x)?[a-h][1-8](?:=[NBKQR])?|[NBKQR][a-h]?[1-8]?x?[a-h][1-8]|O-O(?:-O)?"
CHESS_MOVE = rf"(?:{CHESS_MOVE})[+#]?"
CHESS = re.compile(rf"1\. {CHESS_MOVE} {CHESS_MOVE}\n(?:[1-9][0-9]?\. {CHESS_MOVE} {CHESS_MOVE}\n)+")
ENGLISH = re.compile(r"[!-~]+(?:[ \t\n][!-~]+)*")
JAPANESE = re.compile(r"[ぁ-ゟァ-ヿ、-〾一-鿿]+(?:[ \t\n][ぁ-ゟァ-ヿ、-〾一-鿿]+)*")


def check_arithmetic(s: str) -> None:
    assert ARITH_LINE.fullmatch(s), s
    assert s.count("=") >= 1 and s.count("(") == s.count(")"), s
    depth = 0
    for c in s:
        depth += {"(": 1, ")": -1}.get(c, 0)
        assert depth >= 0, s


def check_list(s: str) -> None:
    assert s.endswith("\n"), s
    for line in s[:-1].split("\n"):
        assert line.startswith("- ") and len(line) > 2, s
        assert not any(c in line for c in "\r\x0b\x0c\x85\u2028\u2029"), s


INDEPENDENT = {
    "arithmetic.gbnf": check_arithmetic,
    "list.gbnf": check_list,
    "chess.gbnf": lambda s: CHESS.fullmatch(s) or pytest.fail(f"not chess moves: {s!r}"),
    "english.gbnf": lambda s: ENGLISH.fullmatch(s) or pytest.fail(f"not english.gbnf text: {s!r}"),
    "japanese.gbnf": lambda s: JAPANESE.fullmatch(s) or pytest.fail(f"not japanese.gbnf text: {s!r}"),
}


def test_every_grammar_parses():
    for path in grammar_files():
        text = path.read_text(encoding="utf-8")
        g = ember.Grammar(text)
        assert g.source == text
        assert not g.matches("\x00 certainly not a member \x00"), path.name


def test_json_grammars_sample_json():
    found = [p for p in grammar_files() if is_json_grammar(p)]
    assert {p.name for p in found} >= {"json.gbnf", "json_arr.gbnf"}
    for path in found:
        g = ember.Grammar(path.read_text(encoding="utf-8"))
        kinds = set()
        for seed in SEEDS:
            s = g.random_string(seed, 2048)
            assert len(s.encode("utf-8")) <= 2048
            value = json.loads(s)  # raises on anything that is not JSON
            kinds.add(type(value).__name__)
            assert g.matches(s), (path.name, s)
            assert g.is_prefix(s[: len(s) // 2]), (path.name, s)
            assert not g.matches(s + "}"), (path.name, s)
        # json.gbnf's root is an object, json_arr.gbnf's an array
        assert kinds == ({"dict"} if path.name == "json.gbnf" else {"list"} if path.name == "json_arr.gbnf" else kinds)


def test_other_grammars_round_trip():
    for path in grammar_files():
        if is_json_grammar(path):
            continue
        g = ember.Grammar(path.read_text(encoding="utf-8"))
        distinct = set()
        for seed in SEEDS:
            s = g.random_string(seed, 1024)
            assert len(s.encode("utf-8")) <= 1024
            assert g.matches(s), (path.name, s)
            assert s == g.random_string(seed, 1024)
            distinct.add(s)
            check = INDEPENDENT.get(path.name)
            if check is not None:
                check(s)
        assert len(distinct) > 10, (path.name, distinct)


def test_grammar_errors_say_where():
    with pytest.raises(ember.GrammarError) as e:
        ember.Grammar('root ::= "a"\nitem ::= "b" (')
    assert (e.value.line, e.value.column) == (2, 15)
    with pytest.raises(ember.GrammarError) as e:
        ember.Grammar('root ::= value')
    assert "undefined rule 'value'" in str(e.value)
