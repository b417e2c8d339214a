"""Solve bitplan's integer program with CBC (Debian's coinor-cbc through
python3-pulp), for timing and checking against bitplan's GLPK solve:

    /usr/bin/python3 bench/perf/cbc.py TABLE.csv AVG_BITS

The same program as `bitplan solve --table TABLE.csv --avg-bits AVG_BITS`:
one candidate per layer, sum of weight_bits <= AVG_BITS * total params,
minimise the sum of errors.  Prints "seconds objective" (CBC's own solve
time; the model is built before the clock starts).
"""
import csv
import math
import sys
import time

import pulp


def main():
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    rows = list(csv.DictReader(open(sys.argv[1])))
    avg = float(sys.argv[2])
    layers = {}
    for i, r in enumerate(rows):
        layers.setdefault(r["layer"], []).append(i)
    params = sum(int(rows[c[0]]["params"]) for c in layers.values())
    prob = pulp.LpProblem("bitplan", pulp.LpMinimize)
    x = [pulp.LpVariable(f"x{i}", cat="Binary") for i in range(len(rows))]
    prob += pulp.lpSum(float(r["error"]) * x[i] for i, r in enumerate(rows))
    for name, cands in layers.items():
        prob += pulp.lpSum(x[i] for i in cands) == 1
    prob += pulp.lpSum(float(rows[i]["weight_bits"]) * x[i]
                       for i in range(len(rows))) <= math.floor(avg * params)
    solver = pulp.COIN_CMD(msg=0, gapRel=0, threads=1)
    t0 = time.time()
    status = prob.solve(solver)
    wall = time.time() - t0
    if pulp.LpStatus[status] != "Optimal":
        raise SystemExit(f"cbc: {pulp.LpStatus[status]}")
    print(f"{wall:.3f} {pulp.value(prob.objective):.17g}")


if __name__ == "__main__":
    main()
