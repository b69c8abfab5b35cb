/*
 * ember.h - the stable C ABI of ember.
 *
 * C99, no dependencies. This header changes by addition only: functions are
 * never removed or changed, params structs only grow at their end (each one
 * starts with `size_t struct_size` and has an _init function), and enum values
 * are never renumbered. Every call returns an ember_status; the message for
 * the last failure on the calling thread is in ember_last_error().
 *
 * A typical program:
 *
 *     ember_model* model = NULL;
 *     ember_session* session = NULL;
 *     ember_generate_params gp;
 *     if (ember_model_load("model.gguf", NULL, &model) != EMBER_OK) { puts(ember_last_error()); ... }
 *     ember_session_new(model, NULL, &session);
 *     ember_generate_params_init(&gp, sizeof gp);
 *     gp.temperature = 0.0f;
 *     ember_session_generate(session, "The capital of France is", &gp, on_piece, NULL, NULL);
 *     ember_session_free(session);
 *     ember_model_free(model);
 *
 * Conventions:
 *   - Handles (ember_model*, ember_session*) are opaque and created and freed
 *     in pairs: ember_model_load / ember_model_free, ember_session_new /
 *     ember_session_free. The _free functions return void and accept NULL.
 *   - Misuse is detected where it can be, SQLite-style, and answered with
 *     EMBER_ERR_MISUSE and a message naming the function and the misuse:
 *     a handle of the wrong kind, a handle already freed (best effort: the
 *     library keeps the shells of the last 1024 freed handles, so a call on
 *     one of those, or a second _free, is caught; an older one is undefined
 *     behaviour, as with free()), a call that runs or changes a session
 *     (eval, generate, reset, truncate, free) made from inside that session's
 *     piece callback or while another thread runs it. Inside the callback,
 *     reads of the same session (n_past, logits, ...) and any call on other
 *     sessions stay allowed; from another thread, only ember_session_cancel
 *     may be called while the session runs (a read from there would race with
 *     the call, and is the caller's bug as before). A _free that is refused
 *     (freed twice, or while the session runs) frees nothing and sets
 *     ember_last_error().
 *   - A params struct is filled by its _init function, which takes the size
 *     of the caller's struct: ember_model_params_init(&p, sizeof p). It sets
 *     struct_size, so a program built against an older ember.h keeps working
 *     with a newer library (which reads only the fields that struct has) and
 *     the other way round (a larger struct_size is accepted; the fields the
 *     library does not know are ignored). A struct_size smaller than the
 *     first version of the struct is EMBER_ERR_INVALID_ARGUMENT; 0 or more
 *     than 64 KiB (an uninitialised struct) is EMBER_ERR_MISUSE, and none of
 *     its fields is read.
 *     Output structs (ember_model_info, ember_generate_result) work the same
 *     way: set struct_size = sizeof the struct before the call.
 *   - A NULL params pointer means "all defaults".
 *   - Text going in is UTF-8 (invalid UTF-8 is EMBER_ERR_INVALID_ARGUMENT;
 *     file paths are passed to the operating system as they are). Text coming
 *     out into a caller buffer is NUL-terminated; the bytes needed (including
 *     the NUL) are reported through a size_t* so the caller can ask first
 *     (buffer NULL, size 0: EMBER_OK, size reported) or retry after
 *     EMBER_ERR_BUFFER_TOO_SMALL (buffer filled with as much as fits).
 *   - A model may be used by any number of sessions on any threads at once. A
 *     session is used by one thread at a time; only ember_session_cancel may
 *     be called on it from another thread.
 *
 * For maintainers: a field added to a params struct goes at its end, starting
 * at or after the sizeof of the previous version (never in its tail padding),
 * and its default must mean "behave as before".
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
#define EMBER_ABI_VERSION 6  /* 2: models, sessions, tokenizer, generation;
                                3: EMBER_ERR_MISUSE, thread caps and session warnings,
                                   EMBER_STOP_ERROR, held cancels, use_mmap;
                                4: LoRA adapters (ember_adapter_load, ember_adapter_free,
                                   ember_session_set_adapters);
                                5: grammars and JSON Schemas (ember_generate_params.grammar,
                                   .grammar_root, .json_schema; ember_grammar_check,
                                   ember_json_schema_to_grammar), chat with tools
                                   (ember_session_chat, ember_chat_params_init);
                                6: memory (ember_estimate_memory, ember_available_memory,
                                   ember_model_params.memory_budget,
                                   ember_session_params.memory_budget), quantized KV
                                   caches (EMBER_KV_Q8_0, EMBER_KV_Q4_0,
                                   ember_session_params.kv_type_k / kv_type_v), session
                                   state (ember_session_save, ember_session_save_buffer,
                                   ember_session_load, ember_session_load_buffer) */

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
    EMBER_ERR_CANCELLED = 10,       /* ember_session_cancel() stopped the call */
    EMBER_ERR_MISUSE = 11,          /* the API used against its rules: a freed or foreign handle, a call
                                       on a session from inside its own callback or while another thread
                                       runs it, an uninitialised struct (struct_size 0 or > 64 KiB) */
    EMBER_ERR_INTERNAL = 100        /* a bug in ember; please report it */
} ember_status;

/* The ABI version of the loaded library (EMBER_ABI_VERSION it was built with). */
EMBER_CAPI uint32_t ember_abi_version(void);

/* The version, e.g. "0.2.0". Never NULL; static storage. */
EMBER_CAPI const char* ember_version(void);

/* A short constant name for a status, e.g. "EMBER_ERR_INVALID_FILE".
   Unknown values give "EMBER_ERR_UNKNOWN". Never NULL. */
EMBER_CAPI const char* ember_status_name(ember_status status);

/* The message of the last failed call on this thread ("" if none has failed).
   A successful call leaves it as it is (as errno), so check the status first:
   the message belongs to the last call that returned something other than
   EMBER_OK. The pointer stays valid until the next failing ember call on this
   thread. */
EMBER_CAPI const char* ember_last_error(void);

/* Build information (version, CPU features, the CPU kernel set, whether the
   CUDA module was built; it does not load that module), one item per line,
   copied into buf[buf_size] with a terminating NUL. *needed (if not NULL)
   receives the bytes needed including the NUL. buf may be NULL only when
   buf_size is 0 (to ask for the size); a buffer too small gives
   EMBER_ERR_BUFFER_TOO_SMALL and is filled with as much as fits. */
EMBER_CAPI ember_status ember_build_info(char* buf, size_t buf_size, size_t* needed);

/* ------------------------------------------------------------------------ */
/* Models (ABI version 2)                                                   */
/* ------------------------------------------------------------------------ */

/* A token id: an index into the model's vocabulary. */
typedef int32_t ember_token;

/* A loaded model: immutable, shareable between sessions and threads. */
typedef struct ember_model ember_model;

typedef struct ember_model_params {
    size_t struct_size;   /* sizeof(ember_model_params); set by ember_model_params_init */
    int32_t n_gpu_layers; /* layers to run on the GPU, counted from the last one
                             (the output head too when all layers are); default 0;
                             more than the model has = all. Negative:
                             EMBER_ERR_INVALID_ARGUMENT. A positive count in a build
                             without CUDA is EMBER_ERR_UNSUPPORTED; with no usable
                             device, EMBER_ERR_BACKEND with the CUDA message; weights
                             that do not fit, EMBER_ERR_OUT_OF_MEMORY naming the
                             count that fits */
    /* -- ABI version 3 -- */
    int32_t reserved0;    /* the tail padding of version 1: ignored, keep 0 */
    int32_t use_mmap;     /* nonzero (default): map the file; its pages are read on use and
                             shared, and the file must not be rewritten in place while the
                             model is loaded -- replace it by writing a new file and renaming
                             it over the old one (rewriting or truncating a mapped file kills
                             the process with SIGBUS). 0: read the weights into memory at
                             load (costs the file's size in resident memory; the file may then
                             change without harm); llama.cpp's --no-mmap */
    /* -- ABI version 6 -- */
    uint64_t memory_budget; /* bytes the model may use (its part of ember_estimate_memory:
                               model_host); 0 (default) = none. Over it, the load is refused
                               with EMBER_ERR_OUT_OF_MEMORY before the weights are read, giving
                               the estimate and what to change */
} ember_model_params;

/* Fills *params with the defaults. struct_size is sizeof(*params) as the
   caller sees it. EMBER_ERR_INVALID_ARGUMENT: params is NULL or struct_size
   is smaller than the first version of the struct; EMBER_ERR_MISUSE: it is 0
   or more than 64 KiB. */
EMBER_CAPI ember_status ember_model_params_init(ember_model_params* params, size_t struct_size);

/* Opens, validates and loads the GGUF model at path (mapped, not copied,
   unless params->use_mmap is 0).
   params may be NULL for the defaults. On success *out receives a new handle
   that the caller frees with ember_model_free; on failure *out is set to NULL.
   Errors: EMBER_ERR_INVALID_ARGUMENT (path or out NULL, bad params),
   EMBER_ERR_NOT_FOUND or EMBER_ERR_IO (a missing or unreadable file; a missing
   tensor is EMBER_ERR_NOT_FOUND too), EMBER_ERR_INVALID_FILE (not a GGUF file,
   corrupt, a tensor of the wrong shape), EMBER_ERR_UNSUPPORTED (an architecture
   or tensor type ember cannot run), EMBER_ERR_OUT_OF_MEMORY. */
EMBER_CAPI ember_status ember_model_load(const char* path, const ember_model_params* params, ember_model** out);

/* Releases the handle. NULL is a no-op. Sessions created from the model hold
   their own reference to it: freeing the model handle while sessions are alive
   is allowed, and the model's memory goes with the last of them. */
EMBER_CAPI void ember_model_free(ember_model* model);

/* The shape of a model. Set struct_size = sizeof(ember_model_info) before
   calling ember_model_get_info. */
typedef struct ember_model_info {
    size_t struct_size;
    const char* arch;        /* general.architecture, e.g. "llama"; owned by the handle */
    const char* name;        /* general.name, "" when absent; owned by the handle */
    uint32_t n_vocab;        /* tokens in the vocabulary: valid ids are [0, n_vocab) */
    uint32_t n_ctx_train;    /* the context length the model was trained with */
    uint32_t n_embd;
    uint32_t n_layer;
    uint32_t n_head;
    uint32_t n_head_kv;
    uint32_t n_ff;
    ember_token token_bos;   /* -1 when the vocabulary has none */
    ember_token token_eos;   /* -1 when the vocabulary has none */
    uint64_t n_params;       /* elements of all weight tensors */
    uint64_t weight_bytes;   /* bytes of all weight tensors in the file */
} ember_model_info;

/* Fills *info (the fields that fit in info->struct_size). The strings stay
   valid until ember_model_free(model). EMBER_ERR_INVALID_ARGUMENT: model or
   info NULL, info->struct_size too small. */
EMBER_CAPI ember_status ember_model_get_info(const ember_model* model, ember_model_info* info);

/* ------------------------------------------------------------------------ */
/* Tokenizer and chat template                                              */
/* ------------------------------------------------------------------------ */

/* Tokenizes text[text_len] (UTF-8; not necessarily NUL-terminated; text may be
   NULL when text_len is 0). add_special != 0 adds BOS/EOS as the model asks;
   parse_special != 0 turns text such as "<|im_start|>" into its control token.
   *n_tokens (required) receives the number of tokens. tokens[capacity]
   receives them; tokens may be NULL when capacity is 0 (a size query,
   EMBER_OK). EMBER_ERR_BUFFER_TOO_SMALL when capacity is smaller than
   *n_tokens (the first capacity tokens are written). EMBER_ERR_INVALID_ARGUMENT:
   model or n_tokens NULL, text or tokens NULL with a non-zero length, text not
   valid UTF-8 (the message gives the byte offset). */
EMBER_CAPI ember_status ember_tokenize(const ember_model* model, const char* text, size_t text_len,
                                       int add_special, int parse_special, ember_token* tokens, size_t capacity,
                                       size_t* n_tokens);

/* Turns tokens[n_tokens] back into text, into buf[buf_size] with a terminating
   NUL; *needed (may be NULL) receives the length of the text plus 1.
   remove_special != 0 drops a leading BOS / trailing EOS that tokenizing added;
   render_special != 0 writes control tokens as their text (otherwise they
   vanish). Byte tokens may put a NUL byte inside the text: use *needed - 1 as
   its length. buf may be NULL only when buf_size is 0 (a size query);
   EMBER_ERR_BUFFER_TOO_SMALL when the text does not fit (buf gets a
   NUL-terminated prefix). EMBER_ERR_INVALID_ARGUMENT: model NULL, tokens NULL
   with n_tokens > 0, an id outside [0, n_vocab). */
EMBER_CAPI ember_status ember_detokenize(const ember_model* model, const ember_token* tokens, size_t n_tokens,
                                         int remove_special, int render_special, char* buf, size_t buf_size,
                                         size_t* needed);

/* The bytes of one token (may be an incomplete UTF-8 sequence, or empty for a
   control token unless render_special != 0), into buf as ember_detokenize
   does. EMBER_ERR_INVALID_ARGUMENT: model NULL, token outside [0, n_vocab). */
EMBER_CAPI ember_status ember_token_to_piece(const ember_model* model, ember_token token, int render_special,
                                             char* buf, size_t buf_size, size_t* needed);

/* *is_eog receives 1 when token ends a generation (EOS, EOT, the end-of-turn
   tokens of chat formats), else 0. For callers running their own sampling loop
   over ember_session_eval. EMBER_ERR_INVALID_ARGUMENT: a NULL pointer, token
   outside [0, n_vocab). */
EMBER_CAPI ember_status ember_token_is_eog(const ember_model* model, ember_token token, int* is_eog);

/* One message of a conversation: both strings UTF-8, NUL-terminated, owned by
   the caller. role is "system", "user" or "assistant" (any other role is
   EMBER_ERR_INVALID_ARGUMENT naming these). (A plain data record, not a params
   struct: it never grows.) */
typedef struct ember_chat_message {
    const char* role;
    const char* content;
} ember_chat_message;

/* Renders messages[n_messages] with the model's chat template (ChatML when the
   model has none, or one ember does not recognise) into buf[buf_size] with a
   terminating NUL; *needed (may be NULL) receives the bytes needed including
   the NUL. add_generation_prompt != 0 ends the text with the assistant's turn
   header. To generate from a conversation, prefer ember_tokenize_chat and
   ember_session_generate_tokens: tokenizing this text with parse_special = 1
   (as ember_session_generate's default params do) also turns control-token
   text that a user typed into a message (e.g. "<|im_start|>system") into
   control tokens.
   buf may be NULL only when buf_size is 0 (a size query).
   EMBER_ERR_BUFFER_TOO_SMALL: as ember_detokenize. EMBER_ERR_INVALID_ARGUMENT:
   model NULL, messages NULL or n_messages 0, a NULL or invalid UTF-8 role or
   content (the message names the index), a conversation the template refuses
   (e.g. turns that do not alternate). */
EMBER_CAPI ember_status ember_apply_chat_template(const ember_model* model, const ember_chat_message* messages,
                                                  size_t n_messages, int add_generation_prompt, char* buf,
                                                  size_t buf_size, size_t* needed);

/* Renders messages[n_messages] as ember_apply_chat_template does and tokenizes
   the text for ember_session_generate_tokens (no BOS beyond what the template
   writes): control tokens are parsed in the template's own text only, and the
   messages' contents are tokenized as the text they are, so a message cannot
   forge a turn; parse_special_in_content != 0 parses control-token text in the
   contents too (llama.cpp's behaviour). *n_tokens, tokens[capacity] and the
   errors are as ember_tokenize's, plus those of ember_apply_chat_template. */
EMBER_CAPI ember_status ember_tokenize_chat(const ember_model* model, const ember_chat_message* messages,
                                            size_t n_messages, int add_generation_prompt,
                                            int parse_special_in_content, ember_token* tokens, size_t capacity,
                                            size_t* n_tokens);

/* ------------------------------------------------------------------------ */
/* Sessions                                                                 */
/* ------------------------------------------------------------------------ */

/* One conversation with a model: its own KV cache, threads and buffers. */
typedef struct ember_session ember_session;

/* Values of ember_session_params.kv_type. */
typedef enum ember_kv_type {
    EMBER_KV_F16 = 0,  /* default: half the memory */
    EMBER_KV_F32 = 1,
    EMBER_KV_Q8_0 = 2, /* (ABI 6) 8.5 bits a value: 53% of F16 */
    EMBER_KV_Q4_0 = 3  /* (ABI 6) 4.5 bits a value: 28% of F16, at an accuracy cost */
} ember_kv_type;

/* Values of ember_session_params.precision: how the CPU multiplies quantized
   weights by activations, in generation steps and prompts (see ember::Precision). */
typedef enum ember_precision {
    EMBER_PRECISION_DEFAULT = 0, /* EMBER_PRECISION when set ("fast"/"exact"), else exact */
    EMBER_PRECISION_FAST = 1,    /* 8-bit activations (as llama.cpp): faster (prompts ~2x), perplexity +0.1..0.4% */
    EMBER_PRECISION_EXACT = 2    /* 16-bit activations: logits within 1e-2 of a float64 reference */
} ember_precision;

typedef struct ember_session_params {
    size_t struct_size; /* sizeof(ember_session_params); set by ember_session_params_init */
    uint32_t n_ctx;     /* tokens the KV cache holds; 0 (default) = the model's training
                           context, capped at 4096 */
    uint32_t n_batch;   /* prompt tokens per forward pass, >= 1; default 512 */
    int32_t n_threads;  /* 0 (default) = one per core; negative: EMBER_ERR_INVALID_ARGUMENT */
    int32_t kv_type;    /* an ember_kv_type; default EMBER_KV_F16 */
    int32_t precision;  /* an ember_precision; default EMBER_PRECISION_DEFAULT (appended after
                           kv_type: a caller built with an older header, whose struct_size
                           ends before it, gets the default) */
    /* -- ABI version 6 -- */
    int32_t kv_type_k;  /* the keys' cache type, an ember_kv_type; -1 (default) = kv_type */
    int32_t kv_type_v;  /* the values' cache type; -1 (default) = kv_type */
    uint64_t memory_budget; /* bytes the model and this session may use together (ember_estimate_memory's
                               model_host + session_host); 0 (default) = none. Over it, or (without a
                               budget) when the session needs more than the process can get, the session
                               is refused with EMBER_ERR_OUT_OF_MEMORY before anything is allocated. The
                               KV cache is committed at creation: a session that was created never dies
                               later of the OOM killer for lack of memory for its cache */
} ember_session_params;

/* Fills *params with the defaults; as ember_model_params_init. */
EMBER_CAPI ember_status ember_session_params_init(ember_session_params* params, size_t struct_size);

/* Creates a session on model (params NULL: defaults): allocates the KV cache
   and starts the threads. The session holds its own reference to the model
   (see ember_model_free). On success *out receives a handle the caller frees
   with ember_session_free; on failure *out is set to NULL.
   Errors: EMBER_ERR_INVALID_ARGUMENT (model or out NULL, an out-of-range
   param, named in the message), EMBER_ERR_OUT_OF_MEMORY (the cache does not
   fit). */
EMBER_CAPI ember_status ember_session_new(const ember_model* model, const ember_session_params* params,
                                          ember_session** out);

/* Stops the threads and releases the session. NULL is a no-op. Must not be
   called while another thread is inside a call on this session. */
EMBER_CAPI void ember_session_free(ember_session* session);

/* Runs the model over tokens[n_tokens], appended to the cache (in batches of
   n_batch). Afterwards ember_session_logits gives the row of the last token.
   EMBER_ERR_INVALID_ARGUMENT: session or tokens NULL, n_tokens 0, an id
   outside the vocabulary, more tokens than the cache has room for (nothing is
   evaluated then). EMBER_ERR_CANCELLED: ember_session_cancel interrupted it,
   or came before the call and was held for it (nothing is evaluated then;
   see ember_session_cancel); after an interruption the tokens of the batches that completed stay in the history and the
   cache; the rest of this call's tokens are dropped, so a retry does not
   repeat them -- ember_session_n_past says how many are kept -- and there
   are no logits until the next eval or generate). A backend or memory error
   during the run leaves the history the same way. */
EMBER_CAPI ember_status ember_session_eval(ember_session* session, const ember_token* tokens, size_t n_tokens);

/* *logits receives the logits that follow the session's last token, [n_vocab]
   floats owned by the session and valid until the next call that evaluates,
   resets, truncates or frees it; *n_vocab receives their count.
   EMBER_ERR_INVALID_ARGUMENT: a NULL pointer, or no current logits: nothing
   evaluated yet, or after ember_session_generate (its last sampled token is
   kept in the history and run through the model by the next eval or
   generate), ember_session_truncate or ember_session_reset. */
EMBER_CAPI ember_status ember_session_logits(const ember_session* session, const float** logits, size_t* n_vocab);

/* Receives each piece of generated text as soon as it is complete: always
   valid UTF-8 (bytes the model produced that are not -- byte tokens -- become
   U+FFFD as Python's bytes.decode('utf-8', errors='replace') does; the tokens
   keep the bytes), never part of a character, never text that may turn out to
   be a stop string.
   piece[len] is '\0', but use len: the model may generate a NUL byte. piece is
   valid only during the call. Return nonzero to go on,
   0 to stop generation (ember_generate_result.stop_reason is then
   EMBER_STOP_CALLBACK). Runs on the thread that called ember_session_generate;
   it must not call ember functions on the same session, nor longjmp out. */
typedef int (*ember_piece_callback)(const char* piece, size_t len, void* user_data);

/* An entry of ember_generate_params.logit_bias: added to the logit of token
   before sampling; -INFINITY bans it. */
typedef struct ember_logit_bias {
    ember_token token;
    float bias;
} ember_logit_bias;

typedef struct ember_generate_params {
    size_t struct_size;        /* sizeof(ember_generate_params); set by ember_generate_params_init */
    int32_t max_tokens;        /* tokens to generate (default 128); -1 = until end of generation or
                                  a full context; 0 = only evaluate the prompt */
    /* sampling; see include/ember/sampler.hpp for the order they apply in */
    float temperature;         /* >= 0; 0 = greedy (default 0.8) */
    int32_t top_k;             /* <= 0 disables (default 40) */
    float top_p;               /* in [0, 1]; 1 disables (default 0.95) */
    float min_p;               /* in [0, 1]; 0 disables (default 0.05) */
    float repeat_penalty;      /* > 0; 1 disables (default 1) */
    float frequency_penalty;   /* 0 disables (default) */
    float presence_penalty;    /* 0 disables (default) */
    int32_t penalty_last_n;    /* window of tokens the penalties see; 0 disables, -1 = all (default 64) */
    uint64_t seed;             /* the random seed; the default is fixed, so runs repeat */
    const ember_logit_bias* logit_bias; /* [n_logit_bias], owned by the caller; default NULL */
    size_t n_logit_bias;
    /* stop strings: generation ends where one appears in the generated text, which then
       excludes it. [n_stop] non-empty UTF-8 strings owned by the caller; default none */
    const char* const* stop;
    size_t n_stop;
    int ignore_eos;            /* nonzero: go on past end-of-generation tokens (default 0) */
    int add_special;           /* nonzero: add BOS when the cache is empty (default 1) */
    int parse_special;         /* nonzero: "<|im_start|>" etc. in the prompt become control tokens (default 1) */
    /* -- added in ABI 5: constrained output (NULL: none; at most one of the two) -- */
    const char* grammar;       /* a GBNF grammar (llama.cpp's syntax, UTF-8, NUL-terminated): every token
                                  generated keeps the text a prefix of its language, and generation ends
                                  where the language allows (EMBER_STOP_EOG). A grammar that does not
                                  parse: EMBER_ERR_INVALID_ARGUMENT, "grammar:LINE:COLUMN: ..." */
    const char* grammar_root;  /* the start rule of grammar; NULL = "root" */
    const char* json_schema;   /* a JSON Schema (text): the output is a JSON value it accepts;
                                  "{\"type\": \"object\"}" is JSON mode. Unsupported keywords:
                                  EMBER_ERR_UNSUPPORTED naming the keyword and its path */
} ember_generate_params;

/* Fills *params with the defaults; as ember_model_params_init. */
EMBER_CAPI ember_status ember_generate_params_init(ember_generate_params* params, size_t struct_size);

/* Why a generation ended. */
typedef enum ember_stop_reason {
    EMBER_STOP_MAX_TOKENS = 0,   /* max_tokens were generated */
    EMBER_STOP_EOG = 1,          /* the model produced an end-of-generation token */
    EMBER_STOP_STRING = 2,       /* the text reached a stop string */
    EMBER_STOP_CALLBACK = 3,     /* the piece callback returned 0 */
    EMBER_STOP_CANCELLED = 4,    /* ember_session_cancel was called */
    EMBER_STOP_CONTEXT_FULL = 5, /* the KV cache is full (only with max_tokens -1) */
    EMBER_STOP_ERROR = 6         /* the call failed (part-way, or before it started); its status and
                                    ember_last_error say why */
} ember_stop_reason;

/* "max_tokens", "eog", "stop_string", "callback", "cancelled", "context_full", "error";
   "unknown" for other values. Never NULL; static storage. */
EMBER_CAPI const char* ember_stop_reason_name(ember_stop_reason reason);

/* What a generation produced. Set struct_size = sizeof(ember_generate_result)
   before the call. The pointers are owned by the session and stay valid until
   its next generate, reset, truncate or free. */
typedef struct ember_generate_result {
    size_t struct_size;
    const char* text;              /* the generated text, NUL-terminated, stop string excluded;
                                      valid UTF-8 (see ember_piece_callback). After
                                      EMBER_STOP_CALLBACK: exactly the pieces the callback got */
    size_t text_len;               /* its length in bytes */
    const ember_token* tokens;     /* [n_tokens] the generated tokens, including a final
                                      end-of-generation token */
    size_t n_tokens;
    size_t n_prompt_tokens;        /* tokens of the call's prompt now in the history: all of them,
                                      unless a cancel or an error stopped the prompt part-way (then
                                      those of the batches that completed; 0 for a held cancel) */
    int32_t stop_reason;           /* an ember_stop_reason */
    double prompt_ms;              /* evaluating the prompt */
    double generate_ms;            /* from the first sampled token to the end */
    double time_to_first_token_ms; /* from the call to the first token's text */
} ember_generate_result;

/* Tokenizes prompt (UTF-8, NUL-terminated; "" is allowed when the cache is not
   empty), evaluates it after what the cache holds, then samples up to
   params->max_tokens tokens (params NULL: defaults), passing their text to
   on_piece (may be NULL) as it is produced. The prompt and the generated
   tokens stay in the cache: call ember_session_reset to start over. result
   (may be NULL) receives the text and statistics, also when the call fails:
   a call that fails or is cancelled after generating keeps what it produced --
   result holds those tokens and their text, with stop_reason EMBER_STOP_ERROR
   (EMBER_STOP_CANCELLED when cancelled), and the session's history holds
   exactly the prompt and those tokens.
   Errors: EMBER_ERR_INVALID_ARGUMENT (session or prompt NULL, prompt not valid
   UTF-8, a prompt that does not fit in the context (never silently truncated),
   an out-of-range param such as temperature -1 or top_p 2, named in the
   message, result->struct_size too small); EMBER_ERR_CANCELLED
   (ember_session_cancel stopped it, or was held from before the call; result
   holds what was generated, with stop_reason EMBER_STOP_CANCELLED: a
   cancellation is reported the same way in C, C++ and Python); any other error
   part-way (EMBER_ERR_INVALID_FILE for non-finite logits from a corrupt model,
   EMBER_ERR_BACKEND, EMBER_ERR_OUT_OF_MEMORY) with stop_reason EMBER_STOP_ERROR.
   A callback returning 0, a stop string, an end-of-generation token or
   max_tokens are EMBER_OK. */
EMBER_CAPI ember_status ember_session_generate(ember_session* session, const char* prompt,
                                               const ember_generate_params* params, ember_piece_callback on_piece,
                                               void* user_data, ember_generate_result* result);

/* ember_session_generate with a prompt already tokenized: prompt[n_prompt]
   (prompt may be NULL when n_prompt is 0, which is allowed when the cache is
   not empty). Ids outside the vocabulary: EMBER_ERR_INVALID_ARGUMENT. */
EMBER_CAPI ember_status ember_session_generate_tokens(ember_session* session, const ember_token* prompt,
                                                      size_t n_prompt, const ember_generate_params* params,
                                                      ember_piece_callback on_piece, void* user_data,
                                                      ember_generate_result* result);

/* Empties the cache (a new conversation) and withdraws a held cancel.
   EMBER_ERR_INVALID_ARGUMENT: session NULL. */
EMBER_CAPI ember_status ember_session_reset(ember_session* session);

/* Keeps the first n_keep tokens of the cache (to regenerate from a point).
   EMBER_ERR_INVALID_ARGUMENT: session NULL, n_keep > the tokens in the cache. */
EMBER_CAPI ember_status ember_session_truncate(ember_session* session, size_t n_keep);

/* Asks the ember_session_eval or ember_session_generate running now on
   another thread to stop at its next check (between layers); that call then
   returns EMBER_ERR_CANCELLED (a call that ends before its next check ends the
   cancel with it). A cancel is never lost: without a call running it is
   held, and the next eval or generate on the session returns
   EMBER_ERR_CANCELLED at once, having done nothing (ember_session_reset and
   ember_session_clear_cancel withdraw it). Safe from any thread, never blocks.
   EMBER_ERR_INVALID_ARGUMENT: session NULL. */
EMBER_CAPI ember_status ember_session_cancel(ember_session* session);

/* Withdraws a cancel that no call has taken yet (one that arrived just after
   the call it meant to stop had ended, say). Safe from any thread, never
   blocks. EMBER_ERR_INVALID_ARGUMENT: session NULL. */
EMBER_CAPI ember_status ember_session_clear_cancel(ember_session* session);

/* ---- Grammars and JSON Schemas ------------------------------------------------ */

/* Checks a GBNF grammar without a model (root NULL = "root"). EMBER_OK when it
   parses; EMBER_ERR_INVALID_ARGUMENT otherwise, with ember_last_error() saying
   "grammar:LINE:COLUMN: what, expected what" and *line / *column (each may be
   NULL) receiving the position (1-based; 0 when the error has none). */
EMBER_CAPI ember_status ember_grammar_check(const char* grammar, const char* root, size_t* line, size_t* column);

/* The GBNF grammar ember builds for a JSON Schema (to inspect or edit), into
   buf[buf_size] as ember_detokenize writes text. EMBER_ERR_UNSUPPORTED for a
   keyword ember does not implement, EMBER_ERR_INVALID_ARGUMENT for a malformed
   schema; ember_last_error() names the keyword and its JSON Pointer path. */
EMBER_CAPI ember_status ember_json_schema_to_grammar(const char* json_schema, char* buf, size_t buf_size,
                                                     size_t* needed);

/* ---- Chat with tools ------------------------------------------------------------

   One chat turn over a conversation, with tools in the OpenAI shape: the model
   either answers in text or calls tools, whose arguments are valid JSON for
   their schemas. The application runs the calls and appends them and their
   results to the conversation, then calls ember_session_chat again. The
   rendered prompt reuses whatever the session's history shares with it. */

/* A tool the model may call. Plain records (never grow). */
typedef struct ember_tool {
    const char* name;        /* [A-Za-z0-9_-]{1,64} */
    const char* description; /* may be NULL */
    const char* parameters;  /* JSON Schema of the arguments object (text); NULL = no arguments */
} ember_tool;

typedef struct ember_tool_call {
    const char* id;          /* the call's id (ember makes one when the format has none) */
    const char* name;
    const char* arguments;   /* a JSON object, as text */
} ember_tool_call;

/* A message: role "system", "user", "assistant" (content and/or tool_calls) or
   "tool" (content: a result; tool_call_id: the call it answers; name: the tool). */
typedef struct ember_chat_turn {
    const char* role;
    const char* content;                 /* may be NULL for an assistant message with tool calls */
    const ember_tool_call* tool_calls;   /* [n_tool_calls] */
    size_t n_tool_calls;
    const char* tool_call_id;            /* may be NULL */
    const char* name;                    /* may be NULL */
} ember_chat_turn;

typedef enum ember_tool_choice {
    EMBER_TOOL_CHOICE_AUTO = 0,     /* text or calls (default) */
    EMBER_TOOL_CHOICE_NONE = 1,     /* text only: the tools are not shown */
    EMBER_TOOL_CHOICE_REQUIRED = 2, /* at least one call */
    EMBER_TOOL_CHOICE_FUNCTION = 3  /* a call of tool_choice_name */
} ember_tool_choice;

typedef struct ember_chat_params {
    size_t struct_size;           /* sizeof(ember_chat_params); set by ember_chat_params_init */
    const ember_tool* tools;      /* [n_tools], owned by the caller; default none */
    size_t n_tools;
    int32_t tool_choice;          /* an ember_tool_choice (default AUTO) */
    const char* tool_choice_name; /* the tool, for EMBER_TOOL_CHOICE_FUNCTION */
    int parallel_tool_calls;      /* nonzero: several calls in one reply (default 1) */
    const char* response_format;  /* a JSON Schema the text reply must follow ("{\"type\": \"object\"}":
                                     JSON mode), or NULL; not with tools */
} ember_chat_params;

EMBER_CAPI ember_status ember_chat_params_init(ember_chat_params* params, size_t struct_size);

/* What a chat turn produced. Set struct_size = sizeof(ember_chat_result) before
   the call; the pointers are owned by the session and stay valid until its next
   generate, chat, reset, truncate or free. */
typedef struct ember_chat_result {
    size_t struct_size;
    const char* content;              /* the text of the reply (without the calls' syntax), NUL-terminated */
    size_t content_len;
    const ember_tool_call* tool_calls; /* [n_tool_calls] the calls, arguments valid against their schemas */
    size_t n_tool_calls;
} ember_chat_result;

/* Renders messages[n_messages] and chat->tools with the model's chat template
   (Qwen2.5/Hermes, Llama 3.1, Mistral Nemo formats byte for byte as their
   templates; any other model: a generic JSON format), generates the reply under
   the tools' constraint, and splits it into text and calls. on_piece receives
   the reply's text only, never the calls' syntax. gen_result (may be NULL)
   receives the raw generation as ember_session_generate's result (also when
   the call fails or is cancelled; result then holds no text and no calls). chat NULL:
   defaults (no tools). Errors as ember_session_generate, plus
   EMBER_ERR_INVALID_ARGUMENT for a conversation or tools the format refuses (a
   role outside the four, a tool_choice naming no tool, response_format with
   tools), EMBER_ERR_UNSUPPORTED / INVALID_ARGUMENT for a tool's schema. */
EMBER_CAPI ember_status ember_session_chat(ember_session* session, const ember_chat_turn* messages, size_t n_messages,
                                           const ember_chat_params* chat, const ember_generate_params* params,
                                           ember_piece_callback on_piece, void* user_data, ember_chat_result* result,
                                           ember_generate_result* gen_result);

/* ---- LoRA adapters -----------------------------------------------------------

   A LoRA adapter (llama.cpp's GGUF adapter format: general.type "adapter",
   adapter.type "lora", tensors <base tensor>.lora_a / .lora_b) is loaded once
   per model and applied per session, stacked, each with its own scale:
   y = W x + sum_i scale_i * alpha_i / r_i * B_i (A_i x). The base weights are
   never changed; any number of sessions on any threads may apply one adapter. */

typedef struct ember_adapter ember_adapter;

/* Loads the adapter at path for model, checking it against the model
   (architecture, every target tensor, shapes, ranks, types). The adapter holds
   its own reference to the model. On success *out receives a handle the
   caller frees with ember_adapter_free; on failure *out is set to NULL.
   Errors: EMBER_ERR_INVALID_ARGUMENT (NULL arguments), EMBER_ERR_NOT_FOUND /
   EMBER_ERR_IO (the file), EMBER_ERR_INVALID_FILE (not an adapter, another
   architecture, a tensor that does not fit the model: the message names the
   tensor and the shapes), EMBER_ERR_UNSUPPORTED (a tensor type or adapter kind
   ember cannot apply, e.g. activated LoRA), EMBER_ERR_MISUSE (a freed or
   foreign model handle). */
EMBER_CAPI ember_status ember_adapter_load(const ember_model* model, const char* path, ember_adapter** out);

/* Releases the caller's reference. NULL is a no-op. Sessions that apply the
   adapter keep it alive until they stop applying it or are freed. */
EMBER_CAPI void ember_adapter_free(ember_adapter* adapter);

/* Applies adapters[0..n) with scales[0..n) (scales NULL: 1.0 each), stacked,
   replacing the session's list; n = 0 removes them all. Takes microseconds
   (nothing is copied). A list that differs from the current one invalidates
   the KV cache: the history is kept and runs through the model again at the
   next eval or generate (the logits are unavailable until then).
   Errors: EMBER_ERR_INVALID_ARGUMENT (session NULL, adapters NULL with n > 0,
   a scale that is not finite, an adapter loaded for another model),
   EMBER_ERR_MISUSE (a freed handle, or a call made while the session runs
   another call, e.g. from its piece callback). */
EMBER_CAPI ember_status ember_session_set_adapters(ember_session* session, const ember_adapter* const* adapters,
                                                   const float* scales, size_t n);

/* *n_past receives the number of tokens in the session's history: those in
   the cache, plus the last token sampled by ember_session_generate while it
   waits to be run by the next eval or generate.
   EMBER_ERR_INVALID_ARGUMENT: a NULL pointer. */
EMBER_CAPI ember_status ember_session_n_past(const ember_session* session, size_t* n_past);

/* *n_ctx receives the number of tokens the cache holds (after resolving 0).
   EMBER_ERR_INVALID_ARGUMENT: a NULL pointer. */
EMBER_CAPI ember_status ember_session_n_ctx(const ember_session* session, uint32_t* n_ctx);

/* *n_threads receives the number of threads the session computes with: after
   resolving 0 (one per usable core) and capping a count above the cores this
   process may use (its CPU affinity and cgroup CPU quota) to that number, with
   a warning, unless the environment has EMBER_OVERSUBSCRIBE=1.
   EMBER_ERR_INVALID_ARGUMENT: a NULL pointer. */
EMBER_CAPI ember_status ember_session_n_threads(const ember_session* session, int32_t* n_threads);

/* The warnings of the session's creation: a parameter adjusted (n_threads
   capped to the usable cores) or risky (n_ctx beyond the model's training
   context). *count receives their number; ember_session_warning sets *text to
   warning `index` (< count), a NUL-terminated UTF-8 string owned by the
   session, valid until it is freed.
   EMBER_ERR_INVALID_ARGUMENT: a NULL pointer, or index >= count. */
EMBER_CAPI ember_status ember_session_warning_count(const ember_session* session, size_t* count);
EMBER_CAPI ember_status ember_session_warning(const ember_session* session, size_t index, const char** text);

/* ------------------------------------------------------------------------ */
/* Memory and saved state (ABI version 6)                                    */
/* ------------------------------------------------------------------------ */

/* What a model and one session will use, in bytes (see ember/memory.hpp).
   Set struct_size = sizeof(ember_memory_estimate) before the call; fields past
   the caller's struct_size are not written. */
typedef struct ember_memory_estimate {
    size_t struct_size;
    /* the model (once per process) */
    uint64_t weights_file;      /* weight tensors in the file */
    uint64_t weights_resident;  /* of those, resident on the host once the model ran */
    uint64_t weights_repacked;  /* the CPU's repacked copies */
    uint64_t weights_gpu;       /* device copies of the offloaded layers */
    uint64_t tokenizer;         /* vocabulary, merges, tables, metadata */
    uint64_t runtime;           /* the library's fixed cost */
    /* one session */
    uint64_t kv_cache;          /* host KV cache (committed at creation) */
    uint64_t kv_cache_gpu;      /* device KV cache */
    uint64_t kv_full_layers;    /* of the two: full-attention layers */
    uint64_t kv_swa_layers;     /* sliding-window layers */
    uint64_t activations;       /* host buffers, logits, thread scratch */
    uint64_t activations_gpu;
    uint32_t n_ctx;             /* the context after resolving 0 */
    uint32_t n_threads;         /* after resolving 0 */
    /* totals */
    uint64_t model_host;        /* weights_resident + weights_repacked + tokenizer + runtime */
    uint64_t session_host;      /* kv_cache + activations */
    uint64_t host_total;        /* model_host + session_host: the expected peak RSS */
    uint64_t gpu_total;
} ember_memory_estimate;

/* Reads only the metadata of the GGUF file at path and fills *out with what
   ember_model_load(path, model_params) and one ember_session_new(model,
   session_params) would use. model_params / session_params may be NULL for the
   defaults. Errors as ember_model_load for the file; EMBER_ERR_INVALID_ARGUMENT
   for params a session would refuse, a NULL path or out, out->struct_size too
   small. */
EMBER_CAPI ember_status ember_estimate_memory(const char* path, const ember_model_params* model_params,
                                              const ember_session_params* session_params,
                                              ember_memory_estimate* out);

/* *bytes receives the memory this process can still get: the smaller of
   MemAvailable + SwapFree and the cgroup's limit minus its use (UINT64_MAX when
   neither can be read). EMBER_ERR_INVALID_ARGUMENT: bytes NULL. */
EMBER_CAPI ember_status ember_available_memory(uint64_t* bytes);

/* Saves the session's state -- its history, the KV rows of the evaluated
   tokens, the last logits, the adapter set -- with the model's fingerprint and
   a checksum, to a temporary file beside path renamed over path (a crash never
   leaves a half-written file). EMBER_ERR_IO when it cannot be written;
   EMBER_ERR_MISUSE during another call on the session. */
EMBER_CAPI ember_status ember_session_save(const ember_session* session, const char* path);
/* The same bytes into buf[buf_size]; *needed (required) receives their size.
   buf may be NULL when buf_size is 0 (a size query); EMBER_ERR_BUFFER_TOO_SMALL
   when they do not fit (nothing is written then). */
EMBER_CAPI ember_status ember_session_save_buffer(const ember_session* session, void* buf, size_t buf_size,
                                                  size_t* needed);
/* Replaces the session's state with a saved one. Refused, with the session
   unchanged: EMBER_ERR_INVALID_FILE for a file that is not a state file, of
   another version, truncated or corrupted; EMBER_ERR_INVALID_ARGUMENT for a
   state of another model, another K or V cache type, more tokens than the
   session's n_ctx, or another adapter set (the message says which);
   EMBER_ERR_NOT_FOUND / EMBER_ERR_IO for a file that cannot be read. */
EMBER_CAPI ember_status ember_session_load(ember_session* session, const char* path);
EMBER_CAPI ember_status ember_session_load_buffer(ember_session* session, const void* data, size_t size);

#ifdef __cplusplus
}
#endif

#endif /* EMBER_H */
