// A whole file mapped read-only into memory.
#pragma once

#include <cstdint>
#include <string>

namespace ember {

class MappedFile {
public:
    // Throws ember::Error (Io / InvalidFile) naming the path and the reason.
    explicit MappedFile(const std::string& path);
    ~MappedFile();
    MappedFile(const MappedFile&) = delete;
    MappedFile& operator=(const MappedFile&) = delete;

    const uint8_t* data() const { return data_; }
    uint64_t size() const { return size_; }

private:
    const uint8_t* data_ = nullptr;
    uint64_t size_ = 0;
};

}  // namespace ember
