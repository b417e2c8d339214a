"""Solve bitplan's integer program with CBC (Debian's coinor-cbc through
python3-pulp), for timing and checking against bitplan's GLPK solve:

    /usr/bin/python3 bench/perf/cbc.py TABLE.csv AVG_BITS [TIME_LIMIT]

The same program as `bitplan solve --table TABLE.csv --avg-bits AVG_BITS`:
one candidate per layer, sum of weight_bits <= AVG_BITS * total params,
minimise the sum of errors.  Prints "seconds objective status" (wall time of
the solve; the model is built before the clock starts; status "optimal", or
"limit" when TIME_LIMIT seconds (default 120) ran out with a plan).
"""
import csv
import math
import sys
import time

import pulp


def main():
    if len(sys.argv) not in (3, 4):
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
    limit = float(sys.argv[3]) if len(sys.argv) == 4 else 120.0
    solver = pulp.COIN_CMD(msg=0, gapRel=0, threads=1, timeLimit=limit)
    t0 = time.time()
    status = prob.solve(solver)
    wall = time.time() - t0
    if pulp.value(prob.objective) is None:
        raise SystemExit(f"cbc: no plan ({pulp.LpStatus[status]})")
    done = prob.sol_status == pulp.LpSolutionOptimal and wall < limit
    print(f"{wall:.3f} {pulp.value(prob.objective):.17g} {'optimal' if done else 'limit'}")


if __name__ == "__main__":
    main()
