// Python arguments -> ember types (see args.hpp).
#include "args.hpp"

#include <cmath>
#include <cstdint>
#include <limits>

namespace ember_py {
namespace {

std::string type_name(py::handle obj) { return py::str(py::type::handle_of(obj).attr("__name__")); }

[[noreturn]] void type_error(const std::string& what, const char* expected, py::handle got) {
    throw py::type_error(what + " must be " + expected + ", not " + type_name(got));
}

[[noreturn]] void invalid(const std::string& msg) { throw ember::Error(ember::ErrorCode::InvalidArgument, msg); }

// An int (or anything with __index__, such as numpy.int64), as int64; ints
// beyond int64 are reported as out of range by the callers' checks.
int64_t integer(py::handle obj, const std::string& what, bool* overflow = nullptr) {
    if (py::isinstance<py::float_>(obj) || py::isinstance<py::str>(obj)) type_error(what, "an int", obj);
    PyObject* index = PyNumber_Index(obj.ptr());
    if (!index) {
        PyErr_Clear();
        type_error(what, "an int", obj);
    }
    int over = 0;
    const long long v = PyLong_AsLongLongAndOverflow(index, &over);
    Py_DECREF(index);
    if (overflow) *overflow = over != 0;
    if (over != 0 && !overflow) invalid(what + " is " + std::string(py::str(obj)) + ": far out of range");
    return over > 0 ? std::numeric_limits<int64_t>::max() : over < 0 ? std::numeric_limits<int64_t>::min() : v;
}

int32_t int32(py::handle obj, const std::string& what) {
    const int64_t v = integer(obj, what);
    if (v < std::numeric_limits<int32_t>::min() || v > std::numeric_limits<int32_t>::max())
        invalid(what + " is " + std::to_string(v) + ": out of the 32-bit range");
    return static_cast<int32_t>(v);
}

float real(py::handle obj, const std::string& what) {
    if (py::isinstance<py::str>(obj) || !PyNumber_Check(obj.ptr()) || PyComplex_Check(obj.ptr()))
        type_error(what, "a float", obj);
    const double v = PyFloat_AsDouble(obj.ptr());
    if (v == -1.0 && PyErr_Occurred()) throw py::error_already_set();
    return static_cast<float>(v);  // NaN, inf and out-of-range values are the sampler's to refuse
}

bool boolean(py::handle obj, const std::string& what) {
    if (!py::isinstance<py::bool_>(obj)) type_error(what, "a bool", obj);
    return obj.cast<bool>();
}

}  // namespace

py::str decode(std::string_view s) {
    PyObject* u = PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), "replace");
    if (!u) throw py::error_already_set();
    return py::reinterpret_steal<py::str>(u);
}

std::string utf8(py::handle obj, const char* what) {
    if (!py::isinstance<py::str>(obj)) type_error(what, "a str", obj);
    Py_ssize_t n = 0;
    const char* p = PyUnicode_AsUTF8AndSize(obj.ptr(), &n);  // lone surrogates: UnicodeEncodeError
    if (!p) throw py::error_already_set();
    return std::string(p, static_cast<size_t>(n));
}

std::vector<ember::TokenId> token_ids(py::handle obj, const char* fn, const char* what) {
    const std::string name = std::string(fn) + ": " + what;
    if (py::isinstance<py::str>(obj) || py::isinstance<py::bytes>(obj) || !py::isinstance<py::iterable>(obj))
        type_error(name, "a sequence of token ids (ints)", obj);
    std::vector<ember::TokenId> ids;
    if (PySequence_Check(obj.ptr())) {
        const Py_ssize_t n = PySequence_Size(obj.ptr());
        if (n > 0) ids.reserve(static_cast<size_t>(n));
    }
    size_t i = 0;
    for (py::handle item : py::reinterpret_borrow<py::iterable>(obj)) {
        bool overflow = false;
        const std::string item_name = name + "[" + std::to_string(i) + "]";
        const int64_t v = integer(item, item_name, &overflow);
        if (overflow || v < std::numeric_limits<int32_t>::min() || v > std::numeric_limits<int32_t>::max())
            invalid(std::string(fn) + ": token " + std::string(py::str(item)) + " (at index " + std::to_string(i) +
                    " of " + what + ") is outside the vocabulary");
        ids.push_back(static_cast<ember::TokenId>(v));
        ++i;
    }
    return ids;
}

std::vector<ember::ChatMessage> chat_messages(py::handle obj, const char* fn) {
    const std::string name = std::string(fn) + ": messages";
    if (py::isinstance<py::str>(obj) || py::isinstance<py::dict>(obj) || !PySequence_Check(obj.ptr()))
        type_error(name, "a list of {'role': str, 'content': str} dicts", obj);
    std::vector<ember::ChatMessage> out;
    const auto seq = py::reinterpret_borrow<py::sequence>(obj);
    for (size_t i = 0; i < seq.size(); ++i) {
        const py::object msg = seq[i];
        const std::string at = name + "[" + std::to_string(i) + "]";
        if (!PyMapping_Check(msg.ptr()) || py::isinstance<py::str>(msg))
            type_error(at, "a dict with 'role' and 'content'", msg);
        ember::ChatMessage m;
        for (const char* key : {"role", "content"}) {
            if (!PyMapping_HasKeyString(msg.ptr(), key))
                throw py::type_error(at + " has no '" + key + "' (each message is {'role': ..., 'content': ...})");
            const py::object v = msg[key];
            (key[0] == 'r' ? m.role : m.content) = utf8(v, (at + "['" + key + "']").c_str());
        }
        out.push_back(std::move(m));
    }
    return out;
}

ember::GenerateParams generate_params(const py::kwargs& kwargs, const char* fn) {
    ember::GenerateParams gp;
    ember::SamplerParams& sp = gp.sampling;
    for (const auto& [key_obj, value] : kwargs) {
        const std::string key = py::str(key_obj);
        const std::string what = std::string(fn) + ": " + key;
        if (key == "max_tokens") gp.max_tokens = int32(value, what);
        else if (key == "temperature") sp.temperature = real(value, what);
        else if (key == "top_k") sp.top_k = int32(value, what);
        else if (key == "top_p") sp.top_p = real(value, what);
        else if (key == "min_p") sp.min_p = real(value, what);
        else if (key == "repeat_penalty") sp.repeat_penalty = real(value, what);
        else if (key == "frequency_penalty") sp.frequency_penalty = real(value, what);
        else if (key == "presence_penalty") sp.presence_penalty = real(value, what);
        else if (key == "penalty_last_n") sp.penalty_last_n = int32(value, what);
        else if (key == "seed") {
            if (value.is_none()) continue;  // ember's fixed default seed
            bool overflow = false;
            const int64_t v = integer(value, what, &overflow);
            if (v < 0 && !overflow) invalid(what + " is " + std::to_string(v) + "; use an int >= 0 (or None for the default)");
            if (overflow) {  // up to 2**64 - 1
                const unsigned long long u = PyLong_AsUnsignedLongLong(value.ptr());
                if (u == static_cast<unsigned long long>(-1) && PyErr_Occurred()) {
                    PyErr_Clear();
                    invalid(what + " is " + std::string(py::str(value)) + "; it must fit in 64 bits");
                }
                sp.seed = u;
            } else {
                sp.seed = static_cast<uint64_t>(v);
            }
        } else if (key == "stop") {
            if (value.is_none()) continue;
            if (py::isinstance<py::str>(value)) {
                gp.stop.push_back(utf8(value, what.c_str()));
            } else {
                if (!py::isinstance<py::iterable>(value)) type_error(what, "a str or a list of str", value);
                size_t i = 0;
                for (py::handle s : py::reinterpret_borrow<py::iterable>(value))
                    gp.stop.push_back(utf8(s, (what + "[" + std::to_string(i++) + "]").c_str()));
            }
        } else if (key == "logit_bias") {
            if (value.is_none()) continue;
            if (!py::isinstance<py::dict>(value)) type_error(what, "a dict {token id: bias}", value);
            for (const auto& [id, bias] : py::reinterpret_borrow<py::dict>(value))
                sp.logit_bias.emplace_back(int32(id, what + " key"), real(bias, what + "[" + std::string(py::str(id)) + "]"));
        } else if (key == "ignore_eos") gp.ignore_eos = boolean(value, what);
        else if (key == "add_special") gp.add_special = boolean(value, what);
        else if (key == "parse_special") gp.parse_special = boolean(value, what);
        else throw py::type_error(std::string(fn) + "() got an unexpected keyword argument '" + key + "'");
    }
    return gp;
}

ember::SessionParams session_params(int64_t n_ctx, int64_t n_batch, int64_t n_threads, const std::string& kv_type) {
    ember::SessionParams p;
    if (n_ctx < 0 || n_ctx > std::numeric_limits<uint32_t>::max())
        invalid("Session: n_ctx is " + std::to_string(n_ctx) + "; use 0 for the model's training context (capped at "
                "4096), or a positive count of tokens");
    if (n_batch < 0 || n_batch > std::numeric_limits<uint32_t>::max())
        invalid("Session: n_batch is " + std::to_string(n_batch) + "; it must be at least 1 (512 is a good default)");
    if (n_threads < std::numeric_limits<int32_t>::min() || n_threads > std::numeric_limits<int32_t>::max())
        invalid("Session: n_threads is " + std::to_string(n_threads) + "; use 0 for one thread per core, or a positive count");
    p.n_ctx = static_cast<uint32_t>(n_ctx);
    p.n_batch = static_cast<uint32_t>(n_batch);
    p.n_threads = static_cast<int32_t>(n_threads);  // negative: the C++ constructor says so
    if (kv_type == "f16") p.kv_type = ember::KvCacheType::F16;
    else if (kv_type == "f32") p.kv_type = ember::KvCacheType::F32;
    else invalid("Session: kv_type is '" + kv_type + "'; use 'f16' (the default) or 'f32'");
    return p;
}

ember::Precision precision_of(const std::string& precision) {
    if (precision == "default") return ember::Precision::Default;
    if (precision == "fast") return ember::Precision::Fast;
    if (precision == "exact") return ember::Precision::Exact;
    invalid("Session: precision is '" + precision + "'; use 'default' (EMBER_PRECISION, else exact), 'fast' or 'exact'");
}

}  // namespace ember_py
