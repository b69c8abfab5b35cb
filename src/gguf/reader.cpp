// The GGUF reader: parses and validates a mapped (or borrowed) GGUF image.
//
// Every count, length and offset is checked against the bytes that remain
// before it is used, so a hostile file can neither make us read past the
// mapping nor allocate more than a small multiple of its own size. Errors name
// the file, the field and its byte offset.
#include <algorithm>
#include <limits>
#include <new>
#include <numeric>
#include <unordered_map>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "ember/gguf.hpp"
#include "gguf/mapped_file.hpp"

namespace ember::gguf {

namespace {
constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as little-endian uint32
constexpr uint64_t kDefaultAlignment = 32;
constexpr size_t kMaxTensorName = 63;    // ggml's GGML_MAX_NAME (64) with its terminator
constexpr uint32_t kMaxDims = 4;         // ggml's GGML_MAX_DIMS
constexpr int kMaxArrayDepth = 8;        // arrays of arrays nested deeper are refused
constexpr const char* kCorruptHint = "the file is truncated or corrupt; download or convert it again";

// A key or name from the file made safe for a message: control bytes escaped, cut at 80 bytes.
std::string printable(std::string_view s) {
    std::string out;
    for (size_t i = 0; i < s.size() && i < 80; ++i) {
        const unsigned char c = static_cast<unsigned char>(s[i]);
        if (c < 0x20 || c == 0x7F) out += fmt::format("\\x{:02x}", c);
        else out += static_cast<char>(c);
    }
    if (s.size() > 80) out += fmt::format("...({} bytes)", s.size());
    return out;
}
}  // namespace

struct File::Impl {
    std::string path;
    std::shared_ptr<MappedFile> map;  // null when parsing borrowed memory
    const uint8_t* base = nullptr;
    uint64_t size = 0;
    uint32_t version = 0;
    uint64_t alignment = kDefaultAlignment;
    uint64_t data_offset = 0;
    std::vector<KeyValue> kvs;
    std::unordered_map<std::string_view, size_t> kv_index;  // views into kvs[i].key
    std::vector<TensorInfo> tensors;
    std::unordered_map<std::string_view, size_t> tensor_index;
};

// Reads the file front to back. `what_` describes the item being read (a key
// or tensor) so errors can say where they are.
class Parser {
public:
    explicit Parser(File::Impl& f) : f_(f) {}

    void run() {
        try {
            read_header();
            read_metadata();
            read_alignment();
            read_tensor_infos();
            place_tensor_data();
        } catch (const std::bad_alloc&) {
            // an allocation sized from the file (each is bounded by the bytes that remain, but
            // a process's memory limit can still be lower): OutOfMemory naming what was read
            fail(ErrorCode::OutOfMemory, pos_,
                 allocating_.empty() ? std::string("out of memory while reading it")
                                     : fmt::format("out of memory allocating {}", allocating_),
                 "free memory or raise the process's memory limit (ulimit -v)");
        }
    }

private:
    File::Impl& f_;
    uint64_t pos_ = 0;
    std::string what_ = "header";
    std::string allocating_;  // the large allocation under way, for an out-of-memory message

    uint64_t remaining() const { return f_.size - pos_; }

    [[noreturn]] void fail(ErrorCode code, uint64_t offset, const std::string& msg, const char* hint = kCorruptHint) const {
        throw Error(code, fmt::format("GGUF file '{}': {}, at byte offset {}: {}; {}", f_.path, what_, offset, msg, hint));
    }

    // Takes n bytes or fails naming `field`.
    const uint8_t* take(uint64_t n, const char* field) {
        if (n > remaining())
            fail(ErrorCode::InvalidFile, pos_,
                 fmt::format("{} needs {} bytes but only {} remain in the {}-byte file", field, n, remaining(), f_.size));
        const uint8_t* p = f_.base + pos_;
        pos_ += n;
        return p;
    }

    template <class T> T read(const char* field) {
        T v;
        std::memcpy(&v, take(sizeof(T), field), sizeof(T));
        return v;
    }

    std::string_view read_string(const char* field) {
        const uint64_t at = pos_;
        const uint64_t len = read<uint64_t>(field);
        if (len > remaining())
            fail(ErrorCode::InvalidFile, at,
                 fmt::format("{} has length {} but only {} bytes remain in the file", field, len, remaining()));
        return {reinterpret_cast<const char*>(take(len, field)), static_cast<size_t>(len)};
    }

    ValueType read_value_type(const char* field) {
        const uint64_t at = pos_;
        const uint32_t t = read<uint32_t>(field);
        if (t > static_cast<uint32_t>(ValueType::Float64))
            fail(ErrorCode::InvalidFile, at, fmt::format("{} is {}, which is not a GGUF value type (0..12)", field, t));
        return static_cast<ValueType>(t);
    }

    void read_header() {
        const uint32_t magic = read<uint32_t>("magic");
        if (magic != kMagic) {
            what_ = "header";
            fail(ErrorCode::InvalidFile, 0,
                 fmt::format("magic is {:02x} {:02x} {:02x} {:02x}, not \"GGUF\"", magic & 0xFF, (magic >> 8) & 0xFF,
                             (magic >> 16) & 0xFF, magic >> 24),
                 "this is not a GGUF file (pass a .gguf model)");
        }
        const uint32_t version = read<uint32_t>("version");
        const uint32_t swapped = __builtin_bswap32(version);
        if (version != 2 && version != 3) {
            if ((version & 0xFFFF) == 0 && swapped >= 1 && swapped <= 3)
                fail(ErrorCode::Unsupported, 4, fmt::format("this is a big-endian GGUF v{} file", swapped),
                     "ember reads little-endian files only; convert it with gguf-py's gguf_convert_endian.py");
            if (version == 1)
                fail(ErrorCode::Unsupported, 4, "GGUF version 1 is obsolete and not supported",
                     "convert the model again with a current converter (writes version 3)");
            fail(ErrorCode::Unsupported, 4, fmt::format("GGUF version {} is not supported (ember reads 2 and 3)", version),
                 "use a file written by a current converter");
        }
        f_.version = version;
        const uint64_t n_tensors = read<uint64_t>("tensor count");
        const uint64_t n_kv = read<uint64_t>("metadata count");
        // smallest possible entries: a key/value takes >= 8 (key length) + 4 (type) + 1 bytes,
        // a tensor info >= 8 (name length) + 4 (n_dims) + 8 (one dim) + 4 (type) + 8 (offset)
        if (n_kv > remaining() / 13)
            fail(ErrorCode::InvalidFile, 16,
                 fmt::format("metadata count {} cannot fit in the {} bytes that follow", n_kv, remaining()));
        if (n_tensors > remaining() / 32)
            fail(ErrorCode::InvalidFile, 8,
                 fmt::format("tensor count {} cannot fit in the {} bytes that follow", n_tensors, remaining()));
        allocating_ = fmt::format("the table of {} metadata entries and {} tensors", n_kv, n_tensors);
        f_.kvs.reserve(n_kv);
        f_.tensors.reserve(n_tensors);
        allocating_.clear();
        n_kv_ = n_kv;
        n_tensors_ = n_tensors;
    }

    uint64_t n_kv_ = 0, n_tensors_ = 0;

    void read_metadata() {
        for (uint64_t i = 0; i < n_kv_; ++i) {
            const uint64_t at = pos_;
            what_ = fmt::format("metadata entry #{}", i);
            std::string_view key = read_string("key");
            if (key.empty()) fail(ErrorCode::InvalidFile, at, "the key is empty");
            what_ = fmt::format("metadata key '{}'", printable(key));
            if (f_.kv_index.count(key))
                fail(ErrorCode::InvalidFile, at, "the key appears twice", "the file is corrupt; convert the model again");
            Value v;
            read_value(v, read_value_type("value type"), 0);
            f_.kvs.push_back({std::string(key), std::move(v)});
            f_.kv_index.emplace(key, i);  // temporary view into the file; rebuilt below
        }
        // point the index at the owned keys
        f_.kv_index.clear();
        for (size_t i = 0; i < f_.kvs.size(); ++i) f_.kv_index.emplace(f_.kvs[i].key, i);
    }

    void read_value(Value& v, ValueType type, int depth) {
        v.type_ = type;
        const uint64_t at = pos_;
        switch (type) {
            case ValueType::String: v.str_ = read_string("string value"); return;
            case ValueType::Array: read_array(v, depth); return;
            case ValueType::Bool: {
                const uint8_t b = read<uint8_t>("bool value");
                if (b > 1) fail(ErrorCode::InvalidFile, at, fmt::format("bool value is {}, not 0 or 1", b));
                v.bits_ = b;
                return;
            }
            default: {
                const size_t n = value_type_size(type);
                std::memcpy(&v.bits_, take(n, "value"), n);
                return;
            }
        }
    }

    void read_array(Value& v, int depth) {
        const uint64_t at = pos_;
        if (depth >= kMaxArrayDepth)
            fail(ErrorCode::Unsupported, at, fmt::format("arrays are nested more than {} deep", kMaxArrayDepth),
                 "ember refuses such files");
        v.elem_ = read_value_type("array element type");
        const uint64_t count_at = pos_;
        v.count_ = read<uint64_t>("array length");
        const uint64_t count = v.count_;
        switch (v.elem_) {
            case ValueType::String: {
                if (count > remaining() / 8)
                    fail(ErrorCode::InvalidFile, count_at,
                         fmt::format("array of {} strings cannot fit in the {} bytes that remain", count, remaining()));
                allocating_ = fmt::format("{} bytes for the views of an array of {} strings",
                                          count * sizeof(std::string_view), count);
                v.strings_.reserve(count);
                allocating_.clear();
                for (uint64_t i = 0; i < count; ++i) v.strings_.push_back(read_string("array string"));
                return;
            }
            case ValueType::Array: {
                if (count > remaining() / 12)
                    fail(ErrorCode::InvalidFile, count_at,
                         fmt::format("array of {} arrays cannot fit in the {} bytes that remain", count, remaining()));
                allocating_ = fmt::format("{} bytes for an array of {} arrays", count * sizeof(Value), count);
                v.items_.resize(count);
                allocating_.clear();
                for (uint64_t i = 0; i < count; ++i) {
                    v.items_[i].type_ = ValueType::Array;
                    read_array(v.items_[i], depth + 1);
                }
                return;
            }
            default: {
                const size_t es = value_type_size(v.elem_);
                if (count > remaining() / es)
                    fail(ErrorCode::InvalidFile, count_at,
                         fmt::format("array of {} {} values ({} bytes each) cannot fit in the {} bytes that remain",
                                     count, value_type_name(v.elem_), es, remaining()));
                v.raw_ = take(count * es, "array data");
                if (v.elem_ == ValueType::Bool)
                    for (uint64_t i = 0; i < count; ++i)
                        if (v.raw_[i] > 1)
                            fail(ErrorCode::InvalidFile, pos_ - count + i,
                                 fmt::format("bool array element {} is {}, not 0 or 1", i, v.raw_[i]));
                return;
            }
        }
    }

    void read_alignment() {
        auto it = f_.kv_index.find("general.alignment");
        if (it == f_.kv_index.end()) return;
        const Value& v = f_.kvs[it->second].value;
        what_ = "metadata key 'general.alignment'";
        if (v.type() != ValueType::UInt32)
            fail(ErrorCode::InvalidFile, 0, fmt::format("general.alignment is {}, not uint32", v.type_name()));
        const uint32_t a = v.get<uint32_t>();
        if (a == 0 || (a & (a - 1)) != 0)
            fail(ErrorCode::InvalidFile, 0, fmt::format("general.alignment is {}, not a power of two", a));
        f_.alignment = a;
    }

    void read_tensor_infos() {
        for (uint64_t i = 0; i < n_tensors_; ++i) {
            const uint64_t at = pos_;
            what_ = fmt::format("tensor info #{}", i);
            TensorInfo t;
            const std::string_view name = read_string("tensor name");
            if (name.empty()) fail(ErrorCode::InvalidFile, at, "the tensor name is empty");
            what_ = fmt::format("tensor '{}' (#{})", printable(name), i);
            if (name.size() > kMaxTensorName)
                fail(ErrorCode::InvalidFile, at,
                     fmt::format("the name is {} bytes long; GGUF tensor names are at most {}", name.size(), kMaxTensorName));
            if (f_.tensor_index.count(name))
                fail(ErrorCode::InvalidFile, at, "a tensor of this name appears twice",
                     "the file is corrupt; convert the model again");
            t.name = std::string(name);

            const uint64_t dims_at = pos_;
            const uint32_t n_dims = read<uint32_t>("dimension count");
            if (n_dims == 0 || n_dims > kMaxDims)
                fail(ErrorCode::InvalidFile, dims_at, fmt::format("dimension count is {}, not 1..{}", n_dims, kMaxDims));
            uint64_t n_elements = 1;
            bool overflow = false;
            for (uint32_t d = 0; d < n_dims; ++d) {
                const uint64_t dim_at = pos_;
                const uint64_t ne = read<uint64_t>("dimension");
                if (ne > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
                    fail(ErrorCode::InvalidFile, dim_at, fmt::format("dimension {} is {}, larger than 2^63 - 1", d, ne));
                t.shape.push_back(static_cast<int64_t>(ne));
                if (ne != 0 && n_elements > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) / ne) overflow = true;
                n_elements *= ne;
            }
            if (overflow)
                fail(ErrorCode::InvalidFile, dims_at,
                     fmt::format("the element count of shape {} overflows 2^63 - 1", fmt::join(t.shape, " x ")));
            t.n_elements = n_elements;

            const uint64_t type_at = pos_;
            const uint32_t type_id = read<uint32_t>("tensor type");
            const auto type = tensor_type_from_id(type_id);
            if (!type) {
                if (std::string_view(ggml_type_name(type_id)) == "unknown")
                    fail(ErrorCode::InvalidFile, type_at, fmt::format("type id {} is not a ggml tensor type", type_id));
                fail(ErrorCode::Unsupported, type_at,
                     fmt::format("tensor type {} (id {}) is not supported by ember", ggml_type_name(type_id), type_id),
                     "requantize the model to a supported type (F32, F16, BF16, Q4_0..Q8_0, Q2_K..Q6_K)");
            }
            t.type = *type;
            const TypeInfo& ti = type_info(t.type);
            if (t.shape[0] % ti.block_size != 0)
                fail(ErrorCode::InvalidFile, dims_at,
                     fmt::format("row length {} is not a multiple of the {} block size {}", t.shape[0], ti.name,
                                 ti.block_size));
            const auto nbytes = row_bytes(t.type, n_elements);
            if (!nbytes)
                fail(ErrorCode::InvalidFile, dims_at, fmt::format("the byte size of {} {} elements overflows", n_elements, ti.name));
            t.n_bytes = *nbytes;

            const uint64_t offset_at = pos_;
            t.offset = read<uint64_t>("data offset");
            if (t.offset % f_.alignment != 0)
                fail(ErrorCode::InvalidFile, offset_at,
                     fmt::format("data offset {} is not a multiple of the alignment {}", t.offset, f_.alignment));
            f_.tensor_index.emplace(name, i);  // view into the file for now
            f_.tensors.push_back(std::move(t));
        }
        f_.tensor_index.clear();
        for (size_t i = 0; i < f_.tensors.size(); ++i) f_.tensor_index.emplace(f_.tensors[i].name, i);
    }

    void place_tensor_data() {
        what_ = "tensor data";
        // the data section starts at the next multiple of the alignment
        const uint64_t a = f_.alignment;
        const uint64_t start = pos_ + (a - pos_ % a) % a;
        f_.data_offset = start;
        if (f_.tensors.empty()) return;  // vocab-only files may end right after the header
        if (start > f_.size)
            fail(ErrorCode::InvalidFile, pos_,
                 fmt::format("the data section would start at byte {}, past the end of the {}-byte file", start, f_.size));
        const uint64_t data_size = f_.size - start;
        std::vector<size_t> order(f_.tensors.size());
        std::iota(order.begin(), order.end(), size_t{0});
        for (TensorInfo& t : f_.tensors) {
            if (t.offset > data_size || t.n_bytes > data_size - t.offset) {
                what_ = fmt::format("tensor '{}'", printable(t.name));
                fail(ErrorCode::InvalidFile, start + std::min(t.offset, data_size),
                     fmt::format("its data ({} bytes at data offset {}) runs past the end of the file (the data section "
                                 "holds {} bytes)",
                                 t.n_bytes, t.offset, data_size));
            }
            t.file_offset = start + t.offset;
            t.data = f_.base + t.file_offset;
        }
        std::sort(order.begin(), order.end(),
                  [&](size_t x, size_t y) { return f_.tensors[x].offset < f_.tensors[y].offset; });
        for (size_t k = 1; k < order.size(); ++k) {
            const TensorInfo& prev = f_.tensors[order[k - 1]];
            const TensorInfo& next = f_.tensors[order[k]];
            if (prev.offset + prev.n_bytes > next.offset) {
                what_ = fmt::format("tensor '{}'", printable(next.name));
                fail(ErrorCode::InvalidFile, next.file_offset,
                     fmt::format("its data overlaps tensor '{}' (bytes {}..{} of the data section)", printable(prev.name), prev.offset,
                                 prev.offset + prev.n_bytes));
            }
        }
    }
};

File::File(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}

File File::open(const std::string& path) { return open(path, true); }

File File::open(const std::string& path, bool use_mmap) {
    auto impl = std::make_shared<Impl>();
    impl->path = path;
    impl->map = std::make_shared<MappedFile>(path, use_mmap);
    impl->base = impl->map->data();
    impl->size = impl->map->size();
    Parser(*impl).run();
    return File(std::move(impl));
}

File File::parse(const void* data, size_t size, const std::string& name) {
    if (data == nullptr && size != 0)
        throw Error(ErrorCode::InvalidArgument, "gguf::File::parse: data is null but size is not 0");
    auto impl = std::make_shared<Impl>();
    impl->path = name;
    static const uint8_t kEmpty = 0;
    impl->base = data ? static_cast<const uint8_t*>(data) : &kEmpty;
    impl->size = size;
    Parser(*impl).run();
    return File(std::move(impl));
}

uint32_t File::version() const noexcept { return impl_->version; }
const std::string& File::path() const noexcept { return impl_->path; }
uint64_t File::file_size() const noexcept { return impl_->size; }
uint64_t File::alignment() const noexcept { return impl_->alignment; }
uint64_t File::data_offset() const noexcept { return impl_->data_offset; }
const std::vector<KeyValue>& File::metadata() const noexcept { return impl_->kvs; }
const std::vector<TensorInfo>& File::tensors() const noexcept { return impl_->tensors; }

const Value* File::find(std::string_view key) const noexcept {
    auto it = impl_->kv_index.find(key);
    return it == impl_->kv_index.end() ? nullptr : &impl_->kvs[it->second].value;
}

const Value& File::at(std::string_view key) const {
    if (const Value* v = find(key)) return *v;
    throw Error(ErrorCode::NotFound, fmt::format("GGUF file '{}': metadata key '{}' is missing; the file may be for another "
                                                 "architecture or written by an old converter",
                                                 impl_->path, key));
}

const Value& File::at(std::string_view key, ValueType want) const {
    const Value& v = at(key);
    if (v.type() != want)
        throw Error(ErrorCode::TypeMismatch, fmt::format("GGUF file '{}': metadata key '{}' is {}, expected {}", impl_->path,
                                                         key, v.type_name(), value_type_name(want)));
    return v;
}

void File::check_array_type(std::string_view key, const Value& v, ValueType want) const {
    if (v.array_type() != want)
        throw Error(ErrorCode::TypeMismatch, fmt::format("GGUF file '{}': metadata key '{}' is {}, expected array[{}]",
                                                         impl_->path, key, v.type_name(), value_type_name(want)));
}

const TensorInfo* File::find_tensor(std::string_view name) const noexcept {
    auto it = impl_->tensor_index.find(name);
    return it == impl_->tensor_index.end() ? nullptr : &impl_->tensors[it->second];
}

const TensorInfo& File::tensor(std::string_view name) const {
    if (const TensorInfo* t = find_tensor(name)) return *t;
    throw Error(ErrorCode::NotFound,
                fmt::format("GGUF file '{}': tensor '{}' is missing; the file may be incomplete or for another model",
                            impl_->path, name));
}

}  // namespace ember::gguf
