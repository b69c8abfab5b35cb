// ember-inspect: print what a GGUF file holds - its version, every metadata
// key with type and value, and a table of tensors - as text or as JSON.
//
//   ember-inspect model.gguf            human-readable, long values summarised
//   ember-inspect model.gguf --json     one JSON object, complete values
//
// Exit status: 0 on success (also when the reader of stdout goes away, as with
// `| head`); 1 when the file cannot be read or stdout cannot be written; 2 for
// a wrong command line.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "common_stdout.hpp"
#include "ember/ember.hpp"

namespace {

using ember::gguf::Value;
using ember::gguf::ValueType;

constexpr uint64_t kShowItems = 8;     // array elements shown in text mode
constexpr size_t kShowChars = 96;      // string bytes shown in text mode

constexpr const char* kUsage =
    "usage: ember-inspect FILE [--json] [--full]\n"
    "       ember-inspect --version\n"
    "Prints a GGUF file's version, metadata and tensor table.\n"
    "  --json   one JSON object {version, metadata, metadata_types, tensors, ...}\n"
    "  --full   text mode: print long strings and arrays whole\n";

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

void print_text(const ember::gguf::File& f, bool full, double parse_ms) {
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
    if (ts.empty()) return;
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
}

void print_json(const ember::gguf::File& f) {
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
    const std::string out = j.dump(1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
    ember_tools::write_out(out);
    ember_tools::write_out("\n");
}

// Returns the exit status; stdout's failures are thrown (see common_stdout.hpp).
int inspect(int argc, char** argv) {
    std::string path;
    bool json = false, full = false;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--json") json = true;
        else if (a == "--full") full = true;
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
    const auto t0 = std::chrono::steady_clock::now();
    const auto f = ember::gguf::File::open(path);
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (json) print_json(f);
    else print_text(f, full, ms);
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
