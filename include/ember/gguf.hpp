// GGUF files: a validating, zero-copy reader and a writer.
//
// A GGUF file is: header (magic "GGUF", version, tensor count, metadata count),
// metadata key/value pairs, tensor infos (name, shape, type, offset), padding
// to `general.alignment`, then the tensor data section. The reader maps the
// file read-only (or, on request, reads it into memory) and checks every count,
// length and offset against the file size before use; values and tensor data
// are views into the mapping, valid for as long as the File (or a copy of it)
// lives. A mapped file must not be truncated or rewritten in place while any
// File of it lives (a read of a vanished page is SIGBUS): replace it by writing
// a new file and renaming it over the old one.
//
//   auto f = ember::gguf::File::open("model.gguf");
//   uint32_t n_layer = f.get<uint32_t>("llama.block_count");
//   const auto& t = f.tensor("token_embd.weight");   // t.data -> mapped bytes
#pragma once

#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "ember/error.hpp"
#include "ember/export.hpp"
#include "ember/types.hpp"

namespace ember::gguf {

// Metadata value types; the numbers are the ones stored in the file.
enum class ValueType : uint32_t {
    UInt8 = 0,
    Int8 = 1,
    UInt16 = 2,
    Int16 = 3,
    UInt32 = 4,
    Int32 = 5,
    Float32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    UInt64 = 10,
    Int64 = 11,
    Float64 = 12,
};

// "uint32", "string", "array", ...; "invalid" for numbers outside the list.
EMBER_API const char* value_type_name(ValueType type) noexcept;
// Size in bytes of one scalar of this type; 0 for String and Array.
EMBER_API size_t value_type_size(ValueType type) noexcept;

namespace detail {
template <class T> constexpr ValueType value_type_of() {
    if constexpr (std::is_same_v<T, uint8_t>) return ValueType::UInt8;
    else if constexpr (std::is_same_v<T, int8_t>) return ValueType::Int8;
    else if constexpr (std::is_same_v<T, uint16_t>) return ValueType::UInt16;
    else if constexpr (std::is_same_v<T, int16_t>) return ValueType::Int16;
    else if constexpr (std::is_same_v<T, uint32_t>) return ValueType::UInt32;
    else if constexpr (std::is_same_v<T, int32_t>) return ValueType::Int32;
    else if constexpr (std::is_same_v<T, float>) return ValueType::Float32;
    else if constexpr (std::is_same_v<T, bool>) return ValueType::Bool;
    else if constexpr (std::is_same_v<T, std::string> || std::is_same_v<T, std::string_view>) return ValueType::String;
    else if constexpr (std::is_same_v<T, uint64_t>) return ValueType::UInt64;
    else if constexpr (std::is_same_v<T, int64_t>) return ValueType::Int64;
    else if constexpr (std::is_same_v<T, double>) return ValueType::Float64;
    else static_assert(sizeof(T) == 0, "not a GGUF metadata type");
}
template <class T> constexpr bool is_scalar_v = !std::is_same_v<T, std::string> && !std::is_same_v<T, std::string_view>;
}  // namespace detail

// One metadata value: a scalar, a string, or an array of any of these
// (arrays of arrays included). Values read from a File point into its mapping;
// values built with the constructors own their storage. Copies are cheap.
class EMBER_API Value {
public:
    Value();  // uint8 0
    explicit Value(uint8_t v);
    explicit Value(int8_t v);
    explicit Value(uint16_t v);
    explicit Value(int16_t v);
    explicit Value(uint32_t v);
    explicit Value(int32_t v);
    explicit Value(float v);
    explicit Value(bool v);
    explicit Value(uint64_t v);
    explicit Value(int64_t v);
    explicit Value(double v);
    explicit Value(std::string_view s);
    explicit Value(const char* s) : Value(std::string_view(s)) {}
    explicit Value(const std::string& s) : Value(std::string_view(s)) {}

    // Arrays. `element` must be a scalar type; bool arrays take uint8 0/1.
    static Value numeric_array(ValueType element, const void* data, uint64_t count);
    template <class T> static Value array(const std::vector<T>& v) {
        if constexpr (std::is_same_v<T, bool>) {
            std::vector<uint8_t> bytes(v.begin(), v.end());
            return numeric_array(ValueType::Bool, bytes.data(), bytes.size());
        } else {
            return numeric_array(detail::value_type_of<T>(), v.data(), v.size());
        }
    }
    static Value array(const std::vector<std::string>& v);
    static Value array(const std::vector<std::string_view>& v);
    static Value array(const std::vector<Value>& v);  // all elements must share one type

    ValueType type() const noexcept { return type_; }
    bool is_array() const noexcept { return type_ == ValueType::Array; }
    // Element type of an array (meaningless for scalars).
    ValueType array_type() const noexcept { return elem_; }
    // Number of elements of an array; 1 for a scalar or a string.
    uint64_t size() const noexcept;
    // "uint32", "string", "array[string]", "array[array]".
    std::string type_name() const;

    // The scalar or string, which must be exactly of type T (no conversions):
    // get<uint32_t>(), get<float>(), get<std::string_view>(), get<std::string>().
    template <class T> T get() const {
        check_type(detail::value_type_of<T>());
        if constexpr (detail::is_scalar_v<T>) {
            T out;
            std::memcpy(&out, &bits_, sizeof(T));
            return out;
        } else {
            return T(str_);
        }
    }

    // Element i of a numeric or bool array whose element type is exactly T.
    template <class T> T at(uint64_t i) const {
        static_assert(detail::is_scalar_v<T>, "use string_at() for strings");
        check_element(detail::value_type_of<T>(), i);
        T out;
        std::memcpy(&out, raw_ + i * sizeof(T), sizeof(T));  // arrays in files are unaligned
        return out;
    }
    std::string_view string_at(uint64_t i) const;  // array of strings
    const Value& array_at(uint64_t i) const;       // array of arrays

    // The whole array as a vector (a copy); T must match the element type.
    template <class T> std::vector<T> to_vector() const {
        if constexpr (detail::is_scalar_v<T>) {
            check_element(detail::value_type_of<T>(), 0, /*allow_empty=*/true);
            std::vector<T> out(count_);
            if constexpr (std::is_same_v<T, bool>) {
                for (uint64_t i = 0; i < count_; ++i) out[i] = raw_[i] != 0;
            } else if (count_) {
                std::memcpy(out.data(), raw_, count_ * sizeof(T));
            }
            return out;
        } else {
            check_element(ValueType::String, 0, /*allow_empty=*/true);
            return std::vector<T>(strings_.begin(), strings_.end());
        }
    }
    // Array of strings as views (no copy).
    std::span<const std::string_view> strings() const;
    // Raw little-endian bytes of a numeric array (size() * element size).
    const uint8_t* raw_data() const noexcept { return raw_; }

    // Identical type and contents (floats compared bit for bit).
    bool operator==(const Value& other) const;

private:
    friend class File;
    friend class Parser;
    void check_type(ValueType want) const;
    void check_element(ValueType want, uint64_t i, bool allow_empty = false) const;

    ValueType type_ = ValueType::UInt8;
    ValueType elem_ = ValueType::UInt8;    // arrays: element type
    uint64_t bits_ = 0;                    // scalars: the value's bytes
    std::string_view str_;                 // strings
    const uint8_t* raw_ = nullptr;         // numeric arrays: count_ packed elements
    uint64_t count_ = 0;                   // arrays: element count
    std::vector<std::string_view> strings_;  // arrays of strings
    std::vector<Value> items_;             // arrays of arrays
    std::shared_ptr<const void> owned_;    // storage of constructed values
};

struct KeyValue {
    std::string key;
    Value value;
};

// One tensor as described by the file. Shapes are in ggml order: shape[0] is
// the row length (the fastest-varying dimension).
struct TensorInfo {
    std::string name;
    TensorType type = TensorType::F32;
    std::vector<int64_t> shape;  // 1..4 dimensions
    uint64_t n_elements = 0;
    uint64_t offset = 0;         // relative to the data section, as stored
    uint64_t file_offset = 0;    // absolute byte offset in the file
    uint64_t n_bytes = 0;
    const uint8_t* data = nullptr;  // read-only, inside the mapping
};

// An opened GGUF file. Cheap to copy; copies share the mapping.
class EMBER_API File {
public:
    // Maps `path` read-only and validates the whole header, metadata and
    // tensor table. Throws ember::Error naming the file, field and byte offset.
    static File open(const std::string& path);
    // use_mmap false: the whole file is read into anonymous memory instead of
    // mapped (as much memory as the file's size; the file may then change
    // without harm); OutOfMemory naming the bytes when it does not fit.
    // use_mmap true is open(path).
    static File open(const std::string& path, bool use_mmap);
    // Parses a GGUF image in memory. The bytes are borrowed: they must outlive
    // the File. `name` is used in error messages.
    static File parse(const void* data, size_t size, const std::string& name = "<memory>");

    uint32_t version() const noexcept;
    const std::string& path() const noexcept;
    uint64_t file_size() const noexcept;
    uint64_t alignment() const noexcept;
    // Absolute offset where the tensor data section starts.
    uint64_t data_offset() const noexcept;

    // Metadata in file order.
    const std::vector<KeyValue>& metadata() const noexcept;
    const Value* find(std::string_view key) const noexcept;
    bool has(std::string_view key) const noexcept { return find(key) != nullptr; }
    // Throws NotFound naming the key and the file.
    const Value& at(std::string_view key) const;
    // Throws NotFound when missing, TypeMismatch naming the type found.
    const Value& at(std::string_view key, ValueType want) const;

    template <class T> T get(std::string_view key) const {
        return at(key, detail::value_type_of<T>()).template get<T>();
    }
    template <class T> T get_or(std::string_view key, T fallback) const {
        if (!has(key)) return fallback;
        return get<T>(key);
    }
    // An array whose elements are of type T (std::string for strings).
    template <class T> std::vector<T> get_array(std::string_view key) const {
        const Value& v = at(key, ValueType::Array);
        check_array_type(key, v, detail::value_type_of<T>());
        return v.template to_vector<T>();
    }

    const std::vector<TensorInfo>& tensors() const noexcept;
    const TensorInfo* find_tensor(std::string_view name) const noexcept;
    const TensorInfo& tensor(std::string_view name) const;  // throws NotFound

private:
    friend class Parser;
    struct Impl;
    explicit File(std::shared_ptr<const Impl> impl);
    void check_array_type(std::string_view key, const Value& v, ValueType want) const;
    std::shared_ptr<const Impl> impl_;
};

// Builds a GGUF v3 file: metadata in insertion order, then tensors in
// insertion order, each aligned to `general.alignment` (32 unless set).
class EMBER_API Writer {
public:
    Writer();
    ~Writer();
    Writer(Writer&&) noexcept;
    Writer& operator=(Writer&&) noexcept;

    // Adds a key, or replaces its value in place. `general.alignment` must be
    // a uint32 power of two; it sets the alignment used for the data.
    void set(const std::string& key, Value value);
    void remove(const std::string& key);

    // Adds a tensor. `data` must hold exactly the bytes its type and shape
    // need and is borrowed: it must stay valid until write()/serialize().
    void add_tensor(const std::string& name, TensorType type, std::vector<int64_t> shape,
                    const void* data, uint64_t n_bytes);
    // Same, but the writer keeps the bytes.
    void add_tensor(const std::string& name, TensorType type, std::vector<int64_t> shape,
                    std::vector<uint8_t> bytes);

    uint64_t alignment() const noexcept;
    // The whole file in memory.
    std::vector<uint8_t> serialize() const;
    // Writes to a temporary file next to `path`, then renames it into place.
    void write(const std::string& path) const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace ember::gguf
