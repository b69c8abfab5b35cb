// The output file of the tools that write one (ember-quantize's OUT,
// ember-export-lora's -o), checked before any work is done: the tools only
// create a file or replace a regular file -- never an input, a device node, a
// directory or a pipe -- in a folder they can write. The file itself is
// written by gguf::Writer::write, into a temporary file beside it that is then
// renamed over it, so a failed or killed run never leaves a half-written OUT
// nor destroys the file that was there.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace ember_tools {

struct OutputInput {
    std::string_view what;  // "the input file", "the base model", "the adapter"
    std::string path;
};

struct OutputRules {
    std::string_view tool;     // "ember-quantize"
    std::string_view label;    // how the command line names it: "OUT", "-o"
    std::string_view product;  // "the quantized model"
    std::string_view nothing;  // "nothing was quantized"
};

// Throws ember::Error (InvalidArgument, NotFound or Io) naming OUT and what is
// wrong with it. Returns the path to write: OUT, or the target of a symbolic
// link at OUT to a regular file (the file is replaced, the link stays).
std::string checked_output(const std::string& out, const std::vector<OutputInput>& inputs, const OutputRules& rules);

}  // namespace ember_tools
