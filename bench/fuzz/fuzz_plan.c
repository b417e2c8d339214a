/* libFuzzer target: the plan reader every consumer of plans shares
 * (exports, --choices), and the exports written from what it accepts. */
#include <stdint.h>
#include <stdio.h>

#include "fuzz_file.h"
#include "planner/formats/export.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    bp_export_plan p;
    bp_error err;
    if (bp_export_read_plan(fuzz_file(data, size, ".yaml"), &p, &err) == 0) {
        static const char *const fmts[] = {"llamacpp", "gptqmodel", "llmcompressor", "autoround"};
        for (int f = 0; f < 4; f++)
            bp_export_write(&p, fmts[f], "/dev/null", NULL, 0, &err);
        bp_export_plan_free(&p);
    }
    return 0;
}
