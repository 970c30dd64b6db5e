"""torch stand-in (testbed only): just enough for `import torch.distributed` and
`python3 -m torch.distributed.run` (see nccl_standin). No tensors, no CUDA: code that needs
real torch fails loudly (AttributeError), never silently."""

__version__ = "0.0.0+dgxtb.standin"
