"""shazip: a neural file compressor (SHA-RNN byte model + range coder)."""

__version__ = "0.1.0"
