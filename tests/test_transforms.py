"""ember.transforms against hand-computed numpy expectations."""
import numpy as np
import pytest

import ember
from ember.frontend import transforms as T


def hwc_image(height=5, width=4, channels=3):
    return (np.arange(height * width * channels) * 7 % 256).astype(np.uint8).reshape(height, width, channels)


def chw(height=4, width=5, channels=2, dtype=np.float32):
    return ember.from_numpy(np.random.default_rng(0).standard_normal((channels, height, width)).astype(dtype))


def numpy_bilinear(image, out_height, out_width):
    """Direct bilinear interpolation with align_corners=False (torch antialias=False), per pixel."""
    in_height, in_width = image.shape[-2:]
    out = np.zeros(image.shape[:-2] + (out_height, out_width))
    for i in range(out_height):
        for j in range(out_width):
            y = max((i + 0.5) * in_height / out_height - 0.5, 0.0)
            x = max((j + 0.5) * in_width / out_width - 0.5, 0.0)
            y0, x0 = int(y), int(x)
            y1, x1 = min(y0 + 1, in_height - 1), min(x0 + 1, in_width - 1)
            dy, dx = y - y0, x - x0
            out[..., i, j] = ((1 - dy) * (1 - dx) * image[..., y0, x0] + (1 - dy) * dx * image[..., y0, x1]
                              + dy * (1 - dx) * image[..., y1, x0] + dy * dx * image[..., y1, x1])
    return out


# ----------------------------------------------------------------------------- ToTensor / Normalize
def test_to_tensor_layout_and_scaling():
    image = hwc_image()
    result = T.ToTensor()(image)
    assert result.dtype is ember.float32 and tuple(result.shape) == (3, 5, 4)
    np.testing.assert_array_equal(result._data, image.transpose(2, 0, 1).astype(np.float32) / np.float32(255))
    gray = T.to_tensor(np.array([[0, 255]], dtype=np.uint8))
    assert tuple(gray.shape) == (1, 1, 2) and gray.tolist() == [[[0.0, 1.0]]]
    floats = T.to_tensor(np.full((2, 2, 1), 7.5, dtype=np.float64))
    assert floats.dtype is ember.float64 and floats.tolist() == [[[7.5, 7.5], [7.5, 7.5]]]  # not rescaled
    already = ember.ones(3, 2, 2)
    assert T.to_tensor(already) is already
    with pytest.raises(ValueError, match="2/3 dimensional"):
        T.to_tensor(np.zeros((1, 1, 1, 1)))


def test_normalize_per_channel_and_inplace():
    image = chw(channels=3)
    mean, std = [0.1, 0.2, 0.3], [0.5, 2.0, 4.0]
    expected = (image._data - np.array(mean, np.float32)[:, None, None]) / np.array(std, np.float32)[:, None, None]
    np.testing.assert_allclose(T.Normalize(mean, std)(image)._data, expected, rtol=1e-6)
    copy = ember.tensor(image._data)
    assert T.Normalize(mean, std, inplace=True)(copy) is copy
    np.testing.assert_allclose(copy._data, expected, rtol=1e-6)
    with pytest.raises(ValueError, match="std evaluated to zero"):
        T.normalize(image, mean, [1.0, 0.0, 1.0])
    with pytest.raises(TypeError, match="float tensor"):
        T.normalize(ember.zeros(3, 2, 2, dtype=ember.uint8), mean, std)
    with pytest.raises(ValueError, match="mean has 2 values but the image has 3 channels"):
        T.normalize(image, [0.0, 0.0], std)


def test_normalize_is_differentiable():
    image = ember.ones(2, 2, 2, requires_grad=True)
    T.normalize(image, [0.0, 1.0], [2.0, 4.0]).sum().backward()
    assert image.grad._data[:, 0, 0].tolist() == [0.5, 0.25]


def test_compose_repr_and_application():
    pipeline = T.Compose([T.ToTensor(), T.Normalize(mean=[0.5], std=[0.5])])
    assert repr(pipeline) == "Compose(\n    ToTensor()\n    Normalize(mean=[0.5], std=[0.5])\n)"
    result = pipeline(np.array([[0, 255]], dtype=np.uint8))
    assert result.tolist() == [[[-1.0, 1.0]]]
    assert repr(T.RandomCrop(32, padding=4)) == "RandomCrop(size=(32, 32), padding=4)"
    assert repr(T.RandomHorizontalFlip()) == "RandomHorizontalFlip(p=0.5)"
    assert repr(T.Resize(8)) == "Resize(size=8, interpolation=bilinear, max_size=None, antialias=True)"
    assert repr(T.RandomRotation(30)) == ("RandomRotation(degrees=[-30.0, 30.0], interpolation=nearest, "
                                          "expand=False, fill=0)")
    assert repr(T.Lambda(abs)) == "Lambda()" and repr(T.CenterCrop(3)) == "CenterCrop(size=(3, 3))"


# ----------------------------------------------------------------------------- crops and pads
def test_random_crop_with_padding_covers_every_position_under_a_seed():
    image = ember.arange(1, 17, dtype=ember.float32).reshape(1, 4, 4)
    padded = np.pad(image._data, ((0, 0), (2, 2), (2, 2)))  # zero fill, 8x8
    crop = T.RandomCrop(4, padding=2)
    ember.manual_seed(0)
    seen = set()
    for _ in range(400):
        result = crop(image)._data
        matches = [(top, left) for top in range(5) for left in range(5)
                   if np.array_equal(padded[:, top:top + 4, left:left + 4], result)]
        assert len(matches) == 1
        seen.add(matches[0])
    assert seen == {(top, left) for top in range(5) for left in range(5)}
    ember.manual_seed(0)
    first = [crop(image).tolist() for _ in range(5)]
    ember.manual_seed(0)
    assert [crop(image).tolist() for _ in range(5)] == first


@pytest.mark.parametrize("mode", ["constant", "edge", "reflect", "symmetric"])
def test_pad_modes_match_numpy(mode):
    image = hwc_image(3, 4, 2)
    expected = np.pad(image, ((2, 1), (1, 3), (0, 0)), mode=mode)
    np.testing.assert_array_equal(T.pad(image, [1, 2, 3, 1], padding_mode=mode), expected)
    tensor = ember.from_numpy(image.transpose(2, 0, 1).copy())
    np.testing.assert_array_equal(T.pad(tensor, [1, 2, 3, 1], padding_mode=mode)._data, expected.transpose(2, 0, 1))


def test_pad_fill_per_channel_and_pad_if_needed():
    image = np.zeros((1, 1, 3), np.uint8)
    padded = T.pad(image, 1, fill=(10, 20, 30))
    assert padded.shape == (3, 3, 3) and padded[0, 0].tolist() == [10, 20, 30] and padded[1, 1].tolist() == [0, 0, 0]
    grown = T.RandomCrop((3, 5), pad_if_needed=True, fill=9)(ember.zeros(1, 2, 2))
    assert tuple(grown.shape) == (1, 3, 5) and grown._data.sum() == 9 * (15 - 4)
    with pytest.raises(ValueError, match=r"required crop size \(5, 5\) is larger than the input image size \(2, 2\)"):
        T.RandomCrop(5)(ember.zeros(1, 2, 2))


def test_center_crop_and_crop_outside_the_image():
    image = ember.arange(30.).reshape(1, 5, 6)
    np.testing.assert_array_equal(T.CenterCrop((3, 2))(image)._data, image._data[:, 1:4, 2:4])
    np.testing.assert_array_equal(T.center_crop(hwc_image(5, 4), 2), hwc_image(5, 4)[2:4, 1:3])
    bigger = T.CenterCrop(4)(ember.ones(1, 2, 2))
    assert bigger.tolist() == [[[0, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]]]


# ----------------------------------------------------------------------------- flips
def test_flips_on_tensors_and_numpy_images():
    image = hwc_image()
    np.testing.assert_array_equal(T.RandomHorizontalFlip(p=1.0)(image), image[:, ::-1])
    np.testing.assert_array_equal(T.RandomVerticalFlip(p=1.0)(image), image[::-1])
    assert T.RandomHorizontalFlip(p=0.0)(image) is image
    tensor = chw()
    np.testing.assert_array_equal(T.RandomHorizontalFlip(p=1.0)(tensor)._data, tensor._data[..., ::-1])
    np.testing.assert_array_equal(T.RandomVerticalFlip(p=1.0)(tensor)._data, tensor._data[..., ::-1, :])
    ember.manual_seed(1)
    flips = [T.RandomHorizontalFlip()(tensor)._data[0, 0, 0] != tensor._data[0, 0, 0] for _ in range(200)]
    assert 60 < sum(flips) < 140


# ----------------------------------------------------------------------------- resize
@pytest.mark.parametrize("out_size", [(8, 10), (3, 7), (2, 2), (4, 5)])
def test_resize_without_antialias_matches_direct_bilinear(out_size):
    image = chw(4, 5, dtype=np.float64)
    result = T.Resize(out_size, antialias=False)(image)
    assert tuple(result.shape) == (2,) + out_size and result.dtype is ember.float64
    np.testing.assert_allclose(result._data, numpy_bilinear(image._data, *out_size), rtol=1e-12, atol=1e-12)


def test_resize_upscaling_is_the_same_with_antialias_and_downscaling_averages():
    image = chw(4, 5, dtype=np.float64)
    np.testing.assert_allclose(T.resize(image, (9, 11))._data, numpy_bilinear(image._data, 9, 11), atol=1e-12)
    row = ember.tensor([[[0.0, 1.0, 2.0, 3.0]]], dtype=ember.float64)
    # halving with the widened triangle filter: taps (0.75, 0.75, 0.25) / 1.75 around centre 1.0
    expected = (0.75 * 0 + 0.75 * 1 + 0.25 * 2) / 1.75
    assert T.resize(row, (1, 2))._data[0, 0, 0] == pytest.approx(expected)
    assert T.resize(row, (1, 2), antialias=False)._data[0, 0].tolist() == [0.5, 2.5]


def test_resize_sizes_nearest_and_uint8():
    assert T.resize(ember.zeros(3, 20, 40), 10).shape == (3, 10, 20)  # smaller edge
    assert T.resize(ember.zeros(3, 40, 20), 10).shape == (3, 20, 10)
    assert T.resize(ember.zeros(3, 20, 40), 10, max_size=15).shape == (3, 7, 15)
    assert T.resize(hwc_image(4, 6), [2]).shape == (2, 3, 3)
    image = ember.arange(16.).reshape(1, 4, 4)
    nearest = T.resize(image, (2, 2), interpolation=T.InterpolationMode.NEAREST)
    assert nearest.tolist() == [[[0.0, 2.0], [8.0, 10.0]]]
    bytes_image = np.array([[0, 255]], dtype=np.uint8)
    widened = T.resize(bytes_image, (1, 4), antialias=False)
    assert widened.dtype == np.uint8
    np.testing.assert_array_equal(widened, np.round(numpy_bilinear(bytes_image.astype(float), 1, 4)).astype(np.uint8))


# ----------------------------------------------------------------------------- rotation
def test_rotation_by_zero_and_quarter_turns_is_exact():
    square = chw(5, 5, channels=3)
    for interpolation in ("nearest", "bilinear"):
        np.testing.assert_array_equal(T.rotate(square, 0.0, interpolation)._data, square._data)
        for turns in (1, 2, 3):
            rotated = T.rotate(square, 90.0 * turns, interpolation)._data
            np.testing.assert_array_equal(rotated, np.rot90(square._data, turns, axes=(1, 2)))
    image = hwc_image(4, 4)
    np.testing.assert_array_equal(T.RandomRotation((90, 90))(image), np.rot90(image, 1, axes=(0, 1)))
    np.testing.assert_array_equal(T.RandomRotation(0)(square)._data, square._data)


def test_rotation_fill_expand_and_bilinear_values():
    ones = ember.ones(1, 4, 4)
    rotated = T.rotate(ones, 45, fill=5.0)
    corner_values = {rotated._data[0, 0, 0], rotated._data[0, 0, 3], rotated._data[0, 3, 0], rotated._data[0, 3, 3]}
    assert corner_values == {5.0} and rotated._data[0, 1:3, 1:3].tolist() == [[1, 1], [1, 1]]
    assert T.rotate(ember.ones(1, 4, 6), 90, expand=True).shape == (1, 6, 4)
    # bilinear at 45 degrees: the output centre of a 3x3 image reads the input centre exactly,
    # and a pixel next to it reads a weighted mix computed by hand
    image = ember.tensor([[[0.0, 1.0, 2.0], [3.0, 4.0, 5.0], [6.0, 7.0, 8.0]]])
    result = T.rotate(image, 45, "bilinear")._data[0]
    assert result[1, 1] == pytest.approx(4.0)
    c = np.sqrt(0.5)
    x, y = 1 + c, 1 + c  # output (row 1, column 2) comes from input (x=1+cos45, y=1+sin45)
    fx, fy = x - 1, y - 1
    expected = (1 - fy) * (1 - fx) * 4 + (1 - fy) * fx * 5 + fy * (1 - fx) * 7 + fy * fx * 8
    assert result[1, 2] == pytest.approx(expected, rel=1e-6)


def test_random_rotation_angles_come_from_the_seed():
    ember.manual_seed(5)
    first = [T.RandomRotation.get_params([-30.0, 30.0]) for _ in range(3)]
    ember.manual_seed(5)
    assert [T.RandomRotation.get_params([-30.0, 30.0]) for _ in range(3)] == first
    assert all(-30 <= angle <= 30 for angle in first) and len(set(first)) == 3


def test_geometric_transforms_keep_gradients():
    image = ember.ones(1, 3, 3, requires_grad=True)
    out = T.rotate(T.resize(T.pad(T.hflip(image), 1, padding_mode="edge"), (4, 4)), 90, "bilinear")
    out.sum().backward()
    assert image.grad is not None and image.grad._data.sum() == pytest.approx(16.0)


def test_bad_inputs_are_named():
    with pytest.raises(TypeError, match="RandomCrop|crop: img should be a Tensor"):
        T.crop([1, 2], 0, 0, 1, 1)
    with pytest.raises(TypeError, match="Normalize: img should be a Tensor .* apply ToTensor first"):
        T.Normalize([0], [1])(hwc_image())
    with pytest.raises(ValueError, match="padding_mode"):
        T.Pad(1, padding_mode="wrap")
    with pytest.raises(TypeError, match="should be callable"):
        T.Lambda(3)
