"""The chaos harness: proves the worker loses nothing when its dependencies misbehave.

Test tooling that ships with the package (so ``python -m devstack.chaos`` runs anywhere the worker
does); the worker itself never imports it. Its parts:

- ``proxy``: a reverse proxy in front of moto's server that fails a seeded share of chosen AWS
  calls the way AWS fails them, and counts what it did; in front of the emulator it records, or
  plays a SageMaker "endpoint not found" window.
- ``corpus``: the messages sent, each with the outcome the emulator's keyword rules dictate.
- ``workers``: the worker as real ``moderation-worker run`` subprocesses, and what their logs say.
- ``scenario``: the driver: provision, send, run, kill, take the endpoint down, collect.
- ``report``: the figures (sent, delivered, lost, duplicates, dead letters, faults) and the
  ``docs/reliability.md`` section they are written to.
- ``hostile`` and ``hostile_report``: issue 6's hostile run (a not-found window, hostile
  whitespace, an oversized message) against one real worker, and the bar it is held to.
- ``soak``: one real worker through tens of thousands of messages, its RSS sampled as it goes.
"""
