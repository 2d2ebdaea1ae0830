"""``make bench``: the worker's performance, measured from outside against LocalStack.

The real ``moderation-worker run`` process and a minimal reference consumer (``reference``) move
the same messages through LocalStack (SQS, SNS) and the Llama Guard emulator; the scenarios
(``scenarios``) measure CPU, calls, goodput, latency and memory; ``report`` writes
``docs/performance.md`` and ``plot`` its PNG. Not part of the worker's package or its image.
"""
