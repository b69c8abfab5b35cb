// ember::Session: one conversation with a model -- its own KV cache, threads
// and scratch buffers -- over a shared, immutable ember::Model.
//
//   auto model = ember::Model::load("model.gguf");
//   ember::Session s(model, {.n_ctx = 2048, .n_threads = 2});
//   ember::GenerateParams gp;
//   gp.max_tokens = 32;
//   gp.sampling.temperature = 0;  // greedy
//   s.generate("The capital of France is", gp,
//              [](std::string_view piece) { std::cout << piece << std::flush; return true; });
//
// The session's history is a list of tokens (tokens()); eval() and generate()
// append to it, reset() empties it, truncate() drops its tail. generate()
// leaves its last sampled token in the history without running it through
// the model yet (a one-shot run would waste that step); the next eval() or
// generate() does, so a conversation continues exactly where it stopped.
// A session is used by one thread at a time; cancel() may be called from any
// thread. Errors are ember::Error; a failed call leaves the session usable:
// the tokens of its batches that completed stay in the history, the rest of
// its tokens are dropped (so a retry does not repeat them).
//
// Cancellation is an error, in C++, C and Python alike: a cancelled eval()
// throws Error(Cancelled); a cancelled generate() throws GenerateError (code
// Cancelled) whose result() holds what it produced, with StopReason::Cancelled.
// Any other failure of generate() is a GenerateError too, its result() holding
// the tokens and text generated before it, with StopReason::Error; the history
// then holds exactly what the result says: the n_prompt_tokens of the prompt it
// kept and those tokens. A cancel is never lost: one that arrives while a call
// runs stops it at its next check (or, when the call ends first, ends with it);
// one that arrives while no call runs is held, and the next eval() or
// generate() throws at once as cancelled, having done nothing; reset() and
// clear_cancel() withdraw a held cancel.
#pragma once

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ember/adapter.hpp"
#include "ember/error.hpp"
#include "ember/export.hpp"
#include "ember/grammar.hpp"
#include "ember/model.hpp"
#include "ember/sampler.hpp"
#include "ember/tool_calls.hpp"

namespace ember {

enum class KvCacheType {
    F16,   // default: half the memory, the precision llama.cpp uses
    F32,
    Q8_0,  // 8.5 bits a value (blocks of 32 with an f16 scale, as GGUF's Q8_0): 53% of F16
    Q4_0,  // 4.5 bits a value (GGUF's Q4_0): 28% of F16, at a measurable accuracy cost
           // (docs/MEMORY.md has the perplexity of each type)
};
EMBER_API const char* kv_cache_type_name(KvCacheType t) noexcept;  // "f16", "f32", "q8_0", "q4_0"
// Parses "f16", "f32", "q8_0", "q4_0" (as llama.cpp's -ctk / -ctv); InvalidArgument otherwise.
EMBER_API KvCacheType parse_kv_cache_type(std::string_view name);

// How the CPU multiplies quantized weights by activations.
enum class Precision {
    Default,  // EMBER_PRECISION when it is set ("fast" or "exact"), else Exact
    Fast,     // activations rounded to 8-bit integers, per 8 values in generation steps
              // (batches of fewer than 16 tokens) and per 16 in prompts, whose weights are
              // unpacked to 8-bit panels (4- to 6-bit types; llama.cpp rounds per 32):
              // about twice the prompt speed on 1B-class models; logits move by ~2e-2
              // (median relative L2), perplexity by +0.14% (generation) / +0.3% (prompts)
              // on SmolLM2's full test text (+0.35% / +0.4-0.8% on its first chunks;
              // llama.cpp +0.44%). Not the default until it holds the 0.2% perplexity gate
              // (docs/ACCURACY.md)
    Exact,    // 16-bit activations in generation steps, float products of dequantized
              // weights in prompts: logits within 1e-2 of a float64 reference, perplexity
              // within 0.01% of it
};
EMBER_API const char* precision_name(Precision p) noexcept;  // "default", "fast", "exact"

struct SessionParams {
    uint32_t n_ctx = 0;      // tokens the KV cache holds; 0 = the model's training context,
                             // capped at 4096. Larger than the training context: allowed,
                             // with a warning (see warnings()).
    uint32_t n_batch = 512;  // prompt tokens evaluated per forward pass (>= 1)
    int32_t n_threads = 0;   // 0 = one per core; negative: InvalidArgument
    KvCacheType kv_type = KvCacheType::F16;
    // (no precision here: a member added to this struct would change its size for
    // callers built against the older header; see Session::set_precision)
};

// What SessionParams cannot hold without changing its size for callers built
// against an older header: separate K and V cache types and a memory budget.
// Pass it to Session(model, params, options).
struct SessionOptions {
    // The keys' / values' cache types (llama.cpp's -ctk / -ctv); unset: params.kv_type.
    std::optional<KvCacheType> kv_type_k{};
    std::optional<KvCacheType> kv_type_v{};
    // Bytes the model and this session may use together (ember/memory.hpp's
    // estimate: the model's part plus this session's); 0 = no budget. A session
    // that would exceed it is refused before anything is allocated, with
    // Error(OutOfMemory) giving the estimate, the budget and what to change.
    uint64_t memory_budget = 0;
};

enum class StopReason {
    MaxTokens,        // max_tokens were generated
    EndOfGeneration,  // the model produced EOS/EOT (or another end-of-generation token)
    StopString,       // the text reached one of the stop strings
    Callback,         // the piece callback returned false
    Cancelled,        // cancel() was called
    ContextFull,      // the context (n_ctx tokens) is full
    Error,            // the call failed (part-way, or before it started): see GenerateError
};
EMBER_API const char* stop_reason_name(StopReason r) noexcept;  // "max_tokens", "eog", ...

struct GenerateParams {
    int32_t max_tokens = 128;   // tokens to generate; -1 = until end of generation or a full
                                // context; 0 = only evaluate the prompt. Less than -1: InvalidArgument
    SamplerParams sampling{};   // temperature, top-k/p, min-p, penalties, logit bias, seed
    std::vector<std::string> stop{};  // stop strings: generation ends where one appears in the
                                    // generated text; it is not part of the output. Empty: InvalidArgument
    bool ignore_eos = false;    // keep going past end-of-generation tokens (they are banned)
    // How a text prompt is tokenized:
    bool add_special = true;    // add BOS (as the model asks) when the cache is empty
    bool parse_special = true;  // "<|im_start|>" etc. in the prompt become control tokens (llama.cpp's default)
};

struct GenerateResult {
    std::string text;             // the generated text, stop string excluded; always valid UTF-8: bytes the
                                  // model produced that are not (byte tokens) become U+FFFD as Python's
                                  // bytes.decode('utf-8', errors='replace') does (tokens keep the bytes).
                                  // After a callback stop: exactly the pieces the callback received
    std::vector<TokenId> tokens;  // the generated tokens (including a final end-of-generation token)
    StopReason stop_reason = StopReason::MaxTokens;
    size_t n_prompt_tokens = 0;   // tokens of this call's prompt now in the history: all of them, unless a
                                  // cancel or an error stopped the prompt part-way (then those of the
                                  // batches that completed; 0 for a held cancel or an argument error)
    double prompt_ms = 0;         // evaluating the prompt
    double generate_ms = 0;       // from the first sampled token to the end
    double time_to_first_token_ms = 0;  // from the call to the first token sampled
};

// Receives each piece of generated text as soon as it is complete (valid UTF-8,
// never part of a character, never text that may turn out to be a stop string).
// Return false to stop generation.
using PieceCallback = std::function<bool(std::string_view piece)>;

// What Session::generate throws: an Error that also carries what the call
// produced before it failed or was cancelled (result().stop_reason is
// StopReason::Cancelled for code() Cancelled, else StopReason::Error). Catch it
// before ember::Error to keep a partial reply.
class EMBER_API GenerateError : public Error {
public:
    GenerateError(ErrorCode code, const std::string& message, GenerateResult partial);
    const GenerateResult& result() const noexcept { return *result_; }

private:
    std::shared_ptr<const GenerateResult> result_;  // shared: exceptions are copied
};

// What Session::chat takes and returns.
struct ChatRequest {
    std::vector<ChatTurn> messages;
    std::vector<ToolDef> tools{};
    ToolChoice tool_choice{};
    bool parallel_tool_calls = true;
    Grammar response_format{};  // e.g. Grammar::json_object() or from_json_schema: constrains the text reply
};

struct ChatReply {
    std::string content;              // the text of the reply (without the calls)
    std::vector<ToolCall> tool_calls; // the calls, arguments valid against their tools' schemas
    GenerateResult result;            // the raw generation (text, tokens, stop reason, timings)
};

class EMBER_API Session {
public:
    // Allocates the KV cache and starts the threads. Throws InvalidArgument for
    // a null model or out-of-range params, OutOfMemory when the cache does not fit.
    //
    // The KV cache is committed (its pages touched) at creation, so that a session
    // that was created never dies later of the kernel's OOM killer for lack of
    // memory for its cache. Before allocating, the session's estimate
    // (ember/memory.hpp) is checked: against options.memory_budget when one is
    // set, else against the memory the process can get (MemAvailable + free swap,
    // and the cgroup's memory.max minus its current use): OutOfMemory saying
    // what it needs, what there is, and what to change.
    explicit Session(std::shared_ptr<const Model> model, const SessionParams& params = {});
    Session(std::shared_ptr<const Model> model, const SessionParams& params, const SessionOptions& options);
    ~Session();
    Session(Session&&) noexcept;
    Session& operator=(Session&&) noexcept;
    Session(const Session&) = delete;
    Session& operator=(const Session&) = delete;

    // Runs the forward pass over `tokens`, appended to the cache, in batches of
    // up to n_batch. Afterwards logits() is the row for the last token; with
    // all_logits, all_logits() holds one row per token of this call.
    // InvalidArgument for an empty list, an id outside the vocabulary (the
    // tokenizer's tokens: rows of a padded output matrix past them are not
    // tokens), or more tokens than the cache has room for (nothing is evaluated
    // then). Error(Cancelled) when cancel() interrupted it between two batches
    // or layers, or was held from before the call (nothing is evaluated then).
    void eval(std::span<const TokenId> tokens, bool all_logits = false);

    // [n_vocab] the row after the last token of tokens(); empty when there is
    // none yet (nothing evaluated, or after generate(), truncate() or reset())
    std::span<const float> logits() const noexcept;
    std::span<const float> all_logits() const noexcept;  // [n_tokens of the last eval, n_vocab] row-major;
                                                         // empty unless it asked for all_logits

    // Tokenizes `prompt` (see GenerateParams), evaluates it after what the cache
    // holds, then samples up to max_tokens tokens, streaming their text to
    // on_piece. Every error is a GenerateError (see the top of this file):
    // InvalidArgument when the prompt is not valid UTF-8, when it does not fit in
    // the context (no silent truncation), or for absurd params; Cancelled when
    // cancel() stopped it. An exception thrown by on_piece passes through as it is.
    GenerateResult generate(std::string_view prompt, const GenerateParams& params = {},
                            const PieceCallback& on_piece = {});
    // The same with a tokenized prompt (may be empty when the cache is not).
    GenerateResult generate(std::span<const TokenId> prompt, const GenerateParams& params = {},
                            const PieceCallback& on_piece = {});
    // generate() under a constraint (ember/grammar.hpp): every token sampled keeps
    // the generated text a prefix of a string of the grammar's language (tokens
    // that would leave it are masked before sampling; the sampled one is checked
    // first, so masking costs only when the model strays), and end-of-generation
    // is allowed exactly where the language allows the text to end; when nothing
    // but the end is allowed, generation stops there (StopReason::EndOfGeneration,
    // no end token in the result). An empty grammar constrains nothing. Errors as
    // generate(), plus GrammarError for a token reference the vocabulary lacks.
    GenerateResult generate(std::string_view prompt, const GenerateParams& params, const Constraint& constraint,
                            const PieceCallback& on_piece = {});
    GenerateResult generate(std::span<const TokenId> prompt, const GenerateParams& params,
                            const Constraint& constraint, const PieceCallback& on_piece = {});

    // One chat turn: renders req.messages (and req.tools) with the model's chat
    // template (ember/tool_calls.hpp), reuses the part of the history that the
    // rendered prompt starts with (the rest of the history is dropped), generates
    // the reply under the tools' constraint (or req.response_format), and splits
    // it into text and tool calls. on_piece receives the reply's text only, never
    // the calls' syntax. Errors as generate(); InvalidArgument for tools or a
    // conversation the format refuses, SchemaError for a tool's parameters.
    ChatReply chat(const ChatRequest& req, const GenerateParams& params = {}, const PieceCallback& on_piece = {});

    // Empties the history and withdraws a held cancel.
    void reset();
    // Keeps the first n tokens of the history (n > n_past(): InvalidArgument).
    void truncate(size_t n);
    // Stops the eval() or generate() running now on another thread at its next
    // check (between layers); it then throws Error(Cancelled) (eval) or
    // GenerateError(Cancelled) (generate). A call that ends before its next
    // check ends the cancel with it. Without a call running, the cancel is held:
    // the next eval() or generate() throws so at once, having done nothing
    // (reset() or clear_cancel() withdraw it). Safe from any thread, never blocks.
    void cancel() noexcept;
    // Withdraws a cancel that no call has taken yet (e.g. one that arrived just
    // after the call it meant to stop had ended). Safe from any thread.
    void clear_cancel() noexcept;
    // Whether a cancel is held for the next call (e.g. to skip preparing a call
    // that would return at once).
    bool cancel_pending() const noexcept;

    std::span<const TokenId> tokens() const noexcept;  // the history, in order (see the top of this file)
    size_t n_past() const noexcept;                    // tokens().size()
    uint32_t n_ctx() const noexcept;
    uint32_t n_batch() const noexcept;
    int32_t n_threads() const noexcept;                // after resolving 0
    // The precision of the generation kernels: Default at creation (EMBER_PRECISION, else
    // Exact); set_precision changes it between calls (Default resolves again). Nothing
    // else changes: the KV cache and the history stay. InvalidArgument for a value that
    // is not a Precision, or a bad EMBER_PRECISION.
    void set_precision(Precision p);
    Precision precision() const noexcept;              // the resolved one: Fast or Exact
    // The LoRA adapters this session applies, each with its user scale (the
    // effective scale of a pair is scale * alpha / rank, see ember/adapter.hpp),
    // stacked in the order given; an empty list removes them. No weights are
    // copied: changing the list takes microseconds. The adapters change every
    // layer's keys and values, so a new list (one that differs from the current
    // one) invalidates the whole KV cache: the history (tokens()) is kept, and
    // the next eval() or generate() runs it through the model again before its
    // own tokens; logits() is empty until then. InvalidArgument for a null
    // adapter, one loaded for another model, a scale that is not finite, or a
    // call made while eval() / generate() runs on this session (e.g. from
    // on_piece).
    void set_adapters(std::span<const AdapterScale> adapters);
    void set_adapters(std::initializer_list<AdapterScale> adapters) {  // s.set_adapters({{adapter, 1.0f}})
        set_adapters(std::span<const AdapterScale>(adapters.begin(), adapters.size()));
    }
    const std::vector<AdapterScale>& adapters() const noexcept;

    // ---- saved state (docs/SESSION_STATE.md has the file format) ----
    // Writes the session's state: the history, the K and V rows of the tokens
    // evaluated (sliding-window layers' ring cells included), the last logits and
    // the adapter set, with the model's fingerprint and a checksum. The file is
    // written to a temporary beside `path` and renamed over it, so a crash never
    // leaves a half-written file. Io for a file that cannot be written;
    // InvalidArgument during a call on this session.
    void save(const std::string& path) const;
    std::vector<uint8_t> save() const;  // the same bytes, in memory
    // Replaces the session's state with a saved one. Refused, with nothing changed,
    // for a file that is not a state file, of another version, truncated or
    // corrupted (checksum), saved from another model (fingerprint), with another K
    // or V cache type, more tokens than this session's n_ctx, or another adapter
    // set than this session's: InvalidFile / InvalidArgument saying which.
    void load(const std::string& path);
    void load(std::span<const uint8_t> state);

    KvCacheType kv_type_k() const noexcept;
    KvCacheType kv_type_v() const noexcept;

    // Bytes of the KV cache (host and device): full-attention layers hold n_ctx
    // cells, sliding-window layers a ring of window + n_batch cells.
    uint64_t kv_cache_bytes() const noexcept;
    const std::shared_ptr<const Model>& model() const noexcept;
    // Warnings from construction (e.g. n_ctx beyond the training context).
    const std::vector<std::string>& warnings() const noexcept;

    struct Impl;

private:
    std::unique_ptr<Impl> impl_;
};

}  // namespace ember
