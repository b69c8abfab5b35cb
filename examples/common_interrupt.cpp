// SIGINT -> Session::cancel() on a watcher thread (see common_interrupt.hpp).
#include "common_interrupt.hpp"

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <system_error>

#include <fcntl.h>
#include <unistd.h>

namespace ember_tools {

namespace {

constexpr char kInterrupt = 'i';
constexpr char kQuit = 'q';

// The pipe from the signal handler to the watcher thread. A signal handler
// can reach nothing else, so this is the one global of the tools.
int g_pipe[2] = {-1, -1};
struct sigaction g_old_action;

extern "C" void on_sigint(int) {
    const int saved = errno;
    const char c = kInterrupt;
    [[maybe_unused]] const ssize_t n = write(g_pipe[1], &c, 1);  // if the pipe is full, a Ctrl-C is pending anyway
    errno = saved;
}

}  // namespace

Interrupts::Interrupts() {
    if (pipe2(g_pipe, O_CLOEXEC) != 0) throw std::system_error(errno, std::generic_category(), "pipe2");
    fcntl(g_pipe[1], F_SETFL, O_NONBLOCK);  // the handler must never block
    watcher_ = std::thread([this] { run(); });
    struct sigaction sa {};
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;  // a Ctrl-C does not make reads and writes fail with EINTR
    sigaction(SIGINT, &sa, &g_old_action);
}

Interrupts::~Interrupts() {
    sigaction(SIGINT, &g_old_action, nullptr);
    const char c = kQuit;
    while (write(g_pipe[1], &c, 1) < 0 && (errno == EINTR || errno == EAGAIN)) {
    }
    watcher_.join();
    close(g_pipe[0]);
    close(g_pipe[1]);
    g_pipe[0] = g_pipe[1] = -1;
}

void Interrupts::watch(ember::Session* session) {
    std::lock_guard lock(mu_);
    session_ = session;
    if (session != nullptr) interrupted_ = false;
}

void Interrupts::run() {
    for (;;) {
        char c = 0;
        const ssize_t n = read(g_pipe[0], &c, 1);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0 || c == kQuit) return;
        std::lock_guard lock(mu_);
        // Nothing to cancel, or a second Ctrl-C: the user wants out now, and
        // the shell should see the process end by SIGINT.
        if (session_ == nullptr || interrupted_.exchange(true)) {
            signal(SIGINT, SIG_DFL);
            std::raise(SIGINT);
            std::_Exit(130);
        }
        session_->cancel();
    }
}

}  // namespace ember_tools
