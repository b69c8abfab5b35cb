#include "common/sysmem.hpp"

#include <fmt/format.h>

#include <cstdio>
#include <cstring>

namespace ember {

std::string format_mib(uint64_t b) {
    if (b < 1024) return fmt::format("{} bytes", b);
    if (b < kMiB) return fmt::format("{:.1f} KiB", static_cast<double>(b) / 1024.0);
    return b < 10 * kMiB ? fmt::format("{:.1f} MiB", mib(b)) : fmt::format("{:.0f} MiB", mib(b));
}

uint64_t meminfo_kib(const char* key) {
    std::FILE* f = std::fopen("/proc/meminfo", "r");
    if (f == nullptr) return UINT64_MAX;
    char line[256];
    uint64_t kib = UINT64_MAX;
    const size_t klen = std::strlen(key);
    while (std::fgets(line, sizeof line, f) != nullptr) {
        if (std::strncmp(line, key, klen) != 0 || line[klen] != ':') continue;
        unsigned long long v = 0;
        if (std::sscanf(line + klen + 1, "%llu", &v) == 1) kib = v;
        break;
    }
    std::fclose(f);
    return kib;
}

}  // namespace ember
