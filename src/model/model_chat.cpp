// Model's chat calls: the conversation rendered with the model's template, and
// tokenized so that control tokens come from the template's text only.
#include "ember/model.hpp"

#include "model/model_impl.hpp"

namespace ember {

RenderedChat Model::render_chat(std::span<const ChatMessage> messages, bool add_generation_prompt,
                                std::string* warning) const {
    const Tokenizer& t = impl_->tokenizer;
    const std::string bos = t.bos() != kNoToken ? std::string(t.text(t.bos())) : std::string();
    const std::string eos = t.eos() != kNoToken ? std::string(t.text(t.eos())) : std::string();
    if (impl_->chat_template.empty() && impl_->hp.arch == "gemma3") {
        // Gemma-3 files without a template (the pretrained base models): Gemma's turn markers,
        // chosen from the architecture, as its own template would render them
        if (warning)
            *warning = "the model has no chat template (tokenizer.chat_template is missing); the conversation was "
                       "rendered with Gemma's turn markers, chosen from the architecture 'gemma3'";
        return ember::render_chat(ChatFormat::Gemma, messages, add_generation_prompt, bos, eos);
    }
    return ember::render_chat(impl_->chat_template, messages, add_generation_prompt, bos, eos, warning);
}

std::vector<TokenId> Model::tokenize_chat(std::span<const ChatMessage> messages, bool add_generation_prompt,
                                          bool parse_special_in_content, std::string* warning) const {
    const RenderedChat r = render_chat(messages, add_generation_prompt, warning);
    const TokenizeOptions opt{.add_special = false, .parse_special = true};
    if (parse_special_in_content) return impl_->tokenizer.tokenize(r.text, opt);
    return impl_->tokenizer.tokenize(r.text, opt, r.content);
}

}  // namespace ember
