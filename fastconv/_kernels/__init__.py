"""Compiled kernels (Cython, nogil, OpenMP). Nothing here validates input: see fastconv.functional."""
