// Symbol visibility for the public API. The library is built with hidden
// visibility; only what is marked EMBER_API is exported from libember.so.
#pragma once

#if defined(_WIN32)
#  define EMBER_API
#elif defined(__GNUC__)
#  define EMBER_API __attribute__((visibility("default")))
#else
#  define EMBER_API
#endif
