"""Every sample kind reaches the stage it promises, through the real codecs and transform."""

from __future__ import annotations

import pytest

from examples.orders import KINDS, make_samples
from processor.app import build_pipeline
from processor.config import load_config
from processor.deadletter import Failure
from processor.pipeline import Outputs
from tests.messages import message

SAMPLES = make_samples(2000, poison_per_kind=0.05, seed=11)


@pytest.fixture(scope="module")
def pipeline():
    return build_pipeline(load_config("config/example.yaml"))


@pytest.mark.parametrize("kind", list(KINDS))
def test_each_kind_meets_its_fate(pipeline, kind):
    samples = [s for s in SAMPLES if s.kind == kind]
    assert len(samples) > 20
    for offset, sample in enumerate(samples):
        result = pipeline.process(message("orders", 0, offset, sample.key, sample.value))
        if sample.stage is None:
            assert isinstance(result, Outputs) and len(result.records) == 1, result
            assert result.records[0][2] == sample.key
        else:
            assert isinstance(result, Failure) and result.stage == sample.stage, (sample, result)


