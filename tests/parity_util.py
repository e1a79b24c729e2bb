"""Shared by the example-network parity tests: weights under which a comparison tests
something, and the torch-vs-onnxruntime check itself."""
from __future__ import annotations

import numpy as np

RTOL = 1e-4      # max |torch - onnxruntime| relative to the largest |output|


def randomise(model, seed: int) -> None:
    """He-normal weights, small random biases, random norm scales and BatchNorm statistics.

    torch's default init shrinks activations layer by layer (a deep VGG's logits are then its
    last biases plus ~1e-7 of signal), torchvision zeroes ViT's class token and head, and fresh
    BatchNorm is nearly the identity in eval mode: comparing outputs under those would test
    little. Matrices (ndim >= 2) get He-normal values scaled by their fan-in (a transposed
    conv's is its input channels), learned tokens and embeddings N(0, 0.25), norm scales
    U(0.5, 1.5), other vectors N(0, 0.01)."""
    import torch
    g = torch.Generator().manual_seed(seed)
    transposed = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.ConvTranspose2d)}
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf in ("class_token", "pos_embedding"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
            elif p.ndim >= 2:
                fan_in = p.shape[0] if id(p) in transposed else p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) * (2.0 / fan_in) ** 0.5)
            elif leaf == "weight":                                  # BatchNorm / LayerNorm scale
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


def randomise_batchnorm(model, generator):
    """Random BatchNorm2d statistics and affine parameters: mean N(0, 0.01), var U(0.5, 1.5),
    weight U(0.5, 1.5), bias N(0, 0.01). torchvision starts them at 0, 1, 1, 0, which makes
    eval-mode BatchNorm nearly the identity. Returns the model in eval mode."""
    import torch
    g = generator
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    return model.eval()


def assert_parity(net, model, shapes, dims=None, rtol: float = RTOL, label: str = "") -> None:
    """One ONNX model from `model`'s weights agrees with `model` (eval) at every input shape.

    dims: the ONNX input's expected dims (dim_params where symbolic), so that one file is known
    to serve all the shapes. A batch of two must give two different outputs: the output really
    depends on the input."""
    import onnxruntime as ort
    import torch
    proto = net.to_onnx(weights=model)
    if dims is not None:
        got = [[d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
               for i in proto.graph.input]
        assert got == [list(dims)]
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    del proto
    input_name = sess.get_inputs()[0].name
    rng = np.random.default_rng(3)
    for shape in shapes:
        x = rng.standard_normal(shape, dtype=np.float32)
        with torch.no_grad():
            want = model(torch.from_numpy(x)).numpy()
        got = sess.run(None, {input_name: x})[0]
        assert list(want.shape) == net.summary(inputs=shape)["outputs"][0]["shape"]
        assert got.shape == want.shape
        scale = float(np.abs(want).max())
        if shape[0] > 1:
            assert float(np.abs(want[0] - want[1]).max()) > 1e-2 * scale
        err = float(np.abs(got - want).max())
        assert err <= rtol * scale, f"{label} {shape}: max error {err:.3g} vs output scale {scale:.3g}"


def assert_torchvision_agrees(reference, net, x, rtol: float = RTOL) -> None:
    """`net` loads `reference`'s state_dict strictly (same keys in the same order) and computes
    the same logits for the batch `x` (numpy, at least two samples whose logits must differ),
    in PyTorch and through the ONNX model built from the same weights."""
    import onnxruntime as ort
    import torch
    state = reference.state_dict()
    model = net.to_torch(weights=state).eval()                     # loads strictly
    assert list(model.state_dict()) == list(state)
    with torch.no_grad():
        want = reference(torch.from_numpy(x)).numpy()
        got = model(torch.from_numpy(x)).numpy()
    assert got.shape == want.shape
    scale = float(np.abs(want).max())
    assert float(np.abs(want[0] - want[1]).max()) > 1e-2 * scale   # the logits depend on x
    assert float(np.abs(got - want).max()) <= rtol * scale
    proto = net.to_onnx(weights=state)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    del proto
    onnx_out = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    assert float(np.abs(onnx_out - want).max()) <= rtol * scale


def rectangle_images(n, h, w, seed):
    """Bright rectangles on dim noise, [n, 3, h, w] in [0, 1] (detection tests and benchmarks)."""
    import torch
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, h, w, generator=g) * 0.3
    for i in range(n):
        for _ in range(6):
            y0 = int(torch.randint(0, h - 20, (1,), generator=g))
            x0 = int(torch.randint(0, w - 20, (1,), generator=g))
            hh = int(torch.randint(10, h // 2, (1,), generator=g))
            ww = int(torch.randint(10, w // 2, (1,), generator=g))
            x[i, :, y0:y0 + hh, x0:x0 + ww] += torch.rand(3, 1, 1, generator=g)
    return x.clamp(0, 1)


def make_detector_detect(model, images, generator):
    """Weights under which a comparison of torchvision's Faster R-CNN (ResNet-50 FPN, no weights)
    tests something: random BatchNorm statistics make the FPN's maps large (std ~600), so its
    3x3 convs are scaled down 1000x and the RPN's boxes stay inside the images; a random RPN
    classifier (std 0.1) ranks anchors without ties; the box classifier is random over the RoI
    features' variation on `images` (centred on their mean, which is the same for every RoI and
    would pick one class everywhere), scaled so that each image gets dozens of detections of
    many classes. Returns the model in eval mode."""
    import torch
    g = generator
    randomise_batchnorm(model, g)
    with torch.no_grad():
        for block in model.backbone.fpn.layer_blocks:
            for p in block.parameters():
                p.mul_(1e-3)
        w = model.rpn.head.cls_logits.weight
        w.copy_(torch.randn(w.shape, generator=g) * 0.1)
        model.eval()
        batch, _ = model.transform(list(images))
        features = model.backbone(batch.tensors)
        proposals, _ = model.rpn(batch, features)
        rois = model.roi_heads.box_head(model.roi_heads.box_roi_pool(features, proposals, batch.image_sizes))
        mean, std = rois.mean(0), rois.std(0) + 1e-3
        cls = model.roi_heads.box_predictor.cls_score
        cls.weight.copy_(torch.randn(cls.weight.shape, generator=g) * 0.45 / std / 32)
        cls.bias.copy_(-(cls.weight @ mean))
    return model.eval()


def calibrate_batchnorm(model, x, generator):
    """BatchNorm running statistics that fit the activations, then perturbed: random affine
    parameters (as randomise_batchnorm), statistics measured on the batch `x` in training mode,
    then each mean moved by N(0, 0.1) standard deviations and each variance scaled by
    U(0.8, 1.25). Deep nets with saturating activations (MobileNet's ReLU6, hard-swish) under
    arbitrary statistics lose all dependence on the input; here eval mode stays close to
    normalised activations and still differs from training mode. Returns the model in eval mode."""
    import torch
    g = generator
    randomise_batchnorm(model, g)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None                                   # cumulative average: one batch's
    model.train()
    with torch.no_grad():
        model(x)
        for m, momentum in zip(bns, momenta):
            m.momentum = momentum
            std = (m.running_var + m.eps).sqrt()
            m.running_mean.add_(torch.randn(m.running_mean.shape, generator=g) * 0.1 * std)
            m.running_var.mul_(torch.rand(m.running_var.shape, generator=g) * 0.45 + 0.8)
    return model.eval()
