// The C ABI: translates to the C++ API; never lets an exception out.
#include "ember.h"

#include <cstring>
#include <new>
#include <string>

#include "ember/error.hpp"
#include "ember/version.hpp"

namespace {

thread_local std::string g_last_error;

ember_status to_status(ember::ErrorCode code) {
    switch (code) {
        case ember::ErrorCode::InvalidArgument: return EMBER_ERR_INVALID_ARGUMENT;
        case ember::ErrorCode::InvalidFile: return EMBER_ERR_INVALID_FILE;
        case ember::ErrorCode::Unsupported: return EMBER_ERR_UNSUPPORTED;
        case ember::ErrorCode::NotFound: return EMBER_ERR_NOT_FOUND;
        case ember::ErrorCode::TypeMismatch: return EMBER_ERR_TYPE_MISMATCH;
        case ember::ErrorCode::Io: return EMBER_ERR_IO;
        case ember::ErrorCode::OutOfMemory: return EMBER_ERR_OUT_OF_MEMORY;
        case ember::ErrorCode::Backend: return EMBER_ERR_BACKEND;
        case ember::ErrorCode::Internal: return EMBER_ERR_INTERNAL;
    }
    return EMBER_ERR_INTERNAL;
}

ember_status fail(ember_status s, const std::string& msg) {
    try {
        g_last_error = msg;
    } catch (...) {
        g_last_error.clear();
    }
    return s;
}

// Runs f, turning every exception into a status and a message.
template <class F> ember_status guarded(const char* fn, F&& f) {
    try {
        g_last_error.clear();
        return f();
    } catch (const ember::Error& e) {
        return fail(to_status(e.code()), e.what());
    } catch (const std::bad_alloc&) {
        return fail(EMBER_ERR_OUT_OF_MEMORY, std::string(fn) + ": out of memory");
    } catch (const std::exception& e) {
        return fail(EMBER_ERR_INTERNAL, std::string(fn) + ": " + e.what());
    } catch (...) {
        return fail(EMBER_ERR_INTERNAL, std::string(fn) + ": unknown exception");
    }
}

}  // namespace

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
        case EMBER_ERR_INTERNAL: return "EMBER_ERR_INTERNAL";
    }
    return "EMBER_ERR_UNKNOWN";
}

const char* ember_last_error(void) { return g_last_error.c_str(); }

ember_status ember_build_info(char* buf, size_t buf_size, size_t* needed) {
    return guarded("ember_build_info", [&]() -> ember_status {
        if (buf == nullptr && buf_size != 0)
            return fail(EMBER_ERR_INVALID_ARGUMENT, "ember_build_info: buf is NULL but buf_size is not 0");
        const std::string info = ember::build_info();
        if (needed) *needed = info.size() + 1;
        if (buf_size == 0) {
            if (buf == nullptr) return EMBER_OK;  // size query
            return fail(EMBER_ERR_BUFFER_TOO_SMALL, "ember_build_info: buf_size is 0");
        }
        const size_t n = info.size() < buf_size - 1 ? info.size() : buf_size - 1;
        std::memcpy(buf, info.data(), n);
        buf[n] = '\0';
        if (n < info.size())
            return fail(EMBER_ERR_BUFFER_TOO_SMALL,
                        "ember_build_info: buf_size " + std::to_string(buf_size) + " is too small; " +
                            std::to_string(info.size() + 1) + " bytes are needed (see *needed)");
        return EMBER_OK;
    });
}

}  // extern "C"
