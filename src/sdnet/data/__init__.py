"""Data: NIfTI I/O, datasets, transforms, splits and the built-in synthetic cardiac phantom."""
