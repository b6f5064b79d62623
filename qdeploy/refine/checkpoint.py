"""Resumable DQC: the optimiser's whole state in one file, written atomically every few steps.

A long refinement (hundreds of CPU iterations) must survive a killed session: with a checkpoint path,
:func:`qdeploy.refine.dqc.refine_dqc` saves the learnable parameters, Adam's moments, the learning-rate
schedule, the batch order's random state, the step and the loss curve; a later run with the same path,
the same QDQ model and the same settings continues from there and ends where an uninterrupted run would.
A checkpoint made for another model or other settings is refused (its fingerprint differs), never mixed in.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from qdeploy.errors import InputError

if TYPE_CHECKING:
    import torch

__all__ = ["Checkpoint", "fingerprint", "optimiser_state", "restore"]

FORMAT = 1


def fingerprint(config: dict[str, Any], initial: dict[str, np.ndarray]) -> str:
    """SHA-256 of the settings that shape the run and of the starting quantization parameters."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    for name in sorted(initial):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(initial[name]).tobytes())
    return digest.hexdigest()


@dataclass
class Checkpoint:
    """Where the state goes (``path``), how often (``every`` steps) and what it must match (``key``)."""

    path: Path
    every: int
    key: str

    def save(self, state: dict[str, Any]) -> None:
        """Write ``state`` (tensors, numbers, lists, the rng state) to ``path`` via a temporary file."""
        import torch

        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        torch.save({"format": FORMAT, "key": self.key, **state}, tmp)
        os.replace(tmp, self.path)

    def load(self) -> dict[str, Any] | None:
        """The saved state, None when there is none yet; a checkpoint of another run raises InputError."""
        import torch

        if not self.path.exists():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a truncated or foreign file: say which, do not guess
            raise InputError(f"DQC checkpoint {self.path} cannot be read ({type(exc).__name__})",
                             "delete it to start the refinement over") from None
        if not isinstance(state, dict) or state.get("format") != FORMAT or state.get("key") != self.key:
            raise InputError(f"DQC checkpoint {self.path} belongs to another model or other DQC settings",
                             "use another --dqc-checkpoint path, or delete it to start over")
        return state

    def due(self, step: int, last: int) -> bool:
        """Save after every ``every`` steps and after the last one."""
        return step == last or step % self.every == 0


def optimiser_state(params: list[torch.nn.Parameter], optimiser: Any, scheduler: Any, rng: np.random.Generator,
                    order: list[int], step: int, losses: list[float]) -> dict[str, Any]:
    """What :meth:`Checkpoint.save` stores for one DQC step."""
    return {"params": [p.detach().cpu().clone() for p in params], "optimiser": optimiser.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "rng": json.dumps(rng.bit_generator.state), "order": list(order), "step": step, "losses": list(losses)}


def restore(state: dict[str, Any], params: list[torch.nn.Parameter], optimiser: Any, scheduler: Any,
            rng: np.random.Generator) -> tuple[list[int], int, list[float]]:
    """Put a saved state back; returns (batch order left, steps done, losses so far)."""
    import torch

    with torch.no_grad():
        for p, saved in zip(params, state["params"], strict=True):
            p.copy_(saved.to(p.device))
    optimiser.load_state_dict(state["optimiser"])
    if scheduler is not None and state["scheduler"] is not None:
        scheduler.load_state_dict(state["scheduler"])
    rng.bit_generator.state = json.loads(state["rng"])
    return [int(i) for i in state["order"]], int(state["step"]), [float(v) for v in state["losses"]]
