// Tools in the prompt: render_chat_with_tools writes a conversation with tools,
// tool calls and tool results exactly as the model's Jinja template does
// (Qwen 2.5 / Hermes 2 Pro / Hermes 3, Llama 3.1-3.3, Mistral Nemo), or, for every
// other template, in ember's generic JSON convention on top of the plain chat
// format. tests/python/test_tool_templates.py compares the output with jinja2
// running the real templates.
//
// The templates see the conversation in the OpenAI shape llama.cpp's server
// passes: messages {role, content} plus tool_calls (assistant, only when it has
// calls; each {id, type: "function", function: {name, arguments: the arguments
// parsed into a dict}}) and tool_call_id/name (tool results); tools
// [{type: "function", function: {name, description, parameters}}]. What a
// template writes with `tojson` is Python's json.dumps (ensure_ascii=False),
// reproduced by py_json_dumps.
#include <fmt/format.h>

#include <array>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "ember/error.hpp"
#include "ember/tool_calls.hpp"
#include "tokenizer/chat_tools_impl.hpp"

namespace ember {
namespace tools_detail {
namespace {

void dump_string(std::string& out, const std::string& s) {
    out += '"';
    for (char ch : s) {
        const auto c = static_cast<unsigned char>(ch);
        switch (c) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\n': out += "\\n"; break;
            case '\r': out += "\\r"; break;
            case '\t': out += "\\t"; break;
            case '\b': out += "\\b"; break;
            case '\f': out += "\\f"; break;
            default:
                if (c < 0x20)
                    out += fmt::format("\\u{:04x}", c);  // Python writes these in lower case
                else
                    out += ch;  // ensure_ascii=False: UTF-8 as is
        }
    }
    out += '"';
}

// repr(float): the shortest digits that read back to the same double, in fixed
// notation when the decimal exponent is in [-4, 16), else d.ddde+XX.
void dump_float(std::string& out, double d) {
    if (std::isnan(d)) {
        out += "NaN";
        return;
    }
    if (std::isinf(d)) {
        out += d < 0 ? "-Infinity" : "Infinity";
        return;
    }
    std::array<char, 64> buf{};
    const auto r = std::to_chars(buf.data(), buf.data() + buf.size(), d, std::chars_format::scientific);
    const std::string_view sci(buf.data(), static_cast<size_t>(r.ptr - buf.data()));  // -d.ddde+XX
    const size_t e_pos = sci.find('e');
    std::string_view mant = sci.substr(0, e_pos);
    int exp10 = 0;
    std::from_chars(sci.data() + e_pos + 1 + (sci[e_pos + 1] == '+' ? 1 : 0), sci.data() + sci.size(), exp10);
    if (!mant.empty() && mant[0] == '-') {
        out += '-';
        mant.remove_prefix(1);
    }
    std::string digits;
    for (char c : mant)
        if (c != '.') digits += c;
    if (exp10 < -4 || exp10 >= 16) {
        out += digits[0];
        if (digits.size() > 1) {
            out += '.';
            out.append(digits, 1);
        }
        out += fmt::format("e{}{:02d}", exp10 < 0 ? '-' : '+', std::abs(exp10));
        return;
    }
    if (exp10 < 0) {
        out += "0.";
        out.append(static_cast<size_t>(-exp10 - 1), '0');
        out += digits;
        return;
    }
    const auto int_len = static_cast<size_t>(exp10) + 1;
    if (digits.size() <= int_len) {
        out += digits;
        out.append(int_len - digits.size(), '0');
        out += ".0";
    } else {
        out.append(digits, 0, int_len);
        out += '.';
        out.append(digits, int_len);
    }
}

void dump(std::string& out, const Json& v, int indent, int level) {
    const auto newline = [&](int lvl) {
        out += '\n';
        out.append(static_cast<size_t>(indent * lvl), ' ');
    };
    switch (v.type()) {
        case Json::value_t::null: out += "null"; return;
        case Json::value_t::boolean: out += v.get<bool>() ? "true" : "false"; return;
        case Json::value_t::number_integer: out += std::to_string(v.get<int64_t>()); return;
        case Json::value_t::number_unsigned: out += std::to_string(v.get<uint64_t>()); return;
        case Json::value_t::number_float: dump_float(out, v.get<double>()); return;
        case Json::value_t::string: dump_string(out, v.get_ref<const std::string&>()); return;
        case Json::value_t::array: {
            if (v.empty()) {
                out += "[]";
                return;
            }
            out += '[';
            bool first = true;
            for (const Json& e : v) {
                if (!first) out += indent < 0 ? ", " : ",";
                if (indent >= 0) newline(level + 1);
                dump(out, e, indent, level + 1);
                first = false;
            }
            if (indent >= 0) newline(level);
            out += ']';
            return;
        }
        case Json::value_t::object: {
            if (v.empty()) {
                out += "{}";
                return;
            }
            out += '{';
            bool first = true;
            for (auto it = v.begin(); it != v.end(); ++it) {
                if (!first) out += indent < 0 ? ", " : ",";
                if (indent >= 0) newline(level + 1);
                dump_string(out, it.key());
                out += ": ";
                dump(out, it.value(), indent, level + 1);
                first = false;
            }
            if (indent >= 0) newline(level);
            out += '}';
            return;
        }
        default: out += "null"; return;  // binary and discarded values never come from parsing
    }
}

// Code points for which Python's str.isspace() is true.
bool is_py_space(uint32_t c) {
    return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
           c == 0x3000;
}

// Bytes of the white-space code point at s[i], 0 if none starts there.
size_t space_len(std::string_view s, size_t i) {
    const auto b = [&](size_t k) { return static_cast<uint8_t>(s[k]); };
    const uint8_t c = b(i);
    const size_t len = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
    if (len == 0 || i + len > s.size()) return 0;
    uint32_t cp = len == 1 ? c : c & (0x7F >> len);
    for (size_t k = 1; k < len; ++k) {
        if ((b(i + k) & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (b(i + k) & 0x3F);
    }
    return is_py_space(cp) ? len : 0;
}

}  // namespace

std::string py_json_dumps(const Json& v, int indent) {
    std::string out;
    dump(out, v, indent, 0);
    return out;
}

size_t json_extent(std::string_view text) {
    if (text.empty() || (text[0] != '{' && text[0] != '[')) return 0;
    int depth = 0;
    bool in_string = false;
    for (size_t i = 0; i < text.size(); ++i) {
        const char c = text[i];
        if (in_string) {
            if (c == '\\')
                ++i;
            else if (c == '"')
                in_string = false;
            continue;
        }
        if (c == '"') {
            in_string = true;
        } else if (c == '{' || c == '[') {
            if (++depth > kMaxJsonDepth) return 0;
        } else if (c == '}' || c == ']') {
            if (--depth == 0) return i + 1;
        }
    }
    return 0;
}

bool parse_json(std::string_view text, Json& out) {
    // Bound the nesting before nlohmann's recursive parser sees the text.
    int depth = 0;
    bool in_string = false;
    for (size_t i = 0; i < text.size(); ++i) {
        const char c = text[i];
        if (in_string) {
            if (c == '\\')
                ++i;
            else if (c == '"')
                in_string = false;
        } else if (c == '"') {
            in_string = true;
        } else if (c == '{' || c == '[') {
            if (++depth > kMaxJsonDepth) return false;
        } else if (c == '}' || c == ']') {
            --depth;
        }
    }
    Json v = Json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
    if (v.is_discarded()) return false;
    out = std::move(v);
    return true;
}

std::string_view py_strip(std::string_view s) {
    size_t begin = 0;
    while (begin < s.size()) {
        const size_t n = space_len(s, begin);
        if (n == 0) break;
        begin += n;
    }
    size_t end = s.size();
    while (end > begin) {
        size_t start = end - 1;
        while (start > begin && end - start < 4 && (static_cast<uint8_t>(s[start]) & 0xC0) == 0x80) --start;
        if (space_len(s, start) != end - start) break;
        end = start;
    }
    return s.substr(begin, end - begin);
}

}  // namespace tools_detail

namespace {

using tools_detail::Json;
using tools_detail::py_json_dumps;
using tools_detail::py_strip;

[[noreturn]] void invalid(ToolFormat f, const std::string& what) {
    throw Error(ErrorCode::InvalidArgument, fmt::format("tool format {}: {}", tool_format_name(f), what));
}

// The prompt and where user-provided text is in it (tool names, descriptions,
// schemas, arguments and results included: none of it may become a control token).
class Out {
public:
    explicit Out(std::string_view start = {}) { r_.text = std::string(start); }
    Out& operator+=(std::string_view template_text) {
        r_.text += template_text;
        return *this;
    }
    void content(std::string_view c) {
        if (c.empty()) return;
        const size_t begin = r_.text.size();
        r_.text += c;
        if (!r_.content.empty() && r_.content.back().second == begin)
            r_.content.back().second = r_.text.size();  // adjacent user text: one range
        else
            r_.content.emplace_back(begin, r_.text.size());
    }
    RenderedChat take() { return std::move(r_); }

private:
    RenderedChat r_;
};

// A message with its calls' arguments parsed (the templates get them as dicts).
struct Call {
    const ToolCall* call;
    Json arguments;
};
struct Msg {
    const ChatTurn* turn;
    std::vector<Call> calls;
    const std::string& role() const { return turn->role; }
    const std::string& content() const { return turn->content; }
};

// A tool as the templates see it: {"type": "function", "function": {name, description, parameters}}.
struct Tool {
    const ToolDef* def;
    Json parameters;
    Json whole;
};

bool valid_tool_name(std::string_view n) {
    if (n.empty() || n.size() > 64) return false;
    for (char c : n)
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-'))
            return false;
    return true;
}

std::string shown(std::string_view s) {
    std::string out;
    for (char c : s.substr(0, 40)) out += c == '\n' ? std::string("\\n") : std::string(1, c);
    return s.size() > 40 ? out + "..." : out;
}

std::vector<Tool> read_tools(ToolFormat f, std::span<const ToolDef> tools) {
    std::vector<Tool> out;
    for (size_t i = 0; i < tools.size(); ++i) {
        const ToolDef& t = tools[i];
        if (!valid_tool_name(t.name))
            invalid(f, fmt::format("tool {} is named \"{}\"; a tool name is 1 to 64 of A-Z a-z 0-9 _ -", i,
                                   shown(t.name)));
        for (size_t k = 0; k < i; ++k)
            if (tools[k].name == t.name) invalid(f, fmt::format("tools {} and {} are both named \"{}\"", k, i, t.name));
        Json params;
        if (t.parameters.empty()) {
            params = Json::object({{"type", "object"}, {"properties", Json::object()}});
        } else if (!tools_detail::parse_json(t.parameters, params) || !params.is_object() ||
                   (params.contains("type") && params["type"] != "object")) {
            invalid(f, fmt::format("tool \"{}\": parameters must be a JSON Schema of an object (e.g. "
                                   "{{\"type\": \"object\", \"properties\": {{...}}}}), got \"{}\"",
                                   t.name, shown(t.parameters)));
        }
        Json fn = Json::object();
        fn["name"] = t.name;
        fn["description"] = t.description;
        fn["parameters"] = params;
        Json whole = Json::object();
        whole["type"] = "function";
        whole["function"] = std::move(fn);
        out.push_back({&t, std::move(params), std::move(whole)});
    }
    return out;
}

std::vector<Msg> read_messages(ToolFormat f, std::span<const ChatTurn> messages) {
    if (messages.empty()) invalid(f, "the message list is empty; pass at least one message");
    std::vector<Msg> out;
    for (size_t i = 0; i < messages.size(); ++i) {
        const ChatTurn& m = messages[i];
        if (m.role != "system" && m.role != "user" && m.role != "assistant" && m.role != "tool")
            invalid(f, fmt::format("message {} has role \"{}\"; the roles are system, user, assistant and tool", i,
                                   shown(m.role)));
        if (!m.tool_calls.empty() && m.role != "assistant")
            invalid(f, fmt::format("message {} ({}) has tool calls; only assistant messages make calls", i, m.role));
        Msg msg{&m, {}};
        for (size_t k = 0; k < m.tool_calls.size(); ++k) {
            const ToolCall& c = m.tool_calls[k];
            if (!valid_tool_name(c.name))
                invalid(f, fmt::format("message {}, tool call {}: the name \"{}\" is not a tool name (1 to 64 of "
                                       "A-Z a-z 0-9 _ -)",
                                       i, k, shown(c.name)));
            Json args = Json::object();
            if (!c.arguments.empty() && (!tools_detail::parse_json(c.arguments, args) || !args.is_object()))
                invalid(f, fmt::format("message {}, tool call {} ({}): arguments must be a JSON object, got \"{}\"",
                                       i, k, c.name, shown(c.arguments)));
            msg.calls.push_back({&c, std::move(args)});
        }
        out.push_back(std::move(msg));
    }
    return out;
}

bool is_tool_msg(const Msg& m) { return m.role() == "tool"; }
bool has_calls(const Msg& m) { return !m.calls.empty(); }

// ---- Hermes: Qwen 2.5 ---------------------------------------------------------------------

RenderedChat render_qwen(std::span<const Msg> ms, std::span<const Tool> tools, bool gen,
                         std::string_view default_system) {
    Out out;
    const bool first_system = ms[0].role() == "system";
    if (!tools.empty()) {
        out += "<|im_start|>system\n";
        if (first_system)
            out.content(ms[0].content());
        else
            out += default_system;
        out += "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
               "You are provided with function signatures within <tools></tools> XML tags:\n<tools>";
        for (const Tool& t : tools) {
            out += "\n";
            out.content(py_json_dumps(t.whole));
        }
        out += "\n</tools>\n\nFor each function call, return a json object with function name and arguments "
               "within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": "
               "<args-json-object>}\n</tool_call><|im_end|>\n";
    } else {
        out += "<|im_start|>system\n";
        if (first_system)
            out.content(ms[0].content());
        else
            out += default_system;
        out += "<|im_end|>\n";
    }
    for (size_t i = 0; i < ms.size(); ++i) {
        const Msg& m = ms[i];
        if (m.role() == "user" || (m.role() == "system" && i > 0) || (m.role() == "assistant" && !has_calls(m))) {
            out += "<|im_start|>";
            out += m.role();
            out += "\n";
            out.content(m.content());
            out += "<|im_end|>\n";
        } else if (m.role() == "assistant") {
            out += "<|im_start|>assistant";
            if (!m.content().empty()) {
                out += "\n";
                out.content(m.content());
            }
            for (const Call& c : m.calls) {
                out += "\n<tool_call>\n{\"name\": \"";
                out.content(c.call->name);
                out += "\", \"arguments\": ";
                out.content(py_json_dumps(c.arguments));
                out += "}\n</tool_call>";
            }
            out += "<|im_end|>\n";
        } else if (m.role() == "tool") {
            if (i == 0 || !is_tool_msg(ms[i - 1])) out += "<|im_start|>user";
            out += "\n<tool_response>\n";
            out.content(m.content());
            out += "\n</tool_response>";
            if (i + 1 == ms.size() || !is_tool_msg(ms[i + 1])) out += "<|im_end|>\n";
        }
    }
    if (gen) out += "<|im_start|>assistant\n";
    return out.take();
}

// ---- Hermes: Hermes 2 Pro / Hermes 3 (tool_use template) --------------------------------

constexpr int kMaxTypeDepth = 32;

std::string py_type(const Json* spec, int depth);

// The template's json_to_python_type macro, given the value of json_spec.type
// (null: undefined) and json_spec itself (for additionalProperties; null when
// the macro was called with {"type": t}). Jinja semantics reproduced: an
// undefined type is an empty iterable ("Union[]"), a list or object type is
// iterated, null/numbers/booleans are "Any".
std::string py_type_of(const Json* type, const Json* spec, int depth) {
    if (depth > kMaxTypeDepth)
        throw Error(ErrorCode::InvalidArgument, "tool format hermes: a parameter schema nests too deeply");
    if (type == nullptr) return "Union[]";
    if (type->is_string()) {
        const std::string& s = type->get_ref<const std::string&>();
        if (s == "string") return "str";
        if (s == "number") return "float";
        if (s == "integer") return "int";
        if (s == "boolean") return "bool";
        if (s == "array") return "list[Union[]]";  // the template passes json_spec|items: never a type
        if (s == "object") {
            if (spec && spec->is_object() && spec->contains("additionalProperties"))
                return "dict[str, " + py_type(&(*spec)["additionalProperties"], depth + 1) + "]";
            return "dict";
        }
        if (s.empty()) return "Union[]";
        // Any other string is iterated character by character, each one again a
        // string type: the real template recurses until Python's limit.
        throw Error(ErrorCode::InvalidArgument,
                    fmt::format("tool format hermes: the parameter type \"{}\" is not one of string, number, "
                                "integer, boolean, array, object (the Hermes template cannot render it)",
                                shown(s)));
    }
    if (type->is_array() || type->is_object()) {
        std::string out = "Union[";
        bool first = true;
        if (type->is_array()) {
            for (const Json& t : *type) {
                if (!first) out += ",";
                out += py_type_of(&t, nullptr, depth + 1);
                first = false;
            }
        } else {
            for (auto it = type->begin(); it != type->end(); ++it) {
                if (!first) out += ",";
                const Json key = it.key();
                out += py_type_of(&key, nullptr, depth + 1);
                first = false;
            }
        }
        return out + "]";
    }
    return "Any";
}

std::string py_type(const Json* spec, int depth) {
    const Json* type = spec && spec->is_object() && spec->contains("type") ? &(*spec)["type"] : nullptr;
    return py_type_of(type, spec, depth);
}

// `value|trim` of a parameter's description: str() of the value, stripped.
std::string jinja_trimmed(const Json* v) {
    if (v == nullptr) return "";
    if (v->is_string()) return std::string(py_strip(v->get_ref<const std::string&>()));
    if (v->is_boolean()) return v->get<bool>() ? "True" : "False";
    if (v->is_null()) return "None";
    if (v->is_number()) return py_json_dumps(*v);  // str() of an int or float is its JSON/repr form
    throw Error(ErrorCode::InvalidArgument,
                "tool format hermes: a parameter's description must be a string (the template prints it with str())");
}

RenderedChat render_hermes3(std::span<const Msg> ms, std::span<const Tool> tools, bool gen, std::string_view bos) {
    Out out;
    if (!tools.empty()) {
        out += bos;
        out += "<|im_start|>system\nYou are a function calling AI model. You are provided with function signatures "
               "within <tools></tools> XML tags. You may call one or more functions to assist with the user query. "
               "Don't make assumptions about what values to plug into functions. Here are the available tools: "
               "<tools> ";
        for (size_t i = 0; i < tools.size(); ++i) {
            const Tool& t = tools[i];
            const Json& params = t.parameters;
            const Json* props = params.contains("properties") ? &params["properties"] : nullptr;
            if (props && !props->is_object())
                invalid(ToolFormat::Hermes, fmt::format("tool \"{}\": \"properties\" must be an object", t.def->name));
            std::string desc = t.def->name + "(";
            if (props) {
                bool first = true;
                for (auto it = props->begin(); it != props->end(); ++it) {
                    if (!first) desc += ", ";
                    desc += it.key() + ": " + py_type(&it.value(), 0);
                    first = false;
                }
            }
            desc += ") - " + t.def->description + "\n\n";
            if (props) {
                bool first = true;
                for (auto it = props->begin(); it != props->end(); ++it) {
                    if (first) desc += "    Args:\n";
                    const Json* pd = it.value().is_object() && it.value().contains("description")
                                         ? &it.value()["description"]
                                         : nullptr;
                    desc += "        " + it.key() + "(" + py_type(&it.value(), 0) + "): " + jinja_trimmed(pd);
                    first = false;
                }
            }
            out += "{\"type\": \"function\", \"function\": {\"name\": \"";
            out.content(t.def->name);
            out += "\", \"description\": \"";
            out.content(desc);
            out += "\", \"parameters\": ";
            if (props == nullptr || props->empty())
                out += "{}";
            else
                out.content(py_json_dumps(params));
            out += "}";
            if (i + 1 < tools.size()) out += "\n";
        }
        out += " </tools>Use the following pydantic model json schema for each tool call you will make: "
               "{\"properties\": {\"name\": {\"title\": \"Name\", \"type\": \"string\"}, \"arguments\": {\"title\": "
               "\"Arguments\", \"type\": \"object\"}}, \"required\": [\"name\", \"arguments\"], \"title\": "
               "\"FunctionCall\", \"type\": \"object\"}}\nFor each function call return a json object with function "
               "name and arguments within <tool_call></tool_call> XML tags as follows:\n<tool_call>\n{\"name\": "
               "<function-name>, \"arguments\": <args-dict>}\n</tool_call><|im_end|>\n";
    }
    for (size_t i = 0; i < ms.size(); ++i) {
        const Msg& m = ms[i];
        const bool last = i + 1 == ms.size();
        if (m.role() == "user" || m.role() == "system" || (m.role() == "assistant" && !has_calls(m))) {
            out += "<|im_start|>";
            out += m.role();
            out += "\n";
            out.content(m.content());
            out += "<|im_end|>\n";
        } else if (m.role() == "assistant") {
            out += "<|im_start|>assistant";
            for (const Call& c : m.calls) {
                out += "\n<tool_call>\n{\"name\": \"";
                out.content(c.call->name);
                out += "\", \"arguments\": ";
                out.content(py_json_dumps(c.arguments));
                out += "}\n</tool_call>";
            }
            out += "<|im_end|>\n";
        } else {  // tool
            if (i > 0 && !is_tool_msg(ms[i - 1])) out += "<|im_start|>tool\n";
            out += "<tool_response>\n";
            out.content(m.content());
            out += last ? "\n</tool_response>" : "\n</tool_response>\n";
            if (last || !is_tool_msg(ms[i + 1])) out += "<|im_end|>";
        }
    }
    if (gen) out += "<|im_start|>assistant\n";
    return out.take();
}

// ---- Llama 3.1 / 3.2 / 3.3 ------------------------------------------------------------------

void llama_header(Out& out, std::string_view role) {
    out += "<|start_header_id|>";
    out += role;
    out += "<|end_header_id|>\n\n";
}

RenderedChat render_llama31(std::span<const Msg> ms, std::span<const Tool> tools, bool gen, std::string_view bos) {
    Out out(bos);
    std::string_view system;
    if (ms[0].role() == "system") {
        system = py_strip(ms[0].content());
        ms = ms.subspan(1);
    }
    llama_header(out, "system");
    if (!tools.empty()) out += "Environment: ipython\n";
    out += "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n";
    out.content(system);
    out += "<|eot_id|>";
    if (!tools.empty()) {
        // The templates' default: the tools go into the first message after the system
        // message (whatever its role), which is then dropped from the loop.
        if (ms.empty())
            invalid(ToolFormat::Llama31, "Cannot put tools in the first user message when there's no first user "
                                         "message! (add a user message)");
        llama_header(out, "user");
        out += "Given the following functions, please respond with a JSON for a function call with its proper "
               "arguments that best answers the given prompt.\n\nRespond in the format {\"name\": function name, "
               "\"parameters\": dictionary of argument name and its value}.Do not use variables.\n\n";
        for (const Tool& t : tools) {
            out.content(py_json_dumps(t.whole, 4));
            out += "\n\n";
        }
        out.content(py_strip(ms[0].content()));
        out += "<|eot_id|>";
        ms = ms.subspan(1);
    }
    for (const Msg& m : ms) {
        if (m.role() == "tool") {
            llama_header(out, "ipython");
            out.content(py_json_dumps(Json(m.content())));  // a str is iterable: the template writes tojson
            out += "<|eot_id|>";
        } else if (has_calls(m)) {
            if (m.calls.size() != 1)
                invalid(ToolFormat::Llama31, "This model only supports single tool-calls at once! (an assistant "
                                             "message has several calls; give each its own message)");
            llama_header(out, "assistant");
            out += "{\"name\": \"";
            out.content(m.calls[0].call->name);
            out += "\", \"parameters\": ";
            out.content(py_json_dumps(m.calls[0].arguments));
            out += "}<|eot_id|>";
        } else {
            llama_header(out, m.role());
            out.content(py_strip(m.content()));
            out += "<|eot_id|>";
        }
    }
    if (gen) llama_header(out, "assistant");
    return out.take();
}

// ---- Mistral Nemo (v3 tekken) -----------------------------------------------------------------

size_t code_points(std::string_view s) {
    size_t n = 0;
    for (char c : s) n += (static_cast<uint8_t>(c) & 0xC0) != 0x80;
    return n;
}

RenderedChat render_mistral_nemo(std::span<const Msg> ms, std::span<const Tool> tools, std::string_view bos,
                                 std::string_view eos) {
    constexpr ToolFormat f = ToolFormat::MistralNemo;
    const Msg* system = nullptr;
    if (ms[0].role() == "system") {
        system = &ms[0];
        ms = ms.subspan(1);
    }
    // The template's check: user and assistant alternate, tool calls and results aside.
    size_t index = 0;
    const Msg* last_user = nullptr;
    for (size_t i = 0; i < ms.size(); ++i) {
        const Msg& m = ms[i];
        if (m.role() == "user") last_user = &m;
        if (m.role() == "tool" || has_calls(m)) continue;
        if ((m.role() == "user") != (index % 2 == 0))
            invalid(f, fmt::format("After the optional system message, conversation roles must alternate "
                                   "user/assistant/user/assistant/... (message {} is {}; tool calls and results "
                                   "do not count)",
                                   i + (system ? 1 : 0), m.role()));
        ++index;
    }
    Out out(bos);
    for (size_t i = 0; i < ms.size(); ++i) {
        const Msg& m = ms[i];
        if (m.role() == "user") {
            // The template compares message dicts: every user message equal to the last one gets the tools.
            if (!tools.empty() && last_user && m.content() == last_user->content()) {
                out += "[AVAILABLE_TOOLS][";
                for (size_t k = 0; k < tools.size(); ++k) {
                    const Tool& t = tools[k];
                    out += "{\"type\": \"function\", \"function\": {\"name\": \"";
                    out.content(t.def->name);
                    out += "\", \"description\": \"";
                    out.content(t.def->description);
                    out += "\", \"parameters\": ";
                    out.content(py_json_dumps(t.parameters));
                    out += "}}";
                    out += k + 1 < tools.size() ? ", " : "]";
                }
                out += "[/AVAILABLE_TOOLS]";
            }
            out += "[INST]";
            if (i + 1 == ms.size() && system) {
                out.content(system->content());
                out += "\n\n";
            }
            out.content(m.content());
            out += "[/INST]";
        } else if (has_calls(m)) {
            out += "[TOOL_CALLS][";
            for (size_t k = 0; k < m.calls.size(); ++k) {
                const Call& c = m.calls[k];
                if (code_points(c.call->id) != 9)
                    invalid(f, fmt::format("Tool call IDs should be alphanumeric strings with length 9! (call \"{}\" "
                                           "has id \"{}\")",
                                           c.call->name, shown(c.call->id)));
                Json fn = Json::object();
                fn["name"] = c.call->name;
                fn["arguments"] = c.arguments;
                std::string text = py_json_dumps(fn);
                text.pop_back();  // the template's out[:-1]: the id goes inside the object
                out.content(text);
                out += ", \"id\": \"";
                out.content(c.call->id);
                out += "\"}";
                if (k + 1 < m.calls.size()) out += ", ";
            }
            out += "]";
            out += eos;
        } else if (m.role() == "assistant") {
            out.content(m.content());
            out += eos;
        } else if (m.role() == "tool") {
            out += "[TOOL_RESULTS]{\"content\": ";
            out.content(m.content());
            out += ", ";
            if (code_points(m.turn->tool_call_id) != 9)
                invalid(f, fmt::format("Tool call IDs should be alphanumeric strings with length 9! (a tool result "
                                       "has tool_call_id \"{}\")",
                                       shown(m.turn->tool_call_id)));
            out += "\"call_id\": \"";
            out.content(m.turn->tool_call_id);
            out += "\"}[/TOOL_RESULTS]";
        } else {
            invalid(f, "Only user and assistant roles are supported, with the exception of an initial optional "
                       "system message! (a system message is not first)");
        }
    }
    return out.take();
}

// ---- Generic: ember's JSON convention on any chat format ----------------------------------------

std::string generic_instructions(std::span<const Tool> tools) {
    std::string s = "You can call the following tools (functions). Each is described by its name, what it does and "
                    "a JSON Schema of its arguments:\n";
    for (const Tool& t : tools) {
        Json d = Json::object();
        d["name"] = t.def->name;
        d["description"] = t.def->description;
        d["parameters"] = t.parameters;
        s += py_json_dumps(d);
        s += "\n";
    }
    s += "\nReply with exactly one JSON object and nothing else. To call one or more tools: "
         "{\"tool_calls\": [{\"name\": \"<tool name>\", \"arguments\": {<arguments>}}]}. "
         "To answer without calling a tool: {\"response\": \"<your answer>\"}. "
         "A tool's result comes back in a message {\"tool_response\": {\"name\": ..., \"content\": ...}}.";
    return s;
}

RenderedChat render_generic(ChatFormat base, std::span<const Msg> ms, std::span<const Tool> tools, bool gen,
                            std::string_view bos, std::string_view eos) {
    std::vector<ChatMessage> out;
    size_t first = 0;
    if (!tools.empty()) {
        std::string system = generic_instructions(tools);
        if (ms[0].role() == "system") {
            system.insert(0, ms[0].content() + "\n\n");
            first = 1;
        }
        out.push_back({"system", std::move(system)});
    }
    for (size_t i = first; i < ms.size(); ++i) {
        const Msg& m = ms[i];
        if (m.role() == "tool") {
            Json r = Json::object();
            Json inner = Json::object();
            inner["name"] = m.turn->name;
            inner["content"] = m.content();
            r["tool_response"] = std::move(inner);
            // Consecutive results share one user message, so that formats needing
            // alternating turns still accept the conversation.
            if (i > first && is_tool_msg(ms[i - 1])) {
                out.back().content += '\n';
                out.back().content += py_json_dumps(r);
            } else {
                out.push_back({"user", py_json_dumps(r)});
            }
        } else if (m.role() == "assistant" && (has_calls(m) || !tools.empty())) {
            Json reply = Json::object();
            if (!m.content().empty() || !has_calls(m)) reply["response"] = m.content();
            if (has_calls(m)) {
                Json calls = Json::array();
                for (const Call& c : m.calls) {
                    Json call = Json::object();
                    call["name"] = c.call->name;
                    call["arguments"] = c.arguments;
                    calls.push_back(std::move(call));
                }
                reply["tool_calls"] = std::move(calls);
            }
            out.push_back({"assistant", py_json_dumps(reply)});
        } else {
            out.push_back({m.role(), m.content()});
        }
    }
    return render_chat(base, out, gen, bos, eos);
}

std::string_view chatml_default_system(ChatFormat base) {
    switch (base) {
        case ChatFormat::Qwen25: return "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.";
        case ChatFormat::Qwen2: return "You are a helpful assistant.";
        case ChatFormat::SmolLM2: return "You are a helpful AI assistant named SmolLM, trained by Hugging Face";
        default: return "";
    }
}

}  // namespace

RenderedChat render_chat_with_tools(ToolFormat f, ChatFormat base, std::span<const ChatTurn> messages,
                                    std::span<const ToolDef> tools, bool add_generation_prompt, std::string_view bos,
                                    std::string_view eos) {
    const std::vector<Tool> ts = read_tools(f, tools);
    const std::vector<Msg> ms = read_messages(f, messages);
    bool plain = ts.empty();
    for (const Msg& m : ms) plain = plain && !is_tool_msg(m) && !has_calls(m);
    if (plain) {  // no tools anywhere: exactly the plain chat format
        std::vector<ChatMessage> cm;
        for (const ChatTurn& m : messages) cm.push_back({m.role, m.content});
        return render_chat(base, cm, add_generation_prompt, bos, eos);
    }
    const auto need_base = [&](bool ok, const char* what) {
        if (!ok)
            invalid(f, fmt::format("the chat format {} is not one this tool format renders on (it needs {}); use "
                                   "ToolFormat::Generic for it",
                                   chat_format_name(base), what));
    };
    switch (f) {
        case ToolFormat::Hermes:
            need_base(base == ChatFormat::ChatML || base == ChatFormat::Qwen25 || base == ChatFormat::Qwen2 ||
                          base == ChatFormat::SmolLM2,
                      "a ChatML format");
            // Qwen's template (a default system turn, tools appended to the system text) on the
            // ChatML formats that have a default system turn; Hermes 2 Pro / 3's tool_use
            // template on plain ChatML.
            if (base == ChatFormat::ChatML) return render_hermes3(ms, ts, add_generation_prompt, bos);
            return render_qwen(ms, ts, add_generation_prompt, chatml_default_system(base));
        case ToolFormat::Llama31:
            need_base(base == ChatFormat::Llama31, "llama3.1");
            return render_llama31(ms, ts, add_generation_prompt, bos);
        case ToolFormat::MistralNemo:
            need_base(base == ChatFormat::MistralV3Tekken, "mistral-v3-tekken");
            return render_mistral_nemo(ms, ts, bos, eos);
        case ToolFormat::Generic: return render_generic(base, ms, ts, add_generation_prompt, bos, eos);
    }
    throw Error(ErrorCode::InvalidArgument,
                fmt::format("render_chat_with_tools: {} is not a ToolFormat value", static_cast<int>(f)));
}

}  // namespace ember
