/* libFuzzer target: the .npy header parser and the float reader. */
#include <stdint.h>
#include <stdlib.h>

#include "planner/formats/npy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    bp_npy npy;
    bp_error err;
    if (bp_npy_parse(&npy, data, size, "fuzz.npy", &err) == 0) {
        int64_t n = bp_npy_numel(&npy);
        if (n > 0 && n <= (1 << 20)) {
            float *out = malloc((size_t)n * sizeof *out);
            if (out)
                bp_npy_read_f32(&npy, out, &err);
            free(out);
        }
    }
    bp_npy_close(&npy);
    return 0;
}
