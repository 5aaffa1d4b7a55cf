"""Side-by-side benchmarks of sessionware and the session libraries users pick
instead. Entry point: ``benchmarks/run.sh`` (see ``benchmarks/README.md``)."""
