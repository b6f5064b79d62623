"""Calibration: observers that pick per-tensor clipping ranges, their cache, and calibration data readers.

Built-in observers are registered here, explicitly, so ``observer_names()`` is complete as soon as the
package is imported:

- ``minmax``: observed extremes (1 pass);
- ``percentile``: histogram percentile (2 passes);
- ``entropy``: TensorRT-style KL threshold search, grid-aware (2 passes);
- ``mse``: expected fake-quant MSE search on the actual grid (2 passes);
- ``dobi``: 2DQuant's linear bound search, bell or one-sided family chosen from the histogram (2 passes);
- ``auto``: every method's bounds from one histogram, ``mse``'s returned; checked at the output later (2 passes).
"""

from __future__ import annotations

from qdeploy.calib.auto import AutoConfig, AutoObserver
from qdeploy.calib.base import (
    OBSERVERS,
    HistogramConfig,
    Observer,
    ObserverConfig,
    make_observer,
    observer_names,
)
from qdeploy.calib.dobi import DOBIConfig, DOBIObserver
from qdeploy.calib.entropy import EntropyConfig, EntropyObserver
from qdeploy.calib.minmax import MinMaxConfig, MinMaxObserver
from qdeploy.calib.mse import MSEConfig, MSEObserver
from qdeploy.calib.percentile import PercentileConfig, PercentileObserver

__all__ = [
    "OBSERVERS",
    "AutoConfig",
    "AutoObserver",
    "DOBIConfig",
    "DOBIObserver",
    "EntropyConfig",
    "EntropyObserver",
    "HistogramConfig",
    "MSEConfig",
    "MSEObserver",
    "MinMaxConfig",
    "MinMaxObserver",
    "Observer",
    "ObserverConfig",
    "PercentileConfig",
    "PercentileObserver",
    "make_observer",
    "observer_names",
]

for _cls in (AutoObserver, MinMaxObserver, PercentileObserver, EntropyObserver, MSEObserver, DOBIObserver):
    OBSERVERS.add(_cls.method, _cls)
del _cls
