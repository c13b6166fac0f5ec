"""A request body -> float32 NCHW images in [0, 1], or a `BadRequest` with its HTTP status and one line.

Two forms (docs/deploy.md, "Serve over HTTP"):
- image bytes: one PNG or JPEG (content type image/png, image/jpeg or application/octet-stream) of
  exactly the model's height and width, grayscale (mode L) for a 1-channel model, RGB for 3 channels;
  8-bit pixels are divided by 255, as training does. Nothing is resized or converted: a wrong image
  is the client's to fix, not ours to guess.
- JSON (application/json): {"image": ...} one image as nested lists of shape (C, H, W), or (H, W) for
  a 1-channel model; {"images": [...]} a batch of those. Values are floats in [0, 1].
"""

from __future__ import annotations

import io
import json

import numpy as np
# the two decoders are imported with the server, not by the first request
from PIL import Image, JpegImagePlugin, PngImagePlugin, UnidentifiedImageError  # noqa: F401

IMAGE_TYPES = ("image/png", "image/jpeg", "application/octet-stream")
MODES = {1: "L", 3: "RGB"}  # channels -> the one Pillow mode accepted


class BadRequest(Exception):
    """A request the server refuses: its HTTP status, a one-line reason and a short label for metrics."""

    def __init__(self, status: int, reason: str, label: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.label = label


def _shape_text(shape: tuple[int, ...]) -> str:
    c, h, w = shape
    kind = {1: "grayscale", 3: "RGB"}.get(c, f"{c}-channel")
    return f"{kind} {w}x{h}"


def decode_image(body: bytes, shape: tuple[int, int, int]) -> np.ndarray:
    """One PNG/JPEG -> (1, C, H, W) float32, checked against the model's (C, H, W) before decoding."""
    try:
        image = Image.open(io.BytesIO(body), formats=("PNG", "JPEG"))
    except (UnidentifiedImageError, OSError, ValueError):
        raise BadRequest(400, "the body is not a PNG or JPEG image", "not_image") from None
    c, h, w = shape
    if image.size != (w, h):
        raise BadRequest(422, f"the image is {image.size[0]}x{image.size[1]}; this model takes "
                              f"{_shape_text(shape)} images (nothing is resized)", "wrong_shape")
    if MODES.get(c) != image.mode:
        raise BadRequest(422, f"the image has mode {image.mode} ({len(image.getbands())} channels); this model takes "
                              f"{_shape_text(shape)} images (mode {MODES.get(c, '?')})", "wrong_shape")
    try:
        pixels = np.asarray(image, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError):  # truncated or corrupt image data
        raise BadRequest(400, "the image could not be decoded (truncated or corrupt)", "not_image") from None
    pixels = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
    return (pixels.astype(np.float32) / 255.0)[None]


def decode_json(body: bytes, shape: tuple[int, int, int], max_images: int) -> np.ndarray:
    """{"image": (C,H,W)} or {"images": [(C,H,W), ...]} -> (N, C, H, W) float32 in [0, 1]."""
    try:
        doc = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BadRequest(400, f"the body is not valid JSON ({getattr(err, 'msg', err)})", "bad_json") from None
    if not isinstance(doc, dict) or len({"image", "images"} & doc.keys()) != 1:
        raise BadRequest(400, 'the JSON must be an object with one key "image" (one image) or "images" (a list)',
                         "bad_json")
    many = "images" in doc
    items = doc["images"] if many else [doc["image"]]
    if not isinstance(items, list) or not items:
        raise BadRequest(400, '"images" must be a non-empty list of images', "bad_json")
    if len(items) > max_images:
        raise BadRequest(413, f"{len(items)} images in one request; at most {max_images}", "too_large")
    try:
        x = np.asarray(items, dtype=np.float32)
    except (ValueError, TypeError):
        raise BadRequest(422, f"the images must be nested lists of numbers of shape {list(shape)} each", "wrong_shape") from None
    c, h, w = shape
    got = list(x.shape[1:]) if x.ndim >= 2 else list(x.shape)  # as sent
    if x.ndim == 3 and c == 1:
        x = x[:, None]
    if x.shape[1:] != shape:
        raise BadRequest(422, f"each image has shape {got}; this model takes {list(shape)}"
                              + (f" (or [{h}, {w}])" if c == 1 else ""), "wrong_shape")
    if not np.isfinite(x).all() or x.min() < 0 or x.max() > 1:
        raise BadRequest(422, "pixel values must be floats in [0, 1] (divide 8-bit pixels by 255)", "bad_values")
    return x


def decode(body: bytes, content_type: str, shape: tuple[int, int, int], max_images: int) -> np.ndarray:
    """The request body as (N, C, H, W) float32 images, by its content type."""
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind == "application/json":
        return decode_json(body, shape, max_images)
    if kind in IMAGE_TYPES:
        return decode_image(body, shape)
    raise BadRequest(415, f"content type {kind or '(none)'!r}; send image/png, image/jpeg or application/json",
                     "unsupported_type")
