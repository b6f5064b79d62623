"""Calibration samples for refinement: seeded batch order, teacher outputs cached once, static-batch models.

Exported models often have a static batch of 1 (shapes baked into Reshapes); such a model cannot run a
stacked batch, so a "batch" is then run sample by sample with the loss averaged (the same gradient). So
are samples of different sizes (crops of photos smaller than the crop size), which cannot be stacked.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from qdeploy.errors import InputError

if TYPE_CHECKING:
    import torch

    from qdeploy.torchexec import TorchGraph

__all__ = ["Chunk", "SamplePool"]


@dataclass(frozen=True)
class Chunk:
    """Samples run together: their feeds, indices into the pool and weight in the batch's mean loss."""

    feeds: dict[str, torch.Tensor]
    indices: list[int]
    weight: float

    def select(self, cached: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """This chunk's entries of ``cached`` (one dict per pool sample), concatenated on axis 0.

        Per-sample storage matters: an intermediate tensor's axis 0 is not always the batch (windowed
        attention stacks ``batch * windows``), but concatenating per-sample results is always right.
        """
        import torch

        if len(self.indices) == 1:
            return dict(cached[self.indices[0]])
        return {name: torch.cat([cached[i][name] for i in self.indices]) for name in cached[0]}


class SamplePool:
    """All calibration samples on ``device`` plus a seeded, epoch-reshuffled order."""

    def __init__(self, batches: Sequence[Mapping[str, np.ndarray]], graph: TorchGraph, device: torch.device,
                 batch_size: int, seed: int) -> None:
        import torch

        self.samples: list[dict[str, torch.Tensor]] = []
        for feeds in batches:
            missing = [n for n in graph.input_names if n not in feeds]
            if missing:
                raise InputError(f"calibration batch lacks model input(s) {missing}",
                                 f"give every batch the inputs {graph.input_names}")
            count = next(iter(feeds.values())).shape[0]
            for i in range(count):
                self.samples.append({n: torch.from_numpy(np.ascontiguousarray(feeds[n][i:i + 1])).to(device)
                                     for n in graph.input_names})
        if not self.samples:
            raise InputError("no calibration samples for refinement", "pass at least one batch of inputs")
        dims = [v.shape[0] if v.shape is not None and len(v.shape) else None
                for v in graph.model.graph.inputs]
        # samples of different sizes (photos smaller than the crop) cannot be stacked either
        sizes = {tuple(tuple(s[n].shape) for n in graph.input_names) for s in self.samples}
        self.stackable = all(not isinstance(d, int) for d in dims) and len(sizes) == 1
        self.batch_size = min(batch_size, len(self.samples))
        self.rng = np.random.default_rng(seed)
        self.order: list[int] = []  # what is left of this epoch's permutation (a checkpoint saves it)

    def _chunks(self, indices: list[int]) -> Iterator[Chunk]:
        import torch

        if self.stackable:
            feeds = {n: torch.cat([self.samples[i][n] for i in indices]) for n in self.samples[0]}
            yield Chunk(feeds, indices, 1.0)
            return
        for i in indices:
            yield Chunk(self.samples[i], [i], 1.0 / len(indices))

    def next_batch(self) -> Iterator[Chunk]:
        """The chunks of the next training batch (a fresh seeded permutation each epoch)."""
        if len(self.order) < self.batch_size:
            self.order += [int(i) for i in self.rng.permutation(len(self.samples))]
        indices, self.order = self.order[:self.batch_size], self.order[self.batch_size:]
        return self._chunks(indices)

    def _sequential(self) -> Iterator[Chunk]:
        step = self.batch_size if self.stackable else 1
        for start in range(0, len(self.samples), step):
            yield from self._chunks(list(range(start, min(start + step, len(self.samples)))))

    def teacher_outputs(self, graph: TorchGraph, names: Sequence[str]) -> list[dict[str, torch.Tensor]]:
        """``names`` computed by ``graph`` for each sample, in pool order (no gradients)."""
        import torch

        keep = [n for n in names if n not in graph.output_names]
        with torch.no_grad():
            return [{n: v.float() for n, v in graph.run(sample, keep=keep).items() if n in names}
                    for sample in self.samples]

    def mean(self, loss: Callable[[Chunk], torch.Tensor]) -> float:
        """Sample-weighted mean of ``loss`` over the whole pool, in a fixed order."""
        total = 0.0
        for chunk in self._sequential():
            total += float(loss(chunk)) * len(chunk.indices)
        return total / len(self.samples)
