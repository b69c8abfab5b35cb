/*
 * ember.h - the stable C ABI of ember.
 *
 * C99, no dependencies. This header changes by addition only: functions are
 * never removed or changed, params structs only grow at their end (each one
 * starts with `size_t struct_size` and has an _init function), and enum values
 * are never renumbered. Every call returns an ember_status; the message for
 * the last failure on the calling thread is in ember_last_error().
 *
 * The model, session and generation calls arrive with the inference work; this
 * first part carries versioning and error reporting.
 */
#ifndef EMBER_H
#define EMBER_H

#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__)
#define EMBER_CAPI __attribute__((visibility("default")))
#else
#define EMBER_CAPI
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped when functions are added; never reset. */
#define EMBER_ABI_VERSION 1

typedef enum ember_status {
    EMBER_OK = 0,
    EMBER_ERR_INVALID_ARGUMENT = 1, /* NULL, out of range, invalid UTF-8 */
    EMBER_ERR_INVALID_FILE = 2,     /* corrupt, truncated, not a GGUF file */
    EMBER_ERR_UNSUPPORTED = 3,      /* a version, type or architecture ember does not handle */
    EMBER_ERR_NOT_FOUND = 4,        /* a file, key or tensor that does not exist */
    EMBER_ERR_TYPE_MISMATCH = 5,    /* a metadata value of another type */
    EMBER_ERR_IO = 6,               /* the operating system refused */
    EMBER_ERR_OUT_OF_MEMORY = 7,
    EMBER_ERR_BACKEND = 8,          /* e.g. a CUDA runtime error */
    EMBER_ERR_BUFFER_TOO_SMALL = 9, /* an output buffer was too small; the size needed is reported */
    EMBER_ERR_INTERNAL = 100        /* a bug in ember; please report it */
} ember_status;

/* The ABI version of the loaded library (EMBER_ABI_VERSION it was built with). */
EMBER_CAPI uint32_t ember_abi_version(void);

/* "0.1.0". Never NULL; static storage. */
EMBER_CAPI const char* ember_version(void);

/* A short constant name for a status, e.g. "EMBER_ERR_INVALID_FILE".
   Unknown values give "EMBER_ERR_UNKNOWN". Never NULL. */
EMBER_CAPI const char* ember_status_name(ember_status status);

/* The message of the last failed call on this thread ("" if none). The
   pointer stays valid until the next ember call on this thread. */
EMBER_CAPI const char* ember_last_error(void);

/* Build information (version, CPU features, CUDA, BLAS), one item per line,
   copied into buf[buf_size] with a terminating NUL. *needed (if not NULL)
   receives the bytes needed including the NUL. buf may be NULL only when
   buf_size is 0 (to ask for the size); a buffer too small gives
   EMBER_ERR_BUFFER_TOO_SMALL and is filled with as much as fits. */
EMBER_CAPI ember_status ember_build_info(char* buf, size_t buf_size, size_t* needed);

#ifdef __cplusplus
}
#endif

#endif /* EMBER_H */
