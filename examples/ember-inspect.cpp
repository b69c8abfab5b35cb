// ember-inspect: print what a GGUF file holds - its version, every metadata
// key with type and value, and a table of tensors - as text or as JSON. A LoRA
// adapter (general.type "adapter") gets a summary of what it adapts, checked
// against its base model with -m.
//
//   ember-inspect model.gguf            human-readable, long values summarised
//   ember-inspect model.gguf --json     one JSON object, complete values
//   ember-inspect lora.gguf -m base.gguf   and whether the adapter fits base.gguf
//
// Exit status: 0 on success (also when the reader of stdout goes away, as with
// `| head`); 1 when the file cannot be read or stdout cannot be written; 2 for
// a wrong command line.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "common_args.hpp"
#include "common_stdout.hpp"
#include "ember/ember.hpp"

namespace {

using ember::gguf::Value;
using ember::gguf::ValueType;

constexpr uint64_t kShowItems = 8;     // array elements shown in text mode
constexpr size_t kShowChars = 96;      // string bytes shown in text mode

constexpr const char* kUsage =
    "usage: ember-inspect FILE [--json] [--full] [-m BASE]\n"
    "       ember-inspect FILE --memory [-c N] [-b N] [-t N] [--kv-type T | -ctk T -ctv T]\n"
    "                     [-ngl N] [--no-mmap] [--mem-budget SIZE] [--json]\n"
    "       ember-inspect --version\n"
    "Prints a GGUF file's version, metadata and tensor table. For a LoRA adapter\n"
    "(general.type \"adapter\") also what it adapts: architecture, alpha, ranks, and per\n"
    "target matrix its rank, shape and the types of its pair; with -m, checked against\n"
    "the base model.\n"
    "  --json   one JSON object {version, metadata, metadata_types, tensors, ...}; an\n"
    "           adapter adds \"adapter\" {type, arch, alpha, rank_min, rank_max, targets, ...}\n"
    "  --full   text mode: print long strings and arrays whole\n"
    "  -m, --model BASE  load BASE and check FILE against it as ember applies adapters\n"
    "           (Model::load_adapter): the architecture, every target tensor, shapes, ranks\n"
    "           and types. An adapter that does not fit is an error (exit status 1)\n"
    "  --memory what loading FILE and one session would use (ember::estimate_memory:\n"
    "           the metadata only, no weights are read), part by part, for the session\n"
    "           flags given (as ember-run's: -c, -b, -t, --kv-type, -ctk, -ctv, -ngl,\n"
    "           --no-mmap); with --mem-budget SIZE, whether it fits (exit status 1 when\n"
    "           it does not, with what to change)\n"
    "Exit status: 0 on success; 1 when FILE cannot be read, an adapter cannot be applied\n"
    "(without -m: what no base model could fix, such as half of a pair missing), or\n"
    "stdout cannot be written; 2 for a wrong command line.\n";

// Text-mode rendering of a string: quoted, control bytes escaped, cut if long.
std::string quote(std::string_view s, bool full) {
    std::string out = "\"";
    const size_t n = full ? s.size() : std::min(s.size(), kShowChars);
    for (size_t i = 0; i < n; ++i) {
        const unsigned char c = static_cast<unsigned char>(s[i]);
        if (c == '\n') out += "\\n";
        else if (c == '\t') out += "\\t";
        else if (c == '"') out += "\\\"";
        else if (c == '\\') out += "\\\\";
        else if (c < 0x20 || c == 0x7F) out += fmt::format("\\x{:02x}", c);
        else out += static_cast<char>(c);
    }
    out += '"';
    if (n < s.size()) out += fmt::format("... ({} bytes)", s.size());
    return out;
}

std::string scalar_text(const Value& v) {
    switch (v.type()) {
        case ValueType::UInt8: return fmt::format("{}", v.get<uint8_t>());
        case ValueType::Int8: return fmt::format("{}", v.get<int8_t>());
        case ValueType::UInt16: return fmt::format("{}", v.get<uint16_t>());
        case ValueType::Int16: return fmt::format("{}", v.get<int16_t>());
        case ValueType::UInt32: return fmt::format("{}", v.get<uint32_t>());
        case ValueType::Int32: return fmt::format("{}", v.get<int32_t>());
        case ValueType::Float32: return fmt::format("{}", v.get<float>());
        case ValueType::Bool: return v.get<bool>() ? "true" : "false";
        case ValueType::UInt64: return fmt::format("{}", v.get<uint64_t>());
        case ValueType::Int64: return fmt::format("{}", v.get<int64_t>());
        case ValueType::Float64: return fmt::format("{}", v.get<double>());
        default: return "?";
    }
}

// Element i of a numeric array as a Value-like scalar text.
std::string element_text(const Value& v, uint64_t i) {
    switch (v.array_type()) {
        case ValueType::UInt8: return fmt::format("{}", v.at<uint8_t>(i));
        case ValueType::Int8: return fmt::format("{}", v.at<int8_t>(i));
        case ValueType::UInt16: return fmt::format("{}", v.at<uint16_t>(i));
        case ValueType::Int16: return fmt::format("{}", v.at<int16_t>(i));
        case ValueType::UInt32: return fmt::format("{}", v.at<uint32_t>(i));
        case ValueType::Int32: return fmt::format("{}", v.at<int32_t>(i));
        case ValueType::Float32: return fmt::format("{}", v.at<float>(i));
        case ValueType::Bool: return v.at<bool>(i) ? "true" : "false";
        case ValueType::UInt64: return fmt::format("{}", v.at<uint64_t>(i));
        case ValueType::Int64: return fmt::format("{}", v.at<int64_t>(i));
        case ValueType::Float64: return fmt::format("{}", v.at<double>(i));
        default: return "?";
    }
}

std::string value_text(const Value& v, bool full) {
    if (v.type() == ValueType::String) return quote(v.get<std::string_view>(), full);
    if (!v.is_array()) return scalar_text(v);
    const uint64_t n = full ? v.size() : std::min(v.size(), kShowItems);
    std::string out = "[";
    for (uint64_t i = 0; i < n; ++i) {
        if (i) out += ", ";
        if (v.array_type() == ValueType::String) out += quote(v.string_at(i), full);
        else if (v.array_type() == ValueType::Array) out += value_text(v.array_at(i), full);
        else out += element_text(v, i);
    }
    if (n < v.size()) out += fmt::format(", ... ({} items)", v.size());
    return out + "]";
}

// JSON for a float32: the shortest decimal that reads back as the same float.
nlohmann::json float_json(float f) {
    if (!std::isfinite(f)) return nullptr;
    return std::stod(fmt::format("{}", f));
}

nlohmann::json element_json(const Value& v, uint64_t i) {
    switch (v.array_type()) {
        case ValueType::UInt8: return v.at<uint8_t>(i);
        case ValueType::Int8: return v.at<int8_t>(i);
        case ValueType::UInt16: return v.at<uint16_t>(i);
        case ValueType::Int16: return v.at<int16_t>(i);
        case ValueType::UInt32: return v.at<uint32_t>(i);
        case ValueType::Int32: return v.at<int32_t>(i);
        case ValueType::Float32: return float_json(v.at<float>(i));
        case ValueType::Bool: return v.at<bool>(i);
        case ValueType::UInt64: return v.at<uint64_t>(i);
        case ValueType::Int64: return v.at<int64_t>(i);
        case ValueType::Float64: return std::isfinite(v.at<double>(i)) ? nlohmann::json(v.at<double>(i)) : nullptr;
        default: return nullptr;
    }
}

nlohmann::json value_json(const Value& v) {
    switch (v.type()) {
        case ValueType::UInt8: return v.get<uint8_t>();
        case ValueType::Int8: return v.get<int8_t>();
        case ValueType::UInt16: return v.get<uint16_t>();
        case ValueType::Int16: return v.get<int16_t>();
        case ValueType::UInt32: return v.get<uint32_t>();
        case ValueType::Int32: return v.get<int32_t>();
        case ValueType::Float32: return float_json(v.get<float>());
        case ValueType::Bool: return v.get<bool>();
        case ValueType::UInt64: return v.get<uint64_t>();
        case ValueType::Int64: return v.get<int64_t>();
        case ValueType::Float64: return std::isfinite(v.get<double>()) ? nlohmann::json(v.get<double>()) : nullptr;
        case ValueType::String: return std::string(v.get<std::string_view>());
        case ValueType::Array: {
            nlohmann::json a = nlohmann::json::array();
            for (uint64_t i = 0; i < v.size(); ++i) {
                if (v.array_type() == ValueType::String) a.push_back(std::string(v.string_at(i)));
                else if (v.array_type() == ValueType::Array) a.push_back(value_json(v.array_at(i)));
                else a.push_back(element_json(v, i));
            }
            return a;
        }
    }
    return nullptr;
}

std::string human_bytes(uint64_t n) {
    if (n >= (1ull << 30)) return fmt::format("{:.2f} GiB", n / 1073741824.0);
    if (n >= (1ull << 20)) return fmt::format("{:.1f} MiB", n / 1048576.0);
    if (n >= (1ull << 10)) return fmt::format("{:.1f} KiB", n / 1024.0);
    return fmt::format("{} B", n);
}

// ---- LoRA adapters -----------------------------------------------------------

// One matrix an adapter changes, as read from its pair (or as the library bound it).
struct Target {
    std::string tensor;
    int64_t rank = 0;
    int64_t n_in = 0, n_out = 0;  // the base matrix's shape in ggml order (token_embd: n_embd x n_vocab)
    std::string type_a, type_b;
};

// What an adapter file holds. Without a base model only its own structure can
// be checked: `problems` lists what no base model could make right.
struct AdapterSummary {
    std::string kind, arch, name, task_name, prompt_prefix;
    std::optional<float> alpha;
    int64_t rank_min = 0, rank_max = 0;
    std::vector<Target> targets;
    std::vector<std::string> skipped;   // 1-D *_norm.weight tensors, not applied (as llama.cpp)
    std::vector<std::string> problems;  // without a base model: what makes it unusable
    uint64_t n_params = 0, bytes = 0;
    std::string base;                   // -m: the base model it was checked against
};

bool is_adapter(const ember::gguf::File& f) {
    const Value* v = f.find("general.type");
    return v != nullptr && v->type() == ValueType::String && v->get<std::string_view>() == "adapter";
}

std::string str_or(const ember::gguf::File& f, std::string_view key, std::vector<std::string>& problems) {
    const Value* v = f.find(key);
    if (v == nullptr) return {};
    if (v->type() != ValueType::String) {
        problems.push_back(fmt::format("{} has type {}; it must be a string", key, v->type_name()));
        return {};
    }
    return std::string(v->get<std::string_view>());
}

std::string shape_text(const std::vector<int64_t>& shape) { return fmt::format("[{}]", fmt::join(shape, ", ")); }

// The first element of t (F32, F16, BF16 or Q8_0) that is not a finite number, or -1.
int64_t first_non_finite(const ember::gguf::TensorInfo& t) {
    const int64_t row = t.shape[0];
    if (row <= 0) return -1;
    const auto row_bytes = ember::row_bytes(t.type, static_cast<uint64_t>(row));
    if (!row_bytes) return -1;
    std::vector<float> v(static_cast<size_t>(row));
    std::vector<uint64_t> raw((*row_bytes + 7) / 8);  // an aligned copy: a file may place the data anywhere
    const int64_t rows = static_cast<int64_t>(t.n_elements) / row;
    for (int64_t r = 0; r < rows; ++r) {
        std::memcpy(raw.data(), t.data + static_cast<uint64_t>(r) * *row_bytes, *row_bytes);
        ember::dequantize_row(t.type, raw.data(), v.data(), row);
        for (int64_t i = 0; i < row; ++i)
            if (!std::isfinite(v[static_cast<size_t>(i)])) return r * row + i;
    }
    return -1;
}

// The adapter as the file describes it (no base model).
AdapterSummary summarize(const ember::gguf::File& f) {
    AdapterSummary a;
    auto& problems = a.problems;
    a.kind = str_or(f, "adapter.type", problems);
    if (a.kind != "lora")
        problems.push_back(a.kind.empty()
                               ? "adapter.type is missing; ember applies LoRA adapters (adapter.type = \"lora\")"
                               : fmt::format("adapter.type is \"{}\"; ember applies LoRA adapters only", a.kind));
    if (f.has("adapter.alora.invocation_tokens"))
        problems.push_back("it is an activated LoRA (adapter.alora.invocation_tokens), which ember does not apply");
    a.arch = str_or(f, "general.architecture", problems);
    if (a.arch.empty()) problems.push_back("general.architecture is missing: no base model can take it");
    a.name = str_or(f, "general.name", problems);
    a.task_name = str_or(f, "adapter.lora.task_name", problems);
    a.prompt_prefix = str_or(f, "adapter.lora.prompt_prefix", problems);
    if (const Value* v = f.find("adapter.lora.alpha")) {
        if (v->type() != ValueType::Float32)
            problems.push_back(fmt::format("adapter.lora.alpha has type {}; it must be a float32", v->type_name()));
        else if (!std::isfinite(v->get<float>()))
            problems.push_back(fmt::format("adapter.lora.alpha is {}", v->get<float>()));
        else
            a.alpha = v->get<float>();
    }
    struct Pair {
        const ember::gguf::TensorInfo* a = nullptr;
        const ember::gguf::TensorInfo* b = nullptr;
    };
    std::map<std::string, Pair> pairs;
    std::vector<std::string> order;
    for (const auto& t : f.tensors()) {
        const std::string_view n = t.name;
        const bool is_a = n.ends_with(".lora_a"), is_b = n.ends_with(".lora_b");
        if (!is_a && !is_b && n.ends_with("_norm.weight") && t.shape.size() == 1) {
            a.skipped.push_back(t.name);  // a fine-tuned norm vector: not applied (as llama.cpp)
            continue;
        }
        if (!is_a && !is_b) {
            problems.push_back(fmt::format("tensor '{}' is not half of a LoRA pair (.lora_a / .lora_b)", t.name));
            continue;
        }
        const std::string base(n.substr(0, n.size() - 7));
        auto [it, inserted] = pairs.try_emplace(base);
        if (inserted) order.push_back(base);
        (is_a ? it->second.a : it->second.b) = &t;
    }
    if (f.tensors().empty()) problems.push_back("it has no tensors (no .lora_a / .lora_b pairs)");
    else if (pairs.empty() && !a.skipped.empty())
        problems.push_back("it has no .lora_a / .lora_b pairs (only norm vectors, which are not applied)");
    for (const std::string& base : order) {
        const Pair& p = pairs[base];
        if (p.a == nullptr || p.b == nullptr) {
            problems.push_back(fmt::format("'{}' has no {}: a LoRA pair needs both .lora_a and .lora_b", base,
                                           p.a == nullptr ? "lora_a" : "lora_b"));
            continue;
        }
        bool ok = true;
        for (const auto* t : {p.a, p.b}) {
            if (t->shape.size() != 2) {
                problems.push_back(fmt::format("'{}' has shape {}; a LoRA tensor is a 2-D matrix", t->name,
                                               shape_text(t->shape)));
                ok = false;
            } else if (t->type != ember::TensorType::F32 && t->type != ember::TensorType::F16 &&
                       t->type != ember::TensorType::BF16 && t->type != ember::TensorType::Q8_0) {
                problems.push_back(fmt::format("'{}' has type {}; LoRA tensors may be F32, F16, BF16 or Q8_0",
                                               t->name, ember::type_info(t->type).name));
                ok = false;
            }
        }
        if (!ok) continue;
        for (const auto* t : {p.a, p.b})  // a value that is not finite would poison every logit
            if (const int64_t at = first_non_finite(*t); at >= 0) {
                problems.push_back(fmt::format("'{}' holds a value that is not a finite number (element {} of {})",
                                               t->name, at, t->n_elements));
                ok = false;
            }
        if (!ok) continue;
        // ggml order: A [n_in, r], B [r, n_out]; the token embedding's A [r, n_vocab], B [r, n_embd]
        const bool embd = base == "token_embd.weight";
        const int64_t r = p.b->shape[0];
        const int64_t r_a = embd ? p.a->shape[0] : p.a->shape[1];
        if (r_a != r) {
            problems.push_back(fmt::format("the pair of '{}' has two ranks: lora_a {} and lora_b {}; expected lora_a "
                                           "{} and lora_b [r, {}] for some rank r (the same in both)",
                                           base, shape_text(p.a->shape), shape_text(p.b->shape),
                                           embd ? "[r, n_vocab]" : "[n_in, r]", embd ? "n_embd" : "n_out"));
            continue;
        }
        Target t{base, r, embd ? p.b->shape[1] : p.a->shape[0], embd ? p.a->shape[1] : p.b->shape[1],
                 ember::type_info(p.a->type).name, ember::type_info(p.b->type).name};
        a.targets.push_back(std::move(t));
        a.n_params += p.a->n_elements + p.b->n_elements;
        a.bytes += p.a->n_bytes + p.b->n_bytes;
        a.rank_min = a.rank_min == 0 ? r : std::min(a.rank_min, r);
        a.rank_max = std::max(a.rank_max, r);
    }
    return a;
}

// The adapter as the library loaded it for `base` (every check passed).
AdapterSummary summarize(const ember::gguf::File& f, const ember::Adapter& adapter, const std::string& base) {
    AdapterSummary a = summarize(f);  // the kind
    const ember::AdapterInfo& i = adapter.info();
    a.problems.clear();
    a.arch = i.arch;
    a.name = i.name;
    a.task_name = i.task_name;
    a.prompt_prefix = i.prompt_prefix;
    a.alpha = i.alpha;
    a.rank_min = i.rank_min;
    a.rank_max = i.rank_max;
    a.n_params = i.n_params;
    a.bytes = i.bytes;
    a.skipped = i.skipped;
    a.targets.clear();
    for (const ember::AdapterTarget& t : i.targets)
        a.targets.push_back({t.tensor, t.rank, t.n_in, t.n_out, ember::type_info(t.type_a).name,
                             ember::type_info(t.type_b).name});
    a.base = base;
    return a;
}

void print_adapter_text(const AdapterSummary& a) {
    using ember_tools::print_out;
    print_out("\nadapter: {} for architecture {}{}\n", a.kind.empty() ? "(adapter.type missing)" : a.kind,
              a.arch.empty() ? "(none)" : quote(a.arch, true), a.name.empty() ? "" : ", name " + quote(a.name, false));
    if (!a.base.empty()) print_out("  checked against '{}': it fits (Model::load_adapter)\n", a.base);
    const std::string alpha = a.alpha ? fmt::format("{}", *a.alpha) : "(none)";
    print_out("  alpha {}: a pair of rank r adds {} times B A to its matrix\n", alpha,
              a.alpha && *a.alpha != 0 ? "scale * alpha / r" : "scale");
    if (!a.targets.empty())
        print_out("  rank {}\n", a.rank_min == a.rank_max ? fmt::format("{}", a.rank_max)
                                                          : fmt::format("{} to {}", a.rank_min, a.rank_max));
    if (!a.task_name.empty()) print_out("  task name {}\n", quote(a.task_name, false));
    if (!a.prompt_prefix.empty()) print_out("  prompt prefix {}\n", quote(a.prompt_prefix, false));
    print_out("  targets: {} matri{}, {} parameters ({:.2f} M), {} bytes ({})\n", a.targets.size(),
              a.targets.size() == 1 ? "x" : "ces", a.n_params, a.n_params / 1e6, a.bytes, human_bytes(a.bytes));
    if (!a.targets.empty()) {
        size_t w = 6;
        for (const auto& t : a.targets) w = std::max(w, t.tensor.size());
        print_out("  {:>5}  {:<{}}  {:>5}  {:<22}  {:<6}  {}\n", "#", "tensor", w, "rank", "shape", "lora_a",
                  "lora_b");
        for (size_t i = 0; i < a.targets.size(); ++i) {
            const Target& t = a.targets[i];
            print_out("  {:>5}  {:<{}}  {:>5}  {:<22}  {:<6}  {}\n", i, t.tensor, w, t.rank,
                      fmt::format("{} x {}", t.n_in, t.n_out), t.type_a, t.type_b);
        }
    }
    if (!a.skipped.empty())
        print_out("  not applied: {} norm vector{} (as llama.cpp): {}\n", a.skipped.size(),
                  a.skipped.size() == 1 ? "" : "s", fmt::join(a.skipped, ", "));
    for (const auto& p : a.problems) print_out("  problem: {}\n", p);
    if (a.base.empty() && a.problems.empty())
        print_out("  (its architecture, targets and shapes are checked against a base model with -m BASE)\n");
}

nlohmann::ordered_json adapter_json(const AdapterSummary& a) {
    nlohmann::ordered_json j;
    j["type"] = a.kind;
    j["arch"] = a.arch;
    j["name"] = a.name;
    if (a.alpha) j["alpha"] = float_json(*a.alpha);
    else j["alpha"] = nullptr;
    j["rank_min"] = a.rank_min;
    j["rank_max"] = a.rank_max;
    j["task_name"] = a.task_name;
    j["prompt_prefix"] = a.prompt_prefix;
    j["n_params"] = a.n_params;
    j["bytes"] = a.bytes;
    nlohmann::ordered_json targets = nlohmann::ordered_json::array();
    for (const Target& t : a.targets) {
        nlohmann::ordered_json o;
        o["tensor"] = t.tensor;
        o["rank"] = t.rank;
        o["shape"] = {t.n_in, t.n_out};
        o["type_a"] = t.type_a;
        o["type_b"] = t.type_b;
        targets.push_back(std::move(o));
    }
    j["targets"] = std::move(targets);
    j["skipped"] = a.skipped;
    j["problems"] = a.problems;
    j["checked_against"] = a.base.empty() ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(a.base);
    return j;
}

void print_text(const ember::gguf::File& f, bool full, double parse_ms, const AdapterSummary* adapter) {
    using ember_tools::print_out;
    print_out("GGUF v{}  {}\n", f.version(), f.path());
    print_out("  {} bytes ({}), alignment {}, data section at byte {}, parsed in {:.2f} ms\n\n", f.file_size(),
              human_bytes(f.file_size()), f.alignment(), f.data_offset(), parse_ms);
    size_t key_w = 0;
    for (const auto& kv : f.metadata()) key_w = std::max(key_w, kv.key.size());
    print_out("metadata: {} keys\n", f.metadata().size());
    for (const auto& kv : f.metadata())
        print_out("  {:<{}}  {:<14} {}\n", kv.key, key_w, kv.value.type_name(), value_text(kv.value, full));

    const auto& ts = f.tensors();
    print_out("\ntensors: {}\n", ts.size());
    if (ts.empty()) {
        if (adapter != nullptr) print_adapter_text(*adapter);
        return;
    }
    size_t name_w = 4;
    for (const auto& t : ts) name_w = std::max(name_w, t.name.size());
    print_out("  {:>5}  {:<{}}  {:<5}  {:<22}  {:>12}  {:>12}\n", "#", "name", name_w, "type", "shape", "offset", "bytes");
    uint64_t total_bytes = 0, total_elems = 0;
    std::map<std::string, std::pair<int, uint64_t>> by_type;  // count, bytes
    for (size_t i = 0; i < ts.size(); ++i) {
        const auto& t = ts[i];
        const char* tn = ember::type_info(t.type).name;
        print_out("  {:>5}  {:<{}}  {:<5}  {:<22}  {:>12}  {:>12}\n", i, t.name, name_w, tn,
                  fmt::format("{}", fmt::join(t.shape, " x ")), t.file_offset, t.n_bytes);
        total_bytes += t.n_bytes;
        total_elems += t.n_elements;
        by_type[tn].first++;
        by_type[tn].second += t.n_bytes;
    }
    print_out("\ntotals: {} tensors, {} elements ({:.1f} M), {} bytes of tensor data ({})\n", ts.size(), total_elems,
              total_elems / 1e6, total_bytes, human_bytes(total_bytes));
    for (const auto& [name, cb] : by_type)
        print_out("  {:<5} {:>5} tensors  {:>12} bytes\n", name, cb.first, cb.second);
    if (adapter != nullptr) print_adapter_text(*adapter);
}

void print_json(const ember::gguf::File& f, const AdapterSummary* adapter) {
    nlohmann::ordered_json j;
    j["file"] = f.path();
    j["version"] = f.version();
    j["file_size"] = f.file_size();
    j["alignment"] = f.alignment();
    j["data_offset"] = f.data_offset();
    nlohmann::ordered_json meta = nlohmann::ordered_json::object(), types = nlohmann::ordered_json::object();
    for (const auto& kv : f.metadata()) {
        meta[kv.key] = value_json(kv.value);
        types[kv.key] = kv.value.type_name();
    }
    j["metadata"] = std::move(meta);
    j["metadata_types"] = std::move(types);
    nlohmann::ordered_json tensors = nlohmann::ordered_json::array();
    for (const auto& t : f.tensors()) {
        nlohmann::ordered_json o;
        o["name"] = t.name;
        o["type"] = ember::type_info(t.type).name;
        o["shape"] = t.shape;
        o["offset"] = t.file_offset;
        o["bytes"] = t.n_bytes;
        tensors.push_back(std::move(o));
    }
    j["tensors"] = std::move(tensors);
    if (adapter != nullptr) j["adapter"] = adapter_json(*adapter);
    const std::string out = j.dump(1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
    ember_tools::write_out(out);
    ember_tools::write_out("\n");
}

// --memory: the estimate for the flags after FILE; the exit status.
int print_memory(const std::string& path, const std::vector<std::string>& flags, bool json) {
    std::vector<char*> argv{const_cast<char*>("ember-inspect")};
    for (const auto& f : flags) argv.push_back(const_cast<char*>(f.c_str()));
    ember_tools::ArgReader args(static_cast<int>(argv.size()), argv.data());
    ember::ModelParams mp;
    ember::LoadOptions lo;
    ember::SessionParams sp;
    ember::SessionOptions so;
    while (!args.done()) {
        const std::string f = args.next();
        auto int_value = [&](int64_t lo_, int64_t hi) { return ember_tools::parse_int(f, args.value(f), lo_, hi); };
        if (f == "-c" || f == "--ctx-size") sp.n_ctx = static_cast<uint32_t>(int_value(0, UINT32_MAX));
        else if (f == "-b" || f == "--batch-size") sp.n_batch = static_cast<uint32_t>(int_value(1, UINT32_MAX));
        else if (f == "-t" || f == "--threads") sp.n_threads = static_cast<int32_t>(int_value(0, INT32_MAX));
        else if (f == "-ngl" || f == "--n-gpu-layers") mp.n_gpu_layers = static_cast<int32_t>(int_value(0, INT32_MAX));
        else if (ember_tools::parse_load_flag(f, args, lo)) continue;
        else if (ember_tools::parse_kv_flag(f, args, sp, so)) continue;
        else if (ember_tools::parse_memory_flag(f, args, so.memory_budget)) continue;
        else throw ember_tools::UsageError(fmt::format("--memory: unknown argument '{}'", f));
    }
    const ember::MemoryEstimate e = ember::estimate_memory(path, mp, sp, so, lo);
    const bool fits = so.memory_budget == 0 || e.host_total() <= so.memory_budget;
    if (json) {
        nlohmann::ordered_json j;
        j["weights_file"] = e.weights_file;
        j["weights_resident"] = e.weights_resident;
        j["weights_repacked"] = e.weights_repacked;
        j["weights_gpu"] = e.weights_gpu;
        j["tokenizer"] = e.tokenizer;
        j["runtime"] = e.runtime;
        j["kv_cache"] = e.kv_cache;
        j["kv_cache_gpu"] = e.kv_cache_gpu;
        j["kv_full_layers"] = e.kv_full_layers;
        j["kv_swa_layers"] = e.kv_swa_layers;
        j["activations"] = e.activations;
        j["activations_gpu"] = e.activations_gpu;
        j["n_ctx"] = e.n_ctx;
        j["n_threads"] = e.n_threads;
        j["model_host"] = e.model_host();
        j["session_host"] = e.session_host();
        j["host_total"] = e.host_total();
        j["gpu_total"] = e.gpu_total();
        if (so.memory_budget > 0) {
            j["memory_budget"] = so.memory_budget;
            j["fits"] = fits;
        }
        ember_tools::write_out(j.dump(1) + "\n");
    } else {
        ember_tools::write_out(e.describe());
        if (so.memory_budget > 0)
            ember_tools::print_out("budget {:.1f} MiB: {}\n", static_cast<double>(so.memory_budget) / 1048576.0,
                                   fits ? "fits" : "does not fit");
    }
    if (fits) return 0;
    ember_tools::flush_out();
    const double need = static_cast<double>(e.host_total()) / 1048576.0,
                 budget = static_cast<double>(so.memory_budget) / 1048576.0;
    if (e.model_host() > so.memory_budget)
        fmt::print(stderr, "ember-inspect: error: {} needs {:.1f} MiB, more than the budget of {:.1f} MiB; the "
                           "model alone needs {:.1f} MiB: raise the budget or use a smaller model\n",
                   path, need, budget, static_cast<double>(e.model_host()) / 1048576.0);
    else
        fmt::print(stderr, "ember-inspect: error: {} needs {:.1f} MiB, more than the budget of {:.1f} MiB; use a "
                           "smaller -c or a quantized KV cache (--kv-type q8_0 or q4_0){}\n",
                   path, need, budget, mp.n_gpu_layers > 0 ? ", or more GPU layers" : "");
    return 1;
}

// Returns the exit status; stdout's failures are thrown (see common_stdout.hpp).
int inspect(int argc, char** argv) {
    std::string path, base;
    bool json = false, full = false, memory = false;
    std::vector<std::string> memory_flags;  // the session flags of --memory, parsed there
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (memory && a != "--json" && !a.empty() && a[0] == '-') {
            memory_flags.push_back(a);
            // each of these flags takes a value ("--flag=value" is one argument)
            static const char* const kValued[] = {"-c", "--ctx-size", "-b", "--batch-size", "-t", "--threads",
                                                  "-ngl", "--n-gpu-layers", "--kv-type", "-ctk", "--cache-type-k",
                                                  "-ctv", "--cache-type-v", "--mem-budget", "-lm", "--load-mode"};
            for (const char* v : kValued)
                if (a == v && i + 1 < argc) memory_flags.push_back(argv[++i]);
            continue;
        }
        if (a == "--memory") memory = true;
        else if (a == "--json") json = true;
        else if (a == "--full") full = true;
        else if (a == "-m" || a == "--model" || a.starts_with("--model=")) {
            if (a.starts_with("--model=")) base = a.substr(8);
            else if (i + 1 < argc) base = argv[++i];
            if (base.empty()) {
                fmt::print(stderr, "ember-inspect: {} needs the base model's path\n{}", a, kUsage);
                return 2;
            }
        }
        else if (a == "-h" || a == "--help") {
            ember_tools::write_out(kUsage);
            return 0;
        } else if (a == "--version") {
            ember_tools::write_out(ember::build_info());
            return 0;
        } else if (!a.empty() && a[0] == '-') {
            fmt::print(stderr, "ember-inspect: unknown option '{}'\n{}", a, kUsage);
            return 2;
        } else if (path.empty()) path = a;
        else {
            fmt::print(stderr, "ember-inspect: more than one FILE given ('{}' and '{}')\n", path, a);
            return 2;
        }
    }
    if (path.empty()) {
        std::fputs(kUsage, stderr);
        return 2;
    }
    if (memory) {
        if (!base.empty() || full) {
            fmt::print(stderr, "ember-inspect: --memory does not combine with -m or --full\n{}", kUsage);
            return 2;
        }
        try {
            return print_memory(path, memory_flags, json);
        } catch (const ember_tools::UsageError& e) {
            fmt::print(stderr, "ember-inspect: {}\n{}", e.what(), kUsage);
            return 2;
        }
    }
    const auto t0 = std::chrono::steady_clock::now();
    const auto f = ember::gguf::File::open(path);
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    std::optional<AdapterSummary> adapter;
    if (!base.empty()) {
        // the library's own checks, before anything is printed: an adapter that does not fit is an error.
        // The model is loaded only to be checked against: no repacking of its weights (unless asked for)
        ::setenv("EMBER_REPACK", "0", /*overwrite=*/0);
        const auto model = ember::Model::load(base);
        const auto loaded = model->load_adapter(path);
        adapter = summarize(f, *loaded, base);
    } else if (is_adapter(f)) {
        adapter = summarize(f);
    }
    const AdapterSummary* a = adapter ? &*adapter : nullptr;
    if (json) print_json(f, a);
    else print_text(f, full, ms, a);
    if (a != nullptr && !a->problems.empty()) {
        ember_tools::flush_out();
        fmt::print(stderr, "ember-inspect: error: LoRA adapter '{}' cannot be applied to any model: {}{}\n", path,
                   a->problems.front(),
                   a->problems.size() > 1
                       ? fmt::format(" (and {} more problems, in the listing)", a->problems.size() - 1)
                       : "");
        return 1;
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    ember_tools::init_stdout();  // a closed stdout is a normal end, not death by SIGPIPE
    try {
        const int status = inspect(argc, argv);
        ember_tools::flush_out();
        return status;
    } catch (const ember_tools::StdoutClosed&) {
        return 0;  // the reader of stdout has gone (`| head`): nothing more to do, nothing to say
    } catch (const std::exception& e) {  // ember::Error, StdoutError, ...
        fmt::print(stderr, "ember-inspect: error: {}\n", e.what());
        return 1;
    }
}
