"""The numerical core of the explainers: PyTorch only, no Django.

Import it from a notebook, a test or a benchmark without a database.

Importing the package puts PyTorch's large CPU tensors on transparent huge pages
(``THP_MEM_ALLOC_ENABLE=1`` unless the environment sets it): every fresh tensor of a few MB
otherwise costs one page fault per 4 kB when first written, which on a 2-core CPU made a plain
copy of a 38 MB activation 2.5× slower than with huge pages (EfficientNet-Lite0, three pairs
of processes: a forward and a forward-backward pass 1.17× slower, LRP 1.10×). PyTorch reads the variable once, at the process's first tensor
allocation, so the package must be imported before any tensor exists: the site's entry points
(``saliency_site``) and the benchmarks import it before they create one.
"""
import os

os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
