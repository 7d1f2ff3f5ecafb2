/* chat_prompt.h: a conversation (struct gen_request, OpenAI chat shape) -> prompt text.
 *
 * With a parsed Jinja chat template (the GGUF's or --chat-template-file) the template renders
 * it; without one a built-in ChatML rendering is used (Qwen's turn markers, tools announced in
 * the system turn, calls as <tool_call>{json}</tool_call>, results as <tool_response> in a user
 * turn). A conversation that ends with an assistant message is continued: the earlier messages
 * are rendered with the generation prompt and that message's text is appended (prefill).
 * Errors (a template's raise_exception, a message the fallback cannot place) are ERR_INVALID
 * with the template's message: the client's conversation is at fault, so it is a 400.
 */
#ifndef HEARTH_SERVER_CHAT_PROMPT_H
#define HEARTH_SERVER_CHAT_PROMPT_H

#include "../base/buf.h"
#include "../base/error.h"
#include "request.h"

struct chat_template;

struct chat_prompt_cfg {
    const struct chat_template *tpl; /* NULL: built-in ChatML */
    const char *bos_text;            /* BOS/EOS token texts for the template ("" if none) */
    const char *eos_text;
};

/* Appends the prompt to out. */
int chat_prompt_render(const struct chat_prompt_cfg *cfg, const struct gen_request *r,
                       struct buf *out, struct error *err);

#endif
