"""JSON Schema -> grammar through the Python binding: random strings of each
schema's grammar are valid JSON that the `jsonschema` package accepts, hand-written
invalid documents are refused, and unsupported keywords raise ember.SchemaError
naming the keyword and its path."""
import json
import sys

import pytest

from conftest import BUILD

PKG = BUILD / "python"
if not (PKG / "ember").exists():
    pytest.skip(f"SKIPPED: {PKG}/ember is absent; configure with -DEMBER_PYTHON=ON", allow_module_level=True)
sys.path.insert(0, str(PKG))
import ember  # noqa: E402

jsonschema = pytest.importorskip("jsonschema", reason="pip install jsonschema (scripts/setup)")

# prefix of a document the schema accepts (or the validator cannot check) that the grammar refuses by design
NOT_IN_GRAMMAR = "\0"

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
                    "name": {"type": "string", "minLength": 1, "maxLength": 20},
                    "quantity": {"type": "integer", "minimum": 1, "maximum": 99},
                    "unit": {"enum": ["l", "kg", "pcs"]},
                },
                "required": ["name", "quantity"],
                "additionalProperties": False,
            },
        },
    },
    "required": ["action", "items"],
    "additionalProperties": False,
}

TREE = {
    "$ref": "#/$defs/node",
    "$defs": {
        "node": {
            "type": "object",
            "properties": {
                "label": {"type": "string", "pattern": "^[a-z]{1,8}$"},
                "children": {"type": "array", "maxItems": 3, "items": {"$ref": "#/$defs/node"}},
            },
            "required": ["label"],
            "additionalProperties": False,
        }
    },
}

SCHEMAS = {
    "grocery": (
        GROCERY,
        [
            '{"action": "order"}',
            '{"action": "buy", "items": [{"name": "milk", "quantity": 2}]}',
            '{"action": "order", "items": []}',
            '{"action": "order", "items": [{"name": "milk", "quantity": 0}]}',
            '{"action": "order", "items": [{"name": "milk", "quantity": 100}]}',
            '{"action": "order", "items": [{"name": "milk", "quantity": 2, "unit": "gallon"}]}',
            '{"action": "order", "items": [{"name": "", "quantity": 2}]}',
            '{"action": "order", "items": [{"name": "milk", "quantity": 2, "price": 1}]}',
            # valid for the schema, refused by design: properties come in the schema's order
            NOT_IN_GRAMMAR + '{"items": [{"name": "milk", "quantity": 2}], "action": "order"}',
        ],
    ),
    "nested arrays": (
        {"type": "array", "items": {"type": "array", "items": {"type": "integer", "minimum": -5, "maximum": 5},
                                    "maxItems": 4}, "maxItems": 4},
        ["[[6]]", "[[1, 2, 3, 4, 5]]", "[1]", "[[1.5]]"],
    ),
    "prefixItems": (
        {"type": "array", "prefixItems": [{"type": "string", "format": "date"}, {"type": "boolean"}],
         "items": {"type": "null"}, "minItems": 2, "maxItems": 4},
        ['["2024-01-01"]', '["2024-01-01", 1]', '["2024-01-01", true, 1]', '["2024-13-01", true]'],
    ),
    "anyOf": (
        {"anyOf": [{"type": "integer", "exclusiveMinimum": 0}, {"type": "string", "enum": ["none", "all"]},
                   {"type": "null"}]},
        ["0", "-1", '"some"', "true", "1.5"],
    ),
    "$ref recursion": (
        TREE,
        ['{"label": "A"}', '{"children": []}', '{"label": "a", "children": [{"label": "toolongname"}]}',
         '{"label": "a", "children": [{"label": "b"}, {"label": "c"}, {"label": "d"}, {"label": "e"}]}'],
    ),
    "formats": (
        {"type": "object",
         "properties": {"day": {"type": "string", "format": "date"}, "at": {"type": "string", "format": "date-time"},
                        "id": {"type": "string", "format": "uuid"}, "t": {"type": "string", "format": "time"}},
         "required": ["day", "at", "id"]},
        ['{"day": "2023-02-29", "at": "2024-01-01T00:00:00Z", "id": "123e4567-e89b-12d3-a456-426614174000"}',
         # jsonschema checks date-time only with rfc3339-validator installed
         ("" if "date-time" in jsonschema.Draft202012Validator.FORMAT_CHECKER.checkers else NOT_IN_GRAMMAR) +
         '{"day": "2024-01-01", "at": "2024-01-01", "id": "123e4567-e89b-12d3-a456-426614174000"}',
         '{"day": "2024-01-01", "at": "2024-01-01T00:00:00Z", "id": "123e4567"}'],
    ),
    "extra properties": (
        {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "string"}}, "required": ["a"]},
        ['{"b": "x"}', '{"a": "x"}', NOT_IN_GRAMMAR + '{"a": 1, "a": 2}'],  # json.loads takes duplicate keys
    ),
}


@pytest.mark.parametrize("name", list(SCHEMAS))
def test_random_strings_validate_and_invalid_documents_are_refused(name):
    schema, invalid = SCHEMAS[name]
    g = ember.Grammar.from_json_schema(schema)
    assert g.source == ember.Grammar.from_json_schema(json.dumps(schema)).source  # dict or text alike
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    distinct = set()
    for seed in range(50):
        text = g.random_string(seed, 2048)
        assert g.matches(text), text
        doc = json.loads(text)  # valid JSON
        errors = list(validator.iter_errors(doc))
        assert not errors, f"{text!r}: {errors[0].message}"
        distinct.add(text)
    assert len(distinct) > 5, distinct  # the walk explores the language
    for text in invalid:
        by_design = text.startswith(NOT_IN_GRAMMAR)
        text = text.lstrip(NOT_IN_GRAMMAR)
        assert not g.matches(text), text
        # the hand-written cases really are invalid (or not JSON at all)
        try:
            doc = json.loads(text)
        except json.JSONDecodeError:
            continue
        if not by_design:
            assert list(validator.iter_errors(doc)), text


def test_valid_grocery_order_matches():
    g = ember.Grammar.from_json_schema(GROCERY)
    assert g.matches('{"action": "order", "items": [{"name": "milk", "quantity": 2, "unit": "l"}]}')
    assert g.matches('{\n  "action": "cancel",\n  "items": [{"name": "日本茶", "quantity": 99}]\n}')


def test_integer_bounds_exhaustive():
    schema = {"type": "integer", "minimum": -37, "exclusiveMaximum": 250}
    g = ember.Grammar.from_json_schema(schema)
    for v in range(-400, 400):
        assert g.matches(str(v)) == (-37 <= v < 250), v


@pytest.mark.parametrize(
    "schema, keyword, path, code",
    [
        ({"type": "object", "properties": {"items": {"patternProperties": {"^x": {}}}}}, "patternProperties",
         "/properties/items", "unsupported"),
        ({"type": "array", "uniqueItems": True}, "uniqueItems", "", "unsupported"),
        ({"type": "string", "format": "email"}, "format", "", "unsupported"),
        ({"type": "number", "maximum": 3}, "maximum", "", "unsupported"),
        ({"anyOf": [{"type": "string"}, {"not": {"type": "null"}}]}, "not", "/anyOf/1", "unsupported"),
        ({"$ref": "#/$defs/nope"}, "$ref", "", "invalid_argument"),
        ({"type": "integer", "minimum": 3, "maximum": 1}, "minimum", "", "invalid_argument"),
        ({"enum": []}, "enum", "", "invalid_argument"),
    ],
)
def test_schema_errors(schema, keyword, path, code):
    with pytest.raises(ember.SchemaError) as info:
        ember.Grammar.from_json_schema(schema)
    assert info.value.keyword == keyword
    assert info.value.path == path
    assert info.value.code == code
    assert keyword in str(info.value)
    assert isinstance(info.value, ValueError)


def test_not_json():
    with pytest.raises(ember.SchemaError) as info:
        ember.Grammar.from_json_schema("{not json")
    assert info.value.keyword == ""
    assert info.value.path == ""


def test_json_object_mode():
    g = ember.Grammar.json_object()
    assert g.matches('{"a": [1, {"b": null}]}')
    assert not g.matches("[1]")
    for seed in range(20):
        assert isinstance(json.loads(g.random_string(seed, 1024)), dict)
