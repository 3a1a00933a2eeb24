"""The GLM-4 text decoder of GLM-4.1V, with a preallocated KV cache.

Each layer is a "sandwich": the attention output and the MLP output are each normalised again
before their residual add (post_self_attn_layernorm, post_mlp_layernorm). Attention is GQA with
q/k/v biases and partial interleaved M-RoPE (rope.py); a single decoded token folds each group's
query heads into the rows of one query against its shared key/value head (no expanded K/V). The
MLP is SwiGLU with gate and up fused in one weight (gate_up_proj: rows [0:I] gate, [I:2I] up), as
the checkpoint stores it.
"""

from __future__ import annotations

import copy
import os

import torch
import torch.nn.functional as F
from torch import nn

from glmv_cli.model import work
from glmv_cli.model.config import TextConfig
from glmv_cli.model.layers import Embedding, RMSNorm, add_norm, kernels_for, needs_grad
from glmv_cli.model.rope import apply_text_rope, inverse_frequencies, text_rope


class KVCache(nn.Module):
    """Keys and values of one layer, (B, KV, max_len, D), allocated once for the whole request."""

    def __init__(self, batch: int, kv_heads: int, max_len: int, head_dim: int, dtype, device):
        super().__init__()
        shape = (batch, kv_heads, max_len, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)

    def update(self, start: int | torch.Tensor, k: torch.Tensor,
               v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k/v (B, KV, S, D) at [start, start+S) and return all keys/values up to there.

        A tensor `start` (the static decode step) writes with index_copy_ and returns the whole
        cache, so every step has the same shapes (the caller masks the unwritten tail)."""
        if torch.is_tensor(start):
            at = start + torch.arange(k.shape[2], device=start.device)  # (S,)
            self.k.index_copy_(2, at, k)
            self.v.index_copy_(2, at, v)
            return self.k, self.v
        end = start + k.shape[2]
        self.k[:, :, start:end] = k
        self.v[:, :, start:end] = v
        return self.k[:, :, :end], self.v[:, :, :end]


class TextAttention(nn.Module):
    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.hidden_size, cfg.num_heads * cfg.head_dim, bias=True)
        self.k_proj = nn.Linear(cfg.hidden_size, cfg.num_kv_heads * cfg.head_dim, bias=True)
        self.v_proj = nn.Linear(cfg.hidden_size, cfg.num_kv_heads * cfg.head_dim, bias=True)
        self.o_proj = nn.Linear(cfg.num_heads * cfg.head_dim, cfg.hidden_size, bias=False)
        self.qkv_proj: nn.Module | None = None  # set by fuse_qkv() when loading

    def fuse_qkv(self, empty: bool = False) -> None:
        """One projection for q, k and v (one matmul instead of three per token). The fused weight
        is the three concatenated; q/k/v_proj then hold views of it, so the checkpoint's key names
        still work and no memory is doubled. Works for nn.Linear and Int8Linear alike. `empty`:
        before loading, the fused tensors are allocated, not concatenated, so the weights are read
        straight into their views (no copy of GLM-4.1V-9B's 1.7 GB of q/k/v weights after)."""
        parts = (self.q_proj, self.k_proj, self.v_proj)
        fused = copy.copy(self.q_proj)  # same class and settings; every tensor replaced below
        fused._parameters, fused._buffers = dict(fused._parameters), dict(fused._buffers)
        for name, tensor in list(self.q_proj.named_parameters(recurse=False)) + list(
                self.q_proj.named_buffers(recurse=False)):
            sizes = [getattr(p, name).shape[0] for p in parts]
            whole = (tensor.new_empty((sum(sizes), *tensor.shape[1:])) if empty
                     else torch.cat([getattr(p, name) for p in parts]))
            is_param = isinstance(tensor, nn.Parameter)
            setattr(fused, name, nn.Parameter(whole, requires_grad=False) if is_param else whole)
            for p, view in zip(parts, whole.split(sizes), strict=True):
                setattr(p, name, nn.Parameter(view, requires_grad=False) if is_param else view)
        fused.out_features = sum(p.out_features for p in parts)
        self.qkv_proj = fused
        self.register_state_dict_post_hook(_drop_fused_keys)  # the state dict keeps the checkpoint's keys

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: KVCache | None,
                start: int | torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        B, S, _ = x.shape
        D, H, KV = self.head_dim, self.num_heads, self.num_kv_heads
        if self.qkv_proj is not None:
            qkv = self.qkv_proj(x).view(B, S, H + 2 * KV, D)
        else:
            qkv = torch.cat([self.q_proj(x), self.k_proj(x), self.v_proj(x)], dim=-1).view(B, S, H + 2 * KV, D)
        kernels = kernels_for(qkv) and not needs_grad(qkv)
        if kernels and cache is not None and torch.is_tensor(start):  # the static decode step
            from glmv_cli.kernels.rope import rope_into_cache

            q = rope_into_cache(qkv, cos, sin, cache.k, cache.v, start, H, KV)  # k, v written: one kernel
            k, v = cache.k, cache.v  # the whole cache, as cache.update returns it for a tensor start
        else:
            if kernels:
                from glmv_cli.kernels.rope import rope_heads

                qk = rope_heads(qkv[:, :, :H + KV], cos, sin)  # (B, H+KV, S, D): one kernel
            else:
                qk = apply_text_rope(qkv[:, :, :H + KV].transpose(1, 2), cos, sin)  # (B, H+KV, S, D)
            q, k = qk.split([H, KV], dim=1)  # (B, H, S, D), (B, KV, S, D)
            v = qkv[:, :, H + KV:].transpose(1, 2)  # (B, KV, S, D)
            if isinstance(cache, list):  # a batched decode step: each row its own cache and position
                rows = [self._one_token(q[b:b + 1], *c.update(at, k[b:b + 1], v[b:b + 1]),
                                        mask[b] if mask is not None else None, False)
                        for b, (c, at) in enumerate(zip(cache, start, strict=True))]
                return self.o_proj(torch.cat(rows))  # (the projection once, for every row)
            if cache is not None:
                k, v = cache.update(start, k, v)  # (B, KV, start+S, D)
        if S == 1:
            return self.o_proj(self._one_token(q, k, v, mask, kernels))
        causal = mask is None and k.shape[2] == S  # (a tensor `start` always comes with a mask)
        if mask is None and not causal:  # a multi-token step after cached tokens
            mask = causal_mask(S, k.shape[2], x.device)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal,
                                           enable_gqa=self.num_kv_heads != self.num_heads)  # (B, H, S, D)
        return self.o_proj(o.transpose(1, 2).reshape(B, S, -1))


    def _one_token(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                   kernels: bool) -> torch.Tensor:
        """Attention of one token's queries q (B, H, 1, D) over k, v (B, KV, L, D) -> (B, 1, H*D).
        With grouped heads, the query heads of a group become rows of one query (no expanded K/V)."""
        B, H, _, D = q.shape
        KV = k.shape[1]
        if H == KV:
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, 1, D)
            return o.transpose(1, 2).reshape(B, 1, H * D)
        rows = q.reshape(B, KV, H // KV, D)
        if kernels and mask is not None and split_attention(rows):
            from glmv_cli.kernels.decode_attention import decode_attention

            o = decode_attention(rows, k, v, mask)  # the cache in pieces, one program each
        else:
            o = F.scaled_dot_product_attention(rows, k, v, attn_mask=mask)  # (B, KV, H/KV, D)
        return o.reshape(B, 1, H * D)


def split_attention(rows: torch.Tensor) -> bool:
    """The split-cache decode attention kernel instead of torch's, with GLMV_DECODE_ATTENTION=split
    (opt-in until a GPU run shows it faster: benchmarks/decode_profile.py times both)."""
    if os.environ.get("GLMV_DECODE_ATTENTION") != "split":
        return False
    from glmv_cli.kernels.decode_attention import supported

    return supported(rows)


def _drop_fused_keys(module: nn.Module, state_dict: dict, prefix: str, local_metadata) -> None:
    for key in [k for k in state_dict if k.startswith(prefix + "qkv_proj.")]:
        del state_dict[key]


def causal_mask(queries: int, keys: int, device) -> torch.Tensor:
    """(queries, keys) bool: the last `queries` positions of a `keys`-long sequence, causally."""
    q = torch.arange(keys - queries, keys, device=device)[:, None]
    return torch.arange(keys, device=device)[None, :] <= q


def padded_causal_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, S) 1/0 padding mask -> (B, 1, S, S) bool causal mask over real tokens. A padded query
    attends to itself only, so no row is empty (an empty row would give NaN)."""
    S = attention_mask.shape[1]
    keys = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, S)
    eye = torch.eye(S, dtype=torch.bool, device=attention_mask.device)
    return (causal_mask(S, S, attention_mask.device) & keys) | eye


DECODE_ROWS = 8  # the fused activation serves decode steps; a prompt's rows keep torch's kernels


class TextMLP(nn.Module):
    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.gate_up_proj = nn.Linear(cfg.hidden_size, 2 * cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate_up = self.gate_up_proj(x)
        if kernels_for(gate_up) and not needs_grad(gate_up) and gate_up.shape[:-1].numel() <= DECODE_ROWS:
            from glmv_cli.kernels.swiglu import swiglu

            return self.down_proj(swiglu(gate_up))  # one kernel for the decode step's activation
        gate, up = gate_up.chunk(2, dim=-1)
        return self.down_proj(up * F.silu(gate))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: TextConfig):
        super().__init__()
        eps = cfg.rms_norm_eps
        self.input_layernorm = RMSNorm(cfg.hidden_size, eps)
        self.self_attn = TextAttention(cfg)
        self.post_self_attn_layernorm = RMSNorm(cfg.hidden_size, eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, eps)
        self.mlp = TextMLP(cfg)
        self.post_mlp_layernorm = RMSNorm(cfg.hidden_size, eps)

    def forward(self, x, h, next_norm, cos, sin, cache, start, mask):
        """x: the residual stream; h: input_layernorm(x), which the previous seam computed ->
        (the new residual stream, next_norm of it: the next layer's input_layernorm, or the
        final norm). Each seam (norm the branch, add it, norm the sum) is one add_norm."""
        x, h = add_norm(self.self_attn(h, cos, sin, cache, start, mask), x, self.post_self_attn_layernorm,
                        self.post_attention_layernorm)
        return add_norm(self.mlp(h), x, self.post_mlp_layernorm, next_norm)


class TextModel(nn.Module):
    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.register_buffer("inv_freq", inverse_frequencies(cfg.rotary_dim, cfg.rope_theta), persistent=False)
        self.caches: list[KVCache] | None = None

    def setup_cache(self, batch: int, max_len: int, dtype=None, device=None) -> None:
        """Preallocate the KV cache for `max_len` positions (prompt + new tokens, not the model's max)."""
        ref = self.norm.weight  # (the embedding may be int8)
        self.caches = [KVCache(batch, self.cfg.num_kv_heads, max_len, self.cfg.head_dim, dtype or ref.dtype,
                               device or ref.device) for _ in self.layers]

    def drop_cache(self) -> None:
        self.caches = None

    def forward(self, embeds: torch.Tensor, position_ids: torch.Tensor, start: int | torch.Tensor | list[int] = 0,
                mask: torch.Tensor | None = None, use_cache: bool = False,
                rows: list[list[KVCache]] | None = None, tick=None) -> torch.Tensor:
        """embeds (B, S, hidden), position_ids (3, B, S) -> normed hidden states (B, S, hidden).

        With use_cache the keys/values go to the preallocated cache at [start, start+S) and
        attention reads everything cached before them. `rows` (a batched decode step, S = 1): each
        row's own cache (one KVCache per layer, batch 1) instead of `caches`, and `start` a list of
        each row's position in it (ints, or (1,) tensors with `mask` a list of each row's mask over
        its whole cache: Glm4v.decode_rows_static); the projections and MLPs run once for all rows.
        `tick` (optional; a prefill's, start an int) is told each layer's work as it is done (work.py).
        """
        cos, sin = text_rope(position_ids, self.inv_freq, self.cfg.mrope_section, embeds.dtype)
        if use_cache and rows is None and self.caches is None:
            raise RuntimeError("setup_cache() must be called before a cached forward")
        x, layers = embeds, self.layers
        if not len(layers):
            return self.norm(x)
        h = layers[0].input_layernorm(x)
        layer_work = work.text_layer_work(self.cfg, x.shape[1], start) if tick is not None else 0.0  # (every layer's)
        for i, layer in enumerate(layers):
            next_norm = layers[i + 1].input_layernorm if i + 1 < len(layers) else self.norm
            cache = [row[i] for row in rows] if rows is not None else self.caches[i] if use_cache else None
            x, h = layer(x, h, next_norm, cos, sin, cache, start, mask)
            if tick is not None:
                tick(layer_work)
        return h
