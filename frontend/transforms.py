"""`ember.transforms`: torchvision.transforms' image transforms for data pipelines (no PIL).

Images are tensors (..., C, H, W) or, where torchvision takes a PIL image, numpy arrays
(H, W, C) or (H, W); a transform returns the kind it was given. The pixels are computed with
tensor operations (slices, flips, pads, index_select, matmul with interpolation weights), so a
transform of a tensor that requires grad stays differentiable; only the index and weight
tables are numpy bookkeeping. Random choices come from ember's default generator.
"""
import math
import numbers
from enum import Enum

import numpy as np

from ember import dtypes
from ember.ops import PRIMITIVES as P
from .creation import tensor as make_tensor, from_numpy
from .math_ops import where, to_dtype
from .random import generator_or_default
from .shape_ops import index_select
from .tensor import Tensor


class InterpolationMode(Enum):
    NEAREST = "nearest"
    BILINEAR = "bilinear"


# ----------------------------------------------------------------------------- image kinds
def _as_tensor_image(img, op):
    """(tensor with H, W last, function turning a result back into the caller's kind)."""
    if isinstance(img, Tensor):
        if img.ndim < 2:
            raise ValueError(f"{op}: expected a tensor image (..., H, W), got shape {list(img.shape)}")
        return img, lambda result: result
    if isinstance(img, np.ndarray):
        if img.ndim == 2:
            return from_numpy(img), lambda result: np.ascontiguousarray(result._data)
        if img.ndim == 3:
            return (from_numpy(np.moveaxis(img, -1, 0)),
                    lambda result: np.ascontiguousarray(np.moveaxis(result._data, 0, -1)))
        raise ValueError(f"{op}: a numpy image should be (H, W) or (H, W, C), got shape {list(img.shape)}")
    raise TypeError(f"{op}: img should be a Tensor (..., H, W) or a numpy array (H, W[, C]), "
                    f"got {type(img).__name__}")


def _image_size(img):
    """(height, width) of a tensor (..., H, W) or numpy (H, W[, C]) image."""
    if isinstance(img, np.ndarray):
        return img.shape[0], img.shape[1]
    return img.shape[-2], img.shape[-1]


def _pair(size, what):
    if isinstance(size, numbers.Number):
        return int(size), int(size)
    if isinstance(size, (tuple, list)) and len(size) == 1:
        return int(size[0]), int(size[0])
    if isinstance(size, (tuple, list)) and len(size) == 2:
        return int(size[0]), int(size[1])
    raise ValueError(f"{what} should be an int or a sequence of one or two ints, got {size!r}")


def _fill_tensor(fill, image, op):
    """`fill` (a number, or one value per channel) as a tensor broadcasting over (..., C, H, W)."""
    values = [0] if fill is None else ([fill] if isinstance(fill, numbers.Number) else list(fill))
    channels = image.shape[-3] if image.ndim >= 3 else 1
    if len(values) not in (1, channels):
        raise ValueError(f"{op}: fill has {len(values)} values but the image has {channels} channels")
    shape = (len(values), 1, 1) if len(values) > 1 else ()
    return make_tensor(np.asarray(values).reshape(shape), dtype=image.dtype)


def _compute_dtype(image):
    return image.dtype if image.is_floating_point() else dtypes.float32


def _back_to(result, dtype):
    """Interpolated values back to the image's dtype (integers rounded and clamped, as torchvision)."""
    if dtype.is_floating_point:
        return to_dtype(result, dtype)
    info = np.iinfo(dtype.np) if dtype is not dtypes.bool_ else None
    result = result.round()
    if info is not None:
        result = result.clamp(float(info.min), float(info.max))
    return to_dtype(result, dtype)


# ----------------------------------------------------------------------------- functional forms
def to_tensor(pic):
    """numpy (H, W, C) or (H, W) -> tensor (C, H, W); uint8 scaled to float in [0, 1], other
    dtypes kept as they are. Tensors pass through."""
    if isinstance(pic, Tensor):
        return pic
    if not isinstance(pic, np.ndarray):
        raise TypeError(f"ToTensor: pic should be a numpy array (H, W[, C]) or a Tensor, got {type(pic).__name__}")
    if pic.ndim not in (2, 3):
        raise ValueError(f"ToTensor: pic should be 2/3 dimensional, got {pic.ndim} dimensions")
    chw = np.ascontiguousarray((pic[:, :, None] if pic.ndim == 2 else pic).transpose(2, 0, 1))
    if chw.dtype == np.uint8:
        return Tensor._wrap((chw / 255).astype(dtypes.defaults.floating.np))
    return make_tensor(chw)


def normalize(tensor, mean, std, inplace=False):
    """(tensor - mean) / std per channel of a float tensor (..., C, H, W)."""
    if not isinstance(tensor, Tensor):
        raise TypeError(f"Normalize: img should be a Tensor (..., C, H, W), got {type(tensor).__name__}; "
                        f"apply ToTensor first")
    if not tensor.is_floating_point():
        raise TypeError(f"Normalize: input tensor should be a float tensor, got {tensor.dtype}")
    if tensor.ndim < 3:
        raise ValueError(f"Normalize: expected a tensor image of size (..., C, H, W), got {list(tensor.shape)}")
    channels = tensor.shape[-3]
    mean_values, std_values = np.atleast_1d(np.asarray(mean, np.float64)), np.atleast_1d(np.asarray(std, np.float64))
    for name, values in (("mean", mean_values), ("std", std_values)):
        if values.ndim != 1 or len(values) not in (1, channels):
            raise ValueError(f"Normalize: {name} has {values.size} values but the image has {channels} channels")
    std_cast = std_values.astype(tensor.dtype.np)
    if (std_cast == 0).any():
        raise ValueError(f"Normalize: std evaluated to zero after conversion to {tensor.dtype}, "
                         f"leading to division by zero")
    mean_tensor = make_tensor(mean_values.reshape(-1, 1, 1), dtype=tensor.dtype)
    std_tensor = make_tensor(std_cast.reshape(-1, 1, 1), dtype=tensor.dtype)
    if inplace:
        return tensor.sub_(mean_tensor).div_(std_tensor)
    return (tensor - mean_tensor) / std_tensor


def hflip(img):
    image, restore = _as_tensor_image(img, "hflip")
    return restore(image.flip(-1))


def vflip(img):
    image, restore = _as_tensor_image(img, "vflip")
    return restore(image.flip(-2))


def _padding_ltrb(padding, op):
    if isinstance(padding, numbers.Number):
        padding = [padding]
    padding = [int(p) for p in padding]
    if len(padding) == 1:
        padding = padding * 4
    elif len(padding) == 2:
        padding = [padding[0], padding[1], padding[0], padding[1]]
    elif len(padding) != 4:
        raise ValueError(f"{op}: padding must be an int or a 1, 2, or 4 element sequence, got {len(padding)} elements")
    if min(padding) < 0:
        raise ValueError(f"{op}: negative padding {padding} is not supported")
    return padding


def _pad_tensor(image, left, top, right, bottom, fill, padding_mode, op):
    if padding_mode == "constant":
        values = [fill] if fill is None or isinstance(fill, numbers.Number) else list(fill)
        lead = (0,) * (image.ndim - 2)
        scalar = 0 if values[0] is None else values[0]
        padded = P["pad"].bind(image, lo=lead + (top, left), hi=lead + (bottom, right),
                               interior=(0,) * image.ndim, value=scalar)
        if len(values) > 1:  # one fill value per channel: mark the border and fill it
            height, width = image.shape[-2], image.shape[-1]
            inside = np.zeros((top + height + bottom, left + width + right), dtype=bool)
            inside[top:top + height, left:left + width] = True
            padded = where(from_numpy(inside), padded, _fill_tensor(values, image, op))
        return padded
    if padding_mode not in ("edge", "reflect", "symmetric"):
        raise ValueError(f"{op}: padding_mode should be constant, edge, reflect or symmetric, got {padding_mode!r}")
    # the source row/column of every output position, from numpy's own padding rules
    rows = np.pad(np.arange(image.shape[-2]), (top, bottom), mode=padding_mode)
    columns = np.pad(np.arange(image.shape[-1]), (left, right), mode=padding_mode)
    return index_select(index_select(image, -2, from_numpy(rows)), -1, from_numpy(columns))


def pad(img, padding, fill=0, padding_mode="constant"):
    """Pad the borders: `padding` is an int (all sides), (left/right, top/bottom) or
    (left, top, right, bottom); modes constant (with `fill`), edge, reflect, symmetric."""
    image, restore = _as_tensor_image(img, "pad")
    left, top, right, bottom = _padding_ltrb(padding, "pad")
    return restore(_pad_tensor(image, left, top, right, bottom, fill, padding_mode, "pad"))


def crop(img, top, left, height, width):
    """The (height, width) window at (top, left); parts outside the image are zero-filled."""
    image, restore = _as_tensor_image(img, "crop")
    image_height, image_width = image.shape[-2], image.shape[-1]
    right, bottom = left + width, top + height
    if left < 0 or top < 0 or right > image_width or bottom > image_height:
        image = _pad_tensor(image, max(-left, 0), max(-top, 0), max(right - image_width, 0),
                            max(bottom - image_height, 0), 0, "constant", "crop")
        top, left = max(top, 0), max(left, 0)
    return restore(image[..., top:top + height, left:left + width])


def center_crop(img, output_size):
    crop_height, crop_width = _pair(output_size, "CenterCrop: size")
    image_height, image_width = _image_size(img)
    top = int(round((image_height - crop_height) / 2.0))
    left = int(round((image_width - crop_width) / 2.0))
    return crop(img, top, left, crop_height, crop_width)


def _resized_size(image_height, image_width, size, max_size):
    """torchvision's rule: an int (or 1-sequence) sets the smaller edge, keeping the aspect."""
    if isinstance(size, (tuple, list)) and len(size) == 2:
        return int(size[0]), int(size[1])
    requested = int(size if isinstance(size, numbers.Number) else size[0])
    short, long = sorted((image_height, image_width))
    new_short, new_long = requested, int(requested * long / short)
    if max_size is not None:
        if max_size <= requested:
            raise ValueError(f"Resize: max_size = {max_size} must be strictly greater than the requested size "
                             f"for the smaller edge size = {size}")
        if new_long > max_size:
            new_short, new_long = int(max_size * new_short / new_long), max_size
    return (new_short, new_long) if image_height <= image_width else (new_long, new_short)


def linear_resize_weights(in_size, out_size, antialias):
    """The (out_size, in_size) matrix of 1-d bilinear interpolation with torch's
    align_corners=False convention. With `antialias` and downscaling, the triangle filter
    widens to the scale (torch's antialias=True, PIL's bilinear); upscaling is the same."""
    scale = in_size / out_size
    weights = np.zeros((out_size, in_size))
    for i in range(out_size):
        if antialias and scale > 1:
            center = scale * (i + 0.5)
            first = max(int(center - scale + 0.5), 0)
            last = min(int(center + scale + 0.5), in_size)
            taps = np.maximum(0.0, 1.0 - np.abs((np.arange(first, last) - center + 0.5) / scale))
            weights[i, first:last] = taps / taps.sum()
            continue
        source = max((i + 0.5) * scale - 0.5, 0.0)
        low = int(source)
        high = min(low + 1, in_size - 1)
        fraction = source - low
        weights[i, low] += 1.0 - fraction
        weights[i, high] += fraction
    return weights


def nearest_resize_indices(in_size, out_size):
    """torch's 'nearest': output i reads input floor(i * in / out)."""
    return np.minimum(np.floor(np.arange(out_size) * (in_size / out_size)).astype(np.int64), in_size - 1)


def resize(img, size, interpolation=InterpolationMode.BILINEAR, max_size=None, antialias=True):
    image, restore = _as_tensor_image(img, "Resize")
    interpolation = InterpolationMode(interpolation)
    image_height, image_width = image.shape[-2], image.shape[-1]
    height, width = _resized_size(image_height, image_width, size, max_size)
    if (height, width) == (image_height, image_width):
        return img
    if interpolation is InterpolationMode.NEAREST:
        rows = from_numpy(nearest_resize_indices(image_height, height))
        columns = from_numpy(nearest_resize_indices(image_width, width))
        return restore(index_select(index_select(image, -2, rows), -1, columns))
    compute = _compute_dtype(image)
    row_weights = make_tensor(linear_resize_weights(image_height, height, antialias), dtype=compute)
    column_weights = make_tensor(linear_resize_weights(image_width, width, antialias).T, dtype=compute)
    result = row_weights @ to_dtype(image, compute) @ column_weights
    return restore(_back_to(result, image.dtype))


def _rotation_matrix(angle, center_offset):
    """torchvision's inverse affine matrix for rotating by `angle` degrees counter-clockwise
    about `center_offset` (relative to the image centre). cos/sin are rounded to 15 decimals so
    quarter turns map pixel centres exactly onto pixel centres."""
    radians = math.radians(angle)
    cos, sin = round(math.cos(radians), 15), round(math.sin(radians), 15)
    matrix = np.array([[cos, -sin, 0.0], [sin, cos, 0.0]])
    center_x, center_y = center_offset
    matrix[:, 2] = matrix[:, :2] @ [-center_x, -center_y] + [center_x, center_y]
    return matrix


def _expanded_size(matrix, width, height):
    """The output (width, height) that holds the whole rotated image (torchvision's rule)."""
    corners = np.array([[-0.5 * width, -0.5 * height, 1.0], [-0.5 * width, 0.5 * height, 1.0],
                        [0.5 * width, 0.5 * height, 1.0], [0.5 * width, -0.5 * height, 1.0]])
    moved = corners @ matrix.T + [0.5 * width, 0.5 * height]
    tolerance = 1e-4
    top = np.ceil(np.trunc(moved.max(0) / tolerance) * tolerance)
    bottom = np.floor(np.trunc(moved.min(0) / tolerance) * tolerance)
    size = top - bottom
    return int(size[0]), int(size[1])


def rotate(img, angle, interpolation=InterpolationMode.NEAREST, expand=False, center=None, fill=None):
    """Rotate counter-clockwise by `angle` degrees by inverse mapping: each output pixel reads
    the input at its rotated position (nearest: rounded half to even; bilinear: four taps);
    positions outside the image take `fill` (0 when None)."""
    image, restore = _as_tensor_image(img, "RandomRotation")
    interpolation = InterpolationMode(interpolation)
    height, width = image.shape[-2], image.shape[-1]
    offset = (0.0, 0.0) if center is None else (center[0] - width * 0.5, center[1] - height * 0.5)
    matrix = _rotation_matrix(angle, offset)
    out_width, out_height = _expanded_size(matrix, width, height) if expand else (width, height)
    out_y, out_x = np.meshgrid(np.arange(out_height) + 0.5 - out_height * 0.5,
                               np.arange(out_width) + 0.5 - out_width * 0.5, indexing="ij")
    source_x = matrix[0, 0] * out_x + matrix[0, 1] * out_y + matrix[0, 2] + width * 0.5 - 0.5
    source_y = matrix[1, 0] * out_x + matrix[1, 1] * out_y + matrix[1, 2] + height * 0.5 - 0.5
    flat = image.reshape(*image.shape[:-2], height * width)
    fill_value = _fill_tensor(fill, image, "RandomRotation")
    lead = tuple(image.shape[:-2])

    def read(rows, columns):
        inside = (rows >= 0) & (rows < height) & (columns >= 0) & (columns < width)
        index = np.where(inside, rows * width + columns, 0).reshape(-1)
        values = index_select(flat, -1, from_numpy(index.astype(np.int64)))
        return values.reshape(*lead, out_height, out_width), inside

    if interpolation is InterpolationMode.NEAREST:
        values, inside = read(np.rint(source_y).astype(np.int64), np.rint(source_x).astype(np.int64))
        return restore(where(from_numpy(inside), values, fill_value))
    if interpolation is not InterpolationMode.BILINEAR:
        raise ValueError(f"RandomRotation: interpolation should be nearest or bilinear, got {interpolation}")
    compute = _compute_dtype(image)
    x0, y0 = np.floor(source_x).astype(np.int64), np.floor(source_y).astype(np.int64)
    fx, fy = source_x - x0, source_y - y0
    result, covered = None, np.zeros((out_height, out_width))
    for dy, dx, weight in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx), (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
        values, inside = read(y0 + dy, x0 + dx)
        weight = np.where(inside, weight, 0.0)
        covered += weight
        term = to_dtype(values, compute) * make_tensor(weight, dtype=compute)
        result = term if result is None else result + term
    # what falls outside the image reads as `fill`
    result = result + make_tensor(1.0 - covered, dtype=compute) * to_dtype(fill_value, compute)
    return restore(_back_to(result, image.dtype))


# ----------------------------------------------------------------------------- transform objects
class Compose:
    """Apply transforms one after another."""

    def __init__(self, transforms):
        self.transforms = transforms

    def __call__(self, img):
        for transform in self.transforms:
            img = transform(img)
        return img

    def __repr__(self):
        lines = "".join(f"\n    {transform}" for transform in self.transforms)
        return f"{type(self).__name__}({lines}\n)"


class ToTensor:
    """numpy (H, W, C) uint8 -> float tensor (C, H, W) in [0, 1]; see `to_tensor`."""

    def __call__(self, pic):
        return to_tensor(pic)

    def __repr__(self):
        return f"{type(self).__name__}()"


class Normalize:
    """(x - mean) / std per channel of a float tensor image."""

    def __init__(self, mean, std, inplace=False):
        self.mean, self.std, self.inplace = mean, std, inplace

    def __call__(self, tensor):
        return normalize(tensor, self.mean, self.std, self.inplace)

    def __repr__(self):
        return f"{type(self).__name__}(mean={self.mean}, std={self.std})"


class Lambda:
    """Apply a user function."""

    def __init__(self, lambd):
        if not callable(lambd):
            raise TypeError(f"Lambda: argument lambd should be callable, got {type(lambd).__name__!r}")
        self.lambd = lambd

    def __call__(self, img):
        return self.lambd(img)

    def __repr__(self):
        return f"{type(self).__name__}()"


class Pad:
    def __init__(self, padding, fill=0, padding_mode="constant"):
        _padding_ltrb(padding, "Pad")
        if padding_mode not in ("constant", "edge", "reflect", "symmetric"):
            raise ValueError(f"Pad: padding_mode should be constant, edge, reflect or symmetric, got {padding_mode!r}")
        self.padding, self.fill, self.padding_mode = padding, fill, padding_mode

    def __call__(self, img):
        return pad(img, self.padding, self.fill, self.padding_mode)

    def __repr__(self):
        return f"{type(self).__name__}(padding={self.padding}, fill={self.fill}, padding_mode={self.padding_mode})"


class RandomCrop:
    """Crop a random (height, width) window, after optional padding (and padding up to the
    crop size with `pad_if_needed`)."""

    def __init__(self, size, padding=None, pad_if_needed=False, fill=0, padding_mode="constant"):
        self.size = _pair(size, "RandomCrop: size")
        if padding is not None:
            _padding_ltrb(padding, "RandomCrop")
        self.padding, self.pad_if_needed, self.fill, self.padding_mode = padding, pad_if_needed, fill, padding_mode

    @staticmethod
    def get_params(img, output_size):
        """(top, left, height, width) of a random crop of `output_size`."""
        height, width = _image_size(img)
        crop_height, crop_width = output_size
        if height < crop_height or width < crop_width:
            raise ValueError(f"RandomCrop: required crop size {(crop_height, crop_width)} is larger than the "
                             f"input image size {(height, width)}")
        if (height, width) == (crop_height, crop_width):
            return 0, 0, height, width
        rng = generator_or_default(None)
        top = int(rng.integers(0, height - crop_height + 1))
        left = int(rng.integers(0, width - crop_width + 1))
        return top, left, crop_height, crop_width

    def __call__(self, img):
        if self.padding is not None:
            img = pad(img, self.padding, self.fill, self.padding_mode)
        height, width = _image_size(img)
        if self.pad_if_needed and width < self.size[1]:
            img = pad(img, [self.size[1] - width, 0], self.fill, self.padding_mode)
        if self.pad_if_needed and height < self.size[0]:
            img = pad(img, [0, self.size[0] - height], self.fill, self.padding_mode)
        return crop(img, *self.get_params(img, self.size))

    def __repr__(self):
        return f"{type(self).__name__}(size={self.size}, padding={self.padding})"


class CenterCrop:
    def __init__(self, size):
        self.size = _pair(size, "CenterCrop: size")

    def __call__(self, img):
        return center_crop(img, self.size)

    def __repr__(self):
        return f"{type(self).__name__}(size={self.size})"


class RandomHorizontalFlip:
    def __init__(self, p=0.5):
        self.p = p

    def __call__(self, img):
        return hflip(img) if generator_or_default(None).random() < self.p else img

    def __repr__(self):
        return f"{type(self).__name__}(p={self.p})"


class RandomVerticalFlip:
    def __init__(self, p=0.5):
        self.p = p

    def __call__(self, img):
        return vflip(img) if generator_or_default(None).random() < self.p else img

    def __repr__(self):
        return f"{type(self).__name__}(p={self.p})"


class Resize:
    """Resize to (height, width), or the smaller edge to `size` keeping the aspect ratio."""

    def __init__(self, size, interpolation=InterpolationMode.BILINEAR, max_size=None, antialias=True):
        if not (isinstance(size, int) or isinstance(size, (tuple, list)) and len(size) in (1, 2)):
            raise TypeError(f"Resize: size should be an int or a sequence of length 1 or 2, got {size!r}")
        self.size, self.max_size, self.antialias = size, max_size, antialias
        self.interpolation = InterpolationMode(interpolation)

    def __call__(self, img):
        return resize(img, self.size, self.interpolation, self.max_size, self.antialias)

    def __repr__(self):
        return (f"{type(self).__name__}(size={self.size}, interpolation={self.interpolation.value}, "
                f"max_size={self.max_size}, antialias={self.antialias})")


class RandomRotation:
    """Rotate by an angle drawn uniformly from `degrees` (a number d means (-d, d))."""

    def __init__(self, degrees, interpolation=InterpolationMode.NEAREST, expand=False, center=None, fill=0):
        if isinstance(degrees, numbers.Number):
            if degrees < 0:
                raise ValueError("RandomRotation: if degrees is a single number, it must be positive")
            degrees = [-degrees, degrees]
        elif len(degrees) != 2:
            raise ValueError(f"RandomRotation: degrees should be a number or a sequence of 2 numbers, got {degrees!r}")
        self.degrees = [float(d) for d in degrees]
        self.interpolation = InterpolationMode(interpolation)
        self.expand, self.center, self.fill = expand, center, fill

    @staticmethod
    def get_params(degrees):
        return float(generator_or_default(None).uniform(degrees[0], degrees[1]))

    def __call__(self, img):
        angle = self.get_params(self.degrees)
        return rotate(img, angle, self.interpolation, self.expand, self.center, self.fill)

    def __repr__(self):
        text = (f"{type(self).__name__}(degrees={self.degrees}, interpolation={self.interpolation.value}, "
                f"expand={self.expand}")
        if self.center is not None:
            text += f", center={self.center}"
        if self.fill is not None:
            text += f", fill={self.fill}"
        return text + ")"
