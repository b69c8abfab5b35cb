// Build information, CPU feature detection and the CUDA runtime probe.
#include <doctest/doctest.h>

#include <string>

#include "backends/cpu/cpu_features.hpp"
#include "backends/gpu.hpp"
#include "ember/error.hpp"
#include "ember/version.hpp"

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

TEST_CASE("the GPU hooks report the devices or why there are none, without aborting") {
    const std::string devices = ember::device_info();  // opens the CUDA module when there is one
    CHECK(devices.rfind("cuda: ", 0) == 0);
    if (!ember::gpu_built()) {
        CHECK(devices.find("not built") != std::string::npos);
        CHECK(ember::build_info().find("cuda: not built") != std::string::npos);
        return;
    }
    CHECK(ember::build_info().find("cuda: built as the module libember-cuda.so") != std::string::npos);
    try {
        const ember::GpuInfo g = ember::gpu_probe();
        CHECK(!g.name.empty());
        CHECK(g.total_bytes > 0);
        CHECK(devices.find("cuda: device 0: ") != std::string::npos);
    } catch (const ember::Error& e) {
        // no device, no driver, or the module could not load (no cuBLAS): a Backend error that says why
        CHECK(e.code() == ember::ErrorCode::Backend);
        CHECK(std::string(e.what()).find("-ngl 0") != std::string::npos);
        MESSAGE("GPU checks not reachable here: " << std::string(e.what()));
    }
}
