#include "tokenizer/pretokenizer.hpp"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "ember/error.hpp"

namespace ember {

namespace {

// The regular expressions of each pre-tokenizer, from the models' tokenizer
// definitions (tokenizer.json pre_tokenizer sections).
constexpr const char* kGpt2 =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
constexpr const char* kLlama3 =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
constexpr const char* kQwen2 =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
constexpr const char* kCjk = "[\\x{4E00}-\\x{9FA5}\\x{800}-\\x{4E00}\\x{AC00}-\\x{D7FF}]+";

struct Known {
    const char* name;
    std::vector<const char*> stages;
};

const std::vector<Known>& table() {
    static const std::vector<Known> t = {
        // no tokenizer.ggml.pre: GPT-2's rules
        {"", {kGpt2}},
        {"gpt-2", {kGpt2}},
        {"mpt", {kGpt2}},
        {"olmo", {kGpt2}},
        {"phi-2", {kGpt2}},
        // "default" for a BPE vocabulary: Llama 3 style
        {"default", {kLlama3}},
        {"llama3", {kLlama3}},
        {"llama-bpe", {kLlama3}},
        {"llama-v3", {kLlama3}},
        {"dbrx", {kLlama3}},
        {"smaug-bpe", {kLlama3}},
        // digits one by one, then GPT-2's rules
        {"starcoder", {"\\p{N}", kGpt2}},
        {"refact", {"\\p{N}", kGpt2}},
        {"command-r", {"\\p{N}", kGpt2}},
        {"smollm", {"\\p{N}", kGpt2}},
        {"codeshell", {"\\p{N}", kGpt2}},
        {"qwen2", {kQwen2}},
        {"falcon", {"[\\p{P}\\$\\+<=>\\^~\\|`]+", kGpt2, "[0-9][0-9][0-9]"}},
        {"deepseek-llm",
         {"[\r\n]",
          "\\s?[A-Za-z\\x{B5}\\x{C0}-\\x{D6}\\x{D8}-\\x{F6}\\x{F8}-\\x{1BA}\\x{1BC}-\\x{1BF}\\x{1C4}-"
          "\\x{293}\\x{295}-\\x{2AF}\\x{370}-\\x{373}\\x{376}\\x{377}\\x{37B}-\\x{37D}\\x{37F}\\x{386}"
          "\\x{388}-\\x{38A}\\x{38C}\\x{38E}-\\x{3A1}\\x{3A3}-\\x{3F5}\\x{3F7}-\\x{481}\\x{48A}-\\x{52F}"
          "\\x{531}-\\x{556}\\x{10A0}-\\x{10C5}\\x{13A0}-\\x{13F5}\\x{13F8}-\\x{13FD}\\x{1C90}-\\x{1CBA}"
          "\\x{1CBD}-\\x{1CBF}\\x{1D00}-\\x{1D2B}\\x{1D6B}-\\x{1D77}\\x{1D79}-\\x{1D9A}\\x{1E00}-\\x{1F15}"
          "\\x{1F18}-\\x{1F1D}\\x{1F20}-\\x{1F45}\\x{1F48}-\\x{1F4D}\\x{1F50}-\\x{1F57}\\x{1F59}\\x{1F5B}"
          "\\x{1F5D}\\x{1F5F}-\\x{1F7D}\\x{1F80}-\\x{1FB4}\\x{1FB6}-\\x{1FBC}\\x{1FBE}\\x{1FC2}-\\x{1FC4}"
          "\\x{1FC6}-\\x{1FCC}\\x{1FD0}-\\x{1FD3}\\x{1FD6}-\\x{1FDB}\\x{1FE0}-\\x{1FEC}\\x{1FF2}-\\x{1FF4}"
          "\\x{1FF6}-\\x{1FFC}\\x{2102}\\x{2107}\\x{210A}-\\x{2113}\\x{2115}\\x{2119}-\\x{211D}\\x{2124}"
          "\\x{2126}\\x{2128}\\x{212A}-\\x{212D}\\x{212F}-\\x{2134}\\x{2139}\\x{213C}-\\x{213F}\\x{2145}-"
          "\\x{2149}\\x{214E}\\x{2183}\\x{2184}\\x{2C00}-\\x{2C7B}\\x{2C7E}-\\x{2CE4}\\x{2CEB}-\\x{2CEE}"
          "\\x{2CF2}\\x{2CF3}\\x{A640}-\\x{A66D}\\x{A680}-\\x{A69B}\\x{A722}-\\x{A76F}\\x{A771}-\\x{A787}"
          "\\x{A78B}-\\x{A78E}\\x{AB70}-\\x{ABBF}\\x{FB00}-\\x{FB06}\\x{FB13}-\\x{FB17}\\x{FF21}-\\x{FF3A}"
          "\\x{FF41}-\\x{FF5A}\\x{10400}-\\x{1044F}\\x{104B0}-\\x{104D3}\\x{104D8}-\\x{104FB}\\x{10C80}-"
          "\\x{10CB2}\\x{10CC0}-\\x{10CF2}\\x{118A0}-\\x{118DF}\\x{1E900}-\\x{1E943}]+",
          "\\s?[!-/:-~\\x{FF01}-\\x{FF0F}\\x{FF1A}-\\x{FF5E}\\x{2018}-\\x{201F}\\x{3000}-\\x{3002}]+", "\\s+$", kCjk, "\\p{N}+"}},
        {"deepseek-coder", {"[\r\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", kCjk, "\\p{N}"}},
    };
    return t;
}

}  // namespace

struct PreTokenizer::Regex {
    pcre2_code* code = nullptr;
    ~Regex() { pcre2_code_free(code); }
};

PreTokenizer::PreTokenizer(std::string_view name) {
    const Known* k = nullptr;
    for (const Known& e : table())
        if (name == e.name) k = &e;
    if (!k)
        throw Error(ErrorCode::Unsupported,
                    fmt::format("tokenizer.ggml.pre '{}' is not a pre-tokenizer ember knows; known: {}", name,
                                fmt::join(known_names(), ", ")));
    for (const char* pattern : k->stages) {
        int err = 0;
        PCRE2_SIZE at = 0;
        auto r = std::make_unique<Regex>();
        // invalid UTF-8 in the text is allowed: it never matches, so it stays in the gaps
        r->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern), PCRE2_ZERO_TERMINATED,
                                PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &err, &at, nullptr);
        if (!r->code) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(err, msg, sizeof msg);
            throw Error(ErrorCode::Internal, fmt::format("pre-tokenizer '{}': regex does not compile at {}: {}", name, at,
                                                         reinterpret_cast<const char*>(msg)));
        }
        pcre2_jit_compile(r->code, PCRE2_JIT_COMPLETE);  // falls back to the interpreter if JIT is unavailable
        stages_.push_back(std::move(r));
    }
}

PreTokenizer::~PreTokenizer() = default;

const std::vector<std::string>& PreTokenizer::known_names() {
    static const std::vector<std::string> names = [] {
        std::vector<std::string> n;
        for (const Known& e : table())
            if (*e.name) n.emplace_back(e.name);
        return n;
    }();
    return names;
}

void PreTokenizer::split(std::string_view text, std::vector<std::pair<size_t, size_t>>& out) const {
    std::vector<std::pair<size_t, size_t>> cur{{0, text.size()}}, next;
    if (text.empty()) return;
    pcre2_match_data* md = pcre2_match_data_create(1, nullptr);
    if (!md) throw Error(ErrorCode::OutOfMemory, "pre-tokenizer: cannot allocate PCRE2 match data");
    for (const auto& stage : stages_) {
        next.clear();
        for (auto [b, e] : cur) {
            // the piece is the whole subject: anchors and look-arounds stop at its ends
            const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data() + b);
            const size_t len = e - b;
            size_t pos = 0, gap = 0;
            while (pos < len) {
                const int rc = pcre2_match(stage->code, subject, len, pos, 0, md, nullptr);
                if (rc < 0) break;  // no further match (or an error: the rest stays one piece)
                const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
                size_t ms = ov[0], me = ov[1];
                if (me == ms) {  // empty match: not a piece; move past one character
                    pos = ms + 1;
                    while (pos < len && (static_cast<unsigned char>(text[b + pos]) & 0xC0) == 0x80) ++pos;
                    continue;
                }
                if (ms > gap) next.emplace_back(b + gap, b + ms);
                next.emplace_back(b + ms, b + me);
                gap = pos = me;
            }
            if (gap < len) next.emplace_back(b + gap, e);
        }
        cur.swap(next);
    }
    pcre2_match_data_free(md);
    out.insert(out.end(), cur.begin(), cur.end());
}

}  // namespace ember
