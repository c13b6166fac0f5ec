"""Request bodies -> images, without a server: the forms accepted and the reason each refusal gives."""

import io
import json

import numpy as np
import pytest

pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

from ddnn.deploy.serve.inputs import BadRequest, decode  # noqa: E402

SHAPE = (1, 8, 8)


def encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def refusal(body: bytes, content_type: str, shape=SHAPE, max_images: int = 4) -> BadRequest:
    with pytest.raises(BadRequest) as info:
        decode(body, content_type, shape, max_images)
    return info.value


def test_png_pixels_are_divided_by_255_and_jpeg_is_read_too():
    pixels = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    x = decode(encoded(Image.fromarray(pixels), "PNG"), "image/png", SHAPE, 4)
    assert x.shape == (1, 1, 8, 8) and x.dtype == np.float32
    np.testing.assert_array_equal(x[0, 0], pixels / np.float32(255))
    flat = Image.fromarray(np.full((8, 8), 200, dtype=np.uint8))
    y = decode(encoded(flat, "JPEG"), "image/jpeg; charset=binary", SHAPE, 4)
    assert abs(float(y.mean()) - 200 / 255) < 0.01  # JPEG is lossy, a flat image nearly exact
    rgb = decode(encoded(Image.new("RGB", (8, 8), (255, 0, 0)), "PNG"), "application/octet-stream", (3, 8, 8), 4)
    assert rgb.shape == (1, 3, 8, 8) and rgb[0, :, 0, 0].tolist() == [1.0, 0.0, 0.0]  # channels first


def test_json_one_image_or_a_batch_with_or_without_the_channel_axis():
    one = decode(json.dumps({"image": [[0.5] * 8] * 8}).encode(), "application/json", SHAPE, 4)
    batch = decode(json.dumps({"images": [[[[0.25] * 8] * 8]] * 3}).encode(), "application/json", SHAPE, 4)
    assert one.shape == (1, 1, 8, 8) and float(one.max()) == 0.5
    assert batch.shape == (3, 1, 8, 8) and float(batch.min()) == 0.25


@pytest.mark.parametrize("image, status, words", [
    (Image.new("RGBA", (8, 8)), 422, "mode RGBA (4 channels)"),
    (Image.new("L", (9, 8)), 422, "the image is 9x8; this model takes grayscale 8x8 images"),
    (Image.new("P", (8, 8)), 422, "mode P"),
])
def test_images_of_another_shape_or_mode_are_refused(image, status, words):
    err = refusal(encoded(image, "PNG"), "image/png")
    assert err.status == status and words in err.reason and err.label == "wrong_shape"


def test_other_formats_truncated_files_and_content_types_are_refused():
    gif = encoded(Image.new("L", (8, 8)), "GIF")
    assert refusal(gif, "image/png").status == 400  # only PNG and JPEG are opened
    png = encoded(Image.fromarray(np.random.default_rng(0).integers(0, 255, (8, 8), dtype=np.uint8)), "PNG")
    assert refusal(png[: len(png) // 2], "image/png").reason.startswith("the image could not be decoded")
    err = refusal(b"{}", "text/csv")
    assert err.status == 415 and "text/csv" in err.reason


@pytest.mark.parametrize("doc, status, words", [
    ({"img": []}, 400, 'one key "image"'),
    ({"image": [[0.5] * 8] * 7}, 422, "each image has shape [7, 8]"),
    ({"image": [[2.0] * 8] * 8}, 422, "[0, 1]"),
    ({"image": [[float("nan")] * 8] * 8}, 422, "[0, 1]"),
    ({"images": [[[0.5] * 8] * 8] * 5}, 413, "5 images in one request; at most 4"),
    ({"images": [[0.5, 0.5], [0.5]]}, 422, "nested lists of numbers"),
])
def test_json_refusals_name_the_problem(doc, status, words):
    err = refusal(json.dumps(doc).encode(), "application/json")
    assert err.status == status and words in err.reason and "\n" not in err.reason
