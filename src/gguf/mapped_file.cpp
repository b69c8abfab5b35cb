#include "gguf/mapped_file.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "ember/error.hpp"

namespace ember {

MappedFile::MappedFile(const std::string& path, bool use_mmap) {
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
    mapped_ = use_mmap;
    if (use_mmap) {
        void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
        const int err = errno;
        ::close(fd);  // the mapping keeps the file open
        if (p == MAP_FAILED)
            throw Error(err == ENOMEM ? ErrorCode::OutOfMemory : ErrorCode::Io,
                        fmt::format("cannot map '{}' ({} bytes) into memory: {}{}", path, size_, std::strerror(err),
                                    err == ENOMEM ? " (out of memory or address space: free memory or raise the "
                                                    "process's memory limit, ulimit -v)"
                                                  : ""));
        data_ = static_cast<const uint8_t*>(p);
        return;
    }
    // use_mmap off: anonymous pages, page-aligned as a mapping would be, filled with pread
    void* p = ::mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        const int err = errno;
        ::close(fd);
        throw Error(err == ENOMEM ? ErrorCode::OutOfMemory : ErrorCode::Io,
                    fmt::format("cannot allocate {} bytes ({} MiB) to read '{}' into memory (mmap off): {}; load it "
                                "mapped (use_mmap on, the default) to run from the file's pages instead",
                                size_, (size_ + (1 << 20) - 1) >> 20, path, std::strerror(err)));
    }
    auto* buf = static_cast<uint8_t*>(p);
    uint64_t done = 0;
    while (done < size_) {
        const size_t chunk = static_cast<size_t>(std::min<uint64_t>(size_ - done, uint64_t{1} << 30));
        const ssize_t n = ::pread(fd, buf + done, chunk, static_cast<off_t>(done));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            const int err = n < 0 ? errno : 0;
            ::close(fd);
            ::munmap(p, size_);
            if (err == ENOMEM)
                throw Error(ErrorCode::OutOfMemory,
                            fmt::format("cannot read '{}' ({} bytes) into memory (mmap off): {}; load it mapped "
                                        "(use_mmap on, the default) instead",
                                        path, size_, std::strerror(err)));
            throw Error(ErrorCode::Io,
                        err != 0 ? fmt::format("cannot read '{}' at byte {} of {}: {}", path, done, size_,
                                               std::strerror(err))
                                 : fmt::format("'{}' ended at byte {} while being read, but was {} bytes when opened; "
                                               "it is being changed: replace a model file by writing a new file and "
                                               "renaming it over the old one",
                                               path, done, size_));
        }
        done += static_cast<uint64_t>(n);
    }
    ::close(fd);
    ::mprotect(p, size_, PROT_READ);  // as read-only as the mapping
    data_ = buf;
}

MappedFile::~MappedFile() {
    if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
}

}  // namespace ember
