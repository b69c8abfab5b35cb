// ember-tokenize: turn text into token ids with a model's (or a vocab-only
// file's) tokenizer.
//
//   ember-tokenize -m model.gguf -p "Hello world"          id<TAB>piece per line
//   ember-tokenize -m model.gguf --ids -f prompt.txt       ids on one line
//   echo "text" | ember-tokenize -m model.gguf             text from stdin
//
// Exit status: 0 on success (also when the reader of stdout goes away, as with
// `| head`); 1 on an error (the model, the text, writing stdout); 2 for a
// wrong command line.
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>
#include <string>

#include <fmt/format.h>

#include "common_stdout.hpp"
#include "ember/ember.hpp"

namespace {

constexpr const char* kUsage =
    "usage: ember-tokenize -m FILE [--ids] [--no-add-special] [--parse-special] [-p TEXT | -f FILE]\n"
    "                      [--no-mmap | -lm mmap|none]\n"
    "Tokenizes TEXT (-p), the contents of FILE (-f) or standard input.\n"
    "  --ids              print the ids on one line, space-separated\n"
    "                     (default: one 'id<TAB>piece' line per token)\n"
    "  --no-add-special   do not add BOS/EOS (added as the model's metadata says by default)\n"
    "  --parse-special    text such as <|im_start|> becomes its special token\n"
    "  --stats            print the token count and tokenization speed on stderr\n"
    "  --quiet            print no tokens (with --stats: a benchmark)\n"
    "  --no-mmap          read the file into memory instead of mapping it (default: mapped)\n"
    "  -lm, --load-mode MODE  mmap (the default) or none (as --no-mmap)\n"
    "  -h, --help         print this help\n"
    "  --version          print ember's version and build\n";

// A piece for display: printable UTF-8 as is, other bytes escaped.
std::string show(const std::string& piece) {
    std::string out;
    for (size_t i = 0; i < piece.size();) {
        const unsigned char c = static_cast<unsigned char>(piece[i]);
        size_t n = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
        bool ok = n > 0 && i + n <= piece.size();
        for (size_t k = 1; ok && k < n; ++k) ok = (static_cast<unsigned char>(piece[i + k]) & 0xC0) == 0x80;
        if (!ok) {
            out += fmt::format("\\x{:02x}", c);
            ++i;
        } else if (c == '\n') {
            out += "\\n", ++i;
        } else if (c == '\t') {
            out += "\\t", ++i;
        } else if (c == '\r') {
            out += "\\r", ++i;
        } else if (c < 0x20 || c == 0x7F) {
            out += fmt::format("\\x{:02x}", c), ++i;
        } else {
            out.append(piece, i, n);
            i += n;
        }
    }
    return out;
}

// Returns the exit status; stdout's failures are thrown (see common_stdout.hpp).
int tokenize(int argc, char** argv) {
    std::string model, text, file;
    bool have_text = false, ids_only = false, stats = false, quiet = false, use_mmap = true;
    ember::TokenizeOptions opt;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        auto value = [&](const char* what) -> std::string {
            if (i + 1 >= argc) {
                fmt::print(stderr, "ember-tokenize: {} needs a value\n", what);
                std::exit(2);
            }
            return argv[++i];
        };
        if (a == "-m" || a == "--model") model = value("-m");
        else if (a == "-p" || a == "--prompt") text = value("-p"), have_text = true;
        else if (a == "-f" || a == "--file") file = value("-f");
        else if (a == "--ids") ids_only = true;
        else if (a == "--no-add-special") opt.add_special = false;
        else if (a == "--parse-special") opt.parse_special = true;
        else if (a == "--stats") stats = true;
        else if (a == "--quiet") quiet = true;
        else if (a == "--no-mmap") use_mmap = false;
        else if (a == "--mmap") use_mmap = true;
        else if (a == "-lm" || a == "--load-mode") {
            const std::string v = value("--load-mode");
            if (v != "mmap" && v != "none") {
                fmt::print(stderr, "ember-tokenize: error: {} must be mmap or none, got '{}'\n{}", a, v, kUsage);
                return 2;
            }
            use_mmap = v == "mmap";
        }
        else if (a == "-h" || a == "--help") {
            ember_tools::write_out(kUsage);
            return 0;
        } else if (a == "--version") {
            ember_tools::print_out("ember-tokenize (ember {})\n{}", ember::version(), ember::build_info());
            return 0;
        } else {
            fmt::print(stderr, "ember-tokenize: error: unknown argument '{}'\n{}", a, kUsage);
            return 2;
        }
    }
    if (model.empty() || (have_text && !file.empty())) {
        std::fputs(kUsage, stderr);
        return 2;
    }
    if (!file.empty()) {
        std::ifstream in(file, std::ios::binary);
        if (!in) throw ember::Error(ember::ErrorCode::NotFound, fmt::format("cannot read '{}'", file));
        text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    } else if (!have_text) {
        std::ostringstream ss;
        ss << std::cin.rdbuf();
        text = ss.str();
    }
    const auto tok = ember::Tokenizer::from_gguf(ember::gguf::File::open(model, use_mmap));
    const auto t0 = std::chrono::steady_clock::now();
    const auto ids = tok.tokenize(text, opt);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (stats)
        fmt::print(stderr, "{} bytes -> {} tokens in {:.1f} ms: {:.0f} tokens/s, {:.2f} MB/s\n", text.size(),
                   ids.size(), s * 1e3, ids.size() / s, text.size() / s / 1e6);
    if (quiet) return 0;
    std::string out;
    if (ids_only) {
        for (size_t i = 0; i < ids.size(); ++i) out += fmt::format("{}{}", i ? " " : "", ids[i]);
        out += '\n';
    } else {
        for (auto id : ids) out += fmt::format("{}\t{}\n", id, show(tok.token_to_piece(id, true)));
    }
    ember_tools::write_out(out);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    ember_tools::init_stdout();  // a closed stdout is a normal end, not death by SIGPIPE
    try {
        const int status = tokenize(argc, argv);
        ember_tools::flush_out();
        return status;
    } catch (const ember_tools::StdoutClosed&) {
        return 0;  // the reader of stdout has gone (`| head`): nothing more to do, nothing to say
    } catch (const std::exception& e) {  // ember::Error, StdoutError, ...
        fmt::print(stderr, "ember-tokenize: error: {}\n", e.what());
        return 1;
    }
}
