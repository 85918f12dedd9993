"""locsens: Location Sensitive Image Retrieval and Tagging (Gomez et al., ECCV 2020)."""

__version__ = "0.1.0"
