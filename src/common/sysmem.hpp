// Small helpers about memory shared by the model layer (Model::load's budget,
// repacking's fit test) and the runtime (estimate_memory, available_memory).
#pragma once

#include <cstdint>
#include <string>

namespace ember {

constexpr uint64_t kMiB = uint64_t{1} << 20;

inline double mib(uint64_t bytes) { return static_cast<double>(bytes) / static_cast<double>(kMiB); }

// A size for a message: "512 bytes", "1.5 KiB", "9.3 MiB", "842 MiB".
std::string format_mib(uint64_t bytes);

// A line "Key: N kB" of /proc/meminfo, in KiB; UINT64_MAX when absent (or not Linux).
uint64_t meminfo_kib(const char* key);

}  // namespace ember
