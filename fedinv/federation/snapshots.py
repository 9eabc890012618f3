"""A client's state, one folder per finished round: ``STATE_DIR/ORG/round-NNNN/``, made
complete under a temporary name before it is renamed into place, the newest few kept.
Shared by the DQN's and HDPO's local trainers (:mod:`fedinv.federation.task`,
:mod:`fedinv.federation.hdpo_task`)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path


class RoundSnapshots:
    """Round folders below ``state_dir`` (set by the subclass); a round counts as saved
    when its folder holds ``learner.pt``."""

    state_dir: Path

    def _snapshot(self, server_round: int) -> Path:
        return self.state_dir / f"round-{server_round:04d}"

    def saved_rounds(self) -> list[int]:
        """Rounds whose end state is on disk."""
        if not self.state_dir.is_dir():
            return []
        return sorted(
            int(p.name.split("-")[1])
            for p in self.state_dir.glob("round-*")
            if (p / "learner.pt").is_file()
        )

    def _last_before(self, server_round: int) -> int:
        """The newest saved round before ``server_round`` (0 if none)."""
        earlier = [r for r in self.saved_rounds() if r < server_round]
        return earlier[-1] if earlier else 0

    def _write_snapshot(
        self, server_round: int, write: Callable[[Path], None], keep: int = 2
    ) -> None:
        """``write(folder)`` the state of the end of ``server_round`` into a fresh folder,
        rename it into place, and keep the last ``keep`` rounds."""
        final = self._snapshot(server_round)
        work = final.with_name(final.name + ".tmp")
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        write(work)
        shutil.rmtree(final, ignore_errors=True)
        work.rename(final)
        for old in self.saved_rounds()[:-keep]:
            shutil.rmtree(self._snapshot(old), ignore_errors=True)
