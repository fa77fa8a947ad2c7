"""mnistream's benchmark suite: throughput, latency, hot swap, rescore and memory, measured on the
real stack against the raw onnxruntime limit and the teaching app's design (`python -m bench`).

Not part of `make test`: timing targets live here, never in tests.
"""
