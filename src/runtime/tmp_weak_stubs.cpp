// TEMPORARY (removed before this work lands): weak placeholders for the grammar,
// JSON Schema and tool-call functions being written in parallel, so that every
// build links meanwhile. Each real definition overrides its placeholder.
#include "ember/grammar.hpp"
#include "ember/tool_calls.hpp"
#include "runtime/grammar/matcher.hpp"

#define W __attribute__((weak))
namespace ember {
[[noreturn]] static void nyi(const char* f) { throw Error(ErrorCode::Internal, std::string(f) + ": not written yet"); }
W GrammarError::GrammarError(const std::string& m, size_t l, size_t c) : Error(ErrorCode::InvalidArgument, m), line_(l), column_(c) {}
W SchemaError::SchemaError(ErrorCode c, const std::string& m, std::string k, std::string p)
    : Error(c, m), keyword_(std::move(k)), path_(std::move(p)) {}
W Grammar Grammar::parse(std::string_view, std::string_view) { nyi("Grammar::parse"); }
W Grammar Grammar::from_json_schema(std::string_view) { nyi("Grammar::from_json_schema"); }
W Grammar Grammar::json_object() { nyi("Grammar::json_object"); }
W std::string Grammar::json_schema_to_gbnf(std::string_view) { nyi("Grammar::json_schema_to_gbnf"); }
W const std::string& Grammar::source() const { nyi("Grammar::source"); }
W const std::string& Grammar::root() const { nyi("Grammar::root"); }
W bool Grammar::matches(std::string_view) const { nyi("Grammar::matches"); }
W bool Grammar::is_prefix(std::string_view) const { nyi("Grammar::is_prefix"); }
W std::string Grammar::random_string(uint64_t, size_t) const { nyi("Grammar::random_string"); }
W const char* tool_format_name(ToolFormat) noexcept { return "unknown"; }
W ToolFormat tool_format_for(std::string_view) noexcept { return ToolFormat::Generic; }
W RenderedChat render_chat_with_tools(ToolFormat, ChatFormat, std::span<const ChatTurn>, std::span<const ToolDef>, bool,
                                      std::string_view, std::string_view) { nyi("render_chat_with_tools"); }
W Constraint tool_call_constraint(ToolFormat, std::span<const ToolDef>, const ToolChoice&, bool, const Tokenizer*) {
    nyi("tool_call_constraint");
}
W ParsedReply parse_tool_calls(ToolFormat, std::string_view) { nyi("parse_tool_calls"); }
namespace grammar {
struct Matcher::State {
    char placeholder;
};
W std::shared_ptr<const TokenVocab> build_token_vocab(const Tokenizer&) { nyi("build_token_vocab"); }
W Matcher::Matcher(const Grammar&, std::shared_ptr<const TokenVocab>) { nyi("Matcher"); }
W Matcher::Matcher(const Matcher&) { nyi("Matcher"); }
W Matcher& Matcher::operator=(const Matcher&) { nyi("Matcher"); }
W Matcher::Matcher(Matcher&&) noexcept { std::terminate(); }
W Matcher& Matcher::operator=(Matcher&&) noexcept { std::terminate(); }
W Matcher::~Matcher() = default;
W bool Matcher::allows(TokenId) const { nyi("Matcher"); }
W void Matcher::accept(TokenId) { nyi("Matcher"); }
W bool Matcher::accept_text(std::string_view) { nyi("Matcher"); }
W bool Matcher::can_end() const { nyi("Matcher"); }
W bool Matcher::must_end() const { nyi("Matcher"); }
W void Matcher::apply(std::span<float>) const { nyi("Matcher"); }
}  // namespace grammar
}  // namespace ember
