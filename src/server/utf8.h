/* utf8.h: UTF-8 checks and repair for text that leaves the server.
 *
 * Generated text is a sequence of token pieces, and a piece may end inside a multi-byte
 * character or hold bytes that are not UTF-8 at all. JSON strings must be valid UTF-8, and a
 * streamed character must never be split across two chunks, so the scheduler holds back an
 * incomplete tail (utf8_complete) and repairs what it releases (utf8_repair).
 */
#ifndef HEARTH_SERVER_UTF8_H
#define HEARTH_SERVER_UTF8_H

#include "../base/buf.h"

#include <stddef.h>

/* Appends s[0..n) to out with every invalid sequence (and NUL) replaced by U+FFFD. */
void utf8_repair(const char *s, size_t n, struct buf *out);
/* Length of the longest prefix of s[0..n) that does not end inside a sequence that could still
 * be completed by more bytes; invalid bytes count as complete (they will be repaired). */
size_t utf8_complete(const char *s, size_t n);
/* 1 if s[0..n) is valid UTF-8 without NUL bytes. */
int utf8_valid(const char *s, size_t n);

#endif
