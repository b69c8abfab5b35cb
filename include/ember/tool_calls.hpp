// Tool calls: tools in the OpenAI shape, rendered into the prompt the way the
// model's chat template does, the model constrained to call them with valid
// arguments, and the calls parsed out of its reply.
//
//   ember::ChatRequest req;
//   req.messages = {{"user", "Add two litres of milk to the list"}};
//   req.tools = {{"add_to_shopping_list", "Adds an item",
//                 R"({"type":"object","properties":{"item":{"type":"string"}},"required":["item"]})"}};
//   ember::ChatReply r = session.chat(req, params);
//   for (auto& c : r.tool_calls) run(c.name, c.arguments);   // arguments: a JSON object's text
//   // then append {"assistant", r.content, r.tool_calls} and {"tool", result, {}, c.id}
//   // to req.messages and call chat() again
//
// Formats (detected from the model's chat template, see tool_format_for):
//   Hermes       Qwen2.5 and Hermes 2 Pro / Hermes 3: tools in the system turn inside
//                <tools></tools>; calls are <tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>;
//                results are <tool_response> blocks in a user turn.
//   Llama31      Llama 3.1 / 3.2 / 3.3: tools in the first user message (the templates' default);
//                a call is {"name": ..., "parameters": {...}}; results are "ipython" turns.
//   MistralNemo  Mistral Nemo (v3 tekken): [AVAILABLE_TOOLS] before the last user message;
//                calls are [TOOL_CALLS][{"name": ..., "arguments": {...}, "id": "abcdefghi"}];
//                results are [TOOL_RESULTS] blocks.
//   Generic      every other template: the tools are described in a system message and the
//                whole reply is one line of JSON, {"tool_calls": [...]} or {"response": "..."}
//                (also with tool_choice None, then always {"response": ...}); a reply cut inside
//                its response string (max_tokens) still gives the text so far as content.
// The first three render byte for byte what the model's Jinja template renders
// (tests/python/test_tool_templates.py checks it against jinja2 and the real
// templates); the calls' arguments are constrained by their JSON Schemas.
#pragma once

#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ember/chat.hpp"
#include "ember/export.hpp"
#include "ember/grammar.hpp"
#include "ember/tokenizer.hpp"

namespace ember {

// A function the model may call.
struct ToolDef {
    std::string name;         // [A-Za-z0-9_-]{1,64}
    std::string description;  // may be empty
    std::string parameters;   // a JSON Schema (text) of its arguments object; "" = no arguments
};

// One call the model made (or one in the history).
struct ToolCall {
    std::string id;         // the call's id ("" when the format has none: Hermes, Llama31)
    std::string name;
    std::string arguments;  // a JSON object, as text (compact: {"a": 1} as json.dumps writes it)
};

// A message of a conversation with tools. role: "system", "user", "assistant"
// (content and/or tool_calls), or "tool" (content: a tool's result;
// tool_call_id and name: which call it answers).
struct ChatTurn {
    std::string role;
    std::string content;
    std::vector<ToolCall> tool_calls{};
    std::string tool_call_id{};
    std::string name{};
};

enum class ToolFormat { Hermes, Llama31, MistralNemo, Generic };
EMBER_API const char* tool_format_name(ToolFormat f) noexcept;  // "hermes", "llama3.1", "mistral-nemo", "generic"
// The tool format of a chat template (Generic for any template without one ember renders).
EMBER_API ToolFormat tool_format_for(std::string_view jinja_template) noexcept;

struct ToolChoice {
    enum Kind { Auto, None, Required, Function };
    Kind kind = Auto;   // Auto: text or calls; None: text only; Required: at least one call;
    std::string name{}; // Function: a call of this tool
};

// Renders a conversation with tools in a format (as the model's template does);
// content ranges as render_chat. bos/eos as format_chat. Throws Error(InvalidArgument)
// for a conversation the template refuses, a role outside the four, a tool
// whose parameters are not a JSON object schema.
EMBER_API RenderedChat render_chat_with_tools(ToolFormat f, ChatFormat base, std::span<const ChatTurn> messages,
                                              std::span<const ToolDef> tools, bool add_generation_prompt,
                                              std::string_view bos, std::string_view eos);

// The constraint that makes the model's reply a valid use of the tools:
// lazy (free text until the format's call opening) for Auto in Hermes, Llama31
// and MistralNemo; from the first token for Required / Function and Generic.
// None: no constraint, except in Generic, where the reply is {"response": "..."}.
// Throws SchemaError for a tool's parameters ember cannot constrain.
// tokenizer: the model's, to find openings that are control tokens ([TOOL_CALLS]);
// InvalidArgument when the format needs one and it is null or lacks the token.
EMBER_API Constraint tool_call_constraint(ToolFormat f, std::span<const ToolDef> tools, const ToolChoice& choice,
                                          bool parallel_tool_calls, const Tokenizer* tokenizer = nullptr);

// A reply split into its text and its calls. `text` is the generated text with
// control tokens rendered (e.g. "[TOOL_CALLS]"). Calls that do not parse stay
// in content. Ids missing in the format are left empty.
struct ParsedReply {
    std::string content;
    std::vector<ToolCall> tool_calls;
};
EMBER_API ParsedReply parse_tool_calls(ToolFormat f, std::string_view text);

}  // namespace ember
