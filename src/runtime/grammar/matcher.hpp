// The grammar engine's internal interface: a compiled GBNF grammar bound to a
// vocabulary, and the per-generation matcher the session's sampling loop uses.
//
// Contract (the session relies on exactly this):
//   * TokenVocab::build(tokenizer) once per model (a few ms at vocab 262144):
//     each token's bytes (Tokenizer::token_to_piece, render_special = false),
//     whether it is a control token, whether it ends a generation.
//   * Matcher m(grammar, vocab): resolves the grammar's token references
//     (<|name|>, <name> by text; <[id]> checked against the vocabulary) and
//     throws GrammarError (line/column of the reference) when one is not a
//     single token. The matcher starts at the beginning of the language.
//   * m.allows(t): whether appending token t keeps the text a prefix of a
//     string of the language (a text token: its bytes, possibly ending or
//     starting inside a UTF-8 character; a control or EOG token: only where a
//     token reference accepts it; an EOG token not matched by a token
//     reference: exactly when the grammar can end, can_end()). A token with
//     empty bytes that no token reference names is refused.
//   * m.accept(t): advances over t; precondition allows(t) (else InvalidArgument).
//   * m.accept_text(bytes): advances over text (the lazy-trigger start);
//     returns false and leaves the state unchanged when the text leaves the language.
//   * m.can_end(): the text so far is a string of the language.
//   * m.must_end(): can_end() and no text token is allowed (only ending).
//   * m.apply(logits): sets logits[t] = -INFINITY for every token !allows(t);
//     fast: a trie of the vocabulary's bytes walked once against the stacks.
// Copyable (the state is a value); one thread at a time.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ember/grammar.hpp"
#include "ember/tokenizer.hpp"

namespace ember::grammar {

struct TokenVocab;  // defined in the engine (token bytes, control/EOG flags, a byte trie)

std::shared_ptr<const TokenVocab> build_token_vocab(const Tokenizer& tokenizer);

class Matcher {
public:
    Matcher(const Grammar& grammar, std::shared_ptr<const TokenVocab> vocab);
    Matcher(const Matcher&);
    Matcher& operator=(const Matcher&);
    Matcher(Matcher&&) noexcept;
    Matcher& operator=(Matcher&&) noexcept;
    ~Matcher();

    bool allows(TokenId t) const;
    void accept(TokenId t);
    bool accept_text(std::string_view bytes);
    bool can_end() const;
    bool must_end() const;
    void apply(std::span<float> logits) const;

    struct State;

private:
    std::unique_ptr<State> st_;
};

}  // namespace ember::grammar
