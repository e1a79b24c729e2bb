"""torchvision's own models load into the netdsl examples and compute the same logits.

For densenet121, googlenet, inception_v3 and vgg16_bn (random init, BatchNorm statistics
randomised so that eval mode is exercised, weights re-drawn He-normal so that the logits
depend on the input), the torchvision model's state_dict loads strictly
into the netdsl-generated module (`to_torch(weights=state_dict)`), and both that module and the
ONNX model built from the same state_dict (onnxruntime) agree with torchvision in eval mode.
Skipped where torchvision is not installed.
"""
from pathlib import Path

import numpy as np
import pytest

import netdsl
from parity_util import randomise

torch = pytest.importorskip("torch")
models = pytest.importorskip("torchvision.models")

ROOT = Path(__file__).resolve().parents[1]
TOL = 1e-4           # max |netdsl - torchvision| relative to the largest |logit|

# (id, torchvision constructor, netdsl file, network, input shape)
CASES = [
    pytest.param(lambda: models.densenet121(), "densenet.net", "DenseNet121", (2, 3, 96, 96),
                 id="densenet121"),
    pytest.param(lambda: models.googlenet(aux_logits=False, init_weights=True, transform_input=False),
                 "googlenet.net", "GoogLeNet", (2, 3, 128, 112), id="googlenet"),
    pytest.param(lambda: models.inception_v3(aux_logits=False, init_weights=True,
                                             transform_input=False),
                 "inception.net", "InceptionV3", (2, 3, 150, 139), id="inception_v3"),
    pytest.param(lambda: models.vgg16_bn(), "vgg.net", "VGG16_BN", (2, 3, 96, 80), id="vgg16_bn"),
]




@pytest.mark.parametrize("make, file, network, shape", CASES)
def test_torchvision_weights_give_the_same_logits(make, file, network, shape):
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    tv = make().eval()
    # googlenet's and inception_v3's init_weights draw every weight with std 0.01 (0.1): the
    # signal dies within a few layers and the logits no longer depend on the input
    randomise(tv, seed=1)
    state = tv.state_dict()

    net = netdsl.load(ROOT / "examples" / file, network=network)
    assert list(net.state_layout()) == list(state)           # same keys, same order
    ours = net.to_torch(weights=state).eval()                 # strict: every key, every shape
    ours.load_state_dict(state, strict=True)

    x = np.random.default_rng(2).standard_normal(shape, dtype=np.float32)
    with torch.no_grad():
        want = tv(torch.from_numpy(x)).numpy()
        got = ours(torch.from_numpy(x)).numpy()
    assert want.shape == got.shape == (shape[0], 1000)
    scale = float(np.abs(want).max())
    assert float(np.abs(want[0] - want[1]).max()) > 1e-2 * scale      # depends on the input
    assert float(np.abs(got - want).max()) <= TOL * scale

    sess = ort.InferenceSession(net.to_onnx(weights=state).SerializeToString(),
                                providers=["CPUExecutionProvider"])
    got_onnx = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    assert float(np.abs(got_onnx - want).max()) <= TOL * scale
