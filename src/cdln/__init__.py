"""Compressed deep linear networks (C-DLN): problems, networks, a fast GD engine and run records.

Replicates Kwon, Zhang, Song, Balzano, Qu, "Efficient Compression of Overparameterized Deep Models
through Low-Dimensional Learning Dynamics" (AISTATS 2024, arXiv 2311.05061).
"""

__version__ = "0.1.0"
