// The ember C++ API, all of it.
#pragma once

#include "ember/adapter.hpp"
#include "ember/chat.hpp"
#include "ember/error.hpp"
#include "ember/gguf.hpp"
#include "ember/grammar.hpp"
#include "ember/memory.hpp"
#include "ember/model.hpp"
#include "ember/quant.hpp"
#include "ember/sampler.hpp"
#include "ember/session.hpp"
#include "ember/tokenizer.hpp"
#include "ember/tool_calls.hpp"
#include "ember/types.hpp"
#include "ember/utf8.hpp"
#include "ember/version.hpp"
