"""examples/faster_rcnn.net against torchvision itself: the ResNet-50 FPN backbone gives
torchvision's five feature maps, torchvision's fasterrcnn_resnet50_fpn state_dict loads strictly
into the spec's torch module (same keys, same order), and the detector gives torchvision's
detections and training losses; its ONNX model matches the torch module at several image sizes.
Skipped where torchvision is not installed (run it in a virtualenv with torchvision, see the README).

CPU time matters here: each big model is built once per module, and the images are small
(min_size / max_size lowered) wherever the point is not the size."""
from pathlib import Path

import numpy as np
import pytest

import netdsl
from parity_util import make_detector_detect, rectangle_images  # tests/ is on sys.path (no package)

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
ort = pytest.importorskip("onnxruntime")

from torchvision.models.detection import backbone_utils  # noqa: E402
from torchvision.ops import FrozenBatchNorm2d  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FILE = ROOT / "examples" / "faster_rcnn.net"
LEVELS = ["0", "1", "2", "3", "pool"]          # torchvision's names of p2 ... p6
RTOL = 1e-4


def _randomise_frozen_bn(model, seed):
    """Random statistics and affine values in every FrozenBatchNorm2d (torchvision starts them at
    the identity), as randomise_batchnorm does for BatchNorm2d."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, FrozenBatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    return model.eval()


SIZES = dict(min_size=320, max_size=512)    # torchvision's 800 / 1333 cost 6x the time on CPU
EVAL_IMAGES = (2, 240, 300, 0)              # n, h, w, seed: resized to 320 x 400


@pytest.fixture(scope="module")
def tv_frcnn():
    """torchvision's fasterrcnn_resnet50_fpn (BatchNorm2d, no weights) with weights under which
    the comparison tests something. Random BatchNorm statistics make the FPN's maps large (std
    ~600): scaled down 1000x, the RPN's boxes stay inside the images. A random RPN classifier
    (std 0.1) ranks anchors without ties. The box classifier is random over the RoI features'
    variation (centred on their mean, which is the same for every RoI and would pick one class
    everywhere), scaled so that each eval image gets dozens of detections of many classes."""
    torch.manual_seed(0)
    model = torchvision.models.detection.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None,
                                                                 **SIZES)
    return make_detector_detect(model, rectangle_images(*EVAL_IMAGES), torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def frcnn(tv_frcnn):
    """netdsl's FasterRCNN_ResNet50_FPN with torchvision's weights (strict load)."""
    net = netdsl.load(FILE, network="FasterRCNN_ResNet50_FPN", **SIZES)
    return net, net.to_torch(weights=tv_frcnn.state_dict()).eval()


@pytest.fixture(scope="module")
def tv_frozen_backbone():
    """torchvision's resnet_fpn_backbone with FrozenBatchNorm2d (as with pretrained weights)."""
    torch.manual_seed(2)
    body = torchvision.models.resnet50(weights=None, norm_layer=FrozenBatchNorm2d)
    return _randomise_frozen_bn(backbone_utils._resnet_fpn_extractor(body, 5), seed=3)


def _close(got, want, label, rtol=RTOL):
    scale = float(np.abs(want).max())
    assert scale > 0, label
    err = float(np.abs(got - want).max())
    assert err <= rtol * scale, f"{label}: max error {err:.3g} vs output scale {scale:.3g}"


# ---- the backbone: ResNet-50 body + FPN with LastLevelMaxPool ---------------------------------

@pytest.mark.parametrize("frozen_bn", [False, True], ids=["batchnorm", "frozen_bn"])
def test_resnet50_fpn_backbone_matches_torchvision(frozen_bn, tv_frcnn, tv_frozen_backbone):
    """ResNet50_FPN is torchvision's BackboneWithFPN: its state_dict loads strictly (same keys,
    same order), and all five levels '0', '1', '2', '3', 'pool' agree in torch and through one
    ONNX file at two sizes (odd, non-square: the FPN's nearest upsampling does not double)."""
    reference = tv_frozen_backbone if frozen_bn else tv_frcnn.backbone
    state = reference.state_dict()
    net = netdsl.load(FILE, network="ResNet50_FPN", frozen_bn=frozen_bn)
    assert list(net.state_layout()) == list(state)
    assert net.param_count() == sum(p.numel() for p in reference.parameters())
    model = net.to_torch(weights=state).eval()
    proto = net.to_onnx(weights=state)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == ["p2", "p3", "p4", "p5", "p6"]
    rng = np.random.default_rng(4)
    for size in [(2, 3, 90, 123), (1, 3, 64, 47)]:
        x = rng.standard_normal(size, dtype=np.float32)
        with torch.no_grad():
            want = reference(torch.from_numpy(x))
            got = model(torch.from_numpy(x))
        assert list(want) == LEVELS
        onnx_got = sess.run(None, {"images": x})
        h, w = size[2:]
        for i, (k, g, o) in enumerate(zip(LEVELS, got, onnx_got)):
            wv = want[k].numpy()
            stride = 2 ** (i + 2)
            assert wv.shape == (size[0], 256, -(-h // stride), -(-w // stride)), (k, wv.shape)
            # not vacuous: the map varies over the image (and between images)
            flat = wv.reshape(size[0], 256, -1)
            if flat.shape[-1] > 1:
                assert float(np.ptp(flat, axis=-1).max()) > 1e-2 * float(np.abs(wv).max())
            if size[0] > 1:
                assert float(np.abs(wv[0] - wv[1]).max()) > 1e-2 * float(np.abs(wv).max())
            _close(g.numpy(), wv, f"level {k} (torch)")
            _close(o, wv, f"level {k} (onnxruntime)")


def test_backbone_comparison_could_fail(tv_frcnn, tv_frozen_backbone):
    """The same comparison tells two backbones apart (the frozen one's weights in the other)."""
    state = tv_frozen_backbone.state_dict()
    model = netdsl.load(FILE, network="ResNet50_FPN", frozen_bn=True).to_torch(weights=state).eval()
    x = torch.from_numpy(np.random.default_rng(5).standard_normal((1, 3, 64, 64), dtype=np.float32))
    with torch.no_grad():
        got, want = model(x)[0].numpy(), tv_frcnn.backbone(x)["0"].numpy()
    with pytest.raises(AssertionError):
        _close(got, want, "other weights")


# ---- the whole detector -------------------------------------------------------------------------

def test_state_dict_layout_and_counts(tv_frcnn, tv_frozen_backbone, frcnn):
    """torchvision's state_dict keys in order, loaded with strict = True, and its parameter
    counts: BatchNorm2d, FrozenBatchNorm2d and trainable_backbone_layers = 3."""
    net = netdsl.load(FILE, network="FasterRCNN_ResNet50_FPN")
    state = tv_frcnn.state_dict()
    result = frcnn[1].load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert list(net.state_layout()) == list(state)
    assert all(tuple(net.state_layout()[k]) == tuple(v.shape) for k, v in state.items())
    assert net.param_count() == sum(p.numel() for p in tv_frcnn.parameters()) == 41_808_406

    frozen = torchvision.models.detection.FasterRCNN(tv_frozen_backbone, num_classes=91)
    fnet = netdsl.load(FILE, network="FasterRCNN_ResNet50_FPN", frozen_bn=True)
    assert list(fnet.state_layout()) == list(frozen.state_dict())
    fnet.to_torch(seed=1).load_state_dict(frozen.state_dict(), strict=True)
    assert fnet.param_count() == sum(p.numel() for p in frozen.parameters()) == 41_755_286

    body = torchvision.models.resnet50(weights=None)
    three = torchvision.models.detection.FasterRCNN(backbone_utils._resnet_fpn_extractor(body, 3),
                                                    num_classes=91)
    tnet = netdsl.load(FILE, network="FasterRCNN_ResNet50_FPN", trainable_backbone_layers=3)
    assert tnet.trainable_param_count() == sum(p.numel() for p in three.parameters() if p.requires_grad)
    assert tnet.frozen_param_count() == sum(p.numel() for p in three.parameters() if not p.requires_grad)
    model = tnet.to_torch(weights=state)
    frozen_names = {k for k, p in three.named_parameters() if not p.requires_grad}
    assert {k for k, p in model.named_parameters() if not p.requires_grad} == frozen_names


def _same_detections(got, want, label, expect_many=True):
    assert len(got) == len(want), label
    counts = []
    for i, (g, w) in enumerate(zip(got, want)):
        assert set(g) == {"boxes", "scores", "labels"}, label
        n = w["boxes"].shape[0]
        counts.append(n)
        assert g["boxes"].shape == (n, 4) and g["scores"].shape == (n,) and g["labels"].shape == (n,), \
            f"{label} image {i}: {g['boxes'].shape[0]} detections, torchvision {n}"
        assert g["labels"].dtype == torch.int64
        assert torch.equal(g["labels"], w["labels"]), f"{label} image {i}: labels differ"
        assert float((g["boxes"] - w["boxes"]).abs().max()) <= 1e-3, f"{label} image {i}: boxes"
        assert float((g["scores"] - w["scores"]).abs().max()) <= 1e-5, f"{label} image {i}: scores"
        if expect_many:         # not vacuous: dozens of detections of several classes
            assert n >= 20, f"{label} image {i}: only {n} detections"
            assert w["labels"].unique().numel() >= 5
    return counts


def test_eval_detections_match_torchvision(tv_frcnn, frcnn):
    """A batch [N, 3, H, W]: the same detections per image (count, labels, boxes within 1e-3 px,
    scores within 1e-5), dozens each, under the cap of 100 (the score threshold decides)."""
    _, model = frcnn
    x = rectangle_images(*EVAL_IMAGES)
    with torch.no_grad():
        want = tv_frcnn(list(x))
        got = model(x)
    counts = _same_detections(got, want, "batch")
    assert all(c < 100 for c in counts), counts
    assert counts[0] != counts[1]
    # the boxes are in the original images' coordinates (240 x 300, not the resized 320 x 400)
    assert float(want[0]["boxes"][:, 2].max()) <= 300 and float(want[0]["boxes"][:, 3].max()) <= 240


def test_eval_list_of_images_matches_torchvision(tv_frcnn, frcnn):
    """A list of two images of different sizes (each resized alone, then padded together), one of
    them needing the max_size bound; the classifier scaled up so that both reach the cap of 100."""
    net, _ = frcnn
    state = {k: v.clone() for k, v in tv_frcnn.state_dict().items()}
    state["roi_heads.box_predictor.cls_score.weight"] *= 3
    state["roi_heads.box_predictor.cls_score.bias"] *= 3
    reference = torchvision.models.detection.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None,
                                                                     **SIZES)
    reference.load_state_dict(state)
    reference.eval()
    model = net.to_torch(weights=state).eval()
    images = [rectangle_images(1, 200, 150, 7)[0], rectangle_images(1, 180, 400, 8)[0]]   # 427 x 320, 230 x 512
    with torch.no_grad():
        want = reference(images)
        got = model(images)
    counts = _same_detections(got, want, "list")
    assert counts == [100, 100]


def test_training_losses_match_torchvision(tv_frcnn):
    """In train mode with targets, the four losses equal torchvision's under the same seed (the
    same proposals sampled: torch.randperm per image, in torchvision's order). Fresh copies of
    both models: BatchNorm's running statistics change in training."""
    state = tv_frcnn.state_dict()
    reference = torchvision.models.detection.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None,
                                                                     **SIZES)
    reference.load_state_dict(state)
    model = netdsl.load(FILE, network="FasterRCNN_ResNet50_FPN", **SIZES).to_torch(weights=state)
    reference.train()
    model.train()
    images = [rectangle_images(1, 200, 260, 11)[0], rectangle_images(1, 230, 180, 12)[0]]
    targets = [{"boxes": torch.tensor([[10.0, 20.0, 120.0, 90.0], [150.0, 100.0, 250.0, 190.0]]),
                "labels": torch.tensor([3, 17])},
               {"boxes": torch.tensor([[30.0, 40.0, 170.0, 200.0]]), "labels": torch.tensor([5])}]
    names = ["loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"]
    results = []
    for m in (reference, model):
        torch.manual_seed(123)
        losses = m(images, [dict(t) for t in targets])
        assert sorted(losses) == sorted(names)
        results.append({k: float(v.detach()) for k, v in losses.items()})
        assert all(torch.is_tensor(v) and v.requires_grad for v in losses.values())
    want, got = results
    for k in names:
        assert want[k] > 0, (k, want)
        assert got[k] == pytest.approx(want[k], rel=1e-5, abs=1e-7), (k, got, want)
    # another seed samples other RoIs: the box losses change (the comparison is not vacuous)
    torch.manual_seed(7)
    other = {k: float(v.detach()) for k, v in reference(images, [dict(t) for t in targets]).items()}
    assert other["loss_classifier"] != want["loss_classifier"]
