// ember-run: one-shot generation -- continue a prompt, stream the text.
//
//   ember-run -m model.gguf -p "The capital of France is" -n 32 --temp 0
//   ember-run -m model.gguf -f prompt.txt --stop "\n\n"
//
// stdout carries only the generated text (with --echo, the prompt first),
// flushed piece by piece; everything else -- the model line, warnings, errors
// and the closing timing line -- goes to stderr. When the reader of stdout goes
// away (`| head -c 100`), the generation stops there and the tool ends with 0.
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <span>
#include <system_error>
#include <vector>
#include <cstring>
#include <string>
#include <string_view>

#include <fmt/format.h>
#include <unistd.h>

#include "common_args.hpp"
#include "common_interrupt.hpp"
#include "common_report.hpp"
#include "common_stdout.hpp"
#include "common_utf8.hpp"
#include "ember/ember.hpp"

namespace {

using ember_tools::UsageError;

struct RunOptions {
    ember_tools::CommonOptions common;
    std::string prompt;       // -p
    std::string prompt_file;  // -f
    bool have_prompt = false;
    bool echo = false;
    std::string prompt_cache;  // --prompt-cache FILE
};

std::string help() {
    return "usage: ember-run -m FILE (-p TEXT | -f FILE) [options]\n"
           "Generates text that continues a prompt. stdout carries only the generated text,\n"
           "streamed as it comes; the model line, warnings, errors and a closing timing line\n"
           "go to stderr. Ctrl-C stops the generation (the timing line is still printed);\n"
           "a second Ctrl-C exits at once.\n"
           "\n"
           "prompt:\n"
           "  -p, --prompt TEXT         the prompt (special tokens such as <|im_start|> are parsed;\n"
           "                            BOS is added when the model asks for it)\n"
           "  -f, --file FILE           read the prompt from FILE ('-' = standard input)\n"
           "  --echo                    print the prompt before the generated text\n"
           "  --prompt-cache FILE       reuse the session state saved in FILE (the longest prefix of\n"
           "                            the prompt it holds is not evaluated again), then save the\n"
           "                            state after the prompt into FILE (llama.cpp's flag); a saved\n"
           "                            state that cannot be used (another model, -c, --kv-type;\n"
           "                            damaged) is said on stderr and replaced; a FILE that is not\n"
           "                            a session state is an error, and left as it is\n" +
           ember_tools::common_help(RunOptions{}.common, /*with_run_flags=*/true) +
           "other:\n"
           "  -h, --help                print this help\n"
           "  --version                 print ember's version and build\n"
           "\n"
           "Exit status: 0 on success, also when the reader of stdout goes away (the generation\n"
           "then stops); 1 on any error (one 'ember-run: error: ...' line on stderr); 130 after\n"
           "Ctrl-C.\n";
}

// Parses the command line; returns false when it was -h or --version (printed).
bool parse(int argc, char** argv, RunOptions& opt) {
    ember_tools::ArgReader args(argc, argv);
    while (!args.done()) {
        const std::string f = args.next();
        if (f == "-p" || f == "--prompt") {
            opt.prompt = args.value(f);
            opt.have_prompt = true;
        } else if (f == "-f" || f == "--file") opt.prompt_file = args.value(f);
        else if (f == "--echo") opt.echo = true;
        else if (f == "--prompt-cache") opt.prompt_cache = args.value(f);
        else if (f == "-h" || f == "--help") {
            ember_tools::write_out(help());
            return false;
        } else if (f == "--version") {
            ember_tools::print_out("ember-run (ember {})\n{}", ember::version(), ember::build_info());
            return false;
        } else if (!ember_tools::parse_common_flag(f, args, opt.common, /*with_run_flags=*/true)) {
            throw UsageError(fmt::format("unknown argument '{}' (see --help)", f));
        }
    }
    if (opt.have_prompt && !opt.prompt_file.empty()) throw UsageError("give the prompt with -p or with -f, not both");
    ember_tools::validate(opt.common);
    if (!opt.have_prompt && opt.prompt_file.empty()) throw UsageError("no prompt: pass -p TEXT or -f FILE");
    return true;
}

// The whole of a file ("-": standard input), as bytes.
std::string read_file(const std::string& path) {
    std::FILE* in = path == "-" ? stdin : std::fopen(path.c_str(), "rb");
    if (in == nullptr)
        throw UsageError(fmt::format("cannot open the prompt file '{}': {}", path, std::strerror(errno)));
    std::string text;
    char buf[65536];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, in)) > 0) text.append(buf, n);
    const bool failed = std::ferror(in) != 0;
    const int err = errno;
    if (in != stdin) std::fclose(in);
    if (failed) throw UsageError(fmt::format("cannot read the prompt file '{}': {}", path, std::strerror(err)));
    return text;
}

// --prompt-cache: loads the state saved in `path` (when there is one and it fits this
// session), keeps the longest prefix of the prompt's tokens it holds, evaluates the
// rest, saves the state (the whole prompt evaluated) back to `path`, and returns
// what is left for generate(): nothing, as the prompt is then in the cache.
std::vector<ember::TokenId> prompt_from_cache(ember::Session& session, const std::string& prompt,
                                              const ember_tools::CommonOptions& common, const std::string& path) {
    const auto t0 = std::chrono::steady_clock::now();
    const ember::GenerateParams& gp = common.generate;
    ember::TokenizeOptions to;
    to.add_special = gp.add_special;
    to.parse_special = gp.parse_special;
    const std::vector<ember::TokenId> tokens = session.model()->tokenize(prompt, to);
    if (tokens.empty()) return tokens;  // generate() says what is wrong with an empty prompt
    size_t reused = 0;
    std::error_code ec;
    if (std::filesystem::exists(path, ec)) {
        // a file that is not a session state (a model, a text given by mistake) is never
        // read whole, let alone replaced
        if (!std::filesystem::is_regular_file(path, ec))
            throw UsageError(fmt::format("--prompt-cache '{}' is not a regular file; give the path of a state file "
                                         "(or of one to create)",
                                         path));
        char magic[8] = {};
        std::FILE* f = std::fopen(path.c_str(), "rb");
        const size_t got = f != nullptr ? std::fread(magic, 1, sizeof magic, f) : 0;
        if (f != nullptr) std::fclose(f);
        if (f == nullptr)
            throw UsageError(fmt::format("--prompt-cache '{}': cannot read it: {}", path, std::strerror(errno)));
        if (got > 0 && (got < sizeof magic || std::memcmp(magic, "EMBRSTAT", sizeof magic) != 0))
            throw UsageError(fmt::format("--prompt-cache '{}' is not an ember session state (it does not start "
                                         "with EMBRSTAT); it was left as it is: give another path",
                                         path));
        try {
            session.load(path);
            const auto cached = session.tokens();
            const size_t same = static_cast<size_t>(
                std::mismatch(tokens.begin(), tokens.end(), cached.begin(), cached.end()).first - tokens.begin());
            // the whole prompt cached, and nothing after it: its logits were saved with it;
            // otherwise at least the prompt's last token is evaluated, for its logits
            const bool exact = same == tokens.size() && cached.size() == tokens.size() && !session.logits().empty();
            reused = exact ? same : std::min(same, tokens.size() - 1);
            session.truncate(reused);
        } catch (const ember::Error& e) {
            if (e.code() == ember::ErrorCode::Cancelled) throw;
            fmt::print(stderr, "ember-run: prompt cache '{}' not used (it will be replaced): {}\n", path, e.what());
            session.reset();
            reused = 0;
        }
    }
    const double load_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    const auto t1 = std::chrono::steady_clock::now();
    if (reused < tokens.size()) session.eval(std::span(tokens).subspan(reused));
    const double eval_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t1).count();
    const auto t2 = std::chrono::steady_clock::now();
    std::string saved = "saved";
    if (reused == tokens.size()) {
        saved = "unchanged, not saved again";  // the file holds this state already (no flash write)
    } else {
        try {
            session.save(path);
        } catch (const ember::Error& e) {
            saved = fmt::format("not saved: {}", e.what());  // generation still goes on
        }
    }
    const double save_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t2).count();
    fmt::print(stderr,
               "ember-run: prompt cache '{}': {} of {} prompt tokens reused ({:.1f} ms to load), {} evaluated "
               "({:.1f} ms), {} ({:.1f} ms)\n",
               path, reused, tokens.size(), load_ms, tokens.size() - reused, eval_ms, saved, save_ms);
    return {};
}

int run(const RunOptions& opt) {
    std::string prompt = opt.have_prompt ? opt.prompt : read_file(opt.prompt_file);
    if (const size_t at = ember_tools::utf8_error_at(prompt); at < prompt.size())
        throw UsageError(fmt::format("the prompt {} is not valid UTF-8 at byte {} (0x{:02x}); convert it to UTF-8",
                                     opt.have_prompt ? "(-p)" : fmt::format("file '{}'", opt.prompt_file), at,
                                     static_cast<unsigned char>(prompt[at])));
    const auto& common = opt.common;
    if (common.random_seed) fmt::print(stderr, "ember-run: seed {}\n", common.generate.sampling.seed);

    ember_tools::Interrupts interrupts;  // before loading: Ctrl-C during the load just exits
    const auto model =
        ember::Model::load(common.model_path, common.model, common.load, common.session_options.memory_budget);
    const auto adapters = ember_tools::load_adapters(model, common.lora);  // --lora, --lora-scaled
    ember::Session session(model, common.session, common.session_options);
    session.set_precision(common.precision);
    if (!adapters.empty()) session.set_adapters(adapters);
    // From here on Ctrl-C cancels the session (held until generate() takes it, which then
    // returns at once as cancelled: exit status 130), never kills the process: the line below
    // tells a script the session exists, and a Ctrl-C right after it must find the watch in place.
    ember_tools::Watch watch(interrupts, session);
    for (const auto& w : session.warnings()) fmt::print(stderr, "ember-run: warning: {}\n", w);
    fmt::print(stderr, "ember-run: {}\n", ember_tools::describe(*model, session));
    for (const auto& a : adapters) fmt::print(stderr, "ember-run: lora: {}\n", ember_tools::describe_adapter(a));

    const bool echoed = !opt.echo || ember_tools::stream_out(prompt);
    char last = opt.echo && !prompt.empty() ? prompt.back() : '\n';
    ember::GenerateResult result;
    bool by_ctrl_c = false;
    std::string failure;  // an error part-way: the text so far was printed; said after it
    if (echoed) {
        // a Ctrl-C while the prompt is tokenized is held by the session: generate() then
        // returns at once as cancelled, and the exit status is 130
        const auto on_piece = [&](std::string_view piece) {
            if (!ember_tools::stream_out(piece)) return false;  // stdout failed: stop generating
            if (!piece.empty()) last = piece.back();
            return true;
        };
        try {
            if (opt.prompt_cache.empty()) {
                result = session.generate(prompt, common.generate, common.constraint, on_piece);
            } else {
                const std::vector<ember::TokenId> tokens = prompt_from_cache(session, prompt, common, opt.prompt_cache);
                result = session.generate(tokens, common.generate, common.constraint, on_piece);
            }
        } catch (const ember::GenerateError& e) {
            result = e.result();  // what was generated before the cancel or the error
            if (e.code() != ember::ErrorCode::Cancelled) failure = e.what();
        } catch (const ember::Error& e) {  // --prompt-cache's evaluation of the prompt
            if (e.code() != ember::ErrorCode::Cancelled) failure = e.what();
        }
        by_ctrl_c = interrupts.interrupted();
    }
    // A closed stdout (its reader has gone) stopped the generation: a normal end,
    // reported by the timing line as any stop is. Any other write error is an error.
    if (!ember_tools::stdout_closed()) {
        // The output ends with a newline, on a terminal (the shell prompt on a line of
        // its own) and in a pipe or file (a text file's last line is complete).
        if (last != '\n') ember_tools::stream_out("\n");
        ember_tools::check_stdout();
    }
    fmt::print(stderr, "{}\n", ember_tools::timing_line(result));
    if (!failure.empty()) {
        fmt::print(stderr, "ember-run: error: {}\n", failure);
        return 1;
    }
    return by_ctrl_c ? 130 : 0;
}

}  // namespace

int main(int argc, char** argv) {
    ember_tools::init_stdout();  // a closed stdout is a normal end, not death by SIGPIPE
    try {
        RunOptions opt;
        if (!parse(argc, argv, opt)) {
            ember_tools::flush_out();  // --help, --version
            return 0;
        }
        return run(opt);
    } catch (const ember_tools::StdoutClosed&) {
        return 0;  // the reader of stdout has gone (`| head`): nothing more to do, nothing to say
    } catch (const std::exception& e) {
        fmt::print(stderr, "ember-run: error: {}\n", e.what());
    } catch (...) {
        fmt::print(stderr, "ember-run: error: unknown exception\n");
    }
    return 1;
}
