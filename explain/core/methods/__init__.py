"""Saliency methods, one per module; :mod:`explain.core.registry` imports them all."""
