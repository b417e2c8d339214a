/*
 * test_table.c - the sensitivity table CSV: exact round trip (quoting,
 * 17-digit errors), tables from other tools (any column order, optional
 * columns), and malformed tables rejected with file:line messages.
 */
#include <stdlib.h>

#include "check.h"
#include "sensitivity/table.h"

static int parse(bp_table *t, const char *text, bp_error *err)
{
    return bp_table_parse_csv(t, text, strlen(text), "t.csv", err);
}

static void test_round_trip(void)
{
    bp_table t, back;
    bp_table_init(&t);
    const char *names[] = {"conv1", "block.0,\"odd\" name", "fc"};
    for (int l = 0; l < 3; l++)
        for (int w = 2; w <= 8; w += 2) {
            bp_table_row r = {(char *)names[l], w, 16, "rtn", 1.0 / (3.0 * w + l),
                              1000 + l, (1000 + l) * w + 16, 77, {0}};
            for (int m = 0; m < BP_METRIC_COUNT; m++)   /* some metrics unmeasured */
                r.value[m] = (m + l + w) % 3 ? 1.0 / (7.0 * m + w + l + 1.0) : NAN;
            CHECK(bp_table_add(&t, &r, NULL) == 0);
        }
    char *buf = NULL;
    size_t n = 0;
    FILE *fp = open_memstream(&buf, &n);
    CHECK(bp_table_write_csv(&t, fp) == 0);
    fclose(fp);
    const char *hdr = "layer,wbits,abits,quantizer,error,params,weight_bits,macs,mse,relative,"
                      "weight,hawq,fisher,kfac,margin\n";
    CHECK(strncmp(buf, hdr, strlen(hdr)) == 0);
    CHECK(bp_table_parse_csv(&back, buf, n, "mem", NULL) == 0);
    CHECK(back.n == t.n);
    for (size_t i = 0; i < t.n && i < back.n; i++) {
        CHECK(strcmp(back.rows[i].layer, t.rows[i].layer) == 0);
        CHECK(back.rows[i].error == t.rows[i].error);     /* bit-exact */
        CHECK(back.rows[i].weight_bits == t.rows[i].weight_bits);
        CHECK(back.rows[i].wbits == t.rows[i].wbits && back.rows[i].macs == 77);
        for (int m = 0; m < BP_METRIC_COUNT; m++)       /* bit-exact, NAN kept */
            CHECK(isnan(t.rows[i].value[m]) ? isnan(back.rows[i].value[m])
                                            : back.rows[i].value[m] == t.rows[i].value[m]);
    }
    /* selecting a metric makes it the error; one with a gap is refused */
    bp_error err = {""};
    CHECK(bp_table_select(&back, BP_METRIC_RELATIVE, &err) < 0);
    CHECK_STR_CONTAINS(err.msg, "metric 'relative' was not measured");
    for (size_t i = 0; i < back.n; i++)
        back.rows[i].value[BP_METRIC_KFAC] = 2.0 * (double)i;
    CHECK(bp_table_select(&back, BP_METRIC_KFAC, &err) == 0);
    for (size_t i = 0; i < back.n; i++)
        CHECK(back.rows[i].error == 2.0 * (double)i);
    free(buf);
    bp_table_free(&t);
    bp_table_free(&back);
}

static void test_minimal_columns(void)
{
    bp_table t;
    const char *csv = "error,params,abits,layer,wbits,note\r\n"
                      "0.5,100,8,a,4,x\r\n"
                      "0.1,100,8,a,8,y\r\n"
                      "\r\n"
                      "2e-3,50,16,b,2,z\r\n";
    CHECK(parse(&t, csv, NULL) == 0);
    CHECK(t.n == 3);
    CHECK(t.rows[0].weight_bits == 400);             /* params * wbits */
    CHECK(strcmp(t.rows[2].quantizer, "rtn") == 0);
    CHECK(t.rows[2].error == 2e-3);
    for (int m = 0; m < BP_METRIC_COUNT; m++)        /* no metric columns: unmeasured */
        CHECK(isnan(t.rows[0].value[m]));
    bp_table_free(&t);
}

static void expect_error(const char *csv, const char *needle)
{
    bp_table t;
    bp_error err = {""};
    CHECK_MSG(parse(&t, csv, &err) < 0, "accepted: %s", csv);
    CHECK_STR_CONTAINS(err.msg, needle);
    CHECK_STR_CONTAINS(err.msg, "t.csv");
}

static void test_malformed(void)
{
    expect_error("", "empty");
    expect_error("layer,wbits,abits,params\na,4,8,10\n", "missing required column 'error'");
    expect_error("layer,wbits,abits,error,params\n", "no rows");
    expect_error("layer,wbits,abits,error,params\na,4,8,zero,10\n", "t.csv:2: column 'error'");
    expect_error("layer,wbits,abits,error,params\na,4,8,nan,10\n", "finite");
    expect_error("layer,wbits,abits,error,params\na,four,8,1,10\n", "column 'wbits'");
    expect_error("layer,wbits,abits,error,params\na,4,8,1,-10\n", "column 'params'");
    expect_error("layer,wbits,abits,error,params\na,4,8,1\n", "expected 5 fields");
    expect_error("layer,wbits,abits,error,params\na,4,8,1,10\nb,2,8,1,5\na,4,8,2,10\n",
                 "t.csv:4: duplicate row for layer 'a'");
    expect_error("layer,wbits,abits,error,params\na,4,8,1,10\na,2,8,1,11\n", "params");
    expect_error("layer,wbits,abits,error,params\n\"a,4,8,1,10\n", "unterminated");
    expect_error("layer,layer,wbits,abits,error,params\n", "twice");
    expect_error("layer,wbits,abits,error,params\n,4,8,1,10\n", "empty layer name");
    expect_error("layer,wbits,abits,error,params,kfac\na,4,8,1,10,x\n", "column 'kfac'");
    expect_error("layer,wbits,abits,error,params,mse\na,4,8,1,10,inf\n", "finite number or");
}

int main(void)
{
    test_round_trip();
    test_minimal_columns();
    test_malformed();
    return check_done();
}
