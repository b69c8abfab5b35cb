// A whole file in memory, read-only: mapped (the default; the pages come from
// the file, so the file must not be truncated or rewritten in place while
// mapped) or read into anonymous pages at open (the file may then change
// without harm). Either way the bytes start page-aligned.
#pragma once

#include <cstdint>
#include <string>

namespace ember {

class MappedFile {
public:
    // Throws ember::Error naming the path and the reason: NotFound/Io when the
    // file cannot be opened or read, InvalidFile when it is empty,
    // OutOfMemory (naming the bytes) when it cannot be mapped or read in.
    explicit MappedFile(const std::string& path, bool use_mmap = true);
    ~MappedFile();
    MappedFile(const MappedFile&) = delete;
    MappedFile& operator=(const MappedFile&) = delete;

    const uint8_t* data() const { return data_; }
    uint64_t size() const { return size_; }
    bool mapped() const { return mapped_; }  // false: read into anonymous memory

private:
    const uint8_t* data_ = nullptr;
    uint64_t size_ = 0;
    bool mapped_ = true;
};

}  // namespace ember
