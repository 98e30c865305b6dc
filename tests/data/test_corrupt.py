"""Image corruptions: the POVID diffusion schedule checked against hand-computed values, the
reference pipeline's uint8 wrap-around, and the simpler corruptions."""

from __future__ import annotations

import math
import platform

import numpy as np
import pytest
import torch
from PIL import Image

from vlalign.data.corrupt import (
    METHODS,
    blank,
    blur,
    corrupt_image,
    corrupt_pixels,
    diffusion_noise,
    mask_patches,
    noise_schedule,
    to_pil,
    to_tensor,
)

# --------------------------------------------------------------------------- hand-computed schedule

def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _beta(i: int) -> float:
    """POVID's beta_i, written out with the math module: linspace(-6, 6, 1000) point i."""
    return _sigmoid(-6.0 + 12.0 * i / 999) * (5e-3 - 1e-5) + 1e-5


HAND_BETAS = [_beta(i) for i in range(1000)]


def _alpha_bar(t: int) -> float:
    return math.prod(1.0 - b for b in HAND_BETAS[: t + 1])


def _coefficients(t: int) -> tuple[float, float]:
    ab = _alpha_bar(t)
    return math.sqrt(ab), math.sqrt(1.0 - ab)


def _image(seed: int, shape=(3, 16, 20)) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


def _phi(z: float) -> float:
    """Standard normal CDF."""
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- schedule


def test_schedule_betas_match_the_sigmoid_formula():
    betas, alpha_bars = noise_schedule()
    assert betas.dtype == torch.float64 and alpha_bars.dtype == torch.float64
    assert betas.shape == alpha_bars.shape == (1000,)
    assert betas[0].item() == pytest.approx(_sigmoid(-6.0) * (5e-3 - 1e-5) + 1e-5, rel=1e-12)
    assert betas[999].item() == pytest.approx(_sigmoid(6.0) * (5e-3 - 1e-5) + 1e-5, rel=1e-12)
    assert betas[0].item() == pytest.approx(2.2338e-5, rel=1e-4)
    assert betas[999].item() == pytest.approx(4.98766e-3, rel=1e-5)
    assert torch.allclose(betas, torch.tensor(HAND_BETAS, dtype=torch.float64), rtol=1e-12, atol=0)


@pytest.mark.parametrize("t", [0, 300, 500, 999])
def test_schedule_alpha_bar_matches_a_plain_product(t):
    _, alpha_bars = noise_schedule()
    signal, noise = _coefficients(t)
    assert math.sqrt(alpha_bars[t].item()) == pytest.approx(signal, rel=1e-12)
    assert math.sqrt(1.0 - alpha_bars[t].item()) == pytest.approx(noise, rel=1e-10)


@pytest.mark.parametrize("t, signal, noise", [(300, 0.981, 0.194), (500, 0.863, 0.505), (999, 0.285, 0.959)])
def test_schedule_matches_the_rounded_table(t, signal, noise):
    _, alpha_bars = noise_schedule()
    assert round(math.sqrt(alpha_bars[t].item()), 3) == signal
    assert round(math.sqrt(1.0 - alpha_bars[t].item()), 3) == noise


# --------------------------------------------------------------------------- diffusion noise


def test_diffusion_is_the_forward_process_with_documented_noise():
    x0 = _image(1)
    out = diffusion_noise(x0, 500, generator=_gen(42))
    eps = torch.randn((3, 16, 20), generator=_gen(42), dtype=torch.float32)  # the documented draw
    signal, noise = _coefficients(500)
    expected = (signal * x0.double() + noise * eps.double()).clamp(0, 1)
    assert out.dtype == torch.float32 and out.shape == x0.shape
    assert torch.allclose(out.double(), expected, atol=1e-6, rtol=0)


def test_diffusion_with_explicit_noise_and_step_zero():
    x0 = _image(2)
    eps = torch.randn(x0.shape, generator=_gen(5))
    out = diffusion_noise(x0, 0, noise=eps)
    signal, noise = _coefficients(0)
    assert noise == pytest.approx(0.0047, abs=1e-4)  # step 0 barely touches the image
    assert torch.allclose(out.double(), (signal * x0.double() + noise * eps.double()).clamp(0, 1), atol=1e-6)


# Noisy values in bytes (x_t * 255), kept 0.3-0.4 of a byte away from integers so float32
# rounding cannot move them across a truncation boundary, and the byte the reference's
# ``x.mul(255).byte()`` gives: truncate toward zero, then modulo 256.
WRAP_CASES = [
    (-51.4, 205),    # x_t ~ -0.2:  -51 + 256
    (257.4, 1),      # x_t ~ 1.01:  257 - 256
    (331.6, 75),     # x_t ~ 1.3:   331 - 256
    (-0.4, 0),       # just below 0: truncates to 0 (floor would give 255)
    (-1.3, 255),     # -1 + 256
    (-382.4, 130),   # x_t ~ -1.5:  -382 + 512
    (688.4, 176),    # x_t ~ 2.7:   688 - 512
    (255.6, 255),    # just below 1.0025: 255, no wrap yet
    (256.3, 0),      # 256 wraps to 0
    (127.7, 127),    # in range: truncated, not rounded
]


def _noise_for(bytes_: list[float], step: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero image and the eps that puts its noisy values at the given byte values."""
    _, noise = _coefficients(step)
    eps = torch.tensor([v / 255.0 / noise for v in bytes_], dtype=torch.float32).view(1, 1, -1).repeat(3, 1, 1)
    return torch.zeros_like(eps), eps


def test_wrap_mode_reproduces_the_uint8_wraparound():
    x0, eps = _noise_for([v for v, _ in WRAP_CASES])
    out = diffusion_noise(x0, 500, mode="wrap", noise=eps)
    expected = torch.tensor([b for _, b in WRAP_CASES], dtype=torch.float32) / 255.0
    for channel in out:
        assert torch.equal(torch.round(channel[0] * 255).to(torch.int64), (expected * 255).round().to(torch.int64))
    assert torch.allclose(out[0, 0], expected, atol=1e-7)


def test_wrap_mode_uses_the_image_too():
    # x0 = 0.6, eps chosen so that x_t = 0.863*0.6 + 0.505*eps sits at byte -51.4 (~ -0.2).
    signal, noise = _coefficients(500)
    eps = torch.full((3, 2, 2), (-51.4 / 255.0 - signal * 0.6) / noise)
    out = diffusion_noise(torch.full((3, 2, 2), 0.6), 500, mode="wrap", noise=eps)
    assert torch.allclose(out, torch.full((3, 2, 2), 205 / 255.0), atol=1e-7)


def test_clip_mode_on_the_same_values():
    x0, eps = _noise_for([v for v, _ in WRAP_CASES])
    out = diffusion_noise(x0, 500, mode="clip", noise=eps)
    expected = torch.tensor([min(max(v / 255.0, 0.0), 1.0) for v, _ in WRAP_CASES])
    assert torch.allclose(out[0, 0], expected, atol=1e-6)


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"),
                    reason="float->uint8 of out-of-range values is only pinned down on x86 CPU")
def test_wrap_rule_agrees_with_torch_byte_cast_here():
    values = torch.tensor([v for v, _ in WRAP_CASES] + [-51.0, 257.55, 331.5, -0.001, -382.5, 688.5])
    assert values.byte().tolist() == [b for _, b in WRAP_CASES] + [205, 1, 75, 0, 130, 176]


def test_clip_and_wrap_on_mid_grey_at_step_500():
    grey = torch.full((3, 64, 64), 0.5)
    clipped = diffusion_noise(grey, 500, mode="clip", generator=_gen(0))
    wrapped = diffusion_noise(grey, 500, mode="wrap", generator=_gen(0))
    assert clipped.min() >= 0 and clipped.max() <= 1 and wrapped.min() >= 0 and wrapped.max() <= 1
    # x_t = 0.4315 + 0.505 z leaves [0, 1] with probability P(z < -0.854) + P(z > 1.126) ~ 0.33.
    signal, noise = _coefficients(500)
    centre = signal * 0.5
    p_out = _phi(-centre / noise) + 1 - _phi((1 - centre) / noise)
    assert 0.30 < p_out < 0.35
    at_bound = ((clipped == 0) | (clipped == 1)).float().mean().item()
    assert at_bound == pytest.approx(p_out, abs=0.03)
    # Wrap is on the byte grid, within a byte of clip in range, and far from it out of range.
    assert torch.allclose(wrapped * 255, torch.round(wrapped * 255), atol=1e-4)
    far = ((wrapped - clipped).abs() > 1.5 / 255).float().mean().item()
    assert far > 0.25
    inside = (clipped > 0) & (clipped < 1)
    assert ((wrapped - clipped).abs()[inside] <= 1 / 255 + 1e-6).all()


def test_diffusion_is_deterministic_for_a_seed():
    x0 = _image(3)
    assert torch.equal(diffusion_noise(x0, generator=_gen(9)), diffusion_noise(x0, generator=_gen(9)))
    assert not torch.equal(diffusion_noise(x0, generator=_gen(9)), diffusion_noise(x0, generator=_gen(10)))


def test_diffusion_batch_noise_per_image_and_batch_equals_sequential():
    x0 = _image(4)
    batch = torch.stack([x0, x0])
    out = diffusion_noise(batch, 300, mode="wrap", generator=_gen(11))
    assert out.shape == batch.shape
    assert not torch.equal(out[0], out[1])  # same image, different noise
    shared = _gen(11)
    one_by_one = torch.stack([diffusion_noise(x0, 300, mode="wrap", generator=shared) for _ in range(2)])
    assert torch.equal(out, one_by_one)


@pytest.mark.parametrize("step", [1000, -1, 2.5, True, "500", None])
def test_diffusion_rejects_bad_steps(step):
    with pytest.raises(ValueError, match="step"):
        diffusion_noise(_image(0), step)


def test_diffusion_accepts_boundary_and_numpy_steps():
    x0 = _image(0)
    assert diffusion_noise(x0, 0, generator=_gen(0)).shape == x0.shape
    assert diffusion_noise(x0, 999, generator=_gen(0)).shape == x0.shape
    by_numpy = diffusion_noise(x0, np.int64(500), generator=_gen(0))
    assert torch.equal(by_numpy, diffusion_noise(x0, 500, generator=_gen(0)))


def test_diffusion_rejects_bad_arguments():
    x0 = _image(0)
    with pytest.raises(ValueError, match="mode"):
        diffusion_noise(x0, mode="saturate")
    with pytest.raises(ValueError, match="noise"):
        diffusion_noise(x0, noise=torch.zeros_like(x0), generator=_gen(0))
    with pytest.raises(ValueError, match="shape"):
        diffusion_noise(x0, noise=torch.zeros(3, 2, 2))
    with pytest.raises(ValueError, match="shape"):
        diffusion_noise(torch.zeros(16, 16))
    with pytest.raises(ValueError, match="float"):
        diffusion_noise(torch.zeros(3, 4, 4, dtype=torch.uint8))


# --------------------------------------------------------------------------- blur


def test_blur_of_a_constant_image_is_unchanged():
    img = torch.full((2, 3, 12, 10), 0.37)
    assert torch.allclose(blur(img, 2.0), img, atol=1e-6)
    # A kernel wider than the image (ceil(3 * 5) > 4 - 1) is cut to what reflect padding allows.
    small = torch.full((3, 4, 4), 0.8)
    assert torch.allclose(blur(small, 5.0), small, atol=1e-6)


def test_blur_of_an_impulse_is_a_separable_gaussian():
    img = torch.zeros(3, 31, 31)
    img[:, 15, 15] = 1.0
    out = blur(img, 1.5)
    # Kernel spans ceil(4.5) = 5 pixels each side, weights exp(-x^2 / (2 * 1.5^2)) normalised.
    weights = [math.exp(-x * x / (2 * 1.5 ** 2)) for x in range(-5, 6)]
    total = sum(weights)
    assert out[0, 15, 15].item() == pytest.approx((1 / total) ** 2, rel=1e-5)
    assert out[1, 15, 17].item() == pytest.approx(weights[7] / total * weights[5] / total, rel=1e-5)
    assert out[2, 15, 21].item() == 0.0  # beyond the kernel
    assert out.sum().item() == pytest.approx(3.0, rel=1e-5)
    assert torch.allclose(out, out.transpose(1, 2), atol=1e-7)  # same kernel both ways


def test_blur_preserves_mean_and_smooths():
    img = _image(7, (3, 32, 32))
    out = blur(img, 1.0)
    assert out.shape == img.shape and out.dtype == torch.float32
    assert out.mean().item() == pytest.approx(img.mean().item(), abs=5e-3)
    assert out.std().item() < 0.6 * img.std().item()
    assert out.min() >= 0 and out.max() <= 1


def test_blur_radius_zero_and_errors():
    img = _image(8)
    out = blur(img, 0)
    assert torch.equal(out, img) and out.data_ptr() != img.data_ptr()
    with pytest.raises(ValueError, match="radius"):
        blur(img, -1.0)


# --------------------------------------------------------------------------- mask / blank


def _filled_cells(image: torch.Tensor, patch: int, fill: float) -> int:
    """Grid cells whose every value is ``fill``; asserts the others are untouched (all ones)."""
    _, h, w = image.shape
    count = 0
    for top in range(0, h, patch):
        for left in range(0, w, patch):
            cell = image[:, top:top + patch, left:left + patch]
            if torch.all(cell == fill):
                count += 1
            else:
                assert torch.all(cell == 1.0), "a patch is partly masked"
    return count


def test_mask_patches_masks_exactly_the_expected_number():
    img = torch.ones(2, 3, 48, 64)  # 3 x 4 = 12 patches of 16
    out = mask_patches(img, patch_size=16, fraction=0.5, generator=_gen(1), fill=0.25)
    assert out.shape == img.shape and torch.all(img == 1)  # input untouched
    for image in out:
        assert _filled_cells(image, 16, 0.25) == 6
        assert (image == 0.25).sum().item() == 6 * 16 * 16 * 3
    assert not torch.equal(out[0], out[1])  # each image its own choice


def test_mask_patches_uneven_grid_and_rounding():
    img = torch.ones(3, 40, 40)  # ceil(40/16) = 3 per side: 9 patches, edges 8 px wide
    assert _filled_cells(mask_patches(img, 16, 0.5, _gen(2)), 16, 0.0) == 4  # round(4.5) = 4
    assert _filled_cells(mask_patches(img, 16, 0.6, _gen(2)), 16, 0.0) == 5  # round(5.4) = 5
    assert torch.all(mask_patches(img, 16, 1.0, _gen(2)) == 0)
    assert torch.equal(mask_patches(img, 16, 0.0, _gen(2)), img)


def test_mask_patches_deterministic_and_batch_equals_sequential():
    img = _image(3, (3, 32, 32))
    a = mask_patches(torch.stack([img, img]), 8, 0.3, _gen(5))
    shared = _gen(5)
    b = torch.stack([mask_patches(img, 8, 0.3, shared), mask_patches(img, 8, 0.3, shared)])
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="fraction"):
        mask_patches(img, fraction=1.5)
    with pytest.raises(ValueError, match="patch_size"):
        mask_patches(img, patch_size=0)


def test_blank():
    img = _image(0, (2, 3, 5, 7))
    out = blank(img)
    assert out.shape == img.shape and out.dtype == torch.float32 and torch.all(out == 0.5)
    assert torch.all(blank(img[0], value=0.0) == 0)


# --------------------------------------------------------------------------- PIL


def _pil(seed: int = 0, size=(20, 14)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8))


def test_to_tensor_values_and_layout():
    img = Image.new("RGB", (3, 2), (255, 0, 128))
    t = to_tensor(img)
    assert t.shape == (3, 2, 3) and t.dtype == torch.float32
    assert t[:, 1, 2].tolist() == pytest.approx([1.0, 0.0, 128 / 255])
    grey = to_tensor(Image.new("L", (4, 4), 51))
    assert grey.shape == (3, 4, 4) and torch.allclose(grey, torch.full((3, 4, 4), 0.2))
    assert to_tensor(Image.new("RGBA", (2, 2), (10, 20, 30, 0))).shape == (3, 2, 2)


def test_pil_round_trip_is_exact():
    img = _pil(1)
    back = to_pil(to_tensor(img))
    assert back.mode == "RGB" and back.size == img.size
    assert np.array_equal(np.asarray(back), np.asarray(img))


def test_to_pil_clamps_and_rounds():
    t = torch.tensor([-0.3, 1.4, 0.5, 100.4 / 255]).view(1, 1, 4).repeat(3, 1, 1)
    assert np.asarray(to_pil(t))[0, :, 0].tolist() == [0, 255, 128, 100]
    with pytest.raises(ValueError):
        to_pil(torch.zeros(1, 3, 4, 4))


def test_corrupt_image_dispatch():
    img = _pil(2)
    pixels = to_tensor(img)
    assert np.all(np.asarray(corrupt_image(img, "blank")) == 128)  # 0.5 * 255 = 127.5, to even
    blurred = corrupt_image(img, "blur", radius=1.0)
    assert np.array_equal(np.asarray(blurred), np.asarray(to_pil(blur(pixels, 1.0))))
    masked = corrupt_image(img, "mask", seed=3, patch_size=4, fraction=0.25)
    assert np.array_equal(np.asarray(masked), np.asarray(to_pil(mask_patches(pixels, 4, 0.25, _gen(3)))))
    for mode in ("clip", "wrap"):
        noisy = corrupt_image(img, "diffusion", step=300, mode=mode, seed=7)
        ref = to_pil(diffusion_noise(pixels, 300, mode=mode, generator=_gen(7)))
        assert np.array_equal(np.asarray(noisy), np.asarray(ref))
        assert noisy.size == img.size and noisy.mode == "RGB"
    assert np.array_equal(np.asarray(corrupt_image(img, "diffusion", seed=1)),
                          np.asarray(corrupt_image(img, "diffusion", seed=1)))
    assert set(METHODS) == {"diffusion", "blur", "mask", "blank"}


def test_corrupt_image_rejects_unknown_method_and_bad_step():
    with pytest.raises(ValueError, match="diffusion, blur, mask, blank"):
        corrupt_image(_pil(), "jpeg")
    with pytest.raises(ValueError, match="step"):
        corrupt_image(_pil(), "diffusion", step=1000)


class _Recorder:
    """An image processor that keeps what it was given and returns one value per image."""

    def __init__(self):
        self.given = None

    def __call__(self, images, return_tensors):
        self.given = images
        flat = [im for entry in images for im in (entry if isinstance(entry, list) else [entry])]
        return {"pixel_values": torch.stack([to_tensor(im) for im in flat])}


def test_corrupt_pixels_corrupts_every_image_of_each_record_with_its_generator():
    from types import SimpleNamespace

    from vlalign.models.adapters import NestedImagesAdapter

    two, one = [_pil(1), _pil(2)], [_pil(3)]
    processor = SimpleNamespace(image_processor=_Recorder())
    noisy = corrupt_pixels(processor, [two, one], 500, "clip", [_gen(10), _gen(11)])
    assert [im.size for im in processor.image_processor.given] == [(20, 14)] * 3  # a flat list by default, record by record
    g = _gen(10)  # record 0's generator draws its images' noise in order
    expected = [to_tensor(to_pil(diffusion_noise(to_tensor(im), 500, generator=g))) for im in two]
    assert torch.equal(noisy[0], expected[0]) and torch.equal(noisy[1], expected[1])
    assert all(not torch.allclose(noisy[k], to_tensor(im), atol=0.1) for k, im in enumerate([*two, *one]))
    assert torch.equal(corrupt_pixels(processor, [two, one], 500, "clip", [_gen(10), _gen(11)]), noisy)
    assert torch.equal(corrupt_pixels(processor, [one], 500, "clip", [_gen(11)]), noisy[2:])  # apart, the same
    # One generator for everything draws image after image; single images stand for one-image records.
    assert torch.equal(corrupt_pixels(processor, [*two, *one], 500, "clip", _gen(4)),
                       corrupt_pixels(processor, [two, one], 500, "clip", _gen(4)))
    corrupt_pixels(processor, [two, one], 500, "clip", _gen(4), NestedImagesAdapter().images_arg)
    assert [len(shown) for shown in processor.image_processor.given] == [2, 1]  # one list per record for nested families
    with pytest.raises(ValueError, match="1 generators for 2 records"):
        corrupt_pixels(processor, [two, one], 500, "clip", [_gen(1)])
