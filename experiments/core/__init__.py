"""The numerical core of experiments: protocols, metrics and data-set readers (no Django).

* :mod:`.protocols`: named, versioned, frozen parameter sets (``get_protocol("thesis-v1")``,
  ``copy_protocol(...)``, ``protocol_from_dict(...)``).
* :mod:`.metrics`: one per-image function per metric family returning a storable record
  (``to_dict``/``from_dict``), and ``aggregate(protocol, records)`` for the table.
* :mod:`.datasets`: readers of ILSVRC 2012 val, VOC 2007, COCO 2014, ImageNet-Segmentation
  and the bundled sample set, all returning a :class:`~.datasets.Dataset` of
  :class:`~.datasets.Sample` records; every path is checked against ``allowed_roots``.
* :mod:`.imageops`: the protocols' preprocessing (``preprocess_pixels``/``preprocess_mask``).

A run, one image at a time (so it can store each record and resume)::

    from experiments.core.datasets import sample_dataset
    from experiments.core.imageops import preprocess_pixels
    from experiments.core.metrics import causal_record, aggregate
    from experiments.core.protocols import get_protocol

    protocol = get_protocol("thesis-v1")
    records = []
    for sample in sample_dataset("classification", cache_dir="data/samples"):
        pixels = preprocess_pixels(sample.load_image(), protocol.preprocessing)   # 3×224×224 in [0, 1]
        inputs = clf.normalize(pixels[None])
        target = int(clf.module(inputs).argmax())                                  # "predicted"
        saliency = explain(inputs, target)                                        # 224×224
        records.append(causal_record(clf.module, pixels, saliency, target, protocol=protocol,
                                     mean=clf.mean, std=clf.std, batch_size=64).to_dict())
    table = aggregate(protocol, records)
"""
