"""Layer-wise relevance propagation: explicit rules, the timm ViT propagation, zennit set-ups for CNNs.

- :mod:`.rules`: the rules as tensor formulas (αβ, z^B, z-rule for products, normalised sums).
- :mod:`.vit`: trace a timm ``VisionTransformer`` and propagate relevance through it
  (Chefer, Gur, Wolf, CVPR 2021).
- :mod:`.cnn`: zennit composites and canonizers for the CNNs the site loads (VGG, ResNet,
  timm EfficientNet), including a canonizer for timm's inverted-residual blocks.
"""
