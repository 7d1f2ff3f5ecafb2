/* gguf.h: the GGUF container format (v2/v3), read and write. Knows no model.
 *
 * Reading: gguf_open mmaps the file (and, for NAME-00001-of-0000N.gguf, every shard; gguf_open_load
 * may read them into huge-page memory instead), validates everything before returning (magic,
 * version, counts, string/array lengths, overflow, type ids, duplicate keys and tensor names,
 * tensor offsets and sizes inside the file) and reports the first problem with its byte offset.
 * After a successful open every accessor is safe: tensor data pointers point inside the mapping (or
 * copy) and cover n_bytes. All returned pointers (keys, strings, arrays, tensor data) are borrowed
 * and valid until gguf_close. An open gguf is never modified, so any number of threads may query it
 * at once. Metadata comes from the first shard; tensors from all shards (in shard order).
 *
 * Writing: struct gguf_writer collects key/values and tensors (data borrowed until written)
 * and writes a v3 file with the requested alignment.
 */
#ifndef HEARTH_GGUF_H
#define HEARTH_GGUF_H

#include "../base/error.h"

#include <stddef.h>
#include <stdint.h>

#define GGUF_MAX_DIMS          4
#define GGUF_DEFAULT_ALIGNMENT 32

enum gguf_type {
    GGUF_TYPE_UINT8 = 0,
    GGUF_TYPE_INT8 = 1,
    GGUF_TYPE_UINT16 = 2,
    GGUF_TYPE_INT16 = 3,
    GGUF_TYPE_UINT32 = 4,
    GGUF_TYPE_INT32 = 5,
    GGUF_TYPE_FLOAT32 = 6,
    GGUF_TYPE_BOOL = 7,
    GGUF_TYPE_STRING = 8,
    GGUF_TYPE_ARRAY = 9,
    GGUF_TYPE_UINT64 = 10,
    GGUF_TYPE_INT64 = 11,
    GGUF_TYPE_FLOAT64 = 12,
    GGUF_TYPE_COUNT,
};

/* A string inside the file: not NUL terminated. */
struct gguf_str {
    const char *data;
    uint64_t len;
};

struct gguf_tensor_info {
    const char *name;          /* NUL-terminated copy, valid until gguf_close */
    uint32_t type;             /* ggml type id (enum dtype in tensor/dtype.h) */
    int n_dims;                /* 1..4 */
    int64_t ne[GGUF_MAX_DIMS]; /* elements per dim, innermost first; unused dims are 1 */
    uint64_t offset;           /* relative to its shard's data section */
    uint64_t n_bytes;          /* payload size */
    const void *data;          /* inside the mapping */
    int shard;                 /* 0-based shard index */
    uint64_t file_offset;      /* absolute byte offset of the data in its shard file */
};

struct gguf;

/* Opens and validates path. A name matching *-00001-of-NNNNN.gguf opens all N shards.
 * Errors: ERR_NOT_FOUND (the file or a shard does not exist), ERR_IO (cannot open/map),
 * ERR_FORMAT (malformed; message names the path and byte offset), ERR_UNSUPPORTED (version,
 * big-endian, a tensor type id newer than this reader), ERR_NOMEM. */
int gguf_open(struct gguf **out, const char *path, struct error *err);

/* How a file's bytes get into memory. MMAP maps the file (pages come and go with the page
 * cache: 4 KiB pages). COPY reads it into anonymous memory asking for transparent huge pages
 * (2 MiB): streaming the weights then needs 512x fewer page-table entries and the prefetchers
 * are not stopped by a page boundary every 4 KiB, which makes decode ~7-10% faster on this
 * machine (Qwen3-0.6B Q4_K_M tg 55 -> 61 t/s), at the cost of reading the whole file up front
 * and keeping it resident. AUTO copies when the kernel offers huge pages (THP not "never") and
 * the file takes at most 3/4 of MemAvailable, else maps; llama.cpp's --no-mmap / --mmap are
 * COPY / MMAP. */
enum gguf_load { GGUF_LOAD_AUTO, GGUF_LOAD_MMAP, GGUF_LOAD_COPY };
/* gguf_open with a load mode (gguf_open maps). */
int gguf_open_load(struct gguf **out, const char *path, enum gguf_load how, struct error *err);
/* Same, over bytes the caller keeps alive until gguf_close (no shards). For tests and fuzzing. */
int gguf_open_memory(struct gguf **out, const void *data, size_t n_bytes, struct error *err);
void gguf_close(struct gguf *g);

uint32_t gguf_version(const struct gguf *g);
uint32_t gguf_alignment(const struct gguf *g);
int gguf_n_shards(const struct gguf *g);
uint64_t gguf_file_bytes(const struct gguf *g); /* sum over shards */

/* ---- metadata ---- */
int64_t gguf_n_kv(const struct gguf *g);
int64_t gguf_find_key(const struct gguf *g, const char *key); /* index or -1 */
struct gguf_str gguf_kv_key(const struct gguf *g, int64_t i);
enum gguf_type gguf_kv_type(const struct gguf *g, int64_t i);
/* For arrays: element type and count. For scalars: arr_type = GGUF_TYPE_COUNT, n = 1. */
enum gguf_type gguf_kv_arr_type(const struct gguf *g, int64_t i);
uint64_t gguf_kv_arr_n(const struct gguf *g, int64_t i);
/* Raw pointer to the packed array elements (numeric element types only, little-endian,
 * possibly unaligned: read with memcpy or the getters below). NULL for string arrays. For a
 * numeric scalar: its value bytes (gguf_type_size of its type); NULL for a string. */
const void *gguf_kv_arr_data(const struct gguf *g, int64_t i);
/* Element j of a string array / numeric array converted. Index must be in range (CHECKed). */
struct gguf_str gguf_kv_arr_str(const struct gguf *g, int64_t i, uint64_t j);
/* any integer/bool element; a u64 above INT64_MAX reads as INT64_MAX */
int64_t gguf_kv_arr_int(const struct gguf *g, int64_t i, uint64_t j);
double gguf_kv_arr_float(const struct gguf *g, int64_t i, uint64_t j); /* any numeric */
/* Scalars. The typed getter converts between integer widths and reports ERR_FORMAT on a
 * type mismatch (e.g. string for an int) or a value that does not fit. */
struct gguf_str gguf_kv_str(const struct gguf *g, int64_t i); /* CHECKs type == STRING */

/* Convenience lookups by key. Return 0 on success, ERR_NOT_FOUND if the key is absent (out
 * untouched), ERR_FORMAT if present with an incompatible type or out-of-range value. */
int gguf_get_int(const struct gguf *g, const char *key, int64_t *out); /* any int type, bool */
int gguf_get_uint32(const struct gguf *g, const char *key, uint32_t *out);
int gguf_get_float(const struct gguf *g, const char *key, double *out); /* f32/f64/any int */
int gguf_get_bool(const struct gguf *g, const char *key, int *out);     /* bool, or int != 0 */
int gguf_get_str(const struct gguf *g, const char *key, struct gguf_str *out);
/* String value as a NUL-terminated copy (caller frees with mem_free); NULL if absent/not a
 * string or on allocation failure. */
char *gguf_get_strdup(const struct gguf *g, const char *key);

/* Human-readable type name ("u32", "string", "array", ...). */
const char *gguf_type_name(enum gguf_type t);
/* Bytes of one scalar value of type t; 0 for STRING, ARRAY and invalid ids. */
size_t gguf_type_size(enum gguf_type t);

/* ---- tensor type ids (ggml's numbering) ----
 * Block geometry of every type id a file may hold, including types hearth cannot compute with
 * (grid-based IQ*, TQ*): the reader only needs sizes. Returns 0, or ERR_UNSUPPORTED for ids
 * that are unknown or were removed from the format (4, 5, 31-33, 36-38). */
int gguf_type_block(uint32_t type, int64_t *block_elems, int64_t *block_bytes);
const char *gguf_tensor_type_name(uint32_t type); /* "Q4_K", ..., "?" for unknown ids */

/* ---- tensors ---- */
int64_t gguf_n_tensors(const struct gguf *g);
const struct gguf_tensor_info *gguf_tensor(const struct gguf *g, int64_t i);
const struct gguf_tensor_info *gguf_find_tensor(const struct gguf *g, const char *name);

/* ---- writing ---- */
struct gguf_writer;

int gguf_writer_create(struct gguf_writer **out, struct error *err);
void gguf_writer_free(struct gguf_writer *w);
/* alignment: a power of two (CHECKed). Default GGUF_DEFAULT_ALIGNMENT. */
void gguf_writer_set_alignment(struct gguf_writer *w, uint32_t alignment);
/* Key/value setters copy key and value. Setting an existing key replaces it in place. They
 * return 0, ERR_INVALID (empty key or longer than 65535 bytes, string or array over 2^30,
 * bool array element not 0/1, general.alignment not a u32 power of two) or ERR_NOMEM.
 * general.alignment and gguf_writer_set_alignment are one setting: the file holds the key,
 * with the current alignment, when it was set or the alignment is not the default 32. */
int gguf_writer_set_u8(struct gguf_writer *w, const char *key, uint8_t v);
int gguf_writer_set_i8(struct gguf_writer *w, const char *key, int8_t v);
int gguf_writer_set_u16(struct gguf_writer *w, const char *key, uint16_t v);
int gguf_writer_set_i16(struct gguf_writer *w, const char *key, int16_t v);
int gguf_writer_set_u32(struct gguf_writer *w, const char *key, uint32_t v);
int gguf_writer_set_i32(struct gguf_writer *w, const char *key, int32_t v);
int gguf_writer_set_u64(struct gguf_writer *w, const char *key, uint64_t v);
int gguf_writer_set_i64(struct gguf_writer *w, const char *key, int64_t v);
int gguf_writer_set_f32(struct gguf_writer *w, const char *key, float v);
int gguf_writer_set_f64(struct gguf_writer *w, const char *key, double v);
int gguf_writer_set_bool(struct gguf_writer *w, const char *key, int v);
int gguf_writer_set_str(struct gguf_writer *w, const char *key, const char *v);
/* Numeric array: n elements of elem_type, packed little-endian at data. */
int gguf_writer_set_arr(struct gguf_writer *w, const char *key, enum gguf_type elem_type,
                        const void *data, uint64_t n);
int gguf_writer_set_arr_str(struct gguf_writer *w, const char *key, const char *const *strs,
                            uint64_t n);
/* Copies key/value i of g (any type, arrays included). */
int gguf_writer_copy_kv(struct gguf_writer *w, const struct gguf *g, int64_t i);
int gguf_writer_remove_key(struct gguf_writer *w, const char *key); /* 0 or ERR_NOT_FOUND */
/* Adds a tensor; data (n_bytes must equal the dtype size of ne, checked) is borrowed until the
 * write, or NULL for streaming (below; n_bytes may then be 0). Returns 0, ERR_INVALID (name
 * empty, >= 64 bytes or already added; n_dims not 1..4; ne < 0 or overflowing; unknown type;
 * ne[0] not a multiple of the block size; n_bytes wrong) or ERR_NOMEM. */
int gguf_writer_add_tensor(struct gguf_writer *w, const char *name, uint32_t type, int n_dims,
                           const int64_t *ne, const void *data, uint64_t n_bytes);
/* Writes header, metadata, tensor infos and all tensor data (every tensor must have data). */
int gguf_writer_write_file(struct gguf_writer *w, const char *path, struct error *err);
/* Streaming, for outputs too big to hold (quantize): add tensors with data = NULL, then
 * gguf_writer_stream_begin writes everything up to the data section; call
 * gguf_writer_stream_tensor once per tensor in the order they were added (n_bytes must match);
 * gguf_writer_stream_end pads and closes the file. Errors: ERR_IO (message names the path),
 * ERR_INVALID (misuse: wrong size, too few/many tensors), ERR_NOMEM. Any failure closes and
 * removes the partial file; the writer stays usable. Keys and tensors cannot change while a
 * stream is open (CHECKed). */
int gguf_writer_stream_begin(struct gguf_writer *w, const char *path, struct error *err);
int gguf_writer_stream_tensor(struct gguf_writer *w, const void *data, uint64_t n_bytes,
                              struct error *err);
int gguf_writer_stream_end(struct gguf_writer *w, struct error *err);

#endif
