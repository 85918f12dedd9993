"""Class 6, configs mean what they say: `no` / `false` / `0` are false everywhere, unknown keys are named
with a did-you-mean, impossible values name the full key, a string where a list is expected is a list."""

from __future__ import annotations

import shutil

import pytest
from conftest import compose, run_cli, train_overrides

from locsens.config import (
    ConfigError,
    validate_evaluate_config,
    validate_export_config,
    validate_extract_config,
    validate_prepare_config,
    validate_train_config,
)
from locsens.data.yfcc import YfccFormatError
from locsens.prepare import prepare


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("typed")
    prepare(compose("prepare", [f"paths.data_dir={root}", "world=w", "source.size=tiny", "source.n_photos=600"]))
    return root


def test_overwrite_no_reuses_the_world(world):
    before = (world / "w" / "dataset.h5").stat()
    proc = run_cli(
        "prepare.py",
        f"paths.data_dir={world}",
        "world=w",
        "source.size=tiny",
        "source.n_photos=600",
        "overwrite=no",
        check=True,
    )
    assert "reusing them" in proc.stdout
    after = (world / "w" / "dataset.h5").stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)  # not rebuilt


@pytest.mark.parametrize(
    "word,value",
    [
        ("no", False),
        ("No", False),
        ("false", False),
        ("0", False),
        ("off", False),
        ("yes", True),
        ("true", True),
        ("1", True),
        ("on", True),
    ],
)
def test_boolean_words_in_every_entry_point(word, value, tmp_path):
    assert (
        validate_prepare_config(compose("prepare", [f"overwrite={word}", f"ingest.strict={word}"])).overwrite is value
    )
    assert (
        validate_extract_config(compose("extract", ["images=x", f"restart={word}", f"overwrite={word}"])).restart
        is value
    )
    ckpt = tmp_path / "c.ckpt"
    ckpt.write_bytes(b"x")
    for name in ("dataset.h5", "features.h5"):
        (tmp_path / name).write_bytes(b"x")
    assert (
        validate_export_config(
            compose(
                "export",
                [
                    f"checkpoint={ckpt}",
                    f"dataset_path={tmp_path / 'dataset.h5'}",
                    f"features_path={tmp_path / 'features.h5'}",
                    f"overwrite={word}",
                ],
            )
        ).overwrite
        is value
    )
    ev = validate_evaluate_config(
        compose(
            "evaluate",
            [
                f"dataset_path={tmp_path / 'dataset.h5'}",
                "output_dir=x",
                f"wandb.enabled={word}",
                f"retrieval.exclude_query_image={word}",
            ],
        )
    )
    assert ev.wandb.enabled is value and ev.retrieval.exclude_query_image is value


def test_strict_no_is_not_strict(world, tmp_path):
    tsv = tmp_path / "bad.tsv"
    shutil.copy(world / "w" / "yfcc100m_dataset.tsv", tsv)
    with open(tsv, "a") as fh:
        fh.write("this is not a yfcc line\n")
    yfcc = lambda strict: compose(
        "prepare",
        [
            f"paths.data_dir={tmp_path}",
            f"world=s{strict}",
            "source=yfcc",
            f"source.tsv={tsv}",  # noqa: E731
            f"source.features={world / 'w' / 'features.h5'}",
            f"ingest.strict={strict}",
        ],
    )
    assert prepare(yfcc("no"))["images"] > 0  # the bad line is counted and skipped
    with pytest.raises(YfccFormatError, match=r"bad.tsv: line \d+: line: expected 25 tab-separated columns, got 1"):
        prepare(yfcc("yes"))


@pytest.mark.parametrize(
    "name,override,named",
    [
        ("prepare", "+ingest.dedupe_tag=true", r"ingest.dedupe_tag: unknown key; did you mean 'dedupe_tags'"),
        ("prepare", "+overwrit=true", r"overwrit: unknown key; did you mean 'overwrite'"),
        ("evaluate", "+retrieval.kk=3", r"retrieval.kk: unknown key; did you mean 'k'"),
        ("extract", "+restat=true", r"restat: unknown key; did you mean 'restart'"),
        ("prepare", "seed=abc", r"seed='abc': .*could not be converted to Integer"),
        ("evaluate", "seed=abc", r"seed='abc': .*could not be converted to Integer"),
        ("evaluate", "retrieval.k=ten", r"retrieval.k='ten'"),
        ("prepare", "overwrite=maybe", r"overwrite='maybe': .*not a valid bool"),
    ],
)
def test_unknown_keys_and_bad_values_are_named(name, override, named):
    validate = {
        "prepare": validate_prepare_config,
        "evaluate": validate_evaluate_config,
        "extract": validate_extract_config,
    }[name]
    extra = {"evaluate": ["dataset_path=/nonexistent.h5"], "extract": ["images=x"]}.get(name, [])
    with pytest.raises(ConfigError, match=named):
        validate(compose(name, [*extra, override]))


def test_a_string_where_a_list_is_expected_is_a_one_element_list(tmp_path):
    cfg = validate_prepare_config(
        compose("prepare", ["source=yfcc", "source.tsv=/data/yfcc100m_dataset.bz2", "source.features=/f.h5"])
    )
    assert list(cfg.source.tsv) == ["/data/yfcc100m_dataset.bz2"]
    (tmp_path / "d.h5").write_bytes(b"x")
    ev = validate_evaluate_config(
        compose("evaluate", [f"dataset_path={tmp_path / 'd.h5'}", "output_dir=x", f"runs={tmp_path}/run"])
    )
    assert list(ev.runs) == [f"{tmp_path}/run"]


def test_train_values_are_typed_from_the_signatures(tiny_stores, tmp_path):
    from conftest import write_tiny_embeddings

    emb = write_tiny_embeddings(tiny_stores, tmp_path / "mcc.h5", dim=8)
    cfg = compose(
        "train",
        train_overrides(
            tiny_stores,
            tmp_path / "r",
            "experiment=locsens",
            "model.scorer.pairwise_products=no",
            "model.scorer.similarity_skip=false",
            "trainer.max_epochs=3",
            embeddings=emb,
        ),
    )
    validate_train_config(cfg)
    assert (
        cfg.model.scorer.pairwise_products is False
        and cfg.model.scorer.similarity_skip is False
        and cfg.trainer.max_epochs == 3
    )
    for override, named in (
        ("seed=abc", r"seed='abc': expected an integer"),
        ("data.batch_size=many", r"data.batch_size='many': expected an integer"),
        ("model.scorer.similarity_skip=perhaps", r"model.scorer.similarity_skip='perhaps': expected true or false"),
    ):
        with pytest.raises(ConfigError, match=named):
            validate_train_config(
                compose(
                    "train",
                    train_overrides(tiny_stores, tmp_path / "r", "experiment=locsens", override, embeddings=emb),
                )
            )
