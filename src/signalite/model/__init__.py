"""The AWS service models (from botocore), request validation, errors and ARNs: data, no I/O."""
