"""Data: readers, synthetic generator, the sample manifest, the HDF5 dataset store, torch datasets."""
