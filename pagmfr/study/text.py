"""How a study's cells read in one line, both while it runs (``progress``) and afterwards from
its records (``status``): kept apart from the Tune callback so that ``pagmfr study status``
loads neither Ray nor MLflow's tracking code to format a table."""

from __future__ import annotations

#: The headline metrics a finished cell's line shows, as the line names them.
HEADLINE = {"image_auroc": "image", "pixel_auroc": "pixel", "au_pro": "AU-PRO"}


def duration(seconds: float) -> str:
    """``2h 05m``, ``3m 12s`` or ``41s``."""
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {seconds:02d}s" if minutes else f"{seconds}s"


def last_line(text: str) -> str:
    """An error's last non-empty line (its exception and message)."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no error text"
