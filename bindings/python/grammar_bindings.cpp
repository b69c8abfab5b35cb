#include "bindings.hpp"

namespace ember_py {
void bind_grammar(py::module_&) {}
}  // namespace ember_py
