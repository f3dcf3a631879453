"""Developer scripts: ``python -m scripts.stack run`` (what ``make run`` does) and friends."""
