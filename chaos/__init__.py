"""The chaos suite: many concurrent readers and injected failures against the real standalone host.

Run it as `python -m chaos --help`. `chaos.sse` is the client side of the wire
contract (an SSE parser and the reassembly rule) that the tests use too.
"""
