/* libFuzzer target: the safetensors header parser and the float reader. */
#include <stdint.h>
#include <stdlib.h>

#include "planner/formats/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    bp_safetensors st;
    bp_error err;
    if (bp_st_parse(&st, data, size, "fuzz", &err) == 0) {
        for (size_t i = 0; i < st.n_tensors; i++) {
            const bp_st_tensor *t = &st.tensors[i];
            int64_t n = bp_st_numel(t);
            if (n > 0 && n <= (1 << 20)) {
                float *out = malloc((size_t)n * sizeof *out);
                if (out)
                    bp_st_read_f32(&st, t, out, &err);
                free(out);
            }
        }
        bp_st_meta_get(&st, "format");
    }
    bp_st_close(&st);
    return 0;
}
