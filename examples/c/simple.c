/* ember-simple-c MODEL PROMPT
 *
 * The smallest complete use of ember's C API: load a model, open a session,
 * generate 32 tokens greedily while streaming them to stdout, free both.
 */
#include <stdio.h>

#include "ember.h"

/* Called with each piece of text as soon as it is complete; nonzero = go on. */
static int print_piece(const char* piece, size_t len, void* user_data) {
    (void)user_data;
    fwrite(piece, 1, len, stdout);
    fflush(stdout);
    return 1;
}

int main(int argc, char** argv) {
    ember_model* model = NULL;
    ember_session* session = NULL;
    ember_generate_params params;
    ember_generate_result result;
    ember_status st;

    if (argc != 3) {
        fprintf(stderr, "usage: %s MODEL PROMPT\n", argv[0]);
        return 2;
    }

    st = ember_model_load(argv[1], NULL, &model); /* NULL params: the defaults */
    if (st != EMBER_OK) {
        fprintf(stderr, "error: %s\n", ember_last_error());
        return 1;
    }
    st = ember_session_new(model, NULL, &session);
    if (st != EMBER_OK) {
        fprintf(stderr, "error: %s\n", ember_last_error());
        ember_model_free(model);
        return 1;
    }

    ember_generate_params_init(&params, sizeof params);
    params.max_tokens = 32;
    params.temperature = 0.0f; /* greedy */
    result.struct_size = sizeof result;

    fputs(argv[2], stdout);
    st = ember_session_generate(session, argv[2], &params, print_piece, NULL, &result);
    putchar('\n');
    if (st == EMBER_OK)
        fprintf(stderr, "[%u tokens, stopped by %s, %.1f tokens/s]\n", (unsigned)result.n_tokens,
                ember_stop_reason_name((ember_stop_reason)result.stop_reason),
                result.generate_ms > 0 ? 1000.0 * (double)result.n_tokens / result.generate_ms : 0.0);
    else
        fprintf(stderr, "error: %s\n", ember_last_error());

    ember_session_free(session); /* the session first, or the model first: either order is fine */
    ember_model_free(model);
    return st == EMBER_OK ? 0 : 1;
}
