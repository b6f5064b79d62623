"""DQC: distillation-refined quantization parameters of a QDQ graph (2DQuant's stage 2, on ONNX).

The float model is the teacher, the QDQ model the student; only the quantization parameters learn
(scales, optionally zero points; see :mod:`qdeploy.refine.learnable`), on calibration data only:

``loss = L1(student output, teacher output) + feature_weight * sum_f ||s_f - t_f||^2 / ||t_f||^2``

where the feature terms compare chosen intermediate tensors per sample, normalised by the teacher's
energy so that every feature counts the same whatever its magnitude (2DQuant normalises features too).
Adam with a cosine schedule, straight-through rounding, seeded batch order. Both graphs are executed by
:class:`qdeploy.torchexec.TorchGraph`, so DQC works for any model the torch executor runs, and the
result is written back as plain QDQ initializers: every other initializer stays bit-identical.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx_ir as ir

from qdeploy.errors import InputError
from qdeploy.refine.batches import SamplePool
from qdeploy.refine.checkpoint import Checkpoint, fingerprint, optimiser_state, restore
from qdeploy.refine.learnable import LearnableQDQ
from qdeploy.refine.quantizers import find_quantizers

if TYPE_CHECKING:
    import torch

#: ``progress(done, total)`` callback.
Progress = Callable[[int, int], None]

__all__ = ["DQCConfig", "DQCReport", "auto_feature_tensors", "refine_dqc"]

_DEVICES = ("cpu", "cuda", "auto")
_SCHEDULES = ("cosine", "constant")
#: Zero points live in integer codes, scales in relative units: codes need a larger step to move at all.
ZERO_POINT_LR_FACTOR = 10.0
#: Features picked by ``feature_tensors="auto"``.
AUTO_FEATURES = 4


@dataclass(frozen=True)
class DQCConfig:
    """DQC settings (defaults: 2DQuant's Adam lr 1e-2; far fewer iterations, sized for a CPU).

    Attributes:
        iterations: Optimiser steps.
        lr: Adam learning rate of the log-scales (relative scale change per step, roughly).
        batch_size: Calibration samples per step (drawn in a seeded order, reshuffled every epoch).
        feature_tensors: Names of intermediate tensors for the feature loss, ``"auto"`` (outputs of up to
            four quantized layers spread through the network) or ``()`` for the output loss only.
        feature_weight: Weight of the summed feature losses.
        seed: Seed of the batch order and of torch.
        device: "cpu", "cuda" or "auto" (CUDA when available).
        learn_zero_points: Also learn the zero points of asymmetric quantizers (symmetric grids keep 0,
            which TensorRT requires).
        schedule: "cosine" (anneal the learning rate to 0, as 2DQuant) or "constant".
        checkpoint: File to save the whole optimiser state to every ``checkpoint_every`` steps and to
            resume from when it exists (same model and settings only; :mod:`qdeploy.refine.checkpoint`).
        checkpoint_every: Steps between checkpoint writes.
    """

    iterations: int = 200
    lr: float = 1e-2
    batch_size: int = 4
    feature_tensors: str | tuple[str, ...] = "auto"
    feature_weight: float = 1.0
    seed: int = 0
    device: str = "auto"
    learn_zero_points: bool = True
    schedule: str = "cosine"
    checkpoint: str | None = None
    checkpoint_every: int = 10

    def __post_init__(self) -> None:
        for name in ("iterations", "batch_size", "seed", "checkpoint_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "seed" else 1):
                kind = "non-negative" if name == "seed" else "positive"
                raise ValueError(f"{name} must be a {kind} integer, got {value!r}")
        if not (isinstance(self.lr, int | float) and self.lr > 0 and np.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if not (isinstance(self.feature_weight, int | float) and self.feature_weight >= 0):
            raise ValueError(f"feature_weight must be >= 0, got {self.feature_weight!r}")
        if self.device not in _DEVICES:
            raise ValueError(f"device must be one of {_DEVICES}, got {self.device!r}")
        if self.schedule not in _SCHEDULES:
            raise ValueError(f"schedule must be one of {_SCHEDULES}, got {self.schedule!r}")
        if isinstance(self.feature_tensors, str):
            if self.feature_tensors != "auto":
                raise ValueError(f"feature_tensors must be 'auto' or a sequence of names, "
                                 f"got {self.feature_tensors!r}")
        else:
            object.__setattr__(self, "feature_tensors", tuple(self.feature_tensors))


@dataclass(frozen=True)
class DQCReport:
    """What a DQC run did: losses on the whole calibration set before/after, the curve, counts, time.

    ``applied`` is False when the refined parameters did not lower the loss; the input model is then
    returned unchanged (refinement never makes the calibration loss worse).
    """

    initial_loss: float
    final_loss: float
    losses: list[float]
    seconds: float
    device: str
    feature_tensors: list[str]
    scales: int
    zero_points: int
    weights: int
    weights_from_float_model: int
    applied: bool
    config: dict[str, Any] = field(default_factory=dict)
    resumed_at: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form for manifests."""
        import dataclasses

        return dataclasses.asdict(self)


def _device(name: str) -> torch.device:
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("DQC device 'cuda' requested but torch sees no CUDA device",
                         "use device='cpu' (or 'auto'), or install a CUDA build of torch")
    return torch.device(name)


def _values(model: ir.Model) -> dict[str, ir.Value]:
    values = {v.name: v for v in model.graph.inputs}
    values.update((o.name, o) for n in model.graph for o in n.outputs)
    return values


def auto_feature_tensors(float_model: ir.Model, qdq_model: ir.Model, count: int = AUTO_FEATURES) -> list[str]:
    """Outputs of up to ``count`` quantized layers (a weight DQ input) spread through the network.

    The last quantized layer is skipped (its output is almost the model output, which L1 already sees);
    only tensors present under the same name in both graphs qualify.
    """
    float_values = _values(float_model)
    layers = []
    for node in qdq_model.graph:
        if node.op_type not in ("Conv", "ConvTranspose", "MatMul", "Gemm"):
            continue
        dq = [v.producer() for v in node.inputs[:2] if v is not None and v.producer() is not None]
        if any(d.op_type == "DequantizeLinear" and d.inputs[0].const_value is not None for d in dq):
            name = node.outputs[0].name
            if name in float_values and not node.outputs[0].is_graph_output():
                layers.append(name)
    layers = layers[:-1]
    if len(layers) <= count:
        return layers
    picks = np.linspace(0, len(layers) - 1, count + 1)[1:].round().astype(int)
    return [layers[i] for i in dict.fromkeys(picks)]


def _features(config: DQCConfig, float_model: ir.Model, qdq_model: ir.Model) -> list[str]:
    if config.feature_weight == 0:
        return []
    if config.feature_tensors == "auto":
        return auto_feature_tensors(float_model, qdq_model)
    names = list(config.feature_tensors)
    for graph_name, model in (("float", float_model), ("QDQ", qdq_model)):
        missing = [n for n in names if n not in _values(model)]
        if missing:
            raise InputError(f"DQC feature tensor(s) {missing} are not in the {graph_name} model",
                             "name tensors that exist in both graphs (compute-op outputs keep their names)")
    return names


def _loss(student: Mapping[str, torch.Tensor], teacher: Mapping[str, torch.Tensor], outputs: Sequence[str],
          features: Sequence[str], feature_weight: float) -> torch.Tensor:
    """L1 on the outputs plus the features' squared error relative to the teacher's energy.

    The feature normalisation is over the whole chunk: an intermediate tensor's axis 0 need not be the
    sample axis (windowed attention), so per-sample norms cannot be taken from the graph alone.
    """
    loss = sum((student[n] - teacher[n]).abs().mean() for n in outputs)
    for name in features:
        s, t = student[name], teacher[name]
        loss = loss + feature_weight * (s - t).pow(2).sum() / t.pow(2).sum().clamp_min(1e-12)
    return loss


def refine_dqc(float_model: ir.Model, qdq_model: ir.Model, batches: Sequence[Mapping[str, np.ndarray]],
               config: DQCConfig | None = None, show_progress: bool = True,
               progress: Progress | None = None) -> tuple[ir.Model, DQCReport]:
    """Refine ``qdq_model``'s quantization parameters by distillation from ``float_model``.

    Args:
        float_model: The float model ``qdq_model`` was quantized from (teacher, and source of the
            float weights that refined scales re-quantize).
        qdq_model: The QDQ model; not modified.
        batches: Calibration feeds (input name -> array with the batch on axis 0).
        config: :class:`DQCConfig` (defaults when None).
        show_progress: Draw a rich progress bar with the running loss (when no ``progress`` is given).
        progress: ``progress(done_iterations, iterations)`` after every step, instead of the bar (the CLI's
            display: a bar on a terminal, plain lines in a log). Either way the estimate of the whole run,
            timed on the first iterations, is announced (:mod:`qdeploy.progress`).

    Returns:
        A new QDQ model (only quantization initializers differ) and a :class:`DQCReport`.
    """
    import torch

    from qdeploy.torchexec import TorchGraph

    config = config or DQCConfig()
    start = time.perf_counter()
    torch.manual_seed(config.seed)
    device = _device(config.device)
    teacher_graph, student_graph = TorchGraph(float_model, device), TorchGraph(qdq_model, device)
    outputs = [n for n in student_graph.output_names if n in teacher_graph.output_names]
    if not outputs:
        raise InputError("the float and QDQ models share no output name",
                         "pass the float model the QDQ one was made from")
    features = _features(config, float_model, qdq_model)
    pool = SamplePool(batches, student_graph, device, config.batch_size, config.seed)
    teacher = pool.teacher_outputs(teacher_graph, [*outputs, *features])
    learn = LearnableQDQ(qdq_model, find_quantizers(qdq_model, float_model, config.learn_zero_points), device)

    def evaluate() -> float:
        with torch.no_grad():
            overrides = learn.overrides()
            return pool.mean(lambda chunk: _loss(
                student_graph.run(chunk.feeds, overrides, features), chunk.select(teacher), outputs, features,
                config.feature_weight))

    initial = evaluate()
    checkpoint = _checkpoint(config, learn)
    losses, resumed = _optimise(learn, pool, student_graph, teacher, outputs, features, config, show_progress,
                                progress, checkpoint)
    final = evaluate()
    applied = final < initial
    refined = _write_back(qdq_model, learn.arrays()) if applied else qdq_model.clone()
    q = learn.quantizers
    report = DQCReport(initial, final, losses, time.perf_counter() - start, str(device), features,
                       len(learn.log_scales), len(learn.zero_points), len(q.weights),
                       sum(w.from_float_model for w in q.weights.values()), applied, _config_dict(config), resumed)
    return refined, report


def _config_dict(config: DQCConfig) -> dict[str, Any]:
    import dataclasses

    data = dataclasses.asdict(config)
    data["feature_tensors"] = list(config.feature_tensors) if not isinstance(config.feature_tensors, str) \
        else config.feature_tensors
    return data


def _checkpoint(config: DQCConfig, learn: LearnableQDQ) -> Checkpoint | None:
    if config.checkpoint is None:
        return None
    settings = {k: v for k, v in _config_dict(config).items() if k not in ("checkpoint", "checkpoint_every")}
    return Checkpoint(Path(config.checkpoint), config.checkpoint_every, fingerprint(settings, learn.initial))


def _optimise(learn: LearnableQDQ, pool: SamplePool, graph: Any, teacher: Any, outputs: list[str],
              features: list[str], config: DQCConfig, show_progress: bool,
              progress: Progress | None = None, checkpoint: Checkpoint | None = None) -> tuple[list[float], int]:
    """The Adam loop; returns the per-step training loss and the step a checkpoint resumed it at."""
    import torch
    from rich import progress as rich_progress

    from qdeploy.progress import FirstUnits

    scales, zps = learn.parameters()
    groups = [{"params": scales, "lr": config.lr}]
    if zps:
        groups.append({"params": zps, "lr": config.lr * ZERO_POINT_LR_FACTOR})
    optimiser = torch.optim.Adam(groups, betas=(0.9, 0.999))
    scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, config.iterations)
                 if config.schedule == "cosine" else None)
    losses: list[float] = []
    done = 0
    state = checkpoint.load() if checkpoint is not None else None
    if state is not None:
        pool.order, done, losses = restore(state, [*scales, *zps], optimiser, scheduler, pool.rng)
    columns = (rich_progress.TextColumn("DQC"), rich_progress.BarColumn(), rich_progress.MofNCompleteColumn(),
               rich_progress.TextColumn("loss {task.fields[loss]}"), rich_progress.TimeRemainingColumn())
    estimate = FirstUnits("DQC", config.iterations, "iteration")
    with rich_progress.Progress(*columns, disable=not show_progress or progress is not None, transient=False) as bar:
        task = bar.add_task("dqc", total=config.iterations, completed=done, loss="-")
        for step in range(done + 1, config.iterations + 1):
            optimiser.zero_grad(set_to_none=True)
            total = 0.0
            for chunk in pool.next_batch():
                overrides = learn.overrides()
                loss = _loss(graph.run(chunk.feeds, overrides, features), chunk.select(teacher), outputs,
                             features, config.feature_weight) * chunk.weight
                loss.backward()
                total += float(loss.detach())
            optimiser.step()
            if scheduler is not None:
                scheduler.step()
            losses.append(total)
            bar.update(task, advance=1, loss=f"{total:.4g}")
            estimate.done(step)
            if checkpoint is not None and checkpoint.due(step, config.iterations):
                checkpoint.save(optimiser_state([*scales, *zps], optimiser, scheduler, pool.rng, pool.order, step,
                                                losses))
            if progress is not None:
                progress(step, config.iterations)
    return losses, done


def _write_back(qdq_model: ir.Model, arrays: Mapping[str, np.ndarray]) -> ir.Model:
    """A clone of ``qdq_model`` with the refined initializers; all others are left exactly as they were."""
    refined = qdq_model.clone()
    for name, array in arrays.items():
        value = refined.graph.initializers[name]
        value.const_value = ir.tensor(np.array(array, order="C", copy=True), dtype=value.const_value.dtype,
                                      name=name)
    return refined
