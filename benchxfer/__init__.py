"""benchxfer: transfer-learning benchmarks for medical imaging, as sweeps on Ray, recorded in MLflow."""

__version__ = "0.1.0"
