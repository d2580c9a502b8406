"""Optional native build of the decision core's hot modules (everything else is in pyproject.toml).

By default scaler builds as pure Python. With ``SCALER_COMPILE_CORE=1`` the modules one control
tick spends its time in (`COMPILED`) are compiled with mypyc, the compiler that ships with mypy,
from the same sources mypy --strict checks: a tick of 1,000 models takes about half the time
(benchmarks/decide_speed.py prints which core it ran), and `scaler bench` reports the same
figures either way. ``scripts/test-compiled`` (run by ``scripts/test``) runs the decision and
simulator tests against a compiled build as well, so the two cannot drift apart unseen. A
compiled build needs mypy, wheel and a C compiler at build time, nothing at run time:

    SCALER_COMPILE_CORE=1 pip wheel --no-build-isolation --no-deps --wheel-dir dist .
"""

from __future__ import annotations

import os

from setuptools import setup

# The modules a tick spends its time in (cProfile of benchmarks/decide_speed.py: decide_all's
# own loop, the queueing model, the placement index). The types and the policy model
# (pydantic) stay interpreted: a tick spends little time in them.
COMPILED = [
    "scaler/core/decide.py",
    "scaler/core/placement.py",
    "scaler/core/sizing.py",
]

if os.environ.get("SCALER_COMPILE_CORE") == "1":
    from mypyc.build import mypycify

    setup(ext_modules=mypycify(COMPILED, opt_level="3"))
else:
    setup()
