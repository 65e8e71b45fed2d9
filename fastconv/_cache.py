"""BoundedCache: the one shape of the caches that let a layer's repeat call skip work it did
the call before (conv plans, packed weights, pooling plans and scratch).

A dict of at most ``most`` entries that starts over when full: a model asks for a handful
of entries every step, so eviction order hardly matters, and clearing keeps a cache that
threads share consistent without a lock (each dict operation is atomic under the GIL; a
value is built before it is stored and only read after). Lookups are dict's own ``get``.
Imports nothing from fastconv, so the kernels may use it too.
"""


class BoundedCache(dict):
    __slots__ = ("most",)

    def __init__(self, most):
        super().__init__()
        if most < 1:
            raise ValueError(f"BoundedCache: most must be at least 1, got {most}")
        self.most = most

    def put(self, key, value):
        """Store ``value`` under ``key`` (clearing the cache first when it is full); return
        ``value``."""
        if key not in self and len(self) >= self.most:
            self.clear()
        self[key] = value
        return value
