/* ember-fridge [MODEL | --model MODEL]
 *
 * A kitchen assistant on the appliance's own model, through ember's C ABI: it
 * reads one user line per turn from stdin (EOF ends), lets the model answer in
 * text or call the tools of tools.json, runs the calls against a simulated
 * fridge (inventory, shopping list, temperatures, orders) and feeds the results
 * back until the model answers in text. One line per event on stdout:
 *
 *     USER: <line>
 *     CALL <name> <arguments JSON>
 *     RESULT <name> <result JSON>
 *     ASSISTANT: <text, newlines as spaces>
 *     ERROR: <message>            (a turn that failed; the program goes on, and exits 1 at the end)
 *     STATE <json>                (last line: the fridge after the session)
 *
 * The grammar ember builds from the tools' schemas guarantees every call names
 * one of the tools and that its arguments match the schema (types, enums,
 * bounds), so nothing here re-checks them; what the schema cannot say (the
 * per-zone temperature range) is checked and answered with an error result the
 * model reads. Memory: the conversation's strings are copied out of each reply
 * (the library owns them only until the next call) and freed when a turn
 * leaves the history; the fridge itself is fixed-size.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ember.h"
#include <fridge_tools.h> /* generated in the build tree: fridge_tools_json, examples/fridge/tools.json compiled in */

#define DEFAULT_MODEL "models/SmolLM2-135M-Instruct.Q4_1.gguf"
#define MAX_TOOLS 8            /* tools.json holds 4 */
#define MAX_LINE 2048          /* bytes of one user line, newline included */
/* chat calls that may end in tool calls, per user line: a call and a follow-up. A model as small
   as the default one tends to repeat a call after its result instead of answering. */
#define MAX_TOOL_ROUNDS 2
/* earlier user turns kept in the conversation: none, since a model as small as the default one
   copies an earlier turn's calls rather than follow the new line; 3 suit a larger model */
#define KEEP_TURNS 0
#define MAX_TOKENS 256         /* per reply: a call, or a short answer, ends well within it */
#define N_CTX 4096
#define ITEM_BYTES 192         /* an item name: the schema allows 40 characters, UTF-8 <= 160 bytes */
#define MAX_ITEMS 32           /* shopping list entries, inventory entries, items of one order */
#define MAX_ORDERS 16
#define RESULT_BYTES 16384     /* a tool result as JSON (an order of MAX_ITEMS items fits) */
#define STATE_BYTES (256 * 1024) /* the final state as JSON (MAX_ORDERS full orders fit) */
#define JSON_MAX_DEPTH 32      /* nesting the small JSON reader follows before it gives up */

static const char SYSTEM_PROMPT[] =
    "You are the assistant built into a kitchen fridge. Answer questions briefly. "
    "For commands (shopping list, temperatures, orders, what is inside), call the tools.";

/* ---- A small JSON reader: spans of text, no tree, no allocation ---------------------- */

typedef struct span {
    const char* p;
    const char* end;
} span;

static const char* skip_ws(const char* p, const char* end) {
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        ++p;
    return p;
}

/* The end of the JSON string starting at p ('"'), or NULL. */
static const char* skip_string(const char* p, const char* end) {
    for (++p; p < end; ++p) {
        if (*p == '\\') {
            if (++p == end)
                return NULL;
        } else if (*p == '"') {
            return p + 1;
        }
    }
    return NULL;
}

/* The end of the JSON value starting at p (after whitespace), or NULL when it is malformed
   or nests deeper than JSON_MAX_DEPTH. Lenient about what is between the brackets' members:
   the texts it reads are tools.json and ember's own compact arguments. */
static const char* skip_value(const char* p, const char* end, int depth) {
    p = skip_ws(p, end);
    if (p == end || depth > JSON_MAX_DEPTH)
        return NULL;
    if (*p == '"')
        return skip_string(p, end);
    if (*p == '{' || *p == '[') {
        char close = *p == '{' ? '}' : ']';
        p = skip_ws(p + 1, end);
        if (p < end && *p == close)
            return p + 1;
        for (;;) {
            if (close == '}') {
                p = skip_ws(p, end);
                if (p == end || *p != '"' || !(p = skip_string(p, end)))
                    return NULL;
                p = skip_ws(p, end);
                if (p == end || *p != ':')
                    return NULL;
                ++p;
            }
            if (!(p = skip_value(p, end, depth + 1)))
                return NULL;
            p = skip_ws(p, end);
            if (p == end)
                return NULL;
            if (*p == close)
                return p + 1;
            if (*p != ',')
                return NULL;
            ++p;
        }
    }
    while (p < end && *p && strchr("+-.0123456789eEtruefalsn", *p) != NULL)
        ++p; /* a number, true, false or null */
    return p;
}

/* The value of key in the object o (keys compared as written: ours have no escapes).
   1 and *out set when found, 0 otherwise. */
static int json_member(span o, const char* key, span* out) {
    const char* p = skip_ws(o.p, o.end);
    size_t klen = strlen(key);
    if (p == o.end || *p != '{')
        return 0;
    p = skip_ws(p + 1, o.end);
    while (p < o.end && *p == '"') {
        const char* k = p + 1;
        const char* kend = skip_string(p, o.end);
        const char* v;
        if (!kend)
            return 0;
        p = skip_ws(kend, o.end);
        if (p == o.end || *p != ':')
            return 0;
        v = skip_ws(p + 1, o.end);
        if (!(p = skip_value(v, o.end, 1)))
            return 0;
        if ((size_t)(kend - 1 - k) == klen && memcmp(k, key, klen) == 0) {
            out->p = v;
            out->end = p;
            return 1;
        }
        p = skip_ws(p, o.end);
        if (p < o.end && *p == ',')
            p = skip_ws(p + 1, o.end);
    }
    return 0;
}

/* The items of the array a, one per call: *it starts as a.p; 1 and *out set per item, 0 at the end. */
static int json_next_item(span a, const char** it, span* out) {
    const char* p = skip_ws(*it, a.end);
    if (*it == a.p) { /* the first call: step over '[' */
        if (p == a.end || *p != '[')
            return 0;
        p = skip_ws(p + 1, a.end);
    } else if (p < a.end && *p == ',') {
        p = skip_ws(p + 1, a.end);
    }
    if (p == a.end || *p == ']')
        return 0;
    out->p = p;
    if (!(out->end = skip_value(p, a.end, 1)))
        return 0;
    *it = out->end;
    return 1;
}

static void put_utf8(unsigned long cp, char* buf, size_t* n) {
    if (cp < 0x80) {
        buf[(*n)++] = (char)cp;
    } else if (cp < 0x800) {
        buf[(*n)++] = (char)(0xC0 | (cp >> 6));
        buf[(*n)++] = (char)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        buf[(*n)++] = (char)(0xE0 | (cp >> 12));
        buf[(*n)++] = (char)(0x80 | ((cp >> 6) & 0x3F));
        buf[(*n)++] = (char)(0x80 | (cp & 0x3F));
    } else {
        buf[(*n)++] = (char)(0xF0 | (cp >> 18));
        buf[(*n)++] = (char)(0x80 | ((cp >> 12) & 0x3F));
        buf[(*n)++] = (char)(0x80 | ((cp >> 6) & 0x3F));
        buf[(*n)++] = (char)(0x80 | (cp & 0x3F));
    }
}

static int hex4(const char* p, const char* end, unsigned long* out) {
    int i;
    *out = 0;
    if (end - p < 4)
        return 0;
    for (i = 0; i < 4; ++i) {
        char c = p[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0)
            return 0;
        *out = *out * 16 + (unsigned long)d;
    }
    return 1;
}

/* The JSON string s decoded into buf[cap] (NUL-terminated; a lone surrogate becomes U+FFFD).
   1 on success, 0 when s is not a string or does not fit. */
static int json_string(span s, char* buf, size_t cap) {
    const char* p = s.p;
    size_t n = 0;
    if (p == s.end || *p != '"')
        return 0;
    for (++p; p < s.end && *p != '"'; ++p) {
        if (n + 1 >= cap) /* room for a byte and the NUL; a \u escape checks for its 4 below */
            return 0;
        if (*p != '\\') {
            buf[n++] = *p;
            continue;
        }
        if (++p == s.end)
            return 0;
        switch (*p) {
        case 'b': buf[n++] = '\b'; break;
        case 'f': buf[n++] = '\f'; break;
        case 'n': buf[n++] = '\n'; break;
        case 'r': buf[n++] = '\r'; break;
        case 't': buf[n++] = '\t'; break;
        case 'u': {
            unsigned long cp, lo;
            if (n + 4 >= cap || !hex4(p + 1, s.end, &cp))
                return 0;
            p += 4;
            if (cp >= 0xD800 && cp < 0xDC00 && s.end - p >= 7 && p[1] == '\\' && p[2] == 'u' &&
                hex4(p + 3, s.end, &lo) && lo >= 0xDC00 && lo < 0xE000) {
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                p += 6;
            } else if (cp >= 0xD800 && cp < 0xE000) {
                cp = 0xFFFD;
            }
            put_utf8(cp, buf, &n);
            break;
        }
        default: buf[n++] = *p; break; /* \" \\ \/ */
        }
    }
    if (p == s.end)
        return 0;
    buf[n] = '\0';
    return 1;
}

/* The integer value s, 1 on success. */
static int json_int(span s, long* out) {
    char tmp[32];
    char* e;
    size_t len = (size_t)(s.end - s.p);
    if (len == 0 || len >= sizeof tmp)
        return 0;
    memcpy(tmp, s.p, len);
    tmp[len] = '\0';
    *out = strtol(tmp, &e, 10);
    return *e == '\0';
}

/* A copy of s's text, NUL-terminated (malloc'd), or NULL when memory runs out. */
static char* span_dup(span s) {
    size_t len = (size_t)(s.end - s.p);
    char* r = (char*)malloc(len + 1);
    if (r) {
        memcpy(r, s.p, len);
        r[len] = '\0';
    }
    return r;
}

/* ---- JSON output into a fixed buffer ----------------------------------------------------- */

/* Text appended up to cap - 1 bytes; overflow is remembered so a result that did not fit is
   never passed on as if it were complete. Escapes as Python's json.dumps(ensure_ascii=False). */
typedef struct outbuf {
    char* p;
    size_t n, cap;
    int overflow;
} outbuf;

static void out_raw(outbuf* o, const char* s) {
    size_t len = strlen(s);
    if (o->n + len >= o->cap) {
        o->overflow = 1;
        return;
    }
    memcpy(o->p + o->n, s, len + 1);
    o->n += len;
}

static void out_long(outbuf* o, long v) {
    char tmp[32];
    sprintf(tmp, "%ld", v);
    out_raw(o, tmp);
}

static void out_str(outbuf* o, const char* s) {
    char tmp[8];
    out_raw(o, "\"");
    for (; *s; ++s) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            tmp[0] = '\\', tmp[1] = (char)c, tmp[2] = '\0';
        } else if (c == '\n' || c == '\r' || c == '\t' || c == '\b' || c == '\f') {
            tmp[0] = '\\', tmp[1] = c == '\n' ? 'n' : c == '\r' ? 'r' : c == '\t' ? 't' : c == '\b' ? 'b' : 'f';
            tmp[2] = '\0';
        } else if (c < 0x20) {
            sprintf(tmp, "\\u%04x", c);
        } else {
            tmp[0] = (char)c, tmp[1] = '\0';
        }
        out_raw(o, tmp);
    }
    out_raw(o, "\"");
}

/* ---- The simulated fridge ---------------------------------------------------------------- */

typedef struct item {
    char name[ITEM_BYTES];
    long quantity;
    char unit[16]; /* one of the schema's enum */
} item;

typedef struct fridge {
    long celsius[2]; /* [0] fridge, [1] freezer */
    item inventory[MAX_ITEMS];
    const char* inventory_zone[MAX_ITEMS];
    size_t n_inventory;
    item list[MAX_ITEMS];
    size_t n_list;
    item orders[MAX_ORDERS][MAX_ITEMS];
    size_t n_order_items[MAX_ORDERS];
    size_t n_orders;
} fridge;

static void fridge_init(fridge* f) {
    static const struct {
        const char* name;
        long quantity;
        const char* unit;
        const char* zone;
    } start[] = {{"milk", 1, "litres", "fridge"}, {"eggs", 6, "pieces", "fridge"},
                 {"butter", 1, "packs", "fridge"}, {"cheese", 200, "grams", "fridge"},
                 {"peas", 500, "grams", "freezer"}, {"ice cream", 1, "packs", "freezer"}};
    size_t i;
    memset(f, 0, sizeof *f);
    f->celsius[0] = 4;
    f->celsius[1] = -18;
    for (i = 0; i < sizeof start / sizeof start[0]; ++i) {
        strcpy(f->inventory[i].name, start[i].name);
        f->inventory[i].quantity = start[i].quantity;
        strcpy(f->inventory[i].unit, start[i].unit);
        f->inventory_zone[i] = start[i].zone;
    }
    f->n_inventory = i;
}

static void out_item(outbuf* o, const item* it, const char* zone) {
    out_raw(o, "{\"item\":");
    out_str(o, it->name);
    out_raw(o, ",\"quantity\":");
    out_long(o, it->quantity);
    out_raw(o, ",\"unit\":");
    out_str(o, it->unit);
    if (zone) {
        out_raw(o, ",\"zone\":");
        out_str(o, zone);
    }
    out_raw(o, "}");
}

static void out_items(outbuf* o, const item* items, size_t n) {
    size_t i;
    out_raw(o, "[");
    for (i = 0; i < n; ++i) {
        if (i)
            out_raw(o, ",");
        out_item(o, &items[i], NULL);
    }
    out_raw(o, "]");
}

static void out_error(outbuf* o, const char* message) {
    out_raw(o, "{\"ok\":false,\"error\":");
    out_str(o, message);
    out_raw(o, "}");
}

/* The whole fridge: what STATE prints. */
static void out_state(outbuf* o, const fridge* f) {
    size_t i;
    out_raw(o, "{\"temperatures\":{\"fridge\":");
    out_long(o, f->celsius[0]);
    out_raw(o, ",\"freezer\":");
    out_long(o, f->celsius[1]);
    out_raw(o, "},\"inventory\":[");
    for (i = 0; i < f->n_inventory; ++i) {
        if (i)
            out_raw(o, ",");
        out_item(o, &f->inventory[i], f->inventory_zone[i]);
    }
    out_raw(o, "],\"shopping_list\":");
    out_items(o, f->list, f->n_list);
    out_raw(o, ",\"orders\":[");
    for (i = 0; i < f->n_orders; ++i) {
        if (i)
            out_raw(o, ",");
        out_raw(o, "{\"order\":");
        out_long(o, (long)i + 1);
        out_raw(o, ",\"items\":");
        out_items(o, f->orders[i], f->n_order_items[i]);
        out_raw(o, "}");
    }
    out_raw(o, "]}");
}

/* Runs one call against the fridge; its result (JSON) goes to o. The arguments are valid for the
   tool's schema (the grammar made them so); a reader failure below means a bug, reported to the
   model as an error result rather than trusted. */
static void run_tool(fridge* f, const char* name, const char* arguments, outbuf* o) {
    span args = {arguments, arguments + strlen(arguments)};
    span v;
    if (strcmp(name, "add_to_shopping_list") == 0) {
        item it;
        if (!json_member(args, "item", &v) || !json_string(v, it.name, sizeof it.name) ||
            !json_member(args, "quantity", &v) || !json_int(v, &it.quantity) || !json_member(args, "unit", &v) ||
            !json_string(v, it.unit, sizeof it.unit)) {
            out_error(o, "the arguments could not be read");
            return;
        }
        if (f->n_list == MAX_ITEMS) {
            out_error(o, "the shopping list is full; order the groceries first");
            return;
        }
        f->list[f->n_list++] = it;
        out_raw(o, "{\"ok\":true,\"added\":");
        out_item(o, &it, NULL);
        out_raw(o, ",\"list_size\":");
        out_long(o, (long)f->n_list);
        out_raw(o, "}");
    } else if (strcmp(name, "order_groceries") == 0) {
        if (f->n_list == 0) {
            out_error(o, "the shopping list is empty: nothing to order");
            return;
        }
        if (f->n_orders == MAX_ORDERS) {
            out_error(o, "too many orders today; try again tomorrow");
            return;
        }
        memcpy(f->orders[f->n_orders], f->list, f->n_list * sizeof f->list[0]);
        f->n_order_items[f->n_orders] = f->n_list;
        ++f->n_orders;
        f->n_list = 0;
        out_raw(o, "{\"ok\":true,\"order\":");
        out_long(o, (long)f->n_orders);
        out_raw(o, ",\"items\":");
        out_items(o, f->orders[f->n_orders - 1], f->n_order_items[f->n_orders - 1]);
        out_raw(o, "}");
    } else if (strcmp(name, "set_temperature") == 0) {
        char zone[16];
        long c;
        int z;
        if (!json_member(args, "zone", &v) || !json_string(v, zone, sizeof zone) ||
            !json_member(args, "celsius", &v) || !json_int(v, &c)) {
            out_error(o, "the arguments could not be read");
            return;
        }
        z = strcmp(zone, "freezer") == 0;
        /* the schema bounds celsius to the union of the zones' ranges; each zone has its own */
        if (z ? c < -24 || c > -16 : c < 1 || c > 7) {
            out_error(o, z ? "the freezer takes -24 to -16 degrees Celsius" : "the fridge takes 1 to 7 degrees Celsius");
            return;
        }
        f->celsius[z] = c;
        out_raw(o, "{\"ok\":true,\"zone\":");
        out_str(o, zone);
        out_raw(o, ",\"celsius\":");
        out_long(o, c);
        out_raw(o, "}");
    } else if (strcmp(name, "get_inventory") == 0) {
        size_t i;
        out_raw(o, "{\"ok\":true,\"temperatures\":{\"fridge\":");
        out_long(o, f->celsius[0]);
        out_raw(o, ",\"freezer\":");
        out_long(o, f->celsius[1]);
        out_raw(o, "},\"items\":[");
        for (i = 0; i < f->n_inventory; ++i) {
            if (i)
                out_raw(o, ",");
            out_item(o, &f->inventory[i], f->inventory_zone[i]);
        }
        out_raw(o, "]}");
    } else {
        out_error(o, "no such tool"); /* the grammar allows only the tools given; kept for safety */
    }
}

/* ---- The tools, from tools.json ------------------------------------------------------------ */

/* Fills tools[] from the OpenAI-shape array in json; the strings are malloc'd, and *count says
   how many tools free_tools must release, also after a failure. 1 on success, 0 with a message
   on stderr. */
static int load_tools(const char* json, ember_tool* tools, size_t cap, size_t* count) {
    span all = {json, json + strlen(json)};
    const char* it = all.p;
    span t, fn, v;
    size_t n = 0;
    *count = 0;
    while (json_next_item(all, &it, &t)) {
        char* name;
        if (n == cap || !json_member(t, "function", &fn) || !json_member(fn, "name", &v)) {
            fprintf(stderr, "error: tools.json: tool %u is not {\"type\": \"function\", \"function\": {\"name\": ...}} "
                            "or there are more than %u tools\n", (unsigned)n + 1, (unsigned)cap);
            return 0;
        }
        name = (char*)malloc((size_t)(v.end - v.p) + 1);
        if (!name || !json_string(v, name, (size_t)(v.end - v.p) + 1)) {
            free(name);
            fprintf(stderr, "error: tools.json: tool %u: the name is not a string (or out of memory)\n", (unsigned)n + 1);
            return 0;
        }
        tools[n].name = name;
        tools[n].description = NULL;
        tools[n].parameters = NULL;
        *count = ++n; /* counted now, so free_tools releases it whatever fails below */
        if (json_member(fn, "description", &v)) {
            char* d = (char*)malloc((size_t)(v.end - v.p) + 1);
            if (!d || !json_string(v, d, (size_t)(v.end - v.p) + 1)) {
                free(d);
                fprintf(stderr, "error: tools.json: %s: the description is not a string\n", name);
                return 0;
            }
            tools[n - 1].description = d;
        }
        if (json_member(fn, "parameters", &v) && !(tools[n - 1].parameters = span_dup(v))) {
            fprintf(stderr, "error: out of memory\n");
            return 0;
        }
    }
    if (n == 0)
        fprintf(stderr, "error: tools.json holds no tools (or is not a JSON array)\n");
    return n > 0;
}

static void free_tools(ember_tool* tools, size_t n) {
    size_t i;
    for (i = 0; i < n; ++i) {
        free((void*)tools[i].name);
        free((void*)tools[i].description);
        free((void*)tools[i].parameters);
    }
}

/* ---- The conversation ------------------------------------------------------------------------ */

/* messages[0] is the system message; every other string is malloc'd and owned here. */
typedef struct conversation {
    ember_chat_turn* messages;
    size_t n, cap;
} conversation;

static char* dup_str(const char* s) {
    size_t len = s ? strlen(s) : 0;
    char* r = (char*)malloc(len + 1);
    if (r) {
        if (len)
            memcpy(r, s, len);
        r[len] = '\0';
    }
    return r;
}

static void free_turn(ember_chat_turn* t) {
    size_t i;
    free((void*)t->content);
    for (i = 0; i < t->n_tool_calls; ++i) {
        free((void*)t->tool_calls[i].id);
        free((void*)t->tool_calls[i].name);
        free((void*)t->tool_calls[i].arguments);
    }
    free((void*)t->tool_calls);
    free((void*)t->tool_call_id);
    free((void*)t->name);
}

/* Drops messages [from, to) (never the system message). */
static void drop_messages(conversation* c, size_t from, size_t to) {
    size_t i;
    for (i = from; i < to; ++i)
        free_turn(&c->messages[i]);
    memmove(c->messages + from, c->messages + to, (c->n - to) * sizeof c->messages[0]);
    c->n -= to - from;
}

/* Appends a message whose strings are copied; 0 when memory runs out (nothing appended). */
static int append_message(conversation* c, const char* role, const char* content, const ember_tool_call* calls,
                          size_t n_calls, const char* tool_call_id, const char* name) {
    ember_chat_turn t;
    ember_tool_call* copies = NULL;
    size_t i;
    int ok = 1;
    if (c->n == c->cap) {
        size_t cap = c->cap ? 2 * c->cap : 16;
        ember_chat_turn* grown = (ember_chat_turn*)realloc(c->messages, cap * sizeof *grown);
        if (!grown)
            return 0;
        c->messages = grown;
        c->cap = cap;
    }
    memset(&t, 0, sizeof t);
    t.role = role; /* a string literal */
    t.content = dup_str(content);
    ok = t.content != NULL;
    if (n_calls) {
        copies = (ember_tool_call*)calloc(n_calls, sizeof *copies);
        t.tool_calls = copies;
        ok = ok && copies != NULL;
        for (i = 0; ok && i < n_calls; ++i) {
            copies[i].id = dup_str(calls[i].id);
            copies[i].name = dup_str(calls[i].name);
            copies[i].arguments = dup_str(calls[i].arguments);
            t.n_tool_calls = i + 1;
            ok = copies[i].id && copies[i].name && copies[i].arguments;
        }
    }
    if (ok && tool_call_id)
        ok = (t.tool_call_id = dup_str(tool_call_id)) != NULL;
    if (ok && name)
        ok = (t.name = dup_str(name)) != NULL;
    if (!ok) {
        free_turn(&t);
        return 0;
    }
    c->messages[c->n++] = t;
    return 1;
}

/* Keeps the last KEEP_TURNS user turns (each a user message and what followed it). */
static void trim_history(conversation* c) {
    size_t users = 0, i;
    for (i = 1; i < c->n; ++i)
        users += strcmp(c->messages[i].role, "user") == 0;
    while (users > KEEP_TURNS) {
        for (i = 2; i < c->n && strcmp(c->messages[i].role, "user") != 0; ++i) {
        }
        drop_messages(c, 1, i);
        --users;
    }
}

/* Prints text on one line: CR and LF become spaces (the transcript is one event a line). */
static void print_line(const char* prefix, const char* text, size_t len) {
    size_t i;
    fputs(prefix, stdout);
    for (i = 0; i < len; ++i)
        putchar(text[i] == '\n' || text[i] == '\r' ? ' ' : text[i]);
    putchar('\n');
}

/* One user line: chat until the model answers in text (or MAX_TOOL_ROUNDS rounds of calls, after
   which the tools are withdrawn so it must answer). 1 on success; 0 after printing ERROR, the
   turn's messages dropped from the conversation. */
static int run_turn(ember_session* session, conversation* c, const char* line, ember_chat_params* chat,
                    const ember_generate_params* gp, fridge* f) {
    size_t start = c->n, round, i;
    const ember_tool_call* calls;
    static char result[RESULT_BYTES];
    int ok = 0;

    print_line("USER: ", line, strlen(line));
    if (!append_message(c, "user", line, NULL, 0, NULL, NULL)) {
        puts("ERROR: out of memory");
        return 0;
    }
    for (round = 0;; ++round) {
        ember_chat_result reply;
        ember_status st;
        chat->tool_choice = round < MAX_TOOL_ROUNDS ? EMBER_TOOL_CHOICE_AUTO : EMBER_TOOL_CHOICE_NONE;
        reply.struct_size = sizeof reply;
        st = ember_session_chat(session, c->messages, c->n, chat, gp, NULL, NULL, &reply, NULL);
        if (st != EMBER_OK) {
            printf("ERROR: %s\n", ember_last_error());
            break;
        }
        if (reply.n_tool_calls == 0) {
            print_line("ASSISTANT: ", reply.content ? reply.content : "", reply.content ? reply.content_len : 0);
            ok = append_message(c, "assistant", reply.content, NULL, 0, NULL, NULL);
            if (!ok)
                puts("ERROR: out of memory");
            break;
        }
        /* the reply belongs to the session until the next call: copy it into the conversation first */
        if (!append_message(c, "assistant", reply.content, reply.tool_calls, reply.n_tool_calls, NULL, NULL)) {
            puts("ERROR: out of memory");
            break;
        }
        /* the copies (their own allocation: it stays put while the tool messages grow the array) */
        calls = c->messages[c->n - 1].tool_calls;
        for (i = 0; i < reply.n_tool_calls; ++i) {
            const ember_tool_call* call = &calls[i];
            outbuf o;
            o.p = result, o.n = 0, o.cap = sizeof result, o.overflow = 0;
            result[0] = '\0';
            printf("CALL %s ", call->name);
            print_line("", call->arguments, strlen(call->arguments));
            run_tool(f, call->name, call->arguments, &o);
            if (o.overflow) {
                o.n = 0, o.overflow = 0;
                out_error(&o, "the result is too long");
            }
            printf("RESULT %s %s\n", call->name, result);
            if (!append_message(c, "tool", result, NULL, 0, call->id, call->name)) {
                puts("ERROR: out of memory");
                goto done;
            }
        }
    }
done:
    if (!ok)
        drop_messages(c, start, c->n);
    fflush(stdout);
    return ok;
}

int main(int argc, char** argv) {
    const char* model_path = DEFAULT_MODEL;
    ember_model* model = NULL;
    ember_session* session = NULL;
    ember_session_params sp;
    ember_generate_params gp;
    ember_chat_params chat;
    ember_tool tools[MAX_TOOLS];
    size_t n_tools = 0;
    conversation conv = {NULL, 0, 0};
    static fridge f;
    static char line[MAX_LINE];
    static char state[STATE_BYTES];
    outbuf o;
    int failed = 0, status = 1;

    if (argc == 3 && strcmp(argv[1], "--model") == 0) {
        model_path = argv[2];
    } else if (argc == 2 && argv[1][0] != '-') {
        model_path = argv[1];
    } else if (argc != 1) {
        fprintf(stderr, "usage: %s [MODEL | --model MODEL] < lines\n  MODEL defaults to %s\n", argv[0], DEFAULT_MODEL);
        return 2;
    }

    if (!load_tools(fridge_tools_json, tools, MAX_TOOLS, &n_tools))
        goto out;
    if (ember_model_load(model_path, NULL, &model) != EMBER_OK) {
        fprintf(stderr, "error: %s\n", ember_last_error());
        goto out;
    }
    if (ember_session_params_init(&sp, sizeof sp) != EMBER_OK) {
        fprintf(stderr, "error: %s\n", ember_last_error());
        goto out;
    }
    sp.n_ctx = N_CTX;
    if (ember_session_new(model, &sp, &session) != EMBER_OK || ember_generate_params_init(&gp, sizeof gp) != EMBER_OK ||
        ember_chat_params_init(&chat, sizeof chat) != EMBER_OK) {
        fprintf(stderr, "error: %s\n", ember_last_error());
        goto out;
    }
    gp.max_tokens = MAX_TOKENS;
    gp.temperature = 0.0f; /* greedy: the same transcript every run */
    gp.seed = 1;
    chat.tools = tools;
    chat.n_tools = n_tools;
    /* one call per reply: with several allowed, the default model lists calls until max_tokens
       cuts the reply off, and a cut reply holds no call at all */
    chat.parallel_tool_calls = 0;
    if (!append_message(&conv, "system", SYSTEM_PROMPT, NULL, 0, NULL, NULL)) {
        fprintf(stderr, "error: out of memory\n");
        goto out;
    }
    fridge_init(&f);

    while (fgets(line, sizeof line, stdin)) {
        size_t len = strlen(line);
        if (len == sizeof line - 1 && line[len - 1] != '\n') {
            int ch;
            while ((ch = getchar()) != EOF && ch != '\n') {
            }
            printf("ERROR: an input line is longer than %d bytes; it was skipped\n", MAX_LINE - 2);
            failed = 1;
            continue;
        }
        while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = '\0';
        if (len == 0)
            continue;
        trim_history(&conv);
        if (!run_turn(session, &conv, line, &chat, &gp, &f))
            failed = 1;
    }

    o.p = state, o.n = 0, o.cap = sizeof state, o.overflow = 0;
    out_state(&o, &f);
    printf("STATE %s\n", o.overflow ? "{}" : state);
    status = failed ? 1 : 0;
out:
    if (conv.n)
        drop_messages(&conv, 1, conv.n); /* messages[0]'s strings are freed below */
    if (conv.messages && conv.n)
        free_turn(&conv.messages[0]);
    free(conv.messages);
    free_tools(tools, n_tools);
    ember_session_free(session);
    ember_model_free(model);
    fflush(stdout);
    return status;
}
