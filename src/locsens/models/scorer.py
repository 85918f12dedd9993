"""LocSens' parts: the per-modality branches and the scorer, which owns its training forward AND its exact
fast inference, so a new scorer is written once and the scoring engine (``locsens.scoring``) only drives it.

``Branch``: ``[L2 ->] Linear -> ReLU -> L2`` (the paper's per-modality mapping to 300-d); ``ZeroBranch``: zeros
(the paper's zeroed-locations row).

``Scorer``: ``score(loc, img, tag) = MLP([loc | img | tag | products]) (+ w * cos(img_raw, tag_raw))`` with the
MLP ``[Linear, GroupNorm, ReLU] * n + [Linear(last, 1)]`` (the paper's: 900 -> 2048 x3 -> 1024 -> 512 -> 1).

* ``pairwise_products`` (ours; off in the paper) appends the element-wise products of the L2-normalised
  branches: image*tag, and with a location block as wide as the branches, location*tag and location*image.
  The image-tag match, which tags are used where and what photos look like where then become linear in
  the first layer instead of interactions the MLP assembles from ReLUs (cf. factorisation machines).
* ``similarity_skip`` (ours; off in the paper) adds ``w * cos(image, tag)`` of the INPUT embeddings (MCC's,
  whose cosine is MCC's own ranking), ``w`` learned from 1: LocSens starts from the agnostic model and
  its MLP learns the location-dependent correction (residual learning).

Fast exact inference (``Scorer.fast``): the first Linear reads ``cat([loc, img, tag, products])``, so its
pre-activation is a sum of per-block terms. A query side's terms (the image and location for tagging, the
tag and location for retrieval) are computed once per query and the candidate side's once per candidate
set; a pair's pre-activation is then one broadcast add. A product of two query-side blocks joins the
query's term; a product with the candidate side is ``cand_e @ M_q.T`` with ``M_q = W_pair * q`` built once
per query (one batched matmul per chunk). The layers after the first run in fp32, bf16 or fbgemm int8.
In bf16 the activations stay bf16 from the first GroupNorm's output to the last hidden layer: the
matmuls accumulate in fp32 inside the kernel and GroupNorm computes its statistics and affine in fp32
from bf16 input, so no fp32 copy of a [pairs, width] activation is made between layers (on CPU those
elementwise passes, not the GEMMs, set the pace); the final Linear(last, 1) runs in fp32.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

FAST_DTYPES = ("fp32", "bf16", "int8")


class Branch(nn.Module):
    """One modality's mapping: ``[L2 ->] Linear(in_dim, out_dim) -> ReLU -> L2``."""

    def __init__(self, in_dim: int, out_dim: int = 300, normalise_input: bool = True):
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim)
        self.normalise_input = normalise_input
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.normalise_input:
            x = F.normalize(x, dim=-1)
        return F.normalize(F.relu(self.linear(x)), dim=-1)


class ZeroBranch(nn.Module):
    """A location branch that outputs zeros: the paper's "zeroed locations" LocSens (no location information)."""

    def __init__(self, in_dim: int, out_dim: int = 300):
        super().__init__()
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros((*x.shape[:-1], self.out_dim), dtype=x.dtype, device=x.device)


class Scorer(nn.Module):
    """The relevance MLP over ``[loc | img | tag | products]`` (see the module docstring).

    Args:
        loc_dim: width of the location block (a 300-d branch, the encoder's raw output, or zeros).
        branch_dim: width of the image and tag blocks (and of every product).
        hidden: widths of the ``[Linear, GroupNorm, ReLU]`` stages (paper: 2048, 2048, 2048, 1024, 512).
        groups, gn_eps: GroupNorm groups and epsilon (paper: 32, 1e-3).
        pairwise_products, similarity_skip: ours, off in the paper (see the module docstring).
    """

    def __init__(
        self,
        loc_dim: int,
        branch_dim: int,
        hidden: Sequence[int] = (2048, 2048, 2048, 1024, 512),
        groups: int = 32,
        gn_eps: float = 1e-3,
        pairwise_products: bool = False,
        similarity_skip: bool = False,
    ):
        super().__init__()
        hidden = [int(h) for h in hidden]
        if not hidden or any(h % groups for h in hidden):
            raise ValueError(
                f"scorer.hidden={hidden} must be non-empty and every width divisible by scorer.groups={groups}"
            )
        self.loc_dim, self.branch_dim = int(loc_dim), int(branch_dim)
        # element-wise products appended after [loc | img | tag], in this order
        self.interactions: tuple[tuple[str, str], ...] = ()
        if pairwise_products:
            self.interactions = (("img", "tag"),) + (
                (("loc", "tag"), ("loc", "img")) if self.loc_dim == self.branch_dim else ()
            )
        self.skip = nn.Parameter(torch.ones(())) if similarity_skip else None  # weight of the input cosine
        layers: list[nn.Module] = []
        width = self.loc_dim + 2 * self.branch_dim + len(self.interactions) * self.branch_dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.GroupNorm(groups, h, eps=gn_eps), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, 1))
        self.layers = nn.Sequential(*layers)
        self._fast: dict[tuple, FastScorer] = {}

    @property
    def widest(self) -> int:
        return max(m.out_features for m in self.layers if isinstance(m, nn.Linear))

    def blocks(self) -> dict[str | tuple[str, str], int]:
        """Input blocks of the first layer, in order, with their widths."""
        return {
            "loc": self.loc_dim,
            "img": self.branch_dim,
            "tag": self.branch_dim,
            **{p: self.branch_dim for p in self.interactions},
        }

    def forward(
        self,
        loc: torch.Tensor,
        img: torch.Tensor,
        tag: torch.Tensor,
        img_raw: torch.Tensor | None = None,
        tag_raw: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``[..., L], [..., D], [..., D]`` (and the raw input embeddings ``[..., E]`` for the skip) -> ``[...]`` scores."""
        parts = {"loc": loc, "img": img, "tag": tag}
        x = torch.cat([loc, img, tag, *(parts[a] * parts[b] for a, b in self.interactions)], dim=-1)
        scores = self.layers(x.reshape(-1, x.shape[-1])).view(x.shape[:-1])  # GroupNorm reads dim 1 as channels
        if self.skip is not None:
            if img_raw is None or tag_raw is None:
                raise ValueError("this scorer has a similarity skip: pass the raw image and tag embeddings")
            scores = scores + self.skip * (F.normalize(img_raw, dim=-1) * F.normalize(tag_raw, dim=-1)).sum(-1)
        return scores

    def forward_indexed(
        self,
        parts: dict[str, torch.Tensor],
        index: dict[str, torch.Tensor],
        img_raw: torch.Tensor | None = None,
        tag_raw: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``forward`` of the triplets ``(loc[index["loc"]], img[index["img"]], tag[index["tag"]])`` where
        ``parts`` holds each distinct input once (``{"loc": [n_loc, L], "img": [n_img, D], "tag": [n_tag,
        D]}``, the raw embeddings likewise) and ``index`` the triplets' rows into them (one shape each).

        The same function as ``forward`` on the gathered inputs, cheaper when triplets share inputs (a
        training group's negatives share the positive's image, tag or place): the first layer's
        ``[loc | img | tag]`` terms are computed once per distinct input, each product block's once per
        distinct pair, and gathered; only the skip's cosine is per triplet. Gradients reach ``parts``
        summed over their uses."""
        shape = index["img"].shape
        flat = {name: index[name].reshape(-1) for name in ("loc", "img", "tag")}

        def gather(x: torch.Tensor, name: str) -> torch.Tensor:
            # index_select: its backward (index_add_) is deterministic on CPU; x[idx]'s accumulate is not
            return torch.index_select(x, 0, flat[name])

        first = self.layers[0]
        h, start = first.bias, 0
        for name, width in self.blocks().items():
            if isinstance(name, str):
                h = h + gather(F.linear(parts[name], first.weight[:, start : start + width]), name)
                start += width
        for (a, b), width in ((p, w) for p, w in self.blocks().items() if isinstance(p, tuple)):
            # a group's negatives repeat most of the positive's pairs (a swapped tag keeps loc*img, a swapped
            # place keeps img*tag): each distinct pair's product and first-layer term is computed once
            n_b = len(parts[b])
            pairs, inverse = torch.unique(flat[a] * n_b + flat[b], return_inverse=True)
            product = parts[a].index_select(0, pairs // n_b) * parts[b].index_select(0, pairs % n_b)
            term = F.linear(product, first.weight[:, start : start + width])
            h = h + term.index_select(0, inverse)
            start += width
        scores = self.layers[1:](h).view(shape)
        if self.skip is not None:
            if img_raw is None or tag_raw is None:
                raise ValueError("this scorer has a similarity skip: pass the raw image and tag embeddings")
            cosine = (gather(F.normalize(img_raw, dim=-1), "img") * gather(F.normalize(tag_raw, dim=-1), "tag")).sum(-1)
            scores = scores + self.skip * cosine.view(shape)
        return scores

    def fast(self, dtype: str = "fp32", device: torch.device | str | None = None) -> FastScorer:
        """The exact fast inference of this scorer in ``dtype`` on ``device``; cached until any parameter
        changes (an optimiser step or ``load_state_dict`` bumps a parameter's version counter)."""
        if dtype not in FAST_DTYPES:
            raise ValueError(f"scorer dtype={dtype!r}; expected one of {FAST_DTYPES}")
        device = torch.device(device) if device is not None else self.layers[0].weight.device
        key = (dtype, str(device))
        fast = self._fast.get(key)
        if fast is None or fast.version != self.version():
            fast = self._fast[key] = FastScorer(self, dtype, device)
        return fast

    def version(self) -> tuple:
        return tuple((p.data_ptr(), p._version) for p in self.parameters())

    def __getstate__(self):
        state = dict(super().__getstate__())
        state["_fast"] = {}  # caches of closures stay out of pickles and deep copies
        return state


# --------------------------------------------------------------------------------------------
# reduced-precision Linear layers of the fast path
# --------------------------------------------------------------------------------------------
def _fp32_linear(w: torch.Tensor, b: torch.Tensor | None):
    return lambda h: F.linear(h, w, b)


def _bf16_linear(w: torch.Tensor, b: torch.Tensor | None):
    """bf16 operands, fp32 accumulation inside the kernel, bf16 output."""
    w16, b16 = w.bfloat16(), None if b is None else b.bfloat16()
    return lambda h: F.linear(h, w16, b16)


def _group_norm_relu(groups: int, eps: float, gamma: torch.Tensor, beta: torch.Tensor, out: torch.dtype):
    """GroupNorm then ReLU, returning ``out``: fp32 statistics whatever the input's dtype; with bf16
    input the normalised activation is written as bf16 directly (one pass, no fp32 copy)."""

    def norm(h: torch.Tensor) -> torch.Tensor:
        if h.dtype == torch.float32 or out == torch.float32:
            return F.group_norm(h.float(), groups, gamma.float(), beta.float(), eps).relu_().to(out)
        return F.group_norm(h, groups, gamma, beta, eps).relu_()

    return norm


def _then(first, second):
    return lambda h: second(first(h))


def _int8_linear(w: torch.Tensor, b: torch.Tensor | None):
    """fbgemm dynamic-quantised Linear: int8 weights (per output channel), activations quantised per
    call (per tensor, 7-bit range so AVX2's int16 pair sums cannot saturate), fp32 output."""
    scale = (w.abs().amax(dim=1).clamp(min=1e-12) / 127).double()
    with warnings.catch_warnings():  # torch flags quantized-tensor creation as deprecated; 2.13 still runs it
        warnings.simplefilter("ignore")
        qw = torch.quantize_per_channel(w, scale, torch.zeros_like(scale, dtype=torch.long), 0, torch.qint8)
        packed = torch.ops.quantized.linear_prepack(qw, b)
    return lambda h: torch.ops.quantized.linear_dynamic(h.contiguous(), packed, True)


class FastScorer:
    """A ``Scorer``'s weights split by first-layer block and cast for inference (see the module docstring).

    The scoring engine composes these pieces: ``query`` (a query side's first-layer term and the factors
    of its products with the candidate side), ``candidates`` (a candidate side's term), ``pair_term``,
    ``rest`` (every layer after the first) and ``skip_weight``.
    """

    def __init__(self, scorer: Scorer, dtype: str, device: torch.device):
        self.dtype, self.device, self.version = dtype, device, scorer.version()
        self.interactions = scorer.interactions
        layers = list(scorer.layers)
        first = layers[0]
        w = first.weight.detach().to(device, torch.float32)
        self.bias = first.bias.detach().to(device, torch.float32)
        self.blocks: dict = {}
        start = 0
        for name, width in scorer.blocks().items():
            self.blocks[name] = w[:, start : start + width]
            start += width
        # per stage after the first Linear: GroupNorm -> ReLU -> the next Linear, as one function of h
        self.stages, self.stages32 = [], []
        bf16_params = dtype == "bf16" and device.type != "cpu"  # CPU GroupNorm reads bf16 with fp32 params
        for i in range(1, len(layers) - 1, 3):
            gn, lin = layers[i], layers[i + 2]
            gamma, beta = gn.weight.detach().to(device, torch.float32), gn.bias.detach().to(device, torch.float32)
            w32 = lin.weight.detach().to(device, torch.float32)
            b32 = lin.bias.detach().to(device, torch.float32)
            norm32 = _group_norm_relu(gn.num_groups, gn.eps, gamma, beta, torch.float32)
            self.stages32.append(_then(norm32, _fp32_linear(w32, b32)))
            if dtype == "fp32":
                self.stages.append(self.stages32[-1])
            elif lin is layers[-1]:  # the final Linear(last, 1) is a cheap matvec: fp32 input and weights
                self.stages.append(self.stages32[-1])
            elif dtype == "int8":
                self.stages.append(_then(norm32, _int8_linear(w32, b32)))
            else:
                g16, b16 = (gamma.bfloat16(), beta.bfloat16()) if bf16_params else (gamma, beta)
                norm = _group_norm_relu(gn.num_groups, gn.eps, g16, b16, torch.bfloat16)
                self.stages.append(_then(norm, _bf16_linear(w32, b32)))
        self.skip_weight = None if scorer.skip is None else float(scorer.skip.detach())

    def query(self, parts: dict[str, torch.Tensor], candidate: str) -> tuple[torch.Tensor, list]:
        """First-layer term of a query side (``parts``: its encoded blocks; the bias is left to the candidate
        side) and the factors of its products with the candidate side: ``[(W_pair [H1, d], q [B, d]), ...]``."""
        lin = sum(parts[name] @ self.blocks[name].T for name in parts)
        factors = []
        for a, b in self.interactions:
            if candidate not in (a, b):
                lin = lin + (parts[a] * parts[b]) @ self.blocks[(a, b)].T
            else:
                factors.append((self.blocks[(a, b)], parts[b if a == candidate else a]))
        return lin, factors

    def candidates(self, name: str, encoded: torch.Tensor, with_bias: bool = False) -> torch.Tensor:
        """A candidate side's first-layer term ``encoded @ W_name.T`` (``+ b`` with ``with_bias``)."""
        out = encoded @ self.blocks[name].T
        return out + self.bias if with_bias else out

    def reads_products_of(self, name: str) -> bool:
        return any(name in pair for pair in self.interactions)

    @staticmethod
    def pair_term(factors: list, rows: slice | torch.Tensor, cand_e: torch.Tensor) -> torch.Tensor:
        """Product pre-activations of queries ``rows`` against ``cand_e`` ([n, d] shared, or [b, n, d] per
        query): sum over pairs of (cand_e * q) @ W_pair.T, as one batched matmul through M_q = sum W_pair * q."""
        m = sum(w[None] * q[rows][:, None, :] for w, q in factors)  # [b, H1, d]
        return torch.matmul(cand_e if cand_e.ndim == 3 else cand_e[None], m.transpose(1, 2))  # [b, n, H1]

    def rest(self, h: torch.Tensor, exact: bool = False) -> torch.Tensor:
        """Every layer after the first: [P, H1] fp32 pre-activations -> [P] fp32 scores (hidden layers in
        this scorer's dtype, or all in fp32 with ``exact``)."""
        for stage in self.stages32 if exact else self.stages:
            h = stage(h)
        return h.float().squeeze(1)


__all__ = ["FAST_DTYPES", "Branch", "FastScorer", "Scorer", "ZeroBranch"]
