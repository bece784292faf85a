"""A user's mistake found inside a DataLoader worker process still reaches the user as its one line."""

from __future__ import annotations

import pytest
import torch

from benchxfer.errors import BenchxferError

pytestmark = pytest.mark.fast


class _Refuses(torch.utils.data.Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, i):
        raise BenchxferError(f"image{i}.dcm: multi-frame (10 frames) is not read; export one frame per file")


def test_a_loader_workers_refusal_stays_one_line():
    """torch re-raises a worker's exception as the same type with the worker's traceback in its message; the line
    the user sees is the worker's own."""
    loader = torch.utils.data.DataLoader(_Refuses(), batch_size=1, num_workers=1)
    with pytest.raises(BenchxferError) as caught:
        next(iter(loader))
    assert str(caught.value) == "image0.dcm: multi-frame (10 frames) is not read; export one frame per file"
