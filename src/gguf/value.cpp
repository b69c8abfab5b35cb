// gguf::Value: construction of owned values and checked access.
#include <bit>
#include <cstring>

#include <fmt/format.h>

#include "ember/gguf.hpp"

namespace ember::gguf {

static_assert(std::endian::native == std::endian::little, "ember reads GGUF in place and needs a little-endian host");

const char* value_type_name(ValueType type) noexcept {
    switch (type) {
        case ValueType::UInt8: return "uint8";
        case ValueType::Int8: return "int8";
        case ValueType::UInt16: return "uint16";
        case ValueType::Int16: return "int16";
        case ValueType::UInt32: return "uint32";
        case ValueType::Int32: return "int32";
        case ValueType::Float32: return "float32";
        case ValueType::Bool: return "bool";
        case ValueType::String: return "string";
        case ValueType::Array: return "array";
        case ValueType::UInt64: return "uint64";
        case ValueType::Int64: return "int64";
        case ValueType::Float64: return "float64";
    }
    return "invalid";
}

size_t value_type_size(ValueType type) noexcept {
    switch (type) {
        case ValueType::UInt8:
        case ValueType::Int8:
        case ValueType::Bool: return 1;
        case ValueType::UInt16:
        case ValueType::Int16: return 2;
        case ValueType::UInt32:
        case ValueType::Int32:
        case ValueType::Float32: return 4;
        case ValueType::UInt64:
        case ValueType::Int64:
        case ValueType::Float64: return 8;
        case ValueType::String:
        case ValueType::Array: return 0;
    }
    return 0;
}

namespace {
template <class T> uint64_t bits_of(T v) {
    uint64_t b = 0;
    std::memcpy(&b, &v, sizeof(T));
    return b;
}
}  // namespace

Value::Value() = default;
Value::Value(uint8_t v) : type_(ValueType::UInt8), bits_(bits_of(v)) {}
Value::Value(int8_t v) : type_(ValueType::Int8), bits_(bits_of(v)) {}
Value::Value(uint16_t v) : type_(ValueType::UInt16), bits_(bits_of(v)) {}
Value::Value(int16_t v) : type_(ValueType::Int16), bits_(bits_of(v)) {}
Value::Value(uint32_t v) : type_(ValueType::UInt32), bits_(bits_of(v)) {}
Value::Value(int32_t v) : type_(ValueType::Int32), bits_(bits_of(v)) {}
Value::Value(float v) : type_(ValueType::Float32), bits_(bits_of(v)) {}
Value::Value(bool v) : type_(ValueType::Bool), bits_(v ? 1 : 0) {}
Value::Value(uint64_t v) : type_(ValueType::UInt64), bits_(v) {}
Value::Value(int64_t v) : type_(ValueType::Int64), bits_(bits_of(v)) {}
Value::Value(double v) : type_(ValueType::Float64), bits_(bits_of(v)) {}
Value::Value(std::string_view s) : type_(ValueType::String) {
    auto owned = std::make_shared<std::string>(s);
    str_ = *owned;
    owned_ = std::move(owned);
}

Value Value::numeric_array(ValueType element, const void* data, uint64_t count) {
    const size_t es = value_type_size(element);
    if (es == 0)
        throw Error(ErrorCode::InvalidArgument,
                    fmt::format("gguf::Value::numeric_array: element type {} is not a scalar type; use the "
                                "string or array overloads",
                                value_type_name(element)));
    if (element == ValueType::Bool)
        for (uint64_t i = 0; i < count; ++i)
            if (static_cast<const uint8_t*>(data)[i] > 1)
                throw Error(ErrorCode::InvalidArgument,
                            fmt::format("gguf::Value::numeric_array: bool element {} is {}, not 0 or 1", i,
                                        static_cast<const uint8_t*>(data)[i]));
    Value v;
    v.type_ = ValueType::Array;
    v.elem_ = element;
    v.count_ = count;
    auto owned = std::make_shared<std::vector<uint8_t>>(static_cast<const uint8_t*>(data),
                                                        static_cast<const uint8_t*>(data) + count * es);
    v.raw_ = owned->data();
    v.owned_ = std::move(owned);
    return v;
}

Value Value::array(const std::vector<std::string_view>& items) {
    // one buffer holds all the bytes; the views point into it
    size_t total = 0;
    for (auto s : items) total += s.size();
    auto owned = std::make_shared<std::string>();
    owned->reserve(total);
    for (auto s : items) owned->append(s);
    Value v;
    v.type_ = ValueType::Array;
    v.elem_ = ValueType::String;
    v.count_ = items.size();
    v.strings_.reserve(items.size());
    size_t pos = 0;
    for (auto s : items) {
        v.strings_.emplace_back(owned->data() + pos, s.size());
        pos += s.size();
    }
    v.owned_ = std::move(owned);
    return v;
}

Value Value::array(const std::vector<std::string>& items) {
    return array(std::vector<std::string_view>(items.begin(), items.end()));
}

Value Value::array(const std::vector<Value>& items) {
    Value v;
    v.type_ = ValueType::Array;
    v.elem_ = items.empty() ? ValueType::Array : items[0].type();
    for (const Value& item : items)
        if (item.type() != ValueType::Array || v.elem_ != ValueType::Array)
            throw Error(ErrorCode::InvalidArgument,
                        "gguf::Value::array(vector<Value>) builds arrays of arrays; every element must be an "
                        "array (use the typed overloads for scalars and strings)");
    v.elem_ = ValueType::Array;
    v.count_ = items.size();
    v.items_ = items;
    return v;
}

uint64_t Value::size() const noexcept { return type_ == ValueType::Array ? count_ : 1; }

std::string Value::type_name() const {
    if (type_ != ValueType::Array) return value_type_name(type_);
    return fmt::format("array[{}]", value_type_name(elem_));
}

void Value::check_type(ValueType want) const {
    if (type_ != want)
        throw Error(ErrorCode::TypeMismatch,
                    fmt::format("GGUF value is {}, not {}", type_name(), value_type_name(want)));
}

void Value::check_element(ValueType want, uint64_t i, bool allow_empty) const {
    if (type_ != ValueType::Array || elem_ != want)
        throw Error(ErrorCode::TypeMismatch,
                    fmt::format("GGUF value is {}, not array[{}]", type_name(), value_type_name(want)));
    if (i >= count_ && !(allow_empty && i == 0))
        throw Error(ErrorCode::InvalidArgument,
                    fmt::format("GGUF array index {} is out of range (the array has {} elements)", i, count_));
}

std::string_view Value::string_at(uint64_t i) const {
    check_element(ValueType::String, i);
    return strings_[i];
}

const Value& Value::array_at(uint64_t i) const {
    check_element(ValueType::Array, i);
    return items_[i];
}

std::span<const std::string_view> Value::strings() const {
    check_element(ValueType::String, 0, true);
    return strings_;
}

bool Value::operator==(const Value& o) const {
    if (type_ != o.type_) return false;
    switch (type_) {
        case ValueType::String: return str_ == o.str_;
        case ValueType::Array:
            if (elem_ != o.elem_ || count_ != o.count_) return false;
            if (elem_ == ValueType::String) return strings_ == o.strings_;
            if (elem_ == ValueType::Array) return items_ == o.items_;
            return count_ == 0 || std::memcmp(raw_, o.raw_, count_ * value_type_size(elem_)) == 0;
        default: return bits_ == o.bits_;
    }
}

}  // namespace ember::gguf
