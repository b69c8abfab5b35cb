"""Shared fixtures: where the built tools, the default models and the peer
vocabularies are. Tests that need something absent skip with a message."""
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("EMBER_BUILD_DIR", ROOT / "build"))
MODELS = Path(os.environ.get("EMBER_MODELS_DIR", ROOT / "models"))
SHARED = Path(os.environ.get("EMBER_SHARED_DIR", ROOT.parent / "shared"))

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


def model_path(name: str) -> Path:
    p = MODELS / name
    if not p.exists():
        pytest.skip(f"SKIPPED: {p} is absent; run scripts/fetch-models")
    return p


def run(args, input: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], input=input, capture_output=True, check=False)
