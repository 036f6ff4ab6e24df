"""longspec: long-context lossless speculative decoding (LongSpec / GLIDE) experiments."""

__version__ = "0.1.0"
