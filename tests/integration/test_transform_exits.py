"""A transform that raises SystemExit or KeyboardInterrupt stops the run with exit 1 and one
line naming the record; the record is not committed, and neither is its transaction."""

from __future__ import annotations

import json

import pytest

from examples.orders import make_samples
from localkafka.clients import committed_offsets, read_all

pytestmark = pytest.mark.kafka


@pytest.mark.parametrize("error", ["SystemExit", "KeyboardInterrupt"])
def test_a_transform_that_exits_ends_the_run_with_1_naming_the_record(pipe, processors, error):
    p = pipe(partitions=1, transform="tests.transforms:exits_on_the_first_singled_out",
             output_value={"format": "json"})
    samples = make_samples(200, poison_per_kind=0.0, seed=41)
    p.feed(samples)
    proc = processors(p.config, "i1", env={"EXIT_WITH": error})

    assert proc.proc.wait(60) == 1, proc.log()[-3000:]
    [line] = proc.errors()
    expected = "0" if error == "SystemExit" else ""
    assert line == f"stopping: the transform raised {error}({expected}) on record {p.input} [0] @50"
    assert "Traceback" not in proc.log()
    assert committed_offsets(p.bootstrap, p.app_id, p.input)[0] <= 50
    outputs = [json.loads(r.value)["order_id"] for r in read_all(p.bootstrap, p.output)]
    assert samples[50].order_id not in outputs
