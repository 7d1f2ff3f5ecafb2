/* arch_registry.c: general.architecture -> struct arch. Adding a model = one file + one line. */
#include "model.h"

#include <string.h>

extern const struct arch arch_llama, arch_qwen2, arch_qwen3, arch_qwen3moe, arch_qwen35,
    arch_qwen35moe;

static const struct arch *const g_archs[] = {&arch_llama,    &arch_qwen2,  &arch_qwen3,
                                             &arch_qwen3moe, &arch_qwen35, &arch_qwen35moe};

const struct arch *arch_find(const char *name) {
    for (size_t i = 0; i < sizeof(g_archs) / sizeof(g_archs[0]); i++)
        if (!strcmp(g_archs[i]->name, name)) return g_archs[i];
    return NULL;
}

const char *arch_supported_list(void) {
    return "llama, qwen2, qwen3, qwen3moe, qwen35, qwen35moe";
}
