"""A Llama decoder at 7B shapes with random weights, for the LLM-scale bench.

RMSNorm, rotary attention (32 heads of 128), SwiGLU MLP (4,096 -> 11,008 ->
4,096), BLOCKS blocks and the 32,000-wide head, named as Hugging Face's
LlamaForCausalLM (model.layers.N.self_attn.q_proj, ..., lm_head) so that
--llama-names maps them to GGUF names.  build() is tools/capture.py's
MODULE:FUNCTION: the model and a loader of SEQS random-token sequences of
SEQ tokens (Zipf-distributed ids).  Shapes and sizes from the environment:
LLAMA_HIDDEN, LLAMA_INTER, LLAMA_HEADS, LLAMA_VOCAB, LLAMA_BLOCKS, LLAMA_SEQ,
LLAMA_SEQS (defaults: 4096, 11008, 32, 32000, 2, 2048, 128).
"""
import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F


def env(name, default):
    return int(os.environ.get(name, default))


class RMSNorm(nn.Module):
    def __init__(self, d, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rotary(x, theta=10000.0):
    """Rotate pairs (i, i + hd/2) of each head by position-dependent angles."""
    s, hd = x.shape[-2], x.shape[-1]
    inv = 1.0 / theta ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd)
    ang = torch.arange(s, dtype=torch.float32)[:, None] * inv[None, :]
    cos, sin = torch.cat([ang.cos()] * 2, -1), torch.cat([ang.sin()] * 2, -1)
    x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
    return x * cos + torch.cat([-x2, x1], -1) * sin


class Attention(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.h, self.hd = heads, d // heads
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, d, bias=False)
        self.v_proj = nn.Linear(d, d, bias=False)
        self.o_proj = nn.Linear(d, d, bias=False)

    def forward(self, x):
        b, s, d = x.shape
        q, k, v = (p(x).view(b, s, self.h, self.hd).transpose(1, 2)
                   for p in (self.q_proj, self.k_proj, self.v_proj))
        q, k = rotary(q), rotary(k)
        att = (q @ k.transpose(-1, -2)) / math.sqrt(self.hd)
        mask = torch.ones(s, s, dtype=torch.bool).triu(1)
        att = att.masked_fill(mask, float("-inf")).softmax(-1)
        return self.o_proj((att @ v).transpose(1, 2).reshape(b, s, d))


class MLP(nn.Module):
    def __init__(self, d, inter):
        super().__init__()
        self.gate_proj = nn.Linear(d, inter, bias=False)
        self.up_proj = nn.Linear(d, inter, bias=False)
        self.down_proj = nn.Linear(inter, d, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, d, inter, heads):
        super().__init__()
        self.input_layernorm = RMSNorm(d)
        self.self_attn = Attention(d, heads)
        self.post_attention_layernorm = RMSNorm(d)
        self.mlp = MLP(d, inter)

    def forward(self, x):
        x = x + self.self_attn(self.input_layernorm(x))
        return x + self.mlp(self.post_attention_layernorm(x))


class Decoder(nn.Module):
    def __init__(self, d, inter, heads, blocks):
        super().__init__()
        self.embed_tokens = nn.Embedding(VOCAB, d)
        self.layers = nn.ModuleList(Block(d, inter, heads) for _ in range(blocks))
        self.norm = RMSNorm(d)

    def forward(self, ids):
        x = self.embed_tokens(ids)
        for blk in self.layers:
            x = blk(x)
        return self.norm(x)


class LlamaLM(nn.Module):
    def __init__(self, d, inter, heads, blocks):
        super().__init__()
        self.lm_head = nn.Linear(d, VOCAB, bias=False)   # first in the files: measured first
        self.model = Decoder(d, inter, heads, blocks)

    def forward(self, ids):
        return self.lm_head(self.model(ids))


VOCAB = env("LLAMA_VOCAB", 32000)


class Tokens:
    """SEQS sequences of SEQ Zipf-distributed token ids, one per batch."""

    def __init__(self, seqs, seq, seed=0):
        self.seqs, self.seq, self.seed = seqs, seq, seed

    def __len__(self):
        return self.seqs

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed)
        p = 1.0 / torch.arange(1, VOCAB + 1, dtype=torch.float64)
        for _ in range(self.seqs):
            yield torch.multinomial(p, self.seq, replacement=True, generator=g)[None, :]


def build():
    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count() or 1)
    with torch.no_grad():
        model = LlamaLM(env("LLAMA_HIDDEN", 4096), env("LLAMA_INTER", 11008),
                        env("LLAMA_HEADS", 32), env("LLAMA_BLOCKS", 2))
    return model, Tokens(env("LLAMA_SEQS", 128), env("LLAMA_SEQ", 2048))
