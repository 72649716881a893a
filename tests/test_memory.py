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


def test_the_mapping_pays_on_cpu_for_a_model_that_takes_a_quarter_of_memory():
    from lavis_ext.memory import heap_mapping_pays

    gib = 1 << 30
    assert heap_mapping_pays(15 * gib, "cpu", memory_bytes=24 * gib)  # ViT-G + OPT-6.7B
    assert heap_mapping_pays(6 * gib, "cpu", memory_bytes=24 * gib)
    assert not heap_mapping_pays(15 * gib, "cpu", memory_bytes=128 * gib)
    assert not heap_mapping_pays(40 << 20, "cpu", memory_bytes=24 * gib)  # the tiny model
    assert not heap_mapping_pays(15 * gib, "cuda:0", memory_bytes=24 * gib)  # not glibc's heap


def test_loading_a_captioner_leaves_the_heap_and_the_command_decides(monkeypatch):
    """load_captioner calls no mallopt; describe/serve's map_heap_for_model maps from the
    loaded model's size against the machine's memory."""
    import lavis_ext.memory as memory
    from lavis_ext.describe.captioner import load_captioner
    from lavis_ext.describe.cli import map_heap_for_model
    from lavis_ext.describe.faces import FaceDescriber, WholeImage

    calls = []
    monkeypatch.setattr(memory, "map_large_allocations", lambda *a: calls.append(a) or True)
    captioner = load_captioner("exp_blip:tiny", "cpu")
    assert calls == []
    net = captioner.model
    size = sum(t.numel() * t.element_size() for t in (*net.parameters(), *net.buffers()))
    describer = FaceDescriber(captioner, WholeImage())
    assert not map_heap_for_model(describer, "cpu") and calls == []  # tiny beside real RAM
    monkeypatch.setattr(memory, "physical_memory_bytes", lambda: 3 * size)
    assert map_heap_for_model(describer, "cpu") and calls == [()]
    assert not map_heap_for_model(describer, "cuda") and calls == [()]
