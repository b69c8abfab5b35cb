// The C ABI: translates to the C++ API; never lets an exception out.
// Versioning, status names and error reporting live here; the model, session
// and generation calls are in capi_inference.cpp.
#include "ember.h"

#include <cstring>
#include <new>
#include <string>

#include "capi_internal.hpp"
#include "ember/error.hpp"
#include "ember/utf8.hpp"
#include "ember/version.hpp"

namespace ember::capi {

std::string& last_error() noexcept {
    thread_local std::string message;
    return message;
}

ember_status to_status(ErrorCode code) noexcept {
    switch (code) {
        case ErrorCode::InvalidArgument: return EMBER_ERR_INVALID_ARGUMENT;
        case ErrorCode::InvalidFile: return EMBER_ERR_INVALID_FILE;
        case ErrorCode::Unsupported: return EMBER_ERR_UNSUPPORTED;
        case ErrorCode::NotFound: return EMBER_ERR_NOT_FOUND;
        case ErrorCode::TypeMismatch: return EMBER_ERR_TYPE_MISMATCH;
        case ErrorCode::Io: return EMBER_ERR_IO;
        case ErrorCode::OutOfMemory: return EMBER_ERR_OUT_OF_MEMORY;
        case ErrorCode::Backend: return EMBER_ERR_BACKEND;
        case ErrorCode::Internal: return EMBER_ERR_INTERNAL;
        case ErrorCode::Cancelled: return EMBER_ERR_CANCELLED;
    }
    return EMBER_ERR_INTERNAL;
}

ember_status fail(ember_status s, const std::string& msg) noexcept {
    try {
        last_error() = msg;
    } catch (...) {
        last_error().clear();
    }
    return s;
}

ember_status check_utf8(const char* fn, const std::string& arg, std::string_view s) {
    const size_t at = ember::utf8_invalid_offset(s);
    if (at == std::string_view::npos) return EMBER_OK;
    return invalid(fn, arg + " is not valid UTF-8 (byte " + std::to_string(at) + " of " + std::to_string(s.size()) +
                           " starts an invalid or truncated sequence)");
}

ember_status write_text(const char* fn, std::string_view text, char* buf, size_t buf_size, size_t* needed) {
    if (buf == nullptr && buf_size != 0) return invalid(fn, "buf is NULL but buf_size is " + std::to_string(buf_size));
    if (needed) *needed = text.size() + 1;
    if (buf_size == 0) {
        if (buf == nullptr) return EMBER_OK;  // size query
        return fail(EMBER_ERR_BUFFER_TOO_SMALL, std::string(fn) + ": buf_size is 0; " +
                                                    std::to_string(text.size() + 1) + " bytes are needed (see *needed)");
    }
    const size_t n = std::min(text.size(), buf_size - 1);
    std::memcpy(buf, text.data(), n);
    buf[n] = '\0';
    if (n < text.size())
        return fail(EMBER_ERR_BUFFER_TOO_SMALL, std::string(fn) + ": buf_size " + std::to_string(buf_size) +
                                                    " is too small; " + std::to_string(text.size() + 1) +
                                                    " bytes are needed (see *needed)");
    return EMBER_OK;
}

}  // namespace ember::capi

using ember::capi::guarded;

extern "C" {

uint32_t ember_abi_version(void) { return EMBER_ABI_VERSION; }

const char* ember_version(void) { return ember::version(); }

const char* ember_status_name(ember_status status) {
    switch (status) {
        case EMBER_OK: return "EMBER_OK";
        case EMBER_ERR_INVALID_ARGUMENT: return "EMBER_ERR_INVALID_ARGUMENT";
        case EMBER_ERR_INVALID_FILE: return "EMBER_ERR_INVALID_FILE";
        case EMBER_ERR_UNSUPPORTED: return "EMBER_ERR_UNSUPPORTED";
        case EMBER_ERR_NOT_FOUND: return "EMBER_ERR_NOT_FOUND";
        case EMBER_ERR_TYPE_MISMATCH: return "EMBER_ERR_TYPE_MISMATCH";
        case EMBER_ERR_IO: return "EMBER_ERR_IO";
        case EMBER_ERR_OUT_OF_MEMORY: return "EMBER_ERR_OUT_OF_MEMORY";
        case EMBER_ERR_BACKEND: return "EMBER_ERR_BACKEND";
        case EMBER_ERR_BUFFER_TOO_SMALL: return "EMBER_ERR_BUFFER_TOO_SMALL";
        case EMBER_ERR_CANCELLED: return "EMBER_ERR_CANCELLED";
        case EMBER_ERR_MISUSE: return "EMBER_ERR_MISUSE";
        case EMBER_ERR_INTERNAL: return "EMBER_ERR_INTERNAL";
    }
    return "EMBER_ERR_UNKNOWN";
}

const char* ember_last_error(void) { return ember::capi::last_error().c_str(); }

ember_status ember_build_info(char* buf, size_t buf_size, size_t* needed) {
    static constexpr const char* fn = "ember_build_info";
    return guarded(fn, [&]() -> ember_status {
        return ember::capi::write_text(fn, ember::build_info(), buf, buf_size, needed);
    });
}

}  // extern "C"
