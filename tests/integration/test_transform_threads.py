"""Threads a transform starts do not keep the processor alive after it is done."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from localkafka.clients import wait_for
from processor.engine import STOP_SECONDS
from tests.processes import ROOT

pytestmark = pytest.mark.kafka


def test_a_transform_s_own_thread_does_not_keep_run_or_check_alive(pipe, processors):
    p = pipe(partitions=1, transform="tests.threaded_transform:transform",
             input_codec={"key": {"format": "string"}, "value": {"format": "json"}}, output_value={"format": "json"})
    checked = subprocess.run([sys.executable, "-m", "processor", "check", "-c", str(p.config)], cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stderr
    proc = processors(p.config, "i1")
    wait_for(lambda: "assigned " in proc.log() or not proc.running(), 60, "the processor running")
    began = time.monotonic()
    assert proc.terminate(STOP_SECONDS + 10) == 0, proc.log()[-3000:]
    print(f"\nstopped in {time.monotonic() - began:.1f}s with the transform's thread still running")
