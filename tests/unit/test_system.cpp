// Build information, CPU feature detection and the CUDA runtime probe.
#include <doctest/doctest.h>

#include <string>

#include "backends/cpu/cpu_features.hpp"
#include "ember/version.hpp"
#ifdef EMBER_HAVE_CUDA
#include "backends/cuda/cuda_device.hpp"
#endif

TEST_CASE("build info names the version and the CPU") {
    const std::string info = ember::build_info();
    CHECK(info.find(std::string("ember ") + ember::version()) == 0);
    CHECK(info.find("cpu features: ") != std::string::npos);
    MESSAGE(info);
}

TEST_CASE("CPU features agree with the compiler's own detection") {
    const auto& f = ember::cpu_features();
#if defined(__x86_64__)
    __builtin_cpu_init();
    CHECK(f.avx2 == static_cast<bool>(__builtin_cpu_supports("avx2")));
    CHECK(f.fma == static_cast<bool>(__builtin_cpu_supports("fma")));
    CHECK(f.avx512f == static_cast<bool>(__builtin_cpu_supports("avx512f")));
    CHECK(f.avx512vnni == static_cast<bool>(__builtin_cpu_supports("avx512vnni")));
    CHECK(!f.neon);
#elif defined(__aarch64__)
    CHECK(f.neon);
#endif
    CHECK(!ember::cpu_features_string().empty());
}

#ifdef EMBER_HAVE_CUDA
TEST_CASE("the CUDA probe reports devices or why there are none, without aborting") {
    std::vector<ember::cuda::DeviceInfo> devs;
    CHECK_NOTHROW(devs = ember::cuda::devices());
    if (devs.empty()) {
        MESSAGE("SKIPPED GPU checks: no CUDA device (" << ember::cuda::unavailable_reason() << ")");
        CHECK(!ember::cuda::unavailable_reason().empty());
    }
    for (const auto& d : devs) {
        CHECK(!d.name.empty());
        CHECK(d.total_memory > 0);
    }
}
#endif
