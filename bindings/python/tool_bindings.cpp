#include "bindings.hpp"

namespace ember_py {
void bind_tools(py::module_&) {}
}  // namespace ember_py
