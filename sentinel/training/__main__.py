"""`python -m sentinel.training ...` is `sentinel finetune ...` (also under accelerate launch / torchrun)."""

import sys

from sentinel.cli import main

sys.exit(main(["finetune", *sys.argv[1:]]))
