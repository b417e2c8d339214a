/* libFuzzer target: the quantized-weights validator (bitplan inspect). */
#include <stdint.h>
#include <stdio.h>

#include "fuzz_file.h"
#include "planner/formats/qweights.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    bp_error err;
    bp_check_quantized(fuzz_file(data, size, ".safetensors"), NULL, &err);
    return 0;
}
