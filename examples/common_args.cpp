// The flags shared by ember-run and ember-chat (see common_args.hpp).
#include "common_args.hpp"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <random>
#include <sstream>
#include <system_error>
#include <utility>

#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

namespace ember_tools {

std::string ArgReader::next() {
    if (pending_value_) throw UsageError(fmt::format("'{}' takes no value", argv_[i_ - 1]));
    std::string a = argv_[i_++];
    const size_t eq = a.find('=');
    if (a.size() > 2 && a.starts_with("--") && eq != std::string::npos) {
        value_ = a.substr(eq + 1);
        pending_value_ = true;
        a.resize(eq);
    }
    return a;
}

std::string ArgReader::value(std::string_view flag) {
    if (pending_value_) {
        pending_value_ = false;
        return std::move(value_);
    }
    if (i_ >= argc_) throw UsageError(fmt::format("{} needs a value", flag));
    return argv_[i_++];
}

int64_t parse_int(std::string_view flag, std::string_view text, int64_t lo, int64_t hi) {
    int64_t v = 0;
    const char* end = text.data() + text.size();
    const auto [p, ec] = std::from_chars(text.data(), end, v);
    if (text.empty() || ec == std::errc::invalid_argument || p != end)
        throw UsageError(fmt::format("{} needs an integer, got '{}'", flag, text));
    if (ec == std::errc::result_out_of_range || v < lo || v > hi)
        throw UsageError(fmt::format("{} {} is out of range [{}, {}]", flag, text, lo, hi));
    return v;
}

float parse_float(std::string_view flag, std::string_view text) {
    float v = 0;
    const char* end = text.data() + text.size();
    const auto [p, ec] = std::from_chars(text.data(), end, v);
    if (text.empty() || ec == std::errc::invalid_argument || p != end)
        throw UsageError(fmt::format("{} needs a number, got '{}'", flag, text));
    if (ec == std::errc::result_out_of_range) throw UsageError(fmt::format("{} {} is out of range", flag, text));
    return v;
}

namespace {

constexpr int64_t kI32Max = std::numeric_limits<int32_t>::max();
constexpr int64_t kI32Min = std::numeric_limits<int32_t>::min();
constexpr int64_t kU32Max = std::numeric_limits<uint32_t>::max();

uint64_t parse_seed(std::string_view flag, std::string_view text, bool& random) {
    random = text == "-1";
    if (random) return 0;
    uint64_t v = 0;
    const char* end = text.data() + text.size();
    const auto [p, ec] = std::from_chars(text.data(), end, v);
    if (text.empty() || ec != std::errc() || p != end)
        throw UsageError(fmt::format("{} needs an integer in [0, 2^64) or -1 (random), got '{}'", flag, text));
    return v;
}

}  // namespace

ember::Precision parse_precision(std::string_view flag, std::string_view v) {
    if (v == "fast") return ember::Precision::Fast;
    if (v == "exact") return ember::Precision::Exact;
    throw UsageError(fmt::format("{} must be fast or exact, got '{}'", flag, v));
}

bool parse_load_flag(const std::string& f, ArgReader& args, ember::LoadOptions& load) {
    if (f == "--no-mmap") load.use_mmap = false;
    else if (f == "--mmap") load.use_mmap = true;
    else if (f == "-lm" || f == "--load-mode") {
        const std::string v = args.value(f);
        if (v == "mmap") load.use_mmap = true;
        else if (v == "none") load.use_mmap = false;
        else throw UsageError(fmt::format("{} must be mmap or none, got '{}'", f, v));
    } else
        return false;
    return true;
}

std::string load_help(int column) {
    const int w = std::max(column - 2, 1);
    const std::string pad(static_cast<size_t>(column), ' ');
    return fmt::format("  {:<{}}read the model into memory at load instead of mapping it: the file\n"
                       "{}may then be changed or deleted while it runs, at the cost of its size\n"
                       "{}in RAM (default: mapped; replace a mapped model only by renaming a\n"
                       "{}new file over it, never by rewriting it in place)\n"
                       "  {:<{}}mmap (the default) or none (as --no-mmap)\n",
                       "--no-mmap", w, pad, pad, pad, "-lm, --load-mode MODE", w);
}

bool parse_memory_flag(const std::string& f, ArgReader& args, uint64_t& budget) {
    if (f != "--mem-budget") return false;
    const std::string v = args.value(f);
    try {
        budget = ember::parse_memory_size(v);
    } catch (const ember::Error& e) {
        throw UsageError(fmt::format("{}: {}", f, e.what()));
    }
    return true;
}

std::string memory_help(int column) {
    const int w = std::max(column - 2, 1);
    const std::string pad(static_cast<size_t>(column), ' ');
    return fmt::format("  {:<{}}memory the model and its session may use, e.g. 512M or 1.5G\n"
                       "{}(K/M/G are powers of 1024): refused before allocating, with the\n"
                       "{}estimate and what to change, when they would need more (default:\n"
                       "{}none; a session is still refused when its KV cache cannot fit in\n"
                       "{}the memory this process can get)\n",
                       "--mem-budget SIZE", w, pad, pad, pad, pad);
}

bool parse_kv_flag(const std::string& f, ArgReader& args, ember::SessionParams& session,
                   ember::SessionOptions& options) {
    const bool both = f == "--kv-type", k = f == "-ctk" || f == "--cache-type-k",
               v = f == "-ctv" || f == "--cache-type-v";
    if (!both && !k && !v) return false;
    const std::string value = args.value(f);
    ember::KvCacheType t;
    try {
        t = ember::parse_kv_cache_type(value);
    } catch (const ember::Error&) {
        throw UsageError(fmt::format("{} must be f16, f32, q8_0 or q4_0, got '{}'", f, value));
    }
    if (both) {
        session.kv_type = t;
        options.kv_type_k.reset();
        options.kv_type_v.reset();
    } else {
        (k ? options.kv_type_k : options.kv_type_v) = t;
    }
    return true;
}

std::string kv_help(int column) {
    const int w = std::max(column - 2, 1);
    const std::string pad(static_cast<size_t>(column), ' ');
    return fmt::format("  {:<{}}KV cache type of keys and values: f16 (default), f32, q8_0 (53%\n"
                       "{}of f16's memory) or q4_0 (28%; docs/MEMORY.md has the accuracy cost)\n"
                       "  {:<{}}the keys' type alone (llama.cpp's --cache-type-k)\n"
                       "  {:<{}}the values' type alone (llama.cpp's --cache-type-v)\n",
                       "--kv-type TYPE", w, pad, "-ctk, --cache-type-k TYPE", w, "-ctv, --cache-type-v TYPE", w);
}

namespace {

// The items of a comma-separated list, as llama.cpp's parse_csv_row reads them:
// a field that starts with '"' runs to the closing '"' and may hold commas
// ("" inside it is one '"'). An unclosed quote is a UsageError.
std::vector<std::string> csv_items(std::string_view flag, const std::string& value) {
    std::vector<std::string> items;
    std::string item;
    bool quoted = false;
    for (size_t i = 0; i < value.size(); ++i) {
        const char c = value[i];
        if (c == '"' && !quoted && item.empty()) quoted = true;
        else if (c == '"' && quoted && i + 1 < value.size() && value[i + 1] == '"') {
            item += '"';
            ++i;
        } else if (c == '"' && quoted) quoted = false;
        else if (c == ',' && !quoted) items.push_back(std::exchange(item, {}));
        else item += c;
    }
    if (quoted) throw UsageError(fmt::format("{} '{}': a quote is not closed", flag, value));
    items.push_back(std::move(item));
    return items;
}

// The adapter file of a --lora item: it must be a file this process can read.
void check_adapter_file(std::string_view flag, const std::string& path) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0)
        throw UsageError(fmt::format("{}: cannot open the adapter '{}': {}", flag, path, std::strerror(errno)));
    if (S_ISDIR(st.st_mode))
        throw UsageError(fmt::format("{}: '{}' is a directory; give a LoRA adapter file (.gguf)", flag, path));
    if (::access(path.c_str(), R_OK) != 0)
        throw UsageError(fmt::format("{}: cannot read the adapter '{}': {}", flag, path, std::strerror(errno)));
}

}  // namespace

bool parse_lora_flag(const std::string& f, ArgReader& args, std::vector<LoraSpec>& lora) {
    const bool scaled = f == "--lora-scaled";
    if (f != "--lora" && !scaled) return false;
    const std::string value = args.value(f);
    const char* form = scaled ? "FILE:SCALE[,FILE:SCALE...]" : "FILE[,FILE...]";
    for (const std::string& item : csv_items(f, value)) {
        if (item.empty())
            throw UsageError(value.empty() ? fmt::format("{} needs {}, got an empty value", f, form)
                                           : fmt::format("{} '{}': an empty item; give {}", f, value, form));
        LoraSpec spec{item, 1.0f};
        if (scaled) {
            const size_t colon = item.rfind(':');
            if (colon == std::string::npos)
                throw UsageError(fmt::format("{} '{}': no scale; give FILE:SCALE (or --lora FILE for scale 1)", f,
                                             item));
            spec.path = item.substr(0, colon);
            const std::string text = item.substr(colon + 1);
            if (spec.path.empty()) throw UsageError(fmt::format("{} '{}': no file before the ':'", f, item));
            float v = 0;
            const char* begin = text.data() + (text.size() > 1 && text[0] == '+' && text[1] != '-' ? 1 : 0);  // "+0.5"
            const char* end = text.data() + text.size();
            const auto [p, ec] = std::from_chars(begin, end, v);
            if (text.empty() || ec != std::errc() || p != end || !std::isfinite(v))
                throw UsageError(fmt::format("{} '{}': the scale '{}' is not a finite number (e.g. 0.5, 1, -1)", f,
                                             item, text));
            spec.scale = v;
        }
        check_adapter_file(f, spec.path);
        lora.push_back(std::move(spec));
    }
    return true;
}

std::string lora_help(int column) {
    const int w = std::max(column - 2, 1);
    const std::string pad(static_cast<size_t>(column), ' ');
    return fmt::format("  {:<{}}apply the LoRA adapter FILE (GGUF, as llama.cpp's\n"
                       "{}convert_lora_to_gguf.py writes) at scale 1; a comma-separated list\n"
                       "{}applies several; repeatable, stacked in the order given\n"
                       "  --lora-scaled FILE:SCALE[,FILE:SCALE...]\n"
                       "{}the same with a scale each: a pair adds SCALE * alpha / rank\n"
                       "{}times its product (0 turns it off; negative subtracts it)\n",
                       "--lora FILE[,FILE...]", w, pad, pad, pad, pad);
}

std::vector<ember::AdapterScale> load_adapters(const std::shared_ptr<const ember::Model>& model,
                                               const std::vector<LoraSpec>& lora) {
    std::vector<ember::AdapterScale> out;
    std::map<std::string, std::shared_ptr<const ember::Adapter>> loaded;  // a file named twice is loaded once
    for (const LoraSpec& s : lora) {
        auto& a = loaded[s.path];
        if (!a) a = model->load_adapter(s.path);
        out.push_back({a, s.scale});
    }
    return out;
}

std::string describe_adapter(const ember::AdapterScale& a) {
    const ember::AdapterInfo& i = a.adapter->info();
    const std::string rank = i.rank_min == i.rank_max ? fmt::format("rank {}", i.rank_max)
                                                      : fmt::format("rank {}-{}", i.rank_min, i.rank_max);
    const std::string size = i.bytes >= (1u << 20) ? fmt::format("{:.1f} MiB", i.bytes / 1048576.0)
                                                    : fmt::format("{:.1f} KiB", i.bytes / 1024.0);
    return fmt::format("{} (scale {}: alpha {}, {}; {} matri{}, {})", i.path, a.scale, i.alpha, rank,
                       i.targets.size(), i.targets.size() == 1 ? "x" : "ces", size);
}

namespace {

// The contents of the file a flag names (a grammar, a schema); UsageError naming it when unreadable.
std::string read_text_file(const std::string& flag, const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw UsageError(fmt::format("{} '{}': cannot open it ({})", flag, path, std::strerror(errno)));
    std::ostringstream ss;
    ss << in.rdbuf();
    if (in.bad()) throw UsageError(fmt::format("{} '{}': cannot read it", flag, path));
    return ss.str();
}

}  // namespace

bool parse_common_flag(const std::string& f, ArgReader& args, CommonOptions& opt, bool with_run_flags) {
    if (parse_load_flag(f, args, opt.load)) return true;
    if (parse_lora_flag(f, args, opt.lora)) return true;
    if (parse_memory_flag(f, args, opt.session_options.memory_budget)) return true;
    if (parse_kv_flag(f, args, opt.session, opt.session_options)) return true;
    auto& sp = opt.generate.sampling;
    auto int_value = [&](int64_t lo, int64_t hi) { return parse_int(f, args.value(f), lo, hi); };
    auto i32_value = [&] { return static_cast<int32_t>(int_value(kI32Min, kI32Max)); };
    auto float_value = [&] { return parse_float(f, args.value(f)); };

    if (f == "-m" || f == "--model") opt.model_path = args.value(f);
    else if (f == "-ngl" || f == "--n-gpu-layers") opt.model.n_gpu_layers = i32_value();
    else if (f == "-c" || f == "--ctx-size") opt.session.n_ctx = static_cast<uint32_t>(int_value(0, kU32Max));
    else if (f == "-b" || f == "--batch-size") opt.session.n_batch = static_cast<uint32_t>(int_value(0, kU32Max));
    else if (f == "-t" || f == "--threads") opt.session.n_threads = static_cast<int32_t>(int_value(0, kI32Max));
    else if (f == "--precision") opt.precision = parse_precision(f, args.value(f));
    else if (f == "-n" || f == "--n-predict") opt.generate.max_tokens = static_cast<int32_t>(int_value(-1, kI32Max));
    else if (f == "--temp") sp.temperature = float_value();
    else if (f == "--top-k") sp.top_k = i32_value();
    else if (f == "--top-p") sp.top_p = float_value();
    else if (f == "--min-p") sp.min_p = float_value();
    else if (f == "--repeat-penalty") sp.repeat_penalty = float_value();
    else if (f == "--repeat-last-n") sp.penalty_last_n = static_cast<int32_t>(int_value(-1, kI32Max));
    else if (f == "--presence-penalty") sp.presence_penalty = float_value();
    else if (f == "--frequency-penalty") sp.frequency_penalty = float_value();
    else if (f == "--seed") sp.seed = parse_seed(f, args.value(f), opt.random_seed);
    else if (f == "--stop") opt.generate.stop.push_back(args.value(f));
    else if (with_run_flags && f == "--ignore-eos") opt.generate.ignore_eos = true;
    else if (f == "--grammar" || f == "--grammar-file" || f == "-j" || f == "--json-schema" || f == "-jf" ||
             f == "--json-schema-file") {
        if (!opt.constraint_flag.empty())
            throw UsageError(fmt::format("{} and {}: give one grammar or JSON Schema", opt.constraint_flag, f));
        const bool file = f == "--grammar-file" || f == "-jf" || f == "--json-schema-file";
        std::string text = args.value(f);
        if (file) text = read_text_file(f, text);
        (f.find("grammar") != std::string::npos ? opt.grammar : opt.json_schema) = std::move(text);
        opt.constraint_flag = f;
    } else return false;
    return true;
}

void validate(CommonOptions& opt) {
    if (opt.model_path.empty()) throw UsageError("no model: pass -m FILE.gguf (see --help)");
    for (const auto& s : opt.generate.stop)
        if (s.empty()) throw UsageError("--stop needs a non-empty string");
    if (opt.random_seed) opt.generate.sampling.seed = (uint64_t{std::random_device{}()} << 32) ^ std::random_device{}();
    try {
        ember::Sampler check(1, opt.generate.sampling);  // the library's own limits
    } catch (const ember::Error& e) {
        throw UsageError(e.what());
    }
    // a grammar or schema is checked before the model loads: its errors say where they are
    try {
        if (!opt.grammar.empty()) opt.constraint.grammar = ember::Grammar::parse(opt.grammar);
        else if (!opt.json_schema.empty()) opt.constraint.grammar = ember::Grammar::from_json_schema(opt.json_schema);
        else if (!opt.constraint_flag.empty()) throw UsageError(fmt::format("{}: the grammar or schema is empty", opt.constraint_flag));
    } catch (const ember::Error& e) {
        throw UsageError(fmt::format("{}: {}", opt.constraint_flag, e.what()));
    }
}

std::string common_help(const CommonOptions& d, bool with_run_flags) {
    const auto& s = d.generate.sampling;
    std::string h = fmt::format(
        "model and session:\n"
        "  -m, --model FILE          the GGUF model to run (required)\n"
        "  -c, --ctx-size N          context size in tokens (default: the model's training context,\n"
        "                            at most 4096)\n"
        "  -b, --batch-size N        prompt tokens evaluated per forward pass (default {})\n"
        "  -t, --threads N           threads; 0 = one per core (default {})\n"
        "{}"
        "  --precision fast|exact    quantized products: fast = 8-bit activations (llama.cpp's; an\n"
        "                            8-bit GEMM for prompts), exact = 16-bit and a float GEMM for\n"
        "                            prompts (default: EMBER_PRECISION, else exact)\n"
        "  -ngl, --n-gpu-layers N    layers to run on the GPU (default {}; the library says when\n"
        "                            it cannot)\n"
        "{}"
        "{}"
        "generation:\n"
        "  -n, --n-predict N         tokens to generate; -1 = until the end of generation or a\n"
        "                            full context (default {})\n"
        "  --temp F                  temperature; 0 = greedy (default {})\n"
        "  --top-k N                 keep the N most likely tokens; <= 0 disables (default {})\n"
        "  --top-p F                 nucleus sampling in [0, 1]; 1 disables (default {})\n"
        "  --min-p F                 drop tokens below F * p(best), in [0, 1]; 0 disables (default {})\n"
        "  --repeat-penalty F        penalise repeated tokens; 1 disables (default {})\n"
        "  --repeat-last-n N         tokens the penalties look back; 0 disables, -1 = all (default {})\n"
        "  --presence-penalty F      subtracted once from a seen token's logit (default {})\n"
        "  --frequency-penalty F     subtracted per occurrence of a seen token (default {})\n"
        "  --seed N                  random seed; -1 = a new one each run (default: a fixed seed,\n"
        "                            so runs repeat)\n"
        "  --stop STR                end generation where STR appears (repeatable; STR is not printed)\n"
        "  --grammar GBNF            constrain the output to a GBNF grammar (llama.cpp's syntax)\n"
        "  --grammar-file FILE       ... read from FILE\n"
        "  -j, --json-schema SCHEMA  constrain the output to JSON valid for a JSON Schema\n"
        "                            ('{{\"type\": \"object\"}}' for any JSON object)\n"
        "  -jf, --json-schema-file FILE  ... read from FILE\n",
        d.session.n_batch, d.session.n_threads, kv_help(28), d.model.n_gpu_layers, load_help(28) + memory_help(28), lora_help(28), d.generate.max_tokens, s.temperature,
        s.top_k, s.top_p, s.min_p, s.repeat_penalty, s.penalty_last_n, s.presence_penalty, s.frequency_penalty);
    if (with_run_flags) h += "  --ignore-eos              keep generating past end-of-generation tokens\n";
    return h;
}

}  // namespace ember_tools
