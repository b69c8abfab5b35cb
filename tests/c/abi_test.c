/* The C ABI from a strict C99 program: versioning, status names, error
   reporting, and NULL / too-small arguments answered with a status. */
#include <stdio.h>
#include <string.h>

#include "ember.h"

static int failures = 0;
static int checks = 0;
#define CHECK(cond)                                                       \
    do {                                                                  \
        ++checks;                                                         \
        if (!(cond)) {                                                    \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
            ++failures;                                                   \
        }                                                                 \
    } while (0)

int main(void) {
    char buf[4096];
    char tiny[8];
    size_t needed = 0;

    CHECK(ember_abi_version() == EMBER_ABI_VERSION);
    CHECK(ember_version() != NULL && strlen(ember_version()) >= 5);
    CHECK(strcmp(ember_status_name(EMBER_OK), "EMBER_OK") == 0);
    CHECK(strcmp(ember_status_name(EMBER_ERR_INVALID_ARGUMENT), "EMBER_ERR_INVALID_ARGUMENT") == 0);
    CHECK(strcmp(ember_status_name((ember_status)12345), "EMBER_ERR_UNKNOWN") == 0);
    CHECK(ember_last_error() != NULL);

    /* size query, then the real call */
    CHECK(ember_build_info(NULL, 0, &needed) == EMBER_OK);
    CHECK(needed > 10 && needed < sizeof buf);
    CHECK(ember_build_info(buf, sizeof buf, NULL) == EMBER_OK);
    CHECK(strncmp(buf, "ember ", 6) == 0);
    CHECK(strlen(buf) + 1 == needed);
    CHECK(ember_last_error()[0] == '\0'); /* nothing has failed on this thread yet */

    /* NULL buffer with a size: invalid argument, with a message */
    CHECK(ember_build_info(NULL, 10, &needed) == EMBER_ERR_INVALID_ARGUMENT);
    CHECK(strstr(ember_last_error(), "buf is NULL") != NULL);

    /* too small: truncated, NUL-terminated, size reported */
    CHECK(ember_build_info(tiny, sizeof tiny, &needed) == EMBER_ERR_BUFFER_TOO_SMALL);
    CHECK(tiny[sizeof tiny - 1] == '\0');
    CHECK(strncmp(tiny, "ember ", 6) == 0);
    CHECK(strstr(ember_last_error(), "too small") != NULL);

    printf("%s", buf);
    printf("%d passed, %d failed\n", checks - failures, failures);
    return failures ? 1 : 0;
}
