"""What the tests share and run: clusters, polling, the linearizability checker, fault runs.

No test module imports another; what two of them need lives here or in a
conftest.py.  ``PROJECT`` is the checkout the tests run from (the commands'
working directory), ``TESTS`` its tests/ folder.
"""

from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
PROJECT = TESTS.parent
