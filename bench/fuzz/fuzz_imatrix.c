/* libFuzzer target: the legacy .dat importance-matrix reader (the GGUF form
 * goes through the GGUF reader, fuzz_gguf). */
#include <stdint.h>

#include "planner/formats/imatrix.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    bp_imatrix im;
    bp_error err;
    if (bp_imatrix_parse_dat(&im, data, size, "fuzz.dat", &err) == 0)
        bp_imatrix_close(&im);
    return 0;
}
