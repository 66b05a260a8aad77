"""The three research workloads RECC is for, each runnable locally or on a RECC cluster.

``python -m examples.by_date --size small`` (from the repository root); with ``RECC_CLUSTER=local`` the same
command runs on a RECC cluster made through the daemon. See ``examples/README.md``.
"""
