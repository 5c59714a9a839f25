"""Chaos: process a stream while killing, stopping, restarting and rescaling everything.

    python -m tests.chaos.harness --records 1000000 --seed 7 --faults 40 [--group-protocol consumer] [--stateful]

Produces N orders (1% poison) to a private broker, runs 1 to 3 processor instances and
injects faults at random moments: kill -9 of an instance, SIGTERM, a hard restart (kill -9)
of the broker, an instance joining or leaving. Then an independent read_committed reader
checks that every good order has exactly one output and every poison order exactly one
dead-letter record, and that the committed offsets reach the end. Prints a summary.
With `--feed-seconds S` the input is produced over S seconds instead of before the start.
With `--stateful` the input is N keyed records over 60 keys and the transform a per-key
count in a state store: each key's outputs must read 1, 2, 3, ... to its number of inputs.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from examples.orders import make_samples
from localkafka import LocalBroker
from localkafka.clients import committed_offsets, create_topics, end_offsets, wait_for
from tests.counts import expected_counts, keyed, verify_counts
from tests.feeder import Feeder
from tests.processes import ProcessorProcess, write_config
from tests.verify import verify

FAULTS = ("kill", "sigterm", "broker", "join", "leave")


@dataclass
class Summary:
    records: int
    protocol: str = "classic"
    stateful: bool = False
    faults: Counter = field(default_factory=Counter)
    lost: int = 0
    duplicated: int = 0
    unexpected: int = 0
    dead_lettered: int = 0
    outputs: int = 0
    bad_exits: list[str] = field(default_factory=list)
    offsets_at_end: bool = False
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.unexpected or self.bad_exits) \
            and self.offsets_at_end

    def __str__(self) -> str:
        faults = ", ".join(f"{n} {k}" for k, n in sorted(self.faults.items())) or "none"
        return (f"chaos ({self.protocol} protocol{', stateful' if self.stateful else ''}): "
                f"{self.records} records, faults: {faults}; "
                f"outputs {self.outputs}, dead-lettered {self.dead_lettered}, lost {self.lost}, duplicated "
                f"{self.duplicated}, unexpected {self.unexpected}, offsets at end "
                f"{self.offsets_at_end}, bad exits {self.bad_exits or 'none'}; "
                f"{self.elapsed:.0f}s -> {'OK' if self.ok else 'FAILED'}")


class Chaos:
    def __init__(self, workdir: Path, records: int, seed: int, faults: int, max_instances: int = 3,
                 feed_seconds: float = 0.0, group_protocol: str = "classic", stateful: bool = False):
        self.workdir, self.records, self.faults_budget = workdir, records, faults
        self.stateful = stateful
        self.group_protocol = group_protocol
        self.feed_seconds = feed_seconds  # 0: the input is all there before the first instance
        self.rng = random.Random(seed)
        self.max_instances = max_instances
        self.broker = LocalBroker(workdir / "kafka")
        self.summary = Summary(records, group_protocol, stateful)
        self.running: dict[str, ProcessorProcess] = {}
        self.seed = seed
        self.next_id = 0

    def run(self) -> Summary:
        began = time.monotonic()
        bootstrap = self.broker.start()
        try:
            self.topics = [f"chaos-{name}" for name in ("in", "out", "dlq")]
            create_topics(bootstrap, self.topics, partitions=6)
            stateful = {"transform": "tests.transforms:count_per_key",
                        "input_codec": {"key": {"format": "string"}, "value": {"format": "json"}},
                        "output_value": {"format": "json"},
                        "state": {"dir": str(self.workdir / "state"), "stores": {"counts": {}}}}
            self.config = write_config(self.workdir / "config.yaml", bootstrap,
                                       input_topic=self.topics[0], output_topic=self.topics[1],
                                       dead_letter_topic=self.topics[2], app_id="chaos",
                                       kafka={"group_protocol": self.group_protocol},
                                       **(stateful if self.stateful else {}))
            samples = (keyed(0, self.records) if self.stateful
                       else make_samples(self.records, poison_per_kind=0.0025, seed=self.seed))
            feeder = Feeder(bootstrap, self.topics[0], samples, self.feed_seconds)
            self._start(self._new_id())
            for _ in range(self.faults_budget):
                if feeder.done() and self._all_committed():
                    break
                wait_for(lambda: self.rng.random() < 0.1, 30, "a random moment", interval=0.1)
                self._inject(self.rng.choice(FAULTS))
            if not self.running:
                self._start(self._new_id())
            feeder.finish()
            wait_for(self._all_committed, 600, "every input committed", interval=1.0)
            for name in list(self.running):
                self._stop(name, leaving=True)
            s = self.summary
            if self.stateful:
                verdict = verify_counts(bootstrap, self.topics[1], expected_counts(self.records))
                s.outputs = verdict.outputs
            else:
                verdict = verify(bootstrap, samples, self.topics[1], self.topics[2])
                s.outputs, s.dead_lettered = len(verdict.outputs), len(verdict.dead_letters)
            s.lost, s.duplicated, s.unexpected = (len(verdict.missing), len(verdict.duplicated),
                                                  len(verdict.unexpected))
            s.offsets_at_end = self._all_committed()
        finally:
            for proc in self.running.values():
                proc.kill()
            self.broker.stop()
        self.summary.elapsed = time.monotonic() - began
        return self.summary

    def _all_committed(self) -> bool:
        bootstrap = self.broker.bootstrap
        return committed_offsets(bootstrap, "chaos", self.topics[0]) == end_offsets(bootstrap, self.topics[0])

    def _new_id(self) -> str:
        self.next_id += 1
        return f"i{self.next_id}"

    def _start(self, name: str) -> None:
        log = self.workdir / f"processor-{name}.log"
        self.running[name] = ProcessorProcess(self.config, name, log).start()

    def _stop(self, name: str, leaving: bool) -> None:
        proc = self.running.pop(name)
        code = proc.terminate(timeout=90)
        if code != 0:
            self.summary.bad_exits.append(f"{name} exited {code} on SIGTERM")
        if not leaving:
            self._start(name)

    def _inject(self, kind: str) -> None:
        for name, proc in list(self.running.items()):  # an instance that died by itself
            if not proc.running():
                self.summary.bad_exits.append(f"{name} exited {proc.proc.returncode} by itself")
                del self.running[name]
        if not self.running:
            self._start(self._new_id())
        name = self.rng.choice(sorted(self.running))
        if kind == "kill":
            self.running.pop(name).kill()
            self._start(name)  # the same instance id: it fences its zombie
        elif kind == "sigterm":
            self._stop(name, leaving=False)
        elif kind == "broker":
            self.broker.restart(hard=True)
        elif kind == "join" and len(self.running) < self.max_instances:
            self._start(self._new_id())
        elif kind == "leave" and len(self.running) > 1:
            self._stop(name, leaving=True)
        else:
            return
        self.summary.faults[kind] += 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--faults", type=int, default=40)
    parser.add_argument("--feed-seconds", type=float, default=0.0,
                        help="spread producing the input over this long (default: all before the start)")
    parser.add_argument("--group-protocol", choices=["classic", "consumer"], default="classic")
    parser.add_argument("--stateful", action="store_true", help="a per-key count in a state store")
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="chaos-"))
    summary = Chaos(workdir, args.records, args.seed, args.faults,
                    feed_seconds=args.feed_seconds, group_protocol=args.group_protocol,
                    stateful=args.stateful).run()
    print(summary)
    print(f"logs in {workdir}")
    return 0 if summary.ok else 1


if __name__ == "__main__":
    sys.exit(main())
