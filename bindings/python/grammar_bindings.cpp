// ember.Grammar, ember.GrammarError and ember.SchemaError: GBNF grammars and
// JSON Schemas for constrained generation (Session.generate(grammar=...,
// json_schema=...), Session.chat(response_format=..., tools=...)).
#include <pybind11/stl.h>

#include <string>

#include "bindings.hpp"
#include "ember/grammar.hpp"

namespace ember_py {

namespace {

PyObject* g_grammar_error = nullptr;  // ember.GrammarError (an InvalidArgumentError)
PyObject* g_schema_error = nullptr;   // ember.SchemaError (an ember.Error and a ValueError)

}  // namespace

std::string schema_text(py::handle schema, const char* fn) {
    if (py::isinstance<py::str>(schema)) return schema.cast<std::string>();
    if (py::isinstance<py::dict>(schema) || py::isinstance<py::bool_>(schema))
        return py::module_::import("json").attr("dumps")(schema, py::arg("ensure_ascii") = false).cast<std::string>();
    throw ember::Error(ember::ErrorCode::InvalidArgument,
                       std::string(fn) + ": a JSON Schema is a dict or its JSON text (str), not " +
                           std::string(py::str(schema.get_type().attr("__name__"))));
}

void bind_grammar(py::module_& m) {
    py::object invalid_arg = m.attr("InvalidArgumentError");
    py::object base = m.attr("Error");
    {
        py::tuple bases = py::make_tuple(invalid_arg);
        g_grammar_error = PyErr_NewExceptionWithDoc(
            "ember.GrammarError",
            "A GBNF grammar that does not parse or is not usable (left recursion, an undefined rule, an empty "
            "language, a token the vocabulary lacks). `line` and `column` (from 1) say where.",
            bases.ptr(), nullptr);
        if (!g_grammar_error) throw py::error_already_set();
        py::object cls = py::reinterpret_borrow<py::object>(g_grammar_error);
        cls.attr("line") = 0;
        cls.attr("column") = 0;
        m.attr("GrammarError") = cls;
    }
    {
        py::tuple bases = py::make_tuple(base, py::reinterpret_borrow<py::object>(PyExc_ValueError));
        g_schema_error = PyErr_NewExceptionWithDoc(
            "ember.SchemaError",
            "A JSON Schema ember cannot turn into a grammar: `keyword` names the keyword (e.g. "
            "'patternProperties') and `path` the JSON Pointer of the schema object holding it; `code` is "
            "'unsupported' for a keyword ember does not implement, 'invalid_argument' for a malformed schema.",
            bases.ptr(), nullptr);
        if (!g_schema_error) throw py::error_already_set();
        py::object cls = py::reinterpret_borrow<py::object>(g_schema_error);
        cls.attr("keyword") = "";
        cls.attr("path") = "";
        m.attr("SchemaError") = cls;
    }
    // registered after the module's own translator, so it runs first
    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const ember::GrammarError& e) {
            try {
                py::object exc = py::reinterpret_borrow<py::object>(g_grammar_error)(e.what());
                exc.attr("line") = e.line();
                exc.attr("column") = e.column();
                PyErr_SetObject(g_grammar_error, exc.ptr());
            } catch (py::error_already_set& inner) {
                inner.restore();
            }
        } catch (const ember::SchemaError& e) {
            try {
                py::object exc = py::reinterpret_borrow<py::object>(g_schema_error)(e.what());
                exc.attr("keyword") = e.keyword();
                exc.attr("path") = e.path();
                exc.attr("code") = ember::error_code_name(e.code());
                PyErr_SetObject(g_schema_error, exc.ptr());
            } catch (py::error_already_set& inner) {
                inner.restore();
            }
        }
    });

    py::class_<ember::Grammar>(m, "Grammar", R"doc(A compiled GBNF grammar (llama.cpp's syntax): what constrained generation
may produce. Immutable; share it between sessions and threads.

    g = ember.Grammar('root ::= "yes" | "no"')
    g = ember.Grammar.from_json_schema({"type": "object", "properties": {"n": {"type": "integer"}}})
    session.generate(prompt, grammar=g)      # or grammar="<GBNF text>", json_schema={...})doc")
        .def(py::init([](const std::string& gbnf, const std::string& root) { return ember::Grammar::parse(gbnf, root); }),
             py::arg("gbnf"), py::arg("root") = "root",
             "Parses GBNF text; `root` names the start rule. GrammarError (with line and column) when it does not "
             "parse, is left-recursive, names an undefined rule or has an empty language.")
        .def_static(
            "from_json_schema",
            [](py::handle schema) { return ember::Grammar::from_json_schema(schema_text(schema, "Grammar.from_json_schema")); },
            py::arg("schema"),
            "The grammar of the JSON values a JSON Schema (a dict, or its JSON text) accepts. SchemaError naming "
            "the keyword and its path for what ember does not support.")
        .def_static("json_object", &ember::Grammar::json_object, "JSON mode: any JSON object.")
        .def_static(
            "json_schema_to_gbnf",
            [](py::handle schema) { return ember::Grammar::json_schema_to_gbnf(schema_text(schema, "Grammar.json_schema_to_gbnf")); },
            py::arg("schema"), "The GBNF text from_json_schema builds.")
        .def_property_readonly("source", &ember::Grammar::source, "The GBNF text.")
        .def_property_readonly("root", &ember::Grammar::root, "The start rule's name.")
        .def("matches", &ember::Grammar::matches, py::arg("text"), "Whether text is a string of the language.")
        .def("is_prefix", &ember::Grammar::is_prefix, py::arg("text"),
             "Whether text can be continued into a string of the language.")
        .def("random_string", &ember::Grammar::random_string, py::arg("seed"), py::arg("max_bytes") = 4096,
             "A random string of the language (a seeded walk of the grammar), for testing grammars.")
        .def("__repr__", [](const ember::Grammar& g) {
            if (g.empty()) return std::string("<ember.Grammar (empty)>");
            return "<ember.Grammar root='" + g.root() + "', " + std::to_string(g.source().size()) + " bytes>";
        });
}

}  // namespace ember_py
