"""On-demand benchmarks (``make bench-*``): they print figures, they never assert timings."""
