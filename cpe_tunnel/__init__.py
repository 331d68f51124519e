"""cpe-tunnel: IPv6 tunnel manager for home routers."""
__version__ = "0.1.0"
