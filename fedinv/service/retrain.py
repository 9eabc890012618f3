"""Fine-tuning a decision service's policy on what it recorded (docs/service.md,
"Continual learning"): ``POST /v1/retrain`` (or the Analytics Monitor's ``retrain``
alert on the recorded demand) starts :class:`RetrainJob`, a background process
(``python -m fedinv.service.retrain SPEC.json``) that loads the organization's local
scenario from its private data folder
(:func:`fedinv.federation.private_data.load_org_scenario`: its nodes, its recorded
demand bootstrapped, the lead times it observed) and re-tunes the classical policy's
parameters on it (:func:`fedinv.policies.tuning.tune`, per node). When the process
ends, the service swaps the new parameters in through its swap path (an entry of
``kind = "swap"`` in the chain); the service keeps deciding meanwhile.

Learned policies (DQN, HDPO) are refused here: their fine-tuning on one organization's
folder is the federated client's local round (:mod:`fedinv.federation.hdpo_task`), not
wired to the service yet (docs/service.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fedinv.files import atomic_write


@dataclass(frozen=True)
class RetrainOptions:
    """How a re-tuning runs: ``replications`` bootstrapped training replications of
    ``days`` days each (None: the days recorded), ``sweeps`` coordinate sweeps;
    ``window``: train on the last ``window`` recorded days only (None: all of them)."""

    replications: int = 8
    days: int | None = None
    sweeps: int = 1
    min_days: int = 14
    window: int | None = None

    def __post_init__(self) -> None:
        if self.replications < 1 or self.sweeps < 1 or self.min_days < 1:
            raise ValueError("replications, sweeps and min_days must be at least 1")
        for name in ("days", "window"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1")


@dataclass
class RetrainJob:
    """One background re-tuning and what became of it (``day``: the last day decided
    when it started; ``status``: ``running``, ``swapped``, ``failed``)."""

    job: int
    folder: Path
    trigger: str
    day: int = 0
    started: float = field(default_factory=time.time)
    status: str = "running"
    finished: float | None = None
    result: dict[str, Any] | None = None
    swap: dict[str, Any] | None = None
    error: str | None = None
    pid: int | None = None

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["folder"] = str(self.folder)
        return out

    def start(
        self, spec: dict[str, Any], on_result: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> None:
        """Write the spec, start the process and a thread that waits for it and hands
        its result to ``on_result`` (the swap; its reply is kept)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        spec_path = self.folder / "spec.json"
        text = json.dumps(spec, indent=1)
        atomic_write(spec_path, lambda tmp: tmp.write_text(text))
        err = open(self.folder / "stderr.txt", "w", encoding="utf-8")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "fedinv.service.retrain", str(spec_path)],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        self.pid = proc.pid

        def wait() -> None:
            code = proc.wait()
            err.close()
            try:
                if code != 0:
                    tail = (self.folder / "stderr.txt").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"the retrain process exited {code}: {tail.strip()}")
                self.result = json.loads((self.folder / "result.json").read_text())
                self.swap = on_result(self.result)
                self.status = "swapped"
            except Exception as exc:  # noqa: BLE001 (reported by GET /v1/retrain)
                self.status, self.error = "failed", str(exc)
            self.finished = time.time()

        threading.Thread(target=wait, name=f"retrain-{self.job}", daemon=True).start()


def run_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """The child's work: re-tune ``spec["policy"]`` on the folder's local scenario."""
    from fedinv.federation.private_data import load_org_scenario
    from fedinv.policies.tuning import tune

    scenario = load_org_scenario(spec["data"])
    t0 = time.perf_counter()
    res = tune(
        scenario,
        spec["policy"],
        train_replications=int(spec["replications"]),
        days=spec.get("days"),
        sweeps=int(spec["sweeps"]),
        per="node",
    )
    return {
        "params": res.params,
        "train_cost_per_day": float(res.train_cost_per_day),
        "evaluations": int(res.evaluations),
        "days": int(res.days),
        "seconds": time.perf_counter() - t0,
        "local_scenario": scenario.name,
    }


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    spec_path = Path(args[0])
    spec = json.loads(spec_path.read_text())
    result = run_spec(spec)
    text = json.dumps(result, indent=1)
    atomic_write(spec_path.parent / "result.json", lambda tmp: tmp.write_text(text))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
