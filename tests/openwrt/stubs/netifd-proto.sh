# STAND-IN for netifd's /lib/netifd/netifd-proto.sh (and scripts/utils.sh), written
# for the shell harness from the documented behaviour of those helpers:
# - proto_config_add_{int,string,boolean,array} NAME: one [NAME, TYPE] pair in the
#   handler's "config" array, TYPE being blobmsg's 5, 3, 7, 1.
# - init_proto PROTO dump: add_protocol prints {"name", "config": [...], "no-device",
#   "no-device-config", "no-proto-task", "available", "renew-handler", "lasterror",
#   "teardown-on-l3-link-down"}; init_proto PROTO setup|teardown IFACE DATA IFNAME:
#   add_protocol loads DATA and calls proto_PROTO_setup/teardown IFACE IFNAME.
# - every proto_* that talks to netifd runs
#   `ubus [-S] call network.interface notify_proto JSON` with "interface" last:
#   action 0 update: "ifname" (unless empty or "*"), "link-up", ["address-external"],
#     then at send time "keep", and only the non-empty arrays, in this order:
#     "ipaddr", "ip6addr", "routes", "routes6", "ip6prefix", "dns", "dns_search";
#     ip6addr items {"ipaddr", "mask" (string), "preferred" (int), "valid" (int),
#     "offlink" (bool), "class"}, each only when given; routes6 items {"target",
#     "netmask" (string, always), "gateway", "metric" (int), "valid" (int), "source",
#     "table"}; ip6prefix items "PREFIX" or "PREFIX,VALID,PREFERRED" (PREFERRED
#     defaults to VALID);
#   action 1 run command: "command" [argv...]; action 2 kill: ["signal"];
#   action 3 error: "error" [code, data...]; action 4 block restart;
#   action 5 available: "available"; action 6 host dependency: "host", ["ifname"],
#     with ubus -S, in a subshell.

. "$HARNESS_DIR/stubs/jshn.sh"

append() {
	local _var="$1" _val="$2" _sep="${3:- }"
	eval "$_var=\"\${$_var:+\${$_var}\$_sep}\$_val\""
}

_harness_config_pair() {
	json_add_array ""
	json_add_string "" "$1"
	json_add_int "" "$2"
	json_close_array
}
proto_config_add_int() { _harness_config_pair "$1" 5; }
proto_config_add_string() { _harness_config_pair "$1" 3; }
proto_config_add_boolean() { _harness_config_pair "$1" 7; }
proto_config_add_array() { _harness_config_pair "$1" 1; }

_harness_notify() {
	json_add_string interface "$1"
	if [ -n "$2" ]; then
		ubus "$2" call network.interface notify_proto "$(json_dump)"
	else
		ubus call network.interface notify_proto "$(json_dump)"
	fi
}

proto_init_update() {
	_P_KEEP=0
	_P_IP4= ; _P_IP6= ; _P_RT4= ; _P_RT6= ; _P_PFX= ; _P_DNS= ; _P_SEARCH=
	json_init
	json_add_int action 0
	if [ -n "$1" ] && [ "$1" != "*" ]; then
		json_add_string ifname "$1"
	fi
	json_add_boolean link-up "$2"
	[ -n "$3" ] && json_add_boolean address-external "$3"
	return 0
}

proto_set_keep() { _P_KEEP="$1"; }

# fields are kept '/'-separated, in the helpers' argument order
proto_add_ipv4_address() { append _P_IP4 "$1/$2/$3/$4"; }
proto_add_ipv6_address() { append _P_IP6 "$1/$2/$3/$4/$5/$6"; }
proto_add_ipv4_route() { append _P_RT4 "$1/$2/$3/$5///$4"; }
proto_add_ipv6_route() { append _P_RT6 "$1/$2/$3/$4/$5/$7/$6"; }
proto_add_dns_server() { append _P_DNS "$1"; }
proto_add_dns_search() { append _P_SEARCH "$1"; }
proto_add_ipv6_prefix() {
	if [ -n "$2" ]; then
		append _P_PFX "$1,$2,${3:-$2}"
	else
		append _P_PFX "$1"
	fi
}

_harness_field() {
	# _harness_field N STRING: the Nth '/'-separated field (the last one takes the rest)
	local n="$1" s="$2" i=1
	while [ "$i" -lt "$n" ]; do
		case "$s" in
			*/*) s="${s#*/}" ;;
			*) s="" ;;
		esac
		i=$((i + 1))
	done
	[ "$3" = rest ] && { printf '%s' "$s"; return; }
	printf '%s' "${s%%/*}"
}

_harness_ip6() {
	local f
	json_add_object ""
	json_add_string ipaddr "$(_harness_field 1 "$1")"
	f="$(_harness_field 2 "$1")"; [ -n "$f" ] && json_add_string mask "$f"
	f="$(_harness_field 3 "$1")"; [ -n "$f" ] && json_add_int preferred "$f"
	f="$(_harness_field 4 "$1")"; [ -n "$f" ] && json_add_int valid "$f"
	f="$(_harness_field 5 "$1")"; [ -n "$f" ] && json_add_boolean offlink "$f"
	f="$(_harness_field 6 "$1")"; [ -n "$f" ] && json_add_string class "$f"
	json_close_object
}

_harness_ip4() {
	local f
	json_add_object ""
	json_add_string ipaddr "$(_harness_field 1 "$1")"
	f="$(_harness_field 2 "$1")"; [ -n "$f" ] && json_add_string mask "$f"
	f="$(_harness_field 3 "$1")"; [ -n "$f" ] && json_add_string broadcast "$f"
	f="$(_harness_field 4 "$1")"; [ -n "$f" ] && json_add_string ptp "$f"
	json_close_object
}

_harness_route() {
	local f
	json_add_object ""
	json_add_string target "$(_harness_field 1 "$1")"
	json_add_string netmask "$(_harness_field 2 "$1")"
	f="$(_harness_field 3 "$1")"; [ -n "$f" ] && json_add_string gateway "$f"
	f="$(_harness_field 4 "$1")"; [ -n "$f" ] && json_add_int metric "$f"
	f="$(_harness_field 5 "$1")"; [ -n "$f" ] && json_add_int valid "$f"
	f="$(_harness_field 7 "$1" rest)"; [ -n "$f" ] && json_add_string source "$f"
	f="$(_harness_field 6 "$1")"; [ -n "$f" ] && json_add_string table "$f"
	json_close_object
}

_harness_str() { json_add_string "" "$1"; }

_harness_array() {
	local item
	[ -n "$2" ] || return 0
	json_add_array "$1"
	for item in $2; do
		"$3" "$item"
	done
	json_close_array
}

proto_send_update() {
	json_add_boolean keep "$_P_KEEP"
	_harness_array ipaddr "$_P_IP4" _harness_ip4
	_harness_array ip6addr "$_P_IP6" _harness_ip6
	_harness_array routes "$_P_RT4" _harness_route
	_harness_array routes6 "$_P_RT6" _harness_route
	_harness_array ip6prefix "$_P_PFX" _harness_str
	_harness_array dns "$_P_DNS" _harness_str
	_harness_array dns_search "$_P_SEARCH" _harness_str
	_harness_notify "$1"
}

proto_run_command() {
	local iface="$1"; shift
	json_init
	json_add_int action 1
	json_add_array command
	while [ $# -gt 0 ]; do
		json_add_string "" "$1"
		shift
	done
	json_close_array
	_harness_notify "$iface"
}

proto_kill_command() {
	json_init
	json_add_int action 2
	[ -n "$2" ] && json_add_int signal "$2"
	_harness_notify "$1"
}

proto_notify_error() {
	local iface="$1"; shift
	json_init
	json_add_int action 3
	json_add_array error
	while [ $# -gt 0 ]; do
		json_add_string "" "$1"
		shift
	done
	json_close_array
	_harness_notify "$iface"
}

proto_block_restart() {
	json_init
	json_add_int action 4
	_harness_notify "$1"
}

proto_set_available() {
	json_init
	json_add_int action 5
	json_add_boolean available "$2"
	_harness_notify "$1"
}

proto_add_host_dependency() {
	(
		json_init
		json_add_int action 6
		json_add_string host "$2"
		[ -n "$3" ] && json_add_string ifname "$3"
		_harness_notify "$1" -S
	)
}

_harness_default() {
	type "$1" >/dev/null 2>&1 || eval "$1() { return 0; }"
}

init_proto() {
	proto="$1"; shift
	cmd="$1"; shift
	case "$cmd" in
		dump)
			add_protocol() {
				no_device=0 no_device_config=0 no_proto_task=0 available=0
				renew_handler=0 teardown_on_l3_link_down=0
				_harness_default "proto_$1_init_config"
				json_init
				json_add_string name "$1"
				json_add_array config
				"proto_$1_init_config"
				json_close_array
				json_add_boolean no-device "$no_device"
				json_add_boolean no-device-config "$no_device_config"
				json_add_boolean no-proto-task "$no_proto_task"
				json_add_boolean available "$available"
				json_add_boolean renew-handler "$renew_handler"
				json_add_boolean lasterror "$lasterror"
				json_add_boolean teardown-on-l3-link-down "$teardown_on_l3_link_down"
				json_dump
			}
			;;
		setup|teardown|renew)
			interface="$1"; shift
			data="$1"; shift
			ifname="$1"; shift
			add_protocol() {
				[ "$proto" = "$1" ] || return 0
				json_load "$data"
				"proto_$1_$cmd" "$interface" "$ifname"
			}
			;;
	esac
}
