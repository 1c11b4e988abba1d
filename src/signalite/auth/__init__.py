"""Authentication: AWS Signature Version 4 verification (and signing, for our own tools).

`signalite.auth.sigv4` holds pure functions that decide whether a request was signed by the holder of
a known secret key, for both header-signed REST calls and presigned WebSocket URLs. Nothing here
reads the clock, the network or a file: the current time and a credential lookup are passed in.
"""
