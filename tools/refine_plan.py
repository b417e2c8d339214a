"""Refine a plan on the real model: search plans under the same budget by the
user's objective measured on the whole quantized model.

    /usr/bin/python3 tools/refine_plan.py CONFIG MODULE:FUNCTION
        [--avg-bits B | --max-bytes N] [--objective kl|flips|loss|metric]
        [--evals 300] [--seed 0] [--output-dir DIR | -o PLAN] [--heldout MODULE:FUNCTION]
        [--deltas auto|none|FILE] [--loss M:F] [--metric M:F] [--decode D]
        [--class-dim -1] [--bitplan PATH] [--work DIR] [--json FILE] [-q]

The integer program minimises a sum of per-layer errors; the errors of many
quantized layers interact, which no per-layer sum sees.  This tool takes the
solver's own feasible set (`bitplan candidates CONFIG`: pins, allowed widths
and tied groups applied), starts from the best of several seeds measured on
the model -- the IP plan of the config's metric, the IP plans of every other
metric the table holds, and every uniform plan within the budget -- and
improves it by local search: moves that change one group's candidate, or a
pair of groups (one up, one down) so that the plan stays within the budget,
tried in the order the table's predicted errors rank them and then at random,
each accepted when the objective (tools/objective.py: kl, flips, loss or
metric; ties of flips and metric broken by the KL) of the whole quantized
model improves on the search half of the batches.  Every plan is evaluated
with bitplan's own quantized weights for each candidate (`bitplan quantize`)
and its activation grids, as tools/evaluate_plan.py applies them.

A search that measures hundreds of plans on the same batches fits them: the
batches are split in two halves (even and odd), the search runs on one, and
the plan it finds replaces the IP plan only when it is better on the other,
which the search never saw; otherwise the IP plan stays and the report says
so.  Both plans' objective, KL, flips and (with one) the user's metric are
reported on the held-back half.  The plan is handed back to bitplan
(`bitplan run CONFIG --choices --output-dir`), which writes it and its
exports and quantized weights like any plan, as a set of its own beside the
IP plan's (OUTPUT_DIR/refined/ unless --output-dir; or only the plan, to
PLAN, with -o): the IP plan's files are never replaced.  The search keeps to
the candidates the configured exports can apply (llama.cpp and GPTQModel
quantize weights only; GPTQModel 2..8 bits), and says before it starts which
it leaves out.

MODULE:FUNCTION follows the contract of tools/objective.py, with the
calibration batches; plans are measured on them, or on the batches of
--heldout (better: data the calibration inputs did not come from, since GPTQ
and ERQ fit their weights to those).  At least two batches are needed.  With
the table's per-layer deltas measured first (--deltas auto, when the table
has at most --max-deltas rows: one pass over the search half per
candidate), their IP plan is a seed too and they rank the moves.
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
from bitplan_torch import (Applied, QuantizedFile, Reference, bitplan_path,  # noqa: E402
                           check_layers, config_outputs, degradation, fail, measure, measure_deltas,
                           quantize_candidates, read_csv, run_bitplan, write_deltas)
from objective import add_arguments, check_objective, task_from_args  # noqa: E402
from progress import Progress  # noqa: E402

TOOL = "refine_plan"
METRICS = ("mse", "relative", "weight", "hawq", "fisher", "kfac", "margin")


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
        self.allowed = [set(range(len(ch))) for ch in self.groups]   # restrict()
        self.index = {}                        # member tuple -> (group, choice)
        for g, ch in enumerate(self.groups):
            for c, x in enumerate(ch):
                self.index[x["key"]] = (g, c)

    def restrict(self, formats):
        """Keep to the choices every configured export can apply (weights-only
        consumers: no activation widths; GPTQModel: 2..8 weight bits); returns
        a note per dropped (wbits, abits) saying why."""
        why = {}
        for f in formats:
            if f in ("llamacpp", "gptqmodel"):
                why.setdefault("act", []).append(f)
            if f == "gptqmodel":
                why.setdefault("gptq", []).append(f)
        dropped = {}
        for g, ch in enumerate(self.groups):
            for c, x in enumerate(ch):
                for _, w, a, _ in x["members"]:
                    if a < 16 and "act" in why:
                        dropped[(w, a)] = (f"{'/'.join(why['act'])} quantize weights only "
                                           f"(activations at {a} bits cannot be applied)")
                    elif 8 < w < 16 and "gptq" in why:
                        dropped[(w, a)] = "GPTQModel quantizes to 2..8 bits"
                    else:
                        continue
                    self.allowed[g].discard(c)
                    break
        return dropped

    def expressible(self, state):
        return state is not None and all(c in self.allowed[g] for g, c in enumerate(state))

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
                g = len(state)
                ok = [c for c, x in enumerate(ch) if c in self.allowed[g] and
                      all(m[1] == w and m[2] == a for m in x["members"])]
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
            if c != state[g] and c in program.allowed[g]:
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


class Halves:
    """The search and the held-back half of a task's batches: two tasks over
    the same model and objective, with their float references."""

    def __init__(self, task, objective):
        b = task.batches
        if len(b) < 2:
            fail(TOOL, f"{task.spec}: refinement holds half of the batches back to check the "
                       f"plan it finds, so it needs at least 2 batches (got {len(b)}); give "
                       "the loader more, smaller batches")
        self.search, self.check = task.subset(b[0::2]), task.subset(b[1::2])
        need = {"kl", "flips", objective} | ({"metric"} if task.metric_fn else set())
        self.ref_search = Reference(self.search, need)
        self.ref_check = Reference(self.check, need)
        self.objective = objective

    def score(self, half="search"):
        """(objective, kl, everything measured) of the model as it is now: plans
        compare by the objective, ties (flips and metrics are counts) by the KL."""
        t, r = (self.search, self.ref_search) if half == "search" else (self.check, self.ref_check)
        got = measure(t, r)
        return degradation(t, r, got, self.objective), got["kl"], got


def better(a, b):
    """Is score a strictly better than b (objective first, then KL)?"""
    if a[0] != b[0]:
        return bool(a[0] < b[0] - 1e-12 * abs(b[0]))
    return bool(a[1] < b[1] * (1 - 1e-9))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "),
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("config", help="the bitplan config (a size budget)")
    ap.add_argument("spec", help="MODULE:FUNCTION: the model and its batches (tools/objective.py)")
    ap.add_argument("--avg-bits", type=float, help="budget (instead of the config's)")
    ap.add_argument("--max-bytes", type=float, help="budget (instead of the config's)")
    ap.add_argument("--evals", type=int, default=300, help="plans to evaluate at most")
    ap.add_argument("--seed", type=int, default=0, help="of the random moves")
    ap.add_argument("--deltas", default="auto",
                    help="measured per-layer deltas to seed and guide the search: auto "
                         "(measure them when the table has at most --max-deltas rows), none, "
                         "or a table from tools/measure_deltas.py")
    ap.add_argument("--max-deltas", type=int, default=2000, help="see --deltas")
    ap.add_argument("--heldout", metavar="MODULE:FUNCTION",
                    help="measure plans on these batches instead of the spec's (data the "
                         "calibration inputs did not come from: GPTQ and ERQ fit their weights "
                         "to those, so plans measured on them look better than they are)")
    add_arguments(ap, objective_default="flips")
    ap.add_argument("--output-dir", metavar="DIR",
                    help="write the refined plan's output set (plan, exports, weights) here "
                         "(default: OUTPUT_DIR/refined beside the IP plan, which stays as it is)")
    ap.add_argument("-o", "--output", help="write only the plan, here (instead of an output set)")
    ap.add_argument("--bitplan", help="the bitplan binary (default: $BITPLAN or build/bitplan)")
    ap.add_argument("--work", help="keep intermediate files here")
    ap.add_argument("--json", help="write the search's report here")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("-q", "--quiet", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.avg_bits is not None and args.max_bytes is not None:
        fail(TOOL, "give one of --avg-bits and --max-bytes")
    exe = bitplan_path(args.bitplan)
    budget = (["--avg-bits", repr(args.avg_bits)] if args.avg_bits is not None else
              ["--max-bytes", repr(args.max_bytes)] if args.max_bytes is not None else [])
    if args.output and args.output_dir:
        fail(TOOL, "give one of --output-dir (the output set there) and -o (the plan alone)")
    out_dir, formats = config_outputs(exe, args.config, TOOL)
    set_dir = args.output_dir or os.path.join(out_dir, "refined")
    task = task_from_args(args, TOOL)
    check_objective(task, args.objective)
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
        if args.heldout:
            task.with_batches(args.heldout)
        check_layers(table, task.model, args.config, args.spec, TOOL)
        halves = Halves(task, args.objective)
        files = quantize_candidates(exe, args.config, {(int(r["wbits"]), int(r["abits"]),
                                                        r["quantizer"]) for r in table},
                                    work, TOOL)

        # measured per-layer deltas (on the search half): to seed and rank
        deltas = None
        if args.deltas not in ("auto", "none"):
            deltas = args.deltas
        elif args.deltas == "auto" and len(table) <= args.max_deltas:
            deltas = os.path.join(work, "deltas.csv")
            prog = Progress(f"{TOOL}: deltas", len(table), args.quiet, "candidates")
            write_deltas(deltas, table, measure_deltas(halves.search, halves.ref_search, table,
                                                       files, args.objective, prog, TOOL))
            prog.close()
        errors = ["--errors", deltas] if deltas else []
        prog_path = os.path.join(work, "program.csv")
        run_bitplan(exe, "candidates", args.config, *errors, "-o", prog_path, "-q", tool=TOOL)
        program = Program(read_csv(prog_path))
        dropped = program.restrict(formats)
        if dropped and not args.quiet:
            for (w, a), why in sorted(dropped.items()):
                print(f"{TOOL}: candidates {w}/{a} (wbits/abits) left out of the search: {why}",
                      file=sys.stderr)
        if not all(program.allowed):
            fail(TOOL, f"{args.config}: a layer has no candidate that output.formats "
                       f"({', '.join(formats)}) can apply")

        # seeds: the IP plan of every measured metric (and of the deltas), the uniform plans
        start = program.of_plan(ip_layers)
        seeds = {f"ip {metric}": start}
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
        ip_ok = program.expressible(start)
        seeds = {k: v for k, v in seeds.items()
                 if v is not None and (program.expressible(v) or v is start)}
        if start is not None and not ip_ok and not args.quiet:
            print(f"{TOOL}: the IP plan uses candidates output.formats cannot apply: the "
                  "search keeps to those it can, and its best such plan is written",
                  file=sys.stderr)
        if start is None:
            fail(TOOL, f"{args.config}: the IP plan is not in the solver's own program")

        # every candidate's weights, from bitplan
        weights = {}
        for (w, a, q), path in files.items():
            qf = QuantizedFile(path, TOOL)
            for n in qf.names:
                weights[(n, w, a, q)] = qf.layer(n)
            del qf

        applied = Applied(task.model)
        current = {}                           # layer -> (w, a, q) applied now

        def apply(state):
            for g, c in enumerate(state):
                for n, w, a, q in program.groups[g][c]["members"]:
                    if current.get(n) != (w, a, q):
                        applied.set(n, *weights[(n, w, a, q)])
                        current[n] = (w, a, q)

        def evaluate(state, half="search"):
            apply(state)
            return halves.score(half)

        report = dict(metric=metric, objective=args.objective, limit_bits=limit, params=params,
                      seeds={}, guide="deltas" if deltas else metric)
        progress = Progress(TOOL, args.evals, args.quiet, "plans")
        evals = 0
        best_name, best, best_s = None, None, (float("inf"), float("inf"))
        for name, state in seeds.items():
            progress(evals, name)
            s = evaluate(state)
            evals += 1
            report["seeds"][name] = dict(objective=s[0], kl=s[1], bits=program.bits(state),
                                         predicted=program.error(state))
            if program.expressible(state) and (best is None or better(s, best_s)):
                best_name, best, best_s = name, list(state), s
        if best is None:
            fail(TOOL, f"{args.config}: no seed plan within the budget keeps to candidates "
                       f"output.formats ({', '.join(formats)}) can apply")
        ip_s = report["seeds"][f"ip {metric}"]

        # local search on the search half: moves of one group, of a pair (one up,
        # one down), or of one group up with the cheapest downs elsewhere that pay
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
                progress(evals, f"{args.objective} {best_s[0]:.5g}")
                s = evaluate(state)
                evals += 1
                if better(s, best_s):
                    best, best_s, improved = state, s, True
                    if not best_name.startswith("refined"):
                        best_name = f"refined from {best_name}"
                    break
            if not improved:
                break
        progress.close()

        # the check: on the held-back half, the plan found against the IP plan
        found = evaluate(best, "check")
        ip_check = evaluate(start, "check")
        kept = best != start and (better(found, ip_check) or not ip_ok)
        final = best if kept else start
        applied.restore()
        halves_report = {}
        for name, (s_obj, s_kl, got) in (("ip", ip_check), ("found", found)):
            halves_report[name] = dict(objective=s_obj, kl=s_kl, flips=got["flips"],
                                       metric=got["metric"])

        # hand the plan back to bitplan
        choices = os.path.join(work, "choices.yaml")
        with open(choices, "w") as f:
            f.write("layers:\n")
            for g, c in enumerate(final):
                for n, w, a, q in program.groups[g][c]["members"]:
                    f.write(f"  - {{name: {json.dumps(n)}, wbits: {w}, abits: {a}, "
                            f"quantizer: {json.dumps(q)}}}\n")
        out = ["-o", args.output] if args.output else ["--output-dir", set_dir]
        run_bitplan(exe, "run", args.config, "--choices", choices, *budget, *out, "-q",
                    tool=TOOL)
        report.update(best=best_name if kept else f"ip {metric} (the search's plan, "
                      f"{best_name}, was not better on the held-back half)",
                      kept=kept, search=dict(objective=best_s[0], kl=best_s[1],
                                             ip_objective=ip_s["objective"], ip_kl=ip_s["kl"]),
                      check=halves_report, evals=evals, bits=program.bits(final),
                      predicted=program.error(final), seconds=time.time() - t0,
                      layers={n: list(wa) for g, c in enumerate(final)
                              for n, *wa in program.groups[g][c]["members"]})
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    if not args.quiet:
        o = args.objective
        print(f"{TOOL}: {evals} plans evaluated in {time.time() - t0:.1f} s on half of "
              f"{len(task.batches)} batches; {o}: IP plan ({metric}) {ip_s['objective']:.6g}, "
              f"search's plan {best_s[0]:.6g} ({best_name})")
        c = halves_report
        line = (f"{TOOL}: on the held-back half: {o} IP plan {c['ip']['objective']:.6g}, "
                f"search's plan {c['found']['objective']:.6g}")
        if task.metric_fn is not None:
            line += (f"; metric IP plan {c['ip']['metric']:.6g}, search's plan "
                     f"{c['found']['metric']:.6g}")
        print(line)
        print(f"{TOOL}: kept {'the search' if kept else 'the IP'} plan; written by bitplan run "
              f"--choices" + (f" to {args.output}" if args.output else f" into {set_dir}/ "
                              "(the IP plan's set in output.dir is left as it was)"))


if __name__ == "__main__":
    main()
