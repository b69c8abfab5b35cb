// The command-line flags ember-run and ember-chat share -- the model, the
// session (context, batch, threads, KV cache type), LoRA adapters and
// generation (length, sampling, stop strings) -- parsed strictly, with one help
// text for both. The load-mode and LoRA flags are also the other tools'
// (parse_load_flag, parse_lora_flag).
//
//   ember_tools::ArgReader args(argc, argv);
//   ember_tools::CommonOptions opt;
//   while (!args.done()) {
//       const std::string flag = args.next();
//       if (flag == "-p") prompt = args.value(flag);
//       else if (!ember_tools::parse_common_flag(flag, args, opt)) throw ember_tools::UsageError(...);
//   }
//   ember_tools::validate(opt);   // the library's own checks, before the model is loaded
//
// A bad command line is a UsageError; the tools print it as
// "<tool>: error: <message>" and exit with status 1.
#pragma once

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "ember/ember.hpp"

namespace ember_tools {

struct UsageError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// One adapter of --lora / --lora-scaled: its file and its user scale.
struct LoraSpec {
    std::string path;
    float scale = 1.0f;
};

struct CommonOptions {
    std::string model_path;          // -m
    ember::ModelParams model;        // -ngl
    ember::LoadOptions load;         // --no-mmap, --load-mode (-lm)
    ember::SessionParams session;    // -c, -b, -t, --kv-type
    ember::SessionOptions session_options;  // -ctk, -ctv, --mem-budget (memory_budget: the model's load too)
    ember::Precision precision = ember::Precision::Default;  // --precision (Session::set_precision)
    ember::GenerateParams generate;  // -n, sampling flags, --seed, --stop, --ignore-eos
    bool random_seed = false;        // --seed -1: a fresh seed, chosen by validate()
    std::vector<LoraSpec> lora;      // --lora, --lora-scaled, in the order given
    // --grammar / --grammar-file (GBNF), -j / --json-schema / -jf / --json-schema-file: the text
    // as given (a file's contents), and what validate() compiles it into
    std::string grammar;
    std::string json_schema;
    std::string constraint_flag;     // the flag that set it, for messages ("" = none)
    ember::Constraint constraint;
};

// Walks argv. "--flag=value" is accepted as well as "--flag value".
class ArgReader {
public:
    ArgReader(int argc, char** argv) : argc_(argc), argv_(argv) {}
    bool done() const { return i_ >= argc_ && !pending_value_; }
    // The next flag (or positional argument).
    std::string next();
    // The value of `flag`, the argument after it; UsageError when there is none.
    std::string value(std::string_view flag);

private:
    int argc_;
    char** argv_;
    int i_ = 1;
    bool pending_value_ = false;  // "--flag=value": value_ holds what follows '='
    std::string value_;
};

// Strict number parsing: the whole text must be a number in [lo, hi];
// UsageError naming the flag otherwise.
int64_t parse_int(std::string_view flag, std::string_view text, int64_t lo, int64_t hi);
float parse_float(std::string_view flag, std::string_view text);

// Handles `flag` (taking its value from `args`) when it is one of the shared
// flags; returns false for any other flag. `with_run_flags` adds the flags
// that only make sense for one-shot generation (--ignore-eos).
// --precision's value: "fast" or "exact" (UsageError otherwise).
ember::Precision parse_precision(std::string_view flag, std::string_view value);

bool parse_common_flag(const std::string& flag, ArgReader& args, CommonOptions& opt, bool with_run_flags);

// How the model file is brought into memory, for every tool that loads one:
// --no-mmap (llama.cpp's long-standing spelling), --mmap, and --load-mode
// (-lm, current llama.cpp's) mmap|none. Returns false for any other flag;
// UsageError for a bad mode.
bool parse_load_flag(const std::string& flag, ArgReader& args, ember::LoadOptions& load);
// The help lines of those flags (each line indented by two spaces, the
// descriptions starting at column `column`).
std::string load_help(int column = 28);

// --mem-budget SIZE, for every tool that loads a model: the bytes the model (and
// its session) may use ("512M", "1.5G", "1048576"; K/M/G/T are powers of 1024;
// 0 = none). The load and the session are refused before allocating when the
// estimate (ember/memory.hpp) exceeds it. Returns false for any other flag;
// UsageError for a bad size.
bool parse_memory_flag(const std::string& flag, ArgReader& args, uint64_t& budget);
std::string memory_help(int column = 28);
// The KV cache type flags: --kv-type (K and V), -ctk / --cache-type-k, -ctv /
// --cache-type-v (llama.cpp's), each f16|f32|q8_0|q4_0. Returns false for any
// other flag; UsageError for a bad type.
bool parse_kv_flag(const std::string& flag, ArgReader& args, ember::SessionParams& session,
                   ember::SessionOptions& options);
std::string kv_help(int column = 28);

// LoRA adapters, as current llama.cpp spells the flags: --lora FILE[,FILE...]
// (scale 1) and --lora-scaled FILE:SCALE[,FILE:SCALE...]; both may repeat and
// combine, and the adapters keep the order given. Items are separated by
// commas; an item in double quotes may hold commas ("" inside is a quote), as
// llama.cpp reads them. SCALE follows the last ':' of its item (a path may hold
// colons) and must be a finite number. Each FILE must be a readable file:
// UsageError naming the flag and the item otherwise (an empty item too).
// Returns false for any other flag.
bool parse_lora_flag(const std::string& flag, ArgReader& args, std::vector<LoraSpec>& lora);
// The help lines of those flags (as load_help).
std::string lora_help(int column = 28);
// Loads every adapter of `lora` for `model` (Model::load_adapter: the library
// checks each against the model and throws its ember::Error when one does not
// fit); a file named twice is loaded once. The list for Session::set_adapters.
std::vector<ember::AdapterScale> load_adapters(const std::shared_ptr<const ember::Model>& model,
                                               const std::vector<LoraSpec>& lora);
// One line per adapter, for the tools' stderr reports: "FILE (scale 0.5: alpha
// 16, rank 8; 14 matrices, 1.2 MiB)".
std::string describe_adapter(const ember::AdapterScale& a);

// Checks what can be checked before loading the model: -m given, the sampling
// parameters (by the library's Sampler, so the limits are the library's),
// non-empty stop strings. Picks the seed for --seed -1. Throws UsageError.
void validate(CommonOptions& opt);

// Help text for the shared flags, showing the defaults in `defaults`.
std::string common_help(const CommonOptions& defaults, bool with_run_flags);

}  // namespace ember_tools
