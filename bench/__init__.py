"""certauth's benchmark suite: ``python -m bench`` (``make bench``) measures the per-request cost of
certificate authentication against an unauthenticated DRF view and DRF's TokenAuthentication, end to
end through nginx + gunicorn, and at scale, and writes ``bench/RESULTS.md``.  See docs/performance.md."""
