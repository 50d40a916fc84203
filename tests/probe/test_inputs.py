"""Issue 18, item 4: inputs that gave a silently wrong figure or an unclear crash in the Python API.

Every entry point (``measure``, ``measure_family``, ``lie_derivative``, ``export_pairs``) goes through
``shiftprobe.probe.inputs``: modules called several times per forward are probed one call at a time
(``conv#2``) or refused; normalised images are measured in pixel space with ``normalization=``; dict
and named-tuple outputs are read with ``output_key=``; non-finite inputs and activations are refused
as exactly that; TorchScript models, list labels, channel mismatches and train mode are handled.
Tiny networks, 8x8 images; the equalities are checked in float64 against a second computation (the
normalisation inside the model, an unshared copy of a shared layer, the brute-force reference).
"""

from __future__ import annotations

import math
import warnings
from collections import namedtuple

import numpy as np
import pytest
import torch
from reference import reference_measure
from tolerances import assert_same_figures
from torch import nn
from torch.utils.data import TensorDataset

import shiftprobe
from shiftprobe.models.lab import MNIST_MEAN, MNIST_STD, LabCNN
from shiftprobe.probe.capture import first_tensor
from shiftprobe.probe.export import export_pairs
from shiftprobe.probe.families import Flip, SubpixelTranslation
from shiftprobe.probe.lie import lie_derivative
from shiftprobe.probe.measure import measure_family
from shiftprobe.probe.translation import Translation

SIZE = 8
SKIP = ("seconds", "seconds_total", "fast_path")
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _close(a, b, path="", rel=1e-9):
    """Every figure of two results trees equal to float64 precision (others exactly)."""
    if isinstance(a, dict):
        assert set(a) == set(b), (path, set(a) ^ set(b))
        for key in a:
            if key not in SKIP:
                _close(a[key], b[key], f"{path}/{key}", rel)
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _close(x, y, f"{path}[{i}]", rel)
    elif isinstance(a, float) and isinstance(b, float):
        assert (math.isnan(a) and math.isnan(b)) or abs(a - b) <= rel * max(1.0, abs(b)), (path, a, b)
    else:
        assert a == b, (path, a, b)


def _pixels(n=6, channels=1, seed=0, dtype=torch.float64):
    """Pixels in [0, 1] with a black border (so a crop shift's fill is visible)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, channels, SIZE, SIZE, dtype=dtype)
    x[..., 1:-1, 1:-1] = torch.rand(n, channels, SIZE - 2, SIZE - 2, generator=g, dtype=dtype)
    return x


class Small(nn.Module):
    """A zero-padded conv and a linear head; with ``normalize`` it normalises its input itself."""

    def __init__(self, channels=1, normalize=False):
        super().__init__()
        self.normalize = normalize
        self.conv = nn.Conv2d(channels, 3, 3, padding=1)
        self.head = nn.Linear(3 * SIZE * SIZE, 4)
        self.register_buffer("mean", torch.tensor(MEAN[:channels], dtype=torch.float64).view(-1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(STD[:channels], dtype=torch.float64).view(-1, 1, 1), persistent=False)

    def forward(self, x):
        if self.normalize:
            x = (x - self.mean) / self.std
        return self.head(torch.relu(self.conv(x)).flatten(1))


def _small(channels=1, normalize=False, seed=0):
    torch.manual_seed(seed)
    return Small(channels, normalize).double().eval()


# -- a module called more than once per forward -----------------------------------------------------
class Shared(nn.Module):
    """One conv applied twice (shared weights): the second call sees 5x5 pixels, the first 3x3."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1)
        self.head = nn.Linear(2 * SIZE * SIZE, 3)

    def forward(self, x):
        return self.head(self.conv(torch.relu(self.conv(x))).flatten(1))


class Unshared(nn.Module):
    """``Shared`` with the two calls as two modules holding the same weights."""

    def __init__(self, shared: Shared):
        super().__init__()
        self.conv_a, self.conv_b = nn.Conv2d(2, 2, 3, padding=1), nn.Conv2d(2, 2, 3, padding=1)
        self.conv_a.load_state_dict(shared.conv.state_dict())
        self.conv_b.load_state_dict(shared.conv.state_dict())
        self.head = shared.head

    def forward(self, x):
        return self.head(self.conv_b(torch.relu(self.conv_a(x))).flatten(1))


ENTRY_POINTS = {
    "measure": lambda net, x, **kw: shiftprobe.measure(net, x, transform=Translation(max_shift=1), **kw),
    "measure_family": lambda net, x, **kw: measure_family(net, x, None, Flip(), **kw),
    "lie_derivative": lambda net, x, **kw: lie_derivative(net, x, generators=["translate_x"], **kw),
    "export_pairs": lambda net, x, **kw: export_pairs(net, x, None, n=2, **kw),
}


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_a_plain_name_of_a_module_called_twice_is_refused(entry):
    net = Shared().double().eval()
    with pytest.raises(ValueError, match=r"'conv' runs 2 times .*layers=\['conv#1', 'conv#2'\]"):
        ENTRY_POINTS[entry](net, _pixels(4, channels=2), layers=["conv"])


def test_each_call_is_probed_with_its_own_geometry_and_equals_the_reference():
    torch.manual_seed(0)
    shared = Shared().double().eval()
    images, labels = _pixels(4, channels=2), torch.tensor([0, 1, 2, 0])
    res = measure_family(shared, images, labels, Translation(1), layers=["conv#1", "conv#2", "output"])
    shifts = Translation(1).params()
    geo = res["geometry"]
    assert geo["conv#1"]["receptive_field"]["y"] == [-1, 1] and geo["conv#2"]["receptive_field"]["y"] == [-2, 2]
    # exact on its own certified interior (the first call's interior gave aligned_rel ~ 0.05)
    assert res["summary"]["conv#2"]["aligned_rel_max"] < 1e-12
    ref = reference_measure(Unshared(shared), images, labels, ["conv_a", "conv_b", "output"], shifts, "crop",
                            res["control"]["offset"])
    for name, ref_name in (("conv#1", "conv_a"), ("conv#2", "conv_b"), ("output", "output")):
        for metric, value in ref["summary"][ref_name].items():
            if metric in res["summary"][name] and isinstance(value, float):
                assert abs(res["summary"][name][metric] - value) <= 1e-9 * max(1.0, abs(value)), (name, metric)
    # the calls differ, so call 1 really is call 1 (not the last call, as the hooks recorded before)
    assert abs(res["summary"]["conv#1"]["rel"] - res["summary"]["conv#2"]["rel"]) > 1e-3


def test_call_numbers_are_checked():
    net = Shared().double().eval()
    with pytest.raises(ValueError, match=r"'conv#3': conv runs 2 time\(s\).*'conv#1', 'conv#2'"):
        shiftprobe.measure(net, _pixels(4, channels=2), layers=["conv#3"], transform=Translation(max_shift=1))
    with pytest.raises(ValueError, match="call number"):
        shiftprobe.measure(net, _pixels(4, channels=2), layers=["conv#0"], transform=Translation(max_shift=1))


@pytest.mark.parametrize(("layers", "match"), [
    ("10", r"layers='10': give a list of names, e.g. layers=\['10'\]"),
    ([0, "conv"], r"layers=\[0, 'conv'\]: give each name as a string, e.g. '0'"),
])
def test_layers_that_are_not_a_list_of_names_are_refused(layers, match):
    net = nn.Sequential(*[nn.Conv2d(1, 1, 1) for _ in range(11)]).double().eval()
    with pytest.raises(ValueError, match=match):
        shiftprobe.measure(net, _pixels(4), layers=layers, transform=Translation(max_shift=1))


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"batch_size": 2.5}, r"batch_size=2.5: use a number of images >= 1"),
    ({"batch_size": 0}, r"batch_size=0: use a number of images >= 1"),
    ({"pairs_per_chunk": 0}, r"pairs_per_chunk=0: use a number of pairs >= 1"),
    ({"rank": 2, "world_size": 2}, r"rank=2, world_size=2: a rank is 0 to world_size - 1"),
    ({"world_size": 0}, r"world_size=0: use a number of processes >= 1"),
])
def test_batch_chunk_and_rank_settings_are_checked_in_one_line(kwargs, match):
    """A fractional batch crashed in torch.split; a batch or chunk of 0 and a rank beyond the world (another
    subset of the images) were taken silently."""
    for measure in (lambda **kw: shiftprobe.measure(_small(), _pixels(4), layers=["conv"], **kw),
                    lambda **kw: measure_family(_small(), _pixels(4), None, Flip(), layers=["conv"], **kw)):
        with pytest.raises(ValueError, match=match):
            measure(**kwargs)


# -- a probe point changed later in the same forward pass -------------------------------------------
class InPlace(Small):
    """``Small`` with an ``nn.ReLU(inplace=inplace)`` after the conv: in place, it overwrites the conv's output."""

    def __init__(self, inplace):
        super().__init__()
        self.relu = nn.ReLU(inplace=inplace)

    def forward(self, x):
        return self.head(self.relu(self.conv(x)).flatten(1))


def _in_place(inplace):
    net = InPlace(inplace)
    net.load_state_dict(_small().float().state_dict())
    return net.double().eval()


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_a_probe_point_overwritten_by_a_later_in_place_module_keeps_its_own_output(entry):
    images = _pixels(4)
    got, expected = (ENTRY_POINTS[entry](_in_place(inplace), images, layers=["conv"]) for inplace in (True, False))
    if entry == "export_pairs":
        assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in got)
    else:
        _close(dict(got), dict(expected))


class SequenceFirst(Small):
    """``Small`` with a probe point ``seq`` whose output is sequence first, ``(H * W, N, C)`` (as
    ``nn.MultiheadAttention`` without ``batch_first``), and one, ``scalar``, that returns a 0-d tensor."""

    def __init__(self):
        super().__init__()
        self.seq, self.scalar = nn.Identity(), nn.Identity()

    def forward(self, x):
        y = self.conv(x)
        self.scalar(y.mean())
        return self.head(self.seq(y.flatten(2).permute(2, 0, 1)).permute(1, 2, 0).flatten(1))


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
@pytest.mark.parametrize(("layer", "shape"), [("seq", r"\(64, \d, 3\)"), ("scalar", r"\(\)")])
def test_a_probe_point_whose_first_dimension_is_not_the_batch_is_refused(entry, layer, shape):
    net = SequenceFirst().double().eval()
    with pytest.raises(ValueError, match=rf"layer '{layer}' gives a tensor of shape {shape}.* not the batch of \d+ images"):
        ENTRY_POINTS[entry](net, _pixels(4), layers=[layer])


class Casts(Small):
    """``Small`` with probe points whose outputs are integers, booleans and complex numbers."""

    def __init__(self):
        super().__init__()
        self.long, self.bool, self.complex = nn.Identity(), nn.Identity(), nn.Identity()

    def forward(self, x):
        y = self.conv(x)
        self.long((y * 4).long()), self.bool(y > 0), self.complex(torch.fft.fft2(y))
        return self.head(y.flatten(1))


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
@pytest.mark.parametrize(("layer", "dtype"), [("long", "torch.int64"), ("bool", "torch.bool"),
                                              ("complex", "torch.complex128")])
def test_a_probe_point_that_is_not_real_floating_point_is_refused(entry, layer, dtype):
    with pytest.raises(ValueError, match=rf"layer '{layer}' gives a {dtype} tensor: .* real floating-point"):
        ENTRY_POINTS[entry](Casts().double().eval(), _pixels(4), layers=[layer])


# -- normalised inputs --------------------------------------------------------------------------------
def _normalised(pixels):
    return (pixels - torch.tensor(MEAN, dtype=pixels.dtype).view(3, 1, 1)) / torch.tensor(STD, dtype=pixels.dtype).view(3, 1, 1)


def test_normalised_images_measure_as_the_normalisation_inside_the_model():
    inside, outside = _small(3, normalize=True), _small(3)
    pixels = _pixels(6, channels=3)
    transform = [Translation(max_shift=1), SubpixelTranslation(max_offset=1.0, step=0.5)]
    a = shiftprobe.measure(inside, pixels, layers=["conv", "output"], transform=transform)
    b = shiftprobe.measure(outside, _normalised(pixels), layers=["conv", "output"], transform=transform,
                           normalization=(MEAN, STD))
    _close(a.to_dict(), b.to_dict())
    assert a.families["translation"].summary["conv"]["aligned_rel_max"] < 1e-12  # crop fills black pixels in both


def test_lab_cnn_normalising_itself_equals_declared_normalization():
    """The app's data.normalize (the network normalises pixels itself, crop fast path) against the
    same weights fed normalised images with normalization= (plain path), in float32."""
    torch.manual_seed(0)
    inside = LabCNN(normalize=True).eval()
    outside = LabCNN().eval()
    outside.load_state_dict(inside.state_dict())
    g = torch.Generator().manual_seed(1)
    pixels = torch.rand(4, 1, 28, 28, generator=g)
    kw = dict(layers=["conv1", "conv2", "fc1", "logits"], transform=Translation(max_shift=1))
    a = shiftprobe.measure(inside, pixels, **kw)
    b = shiftprobe.measure(outside, (pixels - MNIST_MEAN) / MNIST_STD, normalization=(MNIST_MEAN, MNIST_STD), **kw)
    assert a.families["translation"]["fast_path"] and b.families["translation"]["fast_path"]
    _close(a.to_dict(), b.to_dict(), rel=1e-4)


def test_the_crop_fast_path_takes_a_declared_normalisation():
    """With normalization= the fast path pads with the normalised black, -mean / std per channel: the
    padded pixels are 0 before the normalisation, as the plain path's crop fill. Equal to the plain path
    to float32 (another kernel on the padded canvas), and exact zeros only where bit for bit."""
    torch.manual_seed(0)
    net = LabCNN().eval()
    pixels = torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    pixels[..., :3, :] = 0
    kw = dict(layers=["conv1", "conv2", "fc1", "logits"], transform=Translation(max_shift=2),
              normalization=(MNIST_MEAN, MNIST_STD))
    normalised = (pixels - MNIST_MEAN) / MNIST_STD
    fast = shiftprobe.measure(net, normalised, **kw)["families"]["translation"]
    plain = shiftprobe.measure(net, normalised, fast_path=False, **kw)["families"]["translation"]
    assert fast["fast_path"] and not plain["fast_path"] and "fast_path_note" not in fast
    assert_same_figures(plain, fast, torch.float32, skip=("seconds", "fast_path", "examples"))
    assert fast["exact"] == plain["exact"] and fast["exact"]["conv1"]["all"]


def test_lie_derivative_and_export_take_the_normalisation():
    inside, outside = _small(3, normalize=True), _small(3)
    pixels = _pixels(4, channels=3)
    a = lie_derivative(inside, pixels, layers=["conv", "output"])
    b = lie_derivative(outside, _normalised(pixels), layers=["conv", "output"], normalization=(MEAN, STD))
    _close(a, b)
    a = export_pairs(inside, pixels, None, ["conv", "output"], n=3)
    b = export_pairs(outside, _normalised(pixels), None, ["conv", "output"], n=3, normalization=(MEAN, STD))
    for key in a:
        assert torch.allclose(a[key].double(), b[key].double(), rtol=1e-5, atol=1e-6), key
    assert torch.allclose(b["x"].double(), pixels[b["index"]], atol=1e-6)  # exported x: pixels


@pytest.mark.parametrize(
    ("images", "kwargs", "match"),
    [
        (lambda p: _normalised(p), {}, r"span \[-2.*normalization=\(mean, std\)"),
        (lambda p: p * 255, {}, "divide 0..255 floats by 255"),
        (lambda p: (p - 0.406) / 0.1, {"normalization": (MEAN, STD)}, "un-normalised with normalization"),
        (lambda p: _normalised(p), {"normalization": ((0.5, 0.5), STD)}, "mean has 2 values for 3-channel"),
        (lambda p: _normalised(p), {"normalization": (MEAN, (0.2, 0.0, 0.2))}, "std.*finite and positive"),
    ],
)
def test_images_outside_the_pixel_range_are_refused(images, kwargs, match):
    with pytest.raises(ValueError, match=match):
        shiftprobe.measure(_small(3), images(_pixels(4, channels=3)), layers=["conv"],
                           transform=Translation(max_shift=1), **kwargs)


def test_uint8_images_with_normalization_are_pixels_fed_normalised():
    """The app's case: uint8 test images and a model that expects normalised input."""
    pixels = (_pixels(4, channels=3) * 255).round().to(torch.uint8)
    inside, outside = _small(3, normalize=True), _small(3)
    kw = dict(layers=["conv", "output"], transform=Translation(max_shift=1))
    a = shiftprobe.measure(inside, pixels, **kw)
    b = shiftprobe.measure(outside, pixels, normalization=(MEAN, STD), **kw)
    _close(a.to_dict(), b.to_dict())


def test_uint8_images_stay_pixels():
    pixels = _pixels(4)
    as_bytes = (pixels * 255).round().to(torch.uint8)
    a = shiftprobe.measure(_small(), as_bytes, layers=["conv"], transform=Translation(max_shift=1))
    b = shiftprobe.measure(_small(), as_bytes.double() / 255, layers=["conv"], transform=Translation(max_shift=1))
    _close(a.to_dict(), b.to_dict(), rel=1e-6)


# -- dict and named-tuple outputs ---------------------------------------------------------------------
Out = namedtuple("Out", ["features", "logits"])


class Outputs(Small):
    """``Small``'s logits returned as a tensor, a Hugging Face style dict, a dict of two tensors, a
    named tuple or a plain tuple."""

    def __init__(self, style):
        super().__init__()
        self.style = style

    def forward(self, x):
        features = torch.relu(self.conv(x)).flatten(1)
        logits = self.head(features)
        return {
            "tensor": lambda: logits,
            "hf": lambda: {"loss": None, "logits": logits},
            "dict": lambda: {"features": features, "logits": logits},
            "namedtuple": lambda: Out(features, logits),
            "tuple": lambda: (features, logits),
            "loss_first": lambda: (logits.square().mean(), logits),
        }[self.style]()


def _outputs(style):
    net = Outputs(style)
    net.load_state_dict(_small().float().state_dict())
    return net.double().eval()


def _measure_outputs(style, **kwargs):
    images, labels = _pixels(5), torch.tensor([0, 1, 2, 3, 0])
    return shiftprobe.measure(_outputs(style), images, labels, layers=["conv", "output"],
                              transform=Translation(max_shift=1), **kwargs).to_dict()["families"]["translation"]


@pytest.mark.parametrize(("style", "key"), [("hf", None), ("dict", "logits"), ("namedtuple", "logits"), ("tuple", 1)])
def test_the_selected_output_is_measured_and_is_the_classifier(style, key):
    expected = _measure_outputs("tensor")
    got = _measure_outputs(style, output_key=key)
    _close(got, expected)
    assert got["classifier"] == "output" and len(got["predictions"]["histogram"]) == 4


def test_an_output_without_one_row_per_image_names_output_key():
    """A (loss, logits) tuple: its first tensor is a 0-d loss; the refusal names output_key, which measures it."""
    with pytest.raises(ValueError, match=r"layer 'output' gives a tensor of shape \(\).*output_key="):
        _measure_outputs("loss_first")
    _close(_measure_outputs("loss_first", output_key=1), _measure_outputs("tensor"))


@pytest.mark.parametrize("style", ["dict", "namedtuple"])
def test_several_tensors_without_output_key_are_refused(style):
    with pytest.raises(ValueError, match=r"several tensors \['features', 'logits'\].*output_key='logits'"):
        _measure_outputs(style)


def test_output_key_is_checked():
    with pytest.raises(ValueError, match=r"output_key='logit' is not in the model's output; its keys are \['features'"):
        _measure_outputs("dict", output_key="logit")
    with pytest.raises(ValueError, match="does not apply: the model returns a Tensor"):
        _measure_outputs("tensor", output_key="logits")
    with pytest.raises(TypeError, match="output_key=1.5"):
        _measure_outputs("dict", output_key=1.5)


def test_first_tensor_skips_none():
    from shiftprobe.probe.capture import select_output

    t = torch.ones(2)
    assert first_tensor((None, t)) is t
    assert first_tensor({"loss": None, "hidden": (None, t)}) is t
    assert select_output((t, None)) is t  # a plain tuple: its first tensor, as before


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_no_images_are_refused_in_one_line(entry):
    with pytest.raises(ValueError, match=r"images of shape \(0, 1, 8, 8\) hold no image: give at least one"):
        ENTRY_POINTS[entry](_small(), _pixels(0), layers=["conv"])


# -- non-finite inputs and activations ----------------------------------------------------------------
@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_non_finite_pixels_are_refused_by_index(entry):
    images = _pixels(8)
    images[5, 0, 3, 3] = float("nan")
    images[6, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"images \[5, 6\] hold NaN or infinite pixels"):
        ENTRY_POINTS[entry](_small(), images, layers=["conv"])


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_nan_weights_are_reported_as_non_finite_activations(entry):
    net = _small()
    with torch.no_grad():
        net.conv.weight[0, 0, 1, 1] = float("nan")
    with pytest.raises(ValueError, match=r"non-finite activations \(NaN/inf\) in layer\(s\) 'conv', 'output'"):
        ENTRY_POINTS[entry](net, _pixels(4), layers=["conv", "output"])


class DividesByCorner(nn.Module):
    """Finite on the images, not finite once a crop shift empties the top-left pixel (x / 0)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)

    def forward(self, x):
        return self.conv(x / x[..., :1, :1])


@pytest.mark.parametrize("family", [Translation(max_shift=1), SubpixelTranslation(max_offset=1.0, step=0.5)])
def test_non_finite_activations_while_measuring_are_reported_as_such(family):
    torch.manual_seed(0)
    images = torch.rand(4, 1, SIZE, SIZE, dtype=torch.float64) * 0.5 + 0.5
    with pytest.raises(ValueError, match=r"non-finite activations \(NaN/inf\) in layer\(s\) 'conv' while measuring"):
        shiftprobe.measure(DividesByCorner().double().eval(), images, layers=["conv"], transform=[family])


# -- unclear crashes ----------------------------------------------------------------------------------
def test_a_traced_model_is_refused_naming_the_eager_model():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(_small(), _pixels(1))
    for entry in ENTRY_POINTS.values():
        with pytest.raises(ValueError, match="TorchScript.*pass the eager nn.Module"):
            entry(traced, _pixels(4), layers=["output"])


@pytest.mark.parametrize("as_given", [lambda t: t.tolist(), lambda t: t.numpy()])
def test_labels_as_a_list_or_array(as_given):
    images, labels = _pixels(5), torch.tensor([0, 1, 2, 3, 0])
    kw = dict(layers=["output"], transform=Translation(max_shift=1))
    _close(shiftprobe.measure(_small(), images, as_given(labels), **kw).to_dict(),
           shiftprobe.measure(_small(), images, labels, **kw).to_dict())


@pytest.mark.parametrize(("labels", "match"), [([0.5] * 4, "class indices"), ([0, 1], "2 labels for 4 images"),
                                              (np.zeros((4, 1), dtype=int), "class indices")])
def test_bad_labels_are_refused(labels, match):
    with pytest.raises(ValueError, match=match):
        shiftprobe.measure(_small(), _pixels(4), labels, layers=["output"], transform=Translation(max_shift=1))


@pytest.mark.parametrize("as_dataset", [False, True])
@pytest.mark.parametrize(("labels", "shown"), [([1, 2, 3, 4], r"\[4\]"), ([-1, 0, 5, 5], r"\[-1, 5\]")])
def test_labels_outside_the_classifier_s_classes_are_refused(labels, shown, as_dataset):
    """1-based labels or a -1 'unknown' would count as wrong answers: accuracy and consistency_correct too low."""
    images, labels = _pixels(4), torch.tensor(labels)
    given = (TensorDataset(images, labels), None) if as_dataset else (images, labels)
    with pytest.raises(ValueError, match=rf"labels {shown} are outside the 4 classes of the classifier 'output' "
                                         r"\(0 to 3\)"):
        shiftprobe.measure(_small(), *given, layers=["conv", "output"], transform=Translation(max_shift=1))
    shiftprobe.measure(_small(), *given, layers=["conv"], transform=Translation(max_shift=1))  # no classifier


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_three_channel_images_into_a_one_channel_network(entry):
    with pytest.raises(ValueError, match=r"3 channel\(s\) but the model's first convolution 'conv' takes 1"):
        ENTRY_POINTS[entry](_small(), _pixels(4, channels=3), layers=["conv"])


# -- train mode ---------------------------------------------------------------------------------------
def test_train_mode_is_announced_once_and_restored():
    net = _small().train()
    with pytest.warns(UserWarning, match="in train mode: shiftprobe measures it in eval mode") as record:
        shiftprobe.measure(net, _pixels(4), layers=["conv"], transform=[Translation(max_shift=1), Flip()])
    assert sum("train mode" in str(w.message) for w in record) == 1
    assert net.training
    with pytest.warns(UserWarning, match="train mode"), pytest.raises(ValueError, match="channel"):
        shiftprobe.measure(net, _pixels(4, channels=3), layers=["conv"], transform=Translation(max_shift=1))
    assert net.training  # restored after a refusal too


@pytest.mark.parametrize("frozen", ["conv", "head"])
def test_each_submodule_gets_its_own_mode_back(frozen):
    """A network training with one part frozen in eval mode (e.g. batch norm), or in eval mode with one part
    in train mode (Monte Carlo dropout): measured in eval mode, every module's own mode is restored."""
    for root_training in (True, False):
        net = _small().train(root_training)
        getattr(net, frozen).train(not root_training)
        modes = {name: m.training for name, m in net.named_modules()}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            shiftprobe.measure(net, _pixels(4), layers=["conv"], transform=Translation(max_shift=1))
        assert {name: m.training for name, m in net.named_modules()} == modes


def test_eval_mode_model_gives_no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        shiftprobe.measure(_small(), _pixels(4), layers=["conv"], transform=Translation(max_shift=1))
