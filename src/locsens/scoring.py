"""Exact, fast exhaustive scoring of LocSens triplets: tagging (one image vs every tag) and retrieval
(one (tag, location) query vs every candidate image).

The original scores a query by repeating it once per candidate, concatenating and running the whole
MLP per pair. This engine computes the same function with less work, as a thin driver over the model's
scorer (``locsens.models.scorer.Scorer.fast``), which owns the split first layer, the products, the
similarity skip and the reduced-precision layers:

1. **Split first layer.** The candidate side's first-layer block (the vocabulary's for tagging, the
   image set's for retrieval) is computed once and cached; the query side's once per query; the branches
   (``encode_*``) run once per distinct input instead of once per pair.
2. **Batched, chunked grid.** Several queries x many candidates go through the rest of the scorer as
   one ``[pairs, width]`` matrix; pairs per chunk are bounded by ``chunk_pairs`` (activation memory),
   and with ``k`` the running top-k is merged chunk by chunk, so ``[B, V]`` is never materialised.
3. **bf16 / int8 where the hardware runs them fast.** With ``k``, a wider reduced-precision shortlist
   (top k + ``rescore_extra``) is rescored in fp32 and re-ranked, so returned top-k scores are fp32's and
   the top-k sets match fp32's unless a true top-k pair fell out of the shortlist. ``dtype="auto"``
   times a bf16 against an fp32 matmul once per process and device, and falls back to fp32 -- with a
   logged warning and ``engine.dtype_reason`` -- where bf16 is not faster (CPUs without AVX512-BF16/AMX
   emulate it, several times slower than fp32).

The scorer's fast weights are cached on its parameters' storage and version counters, so an optimiser
step or ``load_state_dict`` invalidates them by itself. Runs under ``torch.no_grad`` with the model
temporarily in eval mode; ``encode_*`` must be deterministic there (LocSens' are).
"""

import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

log = logging.getLogger(__name__)

DTYPES = ("auto", "fp32", "bf16", "int8")
DEFAULT_CHUNK_BYTES = 256 * 2**20  # activation budget of one chunk
CPU_CHUNK_PAIRS = (
    4096  # on CPU the elementwise passes (GroupNorm, adds, ReLU) are memory-bound: chunks that stay in cache
)
_BF16_VERDICT: dict[str, tuple[bool, str]] = {}  # device type -> (use bf16, why); measured once per process
_WARNED: set[str] = set()


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def bf16_verdict(device: torch.device) -> tuple[bool, str]:
    """Whether bf16 matmuls beat fp32 on ``device`` and why: a timed ``F.linear`` (the engine's kernel;
    on CPU ``a @ b`` in bf16 takes a different, far slower path) of [256 x 1024] by a 1024 x 1024
    weight in each dtype (best of 3 after a warm-up; bf16 stops early once clearly slower), once per
    process and device type."""
    key = device.type
    if key in _BF16_VERDICT:
        return _BF16_VERDICT[key]
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        _BF16_VERDICT[key] = (False, "this GPU has no bf16 support")
        return _BF16_VERDICT[key]
    gen = torch.Generator().manual_seed(0)
    a32 = torch.randn(256, 1024, generator=gen).to(device)
    b32 = torch.randn(1024, 1024, generator=gen).to(device)
    times: dict[torch.dtype, float] = {}
    for dt in (torch.float32, torch.bfloat16):
        a, b = a32.to(dt), b32.to(dt)
        best = math.inf
        for rep in range(4):  # rep 0 warms up
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            F.linear(a, b)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if rep:
                best = min(best, time.perf_counter() - t0)
                if dt == torch.bfloat16 and best > 3 * times[torch.float32]:
                    break
        times[dt] = best
    ratio = times[torch.float32] / times[torch.bfloat16]
    native = ""
    if device.type == "cpu":
        flags = _cpu_flags() & {"avx512_bf16", "amx_bf16"}
        native = f"; CPU bf16 flags: {', '.join(sorted(flags)) or 'none (no avx512_bf16/amx_bf16)'}"
    use = ratio > 1.2
    why = f"bf16 matmul {ratio:.2f}x the speed of fp32 on {device.type}{native}"
    _BF16_VERDICT[key] = (use, why)
    return use, why


def chunk_pairs_for(activation_elements: int, widest: int, device: torch.device) -> int:
    """Pairs per scoring chunk so that a [pairs, widest] activation holds ``activation_elements``; at most
    ``CPU_CHUNK_PAIRS`` on a CPU, where the GroupNorm / add / ReLU passes are memory-bound and run
    fastest from cache."""
    pairs = max(1, activation_elements // widest)
    return min(pairs, CPU_CHUNK_PAIRS) if torch.device(device).type == "cpu" else pairs


@dataclass
class PreparedImages:
    """A candidate image set's first-layer block ``W_img @ encode_image(images)`` ([N, H1], fp32),
    made by ``ScoringEngine.prepare_images`` and valid while the model's weights are unchanged."""

    first_layer: torch.Tensor
    weights_key: tuple
    embedding: torch.Tensor | None = None  # encode_image(images) [N, d], kept when the scorer reads products of them
    normalised: torch.Tensor | None = None  # L2-normalised input images [N, E], kept for a similarity skip

    def __len__(self) -> int:
        return self.first_layer.shape[0]


class ScoringEngine:
    """Exhaustive exact scoring of a LocSens-like model (see the module docstring).

    Args:
        model: has ``encode_image``, ``encode_tag``, ``encode_location`` and ``scorer`` (a
            ``locsens.models.scorer.Scorer``, or anything with its ``fast`` / ``widest`` interface).
        dtype: ``"fp32"``; ``"bf16"`` (hidden matmuls in bf16 even where slow); ``"auto"`` (bf16 where
            a timed matmul says it is faster, else fp32 with a warning); ``"int8"`` (opt-in, CPU: fbgemm
            dynamic-quantised hidden matmuls; with ``k`` the shortlist is rescored in fp32 as for bf16).
            ``dtype_used`` says which.
        chunk_pairs: (query, candidate) pairs per pass through the scorer; default: as many as fit
            ``DEFAULT_CHUNK_BYTES`` of activations, at most ``CPU_CHUNK_PAIRS`` on a CPU.
        device: where scoring runs (default: the model's device).
        tag_embeddings: the vocabulary's tag embeddings ``[V, E]`` for ``score_tags`` (or ``set_vocabulary``).
        rescore_extra: with reduced precision and ``k``, the running top-(k + rescore_extra) shortlist is
            rescored in fp32 and re-ranked.
    """

    def __init__(
        self,
        model: nn.Module,
        dtype: str = "auto",
        chunk_pairs: int | None = None,
        device: str | torch.device | None = None,
        tag_embeddings: torch.Tensor | None = None,
        rescore_extra: int = 32,
    ):
        if dtype not in DTYPES:
            raise ValueError(f"ScoringEngine dtype={dtype!r}; expected one of {DTYPES}")
        scorer = getattr(model, "scorer", None)
        if not hasattr(scorer, "fast"):
            raise TypeError(
                f"ScoringEngine needs model.scorer with a fast() inference (locsens.models.scorer.Scorer), "
                f"got {type(scorer).__name__}"
            )
        self.model, self.scorer = model, scorer
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        if chunk_pairs is None:  # ~3 live fp32 [pairs, width] buffers within DEFAULT_CHUNK_BYTES
            chunk_pairs = chunk_pairs_for(DEFAULT_CHUNK_BYTES // (3 * 4), scorer.widest, self.device)
        if chunk_pairs < 1:
            raise ValueError(f"ScoringEngine chunk_pairs={chunk_pairs} must be >= 1")
        self.chunk_pairs = int(chunk_pairs)
        if rescore_extra < 0:
            raise ValueError(f"ScoringEngine rescore_extra={rescore_extra} must be >= 0")
        self.rescore_extra = int(rescore_extra)
        if dtype == "auto":
            use_bf16, self.dtype_reason = bf16_verdict(self.device)
            if not use_bf16 and self.device.type not in _WARNED:
                _WARNED.add(self.device.type)
                log.warning("ScoringEngine falls back to fp32: %s", self.dtype_reason)
        else:
            use_bf16, self.dtype_reason = dtype == "bf16", f"dtype={dtype!r} requested"
        if dtype == "int8" and self.device.type != "cpu":
            raise ValueError(f"ScoringEngine dtype='int8' runs fbgemm CPU kernels; device is {self.device}")
        self.dtype_used = "int8" if dtype == "int8" else "bf16" if use_bf16 else "fp32"
        self._tag_embeddings = tag_embeddings
        self._vocab: tuple | None = None  # (scorer version, vocabulary blocks)

    # ------------------------------------------------------------------------------------------
    # the scorer's fast inference, inputs and caches
    # ------------------------------------------------------------------------------------------
    @property
    def fast(self):
        return self.scorer.fast(self.dtype_used, self.device)

    @property
    def exact(self):
        return self.scorer.fast("fp32", self.device)

    @contextmanager
    def _inference(self) -> Iterator[None]:
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                yield
        finally:
            self.model.train(was_training)

    def set_vocabulary(self, tag_embeddings: torch.Tensor) -> None:
        """Use ``tag_embeddings [V, E]`` as the vocabulary of ``score_tags`` (its block is built lazily)."""
        self._tag_embeddings = tag_embeddings
        self._vocab = None

    def _vocabulary_block(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(the vocabulary's first-layer term with the bias [V, H1], ``encode_tag(vocab)`` [V, d], the
        L2-normalised vocabulary [V, E] when the scorer has a similarity skip), cached with the weights."""
        if self._tag_embeddings is None:
            raise ValueError(
                "score_tags needs a vocabulary: ScoringEngine(..., tag_embeddings=[V, E]) or engine.set_vocabulary()"
            )
        version = self.scorer.version()
        if self._vocab is None or self._vocab[0] != version:
            tag_e = self._encode_chunked(self.model.encode_tag, self._tag_embeddings)
            raw = self._normalised(self._tag_embeddings) if self.fast.skip_weight is not None else None
            self._vocab = (version, (self.fast.candidates("tag", tag_e, with_bias=True), tag_e, raw))
        return self._vocab[1]

    def _normalised(self, x) -> torch.Tensor:
        return F.normalize(torch.as_tensor(x).to(self.device).float(), dim=-1)

    def _encode_chunked(self, encode, x: torch.Tensor, rows: int = 65536) -> torch.Tensor:
        x = torch.as_tensor(x)
        with self._inference():
            return torch.cat(
                [encode(x[s : s + rows].to(self.device)).float() for s in range(0, max(1, x.shape[0]), rows)]
            )

    def prepare_images(self, images: torch.Tensor) -> PreparedImages:
        """Candidate set for ``score_images``: its first-layer term [N, H1], computed once (with the encoded
        images kept when the scorer reads products of them, the normalised inputs for a skip)."""
        img_e = self._encode_chunked(self.model.encode_image, images)
        fast = self.fast
        raw = self._normalised(images) if fast.skip_weight is not None else None
        return PreparedImages(
            fast.candidates("img", img_e), self.scorer.version(), img_e if fast.reads_products_of("img") else None, raw
        )

    def _encode_location(self, lat, lon) -> torch.Tensor:
        lat, lon = torch.as_tensor(lat).to(self.device), torch.as_tensor(lon).to(self.device)
        if lat.ndim != 1 or lat.shape != lon.shape:
            raise ValueError(f"lat and lon must be 1-d of one length, got {tuple(lat.shape)} and {tuple(lon.shape)}")
        with self._inference():
            return self.model.encode_location(lat, lon).float()

    # ------------------------------------------------------------------------------------------
    # the grid and the lists: chunking and top-k merging
    # ------------------------------------------------------------------------------------------
    def _grid(
        self,
        query: torch.Tensor,
        cand: torch.Tensor,
        k: int | None,
        progress: bool = False,
        factors: list | None = None,
        cand_e: torch.Tensor | None = None,
        skip: tuple | None = None,
        exclude: torch.Tensor | None = None,
        offset: torch.Tensor | None = None,
    ):
        """Scores of rest(query[b] + cand[n] (+ the pair terms of ``factors`` x ``cand_e``)) (+ ``w *
        q_raw[b] . c_raw[n]`` with ``skip = (w, q_raw, c_raw)``) (+ ``offset[b, n]``, [B, N] or [B, 1]: the
        prior skip) for every pair: [B, N], or with ``k`` the running top-k (values [B, k'], candidate ids
        [B, k'], best first; k' = min(k, N)). Candidates in the bool mask ``exclude`` [N] score -inf."""
        fast = self.fast
        b_total, n_total = query.shape[0], cand.shape[0]
        if k is not None and k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        n_chunk = max(1, min(n_total, self.chunk_pairs))
        b_chunk = max(1, self.chunk_pairs // max(n_chunk, cand_e.shape[-1] if factors else 1))  # M_q [b, H1, d] too
        rescore = k is not None and self.dtype_used != "fp32"
        kk = None if k is None else min(k + self.rescore_extra if rescore else k, n_total)
        out_scores = torch.empty((b_total, n_total), device=self.device) if k is None else None
        top_v = torch.empty((b_total, kk or 0), device=self.device)
        top_i = torch.empty((b_total, kk or 0), dtype=torch.long, device=self.device)
        n_steps = math.ceil(b_total / b_chunk) * math.ceil(n_total / n_chunk)
        bar = tqdm(total=n_steps, desc="scoring", unit="chunk", disable=not progress)
        for b0 in range(0, b_total, b_chunk):
            q = query[b0 : b0 + b_chunk]
            best_v = torch.full((q.shape[0], 0), -math.inf, device=self.device)
            best_i = torch.zeros((q.shape[0], 0), dtype=torch.long, device=self.device)
            for n0 in range(0, n_total, n_chunk):
                c = cand[n0 : n0 + n_chunk]
                h = q[:, None, :] + c[None, :, :]
                if factors:
                    h = h + fast.pair_term(factors, slice(b0, b0 + q.shape[0]), cand_e[n0 : n0 + n_chunk])
                s = fast.rest(h.reshape(-1, q.shape[1])).view(q.shape[0], c.shape[0])
                if skip is not None:
                    s = s + skip[0] * (skip[1][b0 : b0 + q.shape[0]] @ skip[2][n0 : n0 + n_chunk].T)
                if offset is not None:
                    rows = offset[b0 : b0 + q.shape[0]]
                    s = s + (rows if rows.shape[1] == 1 else rows[:, n0 : n0 + n_chunk])
                if exclude is not None:
                    s = s.masked_fill(exclude[n0 : n0 + n_chunk][None, :], -math.inf)
                if k is None:
                    out_scores[b0 : b0 + q.shape[0], n0 : n0 + c.shape[0]] = s
                else:
                    cv, ci = torch.topk(s, min(kk, c.shape[0]), dim=1)
                    v, i = torch.cat([best_v, cv], 1), torch.cat([best_i, ci + n0], 1)
                    best_v, pick = torch.topk(v, min(kk, v.shape[1]), dim=1)
                    best_i = i.gather(1, pick)
                bar.update(1)
            if k is not None:
                top_v[b0 : b0 + q.shape[0]], top_i[b0 : b0 + q.shape[0]] = best_v, best_i
        bar.close()
        if k is None:
            return out_scores
        if rescore:  # exact fp32 scores of the reduced-precision shortlist, re-ranked
            top_i = top_i.masked_fill(~torch.isfinite(top_v), -1)
            return self._lists(query, cand, top_i, min(k, n_total), factors, cand_e, skip, exact=True, offset=offset)
        return top_v, top_i.masked_fill(~torch.isfinite(top_v), -1)

    def _lists(
        self,
        query: torch.Tensor,
        cand: torch.Tensor,
        ids: torch.Tensor,
        k: int | None,
        factors: list | None = None,
        cand_e: torch.Tensor | None = None,
        skip: tuple | None = None,
        exact: bool = False,
        offset: torch.Tensor | None = None,
    ):
        """Scores (+ ``offset``, as in ``_grid``) of each query b against its own candidates ``ids[b]`` ([B, C] candidate ids, -1 = none,
        scored -inf), gathered in chunks of about ``chunk_pairs`` pairs: [B, C], or with ``k`` the top-k
        (values [B, k'], candidate ids [B, k'], k' = min(k, C)); reduced precision with ``k`` rescores its
        top k + ``rescore_extra`` in fp32. ``exact``: every layer in fp32."""
        fast = self.exact if exact else self.fast
        b_total, c_total = ids.shape
        valid = ids >= 0
        safe = ids.clamp_min(0)
        b_chunk = max(1, self.chunk_pairs // max(c_total, cand_e.shape[-1] if factors else 1))  # M_q [b, H1, d] too
        scores = torch.empty((b_total, c_total), device=self.device)
        for b0 in range(0, b_total, b_chunk):
            b1 = min(b0 + b_chunk, b_total)
            idx = safe[b0:b1]
            h = query[b0:b1, None, :] + cand[idx]
            if factors:
                h = h + fast.pair_term(factors, slice(b0, b1), cand_e[idx])
            s = fast.rest(h.reshape(-1, query.shape[1]), exact=exact).view(b1 - b0, c_total)
            if skip is not None:
                s = s + skip[0] * (skip[1][b0:b1, None, :] * skip[2][idx]).sum(-1)
            if offset is not None:
                s = s + (offset[b0:b1] if offset.shape[1] == 1 else offset[b0:b1].gather(1, idx))
            scores[b0:b1] = s
        scores = scores.masked_fill(~valid, -math.inf)
        if k is None:
            return scores
        return self._top_of_lists(scores, query, cand, ids, k, factors, cand_e, skip, exact, offset)

    def _top_of_lists(
        self, scores, query, cand, ids, k: int, factors=None, cand_e=None, skip=None, exact=False, offset=None
    ):
        """The top-k ``(values [B, k'], candidate ids [B, k'])`` of list scores ``[B, C]`` (-inf: none); in
        reduced precision its top k + ``rescore_extra`` are rescored exactly in fp32 and re-ranked."""
        c_total = ids.shape[1]
        rescore = not exact and self.dtype_used != "fp32"
        kk = min(k + self.rescore_extra if rescore else k, c_total)
        top_v, pick = torch.topk(scores, kk, dim=1)
        top_i = ids.gather(1, pick).masked_fill(~torch.isfinite(top_v), -1)
        if rescore:
            return self._lists(query, cand, top_i, min(k, c_total), factors, cand_e, skip, exact=True, offset=offset)
        return top_v, top_i

    # ------------------------------------------------------------------------------------------
    # the two tasks
    # ------------------------------------------------------------------------------------------
    def score_tags(
        self,
        images: torch.Tensor,
        lat: torch.Tensor,
        lon: torch.Tensor,
        k: int | None = None,
        progress: bool = False,
        candidates: torch.Tensor | None = None,
        exclude: torch.Tensor | None = None,
    ):
        """Tagging: every vocabulary tag for each (image, location). ``images [B, E]``, ``lat``/``lon [B]``
        degrees -> scores ``[B, V]``, or with ``k`` (top-k scores ``[B, k]``, tag ids ``[B, k]``).

        ``candidates [B, C]``: score only these tag ids per image (-1 = none; a shortlist-and-rerank
        cascade), -> scores ``[B, C]`` or the top-k among them. ``exclude [V]`` (bool): tags that score
        -inf (places omitted)."""
        images = torch.as_tensor(images)
        if images.ndim != 2 or images.shape[0] != torch.as_tensor(lat).shape[0]:
            raise ValueError(
                f"images must be [B, E] with B = len(lat), got {tuple(images.shape)} and {torch.as_tensor(lat).shape[0]} locations"
            )
        query, vocab, factors, vocab_e, skip = self._tag_queries(images, lat, lon)
        offset = self._tag_prior(lat, lon, vocab.shape[0])
        if candidates is not None:
            ids = torch.as_tensor(candidates, device=self.device).long()
            if exclude is not None:
                ids = ids.masked_fill(exclude.to(self.device)[ids.clamp_min(0)] & (ids >= 0), -1)
            return self._lists(query, vocab, ids, k, factors, vocab_e, skip, offset=offset)
        mask = None if exclude is None else torch.as_tensor(exclude, device=self.device).bool()
        return self._grid(query, vocab, k, progress, factors, vocab_e, skip, exclude=mask, offset=offset)

    def _tag_prior(self, lat, lon, num_tags: int) -> torch.Tensor | None:
        """The prior skip's ``w * log p(tag | location)`` of every (location, vocabulary tag): [B, V] fp32."""
        net = getattr(self.model, "prior_net", None)
        if net is None:
            return None
        if net.head.out_features != num_tags:
            raise ValueError(
                f"the model's prior skip has {net.head.out_features} tags, the engine's vocabulary {num_tags}"
            )
        lat, lon = torch.as_tensor(lat).to(self.device), torch.as_tensor(lon).to(self.device)
        with self._inference():
            return float(self.model.prior_weight) * net.log_prior(lat, lon).float()

    def _tag_queries(self, images, lat, lon):
        """(per-image query block, the vocabulary block, pair factors, tag embeddings, skip): the parts of
        the split first layer that tagging computes once per image and once per tag."""
        vocab, vocab_e, vocab_raw = self._vocabulary_block()
        fast = self.fast
        query, factors = fast.query(
            {"loc": self._encode_location(lat, lon), "img": self._encode_chunked(self.model.encode_image, images)},
            "tag",
        )
        skip = None if fast.skip_weight is None else (fast.skip_weight, self._normalised(images), vocab_raw)
        return query, vocab, factors, vocab_e, skip

    def rank_tag_lists(self, images, lat, lon, candidates: torch.Tensor, k: int, excludes: list) -> list:
        """Several rankings of one candidate list per image, scored once: for each bool mask of
        ``excludes`` (or None) the exact top-k ``(scores [B, k'], tag ids [B, k'])`` among the candidates it
        leaves (with places and places omitted from one shortlist; reduced precision rescored in fp32)."""
        query, vocab, factors, vocab_e, skip = self._tag_queries(images, lat, lon)
        ids = torch.as_tensor(candidates, device=self.device).long()
        offset = self._tag_prior(lat, lon, vocab.shape[0])
        scores = self._lists(query, vocab, ids, None, factors, vocab_e, skip, offset=offset)
        out = []
        for exclude in excludes:
            masked = scores
            if exclude is not None:
                drop = exclude.to(self.device)[ids.clamp_min(0)] & (ids >= 0)
                masked = scores.masked_fill(drop, -math.inf)
            out.append(self._top_of_lists(masked, query, vocab, ids, k, factors, vocab_e, skip, offset=offset))
        return out

    def score_images(
        self,
        tags: torch.Tensor,
        lat: torch.Tensor,
        lon: torch.Tensor,
        candidates: torch.Tensor | PreparedImages,
        k: int | None = None,
        progress: bool = False,
        shortlist: torch.Tensor | None = None,
    ):
        """Retrieval: every candidate image for each (tag, location) query. ``tags`` are embeddings
        ``[B, E]`` or vocabulary ids ``[B]`` (long); ``candidates`` images ``[N, E]`` or a
        ``prepare_images`` handle -> scores ``[B, N]``, or with ``k`` (top-k scores, candidate ids).

        ``shortlist [B, C]``: score only these candidate positions per query (-1 = none; the cascade)."""
        tags = torch.as_tensor(tags)
        tag_ids = None if tags.is_floating_point() else tags
        if getattr(self.model, "prior_net", None) is not None and tag_ids is None:
            raise ValueError("this model has a prior skip: score_images needs the query tags as vocabulary ids")
        if not tags.is_floating_point():
            if self._tag_embeddings is None:
                raise ValueError(
                    "score_images got tag ids but the engine has no vocabulary (tag_embeddings / set_vocabulary)"
                )
            vocab = torch.as_tensor(self._tag_embeddings)
            tags = vocab[tags.to(vocab.device)]
        if tags.ndim != 2 or tags.shape[0] != torch.as_tensor(lat).shape[0]:
            raise ValueError(f"tags must be [B, E] embeddings or [B] ids with B = len(lat), got {tuple(tags.shape)}")
        prepared = candidates if isinstance(candidates, PreparedImages) else self.prepare_images(candidates)
        if prepared.weights_key != self.scorer.version():
            raise ValueError(
                "the prepared image set is stale: the model's weights changed since prepare_images(); prepare it again"
            )
        fast = self.fast
        query, factors = fast.query(
            {"loc": self._encode_location(lat, lon), "tag": self._encode_chunked(self.model.encode_tag, tags)}, "img"
        )
        if fast.skip_weight is not None and prepared.normalised is None:
            raise ValueError(
                "the prepared image set lacks the normalised images the scorer's similarity skip needs; prepare it again"
            )
        skip = None if fast.skip_weight is None else (fast.skip_weight, self._normalised(tags), prepared.normalised)
        query = query + fast.bias
        offset = None
        if tag_ids is not None and getattr(self.model, "prior_net", None) is not None:  # one value per query
            with self._inference():
                lat_d, lon_d = torch.as_tensor(lat).to(self.device), torch.as_tensor(lon).to(self.device)
                offset = float(self.model.prior_weight) * self.model.prior_term(lat_d, lon_d, tag_ids.to(self.device))
            offset = offset.float()[:, None]
        if shortlist is not None:
            ids = torch.as_tensor(shortlist, device=self.device).long()
            return self._lists(query, prepared.first_layer, ids, k, factors, prepared.embedding, skip, offset=offset)
        return self._grid(query, prepared.first_layer, k, progress, factors, prepared.embedding, skip, offset=offset)
