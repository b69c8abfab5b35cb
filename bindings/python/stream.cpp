// Stream: Session::generate on a producer thread, handed over piece by piece
// (see stream.hpp for the protocol and the locking).
#include "stream.hpp"

#include <system_error>
#include <utility>

namespace ember_py {

Stream::Stream(std::shared_ptr<SessionBox> box, GenerateJob job) : box_(std::move(box)), job_(std::move(job)) {}

Stream::~Stream() { close(); }

Stream::Next Stream::next(std::string* piece, std::chrono::milliseconds wait) {
    std::unique_lock<std::mutex> lk(m_);
    if (!requested_ && !done_) {
        requested_ = true;
        if (!started_) {
            started_ = true;
            try {
                thread_ = std::thread(&Stream::produce, this);
            } catch (const std::system_error& e) {
                done_ = true;
                error_ = std::make_exception_ptr(ember::Error(
                    ember::ErrorCode::Backend,
                    std::string("Session.generate: cannot start the generation thread: ") + e.what()));
            }
        } else {
            want_next_ = true;
            cv_.notify_all();
        }
    }
    if (!cv_.wait_for(lk, wait, [&] { return has_piece_ || done_; })) return Next::Timeout;
    if (has_piece_) {
        has_piece_ = false;
        requested_ = false;
        piece->swap(piece_);
        piece_.clear();
        return Next::Piece;
    }
    return Next::End;
}

// The producer thread: the whole generate() call, holding the session's mutex
// except while it waits in hand_off().
void Stream::produce() {
    ember::GenerateResult r;
    std::exception_ptr err;
    std::unique_ptr<ember::GenerateError> failed;  // a GenerateError, rebuilt below with the text handed out
    std::unique_lock<std::mutex> running(box_->mu);
    try {
        r = job_(box_->session, [&](std::string_view p) { return hand_off(p, running); });
    } catch (const ember::GenerateError& e) {
        r = e.result();  // what it produced before it failed or was cancelled
        failed = std::make_unique<ember::GenerateError>(e);
    } catch (...) {
        err = std::current_exception();
    }
    // One critical section, so that no stop() comes between the end of the job and done_:
    std::lock_guard<std::mutex> lk(m_);
    // a cancel this stream sent (stop()) that the call did not take must not be held for
    // the session's next call
    if (stop_) box_->session.clear_cancel();
    // once stopped, hand_off delivered nothing more: the result is what was handed out
    if (stop_) r.text = handed_;
    if (cancelled_ && r.stop_reason == ember::StopReason::Callback) {
        // Session.cancel() met the producer paused between pieces: a cancellation, said as
        // everywhere else -- CancelledError from next(), with the result so far
        r.stop_reason = ember::StopReason::Cancelled;
        if (!failed && !err)
            failed = std::make_unique<ember::GenerateError>(ember::ErrorCode::Cancelled,
                                                            "Session.generate: cancelled by Session.cancel()", r);
    }
    if (failed) err = std::make_exception_ptr(ember::GenerateError(failed->code(), failed->what(), r));
    result_ = std::move(r);
    error_ = err;
    done_ = true;
    cv_.notify_all();
}

// on_piece: gives `piece` to the consumer and waits until it asks for the next
// one (true) or the stream is stopped (false).
bool Stream::hand_off(std::string_view piece, std::unique_lock<std::mutex>& running) {
    std::unique_lock<std::mutex> lk(m_);
    if (stop_) return false;
    handed_.append(piece.data(), piece.size());
    piece_.assign(piece.data(), piece.size());
    has_piece_ = true;
    want_next_ = false;
    cv_.notify_all();
    running.unlock();  // paused: the session may be read meanwhile (changes close this stream first)
    cv_.wait(lk, [&] { return want_next_ || stop_; });
    const bool go = !stop_;
    lk.unlock();
    running.lock();
    return go;
}

void Stream::stop(bool cancelled) {
    std::lock_guard<std::mutex> lk(m_);
    if (done_) return;
    stop_ = true;
    cancelled_ = cancelled_ || cancelled;
    if (!started_) {  // never started: nothing to stop
        done_ = true;
        result_.stop_reason = cancelled_ ? ember::StopReason::Cancelled : ember::StopReason::Callback;
        if (cancelled_)
            error_ = std::make_exception_ptr(ember::GenerateError(
                ember::ErrorCode::Cancelled, "Session.generate: cancelled by Session.cancel() before it started",
                result_));
    } else {
        // the producer is inside generate() (done_ is set only after it returns, under
        // m_), so this cancel cannot reach a later call on the session
        box_->session.cancel();
    }
    cv_.notify_all();
}

void Stream::cancel() { stop(true); }

void Stream::close() {
    stop(false);
    std::lock_guard<std::mutex> j(join_mu_);
    if (thread_.joinable()) thread_.join();
}

bool Stream::done() const {
    std::lock_guard<std::mutex> lk(m_);
    return done_;
}

std::exception_ptr Stream::take_error() {
    std::lock_guard<std::mutex> lk(m_);
    return std::exchange(error_, nullptr);
}

}  // namespace ember_py
