"""ember::estimate_memory against the memory a process really uses: ember-memcheck
loads the model, creates a session, evaluates a prompt of one full batch (the most
activation memory a batch touches) and a few generation steps, and prints the
estimate with its peak RSS (VmHWM). The estimate must be within 5% or 8 MiB of it,
whichever is more, for SmolLM2 at a small, a default and a long context (the KV
cache from 11 to 720 MiB). docs/MEMORY.md has the table for more models."""
import json

import pytest

from conftest import model_path, run, tool

MIB = 1 << 20


def memcheck(model, *args) -> dict:
    r = run([tool("ember-memcheck"), model, *args])
    assert r.returncode == 0, r.stderr.decode()
    return json.loads(r.stdout.decode().strip().splitlines()[-1])


@pytest.mark.parametrize("n_ctx", [512, 4096, 32768])
def test_estimate_matches_peak_rss_smollm2(n_ctx):
    d = memcheck(model_path("SmolLM2-135M-Instruct.Q4_1.gguf"), "-c", n_ctx)
    e = d["estimate"]
    est, peak = e["host_total"], d["vm_hwm"]
    assert d["n_ctx"] == n_ctx
    # the estimate's KV cache is the session's
    assert e["kv_cache"] == d["session_kv_bytes"]
    tolerance = max(0.05 * peak, 8 * MIB)
    assert abs(est - peak) <= tolerance, (
        f"n_ctx {n_ctx}: estimate {est / MIB:.1f} MiB, peak RSS {peak / MIB:.1f} MiB "
        f"(differ by {(est - peak) / MIB:+.1f} MiB, more than {tolerance / MIB:.1f}); parts: "
        + ", ".join(f"{k} {v / MIB:.1f}" for k, v in e.items()))


def test_session_commits_its_kv_cache_at_creation():
    # the cache is zero-filled when the session is made: RSS grows by it before any token
    d = memcheck(model_path("SmolLM2-135M-Instruct.Q4_1.gguf"), "-c", 8192)
    grown = d["rss_session"] - d["rss_model"]
    kv = d["session_kv_bytes"]
    assert kv <= grown <= kv + 4 * MIB, (grown / MIB, kv / MIB)
