// ember-chat: talk with a chat model, one user line at a time, with history.
//
//   ember-chat -m model.gguf                         interactive on a terminal
//   printf 'Hi\nAnd then?\n' | ember-chat -m m.gguf  one reply line per message
//
// Each turn renders the whole conversation with the model's chat template,
// tokenizes it, keeps the longest prefix the session's KV cache already holds
// and evaluates only the rest, so a long conversation costs only its new part.
#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <fstream>
#include <iterator>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common_args.hpp"
#include "common_interrupt.hpp"
#include "common_report.hpp"
#include "common_stdout.hpp"
#include "common_utf8.hpp"
#include "ember/ember.hpp"

namespace {

using ember_tools::UsageError;

struct ChatOptions {
    ember_tools::CommonOptions common;
    std::string system;  // -sys / -sysf
    bool timings = false;  // --timings
    bool parse_special = false;  // --parse-special: control-token text in messages is parsed
    std::string save_path;       // --save FILE: the conversation after each reply
    std::string load_path;       // --load FILE: the conversation to continue
    ChatOptions() { common.generate.max_tokens = -1; }  // a reply ends where the model ends it
};

std::string help() {
    return "usage: ember-chat -m FILE [-sys TEXT | -sysf FILE] [options]\n"
           "Chats with a model using its chat template. Each line read from standard input is\n"
           "a user message; the conversation is kept, and only its new part is evaluated.\n"
           "  /reset    forget the conversation (the system prompt stays)\n"
           "  /quit     exit (as does end of input); /exit works too\n"
           "Empty lines are ignored. Ctrl-C stops a reply (what was shown of it stays in the\n"
           "conversation); at the prompt, Ctrl-C exits.\n"
           "\n"
           "On a terminal the tool shows a '> ' prompt. When standard input is not a terminal\n"
           "(a script, a pipe), stdout carries nothing but the replies, one line per message:\n"
           "a line break inside a reply is written as \\n, a backslash as \\\\, a carriage return\n"
           "as \\r, and a message that fails gets an empty line (the error is on stderr).\n"
           "\n"
           "When the conversation no longer leaves room for a reply (-n tokens, or a quarter of\n"
           "the context with -n -1), the oldest exchanges are dropped -- the system prompt stays --\n"
           "and stderr says so.\n"
           "\n"
           "chat:\n"
           "  -sys, --system-prompt TEXT  system prompt (default: the template's own, if any);\n"
           "                            --system is the same\n"
           "  -sysf, --system-prompt-file FILE  the system prompt read from FILE (UTF-8)\n"
           "  -s, --seed N              the random seed, as llama.cpp's -s (see --seed below)\n"
           "  --timings                 after each reply, print on stderr the tokens reused from the\n"
           "                            cache and a timing line (prompt here = the new part only)\n"
           "  --parse-special           control-token text typed in a message (e.g. <|im_start|>)\n"
           "                            becomes the control token; by default it stays text, so a\n"
           "                            message cannot open a turn of another role\n"
           "  --load FILE               continue the conversation saved in FILE (its messages and\n"
           "                            the session state: nothing is evaluated again); the same\n"
           "                            model, -c at least as large and the same --kv-type are\n"
           "                            needed. The saved system prompt is kept\n"
           "  --save FILE               after each reply (and /reset), save the conversation to FILE,\n"
           "                            atomically (a temporary file renamed over it), so that a\n"
           "                            restart with --load FILE goes on where it stopped\n" +
           ember_tools::common_help(ChatOptions{}.common, /*with_run_flags=*/false) +
           "other:\n"
           "  -h, --help                print this help\n"
           "  --version                 print ember's version and build\n"
           "\n"
           "Exit status: 0 at /quit, at end of input or when the reader of stdout goes away (the\n"
           "reply then stops); 1 when the model cannot be loaded, the command line is wrong,\n"
           "stdout cannot be written (one 'ember-chat: error: ...' line on stderr), or every\n"
           "message sent failed; death by SIGINT after Ctrl-C at the prompt.\n";
}

// Parses the command line; returns false when it was -h or --version (printed).
bool parse(int argc, char** argv, ChatOptions& opt) {
    ember_tools::ArgReader args(argc, argv);
    while (!args.done()) {
        const std::string f = args.next();
        if (f == "-sys" || f == "--system-prompt" || f == "--system") {
            opt.system = args.value(f);
        } else if (f == "-sysf" || f == "--system-prompt-file") {
            const std::string path = args.value(f);
            std::ifstream in(path, std::ios::binary);
            if (!in) throw UsageError(fmt::format("{}: cannot read '{}'", f, path));
            opt.system.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
            while (!opt.system.empty() && (opt.system.back() == '\n' || opt.system.back() == '\r'))
                opt.system.pop_back();  // a file's final newline is not part of the prompt
            if (const size_t at = ember_tools::utf8_error_at(opt.system); at < opt.system.size())
                throw UsageError(fmt::format("{}: '{}' is not valid UTF-8 at byte {}", f, path, at));
        } else if (f == "-s") {  // llama.cpp's spelling of --seed
            if (!ember_tools::parse_common_flag("--seed", args, opt.common, /*with_run_flags=*/false))
                throw UsageError("-s: the seed could not be read");
        }
        else if (f == "--timings")
            opt.timings = true;
        else if (f == "--parse-special")
            opt.parse_special = true;
        else if (f == "--save")
            opt.save_path = args.value(f);
        else if (f == "--load")
            opt.load_path = args.value(f);
        else if (f == "-h" || f == "--help") {
            ember_tools::write_out(help());
            return false;
        } else if (f == "--version") {
            ember_tools::print_out("ember-chat (ember {})\n{}", ember::version(), ember::build_info());
            return false;
        } else if (!ember_tools::parse_common_flag(f, args, opt.common, /*with_run_flags=*/false)) {
            throw UsageError(fmt::format("unknown argument '{}' (see --help)", f));
        }
    }
    ember_tools::validate(opt.common);
    return true;
}

// The conversation: its messages and the session whose cache follows them.
class Chat {
public:
    Chat(std::shared_ptr<const ember::Model> model, ember::Session& session, const ChatOptions& opt)
        : model_(std::move(model)), session_(session), params_(opt.common.generate), constraint_(opt.common.constraint),
          parse_special_(opt.parse_special) {
        if (!opt.system.empty()) history_.push_back({"system", opt.system});
        first_ = history_.size();
    }

    // Forgets the conversation (but the system prompt).
    void reset() {
        history_.resize(first_);
        session_.reset();
    }

    // Adds the user's message, generates the reply (streamed to on_piece) and
    // records it. On an error the message is forgotten and the error rethrown.
    ember::GenerateResult turn(const std::string& message, const ember::PieceCallback& on_piece) {
        history_.push_back({"user", message});
        try {
            const std::vector<ember::TokenId> prompt = fit();
            if (session_.cancel_pending())  // a Ctrl-C held from before: returns at once, the cache as it is
                return session_.generate(std::span<const ember::TokenId>(), params_, on_piece);
            // The longest prefix the cache already holds; at least one token is
            // evaluated, so that the logits are those of the prompt's end.
            const auto cached = session_.tokens();
            const auto diverge = std::mismatch(prompt.begin(), prompt.end(), cached.begin(), cached.end()).first;
            const size_t keep = std::min(static_cast<size_t>(diverge - prompt.begin()), prompt.size() - 1);
            session_.truncate(keep);
            reused_ = keep;
            ember::GenerateResult r;
            try {
                r = session_.generate(std::span(prompt).subspan(keep), params_, constraint_, on_piece);
            } catch (const ember::GenerateError& e) {
                if (e.code() != ember::ErrorCode::Cancelled || e.result().tokens.empty()) throw;
                r = e.result();  // a reply stopped by Ctrl-C: what was shown of it stays in the conversation
            }
            history_.push_back({"assistant", r.text});
            return r;
        } catch (...) {
            history_.pop_back();
            throw;
        }
    }

    // Tokens of the last turn's prompt that the cache already held.
    size_t reused() const { return reused_; }

    // The conversation file of --save / --load: "EMBRCHAT", a version, the messages
    // (role and content, each a u32 length and its bytes), a 64-bit hash of them,
    // then the session's state (Session::save's bytes, with their own checksum).
    void save(const std::string& path) const {
        std::string out = kChatMagic;
        put_u32(out, kChatVersion);
        put_u32(out, static_cast<uint32_t>(history_.size()));
        put_u32(out, static_cast<uint32_t>(first_));
        for (const auto& m : history_) {
            put_str(out, m.role);
            put_str(out, m.content);
        }
        put_u64(out, hash(std::string_view(out).substr(8)));
        const std::vector<uint8_t> state = session_.save();
        put_u64(out, state.size());
        out.append(reinterpret_cast<const char*>(state.data()), state.size());
        write_atomically(path, out);
    }

    void load(const std::string& path) {
        struct stat st {};
        if (::stat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode))  // a FIFO would block the open
            throw ember::Error(ember::ErrorCode::InvalidArgument,
                               fmt::format("--load '{}' is not a regular file", path));
        std::ifstream in(path, std::ios::binary);
        if (!in) throw ember::Error(ember::ErrorCode::NotFound, fmt::format("--load '{}': cannot open it", path));
        const std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        size_t at = 0;
        auto need = [&](size_t n) {
            if (data.size() - at < n)
                throw ember::Error(ember::ErrorCode::InvalidFile,
                                   fmt::format("--load '{}': truncated at byte {} (the file has {})", path, at,
                                               data.size()));
        };
        auto u32 = [&] {
            need(4);
            uint32_t v = 0;
            std::memcpy(&v, data.data() + at, 4);
            at += 4;
            return v;
        };
        auto u64 = [&] {
            need(8);
            uint64_t v = 0;
            std::memcpy(&v, data.data() + at, 8);
            at += 8;
            return v;
        };
        auto str = [&] {
            const uint32_t n = u32();
            need(n);
            std::string v = data.substr(at, n);
            at += n;
            return v;
        };
        need(8);
        if (data.compare(0, 8, kChatMagic) != 0)
            throw ember::Error(ember::ErrorCode::InvalidFile,
                               fmt::format("--load '{}': not a conversation saved by ember-chat --save", path));
        at = 8;
        if (const uint32_t v = u32(); v != kChatVersion)
            throw ember::Error(ember::ErrorCode::InvalidFile,
                               fmt::format("--load '{}': conversation format version {}; this ember-chat reads {}",
                                           path, v, kChatVersion));
        const uint32_t n = u32();
        const uint32_t first = u32();
        if (first > n || n > data.size() / 8)
            throw ember::Error(ember::ErrorCode::InvalidFile, fmt::format("--load '{}': corrupted (counts)", path));
        std::vector<ember::ChatMessage> messages;
        for (uint32_t i = 0; i < n; ++i) {
            std::string role = str();
            std::string content = str();
            messages.push_back({std::move(role), std::move(content)});
        }
        const size_t end = at;
        if (u64() != hash(std::string_view(data).substr(8, end - 8)))
            throw ember::Error(ember::ErrorCode::InvalidFile,
                               fmt::format("--load '{}': corrupted (the messages' checksum does not match)", path));
        const uint64_t state_size = u64();
        need(state_size);
        if (data.size() - at != state_size)
            throw ember::Error(ember::ErrorCode::InvalidFile,
                               fmt::format("--load '{}': {} bytes after the session state", path,
                                           data.size() - at - state_size));
        // the messages must render (valid roles, a conversation the template accepts)
        // before the session is touched: a conversation that cannot go on is refused now
        try {
            std::string warning;
            (void)model_->tokenize_chat(messages, /*add_generation_prompt=*/true, parse_special_, &warning);
        } catch (const ember::Error& e) {
            throw ember::Error(ember::ErrorCode::InvalidFile,
                               fmt::format("--load '{}': the saved conversation cannot be rendered: {}", path, e.what()));
        }
        session_.load(std::span(reinterpret_cast<const uint8_t*>(data.data()) + at, state_size));
        history_ = std::move(messages);
        first_ = first;
    }

    size_t n_messages() const { return history_.size(); }

private:
    // The conversation as tokens, after dropping the oldest exchanges (a user
    // message and its reply) while it leaves too little room for a reply.
    std::vector<ember::TokenId> fit() {
        const size_t n_ctx = session_.n_ctx();
        const size_t wanted = params_.max_tokens < 0 ? n_ctx / 4 : static_cast<size_t>(params_.max_tokens);
        const size_t reserve = std::min(wanted, n_ctx / 2);
        size_t dropped = 0;
        for (;;) {
            std::vector<ember::TokenId> tokens = render();
            const bool can_drop = history_.size() - first_ >= 3;  // an exchange before this message
            if (tokens.size() + reserve <= n_ctx || !can_drop) {
                if (dropped > 0)
                    fmt::print(stderr, "ember-chat: the context ({} tokens) is full: dropped {} to make room "
                                       "(/reset starts over)\n",
                               n_ctx,
                               dropped == 1 ? "the oldest exchange" : fmt::format("the {} oldest exchanges", dropped));
                if (tokens.size() >= n_ctx)
                    throw ember::Error(ember::ErrorCode::InvalidArgument,
                                       fmt::format("the message does not fit: the conversation is {} tokens and the "
                                                   "context holds {}; use a shorter message or a larger -c",
                                                   tokens.size(), n_ctx));
                return tokens;
            }
            history_.erase(history_.begin() + static_cast<ptrdiff_t>(first_),
                           history_.begin() + static_cast<ptrdiff_t>(first_) + 2);
            ++dropped;
        }
    }

    std::vector<ember::TokenId> render() {
        std::string warning;
        std::vector<ember::TokenId> tokens =
            model_->tokenize_chat(history_, /*add_generation_prompt=*/true, parse_special_, &warning);
        if (!warning.empty() && !warned_) {
            fmt::print(stderr, "ember-chat: warning: {}\n", warning);
            warned_ = true;
        }
        return tokens;
    }

    static constexpr const char* kChatMagic = "EMBRCHAT";
    static constexpr uint32_t kChatVersion = 1;
    static void put_u32(std::string& out, uint32_t v) { out.append(reinterpret_cast<const char*>(&v), 4); }
    static void put_u64(std::string& out, uint64_t v) { out.append(reinterpret_cast<const char*>(&v), 8); }
    static void put_str(std::string& out, const std::string& v) {
        put_u32(out, static_cast<uint32_t>(v.size()));
        out += v;
    }
    // FNV-1a: the messages are small; the session state has its own (fast) checksum
    static uint64_t hash(std::string_view bytes) {
        uint64_t h = 0xcbf29ce484222325ull;
        for (unsigned char c : bytes) h = (h ^ c) * 0x100000001b3ull;
        return h;
    }
    // Written to a new temporary beside `path` (O_EXCL: never through a file planted at
    // its name), synced, renamed over `path` and the folder synced: a crash leaves the
    // old conversation or the new one. An existing `path` keeps its mode; one that is
    // not a regular file (a device, a FIFO) is not replaced.
    static void write_atomically(const std::string& path, const std::string& bytes) {
        auto fail = [&](const std::string& what, int err) {
            throw ember::Error(ember::ErrorCode::Io, fmt::format("--save '{}': {}: {}", path, what, std::strerror(err)));
        };
        struct stat st {};
        mode_t mode = 0644;
        if (::stat(path.c_str(), &st) == 0) {
            if (!S_ISREG(st.st_mode))
                throw ember::Error(ember::ErrorCode::Io,
                                   fmt::format("--save '{}' is not a regular file; it was not replaced", path));
            mode = st.st_mode & 07777;
        }
        const std::string tmp = fmt::format("{}.tmp.{}", path, static_cast<long>(getpid()));
        const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
        if (fd < 0) fail(fmt::format("cannot create '{}'", tmp), errno);
        size_t done = 0;
        int err = 0;
        while (done < bytes.size() && err == 0) {
            const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
            if (n < 0 && errno != EINTR) err = errno;
            if (n > 0) done += static_cast<size_t>(n);
        }
        if (err == 0 && ::fchmod(fd, mode) != 0) err = errno;  // the umask does not narrow a kept mode
        if (err == 0 && ::fsync(fd) != 0) err = errno;
        if (::close(fd) != 0 && err == 0) err = errno;
        if (err == 0 && std::rename(tmp.c_str(), path.c_str()) != 0) err = errno;
        if (err != 0) {
            ::unlink(tmp.c_str());
            fail("cannot write it", err);
        }
        const std::string dir = std::filesystem::path(path).parent_path().string();
        if (const int dfd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); dfd >= 0) {
            (void)::fsync(dfd);  // the rename itself survives a power cut
            ::close(dfd);
        }
    }

    std::shared_ptr<const ember::Model> model_;
    ember::Session& session_;
    ember::GenerateParams params_;
    const ember::Constraint constraint_;  // --grammar, --json-schema: every reply follows it
    std::vector<ember::ChatMessage> history_;  // [system], user, assistant, ..., user
    size_t first_ = 0;                         // index of the first message that may be dropped
    size_t reused_ = 0;
    bool warned_ = false;
    bool parse_special_ = false;
};

// Script mode: a reply on one line, reversibly.
std::string one_line(std::string_view piece) {
    std::string out;
    out.reserve(piece.size());
    for (char c : piece) {
        if (c == '\\') out += "\\\\";
        else if (c == '\n') out += "\\n";
        else if (c == '\r') out += "\\r";
        else out += c;
    }
    return out;
}

bool blank(std::string_view s) {
    return s.find_first_not_of(" \t\r") == std::string_view::npos;
}

int chat(const ChatOptions& opt) {
    const bool tty = isatty(STDIN_FILENO) != 0;
    ember_tools::Interrupts interrupts;  // Ctrl-C outside a reply exits
    const auto model = ember::Model::load(opt.common.model_path, opt.common.model, opt.common.load,
                                          opt.common.session_options.memory_budget);
    const auto adapters = ember_tools::load_adapters(model, opt.common.lora);  // --lora, --lora-scaled
    ember::Session session(model, opt.common.session, opt.common.session_options);
    session.set_precision(opt.common.precision);
    if (!adapters.empty()) session.set_adapters(adapters);
    for (const auto& w : session.warnings()) fmt::print(stderr, "ember-chat: warning: {}\n", w);
    fmt::print(stderr, "ember-chat: {}\n", ember_tools::describe(*model, session));
    for (const auto& a : adapters) fmt::print(stderr, "ember-chat: lora: {}\n", ember_tools::describe_adapter(a));
    if (opt.common.random_seed) fmt::print(stderr, "ember-chat: seed {}\n", opt.common.generate.sampling.seed);
    if (tty) fmt::print(stderr, "ember-chat: type a message; /reset forgets the conversation, /quit exits\n");

    Chat conversation(model, session, opt);
    if (!opt.load_path.empty()) {
        conversation.load(opt.load_path);
        fmt::print(stderr, "ember-chat: continuing the conversation of '{}': {} messages, {} tokens in the cache\n",
                   opt.load_path, conversation.n_messages(), session.n_past());
        if (!opt.system.empty()) fmt::print(stderr, "ember-chat: warning: -sys ignored: the loaded conversation keeps its own\n");
    }
    // --save: after each reply; a failure to save is said and the chat goes on
    auto save = [&] {
        if (opt.save_path.empty()) return;
        try {
            conversation.save(opt.save_path);
        } catch (const ember::Error& e) {
            fmt::print(stderr, "ember-chat: warning: the conversation was not saved: {}\n", e.what());
        }
    };
    std::string line;
    size_t sent = 0, failed = 0;  // messages, and those that got an error instead of a reply
    for (;;) {
        if (tty) {
            ember_tools::write_out("> ");
            ember_tools::flush_out();
        }
        if (!std::getline(std::cin, line)) {
            if (tty) ember_tools::write_out("\n");
            break;
        }
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (blank(line)) continue;
        if (line == "/quit" || line == "/exit") break;
        if (line == "/reset") {
            conversation.reset();
            save();
            if (tty) ember_tools::write_out("(conversation cleared)\n");
            continue;
        }

        // a failed write (a closed stdout among them) stops the reply
        auto on_piece = [&](std::string_view piece) {
            return ember_tools::stream_out(tty ? std::string(piece) : one_line(piece));
        };
        std::optional<ember::GenerateResult> r;
        std::string error;  // "" with no result: interrupted while evaluating the prompt
        if (const size_t at = ember_tools::utf8_error_at(line); at < line.size()) {
            error = fmt::format("the message is not valid UTF-8 at byte {} (0x{:02x}); it was not sent", at,
                                static_cast<unsigned char>(line[at]));
        } else {
            try {
                ember_tools::Watch watch(interrupts, session);
                r = conversation.turn(line, on_piece);
            } catch (const ember::Error& e) {
                if (e.code() != ember::ErrorCode::Cancelled) error = e.what();
            }
        }
        // the reply's line ends (a failed message gets an empty one) before any note on stderr;
        // stdout closed (StdoutClosed: the chat ends quietly) or failing (StdoutError) ends the chat
        ember_tools::stream_out("\n");
        ember_tools::check_stdout();
        ++sent;
        if (!error.empty()) {
            ++failed;
            fmt::print(stderr, "ember-chat: error: {}\n", error);
        }
        if (!r || r->stop_reason == ember::StopReason::Cancelled) {
            if (error.empty()) fmt::print(stderr, "ember-chat: reply interrupted\n");
        } else if (r->stop_reason == ember::StopReason::ContextFull) {
            fmt::print(stderr, "ember-chat: the context is full: the reply was cut; the oldest exchanges will be "
                               "dropped next turn (/reset starts over)\n");
        }
        if (r) save();
        if (r && opt.timings)
            fmt::print(stderr, "ember-chat: reused {} cached tokens | {}\n", conversation.reused(),
                       ember_tools::timing_line(*r));
    }
    ember_tools::flush_out();
    if (sent > 0 && failed == sent) {
        fmt::print(stderr, "ember-chat: error: every message ({}) failed\n", sent);
        return 1;
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    ember_tools::init_stdout();  // a closed stdout is a normal end, not death by SIGPIPE
    try {
        ChatOptions opt;
        if (!parse(argc, argv, opt)) {
            ember_tools::flush_out();  // --help, --version
            return 0;
        }
        return chat(opt);
    } catch (const ember_tools::StdoutClosed&) {
        return 0;  // the reader of stdout has gone: nothing more to do, nothing to say
    } catch (const std::exception& e) {
        fmt::print(stderr, "ember-chat: error: {}\n", e.what());
    } catch (...) {
        fmt::print(stderr, "ember-chat: error: unknown exception\n");
    }
    return 1;
}
