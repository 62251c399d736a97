"""The chaos suite: many concurrent readers and injected failures against the real standalone host.

Run it as `python -m chaos --help` from the project root. Its client side (the SSE reader, the
hosts, the scripted model) is the shared `testing` package.
"""
