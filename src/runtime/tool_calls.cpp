// Tool calls at generation time: which format a template uses, the grammar
// that makes a reply a valid use of the tools, and the calls parsed back out of
// the reply (the rendering side is src/tokenizer/chat_tools.cpp).
#include "ember/tool_calls.hpp"

#include <fmt/format.h>

#include <string>
#include <vector>

#include "ember/error.hpp"
#include "runtime/grammar/json_schema.hpp"
#include "tokenizer/chat_tools_impl.hpp"

namespace ember {
namespace {

using tools_detail::Json;
using tools_detail::py_json_dumps;

bool has(std::string_view hay, std::string_view needle) { return hay.find(needle) != std::string_view::npos; }

[[noreturn]] void invalid(ToolFormat f, const std::string& what) {
    throw Error(ErrorCode::InvalidArgument, fmt::format("tool format {}: {}", tool_format_name(f), what));
}

// ---- the constraint ---------------------------------------------------------------------------

// White space the models write between JSON tokens and around the call blocks
// (bounded, so that a constrained model cannot stall in white space); JSON strings
// whose \u escapes are never surrogates (a lone half would not parse back).
constexpr const char* kRules =
    "tc-ws ::= [ \\t\\n]{0,8}\n"
    "tc-string ::= \"\\\"\" ( [^\"\\\\\\x00-\\x1f] | \"\\\\\" ( [\"\\\\/bfnrt] | \"u\" ( [0-9a-cA-CefEF] [0-9a-fA-F]{3} | [dD] [0-7] [0-9a-fA-F]{2} ) ) )* \"\\\"\"\n";
// The generic format is ember's own: one line of JSON as json.dumps writes it (a
// space after ':' and ','), which costs small models the fewest tokens.
constexpr const char* kGenericRules =
    "tc-ws ::= \" \"?\n"
    "tc-string ::= \"\\\"\" ( [^\"\\\\\\x00-\\x1f] | \"\\\\\" ( [\"\\\\/bfnrt] | \"u\" ( [0-9a-cA-CefEF] [0-9a-fA-F]{3} | [dD] [0-7] [0-9a-fA-F]{2} ) ) )* \"\\\"\"\n";

// The JSON Schema rules' white space made compact as kGenericRules's (a space at most).
void compact_space(std::string& rules, std::string_view prefix) {
    const std::string from = std::string(prefix) + "space ::= | \" \" | \"\\n\" [ \\t]{0,20}";
    const std::string to = std::string(prefix) + "space ::= | \" \"";
    for (size_t at = rules.find(from); at != std::string::npos; at = rules.find(from, at + to.size()))
        rules.replace(at, from.size(), to);
}

struct Opening {
    std::string gbnf;              // what the grammar writes for it ("" when it is the trigger token)
    std::optional<int32_t> token;  // the control token, when it is one
};

// The grammar of the calls of one format: `call` rules for the allowed tools,
// their arguments' rules, and the format's framing.
struct Builder {
    ToolFormat f;
    std::vector<const ToolDef*> allowed;
    std::string rules;

    // One alternative per allowed tool: "NAME" ws , ws "KEY" ws : ws ARGS
    std::string name_and_args(std::string_view args_key) {
        std::string alts;
        for (size_t i = 0; i < allowed.size(); ++i) {
            const ToolDef& t = *allowed[i];
            const std::string prefix = fmt::format("tc-args{}-", i);
            std::string value;
            if (t.parameters.empty()) {
                value = "\"{\" tc-ws \"}\"";
            } else {
                std::string r = grammar::json_schema_rules(t.parameters, prefix);
                if (f == ToolFormat::Generic) compact_space(r, prefix);
                rules += r;
                value = prefix + "value";
            }
            if (!alts.empty()) alts += " | ";
            // Tool names are [A-Za-z0-9_-]: nothing to escape in a GBNF literal.
            alts += fmt::format("\"\\\"{}\\\"\" tc-ws \",\" tc-ws \"\\\"{}\\\"\" tc-ws \":\" tc-ws {}", t.name,
                                args_key, value);
        }
        return "( " + alts + " )";
    }
};

bool valid_name(std::string_view n) {
    if (n.empty() || n.size() > 64) return false;
    for (char c : n)
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-'))
            return false;
    return true;
}

// A control token of the vocabulary with exactly this text, if there is one.
std::optional<int32_t> control_token(const Tokenizer* tok, std::string_view text) {
    if (tok == nullptr) return std::nullopt;
    const auto id = tok->find(text);
    if (!id || tok->type(*id) != TokenType::Control) return std::nullopt;
    return static_cast<int32_t>(*id);
}

// ---- parsing --------------------------------------------------------------------------------------

bool is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

std::string_view trim_ws(std::string_view s) {
    while (!s.empty() && is_ws(s.front())) s.remove_prefix(1);
    while (!s.empty() && is_ws(s.back())) s.remove_suffix(1);
    return s;
}

// A call object {"name": ..., KEY: {...}} (KEY "arguments", or "parameters" for
// Llama 3.1) -> ToolCall; nullopt when it is not one. Arguments given as a string
// holding a JSON object (some models write that) are accepted too.
std::optional<ToolCall> to_call(const Json& obj, std::initializer_list<const char*> keys, bool want_id) {
    if (!obj.is_object() || !obj.contains("name") || !obj["name"].is_string()) return std::nullopt;
    ToolCall c;
    c.name = obj["name"].get<std::string>();
    if (!valid_name(c.name)) return std::nullopt;
    const Json* args = nullptr;
    for (const char* k : keys)
        if (obj.contains(k)) args = &obj[k];
    if (args == nullptr) return std::nullopt;
    Json parsed;
    if (args->is_string()) {
        if (!tools_detail::parse_json(args->get_ref<const std::string&>(), parsed)) return std::nullopt;
        args = &parsed;
    }
    if (!args->is_object()) return std::nullopt;
    c.arguments = py_json_dumps(*args);
    if (want_id && obj.contains("id") && obj["id"].is_string()) c.id = obj["id"].get<std::string>();
    return c;
}

// Content pieces joined: each trimmed of the white space next to a call.
struct ContentBuilder {
    std::string out;
    void add(std::string_view piece) {
        piece = trim_ws(piece);
        if (piece.empty()) return;
        if (!out.empty()) out += "\n";
        out += piece;
    }
};

ParsedReply parse_hermes(std::string_view text) {
    constexpr std::string_view kOpen = "<tool_call>", kClose = "</tool_call>";
    ParsedReply r;
    ContentBuilder content;
    size_t pos = 0, plain_from = 0;
    int unterminated = 0;  // objects that never close cost a scan to the end each: a few are enough
    auto skip_ws = [&](size_t i) {
        while (i < text.size() && (text[i] == ' ' || text[i] == '\t' || text[i] == '\n' || text[i] == '\r')) ++i;
        return i;
    };
    while ((pos = text.find(kOpen, pos)) != std::string_view::npos) {
        const size_t body = pos + kOpen.size();
        // the call's object ends where its braces balance (a string argument may hold "</tool_call>")
        const size_t obj = skip_ws(body);
        size_t n = 0;
        if (obj < text.size() && text[obj] == '{' && unterminated < 16) {
            n = tools_detail::json_extent(text.substr(obj));
            if (n == 0) ++unterminated;
        }
        Json parsed;
        std::optional<ToolCall> call;
        if (n > 0 && tools_detail::parse_json(text.substr(obj, n), parsed)) call = to_call(parsed, {"arguments"}, false);
        if (!call) {
            pos = body;
            continue;
        }
        content.add(text.substr(plain_from, pos - plain_from));
        r.tool_calls.push_back(std::move(*call));
        // then the closing tag (a reply cut at EOS may lack it)
        size_t after = skip_ws(obj + n);
        if (text.substr(after, kClose.size()) == kClose) after += kClose.size();
        else after = obj + n;
        plain_from = pos = after;
    }
    content.add(text.substr(plain_from));
    r.content = std::move(content.out);
    return r;
}

ParsedReply parse_llama31(std::string_view text) {
    ParsedReply r;
    ContentBuilder content;
    size_t pos = 0, plain_from = 0;
    while ((pos = text.find('{', pos)) != std::string_view::npos) {
        const size_t n = tools_detail::json_extent(text.substr(pos));
        Json obj;
        std::optional<ToolCall> call;
        if (n > 0 && tools_detail::parse_json(text.substr(pos, n), obj))
            call = to_call(obj, {"parameters", "arguments"}, false);
        if (!call) {
            ++pos;
            continue;
        }
        std::string_view before = text.substr(plain_from, pos - plain_from);
        before = trim_ws(before);
        constexpr std::string_view kPythonTag = "<|python_tag|>";
        if (before.ends_with(kPythonTag)) before.remove_suffix(kPythonTag.size());
        // Several calls may be separated by ';'.
        if (!r.tool_calls.empty() && before == ";") before = {};
        content.add(before);
        r.tool_calls.push_back(std::move(*call));
        plain_from = pos = pos + n;
    }
    content.add(text.substr(plain_from));
    r.content = std::move(content.out);
    return r;
}

ParsedReply parse_mistral(std::string_view text) {
    constexpr std::string_view kOpen = "[TOOL_CALLS]";
    ParsedReply r;
    ContentBuilder content;
    size_t pos = 0, plain_from = 0;
    while ((pos = text.find(kOpen, pos)) != std::string_view::npos) {
        size_t start = pos + kOpen.size();
        while (start < text.size() && is_ws(text[start])) ++start;
        const size_t n = tools_detail::json_extent(text.substr(start));
        Json arr;
        std::vector<ToolCall> calls;
        bool ok = n > 0 && tools_detail::parse_json(text.substr(start, n), arr) && arr.is_array() && !arr.empty();
        if (ok) {
            for (const Json& e : arr) {
                auto c = to_call(e, {"arguments"}, true);
                if (!c) {
                    ok = false;
                    break;
                }
                calls.push_back(std::move(*c));
            }
        }
        if (!ok) {
            pos = start;
            continue;
        }
        content.add(text.substr(plain_from, pos - plain_from));
        for (ToolCall& c : calls) r.tool_calls.push_back(std::move(c));
        plain_from = pos = start + n;
    }
    content.add(text.substr(plain_from));
    r.content = std::move(content.out);
    return r;
}

// The text of a {"response": "..." reply that was cut before its end (max_tokens,
// a full context): the string's characters so far, unescaped; nullopt when the
// text is not such a beginning.
std::optional<std::string> cut_response(std::string_view t) {
    auto skip_ws = [&](size_t i) {
        while (i < t.size() && (t[i] == ' ' || t[i] == '\t' || t[i] == '\n' || t[i] == '\r')) ++i;
        return i;
    };
    size_t i = skip_ws(0);
    if (i >= t.size() || t[i] != '{') return std::nullopt;
    i = skip_ws(i + 1);
    static constexpr std::string_view kKey = "\"response\"";
    if (t.substr(i, kKey.size()) != kKey) return std::nullopt;
    i = skip_ws(i + kKey.size());
    if (i >= t.size() || t[i] != ':') return std::nullopt;
    i = skip_ws(i + 1);
    if (i >= t.size() || t[i] != '"') return std::nullopt;
    std::string out;
    for (++i; i < t.size(); ++i) {
        const char c = t[i];
        if (c == '"') return std::nullopt;  // the string ended: not a cut reply
        if (c != '\\') {
            out += c;
            continue;
        }
        if (i + 1 >= t.size()) break;
        const char e = t[++i];
        switch (e) {
            case 'n': out += '\n'; break;
            case 't': out += '\t'; break;
            case 'r': out += '\r'; break;
            case 'b': out += '\b'; break;
            case 'f': out += '\f'; break;
            case 'u': {
                if (i + 4 >= t.size()) return out;
                Json j;
                // one escaped code unit (a lone surrogate half becomes U+FFFD)
                if (tools_detail::parse_json("\"" + std::string(t.substr(i - 1, 6)) + "\"", j) && j.is_string())
                    out += j.get<std::string>();
                else
                    out += "\xEF\xBF\xBD";
                i += 4;
                break;
            }
            default: out += e;
        }
    }
    return out;
}

ParsedReply parse_generic(std::string_view text) {
    ParsedReply r;
    Json obj;
    if (!tools_detail::parse_json(trim_ws(text), obj) || !obj.is_object()) {
        // a reply cut inside its response string still says something: keep that text
        if (std::optional<std::string> partial = cut_response(text)) r.content = std::move(*partial);
        else r.content = std::string(trim_ws(text));
        return r;
    }
    std::vector<ToolCall> calls;
    bool ok = true;
    if (obj.contains("tool_calls")) {
        const Json& arr = obj["tool_calls"];
        ok = arr.is_array();
        if (ok) {
            for (const Json& e : arr) {
                auto c = to_call(e, {"arguments"}, false);
                if (!c) {
                    ok = false;
                    break;
                }
                calls.push_back(std::move(*c));
            }
        }
    }
    const bool has_response = obj.contains("response") && obj["response"].is_string();
    if (!ok || (!has_response && !obj.contains("tool_calls"))) {
        r.content = std::string(trim_ws(text));
        return r;
    }
    if (has_response) r.content = obj["response"].get<std::string>();
    r.tool_calls = std::move(calls);
    return r;
}

}  // namespace

const char* tool_format_name(ToolFormat f) noexcept {
    switch (f) {
        case ToolFormat::Hermes: return "hermes";
        case ToolFormat::Llama31: return "llama3.1";
        case ToolFormat::MistralNemo: return "mistral-nemo";
        case ToolFormat::Generic: return "generic";
    }
    return "unknown";
}

ToolFormat tool_format_for(std::string_view t) noexcept {
    const std::optional<ChatFormat> base = detect_chat_format(t);
    if (!base) return ToolFormat::Generic;
    switch (*base) {
        case ChatFormat::ChatML:
        case ChatFormat::Qwen2:
        case ChatFormat::Qwen25:
        case ChatFormat::SmolLM2:
            // Qwen 2.5 and Hermes 2 Pro / 3: calls in <tool_call> blocks, tools listed in <tools>.
            return has(t, "<tool_call>") && has(t, "<tools>") && has(t, "tools") ? ToolFormat::Hermes
                                                                                 : ToolFormat::Generic;
        case ChatFormat::Llama31:
            return has(t, "dictionary of argument name and its value") ? ToolFormat::Llama31 : ToolFormat::Generic;
        case ChatFormat::MistralV3Tekken:
            return has(t, "[TOOL_CALLS]") && has(t, "[AVAILABLE_TOOLS]") ? ToolFormat::MistralNemo
                                                                         : ToolFormat::Generic;
        default: return ToolFormat::Generic;
    }
}

Constraint tool_call_constraint(ToolFormat f, std::span<const ToolDef> tools, const ToolChoice& choice,
                                bool parallel_tool_calls, const Tokenizer* tokenizer) {
    if (choice.kind == ToolChoice::None) {
        // the generic format's replies are JSON objects: a text reply is {"response": "..."}
        if (f != ToolFormat::Generic || tools.empty()) return {};
        Constraint c;
        c.grammar = Grammar::parse(std::string("root ::= \"{\" tc-ws \"\\\"response\\\"\" tc-ws \":\" tc-ws tc-string "
                                               "tc-ws \"}\"\n") + kGenericRules);
        return c;
    }
    if (tools.empty()) {
        if (choice.kind == ToolChoice::Auto) return {};  // nothing to call: free text
        invalid(f, "tool_choice requires a tool call, but no tools were given");
    }
    Builder b{f, {}, f == ToolFormat::Generic ? kGenericRules : kRules};
    for (size_t i = 0; i < tools.size(); ++i) {
        if (!valid_name(tools[i].name))
            invalid(f, fmt::format("tool {} has no valid name (1 to 64 of A-Z a-z 0-9 _ -)", i));
        if (choice.kind != ToolChoice::Function || tools[i].name == choice.name) b.allowed.push_back(&tools[i]);
    }
    if (b.allowed.empty())
        invalid(f, fmt::format("tool_choice names the function \"{}\", which is not among the tools",
                               choice.name.substr(0, 64)));
    const bool lazy = choice.kind == ToolChoice::Auto && f != ToolFormat::Generic;
    // Further calls after the first: any number, or none when parallel calls are off.
    const auto more_calls = [&](std::string_view sep) {
        return parallel_tool_calls ? fmt::format(" ( {} tc-call )*", sep) : std::string();
    };
    Constraint c;
    std::string root;
    switch (f) {
        case ToolFormat::Hermes: {
            b.rules += "tc-call ::= tc-ws \"{\" tc-ws \"\\\"name\\\"\" tc-ws \":\" tc-ws " +
                       b.name_and_args("arguments") + " tc-ws \"}\" tc-ws \"</tool_call>\"\n";
            // <tool_call> is a control token in some Qwen vocabularies: then it is the trigger and,
            // inside the grammar, a token reference; otherwise text.
            const std::optional<int32_t> tok = control_token(tokenizer, "<tool_call>");
            const std::string open = tok ? fmt::format("<[{}]>", *tok) : "\"<tool_call>\"";
            const std::string more = more_calls("tc-ws " + open);
            if (lazy && tok) {
                c.trigger_tokens.push_back(*tok);
                root = "tc-call" + more;
            } else {
                if (lazy) c.trigger_words.push_back("<tool_call>");
                root = open + " tc-call" + more;
            }
            break;
        }
        case ToolFormat::Llama31: {
            b.rules += "tc-call ::= \"{\" tc-ws \"\\\"name\\\"\" tc-ws \":\" tc-ws " + b.name_and_args("parameters") +
                       " tc-ws \"}\"\n";
            if (lazy) c.trigger_words.push_back("{\"name\"");
            root = "tc-call" + more_calls("tc-ws \";\" tc-ws");
            break;
        }
        case ToolFormat::MistralNemo: {
            const std::optional<int32_t> tok = control_token(tokenizer, "[TOOL_CALLS]");
            if (!tok)
                invalid(f, tokenizer ? "the model's vocabulary has no [TOOL_CALLS] control token; use "
                                       "ToolFormat::Generic for this model"
                                     : "the constraint needs the model's tokenizer (to find the [TOOL_CALLS] "
                                       "token); pass it");
            b.rules += "tc-call ::= \"{\" tc-ws \"\\\"name\\\"\" tc-ws \":\" tc-ws " + b.name_and_args("arguments") +
                       " tc-ws \",\" tc-ws \"\\\"id\\\"\" tc-ws \":\" tc-ws \"\\\"\" [a-zA-Z0-9]{9} \"\\\"\" tc-ws "
                       "\"}\"\n";
            const std::string array = "\"[\" tc-ws tc-call" + more_calls("tc-ws \",\" tc-ws") + " tc-ws \"]\"";
            if (lazy) {
                c.trigger_tokens.push_back(*tok);
                root = array;
            } else {
                root = fmt::format("<[{}]> {}", *tok, array);
            }
            break;
        }
        case ToolFormat::Generic: {
            b.rules += "tc-call ::= \"{\" tc-ws \"\\\"name\\\"\" tc-ws \":\" tc-ws " + b.name_and_args("arguments") +
                       " tc-ws \"}\"\n";
            root = "\"{\" tc-ws \"\\\"tool_calls\\\"\" tc-ws \":\" tc-ws \"[\" tc-ws tc-call" +
                   more_calls("tc-ws \",\" tc-ws") + " tc-ws \"]\" tc-ws \"}\"";
            if (choice.kind == ToolChoice::Auto)
                root += " | \"{\" tc-ws \"\\\"response\\\"\" tc-ws \":\" tc-ws tc-string tc-ws \"}\"";
            break;
        }
        default: invalid(f, "not a ToolFormat value");
    }
    c.grammar = Grammar::parse("root ::= " + root + "\n" + b.rules);
    return c;
}

ParsedReply parse_tool_calls(ToolFormat f, std::string_view text) {
    switch (f) {
        case ToolFormat::Hermes: return parse_hermes(text);
        case ToolFormat::Llama31: return parse_llama31(text);
        case ToolFormat::MistralNemo: return parse_mistral(text);
        case ToolFormat::Generic: return parse_generic(text);
    }
    return {std::string(text), {}};
}

}  // namespace ember
