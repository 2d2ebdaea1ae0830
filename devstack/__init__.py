"""Development tools: the Llama Guard emulator, the moto-based local stack, the demo, ``send``,
the in-memory fakes and the fault-injection harnesses. Never imported by production code (the
``worker`` package) and never part of the container image; ``devstack.cli`` adds its commands to
``moderation-worker`` through entry points.
"""
