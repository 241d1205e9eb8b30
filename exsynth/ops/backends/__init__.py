"""One module per backend: the Python glue around its kernels."""
