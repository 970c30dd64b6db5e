"""`python3 -m torch.distributed.run` on the testbed: the NCCL stand-in (nccl_standin)."""

import sys

from nccl_standin import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
