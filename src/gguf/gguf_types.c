/* gguf_types.c: names and block geometry of the GGUF value types and ggml tensor type ids.
 *
 * The reader needs the byte size of every tensor type a file may hold, including types hearth
 * cannot compute with (grid-based IQ*, TQ*, plain integers), so this table is separate from
 * tensor/dtype.c (which only lists computable types). Source of truth: quant-formats.md §2
 * (ggml's type_traits in ggml.c). Ids 4, 5 (Q4_2, Q4_3), 31-33 (Q4_0_4_4 ...) and 36-38
 * (IQ4_NL_4_4 ...) were removed from the format and are invalid in a file.
 */
#include "gguf.h"

#include <stddef.h>

struct type_geom {
    const char *name;    /* ggml's name; NULL for removed ids */
    int64_t block_elems; /* elements per block */
    int64_t block_bytes; /* bytes per block */
};

static const struct type_geom g_types[] = {
    [0] = {"F32", 1, 4},         [1] = {"F16", 1, 2},         [2] = {"Q4_0", 32, 18},
    [3] = {"Q4_1", 32, 20},      [6] = {"Q5_0", 32, 22},      [7] = {"Q5_1", 32, 24},
    [8] = {"Q8_0", 32, 34},      [9] = {"Q8_1", 32, 36},      [10] = {"Q2_K", 256, 84},
    [11] = {"Q3_K", 256, 110},   [12] = {"Q4_K", 256, 144},   [13] = {"Q5_K", 256, 176},
    [14] = {"Q6_K", 256, 210},   [15] = {"Q8_K", 256, 292},   [16] = {"IQ2_XXS", 256, 66},
    [17] = {"IQ2_XS", 256, 74},  [18] = {"IQ3_XXS", 256, 98}, [19] = {"IQ1_S", 256, 50},
    [20] = {"IQ4_NL", 32, 18},   [21] = {"IQ3_S", 256, 110},  [22] = {"IQ2_S", 256, 82},
    [23] = {"IQ4_XS", 256, 136}, [24] = {"I8", 1, 1},         [25] = {"I16", 1, 2},
    [26] = {"I32", 1, 4},        [27] = {"I64", 1, 8},        [28] = {"F64", 1, 8},
    [29] = {"IQ1_M", 256, 56},   [30] = {"BF16", 1, 2},       [34] = {"TQ1_0", 256, 54},
    [35] = {"TQ2_0", 256, 66},   [39] = {"MXFP4", 32, 17},    [40] = {"NVFP4", 64, 36},
    [41] = {"Q1_0", 128, 18},    [42] = {"Q2_0", 64, 18},
};

#define N_TYPE_IDS (sizeof(g_types) / sizeof(g_types[0]))

int gguf_type_block(uint32_t type, int64_t *block_elems, int64_t *block_bytes) {
    if (type >= N_TYPE_IDS || !g_types[type].name) return ERR_UNSUPPORTED;
    if (block_elems) *block_elems = g_types[type].block_elems;
    if (block_bytes) *block_bytes = g_types[type].block_bytes;
    return 0;
}

const char *gguf_tensor_type_name(uint32_t type) {
    if (type >= N_TYPE_IDS || !g_types[type].name) return "?";
    return g_types[type].name;
}

const char *gguf_type_name(enum gguf_type t) {
    switch (t) {
    case GGUF_TYPE_UINT8:
        return "u8";
    case GGUF_TYPE_INT8:
        return "i8";
    case GGUF_TYPE_UINT16:
        return "u16";
    case GGUF_TYPE_INT16:
        return "i16";
    case GGUF_TYPE_UINT32:
        return "u32";
    case GGUF_TYPE_INT32:
        return "i32";
    case GGUF_TYPE_FLOAT32:
        return "f32";
    case GGUF_TYPE_BOOL:
        return "bool";
    case GGUF_TYPE_STRING:
        return "string";
    case GGUF_TYPE_ARRAY:
        return "array";
    case GGUF_TYPE_UINT64:
        return "u64";
    case GGUF_TYPE_INT64:
        return "i64";
    case GGUF_TYPE_FLOAT64:
        return "f64";
    case GGUF_TYPE_COUNT:
        break;
    }
    return "?";
}

size_t gguf_type_size(enum gguf_type t) {
    switch (t) {
    case GGUF_TYPE_UINT8:
    case GGUF_TYPE_INT8:
    case GGUF_TYPE_BOOL:
        return 1;
    case GGUF_TYPE_UINT16:
    case GGUF_TYPE_INT16:
        return 2;
    case GGUF_TYPE_UINT32:
    case GGUF_TYPE_INT32:
    case GGUF_TYPE_FLOAT32:
        return 4;
    case GGUF_TYPE_UINT64:
    case GGUF_TYPE_INT64:
    case GGUF_TYPE_FLOAT64:
        return 8;
    case GGUF_TYPE_STRING:
    case GGUF_TYPE_ARRAY:
    case GGUF_TYPE_COUNT:
        break;
    }
    return 0;
}
