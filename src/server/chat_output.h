/* chat_output.h: generated text -> {content, reasoning_content, tool_calls}, incrementally.
 *
 * Fed the released text of one generation piece by piece (streaming) or all at once, it splits
 * off reasoning (<think>...</think>, or from the start when the prompt opened the block) and
 * tool calls (<tool_call>{"name": ..., "arguments": ...}</tool_call>, or the XML form
 * <function=NAME><parameter=KEY>value</parameter></function> inside the same markers). Text
 * that might still become a marker is held back until it is decided. A call that does not
 * parse stays in content as raw text: a malformed call never fails the request. Whitespace
 * around the parts is trimmed the same way whether the text came in one piece or many.
 *
 * The caller reads content/reasoning/calls and remembers how much it has already sent.
 */
#ifndef HEARTH_SERVER_CHAT_OUTPUT_H
#define HEARTH_SERVER_CHAT_OUTPUT_H

#include "../base/buf.h"

struct chat_out_call {
    char *name; /* mem_alloc'ed */
    char *args; /* JSON object text, mem_alloc'ed */
};

enum chat_out_mode { CHAT_OUT_CONTENT, CHAT_OUT_REASONING, CHAT_OUT_TOOL };

struct chat_out {
    struct buf content;          /* decided content */
    struct buf reasoning;        /* decided reasoning */
    struct chat_out_call *calls; /* [n_calls] complete calls */
    int n_calls, cap_calls;
    /* internal */
    int parse_tools;
    enum chat_out_mode mode;
    int seen_text;   /* anything non-blank arrived (a leading <think> is only looked for before) */
    struct buf pend; /* undecided bytes */
    struct buf ws;   /* held trailing whitespace of the current part */
    int failed;      /* allocation failure */
};

void chat_out_init(struct chat_out *o, int parse_tools, int reasoning_open);
void chat_out_feed(struct chat_out *o, const char *s, size_t n);
/* End of text: everything held is decided (an unterminated thinking block stays reasoning, an
 * unterminated call is parsed if it can be, else kept as content). */
void chat_out_finish(struct chat_out *o);
void chat_out_free(struct chat_out *o);

#endif
