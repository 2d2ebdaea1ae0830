"""Adapters at the edge: SQS, SNS, SageMaker and TGI behind the ports."""
