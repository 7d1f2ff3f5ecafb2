/* chat.h: turning a Qwen-family model's generated text into an OpenAI assistant message, and
 * the grammars that force that text into shape.
 *
 * The parser is incremental: the server feeds it the generated text piece by piece (any split,
 * even inside a UTF-8 sequence or a tag) and gets back deltas that are already certain:
 * content, reasoning (<think>...</think>) and tool calls (name first, then fragments of the
 * arguments JSON). Text that could still turn into markup ("<tool_" at the end of a piece) is
 * held back until it is decided, so markup never leaks into content. The deltas of any split
 * concatenate to the same message as one feed of the whole text. It never fails on model
 * output: what cannot be read as a tool call stays content, truncated calls are closed, and
 * every arguments string is valid JSON (parse it to an object before rendering history).
 * Every text it returns is valid UTF-8 (invalid input bytes become U+FFFD).
 *
 * Both Qwen call syntaxes are read whatever the format says (models leak the other one):
 *   JSON (Qwen2.5, Qwen3, QwQ): <tool_call>\n{"name": "f", "arguments": {...}}\n</tool_call>
 *   XML (Qwen3-Coder, Qwen3.5, Qwen3.6): <tool_call>\n<function=f>\n<parameter=k>\nvalue\n
 *     </parameter>\n</function>\n</tool_call>; a value is typed by the tool's JSON schema
 *     (strings stay raw text, numbers/booleans/objects/arrays are parsed as JSON when the schema
 *     says so; see chat_parser_params.tools_json).
 * The format matters for the grammars (chat_grammar_*), which force one syntax.
 *
 * Lifetimes: a parser per generation; deltas and the message it returns are valid until the
 * next call on it. Depends on base/ only (and jval, json_schema, grammar in text/). Not here:
 * rendering prompts (chat_template.h), token masks (engine/constraint.h), SSE/JSON output.
 */
#ifndef HEARTH_CHAT_H
#define HEARTH_CHAT_H

#include "../base/error.h"
#include "grammar.h"

#include <stddef.h>
#include <stdint.h>

enum chat_tool_format {
    CHAT_TOOL_FORMAT_NONE = 0, /* no tools in the request: tool markup stays content */
    CHAT_TOOL_FORMAT_JSON = 1, /* <tool_call>{"name", "arguments"}</tool_call> */
    CHAT_TOOL_FORMAT_XML = 2,  /* <tool_call><function=..><parameter=..>..</tool_call> */
};

enum chat_reasoning {
    CHAT_REASONING_NONE = 0,   /* no reasoning extraction: <think> blocks stay in content */
    CHAT_REASONING_PARSE = 1,  /* <think>...</think> in the output becomes reasoning_content */
    CHAT_REASONING_FORCED = 2, /* the prompt ended inside <think> (Qwen3.5/3.6, Thinking-2507):
                                  the output starts as reasoning until </think> */
};

/* Which call syntax a chat template teaches, from its source text: XML when it mentions
 * "<function=" or "<parameter=", JSON when it mentions "<tool_call>", else NONE. */
enum chat_tool_format chat_tool_format_detect(const char *template_src, size_t len);
/* How to read the reasoning of output that follows prompt: FORCED when the last "<think>" of
 * the generation prompt (the text after the last "<|im_start|>assistant", or all of it) is not
 * closed by a "</think>" after it, else PARSE. (With enable_thinking=false the templates close
 * an empty think block in the prompt, so this gives PARSE.) */
enum chat_reasoning chat_reasoning_detect(const char *prompt, size_t len);

/* ---- parsing ---- */

struct chat_parser_params {
    enum chat_tool_format tool_format; /* NONE: the request had no tools */
    enum chat_reasoning reasoning;
    const char *tools_json; /* the request's OpenAI "tools" array as JSON text, or NULL; used to
                               type XML parameter values. Parameters a schema does not type are
                               strings, unless their text is a JSON object or array. */
    size_t tools_json_len;
    uint64_t id_seed; /* tool-call ids are "call_" + 24 alphanumerics derived from it and the
                         call's index; give each request its own (e.g. random) seed */
};

enum chat_delta_type {
    CHAT_DELTA_CONTENT = 0,   /* text: a fragment of message.content */
    CHAT_DELTA_REASONING = 1, /* text: a fragment of message.reasoning */
    CHAT_DELTA_TOOL_CALL = 2, /* a new call: tool_index, id, and text = the whole name; its
                                 arguments start empty (OpenAI: first delta of a call) */
    CHAT_DELTA_TOOL_ARGS = 3, /* text: the next fragment of call tool_index's arguments JSON */
};

struct chat_delta {
    enum chat_delta_type type;
    int tool_index;   /* TOOL_CALL / TOOL_ARGS: 0, 1, ... in order of appearance; else -1 */
    const char *text; /* fragment or name, valid UTF-8, len bytes (not NUL-terminated) */
    size_t len;
    const char *id; /* TOOL_CALL: the call id, NUL-terminated; else NULL */
};

struct chat_tool_call {
    char *id;        /* "call_" + 24 alphanumerics, NUL-terminated */
    char *name;      /* function name, NUL-terminated */
    char *arguments; /* JSON text (normally an object), NUL-terminated, always valid JSON */
    size_t arguments_len;
};

struct chat_message {
    char *content; /* NUL-terminated, "" when none; leading/trailing blank space trimmed */
    size_t content_len;
    char *reasoning; /* NUL-terminated, "" when none; trimmed like content */
    size_t reasoning_len;
    struct chat_tool_call *tool_calls; /* [n_tool_calls] */
    int n_tool_calls;
};

struct chat_parser;

/* ERR_INVALID if tools_json is given but is not valid JSON; ERR_NOMEM. */
int chat_parser_create(struct chat_parser **out, const struct chat_parser_params *p,
                       struct error *err);
void chat_parser_free(struct chat_parser *p);
/* Feeds the next generated bytes. *deltas / *n_deltas receive what became certain (consecutive
 * fragments of one kind merged), valid until the next call on p. 0, or ERR_NOMEM, or
 * ERR_INVALID after chat_parser_finish. */
int chat_parser_feed(struct chat_parser *p, const char *text, size_t len,
                     const struct chat_delta **deltas, int *n_deltas);
/* End of generation (EOS, stop, length): releases held text, closes an open call. */
int chat_parser_finish(struct chat_parser *p, const struct chat_delta **deltas, int *n_deltas);
/* The message assembled from all deltas so far (final after chat_parser_finish). Valid until
 * the next call on p. */
const struct chat_message *chat_parser_message(const struct chat_parser *p);

/* One-shot: parse a whole output. *out is filled (free with chat_message_free). */
int chat_parse(const struct chat_parser_params *p, const char *text, size_t len,
               struct chat_message *out, struct error *err);
void chat_message_free(struct chat_message *m); /* frees the members, zeroes *m */

/* ---- grammars (constrained decoding) ---- */

struct chat_grammar_params {
    enum chat_tool_format tool_format; /* JSON or XML: the call syntax to force */
    enum chat_reasoning reasoning;     /* NONE: output starts with the call / JSON value;
                                          PARSE: an optional <think>...</think> block first;
                                          FORCED: reasoning text, then </think>, first */
    const char *tools_json;            /* OpenAI "tools" array (JSON text) */
    size_t tools_json_len;
    const char *tool_name;   /* tool_choice {"function": {"name"}}: only this tool; NULL: any */
    int parallel_tool_calls; /* 1: one or more calls, newline-separated; 0: exactly one */
};

/* tool_choice "required" or named: a finished grammar whose sentences are [reasoning] then
 * the calls in the model's syntax, with each call's arguments matching its tool's
 * "parameters" schema, and nothing after. ERR_INVALID: bad tools JSON, no usable tool, unknown
 * tool_name, a bad schema (message says which tool); ERR_UNSUPPORTED; ERR_NOMEM. */
int chat_grammar_tools(struct grammar **out, const struct chat_grammar_params *p,
                       struct error *err);
/* response_format: [reasoning] then one JSON value matching schema_json (json_schema), or any
 * JSON object when schema_json is NULL (json_object). Errors as json_schema_compile. */
int chat_grammar_json(struct grammar **out, enum chat_reasoning reasoning, const char *schema_json,
                      size_t schema_len, struct error *err);

#endif
