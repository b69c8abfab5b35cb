"""examples/fridge: the appliance assistant (ember-fridge over the C ABI, fridge.py over the Python API)
driven through a pipe with a scripted conversation. The model's choices may vary; their validity may
not: every call names a tool of tools.json with arguments its schema accepts, every call gets a result,
the results follow the fridge's rules, and the final state is what the results add up to."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import jsonschema
import pytest

from conftest import BUILD, DEFAULT_MODELS, ROOT, model_path, tool

FRIDGE_DIR = ROOT / "examples" / "fridge"
TOOLS = json.loads((FRIDGE_DIR / "tools.json").read_text(encoding="utf-8"))
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
ZONE_RANGE = {"fridge": (1, 7), "freezer": (-24, -16)}
MAX_ITEMS = 32

SCRIPT = [
    "How long do eggs keep in a fridge?",
    "add two litres of milk to the shopping list",
    "set the freezer to -18",
    "what is in the fridge?",
    "order the groceries",
    "set the fridge to 40 degrees",
]

PROGRAMS = ["c", "python"]


def command(program: str, model) -> list[str]:
    if program == "c":
        return [str(tool("ember-fridge")), str(model)]
    return [sys.executable, str(FRIDGE_DIR / "fridge.py"), "--model", str(model)]


def drive(program: str, model, lines: list[str] | bytes) -> subprocess.CompletedProcess:
    data = lines if isinstance(lines, bytes) else "".join(f"{ln}\n" for ln in lines).encode()
    env = dict(os.environ)
    env.setdefault("PYTHONPATH", str(BUILD / "python"))
    # the timeout only turns a hang into a failure; nothing here measures time
    return subprocess.run(command(program, model), input=data, capture_output=True, check=False, env=env,
                          timeout=1800)


@pytest.fixture(scope="module")
def model():
    return model_path(DEFAULT_MODELS[0])


_runs: dict[str, subprocess.CompletedProcess] = {}


@pytest.fixture(scope="module", params=PROGRAMS)
def transcript(request, model):
    """(program, stdout lines) of the scripted conversation, run once per program."""
    if request.param not in _runs:
        _runs[request.param] = drive(request.param, model, SCRIPT)
    r = _runs[request.param]
    assert r.returncode == 0, f"exit {r.returncode}\nstdout:\n{r.stdout.decode()}\nstderr:\n{r.stderr.decode()}"
    return request.param, r.stdout.decode("utf-8").split("\n")[:-1]


def parse(lines: list[str]) -> list[tuple[str, str, str]]:
    """Each line as (kind, tool name or "", payload); unknown shapes fail."""
    events = []
    for ln in lines:
        for prefix in ("USER: ", "ASSISTANT: ", "ERROR: "):
            if ln.startswith(prefix):
                events.append((prefix[:-2], "", ln[len(prefix):]))
                break
        else:
            kind, _, rest = ln.partition(" ")
            assert kind in ("CALL", "RESULT", "STATE"), f"a line of no known shape: {ln!r}"
            if kind == "STATE":
                events.append((kind, "", rest))
            else:
                name, _, payload = rest.partition(" ")
                events.append((kind, name, payload))
    return events


def test_transcript_shape(transcript):
    _, lines = transcript
    events = parse(lines)
    assert not [e for e in events if e[0] == "ERROR"], lines
    assert [e[2] for e in events if e[0] == "USER"] == SCRIPT
    assert events[-1][0] == "STATE" and [e[0] for e in events].count("STATE") == 1
    # each turn: USER, then (CALL, RESULT)*, then one ASSISTANT line
    i = 0
    while events[i][0] == "USER":
        i += 1
        while events[i][0] == "CALL":
            assert events[i + 1][0] == "RESULT" and events[i + 1][1] == events[i][1], events[i:i + 2]
            i += 2
        assert events[i][0] == "ASSISTANT", events[i]
        i += 1
    assert i == len(events) - 1, events[i:]


def test_calls_are_valid_for_tools_json(transcript):
    _, lines = transcript
    calls = [e for e in parse(lines) if e[0] == "CALL"]
    for _, name, payload in calls:
        assert name in SCHEMAS, f"a call of no tool in tools.json: {name}"
        args = json.loads(payload)
        schema = SCHEMAS[name]
        jsonschema.validators.validator_for(schema)(schema).validate(args)


def test_results_follow_the_rules_and_add_up_to_the_state(transcript):
    """Replays the calls against an independent model of the fridge's rules."""
    _, lines = transcript
    events = parse(lines)
    state = json.loads(events[-1][2])
    shopping: list[dict] = []
    orders: list[dict] = []
    temps: dict[str, int] = {}  # zones set by the calls; the others keep the program's start values
    call_args = None
    for kind, name, payload in events:
        if kind == "CALL":
            call_args = json.loads(payload)
            continue
        if kind != "RESULT":
            continue
        res = json.loads(payload)
        assert isinstance(res.get("ok"), bool), res
        if name == "add_to_shopping_list":
            assert res["ok"] == (len(shopping) < MAX_ITEMS), res
            if res["ok"]:
                assert res["added"] == call_args, (res, call_args)
                shopping.append(res["added"])
                assert res["list_size"] == len(shopping)
        elif name == "order_groceries":
            assert res["ok"] == bool(shopping), res
            if res["ok"]:
                orders.append({"order": len(orders) + 1, "items": shopping})
                assert res == {"ok": True, **orders[-1]}
                shopping = []
        elif name == "set_temperature":
            lo, hi = ZONE_RANGE[call_args["zone"]]
            assert res["ok"] == (lo <= call_args["celsius"] <= hi), (call_args, res)
            if res["ok"]:
                assert res["zone"] == call_args["zone"] and res["celsius"] == call_args["celsius"]
                temps[call_args["zone"]] = call_args["celsius"]
            else:
                assert res["error"]
        elif name == "get_inventory":
            assert res["ok"] and res["items"] == state["inventory"], res
            for zone, c in temps.items():
                assert res["temperatures"][zone] == c, res
    assert state["shopping_list"] == shopping
    assert state["orders"] == orders
    for zone, (lo, hi) in ZONE_RANGE.items():
        assert lo <= state["temperatures"][zone] <= hi, state
        if zone in temps:
            assert state["temperatures"][zone] == temps[zone], state


def test_c_and_python_tell_the_same_story(model):
    """The twins: the same engine, greedy sampling, the same fridge -- the same transcript."""
    for p in PROGRAMS:
        if p not in _runs:
            _runs[p] = drive(p, model, SCRIPT)
    c, py = _runs["c"], _runs["python"]
    assert c.returncode == py.returncode == 0
    assert c.stdout.decode().split("\n") == py.stdout.decode().split("\n")


@pytest.mark.parametrize("program", PROGRAMS)
def test_bad_model_path_fails_clearly(program, tmp_path):
    bad = tmp_path / "no-such-model.gguf"
    r = drive(program, bad, ["hello"])
    assert r.returncode != 0
    err = r.stderr.decode()
    assert err.startswith("error: ") and "no-such-model.gguf" in err, err
    assert b"STATE" not in r.stdout and b"Traceback" not in r.stderr


@pytest.mark.parametrize("program", PROGRAMS)
def test_not_a_model_fails_clearly(program, tmp_path):
    bad = tmp_path / "garbage.gguf"
    bad.write_bytes(b"GGUF" + b"\xff" * 60)
    r = drive(program, bad, ["hello"])
    assert r.returncode != 0
    err = r.stderr.decode()
    assert err.startswith("error: ") and "garbage.gguf" in err, err
    assert b"Traceback" not in r.stderr


@pytest.mark.parametrize("program", PROGRAMS)
def test_an_overlong_line_is_skipped_with_an_error(program, model):
    r = drive(program, model, b"x" * 5000 + b"\n\n")
    lines = r.stdout.decode().split("\n")[:-1]
    assert r.returncode == 1, r.stderr.decode()
    assert len(lines) == 2 and lines[0].startswith("ERROR: ") and "longer than" in lines[0], lines
    assert lines[1].startswith("STATE {")
