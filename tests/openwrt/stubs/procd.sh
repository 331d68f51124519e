# STAND-IN for OpenWrt's /lib/functions/procd.sh, for the shell harness, written from
# its documented API (the comment block at the top of procd.sh and the procd ubus
# "service" object): procd_open_service / procd_open_instance / procd_set_param /
# procd_append_param / procd_add_jail[_mount[_rw]] / procd_close_instance /
# procd_close_service build one JSON message and send it with
# `ubus call service set`; service_triggers runs inside the open "triggers" array;
# procd_add_reload_trigger PKG adds
#   ["config.change", ["if", ["eq", "package", PKG], ["run_script", "/etc/init.d/NAME", "reload"]], 1000]
# procd_send_signal NAME [INSTANCE] [SIGNAL] -> `ubus call service signal`,
# procd_kill NAME [INSTANCE] -> `ubus call service delete`, procd_running NAME ->
# `ubus call service list` (running when the answer says "running": true).
# Parameter types: command/netdev/file/respawn/watch arrays; env/data/limits tables
# of NAME=VALUE; nice/term_timeout ints; reload_signal a signal name sent as its
# number; user/group/pidfile/seccomp/capabilities/facility strings;
# stdout/stderr/no_new_privs booleans. An empty respawn gets 3600 5 5.
# (Differences from the real file: parameters are buffered until
# procd_close_instance; no locking.)

# signal name -> number (busybox's kill -l NAME; dash's kill -l cannot)
_procd_signum() {
	case "$1" in
		HUP|SIGHUP) echo 1 ;; INT|SIGINT) echo 2 ;; KILL|SIGKILL) echo 9 ;;
		USR1|SIGUSR1) echo 10 ;; USR2|SIGUSR2) echo 12 ;; TERM|SIGTERM) echo 15 ;;
		*) echo "$1" ;;
	esac
}

_procd_is_array() {
	case "$1" in command|netdev|file|respawn|watch|watchdog) return 0 ;; esac
	return 1
}

_procd_is_table() {
	case "$1" in env|data|limits) return 0 ;; esac
	return 1
}

procd_open_service() {
	_PROCD_SERVICE="$1"
	_PROCD_SEQ=0
	json_init
	json_add_string name "$1"
	[ -n "$2" ] && json_add_string script "$2"
	json_add_object instances
}

procd_open_instance() {
	_PROCD_SEQ=$((_PROCD_SEQ + 1))
	_PI_NAME="${1:-instance$_PROCD_SEQ}"
	_PI_ORDER=" "
	_PI_JAIL=
	_PI_MOUNTS=
}

procd_set_param() {
	local type="$1" v
	shift
	case "$_PI_ORDER" in
		*" $type "*) ;;
		*) _PI_ORDER="$_PI_ORDER$type " ;;
	esac
	eval "_PI_V_$type=''"
	for v in "$@"; do
		eval "_PI_V_$type=\"\${_PI_V_$type}\$v
\""
	done
}

procd_append_param() {
	local type="$1" v
	shift
	case "$_PI_ORDER" in
		*" $type "*) ;;
		*) procd_set_param "$type" "$@"; return ;;
	esac
	for v in "$@"; do
		eval "_PI_V_$type=\"\${_PI_V_$type}\$v
\""
	done
}

procd_add_jail() {
	_PI_JAIL="$*"
}

procd_add_jail_mount() {
	local p
	for p in "$@"; do _PI_MOUNTS="$_PI_MOUNTS$p=0
"; done
}

procd_add_jail_mount_rw() {
	local p
	for p in "$@"; do _PI_MOUNTS="$_PI_MOUNTS$p=1
"; done
}

_procd_values() {
	# prints the stored values of TYPE, one per line
	eval "printf '%s' \"\${_PI_V_$1}\""
}

procd_close_instance() {
	local type v name flag
	json_add_object "$_PI_NAME"
	for type in $_PI_ORDER; do
		if _procd_is_array "$type"; then
			json_add_array "$type"
			if [ "$type" = respawn ] && [ -z "$(_procd_values respawn)" ]; then
				json_add_string "" 3600
				json_add_string "" 5
				json_add_string "" 5
			fi
			while IFS= read -r v; do
				[ -n "$v" ] && json_add_string "" "$v"
			done <<-EOF
				$(_procd_values "$type")
			EOF
			json_close_array
		elif _procd_is_table "$type"; then
			json_add_object "$type"
			while IFS= read -r v; do
				[ -n "$v" ] || continue
				json_add_string "${v%%=*}" "${v#*=}"
			done <<-EOF
				$(_procd_values "$type")
			EOF
			json_close_object
		else
			v="$(_procd_values "$type" | head -n 1)"
			case "$type" in
				nice|term_timeout) json_add_int "$type" "$v" ;;
				reload_signal) json_add_int "$type" "$(_procd_signum "$v")" ;;
				stdout|stderr|no_new_privs) json_add_boolean "$type" "$v" ;;
				*) json_add_string "$type" "$v" ;;
			esac
		fi
	done
	if [ -n "$_PI_JAIL" ]; then
		set -- $_PI_JAIL
		json_add_object jail
		json_add_string name "$1"
		shift
		for flag in "$@"; do
			json_add_boolean "$flag" 1
		done
		json_add_object mount
		while IFS= read -r v; do
			[ -n "$v" ] || continue
			json_add_string "${v%=*}" "${v##*=}"
		done <<-EOF
			$_PI_MOUNTS
		EOF
		json_close_object
		json_close_object
	fi
	json_close_object
}

procd_add_reload_trigger() {
	local pkg
	for pkg in "$@"; do
		json_add_array ""
		json_add_string "" "config.change"
		json_add_array ""
		json_add_string "" "if"
		json_add_array ""
		json_add_string "" "eq"
		json_add_string "" "package"
		json_add_string "" "$pkg"
		json_close_array
		json_add_array ""
		json_add_string "" "run_script"
		json_add_string "" "/etc/init.d/$_PROCD_SERVICE"
		json_add_string "" "reload"
		json_close_array
		json_close_array
		json_add_int "" 1000
		json_close_array
	done
}

procd_close_service() {
	json_close_object
	json_add_array triggers
	type service_triggers >/dev/null 2>&1 && service_triggers
	json_close_array
	ubus call service set "$(json_dump)"
}

procd_send_signal() {
	local sig="$3"
	case "$sig" in [A-Z]*) sig="$(_procd_signum "$sig")" ;; esac
	json_init
	json_add_string name "$1"
	[ -n "$2" ] && [ "$2" != "*" ] && json_add_string instance "$2"
	[ -n "$sig" ] && json_add_int signal "$sig"
	ubus call service signal "$(json_dump)"
}

procd_kill() {
	json_init
	[ -n "$1" ] && json_add_string name "$1"
	[ -n "$2" ] && json_add_string instance "$2"
	ubus call service delete "$(json_dump)"
}

procd_running() {
	# its own JSON document, as the real one uses a separate jshn namespace
	local o="$_J_OUT" st="$_J_STACK" f="$_J_FIRST" rc=1
	json_init
	json_add_string name "$1"
	ubus call service list "$(json_dump)" | grep -q '"running": *true' && rc=0
	_J_OUT="$o" _J_STACK="$st" _J_FIRST="$f"
	return $rc
}
