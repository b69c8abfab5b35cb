// ember::Error: the one exception type the C++ API throws.
//
// Every error carries a code from a closed list and a message that says what
// happened, where (file, field, byte offset, argument) and what to do.
#pragma once

#include <stdexcept>
#include <string>

#include "ember/export.hpp"

namespace ember {

enum class ErrorCode {
    InvalidArgument,  // a caller passed something out of range or malformed
    InvalidFile,      // a file is corrupt, truncated or not what it claims
    Unsupported,      // well-formed input that ember does not handle (version, type, architecture)
    NotFound,         // a key, tensor or file that does not exist
    TypeMismatch,     // a metadata value exists but has another type
    Io,               // the operating system refused (open, mmap, write)
    OutOfMemory,      // an allocation failed
    Backend,          // a compute backend failed (e.g. the CUDA runtime)
    Internal,         // a bug in ember; please report it
    Cancelled,        // the caller cancelled the operation (Session::cancel)
};

// Stable lower-case name of a code, e.g. "invalid_file".
EMBER_API const char* error_code_name(ErrorCode code) noexcept;

class EMBER_API Error : public std::runtime_error {
public:
    Error(ErrorCode code, const std::string& message);
    ErrorCode code() const noexcept { return code_; }

private:
    ErrorCode code_;
};

}  // namespace ember
