"""examples/faster_rcnn.net without torchvision: parameter counts and state_dict layouts by
arithmetic (torchvision's published figure for ResNet-50, the rest from the layer shapes), the
outputs and their data-dependent sizes, and one ONNX file per network that gives the torch
module's detections at several image sizes. tests/test_torchvision_detection.py compares with
torchvision itself."""
from pathlib import Path

import numpy as np
import pytest

import netdsl
from parity_util import rectangle_images  # tests/ is on sys.path (no package)

ROOT = Path(__file__).resolve().parents[1]
FILE = ROOT / "examples" / "faster_rcnn.net"
OUTPUTS = ["boxes", "scores", "labels", "batch_index"]

# ---- parameter counts, by arithmetic -------------------------------------------------------------
RESNET50 = 25_557_032                 # torchvision's resnet50 (figures.md)
RESNET50_FC = 2048 * 1000 + 1000


def _conv(cin, cout, k, bias=True):
    return cin * cout * k * k + (cout if bias else 0)


def _linear(i, o):
    return i * o + o


def _resnet50_bn_channels():
    """Channels of every BatchNorm2d in ResNet-50's body (each has a weight and a bias): bn1, then
    per Bottleneck bn1, bn2 (planes) and bn3 (4 planes), and each stage's first block's downsample."""
    return 64 + sum(6 * planes * blocks + 4 * planes
                    for planes, blocks in zip((64, 128, 256, 512), (3, 4, 6, 3)))


def _layer1():
    """ResNet-50's layer1 with BatchNorm: three Bottlenecks of 64 planes, the first with a
    downsample from 64 to 256 channels."""
    first = (_conv(64, 64, 1, False) + _conv(64, 64, 3, False) + _conv(64, 256, 1, False)
             + _conv(64, 256, 1, False) + 2 * (64 + 64 + 256 + 256))
    other = _conv(256, 64, 1, False) + _conv(64, 64, 3, False) + _conv(64, 256, 1, False) + 2 * (64 + 64 + 256)
    return first + 2 * other


def _fpn():
    return (sum(_conv(c, 256, 1) for c in (256, 512, 1024, 2048)) + 4 * _conv(256, 256, 3))


def _frcnn_head(num_classes=91):
    rpn = _conv(256, 256, 3) + _conv(256, 3, 1) + _conv(256, 12, 1)
    box_head = _linear(256 * 7 * 7, 1024) + _linear(1024, 1024)
    predictor = _linear(1024, num_classes) + _linear(1024, 4 * num_classes)
    return rpn + box_head + predictor


def _vgg16_frcnn(num_classes=21):
    convs, cin = 0, 3
    for c, n in ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3)):
        for _ in range(n):
            convs += _conv(cin, c, 3)
            cin = c
    rpn = _conv(512, 512, 3) + _conv(512, 18, 1) + _conv(512, 36, 1)
    fcs = _linear(512 * 7 * 7, 4096) + _linear(4096, 4096)
    return convs + rpn + fcs + _linear(4096, num_classes) + _linear(4096, 4 * num_classes)


def test_parameter_counts():
    body = RESNET50 - RESNET50_FC
    assert 2 * _resnet50_bn_channels() == 53_120
    net = netdsl.load(FILE, network="FasterRCNN_ResNet50_FPN")
    assert net.param_count() == body + _fpn() + _frcnn_head() == 41_808_406
    assert net.trainable_param_count() == net.param_count()
    frozen = netdsl.load(FILE, network="FasterRCNN_ResNet50_FPN", frozen_bn=True)
    # FrozenBatchNorm2d keeps weight and bias as buffers: torchvision's documented 41,755,286
    assert frozen.param_count() == 41_808_406 - 2 * _resnet50_bn_channels() == 41_755_286
    assert netdsl.load(FILE, network="FasterRCNN_ResNet50_FPN", num_classes=2).param_count() == \
        body + _fpn() + _frcnn_head(2)
    assert netdsl.load(FILE, network="ResNet50_FPN").param_count() == body + _fpn()
    vgg = netdsl.load(FILE, network="FasterRCNN_VGG16")
    assert vgg.param_count() == _vgg16_frcnn() == 137_078_239
    # torchvision trains layer2 ... layer4 only: conv1, bn1 and layer1 are frozen
    three = netdsl.load(FILE, network="FasterRCNN_ResNet50_FPN", trainable_backbone_layers=3)
    assert three.frozen_param_count() == _conv(3, 64, 7, False) + 2 * 64 + _layer1() == 225_344


def test_state_dict_layouts():
    layout = netdsl.load(FILE, network="FasterRCNN_ResNet50_FPN").state_layout()
    keys = list(layout)
    assert keys[0] == "backbone.body.conv1.weight" and keys[-1] == "roi_heads.box_predictor.bbox_pred.bias"
    prefixes = ["backbone.body.", "backbone.fpn.inner_blocks.", "backbone.fpn.layer_blocks.", "rpn.head.",
                "roi_heads.box_head.", "roi_heads.box_predictor."]
    firsts = [next(i for i, k in enumerate(keys) if k.startswith(p)) for p in prefixes]
    assert firsts == sorted(firsts)                      # torchvision's module order
    assert all(any(k.startswith(p) for p in prefixes) for k in keys)
    expect = {
        "backbone.body.layer4.2.bn3.num_batches_tracked": (),
        "backbone.body.layer2.0.downsample.0.weight": (512, 256, 1, 1),
        "backbone.fpn.inner_blocks.0.0.weight": (256, 256, 1, 1),
        "backbone.fpn.inner_blocks.3.0.weight": (256, 2048, 1, 1),
        "backbone.fpn.layer_blocks.2.0.weight": (256, 256, 3, 3),
        "backbone.fpn.layer_blocks.3.0.bias": (256,),
        "rpn.head.conv.0.0.weight": (256, 256, 3, 3),
        "rpn.head.conv.0.0.bias": (256,),
        "rpn.head.cls_logits.weight": (3, 256, 1, 1),
        "rpn.head.bbox_pred.weight": (12, 256, 1, 1),
        "roi_heads.box_head.fc6.weight": (1024, 12544),
        "roi_heads.box_head.fc7.weight": (1024, 1024),
        "roi_heads.box_predictor.cls_score.weight": (91, 1024),
        "roi_heads.box_predictor.bbox_pred.weight": (364, 1024),
    }
    for k, shape in expect.items():
        assert tuple(layout[k]) == shape, k
    frozen = netdsl.load(FILE, network="FasterRCNN_ResNet50_FPN", frozen_bn=True).state_layout()
    assert "backbone.body.bn1.num_batches_tracked" not in frozen and "backbone.body.bn1.running_var" in frozen

    vgg = netdsl.load(FILE, network="FasterRCNN_VGG16").state_layout()
    convs = [k[:-len(".weight")] for k in vgg if k.startswith("conv") and k.endswith(".weight")]
    assert convs == [f"conv{s}_{j}" for s, n in zip(range(1, 6), (2, 2, 3, 3, 3)) for j in range(1, n + 1)]
    for k, shape in {"rpn_conv.weight": (512, 512, 3, 3), "rpn_cls_score.weight": (18, 512, 1, 1),
                     "rpn_bbox_pred.weight": (36, 512, 1, 1), "fc6.weight": (4096, 25088),
                     "fc7.weight": (4096, 4096), "cls_score.weight": (21, 4096),
                     "bbox_pred.weight": (84, 4096)}.items():
        assert tuple(vgg[k]) == shape, k


@pytest.mark.parametrize("network, per_image", [("FasterRCNN_ResNet50_FPN", 100), ("FasterRCNN_VGG16", 100)])
def test_outputs_have_data_dependent_sizes(network, per_image):
    s = netdsl.load(FILE, network=network).summary()
    assert [o["name"] for o in s["outputs"]] == OUTPUTS
    assert [o["shape"] for o in s["outputs"]] == [["D", 4], ["D"], ["D"], ["D"]]
    text = netdsl.load(FILE, network=network).summary_text()
    assert f"D ≤ {per_image} * N" in text or f"D ≤ {per_image}·N" in text, text[-600:]
    net = netdsl.load(FILE, network=network, box_detections_per_img=7)
    assert "D ≤ 7" in net.summary_text()


def test_docstrings():
    for name in ("FasterRCNN_ResNet50_FPN", "FasterRCNN_VGG16", "ResNet50_FPN"):
        assert netdsl.load(FILE, network=name).doc


def test_bad_arguments_are_located_errors():
    with pytest.raises(netdsl.NetDSLError) as err:
        netdsl.load(FILE, network="FasterRCNN_ResNet50_FPN", min_size=900, max_size=500)
    assert "max_size" in str(err.value) and err.value.span is not None
    with pytest.raises(netdsl.NetDSLError) as err:
        netdsl.load(FILE, network="FasterRCNN_ResNet50_FPN", rpn_nms_thresh=1.5)
    assert "nms_thresh" in str(err.value) and err.value.span is not None



def test_bad_input_is_a_clear_error():
    """Wrong channel counts and ill-formed targets: a ValueError that says what is wrong (torch),
    a located error at the input declaration (compile time)."""
    torch = pytest.importorskip("torch")
    model = netdsl.load(FILE, network="FasterRCNN_ResNet50_FPN", min_size=64, max_size=96).to_torch().eval()
    with pytest.raises(ValueError, match="4 channels"):
        model(torch.rand(1, 4, 64, 64))
    with pytest.raises(ValueError, match=r"\[3, H, W\]"):
        model([torch.rand(1, 3, 64, 64)])
    model.train()
    with pytest.raises(ValueError, match=r"boxes.*\[K, 4\]"):
        model([torch.rand(3, 64, 64)], [{"boxes": torch.rand(4), "labels": torch.tensor([1])}])
    with pytest.raises(netdsl.NetDSLError) as err:
        netdsl.load(FILE, network="FasterRCNN_ResNet50_FPN", inputs=(1, 4, 64, 64))
    assert "fixed to 3" in str(err.value) and err.value.span is not None


# ---- one ONNX file, many image sizes -------------------------------------------------------------

def _images(n, h, w, seed):
    """Bright rectangles on dim noise, [n, 3, h, w] in [0, 1], as numpy."""
    return rectangle_images(n, h, w, seed).numpy()


def _detecting_state(model, x, roi_head, rpn_cls, cls_score, k, background=0.0, seed=0):
    """The module's weights changed so that random weights detect something: the RPN's objectness
    scaled to about unit spread (anchors ranked without near-ties), and the box classifier made
    random over the RoI features' variation (centred on their mean, which is the same for every
    RoI and would pick one class everywhere), k scaling the logits and `background` added to the
    background's (chosen for dozens of detections per image)."""
    import torch
    captured = {}

    def keep(name):
        def hook(module, inputs, output):       # the first output of each (RPN: the finest level)
            captured.setdefault(name, output)
        return hook
    hooks = [roi_head.register_forward_hook(keep("roi")), rpn_cls.register_forward_hook(keep("obj"))]
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model(torch.from_numpy(x))
        rpn_cls.weight.mul_(1.0 / float(captured.pop("obj").std()))
        captured.clear()
        model(torch.from_numpy(x))
        for h in hooks:
            h.remove()
        rois = captured["roi"].relu()
        mean, std = rois.mean(0), rois.std(0)
        std = std + 0.1 * std.mean()            # features that hardly vary get no huge weight
        w = cls_score.weight
        w.copy_(torch.randn(w.shape, generator=g) * k / std / w.shape[1] ** 0.5)
        cls_score.bias.copy_(-(w @ mean))
        cls_score.bias[0] += background
    return model.state_dict()


def _compare(got_torch, onnx_out, label, min_count):
    """The torch module's list of dicts against the ONNX model's flat outputs."""
    boxes, scores, labels, index = onnx_out
    assert index.dtype == np.int64 and labels.dtype == np.int64
    assert np.all(np.diff(index) >= 0)                              # image-major
    for i, t in enumerate(got_torch):
        rows = index == i
        n = int(t["boxes"].shape[0])
        assert int(rows.sum()) == n, f"{label} image {i}: onnx {int(rows.sum())} detections, torch {n}"
        assert n >= min_count, f"{label} image {i}: only {n} detections"
        assert len(set(labels[rows].tolist())) >= 5, f"{label} image {i}: labels of few classes"
        assert np.array_equal(labels[rows], t["labels"].numpy()), f"{label} image {i}: labels"
        assert np.abs(boxes[rows] - t["boxes"].numpy()).max() <= 1e-3, f"{label} image {i}: boxes"
        assert np.abs(scores[rows] - t["scores"].numpy()).max() <= 1e-5, f"{label} image {i}: scores"


def test_resnet50_fpn_onnx_matches_torch_at_three_sizes():
    """One ONNX file (N, H, W dynamic) gives the torch module's detections at 480x640, 800x800
    and 600x1000 and on a batch of two 300x400 images. The transform's sizes are lowered to
    320 / 512 (torchvision's 800 / 1333 cost 6x the CPU time and run the same graph): the
    images are resized by their short side (to 320x427, 320x320, 320x427) or by their long
    side (600x1000 to 307x512)."""
    torch = pytest.importorskip("torch")
    ort = pytest.importorskip("onnxruntime")
    net = netdsl.load(FILE, network="FasterRCNN_ResNet50_FPN", min_size=320, max_size=512)
    model = net.to_torch(seed=0).eval()
    state = _detecting_state(model, _images(1, 480, 640, 0), model.roi_heads.box_head.fc7,
                             model.rpn.head.cls_logits, model.roi_heads.box_predictor.cls_score, k=0.35)
    proto = net.to_onnx(weights=state)
    dims = [[d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in proto.graph.input]
    assert dims == [["N", 3, "H", "W"]]
    assert [o.name for o in proto.graph.output] == OUTPUTS
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    del proto
    for n, h, w, seed in [(1, 480, 640, 10), (1, 800, 800, 11), (1, 600, 1000, 12), (2, 300, 400, 22)]:
        x = _images(n, h, w, seed)
        with torch.no_grad():
            got = model(torch.from_numpy(x))
        out = sess.run(OUTPUTS, {"images": x})
        _compare(got, out, f"{n}x{h}x{w}", min_count=20)
        # the boxes are in the original image's coordinates
        assert out[0][:, 2].max() <= w + 1e-3 and out[0][:, 3].max() <= h + 1e-3
        assert out[0][:, 2].max() > 0.6 * w                 # (not in the resized image's)


def test_vgg16_onnx_matches_torch():
    """The paper's network: one ONNX file gives the torch module's detections at two sizes
    (short side 600 lowered to 224 and long side 1000 to 400: the same graph, less CPU)."""
    torch = pytest.importorskip("torch")
    ort = pytest.importorskip("onnxruntime")
    net = netdsl.load(FILE, network="FasterRCNN_VGG16", min_size=224, max_size=400)
    model = net.to_torch(seed=0).eval()
    state = _detecting_state(model, _images(1, 240, 320, 1), model.fc7, model.rpn_cls_score,
                             model.cls_score, k=0.35, background=2.0)
    proto = net.to_onnx(weights=state)
    assert [o.name for o in proto.graph.output] == OUTPUTS
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    del proto
    for n, h, w, seed in [(1, 240, 320, 30), (2, 300, 200, 31)]:
        x = _images(n, h, w, seed)
        with torch.no_grad():
            got = model(torch.from_numpy(x))
        out = sess.run(OUTPUTS, {"images": x})
        _compare(got, out, f"VGG16 {n}x{h}x{w}", min_count=20)
