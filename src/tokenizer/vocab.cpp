// Loading and validating a vocabulary from GGUF metadata.
#include <algorithm>
#include <limits>
#include <new>

#include <fmt/format.h>

#include "tokenizer/vocab.hpp"

namespace ember {

namespace {

using gguf::ValueType;

[[noreturn]] void bad(const gguf::File& f, std::string_view key, const std::string& why) {
    throw Error(ErrorCode::InvalidFile,
                fmt::format("GGUF file '{}': tokenizer metadata '{}' {}; the vocabulary cannot be used (convert the "
                            "model again with a current converter)",
                            f.path(), key, why));
}

// An optional token id key: uint32 or int32 (negative = none), checked against the vocabulary size.
TokenId id_key(const gguf::File& f, const char* key, size_t n_vocab, TokenId fallback) {
    const gguf::Value* v = f.find(key);
    if (!v) return fallback;
    int64_t id;
    if (v->type() == ValueType::UInt32) id = v->get<uint32_t>();
    else if (v->type() == ValueType::Int32) id = v->get<int32_t>();
    else bad(f, key, fmt::format("is {}, expected uint32", v->type_name()));
    if (id < 0) return kNoToken;
    if (static_cast<uint64_t>(id) >= n_vocab)
        bad(f, key, fmt::format("is {}, outside the vocabulary of {} tokens", id, n_vocab));
    return static_cast<TokenId>(id);
}

bool bool_key(const gguf::File& f, const char* key, bool fallback) {
    const gguf::Value* v = f.find(key);
    if (!v) return fallback;
    if (v->type() != ValueType::Bool) bad(f, key, fmt::format("is {}, expected bool", v->type_name()));
    return v->get<bool>();
}

const gguf::Value& array_key(const gguf::File& f, const char* key, ValueType elem) {
    const gguf::Value* v = f.find(key);
    if (!v) bad(f, key, "is missing");
    if (!v->is_array() || v->array_type() != elem)
        bad(f, key, fmt::format("is {}, expected array[{}]", v->type_name(), gguf::value_type_name(elem)));
    return *v;
}

// Text from the file made safe for a message: control bytes escaped, cut at 40 bytes.
std::string printable(std::string_view s) {
    std::string out;
    for (size_t i = 0; i < s.size() && i < 40; ++i) {
        const unsigned char c = static_cast<unsigned char>(s[i]);
        if (c < 0x20 || c == 0x7F) out += fmt::format("\\x{:02x}", c);
        else out += static_cast<char>(c);
    }
    if (s.size() > 40) out += fmt::format("...({} bytes)", s.size());
    return out;
}

bool uses_llama3_rules(std::string_view pre) {
    return pre == "default" || pre == "llama3" || pre == "llama-bpe" || pre == "llama-v3" || pre == "dbrx" ||
           pre == "smaug-bpe";
}

}  // namespace

std::optional<uint8_t> spm_byte_of(std::string_view s) noexcept {
    if (s.size() != 6 || !s.starts_with("<0x") || s[5] != '>') return std::nullopt;
    auto hex = [](char c) -> int {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'A' && c <= 'F') return c - 'A' + 10;
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        return -1;
    };
    const int hi = hex(s[3]), lo = hex(s[4]);
    if (hi < 0 || lo < 0) return std::nullopt;
    return static_cast<uint8_t>(hi * 16 + lo);
}

Tokenizer::Tokenizer(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}

namespace {

// The body of Tokenizer::from_gguf; `allocating` names the large allocation
// under way, for the out-of-memory message.
std::shared_ptr<Tokenizer::Impl> load_vocab(const gguf::File& f, std::string& allocating) {
    using Impl = Tokenizer::Impl;
    auto t = std::make_shared<Impl>(f);
    const gguf::Value* model = f.find("tokenizer.ggml.model");
    if (!model) bad(f, "tokenizer.ggml.model", "is missing (the file has no vocabulary)");
    if (model->type() != ValueType::String)
        bad(f, "tokenizer.ggml.model", fmt::format("is {}, expected string", model->type_name()));
    t->model = model->get<std::string>();
    if (t->model == "llama") t->kind = VocabKind::Spm;
    else if (t->model == "gpt2") t->kind = VocabKind::Bpe;
    else
        throw Error(ErrorCode::Unsupported,
                    fmt::format("GGUF file '{}': tokenizer.ggml.model '{}' is not supported; ember reads 'llama' "
                                "(SentencePiece) and 'gpt2' (byte-level BPE) vocabularies",
                                f.path(), t->model));

    // tokens, scores, types
    const gguf::Value& tokens = array_key(f, "tokenizer.ggml.tokens", ValueType::String);
    const size_t n = tokens.size();
    if (n == 0) bad(f, "tokenizer.ggml.tokens", "is empty");
    if (n > static_cast<size_t>(std::numeric_limits<TokenId>::max()))
        bad(f, "tokenizer.ggml.tokens", fmt::format("holds {} tokens, more than ember's 32-bit ids allow", n));
    t->tokens = tokens.strings();
    allocating = fmt::format("the scores and types of {} tokens", n);
    t->scores.assign(n, 0.0f);
    if (f.has("tokenizer.ggml.scores")) {
        const gguf::Value& s = array_key(f, "tokenizer.ggml.scores", ValueType::Float32);
        if (s.size() != n)
            bad(f, "tokenizer.ggml.scores", fmt::format("has {} entries but tokenizer.ggml.tokens has {}", s.size(), n));
        t->scores = s.to_vector<float>();
    }
    t->types.assign(n, TokenType::Normal);
    if (f.has("tokenizer.ggml.token_type")) {
        const gguf::Value& ty = array_key(f, "tokenizer.ggml.token_type", ValueType::Int32);
        if (ty.size() != n)
            bad(f, "tokenizer.ggml.token_type",
                fmt::format("has {} entries but tokenizer.ggml.tokens has {}", ty.size(), n));
        for (size_t i = 0; i < n; ++i) {
            const int32_t v = ty.at<int32_t>(i);
            if (v < 0 || v > 6)
                bad(f, "tokenizer.ggml.token_type", fmt::format("entry {} is {}, not a token type (0..6)", i, v));
            t->types[i] = static_cast<TokenType>(v);
        }
    }
    if (t->kind == VocabKind::Spm)  // a byte token stands for the byte its text names: <0xNN>
        for (size_t i = 0; i < n; ++i)
            if (t->types[i] == TokenType::Byte && t->tokens[i].starts_with("<0x") && !spm_byte_of(t->tokens[i]))
                throw Error(ErrorCode::InvalidFile,
                            fmt::format("GGUF file '{}': tokenizer.ggml.tokens: token {} ('{}') is a byte token "
                                        "(tokenizer.ggml.token_type 6) whose text is not <0xNN> with two hex "
                                        "digits; the vocabulary cannot be used (convert the model again with a "
                                        "current converter)",
                                        f.path(), i, printable(t->tokens[i])));
    // the model's rows beyond the tokens (a padded vocabulary), for the messages about such ids
    if (const gguf::Value* arch = f.find("general.architecture"); arch && arch->type() == ValueType::String) {
        const gguf::Value* vs = f.find(arch->get<std::string>() + ".vocab_size");
        const gguf::TensorInfo* embd = f.find_tensor("token_embd.weight");
        size_t rows = 0;
        if (vs && vs->type() == ValueType::UInt32) rows = vs->get<uint32_t>();
        else if (embd && embd->shape.size() == 2) rows = static_cast<size_t>(embd->shape[1]);
        if (rows > n) t->n_rows = rows;
    }
    allocating = fmt::format("the lookup table of {} tokens", n);
    t->ids.reserve(n);
    for (size_t i = 0; i < n; ++i) t->ids.emplace(t->tokens[i], static_cast<TokenId>(i));

    // special ids and flags; SentencePiece vocabularies default to <unk>=0, <s>=1, </s>=2
    const bool spm = t->kind == VocabKind::Spm;
    t->bos = id_key(f, "tokenizer.ggml.bos_token_id", n, spm && n > 1 ? 1 : kNoToken);
    t->eos = id_key(f, "tokenizer.ggml.eos_token_id", n, spm && n > 2 ? 2 : kNoToken);
    t->unk = id_key(f, "tokenizer.ggml.unknown_token_id", n, spm ? 0 : kNoToken);
    t->pad = id_key(f, "tokenizer.ggml.padding_token_id", n, kNoToken);
    t->eot = id_key(f, "tokenizer.ggml.eot_token_id", n, kNoToken);
    t->eom = id_key(f, "tokenizer.ggml.eom_token_id", n, kNoToken);
    if (f.has("tokenizer.ggml.pre")) {
        const gguf::Value& p = *f.find("tokenizer.ggml.pre");
        if (p.type() != ValueType::String)
            bad(f, "tokenizer.ggml.pre", fmt::format("is {}, expected string", p.type_name()));
        t->pre = p.get<std::string>();
    }
    t->add_bos = bool_key(f, "tokenizer.ggml.add_bos_token", spm || uses_llama3_rules(t->pre));
    t->add_eos = bool_key(f, "tokenizer.ggml.add_eos_token", false);
    t->add_space_prefix = bool_key(f, "tokenizer.ggml.add_space_prefix", spm);

    // end of generation: the declared ids plus the end-of-turn tokens of common chat formats
    for (TokenId id : {t->eos, t->eot, t->eom})
        if (id != kNoToken) t->eog.push_back(id);
    for (std::string_view s : {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
                               "<|end_of_text|>", "<EOT>", "<|eom_id|>", "<|return|>"}) {
        const auto it = t->ids.find(s);
        if (it != t->ids.end() && (t->types[it->second] == TokenType::Control ||
                                   t->types[it->second] == TokenType::UserDefined))
            t->eog.push_back(it->second);
    }
    std::sort(t->eog.begin(), t->eog.end());
    t->eog.erase(std::unique(t->eog.begin(), t->eog.end()), t->eog.end());

    for (size_t i = 0; i < n; ++i) {
        const TokenType ty = t->types[i];
        if ((ty == TokenType::Control || ty == TokenType::UserDefined || ty == TokenType::Unknown) &&
            !t->tokens[i].empty())
            t->specials.push_back(static_cast<TokenId>(i));
    }
    std::stable_sort(t->specials.begin(), t->specials.end(),
                     [&](TokenId a, TokenId b) { return t->tokens[a].size() > t->tokens[b].size(); });
    for (TokenId id : t->specials) {
        const auto first = static_cast<unsigned char>(t->tokens[id][0]);
        t->specials_by_byte[1][first].push_back(id);
        if (t->types[id] == TokenType::UserDefined) t->specials_by_byte[0][first].push_back(id);
    }

    std::fill(std::begin(t->byte_tokens), std::end(t->byte_tokens), kNoToken);
    if (spm) {
        for (int b = 0; b < 256; ++b) {
            const auto it = t->ids.find(fmt::format("<0x{:02X}>", b));
            if (it != t->ids.end()) t->byte_tokens[b] = it->second;
        }
    } else {
        try {
            t->pretok = std::make_unique<PreTokenizer>(t->pre);
        } catch (const Error& e) {
            throw Error(e.code(), fmt::format("GGUF file '{}': {}; this vocabulary needs a newer ember", f.path(), e.what()));
        }
        t->ignore_merges = uses_llama3_rules(t->pre);
        const gguf::Value& merges = array_key(f, "tokenizer.ggml.merges", ValueType::String);
        allocating = fmt::format("the table of {} merges", merges.size());
        t->merges.reserve(merges.size());
        for (size_t i = 0; i < merges.size(); ++i) {
            const std::string_view m = merges.string_at(i);
            const size_t sp = m.find(' ', 1);
            if (sp == std::string_view::npos)
                bad(f, "tokenizer.ggml.merges", fmt::format("entry {} ('{}') is not two tokens separated by a space", i, m));
            const std::string_view a = m.substr(0, sp), b = m.substr(sp + 1);
            const auto ia = t->ids.find(a), ib = t->ids.find(b);
            const auto ir = t->ids.find(std::string(a) + std::string(b));
            if (ia == t->ids.end() || ib == t->ids.end() || ir == t->ids.end())
                bad(f, "tokenizer.ggml.merges",
                    fmt::format("entry {} ('{}') names a token that is not in tokenizer.ggml.tokens ('{}')", i, m,
                                ia == t->ids.end() ? a : ib == t->ids.end() ? b : std::string(a) + std::string(b)));
            const uint64_t key = (static_cast<uint64_t>(static_cast<uint32_t>(ia->second)) << 32) |
                                 static_cast<uint32_t>(ib->second);
            t->merges.emplace(key, Impl::Merge{static_cast<int32_t>(i), ir->second});  // first (lowest) rank wins
        }
    }
    return t;
}

}  // namespace

Tokenizer Tokenizer::from_gguf(const gguf::File& f) {
    std::string allocating = "the vocabulary";
    try {
        return Tokenizer(load_vocab(f, allocating));
    } catch (const std::bad_alloc&) {
        throw Error(ErrorCode::OutOfMemory,
                    fmt::format("GGUF file '{}': out of memory allocating {} for the tokenizer; free memory or raise "
                                "the process's memory limit (ulimit -v)",
                                f.path(), allocating));
    }
}

VocabKind Tokenizer::kind() const noexcept { return impl_->kind; }
std::string_view Tokenizer::model_name() const noexcept { return impl_->model; }
std::string_view Tokenizer::pre_tokenizer() const noexcept { return impl_->pre; }
size_t Tokenizer::size() const noexcept { return impl_->tokens.size(); }
TokenId Tokenizer::bos() const noexcept { return impl_->bos; }
TokenId Tokenizer::eos() const noexcept { return impl_->eos; }
TokenId Tokenizer::eot() const noexcept { return impl_->eot; }
TokenId Tokenizer::unk() const noexcept { return impl_->unk; }
TokenId Tokenizer::pad() const noexcept { return impl_->pad; }
bool Tokenizer::add_bos() const noexcept { return impl_->add_bos; }
bool Tokenizer::add_eos() const noexcept { return impl_->add_eos; }
bool Tokenizer::add_space_prefix() const noexcept { return impl_->add_space_prefix; }
const std::vector<TokenId>& Tokenizer::eog_tokens() const noexcept { return impl_->eog; }

bool Tokenizer::is_eog(TokenId id) const noexcept {
    return std::binary_search(impl_->eog.begin(), impl_->eog.end(), id);
}

std::optional<TokenId> Tokenizer::find(std::string_view text) const noexcept {
    const auto it = impl_->ids.find(text);
    if (it == impl_->ids.end()) return std::nullopt;
    return it->second;
}

namespace {
void check_id(const Tokenizer::Impl& t, TokenId id) {
    const size_t n = t.tokens.size();
    if (id >= 0 && static_cast<size_t>(id) < n) return;
    if (id >= 0 && static_cast<size_t>(id) < t.n_rows)
        throw Error(ErrorCode::InvalidArgument,
                    fmt::format("token {} is outside the vocabulary of {} tokens; the model's {} output rows include "
                                "padding (ids {}..{} have no text)",
                                id, n, t.n_rows, n, t.n_rows - 1));
    throw Error(ErrorCode::InvalidArgument,
                fmt::format("token {} is outside the vocabulary of {} tokens (0..{})", id, n, n - 1));
}
}  // namespace

std::string_view Tokenizer::text(TokenId id) const {
    check_id(*impl_, id);
    return impl_->tokens[id];
}
TokenType Tokenizer::type(TokenId id) const {
    check_id(*impl_, id);
    return impl_->types[id];
}
float Tokenizer::score(TokenId id) const {
    check_id(*impl_, id);
    return impl_->scores[id];
}

}  // namespace ember
