"""Largest relative difference between two sensitivity tables of the same
layers and candidates, per quantizer and metric (mse, relative, weight).

    /usr/bin/python3 bench/llm/compare_tables.py OLD.csv NEW.csv
"""
import csv
import sys


def main(old, new):
    a = list(csv.DictReader(open(old)))
    b = list(csv.DictReader(open(new)))
    if len(a) != len(b):
        sys.exit("%s has %d rows, %s %d" % (old, len(a), new, len(b)))
    worst = {}
    for x, y in zip(a, b):
        if (x["layer"], x["wbits"], x["abits"], x["quantizer"]) != \
                (y["layer"], y["wbits"], y["abits"], y["quantizer"]):
            sys.exit("the tables list different candidates")
        for k in ("mse", "relative", "weight"):
            u, v = float(x[k]), float(y[k])
            d = abs(u - v) / max(abs(u), abs(v), 1e-300)
            worst[(x["quantizer"], k)] = max(worst.get((x["quantizer"], k), 0.0), d)
    print("%d rows; largest relative difference:" % len(a))
    for (q, k), d in sorted(worst.items()):
        print("  %-6s %-9s %.2e" % (q, k, d))


if __name__ == "__main__":
    main(*sys.argv[1:3])
