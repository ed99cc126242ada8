"""deocc-live: takes away what covers a face in live video and puts back a plausible face."""
__version__ = "0.1.0"
