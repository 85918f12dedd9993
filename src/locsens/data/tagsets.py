"""Tag sets: the one home for "which tags does row r carry" (rows are images, retrieval candidates or places).

A ``TagSets`` holds the sorted unique int64 keys ``row * V + tag`` (optionally with a count per key):
membership is a binary search (O(log nnz) per lookup, no dense [rows x V] matrix), the row-major view
(``row_ptr``: each row's tags, ascending) is the key order, and the tag-major view (``tag_ptr`` /
``tag_rows``: the rows carrying each tag, ascending) is built once when first asked for. It is made from
a CSR tag list (the dataset store's ``tags_indptr`` / ``tags_indices``), a padded matrix or (row, tag)
pairs. Duplicate tags of a row count once (or are counted, with ``counts``).

``padded(indptr, indices, rows)`` is the other CSR view the project needs: the tags of some rows as an
int64 ``[len(rows), T]`` matrix padded with -1 (ground truth for the metrics, training batches).

>>> sets = TagSets.from_csr(np.array([0, 2, 3]), np.array([4, 1, 4]), num_tags=5)
>>> sets.contains(np.array([0, 0, 1]), np.array([1, 4, 1])).tolist()
[True, True, False]
>>> sets.rows_per_tag().tolist()
[0, 1, 0, 0, 2]
>>> padded(np.array([0, 2, 3]), np.array([4, 1, 4]), np.array([1, 0])).tolist()
[[4, -1], [4, 1]]
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def padded(indptr, indices, rows) -> np.ndarray:
    """Tags of the given CSR rows as an int64 ``[len(rows), T]`` matrix padded with -1 (T = most tags of a row, >= 1)."""
    indptr, indices, rows = np.asarray(indptr), np.asarray(indices), np.asarray(rows, dtype=np.int64)
    start, counts = indptr[rows], indptr[rows + 1] - indptr[rows]
    width = int(counts.max()) if len(rows) else 0
    out = np.full((len(rows), max(width, 1)), -1, dtype=np.int64)
    which = np.repeat(np.arange(len(rows)), counts)
    offset = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    out[which, offset] = indices[np.repeat(start, counts) + offset]
    return out


class TagSets:
    """Which tags each of ``num_rows`` rows carries, over a vocabulary of ``num_tags`` (module docstring)."""

    def __init__(self, keys: Tensor, num_rows: int, num_tags: int, counts: Tensor | None = None):
        self.keys, self.num_rows, self.num_tags, self.counts = keys, int(num_rows), int(num_tags), counts
        self._tag_major: tuple[Tensor, Tensor] | None = None

    # ---- construction -----------------------------------------------------------------------
    @classmethod
    def from_pairs(cls, rows, tags, num_rows: int, num_tags: int, count: bool = False) -> TagSets:
        """From parallel arrays of (row, tag) pairs; ``count=True`` keeps how often each pair occurs."""
        rows, tags = (
            torch.as_tensor(np.asarray(rows), dtype=torch.long),
            torch.as_tensor(np.asarray(tags), dtype=torch.long),
        )
        if tags.numel() and (tags.min() < 0 or tags.max() >= num_tags):
            raise ValueError(f"tag ids must lie in [0, {num_tags})")
        out = torch.unique(rows * int(num_tags) + tags, return_counts=count)
        keys, counts = out if count else (out, None)
        return cls(keys, num_rows, num_tags, counts)

    @classmethod
    def from_csr(cls, indptr, indices, num_tags: int, rows=None) -> TagSets:
        """From a CSR tag list; with ``rows``, row i of the result is source row ``rows[i]``."""
        indptr = np.asarray(indptr)
        rows = np.arange(len(indptr) - 1) if rows is None else np.asarray(rows, dtype=np.int64)
        length = indptr[rows + 1] - indptr[rows]
        which = np.repeat(np.arange(len(rows)), length)
        offset = np.arange(int(length.sum())) - np.repeat(np.cumsum(length) - length, length)
        return cls.from_pairs(which, np.asarray(indices)[np.repeat(indptr[rows], length) + offset], len(rows), num_tags)

    @classmethod
    def from_padded(cls, tags, num_tags: int) -> TagSets:
        """From a ``[R, T]`` matrix of tag ids padded with -1."""
        tags = torch.as_tensor(np.asarray(tags) if not isinstance(tags, Tensor) else tags, dtype=torch.long)
        if tags.numel() and (tags.min() < -1 or tags.max() >= num_tags):
            raise ValueError(f"tag ids must lie in [-1, {num_tags})")
        row = torch.arange(len(tags))[:, None].expand_as(tags)
        keep = tags >= 0
        return cls.from_pairs(row[keep], tags[keep], len(tags), num_tags)

    # ---- queries ----------------------------------------------------------------------------
    def contains(self, rows, tags):
        """Whether row ``rows[i]`` carries tag ``tags[i]`` (broadcast; a row < 0 carries nothing). numpy
        arrays in, a numpy bool array out; tensors in, a bool tensor out."""
        as_numpy = not isinstance(rows, Tensor)
        r = torch.as_tensor(np.asarray(rows) if as_numpy else rows).long()
        t = torch.as_tensor(np.asarray(tags) if not isinstance(tags, Tensor) else tags).long()
        r, t = torch.broadcast_tensors(r, t)
        q = r.clamp_min(0) * self.num_tags + t
        if self.keys.numel() == 0:
            found = torch.zeros_like(q, dtype=torch.bool)
        else:
            pos = torch.searchsorted(self.keys, q.reshape(-1)).clamp_max(len(self.keys) - 1).view(q.shape)
            found = (self.keys[pos] == q) & (r >= 0)
        return found.numpy() if as_numpy else found

    @property
    def row_ptr(self) -> Tensor:
        """``[R + 1]``: row r's tags are ``keys[row_ptr[r]:row_ptr[r + 1]] % V`` (keys are row-major)."""
        ptr = torch.zeros(self.num_rows + 1, dtype=torch.long)
        ptr[1:] = torch.cumsum(torch.bincount(self.keys // self.num_tags, minlength=self.num_rows), 0)
        return ptr

    def tag_major(self) -> tuple[Tensor, Tensor]:
        """(``tag_ptr`` [V + 1], ``tag_rows``): the rows carrying tag t are ``tag_rows[tag_ptr[t]:tag_ptr[t + 1]]``, ascending."""
        if self._tag_major is None:
            row, tag = self.keys // self.num_tags, self.keys % self.num_tags
            order = torch.sort(tag, stable=True).indices  # keys are row-major, so rows stay ascending
            ptr = torch.zeros(self.num_tags + 1, dtype=torch.long)
            ptr[1:] = torch.cumsum(torch.bincount(tag, minlength=self.num_tags), 0)
            self._tag_major = (ptr, row[order])
        return self._tag_major

    def rows_per_tag(self) -> Tensor:
        """``[V]``: how many rows carry each tag."""
        return torch.bincount(self.keys % self.num_tags, minlength=self.num_tags)


__all__ = ["TagSets", "padded"]
