"""lavis_ext.memory: large blocks get their own mappings, so freeing them lowers RSS."""
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import ctypes, sys
    from lavis_ext.memory import map_large_allocations

    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    if sys.argv[1] == "mapped":
        assert map_large_allocations()
    # glibc raises its threshold after freeing one mapped 8 MiB block ...
    block = libc.malloc(8 << 20); ctypes.memset(block, 1, 8 << 20); libc.free(block)
    # ... so, by default, these 4 MiB blocks come from the heap and stay there when freed
    blocks = [libc.malloc(4 << 20) for _ in range(64)]
    for b in blocks:
        ctypes.memset(b, 1, 4 << 20)
    before = rss()
    for b in reversed(blocks[:-1]):
        libc.free(b)
    print((before - rss()) / 2**20)
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt (Linux)")
def test_mapped_blocks_are_returned_on_free():
    def released(mode):
        out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True,
                             text=True, check=True)
        return float(out.stdout.strip())

    assert released("mapped") > 200  # 63 x 4 MiB handed back
    assert released("default") < 50  # kept in the heap (the top block stays mapped)
