"""moderation-worker: moderates chat messages from SQS with Llama Guard; verdicts go to SNS."""

__version__ = "0.1.0"
