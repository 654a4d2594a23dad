#!/usr/bin/env python3
"""A plain PyTorch transcription of the DeepSeek-V4 forward (docs/dsv4-architecture.md, section 3),
written independently of the C++ engine, used to produce golden logits for the test models.

Everything runs in float32 on one sequence with dense masks; the quantization the model was trained
with is simulated: activations to fp8 (blocks of 128) before fp8/fp4 linears, the non-rope part of
every KV vector to fp8 (blocks of 64), indexer queries and keys to fp4 (blocks of 32) after a
Hadamard rotation. Compressed entries are computed with a direct softmax over their positions.

usage: dsv4_torch_reference.py MODEL_DIR --tokens 1,2,3 --output logits.bin [--mtp-output mtp.bin]
writes float32 little-endian logits [n, vocab] (and MTP logits [n - 1, vocab]).
"""
import argparse
import json
import math
import os

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

FP4_VALUES = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0,
                           -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0])


# ---------------------------------------------------------------- checkpoint

def load_checkpoint(folder):
    tensors = {}
    for name in sorted(os.listdir(folder)):
        if name.endswith(".safetensors"):
            for key, value in load_file(os.path.join(folder, name)).items():
                key = key[len("model."):] if key.startswith("model.") else key
                tensors[key] = value
    return tensors


def e8m0_to_float(scale):
    return torch.pow(2.0, scale.view(torch.uint8).to(torch.float32) - 127.0)


def dequantize(tensors, name):
    """The fp32 matrix [out, in] of linear `name`, whatever its stored format."""
    w = tensors[name + ".weight"]
    if w.dtype == torch.bfloat16 or w.dtype == torch.float32:
        return w.float(), False
    scale = e8m0_to_float(tensors[name + ".scale"])
    if w.dtype == torch.float8_e4m3fn:
        out, inp = w.shape
        s = scale.repeat_interleave(128, 0)[:out].repeat_interleave(128, 1)[:, :inp]
        return w.float() * s, True
    if w.dtype == torch.int8:  # two e2m1 codes per byte, low nibble first
        b = w.view(torch.uint8).long()
        values = torch.stack([FP4_VALUES[b & 0xF], FP4_VALUES[b >> 4]], dim=-1).flatten(1)
        return values * scale.repeat_interleave(32, 1), True
    raise ValueError(f"{name}: unsupported dtype {w.dtype}")


# ---------------------------------------------------------------- numerics

def pow2_ceil(x):
    """2^ceil(log2 x) from the float's bits, as the reference kernels compute it."""
    bits = x.contiguous().view(torch.int32)
    exponent = ((bits >> 23) & 0xFF) - 127 + ((bits & 0x7FFFFF) != 0).to(torch.int32)
    return torch.pow(2.0, exponent.to(torch.float32))


def fp8_simulate(x, block):
    shape = x.shape
    blocks = x.reshape(-1, block)
    amax = blocks.abs().amax(-1, keepdim=True).clamp_min(1e-4)
    scale = pow2_ceil(amax * torch.tensor(1.0 / 448.0, dtype=torch.float32))
    q = (blocks / scale).clamp(-448.0, 448.0).to(torch.float8_e4m3fn).float()
    return (q * scale).reshape(shape)


def round_fp4(x):
    """Round to the e2m1 grid, ties to even."""
    mag = x.abs().clamp(max=6.0)
    step = torch.where(mag < 2.0, 0.5, torch.where(mag < 4.0, 1.0, 2.0))
    rounded = torch.round(mag / step) * step  # torch.round rounds half to even
    return torch.copysign(rounded.clamp(max=6.0), x)


def fp4_simulate(x, block=32):
    shape = x.shape
    blocks = x.reshape(-1, block)
    amax = blocks.abs().amax(-1, keepdim=True).clamp_min(6 * 2.0 ** -126)
    scale = pow2_ceil(amax * torch.tensor(1.0 / 6.0, dtype=torch.float32))
    return (round_fp4((blocks / scale).clamp(-6.0, 6.0)) * scale).reshape(shape)


def hadamard(x):
    n = x.shape[-1]
    h = torch.ones(1, 1)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return (x @ h) * n ** -0.5


def rms_norm(x, weight, eps):
    y = x * torch.rsqrt(x.square().mean(-1, keepdim=True) + eps)
    return y * weight if weight is not None else y


def rope_frequencies(dim, theta, yarn):
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    if yarn is not None:
        factor, original, beta_fast, beta_slow = yarn

        def correction(rotations):
            return dim * math.log(original / (rotations * 2 * math.pi)) / (2 * math.log(theta))

        low = max(math.floor(correction(beta_fast)), 0)
        high = min(math.ceil(correction(beta_slow)), dim - 1)
        if low == high:
            high += 0.001
        ramp = ((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
        smooth = 1 - ramp
        freqs = freqs / factor * (1 - smooth) + freqs * smooth
    return freqs


def rotate(x, positions, freqs, inverse=False):
    """Rotate interleaved pairs of x [..., n, (heads,) rd] by positions [n]."""
    angles = positions.float()[:, None] * freqs[None, :]
    cos, sin = torch.cos(angles), torch.sin(angles)
    if inverse:
        sin = -sin
    while cos.dim() < x.dim():  # broadcast over the head dims
        cos, sin = cos.unsqueeze(-2), sin.unsqueeze(-2)
    re, im = x[..., 0::2], x[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = re * cos - im * sin
    out[..., 1::2] = re * sin + im * cos
    return out


# ---------------------------------------------------------------- model

class Reference:
    def __init__(self, folder):
        with open(os.path.join(folder, "config.json")) as f:
            self.c = json.load(f)
        self.t = load_checkpoint(folder)
        c = self.c
        self.eps = c.get("rms_norm_eps", 1e-6)
        self.hc = c.get("hc_mult", 4)
        self.rd = c.get("qk_rope_head_dim", 64)
        scaling = c.get("rope_scaling")
        yarn = (scaling["factor"], scaling["original_max_position_embeddings"],
                scaling["beta_fast"], scaling["beta_slow"]) if scaling else None
        self.window_freqs = rope_frequencies(self.rd, c.get("rope_theta", 10000.0), None)
        self.compress_freqs = rope_frequencies(self.rd, c.get("compress_rope_theta", 40000.0), yarn)

    def f32(self, name):
        return self.t[name].float()

    def linear(self, x, name, quantize=True):
        w, quantized = dequantize(self.t, name)
        if quantized and quantize:
            x = fp8_simulate(x, 128)
        return x @ w.T

    # -- hyper-connections
    def hc_mix(self, streams, prefix, which):
        fn = self.f32(f"{prefix}hc_{which}_fn")
        flat = streams.flatten(1)
        return (flat @ fn.T) * torch.rsqrt(flat.square().mean(-1, keepdim=True) + self.eps)

    def hc_pre(self, streams, prefix, which):
        hc = self.hc
        mixes = self.hc_mix(streams, prefix, which)
        scale = self.f32(f"{prefix}hc_{which}_scale")
        base = self.f32(f"{prefix}hc_{which}_base")
        eps = self.c.get("hc_eps", 1e-6)
        pre = torch.sigmoid(mixes[:, :hc] * scale[0] + base[:hc]) + eps
        post = 2 * torch.sigmoid(mixes[:, hc:2 * hc] * scale[1] + base[hc:2 * hc])
        comb = (mixes[:, 2 * hc:] * scale[2] + base[2 * hc:]).view(-1, hc, hc)
        comb = comb.softmax(-1) + eps
        comb = comb / (comb.sum(-2, keepdim=True) + eps)
        for _ in range(self.c.get("hc_sinkhorn_iters", 20) - 1):
            comb = comb / (comb.sum(-1, keepdim=True) + eps)
            comb = comb / (comb.sum(-2, keepdim=True) + eps)
        y = (pre.unsqueeze(-1) * streams).sum(1)
        return y, post, comb

    @staticmethod
    def hc_post(out, streams, post, comb):
        # new stream k = post_k * out + sum_j comb[j, k] * stream_j
        return post.unsqueeze(-1) * out.unsqueeze(1) + torch.einsum("njk,njd->nkd", comb, streams)

    def hc_head(self, streams, prefix):
        mixes = self.hc_mix(streams, prefix, "head")
        pre = torch.sigmoid(mixes * self.f32(f"{prefix}hc_head_scale")[0] +
                            self.f32(f"{prefix}hc_head_base")) + self.c.get("hc_eps", 1e-6)
        return (pre.unsqueeze(-1) * streams).sum(1)

    # -- compressor: entry i pools positions [i r, (i + 1) r) (and block i - 1 for ratio 4)
    def compress(self, x, prefix, ratio, head_dim, freqs, indexer):
        n = x.shape[0]
        kv = self.linear(x, prefix + "wkv")
        score = self.linear(x, prefix + "wgate") + self.f32(prefix + "ape").repeat(n // ratio + 1, 1)[:n]
        entries = []
        for i in range(n // ratio):
            block = slice(i * ratio, (i + 1) * ratio)
            if ratio == 4:
                values = kv[block, head_dim:]
                logits = score[block, head_dim:]
                if i > 0:
                    previous = slice((i - 1) * ratio, i * ratio)
                    values = torch.cat([kv[previous, :head_dim], values])
                    logits = torch.cat([score[previous, :head_dim], logits])
            else:
                values, logits = kv[block], score[block]
            entries.append((logits.softmax(0) * values).sum(0))
        if not entries:
            return torch.zeros(0, head_dim)
        e = rms_norm(torch.stack(entries), self.f32(prefix + "norm.weight"), self.eps)
        positions = torch.arange(len(entries)) * ratio
        e = torch.cat([e[:, :-self.rd], rotate(e[:, -self.rd:], positions, freqs)], -1)
        if indexer:
            return fp4_simulate(hadamard(e))
        return torch.cat([fp8_simulate(e[:, :-self.rd], 64), e[:, -self.rd:]], -1)

    def attention(self, x, layer, prefix):
        c = self.c
        n = x.shape[0]
        heads, d, rd = c["num_attention_heads"], c["head_dim"], self.rd
        ratio = c["compress_ratios"][layer]
        freqs = self.window_freqs if ratio == 0 else self.compress_freqs
        positions = torch.arange(n)
        a = prefix + "attn."
        qr = rms_norm(self.linear(x, a + "wq_a"), self.f32(a + "q_norm.weight"), self.eps)
        q = rms_norm(self.linear(qr, a + "wq_b").view(n, heads, d), None, self.eps)
        q = torch.cat([q[..., :-rd], rotate(q[..., -rd:], positions, freqs)], -1)
        kv = rms_norm(self.linear(x, a + "wkv"), self.f32(a + "kv_norm.weight"), self.eps)
        kv = torch.cat([fp8_simulate(kv[:, :-rd], 64), rotate(kv[:, -rd:], positions, freqs)], -1)

        # Window mask: key s visible to query t when t - W < s <= t.
        window = c.get("sliding_window", 128)
        t_idx, s_idx = positions[:, None], positions[None, :]
        keys, visible = kv, (s_idx <= t_idx) & (s_idx > t_idx - window)
        if ratio > 0:
            compressed = self.compress(x, a + "compressor.", ratio, d, freqs, indexer=False)
            m = compressed.shape[0]
            entry_visible = (torch.arange(m)[None, :] + 1) * ratio <= t_idx + 1
            if ratio == 4 and m > 0:
                ix = a + "indexer."
                ih, idim = c["index_n_heads"], c["index_head_dim"]
                iq = self.linear(qr, ix + "wq_b").view(n, ih, idim)
                iq = torch.cat([iq[..., :-rd], rotate(iq[..., -rd:], positions, freqs)], -1)
                iq = fp4_simulate(hadamard(iq))
                ik = self.compress(x, ix + "compressor.", ratio, idim, freqs, indexer=True)
                w = self.linear(x, ix + "weights_proj") * (idim ** -0.5 * ih ** -0.5)
                scores = (torch.einsum("nhd,md->nhm", iq, ik).relu() * w[:, :, None]).sum(1)
                scores = scores.masked_fill(~entry_visible, float("-inf"))
                k = min(c["index_topk"], m)
                top = scores.topk(k, -1).indices
                chosen = torch.zeros(n, m, dtype=torch.bool)
                chosen.scatter_(1, top, True)
                entry_visible = entry_visible & chosen
            keys = torch.cat([kv, compressed])
            visible = torch.cat([visible, entry_visible], 1)
        logits = torch.einsum("nhd,kd->nhk", q, keys) * d ** -0.5
        logits = logits.masked_fill(~visible[:, None, :], float("-inf"))
        sink = self.f32(a + "attn_sink")
        top = logits.amax(-1, keepdim=True)
        weights = torch.exp(logits - top)
        denominator = weights.sum(-1, keepdim=True) + torch.exp(sink[None, :, None] - top)
        o = torch.einsum("nhk,kd->nhd", weights / denominator, keys)
        o = torch.cat([o[..., :-rd], rotate(o[..., -rd:], positions, freqs, inverse=True)], -1)
        groups, lora = c["o_groups"], c["o_lora_rank"]
        wo_a, _ = dequantize(self.t, a + "wo_a")  # used as a bf16 matrix: no activation quantization
        o = torch.einsum("ngi,gri->ngr", o.reshape(n, groups, -1), wo_a.view(groups, lora, -1))
        return self.linear(o.reshape(n, groups * lora), a + "wo_b")

    def expert(self, x, prefix, weight=None):
        limit = self.c.get("swiglu_limit", 0.0)
        gate, up = self.linear(x, prefix + "w1"), self.linear(x, prefix + "w3")
        if limit > 0:
            gate, up = gate.clamp(max=limit), up.clamp(-limit, limit)
        h = F.silu(gate) * up
        if weight is not None:
            h = weight[:, None] * h
        return self.linear(h, prefix + "w2")

    def moe(self, x, layer, prefix, tokens):
        c = self.c
        f = prefix + "ffn."
        scores = F.softplus(self.linear(x, f + "gate")).sqrt()
        if layer < c.get("num_hash_layers", 0):
            chosen = self.t[f + "gate.tid2eid"].long()[tokens]
        else:
            chosen = (scores + self.f32(f + "gate.bias")).topk(c["num_experts_per_tok"], -1).indices
        weights = scores.gather(1, chosen)
        weights = weights / weights.sum(-1, keepdim=True) * c["routed_scaling_factor"]
        y = torch.zeros_like(x)
        for e in range(c["n_routed_experts"]):
            rows, slot = torch.where(chosen == e)
            if rows.numel():
                y[rows] += self.expert(x[rows], f"{f}experts.{e}.", weights[rows, slot])
        return y + self.expert(x, f + "shared_experts.")

    def block(self, streams, layer, prefix, tokens):
        y, post, comb = self.hc_pre(streams, prefix, "attn")
        y = rms_norm(y, self.f32(prefix + "attn_norm.weight"), self.eps)
        streams = self.hc_post(self.attention(y, layer, prefix), streams, post, comb)
        y, post, comb = self.hc_pre(streams, prefix, "ffn")
        y = rms_norm(y, self.f32(prefix + "ffn_norm.weight"), self.eps)
        return self.hc_post(self.moe(y, layer, prefix, tokens), streams, post, comb)

    def head(self, streams, prefix, norm_name):
        y = rms_norm(self.hc_head(streams, prefix), self.f32(norm_name), self.eps)
        return y @ self.f32("head.weight").T

    def forward(self, tokens):
        embed = self.f32("embed.weight")
        streams = embed[tokens].unsqueeze(1).repeat(1, self.hc, 1)
        for layer in range(self.c["num_hidden_layers"]):
            streams = self.block(streams, layer, f"layers.{layer}.", tokens)
        return self.head(streams, "", "norm.weight"), streams

    def mtp(self, streams, next_tokens):
        p = "mtp.0."
        e = rms_norm(self.f32("embed.weight")[next_tokens], self.f32(p + "enorm.weight"), self.eps)
        h = rms_norm(streams, self.f32(p + "hnorm.weight"), self.eps)
        x = self.linear(e, p + "e_proj").unsqueeze(1) + self.linear(h, p + "h_proj")
        x = self.block(x, self.c["num_hidden_layers"], p, next_tokens)
        return self.head(x, p, p + "norm.weight")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--tokens", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--mtp-output")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    tokens = torch.tensor([int(t) for t in args.tokens.split(",")])
    model = Reference(args.model)
    logits, streams = model.forward(tokens)
    logits.float().numpy().astype("<f4").tofile(args.output)
    if args.mtp_output:
        model.mtp(streams[:-1], tokens[1:]).float().numpy().astype("<f4").tofile(args.mtp_output)


if __name__ == "__main__":
    main()
