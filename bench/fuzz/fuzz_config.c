/* libFuzzer target: YAML config loading (libyaml tree + schema checks). */
#include <stdint.h>

#include "planner/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    bp_config c;
    bp_error err;
    if (bp_config_parse(&c, (const char *)data, size, "fuzz.yaml", "/nonexistent", &err) == 0)
        bp_config_free(&c);
    return 0;
}
