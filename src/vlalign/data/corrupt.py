"""Image corruptions for building dispreferred (rejected) examples.

POVID (Zhou et al. 2024) and TPO corrupt the image with DDPM forward-process noise before the
image processor, so that the model's answer to the corrupted image drifts towards what the
language prior alone suggests. This module implements that corruption (:func:`diffusion_noise`)
plus a few simpler ones (:func:`blur`, :func:`mask_patches`, :func:`blank`) with one calling
convention:

* ``pixels`` is a float tensor with values in ``[0, 1]``, channels first: one image
  ``(C, H, W)`` or a batch ``(B, C, H, W)`` (``C`` is 3 for RGB);
* the result has the same shape, dtype ``float32``, on the same device;
* randomness comes from an optional :class:`torch.Generator` (``None``: torch's global RNG).
  Images of a batch are drawn one after the other from the same generator, so a batch gives
  the same result as calling the function on each image in order with that generator: results
  do not depend on how images are batched.

:func:`to_tensor`, :func:`to_pil` and :func:`corrupt_image` wrap these for PIL images.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

METHODS: tuple[str, ...] = ("diffusion", "blur", "mask", "blank")
"""The method names :func:`corrupt_image` accepts."""

DIFFUSION_MODES: tuple[str, ...] = ("clip", "wrap")
"""How :func:`diffusion_noise` maps noisy values outside ``[0, 1]`` back into range."""

NUM_STEPS = 1000
BETA_START = 1e-5
BETA_END = 5e-3


# --------------------------------------------------------------------------- helpers


def _check_pixels(pixels: torch.Tensor) -> None:
    if not isinstance(pixels, torch.Tensor):
        raise TypeError(f"pixels must be a torch.Tensor, got {type(pixels).__name__}")
    if pixels.ndim not in (3, 4):
        raise ValueError(f"pixels must have shape (C, H, W) or (B, C, H, W), got {tuple(pixels.shape)}")
    if not pixels.is_floating_point():
        raise ValueError(f"pixels must be a float tensor with values in [0, 1], got dtype {pixels.dtype}")


def _as_batch(pixels: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """``(B, C, H, W)`` float32 view of ``pixels`` and whether the input was a single image."""
    _check_pixels(pixels)
    single = pixels.ndim == 3
    batch = pixels.unsqueeze(0) if single else pixels
    return batch.to(torch.float32), single


def _is_int(value: object) -> bool:
    # bool is an Integral too, but step=True is a mistake, not step 1.
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _rng_device(generator: torch.Generator | None, pixels: torch.Tensor) -> torch.device:
    # A generator only draws on its own device; draw there and move the result, so a CPU
    # generator gives the same numbers whatever device the pixels are on.
    return generator.device if generator is not None else pixels.device


# --------------------------------------------------------------------------- diffusion noise


def noise_schedule(num_steps: int = NUM_STEPS, beta_start: float = BETA_START,
                   beta_end: float = BETA_END) -> tuple[torch.Tensor, torch.Tensor]:
    """The sigmoid DDPM noise schedule of POVID (reference code ``add_diffusion_noise``).

    ``betas[t] = sigmoid(linspace(-6, 6, num_steps))[t] * (beta_end - beta_start) + beta_start``
    and ``alpha_bars[t] = prod_{s <= t} (1 - betas[s])`` (0-based ``t``, step ``t`` included).
    With the defaults beta rises from about 2.2e-5 to about 5.0e-3, and
    ``sqrt(alpha_bar)`` / ``sqrt(1 - alpha_bar)`` are about 0.981 / 0.194 at ``t = 300``,
    0.863 / 0.505 at ``t = 500`` and 0.285 / 0.959 at ``t = 999``.

    Returns ``(betas, alpha_bars)``, both float64 of shape ``(num_steps,)``. Computed in float64
    (the reference uses float32) so the values are reproducible to rounding; the difference is
    far below one grey level.
    """
    if not _is_int(num_steps) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")
    if not 0.0 <= beta_start <= beta_end < 1.0:
        raise ValueError(f"need 0 <= beta_start <= beta_end < 1, got {beta_start!r}, {beta_end!r}")
    ramp = torch.sigmoid(torch.linspace(-6.0, 6.0, int(num_steps), dtype=torch.float64))
    betas = ramp * (beta_end - beta_start) + beta_start
    alpha_bars = torch.cumprod(1.0 - betas, dim=0)
    return betas, alpha_bars


def _wrap_uint8(scaled: torch.Tensor) -> torch.Tensor:
    """What a float tensor's ``.byte()`` cast gives on x86 CPU, as float: truncate toward zero,
    then reduce modulo 256 into ``[0, 255]``.

    The reference pipeline converts back to PIL with torchvision's ``ToPILImage``, which does
    ``x.mul(255).byte()`` with no clamp, so out-of-range values wrap around (-0.2 -> 205,
    1.3 -> 75). The rule is written out here instead of calling ``.byte()`` because that cast
    is undefined behaviour in C for out-of-range values and other platforms may saturate.
    """
    return torch.remainder(torch.trunc(scaled), 256.0)


def diffusion_noise(pixels: torch.Tensor, step: int = 500, *, mode: str = "clip",
                    generator: torch.Generator | None = None,
                    noise: torch.Tensor | None = None) -> torch.Tensor:
    """DDPM forward-process noise at ``step``, as in POVID (Zhou et al. 2024), reference code
    ``add_diffusion_noise``: ``x_t = sqrt(alpha_bar_t) * x0 + sqrt(1 - alpha_bar_t) * eps``.

    Args:
        pixels: ``(C, H, W)`` or ``(B, C, H, W)`` float, values in ``[0, 1]`` (the image as
            ``ToTensor`` gives it; no mean/std normalisation).
        step: 0-based diffusion step in ``[0, 999]`` (schedule of :func:`noise_schedule`);
            500 in POVID.
        mode: how values of ``x_t`` outside ``[0, 1]`` come back into range.
            ``"clip"`` clamps them. ``"wrap"`` reproduces the reference pipeline's uint8
            round trip (``ToPILImage``: ``x.mul(255).byte()`` with no clamp): ``x_t * 255``
            (in float32) is truncated toward zero and reduced modulo 256, then divided by
            255, so the result lies on the 1/255 grid and e.g. -0.2 becomes 205/255 and 1.3
            becomes 75/255. At step 500 roughly a third of the values of a mid-grey image
            fall outside ``[0, 1]``, so wrap is much harsher than clip.
        generator: source of ``eps``. For each image of the batch in order, ``eps`` is
            ``torch.randn((C, H, W), generator=generator, dtype=torch.float32)`` (drawn on the
            generator's device, or the pixels' device when ``generator`` is None).
        noise: ``eps`` given explicitly, same shape as ``pixels`` (for tests and for reusing
            one draw); then nothing is drawn and ``generator`` must be None.

    Returns:
        Same shape as ``pixels``, float32, values in ``[0, 1]``.
    """
    if not _is_int(step) or not 0 <= step < NUM_STEPS:
        raise ValueError(f"step must be an int in [0, {NUM_STEPS - 1}], got {step!r}")
    if mode not in DIFFUSION_MODES:
        raise ValueError(f"mode must be one of {DIFFUSION_MODES}, got {mode!r}")
    batch, single = _as_batch(pixels)
    if noise is not None:
        if generator is not None:
            raise ValueError("pass either noise or generator, not both")
        if tuple(noise.shape) != tuple(pixels.shape):
            raise ValueError(f"noise shape {tuple(noise.shape)} differs from pixels shape {tuple(pixels.shape)}")
        eps = noise.to(device=batch.device, dtype=torch.float32).reshape(batch.shape)
    else:
        # One draw per image, in order: a batch then matches per-image calls that share the
        # generator, so results do not depend on batch size.
        device = _rng_device(generator, batch)
        eps = torch.stack([torch.randn(tuple(batch.shape[1:]), generator=generator, dtype=torch.float32,
                                       device=device) for _ in range(batch.shape[0])]).to(batch.device)

    _, alpha_bars = noise_schedule()
    alpha_bar = float(alpha_bars[step])
    noisy = math.sqrt(alpha_bar) * batch + math.sqrt(1.0 - alpha_bar) * eps  # float32
    if mode == "clip":
        out = noisy.clamp(0.0, 1.0)
    else:
        # mul(255) in float32 like the reference, so values near a byte boundary fall the same way.
        out = _wrap_uint8(noisy * 255.0) / 255.0
    return out.squeeze(0) if single else out


# --------------------------------------------------------------------------- other corruptions


def _gaussian_kernel(sigma: float, half_width: int) -> torch.Tensor:
    """Normalised 1-D Gaussian of standard deviation ``sigma`` on ``[-half_width, half_width]``."""
    x = torch.arange(-half_width, half_width + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


def blur(pixels: torch.Tensor, radius: float) -> torch.Tensor:
    """Gaussian blur with standard deviation ``radius`` pixels (PIL's ``GaussianBlur`` uses
    ``radius`` the same way).

    Separable: one horizontal and one vertical 1-D convolution per channel. The kernel spans
    ``ceil(3 * radius)`` pixels each side (at most ``size - 1``, the limit of reflect padding;
    it is renormalised after truncation). Borders use reflect padding so edges are not
    darkened. ``radius == 0`` returns the image unchanged.

    Args:
        pixels: ``(C, H, W)`` or ``(B, C, H, W)`` float in ``[0, 1]``.
        radius: non-negative standard deviation in pixels.

    Returns:
        Same shape, float32, values in ``[0, 1]`` (a convex combination of input values).
    """
    if isinstance(radius, bool) or not isinstance(radius, numbers.Real) or not math.isfinite(radius) or radius < 0:
        raise ValueError(f"radius must be a finite number >= 0, got {radius!r}")
    batch, single = _as_batch(pixels)
    out = batch.clone()  # radius 0: an unchanged copy, never the input itself
    if radius > 0:
        b, c, h, w = batch.shape
        x = batch.reshape(b * c, 1, h, w)  # each channel blurred on its own
        for axis, size in ((3, w), (2, h)):
            half = min(math.ceil(3.0 * radius), size - 1)
            if half == 0:
                continue  # a 1-pixel axis: nothing to mix
            kernel = _gaussian_kernel(float(radius), half).to(device=x.device, dtype=x.dtype)
            if axis == 3:
                x = F.conv2d(F.pad(x, (half, half, 0, 0), mode="reflect"), kernel.view(1, 1, 1, -1))
            else:
                x = F.conv2d(F.pad(x, (0, 0, half, half), mode="reflect"), kernel.view(1, 1, -1, 1))
        out = x.reshape(b, c, h, w)
    return out.squeeze(0) if single else out


def mask_patches(pixels: torch.Tensor, patch_size: int = 16, fraction: float = 0.5,
                 generator: torch.Generator | None = None, fill: float = 0.0) -> torch.Tensor:
    """Set randomly chosen square patches of a grid to ``fill``.

    The grid has ``ceil(H / patch_size)`` rows and ``ceil(W / patch_size)`` columns of
    ``patch_size`` squares from the top-left corner (the last row/column is cut at the image
    edge when the size does not divide). Each image gets exactly
    ``round(fraction * number_of_patches)`` distinct patches (Python's ``round``: halves go
    to even), chosen as the first ones of
    ``torch.randperm(number_of_patches, generator=generator)``, drawn per image in order; all
    channels of a chosen patch are filled.

    Args:
        pixels: ``(C, H, W)`` or ``(B, C, H, W)`` float in ``[0, 1]``.
        patch_size: side of a patch in pixels, positive int.
        fraction: share of patches to mask, in ``[0, 1]``.
        generator: source of the patch choice.
        fill: the value masked pixels get (0: black).

    Returns:
        Same shape, float32; a new tensor (the input is not modified).
    """
    if not _is_int(patch_size) or patch_size < 1:
        raise ValueError(f"patch_size must be a positive int, got {patch_size!r}")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction!r}")
    batch, single = _as_batch(pixels)
    out = batch.clone()
    _, _, h, w = out.shape
    rows, cols = -(-h // patch_size), -(-w // patch_size)
    total = rows * cols
    count = round(fraction * total)
    device = _rng_device(generator, out)
    for image in out:
        chosen = torch.randperm(total, generator=generator, device=device)[:count].tolist()
        for index in chosen:
            top, left = (index // cols) * patch_size, (index % cols) * patch_size
            image[:, top:top + patch_size, left:left + patch_size] = fill
    return out.squeeze(0) if single else out


def blank(pixels: torch.Tensor, value: float = 0.5) -> torch.Tensor:
    """A constant image of the same shape: every value is ``value`` (0.5: mid grey).

    The extreme corruption: nothing of the image is left, only the text prior.

    Returns:
        Same shape as ``pixels``, float32, all ``value``.
    """
    _check_pixels(pixels)
    return torch.full(pixels.shape, float(value), dtype=torch.float32, device=pixels.device)


# --------------------------------------------------------------------------- PIL


def to_tensor(image: Image.Image) -> torch.Tensor:
    """A PIL image as ``(3, H, W)`` float32 in ``[0, 1]`` (byte ``k`` becomes ``k / 255``).

    Non-RGB images are converted with PIL's ``convert("RGB")`` (an alpha channel is dropped,
    not composited).
    """
    if image.mode != "RGB":
        image = image.convert("RGB")
    array = np.asarray(image, dtype=np.uint8)  # (H, W, 3)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).to(torch.float32) / 255.0


def to_pil(pixels: torch.Tensor) -> Image.Image:
    """A ``(3, H, W)`` float tensor with values in ``[0, 1]`` as an RGB PIL image.

    Values are clamped to ``[0, 1]`` and rounded to the nearest byte, so
    ``to_pil(to_tensor(image))`` gives back ``image`` (as RGB) exactly. (Unlike torchvision's
    ``ToPILImage``, nothing wraps around: use ``diffusion_noise(mode="wrap")`` for that.)
    """
    _check_pixels(pixels)
    if pixels.ndim != 3 or pixels.shape[0] != 3:
        raise ValueError(f"to_pil needs shape (3, H, W), got {tuple(pixels.shape)}")
    array = torch.round(pixels.detach().to("cpu", torch.float32).clamp(0.0, 1.0) * 255.0)
    return Image.fromarray(array.to(torch.uint8).permute(1, 2, 0).contiguous().numpy())


def corrupt_image(image: Image.Image, method: str, *, step: int = 500, mode: str = "clip",
                  seed: int | None = None, **kwargs) -> Image.Image:
    """Corrupt a PIL image with one of :data:`METHODS`; returns a new RGB image, same size.

    * ``"diffusion"``: :func:`diffusion_noise` at ``step`` with ``mode`` (POVID's setting is
      step 500; ``mode="wrap"`` reproduces the reference pipeline's uint8 wrap-around);
    * ``"blur"``: :func:`blur`, needs ``radius=...``;
    * ``"mask"``: :func:`mask_patches` (``patch_size``, ``fraction``, ``fill``);
    * ``"blank"``: :func:`blank` (``value``).

    ``step`` and ``mode`` only affect ``"diffusion"``; other keyword arguments go to the
    method's function. ``seed`` seeds a fresh CPU :class:`torch.Generator` for the random
    methods, so the same seed gives the same image; ``None`` uses torch's global RNG.
    """
    if method not in METHODS:
        raise ValueError(f"unknown corruption method {method!r}; valid methods: {', '.join(METHODS)}")
    pixels = to_tensor(image)
    generator = torch.Generator().manual_seed(int(seed)) if seed is not None else None
    if method == "diffusion":
        out = diffusion_noise(pixels, step, mode=mode, generator=generator, **kwargs)
    elif method == "blur":
        out = blur(pixels, **kwargs)
    elif method == "mask":
        out = mask_patches(pixels, generator=generator, **kwargs)
    else:
        out = blank(pixels, **kwargs)
    return to_pil(out)


def corrupt_pixels(processor, images: Sequence[Image.Image | Sequence[Image.Image]], step: int, mode: str,
                   generator: torch.Generator | list[torch.Generator],
                   images_arg: Callable[[list[list[Image.Image]]], list] | None = None) -> torch.Tensor:
    """POVID's and TPO's corrupted images: diffusion noise in [0, 1] pixel space, then the processor as usual.

    ``images`` has one entry per record (prompt): its image, or its images in the order the
    prompt shows them. Every image is corrupted. ``generator`` is one generator for all the
    images in turn, or one per record, which draws that record's images' noise in order (so a
    record's noise does not depend on the other records of its batch). ``images_arg`` puts the
    images (one list per prompt) in the form the family's image processor takes for a batch
    (:meth:`vlalign.models.adapters.Adapter.images_arg`; default: all of them in one flat list).
    Returns the processor's ``pixel_values`` of the corrupted images (the shape of the clean ones').
    """
    records = [[entry] if isinstance(entry, Image.Image) else list(entry) for entry in images]
    generators = generator if isinstance(generator, list) else [generator] * len(records)
    if len(generators) != len(records):
        raise ValueError(f"{len(generators)} generators for {len(records)} records")
    noisy = [[to_pil(diffusion_noise(to_tensor(im), step, mode=mode, generator=g)) for im in shown]
             for shown, g in zip(records, generators)]
    batch = images_arg(noisy) if images_arg is not None else [im for shown in noisy for im in shown]
    return processor.image_processor(batch, return_tensors="pt")["pixel_values"]
