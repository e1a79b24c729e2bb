"""The worker of tests/test_training.py's DistributedDataParallel test, apart so that the
spawned processes import only torch."""
import datetime

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP


def ddp_step(rank, world, port, source, cls, state, x, y, out):
    """Rank `rank` of `world`: the generated module from its source, wrapped in DDP, one
    backward pass on its share of (x, y); rank 0 saves the gradients to `out`."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=30))
    try:
        scope: dict = {}
        exec(compile(source, "<generated>", "exec"), scope)     # the generated source: only torch
        model = scope[cls]()
        model.load_state_dict(state)
        assert [n for n, p in model.named_parameters() if not p.requires_grad] == ["stem.weight", "stem.bias"]
        ddp = DDP(model)
        xs, ys = x.chunk(world)[rank], y.chunk(world)[rank]
        F.cross_entropy(ddp(xs), ys).backward()
        if rank == 0:
            torch.save({n: p.grad for n, p in model.named_parameters()}, out)
        dist.barrier()
    finally:
        dist.destroy_process_group()
