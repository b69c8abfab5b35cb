#include "ember/error.hpp"

namespace ember {

const char* error_code_name(ErrorCode code) noexcept {
    switch (code) {
        case ErrorCode::InvalidArgument: return "invalid_argument";
        case ErrorCode::InvalidFile: return "invalid_file";
        case ErrorCode::Unsupported: return "unsupported";
        case ErrorCode::NotFound: return "not_found";
        case ErrorCode::TypeMismatch: return "type_mismatch";
        case ErrorCode::Io: return "io";
        case ErrorCode::OutOfMemory: return "out_of_memory";
        case ErrorCode::Backend: return "backend";
        case ErrorCode::Internal: return "internal";
        case ErrorCode::Cancelled: return "cancelled";
    }
    return "unknown";
}

Error::Error(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}

}  // namespace ember
