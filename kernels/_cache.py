"""On-disk cache for the ``@njit`` CPU twins, invalidated by *any* kernels source they compile from.

Compiling the two parallel CPU twins costs several seconds per process, which every CLI call, demo run and test
subprocess would pay again. numba's own ``cache=True`` keys a cached
function on the content of the one file that defines it, but the twins inline device-agnostic arithmetic from
``kernels/_boxmath.py`` (and helpers from their own module): an edit there would leave a stale, *wrong*
machine-code cache in place. So the twins are compiled with ``cache=False`` and then given a cache whose source
stamp is the SHA-256 of every file in :data:`SOURCES`, in order.

Where the cache lives follows numba's rules: ``NUMBA_CACHE_DIR`` when set, else ``kernels/__pycache__`` when
writable, else the user-wide numba cache directory. ``SSD_NUMBA_CACHE=0`` turns caching off. The hook uses
numba's caching classes (``numba.core.caching``), which are not public API: if they change shape, the twins
fall back to compiling in every process and a warning says why — never a wrong result.
"""
from __future__ import annotations

import functools
import hashlib
import os
import warnings
from pathlib import Path
from typing import Any, Iterable

__all__ = ["SOURCES", "sources_stamp", "enable_kernel_cache", "cache_enabled"]

_HERE = Path(__file__).resolve().parent
#: every module whose code the CPU twins compile (inline callees included), hashed as one stamp
SOURCES: tuple[Path, ...] = tuple(_HERE / name for name in ("_boxmath.py", "matching.py", "nms.py", "_cache.py"))


def sources_stamp(paths: Iterable[Path] = SOURCES) -> bytes:
    """SHA-256 over ``(name, content)`` of each file in ``paths``: changes when any one of them changes."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(Path(path).name.encode() + b"\0" + Path(path).read_bytes() + b"\0")
    return digest.digest()


def cache_enabled() -> bool:
    """False when the environment says ``SSD_NUMBA_CACHE=0`` (or ``false`` / ``no`` / ``off``)."""
    return os.environ.get("SSD_NUMBA_CACHE", "1").strip().lower() not in ("0", "false", "no", "off")


@functools.lru_cache(maxsize=None)
def _cache_class() -> type:
    """A ``numba.core.caching.FunctionCache`` whose locators stamp with :func:`sources_stamp`."""
    from numba.core import caching

    def stamped(base: type) -> type:
        return type(f"KernelsStamped{base.__name__}", (base,), {"get_source_stamp": lambda self: sources_stamp()})

    locators = [stamped(base) for base in (caching.UserProvidedCacheLocator, caching.InTreeCacheLocator,
                                            caching.UserWideCacheLocator)]
    impl = type("KernelsCacheImpl", (caching.CompileResultCacheImpl,), {"_locator_classes": locators})
    return type("KernelsFunctionCache", (caching.FunctionCache,), {"_impl_class": impl})


def enable_kernel_cache(dispatcher: Any) -> Any:
    """Give the ``@njit`` ``dispatcher`` the multi-file-stamped disk cache (a no-op when caching is off);
    returns ``dispatcher`` so that it can wrap a definition."""
    if not cache_enabled():
        return dispatcher
    try:
        dispatcher._cache = _cache_class()(dispatcher.py_func)
    except Exception as exc:  # noqa: BLE001 - numba internals moved, or no writable cache directory: compile every time
        warnings.warn(f"kernels: numba disk cache disabled for {dispatcher.py_func.__name__} ({exc!r}); "
                      f"the CPU twin is compiled in every process", RuntimeWarning, stacklevel=2)
    return dispatcher
