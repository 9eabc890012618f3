"""Flower ServerApp: aggregation, a checkpoint after every round, resume, and a global
evaluation of the aggregated policy on the whole network.

A thin adapter over :mod:`fedinv.federation.task`. The run config (flat hyphenated keys, see
``[tool.flwr.app.config]`` in pyproject.toml) names the scenario, the strategy and the
run folder ``run-dir``; everything the server writes goes there:

  checkpoints/round-NNNN.pt   global weights after round N (the learner's checkpoint format)
  final.pt                    the last round's checkpoint
  rounds.csv, rounds.png      per-round metrics (global cost with its 95% interval,
                              clients' results and failures, train and local metrics)
  summary.json                the run's outcome
  received.jsonl              per round, what each reply carried (record kinds, array
                              shapes, metric names and types; never a value)

If ``run-dir`` already holds checkpoints, the run resumes after the last one.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from flwr.app import Array, ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp

from fedinv.federation.packing import LAYOUT_KEY, PACKED, layout_of, layout_text, pack, unpack
from fedinv.federation.runconfig import SERVER_DEFAULTS
from fedinv.federation.server_step import server_step_of
from fedinv.federation.task import (
    FedConfig,
    default_reward_scale,
    global_evaluation,
    initial_arrays,
    load_global_checkpoint,
    save_global_checkpoint,
)
from fedinv.files import atomic_write
from fedinv.model.scenario import load_scenario
from server.grid import PromptGrid
from server.strategy import make_strategy, with_differential_privacy

app = ServerApp()


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint of the last finished round in ``run_dir``, if any."""
    found = sorted((run_dir / "checkpoints").glob("round-*.pt"))
    return found[-1] if found else None


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run (or resume) the federated training described by the run config."""
    run = {**SERVER_DEFAULTS, **context.run_config}  # a bare config gets the documented defaults
    cfg = FedConfig.from_flat(run)
    run_dir = Path(str(run["run-dir"]))
    run_dir.mkdir(parents=True, exist_ok=True)
    scenario = load_scenario(cfg.scenario)
    data = Path(str(run["data-dir"]))
    # plain `flwr run .`: make the data (deployed runs pass "": the nodes have their own)
    if str(run["data-dir"]) and (not data.is_dir() or not any(data.iterdir())):
        from fedinv.federation.private_data import export_private_data

        export_private_data(scenario, data)
    if cfg.reward_scale is None:
        cfg.reward_scale = default_reward_scale(scenario, cfg)
    last = latest_checkpoint(run_dir)
    if last is not None:
        weights, offset = load_global_checkpoint(last, cfg.algo)
    else:
        weights, offset = initial_arrays(cfg, scenario), 0
    forget_after(run_dir, offset)  # rounds a killed run wrote rows for but no checkpoint
    remaining = cfg.rounds - offset
    if remaining <= 0:
        _write_summary(run_dir, cfg, offset, "already complete")
        return
    strategy = make_strategy(
        cfg.strategy,
        proximal_mu=cfg.proximal_mu,
        fraction_train=float(run["fraction-train"]),
        fraction_evaluate=float(run["fraction-evaluate"]),
        min_train_nodes=int(run["min-train-nodes"]),
        min_evaluate_nodes=int(run["min-evaluate-nodes"]),
        min_available_nodes=int(run["min-available-nodes"]),
    )
    strategy.eval_in_train = bool(run["eval-in-train"])
    strategy.server_step = server_step_of(
        cfg.server_step, cfg.acceptance, strategy.replies_carry_eval
    )
    strategy.last_round = remaining
    runner = strategy
    noise = float(run["dp-noise-multiplier"])
    if noise > 0:  # optional differential privacy (docs/federation.md)
        runner = with_differential_privacy(
            strategy,
            noise,
            float(run["dp-clipping-norm"]),
            int(run["dp-sampled-clients"]) or _organizations(run),
        )
    layout = layout_of(weights)  # the weights cross the wire packed in one array
    strategy.layout = layout
    shared = {
        "round-offset": offset,
        "reward-scale": float(cfg.reward_scale),
        LAYOUT_KEY: layout_text(layout),
    }
    if cfg.algo == "hdpo" and cfg.client_base == "server":  # the base is the global model's
        from fedinv.federation.hdpo_task import base_message

        shared["base"] = base_message(scenario, cfg)
    started = time.perf_counter()

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        if server_round == 0:
            return None  # the starting weights were evaluated when they were made
        global_round = offset + server_round
        named = unpack(arrays[PACKED].numpy(), layout)
        metrics = global_evaluation(scenario, named, cfg)
        log = strategy.round_log.get(server_round, {})
        row = {"round": global_round, **metrics, **log, "wall_s": time.perf_counter() - started}
        earlier = strategy.local_eval.get(server_round - 1)
        if earlier and global_round > 1:  # a fat round: the local cost of the round before
            _update_row(run_dir / "rounds.csv", global_round - 1, earlier)
        # the round's row and audit lines first, its checkpoint last: a run killed in
        # between resumes before this round (its rows are forgotten then, see below), so
        # a checkpoint's round always has its row
        _append_row(run_dir / "rounds.csv", row)
        with (run_dir / "received.jsonl").open("a") as audit:
            for reply in strategy.received.get(server_round, []):
                audit.write(json.dumps({"round": global_round, **reply}) + "\n")
        ckpt = save_global_checkpoint(
            run_dir / "checkpoints" / f"round-{global_round:04d}.pt",
            scenario,
            named,
            cfg,
            global_round,
            {k: v for k, v in row.items() if isinstance(v, int | float)},
        )
        atomic_write(run_dir / "final.pt", lambda tmp: shutil.copyfile(ckpt, tmp))
        _plot(run_dir)
        return MetricRecord(metrics)

    runner.start(
        grid=PromptGrid(grid, float(run["pull-interval"])),
        initial_arrays=ArrayRecord({PACKED: Array(pack(weights, layout))}),
        num_rounds=remaining,
        timeout=float(run["round-timeout"]),
        train_config=ConfigRecord(dict(shared)),
        evaluate_config=ConfigRecord(dict(shared)),
        evaluate_fn=evaluate,
    )
    _write_summary(run_dir, cfg, cfg.rounds, "finished")


def _organizations(run) -> int:
    """Organizations in the simulation's data folder (the clients sampled each round)."""
    root = Path(str(run.get("data-dir", "")))
    found = (
        [p for p in root.iterdir() if (p / "scenario.toml").is_file()]
        if str(run.get("data-dir", "")) and root.is_dir()
        else []
    )
    return max(len(found), int(run["min-train-nodes"]))


def forget_after(run_dir: Path, last: int) -> None:
    """Drop the rows of ``rounds.csv`` and the lines of ``received.jsonl`` of rounds after
    ``last`` (the round of the newest checkpoint): the resumed run trains them again."""
    import pandas as pd

    rounds = run_dir / "rounds.csv"
    if rounds.is_file():
        frame = pd.read_csv(rounds)
        if (frame["round"] > last).any():
            kept = frame[frame["round"] <= last]
            atomic_write(rounds, lambda tmp: kept.to_csv(tmp, index=False))
    audit = run_dir / "received.jsonl"
    if audit.is_file():
        lines = audit.read_text().splitlines(keepends=True)
        kept_lines = [ln for ln in lines if ln.strip() and json.loads(ln)["round"] <= last]
        if len(kept_lines) != len(lines):
            atomic_write(audit, lambda tmp: tmp.write_text("".join(kept_lines)))


def _append_row(path: Path, row: dict) -> None:
    import pandas as pd

    frame = pd.read_csv(path) if path.is_file() else pd.DataFrame()
    frame = frame[frame["round"] != row["round"]] if len(frame) else frame
    frame = pd.concat([frame, pd.DataFrame([row])], ignore_index=True)
    atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False))


def _update_row(path: Path, server_round: int, values: dict) -> None:
    """Set ``values`` in the row of ``server_round`` of ``rounds.csv`` (if it is there)."""
    import pandas as pd

    if not path.is_file():
        return
    frame = pd.read_csv(path)
    rows = frame["round"] == server_round
    if not rows.any():
        return
    for key, value in values.items():
        frame.loc[rows, key] = value
    atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False))


def _plot(run_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    frame = pd.read_csv(run_dir / "rounds.csv")
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.errorbar(
        frame["round"],
        frame["global-cost-per-day"],
        yerr=frame["global-cost-ci95"],
        marker="o",
        capsize=3,
    )
    ax.set_xlabel("round")
    ax.set_ylabel("network cost per day ($)")
    ax.set_title("global policy, validation replications")
    fig.tight_layout()
    try:
        atomic_write(run_dir / "rounds.png", lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    finally:
        plt.close(fig)


def _write_summary(run_dir: Path, cfg: FedConfig, rounds: int, status: str) -> None:
    import dataclasses

    summary = {"status": status, "rounds": rounds, "config": dataclasses.asdict(cfg)}
    text = json.dumps(summary, indent=2, default=str)
    atomic_write(run_dir / "summary.json", lambda tmp: tmp.write_text(text))
