"""Peak resident memory of this process, resettable (Linux), for benchmarks and memory tests."""

from pathlib import Path

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")


def reset_peak_rss() -> bool:
    """Set the peak to the current RSS (writes 5 to /proc/self/clear_refs); False where the
    kernel does not allow it."""
    try:
        CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def peak_rss_bytes() -> int:
    """The peak RSS (VmHWM) since the process started or since `reset_peak_rss`."""
    line = next(line for line in STATUS.read_text().splitlines() if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024
