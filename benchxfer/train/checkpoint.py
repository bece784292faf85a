"""Epoch checkpoints of one run, in the run's own folder (named by its trial key).

``epoch_NNNN.pt`` holds everything needed to continue: model, optimiser, scheduler, scaler, epoch,
stopping state, the best weights so far, and RNG states. Files are written atomically (temporary
file, then rename) and read with ``weights_only=True``. On resume the newest readable file wins; a
truncated or corrupt file is reported and the previous one is used instead.
"""

from __future__ import annotations

import logging
import os
import pickle
import random
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchxfer.trialdir import write_atomically

log = logging.getLogger("benchxfer")
_NAME = re.compile(r"epoch_(\d{4,})\.pt$")


class CheckpointStore:
    def __init__(self, folder: str | os.PathLike, keep: int = 2):
        self.folder = Path(folder)
        self.keep = keep

    def epochs(self) -> list[int]:
        if not self.folder.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self.folder.iterdir() if (m := _NAME.search(p.name)))

    def path(self, epoch: int) -> Path:
        return self.folder / f"epoch_{epoch:04d}.pt"

    def save(self, epoch: int, state: dict[str, Any]) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        target = self.path(epoch)

        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:  # closed on failure, so that a full disk gets its room back at once
                torch.save(state, f)

        write_atomically(target, write)
        for old in self.epochs()[: -self.keep]:
            self.path(old).unlink(missing_ok=True)
        return target

    def load_latest(self) -> tuple[dict[str, Any] | None, list[str]]:
        """The newest readable checkpoint (or None), and one message per unreadable file skipped."""
        notes: list[str] = []
        for epoch in reversed(self.epochs()):
            path = self.path(epoch)
            try:
                return torch.load(path, map_location="cpu", weights_only=True), notes
            except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as err:
                msg = f"checkpoint {path} is unreadable ({type(err).__name__}); falling back to the previous one"
                log.warning(msg)
                notes.append(msg)
        if notes:
            notes.append("no readable checkpoint left: restarting from epoch 0")
        return None, notes


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    random.setstate(state["python"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
