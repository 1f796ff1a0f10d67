"""What the tests share and run: clusters, polling, the linearizability checker, fault runs.

No test module imports another; what two of them need lives here or in a
conftest.py.
"""
