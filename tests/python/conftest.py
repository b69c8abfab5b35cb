"""Shared fixtures: where the built tools, the default models, the peer
vocabularies and llama.cpp's tokenizer vectors are. Tests that need something
absent skip with a message -- except the default models, ../shared/vocab and
llama.cpp's vectors (scripts/fetch-llama-cpp-src) in requirement mode (CI set
non-empty, or EMBER_REQUIRE_MODELS=1), where their absence fails the test."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("EMBER_BUILD_DIR", ROOT / "build"))
MODELS = Path(os.environ.get("EMBER_MODELS_DIR", ROOT / "models"))
SHARED = Path(os.environ.get("EMBER_SHARED_DIR", ROOT.parent / "shared"))
# the llama-cpp-python source package unpacked by scripts/fetch-llama-cpp-src (the version it pins)
LLAMA_CPP_VOCAB = Path(os.environ.get("EMBER_LLAMA_CPP_VOCAB") or
                       ROOT / ".cache/llama-cpp-python/llama_cpp_python-0.3.36/vendor/llama.cpp/models")

DEFAULT_MODELS = ["SmolLM2-135M-Instruct.Q4_1.gguf", "gemma-3-270m-q4_k_m.gguf"]


def tool(name: str) -> Path:
    p = BUILD / "bin" / name
    if not p.exists():
        pytest.fail(f"{p} is missing: build ember first (cmake -B build && cmake --build build)")
    return p


@pytest.fixture(scope="session")
def testtool() -> Path:
    return tool("ember-testtool")


@pytest.fixture(scope="session")
def inspect_tool() -> Path:
    return tool("ember-inspect")


FETCH_MODELS = "run scripts/fetch-models (or set EMBER_MODELS_DIR)"
SHARED_VOCAB = "the peer tokenizer vocabularies come from ../shared/vocab (or set EMBER_SHARED_DIR)"
FETCH_LLAMA_CPP_SRC = "run scripts/fetch-llama-cpp-src (or set EMBER_LLAMA_CPP_VOCAB)"


def resources_required() -> bool:
    """Requirement mode: CI set non-empty (CI sets CI=true) or EMBER_REQUIRE_MODELS=1."""
    return bool(os.environ.get("CI")) or os.environ.get("EMBER_REQUIRE_MODELS") == "1"


def missing_resource(path: Path, hint: str):
    """A default model, the peer vocabularies or llama.cpp's vectors are absent: skip the test, or
    fail it in requirement mode. Does not return."""
    if resources_required():
        pytest.fail(f"required in CI (CI or EMBER_REQUIRE_MODELS set): {path} is missing; {hint}", pytrace=False)
    pytest.skip(f"SKIPPED: {path} is missing; {hint}")


def model_path(name: str) -> Path:
    """A default model (models/NAME, or EMBER_MODELS_DIR/NAME)."""
    p = MODELS / name
    if not p.exists():
        missing_resource(p, FETCH_MODELS)
    return p


def vocab_path(name: str | None = None) -> Path:
    """The peer vocabularies (../shared/vocab, or EMBER_SHARED_DIR/vocab), or one file of them."""
    p = SHARED / "vocab"
    if name is not None:
        p = p / name
    if not p.exists():
        missing_resource(p, SHARED_VOCAB)
    return p


def llama_cpp_vocab_path(name: str | None = None) -> Path:
    """llama.cpp's tokenizer vectors (ggml-vocab-*.gguf with .inp/.out), or one file of them."""
    p = LLAMA_CPP_VOCAB
    if name is not None:
        p = p / name
    if not p.exists():
        missing_resource(p, FETCH_LLAMA_CPP_SRC)
    return p


def run(args, input: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], input=input, capture_output=True, check=False)
