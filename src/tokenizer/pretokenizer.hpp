// Pre-tokenization for byte-level BPE: the text is cut into pieces by a
// sequence of regular expressions (each applied to every piece the previous
// one produced; matches and the text between them both become pieces, as
// Hugging Face's Split(behavior=Isolated) does). Unicode classes come from
// PCRE2's tables.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace ember {

class PreTokenizer {
public:
    // Throws ember::Error(Unsupported) naming `name` when it is not known.
    explicit PreTokenizer(std::string_view name);
    ~PreTokenizer();
    PreTokenizer(const PreTokenizer&) = delete;
    PreTokenizer& operator=(const PreTokenizer&) = delete;

    // Appends the [begin, end) byte ranges of the pieces of `text` to `out`.
    void split(std::string_view text, std::vector<std::pair<size_t, size_t>>& out) const;

    // The names this build understands.
    static const std::vector<std::string>& known_names();

private:
    struct Regex;
    std::vector<std::unique_ptr<Regex>> stages_;
};

}  // namespace ember
