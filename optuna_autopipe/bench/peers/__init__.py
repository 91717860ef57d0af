"""Benchmark methods from other HPO libraries (Syne Tune, NePS, DEHB), each a thin adapter
over ``driver.drive``; they run in the peers' environment (``bench.peer_env``)."""
