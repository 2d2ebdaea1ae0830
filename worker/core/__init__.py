"""The pure core: models, errors, prompts, parsing and taxonomy. No I/O, no logging."""
