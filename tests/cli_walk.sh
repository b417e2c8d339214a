#!/bin/bash
# The README's "Your PyTorch model in five commands", run as written: its model
# file, its five commands (tools/ and build/bitplan of this tree) and its
# apply.py, in an empty directory.  Then what a user would check: a plan
# within the budget, its weights, an evaluation, and a PyTorch model whose
# planned layers hold the plan's weights.
source "$SRC/tests/lib.sh"
needs_torch "README walk"

# the fenced block after <!-- walk:NAME --> in the README
block() {
    awk -v tag="<!-- walk:$1 -->" '
        $0 == tag { want = 1; next }
        want && /^```/ { if (inside) exit; inside = 1; next }
        inside { print }' "$SRC/README.md"
}
block model >mymodel.py
block apply >apply.py
block commands | sed -e "s#tools/#$SRC/tools/#g" -e "s#build/bitplan#$BITPLAN#g" \
    -e "s#PYTHONPATH=tools#PYTHONPATH=$SRC/tools#" >walk.sh
check "the README has the model, the commands and apply.py" \
    test -s mymodel.py -a -s apply.py -a "$(grep -c . walk.sh)" = 5

export PYTHONPATH="$WORK"          # mymodel, as "in the current directory"
BITPLAN_PROGRESS_SECONDS=5 bash -e walk.sh >walk.out 2>walk.err
check "the five commands run: $(tail -3 walk.err)" test $? = 0
check "capture wrote the layers and their inputs" \
    test -s captured/weights.safetensors -a -s captured/calib.safetensors
check "init wrote a config" grep -q '^  quantizer: gptq' my.yaml
check "run wrote the plan" test -s out/plan.yaml
check "and the quantized weights" "$BITPLAN" inspect out/q.safetensors
avg=$(yaml_value out/plan.yaml avg_bits | tail -1)
awk -v a="$avg" 'BEGIN { exit !(a > 2 && a <= 4.0) }' && ok || bad "the plan within init's 4-bit budget: $avg"
grep -q "KL to float" walk.out && ok || bad "evaluate_plan reported: $(cat walk.out)"
grep -q "predicted .* measured" walk.out && ok || bad "evaluate_plan: predicted against measured"
check "apply.py saved the quantized model" test -s model-quantized.pt

# the saved model computes with the plan's weights: each planned layer's weight
# equals the dequantized weights of the file, and differs from the float one
/usr/bin/python3 - <<'PYEOF' && ok || bad "the saved model holds the plan's weights"
import sys
sys.path.insert(0, sys.argv[0] and __import__("os").environ["SRC"] + "/tools")
import numpy as np, torch
import mymodel
from bitplan_torch import QuantizedFile
sd = torch.load("model-quantized.pt")
net, _ = mymodel.build()
qf = QuantizedFile("out/q.safetensors")
assert qf.names, "no layers"
for n in qf.names:
    w, _, _ = qf.layer(n)
    got = sd[n + ".weight"].numpy().reshape(w.shape)
    assert np.array_equal(got, w.astype(np.float32)), n
    assert not np.array_equal(got, net.state_dict()[n + ".weight"].numpy().reshape(w.shape)), n
PYEOF
finish
