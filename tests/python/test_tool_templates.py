"""Tool calls in the prompt: ember's C++ rendering of conversations with tools
(ember._ember.render_chat_with_tools) must equal, byte for byte, what jinja2
renders with the real chat templates (llama.cpp's models/templates, unpacked by
scripts/fetch-llama-cpp-src), in the environment transformers uses (the one
scripts/make-chat-testdata builds). The templates receive the conversation as
llama.cpp's server passes it: arguments of assistant tool calls as dicts, the
tools in the OpenAI shape. Where the template raises, ember must refuse too.

Also: tool_format_for on the real templates, and parse_tool_calls reading back
the calls a template wrote."""
from __future__ import annotations

import copy
import importlib.machinery
import importlib.util
import json
import os
import sys

import pytest

from conftest import BUILD, ROOT, llama_cpp_vocab_path, resources_required

PKG = BUILD / "python"
if not (PKG / "ember").exists():
    pytest.skip(f"SKIPPED: {PKG}/ember is absent; configure with -DEMBER_PYTHON=ON", allow_module_level=True)
sys.path.insert(0, str(PKG))
from ember import _ember  # noqa: E402

try:
    import jinja2  # noqa: F401
except ImportError:
    if resources_required():
        raise
    pytest.skip("SKIPPED: jinja2 is not installed (.venv/bin/python -m pip install jinja2)", allow_module_level=True)


def _make_env():
    loader = importlib.machinery.SourceFileLoader("make_chat_testdata", str(ROOT / "scripts" / "make-chat-testdata"))
    spec = importlib.util.spec_from_loader("make_chat_testdata", loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod.make_env()


ENV = _make_env()

# file, tool format, the chat format ember renders it on, BOS and EOS texts
TEMPLATES = [
    ("Qwen-Qwen2.5-7B-Instruct.jinja", "hermes", "qwen2.5", "", "<|im_end|>"),
    ("NousResearch-Hermes-3-Llama-3.1-8B-tool_use.jinja", "hermes", "chatml", "<|begin_of_text|>", "<|im_end|>"),
    ("NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use.jinja", "hermes", "chatml", "<|begin_of_text|>", "<|im_end|>"),
    ("meta-llama-Llama-3.1-8B-Instruct.jinja", "llama3.1", "llama3.1", "<|begin_of_text|>", "<|eot_id|>"),
    ("meta-llama-Llama-3.2-3B-Instruct.jinja", "llama3.1", "llama3.1", "<|begin_of_text|>", "<|eot_id|>"),
    ("meta-llama-Llama-3.3-70B-Instruct.jinja", "llama3.1", "llama3.1", "<|begin_of_text|>", "<|eot_id|>"),
    ("mistralai-Mistral-Nemo-Instruct-2407.jinja", "mistral-nemo", "mistral-v3-tekken", "<s>", "</s>"),
]


def fn(name, description, parameters=None):
    f = {"name": name, "description": description}
    if parameters is not None:
        f["parameters"] = parameters
    return {"type": "function", "function": f}


WEATHER = fn("get_weather", "Get the current weather in a city", {
    "type": "object",
    "properties": {"city": {"type": "string", "description": "The city, e.g. Paris"},
                   "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "description": " Unit \n"}},
    "required": ["city"]})
SEARCH = fn("web-search", "Searches the web.\nReturns \"snippets\" and\tlinks; 'quoted'", {
    "type": "object",
    "properties": {"query": {"type": "string"},
                   "max_results": {"type": "integer", "description": 10},
                   "filters": {"type": "array", "items": {"type": "string"}},
                   "options": {"type": "object", "additionalProperties": {"type": "number"}},
                   "either": {"type": ["string", "integer"], "description": "one or the other"},
                   "flag": {"type": "boolean", "default": False}}})
NOARGS = fn("get_time", "")
UNICODE = fn("traduire", "Traduit un texte en français \u2014 \U0001F600", {
    "type": "object", "properties": {"texte": {"type": "string", "description": "Le texte à traduire"}},
    "required": ["texte"]})


def call(id_, name, args):
    return {"id": id_, "type": "function", "function": {"name": name, "arguments": args}}


def tool_result(id_, name, content):
    return {"role": "tool", "tool_call_id": id_, "name": name, "content": content}


U = {"role": "user", "content": "What is the weather in Paris?"}
CALL_PARIS = {"role": "assistant", "content": "",
              "tool_calls": [call("call00001", "get_weather", {"city": "Paris", "unit": "celsius"})]}
RESULT_PARIS = tool_result("call00001", "get_weather", '{"temperature": 21.5, "sky": "clear"}')

# name: (messages, tools); arguments as dicts (strings are JSON text, as OpenAI clients send them)
CONVERSATIONS = {
    "one_user": ([U], [WEATHER]),
    "system_two_tools": ([{"role": "system", "content": "You are a weather bot."}, U], [WEATHER, SEARCH]),
    "call_and_result": ([U, CALL_PARIS, RESULT_PARIS], [WEATHER]),
    "full_round": ([U, CALL_PARIS, RESULT_PARIS, {"role": "assistant", "content": "It is 21.5 °C and clear."},
                    {"role": "user", "content": "And in Lyon?"}], [WEATHER]),
    "parallel_calls": ([{"role": "system", "content": "Be quick."}, U,
                        {"role": "assistant", "content": "",
                         "tool_calls": [call("call00001", "get_weather", {"city": "Paris"}),
                                        call("call00002", "web-search", {"query": "Paris events"})]},
                        tool_result("call00001", "get_weather", "sunny"),
                        tool_result("call00002", "web-search", "a concert")], [WEATHER, SEARCH]),
    "unicode": ([{"role": "user", "content": "Météo à Zürich ? \U0001F600 日本語"},
                 {"role": "assistant", "content": "",
                  "tool_calls": [call("abcDEF123", "traduire", {"texte": "Zürich — «bonjour» \U0001F600 日本"})]},
                 tool_result("abcDEF123", "traduire", "Zurich — «hello»")], [UNICODE, WEATHER]),
    "nested_args": ([U, {"role": "assistant", "content": "",
                         "tool_calls": [call("nested001", "web-search", {
                             "query": "q", "filters": ["a", "b", []], "options": {"x": 1.5, "y": {"z": [True, None]}},
                             "flag": False, "max_results": -3})]}], [SEARCH]),
    "escapes_in_args": ([U, {"role": "assistant", "content": "",
                             "tool_calls": [call("escape001", "web-search", {
                                 "query": "line1\nline2\t\"quoted\" \\ back\u0001\u001f\u007f /slash"})]},
                         tool_result("escape001", "web-search", "got \"it\"\nok")], [SEARCH]),
    "numbers": ([U, {"role": "assistant", "content": "",
                     "tool_calls": [call("numbers01", "web-search", {"options": {
                         "a": 1e16, "b": 1.5, "c": 100.0, "d": 0.0001, "e": 1e-05, "f": -0.0, "g": 123456789012345678,
                         "h": 3.141592653589793, "i": 1e300, "j": 2.5e-300, "k": 0.1, "l": 1234567890123456.0,
                         "m": -17, "n": 0, "o": 1e15}})]}], [SEARCH]),
    "string_arguments": ([U, {"role": "assistant", "content": "",
                              "tool_calls": [call("string001", "get_weather", '{"city":"Oslo","unit":"celsius"}')]}],
                         [WEATHER]),
    "content_and_call": ([U, {"role": "assistant", "content": "Let me check.",
                              "tool_calls": [call("call00001", "get_weather", {"city": "Paris"})]}, RESULT_PARIS],
                         [WEATHER]),
    "no_args_tool": ([{"role": "user", "content": "What time is it?"},
                      {"role": "assistant", "content": "",
                       "tool_calls": [call("time00001", "get_time", {})]},
                      tool_result("time00001", "get_time", "12:00")], [NOARGS, WEATHER]),
    "repeated_user_text": ([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                            {"role": "user", "content": "Hi"}], [WEATHER]),
    "system_whitespace": ([{"role": "system", "content": "  Use tools.\n"},
                           {"role": "user", "content": "\n Weather?  "}], [WEATHER]),
    "ends_with_result": ([{"role": "system", "content": "S"}, U, CALL_PARIS, RESULT_PARIS], [WEATHER]),
    "control_text_in_content": ([{"role": "user", "content": "<|im_start|>system [INST] <tool_call>"}], [WEATHER]),
    "tool_messages_without_tools": ([U, CALL_PARIS, RESULT_PARIS], []),
    # a type the Hermes tool_use template cannot print (its macro recurses until Python's limit): ember refuses
    "null_type_parameter": ([U], [fn("maybe", "d", {"type": "object", "properties": {"x": {"type": "null"}}})]),
}

# Conversations without tools: ember must render them exactly as the plain chat format does.
PLAIN = {
    "plain_user": [{"role": "user", "content": "Hello"}],
    "plain_multi": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": " Hello "}, {"role": "user", "content": "Again"}],
}


def jinja_messages(messages):
    """The conversation as llama.cpp's server gives it to a template: arguments parsed into dicts."""
    out = copy.deepcopy(messages)
    for m in out:
        for c in m.get("tool_calls", []):
            if isinstance(c["function"]["arguments"], str):
                c["function"]["arguments"] = json.loads(c["function"]["arguments"])
    return out


def jinja_tools(tools):
    """The tools as ember passes them: description "" and an empty object schema when absent."""
    out = copy.deepcopy(tools)
    for t in out:
        f = t["function"]
        f.setdefault("description", "")
        f.setdefault("parameters", {"type": "object", "properties": {}})
        t["function"] = {"name": f["name"], "description": f["description"], "parameters": f["parameters"]}
    return out or None


def jinja_render(template, messages, tools, agp, bos, eos):
    """(text, None) or (None, error)."""
    try:
        return template.render(messages=jinja_messages(messages), tools=jinja_tools(tools), add_generation_prompt=agp,
                               bos_token=bos, eos_token=eos, documents=None), None
    except (jinja2.exceptions.TemplateError, TypeError, RecursionError) as e:
        return None, f"{type(e).__name__}: {e}"


@pytest.fixture(scope="module")
def templates():
    d = llama_cpp_vocab_path("templates")
    return {name: ENV.from_string((d / name).read_text(encoding="utf-8")) for name, *_ in TEMPLATES}


def cases():
    for file, fmt, base, bos, eos in TEMPLATES:
        for conv in CONVERSATIONS:
            yield pytest.param(file, fmt, base, bos, eos, conv, id=f"{file.split('.jinja')[0]}-{conv}")


@pytest.mark.parametrize("file,fmt,base,bos,eos,conv", list(cases()))
@pytest.mark.parametrize("agp", [False, True], ids=["nogen", "gen"])
def test_render_matches_jinja(templates, file, fmt, base, bos, eos, conv, agp):
    messages, tools = CONVERSATIONS[conv]
    if not tools and "tool_use" in file:
        pytest.skip("the Hermes tool_use templates cannot render without tools (they iterate `tools`)")
    want, err = jinja_render(templates[file], messages, tools, agp, bos, eos)
    if err is not None:
        with pytest.raises(ValueError):
            _ember.render_chat_with_tools(fmt, base, messages, tools, agp, bos, eos)
        return
    got = _ember.render_chat_with_tools(fmt, base, messages, tools, agp, bos, eos)
    assert got == want


@pytest.mark.parametrize("file,fmt,base,bos,eos", TEMPLATES, ids=[t[0] for t in TEMPLATES])
@pytest.mark.parametrize("conv", PLAIN)
def test_no_tools_is_the_plain_format(templates, file, fmt, base, bos, eos, conv):
    messages = PLAIN[conv]
    got = _ember.render_chat_with_tools(fmt, base, messages, [], True, bos, eos)
    if "tool_use" not in file:  # the tool_use templates need tools; their models' plain template is ChatML
        want, err = jinja_render(templates[file], messages, [], True, bos, eos)
        assert err is None and got == want
    # the same as the chat format itself renders it (a Generic rendering without tools adds nothing either)
    assert got == _ember.render_chat_with_tools("generic", base, messages, [], True, bos, eos)


def test_every_template_has_enough_conversations():
    assert len(CONVERSATIONS) >= 15


@pytest.mark.parametrize("file,fmt", [(t[0], t[1]) for t in TEMPLATES] + [
    ("HuggingFaceTB-SmolLM3-3B.jinja", "generic"), ("google-gemma-2-2b-it.jinja", "generic"),
    ("microsoft-Phi-3.5-mini-instruct.jinja", "generic"), ("deepseek-ai-DeepSeek-R1-Distill-Llama-8B.jinja", "generic")])
def test_tool_format_for(file, fmt):
    text = (llama_cpp_vocab_path("templates") / file).read_text(encoding="utf-8")
    assert _ember.tool_format_for(text) == fmt


@pytest.mark.parametrize("file,fmt,base,bos,eos", TEMPLATES, ids=[t[0] for t in TEMPLATES])
@pytest.mark.parametrize("conv", ["nested_args", "unicode", "numbers", "escapes_in_args"])
def test_parse_reads_back_what_the_template_wrote(templates, file, fmt, base, bos, eos, conv):
    """The text a template writes for an assistant's call, parsed: the same calls, arguments compact."""
    messages, tools = CONVERSATIONS[conv]
    upto = next(i for i, m in enumerate(messages) if m.get("tool_calls")) + 1
    before, _ = jinja_render(templates[file], messages[:upto - 1], tools, False, bos, eos)
    full, err = jinja_render(templates[file], messages[:upto], tools, False, bos, eos)
    assert err is None and before is not None
    # the text after what the two renderings share: the assistant's turn (its header and end are text to parse around)
    reply = full[len(os.path.commonprefix([before, full])):]
    content, calls = _ember.parse_tool_calls(fmt, reply)
    want = messages[upto - 1]["tool_calls"]
    assert [c["name"] for c in calls] == [w["function"]["name"] for w in want]
    for c, w in zip(calls, want):
        args = w["function"]["arguments"]
        assert json.loads(c["arguments"]) == (json.loads(args) if isinstance(args, str) else args)
        assert c["arguments"] == json.dumps(json.loads(c["arguments"]), ensure_ascii=False)
        if fmt == "mistral-nemo":
            assert c["id"] == w["id"]


def test_generic_rendering():
    messages, tools = CONVERSATIONS["full_round"]
    text = _ember.render_chat_with_tools("generic", "gemma", messages, tools, True, "<bos>", "<eos>")
    assert text.startswith("<bos><start_of_turn>user\n")
    assert '"name": "get_weather"' in text and '"tool_calls": [{"name": "get_weather"' in text
    assert '{"tool_response": {"name": "get_weather", "content": "{\\"temperature\\": 21.5' in text
    assert text.endswith("<start_of_turn>model\n")
    # the plain chat format, with the messages rewritten: no new control text
    assert text.count("<start_of_turn>") == 6


def test_constraint_shape():
    tools = [WEATHER, SEARCH]
    auto = _ember.tool_call_constraint("hermes", tools, "auto", True)
    assert auto["trigger_words"] == ["<tool_call>"] and auto["trigger_tokens"] == []
    assert "get_weather" in auto["gbnf"] and "web-search" in auto["gbnf"]
    req = _ember.tool_call_constraint("llama3.1", tools, {"type": "function", "function": {"name": "web-search"}},
                                      False)
    assert req["trigger_words"] == [] and "get_weather" not in req["gbnf"]
    assert _ember.tool_call_constraint("hermes", tools, "none", True)["gbnf"] == ""
    # the generic format's replies are all JSON: with tool_choice none, a response object
    assert _ember.tool_call_constraint("generic", tools, "none", True)["gbnf"].startswith('root ::= "{" tc-ws "\\"response')
    with pytest.raises(ValueError):
        _ember.tool_call_constraint("mistral-nemo", tools, "auto", True)  # needs the tokenizer
