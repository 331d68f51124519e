"""A real kernel with sit and ip6tnl for the project's tests: Debian's User-Mode Linux,
booted on this machine's own filesystem (hostfs). See runner.py and docs/KERNEL.md."""
