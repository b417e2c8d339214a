/* libFuzzer target: the GGUF reader (header, keys, tensor infos, validation),
 * its safetensors view, and the importance-matrix reading of a GGUF. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "planner/formats/gguf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    bp_gguf g;
    bp_error err;
    if (bp_gguf_parse(&g, data, size, "fuzz.gguf", &err) == 0) {
        bp_safetensors st;
        if (bp_gguf_as_safetensors(&g, &st, &err) == 0)
            bp_st_close(&st);
        for (size_t i = 0; i < g.n_kv; i++) {
            free(bp_gguf_render(&g.kv[i], 64));
            (void)bp_gguf_kv_bytes(&g.kv[i]);
        }
        bp_gguf_close(&g);
    }
    return 0;
}
