/* libFuzzer target: the sensitivity-table CSV reader. */
#include <stdint.h>

#include "sensitivity/table.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    bp_table t;
    bp_error err;
    bp_table_init(&t);
    bp_table_parse_csv(&t, (const char *)data, size, "fuzz.csv", &err);
    bp_table_free(&t);
    return 0;
}
