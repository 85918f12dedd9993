"""Tag normalisation as the paper: URL-decode, lowercase, no '+' or spaces, no tag with a digit."""

from __future__ import annotations

from pathlib import Path

import pytest

from locsens.data.tags import normalise_tag, normalise_tags, split_user_tags

VOCAB = Path(__file__).resolve().parents[2] / "shared" / "data" / "locsens_vocab_100k.txt"


def test_paper_vocabulary_is_a_fixed_point():
    if not VOCAB.exists():
        pytest.skip(f"paper vocabulary not present at {VOCAB}")
    words = VOCAB.read_text(encoding="utf-8").split("\n")
    words = [w for w in words if w]
    assert len(words) == 100_000
    changed = [(w, normalise_tag(w)) for w in words if normalise_tag(w) != w]
    assert changed == []


@pytest.mark.parametrize(
    "raw, want",
    [
        ("key+west+florida", "keywestflorida"),
        ("%C3%A9t%C3%A9", "été"),
        ("New%20York", "newyork"),
        ("NEW+York+City", "newyorkcity"),
        ("caf%C3%A9", "café"),
        ("a%2Bb", "ab"),  # an encoded '+' is removed too
        ("route66", None),
        ("2012", None),
        ("%E2%91%A0", None),  # circled digit one: a digit to str.isdigit
        ("+", None),
        ("", None),
    ],
)
def test_known_cases(raw, want):
    assert normalise_tag(raw) == want


def test_whole_column_keeps_order_and_duplicates():
    assert split_user_tags("") == []
    assert split_user_tags("a,,b") == ["a", "b"]
    assert normalise_tags("Beach,beach,sea+2010,Sea") == ["beach", "beach", "sea"]


def test_wordlist():
    assert normalise_tag("Beach", wordlist={"beach"}) == "beach"
    assert normalise_tag("dune", wordlist={"beach"}) is None
