"""Developer tools run from a checkout, not shipped in the wheel: the benchmark
(``scripts/bench``), the chaos run (``scripts/chaos``), the demo (``scripts/demo``) and a
private redis-server launcher for them and the tests."""
