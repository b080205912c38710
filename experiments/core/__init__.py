"""The numerical core of experiments: protocols, metrics and data-set readers (no Django)."""
