// Python arguments -> ember types, and ember strings -> Python str.
//
// A wrong Python type raises TypeError naming the argument; a value of the
// right type that ember refuses raises ember.InvalidArgumentError (an
// ember::Error), with the same kind of message the C++ API writes.
#pragma once

#include <pybind11/pybind11.h>

#include <string>
#include <string_view>
#include <vector>

#include "ember/ember.hpp"

namespace ember_py {

namespace py = pybind11;

// UTF-8 bytes -> str; invalid bytes (a generation's unfinished character at
// the very end, a single token's partial piece) become U+FFFD.
py::str decode(std::string_view s);

// A str -> its UTF-8 bytes (TypeError for anything else).
std::string utf8(py::handle obj, const char* what);

// A sequence of token ids: a list, a tuple, a NumPy integer array, any
// iterable of objects with __index__. `fn` names the caller in messages.
std::vector<ember::TokenId> token_ids(py::handle obj, const char* fn, const char* what);

// [{"role": ..., "content": ...}, ...] (any sequence of mappings with str values).
std::vector<ember::ChatMessage> chat_messages(py::handle obj, const char* fn);

// The keyword arguments of Session.generate and the chat methods:
//   max_tokens, temperature, top_k, top_p, min_p, repeat_penalty,
//   frequency_penalty, presence_penalty, penalty_last_n, seed, stop,
//   logit_bias, ignore_eos, add_special, parse_special
// Defaults are the C++ defaults (GenerateParams, SamplerParams). An unknown
// name is a TypeError, as for any Python function.
ember::GenerateParams generate_params(const py::kwargs& kwargs, const char* fn);

// Takes the constraint keyword arguments out of kwargs (a copy is returned
// without them): grammar (GBNF str or ember.Grammar) and json_schema (dict or
// JSON text); both at once is InvalidArgumentError.
ember::Constraint take_constraint(py::dict& kwargs, const char* fn);

// What Session.chat takes beyond generate()'s keyword arguments, taken out of
// kwargs: tools (OpenAI shape), tool_choice, parallel_tool_calls,
// response_format ({"type": "json_object"} / {"type": "json_schema", ...} /
// ember.Grammar). `used` is set when any of them was given.
ember::ChatRequest take_chat_request(py::dict& kwargs, const char* fn, bool* used);

// [{"role", "content", "tool_calls", "tool_call_id", "name"}, ...] (OpenAI shape).
std::vector<ember::ChatTurn> chat_turns(py::handle obj, const char* fn);

// A tool call as OpenAI writes it: {"id", "type": "function", "function": {"name", "arguments"}}.
py::dict tool_call_dict(const ember::ToolCall& c);

// Session construction arguments, range-checked. kv_type is "f16", "f32", "q8_0" or "q4_0".
ember::SessionParams session_params(int64_t n_ctx, int64_t n_batch, int64_t n_threads, const std::string& kv_type);
// kv_type_k / kv_type_v (None or a type name) and memory_budget (bytes as an int >= 0,
// or a size such as "512M"), for SessionOptions.
ember::SessionOptions session_options(py::handle kv_type_k, py::handle kv_type_v, py::handle memory_budget);
// A memory budget: an int >= 0 (bytes) or a str such as "512M" (ember::parse_memory_size).
uint64_t memory_budget_of(py::handle value, const char* fn);
// "default", "fast" or "exact" (InvalidArgumentError otherwise).
ember::Precision precision_of(const std::string& precision);

}  // namespace ember_py
