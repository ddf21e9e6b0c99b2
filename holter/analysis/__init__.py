"""Analysis over query results: critical paths, anomalies, baselines, patterns (layer 4).

:class:`Detector` is the streaming anomaly detector (one per series); the monitor runs
one per series in its collector thread (:mod:`holter.analysis.anomaly`).
"""

from holter.analysis.detector import Detector, Observation

__all__ = ["Detector", "Observation"]
