"""Refine a plan on the real model: search plans under the same budget with
the joint end-to-end KL divergence on calibration batches as the objective.

    /usr/bin/python3 tools/refine_plan.py CONFIG MODULE:FUNCTION
        [--avg-bits B | --max-bytes N] [--evals 300] [--seed 0] [-o PLAN]
        [--heldout MODULE:FUNCTION] [--deltas auto|none|FILE] [--class-dim -1]
        [--bitplan PATH] [--work DIR] [--json FILE] [-q]

The integer program minimises a sum of per-layer errors; the errors of many
quantized layers interact, which no per-layer sum sees.  This tool takes the
solver's own feasible set (`bitplan candidates CONFIG`: pins, allowed widths
and tied groups applied), starts from the best of several seeds measured on
the model -- the IP plan of the config's metric, the IP plans of every other
metric the table holds, and every uniform plan within the budget -- and
improves it by local search: moves that change one group's candidate, or a
pair of groups (one up, one down) so that the plan stays within the budget,
tried in the order the table's predicted errors rank them and then at random,
each accepted when the measured KL of the whole quantized model drops.  Every
plan is evaluated with bitplan's own quantized weights for each candidate
(`bitplan quantize`) and its activation grids, as tools/evaluate_plan.py
applies them.  The best plan is handed back to bitplan
(`bitplan run CONFIG --choices`), which writes it and its exports and
quantized weights like any plan (or only the plan, to PLAN, with -o).

MODULE:FUNCTION returns (model, loader[, loss_fn]) as for tools/capture.py,
with the calibration batches; plans are measured on them, or on the batches of
--heldout (better: data the calibration inputs did not come from, since GPTQ
and ERQ fit their weights to those).  With the table's per-layer deltas
measured first (--deltas auto, when the table has at most --max-deltas rows:
one pass over the batches per candidate), their IP plan is a seed too and
they rank the moves.
"""
import argparse
import json
import os
import random
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bitplan_torch import (Applied, QuantizedFile, bitplan_path, check_layers, fail,  # noqa: E402
                           float_outputs, load_spec, measure, measure_deltas, quantize_candidates,
                           read_csv, run_bitplan, write_deltas)
from progress import Progress  # noqa: E402

TOOL = "refine_plan"
METRICS = ("mse", "relative", "weight", "hawq", "fisher", "kfac")


class Program:
    """The solver's feasible set: groups, each with choices; a choice assigns
    (wbits, abits, quantizer) to each member layer, with its summed bits and
    predicted error."""

    def __init__(self, rows):
        self.groups = []                       # per group: list of choices
        for r in rows:
            g, c = int(r["group"]), int(r["choice"])
            while len(self.groups) <= g:
                self.groups.append([])
            ch = self.groups[g]
            while len(ch) <= c:
                ch.append(dict(members=[], bits=0, error=0.0))
            m = (r["layer"], int(r["wbits"]), int(r["abits"]), r["quantizer"])
            ch[c]["members"].append(m)
            ch[c]["bits"] += int(r["weight_bits"])
            ch[c]["error"] += float(r["error"])
        for ch in self.groups:
            for c in ch:
                c["key"] = tuple(c["members"])
        self.index = {}                        # member tuple -> (group, choice)
        for g, ch in enumerate(self.groups):
            for c, x in enumerate(ch):
                self.index[x["key"]] = (g, c)

    def of_plan(self, layers):
        """Choices per group for a plan's layers (name -> (wbits, abits, quantizer))."""
        state = []
        for g, ch in enumerate(self.groups):
            want = tuple((n, *layers[n]) for n, *_ in ch[0]["members"])
            if want not in self.index:
                return None
            state.append(self.index[want][1])
        return state

    def bits(self, state):
        return sum(self.groups[g][c]["bits"] for g, c in enumerate(state))

    def error(self, state):
        return sum(self.groups[g][c]["error"] for g, c in enumerate(state))

    def uniform(self, limit):
        """Every plan with one (wbits, abits) for all layers (best quantizer by
        predicted error) within the bit limit."""
        widths = {(w, a) for ch in self.groups for x in ch for _, w, a, _ in x["members"]}
        out = {}
        for w, a in sorted(widths):
            state = []
            for ch in self.groups:
                ok = [c for c, x in enumerate(ch) if all(m[1] == w and m[2] == a
                                                         for m in x["members"])]
                if not ok:
                    break
                state.append(min(ok, key=lambda c: ch[c]["error"]))
            if len(state) == len(self.groups) and self.bits(state) <= limit:
                out[f"uniform {w}/{a}"] = state
        return out


def moves(program, state, limit):
    """Budget-feasible moves from state, each a tuple of (group, choice)."""
    bits = program.bits(state)
    alt = []                                   # (group, choice, dbits, derr)
    for g, ch in enumerate(program.groups):
        cur = ch[state[g]]
        for c, x in enumerate(ch):
            if c != state[g]:
                alt.append((g, c, x["bits"] - cur["bits"], x["error"] - cur["error"]))
    out = [((g, c),) for g, c, db, _ in alt if bits + db <= limit]
    ups = [a for a in alt if a[2] > 0]
    downs = [a for a in alt if a[2] < 0]
    for g1, c1, db1, _ in ups:
        for g2, c2, db2, _ in downs:
            if g1 != g2 and bits + db1 + db2 <= limit:
                out.append(((g1, c1), (g2, c2)))
    # one group up, paid for by the downs of other groups that cost the least
    # predicted error per freed bit (one down per group)
    cheap = sorted(downs, key=lambda a: a[3] / -a[2])
    for g1, c1, db1, _ in ups:
        need, used, m = bits + db1 - limit, {g1}, [(g1, c1)]
        for g2, c2, db2, _ in cheap:
            if need <= 0:
                break
            if g2 in used:
                continue
            used.add(g2)
            m.append((g2, c2))
            need += db2
        if need <= 0 and len(m) > 2:
            out.append(tuple(m))
    return out


def plan_layers(path):
    with open(path) as f:
        p = json.load(f)
    return p, {l["name"]: (l["wbits"], l["abits"], l["quantizer"]) for l in p["layers"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("config")
    ap.add_argument("spec")
    ap.add_argument("--avg-bits", type=float)
    ap.add_argument("--max-bytes", type=float)
    ap.add_argument("--evals", type=int, default=300, help="plans to evaluate at most")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--deltas", default="auto",
                    help="measured per-layer deltas to seed and guide the search: auto "
                         "(measure them when the table has at most --max-deltas rows), none, "
                         "or a table from tools/measure_deltas.py")
    ap.add_argument("--max-deltas", type=int, default=2000)
    ap.add_argument("--heldout", metavar="MODULE:FUNCTION",
                    help="measure plans on these batches instead of the spec's (data the "
                         "calibration inputs did not come from: GPTQ and ERQ fit their weights "
                         "to those, so plans measured on them look better than they are)")
    ap.add_argument("-o", "--output", help="write only the plan, here (default: bitplan run "
                                           "writes the config's outputs)")
    ap.add_argument("--class-dim", type=int, default=-1)
    ap.add_argument("--bitplan")
    ap.add_argument("--work", help="keep intermediate files here")
    ap.add_argument("--json", help="write the search's report here")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("-q", "--quiet", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.avg_bits is not None and args.max_bytes is not None:
        fail(TOOL, "give one of --avg-bits and --max-bytes")
    exe = bitplan_path(args.bitplan)
    budget = (["--avg-bits", repr(args.avg_bits)] if args.avg_bits is not None else
              ["--max-bytes", repr(args.max_bytes)] if args.max_bytes is not None else [])
    t0 = time.time()
    rnd = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or tmp
        os.makedirs(work, exist_ok=True)
        ip_path = os.path.join(work, "ip.json")
        run_bitplan(exe, "solve", args.config, *budget, "-o", ip_path, "-q", tool=TOOL)
        ip, ip_layers = plan_layers(ip_path)
        b = ip["budget"]
        params = ip["totals"]["params"]
        other = [k for k in ("max_error", "max_bops", "max_latency") if b.get(k) is not None]
        if other or ip["budget"].get("objective", "min_error") != "min_error":
            fail(TOOL, f"{args.config}: refinement keeps a size budget only (budget.avg_bits or "
                       f"budget.max_bytes, minimising error); this config also has "
                       f"{', '.join(other) or 'budget.minimize'}")
        if b.get("avg_bits"):
            limit = int(b["avg_bits"] * params + 1e-6)
            budget = budget or ["--avg-bits", repr(b["avg_bits"])]
        elif b.get("max_bytes"):
            limit = int(8 * b["max_bytes"])
            budget = budget or ["--max-bytes", repr(b["max_bytes"])]
        else:
            fail(TOOL, f"{args.config}: refinement needs a size budget (budget.avg_bits or "
                       "budget.max_bytes, or --avg-bits / --max-bytes)")
        tpath = os.path.join(work, "table.csv")
        run_bitplan(exe, "sensitivity", args.config, "-o", tpath, "-q", tool=TOOL)
        table = read_csv(tpath)
        metric = ip["model"].get("metric", "")
        model, batches, loss_fn = load_spec(args.spec, TOOL)
        if args.heldout:
            batches = load_spec(args.heldout, TOOL)[1]
        check_layers(table, model, args.config, args.spec, TOOL)
        files = quantize_candidates(exe, args.config, {(int(r["wbits"]), int(r["abits"]),
                                                        r["quantizer"]) for r in table},
                                    work, TOOL)
        ref = float_outputs(model, batches, args.class_dim)

        # measured per-layer deltas: the exact per-layer reference, to seed and rank
        deltas = None
        if args.deltas not in ("auto", "none"):
            deltas = args.deltas
        elif args.deltas == "auto" and len(table) <= args.max_deltas:
            deltas = os.path.join(work, "deltas.csv")
            prog = Progress(f"{TOOL}: deltas", len(table), args.quiet, "candidates")
            write_deltas(deltas, table, measure_deltas(model, batches, ref, table, files,
                                                       loss_fn, args.class_dim, "kl", prog, TOOL))
            prog.close()
        errors = ["--errors", deltas] if deltas else []
        prog_path = os.path.join(work, "program.csv")
        run_bitplan(exe, "candidates", args.config, *errors, "-o", prog_path, "-q", tool=TOOL)
        program = Program(read_csv(prog_path))

        # seeds: the IP plan of every measured metric (and of the deltas), the uniform plans
        seeds = {f"ip {metric}": program.of_plan(ip_layers)}
        for m in METRICS:
            if m == metric or any(r.get(m, "") == "" for r in table):
                continue
            p = os.path.join(work, f"ip-{m}.json")
            run_bitplan(exe, "solve", args.config, *budget, "--metric", m, "-o", p, "-q",
                        tool=TOOL)
            seeds[f"ip {m}"] = program.of_plan(plan_layers(p)[1])
        if deltas:
            p = os.path.join(work, "ip-deltas.json")
            run_bitplan(exe, "solve", args.config, *budget, *errors, "-o", p, "-q", tool=TOOL)
            seeds["ip deltas"] = program.of_plan(plan_layers(p)[1])
        seeds.update(program.uniform(limit))
        seeds = {k: v for k, v in seeds.items() if v is not None}

        # every candidate's weights, from bitplan
        weights = {}
        for (w, a, q), path in files.items():
            qf = QuantizedFile(path, TOOL)
            for n in qf.names:
                weights[(n, w, a, q)] = qf.layer(n)
            del qf

        applied = Applied(model)
        current = {}                           # layer -> (w, a, q) applied now

        def evaluate(state):
            for g, c in enumerate(state):
                for n, w, a, q in program.groups[g][c]["members"]:
                    if current.get(n) != (w, a, q):
                        applied.set(n, *weights[(n, w, a, q)])
                        current[n] = (w, a, q)
            return measure(model, batches, ref, loss_fn, args.class_dim)["kl"]

        report = dict(metric=metric, limit_bits=limit, params=params, seeds={},
                      guide="deltas" if deltas else metric)
        progress = Progress(TOOL, args.evals, args.quiet, "plans")
        evals = 0
        best_name, best, best_kl = None, None, float("inf")
        for name, state in seeds.items():
            progress(evals, name)
            kl = evaluate(state)
            evals += 1
            report["seeds"][name] = dict(kl=kl, bits=program.bits(state),
                                         predicted=program.error(state))
            if kl < best_kl:
                best_name, best, best_kl = name, list(state), kl
        ip_kl = report["seeds"][f"ip {metric}"]["kl"]

        # local search: moves of one group, of a pair (one up, one down), or of
        # one group up with the cheapest downs elsewhere that pay for it
        tried = set()
        while evals < args.evals:
            cands = moves(program, best, limit)
            cands = [m for m in cands if (tuple(best), m) not in tried]
            if not cands:
                break
            score = {m: sum(program.groups[g][c]["error"] - program.groups[g][best[g]]["error"]
                            for g, c in m) for m in cands}
            ranked = sorted(cands, key=lambda m: score[m])[:24]
            chosen = set(ranked)
            rest = [m for m in cands if m not in chosen]
            ranked += rnd.sample(rest, min(8, len(rest)))
            improved = False
            for m in ranked:
                if evals >= args.evals:
                    break
                tried.add((tuple(best), m))
                state = list(best)
                for g, c in m:
                    state[g] = c
                progress(evals, f"kl {best_kl:.5g}")
                kl = evaluate(state)
                evals += 1
                if kl < best_kl * (1 - 1e-9):
                    best, best_kl, improved = state, kl, True
                    if not best_name.startswith("refined"):
                        best_name = f"refined from {best_name}"
                    break
            if not improved:
                break
        progress.close()
        applied.restore()

        # hand the plan back to bitplan
        choices = os.path.join(work, "choices.yaml")
        with open(choices, "w") as f:
            f.write("layers:\n")
            for g, c in enumerate(best):
                for n, w, a, q in program.groups[g][c]["members"]:
                    f.write(f"  - {{name: {json.dumps(n)}, wbits: {w}, abits: {a}, "
                            f"quantizer: {json.dumps(q)}}}\n")
        out = ["-o", args.output] if args.output else []
        run_bitplan(exe, "run", args.config, "--choices", choices, *budget, *out, "-q",
                    tool=TOOL)
        report.update(best=best_name, kl=best_kl, ip_kl=ip_kl, evals=evals,
                      bits=program.bits(best), predicted=program.error(best),
                      seconds=time.time() - t0,
                      layers={n: list(wa) for g, c in enumerate(best)
                              for n, *wa in program.groups[g][c]["members"]})
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    if not args.quiet:
        gain = (1 - best_kl / ip_kl) * 100 if ip_kl > 0 else 0.0
        print(f"{TOOL}: {evals} plans evaluated in {time.time() - t0:.1f} s; KL on the "
              f"calibration batches: IP plan ({metric}) {ip_kl:.6g}, best seed "
              f"{min(s['kl'] for s in report['seeds'].values()):.6g}, refined {best_kl:.6g} "
              f"({gain:.1f} % below the IP plan; {best_name})")
        print(f"{TOOL}: plan written by bitplan run --choices"
              + (f" to {args.output}" if args.output else " to the config's output.dir"))


if __name__ == "__main__":
    main()
