// Chat templates: recognise a model family from its Jinja template text, and
// render that family's prompt format in C++ (see include/ember/chat.hpp for the
// shape of every format; tests/data/chat/ holds the real templates).
#include "ember/chat.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "ember/error.hpp"
#include "tokenizer/chat_tools_impl.hpp"

namespace ember {
namespace {

struct FormatName {
    ChatFormat format;
    const char* name;
};
constexpr FormatName kFormatNames[] = {
    {ChatFormat::ChatML, "chatml"},
    {ChatFormat::SmolLM2, "smollm2"},
    {ChatFormat::Qwen2, "qwen2"},
    {ChatFormat::Qwen25, "qwen2.5"},
    {ChatFormat::Llama2, "llama2"},
    {ChatFormat::Llama3, "llama3"},
    {ChatFormat::Llama31, "llama3.1"},
    {ChatFormat::MistralLegacy, "mistral-legacy"},
    {ChatFormat::MistralV1, "mistral-v1"},
    {ChatFormat::MistralV3, "mistral-v3"},
    {ChatFormat::MistralV3Tekken, "mistral-v3-tekken"},
    {ChatFormat::MistralV7, "mistral-v7"},
    {ChatFormat::Gemma, "gemma"},
};

// ---- text helpers -------------------------------------------------------------

// Whether `needle` occurs in `hay`, where a ' in the needle also matches a " (Jinja
// string literals use either quote).
bool has(std::string_view hay, std::string_view needle) {
    if (needle.size() > hay.size()) return false;
    for (size_t i = 0; i + needle.size() <= hay.size(); ++i) {
        size_t k = 0;
        for (; k < needle.size(); ++k) {
            const char n = needle[k], h = hay[i + k];
            if (n != h && !(n == '\'' && h == '"')) break;
        }
        if (k == needle.size()) return true;
    }
    return false;
}

// Python's str.strip() on UTF-8 text (what Jinja's trim filter removes): shared with the
// tool-call rendering.
using tools_detail::py_strip;

// ---- checking a conversation ------------------------------------------------------

[[noreturn]] void invalid(ChatFormat f, const std::string& what) {
    throw Error(ErrorCode::InvalidArgument, fmt::format("chat format {}: {}", chat_format_name(f), what));
}

// Every format takes system, user and assistant messages and no other role: a
// role is written into the prompt as template text, so one that is not among
// these (a typo, "tool" before tool calls exist, "user<|im_end|>...") could
// forge a turn or inject control tokens.
void require_known_roles(ChatFormat f, std::span<const ChatMessage> messages) {
    for (size_t i = 0; i < messages.size(); ++i) {
        const std::string& r = messages[i].role;
        if (r != "system" && r != "user" && r != "assistant") {
            std::string shown;
            for (char c : r.substr(0, 40)) shown += c == '\n' ? std::string("\\n") : std::string(1, c);
            invalid(f, fmt::format("message {} has role \"{}{}\"; the roles are system, user and assistant "
                                   "(tool messages are not supported yet)",
                                   i, shown, r.size() > 40 ? "..." : ""));
        }
    }
}

// The shape the strict formats need: one optional system message, then user and
// assistant turns alternating, starting with user.
struct Turns {
    const ChatMessage* system = nullptr;  // the leading system message, if any
    std::span<const ChatMessage> turns;   // the rest: user, assistant, user, ...
};

Turns split_turns(ChatFormat f, std::span<const ChatMessage> messages) {
    Turns t;
    const size_t first = messages[0].role == "system" ? 1 : 0;
    if (first == 1) t.system = &messages[0];
    t.turns = messages.subspan(first);
    for (size_t i = 0; i < t.turns.size(); ++i) {
        const char* want = i % 2 == 0 ? "user" : "assistant";
        if (t.turns[i].role != want)
            invalid(f, fmt::format("message {} has role \"{}\" where \"{}\" was expected; this format takes one "
                                   "optional system message first, then user and assistant messages alternating, "
                                   "starting with user",
                                   first + i, t.turns[i].role, want));
    }
    return t;
}

// ---- the renderers ------------------------------------------------------------------

// The prompt being written, and where the messages' contents are in it: the
// template's own text may hold control tokens, the contents never do (see
// Model::tokenize_chat).
class Out {
public:
    explicit Out(std::string_view start = {}) : r_{std::string(start), {}} {}
    Out& operator+=(std::string_view template_text) {
        r_.text += template_text;
        return *this;
    }
    void content(std::string_view c) {
        const size_t begin = r_.text.size();
        r_.text += c;
        if (!c.empty()) r_.content.emplace_back(begin, r_.text.size());
    }
    RenderedChat take() { return std::move(r_); }

private:
    RenderedChat r_;
};

// ChatML, with the system turn some models' templates add when the conversation has none.
RenderedChat render_chatml(std::span<const ChatMessage> messages, bool gen, std::string_view default_system) {
    Out out;
    if (!default_system.empty() && messages[0].role != "system") {
        out += "<|im_start|>system\n";
        out += default_system;
        out += "<|im_end|>\n";
    }
    for (const ChatMessage& m : messages) {
        out += "<|im_start|>";
        out += m.role;
        out += "\n";
        out.content(m.content);
        out += "<|im_end|>\n";
    }
    if (gen) out += "<|im_start|>assistant\n";
    return out.take();
}

RenderedChat render_llama2(std::span<const ChatMessage> messages, std::string_view bos, std::string_view eos) {
    const Turns t = split_turns(ChatFormat::Llama2, messages);
    Out out;
    for (size_t i = 0; i < t.turns.size(); ++i) {
        const ChatMessage& m = t.turns[i];
        if (m.role == "assistant") {
            out += " ";
            out.content(py_strip(m.content));
            out += " ";
            out += eos;
            continue;
        }
        out += bos;
        out += "[INST] ";
        if (i == 0 && t.system) {  // the template strips the whole "<<SYS>>...U" text (no control tokens in it)
            const std::string content = fmt::format("<<SYS>>\n{}\n<</SYS>>\n\n{}", t.system->content, m.content);
            out.content(py_strip(content));
        } else {
            out.content(py_strip(m.content));
        }
        out += " [/INST]";
    }
    return out.take();
}

void llama3_turn(Out& out, std::string_view role, std::string_view content) {
    out += "<|start_header_id|>";
    out += role;
    out += "<|end_header_id|>\n\n";
    out.content(py_strip(content));
    out += "<|eot_id|>";
}

RenderedChat render_llama3(std::span<const ChatMessage> messages, bool gen, std::string_view bos) {
    Out out(bos);
    for (const ChatMessage& m : messages) llama3_turn(out, m.role, m.content);
    if (gen) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
    return out.take();
}

RenderedChat render_llama31(std::span<const ChatMessage> messages, bool gen, std::string_view bos) {
    const bool has_system = messages[0].role == "system";
    Out out(bos);
    out += "<|start_header_id|>system<|end_header_id|>\n\n";
    out += "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n";
    if (has_system) out.content(py_strip(messages[0].content));
    out += "<|eot_id|>";
    for (const ChatMessage& m : messages.subspan(has_system ? 1 : 0)) llama3_turn(out, m.role, m.content);
    if (gen) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
    return out.take();
}

// The [INST] formats differ in spaces, in whether the reply is stripped, and in which
// user message carries the system text (always followed by a blank line).
struct MistralStyle {
    const char* open;          // before the user text
    const char* close;         // after the user text
    const char* reply_prefix;  // before the assistant text
    bool strip_reply;
    bool system_on_last;  // the system text goes before the last message if it is a user
                          // message (v3), otherwise before the first user message
};

RenderedChat render_mistral(ChatFormat f, const MistralStyle& s, std::span<const ChatMessage> messages,
                            std::string_view bos, std::string_view eos) {
    const Turns t = split_turns(f, messages);
    Out out(bos);
    for (size_t i = 0; i < t.turns.size(); ++i) {
        const ChatMessage& m = t.turns[i];
        if (m.role == "assistant") {
            out += s.reply_prefix;
            out.content(s.strip_reply ? py_strip(m.content) : std::string_view(m.content));
            out += eos;
            continue;
        }
        const size_t carrier = s.system_on_last ? t.turns.size() - 1 : 0;
        out += s.open;
        if (t.system && i == carrier) {
            out.content(t.system->content);
            out += "\n\n";
        }
        out.content(m.content);
        out += s.close;
    }
    return out.take();
}

RenderedChat render_mistral_v7(std::span<const ChatMessage> messages, std::string_view bos, std::string_view eos) {
    Out out(bos);
    for (const ChatMessage& m : messages) {
        if (m.role == "user") {
            out += "[INST] ";
            out.content(m.content);
            out += "[/INST]";
        } else if (m.role == "system") {
            out += "[SYSTEM_PROMPT] ";
            out.content(m.content);
            out += "[/SYSTEM_PROMPT]";
        } else {
            out += " ";
            out.content(m.content);
            out += eos;
        }
    }
    return out.take();
}

RenderedChat render_gemma(std::span<const ChatMessage> messages, bool gen, std::string_view bos) {
    const Turns t = split_turns(ChatFormat::Gemma, messages);
    Out out(bos);
    for (size_t i = 0; i < t.turns.size(); ++i) {
        const ChatMessage& m = t.turns[i];
        out += "<start_of_turn>";
        out += m.role == "assistant" ? "model" : "user";
        out += "\n";
        if (i == 0 && t.system) {  // Gemma 3: "S\n\n" before the first user text
            out.content(t.system->content);
            out += "\n\n";
        }
        out.content(py_strip(m.content));
        out += "<end_of_turn>\n";
    }
    if (gen) out += "<start_of_turn>model\n";
    return out.take();
}

// The first characters of a template, on one line, for a message.
std::string preview(std::string_view text) {
    size_t n = std::min<size_t>(text.size(), 60);
    while (n < text.size() && (static_cast<uint8_t>(text[n]) & 0xC0) == 0x80) --n;  // keep UTF-8 whole
    std::string out;
    for (char c : text.substr(0, n)) out += c == '\n' ? std::string("\\n") : std::string(1, c);
    return n < text.size() ? out + "..." : out;
}

}  // namespace

const char* chat_format_name(ChatFormat f) noexcept {
    for (const FormatName& n : kFormatNames)
        if (n.format == f) return n.name;
    return "unknown";
}

std::optional<ChatFormat> chat_format_from_name(std::string_view name) noexcept {
    for (const FormatName& n : kFormatNames)
        if (name == n.name) return n.format;
    return std::nullopt;
}

std::optional<ChatFormat> detect_chat_format(std::string_view t) noexcept {
    // ChatML, and the models whose template adds a default system turn. Phi-4's
    // <|im_start|>role<|im_sep|> is another format.
    if (has(t, "<|im_start|>") && !has(t, "<|im_sep|>")) {
        if (has(t, "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.")) return ChatFormat::Qwen25;
        if (has(t, "You are a helpful AI assistant named SmolLM, trained by Hugging Face")) return ChatFormat::SmolLM2;
        if (has(t, "You are a helpful assistant.<|im_end|>")) return ChatFormat::Qwen2;
        return ChatFormat::ChatML;
    }
    if (has(t, "<|start_header_id|>") && has(t, "<|end_header_id|>"))
        return has(t, "Cutting Knowledge Date") ? ChatFormat::Llama31 : ChatFormat::Llama3;
    if (has(t, "<start_of_turn>") && has(t, "<end_of_turn>")) return ChatFormat::Gemma;
    if (has(t, "'[SYSTEM_PROMPT] '") && has(t, "[INST]")) return ChatFormat::MistralV7;
    if (has(t, "[INST]") && !has(t, "[SYSTEM_PROMPT]")) {
        if (has(t, "<<SYS>>")) return ChatFormat::Llama2;
        if (has(t, "' [INST] '")) return ChatFormat::MistralV1;
        if (has(t, "'[INST]' +")) return ChatFormat::MistralV3Tekken;
        if (has(t, "'[INST] ' +") && has(t, "+ '[/INST]'")) return ChatFormat::MistralV3;
        if (has(t, "'[INST] ' +") && has(t, "+ ' [/INST]'")) return ChatFormat::MistralLegacy;
    }
    return std::nullopt;
}

RenderedChat render_chat(ChatFormat f, std::span<const ChatMessage> messages, bool add_generation_prompt,
                        std::string_view bos, std::string_view eos) {
    if (messages.empty())
        invalid(f, "the message list is empty; pass at least one message, e.g. {\"user\", \"Hello\"}");
    constexpr MistralStyle kLegacy{"[INST] ", " [/INST]", "", false, false};
    constexpr MistralStyle kV1{" [INST] ", " [/INST]", " ", false, false};
    constexpr MistralStyle kV3{"[INST] ", "[/INST]", " ", true, true};
    constexpr MistralStyle kV3Tekken{"[INST]", "[/INST]", "", false, true};
    const bool gen = add_generation_prompt;
    require_known_roles(f, messages);
    switch (f) {
        case ChatFormat::ChatML: return render_chatml(messages, gen, "");
        case ChatFormat::SmolLM2:
            return render_chatml(messages, gen, "You are a helpful AI assistant named SmolLM, trained by Hugging Face");
        case ChatFormat::Qwen2: return render_chatml(messages, gen, "You are a helpful assistant.");
        case ChatFormat::Qwen25:
            return render_chatml(messages, gen, "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.");
        case ChatFormat::Llama2: return render_llama2(messages, bos, eos);
        case ChatFormat::Llama3: return render_llama3(messages, gen, bos);
        case ChatFormat::Llama31: return render_llama31(messages, gen, bos);
        case ChatFormat::MistralLegacy: return render_mistral(f, kLegacy, messages, bos, eos);
        case ChatFormat::MistralV1: return render_mistral(f, kV1, messages, bos, eos);
        case ChatFormat::MistralV3: return render_mistral(f, kV3, messages, bos, eos);
        case ChatFormat::MistralV3Tekken: return render_mistral(f, kV3Tekken, messages, bos, eos);
        case ChatFormat::MistralV7: return render_mistral_v7(messages, bos, eos);
        case ChatFormat::Gemma: return render_gemma(messages, gen, bos);
    }
    throw Error(ErrorCode::InvalidArgument,
                fmt::format("format_chat: {} is not a ChatFormat value", static_cast<int>(f)));
}

std::string format_chat(ChatFormat f, std::span<const ChatMessage> messages, bool add_generation_prompt,
                        std::string_view bos, std::string_view eos) {
    return render_chat(f, messages, add_generation_prompt, bos, eos).text;
}

RenderedChat render_chat(std::string_view jinja_template, std::span<const ChatMessage> messages,
                          bool add_generation_prompt, std::string_view bos, std::string_view eos,
                          std::string* warning) {
    if (warning) warning->clear();
    std::optional<ChatFormat> f = detect_chat_format(jinja_template);
    if (!f) {
        if (warning) {
            *warning = py_strip(jinja_template).empty()
                           ? "the model has no chat template (tokenizer.chat_template is missing or empty); the "
                             "conversation was rendered as ChatML, which may not be the format the model was "
                             "trained on: choose the format with format_chat() if replies look wrong"
                           : fmt::format("chat template not recognised (it begins \"{}\"); the conversation was "
                                         "rendered as ChatML, which may not be the format the model was trained "
                                         "on: choose the format with format_chat() if replies look wrong",
                                         preview(jinja_template));
        }
        f = ChatFormat::ChatML;
    }
    // A template that never writes bos_token/eos_token cannot output them.
    if (!has(jinja_template, "bos_token")) bos = {};
    if (!has(jinja_template, "eos_token")) eos = {};
    return render_chat(*f, messages, add_generation_prompt, bos, eos);
}

std::string apply_chat_template(std::string_view jinja_template, std::span<const ChatMessage> messages,
                                 bool add_generation_prompt, std::string_view bos, std::string_view eos,
                                 std::string* warning) {
    return render_chat(jinja_template, messages, add_generation_prompt, bos, eos, warning).text;
}

}  // namespace ember
