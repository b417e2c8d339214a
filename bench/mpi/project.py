"""Projected scaling of distributed sensitivity from bitplan's cost model.

The model is planner/pipeline.c's layer_flops (README, "Running across
machines"); layers reading the same inputs (q/k/v, gate/up) form one unit,
units are dealt longest first to the least loaded rank, and the speed-up is
total work / the most loaded rank's work (communication is a few KB per layer
and ignored).  Shapes: Llama-7B (32 blocks, 4096 / 11008, head 32000) and
Llama-70B (80 blocks, 8192 / 28672, grouped-query k/v of 1024, head 32000),
from statistics, rtn + gptq, 5 weight widths x 2 activation widths.
"""


def layer_flops(out, inp, w=5, a=2, qa=1, quantizers=("rtn", "gptq")):
    f = qa * 4.0 * out * inp * inp                  # cross terms from statistics
    for q in quantizers:
        f += w * a * 2.0 * out * inp * inp
        if q == "gptq":
            f += a * (inp ** 3 / 3.0 + w * 2.0 * out * inp * inp)
    return f


def units(blocks, h, inter, kv, vocab):
    u = []
    for _ in range(blocks):
        u.append(layer_flops(h, h) + 2 * layer_flops(kv, h))       # q, k, v
        u.append(layer_flops(h, h))                                 # o
        u.append(2 * layer_flops(inter, h))                         # gate, up
        u.append(layer_flops(h, inter))                             # down
    u.append(layer_flops(vocab, h))                                 # head
    return u


def makespan(u, ranks):
    load = [0.0] * ranks
    for c in sorted(u, reverse=True):
        i = load.index(min(load))
        load[i] += c
    return max(load)


for name, shape in (("Llama-7B", (32, 4096, 11008, 4096, 32000)),
                    ("Llama-70B", (80, 8192, 28672, 1024, 32000))):
    u = units(*shape)
    total = sum(u)
    line = ", ".join(f"{r}: x{total / makespan(u, r):.1f}" for r in (1, 2, 8, 16, 32, 64))
    print(f"{name}: {len(u)} units, {total / 1e15:.1f} PFLOP; speed-up by ranks {line}")
