"""The namespace lab (tests/lab) as it can be built inside Debian's User-Mode Linux.

Debian's UML kernel has nf_tables only for the bridge family (CONFIG_NF_TABLES_IPV4,
_IPV6 and _INET are off: ``nft add table ip x`` answers "Operation not supported"), so the
lab's nftables pieces are replaced:
- the v6 host's echo-request counter: the namespace's own ICMPv6 statistics
  (/proc/net/snmp6 Icmp6InEchos). It counts echo requests from any source; in these tests
  only the LAN host sends them, and the per-prefix check is kept by pinging from an
  address inside the prefix.
- the IPv4 host's echo-request counter (v6wan labs, v4host_counter): the namespace's ICMP
  statistics (/proc/net/snmp Icmp InEchos), same caveat.
- NAT: not available (nat=True raises).
"""

from tests.lab.lab import Lab, LabError


class UmlLab(Lab):
    def __init__(self, nat=False, **kw):
        if nat:
            raise LabError("no NAT inside User-Mode Linux: its kernel has no nftables for ip/ip6")
        super().__init__(nat=False, **kw)

    def _plan(self):
        super()._plan()
        self._nft.pop("v6host", None)

    def v6host_counter(self, prefix=None):
        """ICMPv6 echo requests the v6 host has received (any source; see above)."""
        out = self.run("v6host", ["cat", "/proc/net/snmp6"]).stdout
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == "Icmp6InEchos":
                return int(parts[1])
        raise LabError("Icmp6InEchos missing from the v6 host's /proc/net/snmp6")


    def v4host_counter(self, prefix=None):
        """ICMP (IPv4) echo requests the v6 host has received (any source; see above)."""
        out = self.run("v6host", ["cat", "/proc/net/snmp"]).stdout
        lines = [line.split() for line in out.splitlines() if line.startswith("Icmp:")]
        if len(lines) >= 2 and "InEchos" in lines[0]:
            return int(lines[1][lines[0].index("InEchos")])
        raise LabError("Icmp InEchos missing from the v6 host's /proc/net/snmp")
