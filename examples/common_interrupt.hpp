// Ctrl-C for the command-line tools: SIGINT cancels the generation running
// now (Session::cancel()), so the tool can still print what it has and its
// timings. With no session being watched, or at a second Ctrl-C during the
// same generation, the process exits at once with status 130.
//
//   ember_tools::Interrupts interrupts;              // installs the SIGINT handler
//   {
//       ember_tools::Watch w(interrupts, session);   // Ctrl-C now cancels `session`
//       auto result = session.generate(...);         // returns with StopReason::Cancelled
//       bool by_ctrl_c = interrupts.interrupted();
//   }                                                // Ctrl-C exits again
//
// The signal handler only writes a byte to a pipe (async-signal-safe); a
// watcher thread reads it and calls Session::cancel(), which is safe from any
// thread. One Interrupts object at a time per process.
#pragma once

#include <atomic>
#include <mutex>
#include <thread>

#include "ember/session.hpp"

namespace ember_tools {

class Interrupts {
public:
    Interrupts();
    ~Interrupts();
    Interrupts(const Interrupts&) = delete;
    Interrupts& operator=(const Interrupts&) = delete;

    // Ctrl-C now cancels `session` (nullptr: Ctrl-C exits). A non-null session
    // clears interrupted().
    void watch(ember::Session* session);
    // Whether a Ctrl-C cancelled a session since the last watch(session).
    bool interrupted() const noexcept { return interrupted_.load(); }

private:
    void run();  // the watcher thread

    std::mutex mu_;                     // guards session_ against watch() racing the watcher
    ember::Session* session_ = nullptr;
    std::atomic<bool> interrupted_{false};
    std::thread watcher_;
};

// Watches a session for the lifetime of the scope, so an exception cannot leave
// the watcher pointing at a destroyed session.
class Watch {
public:
    Watch(Interrupts& interrupts, ember::Session& session) : interrupts_(interrupts) { interrupts_.watch(&session); }
    ~Watch() { interrupts_.watch(nullptr); }
    Watch(const Watch&) = delete;
    Watch& operator=(const Watch&) = delete;

private:
    Interrupts& interrupts_;
};

}  // namespace ember_tools
