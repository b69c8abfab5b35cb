// The data behind ember::Tokenizer, shared by the SPM and BPE algorithms.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "ember/gguf.hpp"
#include "ember/tokenizer.hpp"
#include "tokenizer/pretokenizer.hpp"

namespace ember {

struct Tokenizer::Impl {
    explicit Impl(gguf::File f) : file(std::move(f)) {}
    gguf::File file;                         // keeps the token strings (views into it) alive
    VocabKind kind = VocabKind::Spm;
    std::string model, pre;
    // [n_vocab] token text as stored: the views of the file's tokenizer.ggml.tokens
    // array (no copy: a vocabulary of millions of tokens costs its metadata once)
    std::span<const std::string_view> tokens;
    std::vector<float> scores;               // [n_vocab] (zeros when the file has none)
    std::vector<TokenType> types;            // [n_vocab]
    std::unordered_map<std::string_view, TokenId> ids;  // text -> id (first id on duplicates)

    TokenId bos = kNoToken, eos = kNoToken, eot = kNoToken, eom = kNoToken, unk = kNoToken, pad = kNoToken;
    bool add_bos = false, add_eos = false, add_space_prefix = false;
    std::vector<TokenId> eog;                // sorted
    // Control / user-defined / unknown tokens, longest text first: matched as
    // wholes in the text before the model's algorithm runs. Also bucketed by
    // first byte: [0] user-defined only (plain text), [1] all (parse_special).
    std::vector<TokenId> specials;
    std::vector<TokenId> specials_by_byte[2][256];

    // The model's embedding rows when they are more than the tokens (a padded
    // vocabulary: ids [tokens.size(), n_rows) have logits but no text); else 0.
    size_t n_rows = 0;

    // SPM: the <0xNN> token of each byte (kNoToken when absent).
    TokenId byte_tokens[256];

    // BPE: merges keyed by (left id << 32 | right id) -> (rank, merged id).
    struct Merge {
        int32_t rank;
        TokenId result;
    };
    std::unordered_map<uint64_t, Merge> merges;
    bool ignore_merges = false;              // Llama 3: a piece that is a token is taken whole
    std::unique_ptr<PreTokenizer> pretok;

    // Appends the tokens of one span of plain text (no special tokens in it).
    void tokenize_spm(std::string_view text, std::vector<TokenId>& out) const;
    void tokenize_bpe(std::string_view text, std::vector<TokenId>& out) const;
};

// The byte an SPM byte token's text names ("<0x0A>" -> 0x0A); nullopt when the
// text is not "<0x" + two hex digits + ">".
std::optional<uint8_t> spm_byte_of(std::string_view text) noexcept;

}  // namespace ember
