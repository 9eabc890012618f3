"""The federated-training options of ``fedinv federate`` and ``fedinv deploy run|local``,
generated from :class:`fedinv.federation.task.FedConfig` (its defaults are the options'
defaults: one source, see :mod:`fedinv.federation.runconfig`)."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedinv.cli.common import COUNT, DAYS, SEED, CliError
from fedinv.federation.runconfig import FEDPROX_MU
from fedinv.federation.server_step import ACCEPTANCE

LAYER_GRADIENTS = ("penalty", "straight-through", "masked")
"""``--layer-gradient`` choices: :data:`fedinv.agents.hdpo.LAYER_GRADIENTS`, restated so
that parsing a command line does not import torch (a test keeps the two equal)."""

if TYPE_CHECKING:
    from fedinv.federation.task import FedConfig

STRATEGIES = ("fedavg", "fedprox")


@dataclass(frozen=True)
class TrainingOption:
    """One command-line option for one FedConfig field."""

    field: str
    flag: str
    metavar: str | None
    help: str
    type: Callable[[str], Any] | None = None
    choices: tuple[str, ...] | None = None


ALGOS = ("dqn", "hdpo")
"""``fedinv.federation.task.ALGOS`` (repeated so that parsing need not import torch; a
test checks they agree)."""

TRAINING_OPTIONS = (
    TrainingOption("scenario", "--scenario", "NAME|FILE", "the whole network"),
    TrainingOption(
        "algo",
        "--algo",
        None,
        "the learner: double DQN or HDPO (pathwise gradients)",
        choices=ALGOS,
    ),
    TrainingOption(
        "local_iterations",
        "--local-iterations",
        "N",
        "HDPO: gradient batches per client and round",
        COUNT,
    ),
    TrainingOption(
        "train_mode",
        "--train-mode",
        None,
        "pure, or trained for the safety layer (hybrid: docs/agents.md)",
        choices=("pure", "hybrid"),
    ),
    TrainingOption(
        "layer_gradient",
        "--layer-gradient",
        None,
        "HDPO with --train-mode hybrid: penalty (the day runs the proposals, violations "
        "priced in the loss), straight-through or masked (the day runs the orders the "
        "layer releases; docs/agents.md)",
        choices=LAYER_GRADIENTS,
    ),
    TrainingOption(
        "transfers",
        "--transfers",
        "on|off",
        "HDPO: also propose lateral transfers between an organization's own linked nodes "
        "(one pressure output per node; docs/roles.md)",
        lambda text: _switch(text, "--transfers"),
    ),
    TrainingOption(
        "client_base",
        "--client-base",
        None,
        "HDPO: each organization's base: the server's tuned coordinates on its own nodes, "
        "or tuned locally",
        choices=("server", "local"),
    ),
    TrainingOption(
        "hdpo_learning_rate",
        "--hdpo-learning-rate",
        "LR",
        "HDPO: each client's Adam step size at the first batch (it moves linearly to "
        "the learner's final 1e-3 by the last)",
        float,
    ),
    TrainingOption(
        "window",
        "--window",
        "DAYS",
        "HDPO: days of one gradient step (0: four echelon lead times; the horizon, e.g. "
        "365: one step per batch over the whole year, see docs/agents.md)",
        int,
    ),
    TrainingOption("rounds", "--rounds", "R", "server rounds", COUNT),
    TrainingOption("strategy", "--strategy", None, "aggregation", choices=STRATEGIES),
    TrainingOption(
        "proximal_mu",
        "--mu",
        "MU",
        f"FedProx proximal weight (only with --strategy fedprox; default {FEDPROX_MU})",
        float,
    ),
    TrainingOption(
        "server_step",
        "--server-step",
        "ETA",
        "the server's step size in (0, 1]: next global = sent + ETA (average - sent)",
        float,
    ),
    TrainingOption(
        "acceptance",
        "--acceptance",
        None,
        "server-side acceptance rule: off, or local-cost (keep the last accepted global "
        "weights and halve the step when the organizations' summed local cost of the "
        "weights they received rose)",
        choices=ACCEPTANCE,
    ),
    TrainingOption(
        "local_steps", "--local-steps", "N", "days of local training per client and round", COUNT
    ),
    TrainingOption(
        "replications", "--replications", "B", "training replications per client", COUNT
    ),
    TrainingOption(
        "eval_replications",
        "--eval-replications",
        "R",
        "held-out replications of each round's evaluation",
        COUNT,
    ),
    TrainingOption("eval_days", "--eval-days", "N", "days of an evaluation run", DAYS),
    TrainingOption(
        "seed", "--seed", "S", "seed of initialization, exploration and minibatches", SEED
    ),
)
"""The FedConfig fields the command line sets (the others keep FedConfig's defaults)."""


def _switch(text: str, flag: str) -> bool:
    """``on``/``off`` (also true/false, yes/no, 1/0) as a bool."""
    value = text.strip().lower()
    if value in ("on", "true", "yes", "1"):
        return True
    if value in ("off", "false", "no", "0"):
        return False
    raise argparse.ArgumentTypeError(f"{flag}: expected on or off, got {text!r}")


class _FedConfigDefaults(argparse.HelpFormatter):
    """Help that shows FedConfig's default of each training option, read only when help
    is printed (FedConfig's module imports torch, which parsing should not)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help
        if action.dest in _FIELDS and text is not None and action.dest != "proximal_mu":
            from fedinv.federation.task import FedConfig

            default = getattr(FedConfig(), action.dest)
            if isinstance(default, bool):
                default = "on" if default else "off"
            text = f"{text} (default {default})"
        return text


_FIELDS = frozenset(o.field for o in TRAINING_OPTIONS)
"""Destinations of the training options (each the FedConfig field of its name)."""


def add_training_options(p: argparse.ArgumentParser) -> None:
    """Add :data:`TRAINING_OPTIONS` to ``p``. An option not given is None and takes
    FedConfig's default in :func:`fed_config` (``--help`` shows it)."""
    p.formatter_class = _FedConfigDefaults
    for o in TRAINING_OPTIONS:
        kwargs: dict[str, Any] = {"metavar": o.metavar, "help": o.help}
        if o.type is not None:
            kwargs["type"] = o.type
        if o.choices is not None:
            kwargs["choices"] = o.choices
        p.add_argument(o.flag, dest=o.field, **kwargs)


def fed_config(args: argparse.Namespace) -> FedConfig:
    """The FedConfig of the parsed :data:`TRAINING_OPTIONS`; the scenario is loaded (a
    bad name fails here, before Flower starts) and a file given by its absolute path.
    ``--mu`` without ``--strategy fedprox`` is refused (it would do nothing)."""
    from fedinv.federation.task import FedConfig
    from fedinv.model.scenario import load_scenario

    defaults = FedConfig()
    values = {
        o.field: getattr(defaults, o.field)
        if getattr(args, o.field) is None
        else getattr(args, o.field)
        for o in TRAINING_OPTIONS
    }
    strategy = values["strategy"]
    if args.proximal_mu is not None and strategy != "fedprox":
        raise CliError("--mu does nothing without --strategy fedprox (FedAvg has no proximal term)")
    scenario = load_scenario(values["scenario"])
    if values["transfers"]:  # before any Flower process starts
        from fedinv.agents.hdpo import check_transfers

        check_transfers(True, scenario)
    source = scenario.source
    values["scenario"] = (
        source.removeprefix("builtin:")
        if source.startswith("builtin:")
        else str(Path(values["scenario"]).resolve())
    )
    if strategy == "fedprox":
        values["proximal_mu"] = FEDPROX_MU if args.proximal_mu is None else args.proximal_mu
    else:
        values["proximal_mu"] = defaults.proximal_mu
    try:
        return dataclasses.replace(defaults, **values)
    except ValueError as exc:  # FedConfig's own checks (e.g. --train-mode hybrid --algo dqn)
        raise CliError(str(exc)) from None


ROUND_COLUMNS = (
    "round",
    "global-cost-per-day",
    "global-cost-ci95",
    "results",
    "failures",
    "no_reply",
    "local-cost-per-day",
    "wall_s",
)
"""The columns of ``rounds.csv`` a finished run prints (those present)."""


def print_rounds(rounds_csv: Path, skip: tuple[str, ...] = ()) -> bool:
    """Print the :data:`ROUND_COLUMNS` of a run's ``rounds.csv`` (less ``skip``);
    False if there is no such file (yet)."""
    import pandas as pd

    if not rounds_csv.is_file():
        return False
    rounds = pd.read_csv(rounds_csv)
    cols = [c for c in ROUND_COLUMNS if c in rounds and c not in skip]
    print(rounds[cols].to_string(index=False))
    return True
