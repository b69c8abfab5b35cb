#include "gguf/mapped_file.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "ember/error.hpp"

namespace ember {

MappedFile::MappedFile(const std::string& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        const int err = errno;
        throw Error(err == ENOENT ? ErrorCode::NotFound : ErrorCode::Io,
                    fmt::format("cannot open '{}': {}; check the path and its permissions", path, std::strerror(err)));
    }
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
        const int err = errno;
        ::close(fd);
        throw Error(ErrorCode::Io, fmt::format("cannot stat '{}': {}", path, std::strerror(err)));
    }
    if (!S_ISREG(st.st_mode)) {
        ::close(fd);
        // an I/O error as ember.h documents for a file that cannot be read as a model
        throw Error(ErrorCode::Io, fmt::format("'{}' is {}, not a regular file; pass the path of a .gguf file", path,
                                               S_ISDIR(st.st_mode) ? "a directory" : "a device or special file"));
    }
    size_ = static_cast<uint64_t>(st.st_size);
    if (size_ == 0) {
        ::close(fd);
        throw Error(ErrorCode::InvalidFile, fmt::format("'{}' is empty (0 bytes), not a GGUF file", path));
    }
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    const int err = errno;
    ::close(fd);  // the mapping keeps the file open
    if (p == MAP_FAILED)
        throw Error(err == ENOMEM ? ErrorCode::OutOfMemory : ErrorCode::Io,
                    fmt::format("cannot map '{}' ({} bytes) into memory: {}", path, size_, std::strerror(err)));
    data_ = static_cast<const uint8_t*>(p);
}

MappedFile::~MappedFile() {
    if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
}

}  // namespace ember
