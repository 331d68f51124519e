# cpe_tunnel.core: the sans-IO part. Runs on CPython and MicroPython.
# Rules: no sockets, no clocks, no logging, no threads; stdlib subset only
# (struct, binascii, hashlib, json, re, collections). Time is always passed in.
