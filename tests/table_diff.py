"""Two sensitivity tables (CSV) of the same candidates, compared value by value.

    table_diff.py A.csv B.csv MAX [--min MIN] [--label TEXT]

The key columns (layer, wbits, abits, quantizer) and every non-numeric or
missing value must be equal; over the numeric ones the largest relative
difference |a - b| / max(|a|, |b|) is printed and must be at most MAX (and,
with --min, above MIN: the two tables really come from different routes).
"""
import argparse
import csv
import sys

KEYS = ("layer", "wbits", "abits", "quantizer")


def rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("max", type=float)
    ap.add_argument("--min", type=float)
    ap.add_argument("--label", default="tables")
    args = ap.parse_args()
    a, b = rows(args.a), rows(args.b)
    if not a or len(a) != len(b):
        sys.exit(f"{args.label}: {len(a)} and {len(b)} rows")
    worst, n = 0.0, 0
    for x, y in zip(a, b):
        if tuple(x[k] for k in KEYS) != tuple(y[k] for k in KEYS):
            sys.exit(f"{args.label}: rows differ in their keys: {x} / {y}")
        for k in x:
            if k in KEYS or x[k] in ("", "nan"):
                if y[k] != x[k]:
                    sys.exit(f"{args.label}: {k} is '{x[k]}' and '{y[k]}'")
                continue
            u, v = float(x[k]), float(y[k])
            if max(abs(u), abs(v)) > 0:
                worst = max(worst, abs(u - v) / max(abs(u), abs(v)))
            n += 1
    print(f"{args.label}: {len(a)} candidates, {n} values, max relative difference {worst:.2e}")
    if worst > args.max or (args.min is not None and worst <= args.min):
        sys.exit(f"{args.label}: {worst:.2e} outside ({args.min}, {args.max}]")


if __name__ == "__main__":
    main()
