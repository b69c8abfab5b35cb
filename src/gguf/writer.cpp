// The GGUF writer: version 3, little-endian, tensors aligned to
// `general.alignment`. Files it writes load in ember, ggml and gguf-py.
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>

#include <fmt/format.h>

#include "ember/gguf.hpp"

namespace ember::gguf {

namespace {
constexpr size_t kMaxTensorName = 63;

void put_bytes(std::vector<uint8_t>& out, const void* p, size_t n) {
    const auto* b = static_cast<const uint8_t*>(p);
    out.insert(out.end(), b, b + n);
}
template <class T> void put(std::vector<uint8_t>& out, T v) { put_bytes(out, &v, sizeof(T)); }
void put_string(std::vector<uint8_t>& out, std::string_view s) {
    put<uint64_t>(out, s.size());
    put_bytes(out, s.data(), s.size());
}

void put_array_body(std::vector<uint8_t>& out, const Value& v) {
    put<uint32_t>(out, static_cast<uint32_t>(v.array_type()));
    put<uint64_t>(out, v.size());
    switch (v.array_type()) {
        case ValueType::String:
            for (std::string_view s : v.strings()) put_string(out, s);
            break;
        case ValueType::Array:
            for (uint64_t i = 0; i < v.size(); ++i) put_array_body(out, v.array_at(i));
            break;
        default:
            if (v.size()) put_bytes(out, v.raw_data(), v.size() * value_type_size(v.array_type()));
    }
}

void put_value(std::vector<uint8_t>& out, const Value& v) {
    put<uint32_t>(out, static_cast<uint32_t>(v.type()));
    switch (v.type()) {
        case ValueType::String: put_string(out, v.get<std::string_view>()); break;
        case ValueType::Array: put_array_body(out, v); break;
        case ValueType::UInt8: put(out, v.get<uint8_t>()); break;
        case ValueType::Int8: put(out, v.get<int8_t>()); break;
        case ValueType::UInt16: put(out, v.get<uint16_t>()); break;
        case ValueType::Int16: put(out, v.get<int16_t>()); break;
        case ValueType::UInt32: put(out, v.get<uint32_t>()); break;
        case ValueType::Int32: put(out, v.get<int32_t>()); break;
        case ValueType::Float32: put(out, v.get<float>()); break;
        case ValueType::Bool: put<uint8_t>(out, v.get<bool>() ? 1 : 0); break;
        case ValueType::UInt64: put(out, v.get<uint64_t>()); break;
        case ValueType::Int64: put(out, v.get<int64_t>()); break;
        case ValueType::Float64: put(out, v.get<double>()); break;
    }
}

uint64_t pad_to(uint64_t n, uint64_t a) { return (a - n % a) % a; }
}  // namespace

struct Writer::Impl {
    struct Tensor {
        std::string name;
        TensorType type;
        std::vector<int64_t> shape;
        const uint8_t* data;
        uint64_t n_bytes;
        std::shared_ptr<std::vector<uint8_t>> owned;
    };
    std::vector<KeyValue> kvs;
    std::vector<Tensor> tensors;
    uint64_t alignment = 32;

    // Header, metadata, tensor infos and the padding before the data section.
    std::vector<uint8_t> header() const {
        std::vector<uint8_t> out;
        put_bytes(out, "GGUF", 4);
        put<uint32_t>(out, 3);
        put<uint64_t>(out, tensors.size());
        put<uint64_t>(out, kvs.size());
        for (const KeyValue& kv : kvs) {
            put_string(out, kv.key);
            put_value(out, kv.value);
        }
        uint64_t offset = 0;
        for (const Tensor& t : tensors) {
            put_string(out, t.name);
            put<uint32_t>(out, static_cast<uint32_t>(t.shape.size()));
            for (int64_t d : t.shape) put<uint64_t>(out, static_cast<uint64_t>(d));
            put<uint32_t>(out, static_cast<uint32_t>(t.type));
            put<uint64_t>(out, offset);
            offset += t.n_bytes + pad_to(t.n_bytes, alignment);
        }
        out.resize(out.size() + pad_to(out.size(), alignment), 0);
        return out;
    }
};

Writer::Writer() : impl_(std::make_unique<Impl>()) {}
Writer::~Writer() = default;
Writer::Writer(Writer&&) noexcept = default;
Writer& Writer::operator=(Writer&&) noexcept = default;

void Writer::set(const std::string& key, Value value) {
    if (key.empty()) throw Error(ErrorCode::InvalidArgument, "gguf::Writer::set: the key is empty");
    if (key == "general.alignment") {
        if (value.type() != ValueType::UInt32)
            throw Error(ErrorCode::InvalidArgument,
                        fmt::format("gguf::Writer::set: general.alignment must be uint32, not {}", value.type_name()));
        const uint32_t a = value.get<uint32_t>();
        if (a == 0 || (a & (a - 1)) != 0)
            throw Error(ErrorCode::InvalidArgument,
                        fmt::format("gguf::Writer::set: general.alignment must be a power of two, not {}", a));
        impl_->alignment = a;
    }
    for (KeyValue& kv : impl_->kvs)
        if (kv.key == key) {
            kv.value = std::move(value);
            return;
        }
    impl_->kvs.push_back({key, std::move(value)});
}

void Writer::remove(const std::string& key) {
    auto& kvs = impl_->kvs;
    for (auto it = kvs.begin(); it != kvs.end(); ++it)
        if (it->key == key) {
            kvs.erase(it);
            if (key == "general.alignment") impl_->alignment = 32;
            return;
        }
}

void Writer::add_tensor(const std::string& name, TensorType type, std::vector<int64_t> shape, const void* data,
                        uint64_t n_bytes) {
    auto bad = [&](const std::string& why) {
        return Error(ErrorCode::InvalidArgument, fmt::format("gguf::Writer::add_tensor('{}'): {}", name, why));
    };
    if (name.empty() || name.size() > kMaxTensorName)
        throw bad(fmt::format("the name must be 1..{} bytes long", kMaxTensorName));
    for (const auto& t : impl_->tensors)
        if (t.name == name) throw bad("a tensor of this name was already added");
    if (shape.empty() || shape.size() > 4) throw bad(fmt::format("{} dimensions; GGUF allows 1..4", shape.size()));
    uint64_t n = 1;
    for (int64_t d : shape) {
        if (d < 0) throw bad(fmt::format("dimension {} is negative", d));
        if (d != 0 && n > static_cast<uint64_t>(INT64_MAX) / static_cast<uint64_t>(d))
            throw bad("the element count overflows");
        n *= static_cast<uint64_t>(d);
    }
    const TypeInfo& ti = type_info(type);
    if (shape[0] % ti.block_size != 0)
        throw bad(fmt::format("row length {} is not a multiple of the {} block size {}", shape[0], ti.name, ti.block_size));
    const auto need = row_bytes(type, n);
    if (!need || *need != n_bytes)
        throw bad(fmt::format("{} bytes given, but {} elements of {} take {}", n_bytes, n, ti.name, need ? *need : 0));
    if (data == nullptr && n_bytes != 0) throw bad("data is null");
    impl_->tensors.push_back({name, type, std::move(shape), static_cast<const uint8_t*>(data), n_bytes, nullptr});
}

void Writer::add_tensor(const std::string& name, TensorType type, std::vector<int64_t> shape, std::vector<uint8_t> bytes) {
    auto owned = std::make_shared<std::vector<uint8_t>>(std::move(bytes));
    add_tensor(name, type, std::move(shape), owned->data(), owned->size());
    impl_->tensors.back().owned = std::move(owned);
}

uint64_t Writer::alignment() const noexcept { return impl_->alignment; }

std::vector<uint8_t> Writer::serialize() const {
    std::vector<uint8_t> out = impl_->header();
    for (const auto& t : impl_->tensors) {
        put_bytes(out, t.data, t.n_bytes);
        out.resize(out.size() + pad_to(t.n_bytes, impl_->alignment), 0);
    }
    return out;
}

namespace {

// Removes PATH.tmp.PID files that a process killed while writing PATH left
// behind. Only files this writer could have made (a regular file, not a link,
// named with the decimal PID as fmt writes it) whose PID no longer runs here,
// and that no writer holds: a writer keeps an exclusive flock on its temp file
// until the rename, so a live writer whose PID this process cannot see (another
// PID namespace, another host) keeps its file too.
void remove_stale_temps(const std::string& path) {
    namespace fs = std::filesystem;
    std::error_code ec;
    const fs::path p(path);
    const fs::path dir = p.has_parent_path() ? p.parent_path() : fs::path(".");
    const std::string prefix = p.filename().string() + ".tmp.";
    fs::directory_iterator it(dir, ec);
    for (const fs::directory_iterator end; !ec && it != end; it.increment(ec)) {
        const std::string name = it->path().filename().string();
        if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) continue;
        std::string digits = name.substr(prefix.size());  // PID, or PID.N (write's second choice)
        if (const size_t dot = digits.find('.'); dot != std::string::npos) {
            const std::string n = digits.substr(dot + 1);
            if (n.empty() || n.size() > 3 || n[0] == '0' || n.find_first_not_of("0123456789") != std::string::npos)
                continue;
            digits.resize(dot);
        }
        if (digits.empty() || digits.size() > 9 || digits[0] == '0' ||
            digits.find_first_not_of("0123456789") != std::string::npos)
            continue;
        const pid_t pid = static_cast<pid_t>(std::stol(digits));
        if (pid == ::getpid() || ::kill(pid, 0) == 0 || errno != ESRCH) continue;
        std::error_code st_ec;
        if (!fs::is_regular_file(it->symlink_status(st_ec)) || st_ec) continue;
        const int fd = ::open(it->path().c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0) continue;
        if (::flock(fd, LOCK_EX | LOCK_NB) == 0) {
            std::error_code rm_ec;  // a file that cannot be removed is left; the others still go
            fs::remove(it->path(), rm_ec);
        }
        ::close(fd);
    }
}

}  // namespace

void Writer::write(const std::string& path) const {
    remove_stale_temps(path);
    // a new file, never one that is there (O_EXCL: not a stale file of a dead process
    // that had this PID, nor a link planted to be written through): PATH.tmp.PID,
    // else PATH.tmp.PID.1, ...
    std::string tmp;
    int fd = -1;
    for (int k = 0; k < 100 && fd < 0; ++k) {
        tmp = k == 0 ? fmt::format("{}.tmp.{}", path, ::getpid()) : fmt::format("{}.tmp.{}.{}", path, ::getpid(), k);
        fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd < 0 && errno != EEXIST) break;
    }
    std::FILE* f = fd >= 0 ? ::fdopen(fd, "wb") : nullptr;
    if (!f) {
        const int err = errno;
        if (fd >= 0) ::close(fd);
        throw Error(ErrorCode::Io, fmt::format("cannot create '{}': {}; check that the folder exists and is writable", tmp,
                                               std::strerror(err)));
    }
    // held until the file is closed after its rename: remove_stale_temps of another
    // writer leaves a file that is locked (best effort: a file system without flock
    // still has the PID check)
    (void)::flock(fileno(f), LOCK_EX | LOCK_NB);
    const std::vector<uint8_t> zeros(impl_->alignment, 0);
    bool ok = true;
    auto write_all = [&](const void* p, size_t n) {
        if (ok && n && std::fwrite(p, 1, n, f) != n) ok = false;
    };
    const std::vector<uint8_t> head = impl_->header();
    write_all(head.data(), head.size());
    for (const auto& t : impl_->tensors) {
        write_all(t.data, t.n_bytes);
        write_all(zeros.data(), pad_to(t.n_bytes, impl_->alignment));
    }
    const int write_errno = errno;
    if (std::fclose(f) != 0) ok = false;
    if (!ok) {
        std::remove(tmp.c_str());
        throw Error(ErrorCode::Io, fmt::format("writing '{}' failed: {}; check free disk space", tmp, std::strerror(write_errno)));
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0) {
        const int err = errno;
        std::remove(tmp.c_str());
        throw Error(ErrorCode::Io, fmt::format("cannot rename '{}' to '{}': {}", tmp, path, std::strerror(err)));
    }
}

}  // namespace ember::gguf
