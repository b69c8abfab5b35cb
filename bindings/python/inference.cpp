// ember.Model, ember.Session, ember.Generation and ember.GenerateResult.
//
// Translation only: each method converts its arguments (args.cpp), releases
// the GIL around the C++ call, and converts the result. Streaming generation
// runs on a producer thread (stream.cpp), so the GIL is free while tokens are
// computed and is taken back only to hand a finished piece to Python.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <pybind11/stl/filesystem.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "args.hpp"
#include "bindings.hpp"
#include "ember/ember.hpp"
#include "stream.hpp"

namespace ember_py {
namespace {

using ModelPtr = std::shared_ptr<ModelBox>;
using SessionPtr = std::shared_ptr<SessionBox>;
using StreamPtr = std::shared_ptr<Stream>;

// How long a waiting call sleeps between checks for Ctrl-C (of the ~100 ms a user may wait).
constexpr std::chrono::milliseconds kSignalCheck{20};

void warn(const std::string& msg) {
    if (PyErr_WarnEx(PyExc_RuntimeWarning, msg.c_str(), 2) != 0) throw py::error_already_set();
}

// Ends the session's unfinished stream, if any, before something else uses
// the session (GIL held on entry).
void close_active(SessionBox& box) {
    StreamPtr s = box.active.lock();
    box.active.reset();
    if (s) {
        py::gil_scoped_release release;
        s->close();
    }
}

using AdapterPtr = std::shared_ptr<AdapterBox>;
using AdapterList = std::vector<std::pair<AdapterPtr, float>>;

// [(adapter, scale), ...] or [adapter, ...] (scale 1.0) or None, checked.
// A scale: a real number (int, float, NumPy scalars: anything with __float__ but
// bool and str), finite in float32.
float adapter_scale(py::handle sc, const char* fn, size_t i) {
    const std::string what = std::string(fn) + ": the scale of adapter " + std::to_string(i);
    if (py::isinstance<py::bool_>(sc) || py::isinstance<py::str>(sc) || !PyNumber_Check(sc.ptr()))
        throw py::type_error(what + " must be a number");
    const double v = PyFloat_AsDouble(sc.ptr());
    if (v == -1.0 && PyErr_Occurred()) throw py::error_already_set();
    if (!std::isfinite(v) || std::abs(v) > 3.4e38)
        throw py::value_error(what + " is " + std::to_string(v) + "; it must be a finite float32");
    return static_cast<float>(v);
}

AdapterList adapter_list(py::handle obj, const char* fn) {
    AdapterList out;
    if (obj.is_none()) return out;
    if (py::isinstance<py::dict>(obj) || (PyMapping_Check(obj.ptr()) && !PySequence_Check(obj.ptr()))) {
        // {adapter: scale, ...}: its items, in order
        size_t i = 0;
        const py::dict d(py::reinterpret_borrow<py::object>(obj));
        for (auto item : d) {
            if (!py::isinstance<AdapterBox>(item.first))
                throw py::type_error(std::string(fn) + ": key " + std::to_string(i) + " of adapters is not an Adapter");
            out.emplace_back(item.first.cast<AdapterPtr>(), adapter_scale(item.second, fn, i));
            ++i;
        }
        return out;
    }
    if (py::isinstance<py::str>(obj) || !py::isinstance<py::iterable>(obj))
        throw py::type_error(std::string(fn) + ": adapters must be a list of (Adapter, scale) pairs or of Adapters, "
                                               "or a dict {Adapter: scale}");
    size_t i = 0;
    for (py::handle item : obj) {
        AdapterPtr a;
        float scale = 1.0f;
        if (py::isinstance<AdapterBox>(item)) {
            a = item.cast<AdapterPtr>();
        } else if (py::isinstance<py::tuple>(item) && py::len(item) == 2 && py::isinstance<AdapterBox>(item[py::int_(0)])) {
            a = item[py::int_(0)].cast<AdapterPtr>();
            scale = adapter_scale(item[py::int_(1)], fn, i);
        } else {
            throw py::type_error(std::string(fn) + ": item " + std::to_string(i) +
                                 " of adapters is neither an Adapter nor an (Adapter, scale) pair");
        }
        out.emplace_back(std::move(a), scale);
        ++i;
    }
    return out;
}

void set_adapters(SessionBox& box, AdapterList list) {
    std::vector<ember::AdapterScale> native;
    native.reserve(list.size());
    for (const auto& [a, scale] : list) native.push_back({a->adapter, scale});
    close_active(box);
    {
        py::gil_scoped_release release;
        std::lock_guard<std::mutex> lock(box.mu);
        box.session.set_adapters(native);
    }
    box.adapters = std::move(list);
}

SessionPtr make_session(const ModelPtr& model, int64_t n_ctx, int64_t n_batch, int64_t n_threads,
                        const std::string& kv_type, const std::string& precision, py::handle adapters,
                        py::handle kv_type_k = py::none(), py::handle kv_type_v = py::none(),
                        py::handle memory_budget = py::none()) {
    const ember::SessionParams p = session_params(n_ctx, n_batch, n_threads, kv_type);
    const ember::SessionOptions o = session_options(kv_type_k, kv_type_v, memory_budget);
    const ember::Precision prec = precision_of(precision);
    AdapterList list = adapter_list(adapters, "Session");
    SessionPtr box;
    {
        py::gil_scoped_release release;  // allocates the KV cache, starts the threads
        box = std::make_shared<SessionBox>(model, p, o);
    }
    box->session.set_precision(prec);
    if (!list.empty()) set_adapters(*box, std::move(list));
    for (const std::string& w : box->session.warnings()) warn(w);
    return box;
}

// Runs f() on box.session (holding box.mu) on a thread of its own, while this
// Python thread waits with the GIL released and checks for Ctrl-C every
// kSignalCheck: a KeyboardInterrupt cancels the call, waits for it to stop (at
// its next check, between layers) and is raised, the session usable (a cancel
// the call did not take is withdrawn). On any other thread than Python's main
// one there are no signals to check, and this only waits.
template <class F> void run_interruptible(SessionBox& box, F&& f) {
    std::exception_ptr err;
    std::mutex m;
    std::condition_variable cv;
    bool done = false;
    std::thread worker;
    {
        py::gil_scoped_release release;
        try {
            worker = std::thread([&] {
                try {
                    std::lock_guard<std::mutex> lock(box.mu);
                    f();
                } catch (...) {
                    err = std::current_exception();
                }
                std::lock_guard<std::mutex> lk(m);
                done = true;
                cv.notify_all();
            });
        } catch (const std::system_error& e) {
            throw ember::Error(ember::ErrorCode::OutOfMemory,
                               std::string("cannot start a thread for the call: ") + e.what());
        }
    }
    for (;;) {
        bool finished = false;
        {
            py::gil_scoped_release release;
            std::unique_lock<std::mutex> lk(m);
            finished = cv.wait_for(lk, kSignalCheck, [&] { return done; });
        }
        if (finished) break;
        if (PyErr_CheckSignals() != 0) {  // Ctrl-C (or another signal handler raised)
            py::error_already_set interrupt;
            {
                py::gil_scoped_release release;
                box.session.cancel();
                worker.join();
                box.session.clear_cancel();
            }
            throw interrupt;
        }
    }
    {
        py::gil_scoped_release release;
        worker.join();
    }
    if (err) std::rethrow_exception(err);
}

// The prompt tokens of a conversation, rendered with the model's template:
// control tokens come from the template's text only, unless parse_special.
std::vector<ember::TokenId> chat_prompt(const ember::Model& model, const std::vector<ember::ChatMessage>& messages,
                                        bool parse_special) {
    std::string warning;
    std::vector<ember::TokenId> ids;
    {
        py::gil_scoped_release release;
        ids = model.tokenize_chat(messages, /*add_generation_prompt=*/true, parse_special, &warning);
    }
    if (!warning.empty()) warn(warning);
    if (ids.empty())
        throw ember::Error(ember::ErrorCode::InvalidArgument, "chat: the conversation renders to no tokens");
    return ids;
}

// Generates the reply to a conversation, reusing the longest prefix of it the
// session's cache already holds (at least one token is evaluated, so that the
// logits are those of the prompt's end) -- as ember-chat does.
GenerateJob chat_job(std::vector<ember::TokenId> prompt, ember::GenerateParams gp, ember::Constraint c) {
    return [prompt = std::move(prompt), gp = std::move(gp), c = std::move(c)](ember::Session& s,
                                                                             const ember::PieceCallback& on_piece) {
        // a held cancel: the call returns at once, and the history must stay as it is
        if (s.cancel_pending()) return s.generate(std::span<const ember::TokenId>(), gp, on_piece);
        const auto cached = s.tokens();
        const auto diverge = std::mismatch(prompt.begin(), prompt.end(), cached.begin(), cached.end()).first;
        const size_t keep = std::min(static_cast<size_t>(diverge - prompt.begin()), prompt.size() - 1);
        s.truncate(keep);
        return s.generate(std::span(prompt).subspan(keep), gp, c, on_piece);
    };
}

GenerateJob prompt_job(const SessionBox& box, py::handle prompt, ember::GenerateParams gp, ember::Constraint c = {}) {
    if (py::isinstance<py::str>(prompt)) {
        return [text = utf8(prompt, "prompt"), gp = std::move(gp), c = std::move(c)](ember::Session& s,
                                                                                     const ember::PieceCallback& cb) {
            return s.generate(text, gp, c, cb);
        };
    }
    (void)box;
    return [ids = token_ids(prompt, "Session.generate", "the prompt"), gp = std::move(gp), c = std::move(c)](
               ember::Session& s, const ember::PieceCallback& cb) { return s.generate(std::span(ids), gp, c, cb); };
}

// A Generation over `job`, registered as the session's active stream.
StreamPtr start_stream(const SessionPtr& box, GenerateJob job) {
    close_active(*box);
    auto s = std::make_shared<Stream>(box, std::move(job));
    box->active = s;
    return s;
}

// Runs `job` to the end, without streaming (Ctrl-C interrupts it); returns the text.
py::str run_now(SessionBox& box, const GenerateJob& job) {
    close_active(box);
    ember::GenerateResult r;
    run_interruptible(box, [&] { r = job(box.session, {}); });
    return decode(r.text);
}

// Whether a conversation uses tool calls or tool results (it then needs Session::chat's rendering).
bool has_tool_turns(py::handle messages) {
    if (!py::isinstance<py::sequence>(messages) || py::isinstance<py::str>(messages)) return false;
    for (py::handle m : py::reinterpret_borrow<py::sequence>(messages)) {
        if (!PyMapping_Check(m.ptr()) || py::isinstance<py::str>(m)) continue;
        if (PyMapping_HasKeyString(m.ptr(), "tool_calls") && !py::reinterpret_borrow<py::object>(m)["tool_calls"].is_none())
            return true;
        if (PyMapping_HasKeyString(m.ptr(), "role") && py::str(py::reinterpret_borrow<py::object>(m)["role"]).equal(py::str("tool")))
            return true;
    }
    return false;
}

py::object chat(const SessionPtr& box, py::handle messages, bool stream, const py::kwargs& kwargs, const char* fn) {
    py::dict kw = kwargs.attr("copy")();
    bool tool_args = false;
    ember::ChatRequest req = take_chat_request(kw, fn, &tool_args);
    ember::Constraint c = take_constraint(kw, fn);
    ember::GenerateParams gp = generate_params(py::reinterpret_borrow<py::kwargs>(kw), fn);
    if (tool_args || has_tool_turns(messages)) {
        // Session::chat: tools, tool turns, response_format
        if (!c.grammar.empty())
            throw ember::Error(ember::ErrorCode::InvalidArgument, std::string(fn) + ": grammar/json_schema cannot be combined with tools or response_format; use "
                    "response_format={'type': 'json_schema', 'json_schema': {'schema': ...}} instead");
        const bool with_tools = !req.tools.empty();
        req.messages = chat_turns(messages, fn);
        auto out = std::make_shared<ember::ChatReply>();
        GenerateJob job = [req = std::move(req), gp = std::move(gp), out](ember::Session& s,
                                                                          const ember::PieceCallback& cb) {
            *out = s.chat(req, gp, cb);
            return out->result;
        };
        if (stream) {
            StreamPtr st = start_stream(box, std::move(job));
            if (with_tools) st->reply = out;  // Generation.reply: the calls, once it has ended
            return py::cast(st);
        }
        run_now(*box, job);
        if (with_tools) return py::cast(*out);
        return decode(out->content);
    }
    // in a chat, parse_special is about the messages' contents, and off unless asked for
    const bool parse_special = kw.contains("parse_special") && gp.parse_special;
    GenerateJob job = chat_job(chat_prompt(*box->model->model, chat_messages(messages, fn), parse_special),
                               std::move(gp), std::move(c));
    if (stream) return py::cast(start_stream(box, std::move(job)));
    return run_now(*box, job);
}

// Generation.__next__: waits (GIL released) for the next piece.
py::str next_piece(Stream& s) {
    std::string piece;
    for (;;) {
        Stream::Next r;
        {
            py::gil_scoped_release release;
            r = s.next(&piece, kSignalCheck);
        }
        if (r == Stream::Next::Piece) {
            s.text += piece;
            return decode(piece);
        }
        if (r == Stream::Next::End) {
            {
                py::gil_scoped_release release;
                s.close();  // the producer has finished: this only joins it
            }
            if (std::exception_ptr e = s.take_error()) std::rethrow_exception(e);
            throw py::stop_iteration();
        }
        if (PyErr_CheckSignals() != 0) {  // Ctrl-C while waiting: stop the generation, raise KeyboardInterrupt
            py::error_already_set err;
            {
                py::gil_scoped_release release;
                s.close();
            }
            throw err;
        }
    }
}

const char* kModelDoc = R"doc(A loaded GGUF model: hyperparameters, tokenizer, chat template and weights.

    model = ember.Model("models/SmolLM2-135M-Instruct.Q4_1.gguf")
    session = model.session(n_ctx=2048, n_threads=2)
    for piece in session.generate("The capital of France is", max_tokens=16, temperature=0):
        print(piece, end="", flush=True)

A model is immutable once loaded and may be shared: any number of sessions, on
any threads, can use one model at once. The weights stay in the memory-mapped
file; the mapping lives as long as the model or any of its sessions.)doc";

const char* kSessionDoc = R"doc(One conversation with a model: its own KV cache, threads and buffers.

The session's history is a list of tokens (`tokens`); eval() and generate()
append to it, reset() empties it, truncate() drops its tail. generate() leaves
its last sampled token in the history without running it through the model
yet; the next eval() or generate() does, so a conversation continues exactly
where it stopped.

A session is meant for one thread at a time (calls from several threads are
serialized, never unsafe); cancel() may be called from any thread. Different
sessions run in parallel, also over one model: eval() and generation release
the GIL. Starting eval(), generate(), chat(), reset() or truncate() ends the
session's unfinished Generation, if any, first.)doc";

const char* kGenerateDoc = R"doc(generate(prompt, *, max_tokens=128, temperature=0.8, top_k=40, top_p=0.95, min_p=0.05, repeat_penalty=1.0, frequency_penalty=0.0, presence_penalty=0.0, penalty_last_n=64, seed=None, stop=None, logit_bias=None, ignore_eos=False, add_special=True, parse_special=True) -> Generation

Generates text after `prompt`, streaming it: returns a Generation, an iterator
of str pieces that arrive as the tokens are generated.

    for piece in session.generate("Once upon a time", max_tokens=64, stop=["\n\n"]):
        print(piece, end="", flush=True)
    text = "".join(session.generate("2 + 2 =", max_tokens=4, temperature=0))

prompt: a str (tokenized with add_special/parse_special) or a list of token
    ids; it is evaluated after what the session holds (it may be empty then).
max_tokens: tokens to generate; -1 = until end of generation or a full
    context; 0 = only evaluate the prompt.
temperature: 0 is greedy. top_k (<= 0 disables), top_p (1 disables), min_p
    (0 disables), repeat/frequency/presence penalties over the last
    penalty_last_n tokens (-1 = all): llama.cpp's semantics and order.
seed: int >= 0; None = ember's fixed default (runs repeat unless you vary it).
stop: a str or list of str; generation ends where one appears in the text,
    and the stop string itself is not yielded.
logit_bias: {token id: added to its logit}; float('-inf') bans a token.
ignore_eos: keep going past end-of-generation tokens (they are banned).
add_special: add BOS (as the model asks) when the session is empty.
parse_special: "<|im_start|>" etc. in the prompt become control tokens.

Nothing runs until the first piece is asked for, so errors in the values of
the arguments (ember.InvalidArgumentError: a prompt that does not fit the
context, temperature=-1, ...) raise from the first next(); wrong types raise
TypeError at once. The GIL is released while tokens are computed. Leaving the
loop early (break, close(), or dropping the Generation) stops generation
after the last piece handed out.)doc";

}  // namespace

void bind_inference(py::module_& m) {
    py::class_<ember::ModelInfo>(m, "ModelInfo", "The shape of a model (Model.info).")
        .def_readonly("arch", &ember::ModelInfo::arch, "general.architecture, e.g. 'llama'.")
        .def_readonly("name", &ember::ModelInfo::name, "general.name ('' when absent).")
        .def_readonly("n_vocab", &ember::ModelInfo::n_vocab, "Tokens in the vocabulary (rows of the logits).")
        .def_readonly("n_ctx_train", &ember::ModelInfo::n_ctx_train, "The context length the model was trained with.")
        .def_readonly("n_embd", &ember::ModelInfo::n_embd, "Embedding width.")
        .def_readonly("n_layer", &ember::ModelInfo::n_layer, "Transformer blocks.")
        .def_readonly("n_head", &ember::ModelInfo::n_head, "Attention (query) heads.")
        .def_readonly("n_head_kv", &ember::ModelInfo::n_head_kv, "Key/value heads.")
        .def_readonly("n_ff", &ember::ModelInfo::n_ff, "Feed-forward width.")
        .def_readonly("n_params", &ember::ModelInfo::n_params, "Elements of all weight tensors.")
        .def_readonly("weight_bytes", &ember::ModelInfo::weight_bytes, "Bytes of all weight tensors in the file.")
        .def("__repr__", [](const ember::ModelInfo& i) {
            return "ModelInfo(arch='" + i.arch + "', name='" + i.name + "', n_vocab=" + std::to_string(i.n_vocab) +
                   ", n_ctx_train=" + std::to_string(i.n_ctx_train) + ", n_embd=" + std::to_string(i.n_embd) +
                   ", n_layer=" + std::to_string(i.n_layer) + ", n_head=" + std::to_string(i.n_head) +
                   ", n_head_kv=" + std::to_string(i.n_head_kv) + ", n_ff=" + std::to_string(i.n_ff) +
                   ", n_params=" + std::to_string(i.n_params) + ")";
        });

    py::class_<ember::GenerateResult>(m, "GenerateResult", "What a finished generation produced (Generation.result).")
        .def_property_readonly("text", [](const ember::GenerateResult& r) { return decode(r.text); },
                               "The generated text, stop string excluded. Bytes the model produced that are "
                               "not valid UTF-8 are U+FFFD, as bytes.decode('utf-8', errors='replace') gives; "
                               "`tokens` keep them.")
        .def_readonly("tokens", &ember::GenerateResult::tokens,
                      "The generated token ids (including a final end-of-generation token).")
        .def_property_readonly("stop_reason", [](const ember::GenerateResult& r) { return ember::stop_reason_name(r.stop_reason); },
                               "Why generation ended: 'max_tokens', 'eog', 'stop_string', 'callback' (the "
                               "Generation was closed early), 'cancelled', 'context_full' or 'error' (on the "
                               "`result` of an ember.Error raised part-way).")
        .def_readonly("n_prompt_tokens", &ember::GenerateResult::n_prompt_tokens, "Tokens in the call's prompt.")
        .def_readonly("prompt_ms", &ember::GenerateResult::prompt_ms, "Milliseconds evaluating the prompt.")
        .def_readonly("generate_ms", &ember::GenerateResult::generate_ms,
                      "Milliseconds from the first sampled token to the end.")
        .def_readonly("time_to_first_token_ms", &ember::GenerateResult::time_to_first_token_ms,
                      "Milliseconds from the start to the first sampled token.")
        .def("__repr__", [](const ember::GenerateResult& r) {
            return "GenerateResult(" + std::to_string(r.tokens.size()) + " tokens, stop_reason='" +
                   ember::stop_reason_name(r.stop_reason) + "')";
        });

    py::class_<ember::ChatReply>(m, "ChatReply", "A chat reply with tools (Session.chat(..., tools=...)).")
        .def_property_readonly("content", [](const ember::ChatReply& r) { return decode(r.content); },
                               "The text of the reply, without the calls.")
        .def_property_readonly(
            "tool_calls",
            [](const ember::ChatReply& r) {
                py::list out;
                for (const ember::ToolCall& c : r.tool_calls) out.append(tool_call_dict(c));
                return out;
            },
            "The calls, in the OpenAI shape: [{'id', 'type': 'function', 'function': {'name', 'arguments'}}]; "
            "arguments is JSON text valid against the tool's parameters schema. Append {'role': 'assistant', "
            "'content': reply.content, 'tool_calls': reply.tool_calls} and one {'role': 'tool', 'tool_call_id', "
            "'name', 'content'} per result to the messages, then call chat() again.")
        .def_property_readonly("result", [](const ember::ChatReply& r) { return r.result; },
                               "The raw generation (GenerateResult: text with the calls' syntax, tokens, timings).")
        .def("message",
             [](const ember::ChatReply& r) {
                 py::dict d;
                 d["role"] = "assistant";
                 d["content"] = decode(r.content);
                 py::list calls;
                 for (const ember::ToolCall& c : r.tool_calls) calls.append(tool_call_dict(c));
                 if (!r.tool_calls.empty()) d["tool_calls"] = calls;
                 return d;
             },
             "The reply as a message to append to the conversation.")
        .def("__repr__", [](const ember::ChatReply& r) {
            return "<ember.ChatReply " + std::to_string(r.content.size()) + " bytes of text, " +
                   std::to_string(r.tool_calls.size()) + " tool calls>";
        });
    py::class_<Stream, StreamPtr>(m, "Generation", R"doc(A generation in progress: an iterator of str pieces (Session.generate, chat(stream=True)).

Each next() releases the GIL while the next token is computed and returns the
text that token completed (a piece is never part of a UTF-8 character nor text
that may still turn out to be a stop string). When the iterator is exhausted,
`result` holds the whole GenerateResult. Closing it early (break out of the
loop, close(), leaving a `with` block, or dropping it) stops the generation
where it is; Session.cancel() from another thread ends it with CancelledError
from next(), whose `result` (and this `result`) holds what was generated
(stop_reason 'cancelled'). An error part-way raises likewise, with stop_reason
'error'.)doc")
        .def("__iter__", [](py::object self) { return self; }, "The Generation itself.")
        .def("__next__", &next_piece, "The next piece of text; StopIteration at the end.")
        .def(
            "close",
            [](Stream& s) {
                py::gil_scoped_release release;
                s.close();
            },
            "Stops the generation (if still running) and waits for it to end. Idempotent.")
        .def("__enter__", [](py::object self) { return self; }, "Returns the Generation itself.")
        .def(
            "__exit__",
            [](Stream& s, py::handle, py::handle, py::handle) {
                py::gil_scoped_release release;
                s.close();
            },
            "Closes the Generation.")
        .def_property_readonly("done", &Stream::done, "True once the generation has ended.")
        .def_property_readonly("text", [](const Stream& s) { return decode(s.text); },
                               "The pieces returned so far, joined.")
        .def_property_readonly(
            "result",
            [](Stream& s) -> py::object {
                if (!s.done()) return py::none();
                return py::cast(s.result());
            },
            "The GenerateResult once the generation has ended (None before).")
        .def_property_readonly(
            "reply",
            [](Stream& s) -> py::object {
                if (!s.done() || !s.reply) return py::none();
                return py::cast(*s.reply);
            },
            "chat(..., tools=..., stream=True): the ChatReply (text and tool calls) once the generation has "
            "ended; the pieces carry the reply's text only, never the calls' syntax. None before, and for "
            "other generations.")
        .def_property_readonly(
            "stop_reason",
            [](Stream& s) -> py::object {
                if (!s.done()) return py::none();
                return py::str(ember::stop_reason_name(s.result().stop_reason));
            },
            "GenerateResult.stop_reason once the generation has ended (None before).");

    py::class_<ModelBox, ModelPtr>(m, "Model", kModelDoc)
        .def(py::init([](const std::filesystem::path& path, int32_t n_gpu_layers, bool use_mmap,
                         py::handle memory_budget) {
                 ember::ModelParams p;
                 p.n_gpu_layers = n_gpu_layers;
                 ember::LoadOptions lo;
                 lo.use_mmap = use_mmap;
                 const uint64_t budget = memory_budget_of(memory_budget, "Model");
                 auto box = std::make_shared<ModelBox>();
                 py::gil_scoped_release release;
                 box->model = ember::Model::load(path.string(), p, lo, budget);
                 return box;
             }),
             py::arg("path"), py::arg("n_gpu_layers") = 0, py::kw_only(), py::arg("use_mmap") = true,
             py::arg("memory_budget") = py::none(),
             "Loads the GGUF model at `path` (str or os.PathLike). n_gpu_layers: layers to run on the GPU, "
             "counted from the last. use_mmap=False reads the weights into memory instead of mapping the file "
             "(costs the file's size in memory; the file may then change without harm -- a mapped file must be "
             "replaced by renaming a new file over it, never rewritten in place). Raises NotFoundError/IoError for a missing or unreadable file, "
             "InvalidFileError for a corrupt one, UnsupportedError for an architecture or tensor type ember "
             "cannot run (or GPU layers without a GPU build). memory_budget (bytes, or a size such as '512M'): "
             "OutOfMemoryError, before the weights are read, when the model's estimate exceeds it "
             "(ember.estimate_memory).")
        .def_property_readonly("path", [](const ModelBox& b) { return b.model->path(); }, "The path it was loaded from.")
        .def_property_readonly("info", [](const ModelBox& b) { return b.model->info(); },
                               "A ModelInfo: architecture, name, vocabulary size, dimensions, parameter count.")
        .def_property_readonly("n_vocab", [](const ModelBox& b) { return b.model->info().n_vocab; },
                               "Tokens in the vocabulary: the length of Session.logits.")
        .def_property_readonly("metadata", [](const ModelBox& b) { return metadata_dict(b.model->file()); },
                               "Every GGUF metadata key and value, in file order (numeric arrays as NumPy "
                               "arrays, string arrays as lists). A new dict on every access.")
        .def_property_readonly("chat_template", [](const ModelBox& b) { return decode(b.model->chat_template()); },
                               "The model's Jinja chat template ('' when the file has none).")
        .def_property_readonly(
            "bos_token_id",
            [](const ModelBox& b) -> py::object {
                const ember::TokenId id = b.model->tokenizer().bos();
                if (id == ember::kNoToken) return py::none();
                return py::int_(id);
            },
            "The BOS token id, or None.")
        .def_property_readonly(
            "eos_token_id",
            [](const ModelBox& b) -> py::object {
                const ember::TokenId id = b.model->tokenizer().eos();
                if (id == ember::kNoToken) return py::none();
                return py::int_(id);
            },
            "The EOS token id, or None.")
        .def(
            "is_eog", [](const ModelBox& b, ember::TokenId id) { return b.model->tokenizer().is_eog(id); },
            py::arg("token"), "True for end-of-generation tokens (EOS, EOT, <|im_end|>, <end_of_turn>, ...).")
        .def(
            "tokenize",
            [](const ModelBox& b, py::handle text, bool add_special, bool parse_special) {
                const std::string s = utf8(text, "Model.tokenize: text");
                std::vector<ember::TokenId> ids;
                {
                    py::gil_scoped_release release;
                    ids = b.model->tokenize(s, {.add_special = add_special, .parse_special = parse_special});
                }
                return ids;
            },
            py::arg("text"), py::arg("add_special") = true, py::arg("parse_special") = false,
            "Token ids of `text`. add_special: add BOS/EOS as the model's metadata asks. parse_special: "
            "text such as '<|im_start|>' becomes its control token (otherwise it is plain text).")
        .def(
            "detokenize",
            [](const ModelBox& b, py::handle ids, bool remove_special, bool render_special) {
                const std::vector<ember::TokenId> v = token_ids(ids, "Model.detokenize", "ids");
                std::string text;
                {
                    py::gil_scoped_release release;
                    text = b.model->detokenize(v, {.remove_special = remove_special, .render_special = render_special});
                }
                return decode(text);
            },
            py::arg("ids"), py::arg("remove_special") = false, py::arg("render_special") = false,
            "The text of token ids (inverts tokenize). remove_special: drop a leading BOS / trailing EOS. "
            "render_special: write control tokens as their text (otherwise they vanish). Bytes that do not "
            "form valid UTF-8 (a partial character) become U+FFFD.")
        .def(
            "apply_chat_template",
            [](const ModelBox& b, py::handle messages, bool add_generation_prompt) {
                const auto msgs = chat_messages(messages, "Model.apply_chat_template");
                std::string warning, text;
                {
                    py::gil_scoped_release release;
                    text = b.model->apply_chat_template(msgs, add_generation_prompt, &warning);
                }
                if (!warning.empty()) warn(warning);
                return decode(text);
            },
            py::arg("messages"), py::arg("add_generation_prompt") = true,
            "Renders [{'role': ..., 'content': ...}, ...] with the model's chat template (ChatML, with a "
            "RuntimeWarning, when the template is missing or not recognised). Tokenize the result with "
            "add_special=False, parse_special=True. InvalidArgumentError for a conversation the template "
            "refuses (e.g. no messages).")
        .def("session", &make_session, py::kw_only(), py::arg("n_ctx") = 0, py::arg("n_batch") = 512,
             py::arg("n_threads") = 0, py::arg("kv_type") = "f16", py::arg("precision") = "default",
             py::arg("adapters") = py::none(), py::arg("kv_type_k") = py::none(), py::arg("kv_type_v") = py::none(),
             py::arg("memory_budget") = py::none(),
             "A new Session over this model; the same as ember.Session(model, ...).")
        .def(
            "load_adapter",
            [](const ModelPtr& model, const std::filesystem::path& path) {
                auto box = std::make_shared<AdapterBox>();
                box->model = model;
                py::gil_scoped_release release;
                box->adapter = model->model->load_adapter(path.string());
                return box;
            },
            py::arg("path"),
            "Loads the LoRA adapter (llama.cpp's GGUF adapter format) at `path` for this model: once per "
            "model, then applied per session (Session.set_adapters, or adapters= on Session). "
            "InvalidFileError naming the tensor and shapes when it does not fit this model, "
            "UnsupportedError for a kind or type ember cannot apply (e.g. activated LoRA).")
        .def(
            "chat",
            [](const ModelPtr& model, py::handle messages, bool stream, int64_t n_ctx, int64_t n_batch,
               int64_t n_threads, const py::kwargs& kwargs) {
                return chat(make_session(model, n_ctx, n_batch, n_threads, "f16", "default", py::none()), messages, stream, kwargs,
                            "Model.chat");
            },
            py::arg("messages"), py::kw_only(), py::arg("stream") = false, py::arg("n_ctx") = 0,
            py::arg("n_batch") = 512, py::arg("n_threads") = 0,
            "The assistant's reply to a conversation, in a new session (n_ctx, n_batch, n_threads as for "
            "Session): a str, or with stream=True a Generation of pieces. The other keyword arguments are "
            "those of Session.generate. For a conversation of many turns, Session.chat reuses the cache.")
        .def("__repr__", [](const ModelBox& b) {
            const auto& i = b.model->info();
            return "<ember.Model '" + b.model->path() + "' arch=" + i.arch + " n_params=" + std::to_string(i.n_params) + ">";
        });

    py::class_<AdapterBox, AdapterPtr>(m, "Adapter", "A LoRA adapter loaded for a model (Model.load_adapter).")
        .def_property_readonly("path", [](const AdapterBox& b) { return b.adapter->info().path; }, "The file.")
        .def_property_readonly("model", [](const AdapterBox& b) { return b.model; }, "The Model it was loaded for.")
        .def_property_readonly("name", [](const AdapterBox& b) { return b.adapter->info().name; },
                               "general.name ('' when absent).")
        .def_property_readonly("alpha", [](const AdapterBox& b) { return b.adapter->info().alpha; },
                               "adapter.lora.alpha (0: the scale is the user's scale alone).")
        .def_property_readonly("rank", [](const AdapterBox& b) { return b.adapter->info().rank_max; },
                               "The largest rank of its pairs.")
        .def_property_readonly(
            "targets",
            [](const AdapterBox& b) {
                py::list out;
                for (const ember::AdapterTarget& t : b.adapter->info().targets) {
                    py::dict d;
                    d["tensor"] = t.tensor;
                    d["rank"] = t.rank;
                    d["n_in"] = t.n_in;
                    d["n_out"] = t.n_out;
                    d["type_a"] = ember::type_info(t.type_a).name;
                    d["type_b"] = ember::type_info(t.type_b).name;
                    out.append(d);
                }
                return out;
            },
            "The base tensors it adapts: [{'tensor', 'rank', 'n_in', 'n_out', 'type_a', 'type_b'}, ...].")
        .def_property_readonly("n_params", [](const AdapterBox& b) { return b.adapter->info().n_params; },
                               "Elements of its lora_a / lora_b tensors.")
        .def_property_readonly("nbytes", [](const AdapterBox& b) { return b.adapter->info().bytes; },
                               "Bytes of its tensors (mapped from the file).")
        .def_property_readonly("metadata", [](const AdapterBox& b) { return metadata_dict(b.adapter->file()); },
                               "Every metadata key of the file: {key: value}.")
        .def("__repr__", [](const AdapterBox& b) {
            const auto& i = b.adapter->info();
            return "<ember.Adapter '" + i.path + "' rank=" + std::to_string(i.rank_max) +
                   " targets=" + std::to_string(i.targets.size()) + ">";
        });

    py::class_<SessionBox, SessionPtr>(m, "Session", kSessionDoc)
        .def(py::init(&make_session), py::arg("model"), py::kw_only(), py::arg("n_ctx") = 0, py::arg("n_batch") = 512,
             py::arg("n_threads") = 0, py::arg("kv_type") = "f16", py::arg("precision") = "default",
             py::arg("adapters") = py::none(), py::arg("kv_type_k") = py::none(), py::arg("kv_type_v") = py::none(),
             py::arg("memory_budget") = py::none(),
             "Allocates the KV cache and starts the threads. n_ctx: tokens the cache holds (0 = the model's "
             "training context, capped at 4096). n_batch: prompt tokens per forward pass. n_threads: 0 = one "
             "per core. kv_type: 'f16' (default), 'f32', 'q8_0' or 'q4_0' (keys and values; kv_type_k / kv_type_v "
             "set one of them, llama.cpp's -ctk / -ctv). memory_budget: bytes (or '512M') the model and this session "
             "may use: OutOfMemoryError before allocating when the estimate exceeds it (without one, when the KV "
             "cache cannot fit in the memory the process can get). precision: how quantized weights are multiplied, "
             "'fast' (8-bit activations, llama.cpp's; ~2x prompt speed) or 'exact' (16-bit); 'default' = EMBER_PRECISION, "
             "else 'exact'. adapters: LoRA adapters to apply, [(Adapter, scale), ...] (see set_adapters). "
             "InvalidArgumentError for out-of-range values, "
             "OutOfMemoryError when the cache does not fit.")
        .def(
            "set_adapters",
            [](SessionBox& box, py::handle adapters) { set_adapters(box, adapter_list(adapters, "Session.set_adapters")); },
            py::arg("adapters"),
            "Applies LoRA adapters, [(Adapter, scale), ...] (an Adapter alone means scale 1.0), stacked; [] "
            "removes them. Takes microseconds (no weights are copied). A new list invalidates the KV cache: "
            "the history (tokens) is kept and runs through the model again at the next call. "
            "InvalidArgumentError for an adapter of another model or a scale that is not finite.")
        .def_property_readonly(
            "adapters",
            [](const SessionBox& box) {
                py::list out;
                for (const auto& [a, scale] : box.adapters) out.append(py::make_tuple(a, scale));
                return out;
            },
            "The adapters applied: [(Adapter, scale), ...] (a new list).")
        .def(
            "eval",
            [](SessionBox& box, py::handle tokens, bool all_logits) -> py::object {
                const std::vector<ember::TokenId> ids = token_ids(tokens, "Session.eval", "the input");
                close_active(box);
                const auto n_vocab = static_cast<py::ssize_t>(box.model->model->info().n_vocab);
                py::array_t<float> rows;
                if (all_logits) rows = py::array_t<float>({static_cast<py::ssize_t>(ids.size()), n_vocab});
                float* out = all_logits ? rows.mutable_data() : nullptr;
                run_interruptible(box, [&] {
                    box.session.eval(ids, all_logits);
                    if (out) {
                        const auto all = box.session.all_logits();
                        std::memcpy(out, all.data(), all.size() * sizeof(float));
                    }
                });
                if (all_logits) return rows;
                return py::none();
            },
            py::arg("tokens"), py::arg("all_logits") = false,
            "Runs the forward pass over `tokens` (ids), appended to the history, with the GIL released. "
            "Afterwards `logits` is the row of the last token. With all_logits=True it returns a new "
            "float32 array [len(tokens), n_vocab] of every token's logits (else None). "
            "InvalidArgumentError for an empty list, an id outside the vocabulary, or more tokens than the "
            "context has room for; CancelledError when cancel() interrupted it (or was held for it: see "
            "cancel()). Ctrl-C stops it within ~0.1 s (KeyboardInterrupt; the tokens of the batches that "
            "completed stay in the history).")
        .def_property_readonly(
            "logits",
            [](py::object self) -> py::object {
                SessionBox& box = self.cast<SessionBox&>();
                std::span<const float> row;
                {
                    py::gil_scoped_release release;
                    std::lock_guard<std::mutex> lock(box.mu);
                    row = box.session.logits();
                }
                if (row.empty()) return py::none();
                // a view of the session's own buffer (no copy); `self` is its base and stays alive with it
                py::array_t<float> view({static_cast<py::ssize_t>(row.size())}, {static_cast<py::ssize_t>(sizeof(float))},
                                        row.data(), self);
                view.attr("setflags")(py::arg("write") = false);
                return view;
            },
            "The logits after the last token of the history: a read-only float32 NumPy array of shape "
            "(n_vocab,) that is a view of the session's buffer, not a copy (its .base keeps the session "
            "alive). The next eval() or generate() overwrites it in place: np.array(session.logits) keeps a "
            "copy. None when there is no such row: nothing evaluated yet, or after generate() (its last "
            "token is not evaluated yet), reset() or truncate().")
        .def(
            "generate",
            [](const SessionPtr& box, py::handle prompt, const py::kwargs& kwargs) {
                py::dict kw = kwargs.attr("copy")();
                ember::Constraint c = take_constraint(kw, "Session.generate");
                ember::GenerateParams gp = generate_params(py::reinterpret_borrow<py::kwargs>(kw), "Session.generate");
                return start_stream(box, prompt_job(*box, prompt, std::move(gp), std::move(c)));
            },
            py::arg("prompt"), kGenerateDoc)
        .def(
            "chat",
            [](const SessionPtr& box, py::handle messages, bool stream, const py::kwargs& kwargs) {
                return chat(box, messages, stream, kwargs, "Session.chat");
            },
            py::arg("messages"), py::kw_only(), py::arg("stream") = false,
            "The assistant's reply to a conversation ([{'role': ..., 'content': ...}, ...], the whole of it "
            "every time): a str, or with stream=True a Generation of pieces. Roles are 'system', 'user' and "
            "'assistant'. The conversation is rendered with the model's chat template; control-token text "
            "typed in a message (e.g. '<|im_start|>') stays text unless parse_special=True. The part of it "
            "the session's cache already holds (the earlier turns, when the previous call was on the same "
            "conversation) is not evaluated again. The other keyword arguments are those of generate() "
            "(parse_special: default False here, about the messages' contents). "
            "Ctrl-C stops a non-streaming reply within ~0.1 s (KeyboardInterrupt); a failure part-way "
            "raises an ember.Error whose `result` holds the reply so far.")
        .def(
            "save",
            [](SessionBox& box, py::object path) -> py::object {
                close_active(box);
                if (path.is_none()) {
                    std::vector<uint8_t> bytes;
                    {
                        py::gil_scoped_release release;
                        std::lock_guard<std::mutex> lock(box.mu);
                        bytes = box.session.save();
                    }
                    return py::bytes(reinterpret_cast<const char*>(bytes.data()), bytes.size());
                }
                if (!py::isinstance<py::str>(path) && !py::hasattr(path, "__fspath__"))
                    throw py::type_error("Session.save: path must be a str or os.PathLike (or None for bytes)");
                const std::string p = path.cast<std::filesystem::path>().string();
                py::gil_scoped_release release;
                std::lock_guard<std::mutex> lock(box.mu);
                box.session.save(p);
                return py::none();
            },
            py::arg("path") = py::none(),
            "Saves the session's state (history, the KV rows in use, the last logits, the adapter set; with the "
            "model's fingerprint and a checksum): to `path` (str or os.PathLike; written to a temporary file and "
            "renamed over it), or, without a path, returned as bytes. Ends an unfinished Generation first.")
        .def(
            "load",
            [](SessionBox& box, py::handle source) {
                close_active(box);
                if (PyObject_CheckBuffer(source.ptr()) != 0) {
                    // bytes, bytearray, memoryview, array...: copied into one contiguous bytes
                    // object first, so a strided or reversed view is read as the bytes it shows
                    PyObject* raw = PyBytes_FromObject(source.ptr());
                    if (raw == nullptr) throw py::error_already_set();
                    const py::bytes data = py::reinterpret_steal<py::bytes>(raw);
                    const std::string_view view(PyBytes_AS_STRING(data.ptr()),
                                                static_cast<size_t>(PyBytes_GET_SIZE(data.ptr())));
                    py::gil_scoped_release release;
                    std::lock_guard<std::mutex> lock(box.mu);
                    box.session.load(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(view.data()), view.size()));
                    return;
                }
                if (!py::isinstance<py::str>(source) && !py::hasattr(source, "__fspath__"))
                    throw py::type_error("Session.load: source must be a path (str or os.PathLike) or bytes");
                const std::string p = source.cast<std::filesystem::path>().string();
                py::gil_scoped_release release;
                std::lock_guard<std::mutex> lock(box.mu);
                box.session.load(p);
            },
            py::arg("source"),
            "Replaces the session's state with one saved by save(): a path, or bytes. Refused with the session "
            "unchanged: InvalidFileError for a file that is not a state file, truncated or corrupted; "
            "InvalidArgumentError for a state of another model, another K or V cache type, more tokens than "
            "n_ctx, or another adapter set.")
        .def_property_readonly("kv_type_k",
                               [](const SessionBox& b) { return ember::kv_cache_type_name(b.session.kv_type_k()); },
                               "The keys' cache type: 'f16', 'f32', 'q8_0' or 'q4_0'.")
        .def_property_readonly("kv_type_v",
                               [](const SessionBox& b) { return ember::kv_cache_type_name(b.session.kv_type_v()); },
                               "The values' cache type.")
        .def_property_readonly("kv_cache_bytes", [](const SessionBox& b) { return b.session.kv_cache_bytes(); },
                               "Bytes of the KV cache (host and device).")
        .def(
            "reset",
            [](SessionBox& box) {
                close_active(box);
                py::gil_scoped_release release;
                std::lock_guard<std::mutex> lock(box.mu);
                box.session.reset();
            },
            "Empties the history (ending an unfinished Generation first) and withdraws a held cancel().")
        .def(
            "truncate",
            [](SessionBox& box, int64_t n) {
                if (n < 0)
                    throw ember::Error(ember::ErrorCode::InvalidArgument,
                                       "Session.truncate: n is " + std::to_string(n) + "; it must be >= 0");
                close_active(box);
                py::gil_scoped_release release;
                std::lock_guard<std::mutex> lock(box.mu);
                box.session.truncate(static_cast<size_t>(n));
            },
            py::arg("n"), "Keeps the first n tokens of the history (InvalidArgumentError if n > n_past).")
        .def(
            "cancel",
            [](SessionBox& box) {
                StreamPtr s = box.active.lock();
                if (s && !s->done()) s->cancel();  // the stream's generation takes it (or it is withdrawn)
                else box.session.cancel();
            },
            "Stops the eval(), chat() or Generation running now on another thread at its next check "
            "(between layers): it raises CancelledError, whose `result` holds what a generation produced "
            "(stop_reason 'cancelled'). A cancel is never lost: with nothing running it is held, and the "
            "next eval() or generation raises CancelledError at once, having done nothing; reset() "
            "withdraws it. The same rule as in C and C++. Safe from any thread; never blocks.")
        .def_property_readonly(
            "tokens",
            [](SessionBox& box) {
                std::vector<ember::TokenId> out;
                py::gil_scoped_release release;
                std::lock_guard<std::mutex> lock(box.mu);
                const auto t = box.session.tokens();
                out.assign(t.begin(), t.end());
                return out;
            },
            "The history: every token id in the cache, in order (a new list).")
        .def_property_readonly(
            "n_past",
            [](SessionBox& box) {
                py::gil_scoped_release release;
                std::lock_guard<std::mutex> lock(box.mu);
                return box.session.n_past();
            },
            "len(tokens).")
        .def_property_readonly("n_ctx", [](const SessionBox& b) { return b.session.n_ctx(); }, "Tokens the cache holds.")
        .def_property_readonly("n_batch", [](const SessionBox& b) { return b.session.n_batch(); },
                               "Prompt tokens per forward pass.")
        .def_property_readonly("n_threads", [](const SessionBox& b) { return b.session.n_threads(); },
                               "Threads computing (0 resolved to the core count).")
        .def_property_readonly("precision", [](const SessionBox& b) { return ember::precision_name(b.session.precision()); },
                               "'fast' or 'exact': how generation multiplies quantized weights ('default' resolved).")
        .def_property_readonly("model", [](const SessionBox& b) { return b.model; }, "The Model.")
        .def_property_readonly("warnings", [](const SessionBox& b) { return b.session.warnings(); },
                               "Warnings from construction (also issued as RuntimeWarning then).")
        .def("__repr__", [](const SessionBox& b) {
            return "<ember.Session n_ctx=" + std::to_string(b.session.n_ctx()) +
                   " n_threads=" + std::to_string(b.session.n_threads()) + ">";
        });

    m.def(
        "estimate_memory",
        [](const std::filesystem::path& path, int32_t n_gpu_layers, bool use_mmap, int64_t n_ctx, int64_t n_batch,
           int64_t n_threads, const std::string& kv_type, py::handle kv_type_k, py::handle kv_type_v) {
            ember::ModelParams mp;
            mp.n_gpu_layers = n_gpu_layers;
            ember::LoadOptions lo;
            lo.use_mmap = use_mmap;
            const ember::SessionParams sp = session_params(n_ctx, n_batch, n_threads, kv_type);
            const ember::SessionOptions so = session_options(kv_type_k, kv_type_v, py::none());
            ember::MemoryEstimate e;
            {
                py::gil_scoped_release release;
                e = ember::estimate_memory(path.string(), mp, sp, so, lo);
            }
            py::dict d;
            d["weights_file"] = e.weights_file;
            d["weights_resident"] = e.weights_resident;
            d["weights_repacked"] = e.weights_repacked;
            d["weights_gpu"] = e.weights_gpu;
            d["tokenizer"] = e.tokenizer;
            d["runtime"] = e.runtime;
            d["kv_cache"] = e.kv_cache;
            d["kv_cache_gpu"] = e.kv_cache_gpu;
            d["kv_full_layers"] = e.kv_full_layers;
            d["kv_swa_layers"] = e.kv_swa_layers;
            d["activations"] = e.activations;
            d["activations_gpu"] = e.activations_gpu;
            d["n_ctx"] = e.n_ctx;
            d["n_threads"] = e.n_threads;
            d["model_host"] = e.model_host();
            d["session_host"] = e.session_host();
            d["host_total"] = e.host_total();
            d["gpu_total"] = e.gpu_total();
            d["table"] = e.describe();
            return d;
        },
        py::arg("path"), py::kw_only(), py::arg("n_gpu_layers") = 0, py::arg("use_mmap") = true, py::arg("n_ctx") = 0,
        py::arg("n_batch") = 512, py::arg("n_threads") = 0, py::arg("kv_type") = "f16",
        py::arg("kv_type_k") = py::none(), py::arg("kv_type_v") = py::none(),
        "What Model(path, n_gpu_layers, use_mmap=...) and one Session(model, n_ctx=..., kv_type=...) would use, "
        "in bytes, from the file's metadata alone (no weights are read): a dict of the parts (weights_resident, "
        "weights_repacked, tokenizer, runtime, kv_cache, kv_full_layers, kv_swa_layers, activations, their GPU "
        "parts), the totals model_host, session_host, host_total (the expected peak RSS), gpu_total, and 'table' "
        "(a readable table). Errors as Model for the file, InvalidArgumentError for session arguments a Session "
        "would refuse.");
    m.def(
        "available_memory", [] { return ember::available_memory(); },
        "Bytes this process can still get: the smaller of MemAvailable + SwapFree and the cgroup's limit minus its "
        "use (2**64 - 1 when neither can be read).");
    m.def(
        "parse_memory_size", [](const std::string& text) { return ember::parse_memory_size(text); }, py::arg("text"),
        "'512M', '1.5G', '64k', '2GiB' or '1048576' as bytes (K/M/G/T are powers of 1024); InvalidArgumentError "
        "otherwise.");
}

}  // namespace ember_py
