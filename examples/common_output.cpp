// The tools' output file checks (see common_output.hpp).
#include "common_output.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>

#include <fmt/format.h>

#include "ember/error.hpp"

namespace ember_tools {

namespace {

// What stands at OUT, in words, when it is not a regular file.
const char* kind_of(const struct stat& st) {
    if (S_ISDIR(st.st_mode)) return "a directory";
    if (S_ISCHR(st.st_mode)) return "a character device";
    if (S_ISBLK(st.st_mode)) return "a block device";
    if (S_ISFIFO(st.st_mode)) return "a named pipe";
    if (S_ISSOCK(st.st_mode)) return "a socket";
    return "not a regular file";
}

}  // namespace

std::string checked_output(const std::string& out_arg, const std::vector<OutputInput>& inputs, const OutputRules& r) {
    namespace fs = std::filesystem;
    using ember::Error;
    using ember::ErrorCode;
    std::error_code ec;
    for (const OutputInput& in : inputs)
        if (fs::exists(out_arg, ec) && fs::equivalent(in.path, out_arg, ec))
            throw Error(ErrorCode::InvalidArgument,
                        fmt::format("{} '{}' is {}{}; write {} to another path", r.label, out_arg, in.what,
                                    in.path == out_arg ? "" : fmt::format(" '{}'", in.path), r.product));
    std::string out = out_arg;
    struct stat st {};
    if (::lstat(out.c_str(), &st) == 0 && S_ISLNK(st.st_mode) && ::stat(out.c_str(), &st) != 0)
        throw Error(ErrorCode::InvalidArgument,
                    fmt::format("{} '{}' is a symbolic link to a missing file; {} will not replace the link: give the "
                                "link's target or another path",
                                r.label, out_arg, r.tool));
    if (::stat(out.c_str(), &st) == 0) {
        if (!S_ISREG(st.st_mode))
            throw Error(ErrorCode::InvalidArgument,
                        fmt::format("{} '{}' exists and is {}; {} writes only new files or replaces regular files: "
                                    "choose another path",
                                    r.label, out_arg, kind_of(st), r.tool));
        // a link to a regular file: the file is replaced, the link stays
        if (fs::is_symlink(out, ec)) out = fs::canonical(out, ec).string();
        if (ec) throw Error(ErrorCode::Io, fmt::format("{} '{}': {}", r.label, out_arg, ec.message()));
    }
    const fs::path dir = fs::path(out).has_parent_path() ? fs::path(out).parent_path() : fs::path(".");
    if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
        throw Error(ErrorCode::NotFound, fmt::format("{} '{}': the folder '{}' does not exist; create it first",
                                                     r.label, out_arg, dir.string()));
    if (::access(dir.c_str(), W_OK | X_OK) != 0)
        throw Error(ErrorCode::Io, fmt::format("{} '{}': cannot write in the folder '{}' ({}); {}", r.label, out_arg,
                                               dir.string(), std::strerror(errno), r.nothing));
    return out;
}

}  // namespace ember_tools
