"""Constrained generation end to end (issue 20, item 6): 200 generations -- SmolLM2-135M and Gemma-3-270M, ten
JSON Schemas, Session.generate(json_schema=...) and Session.chat(response_format=...), temperature 0 and 0.7-1.0
with several seeds -- each of which must end because the grammar ended it (stop_reason 'eog'; a generation cut by
max_tokens is a failure), parse with `json` and validate with the `jsonschema` package (formats checked).
Schemas with keywords ember does not implement raise ember.SchemaError naming the keyword and its JSON Pointer.

The heavy tests (they run the models: ~100 generations per model) are named test_heavy_*; deselect them with
`-k "not heavy"`. Each model is loaded once and its one session is reset between generations."""
from __future__ import annotations

import copy
import datetime
import json
import re
import sys

import pytest

from conftest import BUILD, DEFAULT_MODELS, model_path

PKG = BUILD / "python"
if not (PKG / "ember").exists():
    pytest.skip(f"SKIPPED: {PKG}/ember is absent; configure with -DEMBER_PYTHON=ON", allow_module_level=True)
sys.path.insert(0, str(PKG))
import ember  # noqa: E402

jsonschema = pytest.importorskip("jsonschema", reason="pip install jsonschema (scripts/setup)")
from jsonschema import Draft202012Validator  # noqa: E402

# Generous: the schemas below bound every string and array, so a generation that reaches this is a runaway (a
# grammar that does not end, or one that lets the model pad forever), not a long answer.
MAX_TOKENS = 400
N_CTX = 1024

# ---------------------------------------------------------------------------------------------------------------
# The schemas, each with a completion prompt (generate) and a user message (chat) that make sense for it.

GROCERY = {
    "type": "object",
    "properties": {
        "action": {"enum": ["order", "cancel"]},
        "items": {
            "type": "array",
            "minItems": 1,
            "maxItems": 5,
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "minLength": 1, "maxLength": 30},
                    "quantity": {"type": "integer", "minimum": 1, "maximum": 50},
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

# nested arrays: arrays of arrays of bounded integers
MATRIX = {
    "type": "array",
    "minItems": 1,
    "maxItems": 3,
    "items": {"type": "array", "minItems": 1, "maxItems": 4, "items": {"type": "integer", "minimum": -9, "maximum": 9}},
}

# optional properties, anyOf string|null, a date
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 20},
        "born": {"type": "string", "format": "date"},
        "nickname": {"anyOf": [{"type": "string", "maxLength": 12}, {"type": "null"}]},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
    },
    "required": ["name", "born"],
    "additionalProperties": False,
}

# a tuple: prefixItems and nothing after them; a large integer range
CITY = {
    "type": "array",
    "prefixItems": [
        {"type": "string", "minLength": 1, "maxLength": 20},
        {"type": "string", "pattern": "^[A-Z]{2}$"},
        {"type": "integer", "minimum": 0, "maximum": 40000000},
    ],
    "items": False,
    "minItems": 3,
}

# a recursive tree ($defs/$ref): an arithmetic expression whose arguments are numbers or expressions. An
# unbounded recursion (a family tree of nodes with children) is a loop greedy decoding of these small models falls
# into until max_tokens; here the integer leaves end it in practice, and maxItems keeps each node small.
EXPR = {
    "$ref": "#/$defs/expr",
    "$defs": {
        "expr": {
            "type": "object",
            "properties": {
                "op": {"enum": ["+", "-", "*", "/"]},
                "args": {
                    "type": "array",
                    "minItems": 2,
                    "maxItems": 2,
                    "items": {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 99}, {"$ref": "#/$defs/expr"}]},
                },
            },
            "required": ["op", "args"],
            "additionalProperties": False,
        }
    },
}

EXPR_EXAMPLE = '{"op": "-", "args": [7, {"op": "+", "args": [1, 2]}]}'

# booleans and const
SETTINGS = {
    "type": "object",
    "properties": {
        "version": {"const": 2},
        "enabled": {"type": "boolean"},
        "debug": {"type": "boolean"},
        "mode": {"const": "strict"},
    },
    "required": ["version", "enabled", "debug", "mode"],
    "additionalProperties": False,
}

# a string pattern
PART = {
    "type": "object",
    "properties": {
        "sku": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{4}$"},
        "in_stock": {"type": "boolean"},
        "count": {"type": "integer", "minimum": 0, "maximum": 999},
    },
    "required": ["sku", "in_stock", "count"],
    "additionalProperties": False,
}

# numbers (unbounded: bounds on 'number' are refused, see test_number_bounds_are_refused), an optional one
WEATHER = {
    "type": "object",
    "properties": {
        "temperature": {"type": "number"},
        "humidity": {"type": "integer", "minimum": 0, "maximum": 100},
        "wind_kmh": {"type": "number"},
        "unit": {"enum": ["C", "F"]},
    },
    "required": ["temperature", "humidity", "unit"],
    "additionalProperties": False,
}

# uuid, date-time and time formats; a type list with integer bounds
EVENT = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "format": "uuid"},
        "start": {"type": "string", "format": "date-time"},
        "reminder": {"type": "string", "format": "time"},
        "room": {"type": ["integer", "null"], "minimum": 1, "maximum": 20},
    },
    "required": ["id", "start", "reminder"],
    "additionalProperties": False,
}

# enums of strings and of integers, an array of enums
MEALS = {
    "type": "object",
    "properties": {
        "day": {"enum": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]},
        "meals": {"type": "array", "minItems": 1, "maxItems": 3, "items": {"enum": ["breakfast", "lunch", "dinner"]}},
        "rating": {"enum": [1, 2, 3, 4, 5]},
    },
    "required": ["day", "meals", "rating"],
    "additionalProperties": False,
}

CASES = {
    "grocery": (GROCERY, "Order two litres of milk and 6 eggs as JSON: ",
                "Order two litres of milk and 6 eggs. Reply with the order as JSON."),
    "matrix": (MATRIX, "A 2x3 matrix of small integers as a JSON array of rows: ",
               "Write a 2x3 matrix of small integers as a JSON array of rows."),
    "person": (PERSON, "Ada Lovelace, born 10 December 1815, as a JSON record: ",
               "Describe Ada Lovelace (born 10 December 1815) as a JSON record."),
    "city": (CITY, "Paris as a JSON array [name, country code, population]: ",
             "Give Paris as a JSON array: [name, country code, population]."),
    "expression": (EXPR, f"7 - (1 + 2) is {EXPR_EXAMPLE}. (4 + 5) * 3 as a JSON expression tree: ",
                   f"7 - (1 + 2) is the JSON expression tree {EXPR_EXAMPLE}. Write (4 + 5) * 3 the same way."),
    "settings": (SETTINGS, "The app settings, debugging off, as JSON: ",
                 "Give the app settings as JSON, with debugging turned off."),
    "part": (PART, "Spare part ABC-1234, 12 in stock, as JSON: ",
             "Describe spare part ABC-1234 (12 in stock) as JSON."),
    "weather": (WEATHER, "Today's weather in Oslo, 21.5 degrees Celsius, 40% humidity, as JSON: ",
                "Report today's weather in Oslo (21.5 degrees Celsius, 40% humidity) as JSON."),
    "event": (EVENT, "A meeting on 3 March 2025 at 10:00 UTC in room 4, as a JSON event: ",
              "Create a JSON event for a meeting on 3 March 2025 at 10:00 UTC in room 4."),
    "meals": (MEALS, "Monday's meals, lunch and dinner, rated 4 of 5, as JSON: ",
              "Log Monday's meals (lunch and dinner), rated 4 of 5, as JSON."),
}

# (how, temperature, seed): ten generations per schema and model, 100 per model. 'chat' is the plain
# Session.chat that returns a str, 'chat-stream' the same with stream=True (whose result says why it ended).
RUNS = [
    ("generate", 0.0, 1),
    ("chat", 0.0, 1),
    ("generate", 0.7, 11),
    ("generate", 0.8, 12),
    ("generate", 0.9, 13),
    ("generate", 1.0, 14),
    ("chat-stream", 0.7, 21),
    ("chat-stream", 0.8, 22),
    ("chat-stream", 0.9, 23),
    ("chat-stream", 1.0, 24),
]

MODELS = {"smollm2": DEFAULT_MODELS[0], "gemma3": DEFAULT_MODELS[1]}

# ---------------------------------------------------------------------------------------------------------------
# Format checking. jsonschema checks date-time and time only when the optional rfc3339-validator is installed;
# without it both would pass anything, so the test brings its own strict RFC 3339 checks for them.

_RFC3339_TIME = r"(\d{2}):(\d{2}):(\d{2})(?:\.\d+)?(?:[Zz]|[+-](\d{2}):(\d{2}))"
_TIME_RE = re.compile(_RFC3339_TIME + r"\Z")
_DATE_TIME_RE = re.compile(r"(\d{4}-\d{2}-\d{2})[Tt]" + _RFC3339_TIME + r"\Z")


def _rfc3339_time(groups) -> bool:
    hh, mm, ss, oh, om = groups
    if not (int(hh) <= 23 and int(mm) <= 59 and int(ss) <= 60):  # 60: a leap second
        return False
    return oh is None or (int(oh) <= 23 and int(om) <= 59)


def _is_time(s) -> bool:
    if not isinstance(s, str):
        return True
    m = _TIME_RE.match(s)
    return bool(m) and _rfc3339_time(m.groups())


def _is_date_time(s) -> bool:
    if not isinstance(s, str):
        return True
    m = _DATE_TIME_RE.match(s)
    if not m:
        return False
    try:
        datetime.date.fromisoformat(m.group(1))
    except ValueError:
        return False
    return _rfc3339_time(m.groups()[1:])


def format_checker():
    fc = copy.deepcopy(Draft202012Validator.FORMAT_CHECKER)
    if "date-time" not in fc.checkers:
        fc.checks("date-time")(_is_date_time)
    if "time" not in fc.checkers:
        fc.checks("time")(_is_time)
    for f in ("date", "time", "date-time", "uuid"):
        assert f in fc.checkers, f"jsonschema cannot check format {f!r}"
    return fc


FORMATS = format_checker()


def test_format_checks_can_fail():
    """The format checks the generations are held to reject what they must (they are not no-ops)."""
    v = Draft202012Validator(EVENT, format_checker=FORMATS)
    good = {"id": "123e4567-e89b-12d3-a456-426614174000", "start": "2025-03-03T10:00:00Z", "reminder": "09:45:00+01:00"}
    assert not list(v.iter_errors(good))
    for key, bad in [("id", "123e4567-e89b-12d3-a456"), ("start", "2025-02-30T10:00:00Z"),
                     ("start", "2025-03-03 10:00"), ("start", "2025-03-03T24:00:00Z"), ("reminder", "09:45"),
                     ("reminder", "09:61:00Z"), ("reminder", "09:45:00+25:00")]:
        assert list(v.iter_errors({**good, key: bad})), f"{key}={bad!r} passed the format check"
    assert list(Draft202012Validator(PERSON, format_checker=FORMATS).iter_errors({"name": "x", "born": "1815-13-10"}))


# ---------------------------------------------------------------------------------------------------------------
# Unsupported keywords: the promised SchemaError (keyword, JSON Pointer path); annotations are accepted.

UNSUPPORTED = [
    ({"type": "object", "patternProperties": {"^a": {"type": "integer"}}}, "patternProperties", ""),
    ({"type": "object", "properties": {"a": {"type": "string"}}, "dependentRequired": {"a": ["b"]}},
     "dependentRequired", ""),
    ({"if": {"type": "string"}, "then": {"maxLength": 3}, "else": {"type": "integer"}}, "if", ""),
    ({"not": {"type": "null"}}, "not", ""),
    ({"type": "object", "unevaluatedProperties": False}, "unevaluatedProperties", ""),
    ({"type": "array", "contains": {"type": "integer"}}, "contains", ""),
    ({"type": "object", "propertyNames": {"maxLength": 3}}, "propertyNames", ""),
    ({"type": "string", "format": "email"}, "format", ""),
    # nested: the path is the JSON Pointer of the schema object holding the keyword
    ({"type": "object", "properties": {"a": {"type": "array", "items": {"type": "object",
                                                                         "patternProperties": {"x": {}}}}}},
     "patternProperties", "/properties/a/items"),
    ({"type": "object", "properties": {"a": {"type": "array", "items": {"type": "string", "format": "email"}}}},
     "format", "/properties/a/items"),
    ({"type": "object", "properties": {"a": {"type": "array", "items": {"not": {"const": 1}}}}},
     "not", "/properties/a/items"),
    ({"type": "object", "properties": {"a": {"type": "object", "properties": {"b": {"dependentRequired": {}}}}}},
     "dependentRequired", "/properties/a/properties/b"),
    ({"anyOf": [{"type": "integer"}, {"type": "array", "contains": {"const": 1}}]}, "contains", "/anyOf/1"),
    ({"type": "array", "prefixItems": [{"type": "integer"}, {"propertyNames": {"maxLength": 1}}]},
     "propertyNames", "/prefixItems/1"),
    ({"$ref": "#/$defs/n", "$defs": {"n": {"type": "object", "unevaluatedProperties": False}}},
     "unevaluatedProperties", "/$defs/n"),
    ({"type": "object", "properties": {"when": {"if": {"type": "string"}, "then": {"format": "date"}}}},
     "if", "/properties/when"),
]


def _ids(cases):
    return [f"{kw}@{path or 'top'}" for _, kw, path in cases]


@pytest.mark.parametrize(("schema", "keyword", "path"), UNSUPPORTED, ids=_ids(UNSUPPORTED))
def test_unsupported_keyword_raises_schema_error(schema, keyword, path):
    for convert in (ember.Grammar.from_json_schema, ember.Grammar.json_schema_to_gbnf):
        with pytest.raises(ember.SchemaError) as e:
            convert(schema)
        assert (e.value.keyword, e.value.path) == (keyword, path), f"{convert.__name__}: {e.value}"
        assert isinstance(e.value, ValueError) and e.value.code == "unsupported", e.value
        assert keyword in str(e.value), e.value
    # the JSON text of the schema is refused the same way
    with pytest.raises(ember.SchemaError) as e:
        ember.Grammar.from_json_schema(json.dumps(schema))
    assert (e.value.keyword, e.value.path) == (keyword, path), str(e.value)


def test_number_bounds_are_refused():
    """Bounds on 'number' cannot be expressed exactly in a grammar: refused, not silently dropped."""
    with pytest.raises(ember.SchemaError) as e:
        ember.Grammar.from_json_schema({"type": "object", "properties": {"t": {"type": "number", "minimum": -50}}})
    assert (e.value.keyword, e.value.path) == ("minimum", "/properties/t"), str(e.value)


ANNOTATED = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://example.com/order.json",
    "$comment": "annotations only: they constrain nothing",
    "title": "Order",
    "description": "A grocery order",
    "default": {"n": 1},
    "examples": [{"n": 2}],
    "type": "object",
    "properties": {
        "n": {"type": "integer", "minimum": 1, "maximum": 9, "title": "N", "description": "how many",
              "default": 1, "examples": [3], "$comment": "bounded"},
    },
    "required": ["n"],
    "additionalProperties": False,
}


def test_annotation_keywords_are_accepted():
    g = ember.Grammar.from_json_schema(ANNOTATED)
    plain = {k: v for k, v in ANNOTATED.items()
             if k not in ("$schema", "$id", "$comment", "title", "description", "default", "examples")}
    plain["properties"] = {"n": {"type": "integer", "minimum": 1, "maximum": 9}}
    assert g.source == ember.Grammar.from_json_schema(plain).source, "annotations changed the grammar"
    assert g.matches('{"n": 3}') and not g.matches('{"n": 0}') and not g.matches('{"n": 3, "title": "x"}')


# ---------------------------------------------------------------------------------------------------------------
# The generations.

@pytest.fixture(scope="module", params=list(MODELS))
def session(request):
    """One session per model (the model loaded once), reset between generations."""
    model = ember.Model(str(model_path(MODELS[request.param])))
    return model.session(n_ctx=N_CTX, n_threads=2)


def test_heavy_unsupported_schema_refused_before_generating(session):
    """generate(json_schema=...) and chat(response_format=...) raise the converter's SchemaError, generating nothing."""
    schema, keyword, path = UNSUPPORTED[8]
    session.reset()
    with pytest.raises(ember.SchemaError) as e:
        session.generate("x", max_tokens=4, json_schema=schema)
    assert (e.value.keyword, e.value.path) == (keyword, path), str(e.value)
    rf = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    for stream in (False, True):
        with pytest.raises(ember.SchemaError) as e:
            session.chat([{"role": "user", "content": "hi"}], stream=stream, max_tokens=4, response_format=rf)
        assert (e.value.keyword, e.value.path) == (keyword, path), str(e.value)
    assert session.n_past == 0, "a refused schema still ran the model"


def _one(session, how, schema, prompt, message, temperature, seed):
    """(text, stop_reason or None) of one constrained generation on a fresh history."""
    session.reset()
    kw = dict(max_tokens=MAX_TOKENS, temperature=temperature, seed=seed)
    if how == "generate":
        g = session.generate(prompt, json_schema=schema, **kw)
    else:
        rf = {"type": "json_schema", "json_schema": {"name": "reply", "schema": schema}}
        messages = [{"role": "user", "content": message}]
        if how == "chat":
            return session.chat(messages, response_format=rf, **kw), None
        g = session.chat(messages, stream=True, response_format=rf, **kw)
    pieces = "".join(g)
    r = g.result
    assert r is not None, "a finished Generation has no result"
    assert r.text == pieces, f"result.text {r.text!r} != the streamed pieces {pieces!r}"
    return r.text, r.stop_reason


@pytest.mark.parametrize("case", list(CASES))
def test_heavy_constrained_generations_are_valid(session, case):
    """Ten generations of one schema on one model: each ends by the grammar ('eog'), parses and validates."""
    schema, prompt, message = CASES[case]
    grammar = ember.Grammar.from_json_schema(schema)
    validator = Draft202012Validator(schema, format_checker=FORMATS)
    model = session.model
    failures = []
    for how, temperature, seed in RUNS:
        where = f"{how} temperature={temperature} seed={seed}"
        text, stop = _one(session, how, schema, prompt, message, temperature, seed)
        if stop is None:
            # the plain chat returns only text: hold it to the grammar's full language (a text cut short is a
            # proper prefix of it) and to a token count well under the limit
            if not grammar.matches(text):
                failures.append(f"{where}: the reply is not a complete sentence of the grammar (cut?): {text!r}")
                continue
            n = len(model.tokenize(text, add_special=False))
            if n >= MAX_TOKENS - 8:
                failures.append(f"{where}: ~{n} tokens, at max_tokens={MAX_TOKENS} (cut?): {text!r}")
                continue
        elif stop != "eog":
            failures.append(f"{where}: stop_reason {stop!r}, not 'eog' (max_tokens={MAX_TOKENS}): {text!r}")
            continue
        try:
            value = json.loads(text)
        except ValueError as e:
            failures.append(f"{where}: not JSON ({e}): {text!r}")
            continue
        errors = [f"{'/'.join(map(str, err.absolute_path)) or '(root)'}: {err.message}"
                  for err in validator.iter_errors(value)]
        if errors:
            failures.append(f"{where}: invalid for the schema: {'; '.join(errors)}: {text!r}")
    ok = len(RUNS) - len(failures)
    assert not failures, (f"{model.info.arch} / {case}: {ok} of {len(RUNS)} constrained generations valid, "
                          f"{len(failures)} failed:\n" + "\n".join(failures))
