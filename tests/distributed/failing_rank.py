"""Run under `mpirun -n 2` by tests/test_distributed.py. `raise`: rank 1 raises while rank 0
waits in an allreduce: the job must end with rank 1's message, not hang. `timeout`: rank 1
stays away while rank 0 waits at a barrier (and then at a DDP bucket) with a 2 s timeout."""
import datetime
import sys
import time

import ember as torch
import ember.distributed as dist

mode = sys.argv[1]
dist.init_process_group("mpi", timeout=datetime.timedelta(seconds=2))
rank = dist.get_rank()
if mode == "raise":
    if rank == 1:
        raise ValueError("rank 1 found a bad batch")
    t = torch.ones(3)
    dist.all_reduce(t)  # rank 1 never comes
elif mode == "timeout":
    if rank == 1:
        time.sleep(60)
    dist.barrier()
elif mode == "timeout_async":
    if rank == 1:
        time.sleep(60)
    dist.all_reduce(torch.ones(3), async_op=True).wait()
print(f"rank {rank} finished, which it must not", flush=True)
