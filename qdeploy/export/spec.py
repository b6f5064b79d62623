"""Turn a model SPEC string into a float ``nn.Module`` plus optional example inputs.

The SPEC forms are a contract that scripts outside qdeploy rely on, so resolution is strict and every
failure names the fix:

* ``path/to/file.py:build`` - load the file as a module and call ``build()`` (the name after the LAST
  colon, so Windows drive letters survive);
* ``package.module:build`` - import the module and call ``build()``;
* a zoo name such as ``abpn-x3`` (see :func:`qdeploy_models.zoo.zoo_names`);
* ``model.pt2`` - a program saved with ``torch.export.save``.

A build function returns an ``nn.Module``, or ``(module, example_inputs)`` with a tensor or a tuple of
tensors. torch is imported lazily: this module is imported by the CLI at start-up.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qdeploy.errors import InputError

if TYPE_CHECKING:
    import torch

__all__ = ["SPEC_FORMS", "ResolvedModel", "resolve_spec"]

SPEC_FORMS = ("path/to/file.py:build", "package.module:build", "a zoo name (e.g. abpn-x3)", "model.pt2")
_KINDS = ("file", "module", "zoo", "pt2")


@dataclass(frozen=True)
class ResolvedModel:
    """A model ready to export.

    Attributes:
        module: The float network (eval mode where the module allows it).
        example_inputs: Inputs that came with the model (build function, zoo, .pt2), or None.
        source: The SPEC string as given (recorded in the manifest).
        kind: One of "file", "module", "zoo", "pt2".
        input_range: Value range the network expects when known (zoo entries), else None.
        default_input_shapes: Shapes to use when the user gives no ``--input-shape`` (zoo entries).
    """

    module: torch.nn.Module
    example_inputs: tuple[torch.Tensor, ...] | None
    source: str
    kind: str
    input_range: tuple[float, float] | None = None
    default_input_shapes: tuple[tuple[int, ...], ...] | None = None

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"kind must be one of {_KINDS}, got {self.kind!r}")


def resolve_spec(spec: str, weights: str | Path | None = None) -> ResolvedModel:
    """Resolve ``spec`` (see the module docstring for the forms) into a :class:`ResolvedModel`.

    ``weights``: a state-dict file for a zoo model, used instead of the zoo's own (shipped or external)
    weights; any other SPEC brings its own weights, so giving one there is an InputError.
    """
    from qdeploy_models.zoo import zoo_names

    spec = spec.strip()
    if not spec:
        raise InputError("empty model SPEC", _forms_hint())
    if spec in zoo_names():
        return _resolve_zoo(spec, weights)
    if weights is not None:
        raise InputError(f"--weights applies to zoo models only, not to {spec!r}",
                         "load the weights in your build function (or drop --weights)")
    if spec.endswith(".pt2"):
        return _resolve_pt2(spec)
    target, sep, func = spec.rpartition(":")
    if not sep or not target or not func:
        return _unknown_spec(spec)
    if target.endswith(".py") or "/" in target or "\\" in target:
        return _resolve_callable(spec, _load_file(target), func, "file")
    return _resolve_callable(spec, _import_module(target), func, "module")


def _forms_hint() -> str:
    from qdeploy_models.zoo import zoo_names

    return f"a SPEC is one of: {', '.join(SPEC_FORMS)}; zoo names: {', '.join(zoo_names())}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _unknown_spec(spec: str) -> ResolvedModel:
    """Raise the most helpful error for a SPEC that matches no form."""
    if spec.endswith(".py"):
        raise InputError(f"{spec!r} names a file but no build function",
                         f"append the function name: {spec}:build")
    from qdeploy_models.zoo import zoo_names

    raise InputError(f"unknown model SPEC {spec!r} (not a zoo name, .pt2 file or MODULE:FUNCTION)",
                     f"zoo names: {', '.join(zoo_names())}; or pass path/to/file.py:build, "
                     "package.module:build or model.pt2")


def _load_file(target: str) -> Any:
    """Execute a .py file as a fresh module (its folder is NOT added to sys.path)."""
    path = Path(target)
    if not path.is_file():
        raise InputError(f"model file not found: {path}",
                         "check the path (relative paths are from the current directory)")
    name = f"qdeploy_user_model_{abs(hash(str(path.resolve())))}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise InputError(f"cannot load {path} as Python", "pass a .py file: path/to/file.py:build")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # dataclasses and pickling look the module up by name
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise InputError(f"running {path} failed: {_first_line(exc)}",
                         f"fix the error in {path} (run `python {path}` to see the traceback)") from exc
    return module


def _import_module(target: str) -> Any:
    try:
        return importlib.import_module(target)
    except Exception as exc:
        raise InputError(f"cannot import module {target!r}: {_first_line(exc)}",
                         "check the module name and that its package is importable (installed, or on "
                         "PYTHONPATH); for a file use path/to/file.py:build") from exc


def _resolve_callable(spec: str, module: Any, func: str, kind: str) -> ResolvedModel:
    builder = getattr(module, func, None)
    if not callable(builder):
        found = sorted(n for n, v in vars(module).items()
                       if callable(v) and not n.startswith("_")
                       and getattr(v, "__module__", None) == module.__name__)
        raise InputError(f"{spec!r}: module has no function {func!r}",
                         f"functions defined there: {', '.join(found) or '(none)'}")
    try:
        returned = builder()
    except Exception as exc:
        raise InputError(f"{spec!r}: calling {func}() failed: {_first_line(exc)}",
                         f"{func}() must build the model with no arguments") from exc
    module_obj, inputs = _split_return(spec, func, returned)
    return ResolvedModel(_eval(module_obj), inputs, spec, kind)


def _split_return(spec: str, func: str, returned: Any) -> tuple[Any, tuple[Any, ...] | None]:
    """``module`` or ``(module, inputs)`` -> (module, inputs tuple or None), validated."""
    import torch

    module, inputs = returned, None
    if isinstance(returned, tuple) and len(returned) == 2 and isinstance(returned[0], torch.nn.Module):
        module, inputs = returned
    if not isinstance(module, torch.nn.Module):
        raise InputError(f"{spec!r}: {func}() returned {type(returned).__name__}, not a torch.nn.Module",
                         "return the model, or (model, example_inputs) with a tensor or tuple of tensors")
    return module, _as_input_tuple(inputs, f"{spec!r}: {func}()")


def _as_input_tuple(inputs: Any, where: str) -> tuple[Any, ...] | None:
    import torch

    if inputs is None:
        return None
    if isinstance(inputs, torch.Tensor):
        return (inputs,)
    if isinstance(inputs, tuple | list) and inputs and all(isinstance(t, torch.Tensor) for t in inputs):
        return tuple(inputs)
    raise InputError(f"{where} returned example inputs of type {type(inputs).__name__}",
                     "example inputs must be a tensor or a tuple of tensors (or leave them out and "
                     "pass --input-shape)")


def _eval(module: torch.nn.Module) -> torch.nn.Module:
    """Switch to eval mode; modules from ``ExportedProgram.module()`` refuse and are already frozen."""
    try:
        return module.eval()
    except NotImplementedError:
        return module


def _resolve_zoo(name: str, weights: str | Path | None = None) -> ResolvedModel:
    from qdeploy_models.zoo import build, get_entry

    entry = get_entry(name)
    module, inputs = build(name, weights)
    return ResolvedModel(module, inputs, name, "zoo", input_range=entry.input_range,
                         default_input_shapes=(entry.default_input_shape,))


def _resolve_pt2(spec: str) -> ResolvedModel:
    import torch

    path = Path(spec)
    if not path.is_file():
        raise InputError(f".pt2 file not found: {path}",
                         "check the path; save one with torch.export.save(ep, path)")
    try:
        program = torch.export.load(str(path))
    except Exception as exc:
        raise InputError(f"{path} is not a readable torch.export program ({_first_line(exc)})",
                         "the file is corrupt or not from torch.export.save; re-save it with "
                         "torch.export.save(torch.export.export(model, args), path)") from exc
    return ResolvedModel(_eval(program.module()), _pt2_inputs(program), spec, "pt2")


def _pt2_inputs(program: Any) -> tuple[Any, ...] | None:
    """Positional example inputs stored in the program, when they are all tensors."""
    import torch

    stored = getattr(program, "example_inputs", None)
    if not stored:
        return None
    args, kwargs = stored
    if kwargs or not args or not all(isinstance(a, torch.Tensor) for a in args):
        return None
    return tuple(args)

