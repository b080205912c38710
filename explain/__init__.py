"""The numerical core of the explainers: PyTorch only, no Django.

Import it from a notebook, a test or a benchmark without a database.

Importing the package settles how the process gets CPU memory for tensors
(:mod:`explain.cpu_memory`: huge pages for large tensors, freed heap memory kept for the next
call). PyTorch reads its part once, at the process's first tensor allocation, so the package
must be imported before any tensor exists: the site's entry points (``saliency_site``) and the
benchmarks import it before they create one.
"""
from explain import cpu_memory  # noqa: F401  (its settings take effect on import)
