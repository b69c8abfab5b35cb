"""Constrained output through the Python API and the tools: generate(grammar=...,
json_schema=...), chat(response_format=..., tools=...), the errors they raise,
and ember-run / ember-chat's --grammar, --grammar-file, -j, -jf flags. The
outputs are checked with independent parsers (json, jsonschema)."""
import json
import sys

import pytest

from conftest import BUILD, DEFAULT_MODELS, model_path, resources_required, run, tool

PKG = BUILD / "python"
if not (PKG / "ember").exists():
    pytest.skip(f"SKIPPED: {PKG}/ember is absent; configure with -DEMBER_PYTHON=ON", allow_module_level=True)
sys.path.insert(0, str(PKG))
import ember  # noqa: E402

try:
    import jsonschema
except ImportError:
    if resources_required():
        raise
    pytest.skip("SKIPPED: jsonschema is not installed (scripts/setup installs it)", allow_module_level=True)

GROCERY = {
    "type": "object",
    "properties": {
        "action": {"enum": ["order", "add"]},
        "items": {
            "type": "array",
            "minItems": 1,
            "maxItems": 4,
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "minLength": 1, "maxLength": 20},
                    "quantity": {"type": "integer", "minimum": 1, "maximum": 12},
                    "unit": {"enum": ["l", "kg", "pcs"]},
                },
                "required": ["name", "quantity", "unit"],
                "additionalProperties": False,
            },
        },
    },
    "required": ["action", "items"],
    "additionalProperties": False,
}

TOOLS = [
    {"type": "function", "function": {
        "name": "add_to_shopping_list",
        "description": "Adds an item to the shopping list",
        "parameters": {"type": "object", "properties": {
            "item": {"type": "string", "maxLength": 24},
            "quantity": {"type": "integer", "minimum": 1, "maximum": 20}},
            "required": ["item", "quantity"], "additionalProperties": False}}},
    {"type": "function", "function": {
        "name": "set_temperature",
        "description": "Sets a zone's temperature",
        "parameters": {"type": "object", "properties": {
            "zone": {"enum": ["fridge", "freezer"]},
            "celsius": {"type": "integer", "minimum": -24, "maximum": 7}},
            "required": ["zone", "celsius"], "additionalProperties": False}}},
]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}


@pytest.fixture(scope="module")
def model():
    return ember.Model(str(model_path(DEFAULT_MODELS[0])))


@pytest.fixture()
def session(model):
    return model.session(n_ctx=1024, n_threads=2)


def test_generate_with_a_grammar_text_or_object(session):
    for grammar in ['root ::= ("yes" | "no") "."', ember.Grammar('root ::= ("yes" | "no") "."')]:
        for seed in (1, 2, 3):
            session.reset()
            g = session.generate("Is the sky blue? Answer:", grammar=grammar, max_tokens=16, temperature=1.0, seed=seed)
            text = "".join(g)
            assert text in ("yes.", "no."), text
            assert g.result.stop_reason == "eog"


def test_generate_with_a_json_schema_validates(session):
    for seed in range(4):
        session.reset()
        g = session.generate("A grocery order as JSON:", json_schema=GROCERY, max_tokens=300, temperature=0.7, seed=seed)
        text = "".join(g)
        assert g.result.stop_reason == "eog", text
        jsonschema.validate(json.loads(text), GROCERY)


def test_chat_response_format(session):
    # JSON mode is unbounded (a small model may go on inside a string): complete or cut, the text holds
    any_object = ember.Grammar.json_object()
    g = session.chat([{"role": "user", "content": "Describe a cat as a JSON object."}],
                     response_format={"type": "json_object"}, max_tokens=300, temperature=0, stream=True)
    out = "".join(g)
    if g.result.stop_reason == "eog":
        assert isinstance(json.loads(out), dict)
    else:
        assert g.result.stop_reason == "max_tokens" and any_object.is_prefix(out), out
    out = session.chat([{"role": "user", "content": "Order two litres of milk, as JSON."}],
                       response_format={"type": "json_schema", "json_schema": {"name": "order", "schema": GROCERY}},
                       max_tokens=300, temperature=0)
    jsonschema.validate(json.loads(out), GROCERY)
    # streamed: the pieces make up the constrained text
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
              "additionalProperties": False}
    g = session.chat([{"role": "user", "content": "Are you ready? Answer in JSON."}],
                     response_format={"type": "json_schema", "json_schema": {"schema": schema}}, stream=True,
                     max_tokens=100, temperature=0)
    jsonschema.validate(json.loads("".join(g)), schema)
    assert g.result.stop_reason == "eog"


def check_calls(reply):
    assert isinstance(reply, ember.ChatReply)
    for c in reply.tool_calls:
        assert c["type"] == "function" and len(c["id"]) == 9
        name = c["function"]["name"]
        assert name in SCHEMAS, name
        jsonschema.validate(json.loads(c["function"]["arguments"]), SCHEMAS[name])


def test_chat_with_tools_required_and_named(session):
    msgs = [{"role": "user", "content": "Put three apples on my shopping list."}]
    r = session.chat(msgs, tools=TOOLS, tool_choice="required", max_tokens=200, temperature=0)
    check_calls(r)
    assert len(r.tool_calls) >= 1
    r = session.chat(msgs, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "set_temperature"}},
                     parallel_tool_calls=False, max_tokens=200, temperature=0.8, seed=5)
    check_calls(r)
    assert [c["function"]["name"] for c in r.tool_calls] == ["set_temperature"]
    assert r.result.stop_reason == "eog"
    # the call and its result go back in; the model then answers (tool_choice none: text only)
    msgs += [r.message(), {"role": "tool", "tool_call_id": r.tool_calls[0]["id"], "name": "set_temperature",
                           "content": '{"ok": true}'}]
    r2 = session.chat(msgs, tools=TOOLS, tool_choice="none", max_tokens=32, temperature=0)
    assert r2.tool_calls == [] and isinstance(r2.content, str)


def test_chat_with_tools_streamed(session):
    g = session.chat([{"role": "user", "content": "Set the freezer to minus 18."}], tools=TOOLS, stream=True,
                     tool_choice="required", parallel_tool_calls=False, max_tokens=200, temperature=0)
    assert g.reply is None  # not before the end
    pieces = list(g)
    r = g.reply
    check_calls(r)
    assert len(r.tool_calls) == 1 and "".join(pieces) == r.content
    assert "tool_calls" not in "".join(pieces)  # the calls' syntax is never streamed


def test_chat_with_tools_auto_many_seeds(session):
    # whatever the model chooses, every call it makes is valid
    prompts = ["Set the freezer to minus 18 degrees.", "What is the capital of France?",
               "Add milk and eggs to the list.", "Make the fridge colder, 3 degrees."]
    n_calls = 0
    for i, p in enumerate(prompts):
        r = session.chat([{"role": "user", "content": p}], tools=TOOLS, parallel_tool_calls=False, max_tokens=200,
                         temperature=0.7, seed=i)
        check_calls(r)
        assert len(r.tool_calls) <= 1
        n_calls += len(r.tool_calls)
        assert r.result.stop_reason == "eog", r.result.text
    assert n_calls >= 1  # the tools are used at all
    # parallel calls: a 135M model may list calls until max_tokens; every complete one is still valid
    r = session.chat([{"role": "user", "content": prompts[2]}], tools=TOOLS, max_tokens=200, temperature=0)
    check_calls(r)


def test_errors_say_what_and_where(session):
    with pytest.raises(ember.GrammarError) as e:
        session.generate("x", grammar='root ::= "a"\nb ::= ("c"')
    assert e.value.line == 2 and e.value.column > 1 and "grammar:2:" in str(e.value)
    assert isinstance(e.value, ember.InvalidArgumentError) and isinstance(e.value, ValueError)
    with pytest.raises(ember.GrammarError, match="left-recursive"):
        ember.Grammar("root ::= root \"x\" | \"y\"")
    with pytest.raises(ember.SchemaError) as e:
        session.generate("x", json_schema={"type": "object", "properties": {"a": {"type": "string", "not": {}}}})
    assert e.value.keyword == "not" and e.value.path == "/properties/a" and e.value.code == "unsupported"
    with pytest.raises(ember.InvalidArgumentError, match="both"):
        session.generate("x", grammar='root ::= "a"', json_schema={"type": "integer"})
    with pytest.raises(TypeError):
        session.generate("x", grammar=42)
    with pytest.raises(ember.InvalidArgumentError, match="response_format and tools"):
        session.chat([{"role": "user", "content": "hi"}], tools=TOOLS, response_format={"type": "json_object"})
    with pytest.raises(ember.InvalidArgumentError, match="'launch'"):
        session.chat([{"role": "user", "content": "hi"}], tools=TOOLS,
                     tool_choice={"type": "function", "function": {"name": "launch"}})
    with pytest.raises(ember.InvalidArgumentError, match="tool_choice"):
        session.chat([{"role": "user", "content": "hi"}], tools=TOOLS, tool_choice="sometimes")
    with pytest.raises(ember.InvalidArgumentError, match="wizard"):
        session.chat([{"role": "wizard", "content": "hi"}], tools=TOOLS)
    # the session is still usable
    assert "".join(session.generate("Hi", max_tokens=2, temperature=0))


# ---- the tools ------------------------------------------------------------------------

def run_tool(*args):
    r = run([tool("ember-run"), "-m", model_path(DEFAULT_MODELS[0]), "-t", "2", "-c", "512", *args])
    return r.returncode, r.stdout.decode(), r.stderr.decode()


def test_ember_run_grammar_flags(tmp_path):
    rc, out, err = run_tool("-p", "Is the sky blue? Answer:", "-n", "16", "--grammar", 'root ::= ("yes" | "no") "."')
    assert rc == 0, err
    assert out.strip().endswith(("yes.", "no.")), out
    gfile = tmp_path / "g.gbnf"
    gfile.write_text('root ::= [0-9]{3}\n')
    rc, out, err = run_tool("-p", "Three digits:", "-n", "16", "--grammar-file", str(gfile))
    assert rc == 0, err
    assert out.strip()[-3:].isdigit(), out
    schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 9}},
              "required": ["n"], "additionalProperties": False}
    for flags in (["-j", json.dumps(schema)], ["--json-schema", json.dumps(schema)]):
        rc, out, err = run_tool("-p", "JSON:", "-n", "64", "--temp", "0", *flags)
        assert rc == 0, err
        jsonschema.validate(json.loads(out[out.index("{"):]), schema)
    sfile = tmp_path / "s.json"
    sfile.write_text(json.dumps(schema))
    rc, out, err = run_tool("-p", "JSON:", "-n", "64", "--temp", "0", "-jf", str(sfile))
    assert rc == 0, err
    jsonschema.validate(json.loads(out[out.index("{"):]), schema)


def test_ember_run_grammar_errors(tmp_path):
    rc, out, err = run_tool("-p", "x", "--grammar", 'root ::= "a"\nb ::= ("c"')
    assert rc == 1 and "grammar:2:" in err, err
    rc, out, err = run_tool("-p", "x", "-j", '{"type": "string", "format": "email"}')
    assert rc == 1 and "format" in err and "email" in err, err
    rc, out, err = run_tool("-p", "x", "--grammar-file", str(tmp_path / "missing.gbnf"))
    assert rc == 1 and "missing.gbnf" in err and "cannot open" in err, err
    rc, out, err = run_tool("-p", "x", "--grammar", 'root ::= "a"', "-j", "{}")
    assert rc == 1 and "give one grammar" in err, err


def test_ember_chat_json_schema():
    schema = {"type": "object", "properties": {"answer": {"enum": ["yes", "no"]}}, "required": ["answer"],
              "additionalProperties": False}
    r = run([tool("ember-chat"), "-m", model_path(DEFAULT_MODELS[0]), "-t", "2", "-c", "512", "-n", "64",
             "--temp", "0", "-j", json.dumps(schema)], input=b"Is water wet?\nIs fire cold?\n")
    assert r.returncode == 0, r.stderr.decode()
    lines = r.stdout.decode().split("\n")[:-1]
    assert len(lines) == 2, lines
    for ln in lines:  # a reply is one line, its newlines and backslashes escaped
        text = ln.replace("\\\\", "\0").replace("\\n", "\n").replace("\\r", "\r").replace("\0", "\\")
        jsonschema.validate(json.loads(text), schema)
