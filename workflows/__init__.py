"""Orchestration of the pipeline: config, stage plugins, planning, executors, the run, CLI."""

import os
import time

#: When the package loaded (time.time()): the process start where /proc cannot say it.
LOADED_AT: float = time.time()

# MKL's results depend on the memory alignment of its inputs unless conditional numerical
# reproducibility is on (STRICT: whatever the alignment); with it off, two runs of the same
# backward pass on 2 threads differed in the last bits (torch 2.15, MKL, Xeon), which breaks
# "a resumed run equals an uninterrupted one, bit for bit". MKL reads the variable at its
# first call, so it is set before anything runs torch; a user's own setting wins. See
# docs/design.md.
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")
