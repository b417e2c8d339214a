"""A tiny Llama in both forms a user has: PyTorch-named safetensors (what
bitplan plans, with calibration rows) and the F32 GGUF llama.cpp's converter would write (what
llama-quantize reads).  Shapes: hidden 256, MLP 384 (so ffn_down rows are not a
multiple of 256 and llama.cpp's fallback shows), 2 blocks, vocab 512, untied
head.  Written with the gguf package from the llama.cpp source tree.

    tiny_llama.py OUT_DIR GGUF_PY_DIR
"""
import sys
from pathlib import Path

import numpy as np

HIDDEN, FFN, BLOCKS, VOCAB, HEADS = 256, 384, 2, 512, 4

# PyTorch name -> (GGUF name, shape [out, in])
def tensors():
    t = {"model.embed_tokens": ("token_embd", (VOCAB, HIDDEN))}
    for b in range(BLOCKS):
        p = f"model.layers.{b}."
        for hf, gg, shape in (("self_attn.q_proj", "attn_q", (HIDDEN, HIDDEN)),
                              ("self_attn.k_proj", "attn_k", (HIDDEN, HIDDEN)),
                              ("self_attn.v_proj", "attn_v", (HIDDEN, HIDDEN)),
                              ("self_attn.o_proj", "attn_output", (HIDDEN, HIDDEN)),
                              ("mlp.gate_proj", "ffn_gate", (FFN, HIDDEN)),
                              ("mlp.up_proj", "ffn_up", (FFN, HIDDEN)),
                              ("mlp.down_proj", "ffn_down", (HIDDEN, FFN))):
            t[p + hf] = (f"blk.{b}.{gg}", shape)
    t["lm_head"] = ("output", (VOCAB, HIDDEN))
    return t


def main():
    out, gguf_py = Path(sys.argv[1]), sys.argv[2]
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
    import safetensors_io

    rng = np.random.default_rng(7)
    weights = {hf + ".weight": (rng.standard_normal(shape) * 0.05).astype(np.float32)
               for hf, (_, shape) in tensors().items()}
    out.mkdir(parents=True, exist_ok=True)
    safetensors_io.save_file(str(out / "model.safetensors"), weights)
    # calibration rows (each layer's input) for the plan with quantized activations
    calib = {hf + ".input": rng.standard_normal((64, shape[1])).astype(np.float32)
             for hf, (_, shape) in tensors().items() if hf != "model.embed_tokens"}
    safetensors_io.save_file(str(out / "calib.safetensors"), calib)

    if not Path(gguf_py).is_dir():
        return                                      # no llama.cpp tree: no GGUF
    sys.path.insert(0, gguf_py)
    import gguf                                     # llama.cpp's own writer
    w = gguf.GGUFWriter(str(out / "model-f32.gguf"), "llama")
    w.add_context_length(256)
    w.add_embedding_length(HIDDEN)
    w.add_block_count(BLOCKS)
    w.add_feed_forward_length(FFN)
    w.add_head_count(HEADS)
    w.add_head_count_kv(HEADS)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(HIDDEN // HEADS)
    w.add_vocab_size(VOCAB)
    w.add_file_type(0)                              # all F32
    w.add_tokenizer_model("llama")
    w.add_token_list([f"t{i}".encode() for i in range(VOCAB)])
    w.add_token_scores([0.0] * VOCAB)
    w.add_token_types([1] * VOCAB)
    for hf, (gg, _) in tensors().items():
        w.add_tensor(gg + ".weight", weights[hf + ".weight"])
        if gg.endswith("attn_q"):
            b = gg.split(".")[1]
            w.add_tensor(f"blk.{b}.attn_norm.weight", np.ones(HIDDEN, np.float32))
            w.add_tensor(f"blk.{b}.ffn_norm.weight", np.ones(HIDDEN, np.float32))
    w.add_tensor("output_norm.weight", np.ones(HIDDEN, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main()
