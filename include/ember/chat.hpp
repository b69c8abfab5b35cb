// Chat templates: a list of messages -> the prompt text a chat model expects.
//
// A GGUF file carries its chat template as Jinja source (tokenizer.chat_template,
// Hugging Face style). ember does not run Jinja: it recognises the model family
// from the template text and renders that family's format in C++, producing
// exactly what the real template produces (tests/data/chat/ holds the real
// templates and their Jinja renderings, checked by the unit tests).
//
//   std::string warning;
//   std::string prompt = ember::apply_chat_template(tmpl, messages, /*add_generation_prompt=*/true,
//                                                   "<s>", "</s>", &warning);
//   // tokenize `prompt` with special tokens parsed, and without adding another BOS
//   // -- better: Model::tokenize_chat, which parses them in the template's text only
//
// Roles are "system", "user" and "assistant", in every format (any other role is
// an error naming these: a role is written into the prompt as template text, so a
// stray one could forge a turn). Content is passed through as is (UTF-8, not
// escaped); where a template trims content, ember trims what Python's str.strip()
// would (ASCII and Unicode white space). render_chat() also says where each
// content is in the text, so that control-token text a user typed stays text
// (Model::tokenize_chat).
//
// Errors (ember::Error, ErrorCode::InvalidArgument), thrown by format_chat and
// apply_chat_template; an unknown template is never an error:
//   - an empty message list;
//   - in the formats that need alternating turns (Llama 2, Mistral legacy/v1/v3/
//     v3-tekken, Gemma): anything but one optional leading system message followed
//     by user, assistant, user, ... (the real templates raise_exception on these;
//     ember is stricter in one corner: a system message in an odd position, which
//     some of those templates silently drop or print, is refused too);
//   - a role other than system/user/assistant.
// Two templates refuse any system message (Mistral legacy, Gemma 1/2); ember
// folds it into the first user message instead, as the newer template of the
// same family does (see ChatFormat::MistralLegacy and ChatFormat::Gemma).
#pragma once

#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ember/export.hpp"

namespace ember {

struct ChatMessage {
    std::string role;     // "system", "user" or "assistant"
    std::string content;  // UTF-8 text
};

// The families ember renders. In the shapes below S, U, A are the contents of
// system, user and assistant messages, <bos>/<eos> the BOS/EOS texts passed in,
// and [gen] the part written only with add_generation_prompt.
enum class ChatFormat {
    ChatML,           // <|im_start|>role\nX<|im_end|>\n per message; [gen] <|im_start|>assistant\n
    SmolLM2,          // ChatML; without a leading system message, the system turn
                      //   "You are a helpful AI assistant named SmolLM, trained by Hugging Face" comes first
    Qwen2,            // ChatML; default system "You are a helpful assistant." (also Qwen1.5)
    Qwen25,           // ChatML; default system "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
    Llama2,           // <bos>[INST] <<SYS>>\nS\n<</SYS>>\n\nU [/INST] A <eos><bos>[INST] U [/INST]   (U, A stripped)
    Llama3,           // <bos><|start_header_id|>role<|end_header_id|>\n\nX<|eot_id|> per message (X stripped);
                      //   [gen] <|start_header_id|>assistant<|end_header_id|>\n\n
    Llama31,          // Llama 3.1/3.2/3.3: Llama3, but always one system turn first holding
                      //   "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n" + S
                      //   (the templates' fixed date; Llama 3.2's takes today's date from strftime_now
                      //   when the host has one: ember always writes 26 Jul 2024)
    MistralLegacy,    // Mistral-7B-Instruct v0.1/v0.2 original: <bos>[INST] U [/INST]A<eos>[INST] U [/INST];
                      //   the template refuses a system message: ember writes "S\n\n" before the first U
    MistralV1,        // <bos> [INST] S\n\nU [/INST] A<eos> [INST] U [/INST]
    MistralV3,        // Mistral v0.3 / Large 2407: <bos>[INST] U[/INST] A<eos>[INST] S\n\nU[/INST]
                      //   (A stripped; S goes before the LAST user message, and is dropped when
                      //   the conversation ends with an assistant message)
    MistralV3Tekken,  // Mistral Nemo: <bos>[INST]U[/INST]A<eos>[INST]S\n\nU[/INST]   (S as in MistralV3)
    MistralV7,        // Mistral Large 2411: <bos>[SYSTEM_PROMPT] S[/SYSTEM_PROMPT][INST] U[/INST] A<eos>
                      //   (any order of turns)
    Gemma,            // Gemma 1/2/3: <bos><start_of_turn>user\nS\n\nU<end_of_turn>\n<start_of_turn>model\nA<end_of_turn>\n;
                      //   [gen] <start_of_turn>model\n   (U, A stripped; S folded as Gemma 3's
                      //   template does, also for Gemma 1/2 whose templates refuse a system message)
};

// Stable lower-case name: "chatml", "smollm2", "qwen2", "qwen2.5", "llama2", "llama3",
// "llama3.1", "mistral-legacy", "mistral-v1", "mistral-v3", "mistral-v3-tekken",
// "mistral-v7", "gemma"; "unknown" for a value outside the enum.
EMBER_API const char* chat_format_name(ChatFormat f) noexcept;

// The format with that name (as chat_format_name writes it); nullopt if none.
EMBER_API std::optional<ChatFormat> chat_format_from_name(std::string_view name) noexcept;

// Recognises the family of a Jinja chat template (the text of
// tokenizer.chat_template); nullopt if unknown or empty.
EMBER_API std::optional<ChatFormat> detect_chat_format(std::string_view jinja_template) noexcept;

// Renders messages in a family's format. bos/eos are the texts of the model's
// BOS/EOS tokens (e.g. "<s>", "</s>"), used by the formats that write them.
// Throws ember::Error (InvalidArgument) for the conversations listed at the top.
EMBER_API std::string format_chat(ChatFormat f, std::span<const ChatMessage> messages, bool add_generation_prompt,
                                  std::string_view bos, std::string_view eos);

// A rendered conversation, and where the messages' contents are in its text:
// byte ranges [first, second), in order. The rest is the template's own text.
struct RenderedChat {
    std::string text;
    std::vector<std::pair<size_t, size_t>> content;
};

// format_chat with the content ranges.
EMBER_API RenderedChat render_chat(ChatFormat f, std::span<const ChatMessage> messages, bool add_generation_prompt,
                                   std::string_view bos, std::string_view eos);
// apply_chat_template (below) with the content ranges.
EMBER_API RenderedChat render_chat(std::string_view jinja_template, std::span<const ChatMessage> messages,
                                   bool add_generation_prompt, std::string_view bos, std::string_view eos,
                                   std::string* warning = nullptr);

// Template text -> detect_chat_format -> format_chat. An unknown or empty
// template renders ChatML and sets *warning (if given) to a message naming the
// problem and saying ChatML was used; otherwise *warning is cleared. A template
// that never mentions bos_token (or eos_token) gets no BOS (EOS) text, since the
// real template could not write it. Throws as format_chat does.
EMBER_API std::string apply_chat_template(std::string_view jinja_template, std::span<const ChatMessage> messages,
                                          bool add_generation_prompt, std::string_view bos, std::string_view eos,
                                          std::string* warning = nullptr);

}  // namespace ember
