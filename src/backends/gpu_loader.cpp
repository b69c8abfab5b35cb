// The GPU hooks of backends/gpu.hpp in every build: they open the CUDA module
// (libember-cuda.so, see gpu_module.hpp) on first use and forward to it.
// libember itself never links the CUDA runtime or cuBLAS, so a CPU-only host
// loads it, and merely starting a program costs no GPU library's memory.
//
// Where the module is looked for, first found wins:
//   1. $EMBER_CUDA_MODULE (a path; nothing else is tried when it is set);
//   2. next to the object holding this code (libember.so, or the program that
//      linked libember statically, by its absolute path), and in ../lib and
//      ../../lib from there (a build tree: build/bin/, build/python/ember/);
//   3. the install's library directory (EMBER_INSTALL_LIBDIR);
//   4. the dynamic linker's own search (LD_LIBRARY_PATH, ld.so.cache).
// A module, once opened, stays loaded until the process ends -- also one that
// is refused: it is never dlclose'd (the CUDA runtime inside registers exit
// handlers, and unloading it makes the process crash at exit).
#include <dlfcn.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cstdlib>
#include <mutex>
#include <string>
#include <vector>

#include "backends/gpu.hpp"
#include "backends/gpu_module.hpp"
#include "ember/error.hpp"
#include "ember/version.hpp"

namespace ember {

namespace {

constexpr const char* kModuleName = "libember-cuda.so";

#ifdef EMBER_CUDA_MODULE_BUILT
constexpr bool kBuilt = true;
#else
constexpr bool kBuilt = false;
#endif

[[noreturn]] void not_built(const char* what) {
    throw Error(ErrorCode::Unsupported,
                std::string(what) +
                    ": this build of ember has no CUDA backend; rebuild with the CUDA toolkit installed "
                    "(cmake -DEMBER_CUDA=ON) to run layers on an NVIDIA GPU, or use n_gpu_layers = 0 (-ngl 0)");
}

std::string dir_of(const std::string& file) {
    const size_t slash = file.rfind('/');
    return slash == std::string::npos ? std::string(".") : file.substr(0, slash);
}

// The absolute path of the object holding this code: libember.so, or the
// program that linked libember statically. For the main program glibc's
// dladdr gives argv[0], which may be relative ("app" run through PATH) or
// stale after a chdir, so the program's path comes from /proc/self/exe. A
// directory that is not absolute is never searched: the current directory
// must not decide which code runs.
std::string this_object() {
    Dl_info info{};
    if (dladdr(reinterpret_cast<void*>(&this_object), &info) != 0 && info.dli_fname && info.dli_fname[0] == '/')
        return info.dli_fname;
    char buf[4096];
    const ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
    if (n <= 0) return "";
    buf[n] = '\0';
    return buf[0] == '/' ? std::string(buf) : std::string();
}

std::vector<std::string> candidates() {
    std::vector<std::string> out;
    if (const std::string self = this_object(); !self.empty()) {
        const std::string dir = dir_of(self);
        out.push_back(dir + "/" + kModuleName);
        out.push_back(dir + "/../lib/" + kModuleName);
        out.push_back(dir + "/../../lib/" + kModuleName);
    }
#ifdef EMBER_INSTALL_LIBDIR
    out.push_back(std::string(EMBER_INSTALL_LIBDIR) + "/" + kModuleName);
#endif
    out.push_back(kModuleName);  // the dynamic linker's search path
    return out;
}

struct Loaded {
    const GpuModule* table = nullptr;
    std::string path;
    std::string error;  // why there is no table
};

// Opens the module once; later calls see the same outcome.
const Loaded& loaded() {
    static Loaded result;
    static std::once_flag once;
    std::call_once(once, [] {
        std::vector<std::string> tried;
        if (const char* env = std::getenv("EMBER_CUDA_MODULE"); env && *env)
            tried.push_back(env);
        else
            tried = candidates();
        std::string errors;
        for (const std::string& path : tried) {
            // a candidate that is not there is no error; one that is there but cannot
            // load (cuBLAS or the driver missing) is the error to report
            const bool bare = path.find('/') == std::string::npos;
            if (!bare && access(path.c_str(), F_OK) != 0) {
                if (tried.size() == 1) errors = "EMBER_CUDA_MODULE names " + path + ", which does not exist";
                continue;
            }
            void* h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
            if (!h) {
                const char* e = dlerror();
                const std::string why = e ? e : "unknown dlopen error";
                if (!bare || errors.empty()) errors += (errors.empty() ? "" : "; ") + why;
                if (!bare) break;  // the module was found: do not fall back to another copy
                continue;
            }
            auto entry = reinterpret_cast<ember_gpu_module_entry_fn>(dlsym(h, EMBER_GPU_MODULE_ENTRY));
            const GpuModule* t = entry ? entry() : nullptr;
            if (!t) {
                errors += (errors.empty() ? "" : "; ") + path + ": no " EMBER_GPU_MODULE_ENTRY " symbol";
                continue;
            }
            if (t->abi != kGpuModuleAbi || std::string(t->build_tag) != EMBER_GPU_MODULE_BUILD_TAG) {
                errors += (errors.empty() ? "" : "; ") +
                          fmt::format("{} is from another build of ember (module ABI {}, '{}'; this library: ABI "
                                      "{}, '{}')",
                                      path, t->abi, t->build_tag, kGpuModuleAbi, EMBER_GPU_MODULE_BUILD_TAG);
                continue;
            }
            result.table = t;
            result.path = path;
            return;
        }
        result.error = errors.empty() ? fmt::format("{} was not found", kModuleName) : errors;
    });
    return result;
}

const GpuModule& module(const char* what) {
    if (!kBuilt) not_built(what);
    const Loaded& l = loaded();
    if (!l.table)
        throw Error(ErrorCode::Backend,
                    fmt::format("{}: the CUDA module could not be loaded ({}); install the NVIDIA driver and the "
                                "CUDA runtime with cuBLAS, keep {} next to libember (or set EMBER_CUDA_MODULE to "
                                "its path), or run on the CPU with n_gpu_layers = 0 (-ngl 0)",
                                what, l.error, kModuleName));
    return *l.table;
}

}  // namespace

bool gpu_built() noexcept { return kBuilt; }

GpuInfo gpu_probe() { return module("GPU offload").probe(); }
std::unique_ptr<DeviceWeights> make_gpu_weights() { return module("GPU offload").make_weights(); }
std::unique_ptr<Backend> make_gpu_backend() { return module("GPU offload").make_backend(); }

std::string gpu_summary() {
    if (!kBuilt) return "cuda: not built (configure with -DEMBER_CUDA=ON and the CUDA toolkit)\n";
    return fmt::format("cuda: built as the module {} (opened when GPU layers are asked for)\n", kModuleName);
}

std::string gpu_devices() {
    if (!kBuilt) return gpu_summary();
    const Loaded& l = loaded();
    if (!l.table) return fmt::format("cuda: the module could not be loaded: {}\n", l.error);
    return fmt::format("cuda: module {}\n", l.path) + l.table->describe_devices();
}

}  // namespace ember
