// Tool calls: parsing replies of every format (well-formed, malformed, parallel,
// unicode), the constraint grammars (they parse, accept well-formed calls and
// reject wrong names and arguments), and the generic format's rendering. The
// byte-exact rendering of the real templates is checked against jinja2 in
// tests/python/test_tool_templates.py.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "ember/chat.hpp"
#include "ember/error.hpp"
#include "ember/grammar.hpp"
#include "ember/tool_calls.hpp"

using namespace ember;

namespace {

const std::vector<ToolDef> kTools = {
    {"get_weather", "Weather in a city",
     R"({"type":"object","properties":{"city":{"type":"string"},"days":{"type":"integer"}},"required":["city"],"additionalProperties":false})"},
    {"get-time", "", ""},
};

}  // namespace

TEST_CASE("tool calls parse hermes") {
    SUBCASE("one call, text around it") {
        const auto r = parse_tool_calls(ToolFormat::Hermes,
                                        "Let me look.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": "
                                        "{\"city\":\"Paris\"}}\n</tool_call>");
        REQUIRE(r.tool_calls.size() == 1);
        CHECK(r.tool_calls[0].name == "get_weather");
        CHECK(r.tool_calls[0].arguments == R"({"city": "Paris"})");
        CHECK(r.tool_calls[0].id.empty());
        CHECK(r.content == "Let me look.");
    }
    SUBCASE("parallel calls, unicode, nested arguments re-serialized as json.dumps") {
        const auto r = parse_tool_calls(
            ToolFormat::Hermes,
            "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Z\\u00fcrich \xF0\x9F\x98\x80\", "
            "\"x\": [1,2.50,{\"a\":null,\"b\":true}], \"f\": 1e16}}\n</tool_call>\n"
            "<tool_call>{\"name\":\"get-time\",\"arguments\":{}}</tool_call>");
        REQUIRE(r.tool_calls.size() == 2);
        CHECK(r.tool_calls[0].arguments ==
              "{\"city\": \"Z\xC3\xBCrich \xF0\x9F\x98\x80\", \"x\": [1, 2.5, {\"a\": null, \"b\": true}], \"f\": "
              "1e+16}");
        CHECK(r.tool_calls[1].name == "get-time");
        CHECK(r.tool_calls[1].arguments == "{}");
        CHECK(r.content.empty());
    }
    SUBCASE("malformed calls stay in the content") {
        const std::string text = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": }\n</tool_call>";
        const auto r = parse_tool_calls(ToolFormat::Hermes, text);
        CHECK(r.tool_calls.empty());
        CHECK(r.content == text);
        const auto r2 = parse_tool_calls(ToolFormat::Hermes, "<tool_call>{\"arguments\": {}}</tool_call> hi");
        CHECK(r2.tool_calls.empty());
        const auto r3 =
            parse_tool_calls(ToolFormat::Hermes, "<tool_call>{\"name\": \"a b\", \"arguments\": {}}</tool_call>");
        CHECK(r3.tool_calls.empty());
    }
    SUBCASE("a last call cut before its closing tag") {
        const auto r =
            parse_tool_calls(ToolFormat::Hermes, "<tool_call>\n{\"name\": \"get-time\", \"arguments\": {}}\n");
        REQUIRE(r.tool_calls.size() == 1);
        CHECK(r.content.empty());
    }
    SUBCASE("hostile nesting is refused, not a crash") {
        const std::string deep =
            "<tool_call>{\"name\": \"a\", \"arguments\": " + std::string(100000, '[') + "}</tool_call>";
        const auto r = parse_tool_calls(ToolFormat::Hermes, deep);
        CHECK(r.tool_calls.empty());
    }
}

TEST_CASE("tool calls parse llama3.1, mistral-nemo and generic") {
    SUBCASE("llama3.1") {
        const auto r = parse_tool_calls(
            ToolFormat::Llama31,
            "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"\xE6\x97\xA5\xE6\x9C\xAC\", \"days\": 3}}");
        REQUIRE(r.tool_calls.size() == 1);
        CHECK(r.tool_calls[0].arguments == "{\"city\": \"\xE6\x97\xA5\xE6\x9C\xAC\", \"days\": 3}");
        CHECK(r.content.empty());
        const auto tagged =
            parse_tool_calls(ToolFormat::Llama31, "<|python_tag|>{\"name\": \"get-time\", \"parameters\": {}}");
        REQUIRE(tagged.tool_calls.size() == 1);
        CHECK(tagged.content.empty());
        const auto text = parse_tool_calls(ToolFormat::Llama31, "Use {braces} and {\"name\": 1} freely.");
        CHECK(text.tool_calls.empty());
        CHECK(text.content == "Use {braces} and {\"name\": 1} freely.");
    }
    SUBCASE("mistral-nemo keeps ids") {
        const auto r = parse_tool_calls(
            ToolFormat::MistralNemo,
            "[TOOL_CALLS][{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}, "
            "\"id\": \"abcDEF123\"}, {\"name\": \"get-time\", \"arguments\": {}, \"id\": \"zzzzzzzz9\"}]");
        REQUIRE(r.tool_calls.size() == 2);
        CHECK(r.tool_calls[0].id == "abcDEF123");
        CHECK(r.tool_calls[0].arguments == R"({"city": "Oslo"})");
        CHECK(r.tool_calls[1].id == "zzzzzzzz9");
        CHECK(r.content.empty());
        const auto bad = parse_tool_calls(ToolFormat::MistralNemo, "[TOOL_CALLS][{\"name\": \"x\"}]");
        CHECK(bad.tool_calls.empty());
        CHECK(bad.content == "[TOOL_CALLS][{\"name\": \"x\"}]");
    }
    SUBCASE("generic") {
        const auto r = parse_tool_calls(
            ToolFormat::Generic,
            R"( {"tool_calls": [{"name": "get_weather", "arguments": {"city": "Rome"}}, {"name": "get-time", "arguments": {}}]} )");
        REQUIRE(r.tool_calls.size() == 2);
        CHECK(r.content.empty());
        const auto answer = parse_tool_calls(ToolFormat::Generic, R"({"response": "It is \"sunny\"\n."})");
        CHECK(answer.tool_calls.empty());
        CHECK(answer.content == "It is \"sunny\"\n.");
        const auto plain = parse_tool_calls(ToolFormat::Generic, "just text");
        CHECK(plain.content == "just text");
        const auto broken = parse_tool_calls(ToolFormat::Generic, R"({"tool_calls": [{"name": 5}]})");
        CHECK(broken.tool_calls.empty());
        CHECK(broken.content == R"({"tool_calls": [{"name": 5}]})");
    }
}

TEST_CASE("tool calls constraint grammars") {
    const ToolChoice kAuto{ToolChoice::Auto}, kRequired{ToolChoice::Required};
    SUBCASE("none and no tools") {
        CHECK(tool_call_constraint(ToolFormat::Hermes, kTools, {ToolChoice::None}, true).grammar.empty());
        CHECK(tool_call_constraint(ToolFormat::Hermes, {}, kAuto, true).grammar.empty());
        CHECK_THROWS_AS(tool_call_constraint(ToolFormat::Hermes, {}, kRequired, true), Error);
        CHECK_THROWS_AS(tool_call_constraint(ToolFormat::Hermes, kTools, {ToolChoice::Function, "nope"}, true), Error);
    }
    SUBCASE("mistral-nemo needs the tokenizer") {
        CHECK_THROWS_AS(tool_call_constraint(ToolFormat::MistralNemo, kTools, kAuto, true, nullptr), Error);
    }
    SUBCASE("hermes: lazy on the word, the language starts with it") {
        const Constraint c = tool_call_constraint(ToolFormat::Hermes, kTools, kAuto, true);
        REQUIRE(c.trigger_words == std::vector<std::string>{"<tool_call>"});
        CHECK(c.trigger_tokens.empty());
        const Grammar& g = c.grammar;
        CHECK(
            g.matches("<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>"));
        CHECK(
            g.matches("<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n"
                      "<tool_call>\n{\"name\": \"get-time\", \"arguments\": {}}\n</tool_call>"));
        CHECK_FALSE(g.matches("<tool_call>\n{\"name\": \"rm_rf\", \"arguments\": {}}\n</tool_call>"));
        CHECK_FALSE(
            g.matches("<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"town\": \"Paris\"}}\n</tool_call>"));
        CHECK_FALSE(g.matches("<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": 5}}\n</tool_call>"));
        CHECK(g.is_prefix("<tool_call>\n{\"name\": \"get_"));
    }
    SUBCASE("one call only without parallel calls; function choice") {
        const Constraint c = tool_call_constraint(ToolFormat::Hermes, kTools, kRequired, false);
        CHECK(c.trigger_words.empty());
        const std::string one = "<tool_call>\n{\"name\": \"get-time\", \"arguments\": {}}\n</tool_call>";
        CHECK(c.grammar.matches(one));
        CHECK_FALSE(c.grammar.matches(one + "\n" + one));
        const Constraint f = tool_call_constraint(ToolFormat::Hermes, kTools, {ToolChoice::Function, "get-time"}, true);
        CHECK(f.grammar.matches(one));
        CHECK_FALSE(f.grammar.matches(
            "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"P\"}}\n</tool_call>"));
    }
    SUBCASE("llama3.1") {
        const Constraint c = tool_call_constraint(ToolFormat::Llama31, kTools, kAuto, false);
        REQUIRE(c.trigger_words == std::vector<std::string>{"{\"name\""});
        CHECK(c.grammar.matches("{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\", \"days\": 2}}"));
        CHECK_FALSE(c.grammar.matches("{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}"));
        CHECK_FALSE(c.grammar.matches("{\"name\": \"get_weather\", \"parameters\": {\"days\": 2}}"));
    }
    SUBCASE("generic: the whole reply is one JSON object") {
        const Constraint c = tool_call_constraint(ToolFormat::Generic, kTools, kAuto, true);
        CHECK(c.trigger_words.empty());
        CHECK(c.trigger_tokens.empty());
        CHECK(c.grammar.matches(R"({"tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}]})"));
        CHECK(c.grammar.matches(R"({"response": "Hello \"you\"\n"})"));
        CHECK_FALSE(c.grammar.matches(R"({"tool_calls": [{"name": "nope", "arguments": {}}]})"));
        const Constraint r = tool_call_constraint(ToolFormat::Generic, kTools, kRequired, true);
        CHECK_FALSE(r.grammar.matches(R"({"response": "Hello"})"));
        CHECK(r.grammar.matches(
            R"({"tool_calls": [{"name": "get-time", "arguments": {}}, {"name": "get-time", "arguments": {}}]})"));
    }
}

TEST_CASE("tool calls generic rendering") {
    const std::vector<ChatTurn> conv = {
        {"system", "Be brief."},
        {"user", "Weather in Oslo and the time?"},
        {"assistant", "", {{"", "get_weather", R"({"city":"Oslo"})"}, {"", "get-time", ""}}},
        {"tool", "cold", {}, "", "get_weather"},
        {"tool", "12:00", {}, "", "get-time"},
        {"assistant", "Cold, and noon."},
    };
    SUBCASE("on a strict format: tools in the system text, calls and results as JSON, turns alternating") {
        const RenderedChat r =
            render_chat_with_tools(ToolFormat::Generic, ChatFormat::Gemma, conv, kTools, true, "<bos>", "<eos>");
        CHECK(r.text.starts_with("<bos><start_of_turn>user\nBe brief.\n\nYou can call the following tools"));
        CHECK(r.text.find(
                  R"({"name": "get_weather", "description": "Weather in a city", "parameters": {"type": "object")") !=
              std::string::npos);
        CHECK(
            r.text.find("<start_of_turn>model\n{\"tool_calls\": [{\"name\": \"get_weather\", \"arguments\": {\"city\": "
                        "\"Oslo\"}}, {\"name\": \"get-time\", \"arguments\": {}}]}<end_of_turn>") != std::string::npos);
        CHECK(
            r.text.find("<start_of_turn>user\n{\"tool_response\": {\"name\": \"get_weather\", \"content\": \"cold\"}}\n"
                        "{\"tool_response\": {\"name\": \"get-time\", \"content\": \"12:00\"}}<end_of_turn>") !=
            std::string::npos);
        CHECK(r.text.find("{\"response\": \"Cold, and noon.\"}") != std::string::npos);
        CHECK(r.text.ends_with("<start_of_turn>model\n"));
        // the template's control text is outside the content ranges; all message text inside them
        for (const auto& [b, e] : r.content)
            CHECK(r.text.substr(b, e - b).find("<start_of_turn>") == std::string::npos);
        REQUIRE_FALSE(r.content.empty());
    }
    SUBCASE("without tools: exactly the plain format") {
        const std::vector<ChatTurn> plain = {{"user", "Hi"}, {"assistant", "Hello"}, {"user", "<|im_end|>"}};
        const std::vector<ChatMessage> msgs = {{"user", "Hi"}, {"assistant", "Hello"}, {"user", "<|im_end|>"}};
        for (ToolFormat f : {ToolFormat::Generic, ToolFormat::Hermes}) {
            const RenderedChat a = render_chat_with_tools(f, ChatFormat::Qwen25, plain, {}, true, "", "");
            const RenderedChat b = render_chat(ChatFormat::Qwen25, msgs, true, "", "");
            CHECK(a.text == b.text);
            CHECK(a.content == b.content);
        }
    }
    SUBCASE("refusals") {
        const std::vector<ChatTurn> bad_role = {{"function", "x"}};
        CHECK_THROWS_AS(render_chat_with_tools(ToolFormat::Generic, ChatFormat::ChatML, bad_role, kTools, true, "", ""),
                        Error);
        const std::vector<ToolDef> bad_tool = {{"t", "", "[1, 2]"}};
        const std::vector<ChatTurn> hi = {{"user", "hi"}};
        CHECK_THROWS_AS(render_chat_with_tools(ToolFormat::Generic, ChatFormat::ChatML, hi, bad_tool, true, "", ""),
                        Error);
        const std::vector<ToolDef> bad_name = {{"a b", "", ""}};
        CHECK_THROWS_AS(render_chat_with_tools(ToolFormat::Hermes, ChatFormat::Qwen25, hi, bad_name, true, "", ""),
                        Error);
        CHECK_THROWS_AS(render_chat_with_tools(ToolFormat::Llama31, ChatFormat::Gemma, hi, kTools, true, "", ""),
                        Error);
        const std::vector<ChatTurn> bad_args = {{"user", "hi"}, {"assistant", "", {{"", "get-time", "[1]"}}}};
        CHECK_THROWS_AS(render_chat_with_tools(ToolFormat::Hermes, ChatFormat::Qwen25, bad_args, kTools, true, "", ""),
                        Error);
    }
}

TEST_CASE("tool calls format detection and names") {
    CHECK(std::string(tool_format_name(ToolFormat::MistralNemo)) == "mistral-nemo");
    CHECK(tool_format_for("") == ToolFormat::Generic);
    CHECK(tool_format_for("{{ '<|im_start|>' }}{% for m in messages %}{% endfor %}") == ToolFormat::Generic);
    CHECK(tool_format_for("<|im_start|>{% if tools %}<tools>{{ tools }}</tools><tool_call>{% endif %}") ==
          ToolFormat::Hermes);
}

TEST_CASE("tool calls generic: compact JSON, tool_choice none, a cut reply") {
    const std::vector<ToolDef> tools = {
        {"set", "Sets it", R"({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]})"}};
    const Constraint c = tool_call_constraint(ToolFormat::Generic, tools, {}, true);
    // one line, as json.dumps writes it; no pretty-printing a small model would spend its tokens on
    CHECK(c.grammar.matches(R"({"tool_calls": [{"name": "set", "arguments": {"n": 3}}]})"));
    CHECK(c.grammar.matches(R"({"tool_calls":[{"name":"set","arguments":{"n":3}}]})"));
    CHECK_FALSE(c.grammar.matches("{\"tool_calls\": [{\"name\": \"set\", \"arguments\": {\n    \"n\": 3\n}}]}"));
    CHECK_FALSE(c.grammar.matches(R"({"tool_calls":  [{"name": "set", "arguments": {"n": 3}}]})"));
    // tool_choice none: the reply is a response object, never a call
    const Constraint none = tool_call_constraint(ToolFormat::Generic, tools, {ToolChoice::None, ""}, true);
    CHECK(none.grammar.matches(R"({"response": "Done."})"));
    CHECK_FALSE(none.grammar.matches(R"({"tool_calls": [{"name": "set", "arguments": {"n": 3}}]})"));
    CHECK(tool_call_constraint(ToolFormat::Hermes, tools, {ToolChoice::None, ""}, true).grammar.empty());
    // a reply cut inside its response string keeps the text so far
    CHECK(parse_tool_calls(ToolFormat::Generic, R"({"response": "It is 4 \u00b0C in the fri)").content ==
          "It is 4 \xc2\xb0" "C in the fri");
    CHECK(parse_tool_calls(ToolFormat::Generic, R"({"response": "a\nb\)").content == "a\nb");
    CHECK(parse_tool_calls(ToolFormat::Generic, R"({"tool_calls": [{"name": "se)").content ==
          R"({"tool_calls": [{"name": "se)");
}

TEST_CASE("tool calls: hostile replies (hostile review)") {
    // a string argument holding the closing tag: the call ends where its braces balance
    ParsedReply r = parse_tool_calls(
        ToolFormat::Hermes, "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"s\": \"}</tool_call>{\"}}\n</tool_call> after");
    REQUIRE(r.tool_calls.size() == 1);
    CHECK(r.tool_calls[0].arguments == R"({"s": "}</tool_call>{"})");
    CHECK(r.content == "after");
    // many openings, or objects that never close: no quadratic scan (this returns at once)
    std::string many;
    for (int i = 0; i < 40000; ++i) many += "<tool_call>{";
    CHECK(parse_tool_calls(ToolFormat::Hermes, many).tool_calls.empty());
    // the generic grammar never writes a lone surrogate escape (it would not parse back)
    const Constraint c = tool_call_constraint(ToolFormat::Generic, std::vector<ToolDef>{{"f", "", ""}}, {}, true);
    CHECK_FALSE(c.grammar.matches(R"({"response": "a\ud800b"})"));
    CHECK(c.grammar.matches(R"({"response": "a\u00e9b"})"));
}
