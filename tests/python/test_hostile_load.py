"""Memory before rejection: a hostile model file with a huge vocabulary and a
missing tensor is refused for the tensor before its vocabulary is expanded,
so the peak RSS of the refusing process stays within 4 x the file's metadata
bytes + 64 MiB (it was ~9 x: 1.0 GB for an 8M-token vocabulary in 111 MB);
and under a memory limit (RLIMIT_AS, as `ulimit -v`) loading fails with an
out-of-memory error that names what was being allocated, never a bare
"std::bad_alloc"."""
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import BUILD, run

N_TOKENS = 3_000_000  # 36 MB of metadata (12 B/token): the old expansion (~95 B/token) peaked at 321 MB
MIB = 1 << 20


def need(name: str) -> Path:
    p = BUILD / "bin" / name
    if not p.exists():
        pytest.skip(f"SKIPPED: {p} is missing; build it (cmake --build {BUILD} --target {name})")
    return p


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("hostile") / "huge_vocab.gguf"
    r = run([need("ember-testtool"), "write-synthetic", path, "--type", "Q8_0", "--embd", "32", "--heads", "2",
             "--layers", "1", "--ff", "32", "--vocab", str(N_TOKENS), "--drop", "token_embd.weight", "--bare-vocab"])
    assert r.returncode == 0, r.stderr.decode()
    return path


# Runs argv[2:] from a small, freshly started Python and reports that grandchild's peak RSS.
# Linux charges a process, at exec, with the peak RSS of the memory it had before (the copy of
# its parent made by fork): a child forked straight from this pytest process -- hundreds of MB
# after the Python API tests -- would "peak" at pytest's size. The helper is small when it forks.
_MEASURE = """
import os, resource, sys
limit = int(sys.argv[1])
pid = os.fork()
if pid == 0:
    if limit > 0:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    os.execv(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
print(os.waitstatus_to_exitcode(status), usage.ru_maxrss * 1024)
"""


def run_measured(args, limit_as: int | None = None):
    """Runs args; returns (returncode, stderr text, peak RSS in bytes) of that one process."""
    p = subprocess.run([sys.executable, "-c", _MEASURE, str(limit_as or 0), *[str(a) for a in args]],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, check=False)
    rc, peak = p.stdout.decode().split()[-2:]
    return int(rc), p.stderr.decode(errors="replace"), int(peak)


def test_a_huge_vocabulary_with_a_missing_tensor_is_refused_within_the_memory_bound(hostile):
    size = hostile.stat().st_size  # metadata, but for the few KiB of the layer's tensors
    rc, err, peak = run_measured([need("ember-run"), "-m", hostile, "-p", "x", "-t", "1"])
    assert rc == 1, err
    assert "token_embd.weight" in err and "missing" in err, err
    bound = 4 * size + 64 * MIB
    assert peak <= bound, f"peak RSS {peak / MIB:.0f} MiB > 4 x {size / MIB:.0f} MiB + 64 MiB"


def test_out_of_memory_while_loading_names_the_allocation(hostile):
    """Under a range of address-space limits around what the load needs, every failure is either the
    refusal for the missing tensor or an out-of-memory error naming the allocation."""
    size = hostile.stat().st_size
    ember_run = need("ember-run")
    named = 0
    for limit_mib in range(16, size // MIB + 160, 16):  # the file's mapping counts against RLIMIT_AS too
        limit = limit_mib * MIB
        rc, err, _ = run_measured([ember_run, "-m", hostile, "-p", "x", "-t", "1"], limit_as=limit)
        assert rc != 0
        assert "std::bad_alloc" not in err, f"limit {limit / MIB:.0f} MiB: {err}"
        if str(hostile) not in err:
            continue  # too little to start the program (its libraries, its threads) before the load
        if "out of memory" in err:
            assert "allocating" in err or "while" in err or "cannot map" in err, err
            named += 1
        else:
            assert "token_embd.weight" in err and "missing" in err, f"limit {limit / MIB:.0f} MiB: {err}"
    assert named > 0, "no limit gave an out-of-memory error; the range of limits needs adjusting"
