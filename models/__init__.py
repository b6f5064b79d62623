"""qdeploy's model zoo (installed as ``qdeploy_models``).

Each entry is a ``build()`` that returns a float ``torch.nn.Module`` and example inputs; weights the
project trained itself ship beside the code in ``weights/`` (no downloads at run time).
"""

from __future__ import annotations

from qdeploy_models.zoo import ZooEntry, build, zoo_names

__all__ = ["ZooEntry", "build", "zoo_names"]
