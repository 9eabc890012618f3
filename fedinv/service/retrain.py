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

An HDPO policy is fine-tuned instead (:func:`fine_tune_hdpo`): from the service's
current checkpoint, one local round of the federated client's training on the folder
(:class:`fedinv.federation.hdpo_task.HDPOLocalTrainer` on the checkpoint's own base, the
one the service decides on, with the parameters of the organization's nodes;
``iterations`` pathwise-gradient batches of fresh replications), then both the
current and the new weights are evaluated on held-out replications of the same local
scenario; the new checkpoint is written, and swapped in, only if it is no worse. A DQN
is refused (docs/service.md).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

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
    iterations: int = 4
    """HDPO: gradient batches of the fine-tuning (each ``replications`` replications)."""
    eval_replications: int = 8
    """HDPO: held-out replications on which the new weights must be no worse."""
    learning_rate: float = 1e-3
    """HDPO: Adam's step size at the first batch (annealed to the learner's final one)."""

    def __post_init__(self) -> None:
        if min(self.replications, self.sweeps, self.min_days, self.iterations) < 1:
            raise ValueError("replications, sweeps, min_days and iterations must be at least 1")
        if self.eval_replications < 1 or not self.learning_rate > 0:
            raise ValueError("eval_replications must be at least 1, learning_rate positive")
        for name in ("days", "window"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1")


@dataclass
class RetrainJob:
    """One background re-tuning and what became of it (``day``: the last day decided
    when it started; ``status``: ``running``, ``swapped``, ``kept`` (an HDPO fine-tuning
    whose weights were worse than the current ones: nothing swapped), ``failed``)."""

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
        self, spec: dict[str, Any], on_result: Callable[[dict[str, Any]], dict[str, Any] | None]
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
                # None: the new weights were worse on the held-out replications
                self.status = "swapped" if self.swap is not None else "kept"
            except Exception as exc:  # noqa: BLE001 (reported by GET /v1/retrain)
                self.status, self.error = "failed", str(exc)
            self.finished = time.time()

        threading.Thread(target=wait, name=f"retrain-{self.job}", daemon=True).start()


def run_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """The child's work: re-tune ``spec["policy"]`` on the folder's local scenario (an
    HDPO checkpoint: :func:`fine_tune_hdpo`)."""
    if spec.get("kind") == "hdpo":
        return fine_tune_hdpo(spec)
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


def fine_tune_config(data: dict[str, Any], spec: dict[str, Any]) -> Any:
    """The :class:`fedinv.federation.config.FedConfig` of one local HDPO round that
    continues checkpoint ``data``: its networks' sizes, seed, training mode and layer
    gradient, the job's batches, replications and step size. ValueError when the
    federated client's trainer cannot continue it (an observation or parameter sharing
    it does not use)."""
    from fedinv.agents.checkpoints import hdpo_args_from_checkpoint
    from fedinv.agents.envs import EnvConfig
    from fedinv.agents.hdpo import Args
    from fedinv.federation.config import FedConfig

    args = hdpo_args_from_checkpoint(data)
    default = Args()
    if args.env.to_dict() != EnvConfig().to_dict():
        raise ValueError(
            "the checkpoint's observation settings differ from the federated client's "
            "(fedinv.federation.hdpo_task trains with the default EnvConfig)"
        )
    if args.share != default.share or args.max_change != default.max_change:
        raise ValueError(
            f"the checkpoint shares parameters per {args.share!r} (max change "
            f"{args.max_change}); the federated client trains share='tier', max change "
            f"{default.max_change}"
        )
    return FedConfig(
        scenario=str(spec["scenario"]),
        algo="hdpo",
        rounds=1,
        local_iterations=int(spec["iterations"]),
        replications=int(spec["replications"]),
        eval_replications=int(spec["eval_replications"]),
        seed=int(args.seed),
        hidden=tuple(data["hidden"]),
        hdpo_learning_rate=float(spec["learning_rate"]),
        train_mode=args.train_mode,
        layer_gradient=args.layer_gradient,
        window=int(args.window or 0),
        tune_replications=int(spec["replications"]),
        tune_sweeps=int(spec["sweeps"]),
    )


def fine_tune_hdpo(spec: dict[str, Any]) -> dict[str, Any]:
    """One local round of the federated client's HDPO training on the recorded folder
    (``spec["data"]``), from the weights of ``spec["checkpoint"]``; then the current and
    the new weights on ``eval_replications`` held-out replications of the same local
    scenario (:func:`fedinv.federation.config.round_replications`, disjoint from the
    training batches' replications), the same local policy (the checkpoint's base on
    the organization's nodes). Writes ``spec["out"]`` -- the checkpoint with the new weights and a
    ``fine_tuned`` record -- only when the new cost per day is no higher ($/day)."""
    import torch

    from fedinv.agents.checkpoints import load_checkpoint, versions
    from fedinv.federation.config import round_replications
    from fedinv.federation.hdpo_task import (
        HDPOLocalTrainer,
        checkpoint_base_message,
        global_arrays_of,
    )

    t0 = time.perf_counter()
    parent = Path(spec["checkpoint"])
    data = load_checkpoint(parent, "hdpo")
    cfg = fine_tune_config(data, spec)
    base = checkpoint_base_message(data, cfg.train_mode)  # the base the service decides on
    trainer = HDPOLocalTrainer(spec["data"], spec["state_dir"], cfg, data["roles"], base)
    current = global_arrays_of(data)
    new, _, metrics = trainer.train_round(current, 1)
    reps, days = cfg.eval_replications, trainer.scenario.horizon_days
    before = trainer.evaluate(current, reps, days)["local-cost-per-day"]
    after = trainer.evaluate(new, reps, days)["local-cost-per-day"]
    accepted = bool(after <= before)
    record = {
        "parent_checkpoint": str(parent),
        "parent_checkpoint_digest": hashlib.sha256(parent.read_bytes()).hexdigest(),
        "data": str(spec["data"]),
        "local_scenario": trainer.scenario.name,
        "local_roles": list(trainer.local_roles),
        "iterations": cfg.local_iterations,
        "replications": cfg.replications,
        "learning_rate": cfg.hdpo_learning_rate,
        "train_cost_per_day": float(metrics["train-cost-per-day"]),
        "eval_replications": round_replications(reps),
        "eval_days": int(days),
        "current_cost_per_day": float(before),
        "new_cost_per_day": float(after),
        "accepted": accepted,
    }
    out = None
    if accepted:
        state = data["policy_state"]
        payload = dict(data)
        payload["policy_state"] = {
            k: torch.as_tensor(np.asarray(new[k]), dtype=v.dtype) for k, v in state.items()
        }
        payload["fine_tuned"] = record
        payload["versions"] = versions()
        out = Path(spec["out"])
        atomic_write(out, lambda tmp: torch.save(payload, tmp))
    return {
        "kind": "hdpo",
        **record,
        "checkpoint": None if out is None else str(out),
        "seconds": time.perf_counter() - t0,
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
