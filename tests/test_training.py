"""Training with generated modules: a segmentation net fits a batch, train/eval semantics are
torch's own, and DistributedDataParallel gives the single-process gradients."""
from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

import netdsl

torch = pytest.importorskip("torch")
nn, F = torch.nn, torch.nn.functional

ROOT = Path(__file__).resolve().parent.parent
FCN_FILE = ROOT / "examples" / "fcn.net"


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---- a segmentation net fits a fixed batch ---------------------------------------------------

def blocky_batch(seed=0, n=4, classes=3, size=32, block=16):
    """Images whose pixels are their class's colour plus noise, over a map of square blocks."""
    g = torch.Generator().manual_seed(seed)
    cells = size // block
    target = torch.randint(0, classes, (n, cells, cells), generator=g)
    target = target.repeat_interleave(block, 1).repeat_interleave(block, 2)
    colours = torch.randn(classes, 3, generator=g)
    x = colours[target].permute(0, 3, 1, 2) + 0.3 * torch.randn(n, 3, size, size, generator=g)
    assert len(target.unique()) == classes
    return x, target


def test_fcn8s_fits_a_fixed_batch(one_thread):
    """A shrunk FCN-8s (channels / 16, 3 classes) fitting 4 images of 3x32x32 with per-pixel
    cross-entropy: the eval-mode loss (no dropout noise) falls 10x within 150 Adam steps, and
    the fixed bilinear upsamplers do not move."""
    net = netdsl.load(FCN_FILE, network="FCN8s", width=16, num_classes=3)
    model = net.to_torch(seed=0)
    x, target = blocky_batch()
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    assert sorted(frozen) == ["upscore2.weight", "upscore8.weight", "upscore_pool4.weight"]
    watched = model.state_dict()["score_fr.weight"].clone()

    def eval_loss():
        model.eval()
        with torch.no_grad():
            return F.cross_entropy(model(x), target).item()

    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)     # all of them: frozen ones get no grad
    start, losses = eval_loss(), []
    assert start > 0.5
    for step in range(1, 151):
        model.train()
        loss = F.cross_entropy(model(x), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 10 == 0:
            losses.append(eval_loss())
            if losses[-1] < start / 10:
                break
    assert losses[-1] < start / 10, f"eval loss {start:.3f} -> {losses}"
    for name, before in frozen.items():
        assert model.get_parameter(name).grad is None, name
        assert torch.equal(model.get_parameter(name), before), name
    assert not torch.equal(model.state_dict()["score_fr.weight"], watched)   # the rest did train


# ---- train/eval semantics ---------------------------------------------------------------------

SEM_SPEC = """network Sem {
    input x: f32[N, 3, H, W]
    output y = x -> conv1: Conv2d(6, 3, padding = 1) -> bn1: BatchNorm2d(momentum = 0.3) -> ReLU
                 -> drop: Dropout(0.4)
                 -> conv2: Conv2d(5, 3) -> bn2: BatchNorm2d -> ReLU
                 -> GlobalAvgPool2d -> Flatten -> Dropout(0.2) -> fc: Linear(4)
}"""


class HandWritten(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(6, momentum=0.3)
        self.drop = nn.Dropout(0.4)
        self.conv2 = nn.Conv2d(6, 5, 3)
        self.bn2 = nn.BatchNorm2d(5)
        self.drop2 = nn.Dropout(0.2)
        self.fc = nn.Linear(5, 4)

    def forward(self, x):
        x = self.drop(F.relu(self.bn1(self.conv1(x))))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.fc(self.drop2(torch.flatten(x.mean((2, 3), keepdim=True), 1)))


def test_train_and_eval_match_a_hand_written_module():
    ours = netdsl.loads(SEM_SPEC).to_torch(seed=3)
    ref = HandWritten()
    ref.load_state_dict(ours.state_dict())             # same keys, same shapes (strict)
    assert ours.bn1.momentum == 0.3 and ours.bn2.momentum == 0.1
    opt_a = torch.optim.SGD(ours.parameters(), lr=0.1)
    opt_b = torch.optim.SGD(ref.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(0)
    for step in range(3):
        x = torch.randn(4, 3, 9, 7, generator=g) * 2 + 1
        outs = []
        for model, opt in ((ours, opt_a), (ref, opt_b)):
            model.train()
            torch.manual_seed(100 + step)                  # the same dropout masks
            out = model(x)
            out.square().mean().backward()
            opt.step()
            opt.zero_grad()
            outs.append(out.detach())
        torch.testing.assert_close(outs[0], outs[1], rtol=1e-6, atol=1e-6)
        sa, sb = ours.state_dict(), ref.state_dict()
        for k in sb:
            torch.testing.assert_close(sa[k], sb[k], rtol=1e-6, atol=1e-6, msg=k)
    # the buffers moved as torch's do: 3 batches, momentum 0.3 in bn1
    sa = ours.state_dict()
    assert int(sa["bn1.num_batches_tracked"]) == int(sa["bn2.num_batches_tracked"]) == 3
    assert not torch.allclose(sa["bn1.running_mean"], torch.zeros(6))
    # eval: running statistics, no dropout, buffers untouched
    before = {k: v.clone() for k, v in ours.state_dict().items()}
    ours.eval()
    ref.eval()
    with torch.no_grad():
        e1, e2, r = ours(x), ours(x), ref(x)
        bn1_eval = ours.bn1(ours.conv1(x))
        manual = (ours.conv1(x) - ours.bn1.running_mean[:, None, None]) / torch.sqrt(
            ours.bn1.running_var[:, None, None] + 1e-5) * ours.bn1.weight[:, None, None] + ours.bn1.bias[:, None, None]
    assert torch.equal(e1, e2)
    torch.testing.assert_close(e1, r, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(bn1_eval, manual, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(e1, outs[0])                # not the train-mode output
    for k, v in ours.state_dict().items():
        assert torch.equal(v, before[k]), k
    # dropout really dropped: a different seed gives a different train-mode output
    ours.train()
    with torch.no_grad():
        torch.manual_seed(1)
        a = ours(x)
        torch.manual_seed(2)
        b = ours(x)
    assert not torch.allclose(a, b)


# ---- DistributedDataParallel ------------------------------------------------------------------

# No BatchNorm: each process would normalise its half of the batch with that half's statistics,
# so the gradients would differ from one process on the whole batch (SyncBatchNorm aside).
# One frozen layer: DDP leaves parameters without requires_grad out of its buckets.
DDP_SPEC = """network Small {
    input x: f32[N, 3, H, W]
    output logits = x -> stem: Conv2d(4, 3, padding = 1, frozen = true) -> ReLU
                      -> conv: Conv2d(8, 3, stride = 2, padding = 1) -> ReLU
                      -> GlobalAvgPool2d -> Flatten -> fc: Linear(5)
}"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_gradients_equal_single_process(tmp_path):
    import torch.multiprocessing as mp
    from ddp_worker import ddp_step       # a module that imports only torch: quick to spawn
    net = netdsl.loads(DDP_SPEC)
    model = net.to_torch(seed=1)
    assert [n for n, p in model.named_parameters() if not p.requires_grad] == ["stem.weight", "stem.bias"]
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(6, 3, 10, 12, generator=g), torch.randint(0, 5, (6,), generator=g)
    F.cross_entropy(model(x), y).backward()
    want = {n: p.grad for n, p in model.named_parameters()}
    out = tmp_path / "grads.pt"
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    ctx = mp.start_processes(ddp_step, args=(2, _free_port(), net.torch_source(), type(model).__name__,
                                                state, x, y, str(out)),
                             nprocs=2, join=False, start_method="spawn")
    deadline = time.monotonic() + 90
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                if p.is_alive():
                    p.kill()
            pytest.fail("the DDP processes did not finish in 90 s")
    got = torch.load(out)
    assert sorted(got) == sorted(want)
    assert got["stem.weight"] is None and want["stem.weight"] is None
    for name in ("conv.weight", "conv.bias", "fc.weight", "fc.bias"):
        assert float(want[name].abs().max()) > 0
        torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=1e-7, msg=name)
    # one half alone gives other gradients: the two processes really shared their halves
    model.zero_grad()
    F.cross_entropy(model(x[:3]), y[:3]).backward()
    assert not torch.allclose(model.fc.weight.grad, want["fc.weight"], rtol=1e-3)

