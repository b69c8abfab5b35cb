// Shared by the C ABI's translation units: the thread-local error message,
// the exception guard every entry point runs in, and the argument checks and
// copies that turn C arguments into C++ ones. Nothing here is exported.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <new>
#include <string>
#include <string_view>

#include "ember.h"
#include "ember/error.hpp"

namespace ember::capi {

// The message ember_last_error() returns, one per thread.
std::string& last_error() noexcept;

ember_status to_status(ErrorCode code) noexcept;

// Records msg as this thread's last error and returns s.
ember_status fail(ember_status s, const std::string& msg) noexcept;

// EMBER_ERR_INVALID_ARGUMENT with "fn: what".
inline ember_status invalid(const char* fn, const std::string& what) noexcept {
    try {
        return fail(EMBER_ERR_INVALID_ARGUMENT, std::string(fn) + ": " + what);
    } catch (...) {
        return EMBER_ERR_INVALID_ARGUMENT;
    }
}

// EMBER_ERR_MISUSE with "fn: what": the caller broke the API's rules (a freed
// or foreign handle, a call from inside a callback of the same session, an
// uninitialised struct).
inline ember_status misuse(const char* fn, const std::string& what) noexcept {
    try {
        return fail(EMBER_ERR_MISUSE, std::string(fn) + ": " + what);
    } catch (...) {
        return EMBER_ERR_MISUSE;
    }
}

// EMBER_ERR_INVALID_ARGUMENT with "fn: arg is NULL".
inline ember_status null_arg(const char* fn, const char* arg) noexcept {
    return invalid(fn, std::string(arg) + " is NULL");
}

// Runs f, turning every exception into a status and a message that starts
// with the name of the C function.
template <class F> ember_status guarded(const char* fn, F&& f) noexcept {
    try {
        return f();  // a success leaves ember_last_error() as it was: it names the last failure
    } catch (const Error& e) {
        return fail(to_status(e.code()), std::string(fn) + ": " + e.what());
    } catch (const std::bad_alloc&) {
        return fail(EMBER_ERR_OUT_OF_MEMORY, std::string(fn) + ": out of memory");
    } catch (const std::exception& e) {
        return fail(EMBER_ERR_INTERNAL, std::string(fn) + ": " + e.what());
    } catch (...) {
        return fail(EMBER_ERR_INTERNAL, std::string(fn) + ": unknown exception");
    }
}

// EMBER_OK when s is well-formed UTF-8 (no overlong forms, surrogates or code
// points past U+10FFFF); otherwise EMBER_ERR_INVALID_ARGUMENT naming arg and
// the offset of the first bad byte.
ember_status check_utf8(const char* fn, const std::string& arg, std::string_view s);

// Copies text into buf[buf_size] with a NUL; *needed (if not NULL) = text
// size + 1. buf NULL with buf_size 0 is a size query (EMBER_OK); a buffer too
// small gets a NUL-terminated prefix and EMBER_ERR_BUFFER_TOO_SMALL.
ember_status write_text(const char* fn, std::string_view text, char* buf, size_t buf_size, size_t* needed);

// --- versioned structs -------------------------------------------------------
// A caller's struct may be an older (shorter) or newer (longer) version than
// the library's. `first_size` is the end of the last field of the struct's
// first version: the smallest struct_size ever valid.

// No version of any struct of this ABI is or will be this large: a struct_size of
// 0 or above it is an uninitialised struct, whose pointers must not be followed.
constexpr size_t kMaxStructSize = 65536;

inline ember_status implausible_size(const char* fn, const std::string& what, size_t struct_size) {
    return misuse(fn, what + " is " + std::to_string(struct_size) +
                          ": no version of the struct has that size (an uninitialised struct?); fill the struct "
                          "with its _init function, or set struct_size = sizeof the struct");
}

inline ember_status check_struct_size(const char* fn, const char* arg, size_t struct_size, size_t first_size) {
    if (struct_size == 0 || struct_size > kMaxStructSize)
        return implausible_size(fn, std::string(arg) + "->struct_size", struct_size);
    if (struct_size >= first_size) return EMBER_OK;
    return invalid(fn, std::string(arg) + "->struct_size is " + std::to_string(struct_size) + ", less than the " +
                           std::to_string(first_size) + " bytes of its first version; fill the struct with its _init "
                           "function (or set struct_size = sizeof the struct)");
}

// The caller's params read over the library's defaults: only the prefix both
// versions know is copied.
template <class T> T read_params(const T* in, T defaults) noexcept {
    std::memcpy(&defaults, in, std::min(in->struct_size, sizeof(T)));
    defaults.struct_size = sizeof(T);
    return defaults;
}

// Writes value into the caller's struct: only the prefix both versions know;
// the caller's struct_size is kept.
template <class T> void write_struct(T* out, T value) noexcept {
    const size_t n = out->struct_size;
    value.struct_size = n;
    std::memcpy(out, &value, std::min(n, sizeof(T)));
}

// The body of every _init function: zeroes the caller's struct_size bytes,
// then writes the defaults over the prefix the library knows.
template <class T>
ember_status init_params(const char* fn, T* params, size_t struct_size, size_t first_size, const T& defaults) {
    if (params == nullptr) return null_arg(fn, "params");
    if (struct_size == 0 || struct_size > kMaxStructSize) return implausible_size(fn, "struct_size", struct_size);
    if (struct_size < first_size)
        return invalid(fn, "struct_size is " + std::to_string(struct_size) + ", less than the " +
                               std::to_string(first_size) + " bytes of the struct's first version; pass sizeof the struct");
    std::memset(static_cast<void*>(params), 0, struct_size);
    params->struct_size = struct_size;
    write_struct(params, defaults);
    return EMBER_OK;
}

}  // namespace ember::capi
