"""fedinv.bench: benchmarks run on demand (never timed unit tests): simulator throughput
(``fedinv bench sim``), safety-layer latency (``fedinv bench lp``), federation overhead
and deployment vs simulation round cost."""
