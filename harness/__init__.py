"""Server processes for the end-to-end tests, the browser tests and ``bench/``.

Starts real uvicorn/daphne processes, a private Redis, raw HTTP clients and the
soak's checker, so the tests and the benchmark drive the same servers the same way.
"""
