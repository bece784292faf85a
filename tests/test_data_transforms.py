"""Transform presets: sizes, normalisation, ten-crop, and image and mask moved together."""

from __future__ import annotations

import pytest
import torch
from torchvision import tv_tensors

from benchxfer.data import transforms
from benchxfer.errors import BenchxferError

pytestmark = pytest.mark.fast


def _image(h: int = 80, w: int = 100, value: int | None = None) -> tv_tensors.Image:
    if value is not None:
        return tv_tensors.Image(torch.full((3, h, w), value, dtype=torch.uint8))
    g = torch.Generator().manual_seed(0)
    return tv_tensors.Image(torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g))


@pytest.mark.parametrize("preset", [p for p in transforms.list_presets() if p != "systematic-seg"])
@pytest.mark.parametrize("train", [True, False])
def test_classification_output_size_and_dtype(preset, train):
    pipe = transforms.build(preset, train=train, size=48, task="multilabel")
    image, mask = pipe(_image())
    assert image.shape == (3, 48, 48) and image.dtype == torch.float32 and mask is None


def test_normalisation_uses_mean_and_std():
    pipe = transforms.build("plain", train=False, size=16, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    image, _ = pipe(_image(value=255))
    torch.testing.assert_close(image, torch.full((3, 16, 16), 2.0))
    pipe = transforms.build("plain", train=False, size=16, mean=transforms.CXR_MEAN, std=transforms.CXR_STD)
    image, _ = pipe(_image(value=0))
    torch.testing.assert_close(image, torch.full((3, 16, 16), -0.5056 / 0.252))


def _ramp(h: int, w: int) -> tv_tensors.Image:
    """A non-square image whose pixel (y, x) encodes its position: channel 0 = column, channel 1 = row."""
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    img = torch.stack([xs * 255 // (w - 1), ys * 255 // (h - 1), torch.zeros_like(xs)]).to(torch.uint8)
    return tv_tensors.Image(img)


def test_systematic_cls_eval_is_square_resize_then_center_crop():
    # the study: Resize((256, 256)) -- a square, whatever the aspect -- then CenterCrop(224). On a 200 x 400
    # ramp the whole width is squeezed into 256 columns, so the crop spans columns 16..239 of 256:
    # values (16 + 0.5) / 256 * 255 ... (239 + 0.5) / 256 * 255 (a shorter-side resize would keep the middle half).
    pipe = transforms.build("systematic-cls", train=False, size=224, mean=(0, 0, 0), std=(1, 1, 1))
    image, _ = pipe(_ramp(200, 400))
    assert image.shape == (3, 224, 224)
    row = image[0, 112] * 255
    assert row[0].item() == pytest.approx(16.5 / 256 * 255, abs=2.5)
    assert row[-1].item() == pytest.approx(239.5 / 256 * 255, abs=2.5)
    col = image[1, :, 112] * 255
    assert col[0].item() == pytest.approx(16.5 / 256 * 255, abs=2.5)
    ten = transforms.build("systematic-cls", train=False, size=224, mean=(0, 0, 0), std=(1, 1, 1), tencrop=True)
    crops, _ = ten(_ramp(200, 400))
    assert crops.shape == (10, 3, 224, 224)
    torch.testing.assert_close(crops[4], image)  # TenCrop's 5th crop is the centre crop of the same square
    assert (crops[0][0, 112, 0] * 255).item() == pytest.approx(0.5 / 256 * 255, abs=2.5)  # top-left from column 0


def test_bit_geometry_on_a_non_square_image():
    # train: the shorter side to 512 (aspect kept), then a random 480 crop; eval: a 480 x 480 square.
    torch.manual_seed(0)
    steps = transforms.PRESETS.get("bit-hyperrule")(True, 480)
    from torchvision.transforms import v2

    resized = v2.Compose(steps[:1])(v2.functional.to_pil_image(_ramp(300, 600)))
    assert resized.size == (1024, 512)  # PIL: (width, height)
    image, _ = transforms.build("bit-hyperrule", train=True, size=480, mean=(0, 0, 0), std=(1, 1, 1))(_ramp(300, 600))
    assert image.shape == (3, 480, 480)
    span = (image[0, 240].max() - image[0, 240].min()).item()
    assert span < 0.5  # 480 of 1024 columns: less than half the ramp (a 512 square would span ~0.94)
    image, _ = transforms.build("bit-hyperrule", train=False, size=480, mean=(0, 0, 0), std=(1, 1, 1))(_ramp(300, 600))
    assert image.shape == (3, 480, 480) and (image[0, 240].max() - image[0, 240].min()).item() > 0.98
    assert transforms.bit_crop_for(95, 95) == 128 and transforms.bit_crop_for(96, 96) == 480
    assert transforms.bit_resize(128) == 160 and transforms.bit_resize(480) == 512


def test_tencrop_stack():
    pipe = transforms.build("systematic-cls", train=False, size=32, tencrop=True)
    image, _ = pipe(_image(60, 70))
    assert image.shape == (10, 3, 32, 32)
    # crops 5-9 are those of the flipped image: its top-left crop is the flipped top-right crop
    torch.testing.assert_close(image[5], image[1].flip(-1))
    with pytest.raises(BenchxferError, match="tencrop is for evaluating classifiers"):
        transforms.build("systematic-cls", train=True, size=32, tencrop=True)


@pytest.mark.parametrize("preset", ["systematic-seg", "plain", "bit-hyperrule"])
def test_mask_follows_image(preset):
    torch.manual_seed(0)
    mask = torch.zeros((1, 64, 64), dtype=torch.uint8)
    mask[:, 10:30, 5:50] = 1  # an off-centre block: any flip/crop/warp shows if image and mask disagree
    image = tv_tensors.Image((mask * 255).expand(3, -1, -1).clone())
    pipe = transforms.build(preset, train=True, size=48, mean=(0, 0, 0), std=(1, 1, 1), task="segmentation")
    for _ in range(20):
        out_img, out_mask = pipe(image, tv_tensors.Mask(mask))
        assert out_mask.shape == (48, 48) and out_mask.dtype == torch.float32
        assert set(out_mask.unique().tolist()) <= {0.0, 1.0}
        agree = ((out_img[0] > 0.5).float() == out_mask).float().mean()
        assert agree > 0.9  # edges differ (bilinear image, nearest mask); a misaligned flip or crop gives < 0.7


def test_unknown_preset():
    with pytest.raises(BenchxferError, match=r"unknown transform preset 'fancy'; known: bit-hyperrule, plain"):
        transforms.build("fancy", train=True, size=32)


def test_array_grey_and_rgb_inputs_give_the_same_result():
    g = torch.Generator().manual_seed(1)
    grey = torch.randint(0, 256, (1, 40, 50), dtype=torch.uint8, generator=g)
    pipe = transforms.build("systematic-cls", train=True, size=32)
    outs = []
    for inp in (grey.permute(1, 2, 0).numpy(), tv_tensors.Image(grey), tv_tensors.Image(grey.expand(3, -1, -1).clone())):
        torch.manual_seed(5)
        outs.append(pipe(inp)[0])
    torch.testing.assert_close(outs[0], outs[1])
    torch.testing.assert_close(outs[0], outs[2])
    mean = torch.tensor(transforms.IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(transforms.IMAGENET_STD).view(3, 1, 1)
    assert not torch.equal(outs[0][0], outs[0][1])  # per-channel normalisation of the replicated grey
    torch.testing.assert_close((outs[0] * std + mean)[0], (outs[0] * std + mean)[2])
