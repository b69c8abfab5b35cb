// Python arguments -> ember types (see args.hpp).
#include "args.hpp"

#include "bindings.hpp"

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

namespace {
ember::KvCacheType kv_cache_type(const std::string& name, const char* arg) {
    try {
        return ember::parse_kv_cache_type(name);
    } catch (const ember::Error&) {
        invalid(std::string("Session: ") + arg + " is '" + name + "'; use 'f16' (the default), 'f32', 'q8_0' or 'q4_0'");
    }
}
}  // namespace

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
    p.kv_type = kv_cache_type(kv_type, "kv_type");
    return p;
}

uint64_t memory_budget_of(py::handle value, const char* fn) {
    if (value.is_none()) return 0;
    if (py::isinstance<py::str>(value)) {
        try {
            return ember::parse_memory_size(value.cast<std::string>());
        } catch (const ember::Error& e) {
            invalid(std::string(fn) + ": memory_budget: " + e.what());
        }
    }
    if (py::isinstance<py::bool_>(value) || !py::isinstance<py::int_>(value))
        throw py::type_error(std::string(fn) + ": memory_budget must be an int (bytes) or a str such as '512M'");
    int overflow = 0;
    const long long v = PyLong_AsLongLongAndOverflow(value.ptr(), &overflow);
    if (overflow < 0 || (overflow == 0 && v < 0))
        invalid(std::string(fn) + ": memory_budget is " + std::string(py::str(value)) +
                "; use a count of bytes >= 0 (0 = no budget) or a size such as '512M'");
    if (overflow > 0) {  // past int64: still a uint64?
        const unsigned long long u = PyLong_AsUnsignedLongLong(value.ptr());
        if (PyErr_Occurred()) {
            PyErr_Clear();
            invalid(std::string(fn) + ": memory_budget is " + std::string(py::str(value)) + "; it must fit in 64 bits");
        }
        return u;
    }
    return static_cast<uint64_t>(v);
}

ember::SessionOptions session_options(py::handle kv_type_k, py::handle kv_type_v, py::handle memory_budget) {
    ember::SessionOptions o;
    if (!kv_type_k.is_none()) o.kv_type_k = kv_cache_type(kv_type_k.cast<std::string>(), "kv_type_k");
    if (!kv_type_v.is_none()) o.kv_type_v = kv_cache_type(kv_type_v.cast<std::string>(), "kv_type_v");
    o.memory_budget = memory_budget_of(memory_budget, "Session");
    return o;
}

ember::Precision precision_of(const std::string& precision) {
    if (precision == "default") return ember::Precision::Default;
    if (precision == "fast") return ember::Precision::Fast;
    if (precision == "exact") return ember::Precision::Exact;
    invalid("Session: precision is '" + precision + "'; use 'default' (EMBER_PRECISION, else exact), 'fast' or 'exact'");
}

namespace {

// obj[key] of a mapping, or None when absent
py::object get(py::handle obj, const char* key) {
    if (!PyMapping_HasKeyString(obj.ptr(), key)) return py::none();
    return py::reinterpret_borrow<py::object>(obj)[key];
}

std::string opt_text(py::handle v, const std::string& what) {
    if (v.is_none()) return {};
    return utf8(v, what.c_str());
}

// a JSON value given as a dict/list (serialized) or as its text
std::string json_text(py::handle v) {
    if (py::isinstance<py::str>(v)) return v.cast<std::string>();
    return py::module_::import("json").attr("dumps")(v, py::arg("ensure_ascii") = false).cast<std::string>();
}

}  // namespace

ember::Constraint take_constraint(py::dict& kwargs, const char* fn) {
    ember::Constraint c;
    py::object g = kwargs.contains("grammar") ? kwargs.attr("pop")("grammar") : py::none();
    py::object js = kwargs.contains("json_schema") ? kwargs.attr("pop")("json_schema") : py::none();
    if (!g.is_none() && !js.is_none()) invalid(std::string(fn) + ": grammar and json_schema are both given; pass one");
    if (!g.is_none()) {
        if (py::isinstance<ember::Grammar>(g)) c.grammar = g.cast<ember::Grammar>();
        else if (py::isinstance<py::str>(g)) c.grammar = ember::Grammar::parse(g.cast<std::string>());
        else type_error(std::string(fn) + ": grammar", "GBNF text (str) or an ember.Grammar", g);
    } else if (!js.is_none()) {
        c.grammar = ember::Grammar::from_json_schema(schema_text(js, fn));
    }
    return c;
}

std::vector<ember::ChatTurn> chat_turns(py::handle obj, const char* fn) {
    const std::string name = std::string(fn) + ": messages";
    if (py::isinstance<py::str>(obj) || !py::isinstance<py::sequence>(obj))
        type_error(name, "a list of dicts {'role': ..., 'content': ...}", obj);
    std::vector<ember::ChatTurn> out;
    const auto seq = py::reinterpret_borrow<py::sequence>(obj);
    for (size_t i = 0; i < seq.size(); ++i) {
        const py::object msg = seq[i];
        const std::string at = name + "[" + std::to_string(i) + "]";
        if (!PyMapping_Check(msg.ptr()) || py::isinstance<py::str>(msg))
            type_error(at, "a dict with 'role' and 'content'", msg);
        ember::ChatTurn t;
        if (!PyMapping_HasKeyString(msg.ptr(), "role")) throw py::type_error(at + " has no 'role'");
        t.role = utf8(msg["role"], (at + "['role']").c_str());
        t.content = opt_text(get(msg, "content"), at + "['content']");
        t.tool_call_id = opt_text(get(msg, "tool_call_id"), at + "['tool_call_id']");
        t.name = opt_text(get(msg, "name"), at + "['name']");
        const py::object calls = get(msg, "tool_calls");
        if (!calls.is_none()) {
            if (!py::isinstance<py::sequence>(calls)) type_error(at + "['tool_calls']", "a list of tool calls", calls);
            const auto cs = py::reinterpret_borrow<py::sequence>(calls);
            for (size_t j = 0; j < cs.size(); ++j) {
                const py::object c = cs[j];
                const std::string cat = at + "['tool_calls'][" + std::to_string(j) + "]";
                if (!PyMapping_Check(c.ptr())) type_error(cat, "a dict {'id', 'type', 'function': {...}}", c);
                py::object f = get(c, "function");
                if (f.is_none()) f = c;  // {"name", "arguments"} without the wrapper
                ember::ToolCall tc;
                tc.id = opt_text(get(c, "id"), cat + "['id']");
                tc.name = opt_text(get(f, "name"), cat + "['function']['name']");
                const py::object args = get(f, "arguments");
                tc.arguments = args.is_none() ? "{}" : json_text(args);
                t.tool_calls.push_back(std::move(tc));
            }
        }
        out.push_back(std::move(t));
    }
    return out;
}

ember::ChatRequest take_chat_request(py::dict& kwargs, const char* fn, bool* used) {
    ember::ChatRequest req;
    *used = false;
    const std::string f(fn);
    if (kwargs.contains("tools")) {
        py::object tools = kwargs.attr("pop")("tools");
        *used = true;
        if (!tools.is_none()) {
            if (!py::isinstance<py::sequence>(tools)) type_error(f + ": tools", "a list of tool dicts", tools);
            const auto ts = py::reinterpret_borrow<py::sequence>(tools);
            for (size_t i = 0; i < ts.size(); ++i) {
                const py::object t = ts[i];
                const std::string at = f + ": tools[" + std::to_string(i) + "]";
                if (!PyMapping_Check(t.ptr())) type_error(at, "a dict {'type': 'function', 'function': {...}}", t);
                py::object fdef = get(t, "function");
                if (fdef.is_none()) fdef = t;
                ember::ToolDef d;
                d.name = opt_text(get(fdef, "name"), at + "['function']['name']");
                d.description = opt_text(get(fdef, "description"), at + "['function']['description']");
                const py::object params = get(fdef, "parameters");
                if (!params.is_none()) d.parameters = schema_text(params, fn);
                req.tools.push_back(std::move(d));
            }
        }
    }
    if (kwargs.contains("tool_choice")) {
        py::object tc = kwargs.attr("pop")("tool_choice");
        *used = true;
        if (tc.is_none()) {
        } else if (py::isinstance<py::str>(tc)) {
            const std::string v = tc.cast<std::string>();
            if (v == "auto") req.tool_choice.kind = ember::ToolChoice::Auto;
            else if (v == "none") req.tool_choice.kind = ember::ToolChoice::None;
            else if (v == "required") req.tool_choice.kind = ember::ToolChoice::Required;
            else invalid(f + ": tool_choice is '" + v + "'; use 'auto', 'none', 'required' or "
                         "{'type': 'function', 'function': {'name': ...}}");
        } else if (PyMapping_Check(tc.ptr())) {
            py::object fdef = get(tc, "function");
            if (fdef.is_none()) fdef = tc;
            req.tool_choice.kind = ember::ToolChoice::Function;
            req.tool_choice.name = opt_text(get(fdef, "name"), f + ": tool_choice['function']['name']");
        } else {
            type_error(f + ": tool_choice", "'auto', 'none', 'required' or a dict naming a function", tc);
        }
    }
    if (kwargs.contains("parallel_tool_calls")) {
        req.parallel_tool_calls = boolean(kwargs.attr("pop")("parallel_tool_calls"), f + ": parallel_tool_calls");
        *used = true;
    }
    if (kwargs.contains("response_format")) {
        py::object rf = kwargs.attr("pop")("response_format");
        *used = true;
        if (rf.is_none()) {
        } else if (py::isinstance<ember::Grammar>(rf)) {
            req.response_format = rf.cast<ember::Grammar>();
        } else if (PyMapping_Check(rf.ptr())) {
            const std::string type = opt_text(get(rf, "type"), f + ": response_format['type']");
            if (type == "json_object") {
                const py::object schema = get(rf, "schema");  // llama.cpp's server accepts one here too
                req.response_format = schema.is_none() ? ember::Grammar::json_object()
                                                       : ember::Grammar::from_json_schema(schema_text(schema, fn));
            } else if (type == "json_schema") {
                py::object js = get(rf, "json_schema");
                py::object schema = js.is_none() ? get(rf, "schema") : get(js, "schema");
                if (schema.is_none())
                    invalid(f + ": response_format {'type': 'json_schema'} needs 'json_schema': {'schema': {...}}");
                req.response_format = ember::Grammar::from_json_schema(schema_text(schema, fn));
            } else if (type != "text") {
                invalid(f + ": response_format['type'] is '" + type + "'; use 'text', 'json_object' or 'json_schema'");
            }
        } else {
            type_error(f + ": response_format", "a dict {'type': ...} or an ember.Grammar", rf);
        }
    }
    return req;
}

py::dict tool_call_dict(const ember::ToolCall& c) {
    py::dict fdef;
    fdef["name"] = decode(c.name);
    fdef["arguments"] = decode(c.arguments);
    py::dict d;
    d["id"] = decode(c.id);
    d["type"] = "function";
    d["function"] = fdef;
    return d;
}

}  // namespace ember_py
