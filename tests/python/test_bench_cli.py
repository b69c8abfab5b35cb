"""ember-bench from the command line (JSON and table output, -p 0, the
bandwidth mode, --profile and EMBER_PROFILE, bad input failing with one message
and exit status 1) and scripts/make-synthetic-model, on a tiny random model
written for the test."""
import json
import os
import subprocess
import sys

import pytest

from conftest import BUILD, ROOT, run

TINY = ["--embd", "64", "--layers", "2", "--heads", "4", "--kv-heads", "2", "--ff", "128",
        "--vocab", "300", "--ctx", "256", "--type", "Q8_0"]
FAST = ["-t", "2"]  # CI has two slow cores


def need(name: str):
    p = BUILD / "bin" / name
    if not p.exists():
        pytest.skip(f"SKIPPED: {p} is missing; build it (cmake --build {BUILD} --target {name})")
    return p


@pytest.fixture(scope="module")
def bench():
    return need("ember-bench")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "tiny.gguf"
    r = run([need("ember-testtool"), "write-synthetic", path, *TINY])
    assert r.returncode == 0, r.stderr.decode()
    return path


def bench_json(bench, *args):
    r = run([bench, *args, "--json"])
    assert r.returncode == 0, r.stderr.decode()
    return json.loads(r.stdout)  # nothing but the JSON array on stdout


def test_json_has_pp_and_tg(bench, tiny):
    out = bench_json(bench, "-m", tiny, "-p", "16", "-n", "4", "-r", "2", *FAST)
    assert [e["test"] for e in out] == ["pp16", "tg4"]
    for e, n in zip(out, [16, 4]):
        assert e["n_tokens"] == n and e["repetitions"] == 2 and e["threads"] == 2
        assert e["tokens_per_second"] > 0 and e["stddev"] >= 0
        assert len(e["samples"]) == 2 and all(s > 0 for s in e["samples"])
        assert e["model"] == "tiny.gguf"
        assert 0 < e["model_bytes"] < tiny.stat().st_size  # tensor data, without the header


def test_p0_skips_pp_and_n0_skips_tg(bench, tiny):
    assert [e["test"] for e in bench_json(bench, "-m", tiny, "-p", "0", "-n", "3", "-r", "1", *FAST)] == ["tg3"]
    assert [e["test"] for e in bench_json(bench, "-m", tiny, "-p", "8", "-n", "0", "-r", "1", *FAST)] == ["pp8"]


def test_table(bench, tiny):
    r = run([bench, "-m", tiny, "-p", "8", "-n", "2", "-r", "1", *FAST])
    assert r.returncode == 0, r.stderr.decode()
    out = r.stdout.decode()
    rows = [line for line in out.splitlines() if line.startswith("| tiny.gguf")]
    assert len(rows) == 2 and "pp8" in rows[0] and "tg2" in rows[1], out
    assert all("±" in row and "GiB" in row for row in rows)


PROFILE_CLASSES = ["matmul", "attention", "norms", "rope", "elementwise", "get_rows", "lora", "sampling",
                   "thread sync", "other"]


def profile_tables(err: str) -> dict:
    """{"prompt processing": {class: (ms total, ms/token, %)}, "generation": ...} from an EMBER_PROFILE report."""
    assert "ember profile (EMBER_PROFILE=1)" in err, err
    tables, current = {}, None
    for line in err.splitlines():
        if line.startswith(("prompt processing: ", "generation: ")):
            current = tables.setdefault(line.split(":")[0], {})
        elif line.startswith("| ") and current is not None and not line.startswith(("| op class", "| -")):
            name, total, per_token, pct = [c.strip() for c in line.strip("|").split("|")]
            current[name] = (float(total), float(per_token), float(pct))
    return tables


def check_profile_table(rows: dict):
    assert list(rows) == PROFILE_CLASSES + ["total"], rows
    assert rows["total"][2] == 100.0
    assert abs(sum(rows[c][2] for c in PROFILE_CLASSES) - 100.0) <= 1.0, rows
    assert abs(sum(rows[c][0] for c in PROFILE_CLASSES) - rows["total"][0]) <= 0.1, rows
    assert rows["matmul"][0] > 0 and rows["matmul"][2] > 0
    assert all(rows[c][0] >= 0 for c in PROFILE_CLASSES if c != "other")


def test_profile(bench, tiny):
    r = run([bench, "-m", tiny, "-p", "16", "-n", "4", "-r", "1", "--json", "--profile", *FAST])
    assert r.returncode == 0, r.stderr.decode()
    assert [e["test"] for e in json.loads(r.stdout)] == ["pp16", "tg4"]  # the report stays off stdout
    tables = profile_tables(r.stderr.decode())
    assert list(tables) == ["prompt processing", "generation"]
    for rows in tables.values():
        check_profile_table(rows)
    # ember-bench evaluates tokens, it does not sample
    assert tables["prompt processing"]["sampling"][0] == 0 and tables["generation"]["sampling"][0] == 0
    assert "generation: 8 forward passes, 8 tokens" in r.stderr.decode()  # warm-up (4) + 1 repetition (4)
    # off unless asked for
    r = run([bench, "-m", tiny, "-p", "4", "-n", "2", "-r", "1", *FAST])
    assert r.returncode == 0 and "ember profile" not in r.stderr.decode()


def test_ember_profile_env_in_ember_run(tiny):
    """EMBER_PROFILE=1 profiles any program's sessions; generate() times its sampler too."""
    run_tool = need("ember-run")
    env = dict(os.environ, EMBER_PROFILE="1")
    r = subprocess.run([str(run_tool), "-m", str(tiny), "-p", "hello world", "-n", "6", "--ignore-eos",
                        "--temp", "0", *FAST], capture_output=True, env=env, check=False)
    assert r.returncode == 0, r.stderr.decode()
    tables = profile_tables(r.stderr.decode())
    check_profile_table(tables["generation"])
    assert "generation: 5 forward passes, 5 tokens" in r.stderr.decode()  # the 6th token is sampled, not evaluated


def test_bandwidth(bench):
    out = bench_json(bench, "--bandwidth", "-t", "1")
    assert len(out) == 1 and out[0]["test"] == "bandwidth" and out[0]["threads"] == 1
    assert 0.1 < out[0]["gb_per_second"] < 10000


@pytest.mark.parametrize("args, message", [
    ([], "no model: pass -m FILE"),
    (["-m"], "-m needs a value"),
    (["-m", "/nonexistent/model.gguf"], "/nonexistent/model.gguf"),
    (["-m", "{not_gguf}"], "not a GGUF file"),
    (["-m", "{tiny}", "-r", "0"], "-r 0 is out of range"),
    (["-m", "{tiny}", "-p", "-5"], "-p -5 is out of range"),
    (["-m", "{tiny}", "-p", "2000000"], "-p 2000000 is out of range"),
    (["-m", "{tiny}", "-n", "abc"], "-n needs an integer, got 'abc'"),
    (["-m", "{tiny}", "-t", "-1"], "-t -1 is out of range"),
    (["-m", "{tiny}", "-p", "0", "-n", "0"], "nothing to measure"),
    (["-m", "{tiny}", "--frobnicate"], "unknown argument '--frobnicate'"),
])
def test_bad_input(bench, tiny, tmp_path, args, message):
    not_gguf = tmp_path / "notes.txt"
    not_gguf.write_text("hello\n")
    args = [a.format(tiny=tiny, not_gguf=not_gguf) for a in args]
    r = run([bench, *args])
    err = r.stderr.decode()
    assert r.returncode == 1, (r.returncode, err)  # not a crash (negative: killed by a signal)
    assert err.startswith("ember-bench: error: ") and err.count("\n") == 1, err
    assert message in err, err
    assert r.stdout == b""


def test_make_synthetic_model_custom_shape(bench, tmp_path):
    need("ember-testtool")
    out = tmp_path / "custom.gguf"
    script = ROOT / "scripts" / "make-synthetic-model"
    r = run([sys.executable, script, "tiny", "Q4_0", "--layers", "1", "--vocab", "288", "-o", out, "--build", BUILD])
    assert r.returncode == 0, r.stderr.decode()
    assert out.exists() and str(out) in r.stdout.decode()
    (e,) = bench_json(bench, "-m", out, "-p", "0", "-n", "2", "-r", "1", *FAST)
    assert e["test"] == "tg2" and e["tokens_per_second"] > 0

    for bad, message in [(["huge", "Q4_0"], "unknown shape 'huge'"), (["tiny", "Q9_9"], "unknown type 'Q9_9'"),
                         (["135m", "Q4_K"], "blocks of 256"), (["tiny", "Q8_0", "--ff", "96"], "pass -o OUT")]:
        r = run([sys.executable, script, *bad, "--build", BUILD])
        assert r.returncode == 1 and message in r.stderr.decode(), r.stderr.decode()
