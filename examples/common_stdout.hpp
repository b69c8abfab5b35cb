// stdout for the command-line tools. A closed stdout -- the reader of a pipe
// went away, as in `ember-inspect m.gguf | head` -- is a normal end: the tool
// stops quietly (no message, no signal) with exit status 0, as cat and grep
// do; a generation stops at its next piece. Any other failure to write (a full
// disk: `ember-inspect m.gguf > /dev/full`) is an error with a message and a
// non-zero status. The tools write stdout only through these functions.
//
//   int main(int argc, char** argv) {
//       ember_tools::init_stdout();                  // SIGPIPE ignored: a closed pipe is EPIPE, not death
//       try {
//           ember_tools::print_out("{} keys\n", n);  // buffered; throws StdoutClosed or StdoutError
//           session.generate(prompt, params, [](std::string_view piece) {
//               return ember_tools::stream_out(piece);  // written and flushed; false (stop) when it failed
//           });
//           ember_tools::check_stdout();             // throws what stream_out() met
//           ember_tools::flush_out();                // before every successful return
//           return 0;
//       } catch (const ember_tools::StdoutClosed&) {
//           return 0;                                // nobody is reading: nothing to say
//       } catch (const std::exception& e) {          // StdoutError among them
//           fmt::print(stderr, "ember-x: error: {}\n", e.what());
//           return 1;
//       }
//   }
//
// A failure is remembered: after it nothing more is written, and every later
// call reports it again.
#pragma once

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string_view>
#include <utility>

#include <fmt/format.h>

namespace ember_tools {

// stdout's reader has gone (EPIPE). Deliberately not a std::exception, so that
// no "error:" handler reports it: main() catches it and returns 0.
struct StdoutClosed {};

// Any other failure to write stdout: "writing to stdout failed: No space left on device".
struct StdoutError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

namespace detail {

inline int stdout_errno = 0;  // errno of the first failed write to stdout; 0: none yet

// Writes `s` to stdout (and flushes it); false, with the failure remembered,
// when that fails now or failed before.
inline bool put(std::string_view s, bool flush) {
    if (stdout_errno != 0) return false;
    errno = 0;
    if ((!s.empty() && std::fwrite(s.data(), 1, s.size(), stdout) != s.size()) || (flush && std::fflush(stdout) != 0)) {
        stdout_errno = errno != 0 ? errno : EIO;
        return false;
    }
    return true;
}

}  // namespace detail

// First thing in main(): with SIGPIPE ignored, a write to a closed pipe fails
// with EPIPE instead of killing the process (status 141 under pipefail).
inline void init_stdout() { std::signal(SIGPIPE, SIG_IGN); }

// Whether a write found stdout closed (its reader gone).
inline bool stdout_closed() noexcept { return detail::stdout_errno == EPIPE; }

// Throws StdoutClosed or StdoutError when a write to stdout has failed.
inline void check_stdout() {
    const int err = detail::stdout_errno;
    if (err == 0) return;
    if (err == EPIPE) throw StdoutClosed{};
    throw StdoutError(fmt::format("writing to stdout failed: {}", std::strerror(err)));
}

// Buffered writes; throw StdoutClosed or StdoutError.
inline void write_out(std::string_view s) {
    detail::put(s, /*flush=*/false);
    check_stdout();
}
template <typename... T>
void print_out(fmt::format_string<T...> format, T&&... args) {
    write_out(fmt::format(format, std::forward<T>(args)...));
}
// Pushes out what is buffered; throws StdoutClosed or StdoutError. Every
// successful end calls it: the flush at exit() could fail unseen.
inline void flush_out() {
    detail::put({}, /*flush=*/true);
    check_stdout();
}

// For streaming generated text: writes and flushes `s`, never throws. Returns
// false when that failed -- the piece callback returns it, so the generation
// stops -- and check_stdout() then says why.
inline bool stream_out(std::string_view s) noexcept { return detail::put(s, /*flush=*/true); }

}  // namespace ember_tools
