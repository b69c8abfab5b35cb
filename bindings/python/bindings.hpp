// The pieces of the pybind11 module ember._ember, one file each:
//   ember_module.cpp   the module, version/build_info, the exception classes
//   gguf_bindings.cpp  GGUFFile and GGUF metadata -> Python objects
//   inference.cpp      Model, Session, Generation, GenerateResult
//   stream.cpp         streaming generation on a producer thread (no Python in it)
#pragma once

#include <pybind11/pybind11.h>

#include <string>

#include "ember/gguf.hpp"

namespace ember_py {

namespace py = pybind11;

void bind_gguf(py::module_& m);
void bind_inference(py::module_& m);
void bind_grammar(py::module_& m);  // grammar_bindings.cpp: Grammar, GrammarError, SchemaError
void bind_tools(py::module_& m);
// A JSON Schema given as a dict (or bool) or as its JSON text, as text; InvalidArgument otherwise.
std::string schema_text(py::handle schema, const char* fn);    // tool_bindings.cpp: tool-call rendering and parsing

// Every metadata key and value of a GGUF file, in file order (numeric arrays
// as NumPy arrays, string arrays as lists).
py::dict metadata_dict(const ember::gguf::File& f);

}  // namespace ember_py
