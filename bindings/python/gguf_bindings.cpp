// ember.GGUFFile: the GGUF reader and the reference dequantization, for
// scripts that want to look inside a model file; and the conversion of GGUF
// metadata values to Python objects (also behind ember.Model.metadata).
#include <cstring>
#include <filesystem>

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <pybind11/stl/filesystem.h>

#include "bindings.hpp"
#include "ember/ember.hpp"

namespace py = pybind11;
using ember::gguf::Value;
using ember::gguf::ValueType;

namespace {

py::object scalar(const Value& v) {
    switch (v.type()) {
        case ValueType::UInt8: return py::int_(v.get<uint8_t>());
        case ValueType::Int8: return py::int_(v.get<int8_t>());
        case ValueType::UInt16: return py::int_(v.get<uint16_t>());
        case ValueType::Int16: return py::int_(v.get<int16_t>());
        case ValueType::UInt32: return py::int_(v.get<uint32_t>());
        case ValueType::Int32: return py::int_(v.get<int32_t>());
        case ValueType::Float32: return py::float_(v.get<float>());
        case ValueType::Bool: return py::bool_(v.get<bool>());
        case ValueType::UInt64: return py::int_(v.get<uint64_t>());
        case ValueType::Int64: return py::int_(v.get<int64_t>());
        case ValueType::Float64: return py::float_(v.get<double>());
        case ValueType::String: {
            const auto s = v.get<std::string_view>();
            return py::reinterpret_steal<py::object>(PyUnicode_DecodeUTF8(s.data(), s.size(), "replace"));
        }
        default: return py::none();
    }
}

template <class T> py::array numeric(const Value& v) {
    // shape and strides spelled out: the single-count constructor gave stride 0 here
    py::array_t<T> a(std::vector<py::ssize_t>{static_cast<py::ssize_t>(v.size())},
                     std::vector<py::ssize_t>{static_cast<py::ssize_t>(sizeof(T))});
    if (v.size()) std::memcpy(a.mutable_data(), v.raw_data(), v.size() * sizeof(T));
    return a;
}

// Arrays of numbers become NumPy arrays; arrays of strings and arrays become lists.
py::object to_python(const Value& v) {
    if (!v.is_array()) return scalar(v);
    switch (v.array_type()) {
        case ValueType::UInt8: return numeric<uint8_t>(v);
        case ValueType::Int8: return numeric<int8_t>(v);
        case ValueType::UInt16: return numeric<uint16_t>(v);
        case ValueType::Int16: return numeric<int16_t>(v);
        case ValueType::UInt32: return numeric<uint32_t>(v);
        case ValueType::Int32: return numeric<int32_t>(v);
        case ValueType::Float32: return numeric<float>(v);
        case ValueType::Bool: return numeric<bool>(v);
        case ValueType::UInt64: return numeric<uint64_t>(v);
        case ValueType::Int64: return numeric<int64_t>(v);
        case ValueType::Float64: return numeric<double>(v);
        case ValueType::String: {
            py::list out;
            for (auto s : v.strings())
                out.append(py::reinterpret_steal<py::object>(PyUnicode_DecodeUTF8(s.data(), s.size(), "replace")));
            return out;
        }
        case ValueType::Array: {
            py::list out;
            for (uint64_t i = 0; i < v.size(); ++i) out.append(to_python(v.array_at(i)));
            return out;
        }
        default: return py::none();
    }
}

}  // namespace

namespace ember_py {

py::dict metadata_dict(const ember::gguf::File& f) {
    py::dict d;
    for (const auto& kv : f.metadata()) d[py::str(kv.key)] = to_python(kv.value);
    return d;
}

void bind_gguf(py::module_& m) {
    py::class_<ember::gguf::File>(m, "GGUFFile", "A GGUF file, mapped read-only and validated.")
        .def(py::init([](const std::filesystem::path& path) { return ember::gguf::File::open(path.string()); }),
             py::arg("path"),
             "Opens and validates the GGUF file at `path` (str or os.PathLike); raises an ember.Error "
             "subclass naming the problem (e.g. NotFoundError, InvalidFileError).")
        .def_property_readonly("version", &ember::gguf::File::version, "The GGUF format version (2 or 3).")
        .def_property_readonly("path", &ember::gguf::File::path, "The path the file was opened with.")
        .def_property_readonly("alignment", &ember::gguf::File::alignment, "The alignment of tensor data in bytes.")
        .def_property_readonly("data_offset", &ember::gguf::File::data_offset,
                               "The byte offset of the tensor data section.")
        .def_property_readonly(
            "metadata",
            &metadata_dict,
            "Every metadata key and value, in file order (numeric arrays as NumPy arrays).")
        .def_property_readonly(
            "metadata_types",
            [](const ember::gguf::File& f) {
                py::dict d;
                for (const auto& kv : f.metadata()) d[py::str(kv.key)] = kv.value.type_name();
                return d;
            },
            "The GGUF type of every metadata value, e.g. 'uint32' or 'array[string]'.")
        .def_property_readonly(
            "tensors",
            [](const ember::gguf::File& f) {
                py::list out;
                for (const auto& t : f.tensors()) {
                    py::dict d;
                    d["name"] = t.name;
                    d["type"] = ember::type_info(t.type).name;
                    d["shape"] = t.shape;
                    d["offset"] = t.file_offset;
                    d["bytes"] = t.n_bytes;
                    out.append(d);
                }
                return out;
            },
            "One dict per tensor: name, type, shape (ggml order), offset, bytes.")
        .def(
            "dequantize",
            [](const ember::gguf::File& f, const std::string& name) {
                const auto& t = f.tensor(name);
                py::array_t<float> out(std::vector<py::ssize_t>{static_cast<py::ssize_t>(t.n_elements)},
                                       std::vector<py::ssize_t>{static_cast<py::ssize_t>(sizeof(float))});
                float* dst = out.mutable_data();
                {
                    py::gil_scoped_release release;  // rows are contiguous: one call decodes the whole tensor
                    ember::dequantize_row(t.type, t.data, dst, static_cast<int64_t>(t.n_elements));
                }
                std::vector<py::ssize_t> shape(t.shape.rbegin(), t.shape.rend());  // NumPy order
                return out.reshape(shape);
            },
            py::arg("name"), "The tensor as float32, shaped in NumPy order (reversed ggml shape).");
}

}  // namespace ember_py
