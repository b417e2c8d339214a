"""Run bitplan's exports through the consumers' own code and print, per
consumer and plan, how many tensors get exactly their planned settings.

    check.py --bitplan BIN --work DIR --plans A.yaml B.yaml
             [--llama-cpp DIR] [--gptqmodel DIR] [--compressed-tensors DIR]
             [--autoround DIR]

Each DIR is a source tree of the consumer (a git checkout).  What runs:

  llama.cpp     its llama-quantize (built from DIR) on a tiny F32 Llama GGUF
                with --tensor-type-file; the types read back from the output
                GGUF with DIR/gguf-py
  GPTQModel     gptqmodel/quantization/config.py: QuantizeConfig.from_quant_config
                on quantize_config.json, then dynamic_get per module, as its
                quantization loop asks
  compressed-tensors  utils/match.py match_named_modules / match_targets over
                a torch module tree with the model's names (the matching
                apply_quantization_config does); the scheme fields checked
                against its QuantizationArgs rules
  AutoRound     utils/common.py parse_layer_config_arg on the JSON text (as
                --layer_config), then compressors/layer_config/resolver.py
                resolve_layer_config over the module tree

Only the consumers' own files are executed, with their package imports
that reach beyond matching (transformers, CUDA kernels, PCRE bindings)
replaced by the smallest stand-ins; the stand-ins are listed below.
A tensor counts as "as planned" when the consumer applies the plan's
settings; "warned" when it does something else and bitplan's export said so
(naming it); "silent" otherwise.  The bench fails on any "silent" tensor.
"""
import argparse
import ast
import json
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import yaml

# ---------------------------------------------------------------- helpers


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def load_defs(path, names, ns):
    """Execute the top-level definitions `names` of a source file into ns."""
    tree = ast.parse(Path(path).read_text())
    keep = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name in names:
            keep.append(node)
        elif isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id in names for t in node.targets):
            keep.append(node)
    code = compile(ast.Module(body=keep, type_ignores=[]), str(path), "exec")
    exec(code, ns)
    return ns


def module(name, **attrs):
    m = types.ModuleType(name)
    m.__dict__.update(attrs)
    m.__path__ = []
    sys.modules[name] = m
    return m


def export(bitplan, plan, fmt, out, llama=False):
    cmd = [bitplan, "export", str(plan), "--format", fmt, "-o", str(out)]
    if llama:
        cmd.append("--llama-names")
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"bitplan export {fmt} failed: {r.stderr}")
    return r.stderr


def warned(warnings, name, what):
    """Did bitplan's export warn about this layer (named, or in a list cut
    with '...') with a message containing `what`?"""
    for line in warnings.splitlines():
        if what in line and ("(" + name in line or " " + name + "," in line or
                             ", " + name + ")" in line or ", ..." in line):
            return True
    return False


def plan_layers(path):
    return yaml.safe_load(Path(path).read_text())["layers"]


class Tally:
    def __init__(self, consumer, plan):
        self.consumer, self.plan = consumer, plan
        self.ok = self.warn = 0
        self.silent = []

    def add(self, name, good, was_warned=False):
        if good:
            self.ok += 1
        elif was_warned:
            self.warn += 1
        else:
            self.silent.append(name)

    def row(self):
        n = self.ok + self.warn + len(self.silent)
        return (f"| {self.consumer} | {self.plan} | {n} | {self.ok} | {self.warn} | "
                f"{len(self.silent)}{' (' + ', '.join(self.silent[:3]) + ')' if self.silent else ''} |")


# ---------------------------------------------------------------- llama.cpp

GGUF = {"model.embed_tokens": "token_embd", "lm_head": "output"}
for _b in range(64):
    for _hf, _gg in (("self_attn.q_proj", "attn_q"), ("self_attn.k_proj", "attn_k"),
                     ("self_attn.v_proj", "attn_v"), ("self_attn.o_proj", "attn_output"),
                     ("mlp.gate_proj", "ffn_gate"), ("mlp.up_proj", "ffn_up"),
                     ("mlp.down_proj", "ffn_down")):
        GGUF[f"model.layers.{_b}.{_hf}"] = f"blk.{_b}.{_gg}"
TYPES = {2: "Q2_K", 3: "Q3_K", 4: "Q4_K", 5: "Q5_K", 6: "Q6_K", 8: "Q8_0", 16: "F16"}


def run_llamacpp(args, work, plan, label):
    sys.path.insert(0, str(Path(args.llama_cpp) / "gguf-py"))
    import gguf
    quantize = Path(args.llama_cpp) / "build" / "bin" / "llama-quantize"
    types_file = work / f"tensor-types-{label}.txt"
    warnings = export(args.bitplan, plan, "llamacpp", types_file, llama=True)
    out = work / f"q-{label}.gguf"
    r = subprocess.run([str(quantize), "--tensor-type-file", str(types_file),
                        str(work / "model-f32.gguf"), str(out), "Q8_0"],
                       capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"llama-quantize failed: {r.stdout[-2000:]}{r.stderr[-2000:]}")
    got = {t.name: t.tensor_type.name for t in gguf.GGUFReader(str(out)).tensors}
    t = Tally("llama.cpp `llama-quantize`", label)
    for layer in plan_layers(plan):
        name = GGUF[layer["name"]] + ".weight"
        want = TYPES[layer["wbits"]]
        have = got.get(name)
        fell_back = have != want and warned(warnings, name, f"falls back to {have.lower()}")
        # what no ggml type expresses: activation widths, the plan's own grid
        if have == want and layer["abits"] < 16:
            t.add(name, False, warned(warnings, name, "quantizes weights only"))
        elif have == want and layer["wbits"] < 16 and (
                layer["granularity"] != "per_channel" or not layer["symmetric"]):
            t.add(name, False, warned(warnings, name, "fix their own blocks"))
        else:
            t.add(name, have == want, fell_back)
    # the failures that used to be silent: PyTorch names, an F16 base type
    raw = export(args.bitplan, plan, "llamacpp", work / f"raw-{label}.txt")
    t.notes = []
    if "not a GGUF tensor name" in raw:
        t.notes.append("without --llama-names: warned (not a GGUF tensor name)")
    r = subprocess.run([str(quantize), "--tensor-type-file", str(types_file),
                        str(work / "model-f32.gguf"), str(work / "f16.gguf"), "F16"],
                       capture_output=True, text=True)
    f16 = {t.name: t.tensor_type.name for t in gguf.GGUFReader(str(work / "f16.gguf")).tensors}
    applied = sum(f16.get(GGUF[l["name"]] + ".weight") == TYPES[l["wbits"]]
                  for l in plan_layers(plan) if l["wbits"] < 16)
    if "quantized base type" in warnings or "quantized base type" in export(
            args.bitplan, plan, "llamacpp", work / "x.txt", llama=True):
        t.notes.append(f"base type F16: llama-quantize applied {applied} overrides; "
                       "bitplan's note names the base type to use")
    return t


# ---------------------------------------------------------------- GPTQModel

def load_gptqmodel(src):
    """gptqmodel/quantization/config.py with stand-ins for its imports beyond
    configuration: the PCRE binding (Python's re has the same compile/match
    for these patterns), the LoRA adapter types and the logger."""
    import logging
    import re as _re
    module("pcre", **{k: getattr(_re, k) for k in dir(_re) if not k.startswith("__")})
    module("gptqmodel")
    module("gptqmodel.adapter")
    module("gptqmodel.adapter.adapter", Lora=type("Lora", (), {}),
           normalize_adapter=lambda a, *x, **k: a)
    module("gptqmodel.utils")
    log = logging.getLogger("gptqmodel")
    log.info = log.debug = log.warn = log.warning = lambda *a, **k: None
    module("gptqmodel.utils.logger", setup_logger=lambda *a, **k: log)
    module("gptqmodel.quantization")
    path = Path(src) / "gptqmodel" / "quantization" / "config.py"
    spec_mod = types.ModuleType("gptqmodel.quantization.config")
    spec_mod.__package__ = "gptqmodel.quantization"
    spec_mod.__file__ = str(path)
    sys.modules[spec_mod.__name__] = spec_mod
    exec(compile(path.read_text(), str(path), "exec"), spec_mod.__dict__)
    return spec_mod


def run_gptqmodel(args, work, plan, label):
    cfgmod = load_gptqmodel(args.gptqmodel)
    out = work / f"quantize_config-{label}.json"
    warnings = export(args.bitplan, plan, "gptqmodel", out)
    payload = json.loads(out.read_text())
    qc = cfgmod.QuantizeConfig.from_quant_config(payload)
    t = Tally("GPTQModel `QuantizeConfig` / `dynamic_get`", label)
    for layer in plan_layers(plan):
        name = layer["name"]
        if "embed" in name:       # GPTQModel never quantizes embeddings
            t.add(name, layer["wbits"] >= 16,
                  warned(warnings, name, "never quantizes embeddings"))
            continue
        if name == "lm_head" and not qc.lm_head:
            t.add(name, layer["wbits"] >= 16)
            continue
        over = qc.dynamic_get(layer_name=name)
        if layer["wbits"] >= 16:
            t.add(name, over is False)
            continue
        bits = qc.dynamic_get(name, "bits", qc.bits)
        group = qc.dynamic_get(name, "group_size", qc.group_size)
        sym = qc.dynamic_get(name, "sym", qc.sym)
        want_g = layer["group_size"] if layer["granularity"] == "per_group" else -1
        good = over not in (False, None) and int(bits) == layer["wbits"] and \
            group == want_g and bool(sym) == bool(layer["symmetric"])
        was = (layer["granularity"] == "per_tensor" and int(bits) == layer["wbits"] and
               warned(warnings, name, "no per-tensor grid"))
        if good and layer["abits"] < 16:      # GPTQModel quantizes weights only
            good, was = False, warned(warnings, name, "weights only")
        t.add(name, good, was)
    t.notes = [f"format: {qc.format}"]
    return t


# ---------------------------------------------------------------- compressed-tensors

def model_tree(layers, embed=None):
    """A torch module tree with the plan's dotted module names and weight
    shapes (Linear leaves; an Embedding for `embed`), weights not allocated."""
    import torch
    root = torch.nn.Module()
    for l in layers:
        n, cols = l["name"], l.get("in_features") or 32
        rows = l["params"] // cols
        parts, m = n.split("."), root
        for p in parts[:-1]:
            if not hasattr(m, p):
                m.add_module(p, torch.nn.ModuleList() if p == "layers" else torch.nn.Module())
            m = getattr(m, p)
        leaf = torch.nn.Embedding(rows, cols, device="meta") if n == embed else \
            torch.nn.Linear(cols, rows, bias=False, device="meta")
        m.add_module(parts[-1], leaf)
    return root


def load_compressed_tensors(src):
    module("compressed_tensors")
    module("compressed_tensors.utils")
    base = Path(src) / "src" / "compressed_tensors" / "utils"
    mods = {}
    for name in ("internal", "match"):
        m = types.ModuleType(f"compressed_tensors.utils.{name}")
        m.__package__ = "compressed_tensors.utils"
        sys.modules[m.__name__] = m
        exec(compile((base / f"{name}.py").read_text(), str(base / f"{name}.py"), "exec"),
             m.__dict__)
        mods[name] = m
    return mods["match"]


def ct_args_ok(a, kind):
    """compressed-tensors' QuantizationArgs rules (quant_args.py,
    validate_model_after) on one weights / input_activations entry."""
    strat = a.get("strategy")
    if strat not in ("tensor", "channel", "group", "block", "token", "tensor_group",
                     "attn_head"):
        return False
    if ("group_size" in a) != (strat == "group"):
        return False
    if strat == "token" and not a.get("dynamic"):
        return False
    if a.get("dynamic") and strat not in ("token", "tensor", "tensor_group", "group"):
        return False
    return a.get("type") == "int" and isinstance(a.get("num_bits"), int)


def run_llmcompressor(args, work, plan, label):
    match = load_compressed_tensors(args.compressed_tensors)
    out = work / f"recipe-{label}.yaml"
    warnings = export(args.bitplan, plan, "llmcompressor", out)
    qm = yaml.safe_load(out.read_text())["quant_stage"]["quant_modifiers"]["QuantizationModifier"]
    layers = plan_layers(plan)
    tree = model_tree(layers)
    target_to_scheme = {}
    for g in qm["config_groups"].values():
        for tgt in g["targets"]:
            target_to_scheme[tgt] = g
    chosen = {}
    for name, mod in match.match_named_modules(tree, target_to_scheme, qm.get("ignore")):
        hits = match.match_targets(name, mod, target_to_scheme)
        chosen[name] = [target_to_scheme[h] for h in hits]
    t = Tally("compressed-tensors `match_named_modules`", label)
    for l in layers:
        name, got = l["name"], chosen.get(l["name"], [])
        if l["wbits"] >= 16 and l["abits"] >= 16:
            t.add(name, not got)
            continue
        good = len(got) == 1
        g = got[0] if good else {}
        w, a = g.get("weights"), g.get("input_activations")
        if good and l["wbits"] < 16:
            strat = {"per_tensor": "tensor", "per_group": "group"}.get(l["granularity"], "channel")
            good = bool(w) and ct_args_ok(w, "w") and w["num_bits"] == l["wbits"] and \
                w["strategy"] == strat and w["symmetric"] == bool(l["symmetric"]) and \
                (strat != "group" or w["group_size"] == l["group_size"])
        elif good:
            good = w is None
        was = False
        if good and l["abits"] < 16:
            token = l.get("act_granularity") == "per_token"
            good = bool(a) and ct_args_ok(a, "a") and a["num_bits"] == l["abits"] and \
                a["strategy"] == ("token" if token else "tensor") and \
                a["symmetric"] == bool(l.get("act_symmetric"))
            if good and l.get("act_kind") not in (None, "uniform"):
                good, was = False, warned(warnings, name, "no log2 or power-of-two-factor")
        elif good:
            good = a is None
        t.add(name, good, was)
    t.notes = []
    return t


# ---------------------------------------------------------------- AutoRound

def load_autoround(src):
    """compressors/layer_config/resolver.py and schemes.py as they are; from
    utils/common.py and utils/model.py the functions they call; stand-ins for
    the logger, the config-resolution records and the multimodal tables."""
    import logging
    import torch
    root = Path(src) / "auto_round"
    log = logging.getLogger("autoround")
    log.warning_once = log.warning
    module("auto_round")
    module("auto_round.logger", logger=log)
    module("transformers", pytorch_utils=types.SimpleNamespace(Conv1D=type("Conv1D", (), {})))
    module("auto_round.special_model_handler", SPECIAL_MULTIMODAL_BLOCK={})
    module("auto_round.auto_scheme")
    module("auto_round.auto_scheme.gen_auto_scheme", AutoScheme=type("AutoScheme", (), {}))
    utils = module("auto_round.utils")
    ns = utils.__dict__
    ns.update(torch=torch, re=re, json=json, logger=log, copy=__import__("copy"),
              transformers=sys.modules["transformers"])
    load_defs(root / "utils" / "common.py",
              {"SUPPORTED_DTYPES", "to_standard_regex", "parse_layer_config_arg",
               "infer_bits_by_data_type", "compress_layer_names", "contain_any_mm_keys",
               "VISION_MM_KEYS", "AUDIO_MM_KEYS", "MM_MODULE_KEYS", "MM_KEYS",
               "SUPPORTED_LAYER_TYPES", "INNER_SUPPORTED_LAYER_TYPES"}, ns)
    ns.setdefault("SUPPORTED_LAYER_TYPES", (torch.nn.Linear,))
    ns.setdefault("INNER_SUPPORTED_LAYER_TYPES", ())
    ns["resolve_model_type"] = lambda model: None
    load_defs(root / "utils" / "model.py",
              {"get_lm_head_name", "get_block_names", "get_layer_names_in_block",
               "check_to_quantized", "get_module", "is_pure_text_model"}, ns)
    module("auto_round.utils.model", **{k: ns[k] for k in ("get_module", "get_lm_head_name")})

    class Resolved:                        # config_resolution's records, as plain data
        def __init__(self, value, preset_name=None):
            self.value, self.preset_name = value, preset_name

    module("auto_round.compressors")
    module("auto_round.compressors.config_resolution", ResolvedScheme=Resolved,
           ResolvedQuantizationConfig=dict)
    module("auto_round.compressors.config_resolution.contracts", LayerConfig=dict,
           freeze_mapping=lambda d: dict(d))
    mods = {}
    for name, path in (("auto_round.schemes", root / "schemes.py"),
                       ("auto_round.compressors.layer_config.resolver",
                        root / "compressors" / "layer_config" / "resolver.py")):
        m = types.ModuleType(name)
        m.__package__ = name.rsplit(".", 1)[0]
        sys.modules[name] = m
        if name.endswith("resolver"):
            module("auto_round.compressors.layer_config")
        exec(compile(path.read_text(), str(path), "exec"), m.__dict__)
        mods[name] = m
    return ns, mods["auto_round.schemes"], mods["auto_round.compressors.layer_config.resolver"], \
        Resolved


def run_autoround(args, work, plan, label):
    import torch
    ns, schemes, resolver, Resolved = load_autoround(args.autoround)
    out = work / f"autoround-{label}.json"
    warnings = export(args.bitplan, plan, "autoround", out)
    layer_config = ns["parse_layer_config_arg"](out.read_text())   # as --layer_config TEXT
    layers = plan_layers(plan)
    embed = next((l["name"] for l in layers if "embed" in l["name"]), None)
    tree = model_tree(layers, embed=embed)
    scheme = Resolved(schemes.preset_name_to_scheme("W4A16"))
    resolved = resolver.resolve_layer_config(
        model=tree, scheme=scheme, layer_config=layer_config, scale_dtype=torch.float16,
        supported_types=(torch.nn.Linear,), inner_supported_types=())
    t = Tally("AutoRound `parse_layer_config_arg` / `resolve_layer_config`", label)
    for l in layers:
        name, c = l["name"], resolved.get(l["name"])
        if name == embed:
            t.add(name, c is None and l["wbits"] >= 16,
                  warned(warnings, name, "never quantizes embeddings"))
            continue
        if c is None:
            t.add(name, False)
            continue
        if l["wbits"] >= 16:
            good = int(c["bits"]) >= 16
        else:
            g = {"per_tensor": 0, "per_group": l["group_size"]}.get(l["granularity"], -1)
            good = c["bits"] == l["wbits"] and c["group_size"] == g and \
                bool(c["sym"]) == bool(l["symmetric"]) and c["data_type"] == "int"
        was = False
        if l["abits"] < 16:
            token = l.get("act_granularity") == "per_token"
            good &= c.get("act_bits") == l["abits"] and c.get("act_data_type") == "int" and \
                c.get("act_group_size") == (-1 if token else 0) and \
                bool(c.get("act_sym")) == bool(l.get("act_symmetric")) and \
                bool(c.get("act_dynamic")) == token
            if good and l.get("act_kind") not in (None, "uniform"):
                good, was = False, warned(warnings, name, "no log2 or power-of-two-factor")
        else:
            good &= (c.get("act_bits") or 16) >= 16
        t.add(name, good, was)
    t.notes = []
    return t


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bitplan", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--plans", nargs=2, required=True)
    ap.add_argument("--llama-cpp")
    ap.add_argument("--gptqmodel")
    ap.add_argument("--compressed-tensors")
    ap.add_argument("--autoround")
    args = ap.parse_args()
    work = Path(args.work)
    rows, silent = [], 0
    runs = [("llama_cpp", run_llamacpp), ("gptqmodel", run_gptqmodel),
            ("compressed_tensors", run_llmcompressor), ("autoround", run_autoround)]
    for attr, fn in runs:
        if not getattr(args, attr):
            print(f"skipped {attr}: no source tree given", file=sys.stderr)
            continue
        for plan, label in zip(args.plans, ("A", "B")):
            t = fn(args, work, Path(plan), label)
            rows.append(t.row() + " " + ("; ".join(t.notes) or "") + " |")
            silent += len(t.silent)
    print("| consumer (its own code) | plan | tensors | as planned | other, warned by bitplan "
          "| silent mismatches | notes |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(r)
    sys.exit(1 if silent else 0)


if __name__ == "__main__":
    main()
