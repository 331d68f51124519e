# STAND-IN for OpenWrt's /lib/functions/network.sh: network_get_device VAR IFACE
# gives $HARNESS_DEV_<IFACE> (the interface's L3 device), network_find_wan VAR gives
# $HARNESS_WAN (the interface with the IPv4 default route); both fail when unset.
network_get_device() {
	eval "$1=\"\${HARNESS_DEV_$2-}\""
	eval "[ -n \"\${HARNESS_DEV_$2-}\" ]"
}

network_find_wan() {
	eval "$1=\"\${HARNESS_WAN-}\""
	[ -n "${HARNESS_WAN-}" ]
}
