// Streaming generation for Python: Session::generate runs on a thread of its
// own (the producer) and hands each piece of text to the Python thread that
// iterates (the consumer), one at a time.
//
//   consumer (Python, GIL released while it waits)      producer (no GIL, ever)
//   next() ── start the thread / "one more" ──────────▶ generate(...) computes a token
//          ◀───────────── piece ─────────────────────── on_piece: hand the piece over, then
//   return the piece to Python                           wait until asked for one more
//
// The two run in lockstep: the producer computes only while the consumer waits
// for a piece, so a stream that is abandoned (break, close(), garbage
// collection) has generated no further than what was handed out, and nothing
// ever runs without someone waiting for it. The hand-over costs two thread
// wake-ups per piece (tens of microseconds) against a token's milliseconds.
//
// Stopping: close() asks the producer to stop (its on_piece returns false, or
// Session::cancel() interrupts a forward pass in progress) and joins it.
//
// Locking: SessionBox::mu is held by whatever runs on the C++ session -- an
// eval() from Python, or the producer while it computes. The producer lets go
// of it while it waits for the consumer, so the session can be read (tokens,
// logits) between pieces; anything that changes the session first closes the
// session's active stream (SessionBox::active), then takes mu.
#pragma once

#include <chrono>
#include <condition_variable>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

#include "ember/ember.hpp"

namespace ember_py {

struct ModelBox {
    std::shared_ptr<const ember::Model> model;
};

// An ember::Adapter as the Python Adapter object holds it (with the Model it was loaded for).
struct AdapterBox {
    std::shared_ptr<const ember::Adapter> adapter;
    std::shared_ptr<ModelBox> model;
};

class Stream;

// An ember::Session as the Python Session object holds it.
struct SessionBox {
    SessionBox(std::shared_ptr<ModelBox> m, const ember::SessionParams& p, const ember::SessionOptions& o = {})
        : model(std::move(m)), session(model->model, p, o) {}

    std::shared_ptr<ModelBox> model;
    ember::Session session;
    std::mutex mu;                 // held while something runs on `session` (see the top of this file)
    std::weak_ptr<Stream> active;  // the stream last started on this session; read and written with the GIL held
    // the Adapter objects set_adapters was given, with their scales (read and written with the GIL held)
    std::vector<std::pair<std::shared_ptr<AdapterBox>, float>> adapters;
};

// What the producer runs: a call to Session::generate with the given callback.
using GenerateJob = std::function<ember::GenerateResult(ember::Session&, const ember::PieceCallback&)>;

class Stream {
public:
    enum class Next { Piece, End, Timeout };

    Stream(std::shared_ptr<SessionBox> box, GenerateJob job);
    ~Stream();  // close()
    Stream(const Stream&) = delete;
    Stream& operator=(const Stream&) = delete;

    // Consumer side; call without the GIL. Starts the producer on the first
    // call, asks it for one more piece on later ones, and waits up to `wait`:
    // Piece (*piece set), End (the generation is over: see result() and
    // error()), or Timeout (call again to keep waiting; the request stands).
    Next next(std::string* piece, std::chrono::milliseconds wait);

    // Ends the generation early and waits for the producer to finish. Safe
    // from any thread, any number of times; call without the GIL.
    void close();
    // Ends the generation early without waiting; the stop reason becomes
    // Cancelled. Safe from any thread; never blocks for long.
    void cancel();

    bool done() const;
    // Valid once next() returned End.
    const ember::GenerateResult& result() const { return result_; }
    // A chat with tools: the reply (text and calls) its job fills in when it ends; null otherwise.
    std::shared_ptr<ember::ChatReply> reply;
    // The exception the generation threw (nullptr if none); returned once.
    std::exception_ptr take_error();

    SessionBox& box() { return *box_; }
    std::string text;  // the pieces handed out so far, joined (written by the consumer, under the GIL)

private:
    void produce();
    bool hand_off(std::string_view piece, std::unique_lock<std::mutex>& running);
    void stop(bool cancelled);

    std::shared_ptr<SessionBox> box_;
    GenerateJob job_;

    mutable std::mutex m_;        // guards everything below
    std::condition_variable cv_;
    bool started_ = false;        // the producer thread exists
    bool requested_ = false;      // the consumer waits for a piece it asked for
    bool want_next_ = false;      // the producer may go on past the piece it handed over
    bool has_piece_ = false;      // piece_ holds a piece not yet taken
    bool stop_ = false;           // close() or cancel() was called
    bool cancelled_ = false;      // ... and it was cancel()
    bool done_ = false;           // the generation is over (or never started)
    std::string piece_;
    std::string handed_;          // every piece handed over (the producer's record of Stream::text)
    ember::GenerateResult result_;
    std::exception_ptr error_;

    std::mutex join_mu_;          // one joiner at a time
    std::thread thread_;
};

}  // namespace ember_py
