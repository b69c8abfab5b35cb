// Tool calls for Python: ember/tool_calls.hpp's functions, with messages and
// tools in the OpenAI shape (dicts), converted field by field; JSON values
// (parameters, arguments given as dicts) are written with Python's json module.
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "bindings.hpp"
#include "ember/error.hpp"
#include "ember/tool_calls.hpp"

namespace ember_py {
namespace {

using ember::ErrorCode;

[[noreturn]] void bad(const std::string& what) { throw ember::Error(ErrorCode::InvalidArgument, what); }

ember::ToolFormat format_from(const std::string& name) {
    for (auto f : {ember::ToolFormat::Hermes, ember::ToolFormat::Llama31, ember::ToolFormat::MistralNemo,
                   ember::ToolFormat::Generic})
        if (name == ember::tool_format_name(f)) return f;
    bad("unknown tool format \"" + name + "\"; the formats are hermes, llama3.1, mistral-nemo, generic");
}

// A str is taken as it is; anything else is JSON-encoded as json.dumps writes it.
std::string json_text(const py::handle& v) {
    if (py::isinstance<py::str>(v)) return v.cast<std::string>();
    return py::module_::import("json").attr("dumps")(v, py::arg("ensure_ascii") = false).cast<std::string>();
}

std::string str_field(const py::dict& d, const char* key) {
    if (!d.contains(key) || d[key].is_none()) return "";
    return d[key].cast<std::string>();
}

std::vector<ember::ChatTurn> turns_from(const py::list& messages) {
    std::vector<ember::ChatTurn> out;
    for (const py::handle& h : messages) {
        const auto m = h.cast<py::dict>();
        ember::ChatTurn t{str_field(m, "role"), str_field(m, "content")};
        if (m.contains("tool_calls") && !m["tool_calls"].is_none()) {
            for (const py::handle& ch : m["tool_calls"].cast<py::list>()) {
                const auto c = ch.cast<py::dict>();
                const auto fn = c.contains("function") ? c["function"].cast<py::dict>() : c;
                ember::ToolCall call{str_field(c, "id"), str_field(fn, "name"), ""};
                if (fn.contains("arguments") && !fn["arguments"].is_none()) call.arguments = json_text(fn["arguments"]);
                t.tool_calls.push_back(std::move(call));
            }
        }
        t.tool_call_id = str_field(m, "tool_call_id");
        t.name = str_field(m, "name");
        out.push_back(std::move(t));
    }
    return out;
}

std::vector<ember::ToolDef> tools_from(const py::list& tools) {
    std::vector<ember::ToolDef> out;
    for (const py::handle& h : tools) {
        const auto t = h.cast<py::dict>();
        const auto fn = t.contains("function") ? t["function"].cast<py::dict>() : t;
        ember::ToolDef d{str_field(fn, "name"), str_field(fn, "description"), ""};
        if (fn.contains("parameters") && !fn["parameters"].is_none()) d.parameters = json_text(fn["parameters"]);
        out.push_back(std::move(d));
    }
    return out;
}

ember::ToolChoice choice_from(const py::object& c) {
    if (py::isinstance<py::str>(c)) {
        const auto s = c.cast<std::string>();
        if (s == "auto") return {ember::ToolChoice::Auto};
        if (s == "none") return {ember::ToolChoice::None};
        if (s == "required") return {ember::ToolChoice::Required};
        bad("tool_choice \"" + s + "\" is not one of auto, none, required, or {\"type\": \"function\", ...}");
    }
    const auto d = c.cast<py::dict>();
    return {ember::ToolChoice::Function, str_field(d["function"].cast<py::dict>(), "name")};
}

}  // namespace

void bind_tools(py::module_& m) {
    m.def(
        "render_chat_with_tools",
        [](const std::string& format, const std::string& base, const py::list& messages, const py::list& tools,
           bool add_generation_prompt, const std::string& bos, const std::string& eos) {
            const auto b = ember::chat_format_from_name(base);
            if (!b) bad("unknown chat format \"" + base + "\"");
            const auto turns = turns_from(messages);
            const auto defs = tools_from(tools);
            return ember::render_chat_with_tools(format_from(format), *b, turns, defs, add_generation_prompt, bos, eos)
                .text;
        },
        py::arg("format"), py::arg("base"), py::arg("messages"), py::arg("tools"), py::arg("add_generation_prompt"),
        py::arg("bos"), py::arg("eos"),
        "The prompt of a conversation with tools (OpenAI-shaped dicts), as the format's chat template renders it.");
    m.def(
        "tool_format_for",
        [](const std::string& tmpl) { return std::string(ember::tool_format_name(ember::tool_format_for(tmpl))); },
        py::arg("template"), "The tool format of a Jinja chat template: hermes, llama3.1, mistral-nemo or generic.");
    m.def(
        "parse_tool_calls",
        [](const std::string& format, const std::string& text) {
            const ember::ParsedReply r = ember::parse_tool_calls(format_from(format), text);
            py::list calls;
            for (const ember::ToolCall& c : r.tool_calls) {
                py::dict d;
                d["id"] = c.id;
                d["name"] = c.name;
                d["arguments"] = c.arguments;
                calls.append(d);
            }
            return py::make_tuple(r.content, calls);
        },
        py::arg("format"), py::arg("text"),
        "Splits a reply into (content, [{id, name, arguments}]); arguments are JSON text.");
    m.def(
        "tool_call_constraint",
        [](const std::string& format, const py::list& tools, const py::object& tool_choice, bool parallel) {
            const auto defs = tools_from(tools);
            const ember::Constraint c =
                ember::tool_call_constraint(format_from(format), defs, choice_from(tool_choice), parallel, nullptr);
            py::dict d;
            d["gbnf"] = c.grammar.empty() ? std::string() : c.grammar.source();
            d["trigger_words"] = c.trigger_words;
            d["trigger_tokens"] = c.trigger_tokens;
            return d;
        },
        py::arg("format"), py::arg("tools"), py::arg("tool_choice"), py::arg("parallel"),
        "The constraint of a tool-using reply: dict(gbnf, trigger_words, trigger_tokens) (no tokenizer: formats "
        "whose call opening is a control token raise).");
}

}  // namespace ember_py
