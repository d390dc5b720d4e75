"""Pure-NumPy float64 reference of SSD300: the oracle the fast layers are tested against.

Each module transcribes one part of ``docs/CONTRACT.md`` (mirrored in the README); nothing here imports torch.
"""
