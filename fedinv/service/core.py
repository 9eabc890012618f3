"""One organization's decision service, without HTTP (docs/service.md).

:class:`DecisionService` loads the scenario, the policy and the safety layer, and turns
a :class:`~fedinv.service.codec.DecisionRequest` into a reply: it builds the
organization's batch-of-1 ``State`` (:class:`~fedinv.service.codec.Codec`), calls the
same organization decider the simulator's ``--projection per-org`` calls
(:func:`fedinv.hybrid.org_decider`: the policy, ``Projected`` and the restricted
projector), appends the decision to the log and returns the reply with the entry's
hash. The policy's memory is saved with every entry and restored at start.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from fedinv.service.codec import Codec, DecisionRequest, RequestError, digest
from fedinv.service.log import DecisionLog, load_memory, save_memory


class ConflictError(ValueError):
    """A request for a day out of sequence (the policy's memory moves day by day)."""


@dataclass(frozen=True)
class ServiceConfig:
    """What ``fedinv serve`` loads (validated by :func:`load_service`)."""

    scenario: str
    org: str
    policy: str
    params: dict[str, Any] | None = None
    checkpoint: Path | None = None
    mode: str = "hybrid"
    solver: str = "highspy"
    log: Path = Path("decisions.sqlite")
    seed: int | None = None
    projector_options: dict[str, Any] = field(default_factory=dict)
    data: Path | None = None
    record_every: int = 7
    auto_retrain: bool = False
    retrain_cooldown: int = 28
    retrain_window: int | None = None
    sync: str = "full"
    """The log's (and the --data journal's) durability: ``full`` or ``normal``
    (:data:`fedinv.service.log.SYNC_MODES`)."""


def file_digest(path: Path | None) -> str | None:
    """sha256 hex of a file's bytes (None for no file)."""
    if path is None:
        return None
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def policy_info(
    scenario: Any, org: str, prepared: Any, mode: str, solver: str, checkpoint: Path | None
) -> dict[str, Any]:
    """What a service (or a simulation's log) decides with, as JSON: the policy, its
    parameters or checkpoint digest, the mode and solver, the scenario and organization."""
    return {
        "policy": prepared.policy,
        "kind": prepared.kind,
        "params": prepared.params,
        "options": prepared.options,
        "checkpoint": None if checkpoint is None else str(checkpoint),
        "checkpoint_digest": file_digest(checkpoint),
        "mode": mode,
        "solver": solver if mode == "hybrid" else None,
        "scenario": scenario.name,
        "seed": scenario.seed,
        "org": org,
        "projection": "per-org",
    }


def policy_digest(info: dict[str, Any]) -> str:
    """sha256 of :func:`policy_info` without the checkpoint's path (its digest stays)."""
    return digest({k: v for k, v in info.items() if k != "checkpoint"})


class DecisionService:
    """Request -> reply for one organization; thread-safe (one decision at a time)."""

    def __init__(self, config: ServiceConfig):
        from fedinv.model.scenario import load_scenario
        from fedinv.sim.simulator import Simulator

        self.config = config
        scenario = load_scenario(config.scenario)
        if config.seed is not None:
            scenario = replace(scenario, seed=int(config.seed))
        self.scenario = scenario
        sim = Simulator(scenario, days=2)
        self.layout = sim.layout
        self.codec = Codec.for_simulator(sim, config.org)
        self._use(self._build(config.checkpoint))
        self.chain = config.org
        self.log = DecisionLog(config.log, config.sync)
        self._lock = threading.Lock()
        self.last_day: int | None = None
        last = self.log.last(self.chain)
        if last is not None:
            self.last_day = last.day if last.day >= 0 else None
            swapped = self.log.last(self.chain, kind="swap")
            if swapped is not None:  # the chain says which checkpoint decides now
                self._use(self._swapped_in(swapped))
            saved = self.log.memory(self.chain)
            # the memory belongs to the policy that wrote it: another policy or
            # parameters (a restart with other options) start with a fresh memory
            if saved is not None and saved[0] == last.seq:
                if last.policy_digest == self.policy_digest:
                    load_memory(self.decider.policy, saved[1])
        self.recorder = None
        self.retrain_job: Any = None
        self.alerts_seen = -1  # the last day of a monitor alert acted on
        if config.data is not None:  # what it sees, in the private data folder
            from fedinv.service.record import Recorder

            self.recorder = Recorder(
                Path(config.data),
                self.codec,
                scenario,
                config.org,
                config.record_every,
                fsync=config.sync == "full",
            )
        self.started = time.time()

    def _build(
        self, checkpoint: Path | None, params: dict[str, Any] | None = None
    ) -> tuple[Any, Any]:
        """``(prepared, decider)`` of this service's policy with ``checkpoint`` (a
        learned policy) or ``params`` (a classical one; default ``--params``)."""
        from fedinv.hybrid import org_decider
        from fedinv.registry import prepare

        c = self.config
        prepared = prepare(
            c.policy,
            self.scenario,
            self.layout,
            params=c.params if params is None else params,
            checkpoint=checkpoint,
        )
        policy = prepared.factory(self.layout)
        if getattr(policy, "proposes_transfers", False):
            raise ValueError(
                f"checkpoint {checkpoint} proposes lateral transfers (HDPO trained with "
                "--transfers); a decision service releases orders only: serve a checkpoint "
                "trained without transfers"
            )
        decider = org_decider(
            policy,
            c.mode,
            self.layout,
            c.org,
            backend=c.solver,
            outages=self.scenario.outages,
            **c.projector_options,
        )
        return prepared, decider

    def _use(self, built: tuple[Any, Any]) -> None:
        prepared, self.decider = built
        c = self.config
        self.prepared = prepared
        self.checkpoint_digest = file_digest(prepared.checkpoint)
        self.policy_info = policy_info(
            self.scenario, c.org, prepared, c.mode, c.solver, prepared.checkpoint
        )
        self.policy_digest = policy_digest(self.policy_info)

    def _swapped_in(self, entry: Any) -> tuple[Any, Any]:
        if (entry.reply or {}).get("params") is not None:  # a classical policy re-tuned
            return self._build(None, entry.reply["params"])
        path = Path((entry.reply or {}).get("checkpoint", ""))
        if not path.is_file() or file_digest(path) != entry.checkpoint_digest:
            raise ValueError(
                f"the log's entry {entry.seq} swapped in checkpoint {path} (sha256 "
                f"{entry.checkpoint_digest}); that file is missing or changed"
            )
        return self._build(path)

    def swap(self, checkpoint: Path, retrain: dict[str, Any] | None = None) -> dict[str, Any]:
        """Hot swap to ``checkpoint`` (a learned policy of the same algorithm): the new
        policy and layer are built while decisions go on, then swapped in under the
        lock, keeping the policy's memory; the swap is an entry of the chain (``kind =
        "swap"``, no orders; ``retrain``: a fine-tuning's evaluation, in its reply and
        its request digest). Returns the entry as a reply."""
        if self.prepared.kind != "learned":
            raise ValueError(f"policy {self.config.policy!r} has no checkpoint to swap")
        checkpoint = Path(checkpoint)
        if not checkpoint.is_file():
            raise ValueError(f"no checkpoint file {checkpoint}")
        built = self._build(checkpoint)  # outside the lock: decisions continue meanwhile
        what: dict[str, Any] = {"checkpoint": str(checkpoint.resolve())}
        if retrain is not None:
            what["retrain"] = retrain
        return self._swap_to(built, what)

    def swap_params(self, params: dict[str, Any]) -> dict[str, Any]:
        """Hot swap a classical policy to ``params`` (merged over the current ones, per
        node), as :meth:`swap` does for a checkpoint; the entry's reply holds them."""
        if self.prepared.kind != "classical":
            raise ValueError(f"policy {self.config.policy!r} takes no parameters to swap")
        merged = {k: dict(v) if isinstance(v, dict) else v for k, v in self.prepared.params.items()}
        for key, value in params.items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key].update(value)
            else:
                merged[key] = value
        built = self._build(None, merged)
        return self._swap_to(built, {"params": built[0].params})

    def _swap_to(self, built: tuple[Any, Any], what: dict[str, Any]) -> dict[str, Any]:
        """Swap ``built`` in under the lock (the policy's memory carried over) and append
        the ``swap`` entry; ``what`` (the checkpoint or the parameters) goes in its reply."""
        with self._lock:
            memory = save_memory(self.decider.policy)
            if memory is not None:
                load_memory(built[1].policy, memory)
            old, old_policy = self.checkpoint_digest, self.policy_digest
            self._use(built)
            entry = self.log.append(
                self.chain,
                kind="swap",
                org=self.config.org,
                day=-1 if self.last_day is None else self.last_day,
                request_digest=digest(
                    {"swap": old, "to": self.checkpoint_digest}
                    | ({"retrain": what["retrain"]} if "retrain" in what else {})
                    if "checkpoint" in what
                    else {"swap": old_policy, "to": self.policy_digest}
                ),
                released={},
                policy_digest=self.policy_digest,
                checkpoint_digest=self.checkpoint_digest,
                reply={
                    "swap": True,
                    **what,
                    "previous_checkpoint_digest": old,
                    "previous_policy_digest": old_policy,
                    "checkpoint_digest": self.checkpoint_digest,
                    "policy_digest": self.policy_digest,
                },
                memory=memory,
            )
        return entry.reply or {}

    def decide(self, req: DecisionRequest, body: Any = None) -> dict[str, Any]:
        """The reply to ``req`` as a dict (see :meth:`decide_json`)."""
        return json.loads(self.decide_json(req, body))

    def decide_json(self, req: DecisionRequest, body: Any = None) -> str:
        """The reply to ``req`` (RequestError: bad fields; ConflictError: a day out of
        sequence). ``body``: the JSON the client sent (default ``req`` dumped); the
        request digest is the sha256 of its canonical JSON. A request equal to the last
        one logged gets that entry's reply (a retry after a lost reply)."""
        request_digest = digest(req.model_dump(mode="json") if body is None else body)
        with self._lock:
            if self.last_day is not None and req.day != self.last_day + 1:
                last = self.log.last(self.chain, kind="decision")
                if last is not None and last.request_digest == request_digest and last.reply_json:
                    # a retry of an acknowledged (or unsent) decision; its journal line
                    # may have been lost with the reply
                    rec = self.recorder
                    if rec is not None and (not rec.days or rec.days[-1].day == req.day - 1):
                        rec.record(req, self._body(req, body), last.released)
                    return last.reply_json
                raise ConflictError(
                    f"day {req.day} out of sequence: the last decision was for day "
                    f"{self.last_day}; send day {self.last_day + 1}"
                )
            state = self.codec.state(req)
            t0 = time.perf_counter()
            decision = self.decider.act(state)
            solve_ms = (time.perf_counter() - t0) * 1e3
            reply = self.reply(req, decision, solve_ms)
            entry = self.log.append(
                self.chain,
                kind="decision",
                org=self.config.org,
                day=req.day,
                request_digest=request_digest,
                released=reply["released"],
                policy_digest=self.policy_digest,
                checkpoint_digest=self.checkpoint_digest,
                reply=reply,
                memory=save_memory(self.decider.policy),
            )
            self.last_day = req.day
            check = False
            if self.recorder is not None:
                self.recorder.record(req, self._body(req, body), reply["released"])
                every = max(self.config.record_every, 1)
                check = self.config.auto_retrain and self.recorder.completed % every == 0
            text = entry.reply_json or json.dumps(reply)
        if check:  # outside the lock: a retrain flushes the folder under it
            self.monitor()
        return text

    def monitor(self) -> dict[str, Any] | None:
        """Run the Analytics Monitor's demand detectors on the recorded days; a
        ``retrain`` alert newer than the last one acted on starts a retrain (when none
        is running and enough days are recorded). Returns the job started, or None."""
        if self.recorder is None:
            return None
        job, day = self.retrain_job, self.last_day or 0
        if job is not None and day - job.day < self.config.retrain_cooldown:
            return None  # the alerts wait: a retrain at most every retrain_cooldown days
        alerts = [a for a in self.recorder.retrain_alerts() if a["day"] > self.alerts_seen]
        if not alerts:
            return None
        a = alerts[-1]
        self.alerts_seen = max(x["day"] for x in alerts)
        where = a["node"] or a["organization"]
        try:
            return self.retrain(trigger=f"monitor: {a['metric']} at {where} on day {a['day']}")
        except ValueError:  # running already, or too few days: the next alert will do
            return None

    @staticmethod
    def _body(req: DecisionRequest, body: Any) -> Any:
        return req.model_dump(mode="json", exclude_unset=True) if body is None else body

    def reply(self, req: DecisionRequest, decision: Any, solve_ms: float) -> dict[str, Any]:
        info = decision.info or {}
        released = self.codec.orders(np.asarray(decision.orders)[0])
        proposed_orders = info.get("proposed")
        relaxations = [
            {
                "kind": r.kind,
                "target": r.target,
                "amount": float(r.amount),
                "unit": r.unit,
                "reason": r.reason,
            }
            for r in info.get("relaxation_log", ())
        ]
        return {
            "org": self.config.org,
            "day": req.day,
            "proposed": self.codec.orders(np.asarray(proposed_orders)[0])
            if proposed_orders is not None
            else released,
            "released": released,
            "relaxations": relaxations,
            "projection_l1": float(np.asarray(info.get("projection_l1", [0.0]))[0]),
            "policy_digest": self.policy_digest,
            "checkpoint_digest": self.checkpoint_digest,
            "solve_ms": solve_ms,
            "lanes": list(self.codec.own_lane_ids),
        }

    def retrain(self, options: Any = None, trigger: str = "request") -> dict[str, Any]:
        """Start re-tuning the policy on the recorded data in a background process
        (:mod:`fedinv.service.retrain`): a classical policy's parameters, or an HDPO
        checkpoint fine-tuned from its current weights; when it ends the result is
        swapped in (a ``swap`` entry; an HDPO result only if no worse on held-out
        replications). ValueError: no ``--data``, too few days recorded, a DQN, or a
        retrain already running."""
        from fedinv.service.retrain import RetrainJob, RetrainOptions

        opts = options if options is not None else RetrainOptions(window=self.config.retrain_window)
        rec = self.recorder
        if rec is None:
            raise ValueError("the service records nothing: start it with --data DIR")
        learned = self.prepared.kind != "classical"
        if learned and self.config.policy != "hdpo":
            raise ValueError(
                f"retraining a {self.config.policy} policy in the service is not built (HDPO "
                "checkpoints are fine-tuned): train it with the federation on the folder "
                "and POST /v1/checkpoint (docs/service.md)"
            )
        if learned and opts.days is not None:
            raise ValueError("days is a classical re-tuning's: HDPO trains on the days recorded")
        with self._lock:
            if self.retrain_job is not None and self.retrain_job.status == "running":
                raise ValueError(f"retrain job {self.retrain_job.job} is still running")
            if rec.completed < opts.min_days:
                raise ValueError(
                    f"{rec.completed} days recorded; a retrain needs at least {opts.min_days}"
                )
            snap = rec.snapshot()  # the folder's days, written outside the lock
            window = rec.snapshot(opts.window) if opts.window is not None else None
            number = 1 if self.retrain_job is None else self.retrain_job.job + 1
            job = RetrainJob(
                number,
                rec.folder / "retrain" / f"job-{number:04d}",
                trigger,
                day=self.last_day or 0,
            )
            self.retrain_job = job
            recorded = rec.completed
            checkpoint = self.prepared.checkpoint  # the one deciding now
        try:
            rec.write(snap)
            data = rec.folder
            if window is not None:  # the last days only, in the job's own folder
                data = rec.write(window, job.folder / "data")
        except Exception as exc:
            job.status, job.error = "failed", f"writing the folder: {exc}"
            raise
        spec: dict[str, Any] = {
            "data": str(data),
            "window": opts.window,
            "policy": self.config.policy,
            "replications": opts.replications,
            "sweeps": opts.sweeps,
            "recorded_days": recorded,
            "last_day": job.day,
        }
        if learned:
            spec.update(
                kind="hdpo",
                scenario=self.config.scenario,
                checkpoint=str(Path(checkpoint).resolve()),
                iterations=opts.iterations,
                eval_replications=opts.eval_replications,
                learning_rate=opts.learning_rate,
                out=str((job.folder / "checkpoint.pt").resolve()),
                state_dir=str(job.folder / "learner"),
            )
            job.start(spec, self._take_fine_tuned)
        else:
            spec["days"] = opts.days or min(recorded, opts.window or recorded)
            job.start(spec, lambda result: self.swap_params(result["params"]))
        return job.as_dict()

    def _take_fine_tuned(self, result: dict[str, Any]) -> dict[str, Any] | None:
        """Swap in a fine-tuned HDPO checkpoint that was no worse (its evaluation goes in
        the swap entry); None when the current weights were kept."""
        if not result.get("accepted"):
            return None
        keys = ("current_cost_per_day", "new_cost_per_day", "eval_replications", "eval_days")
        evaluation = {k: result[k] for k in (*keys, "iterations", "local_scenario")}
        return self.swap(Path(result["checkpoint"]), retrain=evaluation)

    def close(self) -> None:
        """Write the recorded days' files (``--data``) and close the journal."""
        if self.recorder is not None:
            with self._lock:
                self.recorder.close()
                self.recorder = None

    def health(self) -> dict[str, Any]:
        with self._lock:
            seq, head = self.log.head(self.chain)
        return {
            "status": "ok",
            "org": self.config.org,
            "entries": seq,
            "head": head,
            "last_day": self.last_day,
            "uptime_s": time.time() - self.started,
        }


__all__ = ["ConflictError", "DecisionService", "RequestError", "ServiceConfig", "file_digest"]
