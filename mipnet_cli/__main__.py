"""`python -m mipnet_cli` (used by `torchrun -m mipnet_cli train ...`)."""

from .cli import main

main()
