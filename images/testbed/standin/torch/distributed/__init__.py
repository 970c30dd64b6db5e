"""torch.distributed stand-in (testbed only): importable, nothing more; see nccl_standin."""
