"""The numerical core of the explainers: PyTorch only, no Django.

Import it from a notebook, a test or a benchmark without a database.
"""
