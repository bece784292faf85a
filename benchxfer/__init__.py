"""benchxfer: transfer-learning benchmarks for medical imaging, as sweeps on Ray, recorded in MLflow."""

import os

__version__ = "0.1.0"

# Offline nodes: no dependency may reach the network on import (albumentations asks PyPI for its latest version
# unless told not to; every loader process and Ray worker would wait for the time-out). Set here, at the
# package's entry, before anything imports albumentations; child processes inherit it.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
# A `file:PATH` tracking store (which docs/errors.md allows) is honoured: MLflow refuses it unless told (its
# file store is "in maintenance mode"), and would end every command that reads or writes runs there in its text.
os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
