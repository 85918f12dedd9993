"""LocSens training data: (image, tag, location) triplets with sampled negatives, over exported embeddings.

A positive is (image, one of its tags drawn at random, the image's location); each epoch visits every
training image that has at least one tag once, in a seeded random order. Each positive gets K negatives
that share its location:

- ``retrieval``: keep the tag, swap in a random image of the same split that LACKS the tag;
- ``tagging``:   per negative, with probability ``tag_swap_prob`` keep the image and swap the tag for a
  random vocabulary tag the image lacks, otherwise swap the image as in ``retrieval``.

In either mode, with probability ``location_swap_prob`` (0 = the paper) a negative instead keeps the
positive's image and tag and takes the location of another random training photo (ours): the image is
right for the tag but was not taken there, which is what location-sensitive retrieval must rank down
(a retrieval candidate is scored with the query's location, so the model has to tell from pixels where
a photo was taken). The random place is occasionally near the true one (a false negative, like the
paper's images that lack a tag they deserve).

Negatives are drawn vectorised per batch and the few that carry the positive's tag are rejection-
resampled (a membership test against the sorted (row, tag) keys of the CSR tag lists), so a negative
never carries it. Every batch is generated from ``np.random.default_rng([seed, epoch, batch])``: runs
reproduce regardless of the number of DataLoader workers. Locations are RAW here; the model applies the
sigma location sampling in ``training_step`` (so a per-step sigma schedule reaches it without worker
round trips).

Batches (dicts of tensors; M = 1 + K, the positive at column 0)::

    image       float32 [B, M, E]   image embeddings (as stored; the model L2-normalises them)
    tag         float32 [B, M, E]   tag embeddings
    image_index int64   [B, M]      dataset rows of the images
    tag_index   int64   [B, M]      vocabulary ids of the tags
    lat, lon    float32 [B, M]      each triplet's location in degrees: the positive's, except for
                                    location-swap negatives (another training photo's place)

The validation loaders are ``[triplets, tagging]``: the same triplets over the val split with a fixed
draw (epoch 0), and a fixed seeded subset of val images for tagging A@k / location-sensitive P@10::

    image float32 [b, E]; lat, lon float32 [b]; target int64 [b, T] (tags, -1 padded);
    query_tag int64 [b] (one random tag of the image for a retrieval query, -1 = not a query)
"""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from locsens.artifacts import require_made_from
from locsens.data.sampling import EpochBatch, EpochBatchSampler
from locsens.data.store import DatasetStore, EmbeddingStore
from locsens.data.tagsets import TagSets

NEGATIVE_MODES = ("retrieval", "tagging")


class TripletBatches(Dataset):
    """Item ``EpochBatch`` (epoch, b, the one-process batch of positive positions, rank, world size) = this
    rank's share of the b-th batch of positives of that epoch with their K negatives: the negatives are
    drawn for the whole one-process batch (from (seed, epoch, b)) and each rank keeps its share, so W
    processes together train on exactly the one-process batches."""

    def __init__(
        self,
        rows: np.ndarray,
        tags_indptr: np.ndarray,
        tags_indices: np.ndarray,
        membership: TagSets,
        image_emb: torch.Tensor,
        tag_emb: torch.Tensor,
        lat: np.ndarray,
        lon: np.ndarray,
        batch_size: int,
        num_negatives: int,
        negative_mode: str,
        tag_swap_prob: float,
        seed: int,
        max_resample_rounds: int,
        tag_cdf: np.ndarray | None = None,
        location_swap_prob: float = 0.0,
    ):
        self.rows = rows
        self.location_swap_prob = location_swap_prob
        self.tag_cdf = tag_cdf  # cumulative distribution of swapped-in negative tags (None: uniform)
        self.indptr, self.indices = tags_indptr, tags_indices
        self.membership = membership
        self.image_emb, self.tag_emb = image_emb, tag_emb
        self.lat, self.lon = lat, lon
        self.batch_size, self.num_negatives = batch_size, num_negatives
        self.negative_mode, self.tag_swap_prob = negative_mode, tag_swap_prob
        self.seed, self.max_resample_rounds = seed, max_resample_rounds

    def __len__(self) -> int:
        return len(self.rows)

    def sampler(
        self, shuffle: bool, drop_last: bool, rank: int = 0, world_size: int = 1, fixed_epoch: int | None = None
    ):
        return EpochBatchSampler(
            len(self.rows),
            self.batch_size,
            shuffle=shuffle,
            seed=self.seed,
            drop_last=drop_last,
            rank=rank,
            world_size=world_size,
            fixed_epoch=fixed_epoch,
        )

    def _resample_images(self, rng, neg_rows: np.ndarray, tags: np.ndarray, where: np.ndarray) -> None:
        """Replace, in place, every negative image (at ``where``) that carries its tag by another draw."""
        bad = where & self.membership.contains(neg_rows, tags)
        for _ in range(self.max_resample_rounds):
            if not bad.any():
                return
            neg_rows[bad] = self.rows[rng.integers(0, len(self.rows), int(bad.sum()))]
            bad[bad] = self.membership.contains(neg_rows[bad], tags[bad])
        if bad.any():
            tag = int(tags[bad][0])
            raise RuntimeError(
                f"could not draw a negative image lacking tag id {tag} in {self.max_resample_rounds} rounds: "
                f"almost every image of the split carries it (drop it from the vocabulary)"
            )

    def _draw_tags(self, rng, size) -> np.ndarray:
        """Negative tag ids: uniform over the vocabulary, or from ``tag_cdf`` (popularity-weighted)."""
        if self.tag_cdf is None:
            return rng.integers(0, self.tag_emb.shape[0], size)
        return np.minimum(np.searchsorted(self.tag_cdf, rng.random(size), side="right"), len(self.tag_cdf) - 1)

    def _resample_tags(self, rng, rows: np.ndarray, neg_tags: np.ndarray, where: np.ndarray) -> None:
        """Replace, in place, every negative tag (at ``where``) that its image carries by another draw."""
        bad = where & self.membership.contains(rows, neg_tags)
        for _ in range(self.max_resample_rounds):
            if not bad.any():
                return
            neg_tags[bad] = self._draw_tags(rng, int(bad.sum()))
            bad[bad] = self.membership.contains(rows[bad], neg_tags[bad])
        if bad.any():
            raise RuntimeError(
                f"could not draw a tag the image (row {int(rows[bad][0])}) lacks in {self.max_resample_rounds} rounds"
            )

    def __getitem__(self, item: EpochBatch) -> dict[str, torch.Tensor]:
        epoch, b = item.epoch, item.index
        pos_rows = self.rows[item.batch]
        rng = np.random.default_rng([self.seed, epoch, b])
        n, k = len(pos_rows), self.num_negatives
        start, count = self.indptr[pos_rows], self.indptr[pos_rows + 1] - self.indptr[pos_rows]
        pos_tags = self.indices[start + (rng.random(n) * count).astype(np.int64)].astype(np.int64)

        img_rows = np.repeat(pos_rows[:, None], 1 + k, axis=1).astype(np.int64)
        tag_ids = np.repeat(pos_tags[:, None], 1 + k, axis=1)
        swap_tag = np.zeros((n, k), dtype=bool)
        if self.negative_mode == "tagging":
            swap_tag = rng.random((n, k)) < self.tag_swap_prob
        neg_rows = np.where(swap_tag, img_rows[:, 1:], self.rows[rng.integers(0, len(self.rows), (n, k))])
        neg_tags = np.where(swap_tag, self._draw_tags(rng, (n, k)), tag_ids[:, 1:])
        lat = np.repeat(self.lat[pos_rows, None].astype(np.float32), 1 + k, axis=1)
        lon = np.repeat(self.lon[pos_rows, None].astype(np.float32), 1 + k, axis=1)
        swap_loc = np.zeros((n, k), dtype=bool)
        if self.location_swap_prob > 0:  # keep image and tag, move the triplet to another training photo's place
            swap_loc = rng.random((n, k)) < self.location_swap_prob
            elsewhere = self.rows[rng.integers(0, len(self.rows), (n, k))]
            lat[:, 1:] = np.where(swap_loc, self.lat[elsewhere], lat[:, 1:])
            lon[:, 1:] = np.where(swap_loc, self.lon[elsewhere], lon[:, 1:])
            neg_rows[swap_loc], neg_tags[swap_loc] = img_rows[:, 1:][swap_loc], tag_ids[:, 1:][swap_loc]
        self._resample_images(rng, neg_rows, neg_tags, ~swap_tag & ~swap_loc)
        self._resample_tags(rng, neg_rows, neg_tags, swap_tag & ~swap_loc)
        img_rows[:, 1:], tag_ids[:, 1:] = neg_rows, neg_tags

        share = slice(item.rank, None, item.world_size)  # this rank's share of the one-process batch
        img_rows, tag_ids, lat, lon = img_rows[share], tag_ids[share], lat[share], lon[share]
        img_t, tag_t = torch.from_numpy(img_rows), torch.from_numpy(tag_ids)
        return {
            "image": self.image_emb[img_t],
            "tag": self.tag_emb[tag_t],
            "image_index": img_t,
            "tag_index": tag_t,
            "lat": torch.from_numpy(lat),
            "lon": torch.from_numpy(lon),
        }


class TaggingSubset(Dataset):
    """Fixed val images for tagging / retrieval metrics, served in batches (item b = batch b)."""

    def __init__(self, rows, dataset: DatasetStore, image_emb: torch.Tensor, query_tags: np.ndarray, batch_size: int):
        self.rows, self.batch_size = rows, batch_size
        counts = np.diff(dataset.tags_indptr)[rows]
        target = np.full((len(rows), max(int(counts.max(initial=1)), 1)), -1, dtype=np.int64)
        for i, r in enumerate(rows):  # once per setup, on <= a few thousand rows
            target[i, : counts[i]] = dataset.tags_of(r)
        self.target = torch.from_numpy(target)
        self.image = image_emb[torch.from_numpy(rows.astype(np.int64))]
        self.lat = torch.from_numpy(dataset.lat[rows].astype(np.float32))
        self.lon = torch.from_numpy(dataset.lon[rows].astype(np.float32))
        self.query_tag = torch.from_numpy(query_tags.astype(np.int64))

    def __len__(self) -> int:
        return -(-len(self.rows) // self.batch_size)

    def __getitem__(self, b: int) -> dict[str, torch.Tensor]:
        s = slice(b * self.batch_size, (b + 1) * self.batch_size)
        return {
            "image": self.image[s],
            "lat": self.lat[s],
            "lon": self.lon[s],
            "target": self.target[s],
            "query_tag": self.query_tag[s],
        }


class TripletDataModule(L.LightningDataModule):
    """LocSens triplets over a dataset store and an embeddings store exported from it (e.g. MCC's).

    Args:
        dataset_path: ``locsens.dataset`` store.
        embeddings_path: ``locsens.embeddings`` store with the same photo ids and vocabulary.
        batch_size: positives per batch (each with ``num_negatives`` negatives).
        num_negatives: K negatives per positive (paper: 6).
        negative_mode: ``retrieval`` or ``tagging`` (see the module docstring).
        tag_swap_prob: in ``tagging`` mode, probability that a negative swaps the tag rather than the image.
        tag_negative_power: swapped-in negative tags are drawn with probability ~ (training count + 1) ** power:
            0 = uniform over the vocabulary (the paper), 0.75 = word2vec's popularity weighting (harder
            negatives: the frequent tags a tagger must outrank, other towns' names).
        location_swap_prob: probability that a negative keeps the positive's image and tag and takes another
            training photo's location (see the module docstring); 0 = the paper's negatives.
        val_tagging_images: size of the fixed seeded val subset scored against the whole vocabulary.
        val_retrieval_queries: how many of those images also give a location-sensitive retrieval query.
        val_batch_size: batch size of the tagging subset loader.
        seed: seeds the epoch order, the positives' tags, the negatives and the val subset.
    """

    def __init__(
        self,
        dataset_path: str,
        embeddings_path: str,
        batch_size: int = 1024,
        num_negatives: int = 6,
        negative_mode: str = "retrieval",
        tag_swap_prob: float = 0.5,
        tag_negative_power: float = 0.0,
        location_swap_prob: float = 0.0,
        val_tagging_images: int = 1000,
        val_retrieval_queries: int = 1000,
        val_batch_size: int = 100,
        num_workers: int = 0,
        seed: int = 0,
        max_resample_rounds: int = 100,
    ):
        super().__init__()
        if negative_mode not in NEGATIVE_MODES:
            raise ValueError(f"data.negative_mode={negative_mode!r}; expected one of {NEGATIVE_MODES}")
        if num_negatives < 1 or batch_size < 1:
            raise ValueError(f"data.num_negatives ({num_negatives}) and data.batch_size ({batch_size}) must be >= 1")
        if not 0.0 <= tag_swap_prob <= 1.0:
            raise ValueError(f"data.tag_swap_prob={tag_swap_prob} must lie in [0, 1]")
        if not 0.0 <= location_swap_prob <= 1.0:
            raise ValueError(f"data.location_swap_prob={location_swap_prob} must lie in [0, 1]")
        if tag_negative_power < 0:
            raise ValueError(f"data.tag_negative_power={tag_negative_power} must be >= 0")
        self.save_hyperparameters()
        self.dataset: DatasetStore | None = None
        self.embeddings: EmbeddingStore | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.dataset is not None:
            return
        hp = self.hparams
        self.dataset = DatasetStore(hp.dataset_path)
        self.embeddings = EmbeddingStore(hp.embeddings_path, dataset=self.dataset)
        require_made_from(
            f"embeddings store {hp.embeddings_path}",
            self.embeddings.made_from.get("dataset"),
            "dataset store",
            {"id": self.dataset.content_id, "path": str(hp.dataset_path)},
            "re-export the embeddings from an agnostic model trained on this dataset store "
            "(`python export.py checkpoint=<run dir>/checkpoints/<best>.ckpt world=<world>`)",
        )
        ds = self.dataset
        self.image_embeddings = torch.from_numpy(np.ascontiguousarray(self.embeddings.image, dtype=np.float32))
        self.tag_embeddings = torch.from_numpy(np.ascontiguousarray(self.embeddings.tag, dtype=np.float32))
        membership = TagSets.from_csr(ds.tags_indptr, ds.tags_indices, ds.num_tags)
        has_tags = np.diff(ds.tags_indptr) > 0
        tag_cdf = None
        if hp.tag_negative_power > 0:  # negative tags drawn ~ (training count + 1) ** power (word2vec uses 0.75)
            weights = (ds.tag_counts("train") + 1.0) ** hp.tag_negative_power
            tag_cdf = np.cumsum(weights) / weights.sum()

        def triplets(split: str) -> TripletBatches:
            rows = ds.split_rows(split)
            rows = rows[has_tags[rows]]
            if len(rows) < 2:
                raise ValueError(f"{ds.path}: split '{split}' has {len(rows)} tagged images; LocSens needs at least 2")
            return TripletBatches(
                rows,
                ds.tags_indptr,
                ds.tags_indices,
                membership,
                self.image_embeddings,
                self.tag_embeddings,
                ds.lat,
                ds.lon,
                hp.batch_size,
                hp.num_negatives,
                hp.negative_mode,
                hp.tag_swap_prob,
                hp.seed,
                hp.max_resample_rounds,
                tag_cdf,
                hp.location_swap_prob,
            )

        self.train_triplets = triplets("train")
        self.val_triplets = triplets("val")
        rng = np.random.default_rng([hp.seed, 7])
        val_rows = self.val_triplets.rows
        subset = np.sort(rng.choice(val_rows, size=min(hp.val_tagging_images, len(val_rows)), replace=False))
        counts = np.diff(ds.tags_indptr)[subset]
        query_tags = ds.tags_indices[
            ds.tags_indptr[subset] + (rng.random(len(subset)) * counts).astype(np.int64)
        ].astype(np.int64)
        query_tags[rng.permutation(len(subset))[hp.val_retrieval_queries :]] = -1
        self.val_tagging = TaggingSubset(subset, ds, self.image_embeddings, query_tags, hp.val_batch_size)

    def describe(self) -> str:
        return f"dataset store {self.hparams.dataset_path} + embeddings store {self.hparams.embeddings_path}"

    def lineage(self) -> dict:
        """What a LocSens model trained on this data is made from: the content ids of its two stores."""
        return {
            "dataset": {"id": self.dataset.content_id, "path": str(self.hparams.dataset_path)},
            "embeddings": {"id": self.embeddings.content_id, "path": str(self.hparams.embeddings_path)},
        }

    def model_kwargs(self) -> dict:
        """Dimensions the model takes from the data (``embed_dim``)."""
        if self.embeddings is None:
            raise RuntimeError("call setup() before model_kwargs()")
        return {"embed_dim": int(self.embeddings.dim)}

    def _loader(self, dataset: Dataset, sampler: EpochBatchSampler | None) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=None,
            sampler=sampler,
            num_workers=self.hparams.num_workers,
            persistent_workers=self.hparams.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer is not None else (0, 1)
        return self._loader(
            self.train_triplets, self.train_triplets.sampler(shuffle=True, drop_last=True, rank=rank, world_size=world)
        )

    def val_dataloader(self) -> list[DataLoader]:
        return [  # the val triplets: one fixed draw (epoch 0), the same every validation
            self._loader(self.val_triplets, self.val_triplets.sampler(shuffle=False, drop_last=False, fixed_epoch=0)),
            self._loader(self.val_tagging, None),
        ]
