// Run-time skips for the doctest cases (Debian's doctest 2.4.9 has none), and
// where the tests find the default models, the peer vocabularies and
// llama.cpp's tokenizer vectors.
//
//   EMBER_SKIP("no CUDA device (" << why << ")");
//       skips the calling test case: prints "SKIPPED: <test case>: <reason>",
//       counts the case as skipped (not passed) and returns from it.
//   EMBER_SKIP_MISSING_RESOURCE(path, hint);
//       the same for a file or folder the test needs and cannot find -- but in
//       requirement mode (CI set non-empty, or EMBER_REQUIRE_MODELS=1) the case
//       FAILS instead: "required in CI (CI or EMBER_REQUIRE_MODELS set): <path>
//       is missing; <hint>". Only for the default models (models/*.gguf),
//       ../shared/vocab and llama.cpp's vectors (scripts/fetch-llama-cpp-src),
//       which CI must have.
//   EMBER_REQUIRE_RESOURCE(path, hint);
//       EMBER_SKIP_MISSING_RESOURCE(path, hint) when `path` does not exist.
//
// The macros return from the enclosing function: call them from the body of a
// TEST_CASE (not from a helper, a lambda or inside a SUBCASE). The listener in
// tests/unit/main.cpp tells this file the running test case and, when the case
// ends without a failure, counts it as skipped; main prints the skips and the
// line "unit: N passed, N failed, N skipped" after doctest's own summary.
#pragma once

#include <doctest/doctest.h>

#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

namespace ember_test {

// A test case that skipped itself, and why.
struct Skip {
    std::string test_case;
    std::string reason;
};

namespace skip_detail {
inline std::string current_test_case = "(no test case)";  // set by main.cpp's listener
inline std::vector<Skip> current_skips;                    // skips of the running case
inline std::vector<Skip> skipped_cases;                    // cases that ended skipped, one entry each
}  // namespace skip_detail

// Requirement mode: CI set non-empty (CI sets CI=true) or EMBER_REQUIRE_MODELS=1.
inline bool resources_required() {
    const char* ci = std::getenv("CI");
    const char* req = std::getenv("EMBER_REQUIRE_MODELS");
    return (ci != nullptr && ci[0] != '\0') || (req != nullptr && std::string(req) == "1");
}

// Records a skip of the running test case and prints it. Use EMBER_SKIP,
// which also returns from the case.
inline void skip(const std::string& reason) {
    const Skip s{skip_detail::current_test_case, reason};
    std::cout << "SKIPPED: " << s.test_case << ": " << s.reason << std::endl;
    skip_detail::current_skips.push_back(s);
}

// Why a missing resource fails a case in requirement mode.
inline std::string required_message(const std::filesystem::path& path, const std::string& hint) {
    return "required in CI (CI or EMBER_REQUIRE_MODELS set): " + path.string() + " is missing; " + hint;
}

// Skips for a missing resource (the caller returns), or -- in requirement
// mode -- fails the case (FAIL throws). Use EMBER_SKIP_MISSING_RESOURCE.
inline void skip_missing_resource(const std::filesystem::path& path, const std::string& hint, const char* file,
                                  int line) {
    if (resources_required()) DOCTEST_ADD_FAIL_AT(file, line, required_message(path, hint));
    skip(path.string() + " is missing; " + hint);
}

// The hints for the kinds of required resource.
inline const std::string kFetchModels = "run scripts/fetch-models (or set EMBER_MODELS_DIR)";
inline const std::string kSharedVocab =
    "the peer tokenizer vocabularies come from ../shared/vocab (or set EMBER_SHARED_DIR)";
inline const std::string kLlamaCppVocab = "run scripts/fetch-llama-cpp-src (or set EMBER_LLAMA_CPP_VOCAB)";

// The default models' folder: EMBER_MODELS_DIR, else the source tree's models/.
inline std::filesystem::path models_dir() {
    const char* e = std::getenv("EMBER_MODELS_DIR");
    if (e != nullptr && e[0] != '\0') return e;
#ifdef EMBER_SOURCE_DIR
    return std::filesystem::path(EMBER_SOURCE_DIR) / "models";
#else
    return "models";
#endif
}

// The peer project's shared folder (vocab/ holds the tokenizer vectors):
// EMBER_SHARED_DIR, else ../shared next to the source tree.
inline std::filesystem::path shared_dir() {
    const char* e = std::getenv("EMBER_SHARED_DIR");
    if (e != nullptr && e[0] != '\0') return e;
#ifdef EMBER_SOURCE_DIR
    return std::filesystem::path(EMBER_SOURCE_DIR) / ".." / "shared";
#else
    return "../shared";
#endif
}

inline std::filesystem::path shared_vocab_dir() { return shared_dir() / "vocab"; }

// llama.cpp's tokenizer vectors (ggml-vocab-*.gguf with .inp/.out), read from
// the llama-cpp-python source package that scripts/fetch-llama-cpp-src unpacks
// into the git-ignored .cache/: EMBER_LLAMA_CPP_VOCAB, else that folder. (The
// version in the path is the one the script pins.)
inline std::filesystem::path llama_cpp_vocab_dir() {
    const char* e = std::getenv("EMBER_LLAMA_CPP_VOCAB");
    if (e != nullptr && e[0] != '\0') return e;
#ifdef EMBER_SOURCE_DIR
    const std::filesystem::path root = EMBER_SOURCE_DIR;
#else
    const std::filesystem::path root = ".";
#endif
    return root / ".cache/llama-cpp-python/llama_cpp_python-0.3.36/vendor/llama.cpp/models";
}

}  // namespace ember_test

// Skips the calling test case; `reason` may be a << chain ("a" << x).
#define EMBER_SKIP(reason)                            \
    do {                                              \
        std::ostringstream ember_skip_reason_;        \
        ember_skip_reason_ << reason;                 \
        ::ember_test::skip(ember_skip_reason_.str()); \
        return;                                       \
    } while (false)

// Skips the calling test case for a missing required resource; fails it in requirement mode.
#define EMBER_SKIP_MISSING_RESOURCE(path, hint)                                     \
    do {                                                                            \
        ::ember_test::skip_missing_resource((path), (hint), __FILE__, __LINE__);    \
        return;                                                                     \
    } while (false)

// EMBER_SKIP_MISSING_RESOURCE when `path` does not exist.
#define EMBER_REQUIRE_RESOURCE(path, hint)                                           \
    do {                                                                             \
        if (!std::filesystem::exists(path)) EMBER_SKIP_MISSING_RESOURCE(path, hint); \
    } while (false)
