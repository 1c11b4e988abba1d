"""signalite: a self-hostable server that speaks the AWS Kinesis Video Streams WebRTC signaling API."""

__version__ = "0.1.0"
