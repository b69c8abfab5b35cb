// libFuzzer target for the tokenizers: any bytes, with and without special
// tokens parsed, through an SPM and a BPE vocabulary (and two more BPE
// pre-tokenizers) must tokenize without crashing, every id must be in range,
// and valid UTF-8 text must come back unchanged from detokenize() (for SPM,
// text without a literal U+2581, which SentencePiece reads as a space).
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "ember/ember.hpp"
#include "common/utf8.hpp"

namespace {

struct Vocabs {
    std::vector<ember::Tokenizer> toks;
    std::vector<bool> check_roundtrip;
    Vocabs() {
        const char* dir = std::getenv("EMBER_FUZZ_VOCAB_DIR");
        const std::string d = dir ? dir : "../shared/vocab";
        const std::pair<const char*, bool> files[] = {{"ggml-vocab-llama-spm.gguf", true},
                                                      {"ggml-vocab-gpt-2.gguf", true},
                                                      {"ggml-vocab-starcoder.gguf", false},
                                                      {"ggml-vocab-deepseek-llm.gguf", false}};
        for (auto [f, rt] : files) {
            toks.push_back(ember::Tokenizer::from_gguf(ember::gguf::File::open(d + "/" + f)));
            check_roundtrip.push_back(rt);
        }
    }
};

bool valid_utf8(std::string_view s) {
    for (size_t i = 0; i < s.size();) {
        bool ok = true;
        ember::utf8_next(s, i, &ok);
        if (!ok) return false;
    }
    return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static const Vocabs v;  // loaded once (throws, and so stops the run, if the files are absent)
    if (size == 0) return 0;
    const size_t which = data[0] % v.toks.size();
    const bool parse_special = data[0] & 0x80;
    const std::string text(reinterpret_cast<const char*>(data + 1), size - 1);
    const ember::Tokenizer& tok = v.toks[which];
    const auto ids = tok.tokenize(text, {.add_special = true, .parse_special = parse_special});
    for (auto id : ids)
        if (id < 0 || static_cast<size_t>(id) >= tok.size()) std::abort();
    const std::string back = tok.detokenize(ids, {.remove_special = true, .render_special = parse_special});
    const bool spm_space = tok.kind() == ember::VocabKind::Spm && text.find("\xE2\x96\x81") != std::string::npos;
    if (v.check_roundtrip[which] && !parse_special && valid_utf8(text) && !spm_space && back != text) std::abort();
    ember::StreamingDetokenizer sd(tok);
    for (auto id : ids) (void)sd.push(id);
    (void)sd.flush();
    return 0;
}
