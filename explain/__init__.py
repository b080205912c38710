"""The explainers: the numerical core (:mod:`explain.core`, PyTorch only) and the Django app
around it (models, services, views, tasks).

Importing the package has no side effects. The site's entry points settle how the process
gets CPU memory for tensors by calling :func:`explain.cpu_memory.apply` themselves.
"""
