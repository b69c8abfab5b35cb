// Tokenizers read from GGUF metadata: SentencePiece-style (tokenizer.ggml.model
// = "llama") and byte-level BPE ("gpt2") with the pre-tokenizer named by
// tokenizer.ggml.pre.
//
//   auto tok = ember::Tokenizer::from_gguf(ember::gguf::File::open("model.gguf"));
//   std::vector<ember::TokenId> ids = tok.tokenize("Hello world");       // BOS per metadata
//   std::string text = tok.detokenize(ids);                              // "Hello world"
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ember/export.hpp"
#include "ember/gguf.hpp"

namespace ember {

using TokenId = int32_t;
constexpr TokenId kNoToken = -1;

// tokenizer.ggml.token_type values.
enum class TokenType : int32_t {
    Undefined = 0,
    Normal = 1,
    Unknown = 2,
    Control = 3,       // <s>, <|im_start|>: special, only parsed from text when asked
    UserDefined = 4,   // added tokens: always matched as a whole in text
    Unused = 5,
    Byte = 6,          // SentencePiece byte fallback <0xNN>
};

enum class VocabKind {
    Spm,  // "llama": SentencePiece-style, score-driven merges, byte fallback
    Bpe,  // "gpt2": byte-level BPE, rank-ordered merges
};

struct TokenizeOptions {
    bool add_special = true;     // add BOS/EOS as the metadata says (add_bos_token / add_eos_token)
    bool parse_special = false;  // text such as "<|im_start|>" becomes its control token
};

struct DetokenizeOptions {
    bool remove_special = false;  // drop a leading BOS / trailing EOS that tokenize() added
    bool render_special = false;  // write control tokens as their text (otherwise they vanish)
};

// An immutable tokenizer; cheap to copy and safe to share between threads.
class EMBER_API Tokenizer {
public:
    // Reads the vocabulary from GGUF metadata and validates it; throws
    // ember::Error naming the key for missing or inconsistent data.
    static Tokenizer from_gguf(const gguf::File& file);

    VocabKind kind() const noexcept;
    std::string_view model_name() const noexcept;     // tokenizer.ggml.model
    std::string_view pre_tokenizer() const noexcept;  // tokenizer.ggml.pre ("" when absent)
    size_t size() const noexcept;                     // number of tokens

    std::string_view text(TokenId id) const;  // the token as stored (throws for a bad id)
    TokenType type(TokenId id) const;
    float score(TokenId id) const;
    std::optional<TokenId> find(std::string_view token_text) const noexcept;

    TokenId bos() const noexcept;  // kNoToken when the vocabulary has none
    TokenId eos() const noexcept;
    TokenId eot() const noexcept;
    TokenId unk() const noexcept;
    TokenId pad() const noexcept;
    bool add_bos() const noexcept;
    bool add_eos() const noexcept;
    bool add_space_prefix() const noexcept;
    // End of generation: EOS, EOT, EOM and the end-of-turn tokens of common
    // chat formats (<|im_end|>, <|eot_id|>, <end_of_turn>, ...).
    bool is_eog(TokenId id) const noexcept;
    const std::vector<TokenId>& eog_tokens() const noexcept;

    std::vector<TokenId> tokenize(std::string_view text, const TokenizeOptions& opt = {}) const;
    // The same, where the byte ranges [first, second) of `plain` (in order, not
    // overlapping) are text as typed: no control token is parsed in them or across
    // their edges, whatever opt.parse_special says (user-defined tokens still are).
    // For a prompt of template text around untrusted content (Model::tokenize_chat).
    std::vector<TokenId> tokenize(std::string_view text, const TokenizeOptions& opt,
                                  std::span<const std::pair<size_t, size_t>> plain) const;
    // The bytes of one token (SPM: U+2581 as space, <0xNN> as the byte; BPE:
    // the byte-level characters mapped back to bytes). Control tokens give ""
    // unless render_special. May be an incomplete UTF-8 sequence.
    std::string token_to_piece(TokenId id, bool render_special = false) const;
    // Inverts tokenize(): the pieces joined, with SPM's added leading space removed.
    // The bytes as they are -- not necessarily valid UTF-8 for ids a model sampled
    // (StreamingDetokenizer and Session::generate give valid text).
    std::string detokenize(std::span<const TokenId> ids, const DetokenizeOptions& opt = {}) const;

    struct Impl;  // defined inside the library

private:
    explicit Tokenizer(std::shared_ptr<const Impl> impl);
    std::shared_ptr<const Impl> impl_;
    friend class StreamingDetokenizer;
};

// Turns a stream of tokens into valid UTF-8 text without ever emitting part of
// a character: bytes of a character split across tokens are held until the
// character is complete, and bytes that cannot form one (byte tokens a model
// sampled out of order) become U+FFFD, exactly as Python's
// bytes.decode('utf-8', errors='replace') does on the joined bytes. With at_start (the tokens begin the text, e.g. right
// after BOS), the first piece loses SPM's added leading space; without it the
// tokens continue earlier text (generation after a prompt) and keep it.
class EMBER_API StreamingDetokenizer {
public:
    explicit StreamingDetokenizer(Tokenizer tokenizer, bool render_special = false, bool at_start = true);
    // The text that became complete with this token (often "", never a partial character).
    std::string push(TokenId id);
    // Whatever is still held at the end: an incomplete sequence, as one U+FFFD.
    std::string flush();
    void reset();

private:
    Tokenizer tok_;
    bool render_special_;
    bool at_start_;
    bool first_;
    std::string pending_;
};

}  // namespace ember
