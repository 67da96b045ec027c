"""Checkpoints say which loop wrote them, old ones included."""

import pytest

from wmsim.train.checkpoint import KINDS, checkpoint_kind


@pytest.mark.parametrize(
    ("tag", "kind"),
    [(None, "train"), ("world-model", "agent"), *((kind, kind) for kind in KINDS)],
    ids=["untagged", "world-model", *KINDS],
)
def test_every_checkpoint_reads_as_the_kind_of_run_it_is(tag, kind):
    saved = {"format": 1, "config": {}} if tag is None else {"format": 1, "kind": tag}
    assert checkpoint_kind(saved) == kind
