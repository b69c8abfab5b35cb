// pybind11 module ember._ember: the module itself and the exceptions. Every
// ember::Error becomes an instance of the ember.Error subclass for its code,
// with the C++ message unchanged.
#include <pybind11/pybind11.h>

#include <array>
#include <exception>

#include "bindings.hpp"
#include "ember/ember.hpp"

namespace py = pybind11;

namespace {

struct ErrorClass {
    ember::ErrorCode code;
    const char* name;      // the Python class name
    PyObject* also_from;   // a built-in exception the class derives from too (nullptr: none)
    const char* doc;
};

constexpr size_t kNumCodes = static_cast<size_t>(ember::ErrorCode::Cancelled) + 1;

// One class per ember::ErrorCode, owned by the module (the references below are
// never released: the module is never unloaded once imported).
std::array<PyObject*, kNumCodes> g_classes{};

void add_error_classes(py::module_& m) {
    PyObject* base = PyErr_NewExceptionWithDoc(
        "ember.Error",
        "Base class of every error ember raises. The message says what happened, where, and "
        "what to do; `code` is the ember error code's name (e.g. 'not_found').",
        PyExc_Exception, nullptr);
    if (!base) throw py::error_already_set();
    m.attr("Error") = py::reinterpret_borrow<py::object>(base);
    const ErrorClass classes[] = {
        {ember::ErrorCode::InvalidArgument, "InvalidArgumentError", PyExc_ValueError,
         "An argument is out of range or malformed (also a ValueError)."},
        {ember::ErrorCode::InvalidFile, "InvalidFileError", nullptr,
         "A file is corrupt, truncated or not what it claims to be."},
        {ember::ErrorCode::Unsupported, "UnsupportedError", nullptr,
         "Well-formed input that ember does not handle (a version, tensor type or architecture)."},
        {ember::ErrorCode::NotFound, "NotFoundError", nullptr, "A file, metadata key or tensor does not exist."},
        {ember::ErrorCode::TypeMismatch, "TypeMismatchError", nullptr,
         "A metadata value exists but has another type than expected."},
        {ember::ErrorCode::Io, "IoError", PyExc_OSError,
         "The operating system refused an operation: open, mmap, read (also an OSError)."},
        {ember::ErrorCode::OutOfMemory, "OutOfMemoryError", PyExc_MemoryError,
         "An allocation failed (also a MemoryError)."},
        {ember::ErrorCode::Backend, "BackendError", nullptr, "A compute backend failed (e.g. the CUDA runtime)."},
        {ember::ErrorCode::Internal, "InternalError", nullptr, "A bug in ember; please report it."},
        {ember::ErrorCode::Cancelled, "CancelledError", nullptr,
         "Session.cancel() interrupted the operation, or was held for it (a cancel that arrives while nothing "
         "runs stops the next eval or generation at once; reset() withdraws it). From a generation, `result` "
         "holds what it produced."},
    };
    for (const ErrorClass& c : classes) {
        const std::string qualified = std::string("ember.") + c.name;
        PyObject* bases = c.also_from ? PyTuple_Pack(2, base, c.also_from) : PyTuple_Pack(1, base);
        if (!bases) throw py::error_already_set();
        PyObject* cls = PyErr_NewExceptionWithDoc(qualified.c_str(), c.doc, bases, nullptr);
        Py_DECREF(bases);
        if (!cls) throw py::error_already_set();
        py::object obj = py::reinterpret_borrow<py::object>(cls);
        obj.attr("code") = ember::error_code_name(c.code);
        m.attr(c.name) = obj;
        g_classes[static_cast<size_t>(c.code)] = cls;  // keeps the reference PyErr_NewExceptionWithDoc gave
    }
    py::reinterpret_borrow<py::object>(base).attr("code") = "error";
    // what a failed or cancelled generation produced (a GenerateResult); None for other errors
    py::reinterpret_borrow<py::object>(base).attr("result") = py::none();
    // `base` keeps its reference too: the module attribute and the subclasses hold it
    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const ember::GenerateError& e) {
            // the exception carries the partial result: exc.result (stop_reason 'error' or 'cancelled')
            const auto i = static_cast<size_t>(e.code());
            PyObject* cls = i < kNumCodes && g_classes[i] ? g_classes[i]
                                                           : g_classes[static_cast<size_t>(ember::ErrorCode::Internal)];
            try {
                py::object exc = py::reinterpret_borrow<py::object>(cls)(e.what());
                exc.attr("result") = py::cast(e.result());
                PyErr_SetObject(cls, exc.ptr());
            } catch (py::error_already_set& inner) {
                inner.restore();  // making the exception failed (out of memory): raise that
            }
        } catch (const ember::Error& e) {
            const auto i = static_cast<size_t>(e.code());
            PyErr_SetString(i < kNumCodes && g_classes[i] ? g_classes[i] : g_classes[static_cast<size_t>(ember::ErrorCode::Internal)],
                            e.what());
        }
    });
}

}  // namespace

PYBIND11_MODULE(_ember, m) {
    m.doc() = "ember's native module: GGUF files, models, sessions and streaming generation. "
              "Import the package `ember` rather than this module.";
    add_error_classes(m);
    m.def("version", &ember::version, "The ember version, e.g. '0.1.0'.");
    m.def("build_info", &ember::build_info, "Version, CPU features and kernel set, whether the CUDA module was built; one item a line. Does not load CUDA.");
    m.def("device_info", &ember::device_info,
          "The GPUs the CUDA module sees, one line each, or why there are none. Opens the CUDA module.");
    ember_py::bind_gguf(m);
    ember_py::bind_inference(m);
    ember_py::bind_grammar(m);
    ember_py::bind_tools(m);
}
