"""VAR: class-conditional next-scale prediction over the multi-scale VQVAE's token maps.

Every scale's tokens are predicted in parallel from the class and all coarser scales (block-causal attention,
bidirectional within a scale). Constructor keywords, state-dict keys and method names follow the official
`models.VAR`; sampling consumes random numbers in the same order, so a seed gives the official samples.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn

from .edit import keep_given_tokens
from .quant import PATCH_NUMS_256
from .sampling import gumbel_softmax_with_rng, sample_ids_top_k_top_p, sample_with_top_k_top_p_
from .block_attention import BlockCausalMask
from .var_blocks import AdaLNBeforeHead, AdaLNSelfAttn, SharedAdaLin
from .vqvae import VQVAE


BLOCK_PROBABILITIES_BUDGET_BYTES = 2 << 30  # see VAR.forward


def _main_dtype(device_type: str) -> torch.dtype:
    return torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else torch.float32


class VAR(nn.Module):
    def __init__(self, vae_local: VQVAE, num_classes: int = 1000, depth: int = 16, embed_dim: int = 1024,
                 num_heads: int = 16, mlp_ratio: float = 4.0, drop_rate: float = 0.0, attn_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, norm_eps: float = 1e-6, shared_aln: bool = False,
                 cond_drop_rate: float = 0.1, attn_l2_norm: bool = False,
                 patch_nums: Sequence[int] = PATCH_NUMS_256,
                 flash_if_available: bool = True, fused_if_available: bool = True):
        super().__init__()
        # flash_if_available / fused_if_available are accepted for API compatibility: attention always goes
        # through scaled_dot_product_attention, which picks the fused kernel itself.
        if tuple(patch_nums) != tuple(vae_local.v_patch_nums):
            raise ValueError(f"VAR patch_nums {tuple(patch_nums)} differ from the tokenizer's {vae_local.v_patch_nums}")
        self.Cvae, self.V = vae_local.Cvae, vae_local.vocab_size
        self.depth, self.C, self.D, self.num_heads = depth, embed_dim, embed_dim, num_heads
        self.cond_drop_rate = cond_drop_rate
        self.shared_aln = shared_aln
        self.patch_nums = tuple(patch_nums)
        self.L = sum(pn ** 2 for pn in self.patch_nums)
        self.first_l = self.patch_nums[0] ** 2
        self.begin_ends = []
        cur = 0
        for pn in self.patch_nums:
            self.begin_ends.append((cur, cur + pn ** 2))
            cur += pn ** 2
        self.num_stages_minus_1 = len(self.patch_nums) - 1
        self.rng = torch.Generator(device="cpu")
        self.vae_proxy = (vae_local,)  # a tuple keeps the tokenizer out of this module's state dict
        self.vae_quant_proxy = (vae_local.quantize,)

        init_std = math.sqrt(1 / self.C / 3)
        self.num_classes = num_classes
        self.uniform_prob = torch.full((1, num_classes), 1.0 / num_classes, device="cpu")
        self.word_embed = nn.Linear(self.Cvae, self.C)
        self.class_emb = nn.Embedding(num_classes + 1, self.C)  # index num_classes is the null class
        nn.init.trunc_normal_(self.class_emb.weight.data, mean=0, std=init_std)
        self.pos_start = nn.Parameter(torch.empty(1, self.first_l, self.C))
        nn.init.trunc_normal_(self.pos_start.data, mean=0, std=init_std)
        self.pos_1LC = nn.Parameter(torch.empty(1, self.L, self.C))
        nn.init.trunc_normal_(self.pos_1LC.data, mean=0, std=init_std)
        self.lvl_embed = nn.Embedding(len(self.patch_nums), self.C)
        nn.init.trunc_normal_(self.lvl_embed.weight.data, mean=0, std=init_std)

        self.shared_ada_lin = (nn.Sequential(nn.SiLU(inplace=False), SharedAdaLin(self.D, 6 * self.C))
                               if shared_aln else nn.Identity())
        self.drop_path_rate = drop_path_rate
        dpr = [x.item() for x in torch.linspace(0, drop_path_rate, depth, device="cpu")]
        self.blocks = nn.ModuleList([
            AdaLNSelfAttn(embed_dim=self.C, cond_dim=self.D, shared_aln=shared_aln, num_heads=num_heads,
                          mlp_ratio=mlp_ratio, drop=drop_rate, attn_drop=attn_drop_rate, drop_path=dpr[i],
                          norm_eps=norm_eps, attn_l2_norm=attn_l2_norm)
            for i in range(depth)
        ])

        scale_of_token = torch.cat([torch.full((pn * pn,), i) for i, pn in enumerate(self.patch_nums)])
        d_1L1 = scale_of_token.view(1, self.L, 1)
        self.register_buffer("lvl_1L", d_1L1.transpose(1, 2)[:, 0].contiguous())
        # a query sees every key of its own or a coarser scale
        mask = torch.where(d_1L1 >= d_1L1.transpose(1, 2), 0.0, -torch.inf).reshape(1, 1, self.L, self.L)
        self.register_buffer("attn_bias_for_masking", mask.contiguous())
        # On a CPU, teacher-forced attention runs per-scale blocks for scales of at least this many tokens, the
        # smaller ones grouped (models/block_attention.py; 16 skips 38% of the products at the release's 10 scales
        # and was the fastest on a 2-core CPU, benchmarks/RESULTS.md). None: one dense masked attention over all L
        # tokens, the release's way, which is also what CUDA runs (a fused kernel there). Off by default for short
        # token maps: at 30 and 130 tokens the per-block operations cost what the skipped products save.
        self.block_causal_min_tokens: int | None = 16 if self.L >= 256 else None

        self.head_nm = AdaLNBeforeHead(self.C, self.D, norm_eps=norm_eps)
        self.head = nn.Linear(self.C, self.V)
        self._compiled_scale_step = None

    # ------------------------------------------------------------------ helpers
    def _check_labels(self, label_B: torch.Tensor) -> None:
        if label_B.numel() and (label_B.min() < 0 or label_B.max() > self.num_classes):
            raise ValueError(f"class labels must lie in [0, {self.num_classes}] ({self.num_classes} = unconditional);"
                             f" got values in [{int(label_B.min())}, {int(label_B.max())}]")

    def get_logits(self, h_BLC: torch.Tensor, cond_BD: torch.Tensor) -> torch.Tensor:
        return self.head(self.head_nm(h_BLC.float(), cond_BD).float()).float()

    # ------------------------------------------------------------------ training
    def forward(self, label_B: torch.Tensor, x_BLCv_wo_first_l: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits (B, L, V) for all scales at once; applies cond-drop like the release."""
        B = x_BLCv_wo_first_l.shape[0]
        if x_BLCv_wo_first_l.shape[1:] != (self.L - self.first_l, self.Cvae):
            raise ValueError(f"x_BLCv_wo_first_l must be (B, {self.L - self.first_l}, {self.Cvae}); "
                             f"got {tuple(x_BLCv_wo_first_l.shape)}")
        self._check_labels(label_B)
        device_type = x_BLCv_wo_first_l.device.type
        with torch.autocast(device_type=device_type, enabled=False):
            # like the release, the draw happens on every call (also in eval and at rate 0)
            drop_B = torch.rand(B, device=label_B.device) < self.cond_drop_rate
            label_B = torch.where(drop_B, self.num_classes, label_B)
            sos = cond_BD = self.class_emb(label_B)
            sos = sos.unsqueeze(1).expand(B, self.first_l, -1) + self.pos_start.expand(B, self.first_l, -1)
            x_BLC = torch.cat((sos, self.word_embed(x_BLCv_wo_first_l.float())), dim=1)
            x_BLC = x_BLC + (self.lvl_embed(self.lvl_1L.expand(B, -1)) + self.pos_1LC)
        main_type = _main_dtype(device_type)
        cond_BD_or_gss = self.shared_ada_lin(cond_BD).to(main_type)
        attn_bias = self.attn_bias_for_masking.to(main_type)
        if self.block_causal_min_tokens is not None and device_type == "cpu":
            blocks = BlockCausalMask([pn * pn for pn in self.patch_nums], attn_bias, self.block_causal_min_tokens)
            # the blocks keep each chunk's attention probabilities for the backward; past a budget (VAR-d16 at
            # batch 64 would keep 19 GB) the fused dense kernel, which keeps none, is the better trade
            kept_bytes = B * self.num_heads * blocks.pairs * self.depth * torch.finfo(main_type).bits // 8
            if not torch.is_grad_enabled() or kept_bytes <= BLOCK_PROBABILITIES_BUDGET_BYTES:
                attn_bias = blocks
        x_BLC = x_BLC.to(main_type)
        for block in self.blocks:
            x_BLC = block(x_BLC, cond_BD_or_gss, attn_bias)
        return self.get_logits(x_BLC.float(), cond_BD)

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def sample_scales(self, B: int, label_B=None, g_seed: int | None = None, cfg: float = 1.5, top_k: int = 0,
                      top_p: float = 0.0, more_smooth: bool = False, keep_logits: bool = False,
                      input_img_tokens: Sequence[torch.Tensor] | None = None,
                      edit_mask: torch.Tensor | None = None) -> dict:
        """KV-cached next-scale sampling with ramped classifier-free guidance.

        Returns a dict with `f_hat`, the per-scale sampled ids `idx_Bl` (list), the labels used and, with
        `keep_logits`, the guided logits per scale before filtering. With `edit_mask` (see models/edit.py) the
        positions it keeps take the codes of `input_img_tokens` (the edited image's ids per scale) instead of
        the sampled ones; the draws stay the same, so the random-number consumption equals plain sampling.
        """
        if edit_mask is not None:
            self._check_edit_tokens(B, input_img_tokens)
        if top_k > self.V:
            raise ValueError(f"top_k={top_k} is larger than the vocabulary size {self.V}")
        device = self.lvl_1L.device
        if self.rng.device != device:
            # the official model keeps its generator on the model's device (CUDA samples differ from CPU ones)
            self.rng = torch.Generator(device=device)
        rng = None
        if g_seed is not None:
            self.rng.manual_seed(g_seed)
            rng = self.rng
        if label_B is None:
            label_B = torch.multinomial(self.uniform_prob.to(device), num_samples=B, replacement=True,
                                        generator=rng).reshape(B)
        elif isinstance(label_B, int):
            label_B = torch.full((B,), self.num_classes if label_B < 0 else label_B, device=device)
        label_B = torch.as_tensor(label_B, device=device)
        if label_B.shape != (B,):
            raise ValueError(f"label_B must have shape ({B},); got {tuple(label_B.shape)}")
        self._check_labels(label_B)

        sos = cond_BD = self.class_emb(torch.cat((label_B, torch.full_like(label_B, self.num_classes)), dim=0))
        lvl_pos = self.lvl_embed(self.lvl_1L) + self.pos_1LC
        next_token_map = (sos.unsqueeze(1).expand(2 * B, self.first_l, -1)
                          + self.pos_start.expand(2 * B, self.first_l, -1) + lvl_pos[:, :self.first_l])
        f_hat = sos.new_zeros(B, self.Cvae, self.patch_nums[-1], self.patch_nums[-1])
        quant = self.vae_quant_proxy[0]
        out = {"labels": label_B, "idx_Bl": [], "logits_BlV": []}
        cur_L = 0
        cond_BD_or_gss = self.shared_ada_lin(cond_BD)
        for block in self.blocks:
            block.attn.kv_caching(True, max_len=self.L)
        try:
            for si, pn in enumerate(self.patch_nums):
                ratio = si / self.num_stages_minus_1 if self.num_stages_minus_1 else 0.0
                cur_L += pn * pn
                x_BlC = next_token_map
                t = cfg * ratio  # guidance ramps from 0 at the first scale to cfg at the last
                logits_BlV = self.scale_step(x_BlC, cond_BD_or_gss, cond_BD, t)
                if keep_logits:
                    out["logits_BlV"].append(logits_BlV.clone())
                if more_smooth:  # the Gumbel step below reuses the filtered logits
                    idx_Bl = sample_with_top_k_top_p_(logits_BlV, top_k, top_p, rng=rng, num_samples=1)[:, :, 0]
                else:
                    idx_Bl = sample_ids_top_k_top_p(logits_BlV, top_k, top_p, rng=rng)
                out["idx_Bl"].append(idx_Bl)
                if more_smooth:
                    gum_t = max(0.27 * (1 - ratio * 0.95), 0.005)
                    soft_BlV = gumbel_softmax_with_rng(logits_BlV.mul(1 + ratio), tau=gum_t, rng=rng)
                    h_BlC = soft_BlV @ quant.embedding.weight.unsqueeze(0)
                else:
                    h_BlC = quant.embedding(idx_Bl)
                h_BChw = h_BlC.transpose(1, 2).reshape(B, self.Cvae, pn, pn)
                if edit_mask is not None:
                    given_BChw = quant.embedding(input_img_tokens[si].to(device)).transpose(1, 2)
                    h_BChw = keep_given_tokens(edit_mask, h_BChw, given_BChw.reshape(B, self.Cvae, pn, pn))
                f_hat, next_map = quant.get_next_autoregressive_input(si, len(self.patch_nums), f_hat, h_BChw)
                if si != self.num_stages_minus_1:
                    pn_next = self.patch_nums[si + 1]
                    next_BlC = self.word_embed(next_map.view(B, self.Cvae, -1).transpose(1, 2))
                    next_token_map = (next_BlC + lvl_pos[:, cur_L:cur_L + pn_next ** 2]).repeat(2, 1, 1)
        finally:
            for block in self.blocks:
                block.attn.kv_caching(False)
        out["f_hat"] = f_hat
        return out

    def _scale_step_eager(self, x_BlC: torch.Tensor, cond_BD_or_gss: torch.Tensor, cond_BD: torch.Tensor,
                          t: float) -> torch.Tensor:
        """One scale of CFG sampling: the 2B-row (conditional, unconditional) pass, then guided logits (B, l, V).

        The head is affine, so mixing the normalised features before it gives the release's mix of logits
        (1 + t) * cond - t * uncond (equal to float rounding) at half the head's cost.
        """
        for block in self.blocks:
            x_BlC = block(x_BlC, cond_BD_or_gss, attn_bias=None)
        h_BlC = self.head_nm(x_BlC.float(), cond_BD).float()
        B = h_BlC.shape[0] // 2
        if t != 0:
            h_BlC = (1 + t) * h_BlC[:B] - t * h_BlC[B:]
        else:
            h_BlC = h_BlC[:B]
        return self.head(h_BlC).float()

    def scale_step(self, x_BlC, cond_BD_or_gss, cond_BD, t: float) -> torch.Tensor:
        step = self._compiled_scale_step or self._scale_step_eager
        return step(x_BlC, cond_BD_or_gss, cond_BD, t)

    def compile_sampling_step(self, enable: bool = True, **compile_kwargs) -> None:
        """Sample through a `torch.compile`d per-scale step: one static-shape graph per scale (compiled at the
        first call), so dynamo's per-function recompile limit is raised to the number of scales (14 at 1024 px
        would otherwise leave the last scales eager)."""
        if enable:
            import torch._dynamo.config as dynamo_config

            dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, len(self.patch_nums) + 2)
            compile_kwargs.setdefault("dynamic", False)
        self._compiled_scale_step = torch.compile(self._scale_step_eager, **compile_kwargs) if enable else None

    @torch.no_grad()
    def autoregressive_infer_cfg(self, B: int, label_B=None, g_seed: int | None = None, cfg: float = 1.5,
                                 top_k: int = 0, top_p: float = 0.0, more_smooth: bool = False) -> torch.Tensor:
        """Sample B images, returned in [0, 1] with shape (B, 3, H, W)."""
        out = self.sample_scales(B, label_B, g_seed, cfg, top_k, top_p, more_smooth)
        return self.vae_proxy[0].fhat_to_img(out["f_hat"]).add_(1).mul_(0.5)

    @torch.no_grad()
    def autoregressive_infer_cfg_with_mask(self, B: int, label_B=None, g_seed: int | None = None, cfg: float = 1.5,
                                           top_k: int = 0, top_p: float = 0.0, more_smooth: bool = False,
                                           input_img_tokens: Sequence[torch.Tensor] | None = None,
                                           edit_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Zero-shot editing (the release's notebook function of this name): B images in [0, 1].

        The null class (label -1 or num_classes) in-paints or out-paints; a class edits towards that class.
        """
        out = self.sample_scales(B, label_B, g_seed, cfg, top_k, top_p, more_smooth,
                                 input_img_tokens=input_img_tokens, edit_mask=edit_mask)
        return self.vae_proxy[0].fhat_to_img(out["f_hat"]).add_(1).mul_(0.5)

    def _check_edit_tokens(self, B: int, input_img_tokens) -> None:
        expected = [(B, pn * pn) for pn in self.patch_nums]
        got = None if input_img_tokens is None else [tuple(t.shape) for t in input_img_tokens]
        if got != expected:
            raise ValueError(f"an edit needs the image's token ids per scale, shapes {expected} "
                             f"(vae.img_to_idxBl of B images); got {got}")

    # ------------------------------------------------------------------ init
    def init_weights(self, init_adaln: float = 0.5, init_adaln_gamma: float = 1e-5, init_head: float = 0.02,
                     init_std: float = 0.02, conv_std_or_gain: float = 0.02) -> None:
        """The official initialisation (docs/references.md §2.2: truncated normal, scaled residual outputs)."""
        if init_std < 0:
            init_std = (1 / self.C / 3) ** 0.5
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.trunc_normal_(m.weight.data, std=init_std)
                if getattr(m, "bias", None) is not None:
                    m.bias.data.zero_()
        if init_head >= 0:
            self.head.weight.data.mul_(init_head)
            self.head.bias.data.zero_()
        self.head_nm.ada_lin[-1].weight.data.mul_(init_adaln)
        self.head_nm.ada_lin[-1].bias.data.zero_()
        depth = len(self.blocks)
        for block in self.blocks:
            block.attn.proj.weight.data.div_(math.sqrt(2 * depth))
            block.ffn.fc2.weight.data.div_(math.sqrt(2 * depth))
            if block.shared_aln:
                block.ada_gss.data[:, :, 2:].mul_(init_adaln)
                block.ada_gss.data[:, :, :2].mul_(init_adaln_gamma)
            else:
                block.ada_lin[-1].weight.data[2 * self.C:].mul_(init_adaln)
                block.ada_lin[-1].weight.data[:2 * self.C].mul_(init_adaln_gamma)
                block.ada_lin[-1].bias.data.zero_()
