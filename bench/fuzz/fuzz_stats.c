/* libFuzzer target: a calibration or statistics file checked as inspect
 * checks it (planner/validate.c over the safetensors reader). */
#include <stdint.h>
#include <stdio.h>

#include "fuzz_file.h"
#include "planner/validate.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    bp_tensorset ts;
    bp_error err;
    size_t checked;
    if (bp_tensorset_open(&ts, fuzz_file(data, size, ".safetensors"), &err) == 0) {
        bp_validate_calibration_file(&ts, &checked, &err);
        bp_tensorset_close(&ts);
    }
    return 0;
}
