"""Sizes and durations as people read them, for the log and the commands."""


def size(n):
    """Bytes: 0, 980 B, 12.3 MB."""
    if not n:
        return "0"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return ("%d %s" if unit == "B" else "%.1f %s") % (n, unit)
        n /= 1024.0


def duration(seconds):
    """Seconds: 45s, 12m, 3h05m."""
    seconds = int(seconds)
    if seconds < 120:
        return "%ds" % seconds
    if seconds < 7200:
        return "%dm" % (seconds // 60)
    return "%dh%02dm" % (seconds // 3600, seconds % 3600 // 60)
