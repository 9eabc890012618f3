"""Simulator throughput benchmark behind ``fedinv bench sim`` (docs/cli.md).

For each batch size ``B`` the benchmark builds a :class:`~fedinv.sim.simulator.Simulator`,
times :meth:`~fedinv.sim.simulator.Simulator.reset` (which draws every random stream of the
batch) apart from the stepping loop (``policy.act`` + ``sim.step``, no DataFrame), and
reports node-days per second ``= B x days x nodes / stepping seconds``. A first, untimed
pass of the same run measures the tracemalloc peak (tracing slows allocation, so it is
kept out of the timed pass) and warms caches.

The target is 1,000,000 node-days per second at batch 256 on one core: the benchmark
sets ``OMP_NUM_THREADS`` / ``OPENBLAS_NUM_THREADS`` / ``MKL_NUM_THREADS`` to 1 (effective
only if set before numpy is imported, which ``fedinv bench`` does), limits BLAS threads
with threadpoolctl when it is installed, and pins the process to one CPU with
``os.sched_setaffinity`` where the platform has it.

This module imports numpy and the simulator lazily, so :func:`pin_single_thread_env`
can run before numpy is loaded.
"""

from __future__ import annotations

import gc
import os
import resource
import sys
import time
import tracemalloc
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

    from fedinv.model.network import Scenario

DEFAULT_SCENARIO = "electronics-5r"
DEFAULT_BATCHES = (1, 256)
DEFAULT_POLICY = "echelon-base-stock"
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
TARGET_NODE_DAYS_PER_S = 1_000_000
TARGET_BATCH = 256
_env_before_numpy: bool | None = None  # set by pin_single_thread_env


def pin_single_thread_env() -> bool:
    """Set the BLAS/OpenMP thread variables to 1; True if numpy was not yet imported
    (so the setting takes effect)."""
    global _env_before_numpy
    for var in THREAD_VARS:
        os.environ[var] = "1"
    _env_before_numpy = "numpy" not in sys.modules
    return _env_before_numpy


@contextmanager
def one_core() -> Iterator[list[str]]:
    """Run the body on one core: BLAS limited to one thread (threadpoolctl, if installed)
    and the process pinned to one CPU (restored afterwards). Yields notes on what was done."""
    notes: list[str] = []
    with ExitStack() as stack:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            if not all(os.environ.get(v) == "1" for v in THREAD_VARS):
                how = "nothing (*_NUM_THREADS are not 1)"
            elif _env_before_numpy is False:
                how = "*_NUM_THREADS=1, set after numpy was imported (may not apply)"
            else:
                how = "*_NUM_THREADS=1"
            notes.append(f"threadpoolctl not installed: BLAS threads limited only by {how}")
        else:
            stack.enter_context(threadpool_limits(limits=1))
            notes.append("threadpoolctl: BLAS limited to 1 thread")
        if hasattr(os, "sched_getaffinity") and hasattr(os, "sched_setaffinity"):
            before = os.sched_getaffinity(0)
            cpu = min(before)
            try:
                os.sched_setaffinity(0, {cpu})
            except OSError as exc:  # pragma: no cover - e.g. restricted containers
                notes.append(f"could not pin to one CPU ({exc})")
            else:
                stack.callback(os.sched_setaffinity, 0, before)
                notes.append(f"pinned to CPU {cpu} (of {len(before)} available)")
        else:  # pragma: no cover - macOS, Windows
            notes.append("no CPU affinity on this platform: not pinned to one core")
        yield notes


def _maxrss_mib() -> float:
    """The process's peak resident set size so far, MiB (a high-water mark)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def bench_sim(
    scenario: Scenario | str = DEFAULT_SCENARIO,
    batches: Sequence[int] = DEFAULT_BATCHES,
    days: int | None = None,
    policy: str = DEFAULT_POLICY,
) -> list[dict[str, Any]]:
    """Time reset and stepping of ``scenario`` (a Scenario or a built-in name / file) under
    ``policy`` (default parameters) for each batch size; ``days`` defaults to the horizon.

    One row per batch size with ``reset_s``, ``step_s``, ``s_per_day``,
    ``node_days_per_s``, ``tracemalloc_peak_mib`` and ``maxrss_mib``."""
    from fedinv.model.scenario import load_scenario
    from fedinv.policies.classical import make_policy
    from fedinv.sim.simulator import Simulator

    if isinstance(scenario, str):
        scenario = load_scenario(scenario)
    rows: list[dict[str, Any]] = []
    with one_core() as notes:
        for batch in batches:
            if int(batch) < 1:
                raise ValueError(f"batch sizes must be >= 1, got {batch}")
            sim = Simulator(scenario, days=days)
            pol = make_policy(policy, sim.layout)

            def run(
                b: int = int(batch), sim: Simulator = sim, pol: Any = pol
            ) -> tuple[float, float]:
                t0 = time.perf_counter()
                state, exo = sim.reset(b)
                t1 = time.perf_counter()
                for _ in range(sim.days):
                    state, _rec = sim.step(state, exo, pol.act(state))
                return t1 - t0, time.perf_counter() - t1

            tracing = tracemalloc.is_tracing()
            if not tracing:
                tracemalloc.start()
            tracemalloc.reset_peak()
            run()  # untimed pass: memory peak, warm-up
            peak = tracemalloc.get_traced_memory()[1]
            if not tracing:
                tracemalloc.stop()
            gc.collect()
            reset_s, step_s = run()
            nodes = sim.layout.num_nodes
            rows.append(
                {
                    "scenario": scenario.name,
                    "policy": policy,
                    "batch": int(batch),
                    "days": sim.days,
                    "nodes": nodes,
                    "reset_s": reset_s,
                    "step_s": step_s,
                    "s_per_day": step_s / sim.days,
                    "node_days_per_s": int(batch) * sim.days * nodes / step_s,
                    "tracemalloc_peak_mib": peak / 2**20,
                    "maxrss_mib": _maxrss_mib(),
                    "one_core": "; ".join(notes),
                }
            )
    return rows


def bench_torch(
    scenario: Scenario | str = DEFAULT_SCENARIO, batch: int = TARGET_BATCH, days: int = 60
) -> dict[str, Any]:
    """Time the day on torch with autograd: installation base-stock with its levels as
    parameters, ``days`` days forward (the exact day, lots straight-through) and the
    backward pass of the total cost, one thread. Node-days per second count both passes."""
    import torch

    from fedinv.model.scenario import load_scenario
    from fedinv.policies.classical import make_policy
    from fedinv.sim.ops import torch_ops
    from fedinv.sim.simulator import Decision, Simulator

    if isinstance(scenario, str):
        scenario = load_scenario(scenario)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with one_core():
            sim = Simulator(scenario, days=days)
            pol = make_policy("base-stock", sim.layout)
            ops = torch_ops()
            state0, exo = sim.reset(int(batch))

            def run() -> tuple[float, float]:
                levels = torch.tensor(pol.levels, requires_grad=True)
                t0 = time.perf_counter()
                state, total = state0.to(ops), torch.zeros((), dtype=torch.float64)
                for _ in range(sim.days):
                    orders = pol.decide(
                        state, lambda pos: torch.clamp(levels - pos, min=0.0), ops=ops
                    )
                    state, rec = sim.step(
                        state, exo, Decision(pol.round_lots(orders, ops)), ops, violations=False
                    )
                    total = total + rec["total_cost"].sum()
                t1 = time.perf_counter()
                total.backward()
                return t1 - t0, time.perf_counter() - t1

            run()  # warm-up
            forward_s, backward_s = run()
    finally:
        torch.set_num_threads(threads)
    nodes = sim.layout.num_nodes
    return {
        "scenario": scenario.name,
        "batch": int(batch),
        "days": sim.days,
        "nodes": nodes,
        "forward_s": forward_s,
        "backward_s": backward_s,
        "node_days_per_s": int(batch) * sim.days * nodes / (forward_s + backward_s),
    }


def print_bench(rows: Sequence[dict[str, Any]], console: Console) -> None:
    """A rich table of :func:`bench_sim` rows, and whether the one-core target is met."""
    from rich.table import Table

    if not rows:
        return
    first = rows[0]
    table = Table(
        title=f"fedinv bench sim: {first['scenario']} ({first['nodes']} nodes, "
        f"{first['days']} days, {first['policy']})"
    )
    for col in (
        "batch",
        "node-days/s",
        "s/day",
        "reset s",
        "step s",
        "tracemalloc MiB",
        "max RSS MiB",
    ):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            str(r["batch"]),
            f"{r['node_days_per_s']:,.0f}",
            f"{r['s_per_day'] * 1e3:.3f} ms",
            f"{r['reset_s']:.3f}",
            f"{r['step_s']:.3f}",
            f"{r['tracemalloc_peak_mib']:.1f}",
            f"{r['maxrss_mib']:.0f}",
        )
    console.print(table)
    console.print(f"one core: {first['one_core']}", markup=False, highlight=False)
    at_target = [r for r in rows if r["batch"] == TARGET_BATCH]
    if at_target:
        rate = at_target[0]["node_days_per_s"]
        verdict = "met" if rate >= TARGET_NODE_DAYS_PER_S else "NOT met"
        console.print(
            f"target {TARGET_NODE_DAYS_PER_S:,} node-days/s at batch {TARGET_BATCH} "
            f"on one core: {verdict} ({rate:,.0f})",
            markup=False,
            highlight=False,
        )
